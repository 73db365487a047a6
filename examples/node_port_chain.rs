//! Measures what one node-port request chain costs a node: an authenticated peer sends
//! `["","snd","<node>","snd","<node>",…,"snd","<peer>#r","done"]` (N pairs), then asks for the
//! node's time; the program reports how long the answer took and the process's peak resident
//! memory (`VmHWM`, Linux) before and after.
//!
//! ```text
//! cargo run --release --example node_port_chain -- 50000
//! ```

use std::time::{Duration, Instant};

use aemp::node::{Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{self, DEFAULT_MAX_PACKET, Framing, PacketDecoder};
use aemp::proto::handshake::{Event, Handshake, HandshakeConfig};
use aemp::proto::value::Value;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The process's peak resident set (`VmHWM` of `/proc/self/status`), in kB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

#[actix::main]
async fn main() {
    let pairs: usize = std::env::args().nth(1).map_or(50_000, |n| {
        n.parse().expect("usage: node_port_chain [PAIRS]")
    });
    let node = Node::start(NodeConfig {
        node_id: "chain-target".into(),
        secret: b"k".to_vec(),
        workers: 1,
        ..NodeConfig::default()
    })
    .await
    .expect("node");

    // An authenticated raw link, as a Perl 1.0 peer.
    let mut stream = TcpStream::connect(node.listeners()[0]).await.unwrap();
    let config = HandshakeConfig::new("chain-sender", b"k".to_vec(), Dialect::P0);
    let mut hs = Handshake::new(config).unwrap();
    let mut chunk = vec![0u8; 64 * 1024];
    while !hs.is_established() {
        stream.write_all(&hs.take_output()).await.unwrap();
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the node closed the connection in the handshake");
        hs.feed(&chunk[..n]).unwrap();
        while let Some(ev) = hs.poll_event() {
            if let Event::PeerGreeting(_) = ev {
                hs.accept_peer(None).unwrap();
            }
        }
    }
    stream.write_all(&hs.take_output()).await.unwrap();
    let mut inbound = BytesMut::from(&hs.take_tls_leftover()[..]);

    let mut packet = vec![s("")];
    for _ in 0..pairs {
        packet.extend([s("snd"), s("chain-target")]);
    }
    packet.extend([s("snd"), s("chain-sender#r"), s("done")]);
    let mut out = BytesMut::new();
    framing::encode_value(Framing::Json, &Value::Array(packet), &mut out).unwrap();
    let time = [s(""), s("time"), s("chain-sender#r"), s("time")];
    framing::encode_value(Framing::Json, &Value::Array(time.to_vec()), &mut out).unwrap();
    let bytes = out.len();

    let before = peak_rss_kb();
    let started = Instant::now();
    stream.write_all(&out).await.unwrap();
    let mut decoder = PacketDecoder::new(Framing::Json, DEFAULT_MAX_PACKET);
    let mut answers = Vec::new();
    'read: loop {
        while let Some(p) = decoder.decode(&mut inbound).unwrap() {
            if p.dest().unwrap() == "r" {
                let first = p.args().unwrap().into_iter().next();
                let tag = first.and_then(|v| v.as_str().map(|t| t.into_owned()));
                let done = tag.as_deref() == Some("time");
                answers.push(tag.unwrap_or_default());
                if done {
                    break 'read;
                }
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(600), stream.read(&mut chunk));
        let n = read.await.expect("no answer in 600 s").unwrap();
        assert!(n > 0, "the node closed the link");
        inbound.extend_from_slice(&chunk[..n]);
    }
    let elapsed = started.elapsed();
    println!(
        "pairs={pairs} bytes={bytes} answers={answers:?} time_to_answer={elapsed:?} \
         VmHWM_before_kB={} VmHWM_after_kB={} link_up={}",
        before.unwrap_or(0),
        peak_rss_kb().unwrap_or(0),
        node.up_nodes().contains(&"chain-sender".to_owned()),
    );
}
