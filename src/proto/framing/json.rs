//! The `json` framing: JSON texts back-to-back with no delimiter, as JSON::XS writes them
//! (compact, UTF-8, non-ASCII raw).
//!
//! A packet boundary is found the way JSON::XS's incremental parser finds it: skip whitespace,
//! follow `[`/`{` nesting outside strings, cut when the depth returns to zero. The text is only
//! validated when it is read.

use std::borrow::Cow;
use std::io;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use serde_json::ser::Formatter;

use super::{Frame, Framing, FramingError};
use crate::proto::value::Value;

fn malformed(reason: impl Into<String>) -> FramingError {
    FramingError::Malformed {
        framing: Framing::Json,
        reason: reason.into(),
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Incremental boundary finder. After it returns a frame, the caller removes `buf[..end]` and the
/// scanner must be ready for the bytes that followed.
///
/// Its state survives between calls so a growing buffer is only scanned once.
#[derive(Debug, Default)]
pub(super) struct Scanner {
    /// Bytes of the buffer already looked at.
    pos: usize,
    /// Offset of the packet's opening `[`, once seen.
    start: Option<usize>,
    /// Open `[`/`{` not yet closed.
    depth: usize,
    /// Inside a string literal.
    in_str: bool,
    /// The previous byte was a backslash inside a string.
    escape: bool,
}

impl Scanner {
    pub(super) fn scan(&mut self, buf: &[u8], max: usize) -> Result<Option<Frame>, FramingError> {
        // The caller may have dropped the buffer since; start over rather than misread.
        if self.pos > buf.len() {
            *self = Scanner::default();
        }
        let mut i = self.pos;
        let start = match self.start {
            Some(start) => start,
            None => loop {
                let Some(&b) = buf.get(i) else {
                    self.pos = i;
                    return Ok(None);
                };
                // Leading whitespace counts too, so a stream of blanks cannot grow the buffer.
                if i >= max {
                    *self = Scanner::default();
                    return Err(too_large(i + 1, max));
                }
                match b {
                    b'[' => {
                        self.start = Some(i);
                        self.depth = 1;
                        i += 1;
                        break i - 1;
                    }
                    b if is_ws(b) => i += 1,
                    b']' | b'}' => {
                        *self = Scanner::default();
                        return Err(malformed("unbalanced closing bracket"));
                    }
                    _ => {
                        *self = Scanner::default();
                        return Err(FramingError::NotAnArray {
                            framing: Framing::Json,
                        });
                    }
                }
            },
        };
        // Only the first `max` bytes of the packet are looked at.
        let limit = start.saturating_add(max).min(buf.len());
        let (mut depth, mut in_str, mut escape) = (self.depth, self.in_str, self.escape);
        let bytes = buf.get(..limit).unwrap_or_default();
        while i < limit {
            if in_str {
                if escape {
                    escape = false;
                    i += 1;
                    continue;
                }
                // Only `"` and `\` matter inside a string: short ones (tags, port names) by a
                // table loop, the rest of long ones with memchr.
                let short_end = limit.min(i + 24);
                while i < short_end && bytes.get(i).is_some_and(|&b| !IN_STRING[usize::from(b)]) {
                    i += 1;
                }
                if i == short_end && i < limit {
                    let rest = bytes.get(i..).unwrap_or_default();
                    i = memchr::memchr2(b'"', b'\\', rest).map_or(limit, |off| i + off);
                }
                match bytes.get(i) {
                    Some(b'"') => in_str = false,
                    Some(_) => escape = true,
                    None => break,
                }
                i += 1;
                continue;
            }
            while bytes.get(i).is_some_and(|&b| !STRUCTURAL[usize::from(b)]) {
                i += 1;
            }
            let Some(&b) = bytes.get(i) else {
                break;
            };
            i += 1;
            match b {
                b'"' => in_str = true,
                b'[' | b'{' => depth += 1,
                _ => {
                    depth -= 1;
                    if depth == 0 {
                        *self = Scanner::default();
                        return Ok(Some(Frame { start, end: i }));
                    }
                }
            }
        }
        if buf.len() > limit {
            *self = Scanner::default();
            return Err(too_large(limit - start + 1, max));
        }
        (self.pos, self.depth, self.in_str, self.escape) = (i, depth, in_str, escape);
        Ok(None)
    }
}

/// Bytes that end a run inside a string: `"` and `\`.
const IN_STRING: [bool; 256] = byte_set(b"\"\\");
/// Bytes that matter between strings: `"`, brackets and braces.
const STRUCTURAL: [bool; 256] = byte_set(b"\"[]{}");

const fn byte_set(members: &[u8]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut i = 0;
    while i < members.len() {
        set[members[i] as usize] = true;
        i += 1;
    }
    set
}

fn too_large(size: usize, max: usize) -> FramingError {
    FramingError::TooLarge {
        framing: Framing::Json,
        size,
        max,
    }
}

/// Element 0 of the packet, borrowed unless it contains escapes; `""` for the keepalive `[]`.
pub(super) fn dest(bytes: &[u8]) -> Result<Cow<'_, str>, FramingError> {
    let skip_ws = |from: usize| {
        bytes
            .get(from..)
            .and_then(|r| r.iter().position(|&b| !is_ws(b)))
            .map(|p| from + p)
    };
    let open = skip_ws(0).ok_or_else(|| malformed("empty packet"))?;
    if bytes.get(open) != Some(&b'[') {
        return Err(FramingError::NotAnArray {
            framing: Framing::Json,
        });
    }
    let first = skip_ws(open + 1).ok_or_else(|| malformed("truncated packet"))?;
    match bytes.get(first) {
        Some(b']') => Ok(Cow::Borrowed("")),
        Some(b'"') => {
            let body = bytes.get(first + 1..).unwrap_or_default();
            let stop = body
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .ok_or_else(|| malformed("unterminated destination string"))?;
            match body.get(stop) {
                Some(b'"') => {
                    let raw = body.get(..stop).unwrap_or_default();
                    std::str::from_utf8(raw)
                        .map(Cow::Borrowed)
                        .map_err(|e| malformed(format!("destination is not UTF-8: {e}")))
                }
                Some(b'\\') => {
                    let literal = bytes.get(first..).unwrap_or_default();
                    let mut de = serde_json::Deserializer::from_slice(literal);
                    let s = <String as serde::Deserialize>::deserialize(&mut de)
                        .map_err(|e| malformed(e.to_string()))?;
                    Ok(Cow::Owned(s))
                }
                _ => Err(malformed("control character in destination string")),
            }
        }
        Some(_) => Err(FramingError::BadDestination {
            framing: Framing::Json,
        }),
        None => Err(malformed("truncated packet")),
    }
}

/// The whole packet as a loose value.
pub(super) fn to_value(bytes: &[u8]) -> Result<Value, FramingError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Array(_)) => Ok(v),
        Ok(_) => Err(FramingError::NotAnArray {
            framing: Framing::Json,
        }),
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// The whole packet straight into `T` (strict serde_json typing, no intermediate value).
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FramingError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => FramingError::Type {
            framing: Framing::Json,
            reason: e.to_string(),
        },
        Category::Io | Category::Syntax | Category::Eof => malformed(e.to_string()),
    })
}

