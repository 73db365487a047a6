//! The `NodeRegistry` actor: which transport carries which node.
//!
//! It enforces one transport per node (refusing a second one at greeting line 1, as Perl
//! peers expect), refuses self-connects, breaks ties between simultaneous dials, dials nodes
//! that have messages waiting, and times out those that cannot be reached.
//!
//! In [`DialectMode::Auto`] it remembers which dialect the listener at
//! each address showed and dials again at once in that dialect when a handshake failed because
//! the listener speaks another one. It also runs the global services' node-up and node-down
//! hooks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};

use super::{DialectMode, LinkTx, Shared, global};
use crate::net::transport;
use crate::proto::dialect::Dialect;

/// Dial an address.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Dial {
    /// `host:port`.
    pub addr: String,
}

/// Messages wait for `node`: connect to it.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The node id.
    pub node: String,
}

/// Known addresses of a node.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Addresses {
    /// The node id.
    pub node: String,
    /// Its listener addresses.
    pub addrs: Vec<String>,
}

/// A transport read a peer's line 1: may it go on?
#[derive(actix::Message)]
#[rtype(result = "Result<(), String>")]
pub(crate) struct Line1 {
    pub conn: u64,
    pub node: String,
    pub outgoing: bool,
    /// The peer is a Rust node (`provider=aemp-rs-…`).
    pub rust: bool,
}

/// A transport finished its handshake: make it the node's link (false: close it).
#[derive(actix::Message)]
#[rtype(result = "bool")]
pub(crate) struct Up {
    pub conn: u64,
    pub node: String,
    pub link: LinkTx,
    pub dialled: Option<String>,
}

/// A transport ended.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Down {
    pub conn: u64,
    pub node: Option<String>,
    pub reason: String,
    /// The handshake failed because the peer's line 1 shows this other dialect.
    pub mismatch: Option<Dialect>,
}

/// Stop every link.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The registry actor; see the module docs.
pub struct NodeRegistry {
    shared: Arc<Shared>,
    /// Dials whose TCP connect is under way, with the node they are meant to reach.
    dials: HashMap<u64, String>,
    /// node → handshakes past line 1: (connection, dialled by us).
    handshakes: HashMap<String, Vec<(u64, bool)>>,
    up: HashMap<String, u64>,
    addresses: HashMap<String, Vec<String>>,
    connecting: HashSet<String>,
    /// Our dials until they come up or end: connection → (address, node, is a redial).
    outgoing: HashMap<u64, (String, Option<String>, bool)>,
    /// Connections whose peer's line 1 says it is a Rust node.
    rust: HashSet<u64>,
}

impl NodeRegistry {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        NodeRegistry {
            shared,
            dials: HashMap::new(),
            handshakes: HashMap::new(),
            up: HashMap::new(),
            addresses: HashMap::new(),
            connecting: HashSet::new(),
            outgoing: HashMap::new(),
            rust: HashSet::new(),
        }
    }

    fn dial(&mut self, addr: String, node: Option<String>, redial: bool) {
        let conn = self.shared.next_conn();
        self.shared.peer.count_connection(true);
        if let Some(node) = &node {
            self.dials.insert(conn, node.clone());
        }
        self.outgoing.insert(conn, (addr.clone(), node, redial));
        transport::dial(self.shared.clone(), addr, conn);
    }

    /// Whether we have a connection of our own to `node` under way (other than `except`).
    fn dialling(&self, node: &str, except: u64) -> bool {
        self.dials.iter().any(|(c, n)| *c != except && n == node)
            || self
                .handshakes
                .get(node)
                .is_some_and(|hs| hs.iter().any(|(c, out)| *c != except && *out))
    }

    fn forget(&mut self, conn: u64, node: &str) {
        self.dials.remove(&conn);
        if let Some(hs) = self.handshakes.get_mut(node) {
            hs.retain(|(c, _)| *c != conn);
            if hs.is_empty() {
                self.handshakes.remove(node);
            }
        }
    }
}

impl Actor for NodeRegistry {
    type Context = Context<Self>;
}

impl Handler<Dial> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Dial, _: &mut Context<Self>) {
        self.dial(msg.addr, None, false);
    }
}

impl Handler<Addresses> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Addresses, _: &mut Context<Self>) {
        self.addresses.insert(msg.node, msg.addrs);
    }
}

