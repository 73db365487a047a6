//! Shared drivers for the aemp fuzz targets.
//!
//! Every driver only uses the crate's public API and panics (on purpose) only when an invariant
//! the crate promises is broken; any other panic comes from the crate itself.

use aemp::proto::auth::AuthMethod;
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{DEFAULT_MAX_PACKET, Framing, Packet, PacketDecoder, encode_value};
use aemp::proto::greeting::Nonce;
use aemp::proto::handshake::{Event, Handshake, HandshakeConfig};
use aemp::proto::node_request::NodeRequest;
use aemp::proto::value::Value;
use bytes::BytesMut;

pub mod data_phase;
pub mod seeds;

/// The largest packet the decode targets accept: small, so length checks are reachable.
pub const FUZZ_MAX_PACKET: usize = 64 * 1024;

/// Our node id in the handshake targets.
pub const NODE_ID: &str = "fuzz";

/// The shared secret of the handshake targets; `cleartext;<hex of it>` is the only auth line a
/// fuzzer can be expected to get accepted (the targets' handshakes allow `cleartext` for that).
pub const SECRET: &[u8] = b"secret";

/// A fixed nonce, so that a crashing input replays identically.
pub const OUR_NONCE: &str =
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BB";

/// A handshake for `dialect` with a deterministic nonce and an immediate greeting. It allows
/// `cleartext` (off by default), so that fuzz input can reach the data phase.
pub fn new_handshake(dialect: Dialect) -> Handshake {
    let mut cfg = HandshakeConfig::new(NODE_ID, SECRET.to_vec(), dialect);
    cfg.allow_cleartext = true;
    let nonce = Nonce::from_line(OUR_NONCE).expect("fixed nonce has no line break");
    Handshake::with_nonce(cfg, nonce).expect("handshake with a fixed nonce starts")
}

/// What became of a handshake fed with fuzz input.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting for bytes.
    Pending,
    /// Refused the peer.
    Failed,
    /// Reached the data phase, the peer having authenticated with this method.
    Established(AuthMethod),
}

/// Feeds `data` to `hs` in pieces of `chunk` bytes (0: all at once), answering every
/// `PeerGreeting` with `accept_peer(None)`.
pub fn drive_handshake(hs: &mut Handshake, data: &[u8], chunk: usize) -> Outcome {
    let size = if chunk == 0 { data.len().max(1) } else { chunk };
    for piece in data.chunks(size) {
        if hs.feed(piece).is_err() {
            assert!(
                hs.feed(b"x").is_err(),
                "a failed handshake accepted more bytes"
            );
            return Outcome::Failed;
        }
        match drain_events(hs) {
            Outcome::Pending => {}
            done => return done,
        }
        // Output is not ours to read, but must not pile up.
        let _ = hs.take_output();
    }
    Outcome::Pending
}

fn drain_events(hs: &mut Handshake) -> Outcome {
    while let Some(ev) = hs.poll_event() {
        match ev {
            Event::PeerGreeting(p) => {
                assert_ne!(p.node_id(), NODE_ID, "a peer with our node id got through");
                if hs.accept_peer(None).is_err() {
                    return Outcome::Failed;
                }
            }
            Event::StartTls(_) => panic!("StartTls without TLS configured"),
            Event::Established(est) => {
                assert!(hs.is_established());
                let method = est.peer_auth();
                // Forging an HMAC is out of a fuzzer's reach: only cleartext can get through.
                assert_eq!(
                    method,
                    AuthMethod::Cleartext,
                    "peer authenticated without knowing the secret"
                );
                assert!(
                    hs.feed(b"x").is_err(),
                    "a finished handshake accepted more bytes"
                );
                return Outcome::Established(method);
            }
        }
    }
    Outcome::Pending
}

/// The peer's greeting lines (line 1 and nonce, LF-terminated) that the `auth_line` target
/// feeds before its input, valid for our handshake in `dialect`.
pub fn peer_greeting(dialect: Dialect) -> &'static [u8] {
    match dialect {
        Dialect::P2 => {
            b"aemp;1;peer;tls_sha3_512,hmac_sha3_512,tls_anon,cleartext;cbor,json,storable;\
provider=AE-2.01;mproto=1;gproto=1;peeraddr=127.0.0.1:4040\n\
ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTBmZWRjYmE5ODc2NTQzMjEwZmVkY2JhOTg3NjU0MzIxMGZl\n"
        }
        _ => {
            b"aemp;0;peer;tls_md6_64_256,hmac_md6_64_256,tls_anon,cleartext;json,storable;\
provider=AE-1.0;timeout=12;peeraddr=127.0.0.1:4040\n\
ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTBmZWRjYmE5ODc2NTQzMjEwZmVkY2JhOTg3NjU0MzIxMGZl\n"
        }
    }
}

