//! The `cbor` framing (P2): `CBOR::XS::encode_cbor(\@packet)` items back-to-back.
//!
//! Hand-written because the framing needs things a general CBOR crate does not give: an incremental
//! boundary scan that never allocates, reading the destination without decoding the rest, and
//! Perl's habit of sending strings as byte strings (major type 2).

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::ser::{self, Impossible};

use super::{Frame, Framing, FramingError};
use crate::proto::value::{self, Value};

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

/// What the scanner still waits for inside an open container.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// A definite array or map: this many items (map: keys and values) still to come.
    Items(u64),
    /// An indefinite array or map, closed by a break.
    Indefinite,
    /// An indefinite string of this major type: definite chunks of the same type, then a break.
    Chunks(u8),
}

/// Incremental boundary finder. After it returns a frame, the caller removes `buf[..end]` and the
/// scanner must be ready for the bytes that followed.
///
/// It walks item headers only, skipping string contents, and keeps the position and the stack of
/// open containers between calls, so a packet fed byte by byte is scanned once.
#[derive(Debug, Default)]
pub(super) struct Scanner {
    /// Bytes of the current packet already walked (always at an item boundary).
    pos: usize,
    /// Open containers, innermost last.
    stack: Vec<Pending>,
    /// The last header walked was a tag, so a data item must follow.
    tagged: bool,
}

impl Scanner {
    pub(super) fn scan(&mut self, buf: &[u8], max: usize) -> Result<Option<Frame>, FramingError> {
        loop {
            let Some(head) = read_head(buf, self.pos)? else {
                return self.incomplete(buf, max);
            };
            if self.pos == 0 && head.major != MAJOR_ARRAY {
                return Err(FramingError::NotAnArray {
                    framing: Framing::Cbor,
                });
            }
            if let Some(Pending::Chunks(major)) = self.stack.last() {
                let is_break = head.major == MAJOR_SIMPLE && head.indefinite();
                if !is_break && (head.major != *major || head.indefinite()) {
                    return Err(malformed("bad chunk in an indefinite-length string"));
                }
            }
            let is_break = head.major == MAJOR_SIMPLE && head.indefinite();
            if self.tagged && is_break {
                return Err(malformed("break after a tag"));
            }
            self.tagged = false;
            let mut advance = head.len as u64;
            let mut complete = false;
            match head.major {
                MAJOR_UINT | MAJOR_NEGINT => complete = true,
                MAJOR_BYTES | MAJOR_TEXT if head.indefinite() => {
                    self.stack.push(Pending::Chunks(head.major))
                }
                MAJOR_BYTES | MAJOR_TEXT => {
                    advance = advance.saturating_add(head.arg);
                    let end = (self.pos as u64).saturating_add(advance);
                    if end > max as u64 {
                        return Err(too_large(end, max));
                    }
                    if end > buf.len() as u64 {
                        return self.incomplete(buf, max);
                    }
                    complete = true;
                }
                MAJOR_ARRAY | MAJOR_MAP if head.indefinite() => {
                    self.stack.push(Pending::Indefinite)
                }
                MAJOR_ARRAY | MAJOR_MAP => {
                    let items = if head.major == MAJOR_MAP {
                        head.arg.saturating_mul(2)
                    } else {
                        head.arg
                    };
                    // Every item takes at least one byte.
                    let least = (self.pos as u64)
                        .saturating_add(advance)
                        .saturating_add(items);
                    if least > max as u64 {
                        return Err(too_large(least, max));
                    }
                    if items == 0 {
                        complete = true;
                    } else {
                        self.stack.push(Pending::Items(items));
                    }
                }
                MAJOR_TAG => self.tagged = true,
                _ if is_break => match self.stack.pop() {
                    Some(Pending::Indefinite | Pending::Chunks(_)) => complete = true,
                    _ => return Err(malformed("unexpected break")),
                },
                _ => complete = true,
            }
            if self.stack.len() > MAX_DEPTH {
                return Err(malformed("nested too deeply"));
            }
            let end = (self.pos as u64).saturating_add(advance);
            if end > max as u64 {
                return Err(too_large(end, max));
            }
            // `end` is within `buf` (headers were read from it, strings checked above).
            self.pos = end as usize;
            if complete && let Some(frame) = self.item_done() {
                return Ok(Some(frame));
            }
        }
    }

