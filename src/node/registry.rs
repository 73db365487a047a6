//! The `NodeRegistry` actor: which transport carries which node.
//!
//! It enforces one transport per node (refusing a second one at greeting line 1, as Perl
//! peers expect, unless the node links to us again long after the first came up: then it was
//! restarted, and its new link replaces the old one), refuses self-connects, breaks ties
//! between simultaneous dials, dials nodes that have messages waiting (again every
//! `connect_interval`), and times out those that cannot be reached.
//!
//! In [`DialectMode::Auto`] it remembers which dialect the listener at
//! each address showed and dials again at once in that dialect when a handshake failed because
//! the listener speaks another one (once per dial; that failure is not a [`LinkError`], and
//! messages waiting for the node wait for the redial). It also runs the global services'
//! node-up and node-down hooks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, SpawnHandle};
use rand::RngExt as _;

use super::inbound::Inbound;
use super::seeds::Seeds;
use super::{DialectMode, DownReason, LinkError, Shared, global};
use crate::net::contract::{Down, Line1, PacketSink, Refusal, Up};
use crate::net::transport::{self, DialAs};
use crate::net::{FailureCause, LinkEnd};
use crate::proto::dialect::Dialect;

/// The first pause before asking the network again for a node it did not know; it doubles up to
/// `connect_interval` (a node that was just started registers with its master in moments).
const LOOKUP_RETRY: Duration = Duration::from_millis(100);

/// How long a node's own handshake with us may run before we dial it ourselves anyway.
const PEER_HANDSHAKE_GRACE: Duration = Duration::from_secs(1);

/// A link younger than this is not replaced by another connection from the same node: that one
/// is a crossing dial (refused at line 1, as Perl does). A node that links to us again later
/// was restarted, or saw the old link die before we did (a cut path, a peer that stopped and
/// came back): its new, authenticated link replaces the old one, which would otherwise keep it
/// out until our side of the old link failed.
const REPLACE_AFTER: Duration = Duration::from_secs(1);

/// Dial an address.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Dial {
    /// `host:port`.
    pub addr: String,
}

/// Messages wait for `node`: connect to it.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Connect {
    /// The node id.
    pub node: String,
}

/// Known addresses of a node.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Addresses {
    /// The node id.
    pub node: String,
    /// Its listener addresses.
    pub addrs: Vec<String>,
}

/// Keep links to exactly these nodes (the other global nodes), redialling with back-off.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct KeepAlive {
    /// The node ids.
    pub nodes: Vec<String>,
}

/// The network does not know a node (yet): ask again soon while messages wait for it.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct NotFound {
    /// The node id.
    pub node: String,
}

/// Stop every link.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;

/// The link a node is up on.
struct UpLink {
    conn: u64,
    since: Instant,
}

impl UpLink {
    /// Whether a new connection from the node may replace this link (see [`REPLACE_AFTER`]).
    fn replaceable(&self) -> bool {
        self.since.elapsed() >= REPLACE_AFTER
    }
}

/// The registry actor; see the module docs.
pub(crate) struct NodeRegistry {
    shared: Arc<Shared>,
    /// Dials whose TCP connect is under way, with the node they are meant to reach.
    dials: HashMap<u64, String>,
    /// node → handshakes past line 1: (connection, dialled by us).
    handshakes: HashMap<String, Vec<(u64, bool)>>,
    up: HashMap<String, UpLink>,
    addresses: HashMap<String, Vec<String>>,
    /// Nodes that messages wait for → the id of that connect attempt (its timers look it up,
    /// so that a timer of an earlier attempt does nothing).
    connecting: HashMap<String, u64>,
    /// Our dials until they come up or end: connection → (address, node, is a redial).
    outgoing: HashMap<u64, (String, Option<String>, bool)>,
    /// Connections whose peer's line 1 says it is a Rust node.
    rust: HashSet<u64>,
    /// Address → the dialect its listener last showed (for dialling in `DialectMode::Auto`).
    dialects: HashMap<String, Dialect>,
    /// Our seeds: kept linked for as long as we run.
    seeds: Seeds,
    /// Nodes the network did not know when asked, with the pause before asking again.
    lookups: HashMap<String, Duration>,
    /// Nodes we keep links to (the other global nodes, on a global node), and the back-off.
    keepalive: HashSet<String>,
    keepalive_retry: Duration,
    /// The pending rounds of seed dialling and of keepalive dialling.
    seed_timer: Option<SpawnHandle>,
    /// The node is shutting down: no dials, no new links.
    stopping: bool,
    keepalive_timer: Option<SpawnHandle>,
}

