//! Perl's loose typing over serde_json: a `Deserializer` adapter that gives JSON packets what
//! the CBOR and Storable decoders give theirs (the rules of `proto/value/de.rs`).
//!
//! A Perl scalar travels as whatever it was last used as: JSON::XS writes a number that was
//! printed as a string (`"5"`), and Perl's receivers do not mind. Here, a scalar whose JSON type
//! is not the one the Rust type asks for (a string for an integer, a number for a string, a
//! number for a `bool`) goes through a [`Value`] and its loose conversion; everything else,
//! the common case, is handed straight to the visitor. Containers are walked by the adapter so
//! that the rule holds at any depth.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::proto::value::{Hint, Value, scalar_methods};

/// A deserializer with Perl's loose scalar typing.
pub(super) struct Loose<D>(pub D);

/// The JSON type that needs no conversion for a scalar's [`Hint`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Bool,
    Int,
    Float,
    Text,
}

/// Reads one scalar asked for with `hint`.
struct Scalar<V> {
    hint: Hint,
    visitor: V,
}

impl<V> Scalar<V> {
    /// The JSON type the hint takes as it is (`None`: not a scalar's hint).
    fn want(&self) -> Option<Want> {
        match self.hint {
            Hint::Bool => Some(Want::Bool),
            Hint::I8 | Hint::I16 | Hint::I32 | Hint::I64 | Hint::I128 => Some(Want::Int),
            Hint::U8 | Hint::U16 | Hint::U32 | Hint::U64 | Hint::U128 => Some(Want::Int),
            Hint::F32 | Hint::F64 => Some(Want::Float),
            Hint::Char | Hint::Str | Hint::String => Some(Want::Text),
            _ => None,
        }
    }

    /// The scalar converted as a [`Value`] converts it.
    fn loose<'de, E: de::Error>(self, v: Value) -> Result<V::Value, E>
    where
        V: Visitor<'de>,
    {
        self.hint.deserialize(v, self.visitor).map_err(E::custom)
    }
}

