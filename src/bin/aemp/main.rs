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

mod bench;
mod config;
mod metrics;
mod network;
mod oneshot;
mod serve;
mod trace;

use bench::bench;
use network::{db, print_nodes};
use oneshot::{call, connect_seed, print_kill_reason, send_with_receipt, wait};
use serve::serve;

#[derive(Parser)]
#[command(
    name = "aemp",
    version,
    about = "AEMP (AnyEvent::MP) nodes in Rust",
    after_help = config::HELP
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// The profile of the profile file to take settings from (default: `aemp`; for `run`,
    /// this host's name). Flags given on the command line override it.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Do not read the profile file ($PERL_ANYEVENT_MP_RC, else ~/.perl-anyevent-mp).
    #[arg(long, global = true)]
    norc: bool,
    /// The shared secret [profile: secret].
    #[arg(long, env = "AEMP_SECRET", global = true)]
    secret: Option<String>,
    /// Nodes to dial, in Perl's syntax: HOST:PORT, [V6]:PORT, PORT (this host's name), *:PORT
    /// (this host's interface addresses); a comma-separated list, or repeated. A name dials
    /// every address it resolves to [profile: seeds].
    #[arg(long, global = true)]
    seed: Option<Vec<String>>,
    /// This node's id (`anon/` gets a random suffix) [profile: nodeid; else anon/].
    #[arg(long, global = true)]
    nodeid: Option<String>,
    /// The dialect to speak: auto (answer each dialler in its dialect; dial in p2, and again
    /// in the listener's dialect if it speaks another), or always p0, p1a, p1b or p2.
    #[arg(long, global = true, default_value = "auto")]
    dialect: String,
    /// Seconds to wait for the seed and for answers [default 5; for run, the profile's
    /// monitor_timeout bounds handshakes and connects if this is not given].
    #[arg(long, global = true)]
    timeout: Option<f64>,
    /// Seconds a peer may stay unheard before its link fails (TCP keepalive probes and
    /// TCP_USER_TIMEOUT; whole seconds, at least 2); 0 keeps the OS defaults [profile:
    /// monitor_timeout; default 30].
    #[arg(long, global = true)]
    liveness: Option<f64>,
    /// PEM with this node's private key and certificate (+ CA certificates): offer TLS
    /// [profile: cert].
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
        /// comma-separated list, or repeated [profile: binds; default 127.0.0.1:4040].
        #[arg(long)]
        bind: Option<Vec<String>>,
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
        /// Serve `GET /metrics` (Prometheus text format: link and connection counters) on
        /// HOST:PORT; prints `METRICS <addr>` once listening.
        #[arg(long, value_name = "HOST:PORT")]
        metrics: Option<String>,
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
    /// Print the links of NODE, one `NODE -> PEER` line each, as Perl's `aemp trace` does.
    Trace {
        /// The node id.
        node: String,
        /// Also print the links of the nodes listed, this many levels on.
        #[arg(long, default_value_t = 0)]
        depth: usize,
    },
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
    /// Without flags, `aemp gencert` is Perl's configuration command: it puts a new one into
    /// the profile file.
    Gencert {
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// An RSA-2048 key, as Perl makes (only in builds with the aws-lc-rs feature).
        #[arg(long)]
        rsa: bool,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `aemp completions bash > /etc/bash_completion.d/aemp`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
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
    let words: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Perl's chained configuration commands are read by hand; everything else by clap.
    if words.first().is_some_and(|w| !w.starts_with('-')) {
        match config::json_args(&words) {
            Ok(args) if config::wanted(&args) => {
                return match config::run(args) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("aemp: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            _ => {}
        }
    }
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        use clap::CommandFactory as _;
        clap_complete::generate(*shell, &mut Cli::command(), "aemp", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
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
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("aemp: {e}");
            1
        }
    };
    // Exit here: dropping the runtime would wait for a blocking read of stdin (`run --stdin`)
    // that may never end. The node has shut down and stdout is flushed line by line.
    std::process::exit(code)
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
    let c = &cli.common;
    let (mut config, profile_timeouts) = node_config(c, &cli.command)?;
    let seeds = aemp::net::addr::resolve_all(&config.seeds)
        .await
        .map_err(|e| format!("seed {e}"))?;
    // Seeds are kept (dialled again until they answer); on P2 links the first one up
    // becomes our master, which finds any other node of its network for us.
    config.seeds = seeds.iter().map(ToString::to_string).collect();
    // One-shot commands wait this long; `run` uses it as before unless the profile set
    // monitor_timeout and --timeout was not given.
    let timeout = Duration::from_secs_f64(c.timeout.unwrap_or(5.0).max(0.1));
    if !profile_timeouts {
        config.handshake_timeout = timeout;
        config.connect_timeout = timeout;
    }
    let node = Node::start(config).await.map_err(|e| e.to_string())?;
    if let Command::Run {
        sink,
        stdin,
        reg,
        metrics,
        ..
    } = &cli.command
    {
        return serve(
            &node,
            sink,
            *stdin,
            reg,
            seeds.is_empty(),
            metrics.as_deref(),
        )
        .await;
    }
    let seed_node = match connect_seed(&node, &seeds, timeout).await {
        Ok(seed) => seed,
        Err(e) => {
            node.shutdown().await;
            return Err(e);
        }
    };
    let done = match cli.command {
        Command::Run { .. } | Command::Gencert { .. } | Command::Completions { .. } => Ok(()),
        Command::Snd { port, args } => send_with_receipt(&node, &port, &args, timeout).await,
        Command::Cal { port, args } => call(&node, &port, &args, timeout).await,
        Command::Mon { port } => print_kill_reason(&node, &port).await,
        Command::Nodes => print_nodes(&node, timeout).await,
        Command::Trace {
            node: target,
            depth,
        } => trace::trace(&node, &target, depth, timeout).await,
        Command::Db { op } => db(&node, op, timeout).await,
        Command::Bench {
            mode,
            n,
            size,
            window,
        } => bench(&node, &seed_node, mode, n, size, window, timeout).await,
    };
    // Leave cleanly: what is queued is written and the links close.
    node.shutdown().await;
    done
}

/// The node configuration: the profile file's (profile `--profile`, else this host's name for
/// `run` and `aemp` for the others), then the flags that were given. Also whether the
/// profile's `monitor_timeout` is to bound handshakes and connects.
fn node_config(c: &Common, command: &Command) -> Result<(NodeConfig, bool), String> {
    use aemp::node::ProfileFile;
    use serde_json::{Map, Value as Json};
    let serving = matches!(command, Command::Run { .. });
    let name = match &c.profile {
        Some(name) => name.clone(),
        None if serving => aemp::node::profile::host_name(),
        None => "aemp".into(),
    };
    let file = if c.norc {
        ProfileFile::default()
    } else {
        ProfileFile::load_default().map_err(|e| e.to_string())?
    };
    // What this program would pass to Perl's configure: the file beats it, the flags do not.
    let mut args = Map::new();
    args.insert("nodeid".into(), "anon/".into());
    let binds = if serving {
        vec![Json::from("127.0.0.1:4040")]
    } else {
        Vec::new()
    };
    args.insert("binds".into(), Json::Array(binds));
    let resolved = file
        .resolve(&name, &args, false)
        .map_err(|e| e.to_string())?;
    let mut config = resolved.to_node_config().map_err(|e| e.to_string())?;
    let profile_timeouts = serving
        && c.timeout.is_none()
        && resolved.origin("monitor_timeout") != Some("the built-in defaults");
    match command {
        Command::Run {
            bind: Some(bind), ..
        } => config.binds = bind.clone(),
        Command::Run { .. } => {}
        // A client needs no listener (and must not take the port of a node on this host).
        _ => config.binds = Vec::new(),
    }
    if let Some(id) = &c.nodeid {
        config.node_id = id.clone();
    }
    if let Some(secret) = &c.secret {
        config.secret = secret.clone().into_bytes();
    }
    if let Some(seeds) = &c.seed {
        config.seeds = seeds.clone();
    }
    if let Some(liveness) = c.liveness {
        config.liveness_timeout = (liveness > 0.0)
            .then(|| Duration::try_from_secs_f64(liveness))
            .transpose()
            .map_err(|e| format!("--liveness {liveness}: {e}"))?;
    }
    if let Some(path) = &c.cert {
        config.tls = Some(std::sync::Arc::new(
            aemp::net::tls::TlsSettings::from_pem_file(path).map_err(|e| e.to_string())?,
        ));
    }
    config.dialect = dialect_mode(&c.dialect)?;
    config.allow_cleartext = c.allow_cleartext;
    config.require_tls = c.require_tls;
    Ok((config, profile_timeouts))
}
