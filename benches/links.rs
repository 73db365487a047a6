//! End-to-end benchmark: two aemp node processes over loopback, beside a minimal tokio program
//! that moves the same bytes over one TCP socket (the ceiling).
//!
//! ```sh
//! cargo bench --bench links              # full run: medians of 5 runs per cell, a few minutes
//! cargo bench --bench links -- --quick   # 1 run per cell, smaller N
//! cargo bench --bench links -- --runs 3  # another number of runs per cell
//! cargo bench --bench links -- --typed    # only the typed/raw table
//! cargo bench --bench links -- --typed --typed-n 10000000   # its `send` rows sustained
//! ```
//!
//! The program re-executes itself for every measured process (`--role …`), so each end of
//! each measurement is a separate process: an aemp server node (a counting sink port and an
//! echo port, and for the typed/raw table a raw request port and two exposed typed actors) and
//! an aemp client node, or a tokio server and a tokio client. Children exit when their
//! standard input closes, so none outlives the benchmark.
//!
//! Workloads (payload: a string of `x`s):
//! * **one-way**: the client sends N messages `["m", seq, payload]` with the awaitable
//!   `Node::send`, then an end marker; the receiver counts, and answers the end marker with its
//!   count (checked to be N). Rate = N / time from the first send to that answer.
//! * **ping-pong**: N sequential round trips through an echo port (mean, median, p99 µs and
//!   round trips per second).
//! * **window**: N messages through the echo port with 100 in flight (messages per second).
//!
//! The server's sink and echo ports are plain actors that decode each message's tag into an
//! enum (echo also its sequence number and payload, which it sends back with `Node::snd`); the
//! client receives on a `Node::port_stream`. Links are up (handshake done) before any clock
//! starts.
//!
//! Columns of the table:
//! * `aemp json`: two aemp nodes, dialect P1b (`DialectMode::Fixed`), json framing,
//!   hmac_md6 auth; the server's ports are `Node::port` recipients (`Handler<Message>`).
//! * `aemp stream`: the same with `Node::port_stream` ports (`StreamHandler<Message>`).
//! * `aemp cbor`: as `aemp json` with P2 (cbor framing); only one-way 16 B and window.
//! * `tokio serde`: the ceiling the gate is measured against. A current-thread tokio program,
//!   no actix, no node: the sender encodes the very packet bytes aemp sends
//!   (`["<port>","m",seq,"<payload>"]`, with `aemp::proto::framing::encode_packet`) into a
//!   batch written when it passes 64 KiB (or when nothing more is queued); the receiver cuts
//!   packets with a small bracket/string-aware scanner of its own and decodes each with
//!   serde_json into the types the aemp ports decode (destination borrowed, tag enum, and for
//!   the echo the sequence number and payload, re-encoded into its answer); the client decodes
//!   each answer's tag, as the aemp client does.
//! * `tokio json`: the same bytes, but the receiver only cuts and counts packets (the echo
//!   writes every received packet back unread): what moving the bytes alone costs.
//! * `tokio lp`: the same workloads with length-prefixed frames (u32 big-endian length + the
//!   raw payload, no JSON): a lower bound on what the framing itself costs.
//! * `json/serde`, `json/tokio`, `stream/serde`: aemp divided by a ceiling (for rates below 1
//!   means slower than the ceiling; for latencies above 1 means slower).
//! * `RSS MiB c/s`: peak resident set (VmHWM) of the aemp client and server process, the
//!   largest over the runs of that workload, for json, stream and cbor.
//!
//! MB/s counts payload bytes (1 MB = 10⁶ bytes).
//!
//! Typed/raw table (typed remote actors, `Node::expose` and `PortRef`, against the raw port
//! API): one aemp server process (P1b, json framing, hmac_md6) holds both the raw ports and
//! the typed actors; one client process runs the raw side and the typed side one after the
//! other over the same link (raw first in odd runs, typed first in even runs). Payload 16 B.
//! * **one-way 16 B send**: N × `["m", seq, payload]` to the raw sink with `Node::send`, vs N
//!   `TypedM { seq, payload }` (`#[remote(tag = "m")]`, the same bytes) with `PortRef::send` to
//!   an exposed actor whose `Handler<TypedM>` counts; then the end marker: the raw one as in
//!   one-way, the typed one a request `TypedEnd` (`["end", n, reply_port]`) answered with the
//!   count. Rate = N / time from the first send to that answer. The raw sink reads each
//!   message's tag only; the typed actor's dispatch decodes the fields into a `TypedM` (a
//!   `String` built per message) and the client builds one per message (a `String` clone).
//! * **raw decodes whole** (below each one-way row): the same typed side, against a raw sink
//!   that decodes each message whole, `(tag, seq, payload)`: the same work on both sides.
//! * **one-way 16 B do_send**: the same with the sends that never wait (`Node::snd`,
//!   `PortRef::do_send`); N is kept small enough for the link's 16 MiB send queue.
//! * **request 16 B**: N sequential requests `["m", seq, payload, reply_port]`: `Node::cal` to a
//!   raw `Node::port` actor that answers `[seq, payload]` to the last element, vs
//!   `PortRef::request` of `TypedAsk { seq, payload }` (reply `(u64, String)`) to an exposed
//!   actor that returns them (mean, median, p99 µs from the call to its answer; round trips/s).
//! * **request 16 B (100)**: the same with 100 requests in flight (requests per second).
//!
//! Columns: `raw`, `typed` (medians over the runs) and `typed/raw`, the median of the runs'
//! ratios (each run's two sides share a process pair): for rates below 1 means typed is
//! slower, for latencies above 1 means slower.
//!
//! Link set-up: one client process starts L nodes (`binds: vec![]`, one worker thread each,
//! distinct `anon/…` ids, P1b with a secret, so hmac_md6 without TLS); each sends one message
//! to the server's sink and waits for its answer, which needs a new link. `links/s` = L / time
//! from the first send to the last answer, with at most 64 set-ups in flight (below the
//! listener's accept backlog), and again in a fresh process pair with all L at once (a burst:
//! connections beyond the backlog wait for the kernel's SYN retry). Idle-link memory =
//! (RSS after − RSS before) / L, from the paced run: on the server (it reports its VmRSS on
//! request, through a probe node linked before and after), and on the client both per link
//! (after the links − after starting the nodes) and per node (a worker thread, a registry).
//!
//! Nothing here asserts on timings; a cell that fails (timeout, lost messages) prints `err` and
//! the program exits non-zero at the end.

mod support;
use support::Sample;

use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::ops::Range;
use std::process::{Child, ChildStdin, ExitCode};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, MessageResult, StreamHandler};
use aemp::node::{
    DialectMode, Message, Node, NodeConfig, Port, PortStream, RemoteError, RemoteMessage,
    split_port_id,
};
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{Framing, encode_packet};
use aemp::proto::value::Value;
use bytes::{Buf, BufMut, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt as _};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &[u8] = b"links bench secret";
/// The tokio ceiling's destination: as long as an aemp port name (`<8 chars>.<n>`).
const TOKIO_DEST: &str = "benchsnk.1";
/// The tokio sender writes its batch once it passes this.
const BATCH: usize = 64 * 1024;
/// Messages in flight in the window workload.
const WINDOW: usize = 100;
/// Length-prefix value that marks the end of a one-way run.
const LP_END: u32 = u32::MAX;
/// How long a child may take to start and announce itself.
const STARTUP: Duration = Duration::from_secs(20);
/// How long one reply may take in ping-pong and window.
const REPLY: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // cargo passes `--bench` (and maybe a filter) to harness = false benches: ignore them.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--role") {
        return child_main(args.get(i + 1..).unwrap_or_default());
    }
    parent_main(&args)
}

// ------------------------------------------------------------------------------------------
// Workloads and wire formats

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    OneWay,
    PingPong,
    Window,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::OneWay => "oneway",
            Load::PingPong => "pingpong",
            Load::Window => "window",
        }
    }

    fn parse(s: &str) -> Result<Load, String> {
        match s {
            "oneway" => Ok(Load::OneWay),
            "pingpong" => Ok(Load::PingPong),
            "window" => Ok(Load::Window),
            _ => Err(format!("unknown workload {s:?}")),
        }
    }
}

