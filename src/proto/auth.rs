//! Auth methods and their tokens (AEMP-NOTES §1.9, §1.10).
//!
//! Each side sends a token computed over `OWN` (its own two greeting lines, then the peer's) and
//! checks the peer's token against the same function over `PEER` (the peer's lines first). A
//! successful check yields an [`AuthVerified`], the only way into the data phase.

use crate::crypto::md6::{Md6_256, md6_256};
use digest::{Digest, KeyInit, Mac};
use sha3::Sha3_512;
use std::fmt;
use subtle::ConstantTimeEq;

/// An AEMP auth method, as named in greeting line 1 and the auth line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// Hex of the shared secret (Perl accepts it, never sends it). Anyone who sees the auth line
    /// learns the secret, so a handshake uses it only when its `allow_cleartext` is set.
    Cleartext,
    /// Empty token, only valid inside TLS.
    TlsAnon,
    /// HMAC-MD6-256 as Perl actually computes it (P0/P1).
    HmacMd6_64_256,
    /// MD6-256 of the greetings, only inside TLS (P0/P1).
    TlsMd6_64_256,
    /// HMAC-SHA3-512 keyed by the secret (P2).
    HmacSha3_512,
    /// SHA3-512 of the greetings, only inside TLS (P2).
    TlsSha3_512,
}

impl AuthMethod {
    /// Every method this crate implements.
    pub const ALL: [AuthMethod; 6] = [
        AuthMethod::Cleartext,
        AuthMethod::TlsAnon,
        AuthMethod::HmacMd6_64_256,
        AuthMethod::TlsMd6_64_256,
        AuthMethod::HmacSha3_512,
        AuthMethod::TlsSha3_512,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Cleartext => "cleartext",
            AuthMethod::TlsAnon => "tls_anon",
            AuthMethod::HmacMd6_64_256 => "hmac_md6_64_256",
            AuthMethod::TlsMd6_64_256 => "tls_md6_64_256",
            AuthMethod::HmacSha3_512 => "hmac_sha3_512",
            AuthMethod::TlsSha3_512 => "tls_sha3_512",
        }
    }

    /// Parses a wire name (exact, case-sensitive).
    pub fn from_name(name: &str) -> Option<AuthMethod> {
        AuthMethod::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the method is only valid inside TLS (`tls_*`).
    pub fn needs_tls(self) -> bool {
        matches!(
            self,
            AuthMethod::TlsAnon | AuthMethod::TlsMd6_64_256 | AuthMethod::TlsSha3_512
        )
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The four greeting lines of one connection, exactly as sent/received, without line terminators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GreetingLines<'a> {
    /// Our line 1 and line 2 (nonce).
    pub own: [&'a [u8]; 2],
    /// The peer's line 1 and line 2 (nonce).
    pub peer: [&'a [u8]; 2],
}

impl GreetingLines<'_> {
    /// `first[0] \n first[1] \n second[0] \n second[1] \n`.
    fn concat(first: [&[u8]; 2], second: [&[u8]; 2]) -> Vec<u8> {
        let len = first.iter().chain(&second).map(|l| l.len() + 1).sum();
        let mut out = Vec::with_capacity(len);
        for line in first.iter().chain(&second) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out
    }

    /// `OWN`: our lines first; what the token we send is computed over.
    fn own_first(&self) -> Vec<u8> {
        Self::concat(self.own, self.peer)
    }

    /// `PEER`: the peer's lines first; what the token we expect is computed over.
    fn peer_first(&self) -> Vec<u8> {
        Self::concat(self.peer, self.own)
    }
}

/// Why a token could not be produced or was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The method needs a shared secret and none is configured.
    #[error("auth method {method} needs a shared secret, but none is configured")]
    NoSecret {
        /// The method asked for.
        method: AuthMethod,
    },
    /// A `tls_*` method was used on a connection without TLS.
    #[error("auth method {method} is only valid inside TLS, and this connection has none")]
    TlsRequired {
        /// The method the peer used.
        method: AuthMethod,
    },
    /// The peer's token is not the expected one (usually: different shared secrets).
    #[error("authentication failure: {method} token mismatch (shared secret mismatch?)")]
    Mismatch {
        /// The method the peer used.
        method: AuthMethod,
    },
}

/// Proof that the peer's auth line was verified. Only [`verify_peer_token`] creates one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthVerified {
    method: AuthMethod,
}

impl AuthVerified {
    /// The method the peer authenticated with.
    pub fn method(&self) -> AuthMethod {
        self.method
    }
}

