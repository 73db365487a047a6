//! The AEMP handshake as a sans-IO state machine: greeting lines 1 and 2, an optional TLS step,
//! the auth line, and the hand-over to the data phase.
//!
//! The machine is fed received bytes ([`Handshake::feed`]), hands out bytes to write
//! ([`Handshake::take_output`]) and reports what it learned ([`Handshake::poll_event`]). It owns
//! no socket and reads no clock: the caller applies the handshake timeout.
//!
//! ```text
//!  feed ─► line 1 ─► PeerGreeting event ─► accept_peer() ─► line 2 ─┬─► auth line ─► Established
//!                    (caller may refuse)   (our greeting if        └─► StartTls event ─► tls_established()
//!                                           it was deferred)                              └─► auth line …
//! ```
//!
//! The data phase can only be entered through [`Established`], which holds the
//! [`AuthVerified`] proof that only a verified auth line produces.
//!
//! Stricter than Perl, on purpose: the peer's auth method must be one we listed in our line 1
//! ([`HandshakeError::AuthNotAccepted`]) and its framing one we offered
//! ([`HandshakeError::FramingNotOffered`]); Perl checks neither. We never send `hmac_*` inside
//! TLS, where Perl would verify it without the secret.

use std::collections::VecDeque;
use std::fmt;

use super::auth::{self, AuthError, AuthMethod, AuthVerified, GreetingLines};
use super::dialect::{self, Dialect};
use super::framing::Framing;
use super::greeting::{Greeting, GreetingError, Nonce, PROTOCOL};

/// Bytes that may wait unread before the peer's auth line is verified, as in Perl (`rbuf_max`):
/// everything buffered counts (not one line), lines already read do not; after the auth line
/// there is no limit.
pub const MAX_PENDING: usize = 4096;

/// Who is on the other end, as far as the handshake knows it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerName(pub Option<String>);

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(id) => write!(f, "node {id:?}"),
            None => f.write_str("an unidentified peer"),
        }
    }
}

