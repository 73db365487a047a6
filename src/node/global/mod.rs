//! What Perl nodes expect of a peer's global services (AEMP-NOTES §3.7, §3.8), and how a node
//! finds the rest of its network.
//!
//! * 1.x (P0/P1, [`mesh1`]): on node-up each side spawns `AnyEvent::MP::Global::connect` on the
//!   other and talks to that helper port; every node learns every address and connects to it.
//! * 2.x (P2, and every link between Rust nodes): seeds become *global* nodes, which mesh with
//!   each other and hold the merged databases of their slaves ([`directory`]); every node binds
//!   to one master among its up seeds and resolves an unknown node id through it ([`member`]).
//! * Port groups ([`groups`]) live in both: the 1.x registry, and database families in P2.
//!
//! [`Global`] is the state alone: every input returns the [`Effect`]s to carry out, which
//! [`apply`] does after the lock is released (sending may fail a link, whose monitors come back
//! here).

mod database;
mod directory;
mod groups;
mod member;
mod mesh1;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Shared, kernel, registry};
use crate::proto::dialect::Dialect;
use crate::proto::node_request::{Database, Family, GlobalRequest};
use crate::proto::value::Value;
pub use database::DbChange;
use database::Mirror;
pub use groups::GroupChange;
pub(crate) use mesh1::connect_init;

/// The init function 1.x nodes spawn on every peer.
pub(crate) const CONNECT_INIT: &str = "AnyEvent::MP::Global::connect";
/// The database family of listener addresses (node id → `[addr…]`).
pub(crate) const LISTENERS: &str = "'l";
/// The database family of global nodes (node id → null).
pub(crate) const GLOBALS: &str = "'g";
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
    /// Keep links to exactly these nodes (the other global nodes), redialling with back-off.
    KeepAlive(Vec<String>),
    /// The network does not know this node (yet).
    NotFound(String),
}

