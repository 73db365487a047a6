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
struct Side {
    line1: Vec<u8>,
    line2: Vec<u8>,
    method: AuthMethod,
    token: Vec<u8>,
}

/// `None` when that direction ended before its auth line (a refused self-connect or duplicate,
/// as the cluster captures hold).
fn read_side(path: &Path) -> Option<Side> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let complete = bytes.iter().filter(|&&b| b == b'\n').count() >= 3;
    if !complete {
        return None;
    }
    let mut lines = bytes.split(|&b| b == b'\n');
    let line1 = lines.next()?.to_vec();
    let line2 = lines.next()?.to_vec();
    let auth = lines.next()?;
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
    let mut incomplete = 0;
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
            let s2c_path = capture_dir.join(format!("conn{n}.s2c.bin"));
            let (Some(c2s), Some(s2c)) = (read_side(&c2s_path), read_side(&s2c_path)) else {
                incomplete += 1;
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
    // 6 single-connection captures and p0-wrong-secret with 4 (only its s2c tokens verify): 10
    // connections, 16 tokens. The mesh, chat and cluster captures hold 28 connections more, of
    // which 17 reach both auth lines (34 tokens) and 11 end before (self-connects and
    // duplicates refused at line 1).
    assert_eq!((connections, verified, incomplete), (27, 50, 11));
}
