//! The `storable` framing: a BER-compressed length (Perl `pack "w"`) followed by
//! `Storable::nfreeze(\@packet)`.
//!
//! Only the network-order subset that plain data produces is understood: scalars, arrays, hashes,
//! references and back-references. Blessed objects are decoded as their unblessed contents (the
//! class name is skipped); tied data, code, regexps and hook-serialised objects are refused.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Frame, Framing, FramingError};
use crate::proto::value::{self, Value};

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

/// Incremental boundary finder. After it returns a frame, the caller removes `buf[..end]` and the
/// scanner must be ready for the bytes that followed.
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

/// How a hash key's bytes are to be read.
#[derive(Debug, Clone, Copy)]
enum KeyForm {
    /// No flags: UTF-8 if valid, else Latin-1 characters.
    Plain,
    /// `SHV_K_UTF8`: UTF-8.
    Utf8,
    /// `SHV_K_WASUTF8`: a character string downgraded to Latin-1.
    Latin1,
}

/// One stored object; its index in the arena is its Storable tag.
#[derive(Debug)]
enum Node<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a [u8]),
    Array(Vec<usize>),
    Hash(Vec<(&'a [u8], KeyForm, usize)>),
    Ref(usize),
}

/// Reads an image into an arena of tagged objects, so back-references are indices; the value tree
/// is built afterwards.
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    nodes: Vec<Node<'a>>,
    /// Class names seen by `SX_BLESS`, for `SX_IX_BLESS` indices.
    classes: usize,
}