/// What a message's first element says; unit variants decode from a string without allocating.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Tag {
    M,
    End,
    Count,
    Ping,
    Pong,
    Rss,
    Hello,
}

fn dialect(name: &str) -> Result<Dialect, String> {
    Dialect::from_name(name).ok_or_else(|| format!("unknown dialect {name:?}"))
}

/// `(VmRSS, VmHWM)` of a process in KiB, from `/proc/<pid>/status`.
fn mem_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ------------------------------------------------------------------------------------------
// Child processes

fn child_main(role: &[String]) -> ExitCode {
    // Exit when the parent closes our stdin (or dies): no orphans.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let arg = |i: usize| role.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| {
        arg(i)
            .parse::<usize>()
            .map_err(|_| format!("bad number {:?}", arg(i)))
    };
    let result = (|| -> Result<(), String> {
        match arg(0) {
            "aemp-server" => {
                let (d, stream) = (dialect(arg(1))?, arg(2) == "stream");
                actix::System::new().block_on(aemp_server(d, stream))
            }
            "aemp-client" => {
                let (d, load, n, size) = (dialect(arg(1))?, Load::parse(arg(2))?, num(3)?, num(4)?);
                let (addr, sink, echo) = (arg(5).to_owned(), arg(6).to_owned(), arg(7));
                let out = actix::System::new()
                    .block_on(aemp_client(d, load, n, size, addr, &sink, echo))?;
                let (_, hwm) = mem_kib("self");
                say(&format!("RESULT {out} client_hwm_kib={hwm}"));
                Ok(())
            }
            "aemp-links" => {
                let (l, inflight, addr, sink) = (num(1)?, num(2)?, arg(3).to_owned(), arg(4));
                let out = actix::System::new().block_on(aemp_links(l, inflight, addr, sink))?;
                say(&format!("RESULT {out}"));
                Ok(())
            }
            "aemp-pair" => {
                let (pair, order, n, size) = (Pair::parse(arg(1))?, arg(2), num(3)?, num(4)?);
                if !["raw-first", "typed-first", "raw", "typed"].contains(&order) {
                    return Err(format!("unknown order {order:?}"));
                }
                let addr = arg(5).to_owned();
                let ports = PairPorts {
                    sink: arg(6).to_owned(),
                    cal_echo: arg(7).to_owned(),
                    typed_sink: arg(8).to_owned(),
                    typed_echo: arg(9).to_owned(),
                    field_sink: arg(10).to_owned(),
                };
                let out =
                    actix::System::new().block_on(aemp_pair(pair, order, n, size, addr, &ports))?;
                say(&format!("RESULT {out}"));
                Ok(())
            }
            "tokio-server" => {
                let (lp, serde) = (arg(1) == "lp", arg(1) == "serde");
                let echo = arg(2) == "echo";
                current_thread()?.block_on(tokio_server(lp, serde, echo))
            }
            "tokio-client" => {
                let (lp, serde) = (arg(1) == "lp", arg(1) == "serde");
                let (load, n, size) = (Load::parse(arg(2))?, num(3)?, num(4)?);
                let client = tokio_client(lp, serde, load, n, size, arg(5));
                let out = current_thread()?.block_on(client)?;
                say(&format!("RESULT {out}"));
                Ok(())
            }
            other => Err(format!("unknown role {other:?}")),
        }
    })();
    // Exit at once: nothing is left to flush, and idle actix arbiters need not be joined.
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("links bench {}: {e}", arg(0));
            std::process::exit(1)
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn node_config(d: Dialect, binds: Vec<String>) -> NodeConfig {
    NodeConfig {
        binds,
        dialect: DialectMode::Fixed(d),
        ..NodeConfig::with_secret(SECRET)
    }
}

// ---- aemp server ---------------------------------------------------------------------------

/// Counts `m` messages; answers `end` with the count (and starts over), `ping` with `pong`,
/// `rss` with this process's VmRSS and VmHWM. With `fields`, each message is decoded whole
/// (`(tag, seq, payload)`, as a typed actor's handler receives it) instead of by its tag only.
struct Sink {
    node: Node,
    count: u64,
    fields: bool,
    _port: Option<Port>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Message> for Sink {
    type Result = ();
    fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
        self.take(msg);
    }
}

impl StreamHandler<Message> for Sink {
    fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
        self.take(msg);
    }
}

impl Sink {
    fn take(&mut self, msg: Message) {
        let tag = if self.fields {
            msg.decode::<(Tag, u64, String)>()
                .map(|m| std::hint::black_box(m).0)
        } else {
            msg.decode::<(Tag, IgnoredAny, IgnoredAny)>().map(|m| m.0)
        };
        let tag = match tag {
            Ok(tag) => tag,
            Err(e) => return eprintln!("sink: bad message: {e}"),
        };
        if tag == Tag::M {
            self.count += 1;
            return;
        }
        let (arg, reply) = match msg.decode::<(Tag, u64, String)>() {
            Ok((_, arg, reply)) => (arg, reply),
            Err(e) => return eprintln!("sink: bad request: {e}"),
        };
        let sent = match tag {
            Tag::End => {
                let count = std::mem::take(&mut self.count);
                self.node.snd(&reply, &("count", count, ""))
            }
            Tag::Ping => self.node.snd(&reply, &("pong", arg, "")),
            Tag::Rss => {
                let (rss, hwm) = mem_kib("self");
                self.node.snd(&reply, &("rss", rss, hwm))
            }
            _ => return eprintln!("sink: unexpected {tag:?}"),
        };
        if let Err(e) = sent {
            eprintln!("sink: cannot answer: {e}");
        }
    }
}

/// `hello` names the reply port (answered with `hello`); every `m` goes back there unchanged.
struct Echo {
    node: Node,
    reply: String,
    _port: Option<Port>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Message> for Echo {
    type Result = ();
    fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
        self.take(msg);
    }
}

impl StreamHandler<Message> for Echo {
    fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
        self.take(msg);
    }
}

impl Echo {
    fn take(&mut self, msg: Message) {
        let (tag, seq, data) = match msg.decode::<(Tag, u64, String)>() {
            Ok(m) => m,
            Err(e) => return eprintln!("echo: bad message: {e}"),
        };
        let sent = match tag {
            Tag::M => self.node.snd(&self.reply, &("m", seq, data)),
            Tag::Hello => {
                self.reply = data;
                self.node.snd(&self.reply, &("hello", seq, ""))
            }
            _ => return eprintln!("echo: unexpected {tag:?}"),
        };
        if let Err(e) = sent {
            eprintln!("echo: cannot answer: {e}");
        }
    }
}

/// The raw request port of the typed/raw pairs: `["m", seq, payload, reply_port]` (what
/// `Node::cal` sends) is answered with `[seq, payload]` on the reply port.
struct CalEcho {
    node: Node,
    _port: Option<Port>,
}

impl Actor for CalEcho {
    type Context = Context<Self>;
}

impl Handler<Message> for CalEcho {
    type Result = ();
    fn handle(&mut self, msg: Message, _: &mut Context<Self>) {
        let (seq, data, reply) = match msg.decode::<(Tag, u64, String, String)>() {
            Ok((Tag::M, seq, data, reply)) => (seq, data, reply),
            Ok((tag, ..)) => return eprintln!("cal echo: unexpected {tag:?}"),
            Err(e) => return eprintln!("cal echo: bad message: {e}"),
        };
        if let Err(e) = self.node.snd(&reply, &(seq, data)) {
            eprintln!("cal echo: cannot answer: {e}");
        }
    }
}

/// A typed one-way message: `["m", seq, payload]`, the same bytes as the raw one-way's.
#[derive(Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "m")]
struct TypedM {
    seq: u64,
    payload: String,
}

/// The typed end marker: `["end", n, reply_port]`, answered with the count `[count]`.
#[derive(Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "end", reply = u64)]
struct TypedEnd {
    n: u64,
}

/// A typed request: `["m", seq, payload, reply_port]` (the bytes `Node::cal` sends to
/// [`CalEcho`]), answered with `[seq, payload]`.
#[derive(Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "m", reply = (u64, String))]
struct TypedAsk {
    seq: u64,
    payload: String,
}

/// The typed sink: counts [`TypedM`]s, answers [`TypedEnd`] with the count (and starts over).
struct TypedSink {
    count: u64,
}

