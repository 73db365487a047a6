//! Binds and seeds in Perl's syntax, over real loopback sockets: ephemeral ports are announced
//! as the ports actually bound, a seed list dials each address, and a bad address fails the
//! start naming its text.

use std::net::SocketAddr;
use std::time::Duration;

use aemp::net::addr::AddrError;
use aemp::node::{AddressRole, Node, NodeConfig, NodeError};

const SECRET: &[u8] = b"binds-secret";

fn config(binds: &[&str], seeds: &[String]) -> NodeConfig {
    NodeConfig {
        binds: binds.iter().map(|b| b.to_string()).collect(),
        seeds: seeds.to_vec(),
        workers: 1,
        ..NodeConfig::with_secret(SECRET)
    }
}

/// A second loopback address: every 127/8 address is loopback on Linux, elsewhere maybe not.
fn second_loopback() -> &'static str {
    match std::net::TcpListener::bind("127.0.0.2:0") {
        Ok(_) => "127.0.0.2",
        Err(_) => "127.0.0.1",
    }
}

/// Waits until `node` has a link to `other`.
async fn linked(node: &Node, other: &str) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !node.up_nodes().iter().any(|n| n == other) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{node:?} did not link to {other}");
}

#[actix_rt::test]
async fn ephemeral_ports_on_two_addresses_are_announced_as_bound() {
    let second = second_loopback();
    let list = format!("127.0.0.1:*,{second}:0");
    let a = Node::start(config(&[&list], &[])).await.unwrap();
    let bound = a.listeners();
    assert_eq!(bound.len(), 2, "{bound:?}");
    assert_eq!(bound[0].ip().to_string(), "127.0.0.1");
    assert_eq!(bound[1].ip().to_string(), second);
    assert!(bound.iter().all(|sa| sa.port() != 0), "{bound:?}");
    // What the node tells its peers about itself: the concrete `ip:port`s.
    let announced = a.known_listeners(a.id()).unwrap();
    let want: Vec<String> = bound.iter().map(SocketAddr::to_string).collect();
    assert_eq!(announced, want);
    // Each of them is a working listener.
    for addr in &bound {
        let b = Node::start(config(&[], &[addr.to_string()])).await.unwrap();
        linked(&b, a.id()).await;
        b.shutdown();
    }
    a.shutdown();
}

#[actix_rt::test]
async fn a_seed_list_dials_every_address() {
    let a = Node::start(config(&["127.0.0.1:0"], &[])).await.unwrap();
    // Nothing listens on port 1 here: that address fails, the next one links.
    let seeds = vec![format!("127.0.0.1:1,{}", a.listeners()[0])];
    let b = Node::start(config(&["127.0.0.1:*"], &seeds)).await.unwrap();
    linked(&b, a.id()).await;
    linked(&a, b.id()).await;
    a.shutdown();
    b.shutdown();
}

#[actix_rt::test]
async fn a_bad_bind_or_seed_fails_the_start_naming_its_text() {
    let err = Node::start(config(&["127.0.0.1:0", "[::1"], &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            NodeError::Address { role: AddressRole::Bind, source: AddrError::Unclosed { text } }
                if text == "[::1"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("bind") && err.to_string().contains("\"[::1\""));

    let err = Node::start(config(&[], &["127.0.0.1:4040,host:1:2".into()]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            NodeError::Address { role: AddressRole::Seed, source: AddrError::Colons { text } }
                if text == "host:1:2"
        ),
        "{err:?}"
    );
    let err = Node::start(config(&["127.0.0.1:70000"], &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            NodeError::Address {
                source: AddrError::PortRange { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn a_port_in_use_fails_the_start_naming_the_address() {
    let a = Node::start(config(&["127.0.0.1:0"], &[])).await.unwrap();
    let taken = a.listeners()[0].to_string();
    let err = Node::start(config(&[&taken], &[])).await.unwrap_err();
    assert!(
        matches!(&err, NodeError::Bind { addr, .. } if *addr == taken),
        "{err:?}"
    );
    // The same address twice in the binds is bound once, as Perl does.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fixed = free.local_addr().unwrap().to_string();
    drop(free);
    let c = Node::start(config(&[&fixed, &fixed], &[])).await.unwrap();
    assert_eq!(c.listeners().len(), 1);
    c.shutdown();
    a.shutdown();
}
