//! Nodes in separate processes: the `aemp` CLI against `aemp run`, and a peer that is SIGKILLed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use aemp::node::{Node, NodeConfig};
use aemp::proto::value::Value;

const AEMP: &str = env!("CARGO_BIN_EXE_aemp");

/// An `aemp run` process and what it announced.
struct RunNode {
    child: Child,
    node: String,
    addr: String,
    echo: String,
}

impl RunNode {
    fn start(extra: &[&str]) -> RunNode {
        let mut child = Command::new(AEMP)
            // Never the profile file of the machine running the tests.
            .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
            .args(["--secret", "proc-secret"])
            .args(extra)
            .args(["run", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aemp run");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep draining after the announcement, so that the node never sees EPIPE.
                let _ = tx.send(line);
            }
        });
        let next = || {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("aemp run announces itself")
        };
        let first = next();
        let mut f = first.split(' ');
        assert_eq!(f.next(), Some("NODE"), "first line: {first}");
        let node = f.next().unwrap().to_owned();
        assert_eq!(f.next(), Some("LISTEN"));
        let addr = f.next().unwrap().to_owned();
        let echo = next().strip_prefix("ECHO ").expect("ECHO line").to_owned();
        RunNode {
            child,
            node,
            addr,
            echo,
        }
    }

    fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for RunNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(AEMP)
        // Never the profile file of the machine running the tests.
        .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run aemp")
}

#[test]
fn cli_snd_cal_and_bench_work_against_a_rust_node() {
    let run = RunNode::start(&[]);
    let seed = ["--secret", "proc-secret", "--seed", run.addr.as_str()];
    let ok = |extra: &[&str]| {
        let out = cli(&[&seed[..], extra].concat());
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["snd", &run.echo, "ignored-reply", "tag", "{\"a\":1}"]);
    let time = ok(&["cal", &run.node, "time"]);
    let v: Vec<f64> = serde_json::from_str(time.trim()).unwrap();
    assert!(v[0] > 1.6e9, "{time}");
    // The echo port answers `[reply, tag, data]` with `[tag, data]`; cal appends the reply port
    // last, so ask the node port to relay instead.
    let info = ok(&["cal", &run.node, "info"]);
    assert_eq!(
        serde_json::from_str::<Vec<String>>(info.trim()).unwrap(),
        vec![run.node.clone()]
    );
    for mode in ["rtt", "window", "oneway"] {
        let out = ok(&["bench", "--mode", mode, "-n", "500", "--size", "16"]);
        let last = out.lines().last().unwrap();
        assert!(
            last.starts_with(&format!("RESULT mode={mode} n=500 size=16 msgs_per_s=")),
            "{last}"
        );
        assert!(last.contains("rtt_median_us="), "{last}");
    }
}

#[test]
fn cli_errors_are_one_line_and_a_failing_exit() {
    let run = RunNode::start(&["--dialect", "p0"]);
    let (addr, echo, node) = (run.addr.as_str(), run.echo.as_str(), run.node.as_str());
    let cases: [(&[&str], &str); 3] = [
        (
            &["--secret", "wrong", "--seed", addr, "snd", echo, "x"],
            "shared secret mismatch",
        ),
        (
            &[
                "--secret",
                "proc-secret",
                "--dialect",
                "p2",
                "--seed",
                addr,
                "cal",
                node,
                "time",
            ],
            "version mismatch",
        ),
        (
            &[
                "--secret",
                "proc-secret",
                "--seed",
                "127.0.0.1:1",
                "snd",
                "x#y",
            ],
            "cannot connect to 127.0.0.1:1",
        ),
    ];
    for (args, cause) in cases {
        // Without RUST_LOG, as a user runs it: the error is the only thing on stderr.
        let out = Command::new(AEMP)
            // Never the profile file of the machine running the tests.
            .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
            .args(args)
            .args(["--timeout", "2"])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("aemp: ") && err.contains(cause), "{err}");
    }
}

#[test]
fn cli_mon_reports_a_peer_killed_with_sigkill() {
    let mut run = RunNode::start(&[]);
    let mon = Command::new(AEMP)
        // Never the profile file of the machine running the tests.
        .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
        .args([
            "--secret",
            "proc-secret",
            "--seed",
            &run.addr,
            "mon",
            &run.echo,
        ])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    run.kill9();
    let out = mon.wait_with_output().unwrap();
    assert!(out.status.success());
    let reason: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reason[0], "transport_error");
    assert_eq!(reason[1], run.node);
}

#[actix_rt::test]
async fn a_monitor_fires_with_transport_error_when_the_peer_process_is_killed() {
    let mut run = RunNode::start(&[]);
    let node = Node::start(NodeConfig::with_secret("proc-secret"))
        .await
        .unwrap();
    node.add_node_addresses(&run.node, vec![run.addr.clone()]);
    let (tx, mut fired) = tokio::sync::mpsc::unbounded_channel();
    node.mon(&run.echo, move |r| {
        let _ = tx.send(r);
    })
    .detach();
    // Round trip through the echo port first, so that the link and the monitor are in place.
    let (me, mut rx) = node.port_stream();
    node.snd(&run.echo, &(me.id(), "hi", 1)).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.args().unwrap(), vec![Value::from("hi"), Value::Int(1)]);
    let mut events = node.node_events();
    run.kill9();
    let reason = tokio::time::timeout(Duration::from_secs(10), fired.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason[0], Value::from("transport_error"));
    assert_eq!(reason[1], Value::from(run.node.as_str()));
    let down = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!down.up);
    assert_eq!(down.node, run.node);
}

/// Line 1 of `aemp run`'s answer to a P0 greeting.
fn greeting_of(run: &RunNode) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(&run.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"aemp;0;greeting-probe;hmac_md6_64_256;json\nbm9uY2U\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

#[test]
fn cleartext_is_listed_only_with_allow_cleartext() {
    let plain = RunNode::start(&[]);
    let line = greeting_of(&plain);
    assert!(line.starts_with("aemp;0;"), "{line}");
    assert!(!line.contains("cleartext"), "{line}");
    let permissive = RunNode::start(&["--allow-cleartext"]);
    let line = greeting_of(&permissive);
    assert!(line.contains(",cleartext;"), "{line}");
}

#[test]
fn completion_scripts_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(AEMP)
            // Never the profile file of the machine running the tests.
            .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["run", "cal", "nodes", "seed", "bind"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    let bad = Command::new(AEMP)
        // Never the profile file of the machine running the tests.
        .env("PERL_ANYEVENT_MP_RC", "/nonexistent/aemp-test-profile")
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
