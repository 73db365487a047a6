//! What a port receives: one message, as an actix message.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};

use crate::proto::framing::{FramingError, Packet};
use crate::proto::value::Value;

/// One message delivered to a local port.
///
/// Messages from other nodes keep their wire bytes and are decoded on demand; messages from
/// this node carry their values.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct Message {
    /// The node that sent it (our own id for local sends).
    pub from: Arc<str>,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    /// A received packet; element 0 is the destination port name.
    Packet(Packet),
    /// A local send: the message elements.
    Local(Vec<Value>),
}

impl Message {
    pub(crate) fn from_packet(from: Arc<str>, packet: Packet) -> Message {
        Message {
            from,
            body: Body::Packet(packet),
        }
    }

    pub(crate) fn local(from: Arc<str>, args: Vec<Value>) -> Message {
        Message {
            from,
            body: Body::Local(args),
        }
    }

    /// The message elements as loose values.
    pub fn args(&self) -> Result<Vec<Value>, FramingError> {
        match &self.body {
            Body::Packet(p) => p.args(),
            Body::Local(v) => Ok(v.clone()),
        }
    }

    /// The first element as a string: the tag `rcv` dispatches on. `None` when the message is
    /// empty, when its first element has no string form (null, an array, a map, bytes that are
    /// not UTF-8), or when the packet does not decode. Of a received packet only the first
    /// element is decoded into a value.
    pub fn tag(&self) -> Option<Cow<'_, str>> {
        match &self.body {
            Body::Packet(p) => match p.first_arg().ok()?? {
                Value::Str(s) => Some(Cow::Owned(s)),
                other => other.as_str().map(|s| Cow::Owned(s.into_owned())),
            },
            Body::Local(v) => v.first()?.as_str(),
        }
    }

    /// The message elements decoded straight into a serde type (a tuple, a tuple struct, a
    /// `Vec`…): element 0 of the message is the first field.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FramingError> {
        self.decode_seed(PhantomData::<T>)
    }

    /// The message elements decoded through a serde seed (a decoder that carries state), as
    /// [`Message::decode`] decodes them (see [`Packet::decode_seed`]: a seed that acts must act
    /// only once it has read everything it needs).
    pub fn decode_seed<S, T>(&self, seed: S) -> Result<T, FramingError>
    where
        S: for<'de> DeserializeSeed<'de, Value = T> + Clone,
    {
        match &self.body {
            Body::Packet(p) => p.decode_seed(SkipFirst(seed)),
            Body::Local(v) => {
                seed.deserialize(Value::Array(v.clone()))
                    .map_err(|e| FramingError::Type {
                        framing: crate::proto::framing::Framing::Json,
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// The received packet, if the message came from another node.
    pub fn packet(&self) -> Option<&Packet> {
        match &self.body {
            Body::Packet(p) => Some(p),
            Body::Local(_) => None,
        }
    }
}

/// Deserialises a sequence through the seed while skipping its first element (the destination
/// port).
#[derive(Clone)]
struct SkipFirst<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for SkipFirst<S> {
    type Value = S::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for SkipFirst<S> {
    type Value = S::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a packet array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<S::Value, A::Error> {
        let _dest: Option<IgnoredAny> = seq.next_element()?;
        self.0
            .deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
    }
}

/// Splits a port id `node#name` at the first `#`; a bare node id names its node port `""`.
pub fn split_port_id(port: &str) -> (&str, &str) {
    port.split_once('#').unwrap_or((port, ""))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;

    use super::*;
    use crate::proto::framing::{DEFAULT_MAX_PACKET, Framing, PacketDecoder, encode_value};

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    /// A received message holding `packet` (an array) in `framing`, cut as a link cuts it.
    fn received(framing: Framing, packet: &Value) -> Message {
        let mut buf = BytesMut::new();
        encode_value(framing, packet, &mut buf).unwrap();
        let packet = PacketDecoder::new(framing, DEFAULT_MAX_PACKET)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        Message::from_packet("peer".into(), packet)
    }

    fn raw(framing: Framing, bytes: &[u8]) -> Message {
        let packet = Packet::from_bytes(framing, bytes::Bytes::copy_from_slice(bytes));
        Message::from_packet("peer".into(), packet)
    }

    /// `tag` as it was before it learned to read element 1 alone: through the whole packet.
    fn tag_by_whole_decode(msg: &Message) -> Option<String> {
        let first = msg.packet()?.args().ok()?.into_iter().next()?;
        first.as_str().map(Cow::into_owned)
    }

    fn tag(msg: &Message) -> Option<String> {
        msg.tag().map(Cow::into_owned)
    }

    #[test]
    fn tags_in_every_framing() {
        let map = Value::Map(vec![("a".into(), Value::Int(1))]);
        let cases: Vec<(Vec<Value>, Option<&str>)> = vec![
            (
                vec![s("ping"), Value::Int(1), Value::Array(vec![])],
                Some("ping"),
            ),
            (vec![s(""), s("x")], Some("")),
            (vec![s("grüße")], Some("grüße")),
            (vec![Value::Int(42), s("x")], Some("42")),
            (vec![Value::Int(-7)], Some("-7")),
            (vec![Value::Float(1.5)], Some("1.5")),
            (vec![Value::Bool(true)], Some("1")),
            (vec![Value::Bool(false)], Some("")),
            (vec![Value::Null, s("ping")], None),
            (vec![Value::Array(vec![s("ping")])], None),
            (vec![map.clone(), s("ping")], None),
            (vec![s("ping"), map], Some("ping")),
            // An empty message: the packet holds the port name alone.
            (vec![], None),
        ];
        for framing in Framing::ALL {
            for (elements, want) in &cases {
                let mut packet = vec![s("port")];
                packet.extend(elements.iter().cloned());
                let msg = received(framing, &Value::Array(packet));
                assert_eq!(tag(&msg).as_deref(), *want, "{framing} {elements:?}");
                assert_eq!(
                    tag(&msg),
                    tag_by_whole_decode(&msg),
                    "{framing} {elements:?}"
                );
            }
            let keepalive = received(framing, &Value::Array(vec![]));
            assert_eq!(tag(&keepalive), None, "{framing} []");
            // Bytes: not UTF-8 in cbor and storable; Perl's json writes them as characters.
            let msg = received(
                framing,
                &Value::Array(vec![s("port"), Value::Bytes(vec![0xff, 0xfe])]),
            );
            let want = (framing == Framing::Json).then(|| "\u{ff}\u{fe}".to_owned());
            assert_eq!(tag(&msg), want, "{framing} bytes");
            assert_eq!(tag(&msg), tag_by_whole_decode(&msg), "{framing} bytes");
        }
    }

    #[test]
    fn a_packet_that_does_not_decode_has_no_tag() {
        let deep = |n| format!(r#"["p","ping",{}{}]"#, "[".repeat(n), "]".repeat(n));
        let json = [
            r#"["p","ping",1e400]"#.to_owned(),
            r#"["p","ping",tru]"#.to_owned(),
            r#"["p","ping",{"a":}]"#.to_owned(),
            r#"["p","ping"] 1"#.to_owned(),
            r#"{"p":"ping"}"#.to_owned(),
            deep(200),
        ];
        for text in &json {
            let msg = raw(Framing::Json, text.as_bytes());
            assert_eq!(tag(&msg), None, "{text}");
            assert_eq!(tag_by_whole_decode(&msg), None, "{text}");
        }
        // Within serde_json's nesting limit the same shape is fine.
        assert_eq!(
            tag(&raw(Framing::Json, deep(100).as_bytes())).as_deref(),
            Some("ping")
        );
        // Invalid UTF-8 in a later string.
        let mut bad_utf8 = br#"["p","ping",""#.to_vec();
        bad_utf8.extend([0xff, b'"', b']']);
        assert_eq!(tag(&raw(Framing::Json, &bad_utf8)), None);

        let cbor = [
            // ["p", "ping", <missing>]
            "83 6170 6470696e67",
            // ["p", "ping", {[]: 1}]: a map key that is an array
            "83 6170 6470696e67 a1 80 01",
            // ["p", "ping", a text of five bytes with two]
            "83 6170 6470696e67 65 6869",
            // ["p", "ping"] and a byte after it
            "82 6170 6470696e67 00",
            // ["p", "ping", <reserved additional information>]
            "83 6170 6470696e67 1c",
            // a map, not an array
            "a1 6170 6470696e67",
        ];
        for hex in cbor {
            let msg = raw(Framing::Cbor, &hex::decode(hex.replace(' ', "")).unwrap());
            assert_eq!(tag(&msg), None, "{hex}");
            assert_eq!(tag_by_whole_decode(&msg), None, "{hex}");
        }

        // Storable: ["", "t", x] where x is a reference to an array holding a reference to
        // itself (tags: root 0, "" 1, "t" 2, ref 3, array 4, ref 5); and a byte after the image.
        // (Back-references that expand too much are tested with the storable decoder.)
        let head = "05 0b 02 00000003 0a00 0a0174";
        let cyclic = format!("{head} 04 02 00000001 04 00 00000004");
        let trailing = format!("{head} 0a00 05");
        for hex in [cyclic, trailing] {
            let msg = raw(
                Framing::Storable,
                &hex::decode(hex.replace(' ', "")).unwrap(),
            );
            assert_eq!(tag(&msg), None, "{hex}");
            assert_eq!(tag_by_whole_decode(&msg), None, "{hex}");
        }
    }

    #[test]
    fn local_messages() {
        let msg = |args: Vec<Value>| Message::local("me".into(), args);
        assert_eq!(
            msg(vec![s("ping"), Value::Int(1)]).tag(),
            Some(Cow::Borrowed("ping"))
        );
        assert_eq!(msg(vec![Value::Int(42)]).tag().as_deref(), Some("42"));
        assert_eq!(msg(vec![Value::Bool(false)]).tag().as_deref(), Some(""));
        assert_eq!(msg(vec![Value::Null]).tag(), None);
        assert_eq!(msg(vec![Value::Array(vec![s("ping")])]).tag(), None);
        assert_eq!(msg(vec![]).tag(), None);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-1e9f64..1e9).prop_map(Value::Float),
            "[a-zé€ 0-9\"\\\\]{0,6}".prop_map(Value::Str),
            prop::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{0,3}", inner), 0..3).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Reading element 1 alone gives what decoding the whole packet gave, for well-formed
        /// packets and for the same bytes cut short or with one byte changed.
        #[test]
        fn tag_agrees_with_the_whole_decode(
            elements in prop::collection::vec(arb_value(), 0..4),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut packet = vec![s("port")];
            packet.extend(elements);
            for framing in Framing::ALL {
                let msg = received(framing, &Value::Array(packet.clone()));
                prop_assert_eq!(tag(&msg), tag_by_whole_decode(&msg));
                // The transport's node-port reader: the same element, `""` for none.
                let node_request = msg.packet().unwrap().node_request_tag();
                prop_assert_eq!(node_request, Ok(tag(&msg).unwrap_or_default()));
                let bytes = msg.packet().unwrap().as_bytes().to_vec();
                let i = at.index(bytes.len());
                let mut changed = bytes.clone();
                changed[i] = byte;
                for variant in [&bytes[..i], &changed[..]] {
                    let msg = raw(framing, variant);
                    prop_assert_eq!(tag(&msg), tag_by_whole_decode(&msg));
                }
            }
        }
    }
}
