//! The `Transport` actor: one per TCP connection, accepted or dialled.
//!
//! It runs the handshake over the socket under a timeout (its mailbox paused), then moves
//! packets: received ones go to the node's [`PacketSink`] as soon as a read brings them,
//! outgoing ones arrive through the link's [`SendQueue`], which a writer task drains,
//! coalescing whatever is waiting into one write. It knows the node only through
//! [`TransportHooks`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument as _;

use super::contract::{Down, LinkEnd, PacketSink, TransportHooks};
use super::handshake::{HandshakeDone, Handshaking, LinkStream, Seen};
use super::log_throttle::Verdict;
use super::send_queue::{LinkCounters, SendQueue};
use super::tls::TlsError;
use crate::proto::dialect::{Dialect, P0_TIMEOUT_SECS};
use crate::proto::framing::{self, Framing, FramingError, PacketDecoder};
use crate::proto::greeting::perl_number;
use crate::proto::handshake::{Established, HandshakeError};

/// What ended a connection. Each names the peer (its address, and its node id once known).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The handshake refused the peer or failed.
    #[error("handshake with {addr}: {source}")]
    Handshake {
        /// The peer's address.
        addr: String,
        /// What went wrong.
        source: HandshakeError,
    },
    /// The handshake did not finish in time.
    #[error("handshake with {addr} timed out after {after:?}")]
    HandshakeTimeout {
        /// The peer's address.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// TLS was refused or failed (no or a foreign certificate, an alert, plaintext where TLS
    /// was due, TLS required but not offered).
    #[error("TLS with {addr}: {source}")]
    Tls {
        /// The peer's address.
        addr: String,
        /// What went wrong.
        source: TlsError,
    },
    /// The TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// The TCP connect did not finish in time.
    #[error("connecting to {addr} timed out")]
    ConnectTimeout {
        /// The address dialled.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The socket failed.
    #[error("connection with {addr}: {source}")]
    Io {
        /// The peer's address.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// The peer sent a packet that cannot be decoded.
    #[error("garbage from {addr}: {source}")]
    Framing {
        /// The peer's address or node id.
        addr: String,
        /// What was wrong.
        source: FramingError,
    },
    /// Too many handshakes of accepted connections were under way: this one, the oldest, was
    /// dropped to make room.
    #[error(
        "handshake with {addr} dropped: {limit} handshakes were under way, the oldest goes first"
    )]
    Evicted {
        /// The peer's address.
        addr: String,
        /// The bound on handshakes under way.
        limit: usize,
    },
    /// The registry did not let the link come up (it lost a tie-break).
    #[error("link with {addr} superseded by another connection")]
    Superseded {
        /// The peer's address.
        addr: String,
    },
}

/// Why a connection failed before its link came up, in a few stable groups (the label of the
/// handshake-failure counters in `Node::stats` and `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The TCP connect or the handshake did not finish in time.
    Timeout,
    /// Authentication failed: wrong secret, no common or an unacceptable auth method.
    Auth,
    /// The peer's greeting or handshake lines were wrong: unparsable, another protocol
    /// version or dialect, no common framing, garbage.
    Protocol,
    /// TLS failed or was refused.
    Tls,
    /// Refused: the TCP connect, the peer at line 1 (or it closed during the handshake), or
    /// this node (another connection to that node, too many handshakes under way, itself).
    Refused,
    /// The socket failed.
    Io,
}

impl FailureCause {
    /// Every cause, in label order.
    pub const ALL: [FailureCause; 6] = [
        FailureCause::Timeout,
        FailureCause::Auth,
        FailureCause::Protocol,
        FailureCause::Tls,
        FailureCause::Refused,
        FailureCause::Io,
    ];

