//! The network's database in one process: how long a change takes to reach a monitor on
//! another node, and how many lookups per second a node answers from what it holds.
//!
//! ```sh
//! cargo bench --bench database              # N = 10 and 100 nodes, 1,000 rounds per workload
//! cargo bench --bench database -- --quick   # 200 rounds, shorter lookups
//! cargo bench --bench database -- --nodes 10,50 --rounds 500 --threads 1 --entries 1000
//! cargo bench --bench database -- --no-monitors   # only the watcher monitors the family
//! ```
//!
//! **Cluster.** Two global nodes G1 and G2 (each listens on an address among its seeds, both
//! seeded with both) and N − 2 slaves, alternately seeded with G1 and with G2 so that half bind
//! to each. All N nodes run in this process (`workers: 1`, P2 by default, hmac auth, no TLS),
//! spread over `--threads` actix arbiters (default 2, the machine's cores) round robin in start
//! order: G1, G2, then the slaves, so that with 2 threads each global shares its thread with its
//! own slaves. The measuring loop and the lookups run on the main thread. Before any clock
//! starts: both globals list all N nodes in `'l`, every slave is bound to its master, and every
//! monitor has had its first item.
//!
//! **Propagation.** The setter is a slave of G1, the watcher a slave of G2 with a `db_mon` of
//! the family; every other slave monitors it too (a task on its node's thread drains it), so
//! each change fans out to N − 2 monitors, about half through each global. A global node sends
//! a change to its monitors one after the other, in the order of their node ids (random): the
//! watcher is the G2 slave in the middle of that order, a typical monitor rather than a lucky
//! or an unlucky one. One round: a `db_set` (or a guard dropped) on the setter, then the
//! watcher's monitor is awaited until it yields that change (its latency), then the other
//! monitors until each has yielded it (`all`); only then the next round. Workloads:
//! * `add`: R new keys (`k0`…), so the family grows from 0 to R entries;
//! * `change`: one key set to R successive values, in a family of R + 1 entries;
//! * `delete`: the R keys' guards dropped one by one (the family shrinks back to 1).
//!
//! Columns: the watcher's median, p99, mean and max in µs, the medians of its first and last
//! 10 % of the rounds (a per-change cost that grows with the family's size shows as first <
//! last in `add` and as first > last in `delete`), and the median and p99 until every monitor
//! had the change.
//!
//! **Lookups.** The setter sets E entries (default 1,000) of another family, which the watcher
//! monitors; then, each for about a second (calls in a loop, one at a time, on the main thread):
//! * `DbMonitor::family().get`: one key of the watcher's mirror (a borrowed map);
//! * `grp_get` on the watcher (slave): the keys it knows, from its mirror;
//! * `grp_get` on G2 (global): the keys of the union of the shards it holds;
//! * `db_family` on G2: answered by itself, from its shards, through its own node port;
//! * `db_family` on the watcher: a round trip to G2 over loopback, the whole family each time.
//!
//! Nothing here asserts on timings; a workload that fails (a change not seen within 10 s)
//! prints `err` and the program exits non-zero at the end.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::{Arbiter, ArbiterHandle};
use aemp::node::{DbChange, DbGuard, DbMonitor, Node, NodeConfig};
use tokio::sync::{Notify, oneshot, watch};

const SECRET: &str = "database bench secret";
/// The family of the propagation workloads.
const FAMILY: &str = "bench";
/// The family of the lookups.
const LOOKUP: &str = "lookup";
/// How long one change may take to arrive.
const WITHIN: Duration = Duration::from_secs(10);
/// How long the cluster may take to form.
const FORM: Duration = Duration::from_secs(60);
/// Changes made (and awaited) before the measured rounds.
const WARMUP: usize = 50;

fn main() -> std::process::ExitCode {
    // cargo passes `--bench` to harness = false benches: unknown arguments are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = options(&args);
    let _ = rlimit::increase_nofile_limit(16_384);
    // Arbiters belong to a system: start it first.
    let system = actix::System::new();
    let arbiters: Vec<Arbiter> = (0..opt.threads).map(|_| Arbiter::new()).collect();
    let handles: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
    let results = system.block_on(run_all(&opt, &handles));
    let failed = print_tables(&opt, &results);
    // Exit at once: the nodes are shut down, idle arbiters need not be joined.
    std::process::exit(if failed { 1 } else { 0 })
}