impl NodeRegistry {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let seed_retry_max = shared.config.seed_retry_max;
        NodeRegistry {
            shared,
            dials: HashMap::new(),
            handshakes: HashMap::new(),
            up: HashMap::new(),
            addresses: HashMap::new(),
            connecting: HashMap::new(),
            outgoing: HashMap::new(),
            rust: HashSet::new(),
            dialects: HashMap::new(),
            seeds: Seeds::new(seed_retry_max),
            lookups: HashMap::new(),
            keepalive: HashSet::new(),
            keepalive_retry: Duration::ZERO,
            seed_timer: None,
            stopping: false,
            keepalive_timer: None,
        }
    }

    fn dial(&mut self, addr: String, node: Option<String>, redial: bool) {
        if self.stopping {
            return;
        }
        let runtime = &self.shared.runtime;
        #[cfg(feature = "fuzzing")]
        if runtime.offline.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let conn = runtime.next_id();
        self.shared.runtime.count_connection(true);
        if let Some(node) = &node {
            self.dials.insert(conn, node.clone());
        }
        // A dialler speaks what the listener at that address last showed; in auto mode a
        // mismatch is met with one redial (see the `Down` handler).
        let how = match self.shared.config.dialect {
            DialectMode::Fixed(dialect) => DialAs::fixed(dialect),
            DialectMode::Auto { default } => DialAs {
                dialect: self.dialects.get(&addr).copied().unwrap_or(default),
                redials_on_mismatch: !redial,
            },
        };
        self.outgoing.insert(conn, (addr.clone(), node, redial));
        transport::dial(
            runtime.transports.clone(),
            runtime.worker(),
            addr,
            conn,
            how,
        );
    }

    /// Dials every known address of `node`, unless it is up or a dial of ours is under way.
    fn dial_node(&mut self, node: &str) {
        if self.up.contains_key(node) || self.dialling(node, u64::MAX) {
            return;
        }
        let addrs = self.addresses.get(node).cloned().unwrap_or_default();
        if addrs.is_empty() {
            // Ask the network (our master, or our 1.x mesh); an answer comes as `Addresses`.
            global::lookup(&self.shared, node);
        }
        for addr in addrs {
            self.dial(addr, Some(node.to_owned()), false);
        }
    }

    /// Dials `node` now or, while the node is dialling us (a handshake of its own is under
    /// way), a moment later: a real handshake is done in moments, and a dial crossing it could
    /// complete too, leaving each side keeping another connection (and then neither); a claim
    /// still unauthenticated by then does not hold our dial back.
    fn dial_node_soon(&mut self, node: &str, ctx: &mut Context<Self>) {
        let theirs = self
            .handshakes
            .get(node)
            .is_some_and(|hs| hs.iter().any(|(_, ours)| !*ours));
        if theirs {
            let node = node.to_owned();
            ctx.run_later(PEER_HANDSHAKE_GRACE, move |act, _| act.dial_node(&node));
        } else {
            self.dial_node(node);
        }
    }

    /// Whether a dial of ours to `addr` is under way.
    fn dialling_addr(&self, addr: &str) -> bool {
        self.outgoing.values().any(|(a, _, _)| a == addr)
    }

    /// One round of seed dialling: every seed that is not up and not being dialled; another
    /// round after the back-off while any is missing.
    fn seed_all(&mut self, ctx: &mut Context<Self>) {
        self.seed_timer = None;
        // A seed that is dialling us (a handshake of its own under way) is not crossed.
        let busy = |a: &str| {
            self.dialling_addr(a)
                || self
                    .seeds
                    .node_at(a)
                    .and_then(|n| self.handshakes.get(n))
                    .is_some_and(|hs| !hs.is_empty())
        };
        let due = self.seeds.due(|n| self.up.contains_key(n), busy);
        for addr in due {
            tracing::debug!(node = %self.shared.id, %addr, "dialling seed");
            self.dial(addr, None, false);
        }
        if self.seeds.missing(|n| self.up.contains_key(n)) {
            let delay = self.seeds.next_delay();
            self.seed_timer = Some(ctx.run_later(delay, |act, ctx| act.seed_all(ctx)));
        }
    }

    /// A seed link went down (or seeding starts): a round now, back-off from the start.
    fn seed_again(&mut self, ctx: &mut Context<Self>) {
        self.seeds.restart();
        if let Some(timer) = self.seed_timer.take() {
            ctx.cancel_future(timer);
        }
        self.seed_timer = Some(ctx.run_later(Duration::ZERO, |act, ctx| act.seed_all(ctx)));
    }

    /// One round of keepalive dialling (Perl's `keepalive_all`), with back-off.
    fn keepalive_all(&mut self, ctx: &mut Context<Self>) {
        self.keepalive_timer = None;
        let down: Vec<String> = self
            .keepalive
            .iter()
            .filter(|n| !self.up.contains_key(*n))
            .cloned()
            .collect();
        if down.is_empty() {
            return;
        }
        for node in &down {
            self.dial_node_soon(node, ctx);
        }
        self.keepalive_retry = (self.keepalive_retry * 2).min(self.shared.config.seed_retry_max);
        let delay = self.keepalive_retry;
        self.keepalive_timer = Some(ctx.run_later(delay, |act, ctx| act.keepalive_all(ctx)));
    }

    fn keepalive_again(&mut self, ctx: &mut Context<Self>) {
        self.keepalive_retry = Duration::from_secs_f64(rand::rng().random_range(0.3..0.6));
        if let Some(timer) = self.keepalive_timer.take() {
            ctx.cancel_future(timer);
        }
        self.keepalive_timer =
            Some(ctx.run_later(Duration::ZERO, |act, ctx| act.keepalive_all(ctx)));
    }

    /// Whether we have a connection of our own to `node` under way (other than `except`).
    fn dialling(&self, node: &str, except: u64) -> bool {
        self.dials.iter().any(|(c, n)| *c != except && n == node)
            || self
                .handshakes
                .get(node)
                .is_some_and(|hs| hs.iter().any(|(c, out)| *c != except && *out))
            // A seed dial names no node, but the seed's node may be known from before.
            || self.outgoing.iter().any(|(c, (addr, target, _))| {
                *c != except
                    && (target.as_deref() == Some(node) || self.seeds.node_at(addr) == Some(node))
            })
    }

    /// Dials `node` again every `connect_interval` while `attempt` is its connect attempt and
    /// it is not up.
    fn redial_later(&self, node: String, attempt: u64, ctx: &mut Context<Self>) {
        ctx.run_later(self.shared.config.connect_interval, move |act, ctx| {
            if act.connecting.get(&node) != Some(&attempt) || act.up.contains_key(&node) {
                return;
            }
            act.dial_node_soon(&node, ctx);
            act.redial_later(node, attempt, ctx);
        });
    }

    /// A dial of ours to a seed address reached `node` (its line 1 says so, authenticated or
    /// not, as Perl learns it): a seed whose link is up already now counts as one.
    fn learn_seed(&mut self, conn: u64, node: &str) {
        let Some((addr, _, _)) = self.outgoing.get(&conn) else {
            return;
        };
        if *node == *self.shared.id || !self.seeds.is_seed(addr) {
            return;
        }
        if self.seeds.learn(&addr.clone(), node) && self.up.contains_key(node) {
            global::seed_up(&self.shared, node);
        }
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

/// Start keeping links to these seed addresses (once the node knows its listeners).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct StartSeeding {
    /// The seeds, resolved.
    pub addrs: Vec<String>,
}

