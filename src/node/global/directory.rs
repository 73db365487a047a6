//! The P2 global service (Perl 2.x `Global.pm`): a global node keeps every node's database
//! shard it was given (its slaves' by `g_slave`/`g_upd`, other globals' merged shards by
//! `g_set`/`g_upd`), tells the other globals each change to its slaves' part (`g_upd`),
//! answers lookups and queries from the union, tells monitors each change (`g_chg1`/`g_chg2`),
//! and keeps links to every other global node (family `'g`).

use super::{
    Db, Effect, GLOBALS, Global, LISTENERS, MAX_ENTRIES, addrs_value, change_msg, db_value,
    map_value, s, strings,
};
use crate::proto::node_request::{Family, GlobalRequest, tag};
use crate::proto::value::Value;

impl Global {
    /// Switches us to a global node: we become our own master, join `'g`, and tell every
    /// linked peer (exchanging databases with those that are global too).
    pub(super) fn become_global(&mut self) -> Vec<Effect> {
        tracing::info!(node = %self.own_id, "this node is now a global node");
        self.is_global = true;
        self.local_db
            .entry(GLOBALS.into())
            .or_default()
            .insert(self.own_id.clone(), Value::Null);
        let mut out = self.master_set(self.own_id.clone());
        let peers: Vec<String> = self.cluster_up.iter().cloned().collect();
        for peer in peers {
            out.push(Effect::Send(peer.clone(), vec![s(tag::G_GLOBAL)]));
            if self.globals.contains(&peer) {
                out.extend(self.global_connect(&peer));
            }
        }
        out
    }

    /// `g_global` from `from`. A global node exchanges databases with it; any other node only
    /// remembers it.
    pub(super) fn peer_is_global(&mut self, from: &str) -> Vec<Effect> {
        if !self.is_global {
            self.globals.insert(from.to_owned());
            return Vec::new();
        }
        // Usually nothing to clear, but a slave that became global starts afresh.
        let mut out = self.disconnect(from);
        self.globals.insert(from.to_owned());
        out.extend(self.global_connect(from));
        out
    }

    /// Puts a global peer into our `'g` and sends it our slaves' databases, merged.
    fn global_connect(&mut self, peer: &str) -> Vec<Effect> {
        let mut out = self.db_change(GLOBALS, Family::from([(peer.to_owned(), Value::Null)]), &[]);
        out.push(Effect::Send(
            peer.to_owned(),
            vec![s(tag::G_SET), db_value(&self.slaves_db())],
        ));
        out
    }