impl Actor for TypedSink {
    type Context = Context<Self>;
}

impl Handler<TypedM> for TypedSink {
    type Result = ();
    fn handle(&mut self, _: TypedM, _: &mut Context<Self>) {
        self.count += 1;
    }
}

impl Handler<TypedEnd> for TypedSink {
    type Result = u64;
    fn handle(&mut self, _: TypedEnd, _: &mut Context<Self>) -> u64 {
        std::mem::take(&mut self.count)
    }
}

/// The typed echo: answers [`TypedAsk`] with its sequence number and payload.
struct TypedEcho;

impl Actor for TypedEcho {
    type Context = Context<Self>;
}

impl Handler<TypedAsk> for TypedEcho {
    type Result = MessageResult<TypedAsk>;
    fn handle(&mut self, ask: TypedAsk, _: &mut Context<Self>) -> Self::Result {
        MessageResult((ask.seq, ask.payload))
    }
}

/// Starts a [`Sink`] (reading each message whole with `fields`) on a port stream (`stream`) or
/// an actor port; returns its port id.
fn start_sink(node: &Node, stream: bool, fields: bool) -> String {
    let mut id = String::new();
    Sink::create(|ctx| {
        let port = if stream {
            let (port, messages) = node.port_stream();
            ctx.add_stream(messages);
            port
        } else {
            node.port(ctx.address().recipient())
        };
        id = port.id().to_owned();
        Sink {
            node: node.clone(),
            count: 0,
            fields,
            _port: Some(port),
        }
    });
    id
}

/// With `stream`, the ports are `Node::port_stream` streams added to the actors
/// (`StreamHandler`) instead of `Node::port` recipients (`Handler`). Beside them, for the
/// typed/raw pairs: a raw request port ([`CalEcho`], a `Node::port` actor), a raw sink that
/// reads messages whole and two exposed typed actors ([`TypedSink`], [`TypedEcho`]).
async fn aemp_server(d: Dialect, stream: bool) -> Result<(), String> {
    let node = Node::start(node_config(d, vec!["127.0.0.1:0".into()]))
        .await
        .map_err(|e| e.to_string())?;
    let sink_id = start_sink(&node, stream, false);
    let field_sink_id = start_sink(&node, false, true);
    let mut echo_id = String::new();
    Echo::create(|ctx| {
        let port = if stream {
            let (port, messages) = node.port_stream();
            ctx.add_stream(messages);
            port
        } else {
            node.port(ctx.address().recipient())
        };
        echo_id = port.id().to_owned();
        Echo {
            node: node.clone(),
            reply: String::new(),
            _port: Some(port),
        }
    });
    let mut cal_echo_id = String::new();
    CalEcho::create(|ctx| {
        let port = node.port(ctx.address().recipient());
        cal_echo_id = port.id().to_owned();
        CalEcho {
            node: node.clone(),
            _port: Some(port),
        }
    });
    // The ports live as long as these handles, that is until the process ends.
    let typed_sink = node
        .expose(TypedSink { count: 0 }.start())
        .tell::<TypedM>()
        .request::<TypedEnd>()
        .start();
    let typed_echo = node.expose(TypedEcho.start()).request::<TypedAsk>().start();
    let addr = node.listeners().first().copied().ok_or("no listener")?;
    say(&format!("LISTEN {addr}"));
    say(&format!("SINK {sink_id}"));
    say(&format!("ECHO {echo_id}"));
    say(&format!("CALECHO {cal_echo_id}"));
    say(&format!("TSINK {}", typed_sink.id()));
    say(&format!("TECHO {}", typed_echo.id()));
    say(&format!("FSINK {field_sink_id}"));
    // Runs until the parent closes stdin.
    std::future::pending::<()>().await;
    Ok(())
}

// ---- aemp client ---------------------------------------------------------------------------

/// The next message on a reply port, as `(tag, number)`.
async fn reply(rx: &mut PortStream, within: Duration) -> Result<(Tag, u64), String> {
    let msg = tokio::time::timeout(within, rx.recv())
        .await
        .map_err(|_| format!("no reply within {within:?}"))?
        .ok_or("reply port closed")?;
    msg.decode::<(Tag, u64, IgnoredAny)>()
        .map(|(t, n, _)| (t, n))
        .map_err(|e| format!("bad reply: {e}"))
}

/// Generous time for a whole workload of `n` messages.
fn workload_limit(n: usize, size: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_micros(50 + size as u64 / 20) * n as u32
}

async fn aemp_client(
    d: Dialect,
    load: Load,
    n: usize,
    size: usize,
    addr: String,
    sink: &str,
    echo: &str,
) -> Result<String, String> {
    let node = Node::start(node_config(d, Vec::new()))
        .await
        .map_err(|e| e.to_string())?;
    let (server, _) = split_port_id(sink);
    node.add_node_addresses(server, vec![addr]);
    let (me, mut rx) = node.port_stream();
    let me = me.id().to_owned();
    let err = |e: aemp::node::NodeError| e.to_string();
    // Link up (handshake) before any clock starts.
    node.send(sink, &("end", 0, &me)).await.map_err(err)?;
    match reply(&mut rx, STARTUP).await? {
        (Tag::Count, 0) => {}
        other => return Err(format!("unexpected warm-up answer {other:?}")),
    }
    let payload = "x".repeat(size);
    let run = async {
        match load {
            Load::OneWay => {
                let t = Instant::now();
                for seq in 0..n as u64 {
                    node.send(sink, &("m", seq, payload.as_str()))
                        .await
                        .map_err(err)?;
                }
                node.send(sink, &("end", n, &me)).await.map_err(err)?;
                let (tag, count) = reply(&mut rx, workload_limit(n, size)).await?;
                let secs = t.elapsed().as_secs_f64();
                if tag != Tag::Count || count != n as u64 {
                    return Err(format!(
                        "the sink counted {count} of {n} messages ({tag:?})"
                    ));
                }
                Ok(format!("rate={}", n as f64 / secs))
            }
            Load::PingPong | Load::Window => {
                node.send(echo, &("hello", 0, &me)).await.map_err(err)?;
                if reply(&mut rx, STARTUP).await?.0 != Tag::Hello {
                    return Err("the echo port did not say hello".into());
                }
                let window = if load == Load::Window { WINDOW } else { 1 };
                let mut sent_at = None;
                let mut rtts = Vec::with_capacity(if window == 1 { n } else { 0 });
                let t = Instant::now();
                let mut sent = 0u64;
                for seq in 0..n as u64 {
                    while sent < n as u64 && sent < seq + window as u64 {
                        if window == 1 {
                            sent_at = Some(Instant::now());
                        }
                        node.send(echo, &("m", sent, payload.as_str()))
                            .await
                            .map_err(err)?;
                        sent += 1;
                    }
                    let (tag, got) = reply(&mut rx, REPLY).await?;
                    if tag != Tag::M || got != seq {
                        return Err(format!("echo answered {tag:?} {got}, expected m {seq}"));
                    }
                    if let Some(at) = sent_at.take() {
                        rtts.push(at.elapsed());
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                Ok(format!("rate={} {}", n as f64 / secs, latency_fields(rtts)))
            }
        }
    };
    tokio::time::timeout(workload_limit(n, size), run)
        .await
        .map_err(|_| format!("{} of {n} messages did not finish in time", load.name()))?
}

// ---- typed/raw pairs -----------------------------------------------------------------------

/// A typed/raw pair: the same workload through raw ports and through typed actors.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pair {
    /// One-way with the awaitable sends: `Node::send` / `PortRef::send`.
    Send,
    /// One-way with the sends that never wait: `Node::snd` / `PortRef::do_send`.
    DoSend,
    /// As `Send`, with a raw sink that decodes each message whole as the typed actor gets it
    /// (the same work on both sides; `Send`'s raw sink reads the tag only).
    SendDecoded,
    /// As `DoSend`, with the raw sink of `SendDecoded`.
    DoSendDecoded,
    /// Sequential requests: `Node::cal` / `PortRef::request`.
    Call,
    /// Requests with [`WINDOW`] in flight.
    CallWindow,
}

impl Pair {
    fn name(self) -> &'static str {
        match self {
            Pair::Send => "send",
            Pair::SendDecoded => "send_decoded",
            Pair::DoSendDecoded => "do_send_decoded",
            Pair::DoSend => "do_send",
            Pair::Call => "call",
            Pair::CallWindow => "callwindow",
        }
    }

    fn parse(s: &str) -> Result<Pair, String> {
        match s {
            "send" => Ok(Pair::Send),
            "send_decoded" => Ok(Pair::SendDecoded),
            "do_send_decoded" => Ok(Pair::DoSendDecoded),
            "do_send" => Ok(Pair::DoSend),
            "call" => Ok(Pair::Call),
            "callwindow" => Ok(Pair::CallWindow),
            _ => Err(format!("unknown pair {s:?}")),
        }
    }
}

