//! A scripted Perl node over a real socket, for tests that play one side of a capture against a
//! Rust node: it greets with its capture's line 1 (its own node id, our addresses), proves the
//! capture's secret with a fresh nonce, and then exchanges JSON packets. Packets are compared as
//! JSON values (maps without regard to key order). A failed wait prints everything the peer
//! received so far.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use aemp::node::{Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{self, DEFAULT_MAX_PACKET, Framing, PacketDecoder};
use aemp::proto::greeting::{Greeting, Nonce};
use aemp::proto::handshake::{Event, Handshake, HandshakeConfig, OwnGreeting};
use aemp::proto::value::{Value, to_value};
use bytes::BytesMut;
pub use serde_json::Value as J;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Capture, Dir, lines};

/// How long a peer waits for one packet (or a connection).
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a peer listens for packets that should not come.
pub const QUIET: Duration = Duration::from_millis(300);

/// Line 1 of one side of a capture's connection, as a scripted peer named `id` sends it: the
/// capture's keys and order, our id, and `peeraddr` set to the other end as we see it.
pub fn line1(cap: &Capture, conn: usize, dir: Dir, id: &str, peeraddr: &str) -> String {
    let (ls, _) = lines(&cap.bytes(conn, dir), 1);
    let mut g = Greeting::parse(&ls[0]).unwrap();
    g.node_id = id.to_owned();
    for (k, v) in &mut g.keys {
        if k == "peeraddr" {
            *v = Some(peeraddr.to_owned());
        }
    }
    g.to_line()
}

/// The JSON text of a received value (`Value`'s display is JSON for everything Perl sends).
pub fn to_json(v: &Value) -> J {
    let text = v.to_string();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {text}: {e}"))
}

/// `p[1]` of a node-port packet (`["", tag, …]`).
pub fn tag(p: &J) -> Option<&str> {
    match p.as_array()?.as_slice() {
        [J::String(dest), J::String(tag), ..] if dest.is_empty() => Some(tag),
        _ => None,
    }
}

