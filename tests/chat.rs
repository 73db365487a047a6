//! The chat examples (`examples/chat_server.rs`, `examples/chat_client.rs`), run in-process with
//! pipes for the clients' terminals: two Rust clients find the Rust server by name and talk;
//! a scripted Perl 1.30 `eg/chat_client2` (capture `p1b-chat`) joins the Rust server next to a
//! Rust client; the Rust client joins a scripted Perl 1.30 `eg/chat_server2`.

mod common;

#[path = "../examples/chat_client.rs"]
#[allow(dead_code)]
mod chat_client;
#[path = "../examples/chat_server.rs"]
#[allow(dead_code)]
mod chat_server;

use std::time::Duration;

use aemp::node::{DialectMode, Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use common::scripted::{Peer, line1, loopback, rust_node, tag};
use common::{Capture, Dir};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};

/// A chat client running on its own node, with a pipe for its keyboard and one for its screen.
struct Client {
    node: Node,
    keyboard: DuplexStream,
    screen: Lines<BufReader<DuplexStream>>,
}

impl Client {
    fn start(node: Node, nick: &str) -> Client {
        let (keyboard, input) = tokio::io::duplex(4096);
        let (output, screen) = tokio::io::duplex(4096);
        let (n, nick) = (node.clone(), nick.to_owned());
        actix_rt::spawn(async move {
            chat_client::chat(&n, &nick, BufReader::new(input), output)
                .await
                .unwrap();
        });
        Client {
            node,
            keyboard,
            screen: BufReader::new(screen).lines(),
        }
    }

    async fn type_line(&mut self, text: &str) {
        self.keyboard
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line on the screen.
    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.screen.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
            .expect("the client runs")
    }

    async fn expect(&mut self, want: &str) {
        assert_eq!(self.line().await, want);
    }
}

async fn client_node(secret: &[u8], seed: &str, dialect: DialectMode) -> Node {
    rust_node(
        "anon/",
        secret,
        NodeConfig {
            seeds: vec![seed.to_owned()],
            dialect,
            ..NodeConfig::default()
        },
    )
    .await
}

#[actix_rt::test]
async fn two_rust_clients_find_the_rust_server_by_name_and_talk() {
    let secret = b"chat-secret";
    let server = rust_node("anon/", secret, NodeConfig::default()).await;
    let _registered = chat_server::serve(&server);
    let seed = server.listeners()[0].to_string();
    let auto = DialectMode::default();

    let mut alice = Client::start(client_node(secret, &seed, auto).await, "alice");
    alice.expect("connecting...").await;
    alice.expect("alice (joins)").await;
    let mut bob = Client::start(client_node(secret, &seed, auto).await, "bob");
    bob.expect("connecting...").await;
    bob.expect("bob (joins)").await;
    alice.expect("bob (joins)").await;

    alice.type_line("hello from alice").await;
    alice.expect("alice: hello from alice").await;
    bob.expect("alice: hello from alice").await;
    bob.type_line("hi alice, bob here").await;
    bob.expect("bob: hi alice, bob here").await;
    alice.expect("bob: hi alice, bob here").await;

    // Bob's node goes: the room hears why.
    bob.node.shutdown();
    let quits = alice.line().await;
    assert!(quits.starts_with("bob (quits, transport_error "), "{quits}");
    alice.node.shutdown();
    server.shutdown();
}

