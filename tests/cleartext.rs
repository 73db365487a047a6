//! `cleartext` (the shared secret in hex on the wire) over a real socket: a node with a secret
//! neither advertises nor accepts it unless `allow_cleartext` is set, and a client that tries it
//! fails alone while the node keeps serving.

use std::time::Duration;

use aemp::net::TransportError;
use aemp::node::{Node, NodeConfig};
use aemp::proto::handshake::{HandshakeError, PeerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SECRET: &str = "geheim";
/// Lowercase hex of [`SECRET`], the `cleartext` token.
const SECRET_HEX: &str = "67656865696d";

async fn echo_node(config: NodeConfig) -> (Node, String) {
    let node = Node::start(config).await.unwrap();
    let echo = node
        .rcv()
        .default(|cx, msg| {
            let (reply, tag, n): (String, String, u32) = msg.decode().map_err(|e| e.to_string())?;
            cx.node.snd(&reply, &(tag, n)).map_err(|e| e.to_string())
        })
        .start();
    (node, echo)
}

async fn round_trip(healthy: &Node, port: &str, n: u32) {
    let (me, mut rx) = healthy.port_stream();
    healthy.snd(port, &(me.id(), "echo", n)).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no echo from the node under test")
        .unwrap();
    let (tag, got): (String, u32) = m.decode().unwrap();
    assert_eq!((tag.as_str(), got), ("echo", n));
}

/// The minimal client of the Perl documentation (AEMP-NOTES §1.16): greeting, nonce, then
/// `cleartext;<hex secret>;json`, ignoring the node's own auth line. Returns the node's line 1
/// and, if the node did not close the connection within `wait`, the still open connection.
async fn simple_client(
    addr: &str,
    id: &str,
    wait: Duration,
) -> (String, Option<BufReader<TcpStream>>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut s = BufReader::new(stream);
    s.get_mut()
        .write_all(format!("aemp;0;{id};hmac_md6_64_256;json\nbm9uY2U\n").as_bytes())
        .await
        .unwrap();
    let mut line1 = String::new();
    s.read_line(&mut line1).await.unwrap();
    let mut nonce = String::new();
    s.read_line(&mut nonce).await.unwrap();
    s.get_mut()
        .write_all(format!("cleartext;{SECRET_HEX};json\n").as_bytes())
        .await
        .unwrap();
    let closed = tokio::time::timeout(wait, async {
        let mut line = String::new();
        loop {
            line.clear();
            match s.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    (line1.trim_end().to_owned(), (!closed).then_some(s))
}

#[actix_rt::test]
async fn a_cleartext_client_is_refused_and_the_node_keeps_serving() {
    let (node, echo) = echo_node(NodeConfig {
        node_id: "under-test".into(),
        ..NodeConfig::with_secret(SECRET)
    })
    .await;
    let addr = node.listeners()[0].to_string();
    let mut errors = node.link_errors();
    let healthy = Node::start(NodeConfig::with_secret(SECRET)).await.unwrap();
    healthy.add_node_addresses("under-test", vec![addr.clone()]);
    round_trip(&healthy, &echo, 0).await;

    let (line1, open) = simple_client(&addr, "plain-client", Duration::from_secs(3)).await;
    assert!(
        open.is_none(),
        "the node accepted `cleartext` and kept the link open"
    );
    assert!(
        !node.up_nodes().iter().any(|n| n == "plain-client"),
        "the cleartext client came up"
    );
    assert!(
        !line1.contains("cleartext"),
        "the node advertises cleartext: {line1}"
    );

    // The refusal is reported as such, and does not repeat the token.
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = errors.recv().await.unwrap();
            if let TransportError::Handshake { source, .. } = &*e.error
                && *source
                    == (HandshakeError::CleartextRefused {
                        peer: PeerName(Some("plain-client".into())),
                    })
            {
                return e.error.to_string();
            }
        }
    })
    .await
    .expect("no CleartextRefused link error for the cleartext client");
    assert!(err.contains("cleartext"), "{err}");
    assert!(!err.contains(SECRET_HEX) && !err.contains(SECRET), "{err}");

    for n in 1..5 {
        round_trip(&healthy, &echo, n).await;
    }
    assert_eq!(node.up_nodes(), vec![healthy.id().to_owned()]);
}

#[actix_rt::test]
async fn with_allow_cleartext_the_simple_client_links() {
    let (node, _echo) = echo_node(NodeConfig {
        node_id: "permissive".into(),
        allow_cleartext: true,
        ..NodeConfig::with_secret(SECRET)
    })
    .await;
    let addr = node.listeners()[0].to_string();
    let (line1, open) = simple_client(&addr, "plain-client", Duration::from_millis(500)).await;
    let _open = open.expect("the node refused an allowed cleartext client");
    assert!(
        line1.split(';').nth(3).unwrap().ends_with(",cleartext"),
        "{line1}"
    );
    for _ in 0..100 {
        if node.up_nodes().iter().any(|n| n == "plain-client") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the cleartext client never came up: {:?}", node.up_nodes());
}
