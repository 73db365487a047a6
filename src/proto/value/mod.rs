//! The loosely typed value that Perl peers exchange.
//!
//! Perl scalars have no fixed type: a number may arrive as a string, a boolean as `"1"` or `""`,
//! and a string as a CBOR byte string. [`Value`] keeps what the wire said; its accessors apply
//! Perl's loose rules.
//!
//! [`from_value`] and [`to_value`] convert between a [`Value`] and serde types. The conversion
//! into serde types is loose in the same way: a field of type `u32` accepts `"42"`, a `String`
//! accepts `1.5` (as `"1.5"`), a `bool` accepts anything Perl would test for truth.

use std::borrow::Cow;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, de::DeserializeOwned};

/// One decoded value of a packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Perl `undef` (JSON `null`, CBOR `null`/`undefined`, Storable undef).
    Null,
    /// A boolean (JSON `true`/`false`, CBOR simple values 20/21).
    Bool(bool),
    /// An integer that fits in 64 bits (larger unsigned CBOR integers become [`Value::Float`]).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string. Byte strings that are valid UTF-8 are kept here too.
    Str(String),
    /// A byte string that is not valid UTF-8.
    Bytes(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A hash, in wire order. Keys are strings (non-string keys are stringified).
    Map(Vec<(String, Value)>),
}

/// Why a [`Value`] could not be converted from or into a serde type.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ValueError {
    /// What serde (or the type being converted) reported.
    #[error("{0}")]
    Message(String),
    /// A map key that cannot be turned into a string (an array, a map or null).
    #[error("map key must be a string, number or boolean, not {0}")]
    BadKey(&'static str),
}

impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Message(msg.to_string())
    }
}

impl ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Message(msg.to_string())
    }
}

/// Formats a float the way Perl prints a number (`%.15g`): `1.5` → `"1.5"`, `3.0` → `"3"`,
/// `1e20` → `"1e+20"`, infinities as `"Inf"`/`"-Inf"`, NaN as `"NaN"`.
pub fn format_perl_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Inf".into() } else { "-Inf".into() };
    }
    // The exponent after rounding to 15 significant digits decides fixed vs scientific, as in %g.
    let sci = format!("{f:.14e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..15).contains(&exp) {
        let mantissa = strip_fraction_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        let prec = usize::try_from(14 - exp).unwrap_or(0);
        strip_fraction_zeros(&format!("{f:.prec$}")).to_owned()
    }
}

fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A number parsed from text the way Perl numifies a string (only strings that are wholly a
/// number, surrounding whitespace allowed).
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

fn parse_num(s: &str) -> Option<Num> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if t.is_empty() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Num::Int(i));
    }
    t.parse::<f64>().ok().map(Num::Float)
}

