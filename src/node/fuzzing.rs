//! Entry points for the `data_phase` fuzz target (cargo feature `fuzzing`, off by default; not
//! part of the API).
//!
//! A [`FuzzLink`] is what a transport is once its handshake is done, without the socket: the
//! registry is told the link is up (as a transport tells it) and hands back the link's inbound
//! packet sink (`Inbound`); [`FuzzLink::feed`] cuts packets from bytes with a
//! [`PacketDecoder`] and delivers them to it on the node's first arbiter, as the transport's
//! reader does. What the node sends on the link is decoded and dropped by a task standing in for
//! the writer.
//!
//! [`Node::fuzz_offline`] keeps the node from dialling, whatever addresses fuzz input announces.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::ArbiterHandle;
use bytes::BytesMut;

use super::port_stream::{Inbox, StreamQueue};
use super::{Node, Port, PortStream, lock};
use crate::net::LinkEnd;
use crate::net::contract::{Down, LinkTx, PacketSink, Up};
use crate::net::send_queue::SendQueue;
use crate::proto::dialect::Dialect;
use crate::proto::framing::{DEFAULT_MAX_PACKET, Framing, PacketDecoder};

/// How long a blocking call waits for the node's arbiter before giving up.
const WAIT: Duration = Duration::from_secs(30);

/// What the node's state holds, for the fuzz target's bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuzzCensus {
    /// Local ports.
    pub ports: usize,
    /// Nodes with an up link.
    pub up: usize,
    /// Nodes with messages waiting for them to come up.
    pub pending: usize,
    /// Pending queues that took a message while holding their bound or more.
    pub pending_over_bound: Vec<String>,
    /// Remote nodes some local monitor watches.
    pub watched_nodes: usize,
}

/// What the stand-in writer of a [`FuzzLink`] saw.
#[derive(Debug, Default)]
struct Sent {
    packets: AtomicU64,
    /// The first bytes the node queued that do not decode in the link's framing.
    bad: Mutex<Option<String>>,
}

/// A link from `peer`, up without a socket; see the module docs. Dropping it takes the link
/// down as a transport's end does.
pub struct FuzzLink {
    node: Node,
    peer: String,
    conn: u64,
    framing: Framing,
    queue: Arc<SendQueue>,
    sink: Option<Box<dyn PacketSink>>,
    sent: Arc<Sent>,
}

/// What one [`FuzzLink::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Packets delivered.
    pub packets: usize,
    /// Decoding stopped on a framing error (a transport would drop the link there).
    pub framing_error: bool,
}

/// Runs `f` on `arbiter` and waits for its result; `None` if it did not answer in time.
fn on_arbiter<T: Send + 'static>(
    arbiter: &ArbiterHandle,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    if !arbiter.spawn_fn(move || {
        let _ = tx.send(f());
    }) {
        return None;
    }
    rx.recv_timeout(WAIT).ok()
}

impl Node {
    /// Never dial again (for fuzzing: fuzz input can announce any address). Connects to nodes
    /// then fail as unreachable after the connect timeout.
    #[doc(hidden)]
    pub fn fuzz_offline(&self) {
        self.shared.runtime.offline.store(true, Ordering::Relaxed);
    }

    /// Brings up a link from `peer` in `dialect`, whose peer sends in `framing`; see the module
    /// docs. Blocks: must not be called on one of the node's arbiters. `None` if the registry
    /// refused it (a link to `peer` is up) or did not answer.
    #[doc(hidden)]
    pub fn fuzz_link(&self, peer: &str, dialect: Dialect, framing: Framing) -> Option<FuzzLink> {
        let shared = &self.shared;
        let conn = shared.runtime.next_id();
        let queue = Arc::new(SendQueue::new(shared.config.send_queue_bytes));
        let sent = Arc::new(Sent::default());
        let link = LinkTx {
            conn,
            queue: queue.clone(),
            // We send in the framing the peer sends in: one of the choices a handshake makes.
            framing,
            dialect,
            tls: None,
            dialled: false,
            addr: "fuzz".into(),
            since: std::time::SystemTime::now(),
        };
        let up = Up {
            conn,
            node: peer.to_owned(),
            link,
            dialled: None,
        };
        let worker = &shared.runtime.workers[0];
        worker.spawn(writer(queue.clone(), framing, sent.clone()));
        let registry = shared.registry.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        worker.spawn(async move {
            let _ = tx.send(registry.send(up).await.ok().flatten());
        });
        let sink = rx.recv_timeout(WAIT).ok().flatten();
        let link = FuzzLink {
            node: self.clone(),
            peer: peer.to_owned(),
            conn,
            framing,
            queue,
            sink,
            sent,
        };
        link.sink.is_some().then_some(link)
    }

