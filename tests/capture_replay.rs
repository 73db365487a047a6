//! Replays the wire captures between real Perl nodes against the handshake core.
//!
//! For each capture and each direction D, a core built as the *other* side (its line 1 and nonce
//! injected from the opposite file, its dialect fixed by that line, the capture's secret) must
//! write exactly the other side's bytes up to its auth line, verify D's real token and decode
//! D's packets, however the bytes are chunked.

mod common;

use aemp::proto::framing::{DEFAULT_MAX_PACKET, Framing, Packet, PacketDecoder};
use aemp::proto::greeting::{Greeting, Nonce};
use aemp::proto::handshake::{
    Established, Event, Handshake, HandshakeConfig, HandshakeError, OwnGreeting, TlsRole,
};
use bytes::BytesMut;
use common::{Capture, Dir, lines, prefix_len};
use proptest::prelude::*;

const DATA_CAPTURES: [&str; 6] = [
    "p0-echo",
    "p0-probe",
    "p1b-probe",
    "p2-probe-cbor",
    "p2-probe-json",
    "p2-echo-cbor",
];

struct Replay {
    output: Vec<u8>,
    established: Option<Box<Established>>,
    error: Option<HandshakeError>,
    tls: Option<(TlsRole, Vec<u8>)>,
    packets: Vec<Packet>,
}

/// A core built as the side opposite to `dir`, with `tls` if that side offered it.
fn core_for(cap: &Capture, conn: usize, dir: Dir) -> Handshake {
    let own = cap.bytes(conn, dir.opposite());
    let (own_lines, _) = lines(&own, 2);
    let line1 = String::from_utf8(own_lines[0].clone()).unwrap();
    let greeting = Greeting::parse(line1.as_bytes()).unwrap();
    let mut cfg = HandshakeConfig::new(
        greeting.node_id.clone(),
        cap.secret.clone(),
        aemp::proto::dialect::Dialect::P0,
    );
    cfg.tls = greeting.offers_tls();
    cfg.greeting = OwnGreeting::Injected {
        line1,
        nonce: Nonce::from_line(String::from_utf8(own_lines[1].clone()).unwrap()).unwrap(),
    };
    Handshake::new(cfg).unwrap()
}

/// Feeds direction `dir` in chunks of the given sizes (cycled).
fn replay(cap: &Capture, conn: usize, dir: Dir, chunks: &[usize]) -> Replay {
    let mut hs = core_for(cap, conn, dir);
    let input = cap.bytes(conn, dir);
    let mut r = Replay {
        output: hs.take_output(),
        established: None,
        error: None,
        tls: None,
        packets: Vec::new(),
    };
    let mut decoder: Option<PacketDecoder> = None;
    let mut buf = BytesMut::new();
    let mut at = 0;
    let mut sizes = chunks.iter().copied().cycle();
    while at < input.len() {
        let n = sizes
            .next()
            .unwrap_or(input.len())
            .max(1)
            .min(input.len() - at);
        let chunk = &input[at..at + n];
        at += n;
        if let Some(dec) = decoder.as_mut() {
            buf.extend_from_slice(chunk);
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                r.packets.push(p);
            }
            continue;
        }
        if r.error.is_some() || r.tls.is_some() {
            break;
        }
        if let Err(e) = hs.feed(chunk) {
            r.error = Some(e);
            break;
        }
        while let Some(ev) = hs.poll_event() {
            match ev {
                Event::PeerGreeting(_) => {
                    if let Err(e) = hs.accept_peer(None) {
                        r.error = Some(e);
                    }
                }
                Event::StartTls(role) => {
                    // Everything past line 2 belongs to TLS: the rest of the input too.
                    let mut rest = hs.take_tls_leftover();
                    rest.extend_from_slice(&input[at..]);
                    at = input.len();
                    r.tls = Some((role, rest));
                }
                Event::Established(e) => {
                    let mut dec = PacketDecoder::new(e.recv_framing, DEFAULT_MAX_PACKET);
                    buf.extend_from_slice(&e.leftover);
                    while let Some(p) = dec.decode(&mut buf).unwrap() {
                        r.packets.push(p);
                    }
                    decoder = Some(dec);
                    r.established = Some(e);
                }
            }
        }
        r.output.extend(hs.take_output());
    }
    if decoder.is_some() {
        assert!(
            buf.iter().all(|b| b.is_ascii_whitespace()),
            "undecoded trailing bytes"
        );
    }
    r
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks one direction of a capture with data packets.
fn check_data_direction(name: &'static str, dir: Dir, chunks: &[usize]) {
    let cap = Capture::load(name);
    let r = replay(&cap, 0, dir, chunks);
    assert!(r.error.is_none(), "{name} {dir:?}: {:?}", r.error);
    let own = cap.bytes(0, dir.opposite());
    assert_eq!(
        r.output,
        own[..prefix_len(&own, 3)],
        "{name} {dir:?}: our bytes differ"
    );
    let e = r.established.expect("established");
    let (theirs, _) = lines(&cap.bytes(0, dir), 3);
    let peer_method = String::from_utf8_lossy(&theirs[2])
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(e.peer_auth().name(), peer_method);
    let expected: Vec<Vec<u8>> = match e.recv_framing {
        Framing::Json => cap
            .entries(0, dir, "JSON")
            .into_iter()
            .map(String::into_bytes)
            .collect(),
        Framing::Cbor => cap
            .entries(0, dir, "CBOR-bytes")
            .iter()
            .map(|h| {
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect()
            })
            .collect(),
        Framing::Storable => unreachable!("no storable capture"),
    };
    assert!(!expected.is_empty());
    assert_eq!(
        r.packets.len(),
        expected.len(),
        "{name} {dir:?}: packet count"
    );
    for (p, want) in r.packets.iter().zip(&expected) {
        assert_eq!(hex(p.as_bytes()), hex(want), "{name} {dir:?}");
        p.to_value().unwrap();
        p.dest().unwrap();
    }
}

