//! Ports: tag dispatch, port life tied to its actor, handler failures, and monitors that see
//! all of it from another node; reconnection after a link died.

use std::time::Duration;

use actix::prelude::*;
use aemp::node::{Message, Node, NodeConfig, Port};
use aemp::proto::value::Value;
use tokio::sync::mpsc;

async fn pair() -> (Node, Node) {
    let a = Node::start(NodeConfig::with_secret("k")).await.unwrap();
    let b = Node::start(NodeConfig::with_secret("k")).await.unwrap();
    a.add_node_addresses(
        b.id(),
        b.listeners().iter().map(|l| l.to_string()).collect(),
    );
    (a, b)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("timed out")
        .expect("closed")
}

/// Monitors `port` from `node`, after making sure the link and the `mon1` are in place.
async fn watch(node: &Node, port: &str) -> mpsc::UnboundedReceiver<Vec<Value>> {
    let (tx, rx) = mpsc::unbounded_channel();
    node.mon(port, move |r| {
        let _ = tx.send(r);
    })
    .detach();
    // A relay through the target node's port comes back after the mon1 was handled there.
    let (me, mut sync) = node.port_stream();
    let (target, _) = aemp::node::split_port_id(port);
    node.snd(target, &("snd", me.id(), "synced")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), sync.recv())
        .await
        .unwrap()
        .unwrap();
    rx
}

#[actix_rt::test]
async fn rcv_dispatches_on_the_first_element() {
    let (a, b) = pair().await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let (t1, t2) = (tx.clone(), tx);
    let port = b
        .rcv()
        .on("add", move |_, m| {
            let (_, x, y): (String, i64, i64) = m.decode().map_err(|e| e.to_string())?;
            t1.send(format!("add {}", x + y)).map_err(|e| e.to_string())
        })
        .default(move |_, m| {
            t2.send(format!("other {}", Value::Array(m.args().unwrap())))
                .map_err(|e| e.to_string())
        })
        .start();
    a.snd(&port, &("add", 2, 3)).unwrap();
    a.snd(&port, &("mul", 2, 3)).unwrap();
    b.snd(&port, &("add", 1, 1)).unwrap();
    let mut got = vec![
        next(&mut seen).await,
        next(&mut seen).await,
        next(&mut seen).await,
    ];
    got.sort();
    assert_eq!(got, ["add 2", "add 5", "other [\"mul\",2,3]"]);
}

#[actix_rt::test]
async fn a_failing_handler_kills_the_port_with_die_and_remote_monitors_see_it() {
    let (a, b) = pair().await;
    let port = b.rcv().on("boom", |_, _| Err("disk full\n".into())).start();
    let mut fired = watch(&a, &port).await;
    a.snd(&port, &("boom",)).unwrap();
    assert_eq!(
        next(&mut fired).await,
        vec![Value::from("die"), Value::from("disk full")]
    );
}

#[actix_rt::test]
async fn a_panicking_handler_kills_the_port_with_die() {
    let (a, b) = pair().await;
    let port = b
        .rcv()
        .on("boom", |_, _| -> Result<(), String> {
            panic!("handler exploded")
        })
        .start();
    let mut fired = watch(&a, &port).await;
    a.snd(&port, &("boom",)).unwrap();
    assert_eq!(
        next(&mut fired).await,
        vec![Value::from("die"), Value::from("handler exploded")]
    );
}

#[actix_rt::test]
async fn a_message_without_a_handler_kills_the_port_as_in_perl() {
    let (a, b) = pair().await;
    let port = b.rcv().on("only", |_, _| Ok(())).start();
    let mut fired = watch(&a, &port).await;
    a.snd(&port, &("something-else",)).unwrap();
    let reason = next(&mut fired).await;
    assert_eq!(reason[0], Value::from("die"));
    assert!(reason[1].as_str().unwrap().contains("without callback"));
}

/// An actor that owns its port (held only to be dropped with the actor) and stops when told.
struct Worker {
    _port: Port,
}
impl Actor for Worker {
    type Context = Context<Self>;
}
impl Handler<Message> for Worker {
    type Result = ();
    fn handle(&mut self, m: Message, ctx: &mut Context<Self>) {
        if m.tag().as_deref() == Some("stop") {
            ctx.stop();
        }
    }
}

#[actix_rt::test]
async fn a_port_dies_with_its_actor_and_remote_monitors_see_a_normal_exit() {
    let (a, b) = pair().await;
    let mut id = String::new();
    Worker::create(|ctx| {
        let port = b.port(ctx.address().recipient());
        id = port.id().to_owned();
        Worker { _port: port }
    });
    let mut fired = watch(&a, &id).await;
    a.snd(&id, &("stop",)).unwrap();
    assert_eq!(next(&mut fired).await, Vec::<Value>::new());
}

#[actix_rt::test]
async fn a_node_whose_link_died_is_dialled_again_on_the_next_send() {
    let a = Node::start(NodeConfig::with_secret("k")).await.unwrap();
    let config = NodeConfig {
        node_id: "comes-back".into(),
        ..NodeConfig::with_secret("k")
    };
    let b1 = Node::start(config.clone()).await.unwrap();
    let addr = b1.listeners()[0].to_string();
    a.add_node_addresses("comes-back", vec![addr.clone()]);
    let (p1, mut rx1) = b1.port_stream();
    let name = p1.id().to_owned();
    a.snd(&name, &("one",)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx1.recv())
        .await
        .unwrap()
        .unwrap();
    let mut events = a.node_events();
    b1.shutdown();
    let down = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!down.up);
    // The node comes back on the same address; the next send dials it again.
    let b2 = Node::start(NodeConfig {
        binds: vec![addr],
        ..config
    })
    .await
    .unwrap();
    let (me, mut rx) = a.port_stream();
    a.snd("comes-back", &("snd", me.id(), "back")).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.args().unwrap(), vec![Value::from("back")]);
    assert_eq!(a.up_nodes(), vec!["comes-back".to_owned()]);
    drop(b2);
}

