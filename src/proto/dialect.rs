//! The released Perl dialects of AEMP and how to tell them apart from greeting line 1.
//!
//! | dialect | Perl versions | version field | auth | framings | node protocol |
//! |---|---|---|---|---|---|
//! | P0  | 1.0 and the seed spec | 0 | MD6 | json, storable | `kil` notifies |
//! | P1a | 1.1–1.24  | 1 | MD6 | json, storable | `kil` notifies |
//! | P1b | 1.26–1.30 | 1 | MD6 | json, storable | `kil0` notifies, `kil` kills |
//! | P2  | 2.x       | 1 | SHA3 | cbor, json, storable | `kil0` notifies, `kil1` kills, `g_*` |

use std::fmt;

use super::auth::AuthMethod;
use super::framing::Framing;
use super::greeting::{Greeting, PROTOCOL};

/// The `provider` value prefix of Rust nodes: `aemp-rs-<crate version>`.
pub const RUST_PROVIDER_PREFIX: &str = "aemp-rs-";

/// A released dialect of AEMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dialect {
    /// AnyEvent::MP 1.0 and the seed spec (protocol version 0).
    P0,
    /// AnyEvent::MP 1.1–1.24.
    P1a,
    /// AnyEvent::MP 1.26–1.30 (incompatible node protocol, same greeting as P1a).
    P1b,
    /// AnyEvent::MP 2.x (SHA3 auth, CBOR framing, global database protocol).
    P2,
}

impl Dialect {
    /// Every dialect, oldest first.
    pub const ALL: [Dialect; 4] = [Dialect::P0, Dialect::P1a, Dialect::P1b, Dialect::P2];

    /// The short name (`p0`, `p1a`, `p1b`, `p2`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::P0 => "p0",
            Dialect::P1a => "p1a",
            Dialect::P1b => "p1b",
            Dialect::P2 => "p2",
        }
    }

    /// Parses a short name as printed by [`Dialect::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Dialect> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name))
    }

    /// The protocol version field of greeting line 1.
    pub fn version(self) -> u32 {
        match self {
            Dialect::P0 => 0,
            _ => 1,
        }
    }

    /// Auth methods we accept from the peer by default, in order of preference, as advertised
    /// in line 1.
    ///
    /// Perl's default list ends in `cleartext` too; ours does not, because a peer that uses it
    /// sends the shared secret to anyone on the path. A handshake with `allow_cleartext` set
    /// appends it (see [`HandshakeConfig`](super::handshake::HandshakeConfig)). Perl nodes
    /// never send `cleartext` (it is not in their `auth_offer`), so they do not miss it.
    pub fn auth_accept(self) -> &'static [AuthMethod] {
        use AuthMethod::*;
        match self {
            Dialect::P2 => &[TlsSha3_512, HmacSha3_512, TlsAnon],
            _ => &[TlsMd6_64_256, HmacMd6_64_256, TlsAnon],
        }
    }

    /// Auth methods we may send, as Perl's default `auth_offer`.
    pub fn auth_offer(self) -> &'static [AuthMethod] {
        use AuthMethod::*;
        match self {
            Dialect::P2 => &[TlsSha3_512, HmacSha3_512],
            _ => &[TlsMd6_64_256, HmacMd6_64_256],
        }
    }

    /// Framings we accept and may send, in order of preference.
    ///
    /// Perl lists `storable` too; we offer only what is needed to talk to every Perl node
    /// (every Perl node offers json), and decode storable only if configured.
    pub fn framings(self) -> &'static [Framing] {
        match self {
            Dialect::P2 => &[Framing::Cbor, Framing::Json],
            _ => &[Framing::Json],
        }
    }

    /// Recognises the dialect of a peer from its line 1.
    ///
    /// Version 0 is P0. Among version 1: `mproto`/`gproto` keys or SHA3 methods mean P2; a
    /// `timeout` key (1.1–1.23) or `provider=AE-1.24` means P1a; anything else is P1b (1.26–1.30,
    /// whose greetings carry neither). Rust peers shape their line 1 like the dialect they speak,
    /// so the same rules apply to them. Returns `None` for other versions.
    pub fn of_greeting(greeting: &Greeting) -> Option<Dialect> {
        if greeting.proto != PROTOCOL && !greeting.proto.starts_with("aemp-") {
            return None;
        }
        let version = greeting.version_number();
        if version == 0.0 {
            return Some(Dialect::P0);
        }
        if version != 1.0 {
            return None;
        }
        let sha3 = greeting.auth_accept.iter().any(|m| m.ends_with("sha3_512"));
        if greeting.key("mproto").is_some() || greeting.key("gproto").is_some() || sha3 {
            return Some(Dialect::P2);
        }
        if greeting.key("timeout").is_some() {
            return Some(Dialect::P1a);
        }
        match greeting.key("provider") {
            Some(p) if p == "AE-1.24" || perl_release(p).is_some_and(|v| v < 1.25) => {
                Some(Dialect::P1a)
            }
            _ => Some(Dialect::P1b),
        }
    }

    /// The greeting line 1 a node of this dialect sends, with our extra keys.
    ///
    /// `tls` adds `tls=1.0`; `peer_addr` (the other end as we know it) adds `peeraddr`.
    pub fn greeting(
        self,
        node_id: &str,
        accept: &[AuthMethod],
        framings: &[Framing],
        tls: bool,
        peer_addr: Option<&str>,
    ) -> Greeting {
        let mut keys: Vec<(String, Option<String>)> = vec![(
            "provider".into(),
            Some(format!(
                "{RUST_PROVIDER_PREFIX}{}",
                env!("CARGO_PKG_VERSION")
            )),
        )];
        match self {
            // P0 peers take our `timeout` as their read timeout; we send `[]` within T−3 s.
            Dialect::P0 => keys.push(("timeout".into(), Some(P0_TIMEOUT_SECS.to_string()))),
            // 1.1–1.23 sent an empty `timeout=`; it is how P1a is recognised.
            Dialect::P1a => keys.push(("timeout".into(), Some(String::new()))),
            Dialect::P1b => {}
            Dialect::P2 => {
                keys.push(("mproto".into(), Some("1".into())));
                keys.push(("gproto".into(), Some("1".into())));
            }
        }
        if tls {
            keys.push(("tls".into(), Some("1.0".into())));
        }
        if let Some(addr) = peer_addr {
            keys.push(("peeraddr".into(), Some(addr.to_owned())));
        }
        Greeting {
            proto: PROTOCOL.into(),
            version: self.version().to_string(),
            node_id: node_id.to_owned(),
            auth_accept: accept.iter().map(|m| m.name().to_owned()).collect(),
            framings: framings.iter().map(|f| f.name().to_owned()).collect(),
            keys,
        }
    }
}