    /// Our slaves' databases merged (ours included): what we stand for toward other globals.
    fn slaves_db(&self) -> Db {
        let mut db = Db::new();
        for slave in &self.slaves {
            for (fam, entries) in self.dbs.get(slave).into_iter().flatten() {
                db.entry(fam.clone())
                    .or_default()
                    .extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        db
    }

    /// A change to our own database (Perl's `db_set`/`db_del`): kept, and sent to the master
    /// (on a global node: applied to our own shard, which tells the other globals).
    pub(super) fn db_change(&mut self, family: &str, set: Family, del: &[String]) -> Vec<Effect> {
        let entries = self.local_db.entry(family.to_owned()).or_default();
        for k in del {
            entries.remove(k);
        }
        entries.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        if entries.is_empty() {
            self.local_db.remove(family);
        }
        match self.master.clone() {
            Some(m) if m == self.own_id => {
                let own = m.clone();
                self.shard_change(&own, family, set, del)
            }
            // As Perl's `db_set` (`g_upd family {k: v}`) and `db_del` (`g_upd family undef
            // [k…]`) send them.
            Some(m) => {
                let mut msg = vec![s(tag::G_UPD), s(family)];
                match (set.is_empty(), del.is_empty()) {
                    (false, true) => msg.push(map_value(&set)),
                    (true, false) => {
                        msg.push(Value::Null);
                        msg.push(Value::Array(del.iter().map(|k| s(k)).collect()));
                    }
                    _ => msg = change_msg(tag::G_UPD, family, &set, del),
                }
                vec![Effect::Send(m, msg)]
            }
            None => Vec::new(),
        }
    }

    /// Applies a change to `node`'s shard of `family`; monitors hear of what it changed in
    /// the union, other globals of what it changed in our slaves' part.
    fn shard_change(
        &mut self,
        node: &str,
        family: &str,
        set: Family,
        del: &[String],
    ) -> Vec<Effect> {
        let db = self.dbs.entry(node.to_owned()).or_default();
        if db.len() >= MAX_ENTRIES && !db.contains_key(family) {
            return Vec::new();
        }
        let mut out = self.listener_effects(family, &set);
        // What the change does to the union (for monitors) and to our slaves' part (for the
        // other globals), key by key: the cost is the change's, not the family's.
        let keys: Vec<String> = set.keys().chain(del).cloned().collect();
        let watched = self.monitors.contains_key(family);
        let local = self.slaves.contains(node);
        let union_before = self.values_of(family, &keys, watched, false);
        let slaves_before = self.values_of(family, &keys, local, true);
        let db = self.dbs.entry(node.to_owned()).or_default();
        let entries = db.entry(family.to_owned()).or_default();
        for k in del {
            entries.remove(k);
        }
        for (k, v) in set {
            if entries.len() < MAX_ENTRIES || entries.contains_key(&k) {
                entries.insert(k, v);
            }
        }
        if entries.is_empty() {
            db.remove(family);
        }
        // The other globals first: each tells its own monitors in turn.
        if let Some((set, del)) = self.changed(family, &keys, slaves_before, true) {
            let msg = change_msg(tag::G_UPD, family, &set, &del);
            for g in self.globals.iter().filter(|g| **g != self.own_id) {
                out.push(Effect::Send(g.clone(), msg.clone()));
            }
        }
        if let Some((set, del)) = self.changed(family, &keys, union_before, false) {
            let msg = change_msg(tag::G_CHG2, family, &set, &del);
            for watcher in self.monitors.get(family).into_iter().flatten() {
                out.push(Effect::Send(watcher.clone(), msg.clone()));
            }
        }
        if family == GLOBALS {
            out.extend(self.keepalive_effect());
        }
        out
    }

    /// Replaces `node`'s whole shard (`g_slave db`, `g_set db`).
    fn shard_replace(&mut self, node: &str, db: Db) -> Vec<Effect> {
        let old = self.dbs.get(node).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for (family, entries) in &old {
            let gone: Vec<String> = match db.get(family) {
                Some(new) => entries
                    .keys()
                    .filter(|k| !new.contains_key(*k))
                    .cloned()
                    .collect(),
                None => entries.keys().cloned().collect(),
            };
            if !gone.is_empty() {
                out.extend(self.shard_change(node, family, Family::new(), &gone));
            }
        }
        for (family, entries) in db.into_iter().take(MAX_ENTRIES) {
            out.extend(self.shard_change(node, &family, entries, &[]));
        }
        out
    }

    /// The values of `keys` in `family` (in our slaves' part only, or in the union), if `wanted`.
    fn values_of(
        &self,
        family: &str,
        keys: &[String],
        wanted: bool,
        slaves: bool,
    ) -> Option<Vec<Option<Value>>> {
        wanted.then(|| {
            keys.iter()
                .map(|k| self.value_of(family, k, slaves))
                .collect()
        })
    }

    /// The value of `key` in `family` as the union of the shards holds it (as
    /// [`Global::family`] merges them: the last shard that has it).
    fn value_of(&self, family: &str, key: &str, slaves: bool) -> Option<Value> {
        self.dbs
            .iter()
            .filter(|(node, _)| !slaves || self.slaves.contains(*node))
            .filter_map(|(_, db)| db.get(family)?.get(key))
            .last()
            .cloned()
    }

    /// What became of `keys` since `before` (see [`Global::values_of`]): entries set and keys
    /// deleted, or `None` if nothing changed.
    fn changed(
        &self,
        family: &str,
        keys: &[String],
        before: Option<Vec<Option<Value>>>,
        slaves: bool,
    ) -> Option<(Family, Vec<String>)> {
        let (mut set, mut del) = (Family::new(), Vec::new());
        for (k, old) in keys.iter().zip(before?) {
            let new = self.value_of(family, k, slaves);
            match new {
                Some(v) if old.as_ref() != Some(&v) => {
                    set.insert(k.clone(), v);
                }
                None if old.is_some() && !del.contains(k) => del.push(k.clone()),
                _ => {}
            }
        }
        (!set.is_empty() || !del.is_empty()).then_some((set, del))
    }

    /// The registry keeps links to every other node in `'g`.
    fn keepalive_effect(&mut self) -> Vec<Effect> {
        let want: Vec<String> = self
            .family(GLOBALS)
            .into_keys()
            .filter(|n| *n != self.own_id)
            .collect();
        if want == self.keepalive {
            return Vec::new();
        }
        self.keepalive = want.clone();
        vec![Effect::KeepAlive(want)]
    }

    fn listener_effects(&self, family: &str, set: &Family) -> Vec<Effect> {
        if family != LISTENERS {
            return Vec::new();
        }
        set.iter()
            .filter(|(n, _)| **n != self.own_id)
            .filter_map(|(n, a)| Some(Effect::Addresses(n.clone(), strings(a)?)))
            .collect()
    }

    /// `g_slave db`: `from` makes us its global node.
    pub(super) fn slave(&mut self, from: &str, db: Db) -> Vec<Effect> {
        if self.slaves.len() < MAX_ENTRIES {
            self.slaves.insert(from.to_owned());
        }
        self.shard_replace(from, db)
    }

    /// A node left (or a slave turned global): its shard goes, and so do its `'g`/`'l`
    /// entries in our own database.
    pub(super) fn disconnect(&mut self, node: &str) -> Vec<Effect> {
        self.globals.remove(node);
        let mut out = Vec::new();
        for family in [GLOBALS, LISTENERS] {
            let ours = self
                .local_db
                .get(family)
                .is_some_and(|f| f.contains_key(node));
            if ours {
                out.extend(self.db_change(family, Family::new(), &[node.to_owned()]));
            }
        }
        out.extend(self.shard_replace(node, Db::new()));
        self.dbs.remove(node);
        self.slaves.remove(node);
        for watchers in self.monitors.values_mut() {
            watchers.remove(node);
        }
        self.monitors.retain(|_, w| !w.is_empty());
        out
    }

    /// The requests any node may ask a global node.
    pub(super) fn serve(&mut self, from: &str, request: GlobalRequest) -> Vec<Effect> {
        let reply = |msg: Vec<Value>| vec![Effect::Send(from.to_owned(), msg)];
        match request {
            GlobalRequest::Set { db } => {
                // A global node always sends its listeners; we mirror them in our own `'l`,
                // as Perl does, so that global nodes find each other.
                let binds = db.get(LISTENERS).and_then(|l| l.get(from)).cloned();
                let mut out = self.shard_replace(from, db);
                if let Some(binds) = binds {
                    let set = Family::from([(from.to_owned(), binds)]);
                    out.extend(self.db_change(LISTENERS, set, &[]));
                }
                out
            }
            GlobalRequest::Upd { family, set, del } => self.shard_change(from, &family, set, &del),
            GlobalRequest::Find { node } => {
                let addrs = self
                    .listeners_of(&node)
                    .map_or(Value::Null, |a| addrs_value(&a));
                reply(vec![s(tag::G_FOUND), Value::Str(node), addrs])
            }
            GlobalRequest::DbFamily { family, id } => {
                reply(vec![s(tag::G_REPLY), id, map_value(&self.family(&family))])
            }
            GlobalRequest::DbKeys { family, id } => {
                let keys = self.family(&family).into_keys().map(Value::Str).collect();
                reply(vec![s(tag::G_REPLY), id, Value::Array(keys)])
            }
            GlobalRequest::DbValues { family, id } => {
                let values = self.family(&family).into_values().collect();
                reply(vec![s(tag::G_REPLY), id, Value::Array(values)])
            }
            GlobalRequest::Monitor { family } => reply(self.monitor(from, family)),
            GlobalRequest::Unmonitor { family } => {
                self.unmonitor(from, &family);
                Vec::new()
            }
            // Handled by `Global::request`.
            GlobalRequest::Slave { .. }
            | GlobalRequest::Global
            | GlobalRequest::Found { .. }
            | GlobalRequest::Reply { .. }
            | GlobalRequest::Chg1 { .. }
            | GlobalRequest::Chg2 { .. } => Vec::new(),
        }
    }

    /// `g_mon1 family`: `from` hears of each change to `family`; the answer is its state now.
    fn monitor(&mut self, from: &str, fam: String) -> Vec<Value> {
        if self.monitors.len() < MAX_ENTRIES || self.monitors.contains_key(&fam) {
            self.monitors
                .entry(fam.clone())
                .or_default()
                .insert(from.to_owned());
        }
        let f = self.family(&fam);
        let state = if f.is_empty() {
            Value::Null
        } else {
            map_value(&f)
        };
        vec![s(tag::G_CHG1), Value::Str(fam), state]
    }

    /// `g_mon0 family`.
    fn unmonitor(&mut self, from: &str, fam: &str) {
        if let Some(w) = self.monitors.get_mut(fam) {
            w.remove(from);
            if w.is_empty() {
                self.monitors.remove(fam);
            }
        }
    }
}
