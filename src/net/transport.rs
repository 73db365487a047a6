//! The `Transport` actor: one per TCP connection, accepted or dialled.
//!
//! It runs the sans-IO handshake over the socket under a timeout (its mailbox paused), asks the
//! registry at greeting line 1 whether the peer may connect, and then moves packets: received
//! ones go straight to the destination port's recipient, outgoing ones arrive through a bounded
//! queue that a writer task drains, coalescing whatever is waiting into one write.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::node::registry::{Down, Line1, Up};
use crate::node::{DialectMode, LinkTx, Message, Shared, kernel_deliver};
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
    /// Both ends offered TLS, which this build does not support yet.
    #[error("{addr} wants TLS, which this node is not configured for")]
    TlsUnsupported {
        /// The peer's address.
        addr: String,
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
                dial_failed(&shared, conn, e.to_string());
                return;
            }
            Err(_) => {
                tracing::info!(node = %shared.id, %addr, "connect timed out");
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
    dialect: Dialect,
    up: bool,
    last_read: Instant,
    down_reason: String,
    writer: Option<tokio::task::JoinHandle<()>>,
}

/// The writer task ended (queue closed or a write failed).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct WriterDone(Option<io::Error>);

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
            dialect: Dialect::P0,
            up: false,
            last_read: Instant::now(),
            down_reason: "Unexpected end-of-file".into(),
            writer: None,
        });
    }

    fn enter_data_phase(&mut self, est: HandshakeDone, ctx: &mut Context<Self>) {
        let HandshakeDone {
            established,
            stream,
            rx,
        } = est;
        self.up = true;
        self.dialect = established.dialect;
        let (read, write) = stream.into_split();
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
        if self.dialect == Dialect::P0 {
            let peer_timeout = established
                .peer
                .greeting
                .key("timeout")
                .map(perl_number)
                .filter(|t| *t > 0.0);
            if let Some(t) = peer_timeout {
                let limit = Duration::from_secs_f64(t);
                ctx.run_interval(Duration::from_secs(1), move |act, ctx| {
                    if act.last_read.elapsed() > limit {
                        act.down_reason = "Connection timed out".into();
                        ctx.stop();
                    }
                });
            }
        }
        let mut framed = FramedRead::new(
            read,
            PacketCodec {
                decoder: PacketDecoder::new(
                    established.recv_framing,
                    self.shared.config.max_packet,
                ),
                addr: self.addr.clone(),
            },
        );
        framed
            .read_buffer_mut()
            .extend_from_slice(&established.leftover);
        ctx.add_stream(framed);
    }

    fn deliver(&mut self, packet: Packet) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let dest = match packet.dest() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(node = %self.shared.id, %peer, "dropping packet: {e}");
                return;
            }
        };
        if dest.is_empty() {
            match packet.args() {
                Ok(args) => kernel_deliver(&self.shared, &peer, self.dialect, args),
                Err(e) => {
                    tracing::warn!(node = %self.shared.id, %peer, "bad node-port request: {e}")
                }
            }
        } else {
            let dest = dest.into_owned();
            self.shared
                .deliver_local(&dest, Message::from_packet(peer, packet));
        }
    }
}

struct HandshakeDone {
    established: Box<Established>,
    stream: TcpStream,
    rx: mpsc::Receiver<Bytes>,
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
            match tokio::time::timeout(
                limit,
                handshake(shared, conn, stream, addr.clone(), outgoing),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(TransportError::HandshakeTimeout { addr, after: limit }),
            }
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(done) => {
                act.peer = Some(done.established.peer_node_id().into());
                act.enter_data_phase(done, ctx);
            }
            Err(e) => {
                tracing::warn!(node = %act.shared.id, "{e}");
                ctx.stop();
            }
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
        if let Some(r) = self.shared.registry() {
            r.do_send(Down {
                conn: self.conn,
                node: self.peer.as_deref().map(str::to_owned),
                reason: self.down_reason.clone(),
            });
        }
    }
}

