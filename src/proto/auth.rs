//! Auth methods and their tokens (placeholder: being implemented).
//!
//! Interface contract (see the helper brief): `AuthMethod`, `GreetingLines`, `own_token`,
//! `verify_peer_token`, `AuthVerified`, `AuthError`.

use std::fmt;

/// An AEMP auth method, as named in greeting line 1 and the auth line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// Hex of the shared secret (Perl accepts it, never sends it).
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
