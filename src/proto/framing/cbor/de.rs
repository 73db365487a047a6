//! A serde `Deserializer` straight over the bytes of one complete packet: typed decoding without
//! building a [`Value`] first, borrowing strings from the packet where it can.
//!
//! It gives what `from_value(to_value(bytes))` gives (Perl's loose typing, see
//! `proto/value/de.rs`): scalars are read off the wire and handed to the [`Value`] deserializer
//! (numbers, booleans, null; strings only for the rare coercions), containers are streamed. Every
//! item the type does not look at is still walked and checked, so a packet that `to_value` would
//! refuse is never accepted.
//!
//! Differences, all deliberate: the error texts (and which error comes first) are not those of the
//! old path, which is why `decode` redoes a failed decode the old way to report its error; and
//! `size_hint` is the announced count (capped by the bytes left) or `None` for indefinite
//! containers, where the old path knew the exact count.

use std::borrow::Cow;
use std::cell::Cell;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};

use super::decode::{Reader, key_string, scalar};
use super::{
    BREAK, Head, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGINT, MAJOR_SIMPLE, MAJOR_TAG,
    MAJOR_TEXT, MAJOR_UINT, MAX_DEPTH, definite_head, read_head,
};
use crate::proto::framing::FramingError;
use crate::proto::value::{Value, ValueError};

type Result<T> = std::result::Result<T, ValueError>;

fn wire(e: FramingError) -> ValueError {
    ValueError::Message(e.to_string())
}

fn custom(msg: &str) -> ValueError {
    ValueError::Message(msg.to_owned())
}

/// Decodes one complete packet into `T`. Errors say little (see the module comment).
pub(super) fn from_packet<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    from_packet_seed(bytes, std::marker::PhantomData)
}

/// [`from_packet`] through a serde seed.
pub(super) fn from_packet_seed<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value> {
    // As `to_value`: the very first byte must open an array (a tag before it is refused).
    if bytes.first().is_some_and(|b| b >> 5 != MAJOR_ARRAY) {
        return Err(custom("a packet is an array"));
    }
    let mut p = Parser {
        buf: bytes,
        pos: 0,
        depth: 0,
    };
    let out = seed.deserialize(&mut p)?;
    if p.remaining() != 0 {
        return Err(custom("bytes after the packet"));
    }
    Ok(out)
}

/// One data item, its head read (tags skipped). Strings are read whole; containers only opened.
enum Item<'de> {
    /// Null, a boolean, an integer or a float.
    Scalar(Value),
    /// A text or byte string that is UTF-8.
    Str(Cow<'de, str>),
    /// A string that is not UTF-8.
    Bytes(Cow<'de, [u8]>),
    /// An array: the count announced, `None` if it ends with a break.
    Array(Option<u64>),
    /// A map: the number of entries announced, `None` if it ends with a break.
    Map(Option<u64>),
}

struct Parser<'de> {
    buf: &'de [u8],
    pos: usize,
    /// Non-empty containers open, bounded by `MAX_DEPTH` exactly as `to_value` bounds them.
    depth: usize,
}