impl Handler<Connect> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        let node = msg.node;
        if self.up.contains_key(&node) || !self.connecting.insert(node.clone()) {
            return;
        }
        let addrs = self.addresses.get(&node).cloned().unwrap_or_default();
        if !self.handshakes.contains_key(&node) && !self.dialling(&node, u64::MAX) {
            for addr in &addrs {
                self.dial(addr.clone(), Some(node.clone()), false);
            }
        }
        let message = if addrs.is_empty() {
            "no known address"
        } else {
            "unable to connect"
        };
        ctx.run_later(self.shared.config.connect_timeout, move |act, _| {
            act.connecting.remove(&node);
            if !act.up.contains_key(&node) {
                act.shared.pending_failed(&node, message);
            }
        });
    }
}

impl Handler<Line1> for NodeRegistry {
    type Result = Result<(), String>;
    fn handle(&mut self, msg: Line1, _: &mut Context<Self>) -> Self::Result {
        let Line1 {
            conn,
            node,
            outgoing,
            rust,
        } = msg;
        // Perl's rule, which Perl peers rely on.
        if self.up.contains_key(&node) {
            return Err("already connected, not connecting again".into());
        }
        let others = self
            .handshakes
            .get(&node)
            .is_some_and(|hs| hs.iter().any(|(c, _)| *c != conn));
        if !rust || *self.shared.id < *node {
            // Perl peers: first come, first served. Between Rust nodes the one with the smaller
            // id arbitrates: it prefers the connection it dialled itself and never lets a second
            // one past line 1, so that it sends an auth line on one connection only and the
            // other end can complete no other.
            if rust && !outgoing && self.dialling(&node, conn) {
                return Err("crossing connections: keeping the one we dialled".into());
            }
            if others {
                return Err("a connection to this node is already being set up".into());
            }
        }
        self.dials.remove(&conn);
        if rust {
            self.rust.insert(conn);
        }
        self.handshakes
            .entry(node)
            .or_default()
            .push((conn, outgoing));
        Ok(())
    }
}

impl Handler<Up> for NodeRegistry {
    type Result = bool;
    fn handle(&mut self, msg: Up, _: &mut Context<Self>) -> bool {
        self.forget(msg.conn, &msg.node);
        self.outgoing.remove(&msg.conn);
        let rust = self.rust.remove(&msg.conn);
        if self.up.contains_key(&msg.node) {
            return false;
        }
        let dialect = msg.link.dialect;
        if let Some(addr) = &msg.dialled {
            self.shared.peer.saw_dialect(addr, dialect);
            let addrs = self.addresses.entry(msg.node.clone()).or_default();
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        self.up.insert(msg.node.clone(), msg.conn);
        self.connecting.remove(&msg.node);
        tracing::info!(node = %self.shared.id, peer = %msg.node, %dialect, rust, "node up");
        self.shared.link_up(&msg.node, msg.link);
        global::node_up(
            &self.shared,
            &msg.node,
            dialect,
            rust,
            msg.dialled.as_deref(),
        );
        true
    }
}

impl Handler<Down> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Down, _: &mut Context<Self>) {
        let target = self.dials.remove(&msg.conn);
        self.rust.remove(&msg.conn);
        if let (Some(theirs), Some((addr, _, redial))) =
            (msg.mismatch, self.outgoing.remove(&msg.conn))
        {
            // The listener speaks another dialect: in auto mode, speak it (once per dial).
            if matches!(self.shared.config.dialect, DialectMode::Auto { .. }) && !redial {
                tracing::info!(node = %self.shared.id, %addr, dialect = %theirs, "dialling again in the listener's dialect");
                self.shared.peer.saw_dialect(&addr, theirs);
                self.dial(addr, target.or_else(|| msg.node.clone()), true);
            }
        }
        self.outgoing.remove(&msg.conn);
        let Some(node) = msg.node else { return };
        self.forget(msg.conn, &node);
        if self.up.get(&node) == Some(&msg.conn) {
            self.up.remove(&node);
            tracing::info!(node = %self.shared.id, peer = %node, reason = %msg.reason, "node down");
            self.shared.link_failed(&node, msg.conn, &msg.reason);
            global::node_down(&self.shared, &node);
        }
    }
}

impl Handler<Shutdown> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        let nodes: Vec<(String, u64)> = self.up.drain().collect();
        for (node, conn) in nodes {
            self.shared.link_failed(&node, conn, "node shut down");
        }
        ctx.stop();
    }
}
