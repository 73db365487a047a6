//! The one-shot commands `snd`, `cal` and `mon`, and waiting for the seed link they need.

use super::*;

/// `aemp snd`: sends the message, then asks the target's node port for a receipt (a `snd`
/// request sent after it on the same link), so success means the target node has it.
pub(super) async fn send_with_receipt(
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
pub(super) async fn call(
    node: &Node,
    port: &str,
    args: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let msg: Vec<Value> = args.iter().map(|a| parse_arg(a)).collect();
    let reply = node
        .cal(port, msg, timeout)
        .await
        .map_err(|e| format!("no reply: {e}"))?;
    println!("{}", Value::Array(reply));
    Ok(())
}

/// `aemp mon`: waits until the port dies and prints the kill reason as JSON.
pub(super) async fn print_kill_reason(node: &Node, port: &str) -> Result<(), String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.mon(port, move |reason| {
        let _ = tx.send(reason);
    })
    .detach();
    let reason = rx.recv().await.ok_or("monitor lost")?;
    println!("{}", Value::Array(reason));
    Ok(())
}

pub(super) async fn wait(rx: &mut PortStream, timeout: Duration) -> Option<Message> {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .ok()
        .flatten()
}

/// How long after a refused (or unanswered) connect a seed is dialled again, on top of the
/// node's own back-off (a one-shot command should not wait seconds for a seed that starts).
pub(super) const SEED_RETRY: Duration = Duration::from_millis(500);

/// Waits for the first seed link (the node dials its seeds itself, see `run`); returns its node
/// id, or the reason none came up.
///
/// A seed that cannot be connected to yet (it may be starting) is dialled again until the
/// timeout, which then reports the last error. A first attempt in another dialect than the
/// seed's is no error here: the node dials again in the seed's dialect (auto mode) and reports
/// only that dial's failure. Any other failure (wrong secret, TLS, a fixed dialect the seed
/// does not speak) ends the wait at once.
pub(super) async fn connect_seed(
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

/// Whether a dial failed before reaching any node (worth trying again while the seed starts).
pub(super) fn not_reached(error: &TransportError) -> bool {
    matches!(
        error,
        TransportError::Connect { .. } | TransportError::ConnectTimeout { .. }
    )
}
