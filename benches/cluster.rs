//! Cluster formation: how long a network of N nodes takes until every node has reached every
//! other by id, how long a node added to a formed network takes until every node has reached
//! it, and what a node of such a network costs in memory.
//!
//! ```sh
//! cargo bench --bench cluster                          # N = 10, 50, 200; median of 3 runs each
//! cargo bench --bench cluster -- --sizes 10,50 --runs 1
//! cargo bench --bench cluster -- --procs 8             # spread the nodes over 8 processes
//! cargo bench --bench cluster -- --connect-interval 0.2
//! cargo bench --bench cluster -- --sizes 200 --runs 1 --idle 40   # then idle 40 s: links lost?
//! ```
//!
//! Not a test: nothing asserts on timings. A run in which some pair never answered is printed
//! with its failures and the program exits non-zero. `RUST_LOG=aemp=info` shows the nodes' logs.
//!
//! # The network
//!
//! Three global nodes and N−3 slaves, all P2 with one shared secret (hmac auth, no TLS), on
//! loopback, every other setting the default. Each global listens on a port chosen in advance
//! and has all three global addresses as seeds (its own among them makes it a global node);
//! each slave listens on an ephemeral port and has the three global addresses as seeds. A slave
//! knows no other node's address: it resolves every other id through its master (`g_find`) and
//! connects on demand.
//!
//! The nodes run in `--procs` child processes (default 6, more if the open-file limit asks for
//! it), each a single-threaded actix system hosting its share of nodes (`workers: 1`, so a node
//! adds no thread); the globals go to different processes, the slaves are dealt round-robin. A
//! full mesh of N nodes holds N(N−1) link ends, each a socket: for N = 200 that is 39,800 file
//! descriptors, more than one process may open here (20,000), so one process could not hold it;
//! spread over P processes each holds about N(N−1)/P once formed, and up to about twice that
//! while it forms (crossing dials, handshakes that lose a tie-break). The parent only
//! coordinates (commands on the children's stdin, answers on their stdout); children exit when
//! their stdin closes.
//!
//! # What is measured
//!
//! Each run builds two networks. In both, the globals are started one after another, then all
//! slaves at once, and the clock starts when the last `Node::start` has returned. "Reaching"
//! means: every node `cal`s `time` on the node port of every other node id, all N(N−1) calls at
//! once (a call that fails is made again, until a deadline); done when every call has been
//! answered. That forms the full mesh on demand: N(N−1)/2 links, of which only the seed links
//! (each slave's to the three globals, the globals' among themselves) were there before.
//!
//! * **at once**: the nodes start reaching at once. A `g_find` that reaches a global before the
//!   target has registered there is answered "unknown", and the node asks again after 100 ms,
//!   doubling up to `connect_interval`: this is what a program that sends to every node right
//!   after start sees. `slow` counts the pairs answered after 1 s or more.
//! * **directory first**: the nodes wait until every global node knows all N nodes and every
//!   node is bound to a master (`directory`), then reach (`mesh`); `total` is the sum, from
//!   the same start. `CPU` is the CPU time all processes spent on the mesh phase.
//! * **dials/link** (both networks): TCP connections the nodes dialled while reaching, per link
//!   that formed. Two nodes that ask for each other both dial, and the tie-break keeps one
//!   connection, so 2 is what a full mesh asked for all at once costs; more means redials.
//! * **new node** (on the second network, formed): one more slave is started; every existing
//!   node `cal`s `time` on its id as soon as its `Node::start` has returned (`at once`), and for
//!   another one only once it is bound to its master (`bound`, how long that took it, is part
//!   of that time); the clock stops when all N have been answered.
//! * **RSS/node**: the sum of the children's VmRSS after the second mesh is formed minus the sum
//!   before any node was started, divided by N (`formed`); the same once the directory was
//!   complete, before the mesh (`started`: a node with its seed links, the globals' directory,
//!   and what a process allocates on first use, spread over few nodes when N is small); and
//!   the growth from then to the formed mesh divided by the link ends it added (`KiB/link
//!   end`).
//! * **fds/proc**: the most open file descriptors in one child while the second mesh formed
//!   (sampled every 0.5 s, so a lower bound of the peak) and 2 s after it had formed.
//! * With `--idle SECS`, each second network is then left idle that long, and the links still
//!   up are counted (printed per run, not in the table).

mod support;
use support::Sample;

