//! The `Transport` actor: one per TCP connection, accepted or dialled.
//!
//! It runs the sans-IO handshake over the socket under a timeout (its mailbox paused), asks the
//! registry at greeting line 1 whether the peer may connect, and then moves packets: received
//! ones go straight to the destination port's recipient, outgoing ones arrive through a bounded
//! queue that a writer task drains, coalescing whatever is waiting into one write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::tls::{Rewind, TlsError};
use crate::node::port_stream::{Inbox, StreamQueue};
use crate::node::registry::{Down, Line1, Up};
use crate::node::send_queue::SendQueue;
use crate::node::{DialectMode, LinkTx, Message, PortCache, Shared, kernel_deliver};
use crate::proto::dialect::{Dialect, P0_TIMEOUT_SECS};
use crate::proto::framing::{self, FramingError, Packet, PacketDecoder};
use crate::proto::greeting::perl_number;
use crate::proto::handshake::{
    Established, Event, Handshake, HandshakeConfig, HandshakeError, OwnGreeting,
};

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
    /// The registry did not let the link come up (it lost a tie-break).
    #[error("link with {addr} superseded by another connection")]
    Superseded {
        /// The peer's address.
        addr: String,
    },
}

/// Dials `addr` from one of the node's worker arbiters.
pub(crate) fn dial(shared: Arc<Shared>, addr: String, conn: u64) {
    let Some(worker) = shared.worker() else {
        return;
    };
    worker.spawn(async move {
        let timeout = shared.config.handshake_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(node = %shared.id, %addr, "cannot connect: {e}");
                shared.report_link_error(&addr, format!("cannot connect to {addr}: {e}"));
                dial_failed(&shared, conn, e.to_string());
                return;
            }
            Err(_) => {
                tracing::info!(node = %shared.id, %addr, "connect timed out");
                shared.report_link_error(&addr, format!("connecting to {addr} timed out"));
                dial_failed(&shared, conn, "connect timed out".into());
                return;
            }
        };
        Transport::run(shared, stream, addr, true, conn);
    });
}

fn dial_failed(shared: &Shared, conn: u64, reason: String) {
    if let Some(r) = shared.registry() {
        r.do_send(Down {
            conn,
            node: None,
            reason,
            mismatch: None,
        });
    }
}

/// Takes an accepted connection to a worker arbiter.
pub(crate) fn accepted(shared: Arc<Shared>, stream: std::net::TcpStream, addr: String) {
    let Some(worker) = shared.worker() else {
        return;
    };
    worker.spawn(async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                let conn = shared.next_conn();
                Transport::run(shared, stream, addr, false, conn)
            }
            Err(e) => tracing::warn!(%addr, "cannot adopt accepted socket: {e}"),
        }
    });
}

/// The transport actor of one connection.
pub struct Transport {
    shared: Arc<Shared>,
    conn: u64,
    addr: String,
    outgoing: bool,
    stream: Option<TcpStream>,
    peer: Option<Arc<str>>,
    /// What a failed handshake saw of the peer, so the registry can forget it (or redial).
    claimed: Seen,
    dialect: Dialect,
    up: bool,
    down_reason: String,
    writer: Option<tokio::task::JoinHandle<()>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// The link's send queue, closed when the transport stops.
    queue: Option<Arc<SendQueue>>,
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
    Eof,
    TimedOut,
}

enum ReadError {
    Framing(FramingError),
    Io(io::Error),
}

impl Transport {
    fn run(shared: Arc<Shared>, stream: TcpStream, addr: String, outgoing: bool, conn: u64) {
        // Nagle off: we coalesce writes ourselves. Keepalive on: P1/P2 rely on it for liveness.
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        Transport::create(move |_| Transport {
            shared,
            conn,
            addr,
            outgoing,
            stream: Some(stream),
            peer: None,
            claimed: Seen::default(),
            dialect: Dialect::P0,
            up: false,
            down_reason: "Unexpected end-of-file".into(),
            writer: None,
            reader: None,
            queue: None,
        });
    }