#[test]
fn every_capture_replays_byte_exact_in_one_piece() {
    for name in DATA_CAPTURES {
        for dir in [Dir::C2s, Dir::S2c] {
            check_data_direction(name, dir, &[usize::MAX]);
        }
    }
}

#[test]
fn every_capture_replays_byte_by_byte() {
    for name in DATA_CAPTURES {
        for dir in [Dir::C2s, Dir::S2c] {
            check_data_direction(name, dir, &[1]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn every_capture_replays_in_any_chunking(chunks in proptest::collection::vec(1usize..300, 1..20)) {
        for name in DATA_CAPTURES {
            for dir in [Dir::C2s, Dir::S2c] {
                check_data_direction(name, dir, &chunks);
            }
        }
    }
}

#[test]
fn wrong_secret_fails_only_the_connecting_sides_token() {
    let cap = Capture::load("p0-wrong-secret");
    assert_eq!(cap.connections(), 4);
    for conn in 0..cap.connections() {
        // The listener's core (its secret is secret.txt) refuses the client's token.
        let r = replay(&cap, conn, Dir::C2s, &[7]);
        let server = cap.bytes(conn, Dir::S2c);
        assert_eq!(r.output, server[..prefix_len(&server, 3)]);
        assert!(
            matches!(r.error, Some(HandshakeError::AuthFailed { .. })),
            "{:?}",
            r.error
        );
        assert!(r.error.unwrap().to_string().contains("ref-v0-client"));
        // A core built as the client with the listener's secret verifies the listener's token,
        // and matches the client's bytes only up to its auth line.
        let r = replay(&cap, conn, Dir::S2c, &[5]);
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(r.established.is_some());
        let client = cap.bytes(conn, Dir::C2s);
        let greeting = prefix_len(&client, 2);
        assert_eq!(r.output[..greeting], client[..greeting]);
        assert_ne!(
            r.output[greeting..],
            client[greeting..prefix_len(&client, 3)]
        );
    }
}

#[test]
fn version_mismatch_capture() {
    use aemp::proto::dialect::Dialect;
    let cap = Capture::load("p2-server-p0-client-version-mismatch");
    for conn in 0..cap.connections() {
        for (dialect, dir) in [(Dialect::P2, Dir::C2s), (Dialect::P0, Dir::S2c)] {
            let mut hs =
                Handshake::new(HandshakeConfig::new("rust", cap.secret.clone(), dialect)).unwrap();
            let err = hs.feed(&cap.bytes(conn, dir)).unwrap_err();
            assert!(
                matches!(err, HandshakeError::VersionMismatch { .. }),
                "{err}"
            );
        }
    }
}

#[test]
fn tls_capture_hands_over_the_tls_bytes_untouched() {
    let cap = Capture::load("p0-tls");
    for dir in [Dir::C2s, Dir::S2c] {
        let r = replay(&cap, 0, dir, &[3]);
        assert!(r.error.is_none(), "{:?}", r.error);
        let own = cap.bytes(0, dir.opposite());
        // Only the two greeting lines are written in clear text.
        assert_eq!(r.output, own[..prefix_len(&own, 2)]);
        let (role, rest) = r.tls.expect("TLS must start");
        let input = cap.bytes(0, dir);
        assert_eq!(rest, input[prefix_len(&input, 2)..]);
        // The listener's nonce line is the lower one here: the listener is the TLS client, so
        // its first record is a ClientHello (handshake record 0x16, message type 1).
        let (listener, connector) = (
            lines(&cap.bytes(0, Dir::S2c), 2).0,
            lines(&cap.bytes(0, Dir::C2s), 2).0,
        );
        assert!(listener[1] < connector[1]);
        match dir {
            Dir::C2s => assert_eq!(role, TlsRole::Client, "core as listener"),
            Dir::S2c => {
                assert_eq!(role, TlsRole::Server, "core as connector");
                assert_eq!(
                    (rest[0], rest[5]),
                    (0x16, 0x01),
                    "a ClientHello follows line 2"
                );
            }
        }
    }
}