impl Handler<StartSeeding> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: StartSeeding, ctx: &mut Context<Self>) {
        self.seeds.add(msg.addrs);
        self.seed_again(ctx);
    }
}

impl Handler<Dial> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Dial, _: &mut Context<Self>) {
        self.dial(msg.addr, None, false);
    }
}

impl Handler<Addresses> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Addresses, ctx: &mut Context<Self>) {
        let waiting = !msg.addrs.is_empty()
            && self.connecting.contains_key(&msg.node)
            && !self.up.contains_key(&msg.node);
        let node = msg.node.clone();
        self.addresses.insert(msg.node, msg.addrs);
        // Messages wait for it: dial now (unless a dial of ours is under way).
        if waiting {
            self.dial_node_soon(&node, ctx);
        }
    }
}

impl Handler<NotFound> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: NotFound, ctx: &mut Context<Self>) {
        let node = msg.node;
        if !self.connecting.contains_key(&node) || self.up.contains_key(&node) {
            self.lookups.remove(&node);
            return;
        }
        let max = self.shared.config.connect_interval;
        let delay = self
            .lookups
            .get(&node)
            .map_or(LOOKUP_RETRY, |d| (*d * 2).min(max));
        self.lookups.insert(node.clone(), delay);
        ctx.run_later(delay, move |act, _| {
            let unknown = act.addresses.get(&node).is_none_or(Vec::is_empty);
            if act.connecting.contains_key(&node) && !act.up.contains_key(&node) && unknown {
                global::lookup(&act.shared, &node);
            } else {
                act.lookups.remove(&node);
            }
        });
    }
}

