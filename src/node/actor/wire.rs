//! The wire form of typed messages: a message's fields are the elements after its tag
//! (`[tag, field, ...]`), a request carries its reply port as the last element, and a reply's
//! value is the whole reply message (`snd $reply, @values`).
//!
//! "Fields" means: a struct's fields in declaration order (names are not sent), a tuple's or a
//! tuple struct's elements, a newtype's inner value's fields, the elements of a sequence; a unit
//! (`()`, a unit struct) has none; any other value (a number, a string, an enum) is one element.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::ser::{self, Impossible, SerializeSeq, Serializer};
use serde::{Deserialize, Deserializer, Serialize};

use crate::proto::value::{Hint, Value, scalar_methods};

/// `[tag?, fields of body..., trailer?]` as one sequence.
pub(crate) struct Elements<'a, T: ?Sized> {
    pub tag: Option<&'static str>,
    pub body: &'a T,
    pub trailer: Option<&'a str>,
}

impl<T: Serialize + ?Sized> Serialize for Elements<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Storable and definite CBOR arrays need the length first: count without encoding.
        let fields = self
            .body
            .serialize(CountFields)
            .map_err(ser::Error::custom)?;
        let len = usize::from(self.tag.is_some()) + fields + usize::from(self.trailer.is_some());
        let mut seq = s.serialize_seq(Some(len))?;
        if let Some(tag) = self.tag {
            seq.serialize_element(tag)?;
        }
        self.body.serialize(Flatten(&mut seq))?;
        if let Some(t) = self.trailer {
            seq.serialize_element(t)?;
        }
        seq.end()
    }
}

/// Why a value cannot be a message's fields.
#[derive(Debug)]
pub(crate) struct NotFields(String);

impl fmt::Display for NotFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotFields {}
impl ser::Error for NotFields {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NotFields(msg.to_string())
    }
}

const MAP_FIELDS: &str = "a map cannot be a message's fields (use a struct, a tuple or a sequence)";
const VARIANT_FIELDS: &str =
    "an enum variant with fields cannot be a message's fields (wrap it in a struct)";

/// How many elements [`Flatten`] will write; visits the top level only.
struct CountFields;

/// Counts the fields of a compound without looking into them.
struct Count(usize);

/// The compound traits of a serializer whose compounds pass each element or field to one
/// method: `$ty` implements them with `$element(self, value)` and `$end(self)`.
macro_rules! compounds {
    (impl$([$($g:tt)*])? for $ty:ty, Ok = $ok:ty, Error = $err:ty, $element:ident, $end:ident) => {
        impl$(<$($g)*>)? ser::SerializeSeq for $ty {
            type Ok = $ok;
            type Error = $err;
            fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), $err> {
                self.$element(v)
            }
            fn end(self) -> Result<$ok, $err> {
                self.$end()
            }
        }
        impl$(<$($g)*>)? ser::SerializeTuple for $ty {
            type Ok = $ok;
            type Error = $err;
            fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), $err> {
                self.$element(v)
            }
            fn end(self) -> Result<$ok, $err> {
                self.$end()
            }
        }
        impl$(<$($g)*>)? ser::SerializeTupleStruct for $ty {
            type Ok = $ok;
            type Error = $err;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), $err> {
                self.$element(v)
            }
            fn end(self) -> Result<$ok, $err> {
                self.$end()
            }
        }
        impl$(<$($g)*>)? ser::SerializeStruct for $ty {
            type Ok = $ok;
            type Error = $err;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                v: &T,
            ) -> Result<(), $err> {
                self.$element(v)
            }
            fn end(self) -> Result<$ok, $err> {
                self.$end()
            }
        }
    };
}

impl Count {
    fn count<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), NotFields> {
        self.0 += 1;
        Ok(())
    }
    fn total(self) -> Result<usize, NotFields> {
        Ok(self.0)
    }
}

compounds!(impl for Count, Ok = usize, Error = NotFields, count, total);

macro_rules! one_element {
    ($($m:ident($t:ty)),* $(,)?) => {
        $(fn $m(self, _: $t) -> Result<Self::Ok, Self::Error> { Ok(1) })*
    };
}

