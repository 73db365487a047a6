//! Tag dispatch of an exposed actor in one pass over the packet: the tag is read where it lies
//! (no string is built), matched against the message types the actor takes, and that type's
//! fields are read from the same sequence, straight into the value handed to the actor.
//!
//! The message types are a list built by [`Expose`](super::Expose) at compile time (`()` for
//! none, `(route, rest)` for one more), so that each type's decoder is generic over the
//! framing's sequence reader: no erased deserializer, no table of boxed decoders.

use std::fmt;
use std::sync::Weak;

use actix::Recipient;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};

use super::super::{Node, Shared};
use super::wire::{Elements, request_fields, tell_fields};
use super::{Request, Tell};
use crate::proto::value::Value;

/// The message types an [`Expose`](super::Expose) takes so far: `()` for none,
/// `(TellRoute<M>, rest)` or `(RequestRoute<M>, rest)` for one more. A message goes to the
/// first type whose tag it carries, so of two types with one tag the one added last wins.
///
/// Implemented by the route types of this crate; the methods are its dispatch machinery.
pub trait Routes: Send + Sync + 'static {
    /// The position of the type tagged `tag` in the list, if any.
    #[doc(hidden)]
    fn find(&self, tag: &str) -> Option<usize>;
    /// Reads the fields of the type at `index` from the elements after the tag and hands the
    /// message to the actor.
    #[doc(hidden)]
    fn take<'de, S: SeqAccess<'de>>(&self, index: usize, seq: &mut S) -> Result<(), S::Error>;
    /// The tag of the type at `index`.
    #[doc(hidden)]
    fn tag(&self, index: usize) -> Option<&'static str>;
}

impl Routes for () {
    fn find(&self, _: &str) -> Option<usize> {
        None
    }
    fn take<'de, S: SeqAccess<'de>>(&self, _: usize, _: &mut S) -> Result<(), S::Error> {
        Err(de::Error::custom("no message type at this position"))
    }
    fn tag(&self, _: usize) -> Option<&'static str> {
        None
    }
}

/// One message type of a [`Routes`] list.
pub trait Route: Send + Sync + 'static {
    /// The tag the type is sent with.
    #[doc(hidden)]
    const TAG: &'static str;
    /// Reads the fields after the tag and hands the message to the actor.
    #[doc(hidden)]
    fn take<'de, S: SeqAccess<'de>>(&self, seq: &mut S) -> Result<(), S::Error>;
}

impl<H: Route, T: Routes> Routes for (H, T) {
    fn find(&self, tag: &str) -> Option<usize> {
        if tag == H::TAG {
            Some(0)
        } else {
            self.1.find(tag).map(|i| i + 1)
        }
    }
    fn take<'de, S: SeqAccess<'de>>(&self, index: usize, seq: &mut S) -> Result<(), S::Error> {
        match index.checked_sub(1) {
            None => self.0.take(seq),
            Some(i) => self.1.take(i, seq),
        }
    }
    fn tag(&self, index: usize) -> Option<&'static str> {
        match index.checked_sub(1) {
            None => Some(H::TAG),
            Some(i) => self.1.tag(i),
        }
    }
}

/// A one-way message type of an exposed actor: `[tag, fields...]` goes to its mailbox.
pub struct TellRoute<M: Tell> {
    pub(super) recipient: Recipient<M>,
}

impl<M: Tell> Route for TellRoute<M> {
    const TAG: &'static str = M::TAG;
    fn take<'de, S: SeqAccess<'de>>(&self, seq: &mut S) -> Result<(), S::Error> {
        self.recipient.do_send(tell_fields::<M, S>(seq)?);
        Ok(())
    }
}

/// A request type of an exposed actor: `[tag, fields..., reply_port]` goes to its mailbox,
/// and what its handler returns to the reply port.
pub struct RequestRoute<M: Request> {
    pub(super) recipient: Recipient<M>,
    // Weak: the route lives in the port, which the node holds.
    pub(super) node: Weak<Shared>,
}

impl<M: Request> Route for RequestRoute<M> {
    const TAG: &'static str = M::TAG;
    fn take<'de, S: SeqAccess<'de>>(&self, seq: &mut S) -> Result<(), S::Error> {
        let (m, reply) = request_fields::<M, S>(seq)?;
        // A fresh sender is never "parked" by a full mailbox, so the request is queued now,
        // in order with the tells before and after it.
        let answer = self.recipient.clone().send(m);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(reply, "request delivered outside a runtime: no reply sent");
            return Ok(());
        };
        let node = self.node.clone();
        rt.spawn(async move {
            // An actor that stopped before answering: its port dies at the next delivery,
            // which the asker's monitor sees.
            let Ok(value) = answer.await else { return };
            let Some(shared) = node.upgrade() else { return };
            let node = Node { shared };
            let elements = Elements {
                tag: None,
                body: &value,
                trailer: None,
            };
            if let Err(e) = node.snd(&reply, &elements) {
                tracing::warn!(node = %node.id(), reply, "cannot send the reply: {e}");
            }
        });
        Ok(())
    }
}

/// What became of a message read with [`Dispatch`].
pub(super) enum Dispatched {
    /// Handed to the actor.
    Taken,
    /// No type of the actor has the message's tag (or it has none).
    Unknown,
}

/// Reads a message (the elements after the destination) and dispatches it by tag. A route
/// acts only once it has read its fields, so a second reading (json's loose one) after a
/// failed first one acts once.
pub(super) struct Dispatch<'r, R>(pub &'r R);

impl<R> Clone for Dispatch<'_, R> {
    fn clone(&self) -> Self {
        Dispatch(self.0)
    }
}

impl<'de, R: Routes> DeserializeSeed<'de> for Dispatch<'_, R> {
    type Value = Dispatched;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Dispatched, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, R: Routes> Visitor<'de> for Dispatch<'_, R> {
    type Value = Dispatched;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message [tag, fields...]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dispatched, A::Error> {
        let found = seq.next_element_seed(FindTag(self.0))?.flatten();
        let outcome = match found {
            Some(index) => {
                self.0.take(index, &mut seq)?;
                Dispatched::Taken
            }
            None => Dispatched::Unknown,
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(outcome)
    }
}

/// Reads the tag element and finds its type: a string as it lies in the packet, or any other
/// scalar by its string form (as `Message::tag` reads it); anything else matches nothing.
struct FindTag<'r, R>(&'r R);

impl<'de, R: Routes> DeserializeSeed<'de> for FindTag<'_, R> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<R: Routes> FindTag<'_, R> {
    fn scalar(&self, v: Value) -> Option<usize> {
        self.0.find(&v.as_str()?)
    }
}

impl<'de, R: Routes> Visitor<'de> for FindTag<'_, R> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message tag")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.find(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Option<usize>, E> {
        Ok(std::str::from_utf8(v).ok().and_then(|s| self.0.find(s)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<usize>, E> {
        Ok(self.scalar(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<usize>, E> {
        Ok(self.scalar(Value::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<usize>, E> {
        Ok(self.0.find(&v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<usize>, E> {
        Ok(self.scalar(Value::Float(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<usize>, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<usize>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<usize>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Option<usize>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}
