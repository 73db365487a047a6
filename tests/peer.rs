//! Being a full peer: requests with a reply (`cal`), spawning both ways, and dialect matching
//! between Rust nodes, over real loopback sockets.

use std::time::{Duration, Instant};

use actix::prelude::*;
use aemp::node::{DialectMode, Node, NodeConfig, RemoteError};
use aemp::proto::dialect::Dialect;
use aemp::proto::value::Value;
use tokio::sync::mpsc;

fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("aemp=debug")
        .try_init();
}

async fn node_with(dialect: DialectMode, connect_timeout: Duration) -> Node {
    trace();
    Node::start(NodeConfig {
        secret: b"peer-secret".to_vec(),
        dialect,
        workers: 1,
        connect_timeout,
        ..NodeConfig::default()
    })
    .await
    .unwrap()
}

/// A node on the default dialect policy (auto, dialling in P2).
async fn node() -> Node {
    node_with(DialectMode::default(), Duration::from_secs(10)).await
}

fn introduce(a: &Node, b: &Node) {
    a.add_node_addresses(
        b.id(),
        b.listeners().iter().map(|l| l.to_string()).collect(),
    );
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
}

/// A port answering `[x…, reply]` with `["got", x…]`; `["die"]` kills it, `["mute", reply]`
/// is never answered.
fn server(node: &Node) -> String {
    node.rcv()
        .on("die", |_, _| Err("asked to die".into()))
        .on("mute", |_, _| Ok(()))
        .default(|cx, msg| {
            let mut args = msg.args().map_err(|e| e.to_string())?;
            let reply = args.pop().and_then(|r| r.as_str().map(|r| r.into_owned()));
            let reply = reply.ok_or("no reply port")?;
            let mut answer = vec![Value::from("got")];
            answer.extend(args);
            cx.node.snd(&reply, &answer).map_err(|e| e.to_string())
        })
        .start()
}

#[actix_rt::test]
async fn cal_round_trips_to_a_remote_and_a_local_port() {
    let (a, b) = (node().await, node().await);
    introduce(&a, &b);
    let remote = server(&b);
    let answer = a
        .cal(
            &remote,
            vec![Value::from("x"), Value::Int(7)],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        answer,
        vec![Value::from("got"), Value::from("x"), Value::Int(7)]
    );
    let local = server(&a);
    let answer = a
        .cal(&local, vec![Value::Int(1)], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answer, vec![Value::from("got"), Value::Int(1)]);
}

#[actix_rt::test]
async fn cal_times_out_with_a_timeout_error() {
    let (a, b) = (node().await, node().await);
    introduce(&a, &b);
    let port = server(&b);
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let answer = a.cal(&port, vec![Value::from("mute")], limit).await;
    assert!(
        matches!(answer, Err(RemoteError::Timeout { after, .. }) if after == limit),
        "{answer:?}"
    );
    assert!(started.elapsed() >= limit);
    // The link is fine: the next request is answered.
    let answer = a
        .cal(&port, vec![Value::Int(2)], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answer, vec![Value::from("got"), Value::Int(2)]);
}