/// A shared secret in `Debug` output: its length only, never its bytes.
///
/// Every configuration type that holds the secret formats it through this, so that `{:?}` of a
/// configuration (in a log line, a panic message, a test failure) cannot leak it.
#[derive(Clone, Copy)]
pub(crate) struct Redacted<'a>(pub &'a [u8]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"<none>\"")
        } else {
            write!(f, "\"<redacted {} bytes>\"", self.0.len())
        }
    }
}

/// Whether a received token equals the expected one, in time independent of where they differ.
///
/// Perl compares the token text with `eq`; this is the same byte equality, but it does not stop
/// at the first differing byte, so response times do not reveal how much of a guess was right.
/// Only the lengths (public: every method's token length is fixed, `cleartext`'s is twice the
/// secret's) decide early.
fn tokens_equal(expected: &[u8], received: &[u8]) -> bool {
    bool::from(expected.ct_eq(received))
}

/// Lowercase hex, as Perl prints tokens.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The token for `method` over `text` (`OWN` or `PEER`). Callers check the secret/TLS rules.
fn token_over(method: AuthMethod, secret: &[u8], text: &[u8]) -> String {
    match method {
        AuthMethod::Cleartext => lower_hex(secret),
        AuthMethod::TlsAnon => String::new(),
        AuthMethod::TlsMd6_64_256 => lower_hex(&md6_256(text)),
        AuthMethod::HmacMd6_64_256 => {
            // Perl swaps the helper's arguments: the greetings are the HMAC key and the message is
            // MD6-256(secret). `new_from_slice` accepts keys of any length (long ones are hashed).
            let mut mac = match hmac::SimpleHmac::<Md6_256>::new_from_slice(text) {
                Ok(mac) => mac,
                Err(_) => unreachable!("HMAC takes keys of any length"),
            };
            mac.update(&md6_256(secret));
            lower_hex(&mac.finalize().into_bytes())
        }
        AuthMethod::TlsSha3_512 => lower_hex(&Sha3_512::digest(text)),
        AuthMethod::HmacSha3_512 => {
            // sha3 0.12 has no block-level core for `Hmac`; SimpleHmac gives the same result.
            let mut mac = match hmac::SimpleHmac::<Sha3_512>::new_from_slice(secret) {
                Ok(mac) => mac,
                Err(_) => unreachable!("HMAC takes keys of any length"),
            };
            mac.update(text);
            lower_hex(&mac.finalize().into_bytes())
        }
    }
}

/// Whether `method` cannot work without a shared secret.
fn needs_secret(method: AuthMethod) -> bool {
    matches!(
        method,
        AuthMethod::Cleartext | AuthMethod::HmacMd6_64_256 | AuthMethod::HmacSha3_512
    )
}

/// The token we send for `method`, computed over `OWN` (our greeting lines first).
///
/// `secret` is the shared secret as raw bytes (may be empty when none is configured). Whether a
/// `tls_*` method is allowed (only inside TLS) is the caller's decision.
///
/// # Errors
///
/// [`AuthError::NoSecret`] for `cleartext` and `hmac_*` when `secret` is empty.
pub fn own_token(
    method: AuthMethod,
    secret: &[u8],
    lines: &GreetingLines,
) -> Result<String, AuthError> {
    if needs_secret(method) && secret.is_empty() {
        return Err(AuthError::NoSecret { method });
    }
    Ok(token_over(method, secret, &lines.own_first()))
}

