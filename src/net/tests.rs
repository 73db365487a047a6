//! `net` on its own: two transports over loopback, each reporting to a recording stand-in for
//! the node (no `node` code involved), as the contract in [`super::contract`] promises.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use super::contract::{
    Down, Line1, LinkEnd, LinkTx, PacketSink, Refusal, TransportConfig, TransportHooks, Up,
};
use super::transport::{self, DialAs};
use crate::proto::dialect::Dialect;
use crate::proto::framing::{self, FramingError, Packet};
use crate::proto::value::Value;

/// What a stand-in node saw.
#[derive(Debug)]
enum Seen {
    Line1(String),
    Up(String, LinkTx),
    Down(Down),
    Packet(Value),
}

impl std::fmt::Debug for LinkTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkTx({}, {})", self.conn, self.dialect)
    }
}

impl std::fmt::Debug for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Down({:?}, up {}, {})", self.node, self.was_up, self.end)
    }
}

/// A node stand-in: refuses line 1 from `refuse`, records everything else.
struct FakeNode {
    seen: mpsc::UnboundedSender<Seen>,
    refuse: Option<String>,
}

impl Actor for FakeNode {
    type Context = Context<Self>;
}

impl Handler<Line1> for FakeNode {
    type Result = Result<(), Refusal>;
    fn handle(&mut self, msg: Line1, _: &mut Context<Self>) -> Self::Result {
        let _ = self.seen.send(Seen::Line1(msg.node.clone()));
        match &self.refuse {
            Some(node) if *node == msg.node => Err(Refusal::AlreadyConnected),
            _ => Ok(()),
        }
    }
}

/// Packets go back to the test through the same channel, in batches as a node hands them to a
/// stream port: only when the reader flushes. A packet to `refuse` is refused, as a node refuses
/// one it cannot read.
struct Sink(mpsc::UnboundedSender<Seen>, Vec<Value>);

impl PacketSink for Sink {
    fn deliver(&mut self, packet: Packet) -> Result<(), FramingError> {
        if packet.dest()? == "refuse" {
            return Err(FramingError::BadDestination {
                framing: packet.framing(),
            });
        }
        self.1.push(packet.to_value()?);
        Ok(())
    }
    fn flush(&mut self) {
        for v in self.1.drain(..) {
            let _ = self.0.send(Seen::Packet(v));
        }
    }
    fn backlogged(&mut self) -> bool {
        false
    }
}

impl Handler<Up> for FakeNode {
    type Result = Option<Box<dyn PacketSink>>;
    fn handle(&mut self, msg: Up, _: &mut Context<Self>) -> Self::Result {
        let _ = self.seen.send(Seen::Up(msg.node, msg.link));
        Some(Box::new(Sink(self.seen.clone(), Vec::new())))
    }
}

impl Handler<Down> for FakeNode {
    type Result = ();
    fn handle(&mut self, msg: Down, _: &mut Context<Self>) {
        let _ = self.seen.send(Seen::Down(msg));
    }
}

