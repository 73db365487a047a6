//! The json framing through the public API: streaming, captured Perl traffic, encoding.

use aemp::proto::framing::{
    DEFAULT_MAX_PACKET, Framing, FramingError, Packet, PacketDecoder, encode_packet, encode_value,
};
use aemp::proto::value::Value;
use bytes::BytesMut;
use proptest::prelude::*;
use serde::Serialize;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn decode_all(bytes: &[u8]) -> Vec<Packet> {
    let mut dec = PacketDecoder::new(Framing::Json, DEFAULT_MAX_PACKET);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(p) = dec.decode(&mut buf).unwrap() {
        out.push(p);
    }
    assert!(
        buf.iter().all(|b| b.is_ascii_whitespace()),
        "left over: {:?}",
        String::from_utf8_lossy(&buf)
    );
    out
}

/// Scalars that survive a JSON round trip exactly; `bytes` adds non-UTF-8 byte strings (which
/// come back as Latin-1 strings, equal only loosely).
fn arb_value(bytes: bool) -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("JSON has no NaN/Inf", |f| f.is_finite())
            .prop_map(Value::Float),
        "[\\[\\]{}\"\\\\ a-z☺\u{0}-\u{1f}]{0,12}".prop_map(Value::Str),
        ".{0,8}".prop_map(Value::Str),
    ];
    let leaf = if bytes {
        prop_oneof![
            5 => scalar,
            1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(|mut b| {
                b.push(0xff); // never UTF-8
                Value::Bytes(b)
            }),
        ]
        .boxed()
    } else {
        scalar.boxed()
    };
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec(("[a-z\"\\]]{0,3}", inner), 0..5).prop_map(Value::Map),
        ]
    })
}

/// A packet: `[]` (keepalive) or a string destination followed by arbitrary values.
fn arb_packet(bytes: bool) -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Array(vec![])),
        9 => (".{0,6}", proptest::collection::vec(arb_value(bytes), 0..5)).prop_map(|(d, rest)| {
            let mut items = vec![Value::Str(d)];
            items.extend(rest);
            Value::Array(items)
        }),
    ]
}

proptest! {
    #[test]
    fn packets_survive_any_chunking(
        packets in proptest::collection::vec((arb_packet(false), "[ \t\r\n]{0,3}"), 1..8),
        chunks in proptest::collection::vec(1usize..40, 1..20),
    ) {
        let mut wire = BytesMut::new();
        for (p, ws) in &packets {
            encode_value(Framing::Json, p, &mut wire).unwrap();
            wire.extend_from_slice(ws.as_bytes());
        }
        let mut dec = PacketDecoder::new(Framing::Json, DEFAULT_MAX_PACKET);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                got.push(p);
            }
        }
        prop_assert!(buf.iter().all(|b| b.is_ascii_whitespace()));
        prop_assert_eq!(got.len(), packets.len());
        for (p, (want, _)) in got.iter().zip(&packets) {
            prop_assert_eq!(&p.to_value().unwrap(), want);
            let dest = want.as_array().unwrap().first().and_then(|d| d.as_str());
            prop_assert_eq!(p.dest().unwrap(), dest.unwrap_or_default());
        }
    }

    #[test]
    fn byte_strings_come_back_loosely_equal(p in arb_packet(true)) {
        let mut wire = BytesMut::new();
        encode_value(Framing::Json, &p, &mut wire).unwrap();
        let got = decode_all(&wire);
        prop_assert_eq!(got.len(), 1);
        let back = got[0].to_value().unwrap();
        prop_assert!(back.loose_eq(&p), "{} vs {}", back, p);
    }

    #[test]
    fn typed_messages_encode_like_values(
        dest in ".{0,6}",
        a in any::<i64>(),
        b in ".{0,6}",
        c in proptest::option::of(any::<bool>()),
    ) {
        let mut typed = BytesMut::new();
        encode_packet(Framing::Json, &dest, &(a, &b, c), &mut typed).unwrap();
        let mut loose = BytesMut::new();
        let v = Value::Array(vec![
            Value::Str(dest.clone()),
            Value::Int(a),
            Value::Str(b.clone()),
            c.map_or(Value::Null, Value::Bool),
        ]);
        encode_value(Framing::Json, &v, &mut loose).unwrap();
        prop_assert_eq!(&typed[..], &loose[..]);
        let got = decode_all(&typed);
        let back: (String, i64, String, Option<bool>) = got[0].decode().unwrap();
        prop_assert_eq!(back, (dest, a, b, c));
    }
}

/// The `JSON [...]` lines of a transcript for one direction, parsed.
fn transcript_packets(transcript: &str, dir: &str) -> Vec<Value> {
    transcript
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_time, _conn, d, kind) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (d == dir && kind == "JSON").then(|| {
                let text = &l[l.find("JSON ").unwrap() + 5..];
                serde_json::from_str::<Value>(text).unwrap()
            })
        })
        .collect()
}