impl Serializer for CountFields {
    type Ok = usize;
    type Error = NotFields;
    type SerializeSeq = Count;
    type SerializeTuple = Count;
    type SerializeTupleStruct = Count;
    type SerializeTupleVariant = Impossible<usize, NotFields>;
    type SerializeMap = Impossible<usize, NotFields>;
    type SerializeStruct = Count;
    type SerializeStructVariant = Impossible<usize, NotFields>;

    one_element!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
    );
    fn serialize_none(self) -> Result<usize, NotFields> {
        Ok(1)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<usize, NotFields> {
        Ok(1)
    }
    fn serialize_unit(self) -> Result<usize, NotFields> {
        Ok(0)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<usize, NotFields> {
        Ok(0)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<usize, NotFields> {
        Ok(1)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<usize, NotFields> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<usize, NotFields> {
        Ok(1)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Count, NotFields> {
        Ok(Count(0))
    }
    fn serialize_tuple(self, _: usize) -> Result<Count, NotFields> {
        Ok(Count(0))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Count, NotFields> {
        Ok(Count(0))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotFields> {
        Err(NotFields(VARIANT_FIELDS.into()))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotFields> {
        Err(NotFields(MAP_FIELDS.into()))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Count, NotFields> {
        Ok(Count(0))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotFields> {
        Err(NotFields(VARIANT_FIELDS.into()))
    }
}

/// Writes a value's fields as elements of an enclosing sequence.
struct Flatten<'s, S>(&'s mut S);

/// A unit variant or newtype variant, written again as one element.
enum Variant<'a, T: ?Sized> {
    Unit(&'static str, u32, &'static str),
    Newtype(&'static str, u32, &'static str, &'a T),
}

impl<T: Serialize + ?Sized> Serialize for Variant<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Variant::Unit(n, i, v) => s.serialize_unit_variant(n, i, v),
            Variant::Newtype(n, i, v, value) => s.serialize_newtype_variant(n, i, v, value),
        }
    }
}

macro_rules! element {
    ($($m:ident($t:ty)),* $(,)?) => {
        $(fn $m(self, v: $t) -> Result<(), S::Error> { self.0.serialize_element(&v) })*
    };
}

impl<'s, S: SerializeSeq> Serializer for Flatten<'s, S> {
    type Ok = ();
    type Error = S::Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), S::Error>;
    type SerializeMap = Impossible<(), S::Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), S::Error>;

    element!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
    );
    fn serialize_bytes(self, v: &[u8]) -> Result<(), S::Error> {
        self.0.serialize_element(&Bytes(v))
    }
    fn serialize_none(self) -> Result<(), S::Error> {
        self.0.serialize_element(&())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), S::Error> {
        self.0.serialize_element(&Some(v))
    }
    fn serialize_unit(self) -> Result<(), S::Error> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), S::Error> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        n: &'static str,
        i: u32,
        v: &'static str,
    ) -> Result<(), S::Error> {
        self.0.serialize_element(&Variant::<()>::Unit(n, i, v))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), S::Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        n: &'static str,
        i: u32,
        v: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        self.0.serialize_element(&Variant::Newtype(n, i, v, value))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, S::Error> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, S::Error> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, S::Error> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Err(ser::Error::custom(VARIANT_FIELDS))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Err(ser::Error::custom(MAP_FIELDS))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, S::Error> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Err(ser::Error::custom(VARIANT_FIELDS))
    }
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<S: SerializeSeq> Flatten<'_, S> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), S::Error> {
        self.0.serialize_element(v)
    }
    fn done(self) -> Result<(), S::Error> {
        Ok(())
    }
}