impl<'a> Parser<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], FramingError> {
        let end = self.pos.checked_add(len).ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, FramingError> {
        let b = *self.buf.get(self.pos).ok_or_else(truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, FramingError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(b.try_into().map_err(|_| truncated())?))
    }

    fn len32(&mut self) -> Result<usize, FramingError> {
        usize::try_from(self.u32()?).map_err(|_| truncated())
    }

    fn u64(&mut self) -> Result<u64, FramingError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().map_err(|_| truncated())?))
    }

    /// A bless length or class index: one byte, or a flagged byte followed by 32 bits.
    fn small_or_large(&mut self) -> Result<usize, FramingError> {
        let b = self.u8()?;
        if b & 0x80 != 0 {
            self.len32()
        } else {
            Ok(usize::from(b))
        }
    }

    fn push(&mut self, node: Node<'a>) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// `n` capped by the bytes left (every item takes at least one).
    fn capacity(&self, n: usize) -> usize {
        n.min(self.remaining())
    }

    /// Reads the root item and everything in it; returns the root's tag. Iterative, with the
    /// open containers on a heap stack, so deep nesting costs no call stack.
    fn root(&mut self) -> Result<usize, FramingError> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            let Some(mut done) = self.start_item(&mut stack)? else {
                continue;
            };
            // Hand the finished object to its container, closing those that are complete.
            loop {
                match stack.last_mut() {
                    None => return Ok(done),
                    Some(Open::Ref { tag }) => {
                        let tag = *tag;
                        self.nodes[tag] = Node::Ref(done);
                        stack.pop();
                        done = tag;
                    }
                    Some(Open::Array { tag, items, left }) => {
                        items.push(done);
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        let (tag, items) = (*tag, std::mem::take(items));
                        self.nodes[tag] = Node::Array(items);
                        stack.pop();
                        done = tag;
                    }
                    Some(Open::Hash {
                        tag,
                        entries,
                        left,
                        flagged,
                    }) => {
                        // The key follows its value.
                        let form = if *flagged {
                            key_form(self.u8()?)?
                        } else {
                            KeyForm::Plain
                        };
                        let len = self.len32()?;
                        entries.push((self.take(len)?, form, done));
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        let (tag, entries) = (*tag, std::mem::take(entries));
                        self.nodes[tag] = Node::Hash(entries);
                        stack.pop();
                        done = tag;
                    }
                }
            }
        }
    }

    /// Reads the next item: the tag of a finished object, or `None` after opening a non-empty
    /// container or a reference (its contents come next).
    fn start_item(&mut self, stack: &mut Vec<Open>) -> Result<Option<usize>, FramingError> {
        let kind = self.u8()?;
        let open = match kind {
            SX_OBJECT => {
                let tag = self.len32()?;
                if tag >= self.nodes.len() {
                    return Err(malformed(format!("back-reference to unknown object {tag}")));
                }
                return Ok(Some(tag));
            }
            SX_ARRAY => {
                let n = self.len32()?;
                let tag = self.push(Node::Array(Vec::new()));
                if n == 0 {
                    return Ok(Some(tag));
                }
                Open::Array {
                    tag,
                    items: Vec::with_capacity(self.capacity(n)),
                    left: n,
                }
            }
            SX_HASH | SX_FLAG_HASH => {
                let flagged = kind == SX_FLAG_HASH;
                if flagged {
                    // Hash flags (restricted hash): irrelevant to the data.
                    self.u8()?;
                }
                let n = self.len32()?;
                let tag = self.push(Node::Hash(Vec::new()));
                if n == 0 {
                    return Ok(Some(tag));
                }
                Open::Hash {
                    tag,
                    // Each entry takes at least five bytes.
                    entries: Vec::with_capacity(self.capacity(n) / 5),
                    left: n,
                    flagged,
                }
            }
            SX_REF | SX_OVERLOAD | SX_WEAKREF | SX_WEAKOVERLOAD => {
                // The reference takes its tag before its target.
                Open::Ref {
                    tag: self.push(Node::Null),
                }
            }
            SX_BLESS => {
                // The class is dropped: the object that follows decodes as its plain contents.
                let len = self.small_or_large()?;
                self.take(len)?;
                self.classes += 1;
                return Ok(None);
            }
            SX_IX_BLESS => {
                let ix = self.small_or_large()?;
                if ix >= self.classes {
                    return Err(malformed(format!("unknown class index {ix}")));
                }
                return Ok(None);
            }
            SX_VSTRING | SX_LVSTRING => {
                // The v-string magic is dropped; the scalar that follows is the value.
                let len = if kind == SX_VSTRING {
                    usize::from(self.u8()?)
                } else {
                    self.len32()?
                };
                self.take(len)?;
                return Ok(None);
            }
            _ => {
                let node = self.scalar(kind)?;
                return Ok(Some(self.push(node)));
            }
        };
        // Nested arrays and hashes each come with a reference, so allow two entries per level.
        if stack.len() >= 2 * MAX_DEPTH {
            return Err(malformed("nested too deeply"));
        }
        stack.push(open);
        Ok(None)
    }

    /// The body of a scalar item of type `kind`.
    fn scalar(&mut self, kind: u8) -> Result<Node<'a>, FramingError> {
        Ok(match kind {
            SX_LSCALAR | SX_LUTF8STR => {
                let len = self.len32()?;
                Node::Str(self.take(len)?)
            }
            SX_SCALAR | SX_UTF8STR => {
                let len = usize::from(self.u8()?);
                Node::Str(self.take(len)?)
            }
            SX_UNDEF | SX_SV_UNDEF | SX_SVUNDEF_ELEM => Node::Null,
            SX_INTEGER => Node::Int(self.u64()? as i64),
            SX_DOUBLE => Node::Float(f64::from_bits(self.u64()?)),
            SX_BYTE => Node::Int(i64::from(self.u8()?) - 128),
            SX_NETINT => Node::Int(i64::from(self.u32()? as i32)),
            SX_SV_YES | SX_BOOLEAN_TRUE => Node::Bool(true),
            SX_SV_NO | SX_BOOLEAN_FALSE => Node::Bool(false),
            other => {
                return Err(malformed(format!(
                    "unsupported Storable item type 0x{other:02x}"
                )));
            }
        })
    }
}

/// A container or reference being read; `left` counts items (hash: entries) still to come.
enum Open<'a> {
    Array {
        tag: usize,
        items: Vec<usize>,
        left: usize,
    },
    Hash {
        tag: usize,
        entries: Vec<(&'a [u8], KeyForm, usize)>,
        left: usize,
        flagged: bool,
    },
    Ref {
        tag: usize,
    },
}

fn key_form(flags: u8) -> Result<KeyForm, FramingError> {
    if flags & SHV_K_ISSV != 0 {
        Err(malformed("hash key stored as a scalar is not supported"))
    } else if flags & SHV_K_UTF8 != 0 {
        Ok(KeyForm::Utf8)
    } else if flags & SHV_K_WASUTF8 != 0 {
        Ok(KeyForm::Latin1)
    } else {
        Ok(KeyForm::Plain)
    }
}

