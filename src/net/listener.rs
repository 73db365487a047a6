//! Accepting connections.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// Binds `addr` and accepts connections on it until `stop` resolves (or the actix system
/// stops), handing each to `on_accept` with the peer's address.
pub(crate) async fn listen(
    addr: &str,
    stop: impl Future<Output = ()> + 'static,
    on_accept: impl Fn(std::net::TcpStream, SocketAddr) + 'static,
) -> io::Result<SocketAddr> {
    // A deep accept backlog: a burst of peers connecting at once must not stall in SYN retries.
    let mut last = None;
    let mut bound = None;
    for sa in tokio::net::lookup_host(addr).await? {
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
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address resolves to nothing",
            ));
        }
    };
    let local = listener.local_addr()?;
    actix::spawn(async move {
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = &mut stop => return,
            };
            match accepted {
                Ok((stream, peer)) => match stream.into_std() {
                    Ok(std) => on_accept(std, peer),
                    Err(e) => tracing::warn!(%local, "cannot hand over {peer}: {e}"),
                },
                Err(e) => {
                    // Out of descriptors and similar: log, breathe, go on serving.
                    tracing::warn!(%local, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}
