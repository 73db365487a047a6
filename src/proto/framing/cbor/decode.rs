//! Bytes to values: a complete CBOR packet into a [`Value`], its destination alone, or a serde
//! type.

use std::borrow::Cow;

use serde::de::{DeserializeOwned, DeserializeSeed};

use super::{
    AI_INDEFINITE, BREAK, Head, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGINT, MAJOR_TAG,
    MAJOR_TEXT, MAJOR_UINT, MAX_DEPTH, definite_head, malformed, read_head, truncated,
};
use crate::proto::framing::{Framing, FramingError};
use crate::proto::value::{self, Value};

/// A cursor over one complete packet (shared with the serde deserializer in `de.rs`).
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn head(&mut self) -> Result<Head, FramingError> {
        let head = read_head(self.buf, self.pos)?.ok_or_else(truncated)?;
        self.pos += head.len;
        Ok(head)
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn at_break(&self) -> bool {
        self.buf.get(self.pos) == Some(&BREAK)
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], FramingError> {
        let len = usize::try_from(len).map_err(|_| truncated())?;
        let end = self.pos.checked_add(len).ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// The head of the next data item, tags skipped.
    fn untagged_head(&mut self) -> Result<Head, FramingError> {
        loop {
            let head = self.head()?;
            if head.major != MAJOR_TAG {
                return Ok(head);
            }
        }
    }

    /// The contents of a string whose head was just read; borrowed unless chunked.
    pub(super) fn string(&mut self, head: Head) -> Result<Cow<'a, [u8]>, FramingError> {
        if !head.indefinite() {
            return Ok(Cow::Borrowed(self.take(head.arg)?));
        }
        let mut all = Vec::new();
        loop {
            if self.at_break() {
                self.pos += 1;
                return Ok(Cow::Owned(all));
            }
            let chunk = self.head()?;
            if chunk.major != head.major || chunk.indefinite() {
                return Err(malformed("bad chunk in an indefinite-length string"));
            }
            all.extend_from_slice(self.take(chunk.arg)?);
        }
    }

    /// Decodes one item. Iterative, with the open containers on a heap stack, so deep nesting
    /// costs no call stack.
    fn value(&mut self) -> Result<Value, FramingError> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            let mut done = self.start_item(&mut stack)?;
            // Hand finished values to their containers, closing those that are complete.
            loop {
                if let Some(v) = done.take() {
                    match stack.last_mut() {
                        None => return Ok(v),
                        Some(Open::Array { items, left }) => {
                            items.push(v);
                            if let Some(n) = left {
                                *n -= 1;
                            }
                        }
                        Some(Open::Map { entries, key, left }) => match key.take() {
                            None => *key = Some(key_string(v)?),
                            Some(k) => {
                                entries.push((k, v));
                                if let Some(n) = left {
                                    *n -= 1;
                                }
                            }
                        },
                    }
                }
                let finished = match stack.last() {
                    None => false,
                    Some(Open::Array { left: Some(0), .. }) => true,
                    Some(Open::Map {
                        left: Some(0),
                        key: None,
                        ..
                    }) => true,
                    Some(Open::Array { left: None, .. } | Open::Map { left: None, .. })
                        if self.at_break() =>
                    {
                        if let Some(Open::Map { key: Some(_), .. }) = stack.last() {
                            return Err(malformed("map ends between a key and its value"));
                        }
                        self.pos += 1;
                        true
                    }
                    Some(_) => false,
                };
                if !finished {
                    break;
                }
                done = stack.pop().map(Open::close);
            }
        }
    }

    /// Reads the next item: a finished value, or `None` after opening a non-empty container.
    fn start_item(&mut self, stack: &mut Vec<Open>) -> Result<Option<Value>, FramingError> {
        let head = self.untagged_head()?;
        let left = (!head.indefinite()).then_some(head.arg);
        let open = match head.major {
            MAJOR_BYTES | MAJOR_TEXT => return Ok(Some(string_value(self.string(head)?))),
            MAJOR_ARRAY if left == Some(0) => return Ok(Some(Value::Array(Vec::new()))),
            MAJOR_MAP if left == Some(0) => return Ok(Some(Value::Map(Vec::new()))),
            MAJOR_ARRAY => Open::Array {
                items: Vec::with_capacity(self.bounded(head.arg)),
                left,
            },
            MAJOR_MAP => Open::Map {
                // Each entry takes at least two bytes.
                entries: Vec::with_capacity(self.bounded(head.arg) / 2),
                key: None,
                left,
            },
            _ => return scalar(head).map(Some),
        };
        if stack.len() >= MAX_DEPTH {
            return Err(malformed("nested too deeply"));
        }
        stack.push(open);
        Ok(None)
    }

    /// `n` capped by the bytes left (every item takes at least one).
    fn bounded(&self, n: u64) -> usize {
        usize::try_from(n).map_or(self.remaining(), |n| n.min(self.remaining()))
    }
}

/// A container being decoded; `left` counts items (map: entries) still to come, `None` if it
/// ends with a break.
enum Open {
    Array {
        items: Vec<Value>,
        left: Option<u64>,
    },
    Map {
        entries: Vec<(String, Value)>,
        key: Option<String>,
        left: Option<u64>,
    },
}