#[actix_rt::test]
async fn an_unreachable_node_drops_its_queue_and_fires_monitors_after_the_connect_timeout() {
    let a = Node::start(NodeConfig {
        connect_timeout: Duration::from_millis(300),
        ..NodeConfig::with_secret("k")
    })
    .await
    .unwrap();
    // A port that nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    a.add_node_addresses("nowhere", vec![closed.to_string()]);
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon("nowhere#p", move |r| {
        let _ = tx.send(r);
    })
    .detach();
    a.snd("nowhere#p", &("lost",)).unwrap();
    assert_eq!(
        next(&mut fired).await,
        vec![
            Value::from("transport_error"),
            Value::from("nowhere"),
            Value::from("unable to connect")
        ]
    );
    // Without any address the reason says so.
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon("unknown-node#p", move |r| {
        let _ = tx.send(r);
    })
    .detach();
    assert_eq!(
        next(&mut fired).await,
        vec![
            Value::from("transport_error"),
            Value::from("unknown-node"),
            Value::from("no known address")
        ]
    );
}

/// Counts `n` messages from a port stream, then reports their sequence numbers.
struct StreamCounter {
    seen: Vec<u64>,
    want: usize,
    done: Option<mpsc::UnboundedSender<Vec<u64>>>,
    _port: Port,
}
impl Actor for StreamCounter {
    type Context = Context<Self>;
}
impl StreamHandler<Message> for StreamCounter {
    fn handle(&mut self, m: Message, _: &mut Context<Self>) {
        let (_, seq): (String, u64) = m.decode().unwrap();
        self.seen.push(seq);
        if self.seen.len() == self.want
            && let Some(done) = self.done.take()
        {
            let _ = done.send(std::mem::take(&mut self.seen));
        }
    }
}

#[actix_rt::test]
async fn a_stream_port_feeds_an_actor_every_remote_message_in_order() {
    let (a, b) = pair().await;
    let (tx, mut done) = mpsc::unbounded_channel();
    let mut id = String::new();
    StreamCounter::create(|ctx| {
        let (port, stream) = b.port_stream();
        id = port.id().to_owned();
        ctx.add_stream(stream);
        StreamCounter {
            seen: Vec::new(),
            want: 20_000,
            done: Some(tx),
            _port: port,
        }
    });
    for seq in 0..20_000u64 {
        a.send(&id, &("n", seq)).await.unwrap();
    }
    let seen = next(&mut done).await;
    assert_eq!(seen, (0..20_000).collect::<Vec<u64>>());
}

#[actix_rt::test]
async fn a_killed_stream_port_ends_its_stream_after_what_was_queued() {
    let (a, b) = pair().await;
    let (port, mut stream) = b.port_stream();
    let id = port.detach();
    let (me, mut sync) = a.port_stream();
    a.snd(&id, &("one",)).unwrap();
    // A relay through b after "one": b has handled "one" when it comes back.
    a.snd(b.id(), &("snd", me.id(), "synced")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), sync.recv())
        .await
        .unwrap()
        .unwrap();
    b.kil(&id, vec![Value::from("bye")]).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.recv())
        .await
        .unwrap();
    assert_eq!(first.unwrap().tag().as_deref(), Some("one"));
    let end = tokio::time::timeout(Duration::from_secs(10), stream.recv())
        .await
        .unwrap();
    assert!(end.is_none());
}

#[actix_rt::test]
async fn dropping_a_port_stream_kills_its_port_at_the_next_message() {
    let (a, b) = pair().await;
    let (port, stream) = b.port_stream();
    let id = port.detach();
    let mut fired = watch(&a, &id).await;
    drop(stream);
    a.snd(&id, &("anyone there?",)).unwrap();
    assert_eq!(next(&mut fired).await, Vec::<Value>::new());
}

/// A port handle outlives its port when the port is killed by name (`kil`, a peer's kill): the
/// name may then be taken by a new port, which dropping the old handle must not kill.
#[actix_rt::test]
async fn dropping_a_stale_port_handle_spares_a_new_port_of_the_same_name() {
    struct Sink(mpsc::UnboundedSender<Vec<Value>>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Message> for Sink {
        type Result = ();
        fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
            let _ = self.0.send(msg.args().unwrap());
        }
    }
    let node = Node::start(NodeConfig::default()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let old: Port = node
        .port_named("reused", Sink(tx.clone()).start().recipient())
        .unwrap();
    node.kil(old.id(), vec!["killed".into()]).unwrap();
    let new = node
        .port_named("reused", Sink(tx).start().recipient())
        .unwrap();
    assert_eq!(old.id(), new.id());
    drop(old);
    node.snd(new.id(), &("still", "there")).unwrap();
    assert_eq!(
        next(&mut rx).await,
        vec![Value::from("still"), Value::from("there")]
    );

    // The same through an rcv port, whose actor drops its handle when it stops after the kill.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = node
        .rcv()
        .default(|_, _| Ok(()))
        .start_named("tagged")
        .unwrap();
    node.kil(&id, Vec::new()).unwrap();
    let again = node
        .rcv()
        .default(move |_, msg| {
            let _ = tx.send(msg.args().unwrap());
            Ok(())
        })
        .start_named("tagged")
        .unwrap();
    assert_eq!(id, again);
    // Time for the first actor to notice that its port is gone and stop.
    tokio::time::sleep(Duration::from_millis(50)).await;
    node.snd(&again, &("alive",)).unwrap();
    assert_eq!(next(&mut rx).await, vec![Value::from("alive")]);
}
