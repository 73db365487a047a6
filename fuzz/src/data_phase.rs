//! The `data_phase` target's node: one node, started once per process on an actix system of its
//! own thread, with links from made-up peers (one per dialect and framing, up without sockets,
//! through the crate's hidden `fuzzing` entry points) and a few ports fuzz input can name.
//!
//! An input is a selector byte (see [`link_kind`]) and the bytes that peer sends in the data
//! phase. They are cut into packets by the link's framing and delivered as the link's reader
//! would deliver them, node-port requests (`""`) included.
//!
//! Invariants beyond "no panic" (a panic on the node's thread aborts the fuzzer too):
//! * everything the node sends to a peer decodes in that peer's framing;
//! * every [`CHECK_EVERY`] inputs, the node still answers: a local `snd` to a fresh port and a
//!   message and an `info` request over a link all arrive, synchronously;
//! * no pending queue (messages for a node that is not up, such as a made-up one) takes a
//!   message while at its configured bound;
//! * every [`EPOCH`] inputs the links go down: then, within a few connect timeouts, nothing is
//!   pending and no remote node is watched; and once the ports input created are killed, only
//!   the fixed ports are left.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ArbiterHandle, Handler};
use aemp::node::fuzzing::FuzzLink;
use aemp::node::{DialectMode, Message, Node, NodeConfig, PortStream};
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{Framing, encode_packet};
use aemp::proto::value::Value;
use bytes::BytesMut;

/// The node's id.
pub const NODE: &str = "fuzznode";

/// The ports input can name: an actor port, a stream port and an `rcv` port (tags `echo`:
/// `[echo, reply_port, msg…]` sends `msg` to `reply_port`; `die`: the port dies; others are
/// ignored).
pub const FIXED_PORTS: [&str; 3] = ["a", "s", "r"];

/// An init function peers may `_spawn`: an `rcv` port like `r`.
pub const FUZZ_INIT: &str = "fuzz::init";

/// The node's connect timeout: messages for a node that does not come up wait this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// Bytes a pending queue (or a link's send queue) may hold: small, so that the bound is reached.
pub const QUEUE_BYTES: usize = 64 * 1024;

/// Inputs between liveness checks.
pub const CHECK_EVERY: u64 = 128;

/// Inputs between resets (links down, input's ports killed, state back to the fixed ports).
pub const EPOCH: u64 = 4096;

/// How long the node may take to settle after a reset.
const SETTLE: Duration = Duration::from_secs(10);

/// The selector byte of a link: dialect and framing.
pub fn selector(dialect: Dialect, framing: Framing) -> u8 {
    let d = Dialect::ALL.iter().position(|x| *x == dialect).unwrap_or(0);
    let f = Framing::ALL.iter().position(|x| *x == framing).unwrap_or(0);
    (d * Framing::ALL.len() + f) as u8
}

/// The dialect and framing a selector byte picks (modulo the 12 combinations).
pub fn link_kind(selector: u8) -> (Dialect, Framing) {
    let n = usize::from(selector) % (Dialect::ALL.len() * Framing::ALL.len());
    (
        Dialect::ALL[n / Framing::ALL.len()],
        Framing::ALL[n % Framing::ALL.len()],
    )
}

/// The made-up peer of a link kind.
pub fn peer_id(dialect: Dialect, framing: Framing) -> String {
    format!("peer-{}-{}", dialect.name(), framing.name())
}

/// The actor behind port `a`: takes messages, reads them, stops when told.
struct Sink;

impl Actor for Sink {
    type Context = actix::Context<Self>;
}

impl Handler<Message> for Sink {
    type Result = ();
    fn handle(&mut self, msg: Message, _: &mut actix::Context<Self>) {
        let _ = msg.args();
    }
}

#[derive(actix::Message)]
#[rtype(result = "()")]
struct Stop;

impl Handler<Stop> for Sink {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut actix::Context<Self>) {
        ctx.stop();
    }
}

/// `[echo, reply_port, msg…]`: sends `msg` to `reply_port`.
fn echo(node: &Node, msg: &Message) {
    let Ok(args) = msg.args() else { return };
    if let Some(reply) = args.get(1).and_then(Value::as_str) {
        let _ = node.snd(&reply, &Value::Array(args[2..].to_vec()));
    }
}

/// Starts an `rcv` port named `name`, as `r` and the ports of `FUZZ_INIT` are.
fn start_rcv(node: &Node, name: &str) -> Result<String, String> {
    node.rcv()
        .on("echo", |cx, msg| {
            echo(&cx.node, &msg);
            Ok(())
        })
        .on("die", |_, _| Err("asked to die".into()))
        .default(|_, _| Ok(()))
        .start_named(name)
        .map_err(|e| e.to_string())
}