    /// Its label: `timeout`, `auth`, `protocol`, `tls`, `refused` or `io`.
    pub fn label(self) -> &'static str {
        match self {
            FailureCause::Timeout => "timeout",
            FailureCause::Auth => "auth",
            FailureCause::Protocol => "protocol",
            FailureCause::Tls => "tls",
            FailureCause::Refused => "refused",
            FailureCause::Io => "io",
        }
    }
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl TransportError {
    /// The group this failure counts in.
    pub fn cause(&self) -> FailureCause {
        use HandshakeError as H;
        match self {
            TransportError::HandshakeTimeout { .. } | TransportError::ConnectTimeout { .. } => {
                FailureCause::Timeout
            }
            TransportError::Tls { .. } => FailureCause::Tls,
            TransportError::Connect { source, .. }
                if source.kind() == io::ErrorKind::ConnectionRefused =>
            {
                FailureCause::Refused
            }
            TransportError::Connect { .. } | TransportError::Io { .. } => FailureCause::Io,
            TransportError::Framing { .. } => FailureCause::Protocol,
            TransportError::Evicted { .. } | TransportError::Superseded { .. } => {
                FailureCause::Refused
            }
            TransportError::Handshake { source, .. } => match source {
                H::NoCommonAuth { .. }
                | H::NoSecret { .. }
                | H::MalformedAuthLine { .. }
                | H::UnknownAuthMethod { .. }
                | H::CleartextRefused { .. }
                | H::AuthNotAccepted { .. }
                | H::TlsOnlyMethod { .. }
                | H::AuthFailed { .. } => FailureCause::Auth,
                H::TalkingToItself { .. } | H::Refused { .. } | H::UnexpectedEof { .. } => {
                    FailureCause::Refused
                }
                H::UnparsableGreeting { .. }
                | H::UnsupportedProtocol { .. }
                | H::VersionMismatch { .. }
                | H::Echo { .. }
                | H::LineTooLong { .. }
                | H::NoCommonFraming { .. }
                | H::FramingNotOffered { .. }
                | H::Nonce(_)
                | H::Misuse(_) => FailureCause::Protocol,
            },
        }
    }
}

/// The span every line a link logs is in: its connection id, direction and address, and
/// (recorded once known) the peer's node id and the link's dialect.
fn link_span(conn: u64, addr: &str, dialled: bool) -> tracing::Span {
    tracing::info_span!(
        "link",
        conn,
        dir = if dialled { "dialled" } else { "accepted" },
        %addr,
        peer = tracing::field::Empty,
        dialect = tracing::field::Empty,
    )
}

/// How a dial greets, and what the node does when the listener speaks another dialect.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DialAs {
    /// The dialect of our greeting.
    pub dialect: Dialect,
    /// The node dials again in the listener's dialect if it shows another one: such a failure
    /// is expected, and logged at debug level only.
    pub redials_on_mismatch: bool,
}

impl DialAs {
    /// A dial in `dialect` that is not repeated in another.
    pub fn fixed(dialect: Dialect) -> DialAs {
        DialAs {
            dialect,
            redials_on_mismatch: false,
        }
    }
}

/// Dials `addr` on `worker`, greeting as `how` says.
pub(crate) fn dial(
    hooks: Arc<TransportHooks>,
    worker: &ArbiterHandle,
    addr: String,
    conn: u64,
    how: DialAs,
) {
    let span = link_span(conn, &addr, true);
    worker.spawn(async move {
        let after = hooks.config.handshake_timeout;
        let connect = TcpStream::connect(&addr).instrument(span.clone());
        let error = match tokio::time::timeout(after, connect).await {
            Ok(Ok(stream)) => return Transport::run(hooks, stream, addr, Some(how), conn, span),
            Ok(Err(source)) => TransportError::Connect {
                addr: addr.clone(),
                source,
            },
            Err(_) => TransportError::ConnectTimeout {
                addr: addr.clone(),
                after,
            },
        };
        span.in_scope(|| tracing::info!(node = %hooks.config.node_id, "{error}"));
        failed_before_start(&hooks, conn, addr, error);
    });
}

/// A connection that never got a transport (its connect or its socket failed).
fn failed_before_start(hooks: &TransportHooks, conn: u64, addr: String, error: TransportError) {
    hooks.down.do_send(Down {
        conn,
        addr,
        node: None,
        was_up: false,
        end: LinkEnd::Failed(Arc::new(error)),
        mismatch: None,
        duplicate: false,
    });
}

/// Takes an accepted connection to `worker`.
pub(crate) fn accept(
    hooks: Arc<TransportHooks>,
    worker: &ArbiterHandle,
    stream: std::net::TcpStream,
    addr: String,
    conn: u64,
) {
    let span = link_span(conn, &addr, false);
    worker.spawn(async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => Transport::run(hooks, stream, addr, None, conn, span),
            Err(source) => {
                span.in_scope(|| tracing::warn!("cannot adopt accepted socket: {source}"));
                let error = TransportError::Io {
                    addr: addr.clone(),
                    source,
                };
                failed_before_start(&hooks, conn, addr, error);
            }
        }
    });
}