    /// `buf` ends inside the current packet: wait for more unless it cannot fit any more.
    fn incomplete(&self, buf: &[u8], max: usize) -> Result<Option<Frame>, FramingError> {
        if buf.len() >= max {
            return Err(too_large(buf.len() as u64 + 1, max));
        }
        Ok(None)
    }

    /// One item ended at `self.pos`: close the containers it completes; the frame if the packet
    /// itself is complete.
    fn item_done(&mut self) -> Option<Frame> {
        loop {
            match self.stack.last_mut() {
                None => {
                    let end = self.pos;
                    self.pos = 0;
                    self.tagged = false;
                    return Some(Frame { start: 0, end });
                }
                Some(Pending::Items(n)) => {
                    *n -= 1;
                    if *n > 0 {
                        return None;
                    }
                    self.stack.pop();
                }
                Some(Pending::Indefinite | Pending::Chunks(_)) => return None,
            }
        }
    }
}

/// A cursor over one complete packet.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
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
    fn string(&mut self, head: Head) -> Result<Cow<'a, [u8]>, FramingError> {
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
            MAJOR_UINT => {
                return Ok(Some(match i64::try_from(head.arg) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Float(head.arg as f64),
                }));
            }
            MAJOR_NEGINT => {
                return Ok(Some(match i64::try_from(head.arg) {
                    Ok(i) => Value::Int(-1 - i),
                    Err(_) => Value::Float(-1.0 - head.arg as f64),
                }));
            }
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
            _ => return simple(head).map(Some),
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
fn key_string(v: Value) -> Result<String, FramingError> {
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
    value::from_value(to_value(bytes)?).map_err(|e| FramingError::Type {
        framing: Framing::Cbor,
        reason: e.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends a head with the shortest argument encoding.
fn write_head(out: &mut BytesMut, major: u8, n: u64) {
    let (bytes, len) = head_bytes(major, n);
    out.put_slice(&bytes[..len]);
}

fn head_bytes(major: u8, n: u64) -> ([u8; 9], usize) {
    let mut b = [0u8; 9];
    let m = major << 5;
    let len = if n < 24 {
        b[0] = m | n as u8;
        1
    } else if n <= 0xff {
        b[0] = m | 24;
        b[1] = n as u8;
        2
    } else if n <= 0xffff {
        b[0] = m | 25;
        b[1..3].copy_from_slice(&(n as u16).to_be_bytes());
        3
    } else if n <= 0xffff_ffff {
        b[0] = m | 26;
        b[1..5].copy_from_slice(&(n as u32).to_be_bytes());
        5
    } else {
        b[0] = m | 27;
        b[1..9].copy_from_slice(&n.to_be_bytes());
        9
    };
    (b, len)
}

/// Rewrites the definite-length head at `out[at..]` (written by us) with count `n`, moving what
/// follows if the head's size changes. Used when a `Serialize` impl announced a wrong length.
fn patch_head(out: &mut BytesMut, at: usize, major: u8, n: u64) {
    let old_len = match out.get(at).map(|b| b & 0x1f) {
        Some(24) => 2,
        Some(25) => 3,
        Some(26) => 5,
        Some(27) => 9,
        _ => 1,
    };
    let (new, new_len) = head_bytes(major, n);
    let tail = at + old_len;
    let total = out.len();
    if new_len > old_len {
        out.resize(total + new_len - old_len, 0);
        out.copy_within(tail..total, at + new_len);
    } else if new_len < old_len {
        out.copy_within(tail..total, at + new_len);
        out.truncate(total - (old_len - new_len));
    }
    out[at..at + new_len].copy_from_slice(&new[..new_len]);
}

fn write_int(out: &mut BytesMut, i: i64) {
    if i >= 0 {
        write_head(out, MAJOR_UINT, i as u64);
    } else {
        write_head(out, MAJOR_NEGINT, !(i as u64));
    }
}

/// Like CBOR::XS: single precision when it holds the value exactly, else double.
fn write_f64(out: &mut BytesMut, f: f64) {
    let single = f as f32;
    if f64::from(single) == f {
        write_f32(out, single);
    } else {
        out.put_u8(0xfb);
        out.put_f64(f);
    }
}

fn write_f32(out: &mut BytesMut, f: f32) {
    out.put_u8(0xfa);
    out.put_f32(f);
}

fn write_str(out: &mut BytesMut, major: u8, s: &[u8]) {
    write_head(out, major, s.len() as u64);
    out.put_slice(s);
}

fn write_value(out: &mut BytesMut, v: &Value) {
    match v {
        Value::Null => out.put_u8(0xf6),
        Value::Bool(b) => out.put_u8(if *b { 0xf5 } else { 0xf4 }),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, MAJOR_TEXT, s.as_bytes()),
        Value::Bytes(b) => write_str(out, MAJOR_BYTES, b),
        Value::Array(items) => {
            write_head(out, MAJOR_ARRAY, items.len() as u64);
            for item in items {
                write_value(out, item);
            }
        }
        Value::Map(entries) => {
            write_head(out, MAJOR_MAP, entries.len() as u64);
            for (k, v) in entries {
                write_str(out, MAJOR_TEXT, k.as_bytes());
                write_value(out, v);
            }
        }
    }
}

pub(super) fn encode_value(v: &Value, out: &mut BytesMut) -> Result<(), FramingError> {
    write_value(out, v);
    Ok(())
}

pub(super) fn encode_packet<T: Serialize + ?Sized>(
    dest: &str,
    msg: &T,
    out: &mut BytesMut,
) -> Result<(), FramingError> {
    let start = out.len();
    let result = msg.serialize(Outer { out, dest });
    result.map_err(|e| {
        out.truncate(start);
        FramingError::Encode {
            framing: Framing::Cbor,
            reason: e.0,
        }
    })
}

/// Error of the serde serializers below.
#[derive(Debug)]
struct EncodeError(String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

/// Writes serde data as CBOR straight into the output buffer.
struct Encoder<'a> {
    out: &'a mut BytesMut,
}

/// An open array or map: counts what is written and fixes the head if the announced length was
/// wrong; an indefinite one gets its break.
struct Compound<'e, 'a> {
    enc: &'e mut Encoder<'a>,
    major: u8,
    head_at: usize,
    announced: Option<u64>,
    count: u64,
}

impl<'e, 'a> Compound<'e, 'a> {
    fn open(enc: &'e mut Encoder<'a>, major: u8, len: Option<usize>) -> Self {
        let head_at = enc.out.len();
        let announced = len.map(|n| n as u64);
        match announced {
            Some(n) => write_head(enc.out, major, n),
            None => enc.out.put_u8((major << 5) | AI_INDEFINITE),
        }
        Compound {
            enc,
            major,
            head_at,
            announced,
            count: 0,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), EncodeError> {
        v.serialize(&mut *self.enc)?;
        self.count += 1;
        Ok(())
    }

    fn entry<T: Serialize + ?Sized>(&mut self, key: &str, v: &T) -> Result<(), EncodeError> {
        write_str(self.enc.out, MAJOR_TEXT, key.as_bytes());
        self.element(v)
    }

    fn close(self) -> Result<(), EncodeError> {
        match self.announced {
            None => self.enc.out.put_u8(BREAK),
            Some(n) if n != self.count => {
                patch_head(self.enc.out, self.head_at, self.major, self.count)
            }
            Some(_) => {}
        }
        Ok(())
    }
}

/// For enum variants with data: `{variant: data}` wraps the compound; closes both.
struct VariantCompound<'e, 'a>(Compound<'e, 'a>);

impl<'a> Encoder<'a> {
    fn variant_key(&mut self, variant: &str) {
        write_head(self.out, MAJOR_MAP, 1);
        write_str(self.out, MAJOR_TEXT, variant.as_bytes());
    }
}

impl<'e, 'a> ser::Serializer for &'e mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Compound<'e, 'a>;
    type SerializeTuple = Compound<'e, 'a>;
    type SerializeTupleStruct = Compound<'e, 'a>;
    type SerializeTupleVariant = VariantCompound<'e, 'a>;
    type SerializeMap = Compound<'e, 'a>;
    type SerializeStruct = Compound<'e, 'a>;
    type SerializeStructVariant = VariantCompound<'e, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.put_u8(if v { 0xf5 } else { 0xf4 });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        if let Ok(u) = u64::try_from(v) {
            write_head(self.out, MAJOR_UINT, u);
        } else if let Ok(n) = u64::try_from(-1 - v) {
            write_head(self.out, MAJOR_NEGINT, n);
        } else {
            return Err(EncodeError("integer out of 64-bit range".into()));
        }
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        write_head(self.out, MAJOR_UINT, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        let v = u64::try_from(v).map_err(|_| EncodeError("integer out of 64-bit range".into()))?;
        self.serialize_u64(v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        write_f32(self.out, v);
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        write_f64(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        write_str(self.out, MAJOR_TEXT, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        write_str(self.out, MAJOR_BYTES, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), EncodeError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.out.put_u8(0xf6);
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), EncodeError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), EncodeError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), EncodeError> {
        self.variant_key(variant);
        v.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'e, 'a>, EncodeError> {
        Ok(Compound::open(self, MAJOR_ARRAY, len))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'e, 'a>, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Compound<'e, 'a>, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantCompound<'e, 'a>, EncodeError> {
        self.variant_key(variant);
        Ok(VariantCompound(Compound::open(
            self,
            MAJOR_ARRAY,
            Some(len),
        )))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'e, 'a>, EncodeError> {
        Ok(Compound::open(self, MAJOR_MAP, len))
    }
    fn serialize_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Compound<'e, 'a>, EncodeError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantCompound<'e, 'a>, EncodeError> {
        self.variant_key(variant);
        Ok(VariantCompound(Compound::open(self, MAJOR_MAP, Some(len))))
    }
}

/// The three sequence-like serde traits all append one element and close the same way.
macro_rules! sequence_impls {
    ($ty:ty) => {
        sequence_impls!(@one SerializeSeq, serialize_element, $ty);
        sequence_impls!(@one SerializeTuple, serialize_element, $ty);
        sequence_impls!(@one SerializeTupleStruct, serialize_field, $ty);
    };
    (@one $trait:ident, $method:ident, $ty:ty) => {
        impl ser::$trait for $ty {
            type Ok = ();
            type Error = EncodeError;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), EncodeError> {
                self.element(v)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.close()
            }
        }
    };
}

sequence_impls!(Compound<'_, '_>);

impl ser::SerializeTupleVariant for VariantCompound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), EncodeError> {
        self.0.element(v)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.0.close()
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), EncodeError> {
        k.serialize(&mut *self.enc)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), EncodeError> {
        // One count per entry.
        self.element(v)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), EncodeError> {
        self.entry(key, v)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

impl ser::SerializeStructVariant for VariantCompound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), EncodeError> {
        self.0.entry(key, v)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.0.close()
    }
}

/// The top level of `encode_packet`: accepts only a sequence, written as the packet array with
/// the destination spliced in front.
struct Outer<'o> {
    out: &'o mut BytesMut,
    dest: &'o str,
}

/// The packet array being written by [`Outer`].
struct OuterSeq<'o> {
    enc: Encoder<'o>,
    head_at: usize,
    announced: Option<u64>,
    count: u64,
}