    fn enter_data_phase(&mut self, est: HandshakeDone, ctx: &mut Context<Self>) {
        let HandshakeDone {
            mut established,
            stream,
            queue,
        } = est;
        self.queue = Some(queue.clone());
        let rx = queue;
        self.up = true;
        self.dialect = established.dialect;
        match stream {
            // Plain links keep tokio's lock-free halves; TLS state is shared by both directions.
            LinkStream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                self.start_io(read, write, &mut established, rx, ctx);
            }
            LinkStream::Tls(tls) => {
                let (read, write) = tokio::io::split(tls);
                self.start_io(read, write, &mut established, rx, ctx);
            }
        }
    }

    fn start_io<R, W>(
        &mut self,
        read: R,
        write: W,
        established: &mut Established,
        rx: Arc<SendQueue>,
        ctx: &mut Context<Self>,
    ) where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        // P0 peers expect traffic within our advertised `timeout`: we send `[]` after T−3 s
        // of write silence. In P1 a node without listeners cannot be called back, so it keeps
        // the link probed with `[]` every `keepalive` (Perl: `monitor_timeout`).
        let idle = match self.dialect {
            Dialect::P0 => Some(Duration::from_secs(u64::from(P0_TIMEOUT_SECS) - 3)),
            Dialect::P1a | Dialect::P1b if self.shared.config.binds.is_empty() => {
                Some(self.shared.config.keepalive)
            }
            _ => None,
        };
        let keepalive = idle.map(|idle| {
            let mut ka = BytesMut::new();
            let _ = framing::encode_packet(established.send_framing, "", &[(); 0], &mut ka);
            (idle, ka.freeze())
        });
        let addr = ctx.address();
        self.writer = Some(actix::spawn(async move {
            let result = writer(write, rx, keepalive).await;
            addr.do_send(WriterDone(result.err()));
        }));
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
        let Some(peer) = self.peer.clone() else {
            ctx.stop();
            return;
        };
        let inbound = Inbound {
            shared: self.shared.clone(),
            peer,
            dialect: self.dialect,
            ports: PortCache::default(),
            stream_batch: StreamBatch::default(),
        };
        let decoder = PacketDecoder::new(established.recv_framing, self.shared.config.max_packet);
        // Bytes that came with the peer's auth line are the first packets.
        let leftover = std::mem::take(&mut established.leftover);
        let addr = ctx.address();
        let peer_addr = self.addr.clone();
        self.reader = Some(actix::spawn(async move {
            let end = reader(read, leftover, decoder, inbound, read_timeout).await;
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
        }));
    }
}

/// Hands received packets to their ports (or the node port); lives in the reader task.
struct Inbound {
    shared: Arc<Shared>,
    peer: Arc<str>,
    dialect: Dialect,
    ports: PortCache,
    stream_batch: StreamBatch,
}

impl Inbound {
    fn deliver(&mut self, packet: Packet) {
        let dest = match packet.dest() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(node = %self.shared.id, peer = %self.peer, "dropping packet: {e}");
                return;
            }
        };
        if dest.is_empty() {
            // A node-port request (a kill, say) must see the messages sent before it.
            self.stream_batch.flush();
            // Keepalives and `devnull` are the bulk of node-port traffic: skip decoding them.
            if matches!(packet.node_request_tag().as_deref(), Ok("" | "devnull")) {
                return;
            }
            match packet.args() {
                Ok(args) => kernel_deliver(&self.shared, &self.peer, self.dialect, args),
                Err(e) => {
                    tracing::warn!(node = %self.shared.id, peer = %self.peer, "bad node-port request: {e}")
                }
            }
            return;
        }
        let Some(inbox) = self.shared.live_port(&mut self.ports, &dest) else {
            return;
        };
        let msg = Message::from_packet(self.peer.clone(), packet);
        match inbox {
            Inbox::Stream(q) => self.stream_batch.push(q, msg),
            Inbox::Actor(r) => {
                // Messages batched for a stream port go first: order is kept per link.
                self.stream_batch.flush();
                r.do_send(msg);
            }
        }
    }
}

/// Messages waiting at a stream port beyond which the reader lets its consumer run first.
const STREAM_BACKLOG: usize = 1024;

/// The messages of one read for one stream port, queued there under one lock by `flush`.
#[derive(Default)]
struct StreamBatch {
    msgs: Vec<Message>,
    to: Option<Arc<StreamQueue>>,
    /// The stream port last flushed to, while more than `STREAM_BACKLOG` messages wait there.
    backlogged: Option<Arc<StreamQueue>>,
}

impl StreamBatch {
    fn push(&mut self, q: &Arc<StreamQueue>, msg: Message) {
        if !self.to.as_ref().is_some_and(|to| Arc::ptr_eq(to, q)) {
            self.flush();
            self.to = Some(q.clone());
        }
        self.msgs.push(msg);
    }

