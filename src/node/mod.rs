//! The local node: ports, links to other nodes, monitors, and the node port `""`.
//!
//! [`Node`] is a cheap, cloneable handle. The per-packet paths do not pass through any actor: a
//! `snd` to a remote port encodes straight into that link's bounded queue, and a transport hands
//! each received packet straight to the port's actix recipient. The [`registry`] actor only
//! decides which transport carries which node.

pub mod config;
mod global;
mod kernel;
pub mod message;
mod peer;
mod ports;
pub mod rcv;
pub mod registry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use actix::{Actor, Addr, ArbiterHandle, Recipient};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

pub use config::{DialectMode, NodeConfig};
pub use message::{Message, split_port_id};
pub use peer::{ConnectionStats, InitFn};
pub use rcv::{PortContext, Rcv};

use crate::proto::dialect::Dialect;
use crate::proto::framing::{self, Framing, FramingError};
use crate::proto::value::{self, Value};
use ports::{PortEntry, PortTable, Watcher};
use registry::NodeRegistry;

/// What went wrong in the node layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A bind address could not be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A message could not be encoded.
    #[error("cannot encode message for {port}: {source}")]
    Encode {
        /// The destination.
        port: String,
        /// Why.
        source: FramingError,
    },
    /// The port id is not one of ours / not a port id.
    #[error("{0} is not a local port")]
    NotLocal(String),
    /// A port name that cannot be created: empty, not ours, or taken.
    #[error("cannot create port {0}: the name is empty, not on this node, or taken")]
    PortName(String),
    /// The link to a node failed while an awaitable send was waiting.
    #[error("link to node {node} is gone: {reason}")]
    LinkGone {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}

/// A node came up or went down.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    /// The node id.
    pub node: String,
    /// Up (`true`) or down.
    pub up: bool,
    /// For down events: `("transport_error", node, message)`.
    pub reason: Vec<Value>,
    /// For up events: the dialect of the link.
    pub dialect: Option<Dialect>,
}

/// A connection that failed before its link came up (refused, unreachable, auth failure…).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkError {
    /// The peer's address as dialled or accepted.
    pub addr: String,
    /// The typed error, as text.
    pub error: String,
}

/// A packet waiting for its node to come up.
pub(crate) enum Outgoing {
    /// `[dest, args…]`.
    Packet { dest: String, args: Vec<Value> },
    /// A remote kill, whose tag depends on the link's dialect.
    Kill { port: String, reason: Vec<Value> },
}

/// What an awaitable send finds.
enum Wait {
    Up(LinkTx),
    Full,
    Queue,
}

/// The sending end of an up link.
#[derive(Clone)]
pub(crate) struct LinkTx {
    pub conn: u64,
    pub tx: mpsc::Sender<Bytes>,
    pub framing: Framing,
    pub dialect: Dialect,
    /// Our TLS role when the link runs inside TLS.
    pub tls: Option<crate::proto::handshake::TlsRole>,
}

/// node → port → the local monitors watching that remote port.
type RemoteMonitors = HashMap<String, HashMap<String, Vec<(u64, Watcher)>>>;

pub(crate) enum LinkSlot {
    Up(LinkTx),
    Pending { queue: Vec<Outgoing> },
}