/// Checks the peer's `token` for `method` against the value expected over `PEER` (the peer's
/// greeting lines first), comparing in constant time.
///
/// `tls` tells whether the connection runs inside (verified) TLS. Inside TLS, `cleartext` with no
/// local secret expects an empty token, as Perl does: the certificate check is the authentication.
///
/// This checks the token only. Whether `method` is acceptable at all (our accept list, and
/// `cleartext` only when explicitly allowed) is the caller's decision, as the
/// [handshake](crate::proto::handshake) makes it before calling this.
///
/// # Errors
///
/// * [`AuthError::TlsRequired`]: a `tls_*` method (including `tls_anon`) without TLS;
/// * [`AuthError::NoSecret`]: `hmac_*`, or `cleartext` outside TLS, with an empty `secret`;
/// * [`AuthError::Mismatch`]: the token differs from the expected one.
pub fn verify_peer_token(
    method: AuthMethod,
    token: &[u8],
    secret: &[u8],
    lines: &GreetingLines,
    tls: bool,
) -> Result<AuthVerified, AuthError> {
    if method.needs_tls() && !tls {
        return Err(AuthError::TlsRequired { method });
    }
    let cleartext_in_tls = method == AuthMethod::Cleartext && tls;
    if needs_secret(method) && secret.is_empty() && !cleartext_in_tls {
        return Err(AuthError::NoSecret { method });
    }
    let expected = token_over(method, secret, &lines.peer_first());
    if tokens_equal(expected.as_bytes(), token) {
        Ok(AuthVerified { method })
    } else {
        Err(AuthError::Mismatch { method })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // AEMP-NOTES Appendix A (the 1.0 documentation's P0 handshake, arrows corrected).
    const SECRET: &[u8] =
        b"8ugxrtw6H5tKnfPWfaSr4HGhE8MoJXmzTT1BWq7sLutNcD0IbXprQlZjIbl7MBKoeklG3IEfY9GlJthC0pENzk";
    const A1: &[u8] = b"aemp;0;anon/57Cs1CggVJjzYaQp13XXg4;tls_md6_64_256,hmac_md6_64_256,tls_anon,cleartext;json,storable;provider=AE-0.8;timeout=12;peeraddr=10.0.0.17:4040";
    const A2: &[u8] =
        b"yLgdG1ov/02shVkVQer3wzeuywZK+oraTdEQBmIqWHaegxSGDG4g+HqogLQbvdypFOsoDWJ1Sh4ImV4DMhvUBwTK";
    const B1: &[u8] = b"aemp;0;ruth;tls_md6_64_256,hmac_md6_64_256,tls_anon,cleartext;json,storable;provider=AE-0.8;timeout=12;peeraddr=10.0.0.1:37108";
    const B2: &[u8] =
        b"+xMQXP8ElfNmuvEhsmcp+s2wCJOuQAsPxSg3d2Ewhs6gBnJz+ypVdWJ/wAVrXqlIJfLeVS/CBy4gEGkyWHSuVb1L";
    const A_HMAC: &str = "84cd590976f794914c2ca26dac3a207a57a6798b9171289c114de07cf0c20401";
    const B_HMAC: &str = "5ad913855742ae5a03a5aeb7eafa4c78629de136bed6acd73eea36c9e98df44a";
    // The documented ("textbook") construction, which real nodes do not use.
    const A_TEXTBOOK: &str = "a0a97dc54193b28d7047a7245f895fe281a046fd567f9999881299c10dd62914";
    const B_TEXTBOOK: &str = "7ae9a1fb06c391d79c19b4421de2264c94eaa2b99c6c7e7f74c673d4fda877cd";
    const A_TLS_MD6: &str = "b86e3c36a8be31dba0ba63ee8e3a16b9d96af9d58d7b3d428b5fabee34a9743d";
    const B_TLS_MD6: &str = "ff99bec4ed07874a916554b62beec35f481c9364d59464219a3e08ae01b6521a";

    fn side_a() -> GreetingLines<'static> {
        GreetingLines {
            own: [A1, A2],
            peer: [B1, B2],
        }
    }

    fn side_b() -> GreetingLines<'static> {
        GreetingLines {
            own: [B1, B2],
            peer: [A1, A2],
        }
    }

    #[test]
    fn own_and_peer_texts() {
        let l = GreetingLines {
            own: [b"o1", b"o2"],
            peer: [b"p1", b"p2"],
        };
        assert_eq!(l.own_first(), b"o1\no2\np1\np2\n");
        assert_eq!(l.peer_first(), b"p1\np2\no1\no2\n");
    }

    #[test]
    fn full_example_hmac_md6_tokens() {
        let m = AuthMethod::HmacMd6_64_256;
        assert_eq!(own_token(m, SECRET, &side_a()).unwrap(), A_HMAC);
        assert_eq!(own_token(m, SECRET, &side_b()).unwrap(), B_HMAC);
        let v = verify_peer_token(m, A_HMAC.as_bytes(), SECRET, &side_b(), false).unwrap();
        assert_eq!(v.method(), m);
        let v = verify_peer_token(m, B_HMAC.as_bytes(), SECRET, &side_a(), false).unwrap();
        assert_eq!(v.method(), m);
        // The direction matters: A's token is not what A expects back from B.
        assert_eq!(
            verify_peer_token(m, A_HMAC.as_bytes(), SECRET, &side_a(), false),
            Err(AuthError::Mismatch { method: m })
        );
    }

    #[test]
    fn full_example_textbook_variant_is_not_used() {
        // Sanity: the textbook values really are HMAC(key = MD6(secret), msg = OWN) ...
        let mut mac = hmac::SimpleHmac::<Md6_256>::new_from_slice(&md6_256(SECRET)).unwrap();
        mac.update(&side_a().own_first());
        assert_eq!(lower_hex(&mac.finalize().into_bytes()), A_TEXTBOOK);
        // ... and they are neither produced nor accepted.
        let m = AuthMethod::HmacMd6_64_256;
        assert_ne!(own_token(m, SECRET, &side_a()).unwrap(), A_TEXTBOOK);
        assert_ne!(own_token(m, SECRET, &side_b()).unwrap(), B_TEXTBOOK);
        assert_eq!(
            verify_peer_token(m, A_TEXTBOOK.as_bytes(), SECRET, &side_b(), false),
            Err(AuthError::Mismatch { method: m })
        );
    }

    #[test]
    fn full_example_tls_md6_tokens() {
        let m = AuthMethod::TlsMd6_64_256;
        assert_eq!(own_token(m, b"", &side_a()).unwrap(), A_TLS_MD6);
        assert_eq!(own_token(m, SECRET, &side_b()).unwrap(), B_TLS_MD6);
        assert!(verify_peer_token(m, A_TLS_MD6.as_bytes(), b"", &side_b(), true).is_ok());
        assert!(verify_peer_token(m, B_TLS_MD6.as_bytes(), b"", &side_a(), true).is_ok());
        assert_eq!(
            verify_peer_token(m, A_TLS_MD6.as_bytes(), SECRET, &side_b(), false),
            Err(AuthError::TlsRequired { method: m })
        );
    }

    #[test]
    fn appendix_b_hmac_sha3_512() {
        let alpha1: &[u8] = b"aemp;1;alpha;tls_sha3_512,hmac_sha3_512,tls_anon,cleartext;cbor,json,storable;provider=AE-2.01;peeraddr=127.0.0.1:4040;mproto=1;gproto=1";
        let beta1: &[u8] = b"aemp;1;beta;tls_sha3_512,hmac_sha3_512,tls_anon,cleartext;cbor,json,storable;provider=AE-2.01;peeraddr=127.0.0.1:50000;mproto=1;gproto=1";
        let alpha = GreetingLines {
            own: [alpha1, b"AAAA"],
            peer: [beta1, b"BBBB"],
        };
        let beta = GreetingLines {
            own: [beta1, b"BBBB"],
            peer: [alpha1, b"AAAA"],
        };
        let m = AuthMethod::HmacSha3_512;
        let token = own_token(m, b"geheim", &alpha).unwrap();
        assert_eq!(
            token,
            "9244c27ea89aa890f4bd7532f3831b64b1985f28701deb83d6d446e3c81db2ed\
             14100090c39162b487c7b81a3485b36ba4de07094b003ccd1ef40e0fee364431"
        );
        assert!(verify_peer_token(m, token.as_bytes(), b"geheim", &beta, false).is_ok());
        assert_eq!(
            verify_peer_token(m, token.as_bytes(), b"geheimx", &beta, false),
            Err(AuthError::Mismatch { method: m })
        );
    }

    #[test]
    fn tls_sha3_512_is_sha3_of_own() {
        let m = AuthMethod::TlsSha3_512;
        let token = own_token(m, b"", &side_a()).unwrap();
        assert_eq!(token, lower_hex(&Sha3_512::digest(side_a().own_first())));
        assert_eq!(token.len(), 128);
        assert!(verify_peer_token(m, token.as_bytes(), b"", &side_b(), true).is_ok());
        assert_eq!(
            verify_peer_token(m, token.as_bytes(), b"", &side_b(), false),
            Err(AuthError::TlsRequired { method: m })
        );
    }

    #[test]
    fn cleartext() {
        let m = AuthMethod::Cleartext;
        assert_eq!(own_token(m, b"geheim", &side_a()).unwrap(), "67656865696d");
        assert!(verify_peer_token(m, b"67656865696d", b"geheim", &side_b(), false).is_ok());
        assert_eq!(
            verify_peer_token(m, b"67656865696D", b"geheim", &side_b(), false),
            Err(AuthError::Mismatch { method: m })
        );
        assert_eq!(
            own_token(m, b"", &side_a()),
            Err(AuthError::NoSecret { method: m })
        );
        // Inside TLS with no local secret an empty token is accepted (Perl rule) ...
        assert!(verify_peer_token(m, b"", b"", &side_b(), true).is_ok());
        assert_eq!(
            verify_peer_token(m, b"00", b"", &side_b(), true),
            Err(AuthError::Mismatch { method: m })
        );
        // ... but never in plain text.
        assert_eq!(
            verify_peer_token(m, b"", b"", &side_b(), false),
            Err(AuthError::NoSecret { method: m })
        );
    }

    #[test]
    fn tls_anon() {
        let m = AuthMethod::TlsAnon;
        assert_eq!(own_token(m, b"", &side_a()).unwrap(), "");
        assert!(verify_peer_token(m, b"", b"", &side_b(), true).is_ok());
        assert_eq!(
            verify_peer_token(m, b"x", SECRET, &side_b(), true),
            Err(AuthError::Mismatch { method: m })
        );
        assert_eq!(
            verify_peer_token(m, b"", SECRET, &side_b(), false),
            Err(AuthError::TlsRequired { method: m })
        );
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        for m in [AuthMethod::HmacMd6_64_256, AuthMethod::HmacSha3_512] {
            let token = own_token(m, b"other secret", &side_a()).unwrap();
            assert_eq!(
                verify_peer_token(m, token.as_bytes(), SECRET, &side_b(), false),
                Err(AuthError::Mismatch { method: m })
            );
            // Truncated and empty tokens fail the same way.
            let good = own_token(m, SECRET, &side_a()).unwrap();
            for bad in [&good.as_bytes()[..good.len() - 1], b""] {
                assert_eq!(
                    verify_peer_token(m, bad, SECRET, &side_b(), false),
                    Err(AuthError::Mismatch { method: m })
                );
            }
        }
    }

    #[test]
    fn hmac_needs_a_secret_even_inside_tls() {
        for m in [AuthMethod::HmacMd6_64_256, AuthMethod::HmacSha3_512] {
            assert_eq!(
                own_token(m, b"", &side_a()),
                Err(AuthError::NoSecret { method: m })
            );
            for tls in [false, true] {
                assert_eq!(
                    verify_peer_token(m, b"", b"", &side_b(), tls),
                    Err(AuthError::NoSecret { method: m })
                );
            }
        }
        // Perl's TLS quirk (key = PEER, empty message) must not be accepted.
        let mut mac = hmac::SimpleHmac::<Md6_256>::new_from_slice(&side_a().own_first()).unwrap();
        mac.update(b"");
        let quirk = lower_hex(&mac.finalize().into_bytes());
        let m = AuthMethod::HmacMd6_64_256;
        assert_eq!(
            verify_peer_token(m, quirk.as_bytes(), SECRET, &side_b(), true),
            Err(AuthError::Mismatch { method: m })
        );
        // Over TLS with the secret, the proper token verifies.
        assert!(verify_peer_token(m, A_HMAC.as_bytes(), SECRET, &side_b(), true).is_ok());
    }

    #[test]
    fn token_comparison_is_plain_byte_equality() {
        assert!(tokens_equal(b"", b""));
        assert!(tokens_equal(A_HMAC.as_bytes(), A_HMAC.as_bytes()));
        assert!(!tokens_equal(A_HMAC.as_bytes(), B_HMAC.as_bytes()));
        // One differing byte anywhere, a prefix, an extension, another case: all unequal.
        let mut last = A_HMAC.as_bytes().to_vec();
        *last.last_mut().unwrap() ^= 1;
        assert!(!tokens_equal(A_HMAC.as_bytes(), &last));
        let mut first = A_HMAC.as_bytes().to_vec();
        first[0] ^= 1;
        assert!(!tokens_equal(A_HMAC.as_bytes(), &first));
        assert!(!tokens_equal(A_HMAC.as_bytes(), &A_HMAC.as_bytes()[..63]));
        assert!(!tokens_equal(&A_HMAC.as_bytes()[..63], A_HMAC.as_bytes()));
        assert!(!tokens_equal(b"67656865696d", b"67656865696D"));
        assert!(!tokens_equal(b"", b"0"));
    }

    #[test]
    fn redacted_secrets_show_their_length_only() {
        let shown = format!("{:?}", Redacted(SECRET));
        assert_eq!(shown, format!("\"<redacted {} bytes>\"", SECRET.len()));
        assert_eq!(format!("{:?}", Redacted(b"")), "\"<none>\"");
    }

    #[test]
    fn error_messages_name_the_method() {
        let e = AuthError::TlsRequired {
            method: AuthMethod::TlsAnon,
        };
        assert!(e.to_string().contains("tls_anon"));
        let e = AuthError::Mismatch {
            method: AuthMethod::HmacSha3_512,
        };
        assert!(e.to_string().contains("hmac_sha3_512"));
    }
}
