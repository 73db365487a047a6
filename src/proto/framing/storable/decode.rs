//! Images to values: a network-order Storable image into a [`Value`] (shared objects expanded
//! within a budget), its destination alone, or a serde type.

use std::borrow::Cow;

use serde::de::{DeserializeOwned, DeserializeSeed};

use super::{
    MAGIC_NETORDER, MAX_DEPTH, SHV_K_ISSV, SHV_K_UTF8, SHV_K_WASUTF8, SX_ARRAY, SX_BLESS,
    SX_BOOLEAN_FALSE, SX_BOOLEAN_TRUE, SX_BYTE, SX_DOUBLE, SX_FLAG_HASH, SX_HASH, SX_INTEGER,
    SX_IX_BLESS, SX_LSCALAR, SX_LUTF8STR, SX_LVSTRING, SX_NETINT, SX_OBJECT, SX_OVERLOAD, SX_REF,
    SX_SCALAR, SX_SV_NO, SX_SV_UNDEF, SX_SV_YES, SX_SVUNDEF_ELEM, SX_UNDEF, SX_UTF8STR, SX_VSTRING,
    SX_WEAKOVERLOAD, SX_WEAKREF, malformed, truncated,
};
use crate::proto::framing::{Framing, FramingError};
use crate::proto::value::Value;

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
    /// A builder over `nodes` with the budget for an image of `image`'s size.
    fn new(nodes: &'p [Node<'a>], image: &[u8]) -> Self {
        Builder {
            nodes,
            budget: image
                .len()
                .saturating_mul(2 * NODE_COST)
                .saturating_add(4096),
        }
    }

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
        let open = match self.resolve(tag)? {
            Node::Null | Node::Ref(_) => return Ok(Some(Value::Null)),
            Node::Bool(b) => return Ok(Some(Value::Bool(*b))),
            Node::Int(i) => return Ok(Some(Value::Int(*i))),
            Node::Float(f) => return Ok(Some(Value::Float(*f))),
            Node::Str(s) => {
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

    /// The object `tag` stands for, references followed, with its cost (and a string's bytes)
    /// spent.
    fn resolve(&mut self, tag: usize) -> Result<&'p Node<'a>, FramingError> {
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
        if let Node::Str(s) = node {
            self.spend(s.len())?;
        }
        Ok(node)
    }

    /// Succeeds exactly when [`Builder::build`] of `root` would: the same walk, spending the
    /// same budget and bounded by the same depth, with nothing built.
    fn check(&mut self, root: usize) -> Result<(), FramingError> {
        let mut stack: Vec<Walking<'p, 'a>> = Vec::new();
        let mut next = root;
        loop {
            let open = match self.resolve(next)? {
                Node::Array(items) => Some(Walking::Items(items.iter())),
                Node::Hash(entries) => Some(Walking::Entries(entries.iter())),
                _ => None,
            };
            if let Some(open) = open {
                if stack.len() >= MAX_DEPTH {
                    return Err(malformed("nested too deeply or cyclic"));
                }
                stack.push(open);
            }
            next = loop {
                let child = match stack.last_mut() {
                    None => return Ok(()),
                    Some(Walking::Items(rest)) => rest.next().copied(),
                    Some(Walking::Entries(rest)) => match rest.next() {
                        Some(&(k, _, v)) => {
                            self.spend(k.len())?;
                            Some(v)
                        }
                        None => None,
                    },
                };
                match child {
                    Some(child) => break child,
                    None => {
                        stack.pop();
                    }
                }
            };
        }
    }
}

/// A container being walked by [`Builder::check`]: the tags still to visit.
enum Walking<'p, 'a> {
    Items(std::slice::Iter<'p, usize>),
    Entries(std::slice::Iter<'p, (&'a [u8], KeyForm, usize)>),
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

/// Element 0 as a string. A reference there is no destination (Perl would look up the port
/// `SCALAR(0x…)`), although [`to_value`] reads references as their targets.
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
    // Element 0 as `start_item` reads it: a blessed or v-string scalar is its plain string.
    let len = loop {
        match p.u8()? {
            SX_SCALAR | SX_UTF8STR => break usize::from(p.u8()?),
            SX_LSCALAR | SX_LUTF8STR => break p.len32()?,
            SX_BLESS => {
                let len = p.small_or_large()?;
                p.take(len)?;
                p.classes += 1;
            }
            SX_IX_BLESS => {
                let ix = p.small_or_large()?;
                if ix >= p.classes {
                    return Err(malformed(format!("unknown class index {ix}")));
                }
            }
            SX_VSTRING => {
                let len = usize::from(p.u8()?);
                p.take(len)?;
            }
            SX_LVSTRING => {
                let len = p.len32()?;
                p.take(len)?;
            }
            _ => {
                return Err(FramingError::BadDestination {
                    framing: Framing::Storable,
                });
            }
        }
    };
    std::str::from_utf8(p.take(len)?)
        .map(Cow::Borrowed)
        .map_err(|_| malformed("destination is not UTF-8"))
}

pub(super) fn to_value(bytes: &[u8]) -> Result<Value, FramingError> {
    let (nodes, root) = read_image(bytes)?;
    Builder::new(&nodes, bytes).build(root)
}

/// Succeeds exactly when [`to_value`] does: the whole image is read and its expansion walked
/// within the same budget, but nothing is built.
pub(super) fn check(bytes: &[u8]) -> Result<(), FramingError> {
    let (nodes, root) = read_image(bytes)?;
    Builder::new(&nodes, bytes).check(root)
}

/// Element 1 of the packet as [`to_value`] gives it, failing exactly when that fails: the whole
/// image is read and its expansion walked within the same budget, but only element 1 is built.
pub(super) fn first_arg(bytes: &[u8]) -> Result<Option<Value>, FramingError> {
    let (nodes, root) = read_image(bytes)?;
    Builder::new(&nodes, bytes).check(root)?;
    let Some(Node::Array(items)) = nodes.get(root) else {
        return Err(FramingError::NotAnArray {
            framing: Framing::Storable,
        });
    };
    // Within budget as part of the whole, so within budget alone.
    items
        .get(1)
        .map(|&tag| Builder::new(&nodes, bytes).build(tag))
        .transpose()
}

/// Reads a whole image into its arena; returns the arena and the root's tag, an array.
fn read_image(bytes: &[u8]) -> Result<(Vec<Node<'_>>, usize), FramingError> {
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
    Ok((p.nodes, root))
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FramingError> {
    decode_seed(bytes, std::marker::PhantomData::<T>)
}

/// A complete image through a serde seed.
pub(super) fn decode_seed<S, T>(bytes: &[u8], seed: S) -> Result<T, FramingError>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    seed.deserialize(to_value(bytes)?)
        .map_err(|e| FramingError::Type {
            framing: Framing::Storable,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{EXAMPLE, hex, s};
    use super::*;

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
    fn first_arg_fails_exactly_when_the_whole_image_does() {
        // ["", "t", x]: root 0, "" 1, "t" 2, x from tag 3 on.
        let with = |x: &dyn Fn(&mut Vec<u8>)| {
            let mut image = hex("05 0b 02 00000003 0a00 0a0174");
            x(&mut image);
            image
        };
        let small = with(&|out| doubling(4, &mut 3, out));
        let bomb = with(&|out| doubling(60, &mut 3, out));
        let cyclic = with(&|out| out.extend(hex("04 02 00000001 04 00 00000004")));
        let deep = with(&|out| {
            out.extend(std::iter::repeat_n(SX_REF, MAX_DEPTH + 5));
            out.push(SX_UNDEF);
        });
        assert_eq!(first_arg(&small).unwrap(), Some(s("t")));
        for image in [&bomb, &cyclic, &deep] {
            assert!(to_value(image).is_err());
            assert!(first_arg(image).is_err());
        }
        // The walk that checks agrees with the build it stands for, object by object.
        for image in [&small, &bomb, &cyclic, &deep, &hex(EXAMPLE)[1..].to_vec()] {
            let (nodes, _) = read_image(image).unwrap();
            for tag in 0..nodes.len() {
                let built = Builder::new(&nodes, image).build(tag).is_ok();
                let checked = Builder::new(&nodes, image).check(tag).is_ok();
                assert_eq!(checked, built, "tag {tag}");
            }
        }
        // No element 1: `[""]`, `[]`.
        assert_eq!(first_arg(&hex("05 0b 02 00000001 0a00")).unwrap(), None);
        assert_eq!(first_arg(&hex("05 0b 02 00000000")).unwrap(), None);
        assert!(first_arg(&hex("05 0b 03 00000000")).is_err());
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

    /// Fuzz find (decode_storable): element 0 blessed (`SX_BLESS`, class dropped) decoded as
    /// its string in `to_value`, but `dest()` refused it as no destination.
    #[test]
    fn destination_behind_bless_and_vstring_prefixes_is_what_to_value_reads() {
        for image in [
            // Blessed into "" and into "C", then v-strings (short and long).
            "05 0b 02 00000002 11 00 0a 02 6869 0a 01 78",
            "05 0b 02 00000001 11 01 43 0a 02 6869",
            "05 0b 02 00000001 1d 02 6869 0a 02 6869",
            "05 0b 02 00000001 1e 00000002 6869 01 00000002 6869",
        ] {
            let bytes = hex(image);
            let Ok(Value::Array(items)) = to_value(&bytes) else {
                panic!("{image} does not decode");
            };
            let first = items.first().and_then(|v| v.as_str());
            assert_eq!(dest(&bytes).ok(), first, "{image}");
        }
        assert_eq!(
            dest(&hex("05 0b 02 00000001 11 00 0a 02 6869")).unwrap(),
            "hi"
        );
        // A reference to a string is no destination, though `to_value` reads its target.
        let by_ref = hex("05 0b 02 00000001 04 0a 02 6869");
        assert!(matches!(
            dest(&by_ref),
            Err(FramingError::BadDestination { .. })
        ));
        assert_eq!(
            to_value(&by_ref).unwrap(),
            Value::Array(vec![Value::Str("hi".into())])
        );
        // A class index no `SX_BLESS` introduced (none can come before element 0).
        assert!(matches!(
            dest(&hex("05 0b 02 00000001 12 00 0a 02 6869")),
            Err(FramingError::Malformed { .. })
        ));
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
}
