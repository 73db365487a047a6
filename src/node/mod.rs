//! The local node: ports, links to other nodes, monitors, and the node port `""`.
//!
//! [`Node`] is a cheap, cloneable handle. The per-packet paths do not pass through any actor: a
//! `snd` to a remote port encodes straight into that link's bounded queue, and a transport hands
//! each received packet straight to the port's actix recipient (`inbound`). The registry actor
//! only decides which transport carries which node.
mod actor;
mod config;
mod database;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod global;
mod groups;
mod inbound;
mod kernel;
mod links;
mod message;
pub mod metrics;
mod mon_forms;
mod peer;
pub(crate) mod port_stream;
mod ports;
pub mod profile;
mod rcv;
pub(crate) mod registry;
mod seeds;
mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use actix::{Addr, ArbiterHandle, AsyncContext, Recipient};
use serde::Serialize;
use tokio::sync::broadcast;

pub use actor::{
    DEFAULT_REQUEST_TIMEOUT, Expose, Exposed, PortRef, RemoteError, RemoteMessage, Request,
    RequestRoute, Route, Routes, Tell, TellRoute, tagged,
};
/// `#[derive(RemoteMessage)]`: see [`RemoteMessage`].
pub use aemp_derive::RemoteMessage;
pub use config::{DialectMode, NodeConfig};
pub use database::{DbChange, DbGuard, DbMonitor, valid_family};
pub use groups::{GroupChange, GroupGuard, GroupMonitor};
pub use kernel::{MAX_NODE_PORT_HOPS, UP_NODES_EVAL};
pub use links::transport_error;
use links::{Links, Outgoing};
pub use message::{Message, split_port_id};
pub use mon_forms::TimerGuard;
pub use peer::{ConnectionStats, InitFn};
pub use port_stream::PortStream;
use port_stream::{Inbox, StreamQueue};
pub use ports::{MonitorGuard, Port};
pub use profile::{ProfileError, ProfileFile, ResolvedProfile, Service};
pub use rcv::{PortContext, Rcv};
pub use stats::{Direction, LinkStats, NodeStats};

/// What `#[derive(RemoteMessage)]` expands to refers to; not an API.
#[doc(hidden)]
pub mod __private {
    pub use actix;
}

use crate::net::addr::{self, AddrError};
use crate::net::contract::{TransportConfig, TransportHooks};
use crate::net::log_throttle::{self, LogThrottle, Verdict};
use crate::net::{LinkEnd, TransportError};
use crate::proto::dialect::Dialect;
use crate::proto::framing::{self, FramingError};
use crate::proto::value::{self, Value};
use ports::{Ports, RemoteMonitors, Watcher};
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
    /// A bind or seed address that cannot be used: bad syntax, or (binds only) a host that does
    /// not resolve. The error names the text.
    #[error("cannot use {role} address {source}")]
    Address {
        /// Which list it is in.
        role: AddressRole,
        /// What is wrong with it.
        source: AddrError,
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
    /// A message must serialise to a sequence: its elements are the message.
    #[error("cannot send to {port}: a message must serialise to a sequence")]
    NotASequence {
        /// The destination.
        port: String,
    },
    /// A database family name that cannot be written (`[A-Za-z][A-Za-z0-9_:]*`; the network's
    /// own `'l` and `'g` can only be read).
    #[error("{0:?} is not a database family name ([A-Za-z][A-Za-z0-9_:]*)")]
    Family(String),
    /// A database key must not be empty.
    #[error("a key in family {0:?} must not be empty")]
    DbKey(String),
    /// A database value could not be represented.
    #[error("cannot store the value of {family}/{key}: {reason}")]
    DbValue {
        /// The family.
        family: String,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A port group registration that cannot be made ([`Node::grp_reg`]).
    #[error("cannot register {port} in group {group:?}: {reason}")]
    Group {
        /// The group.
        group: String,
        /// The port.
        port: String,
        /// Why.
        reason: &'static str,
    },
    /// A query of the network's database got no usable answer.
    #[error("query of family {family:?} failed: {reason}")]
    Query {
        /// The family asked about.
        family: String,
        /// Why.
        reason: &'static str,
    },
}

/// Which of [`NodeConfig`]'s address lists an [`NodeError::Address`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRole {
    /// `binds`.
    Bind,
    /// `seeds`.
    Seed,
}

