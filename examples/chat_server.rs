//! A chat server, in the shape of Perl AnyEvent::MP's `eg/chat_server`.
//!
//! `cargo run --example chat_server -- [BIND] [SECRET]` prints its port id. Clients send
//! `["join", client_port, nick]` and `["say", nick, text]`; every member gets `["msg", nick,
//! text]`. A client whose port dies (or whose node goes away) is dropped from the room.

use std::cell::RefCell;
use std::rc::Rc;

use aemp::node::{Node, NodeConfig};

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
        let members: Rc<RefCell<Vec<(String, String)>>> = Rc::default();
        let broadcast = |node: &Node, members: &[(String, String)], nick: &str, text: &str| {
            for (port, _) in members {
                let _ = node.snd(port, &("msg", nick, text));
            }
        };
        let (m1, m2, m3) = (members.clone(), members.clone(), members);
        let port = node
            .rcv()
            .on("join", move |cx, msg| {
                let (_, client, nick): (String, String, String) =
                    msg.decode().map_err(|e| e.to_string())?;
                // When the client's port dies, tell ourselves, so that it leaves the room.
                let (node, me, who) = (cx.node.clone(), cx.port.clone(), client.clone());
                cx.node
                    .mon(&client, move |_| {
                        let _ = node.snd(&me, &("left", who));
                    })
                    .detach();
                m1.borrow_mut().push((client, nick.clone()));
                broadcast(&cx.node, &m1.borrow(), "server", &format!("{nick} joined"));
                Ok(())
            })
            .on("say", move |cx, msg| {
                let (_, nick, text): (String, String, String) =
                    msg.decode().map_err(|e| e.to_string())?;
                broadcast(&cx.node, &m2.borrow(), &nick, &text);
                Ok(())
            })
            .on("left", move |cx, msg| {
                let (_, client): (String, String) = msg.decode().map_err(|e| e.to_string())?;
                let mut members = m3.borrow_mut();
                if let Some(i) = members.iter().position(|(p, _)| *p == client) {
                    let (_, nick) = members.remove(i);
                    broadcast(&cx.node, &members, "server", &format!("{nick} left"));
                }
                Ok(())
            })
            .start();
        println!("chat server on {} port {port}", node.listeners()[0]);
        tokio::signal::ctrl_c().await.ok();
    });
}
