//! The node port `""`: requests other nodes send to this node (AEMP-NOTES §3.2–3.4).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Shared, global, peer, split_port_id};
use crate::proto::dialect::Dialect;
use crate::proto::value::Value;

/// The tag that tells a node one of its monitored ports died.
pub(crate) fn notify_tag(d: Dialect) -> &'static str {
    match d {
        Dialect::P0 | Dialect::P1a => "kil",
        Dialect::P1b | Dialect::P2 => "kil0",
    }
}

/// The tag that kills a remote port; P0/P1a have none (their `kil` is the notification).
pub(crate) fn kill_tag(d: Dialect) -> Option<&'static str> {
    match d {
        Dialect::P0 | Dialect::P1a => None,
        Dialect::P1b => Some("kil"),
        Dialect::P2 => Some("kil1"),
    }
}

/// Requests this node answers, per dialect (what `can` reports in P2).
fn known_request(tag: &str, d: Dialect) -> bool {
    match tag {
        "" | "mon1" | "mon0" | "snd" | "time" | "devnull" | "eval" => true,
        "kil" => d != Dialect::P2,
        "kil0" => matches!(d, Dialect::P1b | Dialect::P2),
        "kil1" | "can" => d == Dialect::P2,
        "snd_multiple" | "info" | "known_nodes" | "up_nodes" => d != Dialect::P2,
        g if d == Dialect::P2 => global::answers(g),
        _ => false,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(|s| s.into_owned())
}

/// Sends `msg` to a port id from this node (the `snd` relay and all replies).
pub(crate) fn relay(shared: &Arc<Shared>, port: &str, args: Vec<Value>) {
    let (node, name) = split_port_id(port);
    if node == &*shared.id {
        if name.is_empty() {
            handle_local(shared, args);
        } else {
            shared.deliver_local(name, super::Message::local(shared.id.clone(), args));
        }
    } else if let Err(e) = shared.send_remote(node, name, &Value::Array(args)) {
        tracing::warn!(node = %shared.id, port, "relay failed: {e}");
    }
}

/// Answers a request that ends in a reply spec `reply_port, prefix…`.
fn reply(shared: &Arc<Shared>, spec: &[Value], results: Vec<Value>) {
    let Some(port) = text(spec.first()) else {
        return;
    };
    let mut msg: Vec<Value> = spec.get(1..).map(<[Value]>::to_vec).unwrap_or_default();
    msg.extend(results);
    relay(shared, &port, msg);
}

/// A request to our node port from ourselves.
pub(crate) fn handle_local(shared: &Arc<Shared>, args: Vec<Value>) {
    let id = shared.id.clone();
    handle(shared, &id, Dialect::P2, args);
}

/// A request to our node port from `from`, over a link of `dialect`.
pub(crate) fn handle(shared: &Arc<Shared>, from: &Arc<str>, dialect: Dialect, args: Vec<Value>) {
    let tag = text(args.first()).unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    match tag.as_str() {
        "" | "devnull" => {}
        "mon1" => {
            if let Some(port) = text(rest.first()) {
                shared.monitor_local_for(&port, from.clone());
            }
        }
        "mon0" => {
            if let Some(port) = text(rest.first()) {
                shared.unmonitor_local_for(&port, from);
            }
        }
        // P1b's `kil` kills; P0/P1a's `kil` (and `kil0`) report a monitored port's death.
        "kil" if dialect == Dialect::P1b => kill(shared, rest),
        "kil1" => kill(shared, rest),
        "kil" | "kil0" => {
            if let Some(port) = text(rest.first()) {
                shared.remote_port_died(from, &port, rest.get(1..).unwrap_or_default().to_vec());
            }
        }
        "snd" => {
            if let Some(port) = text(rest.first()) {
                relay(shared, &port, rest.get(1..).unwrap_or_default().to_vec());
            }
        }
        "snd_multiple" => {
            for item in rest {
                if let Some([port, msg @ ..]) = item.as_array()
                    && let Some(port) = port.as_str()
                {
                    relay(shared, &port, msg.to_vec());
                }
            }
        }
        "info" => reply(shared, rest, vec![Value::Str(shared.id.to_string())]),
        "up_nodes" => reply(
            shared,
            rest,
            shared.up_nodes().into_iter().map(Value::Str).collect(),
        ),
        "known_nodes" => {
            let mut nodes = vec![Value::Str(shared.id.to_string())];
            nodes.extend(shared.up_nodes().into_iter().map(Value::Str));
            reply(shared, rest, nodes)
        }
        "time" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            reply(shared, rest, vec![Value::Float(now)])
        }
        "can" => {
            let asked = text(rest.first()).unwrap_or_default();
            let yes = known_request(&asked, dialect);
            reply(
                shared,
                rest.get(1..).unwrap_or_default(),
                vec![Value::Str(if yes { "1" } else { "" }.into())],
            )
        }
        "eval" => {
            tracing::warn!(node = %shared.id, peer = %from, "refused remote code execution (eval)");
            // Answer in `$@`'s place so that a waiting caller is not left hanging.
            reply(
                shared,
                rest.get(1..).unwrap_or_default(),
                vec![Value::Str(
                    "remote code execution is not allowed on this node\n".into(),
                )],
            )
        }
        peer::SPAWN => peer::spawn_request(shared, from, rest),
        other if global::request(shared, from, other, rest) => {}
        // Perl would call the function of that name: remote code execution, which we refuse.
        // Only registered init functions run, and only through `_spawn`.
        other if other.contains("::") => {
            tracing::warn!(node = %shared.id, peer = %from, function = other, "refused remote function call");
        }
        other => {
            tracing::warn!(node = %shared.id, peer = %from, request = other, "unsupported node-port request ignored");
        }
    }
}

fn kill(shared: &Shared, rest: &[Value]) {
    // The port is named without its node part: it is ours.
    if let Some(port) = text(rest.first()) {
        shared.kill_local(&port, rest.get(1..).unwrap_or_default().to_vec());
    }
}