/// Creates fixed port `name` (on the node's arbiter); `dead` is set when it dies.
fn create_fixed(node: &Node, name: &'static str, dead: Arc<AtomicBool>) {
    let id = format!("{NODE}#{name}");
    let created = match name {
        "a" => {
            let addr = Sink.start();
            match node.port_named(name, addr.clone().recipient()) {
                Ok(port) => {
                    // Lives until killed; then the monitor below stops the actor.
                    port.detach();
                    let dead = dead.clone();
                    node.mon(&id, move |_| {
                        addr.do_send(Stop);
                        dead.store(true, Ordering::Release);
                    })
                    .detach();
                    true
                }
                Err(_) => false,
            }
        }
        "s" => match node.fuzz_port_stream_named(name) {
            Some((port, mut inbox)) => {
                port.detach();
                // The consumer: ends when the port is killed.
                actix::spawn(async move { while inbox.recv().await.is_some() {} });
                let dead = dead.clone();
                node.mon(&id, move |_| dead.store(true, Ordering::Release))
                    .detach();
                true
            }
            None => false,
        },
        _ => match start_rcv(node, name) {
            Ok(_) => {
                let dead = dead.clone();
                node.mon(&id, move |_| dead.store(true, Ordering::Release))
                    .detach();
                true
            }
            Err(_) => false,
        },
    };
    // Taken (by a port input spawned under that name): try again later.
    dead.store(!created, Ordering::Release);
}

/// The node and its links; see the module docs.
pub struct Fixture {
    node: Node,
    arbiter: ArbiterHandle,
    links: HashMap<u8, FuzzLink>,
    dead: [Arc<AtomicBool>; 3],
    inputs: u64,
}

static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();

/// Runs one input against the process's node (started by the first call).
pub fn run(data: &[u8]) {
    let fixture = FIXTURE.get_or_init(|| Mutex::new(Fixture::start()));
    let mut fixture = fixture.lock().unwrap_or_else(|e| e.into_inner());
    fixture.input(data);
}

impl Fixture {
    /// Starts the node on an actix system of its own thread, offline, with its fixed ports.
    pub fn start() -> Fixture {
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("aemp-node".into())
            .spawn(move || {
                let sys = actix::System::new();
                sys.block_on(async move {
                    let config = NodeConfig {
                        node_id: NODE.into(),
                        secret: b"secret".to_vec(),
                        binds: Vec::new(),
                        dialect: DialectMode::Auto {
                            default: Dialect::P2,
                        },
                        connect_timeout: CONNECT_TIMEOUT,
                        send_queue_bytes: QUEUE_BYTES,
                        max_packet: crate::FUZZ_MAX_PACKET,
                        workers: 1,
                        ..NodeConfig::default()
                    };
                    let node = Node::start(config).await.expect("node starts");
                    node.fuzz_offline();
                    node.register_init(FUZZ_INIT, |node, port_id, _| {
                        start_rcv(node, &port_id).map(drop)
                    });
                    let _ = tx.send((node, actix::Arbiter::current()));
                });
                sys.run().expect("actix system runs");
            })
            .expect("node thread starts");
        let (node, arbiter) = rx.recv().expect("node started");
        let mut fixture = Fixture {
            node,
            arbiter,
            links: HashMap::new(),
            dead: Default::default(),
            inputs: 0,
        };
        for i in 0..FIXED_PORTS.len() {
            fixture.dead[i].store(true, Ordering::Release);
        }
        fixture.revive();
        fixture
    }

