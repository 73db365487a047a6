//! Being a full peer: spawning ports on other nodes and letting them spawn here (AEMP-NOTES
//! §3.5, with the [`Spawner`] state: init functions, spawn names, recently failed spawns),
//! requests with a reply (`cal`), and the node's views of the global services.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::global;
use super::{Node, RemoteError, Shared, lock, read, write};
use crate::proto::node_request::tag;
use crate::proto::value::Value;

/// An init function other nodes may spawn by name (Perl's `spawn $node, "Pkg::init", @args`).
///
/// It gets the node, the id the spawning node chose for the new port (`<our id>#<name>`) and the
/// init arguments, and should create that port, typically with
/// `node.rcv().on(…).start_named(&port_id)`. An `Err` (or a panic) kills the port id with
/// `("die", message)`, which monitors of it see, as in Perl.
pub type InitFn = Arc<dyn Fn(&Node, String, Vec<Value>) -> Result<(), String> + Send + Sync>;

/// How long the death of a spawned port that never came to life is remembered: the spawning
/// node's `mon1` follows its `_spawn` on the same link, so it arrives within moments.
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);
/// At most this many such deaths are remembered (oldest forgotten first).
const TOMBSTONES: usize = 1024;

/// How many transports a node has dialled and accepted since it started, and how many are
/// open now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionStats {
    /// TCP connections this node opened.
    pub dialled: u64,
    /// TCP connections this node accepted.
    pub accepted: u64,
    /// Connections open now (in their handshake or up).
    pub open: u64,
}

/// Spawning: the init functions other nodes may spawn here, the names we choose for ports we
/// spawn elsewhere, and the spawns here that failed lately.
pub(crate) struct Spawner {
    inits: RwLock<HashMap<String, InitFn>>,
    /// Spawned port names whose spawn failed: (name, reason, when).
    tombstones: Mutex<VecDeque<(String, Vec<Value>, Instant)>>,
    /// Prefix of the port names we choose on other nodes (Perl's RUNIQ).
    spawn_uniq: String,
    next_spawn: AtomicU64,
}

impl Spawner {
    pub fn new() -> Spawner {
        let mut inits: HashMap<String, InitFn> = HashMap::new();
        inits.insert(global::CONNECT_INIT.into(), Arc::new(global::connect_init));
        Spawner {
            inits: RwLock::new(inits),
            tombstones: Mutex::default(),
            // Longer than local port prefixes, so that the two never coincide.
            spawn_uniq: super::config::random_name(12),
            next_spawn: AtomicU64::new(0),
        }
    }

    /// A fresh name for a port we spawn on another node.
    fn new_name(&self) -> String {
        let n = self.next_spawn.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.spawn_uniq)
    }

    /// The reason a spawned port died before it could be monitored, if that happened lately.
    pub fn tombstone(&self, name: &str) -> Option<Vec<Value>> {
        let mut t = lock(&self.tombstones);
        while t
            .front()
            .is_some_and(|(_, _, at)| at.elapsed() > TOMBSTONE_TTL)
        {
            t.pop_front();
        }
        t.iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, r, _)| r.clone())
    }

    fn bury(&self, name: &str, reason: Vec<Value>) {
        let mut t = lock(&self.tombstones);
        if t.len() >= TOMBSTONES {
            t.pop_front();
        }
        t.push_back((name.to_owned(), reason, Instant::now()));
    }
}

/// Runs once the node's listeners are bound.
pub(crate) fn started(shared: &Arc<Shared>) {
    let listeners = read(&shared.runtime.listeners)
        .iter()
        .map(ToString::to_string)
        .collect();
    shared.global().start(shared.id.to_string(), listeners);
}

/// Registers the configuration's `init_functions`.
pub(crate) fn register_config_inits(shared: &Arc<Shared>) {
    let mut inits = write(&shared.spawner.inits);
    for (name, f) in &shared.config.init_functions {
        inits.insert(name.clone(), f.clone());
    }
}

/// Perl's services that this crate has built in: nothing to run for them.
const BUILT_IN_SERVICES: &[&str] = &["AnyEvent::MP::Global::", "AnyEvent::MP::Global"];