/// The server's ports a pair client talks to.
struct PairPorts {
    sink: String,
    cal_echo: String,
    typed_sink: String,
    typed_echo: String,
    /// The raw sink that decodes whole messages.
    field_sink: String,
}

/// Runs the raw and the typed side of `pair` one after the other in this process, over one
/// link (`order`: `raw-first` or `typed-first`; `raw` or `typed` runs that side alone), and
/// reports each side's fields prefixed with `raw_` and `typed_`.
async fn aemp_pair(
    pair: Pair,
    order: &str,
    n: usize,
    size: usize,
    addr: String,
    ports: &PairPorts,
) -> Result<String, String> {
    let node = Node::start(node_config(Dialect::P1b, Vec::new()))
        .await
        .map_err(|e| e.to_string())?;
    let (server, _) = split_port_id(&ports.sink);
    node.add_node_addresses(server, vec![addr]);
    let (me, mut rx) = node.port_stream();
    let me = me.id().to_owned();
    let err = |e: aemp::node::NodeError| e.to_string();
    let rerr = |e: RemoteError| e.to_string();
    let typed_m = node.port_ref::<TypedM>(&ports.typed_sink);
    let typed_end = node
        .port_ref::<TypedEnd>(&ports.typed_sink)
        .with_timeout(workload_limit(n, size));
    let typed_ask = node
        .port_ref::<TypedAsk>(&ports.typed_echo)
        .with_timeout(REPLY);
    // Link up (handshake) and every port answering before any clock starts.
    node.send(&ports.sink, &("end", 0, &me))
        .await
        .map_err(err)?;
    match reply(&mut rx, STARTUP).await? {
        (Tag::Count, 0) => {}
        other => return Err(format!("unexpected warm-up answer {other:?}")),
    }
    if typed_end.request(TypedEnd { n: 0 }).await.map_err(rerr)? != 0 {
        return Err("the typed sink counted messages before the run".into());
    }
    let payload = "x".repeat(size);
    let raw_call = |seq: u64| {
        let args = vec![
            Value::from("m"),
            Value::Int(seq as i64),
            Value::from(payload.as_str()),
        ];
        let answer = node.cal(&ports.cal_echo, args, REPLY);
        async move {
            let got = answer.await.map_err(rerr)?;
            match got.as_slice() {
                [seq, Value::Str(_)] => seq.as_u64().ok_or_else(|| format!("bad answer {got:?}")),
                _ => Err(format!("bad answer {got:?}")),
            }
        }
    };
    let typed_call = |seq: u64| {
        let answer = typed_ask.request(TypedAsk {
            seq,
            payload: payload.clone(),
        });
        async move { answer.await.map(|(seq, _)| seq).map_err(rerr) }
    };
    raw_call(0).await?;
    typed_call(0).await?;

    let raw = async {
        match pair {
            Pair::Send | Pair::SendDecoded | Pair::DoSend | Pair::DoSendDecoded => {
                let sink = match pair {
                    Pair::SendDecoded | Pair::DoSendDecoded => &ports.field_sink,
                    _ => &ports.sink,
                };
                let do_send = matches!(pair, Pair::DoSend | Pair::DoSendDecoded);
                let t = Instant::now();
                for seq in 0..n as u64 {
                    let m = ("m", seq, payload.as_str());
                    if do_send {
                        node.snd(sink, &m).map_err(err)?;
                    } else {
                        node.send(sink, &m).await.map_err(err)?;
                    }
                }
                node.send(sink, &("end", n, &me)).await.map_err(err)?;
                let (tag, count) = reply(&mut rx, workload_limit(n, size)).await?;
                let secs = t.elapsed().as_secs_f64();
                if tag != Tag::Count || count != n as u64 {
                    return Err(format!(
                        "the sink counted {count} of {n} messages ({tag:?})"
                    ));
                }
                Ok(format!("rate={}", n as f64 / secs))
            }
            Pair::Call => calls(n, 1, raw_call).await,
            Pair::CallWindow => calls(n, WINDOW, raw_call).await,
        }
    };
    let typed = async {
        match pair {
            Pair::Send | Pair::SendDecoded | Pair::DoSend | Pair::DoSendDecoded => {
                let t = Instant::now();
                for seq in 0..n as u64 {
                    let m = TypedM {
                        seq,
                        payload: payload.clone(),
                    };
                    if matches!(pair, Pair::DoSend | Pair::DoSendDecoded) {
                        typed_m.do_send(m).map_err(rerr)?;
                    } else {
                        typed_m.send(m).await.map_err(rerr)?;
                    }
                }
                let count = typed_end
                    .request(TypedEnd { n: n as u64 })
                    .await
                    .map_err(rerr)?;
                let secs = t.elapsed().as_secs_f64();
                if count != n as u64 {
                    return Err(format!("the typed sink counted {count} of {n} messages"));
                }
                Ok(format!("rate={}", n as f64 / secs))
            }
            Pair::Call => calls(n, 1, typed_call).await,
            Pair::CallWindow => calls(n, WINDOW, typed_call).await,
        }
    };
    let prefixed = |side: &str, fields: String| {
        fields
            .split_whitespace()
            .map(|kv| format!("{side}_{kv}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let limit = workload_limit(n, size);
    let late = |side: &str| format!("{side} {} of {n} did not finish in time", pair.name());
    // Either side alone (`raw`, `typed` as the order) is for profiling one of them.
    let (run_raw, run_typed) = (order != "typed", order != "raw");
    let typed_first = order == "typed-first";
    let mut typed = Some(typed);
    let mut typed_out = String::new();
    if typed_first
        && run_typed
        && let Some(typed) = typed.take()
    {
        typed_out = tokio::time::timeout(limit, typed)
            .await
            .map_err(|_| late("typed"))??;
    }
    let mut raw_out = String::new();
    if run_raw {
        raw_out = tokio::time::timeout(limit, raw)
            .await
            .map_err(|_| late("raw"))??;
    }
    if run_typed && let Some(typed) = typed.take() {
        typed_out = tokio::time::timeout(limit, typed)
            .await
            .map_err(|_| late("typed"))??;
    }
    let (raw, typed) = (raw_out, typed_out);
    Ok(format!(
        "{} {}",
        prefixed("raw", raw),
        prefixed("typed", typed)
    ))
}

/// `n` requests made by `call(seq)` (whose answer is the sequence number echoed), `window` in
/// flight, answers checked in order: `rate=…`, and with a window of 1 the latency fields.
async fn calls<F, Fut>(n: usize, window: usize, mut call: F) -> Result<String, String>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    let mut inflight = FuturesOrdered::new();
    let mut rtts = Vec::with_capacity(if window == 1 { n } else { 0 });
    let t = Instant::now();
    let mut sent = 0u64;
    for seq in 0..n as u64 {
        while sent < n as u64 && sent < seq + window as u64 {
            let at = Instant::now();
            let answer = call(sent);
            inflight.push_back(async move { (answer.await, at) });
            sent += 1;
        }
        let (got, at) = inflight.next().await.ok_or("no request in flight")?;
        let got = got?;
        if got != seq {
            return Err(format!("request {seq} was answered with {got}"));
        }
        if window == 1 {
            rtts.push(at.elapsed());
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(format!("rate={} {}", n as f64 / secs, latency_fields(rtts)))
}

/// `mean_us=… median_us=… p99_us=…` of round-trip times (nothing when there are none).
fn latency_fields(mut rtts: Vec<Duration>) -> String {
    if rtts.is_empty() {
        return String::new();
    }
    rtts.sort();
    let us = |d: &Duration| d.as_secs_f64() * 1e6;
    let mean = rtts.iter().map(us).sum::<f64>() / rtts.len() as f64;
    let pick = |q: f64| {
        rtts.get(((rtts.len() - 1) as f64 * q).round() as usize)
            .map_or(0.0, us)
    };
    format!(
        "mean_us={mean} median_us={} p99_us={}",
        pick(0.5),
        pick(0.99)
    )
}

// ---- link set-up ---------------------------------------------------------------------------

/// Links `l` fresh nodes to the server's node, at most `inflight` set-ups at a time.
async fn aemp_links(l: usize, inflight: usize, addr: String, sink: &str) -> Result<String, String> {
    let (server, _) = split_port_id(sink);
    let err = |e: aemp::node::NodeError| e.to_string();
    let config = || NodeConfig {
        workers: 1,
        ..node_config(Dialect::P1b, Vec::new())
    };
    // The probe links first, so the server's "before" already counts one link.
    let probe = Node::start(config()).await.map_err(err)?;
    probe.add_node_addresses(server, vec![addr.clone()]);
    let (probe_port, mut probe_rx) = probe.port_stream();
    let server_before = server_rss(&probe, sink, &probe_port, &mut probe_rx).await?;
    settle().await;
    let client_before = mem_kib("self").0;
    let mut nodes = Vec::with_capacity(l);
    for _ in 0..l {
        let node = Node::start(config()).await.map_err(err)?;
        node.add_node_addresses(server, vec![addr.clone()]);
        let (port, rx) = node.port_stream();
        nodes.push((node, port, rx));
    }
    settle().await;
    let client_nodes = mem_kib("self").0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60) + REPLY * (l as u32 / 50);
    let t = Instant::now();
    let mut answered = 0;
    for i in 0..l {
        // Answers are awaited in order: a slow set-up holds back the next ones.
        if i - answered >= inflight.max(1) {
            pong(&mut nodes, answered, deadline).await?;
            answered += 1;
        }
        if let Some((node, port, _)) = nodes.get(i) {
            node.snd(sink, &("ping", i, port.id())).map_err(err)?;
        }
    }
    while answered < l {
        pong(&mut nodes, answered, deadline).await?;
        answered += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let up = nodes
        .iter()
        .filter(|(node, _, _)| node.up_nodes().iter().any(|n| n == server))
        .count();
    if up != l {
        return Err(format!("only {up} of {l} links are up after the answers"));
    }
    settle().await;
    let client_links = mem_kib("self").0;
    let server_after = server_rss(&probe, sink, &probe_port, &mut probe_rx).await?;
    Ok(format!(
        "links_per_s={} server_before_kib={server_before} server_after_kib={server_after} \
         client_before_kib={client_before} client_nodes_kib={client_nodes} client_links_kib={client_links}",
        l as f64 / secs
    ))
}

/// Waits for the sink's answer on node `i`'s reply port.
async fn pong(
    nodes: &mut [(Node, Port, PortStream)],
    i: usize,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let l = nodes.len();
    let (_, _, rx) = nodes.get_mut(i).ok_or("no such node")?;
    let msg = tokio::time::timeout_at(deadline, rx.recv())
        .await
        .map_err(|_| format!("link {i} of {l}: no answer in time"))?
        .ok_or("reply port closed")?;
    match msg.decode::<(Tag, u64, IgnoredAny)>() {
        Ok((Tag::Pong, n, _)) if n == i as u64 => Ok(()),
        other => Err(format!("link {i}: unexpected answer {other:?}")),
    }
}

/// The server's VmRSS in KiB, asked through the probe node.
async fn server_rss(
    probe: &Node,
    sink: &str,
    port: &Port,
    rx: &mut PortStream,
) -> Result<u64, String> {
    probe
        .snd(sink, &("rss", 0, port.id()))
        .map_err(|e| e.to_string())?;
    let msg = tokio::time::timeout(REPLY, rx.recv())
        .await
        .map_err(|_| "the server did not report its RSS")?
        .ok_or("probe port closed")?;
    match msg.decode::<(Tag, u64, u64)>() {
        Ok((Tag::Rss, rss, _)) => Ok(rss),
        other => Err(format!("unexpected RSS answer {other:?}")),
    }
}

/// Lets freshly started threads and sockets settle before RSS is read.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

// ---- tokio ceiling -------------------------------------------------------------------------

/// Cuts complete packets out of a receive buffer: JSON arrays found by tracking only brackets
/// and strings, or u32 length-prefixed frames. Keeps its place across reads.
#[derive(Default)]
struct Cutter {
    lp: bool,
    pos: usize,
    start: usize,
    depth: u32,
    in_str: bool,
    escaped: bool,
}

impl Cutter {
    /// The next complete packet in `buf`.
    fn next(&mut self, buf: &[u8]) -> Option<Range<usize>> {
        if self.lp {
            let head = buf.get(self.pos..self.pos + 4)?;
            let len = u32::from_be_bytes(head.try_into().ok()?);
            let end = self.pos + 4 + if len == LP_END { 0 } else { len as usize };
            if buf.len() < end {
                return None;
            }
            let start = std::mem::replace(&mut self.pos, end);
            return Some(start..end);
        }
        while let Some(&b) = buf.get(self.pos) {
            self.pos += 1;
            if self.in_str {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'[' | b'{' => {
                    if self.depth == 0 {
                        self.start = self.pos - 1;
                    }
                    self.depth += 1;
                }
                b']' | b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(self.start..self.pos);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Drops what was consumed from the front of `buf`.
    fn compact(&mut self, buf: &mut BytesMut) {
        let cut = if self.depth > 0 { self.start } else { self.pos };
        buf.advance(cut);
        self.pos -= cut;
        self.start = self.start.saturating_sub(cut);
    }
}

/// Appends one message in the wire format: the aemp json packet, or length + raw payload.
fn put_message(lp: bool, seq: u64, payload: &str, out: &mut BytesMut) -> Result<(), String> {
    if lp {
        out.put_u32(payload.len() as u32);
        out.put_slice(payload.as_bytes());
        return Ok(());
    }
    encode_packet(Framing::Json, TOKIO_DEST, &("m", seq, payload), out).map_err(|e| e.to_string())
}

fn end_marker(lp: bool) -> BytesMut {
    let mut out = BytesMut::new();
    if lp {
        out.put_u32(LP_END);
    } else if let Err(e) = encode_packet(Framing::Json, TOKIO_DEST, &("end", 0, ""), &mut out) {
        unreachable!("the end marker encodes: {e}");
    }
    out
}

/// A json packet decoded the way the aemp ports decode it: the destination borrowed (as the
/// transport reads it), then the tag, and the sequence number and payload when `full`.
fn decode_packet(packet: &[u8], full: bool) -> Result<(Tag, u64, String), String> {
    let bad = |e: serde_json::Error| format!("bad packet: {e}");
    if full {
        let (_, tag, seq, data) =
            serde_json::from_slice::<(&str, Tag, u64, String)>(packet).map_err(bad)?;
        return Ok((tag, seq, data));
    }
    let (_, tag, _, _) =
        serde_json::from_slice::<(&str, Tag, IgnoredAny, IgnoredAny)>(packet).map_err(bad)?;
    Ok((tag, 0, String::new()))
}

/// Accepts one connection; counts packets until the end marker and answers the count (u64
/// little-endian), or writes every complete packet back. With `serde`, every packet is decoded
/// as the aemp sink and echo ports decode it, and the echo encodes its answer anew.
async fn tokio_server(lp: bool, serde: bool, echo: bool) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    say(&format!("LISTEN {}", listener.local_addr().map_err(io)?));
    let (mut sock, _) = listener.accept().await.map_err(io)?;
    sock.set_nodelay(true).map_err(io)?;
    let end = end_marker(lp);
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut out = BytesMut::with_capacity(256 * 1024);
    let mut cut = Cutter {
        lp,
        ..Cutter::default()
    };
    let mut count = 0u64;
    loop {
        if sock.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Ok(());
        }
        if echo && serde {
            while let Some(p) = cut.next(&buf) {
                let (_, seq, data) = decode_packet(&buf[p], true)?;
                encode_packet(Framing::Json, TOKIO_DEST, &("m", seq, data), &mut out)
                    .map_err(|e| e.to_string())?;
            }
            if !out.is_empty() {
                sock.write_all(&out).await.map_err(io)?;
                out.clear();
            }
        } else if echo {
            let mut last = 0;
            while let Some(p) = cut.next(&buf) {
                last = p.end;
            }
            if last > 0 {
                sock.write_all(&buf[..last]).await.map_err(io)?;
            }
        } else {
            while let Some(p) = cut.next(&buf) {
                let is_end = if serde {
                    decode_packet(&buf[p], false)?.0 == Tag::End
                } else {
                    buf[p] == end[..]
                };
                if is_end {
                    sock.write_u64_le(count).await.map_err(io)?;
                    count = 0;
                } else {
                    count += 1;
                }
            }
        }
        cut.compact(&mut buf);
    }
}

async fn tokio_client(
    lp: bool,
    serde: bool,
    load: Load,
    n: usize,
    size: usize,
    addr: &str,
) -> Result<String, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut sock = TcpStream::connect(addr).await.map_err(io)?;
    sock.set_nodelay(true).map_err(io)?;
    let payload = "x".repeat(size);
    let mut out = BytesMut::with_capacity(BATCH + size + 64);
    let mut inb = BytesMut::with_capacity(256 * 1024);
    let mut cut = Cutter {
        lp,
        ..Cutter::default()
    };
    let run = async {
        match load {
            Load::OneWay => {
                let t = Instant::now();
                for seq in 0..n as u64 {
                    put_message(lp, seq, &payload, &mut out)?;
                    if out.len() >= BATCH {
                        sock.write_all(&out).await.map_err(io)?;
                        out.clear();
                    }
                }
                out.extend_from_slice(&end_marker(lp));
                sock.write_all(&out).await.map_err(io)?;
                let count = sock.read_u64_le().await.map_err(io)?;
                let secs = t.elapsed().as_secs_f64();
                if count != n as u64 {
                    return Err(format!("the receiver counted {count} of {n} packets"));
                }
                Ok(format!("rate={}", n as f64 / secs))
            }
            Load::PingPong => {
                let mut rtts = Vec::with_capacity(n);
                let t = Instant::now();
                for seq in 0..n as u64 {
                    let at = Instant::now();
                    put_message(lp, seq, &payload, &mut out)?;
                    sock.write_all(&out).await.map_err(io)?;
                    out.clear();
                    let p = loop {
                        if let Some(p) = cut.next(&inb) {
                            break p;
                        }
                        let read = tokio::time::timeout(REPLY, sock.read_buf(&mut inb));
                        if read.await.map_err(|_| "no echo in time")?.map_err(io)? == 0 {
                            return Err("the echo server closed".into());
                        }
                    };
                    if serde {
                        decode_packet(&inb[p], false)?;
                    }
                    cut.compact(&mut inb);
                    rtts.push(at.elapsed());
                }
                let secs = t.elapsed().as_secs_f64();
                Ok(format!("rate={} {}", n as f64 / secs, latency_fields(rtts)))
            }
            Load::Window => {
                let t = Instant::now();
                let mut sent = 0u64;
                let mut got = 0u64;
                while got < n as u64 {
                    while sent < n as u64 && sent < got + WINDOW as u64 {
                        put_message(lp, sent, &payload, &mut out)?;
                        sent += 1;
                    }
                    if !out.is_empty() {
                        sock.write_all(&out).await.map_err(io)?;
                        out.clear();
                    }
                    let read = tokio::time::timeout(REPLY, sock.read_buf(&mut inb));
                    if read.await.map_err(|_| "no echo in time")?.map_err(io)? == 0 {
                        return Err("the echo server closed".into());
                    }
                    while let Some(p) = cut.next(&inb) {
                        if serde {
                            decode_packet(&inb[p], false)?;
                        }
                        got += 1;
                    }
                    cut.compact(&mut inb);
                }
                let secs = t.elapsed().as_secs_f64();
                Ok(format!("rate={}", n as f64 / secs))
            }
        }
    };
    tokio::time::timeout(workload_limit(n, size), run)
        .await
        .map_err(|_| format!("{} of {n} messages did not finish in time", load.name()))?
}

// ------------------------------------------------------------------------------------------
// The parent: runs every cell, prints the table

/// A child process we spawned; dropping it closes its stdin (it exits), else kills it by PID.
struct Proc {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std_mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(what: &str, role: &[&str]) -> Result<Proc, String> {
        let args: Vec<&str> = std::iter::once("--role")
            .chain(role.iter().copied())
            .collect();
        let (child, stdin, lines) = support::spawn_self(what, &args)?;
        Ok(Proc {
            what: what.into(),
            child,
            stdin,
            lines,
        })
    }

    /// The rest of the first line starting with `prefix`, within `within`.
    fn line(&mut self, prefix: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{}: no {prefix:?} line within {within:?}",
                        self.what
                    ));
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.exit_status();
                    return Err(format!(
                        "{} closed its output before printing {prefix:?} ({}; see its stderr above)",
                        self.what, status
                    ));
                }
            }
        }
    }

    /// How the child ended, waiting a little for it.
    fn exit_status(&mut self) -> String {
        for _ in 0..300 {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return e.to_string(),
            }
        }
        "still running".into()
    }

    fn hwm_kib(&self) -> u64 {
        mem_kib(&self.child.id().to_string()).1
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        support::stop_child(&mut self.child, self.stdin.take(), Duration::from_secs(3));
    }
}

