//! Two handshake cores driven against each other in memory.

mod common;

use aemp::proto::auth::AuthMethod;
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::Framing;
use aemp::proto::handshake::{HandshakeConfig, HandshakeError, OwnGreeting, TlsRole};
use common::{run_pair, run_pair_with};

fn cfg(id: &str, secret: &str, d: Dialect) -> HandshakeConfig {
    HandshakeConfig::new(id, secret.as_bytes().to_vec(), d)
}

#[test]
fn every_dialect_completes_with_hmac() {
    for d in Dialect::ALL {
        let (a, b) = run_pair(cfg("alpha", "s3cret", d), cfg("beta", "s3cret", d));
        let (a, b) = (a.established.unwrap(), b.established.unwrap());
        let hmac = if d == Dialect::P2 {
            AuthMethod::HmacSha3_512
        } else {
            AuthMethod::HmacMd6_64_256
        };
        for (me, other) in [(&a, "beta"), (&b, "alpha")] {
            assert_eq!(me.dialect, d);
            assert_eq!(me.peer_node_id(), other);
            assert_eq!(me.peer.dialect, Some(d));
            assert!(me.peer.is_rust);
            assert_eq!(me.sent_auth, hmac);
            assert_eq!(me.peer_auth(), hmac);
            assert!(!me.tls);
            assert!(me.leftover.is_empty());
            let expected = if d == Dialect::P2 {
                Framing::Cbor
            } else {
                Framing::Json
            };
            assert_eq!((me.send_framing, me.recv_framing), (expected, expected));
        }
    }
}

#[test]
fn a_side_sending_cleartext_is_accepted_where_both_allow_it() {
    for d in Dialect::ALL {
        let mut a = cfg("alpha", "s3cret", d);
        a.auth_offer = Some(vec![AuthMethod::Cleartext]);
        a.allow_cleartext = true;
        let mut b = cfg("beta", "s3cret", d);
        b.allow_cleartext = true;
        let (a, b) = run_pair(a, b);
        let (a, b) = (a.established.unwrap(), b.established.unwrap());
        assert_eq!(a.sent_auth, AuthMethod::Cleartext);
        assert_eq!(b.peer_auth(), AuthMethod::Cleartext);
        assert_ne!(b.sent_auth, AuthMethod::Cleartext);
    }
}

#[test]
fn cleartext_is_used_by_neither_side_unless_allowed() {
    for d in Dialect::ALL {
        // The receiver does not list it, so the sender finds nothing it may send.
        let mut a = cfg("alpha", "s3cret", d);
        a.auth_offer = Some(vec![AuthMethod::Cleartext]);
        a.allow_cleartext = true;
        let (a_out, b_out) = run_pair(a, cfg("beta", "s3cret", d));
        assert!(
            matches!(a_out.error, Some(HandshakeError::NoCommonAuth { .. })),
            "{d}: {:?}",
            a_out.error
        );
        assert!(b_out.established.is_none(), "{d}");
        // The sender may not send it, although the receiver lists it.
        let mut a = cfg("alpha", "s3cret", d);
        a.auth_offer = Some(vec![AuthMethod::Cleartext]);
        let mut b = cfg("beta", "s3cret", d);
        b.allow_cleartext = true;
        let (a_out, b_out) = run_pair(a, b);
        assert!(
            matches!(a_out.error, Some(HandshakeError::NoCommonAuth { .. })),
            "{d}: {:?}",
            a_out.error
        );
        assert!(b_out.established.is_none(), "{d}");
        // Allowed on both sides but not offered: hmac as before.
        let mut a = cfg("alpha", "s3cret", d);
        a.allow_cleartext = true;
        let mut b = cfg("beta", "s3cret", d);
        b.allow_cleartext = true;
        let (a_out, b_out) = run_pair(a, b);
        let (a, b) = (a_out.established.unwrap(), b_out.established.unwrap());
        assert_ne!(a.sent_auth, AuthMethod::Cleartext);
        assert_ne!(b.sent_auth, AuthMethod::Cleartext);
    }
}

