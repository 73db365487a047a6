//! `aemp bench`: a link measured with standard node-port requests.

use super::*;

/// `aemp bench`: measures the link to `target` with standard node-port requests and prints one
/// `RESULT` line.
pub(super) async fn bench(
    node: &Node,
    target: &str,
    mode: Mode,
    n: usize,
    size: usize,
    window: usize,
    timeout: Duration,
) -> Result<(), String> {
    let (reply, rx) = node.port_stream();
    let mut run = BenchRun {
        node,
        target,
        reply_id: reply.id().to_owned(),
        rx,
        payload: "x".repeat(size),
        timeout,
    };
    let start = Instant::now();
    let rtts = match mode {
        Mode::Rtt => run.round_trips(n, 1).await?,
        Mode::Window => run.round_trips(n, window.max(1)).await?,
        Mode::Oneway => {
            run.one_way(n).await?;
            Vec::new()
        }
    };
    print_bench_result(mode, n, size, start.elapsed(), rtts);
    Ok(())
}

/// What a bench run sends where, and the port its answers come back to.
pub(super) struct BenchRun<'a> {
    node: &'a Node,
    target: &'a str,
    reply_id: String,
    rx: PortStream,
    payload: String,
    timeout: Duration,
}

impl BenchRun<'_> {
    /// Sends `n` `snd` requests that come back to our port, `window` of them in flight at
    /// most; returns the round-trip times.
    async fn round_trips(&mut self, n: usize, window: usize) -> Result<Vec<Duration>, String> {
        let mut rtts = Vec::with_capacity(n);
        let mut sent_at = std::collections::VecDeque::with_capacity(window);
        let mut sent = 0;
        while sent < window.min(n) {
            sent_at.push_back(Instant::now());
            self.send_probe(sent).await?;
            sent += 1;
        }
        for _ in 0..n {
            wait(&mut self.rx, self.timeout)
                .await
                .ok_or("reply timed out")?;
            if let Some(t) = sent_at.pop_front() {
                rtts.push(t.elapsed());
            }
            if sent < n {
                sent_at.push_back(Instant::now());
                self.send_probe(sent).await?;
                sent += 1;
            }
        }
        Ok(rtts)
    }

    /// A `snd` request: the target's node port sends `[seq, payload]` back to our port.
    async fn send_probe(&self, seq: usize) -> Result<(), String> {
        let request = ("snd", self.reply_id.as_str(), seq, self.payload.as_str());
        self.node
            .send(self.target, &request)
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends `n` `devnull` requests, then a `time` request whose answer marks the end.
    async fn one_way(&mut self, n: usize) -> Result<(), String> {
        for _ in 0..n {
            self.node
                .send(self.target, &("devnull", self.payload.as_str()))
                .await
                .map_err(|e| e.to_string())?;
        }
        self.node
            .send(self.target, &("time", self.reply_id.as_str(), "end"))
            .await
            .map_err(|e| e.to_string())?;
        wait(&mut self.rx, self.timeout.max(Duration::from_secs(60)))
            .await
            .ok_or("end marker timed out")?;
        Ok(())
    }
}

/// Prints the `RESULT` line: throughput, and round-trip mean, median and 99th percentile (0
/// where no round trip was timed).
pub(super) fn print_bench_result(
    mode: Mode,
    n: usize,
    size: usize,
    elapsed: Duration,
    mut rtts: Vec<Duration>,
) {
    rtts.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = if rtts.is_empty() {
        0.0
    } else {
        rtts.iter().map(|d| us(*d)).sum::<f64>() / rtts.len() as f64
    };
    let pick = |q: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| us(*d))
    };
    println!(
        "RESULT mode={} n={n} size={size} msgs_per_s={:.0} rtt_mean_us={mean:.1} rtt_median_us={:.1} rtt_p99_us={:.1}",
        mode.name(),
        n as f64 / elapsed.as_secs_f64(),
        pick(0.5),
        pick(0.99)
    );
}