use std::cell::Cell;
use std::io::{BufRead, Write as _};
use std::process::{Child, ChildStdin, ExitCode};
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use aemp::node::{DialectMode, Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use tokio::sync::mpsc;

const SECRET: &[u8] = b"cluster bench secret";
/// How long one phase may take before the calls still unanswered count as failures.
const PHASE_LIMIT: Duration = Duration::from_secs(180);
/// How long a child may take to answer a command that is not a phase.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// Set by the parent for its children: the nodes' `connect_interval` in seconds.
const CONNECT_INTERVAL_ENV: &str = "AEMP_CLUSTER_BENCH_CONNECT_INTERVAL";
/// A pair answered after this long counts as slow (it waited for a redial).
const SLOW: Duration = Duration::from_secs(1);
/// File descriptors a child needs besides its link ends (listeners, epoll, pipes…), the share
/// of the open-file limit link ends may use, and the peak of open sockets while a mesh forms
/// as a multiple of its link ends (crossing dials, handshakes that lose a tie-break).
const FD_RESERVE: u64 = 1_000;
const FD_SHARE: f64 = 0.75;
const FD_PEAK: f64 = 2.0;
/// How often a child counts its open files while a mesh forms: reading `/proc/self/fd` with
/// 10,000 entries costs milliseconds, so rarely (the peak shown is a lower bound).
const FD_SAMPLE: Duration = Duration::from_millis(500);
/// How long after a mesh has formed its memory and open files are read.
const SETTLE: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    // cargo passes `--bench` to harness = false benches: unknown arguments are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--role-host") {
        return host_main();
    }
    parent_main(&args)
}

/// VmRSS of this process in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system, all threads) of this process in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // Linux reports these in USER_HZ, 100 per second.
    ticks(11)
        .zip(ticks(12))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

// ------------------------------------------------------------------------------------------
// Child: hosts nodes, runs commands

fn host_main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        // The parent is done with us (or gone): exit at once, links and all.
        std::process::exit(0);
    });
    match actix::System::new().block_on(host(rx)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("cluster bench host: {e}");
            std::process::exit(1)
        }
    }
}

/// A node this process hosts.
struct Hosted {
    node: Node,
    global: bool,
}