/// Why a handshake ended. Each refusal names the peer (its node id once line 1 was read).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Greeting line 1 could not be parsed.
    #[error("unparsable greeting from {peer}: {cause}")]
    UnparsableGreeting {
        /// The peer.
        peer: PeerName,
        /// What was wrong.
        cause: GreetingError,
    },
    /// The peer's line 1 uses a protocol word we do not serve (`aemp-dataconn` side channels).
    #[error("{peer} asked for protocol {proto:?}, which this node does not serve")]
    UnsupportedProtocol {
        /// The peer.
        peer: PeerName,
        /// The protocol word it sent.
        proto: String,
    },
    /// The peer speaks another protocol version.
    #[error("version mismatch with {peer}: we speak {ours}, it speaks {theirs:?}")]
    VersionMismatch {
        /// The peer.
        peer: PeerName,
        /// Our version.
        ours: u32,
        /// The peer's version field.
        theirs: String,
    },
    /// The peer has our own node id.
    #[error("refusing to talk to myself ({peer} has our node id)")]
    TalkingToItself {
        /// The peer.
        peer: PeerName,
    },
    /// The caller refused the peer after line 1 (for example: already connected).
    #[error("refused {peer}: {reason}")]
    Refused {
        /// The peer.
        peer: PeerName,
        /// Why.
        reason: String,
    },
    /// The peer's greeting lines are ours (an echo), or its nonce equals ours under TLS.
    #[error("{peer} echoed our greeting")]
    Echo {
        /// The peer.
        peer: PeerName,
    },
    /// More than [`MAX_PENDING`] bytes waited unread before the auth line was verified.
    #[error("{peer} sent more than {limit} bytes before the data phase")]
    LineTooLong {
        /// The peer.
        peer: PeerName,
        /// The limit.
        limit: usize,
    },
    /// None of the peer's accepted auth methods is one we may send.
    #[error("no common auth method with {peer} (it accepts {accepted:?}, tls: {tls})")]
    NoCommonAuth {
        /// The peer.
        peer: PeerName,
        /// The peer's accept list.
        accepted: Vec<String>,
        /// Whether TLS is in use.
        tls: bool,
    },
    /// Neither TLS nor a shared secret: nothing to authenticate with.
    #[error("cannot authenticate to {peer}: no TLS and no shared secret configured")]
    NoSecret {
        /// The peer.
        peer: PeerName,
    },
    /// None of the peer's framings is one of ours.
    #[error("no common framing with {peer} (it offers {offered:?})")]
    NoCommonFraming {
        /// The peer.
        peer: PeerName,
        /// The peer's framing list.
        offered: Vec<String>,
    },
    /// The auth line is not `method;token;framing`.
    #[error("malformed auth line from {peer}")]
    MalformedAuthLine {
        /// The peer.
        peer: PeerName,
    },
    /// The peer used an auth method nobody knows.
    #[error("{peer} used unknown auth method {method:?}")]
    UnknownAuthMethod {
        /// The peer.
        peer: PeerName,
        /// The method name it sent.
        method: String,
    },
    /// The peer used a known method that we did not list as acceptable.
    #[error("{peer} used auth method {method}, which we do not accept")]
    AuthNotAccepted {
        /// The peer.
        peer: PeerName,
        /// The method.
        method: AuthMethod,
    },
    /// A `tls_*` method without TLS.
    #[error("{peer} used {method}, which is only valid inside TLS")]
    TlsOnlyMethod {
        /// The peer.
        peer: PeerName,
        /// The method.
        method: AuthMethod,
    },
    /// The peer announced a framing we did not offer.
    #[error("{peer} chose framing {framing:?}, which we did not offer")]
    FramingNotOffered {
        /// The peer.
        peer: PeerName,
        /// The framing name it sent.
        framing: String,
    },
    /// The peer's token is wrong: the shared secrets (or certificates) differ.
    #[error("authentication of {peer} failed ({method}): shared secret mismatch")]
    AuthFailed {
        /// The peer.
        peer: PeerName,
        /// The method.
        method: AuthMethod,
    },
    /// The connection ended before the handshake did.
    #[error("{peer} closed the connection during the handshake")]
    UnexpectedEof {
        /// The peer.
        peer: PeerName,
    },
    /// The OS could not give us a nonce.
    #[error("cannot create a nonce: {0}")]
    Nonce(String),
    /// The handshake was driven out of order (a bug in the caller, not the peer).
    #[error("handshake API misuse: {0}")]
    Misuse(&'static str),
}

/// How our own greeting is produced.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnGreeting {
    /// Send our greeting in this dialect at once, as Perl does.
    Immediate(Dialect),
    /// Wait for the peer's line 1 and choose the dialect in [`Handshake::accept_peer`].
    Deferred,
    /// Send exactly this line 1 and nonce (replaying captures). Our accept and framing lists are
    /// read from the line; the dialect is the one the line shows.
    Injected {
        /// Line 1 without terminator.
        line1: String,
        /// Line 2.
        nonce: Nonce,
    },
}

/// What a handshake needs to know about us.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// Our node id.
    pub node_id: String,
    /// The shared secret (may be empty when TLS authenticates).
    pub secret: Vec<u8>,
    /// How our greeting is produced.
    pub greeting: OwnGreeting,
    /// Auth methods we accept; `None` = the dialect's default.
    pub auth_accept: Option<Vec<AuthMethod>>,
    /// Auth methods we may send; `None` = the dialect's default.
    pub auth_offer: Option<Vec<AuthMethod>>,
    /// Framings we accept and may send, in preference order; `None` = the dialect's default.
    pub framings: Option<Vec<Framing>>,
    /// Whether we have a certificate and offer TLS (`tls=1.0`).
    pub tls: bool,
    /// The other end's address as we know it (sent as `peeraddr`).
    pub peer_addr: Option<String>,
}

impl HandshakeConfig {
    /// A configuration with the dialect's defaults and an immediate greeting.
    pub fn new(node_id: impl Into<String>, secret: impl Into<Vec<u8>>, dialect: Dialect) -> Self {
        HandshakeConfig {
            node_id: node_id.into(),
            secret: secret.into(),
            greeting: OwnGreeting::Immediate(dialect),
            auth_accept: None,
            auth_offer: None,
            framings: None,
            tls: false,
            peer_addr: None,
        }
    }
}

