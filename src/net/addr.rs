//! Addresses in Perl's syntax, for binds and seeds (AEMP protocol notes §4.3; Perl 2.x
//! `AnyEvent::MP::Kernel::_resolve`).
//!
//! A text is a comma-separated list. Each element is one of:
//!
//! * `host:port` — a host name or an IPv4 address;
//! * `[v6]:port` — an IPv6 address (or a host name) in brackets; a bare IPv6 address without
//!   brackets is taken whole as the host, with port 0, as Perl's `parse_hostport` does;
//! * `port` — this machine's host name with that port;
//! * empty — this machine's host name, port 0.
//!
//! A port `*` or a missing port means 0 (ephemeral). The host `*` means every address of the
//! local interfaces except IPv4 loopback (`127/8`), and of IPv6 only global unicast
//! (`2000::/3`) and unique local (`fc00::/7`) addresses, IPv4 first ([`interface_ips`]). Names
//! resolve to all their addresses, in the resolver's order, duplicates removed.
//!
//! Parsing ([`parse`], [`parse_list`]) is pure; [`resolve`] and [`resolve_all`] ask the
//! resolver and the interfaces.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What was wrong with an address, naming the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// `[` without its `]`.
    #[error("{text:?}: '[' without ']'")]
    Unclosed {
        /// The element.
        text: String,
    },
    /// Something other than `:port` after `]`.
    #[error("{text:?}: expected ':PORT' after ']'")]
    AfterBracket {
        /// The element.
        text: String,
    },
    /// More than one `:` outside brackets, and not an IPv6 address either.
    #[error("{text:?}: more than one ':' (put an IPv6 address in brackets: [::1]:4040)")]
    Colons {
        /// The element.
        text: String,
    },
    /// An empty host before `:port`, or a host that cannot be one.
    #[error("{text:?}: bad host {host:?}")]
    Host {
        /// The element.
        text: String,
        /// The host part.
        host: String,
    },
    /// A port that is not a number (nor `*`).
    #[error("{text:?}: port {port:?} is not a number")]
    Port {
        /// The element.
        text: String,
        /// The port part.
        port: String,
    },
    /// A port above 65535.
    #[error("{text:?}: port {port} is out of range (0-65535)")]
    PortRange {
        /// The element.
        text: String,
        /// The port part.
        port: String,
    },
    /// This machine's host name is not valid UTF-8.
    #[error("this machine's host name {name:?} is not valid UTF-8")]
    HostName {
        /// The name, lossily converted.
        name: String,
    },
    /// A name did not resolve.
    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// A name resolved to no address.
    #[error("{host:?} resolves to no address")]
    NoAddress {
        /// The name.
        host: String,
    },
    /// The local interfaces could not be listed (for host `*`).
    #[error("cannot list the local interfaces for '*': {0}")]
    Interfaces(io::Error),
}

/// The host part of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `*`: the addresses of the local interfaces (see [`interface_ips`]).
    Interfaces,
    /// This machine's host name (a bare port, or an empty element).
    ThisHost,
    /// An IP address.
    Ip(IpAddr),
    /// A host name, to resolve.
    Name(String),
}

/// One parsed element: a host and a port (0: ephemeral).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host.
    pub host: Host,
    /// The port; 0 for `*` or a missing port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Interfaces => write!(f, "*:{}", self.port),
            Host::ThisHost => write!(f, "{}", self.port),
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// Parses one element (no commas).
pub fn parse(text: &str) -> Result<Endpoint, AddrError> {
    let t = text.trim();
    let port_of = |port: &str| parse_port(text, port);
    // Perl: an element of digits only (or nothing) is a port on this machine's host name.
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let port = if t.is_empty() { 0 } else { port_of(t)? };
        return Ok(Endpoint {
            host: Host::ThisHost,
            port,
        });
    }
    // Perl's `parse_hostport` takes a bare IPv6 address whole, with the default port.
    if let Ok(v6) = t.parse::<Ipv6Addr>() {
        return Ok(Endpoint {
            host: Host::Ip(IpAddr::V6(v6)),
            port: 0,
        });
    }
    let (host, port) = if let Some(inner) = t.strip_prefix('[') {
        let Some((host, rest)) = inner.split_once(']') else {
            return Err(AddrError::Unclosed { text: text.into() });
        };
        let port = match rest {
            "" => None,
            _ => match rest.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(AddrError::AfterBracket { text: text.into() }),
            },
        };
        (bracketed_host(text, host)?, port)
    } else {
        let (host, port) = match t.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (t, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(AddrError::Colons { text: text.into() });
        }
        (plain_host(text, host)?, port)
    };
    let port = match port {
        None => 0,
        Some(p) => port_of(p)?,
    };
    Ok(Endpoint { host, port })
}