/// Commands, one a line:
/// * `START <global|slave|watched> <bind> <seed,seed,…> <id…>`: starts nodes; answers
///   `STARTED <n>`. For a watched node, the time until it is bound to a master is kept.
/// * `DIRECTORY <n>`: once every hosted global node is global and knows `n` nodes, and every
///   hosted node has a master, answers `DIRECTORY ok=1 secs=…` (`ok=0` after `PHASE_LIMIT`).
/// * `REACH <id…>`: every hosted node (but the one named) `cal`s `time` on every id; answers
///   `REACHED pairs=… ok=… failed=… retries=… cpu=… fds_peak=… dials=… secs=…` (dials: TCP
///   connections the hosted nodes dialled meanwhile), then `TIMES µs,µs,…` (when each pair
///   answered).
/// * `RSS`: answers `RSS kib=… fds=…`.
/// * `UP`: answers `UP ends=…`: the up links of all hosted nodes (each link counts at both
///   ends).
/// * `MASTER`: once the last watched node is bound to a master (or after `COMMAND_LIMIT`),
///   answers `MASTER secs=…` (or `MASTER none`): how long after its start it was bound.
async fn host(mut commands: mpsc::UnboundedReceiver<String>) -> Result<(), String> {
    let connect_interval = std::env::var(CONNECT_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let mut nodes: Vec<Hosted> = Vec::new();
    let master_after: Rc<Cell<Option<f64>>> = Rc::default();
    say(&format!("READY kib={}", rss_kib()));
    while let Some(line) = commands.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["START", role, bind, seeds, ids @ ..] => {
                for id in ids {
                    let mut config = NodeConfig {
                        node_id: (*id).to_owned(),
                        binds: vec![(*bind).to_owned()],
                        seeds: seeds.split(',').map(str::to_owned).collect(),
                        dialect: DialectMode::Fixed(Dialect::P2),
                        workers: 1,
                        ..NodeConfig::with_secret(SECRET)
                    };
                    if let Some(every) = connect_interval {
                        config.connect_interval = every;
                    }
                    let started = Instant::now();
                    let node = Node::start(config)
                        .await
                        .map_err(|e| format!("start {id}: {e}"))?;
                    if *role == "watched" {
                        master_after.set(None);
                        actix::spawn(watch_master(node.clone(), started, master_after.clone()));
                    }
                    let global = *role == "global";
                    nodes.push(Hosted { node, global });
                }
                say(&format!("STARTED {}", ids.len()));
            }
            ["DIRECTORY", n] => {
                let n: usize = n.parse().map_err(|_| format!("bad count in {line:?}"))?;
                let t = Instant::now();
                let complete = || {
                    nodes.iter().all(|h| {
                        h.node.master().is_some()
                            && (!h.global
                                || (h.node.is_global() && h.node.known_nodes().len() >= n))
                    })
                };
                while !complete() && t.elapsed() < PHASE_LIMIT {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let ok = u8::from(complete());
                say(&format!(
                    "DIRECTORY ok={ok} secs={}",
                    t.elapsed().as_secs_f64()
                ));
            }
            ["REACH", targets @ ..] => {
                let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
                say(&reach_all(&nodes, &targets).await);
            }
            ["RSS"] => say(&format!("RSS kib={} fds={}", rss_kib(), open_fds())),
            ["UP"] => {
                let ends: usize = nodes.iter().map(|h| h.node.up_nodes().len()).sum();
                say(&format!("UP ends={ends}"));
            }
            ["MASTER"] => {
                let limit = Instant::now() + COMMAND_LIMIT;
                while master_after.get().is_none() && Instant::now() < limit {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                match master_after.get() {
                    Some(secs) => say(&format!("MASTER secs={secs}")),
                    None => say("MASTER none"),
                }
            }
            _ => return Err(format!("unknown command {line:?}")),
        }
    }
    Ok(())
}

/// Polls until `node` is bound to a master.
async fn watch_master(node: Node, started: Instant, out: Rc<Cell<Option<f64>>>) {
    while node.master().is_none() {
        if started.elapsed() > PHASE_LIMIT {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    out.set(Some(started.elapsed().as_secs_f64()));
}

/// Every node `cal`s `time` on every target but itself, all at once.
async fn reach_all(nodes: &[Hosted], targets: &[String]) -> String {
    let t = Instant::now();
    let cpu = cpu_secs();
    let deadline = t + PHASE_LIMIT;
    let fds_peak = Rc::new(Cell::new(open_fds()));
    let dialled = |nodes: &[Hosted]| -> u64 {
        nodes
            .iter()
            .map(|h| h.node.connection_stats().dialled)
            .sum()
    };
    let dialled_before = dialled(nodes);
    let sampler = actix::spawn(sample_fds(fds_peak.clone()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut pairs = 0usize;
    for Hosted { node, .. } in nodes {
        for target in targets.iter().filter(|t| **t != node.id()) {
            pairs += 1;
            actix::spawn(reach(node.clone(), target.clone(), deadline, tx.clone()));
        }
    }
    drop(tx);
    let (mut failed, mut retries) = (0usize, 0usize);
    let mut took_us = Vec::with_capacity(pairs);
    while let Some((answered, tries)) = rx.recv().await {
        if answered {
            took_us.push(t.elapsed().as_micros().to_string());
        } else {
            failed += 1;
        }
        retries += tries - 1;
    }
    sampler.abort();
    format!(
        "REACHED pairs={pairs} ok={} failed={failed} retries={retries} cpu={} fds_peak={} \
         dials={} secs={}\nTIMES {}",
        took_us.len(),
        cpu_secs() - cpu,
        fds_peak.get().max(open_fds()),
        dialled(nodes) - dialled_before,
        t.elapsed().as_secs_f64(),
        took_us.join(",")
    )
}

/// Keeps the most open file descriptors seen, every `FD_SAMPLE`, until aborted.
async fn sample_fds(peak: Rc<Cell<usize>>) {
    loop {
        tokio::time::sleep(FD_SAMPLE).await;
        peak.set(peak.get().max(open_fds()));
    }
}

/// Asks `target` for its time until it answers or `deadline` passes; sends (answered, tries).
async fn reach(
    node: Node,
    target: String,
    deadline: Instant,
    done: mpsc::UnboundedSender<(bool, usize)>,
) {
    let mut tries = 0;
    let answered = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        tries += 1;
        let answer = node.cal(&target, vec!["time".into()], left).await;
        if answer.is_ok_and(|a| a.first().and_then(|t| t.as_f64()).is_some()) {
            break true;
        }
        // A call fails at once when the link to the target fails (or the target is not found
        // within `connect_timeout`): ask again shortly.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = done.send((answered, tries.max(1)));
}

// ------------------------------------------------------------------------------------------
// Parent: builds the networks, collects the numbers

/// A child process; dropping it closes its stdin (it exits), else kills it.
struct Host {
    index: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std_mpsc::Receiver<String>,
}

impl Host {
    fn spawn(index: usize) -> Result<Host, String> {
        let (child, stdin, lines) =
            support::spawn_self(&format!("host {index}"), &["--role-host"])?;
        Ok(Host {
            index,
            child,
            stdin,
            lines,
        })
    }

    fn send(&mut self, command: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("host {}: cannot send a command: {e}", self.index))
    }

    /// The next line, which must start with `prefix`; returns its `k=v` pairs.
    fn answer(&mut self, prefix: &str, within: Duration) -> Result<Sample, String> {
        self.line(prefix, within)
            .map(|rest| support::parse_pairs(&rest))
    }

    /// The rest of the next line, which must start with `prefix`.
    fn line(&mut self, prefix: &str, within: Duration) -> Result<String, String> {
        match self.lines.recv_timeout(within) {
            Ok(line) => match line.strip_prefix(prefix) {
                Some(rest) => Ok(rest.to_owned()),
                None => Err(format!(
                    "host {}: expected {prefix:?}, got {line:?}",
                    self.index
                )),
            },
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "host {}: no {prefix:?} within {within:?}",
                self.index
            )),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(format!(
                "host {} ended before {prefix:?} (see its stderr above)",
                self.index
            )),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        support::stop_child(&mut self.child, self.stdin.take(), Duration::from_secs(5));
    }
}

fn get(s: &Sample, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

/// Sends `command` to every host and collects their answers (they work in parallel).
fn all(
    hosts: &mut [Host],
    command: &str,
    prefix: &str,
    within: Duration,
) -> Result<Vec<Sample>, String> {
    for h in hosts.iter_mut() {
        h.send(command)?;
    }
    hosts.iter_mut().map(|h| h.answer(prefix, within)).collect()
}

/// Ports nobody listens on (the globals' bind addresses, chosen before they start).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    // Held together, so that the ports differ.
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot pick a port: {e}"))?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// A started network: its processes, node ids and seed list, and the processes' RSS before
/// any node started.
struct Network {
    hosts: Vec<Host>,
    ids: Vec<String>,
    seeds: String,
    rss_before_kib: f64,
}

impl Network {
    /// Starts the globals one after another (each then finds the earlier ones listening), each
    /// in another process as far as there are processes, then all slaves at once, dealt
    /// round-robin; returns once every `Node::start` has returned.
    fn start(n: usize, procs: usize) -> Result<Network, String> {
        let mut hosts: Vec<Host> = (0..procs).map(Host::spawn).collect::<Result<_, _>>()?;
        let mut rss_before_kib = 0.0;
        for h in hosts.iter_mut() {
            rss_before_kib += get(&h.answer("READY ", COMMAND_LIMIT)?, "kib");
        }
        let addrs: Vec<String> = free_ports(3)?
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let seeds = addrs.join(",");
        let mut ids: Vec<String> = Vec::with_capacity(n);
        for (i, addr) in addrs.iter().enumerate() {
            let id = format!("g{i}");
            let h = &mut hosts[i % procs];
            h.send(&format!("START global {addr} {seeds} {id}"))?;
            h.answer("STARTED ", COMMAND_LIMIT)?;
            ids.push(id);
        }
        let mut per_host: Vec<Vec<String>> = vec![Vec::new(); procs];
        for i in 3..n {
            let id = format!("n{i}");
            per_host[i % procs].push(id.clone());
            ids.push(id);
        }
        for (h, slaves) in hosts.iter_mut().zip(&per_host) {
            if !slaves.is_empty() {
                h.send(&format!(
                    "START slave 127.0.0.1:0 {seeds} {}",
                    slaves.join(" ")
                ))?;
            }
        }
        for (h, slaves) in hosts.iter_mut().zip(&per_host) {
            if !slaves.is_empty() {
                h.answer("STARTED ", COMMAND_LIMIT)?;
            }
        }
        Ok(Network {
            hosts,
            ids,
            seeds,
            rss_before_kib,
        })
    }

    /// Starts one more slave on host `h`, watched for its master; returns when it has started.
    fn start_new(&mut self, h: usize, id: &str) -> Result<Instant, String> {
        let host = &mut self.hosts[h];
        host.send(&format!("START watched 127.0.0.1:0 {} {id}", self.seeds))?;
        host.answer("STARTED ", COMMAND_LIMIT)?;
        Ok(Instant::now())
    }
}

/// One reaching phase: every host's `REACHED` answer, when each pair answered (seconds after
/// the host got the command, sorted), and how long from `t0` until the last host answered.
struct Phase {
    hosts: Vec<Sample>,
    times: Vec<f64>,
    secs: f64,
}

impl Phase {
    fn run(hosts: &mut [Host], targets: &str, t0: Instant) -> Result<Phase, String> {
        let command = format!("REACH {targets}");
        for h in hosts.iter_mut() {
            h.send(&command)?;
        }
        let within = PHASE_LIMIT + COMMAND_LIMIT;
        let mut answers = Vec::with_capacity(hosts.len());
        let mut times = Vec::new();
        for h in hosts.iter_mut() {
            answers.push(h.answer("REACHED ", within)?);
            let line = h.line("TIMES", within)?;
            times.extend(
                line.trim()
                    .split(',')
                    .filter_map(|us| us.parse::<f64>().ok())
                    .map(|us| us / 1e6),
            );
        }
        let secs = t0.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        Ok(Phase {
            hosts: answers,
            times,
            secs,
        })
    }

    fn sum(&self, key: &str) -> f64 {
        self.hosts.iter().map(|s| get(s, key)).sum()
    }

    /// When the fraction `q` of the pairs had answered.
    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.times.len().max(1) - 1) as f64 * q).round() as usize;
        self.times.get(i).copied().unwrap_or(0.0)
    }

    fn count(&self, key: &str) -> usize {
        self.sum(key) as usize
    }

    /// Pairs answered only after `SLOW`.
    fn slow(&self) -> usize {
        let slow = SLOW.as_secs_f64();
        self.times.iter().filter(|t| **t >= slow).count()
    }

    fn expect_pairs(&self, want: usize, what: &str) -> Result<(), String> {
        match self.count("pairs") {
            n if n == want => Ok(()),
            n => Err(format!("{what}: {n} calls made, expected {want}")),
        }
    }
}

/// What one run of one size measured.
struct Run {
    at_once: f64,
    at_once_slow: usize,
    /// TCP connections dialled per link formed (seed links were there before).
    at_once_dials: f64,
    mesh_dials: f64,
    directory: f64,
    mesh: f64,
    mesh_cpu: f64,
    /// When half and nine tenths of the mesh's pairs had answered.
    mesh_p50: f64,
    mesh_p90: f64,
    new_at_once: f64,
    new_bound: f64,
    new_master: Option<f64>,
    rss_per_node_kib: f64,
    rss_started_kib: f64,
    rss_per_link_end_kib: f64,
    max_fds: f64,
    peak_fds: f64,
    /// With `--idle`: links up before and after the idle time.
    idle_links: Option<(f64, f64)>,
    failed: usize,
    retries: usize,
}

fn one_run(n: usize, procs: usize, idle: Option<Duration>) -> Result<Run, String> {
    let pairs = n * (n - 1);
    // The links reaching forms: all but the seed links (each slave's to the three globals, and
    // the globals' among themselves).
    let new_links = pairs / 2 - (3 * (n - 3) + 3);
    // First network: every node reaches every other at once.
    let mut net = Network::start(n, procs)?;
    let at_once = Phase::run(&mut net.hosts, &net.ids.join(" "), Instant::now())?;
    at_once.expect_pairs(pairs, "at once")?;
    drop(net);

    // Second network: the directory first, then the mesh.
    let mut net = Network::start(n, procs)?;
    let t0 = Instant::now();
    let dir = all(
        &mut net.hosts,
        &format!("DIRECTORY {n}"),
        "DIRECTORY ",
        PHASE_LIMIT + COMMAND_LIMIT,
    )?;
    if dir.iter().any(|d| get(d, "ok") != 1.0) {
        return Err(format!(
            "the directory was not complete after {PHASE_LIMIT:?}"
        ));
    }
    let directory = t0.elapsed().as_secs_f64();
    let started: f64 = all(&mut net.hosts, "RSS", "RSS ", COMMAND_LIMIT)?
        .iter()
        .map(|s| get(s, "kib"))
        .sum();
    let mesh = Phase::run(&mut net.hosts, &net.ids.join(" "), Instant::now())?;
    mesh.expect_pairs(pairs, "mesh")?;
    // Memory and open files, once the sockets of lost tie-breaks have closed.
    std::thread::sleep(SETTLE);
    let rss = all(&mut net.hosts, "RSS", "RSS ", COMMAND_LIMIT)?;
    let after: f64 = rss.iter().map(|s| get(s, "kib")).sum();
    let max_fds = rss.iter().map(|s| get(s, "fds")).fold(0.0, f64::max);

    // One more slave; every existing node asks for it as soon as it has started.
    let h = n % procs;
    let t1 = net.start_new(h, &format!("n{n}"))?;
    let new_at_once = Phase::run(&mut net.hosts, &format!("n{n}"), t1)?;
    new_at_once.expect_pairs(n, "new node")?;
    net.hosts[h].send("MASTER")?;
    let new_master = net.hosts[h]
        .answer("MASTER", COMMAND_LIMIT)?
        .get("secs")
        .copied();
    // And another; the existing nodes ask once it is bound to its master.
    let h = (n + 1) % procs;
    let t2 = net.start_new(h, &format!("n{}", n + 1))?;
    net.hosts[h].send("MASTER")?;
    net.hosts[h].answer("MASTER", COMMAND_LIMIT)?;
    let new_bound = Phase::run(&mut net.hosts, &format!("n{}", n + 1), t2)?;
    new_bound.expect_pairs(n + 1, "new node once bound")?;

    // Optionally: leave the mesh (N + 2 nodes now) idle, and count the links still up.
    let idle_links = match idle {
        Some(wait) => {
            let ends = |hosts: &mut [Host]| -> Result<f64, String> {
                Ok(all(hosts, "UP", "UP ", COMMAND_LIMIT)?
                    .iter()
                    .map(|s| get(s, "ends"))
                    .sum())
            };
            let before = ends(&mut net.hosts)? / 2.0;
            std::thread::sleep(wait);
            Some((before, ends(&mut net.hosts)? / 2.0))
        }
        None => None,
    };
    let phases = [&at_once, &mesh, &new_at_once, &new_bound];
    Ok(Run {
        at_once: at_once.secs,
        at_once_slow: at_once.slow(),
        at_once_dials: at_once.sum("dials") / new_links as f64,
        mesh_dials: mesh.sum("dials") / new_links as f64,
        directory,
        mesh: mesh.secs,
        mesh_cpu: mesh.sum("cpu"),
        mesh_p50: mesh.quantile(0.5),
        mesh_p90: mesh.quantile(0.9),
        new_at_once: new_at_once.secs,
        new_bound: new_bound.secs,
        new_master,
        rss_per_node_kib: (after - net.rss_before_kib) / n as f64,
        rss_started_kib: (started - net.rss_before_kib) / n as f64,
        rss_per_link_end_kib: (after - started) / (2 * new_links) as f64,
        max_fds,
        peak_fds: mesh
            .hosts
            .iter()
            .map(|s| get(s, "fds_peak"))
            .fold(0.0, f64::max),
        idle_links,
        failed: phases.iter().map(|p| p.count("failed")).sum(),
        retries: phases.iter().map(|p| p.count("retries")).sum(),
    })
}

struct Options {
    sizes: Vec<usize>,
    runs: usize,
    procs: usize,
    /// The nodes' `connect_interval`, if not the default.
    connect_interval: Option<f64>,
    /// Leave each formed network idle this long and count the links still up.
    idle: Option<Duration>,
}

fn options(args: &[String]) -> Result<Options, String> {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let sizes = match value("--sizes") {
        Some(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad size {n:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![10, 50, 200],
    };
    if let Some(n) = sizes.iter().find(|n| **n < 4) {
        return Err(format!(
            "size {n}: a network needs the 3 globals and a slave"
        ));
    }
    let number = |name: &str, default: usize| match value(name) {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|v| *v > 0)
            .ok_or(format!("bad {name} {v:?}")),
        None => Ok(default),
    };
    let connect_interval = match value("--connect-interval") {
        Some(v) => Some(
            v.parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0)
                .ok_or(format!("bad --connect-interval {v:?}"))?,
        ),
        None => None,
    };
    let idle = match value("--idle") {
        Some(v) => Some(
            v.parse::<f64>()
                .ok()
                .filter(|v| *v >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or(format!("bad --idle {v:?}"))?,
        ),
        None => None,
    };
    Ok(Options {
        idle,
        sizes,
        runs: number("--runs", 3)?,
        procs: number("--procs", 6)?,
        connect_interval,
    })
}

/// Processes for `n` nodes: at least `wanted`, more if the sockets of a forming full mesh would
/// not fit one process's open-file limit.
fn procs_for(n: usize, wanted: usize, nofile: u64) -> usize {
    let budget = (nofile.saturating_sub(FD_RESERVE) as f64 * FD_SHARE).max(1.0);
    let ends = FD_PEAK * (n * (n - 1)) as f64;
    let mut p = wanted.min(n);
    while (ends / p as f64) > budget && p < n {
        p += 1;
    }
    p
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => None,
        l if l % 2 == 1 => Some(v[mid]),
        _ => Some((v[mid - 1] + v[mid]) / 2.0),
    }
}

fn parent_main(args: &[String]) -> ExitCode {
    let opt = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cluster bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(every) = opt.connect_interval {
        // SAFETY: no other thread runs yet that could read the environment.
        unsafe { std::env::set_var(CONNECT_INTERVAL_ENV, every.to_string()) };
    }
    // Children inherit the limit: raise the soft limit to the hard one.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let mut rows = Vec::new();
    let mut failed = false;
    for &n in &opt.sizes {
        let procs = procs_for(n, opt.procs, nofile);
        let mut runs = Vec::new();
        for run in 1..=opt.runs {
            let t = Instant::now();
            match one_run(n, procs, opt.idle) {
                Ok(r) => {
                    eprintln!(
                        "N={n} run {run}/{}: at once {:.3} s ({} slow pairs, {:.2} dials/link); \
                         directory {:.3} s + mesh {:.3} s (pairs p50 {:.3} s, p90 {:.3} s; {:.2} \
                         CPU s, {:.2} dials/link); new node {:.3} s, once bound {:.3} s \
                         (bound after {}); {:.0} KiB/node ({:.0} started, {:.1} per link end), {} fds ({} at the peak); {} failed, {} retried \
                         ({:.1} s)",
                        opt.runs,
                        r.at_once,
                        r.at_once_slow,
                        r.at_once_dials,
                        r.directory,
                        r.mesh,
                        r.mesh_p50,
                        r.mesh_p90,
                        r.mesh_cpu,
                        r.mesh_dials,
                        r.new_at_once,
                        r.new_bound,
                        r.new_master.map_or("?".into(), |m| format!("{m:.3} s")),
                        r.rss_per_node_kib,
                        r.rss_started_kib,
                        r.rss_per_link_end_kib,
                        r.max_fds,
                        r.peak_fds,
                        r.failed,
                        r.retries,
                        t.elapsed().as_secs_f64()
                    );
                    if let (Some((before, after)), Some(idle)) = (r.idle_links, opt.idle) {
                        eprintln!(
                            "N={n} run {run}: {before:.1} links up, {after:.1} after {} s idle \
                             ({:.1}% lost)",
                            idle.as_secs_f64(),
                            100.0 * (before - after) / before.max(1.0)
                        );
                    }
                    failed |= r.failed > 0;
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("N={n} run {run}: FAILED: {e}");
                    failed = true;
                }
            }
        }
        rows.push((n, procs, runs));
    }
    print_table(&opt, nofile, &rows);
    if failed {
        eprintln!("some runs failed or left pairs unanswered; see above");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The medians the growth lines compare.
struct Medians {
    n: usize,
    total: f64,
    mesh: f64,
    mesh_cpu: f64,
    rss: f64,
}

fn print_table(opt: &Options, nofile: u64, rows: &[(usize, usize, Vec<Run>)]) {
    println!();
    println!(
        "cluster formation over loopback: 3 globals + N-3 slaves (P2, hmac auth, no TLS) in \
         one-thread processes; connect_interval {}; open-file limit {nofile}; median of {} \
         run(s)",
        opt.connect_interval
            .map_or("2 s (default)".into(), |c| format!("{c} s")),
        opt.runs
    );
    // Each column: three header lines and its width.
    let columns = [
        ("", "N", "", 4),
        ("", "procs", "", 5),
        ("", "pairs", "", 6),
        ("at once", "all", "s", 7),
        ("", "slow", "", 5),
        ("", "dials/", "link", 6),
        ("directory", "directory", "s", 9),
        ("first", "mesh", "s", 6),
        ("", "total", "s", 6),
        ("", "CPU", "s", 5),
        ("", "dials/", "link", 6),
        ("new node", "at once", "s", 8),
        ("", "bound", "s", 6),
        ("", "(bound", "after s)", 8),
        ("RSS/node KiB", "started /", "formed", 16),
        ("", "KiB/", "link end", 8),
        ("fds/proc", "peak /", "after", 13),
        ("", "failed", "", 6),
    ];
    let line = |cells: &[&str]| {
        let cells: Vec<String> = cells
            .iter()
            .zip(columns.map(|c| c.3))
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    };
    line(&columns.map(|c| c.0));
    line(&columns.map(|c| c.1));
    line(&columns.map(|c| c.2));
    let mut medians = Vec::new();
    for (n, procs, runs) in rows {
        let med = |f: &dyn Fn(&Run) -> Option<f64>| median(runs.iter().filter_map(f).collect());
        let show =
            |v: Option<f64>, digits: usize| v.map_or("err".into(), |v| format!("{v:.digits$}"));
        let at_once = med(&|r| Some(r.at_once));
        let directory = med(&|r| Some(r.directory));
        let mesh = med(&|r| Some(r.mesh));
        let total = med(&|r| Some(r.directory + r.mesh));
        let mesh_cpu = med(&|r| Some(r.mesh_cpu));
        let rss = med(&|r| Some(r.rss_per_node_kib));
        let cells = [
            n.to_string(),
            procs.to_string(),
            (n * (n - 1)).to_string(),
            show(at_once, 3),
            show(med(&|r| Some(r.at_once_slow as f64)), 0),
            show(med(&|r| Some(r.at_once_dials)), 2),
            show(directory, 3),
            show(mesh, 3),
            show(total, 3),
            show(mesh_cpu, 2),
            show(med(&|r| Some(r.mesh_dials)), 2),
            show(med(&|r| Some(r.new_at_once)), 3),
            show(med(&|r| Some(r.new_bound)), 3),
            show(med(&|r| r.new_master), 3),
            format!(
                "{} / {}",
                show(med(&|r| Some(r.rss_started_kib)), 0),
                show(rss, 0)
            ),
            show(med(&|r| Some(r.rss_per_link_end_kib)), 1),
            format!(
                "{} / {}",
                show(med(&|r| Some(r.peak_fds)), 0),
                show(med(&|r| Some(r.max_fds)), 0)
            ),
            runs.iter().map(|r| r.failed).sum::<usize>().to_string(),
        ];
        line(&cells.each_ref().map(String::as_str));
        if let (Some(total), Some(mesh), Some(mesh_cpu), Some(rss)) = (total, mesh, mesh_cpu, rss) {
            medians.push(Medians {
                n: *n,
                total,
                mesh,
                mesh_cpu,
                rss,
            });
        }
    }
    println!(
        "at once: all started -> every pair answered, all asked at once; slow: pairs answered \
         after >= {} s (a g_find that came before its answer was known is asked again after \
         100 ms, doubling up to connect_interval)",
        SLOW.as_secs()
    );
    println!(
        "directory first: all started -> every global knows all N and every node has a master \
         (directory), then every pair asked (mesh); CPU s: CPU time of all processes in the mesh\n\
         dials/link: TCP connections dialled while reaching, per link it formed (all but the \
         seed links; crossing dials make it more than 1)"
    );
    println!(
        "new node: started -> every existing node answered by it; asked at once, or once it is \
         bound to its master (bound after: how long that took it)"
    );
    for pair in medians.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let pairs = |n: usize| (n * (n - 1)) as f64;
        let ratio = |b: f64, a: f64| {
            if a > 0.0 {
                format!("x{:.1}", b / a)
            } else {
                "x?".into()
            }
        };
        println!(
            "{} -> {}: nodes x{:.1}, pairs x{:.1}; directory first {} (mesh {}, its CPU {}), \
             RSS/node x{:.2}",
            a.n,
            b.n,
            b.n as f64 / a.n as f64,
            pairs(b.n) / pairs(a.n),
            ratio(b.total, a.total),
            ratio(b.mesh, a.mesh),
            ratio(b.mesh_cpu, a.mesh_cpu),
            b.rss / a.rss,
        );
    }
}