impl OuterSeq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), EncodeError> {
        v.serialize(&mut self.enc)?;
        self.count += 1;
        Ok(())
    }

    fn close(self) -> Result<(), EncodeError> {
        match self.announced {
            None => self.enc.out.put_u8(BREAK),
            Some(n) if n != self.count => {
                patch_head(self.enc.out, self.head_at, MAJOR_ARRAY, self.count)
            }
            Some(_) => {}
        }
        Ok(())
    }
}

fn not_a_sequence<T>() -> Result<T, EncodeError> {
    Err(EncodeError(
        "the message does not serialise to a sequence".into(),
    ))
}

impl<'o> Outer<'o> {
    fn open(self, len: Option<usize>) -> OuterSeq<'o> {
        let head_at = self.out.len();
        let announced = len.map(|n| n as u64 + 1);
        match announced {
            Some(n) => write_head(self.out, MAJOR_ARRAY, n),
            None => self.out.put_u8((MAJOR_ARRAY << 5) | AI_INDEFINITE),
        }
        write_str(self.out, MAJOR_TEXT, self.dest.as_bytes());
        OuterSeq {
            enc: Encoder { out: self.out },
            head_at,
            announced,
            count: 1,
        }
    }
}

impl<'o> ser::Serializer for Outer<'o> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = OuterSeq<'o>;
    type SerializeTuple = OuterSeq<'o>;
    type SerializeTupleStruct = OuterSeq<'o>;
    type SerializeTupleVariant = Impossible<(), EncodeError>;
    type SerializeMap = Impossible<(), EncodeError>;
    type SerializeStruct = Impossible<(), EncodeError>;
    type SerializeStructVariant = Impossible<(), EncodeError>;

    fn serialize_seq(self, len: Option<usize>) -> Result<OuterSeq<'o>, EncodeError> {
        Ok(self.open(len))
    }
    fn serialize_tuple(self, len: usize) -> Result<OuterSeq<'o>, EncodeError> {
        Ok(self.open(Some(len)))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<OuterSeq<'o>, EncodeError> {
        Ok(self.open(Some(len)))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), EncodeError> {
        v.serialize(self)
    }

    fn serialize_bool(self, _: bool) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_i8(self, _: i8) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_i16(self, _: i16) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_i32(self, _: i32) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_i64(self, _: i64) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_u8(self, _: u8) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_u16(self, _: u16) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_u32(self, _: u32) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_u64(self, _: u64) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_f32(self, _: f32) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_f64(self, _: f64) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_char(self, _: char) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_str(self, _: &str) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), EncodeError> {
        not_a_sequence()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        not_a_sequence()
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        not_a_sequence()
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        not_a_sequence()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        not_a_sequence()
    }
}

