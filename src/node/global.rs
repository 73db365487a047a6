//! What Perl nodes expect of a peer's global services (AEMP-NOTES §3.7, §3.8).
//!
//! * 1.x (P0/P1): on node-up each side spawns `AnyEvent::MP::Global::connect` on the other and
//!   talks to that helper port (`addr`, `nodes`, `find`, `set`, `reg1`/`reg0`, `seedme1`/`seedme0`,
//!   `setup`); answers go back through the helper port *we* spawned on the asking node.
//! * 2.x (P2): nodes send `g_*` requests to the node port; we answer as a global node would,
//!   from what we know.
//!
//! [`Global`] is the state alone: every input returns the [`Effect`]s to carry out, which
//! [`apply`] does after the lock is released (sending may fail a link, whose monitors come back
//! here). The database is kept per source node and family, as Perl's global nodes keep it, so
//! that replication between globals and port groups can grow on it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Weak};

use super::{Node, Shared, kernel, registry};
use crate::proto::dialect::Dialect;
use crate::proto::node_request::{Database, Family, GlobalRequest, tag};
use crate::proto::value::Value;

/// The init function 1.x nodes spawn on every peer.
pub(crate) const CONNECT_INIT: &str = "AnyEvent::MP::Global::connect";
/// The database family of listener addresses (node id → `[addr…]`).
pub(crate) const LISTENERS: &str = "'l";
/// Entries kept per table; peers are trusted, but a runaway one must not exhaust memory.
const MAX_ENTRIES: usize = 65_536;

/// Something the global state wants done.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Send a message to a port id (a bare node id means its node port).
    Send(String, Vec<Value>),
    /// Tell the registry where a node listens.
    Addresses(String, Vec<String>),
    /// Connect to a node (1.x nodes mesh fully).
    Connect(String),
}

/// A node's database, as `g_*` requests carry it.
type Db = Database;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Global {
    own_id: String,
    own_listeners: Vec<String>,
    /// node → its listeners, as it announced them (1.x `addr`) or as we reached it.
    listeners: HashMap<String, Vec<String>>,
    /// 1.x: peer → (the helper port we spawned on it, its dialect).
    helpers: HashMap<String, (String, Dialect)>,
    /// 1.x: peers that asked us for address updates.
    seedme: BTreeSet<String>,
    /// 1.x: the peer we asked for address updates.
    master: Option<String>,
    /// Port groups: group → member port ids.
    groups: BTreeMap<String, BTreeSet<String>>,
    /// 2.x: each node's own database as it sent it (`g_slave`, `g_set`, `g_upd`).
    dbs: HashMap<String, Db>,
    /// 2.x: nodes that made us their global node (`g_slave` with a database).
    slaves: HashSet<String>,
    /// 2.x: peers that told us they are global.
    globals: HashSet<String>,
    /// 2.x: family → nodes monitoring it.
    monitors: BTreeMap<String, BTreeSet<String>>,
    /// 2.x: peers we told that we are global.
    announced: HashSet<String>,
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|a| a.as_str().map(|a| a.into_owned()))
        .collect()
}

fn addrs_value(addrs: &[String]) -> Value {
    Value::Array(addrs.iter().map(|a| s(a)).collect())
}

