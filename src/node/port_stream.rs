//! Ports whose messages arrive as a [`Stream`]: for an actor, `ctx.add_stream(stream)` and a
//! `StreamHandler<Message>`; for other code, `StreamExt::next`.
//!
//! Why besides `Node::port(recipient)`: every actix `do_send` allocates an envelope and a queue
//! node and wakes the actor per message. Here a transport appends to a plain queue under a lock,
//! and the stream takes everything queued at once, so under load the per-message cost is a move.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use actix::Recipient;
use futures_util::Stream;
use futures_util::task::AtomicWaker;

use super::message::Message;

/// Where a local port's messages go.
#[derive(Clone)]
pub(crate) enum Inbox {
    /// An actix recipient: one actix message per port message.
    Actor(Recipient<Message>),
    /// A [`PortStream`].
    Stream(std::sync::Arc<StreamQueue>),
    /// Code that takes each message where it arrives: an exposed actor's tag dispatch, a
    /// request's reply slot.
    Handler(std::sync::Arc<dyn PortHandler>),
}

/// What a [`Inbox::Handler`] port runs for each message, on the thread that delivers it (a
/// link's reader, or the local sender): it must not block.
pub(crate) trait PortHandler: Send + Sync {
    /// Takes one message; an `Err` kills the port with that reason.
    fn deliver(&self, msg: &Message) -> Result<(), Vec<crate::proto::value::Value>>;
    /// Whether anything still takes the messages.
    fn is_live(&self) -> bool;
    /// The local fast path for message type `ty` (an `actix::Recipient<M>`), if the port
    /// takes it.
    fn local(&self, _ty: std::any::TypeId) -> Option<&(dyn std::any::Any + Send + Sync)> {
        None
    }
}

impl Inbox {
    /// Whether anything still takes the messages (the actor runs, the stream is not dropped).
    pub fn is_live(&self) -> bool {
        match self {
            Inbox::Actor(r) => r.connected(),
            Inbox::Stream(q) => !q.receiver_gone.load(Ordering::Relaxed),
            Inbox::Handler(h) => h.is_live(),
        }
    }

    /// Hands a message over; an `Err` is the reason the port must die with.
    pub fn deliver(&self, msg: Message) -> Result<(), Vec<crate::proto::value::Value>> {
        match self {
            // do_send: a port has no queue limit in AEMP, and try_send would drop silently
            // whenever the actor's mailbox is momentarily full.
            Inbox::Actor(r) => r.do_send(msg),
            Inbox::Stream(q) => q.push(msg),
            Inbox::Handler(h) => return h.deliver(&msg),
        }
        Ok(())
    }

    /// The port was killed: a stream ends once it has yielded what was queued.
    pub fn close(&self) {
        if let Inbox::Stream(q) = self {
            q.state().closed = true;
            q.waker.wake();
        }
    }
}

/// The queue between the node and a [`PortStream`]. Unbounded, like a port in AEMP.
pub(crate) struct StreamQueue {
    state: Mutex<QueueState>,
    waker: AtomicWaker,
    /// The [`PortStream`] was dropped (read per packet, so not under the lock).
    receiver_gone: AtomicBool,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Message>,
    /// The port is dead: no more messages will come.
    closed: bool,
}

impl StreamQueue {
    pub fn new() -> StreamQueue {
        StreamQueue {
            state: Mutex::default(),
            waker: AtomicWaker::new(),
            receiver_gone: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, msg: Message) {
        self.push_all(std::iter::once(msg));
    }

    /// Appends messages under one lock; returns how many wait now.
    pub fn push_all(&self, msgs: impl IntoIterator<Item = Message>) -> usize {
        let (was_empty, waiting) = {
            let mut st = self.state();
            let was_empty = st.items.is_empty();
            st.items.extend(msgs);
            (was_empty && !st.items.is_empty(), st.items.len())
        };
        // The stream takes everything when woken: one wake-up per batch, not per message.
        if was_empty {
            self.waker.wake();
        }
        waiting
    }

    /// Messages not yet taken by the stream.
    pub fn waiting(&self) -> usize {
        self.state().items.len()
    }
}

/// The messages of a port made by [`Node::port_stream`](super::Node::port_stream), in order.
/// It ends when the port is killed (after yielding what was already queued); dropping it
/// kills the port at the next message, like an actor that stopped.
pub struct PortStream {
    queue: std::sync::Arc<StreamQueue>,
    /// Taken from the shared queue in one go; yielded from here without the lock.
    taken: VecDeque<Message>,
}

impl PortStream {
    pub(crate) fn new(queue: std::sync::Arc<StreamQueue>) -> PortStream {
        PortStream {
            queue,
            taken: VecDeque::new(),
        }
    }

    /// The next message, or `None` once the port is dead.
    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn take_queued(&mut self) -> Option<Poll<Option<Message>>> {
        let mut st = self.queue.state();
        if st.items.is_empty() {
            return st.closed.then_some(Poll::Ready(None));
        }
        // Swap the buffers: the queue keeps the (empty) capacity we had.
        std::mem::swap(&mut st.items, &mut self.taken);
        drop(st);
        self.taken.pop_front().map(|m| Poll::Ready(Some(m)))
    }
}

impl Stream for PortStream {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if let Some(m) = self.taken.pop_front() {
            return Poll::Ready(Some(m));
        }
        if let Some(ready) = self.take_queued() {
            return ready;
        }
        self.queue.waker.register(cx.waker());
        // A message may have come between looking and registering.
        self.take_queued().unwrap_or(Poll::Pending)
    }
}

impl Drop for PortStream {
    fn drop(&mut self) {
        self.queue.receiver_gone.store(true, Ordering::Relaxed);
        self.queue.state().items.clear();
    }
}

impl std::fmt::Debug for PortStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortStream")
            .field("taken", &self.taken.len())
            .finish()
    }
}
