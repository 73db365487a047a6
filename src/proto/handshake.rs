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
//! TLS, where Perl would verify it without the secret. `cleartext` (the secret itself on the
//! wire) is neither advertised, accepted nor sent unless [`HandshakeConfig::allow_cleartext`]
//! is set ([`HandshakeError::CleartextRefused`]); Perl always accepts it.

use std::collections::VecDeque;
use std::fmt;

use super::auth::{self, AuthError, AuthMethod, AuthVerified, GreetingLines, Redacted};
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
    /// The peer authenticated with `cleartext` (its copy of the shared secret in hex), which
    /// this side does not allow ([`HandshakeConfig::allow_cleartext`] is off). The token is
    /// not checked and not kept.
    #[error(
        "{peer} used auth method cleartext (the shared secret in clear text), which this node \
         does not allow"
    )]
    CleartextRefused {
        /// The peer.
        peer: PeerName,
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
    /// read from the line; the dialect is the one the line shows. A `cleartext` in the line is
    /// sent as it is, but accepted only with [`HandshakeConfig::allow_cleartext`].
    Injected {
        /// Line 1 without terminator.
        line1: String,
        /// Line 2.
        nonce: Nonce,
    },
}

/// What a handshake needs to know about us.
///
/// Its `Debug` output shows the secret's length, never the secret.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// Our node id.
    pub node_id: String,
    /// The shared secret (may be empty when TLS authenticates).
    pub secret: Vec<u8>,
    /// How our greeting is produced.
    pub greeting: OwnGreeting,
    /// Auth methods we accept; `None` = the dialect's default (without `cleartext`). `cleartext`
    /// is dropped from this list unless [`HandshakeConfig::allow_cleartext`] is set.
    pub auth_accept: Option<Vec<AuthMethod>>,
    /// Auth methods we may send; `None` = the dialect's default (never `cleartext`).
    /// `cleartext` is dropped from this list unless [`HandshakeConfig::allow_cleartext`] is set.
    pub auth_offer: Option<Vec<AuthMethod>>,
    /// Allow the `cleartext` auth method: advertise it (last, where Perl lists it, when
    /// `auth_accept` is the default), accept a peer's `cleartext;<hex secret>` auth line, and
    /// send one if `auth_offer` lists it. Off by default.
    ///
    /// **Risk**: a `cleartext` auth line is the shared secret in hex. Outside TLS anyone who
    /// can see the connection learns the secret, and with it can authenticate as any node of
    /// the network (and, on Perl nodes, run code). Turn this on only for simple clients that
    /// cannot compute an HMAC (AEMP-NOTES §1.16), on networks where the secret is not worth
    /// protecting. Perl nodes never send `cleartext`, so they do not need it.
    pub allow_cleartext: bool,
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
            allow_cleartext: false,
        }
    }
}

