//! Typed remote actors across two processes: this test binary runs itself a second time as a
//! service process (`service_process`, ignored unless asked for) that exposes a supervised
//! actor, and talks to it over real loopback sockets — tells, requests, every `RemoteError`,
//! Perl's monitor forms and `after`, and a restart under actix's `Supervisor` with a handle that
//! follows the actor's registered name. Then scripted Perl peers (shapes from the captures)
//! call a Rust typed actor with `cal` and answer a Rust typed request.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use aemp::node::{Exposed, Node, NodeConfig, PortRef, RemoteError, RemoteMessage, tagged};
use aemp::proto::value::Value;
use common::procs::Proc;
use common::scripted::{Peer, WAIT, line1, rust_node};
use common::{Capture, Dir};
use serde::{Deserialize, Serialize};
use serde_json::json;

const SECRET: &str = "typed-secret";
/// The database name the service registers its port under.
const FAMILY: &str = "typed_test";
const KEY: &str = "calc";

// ---- the messages (both processes compile the same definitions, as two programs would) -----

#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "add", reply = i64)]
struct Add(i64, i64);

#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "say")]
struct Say {
    text: String,
}

#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "said", reply = Vec<String>)]
struct Said;

/// Never answered.
#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "mute", reply = i64)]
struct Mute;

/// The service kills its own port with `("fail", reason)` instead of answering.
#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "fail", reply = i64)]
struct Fail {
    reason: String,
}

/// Answered with a string...
#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "version", reply = String)]
struct Version;

/// ...which a client that expects a number cannot decode.
#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "version", reply = u32)]
struct VersionAsNumber;

/// The actor stops; its supervisor restarts it.
#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "crash")]
struct Crash;

// ---- the service process -------------------------------------------------------------------

struct Calc {
    node: Node,
    said: Vec<String>,
    generation: u32,
    port: Option<Exposed>,
    /// Told each new port id (in-process tests).
    report: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl Actor for Calc {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mut port = self
            .node
            .expose(ctx.address())
            .request::<Add>()
            .tell::<Say>()
            .request::<Said>()
            .request::<Mute>()
            .request::<Fail>()
            .request::<Version>()
            .tell::<Crash>()
            .start();
        port.register(FAMILY, KEY).expect("register");
        println!("PORT {} {}", self.generation, port.id());
        if let Some(tx) = &self.report {
            let _ = tx.send(port.id().to_owned());
        }
        self.port = Some(port);
    }
}

impl Supervised for Calc {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The old port dies (a normal exit) and its name goes with it; `started` makes the
        // next ones.
        self.port = None;
        self.generation += 1;
    }
}

impl Handler<Add> for Calc {
    type Result = i64;
    fn handle(&mut self, Add(a, b): Add, _: &mut Context<Self>) -> i64 {
        a + b
    }
}

impl Handler<Say> for Calc {
    type Result = ();
    fn handle(&mut self, say: Say, _: &mut Context<Self>) {
        self.said.push(say.text);
    }
}

impl Handler<Said> for Calc {
    type Result = Vec<String>;
    fn handle(&mut self, _: Said, _: &mut Context<Self>) -> Vec<String> {
        self.said.clone()
    }
}

impl Handler<Mute> for Calc {
    type Result = ResponseFuture<i64>;
    fn handle(&mut self, _: Mute, _: &mut Context<Self>) -> Self::Result {
        Box::pin(std::future::pending())
    }
}

impl Handler<Fail> for Calc {
    type Result = ResponseFuture<i64>;
    fn handle(&mut self, fail: Fail, _: &mut Context<Self>) -> Self::Result {
        if let Some(port) = &self.port {
            let reason = vec![Value::from("fail"), Value::from(fail.reason)];
            let _ = self.node.kil(port.id(), reason);
        }
        Box::pin(std::future::pending())
    }
}

impl Handler<Version> for Calc {
    type Result = String;
    fn handle(&mut self, _: Version, _: &mut Context<Self>) -> String {
        "v1".into()
    }
}

