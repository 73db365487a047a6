//! The network's database from Rust, with the semantics of Perl 2.x's `db_*` (AEMP-NOTES §3.8):
//! family → key → value, shared by every node of a P2 network (Perl 2.x and Rust nodes alike).
//!
//! A node's own entries ([`Node::db_set`], [`Node::db_reg`]) go to its master, which tells the
//! other global nodes; they go away when the node deletes them, when their guard is dropped, when
//! a registered port dies, or when the node leaves the network. Queries ([`Node::db_family`],
//! [`Node::db_keys`], [`Node::db_values`]) are answered by the master (on a global node, by the
//! node itself from its replica); [`Node::db_mon`] mirrors a family and yields each change.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::Serialize;
use tokio::sync::mpsc;

pub use super::global::DbChange;
use super::global::{self, GLOBALS, LISTENERS};
use super::{Node, NodeError, Shared};
use crate::proto::node_request::{Family, tag};
use crate::proto::value::{self, Value};

/// Whether `name` is a family a node may write: `[A-Za-z][A-Za-z0-9_:]*`. (The network's own
/// families, `'l` and `'g`, can be read and monitored, not written.)
pub fn valid_family(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn writable(family: &str) -> Result<(), NodeError> {
    if valid_family(family) {
        Ok(())
    } else {
        Err(NodeError::Family(family.to_owned()))
    }
}

fn readable(family: &str) -> Result<(), NodeError> {
    if family == LISTENERS || family == GLOBALS {
        Ok(())
    } else {
        writable(family)
    }
}

/// An entry this node set; dropping the guard deletes it ([`DbGuard::detach`] keeps it).
#[must_use = "dropping a DbGuard deletes its entry; call detach() to keep it"]
pub struct DbGuard {
    shared: Arc<Shared>,
    family: String,
    key: String,
    detached: bool,
}

impl DbGuard {
    /// Keeps the entry until it is deleted (or the node leaves the network).
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// The entry's key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        if !self.detached {
            write(
                &self.shared,
                &self.family,
                Family::new(),
                std::slice::from_ref(&self.key),
            );
        }
    }
}

impl std::fmt::Debug for DbGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbGuard")
            .field("family", &self.family)
            .field("key", &self.key)
            .finish()
    }
}

fn write(shared: &Arc<Shared>, family: &str, set: Family, del: &[String]) {
    let effects = shared.global().db_write(family, set, del);
    global::apply(shared, effects);
}

/// A family monitored with [`Node::db_mon`]: a [`Stream`] of its changes, the first one the
/// family as it is (every entry "added"; nothing, if the family is empty), then one per change
/// as the master reports it. The monitor ends when dropped.
pub struct DbMonitor {
    shared: Arc<Shared>,
    family: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<DbChange>,
    current: Family,
}

impl DbMonitor {
    /// The family as the changes yielded so far make it.
    pub fn family(&self) -> &BTreeMap<String, Value> {
        &self.current
    }

    /// The next change (`None` once the node is gone).
    pub async fn next_change(&mut self) -> Option<DbChange> {
        futures_util::StreamExt::next(self).await
    }
}

impl Stream for DbMonitor {
    type Item = DbChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DbChange>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(change)) = &polled {
            let change = change.clone();
            for k in &change.deleted {
                self.current.remove(k);
            }
            self.current.extend(change.added);
            self.current.extend(change.changed);
        }
        polled
    }
}

impl Drop for DbMonitor {
    fn drop(&mut self) {
        let effects = self.shared.global().db_unsubscribe(&self.family, self.id);
        global::apply(&self.shared, effects);
    }
}

impl std::fmt::Debug for DbMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbMonitor")
            .field("family", &self.family)
            .field("entries", &self.current.len())
            .finish()
    }
}

