//! The serde way in: `Deserialize` for [`Value`] (any self-describing format into a value) and
//! the loose `Deserializer` over an owned [`Value`] behind [`from_value`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde::{Deserialize, de::DeserializeOwned};

use super::{MAX_PREALLOC, Value, ValueError, key_string};

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(match std::str::from_utf8(v) {
            Ok(s) => Value::Str(s.to_owned()),
            Err(_) => Value::Bytes(v.to_vec()),
        })
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(match String::from_utf8(v) {
            Ok(s) => Value::Str(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        })
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(k) = map.next_key_seed(KeySeed)? {
            let v = map.next_value()?;
            out.push((k, v));
        }
        Ok(Value::Map(out))
    }
}

/// Reads a map key of any scalar type into a string (Perl hash keys are strings).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let v = d.deserialize_any(ValueVisitor)?;
        key_string(v).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Value -> T (a loose Deserializer over an owned Value)

/// Converts a value into a serde type, applying Perl's loose typing where the type asks for
/// something specific (numeric strings for numbers, Perl truth for `bool`, numbers for strings).
/// A struct accepts a map (by field name) or an array (by position).
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, ValueError> {
    T::deserialize(v)
}

impl<'de> IntoDeserializer<'de, ValueError> for Value {
    type Deserializer = Value;

    fn into_deserializer(self) -> Value {
        self
    }
}

impl Value {
    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Int(i) => Unexpected::Signed(*i),
            Value::Float(f) => Unexpected::Float(*f),
            Value::Str(s) => Unexpected::Str(s),
            Value::Bytes(b) => Unexpected::Bytes(b),
            Value::Array(_) => Unexpected::Seq,
            Value::Map(_) => Unexpected::Map,
        }
    }
}

macro_rules! loose_signed {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            match self.as_i64() {
                Some(i) => visitor.visit_i64(i),
                None => self.deserialize_any(visitor),
            }
        }
    )*};
}

