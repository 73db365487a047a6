//! Links to other nodes: the send path, queues for nodes that are not up yet, and what
//! happens when a link comes up or fails.

use std::sync::RwLock;

use bytes::BytesMut;
use serde::Serialize;
use tokio::sync::Notify;

use super::{
    Dialect, DownReason, FastMap, FramingError, NodeError, NodeEvent, Shared, Value, framing, read,
    registry, value, write,
};
use crate::net::contract::LinkTx;
use crate::net::send_queue::Pushed;
use crate::proto::handshake::TlsRole;
use crate::proto::node_request::kill_tag;

/// A packet waiting for its node to come up.
pub(crate) enum Outgoing {
    /// `[dest, args…]`.
    Packet { dest: String, args: Vec<Value> },
    /// A remote kill, whose tag depends on the link's dialect.
    Kill { port: String, reason: Vec<Value> },
}

impl Outgoing {
    /// About the bytes this takes on the wire (for the pending queue's bound).
    fn approx_size(&self) -> usize {
        let (name, args) = match self {
            Outgoing::Packet { dest, args } => (dest, args),
            Outgoing::Kill { port, reason } => (port, reason),
        };
        name.len() + args.iter().map(approx_size).sum::<usize>() + 4
    }
}

/// About the bytes `v` takes in JSON (the queue bound is about memory, not exactness).
fn approx_size(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len() + 3,
        Value::Bytes(b) => b.len() + 3,
        Value::Array(a) => a.iter().map(approx_size).sum::<usize>() + 2,
        Value::Map(m) => {
            m.iter()
                .map(|(k, v)| k.len() + 4 + approx_size(v))
                .sum::<usize>()
                + 2
        }
        _ => 8,
    }
}

/// What an awaitable send finds.
enum Wait {
    Up(LinkTx),
    Full,
    Queue,
}

/// A node's entry in the link table.
pub(crate) enum LinkSlot {
    Up(LinkTx),
    /// Messages for a node that is not up yet, and about how many bytes they will take.
    Pending {
        queue: Vec<Outgoing>,
        bytes: usize,
    },
}

/// The link table: node id → its up link, or the messages waiting for it to come up.
#[derive(Default)]
pub(crate) struct Links {
    pub(super) table: RwLock<FastMap<LinkSlot>>,
    /// Woken whenever a link comes up or a node's slot goes away.
    changed: Notify,
}

impl Links {
    /// Whether messages wait for `node` to come up.
    pub fn is_pending(&self, node: &str) -> bool {
        matches!(read(&self.table).get(node), Some(LinkSlot::Pending { .. }))
    }

