//! Driving one connection's handshake over its socket: the sans-IO [`Handshake`] fed from the
//! stream, TLS started when it says so, and the node asked at line 1 and at the end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::contract::{Line1, LinkTx, PacketSink, Refusal, TransportHooks, Up};
use super::send_queue::SendQueue;
use super::tls::{Rewind, TlsError};
use super::transport::TransportError;
use crate::proto::dialect::Dialect;
use crate::proto::handshake::{
    Established, Event, Handshake, HandshakeConfig, HandshakeError, OwnGreeting, PeerGreeting,
    TlsRole,
};

/// What a handshake learned of its peer before it failed.
#[derive(Default)]
pub(super) struct Seen {
    /// The node id the peer's line 1 claims.
    pub node: Option<String>,
    /// The dialect the peer's line 1 shows, when it is not the one we greeted in.
    pub mismatch: Option<Dialect>,
    /// The peer's line 1 says it is a Rust node.
    pub rust: bool,
    /// The node refused the peer because another connection to it is up or under way: no
    /// failure of reaching it, that other connection is its link.
    pub duplicate: bool,
}

impl Seen {
    fn note_mismatch(&mut self, hs: &Handshake) {
        if let (Some(ours), Some(peer)) = (hs.dialect(), hs.peer())
            && peer.dialect != Some(ours)
        {
            self.mismatch = peer.dialect;
            self.rust = peer.is_rust;
        }
    }
}

/// One connection's handshake: greeting, (TLS,) auth and registration with the node.
pub(super) struct Handshaking<'a> {
    pub hooks: &'a TransportHooks,
    pub conn: u64,
    pub addr: &'a str,
    /// The dialect we dial in; `None` for an accepted connection.
    pub dial: Option<Dialect>,
    /// What the peer's line 1 showed, for the node when the handshake fails.
    pub seen: &'a mut Seen,
}

