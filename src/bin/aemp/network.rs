//! `aemp nodes` and `aemp db …`: the network's address book and database.

use super::*;

/// `aemp nodes`: the network's address book (from the master on P2, from the 1.x mesh
/// otherwise), each node probed with a `time` request.
pub(super) async fn print_nodes(node: &Node, timeout: Duration) -> Result<(), String> {
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
        async move { answer.await.is_ok() }
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
pub(super) async fn db(node: &Node, op: DbOp, timeout: Duration) -> Result<(), String> {
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
pub(super) async fn follow(
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