    /// Like [`Node::port_stream`], under a given name (the fuzz target needs names its input
    /// can use); `None` if the name is taken.
    #[doc(hidden)]
    pub fn fuzz_port_stream_named(&self, name: &str) -> Option<(Port, PortStream)> {
        let queue = Arc::new(StreamQueue::new());
        let serial = self
            .shared
            .ports
            .insert_named(name, Inbox::Stream(queue.clone()))?;
        let port = Port {
            id: format!("{}#{name}", self.shared.id),
            name: name.to_owned(),
            serial,
            shared: self.shared.clone(),
            detached: false,
        };
        Some((port, PortStream::new(queue)))
    }

    /// The names of the node's ports.
    #[doc(hidden)]
    pub fn fuzz_port_names(&self) -> Vec<String> {
        self.shared.ports.names()
    }

    /// How many ports, links, pending queues and watched nodes the node has.
    #[doc(hidden)]
    pub fn fuzz_census(&self) -> FuzzCensus {
        let s = &self.shared;
        let (pending, pending_over_bound) = s.links.pending_census(s.config.send_queue_bytes);
        FuzzCensus {
            ports: s.ports.count(),
            up: s.links.up_nodes().len(),
            pending,
            pending_over_bound,
            watched_nodes: s.monitors.nodes(),
        }
    }
}

/// Stands in for a transport's writer: takes what the node queues for the peer and checks that
/// it decodes in the link's framing.
async fn writer(queue: Arc<SendQueue>, framing: Framing, sent: Arc<Sent>) {
    let mut buf = BytesMut::new();
    let mut decoder = PacketDecoder::new(framing, usize::MAX);
    let mut rest = BytesMut::new();
    while queue.take(&mut buf).await {
        rest.extend_from_slice(&buf);
        SendQueue::recycle(&mut buf);
        loop {
            match decoder.decode(&mut rest) {
                Ok(Some(p)) => {
                    if let Err(e) = p.to_value() {
                        lock(&sent.bad).get_or_insert(format!("{p:?}: {e}"));
                    }
                    sent.packets.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => break,
                Err(e) => {
                    lock(&sent.bad).get_or_insert(format!("{e} in {:?}", &rest[..]));
                    rest.clear();
                    decoder = PacketDecoder::new(framing, usize::MAX);
                    break;
                }
            }
        }
    }
}

impl FuzzLink {
    /// Cuts packets from `bytes` and delivers them as the link's reader would, then flushes;
    /// stops at the first framing error. Blocks until the node's arbiter ran it: must not be
    /// called on one of the node's arbiters.
    pub fn feed(&mut self, bytes: &[u8]) -> Fed {
        let Some(mut sink) = self.sink.take() else {
            return Fed {
                packets: 0,
                framing_error: false,
            };
        };
        let mut buf = BytesMut::from(bytes);
        let max = self.node.shared.config.max_packet.min(DEFAULT_MAX_PACKET);
        let mut decoder = PacketDecoder::new(self.framing, max);
        let worker = self.node.shared.runtime.workers[0].clone();
        let back = on_arbiter(&worker, move || {
            let mut packets = 0;
            let framing_error = loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(p)) => {
                        packets += 1;
                        // As the reader does: a packet the sink cannot read ends the link.
                        if sink.deliver(p).is_err() {
                            break true;
                        }
                    }
                    Ok(None) => break false,
                    Err(_) => break true,
                }
            };
            sink.flush();
            // The reader yields while a consumer it fed is far behind; here the next feed
            // waits its turn on the arbiter, which lets that consumer run.
            let _ = sink.backlogged();
            (
                sink,
                Fed {
                    packets,
                    framing_error,
                },
            )
        });
        match back {
            Some((sink, fed)) => {
                self.sink = Some(sink);
                fed
            }
            None => panic!("the node's arbiter did not run a feed within {WAIT:?}"),
        }
    }

    /// Whether the node still has this link up (it fails links, e.g. on a full send queue).
    pub fn is_up(&self) -> bool {
        self.node.shared.links.up_conn(&self.peer) == Some(self.conn)
    }

    /// Packets the node sent on this link so far.
    pub fn sent(&self) -> u64 {
        self.sent.packets.load(Ordering::Relaxed)
    }

    /// The first thing the node sent on this link that does not decode in its framing.
    pub fn sent_garbage(&self) -> Option<String> {
        lock(&self.sent.bad).clone()
    }
}

impl Drop for FuzzLink {
    fn drop(&mut self) {
        self.queue.close();
        self.node.shared.registry.do_send(Down {
            conn: self.conn,
            addr: "fuzz".into(),
            node: Some(self.peer.clone()),
            was_up: true,
            end: LinkEnd::Eof,
            mismatch: None,
            duplicate: false,
        });
    }
}
