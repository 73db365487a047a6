//! The wire form of typed messages in every framing, and exposed actors in one process.

use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use serde::de::{self, DeserializeOwned, IgnoredAny, SeqAccess, Visitor};

use super::wire::{ReplyBody, request_fields, tell_fields};
use super::*;
use crate::node::{Message, Node, NodeConfig, RemoteMessage};
use crate::proto::framing::{DEFAULT_MAX_PACKET, Framing, PacketDecoder, encode_packet};
use crate::proto::value::Value;

/// A message's elements after the destination, `[tag, fields...]`, as an exposed actor reads
/// them (without its tag dispatch).
struct TellBody<M>(M);

/// `[tag, fields..., reply_port]`, as an exposed actor reads it.
struct RequestBody<M>(M, String);

/// Skips the tag, then reads the rest with `rest`.
fn after_tag<'de, A: SeqAccess<'de>, T>(
    mut seq: A,
    rest: impl FnOnce(&mut A) -> Result<T, A::Error>,
) -> Result<T, A::Error> {
    seq.next_element::<IgnoredAny>()?
        .ok_or_else(|| de::Error::custom("no tag"))?;
    rest(&mut seq)
}

impl<'de, M: DeserializeOwned> Deserialize<'de> for TellBody<M> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<M>(std::marker::PhantomData<M>);
        impl<'de, M: DeserializeOwned> Visitor<'de> for V<M> {
            type Value = TellBody<M>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a message")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                after_tag(seq, tell_fields).map(TellBody)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

impl<'de, M: DeserializeOwned> Deserialize<'de> for RequestBody<M> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<M>(std::marker::PhantomData<M>);
        impl<'de, M: DeserializeOwned> Visitor<'de> for V<M> {
            type Value = RequestBody<M>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a request")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                after_tag(seq, request_fields).map(|(m, r)| RequestBody(m, r))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "say")]
struct Say {
    from: String,
    text: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "add", reply = i64)]
struct Add(i64, i64);

#[derive(Debug, PartialEq, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "ping")]
struct Ping;

/// A reply of several fields.
#[derive(Debug, PartialEq, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "stats", reply = (String, Vec<u32>, Option<bool>))]
struct Stats {}

impl Handler<Stats> for Calc {
    // actix has no `MessageResponse` for tuples: `MessageResult` wraps one.
    type Result = actix::MessageResult<Stats>;
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(("up".into(), vec![1, 2], None))
    }
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

/// `msg` encoded as a link encodes it, cut as a link cuts it, as the port receives it.
fn through(framing: Framing, msg: &impl Serialize) -> Message {
    let mut buf = BytesMut::new();
    encode_packet(framing, "port", msg, &mut buf).unwrap();
    let packet = PacketDecoder::new(framing, DEFAULT_MAX_PACKET)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    Message::from_packet("peer".into(), packet)
}

#[test]
fn messages_travel_as_tag_then_fields_in_every_framing() {
    for framing in Framing::ALL {
        let say = Say {
            from: "ann".into(),
            text: "hi".into(),
        };
        let msg = through(framing, &tagged(&say));
        assert_eq!(msg.args().unwrap(), vec![s("say"), s("ann"), s("hi")]);
        assert_eq!(msg.decode::<TellBody<Say>>().unwrap().0, say);

        let msg = through(framing, &tagged(&Ping));
        assert_eq!(msg.args().unwrap(), vec![s("ping")]);
        assert_eq!(msg.decode::<TellBody<Ping>>().unwrap().0, Ping);

        let req = Elements {
            tag: Some(Add::TAG),
            body: &Add(2, 3),
            trailer: Some("n#r"),
        };
        let msg = through(framing, &req);
        let args = msg.args().unwrap();
        assert_eq!(args, vec![s("add"), Value::Int(2), Value::Int(3), s("n#r")]);
        let RequestBody(add, reply) = msg.decode::<RequestBody<Add>>().unwrap();
        assert_eq!((add, reply.as_str()), (Add(2, 3), "n#r"));
    }
}

#[test]
fn what_perl_sends_decodes_leniently() {
    for framing in Framing::ALL {
        // Extra arguments after the fields are ignored, as Perl's handlers ignore them; the
        // reply port is the last element whatever comes before it.
        let msg = through(
            framing,
            &vec![s("add"), Value::Int(2), Value::Int(3), s("extra"), s("n#r")],
        );
        let RequestBody(add, reply) = msg.decode::<RequestBody<Add>>().unwrap();
        assert_eq!((add, reply.as_str()), (Add(2, 3), "n#r"));
        let msg = through(framing, &vec![s("say"), s("a"), s("b"), Value::Int(9)]);
        assert!(msg.decode::<TellBody<Say>>().is_ok());
        // Too few fields, a field of the wrong type, no reply port: errors, not panics.
        let msg = through(framing, &vec![s("say"), s("a")]);
        assert!(msg.decode::<TellBody<Say>>().is_err());
        let msg = through(framing, &vec![s("add"), s("x"), Value::Int(3), s("n#r")]);
        assert!(msg.decode::<RequestBody<Add>>().is_err());
        let msg = through(framing, &vec![s("add"), Value::Int(2), Value::Int(3)]);
        assert!(msg.decode::<RequestBody<Add>>().is_err());
    }
}

#[test]
fn perl_numbers_sent_as_strings_still_decode() {
    // A Perl scalar last used as a string travels as one; the fields keep their type hints,
    // so the formats' numeric coercions apply as they do to `Message::decode`.
    for framing in Framing::ALL {
        let msg = through(framing, &vec![s("add"), s("2"), s("3"), s("n#r")]);
        let typed = msg.decode::<RequestBody<Add>>().map(|b| b.0);
        let plain = msg
            .decode::<(String, i64, i64, String)>()
            .map(|t| Add(t.1, t.2));
        assert_eq!(typed.as_ref().ok(), plain.as_ref().ok(), "{framing:?}");
        assert_eq!(typed.ok(), Some(Add(2, 3)), "{framing:?}");
    }
}

#[test]
fn replies_are_the_reply_values_fields() {
    for framing in Framing::ALL {
        let reply = (String::from("up"), vec![1u32, 2], Some(true));
        let body = Elements {
            tag: None,
            body: &reply,
            trailer: None,
        };
        let msg = through(framing, &body);
        assert_eq!(
            msg.args().unwrap(),
            vec![
                s("up"),
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Bool(true)
            ]
            .into_iter()
            .map(|v| match (framing, v) {
                // Storable has no booleans: Perl's true is 1.
                (Framing::Storable, Value::Bool(true)) => Value::Int(1),
                (_, v) => v,
            })
            .collect::<Vec<_>>()
        );
        let ReplyBody(back) = msg
            .decode::<ReplyBody<(String, Vec<u32>, Option<bool>)>>()
            .unwrap();
        assert_eq!(back, reply);
        // A scalar reply is one element; `snd $reply` with nothing is `None`.
        let msg = through(framing, &vec![Value::Int(5)]);
        assert_eq!(msg.decode::<ReplyBody<i64>>().unwrap().0, 5);
        let msg = through(framing, &Vec::<Value>::new());
        assert_eq!(msg.decode::<ReplyBody<Option<i64>>>().unwrap().0, None);
        assert_eq!(msg.decode::<ReplyBody<()>>().unwrap().0, ());
        assert!(msg.decode::<ReplyBody<i64>>().is_err());
        // A Vec reply takes every element.
        let msg = through(framing, &vec![s("a"), s("b")]);
        assert_eq!(
            msg.decode::<ReplyBody<Vec<String>>>().unwrap().0,
            vec!["a".to_owned(), "b".to_owned()]
        );
    }
}

#[test]
fn a_map_cannot_be_a_messages_fields() {
    let map = std::collections::BTreeMap::from([("a", 1)]);
    let body = Elements {
        tag: Some("x"),
        body: &map,
        trailer: None,
    };
    let mut buf = BytesMut::new();
    assert!(encode_packet(Framing::Json, "port", &body, &mut buf).is_err());
}

// ---- exposed actors in one process ----------------------------------------------------------

/// Adds, and keeps what it was told.
#[derive(Default)]
struct Calc {
    said: Vec<String>,
    /// The actor's port dies with it.
    _port: Option<Exposed>,
}

impl Actor for Calc {
    type Context = Context<Self>;
}

impl Handler<Add> for Calc {
    type Result = i64;
    fn handle(&mut self, Add(a, b): Add, _: &mut Context<Self>) -> i64 {
        a + b
    }
}

impl Handler<Say> for Calc {
    type Result = ();
    fn handle(&mut self, say: Say, _: &mut Context<Self>) {
        self.said.push(say.text);
    }
}

#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
#[remote(tag = "said", reply = Vec<String>)]
struct Said;

impl Handler<Said> for Calc {
    type Result = Vec<String>;
    fn handle(&mut self, _: Said, _: &mut Context<Self>) -> Vec<String> {
        self.said.clone()
    }
}

/// A message that cannot be encoded (implemented by hand, as the derive would): only a path
/// that encodes nothing can deliver it.
#[derive(Debug, Deserialize)]
struct Opaque;

impl Serialize for Opaque {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Opaque is not encodable"))
    }
}
impl actix::Message for Opaque {
    type Result = ();
}
impl RemoteMessage for Opaque {
    const TAG: &'static str = "opaque";
}
impl Tell for Opaque {}