/// State shared by the node handle, the registry and the transports.
pub(crate) struct Shared {
    pub id: Arc<str>,
    pub config: NodeConfig,
    ports: RwLock<PortTable>,
    links: RwLock<HashMap<String, LinkSlot>>,
    remote_monitors: Mutex<RemoteMonitors>,
    pub registry: OnceLock<Addr<NodeRegistry>>,
    pub listeners: RwLock<Vec<SocketAddr>>,
    next_id: AtomicU64,
    uniq: String,
    workers: Vec<ArbiterHandle>,
    next_worker: AtomicUsize,
    pub events: broadcast::Sender<NodeEvent>,
    /// Connections that failed before coming up, for callers that wait for a link.
    link_errors: broadcast::Sender<LinkError>,
    /// Woken whenever a link comes up or a node's slot goes away.
    link_changed: tokio::sync::Notify,
    /// Set by [`Node::shutdown`]; listeners stop accepting.
    stopped: tokio::sync::watch::Sender<bool>,
    /// Spawn, init functions, the global services, dialect memory, connection counts.
    pub(crate) peer: peer::PeerState,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn next(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes why a connection failed before its link came up.
    pub fn report_link_error(&self, addr: &str, error: String) {
        let _ = self.link_errors.send(LinkError {
            addr: addr.to_owned(),
            error,
        });
    }

    /// Resolves once the node is shut down.
    pub async fn stopping(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// A fresh connection id.
    pub fn next_conn(&self) -> u64 {
        self.next()
    }

    pub fn registry(&self) -> Option<&Addr<NodeRegistry>> {
        self.registry.get()
    }

    /// The worker arbiter for the next transport (round robin).
    pub fn worker(&self) -> Option<ArbiterHandle> {
        if self.workers.is_empty() {
            return None;
        }
        let i = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.workers.get(i).cloned()
    }

    // ---- local ports -------------------------------------------------------------------

    fn new_port_name(&self) -> String {
        format!("{}.{}", self.uniq, self.next())
    }

    /// The recipient behind a local port.
    pub fn port_recipient(&self, port: &str) -> Option<Recipient<Message>> {
        read(&self.ports)
            .ports
            .get(port)
            .map(|e| e.recipient.clone())
    }

    /// Delivers a message to a local port; unknown ports drop it with a debug log.
    pub fn deliver_local(&self, port: &str, msg: Message) {
        match self.port_recipient(port) {
            // do_send: a port has no queue limit in AEMP, and try_send would drop silently
            // whenever the actor's mailbox is momentarily full.
            Some(r) if r.connected() => r.do_send(msg),
            // The port's actor has stopped: the port dies with it, no reason.
            Some(_) => self.kill_local(port, Vec::new()),
            None => tracing::debug!(node = %self.id, port, "message to unknown port dropped"),
        }
    }

    /// Kills a local port: removes it and fires its monitors with `reason`.
    pub fn kill_local(&self, port: &str, reason: Vec<Value>) {
        let Some(watchers) = write(&self.ports).remove(port) else {
            return;
        };
        if watchers.is_empty() && !reason.is_empty() {
            tracing::info!(node = %self.id, port, ?reason, "unmonitored local port died");
        }
        for (_, w) in watchers {
            self.fire(w, port, reason.clone());
        }
    }

    fn fire(&self, watcher: Watcher, port: &str, reason: Vec<Value>) {
        match watcher {
            Watcher::Callback(cb) => {
                if let Some(cb) = cb.into_inner().unwrap_or_else(PoisonError::into_inner) {
                    cb(reason);
                }
            }
            Watcher::Remote(node) => {
                // Only if the watcher's node is connected, as in Perl.
                let dialect = match read(&self.links).get(&*node) {
                    Some(LinkSlot::Up(l)) => l.dialect,
                    _ => return,
                };
                let mut args = vec![
                    Value::Str(kernel::notify_tag(dialect).into()),
                    Value::Str(port.into()),
                ];
                args.extend(reason);
                let _ = self.send_remote(&node, "", &Value::Array(args));
            }
        }
    }

    /// Registers a remote node's monitor on a local port; a missing port fires at once.
    pub fn monitor_local_for(&self, port: &str, node: Arc<str>) {
        {
            let mut ports = write(&self.ports);
            if let Some(e) = ports.ports.get_mut(port) {
                // At most one registration per (node, port).
                if !e
                    .monitors
                    .iter()
                    .any(|(_, w)| matches!(w, Watcher::Remote(n) if *n == node))
                {
                    let id = self.next();
                    e.monitors.push((id, Watcher::Remote(node)));
                }
                return;
            }
        }
        let dialect = match read(&self.links).get(&*node) {
            Some(LinkSlot::Up(l)) => l.dialect,
            _ => return,
        };
        // A spawned port that died before this mon1 arrived reports its own reason.
        if let Some(reason) = self.peer.tombstone(port) {
            self.fire(Watcher::Remote(node), port, reason);
            return;
        }
        let mut reason = vec![
            Value::Str("no_such_port".into()),
            Value::Str("cannot monitor nonexistent port".into()),
        ];
        if dialect != Dialect::P0 {
            reason.push(Value::Str(format!("{}#{port}", self.id)));
        }
        self.fire(Watcher::Remote(node), port, reason);
    }

    pub fn unmonitor_local_for(&self, port: &str, node: &str) {
        if let Some(e) = write(&self.ports).ports.get_mut(port) {
            e.monitors
                .retain(|(_, w)| !matches!(w, Watcher::Remote(n) if &**n == node));
        }
    }

    // ---- remote monitors --------------------------------------------------------------

    /// A node told us that a port of its own we watch died.
    pub fn remote_port_died(&self, node: &str, port: &str, reason: Vec<Value>) {
        let watchers = lock(&self.remote_monitors)
            .get_mut(node)
            .and_then(|m| m.remove(port))
            .unwrap_or_default();
        for (_, w) in watchers {
            self.fire(w, port, reason.clone());
        }
    }

    // ---- links -------------------------------------------------------------------------

    /// Sends `[port, msg…]` to a remote node: straight into the link's queue when it is up,
    /// else into the node's pending queue (which makes the registry connect).
    pub fn send_remote<T: Serialize + ?Sized>(
        &self,
        node: &str,
        port: &str,
        msg: &T,
    ) -> Result<(), NodeError> {
        let encode_err = |source| NodeError::Encode {
            port: format!("{node}#{port}"),
            source,
        };
        // Clone the sender out: a full queue fails the link, which takes the write lock.
        let up = match read(&self.links).get(node) {
            Some(LinkSlot::Up(link)) => Some(link.clone()),
            _ => None,
        };
        if let Some(link) = up {
            let bytes = encode_scratch(|buf| framing::encode_packet(link.framing, port, msg, buf))
                .map_err(encode_err)?;
            return self.push(node, &link, bytes);
        }
        let args = match value::to_value(msg) {
            Ok(Value::Array(a)) => a,
            _ => {
                return Err(encode_err(FramingError::Encode {
                    framing: Framing::Json,
                    reason: "a message must serialise to a sequence".into(),
                }));
            }
        };
        self.queue(
            node,
            Outgoing::Packet {
                dest: port.to_owned(),
                args,
            },
        )
    }

    /// Waits for room in the link's queue instead of failing the link (backpressure). While
    /// the node is not up yet, it waits for room in the pending queue instead.
    pub async fn send_remote_wait<T: Serialize + ?Sized>(
        &self,
        node: &str,
        port: &str,
        msg: &T,
    ) -> Result<(), NodeError> {
        let link = loop {
            let state = self.wait_state(node);
            match state {
                Wait::Up(link) => break link,
                Wait::Queue => return self.send_remote(node, port, msg),
                Wait::Full => {
                    // Slow path only: register for the wake-up, then look again.
                    let changed = self.link_changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if matches!(self.wait_state(node), Wait::Full) {
                        changed.await;
                    }
                }
            }
        };
        {
            let bytes = encode_scratch(|buf| framing::encode_packet(link.framing, port, msg, buf))
                .map_err(|source| NodeError::Encode {
                    port: format!("{node}#{port}"),
                    source,
                })?;
            return link.tx.send(bytes).await.map_err(|_| NodeError::LinkGone {
                node: node.to_owned(),
                reason: "link closed".into(),
            });
        }
    }

    fn wait_state(&self, node: &str) -> Wait {
        match read(&self.links).get(node) {
            Some(LinkSlot::Up(link)) => Wait::Up(link.clone()),
            Some(LinkSlot::Pending { queue }) if queue.len() >= self.config.send_queue => {
                Wait::Full
            }
            _ => Wait::Queue,
        }
    }

    fn push(&self, node: &str, link: &LinkTx, bytes: Bytes) -> Result<(), NodeError> {
        match link.tx.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(node = %self.id, peer = node, "send queue full: failing the link");
                self.link_failed(node, link.conn, "send queue full");
                Ok(())
            }
            // The transport is going down; its monitors fire from there.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    fn queue(&self, node: &str, out: Outgoing) -> Result<(), NodeError> {
        let mut links = write(&self.links);
        match links.get_mut(node) {
            Some(LinkSlot::Up(link)) => {
                let link = link.clone();
                drop(links);
                let mut buf = BytesMut::new();
                encode_outgoing(&link, &out, &mut buf).map_err(|source| NodeError::Encode {
                    port: node.to_owned(),
                    source,
                })?;
                self.push(node, &link, buf.freeze())
            }
            Some(LinkSlot::Pending { queue }) => {
                if queue.len() >= self.config.send_queue {
                    drop(links);
                    self.pending_failed(node, "send queue full");
                } else {
                    queue.push(out);
                }
                Ok(())
            }
            None => {
                links.insert(node.to_owned(), LinkSlot::Pending { queue: vec![out] });
                drop(links);
                if let Some(r) = self.registry() {
                    r.do_send(registry::Connect {
                        node: node.to_owned(),
                    });
                }
                Ok(())
            }
        }
    }

    /// Sends a remote kill to `node`, with the tag of the link's dialect.
    pub fn kill_remote(&self, node: &str, port: &str, reason: Vec<Value>) -> Result<(), NodeError> {
        self.queue(
            node,
            Outgoing::Kill {
                port: port.to_owned(),
                reason,
            },
        )
    }

    /// Makes a link the node's transport: flushes the pending queue into it, in order, before
    /// any new message can take the direct path.
    pub fn link_up(&self, node: &str, link: LinkTx) {
        let mut links = write(&self.links);
        if let Some(LinkSlot::Pending { queue }) = links.remove(node) {
            let mut buf = BytesMut::new();
            for out in &queue {
                if let Err(e) = encode_outgoing(&link, out, &mut buf) {
                    tracing::warn!(node = %self.id, peer = node, "dropping queued message: {e}");
                }
            }
            if !buf.is_empty() && link.tx.try_send(buf.freeze()).is_err() {
                tracing::warn!(node = %self.id, peer = node, "could not flush queued messages");
            }
        }
        let dialect = link.dialect;
        links.insert(node.to_owned(), LinkSlot::Up(link));
        drop(links);
        self.link_changed.notify_waiters();
        let _ = self.events.send(NodeEvent {
            node: node.to_owned(),
            up: true,
            reason: Vec::new(),
            dialect: Some(dialect),
        });
    }

    /// The link with connection id `conn` failed: drop it, fire every monitor on that node.
    pub fn link_failed(&self, node: &str, conn: u64, message: &str) {
        let was_up = {
            let mut links = write(&self.links);
            match links.get(node) {
                Some(LinkSlot::Up(l)) if l.conn == conn => {
                    links.remove(node);
                    true
                }
                _ => false,
            }
        };
        self.link_changed.notify_waiters();
        if was_up {
            let reason = transport_error(node, message);
            self.fire_node_monitors(node, &reason);
            let _ = self.events.send(NodeEvent {
                node: node.to_owned(),
                up: false,
                reason,
                dialect: None,
            });
        }
    }

    /// A node that never came up could not be reached: drop its queue, fire its monitors.
    pub fn pending_failed(&self, node: &str, message: &str) {
        let removed = {
            let mut links = write(&self.links);
            match links.get(node) {
                Some(LinkSlot::Pending { .. }) => links.remove(node).is_some(),
                _ => false,
            }
        };
        self.link_changed.notify_waiters();
        if removed {
            tracing::info!(node = %self.id, peer = node, "dropping queued messages: {message}");
            self.fire_node_monitors(node, &transport_error(node, message));
        }
    }

    fn fire_node_monitors(&self, node: &str, reason: &[Value]) {
        let watchers = lock(&self.remote_monitors).remove(node).unwrap_or_default();
        for (port, list) in watchers {
            for (_, w) in list {
                self.fire(w, &port, reason.to_vec());
            }
        }
    }

    pub fn is_pending(&self, node: &str) -> bool {
        matches!(read(&self.links).get(node), Some(LinkSlot::Pending { .. }))
    }

    pub fn up_nodes(&self) -> Vec<String> {
        read(&self.links)
            .iter()
            .filter(|(_, s)| matches!(s, LinkSlot::Up(_)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn link_dialect(&self, node: &str) -> Option<Dialect> {
        match read(&self.links).get(node) {
            Some(LinkSlot::Up(l)) => Some(l.dialect),
            _ => None,
        }
    }
}

fn encode_outgoing(link: &LinkTx, out: &Outgoing, buf: &mut BytesMut) -> Result<(), FramingError> {
    match out {
        Outgoing::Packet { dest, args } => framing::encode_packet(link.framing, dest, args, buf),
        Outgoing::Kill { port, reason } => {
            let Some(tag) = kernel::kill_tag(link.dialect) else {
                tracing::warn!(dialect = %link.dialect, port, "remote kill is not supported by this peer's dialect; sent as it would send it");
                let mut args = vec![Value::Str("kil".into()), Value::Str(port.clone())];
                args.extend(reason.iter().cloned());
                return framing::encode_packet(link.framing, "", &args, buf);
            };
            let mut args = vec![Value::Str(tag.into()), Value::Str(port.clone())];
            args.extend(reason.iter().cloned());
            framing::encode_packet(link.framing, "", &args, buf)
        }
    }
}

/// Hands a node-port request from `from` to the kernel.
pub(crate) fn kernel_deliver(
    shared: &Arc<Shared>,
    from: &Arc<str>,
    dialect: Dialect,
    args: Vec<Value>,
) {
    kernel::handle(shared, from, dialect, args);
}

/// Encodes one packet into a per-thread scratch buffer and splits it off: one allocation per
/// many packets instead of one (plus regrowth) per packet.
fn encode_scratch(
    encode: impl FnOnce(&mut BytesMut) -> Result<(), FramingError>,
) -> Result<Bytes, FramingError> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.capacity() < 4096 {
            buf.reserve(64 * 1024);
        }
        let result = encode(&mut buf);
        match result {
            Ok(()) => Ok(buf.split().freeze()),
            Err(e) => {
                buf.clear();
                Err(e)
            }
        }
    })
}

/// `("transport_error", node, message)`.
pub fn transport_error(node: &str, message: &str) -> Vec<Value> {
    vec![
        Value::Str("transport_error".into()),
        Value::Str(node.into()),
        Value::Str(message.into()),
    ]
}

/// A running node. Clone it freely; the node runs until [`Node::shutdown`] or the actix
/// system stops.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

/// A local port. Dropping it kills the port with no reason (a normal exit); keep it in the
/// actor that receives its messages, so that the port lives as long as the actor.
#[must_use = "dropping a Port kills it"]
pub struct Port {
    id: String,
    name: String,
    shared: Arc<Shared>,
    detached: bool,
}

impl Port {
    /// The full port id, `<node>#<name>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Keeps the port alive without this guard; it dies by [`Node::kil`] only.
    pub fn detach(mut self) -> String {
        self.detached = true;
        self.id.clone()
    }