fn map_value(f: &Family) -> Value {
    Value::Map(f.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

impl Global {
    /// Sets who we are once the listeners are bound.
    pub fn start(&mut self, own_id: String, own_listeners: Vec<String>) {
        self.own_id = own_id;
        self.own_listeners = own_listeners;
    }

    /// The members of a group.
    pub fn group(&self, group: &str) -> Vec<String> {
        self.groups
            .get(group)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Where `node` listens, as far as we know.
    pub fn listeners_of(&self, node: &str) -> Option<Vec<String>> {
        if node == self.own_id {
            return Some(self.own_listeners.clone());
        }
        if let Some(a) = self.listeners.get(node) {
            return Some(a.clone());
        }
        self.dbs
            .values()
            .find_map(|db| db.get(LISTENERS)?.get(node))
            .and_then(strings)
    }

    /// A family as the union of every node's entries (ours and our links' listeners in `'l`).
    fn family(&self, family: &str) -> Family {
        let mut out = Family::new();
        for db in self.dbs.values() {
            if let Some(f) = db.get(family) {
                out.extend(f.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if family == LISTENERS {
            for (n, a) in &self.listeners {
                out.insert(n.clone(), addrs_value(a));
            }
            out.insert(self.own_id.clone(), addrs_value(&self.own_listeners));
        }
        out
    }

    /// Runs a change and tells the monitors of every family it touched (`g_chg2`).
    fn tracked(&mut self, change: impl FnOnce(&mut Self) -> Vec<Effect>) -> Vec<Effect> {
        let watched: Vec<String> = self.monitors.keys().cloned().collect();
        let before: Vec<Family> = watched.iter().map(|f| self.family(f)).collect();
        let mut out = change(self);
        for (fam, old) in watched.iter().zip(before) {
            let new = self.family(fam);
            let set: Family = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let del: Vec<Value> = old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .map(|k| s(k))
                .collect();
            if set.is_empty() && del.is_empty() {
                continue;
            }
            for node in self.monitors.get(fam).into_iter().flatten() {
                out.push(Effect::Send(
                    node.clone(),
                    vec![
                        s(tag::G_CHG2),
                        s(fam),
                        map_value(&set),
                        Value::Array(del.clone()),
                    ],
                ));
            }
        }
        out
    }

    fn set_listeners(&mut self, node: &str, addrs: Vec<String>) {
        if self.listeners.len() < MAX_ENTRIES || self.listeners.contains_key(node) {
            self.listeners.insert(node.to_owned(), addrs);
        }
    }

    /// We reached `node` by dialling `addr`: it listens there (unless it told us better).
    pub fn reached(&mut self, node: &str, addr: &str) -> Vec<Effect> {
        if self.listeners.contains_key(node) {
            return Vec::new();
        }
        self.tracked(|g| {
            g.set_listeners(node, vec![addr.to_owned()]);
            Vec::new()
        })
    }

    // ---- 1.x ----------------------------------------------------------------------------

    /// We spawned our helper `port` on the 1.x peer `node`: introduce ourselves as Perl does.
    pub fn helper_started(&mut self, node: &str, port: String, dialect: Dialect) -> Vec<Effect> {
        let mut out = vec![Effect::Send(
            port.clone(),
            vec![s("addr"), addrs_value(&self.own_listeners)],
        )];
        let known: Vec<(String, Value)> = self
            .listeners
            .iter()
            .filter(|(n, _)| *n != node)
            .map(|(n, a)| (n.clone(), addrs_value(a)))
            .collect();
        if !known.is_empty() {
            out.push(Effect::Send(
                port.clone(),
                vec![s("nodes"), Value::Map(known)],
            ));
        }
        if dialect == Dialect::P1b {
            out.push(Effect::Send(port.clone(), vec![s("setup")]));
        }
        // 1.1+: ask one peer (our "master") to keep us posted about new nodes.
        let has_master = self
            .master
            .as_ref()
            .is_some_and(|m| self.helpers.contains_key(m));
        if dialect != Dialect::P0 && !has_master {
            self.master = Some(node.to_owned());
            out.push(Effect::Send(port.clone(), vec![s("seedme1")]));
        }
        self.helpers.insert(node.to_owned(), (port, dialect));
        out
    }

    /// Our helper port on `node` died: its groups go with it.
    pub fn helper_died(&mut self, node: &str, port: &str) {
        if self.helpers.get(node).is_some_and(|(p, _)| p == port) {
            self.helpers.remove(node);
            self.unreg_node(node);
        }
    }

    fn helper_port(&self, node: &str) -> Option<String> {
        self.helpers.get(node).map(|(p, _)| p.clone())
    }

    fn unreg_node(&mut self, node: &str) {
        let prefix = format!("{node}#");
        for members in self.groups.values_mut() {
            members.retain(|p| p != node && !p.starts_with(&prefix));
        }
        self.groups.retain(|_, m| !m.is_empty());
    }

    fn group_change(&mut self, group: &str, port: &str, add: bool) {
        if add {
            if self.groups.len() < MAX_ENTRIES || self.groups.contains_key(group) {
                let members = self.groups.entry(group.to_owned()).or_default();
                if members.len() < MAX_ENTRIES {
                    members.insert(port.to_owned());
                }
            }
        } else if let Some(m) = self.groups.get_mut(group) {
            m.remove(port);
            if m.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// A message to the helper port `node` spawned on us.
    pub fn helper_message(
        &mut self,
        node: &str,
        dialect: Dialect,
        tag: &str,
        args: &[Value],
    ) -> Vec<Effect> {
        let arg = |i: usize| args.get(i);
        let text = |i: usize| arg(i).and_then(Value::as_str).map(|t| t.into_owned());
        match tag {
            "addr" => match arg(0).and_then(strings) {
                Some(addrs) => self.helper_addr(node, addrs),
                None => Vec::new(),
            },
            "nodes" => match arg(0).and_then(Value::as_map) {
                Some(map) => self.helper_nodes(map),
                None => Vec::new(),
            },
            "find" => match text(0) {
                Some(other) => self.helper_find(node, other),
                None => Vec::new(),
            },
            "set" => {
                if let Some(map) = arg(0).and_then(Value::as_map) {
                    for (group, ports) in map {
                        for port in strings(ports).unwrap_or_default() {
                            self.group_change(group, &port, true);
                        }
                    }
                }
                Vec::new()
            }
            "reg1" | "reg0" => {
                // 1.0 sent (port, group), 1.1+ (group, port).
                let (group, port) = match dialect {
                    Dialect::P0 => (text(1), text(0)),
                    _ => (text(0), text(1)),
                };
                if let (Some(group), Some(port)) = (group, port) {
                    self.group_change(&group, &port, tag == "reg1");
                }
                Vec::new()
            }
            "seedme1" => self.helper_seedme(node),
            "seedme0" => {
                self.seedme.remove(node);
                Vec::new()
            }
            // "setup" runs Perl-internal hooks (DataConn); anything else is not ours to judge.
            _ => Vec::new(),
        }
    }

    /// 1.x `addr [addr…]`: where `node` listens; passed on to the nodes that asked for news.
    fn helper_addr(&mut self, node: &str, addrs: Vec<String>) -> Vec<Effect> {
        self.tracked(|g| {
            g.set_listeners(node, addrs.clone());
            let mut out = vec![Effect::Addresses(node.to_owned(), addrs.clone())];
            let news = Value::Map(vec![(node.to_owned(), addrs_value(&addrs))]);
            for slave in &g.seedme {
                if let (true, Some(port)) = (slave != node, g.helper_port(slave)) {
                    out.push(Effect::Send(port, vec![s("nodes"), news.clone()]));
                }
            }
            out
        })
    }

    /// 1.x `nodes {id: [addr…]}`: 1.x nodes mesh fully, so we connect to each.
    fn helper_nodes(&self, map: &[(String, Value)]) -> Vec<Effect> {
        let mut out = Vec::new();
        for (id, addrs) in map.iter().take(MAX_ENTRIES) {
            if *id == self.own_id || id.is_empty() {
                continue;
            }
            if let Some(addrs) = strings(addrs).filter(|a| !a.is_empty()) {
                out.push(Effect::Addresses(id.clone(), addrs));
                out.push(Effect::Connect(id.clone()));
            }
        }
        out
    }

    /// 1.x `find node`: answered through our helper on the asker, if we know where `other` is.
    fn helper_find(&self, node: &str, other: String) -> Vec<Effect> {
        let (Some(port), Some(addrs)) = (self.helper_port(node), self.listeners_of(&other)) else {
            return Vec::new();
        };
        vec![Effect::Send(
            port,
            vec![s("nodes"), Value::Map(vec![(other, addrs_value(&addrs))])],
        )]
    }

    /// 1.x `seedme1`: `node` wants news of new nodes; it gets what we know now.
    fn helper_seedme(&mut self, node: &str) -> Vec<Effect> {
        if self.seedme.len() < MAX_ENTRIES {
            self.seedme.insert(node.to_owned());
        }
        let known: Vec<(String, Value)> = self
            .listeners
            .iter()
            .map(|(n, a)| (n.clone(), addrs_value(a)))
            .collect();
        match self.helper_port(node) {
            Some(port) if !known.is_empty() => {
                vec![Effect::Send(port, vec![s("nodes"), Value::Map(known)])]
            }
            _ => Vec::new(),
        }
    }

    /// The helper port `node` spawned on us is gone (its link died).
    pub fn helper_gone(&mut self, node: &str) {
        self.seedme.remove(node);
    }

    /// `node` went down: forget what it told us, and (1.x) ask for fresh news of it.
    pub fn node_down(&mut self, node: &str) -> Vec<Effect> {
        self.tracked(|g| {
            g.listeners.remove(node);
            g.dbs.remove(node);
            g.slaves.remove(node);
            g.globals.remove(node);
            g.announced.remove(node);
            g.seedme.remove(node);
            for watchers in g.monitors.values_mut() {
                watchers.remove(node);
            }
            g.monitors.retain(|_, w| !w.is_empty());
            g.helpers.remove(node);
            g.unreg_node(node);
            let mut out = Vec::new();
            if g.master.as_deref() == Some(node) {
                g.master = None;
                let next = g
                    .helpers
                    .iter()
                    .filter(|(_, (_, d))| *d != Dialect::P0)
                    .map(|(n, (p, _))| (n.clone(), p.clone()))
                    .max();
                if let Some((n, port)) = next {
                    g.master = Some(n);
                    out.push(Effect::Send(port, vec![s("seedme1")]));
                }
            }
            // 1.1+ ask their master, 1.0 asks every helper.
            for (n, (port, d)) in &g.helpers {
                if *d == Dialect::P0 || g.master.as_ref() == Some(n) {
                    out.push(Effect::Send(port.clone(), vec![s("find"), s(node)]));
                }
            }
            out
        })
    }

    // ---- 2.x ----------------------------------------------------------------------------

    fn own_db(&self) -> Value {
        let mut db: Db = Db::new();
        for slave in &self.slaves {
            for (fam, entries) in self.dbs.get(slave).into_iter().flatten() {
                db.entry(fam.clone())
                    .or_default()
                    .extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        db.entry(LISTENERS.into())
            .or_default()
            .insert(self.own_id.clone(), addrs_value(&self.own_listeners));
        Value::Map(db.iter().map(|(f, e)| (f.clone(), map_value(e))).collect())
    }

    fn listener_effects(&self, db: &Db) -> Vec<Effect> {
        db.get(LISTENERS)
            .into_iter()
            .flatten()
            .filter(|(n, _)| **n != self.own_id)
            .filter_map(|(n, a)| Some(Effect::Addresses(n.clone(), strings(a)?)))
            .collect()
    }

    /// A `g_*` request from `from` to our node port.
    pub fn request(&mut self, from: &str, request: GlobalRequest) -> Vec<Effect> {
        let reply = |msg: Vec<Value>| vec![Effect::Send(from.to_owned(), msg)];
        match request {
            GlobalRequest::Slave { db } => self.slave(from, db),
            GlobalRequest::Set { db } => self.set_db(from, db),
            GlobalRequest::Upd { family, set, del } => self.update(from, family, set, del),
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
            GlobalRequest::Global => {
                self.globals.insert(from.to_owned());
                reply(vec![s(tag::G_SET), self.own_db()])
            }
            // Answers to requests we never make.
            GlobalRequest::Found { .. }
            | GlobalRequest::Reply { .. }
            | GlobalRequest::Chg1 { .. }
            | GlobalRequest::Chg2 { .. } => Vec::new(),
        }
    }

    /// `g_slave [db]`: a first one asks us to become global, and we act as one at once; with a
    /// database, the sender makes us its global node.
    fn slave(&mut self, from: &str, db: Option<Db>) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.announced.insert(from.to_owned()) {
            out.push(Effect::Send(from.to_owned(), vec![s(tag::G_GLOBAL)]));
        }
        if let Some(db) = db {
            out.extend(self.listener_effects(&db));
            out.extend(self.tracked(|g| {
                g.slaves.insert(from.to_owned());
                g.dbs.insert(from.to_owned(), db);
                Vec::new()
            }));
        }
        out
    }

    /// `g_set db`: another global node's database replaces what it told us before.
    fn set_db(&mut self, from: &str, db: Db) -> Vec<Effect> {
        let mut out = self.listener_effects(&db);
        out.extend(self.tracked(|g| {
            g.dbs.insert(from.to_owned(), db);
            Vec::new()
        }));
        out
    }

    /// `g_upd family set del`: a change to one family of the sender's database.
    fn update(&mut self, from: &str, fam: String, set: Family, del: Vec<String>) -> Vec<Effect> {
        let mut out = Vec::new();
        if fam == LISTENERS {
            for (n, a) in &set {
                if let (true, Some(a)) = (*n != self.own_id, strings(a)) {
                    out.push(Effect::Addresses(n.clone(), a));
                }
            }
        }
        out.extend(self.tracked(|g| {
            let db = g.dbs.entry(from.to_owned()).or_default();
            if db.len() >= MAX_ENTRIES && !db.contains_key(&fam) {
                return Vec::new();
            }
            let entries = db.entry(fam.clone()).or_default();
            for k in &del {
                entries.remove(k);
            }
            for (k, v) in set {
                if entries.len() < MAX_ENTRIES || entries.contains_key(&k) {
                    entries.insert(k, v);
                }
            }
            if entries.is_empty() {
                db.remove(&fam);
            }
            Vec::new()
        }));
        out
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

/// Carries out effects, with no lock held (the node port serves the messages among them to our
/// own node port, see `kernel::dispatch`).
pub(crate) fn apply(shared: &Arc<Shared>, effects: Vec<Effect>) {
    kernel::dispatch(shared, &shared.id, effects);
}

/// Carries out one effect; `kernel::dispatch` sends the messages itself and calls this for the
/// others.
pub(crate) fn apply_one(shared: &Arc<Shared>, effect: Effect) {
    match effect {
        send @ Effect::Send(..) => apply(shared, vec![send]),
        Effect::Addresses(node, addrs) => {
            if node != *shared.id {
                shared.registry.do_send(registry::Addresses { node, addrs });
            }
        }
        Effect::Connect(node) => {
            let idle = shared.links.dialect(&node).is_none() && !shared.links.is_pending(&node);
            if node != *shared.id && idle {
                shared.registry.do_send(registry::Connect { node });
            }
        }
    }
}

/// A `g_*` request from `from` to our node port: what answering it leads to, for the node port
/// to carry out.
pub(crate) fn request(shared: &Arc<Shared>, from: &str, request: GlobalRequest) -> Vec<Effect> {
    shared.global().request(from, request)
}

/// A link came up. Toward 1.x Perl peers we do what a 1.x node does: spawn our helper there,
/// monitor it, announce our listeners.
pub(crate) fn node_up(
    shared: &Arc<Shared>,
    node: &str,
    dialect: Dialect,
    rust: bool,
    dialled: Option<&str>,
) {
    let mut effects = match dialled {
        Some(addr) => shared.global().reached(node, addr),
        None => Vec::new(),
    };
    if !rust && dialect != Dialect::P2 {
        let me = Node {
            shared: shared.clone(),
        };
        let port = me.spawn(
            node,
            CONNECT_INIT,
            vec![Value::Int(0), Value::Str(shared.id.to_string())],
        );
        let weak = Arc::downgrade(shared);
        let (n, p) = (node.to_owned(), port.clone());
        me.mon(&port, move |_| {
            if let Some(shared) = weak.upgrade() {
                shared.global().helper_died(&n, &p);
            }
        })
        .detach();
        let more = shared.global().helper_started(node, port, dialect);
        effects.extend(more);
    }
    apply(shared, effects);
}

/// A link went down.
pub(crate) fn node_down(shared: &Arc<Shared>, node: &str) {
    let effects = shared.global().node_down(node);
    apply(shared, effects);
}

/// The helper port a 1.x peer spawns on us: `connect(version, its node id)`.
pub(crate) fn connect_init(node: &Node, port_id: String, args: Vec<Value>) -> Result<(), String> {
    let version = args.first().and_then(Value::as_f64).map(f64::trunc);
    if version != Some(0.0) {
        return Err(format!(
            "node version mismatch (requested {}; we have 0)",
            args.first().and_then(Value::as_str).unwrap_or_default()
        ));
    }
    let Some(peer) = args.get(1).and_then(Value::as_str).map(|p| p.into_owned()) else {
        return Err("Global::connect without a node id".into());
    };
    let from = peer.clone();
    let id = node
        .rcv()
        .default(move |cx, msg| {
            // Garbage must not kill the helper: Perl ignores what it does not understand.
            let args = msg.args().unwrap_or_default();
            if let Some((tag, rest)) = args.split_first() {
                let tag = tag.as_str().unwrap_or_default();
                let shared = &cx.node.shared;
                let dialect = shared.links.dialect(&from).unwrap_or(Dialect::P1b);
                let effects = shared.global().helper_message(&from, dialect, &tag, rest);
                apply(shared, effects);
            }
            Ok(())
        })
        .start_named(&port_id)
        .map_err(|e| e.to_string())?;
    // The helper lives as long as the link to its node, as in Perl.
    let weak: Weak<Shared> = Arc::downgrade(&node.shared);
    let watched = peer.clone();
    node.mon(&watched, move |_| {
        if let Some(shared) = weak.upgrade() {
            shared.global().helper_gone(&peer);
            let (_, name) = super::split_port_id(&id);
            shared.kill_local(name, Vec::new());
        }
    })
    .detach();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::node_request::NodeRequest;

    fn g() -> Global {
        let mut g = Global::default();
        g.start("me".into(), vec!["127.0.0.1:1".into()]);
        g
    }

    /// A `g_*` request as it arrives at the node port: parsed from `[tag, args…]`, then
    /// answered; `None` if it parses as no `g_*` request.
    fn wire(g: &mut Global, from: &str, tag: &str, args: &[Value]) -> Option<Vec<Effect>> {
        let mut packet = vec![s(tag)];
        packet.extend_from_slice(args);
        match NodeRequest::parse(Dialect::P2, packet).unwrap() {
            NodeRequest::Global(request) => Some(g.request(from, request)),
            _ => None,
        }
    }

    fn arr(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|i| s(i)).collect())
    }

    #[test]
    fn node_up_introduces_us_and_picks_a_master() {
        let mut g = g();
        let out = g.helper_started("perl", "perl#h.1".into(), Dialect::P1b);
        assert_eq!(
            out,
            vec![
                Effect::Send("perl#h.1".into(), vec![s("addr"), arr(&["127.0.0.1:1"])]),
                Effect::Send("perl#h.1".into(), vec![s("setup")]),
                Effect::Send("perl#h.1".into(), vec![s("seedme1")]),
            ]
        );
        // A P0 peer gets neither setup nor seedme1, but hears of the nodes we know.
        g.helper_message("perl", Dialect::P1b, "addr", &[arr(&["10.0.0.1:4040"])]);
        let out = g.helper_started("old", "old#h.2".into(), Dialect::P0);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1],
            Effect::Send(
                "old#h.2".into(),
                vec![
                    s("nodes"),
                    Value::Map(vec![("perl".into(), arr(&["10.0.0.1:4040"]))])
                ]
            )
        );
    }

    #[test]
    fn find_answers_through_our_helper_on_the_asker() {
        let mut g = g();
        g.helper_started("a", "a#h".into(), Dialect::P1a);
        g.helper_message("b", Dialect::P1a, "addr", &[arr(&["10.0.0.2:1"])]);
        let out = g.helper_message("a", Dialect::P1a, "find", &[s("b")]);
        assert_eq!(
            out,
            vec![Effect::Send(
                "a#h".into(),
                vec![
                    s("nodes"),
                    Value::Map(vec![("b".into(), arr(&["10.0.0.2:1"]))])
                ]
            )]
        );
        assert!(
            g.helper_message("a", Dialect::P1a, "find", &[s("nobody")])
                .is_empty()
        );
    }

    #[test]
    fn groups_follow_the_dialects_argument_order_and_node_death() {
        let mut g = g();
        g.helper_message("a", Dialect::P0, "reg1", &[s("a#p"), s("grp")]);
        g.helper_message("b", Dialect::P1b, "reg1", &[s("grp"), s("b#q")]);
        g.helper_message(
            "c",
            Dialect::P1b,
            "set",
            &[Value::Map(vec![("grp".into(), arr(&["c#r"]))])],
        );
        assert_eq!(g.group("grp"), vec!["a#p", "b#q", "c#r"]);
        g.helper_message("b", Dialect::P1b, "reg0", &[s("grp"), s("b#q")]);
        g.node_down("a");
        assert_eq!(g.group("grp"), vec!["c#r"]);
    }

    #[test]
    fn nodes_messages_make_us_connect_but_never_to_ourselves() {
        let mut g = g();
        let out = g.helper_message(
            "a",
            Dialect::P1b,
            "nodes",
            &[Value::Map(vec![
                ("me".into(), arr(&["127.0.0.1:1"])),
                ("z".into(), arr(&["10.0.0.9:5"])),
            ])],
        );
        assert_eq!(
            out,
            vec![
                Effect::Addresses("z".into(), vec!["10.0.0.9:5".into()]),
                Effect::Connect("z".into())
            ]
        );
    }

    #[test]
    fn p2_requests_are_answered_as_a_global_node_would() {
        let mut g = g();
        let db = Value::Map(vec![(
            "'l".into(),
            Value::Map(vec![("slave".into(), arr(&["10.0.0.3:7"]))]),
        )]);
        let out = wire(&mut g, "slave", "g_slave", &[]).unwrap();
        assert_eq!(out, vec![Effect::Send("slave".into(), vec![s("g_global")])]);
        let out = wire(&mut g, "slave", "g_slave", &[db]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Addresses("slave".into(), vec!["10.0.0.3:7".into()])]
        );
        let out = wire(&mut g, "slave", "g_find", &[s("me")]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Send(
                "slave".into(),
                vec![s("g_found"), s("me"), arr(&["127.0.0.1:1"])]
            )]
        );
        let out = wire(&mut g, "slave", "g_find", &[s("ghost")]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Send(
                "slave".into(),
                vec![s("g_found"), s("ghost"), Value::Null]
            )]
        );
        let out = wire(&mut g, "slave", "g_db_keys", &[s("'l"), s("q1")]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Send(
                "slave".into(),
                vec![s("g_reply"), s("q1"), arr(&["me", "slave"])]
            )]
        );
        assert!(wire(&mut g, "x", "g_nonsense", &[]).is_none());
    }

    #[test]
    fn p2_family_monitors_get_the_state_then_each_change() {
        let mut g = g();
        let out = wire(&mut g, "watcher", "g_mon1", &[s("svc")]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Send(
                "watcher".into(),
                vec![s("g_chg1"), s("svc"), Value::Null]
            )]
        );
        let out = wire(
            &mut g,
            "slave",
            "g_upd",
            &[
                s("svc"),
                Value::Map(vec![("k".into(), Value::Int(1))]),
                Value::Null,
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            vec![Effect::Send(
                "watcher".into(),
                vec![
                    s("g_chg2"),
                    s("svc"),
                    Value::Map(vec![("k".into(), Value::Int(1))]),
                    Value::Array(vec![])
                ]
            )]
        );
        let out = g.node_down("slave");
        assert_eq!(
            out,
            vec![Effect::Send(
                "watcher".into(),
                vec![
                    s("g_chg2"),
                    s("svc"),
                    Value::Map(vec![]),
                    Value::Array(vec![s("k")])
                ]
            )]
        );
    }

    #[test]
    fn p2_globals_exchange_databases_and_queries_see_them() {
        let mut g = g();
        let own_db = Value::Map(vec![(
            "'l".into(),
            Value::Map(vec![("me".into(), arr(&["127.0.0.1:1"]))]),
        )]);
        let out = wire(&mut g, "g2", "g_global", &[]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Send("g2".into(), vec![s("g_set"), own_db])]
        );
        let theirs = Value::Map(vec![
            (
                "'l".into(),
                Value::Map(vec![("g2".into(), arr(&["10.0.0.2:2"]))]),
            ),
            ("svc".into(), Value::Map(vec![("k".into(), Value::Int(7))])),
        ]);
        let out = wire(&mut g, "g2", "g_set", &[theirs]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Addresses("g2".into(), vec!["10.0.0.2:2".into()])]
        );
        let out = wire(&mut g, "s", "g_db_family", &[s("svc"), s("b")]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Send(
                "s".into(),
                vec![
                    s("g_reply"),
                    s("b"),
                    Value::Map(vec![("k".into(), Value::Int(7))])
                ]
            )]
        );
        let out = wire(&mut g, "s", "g_db_values", &[s("svc"), s("c")]).unwrap();
        assert_eq!(
            out,
            vec![Effect::Send(
                "s".into(),
                vec![s("g_reply"), s("c"), Value::Array(vec![Value::Int(7)])]
            )]
        );
        // After g_mon0 a change is told to nobody.
        wire(&mut g, "s", "g_mon1", &[s("svc")]).unwrap();
        assert!(wire(&mut g, "s", "g_mon0", &[s("svc")]).unwrap().is_empty());
        let set = Value::Map(vec![("k".into(), Value::Int(8))]);
        assert!(
            wire(&mut g, "g2", "g_upd", &[s("svc"), set, Value::Null])
                .unwrap()
                .is_empty()
        );
        // Answers to requests we never make change nothing.
        let found = [s("n"), arr(&["10.0.0.9:9"])];
        assert!(wire(&mut g, "g2", "g_found", &found).unwrap().is_empty());
        assert_eq!(g.listeners_of("n"), None);
    }
}
