//! Accepting connections.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpSocket;

use super::transport;
use crate::node::{NodeError, Shared};

/// Binds `addr` and accepts connections on it until the node's actix system stops; each
/// connection becomes a transport on a worker arbiter.
pub(crate) async fn listen(shared: Arc<Shared>, addr: &str) -> Result<SocketAddr, NodeError> {
    let bind_err = |source| NodeError::Bind {
        addr: addr.to_owned(),
        source,
    };
    // A deep accept backlog: a burst of peers connecting at once must not stall in SYN retries.
    let mut last = None;
    let mut bound = None;
    for sa in tokio::net::lookup_host(addr).await.map_err(bind_err)? {
        let socket = if sa.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        match socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(sa)?;
            s.listen(1024)
        }) {
            Ok(l) => {
                bound = Some(l);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let listener = match (bound, last) {
        (Some(l), _) => l,
        (None, Some(e)) => return Err(bind_err(e)),
        (None, None) => {
            return Err(bind_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "address resolves to nothing",
            )));
        }
    };
    let local = listener.local_addr().map_err(bind_err)?;
    actix::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = shared.stopping() => return,
            };
            match accepted {
                Ok((stream, peer)) => match stream.into_std() {
                    Ok(std) => {
                        shared.peer.count_connection(false);
                        transport::accepted(shared.clone(), std, peer.to_string())
                    }
                    Err(e) => tracing::warn!(node = %shared.id, "cannot hand over {peer}: {e}"),
                },
                Err(e) => {
                    // Out of descriptors and similar: log, breathe, go on serving.
                    tracing::warn!(node = %shared.id, %local, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}