    fn flush(&mut self) {
        if let Some(q) = self.to.take()
            && q.push_all(self.msgs.drain(..)) > STREAM_BACKLOG
        {
            self.backlogged = Some(q);
        }
    }

    /// A stream port's actor takes only 16 messages each time it runs (actix streams yield
    /// then), while the reader hands over a whole read: let a consumer on this thread catch up
    /// (a few rounds at most, never blocking the link).
    async fn let_consumer_catch_up(&mut self) {
        let Some(q) = self.backlogged.take() else {
            return;
        };
        for _ in 0..64 {
            if q.waiting() <= STREAM_BACKLOG {
                return;
            }
            tokio::task::yield_now().await;
        }
    }
}

struct HandshakeDone {
    established: Box<Established>,
    stream: LinkStream,
    queue: Arc<SendQueue>,
}

/// The TLS stream of a link: rustls over the TCP stream, after the greeting bytes TLS owns.
type TlsLink = tokio_rustls::TlsStream<Rewind<TcpStream>>;

/// A link's byte stream, plain or inside TLS.
enum LinkStream {
    Plain(TcpStream),
    Tls(Box<TlsLink>),
}

impl LinkStream {
    fn is_tls(&self) -> bool {
        matches!(self, LinkStream::Tls(_))
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            LinkStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            LinkStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_flush(cx),
            LinkStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            LinkStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Actor for Transport {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(stream) = self.stream.take() else {
            ctx.stop();
            return;
        };
        let shared = self.shared.clone();
        let (conn, addr, outgoing) = (self.conn, self.addr.clone(), self.outgoing);
        let limit = shared.config.handshake_timeout;
        let fut = async move {
            let mut claimed = Seen::default();
            let res = match tokio::time::timeout(
                limit,
                handshake(shared, conn, stream, addr.clone(), outgoing, &mut claimed),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(TransportError::HandshakeTimeout { addr, after: limit }),
            };
            (res, claimed)
        };
        ctx.wait(
            fut.into_actor(self)
                .map(|(res, claimed), act, ctx| match res {
                    Ok(done) => {
                        act.peer = Some(done.established.peer_node_id().into());
                        act.enter_data_phase(done, ctx);
                    }
                    Err(e) => {
                        tracing::warn!(node = %act.shared.id, "{e}");
                        act.shared.report_link_error(&act.addr, e.to_string());
                        act.claimed = claimed;
                        ctx.stop();
                    }
                }),
        );
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
        if let Some(r) = self.shared.registry() {
            r.do_send(Down {
                conn: self.conn,
                // A failed handshake names the id its line 1 claimed, so that the registry
                // drops its record of that handshake (it only marks down links it made up).
                node: self
                    .peer
                    .as_deref()
                    .map(str::to_owned)
                    .or_else(|| self.claimed.node.take()),
                mismatch: self.claimed.mismatch.filter(|_| !self.up),
                reason: self.down_reason.clone(),
            });
        }
    }
}

impl Handler<ReaderDone> for Transport {
    type Result = ();
    fn handle(&mut self, msg: ReaderDone, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(ReadEnd::Eof) => {}
            Ok(ReadEnd::TimedOut) => self.down_reason = "Connection timed out".into(),
            Err(e) => {
                tracing::warn!(node = %self.shared.id, peer = ?self.peer, "{e}");
                self.down_reason = e.to_string();
            }
        }
        ctx.stop();
    }
}

impl Handler<WriterDone> for Transport {
    type Result = ();
    fn handle(&mut self, msg: WriterDone, ctx: &mut Context<Self>) {
        if let Some(e) = msg.0 {
            tracing::info!(node = %self.shared.id, peer = ?self.peer, "write failed: {e}");
            self.down_reason = e.to_string();
        } else if self.up {
            self.down_reason = "link closed".into();
        }
        ctx.stop();
    }
}

/// What a handshake learned of its peer before it failed.
#[derive(Default)]
struct Seen {
    /// The node id the peer's line 1 claims.
    node: Option<String>,
    /// The dialect the peer's line 1 shows, when it is not the one we greeted in.
    mismatch: Option<Dialect>,
}

impl Seen {
    fn note_mismatch(&mut self, hs: &Handshake) {
        if let (Some(ours), Some(peer)) = (hs.dialect(), hs.peer())
            && peer.dialect != Some(ours)
        {
            self.mismatch = peer.dialect;
        }
    }
}