compounds!(impl[S: SerializeSeq] for Flatten<'_, S>, Ok = (), Error = S::Error, element, done);

// ---- decoding -----------------------------------------------------------------------------

/// A reply: every element is the reply value's fields.
pub(crate) struct ReplyBody<R>(pub R);

/// A message's fields from the elements after its tag; extra elements are skipped.
pub(crate) fn tell_fields<'de, M, A>(seq: &mut A) -> Result<M, A::Error>
where
    M: DeserializeOwned,
    A: SeqAccess<'de>,
{
    let m = M::deserialize(Fields(seq))?;
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(m)
}

/// A request's fields and its reply port (the last element, after any extras) from the
/// elements after its tag.
pub(crate) fn request_fields<'de, M, A>(seq: &mut A) -> Result<(M, String), A::Error>
where
    M: DeserializeOwned,
    A: SeqAccess<'de>,
{
    let m = M::deserialize(Fields(seq))?;
    let mut last = None;
    while let Some(v) = seq.next_element::<Value>()? {
        last = Some(v);
    }
    match last.as_ref().and_then(Value::as_str) {
        Some(port) => Ok((m, port.into_owned())),
        None => Err(de::Error::custom(
            "the request has no reply port (a string) after its fields",
        )),
    }
}

impl<'de, R: DeserializeOwned> Deserialize<'de> for ReplyBody<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<R>(PhantomData<R>);
        impl<'de, R: DeserializeOwned> Visitor<'de> for V<R> {
            type Value = ReplyBody<R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reply")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let r = R::deserialize(Fields(&mut seq))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ReplyBody(r))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// Reads a value's fields from the following elements of a sequence (the inverse of
/// [`Flatten`]). Scalars take one element, keeping their type hint so that the formats'
/// coercions (Perl's numbers sent as strings) still apply.
struct Fields<'s, A>(&'s mut A);

struct Hinted<V> {
    hint: Hint,
    visitor: V,
}

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Hinted<V> {
    type Value = V::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.hint.deserialize(d, self.visitor)
    }
}

impl<'de, A: SeqAccess<'de>> Fields<'_, A> {
    /// The next element, read with `hint`.
    fn one<V: Visitor<'de>>(self, hint: Hint, visitor: V) -> Result<V::Value, A::Error> {
        self.0
            .next_element_seed(Hinted { hint, visitor })?
            .ok_or_else(|| de::Error::custom("the message ends before this field"))
    }
}

macro_rules! hinted {
    ($($m:ident => $h:ident),* $(,)?) => {
        $(fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, A::Error> {
            self.one(Hint::$h, v)
        })*
    };
}

impl<'de, A: SeqAccess<'de>> Deserializer<'de> for Fields<'_, A> {
    type Error = A::Error;

    scalar_methods!(hinted);
    hinted!(
        deserialize_bytes => Bytes,
        deserialize_byte_buf => ByteBuf,
        deserialize_map => Map,
        deserialize_identifier => Identifier,
    );

    /// An absent element is `None` (`snd $reply` with nothing); a present one is read as an
    /// option (so `null` is `None` too).
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, A::Error> {
        // The visitor is used once: either for the element or for its absence. Keep it in an
        // option so that both paths can take it.
        let mut slot = Some(v);
        let got = self.0.next_element_seed(OptionSlot(&mut slot))?;
        match (got, slot) {
            (Some(value), _) => Ok(value),
            (None, Some(v)) => v.visit_none(),
            (None, None) => Err(de::Error::custom("option visitor used twice")),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, A::Error> {
        v.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, A::Error> {
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, A::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, A::Error> {
        v.visit_seq(self.0)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, A::Error> {
        v.visit_seq(self.0)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, A::Error> {
        v.visit_seq(self.0)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        v.visit_seq(self.0)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        self.one(Hint::Enum(name, variants), v)
    }

    /// Untyped: the remaining elements as a sequence.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, A::Error> {
        v.visit_seq(self.0)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, A::Error> {
        while self.0.next_element::<IgnoredAny>()?.is_some() {}
        v.visit_unit()
    }
}

/// Reads one element as an option with a visitor held in a slot (see `deserialize_option`).
struct OptionSlot<'v, V>(&'v mut Option<V>);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for OptionSlot<'_, V> {
    type Value = V::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        match self.0.take() {
            Some(v) => d.deserialize_option(v),
            None => Err(de::Error::custom("option visitor used twice")),
        }
    }
}
