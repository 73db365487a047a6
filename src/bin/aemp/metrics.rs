//! `aemp run --metrics HOST:PORT`: `GET /metrics` in the Prometheus text format, from a minimal
//! HTTP/1.1 responder (one request per connection; the one endpoint needs no more).

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// The largest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;

/// Binds `addr` and serves `/metrics` of `node` from it until the process ends; returns the
/// bound address.
pub(super) async fn serve_metrics(node: &Node, addr: &str) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    let node = node.clone();
    actix::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    actix::spawn(answer(node.clone(), stream));
                }
                // Out of file descriptors and the like: pause rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok(local)
}

/// Reads one request head (within 10 s) and answers it; the connection then closes.
async fn answer(node: Node, mut stream: TcpStream) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (status, kind, body) = match (words.next(), words.next()) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            aemp::node::metrics::encode(&node.stats()),
        ),
        (Some(b"GET"), _) => ("404 Not Found", "text/plain", "only /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