/// What runs in a cell.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    AempJson,
    AempStream,
    AempCbor,
    TokioJson,
    TokioSerde,
    TokioLp,
}

impl Impl {
    const ALL: [Impl; 6] = [
        Impl::AempJson,
        Impl::AempStream,
        Impl::AempCbor,
        Impl::TokioSerde,
        Impl::TokioJson,
        Impl::TokioLp,
    ];

    fn name(self) -> &'static str {
        match self {
            Impl::AempJson => "aemp json",
            Impl::AempStream => "aemp stream",
            Impl::AempCbor => "aemp cbor",
            Impl::TokioJson => "tokio json",
            Impl::TokioSerde => "tokio serde",
            Impl::TokioLp => "tokio lp",
        }
    }
}

fn run_cell(imp: Impl, load: Load, n: usize, size: usize) -> Result<Sample, String> {
    let (n_s, size_s) = (n.to_string(), size.to_string());
    let limit = workload_limit(n, size) + STARTUP;
    match imp {
        Impl::AempJson | Impl::AempStream | Impl::AempCbor => {
            let d = if imp == Impl::AempCbor { "p2" } else { "p1b" };
            let ports = if imp == Impl::AempStream {
                "stream"
            } else {
                "actor"
            };
            let mut server = Proc::spawn("aemp server", &["aemp-server", d, ports])?;
            let addr = server.line("LISTEN ", STARTUP)?;
            let sink = server.line("SINK ", STARTUP)?;
            let echo = server.line("ECHO ", STARTUP)?;
            let role = [
                "aemp-client",
                d,
                load.name(),
                &n_s,
                &size_s,
                &addr,
                &sink,
                &echo,
            ];
            let mut client = Proc::spawn("aemp client", &role)?;
            let mut sample = support::parse_pairs(&client.line("RESULT ", limit)?);
            sample.insert("server_hwm_kib".into(), server.hwm_kib() as f64);
            Ok(sample)
        }
        Impl::TokioJson | Impl::TokioSerde | Impl::TokioLp => {
            let wire = match imp {
                Impl::TokioJson => "json",
                Impl::TokioSerde => "serde",
                _ => "lp",
            };
            let kind = if load == Load::OneWay {
                "count"
            } else {
                "echo"
            };
            let mut server = Proc::spawn("tokio server", &["tokio-server", wire, kind])?;
            let addr = server.line("LISTEN ", STARTUP)?;
            let role = ["tokio-client", wire, load.name(), &n_s, &size_s, &addr];
            let mut client = Proc::spawn("tokio client", &role)?;
            Ok(support::parse_pairs(&client.line("RESULT ", limit)?))
        }
    }
}