/// Compact JSON like JSON::XS, except that byte strings are written as Perl writes a byte
/// string: each byte as the character U+0000–U+00FF.
#[derive(Clone, Copy)]
struct PerlFormatter;

impl Formatter for PerlFormatter {
    fn write_byte_array<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        value: &[u8],
    ) -> io::Result<()> {
        w.write_all(b"\"")?;
        let mut plain = 0;
        for (i, &b) in value.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..0x20 => &[b'\\', b'u', b'0', b'0', hex(b >> 4), hex(b & 0xf)],
                0x20..0x80 => continue,
                0x80.. => &[0xc0 | (b >> 6), 0x80 | (b & 0x3f)],
            };
            w.write_all(value.get(plain..i).unwrap_or_default())?;
            w.write_all(escape)?;
            plain = i + 1;
        }
        w.write_all(value.get(plain..).unwrap_or_default())?;
        w.write_all(b"\"")
    }
}

fn hex(nibble: u8) -> u8 {
    b"0123456789abcdef"
        .get(usize::from(nibble))
        .copied()
        .unwrap_or(b'0')
}

fn write_json<T: Serialize + ?Sized>(v: &T, out: &mut BytesMut) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(out.writer(), PerlFormatter);
    v.serialize(&mut ser)
}

fn encode_error(reason: impl Into<String>) -> FramingError {
    FramingError::Encode {
        framing: Framing::Json,
        reason: reason.into(),
    }
}