/// The TLS role of this side: the side whose nonce line is lower (bytewise) is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRole {
    /// Start TLS as client.
    Client,
    /// Start TLS as server.
    Server,
}

/// What the peer told us in its greeting, before authentication.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerGreeting {
    /// Line 1, parsed.
    pub greeting: Greeting,
    /// The dialect its line 1 shows (`None` if it is not one we know).
    pub dialect: Option<Dialect>,
    /// Whether it is a Rust node (`provider=aemp-rs-…`).
    pub is_rust: bool,
}

impl PeerGreeting {
    /// The peer's node id (unauthenticated until [`Established`]).
    pub fn node_id(&self) -> &str {
        &self.greeting.node_id
    }
}

/// Things the handshake learned, in order.
#[derive(Debug)]
pub enum Event {
    /// The peer's line 1 arrived and passed the protocol checks. The handshake now waits for
    /// [`Handshake::accept_peer`] (or for the caller to drop it).
    PeerGreeting(PeerGreeting),
    /// Both sides offered TLS: start TLS in this role on the same stream, hand it the bytes from
    /// [`Handshake::take_tls_leftover`], then call [`Handshake::tls_established`] and feed the
    /// decrypted bytes from then on.
    StartTls(TlsRole),
    /// The peer is authenticated; the data phase begins.
    Established(Box<Established>),
}

/// A finished handshake: everything the data phase needs.
#[derive(Debug)]
pub struct Established {
    proof: AuthVerified,
    /// The peer's greeting.
    pub peer: PeerGreeting,
    /// The dialect of our own greeting.
    pub dialect: Dialect,
    /// The framing we send in.
    pub send_framing: Framing,
    /// The framing the peer sends in.
    pub recv_framing: Framing,
    /// The auth method we sent.
    pub sent_auth: AuthMethod,
    /// Whether the link runs inside TLS.
    pub tls: bool,
    /// Bytes received after the peer's auth line: the start of the data phase.
    pub leftover: Vec<u8>,
}

impl Established {
    /// The verified auth method of the peer.
    pub fn peer_auth(&self) -> AuthMethod {
        self.proof.method()
    }

    /// The peer's node id, now authenticated.
    pub fn peer_node_id(&self) -> &str {
        self.peer.node_id()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Line1,
    PeerDecision,
    Line2,
    Tls,
    AuthLine,
    Done,
    Failed,
}

/// Our greeting once it is fixed.
#[derive(Debug)]
struct Own {
    line1: String,
    nonce: Nonce,
    dialect: Dialect,
    accept: Vec<AuthMethod>,
    offer: Vec<AuthMethod>,
    framings: Vec<Framing>,
}

/// The handshake state machine of one connection.
#[derive(Debug)]
pub struct Handshake {
    config: HandshakeConfig,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<Event>,
    nonce: Nonce,
    own: Option<Own>,
    peer: Option<PeerGreeting>,
    peer_line1: Vec<u8>,
    peer_line2: Vec<u8>,
    tls: bool,
    tls_leftover: Vec<u8>,
    sent: Option<(AuthMethod, Framing)>,
}

impl Handshake {
    /// Starts a handshake with a nonce drawn from the OS. With an immediate greeting, our two
    /// lines are ready in [`Handshake::take_output`] at once.
    pub fn new(config: HandshakeConfig) -> Result<Handshake, HandshakeError> {
        let nonce = match &config.greeting {
            OwnGreeting::Injected { nonce, .. } => nonce.clone(),
            _ => Nonce::random().map_err(|e| HandshakeError::Nonce(e.to_string()))?,
        };
        Self::with_nonce(config, nonce)
    }