    /// Kills the port with `("die", message)`: what a failing handler should do.
    pub fn die(mut self, message: impl Into<String>) {
        self.detached = true;
        self.shared.kill_local(
            &self.name,
            vec![Value::Str("die".into()), Value::Str(message.into())],
        );
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if !self.detached {
            self.shared.kill_local(&self.name, Vec::new());
        }
    }
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Port({})", self.id)
    }
}

/// The actor behind [`Node::port_channel`].
struct ChannelPort(mpsc::Sender<Message>);

impl Actor for ChannelPort {
    type Context = actix::Context<Self>;
}

impl actix::Handler<Message> for ChannelPort {
    type Result = ();
    fn handle(&mut self, msg: Message, ctx: &mut actix::Context<Self>) {
        match self.0.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("port channel full: message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => actix::ActorContext::stop(ctx),
        }
    }
}

/// A monitor; dropping it cancels the monitor (send `mon0` when it was the last one).
#[must_use = "dropping a MonitorGuard cancels the monitor"]
pub struct MonitorGuard {
    node: String,
    port: String,
    id: u64,
    shared: Arc<Shared>,
    detached: bool,
}

impl MonitorGuard {
    /// Keeps the monitor until it fires.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        let s = &self.shared;
        if self.node == *s.id {
            if let Some(e) = write(&s.ports).ports.get_mut(&self.port) {
                e.monitors.retain(|(id, _)| *id != self.id);
            }
            return;
        }
        let last = {
            let mut mons = lock(&s.remote_monitors);
            let Some(ports) = mons.get_mut(&self.node) else {
                return;
            };
            let Some(list) = ports.get_mut(&self.port) else {
                return;
            };
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                ports.remove(&self.port);
                true
            } else {
                false
            }
        };
        if last {
            let _ = s.send_remote(&self.node, "", &("mon0", &self.port));
        }
    }
}