impl<'de> Parser<'de> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn at_break(&self) -> bool {
        self.buf.get(self.pos) == Some(&BREAK)
    }

    /// The next item header (the general way; `definite_head` covers the common shapes).
    fn head(&mut self) -> Result<Head> {
        let head = read_head(self.buf, self.pos)
            .map_err(wire)?
            .ok_or_else(|| custom("truncated item"))?;
        self.pos += head.len;
        Ok(head)
    }

    /// The head of the next data item, tags skipped.
    fn untagged_head(&mut self) -> Result<Head> {
        loop {
            let head = self.head()?;
            if head.major != MAJOR_TAG {
                return Ok(head);
            }
        }
    }

    /// The contents of a string whose head was just read; borrowed unless chunked.
    fn string(&mut self, head: Head) -> Result<Cow<'de, [u8]>> {
        if head.indefinite() {
            return self.chunked(head).map(Cow::Owned);
        }
        let bytes = usize::try_from(head.arg)
            .ok()
            .and_then(|len| self.buf.get(self.pos..self.pos.checked_add(len)?))
            .ok_or_else(|| custom("truncated item"))?;
        self.pos += bytes.len();
        Ok(Cow::Borrowed(bytes))
    }

    /// An indefinite-length string, by the shared reader (CBOR::XS never writes one).
    fn chunked(&mut self, head: Head) -> Result<Vec<u8>> {
        let mut r = Reader::new(self.buf);
        r.pos = self.pos;
        let bytes = r.string(head).map_err(wire)?;
        self.pos = r.pos;
        Ok(bytes.into_owned())
    }

    /// The next item. The common shapes (integers, definite strings and containers) are read
    /// here; tags, simple values, floats and indefinite lengths go the general way.
    #[inline]
    fn item(&mut self) -> Result<Item<'de>> {
        if let Some((major, arg, next)) = definite_head(self.buf, self.pos) {
            match major {
                MAJOR_UINT => {
                    if let Ok(i) = i64::try_from(arg) {
                        self.pos = next;
                        return Ok(Item::Scalar(Value::Int(i)));
                    }
                }
                MAJOR_NEGINT => {
                    if let Ok(i) = i64::try_from(arg) {
                        self.pos = next;
                        return Ok(Item::Scalar(Value::Int(-1 - i)));
                    }
                }
                MAJOR_BYTES | MAJOR_TEXT => {
                    let start = next;
                    let bytes = usize::try_from(arg)
                        .ok()
                        .and_then(|n| self.buf.get(start..start.checked_add(n)?));
                    if let Some(b) = bytes {
                        self.pos = start + b.len();
                        return Ok(match std::str::from_utf8(b) {
                            Ok(s) => Item::Str(Cow::Borrowed(s)),
                            Err(_) => Item::Bytes(Cow::Borrowed(b)),
                        });
                    }
                }
                MAJOR_ARRAY => {
                    self.pos = next;
                    return Ok(Item::Array(Some(arg)));
                }
                MAJOR_MAP => {
                    self.pos = next;
                    return Ok(Item::Map(Some(arg)));
                }
                _ => {}
            }
        }
        self.general_item()
    }

    fn general_item(&mut self) -> Result<Item<'de>> {
        let head = self.untagged_head()?;
        let left = (!head.indefinite()).then_some(head.arg);
        Ok(match head.major {
            MAJOR_BYTES | MAJOR_TEXT => match self.string(head)? {
                Cow::Borrowed(b) => match std::str::from_utf8(b) {
                    Ok(s) => Item::Str(Cow::Borrowed(s)),
                    Err(_) => Item::Bytes(Cow::Borrowed(b)),
                },
                Cow::Owned(b) => match String::from_utf8(b) {
                    Ok(s) => Item::Str(Cow::Owned(s)),
                    Err(e) => Item::Bytes(Cow::Owned(e.into_bytes())),
                },
            },
            MAJOR_ARRAY => Item::Array(left),
            MAJOR_MAP => Item::Map(left),
            _ => Item::Scalar(scalar(head).map_err(wire)?),
        })
    }

    /// Opens a container; returns whether it counts towards the depth (empty definite ones do not).
    fn enter(&mut self, left: Option<u64>) -> Result<bool> {
        if left == Some(0) {
            return Ok(false);
        }
        if self.depth >= MAX_DEPTH {
            return Err(custom("nested too deeply"));
        }
        self.depth += 1;
        Ok(true)
    }

    fn leave(&mut self, entered: bool) {
        if entered {
            self.depth -= 1;
        }
    }

    /// Whether an open container has another item (a break is left for `close`).
    fn more(&self, left: Option<u64>) -> bool {
        match left {
            Some(n) => n > 0,
            None => !self.at_break(),
        }
    }

    /// Ends a container: its count must be used up, or a break must follow.
    fn close(&mut self, left: Option<u64>) -> Result<()> {
        match left {
            Some(0) => Ok(()),
            None if self.at_break() => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(custom("more elements than the type takes")),
        }
    }

    /// `n` announced items capped by the bytes left, for `size_hint`.
    fn bounded(&self, n: u64, per_item: usize) -> usize {
        let room = self.remaining() / per_item;
        usize::try_from(n).map_or(room, |n| n.min(room))
    }

    /// A map key, stringified as `to_value` does; arrays and maps are refused.
    fn key(&mut self) -> Result<Cow<'de, str>> {
        match self.item()? {
            Item::Str(s) => Ok(s),
            Item::Bytes(b) => key_string(Value::Bytes(b.into_owned()))
                .map(Cow::Owned)
                .map_err(wire),
            Item::Scalar(v) => key_string(v).map(Cow::Owned).map_err(wire),
            Item::Array(_) | Item::Map(_) => Err(custom("map key is an array or a map")),
        }
    }

    /// Walks past one item, checking it as `to_value` would. Recursion is bounded by `enter`.
    fn skip(&mut self) -> Result<()> {
        match self.pass()? {
            None => Ok(()),
            Some((map, left)) => self.skip_body(map, left),
        }
    }

    /// Walks past a map key: anything `to_value` can stringify.
    fn skip_key(&mut self) -> Result<()> {
        match self.pass()? {
            None => Ok(()),
            Some(_) => Err(custom("map key is an array or a map")),
        }
    }

    /// Walks past the next item if it is a scalar or a string, checking what `to_value` checks but
    /// building nothing (strings need not be UTF-8 there); a container is only opened: whether it
    /// is a map, and its count (`None` if it ends with a break).
    #[inline]
    fn pass(&mut self) -> Result<Option<(bool, Option<u64>)>> {
        if let Some((major, arg, next)) = definite_head(self.buf, self.pos) {
            match major {
                // Simple values and floats with a definite argument are all accepted.
                MAJOR_UINT | MAJOR_NEGINT | MAJOR_SIMPLE => {
                    self.pos = next;
                    return Ok(None);
                }
                MAJOR_BYTES | MAJOR_TEXT => {
                    let end = usize::try_from(arg)
                        .ok()
                        .and_then(|n| next.checked_add(n))
                        .filter(|&end| end <= self.buf.len())
                        .ok_or_else(|| custom("truncated item"))?;
                    self.pos = end;
                    return Ok(None);
                }
                MAJOR_ARRAY | MAJOR_MAP => {
                    self.pos = next;
                    return Ok(Some((major == MAJOR_MAP, Some(arg))));
                }
                _ => {}
            }
        }
        let head = self.untagged_head()?;
        let left = (!head.indefinite()).then_some(head.arg);
        match head.major {
            MAJOR_BYTES | MAJOR_TEXT => self.string(head).map(|_| None),
            MAJOR_ARRAY | MAJOR_MAP => Ok(Some((head.major == MAJOR_MAP, left))),
            _ => scalar(head).map(|_| None).map_err(wire),
        }
    }

    /// Walks past the items of a container whose head was just read.
    fn skip_body(&mut self, map: bool, mut left: Option<u64>) -> Result<()> {
        let entered = self.enter(left)?;
        while self.more(left) {
            if map {
                self.skip_key()?;
            }
            self.skip()?;
            if let Some(n) = &mut left {
                *n -= 1;
            }
        }
        self.close(left)?;
        self.leave(entered);
        Ok(())
    }

    fn visit_array<V: Visitor<'de>>(&mut self, left: Option<u64>, visitor: V) -> Result<V::Value> {
        let entered = self.enter(left)?;
        let mut seq = Seq { p: self, left };
        let out = visitor.visit_seq(&mut seq)?;
        let left = seq.left;
        self.close(left)?;
        self.leave(entered);
        Ok(out)
    }

    fn visit_map<V: Visitor<'de>>(&mut self, left: Option<u64>, visitor: V) -> Result<V::Value> {
        let entered = self.enter(left)?;
        let mut map = Map {
            p: self,
            left,
            value_pending: false,
        };
        let out = visitor.visit_map(&mut map)?;
        let (left, pending) = (map.left, map.value_pending);
        if pending {
            self.skip()?;
        }
        self.close(left)?;
        self.leave(entered);
        Ok(out)
    }
}

