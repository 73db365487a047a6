//! A bound on the handshakes of accepted connections under way at once. At the bound the
//! oldest one is dropped to make room: connections that never finish their handshake then
//! cost a bounded number of sockets, and a real peer, which finishes in moments, still gets in
//! however many stall.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// See the module docs.
pub(crate) struct HandshakeGate {
    limit: usize,
    state: Mutex<Open>,
}

struct Open {
    next: u64,
    /// Oldest first: each handshake's id and the sender that drops it.
    handshakes: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// A place at the gate, held for the whole handshake.
pub(crate) struct Ticket {
    id: u64,
    gate: Arc<HandshakeGate>,
    evicted: oneshot::Receiver<()>,
}

impl Ticket {
    /// Resolves when a newer handshake took this one's place.
    pub async fn evicted(&mut self) {
        if (&mut self.evicted).await.is_err() {
            // The gate is gone: nobody can evict us any more.
            std::future::pending::<()>().await;
        }
    }
}

impl HandshakeGate {
    pub fn new(limit: usize) -> Arc<HandshakeGate> {
        Arc::new(HandshakeGate {
            limit: limit.max(1),
            state: Mutex::new(Open {
                next: 0,
                handshakes: VecDeque::new(),
            }),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place, dropping the oldest handshake if all are taken.
    pub fn enter(self: &Arc<Self>) -> Ticket {
        let (tx, evicted) = oneshot::channel();
        let mut open = self.open();
        while open.handshakes.len() >= self.limit {
            if let Some((_, oldest)) = open.handshakes.pop_front() {
                let _ = oldest.send(());
            }
        }
        let id = open.next;
        open.next += 1;
        open.handshakes.push_back((id, tx));
        Ticket {
            id,
            gate: self.clone(),
            evicted,
        }
    }

    /// Handshakes under way.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open().handshakes.len()
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.gate.open();
        if let Some(i) = open.handshakes.iter().position(|(id, _)| *id == self.id) {
            open.handshakes.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_goes_when_the_gate_is_full_and_finished_ones_leave() {
        let gate = HandshakeGate::new(2);
        let mut a = gate.enter();
        let mut b = gate.enter();
        assert_eq!(gate.len(), 2);
        let mut c = gate.enter();
        assert_eq!(a.evicted.try_recv(), Ok(()), "the oldest is dropped");
        assert!(b.evicted.try_recv().is_err());
        assert!(c.evicted.try_recv().is_err());
        drop(a);
        assert_eq!(gate.len(), 2);
        // A handshake that ends frees its place: the next one evicts nobody.
        drop(b);
        let _d = gate.enter();
        assert!(c.evicted.try_recv().is_err());
        assert_eq!(gate.len(), 2);
    }
}
