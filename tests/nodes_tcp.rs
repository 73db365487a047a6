//! Nodes talking over real loopback sockets, in one process.

use std::time::Duration;

use actix::prelude::*;
use aemp::node::{DialectMode, Message, Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use aemp::proto::value::Value;
use tokio::sync::{mpsc, oneshot};

struct Collect(mpsc::UnboundedSender<Message>);
impl Actor for Collect {
    type Context = Context<Self>;
}
impl Handler<Message> for Collect {
    type Result = ();
    fn handle(&mut self, m: Message, _: &mut Context<Self>) {
        let _ = self.0.send(m);
    }
}

fn collector() -> (Recipient<Message>, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collect(tx).start().recipient(), rx)
}

async fn node(dialect: DialectMode) -> Node {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("aemp=debug")
        .try_init();
    Node::start(NodeConfig {
        secret: b"test-secret".to_vec(),
        dialect,
        workers: 2,
        ..NodeConfig::default()
    })
    .await
    .unwrap()
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

#[actix_rt::test]
async fn messages_flow_both_ways_in_every_dialect() {
    for d in Dialect::ALL {
        let a = node(DialectMode::Fixed(d)).await;
        let b = node(DialectMode::Fixed(d)).await;
        introduce(&a, &b);
        let (ra, mut rxa) = collector();
        let (rb, mut rxb) = collector();
        let pa = a.port(ra);
        let pb = b.port(rb);
        a.snd(pb.id(), &("hello", 1, pa.id())).unwrap();
        let m = recv(&mut rxb).await;
        assert_eq!(&*m.from, a.id());
        let (tag, n, reply): (String, i64, String) = m.decode().unwrap();
        assert_eq!((tag.as_str(), n), ("hello", 1));
        b.snd(&reply, &("pong", vec![1.5, 2.0])).unwrap();
        let m = recv(&mut rxa).await;
        let (tag, v): (String, Vec<f64>) = m.decode().unwrap();
        assert_eq!((tag.as_str(), v), ("pong", vec![1.5, 2.0]));
        assert_eq!(a.link_dialect(b.id()), Some(d));
        assert_eq!(b.link_dialect(a.id()), Some(d));
        a.shutdown();
        b.shutdown();
    }
}

#[actix_rt::test]
async fn a_listener_on_auto_answers_in_the_diallers_dialect() {
    for d in Dialect::ALL {
        let a = node(DialectMode::Fixed(d)).await;
        let b = node(DialectMode::default()).await;
        introduce(&a, &b);
        let (rb, mut rxb) = collector();
        let pb = b.port(rb);
        a.snd(pb.id(), &("x",)).unwrap();
        recv(&mut rxb).await;
        assert_eq!(b.link_dialect(a.id()), Some(d));
    }
}

#[actix_rt::test]
async fn a_hundred_thousand_messages_arrive_complete_and_in_order() {
    let a = node(DialectMode::Fixed(Dialect::P2)).await;
    let b = node(DialectMode::Fixed(Dialect::P2)).await;
    introduce(&a, &b);
    let (rb, mut rxb) = collector();
    let pb = b.port(rb);
    let id = pb.id().to_owned();
    let sender = a.clone();
    actix_rt::spawn(async move {
        for i in 0..100_000u32 {
            sender.send(&id, &(i,)).await.unwrap();
        }
    });
    for i in 0..100_000u32 {
        let (n,): (u32,) = recv(&mut rxb).await.decode().unwrap();
        assert_eq!(n, i);
    }
}

#[actix_rt::test]
async fn messages_sent_before_the_link_is_up_arrive_in_order() {
    let a = node(DialectMode::Fixed(Dialect::P1b)).await;
    let b = node(DialectMode::Fixed(Dialect::P1b)).await;
    introduce(&a, &b);
    let (rb, mut rxb) = collector();
    let pb = b.port(rb);
    for i in 0..1000 {
        a.snd(pb.id(), &(i,)).unwrap();
    }
    for i in 0..1000 {
        let (n,): (i32,) = recv(&mut rxb).await.decode().unwrap();
        assert_eq!(n, i);
    }
}

#[actix_rt::test]
async fn remote_monitors_fire_with_the_kill_reason() {
    for d in [Dialect::P0, Dialect::P1a, Dialect::P1b, Dialect::P2] {
        let a = node(DialectMode::Fixed(d)).await;
        let b = node(DialectMode::Fixed(d)).await;
        introduce(&a, &b);
        let (rb, _rxb) = collector();
        let pb = b.port(rb).detach();
        let (tx, mut fired) = mpsc::unbounded_channel();
        a.mon(&pb, move |reason| {
            let _ = tx.send(reason);
        })
        .detach();
        // Wait for the link and the mon1 to arrive, then kill on b.
        let (rb2, mut rxb2) = collector();
        let probe = b.port(rb2);
        a.snd(probe.id(), &("sync",)).unwrap();
        recv(&mut rxb2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.kil(&pb, vec![Value::from("my_error"), Value::from("disk full")])
            .unwrap();
        let reason = recv(&mut fired).await;
        assert_eq!(
            reason,
            vec![Value::from("my_error"), Value::from("disk full")],
            "{d}"
        );
    }
}

#[actix_rt::test]
async fn monitoring_a_missing_port_reports_no_such_port() {
    for d in [Dialect::P0, Dialect::P2] {
        let a = node(DialectMode::Fixed(d)).await;
        let b = node(DialectMode::Fixed(d)).await;
        introduce(&a, &b);
        let (tx, mut fired) = mpsc::unbounded_channel();
        a.mon(&format!("{}#nope", b.id()), move |r| {
            let _ = tx.send(r);
        })
        .detach();
        let reason = recv(&mut fired).await;
        assert_eq!(reason[0], Value::from("no_such_port"));
        assert_eq!(reason.len(), if d == Dialect::P0 { 2 } else { 3 });
    }
}

#[actix_rt::test]
async fn remote_kill_works_where_the_dialect_has_it() {
    for d in [Dialect::P1b, Dialect::P2] {
        let a = node(DialectMode::Fixed(d)).await;
        let b = node(DialectMode::Fixed(d)).await;
        introduce(&a, &b);
        let (rb, _rxb) = collector();
        let pb = b.port(rb).detach();
        let (tx, mut fired) = mpsc::unbounded_channel();
        b.mon(&pb, move |r| {
            let _ = tx.send(r);
        })
        .detach();
        a.kil(&pb, vec![Value::from("die"), Value::from("asked to")])
            .unwrap();
        assert_eq!(
            recv(&mut fired).await,
            vec![Value::from("die"), Value::from("asked to")]
        );
    }
}

/// A peer that completes the handshake (P0, secret `k`) and then never reads again.
async fn stalled_peer() -> (String, &'static str) {
    use aemp::proto::handshake::{Event, Handshake, HandshakeConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    actix_rt::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut hs =
            Handshake::new(HandshakeConfig::new("stalled", b"k".to_vec(), Dialect::P0)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            s.write_all(&hs.take_output()).await.unwrap();
            if hs.is_established() {
                break;
            }
            let n = s.read(&mut buf).await.unwrap();
            hs.feed(&buf[..n]).unwrap();
            while let Some(ev) = hs.poll_event() {
                if let Event::PeerGreeting(_) = ev {
                    hs.accept_peer(None).unwrap();
                }
            }
        }
        // Keep the socket open, never read.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    });
    (addr, "stalled")
}

#[actix_rt::test]
async fn overflowing_the_send_queue_fails_the_link_and_fires_monitors() {
    let a = Node::start(NodeConfig {
        secret: b"k".to_vec(),
        // The stalled peer is scripted in P0 and takes one connection.
        dialect: DialectMode::Fixed(Dialect::P0),
        send_queue_bytes: 256 * 1024,
        workers: 1,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let (addr, peer) = stalled_peer().await;
    a.add_node_addresses(peer, vec![addr]);
    let port = format!("{peer}#p");
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon(&port, move |r| {
        let _ = tx.send(r);
    })
    .detach();
    let mut events = a.node_events();
    let up = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(up.up);
    let big = "x".repeat(64 * 1024);
    for _ in 0..2_000 {
        a.snd(&port, &(big.as_str(),)).unwrap();
        tokio::task::yield_now().await;
    }
    let reason = recv(&mut fired).await;
    assert_eq!(
        reason,
        vec![
            Value::from("transport_error"),
            Value::from(peer),
            Value::from("send queue full")
        ]
    );
    let down = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!down.up);
}

#[actix_rt::test]
async fn a_port_dies_with_its_guard_and_monitors_see_it() {
    let a = node(DialectMode::Fixed(Dialect::P2)).await;
    let (r, _rx) = collector();
    let port = a.port(r);
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon(port.id(), move |r| {
        let _ = tx.send(r);
    })
    .detach();
    drop(port);
    assert_eq!(recv(&mut fired).await, Vec::<Value>::new());
}

#[actix_rt::test]
async fn simultaneous_dials_converge_to_one_link_with_nothing_lost() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("aemp=debug")
        .try_init();
    for round in 0..100 {
        let cfg = |id: &str| NodeConfig {
            node_id: format!("{id}/"),
            secret: b"k".to_vec(),
            workers: 1,
            ..NodeConfig::default()
        };
        let a = Node::start(cfg("a")).await.unwrap();
        let b = Node::start(cfg("b")).await.unwrap();
        introduce(&a, &b);
        introduce(&b, &a);
        let (ra, mut rxa) = collector();
        let (rb, mut rxb) = collector();
        let (pa, pb) = (a.port(ra), b.port(rb));
        let (mut ea, mut eb) = (a.node_events(), b.node_events());
        // Both dial at once: the first message on each side makes its registry connect.
        for i in 0..20 {
            a.snd(pb.id(), &(i,)).unwrap();
            b.snd(pa.id(), &(i,)).unwrap();
        }
        for i in 0..20 {
            let (n,): (i32,) = recv(&mut rxb).await.decode().unwrap();
            assert_eq!(n, i, "round {round}");
            let (n,): (i32,) = recv(&mut rxa).await.decode().unwrap();
            assert_eq!(n, i, "round {round}");
        }
        assert_eq!(a.up_nodes(), vec![b.id().to_owned()]);
        assert_eq!(b.up_nodes(), vec![a.id().to_owned()]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        for events in [&mut ea, &mut eb] {
            let ev = events.try_recv().expect("one up event");
            assert!(ev.up, "round {round}: {ev:?}");
            assert!(
                events.try_recv().is_err(),
                "round {round}: no second event (no down, no blip)"
            );
        }
        a.shutdown();
        b.shutdown();
    }
}

/// Opens a connection to `node` that sends only a greeting line 1 claiming `claimed` (a Rust
/// node's line, or a Perl 1.x node's with `perl`) and then waits, as an unauthenticated
/// squatter would.
async fn squat(node: &Node, claimed: &str, perl: bool) -> tokio::net::TcpStream {
    use aemp::proto::handshake::{Handshake, HandshakeConfig};
    use tokio::io::AsyncWriteExt;
    let mut hs = Handshake::new(HandshakeConfig::new(
        claimed,
        b"no secret".to_vec(),
        Dialect::P0,
    ))
    .unwrap();
    let out = hs.take_output();
    let end = out.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut line1 = String::from_utf8(out[..end].to_vec()).unwrap();
    if perl {
        // What a Perl node says of itself instead of `provider=aemp-rs-…`.
        let at = line1.find("provider=").unwrap();
        let stop = line1[at..].find(';').map_or(line1.len() - 1, |i| at + i);
        line1.replace_range(at..stop, "provider=AE-1.30");
    }
    let mut s = tokio::net::TcpStream::connect(node.listeners()[0])
        .await
        .unwrap();
    s.write_all(line1.as_bytes()).await.unwrap();
    // Let the node read it and take note of the claim.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s
}

#[actix_rt::test]
async fn an_unauthenticated_claim_never_keeps_the_real_node_out() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("aemp=debug")
        .try_init();
    let cfg = |id: &str| NodeConfig {
        node_id: id.into(),
        secret: b"k".to_vec(),
        workers: 1,
        // Long enough that a squatter outlives the test unless it is ignored.
        handshake_timeout: Duration::from_secs(60),
        ..NodeConfig::default()
    };
    // The real node's id sorts before and after ours (the arbitrating side differs), and the
    // squatter poses as a Rust node or as a Perl one.
    for (ours, theirs, perl) in [
        ("m-node", "a-real", false),
        ("m-node", "z-real", false),
        ("m-node", "a-real", true),
    ] {
        let a = Node::start(cfg(ours)).await.unwrap();
        let _squatter = squat(&a, theirs, perl).await;
        // The real node dials in.
        let b = Node::start(cfg(theirs)).await.unwrap();
        let mut events = a.node_events();
        b.connect(a.listeners()[0].to_string());
        let up = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap_or_else(|_| panic!("{theirs} (perl {perl}) kept out by a squatter"))
            .unwrap();
        assert!(up.up && up.node == theirs, "{up:?}");
        b.shutdown();
        a.shutdown();
    }
}

#[actix_rt::test]
async fn an_unauthenticated_claim_never_delays_dialling_the_real_node() {
    let cfg = |id: &str| NodeConfig {
        node_id: id.into(),
        secret: b"k".to_vec(),
        workers: 1,
        handshake_timeout: Duration::from_secs(60),
        ..NodeConfig::default()
    };
    for theirs in ["a-real", "z-real"] {
        let a = Node::start(cfg("m-node")).await.unwrap();
        let b = Node::start(cfg(theirs)).await.unwrap();
        let _squatter = squat(&a, theirs, false).await;
        // Messages for the real node make `a` connect to it, squatter or not.
        introduce(&a, &b);
        let (rb, mut rxb) = collector();
        let pb = b.port(rb);
        for i in 0..3 {
            a.snd(pb.id(), &(i,)).unwrap();
        }
        for i in 0..3 {
            let (n,): (i32,) = recv(&mut rxb).await.decode().unwrap();
            assert_eq!(n, i, "{theirs}");
        }
        a.shutdown();
        b.shutdown();
    }
}

/// A peer that completes the handshake (P0, secret `k`, id `id`), never reads, and when `poke`
/// fires writes keepalives `[]` until a write fails; `closed` learns when one did.
async fn stalled_peer_poking(
    id: &'static str,
) -> (String, oneshot::Sender<()>, oneshot::Receiver<()>) {
    use aemp::proto::handshake::{Event, Handshake, HandshakeConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (poke, poked) = oneshot::channel();
    let (closed_tx, closed) = oneshot::channel();
    actix_rt::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut hs = Handshake::new(HandshakeConfig::new(id, b"k".to_vec(), Dialect::P0)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            s.write_all(&hs.take_output()).await.unwrap();
            if hs.is_established() {
                break;
            }
            let n = s.read(&mut buf).await.unwrap();
            hs.feed(&buf[..n]).unwrap();
            while let Some(ev) = hs.poll_event() {
                if let Event::PeerGreeting(_) = ev {
                    hs.accept_peer(None).unwrap();
                }
            }
        }
        let _ = poked.await;
        for _ in 0..500 {
            if s.write_all(b"[]").await.is_err() {
                let _ = closed_tx.send(());
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Still open after 5 s of writing: `closed` is dropped unsent.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    });
    (addr, poke, closed)
}

#[actix_rt::test]
async fn a_link_failed_for_a_full_queue_closes_its_socket_at_once() {
    let a = Node::start(NodeConfig {
        secret: b"k".to_vec(),
        // The stalled peer is scripted in P0 and takes one connection.
        dialect: DialectMode::Fixed(Dialect::P0),
        send_queue_bytes: 256 * 1024,
        workers: 1,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let (addr, poke, closed) = stalled_peer_poking("stalled-q").await;
    a.add_node_addresses("stalled-q", vec![addr]);
    let port = "stalled-q#p";
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon(port, move |r| {
        let _ = tx.send(r);
    })
    .detach();
    let big = "x".repeat(64 * 1024);
    let mut sent = 0;
    while fired.try_recv().is_err() {
        a.snd(port, &(big.as_str(),)).unwrap();
        sent += 1;
        assert!(sent < 10_000, "the queue never overflowed");
        tokio::task::yield_now().await;
    }
    // Monitors fired: the socket must be gone too, not held open by a writer stuck on a peer
    // that does not read (whose requests would otherwise still be served).
    poke.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), closed)
        .await
        .expect("the peer learns that the link is closed")
        .expect("a write to the failed link fails within 5 s");
}

#[actix_rt::test]
async fn a_write_that_makes_no_progress_fails_the_link() {
    let a = Node::start(NodeConfig {
        secret: b"k".to_vec(),
        // The stalled peer is scripted in P0 and takes one connection.
        dialect: DialectMode::Fixed(Dialect::P0),
        // Room for everything below: only the write deadline can fail this link.
        send_queue_bytes: 256 << 20,
        write_timeout: Duration::from_secs(1),
        workers: 1,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let (addr, _poke, _closed) = stalled_peer_poking("stalled-w").await;
    a.add_node_addresses("stalled-w", vec![addr]);
    let port = "stalled-w#p";
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon(port, move |r| {
        let _ = tx.send(r);
    })
    .detach();
    let mut events = a.node_events();
    let up = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(up.up);
    let big = "x".repeat(64 * 1024);
    // Up to 64 MiB, more than the socket buffers on both ends hold: the writer stalls, and
    // awaitable sends wait for room until the deadline fails the link.
    for _ in 0..1024 {
        if a.send(port, &(big.as_str(),)).await.is_err() {
            break;
        }
    }
    // Generous: this test may share the machine with many others.
    let reason = tokio::time::timeout(Duration::from_secs(60), fired.recv())
        .await
        .expect("the write deadline fails the link")
        .unwrap();
    assert_eq!(reason[0], Value::from("transport_error"));
    assert_eq!(reason[1], Value::from("stalled-w"));
    assert!(
        reason[2].as_str().unwrap().contains("no progress"),
        "{reason:?}"
    );
    let down = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!down.up, "{down:?}");
}

/// An address on which nothing listens (yet).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[actix_rt::test]
async fn a_node_that_listens_only_after_the_first_dial_failed_is_dialled_again() {
    let a = Node::start(NodeConfig {
        connect_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(20),
        ..NodeConfig::with_secret("k")
    })
    .await
    .unwrap();
    let addr = free_addr();
    a.add_node_addresses("late", vec![addr.clone()]);
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon("late#inbox", move |r| {
        let _ = tx.send(r);
    })
    .detach();
    let mut errors = a.link_errors();
    for i in 0..3 {
        a.snd("late#inbox", &(i,)).unwrap();
    }
    // The first dial fails: nobody listens yet.
    let err = recv_broadcast(&mut errors).await;
    assert!(err.error.to_string().contains("cannot connect"), "{err:?}");
    let b = Node::start(NodeConfig {
        node_id: "late".into(),
        binds: vec![addr],
        ..NodeConfig::with_secret("k")
    })
    .await
    .unwrap();
    let (rb, mut rxb) = collector();
    let _inbox = b.port_named("inbox", rb).unwrap();
    for i in 0..3 {
        let (n,): (i32,) = recv(&mut rxb).await.decode().unwrap();
        assert_eq!(n, i);
    }
    assert!(fired.try_recv().is_err(), "nothing was lost");
    a.shutdown();
    b.shutdown();
}

async fn recv_broadcast<T: Clone>(rx: &mut tokio::sync::broadcast::Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
}

#[actix_rt::test]
async fn the_connect_timeout_of_an_earlier_attempt_does_not_cut_a_later_one_short() {
    let connect_timeout = Duration::from_secs(3);
    let a = Node::start(NodeConfig {
        connect_interval: Duration::from_millis(50),
        connect_timeout,
        ..NodeConfig::with_secret("k")
    })
    .await
    .unwrap();
    let addr = free_addr();
    a.add_node_addresses("flaky", vec![addr.clone()]);
    let mut events = a.node_events();
    // Attempt 1: messages wait for a node that is not there yet; it comes, and goes.
    let first = std::time::Instant::now();
    a.snd("flaky#p", &("one",)).unwrap();
    let b = Node::start(NodeConfig {
        node_id: "flaky".into(),
        binds: vec![addr],
        ..NodeConfig::with_secret("k")
    })
    .await
    .unwrap();
    assert!(recv_broadcast(&mut events).await.up);
    b.shutdown();
    assert!(!recv_broadcast(&mut events).await.up);
    tokio::time::sleep(connect_timeout / 2).await;
    // Attempt 2: the node is gone for good. Its messages are kept for a whole connect
    // timeout, not dropped when attempt 1's timer expires.
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon("flaky#p", move |r| {
        let _ = tx.send(r);
    })
    .detach();
    let second = std::time::Instant::now();
    a.snd("flaky#p", &("two",)).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(30), fired.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason[2], Value::from("unable to connect"), "{reason:?}");
    if second - first < connect_timeout {
        assert!(
            second.elapsed() >= connect_timeout - Duration::from_millis(50),
            "dropped {:?} after they were queued",
            second.elapsed()
        );
    } else {
        println!("attempt 1 took longer than its timeout on this machine: nothing to check");
    }
    a.shutdown();
}

#[actix_rt::test]
async fn a_node_that_links_again_later_replaces_its_old_link() {
    let cfg = |id: &str| NodeConfig {
        node_id: id.into(),
        secret: b"k".to_vec(),
        workers: 1,
        ..NodeConfig::default()
    };
    let a = Node::start(cfg("holder")).await.unwrap();
    let old = Node::start(cfg("again")).await.unwrap();
    let a_addr = a.listeners()[0].to_string();
    let mut events = a.node_events();
    old.connect(a_addr.clone());
    assert!(recv_broadcast(&mut events).await.up);
    let (r_old, mut rx_old) = collector();
    let _p_old = old.port_named("inbox", r_old).unwrap();
    let (tx, mut fired) = mpsc::unbounded_channel();
    a.mon("again#inbox", move |r| {
        let _ = tx.send(r);
    })
    .detach();
    a.snd("again#inbox", &(1,)).unwrap();
    recv(&mut rx_old).await;
    // A second connection of the same node while the link is young is a crossing dial:
    // refused (by either end, no link error), the link stays.
    let mut old_errors = old.link_errors();
    old.connect(a_addr.clone());
    tokio::time::timeout(Duration::from_secs(10), async {
        while old.connection_stats().dialled < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("second dial");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        old_errors.try_recv().is_err(),
        "a refused duplicate is no link error"
    );
    assert!(events.try_recv().is_err(), "no down, no up");
    // Later, a node with the same id (the old one restarted, as far as `a` can tell) links
    // to `a` while `a` still holds the old link: the new link replaces it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let new = Node::start(cfg("again")).await.unwrap();
    let (r_new, mut rx_new) = collector();
    let _p_new = new.port_named("inbox", r_new).unwrap();
    new.connect(a_addr);
    let switched = vec![
        Value::from("transport_error"),
        Value::from("again"),
        Value::from("switched connections"),
    ];
    assert_eq!(recv(&mut fired).await, switched);
    let down = recv_broadcast(&mut events).await;
    assert!(!down.up && down.reason == switched, "{down:?}");
    let up = recv_broadcast(&mut events).await;
    assert!(up.up && up.node == "again", "{up:?}");
    a.snd("again#inbox", &(2,)).unwrap();
    let (n,): (i32,) = recv(&mut rx_new).await.decode().unwrap();
    assert_eq!(n, 2);
    assert!(rx_old.try_recv().is_err());
    assert_eq!(a.up_nodes(), vec!["again".to_owned()]);
    a.shutdown();
    old.shutdown();
    new.shutdown();
}

#[actix_rt::test]
async fn a_node_whose_seed_address_is_its_own_becomes_global_and_stops_dialling_it() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let node = Node::start(NodeConfig {
        secret: b"test-secret".to_vec(),
        dialect: DialectMode::Fixed(Dialect::P2),
        binds: vec![addr.clone()],
        seeds: vec![addr],
        workers: 1,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    // No other node: only the self-dial can tell it (as in Perl, where it makes a seed global).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !node.is_global() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not global after its self-dial"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.master().as_deref(), Some(node.id()));
    // The seed that is itself is dropped: no further rounds dial it (the first would be due
    // after 0.6–1.2 s, the next after twice that).
    let dialled = node.connection_stats().dialled;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(node.connection_stats().dialled, dialled);
    node.shutdown();
}