/// Builds the value tree from the arena, expanding shared objects. A budget proportional to the
/// image size stops a small image of back-references from expanding exponentially; a depth limit
/// stops cycles (which a `Value` cannot represent).
struct Builder<'p, 'a> {
    nodes: &'p [Node<'a>],
    budget: usize,
}

/// Cost of one built node on top of its string bytes.
const NODE_COST: usize = 16;

/// A container being built: its finished children and the tags still to build.
enum Building<'p, 'a> {
    Array {
        items: Vec<Value>,
        rest: std::slice::Iter<'p, usize>,
    },
    Map {
        entries: Vec<(String, Value)>,
        key: String,
        rest: std::slice::Iter<'p, (&'a [u8], KeyForm, usize)>,
    },
}

impl<'p, 'a> Builder<'p, 'a> {
    fn spend(&mut self, cost: usize) -> Result<(), FramingError> {
        self.budget = self
            .budget
            .checked_sub(cost)
            .ok_or_else(|| malformed("back-references expand too much"))?;
        Ok(())
    }

    fn build(&mut self, root: usize) -> Result<Value, FramingError> {
        let mut stack: Vec<Building<'p, 'a>> = Vec::new();
        let mut next = root;
        loop {
            let mut done = self.start(next, &mut stack)?;
            // Hand finished values up and find the next tag to build.
            loop {
                if let Some(v) = done.take() {
                    match stack.last_mut() {
                        None => return Ok(v),
                        Some(Building::Array { items, .. }) => items.push(v),
                        Some(Building::Map { entries, key, .. }) => {
                            entries.push((std::mem::take(key), v))
                        }
                    }
                }
                let child = match stack.last_mut() {
                    None => return Err(truncated()),
                    Some(Building::Array { rest, .. }) => rest.next().copied(),
                    Some(Building::Map { rest, key, .. }) => match rest.next() {
                        Some(&(k, form, v)) => {
                            self.spend(k.len())?;
                            *key = key_text(k, form);
                            Some(v)
                        }
                        None => None,
                    },
                };
                if let Some(child) = child {
                    next = child;
                    break;
                }
                done = stack.pop().map(|b| match b {
                    Building::Array { items, .. } => Value::Array(items),
                    Building::Map { entries, .. } => Value::Map(entries),
                });
            }
        }
    }

    /// Builds a scalar, or opens a container (returning `None`).
    fn start(
        &mut self,
        tag: usize,
        stack: &mut Vec<Building<'p, 'a>>,
    ) -> Result<Option<Value>, FramingError> {
        let nodes = self.nodes;
        let mut node = nodes.get(tag).ok_or_else(truncated)?;
        let mut hops = 0;
        while let Node::Ref(target) = node {
            hops += 1;
            if hops > MAX_DEPTH {
                return Err(malformed("references nested too deeply or cyclic"));
            }
            node = nodes.get(*target).ok_or_else(truncated)?;
        }
        self.spend(NODE_COST)?;
        let open = match node {
            Node::Null | Node::Ref(_) => return Ok(Some(Value::Null)),
            Node::Bool(b) => return Ok(Some(Value::Bool(*b))),
            Node::Int(i) => return Ok(Some(Value::Int(*i))),
            Node::Float(f) => return Ok(Some(Value::Float(*f))),
            Node::Str(s) => {
                self.spend(s.len())?;
                return Ok(Some(match std::str::from_utf8(s) {
                    Ok(s) => Value::Str(s.to_owned()),
                    Err(_) => Value::Bytes(s.to_vec()),
                }));
            }
            Node::Array(items) => Building::Array {
                items: Vec::with_capacity(items.len()),
                rest: items.iter(),
            },
            Node::Hash(entries) => Building::Map {
                entries: Vec::with_capacity(entries.len()),
                key: String::new(),
                rest: entries.iter(),
            },
        };
        if stack.len() >= MAX_DEPTH {
            return Err(malformed("nested too deeply or cyclic"));
        }
        stack.push(open);
        Ok(None)
    }
}

