//! Requests to the node port whose relay or answer goes to our own node port again (`snd` to our
//! node id, `snd_multiple`, a reply spec naming `<id>` or `<id>#`) are followed without recursion
//! and for at most `MAX_NODE_PORT_HOPS` hops per request: a chain of 50,000 costs one warning,
//! not the node, and the link that sent it keeps being served.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aemp::node::{MAX_NODE_PORT_HOPS, Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{self, DEFAULT_MAX_PACKET, Framing, PacketDecoder};
use aemp::proto::handshake::{Event, Handshake, HandshakeConfig};
use aemp::proto::value::Value;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What every test here waits for at most.
const ANSWER: Duration = Duration::from_secs(20);

/// The node under test's id.
const NODE: &str = "under-test";

/// The warning a refused chain logs.
const REFUSED: &str = "hops to our own node port";

/// Everything the nodes log, for asserting on.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("aemp=warn")
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logged lines that contain `needle` and `node` (tests run in parallel on one log).
fn logged(needle: &str, node: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&log().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle) && l.contains(node))
        .map(str::to_owned)
        .collect()
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

async fn start(id: &str) -> Node {
    log();
    Node::start(NodeConfig {
        node_id: id.into(),
        secret: b"k".to_vec(),
        workers: 1,
        ..NodeConfig::default()
    })
    .await
    .unwrap()
}

/// A raw, authenticated P0 link to a node: it sends what it is told and reads what comes back.
struct RawPeer {
    stream: TcpStream,
    decoder: PacketDecoder,
    buf: BytesMut,
}

impl RawPeer {
    async fn connect(node: &Node, id: &str) -> RawPeer {
        let mut stream = TcpStream::connect(node.listeners()[0]).await.unwrap();
        let mut hs = Handshake::new(HandshakeConfig::new(id, b"k".to_vec(), Dialect::P0)).unwrap();
        let mut buf = [0u8; 4096];
        while !hs.is_established() {
            stream.write_all(&hs.take_output()).await.unwrap();
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the node closed the connection in the handshake");
            hs.feed(&buf[..n]).unwrap();
            while let Some(ev) = hs.poll_event() {
                if let Event::PeerGreeting(_) = ev {
                    hs.accept_peer(None).unwrap();
                }
            }
        }
        stream.write_all(&hs.take_output()).await.unwrap();
        // Bytes past the handshake (the node may have sent packets already) stay for `recv`.
        let early = hs.take_tls_leftover();
        RawPeer {
            stream,
            decoder: PacketDecoder::new(Framing::Json, DEFAULT_MAX_PACKET),
            buf: BytesMut::from(&early[..]),
        }
    }

