//! The node port `""`: requests other nodes send to this node (AEMP-NOTES §3.2–3.4).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::global::{self, Effect};
use super::{Shared, peer, split_port_id};
use crate::proto::dialect::Dialect;
use crate::proto::node_request::{NodeRequest, Relay, ReplySpec};
use crate::proto::value::Value;

/// How many requests to our own node port one request to it may lead to: a `snd` or
/// `snd_multiple` relay to `<own id>` or `<own id>#`, or an answer whose reply spec names it,
/// is a hop; so is each one such a request leads to in turn.
///
/// Perl follows such chains to their end (after 50 nested local deliveries it goes on from its
/// event loop). Real uses take one or two hops (`snd_on` to ourselves, an answer to our own node
/// port); a chain of thousands only costs memory and time. A request beyond the bound is not
/// handled: it is treated as Perl treats a node-port request it cannot serve, logged at warning
/// level (one line for the whole chain) and otherwise ignored, with nothing sent back. The link
/// that sent it and everything else it sent are served as usual.
pub const MAX_NODE_PORT_HOPS: usize = 64;

/// The Perl expression whose `eval` the node port answers (with the ids of the up nodes),
/// as Perl 2.x's `aemp trace` asks for them: `eval_on NODE, UP_NODES_EVAL, reply…`.
pub const UP_NODES_EVAL: &str = "AnyEvent::MP::Kernel::up_nodes";

// The wire's tags live with the request parser; ports.rs and links.rs reach them through here.

/// A request to our node port from ourselves (`snd` to `<own id>` or `<own id>#`).
pub(crate) fn handle_local(shared: &Arc<Shared>, args: Vec<Value>) {
    let id = shared.id.clone();
    handle(shared, &id, Dialect::P2, args);
}

/// A request to our node port from `from`, over a link of `dialect`, and all it leads to.
pub(crate) fn handle(shared: &Arc<Shared>, from: &Arc<str>, dialect: Dialect, args: Vec<Value>) {
    let mut out = Vec::new();
    serve(shared, from, dialect, args, &mut out);
    dispatch(shared, from, out);
}

/// Carries out `effects` in order; a message to our own node port is served in its place,
/// and what that leads to is carried out before the effects after it, as Perl's synchronous
/// local delivery orders it. Served from a stack, not by recursion, for at most
/// [`MAX_NODE_PORT_HOPS`] requests; `from` is who started it all (for the log).
pub(crate) fn dispatch(shared: &Arc<Shared>, from: &str, effects: Vec<Effect>) {
    // Messages are moved, never cloned: a hop costs the parse of its request, which moves its
    // elements within their own buffer. One packet thus costs at most about
    // `MAX_NODE_PORT_HOPS` times its size, however long the chain it holds.
    let mut stack = vec![effects.into_iter()];
    let mut hops = 0;
    let mut refused = 0usize;
    while let Some(top) = stack.last_mut() {
        let Some(effect) = top.next() else {
            stack.pop();
            continue;
        };
        let Effect::Send(port, msg) = effect else {
            global::apply_one(shared, effect);
            continue;
        };
        let (node, name) = split_port_id(&port);
        if node != &*shared.id {
            if let Err(e) = shared.send_remote(node, name, &Value::Array(msg)) {
                tracing::warn!(node = %shared.id, port, "relay failed: {e}");
            }
        } else if !name.is_empty() {
            shared.deliver_local(name, super::Message::local(shared.id.clone(), msg));
        } else if hops == MAX_NODE_PORT_HOPS {
            // Dropped unread: whatever it holds is neither parsed nor answered.
            refused += 1;
        } else {
            hops += 1;
            let mut out = Vec::new();
            let id = shared.id.clone();
            serve(shared, &id, Dialect::P2, msg, &mut out);
            if !out.is_empty() {
                stack.push(out.into_iter());
            }
        }
    }
    if refused > 0 {
        tracing::warn!(
            node = %shared.id,
            peer = from,
            refused,
            "node-port request chain refused: more than {MAX_NODE_PORT_HOPS} hops to our own node port"
        );
    }
}

/// The answer to a request that ends in a reply spec `reply_port, prefix…`.
fn reply(spec: ReplySpec, results: Vec<Value>) -> Effect {
    let (port, msg) = spec.message(results);
    Effect::Send(port, msg)
}

/// Serves one request to our node port from `from`, over a link of `dialect`: what it does to
/// this node is done now, what it sends (relays, answers) goes to `out`.
fn serve(
    shared: &Arc<Shared>,
    from: &Arc<str>,
    dialect: Dialect,
    args: Vec<Value>,
    out: &mut Vec<Effect>,
) {
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
        NodeRequest::Snd(Relay { port, msg }) => out.push(Effect::Send(port, msg)),
        NodeRequest::SndMultiple(relays) => {
            out.extend(
                relays
                    .into_iter()
                    .map(|Relay { port, msg }| Effect::Send(port, msg)),
            );
        }
        NodeRequest::Info { reply: to } => {
            out.push(reply(to, vec![Value::Str(shared.id.to_string())]))
        }
        NodeRequest::UpNodes { reply: to } => {
            let nodes = shared.links.up_nodes().into_iter().map(Value::Str);
            out.push(reply(to, nodes.collect()))
        }
        NodeRequest::KnownNodes { reply: to } => {
            let mut nodes = vec![Value::Str(shared.id.to_string())];
            nodes.extend(shared.links.up_nodes().into_iter().map(Value::Str));
            out.push(reply(to, nodes))
        }
        NodeRequest::Time { reply: to } => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            out.push(reply(to, vec![Value::Float(now)]))
        }
        NodeRequest::Can { tag, reply: to } => {
            let yes = NodeRequest::answered(&tag, dialect);
            out.push(reply(
                to,
                vec![Value::Str(if yes { "1" } else { "" }.into())],
            ))
        }
        // The one eval Perl 2.x's `aemp trace` sends: answered as Perl would (`$@` empty,
        // then the results), since it runs no code of the sender's.
        NodeRequest::Eval {
            code: Some(code),
            reply: Some(to),
        } if code.trim() == UP_NODES_EVAL => {
            let mut answer = vec![Value::Str(String::new())];
            answer.extend(shared.links.up_nodes().into_iter().map(Value::Str));
            out.push(reply(to, answer))
        }
        NodeRequest::Eval { reply: to, .. } => {
            tracing::warn!(node = %shared.id, peer = %from, "refused remote code execution (eval)");
            // Answer in `$@`'s place so that a waiting caller is not left hanging.
            if let Some(to) = to {
                let refusal = "remote code execution is not allowed on this node\n";
                out.push(reply(to, vec![Value::Str(refusal.into())]))
            }
        }
        NodeRequest::Spawn { name, init, args } => {
            peer::spawn_request(shared, from, name, init, args)
        }
        NodeRequest::Global(request) => out.extend(global::request(shared, from, request)),
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