#[test]
fn each_framing_in_each_direction() {
    for d in Dialect::ALL {
        for x in Framing::ALL {
            for y in Framing::ALL {
                // A prefers to receive x, B prefers to receive y: A sends y, B sends x.
                let order = |first: Framing| {
                    let mut v = vec![first];
                    v.extend(Framing::ALL.into_iter().filter(|f| *f != first));
                    v
                };
                let mut a = cfg("alpha", "k", d);
                a.framings = Some(order(x));
                let mut b = cfg("beta", "k", d);
                b.framings = Some(order(y));
                let (a, b) = run_pair(a, b);
                let (a, b) = (a.established.unwrap(), b.established.unwrap());
                assert_eq!((a.send_framing, a.recv_framing), (y, x), "{d} {x} {y}");
                assert_eq!((b.send_framing, b.recv_framing), (x, y), "{d} {x} {y}");
            }
        }
    }
}

#[test]
fn a_deferred_side_answers_in_the_peers_dialect() {
    for d in Dialect::ALL {
        let mut b = cfg("beta", "k", Dialect::P0);
        b.greeting = OwnGreeting::Deferred;
        let (a, b) = run_pair(cfg("alpha", "k", d), b);
        let (a, b) = (a.established.unwrap(), b.established.unwrap());
        assert_eq!(b.dialect, d);
        assert_eq!(a.peer.dialect, Some(d));
    }
}

#[test]
fn a_deferred_side_can_choose_its_dialect() {
    let mut b = cfg("beta", "k", Dialect::P0);
    b.greeting = OwnGreeting::Deferred;
    let (a, b) = run_pair_with(cfg("alpha", "k", Dialect::P1a), b, None, Some(Dialect::P1b));
    let (a, b) = (a.established.unwrap(), b.established.unwrap());
    assert_eq!(b.dialect, Dialect::P1b);
    assert_eq!(a.peer.dialect, Some(Dialect::P1b));
}

#[test]
fn tls_is_started_with_opposite_roles_and_tls_auth() {
    for d in Dialect::ALL {
        let mut a = cfg("alpha", "", d);
        a.tls = true;
        let mut b = cfg("beta", "", d);
        b.tls = true;
        let (a, b) = run_pair(a, b);
        let roles = (a.tls_role.unwrap(), b.tls_role.unwrap());
        assert!(matches!(
            roles,
            (TlsRole::Client, TlsRole::Server) | (TlsRole::Server, TlsRole::Client)
        ));
        let (a, b) = (a.established.unwrap(), b.established.unwrap());
        let m = if d == Dialect::P2 {
            AuthMethod::TlsSha3_512
        } else {
            AuthMethod::TlsMd6_64_256
        };
        assert!(a.tls && b.tls);
        assert_eq!((a.sent_auth, b.peer_auth()), (m, m));
    }
}

#[test]
fn tls_on_one_side_only_falls_back_to_the_secret() {
    let mut a = cfg("alpha", "k", Dialect::P0);
    a.tls = true;
    let (a, b) = run_pair(a, cfg("beta", "k", Dialect::P0));
    assert!(a.tls_role.is_none());
    let (a, b) = (a.established.unwrap(), b.established.unwrap());
    assert!(!a.tls && !b.tls);
    assert_eq!(a.sent_auth, AuthMethod::HmacMd6_64_256);
}

#[test]
fn data_after_the_auth_line_is_handed_over() {
    use aemp::proto::handshake::{Event, Handshake};
    let mut a = Handshake::new(cfg("alpha", "k", Dialect::P0)).unwrap();
    let mut b = Handshake::new(cfg("beta", "k", Dialect::P0)).unwrap();
    b.feed(&a.take_output()).unwrap();
    a.feed(&b.take_output()).unwrap();
    for hs in [&mut a, &mut b] {
        let Some(Event::PeerGreeting(_)) = hs.poll_event() else {
            panic!()
        };
        hs.accept_peer(None).unwrap();
    }
    let mut to_b = a.take_output();
    to_b.extend_from_slice(br#"["x",1]["#);
    b.feed(&to_b).unwrap();
    let Some(Event::Established(e)) = b.poll_event() else {
        panic!()
    };
    assert_eq!(e.leftover, br#"["x",1]["#);
}
