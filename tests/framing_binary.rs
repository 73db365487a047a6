//! The binary framings (cbor, storable) through the public API: real Perl captures, round trips
//! in arbitrary chunkings, cross-framing re-encoding and garbage input.

use std::path::PathBuf;

use aemp::proto::framing::{
    DEFAULT_MAX_PACKET, Framing, FramingError, Packet, PacketDecoder, encode_packet, encode_value,
};
use aemp::proto::value::Value;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn vectors() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
}

/// The `CBOR-bytes` lines of a transcript for one direction (`'>'` = c2s, `'<'` = s2c).
fn transcript_packets(capture: &str, dir: &str) -> Vec<Vec<u8>> {
    let path = vectors()
        .join("captures")
        .join(capture)
        .join("transcript.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, "0", d, "CBOR-bytes", hex] if *d == dir => Some(hex::decode(hex).unwrap()),
                _ => None,
            }
        })
        .collect()
}

/// The data-phase bytes of a raw capture: everything after greeting, nonce and auth line.
fn data_phase(capture: &str, file: &str) -> Vec<u8> {
    let path = vectors().join("captures").join(capture).join(file);
    let raw = std::fs::read(&path).unwrap();
    let mut rest = raw.as_slice();
    for _ in 0..3 {
        let lf = rest.iter().position(|&b| b == b'\n').unwrap();
        rest = &rest[lf + 1..];
    }
    rest.to_vec()
}

/// Feeds `bytes` to a decoder in chunks of the given sizes (cycled); returns the packets, which
/// must use up all the bytes.
fn feed(framing: Framing, bytes: &[u8], chunks: &[usize]) -> Result<Vec<Packet>, FramingError> {
    let (packets, left) = feed_partial(framing, bytes, chunks)?;
    assert_eq!(left, 0, "bytes left over");
    Ok(packets)
}

/// Like [`feed`], also returning how many bytes were left without a complete packet.
fn feed_partial(
    framing: Framing,
    bytes: &[u8],
    chunks: &[usize],
) -> Result<(Vec<Packet>, usize), FramingError> {
    let mut dec = PacketDecoder::new(framing, DEFAULT_MAX_PACKET);
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(p) = dec.decode(&mut buf)? {
            packets.push(p);
        }
    }
    Ok((packets, buf.len()))
}

fn reencoded(framing: Framing, v: &Value) -> Value {
    let mut out = BytesMut::new();
    encode_value(framing, v, &mut out).unwrap();
    let packets = feed(framing, &out, &[usize::MAX]).unwrap();
    assert_eq!(packets.len(), 1);
    packets[0].to_value().unwrap()
}

#[test]
fn perl_cbor_captures_cut_and_decode() {
    for capture in ["p2-probe-cbor", "p2-echo-cbor"] {
        for (file, dir) in [("conn0.c2s.bin", ">"), ("conn0.s2c.bin", "<")] {
            let want = transcript_packets(capture, dir);
            assert!(!want.is_empty(), "{capture} {dir}");
            let bytes = data_phase(capture, file);
            for chunks in [&[usize::MAX][..], &[1], &[7, 1, 3]] {
                let packets = feed(Framing::Cbor, &bytes, chunks).unwrap();
                let got: Vec<&[u8]> = packets.iter().map(|p| p.as_bytes()).collect();
                assert_eq!(got, want, "{capture} {file} {chunks:?}");
            }
            for p in feed(Framing::Cbor, &bytes, &[usize::MAX]).unwrap() {
                let v = p.to_value().unwrap();
                let items = v.as_array().unwrap();
                assert_eq!(Some(p.dest().unwrap()), items[0].as_str(), "{v:?}");
                for framing in Framing::ALL {
                    let back = reencoded(framing, &v);
                    assert!(back.loose_eq(&v), "{framing}: {v:?} -> {back:?}");
                }
            }
        }
    }
}