/// One workload row group of the table.
struct Spec {
    label: &'static str,
    load: Load,
    size: usize,
    n: usize,
    cbor: bool,
}

/// A metric line: its label and how to get it from a sample.
type Metric = (&'static str, fn(&Sample, usize) -> Option<f64>);

fn metrics(load: Load, size: usize) -> Vec<Metric> {
    let rate: Metric = ("msgs/s", |s, _| s.get("rate").copied());
    match load {
        Load::OneWay if size >= 1024 => vec![
            rate,
            ("MB/s", |s, size| {
                s.get("rate").map(|r| r * size as f64 / 1e6)
            }),
        ],
        Load::OneWay | Load::Window => vec![rate],
        Load::PingPong => vec![
            ("mean µs", |s, _| s.get("mean_us").copied()),
            ("median µs", |s, _| s.get("median_us").copied()),
            ("p99 µs", |s, _| s.get("p99_us").copied()),
            ("round trips/s", |s, _| s.get("rate").copied()),
        ],
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

struct Options {
    quick: bool,
    runs: usize,
    /// Only the typed/raw pairs (`--typed`).
    typed_only: bool,
    /// N of the typed/raw table's awaitable one-way rows (`--typed-n N`): a longer run to
    /// see the sustained rate rather than a burst.
    typed_n: Option<usize>,
}

fn options(args: &[String]) -> Options {
    let quick = args.iter().any(|a| a == "--quick");
    let number = |flag: &str| -> Option<usize> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|r| r.parse().ok())
    };
    let runs = number("--runs").unwrap_or(if quick { 1 } else { 5 });
    Options {
        quick,
        runs: runs.max(1),
        typed_only: args.iter().any(|a| a == "--typed"),
        typed_n: number("--typed-n"),
    }
}

fn parent_main(args: &[String]) -> ExitCode {
    let opt = options(args);
    let scale = |full: usize, quick: usize| if opt.quick { quick } else { full };
    let specs = [
        Spec {
            label: "one-way 16 B",
            load: Load::OneWay,
            size: 16,
            n: scale(2_000_000, 200_000),
            cbor: true,
        },
        Spec {
            label: "one-way 4 KiB",
            load: Load::OneWay,
            size: 4096,
            n: scale(200_000, 20_000),
            cbor: false,
        },
        Spec {
            label: "ping-pong 16 B",
            load: Load::PingPong,
            size: 16,
            n: scale(20_000, 2_000),
            cbor: false,
        },
        Spec {
            label: "window 16 B (100)",
            load: Load::Window,
            size: 16,
            n: scale(500_000, 50_000),
            cbor: true,
        },
    ];
    let typed_send_n = opt.typed_n.unwrap_or(scale(2_000_000, 200_000));
    let pair_specs = [
        PairSpec {
            label: "one-way 16 B send",
            pair: Pair::Send,
            size: 16,
            n: typed_send_n,
        },
        PairSpec {
            label: "  raw decodes whole",
            pair: Pair::SendDecoded,
            size: 16,
            n: typed_send_n,
        },
        PairSpec {
            label: "one-way 16 B do_send",
            pair: Pair::DoSend,
            size: 16,
            // All of it fits in the link's send queue (16 MiB): `snd` fails a full one.
            n: scale(200_000, 100_000),
        },
        PairSpec {
            label: "  raw decodes whole",
            pair: Pair::DoSendDecoded,
            size: 16,
            n: scale(200_000, 100_000),
        },
        PairSpec {
            label: "request 16 B",
            pair: Pair::Call,
            size: 16,
            n: scale(20_000, 2_000),
        },
        PairSpec {
            label: "request 16 B (100)",
            pair: Pair::CallWindow,
            size: 16,
            n: scale(200_000, 20_000),
        },
    ];
    let specs: &[Spec] = if opt.typed_only { &[] } else { &specs };
    let links = scale(500, 100);
    let mut failed = false;
    let mut results: Vec<HashMap<&'static str, Vec<Sample>>> = Vec::new();
    for spec in specs {
        let mut cells: HashMap<&'static str, Vec<Sample>> = HashMap::new();
        let imps = Impl::ALL
            .into_iter()
            .filter(|imp| *imp != Impl::AempCbor || spec.cbor);
        for imp in imps.clone() {
            cells.insert(imp.name(), Vec::new());
        }
        // Runs interleave the implementations, so that a drifting machine load hits all alike.
        for run in 1..=opt.runs {
            for imp in imps.clone() {
                let t = Instant::now();
                match run_cell(imp, spec.load, spec.n, spec.size) {
                    Ok(s) => {
                        let rate = s.get("rate").copied().unwrap_or(0.0);
                        eprintln!(
                            "{} / {} run {run}/{}: {} msgs/s ({:.1} s)",
                            spec.label,
                            imp.name(),
                            opt.runs,
                            support::human(rate, 1),
                            t.elapsed().as_secs_f64()
                        );
                        cells.entry(imp.name()).or_default().push(s);
                    }
                    Err(e) => {
                        eprintln!("{} / {} run {run}: FAILED: {e}", spec.label, imp.name());
                        failed = true;
                    }
                }
            }
        }
        results.push(cells);
    }
    let mut pair_results: Vec<Vec<Sample>> = Vec::new();
    for spec in &pair_specs {
        let mut samples = Vec::new();
        for run in 1..=opt.runs {
            // Which side goes first alternates, so that neither always runs on a fresh link.
            let typed_first = run % 2 == 0;
            let t = Instant::now();
            match run_pair(spec, typed_first) {
                Ok(s) => {
                    let rate = |k: &str| support::human(s.get(k).copied().unwrap_or(0.0), 1);
                    eprintln!(
                        "{} / raw, typed run {run}/{}: {}, {} msgs/s ({} first, {:.1} s)",
                        spec.label,
                        opt.runs,
                        rate("raw_rate"),
                        rate("typed_rate"),
                        if typed_first { "typed" } else { "raw" },
                        t.elapsed().as_secs_f64()
                    );
                    samples.push(s);
                }
                Err(e) => {
                    eprintln!("{} / typed, raw run {run}: FAILED: {e}", spec.label);
                    failed = true;
                }
            }
        }
        pair_results.push(samples);
    }
    let links = if opt.typed_only { 0 } else { links };
    let link_samples: Vec<Sample> = (1..=opt.runs)
        .filter(|_| links > 0)
        .filter_map(|run| match run_links(links) {
            Ok(s) => {
                let rate = |k: &str| support::human(s.get(k).copied().unwrap_or(0.0), 1);
                eprintln!(
                    "link set-up run {run}/{}: {} links/s, burst {} links/s",
                    opt.runs,
                    rate("links_per_s"),
                    rate("burst_links_per_s")
                );
                Some(s)
            }
            Err(e) => {
                eprintln!("link set-up run {run}: FAILED: {e}");
                failed = true;
                None
            }
        })
        .collect();

    if !specs.is_empty() {
        print_table(&opt, specs, &results);
    }
    print_pairs(&opt, &pair_specs, &pair_results);
    if links > 0 {
        print_links(links, &link_samples);
    }
    if failed {
        eprintln!("some cells failed (marked err); see above");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One row group of the typed/raw table.
struct PairSpec {
    label: &'static str,
    pair: Pair,
    size: usize,
    n: usize,
}

/// One process pair: an aemp server (P1b, json, actor ports) and a client running both sides.
fn run_pair(spec: &PairSpec, typed_first: bool) -> Result<Sample, String> {
    let mut server = Proc::spawn("aemp server", &["aemp-server", "p1b", "actor"])?;
    let addr = server.line("LISTEN ", STARTUP)?;
    let sink = server.line("SINK ", STARTUP)?;
    let cal_echo = server.line("CALECHO ", STARTUP)?;
    let typed_sink = server.line("TSINK ", STARTUP)?;
    let typed_echo = server.line("TECHO ", STARTUP)?;
    let field_sink = server.line("FSINK ", STARTUP)?;
    let (n_s, size_s) = (spec.n.to_string(), spec.size.to_string());
    let order = if typed_first {
        "typed-first"
    } else {
        "raw-first"
    };
    let role = [
        "aemp-pair",
        spec.pair.name(),
        order,
        &n_s,
        &size_s,
        &addr,
        &sink,
        &cal_echo,
        &typed_sink,
        &typed_echo,
        &field_sink,
    ];
    let mut client = Proc::spawn("aemp pair client", &role)?;
    let limit = workload_limit(spec.n, spec.size) * 2 + STARTUP;
    Ok(support::parse_pairs(&client.line("RESULT ", limit)?))
}

/// The typed/raw table: each side's median, and the median of the runs' typed/raw ratios.
fn print_pairs(opt: &Options, specs: &[PairSpec], results: &[Vec<Sample>]) {
    let ns: Vec<String> = specs
        .iter()
        .map(|s| format!("{} {}", s.label, s.n))
        .collect();
    println!();
    println!(
        "typed remote actors vs raw ports: aemp json (P1b, json framing, hmac_md6), one server \
         process with both, one client process running both sides over one link; median of {} \
         run(s){}; N: {}",
        opt.runs,
        if opt.quick { " (--quick)" } else { "" },
        ns.join(", ")
    );
    println!(
        "{:<21} {:<14} {:>10} {:>10} {:>10}",
        "workload", "metric", "raw", "typed", "typed/raw"
    );
    for (spec, samples) in specs.iter().zip(results) {
        let load = match spec.pair {
            Pair::Send | Pair::SendDecoded | Pair::DoSend | Pair::DoSendDecoded => Load::OneWay,
            Pair::Call => Load::PingPong,
            Pair::CallWindow => Load::Window,
        };
        for (i, (metric, get)) in metrics(load, spec.size).into_iter().enumerate() {
            // The metric getters read unprefixed keys: give them each side's fields.
            let side = |s: &Sample, prefix: &str| -> Option<f64> {
                let fields: Sample = s
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), *v)))
                    .collect();
                get(&fields, spec.size)
            };
            let med =
                |prefix: &str| median(samples.iter().filter_map(|s| side(s, prefix)).collect());
            let ratio = median(
                samples
                    .iter()
                    .filter_map(|s| Some((side(s, "typed_")?, side(s, "raw_")?)))
                    .filter(|(_, raw)| *raw > 0.0)
                    .map(|(typed, raw)| typed / raw)
                    .collect(),
            );
            let show = |v: Option<f64>| v.map_or("err".into(), |v| support::human(v, 1));
            println!(
                "{:<21} {:<14} {:>10} {:>10} {:>10}",
                if i == 0 { spec.label } else { "" },
                metric,
                show(med("raw_")),
                show(med("typed_")),
                ratio.map_or("—".into(), |r| format!("{r:.2}"))
            );
        }
    }
}