/// `f` as an `i64` when it is integral and in range.
fn float_to_i64(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; everything below it that is integral converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

/// `f` as a `u64` when it is integral and in range.
fn float_to_u64(f: f64) -> Option<u64> {
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    (f.fract() == 0.0 && (0.0..LIMIT).contains(&f)).then_some(f as u64)
}

fn latin1_to_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Whether `s` holds exactly the characters U+0000–U+00FF given by `bytes` (Perl compares a byte
/// string and a character string that way).
fn latin1_eq(bytes: &[u8], s: &str) -> bool {
    let mut chars = s.chars();
    for &b in bytes {
        if chars.next() != Some(char::from(b)) {
            return false;
        }
    }
    chars.next().is_none()
}

impl Value {
    /// A short name of the variant, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "byte string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// Whether this is `undef`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as Perl would stringify it: strings as they are, numbers Perl-style (`1.5` →
    /// `"1.5"`, `3.0` → `"3"`), booleans as `"1"` / `""`. `None` for null, byte strings that are
    /// not UTF-8, arrays and maps.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Str(s) => Some(Cow::Borrowed(s)),
            Value::Int(i) => Some(Cow::Owned(i.to_string())),
            Value::Float(f) => Some(Cow::Owned(format_perl_float(*f))),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "1" } else { "" })),
            Value::Bytes(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
            Value::Null | Value::Array(_) | Value::Map(_) => None,
        }
    }

    /// The value as an integer: integers, integral floats, booleans (1/0) and strings that are
    /// wholly an integer (or an integral float such as `"42.0"`), surrounding whitespace allowed.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) => float_to_i64(*f),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Str(s) => match parse_num(s)? {
                Num::Int(i) => Some(i),
                Num::Float(f) => float_to_i64(f),
            },
            _ => None,
        }
    }

    /// The value as an unsigned integer, like [`Value::as_i64`] but also covering integral
    /// floats up to 2^64 (how integers above `i64::MAX` arrive).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::Float(f) => float_to_u64(*f),
            Value::Bool(b) => Some(u64::from(*b)),
            Value::Str(s) => {
                let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
                t.parse::<u64>().ok().or_else(|| match parse_num(t)? {
                    Num::Int(i) => u64::try_from(i).ok(),
                    Num::Float(f) => float_to_u64(f),
                })
            }
            _ => None,
        }
    }

    /// The value as a float: numbers, booleans (1/0) and strings that are wholly a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Str(s) => match parse_num(s)? {
                Num::Int(i) => Some(i as f64),
                Num::Float(f) => Some(f),
            },
            _ => None,
        }
    }

    /// Perl truth: null, `false`, `0`, `0.0`, `""` and `"0"` are false; everything else
    /// (including `"0.0"`, empty arrays and empty maps) is true.
    pub fn is_true(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !(s.is_empty() || s == "0"),
            Value::Bytes(b) => !(b.is_empty() || b == b"0"),
            Value::Array(_) | Value::Map(_) => true,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The entries in wire order, if this is a map.
    pub fn as_map(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under `key`, if this is a map that has it. With duplicate keys the last one
    /// wins, as when Perl builds a hash.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Equality under Perl's loose typing, for values that went through a Perl peer.
    ///
    /// * Numbers compare numerically whatever their width (`Int(5)`, `Float(5.0)`), and equal a
    ///   string that is wholly that number or is their Perl stringification (`"5"`).
    /// * `true` equals `1`, `1.0` and `"1"`; `false` equals `0`, `0.0`, `""` and `"0"`.
    /// * A string equals a byte string holding its UTF-8 bytes, or holding its characters as
    ///   Latin-1 bytes (how Perl compares byte and character strings).
    /// * Arrays compare elementwise; maps by key set and loose-equal values, in any order.
    /// * Null equals only null. NaN equals nothing, as in Perl.
    pub fn loose_eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Null, _) | (_, Null) => false,
            (Array(a), Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.loose_eq(y))
            }
            (Map(a), Map(b)) => {
                // `get` makes the last of duplicate keys count, as in a Perl hash.
                a.iter().all(|(k, _)| match (self.get(k), other.get(k)) {
                    (Some(x), Some(y)) => x.loose_eq(y),
                    _ => false,
                }) && b.iter().all(|(k, _)| self.get(k).is_some())
            }
            (Array(_) | Map(_), _) | (_, Array(_) | Map(_)) => false,
            (Bool(a), Bool(b)) => a == b,
            (Bool(b), x) | (x, Bool(b)) => {
                if *b {
                    x.as_f64() == Some(1.0)
                } else {
                    !x.is_true()
                }
            }
            (Int(a), Int(b)) => a == b,
            (Int(_) | Float(_), Int(_) | Float(_)) => self.as_f64() == other.as_f64(),
            (n @ (Int(_) | Float(_)), Str(s)) | (Str(s), n @ (Int(_) | Float(_))) => {
                parse_num(s).is_some_and(|p| match (p, n) {
                    (Num::Int(i), Int(j)) => i == *j,
                    (Num::Int(i), _) => n.as_f64() == Some(i as f64),
                    (Num::Float(f), _) => n.as_f64() == Some(f),
                }) || n.as_str().is_some_and(|t| t == s.as_str())
            }
            (Int(_) | Float(_), Bytes(_)) | (Bytes(_), Int(_) | Float(_)) => false,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Str(s), Bytes(b)) | (Bytes(b), Str(s)) => s.as_bytes() == b || latin1_eq(b, s),
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Value {
        Value::Int(i64::from(i))
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Value {
        Value::Int(i64::from(i))
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Value {
        Value::Array(a)
    }
}

/// Writes `s` as a JSON string literal.
fn write_json_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// JSON-like text, for logs: byte strings print as `h'…'` (hex), non-finite floats as
/// `NaN`/`Inf`/`-Inf`, other floats always with a fraction or exponent.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) if x.is_finite() => write!(f, "{x:?}"),
            Value::Float(x) => f.write_str(&format_perl_float(*x)),
            Value::Str(s) => write_json_str(f, s),
            Value::Bytes(b) => {
                f.write_str("h'")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_json_str(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serialize / Deserialize for Value itself

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

/// Elements preallocated at most for a sequence or map whose length a format announces: the
/// announcement comes off the wire, the vectors grow as elements actually arrive.
const MAX_PREALLOC: usize = 256;

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

/// The string Perl would use as the hash key for `v`.
fn key_string(v: Value) -> Result<String, ValueError> {
    match v {
        Value::Str(s) => Ok(s),
        // Perl keys are characters: a byte key's bytes are its characters.
        Value::Bytes(b) => Ok(latin1_to_string(&b)),
        Value::Array(_) | Value::Map(_) | Value::Null => Err(ValueError::BadKey(v.type_name())),
        other => Ok(other.as_str().map(Cow::into_owned).unwrap_or_default()),
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
    use super::*;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn perl_float_formatting() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (3.0, "3"),
            (-3.0, "-3"),
            (0.0, "0"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.3"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (1e20, "1e+20"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1795667620.05692, "1795667620.05692"),
            (1e100, "1e+100"),
            (f64::INFINITY, "Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (f, want) in cases {
            assert_eq!(format_perl_float(*f), *want, "{f:e}");
        }
    }

    #[test]
    fn as_str_rules() {
        assert_eq!(s("x").as_str().as_deref(), Some("x"));
        assert_eq!(Value::Int(-42).as_str().as_deref(), Some("-42"));
        assert_eq!(Value::Float(1.5).as_str().as_deref(), Some("1.5"));
        assert_eq!(Value::Float(3.0).as_str().as_deref(), Some("3"));
        assert_eq!(Value::Bool(true).as_str().as_deref(), Some("1"));
        assert_eq!(Value::Bool(false).as_str().as_deref(), Some(""));
        assert_eq!(Value::Null.as_str(), None);
        assert_eq!(Value::Bytes(vec![0xff]).as_str(), None);
        assert_eq!(Value::Array(vec![]).as_str(), None);
        assert!(matches!(s("x").as_str(), Some(Cow::Borrowed("x"))));
    }

    #[test]
    fn numeric_accessors() {
        assert_eq!(Value::Int(7).as_i64(), Some(7));
        assert_eq!(Value::Float(7.0).as_i64(), Some(7));
        assert_eq!(Value::Float(7.5).as_i64(), None);
        assert_eq!(Value::Float(1e19).as_i64(), None);
        assert_eq!(
            Value::Float(1e19).as_u64(),
            Some(10_000_000_000_000_000_000)
        );
        assert_eq!(s("42").as_i64(), Some(42));
        assert_eq!(s(" 42\n").as_i64(), Some(42));
        assert_eq!(s("-42").as_i64(), Some(-42));
        assert_eq!(s("42.0").as_i64(), Some(42));
        assert_eq!(s("1e3").as_i64(), Some(1000));
        assert_eq!(s("42.5").as_i64(), None);
        assert_eq!(s("42abc").as_i64(), None);
        assert_eq!(s("").as_i64(), None);
        assert_eq!(s("-1").as_u64(), None);
        assert_eq!(s("18446744073709551615").as_u64(), Some(u64::MAX));
        assert_eq!(Value::Bool(true).as_i64(), Some(1));
        assert_eq!(Value::Null.as_i64(), None);
        assert_eq!(s("1.5").as_f64(), Some(1.5));
        assert_eq!(Value::Int(3).as_f64(), Some(3.0));
        assert_eq!(s("x").as_f64(), None);
        assert_eq!(Value::Array(vec![]).as_f64(), None);
    }

    #[test]
    fn perl_truth() {
        for v in [
            Value::Null,
            Value::Bool(false),
            Value::Int(0),
            Value::Float(0.0),
            Value::Float(-0.0),
            s(""),
            s("0"),
        ] {
            assert!(!v.is_true(), "{v:?}");
        }
        for v in [
            Value::Bool(true),
            Value::Int(-1),
            Value::Float(0.5),
            s("0.0"),
            s("00"),
            s(" "),
            s("a"),
            Value::Bytes(vec![0xff]),
            Value::Array(vec![]),
            Value::Map(vec![]),
        ] {
            assert!(v.is_true(), "{v:?}");
        }
    }

    #[test]
    fn containers() {
        let m = Value::Map(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Int(2)),
            ("a".into(), Value::Int(3)),
        ]);
        assert_eq!(m.get("a"), Some(&Value::Int(3)));
        assert_eq!(m.get("b"), Some(&Value::Int(2)));
        assert_eq!(m.get("c"), None);
        assert_eq!(m.as_map().map(<[_]>::len), Some(3));
        assert_eq!(m.as_array(), None);
        let a = Value::Array(vec![Value::Null]);
        assert_eq!(a.as_array(), Some(&[Value::Null][..]));
        assert_eq!(a.get("a"), None);
        assert!(Value::Null.is_null());
        assert!(!s("").is_null());
    }

    #[test]
    fn loose_equality() {
        let eq = |a: &Value, b: &Value| a.loose_eq(b) && b.loose_eq(a);
        assert!(eq(&Value::Int(5), &Value::Float(5.0)));
        assert!(eq(&Value::Int(5), &s("5")));
        assert!(eq(&Value::Float(5.0), &s("5")));
        assert!(eq(&Value::Float(1.5), &s("1.5")));
        assert!(eq(&Value::Float(0.1 + 0.2), &s("0.3")));
        assert!(eq(&Value::Float(1.5f32.into()), &Value::Float(1.5)));
        assert!(eq(&Value::Bool(true), &Value::Int(1)));
        assert!(eq(&Value::Bool(true), &s("1")));
        assert!(eq(&Value::Bool(false), &s("")));
        assert!(eq(&Value::Bool(false), &Value::Int(0)));
        assert!(eq(&Value::Bool(false), &s("0")));
        assert!(eq(&Value::Null, &Value::Null));
        assert!(eq(&s("ab"), &Value::Bytes(b"ab".to_vec())));
        assert!(eq(&s("\u{ff}"), &Value::Bytes(vec![0xff])));
        assert!(eq(
            &s("\u{263a}"),
            &Value::Bytes("\u{263a}".as_bytes().to_vec())
        ));

        assert!(!eq(&Value::Int(5), &s("5x")));
        assert!(!eq(&Value::Int(0), &s("abc")));
        assert!(!eq(&Value::Int(5), &Value::Int(6)));
        assert!(!eq(&Value::Bool(true), &s("2")));
        assert!(!eq(&Value::Bool(false), &Value::Null));
        assert!(!eq(&Value::Null, &s("")));
        assert!(!eq(&Value::Null, &Value::Int(0)));
        assert!(!eq(&s("a"), &s("b")));
        assert!(!eq(&Value::Float(f64::NAN), &Value::Float(f64::NAN)));
        assert!(!eq(&Value::Array(vec![]), &s("")));
        assert!(!eq(&Value::Bytes(vec![0xfe]), &s("\u{ff}")));

        let a = Value::Array(vec![Value::Int(1), s("x")]);
        let b = Value::Array(vec![s("1"), Value::Bytes(b"x".to_vec())]);
        assert!(eq(&a, &b));
        assert!(!eq(&a, &Value::Array(vec![Value::Int(1)])));

        let m1 = Value::Map(vec![("a".into(), Value::Int(1)), ("b".into(), s("2"))]);
        let m2 = Value::Map(vec![("b".into(), Value::Float(2.0)), ("a".into(), s("1"))]);
        let m3 = Value::Map(vec![("a".into(), Value::Int(1))]);
        let m4 = Value::Map(vec![("a".into(), Value::Int(1)), ("c".into(), s("2"))]);
        assert!(eq(&m1, &m2));
        assert!(!eq(&m1, &m3));
        assert!(!eq(&m1, &m4));
    }

    #[test]
    fn display_is_json_like() {
        let v = Value::Array(vec![
            s("a\"\n☺"),
            Value::Int(1),
            Value::Float(2.0),
            Value::Null,
            Value::Bool(true),
            Value::Bytes(vec![0xff, 0x00]),
            Value::Map(vec![("k".into(), Value::Array(vec![]))]),
        ]);
        assert_eq!(
            v.to_string(),
            "[\"a\\\"\\n☺\",1,2.0,null,true,h'ff00',{\"k\":[]}]"
        );
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Monitor {
        tag: String,
        port: String,
        count: u32,
        ratio: f64,
        active: bool,
        note: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Cmd {
        Ping,
        Echo(String),
        Pair(i32, i32),
        Kill { reason: String },
    }

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
    fn enums_both_ways() {
        let cases = [
            (Cmd::Ping, s("Ping")),
            (
                Cmd::Echo("x".into()),
                Value::Map(vec![("Echo".into(), s("x"))]),
            ),
            (
                Cmd::Pair(1, -2),
                Value::Map(vec![(
                    "Pair".into(),
                    Value::Array(vec![Value::Int(1), Value::Int(-2)]),
                )]),
            ),
            (
                Cmd::Kill { reason: "r".into() },
                Value::Map(vec![(
                    "Kill".into(),
                    Value::Map(vec![("reason".into(), s("r"))]),
                )]),
            ),
        ];
        for (cmd, v) in cases {
            assert_eq!(to_value(&cmd).unwrap(), v);
            assert_eq!(from_value::<Cmd>(v).unwrap(), cmd);
        }
        assert!(from_value::<Cmd>(s("Nope")).is_err());
        assert!(from_value::<Cmd>(Value::Map(vec![("Ping".into(), s("x"))])).is_err());
        assert!(from_value::<Cmd>(s("Echo")).is_err());
    }

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

    /// Arbitrary values; `bytes` adds non-UTF-8 byte strings, NaN is never produced.
    pub(crate) fn arb_value(bytes: bool) -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("no NaN", |f| !f.is_nan())
                .prop_map(Value::Float),
            ".*".prop_map(Value::Str),
        ];
        let leaf = if bytes {
            prop_oneof![
                4 => scalar,
                1 => proptest::collection::vec(any::<u8>(), 1..8)
                    .prop_map(|mut b| {
                        b[0] = 0xff; // never UTF-8
                        Value::Bytes(b)
                    }),
            ]
            .boxed()
        } else {
            scalar.boxed()
        };
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-z]{0,3}", inner), 0..6).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn value_round_trips_through_serde(v in arb_value(false)) {
            let back: Value = from_value(v.clone()).unwrap();
            prop_assert_eq!(&back, &v);
            let again = to_value(&back).unwrap();
            prop_assert_eq!(&again, &v);
            prop_assert!(again.loose_eq(&v));
        }

        #[test]
        fn loose_eq_is_reflexive(v in arb_value(true)) {
            prop_assert!(v.loose_eq(&v));
        }

        #[test]
        fn numbers_equal_their_perl_string(i in any::<i64>(), f in -1e300f64..1e300) {
            prop_assert!(Value::Int(i).loose_eq(&Value::Str(i.to_string())));
            prop_assert_eq!(Value::Str(i.to_string()).as_i64(), Some(i));
            let text = format_perl_float(f);
            prop_assert!(Value::Float(f).loose_eq(&Value::Str(text.clone())));
            // 15 significant digits: parsing the text back lands close to f.
            let back: f64 = text.parse().unwrap();
            prop_assert!((back - f).abs() <= f.abs() * 1e-14, "{} -> {}", f, text);
        }
    }
}
