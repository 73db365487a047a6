//! `aemp`: run a node, or talk to any AEMP node (Rust or Perl) from the command line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aemp::net::TransportError;
use aemp::node::{DialectMode, Message, Node, NodeConfig, PortStream};
use aemp::proto::dialect::Dialect;
use aemp::proto::value::Value;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(name = "aemp", version, about = "AEMP (AnyEvent::MP) nodes in Rust")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// The shared secret.
    #[arg(long, env = "AEMP_SECRET", global = true, default_value = "")]
    secret: String,
    /// Nodes to dial, in Perl's syntax: HOST:PORT, [V6]:PORT, PORT (this host's name), *:PORT
    /// (this host's interface addresses); a comma-separated list, or repeated. A name dials
    /// every address it resolves to.
    #[arg(long, global = true)]
    seed: Vec<String>,
    /// This node's id (`anon/` gets a random suffix).
    #[arg(long, global = true, default_value = "anon/")]
    nodeid: String,
    /// The dialect to speak: auto (answer each dialler in its dialect; dial in p2, and again
    /// in the listener's dialect if it speaks another), or always p0, p1a, p1b or p2.
    #[arg(long, global = true, default_value = "auto")]
    dialect: String,
    /// Seconds to wait for the seed and for answers.
    #[arg(long, global = true, default_value_t = 5.0)]
    timeout: f64,
    /// Seconds a peer may stay unheard before its link fails (TCP keepalive probes and
    /// TCP_USER_TIMEOUT; whole seconds, at least 2); 0 keeps the OS defaults.
    #[arg(long, global = true, default_value_t = 30.0)]
    liveness: f64,
    /// PEM with this node's private key and certificate (+ CA certificates): offer TLS.
    #[arg(long, env = "AEMP_CERT", global = true)]
    cert: Option<std::path::PathBuf>,
    /// Refuse peers that do not offer TLS.
    #[arg(long, global = true)]
    require_tls: bool,
    /// Accept the `cleartext` auth method (the peer sends the shared secret itself, in hex).
    /// Risky: outside TLS anyone on the path learns the secret. Perl nodes never need it.
    #[arg(long, global = true)]
    allow_cleartext: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until interrupted.
    Run {
        /// Addresses to listen on, in Perl's syntax: HOST:PORT, [V6]:PORT, PORT (this host's
        /// name), *:PORT (every interface address but loopback); port * or 0 is ephemeral; a
        /// comma-separated list, or repeated.
        #[arg(long, default_value = "127.0.0.1:4040")]
        bind: Vec<String>,
        /// Also a port with this name that prints every message it receives as
        /// `RCV NAME <json>`, each line written at once (what was printed survives a kill);
        /// repeatable.
        #[arg(long)]
        sink: Vec<String>,
        /// Read commands from standard input, one a line: `snd PORT ARG…` sends (waiting for
        /// room in the link's queue; arguments as for `aemp snd`), `mon PORT` monitors PORT and
        /// prints `MON PORT <reason>` when it dies.
        #[arg(long)]
        stdin: bool,
        /// Register the echo port in this database family (`db_reg`, value null) and print
        /// `REG FAMILY <port>` once the node's master has the entry; repeatable. The entry goes
        /// when the node does. A node without seeds has no master to wait for (it becomes a
        /// global node, holding its own entries, once another node seeds it): it prints `REG`
        /// at once. (A node whose own address is among its seeds is global: its own master.)
        #[arg(long, value_name = "FAMILY")]
        reg: Vec<String>,
    },
    /// Send a message to a port; succeeds once the target node relayed a receipt back.
    Snd {
        /// The destination port id.
        port: String,
        /// Message elements: JSON where they parse, else strings.
        args: Vec<String>,
    },
    /// Send a request with a fresh reply port appended and print the reply as JSON.
    Cal {
        /// The destination port id.
        port: String,
        /// Message elements.
        args: Vec<String>,
    },
    /// Wait until a port dies and print the kill reason.
    Mon {
        /// The port id.
        port: String,
    },
    /// Print the nodes of the seed's network as one JSON object: node id → its listener
    /// addresses and whether it answered now (`{"addrs": [...], "up": true}`).
    Nodes,
    /// Read the network's database (P2 networks), as the master (the seed) holds it.
    Db {
        #[command(subcommand)]
        op: DbOp,
    },
    /// Measure the link to the seed node with standard node-port requests.
    Bench {
        /// rtt (ping-pong), window (W in flight) or oneway (devnull, closed by time).
        #[arg(long, value_enum, default_value_t = Mode::Rtt)]
        mode: Mode,
        /// Number of messages.
        #[arg(short, long, default_value_t = 10_000)]
        n: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// Messages in flight (window mode).
        #[arg(long, default_value_t = 100)]
        window: usize,
    },
    /// Write a self-signed certificate + key PEM for `--cert` (Perl nodes can use it too).
    Gencert {
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// An RSA-2048 key, as Perl makes (only in builds with the aws-lc-rs feature).
        #[arg(long)]
        rsa: bool,
    },
}