    /// Starts a handshake with a given nonce (tests and captures; production uses
    /// [`Handshake::new`]).
    pub fn with_nonce(config: HandshakeConfig, nonce: Nonce) -> Result<Handshake, HandshakeError> {
        let mut hs = Handshake {
            config,
            state: State::Line1,
            input: Vec::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            nonce,
            own: None,
            peer: None,
            peer_line1: Vec::new(),
            peer_line2: Vec::new(),
            tls: false,
            tls_leftover: Vec::new(),
            sent: None,
        };
        match hs.config.greeting.clone() {
            OwnGreeting::Immediate(d) => hs.send_greeting(d),
            OwnGreeting::Injected { line1, .. } => hs.send_injected(line1)?,
            OwnGreeting::Deferred => {}
        }
        Ok(hs)
    }

    /// Our dialect, once our greeting is fixed.
    pub fn dialect(&self) -> Option<Dialect> {
        self.own.as_ref().map(|o| o.dialect)
    }

    /// The peer's greeting, once line 1 arrived.
    pub fn peer(&self) -> Option<&PeerGreeting> {
        self.peer.as_ref()
    }

    /// Bytes to write to the peer (empties the buffer).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether there are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the handshake has produced [`Event::Established`].
    pub fn is_established(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes received past line 2 when TLS is due: they belong to TLS, untouched.
    pub fn take_tls_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tls_leftover)
    }