fn key_text(key: &[u8], form: KeyForm) -> String {
    match form {
        KeyForm::Latin1 => latin1(key),
        KeyForm::Utf8 | KeyForm::Plain => match std::str::from_utf8(key) {
            Ok(s) => s.to_owned(),
            Err(_) => latin1(key),
        },
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Checks the image header and returns the offset of the root item.
fn check_header(bytes: &[u8]) -> Result<usize, FramingError> {
    match bytes {
        [MAGIC_NETORDER, _minor, ..] => Ok(2),
        [_, _, ..] => Err(malformed("not a network-order Storable image")),
        _ => Err(truncated()),
    }
}

pub(super) fn dest(bytes: &[u8]) -> Result<Cow<'_, str>, FramingError> {
    let mut p = Parser {
        buf: bytes,
        pos: check_header(bytes)?,
        nodes: Vec::new(),
        classes: 0,
    };
    if p.u8()? != SX_ARRAY {
        return Err(FramingError::NotAnArray {
            framing: Framing::Storable,
        });
    }
    if p.u32()? == 0 {
        return Ok(Cow::Borrowed(""));
    }
    let len = match p.u8()? {
        SX_SCALAR | SX_UTF8STR => usize::from(p.u8()?),
        SX_LSCALAR | SX_LUTF8STR => p.len32()?,
        _ => {
            return Err(FramingError::BadDestination {
                framing: Framing::Storable,
            });
        }
    };
    std::str::from_utf8(p.take(len)?)
        .map(Cow::Borrowed)
        .map_err(|_| malformed("destination is not UTF-8"))
}

pub(super) fn to_value(bytes: &[u8]) -> Result<Value, FramingError> {
    let mut p = Parser {
        buf: bytes,
        pos: check_header(bytes)?,
        nodes: Vec::new(),
        classes: 0,
    };
    let root = p.root()?;
    if p.remaining() != 0 {
        return Err(malformed("bytes after the image"));
    }
    if !matches!(p.nodes.get(root), Some(Node::Array(_))) {
        return Err(FramingError::NotAnArray {
            framing: Framing::Storable,
        });
    }
    let mut builder = Builder {
        nodes: &p.nodes,
        budget: bytes
            .len()
            .saturating_mul(2 * NODE_COST)
            .saturating_add(4096),
    };
    builder.build(root)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FramingError> {
    value::from_value(to_value(bytes)?).map_err(|e| FramingError::Type {
        framing: Framing::Storable,
        reason: e.to_string(),
    })
}

pub(super) fn encode_packet<T: Serialize + ?Sized>(
    dest: &str,
    msg: &T,
    out: &mut BytesMut,
) -> Result<(), FramingError> {
    let items = match value::to_value(msg) {
        Ok(Value::Array(items)) => items,
        Ok(_) => return Err(encode_error("the message does not serialise to a sequence")),
        Err(e) => return Err(encode_error(e.to_string())),
    };
    let mut packet = Vec::with_capacity(items.len() + 1);
    packet.push(Value::Str(dest.to_owned()));
    packet.extend(items);
    encode_value(&Value::Array(packet), out)
}

pub(super) fn encode_value(v: &Value, out: &mut BytesMut) -> Result<(), FramingError> {
    let Value::Array(items) = v else {
        return Err(encode_error("a packet must be an array"));
    };
    let start = out.len();
    out.put_u8(MAGIC_NETORDER);
    out.put_u8(MINOR);
    if let Err(e) = write_array(out, items) {
        out.truncate(start);
        return Err(e);
    }
    // The prefix goes in front of the image, whose length is only known now.
    let image_len = out.len() - start;
    write_ber(out, image_len as u64);
    let prefix_len = out.len() - start - image_len;
    out[start..].rotate_right(prefix_len);
    Ok(())
}

fn write_len(out: &mut BytesMut, len: usize) -> Result<(), FramingError> {
    let len = u32::try_from(len).map_err(|_| encode_error("item longer than 4 GiB"))?;
    out.put_u32(len);
    Ok(())
}

/// A byte string: short or long scalar; `utf8` picks the UTF-8 flagged forms.
fn write_scalar(out: &mut BytesMut, s: &[u8], utf8: bool) -> Result<(), FramingError> {
    if let Ok(len) = u8::try_from(s.len()) {
        out.put_u8(if utf8 { SX_UTF8STR } else { SX_SCALAR });
        out.put_u8(len);
    } else {
        out.put_u8(if utf8 { SX_LUTF8STR } else { SX_LSCALAR });
        write_len(out, s.len())?;
    }
    out.put_slice(s);
    Ok(())
}

fn write_array(out: &mut BytesMut, items: &[Value]) -> Result<(), FramingError> {
    out.put_u8(SX_ARRAY);
    write_len(out, items.len())?;
    for item in items {
        write_item(out, item)?;
    }
    Ok(())
}

fn write_item(out: &mut BytesMut, v: &Value) -> Result<(), FramingError> {
    match v {
        Value::Null => out.put_u8(SX_UNDEF),
        // Perl's true is 1 and its false is the empty string.
        Value::Bool(true) => out.put_slice(&[SX_BYTE, 129]),
        Value::Bool(false) => out.put_slice(&[SX_SCALAR, 0]),
        Value::Int(i) => {
            if let Ok(b) = i8::try_from(*i) {
                out.put_u8(SX_BYTE);
                out.put_u8((i16::from(b) + 128) as u8);
            } else if let Ok(n) = i32::try_from(*i) {
                out.put_u8(SX_NETINT);
                out.put_i32(n);
            } else {
                // Network order keeps wider integers as decimal strings, as Perl does.
                write_scalar(out, i.to_string().as_bytes(), false)?;
            }
        }
        Value::Float(f) => write_scalar(out, float_text(*f).as_bytes(), false)?,
        Value::Str(s) => write_scalar(out, s.as_bytes(), !s.is_ascii())?,
        Value::Bytes(b) => write_scalar(out, b, false)?,
        Value::Array(items) => {
            out.put_u8(SX_REF);
            write_array(out, items)?;
        }
        Value::Map(entries) => {
            out.put_u8(SX_REF);
            let flagged = entries.iter().any(|(k, _)| !k.is_ascii());
            if flagged {
                out.put_u8(SX_FLAG_HASH);
                out.put_u8(0);
            } else {
                out.put_u8(SX_HASH);
            }
            write_len(out, entries.len())?;
            for (k, v) in entries {
                write_item(out, v)?;
                if flagged {
                    out.put_u8(if k.is_ascii() { 0 } else { SHV_K_UTF8 });
                }
                write_len(out, k.len())?;
                out.put_slice(k.as_bytes());
            }
        }
    }
    Ok(())
}

/// A float as the decimal text Perl numifies back to the same double (shortest round trip).
pub(super) fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Inf".into() } else { "-Inf".into() }
    } else if f == 0.0 || (1e-5..1e16).contains(&f.abs()) {
        format!("{f}")
    } else {
        format!("{f:e}")
    }
}

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

    /// AEMP-NOTES §1.11: `["","kil","p","die","oops"]` with its length prefix.
    const EXAMPLE: &str = "1c 05 0b 02 00000005 0a00 0a036b696c 0a0170 0a03646965 0a046f6f7073";

    fn example_value() -> Value {
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
        bytes.extend(hex("05 05 0b 02 00000000"));
        let mut scanner = Scanner::default();
        for n in 0..29 {
            assert_eq!(scanner.scan(&bytes[..n], MAX).unwrap(), None, "at {n}");
        }
        let frame = scanner.scan(&bytes, MAX).unwrap().unwrap();
        assert_eq!(frame.end, 29);
        let rest = &bytes[29..];
        let frame = scanner.scan(rest, MAX).unwrap().unwrap();
        assert_eq!(frame, Frame { start: 1, end: 6 });
        assert_eq!(dest(&rest[1..]).unwrap(), "");
        assert_eq!(to_value(&rest[1..]).unwrap(), Value::Array(vec![]));
    }

    #[test]
    fn scalar_forms() {
        let mut long = "x".repeat(300);
        let v = Value::Array(vec![
            s("dé"),
            Value::Int(-128),
            Value::Int(127),
            Value::Int(128),
            Value::Int(-2_147_483_648),
            Value::Int(4_294_967_296),
            Value::Float(1.5),
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Bytes(vec![0xff]),
            s(&long),
            s(&format!("☺{long}")),
        ]);
        let mut out = BytesMut::new();
        encode_value(&v, &mut out).unwrap();
        let frame = Scanner::default().scan(&out, MAX).unwrap().unwrap();
        let image = &out[frame.start..frame.end];
        let head = hex(concat!(
            "05 0b 02 0000000d 17 03 64c3a9 08 00 08 ff 09 00000080 09 80000000",
            " 0a 0a 34323934393637323936 0a 03 312e35 05 08 81 0a 00 0a 01 ff 01 0000012c"
        ));
        assert_eq!(&image[..head.len()], head);
        let decoded = to_value(image).unwrap();
        assert!(decoded.loose_eq(&v), "{decoded:?}");
        assert_eq!(dest(image).unwrap(), "dé");
        long.insert(0, '☺');
        assert_eq!(decoded.as_array().unwrap()[12], s(&long));
        assert_eq!(decoded.as_array().unwrap()[5], s("4294967296"));
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

    #[test]
    fn hash_key_flags() {
        // ["", {"é" (UTF-8 flagged), "é" (was UTF-8, Latin-1 now), "\xff" (plain bytes)}]
        let image = hex(concat!(
            "05 0b 02 00000002 0a 00 04 19 00 00000003",
            " 08 81 01 00000002 c3a9",
            " 08 82 02 00000001 e9",
            " 08 83 00 00000001 ff"
        ));
        assert_eq!(
            to_value(&image).unwrap(),
            Value::Array(vec![
                s(""),
                Value::Map(vec![
                    ("é".into(), Value::Int(1)),
                    ("é".into(), Value::Int(2)),
                    ("\u{ff}".into(), Value::Int(3)),
                ])
            ])
        );
        // A key stored as a scalar is refused.
        let image = hex("05 0b 02 00000001 04 19 00 00000001 05 08 0a 01 6b");
        assert!(matches!(
            to_value(&image),
            Err(FramingError::Malformed { .. })
        ));
    }

    #[test]
    fn back_references_follow_storable_tag_numbering() {
        // my $a = [1]; nfreeze(["", $a, $a]): root 0, "" 1, ref 2, array 3, 1 → 4, ref 5 → obj 3.
        let image = hex("05 0b 02 00000003 0a00 04 02 00000001 08 81 04 00 00000003");
        let inner = Value::Array(vec![Value::Int(1)]);
        assert_eq!(
            to_value(&image).unwrap(),
            Value::Array(vec![s(""), inner.clone(), inner])
        );
        // A back-reference to a scalar (tag 1, the "" string).
        let image = hex("05 0b 02 00000002 0a01 78 04 00 00000001");
        assert_eq!(
            to_value(&image).unwrap(),
            Value::Array(vec![s("x"), s("x")])
        );
        // Unknown tag.
        let image = hex("05 0b 02 00000002 0a00 00 00000005");
        assert!(to_value(&image).is_err());
        // An array holding a reference to itself cannot be a Value.
        let image = hex("05 0b 02 00000002 0a00 04 00 00000000");
        assert!(matches!(
            to_value(&image),
            Err(FramingError::Malformed { .. })
        ));
    }

    /// Level `k` of a structure in which each array holds two references to the next level.
    fn doubling(levels: usize, next_tag: &mut u32, out: &mut Vec<u8>) {
        let my_tag = *next_tag;
        *next_tag += 1;
        if levels == 0 {
            out.extend(hex("02 00000000"));
            return;
        }
        out.extend(hex("02 00000002 04"));
        *next_tag += 1; // the first reference
        let child = *next_tag;
        doubling(levels - 1, next_tag, out);
        out.push(SX_REF);
        *next_tag += 1; // the second reference
        out.push(SX_OBJECT);
        out.extend(child.to_be_bytes());
        let _ = my_tag;
    }

    #[test]
    fn shared_structures_expand_within_a_budget() {
        let mut small = hex("05 0b");
        doubling(4, &mut 0, &mut small);
        let v = to_value(&small).unwrap();
        fn leaves(v: &Value) -> usize {
            match v {
                Value::Array(a) if a.is_empty() => 1,
                Value::Array(a) => a.iter().map(leaves).sum(),
                _ => 0,
            }
        }
        assert_eq!(leaves(&v), 16);

        let mut bomb = hex("05 0b");
        doubling(60, &mut 0, &mut bomb);
        assert!(bomb.len() < 1000);
        assert!(matches!(
            to_value(&bomb),
            Err(FramingError::Malformed { .. })
        ));
    }

    #[test]
    fn blessed_and_other_items() {
        // ["", bless({a=>1}, "C"), bless([], "C") by index, \"s", yes, no, sv_undef, 1e9 as
        // SX_INTEGER, 0.5 as SX_DOUBLE]
        let image = hex(concat!(
            "05 0b 02 00000009 0a00",
            " 04 11 01 43 03 00000001 08 81 00000001 61",
            " 04 12 00 02 00000000",
            " 04 0a 01 73",
            " 0f 10 0e",
            " 06 000000003b9aca00",
            " 07 3fe0000000000000"
        ));
        assert_eq!(
            to_value(&image).unwrap(),
            Value::Array(vec![
                s(""),
                Value::Map(vec![("a".into(), Value::Int(1))]),
                Value::Array(vec![]),
                s("s"),
                Value::Bool(true),
                Value::Bool(false),
                Value::Null,
                Value::Int(1_000_000_000),
                Value::Float(0.5),
            ])
        );
        // Class index never defined; tied array; code; hook.
        for bad in [
            "05 0b 02 00000001 12 00 05",
            "05 0b 02 00000001 0b 02 00000000",
            "05 0b 02 00000001 1a 0a 00",
            "05 0b 02 00000001 13 00",
        ] {
            assert!(
                matches!(to_value(&hex(bad)), Err(FramingError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_destination_and_shape_errors() {
        // Native byte order, a hash at the root, junk after the root.
        assert!(matches!(
            to_value(&hex("04 0b 02 00000000")),
            Err(FramingError::Malformed { .. })
        ));
        assert!(matches!(
            to_value(&hex("05 0b 03 00000000")),
            Err(FramingError::NotAnArray { .. })
        ));
        assert!(matches!(
            dest(&hex("05 0b 03 00000000")),
            Err(FramingError::NotAnArray { .. })
        ));
        assert!(to_value(&hex("05 0b 02 00000000 05")).is_err());
        assert!(matches!(
            dest(&hex("05 0b 02 00000001 08 81")),
            Err(FramingError::BadDestination { .. })
        ));
        assert!(matches!(
            dest(&hex("05 0b 02 00000001 0a 01 ff")),
            Err(FramingError::Malformed { .. })
        ));
        assert_eq!(
            dest(&hex("05 0a 02 00000001 01 00000002 6869")).unwrap(),
            "hi"
        );
    }

    #[test]
    fn truncated_and_hostile_lengths_never_panic() {
        let bytes = hex(EXAMPLE);
        let image = &bytes[1..];
        for n in 0..image.len() {
            assert!(to_value(&image[..n]).is_err(), "prefix {n}");
            let _ = dest(&image[..n]);
        }
        for bad in [
            "05 0b 02 ffffffff",
            "05 0b 02 00000001 01 ffffffff",
            "05 0b 02 00000001 04 03 ffffffff",
        ] {
            assert!(to_value(&hex(bad)).is_err(), "{bad}");
        }
        let mut deep = hex("05 0b 02 00000001");
        deep.extend(std::iter::repeat_n(SX_REF, MAX_DEPTH + 5));
        deep.push(SX_UNDEF);
        assert!(to_value(&deep).is_err());
    }

    #[test]
    fn encode_packet_refuses_non_sequences() {
        let mut out = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            encode_packet("x", &BTreeMap::from([("a", 1)]), &mut out),
            Err(FramingError::Encode { .. })
        ));
        assert!(matches!(
            encode_packet("x", &7, &mut out),
            Err(FramingError::Encode { .. })
        ));
        assert_eq!(out.as_ref(), b"keep");
    }

    #[test]
    fn float_text_round_trips() {
        for f in [
            0.1,
            1.5,
            -2.0,
            1e300,
            1e-300,
            123456789.125,
            5e-324,
            f64::MAX,
            1e16,
        ] {
            assert_eq!(float_text(f).parse::<f64>().unwrap(), f, "{f}");
        }
        assert_eq!(float_text(3.0), "3");
        assert_eq!(float_text(f64::NEG_INFINITY), "-Inf");
    }
}
