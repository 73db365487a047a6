//! Conformance: a scripted peer replays the Perl client's side of the probe captures against a
//! Rust node listening in auto mode, over a real socket, and checks that the Rust node answers
//! every request the Perl server answered, in the same shape.
//!
//! The Rust node provides the fixtures the Perl server had: an echo port (`[reply, tag, data…]`
//! is answered with `[tag, data…]` to `reply`) and a registered `main::victim_init` (its port
//! dies with `die => "victim asked to die"` on `die`, exits normally on `exit`, ignores the
//! rest). The scripted client greets with the capture's line 1 under its own node id and a fresh
//! nonce, computes its token anew with the capture's secret, then sends the capture's packets in
//! order with the ids rewritten (the server's id → the Rust node's, the echo port → the
//! fixture's). After each request that got an answer in the capture it waits for the Rust
//! node's answer. Answers must match the capture's in shape: same destination, tag and prefix,
//! element count and types, with times and addresses masked, except `eval`, which the Rust node
//! refuses with a non-empty error in `$@`'s slot. Everything else the node sends (its Global
//! helper chatter) must be well-formed, and answers nobody asked for fail the test.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use aemp::node::{DialectMode, Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{self, DEFAULT_MAX_PACKET, Framing, PacketDecoder};
use aemp::proto::greeting::{Greeting, Nonce};
use aemp::proto::handshake::{Established, Event, Handshake, HandshakeConfig, OwnGreeting};
use aemp::proto::value::Value;
use bytes::BytesMut;
use common::{Capture, Dir, lines};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

/// How long the Rust node may take to answer one request.
const ANSWER: Duration = Duration::from_secs(5);

/// A probe capture and the name of the Perl server's echo port in it (read off the transcript:
/// the port the client sends `[reply, "echo-N", …]` to).
struct Probe {
    name: &'static str,
    echo: &'static str,
    dialect: Dialect,
}

const PROBES: [Probe; 4] = [
    Probe {
        name: "p0-probe",
        echo: "Xx0K2o8lH.a",
        dialect: Dialect::P0,
    },
    Probe {
        name: "p1b-probe",
        echo: "X1S2zpd5.a",
        dialect: Dialect::P1b,
    },
    Probe {
        name: "p2-probe-cbor",
        echo: "KuIgmE6Xrb",
        dialect: Dialect::P2,
    },
    Probe {
        name: "p2-probe-json",
        echo: "LGUgAQcM2b",
        dialect: Dialect::P2,
    },
];

/// One side's packets of a capture, decoded from its raw bytes.
struct Side {
    line1: String,
    framing: Framing,
    packets: Vec<Vec<Value>>,
}

fn side(cap: &Capture, dir: Dir) -> Side {
    let bytes = cap.bytes(0, dir);
    let (ls, rest) = lines(&bytes, 3);
    let line1 = String::from_utf8(ls[0].clone()).unwrap();
    let auth = String::from_utf8(ls[2].clone()).unwrap();
    let framing = Framing::from_name(auth.rsplit(';').next().unwrap()).unwrap();
    let mut dec = PacketDecoder::new(framing, DEFAULT_MAX_PACKET);
    let mut buf = BytesMut::from(&rest[..]);
    let mut packets = Vec::new();
    while let Some(p) = dec.decode(&mut buf).unwrap() {
        match p.to_value().unwrap() {
            Value::Array(items) => packets.push(items),
            other => panic!("{}: packet is not an array: {other:?}", cap.name),
        }
    }
    assert!(buf.is_empty(), "{}: trailing bytes", cap.name);
    Side {
        line1,
        framing,
        packets,
    }
}

