//! Local ports, the monitors watching them, and the `Port` / `MonitorGuard` handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::port_stream::Inbox;

use super::message::Message;
use crate::proto::node_request::notify_tag;
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
    /// Which port of this name it is (a killed port's name can be taken again): a [`Port`]
    /// handle kills only the port it was made for.
    serial: u64,
}

/// The local port table: port name (the part after `#`) → its inbox and the monitors on it.
pub(crate) struct Ports {
    table: RwLock<super::FastMap<PortEntry>>,
    /// Counts removals from the table, so that [`PortCache`]s know to look again.
    removals: AtomicU64,
    /// Prefix of the names of our ports (Perl's UNIQ), and the counter after it.
    uniq: String,
    next_name: AtomicU64,
    /// Serial numbers of the entries.
    next_serial: AtomicU64,
}

impl Ports {
    pub fn new(uniq: String) -> Ports {
        Ports {
            table: RwLock::default(),
            removals: AtomicU64::new(0),
            uniq,
            next_name: AtomicU64::new(0),
            next_serial: AtomicU64::new(0),
        }
    }

    fn entry(&self, inbox: Inbox) -> PortEntry {
        PortEntry {
            inbox,
            monitors: Vec::new(),
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Adds a port under a fresh name and returns the name and the entry's serial number.
    pub fn insert_new(&self, inbox: Inbox) -> (String, u64) {
        let mut table = write(&self.table);
        // A spawning peer chooses names on this node: skip any it took.
        let name = loop {
            let n = self.next_name.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}.{n}", self.uniq);
            if !table.contains_key(&name) {
                break name;
            }
        };
        let entry = self.entry(inbox);
        let serial = entry.serial;
        table.insert(name.clone(), entry);
        (name, serial)
    }

    /// Adds a port under `name`, unless that name is taken; returns the entry's serial number.
    pub fn insert_named(&self, name: &str, inbox: Inbox) -> Option<u64> {
        let mut table = write(&self.table);
        if table.contains_key(name) {
            return None;
        }
        let entry = self.entry(inbox);
        let serial = entry.serial;
        table.insert(name.to_owned(), entry);
        Some(serial)
    }

    /// Removes a port (only if its entry has that serial number, when one is given) and
    /// returns its watchers, to be fired outside the lock.
    fn remove(&self, name: &str, serial: Option<u64>) -> Option<Watchers> {
        let entry = {
            let mut table = write(&self.table);
            let found = table.get(name)?.serial;
            if serial.is_some_and(|s| s != found) {
                return None;
            }
            table.remove(name)?
        };
        // Port caches look the port up again.
        self.removals.fetch_add(1, Ordering::Release);
        entry.inbox.close();
        Some(entry.monitors)
    }

    /// The names of every port.
    #[cfg(feature = "fuzzing")]
    pub(super) fn names(&self) -> Vec<String> {
        read(&self.table).keys().cloned().collect()
    }

    /// How many ports there are.
    #[cfg(feature = "fuzzing")]
    pub(super) fn count(&self) -> usize {
        read(&self.table).len()
    }

    /// Where a local port's messages go.
    pub fn inbox(&self, port: &str) -> Option<Inbox> {
        read(&self.table).get(port).map(|e| e.inbox.clone())
    }

    /// Adds a monitor to a port; gives the watcher back if there is no such port.
    pub fn add_monitor(&self, port: &str, id: u64, watcher: Watcher) -> Result<(), Watcher> {
        match write(&self.table).get_mut(port) {
            Some(e) => {
                e.monitors.push((id, watcher));
                Ok(())
            }
            None => Err(watcher),
        }
    }

    /// Adds `node`'s monitor to a port unless it has one there; false if there is no such port.
    fn add_remote_monitor(&self, port: &str, node: Arc<str>, id: impl FnOnce() -> u64) -> bool {
        let mut table = write(&self.table);
        let Some(e) = table.get_mut(port) else {
            return false;
        };
        if !e
            .monitors
            .iter()
            .any(|(_, w)| matches!(w, Watcher::Remote(n) if *n == node))
        {
            e.monitors.push((id(), Watcher::Remote(node)));
        }
        true
    }

    /// Removes monitors of a port that `keep` rejects.
    fn retain_monitors(&self, port: &str, keep: impl FnMut(&(u64, Watcher)) -> bool) {
        if let Some(e) = write(&self.table).get_mut(port) {
            e.monitors.retain(keep);
        }
    }
}

/// Watchers with their monitor ids.
type Watchers = Vec<(u64, Watcher)>;

/// node → port → the local monitors watching that remote port.
#[derive(Default)]
pub(crate) struct RemoteMonitors {
    map: Mutex<HashMap<String, HashMap<String, Watchers>>>,
}

impl RemoteMonitors {
    /// Adds a watcher of `node`'s `port`; true if it is the first on that port.
    pub fn add(&self, node: &str, port: &str, id: u64, watcher: Watcher) -> bool {
        let mut map = lock(&self.map);
        let list = map
            .entry(node.to_owned())
            .or_default()
            .entry(port.to_owned())
            .or_default();
        list.push((id, watcher));
        list.len() == 1
    }

