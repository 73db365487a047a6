//! Nodes on separate "hosts": network namespaces on one bridge, each with its own address.
//! A node bound to `*:4040` announces its host's address (not `0.0.0.0`, not loopback), a node
//! on another host links to it through that, and one-shot commands from a third host reach
//! both by the addresses they printed. Needs root and iproute2; skipped (with a note) otherwise.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::procs::{NetnsLan, Proc};

const LONG: Duration = Duration::from_secs(30);

/// `aemp run` on host `i` with these options before `run` and these after.
fn run(lan: &NetnsLan, i: usize, name: &str, global: &[&str], run: &[&str]) -> Proc {
    let mut cmd: Command = Proc::aemp(&lan.exec(i));
    cmd.args(global).arg("run").args(run);
    Proc::start(name, cmd)
}

/// A one-shot `aemp` command on host `i`; panics with its stderr if it fails.
fn one_shot(lan: &NetnsLan, i: usize, args: &[&str]) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = Proc::aemp(&lan.exec(i))
        .args(args)
        .output()
        .expect("run aemp");
    let (out, err) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    assert!(status.success(), "aemp {args:?}: {status}\n{out}{err}");
    out.into_owned()
}

/// What `*` with `port` must bind on host `i`: its IPv4 address, then its IPv6 one.
fn star(lan: &NetnsLan, i: usize, port: &str) -> String {
    let mut want = format!("{}:{port}", lan.ip4[i]);
    if let Some(v6) = &lan.ip6 {
        want.push_str(&format!(",[{}]:{port}", v6[i]));
    }
    want
}

#[test]
fn nodes_on_separate_hosts_bind_star_and_reach_each_other_by_what_they_announce() {
    let lan = match NetnsLan::create("hst", 3) {
        Ok(lan) => lan,
        Err(e) => {
            println!(
                "SKIPPED: cannot make network namespaces (needs root and iproute2's `ip`): {e}"
            );
            return;
        }
    };
    // A on host 0: `*` is that host's own addresses; loopback is left out.
    let mut a = run(
        &lan,
        0,
        "A",
        &["--nodeid", "hosts-a"],
        &["--bind", "*:4040"],
    );
    println!("A on host 0 listens on {}", a.addr);
    assert_eq!(a.addr, star(&lan, 0, "4040"));
    assert!(!a.addr.contains("0.0.0.0") && !a.addr.contains("127.") && !a.addr.contains("[::"));

    // B on host 1 links to A through A's address.
    let seed_a = format!("{}:4040", lan.ip4[0]);
    let mut b = run(
        &lan,
        1,
        "B",
        &["--nodeid", "hosts-b", "--seed", &seed_a],
        &["--bind", "*:4040", "--sink", "sink"],
    );
    assert_eq!(b.addr, star(&lan, 1, "4040"));
    b.wait_for(|l| l == "UP hosts-a p2", LONG);
    a.wait_for(|l| l == "UP hosts-b p2", LONG);

    // From host 2: a request to A's node port, seeded with a list (IPv6 first where there is
    // one), and a message to B's sink, seeded with exactly what B printed as its listeners.
    let seeds_a = match &lan.ip6 {
        Some(v6) => format!("[{}]:4040,{seed_a}", v6[0]),
        None => seed_a.clone(),
    };
    let reply = one_shot(&lan, 2, &["--seed", &seeds_a, "cal", "hosts-a", "time"]);
    let reply: Vec<f64> =
        serde_json::from_str(reply.trim()).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    assert!(reply.len() == 1 && reply[0] > 1e9, "{reply:?}");
    one_shot(
        &lan,
        2,
        &["--seed", &b.addr, "snd", "hosts-b#sink", "hello"],
    );
    b.wait_for(|l| l == r#"RCV sink ["hello"]"#, LONG);

    // `*` with an ephemeral port: one port on all of the host's addresses.
    let c = run(&lan, 2, "C", &["--nodeid", "hosts-c"], &["--bind", "*"]);
    let ports: Vec<&str> = c
        .addr
        .split(',')
        .map(|a| a.rsplit_once(':').map_or("", |(_, p)| p))
        .collect();
    assert!(ports[0] != "0" && !ports[0].is_empty(), "{}", c.addr);
    assert_eq!(c.addr, star(&lan, 2, ports[0]));
}
