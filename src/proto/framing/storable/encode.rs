//! Values to images: a [`Value`] (or serde data, through [`value::to_value`]) written as a
//! network-order Storable image behind its length prefix.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::{
    MAGIC_NETORDER, MINOR, SHV_K_UTF8, SX_ARRAY, SX_BYTE, SX_FLAG_HASH, SX_HASH, SX_LSCALAR,
    SX_LUTF8STR, SX_NETINT, SX_REF, SX_SCALAR, SX_UNDEF, SX_UTF8STR, encode_error, write_ber,
};
use crate::proto::framing::FramingError;
use crate::proto::value::{self, Value};

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
fn float_text(f: f64) -> String {
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
    use super::super::tests::{MAX, hex, s};
    use super::super::{Scanner, dest, to_value};
    use super::*;
    use std::collections::BTreeMap;

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