sequence_impls!(OuterSeq<'_>);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const MAX: usize = 1 << 20;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    /// The AEMP-NOTES §1.11 example, as CBOR::XS writes it (byte strings for Perl strings).
    const EXAMPLE: &str = "89 40 44 6d6f6e31 43 6e2370 05 22 fa3fc00000 f6 63 e298ba a1 41 61 01";

    fn example_value() -> Value {
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

    fn scan_all(bytes: &[u8]) -> Result<Option<Frame>, FramingError> {
        Scanner::default().scan(bytes, MAX)
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
    fn byte_by_byte_feeding_finds_the_end_once() {
        let mut bytes = hex(EXAMPLE);
        bytes.extend(hex("82 41 78 f5"));
        let mut scanner = Scanner::default();
        let first_len = hex(EXAMPLE).len();
        for n in 0..first_len {
            assert_eq!(scanner.scan(&bytes[..n], MAX).unwrap(), None, "at {n}");
        }
        let frame = scanner.scan(&bytes[..first_len + 1], MAX).unwrap().unwrap();
        assert_eq!(frame.end, first_len);
        // The caller removes the packet; the scanner continues on what follows.
        let rest = &bytes[first_len..];
        assert_eq!(scanner.scan(&rest[..3], MAX).unwrap(), None);
        assert_eq!(scanner.scan(rest, MAX).unwrap().unwrap().end, 4);
        assert_eq!(
            to_value(rest).unwrap(),
            Value::Array(vec![s("x"), Value::Bool(true)])
        );
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
    fn huge_declared_lengths_are_refused_at_once() {
        for bad in [
            "82 40 5b ffffffffffffffff",
            "82 40 5a 00100001",
            "82 40 9b ffffffffffffffff",
            "82 40 bb 8000000000000000",
            "9b 0000000000100000",
        ] {
            assert!(
                matches!(scan_all(&hex(bad)), Err(FramingError::TooLarge { .. })),
                "{bad}"
            );
            assert!(to_value(&hex(bad)).is_err(), "{bad}");
        }
        // A string that would end exactly at the limit is fine; one byte more is not.
        let mut ok = hex("82 40 59 0100");
        ok.resize(ok.len() + 256, b'x');
        assert!(Scanner::default().scan(&ok, ok.len()).unwrap().is_some());
        assert!(matches!(
            Scanner::default().scan(&ok, ok.len() - 1),
            Err(FramingError::TooLarge { .. })
        ));
        // Bytes over the limit without a complete packet.
        let many = vec![0x9f; 8];
        assert!(matches!(
            Scanner::default().scan(&many, 4),
            Err(FramingError::TooLarge { .. })
        ));
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

    #[test]
    fn encode_packet_writes_text_strings_and_shortest_numbers() {
        let msg = (
            "mon1",
            "n#p",
            5,
            -3,
            1.5,
            (),
            "☺",
            BTreeMap::from([("a", 1)]),
        );
        let mut out = BytesMut::new();
        encode_packet("", &msg, &mut out).unwrap();
        assert_eq!(
            out.as_ref(),
            hex("89 60 64 6d6f6e31 63 6e2370 05 22 fa3fc00000 f6 63 e298ba a1 61 61 01")
        );
        assert!(to_value(&out).unwrap().loose_eq(&example_value()));

        let mut out = BytesMut::new();
        let nums: (i32, u64, i64, f64, f64, Option<u8>, bool, &[u8]) =
            (24, 256, -25, 1.1, 1e300, None, false, b"\x01");
        encode_packet("p", &nums, &mut out).unwrap();
        assert_eq!(
            out.as_ref(),
            hex(concat!(
                "89 61 70 18 18 19 0100 38 18 fb 3ff199999999999a",
                " fb 7e37e43c8800759c f6 f4 81 01"
            ))
        );
    }

    #[test]
    fn encode_packet_refuses_non_sequences_and_keeps_out() {
        let mut out = BytesMut::from(&b"keep"[..]);
        for err in [
            encode_packet("x", &5, &mut out),
            encode_packet("x", &BTreeMap::from([("a", 1)]), &mut out),
            encode_packet("x", &"str", &mut out),
            encode_packet("x", &s("value"), &mut out),
        ] {
            assert!(matches!(err, Err(FramingError::Encode { .. })));
            assert_eq!(out.as_ref(), b"keep");
        }
        // An error from inside the sequence also leaves `out` as it was.
        assert!(encode_packet("x", &(1, u128::MAX), &mut out).is_err());
        assert_eq!(out.as_ref(), b"keep");
        encode_packet("x", &Value::Array(vec![Value::Int(1)]), &mut out).unwrap();
        assert_eq!(out.as_ref(), [&b"keep"[..], &hex("82 61 78 01")].concat());
    }

    /// Serialises as a sequence of unknown length.
    struct Unsized(u8);
    impl Serialize for Unsized {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq((0..self.0).filter(|_| true))
        }
    }

    /// Announces a wrong length.
    struct Liar {
        announced: usize,
        actual: usize,
    }
    impl Serialize for Liar {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(self.announced))?;
            for i in 0..self.actual {
                seq.serialize_element(&(i as u8))?;
            }
            seq.end()
        }
    }

    #[test]
    fn sequence_lengths_unknown_or_wrong() {
        let mut out = BytesMut::new();
        encode_packet("", &Unsized(2), &mut out).unwrap();
        assert_eq!(out.as_ref(), hex("9f 60 00 01 ff"));
        let mut out = BytesMut::new();
        encode_packet("", &(Unsized(1),), &mut out).unwrap();
        assert_eq!(out.as_ref(), hex("82 60 9f 00 ff"));

        for (announced, actual) in [(3, 30), (30, 3), (0, 0), (500, 24), (1, 300)] {
            let mut out = BytesMut::from(&b"x"[..]);
            encode_packet("", &(Liar { announced, actual }, 7), &mut out).unwrap();
            let want = Value::Array(vec![
                s(""),
                Value::Array((0..actual as i64).map(|i| Value::Int(i % 256)).collect()),
                Value::Int(7),
            ]);
            assert_eq!(to_value(&out[1..]).unwrap(), want, "{announced} {actual}");
            let mut out = BytesMut::new();
            encode_packet("", &Liar { announced, actual }, &mut out).unwrap();
            assert_eq!(
                to_value(&out).unwrap().as_array().unwrap().len(),
                actual + 1
            );
        }
    }

    #[test]
    fn encode_value_round_trips() {
        let v = Value::Array(vec![
            s("dest"),
            Value::Bytes(vec![0xff, 0]),
            Value::Float(0.1),
            Value::Float(-2.5),
            Value::Int(i64::MIN),
            Value::Bool(true),
            Value::Map(vec![("k".into(), Value::Array(vec![]))]),
        ]);
        let mut out = BytesMut::new();
        encode_value(&v, &mut out).unwrap();
        assert_eq!(to_value(&out).unwrap(), v);
        assert_eq!(dest(&out).unwrap(), "dest");
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
