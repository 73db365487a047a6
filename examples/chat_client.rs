//! A chat client on typed remote actors, speaking the protocol of Perl AnyEvent::MP's original
//! `eg/chat_client` / `eg/chat_server`: it joins `chat_server` or Perl's `eg/chat_server` alike.
//!
//! `cargo run --example chat_client -- NICK [SEED] [SECRET]`: each line typed is said in the
//! room; what the room says is printed.
//!
//! # Wire protocol
//!
//! The client joins the network through its seed (the server's address will do) and looks for
//! a member of the port group [`GROUP`] (`eg_chat_server`) every second until there is one: the
//! server's port. Then it
//!
//! 1. makes a port of its own, which gets the room's lines as one-element messages `[text]`;
//! 2. sends the server `["join", client_port, nick]` ([`Join`]);
//! 3. links its port to the server's (Perl's `mon $server, $client`,
//!    [`Node::mon_link`]): when the server's port dies with a reason, so does the client's;
//! 4. sends each line typed as `["privmsg", nick, text]` ([`Privmsg`]).
//!
//! When its port dies, the client prints `disconnected reason words` and, a second later, looks
//! for a server again.

use std::time::Duration;

use aemp::node::{Node, NodeConfig, PortRef, RemoteMessage};
use aemp::proto::value::Value;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The group chat servers register their port in.
pub const GROUP: &str = "eg_chat_server";

/// `["join", client_port, nick]`.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "join")]
pub struct Join {
    /// Our port, which gets the room's lines.
    pub client: String,
    /// Our name in the room.
    pub nick: String,
}

/// `["privmsg", nick, text]`.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "privmsg")]
pub struct Privmsg {
    /// Our name in the room.
    pub nick: String,
    /// A line typed.
    pub text: String,
}

/// Values as Perl's `"@_"` shows them: strings as they are, separated by spaces.
fn words(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), |s| s.into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes one line of output.
async fn say(output: &mut (impl AsyncWrite + Unpin), line: &str) -> std::io::Result<()> {
    output.write_all(format!("{line}\n").as_bytes()).await?;
    output.flush().await
}

/// Chats as `nick` on `node`: lines from `input` go to the room, what the room says goes to
/// `output`, a line each. Returns at the end of `input`.
pub async fn chat(
    node: &Node,
    nick: &str,
    input: impl AsyncBufRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    // A node that is not a global node knows a database family (a P2 group) only while it
    // monitors it: keep a monitor of the group for `grp_get` to see the server.
    let mut group = node.grp_mon(GROUP);
    let mut lines = input.lines();
    loop {
        // Look for a server every second.
        let server = loop {
            if let Some(first) = node.grp_get(GROUP).into_iter().next() {
                break first;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                Some(_) = group.next_change() => {}
            }
        };
        say(&mut output, "connecting...").await?;
        let (client, mut inbox) = node.port_stream();
        let join: PortRef<Join> = node.port_ref(&server);
        let privmsg: PortRef<Privmsg> = join.cast();
        // A do_send fails only for a message that does not encode or a name without a port.
        join.do_send(Join {
            client: client.id().to_owned(),
            nick: nick.to_owned(),
        })
        .expect("a join encodes");
        let _link = node.mon_link(&server, client.id());
        let (tx, mut gone) = tokio::sync::oneshot::channel();
        let _watch = node.mon(client.id(), move |reason| drop(tx.send(reason)));
        loop {
            tokio::select! {
                line = lines.next_line() => match line? {
                    Some(text) => {
                        let msg = Privmsg { nick: nick.to_owned(), text };
                        privmsg.do_send(msg).expect("a privmsg encodes");
                    }
                    None => return Ok(()),
                },
                Some(msg) = inbox.recv() => {
                    say(&mut output, &words(&msg.args().unwrap_or_default())).await?;
                }
                reason = &mut gone => {
                    let reason = words(&reason.unwrap_or_default());
                    say(&mut output, &format!("disconnected {reason}")).await?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                // Keeps the group monitor drained.
                Some(_) = group.next_change() => {}
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(nick) = args.first().cloned() else {
        eprintln!("usage: chat_client NICK [SEED] [SECRET]");
        std::process::exit(2);
    };
    let seed = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4040".into());
    let secret = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "chat example secret".into());
    actix::System::new().block_on(async move {
        let node = Node::start(NodeConfig {
            seeds: vec![seed],
            ..NodeConfig::with_secret(secret)
        })
        .await
        .expect("start node");
        let stdin = BufReader::new(tokio::io::stdin());
        if let Err(e) = chat(&node, &nick, stdin, tokio::io::stdout()).await {
            eprintln!("chat_client: {e}");
        }
    });
}