    async fn send(&mut self, packet: Vec<Value>) {
        let mut out = BytesMut::new();
        framing::encode_value(Framing::Json, &Value::Array(packet), &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet to our port `port` (the node also talks to our node port: skipped).
    async fn recv(&mut self, port: &str) -> Vec<Value> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some(packet) = self.decoder.decode(&mut self.buf).unwrap() {
                if packet.dest().unwrap() == port {
                    return packet.args().unwrap();
                }
            }
            let n = tokio::time::timeout(ANSWER, self.stream.read(&mut chunk))
                .await
                .expect("no answer from the node")
                .unwrap();
            assert!(n > 0, "the node closed the link");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Asks the node for its time; the answer must be the next message to our port `r`.
    async fn time(&mut self, me: &str, tag: &str) {
        self.send(vec![s(""), s("time"), s(&format!("{me}#r")), s(tag)])
            .await;
        let answer = self.recv("r").await;
        assert_eq!(answer.len(), 2, "{answer:?}");
        assert_eq!(answer[0], s(tag), "{answer:?}");
        assert!(answer[1].as_f64().is_some(), "{answer:?}");
    }
}

/// One hop of a chain: the request elements that send what follows them to our own node port.
type Hop = fn() -> Vec<Value>;

/// A node-port packet of `hops` hops of `hop`, then a relay of `["done"]` to `to`.
fn chain(hops: usize, hop: Hop, to: &str) -> Vec<Value> {
    let mut packet = vec![s("")];
    for _ in 0..hops {
        packet.extend(hop());
    }
    packet.extend([s("snd"), s(to), s("done")]);
    packet
}

/// A node-port packet of `hops` nested `snd_multiple`s, the innermost relaying `["done"]` to
/// `to`.
fn snd_multiple_chain(hops: usize, to: &str) -> Vec<Value> {
    let mut request = vec![s("snd_multiple"), Value::Array(vec![s(to), s("done")])];
    for _ in 0..hops {
        let mut item = vec![s(NODE)];
        item.extend(request);
        request = vec![s("snd_multiple"), Value::Array(item)];
    }
    let mut packet = vec![s("")];
    packet.extend(request);
    packet
}

/// Every way a request to the node port can send what follows it to our own node port.
fn hops() -> Vec<(&'static str, Hop)> {
    vec![
        ("snd <id>", || vec![s("snd"), s(NODE)]),
        ("snd <id>#", || vec![s("snd"), s("under-test#")]),
        ("time", || vec![s("time"), s(NODE)]),
        ("info", || vec![s("info"), s("under-test#")]),
        ("up_nodes", || vec![s("up_nodes"), s(NODE)]),
        ("known_nodes", || vec![s("known_nodes"), s(NODE)]),
        ("can", || vec![s("can"), s("time"), s(NODE)]),
        ("eval", || vec![s("eval"), s("1"), s(NODE)]),
    ]
}

#[actix_rt::test]
async fn a_chain_within_the_bound_is_followed_and_one_hop_more_is_refused() {
    let node = start(NODE).await;
    let me = "chainer-edges";
    let mut peer = RawPeer::connect(&node, me).await;
    let to = format!("{me}#r");
    let mut refused = 0;
    for (name, hop) in hops() {
        // Every hop of these adds its answer after what it relays: `done` stays first.
        peer.send(chain(MAX_NODE_PORT_HOPS, hop, &to)).await;
        let got = peer.recv("r").await;
        assert_eq!(got.first(), Some(&s("done")), "{name}: {got:?}");

        peer.send(chain(MAX_NODE_PORT_HOPS + 1, hop, &to)).await;
        refused += 1;
        // Packets of one link are served in order: the answer to this comes first if the
        // chain before it sent nothing to us.
        peer.time(me, name).await;
    }
    peer.send(snd_multiple_chain(MAX_NODE_PORT_HOPS, &to)).await;
    assert_eq!(peer.recv("r").await, vec![s("done")]);
    peer.send(snd_multiple_chain(MAX_NODE_PORT_HOPS + 1, &to))
        .await;
    refused += 1;
    peer.time(me, "snd_multiple").await;

    // A relay to our node port is served where it stands, before the relays after it, as
    // Perl's synchronous local delivery orders them.
    let first = Value::Array(vec![s(NODE), s("snd"), s(&to), s("first")]);
    let second = Value::Array(vec![s(&to), s("second")]);
    peer.send(vec![s(""), s("snd_multiple"), first, second])
        .await;
    assert_eq!(peer.recv("r").await, vec![s("first")]);
    assert_eq!(peer.recv("r").await, vec![s("second")]);

    // One warning per refused packet, not one per hop.
    assert_eq!(
        logged(REFUSED, me).len(),
        refused,
        "{:?}",
        logged(REFUSED, me)
    );
    assert!(node.up_nodes().contains(&me.to_owned()));
}

#[actix_rt::test]
async fn chains_of_2500_and_50000_hops_cost_a_warning_and_the_link_keeps_serving() {
    let node = start(NODE).await;
    let me = "chainer-long";
    let mut peer = RawPeer::connect(&node, me).await;
    let to = format!("{me}#r");
    let mut refused = 0;
    for pairs in [2_500, 50_000] {
        for (name, hop) in hops() {
            let packet = chain(pairs, hop, &to);
            if pairs == 50_000 && name == "snd <id>" {
                // The packet of the report: 50,000 `"snd","under-test"` pairs, near 1 MB.
                let mut bytes = BytesMut::new();
                framing::encode_value(Framing::Json, &Value::Array(packet.clone()), &mut bytes)
                    .unwrap();
                assert!(bytes.len() > 900_000, "{}", bytes.len());
            }
            peer.send(packet).await;
            refused += 1;
            peer.time(me, &format!("{name} {pairs}")).await;
        }
    }
    // A node-port relay to a port, the other usual request, is served too.
    peer.send(vec![s(""), s("snd"), s(&to), s("still here")])
        .await;
    assert_eq!(peer.recv("r").await, vec![s("still here")]);
    assert_eq!(
        logged(REFUSED, me).len(),
        refused,
        "{:?}",
        logged(REFUSED, me)
    );
    assert!(node.up_nodes().contains(&me.to_owned()));
}

#[actix_rt::test]
async fn a_local_snd_to_our_own_node_port_is_bounded_the_same_way() {
    let id = "local-chainer";
    let node = start(id).await;
    let (port, mut inbox) = node.port_stream();
    let mut refused = 0;
    for target in [id.to_owned(), format!("{id}#")] {
        for hops in [MAX_NODE_PORT_HOPS, MAX_NODE_PORT_HOPS + 1, 50_000] {
            // `hops` requests that relay what follows them to our node port (as `<id>` and as
            // `<id>#`), then a relay to our port. The first is the request `snd` makes.
            let mut msg = Vec::new();
            for i in 0..hops {
                let own = if i % 2 == 0 {
                    s(id)
                } else {
                    s(&format!("{id}#"))
                };
                msg.extend([s("snd"), own]);
            }
            msg.extend([s("snd"), s(port.id()), s("done"), Value::Int(hops as i64)]);
            // `snd` handles a request to our node port before it returns.
            node.snd(&target, &msg).unwrap();
            if hops <= MAX_NODE_PORT_HOPS {
                let m = tokio::time::timeout(ANSWER, inbox.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(m.args().unwrap(), vec![s("done"), Value::Int(hops as i64)]);
            } else {
                refused += 1;
            }
        }
    }
    // Nothing else arrived, and the port still works.
    node.snd(port.id(), &("last",)).unwrap();
    let m = tokio::time::timeout(ANSWER, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.args().unwrap(), vec![s("last")]);
    assert_eq!(
        logged(REFUSED, id).len(),
        refused,
        "{:?}",
        logged(REFUSED, id)
    );
}