/// The transport actor of one connection.
pub(crate) struct Transport {
    hooks: Arc<TransportHooks>,
    conn: u64,
    addr: String,
    /// How we dialled; `None` for an accepted connection.
    dial: Option<DialAs>,
    stream: Option<TcpStream>,
    peer: Option<Arc<str>>,
    /// What a failed handshake saw of the peer, so the node can forget it (or redial).
    claimed: Seen,
    dialect: Dialect,
    up: bool,
    end: LinkEnd,
    writer: Option<tokio::task::JoinHandle<()>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// The link's send queue, closed when the transport stops.
    queue: Option<Arc<SendQueue>>,
    /// The link's span (see [`link_span`]), entered wherever the transport logs.
    span: tracing::Span,
    /// We closed the link and wait for the peer to close its side.
    closing: bool,
}

/// The writer task ended (queue closed or a write failed).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct WriterDone(Option<io::Error>);

/// The reader task ended: the peer closed, fell silent, or sent garbage / the socket failed.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct ReaderDone(Result<ReadEnd, TransportError>);

enum ReadEnd {
    /// End of file in the middle of a packet.
    Eof,
    /// End of file between packets: the peer left.
    Left,
    TimedOut,
}

enum ReadError {
    Framing(FramingError),
    Io(io::Error),
}

impl Transport {
    fn run(
        hooks: Arc<TransportHooks>,
        stream: TcpStream,
        addr: String,
        dial: Option<DialAs>,
        conn: u64,
        span: tracing::Span,
    ) {
        let _entered = span.enter();
        // Nagle off: we coalesce writes ourselves. Keepalive on, with the node's liveness
        // bound: P1/P2 have no read timeout and rely on it to notice a dead peer.
        let _ = stream.set_nodelay(true);
        let liveness = hooks.config.liveness_timeout;
        if let Err(e) = super::liveness::apply(socket2::SockRef::from(&stream), liveness) {
            tracing::warn!(node = %hooks.config.node_id, "cannot set the liveness bound {liveness:?}: {e}");
        }
        drop(_entered);
        Transport::create(move |_| Transport {
            hooks,
            conn,
            addr,
            dial,
            stream: Some(stream),
            peer: None,
            claimed: Seen::default(),
            dialect: Dialect::P0,
            up: false,
            end: LinkEnd::Eof,
            writer: None,
            reader: None,
            queue: None,
            span,
            closing: false,
        });
    }

