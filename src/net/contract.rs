//! What a transport needs of the node that runs it, declared on the transport's side so that
//! `net` depends on no node code: one [`TransportConfig`], three actix messages the node answers
//! ([`Line1`], [`Up`], [`Down`]) and a [`PacketSink`] that takes the link's inbound packets.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;

use super::handshake_gate::HandshakeGate;
use super::log_throttle::{self, LogThrottle};
use super::send_queue::SendQueue;
use super::tls::TlsSettings;
use super::transport::TransportError;
use crate::proto::auth::Redacted;
use crate::proto::dialect::Dialect;
use crate::proto::framing::{Framing, FramingError, Packet};
use crate::proto::handshake::TlsRole;

/// The settings of every transport of one node. Its `Debug` output shows the secret's length,
/// never the secret.
#[derive(Clone)]
pub(crate) struct TransportConfig {
    /// Our node id, as greeted.
    pub node_id: Arc<str>,
    /// The shared secret (empty: none).
    pub secret: Vec<u8>,
    /// Advertise and accept the `cleartext` auth method (the secret in hex on the wire); see
    /// `NodeConfig::allow_cleartext`.
    pub allow_cleartext: bool,
    /// The dialect we greet an accepted connection in; `None`: answer in the dialler's.
    pub accept_dialect: Option<Dialect>,
    /// Our certificate and trust anchors, when we offer TLS.
    pub tls: Option<Arc<TlsSettings>>,
    /// Refuse peers that do not offer TLS.
    pub require_tls: bool,
    /// How long a handshake (with the TCP connect of a dial) may take.
    pub handshake_timeout: Duration,
    /// Handshakes of accepted connections under way at once; at the bound the oldest is
    /// dropped.
    pub max_handshakes: usize,
    /// Bytes that may wait in a link's send queue.
    pub send_queue_bytes: usize,
    /// A write (or flush) that makes no progress for this long fails the link.
    pub write_timeout: Duration,
    /// Largest packet accepted from a peer.
    pub max_packet: usize,
    /// P1 links send `[]` after this much write silence (a node without listeners keeps its
    /// links probed, as Perl's `monitor_timeout`); `None`: they do not.
    pub p1_keepalive: Option<Duration>,
    /// The kernel fails a connection whose peer is not heard from for about this long (TCP
    /// keepalive probes and, on Linux, `TCP_USER_TIMEOUT`); `None`: the OS defaults.
    pub liveness_timeout: Option<Duration>,
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so that a new field cannot be forgotten here.
        let TransportConfig {
            node_id,
            secret,
            allow_cleartext,
            accept_dialect,
            tls,
            require_tls,
            handshake_timeout,
            max_handshakes,
            send_queue_bytes,
            write_timeout,
            max_packet,
            p1_keepalive,
            liveness_timeout,
        } = self;
        f.debug_struct("TransportConfig")
            .field("node_id", node_id)
            .field("secret", &Redacted(secret))
            .field("allow_cleartext", allow_cleartext)
            .field("accept_dialect", accept_dialect)
            .field("tls", tls)
            .field("require_tls", require_tls)
            .field("handshake_timeout", handshake_timeout)
            .field("max_handshakes", max_handshakes)
            .field("send_queue_bytes", send_queue_bytes)
            .field("write_timeout", write_timeout)
            .field("max_packet", max_packet)
            .field("p1_keepalive", p1_keepalive)
            .field("liveness_timeout", liveness_timeout)
            .finish()
    }
}

/// Where a node's transports report: the node's answers to [`Line1`] and [`Up`], and [`Down`].
pub(crate) struct TransportHooks {
    /// The transports' settings.
    pub config: TransportConfig,
    /// Failed handshakes are logged in full a few at a time, the rest summarised.
    pub failures: Arc<LogThrottle>,
    /// Bounds the handshakes of accepted connections under way at once.
    pub gate: Arc<HandshakeGate>,
    /// Asked when a peer's greeting line 1 arrives.
    pub line1: Recipient<Line1>,
    /// Asked when the handshake is done.
    pub up: Recipient<Up>,
    /// Told when a transport ends, up or not.
    pub down: Recipient<Down>,
}

impl TransportHooks {
    /// Hooks with the default log throttle.
    pub fn new(
        config: TransportConfig,
        line1: Recipient<Line1>,
        up: Recipient<Up>,
        down: Recipient<Down>,
    ) -> TransportHooks {
        TransportHooks {
            gate: HandshakeGate::new(config.max_handshakes),
            config,
            failures: LogThrottle::new(log_throttle::DETAILED_PER_INTERVAL, log_throttle::INTERVAL),
            line1,
            up,
            down,
        }
    }
}

