//! 1.x Perl's Global service (AEMP-NOTES §3.7): per pair of linked nodes, each spawns the
//! helper `AnyEvent::MP::Global::connect` on the other and tells it what it knows (`addr`,
//! `nodes`, `set`, `reg1`/`reg0`, `seedme1`/`seedme0`, `find`); answers come back through the
//! helper the asker spawned here. This makes a 1.x network a full mesh.

use std::sync::{Arc, Weak};

use super::{Effect, Global, MAX_ENTRIES, addrs_value, apply, s, strings};
use crate::node::{Node, Shared};
use crate::proto::dialect::Dialect;
use crate::proto::value::Value;

impl Global {
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
        // Our port groups, whole (p1b-chat: the chat server's `set` before `setup`).
        if let Some(set) = self.grp_set_msg() {
            out.push(Effect::Send(port.clone(), set));
        }
        if dialect == Dialect::P1b {
            out.push(Effect::Send(port.clone(), vec![s("setup")]));
        }
        // 1.1+: ask one peer (our mesh master) to keep us posted about new nodes; once we
        // have one, later peers are not asked (p1b-mesh-groups, conn2).
        let has_master = self
            .mesh_master
            .as_ref()
            .is_some_and(|m| m != node && self.helpers.contains_key(m));
        if dialect != Dialect::P0 && !has_master {
            self.mesh_master = Some(node.to_owned());
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
            "seedme1" => self.helper_seedme(node),
            "seedme0" => {
                self.seedme.remove(node);
                Vec::new()
            }
            // "setup" runs Perl-internal hooks (DataConn); anything else is not ours to judge.
            _ => {
                self.helper_group_message(dialect, tag, args);
                Vec::new()
            }
        }
    }

    /// 1.x `addr [addr…]`: where `node` listens; passed on to the nodes that asked for news.
    fn helper_addr(&mut self, node: &str, addrs: Vec<String>) -> Vec<Effect> {
        self.set_listeners(node, addrs.clone());
        let mut out = vec![Effect::Addresses(node.to_owned(), addrs.clone())];
        let news = Value::Map(vec![(node.to_owned(), addrs_value(&addrs))]);
        for slave in &self.seedme {
            if let (true, Some(port)) = (slave != node, self.helper_port(slave)) {
                out.push(Effect::Send(port, vec![s("nodes"), news.clone()]));
            }
        }
        out
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

    /// 1.x: `node` went down: forget it, choose another master if it was ours, and ask for
    /// fresh news of it (1.1+ ask their master, 1.0 asks every helper).
    pub(super) fn mesh_node_down(&mut self, node: &str) -> Vec<Effect> {
        self.listeners.remove(node);
        self.seedme.remove(node);
        self.helpers.remove(node);
        self.unreg_node(node);
        let mut out = Vec::new();
        if self.mesh_master.as_deref() == Some(node) {
            self.mesh_master = None;
            let next = self
                .helpers
                .iter()
                .filter(|(_, (_, d))| *d != Dialect::P0)
                .map(|(n, (p, _))| (n.clone(), p.clone()))
                .max();
            if let Some((n, port)) = next {
                self.mesh_master = Some(n);
                out.push(Effect::Send(port, vec![s("seedme1")]));
            }
        }
        for (n, (port, d)) in &self.helpers {
            if *d == Dialect::P0 || self.mesh_master.as_ref() == Some(n) {
                out.push(Effect::Send(port.clone(), vec![s("find"), s(node)]));
            }
        }
        out
    }

    /// 1.x: messages wait for `node`, whose address we do not know: ask our master's helper
    /// (every helper of a 1.0 peer), whose `nodes` answer makes us connect.
    pub(super) fn mesh_find(&self, node: &str) -> Vec<Effect> {
        self.helpers
            .iter()
            .filter(|(n, (_, d))| *d == Dialect::P0 || self.mesh_master.as_ref() == Some(*n))
            .map(|(_, (port, _))| Effect::Send(port.clone(), vec![s("find"), s(node)]))
            .collect()
    }
}

/// A link came up to a 1.x Perl peer: spawn our helper there, monitor it, announce our
/// listeners, as a 1.x node does.
pub(super) fn start_helper(shared: &Arc<Shared>, node: &str, dialect: Dialect) -> Vec<Effect> {
    let me = Node {
        shared: shared.clone(),
    };
    let port = me.spawn(
        node,
        super::CONNECT_INIT,
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
    shared.global().helper_started(node, port, dialect)
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
            let (_, name) = crate::node::split_port_id(&id);
            shared.kill_local(name, Vec::new());
        }
    })
    .detach();
    Ok(())
}
