//! Operations: `Node::stats()` counters under load, handshake failures and reconnects counted,
//! the `/metrics` rendering, a peer that leaves versus one that breaks off mid-packet, and
//! the link span on every line a transport logs. Real loopback sockets throughout.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aemp::net::{FailureCause, LinkEnd};
use aemp::node::{Direction, DownReason, LinkStats, Node, NodeConfig, NodeEvent};
use aemp::proto::value::Value;
use common::scripted::{J, Peer, line1};
use common::{Capture, Dir};

const WAIT: Duration = Duration::from_secs(10);

async fn node(id: &str, secret: &str, seeds: Vec<String>) -> Node {
    Node::start(NodeConfig {
        node_id: id.into(),
        seeds,
        workers: 1,
        ..NodeConfig::with_secret(secret)
    })
    .await
    .unwrap()
}

fn link(node: &Node, peer: &str) -> Option<LinkStats> {
    node.stats().links.into_iter().find(|l| l.peer == peer)
}

/// Polls until `cond` holds, or panics with `what` after [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_down(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>) -> NodeEvent {
    loop {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("a node event in time")
            .expect("events flow");
        if !ev.up {
            return ev;
        }
    }
}

#[actix_rt::test]
async fn stats_count_the_messages_and_bytes_of_each_direction() {
    let a = node("st-a", "st", Vec::new()).await;
    let b = node("st-b", "st", vec![a.listeners()[0].to_string()]).await;
    let (a_port, mut a_inbox) = a.port_stream();
    let (b_port, mut b_inbox) = b.port_stream();
    until("the link is up", || link(&a, "st-b").is_some()).await;
    // The cluster protocol's own packets at link-up settle first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a0, b0) = (link(&a, "st-b").unwrap(), link(&b, "st-a").unwrap());
    assert_eq!(a0.direction, Direction::Accepted);
    assert_eq!(b0.direction, Direction::Dialled);
    assert_eq!((a0.dialect, a0.tls), ("p2", false));

    let payload = "x".repeat(100);
    let (to_a, to_b) = (3_000u64, 1_000u64);
    for i in 0..to_a {
        b.snd(a_port.id(), &(i, &payload)).unwrap();
    }
    for i in 0..to_b {
        a.snd(b_port.id(), &(i, &payload)).unwrap();
    }
    for _ in 0..to_a {
        tokio::time::timeout(WAIT, a_inbox.recv()).await.unwrap();
    }
    for _ in 0..to_b {
        tokio::time::timeout(WAIT, b_inbox.recv()).await.unwrap();
    }
    let (a1, b1) = (link(&a, "st-b").unwrap(), link(&b, "st-a").unwrap());
    assert_eq!(a1.conn, a0.conn, "the same link throughout");
    let sent_ba = b1.messages_sent - b0.messages_sent;
    let recv_ba = a1.messages_received - a0.messages_received;
    let sent_ab = a1.messages_sent - a0.messages_sent;
    let recv_ab = b1.messages_received - b0.messages_received;
    assert_eq!((sent_ba, recv_ba), (to_a, to_a), "B→A: {b1:?} / {a1:?}");
    assert_eq!((sent_ab, recv_ab), (to_b, to_b), "A→B: {a1:?} / {b1:?}");
    // Bytes: each message is its payload plus the port id, index and JSON framing.
    let bytes_ba = b1.bytes_sent - b0.bytes_sent;
    assert_eq!(bytes_ba, a1.bytes_received - a0.bytes_received);
    let bytes_ab = a1.bytes_sent - a0.bytes_sent;
    assert_eq!(bytes_ab, b1.bytes_received - b0.bytes_received);
    for (bytes, n) in [(bytes_ba, to_a), (bytes_ab, to_b)] {
        assert!(
            bytes >= n * 100 && bytes <= n * (100 + 64),
            "{bytes} bytes for {n} messages of 100 bytes"
        );
    }
    assert_eq!(a1.bytes_queued, 0, "everything was written");

    let s = a.stats();
    assert_eq!(s.node, "st-a");
    assert_eq!((s.connections.accepted, s.connections.open), (1, 1));
    assert!(s.handshake_failures.values().all(|n| *n == 0), "{s:?}");
    let text = aemp::node::metrics::encode(&s);
    let want = format!(
        r#"aemp_link_messages_received_total{{peer="st-b",dialect="p2"}} {}"#,
        a1.messages_received
    );
    assert!(text.lines().any(|l| l == want), "{want:?} in\n{text}");
    b.shutdown().await;
    a.shutdown().await;
}