/// The data packets of connection 0 in transcript order: which direction, which index there.
fn timeline(cap: &Capture) -> Vec<(Dir, usize)> {
    let (mut c, mut s) = (0, 0);
    let mut out = Vec::new();
    for line in cap.transcript.lines() {
        let mut it = line.split_whitespace();
        let (Some(t), Some(conn), Some(dir), Some(kind)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        if t.parse::<f64>().is_err() || conn != "0" || !(kind == "JSON" || kind == "CBOR") {
            continue;
        }
        match dir {
            ">" => {
                out.push((Dir::C2s, c));
                c += 1;
            }
            "<" => {
                out.push((Dir::S2c, s));
                s += 1;
            }
            other => panic!("direction {other}"),
        }
    }
    out
}

/// Replaces node ids and the echo port name wherever they occur (map keys too).
struct Rewrite {
    pairs: Vec<(String, String)>,
    echo: (String, String),
}

impl Rewrite {
    fn text(&self, s: &str) -> String {
        if s == self.echo.0 {
            return self.echo.1.clone();
        }
        for (from, to) in &self.pairs {
            if s == from {
                return to.clone();
            }
            if let Some(rest) = s.strip_prefix(&format!("{from}#")) {
                let rest = if rest == self.echo.0 {
                    &self.echo.1
                } else {
                    rest
                };
                return format!("{to}#{rest}");
            }
        }
        s.to_owned()
    }

    fn value(&self, v: &Value) -> Value {
        match v {
            Value::Str(s) => Value::Str(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::Map(kv) => Value::Map(
                kv.iter()
                    .map(|(k, v)| (self.text(k), self.value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn packet(&self, p: &[Value]) -> Vec<Value> {
        p.iter().map(|v| self.value(v)).collect()
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(|s| s.into_owned())
}

/// Node-port tags that answer something (as opposed to chatter a node starts by itself).
fn answer_tag(tag: &str) -> bool {
    matches!(
        tag,
        "kil" | "kil0" | "g_global" | "g_found" | "g_reply" | "g_chg1" | "g_chg2"
    )
}

/// What identifies an answer: destination, tag, and for notifications the port they name.
fn key(p: &[Value]) -> (String, String, String) {
    let dest = text(p.first()).unwrap_or_default();
    let tag = text(p.get(1)).unwrap_or_default();
    let third = if dest.is_empty() && matches!(tag.as_str(), "kil" | "kil0" | "g_found") {
        text(p.get(2)).unwrap_or_default()
    } else {
        String::new()
    };
    (dest, tag, third)
}

fn class(v: &Value) -> &'static str {
    match v {
        Value::Str(_) | Value::Bytes(_) => "string",
        other => other.type_name(),
    }
}

/// `host:port` or `[v6]:port`: addresses differ between the capture and this run.
fn is_address(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok()
            && host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':')
    })
}

/// Same shape: same length and types, equal strings and integers, floats (times) and addresses
/// masked.
fn conforms(expected: &Value, actual: &Value) -> Result<(), String> {
    let mismatch = || Err(format!("expected {expected:?}, got {actual:?}"));
    if class(expected) != class(actual) {
        return mismatch();
    }
    match (expected, actual) {
        (Value::Float(_), _) => Ok(()),
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return mismatch();
            }
            e.iter().zip(a).try_for_each(|(e, a)| conforms(e, a))
        }
        (Value::Map(e), Value::Map(a)) => {
            if e.len() != a.len() {
                return mismatch();
            }
            Ok(())
        }
        _ => match (expected.as_str(), actual.as_str()) {
            (Some(e), Some(a)) if is_address(&e) && is_address(&a) => Ok(()),
            (Some(e), Some(a)) if e == a => Ok(()),
            (None, None) if expected == actual => Ok(()),
            _ => mismatch(),
        },
    }
}

/// An answer the Perl server gave, as the Rust node must give it.
struct Expected {
    packet: Vec<Value>,
    /// The answer to `eval`: refused with an error message instead.
    eval: bool,
}

/// For each client packet, the answers the capture shows for it: an answer belongs to the
/// last client packet before it. Answers are packets to a port the client named in its
/// requests, and the node-port notifications and replies of [`answer_tag`].
fn expectations(
    client: &Side,
    server: &Side,
    timeline: &[(Dir, usize)],
    client_id: &str,
    rw: &Rewrite,
) -> Vec<Vec<Expected>> {
    let mut out: Vec<Vec<Expected>> = client.packets.iter().map(|_| Vec::new()).collect();
    let mut last = None;
    for (dir, i) in timeline {
        match dir {
            Dir::C2s => last = Some(*i),
            Dir::S2c => {
                let p = &server.packets[*i];
                let (dest, tag, _) = key(p);
                let named_by_client = !dest.is_empty()
                    && client.packets[..last.map_or(0, |l| l + 1)].iter().any(|c| {
                        c.iter()
                            .any(|v| text(Some(v)) == Some(format!("{client_id}#{dest}")))
                    });
                let is_answer = named_by_client || (dest.is_empty() && answer_tag(&tag));
                if !is_answer {
                    continue;
                }
                let l = last.expect("an answer before any request");
                let request = &client.packets[l];
                let eval = text(request.first()).as_deref() == Some("")
                    && text(request.get(1)).as_deref() == Some("eval");
                out[l].push(Expected {
                    packet: rw.packet(p),
                    eval,
                });
            }
        }
    }
    out
}

/// The fixtures of the Perl server, on a Rust node in auto mode.
async fn fixture_node(secret: &[u8]) -> (Node, String) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("aemp=debug")
        .try_init();
    let node = Node::start(NodeConfig {
        node_id: "rust-under-test/".into(),
        secret: secret.to_vec(),
        dialect: DialectMode::default(),
        workers: 1,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let echo = node
        .rcv()
        .default(|cx, msg| {
            let args = msg.args().map_err(|e| e.to_string())?;
            let Some((reply, rest)) = args.split_first() else {
                return Ok(());
            };
            let reply = reply.as_str().ok_or("echo: no reply port")?;
            cx.node.snd(&reply, rest).map_err(|e| e.to_string())
        })
        .start();
    node.register_init("main::victim_init", |node, port_id, _args| {
        node.rcv()
            .on("die", |_, _| Err("victim asked to die".into()))
            .on("exit", |cx, _| {
                cx.node.kil(&cx.port, Vec::new()).map_err(|e| e.to_string())
            })
            .default(|_, _| Ok(()))
            .start_named(&port_id)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    (node, echo)
}

/// Greets as the capture's client (own id, fresh nonce) and returns the link.
async fn handshake(
    stream: &mut TcpStream,
    line1: String,
    client_id: &str,
    secret: &[u8],
) -> Box<Established> {
    let mut cfg = HandshakeConfig::new(client_id, secret.to_vec(), Dialect::P0);
    cfg.greeting = OwnGreeting::Injected {
        line1,
        nonce: Nonce::random().unwrap(),
    };
    let mut hs = Handshake::new(cfg).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(ev) = hs.poll_event() {
            match ev {
                Event::PeerGreeting(_) => hs.accept_peer(None).unwrap(),
                Event::StartTls(_) => panic!("no TLS here"),
                Event::Established(e) => {
                    stream.write_all(&hs.take_output()).await.unwrap();
                    return e;
                }
            }
        }
        stream.write_all(&hs.take_output()).await.unwrap();
        let n = tokio::time::timeout(ANSWER, stream.read(&mut buf))
            .await
            .expect("handshake timed out")
            .unwrap();
        assert!(
            n > 0,
            "the Rust node closed the connection in the handshake"
        );
        hs.feed(&buf[..n]).unwrap();
    }
}

async fn send(w: &mut OwnedWriteHalf, framing: Framing, packet: &[Value]) {
    let mut out = BytesMut::new();
    framing::encode_value(framing, &Value::Array(packet.to_vec()), &mut out).unwrap();
    w.write_all(&out).await.unwrap();
}

/// Well-formed traffic: an array whose destination is a string, and a node-port request with a
/// string tag.
fn well_formed(p: &[Value]) -> bool {
    match p.first() {
        None => true,
        Some(dest) => {
            dest.as_str().is_some()
                && (dest.as_str().as_deref() != Some("")
                    || p.get(1).is_some_and(|t| t.as_str().is_some()))
        }
    }
}

async fn replay(probe: &Probe) {
    let cap = Capture::load(probe.name);
    let client = side(&cap, Dir::C2s);
    let server = side(&cap, Dir::S2c);
    let timeline = timeline(&cap);
    assert_eq!(
        timeline.iter().filter(|(d, _)| *d == Dir::C2s).count(),
        client.packets.len(),
        "{}: transcript and raw bytes disagree",
        probe.name
    );
    assert_eq!(
        timeline.iter().filter(|(d, _)| *d == Dir::S2c).count(),
        server.packets.len()
    );
    let perl_client = Greeting::parse(client.line1.as_bytes()).unwrap();
    let perl_server = Greeting::parse(server.line1.as_bytes()).unwrap();

    let (node, echo) = fixture_node(&cap.secret).await;
    let client_id = format!("conformance-{}", probe.name);
    let rw = Rewrite {
        pairs: vec![
            (perl_server.node_id.clone(), node.id().to_owned()),
            (perl_client.node_id.clone(), client_id.clone()),
        ],
        echo: (
            probe.echo.to_owned(),
            aemp::node::split_port_id(&echo).1.to_owned(),
        ),
    };
    let expected = expectations(&client, &server, &timeline, &perl_client.node_id, &rw);
    let answers: usize = expected.iter().map(Vec::len).sum();
    assert!(answers >= 8, "{}: only {answers} answers found", probe.name);

    // Greet with the capture's line 1 under our id.
    let listener = node.listeners()[0].to_string();
    let mut stream = TcpStream::connect(&listener).await.unwrap();
    let mut greeting = perl_client.clone();
    greeting.node_id.clone_from(&client_id);
    for (k, v) in &mut greeting.keys {
        if k == "peeraddr" {
            *v = Some(listener.clone());
        }
    }
    let est = handshake(&mut stream, greeting.to_line(), &client_id, &cap.secret).await;
    assert_eq!(est.peer.dialect, Some(probe.dialect), "{}", probe.name);
    assert_eq!(est.peer.greeting.node_id, node.id());
    assert_eq!(est.send_framing, client.framing, "{}", probe.name);
    assert_eq!(est.recv_framing, server.framing, "{}", probe.name);

    // Everything the node sends, decoded.
    let (mut r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Value>>();
    let recv_framing = est.recv_framing;
    let mut buf = BytesMut::from(&est.leftover[..]);
    actix_rt::spawn(async move {
        let mut dec = PacketDecoder::new(recv_framing, DEFAULT_MAX_PACKET);
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(p) = dec
                .decode(&mut buf)
                .expect("undecodable packet from the node")
            {
                match p.to_value().expect("undecodable packet from the node") {
                    Value::Array(items) => {
                        if tx.send(items).is_err() {
                            return;
                        }
                    }
                    other => panic!("packet is not an array: {other:?}"),
                }
            }
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });

    // Ports the client named to the node: what arrives there is an answer.
    let prefix = format!("{client_id}#");
    let client_ports: std::collections::HashSet<String> = client
        .packets
        .iter()
        .flat_map(|p| rw.packet(p))
        .filter_map(|v| text(Some(&v))?.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    let mut chatter: Vec<Vec<Value>> = Vec::new();
    for (i, packet) in client.packets.iter().enumerate() {
        send(&mut w, est.send_framing, &rw.packet(packet)).await;
        let mut waiting: VecDeque<&Expected> = expected[i].iter().collect();
        while !waiting.is_empty() {
            let got = tokio::time::timeout(ANSWER, rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: no answer to {:?}; still waiting for {:?}",
                        probe.name,
                        rw.packet(packet),
                        waiting.iter().map(|e| &e.packet).collect::<Vec<_>>()
                    )
                })
                .expect("the node closed the link");
            let at = waiting.iter().position(|e| key(&e.packet) == key(&got));
            let Some(at) = at else {
                let (dest, tag, _) = key(&got);
                let unasked = if dest.is_empty() {
                    answer_tag(&tag)
                } else {
                    client_ports.contains(&dest)
                };
                assert!(
                    !unasked,
                    "{}: an answer nobody asked for: {got:?}",
                    probe.name
                );
                assert!(well_formed(&got), "{}: malformed: {got:?}", probe.name);
                chatter.push(got);
                continue;
            };
            let want = waiting.remove(at).unwrap();
            if want.eval {
                // ["reply", prefix, "$@"]: refused, with the reason where Perl puts `$@`.
                assert_eq!(got.get(..2), want.packet.get(..2), "{}", probe.name);
                let err = text(got.get(2)).unwrap_or_default();
                assert!(
                    !err.is_empty(),
                    "{}: eval answered without an error: {got:?}",
                    probe.name
                );
            } else {
                conforms(
                    &Value::Array(want.packet.clone()),
                    &Value::Array(got.clone()),
                )
                .unwrap_or_else(|e| {
                    panic!("{}: answer to {:?}: {e}", probe.name, rw.packet(packet))
                });
            }
        }
    }

    // 1.x Perl peers are greeted by the Rust node's Global helper, as a Perl node would.
    if probe.dialect != Dialect::P2 {
        let spawn = chatter
            .iter()
            .find(|p| text(p.get(1)).as_deref() == Some("AnyEvent::MP::_spawn"))
            .unwrap_or_else(|| panic!("{}: no Global::connect spawned: {chatter:?}", probe.name));
        assert_eq!(
            text(spawn.get(3)).as_deref(),
            Some("AnyEvent::MP::Global::connect")
        );
        assert_eq!(spawn.get(4).and_then(Value::as_i64), Some(0));
        assert_eq!(text(spawn.get(5)).as_deref(), Some(node.id()));
        let helper = text(spawn.get(2)).unwrap();
        assert!(
            chatter
                .iter()
                .any(|p| key(p) == (String::new(), "mon1".into(), String::new())
                    && text(p.get(2)) == Some(helper.clone()))
        );
        let addr = chatter
            .iter()
            .find(|p| {
                text(p.first()) == Some(helper.clone()) && text(p.get(1)).as_deref() == Some("addr")
            })
            .unwrap_or_else(|| panic!("{}: no addr sent: {chatter:?}", probe.name));
        assert_eq!(
            addr.get(2),
            Some(&Value::Array(vec![Value::Str(listener.clone())]))
        );
    }
    node.shutdown();
}

#[actix_rt::test]
async fn p0_probe_conforms() {
    replay(&PROBES[0]).await;
}

#[actix_rt::test]
async fn p1b_probe_conforms() {
    replay(&PROBES[1]).await;
}

#[actix_rt::test]
async fn p2_probe_cbor_conforms() {
    replay(&PROBES[2]).await;
}

#[actix_rt::test]
async fn p2_probe_json_conforms() {
    replay(&PROBES[3]).await;
}

#[test]
fn the_harness_finds_the_answers_in_the_captures() {
    // p0-probe: time, info, eval, echo-1, kil (no such port), echo-2, kil (die), kil (exit).
    let cap = Capture::load("p0-probe");
    let (c, s) = (side(&cap, Dir::C2s), side(&cap, Dir::S2c));
    let rw = Rewrite {
        pairs: Vec::new(),
        echo: (String::new(), String::new()),
    };
    let e = expectations(&c, &s, &timeline(&cap), "ref-v0-client", &rw);
    let tags: Vec<String> = e
        .iter()
        .flatten()
        .map(|x| {
            let (d, t, third) = key(&x.packet);
            format!("{d}/{t}/{third}")
        })
        .collect();
    assert_eq!(
        tags,
        [
            "Xx0m2ox289.b/time-reply/",
            "Xx0m2ox289.b/info-reply/",
            "Xx0m2ox289.b/eval-reply/",
            "Xx0m2ox289.b/echo-1/",
            "/kil/no-such-port",
            "Xx0m2ox289.b/echo-2/",
            "/kil/gDNkA9pT3JRIByqt.d",
            "/kil/gDNkA9pT3JRIByqt.e",
        ]
    );
    assert_eq!(e.iter().flatten().filter(|x| x.eval).count(), 1);
    assert!(
        conforms(
            &Value::Array(vec![Value::from("a"), Value::Float(1.5)]),
            &Value::Array(vec![Value::from("a"), Value::Float(2.5)])
        )
        .is_ok()
    );
    assert!(
        conforms(
            &Value::Array(vec![Value::from("a"), Value::Float(1.5)]),
            &Value::Array(vec![Value::from("a"), Value::Int(2)])
        )
        .is_err()
    );
    assert!(conforms(&Value::from("127.0.0.1:1"), &Value::from("[::1]:2")).is_ok());
    assert!(conforms(&Value::from("x"), &Value::from("y")).is_err());
}