#[derive(Subcommand)]
enum DbOp {
    /// Print a family as one JSON object, key → value.
    Get {
        /// The family, e.g. `svc`, or `'l` (node id → listeners) or `'g` (the global nodes).
        family: String,
    },
    /// Print a family's keys as one JSON array.
    Keys {
        /// The family.
        family: String,
    },
    /// Print a family's values as one JSON array.
    Values {
        /// The family.
        family: String,
    },
    /// Follow a family: one JSON line with the family as it is, then one per change, with what
    /// Perl's `db_mon` callback gets:
    /// `{"family":{KEY:VALUE…},"added":[KEY…],"changed":[KEY…],"deleted":[KEY…]}` (`family`:
    /// the family after the change; the first line has every key in `added`).
    Mon {
        /// The family.
        family: String,
        /// Exit after this many lines.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Mode {
    Rtt,
    Window,
    Oneway,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Rtt => "rtt",
            Mode::Window => "window",
            Mode::Oneway => "oneway",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Gencert { out, rsa } = &cli.command {
        return match gencert(out.as_deref(), *rsa) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("aemp: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            match std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()) {
                Some(spec) => tracing_subscriber::EnvFilter::new(spec),
                // A node logs what happens to it; one-shot commands say only their one line.
                None if matches!(cli.command, Command::Run { .. }) => {
                    tracing_subscriber::EnvFilter::new("aemp=info")
                }
                None => tracing_subscriber::EnvFilter::new("off"),
            },
        )
        .init();
    let system = actix::System::new();
    let result = system.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aemp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn gencert(out: Option<&std::path::Path>, rsa: bool) -> Result<(), String> {
    use aemp::net::tls::{KeyKind, generate_pem};
    use std::io::Write as _;
    let kind = if rsa {
        KeyKind::Rsa2048
    } else {
        KeyKind::EcdsaP256
    };
    let pem = generate_pem(kind).map_err(|e| e.to_string())?;
    let Some(path) = out else {
        print!("{pem}");
        return Ok(());
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write_err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = options.open(path).map_err(write_err)?;
    file.write_all(pem.as_bytes()).map_err(write_err)
}

fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn dialect_mode(name: &str) -> Result<DialectMode, String> {
    if name == "auto" {
        return Ok(DialectMode::default());
    }
    Dialect::from_name(name)
        .map(DialectMode::Fixed)
        .ok_or_else(|| format!("unknown dialect {name:?} (auto, p0, p1a, p1b, p2)"))
}

/// A JSON value where the text parses as JSON, else the text as a string.
fn parse_arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::Str(text.to_owned()))
}

/// Starts this node, then runs the command: `run` serves until interrupted; the others dial
/// the seed first.
async fn run(cli: Cli) -> Result<(), String> {
    let c = cli.common;
    let timeout = Duration::from_secs_f64(c.timeout.max(0.1));
    let binds = match &cli.command {
        Command::Run { bind, .. } => bind.clone(),
        _ => Vec::new(),
    };
    let mut config = node_config(&c, binds, timeout)?;
    let seeds = aemp::net::addr::resolve_all(&c.seed)
        .await
        .map_err(|e| format!("--seed {e}"))?;
    // Seeds are kept (dialled again until they answer); on P2 links the first one up
    // becomes our master, which finds any other node of its network for us.
    config.seeds = seeds.iter().map(ToString::to_string).collect();
    let node = Node::start(config).await.map_err(|e| e.to_string())?;
    if let Command::Run {
        sink, stdin, reg, ..
    } = &cli.command
    {
        return serve(&node, sink, *stdin, reg, seeds.is_empty()).await;
    }
    let seed_node = connect_seed(&node, &seeds, timeout).await?;
    match cli.command {
        Command::Run { .. } | Command::Gencert { .. } => Ok(()),
        Command::Snd { port, args } => send_with_receipt(&node, &port, &args, timeout).await,
        Command::Cal { port, args } => call(&node, &port, &args, timeout).await,
        Command::Mon { port } => print_kill_reason(&node, &port).await,
        Command::Nodes => print_nodes(&node, timeout).await,
        Command::Db { op } => db(&node, op, timeout).await,
        Command::Bench {
            mode,
            n,
            size,
            window,
        } => bench(&node, &seed_node, mode, n, size, window, timeout).await,
    }
}

/// The node configuration the common options describe, listening on `binds`.
fn node_config(c: &Common, binds: Vec<String>, timeout: Duration) -> Result<NodeConfig, String> {
    Ok(NodeConfig {
        node_id: c.nodeid.clone(),
        secret: c.secret.clone().into_bytes(),
        allow_cleartext: c.allow_cleartext,
        binds,
        seeds: Vec::new(),
        dialect: dialect_mode(&c.dialect)?,
        handshake_timeout: timeout,
        connect_timeout: timeout,
        liveness_timeout: (c.liveness > 0.0)
            .then(|| Duration::try_from_secs_f64(c.liveness))
            .transpose()
            .map_err(|e| format!("--liveness {}: {e}", c.liveness))?,
        tls: match &c.cert {
            Some(path) => Some(std::sync::Arc::new(
                aemp::net::tls::TlsSettings::from_pem_file(path).map_err(|e| e.to_string())?,
            )),
            None => None,
        },
        require_tls: c.require_tls,
        ..NodeConfig::default()
    })
}

/// `aemp run`: announces the node and its echo port (and sinks), registers the echo port in the
/// `reg` families, and prints node up/down events until interrupted (the node keeps its seeds
/// linked); with `stdin`, runs the commands read there.
async fn serve(
    node: &Node,
    sinks: &[String],
    stdin: bool,
    reg: &[String],
    seedless: bool,
) -> Result<(), String> {
    // The sinks are made before this task first yields, so before the listeners can have
    // accepted anything: no early message finds them missing.
    for name in sinks {
        start_sink(node, name)?;
    }
    let listen: Vec<String> = node.listeners().iter().map(|a| a.to_string()).collect();
    println!("NODE {} LISTEN {}", node.id(), listen.join(","));
    let echo = start_echo_port(node);
    println!("ECHO {echo}");
    let mut families: Vec<&String> = reg.iter().collect();
    families.sort();
    families.dedup();
    for family in families {
        register(node, family, &echo, seedless)?;
    }
    if stdin {
        actix::spawn(run_commands(node.clone()));
    }
    let mut events = node.node_events();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                // A closed stdout must not take the node down: ignore write errors.
                Ok(ev) if ev.up => say(format_args!("UP {} {}", ev.node, ev.dialect.map_or("", |d| d.name()))),
                Ok(ev) => say(format_args!("DOWN {} {}", ev.node, Value::Array(ev.reason))),
                Err(_) => {}
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `run --reg FAMILY`: registers the echo port in `family` for as long as the node runs, and
/// prints `REG FAMILY <port>` once the master has it (a monitor of the family, mirrored from
/// the master, shows it), or at once on a node without seeds (see `--reg`).
fn register(node: &Node, family: &str, port: &str, seedless: bool) -> Result<(), String> {
    node.db_reg(family, port, &())
        .map_err(|e| format!("--reg {e}"))?
        .detach();
    if seedless {
        say(format_args!("REG {family} {port}"));
        return Ok(());
    }
    let mut mon = node.db_mon(family).map_err(|e| format!("--reg {e}"))?;
    let (family, port) = (family.to_owned(), port.to_owned());
    actix::spawn(async move {
        while mon.next_change().await.is_some() {
            if mon.family().contains_key(&port) {
                say(format_args!("REG {family} {port}"));
                return;
            }
        }
    });
    Ok(())
}

/// An echo port, for checking a node from outside: `[reply, tag, data…]` is answered by
/// sending `[tag, data…]` to `reply`. Returns its port id.
fn start_echo_port(node: &Node) -> String {
    node.rcv()
        .default(|cx, msg| {
            let args = msg.args().map_err(|e| e.to_string())?;
            let Some((reply, rest)) = args.split_first() else {
                return Ok(());
            };
            let reply = reply.as_str().ok_or("echo: reply port is not a string")?;
            cx.node.snd(&reply, rest).map_err(|e| e.to_string())
        })
        .start()
}

/// A port named `name` that prints each message as `RCV <name> <json>`, one write per line.
fn start_sink(node: &Node, name: &str) -> Result<(), String> {
    let label = name.to_owned();
    node.rcv()
        .default(move |_, msg| {
            let args = msg.args().map_err(|e| e.to_string())?;
            say(format_args!("RCV {label} {}", Value::Array(args)));
            Ok(())
        })
        .start_named(name)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `aemp run --stdin`: runs the commands read from standard input until it ends.
async fn run_commands(node: Node) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Err(e) = command(&node, &line).await {
            say(format_args!("ERR {e}"));
        }
    }
}

/// One `--stdin` command: `snd PORT ARG…` or `mon PORT`.
async fn command(node: &Node, line: &str) -> Result<(), String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (None, _) => Ok(()),
        (Some("snd"), Some(port)) => {
            let msg: Vec<Value> = words.map(parse_arg).collect();
            node.send(port, &msg).await.map_err(|e| e.to_string())
        }
        (Some("mon"), Some(port)) => {
            let id = port.to_owned();
            node.mon(port, move |reason| {
                say(format_args!("MON {id} {}", Value::Array(reason)));
            })
            .detach();
            Ok(())
        }
        _ => Err(format!(
            "unknown command {line:?} (snd PORT ARG…, mon PORT)"
        )),
    }
}