struct Options {
    quick: bool,
    no_monitors: bool,
    rounds: usize,
    nodes: Vec<usize>,
    threads: usize,
    entries: usize,
    lookup_for: Duration,
}

fn options(args: &[String]) -> Options {
    let quick = args.iter().any(|a| a == "--quick");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let number =
        |name: &str, default: usize| value(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let nodes = value("--nodes")
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100]);
    Options {
        quick,
        no_monitors: args.iter().any(|a| a == "--no-monitors"),
        rounds: number("--rounds", if quick { 200 } else { 1000 }).max(10),
        nodes: nodes.into_iter().map(|n: usize| n.max(4)).collect(),
        threads: number("--threads", 2).max(1),
        entries: number("--entries", 1000).max(1),
        lookup_for: Duration::from_millis(if quick { 300 } else { 1000 }),
    }
}

// ------------------------------------------------------------------------------------------
// The cluster

fn free_addr() -> Result<String, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.to_string())
}

/// Starts a node on `arbiter` (its actors and transports live there).
async fn start_on(
    arbiter: &ArbiterHandle,
    binds: Vec<String>,
    seeds: Vec<String>,
) -> Result<Node, String> {
    let config = NodeConfig {
        binds,
        seeds,
        workers: 1,
        ..NodeConfig::with_secret(SECRET)
    };
    let (tx, rx) = oneshot::channel();
    arbiter.spawn_fn(move || {
        actix::spawn(async move {
            let _ = tx.send(Node::start(config).await.map_err(|e| e.to_string()));
        });
    });
    rx.await.map_err(|_| "the arbiter went away".to_string())?
}