/// Greeting, (TLS,) auth and registration. `claimed` learns what the peer's line 1 shows.
async fn handshake(
    shared: Arc<Shared>,
    conn: u64,
    stream: TcpStream,
    addr: String,
    outgoing: bool,
    claimed: &mut Seen,
) -> Result<HandshakeDone, TransportError> {
    let hs_err = |source| TransportError::Handshake {
        addr: addr.clone(),
        source,
    };
    let io_err = |source| TransportError::Io {
        addr: addr.clone(),
        source,
    };
    let tls_err = |source| TransportError::Tls {
        addr: addr.clone(),
        source,
    };
    let greeting = match shared.config.dialect {
        DialectMode::Fixed(d) => OwnGreeting::Immediate(d),
        // A dialler speaks what the listener at that address last showed.
        DialectMode::Auto { default } if outgoing => {
            OwnGreeting::Immediate(shared.peer.dial_dialect(&addr).unwrap_or(default))
        }
        // A listener reads the dialler's line 1 first and answers in its dialect.
        DialectMode::Auto { .. } => OwnGreeting::Deferred,
    };
    let tls_settings = shared.config.tls.clone();
    let config = HandshakeConfig {
        node_id: shared.id.to_string(),
        secret: shared.config.secret.clone(),
        greeting,
        auth_accept: None,
        auth_offer: None,
        framings: None,
        tls: tls_settings.is_some(),
        peer_addr: Some(addr.clone()),
    };
    let mut hs = Handshake::new(config).map_err(hs_err)?;
    let mut stream = LinkStream::Plain(stream);
    let mut tls_role = None;
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(event) = hs.poll_event() {
            match event {
                Event::PeerGreeting(peer) => {
                    claimed.node = Some(peer.node_id().to_owned());
                    // Same version, other dialect (P1a/P1b/P2): not a link we can serve.
                    if let Some(ours) = hs.dialect()
                        && peer.dialect != Some(ours)
                    {
                        claimed.mismatch = peer.dialect;
                        let theirs = peer.dialect.map_or("an unknown one", |d| d.name());
                        let reason =
                            format!("dialect mismatch: we speak {ours}, the peer {theirs}");
                        return Err(hs_err(hs.refuse(reason)));
                    }
                    if shared.config.require_tls {
                        let refusal = if tls_settings.is_none() {
                            Some(TlsError::NotConfigured)
                        } else if !peer.greeting.offers_tls() {
                            Some(TlsError::PeerOffersNoTls)
                        } else {
                            None
                        };
                        if let Some(source) = refusal {
                            let _ = hs.refuse(source.to_string());
                            return Err(tls_err(source));
                        }
                    }
                    let verdict = match shared.registry() {
                        Some(r) => r
                            .send(Line1 {
                                conn,
                                node: peer.node_id().to_owned(),
                                outgoing,
                                rust: peer.is_rust,
                            })
                            .await
                            .unwrap_or_else(|_| Err("node is shutting down".into())),
                        None => Err("node is shutting down".into()),
                    };
                    match verdict {
                        Ok(()) => {
                            if let Err(e) = hs.accept_peer(None) {
                                flush_on_failure(&mut stream, &mut hs).await;
                                return Err(hs_err(e));
                            }
                        }
                        Err(reason) => return Err(hs_err(hs.refuse(reason))),
                    }
                }
                Event::StartTls(role) => {
                    let (LinkStream::Plain(mut tcp), Some(settings)) = (stream, &tls_settings)
                    else {
                        return Err(hs_err(HandshakeError::Misuse(
                            "TLS without a certificate, or twice",
                        )));
                    };
                    // Our greeting may still be queued (a deferred one): it goes out in clear.
                    let out = hs.take_output();
                    if !out.is_empty() {
                        tcp.write_all(&out).await.map_err(io_err)?;
                    }
                    let leftover = hs.take_tls_leftover();
                    let tls = settings.start(role, tcp, leftover).await.map_err(tls_err)?;
                    tracing::debug!(
                        node = %shared.id, %addr, ?role,
                        version = ?tls.get_ref().1.protocol_version(),
                        "TLS established"
                    );
                    stream = LinkStream::Tls(Box::new(tls));
                    tls_role = Some(role);
                    hs.tls_established().map_err(hs_err)?;
                }
                Event::Established(established) => {
                    let out = hs.take_output();
                    write_flush(&mut stream, &out).await.map_err(io_err)?;
                    let queue = Arc::new(SendQueue::new(shared.config.send_queue_bytes));
                    let node = established.peer_node_id().to_owned();
                    let link = LinkTx {
                        conn,
                        queue: queue.clone(),
                        framing: established.send_framing,
                        dialect: established.dialect,
                        tls: tls_role.filter(|_| established.tls),
                    };
                    let accepted = match shared.registry() {
                        Some(r) => r
                            .send(Up {
                                conn,
                                node,
                                link,
                                dialled: outgoing.then(|| addr.clone()),
                            })
                            .await
                            .unwrap_or(false),
                        None => false,
                    };
                    if !accepted {
                        return Err(TransportError::Superseded { addr });
                    }
                    return Ok(HandshakeDone {
                        established,
                        stream,
                        queue,
                    });
                }
            }
        }
        let out = hs.take_output();
        if !out.is_empty() {
            write_flush(&mut stream, &out).await.map_err(io_err)?;
        }
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // Inside TLS a read also reports the peer's verdict on our certificate.
            Err(e) if stream.is_tls() => return Err(tls_err(TlsError::from_io(e))),
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            let err = hs
                .feed_eof()
                .err()
                .unwrap_or(HandshakeError::Misuse("EOF after the handshake"));
            return Err(hs_err(err));
        }
        if let Err(e) = hs.feed(buf.get(..n).unwrap_or_default()) {
            // A version mismatch fails at line 1: the registry may redial in the peer's dialect.
            claimed.note_mismatch(&hs);
            flush_on_failure(&mut stream, &mut hs).await;
            return Err(hs_err(e));
        }
    }
}