/// Runs the configuration's `services` (see [`NodeConfig::services`](super::NodeConfig)):
/// each one's init function with a fresh port id; missing or failing ones are logged.
pub(crate) fn run_services(shared: &Arc<Shared>) {
    for service in &shared.config.services {
        let name = service.name();
        let f = read(&shared.spawner.inits).get(name).cloned();
        let Some(f) = f else {
            if BUILT_IN_SERVICES.contains(&name) {
                tracing::debug!(node = %shared.id, service = name, "service built in");
            } else {
                tracing::warn!(node = %shared.id, service = name, "service not started: no init function registered under this name");
            }
            continue;
        };
        let node = Node {
            shared: shared.clone(),
        };
        let port_id = format!("{}#{}", shared.id, shared.spawner.new_name());
        let args = service.args().to_vec();
        match catch_unwind(AssertUnwindSafe(|| f(&node, port_id, args))) {
            Ok(Ok(())) => tracing::info!(node = %shared.id, service = name, "service started"),
            Ok(Err(e)) => tracing::warn!(node = %shared.id, service = name, "service failed: {e}"),
            Err(_) => tracing::warn!(node = %shared.id, service = name, "service panicked"),
        }
    }
}

/// A `_spawn` request from `from` (or from ourselves): create our port `name` by running the
/// init function `init` with `args`. The name was checked (not empty, no `#`) when parsed.
pub(crate) fn spawn_request(
    shared: &Arc<Shared>,
    from: &str,
    name: String,
    init: String,
    args: Vec<Value>,
) {
    let port_id = format!("{}#{name}", shared.id);
    let f = read(&shared.spawner.inits).get(&init).cloned();
    let outcome = match f {
        None => {
            tracing::warn!(node = %shared.id, peer = from, init, "refused spawn: not a registered init function");
            Err(format!(
                "{init}: init function not found or not allowed on this node"
            ))
        }
        Some(f) => {
            let node = Node {
                shared: shared.clone(),
            };
            catch_unwind(AssertUnwindSafe(|| f(&node, port_id, args))).unwrap_or_else(|panic| {
                Err(panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| format!("{init} panicked")))
            })
        }
    };
    if let Err(message) = outcome {
        // Remembered first: the spawner's mon1 may be in flight and must see this reason.
        let reason = vec![
            Value::Str("die".into()),
            Value::Str(message.trim_end_matches('\n').into()),
        ];
        shared.spawner.bury(&name, reason.clone());
        shared.kill_local(&name, reason);
    }
}

impl Node {
    /// Registers an init function that other nodes (and [`Node::spawn`]) may spawn by name.
    /// `AnyEvent::MP::Global::connect`, which 1.x Perl peers spawn on every node, is registered
    /// from the start.
    pub fn register_init(
        &self,
        name: impl Into<String>,
        f: impl Fn(&Node, String, Vec<Value>) -> Result<(), String> + Send + Sync + 'static,
    ) {
        write(&self.shared.spawner.inits).insert(name.into(), Arc::new(f));
    }

    /// Spawns a port on `node` (Perl's `spawn`): sends
    /// `["", "AnyEvent::MP::_spawn", name, init, args…]` there and returns the new port's id,
    /// `<node>#<name>`, at once. The name is chosen here and is unique. The port exists once the
    /// target ran its init function `init`; if that fails or is not registered there, the port
    /// dies with `("die", …)`, which a monitor of the returned id sees. A spawn on this node
    /// runs the init function before returning.
    ///
    /// # Example
    ///
    /// One node lets others spawn greeters; a second node spawns one there and talks to it:
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use aemp::node::{Node, NodeConfig};
    /// use aemp::proto::value::Value;
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let server = Node::start(NodeConfig::with_secret("s3cret"))
    ///         .await
    ///         .unwrap();
    ///     server.register_init("greeter", |node, port_id, args| {
    ///         let greeting = args.first().and_then(Value::as_str).unwrap_or_default();
    ///         let greeting = greeting.into_owned();
    ///         node.rcv()
    ///             .on("greet", move |cx, msg| {
    ///                 let (_, name, reply): (String, String, String) =
    ///                     msg.decode().map_err(|e| e.to_string())?;
    ///                 let text = format!("{greeting}, {name}");
    ///                 cx.node.snd(&reply, &(text,)).map_err(|e| e.to_string())
    ///             })
    ///             .start_named(&port_id)
    ///             .map(drop)
    ///             .map_err(|e| e.to_string())
    ///     });
    ///
    ///     let client = Node::start(NodeConfig {
    ///         seeds: vec![server.listeners()[0].to_string()],
    ///         ..NodeConfig::with_secret("s3cret")
    ///     })
    ///     .await
    ///     .unwrap();
    ///     // The id is known at once; the port exists once the request has run over there.
    ///     let greeter = client.spawn(server.id(), "greeter", vec!["hello".into()]);
    ///     assert!(greeter.starts_with(&format!("{}#", server.id())));
    ///     // Sent after the spawn request on the same link, so it arrives after it.
    ///     let (me, mut inbox) = client.port_stream();
    ///     client.snd(&greeter, &("greet", "world", me.id())).unwrap();
    ///     let answer = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
    ///         .await
    ///         .expect("an answer within 10 s")
    ///         .expect("the port is open");
    ///     assert_eq!(answer.decode::<(String,)>().unwrap().0, "hello, world");
    /// }
    /// ```
    pub fn spawn(&self, node: &str, init: &str, args: Vec<Value>) -> String {
        let name = self.shared.spawner.new_name();
        if node == &*self.shared.id {
            spawn_request(&self.shared, node, name.clone(), init.to_owned(), args);
        } else {
            let mut msg = vec![
                Value::Str(tag::SPAWN.into()),
                Value::Str(name.clone()),
                Value::Str(init.into()),
            ];
            msg.extend(args);
            if let Err(e) = self.shared.send_remote(node, "", &Value::Array(msg)) {
                tracing::warn!(node = %self.shared.id, peer = node, "spawn not sent: {e}");
            }
        }
        format!("{node}#{name}")
    }

