//! The `cbor` framing (P2): `CBOR::XS::encode_cbor(\@packet)` items back-to-back.
//!
//! Hand-written because the framing needs things a general CBOR crate does not give: an incremental
//! boundary scan that never allocates, reading the destination without decoding the rest, and
//! Perl's habit of sending strings as byte strings (major type 2).
//!
//! Source layout: this file holds the item header every part reads and the entry points
//! `framing` calls; `scan.rs` finds where a packet ends, `decode.rs` turns a complete packet into
//! a [`Value`], `de.rs` into a serde type (directly, with the same loose typing), `encode.rs`
//! writes serde data or a [`Value`] as a packet.

use std::borrow::Cow;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed};

use super::{Framing, FramingError};
use crate::proto::value::Value;

mod de;
mod decode;
mod encode;
mod scan;

pub(super) use scan::Scanner;

/// Deepest nesting of arrays, maps and indefinite strings accepted (keeps recursion bounded).
const MAX_DEPTH: usize = 512;

const MAJOR_UINT: u8 = 0;
const MAJOR_NEGINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_SIMPLE: u8 = 7;
/// Additional information announcing an indefinite length (or, in major type 7, a break).
const AI_INDEFINITE: u8 = 31;
const BREAK: u8 = 0xff;

fn malformed(reason: impl Into<String>) -> FramingError {
    FramingError::Malformed {
        framing: Framing::Cbor,
        reason: reason.into(),
    }
}

fn too_large(size: u64, max: usize) -> FramingError {
    FramingError::TooLarge {
        framing: Framing::Cbor,
        size: usize::try_from(size).unwrap_or(usize::MAX),
        max,
    }
}

fn truncated() -> FramingError {
    malformed("truncated item")
}

/// An item header: major type, additional information and its argument (value, length, count,
/// tag number or float bits; 0 for indefinite lengths), and the header's size in bytes.
#[derive(Debug, Clone, Copy)]
struct Head {
    major: u8,
    ai: u8,
    arg: u64,
    len: usize,
}

impl Head {
    fn indefinite(&self) -> bool {
        self.ai == AI_INDEFINITE
    }
}

/// Reads the header at `buf[pos..]`: `Ok(None)` if it is not complete yet.
fn read_head(buf: &[u8], pos: usize) -> Result<Option<Head>, FramingError> {
    let Some(&first) = buf.get(pos) else {
        return Ok(None);
    };
    let major = first >> 5;
    let ai = first & 0x1f;
    let extra = match ai {
        0..=23 => {
            return Ok(Some(Head {
                major,
                ai,
                arg: u64::from(ai),
                len: 1,
            }));
        }
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        AI_INDEFINITE => {
            if matches!(major, MAJOR_UINT | MAJOR_NEGINT | MAJOR_TAG) {
                return Err(malformed(format!(
                    "indefinite length in major type {major}"
                )));
            }
            return Ok(Some(Head {
                major,
                ai,
                arg: 0,
                len: 1,
            }));
        }
        _ => return Err(malformed(format!("reserved additional information {ai}"))),
    };
    let Some(bytes) = buf.get(pos + 1..pos + 1 + extra) else {
        return Ok(None);
    };
    let arg = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Ok(Some(Head {
        major,
        ai,
        arg,
        len: 1 + extra,
    }))
}

/// The head at `buf[pos]` if it is complete and has a definite argument (additional information
/// 0 to 27): major type, argument, and the position after the head.
#[inline(always)]
fn definite_head(buf: &[u8], pos: usize) -> Option<(u8, u64, usize)> {
    let (&b, rest) = buf.get(pos..)?.split_first()?;
    let (arg, len) = match b & 0x1f {
        ai @ 0..=23 => (u64::from(ai), 1),
        24 => (u64::from(*rest.first()?), 2),
        25 => (u64::from(u16::from_be_bytes(*rest.first_chunk()?)), 3),
        26 => (u64::from(u32::from_be_bytes(*rest.first_chunk()?)), 5),
        27 => (u64::from_be_bytes(*rest.first_chunk()?), 9),
        _ => return None,
    };
    Some((b >> 5, arg, pos + len))
}

