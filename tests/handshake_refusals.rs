//! Every refusal of the handshake core is its own typed error naming the peer.

mod common;

use aemp::proto::auth::AuthMethod;
use aemp::proto::dialect::Dialect;
use aemp::proto::handshake::{
    Established, Event, Handshake, HandshakeConfig, HandshakeError, MAX_PENDING, PeerName,
};
use common::run_pair;

const NONCE: &str = "bm9uY2Vub25jZW5vbmNl";

fn ours() -> Handshake {
    Handshake::new(HandshakeConfig::new("me", b"k".to_vec(), Dialect::P0)).unwrap()
}

fn peer(id: &str) -> PeerName {
    PeerName(Some(id.into()))
}

/// Feeds a scripted peer's lines; accepts at line 1; returns the first error.
fn script(hs: &mut Handshake, lines: &[&str]) -> Option<HandshakeError> {
    for line in lines {
        if let Err(e) = hs.feed(format!("{line}\n").as_bytes()) {
            return Some(e);
        }
        while let Some(ev) = hs.poll_event() {
            if let Event::PeerGreeting(_) = ev
                && let Err(e) = hs.accept_peer(None)
            {
                return Some(e);
            }
        }
    }
    None
}

const LINE1: &str =
    "aemp;0;perl;tls_md6_64_256,hmac_md6_64_256,tls_anon,cleartext;json,storable;timeout=12";