/// Appends `["dest",<elements of msg>]`. Non-finite floats inside `msg` become `null`
/// (serde_json's choice; JSON has no NaN).
pub(super) fn encode_packet<T: Serialize + ?Sized>(
    dest: &str,
    msg: &T,
    out: &mut BytesMut,
) -> Result<(), FramingError> {
    let mark = out.len();
    out.put_u8(b'[');
    let result = write_json(dest, out).and_then(|()| {
        let at = out.len();
        write_json(msg, out).map(|()| at)
    });
    let msg_at = match result {
        Ok(at) => at,
        Err(e) => {
            out.truncate(mark);
            return Err(encode_error(e.to_string()));
        }
    };
    // Splice: msg's own `[` becomes the separator after dest, its `]` closes the packet.
    match out.get(msg_at..) {
        Some(b"[]") => {
            out.truncate(msg_at);
            out.put_u8(b']');
            Ok(())
        }
        Some([b'[', ..]) => {
            if let Some(b) = out.get_mut(msg_at) {
                *b = b',';
            }
            Ok(())
        }
        _ => {
            out.truncate(mark);
            Err(encode_error("the message does not serialise to a sequence"))
        }
    }
}

fn first_non_finite(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) if !f.is_finite() => Some(*f),
        Value::Array(a) => a.iter().find_map(first_non_finite),
        Value::Map(m) => m.iter().find_map(|(_, v)| first_non_finite(v)),
        _ => None,
    }
}

