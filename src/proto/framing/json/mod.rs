//! The `json` framing: JSON texts back-to-back with no delimiter, as JSON::XS writes them
//! (compact, UTF-8, non-ASCII raw).
//!
//! A packet is checked whole before it is handed out, as JSON::XS decodes it whole: one pass
//! ([`check_prefix`]) reads a packet that is complete in the buffer and finds its end. For one
//! that is not, the boundary is found the way JSON::XS's incremental parser finds it (skip
//! whitespace, follow `[`/`{` nesting outside strings, cut when the depth returns to zero) as
//! bytes come, and the packet is checked ([`check`]) once complete.
//!
//! Typed decoding applies Perl's loose scalar typing, as the other framings do (`loose`).

mod loose;

use std::borrow::Cow;
use std::io;
use std::marker::PhantomData;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde_json::error::Category;
use serde_json::ser::Formatter;

use super::{Frame, Framing, FramingError};
use crate::proto::value::Value;
use loose::Loose;

fn malformed(reason: impl Into<String>) -> FramingError {
    FramingError::Malformed {
        framing: Framing::Json,
        reason: reason.into(),
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Incremental packet finder. After it returns a frame, the caller removes `buf[..end]` and the
/// scanner must be ready for the bytes that followed. It returns only well-formed packets (see
/// [`check`]).
///
/// Its state survives between calls so a growing buffer is only scanned once (and checked once
/// more when the packet is complete).
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
    /// The packet at `start` was not complete when first checked: its end is being looked for
    /// by following brackets, and it is checked once found.
    walking: bool,
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
        if !self.walking {
            // Most packets are whole in the buffer when first looked at: one pass checks them
            // and finds their end.
            match check_prefix(buf.get(start..limit).unwrap_or_default()) {
                Ok(len) => {
                    *self = Scanner::default();
                    return Ok(Some(Frame {
                        start,
                        end: start + len,
                    }));
                }
                // Malformed, but refused only once its end is found (below), as it would be
                // if it had come in pieces: the verdict must not depend on how reads cut the
                // stream. A packet whose brackets never close ends at `max` instead.
                Err(Stop::Bad(_)) => self.walking = true,
                Err(Stop::More) if buf.len() > limit => {
                    *self = Scanner::default();
                    return Err(too_large(limit - start + 1, max));
                }
                // Follow the brackets as bytes come, so that a packet fed in pieces is not
                // checked over and over; check it once it is complete.
                Err(Stop::More) => self.walking = true,
            }
        }
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
                        check(buf.get(start..i).unwrap_or_default())?;
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

/// Checks a whole packet the way [`to_value`] reads it, building nothing: it fails exactly when
/// `to_value` fails with [`FramingError::Malformed`]. That is, serde_json's rules: JSON syntax,
/// strings without raw control characters, valid UTF-8 and escapes (UTF-16 surrogates paired),
/// numbers that fit an `f64`, and no more than [`MAX_NESTING`] open arrays and objects.
///
/// A hand-written pass rather than serde_json itself, which costs several times more: strings
/// are skipped in runs, numbers by their digits; the rare numbers that could be out of range are
/// handed to serde_json.
pub(super) fn check(bytes: &[u8]) -> Result<(), FramingError> {
    match (Checker {
        bytes,
        pos: 0,
        whole: true,
    })
    .value()
    {
        Ok(_) => Ok(()),
        Err(Stop::Bad(bad)) => Err(bad.error()),
        Err(Stop::More) => Err(Bad::Truncated.error()),
    }
}

/// Checks the packet at the start of `bytes`, which may hold only part of it: its length if it is
/// complete (and well-formed, as [`check`] says), [`Stop::More`] if it may yet be, once more
/// bytes come.
fn check_prefix(bytes: &[u8]) -> Result<usize, Stop> {
    Checker {
        bytes,
        pos: 0,
        whole: false,
    }
    .value()
}

/// The deepest nesting of arrays and objects serde_json reads (its recursion limit, 128, is
/// reached on opening the 128th).
const MAX_NESTING: u32 = 127;

/// Why a check stopped (a byte, so that results pass in registers).
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The bytes end before the packet does (only when checking a prefix).
    More,
    /// The packet is malformed.
    Bad(Bad),
}

/// What is wrong with a packet.
#[derive(Debug, Clone, Copy)]
enum Bad {
    TrailingBytes,
    ControlCharacter,
    NoColon,
    NoComma,
    NoValue,
    Escape,
    Literal,
    Number,
    LeadingZero,
    LoneLeadingSurrogate,
    LoneTrailingSurrogate,
    TooDeep,
    OutOfRange,
    KeyNotString,
    NotUtf8,
    Truncated,
}

impl Bad {
    fn error(self) -> FramingError {
        malformed(match self {
            Bad::TrailingBytes => "bytes after the packet",
            Bad::ControlCharacter => "control character in a string",
            Bad::NoColon => "expected a colon after an object key",
            Bad::NoComma => "expected a comma or the end of a container",
            Bad::NoValue => "expected a value",
            Bad::Escape => "invalid escape",
            Bad::Literal => "invalid literal",
            Bad::Number => "invalid number",
            Bad::LeadingZero => "invalid number: leading zero",
            Bad::LoneLeadingSurrogate => "lone leading surrogate in an escape",
            Bad::LoneTrailingSurrogate => "lone trailing surrogate in an escape",
            Bad::TooDeep => "nested too deeply",
            Bad::OutOfRange => "number out of range",
            Bad::KeyNotString => "object key is not a string",
            Bad::NotUtf8 => "string is not UTF-8",
            Bad::Truncated => "truncated packet",
        })
    }
}

/// Bytes in a string that end a run of plain ASCII: `"`, `\`, control characters and every byte
/// of a multi-byte character.
const STRING_STOP: [bool; 256] = {
    let mut set = [false; 256];
    let mut b = 0;
    while b < 256 {
        set[b] = b < 0x20 || b >= 0x80 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    set
};

struct Checker<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// `bytes` is the whole packet (else more may follow).
    whole: bool,
}

impl Checker<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Out of bytes: the packet is truncated, or more is to come.
    fn end(&self) -> Stop {
        if self.whole {
            Stop::Bad(Bad::Truncated)
        } else {
            Stop::More
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// Skips whitespace and takes the next byte.
    fn next_token(&mut self) -> Result<u8, Stop> {
        self.skip_ws();
        let b = self.peek().ok_or_else(|| self.end())?;
        self.pos += 1;
        Ok(b)
    }

    /// One JSON value (with whitespace around it); where it ends. Checking a whole packet, only
    /// whitespace may follow; checking a prefix, the value's end is the packet's end.
    fn value(mut self) -> Result<usize, Stop> {
        // Open containers as a bit stack (1: object), innermost in bit 0; at most 127 deep.
        let mut objects: u128 = 0;
        let mut depth: u32 = 0;
        'value: loop {
            // A value is due.
            match self.next_token()? {
                open @ (b'[' | b'{') => {
                    if depth == MAX_NESTING {
                        return Err(Stop::Bad(Bad::TooDeep));
                    }
                    depth += 1;
                    objects = (objects << 1) | u128::from(open == b'{');
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') if open == b'[' => self.pos += 1,
                        Some(b'}') if open == b'{' => self.pos += 1,
                        _ if open == b'{' => {
                            self.key()?;
                            continue 'value;
                        }
                        _ => continue 'value,
                    }
                    depth -= 1;
                    objects >>= 1;
                }
                b'"' => self.string()?,
                b't' => self.literal(b"rue")?,
                b'f' => self.literal(b"alse")?,
                b'n' => self.literal(b"ull")?,
                b'-' => self.number(self.pos - 1)?,
                b'0'..=b'9' => {
                    self.pos -= 1;
                    self.number(self.pos)?;
                }
                _ => return Err(Stop::Bad(Bad::NoValue)),
            }
            // A value is complete: close what it completes, until a comma asks for another.
            loop {
                if depth == 0 {
                    if !self.whole {
                        return Ok(self.pos);
                    }
                    self.skip_ws();
                    return match self.peek() {
                        None => Ok(self.pos),
                        Some(_) => Err(Stop::Bad(Bad::TrailingBytes)),
                    };
                }
                let in_object = objects & 1 == 1;
                match self.next_token()? {
                    b',' => {
                        if in_object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    b']' if !in_object => {}
                    b'}' if in_object => {}
                    _ => return Err(Stop::Bad(Bad::NoComma)),
                }
                depth -= 1;
                objects >>= 1;
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<(), Stop> {
        if self.next_token()? != b'"' {
            return Err(Stop::Bad(Bad::KeyNotString));
        }
        self.string()?;
        if self.next_token()? != b':' {
            return Err(Stop::Bad(Bad::NoColon));
        }
        Ok(())
    }

    fn literal(&mut self, rest: &[u8]) -> Result<(), Stop> {
        let have = self.bytes.get(self.pos..).unwrap_or_default();
        if have.starts_with(rest) {
            self.pos += rest.len();
            return Ok(());
        }
        if have.len() < rest.len() && rest.starts_with(have) {
            return Err(self.end());
        }
        Err(Stop::Bad(Bad::Literal))
    }

    /// The rest of a string whose opening quote was taken.
    fn string(&mut self) -> Result<(), Stop> {
        loop {
            let rest = self.bytes.get(self.pos..).unwrap_or_default();
            // Short runs of plain ASCII (tags, port names) byte by byte; the rest of long ones,
            // and text beyond ASCII, in bulk.
            let short = rest.get(..32).unwrap_or(rest);
            let mut run = 0;
            for &b in short {
                if STRING_STOP[usize::from(b)] {
                    break;
                }
                run += 1;
            }
            self.pos += run;
            if run == short.len() {
                if run == rest.len() {
                    return Err(self.end());
                }
                self.text_run()?;
            }
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape()?;
                }
                Some(b) if b >= 0x80 => self.text_run()?,
                _ => return Err(Stop::Bad(Bad::ControlCharacter)),
            }
        }
    }

    /// String text up to the next `"` or `\`: UTF-8 without control characters. Multi-byte
    /// characters contain no ASCII byte, so the run is checked on its own.
    #[inline(never)]
    fn text_run(&mut self) -> Result<(), Stop> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let run = memchr::memchr2(b'"', b'\\', rest);
        let text = rest.get(..run.unwrap_or(rest.len())).unwrap_or_default();
        let (low, high) = text
            .iter()
            .fold((u8::MAX, 0u8), |(lo, hi), &b| (lo.min(b), hi.max(b)));
        if low < 0x20 {
            return Err(Stop::Bad(Bad::ControlCharacter));
        }
        if high >= 0x80
            && let Err(e) = std::str::from_utf8(text)
        {
            // A character cut by the end of the bytes may be completed by the next ones.
            if run.is_none() && e.error_len().is_none() {
                return Err(self.end());
            }
            return Err(Stop::Bad(Bad::NotUtf8));
        }
        match run {
            Some(run) => self.pos += run,
            None => return Err(self.end()),
        }
        Ok(())
    }

    /// An escape whose backslash was taken.
    #[inline(never)]
    fn escape(&mut self) -> Result<(), Stop> {
        let b = self.peek().ok_or_else(|| self.end())?;
        self.pos += 1;
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => match self.hex4()? {
                0xdc00..=0xdfff => Err(Stop::Bad(Bad::LoneTrailingSurrogate)),
                0xd800..=0xdbff => {
                    let next = self.bytes.get(self.pos..).unwrap_or_default();
                    if !next.starts_with(b"\\u") {
                        return Err(if next.len() < 2 && b"\\u".starts_with(next) {
                            self.end()
                        } else {
                            Stop::Bad(Bad::LoneLeadingSurrogate)
                        });
                    }
                    self.pos += 2;
                    match self.hex4()? {
                        0xdc00..=0xdfff => Ok(()),
                        _ => Err(Stop::Bad(Bad::LoneLeadingSurrogate)),
                    }
                }
                _ => Ok(()),
            },
            _ => Err(Stop::Bad(Bad::Escape)),
        }
    }

    fn hex4(&mut self) -> Result<u16, Stop> {
        let mut n = 0u16;
        for _ in 0..4 {
            let d = self.peek().ok_or_else(|| self.end())?;
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Stop::Bad(Bad::Escape)),
            };
            n = (n << 4) | u16::from(v);
            self.pos += 1;
        }
        Ok(n)
    }

    /// Digits taken; at least one is required (more may be coming if the bytes end).
    fn digits(&mut self) -> Result<usize, Stop> {
        let from = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        match self.pos - from {
            0 if self.peek().is_none() => Err(self.end()),
            0 => Err(Stop::Bad(Bad::Number)),
            n => Ok(n),
        }
    }

    /// A number starting at `start` (its sign, if any, taken).
    fn number(&mut self, start: usize) -> Result<(), Stop> {
        let int_at = self.pos;
        let int_digits = self.digits()?;
        if int_digits > 1 && self.bytes.get(int_at) == Some(&b'0') {
            return Err(Stop::Bad(Bad::LeadingZero));
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        let exponent = matches!(self.peek(), Some(b'e' | b'E'));
        if exponent {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        // More digits may follow.
        if self.peek().is_none() && !self.whole {
            return Err(Stop::More);
        }
        // Under 10^300 without an exponent: always a finite f64. Others may be out of range,
        // which serde_json decides as it does when reading the value.
        if exponent || int_digits > 300 {
            let token = self.bytes.get(start..self.pos).unwrap_or_default();
            serde_json::from_slice::<super::Checked>(token)
                .map_err(|_| Stop::Bad(Bad::OutOfRange))?;
        }
        Ok(())
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

/// The whole packet straight into `T` (no intermediate value), with Perl's loose typing.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FramingError> {
    decode_seed(bytes, PhantomData::<T>)
}

/// A complete packet through a serde seed (a decoder that carries state).
///
/// Read strictly first (serde_json's own typing, the fast path); only a packet that fails that
/// way is read again with Perl's loose typing ([`Loose`]), which gives the
/// same value wherever the strict reading succeeds. So a seed that acts must act only once it
/// has read everything it needs.
pub(super) fn decode_seed<S, T>(bytes: &[u8], seed: S) -> Result<T, FramingError>
where
    S: for<'de> DeserializeSeed<'de, Value = T> + Clone,
{
    let strict = {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        seed.clone()
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v))
    };
    // (Any error: serde_json reports some type mismatches as syntax, `2.0` for an `i128`.)
    let result = match strict {
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            seed.deserialize(Loose(&mut de))
                .and_then(|v| de.end().map(|()| v))
        }
        other => other,
    };
    result.map_err(|e| match e.classify() {
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
    use bytes::Bytes;
    use proptest::strategy::Strategy as _;

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

    /// Packets, then whether the decoder failed, with `data` fed `chunk` bytes at a time.
    fn fed(data: &[u8], chunk: usize) -> (usize, bool) {
        let (mut dec, mut buf, mut n) = (decoder(), BytesMut::new(), 0);
        for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => break,
                    Err(_) => return (n, true),
                }
            }
        }
        (n, false)
    }

    #[test]
    fn the_verdict_on_a_malformed_packet_does_not_depend_on_how_reads_cut_it() {
        // Found by the decode_json fuzz target: a missing comma before a nested array whose
        // brackets never close was refused at once in one piece, but waited for more in
        // pieces. Both now wait for the packet's end (or `max_packet`), then refuse it.
        let open = br#"["a"]["X",["","kil0","p"]["","mon1","p"]"#;
        let closed = br#"["a"]["X",["","kil0","p"]["","mon1","p"]]"#;
        for chunk in [1, 2, 5, 17, usize::MAX] {
            assert_eq!(fed(open, chunk), (1, false), "chunk {chunk}");
            assert_eq!(fed(closed, chunk), (1, true), "chunk {chunk}");
        }
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

    /// Bytes nested `depth` arrays deep: `[[…]]`.
    fn nested(depth: usize) -> Vec<u8> {
        let mut text = vec![b'['; depth];
        text.extend(std::iter::repeat_n(b']', depth));
        text
    }

    #[test]
    fn malformed_json_fails_the_decoder() {
        for text in [
            &b"[1,]"[..],
            b"[\"p\",1,]",
            b"[\"a\" \"b\"]",
            b"[\"\xff\"]",
            b"[tru]",
            b"[\"a\",{1:2}]",
            b"[\"a\",{\"k\"}]",
            b"[\"\\ud800\"]",
            b"[\"\\q\"]",
            b"[\"a\nb\"]",
            b"[\"p\",\"a\x01b\"]",
            b"[\"p\",\"\x1f\"]",
            b"[\"p\",1e400]",
            b"[\"p\",01]",
            b"[\"p\",-]",
            b"[\"p\"}",
            b"[\"p\",{]}",
            &nested(200),
        ] {
            let mut buf = BytesMut::from(text);
            let err = decoder().decode(&mut buf).unwrap_err();
            assert!(
                matches!(err, FramingError::Malformed { .. }),
                "{text:?}: {err:?}"
            );
            // Nothing consumed: the link ends with the bytes where they were.
            assert_eq!(&buf[..], text);
            // Read as a packet, the same bytes fail the same way.
            let p = Packet::from_bytes(Framing::Json, Bytes::copy_from_slice(text));
            assert!(
                matches!(p.to_value(), Err(FramingError::Malformed { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_bad_packet_after_good_ones_fails_only_when_reached() {
        let mut dec = decoder();
        let mut buf = BytesMut::from(&b"[\"a\",1] [\"b\"][1,]"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().dest().unwrap(), "a");
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().dest().unwrap(), "b");
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FramingError::Malformed { .. })
        ));
        // Fed a byte at a time, the bad packet fails once it is complete.
        let mut dec = decoder();
        let mut buf = BytesMut::new();
        for (i, &b) in b"[\"p\",\"\x01\"]".iter().enumerate() {
            buf.put_u8(b);
            let got = dec.decode(&mut buf);
            if i < 8 {
                assert_eq!(got, Ok(None));
            } else {
                assert!(matches!(got, Err(FramingError::Malformed { .. })));
            }
        }
    }

    #[test]
    fn trailing_garbage_fails_the_decoder() {
        for (text, err) in [
            (
                &b"[\"a\"]x"[..],
                FramingError::NotAnArray {
                    framing: Framing::Json,
                },
            ),
            (
                b"[\"a\"]1",
                FramingError::NotAnArray {
                    framing: Framing::Json,
                },
            ),
            (
                b"[\"a\"]\"s\"",
                FramingError::NotAnArray {
                    framing: Framing::Json,
                },
            ),
            (b"[\"a\"] ]", malformed("unbalanced closing bracket")),
            (b"[\"a\"]}", malformed("unbalanced closing bracket")),
        ] {
            let mut dec = decoder();
            let mut buf = BytesMut::from(text);
            assert_eq!(
                dec.decode(&mut buf).unwrap().unwrap().as_bytes(),
                b"[\"a\"]"
            );
            assert_eq!(dec.decode(&mut buf), Err(err), "{text:?}");
        }
    }

    #[test]
    fn nesting_limit_is_the_one_values_are_read_with() {
        // serde_json's recursion limit: 127 levels read, 128 do not.
        for depth in [1, 2, 64, 127] {
            let mut buf = BytesMut::from(&nested(depth)[..]);
            let p = decoder().decode(&mut buf).unwrap().unwrap();
            assert!(p.to_value().is_ok(), "{depth}");
            assert!(p.decode::<Vec<Value>>().is_ok(), "{depth}");
        }
        for depth in [128, 129, 1000] {
            let text = nested(depth);
            let mut buf = BytesMut::from(&text[..]);
            assert!(
                matches!(
                    decoder().decode(&mut buf),
                    Err(FramingError::Malformed { .. })
                ),
                "{depth}"
            );
            let p = Packet::from_bytes(Framing::Json, Bytes::from(text));
            assert!(p.to_value().is_err(), "{depth}");
        }
        // Maps count as arrays do.
        let mut text = b"[\"p\",".to_vec();
        text.extend(std::iter::repeat_n(&b"{\"k\":"[..], 126).flatten());
        text.push(b'1');
        text.extend(std::iter::repeat_n(b'}', 126));
        text.push(b']');
        let mut buf = BytesMut::from(&text[..]);
        assert!(decoder().decode(&mut buf).unwrap().is_some());
        text.splice(5..5, b"[".iter().copied());
        text.push(b']');
        let mut buf = BytesMut::from(&text[..]);
        assert!(decoder().decode(&mut buf).is_err());
    }

    /// Whether serde_json reads `bytes` as a value: what [`check`] must agree with.
    fn serde_reads(bytes: &[u8]) -> bool {
        serde_json::from_slice::<Value>(bytes).is_ok()
    }

    #[test]
    fn check_agrees_with_serde_json_on_edge_cases() {
        let long_int = format!("[{}]", "9".repeat(300));
        let longer_int = format!("[1{}]", "0".repeat(300));
        let too_long_int = format!("[1{}]", "0".repeat(400));
        let long_fraction = format!("[0.{}1]", "0".repeat(400));
        let deep_object = format!("{}1{}", "{\"k\":".repeat(127), "}".repeat(127));
        let too_deep_object = format!("[{}1{}]", "{\"k\":".repeat(127), "}".repeat(127));
        let cases: Vec<&[u8]> = vec![
            b"[]",
            b"[ ]",
            b"{}",
            b"[[],{},[[]],{\"a\":{}}]",
            b"[\"\"]",
            b"[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]",
            b"[\"\\u00e9\\u00E9\\uD83D\\uDE00\"]",
            b"[\"\\ud83d\"]",
            b"[\"\\ude00\"]",
            b"[\"\\udc00\"]",
            b"[\"\\udfff\"]",
            b"[\"\\ud7ff\\ue000\\uffff\"]",
            b"[\"\\ud800\\udc00\\udbff\\udfff\"]",
            b"[\"\\udbff\\udbff\"]",
            b"[\"\\ud800\\ue000\"]",
            b"[\"\\ud83d\\u0041\"]",
            b"[\"\\ud83d\\n\"]",
            b"[\"\\ud83dx\"]",
            b"[\"\\u12\"]",
            b"[\"\\u12g4\"]",
            b"[\"\\a\"]",
            "[\"☺é\u{7f}\"]".as_bytes(),
            b"[\"\xe2\x98\"]",
            b"[\"\xc3\\u00a9\"]",
            b"[\"\xed\xa0\x80\"]",
            b"[\"\x7f\"]",
            b"[\"\t\"]",
            b"[0,-0,1,-1,0.5,-0.5,1e5,1E+5,1e-5,1.5e300,18446744073709551616]",
            b"[1.7976931348623157e308,-1.7976931348623157e308,1e-400]",
            b"[1.7976931348623159e308]",
            b"[1e309]",
            b"[-1e309]",
            b"[1e99999999999999999999]",
            b"[0e99999999999999999999]",
            b"[01]",
            b"[-01]",
            b"[1.]",
            b"[.5]",
            b"[+1]",
            b"[-]",
            b"[1e]",
            b"[1e+]",
            b"[1.5.3]",
            b"[1x]",
            b"[true,false,null]",
            b"[tru]",
            b"[truex]",
            b"[nul]",
            b"[True]",
            b"[1,]",
            b"[,1]",
            b"[1 2]",
            b"[\"a\":1]",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{1:2}",
            b"{\"a\" : 1 , \"b\" : [ ] }",
            b"[}",
            b"{]",
            b"[1]]",
            b"[1] ",
            b" [1]",
            b"[1] x",
            b"[",
            b"",
            b"\"s\"",
            long_int.as_bytes(),
            longer_int.as_bytes(),
            too_long_int.as_bytes(),
            long_fraction.as_bytes(),
            deep_object.as_bytes(),
            too_deep_object.as_bytes(),
        ];
        for text in cases {
            assert_eq!(
                check(text).is_ok(),
                serde_reads(text),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        for depth in [126, 127, 128, 129] {
            let text = nested(depth);
            assert_eq!(check(&text).is_ok(), serde_reads(&text), "{depth}");
            assert_eq!(check(&text).is_ok(), depth <= 127, "{depth}");
        }
    }

    #[test]
    fn strings_are_checked_at_every_position() {
        let inserts: [&[u8]; 10] = [
            b"\\n",
            b"\\u00e9",
            b"\x01",
            b"\x1f",
            b"\x7f",
            "é".as_bytes(),
            "☺".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xe2\x98",
        ];
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40, 100] {
            for at in 0..=len {
                for insert in inserts {
                    let mut body = vec![b'x'; len];
                    body.splice(at..at, insert.iter().copied());
                    let text = [&b"[\""[..], &body, b"\"]"].concat();
                    let ok = serde_reads(&text);
                    assert_eq!(check(&text).is_ok(), ok, "{text:?}");
                    assert_eq!(check_prefix(&text).is_ok(), ok, "{text:?}");
                    // Unterminated: more may come, unless something is already wrong for sure.
                    let open = &text[..text.len() - 2];
                    let cut_char = insert[0] >= 0xc0 && at == len;
                    match check_prefix(open) {
                        Err(Stop::More) => assert!(ok || cut_char, "{open:?}"),
                        Err(Stop::Bad(_)) => assert!(!ok, "{open:?}"),
                        Ok(_) => panic!("{open:?} is not complete"),
                    }
                }
            }
        }
    }

    /// Pieces of JSON text, right and wrong, to put together.
    const PIECES: &[&[u8]] = &[
        b"[",
        b"]",
        b"{",
        b"}",
        b",",
        b":",
        b" ",
        b"\n",
        b"\"",
        b"\"k\"",
        b"\\",
        b"\\u",
        b"d83d",
        b"de00",
        b"00e9",
        b"\\n",
        b"0",
        b"1",
        b"-",
        b".",
        b"e",
        b"E",
        b"+",
        b"12345678901234567890",
        b"1e400",
        b"1e308",
        b"-0",
        b"true",
        b"fals",
        b"null",
        "é".as_bytes(),
        b"\x01",
        b"\x7f",
        "☺".as_bytes(),
        b"\xff",
        b"\xe2\x98",
    ];

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            "[\"\\\\\u{0}-\u{1f}a☺\u{10000}]{0,6}".prop_map(Value::Str),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a\"\u{1}é]{0,3}", inner), 0..3).prop_map(Value::Map),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Any text put together from pieces: `check` and serde_json agree.
        #[test]
        fn check_agrees_with_serde_json_on_pieces(
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..24),
            wrap in proptest::prelude::any::<bool>(),
        ) {
            let mut text: Vec<u8> = pieces.concat();
            if wrap {
                text.insert(0, b'[');
                text.push(b']');
            }
            proptest::prop_assert_eq!(
                check(&text).is_ok(),
                serde_reads(&text),
                "{:?}", String::from_utf8_lossy(&text)
            );
        }

        /// Real values, whole and with one byte damaged: `check` and serde_json agree.
        #[test]
        fn check_agrees_with_serde_json_on_damaged_values(
            v in arb_value(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::sample::select(&b"[]{},:\"\\ 0-.eu\x01\x80\xff"[..]),
        ) {
            let mut text = serde_json::to_vec(&v).unwrap();
            proptest::prop_assert!(check(&text).is_ok());
            let i = at.index(text.len());
            text[i] = byte;
            proptest::prop_assert_eq!(
                check(&text).is_ok(),
                serde_reads(&text),
                "{:?}", String::from_utf8_lossy(&text)
            );
        }

        /// A good packet, cut anywhere, asks for more; whole, it is found to its end, also with
        /// the start of the next one behind it.
        #[test]
        fn prefixes_of_good_packets_ask_for_more(
            items in proptest::collection::vec(arb_value(), 0..4),
        ) {
            let text = serde_json::to_vec(&Value::Array(items)).unwrap();
            for cut in 0..text.len() {
                let got = check_prefix(&text[..cut]);
                proptest::prop_assert!(matches!(got, Err(Stop::More)), "{}: {:?}", cut, got);
            }
            proptest::prop_assert_eq!(check_prefix(&text).ok(), Some(text.len()));
            let two = [&text[..], b" [\"p\""].concat();
            proptest::prop_assert_eq!(check_prefix(&two).ok(), Some(text.len()));
        }

        /// However a stream of packets good and bad is cut into reads, the same good packets
        /// come out, and none after a bad one.
        #[test]
        fn chunking_changes_nothing_but_when_a_bad_packet_is_seen(
            packets in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec(arb_value(), 0..3)
                        .prop_map(|v| serde_json::to_vec(&Value::Array(v)).unwrap()),
                    proptest::collection::vec(proptest::sample::select(PIECES), 0..10)
                        .prop_map(|p| [&b"[\"p\","[..], &p.concat(), b"]"].concat()),
                ],
                1..5,
            ),
            chunk in 1usize..20,
        ) {
            let stream: Vec<u8> = packets.concat();
            let run = |chunk: usize| {
                let mut dec = decoder();
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for piece in stream.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    loop {
                        match dec.decode(&mut buf) {
                            Ok(Some(p)) => got.push(p.as_bytes().to_vec()),
                            Ok(None) => break,
                            Err(_) => return (got, true),
                        }
                    }
                }
                (got, false)
            };
            let (whole, whole_failed) = run(stream.len());
            let (cut, cut_failed) = run(chunk);
            if whole_failed {
                proptest::prop_assert!(cut.len() <= whole.len());
                proptest::prop_assert_eq!(&cut[..], &whole[..cut.len()]);
            } else {
                proptest::prop_assert_eq!(cut, whole);
                proptest::prop_assert!(!cut_failed);
            }
        }

        /// Through the decoder: a packet comes out exactly when it reads as a value.
        #[test]
        fn the_decoder_hands_out_what_to_value_reads(
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..24),
        ) {
            let text = [&b"[\"p\","[..], &pieces.concat(), b"]"].concat();
            let mut buf = BytesMut::from(&text[..]);
            let mut scanner = Scanner::default();
            if let Ok(Some(f)) = scanner.scan(&text, DEFAULT_MAX_PACKET) {
                let cut = &text[f.start..f.end];
                let p = Packet::from_bytes(Framing::Json, Bytes::copy_from_slice(cut));
                let got = decoder().decode(&mut buf);
                proptest::prop_assert_eq!(got.is_ok(), p.to_value().is_ok());
            }
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
