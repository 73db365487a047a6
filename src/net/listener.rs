//! Accepting connections.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// A bind that failed: the address and the OS error.
pub(crate) type BindError = (SocketAddr, io::Error);

/// Binds and listens on `addr`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // A deep accept backlog: a burst of peers connecting at once must not stall in SYN retries.
    socket.listen(1024)
}

/// Binds every address of one bind element; each listener with the address it got. Where
/// several ask for port 0 (`*:0`, a name with several addresses), the later ones take the port
/// the first got, so that the node has one port as users expect, and a fresh ephemeral one
/// where that port is taken.
pub(crate) fn bind_group(
    addrs: &[SocketAddr],
) -> Result<Vec<(TcpListener, SocketAddr)>, BindError> {
    let mut out = Vec::with_capacity(addrs.len());
    let mut shared_port = None;
    for &addr in addrs {
        let listener = match shared_port {
            Some(port) if addr.port() == 0 => {
                bind(SocketAddr::new(addr.ip(), port)).or_else(|_| bind(addr))
            }
            _ => bind(addr),
        }
        .map_err(|e| (addr, e))?;
        let local = listener.local_addr().map_err(|e| (addr, e))?;
        if addr.port() == 0 && shared_port.is_none() {
            shared_port = Some(local.port());
        }
        out.push((listener, local));
    }
    Ok(out)
}

/// Accepts connections on `listener` (bound to `local`) until `stop` resolves (or the actix
/// system stops), handing each to `on_accept` with the peer's address.
pub(crate) fn serve(
    listener: TcpListener,
    local: SocketAddr,
    stop: impl Future<Output = ()> + 'static,
    on_accept: impl Fn(std::net::TcpStream, SocketAddr) + 'static,
) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[actix_rt::test]
    async fn a_group_on_port_zero_shares_the_first_port() {
        // Every 127/8 address is loopback on Linux; elsewhere only 127.0.0.1 may be.
        let second = if bind(sa("127.0.0.2:0")).is_ok() {
            "127.0.0.2:0"
        } else {
            "127.0.0.1:0"
        };
        let group = bind_group(&[sa("127.0.0.1:0"), sa(second)]).unwrap();
        let bound: Vec<SocketAddr> = group.iter().map(|(_, local)| *local).collect();
        assert_ne!(bound[0].port(), 0);
        if second == "127.0.0.2:0" {
            assert_eq!(bound[1], SocketAddr::new(sa(second).ip(), bound[0].port()));
        } else {
            // Same address: the port is taken, so a fresh one.
            assert_ne!(bound[1].port(), bound[0].port());
        }
    }

    #[actix_rt::test]
    async fn a_taken_port_fails_the_group_naming_the_address() {
        let hold = bind(sa("127.0.0.1:0")).unwrap();
        let taken = hold.local_addr().unwrap();
        let err = bind_group(&[sa("127.0.0.1:0"), taken]);
        assert!(matches!(err, Err((addr, _)) if addr == taken));
    }
}