/// Decodes `data` as a stream of packets in `framing` twice — in one piece and in pieces of
/// `chunk` bytes — checks that both see the same packets, and checks every packet.
pub fn decode_stream(framing: Framing, data: &[u8], chunk: usize) {
    let whole = decode_all(framing, data, data.len().max(1));
    let pieces = decode_all(framing, data, chunk.max(1));
    assert_eq!(
        whole, pieces,
        "{framing}: chunked decoding disagrees with decoding in one piece"
    );
    for p in &whole.0 {
        check_packet(p);
    }
}

/// The packets found (up to the first error) and whether decoding stopped on an error.
fn decode_all(framing: Framing, data: &[u8], chunk: usize) -> (Vec<Packet>, bool) {
    let mut dec = PacketDecoder::new(framing, FUZZ_MAX_PACKET);
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => {
                    assert!(p.as_bytes().len() <= FUZZ_MAX_PACKET, "oversized packet");
                    packets.push(p);
                }
                Ok(None) => break,
                // A transport drops the link on a framing error.
                Err(_) => return (packets, true),
            }
        }
    }
    (packets, false)
}

/// Reads a packet every way there is and re-encodes what it holds.
pub fn check_packet(p: &Packet) {
    let framing = p.framing();
    let dest = p.dest();
    let value = p.to_value();
    let args = p.args();
    let typed = p.decode::<Value>();
    let _ = format!("{p:?}");
    let Ok(value) = value else {
        assert!(args.is_err(), "args() succeeded where to_value() failed");
        return;
    };
    let Value::Array(items) = &value else {
        panic!("{framing}: to_value() returned a non-array: {value:?}");
    };
    if let Ok(args) = &args {
        let rest = items.get(1..).unwrap_or_default();
        assert!(
            identical(args, rest),
            "{framing}: args() = {args:?}, to_value() has {rest:?}"
        );
    }
    match items.first() {
        None => assert_eq!(dest.as_deref(), Ok(""), "{framing}: dest of []"),
        // `to_value()` reads a storable reference as its target; `dest()` takes no reference.
        Some(Value::Str(_)) if framing == Framing::Storable && storable_dest_is_a_reference(p) => {
            assert!(dest.is_err(), "storable: dest() took a reference: {dest:?}");
        }
        Some(Value::Str(s)) => assert_eq!(
            dest.as_deref(),
            Ok(s.as_str()),
            "{framing}: dest() disagrees with element 0"
        ),
        Some(_) => {}
    }
    // Any packet's arguments may reach the node port: parsing them must not panic, whatever
    // the dialect.
    if let Ok(args) = &args {
        for dialect in Dialect::ALL {
            let _ = NodeRequest::parse(dialect, args.clone());
        }
    }
    if let Ok(typed) = &typed
        && !has_nan(&value)
    {
        assert!(
            typed.loose_eq(&value),
            "{framing}: decode::<Value>() = {typed:?}, to_value() = {value:?}"
        );
    }
    typed_reads_agree(p, &value);
    reencode(framing, &value);
}

/// Typed decoding (each framing's own path, JSON's strict-then-loose one) gives what the loose
/// conversion of the packet's value gives: the same value, or an error on both sides.
fn typed_reads_agree(p: &Packet, value: &Value) {
    fn agree<T: serde::de::DeserializeOwned + std::fmt::Debug>(p: &Packet, value: &Value) {
        let direct = p.decode::<T>();
        let via_value = aemp::proto::value::from_value::<T>(value.clone());
        let same = match (&direct, &via_value) {
            (Ok(a), Ok(b)) => format!("{a:?}") == format!("{b:?}"),
            (Err(_), Err(_)) => true,
            _ => false,
        };
        assert!(
            same,
            "{}: decode::<{}>() = {direct:?}, from the value {via_value:?}",
            p.framing(),
            std::any::type_name::<T>()
        );
    }
    agree::<(String, String, u64, String)>(p, value);
    agree::<(String, Vec<i64>)>(p, value);
    agree::<Vec<String>>(p, value);
    agree::<Vec<Option<bool>>>(p, value);
    agree::<Vec<f64>>(p, value);
    agree::<(String, std::collections::BTreeMap<String, u32>)>(p, value);
}

