//! The `storable` framing: a BER-compressed length (Perl `pack "w"`) followed by
//! `Storable::nfreeze(\@packet)`.
//!
//! Only the network-order subset that plain data produces is understood: scalars, arrays, hashes,
//! references and back-references. Blessed objects are decoded as their unblessed contents (the
//! class name is skipped); tied data, code, regexps and hook-serialised objects are refused.
//!
//! Source layout: this file holds the Storable opcodes, the length prefix (read and written) and
//! the scanner, and the entry points `framing` calls; `decode.rs` turns an image into a
//! [`Value`], `encode.rs` writes one.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed};

use super::{Frame, Framing, FramingError};
use crate::proto::value::Value;

mod decode;
mod encode;

/// Most bytes of a BER length accepted (a 64-bit value needs 10).
const MAX_PREFIX: usize = 10;
/// Deepest nesting (containers, references, bless wrappers) accepted.
const MAX_DEPTH: usize = 512;

/// First byte of a network-order image: Storable major 2, shifted, with the netorder bit.
const MAGIC_NETORDER: u8 = 0x05;
/// The minor version written (Storable 3.x).
const MINOR: u8 = 11;

const SX_OBJECT: u8 = 0x00;
const SX_LSCALAR: u8 = 0x01;
const SX_ARRAY: u8 = 0x02;
const SX_HASH: u8 = 0x03;
const SX_REF: u8 = 0x04;
const SX_UNDEF: u8 = 0x05;
const SX_INTEGER: u8 = 0x06;
const SX_DOUBLE: u8 = 0x07;
const SX_BYTE: u8 = 0x08;
const SX_NETINT: u8 = 0x09;
const SX_SCALAR: u8 = 0x0a;
const SX_SV_UNDEF: u8 = 0x0e;
const SX_SV_YES: u8 = 0x0f;
const SX_SV_NO: u8 = 0x10;
const SX_BLESS: u8 = 0x11;
const SX_IX_BLESS: u8 = 0x12;
const SX_OVERLOAD: u8 = 0x14;
const SX_UTF8STR: u8 = 0x17;
const SX_LUTF8STR: u8 = 0x18;
const SX_FLAG_HASH: u8 = 0x19;
const SX_WEAKREF: u8 = 0x1b;
const SX_WEAKOVERLOAD: u8 = 0x1c;
const SX_VSTRING: u8 = 0x1d;
const SX_LVSTRING: u8 = 0x1e;
const SX_SVUNDEF_ELEM: u8 = 0x1f;
const SX_BOOLEAN_TRUE: u8 = 0x22;
const SX_BOOLEAN_FALSE: u8 = 0x23;

/// Per-key flags in a flagged hash.
const SHV_K_UTF8: u8 = 0x01;
const SHV_K_WASUTF8: u8 = 0x02;
const SHV_K_ISSV: u8 = 0x08;

fn malformed(reason: impl Into<String>) -> FramingError {
    FramingError::Malformed {
        framing: Framing::Storable,
        reason: reason.into(),
    }
}

fn truncated() -> FramingError {
    malformed("truncated image")
}

fn encode_error(reason: impl Into<String>) -> FramingError {
    FramingError::Encode {
        framing: Framing::Storable,
        reason: reason.into(),
    }
}

/// Incremental packet finder. After it returns a frame, the caller removes `buf[..end]` and the
/// scanner must be ready for the bytes that followed. It returns only images that read whole
/// (the image is read and walked as [`to_value`] would, building nothing).
#[derive(Debug, Default)]
pub(super) struct Scanner {
    /// The frame announced by a length prefix already read, while its bytes arrive.
    pending: Option<Frame>,
}

impl Scanner {
    pub(super) fn scan(&mut self, buf: &[u8], max: usize) -> Result<Option<Frame>, FramingError> {
        let frame = match self.pending {
            Some(frame) => frame,
            None => match read_prefix(buf, max)? {
                Some(frame) => frame,
                None => return Ok(None),
            },
        };
        if buf.len() < frame.end {
            self.pending = Some(frame);
            return Ok(None);
        }
        self.pending = None;
        decode::check(buf.get(frame.start..frame.end).unwrap_or_default())?;
        Ok(Some(frame))
    }
}

