//! Data-phase framing: how packets are cut from the byte stream and encoded.
//!
//! Every packet is an array `[dest_port, payload…]`. Each direction of a link uses the framing its
//! *sender* chose in the auth line: `json` (back-to-back texts), `cbor` (back-to-back items, P2) or
//! `storable` (BER length prefix + Storable `nfreeze`).
//!
//! A [`Packet`] is a frame over the received bytes plus its framing. When it is received its
//! boundary is found and its bytes are checked whole, building nothing; the destination port is
//! read without allocating and the payload is decoded on demand, into a loose [`Value`] or
//! straight into a serde type. In every framing that typed decoding follows Perl's loose typing
//! (the rules of [`crate::proto::value::from_value`]): a Perl scalar sent as a string still
//! reads as the number a type asks for, a number as a string, anything as a `bool` by Perl's
//! truth.

mod cbor;
mod json;
mod storable;

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny};

use super::value::Value;

/// The default largest packet accepted: 16 MiB. Perl sets no limit; a bound turns a hostile or
/// broken length into an error instead of an allocation.
pub const DEFAULT_MAX_PACKET: usize = 16 * 1024 * 1024;

/// A data-phase framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// JSON texts back-to-back, no separator.
    Json,
    /// CBOR items back-to-back (P2).
    Cbor,
    /// Perl Storable `nfreeze` with a BER-compressed length prefix.
    Storable,
}

impl Framing {
    /// All framings this crate implements.
    pub const ALL: [Framing; 3] = [Framing::Json, Framing::Cbor, Framing::Storable];

    /// The name used in greetings and auth lines.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Json => "json",
            Framing::Cbor => "cbor",
            Framing::Storable => "storable",
        }
    }

    /// Parses a name as used on the wire (exact, case-sensitive).
    pub fn from_name(name: &str) -> Option<Framing> {
        Framing::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What was wrong with data-phase bytes or a value to encode.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum FramingError {
    /// The bytes are not valid in this framing.
    #[error("malformed {framing} packet: {reason}")]
    Malformed {
        /// The framing being decoded.
        framing: Framing,
        /// What was wrong.
        reason: String,
    },
    /// A packet is not an array (every AEMP packet is one).
    #[error("{framing} packet is not an array")]
    NotAnArray {
        /// The framing being decoded.
        framing: Framing,
    },
    /// The destination (element 0) is not a string.
    #[error("{framing} packet has a destination that is not a string")]
    BadDestination {
        /// The framing being decoded.
        framing: Framing,
    },
    /// A packet is (or announces itself as) larger than the configured maximum.
    #[error("{framing} packet of at least {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The framing being decoded.
        framing: Framing,
        /// The size seen so far (a lower bound).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The payload does not fit the requested type.
    #[error("{framing} packet does not decode into the requested type: {reason}")]
    Type {
        /// The framing being decoded.
        framing: Framing,
        /// What serde said.
        reason: String,
    },
    /// A value cannot be encoded (for example a message that does not serialise to a sequence).
    #[error("cannot encode as {framing}: {reason}")]
    Encode {
        /// The framing being encoded.
        framing: Framing,
        /// What was wrong.
        reason: String,
    },
}

/// One complete packet as received: its bytes and its framing.
///
/// For `storable` the bytes are the `nfreeze` image without the length prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    framing: Framing,
    bytes: Bytes,
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_value() {
            Ok(v) => write!(f, "Packet({}, {v:?})", self.framing),
            Err(_) => write!(
                f,
                "Packet({}, {} undecodable bytes)",
                self.framing,
                self.bytes.len()
            ),
        }
    }
}

impl Packet {
    /// Wraps the bytes of one complete packet. The bytes are not checked until they are read.
    pub fn from_bytes(framing: Framing, bytes: Bytes) -> Packet {
        Packet { framing, bytes }
    }

