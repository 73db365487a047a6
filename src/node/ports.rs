//! Local ports and the monitors watching them.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Recipient;

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

pub(crate) struct PortEntry {
    pub recipient: Recipient<Message>,
    pub monitors: Vec<(u64, Watcher)>,
}

/// The local port table: port name (the part after `#`) → entry.
#[derive(Default)]
pub(crate) struct PortTable {
    pub ports: HashMap<String, PortEntry>,
}

impl PortTable {
    /// Removes a port and returns its watchers, to be fired outside the lock.
    pub fn remove(&mut self, name: &str) -> Option<Vec<(u64, Watcher)>> {
        self.ports.remove(name).map(|e| e.monitors)
    }
}
