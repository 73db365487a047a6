//! A chat client that finds its server by name, speaking the protocol of Perl AnyEvent::MP's
//! `eg/chat_client2`: it joins `chat_server` or Perl's `eg/chat_server2` alike.
//!
//! `cargo run --example chat_client -- NICK [SEED] [SECRET]`: each line typed is said in the
//! room; what the room says is printed.
//!
//! The client joins the network through its seed (the server's address will do), waits for a
//! member of the port group `eg_chat_server2`, and spawns `::client_connect(client_port, nick)`
//! on that member's node; the spawned port takes our lines, and our port gets the room's. When
//! that port dies, the client connects again.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use aemp::node::{Node, NodeConfig, split_port_id};
use aemp::proto::value::Value;

/// The group chat servers register in.
pub const GROUP: &str = "eg_chat_server2";

/// A value as Perl prints it: a string as it is.
fn word(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), |s| s.into_owned())
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
    let mut servers = node.grp_mon(GROUP);
    let mut lines = input.lines();
    loop {
        // Wait for a server to be known (Perl's client asks grp_get every second).
        let server_node = loop {
            if let Some(first) = servers.members().first() {
                break split_port_id(first).0.to_owned();
            }
            if servers.next_change().await.is_none() {
                return Ok(());
            }
        };
        say(&mut output, "connecting...").await?;
        let (client, mut inbox) = node.port_stream();
        let args = vec![client.id().into(), nick.into()];
        let server = node.spawn(&server_node, "::client_connect", args);
        let (tx, mut gone) = tokio::sync::oneshot::channel();
        let _watch = node.mon(&server, move |reason| drop(tx.send(reason)));
        loop {
            tokio::select! {
                line = lines.next_line() => match line? {
                    Some(text) => drop(node.snd(&server, &(text,))),
                    None => return Ok(()),
                },
                Some(msg) = inbox.recv() => {
                    let words: Vec<String> = msg.args().unwrap_or_default().iter().map(word).collect();
                    say(&mut output, &words.join(" ")).await?;
                }
                reason = &mut gone => {
                    let reason: Vec<String> = reason.unwrap_or_default().iter().map(word).collect();
                    say(&mut output, &format!("disconnected {}", reason.join(" "))).await?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                // Keeps `servers.members()` current for the next connection.
                Some(_) = servers.next_change() => {}
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