/// Set-ups in flight in the paced link run (below the listener's accept backlog).
const LINKS_INFLIGHT: usize = 64;

/// A paced link run (its rate and the memory figures), then a burst with all `l` at once.
fn run_links(l: usize) -> Result<Sample, String> {
    let mut sample = links_once(l, LINKS_INFLIGHT)?;
    let burst = links_once(l, l)?;
    if let Some(rate) = burst.get("links_per_s") {
        sample.insert("burst_links_per_s".into(), *rate);
    }
    Ok(sample)
}

fn links_once(l: usize, inflight: usize) -> Result<Sample, String> {
    let mut server = Proc::spawn("aemp server", &["aemp-server", "p1b"])?;
    let addr = server.line("LISTEN ", STARTUP)?;
    let sink = server.line("SINK ", STARTUP)?;
    let _echo = server.line("ECHO ", STARTUP)?;
    let (l_s, inflight_s) = (l.to_string(), inflight.to_string());
    let role = ["aemp-links", &l_s, &inflight_s, &addr, &sink];
    let mut client = Proc::spawn("aemp links client", &role)?;
    let within = STARTUP * 2 + Duration::from_secs(60) + REPLY * (l as u32 / 50);
    Ok(support::parse_pairs(&client.line("RESULT ", within)?))
}