impl std::fmt::Display for AddressRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressRole::Bind => "bind",
            AddressRole::Seed => "seed",
        })
    }
}

/// Why a node's link went down, or why a node that was never up is given up on. Its text is the
/// message of Perl's `("transport_error", node, message)`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DownReason {
    /// The transport ended.
    #[error("{0}")]
    Transport(LinkEnd),
    /// The peer closed the link between two packets: it left (shut down gracefully, or a
    /// one-shot command finished), as far as the socket can tell (see [`LinkEnd::PeerLeft`]).
    /// Reported as `("transport_error", node, "peer left")`, the shape Perl reports; Perl peers
    /// themselves cannot tell a leaving node from a failed one and report
    /// `"Unexpected end-of-file"`.
    #[error("peer left")]
    PeerLeft,
    /// `snd` found the link's send queue full (the peer reads too slowly).
    #[error("send queue full")]
    SendQueueFull,
    /// This node shut down.
    #[error("node shut down")]
    Shutdown,
    /// Messages wait for a node whose address nobody told us.
    #[error("no known address")]
    NoAddress,
    /// None of the node's addresses answered within the connect timeout.
    #[error("unable to connect")]
    Unreachable,
    /// The node linked to us again while we held an older link to it (it was restarted, or saw
    /// that link die before we did): the new link replaced the old one, whose messages in
    /// flight are lost.
    #[error("switched connections")]
    Switched,
}

/// The longest a shutdown waits for links to write what is queued on them.
const SHUTDOWN_FLUSH_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// A shutdown under way (see [`Node::shutdown`]); `.await` it to wait until it is done.
#[derive(Debug)]
pub struct Shutdown {
    done: tokio::sync::watch::Receiver<bool>,
}

impl std::future::IntoFuture for Shutdown {
    type Output = ();
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

    fn into_future(mut self) -> Self::IntoFuture {
        Box::pin(async move {
            let _ = self.done.wait_for(|done| *done).await;
        })
    }
}

/// A node came up or went down.
#[derive(Debug, Clone)]
pub struct NodeEvent {
    /// The node id.
    pub node: String,
    /// Up (`true`) or down.
    pub up: bool,
    /// For down events: `("transport_error", node, message)`, as Perl reports it.
    pub reason: Vec<Value>,
    /// For down events: why, typed.
    pub cause: Option<DownReason>,
    /// For up events: the dialect of the link.
    pub dialect: Option<Dialect>,
}

/// A connection that failed before its link came up (refused, unreachable, auth failure…).
///
/// A dial in [`DialectMode::Auto`] that failed only because the listener speaks another
/// dialect is not reported: the node dials again in that dialect, and reports that dial if it
/// fails.
#[derive(Debug, Clone)]
pub struct LinkError {
    /// The peer's address as dialled or accepted.
    pub addr: String,
    /// What went wrong.
    pub error: Arc<TransportError>,
}

/// A map keyed by node id or port name, looked up once per packet: foldhash (seeded per
/// process) instead of SipHash.
pub(crate) type FastMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// State shared by the node handle, the registry and the inbound paths of the transports.
///
/// # Parts and lock order
///
/// Each part has one job and its own lock: `ports` (the local port table), `links` (up links,
/// and the queues of nodes not up yet), `monitors` (local watchers of remote ports), `events`
/// (node up/down and link errors), `runtime` (workers, listeners, ids, connection counts, the
/// transports' hooks), `spawner` (init functions, spawn names, failed spawns) and `global`
/// (Perl's global services). What only the registry actor needs (handshakes under way, dialect
/// memory) is the registry's own state, behind no lock.
///
/// Locks are leaves: no code holds two of them at once, with one exception, in this order —
/// `links` (read or write), then a link's `SendQueue` lock (a packet is encoded into the queue
/// under the table's read lock; a pending queue is flushed into a new link under its write
/// lock). Callbacks, monitors and sends run after every lock is released, and the global
/// services return effects that are applied outside their lock.
pub(crate) struct Shared {
    pub id: Arc<str>,
    pub config: NodeConfig,
    /// The registry actor: which transport carries which node.
    pub registry: Addr<NodeRegistry>,
    pub ports: Ports,
    pub links: Links,
    pub monitors: RemoteMonitors,
    pub events: Events,
    pub runtime: Runtime,
    pub spawner: peer::Spawner,
    /// The global services (Perl's Global / `g_*`): pure state that returns effects.
    global: Mutex<global::Global>,
}