/// `aemp snd`: sends the message, then asks the target's node port for a receipt (a `snd`
/// request sent after it on the same link), so success means the target node has it.
async fn send_with_receipt(
    node: &Node,
    port: &str,
    args: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let msg: Vec<Value> = args.iter().map(|a| parse_arg(a)).collect();
    node.snd(port, &msg).map_err(|e| e.to_string())?;
    let (target, _) = aemp::node::split_port_id(port);
    let (reply, mut rx) = node.port_stream();
    node.snd(target, &("snd", reply.id(), "message sent successfully"))
        .map_err(|e| e.to_string())?;
    let _ = wait(&mut rx, timeout)
        .await
        .ok_or("no receipt from the target node")?;
    Ok(())
}

/// `aemp cal`: sends the request with a reply port appended and prints the reply as JSON.
async fn call(node: &Node, port: &str, args: &[String], timeout: Duration) -> Result<(), String> {
    let msg: Vec<Value> = args.iter().map(|a| parse_arg(a)).collect();
    let reply = node
        .cal(port, msg, timeout)
        .await
        .ok_or("no reply (timed out, or the port died)")?;
    println!("{}", Value::Array(reply));
    Ok(())
}

/// `aemp mon`: waits until the port dies and prints the kill reason as JSON.
async fn print_kill_reason(node: &Node, port: &str) -> Result<(), String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.mon(port, move |reason| {
        let _ = tx.send(reason);
    })
    .detach();
    let reason = rx.recv().await.ok_or("monitor lost")?;
    println!("{}", Value::Array(reason));
    Ok(())
}

