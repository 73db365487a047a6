//! Every refusal of the handshake core is its own typed error naming the peer.

mod common;

use aemp::proto::auth::AuthMethod;
use aemp::proto::dialect::Dialect;
use aemp::proto::handshake::{
    Event, Handshake, HandshakeConfig, HandshakeError, MAX_PENDING, PeerName,
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
    // The limit counts everything buffered, also after line 1.
    let mut hs = ours();
    let mut bytes = format!("{LINE1}\n").into_bytes();
    bytes.extend(vec![b'x'; MAX_PENDING + 1]);
    assert!(matches!(
        hs.feed(&bytes),
        Err(HandshakeError::LineTooLong { .. })
    ));
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
