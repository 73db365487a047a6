//! Auth tokens against real Perl captures in `tests/vectors/captures`: every plaintext
//! connection's two auth lines are recomputed from its greeting lines and `secret.txt`.

use aemp::proto::auth::{AuthError, AuthMethod, GreetingLines, own_token, verify_peer_token};
use std::fs;
use std::path::{Path, PathBuf};

/// Captures not usable here: TLS hides the auth lines; the version mismatch never gets that far.
const SKIP: [&str; 2] = ["p0-tls", "p2-server-p0-client-version-mismatch"];

/// In this capture, `secret.txt` is the listener's; the connector used another secret.
const WRONG_SECRET: &str = "p0-wrong-secret";

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/captures")
}

/// The first three LF-terminated lines of one direction: line 1, nonce line, auth line.
/// Multi-node captures also hold connections that end before authentication: connect attempts
/// that carried no bytes, and greetings answered by a close (a node dialling itself).
struct Side {
    line1: Vec<u8>,
    line2: Vec<u8>,
    method: AuthMethod,
    token: Vec<u8>,
}

/// One direction's lines, or `None` when it ends before its auth line is complete.
fn read_side(path: &Path) -> Option<Side> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = bytes.split(|&b| b == b'\n');
    let line1 = lines.next()?.to_vec();
    let line2 = lines.next()?.to_vec();
    let auth = lines.next()?;
    // A line is only complete with its LF, after which `split` yields at least one more item.
    lines.next()?;
    let fields: Vec<&[u8]> = auth.split(|&b| b == b';').collect();
    assert!(fields.len() >= 3, "{}: bad auth line", path.display());
    let name = std::str::from_utf8(fields[0]).unwrap();
    let method = AuthMethod::from_name(name).unwrap_or_else(|| panic!("unknown method {name}"));
    Some(Side {
        line1,
        line2,
        method,
        token: fields[1].to_vec(),
    })
}

/// Checks one connection; returns how many tokens verified.
fn check_connection(capture: &str, c2s: &Side, s2c: &Side, secret: &[u8]) -> usize {
    let client = GreetingLines {
        own: [&c2s.line1, &c2s.line2],
        peer: [&s2c.line1, &s2c.line2],
    };
    let server = GreetingLines {
        own: [&s2c.line1, &s2c.line2],
        peer: [&c2s.line1, &c2s.line2],
    };
    let c2s_own = own_token(c2s.method, secret, &client).unwrap();
    let c2s_seen = verify_peer_token(c2s.method, &c2s.token, secret, &server, false);
    if capture == WRONG_SECRET {
        assert_ne!(c2s_own.as_bytes(), &c2s.token[..], "{capture}: c2s");
        assert_eq!(
            c2s_seen,
            Err(AuthError::Mismatch { method: c2s.method }),
            "{capture}: c2s"
        );
    } else {
        assert_eq!(c2s_own.as_bytes(), &c2s.token[..], "{capture}: c2s");
        assert_eq!(c2s_seen.unwrap().method(), c2s.method, "{capture}: c2s");
    }

    let s2c_own = own_token(s2c.method, secret, &server).unwrap();
    assert_eq!(s2c_own.as_bytes(), &s2c.token[..], "{capture}: s2c");
    let s2c_seen = verify_peer_token(s2c.method, &s2c.token, secret, &client, false).unwrap();
    assert_eq!(s2c_seen.method(), s2c.method, "{capture}: s2c");
    if capture == WRONG_SECRET { 1 } else { 2 }
}

#[test]
fn tokens_of_real_captures() {
    let dir = captures_dir();
    let mut captures: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    captures.sort();

    let mut seen_methods = Vec::new();
    let mut checked_captures = Vec::new();
    let mut connections = 0;
    let mut verified = 0;
    let mut before_auth = 0;
    for capture_dir in &captures {
        let capture = capture_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if SKIP.contains(&capture.as_str()) {
            continue;
        }
        let secret = fs::read(capture_dir.join("secret.txt")).unwrap();
        assert!(!secret.is_empty() && !secret.ends_with(b"\n"));
        for n in 0.. {
            let c2s_path = capture_dir.join(format!("conn{n}.c2s.bin"));
            if !c2s_path.exists() {
                break;
            }
            let c2s = read_side(&c2s_path);
            let s2c = read_side(&capture_dir.join(format!("conn{n}.s2c.bin")));
            let (Some(c2s), Some(s2c)) = (c2s, s2c) else {
                before_auth += 1;
                continue;
            };
            verified += check_connection(&capture, &c2s, &s2c, &secret);
            connections += 1;
            for m in [c2s.method, s2c.method] {
                if !seen_methods.contains(&m) {
                    seen_methods.push(m);
                }
            }
        }
        checked_captures.push(capture);
    }

    // Guard against silently checking nothing (e.g. a moved vectors directory).
    for expected in ["p0-echo", "p0-wrong-secret", "p1b-probe", "p2-probe-json"] {
        assert!(
            checked_captures.iter().any(|c| c == expected),
            "{expected} missing"
        );
    }
    assert!(seen_methods.contains(&AuthMethod::HmacMd6_64_256));
    assert!(seen_methods.contains(&AuthMethod::HmacSha3_512));
    // 6 single-connection captures, p0-wrong-secret with 4 (only its s2c tokens verify) and
    // 17 authenticated connections of the multi-node captures; 11 of those captures'
    // connections end before authentication (p1b-chat 1, p1b-mesh-groups 2, each
    // p2-cluster-db* 4).
    assert_eq!((connections, verified, before_auth), (27, 50, 11));
}
