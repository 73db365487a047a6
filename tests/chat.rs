//! The chat examples (`examples/chat_server.rs`, `examples/chat_client.rs`: typed remote actors
//! speaking the protocol of Perl's original `eg/chat_server` / `eg/chat_client`), run in-process
//! over real sockets, with pipes for the clients' terminals:
//!
//! * two Rust clients find the Rust server by its group and talk; one leaves, with its reason;
//! * a "Perl-shaped" client (untyped `snd`s, as a Perl node sends them) talks to the typed
//!   server next to a Rust client, survives its own junk, and leaves with a reason;
//! * the Rust client follows its server down (the `mon_link`) and joins the next one;
//! * a scripted Perl 1.30 node (the handshake of capture `p1b-chat`) plays `eg/chat_client`
//!   against the Rust server, and plays `eg/chat_server` for the Rust client.

mod common;

#[path = "../examples/chat_client.rs"]
#[allow(dead_code)]
mod chat_client;
#[path = "../examples/chat_server.rs"]
#[allow(dead_code)]
mod chat_server;

use std::time::Duration;

use aemp::node::{DialectMode, Node, NodeConfig, PortStream};
use aemp::proto::dialect::Dialect;
use aemp::proto::value::Value;
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

    /// Starts on its own node seeded with `seed` and waits until it has joined as `nick`.
    async fn joined(secret: &[u8], seed: &str, nick: &str) -> Client {
        let node = client_node(secret, seed, DialectMode::default()).await;
        let mut client = Client::start(node, nick);
        client.expect("connecting...").await;
        client.expect(&format!("{nick} (joins)")).await;
        client
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

/// The next message on an untyped port, as strings.
async fn next_strings(inbox: &mut PortStream) -> Vec<String> {
    let msg = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await
        .expect("a message within 10 s")
        .expect("the port is open");
    msg.decode().expect("strings")
}

#[actix_rt::test]
async fn two_rust_clients_find_the_typed_server_by_its_group_and_talk() {
    let secret = b"chat-secret";
    let server = rust_node("anon/", secret, NodeConfig::default()).await;
    let port = chat_server::serve(&server);
    assert_eq!(server.grp_get(chat_server::GROUP), [port]);
    let seed = server.listeners()[0].to_string();

    let mut alice = Client::joined(secret, &seed, "alice").await;
    let mut bob = Client::joined(secret, &seed, "bob").await;
    alice.expect("bob (joins)").await;

    // Lines typed in a burst reach everyone in order, interleaved as the server got them.
    for i in 0..5 {
        alice.type_line(&format!("alice {i}")).await;
    }
    for client in [&mut alice, &mut bob] {
        for i in 0..5 {
            client.expect(&format!("alice: alice {i}")).await;
        }
    }
    bob.type_line("hi alice, bob here").await;
    bob.expect("bob: hi alice, bob here").await;
    alice.expect("bob: hi alice, bob here").await;

    // Bob's node goes: the room hears why.
    bob.node.shutdown().await;
    let quits = alice.line().await;
    assert!(quits.starts_with("bob (quits, transport_error "), "{quits}");
    alice.type_line("bye bob").await;
    alice.expect("alice: bye bob").await;
    alice.node.shutdown();
    server.shutdown();
}

#[actix_rt::test]
async fn a_perl_shaped_untyped_client_talks_to_the_typed_server() {
    let secret = b"chat-secret";
    let server = rust_node("anon/", secret, NodeConfig::default()).await;
    let room = chat_server::serve(&server);
    let seed = server.listeners()[0].to_string();

    // What a Perl node sends: `snd $server, join => $client, "perl"` and so on, no types.
    let perl = client_node(secret, &seed, DialectMode::default()).await;
    let (me, mut inbox) = perl.port_stream();
    perl.snd(&room, &("join", me.id(), "perl")).unwrap();
    assert_eq!(next_strings(&mut inbox).await, ["perl (joins)"]);

    let mut alice = Client::joined(secret, &seed, "alice").await;
    assert_eq!(next_strings(&mut inbox).await, ["alice (joins)"]);

    perl.snd(&room, &("privmsg", "perl", "hi")).unwrap();
    assert_eq!(next_strings(&mut inbox).await, ["perl: hi"]);
    alice.expect("perl: hi").await;

    // Junk: an unknown tag, a privmsg without its text. The room drops them and goes on.
    perl.snd(&room, &("shout", "perl", "HI")).unwrap();
    perl.snd(&room, &("privmsg", "perl")).unwrap();
    alice.type_line("still here?").await;
    assert_eq!(next_strings(&mut inbox).await, ["alice: still here?"]);
    alice.expect("alice: still here?").await;

    // The Perl client's port dies with a reason: the room hears its words.
    perl.kil(me.id(), vec!["bye".into(), Value::Int(42)])
        .unwrap();
    alice.expect("perl (quits, bye 42)").await;
    alice.node.shutdown();
    perl.shutdown();
    server.shutdown();
}

#[actix_rt::test]
async fn the_rust_client_follows_its_server_down_and_joins_the_next() {
    let secret = b"chat-secret";
    let server = rust_node("anon/", secret, NodeConfig::default()).await;
    let first = chat_server::serve(&server);
    let seed = server.listeners()[0].to_string();
    let mut alice = Client::joined(secret, &seed, "alice").await;

    // The server's port dies with a reason: the link kills the client's port with it.
    server.kil(&first, vec!["restarting".into()]).unwrap();
    alice.expect("disconnected restarting").await;

    // A new room on the same node (the dead port left the group): the client finds it.
    let second = chat_server::serve(&server);
    assert_ne!(first, second);
    alice.expect("connecting...").await;
    alice.expect("alice (joins)").await;
    alice.type_line("back").await;
    alice.expect("alice: back").await;
    alice.node.shutdown();
    server.shutdown();
}

#[actix_rt::test]
async fn perl_chat_client_joins_the_typed_server_next_to_a_rust_client() {
    let cap = Capture::load("p1b-chat");
    let server = rust_node("rust-chat", &cap.secret, NodeConfig::default()).await;
    let room = chat_server::serve(&server);
    let room_name = room.split_once('#').unwrap().1.to_owned();
    let addr = server.listeners()[0].to_string();

    // ref-alice, a Perl 1.30 node, dials the server; the server's introduction names its port
    // in the group, before `setup` and `seedme1`.
    let line = line1(&cap, 0, Dir::C2s, "ref-alice", &addr);
    let mut alice = Peer::dial(&addr, "ref-alice", line, &cap.secret).await;
    let spawn = alice.expect_tag("AnyEvent::MP::_spawn").await;
    let helper = spawn[2].as_str().unwrap().to_owned();
    for want in [
        json!(["", "mon1", &helper]),
        json!([&helper, "addr", [&addr]]),
        json!([&helper, "set", {"eg_chat_server": [&room]}]),
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
    // eg/chat_client found the room in the group: it joins and links its port to the room's.
    let client = "ref-alice#aSGpJQiF.c";
    alice
        .send_all(vec![
            json!([&room_name, "join", client, "alice"]),
            json!(["", "mon1", &room_name]),
        ])
        .await;
    alice.expect_eq(json!(["", "mon1", "aSGpJQiF.c"])).await;
    alice
        .expect_eq(json!(["aSGpJQiF.c", "alice (joins)"]))
        .await;

    // A Rust client joins the same room.
    let mut bob = Client::joined(&cap.secret, &addr, "bob").await;
    alice.expect_eq(json!(["aSGpJQiF.c", "bob (joins)"])).await;

    alice
        .send(json!([&room_name, "privmsg", "alice", "hello from alice"]))
        .await;
    alice
        .expect_eq(json!(["aSGpJQiF.c", "alice: hello from alice"]))
        .await;
    bob.expect("alice: hello from alice").await;
    bob.type_line("hi alice, bob here").await;
    bob.expect("bob: hi alice, bob here").await;
    alice
        .expect_eq(json!(["aSGpJQiF.c", "bob: hi alice, bob here"]))
        .await;

    // Alice's port dies (Perl 1.30 tells its monitors with kil0): bob hears the reason.
    alice
        .send(json!(["", "kil0", "aSGpJQiF.c", "die", "window closed"]))
        .await;
    bob.expect("alice (quits, die window closed)").await;
    // Then her node goes; the room goes on.
    drop(alice);
    bob.type_line("alone now").await;
    bob.expect("bob: alone now").await;
    bob.node.shutdown();
    server.shutdown();
}

#[actix_rt::test]
async fn the_rust_client_joins_perl_chat_server() {
    let cap = Capture::load("p1b-chat");
    let (listener, addr) = loopback().await;
    let p1b = DialectMode::Auto {
        default: Dialect::P1b,
    };
    let mut alice = Client::start(client_node(&cap.secret, &addr, p1b).await, "alice");
    let me = alice.node.id().to_owned();
    let my_addr = alice.node.listeners()[0].to_string();

    // ref-chat, a Perl 1.30 node running eg/chat_server, introduces itself with its group.
    let line = line1(&cap, 0, Dir::S2c, "ref-chat", &my_addr);
    let mut chat = Peer::accept(&listener, "ref-chat", line, &cap.secret).await;
    assert_eq!(chat.other, me);
    let (room, room_name) = ("ref-chat#Rm7Qz0Srv.a", "Rm7Qz0Srv.a");
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
        json!([h, "set", {"eg_chat_server": [room]}]),
        json!([h, "setup"]),
        json!([h, "seedme1"]),
    ])
    .await;
    // The client joins with a port of its own, then monitors the room.
    let join = chat
        .expect("the join", |p| p[0] == room_name && p[1] == "join")
        .await;
    let client = join[2].as_str().unwrap().to_owned();
    assert!(client.starts_with(&format!("{me}#")), "{join}");
    assert_eq!(join, json!([room_name, "join", &client, "alice"]));
    chat.expect_eq(json!(["", "mon1", room_name])).await;
    alice.expect("connecting...").await;

    // The Perl server monitors the client's port and relays the join.
    let local = client.split_once('#').unwrap().1.to_owned();
    chat.send_all(vec![
        json!(["", "mon1", &local]),
        json!([&local, "alice (joins)"]),
    ])
    .await;
    alice.expect("alice (joins)").await;
    alice.type_line("hello from alice").await;
    chat.expect_eq(json!([room_name, "privmsg", "alice", "hello from alice"]))
        .await;
    chat.send(json!([&local, "alice: hello from alice"])).await;
    alice.expect("alice: hello from alice").await;

    // The room's port dies: the client's port dies with it (the link), which the Perl server's
    // monitor of the client sees, and the client says so.
    chat.send(json!(["", "kil0", room_name, "shutdown"])).await;
    alice.expect("disconnected shutdown").await;
    chat.expect("the client's death", |p| {
        tag(p) == Some("kil0") && p[2] == local.as_str()
    })
    .await;
    alice.node.shutdown();
}
