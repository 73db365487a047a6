//! The send queue of one up link: senders encode their packets straight into one shared buffer,
//! and the link's writer task takes the whole buffer at once and writes it with one syscall.
//!
//! One lock per packet instead of a channel send (with its semaphore, wake-up and a separate
//! allocation per packet): under load many packets leave in one write, and when the link is
//! idle the first packet wakes the writer at once (no Nagle-style delay).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::proto::framing::FramingError;

/// A link's queue of encoded bytes, bounded in bytes.
pub(crate) struct SendQueue {
    state: Mutex<State>,
    /// Bytes that may wait; a packet is taken while fewer are queued.
    limit: usize,
    /// Awaitable senders wait while this many bytes or more are queued.
    wait_above: usize,
    /// Wakes the writer when the buffer stops being empty, or on close.
    wake_writer: Notify,
    /// Wakes awaitable senders when the writer has taken the buffer, or on close.
    room: Notify,
    /// Wakes the transport when the node gives up on the link.
    abort: Notify,
    /// What the link moved, for `Node::stats`.
    pub counters: LinkCounters,
}

/// What one link moved in its data phase: relaxed atomics, each written by one side (senders
/// and the writer task, or the reader task), read only by `Node::stats`. No lock per packet.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    /// Packets queued (counted as they enter the queue).
    pub packets_sent: AtomicU64,
    /// Bytes written to the socket (keepalive packets included).
    pub bytes_sent: AtomicU64,
    /// The reader's counters.
    pub received: Received,
}

/// The reader task's counters, on a cache line of their own: it runs on another thread than
/// most senders.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Received {
    /// Packets handed to the node.
    pub packets: AtomicU64,
    /// Bytes read from the socket.
    pub bytes: AtomicU64,
}

impl LinkCounters {
    /// Adds `n` to `counter` (relaxed: these are statistics, not synchronisation).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Awaitable senders wait while this much is queued (or the bound, if smaller): enough for
/// several full socket writes, small enough that a fast sender does not grow the buffer (and
/// the pages the kernel must clear for it) to the whole bound.
const WAIT_ABOVE: usize = 1 << 20;

struct State {
    buf: BytesMut,
    closed: bool,
    /// The node failed the link: what is queued is dropped and the transport ends at once.
    aborted: bool,
}

/// What became of a packet handed to [`SendQueue::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The queue holds `limit` bytes or more: nothing was queued.
    Full,
    /// The link is going down: nothing was queued.
    Closed,
}

/// Writers hand back buffers larger than this to the allocator instead of keeping them.
const KEEP_CAPACITY: usize = 4 << 20;

impl SendQueue {
    pub fn new(limit: usize) -> SendQueue {
        SendQueue {
            state: Mutex::new(State {
                buf: BytesMut::new(),
                closed: false,
                aborted: false,
            }),
            limit: limit.max(1),
            wait_above: limit.clamp(1, WAIT_ABOVE),
            wake_writer: Notify::new(),
            room: Notify::new(),
            abort: Notify::new(),
            counters: LinkCounters::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one packet written by `encode`, unless the queue is full or closed. A failed
    /// encoding leaves the queue as it was.
    pub fn push(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), FramingError>,
    ) -> Result<Pushed, FramingError> {
        self.push_below(self.limit, encode)
    }

    /// Like [`push`](Self::push) for awaitable senders: `Full` already at the lower mark at
    /// which [`push_wait`](Self::push_wait) waits.
    pub fn try_push_awaitable(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), FramingError>,
    ) -> Result<Pushed, FramingError> {
        self.push_below(self.wait_above, encode)
    }