/// Parses a comma-separated list; every element counts, empty ones too (this machine's host
/// name, port 0).
pub fn parse_list(text: &str) -> Result<Vec<Endpoint>, AddrError> {
    text.split(',').map(parse).collect()
}

/// Parses several lists into one.
pub fn parse_all<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Endpoint>, AddrError> {
    let mut out = Vec::new();
    for t in texts {
        out.extend(parse_list(t.as_ref())?);
    }
    Ok(out)
}

fn parse_port(text: &str, port: &str) -> Result<u16, AddrError> {
    if port == "*" {
        return Ok(0);
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::Port {
            text: text.into(),
            port: port.into(),
        });
    }
    // Digits only, so a failure here is a number too large.
    port.parse().map_err(|_| AddrError::PortRange {
        text: text.into(),
        port: port.into(),
    })
}

/// The host inside brackets: an IPv6 address, or (as Perl allows) anything without `:`.
fn bracketed_host(text: &str, host: &str) -> Result<Host, AddrError> {
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Ok(Host::Ip(IpAddr::V6(v6)));
    }
    if host.contains(':') || host.contains('[') {
        return Err(AddrError::Host {
            text: text.into(),
            host: host.into(),
        });
    }
    plain_host(text, host)
}

fn plain_host(text: &str, host: &str) -> Result<Host, AddrError> {
    if host.is_empty() || host.contains(['[', ']']) || host.contains(char::is_whitespace) {
        return Err(AddrError::Host {
            text: text.into(),
            host: host.into(),
        });
    }
    Ok(match host {
        "*" => Host::Interfaces,
        _ => match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.into()),
        },
    })
}