impl Handshaking<'_> {
    fn hs_err(&self, source: HandshakeError) -> TransportError {
        TransportError::Handshake {
            addr: self.addr.to_owned(),
            source,
        }
    }

    fn io_err(&self, source: io::Error) -> TransportError {
        TransportError::Io {
            addr: self.addr.to_owned(),
            source,
        }
    }

    fn tls_err(&self, source: TlsError) -> TransportError {
        TransportError::Tls {
            addr: self.addr.to_owned(),
            source,
        }
    }

    /// Runs the handshake to its end (the caller bounds it in time).
    pub async fn run(mut self, stream: TcpStream) -> Result<HandshakeDone, TransportError> {
        let cfg = &self.hooks.config;
        let greeting = match (self.dial, cfg.accept_dialect) {
            (Some(d), _) | (None, Some(d)) => OwnGreeting::Immediate(d),
            // A listener in auto mode reads the dialler's line 1 first and answers in its dialect.
            (None, None) => OwnGreeting::Deferred,
        };
        let config = HandshakeConfig {
            node_id: cfg.node_id.to_string(),
            secret: cfg.secret.clone(),
            greeting,
            auth_accept: None,
            auth_offer: None,
            framings: None,
            tls: cfg.tls.is_some(),
            peer_addr: Some(self.addr.to_owned()),
            allow_cleartext: cfg.allow_cleartext,
        };
        let mut hs = Handshake::new(config).map_err(|e| self.hs_err(e))?;
        let mut stream = LinkStream::Plain(stream);
        let mut tls_role = None;
        let mut buf = vec![0u8; 4096];
        loop {
            while let Some(event) = hs.poll_event() {
                match event {
                    Event::PeerGreeting(peer) => self.on_line1(&mut hs, &mut stream, &peer).await?,
                    Event::StartTls(role) => {
                        stream = self.start_tls(&mut hs, stream, role).await?;
                        tls_role = Some(role);
                    }
                    Event::Established(established) => {
                        let out = hs.take_output();
                        write_flush(&mut stream, &out)
                            .await
                            .map_err(|e| self.io_err(e))?;
                        return self.register(established, stream, tls_role).await;
                    }
                }
            }
            self.read_more(&mut hs, &mut stream, &mut buf).await?;
        }
    }

    /// Sends what the handshake has to say, then feeds it the next read.
    async fn read_more(
        &mut self,
        hs: &mut Handshake,
        stream: &mut LinkStream,
        buf: &mut [u8],
    ) -> Result<(), TransportError> {
        let out = hs.take_output();
        if !out.is_empty() {
            write_flush(stream, &out)
                .await
                .map_err(|e| self.io_err(e))?;
        }
        let n = match stream.read(buf).await {
            Ok(n) => n,
            // Inside TLS a read also reports the peer's verdict on our certificate.
            Err(e) if stream.is_tls() => return Err(self.tls_err(TlsError::from_io(e))),
            Err(e) => return Err(self.io_err(e)),
        };
        if n == 0 {
            let err = hs
                .feed_eof()
                .err()
                .unwrap_or(HandshakeError::Misuse("EOF after the handshake"));
            return Err(self.hs_err(err));
        }
        if let Err(e) = hs.feed(buf.get(..n).unwrap_or_default()) {
            // Who the peer's line 1 claims to be, also when the handshake refused it there
            // (our own id: the node drops a seed address that is itself).
            if self.seen.node.is_none() {
                self.seen.node = hs.peer().map(|p| p.node_id().to_owned());
            }
            // A version mismatch fails at line 1: the node may redial in the peer's dialect.
            self.seen.note_mismatch(hs);
            flush_on_failure(stream, hs).await;
            return Err(self.hs_err(e));
        }
        Ok(())
    }

    /// The peer's line 1: our own checks, then the node's verdict.
    async fn on_line1(
        &mut self,
        hs: &mut Handshake,
        stream: &mut LinkStream,
        peer: &PeerGreeting,
    ) -> Result<(), TransportError> {
        self.seen.node = Some(peer.node_id().to_owned());
        self.seen.rust = peer.is_rust;
        // From here on every line the link logs names its peer (the link's span).
        tracing::Span::current().record("peer", peer.node_id());
        // Same version, other dialect (P1a/P1b/P2): not a link we can serve.
        if let Some(ours) = hs.dialect()
            && peer.dialect != Some(ours)
        {
            self.seen.mismatch = peer.dialect;
            let theirs = peer.dialect.map_or("an unknown one", |d| d.name());
            let reason = format!("dialect mismatch: we speak {ours}, the peer {theirs}");
            return Err(self.hs_err(hs.refuse(reason)));
        }
        let cfg = &self.hooks.config;
        if cfg.require_tls {
            let refusal = if cfg.tls.is_none() {
                Some(TlsError::NotConfigured)
            } else if !peer.greeting.offers_tls() {
                Some(TlsError::PeerOffersNoTls)
            } else {
                None
            };
            if let Some(source) = refusal {
                let _ = hs.refuse(source.to_string());
                return Err(self.tls_err(source));
            }
        }
        let verdict = self
            .hooks
            .line1
            .send(Line1 {
                conn: self.conn,
                node: peer.node_id().to_owned(),
                outgoing: self.dial.is_some(),
                rust: peer.is_rust,
            })
            .await
            .unwrap_or(Err(Refusal::ShuttingDown));
        match verdict {
            Ok(()) => {
                if let Err(e) = hs.accept_peer(None) {
                    flush_on_failure(stream, hs).await;
                    return Err(self.hs_err(e));
                }
                Ok(())
            }
            Err(refusal) => {
                self.seen.duplicate = refusal.is_duplicate();
                let e = hs.refuse(refusal.to_string());
                flush_on_failure(stream, hs).await;
                Err(self.hs_err(e))
            }
        }
    }

    /// Moves the connection into TLS in the role the handshake chose.
    async fn start_tls(
        &mut self,
        hs: &mut Handshake,
        stream: LinkStream,
        role: TlsRole,
    ) -> Result<LinkStream, TransportError> {
        let (LinkStream::Plain(mut tcp), Some(settings)) = (stream, &self.hooks.config.tls) else {
            return Err(self.hs_err(HandshakeError::Misuse(
                "TLS without a certificate, or twice",
            )));
        };
        // Our greeting may still be queued (a deferred one): it goes out in clear.
        let out = hs.take_output();
        if !out.is_empty() {
            tcp.write_all(&out).await.map_err(|e| self.io_err(e))?;
        }
        let leftover = hs.take_tls_leftover();
        let tls = settings
            .start(role, tcp, leftover)
            .await
            .map_err(|e| self.tls_err(e))?;
        tracing::debug!(
            node = %self.hooks.config.node_id, addr = %self.addr, ?role,
            version = ?tls.get_ref().1.protocol_version(),
            "TLS established"
        );
        hs.tls_established().map_err(|e| self.hs_err(e))?;
        Ok(LinkStream::Tls(Box::new(tls)))
    }

    /// Asks the node to make the authenticated connection the peer's link.
    async fn register(
        &mut self,
        established: Box<Established>,
        stream: LinkStream,
        tls_role: Option<TlsRole>,
    ) -> Result<HandshakeDone, TransportError> {
        let queue = Arc::new(SendQueue::new(self.hooks.config.send_queue_bytes));
        let link = LinkTx {
            conn: self.conn,
            queue: queue.clone(),
            framing: established.send_framing,
            dialect: established.dialect,
            tls: tls_role.filter(|_| established.tls),
            dialled: self.dial.is_some(),
            addr: self.addr.into(),
            since: std::time::SystemTime::now(),
        };
        let up = Up {
            conn: self.conn,
            node: established.peer_node_id().to_owned(),
            link,
            dialled: self.dial.map(|_| self.addr.to_owned()),
        };
        match self.hooks.up.send(up).await {
            Ok(Some(sink)) => Ok(HandshakeDone {
                established,
                stream,
                queue,
                sink,
            }),
            _ => Err(TransportError::Superseded {
                addr: self.addr.to_owned(),
            }),
        }
    }
}

/// A handshake that brought its link up.
pub(super) struct HandshakeDone {
    pub established: Box<Established>,
    pub stream: LinkStream,
    pub queue: Arc<SendQueue>,
    /// Where the node wants the link's packets.
    pub sink: Box<dyn PacketSink>,
}

/// The TLS stream of a link: rustls over the TCP stream, after the greeting bytes TLS owns.
type TlsLink = tokio_rustls::TlsStream<Rewind<TcpStream>>;

/// A link's byte stream, plain or inside TLS.
pub(super) enum LinkStream {
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
pub(super) async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    w.write_all(bytes).await?;
    w.flush().await
}