// ---------------------------------------------------------------------------------------------
// Entry points for framing/mod.rs

/// The destination (first element) of a complete packet, without decoding the rest.
pub(super) fn dest(bytes: &[u8]) -> Result<Cow<'_, str>, FramingError> {
    decode::dest(bytes)
}

/// A complete packet as a [`Value`].
pub(super) fn to_value(bytes: &[u8]) -> Result<Value, FramingError> {
    decode::to_value(bytes)
}

/// A complete packet as a serde type, with Perl's loose typing.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FramingError> {
    decode::decode(bytes)
}

/// A complete packet through a serde seed, with Perl's loose typing.
pub(super) fn decode_seed<S, T>(bytes: &[u8], seed: S) -> Result<T, FramingError>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    decode::decode_seed(bytes, seed)
}

/// Appends `v` as one CBOR item.
pub(super) fn encode_value(v: &Value, out: &mut BytesMut) -> Result<(), FramingError> {
    encode::encode_value(v, out)
}

/// Appends the packet `[dest, msg...]`; `msg` must serialise to a sequence. On error `out` is
/// left as it was.
pub(super) fn encode_packet<T: Serialize + ?Sized>(
    dest: &str,
    msg: &T,
    out: &mut BytesMut,
) -> Result<(), FramingError> {
    encode::encode_packet(dest, msg, out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;
    use crate::proto::framing::Frame;

    // Shared with the tests of scan.rs, decode.rs and encode.rs.

    pub(super) const MAX: usize = 1 << 20;

    pub(super) fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    pub(super) fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    /// The AEMP-NOTES §1.11 example, as CBOR::XS writes it (byte strings for Perl strings).
    pub(super) const EXAMPLE: &str =
        "89 40 44 6d6f6e31 43 6e2370 05 22 fa3fc00000 f6 63 e298ba a1 41 61 01";

    pub(super) fn example_value() -> Value {
        Value::Array(vec![
            s(""),
            s("mon1"),
            s("n#p"),
            Value::Int(5),
            Value::Int(-3),
            Value::Float(1.5),
            Value::Null,
            s("☺"),
            Value::Map(vec![("a".into(), Value::Int(1))]),
        ])
    }

    pub(super) fn scan_all(bytes: &[u8]) -> Result<Option<Frame>, FramingError> {
        Scanner::default().scan(bytes, MAX)
    }

    /// A head for `n` of major type `major`, minimal (`width` 0) or with a wider argument
    /// (1, 2, 4 or 8 bytes) where `n` fits.
    pub(super) fn head(major: u8, n: u64, width: u8) -> Vec<u8> {
        let m = major << 5;
        match width {
            1 if n <= 0xff => vec![m | 24, n as u8],
            2 if n <= 0xffff => [&[m | 25][..], &(n as u16).to_be_bytes()].concat(),
            3 if n <= 0xffff_ffff => [&[m | 26][..], &(n as u32).to_be_bytes()].concat(),
            4 => [&[m | 27][..], &n.to_be_bytes()].concat(),
            _ if n < 24 => vec![m | n as u8],
            _ if n <= 0xff => vec![m | 24, n as u8],
            _ if n <= 0xffff => [&[m | 25][..], &(n as u16).to_be_bytes()].concat(),
            _ if n <= 0xffff_ffff => [&[m | 26][..], &(n as u32).to_be_bytes()].concat(),
            _ => [&[m | 27][..], &n.to_be_bytes()].concat(),
        }
    }

    /// Items of the flat shape CBOR::XS writes: integers, simple values, floats, definite strings.
    pub(super) fn arb_flat_item() -> impl Strategy<Value = Vec<u8>> {
        let width = 0u8..5;
        prop_oneof![
            (0u64..40, width.clone()).prop_map(|(n, w)| head(MAJOR_UINT, n, w)),
            (any::<u64>(), width.clone()).prop_map(|(n, w)| head(MAJOR_NEGINT, n, w)),
            select(vec![
                "f4",
                "f5",
                "f6",
                "f7",
                "e0",
                "f8 20",
                "f9 3c00",
                "fa 3fc00000",
                "fb 41dac1edae21b1eb"
            ])
            .prop_map(hex),
            (
                select(vec![MAJOR_BYTES, MAJOR_TEXT]),
                proptest::collection::vec(any::<u8>(), 0..30),
                width,
            )
                .prop_map(|(major, b, w)| [head(major, b.len() as u64, w), b].concat()),
        ]
    }

    /// Any item, valid or not: the flat ones, and indefinite lengths, tags, nesting, maps,
    /// breaks, reserved heads and stray bytes.
    fn arb_item() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            6 => arb_flat_item(),
            1 => select(vec!["ff", "fc", "1c", "3f", "df", "5f 41 61 ff", "5f 61 61 ff", "7f ff"])
                .prop_map(hex),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ];
        leaf.prop_recursive(3, 30, 5, |inner| {
            prop_oneof![
                (
                    proptest::collection::vec(inner.clone(), 0..5),
                    any::<bool>(),
                    0u8..5
                )
                    .prop_map(|(items, indefinite, w)| if indefinite {
                        [vec![0x9f], items.concat(), vec![BREAK]].concat()
                    } else {
                        [head(MAJOR_ARRAY, items.len() as u64, w), items.concat()].concat()
                    }),
                (
                    proptest::collection::vec(inner.clone(), 0..5),
                    any::<bool>()
                )
                    .prop_map(|(items, indefinite)| if indefinite {
                        [vec![0xbf], items.concat(), vec![BREAK]].concat()
                    } else {
                        [head(MAJOR_MAP, items.len() as u64 / 2, 0), items.concat()].concat()
                    }),
                (0u64..300, inner.clone()).prop_map(|(t, i)| [head(MAJOR_TAG, t, 0), i].concat()),
                (
                    proptest::collection::vec(arb_flat_item(), 0..4),
                    any::<bool>()
                )
                    .prop_map(|(chunks, text)| {
                        let major = if text { MAJOR_TEXT } else { MAJOR_BYTES };
                        [
                            vec![(major << 5) | AI_INDEFINITE],
                            chunks.concat(),
                            vec![BREAK],
                        ]
                        .concat()
                    }),
            ]
        })
    }

    /// A packet: mostly flat (as CBOR::XS writes it), sometimes with an announced count that
    /// does not match, sometimes any item at all.
    fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => (proptest::collection::vec(arb_flat_item(), 0..6), 0u8..5)
                .prop_map(|(items, w)| [head(MAJOR_ARRAY, items.len() as u64, w), items.concat()].concat()),
            1 => (0u64..8, proptest::collection::vec(arb_flat_item(), 0..6))
                .prop_map(|(n, items)| [head(MAJOR_ARRAY, n, 0), items.concat()].concat()),
            2 => (proptest::collection::vec(arb_item(), 0..5), any::<bool>()).prop_map(
                |(items, indefinite)| if indefinite {
                    [vec![0x9f], items.concat(), vec![BREAK]].concat()
                } else {
                    [head(MAJOR_ARRAY, items.len() as u64, 0), items.concat()].concat()
                }
            ),
            1 => arb_item(),
        ]
    }

    /// A few packets back to back.
    pub(super) fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(arb_packet(), 1..5).prop_map(|p| p.concat())
    }

    #[test]
    fn notes_example_decodes() {
        let bytes = hex(EXAMPLE);
        assert_eq!(
            scan_all(&bytes).unwrap(),
            Some(Frame {
                start: 0,
                end: bytes.len()
            })
        );
        assert_eq!(dest(&bytes).unwrap(), "");
        assert!(matches!(dest(&bytes).unwrap(), Cow::Borrowed(_)));
        assert_eq!(to_value(&bytes).unwrap(), example_value());
    }

    #[test]
    fn indefinite_lengths() {
        // ["", {"k": "ab" (chunked byte string)}, [1, 2]] with indefinite containers.
        let bytes = hex("9f 40 bf 61 6b 5f 41 61 41 62 ff ff 9f 01 02 ff ff");
        assert_eq!(scan_all(&bytes).unwrap().unwrap().end, bytes.len());
        assert_eq!(
            to_value(&bytes).unwrap(),
            Value::Array(vec![
                s(""),
                Value::Map(vec![("k".into(), s("ab"))]),
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
            ])
        );
        // A chunked destination is returned owned.
        let bytes = hex("9f 7f 61 61 61 62 ff 01 ff");
        assert_eq!(scan_all(&bytes).unwrap().unwrap().end, bytes.len());
        assert!(matches!(dest(&bytes).unwrap(), Cow::Owned(d) if d == "ab"));
        // Empty packets, definite and indefinite, are keepalives with destination "".
        assert_eq!(dest(&hex("80")).unwrap(), "");
        assert_eq!(dest(&hex("9f ff")).unwrap(), "");
        assert_eq!(scan_all(&hex("9f ff")).unwrap().unwrap().end, 2);
    }

    #[test]
    fn bad_chunks_and_breaks_are_malformed() {
        for bad in [
            "9f 5f 61 61 ff ff", // text chunk in a byte string
            "9f 5f 5f ff ff ff", // nested indefinite chunk
            "82 40 ff",          // break in a definite array
            "9f c1 ff",          // break right after a tag
            "82 40 1c",          // reserved additional information
            "82 40 3f",          // indefinite negative integer
        ] {
            assert!(
                matches!(scan_all(&hex(bad)), Err(FramingError::Malformed { .. })),
                "{bad}"
            );
            assert!(to_value(&hex(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_are_skipped() {
        // [tag 26 ["Class", "x"], tag 1 5]: Perl objects decode as their contents.
        let bytes = hex("83 40 d8 1a 82 45 436c617373 41 78 c1 05");
        assert_eq!(scan_all(&bytes).unwrap().unwrap().end, bytes.len());
        assert_eq!(
            to_value(&bytes).unwrap(),
            Value::Array(vec![
                s(""),
                Value::Array(vec![s("Class"), s("x")]),
                Value::Int(5)
            ])
        );
    }

    #[test]
    fn truncated_input_waits_and_never_panics() {
        let bytes = hex(EXAMPLE);
        for n in 0..bytes.len() {
            assert_eq!(scan_all(&bytes[..n]).unwrap(), None, "prefix {n}");
            assert!(to_value(&bytes[..n]).is_err(), "prefix {n}");
            if n > 0 {
                // The destination itself is complete after two bytes.
                assert_eq!(dest(&bytes[..n]).is_ok(), n >= 2, "prefix {n}");
            }
        }
        assert!(to_value(&[bytes.as_slice(), &[0]].concat()).is_err());
    }

    #[test]
    fn not_an_array() {
        for bad in ["a0", "01", "41 61", "c1 80", "f6"] {
            assert!(
                matches!(scan_all(&hex(bad)), Err(FramingError::NotAnArray { .. })),
                "{bad}"
            );
            assert!(
                matches!(to_value(&hex(bad)), Err(FramingError::NotAnArray { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = vec![0x81; MAX_DEPTH + 10];
        assert!(matches!(
            scan_all(&deep),
            Err(FramingError::Malformed { .. })
        ));
        let mut ok = vec![0x81; MAX_DEPTH - 1];
        ok.push(0x80);
        assert_eq!(scan_all(&ok).unwrap().unwrap().end, ok.len());
        assert!(to_value(&ok).is_ok());
        let mut too_deep = vec![0x81; MAX_DEPTH + 1];
        too_deep.push(0x80);
        assert!(to_value(&too_deep).is_err());
    }
}
