//! No silent loss: a million numbered messages to a port on another process's node, whose
//! process is SIGKILLed and started again (same node id, same address) several times during
//! the run. Every message is delivered exactly once and in order, or falls in a range that a
//! monitor on the destination port reported; none is dropped without a word.
//!
//! The accounting: the sender (a node in this process) sends `[seq]` to `loss-b#sink` while a
//! monitor watches that port. The receiver (`aemp run --sink sink`) prints `RCV sink [seq]`
//! for each message as its port handles it, one write per line, so a line printed before a
//! SIGKILL is still read here; the highest number read is the last confirmed delivery. When
//! the monitor fires, the sender records the range from the last confirmed delivery to the
//! last message sent as reported, and monitors the port again before its next send. At the end
//! the delivered numbers must be strictly increasing, every number not delivered must lie in a
//! reported range, and delivered + not delivered = all of them. The sender keeps at most
//! `WINDOW` messages beyond the last confirmed or reported one, as an application that waits
//! for acknowledgements would, so that a break loses a bounded number of them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aemp::node::{DialectMode, Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use aemp::proto::value::Value;
use tokio::sync::mpsc;

const AEMP: &str = env!("CARGO_BIN_EXE_aemp");
const SECRET: &str = "loss-secret";
const RECEIVER: &str = "loss-b";
const PORT: &str = "loss-b#sink";
/// Messages sent beyond the last confirmed (or reported) one, at most.
const WINDOW: u64 = 10_000;
/// The receiver is killed when deliveries pass each of these fractions of the run.
const BREAKS: [f64; 4] = [0.15, 0.35, 0.55, 0.75];

/// What the receiving processes printed, across their incarnations, in order.
#[derive(Default)]
struct Deliveries {
    seqs: Mutex<Vec<u64>>,
    /// The highest number printed so far: the last confirmed delivery.
    confirmed: AtomicU64,
}

/// One incarnation of the receiving `aemp run`.
struct Receiver {
    child: Child,
    reader: Option<JoinHandle<()>>,
    addr: String,
}