/// One line per packet, for failure messages.
pub fn show(packets: &[J]) -> String {
    packets
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A free loopback port (for a node that must know its address before it listens).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A scripted Perl node on one connection.
pub struct Peer {
    /// Our node id (a name for messages).
    pub id: String,
    /// The node at the other end.
    pub other: String,
    w: OwnedWriteHalf,
    framing: Framing,
    rx: mpsc::UnboundedReceiver<J>,
    /// Received and not consumed by an `expect` yet.
    pub pending: VecDeque<J>,
    /// Everything received, in order.
    pub seen: Vec<J>,
}

impl Peer {
    /// Waits for the Rust node to dial `listener`, then greets as `id` with `line1`.
    pub async fn accept(listener: &TcpListener, id: &str, line1: String, secret: &[u8]) -> Peer {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{id}: nobody connected to {} within {WAIT:?}",
                    listener.local_addr().unwrap()
                )
            })
            .unwrap();
        Peer::handshake(stream, id, line1, secret).await
    }

    /// Dials `addr` and greets as `id` with `line1`.
    pub async fn dial(addr: &str, id: &str, line1: String, secret: &[u8]) -> Peer {
        let stream = TcpStream::connect(addr).await.unwrap();
        Peer::handshake(stream, id, line1, secret).await
    }

    /// Runs the handshake with our line 1 (the dialect it shows), a fresh nonce and `secret`,
    /// then reads every packet into a channel.
    pub async fn handshake(mut stream: TcpStream, id: &str, line1: String, secret: &[u8]) -> Peer {
        let mut cfg = HandshakeConfig::new(id, secret.to_vec(), Dialect::P0);
        cfg.greeting = OwnGreeting::Injected {
            line1,
            nonce: Nonce::random().unwrap(),
        };
        let mut hs = Handshake::new(cfg).unwrap();
        let mut buf = [0u8; 4096];
        let est = 'done: loop {
            while let Some(ev) = hs.poll_event() {
                match ev {
                    Event::PeerGreeting(_) => hs.accept_peer(None).unwrap(),
                    Event::StartTls(_) => panic!("{id}: no TLS here"),
                    Event::Established(e) => break 'done e,
                }
            }
            stream.write_all(&hs.take_output()).await.unwrap();
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{id}: handshake timed out"))
                .unwrap();
            assert!(
                n > 0,
                "{id}: the Rust node closed the connection in the handshake"
            );
            hs.feed(&buf[..n])
                .unwrap_or_else(|e| panic!("{id}: handshake failed: {e}"));
        };
        stream.write_all(&hs.take_output()).await.unwrap();
        let other = est.peer_node_id().to_owned();
        let (mut r, w) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut pending = BytesMut::from(&est.leftover[..]);
        let recv_framing = est.recv_framing;
        let who = id.to_owned();
        actix_rt::spawn(async move {
            let mut dec = PacketDecoder::new(recv_framing, DEFAULT_MAX_PACKET);
            let mut chunk = [0u8; 4096];
            loop {
                while let Some(p) = dec
                    .decode(&mut pending)
                    .unwrap_or_else(|e| panic!("{who}: undecodable packet: {e}"))
                {
                    let v = p
                        .to_value()
                        .unwrap_or_else(|e| panic!("{who}: undecodable packet: {e}"));
                    let j = to_json(&v);
                    // Keepalives (`[]`) are no traffic.
                    if j.as_array().is_some_and(Vec::is_empty) {
                        continue;
                    }
                    if tx.send(j).is_err() {
                        return;
                    }
                }
                match r.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                }
            }
        });
        Peer {
            id: id.to_owned(),
            other,
            w,
            framing: est.send_framing,
            rx,
            pending: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: J) {
        let v: Value = to_value(&packet).unwrap();
        let mut out = BytesMut::new();
        framing::encode_value(self.framing, &v, &mut out).unwrap();
        self.w.write_all(&out).await.unwrap();
    }

    /// Writes raw bytes (part of a packet, say).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    /// Sends packets in order.
    pub async fn send_all(&mut self, packets: Vec<J>) {
        for p in packets {
            self.send(p).await;
        }
    }

    /// The next packet within `wait`, if any (recorded in `seen`).
    pub async fn recv(&mut self, wait: Duration) -> Option<J> {
        let p = tokio::time::timeout(wait, self.rx.recv()).await.ok()??;
        self.seen.push(p.clone());
        Some(p)
    }

    /// The first packet not consumed yet that satisfies `pred` (waiting up to [`WAIT`] for
    /// it); others stay pending. Panics with everything received if none comes.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&J) -> bool) -> J {
        if let Some(at) = self.pending.iter().position(&pred) {
            return self.pending.remove(at).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(p) if pred(&p) => return p,
                Some(p) => self.pending.push_back(p),
                None => panic!(
                    "{}: no {what} from {} within {WAIT:?}; received:\n{}",
                    self.id,
                    self.other,
                    show(&self.seen)
                ),
            }
        }
    }

    /// Waits for exactly this packet (see [`Peer::expect`]).
    pub async fn expect_eq(&mut self, want: J) -> J {
        let what = want.to_string();
        self.expect(&what, |p| *p == want).await
    }

    /// Waits for a node-port request with this tag.
    pub async fn expect_tag(&mut self, t: &str) -> J {
        self.expect(&format!("[\"\",{t:?},…]"), |p| tag(p) == Some(t))
            .await
    }

    /// Lets [`QUIET`] pass and returns every packet received by then.
    pub async fn settle(&mut self) -> &[J] {
        while self.recv(QUIET).await.is_some() {}
        &self.seen
    }
}

/// A Rust node for these tests: one worker, the capture's secret.
pub async fn rust_node(id: &str, secret: &[u8], config: NodeConfig) -> Node {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("aemp=debug")
        .try_init();
    Node::start(NodeConfig {
        node_id: id.into(),
        secret: secret.to_vec(),
        workers: 1,
        ..config
    })
    .await
    .unwrap()
}

/// Polls `cond` until it holds (panics with `what` after [`WAIT`]).
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn loopback() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}