/// Methods whose behaviour depends only on the item: scalars go to the [`Value`] deserializer,
/// strings to [`StrDe`] / [`BytesDe`], containers are streamed (as `Value` does for an array or
/// a map in each of these, directly or through `deserialize_any`).
macro_rules! by_item {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value> {
            match self.item()? {
                Item::Scalar(v) => v.$method($($arg,)* visitor),
                Item::Str(s) => StrDe(s).$method($($arg,)* visitor),
                Item::Bytes(b) => BytesDe(b).$method($($arg,)* visitor),
                Item::Array(left) => self.visit_array(left, visitor),
                Item::Map(left) => self.visit_map(left, visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for &mut Parser<'de> {
    type Error = ValueError;

    by_item! {
        deserialize_any();
        deserialize_i8(); deserialize_i16(); deserialize_i32(); deserialize_i64();
        deserialize_u8(); deserialize_u16(); deserialize_u32(); deserialize_u64();
        deserialize_i128(); deserialize_u128(); deserialize_f32(); deserialize_f64();
        deserialize_char(); deserialize_str(); deserialize_string();
        deserialize_bytes(); deserialize_byte_buf();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_identifier();
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.item()? {
            Item::Scalar(v) => v.deserialize_bool(visitor),
            Item::Str(s) => StrDe(s).deserialize_bool(visitor),
            Item::Bytes(b) => BytesDe(b).deserialize_bool(visitor),
            // Perl truth of a reference; the contents still have to be well-formed.
            Item::Array(left) => {
                self.skip_body(false, left)?;
                visitor.visit_bool(true)
            }
            Item::Map(left) => {
                self.skip_body(true, left)?;
                visitor.visit_bool(true)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let start = self.pos;
        let head = self.untagged_head()?;
        if head.major == MAJOR_SIMPLE && matches!(head.ai, 22 | 23) {
            visitor.visit_none()
        } else {
            self.pos = start;
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let left = match self.item()? {
            Item::Str(s) => return visitor.visit_enum(StrEnum(s)),
            Item::Map(left @ (Some(1) | None)) => left,
            Item::Scalar(v) => return v.deserialize_enum(name, variants, visitor),
            Item::Bytes(b) => return BytesDe(b).deserialize_enum(name, variants, visitor),
            Item::Array(_) => return Err(custom("an enum is a string or a map with one entry")),
            Item::Map(_) => return Err(custom("an enum map has exactly one entry")),
        };
        if !self.more(left) {
            return Err(custom("an enum map has exactly one entry"));
        }
        let entered = self.enter(left)?;
        let state = Cell::new(EnumState::Start);
        let out = visitor.visit_enum(MapEnum {
            p: &mut *self,
            state: &state,
        })?;
        // Whatever of the entry the visitor left unread must still be well-formed.
        match state.get() {
            EnumState::Start => {
                self.skip_key()?;
                self.skip()?;
            }
            EnumState::Key => self.skip()?,
            EnumState::Done => {}
        }
        // A definite map had its one entry; an indefinite one must end right here.
        self.close(left.map(|_| 0))?;
        self.leave(entered);
        Ok(out)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }
}

struct Seq<'a, 'de> {
    p: &'a mut Parser<'de>,
    left: Option<u64>,
}

impl<'de> SeqAccess<'de> for Seq<'_, 'de> {
    type Error = ValueError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.p.more(self.left) {
            return Ok(None);
        }
        if let Some(n) = &mut self.left {
            *n -= 1;
        }
        seed.deserialize(&mut *self.p).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        self.left.map(|n| self.p.bounded(n, 1))
    }
}

struct Map<'a, 'de> {
    p: &'a mut Parser<'de>,
    left: Option<u64>,
    /// A key was handed out and its value not yet read.
    value_pending: bool,
}

impl<'de> MapAccess<'de> for Map<'_, 'de> {
    type Error = ValueError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.value_pending {
            self.value_pending = false;
            self.p.skip()?;
        }
        if !self.p.more(self.left) {
            return Ok(None);
        }
        if let Some(n) = &mut self.left {
            *n -= 1;
        }
        let key = self.p.key()?;
        self.value_pending = true;
        seed.deserialize(StrDe(key)).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        if !self.value_pending {
            return Err(custom("map value requested before its key"));
        }
        self.value_pending = false;
        seed.deserialize(&mut *self.p)
    }

    fn size_hint(&self) -> Option<usize> {
        // An entry takes at least two bytes.
        self.left.map(|n| self.p.bounded(n, 2))
    }
}

#[derive(Clone, Copy)]
enum EnumState {
    Start,
    Key,
    Done,
}

/// An enum as a map with one entry, read in place.
struct MapEnum<'a, 'b, 'de> {
    p: &'a mut Parser<'de>,
    state: &'b Cell<EnumState>,
}

impl<'a, 'b, 'de> EnumAccess<'de> for MapEnum<'a, 'b, 'de> {
    type Error = ValueError;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self)> {
        let key = self.p.key()?;
        self.state.set(EnumState::Key);
        let tag = seed.deserialize(StrDe(key))?;
        Ok((tag, self))
    }
}

impl<'de> VariantAccess<'de> for MapEnum<'_, '_, 'de> {
    type Error = ValueError;

    fn unit_variant(self) -> Result<()> {
        self.state.set(EnumState::Done);
        match self.p.item()? {
            Item::Scalar(Value::Null) => Ok(()),
            _ => Err(custom("a unit variant takes null")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        self.state.set(EnumState::Done);
        seed.deserialize(self.p)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.state.set(EnumState::Done);
        self.p.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.state.set(EnumState::Done);
        self.p.deserialize_struct("", fields, visitor)
    }
}

/// An enum given as a string: a unit variant.
struct StrEnum<'de>(Cow<'de, str>);

impl<'de> EnumAccess<'de> for StrEnum<'de> {
    type Error = ValueError;
    type Variant = UnitOnly;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, UnitOnly)> {
        Ok((seed.deserialize(StrDe(self.0))?, UnitOnly))
    }
}

