//! `aemp run --metrics` answers `GET /metrics` with counters that move with traffic, and
//! `aemp trace` prints a small network's links. Real processes, real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::procs::{AEMP, Proc, rcv_number};

/// `GET /metrics` over a raw socket: the status line and the body.
fn scrape(addr: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("a whole answer");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample `name{labels}` in a scrape.
fn sample(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn run(name: &str, global: &[&str], args: &[&str]) -> Proc {
    let mut cmd = Proc::aemp(&[]);
    cmd.args(global).arg("run").args(args);
    Proc::start(name, cmd)
}

#[test]
fn the_metrics_endpoint_counts_what_a_link_moves() {
    let mut a = run(
        "A",
        &["--nodeid", "mx-a"],
        &[
            "--bind",
            "127.0.0.1:0",
            "--sink",
            "in",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let (_, line) = a.wait_for(|l| l.starts_with("METRICS "), Duration::from_secs(10));
    let endpoint = line["METRICS ".len()..].to_owned();
    let mut b = run(
        "B",
        &["--nodeid", "mx-b", "--seed", &a.addr.clone()],
        &["--bind", "127.0.0.1:0", "--stdin"],
    );
    b.wait_for(|l| l == "UP mx-a p2", Duration::from_secs(30));
    a.wait_for(|l| l == "UP mx-b p2", Duration::from_secs(30));

    let received = r#"aemp_link_messages_received_total{peer="mx-b",dialect="p2"}"#;
    let bytes = r#"aemp_link_bytes_received_total{peer="mx-b",dialect="p2"}"#;
    let (status, before) = scrape(&endpoint);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (n0, b0) = (sample(&before, received), sample(&before, bytes));
    let (n0, b0) = (
        n0.unwrap_or_else(|| panic!("no {received} in\n{before}")),
        b0.unwrap_or_else(|| panic!("no {bytes} in\n{before}")),
    );
    for i in 1..=200 {
        b.command(&format!("snd mx-a#in {i}"));
    }
    a.wait_for(|l| rcv_number(l) == Some(200), Duration::from_secs(30));
    let (_, after) = scrape(&endpoint);
    let n1 = sample(&after, received).unwrap();
    let b1 = sample(&after, bytes).unwrap();
    assert!(n1 >= n0 + 200, "{n0} → {n1} messages:\n{after}");
    // `["in", i]` takes at least 5 bytes in any framing.
    assert!(b1 >= b0 + 200 * 5, "{b0} → {b1} bytes:\n{after}");
    assert_eq!(sample(&after, "aemp_links_up"), Some(1), "{after}");
    assert!(after.ends_with("# EOF\n"), "{after}");

    // Anything else is not found.
    let mut s = TcpStream::connect(&endpoint).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

#[test]
fn trace_prints_the_links_of_a_node_and_one_level_on() {
    let a = run("A", &["--nodeid", "tr-a"], &["--bind", "127.0.0.1:0"]);
    let seed = a.addr.clone();
    let mut b = run(
        "B",
        &["--nodeid", "tr-b", "--seed", &seed],
        &["--bind", "127.0.0.1:0"],
    );
    let mut c = run(
        "C",
        &["--nodeid", "tr-c", "--seed", &seed],
        &["--bind", "127.0.0.1:0"],
    );
    b.wait_for(|l| l == "UP tr-a p2", Duration::from_secs(30));
    c.wait_for(|l| l == "UP tr-a p2", Duration::from_secs(30));
    let trace = |args: &[&str]| {
        let out = Command::new(AEMP)
            .args(["--secret", "fault-secret", "--seed", &seed, "trace"])
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let started = Instant::now();
    assert_eq!(trace(&["tr-a"]), ["tr-a -> tr-b", "tr-a -> tr-c"]);
    assert_eq!(
        trace(&["tr-a", "--depth", "1"]),
        [
            "tr-a -> tr-b",
            "tr-a -> tr-c",
            "tr-b -> tr-a",
            "tr-c -> tr-a"
        ]
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // A one-shot command leaving is no failure on the node it used: "peer left".
    let mut a = a;
    let (_, down) = a.wait_for(|l| l.starts_with("DOWN anon/"), Duration::from_secs(10));
    assert!(down.ends_with(r#","peer left"]"#), "{down}");
}