async fn wait(rx: &mut PortStream, timeout: Duration) -> Option<Message> {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .ok()
        .flatten()
}

/// How long after a refused (or unanswered) connect a seed is dialled again, on top of the
/// node's own back-off (a one-shot command should not wait seconds for a seed that starts).
const SEED_RETRY: Duration = Duration::from_millis(500);

/// Waits for the first seed link (the node dials its seeds itself, see `run`); returns its node
/// id, or the reason none came up.
///
/// A seed that cannot be connected to yet (it may be starting) is dialled again until the
/// timeout, which then reports the last error. A first attempt in another dialect than the
/// seed's is no error here: the node dials again in the seed's dialect (auto mode) and reports
/// only that dial's failure. Any other failure (wrong secret, TLS, a fixed dialect the seed
/// does not speak) ends the wait at once.
async fn connect_seed(
    node: &Node,
    seeds: &[SocketAddr],
    timeout: Duration,
) -> Result<String, String> {
    use tokio::sync::broadcast::error::RecvError;
    if seeds.is_empty() {
        return Err("--seed HOST:PORT is required".into());
    }
    let seed_addrs: Vec<String> = seeds.iter().map(ToString::to_string).collect();
    let mut events = node.node_events();
    let mut errors = node.link_errors();
    // One may be up already.
    if let Some(up) = node.up_nodes().into_iter().next() {
        return Ok(up);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut retry: Option<(tokio::time::Instant, String)> = None;
    let mut last_error = None;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) if ev.up => return Ok(ev.node),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Err("the node stopped".into()),
            },
            err = errors.recv() => match err {
                Ok(err) if !seed_addrs.contains(&err.addr) => {}
                Ok(err) if not_reached(&err.error) => {
                    last_error = Some(err.error.to_string());
                    retry = Some((tokio::time::Instant::now() + SEED_RETRY, err.addr));
                }
                Ok(err) => return Err(err.error.to_string()),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Err("the node stopped".into()),
            },
            () = tokio::time::sleep_until(retry.as_ref().map_or(deadline, |r| r.0)), if retry.is_some() => {
                if let Some((_, addr)) = retry.take() {
                    node.connect(addr);
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(last_error.unwrap_or_else(|| {
                    format!("no link to {} within {timeout:?}", seed_addrs.join(","))
                }));
            }
        }
    }
}