impl Handler<Opaque> for Calc {
    type Result = ();
    fn handle(&mut self, _: Opaque, _: &mut Context<Self>) {
        self.said.push("opaque".into());
    }
}

fn expose_calc(node: &Node, tolerant: bool) -> String {
    let node = node.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    Calc::create(move |ctx| {
        let mut expose = node
            .expose(ctx.address())
            .request::<Add>()
            .tell::<Say>()
            .request::<Said>()
            .request::<Stats>()
            .tell::<Opaque>();
        if tolerant {
            expose = expose.tolerant();
        }
        let port = expose.start();
        let _ = tx.send(port.id().to_owned());
        Calc {
            _port: Some(port),
            ..Calc::default()
        }
    });
    rx.recv().unwrap()
}

async fn node() -> Node {
    Node::start(NodeConfig::with_secret("s")).await.unwrap()
}

#[actix_rt::test]
async fn a_local_handle_reaches_the_actor_without_encoding() {
    let node = node().await;
    let port = expose_calc(&node, false);
    let say = node.port_ref::<Say>(&port);
    say.do_send(Say {
        from: "me".into(),
        text: "one".into(),
    })
    .unwrap();
    say.send(Say {
        from: "me".into(),
        text: "two".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        node.port_ref::<Add>(&port)
            .request(Add(4, 5))
            .await
            .unwrap(),
        9
    );
    // The encoded path (a Perl-style local snd) lands in the same handlers, in order.
    node.snd(&port, &vec![s("say"), s("perl"), s("three")])
        .unwrap();
    let said = node.port_ref::<Said>(&port).request(Said).await.unwrap();
    assert_eq!(said, vec!["one", "two", "three"]);
    // `cal` with the wire form of a request works on the same port.
    let sum = node
        .cal(
            &port,
            vec![s("add"), Value::Int(1), Value::Int(2)],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(sum, vec![Value::Int(3)]);
    // A reply of several fields, remote form and local form.
    let stats = node
        .cal(&port, vec![s("stats")], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        stats,
        vec![
            s("up"),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Null
        ]
    );
    let stats = node
        .port_ref::<Stats>(&port)
        .request(Stats {})
        .await
        .unwrap();
    assert_eq!(stats, ("up".into(), vec![1, 2], None));
}

#[actix_rt::test]
async fn the_local_path_encodes_nothing_and_the_remote_path_does() {
    let server = node().await;
    let port = expose_calc(&server, false);
    // On the actor's own node the value goes straight into its mailbox.
    server.port_ref::<Opaque>(&port).do_send(Opaque).unwrap();
    let said = server.port_ref::<Said>(&port).request(Said).await.unwrap();
    assert_eq!(said, ["opaque"]);
    // From another node it must be encoded, which this type refuses.
    let client = Node::start(NodeConfig {
        seeds: vec![server.listeners()[0].to_string()],
        ..NodeConfig::with_secret("s")
    })
    .await
    .unwrap();
    let err = client
        .port_ref::<Opaque>(&port)
        .do_send(Opaque)
        .unwrap_err();
    assert!(matches!(err, RemoteError::Send(_)), "{err}");
}

#[actix_rt::test]
async fn an_unknown_tag_kills_the_port_as_perls_rcv_does() {
    let node = node().await;
    let port = expose_calc(&node, false);
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.mon(&port, move |reason| drop(tx.send(reason)))
        .detach();
    node.snd(&port, &vec![s("dance")]).unwrap();
    let reason = rx.await.unwrap();
    assert_eq!(
        reason,
        vec![
            s("unhandled_message"),
            s("no callback found for message 'dance'")
        ]
    );
    // The port is gone: a request says so.
    let err = node.port_ref::<Add>(&port).request(Add(1, 1)).await;
    assert!(matches!(err, Err(RemoteError::PortDied { .. })), "{err:?}");
}

#[actix_rt::test]
async fn undecodable_fields_kill_the_port_with_die() {
    let node = node().await;
    let port = expose_calc(&node, false);
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.mon(&port, move |reason| drop(tx.send(reason)))
        .detach();
    node.snd(&port, &vec![s("say"), s("only one field")])
        .unwrap();
    let reason = rx.await.unwrap();
    assert_eq!(reason[0], s("die"));
    assert!(
        reason[1]
            .as_str()
            .unwrap()
            .starts_with("cannot decode message 'say'"),
        "{reason:?}"
    );
}

#[actix_rt::test]
async fn a_tolerant_port_drops_bad_messages_and_lives_on() {
    let node = node().await;
    let port = expose_calc(&node, true);
    node.snd(&port, &vec![s("dance")]).unwrap();
    node.snd(&port, &vec![s("say"), s("only one field")])
        .unwrap();
    assert_eq!(
        node.port_ref::<Add>(&port)
            .request(Add(1, 1))
            .await
            .unwrap(),
        2
    );
}

#[actix_rt::test]
async fn a_request_to_a_stopped_actor_reports_the_port_dead() {
    let node = node().await;
    let (tx, rx) = std::sync::mpsc::channel();
    let n = node.clone();
    // The port outlives nothing: the actor stops at once, dropping its port.
    let addr = Calc::create(move |ctx| {
        let port = n.expose(ctx.address()).request::<Add>().start();
        let _ = tx.send(port.id().to_owned());
        Calc {
            _port: Some(port),
            ..Calc::default()
        }
    });
    let port = rx.recv().unwrap();
    struct Stop;
    impl actix::Message for Stop {
        type Result = ();
    }
    impl Handler<Stop> for Calc {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
            actix::ActorContext::stop(ctx);
        }
    }
    addr.send(Stop).await.unwrap();
    drop(addr);
    let err = node
        .port_ref::<Add>(&port)
        .with_timeout(Duration::from_secs(5))
        .request(Add(1, 1))
        .await;
    assert!(matches!(err, Err(RemoteError::PortDied { .. })), "{err:?}");
}

#[actix_rt::test]
async fn a_name_resolves_on_a_node_of_its_own_and_goes_with_its_port() {
    // Names live in the network's database: a node alone is its own seed, so its own master.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let me = format!("127.0.0.1:{port}");
    let node = Node::start(NodeConfig {
        binds: vec![me.clone()],
        seeds: vec![me],
        ..NodeConfig::with_secret("s")
    })
    .await
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let n = node.clone();
    Calc::create(move |ctx| {
        let mut port = n.expose(ctx.address()).request::<Add>().start();
        port.register("calc", "main").unwrap();
        let _ = tx.send(port.id().to_owned());
        Calc {
            _port: Some(port),
            ..Calc::default()
        }
    });
    let id = rx.recv().unwrap();
    let add = node
        .lookup::<Add>("calc", "main")
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    assert_eq!(add.request(Add(3, 4)).await.unwrap(), 7);
    assert_eq!(add.port_id().as_deref(), Some(id.as_str()));
    // The port killed: the name goes with it, and a request finds nothing registered.
    node.kil(&id, vec![s("stop")]).unwrap();
    let add = add.with_timeout(Duration::from_millis(300));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while add.port_id().is_some() {
        assert!(std::time::Instant::now() < deadline, "the name stayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = add.request(Add(1, 1)).await.unwrap_err();
    assert!(
        matches!(&err, RemoteError::NotRegistered { family, key } if family == "calc" && key == "main"),
        "{err}"
    );
}

/// The tags of the [`Record`] routes: `Record<I>` takes `TAGS[I]`.
const TAGS: [&str; 4] = ["say", "5", "1.5", "say"];

/// Which route took a message, and the elements after its tag.
type Taken = (usize, Vec<Value>);

/// A route that records what it takes.
struct Record<const I: usize>(std::sync::Arc<std::sync::Mutex<Vec<Taken>>>);

impl<const I: usize> routes::Route for Record<I> {
    const TAG: &'static str = TAGS[I];
    fn take<'de, S: SeqAccess<'de>>(&self, seq: &mut S) -> Result<(), S::Error> {
        let mut rest = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            rest.push(v);
        }
        self.0.lock().unwrap().push((I, rest));
        Ok(())
    }
}

#[test]
fn dispatch_reads_the_tag_as_message_tag_does_in_every_framing() {
    use routes::{Dispatch, Dispatched};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let routes = (
        Record::<0>(seen.clone()),
        (Record::<1>(seen.clone()), (Record::<2>(seen.clone()), ())),
    );
    let map = Value::Map(vec![("k".to_owned(), s("v"))]);
    let cases: Vec<(Vec<Value>, Option<Taken>)> = vec![
        (
            vec![s("say"), Value::Int(1), s("x")],
            Some((0, vec![Value::Int(1), s("x")])),
        ),
        (vec![s("5"), s("a")], Some((1, vec![s("a")]))),
        // Any scalar is its string form, as in Perl (and `Message::tag`).
        (vec![Value::Int(5), s("a")], Some((1, vec![s("a")]))),
        (vec![Value::Float(1.5)], Some((2, vec![]))),
        (vec![s("nope"), Value::Int(1)], None),
        (vec![Value::Null, s("say")], None),
        (vec![Value::Array(vec![s("say")]), s("say")], None),
        (vec![map, s("say")], None),
        (vec![], None),
    ];
    for framing in Framing::ALL {
        for (args, want) in &cases {
            let received = through(framing, args);
            let local = Message::local("me".into(), args.clone());
            for msg in [received, local] {
                let known = msg.tag().is_some_and(|t| TAGS.contains(&&*t));
                let got = msg.decode_seed(Dispatch(&routes)).unwrap();
                let taken = seen.lock().unwrap().pop();
                assert_eq!(
                    matches!(got, Dispatched::Taken),
                    known,
                    "{framing:?} {args:?}"
                );
                assert_eq!(&taken, want, "{framing:?} {args:?}");
            }
        }
    }
    // Of two types with one tag, the one added last (the head of the list) takes it.
    let routes = (Record::<3>(seen.clone()), routes);
    let msg = through(Framing::Json, &vec![s("say")]);
    assert!(matches!(
        msg.decode_seed(Dispatch(&routes)),
        Ok(Dispatched::Taken)
    ));
    assert_eq!(seen.lock().unwrap().pop(), Some((3, vec![])));
}

/// Adds the two numbers after its tag.
struct SumRoute(std::sync::Arc<std::sync::Mutex<Vec<i64>>>);

impl routes::Route for SumRoute {
    const TAG: &'static str = "add";
    fn take<'de, S: SeqAccess<'de>>(&self, seq: &mut S) -> Result<(), S::Error> {
        let (a, b): (i64, i64) = tell_fields(seq)?;
        self.0.lock().unwrap().push(a + b);
        Ok(())
    }
}

#[test]
fn perl_numbers_as_strings_are_dispatched_once_in_every_framing() {
    use routes::{Dispatch, Dispatched};
    let sums = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let routes = (SumRoute(sums.clone()), ());
    for framing in Framing::ALL {
        // json reads it strictly first, which fails on "2", then loosely: one delivery.
        let msg = through(framing, &("add", "2", 3));
        assert!(matches!(
            msg.decode_seed(Dispatch(&routes)),
            Ok(Dispatched::Taken)
        ));
        assert_eq!(
            std::mem::take(&mut *sums.lock().unwrap()),
            vec![5],
            "{framing:?}"
        );
        let msg = through(framing, &("add", "two", 3));
        assert!(msg.decode_seed(Dispatch(&routes)).is_err(), "{framing:?}");
        assert!(sums.lock().unwrap().is_empty(), "{framing:?}");
    }
}
