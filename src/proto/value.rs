//! The loosely typed value that Perl peers exchange.
//!
//! Perl scalars have no fixed type: a number may arrive as a string, a boolean as `"1"` or `""`,
//! and a string as a CBOR byte string. [`Value`] keeps what the wire said; its accessors apply
//! Perl's loose rules.

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