    fn enter_data_phase(&mut self, done: HandshakeDone, ctx: &mut Context<Self>) {
        let HandshakeDone {
            mut established,
            stream,
            queue,
            sink,
        } = done;
        self.queue = Some(queue.clone());
        self.up = true;
        self.dialect = established.dialect;
        self.span.record("dialect", self.dialect.name());
        match stream {
            // Plain links keep tokio's lock-free halves; TLS state is shared by both directions.
            LinkStream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                self.start_io(read, write, &mut established, queue, sink, ctx);
            }
            LinkStream::Tls(tls) => {
                let (read, write) = tokio::io::split(tls);
                self.start_io(read, write, &mut established, queue, sink, ctx);
            }
        }
    }

    /// The packet to send after write silence, and how long that silence may be.
    fn keepalive(&self, established: &Established) -> Option<(Duration, Bytes)> {
        // P0 peers expect traffic within our advertised `timeout`: we send `[]` after T−3 s
        // of write silence. In P1 a node without listeners cannot be called back, so it keeps
        // the link probed with `[]` (Perl: `monitor_timeout`).
        let idle = match self.dialect {
            Dialect::P0 => Some(Duration::from_secs(u64::from(P0_TIMEOUT_SECS) - 3)),
            Dialect::P1a | Dialect::P1b => self.hooks.config.p1_keepalive,
            _ => None,
        }?;
        let mut packet = BytesMut::new();
        let _ = framing::encode_packet(established.send_framing, "", &[(); 0], &mut packet);
        Some((idle, packet.freeze()))
    }

    fn start_io<R, W>(
        &mut self,
        read: R,
        write: W,
        established: &mut Established,
        queue: Arc<SendQueue>,
        sink: Box<dyn PacketSink>,
        ctx: &mut Context<Self>,
    ) where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let keepalive = self.keepalive(established);
        // The node may give up on the link (a full send queue): then the socket closes at once,
        // whatever the writer is stuck on.
        let give_up = queue.clone();
        ctx.spawn(
            async move { give_up.aborted().await }
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.end = LinkEnd::Aborted;
                    ctx.stop();
                }),
        );
        let addr = ctx.address();
        let stall = self.hooks.config.write_timeout;
        let counted = queue.clone();
        self.writer = Some(actix::spawn(
            async move {
                let result = writer(write, queue, keepalive, stall).await;
                addr.do_send(WriterDone(result.err()));
            }
            .instrument(self.span.clone()),
        ));
        // A P0 peer promises traffic within its advertised `timeout`: a read silent for
        // longer drops the link.
        let read_timeout = established
            .peer
            .greeting
            .key("timeout")
            .map(perl_number)
            .filter(|t| *t > 0.0 && self.dialect == Dialect::P0)
            // `t` came off the wire: no panic on huge values.
            .map(|t| Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX));
        let decoder = PacketDecoder::new(established.recv_framing, self.hooks.config.max_packet);
        // Bytes that came with the peer's auth line are the first packets.
        let leftover = std::mem::take(&mut established.leftover);
        let addr = ctx.address();
        let peer_addr = self.addr.clone();
        self.reader = Some(actix::spawn(
            async move {
                let end = reader(read, leftover, decoder, sink, read_timeout, &counted).await;
                let end = end.map_err(|source| match source {
                    ReadError::Framing(source) => TransportError::Framing {
                        addr: peer_addr,
                        source,
                    },
                    ReadError::Io(source) => TransportError::Io {
                        addr: peer_addr,
                        source,
                    },
                });
                addr.do_send(ReaderDone(end));
            }
            .instrument(self.span.clone()),
        ));
    }
}