#[actix_rt::test]
async fn cal_reports_the_kill_reason_when_the_target_dies() {
    let (a, b) = (node().await, node().await);
    introduce(&a, &b);
    let port = server(&b);
    let started = Instant::now();
    let answer = a
        .cal(&port, vec![Value::from("die")], Duration::from_secs(60))
        .await;
    match answer {
        Err(RemoteError::PortDied { reason, .. }) => {
            assert_eq!(
                reason,
                vec![Value::from("die"), Value::from("asked to die")]
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not by timeout"
    );
    // A port that does not exist at all: at once, too.
    let answer = a
        .cal(&format!("{}#nope", b.id()), vec![], Duration::from_secs(60))
        .await;
    match answer {
        Err(RemoteError::PortDied { reason, .. }) => {
            assert_eq!(reason[0], Value::from("no_such_port"))
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// An actor that asks through `cal` from inside its context.
struct Asker {
    node: Node,
    port: String,
    out: mpsc::UnboundedSender<Option<Vec<Value>>>,
}

impl Actor for Asker {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let fut = self
            .node
            .cal(&self.port, vec![Value::from("hi")], Duration::from_secs(10));
        ctx.spawn(fut.into_actor(self).map(|reply, act, _| {
            let _ = act.out.send(reply.ok());
        }));
    }
}

#[actix_rt::test]
async fn cal_runs_inside_an_actor() {
    let (a, b) = (node().await, node().await);
    introduce(&a, &b);
    let (tx, mut rx) = mpsc::unbounded_channel();
    Asker {
        node: a.clone(),
        port: server(&b),
        out: tx,
    }
    .start();
    assert_eq!(
        recv(&mut rx).await,
        Some(vec![Value::from("got"), Value::from("hi")])
    );
}

/// `My::init(greeting)`: a port that answers `["hello", reply]` with `[greeting, its own id]`.
fn register_my_init(node: &Node) {
    node.register_init("My::init", |node, port_id, args| {
        let greeting = args.first().cloned().unwrap_or(Value::Null);
        node.rcv()
            .on("hello", move |cx, msg| {
                let (_, reply): (String, String) = msg.decode().map_err(|e| e.to_string())?;
                cx.node
                    .snd(&reply, &(greeting.clone(), cx.port.as_str()))
                    .map_err(|e| e.to_string())
            })
            .start_named(&port_id)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

#[actix_rt::test]
async fn spawn_creates_the_port_with_the_chosen_id_remotely_and_locally() {
    let (a, b) = (node().await, node().await);
    introduce(&a, &b);
    register_my_init(&b);
    register_my_init(&a);
    let id = a.spawn(b.id(), "My::init", vec![Value::from("howdy")]);
    assert!(id.starts_with(&format!("{}#", b.id())), "{id}");
    let answer = a
        .cal(&id, vec![Value::from("hello")], Duration::from_secs(10))
        .await
        .ok();
    assert_eq!(answer, Some(vec![Value::from("howdy"), Value::from(&*id)]));
    // Names never repeat, and a local spawn runs at once.
    let local = a.spawn(a.id(), "My::init", vec![Value::Int(5)]);
    assert_ne!(local, id);
    let answer = a
        .cal(&local, vec![Value::from("hello")], Duration::from_secs(10))
        .await
        .ok();
    assert_eq!(answer, Some(vec![Value::Int(5), Value::from(&*local)]));
}

#[actix_rt::test]
async fn spawning_an_unregistered_init_function_kills_the_port_for_its_monitors() {
    let (a, b) = (node().await, node().await);
    introduce(&a, &b);
    // Perl's order: the _spawn request goes first, the mon1 follows on the same link.
    let id = a.spawn(b.id(), "Evil::system", vec![Value::from("rm -rf /")]);
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon(&id, move |reason| {
        let _ = tx.send(reason);
    })
    .detach();
    let reason = recv(&mut fired).await;
    assert_eq!(reason.len(), 2, "{reason:?}");
    assert_eq!(reason[0], Value::from("die"));
    let text = reason[1].as_str().unwrap().into_owned();
    assert!(
        text.contains("Evil::system") && text.contains("not found"),
        "{text}"
    );
    // The same locally; a failing init function dies with its own message.
    b.register_init("Bad::init", |_, _, _| Err("init refused\n".into()));
    let id = b.spawn(b.id(), "Bad::init", vec![]);
    let (tx, mut fired) = mpsc::unbounded_channel();
    b.mon(&id, move |reason| {
        let _ = tx.send(reason);
    })
    .detach();
    assert_eq!(
        recv(&mut fired).await,
        vec![Value::from("die"), Value::from("init refused")]
    );
    // A port that was never spawned still reports no_such_port.
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon(&format!("{}#never", b.id()), move |reason| {
        let _ = tx.send(reason);
    })
    .detach();
    assert_eq!(recv(&mut fired).await[0], Value::from("no_such_port"));
}

#[actix_rt::test]
async fn a_named_port_cannot_take_a_name_twice_or_on_another_node() {
    let a = node().await;
    let id = a.rcv().default(|_, _| Ok(())).start_named("fixed").unwrap();
    assert_eq!(id, format!("{}#fixed", a.id()));
    assert!(a.rcv().start_named("fixed").is_err());
    assert!(a.rcv().start_named(&id).is_err());
    assert!(a.rcv().start_named("other#x").is_err());
    assert!(a.rcv().start_named("").is_err());
    let full = format!("{}#by-id", a.id());
    assert_eq!(a.rcv().start_named(&full).unwrap(), full);
}

/// Every pairing of {P0, P1a, P1b, P2 fixed, Auto} dialling each other: what links, in which
/// dialect, over how many connections.
#[actix_rt::test]
async fn rust_nodes_match_dialects_in_every_combination() {
    let modes = [
        DialectMode::Fixed(Dialect::P0),
        DialectMode::Fixed(Dialect::P1a),
        DialectMode::Fixed(Dialect::P1b),
        DialectMode::Fixed(Dialect::P2),
        DialectMode::Auto {
            default: Dialect::P0,
        },
        DialectMode::default(),
    ];
    let mut cases = Vec::new();
    for dialler in modes {
        for listener in modes {
            cases.push(async move {
                let a = node_with(dialler, Duration::from_secs(10)).await;
                let b = node_with(listener, Duration::from_secs(10)).await;
                introduce(&a, &b);
                let (tx, mut rx) = mpsc::unbounded_channel();
                let port = b
                    .rcv()
                    .default(move |_, _| {
                        let _ = tx.send(());
                        Ok(())
                    })
                    .start();
                // A fixed dialler does not retry: its first failed handshake is the outcome.
                let mut errors = a.link_errors();
                let fixed = matches!(dialler, DialectMode::Fixed(_));
                a.snd(&port, &("hello",)).unwrap();
                let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                    tokio::select! {
                        m = rx.recv() => m.map(|()| String::new()).ok_or(String::new()),
                        e = errors.recv(), if fixed => Err(e.map(|e| e.error.to_string()).unwrap_or_default()),
                    }
                })
                .await
                .expect("neither a link nor an error");
                let result = (
                    outcome.is_ok(),
                    a.link_dialect(b.id()),
                    b.link_dialect(a.id()),
                    a.connection_stats().dialled,
                    b.connection_stats().accepted,
                );
                a.shutdown();
                b.shutdown();
                (dialler, listener, result, outcome)
            });
        }
    }
    let results = futures_util::future::join_all(cases).await;
    for (dialler, listener, (linked, da, db, dialled, accepted), outcome) in results {
        let what = format!("{dialler:?} dialling {listener:?}: {outcome:?}");
        let expected = match (dialler, listener) {
            (DialectMode::Fixed(x), DialectMode::Fixed(y)) => (x == y).then_some(x),
            (DialectMode::Fixed(x), DialectMode::Auto { .. }) => Some(x),
            (DialectMode::Auto { .. }, DialectMode::Fixed(y)) => Some(y),
            (DialectMode::Auto { default }, DialectMode::Auto { .. }) => Some(default),
        };
        assert_eq!(linked, expected.is_some(), "{what}");
        assert_eq!(da, expected, "{what}");
        assert_eq!(db, expected, "{what}");
        if let Some(d) = expected {
            // One connection, unless an auto dialler had to learn the listener's dialect.
            let redial = matches!(dialler, DialectMode::Auto { default } if default != d);
            let n = if redial { 2 } else { 1 };
            assert_eq!((dialled, accepted), (n, n), "{what}");
        } else {
            // Version (P0 vs 1) or dialect (P1a/P1b/P2) mismatch, seen at greeting line 1.
            assert!(
                matches!(&outcome, Err(e) if e.contains("mismatch")),
                "{what}"
            );
        }
    }
}

#[actix_rt::test]
async fn an_auto_dialler_remembers_the_listeners_dialect() {
    // Dialling in P0 first: the P2 listener answers in a version of its own.
    let a = node_with(
        DialectMode::Auto {
            default: Dialect::P0,
        },
        Duration::from_secs(10),
    )
    .await;
    let b = node_with(DialectMode::Fixed(Dialect::P2), Duration::from_secs(10)).await;
    introduce(&a, &b);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let port = b
        .rcv()
        .default(move |_, _| {
            let _ = tx.send(());
            Ok(())
        })
        .start();
    a.snd(&port, &("one",)).unwrap();
    recv(&mut rx).await;
    assert_eq!(a.connection_stats().dialled, 2);
    // Dial the same address again: the greeting is P2 at once, so the only refusal is the
    // duplicate link (ours, at line 1: no failure to report), not the version.
    let mut errors = a.link_errors();
    a.connect(b.listeners()[0].to_string());
    tokio::time::timeout(Duration::from_secs(10), async {
        while a.connection_stats().dialled < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        matches!(
            errors.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "the duplicate dial is no link error"
    );
    assert_eq!(a.connection_stats().dialled, 3);
    assert_eq!(a.link_dialect(b.id()), Some(Dialect::P2));
}

/// The next up (`true`) or down event, within 10 s.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<aemp::node::NodeEvent>,
    up: bool,
) -> aemp::node::NodeEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(ev) if ev.up == up => return ev,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("node events: {e}"),
            }
        }
    })
    .await
    .expect("no such node event within 10 s")
}

#[actix_rt::test]
async fn two_nodes_on_defaults_link_in_p2_at_the_first_attempt() {
    trace();
    let a = Node::start(NodeConfig::with_secret("peer-secret"))
        .await
        .unwrap();
    let b = Node::start(NodeConfig::with_secret("peer-secret"))
        .await
        .unwrap();
    let (mut ea, mut eb) = (a.node_events(), b.node_events());
    a.connect(b.listeners()[0].to_string());
    let up = next_event(&mut ea, true).await;
    assert_eq!((up.node.as_str(), up.dialect), (b.id(), Some(Dialect::P2)));
    let up = next_event(&mut eb, true).await;
    assert_eq!((up.node.as_str(), up.dialect), (a.id(), Some(Dialect::P2)));
    assert_eq!(a.connection_stats().dialled, 1);
    assert_eq!(b.connection_stats().accepted, 1);
    a.shutdown();
    b.shutdown();
}

/// A node on defaults dialling a listener that speaks only P1b: the first dial (P2) is refused
/// at greeting line 1 and dialled again in P1b, with no link error reported and nothing lost
/// of what was sent meanwhile. The address is remembered: after the link is gone (the
/// listener restarted there), the next link is dialled in P1b at once.
#[actix_rt::test]
async fn a_default_node_learns_a_p1b_listener_once_and_loses_no_message() {
    trace();
    const B: &str = "p1b-only";
    let listener = |binds: Vec<String>| NodeConfig {
        node_id: B.into(),
        dialect: DialectMode::Fixed(Dialect::P1b),
        binds,
        workers: 1,
        ..NodeConfig::with_secret("peer-secret")
    };
    let inbox = |node: &Node| {
        let (tx, rx) = mpsc::unbounded_channel();
        node.rcv()
            .default(move |_, msg| {
                let (n,): (u32,) = msg.decode().map_err(|e| e.to_string())?;
                let _ = tx.send(n);
                Ok(())
            })
            .start_named("inbox")
            .unwrap();
        rx
    };
    let a = Node::start(NodeConfig {
        workers: 1,
        ..NodeConfig::with_secret("peer-secret")
    })
    .await
    .unwrap();
    let b = Node::start(listener(vec!["127.0.0.1:0".into()]))
        .await
        .unwrap();
    let addr = b.listeners()[0].to_string();
    let mut rx = inbox(&b);
    a.add_node_addresses(B, vec![addr.clone()]);
    let (mut errors, mut events) = (a.link_errors(), a.node_events());
    // Queued before any link exists; they must survive the failed first attempt.
    for n in 0..200 {
        a.snd(&format!("{B}#inbox"), &(n,)).unwrap();
    }
    for n in 0..200 {
        assert_eq!(recv(&mut rx).await, n);
    }
    let up = next_event(&mut events, true).await;
    assert_eq!((up.node.as_str(), up.dialect), (B, Some(Dialect::P1b)));
    assert_eq!(b.link_dialect(a.id()), Some(Dialect::P1b));
    assert_eq!(
        a.connection_stats().dialled,
        2,
        "one failed attempt, one redial"
    );
    assert_eq!(b.connection_stats().accepted, 2);
    assert!(
        errors.try_recv().is_err(),
        "the redialled mismatch is no link error"
    );

    // The listener restarts at the same address: the link drops, and the next one is dialled
    // in P1b straight away.
    b.shutdown();
    next_event(&mut events, false).await;
    let b = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Node::start(listener(vec![addr.clone()])).await {
                Ok(b) => break b,
                // The old listener may hold the port for a moment.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("restart the listener at {addr}: {e}"),
            }
        }
    };
    let mut rx = inbox(&b);
    for n in 200..400 {
        a.snd(&format!("{B}#inbox"), &(n,)).unwrap();
    }
    for n in 200..400 {
        assert_eq!(recv(&mut rx).await, n);
    }
    let up = next_event(&mut events, true).await;
    assert_eq!(up.dialect, Some(Dialect::P1b));
    assert_eq!(a.connection_stats().dialled, 3, "no second failed attempt");
    assert_eq!(b.connection_stats().accepted, 1);
    assert!(errors.try_recv().is_err(), "{:?}", errors.try_recv());
    a.shutdown();
    b.shutdown();
}