    /// Ids of the nodes with an up link.
    pub fn up_nodes(&self) -> Vec<String> {
        read(&self.table)
            .iter()
            .filter(|(_, s)| matches!(s, LinkSlot::Up(_)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The dialect of the up link to `node`.
    pub fn dialect(&self, node: &str) -> Option<Dialect> {
        match read(&self.table).get(node) {
            Some(LinkSlot::Up(l)) => Some(l.dialect),
            _ => None,
        }
    }

    /// Our TLS role on the up link to `node`, if it runs inside TLS.
    pub fn tls(&self, node: &str) -> Option<TlsRole> {
        match read(&self.table).get(node) {
            Some(LinkSlot::Up(l)) => l.tls,
            _ => None,
        }
    }

    /// The connection of the up link to `node`.
    #[cfg(feature = "fuzzing")]
    pub(super) fn up_conn(&self, node: &str) -> Option<u64> {
        match read(&self.table).get(node) {
            Some(LinkSlot::Up(l)) => Some(l.conn),
            _ => None,
        }
    }

    /// How many nodes have pending queues, and those whose last message was taken while the
    /// queue already held `limit` bytes or more (which `queue` must not do).
    #[cfg(feature = "fuzzing")]
    pub(super) fn pending_census(&self, limit: usize) -> (usize, Vec<String>) {
        let table = read(&self.table);
        let mut pending = 0;
        let mut over = Vec::new();
        for (node, slot) in table.iter() {
            if let LinkSlot::Pending { queue, bytes } = slot {
                pending += 1;
                let last = queue.last().map_or(0, Outgoing::approx_size);
                if bytes.saturating_sub(last) >= limit {
                    over.push(node.clone());
                }
            }
        }
        (pending, over)
    }

    /// Resolves once the link `conn` is no longer `node`'s up link.
    async fn gone(&self, node: &str, conn: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match read(&self.table).get(node) {
                Some(LinkSlot::Up(l)) if l.conn == conn => {}
                _ => return,
            }
            changed.await;
        }
    }

    fn wait_state(&self, node: &str, limit: usize) -> Wait {
        match read(&self.table).get(node) {
            Some(LinkSlot::Up(link)) => Wait::Up(link.clone()),
            Some(LinkSlot::Pending { bytes, .. }) if *bytes >= limit => Wait::Full,
            _ => Wait::Queue,
        }
    }
}

impl Shared {
    /// Sends `[port, msg…]` to a remote node: straight into the link's queue when it is up,
    /// else into the node's pending queue (which makes the registry connect).
    pub fn send_remote<T: Serialize + ?Sized>(
        &self,
        node: &str,
        port: &str,
        msg: &T,
    ) -> Result<(), NodeError> {
        let encode_err = |source| NodeError::Encode {
            port: format!("{node}#{port}"),
            source,
        };
        // Encoded straight into the link's queue under the map's read lock: no clone, no
        // allocation per packet.
        let pushed = match read(&self.links.table).get(node) {
            Some(LinkSlot::Up(link)) => Some((
                link.conn,
                link.queue
                    .push(|buf| framing::encode_packet(link.framing, port, msg, buf))
                    .map_err(encode_err)?,
            )),
            _ => None,
        };
        if let Some((conn, pushed)) = pushed {
            self.pushed(node, conn, pushed);
            return Ok(());
        }
        let args = match value::to_value(msg) {
            Ok(Value::Array(a)) => a,
            _ => {
                return Err(NodeError::NotASequence {
                    port: format!("{node}#{port}"),
                });
            }
        };
        self.queue(
            node,
            Outgoing::Packet {
                dest: port.to_owned(),
                args,
            },
        )
    }

    /// Waits for room in the link's queue instead of failing the link (backpressure). While
    /// the node is not up yet, it waits for room in the pending queue instead.
    pub async fn send_remote_wait<T: Serialize + ?Sized>(
        &self,
        node: &str,
        port: &str,
        msg: &T,
    ) -> Result<(), NodeError> {
        let encode_err = |source| NodeError::Encode {
            port: format!("{node}#{port}"),
            source,
        };
        // Fast path: room in an up link's queue, taken under the map's read lock.
        let pushed = match read(&self.links.table).get(node) {
            Some(LinkSlot::Up(link)) => link
                .queue
                .try_push_awaitable(|buf| framing::encode_packet(link.framing, port, msg, buf))
                .map_err(encode_err)?,
            _ => Pushed::Full,
        };
        if pushed == Pushed::Queued {
            // Yield now and then, as a channel send would: a writer on this thread must run.
            tokio::task::consume_budget().await;
            return Ok(());
        }
        let link = loop {
            let state = self.links.wait_state(node, self.config.send_queue_bytes);
            match state {
                Wait::Up(link) => break link,
                Wait::Queue => return self.send_remote(node, port, msg),
                Wait::Full => {
                    // Slow path only: register for the wake-up, then look again.
                    let changed = self.links.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if matches!(
                        self.links.wait_state(node, self.config.send_queue_bytes),
                        Wait::Full
                    ) {
                        changed.await;
                    }
                }
            }
        };
        let pushed = link
            .queue
            .push_wait(|buf| framing::encode_packet(link.framing, port, msg, buf))
            .await
            .map_err(encode_err)?;
        match pushed {
            Pushed::Queued => Ok(()),
            // The link is closing (its monitors fire from there): once it is gone, the message
            // waits for the node like any sent while it is not up, and the node is dialled
            // again.
            _ => {
                self.links.gone(node, link.conn).await;
                self.send_remote(node, port, msg)
            }
        }
    }

    /// A full queue fails the link (`snd` never blocks); a closed one is a transport going
    /// down, whose monitors fire from there.
    fn pushed(&self, node: &str, conn: u64, pushed: Pushed) {
        if pushed == Pushed::Full {
            tracing::warn!(node = %self.id, peer = node, "send queue full: failing the link");
            self.link_failed(node, conn, DownReason::SendQueueFull);
        }
    }

    pub(super) fn queue(&self, node: &str, out: Outgoing) -> Result<(), NodeError> {
        let mut links = write(&self.links.table);
        match links.get_mut(node) {
            Some(LinkSlot::Up(link)) => {
                let link = link.clone();
                drop(links);
                let pushed = link
                    .queue
                    .push(|buf| encode_outgoing(&link, &out, buf))
                    .map_err(|source| NodeError::Encode {
                        port: node.to_owned(),
                        source,
                    })?;
                self.pushed(node, link.conn, pushed);
                Ok(())
            }
            Some(LinkSlot::Pending { queue, bytes }) => {
                if *bytes >= self.config.send_queue_bytes {
                    drop(links);
                    self.pending_failed(node, DownReason::SendQueueFull);
                } else {
                    *bytes += out.approx_size();
                    queue.push(out);
                }
                Ok(())
            }
            None => {
                let bytes = out.approx_size();
                links.insert(
                    node.to_owned(),
                    LinkSlot::Pending {
                        queue: vec![out],
                        bytes,
                    },
                );
                drop(links);
                self.registry.do_send(registry::Connect {
                    node: node.to_owned(),
                });
                Ok(())
            }
        }
    }

    /// Sends a remote kill to `node`, with the tag of the link's dialect.
    pub fn kill_remote(&self, node: &str, port: &str, reason: Vec<Value>) -> Result<(), NodeError> {
        self.queue(
            node,
            Outgoing::Kill {
                port: port.to_owned(),
                reason,
            },
        )
    }

    /// Makes a link the node's transport: flushes the pending queue into it, in order, before
    /// any new message can take the direct path.
    pub fn link_up(&self, node: &str, link: LinkTx) {
        let mut links = write(&self.links.table);
        if let Some(LinkSlot::Pending { queue, .. }) = links.remove(node) {
            for out in &queue {
                // Past the bound if need be: these were accepted while the link was pending.
                let pushed = link
                    .queue
                    .push_unbounded(|buf| encode_outgoing(&link, out, buf));
                if let Err(e) = pushed {
                    tracing::warn!(node = %self.id, peer = node, "dropping queued message: {e}");
                }
            }
        }
        let dialect = link.dialect;
        links.insert(node.to_owned(), LinkSlot::Up(link));
        drop(links);
        self.links.changed.notify_waiters();
        let _ = self.events.nodes.send(NodeEvent {
            node: node.to_owned(),
            up: true,
            reason: Vec::new(),
            cause: None,
            dialect: Some(dialect),
        });
    }

    /// The link with connection id `conn` failed: drop it, fire every monitor on that node.
    pub fn link_failed(&self, node: &str, conn: u64, why: DownReason) {
        let was_up = {
            let mut links = write(&self.links.table);
            match links.get(node) {
                Some(LinkSlot::Up(l)) if l.conn == conn => {
                    if matches!(why, DownReason::SendQueueFull | DownReason::Switched) {
                        // The peer does not keep up, or a new link replaced this one: close
                        // the socket now, queue and all.
                        l.queue.abort();
                    } else {
                        // The writer sends what is queued, then ends, which stops the transport.
                        l.queue.close();
                    }
                    links.remove(node);
                    true
                }
                _ => false,
            }
        };
        self.links.changed.notify_waiters();
        if was_up {
            let reason = transport_error(node, &why.to_string());
            self.fire_node_monitors(node, &reason);
            let _ = self.events.nodes.send(NodeEvent {
                node: node.to_owned(),
                up: false,
                reason,
                cause: Some(why),
                dialect: None,
            });
        }
    }

    /// A node that never came up could not be reached: drop its queue, fire its monitors.
    pub fn pending_failed(&self, node: &str, why: DownReason) {
        let removed = {
            let mut links = write(&self.links.table);
            match links.get(node) {
                Some(LinkSlot::Pending { .. }) => links.remove(node).is_some(),
                _ => false,
            }
        };
        self.links.changed.notify_waiters();
        if removed {
            tracing::info!(node = %self.id, peer = node, "dropping queued messages: {why}");
            self.fire_node_monitors(node, &transport_error(node, &why.to_string()));
        }
    }
}

fn encode_outgoing(link: &LinkTx, out: &Outgoing, buf: &mut BytesMut) -> Result<(), FramingError> {
    match out {
        Outgoing::Packet { dest, args } => framing::encode_packet(link.framing, dest, args, buf),
        Outgoing::Kill { port, reason } => {
            let Some(tag) = kill_tag(link.dialect) else {
                tracing::warn!(dialect = %link.dialect, port, "remote kill is not supported by this peer's dialect; sent as it would send it");
                let mut args = vec![Value::Str("kil".into()), Value::Str(port.clone())];
                args.extend(reason.iter().cloned());
                return framing::encode_packet(link.framing, "", &args, buf);
            };
            let mut args = vec![Value::Str(tag.into()), Value::Str(port.clone())];
            args.extend(reason.iter().cloned());
            framing::encode_packet(link.framing, "", &args, buf)
        }
    }
}

/// `("transport_error", node, message)`.
pub fn transport_error(node: &str, message: &str) -> Vec<Value> {
    vec![
        Value::Str("transport_error".into()),
        Value::Str(node.into()),
        Value::Str(message.into()),
    ]
}