/// Appends the compact JSON of `v`; byte strings as Latin-1 characters, as Perl sends them.
pub(super) fn encode_value(v: &Value, out: &mut BytesMut) -> Result<(), FramingError> {
    if let Some(f) = first_non_finite(v) {
        return Err(encode_error(format!(
            "JSON cannot represent the number {f}"
        )));
    }
    let mark = out.len();
    write_json(v, out).map_err(|e| {
        out.truncate(mark);
        encode_error(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::framing::{DEFAULT_MAX_PACKET, Packet, PacketDecoder};

    fn decoder() -> PacketDecoder {
        PacketDecoder::new(Framing::Json, DEFAULT_MAX_PACKET)
    }

    fn all(dec: &mut PacketDecoder, buf: &mut BytesMut) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(p) = dec.decode(buf).unwrap() {
            out.push(p);
        }
        out
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn notes_example_two_packets() {
        let wire =
            hex::decode("5b22222c226d6f6e31222c227275746823782e61222c22e298ba222c312e355d5b5d")
                .unwrap();
        assert_eq!(wire, "[\"\",\"mon1\",\"ruth#x.a\",\"☺\",1.5][]".as_bytes());
        let mut buf = BytesMut::from(&wire[..]);
        let packets = all(&mut decoder(), &mut buf);
        assert!(buf.is_empty());
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].dest().unwrap(), "");
        assert!(matches!(packets[0].dest().unwrap(), Cow::Borrowed(_)));
        assert_eq!(
            packets[0].to_value().unwrap(),
            Value::Array(vec![
                s(""),
                s("mon1"),
                s("ruth#x.a"),
                s("☺"),
                Value::Float(1.5)
            ])
        );
        assert_eq!(
            packets[0].args().unwrap(),
            vec![s("mon1"), s("ruth#x.a"), s("☺"), Value::Float(1.5)]
        );
        let typed: (String, String, String, String, f64) = packets[0].decode().unwrap();
        assert_eq!(typed.4, 1.5);
        assert_eq!(packets[1].as_bytes(), b"[]");
        assert_eq!(packets[1].dest().unwrap(), "");
        assert_eq!(packets[1].to_value().unwrap(), Value::Array(vec![]));
        // Re-encoding gives the same bytes.
        let mut out = BytesMut::new();
        encode_value(&packets[0].to_value().unwrap(), &mut out).unwrap();
        encode_value(&Value::Array(vec![]), &mut out).unwrap();
        assert_eq!(&out[..], &wire[..]);
    }

    #[test]
    fn whitespace_between_packets_is_skipped() {
        let mut buf = BytesMut::from(&b" \r\n\t[\"a\"]\n\n [ \"b\" , 1 ]\n"[..]);
        let mut dec = decoder();
        let packets = all(&mut dec, &mut buf);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].as_bytes(), b"[\"a\"]");
        assert_eq!(packets[1].as_bytes(), b"[ \"b\" , 1 ]");
        assert_eq!(packets[1].dest().unwrap(), "b");
        assert_eq!(buf.as_ref(), b"\n");
        buf.extend_from_slice(b"[]");
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().as_bytes(), b"[]");
    }

    #[test]
    fn brackets_and_escapes_inside_strings() {
        let text = br#"["a\"]b","[{","\\",{"]":["}"]},"\\\""]["x"]"#;
        let mut buf = BytesMut::from(&text[..]);
        let packets = all(&mut decoder(), &mut buf);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].dest().unwrap(), "a\"]b");
        assert!(matches!(packets[0].dest().unwrap(), Cow::Owned(_)));
        assert_eq!(
            packets[0].to_value().unwrap(),
            Value::Array(vec![
                s("a\"]b"),
                s("[{"),
                s("\\"),
                Value::Map(vec![("]".into(), Value::Array(vec![s("}")]))]),
                s("\\\""),
            ])
        );
        assert_eq!(packets[1].dest().unwrap(), "x");
    }

    #[test]
    fn byte_at_a_time_keeps_state() {
        let text = br#" ["p\"[",{"k":[1,2,{}]},"\\"]  ["q"]"#;
        let mut dec = decoder();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in text.iter() {
            buf.put_u8(b);
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                got.push(p.dest().unwrap().into_owned());
            }
        }
        assert_eq!(got, vec!["p\"[".to_string(), "q".into()]);
        assert_eq!(buf.as_ref(), b"");
    }

    #[test]
    fn non_array_rejected() {
        for text in [&b"{\"a\":1}"[..], b"\"x\"", b"1", b"null", b"  x"] {
            let mut buf = BytesMut::from(text);
            let err = decoder().decode(&mut buf).unwrap_err();
            assert_eq!(
                err,
                FramingError::NotAnArray {
                    framing: Framing::Json
                },
                "{text:?}"
            );
        }
        let mut buf = BytesMut::from(&b"]"[..]);
        assert!(matches!(
            decoder().decode(&mut buf),
            Err(FramingError::Malformed { .. })
        ));
        assert_eq!(
            to_value(b"{}"),
            Err(FramingError::NotAnArray {
                framing: Framing::Json
            })
        );
        assert_eq!(
            dest(b"{}"),
            Err(FramingError::NotAnArray {
                framing: Framing::Json
            })
        );
    }

    #[test]
    fn too_large_without_waiting_for_the_end() {
        let mut dec = PacketDecoder::new(Framing::Json, 8);
        let mut buf = BytesMut::from(&b"[\"12345\"]"[..]); // 9 bytes
        assert_eq!(
            dec.decode(&mut buf),
            Err(FramingError::TooLarge {
                framing: Framing::Json,
                size: 9,
                max: 8
            })
        );
        // Exactly the limit passes.
        let mut dec = PacketDecoder::new(Framing::Json, 8);
        let mut buf = BytesMut::from(&b"  [\"1234\"]"[..]);
        assert_eq!(
            dec.decode(&mut buf).unwrap().unwrap().as_bytes(),
            b"[\"1234\"]"
        );
        // An unterminated packet fails as soon as it passes the limit.
        let mut dec = PacketDecoder::new(Framing::Json, 8);
        let mut buf = BytesMut::from(&b"[\"1234"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"567");
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FramingError::TooLarge { size: 9, .. })
        ));
        // So does endless whitespace.
        let mut dec = PacketDecoder::new(Framing::Json, 8);
        let mut buf = BytesMut::from(&[b' '; 9][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FramingError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_json_is_an_error_at_read_time() {
        for text in [
            &b"[1,]"[..],
            b"[\"a\" \"b\"]",
            b"[\"\xff\"]",
            b"[tru]",
            b"[\"a\",{1:2}]",
            b"[\"\\ud800\"]",
            b"[\"a\nb\"]",
        ] {
            let mut buf = BytesMut::from(text);
            let p = decoder().decode(&mut buf).unwrap().unwrap();
            assert!(
                matches!(p.to_value(), Err(FramingError::Malformed { .. })),
                "{text:?}"
            );
            assert!(
                matches!(
                    p.decode::<Vec<Value>>(),
                    Err(FramingError::Malformed { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn dest_cases() {
        assert_eq!(dest(b"[]").unwrap(), "");
        assert_eq!(dest(b"[ \n]").unwrap(), "");
        assert_eq!(dest(b"[\"\"]").unwrap(), "");
        assert_eq!(dest(b"[ \"n#p\" ,1]").unwrap(), "n#p");
        assert_eq!(dest("[\"☺\"]".as_bytes()).unwrap(), "☺");
        assert_eq!(dest(br#"["a\u00e9\n"]"#).unwrap(), "aé\n");
        for bad in [&b"[1]"[..], b"[null]", b"[[\"a\"]]", b"[{}]"] {
            assert_eq!(
                dest(bad),
                Err(FramingError::BadDestination {
                    framing: Framing::Json
                })
            );
        }
        for bad in [
            &b"[\"\xff\"]"[..],
            b"[\"abc",
            b"[",
            b"",
            b"[\"a\\",
            b"[\"\x01\"]",
        ] {
            assert!(
                matches!(dest(bad), Err(FramingError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decode_type_errors() {
        let p = Packet::from_bytes(Framing::Json, bytes::Bytes::from_static(b"[\"p\",\"x\"]"));
        let (d, n): (String, String) = p.decode().unwrap();
        assert_eq!((d.as_str(), n.as_str()), ("p", "x"));
        assert!(matches!(
            p.decode::<(String, u32)>(),
            Err(FramingError::Type { .. })
        ));
    }

    #[test]
    fn encode_packet_splices_the_message() {
        let mut out = BytesMut::from(&b"prev"[..]);
        encode_packet("n#p", &("tag", 1, "☺\n"), &mut out).unwrap();
        assert_eq!(&out[..], "prev[\"n#p\",\"tag\",1,\"☺\\n\"]".as_bytes());
        out.clear();
        encode_packet("", &Value::Array(vec![Value::Null]), &mut out).unwrap();
        assert_eq!(&out[..], b"[\"\",null]");
        out.clear();
        encode_packet("q", &[[1, 2], [3, 4]], &mut out).unwrap();
        assert_eq!(&out[..], b"[\"q\",[1,2],[3,4]]");
        let mut out = BytesMut::from(&b"keep"[..]);
        for err in [
            encode_packet("p", "str", &mut out),
            encode_packet("p", &Value::Map(vec![]), &mut out),
            encode_packet("p", &Value::Bytes(vec![1]), &mut out),
            encode_packet("p", &5, &mut out),
        ] {
            assert!(matches!(err, Err(FramingError::Encode { .. })));
            assert_eq!(&out[..], b"keep");
        }
    }

    #[test]
    fn encode_value_bytes_as_latin1_and_rejects_nan() {
        let mut out = BytesMut::new();
        let v = Value::Array(vec![
            s("p"),
            Value::Bytes(vec![b'a', 0xff, b'"', 0x01, 0x80, b'\\', b'\n']),
        ]);
        encode_value(&v, &mut out).unwrap();
        assert_eq!(
            &out[..],
            "[\"p\",\"aÿ\\\"\\u0001\u{80}\\\\\\n\"]".as_bytes()
        );
        let back = to_value(&out).unwrap();
        assert_eq!(back.as_array().unwrap()[1], s("aÿ\"\u{1}\u{80}\\\n"));
        assert!(back.loose_eq(&v));

        let mut out = BytesMut::from(&b"x"[..]);
        for f in [f64::NAN, f64::INFINITY] {
            let v = Value::Array(vec![
                s("p"),
                Value::Map(vec![("k".into(), Value::Float(f))]),
            ]);
            assert!(matches!(
                encode_value(&v, &mut out),
                Err(FramingError::Encode { .. })
            ));
            assert_eq!(&out[..], b"x");
        }
    }
}
