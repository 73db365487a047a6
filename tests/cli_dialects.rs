//! One-shot `aemp` commands, with no `--dialect`, against scripted listeners that behave like
//! Perl 1.0, 1.30 and 2.x nodes, over real sockets.
//!
//! Each scripted listener greets with the line 1 of the Perl server in a probe capture (its
//! provider, version and keys as Perl sent them, `peeraddr` set to the real dialler) and a
//! fresh nonce, at once, as Perl does. It then runs the handshake as Perl would: a dialler of
//! another protocol version, or one it shares no auth method with, is dropped without a word;
//! otherwise it authenticates with the capture's secret and, in the data phase, answers
//! node-port `time` requests, relays `snd` requests and records what is sent to its other ports.
//!
//! The CLI dials in P2 first: the 2.x listener links at once, the 1.0 and 1.30 ones after one
//! refused attempt, which the CLI must get over without a warning or a failing exit.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aemp::node::split_port_id;
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{self, DEFAULT_MAX_PACKET, PacketDecoder};
use aemp::proto::greeting::{Greeting, Nonce};
use aemp::proto::handshake::{Established, Event, Handshake, HandshakeConfig, OwnGreeting};
use aemp::proto::value::Value;
use bytes::BytesMut;
use common::procs::AEMP;
use common::{Capture, Dir, lines};

/// What happened on one connection to a scripted listener.
#[derive(Debug, Clone, PartialEq)]
enum Conn {
    /// The handshake failed (either side dropped the connection).
    Failed(String),
    /// The link came up, in this dialect.
    Up(Dialect),
}

/// A scripted Perl listener (see the module docs).
struct PerlListener {
    addr: String,
    node: String,
    secret: String,
    dialect: Dialect,
    conns: Arc<Mutex<Vec<Conn>>>,
    /// Messages to ports other than the node port: `[port, args…]`.
    received: Arc<Mutex<Vec<Vec<Value>>>>,
}

impl PerlListener {
    fn start(capture: &'static str) -> PerlListener {
        PerlListener::start_at(capture, "127.0.0.1:0")
    }

    fn start_at(capture: &'static str, addr: &str) -> PerlListener {
        let cap = Capture::load(capture);
        let s2c = cap.bytes(0, Dir::S2c);
        let (first, _) = lines(&s2c, 1);
        let greeting = Greeting::parse(&first[0]).unwrap();
        let dialect = Dialect::of_greeting(&greeting).unwrap();
        let listener = TcpListener::bind(addr).unwrap();
        let me = PerlListener {
            addr: listener.local_addr().unwrap().to_string(),
            node: greeting.node_id.clone(),
            secret: String::from_utf8(cap.secret.clone()).unwrap(),
            dialect,
            conns: Arc::default(),
            received: Arc::default(),
        };
        let (conns, received, secret) = (me.conns.clone(), me.received.clone(), cap.secret);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (greeting, secret) = (greeting.clone(), secret.clone());
                let (conns, received) = (conns.clone(), received.clone());
                std::thread::spawn(move || serve(stream, greeting, &secret, &conns, &received));
            }
        });
        me
    }

    /// The outcomes of the connections so far, once there are `n` of them (a connection's
    /// thread may still be finishing when the CLI has exited).
    fn conns(&self, n: usize) -> Vec<Conn> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let conns = self.conns.lock().unwrap().clone();
            if conns.len() >= n || Instant::now() > deadline {
                return conns;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One connection: the handshake, then the data phase until the dialler closes.
fn serve(
    mut stream: TcpStream,
    mut greeting: Greeting,
    secret: &[u8],
    outcome: &Mutex<Vec<Conn>>,
    received: &Mutex<Vec<Vec<Value>>>,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let peer = stream.peer_addr().unwrap().to_string();
    for (k, v) in &mut greeting.keys {
        if k == "peeraddr" {
            *v = Some(peer.clone());
        }
    }
    let mut cfg = HandshakeConfig::new(greeting.node_id.clone(), secret.to_vec(), Dialect::P0);
    cfg.greeting = OwnGreeting::Injected {
        line1: greeting.to_line(),
        nonce: Nonce::random().unwrap(),
    };
    let mut hs = Handshake::new(cfg).unwrap();
    // Perl greets at once, before it reads anything.
    stream.write_all(&hs.take_output()).unwrap();
    let est = match handshake(&mut stream, &mut hs) {
        Ok(est) => est,
        // Perl drops the connection without another word; but it wrote its auth line as soon
        // as it had the dialler's nonce, before it read (and refused) the dialler's auth line,
        // even when both came in one read.
        Err(why) => {
            let _ = stream.write_all(&hs.take_output());
            return outcome.lock().unwrap().push(Conn::Failed(why));
        }
    };
    outcome.lock().unwrap().push(Conn::Up(est.dialect));
    data_phase(stream, &est, received);
}

/// Runs the handshake to its end; `Err` says why it failed.
fn handshake(stream: &mut TcpStream, hs: &mut Handshake) -> Result<Box<Established>, String> {
    let mut buf = [0u8; 4096];
    loop {
        while let Some(ev) = hs.poll_event() {
            match ev {
                // The version was checked already; Perl has no other line-1 check that applies.
                Event::PeerGreeting(_) => hs.accept_peer(None).map_err(|e| e.to_string())?,
                Event::StartTls(_) => return Err("no TLS here".into()),
                Event::Established(est) => {
                    stream
                        .write_all(&hs.take_output())
                        .map_err(|e| e.to_string())?;
                    return Ok(est);
                }
            }
        }
        stream
            .write_all(&hs.take_output())
            .map_err(|e| e.to_string())?;
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the dialler closed the connection".into());
        }
        hs.feed(&buf[..n]).map_err(|e| e.to_string())?;
    }
}

