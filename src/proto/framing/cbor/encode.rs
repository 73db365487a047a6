//! Values to bytes: the serde serializer that writes a packet straight into the output buffer,
//! and the encoder for a [`Value`].

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::ser::{self, Impossible};

use super::{
    AI_INDEFINITE, BREAK, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGINT, MAJOR_TEXT, MAJOR_UINT,
};
use crate::proto::framing::{Framing, FramingError};
use crate::proto::value::Value;

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
    use super::super::tests::{example_value, hex, s};
    use super::super::{dest, to_value};
    use super::*;
    use std::collections::BTreeMap;

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
}