struct UnitOnly;

impl<'de> VariantAccess<'de> for UnitOnly {
    type Error = ValueError;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"a newtype variant",
        ))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"a tuple variant",
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"a struct variant",
        ))
    }
}

/// Forwards to the [`Value`] deserializer over an owned copy: the rare coercions, where exact
/// agreement matters more than an allocation.
macro_rules! via_value {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value> {
            self.into_value().$method($($arg,)* visitor)
        }
    )*};
}

/// A UTF-8 string item or map key, read as `Value::Str` would be but borrowed where it can be.
struct StrDe<'de>(Cow<'de, str>);

impl<'de> StrDe<'de> {
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0 {
            Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
            Cow::Owned(s) => visitor.visit_string(s),
        }
    }

    fn into_value(self) -> Value {
        Value::Str(self.0.into_owned())
    }
}

/// The methods where `Value::Str` goes to `deserialize_any`, or reads the string as it is.
macro_rules! str_visit {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $(_: $ty,)* visitor: V) -> Result<V::Value> {
            self.visit(visitor)
        }
    )*};
}

impl<'de> Deserializer<'de> for StrDe<'de> {
    type Error = ValueError;

    str_visit! {
        deserialize_any(); deserialize_str(); deserialize_string(); deserialize_identifier();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
    }

    via_value! {
        deserialize_i8(); deserialize_i16(); deserialize_i32(); deserialize_i64();
        deserialize_u8(); deserialize_u16(); deserialize_u32(); deserialize_u64();
        deserialize_i128(); deserialize_u128(); deserialize_f32(); deserialize_f64();
        deserialize_char();
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_bool(!(self.0.is_empty() || self.0 == "0"))
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0 {
            Cow::Borrowed(s) => visitor.visit_borrowed_bytes(s.as_bytes()),
            Cow::Owned(s) => visitor.visit_byte_buf(s.into_bytes()),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(StrEnum(self.0))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
}

/// A string item that is not UTF-8, read as `Value::Bytes` would be but borrowed where it can be.
struct BytesDe<'de>(Cow<'de, [u8]>);

impl BytesDe<'_> {
    fn into_value(self) -> Value {
        Value::Bytes(self.0.into_owned())
    }
}