    /// Feeds received bytes (decrypted ones once TLS is established).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), HandshakeError> {
        match self.state {
            State::Failed => return Err(HandshakeError::Misuse("handshake already failed")),
            State::Done => return Err(HandshakeError::Misuse("handshake already finished")),
            State::Tls => {
                return Err(HandshakeError::Misuse(
                    "bytes fed while TLS is being set up; they belong to TLS",
                ));
            }
            _ => {}
        }
        self.input.extend_from_slice(data);
        self.run()
    }

    /// Tells the handshake that the peer closed the connection.
    pub fn feed_eof(&mut self) -> Result<(), HandshakeError> {
        if self.state == State::Done {
            return Ok(());
        }
        let err = HandshakeError::UnexpectedEof {
            peer: self.peer_name(),
        };
        self.state = State::Failed;
        Err(err)
    }

    /// Lets the handshake go on after [`Event::PeerGreeting`]. With a deferred greeting,
    /// `dialect` chooses ours (`None`: the dialect the peer's line 1 shows, else P0).
    pub fn accept_peer(&mut self, dialect: Option<Dialect>) -> Result<(), HandshakeError> {
        if self.state != State::PeerDecision {
            return Err(HandshakeError::Misuse(
                "accept_peer outside the line-1 decision",
            ));
        }
        if self.own.is_none() {
            let d = dialect
                .or_else(|| self.peer.as_ref().and_then(|p| p.dialect))
                .unwrap_or(Dialect::P0);
            self.send_greeting(d);
            if let Err(e) = self.check_version() {
                return Err(self.fail(e));
            }
        }
        self.state = State::Line2;
        self.run()
    }

    /// Refuses the peer after [`Event::PeerGreeting`] (already connected, not wanted, …).
    pub fn refuse(&mut self, reason: impl Into<String>) -> HandshakeError {
        let err = HandshakeError::Refused {
            peer: self.peer_name(),
            reason: reason.into(),
        };
        self.fail(err)
    }

    /// Tells the handshake that TLS is up after [`Event::StartTls`]; our auth line is then
    /// ready in [`Handshake::take_output`], to be written inside TLS.
    pub fn tls_established(&mut self) -> Result<(), HandshakeError> {
        if self.state != State::Tls {
            return Err(HandshakeError::Misuse("tls_established without StartTls"));
        }
        self.tls = true;
        self.state = State::AuthLine;
        if let Err(e) = self.send_auth_line() {
            return Err(self.fail(e));
        }
        self.run()
    }

    fn peer_name(&self) -> PeerName {
        PeerName(self.peer.as_ref().map(|p| p.greeting.node_id.clone()))
    }

    fn fail(&mut self, err: HandshakeError) -> HandshakeError {
        self.state = State::Failed;
        self.input.clear();
        err
    }

    fn run(&mut self) -> Result<(), HandshakeError> {
        match self.step_all() {
            Ok(()) => {
                if self.unread() > MAX_PENDING {
                    let err = HandshakeError::LineTooLong {
                        peer: self.peer_name(),
                        limit: MAX_PENDING,
                    };
                    return Err(self.fail(err));
                }
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The bytes Perl would hold unread at this point, which its `rbuf_max` limits: all the
    /// input while a line is awaited (every complete line has been taken off), none once the
    /// auth line is verified (the rest is data) or TLS has taken the rest. While the caller
    /// decides on line 1, the lines Perl would already have read (there is no such pause in
    /// Perl) do not count: line 2 and, without TLS, the auth line.
    fn unread(&self) -> usize {
        match self.state {
            State::Done | State::Failed | State::Tls => 0,
            State::Line1 | State::Line2 | State::AuthLine => self.input.len(),
            State::PeerDecision => {
                let after_line = |from: usize| {
                    self.input
                        .get(from..)
                        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
                        .map(|lf| from + lf + 1)
                };
                let Some(line2_end) = after_line(0) else {
                    return self.input.len();
                };
                let tls =
                    self.config.tls && self.peer.as_ref().is_some_and(|p| p.greeting.offers_tls());
                if tls || after_line(line2_end).is_some() {
                    return 0;
                }
                self.input.len().saturating_sub(line2_end)
            }
        }
    }

    /// Takes one LF-terminated line off the input, without LF and one optional CR.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let end = self.input.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.input.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(line)
    }

    fn step_all(&mut self) -> Result<(), HandshakeError> {
        loop {
            match self.state {
                State::Line1 => {
                    let Some(line) = self.take_line() else {
                        return Ok(());
                    };
                    self.on_line1(line)?;
                }
                State::Line2 => {
                    let Some(line) = self.take_line() else {
                        return Ok(());
                    };
                    self.on_line2(line)?;
                }
                State::AuthLine => {
                    let Some(line) = self.take_line() else {
                        return Ok(());
                    };
                    self.on_auth_line(line)?;
                }
                State::PeerDecision | State::Tls | State::Done | State::Failed => return Ok(()),
            }
        }
    }

    fn on_line1(&mut self, line: Vec<u8>) -> Result<(), HandshakeError> {
        let greeting =
            Greeting::parse(&line).map_err(|cause| HandshakeError::UnparsableGreeting {
                peer: PeerName(None),
                cause,
            })?;
        let peer = PeerName(Some(greeting.node_id.clone()));
        if greeting.proto != PROTOCOL {
            return Err(HandshakeError::UnsupportedProtocol {
                peer,
                proto: greeting.proto,
            });
        }
        // A reflected connection shows our own line 1; say so rather than "talking to myself".
        if self
            .own
            .as_ref()
            .is_some_and(|o| o.line1.as_bytes() == line.as_slice())
        {
            return Err(HandshakeError::Echo { peer });
        }
        let is_rust = dialect::is_rust_peer(&greeting);
        self.peer = Some(PeerGreeting {
            dialect: Dialect::of_greeting(&greeting),
            greeting,
            is_rust,
        });
        self.peer_line1 = line;
        if self.own.is_some() {
            self.check_version()?;
        }
        if self
            .peer
            .as_ref()
            .is_some_and(|p| p.greeting.node_id == self.config.node_id)
        {
            return Err(HandshakeError::TalkingToItself { peer });
        }
        if let Some(p) = &self.peer {
            self.events.push_back(Event::PeerGreeting(p.clone()));
        }
        self.state = State::PeerDecision;
        Ok(())
    }

    fn check_version(&self) -> Result<(), HandshakeError> {
        let (Some(own), Some(peer)) = (&self.own, &self.peer) else {
            return Ok(());
        };
        let ours = own.dialect.version();
        if peer.greeting.version_number() != f64::from(ours) {
            return Err(HandshakeError::VersionMismatch {
                peer: self.peer_name(),
                ours,
                theirs: peer.greeting.version.clone(),
            });
        }
        Ok(())
    }

    fn on_line2(&mut self, line: Vec<u8>) -> Result<(), HandshakeError> {
        self.peer_line2 = line;
        let (own, peer) = self.own_and_peer()?;
        let own_nonce = own.nonce.as_str().as_bytes();
        if own.line1.as_bytes() == self.peer_line1.as_slice() && own_nonce == self.peer_line2 {
            return Err(HandshakeError::Echo {
                peer: self.peer_name(),
            });
        }
        let tls = self.config.tls && peer.greeting.offers_tls();
        // Identical nonces would make both sides TLS servers; refuse instead of hanging.
        if tls && own_nonce == self.peer_line2 {
            return Err(HandshakeError::Echo {
                peer: self.peer_name(),
            });
        }
        let role = if own_nonce < self.peer_line2.as_slice() {
            TlsRole::Client
        } else {
            TlsRole::Server
        };
        let framing = peer
            .greeting
            .framings
            .iter()
            .filter_map(|f| Framing::from_name(f))
            .find(|f| own.framings.contains(f))
            .ok_or_else(|| HandshakeError::NoCommonFraming {
                peer: self.peer_name(),
                offered: peer.greeting.framings.clone(),
            })?;
        let method = self.choose_auth(tls)?;
        self.sent = Some((method, framing));
        if tls {
            self.tls_leftover = std::mem::take(&mut self.input);
            self.state = State::Tls;
            self.events.push_back(Event::StartTls(role));
            return Ok(());
        }
        self.send_auth_line()?;
        self.state = State::AuthLine;
        Ok(())
    }

    /// The first method in the peer's accept list that we may send: `tls_*` only inside TLS,
    /// and inside TLS only `tls_*` (Perl checks `hmac_*` under TLS without the secret).
    fn choose_auth(&self, tls: bool) -> Result<AuthMethod, HandshakeError> {
        let (own, peer) = self.own_and_peer()?;
        let has_secret = !self.config.secret.is_empty();
        if !tls && !has_secret {
            return Err(HandshakeError::NoSecret {
                peer: self.peer_name(),
            });
        }
        peer.greeting
            .auth_accept
            .iter()
            .filter_map(|m| AuthMethod::from_name(m))
            .find(|m| own.offer.contains(m) && m.needs_tls() == tls)
            .ok_or_else(|| HandshakeError::NoCommonAuth {
                peer: self.peer_name(),
                accepted: peer.greeting.auth_accept.clone(),
                tls,
            })
    }

    fn own_and_peer(&self) -> Result<(&Own, &PeerGreeting), HandshakeError> {
        match (&self.own, &self.peer) {
            (Some(o), Some(p)) => Ok((o, p)),
            _ => Err(HandshakeError::Misuse("greetings not exchanged")),
        }
    }

    fn lines(&self) -> Result<GreetingLines<'_>, HandshakeError> {
        let own = self
            .own
            .as_ref()
            .ok_or(HandshakeError::Misuse("no own greeting"))?;
        Ok(GreetingLines {
            own: [own.line1.as_bytes(), own.nonce.as_str().as_bytes()],
            peer: [&self.peer_line1, &self.peer_line2],
        })
    }

    fn send_auth_line(&mut self) -> Result<(), HandshakeError> {
        let (method, framing) = self.sent.ok_or(HandshakeError::Misuse("no auth chosen"))?;
        let token =
            auth::own_token(method, &self.config.secret, &self.lines()?).map_err(|e| match e {
                AuthError::NoSecret { .. } => HandshakeError::NoSecret {
                    peer: self.peer_name(),
                },
                _ => HandshakeError::NoCommonAuth {
                    peer: self.peer_name(),
                    accepted: Vec::new(),
                    tls: self.tls,
                },
            })?;
        self.output
            .extend_from_slice(format!("{method};{token};{framing}\n").as_bytes());
        Ok(())
    }

    fn on_auth_line(&mut self, line: Vec<u8>) -> Result<(), HandshakeError> {
        let peer = self.peer_name();
        let malformed = || HandshakeError::MalformedAuthLine { peer: peer.clone() };
        let text = std::str::from_utf8(&line).map_err(|_| malformed())?;
        let mut fields = text.split(';');
        let (Some(method_name), Some(token), Some(framing_name)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed());
        };
        let method = AuthMethod::from_name(method_name).ok_or_else(|| {
            HandshakeError::UnknownAuthMethod {
                peer: peer.clone(),
                method: method_name.to_owned(),
            }
        })?;
        let own = self
            .own
            .as_ref()
            .ok_or(HandshakeError::Misuse("no own greeting"))?;
        if !own.accept.contains(&method) {
            return Err(HandshakeError::AuthNotAccepted { peer, method });
        }
        if method.needs_tls() && !self.tls {
            return Err(HandshakeError::TlsOnlyMethod { peer, method });
        }
        let recv_framing = Framing::from_name(framing_name)
            .filter(|f| own.framings.contains(f))
            .ok_or_else(|| HandshakeError::FramingNotOffered {
                peer: peer.clone(),
                framing: framing_name.to_owned(),
            })?;
        let dialect = own.dialect;
        let proof = auth::verify_peer_token(
            method,
            token.as_bytes(),
            &self.config.secret,
            &self.lines()?,
            self.tls,
        )
        .map_err(|e| match e {
            AuthError::TlsRequired { method } => HandshakeError::TlsOnlyMethod {
                peer: peer.clone(),
                method,
            },
            AuthError::NoSecret { .. } => HandshakeError::NoSecret { peer: peer.clone() },
            _ => HandshakeError::AuthFailed {
                peer: peer.clone(),
                method,
            },
        })?;
        let (sent_auth, send_framing) = self.sent.ok_or(HandshakeError::Misuse("no auth sent"))?;
        let peer_greeting = self.peer.clone().ok_or(HandshakeError::Misuse("no peer"))?;
        self.state = State::Done;
        self.events
            .push_back(Event::Established(Box::new(Established {
                proof,
                peer: peer_greeting,
                dialect,
                send_framing,
                recv_framing,
                sent_auth,
                tls: self.tls,
                leftover: std::mem::take(&mut self.input),
            })));
        Ok(())
    }

    fn send_greeting(&mut self, dialect: Dialect) {
        let accept = self
            .config
            .auth_accept
            .clone()
            .unwrap_or_else(|| dialect.auth_accept().to_vec());
        let framings = self
            .config
            .framings
            .clone()
            .unwrap_or_else(|| dialect.framings().to_vec());
        let line1 = dialect
            .greeting(
                &self.config.node_id,
                &accept,
                &framings,
                self.config.tls,
                self.config.peer_addr.as_deref(),
            )
            .to_line();
        let offer = self
            .config
            .auth_offer
            .clone()
            .unwrap_or_else(|| dialect.auth_offer().to_vec());
        self.install_own(line1, dialect, accept, offer, framings);
    }

    fn send_injected(&mut self, line1: String) -> Result<(), HandshakeError> {
        let greeting = Greeting::parse(line1.as_bytes())
            .map_err(|_| HandshakeError::Misuse("injected line 1 does not parse"))?;
        let dialect = Dialect::of_greeting(&greeting).ok_or(HandshakeError::Misuse(
            "injected line 1 shows no known dialect",
        ))?;
        let accept = greeting
            .auth_accept
            .iter()
            .filter_map(|m| AuthMethod::from_name(m))
            .collect();
        let framings = greeting
            .framings
            .iter()
            .filter_map(|f| Framing::from_name(f))
            .collect();
        let offer = self
            .config
            .auth_offer
            .clone()
            .unwrap_or_else(|| dialect.auth_offer().to_vec());
        self.install_own(line1, dialect, accept, offer, framings);
        Ok(())
    }

    fn install_own(
        &mut self,
        line1: String,
        dialect: Dialect,
        accept: Vec<AuthMethod>,
        offer: Vec<AuthMethod>,
        framings: Vec<Framing>,
    ) {
        let nonce = self.nonce.clone();
        self.output.extend_from_slice(line1.as_bytes());
        self.output.push(b'\n');
        self.output.extend_from_slice(nonce.as_str().as_bytes());
        self.output.push(b'\n');
        self.own = Some(Own {
            line1,
            nonce,
            dialect,
            accept,
            offer,
            framings,
        });
    }
}