/// A transport read a peer's greeting line 1: may it go on?
#[derive(actix::Message)]
#[rtype(result = "Result<(), Refusal>")]
pub(crate) struct Line1 {
    /// The connection.
    pub conn: u64,
    /// The node id line 1 claims.
    pub node: String,
    /// We dialled it.
    pub outgoing: bool,
    /// The peer is a Rust node (`provider=aemp-rs-…`).
    pub rust: bool,
}

/// Why a node refused a peer at its greeting line 1 (sent to the peer as the refusal text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// A link to that node is up (Perl's rule, which Perl peers rely on).
    #[error("already connected, not connecting again")]
    AlreadyConnected,
    /// Two Rust nodes dialled each other: the arbitrating side keeps its own connection.
    #[error("crossing connections: keeping the one we dialled")]
    Crossing,
    /// Another connection to that node is past its line 1.
    #[error("a connection to this node is already being set up")]
    InProgress,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

impl Refusal {
    /// Whether the node keeps another connection to that node instead.
    pub fn is_duplicate(&self) -> bool {
        matches!(
            self,
            Refusal::AlreadyConnected | Refusal::Crossing | Refusal::InProgress
        )
    }
}

/// A transport finished its handshake: make it the node's link. The answer is where its
/// packets go, or `None` if another link won (the transport then closes).
#[derive(actix::Message)]
#[rtype(result = "Option<Box<dyn PacketSink>>")]
pub(crate) struct Up {
    /// The connection.
    pub conn: u64,
    /// The peer's node id.
    pub node: String,
    /// The sending end of the link.
    pub link: LinkTx,
    /// The address we dialled, if we did.
    pub dialled: Option<String>,
}

/// A transport ended.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Down {
    /// The connection.
    pub conn: u64,
    /// The peer's address as dialled or accepted.
    pub addr: String,
    /// The node id the link carried, or that the peer's line 1 claimed before the handshake
    /// failed (so that the node drops its record of that handshake).
    pub node: Option<String>,
    /// The link came up before it ended.
    pub was_up: bool,
    /// Why it ended.
    pub end: LinkEnd,
    /// The handshake failed because the peer's line 1 shows this other dialect.
    pub mismatch: Option<Dialect>,
    /// The node refused it at line 1 for another connection to the same node.
    pub duplicate: bool,
}

/// Why a transport ended. Its text is the message of Perl's `transport_error`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LinkEnd {
    /// The peer closed the connection in the middle of a packet (or during the handshake).
    Eof,
    /// The peer closed the connection between packets: it left (a graceful shutdown, or a
    /// one-shot command that is done). AEMP has no goodbye message, so a peer process that
    /// died and whose kernel closed the socket between packets looks the same.
    PeerLeft,
    /// A P0 peer fell silent for longer than it promised.
    TimedOut,
    /// The node closed the link (its queue was closed).
    Closed,
    /// Writing to the socket failed, or made no progress within the write timeout.
    WriteFailed(Arc<io::Error>),
    /// The node gave up on the link (its send queue overflowed).
    Aborted,
    /// The connection failed (before or after the link came up).
    Failed(Arc<TransportError>),
}

impl fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkEnd::Eof => f.write_str("Unexpected end-of-file"),
            LinkEnd::PeerLeft => f.write_str("peer left"),
            LinkEnd::TimedOut => f.write_str("Connection timed out"),
            LinkEnd::Closed => f.write_str("link closed"),
            LinkEnd::WriteFailed(e) => e.fmt(f),
            LinkEnd::Aborted => f.write_str("link failed by this node"),
            LinkEnd::Failed(e) => e.fmt(f),
        }
    }
}

/// The sending end of an up link.
#[derive(Clone)]
pub(crate) struct LinkTx {
    /// The connection.
    pub conn: u64,
    /// Its queue of encoded packets, drained by the transport's writer.
    pub queue: Arc<SendQueue>,
    /// The framing we send in.
    pub framing: Framing,
    /// The link's dialect.
    pub dialect: Dialect,
    /// Our TLS role when the link runs inside TLS.
    pub tls: Option<TlsRole>,
    /// We dialled it (else: accepted).
    pub dialled: bool,
    /// The peer's address as dialled or accepted.
    pub addr: Arc<str>,
    /// When it came up.
    pub since: std::time::SystemTime,
}

/// Takes the packets a link receives, in order, on the transport's reader task.
pub(crate) trait PacketSink: Send {
    /// One packet. An error means the packet cannot be read (its destination, say): the link
    /// ends with it, as when the bytes cannot be cut into packets.
    fn deliver(&mut self, packet: Packet) -> Result<(), FramingError>;
    /// Every packet of one read is delivered: hand over anything batched.
    fn flush(&mut self);
    /// Whether a consumer this read fed is far behind: the reader yields (a few rounds at
    /// most) while it is, so that a consumer on the same thread can catch up.
    fn backlogged(&mut self) -> bool;
}