impl Actor for Transport {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(stream) = self.stream.take() else {
            ctx.stop();
            return;
        };
        let hooks = self.hooks.clone();
        let (conn, addr, dial) = (self.conn, self.addr.clone(), self.dial);
        let limit = hooks.config.handshake_timeout;
        // Accepted connections wait at the gate; our own dials do not.
        let ticket = dial.is_none().then(|| hooks.gate.enter());
        let fut = async move {
            let mut seen = Seen::default();
            let handshaking = Handshaking {
                hooks: &hooks,
                conn,
                addr: &addr,
                dial: dial.map(|d| d.dialect),
                seen: &mut seen,
            };
            let evicted = async {
                match ticket {
                    Some(mut t) => t.evicted().await,
                    None => std::future::pending().await,
                }
            };
            let res = tokio::select! {
                r = tokio::time::timeout(limit, handshaking.run(stream)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(TransportError::HandshakeTimeout {
                        addr: addr.clone(),
                        after: limit,
                    }),
                },
                () = evicted => Err(TransportError::Evicted {
                    addr: addr.clone(),
                    limit: hooks.gate.limit(),
                }),
            };
            (res, seen)
        }
        .instrument(self.span.clone());
        ctx.wait(fut.into_actor(self).map(|(res, seen), act, ctx| match res {
            Ok(done) => {
                act.peer = Some(done.established.peer_node_id().into());
                act.enter_data_phase(done, ctx);
            }
            Err(e) => {
                act.span
                    .in_scope(|| log_failed_handshake(&act.hooks, &e, &seen, act.dial));
                act.end = LinkEnd::Failed(Arc::new(e));
                act.claimed = seen;
                ctx.stop();
            }
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(q) = self.queue.take() {
            q.close();
        }
        for task in [self.writer.take(), self.reader.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        self.hooks.down.do_send(Down {
            conn: self.conn,
            addr: std::mem::take(&mut self.addr),
            node: self
                .peer
                .as_deref()
                .map(str::to_owned)
                .or_else(|| self.claimed.node.take()),
            was_up: self.up,
            end: self.end.clone(),
            mismatch: self.claimed.mismatch.filter(|_| !self.up),
            duplicate: self.claimed.duplicate,
        });
    }
}

impl Handler<ReaderDone> for Transport {
    type Result = ();
    fn handle(&mut self, msg: ReaderDone, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        if self.closing {
            // We closed first and waited for the peer to close too: how it did is no news.
            ctx.stop();
            return;
        }
        match msg.0 {
            Ok(ReadEnd::Eof) => {}
            Ok(ReadEnd::Left) => self.end = LinkEnd::PeerLeft,
            Ok(ReadEnd::TimedOut) => self.end = LinkEnd::TimedOut,
            Err(e) => {
                tracing::warn!(node = %self.hooks.config.node_id, "{e}");
                self.end = LinkEnd::Failed(Arc::new(e));
            }
        }
        ctx.stop();
    }
}

impl Handler<WriterDone> for Transport {
    type Result = ();
    fn handle(&mut self, msg: WriterDone, ctx: &mut Context<Self>) {
        if let Some(e) = msg.0 {
            let _entered = self.span.enter();
            tracing::info!(node = %self.hooks.config.node_id, "write failed: {e}");
            self.end = LinkEnd::WriteFailed(Arc::new(e));
        } else if self.queue.as_ref().is_some_and(|q| q.is_aborted()) {
            self.end = LinkEnd::Aborted;
        } else if self.up {
            self.end = LinkEnd::Closed;
            if self.reader.as_ref().is_some_and(|r| !r.is_finished()) {
                // The writer sent everything and closed our direction: the peer sees us leave
                // between packets. Its reply, its own close, ends the transport; until then
                // the socket stays open, since closing it with unread bytes would reset it
                // (the peer would see a fault, and could lose what we sent).
                self.closing = true;
                ctx.run_later(CLOSE_LINGER, |_, ctx| ctx.stop());
                return;
            }
        }
        ctx.stop();
    }
}

/// How long a link we closed waits for the peer to close its side.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Drains the link's queue into the socket: everything queued since the last write goes out
/// in one write, and the first packet after a quiet spell goes at once.
async fn writer<W: AsyncWrite + Unpin>(
    mut w: W,
    queue: Arc<SendQueue>,
    keepalive: Option<(Duration, Bytes)>,
    stall: Duration,
) -> io::Result<()> {
    let mut batch = BytesMut::new();
    loop {
        let more = match &keepalive {
            Some((idle, packet)) => match tokio::time::timeout(*idle, queue.take(&mut batch)).await
            {
                Ok(more) => more,
                Err(_) => {
                    write_progressing(&mut w, packet, stall).await?;
                    LinkCounters::add(&queue.counters.bytes_sent, packet.len() as u64);
                    continue;
                }
            },
            None => queue.take(&mut batch).await,
        };
        if !more {
            // Queue closed and drained: close our direction (TLS: close_notify first).
            return match tokio::time::timeout(stall, w.shutdown()).await {
                Ok(done) => done,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "close timed out")),
            };
        }
        write_progressing(&mut w, &batch, stall).await?;
        LinkCounters::add(&queue.counters.bytes_sent, batch.len() as u64);
        SendQueue::recycle(&mut batch);
    }
}

/// Logs a failed handshake, or counts it while a flood of them is summarised.
///
/// A dialect mismatch that the node gets over is no warning: our dial, which the node repeats
/// in the listener's dialect (debug), or a Rust dialler refused here, which does the same if it
/// runs in auto mode (info).
fn log_failed_handshake(
    hooks: &Arc<TransportHooks>,
    e: &TransportError,
    seen: &Seen,
    dial: Option<DialAs>,
) {
    let node = &hooks.config.node_id;
    if seen.duplicate {
        // Crossing dials and several addresses of one node end this way: the node keeps the
        // other connection.
        tracing::debug!(%node, "{e}");
        return;
    }
    let closed_after_greeting = matches!(
        e,
        TransportError::Handshake {
            source: HandshakeError::UnexpectedEof { .. },
            ..
        }
    ) && seen.node.is_some();
    if dial.is_some() && closed_after_greeting {
        // A listener that greets and then closes has refused us at line 1, as Perl and we do
        // when another connection between the two nodes is up or under way (the node reports
        // a failure to reach it if there is none).
        tracing::info!(%node, "{e}");
        return;
    }
    if let Some(theirs) = seen.mismatch {
        match dial {
            Some(d) if d.redials_on_mismatch => {
                tracing::debug!(%node, dialect = %theirs, "{e}");
                return;
            }
            None if seen.rust => {
                tracing::info!(%node, dialect = %theirs, "{e}");
                return;
            }
            _ => {}
        }
    }
    match hooks.failures.failure(std::time::Instant::now()) {
        Verdict::Log => tracing::warn!(%node, "{e}"),
        Verdict::LogAfterSummary(n) => {
            tracing::warn!(%node, suppressed = n, "{n} more failed handshakes in the last interval");
            tracing::warn!(%node, "{e}");
        }
        Verdict::Suppress { first: false } => {}
        Verdict::Suppress { first: true } => {
            let hooks = hooks.clone();
            actix::spawn(async move {
                tokio::time::sleep(hooks.failures.interval()).await;
                let n = hooks.failures.take_summary();
                if n > 0 {
                    let node = &hooks.config.node_id;
                    tracing::warn!(%node, suppressed = n, "{n} more failed handshakes in the last interval");
                }
            });
        }
    }
}

/// Writes and flushes `bytes`, failing when the socket takes nothing for `stall` (a peer that
/// stopped reading must not hold a link, and its monitors, forever).
async fn write_progressing<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut bytes: &[u8],
    stall: Duration,
) -> io::Result<()> {
    let stalled = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("write made no progress for {stall:?}"),
        )
    };
    while !bytes.is_empty() {
        let n = tokio::time::timeout(stall, w.write(bytes))
            .await
            .map_err(|_| stalled())??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = bytes.get(n..).unwrap_or_default();
    }
    tokio::time::timeout(stall, w.flush())
        .await
        .map_err(|_| stalled())?
}