impl Handler<KeepAlive> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: KeepAlive, ctx: &mut Context<Self>) {
        self.keepalive = msg.nodes.into_iter().collect();
        if self.keepalive.iter().any(|n| !self.up.contains_key(n)) {
            self.keepalive_again(ctx);
        }
    }
}

impl Handler<Connect> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        let node = msg.node;
        if self.up.contains_key(&node) || self.connecting.contains_key(&node) {
            return;
        }
        let attempt = self.shared.runtime.next_id();
        self.connecting.insert(node.clone(), attempt);
        self.dial_node_soon(&node, ctx);
        self.redial_later(node.clone(), attempt, ctx);
        ctx.run_later(self.shared.config.connect_timeout, move |act, _| {
            // A later attempt (the node came up and went down since) has its own timer.
            if act.connecting.get(&node) != Some(&attempt) {
                return;
            }
            act.connecting.remove(&node);
            act.lookups.remove(&node);
            if !act.up.contains_key(&node) {
                let why = match act.addresses.get(&node) {
                    Some(addrs) if !addrs.is_empty() => DownReason::Unreachable,
                    _ => DownReason::NoAddress,
                };
                act.shared.pending_failed(&node, why);
            }
        });
    }
}

impl Handler<Line1> for NodeRegistry {
    type Result = Result<(), Refusal>;
    fn handle(&mut self, msg: Line1, _: &mut Context<Self>) -> Self::Result {
        let Line1 {
            conn,
            node,
            outgoing,
            rust,
        } = msg;
        if self.stopping {
            return Err(Refusal::ShuttingDown);
        }
        self.learn_seed(conn, &node);
        // Perl's rule, which Perl peers rely on; but a node that dials us long after its link
        // came up was restarted, and may replace that link once it has authenticated (`Up`).
        if let Some(link) = self.up.get(&node)
            && (outgoing || !link.replaceable())
        {
            return Err(Refusal::AlreadyConnected);
        }
        // Anyone can claim any id at line 1: a connection the peer made (not yet authenticated)
        // never refuses another. Only our own connections count, as they reach addresses we chose.
        let ours_past_line1 = self
            .handshakes
            .get(&node)
            .is_some_and(|hs| hs.iter().any(|(c, out)| *c != conn && *out));
        if outgoing && ours_past_line1 {
            // Two of our dials reached the same node (it has several addresses): keep the first.
            return Err(Refusal::InProgress);
        }
        if !outgoing && rust && *self.shared.id < *node && self.dialling(&node, conn) {
            // Between Rust nodes the one with the smaller id arbitrates: it keeps the connection
            // it dialled, so that the other end can complete no other.
            return Err(Refusal::Crossing);
        }
        if !outgoing && !rust && ours_past_line1 {
            // A Perl peer that dials while our dial to it is past line 1: one link, not a
            // switch (Perl would replace the first link with the second, with a node-down blip).
            return Err(Refusal::InProgress);
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
    type Result = Option<Box<dyn PacketSink>>;
    fn handle(&mut self, msg: Up, _: &mut Context<Self>) -> Self::Result {
        self.forget(msg.conn, &msg.node);
        if self.stopping {
            return None;
        }
        self.outgoing.remove(&msg.conn);
        let rust = self.rust.remove(&msg.conn);
        if let Some(old) = self.up.get(&msg.node) {
            if msg.dialled.is_some() || !old.replaceable() {
                return None;
            }
            // The node dialled us again and authenticated: it was restarted (or lost the old
            // link before we noticed). The old link goes, as in Perl's "switched connections".
            let old = old.conn;
            self.up.remove(&msg.node);
            tracing::info!(node = %self.shared.id, peer = %msg.node, "a new link replaces the old one");
            self.shared
                .link_failed(&msg.node, old, DownReason::Switched);
            global::node_down(&self.shared, &msg.node);
        }
        let dialect = msg.link.dialect;
        if let Some(addr) = &msg.dialled {
            self.dialects.insert(addr.clone(), dialect);
            let addrs = self.addresses.entry(msg.node.clone()).or_default();
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        self.up.insert(
            msg.node.clone(),
            UpLink {
                conn: msg.conn,
                since: Instant::now(),
            },
        );
        self.connecting.remove(&msg.node);
        self.lookups.remove(&msg.node);
        tracing::info!(node = %self.shared.id, peer = %msg.node, %dialect, rust, "node up");
        self.shared.runtime.tally.link_up(&msg.node);
        self.shared.link_up(&msg.node, msg.link);
        let seed = self.seeds.is_seed_node(&msg.node);
        global::node_up(
            &self.shared,
            &msg.node,
            dialect,
            rust,
            msg.dialled.as_deref(),
            seed,
        );
        Some(Box::new(Inbound::new(
            self.shared.clone(),
            msg.node.into(),
            dialect,
        )))
    }
}

impl Handler<Down> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, msg: Down, ctx: &mut Context<Self>) {
        self.shared.runtime.connection_closed();
        if let Some((addr, _, _)) = self.outgoing.get(&msg.conn)
            && self.seeds.is_seed(addr)
            && msg.node.as_deref() == Some(&*self.shared.id)
        {
            // As in Perl: a seed that is ourselves is dropped, and makes us a global node.
            tracing::info!(node = %self.shared.id, seed = %addr, "a seed address is this node");
            self.seeds.drop_seed(&addr.clone());
            global::seed_is_us(&self.shared);
        }
        let target = self.dials.remove(&msg.conn);
        self.rust.remove(&msg.conn);
        let auto = matches!(self.shared.config.dialect, DialectMode::Auto { .. });
        // The listener speaks another dialect: in auto mode, speak it (once per dial).
        let redial = match (msg.mismatch, self.outgoing.remove(&msg.conn)) {
            (Some(theirs), Some((addr, node, false))) if auto => Some((theirs, addr, node)),
            _ => None,
        };
        // A mismatch we redial is no failure for whoever waits for the link: the redial's
        // outcome is; nor is a duplicate either side refused: the other connection is the
        // link.
        let other = msg.node.as_ref().is_some_and(|n| {
            self.up.get(n).is_some_and(|l| l.conn != msg.conn)
                || self
                    .handshakes
                    .get(n)
                    .is_some_and(|hs| hs.iter().any(|(c, _)| *c != msg.conn))
        });
        if let (false, LinkEnd::Failed(error)) = (msg.was_up, &msg.end) {
            let cause = match msg.duplicate {
                true => FailureCause::Refused,
                false => error.cause(),
            };
            self.shared.runtime.tally.failed(cause);
        }
        if let (None, false, false, LinkEnd::Failed(error)) =
            (&redial, msg.duplicate || other, msg.was_up, &msg.end)
        {
            let _ = self.shared.events.link_errors.send(LinkError {
                addr: msg.addr.clone(),
                error: error.clone(),
            });
        }
        if let Some((theirs, addr, node)) = redial {
            tracing::debug!(node = %self.shared.id, %addr, dialect = %theirs, "dialling again in the listener's dialect");
            self.dialects.insert(addr.clone(), theirs);
            // Messages queued for the node stay queued: the redial is a dial of that node.
            self.dial(addr, target.or(node).or_else(|| msg.node.clone()), true);
        }
        let Some(node) = msg.node else { return };
        self.forget(msg.conn, &node);
        if self.up.get(&node).is_some_and(|l| l.conn == msg.conn) {
            self.up.remove(&node);
            tracing::info!(node = %self.shared.id, peer = %node, reason = %msg.end, "node down");
            let why = match msg.end {
                LinkEnd::PeerLeft => DownReason::PeerLeft,
                end => DownReason::Transport(end),
            };
            self.shared.link_failed(&node, msg.conn, why);
            global::node_down(&self.shared, &node);
            if self.seeds.is_seed_node(&node) {
                self.seed_again(ctx);
            }
            if self.keepalive.contains(&node) {
                self.keepalive_again(ctx);
            }
        }
    }
}

impl Handler<Shutdown> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // No more dials: cancel what would start them, and refuse new links from now on
        // (`Line1`, `Up`); the links close once their queues are written (`link_failed`), and
        // their transports' `Down` still comes here (the node counts them while it waits).
        self.stopping = true;
        // Messages waiting for a node that is not up cannot be written: their monitors fire.
        for node in std::mem::take(&mut self.connecting).into_keys() {
            self.shared.pending_failed(&node, DownReason::Shutdown);
        }
        self.keepalive.clear();
        for timer in [self.seed_timer.take(), self.keepalive_timer.take()]
            .into_iter()
            .flatten()
        {
            ctx.cancel_future(timer);
        }
        let nodes: Vec<(String, UpLink)> = self.up.drain().collect();
        for (node, link) in nodes {
            self.shared
                .link_failed(&node, link.conn, DownReason::Shutdown);
        }
    }
}

/// The shutdown is over: the registry stops.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

impl Handler<Stop> for NodeRegistry {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
