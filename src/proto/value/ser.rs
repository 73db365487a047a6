//! The serde way out: `Serialize` for [`Value`] and the serializer behind [`to_value`], which
//! turns any serde type into a [`Value`].

use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{MAX_PREALLOC, Value, ValueError, key_string};

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// T -> Value (a Serializer producing Value)

/// Converts a serde type into a value: strings and chars become [`Value::Str`], byte slices
/// [`Value::Bytes`], `None` and `()` [`Value::Null`], structs and maps [`Value::Map`], unit
/// variants their name, other variants a one-entry map `{name: content}`, integers above
/// `i64::MAX` [`Value::Float`].
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, ValueError> {
    v.serialize(ValueSerializer)
}

/// The serde serializer behind [`to_value`].
struct ValueSerializer;

/// Collects the elements of a sequence, tuple or tuple-like variant.
struct SeqBuilder {
    items: Vec<Value>,
    variant: Option<&'static str>,
}

/// Collects the entries of a map, struct or struct variant.
struct MapBuilder {
    entries: Vec<(String, Value)>,
    key: Option<String>,
    variant: Option<&'static str>,
}

fn wrap_variant(variant: Option<&'static str>, v: Value) -> Value {
    match variant {
        Some(name) => Value::Map(vec![(name.to_owned(), v)]),
        None => v,
    }
}

impl Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ValueError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, ValueError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, ValueError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, ValueError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, ValueError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, ValueError> {
        Ok(Value::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, ValueError> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, ValueError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, ValueError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, ValueError> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, ValueError> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, ValueError> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, ValueError> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, ValueError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, ValueError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, ValueError> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, ValueError> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, ValueError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, ValueError> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, ValueError> {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<Value, ValueError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, ValueError> {
        Ok(wrap_variant(Some(variant), v.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder {
            items: Vec::with_capacity(len.unwrap_or(0).min(MAX_PREALLOC)),
            variant: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, ValueError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ValueError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder {
            items: Vec::with_capacity(len.min(MAX_PREALLOC)),
            variant: Some(variant),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder {
            entries: Vec::with_capacity(len.unwrap_or(0).min(MAX_PREALLOC)),
            key: None,
            variant: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapBuilder, ValueError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder {
            entries: Vec::with_capacity(len.min(MAX_PREALLOC)),
            key: None,
            variant: Some(variant),
        })
    }
}

impl SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        self.items.push(to_value(v)?);
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(wrap_variant(self.variant, Value::Array(self.items)))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        SerializeSeq::serialize_element(self, v)
    }

    fn end(self) -> Result<Value, ValueError> {
        SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        SerializeSeq::serialize_element(self, v)
    }

    fn end(self) -> Result<Value, ValueError> {
        SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        SerializeSeq::serialize_element(self, v)
    }

    fn end(self) -> Result<Value, ValueError> {
        SerializeSeq::end(self)
    }
}

impl SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ValueError> {
        self.key = Some(key_string(to_value(key)?)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ValueError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ValueError::Message("map value serialised before its key".into()))?;
        self.entries.push((key, to_value(v)?));
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(wrap_variant(self.variant, Value::Map(self.entries)))
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), ValueError> {
        self.entries.push((key.to_owned(), to_value(v)?));
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        SerializeMap::end(self)
    }
}

impl ser::SerializeStructVariant for MapBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), ValueError> {
        ser::SerializeStruct::serialize_field(self, key, v)
    }

    fn end(self) -> Result<Value, ValueError> {
        SerializeMap::end(self)
    }
}

#[cfg(test)]
mod tests {
    use super::super::from_value;
    use super::super::tests::{Monitor, s};
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn to_value_shapes() {
        let m = Monitor {
            tag: "mon1".into(),
            port: "p".into(),
            count: 3,
            ratio: 0.5,
            active: true,
            note: None,
        };
        let v = to_value(&m).unwrap();
        assert_eq!(
            v,
            Value::Map(vec![
                ("tag".into(), s("mon1")),
                ("port".into(), s("p")),
                ("count".into(), Value::Int(3)),
                ("ratio".into(), Value::Float(0.5)),
                ("active".into(), Value::Bool(true)),
                ("note".into(), Value::Null),
            ])
        );
        assert_eq!(from_value::<Monitor>(v).unwrap(), m);
        assert_eq!(to_value(&u64::MAX).unwrap(), Value::Float(u64::MAX as f64));
        assert_eq!(to_value(&(i64::MAX as u64)).unwrap(), Value::Int(i64::MAX));
        assert_eq!(to_value(&'c').unwrap(), s("c"));
        assert_eq!(to_value(&()).unwrap(), Value::Null);
        assert_eq!(
            to_value(&("a", 1, [2u8])).unwrap(),
            Value::Array(vec![
                s("a"),
                Value::Int(1),
                Value::Array(vec![Value::Int(2)])
            ])
        );
        struct Raw;
        impl Serialize for Raw {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&[1, 2])
            }
        }
        assert_eq!(to_value(&Raw).unwrap(), Value::Bytes(vec![1, 2]));
        let mut keyed = BTreeMap::new();
        keyed.insert(7, true);
        assert_eq!(
            to_value(&keyed).unwrap(),
            Value::Map(vec![("7".into(), Value::Bool(true))])
        );
        let mut bad = BTreeMap::new();
        bad.insert(vec![1], 1);
        assert_eq!(to_value(&bad), Err(ValueError::BadKey("array")));
    }
}
