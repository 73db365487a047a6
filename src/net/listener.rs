//! Accepting connections.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::transport;
use crate::node::{NodeError, Shared};

/// Binds `addr` and accepts connections on it until the node's actix system stops; each
/// connection becomes a transport on a worker arbiter.
pub(crate) async fn listen(shared: Arc<Shared>, addr: &str) -> Result<SocketAddr, NodeError> {
    let bind_err = |source| NodeError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
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
