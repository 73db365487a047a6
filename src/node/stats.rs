//! What [`Node::stats`] reports: every up link's counters (kept by its transport and send
//! queue as relaxed atomics, read here), and the node's own tallies (handshake failures by
//! cause, reconnects per peer), kept off the per-packet paths.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::links::{LinkSlot, Links};
use super::{ConnectionStats, FastMap, Node, lock, read};
use crate::net::FailureCause;
use crate::net::send_queue::LinkCounters;

/// At most this many node ids are remembered for counting reconnects; past it, those that never
/// came back are forgotten (one-shot commands bring a new `anon/` id each).
const SEEN_MAX: usize = 10_000;

/// Which end opened a link's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This node dialled it.
    Dialled,
    /// The peer dialled, this node accepted.
    Accepted,
}

impl Direction {
    /// `dialled` or `accepted`.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Dialled => "dialled",
            Direction::Accepted => "accepted",
        }
    }
}

/// One up link and what it moved in its data phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkStats {
    /// The peer's node id.
    pub peer: String,
    /// The connection's id on this node.
    pub conn: u64,
    /// The link's dialect (`p0`, `p1a`, `p1b`, `p2`).
    pub dialect: &'static str,
    /// The link runs inside TLS.
    pub tls: bool,
    /// Who opened the connection.
    pub direction: Direction,
    /// The peer's address as dialled or accepted.
    pub addr: String,
    /// When the link came up, in seconds since the Unix epoch.
    pub since_unix: f64,
    /// Packets queued for the peer (counted as they are queued).
    pub messages_sent: u64,
    /// Bytes written to the socket (framing and keepalive packets included).
    pub bytes_sent: u64,
    /// Packets received.
    pub messages_received: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Bytes queued for the peer now, not yet written.
    pub bytes_queued: u64,
}

/// A snapshot of a node's links and connection counters ([`Node::stats`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStats {
    /// The node's id.
    pub node: String,
    /// Its up links, by peer node id.
    pub links: Vec<LinkStats>,
    /// Connections dialled and accepted since the start, and open now.
    pub connections: ConnectionStats,
    /// Per peer node id: how often a link to it came up again after one had gone (only peers
    /// that did).
    pub reconnects: BTreeMap<String, u64>,
    /// Connections that failed before their link came up, by cause (every cause listed).
    pub handshake_failures: BTreeMap<FailureCause, u64>,
}

/// The node's tallies: written where links come up and connections fail, never per packet.
#[derive(Default)]
pub(crate) struct Tally {
    failures: [AtomicU64; FailureCause::ALL.len()],
    /// Node id → how often a link to it came up.
    ups: Mutex<FastMap<u64>>,
}

impl Tally {
    /// A connection failed before its link came up.
    pub fn failed(&self, cause: FailureCause) {
        let i = FailureCause::ALL
            .iter()
            .position(|c| *c == cause)
            .unwrap_or(0);
        if let Some(counter) = self.failures.get(i) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A link to `node` came up.
    pub fn link_up(&self, node: &str) {
        let mut ups = lock(&self.ups);
        if ups.len() >= SEEN_MAX && !ups.contains_key(node) {
            ups.retain(|_, n| *n > 1);
            if ups.len() >= SEEN_MAX {
                ups.clear();
            }
        }
        *ups.entry(node.to_owned()).or_default() += 1;
    }

    fn reconnects(&self) -> BTreeMap<String, u64> {
        lock(&self.ups)
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(node, n)| (node.clone(), n - 1))
            .collect()
    }

    fn failures(&self) -> BTreeMap<FailureCause, u64> {
        FailureCause::ALL
            .iter()
            .zip(&self.failures)
            .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Links {
    /// Every up link's counters (the table's read lock, then each queue's lock once).
    fn stats(&self) -> Vec<LinkStats> {
        let table = read(&self.table);
        let mut links: Vec<LinkStats> = table
            .iter()
            .filter_map(|(peer, slot)| match slot {
                LinkSlot::Up(l) => Some((peer, l)),
                LinkSlot::Pending { .. } => None,
            })
            .map(|(peer, l)| {
                let c = &l.queue.counters;
                LinkStats {
                    peer: peer.clone(),
                    conn: l.conn,
                    dialect: l.dialect.name(),
                    tls: l.tls.is_some(),
                    direction: if l.dialled {
                        Direction::Dialled
                    } else {
                        Direction::Accepted
                    },
                    addr: l.addr.to_string(),
                    since_unix: l
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                    messages_sent: LinkCounters::get(&c.packets_sent),
                    bytes_sent: LinkCounters::get(&c.bytes_sent),
                    messages_received: LinkCounters::get(&c.received.packets),
                    bytes_received: LinkCounters::get(&c.received.bytes),
                    bytes_queued: l.queue.queued() as u64,
                }
            })
            .collect();
        drop(table);
        links.sort_by(|a, b| a.peer.cmp(&b.peer));
        links
    }
}

impl Node {
    /// A snapshot of this node's links (peer, dialect, TLS, direction, since when; messages and
    /// bytes each way, bytes queued now) and its connection counters (dialled, accepted, open;
    /// reconnects per peer; handshake failures by cause). Cheap enough to call every second:
    /// the counters are kept as relaxed atomics on the packet paths and only read here.
    ///
    /// [`metrics::encode`](super::metrics::encode) renders it for Prometheus.
    pub fn stats(&self) -> NodeStats {
        let s = &self.shared;
        NodeStats {
            node: s.id.to_string(),
            links: s.links.stats(),
            connections: s.runtime.connection_stats(),
            reconnects: s.runtime.tally.reconnects(),
            handshake_failures: s.runtime.tally.failures(),
        }
    }
}