impl fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so that a new field cannot be forgotten here.
        let HandshakeConfig {
            node_id,
            secret,
            greeting,
            auth_accept,
            auth_offer,
            framings,
            tls,
            peer_addr,
            allow_cleartext,
        } = self;
        f.debug_struct("HandshakeConfig")
            .field("node_id", node_id)
            .field("secret", &Redacted(secret))
            .field("greeting", greeting)
            .field("auth_accept", auth_accept)
            .field("auth_offer", auth_offer)
            .field("allow_cleartext", allow_cleartext)
            .field("framings", framings)
            .field("tls", tls)
            .field("peer_addr", peer_addr)
            .finish()
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
///
/// Its `Debug` output leaves out the byte buffers (they may hold an auth line) and the secret.
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

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("dialect", &self.dialect())
            .field("peer", &self.peer_name())
            .field("tls", &self.tls)
            .field("sent", &self.sent)
            .field("buffered", &self.input.len())
            .field("unsent", &self.output.len())
            .finish_non_exhaustive()
    }
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

    /// Refuses the peer after [`Event::PeerGreeting`] (already connected, not wanted, …). A
    /// greeting we deferred goes out first (see [`Handshake::take_output`]).
    pub fn refuse(&mut self, reason: impl Into<String>) -> HandshakeError {
        self.greet_before_refusing();
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
            // From our greeting the dialling side (ourselves) learns that this address is its
            // own, as it must for a seed that is this node.
            self.greet_before_refusing();
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
        // Before anything else about the line: the token is the secret, and is not looked at.
        if method == AuthMethod::Cleartext && !self.config.allow_cleartext {
            return Err(HandshakeError::CleartextRefused { peer });
        }
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

    /// Perl greets before it reads anything, so a peer it refuses knows whom it reached (a
    /// dialler that reached itself, or a node that keeps another connection to it): a greeting
    /// we deferred goes out before a refusal, in the peer's dialect.
    fn greet_before_refusing(&mut self) {
        if self.own.is_none() {
            let d = self
                .peer
                .as_ref()
                .and_then(|p| p.dialect)
                .unwrap_or(Dialect::P0);
            self.send_greeting(d);
        }
    }

    fn send_greeting(&mut self, dialect: Dialect) {
        let accept = match &self.config.auth_accept {
            Some(accept) => self.cleartext_filtered(accept.clone()),
            None => {
                let mut accept = dialect.auth_accept().to_vec();
                if self.config.allow_cleartext {
                    accept.push(AuthMethod::Cleartext);
                }
                accept
            }
        };
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
        let offer = self.offer(dialect);
        self.install_own(line1, dialect, accept, offer, framings);
    }

    /// `methods` without `cleartext`, unless it is allowed.
    fn cleartext_filtered(&self, mut methods: Vec<AuthMethod>) -> Vec<AuthMethod> {
        if !self.config.allow_cleartext {
            methods.retain(|&m| m != AuthMethod::Cleartext);
        }
        methods
    }

    /// The methods we may send: the configured or default offer, `cleartext` only if allowed.
    fn offer(&self, dialect: Dialect) -> Vec<AuthMethod> {
        let offer = self
            .config
            .auth_offer
            .clone()
            .unwrap_or_else(|| dialect.auth_offer().to_vec());
        self.cleartext_filtered(offer)
    }

    fn send_injected(&mut self, line1: String) -> Result<(), HandshakeError> {
        let greeting = Greeting::parse(line1.as_bytes())
            .map_err(|_| HandshakeError::Misuse("injected line 1 does not parse"))?;
        let dialect = Dialect::of_greeting(&greeting).ok_or(HandshakeError::Misuse(
            "injected line 1 shows no known dialect",
        ))?;
        let accept = self.cleartext_filtered(
            greeting
                .auth_accept
                .iter()
                .filter_map(|m| AuthMethod::from_name(m))
                .collect(),
        );
        let framings = greeting
            .framings
            .iter()
            .filter_map(|f| Framing::from_name(f))
            .collect();
        let offer = self.offer(dialect);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"geheim";
    /// Lowercase hex of [`SECRET`]: the `cleartext` token.
    const SECRET_HEX: &str = "67656865696d";
    const PEER_LINE1: &str = "aemp;0;perl;hmac_md6_64_256;json";

    fn config(d: Dialect) -> HandshakeConfig {
        HandshakeConfig::new("me", SECRET.to_vec(), d)
    }

    /// Our line 1 as the handshake sends it.
    fn own_line1(config: HandshakeConfig) -> String {
        let mut hs = Handshake::new(config).unwrap();
        let out = String::from_utf8(hs.take_output()).unwrap();
        out.lines().next().unwrap().to_owned()
    }

    /// Feeds a P0 peer's greeting and then `auth_line`, accepting at line 1.
    fn scripted(config: HandshakeConfig, auth_line: &str) -> Result<Handshake, HandshakeError> {
        let mut hs = Handshake::with_nonce(config, Nonce::from_line("bm9uY2U").unwrap())?;
        hs.feed(format!("{PEER_LINE1}\nYWJj\n").as_bytes())?;
        while let Some(ev) = hs.poll_event() {
            if let Event::PeerGreeting(_) = ev {
                hs.accept_peer(None)?;
            }
        }
        hs.feed(format!("{auth_line}\n").as_bytes())?;
        Ok(hs)
    }

    fn established(mut hs: Handshake) -> Box<Established> {
        loop {
            match hs.poll_event() {
                Some(Event::Established(e)) => return e,
                Some(_) => {}
                None => panic!("not established"),
            }
        }
    }

    #[test]
    fn a_deferred_greeting_goes_out_before_refusing_our_own_id() {
        // A listener in auto mode reached by ourselves (a seed address that is this node):
        // as from Perl, the dialler must read our line 1 to learn whom it reached.
        let mut cfg = config(Dialect::P2);
        cfg.greeting = OwnGreeting::Deferred;
        let mut hs = Handshake::new(cfg).unwrap();
        assert!(!hs.has_output());
        let line = own_line1(config(Dialect::P2));
        let err = hs.feed(format!("{line}\nYWJj\n").as_bytes()).unwrap_err();
        assert!(
            matches!(err, HandshakeError::TalkingToItself { .. }),
            "{err}"
        );
        let out = String::from_utf8(hs.take_output()).unwrap();
        let sent = Greeting::parse(out.lines().next().unwrap().as_bytes()).unwrap();
        assert_eq!(sent.node_id, "me");
        assert_eq!(Dialect::of_greeting(&sent), Some(Dialect::P2));
        // An immediate greeting was sent already: nothing more.
        let mut hs = Handshake::new(config(Dialect::P2)).unwrap();
        hs.take_output();
        assert!(hs.feed(format!("{line}\nYWJj\n").as_bytes()).is_err());
        assert!(!hs.has_output());
    }

    #[test]
    fn cleartext_is_not_advertised_by_default() {
        for d in Dialect::ALL {
            let line = own_line1(config(d));
            let g = Greeting::parse(line.as_bytes()).unwrap();
            let expected: Vec<&str> = d.auth_accept().iter().map(|m| m.name()).collect();
            assert_eq!(g.auth_accept, expected, "{d}");
            assert!(!line.contains("cleartext"), "{d}: {line}");
        }
    }

    #[test]
    fn an_incoming_cleartext_line_is_refused_by_default() {
        let refused = HandshakeError::CleartextRefused {
            peer: PeerName(Some("perl".into())),
        };
        // The right secret, a wrong one, a framing we do not speak: refused before any of it.
        for line in [
            format!("cleartext;{SECRET_HEX};json"),
            "cleartext;00;json".to_owned(),
            format!("cleartext;{SECRET_HEX};cbor"),
        ] {
            assert_eq!(scripted(config(Dialect::P0), &line).unwrap_err(), refused);
        }
        // Listing it ourselves does not allow it either.
        let mut cfg = config(Dialect::P0);
        cfg.auth_accept = Some(vec![AuthMethod::HmacMd6_64_256, AuthMethod::Cleartext]);
        assert!(!own_line1(cfg.clone()).contains("cleartext"));
        let line = format!("cleartext;{SECRET_HEX};json");
        assert_eq!(scripted(cfg, &line).unwrap_err(), refused);
        // Nor does a replayed line 1 that lists it.
        let mut cfg = config(Dialect::P0);
        cfg.greeting = OwnGreeting::Injected {
            line1: "aemp;0;me;hmac_md6_64_256,cleartext;json".into(),
            nonce: Nonce::from_line("bm9uY2U").unwrap(),
        };
        assert_eq!(scripted(cfg, &line).unwrap_err(), refused);
    }

    #[test]
    fn the_refusal_does_not_repeat_the_secret() {
        let err = scripted(config(Dialect::P0), &format!("cleartext;{SECRET_HEX};json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cleartext"), "{err}");
        assert!(!err.contains(SECRET_HEX), "{err}");
        assert!(!err.contains("geheim"), "{err}");
    }

    #[test]
    fn with_allow_cleartext_it_is_advertised_and_accepted() {
        for d in Dialect::ALL {
            let mut cfg = config(d);
            cfg.allow_cleartext = true;
            let line = own_line1(cfg);
            let g = Greeting::parse(line.as_bytes()).unwrap();
            assert_eq!(g.auth_accept.last().map(String::as_str), Some("cleartext"));
        }
        let mut cfg = config(Dialect::P0);
        cfg.allow_cleartext = true;
        let e =
            established(scripted(cfg.clone(), &format!("cleartext;{SECRET_HEX};json")).unwrap());
        assert_eq!(e.peer_auth(), AuthMethod::Cleartext);
        // Our own side still sends hmac, not the secret.
        assert_eq!(e.sent_auth, AuthMethod::HmacMd6_64_256);
        // A wrong secret is still a mismatch.
        assert_eq!(
            scripted(cfg, "cleartext;00;json").unwrap_err(),
            HandshakeError::AuthFailed {
                peer: PeerName(Some("perl".into())),
                method: AuthMethod::Cleartext
            }
        );
    }

    #[test]
    fn cleartext_is_never_sent_unless_allowed() {
        // A peer that accepts only cleartext, and an offer that lists it.
        let peer = "aemp;0;simple;cleartext;json\nYWJj\n";
        let mut cfg = config(Dialect::P0);
        cfg.auth_offer = Some(vec![AuthMethod::Cleartext, AuthMethod::HmacMd6_64_256]);
        let mut hs =
            Handshake::with_nonce(cfg.clone(), Nonce::from_line("bm9uY2U").unwrap()).unwrap();
        hs.feed(peer.as_bytes()).unwrap();
        let _ = hs.poll_event();
        let _ = hs.take_output();
        let err = hs.accept_peer(None).unwrap_err();
        assert!(matches!(err, HandshakeError::NoCommonAuth { .. }), "{err}");
        assert!(
            !hs.take_output()
                .windows(12)
                .any(|w| w == SECRET_HEX.as_bytes())
        );

        cfg.allow_cleartext = true;
        let mut hs = Handshake::with_nonce(cfg, Nonce::from_line("bm9uY2U").unwrap()).unwrap();
        hs.feed(peer.as_bytes()).unwrap();
        let _ = hs.poll_event();
        let _ = hs.take_output();
        hs.accept_peer(None).unwrap();
        let out = String::from_utf8(hs.take_output()).unwrap();
        assert_eq!(out, format!("cleartext;{SECRET_HEX};json\n"));
    }

    #[test]
    fn debug_output_does_not_show_the_secret() {
        let secret = b"sup3r-s3cret-value";
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let bytes = format!("{:?}", secret.to_vec());
        let mut cfg = HandshakeConfig::new("me", secret.to_vec(), Dialect::P0);
        cfg.allow_cleartext = true;
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(shown.contains("<redacted 18 bytes>"), "{shown}");
        // A handshake holding a peer's cleartext line, half read.
        let mut hs = Handshake::with_nonce(cfg, Nonce::from_line("bm9uY2U").unwrap()).unwrap();
        hs.feed(format!("{PEER_LINE1}\nYWJj\n").as_bytes()).unwrap();
        let _ = hs.poll_event();
        hs.accept_peer(None).unwrap();
        hs.feed(format!("cleartext;{hex}").as_bytes()).unwrap();
        let shown = format!("{shown} {hs:?} {hs:#?}");
        for needle in [
            "sup3r-s3cret-value",
            hex.as_str(),
            &bytes[1..bytes.len() - 1],
        ] {
            assert!(!shown.contains(needle), "{needle:?} in {shown}");
        }
    }
}