    /// Appends unless `mark` bytes or more are queued (then `Full`).
    fn push_below(
        &self,
        mark: usize,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), FramingError>,
    ) -> Result<Pushed, FramingError> {
        let st = self.state();
        if st.buf.len() >= mark && !st.closed {
            return Ok(Pushed::Full);
        }
        self.append(st, encode)
    }

    /// Appends past the bound (for messages accepted earlier, e.g. while the link was pending).
    pub fn push_unbounded(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), FramingError>,
    ) -> Result<Pushed, FramingError> {
        self.append(self.state(), encode)
    }

    /// Like [`push`](Self::push), but waits for room instead of reporting `Full`; it waits
    /// already while 1 MiB is queued (backpressure well before the bound).
    pub async fn push_wait(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), FramingError>,
    ) -> Result<Pushed, FramingError> {
        // A sender that never has to wait would starve a writer on its own thread until the
        // queue is full: yield now and then, as a channel send would.
        tokio::task::consume_budget().await;
        loop {
            {
                let st = self.state();
                if st.closed || st.buf.len() < self.wait_above {
                    return self.append(st, encode);
                }
            }
            // Full: register for the writer's wake-up, then look again (it may have just run).
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let st = self.state();
                if st.closed || st.buf.len() < self.wait_above {
                    // Several woken senders may each add a packet past the bound: it is about
                    // memory, not exactness.
                    return self.append(st, encode);
                }
            }
            room.await;
        }
    }

    fn append(
        &self,
        mut st: MutexGuard<'_, State>,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), FramingError>,
    ) -> Result<Pushed, FramingError> {
        if st.closed {
            return Ok(Pushed::Closed);
        }
        let before = st.buf.len();
        if let Err(e) = encode(&mut st.buf) {
            st.buf.truncate(before);
            return Err(e);
        }
        drop(st);
        LinkCounters::add(&self.counters.packets_sent, 1);
        if before == 0 {
            // A stored permit if the writer is busy writing: it looks again when done.
            self.wake_writer.notify_one();
        }
        Ok(Pushed::Queued)
    }

    /// The writer's side: waits until bytes are queued and swaps them into `out` (which must
    /// be empty). `false` once the queue is closed and drained.
    pub async fn take(&self, out: &mut BytesMut) -> bool {
        loop {
            let woken = self.wake_writer.notified();
            {
                let mut st = self.state();
                if !st.buf.is_empty() {
                    std::mem::swap(&mut st.buf, out);
                    drop(st);
                    self.room.notify_waiters();
                    return true;
                }
                if st.closed {
                    return false;
                }
            }
            woken.await;
        }
    }

    /// Clears a written buffer for reuse, dropping it if a burst made it large.
    pub fn recycle(buf: &mut BytesMut) {
        if buf.capacity() > KEEP_CAPACITY {
            *buf = BytesMut::new();
        } else {
            buf.clear();
        }
    }

    /// No more packets: senders get `Closed`, waiting ones wake, the writer ends once drained.
    pub fn close(&self) {
        self.state().closed = true;
        self.wake_writer.notify_one();
        self.room.notify_waiters();
    }

    /// The node failed the link: drop what is queued and end the transport now, without
    /// waiting for a slow peer to take the rest.
    pub fn abort(&self) {
        {
            let mut st = self.state();
            st.closed = true;
            st.aborted = true;
            st.buf = BytesMut::new();
        }
        self.wake_writer.notify_one();
        self.room.notify_waiters();
        self.abort.notify_waiters();
    }

    /// Whether [`abort`](Self::abort) was called.
    pub fn is_aborted(&self) -> bool {
        self.state().aborted
    }

    /// Resolves once [`abort`](Self::abort) is called.
    pub async fn aborted(&self) {
        loop {
            let woken = self.abort.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.state().aborted {
                return;
            }
            woken.await;
        }
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.state().buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn put(bytes: &'static [u8]) -> impl FnOnce(&mut BytesMut) -> Result<(), FramingError> {
        move |b| {
            b.put_slice(bytes);
            Ok(())
        }
    }

    #[test]
    fn packets_accumulate_until_taken_and_the_bound_is_in_bytes() {
        let q = SendQueue::new(8);
        assert_eq!(q.push(put(b"abcde")).unwrap(), Pushed::Queued);
        assert_eq!(q.push(put(b"fghij")).unwrap(), Pushed::Queued);
        // 10 bytes queued ≥ 8: full until the writer takes them.
        assert_eq!(q.push(put(b"k")).unwrap(), Pushed::Full);
        let mut out = BytesMut::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(rt.block_on(q.take(&mut out)));
        assert_eq!(&out[..], b"abcdefghij");
        assert_eq!(q.push(put(b"k")).unwrap(), Pushed::Queued);
        q.close();
        assert_eq!(q.push(put(b"l")).unwrap(), Pushed::Closed);
        SendQueue::recycle(&mut out);
        // Closed, but what was queued before still goes out; then the writer ends.
        assert!(rt.block_on(q.take(&mut out)));
        assert_eq!(&out[..], b"k");
        SendQueue::recycle(&mut out);
        assert!(!rt.block_on(q.take(&mut out)));
    }

    #[test]
    fn awaitable_senders_stop_at_the_lower_mark_and_snd_at_the_bound() {
        let q = SendQueue::new(4 << 20);
        let chunk = vec![b'x'; 64 * 1024];
        let fill = |q: &SendQueue| {
            q.try_push_awaitable(|b| {
                b.extend_from_slice(&chunk);
                Ok(())
            })
            .unwrap()
        };
        let mut taken = 0;
        while fill(&q) == Pushed::Queued {
            taken += 1;
        }
        assert_eq!(taken * chunk.len(), WAIT_ABOVE);
        // `snd` still has room up to the bound.
        assert_eq!(q.push(put(b"more")).unwrap(), Pushed::Queued);
    }

    #[test]
    fn a_failed_encoding_leaves_no_bytes_behind() {
        let q = SendQueue::new(64);
        q.push(put(b"ok")).unwrap();
        let failed = q.push(|b| {
            b.put_slice(b"half");
            Err(FramingError::Encode {
                framing: crate::proto::framing::Framing::Json,
                reason: "test".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(q.queued(), 2);
    }

    #[test]
    fn a_waiting_sender_resumes_when_the_writer_takes_the_buffer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let q = std::sync::Arc::new(SendQueue::new(4));
            q.push(put(b"full")).unwrap();
            let waiting = tokio::spawn({
                let q = q.clone();
                async move { q.push_wait(put(b"next")).await.unwrap() }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            let mut out = BytesMut::new();
            assert!(q.take(&mut out).await);
            assert_eq!(waiting.await.unwrap(), Pushed::Queued);
            SendQueue::recycle(&mut out);
            assert!(q.take(&mut out).await);
            assert_eq!(&out[..], b"next");
        });
    }

    #[test]
    fn closing_wakes_a_waiting_sender() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let q = std::sync::Arc::new(SendQueue::new(1));
            q.push(put(b"x")).unwrap();
            let waiting = tokio::spawn({
                let q = q.clone();
                async move { q.push_wait(put(b"y")).await.unwrap() }
            });
            tokio::task::yield_now().await;
            q.close();
            assert_eq!(waiting.await.unwrap(), Pushed::Closed);
        });
    }

    #[tokio::test]
    async fn abort_drops_what_is_queued_and_wakes_whoever_waits() {
        let q = std::sync::Arc::new(SendQueue::new(1 << 20));
        assert_eq!(q.push(put(b"abc")).unwrap(), Pushed::Queued);
        let watcher = {
            let q = q.clone();
            tokio::spawn(async move { q.aborted().await })
        };
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished());
        q.abort();
        tokio::time::timeout(std::time::Duration::from_secs(5), watcher)
            .await
            .expect("the watcher wakes")
            .unwrap();
        assert_eq!(q.queued(), 0);
        assert_eq!(q.push(put(b"d")).unwrap(), Pushed::Closed);
        let mut out = BytesMut::new();
        assert!(
            !q.take(&mut out).await,
            "the writer ends with nothing to write"
        );
        // A watcher that starts after the abort returns at once.
        q.aborted().await;
    }
}
