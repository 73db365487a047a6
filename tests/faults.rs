//! Faults between nodes in separate processes (`aemp run`): a peer SIGKILLed while a stream
//! runs to it and then restarted, a peer restarted while the other side still holds its old
//! link, and a link cut silently between two network namespaces (detected within the liveness
//! bound). Detection times are printed, not asserted beyond the bound plus slack.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::procs::{NetnsPair, Proc, Streamer, rcv_number};

const LONG: Duration = Duration::from_secs(30);

/// `aemp run` with these options before `run` and these after.
fn run(name: &str, prefix: &[&str], global: &[&str], run: &[&str]) -> Proc {
    let mut cmd: Command = Proc::aemp(prefix);
    cmd.args(global).arg("run").args(run);
    Proc::start(name, cmd)
}

fn reason_of(line: &str, prefix: &str) -> Vec<String> {
    let json = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// B (a sink port `sink`) and A seeded to B (commands on stdin), linked, with A monitoring
/// B's sink: the start of each fault case. Returns (A, B, B's sink port id).
fn monitored_pair(a_id: &str, b_id: &str) -> (Proc, Proc, String) {
    let sink = format!("{b_id}#sink");
    let b = run(
        "B",
        &[],
        &["--nodeid", b_id],
        &["--bind", "127.0.0.1:0", "--sink", "sink"],
    );
    // A dials B, so A knows B's address.
    let mut a = run(
        "A",
        &[],
        &["--nodeid", a_id, "--seed", &b.addr],
        &["--bind", "127.0.0.1:0", "--stdin"],
    );
    a.wait_for(|l| l == format!("UP {b_id} p2"), LONG);
    a.command(&format!("mon {sink}"));
    (a, b, sink)
}

#[test]
fn a_peer_killed_mid_stream_fires_monitors_and_is_reached_again_once_restarted() {
    let b_id = "fault-kill-b";
    let (mut a, mut b, sink) = monitored_pair("fault-kill-a", b_id);
    let stream = Streamer::start(&a, &sink, 1, Duration::from_millis(2));
    let (_, line) = b.wait_for(|l| rcv_number(l).is_some_and(|n| n >= 100), LONG);
    let before: Vec<u64> = b.seen.iter().filter_map(|(_, l)| rcv_number(l)).collect();
    assert_eq!(before, (1..=rcv_number(&line).unwrap()).collect::<Vec<_>>());

    let killed = Instant::now();
    b.kill9();
    let (at, mon) = a.wait_for(|l| l.starts_with(&format!("MON {sink} ")), LONG);
    let reason = reason_of(&mon, &format!("MON {sink} "));
    assert_eq!(reason[..2], ["transport_error", b_id], "{mon}");
    println!("monitor fired {:?} after SIGKILL: {reason:?}", at - killed);
    let (at, down) = a.wait_for(|l| l.starts_with(&format!("DOWN {b_id} ")), LONG);
    assert_eq!(
        reason_of(&down, &format!("DOWN {b_id} "))[0],
        "transport_error"
    );
    println!("node-down {:?} after SIGKILL", at - killed);
    let last_before = rcv_number(&b.seen.last().unwrap().1).unwrap();

    // B again: same node id, same address. The stream goes on; A's next sends dial B again.
    let restarted = Instant::now();
    let mut b2 = run(
        "B2",
        &[],
        &["--nodeid", b_id],
        &["--bind", &b.addr, "--sink", "sink"],
    );
    let (at, _) = a.wait_for(|l| l == format!("UP {b_id} p2"), LONG);
    println!(
        "linked to the restarted B {:?} after restarting it",
        at - restarted
    );
    a.command(&format!("mon {sink}"));
    let (_, first) = b2.wait_for(|l| rcv_number(l).is_some(), LONG);
    let first = rcv_number(&first).unwrap();
    assert!(
        first > last_before,
        "{first} after {last_before}: nothing twice"
    );
    // Messages flow again, in order, each once.
    let upto = first + 100;
    b2.wait_for(|l| rcv_number(l).is_some_and(|n| n >= upto), LONG);
    let after: Vec<u64> = b2.seen.iter().filter_map(|(_, l)| rcv_number(l)).collect();
    assert_eq!(after, (first..=upto).collect::<Vec<_>>());
    drop(stream);
    assert!(
        !a.seen.iter().any(|(_, l)| l.starts_with("ERR")),
        "{}",
        a.transcript()
    );
    println!(
        "B got 1..={last_before}, lost {}, B2 got {first}..={upto}",
        first - last_before - 1
    );
}

#[test]
fn a_restarted_peer_replaces_the_link_its_old_process_still_holds() {
    let b_id = "fault-swap-b";
    let (mut a, mut b1, sink) = monitored_pair("fault-swap-a", b_id);
    a.command(&format!("snd {sink} 1"));
    b1.wait_for(|l| l == "RCV sink [1]", LONG);
    // The old process freezes: its kernel keeps the connection open and answers for it, so A
    // has no reason to think the link is dead. Meanwhile B is started again (on another port:
    // the frozen one holds the old), and dials A. (A link younger than a second is not
    // replaced: a second connection then is a crossing dial.)
    std::thread::sleep(Duration::from_millis(1200));
    b1.signal("-STOP");
    let restarted = Instant::now();
    let mut b2 = run(
        "B2",
        &[],
        &["--nodeid", b_id, "--seed", &a.addr],
        &["--bind", "127.0.0.1:0", "--sink", "sink"],
    );
    // No "already connected" for as long as the old link lives: the new link replaces it.
    let (at, _) = b2.wait_for(|l| l == "UP fault-swap-a p2", LONG);
    println!(
        "the restarted B linked {:?} after its start",
        at - restarted
    );
    let (_, mon) = a.wait_for(|l| l.starts_with(&format!("MON {sink} ")), LONG);
    assert_eq!(
        reason_of(&mon, &format!("MON {sink} ")),
        ["transport_error", b_id, "switched connections"]
    );
    let (_, down) = a.wait_for(|l| l.starts_with(&format!("DOWN {b_id} ")), LONG);
    assert_eq!(
        reason_of(&down, &format!("DOWN {b_id} ")),
        ["transport_error", b_id, "switched connections"]
    );
    a.wait_for(|l| l == format!("UP {b_id} p2"), LONG);
    a.command(&format!("mon {sink}"));
    a.command(&format!("snd {sink} 2"));
    b2.wait_for(|l| l == "RCV sink [2]", LONG);
    // The old process dies for good: its connection closes, which concerns the old link only.
    b1.kill9();
    std::thread::sleep(Duration::from_millis(300));
    a.command(&format!("snd {sink} 3"));
    b2.wait_for(|l| l == "RCV sink [3]", LONG);
    let ups_and_downs: Vec<&str> = a
        .seen
        .iter()
        .map(|(_, l)| l.as_str())
        .filter(|l| l.starts_with("UP ") || l.starts_with("DOWN ") || l.starts_with("MON "))
        .collect();
    assert_eq!(ups_and_downs.len(), 4, "{ups_and_downs:#?}");
    assert!(b1.seen.iter().all(|(_, l)| !l.starts_with("RCV sink [2")));
}

/// Two namespaces joined by a veth pair, or `None` (with a note) where they cannot be made.
fn namespaces(tag: &str) -> Option<NetnsPair> {
    match NetnsPair::create(tag) {
        Ok(pair) => Some(pair),
        Err(e) => {
            println!(
                "SKIPPED: cannot make network namespaces (needs root and iproute2's `ip`): {e}"
            );
            None
        }
    }
}

/// The liveness bound the namespace tests configure, and what a run may take on top of it
/// (a busy machine schedules the processes late; the kernel's timers are not late).
const LIVENESS_SECS: u64 = 3;
const SLACK: Duration = Duration::from_secs(5);

/// A in the first namespace dials B in the second; both with the liveness bound. A monitors
/// B's sink and has sent it one message.
fn linked_pair(pair: &NetnsPair) -> (Proc, Proc) {
    let liveness = LIVENESS_SECS.to_string();
    let b_bind = format!("{}:4040", pair.ip[1]);
    let b = run(
        "B",
        &pair.exec(1),
        &["--nodeid", "cut-b", "--liveness", &liveness],
        &["--bind", &b_bind, "--sink", "sink"],
    );
    let a_bind = format!("{}:4040", pair.ip[0]);
    let mut a = run(
        "A",
        &pair.exec(0),
        &[
            "--nodeid",
            "cut-a",
            "--liveness",
            &liveness,
            "--seed",
            &b_bind,
        ],
        &["--bind", &a_bind, "--stdin"],
    );
    a.wait_for(|l| l == "UP cut-b p2", LONG);
    let mut b = b;
    b.wait_for(|l| l == "UP cut-a p2", LONG);
    a.command("mon cut-b#sink");
    a.command("snd cut-b#sink 0");
    b.wait_for(|l| l == "RCV sink [0]", LONG);
    (a, b)
}

/// Waits for A's monitor and node-down and B's node-down after a cut at `cut`; prints and
/// checks the detection times.
fn detected(what: &str, a: &mut Proc, b: &mut Proc, cut: Instant) {
    let bound = Duration::from_secs(LIVENESS_SECS) + SLACK;
    let (at, mon) = a.wait_for(|l| l.starts_with("MON cut-b#sink "), LONG);
    let reason = reason_of(&mon, "MON cut-b#sink ");
    assert_eq!(reason[..2], ["transport_error", "cut-b"], "{mon}");
    let mon_after = at - cut;
    let (at, down) = a.wait_for(|l| l.starts_with("DOWN cut-b "), LONG);
    assert_eq!(reason_of(&down, "DOWN cut-b ")[0], "transport_error");
    let a_after = at - cut;
    let (at, down_b) = b.wait_for(|l| l.starts_with("DOWN cut-a "), LONG);
    let b_after = at - cut;
    println!(
        "{what}, liveness {LIVENESS_SECS} s: A's monitor fired after {mon_after:?} ({reason:?}), \
         A saw node-down after {a_after:?}, B after {b_after:?} ({down_b})"
    );
    for (side, t) in [("A's monitor", mon_after), ("A", a_after), ("B", b_after)] {
        assert!(
            t <= bound,
            "{what}: {side} noticed after {t:?} (bound {bound:?})"
        );
    }
}

#[test]
fn an_idle_link_cut_silently_is_failed_within_the_liveness_bound() {
    let Some(pair) = namespaces("idl") else {
        return;
    };
    let (mut a, mut b) = linked_pair(&pair);
    // Quiet for a while: only keepalive probes cross the link now.
    std::thread::sleep(Duration::from_secs(2));
    let cut = Instant::now();
    pair.set_link(1, false);
    detected("idle link cut", &mut a, &mut b, cut);
}

#[test]
fn a_busy_link_cut_silently_is_failed_within_the_liveness_bound_and_relinks_once_restored() {
    let Some(pair) = namespaces("bsy") else {
        return;
    };
    let (mut a, mut b) = linked_pair(&pair);
    let stream = Streamer::start(&a, "cut-b#sink", 1, Duration::from_millis(1));
    b.wait_for(|l| rcv_number(l).is_some_and(|n| n >= 200), LONG);
    let cut = Instant::now();
    pair.set_link(1, false);
    detected("link cut with data in flight", &mut a, &mut b, cut);
    let last = b
        .seen
        .iter()
        .filter_map(|(_, l)| rcv_number(l))
        .max()
        .unwrap();
    // The path comes back: A's stream dials B again (A knows its address) and flows on.
    let restored = Instant::now();
    pair.set_link(1, true);
    let (at, _) = a.wait_for(|l| l == "UP cut-b p2", LONG);
    println!("relinked {:?} after the path came back", at - restored);
    let (_, line) = b.wait_for(|l| rcv_number(l).is_some_and(|n| n > last), LONG);
    let first = rcv_number(&line).unwrap();
    b.wait_for(|l| rcv_number(l).is_some_and(|n| n >= first + 50), LONG);
    drop(stream);
    let got: Vec<u64> = b.seen.iter().filter_map(|(_, l)| rcv_number(l)).collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, nothing twice"
    );
}