macro_rules! loose_unsigned {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            match self.as_u64() {
                Some(i) => visitor.visit_u64(i),
                None => self.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Value {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::Array(a) => visit_array(a, visitor),
            Value::Map(m) => visit_map(m, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_bool(self.is_true())
    }

    loose_signed!(
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64
    );
    loose_unsigned!(
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64
    );

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match (self.as_i64(), self.as_u64()) {
            (Some(i), _) => visitor.visit_i64(i),
            (None, Some(u)) => visitor.visit_u64(u),
            (None, None) => self.deserialize_any(visitor),
        }
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.as_u64() {
            Some(u) => visitor.visit_u64(u),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.as_f64() {
            Some(f) => visitor.visit_f64(f),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        let single = self.as_str().and_then(|s| {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => None,
            }
        });
        match single {
            Some(c) => visitor.visit_char(c),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => match String::from_utf8(b) {
                Ok(s) => visitor.visit_string(s),
                Err(e) => Err(de::Error::invalid_type(
                    Unexpected::Bytes(e.as_bytes()),
                    &"a UTF-8 string",
                )),
            },
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                let s = self.as_str().map(Cow::into_owned).unwrap_or_default();
                visitor.visit_string(s)
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::Str(s) => visitor.visit_byte_buf(s.into_bytes()),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_unit(),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Array(a) => visit_array(a, visitor),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Map(m) => visit_map(m, visitor),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            Value::Map(m) => visit_map(m, visitor),
            Value::Array(a) => visit_array(a, visitor),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            Value::Str(variant) => visitor.visit_enum(Enum {
                variant,
                value: None,
            }),
            Value::Map(m) if m.len() == 1 => {
                let mut it = m.into_iter();
                match it.next() {
                    Some((variant, value)) => visitor.visit_enum(Enum {
                        variant,
                        value: Some(value),
                    }),
                    None => Err(de::Error::invalid_length(0, &"a map with one entry")),
                }
            }
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"a string or a map with one entry",
            )),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Int(i) if i >= 0 => visitor.visit_u64(i.unsigned_abs()),
            other => other.deserialize_string(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_unit()
    }
}

fn visit_array<'de, V: Visitor<'de>>(a: Vec<Value>, visitor: V) -> Result<V::Value, ValueError> {
    let len = a.len();
    let mut seq = SeqDeserializer {
        iter: a.into_iter(),
    };
    let out = visitor.visit_seq(&mut seq)?;
    if seq.iter.len() == 0 {
        Ok(out)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements"))
    }
}

fn visit_map<'de, V: Visitor<'de>>(
    m: Vec<(String, Value)>,
    visitor: V,
) -> Result<V::Value, ValueError> {
    let len = m.len();
    let mut map = MapDeserializer {
        iter: m.into_iter(),
        value: None,
    };
    let out = visitor.visit_map(&mut map)?;
    if map.iter.len() == 0 {
        Ok(out)
    } else {
        Err(de::Error::invalid_length(len, &"fewer entries"))
    }
}

struct SeqDeserializer {
    iter: std::vec::IntoIter<Value>,
}

impl<'de> SeqAccess<'de> for SeqDeserializer {
    type Error = ValueError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValueError> {
        self.iter.next().map(|v| seed.deserialize(v)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDeserializer {
    iter: std::vec::IntoIter<(String, Value)>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for MapDeserializer {
    type Error = ValueError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValueError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(Value::Str(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        match self.value.take() {
            Some(v) => seed.deserialize(v),
            None => Err(de::Error::custom("map value requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Enum {
    variant: String,
    value: Option<Value>,
}

impl<'de> EnumAccess<'de> for Enum {
    type Error = ValueError;
    type Variant = Variant;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Variant), ValueError> {
        let tag = seed.deserialize(Value::Str(self.variant))?;
        Ok((tag, Variant(self.value)))
    }
}

struct Variant(Option<Value>);

impl<'de> VariantAccess<'de> for Variant {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        match self.0 {
            None | Some(Value::Null) => Ok(()),
            Some(other) => Err(de::Error::invalid_type(
                other.unexpected(),
                &"a unit variant",
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        match self.0 {
            Some(v) => seed.deserialize(v),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"a newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            Some(v) => v.deserialize_seq(visitor),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"a tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            Some(v) => v.deserialize_struct("", fields, visitor),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"a struct variant",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Cmd, Monitor, s};
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn from_value_is_loose() {
        let v = Value::Map(vec![
            ("tag".into(), Value::Int(5)),
            ("port".into(), s("n#p")),
            ("count".into(), s("42")),
            ("ratio".into(), s("1.5")),
            ("active".into(), s("0")),
            ("note".into(), Value::Null),
        ]);
        let m: Monitor = from_value(v).unwrap();
        assert_eq!(
            m,
            Monitor {
                tag: "5".into(),
                port: "n#p".into(),
                count: 42,
                ratio: 1.5,
                active: false,
                note: None,
            }
        );
        // Positional, as Perl messages are.
        let v = Value::Array(vec![
            s("mon1"),
            s("n#p"),
            Value::Float(3.0),
            Value::Int(2),
            Value::Int(1),
            s("x"),
        ]);
        let m: Monitor = from_value(v).unwrap();
        assert_eq!(m.count, 3);
        assert_eq!(m.ratio, 2.0);
        assert!(m.active);
        assert_eq!(m.note.as_deref(), Some("x"));

        let t: (String, i64, bool, String) = from_value(Value::Array(vec![
            s("a"),
            s(" -7 "),
            Value::Null,
            Value::Float(3.0),
        ]))
        .unwrap();
        assert_eq!(t, ("a".into(), -7, false, "3".into()));
        let big: u64 = from_value(Value::Float(18446744073709549568.0)).unwrap();
        assert_eq!(big, 18446744073709549568);
        let c: char = from_value(s("☺")).unwrap();
        assert_eq!(c, '☺');
        let b: Vec<u8> = from_value(Value::Array(vec![Value::Int(1), s("2")])).unwrap();
        assert_eq!(b, vec![1, 2]);
        let map: BTreeMap<String, i32> =
            from_value(Value::Map(vec![("a".into(), s("1"))])).unwrap();
        assert_eq!(map.get("a"), Some(&1));
    }

    #[test]
    fn from_value_rejects_what_does_not_fit() {
        assert!(from_value::<u8>(Value::Int(300)).is_err());
        assert!(from_value::<u32>(Value::Int(-1)).is_err());
        assert!(from_value::<i64>(s("abc")).is_err());
        assert!(from_value::<i64>(Value::Float(1.5)).is_err());
        assert!(from_value::<String>(Value::Null).is_err());
        assert!(from_value::<String>(Value::Bytes(vec![0xff])).is_err());
        assert!(from_value::<String>(Value::Array(vec![])).is_err());
        assert!(from_value::<(i32, i32)>(Value::Array(vec![Value::Int(1)])).is_err());
        assert!(from_value::<(i32,)>(Value::Array(vec![Value::Int(1), Value::Int(2)])).is_err());
        assert!(from_value::<char>(s("ab")).is_err());
        assert!(from_value::<Cmd>(Value::Int(1)).is_err());
        let err = from_value::<Monitor>(Value::Map(vec![])).unwrap_err();
        assert!(matches!(err, ValueError::Message(_)), "{err}");
    }

    #[test]
    fn bytes_and_options() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct B(#[serde(with = "bytes_field")] Vec<u8>);
        mod bytes_field {
            use serde::Deserializer;
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Vec<u8>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                        Ok(v)
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
        assert_eq!(
            from_value::<B>(Value::Bytes(vec![0xff])).unwrap().0,
            vec![0xff]
        );
        assert_eq!(from_value::<B>(s("ab")).unwrap().0, b"ab".to_vec());
        assert_eq!(from_value::<Option<i32>>(Value::Null).unwrap(), None);
        assert_eq!(from_value::<Option<i32>>(s("4")).unwrap(), Some(4));
        from_value::<()>(Value::Null).unwrap();
        assert!(from_value::<()>(Value::Int(0)).is_err());
    }

    #[test]
    fn deserialize_from_json_maps_naturally() {
        let v: Value =
            serde_json::from_str(r#"[null,true,-1,18446744073709551615,1.5,"s",{"k":[1]}]"#)
                .unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Null,
                Value::Bool(true),
                Value::Int(-1),
                Value::Float(18446744073709551615.0),
                Value::Float(1.5),
                s("s"),
                Value::Map(vec![("k".into(), Value::Array(vec![Value::Int(1)]))]),
            ])
        );
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"[null,true,-1,1.8446744073709552e+19,1.5,"s",{"k":[1]}]"#
        );
        // Byte strings from a binary format: UTF-8 becomes Str, the rest stays Bytes.
        let from_bytes = |b: &[u8]| ValueVisitor.visit_bytes::<ValueError>(b).unwrap();
        assert_eq!(from_bytes(b"ok"), s("ok"));
        assert_eq!(from_bytes(&[0xff]), Value::Bytes(vec![0xff]));
    }
}