impl<'de> Deserializer<'de> for BytesDe<'de> {
    type Error = ValueError;

    via_value! {
        deserialize_bool();
        deserialize_i8(); deserialize_i16(); deserialize_i32(); deserialize_i64();
        deserialize_u8(); deserialize_u16(); deserialize_u32(); deserialize_u64();
        deserialize_i128(); deserialize_u128(); deserialize_f32(); deserialize_f64();
        deserialize_char(); deserialize_str(); deserialize_string(); deserialize_identifier();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0 {
            Cow::Borrowed(b) => visitor.visit_borrowed_bytes(b),
            Cow::Owned(b) => visitor.visit_byte_buf(b),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::path::PathBuf;

    use bytes::{BufMut, BytesMut};
    use proptest::prelude::*;
    use proptest::sample::{Index, select};
    use serde::de::{DeserializeOwned, IgnoredAny};

    use super::super::decode::{decode, decode_via_value, to_value};
    use super::super::encode_value;
    use super::super::tests::hex;
    use super::*;

    // ---- target types (their fields are read through `Debug` only) ----------------------------

    #[derive(Debug, Deserialize)]
    enum Unit {
        A,
        B,
        Ping,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    enum Cmd {
        Ping,
        Echo(String),
        Pair(i32, i32),
        Kill { reason: String },
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Rec {
        tag: String,
        count: Option<u32>,
        note: Option<String>,
        flag: bool,
    }

    /// Unknown keys are read as `IgnoredAny`.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Partial {
        tag: String,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Flat {
        tag: Option<String>,
        #[serde(flatten)]
        rest: BTreeMap<String, serde_json::Value>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        I(i64),
        F(f64),
        S(String),
        B(bool),
        L(Vec<Loose>),
        M(BTreeMap<String, Loose>),
        N(()),
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(tag = "t")]
    enum Tagged {
        A { x: Option<i64> },
        B,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Newtype(u16);

    /// Asks for a byte buffer.
    #[allow(dead_code)]
    #[derive(Debug)]
    struct Buf(Vec<u8>);

    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Buf, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_str<E>(self, v: &str) -> std::result::Result<Buf, E> {
                    Ok(Buf(v.as_bytes().to_vec()))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    // ---- comparison --------------------------------------------------------------------------

    /// The direct path agrees with `from_value(to_value(..))`: both fail, or both give the same
    /// value (compared by `Debug`, so NaN equals NaN). `decode` also gives the old error.
    fn agree<T: DeserializeOwned + Debug>(bytes: &[u8]) -> std::result::Result<(), String> {
        let new = from_packet::<T>(bytes);
        let old = decode_via_value::<T>(bytes);
        let same = match (&new, &old) {
            (Ok(a), Ok(b)) => format!("{a:?}") == format!("{b:?}"),
            (Err(_), Err(_)) => true,
            _ => false,
        };
        let routed = format!("{:?}", decode::<T>(bytes)) == format!("{old:?}");
        if same && routed {
            Ok(())
        } else {
            Err(format!(
                "{} on {}: direct {new:?}, via value {old:?}",
                std::any::type_name::<T>(),
                hex::encode(bytes)
            ))
        }
    }

    fn agree_all(b: &[u8]) -> std::result::Result<(), String> {
        agree::<Value>(b)?;
        agree::<(String, u64, String)>(b)?;
        agree::<Vec<serde_json::Value>>(b)?;
        agree::<Vec<Unit>>(b)?;
        agree::<Vec<Cmd>>(b)?;
        agree::<Vec<Option<Cmd>>>(b)?;
        agree::<Rec>(b)?;
        agree::<Vec<Rec>>(b)?;
        agree::<Vec<Partial>>(b)?;
        agree::<Vec<Flat>>(b)?;
        agree::<Vec<Loose>>(b)?;
        agree::<Vec<Tagged>>(b)?;
        agree::<IgnoredAny>(b)?;
        agree::<Vec<IgnoredAny>>(b)?;
        agree::<(String, IgnoredAny)>(b)?;
        agree::<(Unit, IgnoredAny, IgnoredAny)>(b)?;
        agree::<Vec<Option<i64>>>(b)?;
        agree::<Vec<u8>>(b)?;
        agree::<Vec<i8>>(b)?;
        agree::<Vec<i128>>(b)?;
        agree::<Vec<u128>>(b)?;
        agree::<Vec<f32>>(b)?;
        agree::<Vec<f64>>(b)?;
        agree::<Vec<bool>>(b)?;
        agree::<Vec<char>>(b)?;
        agree::<Vec<()>>(b)?;
        agree::<Vec<Newtype>>(b)?;
        agree::<Vec<Buf>>(b)?;
        agree::<Vec<String>>(b)?;
        agree::<Vec<Vec<String>>>(b)?;
        agree::<Vec<Option<Vec<u32>>>>(b)?;
        agree::<Vec<(i8, String)>>(b)?;
        agree::<Vec<BTreeMap<String, Option<String>>>>(b)?;
        Ok(())
    }

    // ---- random CBOR, in every shape the reader accepts ----------------------------------------

    #[derive(Debug, Clone)]
    enum Node {
        /// A one-byte major-7 item (false, true, null, undefined, unassigned simple values).
        Simple(u8),
        Uint(u64),
        /// `-1 - n`.
        Nint(u64),
        Half(u16),
        Single(f32),
        Double(f64),
        /// Contents, written as a byte string (as Perl does), chunked.
        Text(String, bool, bool),
        Bytes(Vec<u8>, bool),
        Tag(u64, Box<Node>),
        /// Items, indefinite.
        Array(Vec<Node>, bool),
        Map(Vec<(Node, Node)>, bool),
    }

    fn put_head(out: &mut BytesMut, major: u8, n: u64) {
        let m = major << 5;
        if n < 24 {
            out.put_u8(m | n as u8);
        } else if n <= 0xff {
            out.put_slice(&[m | 24, n as u8]);
        } else if n <= 0xffff {
            out.put_u8(m | 25);
            out.put_u16(n as u16);
        } else if n <= 0xffff_ffff {
            out.put_u8(m | 26);
            out.put_u32(n as u32);
        } else {
            out.put_u8(m | 27);
            out.put_u64(n);
        }
    }

    fn put_string(out: &mut BytesMut, major: u8, b: &[u8], chunked: bool) {
        if chunked {
            out.put_u8(major << 5 | 31);
            // Split anywhere: chunks need not be UTF-8 on their own.
            let (x, y) = b.split_at(b.len() / 2);
            for part in [x, y] {
                put_head(out, major, part.len() as u64);
                out.put_slice(part);
            }
            out.put_u8(BREAK);
        } else {
            put_head(out, major, b.len() as u64);
            out.put_slice(b);
        }
    }

    fn put(out: &mut BytesMut, n: &Node) {
        match n {
            Node::Simple(b) => out.put_u8(*b),
            Node::Uint(u) => put_head(out, 0, *u),
            Node::Nint(u) => put_head(out, 1, *u),
            Node::Half(h) => {
                out.put_u8(0xf9);
                out.put_u16(*h);
            }
            Node::Single(f) => {
                out.put_u8(0xfa);
                out.put_f32(*f);
            }
            Node::Double(f) => {
                out.put_u8(0xfb);
                out.put_f64(*f);
            }
            Node::Text(s, as_bytes, chunked) => {
                let major = if *as_bytes { MAJOR_BYTES } else { MAJOR_TEXT };
                put_string(out, major, s.as_bytes(), *chunked);
            }
            Node::Bytes(b, chunked) => put_string(out, MAJOR_BYTES, b, *chunked),
            Node::Tag(t, inner) => {
                put_head(out, MAJOR_TAG, *t);
                put(out, inner);
            }
            Node::Array(items, indefinite) => {
                if *indefinite {
                    out.put_u8(0x9f);
                } else {
                    put_head(out, MAJOR_ARRAY, items.len() as u64);
                }
                items.iter().for_each(|i| put(out, i));
                if *indefinite {
                    out.put_u8(BREAK);
                }
            }
            Node::Map(entries, indefinite) => {
                if *indefinite {
                    out.put_u8(0xbf);
                } else {
                    put_head(out, MAJOR_MAP, entries.len() as u64);
                }
                for (k, v) in entries {
                    put(out, k);
                    put(out, v);
                }
                if *indefinite {
                    out.put_u8(BREAK);
                }
            }
        }
    }

    fn bytes_of(n: &Node) -> Vec<u8> {
        let mut out = BytesMut::new();
        put(&mut out, n);
        out.to_vec()
    }

    /// Strings that hit variant and field names and Perl's numeric and truth coercions.
    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{0,3}",
            select(vec![
                "",
                "0",
                "1",
                " 42 ",
                "-7",
                "1.5",
                "1e3",
                "300",
                "-1",
                "0.0",
                "x",
                "☺",
                "A",
                "B",
                "Ping",
                "Echo",
                "Pair",
                "Kill",
                "reason",
                "tag",
                "count",
                "note",
                "flag",
                "t",
                "18446744073709551615",
                "true",
            ])
            .prop_map(String::from),
            ".{0,4}",
        ]
    }

    fn arb_str_node() -> impl Strategy<Value = Node> {
        (arb_text(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(s, b, c)| Node::Text(s, b, c))
    }

    fn arb_leaf() -> impl Strategy<Value = Node> {
        prop_oneof![
            1 => select(vec![0xf4u8, 0xf5, 0xf6, 0xf7, 0xe0, 0xf3]).prop_map(Node::Simple),
            1 => (0u64..300).prop_map(Node::Uint),
            1 => any::<u64>().prop_map(Node::Uint),
            1 => (0u64..300).prop_map(Node::Nint),
            1 => any::<u64>().prop_map(Node::Nint),
            1 => any::<u16>().prop_map(Node::Half),
            1 => any::<f32>().prop_map(Node::Single),
            1 => any::<f64>().prop_map(Node::Double),
            1 => (-3i32..300).prop_map(|i| Node::Double(f64::from(i))),
            1 => (-3i32..30).prop_map(|i| Node::Double(f64::from(i) + 0.5)),
            3 => arb_str_node(),
            1 => (proptest::collection::vec(any::<u8>(), 0..6), prop::bool::weighted(0.2))
                .prop_map(|(b, c)| Node::Bytes(b, c)),
        ]
    }

    fn arb_node() -> impl Strategy<Value = Node> {
        arb_leaf().prop_recursive(4, 40, 6, |inner| {
            let key = prop_oneof![
                8 => arb_str_node(),
                2 => arb_leaf(),
                1 => inner.clone(),
            ];
            prop_oneof![
                (
                    proptest::collection::vec(inner.clone(), 0..6),
                    any::<bool>()
                )
                    .prop_map(|(v, i)| Node::Array(v, i)),
                (
                    proptest::collection::vec((key, inner.clone()), 0..4),
                    any::<bool>()
                )
                    .prop_map(|(v, i)| Node::Map(v, i)),
                (0u64..30, inner).prop_map(|(t, n)| Node::Tag(t, Box::new(n))),
            ]
        })
    }

    fn text(s: &str) -> Node {
        Node::Text(s.into(), false, false)
    }

    /// Small scalars that often fit: nulls, small numbers, short and numeric strings.
    fn arb_simple_leaf() -> impl Strategy<Value = Node> {
        prop_oneof![
            // null, undefined, and null behind a tag
            select(vec![0xf6, 0xf7]).prop_map(Node::Simple),
            Just(Node::Tag(1, Box::new(Node::Simple(0xf6)))),
            (0u64..5).prop_map(Node::Uint),
            select(vec!["A", "B", "x", "1", "0", "Ping"]).prop_map(text),
            arb_leaf(),
        ]
    }

    /// Enum variants as strings or one-entry maps, mostly with content that fits the variant.
    fn arb_variant() -> impl Strategy<Value = Node> {
        let name = select(vec!["A", "B", "Ping", "Echo", "Pair", "Kill", "Nope"]).prop_map(text);
        let entry = prop_oneof![
            Just((text("Ping"), Node::Simple(0xf6))),
            arb_simple_leaf().prop_map(|v| (text("Echo"), v)),
            (arb_simple_leaf(), arb_simple_leaf())
                .prop_map(|(a, b)| (text("Pair"), Node::Array(vec![a, b], false))),
            arb_simple_leaf()
                .prop_map(|v| (text("Kill"), Node::Map(vec![(text("reason"), v)], false))),
            (name.clone(), arb_node()),
        ];
        prop_oneof![
            2 => name,
            3 => (entry.clone(), any::<bool>()).prop_map(|((k, v), i)| Node::Map(vec![(k, v)], i)),
            1 => proptest::collection::vec(entry, 0..3).prop_map(|e| Node::Map(e, true)),
        ]
    }

    /// Records as maps by field name (known or not) or as arrays by position.
    fn arb_record() -> impl Strategy<Value = Node> {
        let field = select(vec!["tag", "count", "note", "flag", "t", "x", "zz"]).prop_map(text);
        prop_oneof![
            (
                proptest::collection::vec((field.clone(), arb_simple_leaf()), 0..5),
                any::<bool>()
            )
                .prop_map(|(e, i)| Node::Map(e, i)),
            (
                proptest::collection::vec(arb_simple_leaf(), 3..5),
                any::<bool>()
            )
                .prop_map(|(v, i)| Node::Array(v, i)),
            // With the internal tag and the field `Partial` needs.
            (
                select(vec!["A", "B"]),
                arb_str_node(),
                proptest::collection::vec((field, arb_simple_leaf()), 0..3),
            )
                .prop_map(|(t, tag, mut e)| {
                    e.splice(0..0, [(text("t"), text(t)), (text("tag"), tag)]);
                    Node::Map(e, false)
                }),
        ]
    }

    fn arb_packet() -> impl Strategy<Value = Node> {
        let array = |items: BoxedStrategy<Node>| {
            (proptest::collection::vec(items, 0..4), any::<bool>())
                .prop_map(|(v, i)| Node::Array(v, i))
        };
        prop_oneof![
            array(arb_node().boxed()),
            // Shaped like `(String, u64, String)`, so that type succeeds now and then.
            (arb_str_node(), arb_leaf(), arb_str_node())
                .prop_map(|(a, b, c)| Node::Array(vec![a, b, c], false)),
            // Elements of one kind, so that the `Vec<T>` targets succeed now and then.
            array(arb_simple_leaf().boxed()),
            array(arb_variant().boxed()),
            array(arb_record().boxed()),
            arb_record(),
        ]
    }

    /// Values as the encoder takes them (top level an array).
    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::Bool),
            1 => any::<i64>().prop_map(Value::Int),
            1 => (0i64..300).prop_map(Value::Int),
            1 => any::<f64>().prop_map(Value::Float),
            3 => arb_text().prop_map(Value::Str),
            1 => proptest::collection::vec(any::<u8>(), 0..6).prop_map(Value::Bytes),
        ];
        let tree = leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((arb_text(), inner), 0..4).prop_map(Value::Map),
            ]
        });
        proptest::collection::vec(tree, 0..6).prop_map(Value::Array)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn agrees_with_value_path_on_any_cbor(packet in arb_packet()) {
            let b = bytes_of(&packet);
            agree_all(&b).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn agrees_with_value_path_on_encoded_values(v in arb_value()) {
            let mut out = BytesMut::new();
            encode_value(&v, &mut out).unwrap();
            agree_all(&out).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn agrees_on_damaged_packets(
            packet in arb_packet(),
            at in any::<Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut b = bytes_of(&packet);
            let i = at.index(b.len());
            if cut {
                b.truncate(i);
            } else {
                b[i] = byte;
            }
            agree_all(&b).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn garbage_never_panics(
            head in 0x80u8..0xa0,
            mut b in proptest::collection::vec(any::<u8>(), 0..64),
            as_array in any::<bool>(),
        ) {
            if as_array {
                b.insert(0, head);
            }
            agree::<Value>(&b).map_err(TestCaseError::fail)?;
            agree::<IgnoredAny>(&b).map_err(TestCaseError::fail)?;
            agree::<Vec<Loose>>(&b).map_err(TestCaseError::fail)?;
            agree::<Vec<Cmd>>(&b).map_err(TestCaseError::fail)?;
            agree::<(String, u64, String)>(&b).map_err(TestCaseError::fail)?;
        }
    }

    // ---- pinned cases ------------------------------------------------------------------------

    #[test]
    fn strings_are_borrowed() {
        // ["port.1" as a byte string, "tag" as a text string, h'ff', {"k": "v"}]
        let b = hex("84 46 706f72742e31 63 746167 41 ff a1 61 6b 61 76");
        type Borrowed<'a> = (&'a str, &'a str, &'a [u8], BTreeMap<&'a str, &'a str>);
        let (dest, tag, raw, map): Borrowed<'_> = from_packet(&b).unwrap();
        assert_eq!((dest, tag, raw), ("port.1", "tag", &[0xff][..]));
        assert_eq!(map, BTreeMap::from([("k", "v")]));
        // Pointing into the packet, not at a copy.
        assert!(b.as_ptr_range().contains(&dest.as_ptr()));
        // A chunked string has to be put together, so it cannot be borrowed.
        let chunked = hex("81 5f 41 61 41 62 ff");
        assert!(from_packet::<(&str,)>(&chunked).is_err());
        assert_eq!(from_packet::<(String,)>(&chunked).unwrap().0, "ab");
    }

    #[test]
    fn loose_typing_matches() {
        // [tag 1 "42", 1.0 (half), "1.5", "0", h'ff', 2^63, {"Echo": "x"}, "Ping", undefined]
        let b = hex(concat!(
            "89 c1 42 3432 f9 3c00 43 312e35 41 30 41 ff 1b 8000000000000000",
            " a1 44 4563686f 41 78 44 50696e67 f7"
        ));
        type T = (u8, String, f32, bool, Buf, u64, Cmd, Unit, Option<i64>);
        let (n, one, f, no, raw, big, echo, ping, undef): T = from_packet(&b).unwrap();
        assert_eq!(
            (n, one.as_str(), f, no, big),
            (42, "1", 1.5, false, 1 << 63)
        );
        assert_eq!(undef, None);
        assert_eq!(raw.0, vec![0xff]);
        assert!(matches!(echo, Cmd::Echo(x) if x == "x"));
        assert!(matches!(ping, Unit::Ping));
        agree_all(&b).unwrap();
    }

    #[test]
    fn enums_in_indefinite_maps() {
        // {_ "Pair": [1, 2]} is one entry; {_ "Pair": [1, 2], "Ping": null} is two.
        let one = hex("81 bf 44 50616972 82 01 02 ff");
        assert!(matches!(
            from_packet::<(Cmd,)>(&one),
            Ok((Cmd::Pair(1, 2),))
        ));
        let two = hex("81 bf 44 50616972 82 01 02 44 50696e67 f6 ff");
        assert!(from_packet::<(Cmd,)>(&two).is_err());
        let empty = hex("81 bf ff");
        assert!(from_packet::<(Cmd,)>(&empty).is_err());
        for b in [one, two, empty] {
            agree::<(Cmd,)>(&b).unwrap();
            agree_all(&b).unwrap();
        }
    }

    #[test]
    fn unread_parts_are_still_checked() {
        // The ignored element holds a map whose key is an array: `to_value` refuses the packet.
        let bad_key = hex("82 40 a1 80 01");
        assert!(from_packet::<(String, IgnoredAny)>(&bad_key).is_err());
        assert!(from_packet::<(String, bool)>(&bad_key).is_err());
        // The same with a good key is fine, and a map is true.
        let good = hex("82 40 a1 61 6b 01");
        assert!(from_packet::<(String, IgnoredAny)>(&good).is_ok());
        assert!(from_packet::<(String, bool)>(&good).unwrap().1);
        // An unknown field's value with a stray break.
        let stray = hex("82 40 a2 63 746167 40 61 7a 81 ff");
        assert!(from_packet::<(String, Partial)>(&stray).is_err());
        // Trailing bytes, and elements the type does not take.
        assert!(from_packet::<(String,)>(&hex("81 40 00")).is_err());
        assert!(from_packet::<(String,)>(&hex("82 40 40")).is_err());
        assert!(from_packet::<(String,)>(&hex("9f 40 40 ff")).is_err());
        for b in [bad_key, good, stray] {
            agree_all(&b).unwrap();
        }
    }

    #[test]
    fn errors_are_those_of_the_value_path() {
        for (bytes, want_type_error) in [
            ("82 40 1c", false),       // reserved additional information
            ("a0", false),             // not an array
            ("82 40", false),          // truncated
            ("82 01 a1 80 01", false), // type error first, malformed later
            ("83 40 41 61 41 62", true),
        ] {
            let b = hex(bytes);
            let got = decode::<(String, u64, String)>(&b).unwrap_err();
            assert_eq!(
                got,
                decode_via_value::<(String, u64, String)>(&b).unwrap_err()
            );
            assert_eq!(
                matches!(got, FramingError::Type { .. }),
                want_type_error,
                "{bytes}: {got}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded_as_before() {
        let nest = |n: usize, tail: &str| [vec![0x81; n], hex(tail)].concat();
        for (b, ok) in [
            (nest(MAX_DEPTH, "80"), true),
            (nest(MAX_DEPTH, "a0"), true),
            (nest(MAX_DEPTH, "9f ff"), false),
            (nest(MAX_DEPTH, "81 80"), false),
            (nest(MAX_DEPTH - 1, "a1 61 6b 80"), true),
            (nest(MAX_DEPTH - 1, "a1 61 6b 81 80"), false),
        ] {
            assert_eq!(to_value(&b).is_ok(), ok);
            assert_eq!(from_packet::<Value>(&b).is_ok(), ok);
            assert_eq!(from_packet::<IgnoredAny>(&b).is_ok(), ok);
            assert_eq!(from_packet::<(bool,)>(&b).is_ok(), ok);
            agree::<serde_json::Value>(&b).unwrap();
        }
    }

    // ---- captured traffic of the reference Perl nodes ------------------------------------------

    fn capture_packets() -> Vec<Vec<u8>> {
        let dir = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/captures"
        ));
        let mut packets = Vec::new();
        let mut dirs: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("p2-"))
            .collect();
        dirs.sort();
        for d in dirs {
            let text = std::fs::read_to_string(d.join("transcript.txt")).unwrap();
            for line in text.lines() {
                let mut words = line.split_whitespace();
                if words.nth(3) == Some("CBOR-bytes") {
                    packets.push(hex(words.next().unwrap()));
                }
            }
        }
        packets
    }

    #[test]
    fn captured_packets_decode_as_before() {
        let packets = capture_packets();
        assert_eq!(packets.len(), 118, "CBOR packets in the p2 captures");
        for p in &packets {
            let v = to_value(p).unwrap();
            assert_eq!(from_packet::<Value>(p).unwrap(), v);
            agree_all(p).unwrap();
            agree::<(String, String, f64)>(p).unwrap();
            agree::<(String, String, String, i64)>(p).unwrap();
            agree::<(String, String, bool)>(p).unwrap();
        }
        // ["MLq1er3ECb", "ref-v1-client#MSqCakYotb", 0, "abcdefghijklmnop"]
        let echo = hex(
            "844a4d4c713165723345436258187265662d76312d636c69656e74234d537143616b596f74620050\
             6162636465666768696a6b6c6d6e6f70",
        );
        let got: (String, String, u64, String) = decode(&echo).unwrap();
        assert_eq!(got.0, "MLq1er3ECb");
        assert_eq!(got.1, "ref-v1-client#MSqCakYotb");
        assert_eq!((got.2, got.3.as_str()), (0, "abcdefghijklmnop"));
        // ["L1Ir1lKmkb", "time-reply", 1795667640.52648]
        let time = hex("834a4c314972316c4b6d6b624a74696d652d7265706c79fb41dac1edae21b1eb");
        let (_, _, t): (String, String, f64) = decode(&time).unwrap();
        assert_eq!(t.to_bits(), 0x41dac1edae21b1eb);
        let (_, _, t): (String, String, String) = decode(&time).unwrap();
        assert_eq!(t, "1795667640.52648");
    }
}
