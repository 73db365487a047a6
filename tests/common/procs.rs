//! `aemp run` processes driven by tests: their output lines with the time each was read,
//! their standard input for `--stdin` commands, SIGKILL / SIGSTOP, and network namespaces for
//! cutting links silently.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const AEMP: &str = env!("CARGO_BIN_EXE_aemp");

/// A `PERL_ANYEVENT_MP_RC` that names no file: `aemp` processes of tests read no profile.
pub const NO_RC: &str = "/nonexistent/aemp-test-profile";

/// A running `aemp` process.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<Arc<Mutex<ChildStdin>>>,
    lines: Receiver<(Instant, String)>,
    /// Every line read so far.
    pub seen: Vec<(Instant, String)>,
    /// From `NODE … LISTEN …`.
    pub node: String,
    pub addr: String,
}

impl Proc {
    /// Starts `cmd` (an `aemp … run` command line, maybe behind `ip netns exec`) and waits for
    /// its `NODE` line. `name` labels its lines in failure messages.
    pub fn start(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().map(|s| Arc::new(Mutex::new(s)));
        let mut p = Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
            node: String::new(),
            addr: String::new(),
        };
        let (_, first) = p.wait_for(|l| l.starts_with("NODE "), Duration::from_secs(30));
        let f: Vec<&str> = first.split(' ').collect();
        assert_eq!((f.len(), f[2]), (4, "LISTEN"), "{name}: {first}");
        p.node = f[1].to_owned();
        p.addr = f[3].to_owned();
        p
    }

    /// An `aemp` command with the shared secret and the P2 dialect (no application-level read
    /// timeout: only the liveness bound notices a dead peer).
    pub fn aemp(prefix: &[&str]) -> Command {
        let (program, before) = match prefix.split_first() {
            Some((p, rest)) => (*p, rest),
            None => (AEMP, &[][..]),
        };
        let mut cmd = Command::new(program);
        cmd.args(before);
        if !prefix.is_empty() {
            cmd.arg(AEMP);
        }
        cmd.args(["--secret", "fault-secret", "--dialect", "p2"])
            .env("RUST_LOG", "off")
            // Never the profile file of the machine running the tests.
            .env("PERL_ANYEVENT_MP_RC", NO_RC);
        cmd
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line that `pred` accepts (earlier ones are kept in `seen`), or a panic after
    /// `limit` that shows everything this process printed.
    pub fn wait_for(&mut self, pred: impl Fn(&str) -> bool, limit: Duration) -> (Instant, String) {
        match self.try_wait_for(pred, limit) {
            Some(hit) => hit,
            None => panic!(
                "{}: no such line within {limit:?}; it printed:\n{}",
                self.name,
                self.transcript()
            ),
        }
    }

    /// Like [`wait_for`](Self::wait_for), `None` instead of a panic.
    pub fn try_wait_for(
        &mut self,
        pred: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push((at, line.clone()));
                    if pred(&line) {
                        return Some((at, line));
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Everything printed so far (that was waited for).
    pub fn transcript(&self) -> String {
        self.seen.iter().map(|(_, l)| format!("  {l}\n")).collect()
    }

    /// Writes one `--stdin` command.
    pub fn command(&self, line: &str) {
        let stdin = self.stdin.as_ref().expect("started with a piped stdin");
        let mut s = stdin.lock().unwrap();
        writeln!(s, "{line}").expect("write a command");
        s.flush().unwrap();
    }

    /// A handle on the standard input, for a thread that streams commands.
    pub fn stdin(&self) -> Arc<Mutex<ChildStdin>> {
        self.stdin.clone().expect("started with a piped stdin")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.name);
    }

    /// The exit code once the process has ended (`None`: killed by a signal, or still running
    /// after `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A thread that sends `snd PORT i` for i = from, from+1, … to a process's `--stdin` every
/// `every`, until dropped; `sent` is the last number written.
pub struct Streamer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    pub sent: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Streamer {
    pub fn start(to: &Proc, port: &str, from: u64, every: Duration) -> Streamer {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(from.saturating_sub(1)));
        let (stdin, port) = (to.stdin(), port.to_owned());
        let (halt, count) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut i = from;
            while !halt.load(Ordering::Relaxed) {
                let mut s = stdin.lock().unwrap();
                if writeln!(s, "snd {port} {i}")
                    .and_then(|()| s.flush())
                    .is_err()
                {
                    return;
                }
                drop(s);
                count.store(i, Ordering::Relaxed);
                i += 1;
                std::thread::sleep(every);
            }
        });
        Streamer {
            stop,
            sent,
            thread: Some(thread),
        }
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The number in a `RCV <sink> [n]` line.
pub fn rcv_number(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("RCV ")?;
    let (_, json) = rest.split_once(' ')?;
    serde_json::from_str::<(u64,)>(json).ok().map(|(n,)| n)
}

/// Two network namespaces joined by a veth pair (`10.201.0.1/24` in the first, `.2/24` in the
/// second), deleted on drop, panic or not.
pub struct NetnsPair {
    pub ns: [String; 2],
    pub dev: [String; 2],
    pub ip: [&'static str; 2],
}

impl NetnsPair {
    /// Makes the pair, or says why it cannot (not root, no `ip`, no namespace support).
    pub fn create(tag: &str) -> Result<NetnsPair, String> {
        let pid = std::process::id();
        let pair = NetnsPair {
            ns: [format!("aemp-{tag}-{pid}-a"), format!("aemp-{tag}-{pid}-b")],
            // Interface names are at most 15 bytes.
            dev: [format!("a{tag}{pid}"), format!("b{tag}{pid}")],
            ip: ["10.201.0.1", "10.201.0.2"],
        };
        assert!(pair.dev[0].len() <= 15, "{}", pair.dev[0]);
        // The guard exists before anything is made, so that whatever was made goes again.
        ip(&["netns", "add", &pair.ns[0]])?;
        ip(&["netns", "add", &pair.ns[1]])?;
        ip(&[
            "link",
            "add",
            &pair.dev[0],
            "netns",
            &pair.ns[0],
            "type",
            "veth",
            "peer",
            "name",
            &pair.dev[1],
            "netns",
            &pair.ns[1],
        ])?;
        for i in 0..2 {
            let (ns, dev) = (&pair.ns[i], &pair.dev[i]);
            let cidr = format!("{}/24", pair.ip[i]);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// `ip netns exec <ns i>`, to put in front of a command.
    pub fn exec(&self, i: usize) -> [&str; 4] {
        ["ip", "netns", "exec", &self.ns[i]]
    }

    /// Takes the veth end in namespace `i` down (`up` false) or up: no FIN, no RST, nothing
    /// gets through any more.
    pub fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns[i], "link", "set", &self.dev[i], state])
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and the pair with it.
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Runs `ip ARGS…`; the error says what failed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `n` network namespaces, each a "host" on one Ethernet segment: a veth pair per host joins it
/// to a bridge in a namespace of its own. Host `i` has `10.202.0.(i+1)/24` and, where IPv6
/// works, `fd42:202::(i+1)/64` (added without duplicate address detection, so that it is
/// usable at once). Names carry the process id; everything is deleted on drop, panic or not.
pub struct NetnsLan {
    pub ns: Vec<String>,
    switch: String,
    pub ip4: Vec<String>,
    /// The hosts' IPv6 addresses, or `None` where IPv6 could not be set up.
    pub ip6: Option<Vec<String>>,
}

impl NetnsLan {
    /// Makes the hosts, or says why it cannot (not root, no `ip`, no namespace or bridge
    /// support).
    pub fn create(tag: &str, n: usize) -> Result<NetnsLan, String> {
        let pid = std::process::id();
        let mut lan = NetnsLan {
            ns: (0..n).map(|i| format!("aemp-{tag}-{pid}-{i}")).collect(),
            switch: format!("aemp-{tag}-{pid}-sw"),
            ip4: (0..n).map(|i| format!("10.202.0.{}", i + 1)).collect(),
            ip6: None,
        };
        // A namespace left by an earlier process with this id would make `add` fail.
        for ns in lan.ns.iter().chain([&lan.switch]) {
            let _ = ip(&["netns", "del", ns]);
            ip(&["netns", "add", ns])?;
        }
        let sw = lan.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, ns) in lan.ns.iter().enumerate() {
            // Interface names are at most 15 bytes.
            let (dev, port) = (format!("{tag}{pid}h{i}"), format!("{tag}{pid}p{i}"));
            assert!(dev.len() <= 15, "{dev}");
            ip(&[
                "link", "add", &dev, "netns", ns, "type", "veth", "peer", "name", &port, "netns",
                &sw,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            let cidr = format!("{}/24", lan.ip4[i]);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", &dev])?;
            ip(&["-n", ns, "link", "set", &dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let ip6: Vec<String> = (0..n).map(|i| format!("fd42:202::{}", i + 1)).collect();
        let v6 = lan.ns.iter().enumerate().try_for_each(|(i, ns)| {
            let dev = format!("{tag}{pid}h{i}");
            let cidr = format!("{}/64", ip6[i]);
            ip(&["-n", ns, "-6", "addr", "add", &cidr, "dev", &dev, "nodad"])
        });
        match v6 {
            Ok(()) => lan.ip6 = Some(ip6),
            Err(e) => println!("no IPv6 between the hosts, IPv4 only: {e}"),
        }
        Ok(lan)
    }

    /// `ip netns exec <host i>`, to put in front of a command.
    pub fn exec(&self, i: usize) -> [&str; 4] {
        ["ip", "netns", "exec", &self.ns[i]]
    }
}

impl Drop for NetnsLan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces: the veth pairs and the bridge go too.
        for ns in self.ns.iter().chain([&self.switch]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
