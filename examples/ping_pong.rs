//! Ping-pong between two node processes on loopback.
//!
//! `cargo run --example ping_pong` starts a second copy of itself as the "pong" node, finds it,
//! sends it pings and prints each round trip, then stops both. No configuration needed.
//! `ping_pong pong` runs only the pong node; `ping_pong ping HOST:PORT` only the pinging side.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aemp::node::{Node, NodeConfig};

const SECRET: &[u8] = b"ping-pong example secret";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let system = actix::System::new();
    match args.first().map(String::as_str) {
        Some("pong") => system.block_on(pong()),
        Some("ping") => {
            let addr = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "127.0.0.1:4040".into());
            let pong_id = args.get(2).cloned();
            system.block_on(ping(addr, pong_id));
        }
        _ => demo(system),
    }
}

/// Runs the pong node: one port that answers `["ping", n, reply]` with `["pong", n]`.
async fn pong() {
    let node = Node::start(NodeConfig::with_secret(SECRET))
        .await
        .expect("start node");
    let port = node
        .rcv()
        .on("ping", |cx, msg| {
            let (_, n, reply): (String, u64, String) = msg.decode().map_err(|e| e.to_string())?;
            cx.node.snd(&reply, &("pong", n)).map_err(|e| e.to_string())
        })
        .start();
    // The parent reads these two lines to find us.
    println!("LISTEN {}", node.listeners()[0]);
    println!("PORT {port}");
    tokio::signal::ctrl_c().await.ok();
}

async fn ping(addr: String, pong_port: Option<String>) {
    let node = Node::start(NodeConfig {
        binds: Vec::new(),
        ..NodeConfig::with_secret(SECRET)
    })
    .await
    .expect("start node");
    let pong_port = pong_port.expect("ping needs the pong port id");
    let (pong_node, _) = aemp::node::split_port_id(&pong_port);
    node.add_node_addresses(pong_node, vec![addr]);
    let (me, mut replies) = node.port_stream();
    println!("ping node {} -> pong port {pong_port}", node.id());
    for n in 0..10u64 {
        let t = Instant::now();
        node.snd(&pong_port, &("ping", n, me.id())).expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.recv())
            .await
            .expect("pong timed out")
            .expect("port closed");
        let (tag, m): (String, u64) = reply.decode().expect("pong message");
        println!("{tag} {m} from {} in {:?}", reply.from, t.elapsed());
    }
    println!("done: 10 round trips");
}

/// Starts `pong` as a child process, then pings it.
fn demo(system: actix::SystemRunner) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .arg("pong")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the pong process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut field = |prefix: &str| {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        line.strip_prefix(prefix)
            .map(str::to_owned)
            .expect("pong node announcement")
    };
    let addr = field("LISTEN ");
    let port = field("PORT ");
    println!("pong node (pid {}) listens on {addr}", child.id());
    system.block_on(ping(addr, Some(port)));
    let _ = child.kill();
    let _ = child.wait();
}
