//! What the bench programs share: ending their child processes, reading `k=v` result lines,
//! printing rates. Each bench includes it with `mod support;` and uses what it needs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Starts this bench program again with `args` (a child role), its stdin a pipe to it and its
/// stdout lines read by a thread into the receiver.
pub fn spawn_self(
    what: &str,
    args: &[&str],
) -> Result<(Child, Option<ChildStdin>, mpsc::Receiver<String>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, stdin, lines))
}

/// `k=v` pairs of a result line.
pub type Sample = HashMap<String, f64>;

/// The `k=v` pairs of `text` whose values are numbers.
pub fn parse_pairs(text: &str) -> Sample {
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Closes a child's stdin (its signal to exit), waits up to `grace`, then kills it.
pub fn stop_child(child: &mut Child, stdin: Option<ChildStdin>, grace: Duration) {
    drop(stdin);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A rate for a table: `1.23M`, `45.6k`, or the number with `decimals` below 10,000.
pub fn human(v: f64, decimals: usize) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.decimals$}")
    }
}