/// Answers `time`, relays `snd`, records messages to other ports; ignores the rest (the
/// dialler's global-service chatter).
fn data_phase(mut stream: TcpStream, est: &Established, received: &Mutex<Vec<Vec<Value>>>) {
    let mut decoder = PacketDecoder::new(est.recv_framing, DEFAULT_MAX_PACKET);
    let mut buf = BytesMut::from(&est.leftover[..]);
    let mut chunk = [0u8; 65536];
    loop {
        while let Ok(Some(packet)) = decoder.decode(&mut buf) {
            let Ok(Value::Array(p)) = packet.to_value() else {
                continue;
            };
            let reply = match p.first().and_then(Value::as_str).as_deref() {
                Some("") => node_request(&p[1..]),
                Some(_) => {
                    received.lock().unwrap().push(p);
                    None
                }
                None => None,
            };
            if let Some(answer) = reply {
                let mut out = BytesMut::new();
                framing::encode_value(est.send_framing, &Value::Array(answer), &mut out).unwrap();
                if stream.write_all(&out).is_err() {
                    return;
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The answer of Perl's node port to `[tag, args…]`, as a packet to send back.
fn node_request(request: &[Value]) -> Option<Vec<Value>> {
    let tag = request.first()?.as_str()?;
    let target = request.get(1)?.as_str()?;
    // Port ids are `node#name`; on the link the packet goes to `name`.
    let dest = Value::from(split_port_id(&target).1);
    let mut answer = vec![dest];
    match &*tag {
        "time" => {
            answer.extend(request[2..].iter().cloned());
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
            answer.push(Value::Float(now.as_secs_f64()));
        }
        "snd" => answer.extend(request[2..].iter().cloned()),
        _ => return None,
    }
    Some(answer)
}

/// Runs the CLI against `seed` with logging on at info level, as a user debugging would.
fn cli(seed: &PerlListener, secret: &str, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(AEMP)
        // Never the profile file of the machine running the tests.
        .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
        .args(["--secret", secret, "--seed", &seed.addr, "--timeout", "10"])
        .args(args)
        .env("RUST_LOG", "aemp=info")
        .env("NO_COLOR", "1")
        .output()
        .expect("run aemp");
    (out, started.elapsed())
}

/// Runs a command that must succeed without a warning; returns its standard output.
fn ok(seed: &PerlListener, args: &[&str]) -> String {
    let (out, _) = cli(seed, &seed.secret, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("{:?} seed, {args:?}: {stderr}", seed.dialect);
    assert!(out.status.success(), "{what}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{what}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `cal NODE time`, `snd` and a short `bench` against a listener of each Perl version.
fn one_shot_commands_work(capture: &'static str, expected: Dialect) {
    let seed = PerlListener::start(capture);
    assert_eq!(seed.dialect, expected);

    let time = ok(&seed, &["cal", &seed.node, "time"]);
    let t: Vec<f64> = serde_json::from_str(time.trim()).unwrap_or_else(|e| panic!("{time}: {e}"));
    assert!(t.len() == 1 && t[0] > 1.6e9, "{time}");
    // A Perl node of another version than P2 refuses the first dial; the redial links.
    let attempts = if expected == Dialect::P2 { 1 } else { 2 };
    let conns = seed.conns(attempts);
    assert_eq!(conns.len(), attempts, "{conns:?}");
    assert!(
        matches!(conns.last(), Some(Conn::Up(d)) if *d == expected),
        "{conns:?}"
    );
    assert!(
        conns[..attempts - 1]
            .iter()
            .all(|c| matches!(c, Conn::Failed(_))),
        "{conns:?}"
    );

    let port = format!("{}#inbox", seed.node);
    ok(&seed, &["snd", &port, "hello", "[1,2]"]);
    // The rest is the CLI node's global-service chatter with the helper it spawned.
    let mut received = seed.received.lock().unwrap().clone();
    received.retain(|p| p[0] == Value::from("inbox"));
    assert_eq!(
        received,
        vec![vec![
            Value::from("inbox"),
            Value::from("hello"),
            Value::Array(vec![Value::Int(1), Value::Int(2)])
        ]]
    );

    let bench = ok(&seed, &["bench", "--mode", "rtt", "-n", "20"]);
    assert!(bench.starts_with("RESULT mode=rtt n=20 "), "{bench}");
    // Each command is a new node: the same one failed attempt (or none) each time.
    let conns = seed.conns(3 * attempts);
    assert_eq!(conns.len(), 3 * attempts, "{conns:?}");
}

#[test]
fn one_shot_commands_work_against_perl_1_0() {
    one_shot_commands_work("p0-probe", Dialect::P0);
}

#[test]
fn one_shot_commands_work_against_perl_1_30() {
    one_shot_commands_work("p1b-probe", Dialect::P1b);
}

#[test]
fn one_shot_commands_work_against_perl_2() {
    one_shot_commands_work("p2-probe-json", Dialect::P2);
}

/// A wrong secret is still an error, reported at once (after the redial in the seed's
/// dialect), in one line.
#[test]
fn a_wrong_secret_fails_promptly_against_every_perl_version() {
    for capture in ["p0-probe", "p1b-probe", "p2-probe-json"] {
        let seed = PerlListener::start(capture);
        let (out, took) = cli(&seed, "not-the-secret", &["cal", &seed.node, "time"]);
        assert!(!out.status.success(), "{capture}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("aemp: ") && last.contains("shared secret mismatch"),
            "{capture}: {stderr}"
        );
        assert!(took < Duration::from_secs(5), "{capture}: took {took:?}");
    }
}

/// A seed that starts listening only after the command started is waited for (the CLI dials
/// again while the connection is refused), up to the timeout.
#[test]
fn a_seed_that_starts_late_is_waited_for() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cap = Capture::load("p1b-probe");
    let secret = String::from_utf8(cap.secret).unwrap();
    let cli = Command::new(AEMP)
        // Never the profile file of the machine running the tests.
        .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
        .args(["--secret", &secret, "--seed", &addr, "--timeout", "10"])
        .args(["cal", "ref-v1.30-server", "time"])
        .env("RUST_LOG", "aemp=info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let seed = PerlListener::start_at("p1b-probe", &addr);
    let out = cli.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    let t: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(t[0] > 1.6e9);
    assert_eq!(seed.conns(2).len(), 2, "one refused dialect, one link");
}