    /// Removes one watcher; true if it was the last on that port.
    fn cancel(&self, node: &str, port: &str, id: u64) -> bool {
        let mut map = lock(&self.map);
        let Some(ports) = map.get_mut(node) else {
            return false;
        };
        let Some(list) = ports.get_mut(port) else {
            return false;
        };
        list.retain(|(i, _)| *i != id);
        if list.is_empty() {
            ports.remove(port);
            true
        } else {
            false
        }
    }

    /// Takes the watchers of one remote port.
    fn take_port(&self, node: &str, port: &str) -> Watchers {
        lock(&self.map)
            .get_mut(node)
            .and_then(|m| m.remove(port))
            .unwrap_or_default()
    }

    /// How many nodes have ports watched.
    #[cfg(feature = "fuzzing")]
    pub(super) fn nodes(&self) -> usize {
        lock(&self.map).len()
    }

    /// Takes the watchers of every port of a node.
    fn take_node(&self, node: &str) -> HashMap<String, Watchers> {
        lock(&self.map).remove(node).unwrap_or_default()
    }
}

// ---- ports and monitors as the node sees them ---------------------------------------------

use super::{Dialect, PoisonError, Shared, lock, read, write};

impl Shared {
    /// Delivers a message to a local port; unknown ports drop it with a debug log.
    pub fn deliver_local(&self, port: &str, msg: Message) {
        let inbox = self.ports.inbox(port);
        if self.is_live(inbox.as_ref(), port)
            && let Some(inbox) = inbox
            && let Err(reason) = inbox.deliver(msg)
        {
            self.kill_local(port, reason);
        }
    }

    /// The inbox of a live local port, remembered in `cache`: a link whose packets mostly go
    /// to one port looks it up once, not once per packet.
    pub fn live_port<'c>(&self, cache: &'c mut PortCache, port: &str) -> Option<&'c Inbox> {
        let removals = self.ports.removals.load(Ordering::Acquire);
        if cache.removals != removals || cache.name != port {
            cache.inbox = self.ports.inbox(port);
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
        self.kill_entry(port, None, reason);
    }

    /// Kills a local port if it is still the entry with serial number `serial` (when given).
    fn kill_entry(&self, port: &str, serial: Option<u64>, reason: Vec<Value>) {
        let Some(watchers) = self.ports.remove(port, serial) else {
            return;
        };
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
                let Some(dialect) = self.links.dialect(&node) else {
                    return;
                };
                let mut args = vec![
                    Value::Str(notify_tag(dialect).into()),
                    Value::Str(port.into()),
                ];
                args.extend(reason);
                let _ = self.send_remote(&node, "", &Value::Array(args));
            }
        }
    }

    /// Registers a remote node's monitor on a local port; a missing port fires at once.
    pub fn monitor_local_for(&self, port: &str, node: Arc<str>) {
        // At most one registration per (node, port).
        if self
            .ports
            .add_remote_monitor(port, node.clone(), || self.runtime.next_id())
        {
            return;
        }
        let Some(dialect) = self.links.dialect(&node) else {
            return;
        };
        // A spawned port that died before this mon1 arrived reports its own reason.
        if let Some(reason) = self.spawner.tombstone(port) {
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
        self.ports.retain_monitors(
            port,
            |(_, w)| !matches!(w, Watcher::Remote(n) if &**n == node),
        );
    }

    // ---- remote monitors --------------------------------------------------------------

    /// A node told us that a port of its own we watch died.
    pub fn remote_port_died(&self, node: &str, port: &str, reason: Vec<Value>) {
        let watchers = self.monitors.take_port(node, port);
        for (_, w) in watchers {
            self.fire(w, port, reason.clone());
        }
    }

    pub(super) fn fire_node_monitors(&self, node: &str, reason: &[Value]) {
        let watchers = self.monitors.take_node(node);
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
    /// The serial number of the port's entry: once the port is dead, its name may be taken by
    /// another port, which this handle must leave alone.
    pub(super) serial: u64,
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
        self.shared.kill_entry(
            &self.name,
            Some(self.serial),
            vec![Value::Str("die".into()), Value::Str(message.into())],
        );
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if !self.detached {
            self.shared
                .kill_entry(&self.name, Some(self.serial), Vec::new());
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
            s.ports
                .retain_monitors(&self.port, |(id, _)| *id != self.id);
            return;
        }
        if s.monitors.cancel(&self.node, &self.port, self.id) {
            let _ = s.send_remote(&self.node, "", &("mon0", &self.port));
        }
    }
}