/// `aemp nodes`: the network's address book (from the master on P2, from the 1.x mesh
/// otherwise), each node probed with a `time` request.
async fn print_nodes(node: &Node, timeout: Duration) -> Result<(), String> {
    let mut book = node.known_nodes();
    if node.master().is_some() {
        let family = tokio::time::timeout(timeout, node.db_family("'l"))
            .await
            .map_err(|_| format!("no answer from the master within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        for (id, addrs) in family {
            let addrs = addrs.as_array().map(|a| {
                a.iter()
                    .filter_map(|a| a.as_str().map(|a| a.into_owned()))
                    .collect()
            });
            book.insert(id, addrs.unwrap_or_default());
        }
    } else {
        // 1.x: the seed's helper tells us the nodes it knows right after the link is up.
        tokio::time::sleep(timeout.min(Duration::from_secs(1))).await;
        book.extend(node.known_nodes());
    }
    book.remove(node.id());
    let probes = book.keys().map(|id| {
        let answer = node.cal(id, vec![Value::Str("time".into())], timeout);
        async move { answer.await.is_some() }
    });
    let up = futures_util::future::join_all(probes).await;
    let entries = book.into_iter().zip(up).map(|((id, addrs), up)| {
        let addrs = Value::Array(addrs.into_iter().map(Value::Str).collect());
        let entry = vec![
            ("addrs".to_owned(), addrs),
            ("up".to_owned(), Value::Bool(up)),
        ];
        (id, Value::Map(entry))
    });
    println!("{}", Value::Map(entries.collect()));
    Ok(())
}

/// `aemp db …`: queries of the network's database, answered by the master (the seed), or a
/// monitor of a family that prints each change.
async fn db(node: &Node, op: DbOp, timeout: Duration) -> Result<(), String> {
    let no_answer = |_| format!("no answer from the master within {timeout:?}");
    let line = match op {
        DbOp::Get { family } => {
            let family = tokio::time::timeout(timeout, node.db_family(&family))
                .await
                .map_err(no_answer)?
                .map_err(|e| e.to_string())?;
            Value::Map(family.into_iter().collect())
        }
        DbOp::Keys { family } => {
            let keys = tokio::time::timeout(timeout, node.db_keys(&family))
                .await
                .map_err(no_answer)?
                .map_err(|e| e.to_string())?;
            Value::Array(keys.into_iter().map(Value::Str).collect())
        }
        DbOp::Values { family } => Value::Array(
            tokio::time::timeout(timeout, node.db_values(&family))
                .await
                .map_err(no_answer)?
                .map_err(|e| e.to_string())?,
        ),
        DbOp::Mon { family, count } => return follow(node, &family, count, timeout).await,
    };
    println!("{line}");
    Ok(())
}

/// `aemp db mon`: prints the family as it is, then each change, one JSON line each (see
/// [`DbOp::Mon`]), until `count` lines are out (or forever). The master must answer within
/// `timeout`.
async fn follow(
    node: &Node,
    family: &str,
    count: Option<u64>,
    timeout: Duration,
) -> Result<(), String> {
    use std::io::Write as _;
    let mut mon = node.db_mon(family).map_err(|e| e.to_string())?;
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        let change = if printed == 0 {
            tokio::time::timeout(timeout, mon.next_change())
                .await
                .map_err(|_| format!("no answer from the master within {timeout:?}"))?
        } else {
            mon.next_change().await
        };
        let change = change.ok_or("the node stopped")?;
        let keys = |keys: Vec<String>| Value::Array(keys.into_iter().map(Value::Str).collect());
        let current = mon.family().iter().map(|(k, v)| (k.clone(), v.clone()));
        let line = Value::Map(vec![
            ("family".into(), Value::Map(current.collect())),
            ("added".into(), keys(change.added.into_keys().collect())),
            ("changed".into(), keys(change.changed.into_keys().collect())),
            ("deleted".into(), keys(change.deleted)),
        ]);
        // Unlike `run`'s lines, these are all the command is for: a closed stdout ends it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("standard output: {e}"))?;
        printed += 1;
    }
    Ok(())
}

/// Whether a dial failed before reaching any node (worth trying again while the seed starts).
fn not_reached(error: &TransportError) -> bool {
    matches!(
        error,
        TransportError::Connect { .. } | TransportError::ConnectTimeout { .. }
    )
}

/// `aemp bench`: measures the link to `target` with standard node-port requests and prints one
/// `RESULT` line.
async fn bench(
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
struct BenchRun<'a> {
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
fn print_bench_result(
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
