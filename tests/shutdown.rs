//! Graceful shutdown: what a node accepted before `shutdown` is written before its links close,
//! monitors fire with "node shut down", and `aemp run` does it on SIGTERM and exits 0.

mod common;

use std::time::{Duration, Instant};

use aemp::node::{Node, NodeConfig};
use aemp::proto::value::Value;
use common::procs::{Proc, rcv_number};

#[actix_rt::test]
async fn messages_queued_before_shutdown_are_all_delivered() {
    let server = Node::start(NodeConfig::with_secret("sd")).await.unwrap();
    let (port, mut inbox) = server.port_stream();
    // Two workers, and the link on the second (transports go round robin; a refused dial takes
    // the first): a shutdown that stopped the worker threads before the links had written
    // their queues would lose messages here.
    let client = Node::start(NodeConfig {
        workers: 2,
        ..NodeConfig::with_secret("sd")
    })
    .await
    .unwrap();
    let mut events = client.node_events();
    client.connect("127.0.0.1:1");
    client.connect(server.listeners()[0].to_string());
    let up = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(up.unwrap().unwrap().up, "the seed link is up");
    let (tx, mut fired) = tokio::sync::mpsc::unbounded_channel();
    client
        .mon(port.id(), move |reason| {
            let _ = tx.send(reason);
        })
        .detach();
    // Accepted on the link (20,000 × ~220 bytes, more than a socket buffer): all are written.
    let n = 20_000u64;
    let payload = "x".repeat(200);
    for i in 0..n {
        client.snd(port.id(), &(i, &payload)).unwrap();
    }
    client.shutdown().await;
    let reason = fired.try_recv().expect("the monitor fired at shutdown");
    assert_eq!(reason[2], Value::from("node shut down"), "{reason:?}");
    for i in 0..n {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} of {n} not delivered"))
            .unwrap();
        let (got, _): (u64, String) = msg.decode().unwrap();
        assert_eq!(got, i);
    }
    // A second shutdown has nothing left to do.
    client.shutdown().await;
    server.shutdown().await;
}

#[test]
fn aemp_run_shuts_down_on_sigterm_and_exits_0() {
    let run = |name: &str, global: &[&str], args: &[&str]| {
        let mut cmd = Proc::aemp(&[]);
        cmd.args(global).arg("run").args(args);
        Proc::start(name, cmd)
    };
    let mut a = run(
        "A",
        &["--nodeid", "sd-a"],
        &["--bind", "127.0.0.1:0", "--sink", "in"],
    );
    let mut b = run(
        "B",
        &["--nodeid", "sd-b", "--seed", &a.addr.clone()],
        &["--bind", "127.0.0.1:0", "--stdin"],
    );
    b.wait_for(|l| l == "UP sd-a p2", Duration::from_secs(30));
    for i in 1..=500 {
        b.command(&format!("snd sd-a#in {i}"));
    }
    a.wait_for(|l| rcv_number(l) == Some(500), Duration::from_secs(30));
    let sent = Instant::now();
    b.signal("-TERM");
    let status = b.wait_exit(Duration::from_secs(15));
    assert_eq!(status, Some(0), "aemp run exits 0 on SIGTERM");
    println!("exited {:?} after SIGTERM", sent.elapsed());
    a.wait_for(|l| l.starts_with("DOWN sd-b "), Duration::from_secs(30));
    let got: Vec<u64> = a.seen.iter().filter_map(|(_, l)| rcv_number(l)).collect();
    assert_eq!(got, (1..=500).collect::<Vec<_>>());
}
