//! Local ports, the monitors watching them, and the `Port` / `MonitorGuard` handles.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::port_stream::Inbox;

use super::message::Message;
use crate::proto::value::Value;

/// What happens when a watched port dies.
pub(crate) enum Watcher {
    /// A local callback, called once with the kill reason (in a mutex only to be `Sync`).
    Callback(std::sync::Mutex<Option<Callback>>),
    /// A node that sent `mon1` for this port: it gets the dialect's notification.
    Remote(Arc<str>),
}

pub(crate) type Callback = Box<dyn FnOnce(Vec<Value>) + Send>;

impl Watcher {
    pub fn callback(cb: impl FnOnce(Vec<Value>) + Send + 'static) -> Watcher {
        Watcher::Callback(std::sync::Mutex::new(Some(Box::new(cb))))
    }
}

/// The last port a link delivered to, valid while no port has been removed since.
#[derive(Default)]
pub(crate) struct PortCache {
    name: String,
    inbox: Option<Inbox>,
    removals: u64,
}

pub(crate) struct PortEntry {
    pub inbox: Inbox,
    pub monitors: Vec<(u64, Watcher)>,
}

/// The local port table: port name (the part after `#`) → entry.
#[derive(Default)]
pub(crate) struct PortTable {
    pub ports: super::FastMap<PortEntry>,
}

impl PortTable {
    /// Removes a port and returns its watchers, to be fired outside the lock.
    pub fn remove(&mut self, name: &str) -> Option<Vec<(u64, Watcher)>> {
        self.ports.remove(name).map(|e| {
            e.inbox.close();
            e.monitors
        })
    }
}

// ---- ports and monitors as the node sees them ---------------------------------------------

use super::{Dialect, LinkSlot, PoisonError, Shared, kernel, lock, read, write};

impl Shared {
    // ---- local ports -------------------------------------------------------------------

    pub(super) fn new_port_name(&self) -> String {
        format!("{}.{}", self.uniq, self.next())
    }

    /// Where a local port's messages go.
    fn port_inbox(&self, port: &str) -> Option<Inbox> {
        read(&self.ports).ports.get(port).map(|e| e.inbox.clone())
    }

    /// Delivers a message to a local port; unknown ports drop it with a debug log.
    pub fn deliver_local(&self, port: &str, msg: Message) {
        let inbox = self.port_inbox(port);
        if self.is_live(inbox.as_ref(), port)
            && let Some(inbox) = inbox
        {
            inbox.deliver(msg);
        }
    }