/// Where the node publishes what happens to links.
pub(crate) struct Events {
    /// Node up/down.
    pub nodes: broadcast::Sender<NodeEvent>,
    /// Connections that failed before coming up, for callers that wait for a link.
    pub link_errors: broadcast::Sender<LinkError>,
}

/// The node's threads, listeners and ids.
pub(crate) struct Runtime {
    /// Arbiters that run transports; the first is the one the node was started on.
    workers: Vec<ArbiterHandle>,
    next_worker: AtomicUsize,
    /// Connection and monitor ids.
    next_id: AtomicU64,
    /// TCP connections dialled and accepted.
    dialled: AtomicU64,
    accepted: AtomicU64,
    /// Connections open now (counted in, counted out at their transport's end).
    open: AtomicUsize,
    /// Accepted connections closed at once for `max_connections`, logged a few at a time.
    refused: Arc<LogThrottle>,
    /// Handshake failures and reconnects, for [`Node::stats`].
    pub tally: stats::Tally,
    /// The addresses we listen on.
    pub listeners: RwLock<Vec<SocketAddr>>,
    /// Set by [`Node::shutdown`]; listeners stop accepting.
    stopped: tokio::sync::watch::Sender<bool>,
    /// What every transport of this node is given.
    pub transports: Arc<TransportHooks>,
    /// Set by `Node::fuzz_offline`: the registry dials nothing.
    #[cfg(feature = "fuzzing")]
    pub offline: std::sync::atomic::AtomicBool,
}

