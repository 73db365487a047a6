//! A chat server on typed remote actors, speaking the protocol of Perl AnyEvent::MP's original
//! `eg/chat_server` / `eg/chat_client`: Perl's `eg/chat_client` joins it, and `chat_client` joins
//! Perl's `eg/chat_server`.
//!
//! `cargo run --example chat_server -- [BIND] [SECRET]`
//!
//! # Wire protocol
//!
//! The server is one port, registered in the port group [`GROUP`] (`eg_chat_server`). It takes
//!
//! | message | Rust type | meaning |
//! | --- | --- | --- |
//! | `["join", client_port, nick]` | [`Join`] | `client_port` enters the room as `nick` |
//! | `["privmsg", nick, text]` | [`Privmsg`] | `nick` says `text` |
//!
//! and sends every client each line the room hears as a one-element message `[text]`:
//! `nick (joins)` when a client joins, `nick: text` for a privmsg, and
//! `nick (quits, reason words)` once the client's port is gone (the server monitors each client
//! port it is told of; the reason is the port's kill reason, its words separated by spaces).
//!
//! A message with another tag or fields that do not decode is logged and dropped (the port is
//! [`tolerant`](aemp::node::Expose::tolerant)): one bad client does not close the room, where
//! Perl's `rcv` would kill the server port.

use std::collections::BTreeMap;

use actix::{Actor, AsyncContext, Context, Handler};
use aemp::node::{Exposed, GroupGuard, MonitorGuard, Node, NodeConfig, RemoteMessage};
use aemp::proto::value::Value;
use serde::{Deserialize, Serialize};

/// The group the server's port registers in.
pub const GROUP: &str = "eg_chat_server";

/// `["join", client_port, nick]`: `client` enters the room as `nick`.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "join")]
pub struct Join {
    /// The port that gets the room's lines.
    pub client: String,
    /// The name the room knows the client by.
    pub nick: String,
}

/// `["privmsg", nick, text]`: `nick` says `text` to the room.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "privmsg")]
pub struct Privmsg {
    /// Who speaks.
    pub nick: String,
    /// What they say.
    pub text: String,
}

/// A client's port died (sent by its monitor; not a remote message).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Quit {
    client: String,
    nick: String,
    reason: Vec<Value>,
}

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

/// The room: one port, its group registration and its clients.
pub struct ChatServer {
    node: Node,
    /// Each client's port and the monitor that announces its departure.
    clients: BTreeMap<String, MonitorGuard>,
    /// The group registration and the port live as long as the actor (the name goes first).
    _group: GroupGuard,
    _port: Exposed,
}

impl ChatServer {
    /// Sends `text` to every client, as `[text]`.
    fn relay(&self, text: &str) {
        println!("relaying: {text}");
        for client in self.clients.keys() {
            if let Err(e) = self.node.snd(client, &(text,)) {
                tracing::warn!(client, "not relayed: {e}");
            }
        }
    }
}

impl Actor for ChatServer {
    type Context = Context<Self>;
}

impl Handler<Join> for ChatServer {
    type Result = ();
    fn handle(&mut self, Join { client, nick }: Join, ctx: &mut Context<Self>) {
        // The monitor tells the actor; a client that joins twice is announced once.
        let me = ctx.address();
        let (who, name) = (client.clone(), nick.clone());
        let watch = self.node.mon(&client, move |reason| {
            me.do_send(Quit {
                client: who,
                nick: name,
                reason,
            });
        });
        self.clients.insert(client, watch);
        self.relay(&format!("{nick} (joins)"));
    }
}

impl Handler<Privmsg> for ChatServer {
    type Result = ();
    fn handle(&mut self, Privmsg { nick, text }: Privmsg, _: &mut Context<Self>) {
        self.relay(&format!("{nick}: {text}"));
    }
}

impl Handler<Quit> for ChatServer {
    type Result = ();
    fn handle(&mut self, quit: Quit, _: &mut Context<Self>) {
        if let Some(watch) = self.clients.remove(&quit.client) {
            // It fired already; detaching just forgets it.
            watch.detach();
        }
        self.relay(&format!("{} (quits, {})", quit.nick, words(&quit.reason)));
    }
}

/// Starts the room on `node`: its port, registered in [`GROUP`]. Returns the port id. The room
/// lives as long as the actix system.
pub fn serve(node: &Node) -> String {
    let node = node.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    ChatServer::create(move |ctx| {
        let port = node
            .expose(ctx.address())
            .tell::<Join>()
            .tell::<Privmsg>()
            .tolerant()
            .start();
        let group = node
            .grp_reg(GROUP, port.id())
            .expect("a fresh port registers");
        let _ = tx.send(port.id().to_owned());
        ChatServer {
            node,
            clients: BTreeMap::new(),
            _group: group,
            _port: port,
        }
    });
    rx.recv().expect("create runs its closure at once")
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
        let port = serve(&node);
        eprintln!("server ready: port {port} on {}", node.listeners()[0]);
        tokio::signal::ctrl_c().await.ok();
    });
}