/// A handshake that failed on the peer's auth line may still hold our own auth line (both
/// lines can arrive in one read): send it, so that the peer learns the secrets differ instead
/// of seeing the connection just close. Best effort, briefly.
async fn flush_on_failure(stream: &mut LinkStream, hs: &mut Handshake) {
    let out = hs.take_output();
    if !out.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), write_flush(stream, &out)).await;
    }
}

/// Writes and flushes (TLS buffers records until flushed).
async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    w.write_all(bytes).await?;
    w.flush().await
}

/// Drains the link's queue into the socket: everything queued since the last write goes out
/// in one write, and the first packet after a quiet spell goes at once.
async fn writer<W: AsyncWrite + Unpin>(
    mut w: W,
    queue: Arc<SendQueue>,
    keepalive: Option<(Duration, Bytes)>,
) -> io::Result<()> {
    let mut batch = BytesMut::new();
    loop {
        let more = match &keepalive {
            Some((idle, packet)) => match tokio::time::timeout(*idle, queue.take(&mut batch)).await
            {
                Ok(more) => more,
                Err(_) => {
                    write_flush(&mut w, packet).await?;
                    continue;
                }
            },
            None => queue.take(&mut batch).await,
        };
        if !more {
            return Ok(());
        }
        write_flush(&mut w, &batch).await?;
        SendQueue::recycle(&mut batch);
    }
}

/// Reads the link and hands every complete packet to its port as soon as a read brings it:
/// all the packets of one read in one go, with no task switch per packet.
async fn reader<R: AsyncRead + Unpin>(
    mut r: R,
    leftover: Vec<u8>,
    mut decoder: PacketDecoder,
    mut inbound: Inbound,
    read_timeout: Option<Duration>,
) -> Result<ReadEnd, ReadError> {
    /// Bytes a read may bring: under load a few hundred packets per syscall.
    const READ: usize = 64 * 1024;
    /// After this many packets the reader lets the ports it fed run before reading on.
    const BATCH: usize = 256;
    let mut buf = BytesMut::from(&leftover[..]);
    loop {
        let mut delivered = 0;
        while let Some(packet) = decoder.decode(&mut buf).map_err(ReadError::Framing)? {
            inbound.deliver(packet);
            delivered += 1;
        }
        inbound.stream_batch.flush();
        if delivered >= BATCH {
            tokio::task::yield_now().await;
        }
        inbound.stream_batch.let_consumer_catch_up().await;
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
        match read {
            Ok(0) => return Ok(ReadEnd::Eof),
            Ok(_) => {}
            // AEMP has no orderly close: TLS peers (Perl too) just close, without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(ReadEnd::Eof),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}
