//! A chat client for `chat_server`, in the shape of Perl AnyEvent::MP's `eg/chat_client`.
//!
//! `cargo run --example chat_client -- SERVER_ADDR SERVER_PORT NICK [SECRET]`: each line typed
//! is said in the room; what the room says is printed.

use tokio::io::{AsyncBufReadExt, BufReader};

use aemp::node::{Node, NodeConfig, split_port_id};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, server, nick, ..] = args.as_slice() else {
        eprintln!("usage: chat_client SERVER_ADDR SERVER_PORT NICK [SECRET]");
        std::process::exit(2);
    };
    let secret = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "chat example secret".into());
    let (addr, server, nick) = (addr.clone(), server.clone(), nick.clone());
    actix::System::new().block_on(async move {
        let node = Node::start(NodeConfig {
            binds: Vec::new(),
            ..NodeConfig::with_secret(secret)
        })
        .await
        .expect("start node");
        node.add_node_addresses(split_port_id(&server).0, vec![addr]);
        let (me, mut inbox) = node.port_stream();
        node.snd(&server, &("join", me.id(), nick.as_str()))
            .expect("join");
        let (tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
        node.mon(&server, move |reason| {
            let _ = tx.send(reason);
        })
        .detach();
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        loop {
            tokio::select! {
                line = stdin.next_line() => match line {
                    Ok(Some(text)) => { let _ = node.snd(&server, &("say", nick.as_str(), text)); }
                    _ => break,
                },
                Some(msg) = inbox.recv() => {
                    if let Ok((_, who, text)) = msg.decode::<(String, String, String)>() {
                        println!("<{who}> {text}");
                    }
                }
                Some(reason) = gone.recv() => {
                    eprintln!("server gone: {reason:?}");
                    break;
                }
            }
        }
    });
}
