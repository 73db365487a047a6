//! Perl's other forms of `mon` (kill a port, send a message, keep values alive) and `after`,
//! built on the callback monitor. Each returns a guard that cancels it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{MonitorGuard, Node, NodeError};
use crate::proto::value::{self, Value};

/// A timer from [`Node::after`] or [`Node::after_fn`]; dropping it cancels the timer
/// ([`TimerGuard::detach`] lets it run).
#[must_use = "dropping a TimerGuard cancels the timer; call detach() to let it run"]
#[derive(Debug)]
pub struct TimerGuard {
    task: tokio::task::AbortHandle,
    detached: bool,
}

impl TimerGuard {
    /// Lets the timer run without the guard.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for TimerGuard {
    fn drop(&mut self) {
        if !self.detached {
            self.task.abort();
        }
    }
}

/// The message elements of `msg`, which must serialise to a sequence.
fn elements<T: Serialize + ?Sized>(to: &str, msg: &T) -> Result<Vec<Value>, NodeError> {
    match value::to_value(msg) {
        Ok(Value::Array(items)) => Ok(items),
        _ => Err(NodeError::NotASequence { port: to.into() }),
    }
}

impl Node {
    /// Perl's `mon $port, $other_port` (a link): when `port` dies with a reason (an abnormal
    /// exit: a non-empty reason), `victim` is killed with the same reason; a normal exit (no
    /// reason) leaves it alone. `victim` may be on any node.
    pub fn mon_link(&self, port: &str, victim: &str) -> MonitorGuard {
        let shared = Arc::downgrade(&self.shared);
        let victim = victim.to_owned();
        self.mon(port, move |reason| {
            if reason.is_empty() {
                return;
            }
            if let Some(shared) = shared.upgrade() {
                let node = Node { shared };
                if let Err(e) = node.kil(&victim, reason) {
                    tracing::debug!(node = %node.id(), victim, "linked kill: {e}");
                }
            }
        })
    }

    /// Perl's `mon $port, $to, @msg`: when `port` dies, sends `msg`'s elements followed by the
    /// kill reason to `to` (`msg` must serialise to a sequence; a typed message can be given
    /// as [`tagged(&msg)`](super::tagged)).
    pub fn mon_send<T: Serialize + ?Sized>(
        &self,
        port: &str,
        to: &str,
        msg: &T,
    ) -> Result<MonitorGuard, NodeError> {
        let prefix = elements(to, msg)?;
        let shared = Arc::downgrade(&self.shared);
        let to = to.to_owned();
        Ok(self.mon(port, move |reason| {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut msg = prefix;
            msg.extend(reason);
            let node = Node { shared };
            if let Err(e) = node.snd(&to, &msg) {
                tracing::warn!(node = %node.id(), to, "monitor message not sent: {e}");
            }
        }))
    }

    /// Perl's `mon_guard $port, @refs`: keeps `keep` alive until `port` dies, then drops it
    /// (a timer, a [`Port`](super::Port), a database guard… that should live as long as the
    /// port). Dropping the returned guard drops `keep` too; detach it to tie `keep` to the
    /// port alone.
    pub fn mon_guard<T: Send + 'static>(&self, port: &str, keep: T) -> MonitorGuard {
        self.mon(port, move |_| drop(keep))
    }

    /// Perl's `after $seconds, $port, @msg`: sends `msg` to `port` after `delay`. Must be
    /// called within the actix system that runs the node.
    pub fn after<T: Serialize + ?Sized>(
        &self,
        delay: Duration,
        port: &str,
        msg: &T,
    ) -> Result<TimerGuard, NodeError> {
        let msg = elements(port, msg)?;
        let shared = Arc::downgrade(&self.shared);
        let port = port.to_owned();
        Ok(self.after_fn(delay, move || {
            if let Some(shared) = shared.upgrade() {
                let node = Node { shared };
                if let Err(e) = node.snd(&port, &msg) {
                    tracing::warn!(node = %node.id(), port, "timed message not sent: {e}");
                }
            }
        }))
    }

    /// Perl's `after $seconds, $callback`: runs `f` after `delay` (on the node's runtime).
    /// Must be called within the actix system that runs the node.
    pub fn after_fn(&self, delay: Duration, f: impl FnOnce() + Send + 'static) -> TimerGuard {
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            f();
        });
        TimerGuard {
            task: task.abort_handle(),
            detached: false,
        }
    }
}
