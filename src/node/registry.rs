//! The `NodeRegistry` actor: which transport carries which node.
//!
//! It enforces one transport per node (refusing a second one at greeting line 1, as Perl
//! peers expect), refuses self-connects, breaks ties between simultaneous dials, dials nodes
//! that have messages waiting, and times out those that cannot be reached.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};

use super::{LinkTx, Shared};
use crate::net::transport;

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
}

/// Stop every link.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The registry actor; see the module docs.
pub struct NodeRegistry {
    shared: Arc<Shared>,
    /// node → (connection, dialled by us) of the handshake that may complete.
    handshakes: HashMap<String, (u64, bool)>,
    /// Connections that lost a tie-break: closed before they come up.
    cancelled: HashSet<u64>,
    up: HashMap<String, u64>,
    addresses: HashMap<String, Vec<String>>,
    connecting: HashSet<String>,
}

impl NodeRegistry {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        NodeRegistry {
            shared,
            handshakes: HashMap::new(),
            cancelled: HashSet::new(),
            up: HashMap::new(),
            addresses: HashMap::new(),
            connecting: HashSet::new(),
        }
    }
}

impl Actor for NodeRegistry {
    type Context = Context<Self>;
}

impl Handler<Dial> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Dial, _: &mut Context<Self>) {
        transport::dial(self.shared.clone(), msg.addr);
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
        if !self.handshakes.contains_key(&node) {
            for addr in &addrs {
                transport::dial(self.shared.clone(), addr.clone());
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
        if self.up.contains_key(&msg.node) {
            return Err("already connected, not connecting again".into());
        }
        if let Some(&(other, other_outgoing)) = self.handshakes.get(&msg.node) {
            if other != msg.conn {
                // Two handshakes with one node: keep the one dialled by the smaller node id,
                // which both ends compute alike.
                let dialler = |outgoing: bool| {
                    if outgoing {
                        self.shared.id.to_string()
                    } else {
                        msg.node.clone()
                    }
                };
                let (new, old) = (dialler(msg.outgoing), dialler(other_outgoing));
                if new >= old {
                    return Err("a connection to this node is already being set up".into());
                }
                self.cancelled.insert(other);
            }
        }
        self.handshakes.insert(msg.node, (msg.conn, msg.outgoing));
        Ok(())
    }
}

impl Handler<Up> for NodeRegistry {
    type Result = bool;
    fn handle(&mut self, msg: Up, _: &mut Context<Self>) -> bool {
        if self.cancelled.remove(&msg.conn) || self.up.contains_key(&msg.node) {
            return false;
        }
        if self
            .handshakes
            .get(&msg.node)
            .is_some_and(|(c, _)| *c == msg.conn)
        {
            self.handshakes.remove(&msg.node);
        }
        if let Some(addr) = msg.dialled {
            let addrs = self.addresses.entry(msg.node.clone()).or_default();
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        self.up.insert(msg.node.clone(), msg.conn);
        self.connecting.remove(&msg.node);
        tracing::info!(node = %self.shared.id, peer = %msg.node, dialect = %msg.link.dialect, "node up");
        self.shared.link_up(&msg.node, msg.link);
        true
    }
}

impl Handler<Down> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Down, _: &mut Context<Self>) {
        self.cancelled.remove(&msg.conn);
        let Some(node) = msg.node else { return };
        if self
            .handshakes
            .get(&node)
            .is_some_and(|(c, _)| *c == msg.conn)
        {
            self.handshakes.remove(&node);
        }
        if self.up.get(&node) == Some(&msg.conn) {
            self.up.remove(&node);
            tracing::info!(node = %self.shared.id, peer = %node, reason = %msg.reason, "node down");
            self.shared.link_failed(&node, msg.conn, &msg.reason);
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