/// Whether element 0 of a storable packet is a reference (behind any bless or v-string
/// prefixes): the image is `05 <minor> 02 <u32 count>`, then element 0.
fn storable_dest_is_a_reference(p: &Packet) -> bool {
    const REFS: [u8; 4] = [0x04, 0x14, 0x1b, 0x1c]; // SX_REF, SX_OVERLOAD, SX_WEAKREF, SX_WEAKOVERLOAD
    let bytes = p.as_bytes();
    let mut at = 7;
    loop {
        let Some(&kind) = bytes.get(at) else {
            return false;
        };
        let skip = match kind {
            k if REFS.contains(&k) => return true,
            // SX_BLESS and SX_IX_BLESS: a length (or index) byte, or 0x80 and a u32.
            0x11 | 0x12 => {
                let Some(&b) = bytes.get(at + 1) else {
                    return false;
                };
                let (len, width) = if b & 0x80 == 0 {
                    (usize::from(b), 1)
                } else {
                    match bytes.get(at + 2..at + 6) {
                        Some(n) => (u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize, 5),
                        None => return false,
                    }
                };
                1 + width + if kind == 0x11 { len } else { 0 }
            }
            // SX_VSTRING (u8 length) and SX_LVSTRING (u32 length).
            0x1d => 2 + usize::from(bytes.get(at + 1).copied().unwrap_or(0)),
            0x1e => match bytes.get(at + 1..at + 5) {
                Some(n) => 5 + u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize,
                None => return false,
            },
            _ => return false,
        };
        at = at.saturating_add(skip);
    }
}

fn reencode(framing: Framing, value: &Value) {
    let mut out = BytesMut::new();
    match encode_value(framing, value, &mut out) {
        Ok(()) => {}
        // JSON has no NaN or infinities; other refusals are worth a look.
        Err(_) if has_non_finite(value) => return,
        Err(e) => panic!("{framing}: cannot re-encode a decoded packet {value:?}: {e}"),
    }
    let mut dec = PacketDecoder::new(framing, DEFAULT_MAX_PACKET);
    let again = match dec.decode(&mut out) {
        Ok(Some(p)) => p,
        other => panic!("{framing}: re-encoded packet does not decode: {other:?}"),
    };
    assert!(
        out.is_empty(),
        "{framing}: re-encoded packet left {} bytes",
        out.len()
    );
    let back = again
        .to_value()
        .unwrap_or_else(|e| panic!("{framing}: re-encoded packet unreadable: {e}"));
    if !has_nan(value) {
        assert!(
            back.loose_eq(value),
            "{framing}: round trip changed {value:?} into {back:?}"
        );
    }
}

/// Structural equality with floats compared bit for bit: `Value`'s `==` is f64's, under which a
/// NaN differs from itself.
fn identical(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::Array(x), Value::Array(y)) => identical(x, y),
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|((kx, vx), (ky, vy))| {
                        kx == ky && identical(std::slice::from_ref(vx), std::slice::from_ref(vy))
                    })
            }
            (x, y) => x == y,
        })
}

fn any_float(v: &Value, pred: &impl Fn(f64) -> bool) -> bool {
    match v {
        Value::Float(f) => pred(*f),
        Value::Array(a) => a.iter().any(|x| any_float(x, pred)),
        Value::Map(m) => m.iter().any(|(_, x)| any_float(x, pred)),
        _ => false,
    }
}

fn has_nan(v: &Value) -> bool {
    any_float(v, &|f: f64| f.is_nan())
}