/// Which of the local interface addresses `*` stands for, as Perl picks them: IPv4 except
/// `127/8`, then IPv6 global unicast (first byte `0x20`–`0x3f`) and unique local (`0xfc`,
/// `0xfd`); order kept, duplicates removed.
pub fn interface_ips(all: &[IpAddr]) -> Vec<IpAddr> {
    let v4 = all
        .iter()
        .filter(|ip| matches!(ip, IpAddr::V4(a) if a.octets()[0] != 127));
    let v6 = all.iter().filter(
        |ip| matches!(ip, IpAddr::V6(a) if matches!(a.octets()[0], 0x20..=0x3f | 0xfc | 0xfd)),
    );
    let mut out = Vec::new();
    for ip in v4.chain(v6) {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// What `*` stands for on a machine with these interface addresses, and whether that is the
/// loopback fallback: where [`interface_ips`] finds nothing, `127.0.0.1` (and `::1` where the
/// machine has it), so that such a node is still reachable locally. (Perl would have no
/// listener there.)
pub fn star_ips(all: &[IpAddr]) -> (Vec<IpAddr>, bool) {
    let picked = interface_ips(all);
    if !picked.is_empty() {
        return (picked, false);
    }
    let mut fallback = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if all.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)) {
        fallback.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    (fallback, true)
}

/// The addresses an element stands for, in order, duplicates removed. `*` that finds only
/// loopback falls back to it with a warning (see [`star_ips`]).
pub async fn resolve(endpoint: &Endpoint) -> Result<Vec<SocketAddr>, AddrError> {
    let port = endpoint.port;
    let name = match &endpoint.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Interfaces => {
            let all: Vec<IpAddr> = if_addrs::get_if_addrs()
                .map_err(AddrError::Interfaces)?
                .iter()
                .map(if_addrs::Interface::ip)
                .collect();
            let (ips, fell_back) = star_ips(&all);
            if fell_back {
                tracing::warn!(
                    "'*' found no interface address but loopback; using {ips:?} (reachable from \
                     this machine only)"
                );
            }
            return Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
        Host::ThisHost => this_host()?,
        Host::Name(n) => n.clone(),
    };
    let found = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map_err(|source| AddrError::Resolve {
            host: name.clone(),
            source,
        })?;
    let mut out = Vec::new();
    for sa in found {
        if !out.contains(&sa) {
            out.push(sa);
        }
    }
    if out.is_empty() {
        return Err(AddrError::NoAddress { host: name });
    }
    Ok(out)
}

/// Parses every text (all of them before resolving anything, so that a typo is found first),
/// then resolves each element; the addresses in order, duplicates removed.
pub async fn resolve_all<S: AsRef<str>>(texts: &[S]) -> Result<Vec<SocketAddr>, AddrError> {
    let mut out = Vec::new();
    for endpoint in parse_all(texts)? {
        for sa in resolve(&endpoint).await? {
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    Ok(out)
}

/// This machine's host name, as Perl's `nodename` (`uname -n`).
fn this_host() -> Result<String, AddrError> {
    gethostname::gethostname()
        .into_string()
        .map_err(|name| AddrError::HostName {
            name: name.to_string_lossy().into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: Host, port: u16) -> Endpoint {
        Endpoint { host, port }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_form_parses() {
        let name = |n: &str| Host::Name(n.into());
        let cases: &[(&str, Endpoint)] = &[
            ("example.org:4040", ep(name("example.org"), 4040)),
            ("10.0.0.1:4040", ep(Host::Ip(ip("10.0.0.1")), 4040)),
            ("[::1]:4040", ep(Host::Ip(ip("::1")), 4040)),
            ("[fd00::1]:*", ep(Host::Ip(ip("fd00::1")), 0)),
            ("[::1]", ep(Host::Ip(ip("::1")), 0)),
            ("[localhost]:7", ep(name("localhost"), 7)),
            ("::1", ep(Host::Ip(ip("::1")), 0)),
            ("4040", ep(Host::ThisHost, 4040)),
            ("", ep(Host::ThisHost, 0)),
            ("  ", ep(Host::ThisHost, 0)),
            ("*:4040", ep(Host::Interfaces, 4040)),
            ("*:*", ep(Host::Interfaces, 0)),
            ("*", ep(Host::Interfaces, 0)),
            ("example.org", ep(name("example.org"), 0)),
            ("example.org:*", ep(name("example.org"), 0)),
            (" 127.0.0.1:0 ", ep(Host::Ip(ip("127.0.0.1")), 0)),
            ("host:65535", ep(name("host"), 65535)),
        ];
        for (text, want) in cases {
            assert_eq!(&parse(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn lists_are_comma_separated_and_keep_empty_elements() {
        assert_eq!(
            parse_list("[::1]:4040,127.0.0.1:4041").unwrap(),
            [
                ep(Host::Ip(ip("::1")), 4040),
                ep(Host::Ip(ip("127.0.0.1")), 4041)
            ]
        );
        assert_eq!(
            parse_list("4040,,*").unwrap(),
            [
                ep(Host::ThisHost, 4040),
                ep(Host::ThisHost, 0),
                ep(Host::Interfaces, 0)
            ]
        );
        assert_eq!(
            parse_all(&["a:1,b:2", "c:3"]).unwrap().len(),
            3,
            "several lists make one"
        );
        assert!(matches!(
            parse_list("a:1,b:x"),
            Err(AddrError::Port { text, port }) if text == "b:x" && port == "x"
        ));
    }

    #[test]
    fn bad_inputs_are_typed_errors_naming_the_text() {
        use AddrError as E;
        let err = |t: &str| parse(t).unwrap_err();
        assert!(matches!(err("[::1"), E::Unclosed { text } if text == "[::1"));
        assert!(matches!(err("[::1]4040"), E::AfterBracket { .. }));
        assert!(matches!(err("[::1]:"), E::Port { port, .. } if port.is_empty()));
        assert!(matches!(err("host:4040:extra"), E::Colons { text } if text == "host:4040:extra"));
        assert!(matches!(err("a:1:2"), E::Colons { .. }));
        assert!(matches!(err("host:65536"), E::PortRange { port, .. } if port == "65536"));
        assert!(matches!(
            err("host:99999999999999999999"),
            E::PortRange { .. }
        ));
        assert!(matches!(err("99999"), E::PortRange { .. }));
        assert!(matches!(err("host:http"), E::Port { port, .. } if port == "http"));
        assert!(matches!(err("host:-1"), E::Port { .. }));
        assert!(matches!(err("host:"), E::Port { .. }));
        assert!(matches!(err(":4040"), E::Host { host, .. } if host.is_empty()));
        assert!(matches!(err("[]:4040"), E::Host { .. }));
        assert!(matches!(err("[a:b]:1"), E::Host { host, .. } if host == "a:b"));
        assert!(matches!(err("a]b:1"), E::Host { .. }));
        assert!(matches!(err("a b:1"), E::Host { .. }));
        let shown = err("host:port:extra").to_string();
        assert!(shown.contains("\"host:port:extra\""), "{shown}");
        let shown = err("host:70000").to_string();
        assert!(
            shown.contains("\"host:70000\"") && shown.contains("70000"),
            "{shown}"
        );
    }

    #[test]
    fn star_keeps_interface_addresses_as_perl_does() {
        let all: Vec<IpAddr> = [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "2001:db8::1",
            "10.1.2.3",
            "fd00::1",
            "127.0.1.1",
            "fc00::2",
            "3fff::1",
            "4000::1",
            "ff02::1",
            "10.1.2.3",
            "192.168.1.1",
        ]
        .map(ip)
        .into();
        let want: Vec<IpAddr> = [
            "10.1.2.3",
            "192.168.1.1",
            "2001:db8::1",
            "fd00::1",
            "fc00::2",
            "3fff::1",
        ]
        .map(ip)
        .into();
        assert_eq!(interface_ips(&all), want);
        assert_eq!(star_ips(&all), (want, false));
    }

    #[test]
    fn star_falls_back_to_loopback_when_nothing_else_is_there() {
        let v4_and_v6: Vec<IpAddr> = ["127.0.0.1", "::1", "fe80::1"].map(ip).into();
        assert_eq!(
            star_ips(&v4_and_v6),
            (vec![ip("127.0.0.1"), ip("::1")], true)
        );
        assert_eq!(star_ips(&[ip("127.0.0.1")]), (vec![ip("127.0.0.1")], true));
        assert_eq!(star_ips(&[]), (vec![ip("127.0.0.1")], true));
    }

    #[test]
    fn endpoints_display_in_the_input_syntax() {
        for text in ["*:4040", "4040", "10.0.0.1:1", "[::1]:2", "host:3"] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    #[actix_rt::test]
    async fn literals_resolve_to_themselves_and_duplicates_go() {
        let got = resolve_all(&["127.0.0.1:1,[::1]:2", "127.0.0.1:1"])
            .await
            .unwrap();
        let want: Vec<SocketAddr> =
            vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()];
        assert_eq!(got, want);
        // `*` gives something (the fallback at worst), every address with the port.
        let star = resolve(&parse("*:4040").unwrap()).await.unwrap();
        assert!(!star.is_empty() && star.iter().all(|sa| sa.port() == 4040));
        assert!(matches!(
            resolve_all(&["ok:1", "[::1"]).await,
            Err(AddrError::Unclosed { .. })
        ));
    }
}
