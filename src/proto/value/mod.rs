//! The loosely typed value that Perl peers exchange.
//!
//! Perl scalars have no fixed type: a number may arrive as a string, a boolean as `"1"` or `""`,
//! and a string as a CBOR byte string. [`Value`] keeps what the wire said; its accessors apply
//! Perl's loose rules.
//!
//! [`from_value`] and [`to_value`] convert between a [`Value`] and serde types. The conversion
//! into serde types is loose in the same way: a field of type `u32` accepts `"42"`, a `String`
//! accepts `1.5` (as `"1.5"`), a `bool` accepts anything Perl would test for truth.
//!
//! Source layout: this file holds the type, its accessors, [`Value::loose_eq`], `Display`, the
//! `From` impls and [`ValueError`]; `de.rs` is the serde way in (`Deserialize`, [`from_value`]),
//! `ser.rs` the way out (`Serialize`, [`to_value`]).

use std::borrow::Cow;
use std::fmt;

mod de;
mod hint;
mod ser;

pub use de::from_value;
pub(crate) use hint::{Hint, scalar_methods};
pub use ser::to_value;

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

impl serde::de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Message(msg.to_string())
    }
}

impl serde::ser::Error for ValueError {
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
// Shared by the serde halves (de.rs, ser.rs)

/// Elements preallocated at most for a sequence or map whose length a format announces: the
/// announcement comes off the wire, the vectors grow as elements actually arrive.
const MAX_PREALLOC: usize = 256;

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    pub(super) fn s(x: &str) -> Value {
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

    // Fixtures shared with the tests of de.rs and ser.rs.

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub(super) struct Monitor {
        pub(super) tag: String,
        pub(super) port: String,
        pub(super) count: u32,
        pub(super) ratio: f64,
        pub(super) active: bool,
        pub(super) note: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub(super) enum Cmd {
        Ping,
        Echo(String),
        Pair(i32, i32),
        Kill { reason: String },
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

    /// Arbitrary values; `bytes` adds non-UTF-8 byte strings, NaN is never produced.
    pub(super) fn arb_value(bytes: bool) -> impl Strategy<Value = Value> {
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