/// The `timeout=` we advertise to P0 peers: they drop the link after this many seconds of read
/// silence, and we promise traffic every `timeout − 3` seconds (Perl's default is 12 as well).
pub const P0_TIMEOUT_SECS: u32 = 12;

/// Whether a greeting comes from a Rust node (`provider=aemp-rs-…`).
pub fn is_rust_peer(greeting: &Greeting) -> bool {
    greeting
        .key("provider")
        .is_some_and(|p| p.starts_with(RUST_PROVIDER_PREFIX))
}

/// The Perl release number in a `provider=AE-<version>` value.
fn perl_release(provider: &str) -> Option<f64> {
    let v = provider.strip_prefix("AE-")?;
    v.parse().ok()
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect(line: &str) -> Option<Dialect> {
        Dialect::of_greeting(&Greeting::parse(line.as_bytes()).unwrap())
    }

    #[test]
    fn recognises_every_perl_release_line() {
        let md6 = "tls_md6_64_256,hmac_md6_64_256,tls_anon,cleartext";
        let sha3 = "tls_sha3_512,hmac_sha3_512,tls_anon,cleartext";
        assert_eq!(
            dialect(&format!(
                "aemp;0;r;{md6};json,storable;provider=AE-1.0;timeout=12"
            )),
            Some(Dialect::P0)
        );
        assert_eq!(
            dialect(&format!(
                "aemp;1;r;{md6};json,storable;timeout=;provider=AE-1.1"
            )),
            Some(Dialect::P1a)
        );
        assert_eq!(
            dialect(&format!(
                "aemp;1;r;{md6};json,storable;timeout=;provider=AE-"
            )),
            Some(Dialect::P1a)
        );
        assert_eq!(
            dialect(&format!("aemp;1;r;{md6};json,storable;provider=AE-1.24")),
            Some(Dialect::P1a)
        );
        assert_eq!(
            dialect(&format!("aemp;1;r;{md6};json,storable;provider=AE-1.26")),
            Some(Dialect::P1b)
        );
        assert_eq!(
            dialect(&format!(
                "aemp;1;r;{md6};json,storable;tls=1.0;provider=AE-1.30"
            )),
            Some(Dialect::P1b)
        );
        assert_eq!(
            dialect(&format!(
                "aemp;1;r;{sha3};cbor,json,storable;provider=AE-2.01;mproto=1;gproto=1"
            )),
            Some(Dialect::P2)
        );
        assert_eq!(
            dialect(&format!("aemp;1.0;r;{sha3};cbor")),
            Some(Dialect::P2)
        );
        assert_eq!(dialect(&format!("aemp;2;r;{md6};json")), None);
    }

    #[test]
    fn our_own_lines_are_recognised_as_what_they_speak() {
        for d in Dialect::ALL {
            let g = d.greeting(
                "me",
                d.auth_accept(),
                d.framings(),
                false,
                Some("127.0.0.1:1"),
            );
            let parsed = Greeting::parse(g.to_line().as_bytes()).unwrap();
            assert_eq!(Dialect::of_greeting(&parsed), Some(d), "{}", g.to_line());
            assert!(is_rust_peer(&parsed));
        }
    }

    #[test]
    fn names_round_trip() {
        for d in Dialect::ALL {
            assert_eq!(Dialect::from_name(d.name()), Some(d));
        }
        assert_eq!(Dialect::from_name("P1B"), Some(Dialect::P1b));
    }
}