macro_rules! scalar {
    ($($method:ident => $hint:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.deserialize_any(Scalar { hint: Hint::$hint, visitor })
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Loose<D> {
    type Error = D::Error;

    scalar_methods!(scalar);

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Wrap(v))
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_bytes(Wrap(v))
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_byte_buf(Wrap(v))
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_option(Wrap(v))
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit(Wrap(v))
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Wrap(v))
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Wrap(v))
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_seq(Wrap(v))
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Wrap(v))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, Wrap(v))
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Wrap(v))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, Wrap(v))
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, Wrap(v))
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_identifier(v)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_ignored_any(v)
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Scalar<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<V::Value, E> {
        match self.want() {
            Some(Want::Bool) => self.visitor.visit_bool(b),
            _ => self.loose(Value::Bool(b)),
        }
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<V::Value, E> {
        match self.want() {
            Some(Want::Int | Want::Float) => self.visitor.visit_i64(i),
            _ => self.loose(Value::Int(i)),
        }
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<V::Value, E> {
        match self.want() {
            Some(Want::Int | Want::Float) => self.visitor.visit_u64(u),
            // Beyond i64, as a value holds it (a float).
            _ => self.loose(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int)),
        }
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<V::Value, E> {
        match self.want() {
            Some(Want::Float) => self.visitor.visit_f64(f),
            _ => self.loose(Value::Float(f)),
        }
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        match self.want() {
            Some(Want::Text) => self.visitor.visit_str(s),
            _ => self.loose(Value::Str(s.to_owned())),
        }
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        match self.want() {
            Some(Want::Text) => self.visitor.visit_borrowed_str(s),
            _ => self.loose(Value::Str(s.to_owned())),
        }
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        match self.want() {
            Some(Want::Text) => self.visitor.visit_string(s),
            _ => self.loose(Value::Str(s)),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.loose(Value::Null)
    }
    // A container asked for as a bool is a reference to Perl: true.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V::Value, A::Error> {
        if self.want() == Some(Want::Bool) {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return self.visitor.visit_bool(true);
        }
        self.visitor.visit_seq(LooseSeq(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V::Value, A::Error> {
        if self.want() == Some(Want::Bool) {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return self.visitor.visit_bool(true);
        }
        self.visitor.visit_map(LooseMap(map))
    }
}

/// A visitor whose containers are walked loosely.
struct Wrap<V>(V);

macro_rules! forward {
    ($($method:ident($t:ty)),* $(,)?) => {
        $(fn $method<E: de::Error>(self, v: $t) -> Result<V::Value, E> {
            self.0.$method(v)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
    forward!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Loose(d))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Loose(d))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(LooseSeq(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(LooseMap(map))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(LooseEnum(data))
    }
}

/// A seed whose deserializer is loose.
struct LooseSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for LooseSeed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Loose(d))
    }
}

struct LooseSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for LooseSeq<A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(LooseSeed(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// Keys are read as they are (JSON keys are strings; serde_json reads numeric keys itself).
struct LooseMap<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for LooseMap<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(seed)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(LooseSeed(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct LooseEnum<A>(A);

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for LooseEnum<A> {
    type Error = A::Error;
    type Variant = LooseEnum<A::Variant>;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (tag, variant) = self.0.variant_seed(seed)?;
        Ok((tag, LooseEnum(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for LooseEnum<A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(LooseSeed(seed))
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap(v))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Wrap(v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    use proptest::prelude::*;
    use serde::Deserialize;
    use serde::de::DeserializeOwned;

    use super::super::{decode, to_value};
    use crate::proto::value::{self, Value};

    // The fields are compared through `Debug`.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Rec {
        a: u32,
        b: String,
        c: Option<bool>,
    }

    #[derive(Debug, Deserialize)]
    enum Cmd {
        Go,
        Stop,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Newtype(i16);

    /// The JSON path and the way through a [`Value`] (the other framings' rules) agree.
    fn agree<T: DeserializeOwned + Debug>(json: &[u8]) -> Result<(), String> {
        let direct = decode::<T>(json);
        let via_value = to_value(json).and_then(|v| {
            value::from_value::<T>(v).map_err(|e| crate::proto::framing::FramingError::Type {
                framing: crate::proto::framing::Framing::Json,
                reason: e.to_string(),
            })
        });
        let same = match (&direct, &via_value) {
            (Ok(a), Ok(b)) => format!("{a:?}") == format!("{b:?}"),
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(format!(
                "{} on {}: json {direct:?}, via value {via_value:?}",
                std::any::type_name::<T>(),
                String::from_utf8_lossy(json)
            ))
        }
    }

    fn agree_all(json: &[u8]) -> Result<(), String> {
        agree::<Value>(json)?;
        agree::<(String, u64, String)>(json)?;
        agree::<(String, i64, i64, String)>(json)?;
        agree::<Vec<i64>>(json)?;
        agree::<Vec<u8>>(json)?;
        agree::<Vec<i128>>(json)?;
        agree::<Vec<f64>>(json)?;
        agree::<Vec<f32>>(json)?;
        agree::<Vec<bool>>(json)?;
        agree::<Vec<char>>(json)?;
        agree::<Vec<String>>(json)?;
        agree::<Vec<Option<i64>>>(json)?;
        agree::<Vec<Newtype>>(json)?;
        agree::<Vec<Cmd>>(json)?;
        agree::<Vec<Rec>>(json)?;
        agree::<Vec<(i8, String)>>(json)?;
        agree::<Vec<Vec<u16>>>(json)?;
        agree::<Vec<BTreeMap<String, Option<u32>>>>(json)?;
        Ok(())
    }

    fn arb_leaf() -> impl Strategy<Value = Value> {
        let text = proptest::sample::select(vec![
            "",
            "0",
            "1",
            "5",
            "-3",
            " 7 ",
            "1.5",
            "2.0",
            "1e3",
            "x",
            "Go",
            "Stop",
            "é",
            "300",
            "18446744073709551615",
            "true",
        ]);
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-300i64..300).prop_map(Value::Int),
            any::<i64>().prop_map(Value::Int),
            prop_oneof![Just(0.5), Just(2.0), Just(-1.0), Just(1e20)].prop_map(Value::Float),
            text.prop_map(|s| Value::Str(s.to_owned())),
        ]
    }

    fn arb_packet() -> impl Strategy<Value = Value> {
        let tree = arb_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(
                    (proptest::sample::select(vec!["a", "b", "c", "x"]), inner),
                    0..4
                )
                .prop_map(|e| Value::Map(e.into_iter().map(|(k, v)| (k.into(), v)).collect())),
            ]
        });
        proptest::collection::vec(tree, 0..5).prop_map(Value::Array)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn json_decodes_as_the_value_path_does(v in arb_packet()) {
            let json = serde_json::to_vec(&v).unwrap();
            agree_all(&json).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn perl_scalars_of_the_other_type() {
        let d = |json: &str| decode::<(String, u32, String, bool, f64)>(json.as_bytes());
        assert_eq!(
            d(r#"["p","5",6,"0","1.5"]"#).unwrap(),
            ("p".into(), 5, "6".into(), false, 1.5)
        );
        assert_eq!(
            d(r#"["p",5.0,"x",1,2]"#).unwrap(),
            ("p".into(), 5, "x".into(), true, 2.0)
        );
        assert!(d(r#"["p","five","x",1,2]"#).is_err());
        // A reference is true to Perl.
        assert!(decode::<(String, bool)>(br#"["p",[]]"#).unwrap().1);
        assert!(d(r#"["p",-1,"x",1,2]"#).is_err());
        // At any depth.
        let nested = decode::<(String, BTreeMap<String, Vec<u8>>)>(br#"["p",{"k":["1",2]}]"#);
        assert_eq!(nested.unwrap().1["k"], vec![1, 2]);
    }
}