fn print_table(opt: &Options, specs: &[Spec], results: &[HashMap<&'static str, Vec<Sample>>]) {
    let ns: Vec<String> = specs
        .iter()
        .map(|s| format!("{} {}", s.label, s.n))
        .collect();
    println!();
    println!(
        "aemp end-to-end over loopback: median of {} run(s) per cell{}; N: {}",
        opt.runs,
        if opt.quick { " (--quick)" } else { "" },
        ns.join(", ")
    );
    println!(
        "{:<18} {:<14} {:>10} {:>11} {:>10} {:>11} {:>11} {:>10} {:>11} {:>11} {:>12}   {:>16}  {:>14}  {:>14}",
        "workload",
        "metric",
        "aemp json",
        "aemp stream",
        "aemp cbor",
        "tokio serde",
        "tokio json",
        "tokio lp",
        "json/serde",
        "json/tokio",
        "stream/serde",
        "RSS MiB json c/s",
        "stream c/s",
        "cbor c/s"
    );
    for (spec, cells) in specs.iter().zip(results) {
        for (i, (metric, get)) in metrics(spec.load, spec.size).into_iter().enumerate() {
            let value = |imp: Impl| {
                cells
                    .get(imp.name())
                    .and_then(|s| median(s.iter().filter_map(|s| get(s, spec.size)).collect()))
            };
            let show = |imp: Impl| match (value(imp), cells.contains_key(imp.name())) {
                (Some(v), _) => support::human(v, 1),
                (None, true) => "err".into(),
                (None, false) => "—".into(),
            };
            let ratio = |imp: Impl, ceiling: Impl| match (value(imp), value(ceiling)) {
                (Some(a), Some(t)) if t > 0.0 => format!("{:.2}", a / t),
                _ => "—".into(),
            };
            let rss = |imp: Impl| {
                let samples = cells.get(imp.name()).filter(|_| i == 0);
                let peak = |key: &str| {
                    samples.and_then(|s| {
                        s.iter()
                            .filter_map(|s| s.get(key).copied())
                            .reduce(f64::max)
                    })
                };
                match (peak("client_hwm_kib"), peak("server_hwm_kib")) {
                    (Some(c), Some(s)) => format!("{:.1} / {:.1}", c / 1024.0, s / 1024.0),
                    _ => String::new(),
                }
            };
            println!(
                "{:<18} {:<14} {:>10} {:>11} {:>10} {:>11} {:>11} {:>10} {:>11} {:>11} {:>12}   {:>16}  {:>14}  {:>14}",
                if i == 0 { spec.label } else { "" },
                metric,
                show(Impl::AempJson),
                show(Impl::AempStream),
                show(Impl::AempCbor),
                show(Impl::TokioSerde),
                show(Impl::TokioJson),
                show(Impl::TokioLp),
                ratio(Impl::AempJson, Impl::TokioSerde),
                ratio(Impl::AempJson, Impl::TokioJson),
                ratio(Impl::AempStream, Impl::TokioSerde),
                rss(Impl::AempJson),
                rss(Impl::AempStream),
                rss(Impl::AempCbor)
            );
        }
    }
}

fn print_links(l: usize, samples: &[Sample]) {
    let med = |f: &dyn Fn(&Sample) -> Option<f64>| median(samples.iter().filter_map(f).collect());
    let per_link = |a: &str, b: &str| med(&|s: &Sample| Some((s.get(a)? - s.get(b)?) / l as f64));
    let row = |label: String, v: Option<f64>, unit: &str| {
        let v = v.map_or("err".into(), |v| format!("{v:.1} {unit}"));
        println!("  {label:<34} {v}");
    };
    println!();
    println!(
        "link set-up: {l} client nodes in one process (P1b, hmac_md6, json, no TLS) dialling one \
         server; median of {} run(s)",
        samples.len()
    );
    let rate = |k: &'static str| med(&move |s: &Sample| s.get(k).copied());
    row(
        format!("new links/s, {LINKS_INFLIGHT} in flight"),
        rate("links_per_s"),
        "",
    );
    row(
        format!("new links/s, all {l} at once"),
        rate("burst_links_per_s"),
        "",
    );
    row(
        "server RSS per idle link".into(),
        per_link("server_after_kib", "server_before_kib"),
        "KiB",
    );
    row(
        "client RSS per idle link".into(),
        per_link("client_links_kib", "client_nodes_kib"),
        "KiB",
    );
    row(
        "client RSS per started node".into(),
        per_link("client_nodes_kib", "client_before_kib"),
        "KiB (Node::start: a worker thread, a registry)",
    );
}