/// Reads the BER length at the start of `buf`: the frame it announces, `None` if incomplete.
fn read_prefix(buf: &[u8], max: usize) -> Result<Option<Frame>, FramingError> {
    let mut len: u64 = 0;
    for (i, &b) in buf.iter().take(MAX_PREFIX).enumerate() {
        len = (len << 7) | u64::from(b & 0x7f);
        let more = b & 0x80 != 0;
        // Each further byte multiplies by 128: refuse as soon as the limit cannot hold.
        let least = if more { len.saturating_mul(128) } else { len };
        if least > max as u64 {
            return Err(FramingError::TooLarge {
                framing: Framing::Storable,
                size: usize::try_from(least).unwrap_or(usize::MAX),
                max,
            });
        }
        if !more {
            let start = i + 1;
            // `len <= max`, so it fits a usize.
            let end = start + len as usize;
            return Ok(Some(Frame { start, end }));
        }
    }
    if buf.len() >= MAX_PREFIX {
        return Err(malformed("length prefix longer than 10 bytes"));
    }
    Ok(None)
}

/// Appends `n` as a BER-compressed integer (Perl `pack "w"`).
fn write_ber(out: &mut BytesMut, n: u64) {
    let mut tmp = [0u8; MAX_PREFIX];
    let mut i = MAX_PREFIX;
    let mut n = n;
    let mut last = true;
    loop {
        i -= 1;
        tmp[i] = (n & 0x7f) as u8 | if last { 0 } else { 0x80 };
        last = false;
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&tmp[i..]);
}

// ---------------------------------------------------------------------------------------------
// Entry points for framing/mod.rs

/// The destination (first element) of a complete image, without decoding the rest.
pub(super) fn dest(bytes: &[u8]) -> Result<Cow<'_, str>, FramingError> {
    decode::dest(bytes)
}

/// A complete image as a [`Value`].
pub(super) fn to_value(bytes: &[u8]) -> Result<Value, FramingError> {
    decode::to_value(bytes)
}

/// Element 1 of a complete image, as [`to_value`] would give it, without building the others.
pub(super) fn first_arg(bytes: &[u8]) -> Result<Option<Value>, FramingError> {
    decode::first_arg(bytes)
}

/// A complete image as a serde type, with Perl's loose typing.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FramingError> {
    decode::decode(bytes)
}

/// A complete image through a serde seed, with Perl's loose typing.
pub(super) fn decode_seed<S, T>(bytes: &[u8], seed: S) -> Result<T, FramingError>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    decode::decode_seed(bytes, seed)
}

/// Appends the packet `[dest, msg...]` with its length prefix; `msg` must serialise to a
/// sequence.
pub(super) fn encode_packet<T: Serialize + ?Sized>(
    dest: &str,
    msg: &T,
    out: &mut BytesMut,
) -> Result<(), FramingError> {
    encode::encode_packet(dest, msg, out)
}