#[test]
fn perl_cbor_capture_values() {
    // ["L1Ir1lKmkb","time-reply",1795667640.52648] and ["","g_found","ref-v1-server",[...]]
    let packets = transcript_packets("p2-probe-cbor", "<");
    let p = Packet::from_bytes(Framing::Cbor, Bytes::from(packets[2].clone()));
    assert_eq!(p.dest().unwrap(), "L1Ir1lKmkb");
    let (_, tag, time): (String, String, f64) = p.decode().unwrap();
    assert_eq!(tag, "time-reply");
    assert!((time - 1795667640.52648).abs() < 1e-4);
    let p = Packet::from_bytes(Framing::Cbor, Bytes::from(packets[1].clone()));
    assert_eq!(
        p.args().unwrap(),
        vec![
            Value::Str("g_found".into()),
            Value::Str("ref-v1-server".into()),
            Value::Array(vec![Value::Str("127.0.0.1:47110".into())]),
        ]
    );
}

/// `image` with its (one-byte) storable length prefix.
fn prefixed(image: &str) -> Vec<u8> {
    let image = hex::decode(image.replace(' ', "")).unwrap();
    [vec![u8::try_from(image.len()).unwrap()], image].concat()
}

#[test]
fn malformed_packets_fail_the_decoder_in_every_framing() {
    let cbor = |h: &str| hex::decode(h.replace(' ', "")).unwrap();
    let cases: Vec<(Framing, Vec<u8>)> = vec![
        (Framing::Json, b"[1,]".to_vec()),
        (Framing::Json, b"[\"p\",\"a\x01b\"]".to_vec()),
        (Framing::Cbor, cbor("82 40 a1 81 01 02")), // a map key that is an array
        (Framing::Cbor, cbor("82 40 bf 41 6b ff")), // a map ending after a key
        (Framing::Cbor, cbor("82 40 5f 61 61 ff")), // a text chunk in a byte string
        (Framing::Storable, prefixed("05 0b 02 00000002 0a00 99")), // an unknown item type
        (Framing::Storable, prefixed("05 0b 02 00000002 0a00")), // an item short
        (Framing::Storable, prefixed("05 0b 02 00000001 0a00 05")), // a byte after the image
        (Framing::Storable, prefixed("04 0b 02 00000000")), // not network order
        (Framing::Storable, prefixed("05 0b 02 00000001 00 00000009")), // unknown back-reference
    ];
    for (framing, bad) in cases {
        // A good packet, then the bad one: the good one comes out, then the error, with the bad
        // bytes left where they were.
        let mut wire = BytesMut::new();
        encode_packet(framing, "p", &("ok",), &mut wire).unwrap();
        wire.extend_from_slice(&bad);
        let mut dec = PacketDecoder::new(framing, DEFAULT_MAX_PACKET);
        let good = dec.decode(&mut wire).unwrap().unwrap();
        assert_eq!(good.args().unwrap(), vec![Value::from("ok")]);
        let err = dec.decode(&mut wire).unwrap_err();
        assert!(
            matches!(err, FramingError::Malformed { .. }),
            "{framing} {bad:02x?}: {err:?}"
        );
        assert_eq!(&wire[..], &bad[..], "{framing}");
    }
}

#[test]
fn deep_nesting_needs_no_deep_call_stack() {
    // Decoding is iterative: 500 levels fit in a small thread stack even in a debug build.
    let run = || {
        let mut cbor = vec![0x81u8; 500];
        cbor.push(0x80);
        let p = &feed(Framing::Cbor, &cbor, &[3]).unwrap()[0];
        assert!(p.to_value().is_ok());
        let mut storable = vec![0x05, 0x0b];
        for _ in 0..500 {
            storable.extend([0x02, 0, 0, 0, 1, 0x04]);
        }
        storable.extend([0x02, 0, 0, 0, 0]);
        let p = Packet::from_bytes(Framing::Storable, Bytes::from(storable));
        assert!(p.to_value().is_ok());
    };
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-300i64..300).prop_map(Value::Int),
        (prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO)
            .prop_map(Value::Float),
        (-1e6f64..1e6).prop_map(Value::Float),
        ".{0,20}".prop_map(Value::Str),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        "[a-z]{250,300}".prop_map(Value::Str),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..6).prop_map(Value::Map),
        ]
    })
}

