//! Cluster formation between `aemp run` processes: seeds that start late or restart, a chain
//! of seeds through which every node is reached by id, and three global nodes with ten slaves
//! that keep reaching each other when a master is killed.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::procs::{Proc, Streamer, rcv_number};

const LONG: Duration = Duration::from_secs(30);

/// `aemp run` (P2, the tests' secret) with these options before `run` and these after.
fn run(name: &str, global: &[&str], run: &[&str]) -> Proc {
    let mut cmd: Command = Proc::aemp(&[]);
    cmd.args(global).arg("run").args(run);
    Proc::start(name, cmd)
}

/// A node named `id` with a sink port `in`, the given seeds, commands on stdin.
fn node(id: &str, seeds: &[&str]) -> Proc {
    // Messages for a node not found yet wait up to `--timeout` (connect timeout) for it.
    let mut global = vec!["--nodeid", id, "--timeout", "15"];
    for s in seeds {
        global.extend(["--seed", s]);
    }
    run(
        id,
        &global,
        &["--bind", "127.0.0.1:0", "--sink", "in", "--stdin"],
    )
}

/// A port nobody listens on yet.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs a one-shot `aemp` command against `seed` and returns its standard output.
fn one_shot(seed: &str, args: &[&str]) -> String {
    let out = Proc::aemp(&[])
        .args(["--seed", seed, "--timeout", "10"])
        .args(args)
        .output()
        .expect("run aemp");
    assert!(
        out.status.success(),
        "aemp {args:?} via {seed}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_node_links_to_a_seed_that_starts_later_and_rejoins_it_after_a_restart() {
    let port = free_port();
    let seed_addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let mut b = node("late-b", &[&seed_addr]);
    std::thread::sleep(Duration::from_secs(3));
    let seed_args = ["--bind", &seed_addr, "--sink", "in"];
    let mut a = run("late-a", &["--nodeid", "late-a"], &seed_args);
    let up_at = Instant::now();
    let (at, _) = b.wait_for(|l| l == "UP late-a p2", LONG);
    let waited = at - up_at;
    println!(
        "seed up {:?} after the node; linked {waited:?} after the seed listened",
        up_at - start
    );
    // Back-off: 0.6–1.2 s, doubling; the round after the seed came up is at most ~2.4 s away.
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    a.kill9();
    b.wait_for(|l| l.starts_with("DOWN late-a "), LONG);
    let mut a = run("late-a again", &["--nodeid", "late-a"], &seed_args);
    let again = Instant::now();
    let (at, _) = b.wait_for(|l| l == "UP late-a p2", LONG);
    println!("restarted seed rejoined after {:?}", at - again);
    assert!(at - again < Duration::from_secs(5));
    // And it works: b sends to the restarted seed's sink.
    b.command("snd late-a#in 7");
    a.wait_for(|l| l == "RCV in [7]", LONG);
}

#[test]
fn a_chain_of_seeds_reaches_every_node_by_id() {
    let a = node("chain-a", &[]);
    let mut b = node("chain-b", &[&a.addr]);
    b.wait_for(|l| l == "UP chain-a p2", LONG);
    let mut c = node("chain-c", &[&b.addr]);
    c.wait_for(|l| l == "UP chain-b p2", LONG);
    // C never linked to A: a one-shot command seeded at C finds A through C's network.
    let out = one_shot(&c.addr, &["cal", "chain-a", "time"]);
    let t: Vec<f64> = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert!(t[0] > 1e9, "{out}");
    // And the other way round, and a message from C to A's sink by id.
    one_shot(&a.addr, &["cal", "chain-c", "time"]);
    c.command("snd chain-a#in 42");
    let mut a = a;
    a.wait_for(|l| l == "RCV in [42]", LONG);
    // `nodes` lists all three, up.
    let out = one_shot(&b.addr, &["nodes"]);
    let nodes: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for id in ["chain-a", "chain-b", "chain-c"] {
        assert_eq!(
            nodes[id]["up"],
            serde_json::Value::Bool(true),
            "{id} in {out}"
        );
        assert!(nodes[id]["addrs"][0].is_string(), "{id} in {out}");
    }
}

/// Every node sends `hello-from-<id>` to every other's sink by id, and each sink hears all.
fn everyone_reaches_everyone(nodes: &mut [Proc], tag: &str) {
    let ids: Vec<String> = nodes.iter().map(|n| n.node.clone()).collect();
    for n in nodes.iter() {
        for other in &ids {
            if *other != n.node {
                n.command(&format!("snd {other}#in {tag} {}", n.node));
            }
        }
    }
    for n in nodes.iter_mut() {
        let mut heard = BTreeSet::new();
        let want: BTreeSet<String> = ids.iter().filter(|i| **i != n.node).cloned().collect();
        let deadline = Instant::now() + LONG;
        while heard != want {
            let left = deadline.saturating_duration_since(Instant::now());
            let prefix = format!("RCV in [\"{tag}\",\"");
            let Some((_, line)) = n.try_wait_for(|l| l.starts_with(&prefix), left) else {
                panic!(
                    "{} heard only {heard:?} of {want:?}:\n{}",
                    n.node,
                    n.transcript()
                );
            };
            let from = line[prefix.len()..].trim_end_matches("\"]").to_owned();
            heard.insert(from);
        }
    }
}

#[test]
fn three_globals_and_ten_slaves_reach_each_other_and_a_killed_master_is_replaced() {
    let ports: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let seeds: Vec<&str> = ports.iter().map(String::as_str).collect();
    let global = |i: usize| {
        let id = format!("g{i}");
        let mut args = vec!["--nodeid", &id];
        for s in &seeds {
            args.extend(["--seed", s]);
        }
        run(&id, &args, &["--bind", seeds[i], "--sink", "in", "--stdin"])
    };
    // g0 first: every slave binds to it, the only seed up when they start.
    let mut globals = vec![global(0)];
    let mut slaves: Vec<Proc> = (0..10).map(|i| node(&format!("s{i}"), &seeds)).collect();
    for s in &mut slaves {
        s.wait_for(|l| l == "UP g0 p2", LONG);
    }
    globals.push(global(1));
    globals.push(global(2));
    for s in &mut slaves {
        if !s.seen.iter().any(|(_, l)| l == "UP g1 p2") {
            s.wait_for(|l| l == "UP g1 p2", LONG);
        }
        if !s.seen.iter().any(|(_, l)| l == "UP g2 p2") {
            s.wait_for(|l| l == "UP g2 p2", LONG);
        }
    }
    let mut all: Vec<Proc> = globals.into_iter().chain(slaves).collect();
    everyone_reaches_everyone(&mut all, "hello");

    // s0 streams to s5 (a direct link) while the slaves' master g0 is killed; s1 has a
    // message waiting for a node that does not exist yet, whose lookup g0 could not answer.
    let stream = Streamer::start(&all[3], "s5#in", 1, Duration::from_millis(5));
    all[8].wait_for(|l| rcv_number(l).is_some_and(|n| n >= 50), LONG);
    all[4].command("snd late#in early");
    std::thread::sleep(Duration::from_millis(200));
    all[0].kill9();
    for p in all.iter_mut().skip(1) {
        p.wait_for(|l| l.starts_with("DOWN g0 "), LONG);
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(stream);
    // Every number s0 sent reached s5, in order.
    all[3].command("snd s5#in done");
    all[8].wait_for(|l| l == "RCV in [\"done\"]", LONG);
    let got: Vec<u64> = all[8]
        .seen
        .iter()
        .filter_map(|(_, l)| rcv_number(l))
        .collect();
    assert_eq!(
        got,
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "s5 got gaps"
    );
    assert!(got.len() >= 50);

    // A node that joins after the kill, seeded only at g1, is found by every slave through its
    // new master.
    let mut late = node("late", &[seeds[1]]);
    // The lookup s1 made before the kill is asked again of its new master: its message arrives.
    late.wait_for(|l| l == "RCV in [\"early\"]", LONG);
    let mut rest: Vec<Proc> = all.drain(1..).collect();
    rest.push(late);
    everyone_reaches_everyone(&mut rest, "again");
}