    /// The framing these bytes are in.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The packet's bytes (for storable: without the length prefix).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The packet's bytes as a shared buffer.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The destination port name (element 0): `""` for the node port and for the empty
    /// keepalive packet `[]`. Borrows from the packet unless the wire form needs unescaping.
    pub fn dest(&self) -> Result<Cow<'_, str>, FramingError> {
        match self.framing {
            Framing::Json => json::dest(&self.bytes),
            Framing::Cbor => cbor::dest(&self.bytes),
            Framing::Storable => storable::dest(&self.bytes),
        }
    }

    /// The whole packet as a loose value (an array).
    pub fn to_value(&self) -> Result<Value, FramingError> {
        match self.framing {
            Framing::Json => json::to_value(&self.bytes),
            Framing::Cbor => cbor::to_value(&self.bytes),
            Framing::Storable => storable::to_value(&self.bytes),
        }
    }

    /// The elements after the destination, as loose values.
    pub fn args(&self) -> Result<Vec<Value>, FramingError> {
        match self.to_value()? {
            Value::Array(mut items) => {
                if !items.is_empty() {
                    items.remove(0);
                }
                Ok(items)
            }
            _ => Err(FramingError::NotAnArray {
                framing: self.framing,
            }),
        }
    }

    /// Element 1 as a string: the request tag of a node-port packet (`""` when absent or not a
    /// string). Decodes nothing else.
    pub fn node_request_tag(&self) -> Result<String, FramingError> {
        let first = match self.framing {
            // Skipped the lighter way serde_json skips (see `Checked`), as it always was.
            Framing::Json => self.decode::<FirstArg<IgnoredAny>>()?.0,
            Framing::Cbor | Framing::Storable => self.first_arg()?,
        };
        Ok(first
            .and_then(|v| match v {
                Value::Str(s) => Some(s),
                other => other.as_str().map(Cow::into_owned),
            })
            .unwrap_or_default())
    }

    /// Element 1, the first message element after the destination, as a loose value; `None`
    /// when the packet has no element 1. It is what element 1 of [`Packet::to_value`] is, and
    /// this fails exactly when that fails, but no value is built for the other elements: they
    /// are walked and checked only.
    pub fn first_arg(&self) -> Result<Option<Value>, FramingError> {
        match self.framing {
            Framing::Json => json::decode::<FirstArg<Checked>>(&self.bytes).map(|f| f.0),
            // The direct CBOR deserializer checks every item it skips as `to_value` would.
            Framing::Cbor => cbor::decode::<FirstArg<IgnoredAny>>(&self.bytes).map(|f| f.0),
            Framing::Storable => storable::first_arg(&self.bytes),
        }
    }

    /// The whole packet (destination included) decoded through a serde seed: a decoder that
    /// carries state, such as a table to dispatch on. A json packet may be read twice (strictly,
    /// then with Perl's loose typing when the strict reading does not fit), so a seed that acts
    /// must act only once it has read everything it needs.
    pub fn decode_seed<S, T>(&self, seed: S) -> Result<T, FramingError>
    where
        S: for<'de> DeserializeSeed<'de, Value = T> + Clone,
    {
        match self.framing {
            Framing::Json => json::decode_seed(&self.bytes, seed),
            Framing::Cbor => cbor::decode_seed(&self.bytes, seed),
            Framing::Storable => storable::decode_seed(&self.bytes, seed),
        }
    }

    /// The whole packet (destination included) decoded straight into a serde type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FramingError> {
        match self.framing {
            Framing::Json => json::decode(&self.bytes),
            Framing::Cbor => cbor::decode(&self.bytes),
            Framing::Storable => storable::decode(&self.bytes),
        }
    }
}

/// Cuts packets out of a growing receive buffer.
///
/// Every packet is checked whole as it is cut, so that one that cannot be read fails the link
/// (as in Perl, whose decoders fail the connection) rather than vanishing later.
///
/// The decoder remembers how far it has scanned, so feeding a large packet in many small pieces
/// costs time linear in its size.
#[derive(Debug)]
pub struct PacketDecoder {
    framing: Framing,
    max_packet: usize,
    scanner: Scanner,
}

#[derive(Debug)]
enum Scanner {
    Json(json::Scanner),
    Cbor(cbor::Scanner),
    Storable(storable::Scanner),
}

impl PacketDecoder {
    /// A decoder for `framing` that refuses packets larger than `max_packet` bytes.
    pub fn new(framing: Framing, max_packet: usize) -> PacketDecoder {
        let scanner = match framing {
            Framing::Json => Scanner::Json(json::Scanner::default()),
            Framing::Cbor => Scanner::Cbor(cbor::Scanner::default()),
            Framing::Storable => Scanner::Storable(storable::Scanner::default()),
        };
        PacketDecoder {
            framing,
            max_packet,
            scanner,
        }
    }

    /// The framing this decoder reads.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Splits the next complete packet off the front of `buf`, or returns `None` when `buf` holds
    /// no complete packet yet (keep the bytes, append more, call again).
    ///
    /// Bytes that only separate packets (whitespace in json) are consumed. A packet is returned
    /// only if it is well-formed as a whole: [`Packet::to_value`] cannot fail on it with
    /// [`FramingError::Malformed`] (its destination is not checked: see [`Packet::dest`]). An
    /// error is for the link, which cannot go on: the bytes are left in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, FramingError> {
        let found = match &mut self.scanner {
            Scanner::Json(s) => s.scan(buf, self.max_packet)?,
            Scanner::Cbor(s) => s.scan(buf, self.max_packet)?,
            Scanner::Storable(s) => s.scan(buf, self.max_packet)?,
        };
        let Some(Frame { start, end }) = found else {
            return Ok(None);
        };
        // Separators before the packet are dropped, not split off (one split per packet).
        buf.advance(start);
        let bytes = buf.split_to(end - start).freeze();
        Ok(Some(Packet {
            framing: self.framing,
            bytes,
        }))
    }
}

