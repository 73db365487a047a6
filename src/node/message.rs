//! What a port receives: one message, as an actix message.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny, SeqAccess, Visitor};

use crate::proto::framing::{FramingError, Packet};
use crate::proto::value::{self, Value};

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

    /// The first element as a string: the tag `rcv` dispatches on.
    pub fn tag(&self) -> Option<Cow<'_, str>> {
        match &self.body {
            Body::Packet(p) => match p.args().ok()?.into_iter().next()? {
                Value::Str(s) => Some(Cow::Owned(s)),
                other => other.as_str().map(|s| Cow::Owned(s.into_owned())),
            },
            Body::Local(v) => v.first()?.as_str(),
        }
    }

    /// The message elements decoded straight into a serde type (a tuple, a tuple struct, a
    /// `Vec`…): element 0 of the message is the first field.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FramingError> {
        match &self.body {
            Body::Packet(p) => p.decode::<SkipFirst<T>>().map(|s| s.0),
            Body::Local(v) => {
                value::from_value(Value::Array(v.clone())).map_err(|e| FramingError::Type {
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

/// Deserialises a sequence while skipping its first element (the destination port).
struct SkipFirst<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for SkipFirst<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = SkipFirst<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a packet array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let _dest: Option<IgnoredAny> = seq.next_element()?;
                T::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(SkipFirst)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// Splits a port id `node#name` at the first `#`; a bare node id names its node port `""`.
pub fn split_port_id(port: &str) -> (&str, &str) {
    port.split_once('#').unwrap_or((port, ""))
}