#[actix_rt::test]
async fn perl_chat_client2_joins_the_rust_server_next_to_a_rust_client() {
    let cap = Capture::load("p1b-chat");
    let server = rust_node("rust-chat", &cap.secret, NodeConfig::default()).await;
    let _registered = chat_server::serve(&server);
    let addr = server.listeners()[0].to_string();

    // conn0 of p1b-chat: ref-alice dials the server; the server's introduction names itself in
    // the group, before `setup` and `seedme1`.
    let line = line1(&cap, 0, Dir::C2s, "ref-alice", &addr);
    let mut alice = Peer::dial(&addr, "ref-alice", line, &cap.secret).await;
    let spawn = alice.expect_tag("AnyEvent::MP::_spawn").await;
    let helper = spawn[2].as_str().unwrap().to_owned();
    for want in [
        json!(["", "mon1", &helper]),
        json!([&helper, "addr", [&addr]]),
        json!([&helper, "set", {"eg_chat_server2": ["rust-chat"]}]),
        json!([&helper, "setup"]),
        json!([&helper, "seedme1"]),
    ] {
        assert_eq!(alice.recv(Duration::from_secs(5)).await, Some(want));
    }
    let h = "HfyVjGUWRhno1r0Q.b";
    alice
        .send_all(vec![
            json!([
                "",
                "AnyEvent::MP::_spawn",
                h,
                "AnyEvent::MP::Global::connect",
                0,
                "ref-alice"
            ]),
            json!(["", "mon1", h]),
            json!([h, "addr", ["127.0.0.1:40739"]]),
            json!([h, "setup"]),
            json!([h, "seedme1"]),
        ])
        .await;
    // chat_client2 found the server in the group, and spawns its bridge head there.
    let (bridge, client) = ("HfyVjGUWRhno1r0Q.d", "ref-alice#aSGpJQiF.c");
    alice
        .send_all(vec![
            json!([
                "",
                "AnyEvent::MP::_spawn",
                bridge,
                "::client_connect",
                client,
                "alice"
            ]),
            json!(["", "mon1", bridge]),
        ])
        .await;
    alice.expect_eq(json!(["", "mon1", "aSGpJQiF.c"])).await;
    alice
        .expect_eq(json!(["aSGpJQiF.c", "alice (joins)"]))
        .await;

    // A Rust client joins the same room.
    let auto = DialectMode::default();
    let mut bob = Client::start(client_node(&cap.secret, &addr, auto).await, "bob");
    bob.expect("connecting...").await;
    bob.expect("bob (joins)").await;
    alice.expect_eq(json!(["aSGpJQiF.c", "bob (joins)"])).await;

    alice.send(json!([bridge, "hello from alice"])).await;
    alice
        .expect_eq(json!(["aSGpJQiF.c", "alice: hello from alice"]))
        .await;
    bob.expect("alice: hello from alice").await;
    bob.type_line("hi alice, bob here").await;
    bob.expect("bob: hi alice, bob here").await;
    alice
        .expect_eq(json!(["aSGpJQiF.c", "bob: hi alice, bob here"]))
        .await;

    // Alice's node goes: bob hears why.
    drop(alice);
    let quits = bob.line().await;
    assert!(
        quits.starts_with("alice (quits, transport_error ref-alice "),
        "{quits}"
    );
    bob.node.shutdown();
    server.shutdown();
}

#[actix_rt::test]
async fn the_rust_client_joins_perl_chat_server2() {
    let cap = Capture::load("p1b-chat");
    let (listener, addr) = loopback().await;
    let p1b = DialectMode::Auto {
        default: Dialect::P1b,
    };
    let mut alice = Client::start(client_node(&cap.secret, &addr, p1b).await, "alice");
    let me = alice.node.id().to_owned();
    let my_addr = alice.node.listeners()[0].to_string();

    // conn0 of p1b-chat, as ref-chat: it introduces itself with its group.
    let line = line1(&cap, 0, Dir::S2c, "ref-chat", &my_addr);
    let mut chat = Peer::accept(&listener, "ref-chat", line, &cap.secret).await;
    assert_eq!(chat.other, me);
    let h = "scCooerWIunkceMx0.a";
    chat.send_all(vec![
        json!([
            "",
            "AnyEvent::MP::_spawn",
            h,
            "AnyEvent::MP::Global::connect",
            0,
            "ref-chat"
        ]),
        json!(["", "mon1", h]),
        json!([h, "addr", [&addr]]),
        json!([h, "set", {"eg_chat_server2": ["ref-chat"]}]),
        json!([h, "setup"]),
        json!([h, "seedme1"]),
    ])
    .await;
    // The client spawns its bridge head on ref-chat and monitors it.
    let spawn = chat
        .expect("the ::client_connect spawn", |p| {
            tag(p) == Some("AnyEvent::MP::_spawn") && p[3] == "::client_connect"
        })
        .await;
    let bridge = spawn[2].as_str().unwrap().to_owned();
    let client = spawn[4].as_str().unwrap().to_owned();
    assert!(client.starts_with(&format!("{me}#")), "{spawn}");
    assert_eq!(spawn[5], "alice", "{spawn}");
    chat.expect_eq(json!(["", "mon1", &bridge])).await;
    alice.expect("connecting...").await;

    let local = client.split_once('#').unwrap().1.to_owned();
    chat.send_all(vec![
        json!(["", "mon1", &local]),
        json!([&local, "alice (joins)"]),
    ])
    .await;
    alice.expect("alice (joins)").await;
    alice.type_line("hello from alice").await;
    chat.expect_eq(json!([&bridge, "hello from alice"])).await;
    chat.send(json!([&local, "alice: hello from alice"])).await;
    alice.expect("alice: hello from alice").await;
    alice.node.shutdown();
}