/// Appends the array `v` as a prefixed image; on error `out` is left as it was.
pub(super) fn encode_value(v: &Value, out: &mut BytesMut) -> Result<(), FramingError> {
    encode::encode_value(v, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shared with the tests of decode.rs and encode.rs.

    pub(super) const MAX: usize = 1 << 20;

    pub(super) fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    pub(super) fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    /// AEMP-NOTES §1.11: `["","kil","p","die","oops"]` with its length prefix.
    pub(super) const EXAMPLE: &str =
        "1c 05 0b 02 00000005 0a00 0a036b696c 0a0170 0a03646965 0a046f6f7073";

    pub(super) fn example_value() -> Value {
        Value::Array(vec![s(""), s("kil"), s("p"), s("die"), s("oops")])
    }

    #[test]
    fn notes_example_encodes_exactly_and_decodes_back() {
        let mut out = BytesMut::new();
        encode_value(&example_value(), &mut out).unwrap();
        assert_eq!(out.as_ref(), hex(EXAMPLE));
        let mut out2 = BytesMut::new();
        encode_packet("", &("kil", "p", "die", "oops"), &mut out2).unwrap();
        assert_eq!(out2, out);

        let bytes = hex(EXAMPLE);
        let frame = Scanner::default().scan(&bytes, MAX).unwrap().unwrap();
        assert_eq!(frame, Frame { start: 1, end: 29 });
        let image = &bytes[frame.start..frame.end];
        assert_eq!(to_value(image).unwrap(), example_value());
        assert!(matches!(dest(image).unwrap(), Cow::Borrowed("")));
    }

    #[test]
    fn ber_prefix() {
        for (n, want) in [
            (0u64, "00"),
            (127, "7f"),
            (128, "8100"),
            (300, "822c"),
            (16384, "818000"),
            (u64::MAX, "81ffffffffffffffff7f"),
        ] {
            let mut out = BytesMut::new();
            write_ber(&mut out, n);
            assert_eq!(out.as_ref(), hex(want), "{n}");
            if n <= MAX as u64 {
                let frame = read_prefix(&out, MAX).unwrap().unwrap();
                assert_eq!(frame.start, out.len());
                assert_eq!((frame.end - frame.start) as u64, n);
            } else {
                assert!(matches!(
                    read_prefix(&out, MAX),
                    Err(FramingError::TooLarge { .. })
                ));
            }
        }
        // Incomplete prefix: wait. Over-long prefix: malformed.
        assert_eq!(read_prefix(&hex("81"), MAX).unwrap(), None);
        assert_eq!(read_prefix(&[0x80; 9], MAX).unwrap(), None);
        assert!(matches!(
            read_prefix(&[0x80; 10], MAX),
            Err(FramingError::Malformed { .. })
        ));
        // A length over the limit is refused before its bytes arrive.
        assert!(matches!(
            Scanner::default().scan(&hex("8100"), 127),
            Err(FramingError::TooLarge {
                size: 128,
                max: 127,
                ..
            })
        ));
        assert!(matches!(
            Scanner::default().scan(&hex("ff"), 1000),
            Err(FramingError::TooLarge { .. })
        ));
    }

    #[test]
    fn scanner_waits_for_the_whole_image() {
        let mut bytes = hex(EXAMPLE);
        bytes.extend(hex("07 05 0b 02 00000000"));
        let mut scanner = Scanner::default();
        for n in 0..29 {
            assert_eq!(scanner.scan(&bytes[..n], MAX).unwrap(), None, "at {n}");
        }
        let frame = scanner.scan(&bytes, MAX).unwrap().unwrap();
        assert_eq!(frame.end, 29);
        let rest = &bytes[29..];
        let frame = scanner.scan(rest, MAX).unwrap().unwrap();
        assert_eq!(frame, Frame { start: 1, end: 8 });
        assert_eq!(dest(&rest[1..]).unwrap(), "");
        assert_eq!(to_value(&rest[1..]).unwrap(), Value::Array(vec![]));
    }

    #[test]
    fn nested_round_trip() {
        let v = Value::Array(vec![
            s("port"),
            Value::Array(vec![Value::Int(1), Value::Array(vec![])]),
            Value::Map(vec![
                ("a".into(), Value::Map(vec![("b".into(), Value::Null)])),
                ("n".into(), Value::Array(vec![s("x")])),
            ]),
            Value::Map(vec![
                ("ключ".into(), Value::Int(7)),
                ("k".into(), Value::Int(8)),
            ]),
        ]);
        let mut out = BytesMut::new();
        encode_value(&v, &mut out).unwrap();
        let frame = Scanner::default().scan(&out, MAX).unwrap().unwrap();
        assert_eq!(frame.end, out.len());
        let image = &out[frame.start..];
        assert_eq!(to_value(image).unwrap(), v);
        // The nested array is a reference to an array; the UTF-8 keyed hash is a flagged hash.
        assert_eq!(&image[13..21], hex("04 02 00000002 08 81"));
        assert!(image.windows(2).any(|w| w == [SX_REF, SX_FLAG_HASH]));
    }
}
