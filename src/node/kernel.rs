//! The node port `""`: requests other nodes send to this node (AEMP-NOTES §3.2–3.4).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Shared, global, peer, split_port_id};
use crate::proto::dialect::Dialect;
use crate::proto::node_request::{NodeRequest, Relay, ReplySpec};
use crate::proto::value::Value;

// The wire's tags live with the request parser; ports.rs and links.rs reach them through here.

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
fn reply(shared: &Arc<Shared>, spec: ReplySpec, results: Vec<Value>) {
    let (port, msg) = spec.message(results);
    relay(shared, &port, msg);
}

/// A request to our node port from ourselves.
pub(crate) fn handle_local(shared: &Arc<Shared>, args: Vec<Value>) {
    let id = shared.id.clone();
    handle(shared, &id, Dialect::P2, args);
}

/// A request to our node port from `from`, over a link of `dialect`.
pub(crate) fn handle(shared: &Arc<Shared>, from: &Arc<str>, dialect: Dialect, args: Vec<Value>) {
    let request = match NodeRequest::parse(dialect, args) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(node = %shared.id, peer = %from, "malformed node-port request ignored: {e}");
            return;
        }
    };
    match request {
        NodeRequest::Keepalive | NodeRequest::DevNull => {}
        NodeRequest::Monitor { port } => shared.monitor_local_for(&port, from.clone()),
        NodeRequest::Unmonitor { port } => shared.unmonitor_local_for(&port, from),
        // The port is named without its node part: it is ours.
        NodeRequest::Kill { port, reason } => shared.kill_local(&port, reason),
        NodeRequest::PortDied { port, reason } => shared.remote_port_died(from, &port, reason),
        NodeRequest::Snd(Relay { port, msg }) => relay(shared, &port, msg),
        NodeRequest::SndMultiple(relays) => {
            for Relay { port, msg } in relays {
                relay(shared, &port, msg);
            }
        }
        NodeRequest::Info { reply: to } => {
            reply(shared, to, vec![Value::Str(shared.id.to_string())])
        }
        NodeRequest::UpNodes { reply: to } => reply(
            shared,
            to,
            shared
                .links
                .up_nodes()
                .into_iter()
                .map(Value::Str)
                .collect(),
        ),
        NodeRequest::KnownNodes { reply: to } => {
            let mut nodes = vec![Value::Str(shared.id.to_string())];
            nodes.extend(shared.links.up_nodes().into_iter().map(Value::Str));
            reply(shared, to, nodes)
        }
        NodeRequest::Time { reply: to } => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            reply(shared, to, vec![Value::Float(now)])
        }
        NodeRequest::Can { tag, reply: to } => {
            let yes = NodeRequest::answered(&tag, dialect);
            reply(
                shared,
                to,
                vec![Value::Str(if yes { "1" } else { "" }.into())],
            )
        }
        NodeRequest::Eval { reply: to, .. } => {
            tracing::warn!(node = %shared.id, peer = %from, "refused remote code execution (eval)");
            // Answer in `$@`'s place so that a waiting caller is not left hanging.
            if let Some(to) = to {
                let refusal = "remote code execution is not allowed on this node\n";
                reply(shared, to, vec![Value::Str(refusal.into())])
            }
        }
        NodeRequest::Spawn { name, init, args } => {
            peer::spawn_request(shared, from, name, init, args)
        }
        NodeRequest::Global(request) => global::request(shared, from, request),
        // Perl would call the function of that name: remote code execution, which we refuse.
        // Only registered init functions run, and only through `_spawn`.
        NodeRequest::Call { function, .. } => {
            tracing::warn!(node = %shared.id, peer = %from, function, "refused remote function call");
        }
        NodeRequest::Unknown { tag, .. } => {
            tracing::warn!(node = %shared.id, peer = %from, request = tag, "unsupported node-port request ignored");
        }
    }
}
