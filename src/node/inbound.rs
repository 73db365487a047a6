//! Inbound delivery: the packets a link receives, handed to their local ports (or the node
//! port) on the link's reader task, with the messages of one read for one stream port queued
//! there in one go.

use std::sync::Arc;

use super::Shared;
use super::kernel;
use super::message::Message;
use super::port_stream::{Inbox, StreamQueue};
use super::ports::PortCache;
use crate::net::contract::PacketSink;
use crate::proto::dialect::Dialect;
use crate::proto::framing::{FramingError, Packet};
use crate::proto::node_request::tag;

/// Hands received packets to their ports (or the node port); lives in the reader task.
pub(super) struct Inbound {
    shared: Arc<Shared>,
    peer: Arc<str>,
    dialect: Dialect,
    ports: PortCache,
    stream_batch: StreamBatch,
}

impl Inbound {
    pub(super) fn new(shared: Arc<Shared>, peer: Arc<str>, dialect: Dialect) -> Inbound {
        Inbound {
            shared,
            peer,
            dialect,
            ports: PortCache::default(),
            stream_batch: StreamBatch::default(),
        }
    }
}

impl PacketSink for Inbound {
    /// A packet that cannot be read (no destination, say) ends the link, as a malformed one
    /// does; a readable one for a port that does not exist is dropped (logged at debug level),
    /// and a node-port request the kernel cannot serve is logged and dropped there.
    fn deliver(&mut self, packet: Packet) -> Result<(), FramingError> {
        let dest = packet.dest()?;
        if dest.is_empty() {
            // A node-port request (a kill, say) must see the messages sent before it.
            self.stream_batch.flush();
            // Keepalives and `devnull` are the bulk of node-port traffic: skip decoding them.
            if matches!(
                packet.node_request_tag().as_deref(),
                Ok(tag::KEEPALIVE | tag::DEVNULL)
            ) {
                return Ok(());
            }
            kernel::handle(&self.shared, &self.peer, self.dialect, packet.args()?);
            return Ok(());
        }
        let Some(inbox) = self.shared.live_port(&mut self.ports, &dest) else {
            return Ok(());
        };
        let msg = Message::from_packet(self.peer.clone(), packet);
        match inbox {
            Inbox::Stream(q) => self.stream_batch.push(q, msg),
            Inbox::Actor(r) => {
                // Messages batched for a stream port go first: order is kept per link.
                self.stream_batch.flush();
                r.do_send(msg);
            }
            Inbox::Handler(h) => {
                self.stream_batch.flush();
                if let Err(reason) = h.deliver(&msg)
                    && let Some(Ok(dest)) = msg.packet().map(Packet::dest)
                {
                    self.shared.kill_local(&dest, reason);
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        self.stream_batch.flush();
    }

    fn backlogged(&mut self) -> bool {
        self.stream_batch.backlogged()
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
    /// then), while the reader hands over a whole read: whether the port last flushed to is
    /// still far behind, so that the reader lets a consumer on its thread catch up.
    fn backlogged(&mut self) -> bool {
        match &self.backlogged {
            Some(q) if q.waiting() > STREAM_BACKLOG => true,
            _ => {
                self.backlogged = None;
                false
            }
        }
    }
}