    /// The inbox of a live local port, remembered in `cache`: a link whose packets mostly go
    /// to one port looks it up once, not once per packet.
    pub fn live_port<'c>(&self, cache: &'c mut PortCache, port: &str) -> Option<&'c Inbox> {
        let removals = self.port_removals.load(Ordering::Acquire);
        if cache.removals != removals || cache.name != port {
            cache.inbox = self.port_inbox(port);
            cache.removals = removals;
            port.clone_into(&mut cache.name);
        }
        if !self.is_live(cache.inbox.as_ref(), port) {
            cache.inbox = None;
        }
        cache.inbox.as_ref()
    }

    /// Whether `port` has a live inbox. A port whose actor has stopped (or whose stream was
    /// dropped) dies here, with no reason; unknown ports are logged at debug level.
    fn is_live(&self, inbox: Option<&Inbox>, port: &str) -> bool {
        match inbox {
            Some(inbox) if inbox.is_live() => true,
            Some(_) => {
                self.kill_local(port, Vec::new());
                false
            }
            None => {
                tracing::debug!(node = %self.id, port, "message to unknown port dropped");
                false
            }
        }
    }

    /// Kills a local port: removes it and fires its monitors with `reason`.
    pub fn kill_local(&self, port: &str, reason: Vec<Value>) {
        let Some(watchers) = write(&self.ports).remove(port) else {
            return;
        };
        // Port caches look the port up again.
        self.port_removals.fetch_add(1, Ordering::Release);
        if watchers.is_empty() && !reason.is_empty() {
            tracing::info!(node = %self.id, port, ?reason, "unmonitored local port died");
        }
        for (_, w) in watchers {
            self.fire(w, port, reason.clone());
        }
    }

    pub(super) fn fire(&self, watcher: Watcher, port: &str, reason: Vec<Value>) {
        match watcher {
            Watcher::Callback(cb) => {
                if let Some(cb) = cb.into_inner().unwrap_or_else(PoisonError::into_inner) {
                    cb(reason);
                }
            }
            Watcher::Remote(node) => {
                // Only if the watcher's node is connected, as in Perl.
                let dialect = match read(&self.links).get(&*node) {
                    Some(LinkSlot::Up(l)) => l.dialect,
                    _ => return,
                };
                let mut args = vec![
                    Value::Str(kernel::notify_tag(dialect).into()),
                    Value::Str(port.into()),
                ];
                args.extend(reason);
                let _ = self.send_remote(&node, "", &Value::Array(args));
            }
        }
    }

    /// Registers a remote node's monitor on a local port; a missing port fires at once.
    pub fn monitor_local_for(&self, port: &str, node: Arc<str>) {
        {
            let mut ports = write(&self.ports);
            if let Some(e) = ports.ports.get_mut(port) {
                // At most one registration per (node, port).
                if !e
                    .monitors
                    .iter()
                    .any(|(_, w)| matches!(w, Watcher::Remote(n) if *n == node))
                {
                    let id = self.next();
                    e.monitors.push((id, Watcher::Remote(node)));
                }
                return;
            }
        }
        let dialect = match read(&self.links).get(&*node) {
            Some(LinkSlot::Up(l)) => l.dialect,
            _ => return,
        };
        // A spawned port that died before this mon1 arrived reports its own reason.
        if let Some(reason) = self.peer.tombstone(port) {
            self.fire(Watcher::Remote(node), port, reason);
            return;
        }
        let mut reason = vec![
            Value::Str("no_such_port".into()),
            Value::Str("cannot monitor nonexistent port".into()),
        ];
        if dialect != Dialect::P0 {
            reason.push(Value::Str(format!("{}#{port}", self.id)));
        }
        self.fire(Watcher::Remote(node), port, reason);
    }

    pub fn unmonitor_local_for(&self, port: &str, node: &str) {
        if let Some(e) = write(&self.ports).ports.get_mut(port) {
            e.monitors
                .retain(|(_, w)| !matches!(w, Watcher::Remote(n) if &**n == node));
        }
    }

    // ---- remote monitors --------------------------------------------------------------

    /// A node told us that a port of its own we watch died.
    pub fn remote_port_died(&self, node: &str, port: &str, reason: Vec<Value>) {
        let watchers = lock(&self.remote_monitors)
            .get_mut(node)
            .and_then(|m| m.remove(port))
            .unwrap_or_default();
        for (_, w) in watchers {
            self.fire(w, port, reason.clone());
        }
    }

    pub(super) fn fire_node_monitors(&self, node: &str, reason: &[Value]) {
        let watchers = lock(&self.remote_monitors).remove(node).unwrap_or_default();
        for (port, list) in watchers {
            for (_, w) in list {
                self.fire(w, &port, reason.to_vec());
            }
        }
    }
}

/// A local port. Dropping it kills the port with no reason (a normal exit); keep it in the
/// actor that receives its messages, so that the port lives as long as the actor.
#[must_use = "dropping a Port kills it"]
pub struct Port {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) shared: Arc<Shared>,
    pub(super) detached: bool,
}

impl Port {
    /// The full port id, `<node>#<name>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Keeps the port alive without this guard; it dies by [`Node::kil`](super::Node::kil) only.
    pub fn detach(mut self) -> String {
        self.detached = true;
        self.id.clone()
    }

    /// Kills the port with `("die", message)`: what a failing handler should do.
    pub fn die(mut self, message: impl Into<String>) {
        self.detached = true;
        self.shared.kill_local(
            &self.name,
            vec![Value::Str("die".into()), Value::Str(message.into())],
        );
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if !self.detached {
            self.shared.kill_local(&self.name, Vec::new());
        }
    }
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Port({})", self.id)
    }
}

/// A monitor; dropping it cancels the monitor (send `mon0` when it was the last one).
#[must_use = "dropping a MonitorGuard cancels the monitor"]
pub struct MonitorGuard {
    pub(super) node: String,
    pub(super) port: String,
    pub(super) id: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) detached: bool,
}

impl MonitorGuard {
    /// Keeps the monitor until it fires.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        let s = &self.shared;
        if self.node == *s.id {
            if let Some(e) = write(&s.ports).ports.get_mut(&self.port) {
                e.monitors.retain(|(id, _)| *id != self.id);
            }
            return;
        }
        let last = {
            let mut mons = lock(&s.remote_monitors);
            let Some(ports) = mons.get_mut(&self.node) else {
                return;
            };
            let Some(list) = ports.get_mut(&self.port) else {
                return;
            };
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                ports.remove(&self.port);
                true
            } else {
                false
            }
        };
        if last {
            let _ = s.send_remote(&self.node, "", &("mon0", &self.port));
        }
    }
}
