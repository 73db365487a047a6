//! Limits that keep a node serving under connection floods: handshakes under way
//! (`max_handshakes`, the oldest dropped first) and connections open (`max_connections`).

use std::time::{Duration, Instant};

use aemp::node::{Node, NodeConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Peak resident memory of this process, from `/proc/self/status` (Linux), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the node has closed `s` (EOF or reset), without waiting.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // The node's greeting: read on.
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[actix_rt::test]
async fn two_thousand_stalled_handshakes_do_not_keep_a_real_peer_out() {
    // Room for both ends of every connection in this one process.
    let _ = rlimit::increase_nofile_limit(16_384);
    let node = Node::start(NodeConfig {
        node_id: "flooded-node".into(),
        secret: b"k".to_vec(),
        // Longer than the test: only the handshake bound can close the stalled ones.
        handshake_timeout: Duration::from_secs(120),
        max_handshakes: 512,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let addr = node.listeners()[0];
    let before = peak_rss_kib();
    let started = Instant::now();
    let mut stalled = Vec::with_capacity(2000);
    for _ in 0..2000 {
        // Connect and say nothing.
        stalled.push(TcpStream::connect(addr).await.unwrap());
    }
    // The node reads them all (its greeting goes out, then it waits).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let peer = Node::start(NodeConfig {
        secret: b"k".to_vec(),
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let mut events = peer.node_events();
    peer.connect(addr.to_string());
    let up = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("the real peer links up despite 2,000 stalled handshakes")
        .unwrap();
    assert!(up.up && up.node == "flooded-node", "{up:?}");
    let linked_after = started.elapsed();

    // Count the stalled connections the node closed (give it a few seconds to get there).
    let mut dropped = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped < 2000 - 512 && Instant::now() < deadline {
        let mut open = Vec::with_capacity(stalled.len());
        for mut s in stalled {
            if closed(&mut s).await {
                dropped += 1;
            } else {
                open.push(s);
            }
        }
        stalled = open;
    }
    // At most `max_handshakes` stay open (the real peer took a place too).
    assert!(
        dropped >= 2000 - 512,
        "only {dropped} of 2000 stalled handshakes were dropped"
    );
    println!(
        "2000 stalled handshakes: {dropped} dropped by the node, the real peer linked after \
         {linked_after:?}; peak RSS of the test process (both ends) {:?} KiB before, {:?} KiB after",
        before,
        peak_rss_kib()
    );
}

#[actix_rt::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let node = Node::start(NodeConfig {
        node_id: "capped-node".into(),
        secret: b"k".to_vec(),
        handshake_timeout: Duration::from_secs(120),
        max_connections: 8,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let addr = node.listeners()[0];
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf))
        .await
        .expect("the ninth connection is closed at once, not left waiting");
    assert!(matches!(n, Ok(0) | Err(_)), "no greeting for it: {n:?}");
    for s in &mut held {
        assert!(!closed(s).await, "the first eight stay open");
    }
    // When they go, a real peer gets in.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peer = Node::start(NodeConfig::with_secret("k")).await.unwrap();
    let mut events = peer.node_events();
    peer.connect(addr.to_string());
    let up = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a real peer links up once there is room")
        .unwrap();
    assert!(up.up, "{up:?}");
}
