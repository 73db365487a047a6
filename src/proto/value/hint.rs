//! Which `Deserializer` method a value was asked for with, kept so that another deserializer
//! can be asked the same way: a type hint carried past a layer that reads the value for it
//! (a message's fields read element by element, a JSON scalar converted through a [`Value`]).
//!
//! [`Value`]: super::Value

use serde::de::{Deserializer, Visitor};

/// A `deserialize_*` method of a scalar or a value read whole.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hint {
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    String,
    Bytes,
    ByteBuf,
    Map,
    Identifier,
    Enum(&'static str, &'static [&'static str]),
}

impl Hint {
    /// Asks `d` for a value with the hinted method.
    pub(crate) fn deserialize<'de, D, V>(self, d: D, v: V) -> Result<V::Value, D::Error>
    where
        D: Deserializer<'de>,
        V: Visitor<'de>,
    {
        match self {
            Hint::Bool => d.deserialize_bool(v),
            Hint::I8 => d.deserialize_i8(v),
            Hint::I16 => d.deserialize_i16(v),
            Hint::I32 => d.deserialize_i32(v),
            Hint::I64 => d.deserialize_i64(v),
            Hint::I128 => d.deserialize_i128(v),
            Hint::U8 => d.deserialize_u8(v),
            Hint::U16 => d.deserialize_u16(v),
            Hint::U32 => d.deserialize_u32(v),
            Hint::U64 => d.deserialize_u64(v),
            Hint::U128 => d.deserialize_u128(v),
            Hint::F32 => d.deserialize_f32(v),
            Hint::F64 => d.deserialize_f64(v),
            Hint::Char => d.deserialize_char(v),
            Hint::Str => d.deserialize_str(v),
            Hint::String => d.deserialize_string(v),
            Hint::Bytes => d.deserialize_bytes(v),
            Hint::ByteBuf => d.deserialize_byte_buf(v),
            Hint::Map => d.deserialize_map(v),
            Hint::Identifier => d.deserialize_identifier(v),
            Hint::Enum(name, variants) => d.deserialize_enum(name, variants, v),
        }
    }
}

/// Expands `$m!(deserialize_bool => Bool, …)`: each `Deserializer` method of a scalar with its
/// [`Hint`], for deserializers that implement those methods alike.
macro_rules! scalar_methods {
    ($m:ident) => {
        $m!(
            deserialize_bool => Bool,
            deserialize_i8 => I8,
            deserialize_i16 => I16,
            deserialize_i32 => I32,
            deserialize_i64 => I64,
            deserialize_i128 => I128,
            deserialize_u8 => U8,
            deserialize_u16 => U16,
            deserialize_u32 => U32,
            deserialize_u64 => U64,
            deserialize_u128 => U128,
            deserialize_f32 => F32,
            deserialize_f64 => F64,
            deserialize_char => Char,
            deserialize_str => Str,
            deserialize_string => String,
        );
    };
}
pub(crate) use scalar_methods;
