//! A worker pool on the network's database, in one process with five nodes on loopback.
//!
//! Three workers register their job port in the family `worker_pool` (`db_reg`); a dispatcher
//! follows the family (`db_mon`) and hands jobs to the live workers round robin. Once every job
//! is out, one worker's node goes away: its entry leaves the family, the dispatcher stops
//! sending to it and sends the jobs it had in flight there to the others. Every job is
//! answered; the program exits 0 (`cargo test` runs it too).
//!
//! ```text
//! cargo run --example worker_pool
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use aemp::node::{DbMonitor, Node, NodeConfig, PortStream};

const POOL: &str = "worker_pool";
const JOBS: u64 = 12;

async fn start(id: &str, seeds: Vec<String>) -> Node {
    Node::start(NodeConfig {
        node_id: id.into(),
        seeds,
        ..NodeConfig::with_secret("worker pool example")
    })
    .await
    .expect("start a node")
}

/// A worker: `["job", id, n, reply]` is answered with `["done", id, n², worker]`, 200 ms later.
async fn worker(id: &str, seed: &str) -> Node {
    let node = start(id, vec![seed.into()]).await;
    let port = node
        .rcv()
        .on("job", |cx, msg| {
            let (_, job, n, reply): (String, u64, u64, String) =
                msg.decode().map_err(|e| e.to_string())?;
            let node = cx.node.clone();
            actix::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = node.snd(&reply, &("done", job, n * n, node.id()));
            });
            Ok(())
        })
        .start();
    // The entry goes when the port dies or the node leaves the network.
    node.db_reg(POOL, &port, &()).expect("register").detach();
    node
}

/// What the dispatcher knows: the live workers (the family's keys), the jobs waiting and
/// those in flight (job → its number and the worker it went to).
struct Dispatcher {
    node: Node,
    pool: DbMonitor,
    replies: PortStream,
    reply_to: String,
    next: usize,
    waiting: VecDeque<(u64, u64)>,
    in_flight: BTreeMap<u64, (u64, String)>,
}

impl Dispatcher {
    /// Sends every waiting job to a live worker, round robin.
    fn dispatch(&mut self) {
        let workers: Vec<&String> = self.pool.family().keys().collect();
        while !workers.is_empty() {
            let Some((job, n)) = self.waiting.pop_front() else {
                return;
            };
            let to = workers[self.next % workers.len()].clone();
            self.next += 1;
            println!("job {job} -> {to}");
            let _ = self.node.snd(&to, &("job", job, n, &self.reply_to));
            self.in_flight.insert(job, (n, to));
        }
    }

    /// Waits for the next reply or pool change; returns the number of jobs finished by it.
    async fn step(&mut self) -> u64 {
        let limit = Duration::from_secs(10);
        tokio::select! {
            change = self.pool.next_change() => {
                let change = change.expect("the dispatcher node runs");
                for w in change.added.keys() {
                    println!("pool: {w} joined");
                }
                for w in &change.deleted {
                    println!("pool: {w} left");
                    let lost: Vec<u64> = self.in_flight.iter()
                        .filter(|(_, (_, to))| to == w)
                        .map(|(job, _)| *job)
                        .collect();
                    for job in lost {
                        let (n, _) = self.in_flight.remove(&job).unwrap();
                        println!("job {job} was in flight to {w}: sending it again");
                        self.waiting.push_back((job, n));
                    }
                }
                0
            }
            reply = self.replies.recv() => {
                let (_, job, result, by): (String, u64, u64, String) =
                    reply.expect("the reply port is open").decode().expect("a done message");
                // An answer to a job sent again elsewhere may come twice: the first counts.
                if self.in_flight.remove(&job).is_none() {
                    return 0;
                }
                println!("job {job} done by {by}: {result}");
                1
            }
            () = tokio::time::sleep(limit) => panic!("nothing happened within {limit:?}"),
        }
    }
}

#[actix::main]
async fn main() {
    // A node without seeds becomes the network's global node once others seed it.
    let hub = start("hub", Vec::new()).await;
    let seed = hub.listeners()[0].to_string();
    let mut workers = Vec::new();
    for i in 1..=3 {
        workers.push(worker(&format!("worker-{i}"), &seed).await);
    }
    let node = start("dispatcher", vec![seed]).await;
    let (inbox, replies) = node.port_stream();
    let mut d = Dispatcher {
        pool: node.db_mon(POOL).expect("monitor the pool"),
        reply_to: inbox.id().to_owned(),
        node,
        replies,
        next: 0,
        waiting: (1..=JOBS).map(|job| (job, job + 10)).collect(),
        in_flight: BTreeMap::new(),
    };
    while d.pool.family().len() < workers.len() {
        d.step().await;
    }
    let mut done = 0;
    let mut killed = false;
    while done < JOBS {
        d.dispatch();
        if !killed && d.waiting.is_empty() {
            // Every job is out: take worker-2's node down with its jobs unanswered.
            println!("worker-2's node goes away");
            workers[1].shutdown();
            killed = true;
        }
        done += d.step().await;
    }
    println!(
        "all {JOBS} jobs done; the pool has {} workers left",
        d.pool.family().len()
    );
    for w in &workers {
        w.shutdown();
    }
    d.node.shutdown();
    hub.shutdown();
}

#[cfg(test)]
#[test]
fn every_job_is_answered_when_a_worker_goes_away() {
    main();
}