impl StreamHandler<Result<Packet, TransportError>> for Transport {
    fn handle(&mut self, item: Result<Packet, TransportError>, ctx: &mut Context<Self>) {
        self.last_read = Instant::now();
        match item {
            Ok(p) => self.deliver(p),
            Err(e) => {
                tracing::warn!(node = %self.shared.id, peer = ?self.peer, "{e}");
                self.down_reason = e.to_string();
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
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

/// Greeting, auth and registration, over the raw socket.
async fn handshake(
    shared: Arc<Shared>,
    conn: u64,
    mut stream: TcpStream,
    addr: String,
    outgoing: bool,
) -> Result<HandshakeDone, TransportError> {
    let hs_err = |source| TransportError::Handshake {
        addr: addr.clone(),
        source,
    };
    let io_err = |source| TransportError::Io {
        addr: addr.clone(),
        source,
    };
    let greeting = match shared.config.dialect {
        DialectMode::Fixed(d) => OwnGreeting::Immediate(d),
        DialectMode::Auto { default } if outgoing => OwnGreeting::Immediate(default),
        // A listener reads the dialler's line 1 first and answers in its dialect.
        DialectMode::Auto { .. } => OwnGreeting::Deferred,
    };
    let config = HandshakeConfig {
        node_id: shared.id.to_string(),
        secret: shared.config.secret.clone(),
        greeting,
        auth_accept: None,
        auth_offer: None,
        framings: None,
        tls: false,
        peer_addr: Some(addr.clone()),
    };
    let mut hs = Handshake::new(config).map_err(hs_err)?;
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(event) = hs.poll_event() {
            match event {
                Event::PeerGreeting(peer) => {
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
                        Ok(()) => hs.accept_peer(None).map_err(hs_err)?,
                        Err(reason) => return Err(hs_err(hs.refuse(reason))),
                    }
                }
                Event::StartTls(_) => return Err(TransportError::TlsUnsupported { addr }),
                Event::Established(established) => {
                    let out = hs.take_output();
                    stream.write_all(&out).await.map_err(io_err)?;
                    let (tx, rx) = mpsc::channel(shared.config.send_queue.max(1));
                    let node = established.peer_node_id().to_owned();
                    let link = LinkTx {
                        conn,
                        tx,
                        framing: established.send_framing,
                        dialect: established.dialect,
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
                        rx,
                    });
                }
            }
        }
        let out = hs.take_output();
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(io_err)?;
        }
        let n = stream.read(&mut buf).await.map_err(io_err)?;
        if n == 0 {
            let err = hs
                .feed_eof()
                .err()
                .unwrap_or(HandshakeError::Misuse("EOF after the handshake"));
            return Err(hs_err(err));
        }
        hs.feed(&buf[..n]).map_err(hs_err)?;
    }
}

/// Drains the link's queue into the socket: everything waiting goes out in one write, and
/// nothing waits when the queue is empty (no Nagle-style delay at low rates).
async fn writer(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    keepalive: Option<(Duration, Bytes)>,
) -> io::Result<()> {
    const BATCH: usize = 256 * 1024;
    let mut batch = BytesMut::with_capacity(64 * 1024);
    loop {
        let first = match &keepalive {
            Some((idle, packet)) => match tokio::time::timeout(*idle, rx.recv()).await {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(()),
                Err(_) => packet.clone(),
            },
            None => match rx.recv().await {
                Some(b) => b,
                None => return Ok(()),
            },
        };
        if rx.is_empty() {
            w.write_all(&first).await?;
            continue;
        }
        batch.extend_from_slice(&first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(b) => batch.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        w.write_all(&batch).await?;
        batch.clear();
    }
}

/// `PacketDecoder` as a tokio codec for `FramedRead`.
struct PacketCodec {
    decoder: PacketDecoder,
    addr: String,
}

impl tokio_util::codec::Decoder for PacketCodec {
    type Item = Packet;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, TransportError> {
        self.decoder
            .decode(src)
            .map_err(|source| TransportError::Framing {
                addr: self.addr.clone(),
                source,
            })
    }
}

impl From<io::Error> for TransportError {
    fn from(source: io::Error) -> Self {
        TransportError::Io {
            addr: String::new(),
            source,
        }
    }
}