#[test]
fn unparsable_greeting() {
    let err = script(&mut ours(), &["GET / HTTP/1.0"]).unwrap();
    assert!(
        matches!(
            err,
            HandshakeError::UnparsableGreeting {
                peer: PeerName(None),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn version_mismatch() {
    let err = script(&mut ours(), &["aemp;1;perl;hmac_md6_64_256;json"]).unwrap();
    assert_eq!(
        err,
        HandshakeError::VersionMismatch {
            peer: peer("perl"),
            ours: 0,
            theirs: "1".into()
        }
    );
    // Numeric comparison: "0.0" is 0.
    assert!(script(&mut ours(), &["aemp;0.0;perl;hmac_md6_64_256;json"]).is_none());
}

#[test]
fn talking_to_itself() {
    let err = script(
        &mut ours(),
        &["aemp;0;me;hmac_md6_64_256;json;peeraddr=1.2.3.4:5"],
    )
    .unwrap();
    assert_eq!(err, HandshakeError::TalkingToItself { peer: peer("me") });
}

#[test]
fn echo_of_our_own_greeting() {
    let mut hs = ours();
    let echo = hs.take_output();
    let err = hs.feed(&echo).unwrap_err();
    assert_eq!(err, HandshakeError::Echo { peer: peer("me") });
}

#[test]
fn more_than_4096_pending_bytes() {
    let mut hs = ours();
    let err = hs.feed(&vec![b'a'; MAX_PENDING + 1]).unwrap_err();
    assert_eq!(
        err,
        HandshakeError::LineTooLong {
            peer: PeerName(None),
            limit: MAX_PENDING
        }
    );
    // Exactly at the limit is still fine.
    assert!(ours().feed(&vec![b'a'; MAX_PENDING]).is_ok());
    // The limit counts everything buffered, however it arrived.
    let mut hs = ours();
    assert!(hs.feed(&[b'a'; 4000]).is_ok());
    assert!(hs.feed(&[b'a'; MAX_PENDING - 4000]).is_ok());
    assert!(matches!(
        hs.feed(b"a"),
        Err(HandshakeError::LineTooLong { .. })
    ));
    // The limit counts everything buffered, also after line 1.
    let mut hs = ours();
    let mut bytes = format!("{LINE1}\n").into_bytes();
    bytes.extend(vec![b'x'; MAX_PENDING + 1]);
    assert!(matches!(
        hs.feed(&bytes),
        Err(HandshakeError::LineTooLong { .. })
    ));
}

/// Feeds `bytes` in one go while line 1's verdict is still out (as the node gives it after
/// the read), then accepts the peer; returns the established handshake if that came.
fn feed_before_the_verdict(
    hs: &mut Handshake,
    bytes: &[u8],
) -> Result<Option<Box<Established>>, HandshakeError> {
    hs.feed(bytes)?;
    let mut established = None;
    while let Some(ev) = hs.poll_event() {
        match ev {
            Event::PeerGreeting(_) => hs.accept_peer(None)?,
            Event::Established(e) => established = Some(e),
            Event::StartTls(_) => panic!("no TLS here"),
        }
    }
    Ok(established)
}

/// Perl reads each greeting line as soon as it is complete and counts only what is left (the
/// whole rest, not one line): complete lines buffered with it never count.
#[test]
fn lines_already_complete_do_not_count_against_the_limit() {
    for (tail, ok) in [(MAX_PENDING, true), (MAX_PENDING + 1, false)] {
        // Line 1 and line 2 complete, then an auth line still arriving.
        let bytes = [format!("{LINE1}\n{NONCE}\n").into_bytes(), vec![b'x'; tail]].concat();
        let mut hs = ours();
        let got = feed_before_the_verdict(&mut hs, &bytes);
        assert_eq!(got.is_ok(), ok, "{tail}: {got:?}");
        if ok {
            // Waiting for the auth line: one byte more is too many.
            assert!(matches!(
                hs.feed(b"x"),
                Err(HandshakeError::LineTooLong { .. })
            ));
        }
        // Line 1 complete, line 2 still arriving.
        let bytes = [format!("{LINE1}\n").into_bytes(), vec![b'x'; tail]].concat();
        let got = feed_before_the_verdict(&mut ours(), &bytes);
        assert_eq!(got.is_ok(), ok, "{tail}: {got:?}");
        // Line 1 read and accepted, then line 2 and a partial auth line in one read.
        let mut hs = ours();
        feed_before_the_verdict(&mut hs, format!("{LINE1}\n").as_bytes()).unwrap();
        let bytes = [format!("{NONCE}\n").into_bytes(), vec![b'x'; tail]].concat();
        assert_eq!(hs.feed(&bytes).is_ok(), ok, "{tail}");
    }
}

/// The first data packets may come in the same read as the peer's auth line (or its whole
/// handshake): once the auth line is verified there is no limit, and they are handed over.
#[test]
fn data_after_a_verified_auth_line_is_not_counted() {
    let data = vec![b'['; 100_000];
    for verdict_first in [false, true] {
        let mut hs = ours();
        let mut perl =
            Handshake::new(HandshakeConfig::new("perl", b"k".to_vec(), Dialect::P0)).unwrap();
        feed_before_the_verdict(&mut perl, &hs.take_output()).unwrap();
        // The peer's greeting, its auth line and data, all in one read.
        let mut wire = perl.take_output();
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 3);
        wire.extend_from_slice(&data);
        let established = if verdict_first {
            let lines = common::prefix_len(&wire, 2);
            feed_before_the_verdict(&mut hs, &wire[..lines]).unwrap();
            feed_before_the_verdict(&mut hs, &wire[lines..])
        } else {
            feed_before_the_verdict(&mut hs, &wire)
        }
        .unwrap()
        .expect("established");
        assert_eq!(established.leftover, data, "verdict first: {verdict_first}");
    }
}

#[test]
fn no_common_auth() {
    let err = script(&mut ours(), &["aemp;0;perl;rot13,tls_anon;json", NONCE]).unwrap();
    assert!(
        matches!(err, HandshakeError::NoCommonAuth { tls: false, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("perl"));
}

#[test]
fn no_secret_and_no_tls() {
    let mut hs = Handshake::new(HandshakeConfig::new("me", Vec::new(), Dialect::P0)).unwrap();
    let err = script(&mut hs, &[LINE1, NONCE]).unwrap();
    assert_eq!(err, HandshakeError::NoSecret { peer: peer("perl") });
}

#[test]
fn no_common_framing() {
    let err = script(
        &mut ours(),
        &["aemp;0;perl;hmac_md6_64_256;xml,yaml", NONCE],
    )
    .unwrap();
    assert!(
        matches!(err, HandshakeError::NoCommonFraming { .. }),
        "{err}"
    );
}

#[test]
fn auth_failure_with_different_secrets() {
    let (a, b) = run_pair(
        HandshakeConfig::new("alpha", b"one".to_vec(), Dialect::P1b),
        HandshakeConfig::new("beta", b"two".to_vec(), Dialect::P1b),
    );
    for (o, other) in [(a, "beta"), (b, "alpha")] {
        assert_eq!(
            o.error.unwrap(),
            HandshakeError::AuthFailed {
                peer: peer(other),
                method: AuthMethod::HmacMd6_64_256
            }
        );
        assert!(o.established.is_none());
    }
}

#[test]
fn tls_only_method_without_tls() {
    let err = script(&mut ours(), &[LINE1, NONCE, "tls_anon;;json"]).unwrap();
    assert_eq!(
        err,
        HandshakeError::TlsOnlyMethod {
            peer: peer("perl"),
            method: AuthMethod::TlsAnon
        }
    );
    let err = script(&mut ours(), &[LINE1, NONCE, "tls_md6_64_256;00;json"]).unwrap();
    assert!(matches!(err, HandshakeError::TlsOnlyMethod { .. }));
}

#[test]
fn unknown_method() {
    let err = script(&mut ours(), &[LINE1, NONCE, "md5;abcd;json"]).unwrap();
    assert_eq!(
        err,
        HandshakeError::UnknownAuthMethod {
            peer: peer("perl"),
            method: "md5".into()
        }
    );
}

#[test]
fn method_not_in_our_accept_list() {
    // Perl would accept it; we do not, because we did not advertise it.
    let err = script(&mut ours(), &[LINE1, NONCE, "hmac_sha3_512;abcd;json"]).unwrap();
    assert_eq!(
        err,
        HandshakeError::AuthNotAccepted {
            peer: peer("perl"),
            method: AuthMethod::HmacSha3_512
        }
    );
}

#[test]
fn framing_we_did_not_offer() {
    let err = script(&mut ours(), &[LINE1, NONCE, "hmac_md6_64_256;6b;cbor"]).unwrap();
    assert_eq!(
        err,
        HandshakeError::FramingNotOffered {
            peer: peer("perl"),
            framing: "cbor".into()
        }
    );
}

#[test]
fn malformed_auth_line() {
    let err = script(&mut ours(), &[LINE1, NONCE, "hmac_md6_64_256"]).unwrap();
    assert_eq!(
        err,
        HandshakeError::MalformedAuthLine { peer: peer("perl") }
    );
}

#[test]
fn cleartext_is_refused_unless_allowed() {
    let err = script(&mut ours(), &[LINE1, NONCE, "cleartext;6b;json"]).unwrap();
    assert_eq!(err, HandshakeError::CleartextRefused { peer: peer("perl") });
    assert!(!err.to_string().contains("6b"), "{err}");
}

#[test]
fn cleartext_with_the_right_secret_passes_where_allowed_and_crlf_is_accepted() {
    let mut config = HandshakeConfig::new("me", b"k".to_vec(), Dialect::P0);
    config.allow_cleartext = true;
    let mut hs = Handshake::new(config).unwrap();
    let lines = format!("{LINE1}\r\n{NONCE}\r\ncleartext;6b;json\r\n");
    hs.feed(lines.as_bytes()).unwrap();
    let Some(Event::PeerGreeting(_)) = hs.poll_event() else {
        panic!()
    };
    hs.accept_peer(None).unwrap();
    let Some(Event::Established(e)) = hs.poll_event() else {
        panic!()
    };
    assert_eq!(e.peer_auth(), AuthMethod::Cleartext);
}

#[test]
fn refusal_by_the_node_layer_at_line_1() {
    let mut hs = ours();
    hs.feed(format!("{LINE1}\n{NONCE}\n").as_bytes()).unwrap();
    let Some(Event::PeerGreeting(p)) = hs.poll_event() else {
        panic!()
    };
    assert_eq!(p.node_id(), "perl");
    assert_eq!(p.dialect, Some(Dialect::P0));
    let err = hs.refuse("already connected");
    assert_eq!(err.to_string(), "refused node \"perl\": already connected");
    assert!(hs.feed(b"x").is_err());
}

#[test]
fn eof_during_the_handshake() {
    let mut hs = ours();
    hs.feed(format!("{LINE1}\n").as_bytes()).unwrap();
    assert_eq!(
        hs.feed_eof(),
        Err(HandshakeError::UnexpectedEof { peer: peer("perl") })
    );
}

#[test]
fn unsupported_side_channel_protocol() {
    let err = script(
        &mut ours(),
        &["aemp-dataconn;0;perl;hmac_md6_64_256;json;dataconn_id=1"],
    )
    .unwrap();
    assert!(matches!(err, HandshakeError::UnsupportedProtocol { .. }));
}
