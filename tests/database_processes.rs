//! The network's database between `aemp run` processes: two global nodes, a slave of each, one
//! slave registered with `--reg`; `aemp db get|keys|mon` see its echo port, and see it go when
//! the slave is SIGKILLed. And a node without seeds registers at once.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::procs::Proc;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `aemp run` as node `id` with these seeds and these options after `run`.
fn run(id: &str, seeds: &[&str], run: &[&str]) -> Proc {
    let mut cmd: Command = Proc::aemp(&[]);
    cmd.args(["--nodeid", id, "--timeout", "15"]);
    for s in seeds {
        cmd.args(["--seed", s]);
    }
    cmd.arg("run").args(run);
    Proc::start(id, cmd)
}

/// The port id of the `ECHO <port>` line.
fn echo(p: &mut Proc) -> String {
    let (_, line) = p.wait_for(|l| l.starts_with("ECHO "), LONG);
    line["ECHO ".len()..].to_owned()
}

/// `aemp --seed SEED db ARGS…`: its one line of output, as JSON.
fn db(seed: &str, args: &[&str]) -> Value {
    let out = Proc::aemp(&[])
        .args(["--seed", seed, "--timeout", "10", "db"])
        .args(args)
        .output()
        .expect("run aemp db");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aemp db {args:?} via {seed}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// `db(seed, args)` again until `want` holds of its answer (every 100 ms, for 30 s).
fn db_until(seed: &str, args: &[&str], want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let got = db(seed, args);
        if want(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "aemp db {args:?}: still {got}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A one-shot command still running, whose output lines are read as they come.
struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aemp");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next line, as JSON.
    fn next(&self) -> Value {
        let line = self.lines.recv_timeout(LONG).expect("a line within 30 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_port_registered_on_a_slave_of_one_global_is_seen_through_the_other_until_killed() {
    let (a1, a2) = (free_addr(), free_addr());
    let seeds = [a1.as_str(), a2.as_str()];
    // G1 registers too: a global node is its own master.
    let mut g1 = run("g1", &seeds, &["--bind", &a1, "--reg", "gsvc"]);
    let mut g2 = run("g2", &seeds, &["--bind", &a2]);
    let g1_echo = echo(&mut g1);
    g1.wait_for(|l| *l == format!("REG gsvc {g1_echo}"), LONG);
    g2.wait_for(|l| l == "UP g1 p2", LONG);

    let mut s1 = run("s1", &[&a1], &["--bind", "127.0.0.1:0", "--reg", "svc"]);
    let mut s2 = run("s2", &[&a2], &["--bind", "127.0.0.1:0"]);
    let port = echo(&mut s1);
    // REG: S1's master has the entry, so G1 answers with it at once.
    s1.wait_for(|l| *l == format!("REG svc {port}"), LONG);
    assert_eq!(db(&a1, &["get", "svc"]), json!({ &port: null }));
    s2.wait_for(|l| l == "UP g2 p2", LONG);
    // G2 has it once G1 told it.
    db_until(&a2, &["keys", "svc"], |keys| *keys == json!([&port]));
    assert_eq!(db(&a2, &["get", "svc"]), json!({ &port: null }));
    assert_eq!(db(&a2, &["values", "svc"]), json!([null]));
    assert_eq!(db(&a2, &["keys", "gsvc"]), json!([&g1_echo]));
    let nodes = db(&a2, &["keys", "'l"]);
    for id in ["g1", "g2", "s1", "s2"] {
        assert!(nodes.as_array().unwrap().contains(&json!(id)), "{nodes}");
    }

    // A monitor through G2: the family as it is, then S1's port deleted when S1 is killed.
    let mut cmd = Proc::aemp(&[]);
    cmd.args(["--seed", &a2, "db", "mon", "svc", "--count", "2"]);
    let mut mon = Running::start(cmd);
    let first = mon.next();
    assert_eq!(
        first,
        json!({"family": {&port: null}, "added": [&port], "changed": [], "deleted": []})
    );
    s1.kill9();
    let second = mon.next();
    assert_eq!(
        second,
        json!({"family": {}, "added": [], "changed": [], "deleted": [&port]})
    );
    let status = mon.child.wait().unwrap();
    assert!(
        status.success(),
        "db mon --count 2 exits 0 after two lines: {status}"
    );
    assert_eq!(db(&a2, &["get", "svc"]), json!({}));
    assert_eq!(db(&a1, &["keys", "svc"]), json!([]));
}

#[test]
fn a_node_without_seeds_registers_at_once_and_answers_once_seeded() {
    let mut solo = run("solo", &[], &["--bind", "127.0.0.1:0", "--reg", "svc"]);
    let port = echo(&mut solo);
    solo.wait_for(|l| *l == format!("REG svc {port}"), LONG);
    // The one-shot command seeds it, which makes it a global node holding its own entry.
    let addr = solo.addr.clone();
    assert_eq!(db(&addr, &["keys", "svc"]), json!([&port]));
    // A family nobody wrote: an empty first line, then --count ends it.
    let out = Proc::aemp(&[])
        .args(["--seed", &addr, "db", "mon", "nothing", "--count", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        line,
        json!({"family": {}, "added": [], "changed": [], "deleted": []})
    );
    // A name that is no family is refused.
    let out = Proc::aemp(&[])
        .args(["--seed", &addr, "db", "get", "no-such name"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a database family name"));
}