impl Open {
    fn close(self) -> Value {
        match self {
            Open::Array { items, .. } => Value::Array(items),
            Open::Map { entries, .. } => Value::Map(entries),
        }
    }
}

/// A map key, stringified as Perl would for a hash key.
pub(super) fn key_string(v: Value) -> Result<String, FramingError> {
    match v {
        Value::Str(s) => Ok(s),
        // Not UTF-8: take the bytes as Latin-1 characters, as Perl does with byte strings.
        Value::Bytes(b) => Ok(b.iter().map(|&c| char::from(c)).collect()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(value::format_perl_float(f)),
        Value::Bool(true) => Ok("1".into()),
        Value::Bool(false) | Value::Null => Ok(String::new()),
        Value::Array(_) | Value::Map(_) => Err(malformed("map key is an array or a map")),
    }
}

fn string_value(bytes: Cow<'_, [u8]>) -> Value {
    match bytes {
        Cow::Borrowed(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::Str(s.to_owned()),
            Err(_) => Value::Bytes(b.to_vec()),
        },
        Cow::Owned(b) => match String::from_utf8(b) {
            Ok(s) => Value::Str(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        },
    }
}

/// An item that is neither a string nor a container (tags already skipped): an integer, a
/// simple value or a float.
pub(super) fn scalar(head: Head) -> Result<Value, FramingError> {
    match head.major {
        MAJOR_UINT => Ok(match i64::try_from(head.arg) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(head.arg as f64),
        }),
        MAJOR_NEGINT => Ok(match i64::try_from(head.arg) {
            Ok(i) => Value::Int(-1 - i),
            Err(_) => Value::Float(-1.0 - head.arg as f64),
        }),
        _ => simple(head),
    }
}

/// Major type 7: simple values and floats.
fn simple(head: Head) -> Result<Value, FramingError> {
    match head.ai {
        20 => Ok(Value::Bool(false)),
        21 => Ok(Value::Bool(true)),
        22 | 23 => Ok(Value::Null),
        25 => Ok(Value::Float(f16_to_f64(head.arg as u16))),
        26 => Ok(Value::Float(f64::from(f32::from_bits(head.arg as u32)))),
        27 => Ok(Value::Float(f64::from_bits(head.arg))),
        AI_INDEFINITE => Err(malformed("unexpected break")),
        // Unassigned simple values: keep the number rather than failing the connection.
        _ => Ok(Value::Int(head.arg as i64)),
    }
}

/// IEEE 754 half precision to double.
fn f16_to_f64(h: u16) -> f64 {
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f64::from(h & 0x3ff);
    let magnitude = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mant + 1024.0) * 2f64.powi(exp - 25),
    };
    if h & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

pub(super) fn dest(bytes: &[u8]) -> Result<Cow<'_, str>, FramingError> {
    match flat_dest(bytes) {
        Some(d) => Ok(Cow::Borrowed(d)),
        None => dest_general(bytes),
    }
}

/// The destination of any packet shape, with the errors `dest` reports.
fn dest_general(bytes: &[u8]) -> Result<Cow<'_, str>, FramingError> {
    let mut r = Reader::new(bytes);
    let head = r.head()?;
    if head.major != MAJOR_ARRAY {
        return Err(FramingError::NotAnArray {
            framing: Framing::Cbor,
        });
    }
    if (head.indefinite() && r.at_break()) || (!head.indefinite() && head.arg == 0) {
        return Ok(Cow::Borrowed(""));
    }
    let first = r.untagged_head()?;
    if !matches!(first.major, MAJOR_BYTES | MAJOR_TEXT) {
        return Err(FramingError::BadDestination {
            framing: Framing::Cbor,
        });
    }
    match r.string(first)? {
        Cow::Borrowed(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| malformed("destination is not UTF-8")),
        Cow::Owned(b) => String::from_utf8(b)
            .map(Cow::Owned)
            .map_err(|_| malformed("destination is not UTF-8")),
    }
}

/// The destination when it is a definite UTF-8 string right after a definite array head (or the
/// array is empty), as CBOR::XS writes it; `None` sends the packet the general way.
#[inline]
fn flat_dest(bytes: &[u8]) -> Option<&str> {
    let (MAJOR_ARRAY, count, pos) = definite_head(bytes, 0)? else {
        return None;
    };
    if count == 0 {
        return Some("");
    }
    let (major, len, start) = definite_head(bytes, pos)?;
    if !matches!(major, MAJOR_BYTES | MAJOR_TEXT) {
        return None;
    }
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    std::str::from_utf8(bytes.get(start..end)?).ok()
}

