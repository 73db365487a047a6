//! `aemp run`: the node, its echo port, sinks, `--reg`, and the commands read on stdin.

use super::*;

/// `aemp run`: announces the node and its echo port (and sinks), registers the echo port in the
/// `reg` families, and prints node up/down events until interrupted (the node keeps its seeds
/// linked); with `stdin`, runs the commands read there.
pub(super) async fn serve(
    node: &Node,
    sinks: &[String],
    stdin: bool,
    reg: &[String],
    seedless: bool,
    metrics: Option<&str>,
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
    if let Some(addr) = metrics {
        let bound = super::metrics::serve_metrics(node, addr).await?;
        println!("METRICS {bound}");
    }
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
            () = stop_signal() => {
                // SIGTERM (systemd, containers) or SIGINT: what is queued is written, links
                // close, then exit 0.
                node.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// Resolves at SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `run --reg FAMILY`: registers the echo port in `family` for as long as the node runs, and
/// prints `REG FAMILY <port>` once the master has it (a monitor of the family, mirrored from
/// the master, shows it), or at once on a node without seeds (see `--reg`).
pub(super) fn register(
    node: &Node,
    family: &str,
    port: &str,
    seedless: bool,
) -> Result<(), String> {
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
pub(super) fn start_echo_port(node: &Node) -> String {
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
pub(super) fn start_sink(node: &Node, name: &str) -> Result<(), String> {
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
pub(super) async fn run_commands(node: Node) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Err(e) = command(&node, &line).await {
            say(format_args!("ERR {e}"));
        }
    }
}

/// One `--stdin` command: `snd PORT ARG…` or `mon PORT`.
pub(super) async fn command(node: &Node, line: &str) -> Result<(), String> {
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
