//! The network's database as one node uses it (Perl 2.x `db_set`, `db_del`, `db_mon`): its own
//! entries go to its master as changes (`g_upd`), and a family it monitors is mirrored from the
//! master (`g_mon1`, then `g_chg1` with the whole family and `g_chg2` with each change), each
//! change handed to the local subscribers.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;

use super::{Effect, Global, MAX_ENTRIES, s};
use crate::proto::node_request::{Family, tag};
use crate::proto::value::Value;

/// One change to a monitored family, as [`crate::node::DbMonitor`] yields it.
#[derive(Clone, Debug, PartialEq)]
pub struct DbChange {
    /// The family.
    pub family: String,
    /// Keys that appeared, with their values.
    pub added: BTreeMap<String, Value>,
    /// Keys whose value changed, with the new values.
    pub changed: BTreeMap<String, Value>,
    /// Keys that went away.
    pub deleted: Vec<String>,
}

impl DbChange {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.deleted.is_empty()
    }
}

/// A family this node monitors: the master's view of it, and who wants to hear of changes.
#[derive(Default)]
pub(super) struct Mirror {
    replica: Family,
    /// The master told us the whole family (`g_chg1`) at least once.
    synced: bool,
    subscribers: BTreeMap<u64, mpsc::UnboundedSender<DbChange>>,
}

fn mon_key(family: &str) -> String {
    format!("mon1 {family}")
}

impl Global {
    /// Perl's `db_set`/`db_del` of our own entries: kept, and told to the master when they
    /// change something.
    pub fn db_write(&mut self, family: &str, set: Family, del: &[String]) -> Vec<Effect> {
        let current = self.local_db.get(family);
        let set: Family = set
            .into_iter()
            .filter(|(k, v)| current.and_then(|f| f.get(k)) != Some(v))
            .collect();
        let del: Vec<String> = del
            .iter()
            .filter(|k| current.is_some_and(|f| f.contains_key(*k)))
            .cloned()
            .collect();
        if set.is_empty() && del.is_empty() {
            return Vec::new();
        }
        self.db_change(family, set, &del)
    }

    /// The keys of `family` this node knows without asking: on a global node the merged
    /// family, on any node the family as mirrored for a monitor, and our own entries.
    pub fn db_known_keys(&self, family: &str) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        if self.is_global {
            keys.extend(self.family(family).into_keys());
        }
        if let Some(mirror) = self.mirrors.get(family) {
            keys.extend(mirror.replica.keys().cloned());
        }
        if let Some(own) = self.local_db.get(family) {
            keys.extend(own.keys().cloned());
        }
        keys
    }

    /// Starts handing changes to `family` to `tx`, the first being the family as known now
    /// (everything in it "added"). Returns the subscription's id.
    pub fn db_subscribe(
        &mut self,
        family: &str,
        tx: mpsc::UnboundedSender<DbChange>,
    ) -> (u64, Vec<Effect>) {
        self.next_call += 1;
        let id = self.next_call;
        let mut out = Vec::new();
        match self.mirrors.get_mut(family) {
            Some(mirror) => {
                // Monitored already: the family as we have it now (even empty, as Perl calls
                // back), unless the master's first answer is still to come.
                if mirror.synced {
                    let _ = tx.send(DbChange {
                        family: family.to_owned(),
                        added: mirror.replica.clone(),
                        changed: BTreeMap::new(),
                        deleted: Vec::new(),
                    });
                }
                mirror.subscribers.insert(id, tx);
            }
            None => {
                if self.mirrors.len() >= MAX_ENTRIES {
                    return (id, out);
                }
                let mut mirror = Mirror::default();
                mirror.subscribers.insert(id, tx);
                self.mirrors.insert(family.to_owned(), mirror);
                let request = vec![s(tag::G_MON1), s(family)];
                self.requests.insert(mon_key(family), request.clone());
                out.extend(self.ask_master(request));
            }
        }
        (id, out)
    }

    /// Ends subscription `id` to `family`; the last one ends the monitor at the master.
    pub fn db_unsubscribe(&mut self, family: &str, id: u64) -> Vec<Effect> {
        let Some(mirror) = self.mirrors.get_mut(family) else {
            return Vec::new();
        };
        mirror.subscribers.remove(&id);
        if !mirror.subscribers.is_empty() {
            return Vec::new();
        }
        self.mirrors.remove(family);
        self.requests.remove(&mon_key(family));
        match &self.master {
            Some(master) => vec![Effect::Send(
                master.clone(),
                vec![s(tag::G_MON0), s(family)],
            )],
            None => Vec::new(),
        }
    }

    /// `g_chg1 family state` (the whole family) or `g_chg2 family set del` (a change) from
    /// `from`; only our master's count, as in Perl.
    pub(super) fn mirror_change(
        &mut self,
        from: &str,
        family: String,
        whole: Option<Family>,
        set: Family,
        del: Vec<String>,
    ) {
        if self.master.as_deref() != Some(from) {
            return;
        }
        let Some(mirror) = self.mirrors.get_mut(&family) else {
            return;
        };
        // The first whole family is news even when empty: the monitor is in place.
        let first = whole.is_some() && !mirror.synced;
        mirror.synced |= whole.is_some();
        let mut change = DbChange {
            family,
            added: BTreeMap::new(),
            changed: BTreeMap::new(),
            deleted: Vec::new(),
        };
        let (set, del) = match whole {
            Some(state) => {
                let gone = mirror
                    .replica
                    .keys()
                    .filter(|k| !state.contains_key(*k))
                    .cloned()
                    .collect();
                (state, gone)
            }
            None => (set, del),
        };
        for (k, v) in set {
            match mirror.replica.get(&k) {
                Some(old) if *old == v => {}
                Some(_) => {
                    change.changed.insert(k.clone(), v.clone());
                }
                None => {
                    change.added.insert(k.clone(), v.clone());
                }
            }
            if mirror.replica.len() < MAX_ENTRIES || mirror.replica.contains_key(&k) {
                mirror.replica.insert(k, v);
            }
        }
        for k in del {
            if mirror.replica.remove(&k).is_some() {
                change.deleted.push(k);
            }
        }
        if change.is_empty() && !first {
            return;
        }
        mirror
            .subscribers
            .retain(|_, tx| tx.send(change.clone()).is_ok());
    }
}
