//! `aemp trace NODE`: the links of a node, as Perl's `aemp trace` shows the network.

use std::collections::BTreeSet;

use super::*;

/// Asks `target` for the nodes it has links to and prints `TARGET -> PEER`, one line per link
/// (this command's own link left out); with `depth` > 0, asks those nodes too, that many
/// levels on. A node that does not answer prints `TARGET: no answer`.
///
/// The question is the one Perl's `aemp trace` asks in the link's dialect: the `up_nodes`
/// node-port request (Perl 1.x), or `eval_on NODE, "AnyEvent::MP::Kernel::up_nodes"` (Perl
/// 2.x; a Rust node answers that one eval and no other).
pub(super) async fn trace(
    node: &Node,
    target: &str,
    depth: usize,
    timeout: Duration,
) -> Result<(), String> {
    let mut seen = BTreeSet::from([target.to_owned(), node.id().to_owned()]);
    let mut level = vec![target.to_owned()];
    let mut answered = 0;
    for round in 0..=depth {
        let asks = level.iter().map(|n| up_nodes(node, n, timeout));
        let answers = futures_util::future::join_all(asks).await;
        let mut next = Vec::new();
        for (of, peers) in level.iter().zip(answers) {
            let Some(peers) = peers else {
                say(format_args!("{of}: no answer"));
                continue;
            };
            answered += 1;
            for peer in peers.into_iter().filter(|p| p != node.id()) {
                say(format_args!("{of} -> {peer}"));
                if round < depth && seen.insert(peer.clone()) {
                    next.push(peer);
                }
            }
        }
        level = next;
    }
    match answered {
        0 => Err(format!("{target} did not answer within {timeout:?}")),
        _ => Ok(()),
    }
}

/// The ids of the nodes `of` has links to, sorted; `None` if it did not answer.
async fn up_nodes(node: &Node, of: &str, timeout: Duration) -> Option<Vec<String>> {
    // A `time` request first (every dialect answers it): the link is then up and its dialect
    // says which question to ask.
    node.cal(of, vec![Value::Str("time".into())], timeout)
        .await
        .ok()?;
    let p2 = node.link_dialect(of) == Some(Dialect::P2);
    let ask = match p2 {
        true => vec!["eval".into(), aemp::node::UP_NODES_EVAL.into()],
        false => vec![Value::Str("up_nodes".into())],
    };
    let mut answer = node.cal(of, ask, timeout).await.ok()?.into_iter();
    if p2 {
        // `$@` comes first: not empty, the eval failed (a node in secure mode, say).
        let error = answer.next()?;
        if error.as_str().is_none_or(|e| !e.is_empty()) {
            return None;
        }
    }
    let mut peers: Vec<String> = answer
        .filter_map(|v| v.as_str().map(|s| s.into_owned()))
        .collect();
    peers.sort();
    Some(peers)
}