/// Reads the link and hands every complete packet to its port as soon as a read brings it:
/// all the packets of one read in one go, with no task switch per packet.
async fn reader<R: AsyncRead + Unpin>(
    mut r: R,
    leftover: Vec<u8>,
    mut decoder: PacketDecoder,
    mut sink: Box<dyn PacketSink>,
    read_timeout: Option<Duration>,
    queue: &SendQueue,
) -> Result<ReadEnd, ReadError> {
    /// Bytes a read may bring: under load a few hundred packets per syscall.
    const READ: usize = 64 * 1024;
    /// After this many packets the reader lets the ports it fed run before reading on.
    const BATCH: usize = 256;
    let counters = &queue.counters.received;
    let text = decoder.framing() == Framing::Json;
    LinkCounters::add(&counters.bytes, leftover.len() as u64);
    let mut buf = BytesMut::from(&leftover[..]);
    loop {
        let mut delivered = 0;
        let cut = deliver_all(&mut decoder, &mut buf, sink.as_mut(), &mut delivered);
        LinkCounters::add(&counters.packets, delivered as u64);
        // The packets before a bad one are handed over before the link ends.
        sink.flush();
        cut.map_err(ReadError::Framing)?;
        if delivered >= BATCH {
            tokio::task::yield_now().await;
        }
        // A consumer fed on this thread catches up a little before the next read.
        for _ in 0..64 {
            if !sink.backlogged() {
                break;
            }
            tokio::task::yield_now().await;
        }
        if buf.capacity() - buf.len() < READ / 4 {
            buf.reserve(READ);
        }
        let read = match read_timeout {
            Some(limit) => match tokio::time::timeout(limit, r.read_buf(&mut buf)).await {
                Ok(read) => read,
                Err(_) => return Ok(ReadEnd::TimedOut),
            },
            None => r.read_buf(&mut buf).await,
        };
        // AEMP has no orderly close: a peer that leaves just closes (TLS peers, Perl too,
        // without close_notify). Between packets that is leaving; inside one, a fault.
        // (JSON packets may be followed by whitespace, which the next packet would skip.)
        let eof = || match buf.is_empty() || (text && buf.iter().all(u8::is_ascii_whitespace)) {
            true => ReadEnd::Left,
            false => ReadEnd::Eof,
        };
        match read {
            Ok(0) => return Ok(eof()),
            Ok(n) => LinkCounters::add(&counters.bytes, n as u64),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(eof()),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Hands every complete packet in `buf` to `sink`, counting them in `delivered`; stops at the
/// first packet that cannot be cut or read.
fn deliver_all(
    decoder: &mut PacketDecoder,
    buf: &mut BytesMut,
    sink: &mut dyn PacketSink,
    delivered: &mut usize,
) -> Result<(), FramingError> {
    while let Some(packet) = decoder.decode(buf)? {
        sink.deliver(packet)?;
        *delivered += 1;
    }
    Ok(())
}