fn has_non_finite(v: &Value) -> bool {
    any_float(v, &|f: f64| !f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aemp::proto::framing::encode_packet;

    /// `cleartext;<hex of SECRET>;<framing>` with a line feed.
    fn cleartext_line(framing: &str) -> Vec<u8> {
        format!("cleartext;736563726574;{framing}\n").into_bytes()
    }

    #[test]
    fn handshake_driver_reaches_the_data_phase_in_any_chunking() {
        for (dialect, framing) in [(Dialect::P0, "json"), (Dialect::P2, "cbor")] {
            let mut peer = peer_greeting(dialect).to_vec();
            peer.extend_from_slice(&cleartext_line(framing));
            for chunk in [0, 1, 7, 300] {
                let mut hs = new_handshake(dialect);
                assert_eq!(
                    drive_handshake(&mut hs, &peer, chunk),
                    Outcome::Established(AuthMethod::Cleartext),
                    "{dialect} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn auth_line_driver_refuses_a_wrong_token() {
        for dialect in [Dialect::P0, Dialect::P2] {
            let mut hs = new_handshake(dialect);
            assert_eq!(
                drive_handshake(&mut hs, peer_greeting(dialect), 0),
                Outcome::Pending
            );
            let wrong = b"cleartext;736563726575;json\n";
            assert_eq!(drive_handshake(&mut hs, wrong, 0), Outcome::Failed);
        }
    }

    #[test]
    fn without_allow_cleartext_the_right_secret_is_refused() {
        for (dialect, framing) in [(Dialect::P0, "json"), (Dialect::P2, "cbor")] {
            let cfg = HandshakeConfig::new(NODE_ID, SECRET.to_vec(), dialect);
            let nonce = Nonce::from_line(OUR_NONCE).unwrap();
            let mut hs = Handshake::with_nonce(cfg, nonce).unwrap();
            let mut peer = peer_greeting(dialect).to_vec();
            peer.extend_from_slice(&cleartext_line(framing));
            assert_eq!(drive_handshake(&mut hs, &peer, 0), Outcome::Failed);
        }
    }

    #[test]
    fn our_node_id_is_refused() {
        let mut hs = new_handshake(Dialect::P0);
        let line = b"aemp;0;fuzz;cleartext;json\nnonce\n";
        assert_eq!(drive_handshake(&mut hs, line, 0), Outcome::Failed);
    }

    /// Fuzz find (decode_cbor): `["", NaN]` made the args check fail, NaN != NaN.
    #[test]
    fn cbor_nan_argument_passes_the_args_check() {
        let wire = b"\x82\x40\xfb\xff\xff\xff\x00\x00\x00\x00\x65";
        let (packets, _) = decode_all(Framing::Cbor, wire, wire.len());
        let args = packets[0].args().unwrap();
        assert!(matches!(args.as_slice(), [Value::Float(f)] if f.is_nan()));
        decode_stream(Framing::Cbor, wire, 1);
        let nan = [Value::Float(f64::NAN)];
        assert!(identical(&nan, &nan));
        assert!(!identical(&nan, &[Value::Float(-f64::NAN)]));
        assert!(!identical(&[Value::Float(0.0)], &[Value::Float(-0.0)]));
        let m = |v| [Value::Map(vec![("k".into(), Value::Array(vec![v]))])];
        assert!(identical(
            &m(Value::Float(f64::NAN)),
            &m(Value::Float(f64::NAN))
        ));
        assert!(!identical(&m(Value::Int(1)), &m(Value::Int(2))));
    }

    /// Fuzz find (decode_storable): element 0 blessed into "" (`SX_BLESS`) read as a string by
    /// `to_value()` but refused by `dest()`.
    #[test]
    fn storable_blessed_destination_agrees_with_to_value() {
        // BER length 13, then the image ["hi"] with "hi" blessed into "".
        let wire = b"\x0d\x05\x0b\x02\x00\x00\x00\x01\x11\x00\x0a\x02hi";
        let (packets, failed) = decode_all(Framing::Storable, wire, wire.len());
        assert_eq!((packets.len(), failed), (1, false));
        assert_eq!(packets[0].dest().as_deref(), Ok("hi"));
        decode_stream(Framing::Storable, wire, 1);
    }

    /// Fuzz find (decode_storable, the rerun): element 0 a reference to `""`, which
    /// `to_value()` reads as `""` and `dest()` (rightly) refuses.
    #[test]
    fn storable_reference_destination_is_refused_and_the_check_knows() {
        // BER length 13, then the image [\"", "g"].
        let wire = b"\x0d\x05\x0b\x02\x00\x00\x00\x02\x04\x0a\x00\x0a\x01g";
        let (packets, failed) = decode_all(Framing::Storable, wire, wire.len());
        assert_eq!((packets.len(), failed), (1, false));
        assert!(storable_dest_is_a_reference(&packets[0]));
        assert!(packets[0].dest().is_err());
        decode_stream(Framing::Storable, wire, 1);
        // Behind a bless into "C".
        let blessed = Packet::from_bytes(
            Framing::Storable,
            bytes::Bytes::from_static(b"\x05\x0b\x02\x00\x00\x00\x01\x11\x01C\x04\x0a\x00"),
        );
        assert!(storable_dest_is_a_reference(&blessed));
        let plain = Packet::from_bytes(
            Framing::Storable,
            bytes::Bytes::from_static(b"\x05\x0b\x02\x00\x00\x00\x01\x0a\x00"),
        );
        assert!(!storable_dest_is_a_reference(&plain));
    }

    #[test]
    fn json_stream_is_checked_packet_by_packet() {
        let mut wire = BytesMut::new();
        encode_packet(Framing::Json, "port.1", &("tag", 42, "x"), &mut wire).unwrap();
        encode_packet(Framing::Json, "", &(1.5, [1, 2]), &mut wire).unwrap();
        wire.extend_from_slice(b" [] [\"a\\\"b\",{\"k\":null}] [\"cut");
        let (packets, failed) = decode_all(Framing::Json, &wire, 3);
        assert_eq!(packets.len(), 4);
        assert!(!failed);
        for chunk in [1, 2, 5, 64] {
            decode_stream(Framing::Json, &wire, chunk);
        }
        let (packets, failed) = decode_all(Framing::Json, b"[\"a\"] 5", 1);
        assert_eq!((packets.len(), failed), (1, true));
    }
}
