//! A chat server that clients find by name, speaking the protocol of Perl AnyEvent::MP's
//! `eg/chat_server2`, so that Perl's `eg/chat_client2` can join it (and `chat_client` can join
//! Perl's server).
//!
//! `cargo run --example chat_server -- [BIND] [SECRET]`
//!
//! The server registers its node in the port group `eg_chat_server2`. A client spawns
//! `::client_connect(client_port, nick)` on the server's node: that port relays each line
//! `[text]` sent to it as `[nick: text]` to every client, and the room hears `nick (joins)` and,
//! once the client's port is gone, `nick (quits, reason…)`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aemp::node::{GroupGuard, Node, NodeConfig};
use aemp::proto::value::Value;

/// The group the server registers in.
pub const GROUP: &str = "eg_chat_server2";
/// The init function clients spawn on the server's node.
pub const CLIENT_CONNECT: &str = "::client_connect";

type Clients = Arc<Mutex<BTreeSet<String>>>;

/// A value as Perl prints it: a string as it is.
pub fn word(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), |s| s.into_owned())
}

/// Values as Perl's `"@_"` shows them: separated by spaces.
pub fn words(values: &[Value]) -> String {
    values.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// Sends `text` to every client.
fn relay(node: &Node, clients: &Clients, text: String) {
    println!("relaying: {text}");
    let clients = clients.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for client in clients {
        let _ = node.snd(&client, &(text.as_str(),));
    }
}

/// `::client_connect(client, nick)`: the port `port_id` speaks for one client.
fn client_connect(
    node: &Node,
    port_id: String,
    args: Vec<Value>,
    clients: &Clients,
) -> Result<(), String> {
    let (Some(client), Some(nick)) = (args.first(), args.get(1)) else {
        return Err("usage: ::client_connect client_port nick".into());
    };
    let (client, nick) = (word(client), word(nick));
    let (room, who) = (clients.clone(), nick.clone());
    node.rcv()
        .default(move |cx, msg| {
            let line = msg.args().map_err(|e| e.to_string())?;
            let text = line.first().map(word).unwrap_or_default();
            relay(&cx.node, &room, format!("{who}: {text}"));
            Ok(())
        })
        .start_named(&port_id)
        .map_err(|e| e.to_string())?;
    // This port dies with the client; the room hears why.
    let (n, me) = (node.clone(), port_id);
    node.mon(&client, move |reason| drop(n.kil(&me, reason)))
        .detach();
    let (n, room, gone) = (node.clone(), clients.clone(), client.clone());
    let quits = nick.clone();
    node.mon(&client, move |reason| {
        room.lock().unwrap_or_else(|e| e.into_inner()).remove(&gone);
        relay(&n, &room, format!("{quits} (quits, {})", words(&reason)));
    })
    .detach();
    clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(client);
    relay(node, clients, format!("{nick} (joins)"));
    Ok(())
}

/// Lets clients connect to `node` and registers it under [`GROUP`]; the registration lasts as
/// long as the guard.
pub fn serve(node: &Node) -> GroupGuard {
    let clients = Clients::default();
    node.register_init(CLIENT_CONNECT, move |node, port_id, args| {
        client_connect(node, port_id, args, &clients)
    });
    node.grp_reg(GROUP, node.id())
        .expect("the node port can be registered")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:4040".into());
    let secret = args.next().unwrap_or_else(|| "chat example secret".into());
    actix::System::new().block_on(async move {
        let node = Node::start(NodeConfig {
            binds: vec![bind],
            ..NodeConfig::with_secret(secret)
        })
        .await
        .expect("start node");
        let _registered = serve(&node);
        eprintln!(
            "server ready: node {} on {}",
            node.id(),
            node.listeners()[0]
        );
        tokio::signal::ctrl_c().await.ok();
    });
}