#[test]
fn captured_perl_traffic_decodes_like_the_transcript() {
    for capture in ["p0-echo", "p0-probe", "p1b-probe", "p2-probe-json"] {
        let dir = format!("{VECTORS}/captures/{capture}");
        let transcript = std::fs::read_to_string(format!("{dir}/transcript.txt")).unwrap();
        for (name, arrow) in [("c2s", ">"), ("s2c", "<")] {
            let raw = std::fs::read(format!("{dir}/conn0.{name}.bin")).unwrap();
            // Greeting, nonce and auth lines come first.
            let mut data = &raw[..];
            for _ in 0..3 {
                let nl = data.iter().position(|&b| b == b'\n').unwrap();
                data = &data[nl + 1..];
            }
            let want = transcript_packets(&transcript, arrow);
            assert!(!want.is_empty(), "{capture} {name}");

            // Whole, and byte by byte.
            let whole = decode_all(data);
            let mut dec = PacketDecoder::new(Framing::Json, DEFAULT_MAX_PACKET);
            let mut buf = BytesMut::new();
            let mut trickled = Vec::new();
            for &b in data {
                buf.extend_from_slice(&[b]);
                while let Some(p) = dec.decode(&mut buf).unwrap() {
                    trickled.push(p);
                }
            }
            assert_eq!(whole, trickled, "{capture} {name}");

            let got: Vec<Value> = whole.iter().map(|p| p.to_value().unwrap()).collect();
            assert_eq!(got, want, "{capture} {name}");
            for (p, v) in whole.iter().zip(&want) {
                let dest = v.as_array().unwrap().first().and_then(Value::as_str);
                assert_eq!(p.dest().unwrap(), dest.unwrap_or_default());
                // Perl's bytes are what we would send for the same value.
                let mut again = BytesMut::new();
                encode_value(Framing::Json, v, &mut again).unwrap();
                assert_eq!(&again[..], p.as_bytes(), "{capture} {name}");
            }
        }
    }
}

#[test]
fn one_mebibyte_packet_fed_byte_by_byte() {
    // Strings full of brackets and escapes, nested arrays: all the scanner's states.
    let chunk = Value::Array(vec![
        Value::Str("[{\"]}\\".repeat(20)),
        Value::Map(vec![("k]".into(), Value::Array(vec![Value::Int(1)]))]),
    ]);
    let mut one = BytesMut::new();
    encode_value(Framing::Json, &chunk, &mut one).unwrap();
    let mut items = vec![Value::Str("big".into())];
    items.extend(std::iter::repeat_n(chunk, (1 << 20) / one.len() + 1));
    let packet = Value::Array(items);
    let mut wire = BytesMut::new();
    encode_value(Framing::Json, &packet, &mut wire).unwrap();
    assert!(wire.len() > 1 << 20);
    wire.extend_from_slice(b" []");

    let mut dec = PacketDecoder::new(Framing::Json, 2 << 20);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in wire.iter() {
        buf.extend_from_slice(&[b]);
        if let Some(p) = dec.decode(&mut buf).unwrap() {
            got.push(p);
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].dest().unwrap(), "big");
    assert_eq!(got[0].to_value().unwrap(), packet);
    assert_eq!(got[1].as_bytes(), b"[]");

    // The same packet is refused by a smaller limit before its end arrives.
    let mut dec = PacketDecoder::new(Framing::Json, 1 << 19);
    let mut buf = BytesMut::from(&wire[..(1 << 19) + 1]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(FramingError::TooLarge { max, .. }) if max == 1 << 19
    ));
}

#[test]
fn encode_packet_shapes() {
    let mut out = BytesMut::new();
    encode_packet(Framing::Json, "port", &("tag", 1, "x"), &mut out).unwrap();
    assert_eq!(&out[..], br#"["port","tag",1,"x"]"#);

    out.clear();
    encode_packet(Framing::Json, "port", &Vec::<i32>::new(), &mut out).unwrap();
    assert_eq!(&out[..], br#"["port"]"#);

    #[derive(Serialize)]
    struct Tuple(&'static str, Option<u8>);
    out.clear();
    encode_packet(Framing::Json, "", &Tuple("kil", None), &mut out).unwrap();
    assert_eq!(&out[..], br#"["","kil",null]"#);

    #[derive(Serialize)]
    struct Named {
        tag: &'static str,
    }
    let mut out = BytesMut::from(&b"[]"[..]);
    for err in [
        encode_packet(Framing::Json, "port", &Named { tag: "x" }, &mut out),
        encode_packet(Framing::Json, "port", "a string", &mut out),
        encode_packet(Framing::Json, "port", &Value::Null, &mut out),
    ] {
        assert!(
            matches!(
                err,
                Err(FramingError::Encode {
                    framing: Framing::Json,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(&out[..], b"[]");
    }
    // A whole packet must be an array too.
    assert!(matches!(
        encode_value(Framing::Json, &Value::Str("x".into()), &mut out),
        Err(FramingError::Encode { .. })
    ));
    assert_eq!(&out[..], b"[]");
}

#[test]
fn floats_round_trip_exactly() {
    // serde_json's default float parser can be one ULP off on these; Perl's numbers must not be.
    for f in [
        1.5175414143864525e89,
        -7.538911497267213e96,
        1795667620.05692,
        0.1,
        5e-324,
        f64::MAX,
    ] {
        let v = Value::Array(vec![Value::Str("p".into()), Value::Float(f)]);
        let mut wire = BytesMut::new();
        encode_value(Framing::Json, &v, &mut wire).unwrap();
        assert_eq!(decode_all(&wire)[0].to_value().unwrap(), v, "{f:e}");
    }
}