/// Waits until `cond` holds, checking every 20 ms, for at most `within`.
async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > within {
            return Err(format!("{what}: not within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

struct Cluster {
    g2: Node,
    setter: Node,
    watcher: Node,
    all: Vec<Node>,
    /// The other slaves' monitors of `FAMILY`, and what they have seen.
    fanout: Arc<Fanout>,
    /// How many other slaves monitor `FAMILY`.
    others: usize,
    /// The watcher's place in G2's fan-out (1-based), and how many G2 sends each change to.
    watcher_place: (usize, usize),
    /// Ends the other slaves' monitors.
    stop: watch::Sender<bool>,
    /// From the first node started until everything was ready.
    formed_in: Duration,
}

/// What the other slaves' monitors of `FAMILY` have seen.
#[derive(Default)]
struct Fanout {
    /// Monitors that have had their first item (the family as it was).
    synced: AtomicUsize,
    /// Items after the first, over all of them.
    seen: AtomicUsize,
    /// `notify` wakes the measuring loop once `seen` reaches this.
    target: AtomicUsize,
    notify: Notify,
}

impl Cluster {
    /// `monitors`: the slaves besides the watcher monitor `FAMILY` too.
    async fn start(
        n: usize,
        arbiters: &[ArbiterHandle],
        monitors: bool,
    ) -> Result<Cluster, String> {
        let t = Instant::now();
        let arbiter = |i: usize| &arbiters[i % arbiters.len()];
        let (a1, a2) = (free_addr()?, free_addr()?);
        let seeds = vec![a1.clone(), a2.clone()];
        let g1 = start_on(arbiter(0), vec![a1.clone()], seeds.clone()).await?;
        let g2 = start_on(arbiter(1), vec![a2.clone()], seeds).await?;
        until("the globals", FORM, || g1.is_global() && g2.is_global()).await?;
        let mut slaves = Vec::with_capacity(n - 2);
        for i in 0..n - 2 {
            let seed = if i.is_multiple_of(2) { &a1 } else { &a2 };
            let node = start_on(
                arbiter(i + 2),
                vec!["127.0.0.1:0".into()],
                vec![seed.clone()],
            );
            slaves.push(node.await?);
        }
        let master_of = |i: usize| {
            if i.is_multiple_of(2) {
                g1.id()
            } else {
                g2.id()
            }
        };
        until("every slave bound to its master", FORM, || {
            slaves
                .iter()
                .enumerate()
                .all(|(i, s)| s.master().as_deref() == Some(master_of(i)))
        })
        .await?;
        // Both globals know every node (each has the other's slaves' shards).
        for g in [&g1, &g2] {
            let t = Instant::now();
            while g.db_keys("'l").await.map_err(|e| e.to_string())?.len() < n {
                if t.elapsed() > FORM {
                    return Err(format!("{} does not list all {n} nodes in 'l", g.id()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // The setter is G1's first slave. A global node sends a change to its monitors in the
        // order of their node ids (random): the watcher is the G2 slave in the middle of that
        // order, so that it stands for a typical monitor, not a lucky or an unlucky one.
        let mut of_g2: Vec<(&str, usize)> =
            (1..n - 2).step_by(2).map(|i| (slaves[i].id(), i)).collect();
        of_g2.sort();
        let middle = (of_g2.len() - 1) / 2;
        let watcher_at = of_g2[middle].1;
        let watcher_place = if monitors {
            (middle + 1, of_g2.len())
        } else {
            (1, 1)
        };
        let (setter, watcher) = (slaves[0].clone(), slaves[watcher_at].clone());
        let fanout = Arc::new(Fanout::default());
        let (stop, stopped) = watch::channel(false);
        let others = if monitors { n - 3 } else { 0 };
        let watching = slaves.iter().enumerate().filter(|(i, _)| *i != watcher_at);
        for (i, node) in watching.take(others) {
            drain(
                arbiter(i + 2),
                node.clone(),
                fanout.clone(),
                stopped.clone(),
            );
        }
        until("the other slaves' monitors", FORM, || {
            fanout.synced.load(Ordering::Relaxed) == others
        })
        .await?;
        let mut all = vec![g1.clone(), g2.clone()];
        all.extend(slaves);
        Ok(Cluster {
            g2,
            setter,
            watcher,
            all,
            fanout,
            others,
            watcher_place,
            stop,
            formed_in: t.elapsed(),
        })
    }

    fn shutdown(self) {
        let _ = self.stop.send(true);
        for node in &self.all {
            node.shutdown();
        }
    }
}

/// A monitor of `FAMILY` on `node`, drained on its thread until `stop`.
fn drain(
    arbiter: &ArbiterHandle,
    node: Node,
    fanout: Arc<Fanout>,
    mut stop: watch::Receiver<bool>,
) {
    arbiter.spawn_fn(move || {
        actix::spawn(async move {
            let Ok(mut mon) = node.db_mon(FAMILY) else {
                return;
            };
            let mut first = true;
            loop {
                tokio::select! {
                    change = mon.next_change() => {
                        if change.is_none() {
                            break;
                        }
                        if std::mem::take(&mut first) {
                            fanout.synced.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let seen = fanout.seen.fetch_add(1, Ordering::AcqRel) + 1;
                        if seen >= fanout.target.load(Ordering::Acquire) {
                            fanout.notify.notify_one();
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        });
    });
}

// ------------------------------------------------------------------------------------------
// Propagation

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Round latencies in µs, per workload: until the watcher has the change, and until every
/// monitor has it.
#[derive(Default)]
struct Latencies {
    add: (Vec<f64>, Vec<f64>),
    change: (Vec<f64>, Vec<f64>),
    delete: (Vec<f64>, Vec<f64>),
    /// Changes the watcher saw that were not the one awaited (expected: none).
    stray: usize,
}

/// The watcher's monitor, and how many changes were made so far.
struct Watch<'a> {
    cluster: &'a Cluster,
    mon: DbMonitor,
    made: usize,
    stray: usize,
}

impl Watch<'_> {
    /// One round: `make` makes one change on the setter; then the watcher's monitor is awaited
    /// until `wanted` recognises an item (others are counted as stray), then every other
    /// monitor's. Returns both times (µs).
    async fn round(
        &mut self,
        make: impl FnOnce(&Node) -> Result<(), aemp::node::NodeError>,
        wanted: impl Fn(&DbChange) -> bool,
    ) -> Result<(f64, f64), String> {
        let fanout = &self.cluster.fanout;
        self.made += 1;
        let target = self.made * self.cluster.others;
        fanout.target.store(target, Ordering::Release);
        let t = Instant::now();
        make(&self.cluster.setter).map_err(|e| e.to_string())?;
        loop {
            let left = WITHIN.saturating_sub(t.elapsed());
            let change = tokio::time::timeout(left, self.mon.next_change())
                .await
                .map_err(|_| format!("the watcher saw no change within {WITHIN:?}"))?
                .ok_or("the monitor ended")?;
            if wanted(&change) {
                break;
            }
            self.stray += 1;
        }
        let watcher = us(t.elapsed());
        while fanout.seen.load(Ordering::Acquire) < target {
            let left = WITHIN.saturating_sub(t.elapsed());
            tokio::time::timeout(left, fanout.notify.notified())
                .await
                .map_err(|_| {
                    let seen = fanout.seen.load(Ordering::Acquire);
                    format!("the other monitors saw {seen} changes of {target} within {WITHIN:?}")
                })?;
        }
        Ok((watcher, us(t.elapsed())))
    }
}

async fn propagation(c: &Cluster, rounds: usize) -> Result<Latencies, String> {
    let mut mon = c.watcher.db_mon(FAMILY).map_err(|e| e.to_string())?;
    tokio::time::timeout(WITHIN, mon.next_change())
        .await
        .map_err(|_| "the watcher's monitor did not start")?
        .ok_or("the monitor ended")?;
    let mut w = Watch {
        cluster: c,
        mon,
        made: 0,
        stray: 0,
    };
    // Warm-up: a key set to a few values, then deleted.
    for i in 0..WARMUP {
        let set = |s: &Node| s.db_set(FAMILY, "warm", &i).map(DbGuard::detach);
        let seen = |ch: &DbChange| ch.added.contains_key("warm") || ch.changed.contains_key("warm");
        w.round(set, seen).await?;
    }
    let del = |s: &Node| s.db_del(FAMILY, &["warm"]);
    w.round(del, |ch| ch.deleted.iter().any(|k| k == "warm"))
        .await?;
    w.stray = 0;

    let mut out = Latencies::default();
    let mut guards: Vec<DbGuard> = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let key = format!("k{i}");
        let set = |s: &Node| {
            guards.push(s.db_set(FAMILY, &key, &i)?);
            Ok(())
        };
        let (a, b) = w.round(set, |ch| ch.added.contains_key(&key)).await?;
        out.add.0.push(a);
        out.add.1.push(b);
    }
    let set = |s: &Node| s.db_set(FAMILY, "hot", &0).map(DbGuard::detach);
    w.round(set, |ch| ch.added.contains_key("hot")).await?;
    for i in 1..=rounds {
        let set = |s: &Node| s.db_set(FAMILY, "hot", &i).map(DbGuard::detach);
        let (a, b) = w.round(set, |ch| ch.changed.contains_key("hot")).await?;
        out.change.0.push(a);
        out.change.1.push(b);
    }
    while let Some(guard) = guards.pop() {
        let key = guard.key().to_owned();
        let (a, b) = w
            .round(
                |_| {
                    drop(guard);
                    Ok(())
                },
                |ch| ch.deleted.contains(&key),
            )
            .await?;
        out.delete.0.push(a);
        out.delete.1.push(b);
    }
    let del = |s: &Node| s.db_del(FAMILY, &["hot"]);
    w.round(del, |ch| ch.deleted.iter().any(|k| k == "hot"))
        .await?;
    out.stray = w.stray;
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Lookups

/// Calls per second of `f`, called for about `d` (the clock is read every `batch` calls).
fn rate(d: Duration, batch: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut calls = 0usize;
    while t.elapsed() < d {
        for _ in 0..batch {
            f();
        }
        calls += batch;
    }
    calls as f64 / t.elapsed().as_secs_f64()
}

/// Calls per second of the query `f`, awaited one at a time for about `d`.
async fn rate_async<T, Fut>(d: Duration, mut f: impl FnMut() -> Fut) -> Result<f64, String>
where
    Fut: Future<Output = Result<T, aemp::node::NodeError>>,
{
    let t = Instant::now();
    let mut calls = 0usize;
    while t.elapsed() < d {
        let answer = tokio::time::timeout(WITHIN, f())
            .await
            .map_err(|_| format!("no answer within {WITHIN:?}"))?;
        std::hint::black_box(answer.map_err(|e| e.to_string())?);
        calls += 1;
    }
    Ok(calls as f64 / t.elapsed().as_secs_f64())
}

const LOOKUPS: [&str; 5] = [
    "DbMonitor::family().get, slave",
    "grp_get, slave (its mirror)",
    "grp_get, global (its shards)",
    "db_family, global (itself)",
    "db_family, slave (round trip)",
];

/// Ops/s of each of [`LOOKUPS`], in order.
async fn lookups(c: &Cluster, entries: usize, d: Duration) -> Result<Vec<f64>, String> {
    let err = |e: aemp::node::NodeError| e.to_string();
    let mut mon = c.watcher.db_mon(LOOKUP).map_err(err)?;
    let keys: Vec<String> = (0..entries).map(|i| format!("e{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        c.setter.db_set(LOOKUP, key, &i).map_err(err)?.detach();
    }
    let t = Instant::now();
    while mon.family().len() < entries {
        let left = (WITHIN * 3).saturating_sub(t.elapsed());
        tokio::time::timeout(left, mon.next_change())
            .await
            .map_err(|_| format!("the watcher's mirror has {} entries", mon.family().len()))?
            .ok_or("the monitor ended")?;
    }
    let check = |what: &str, len: usize| {
        if len == entries {
            Ok(())
        } else {
            Err(format!("{what} has {len} entries, not {entries}"))
        }
    };
    check("grp_get on the watcher", c.watcher.grp_get(LOOKUP).len())?;
    check("grp_get on G2", c.g2.grp_get(LOOKUP).len())?;
    check(
        "db_family on G2",
        c.g2.db_family(LOOKUP).await.map_err(err)?.len(),
    )?;
    check(
        "db_family on the watcher",
        c.watcher.db_family(LOOKUP).await.map_err(err)?.len(),
    )?;

    let mut out = Vec::new();
    let mut i = 0;
    out.push(rate(d, 1024, || {
        std::hint::black_box(mon.family().get(&keys[i % entries]));
        i += 1;
    }));
    out.push(rate(d, 1, || {
        std::hint::black_box(c.watcher.grp_get(LOOKUP));
    }));
    out.push(rate(d, 1, || {
        std::hint::black_box(c.g2.grp_get(LOOKUP));
    }));
    out.push(rate_async(d, || c.g2.db_family(LOOKUP)).await?);
    out.push(rate_async(d, || c.watcher.db_family(LOOKUP)).await?);
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Runs and tables

struct ClusterResult {
    n: usize,
    /// How long the cluster took to form, and the watcher's place in G2's fan-out.
    formed: Result<(Duration, (usize, usize)), String>,
    latencies: Result<Latencies, String>,
    lookups: Result<Vec<f64>, String>,
}

async fn run_all(opt: &Options, arbiters: &[ArbiterHandle]) -> Vec<ClusterResult> {
    let mut results = Vec::new();
    for &n in &opt.nodes {
        eprintln!("N = {n}: starting the cluster");
        let cluster = match Cluster::start(n, arbiters, !opt.no_monitors).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("N = {n}: FAILED: {e}");
                results.push(ClusterResult {
                    n,
                    formed: Err(e.clone()),
                    latencies: Err(e.clone()),
                    lookups: Err(e),
                });
                continue;
            }
        };
        let (place, of) = cluster.watcher_place;
        eprintln!(
            "N = {n}: formed in {:.2} s; {} monitors besides the watcher, which is #{place} of \
             {of} in G2's fan-out; {} rounds per workload",
            cluster.formed_in.as_secs_f64(),
            cluster.others,
            opt.rounds
        );
        let t = Instant::now();
        let latencies = propagation(&cluster, opt.rounds).await;
        match &latencies {
            Ok(l) => eprintln!(
                "N = {n}: propagation done in {:.1} s ({} stray changes)",
                t.elapsed().as_secs_f64(),
                l.stray
            ),
            Err(e) => eprintln!("N = {n}: propagation FAILED: {e}"),
        }
        let lookups = lookups(&cluster, opt.entries, opt.lookup_for).await;
        if let Err(e) = &lookups {
            eprintln!("N = {n}: lookups FAILED: {e}");
        }
        let formed = Ok((cluster.formed_in, cluster.watcher_place));
        cluster.shutdown();
        // Let the nodes go before the next cluster starts.
        tokio::time::sleep(Duration::from_secs(1)).await;
        results.push(ClusterResult {
            n,
            formed,
            latencies,
            lookups,
        });
    }
    results
}

/// The value at quantile `q` of sorted `v`.
fn pick(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    pick(&v, 0.5)
}

/// Prints the tables; whether anything failed.
fn print_tables(opt: &Options, results: &[ClusterResult]) -> bool {
    let mut failed = false;
    println!();
    println!(
        "database propagation: db_set on a slave of G1 → db_mon item on a slave of G2 (watcher), \
         and on every monitor (all); {} rounds per workload{}; {}; {} thread(s) for the nodes; µs",
        opt.rounds,
        if opt.quick { " (--quick)" } else { "" },
        if opt.no_monitors {
            "the watcher's monitor only (--no-monitors)"
        } else {
            "N − 2 monitors"
        },
        opt.threads
    );
    let notes = "formed in; watcher's place in G2's fan-out";
    println!(
        "{:>5} {:>8} | {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} | {:>9} {:>9} | {notes}",
        "N",
        "workload",
        "median",
        "p99",
        "mean",
        "max",
        "first 10%",
        "last 10%",
        "all: med",
        "all: p99",
    );
    for r in results {
        let note = match &r.formed {
            Ok((d, (place, of))) => format!("{:.2} s; #{place} of {of}", d.as_secs_f64()),
            Err(_) => "err".into(),
        };
        let Ok(l) = &r.latencies else {
            println!("{:>5} {:>8} | {:>7}", r.n, "all", "err");
            failed = true;
            continue;
        };
        let workloads = [
            ("add", &l.add),
            ("change", &l.change),
            ("delete", &l.delete),
        ];
        for (i, (name, (watcher, all))) in workloads.into_iter().enumerate() {
            let mut sorted = watcher.clone();
            sorted.sort_by(f64::total_cmp);
            let mut all_sorted = all.clone();
            all_sorted.sort_by(f64::total_cmp);
            let tenth = (watcher.len() / 10).max(1);
            println!(
                "{:>5} {:>8} | {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>9.0} {:>9.0} | {:>9.0} {:>9.0} | {}",
                if i == 0 {
                    r.n.to_string()
                } else {
                    String::new()
                },
                name,
                pick(&sorted, 0.5),
                pick(&sorted, 0.99),
                watcher.iter().sum::<f64>() / watcher.len() as f64,
                sorted[sorted.len() - 1],
                median(&watcher[..tenth]),
                median(&watcher[watcher.len() - tenth..]),
                pick(&all_sorted, 0.5),
                pick(&all_sorted, 0.99),
                if i == 0 { note.as_str() } else { "" },
            );
        }
    }
    println!();
    println!(
        "lookups in a family of {} entries, ops/s (one call at a time, main thread)",
        opt.entries
    );
    print!("{:<34}", "lookup");
    for r in results {
        print!(" {:>10}", format!("N = {}", r.n));
    }
    println!();
    for (i, name) in LOOKUPS.iter().enumerate() {
        print!("{name:<34}");
        for r in results {
            match &r.lookups {
                Ok(v) => print!(" {:>10}", support::human(v[i], 0)),
                Err(_) => {
                    print!(" {:>10}", "err");
                    failed = true;
                }
            }
        }
        println!();
    }
    failed
}