/// Where a complete packet lies in the buffer handed to a scanner: `buf[start..end]` is the
/// packet, `buf[..start]` is skipped (separators, length prefix), `buf[..end]` is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    start: usize,
    end: usize,
}

/// Appends one packet `[dest, msg…]` to `out`, where `msg` serialises to a sequence (a tuple, a
/// `Vec`, a tuple struct, or a [`Value::Array`]): its elements follow `dest`.
pub fn encode_packet<T: Serialize + ?Sized>(
    framing: Framing,
    dest: &str,
    msg: &T,
    out: &mut BytesMut,
) -> Result<(), FramingError> {
    match framing {
        Framing::Json => json::encode_packet(dest, msg, out),
        Framing::Cbor => cbor::encode_packet(dest, msg, out),
        Framing::Storable => storable::encode_packet(dest, msg, out),
    }
}

/// Appends a whole packet given as a loose value (it must be an array) to `out`.
pub fn encode_value(
    framing: Framing,
    packet: &Value,
    out: &mut BytesMut,
) -> Result<(), FramingError> {
    if !matches!(packet, Value::Array(_)) {
        return Err(FramingError::Encode {
            framing,
            reason: "a packet must be an array".into(),
        });
    }
    match framing {
        Framing::Json => json::encode_value(packet, out),
        Framing::Cbor => cbor::encode_value(packet, out),
        Framing::Storable => storable::encode_value(packet, out),
    }
}

/// Element 1 of a packet as a loose value (`None` when the packet has none); the other elements
/// are passed over by `S`, which builds nothing.
struct FirstArg<S>(Option<Value>, PhantomData<S>);

impl<'de, S: serde::Deserialize<'de>> serde::Deserialize<'de> for FirstArg<S> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<S>(PhantomData<S>);
        impl<'de, S: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<S> {
            type Value = FirstArg<S>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a packet array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<FirstArg<S>, A::Error> {
                let _dest: Option<S> = seq.next_element()?;
                let first = seq.next_element::<Value>()?;
                while seq.next_element::<S>()?.is_some() {}
                Ok(FirstArg(first, PhantomData))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// Passes over one item the way [`Value`]'s `Deserialize` reads it (`deserialize_any` all the
/// way down), so the format checks everything it checks for a value, but keeps nothing.
///
/// `IgnoredAny` is not enough for `json`: serde_json skips an ignored item with a lighter
/// parser that accepts what a value refuses (numbers out of range, nesting past its recursion
/// limit).
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        <Checked as serde::Deserialize>::deserialize(d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        <Checked as serde::Deserialize>::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<CheckedKey>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// Passes over a map key the way [`Value`] reads one: any scalar but null (a Perl hash key is a
/// string), keeping nothing.
struct CheckedKey;

impl<'de> serde::Deserialize<'de> for CheckedKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedKeyVisitor)
    }
}

struct CheckedKeyVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedKeyVisitor {
    type Value = CheckedKey;

    // What is not visited here (null, sequences, maps) is refused, as `Value` refuses it.
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key that is a string, number or boolean")
    }
    fn visit_bool<E>(self, _: bool) -> Result<CheckedKey, E> {
        Ok(CheckedKey)
    }
    fn visit_i64<E>(self, _: i64) -> Result<CheckedKey, E> {
        Ok(CheckedKey)
    }
    fn visit_u64<E>(self, _: u64) -> Result<CheckedKey, E> {
        Ok(CheckedKey)
    }
    fn visit_i128<E>(self, _: i128) -> Result<CheckedKey, E> {
        Ok(CheckedKey)
    }
    fn visit_u128<E>(self, _: u128) -> Result<CheckedKey, E> {
        Ok(CheckedKey)
    }
    fn visit_f64<E>(self, _: f64) -> Result<CheckedKey, E> {
        Ok(CheckedKey)
    }
    fn visit_str<E>(self, _: &str) -> Result<CheckedKey, E> {
        Ok(CheckedKey)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<CheckedKey, E> {
        Ok(CheckedKey)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<CheckedKey, D::Error> {
        <CheckedKey as serde::Deserialize>::deserialize(d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> Result<CheckedKey, D::Error> {
        <CheckedKey as serde::Deserialize>::deserialize(d)
    }
}