impl Receiver {
    /// Starts `aemp run` with the sink on `bind`; its printed deliveries go to `got`.
    fn start(bind: &str, got: &Arc<Deliveries>) -> Receiver {
        let mut child = Command::new(AEMP)
            // Never the profile file of the machine running the tests.
            .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
            .args(["--secret", SECRET, "--dialect", "p2", "--nodeid", RECEIVER])
            .args(["run", "--bind", bind, "--sink", "sink"])
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aemp run");
        let stdout = child.stdout.take().unwrap();
        let (addr_tx, addr_rx) = std_mpsc::channel();
        let got = got.clone();
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(seq) = line
                    .strip_prefix("RCV sink [")
                    .and_then(|r| r.strip_suffix(']'))
                {
                    let seq: u64 = seq.parse().expect("RCV sink [number]");
                    got.seqs.lock().unwrap().push(seq);
                    got.confirmed.fetch_max(seq, Ordering::Release);
                } else if let Some(rest) = line.strip_prefix("NODE ") {
                    let addr = rest.rsplit(' ').next().unwrap_or_default().to_owned();
                    let _ = addr_tx.send(addr);
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the receiver announces itself");
        Receiver {
            child,
            reader: Some(reader),
            addr,
        }
    }

    /// SIGKILL; returns once everything it printed has been read.
    fn kill9(mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sender's side of the accounting.
struct Sender {
    node: Node,
    got: Arc<Deliveries>,
    fired_tx: mpsc::UnboundedSender<Vec<Value>>,
    fired: mpsc::UnboundedReceiver<Vec<Value>>,
    last_sent: u64,
    /// Everything up to here is confirmed or reported.
    accounted: u64,
    reported: Vec<(u64, u64)>,
    reasons: Vec<Vec<Value>>,
    send_errors: u64,
}

impl Sender {
    fn monitor(&self) {
        let tx = self.fired_tx.clone();
        self.node
            .mon(PORT, move |reason| {
                let _ = tx.send(reason);
            })
            .detach();
    }

    /// Takes what the monitor reported: the messages since the last confirmed delivery may
    /// be lost. Monitors the port again at once, before anything else is sent.
    fn take_reports(&mut self) {
        while let Ok(reason) = self.fired.try_recv() {
            let from = self.got.confirmed.load(Ordering::Acquire) + 1;
            if from <= self.last_sent {
                self.reported.push((from, self.last_sent));
            }
            self.accounted = self.last_sent;
            self.reasons.push(reason);
            self.monitor();
        }
    }

    fn floor(&self) -> u64 {
        self.got
            .confirmed
            .load(Ordering::Acquire)
            .max(self.accounted)
    }

    async fn send_all(&mut self, n: u64) {
        self.monitor();
        for seq in 1..=n {
            loop {
                self.take_reports();
                if seq - self.floor() <= WINDOW {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // An error (the link went down under an awaiting send) is reported by the monitor.
            if self.node.send(PORT, &(seq,)).await.is_err() {
                self.send_errors += 1;
            }
            self.last_sent = seq;
        }
        // The end: every message delivered, or the last ones reported.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.take_reports();
            if self.floor() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "neither delivered nor reported: {}..={n}",
                self.floor() + 1
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Kills the receiver each time deliveries pass a break point and starts it again on the same
/// address; returns the last incarnation and the number of breaks.
fn breaker(first: Receiver, got: Arc<Deliveries>, n: u64) -> JoinHandle<(Receiver, Vec<Duration>)> {
    std::thread::spawn(move || {
        let mut current = first;
        let mut downtimes = Vec::new();
        for at in BREAKS {
            let point = (n as f64 * at) as u64;
            while got.confirmed.load(Ordering::Acquire) < point {
                std::thread::sleep(Duration::from_millis(2));
            }
            let addr = current.addr.clone();
            let killed = Instant::now();
            current.kill9();
            current = Receiver::start(&addr, &got);
            downtimes.push(killed.elapsed());
        }
        (current, downtimes)
    })
}

/// Merged, sorted ranges.
fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

async fn run(n: u64) {
    let started = Instant::now();
    let got = Arc::new(Deliveries::default());
    let first = Receiver::start("127.0.0.1:0", &got);
    let node = Node::start(NodeConfig {
        secret: SECRET.into(),
        dialect: DialectMode::Fixed(Dialect::P2),
        // A restarted receiver is dialled again soon after it listens.
        connect_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(10),
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    node.add_node_addresses(RECEIVER, vec![first.addr.clone()]);
    let breaks = breaker(first, got.clone(), n);
    let (fired_tx, fired) = mpsc::unbounded_channel();
    let mut sender = Sender {
        node: node.clone(),
        got: got.clone(),
        fired_tx,
        fired,
        last_sent: 0,
        accounted: 0,
        reported: Vec::new(),
        reasons: Vec::new(),
        send_errors: 0,
    };
    sender.send_all(n).await;
    let (last, downtimes) = breaks.join().unwrap();
    last.kill9();
    node.shutdown();

    let seqs = std::mem::take(&mut *got.seqs.lock().unwrap());
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "delivered out of order or twice"
    );
    assert!(
        seqs.iter().all(|s| (1..=n).contains(s)),
        "delivered what was never sent"
    );
    let reported = merged(sender.reported.clone());
    // Every number not delivered lies in a reported range.
    let mut next = seqs.iter().peekable();
    let mut lost = 0u64;
    let mut silent = Vec::new();
    for seq in 1..=n {
        if next.peek() == Some(&&seq) {
            next.next();
            continue;
        }
        lost += 1;
        if !reported.iter().any(|(lo, hi)| (*lo..=*hi).contains(&seq)) {
            silent.push(seq);
        }
    }
    let covered: u64 = reported.iter().map(|(lo, hi)| hi - lo + 1).sum();
    println!(
        "{n} messages, {} breaks (receiver down {downtimes:?}): delivered {}, not delivered {lost} \
         (all reported), reported ranges cover {covered} ({} of them delivered after all), \
         {} monitor reports, {} sends failed, {:?}",
        downtimes.len(),
        seqs.len(),
        covered - lost,
        sender.reasons.len(),
        sender.send_errors,
        started.elapsed()
    );
    for r in &sender.reasons {
        println!("  monitor: {}", Value::Array(r.clone()));
    }
    assert!(
        silent.is_empty(),
        "lost without a word: {} of them, first {:?}",
        silent.len(),
        &silent[..silent.len().min(20)]
    );
    assert_eq!(seqs.len() as u64 + lost, n);
    assert_eq!(downtimes.len(), BREAKS.len());
    assert!(
        sender.reasons.len() >= BREAKS.len(),
        "a report for each break"
    );
}

#[actix_rt::test]
async fn a_million_messages_across_a_link_broken_four_times_are_delivered_or_reported() {
    run(1_000_000).await;
}