/// A node's database, as `g_*` requests carry it.
type Db = Database;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Global {
    own_id: String,
    own_listeners: Vec<String>,
    // ---- 1.x (mesh1) ----
    /// node → its listeners, as it announced them (1.x `addr`) or as we reached it.
    listeners: HashMap<String, Vec<String>>,
    /// peer → (the helper port we spawned on it, its dialect).
    helpers: HashMap<String, (String, Dialect)>,
    /// Peers that asked us for address updates.
    seedme: BTreeSet<String>,
    /// The peer we asked for address updates.
    mesh_master: Option<String>,
    /// Port groups: ours, and those 1.x peers told us ([`groups`]).
    groups: groups::Groups,
    // ---- 2.x, every node (member) ----
    /// This node's own database (`'l` → our listeners, …).
    local_db: Db,
    /// Up peers that speak the P2 cluster protocol.
    cluster_up: BTreeSet<String>,
    /// Up peers that are our seeds.
    seeds_up: BTreeSet<String>,
    /// The global node we are bound to (ourselves on a global node).
    master: Option<String>,
    /// Requests for the master, sent again to each new one (Perl's `%GLOBAL_REQ`).
    requests: BTreeMap<String, Vec<Value>>,
    /// Our queries waiting for their `g_reply`.
    calls: HashMap<String, oneshot::Sender<Value>>,
    next_call: u64,
    /// Peers that told us they are global.
    globals: HashSet<String>,
    /// Families we monitor, mirrored from the master.
    mirrors: BTreeMap<String, Mirror>,
    // ---- 2.x, global nodes (directory) ----
    /// Whether we are a global node.
    is_global: bool,
    /// Each node's database as it sent it (`g_slave`, `g_set`, `g_upd`); ours too.
    dbs: HashMap<String, Db>,
    /// Nodes that made us their global node (`g_slave` with a database); ourselves too.
    slaves: HashSet<String>,
    /// family → nodes monitoring it.
    monitors: BTreeMap<String, BTreeSet<String>>,
    /// The other global nodes we last asked the registry to keep links to.
    keepalive: Vec<String>,
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

fn db_value(db: &Db) -> Value {
    Value::Map(db.iter().map(|(f, e)| (f.clone(), map_value(e))).collect())
}

fn change_msg(tag: &str, family: &str, set: &Family, del: &[String]) -> Vec<Value> {
    vec![
        s(tag),
        s(family),
        map_value(set),
        Value::Array(del.iter().map(|k| s(k)).collect()),
    ]
}

impl Global {
    /// Sets who we are once the listeners are bound; our listeners go into our database.
    pub fn start(&mut self, own_id: String, own_listeners: Vec<String>) {
        self.local_db
            .entry(LISTENERS.into())
            .or_default()
            .insert(own_id.clone(), addrs_value(&own_listeners));
        self.own_id = own_id;
        self.own_listeners = own_listeners;
    }

    /// Where `node` listens, as far as we know.
    pub fn listeners_of(&self, node: &str) -> Option<Vec<String>> {
        if node == self.own_id {
            return Some(self.own_listeners.clone());
        }
        let from_db = self
            .dbs
            .values()
            .find_map(|db| db.get(LISTENERS)?.get(node))
            .and_then(strings);
        from_db.or_else(|| self.listeners.get(node).cloned())
    }

    /// Every node whose listeners we know, with them.
    pub fn known_listeners(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = self
            .listeners
            .iter()
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        for (n, a) in self.family(LISTENERS) {
            if let Some(a) = strings(&a) {
                out.insert(n, a);
            }
        }
        out.insert(self.own_id.clone(), self.own_listeners.clone());
        out
    }

    /// A family as the union of every node's entries we hold.
    fn family(&self, family: &str) -> Family {
        let mut out = Family::new();
        for db in self.dbs.values() {
            if let Some(f) = db.get(family) {
                out.extend(f.iter().map(|(k, v)| (k.clone(), v.clone())));
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
    pub fn reached(&mut self, node: &str, addr: &str) {
        if !self.listeners.contains_key(node) {
            self.set_listeners(node, vec![addr.to_owned()]);
        }
    }

    /// A link came up: what the cluster protocol of its kind wants done.
    pub fn node_up(&mut self, node: &str, cluster: bool, seed: bool) -> Vec<Effect> {
        if !cluster {
            return Vec::new();
        }
        self.member_up(node, seed)
    }

    /// `node` went down: forget what it told us, and find what we used it for elsewhere.
    pub fn node_down(&mut self, node: &str) -> Vec<Effect> {
        let mut out = self.mesh_node_down(node);
        out.extend(self.member_down(node));
        if self.is_global {
            out.extend(self.disconnect(node));
        }
        out
    }

    /// A `g_*` request from `from` to our node port.
    pub fn request(&mut self, from: &str, request: GlobalRequest) -> Vec<Effect> {
        use GlobalRequest as R;
        match request {
            R::Found { node, addrs } => self.found(node, addrs),
            R::Reply { id, result } => {
                self.reply(id, result);
                Vec::new()
            }
            R::Chg1 { family, state } => {
                let whole = Some(state.unwrap_or_default());
                self.mirror_change(from, family, whole, Family::new(), Vec::new());
                Vec::new()
            }
            R::Chg2 { family, set, del } => {
                self.mirror_change(from, family, None, set, del);
                Vec::new()
            }
            R::Global => self.peer_is_global(from),
            R::Slave { db } => {
                let mut out = Vec::new();
                if !self.is_global {
                    out.extend(self.become_global());
                }
                if let Some(db) = db {
                    out.extend(self.slave(from, db));
                }
                out
            }
            other => self.serve(from, other),
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
        Effect::KeepAlive(nodes) => shared.registry.do_send(registry::KeepAlive { nodes }),
        Effect::NotFound(node) => shared.registry.do_send(registry::NotFound { node }),
    }
}

/// A `g_*` request from `from` to our node port: what answering it leads to, for the node port
/// to carry out.
pub(crate) fn request(shared: &Arc<Shared>, from: &str, request: GlobalRequest) -> Vec<Effect> {
    shared.global().request(from, request)
}

/// A link came up. Toward 1.x Perl peers we do what a 1.x node does (spawn our helper there);
/// toward P2 and Rust peers we take part in the P2 cluster protocol. `seed`: the node is one
/// of our seeds.
pub(crate) fn node_up(
    shared: &Arc<Shared>,
    node: &str,
    dialect: Dialect,
    rust: bool,
    dialled: Option<&str>,
    seed: bool,
) {
    if let Some(addr) = dialled {
        shared.global().reached(node, addr);
    }
    let cluster = rust || dialect == Dialect::P2;
    let mut effects = shared.global().node_up(node, cluster, seed);
    if !cluster {
        effects.extend(mesh1::start_helper(shared, node, dialect));
    }
    apply(shared, effects);
}

/// A link went down.
pub(crate) fn node_down(shared: &Arc<Shared>, node: &str) {
    let effects = shared.global().node_down(node);
    apply(shared, effects);
}

/// Messages wait for `node`, whose address the registry does not know: ask the network.
pub(crate) fn lookup(shared: &Arc<Shared>, node: &str) {
    let effects = shared.global().lookup(node);
    apply(shared, effects);
}

/// An up peer turned out to be one of our seeds.
pub(crate) fn seed_up(shared: &Arc<Shared>, node: &str) {
    let effects = shared.global().seed_up(node);
    apply(shared, effects);
}

/// One of our seed addresses turned out to be ourselves: as in Perl, we act as a global node.
pub(crate) fn seed_is_us(shared: &Arc<Shared>) {
    let effects = {
        let mut g = shared.global();
        if g.is_global {
            Vec::new()
        } else {
            g.become_global()
        }
    };
    apply(shared, effects);
}

/// Asks the master (or ourselves, on a global node) `[tag, family, id]` and waits for the
/// `g_reply`.
pub(crate) fn query(
    shared: &Arc<Shared>,
    tag: &'static str,
    family: &str,
) -> oneshot::Receiver<Value> {
    let (tx, rx) = oneshot::channel();
    let effects = shared.global().call(tag, family, tx);
    apply(shared, effects);
    rx
}