impl Handler<Crash> for Calc {
    type Result = ();
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The service: run only as the child of the tests below (`AEMP_TYPED_SERVICE=1`).
#[test]
#[ignore = "the service process of the typed-actor tests; they start it"]
fn service_process() {
    if std::env::var_os("AEMP_TYPED_SERVICE").is_none() {
        return;
    }
    actix::System::new().block_on(async {
        let node = Node::start(NodeConfig {
            binds: vec!["127.0.0.1:0".into()],
            ..NodeConfig::with_secret(SECRET)
        })
        .await
        .expect("start the service node");
        println!("NODE {} LISTEN {}", node.id(), node.listeners()[0]);
        let n = node.clone();
        Supervisor::start(move |_| Calc {
            node: n,
            said: Vec::new(),
            generation: 0,
            port: None,
            report: None,
        });
        std::future::pending::<()>().await;
    });
}

/// Starts the service process and waits for its first port.
fn service() -> (Proc, String) {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--exact", "service_process", "--ignored", "--nocapture"])
        .env("AEMP_TYPED_SERVICE", "1")
        .env("RUST_LOG", "off");
    let mut p = Proc::start("service", cmd);
    let (_, line) = p.wait_for(|l| l.starts_with("PORT 0 "), Duration::from_secs(30));
    let port = line["PORT 0 ".len()..].to_owned();
    (p, port)
}

/// The service's next line that starts with `prefix`, waited for without blocking this thread
/// (it runs the client node's links).
async fn next_line(p: &mut Proc, prefix: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((_, line)) = p.try_wait_for(|l| l.starts_with(prefix), Duration::ZERO) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {prefix}… line; it printed:\n{}",
            p.name,
            p.transcript()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node of this process with the service as its seed.
async fn client(service: &Proc) -> Node {
    Node::start(NodeConfig {
        seeds: vec![service.addr.clone()],
        ..NodeConfig::with_secret(SECRET)
    })
    .await
    .expect("start the client node")
}

fn short<M>(r: PortRef<M>) -> PortRef<M> {
    r.with_timeout(Duration::from_secs(10))
}

#[actix_rt::test]
async fn tells_and_requests_cross_processes_in_order() {
    let (svc, port) = service();
    let node = client(&svc).await;
    let say = short(node.port_ref::<Say>(&port));
    for text in ["one", "two", "three"] {
        say.do_send(Say { text: text.into() }).unwrap();
    }
    say.send(Say {
        text: "four".into(),
    })
    .await
    .unwrap();
    let said = say.cast::<Said>().request(Said).await.unwrap();
    assert_eq!(said, ["one", "two", "three", "four"]);
    let add = say.cast::<Add>();
    assert_eq!(add.request(Add(20, 22)).await.unwrap(), 42);
    // Requests in flight at once are each answered with their own reply.
    let sums = futures_util::future::join_all((0..50).map(|i| add.request(Add(i, i)))).await;
    for (i, sum) in sums.into_iter().enumerate() {
        assert_eq!(sum.unwrap(), 2 * i as i64);
    }
    // `cal` is the untyped form of the same request.
    let raw = node
        .cal(&port, vec!["add".into(), 1.into(), 2.into()], WAIT)
        .await
        .unwrap();
    assert_eq!(raw, vec![Value::Int(3)]);
}

#[actix_rt::test]
async fn every_remote_error_is_told_apart() {
    let (svc, port) = service();
    // A node that gives up on an unreachable node after 2 s.
    let node = Node::start(NodeConfig {
        seeds: vec![svc.addr.clone()],
        connect_timeout: Duration::from_secs(2),
        ..NodeConfig::with_secret(SECRET)
    })
    .await
    .unwrap();
    let r = |d: Duration| node.port_ref::<Mute>(&port).with_timeout(d);

    // No answer within the timeout.
    let started = Instant::now();
    let err = r(Duration::from_millis(300))
        .request(Mute)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RemoteError::Timeout { after, .. } if *after == Duration::from_millis(300)),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A reply that does not decode as the reply type.
    let err = short(node.port_ref::<VersionAsNumber>(&port))
        .request(VersionAsNumber)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RemoteError::Undecodable {
                expected: "u32",
                ..
            }
        ),
        "{err}"
    );
    // (The same request typed as the service answers it decodes.)
    let v = short(node.port_ref::<Version>(&port))
        .request(Version)
        .await;
    assert_eq!(v.unwrap(), "v1");

    // The port killed while the request waits: its kill reason.
    let err = short(node.port_ref::<Fail>(&port))
        .request(Fail {
            reason: "boom".into(),
        })
        .await
        .unwrap_err();
    match &err {
        RemoteError::PortDied { port: p, reason } => {
            assert_eq!(p, &port);
            assert_eq!(reason, &vec![Value::from("fail"), Value::from("boom")]);
        }
        other => panic!("{other}"),
    }
    // The dead port: `no_such_port` at once.
    let err = short(node.port_ref::<Add>(&port))
        .request(Add(1, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RemoteError::PortDied { reason, .. } if reason[0] == Value::from("no_such_port")),
        "{err}"
    );

    // A node nobody answers for.
    let ghost = format!("ghost-{}", std::process::id());
    let closed = common::scripted::free_port();
    node.add_node_addresses(&ghost, vec![format!("127.0.0.1:{closed}")]);
    let err = node
        .port_ref::<Add>(&format!("{ghost}#p"))
        .with_timeout(Duration::from_secs(60))
        .request(Add(1, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RemoteError::Unreachable { node: n, .. } if *n == ghost),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_request_whose_node_dies_reports_the_transport_error() {
    let (mut svc, _) = service();
    let node = client(&svc).await;
    let mute = short(node.lookup::<Mute>(FAMILY, KEY).unwrap());
    let waiting = tokio::spawn(mute.request(Mute));
    // The request is under way (answered never) when the service's process dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    svc.kill9();
    match waiting.await.unwrap().unwrap_err() {
        RemoteError::Unreachable { node: n, message } => {
            assert_eq!(n, svc.node);
            assert!(!message.is_empty());
        }
        other => panic!("{other}"),
    }
}

#[actix_rt::test]
async fn perls_monitor_forms_and_after_across_processes() {
    let (svc, port) = service();
    let node = client(&svc).await;
    let said = short(node.port_ref::<Said>(&port));

    // after: a typed message sent later; a dropped timer sends nothing.
    let later = Say {
        text: "later".into(),
    };
    node.after(Duration::from_millis(100), &port, &tagged(&later))
        .unwrap()
        .detach();
    let never = Say {
        text: "never".into(),
    };
    drop(
        node.after(Duration::from_millis(50), &port, &tagged(&never))
            .unwrap(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.after_fn(Duration::from_millis(100), move || {
        let _ = tx.send(());
    })
    .detach();
    rx.await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let now = said.request(Said).await.unwrap();
        if now.contains(&"later".to_owned()) {
            assert!(!now.contains(&"never".to_owned()), "{now:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the timed message never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Three monitors on the service's port: a link to a local port, a message to a local
    // port, and values kept alive until the port dies.
    let (victim, _victim_inbox) = node.port_stream();
    let (victim_tx, victim_died) = tokio::sync::oneshot::channel();
    node.mon(victim.id(), move |reason| drop(victim_tx.send(reason)))
        .detach();
    node.mon_link(&port, victim.id()).detach();
    let (notes, mut inbox) = node.port_stream();
    node.mon_send(&port, notes.id(), &("gone", port.as_str()))
        .unwrap()
        .detach();
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    node.mon_guard(&port, Flag(dropped.clone())).detach();
    // A monitor whose guard is dropped never fires.
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    drop(node.mon(&port, move |_| c.store(true, Ordering::SeqCst)));

    // The port is killed with a reason (Perl's kil1 to the service's node).
    let reason = vec![Value::from("shutdown"), Value::from("by test")];
    node.kil(&port, reason.clone()).unwrap();
    let note = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let mut want = vec![Value::from("gone"), Value::from(port.as_str())];
    want.extend(reason.clone());
    assert_eq!(note.args().unwrap(), want);
    assert_eq!(
        tokio::time::timeout(WAIT, victim_died)
            .await
            .unwrap()
            .unwrap(),
        reason
    );
    assert!(dropped.load(Ordering::SeqCst));
    assert!(!cancelled.load(Ordering::SeqCst));
}

#[actix_rt::test]
async fn a_restarted_actor_keeps_its_name_and_old_holders_see_the_old_port_go() {
    let (mut svc, first) = service();
    let node = client(&svc).await;
    let add = short(node.lookup::<Add>(FAMILY, KEY).unwrap());
    assert_eq!(add.request(Add(1, 2)).await.unwrap(), 3);
    assert_eq!(add.port_id().as_deref(), Some(first.as_str()));

    // Holders of the old port id: a monitor, and a link to a local port.
    let (old_tx, old_died) = tokio::sync::oneshot::channel();
    node.mon(&first, move |reason| drop(old_tx.send(reason)))
        .detach();
    let (victim, _inbox) = node.port_stream();
    let linked_killed = Arc::new(AtomicBool::new(false));
    let k = linked_killed.clone();
    node.mon(victim.id(), move |_| k.store(true, Ordering::SeqCst))
        .detach();
    node.mon_link(&first, victim.id()).detach();

    // The actor stops; actix's Supervisor restarts it, and it exposes and registers anew.
    add.cast::<Crash>().do_send(Crash).unwrap();
    let line = next_line(&mut svc, "PORT 1 ").await;
    let second = line["PORT 1 ".len()..].to_owned();
    assert_ne!(second, first, "port ids are never reused");
    // The old port exited normally: its monitors fire with no reason...
    let reason = tokio::time::timeout(WAIT, old_died).await.unwrap().unwrap();
    assert_eq!(reason, Vec::<Value>::new());
    // ...and a normal exit kills no linked port.
    let deadline = Instant::now() + WAIT;
    while add.port_id().as_deref() != Some(second.as_str()) {
        assert!(Instant::now() < deadline, "the name never moved: {add:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The name-based handle works on: the new port, the new actor state.
    assert_eq!(add.request(Add(2, 2)).await.unwrap(), 4);
    assert!(add.cast::<Said>().request(Said).await.unwrap().is_empty());
    assert!(!linked_killed.load(Ordering::SeqCst));
    // A handle on the old id does not follow: the old port is gone.
    let err = short(node.port_ref::<Add>(&first))
        .request(Add(1, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::PortDied { .. }), "{err}");
}

// ---- Perl peers ----------------------------------------------------------------------------

/// A Rust node with the Calc actor exposed, and a scripted Perl 2.x node linked to it (JSON
/// framing, the greeting of `p2-probe-json`'s client).
async fn rust_and_perl() -> (Node, String, Peer, Addr<Calc>) {
    let cap = Capture::load("p2-probe-json");
    let node = rust_node("rust-calc", &cap.secret, NodeConfig::default()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = Calc {
        node: node.clone(),
        said: Vec::new(),
        generation: 0,
        port: None,
        report: Some(tx),
    }
    .start();
    let port = rx.recv().await.unwrap();
    let listener = node.listeners()[0].to_string();
    let peer = Peer::dial(
        &listener,
        "perl-peer",
        line1(&cap, 0, Dir::C2s, "perl-peer", &listener),
        &cap.secret,
    )
    .await;
    (node, port, peer, addr)
}

#[actix_rt::test]
async fn a_perl_cal_reaches_a_typed_handler_and_gets_its_reply() {
    let (_node, port, mut perl, _calc) = rust_and_perl().await;
    let name = port.split_once('#').unwrap().1.to_owned();
    // Perl's `cal $port, add => 2, 3, $cb`: a monitor, then the request with the reply port.
    perl.send(json!(["", "mon1", &name])).await;
    perl.send(json!([&name, "add", 2, 3, "perl-peer#r1"])).await;
    perl.expect_eq(json!(["r1", 5])).await;
    // Numbers that Perl last used as strings travel as strings; they still add up.
    perl.send(json!([&name, "add", "20", " 22 ", "perl-peer#r1"]))
        .await;
    perl.expect_eq(json!(["r1", 42])).await;
    // `snd $port, say => "hi"` twice, then `cal $port, "said"`: a list reply is its elements.
    perl.send(json!([&name, "say", "hi"])).await;
    perl.send(json!([&name, "say", "there"])).await;
    perl.send(json!([&name, "said", "perl-peer#r2"])).await;
    perl.expect_eq(json!(["r2", "hi", "there"])).await;
    // A tag the actor does not take: the port dies as a Perl `rcv` port would, and the Perl
    // monitor hears why.
    perl.send(json!([&name, "multiply", 2, 3, "perl-peer#r3"]))
        .await;
    perl.expect_eq(json!([
        "",
        "kil0",
        &name,
        "unhandled_message",
        "no callback found for message 'multiply'"
    ]))
    .await;
}

#[actix_rt::test]
async fn a_rust_typed_request_decodes_a_perl_reply() {
    let (node, _port, mut perl, _calc) = rust_and_perl().await;
    let adder = short(node.port_ref::<Add>("perl-peer#adder"));

    // Perl's `rcv $adder, add => sub { snd $_[2], $_[0] + $_[1] }`.
    let asking = tokio::spawn({
        let adder = adder.clone();
        async move { adder.request(Add(2, 3)).await }
    });
    perl.expect_eq(json!(["", "mon1", "adder"])).await;
    let req = perl.expect("the request", |p| p[0] == "adder").await;
    assert_eq!(
        req.as_array().unwrap()[1..4],
        [json!("add"), json!(2), json!(3)],
        "{req}"
    );
    let reply = req[4].as_str().unwrap().to_owned();
    let (rnode, rname) = reply.split_once('#').unwrap();
    assert_eq!(rnode, node.id());
    perl.send(json!([rname, 5])).await;
    assert_eq!(asking.await.unwrap().unwrap(), 5);
    // The request's monitor is cancelled once answered.
    perl.expect_eq(json!(["", "mon0", "adder"])).await;

    // A reply whose number Perl last used as a string.
    let asking = tokio::spawn({
        let adder = adder.clone();
        async move { adder.request(Add(2, 2)).await }
    });
    let req = perl.expect("the request", |p| p[0] == "adder").await;
    let (_, rname) = req[4].as_str().unwrap().split_once('#').unwrap();
    perl.send(json!([rname, "4"])).await;
    assert_eq!(asking.await.unwrap().unwrap(), 4);
    perl.expect_eq(json!(["", "mon0", "adder"])).await;

    // A reply of the wrong shape.
    let asking = tokio::spawn({
        let adder = adder.clone();
        async move { adder.request(Add(1, 1)).await }
    });
    let req = perl.expect("the request", |p| p[0] == "adder").await;
    let (_, rname) = req[4].as_str().unwrap().split_once('#').unwrap();
    perl.send(json!([rname, "five"])).await;
    let err = asking.await.unwrap().unwrap_err();
    assert!(matches!(err, RemoteError::Undecodable { .. }), "{err}");

    // The Perl port dies while the request waits (`kil0`, the P2 notification).
    let asking = tokio::spawn(async move { adder.request(Add(1, 1)).await });
    perl.expect("the request", |p| p[0] == "adder").await;
    perl.send(json!(["", "kil0", "adder", "die", "oops at -e line 1."]))
        .await;
    match asking.await.unwrap().unwrap_err() {
        RemoteError::PortDied { port, reason } => {
            assert_eq!(port, "perl-peer#adder");
            assert_eq!(
                reason,
                vec![Value::from("die"), Value::from("oops at -e line 1.")]
            );
        }
        other => panic!("{other}"),
    }
}