impl Node {
    /// Starts a node inside the running actix system: binds its listeners, starts its
    /// workers and registry, and dials its seeds.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let id: Arc<str> = config::resolve_node_id(&config.node_id).into();
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let workers = (0..workers)
            .map(|_| actix::Arbiter::new().handle())
            .collect();
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            id,
            config: config.clone(),
            ports: RwLock::default(),
            links: RwLock::default(),
            remote_monitors: Mutex::default(),
            registry: OnceLock::new(),
            listeners: RwLock::default(),
            next_id: AtomicU64::new(0),
            uniq: config::random_name(8),
            workers,
            next_worker: AtomicUsize::new(0),
            events,
            link_changed: tokio::sync::Notify::new(),
            link_errors: broadcast::channel(64).0,
            stopped: tokio::sync::watch::channel(false).0,
            peer: peer::PeerState::new(),
        });
        let registry = NodeRegistry::new(shared.clone()).start();
        let _ = shared.registry.set(registry.clone());
        for addr in &config.binds {
            let bound = crate::net::listener::listen(shared.clone(), addr).await?;
            write(&shared.listeners).push(bound);
        }
        peer::started(&shared);
        for seed in &config.seeds {
            registry.do_send(registry::Dial { addr: seed.clone() });
        }
        tracing::info!(node = %shared.id, listeners = ?read(&shared.listeners), "node started");
        Ok(Node { shared })
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The addresses this node listens on (ports resolved).
    pub fn listeners(&self) -> Vec<SocketAddr> {
        read(&self.shared.listeners).clone()
    }

    /// Subscribes to node up/down events.
    pub fn node_events(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// Subscribes to connections that fail before their link comes up.
    pub fn link_errors(&self) -> broadcast::Receiver<LinkError> {
        self.shared.link_errors.subscribe()
    }

    /// Ids of the nodes with a live link.
    pub fn up_nodes(&self) -> Vec<String> {
        self.shared.up_nodes()
    }

    /// The dialect of the live link to `node`.
    pub fn link_dialect(&self, node: &str) -> Option<Dialect> {
        self.shared.link_dialect(node)
    }

    /// Our TLS role on the live link to `node`, if that link runs inside TLS.
    pub fn link_tls(&self, node: &str) -> Option<crate::proto::handshake::TlsRole> {
        match read(&self.shared.links).get(node) {
            Some(LinkSlot::Up(l)) => l.tls,
            _ => None,
        }
    }

    /// Dials an address (its node id is learned from its greeting).
    pub fn connect(&self, addr: impl Into<String>) {
        if let Some(r) = self.shared.registry() {
            r.do_send(registry::Dial { addr: addr.into() });
        }
    }

    /// Remembers addresses for a node id, so that sending to it dials them.
    pub fn add_node_addresses(&self, node: impl Into<String>, addrs: Vec<String>) {
        if let Some(r) = self.shared.registry() {
            r.do_send(registry::Addresses {
                node: node.into(),
                addrs,
            });
        }
    }

    /// Creates a port whose messages go to an actix recipient.
    pub fn port(&self, recipient: Recipient<Message>) -> Port {
        let mut ports = write(&self.shared.ports);
        // A spawning peer chooses names on this node: skip any it took.
        let name = loop {
            let name = self.shared.new_port_name();
            if !ports.ports.contains_key(&name) {
                break name;
            }
        };
        ports.ports.insert(
            name.clone(),
            PortEntry {
                recipient,
                monitors: Vec::new(),
            },
        );
        drop(ports);
        Port {
            id: format!("{}#{name}", self.shared.id),
            name,
            shared: self.shared.clone(),
            detached: false,
        }
    }

    /// Creates a port with a given name (the part after `#`, or a full id on this node), as a
    /// spawn init function must: its port id was chosen by the spawning node. Fails if the name
    /// is empty, contains `#` after the node part, names another node, or is taken.
    pub fn port_named(&self, name: &str, recipient: Recipient<Message>) -> Result<Port, NodeError> {
        let bad = || NodeError::PortName(name.to_owned());
        let local = match name.split_once('#') {
            Some((node, local)) if node == &*self.shared.id => local,
            Some(_) => return Err(bad()),
            None => name,
        };
        if local.is_empty() || local.contains('#') {
            return Err(bad());
        }
        {
            let mut ports = write(&self.shared.ports);
            if ports.ports.contains_key(local) {
                return Err(bad());
            }
            ports.ports.insert(
                local.to_owned(),
                PortEntry {
                    recipient,
                    monitors: Vec::new(),
                },
            );
        }
        Ok(Port {
            id: format!("{}#{local}", self.shared.id),
            name: local.to_owned(),
            shared: self.shared.clone(),
            detached: false,
        })
    }

    /// Builds a port that dispatches on each message's first element, like Perl's `rcv`:
    /// `node.rcv().on("ping", |cx, msg| { … Ok(()) }).start()` returns the port id. The port's
    /// actor runs on the current arbiter.
    pub fn rcv(&self) -> Rcv {
        Rcv::new(self.clone())
    }

    /// Creates a port whose messages arrive on a channel (for code that is not an actor).
    /// At most `capacity` messages wait; more are dropped with a warning, as a port that
    /// cannot keep up would lose them.
    pub fn port_channel(&self, capacity: usize) -> (Port, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let port = self.port(ChannelPort(tx).start().recipient());
        (port, rx)
    }

    /// Sends a message to a port, local or remote. Never blocks and never fails for delivery
    /// reasons: lost messages are announced by the monitors of the destination (Perl's rule).
    /// `msg` must serialise to a sequence: its elements are the message.
    pub fn snd<T: Serialize + ?Sized>(&self, port: &str, msg: &T) -> Result<(), NodeError> {
        let (node, name) = split_port_id(port);
        if node == &*self.shared.id {
            let args = match value::to_value(msg) {
                Ok(Value::Array(a)) => a,
                _ => {
                    return Err(NodeError::Encode {
                        port: port.into(),
                        source: FramingError::Encode {
                            framing: Framing::Json,
                            reason: "a message must serialise to a sequence".into(),
                        },
                    });
                }
            };
            if name.is_empty() {
                kernel::handle_local(&self.shared, args);
            } else {
                self.shared
                    .deliver_local(name, Message::local(self.shared.id.clone(), args));
            }
            return Ok(());
        }
        self.shared.send_remote(node, name, msg)
    }

    /// Sends a message, waiting for room in the link's queue instead of failing the link.
    pub async fn send<T: Serialize + ?Sized>(&self, port: &str, msg: &T) -> Result<(), NodeError> {
        let (node, name) = split_port_id(port);
        if node == &*self.shared.id {
            return self.snd(port, msg);
        }
        self.shared.send_remote_wait(node, name, msg).await
    }

    /// Kills a port with a reason (empty = normal exit). Remote ports are killed with the
    /// kill request of the link's dialect.
    pub fn kil(&self, port: &str, reason: Vec<Value>) -> Result<(), NodeError> {
        let (node, name) = split_port_id(port);
        if node == &*self.shared.id {
            if name.is_empty() {
                return Err(NodeError::NotLocal(port.into()));
            }
            self.shared.kill_local(name, reason);
            return Ok(());
        }
        self.shared.kill_remote(node, name, reason)
    }

    /// Monitors a port: `callback` runs once with the kill reason when it dies (or with
    /// `("transport_error", node, message)` when its node is lost). Monitoring a bare node id
    /// fires only on transport loss.
    pub fn mon(
        &self,
        port: &str,
        callback: impl FnOnce(Vec<Value>) + Send + 'static,
    ) -> MonitorGuard {
        let (node, name) = split_port_id(port);
        let s = &self.shared;
        let id = s.next();
        let guard = MonitorGuard {
            node: node.to_owned(),
            port: name.to_owned(),
            id,
            shared: s.clone(),
            detached: false,
        };
        let watcher = Watcher::callback(callback);
        if node == &*s.id {
            let mut ports = write(&s.ports);
            match ports.ports.get_mut(name) {
                Some(e) => e.monitors.push((id, watcher)),
                None => {
                    drop(ports);
                    let reason = s.peer.tombstone(name).unwrap_or_else(|| {
                        vec![
                            Value::Str("no_such_port".into()),
                            Value::Str("cannot monitor nonexistent port".into()),
                            Value::Str(port.into()),
                        ]
                    });
                    s.fire(watcher, name, reason);
                }
            }
            return guard;
        }
        let first = {
            let mut mons = lock(&s.remote_monitors);
            let list = mons
                .entry(node.to_owned())
                .or_default()
                .entry(name.to_owned())
                .or_default();
            list.push((id, watcher));
            list.len() == 1
        };
        if first && !name.is_empty() {
            let _ = s.send_remote(node, "", &("mon1", name));
        } else if name.is_empty() && s.link_dialect(node).is_none() && !s.is_pending(node) {
            // Monitoring a node that is not up: connect, so that failure is reported.
            let _ = s.queue(
                node,
                Outgoing::Packet {
                    dest: String::new(),
                    args: Vec::new(),
                },
            );
        }
        guard
    }

    /// Stops every link and listener of this node.
    pub fn shutdown(&self) {
        self.shared.stopped.send_replace(true);
        if let Some(r) = self.shared.registry() {
            r.do_send(registry::Shutdown);
        }
        for w in &self.shared.workers {
            w.stop();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.shared.id)
    }
}