fn packet() -> impl Strategy<Value = Value> {
    (".{0,16}", prop::collection::vec(value(), 0..6)).prop_map(|(dest, mut args)| {
        args.insert(0, Value::Str(dest));
        Value::Array(args)
    })
}

fn same(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.loose_eq(y))
}

const BINARY: [Framing; 2] = [Framing::Cbor, Framing::Storable];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn back_to_back_packets_survive_any_chunking(
        packets in prop::collection::vec(packet(), 1..5),
        keepalive in any::<bool>(),
        chunks in prop::collection::vec(1usize..40, 1..8),
    ) {
        let mut packets = packets;
        if keepalive {
            packets.insert(1, Value::Array(vec![]));
        }
        for framing in BINARY {
            let mut out = BytesMut::new();
            for p in &packets {
                encode_value(framing, p, &mut out).unwrap();
            }
            let got = feed(framing, &out, &chunks).unwrap();
            let values: Vec<Value> = got.iter().map(|p| p.to_value().unwrap()).collect();
            prop_assert!(same(&values, &packets), "{framing}: {packets:?} -> {values:?}");
            for (p, v) in got.iter().zip(&packets) {
                let dest = v.as_array().unwrap().first().and_then(|d| d.as_str());
                prop_assert_eq!(p.dest().unwrap(), dest.unwrap_or_default());
            }
        }
    }

    #[test]
    fn reencoding_across_framings_is_loose_eq(p in packet()) {
        for first in Framing::ALL {
            for second in Framing::ALL {
                let once = reencoded(first, &p);
                let twice = reencoded(second, &once);
                prop_assert!(twice.loose_eq(&p), "{first}->{second}: {p:?} -> {twice:?}");
            }
        }
    }

    #[test]
    fn encode_packet_matches_encode_value(p in packet()) {
        let items = p.as_array().unwrap();
        let dest = items[0].as_str().unwrap();
        let args = items[1..].to_vec();
        for framing in Framing::ALL {
            let mut typed = BytesMut::new();
            encode_packet(framing, &dest, &args, &mut typed).unwrap();
            let mut loose = BytesMut::new();
            encode_value(framing, &p, &mut loose).unwrap();
            prop_assert_eq!(&typed, &loose, "{}", framing);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        for framing in BINARY {
            let _ = feed_partial(framing, &bytes, &[5]);
            let p = Packet::from_bytes(framing, Bytes::from(bytes.clone()));
            let _ = p.to_value();
            let _ = p.dest();
            let _ = p.args();
            let _ = p.decode::<(String, Vec<Value>)>();
            let _ = format!("{p:?}");
        }
    }

    #[test]
    fn damaged_packets_never_panic(
        p in packet(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for framing in BINARY {
            let mut out = BytesMut::new();
            encode_value(framing, &p, &mut out).unwrap();
            let mut bytes = out.to_vec();
            for (at, b) in &damage {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            // Whatever the decoder hands out reads as a value: damage fails it, not the reader.
            let mut dec = PacketDecoder::new(framing, DEFAULT_MAX_PACKET);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(p)) = dec.decode(&mut buf) {
                prop_assert!(p.to_value().is_ok(), "{}: {:?}", framing, p);
            }
            let _ = feed_partial(framing, &bytes, &[3, 11]);
            let skip = if framing == Framing::Storable { 1.min(bytes.len()) } else { 0 };
            let body = &bytes[skip..];
            let end = cut.index(body.len() + 1);
            for slice in [body, &body[..end]] {
                let p = Packet::from_bytes(framing, Bytes::copy_from_slice(slice));
                let _ = p.to_value();
                let _ = p.dest();
            }
        }
    }
}