pub(super) fn to_value(bytes: &[u8]) -> Result<Value, FramingError> {
    if let Some(&first) = bytes.first()
        && first >> 5 != MAJOR_ARRAY
    {
        return Err(FramingError::NotAnArray {
            framing: Framing::Cbor,
        });
    }
    let mut r = Reader::new(bytes);
    let v = r.value()?;
    if r.remaining() != 0 {
        return Err(malformed("bytes after the packet"));
    }
    Ok(v)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FramingError> {
    match super::de::from_packet(bytes) {
        Ok(t) => Ok(t),
        // The direct path does not tell a malformed packet from one of another type; the way
        // through a `Value` does, and failures are rare, so it says what went wrong.
        Err(_) => decode_via_value(bytes),
    }
}

/// A complete packet through a serde seed. A seed may act as it reads, so a failed decode is
/// not redone: a malformed packet is reported as such, any other failure with the direct
/// path's words.
pub(super) fn decode_seed<S, T>(bytes: &[u8], seed: S) -> Result<T, FramingError>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    super::de::from_packet_seed(bytes, seed).or_else(|e| {
        to_value(bytes)?;
        Err(FramingError::Type {
            framing: Framing::Cbor,
            reason: e.to_string(),
        })
    })
}

/// Typed decoding through a [`Value`]: the reference the direct path in `de.rs` must agree with.
pub(super) fn decode_via_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FramingError> {
    value::from_value(to_value(bytes)?).map_err(|e| FramingError::Type {
        framing: Framing::Cbor,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{EXAMPLE, arb_stream, hex, s};
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The destination's fast path gives what the general reader gives, on whole packets,
        /// prefixes and trailing garbage alike.
        #[test]
        fn dest_fast_path_changes_nothing(stream in arb_stream(), cut in any::<prop::sample::Index>()) {
            let cut = cut.index(stream.len() + 1);
            for b in [&stream[..], &stream[..cut]] {
                prop_assert_eq!(dest(b), dest_general(b));
            }
        }
    }

    #[test]
    fn half_floats() {
        for (h, want) in [
            ("3c00", 1.0),
            ("c400", -4.0),
            ("7bff", 65504.0),
            ("0001", 5.960464477539063e-8),
            ("0400", 6.103515625e-5),
            ("3555", 0.333251953125),
            ("7c00", f64::INFINITY),
            ("fc00", f64::NEG_INFINITY),
            ("8000", -0.0),
        ] {
            let v = to_value(&hex(&format!("82 40 f9 {h}"))).unwrap();
            let Value::Array(items) = v else { panic!() };
            let Value::Float(f) = items[1] else { panic!() };
            assert_eq!(f.to_bits(), f64::to_bits(want), "{h}");
        }
        let v = to_value(&hex("81 f9 7e00")).unwrap();
        assert!(matches!(&v, Value::Array(a) if matches!(a[0], Value::Float(f) if f.is_nan())));
    }

    #[test]
    fn integers_beyond_i64_become_floats() {
        let v = to_value(&hex("83 40 1b ffffffffffffffff 3b ffffffffffffffff")).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                s(""),
                Value::Float(18446744073709551615.0),
                Value::Float(-18446744073709551616.0)
            ])
        );
        let v = to_value(&hex("83 40 1b 7fffffffffffffff 3b 7fffffffffffffff")).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![s(""), Value::Int(i64::MAX), Value::Int(i64::MIN)])
        );
    }

    #[test]
    fn map_keys_are_stringified() {
        // {1: "a", -2: "b", h"ff": "c", true: "d"}
        let v = to_value(&hex("82 40 a4 01 41 61 21 41 62 41 ff 41 63 f5 41 64")).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                s(""),
                Value::Map(vec![
                    ("1".into(), s("a")),
                    ("-2".into(), s("b")),
                    ("\u{ff}".into(), s("c")),
                    ("1".into(), s("d")),
                ])
            ])
        );
        assert!(to_value(&hex("82 40 a1 80 01")).is_err());
    }

    #[test]
    fn non_utf8_strings_are_bytes_and_bad_destinations() {
        let bytes = hex("82 41 ff 42 c3 28");
        assert_eq!(
            to_value(&bytes).unwrap(),
            Value::Array(vec![
                Value::Bytes(vec![0xff]),
                Value::Bytes(vec![0xc3, 0x28])
            ])
        );
        assert!(matches!(dest(&bytes), Err(FramingError::Malformed { .. })));
        assert!(matches!(
            dest(&hex("82 01 02")),
            Err(FramingError::BadDestination { .. })
        ));
        assert!(matches!(
            dest(&hex("a0")),
            Err(FramingError::NotAnArray { .. })
        ));
    }

    #[test]
    fn decode_into_serde_types() {
        let bytes = hex(EXAMPLE);
        type Example = (
            String,
            String,
            String,
            u8,
            i64,
            f32,
            Option<u8>,
            String,
            BTreeMap<String, u32>,
        );
        let (d, a, b, five, m3, f, none, smile, map): Example = decode(&bytes).unwrap();
        assert_eq!((d.as_str(), a.as_str(), b.as_str()), ("", "mon1", "n#p"));
        assert_eq!((five, m3, f, none), (5, -3, 1.5, None));
        assert_eq!(smile, "☺");
        assert_eq!(map, BTreeMap::from([("a".to_string(), 1)]));
        assert!(matches!(
            decode::<(u8,)>(&bytes),
            Err(FramingError::Type { .. })
        ));
    }
}