#[actix_rt::test]
async fn handshake_failures_are_counted_by_cause_and_reconnects_per_peer() {
    let a = node("hf-a", "right", Vec::new()).await;
    let addr = a.listeners()[0].to_string();
    let wrong = node("hf-x", "wrong", vec![addr.clone()]).await;
    until("the wrong secret is counted on both ends", || {
        a.stats().handshake_failures[&FailureCause::Auth] > 0
            && wrong.stats().handshake_failures[&FailureCause::Auth] > 0
    })
    .await;
    wrong.shutdown().await;
    // Nothing listens at port 1: refused.
    let lonely = node("hf-l", "right", vec!["127.0.0.1:1".into()]).await;
    until("the refused connect is counted", || {
        lonely.stats().handshake_failures[&FailureCause::Refused] > 0
    })
    .await;
    lonely.shutdown().await;

    for round in 1..=2u64 {
        let b = node("hf-b", "right", vec![addr.clone()]).await;
        until("the link is up", || link(&a, "hf-b").is_some()).await;
        b.shutdown().await;
        until("the link is down", || link(&a, "hf-b").is_none()).await;
        assert_eq!(
            a.stats().reconnects.get("hf-b").copied(),
            (round > 1).then_some(1)
        );
    }
    a.shutdown().await;
}

#[actix_rt::test]
async fn a_peer_that_shuts_down_has_left_and_one_cut_off_mid_packet_failed() {
    // The scripted peers below prove this capture's secret.
    let cap = Capture::load("p2-probe-json");
    let secret = String::from_utf8(cap.secret.clone()).unwrap();
    let a = node("pl-a", &secret, Vec::new()).await;
    let mut events = a.node_events();
    let addr = a.listeners()[0].to_string();

    // A Rust peer that shuts down gracefully.
    let b = node("pl-b", &secret, vec![addr.clone()]).await;
    let (b_port, _inbox) = b.port_stream();
    until("the link is up", || link(&a, "pl-b").is_some()).await;
    let fired = Arc::new(Mutex::new(None));
    let slot = fired.clone();
    a.mon(b_port.id(), move |reason| {
        *slot.lock().unwrap() = Some(reason)
    })
    .detach();
    // The monitor's mon1 reaches B before B goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.shutdown().await;
    let down = next_down(&mut events).await;
    assert_eq!(down.node, "pl-b");
    assert!(matches!(down.cause, Some(DownReason::PeerLeft)), "{down:?}");
    let left = vec![
        Value::from("transport_error"),
        Value::from("pl-b"),
        Value::from("peer left"),
    ];
    assert_eq!(down.reason, left);
    until("the monitor fired", || fired.lock().unwrap().is_some()).await;
    assert_eq!(fired.lock().unwrap().clone(), Some(left));

    // A scripted peer whose connection ends inside a packet.
    let line = line1(&cap, 0, Dir::C2s, "pl-c", &addr);
    let mut c = Peer::dial(&addr, "pl-c", line, &cap.secret).await;
    until("the link is up", || link(&a, "pl-c").is_some()).await;
    c.send(J::Array(vec!["".into(), "devnull".into()])).await;
    c.send_raw(b"[\"\",\"dev").await;
    drop(c);
    let down = next_down(&mut events).await;
    assert_eq!(down.node, "pl-c");
    assert!(
        matches!(down.cause, Some(DownReason::Transport(LinkEnd::Eof))),
        "{down:?}"
    );
    assert_eq!(down.reason[2], Value::from("Unexpected end-of-file"));

    // The same peer closing between packets has left.
    let line = line1(&cap, 0, Dir::C2s, "pl-d", &addr);
    let mut d = Peer::dial(&addr, "pl-d", line, &cap.secret).await;
    until("the link is up", || link(&a, "pl-d").is_some()).await;
    d.send(J::Array(vec!["".into(), "devnull".into()])).await;
    drop(d);
    let down = next_down(&mut events).await;
    assert_eq!(down.node, "pl-d");
    assert!(matches!(down.cause, Some(DownReason::PeerLeft)), "{down:?}");
    a.shutdown().await;
}

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_transport_logs_inside_its_link_span() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("aemp=debug")
        .finish();
    // This test's own subscriber on every thread of the system (the node's worker too).
    tracing::subscriber::set_global_default(subscriber).unwrap();
    actix::System::new().block_on(async {
        let a = node("sp-a", "sp", Vec::new()).await;
        let b = node("sp-b", "sp", vec![a.listeners()[0].to_string()]).await;
        until("the link is up", || link(&a, "sp-b").is_some()).await;
        // A request neither node port serves: each logs a warning on its end of the link.
        a.snd("sp-b", &("sp-bogus",)).unwrap();
        b.snd("sp-a", &("sp-bogus",)).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.shutdown().await;
        a.shutdown().await;
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    // The warning B's dialling transport logged, and A's accepting one: each names the peer
    // and the dialect.
    let tagged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("link{conn=") && l.contains("sp-bogus"))
        .collect();
    assert!(
        tagged.iter().any(|l| l.contains(r#"dir="dialled""#)
            && l.contains(r#"peer="sp-a""#)
            && l.contains(r#"dialect="p2""#)),
        "{text}"
    );
    assert!(
        tagged
            .iter()
            .any(|l| l.contains(r#"dir="accepted""#) && l.contains(r#"peer="sp-b""#)),
        "{text}"
    );
}