    /// Sends a request and waits for its reply (Perl's `cal`): a fresh reply port's id is
    /// appended to `args` as the last element, and the first message that port receives is the
    /// answer, as its elements. The target port is monitored for the duration; the error says
    /// whether `timeout` passed, the port died (with its kill reason), or its node could not be
    /// reached. The request is sent at once; the reply port lives until the future completes
    /// or is dropped. ([`PortRef::request`](super::PortRef::request) is the typed form.)
    ///
    /// Call it inside the actix system. From an actor, run it with
    /// `ctx.spawn(node.cal(…).into_actor(self).map(|reply, act, ctx| …))`.
    ///
    /// # Example
    ///
    /// A request to a port on another node, and one to that node's node port:
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use aemp::node::{Node, NodeConfig};
    /// use aemp::proto::value::Value;
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let server = Node::start(NodeConfig::with_secret("s3cret"))
    ///         .await
    ///         .unwrap();
    ///     let adder = server
    ///         .rcv()
    ///         .on("add", |cx, msg| {
    ///             // `cal` appended the reply port as the last element.
    ///             let (_, a, b, reply): (String, i64, i64, String) =
    ///                 msg.decode().map_err(|e| e.to_string())?;
    ///             cx.node.snd(&reply, &(a + b,)).map_err(|e| e.to_string())
    ///         })
    ///         .start();
    ///
    ///     let client = Node::start(NodeConfig {
    ///         seeds: vec![server.listeners()[0].to_string()],
    ///         ..NodeConfig::with_secret("s3cret")
    ///     })
    ///     .await
    ///     .unwrap();
    ///     let timeout = Duration::from_secs(10);
    ///     let sum = client.cal(&adder, vec!["add".into(), 2.into(), 3.into()], timeout);
    ///     assert_eq!(sum.await.unwrap(), vec![Value::Int(5)]);
    ///     // A bare node id names its node port: `time` answers with the node's clock.
    ///     let now = client
    ///         .cal(server.id(), vec!["time".into()], timeout)
    ///         .await
    ///         .unwrap();
    ///     assert!(now[0].as_f64().is_some_and(|secs| secs > 0.0));
    /// }
    /// ```
    pub fn cal(
        &self,
        port: &str,
        mut args: Vec<Value>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Value>, RemoteError>> + Send + 'static {
        let call = self.start_call(port, timeout);
        args.push(Value::Str(call.reply_id().to_owned()));
        let sent = self.snd(port, &args);
        let port = port.to_owned();
        async move {
            call.wait(sent)
                .await?
                .args()
                .map_err(|source| RemoteError::Undecodable {
                    port,
                    expected: "a message",
                    source,
                })
        }
    }

    /// How many transports this node has dialled and accepted.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.shared.runtime.connection_stats()
    }

    /// The listener addresses this node knows for `node` (its own announcement, or what the
    /// global services told).
    pub fn known_listeners(&self, node: &str) -> Option<Vec<String>> {
        self.shared.global().listeners_of(node)
    }

    /// Every node whose listeners this node knows (itself included), with them: on a global
    /// node the whole network, elsewhere what links and the 1.x mesh told it.
    pub fn known_nodes(&self) -> BTreeMap<String, Vec<String>> {
        self.shared.global().known_listeners()
    }

    /// The global node this node is bound to (itself on a global node): the first of its seeds
    /// that came up, replaced by another up seed when it goes away. `None` without an up seed
    /// that speaks the P2 cluster protocol (a Perl 2.x or Rust node).
    pub fn master(&self) -> Option<String> {
        self.shared.global().master().map(str::to_owned)
    }

    /// Whether this node is a global node: one of its seed addresses is itself, or another
    /// node made it its seed (`g_slave`).
    pub fn is_global(&self) -> bool {
        self.shared.global().is_global()
    }
}