    /// Runs `f` with the node on its arbiter, and waits for it.
    fn on_node<T: Send + 'static>(&self, f: impl FnOnce(&Node) -> T + Send + 'static) -> T {
        let node = self.node.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        assert!(
            self.arbiter.spawn_fn(move || {
                let _ = tx.send(f(&node));
            }),
            "the node's arbiter is gone"
        );
        rx.recv_timeout(SETTLE)
            .expect("the node's arbiter stopped answering")
    }

    /// Creates the fixed ports that died.
    fn revive(&mut self) {
        for (i, name) in FIXED_PORTS.into_iter().enumerate() {
            if self.dead[i].load(Ordering::Acquire) {
                let dead = self.dead[i].clone();
                self.on_node(move |node| create_fixed(node, name, dead));
            }
        }
    }

    /// The link of a selector byte, brought up (again) if it is not up.
    fn link(&mut self, selector: u8) -> &mut FuzzLink {
        let sel = selector % 12;
        // A link the node failed (its send queue overflowed): a transport would end, and the
        // peer dial again. The registry hears of the end before the new link.
        if self.links.get(&sel).is_some_and(|l| !l.is_up()) {
            self.links.remove(&sel);
        }
        self.links.entry(sel).or_insert_with(|| {
            let (dialect, framing) = link_kind(sel);
            self.node
                .fuzz_link(&peer_id(dialect, framing), dialect, framing)
                .expect("the registry takes a new link")
        })
    }

    /// One input: selector byte, then the peer's bytes.
    pub fn input(&mut self, data: &[u8]) {
        let Some((&sel, bytes)) = data.split_first() else {
            return;
        };
        self.revive();
        self.link(sel).feed(bytes);
        for link in self.links.values() {
            if let Some(bad) = link.sent_garbage() {
                panic!("the node sent what its own decoder refuses: {bad}");
            }
        }
        let census = self.node.fuzz_census();
        assert!(
            census.pending_over_bound.is_empty(),
            "pending queues took messages past their bound of {QUEUE_BYTES} bytes: {:?}",
            census.pending_over_bound
        );
        self.inputs += 1;
        if self.inputs.is_multiple_of(CHECK_EVERY) {
            self.check_alive(sel);
        }
        if self.inputs.is_multiple_of(EPOCH) {
            self.reset();
        }
    }

    /// The node still delivers: a local `snd`, a message over the link of `sel`, and the answer
    /// to an `info` request over it, all to a fresh stream port, all there at once.
    pub fn check_alive(&mut self, sel: u8) {
        let (port, mut inbox) = self.node.port_stream();
        let (_, name) = aemp::node::split_port_id(port.id());
        let name = name.to_owned();
        self.node
            .snd(port.id(), &("ping", "local"))
            .expect("local snd");
        let framing = link_kind(sel).1;
        let mut wire = BytesMut::new();
        encode_packet(framing, &name, &("ping", "link"), &mut wire).expect("encode ping");
        encode_packet(framing, "", &("info", port.id(), "pong"), &mut wire).expect("encode info");
        let fed = self.link(sel).feed(&wire);
        assert_eq!(fed.packets, 2, "the check's packets did not decode");
        let got: Vec<Vec<Value>> = (0..3).map(|_| ready(&mut inbox)).collect();
        let want: Vec<Vec<Value>> = vec![
            vec!["ping".into(), "local".into()],
            vec!["ping".into(), "link".into()],
            vec!["pong".into(), NODE.into()],
        ];
        assert_eq!(got, want, "the node stopped delivering");
    }

    /// Polls until `done(census)` holds, where census is (up links, pending nodes, watched
    /// nodes); panics after `SETTLE`.
    fn wait_for(&self, what: &str, done: impl Fn((usize, usize, usize)) -> bool) {
        let start = Instant::now();
        loop {
            let c = self.node.fuzz_census();
            let state = (c.up, c.pending, c.watched_nodes);
            if done(state) {
                return;
            }
            assert!(
                start.elapsed() < SETTLE,
                "waited {SETTLE:?} for {what}: (up, pending, watched) = {state:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Takes every link down, waits for the node to give up on the nodes that never came up,
    /// kills every port and creates the fixed ones again, and checks that they are all that is
    /// left.
    pub fn reset(&mut self) {
        self.links.clear();
        self.wait_for("links to go down and pending nodes to time out", |c| {
            c == (0, 0, 0)
        });
        for name in self.node.fuzz_port_names() {
            self.on_node(move |node| {
                let _ = node.kil(&format!("{NODE}#{name}"), Vec::new());
            });
        }
        // Killing fires monitors, which may message made-up nodes: those time out too.
        self.wait_for("the kills' messages to time out", |c| c == (0, 0, 0));
        self.revive();
        let mut ports = self.node.fuzz_port_names();
        ports.sort();
        let mut want: Vec<String> = FIXED_PORTS.iter().map(|p| p.to_string()).collect();
        want.sort();
        assert_eq!(ports, want, "ports left after a reset");
    }
}

/// A message that must be queued already: polls `recv` once, panics if it is not ready.
fn ready(inbox: &mut PortStream) -> Vec<Value> {
    let mut cx = Context::from_waker(Waker::noop());
    let recv = pin!(inbox.recv());
    match Future::poll(recv, &mut cx) {
        Poll::Ready(Some(msg)) => msg.args().expect("a readable message"),
        Poll::Ready(None) => panic!("the check's port died"),
        Poll::Pending => panic!("the node stopped delivering: a message is missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds::{data_phase_input, node_port_requests};

    #[test]
    fn selectors_cover_every_link_kind_once() {
        let mut seen = Vec::new();
        for s in 0..12u8 {
            let kind = link_kind(s);
            assert_eq!(selector(kind.0, kind.1), s);
            assert!(!seen.contains(&kind));
            seen.push(kind);
        }
        assert_eq!(link_kind(12), link_kind(0));
    }

    /// The seeds' requests on every link kind, with the checks and a reset in between.
    #[test]
    fn the_node_survives_every_request_on_every_link() {
        let mut f = Fixture::start();
        for group in node_port_requests() {
            for dialect in Dialect::ALL {
                for framing in Framing::ALL {
                    let input = data_phase_input(dialect, framing, &group);
                    f.input(&input);
                    f.check_alive(input[0]);
                }
            }
        }
        f.reset();
        for s in 0..12 {
            f.check_alive(s);
        }
        // 1.x peers get the node's global helper spawned on them as their link comes up.
        let p0 = selector(Dialect::P0, Framing::Json);
        assert!(f.links[&p0].sent() > 0);
    }
}