impl Runtime {
    /// A fresh connection or monitor id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a dialled (`true`) or accepted transport.
    pub fn count_connection(&self, dialled: bool) {
        let c = if dialled {
            &self.dialled
        } else {
            &self.accepted
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A counted transport ended.
    pub fn connection_closed(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn connection_stats(&self) -> ConnectionStats {
        ConnectionStats {
            dialled: self.dialled.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed) as u64,
        }
    }

    /// The worker arbiter for the next transport (round robin).
    pub fn worker(&self) -> &ArbiterHandle {
        let i = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        &self.workers[i]
    }

    /// Stops the listeners. Returns whether they were running (the first call).
    fn stop_listening(&self) -> bool {
        !self.stopped.send_replace(true)
    }

    /// Stops the worker arbiters the node started (and the transports on them).
    fn stop_workers(&self) {
        // The first worker is the arbiter the node was started on: not ours to stop.
        for w in self.workers.iter().skip(1) {
            w.stop();
        }
    }

    /// Resolves once the node is shut down.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.stopped.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
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

/// The transports' settings, from the node's.
fn transport_config(id: &Arc<str>, config: &NodeConfig) -> TransportConfig {
    TransportConfig {
        node_id: id.clone(),
        secret: config.secret.clone(),
        allow_cleartext: config.allow_cleartext,
        accept_dialect: match config.dialect {
            DialectMode::Fixed(d) => Some(d),
            DialectMode::Auto { .. } => None,
        },
        tls: config.tls.clone(),
        require_tls: config.require_tls,
        handshake_timeout: config.handshake_timeout,
        max_handshakes: config.max_handshakes,
        send_queue_bytes: config.send_queue_bytes,
        write_timeout: config.write_timeout,
        max_packet: config.max_packet,
        p1_keepalive: config.binds.is_empty().then_some(config.keepalive),
        liveness_timeout: config.liveness_timeout,
    }
}

impl Shared {
    /// The global services, locked: take effects out and apply them after the guard is gone.
    pub fn global(&self) -> MutexGuard<'_, global::Global> {
        lock(&self.global)
    }

    /// Builds the node's state around its registry actor, which it starts (so that the
    /// registry's address is there from the first moment).
    fn start(config: NodeConfig, workers: Vec<ArbiterHandle>) -> Arc<Shared> {
        let ctx = actix::Context::<NodeRegistry>::new();
        let registry = ctx.address();
        let id: Arc<str> = config::resolve_node_id(&config.node_id).into();
        let transports = Arc::new(TransportHooks::new(
            transport_config(&id, &config),
            registry.clone().recipient(),
            registry.clone().recipient(),
            registry.clone().recipient(),
        ));
        let shared = Arc::new(Shared {
            id,
            config,
            registry,
            ports: Ports::new(config::random_name(8)),
            links: Links::default(),
            monitors: RemoteMonitors::default(),
            events: Events {
                nodes: broadcast::channel(1024).0,
                link_errors: broadcast::channel(64).0,
            },
            runtime: Runtime {
                workers,
                next_worker: AtomicUsize::new(0),
                next_id: AtomicU64::new(0),
                dialled: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                open: AtomicUsize::new(0),
                refused: LogThrottle::new(
                    log_throttle::DETAILED_PER_INTERVAL,
                    log_throttle::INTERVAL,
                ),
                tally: stats::Tally::default(),
                listeners: RwLock::default(),
                stopped: tokio::sync::watch::channel(false).0,
                transports,
                #[cfg(feature = "fuzzing")]
                offline: std::sync::atomic::AtomicBool::new(false),
            },
            spawner: peer::Spawner::new(),
            global: Mutex::default(),
        });
        ctx.run(NodeRegistry::new(shared.clone()));
        shared
    }

    /// Serves a bound listener: each accepted connection becomes a transport on a worker.
    fn listen(self: &Arc<Self>, listener: tokio::net::TcpListener, local: SocketAddr) {
        let shared = self.clone();
        let on_accept = move |stream: std::net::TcpStream, peer: SocketAddr| {
            let rt = &shared.runtime;
            if rt.open_connections() >= shared.config.max_connections {
                // Dropping the socket closes it.
                drop(stream);
                let limit = shared.config.max_connections;
                match rt.refused.failure(std::time::Instant::now()) {
                    Verdict::Log => {
                        tracing::warn!(node = %shared.id, %peer, limit, "connection refused: at max_connections")
                    }
                    Verdict::LogAfterSummary(n) => tracing::warn!(
                        node = %shared.id, %peer, limit,
                        "connection refused: at max_connections ({n} more in the last interval)"
                    ),
                    Verdict::Suppress { .. } => {}
                }
                return;
            }
            shared.runtime.count_connection(false);
            crate::net::transport::accept(
                shared.runtime.transports.clone(),
                shared.runtime.worker(),
                stream,
                peer.to_string(),
                shared.runtime.next_id(),
            );
        };
        crate::net::listener::serve(listener, local, self.runtime.stopping(), on_accept);
        write(&self.runtime.listeners).push(local);
    }
}

/// A running node. Clone it freely; the node runs until [`Node::shutdown`] or the actix
/// system stops.
///
/// # Example
///
/// Starting a node inside an actix system:
///
/// ```
/// use aemp::node::{Node, NodeConfig};
///
/// #[actix::main]
/// async fn main() {
///     // By default: a random `anon/…` id, one listener on an ephemeral loopback port.
///     let node = Node::start(NodeConfig::with_secret("s3cret"))
///         .await
///         .unwrap();
///     assert!(node.id().starts_with("anon/"));
///     let addr = node.listeners()[0];
///     assert!(addr.ip().is_loopback() && addr.port() != 0);
///     assert!(node.up_nodes().is_empty());
///     node.shutdown();
/// }
/// ```
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl Node {
    /// Starts a node inside the running actix system: binds its listeners, starts its
    /// workers and registry, and dials its seeds.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        // What can fail is done before any thread or actor starts: a typo in the configuration
        // or a port in use leaves nothing behind.
        let seeds = addr::parse_all(&config.seeds).map_err(|source| NodeError::Address {
            role: AddressRole::Seed,
            source,
        })?;
        let listeners = bind_all(&config.binds).await?;
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // The calling arbiter is the first worker: the first link shares a thread with the
        // caller's actors (no cross-thread hop per message); further links spread over the
        // other cores.
        let workers = std::iter::once(actix::Arbiter::current())
            .chain((1..workers).map(|_| actix::Arbiter::new().handle()))
            .collect();
        let shared = Shared::start(config, workers);
        // Before the first listener: a peer may spawn these as soon as it can reach us.
        peer::register_config_inits(&shared);
        for (listener, local) in listeners {
            shared.listen(listener, local);
        }
        peer::started(&shared);
        // Seeds resolve in the background (a slow resolver must not hold the start up); one
        // that does not resolve is like one that does not answer: logged, not fatal. The
        // registry then keeps every address linked.
        let registry = shared.registry.clone();
        let id = shared.id.clone();
        actix::spawn(async move {
            let mut resolved = Vec::new();
            for seed in seeds {
                match addr::resolve(&seed).await {
                    Ok(addrs) => resolved.extend(addrs.iter().map(ToString::to_string)),
                    Err(e) => tracing::warn!(node = %id, "seed {seed}: {e}"),
                }
            }
            registry.do_send(registry::StartSeeding { addrs: resolved });
        });
        tracing::info!(node = %shared.id, listeners = ?read(&shared.runtime.listeners), "node started");
        // Last, as in Perl's configure: services find the node listening and seeding.
        peer::run_services(&shared);
        Ok(Node { shared })
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The addresses this node listens on (ports resolved).
    pub fn listeners(&self) -> Vec<SocketAddr> {
        read(&self.shared.runtime.listeners).clone()
    }

    /// Subscribes to node up/down events.
    pub fn node_events(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.nodes.subscribe()
    }

    /// Subscribes to connections that fail before their link comes up.
    pub fn link_errors(&self) -> broadcast::Receiver<LinkError> {
        self.shared.events.link_errors.subscribe()
    }

    /// Ids of the nodes with a live link.
    pub fn up_nodes(&self) -> Vec<String> {
        self.shared.links.up_nodes()
    }

    /// The dialect of the live link to `node`.
    pub fn link_dialect(&self, node: &str) -> Option<Dialect> {
        self.shared.links.dialect(node)
    }

    /// Our TLS role on the live link to `node`, if that link runs inside TLS.
    pub fn link_tls(&self, node: &str) -> Option<crate::proto::handshake::TlsRole> {
        self.shared.links.tls(node)
    }

    /// Dials an address (its node id is learned from its greeting).
    pub fn connect(&self, addr: impl Into<String>) {
        self.shared
            .registry
            .do_send(registry::Dial { addr: addr.into() });
    }

    /// Remembers addresses for a node id, so that sending to it dials them.
    pub fn add_node_addresses(&self, node: impl Into<String>, addrs: Vec<String>) {
        self.shared.registry.do_send(registry::Addresses {
            node: node.into(),
            addrs,
        });
    }

    /// Creates a port whose messages go to an actix recipient.
    ///
    /// # Example
    ///
    /// An actor that receives a port's messages:
    ///
    /// ```
    /// use actix::{Actor, Context, Handler};
    /// use aemp::node::{Message, Node, NodeConfig};
    /// use tokio::sync::mpsc;
    ///
    /// struct Greeter(mpsc::UnboundedSender<String>);
    ///
    /// impl Actor for Greeter {
    ///     type Context = Context<Self>;
    /// }
    ///
    /// impl Handler<Message> for Greeter {
    ///     type Result = ();
    ///     fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
    ///         if let Ok((name,)) = msg.decode::<(String,)>() {
    ///             let _ = self.0.send(format!("hello, {name}"));
    ///         }
    ///     }
    /// }
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let node = Node::start(NodeConfig::default()).await.unwrap();
    ///     let (tx, mut rx) = mpsc::unbounded_channel();
    ///     // The port lives as long as this handle.
    ///     let port = node.port(Greeter(tx).start().recipient());
    ///     node.snd(port.id(), &("world",)).unwrap();
    ///     assert_eq!(rx.recv().await.unwrap(), "hello, world");
    /// }
    /// ```
    pub fn port(&self, recipient: Recipient<Message>) -> Port {
        self.new_port(Inbox::Actor(recipient))
    }

    /// Creates a port whose messages arrive on a [`PortStream`]: in an actor,
    /// `ctx.add_stream(stream)` with a `StreamHandler<Message>`. The fast way in for busy
    /// ports: the node queues each message without an actix envelope and the stream takes
    /// everything queued at once.
    ///
    /// # Example
    ///
    /// Outside an actor, `recv` awaits the next message:
    ///
    /// ```
    /// use aemp::node::{Node, NodeConfig};
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let node = Node::start(NodeConfig::default()).await.unwrap();
    ///     let (port, mut inbox) = node.port_stream();
    ///     node.snd(port.id(), &("count", 1)).unwrap();
    ///     node.snd(port.id(), &("count", 2)).unwrap();
    ///     for want in [1, 2] {
    ///         let msg = inbox.recv().await.unwrap();
    ///         assert_eq!(
    ///             msg.decode::<(String, u32)>().unwrap(),
    ///             ("count".into(), want)
    ///         );
    ///     }
    /// }
    /// ```
    pub fn port_stream(&self) -> (Port, PortStream) {
        let queue = std::sync::Arc::new(StreamQueue::new());
        let port = self.new_port(Inbox::Stream(queue.clone()));
        (port, PortStream::new(queue))
    }

    fn new_port(&self, inbox: Inbox) -> Port {
        let (name, serial) = self.shared.ports.insert_new(inbox);
        Port {
            id: format!("{}#{name}", self.shared.id),
            name,
            serial,
            shared: self.shared.clone(),
            detached: false,
        }
    }

    /// Creates a port with a given name (the part after `#`, or a full id on this node), as a
    /// spawn init function must: its port id was chosen by the spawning node. Fails if the name
    /// is empty, contains `#` after the node part, names another node, or is taken.
    pub fn port_named(&self, name: &str, recipient: Recipient<Message>) -> Result<Port, NodeError> {
        self.named_port(name, Inbox::Actor(recipient))
    }

    fn named_port(&self, name: &str, inbox: Inbox) -> Result<Port, NodeError> {
        let bad = || NodeError::PortName(name.to_owned());
        let local = match name.split_once('#') {
            Some((node, local)) if node == &*self.shared.id => local,
            Some(_) => return Err(bad()),
            None => name,
        };
        if local.is_empty() || local.contains('#') {
            return Err(bad());
        }
        let Some(serial) = self.shared.ports.insert_named(local, inbox) else {
            return Err(bad());
        };
        Ok(Port {
            id: format!("{}#{local}", self.shared.id),
            name: local.to_owned(),
            serial,
            shared: self.shared.clone(),
            detached: false,
        })
    }

    /// Builds a port that dispatches on each message's first element, like Perl's `rcv`:
    /// `node.rcv().on("ping", |cx, msg| { … Ok(()) }).start()` returns the port id. The port's
    /// actor runs on the current arbiter.
    ///
    /// # Example
    ///
    /// A port that adds two numbers and sends the sum to the reply port it is given:
    ///
    /// ```
    /// use aemp::node::{Node, NodeConfig};
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let node = Node::start(NodeConfig::default()).await.unwrap();
    ///     let adder = node
    ///         .rcv()
    ///         .on("add", |cx, msg| {
    ///             // The tag is element 0 of what the handler decodes.
    ///             let (_, a, b, reply): (String, i64, i64, String) =
    ///                 msg.decode().map_err(|e| e.to_string())?;
    ///             cx.node.snd(&reply, &(a + b,)).map_err(|e| e.to_string())
    ///         })
    ///         .start();
    ///     let (me, mut inbox) = node.port_stream();
    ///     node.snd(&adder, &("add", 2, 3, me.id())).unwrap();
    ///     let sum = inbox.recv().await.unwrap();
    ///     assert_eq!(sum.decode::<(i64,)>().unwrap(), (5,));
    /// }
    /// ```
    pub fn rcv(&self) -> Rcv {
        Rcv::new(self.clone())
    }

    /// Sends a message to a port, local or remote. Never blocks and never fails for delivery
    /// reasons: lost messages are announced by the monitors of the destination (Perl's rule).
    /// `msg` must serialise to a sequence: its elements are the message.
    pub fn snd<T: Serialize + ?Sized>(&self, port: &str, msg: &T) -> Result<(), NodeError> {
        let (node, name) = split_port_id(port);
        if node == &*self.shared.id {
            let args = match value::to_value(msg) {
                Ok(Value::Array(a)) => a,
                _ => return Err(NodeError::NotASequence { port: port.into() }),
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

    /// Sends a message, waiting for room in the link's queue instead of failing the link. A
    /// link that closes while the message waits for room does not take it along: it then waits
    /// for the node as any message sent while the node is not up (the node is dialled again;
    /// monitors fire if it cannot be reached).
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
    ///
    /// # Example
    ///
    /// A monitor sees the reason a port was killed with; one on a port that does not exist
    /// fires at once:
    ///
    /// ```
    /// use aemp::node::{Node, NodeConfig};
    /// use aemp::proto::value::Value;
    /// use tokio::sync::oneshot;
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let node = Node::start(NodeConfig::default()).await.unwrap();
    ///     let (port, _inbox) = node.port_stream();
    ///     let (tx, rx) = oneshot::channel();
    ///     // Dropping the guard would cancel the monitor; detached, it stays until it fires.
    ///     node.mon(port.id(), move |reason| drop(tx.send(reason)))
    ///         .detach();
    ///     node.kil(port.id(), vec!["stopped".into()]).unwrap();
    ///     assert_eq!(rx.await.unwrap(), vec![Value::from("stopped")]);
    ///
    ///     let (tx, rx) = oneshot::channel();
    ///     let missing = format!("{}#nobody", node.id());
    ///     node.mon(&missing, move |reason| drop(tx.send(reason)))
    ///         .detach();
    ///     assert_eq!(rx.await.unwrap()[0], Value::from("no_such_port"));
    /// }
    /// ```
    pub fn mon(
        &self,
        port: &str,
        callback: impl FnOnce(Vec<Value>) + Send + 'static,
    ) -> MonitorGuard {
        let (node, name) = split_port_id(port);
        let s = &self.shared;
        let id = s.runtime.next_id();
        let guard = MonitorGuard {
            node: node.to_owned(),
            port: name.to_owned(),
            id,
            shared: s.clone(),
            detached: false,
        };
        let watcher = Watcher::callback(callback);
        if node == &*s.id {
            if let Err(watcher) = s.ports.add_monitor(name, id, watcher) {
                let reason = s.spawner.tombstone(name).unwrap_or_else(|| {
                    vec![
                        Value::Str("no_such_port".into()),
                        Value::Str("cannot monitor nonexistent port".into()),
                        Value::Str(port.into()),
                    ]
                });
                s.fire(watcher, name, reason);
            }
            return guard;
        }
        let first = s.monitors.add(node, name, id, watcher);
        if first && !name.is_empty() {
            let _ = s.send_remote(node, "", &("mon1", name));
        } else if name.is_empty() && s.links.dialect(node).is_none() && !s.links.is_pending(node) {
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

    /// Shuts the node down: stops accepting connections, closes every link after the messages
    /// already queued on it are written (each link's monitors fire with `"node shut down"`),
    /// then stops the node's worker threads. It starts at once; `.await` the returned
    /// [`Shutdown`] to wait until every link has closed — at most `write_timeout` (at most
    /// 10 s), after which what was not written is given up.
    ///
    /// Must be called within the actix system that runs the node.
    pub fn shutdown(&self) -> Shutdown {
        let (tx, done) = tokio::sync::watch::channel(false);
        let shared = self.shared.clone();
        if shared.runtime.stop_listening() {
            shared.registry.do_send(registry::Shutdown);
            let bound = shared.config.write_timeout.min(SHUTDOWN_FLUSH_MAX);
            actix::spawn(async move {
                let deadline = tokio::time::Instant::now() + bound;
                while shared.runtime.open_connections() > 0
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                shared.registry.do_send(registry::Stop);
                shared.runtime.stop_workers();
                let _ = tx.send(true);
            });
        } else {
            // Shut down before: nothing more to wait for here.
            let _ = tx.send(true);
        }
        Shutdown { done }
    }
}

/// Resolves and binds every bind address, in order (an element of Perl's syntax may stand for
/// several). All are parsed before any is resolved, so that a typo is reported first. An
/// address with a fixed port that an earlier element bound already is not bound again (as Perl
/// skips a bind it has).
async fn bind_all(
    binds: &[String],
) -> Result<Vec<(tokio::net::TcpListener, SocketAddr)>, NodeError> {
    let bad = |source| NodeError::Address {
        role: AddressRole::Bind,
        source,
    };
    let mut bound = std::collections::HashSet::new();
    let mut out = Vec::new();
    for endpoint in addr::parse_all(binds).map_err(bad)? {
        let group: Vec<SocketAddr> = addr::resolve(&endpoint)
            .await
            .map_err(bad)?
            .into_iter()
            .filter(|sa| sa.port() == 0 || bound.insert(*sa))
            .collect();
        let listeners =
            crate::net::listener::bind_group(&group).map_err(|(addr, source)| NodeError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        out.extend(listeners);
    }
    Ok(out)
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.shared.id)
    }
}