impl Node {
    /// Perl's `db_set`: sets `key` of `family` to `value` for the whole network. The entry
    /// lives until deleted, until the guard is dropped (see [`DbGuard::detach`]) or until this
    /// node leaves the network.
    pub fn db_set<T: Serialize + ?Sized>(
        &self,
        family: &str,
        key: &str,
        value: &T,
    ) -> Result<DbGuard, NodeError> {
        writable(family)?;
        if key.is_empty() {
            return Err(NodeError::DbKey(family.to_owned()));
        }
        let value = value::to_value(value).map_err(|e| NodeError::DbValue {
            family: family.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        write(
            &self.shared,
            family,
            Family::from([(key.to_owned(), value)]),
            &[],
        );
        Ok(DbGuard {
            shared: self.shared.clone(),
            family: family.to_owned(),
            key: key.to_owned(),
            detached: false,
        })
    }

    /// Perl's `db_del`: deletes these keys of `family` that this node set.
    pub fn db_del(&self, family: &str, keys: &[&str]) -> Result<(), NodeError> {
        writable(family)?;
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        write(&self.shared, family, Family::new(), &keys);
        Ok(())
    }

    /// Perl's `db_reg`: registers the local `port` (its id is the key; this node's id stands
    /// for its node port) in `family` with `value`; the entry goes when the port dies, or when
    /// the guard is dropped.
    pub fn db_reg<T: Serialize + ?Sized>(
        &self,
        family: &str,
        port: &str,
        value: &T,
    ) -> Result<DbGuard, NodeError> {
        let (node, name) = super::split_port_id(port);
        if node != self.id() {
            return Err(NodeError::NotLocal(port.to_owned()));
        }
        let guard = self.db_set(family, port, value)?;
        if name.is_empty() {
            // The node port (this node's id) never dies.
            return Ok(guard);
        }
        let shared = Arc::downgrade(&self.shared);
        let (fam, key) = (family.to_owned(), port.to_owned());
        self.mon(port, move |_| {
            if let Some(shared) = shared.upgrade() {
                write(&shared, &fam, Family::new(), &[key]);
            }
        })
        .detach();
        Ok(guard)
    }

    /// Perl's `db_mon`: mirrors `family` (also `'l` or `'g`) from the master; the monitor
    /// yields it as it is, then each change. Without a master yet, it starts once there is one.
    pub fn db_mon(&self, family: &str) -> Result<DbMonitor, NodeError> {
        readable(family)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, effects) = self.shared.global().db_subscribe(family, tx);
        global::apply(&self.shared, effects);
        Ok(DbMonitor {
            shared: self.shared.clone(),
            family: family.to_owned(),
            id,
            rx,
            current: Family::new(),
        })
    }

    /// Perl's `db_family`: a family of the network's database (`'l`: node id → listeners), as
    /// the master (or this node, if global) holds it. Waits for a master; bound it with a
    /// timeout.
    pub async fn db_family(&self, family: &str) -> Result<BTreeMap<String, Value>, NodeError> {
        match self.db_query(tag::G_DB_FAMILY, family).await? {
            Value::Map(entries) => Ok(entries.into_iter().collect()),
            Value::Null => Ok(BTreeMap::new()),
            _ => Err(NodeError::Query {
                family: family.to_owned(),
                reason: "the answer is not a map",
            }),
        }
    }

    /// Perl's `db_keys`: the keys of a family (see [`Node::db_family`]).
    pub async fn db_keys(&self, family: &str) -> Result<Vec<String>, NodeError> {
        let keys = self.db_query(tag::G_DB_KEYS, family).await?;
        let keys = keys.as_array().and_then(|k| {
            k.iter()
                .map(|k| k.as_str().map(|k| k.into_owned()))
                .collect::<Option<Vec<_>>>()
        });
        keys.ok_or_else(|| NodeError::Query {
            family: family.to_owned(),
            reason: "the answer is not a list of keys",
        })
    }

    /// Perl's `db_values`: the values of a family (see [`Node::db_family`]).
    pub async fn db_values(&self, family: &str) -> Result<Vec<Value>, NodeError> {
        match self.db_query(tag::G_DB_VALUES, family).await? {
            Value::Array(values) => Ok(values),
            _ => Err(NodeError::Query {
                family: family.to_owned(),
                reason: "the answer is not a list",
            }),
        }
    }

    async fn db_query(&self, tag: &'static str, family: &str) -> Result<Value, NodeError> {
        readable(family)?;
        global::query(&self.shared, tag, family)
            .await
            .map_err(|_| NodeError::Query {
                family: family.to_owned(),
                reason: "the node shut down",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_checked_as_perl_documents_them() {
        for ok in ["a", "app_svc", "A1:b_c", "eg_chat_server2"] {
            assert!(valid_family(ok), "{ok}");
        }
        for bad in ["", "1a", "_a", "'l", "a b", "a-b", "ä"] {
            assert!(!valid_family(bad), "{bad}");
        }
        assert!(readable("'l").is_ok() && readable("'g").is_ok());
        assert!(matches!(writable("'l"), Err(NodeError::Family(_))));
    }
}