fn hooks(
    id: &str,
    secret: &[u8],
    refuse: Option<&str>,
) -> (Arc<TransportHooks>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let node = FakeNode {
        seen: tx,
        refuse: refuse.map(str::to_owned),
    }
    .start();
    let config = TransportConfig {
        node_id: id.into(),
        secret: secret.to_vec(),
        allow_cleartext: false,
        accept_dialect: None,
        tls: None,
        require_tls: false,
        handshake_timeout: Duration::from_secs(5),
        max_handshakes: 16,
        send_queue_bytes: 1 << 20,
        write_timeout: Duration::from_secs(5),
        max_packet: 1 << 20,
        p1_keepalive: None,
        liveness_timeout: Some(Duration::from_secs(30)),
    };
    let hooks = TransportHooks::new(
        config,
        node.clone().recipient(),
        node.clone().recipient(),
        node.recipient(),
    );
    (Arc::new(hooks), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the transport reports in time")
        .expect("the stand-in node is alive")
}

/// Accepts one connection on a fresh loopback listener into `hooks`; returns its address.
async fn accept_one(hooks: Arc<TransportHooks>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let worker = actix::Arbiter::current();
    std::thread::spawn(move || {
        if let Ok((stream, peer)) = listener.accept() {
            let _ = stream.set_nonblocking(true);
            let _ = worker.spawn(async move {
                transport::accept(
                    hooks,
                    &actix::Arbiter::current(),
                    stream,
                    peer.to_string(),
                    1,
                )
            });
        }
    });
    addr
}

#[actix_rt::test]
async fn two_transports_link_and_move_packets_with_no_node() {
    let (a, mut a_seen) = hooks("net-a", b"s3cret", None);
    let (b, mut b_seen) = hooks("net-b", b"s3cret", None);
    let addr = accept_one(b).await;
    transport::dial(
        a,
        &actix::Arbiter::current(),
        addr,
        7,
        DialAs::fixed(Dialect::P2),
    );

    assert!(matches!(next(&mut a_seen).await, Seen::Line1(n) if n == "net-b"));
    let Seen::Up(node, link) = next(&mut a_seen).await else {
        panic!("the dialler's link comes up");
    };
    assert_eq!(
        (node.as_str(), link.conn, link.dialect),
        ("net-b", 7, Dialect::P2)
    );
    assert!(matches!(next(&mut b_seen).await, Seen::Line1(n) if n == "net-a"));
    let Seen::Up(_, b_link) = next(&mut b_seen).await else {
        panic!("the listener's link comes up");
    };

    // A packet queued on one end reaches the other end's sink, in order.
    for i in 0..3 {
        let pushed = link
            .queue
            .push(|buf| framing::encode_packet(link.framing, "port", &("m", i), buf));
        assert!(pushed.is_ok());
    }
    for i in 0..3 {
        match next(&mut b_seen).await {
            Seen::Packet(v) => assert_eq!(
                v,
                Value::Array(vec!["port".into(), "m".into(), Value::Int(i)])
            ),
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    // Closing a link's queue ends it: that side reports `Closed`, the other `PeerLeft` (the
    // close came between packets).
    link.queue.close();
    match next(&mut a_seen).await {
        Seen::Down(d) => {
            assert!(d.was_up);
            assert!(matches!(d.end, LinkEnd::Closed), "{}", d.end);
            assert_eq!(d.node.as_deref(), Some("net-b"));
        }
        other => panic!("expected down, got {other:?}"),
    }
    match next(&mut b_seen).await {
        Seen::Down(d) => {
            assert!(d.was_up && matches!(d.end, LinkEnd::PeerLeft), "{d:?}");
        }
        other => panic!("expected down, got {other:?}"),
    }
    drop(b_link);
}

#[actix_rt::test]
async fn a_packet_the_sink_refuses_ends_the_link_after_the_ones_before_it() {
    let (a, mut a_seen) = hooks("net-h", b"s3cret", None);
    let (b, mut b_seen) = hooks("net-i", b"s3cret", None);
    let addr = accept_one(b).await;
    transport::dial(
        a,
        &actix::Arbiter::current(),
        addr,
        4,
        DialAs::fixed(Dialect::P0),
    );
    let link = loop {
        if let Seen::Up(_, link) = next(&mut a_seen).await {
            break link;
        }
    };
    // One write (so normally one read on the other end): the packet before the refused one is
    // in the same batch, and must still be handed over.
    let pushed = link.queue.push(|buf| {
        framing::encode_packet(link.framing, "port", &("before",), buf)?;
        framing::encode_packet(link.framing, "refuse", &("bad",), buf)?;
        framing::encode_packet(link.framing, "port", &("after",), buf)
    });
    assert!(pushed.is_ok());
    let mut packets = Vec::new();
    let down = loop {
        match next(&mut b_seen).await {
            Seen::Line1(_) | Seen::Up(..) => {}
            Seen::Packet(v) => packets.push(v),
            Seen::Down(d) => break d,
        }
    };
    assert_eq!(
        packets,
        vec![Value::Array(vec!["port".into(), "before".into()])]
    );
    assert!(down.was_up);
    let LinkEnd::Failed(e) = &down.end else {
        panic!("{}", down.end)
    };
    assert!(
        matches!(
            &**e,
            super::TransportError::Framing {
                source: FramingError::BadDestination { .. },
                ..
            }
        ),
        "{e}"
    );
    // The refusing end closed the connection: the sender sees it go.
    loop {
        if let Seen::Down(d) = next(&mut a_seen).await {
            assert!(d.was_up, "{d:?}");
            break;
        }
    }
}

#[actix_rt::test]
async fn a_refusal_at_line_1_and_a_wrong_secret_come_back_typed() {
    // The listener's node refuses the dialler at line 1.
    let (a, mut a_seen) = hooks("net-c", b"s3cret", None);
    let (b, mut b_seen) = hooks("net-d", b"s3cret", Some("net-c"));
    let addr = accept_one(b).await;
    transport::dial(
        a,
        &actix::Arbiter::current(),
        addr.clone(),
        1,
        DialAs::fixed(Dialect::P0),
    );
    assert!(matches!(next(&mut b_seen).await, Seen::Line1(n) if n == "net-c"));
    match next(&mut b_seen).await {
        Seen::Down(d) => {
            assert!(!d.was_up);
            assert_eq!(d.node.as_deref(), Some("net-c"));
            let LinkEnd::Failed(e) = &d.end else {
                panic!("{}", d.end)
            };
            assert!(e.to_string().contains("already connected"), "{e}");
        }
        other => panic!("expected down, got {other:?}"),
    }
    loop {
        if let Seen::Down(d) = next(&mut a_seen).await {
            assert!(!d.was_up, "{d:?}");
            break;
        }
    }

    // Different secrets: both ends fail their handshake and report it, never up.
    let (c, mut c_seen) = hooks("net-e", b"one", None);
    let (d, mut d_seen) = hooks("net-f", b"two", None);
    let addr = accept_one(d).await;
    transport::dial(
        c,
        &actix::Arbiter::current(),
        addr,
        2,
        DialAs::fixed(Dialect::P2),
    );
    for seen in [&mut c_seen, &mut d_seen] {
        loop {
            match next(seen).await {
                Seen::Line1(_) => {}
                Seen::Down(d) => {
                    assert!(!d.was_up);
                    assert!(matches!(d.end, LinkEnd::Failed(_)), "{d:?}");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[actix_rt::test]
async fn a_dial_that_reaches_ourselves_names_us_on_both_ends() {
    // The listener is in auto mode (greeting deferred): it still greets before refusing, so
    // the dialler learns that the address is its own (a seed that is this node).
    let (a, mut a_seen) = hooks("net-self", b"s3cret", None);
    let (b, mut b_seen) = hooks("net-self", b"s3cret", None);
    let addr = accept_one(b).await;
    transport::dial(
        a,
        &actix::Arbiter::current(),
        addr,
        5,
        DialAs::fixed(Dialect::P2),
    );
    for seen in [&mut a_seen, &mut b_seen] {
        match next(seen).await {
            Seen::Down(d) => {
                assert!(!d.was_up);
                assert_eq!(d.node.as_deref(), Some("net-self"), "{d:?}");
                let LinkEnd::Failed(e) = &d.end else {
                    panic!("{}", d.end)
                };
                assert!(e.to_string().contains("talk to myself"), "{e}");
            }
            other => panic!("expected down, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn a_dial_to_nothing_reports_a_typed_connect_error() {
    let (a, mut a_seen) = hooks("net-g", b"s3cret", None);
    // A port nobody listens on: bind, note the port, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    transport::dial(
        a,
        &actix::Arbiter::current(),
        addr.clone(),
        3,
        DialAs::fixed(Dialect::P0),
    );
    match next(&mut a_seen).await {
        Seen::Down(d) => {
            assert_eq!(
                (d.conn, d.addr.as_str(), d.was_up),
                (3, addr.as_str(), false)
            );
            let LinkEnd::Failed(e) = &d.end else {
                panic!("{}", d.end)
            };
            assert!(matches!(**e, super::TransportError::Connect { .. }), "{e}");
        }
        other => panic!("expected down, got {other:?}"),
    }
}
