//! The two greeting lines every AEMP connection starts with.
//!
//! Line 1: `aemp;<version>;<nodeid>;<auth-accept>;<framings>[;key=value]*`.
//! Line 2: a nonce, 66 random bytes in base64 without padding (88 characters).
//!
//! Parsing follows what Perl does, not what the doc says: fields are split on every `;` (trailing
//! empty fields vanish), the version is compared numerically, nothing is unescaped, and for extra
//! fields the key is the text before the first `=`, later duplicates win.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::TryRng as _;

/// The literal protocol word of greeting line 1.
pub const PROTOCOL: &str = "aemp";

/// Why a greeting line 1 could not be parsed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GreetingError {
    /// Fewer than the five mandatory fields.
    #[error("greeting has {found} fields, at least 5 are needed")]
    TooFewFields {
        /// How many fields were there.
        found: usize,
    },
    /// The protocol word is not `aemp` (nor `aemp-<word>`).
    #[error("greeting does not start with `aemp`")]
    NotAemp,
    /// The line is not UTF-8.
    #[error("greeting is not valid UTF-8")]
    NotUtf8,
    /// The auth-method or framing list names nothing (no link could ever be made).
    #[error("greeting lists no {0}")]
    EmptyList(&'static str),
}

/// A parsed greeting line 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Greeting {
    /// The protocol word: `aemp`, or `aemp-<word>` for side channels (1.24+ `aemp-dataconn`).
    pub proto: String,
    /// The version field as sent (compare with [`Greeting::version_number`]).
    pub version: String,
    /// The sender's node id, verbatim.
    pub node_id: String,
    /// Auth methods the sender accepts from its peer, in its order of preference. Unknown names
    /// are kept: they are the peer's business.
    pub auth_accept: Vec<String>,
    /// Framings the sender accepts and may send, in its order of preference.
    pub framings: Vec<String>,
    /// Extra `key=value` fields in wire order; the value is `None` when there was no `=`.
    pub keys: Vec<(String, Option<String>)>,
}

impl Greeting {
    /// Parses line 1 (without its line terminator).
    pub fn parse(line: &[u8]) -> Result<Greeting, GreetingError> {
        let line = std::str::from_utf8(line).map_err(|_| GreetingError::NotUtf8)?;
        // Perl's split drops trailing empty fields.
        let mut fields: Vec<&str> = line.split(';').collect();
        while fields.last().is_some_and(|f| f.is_empty()) {
            fields.pop();
        }
        if fields.len() < 5 {
            return Err(GreetingError::TooFewFields {
                found: fields.len(),
            });
        }
        let proto = fields[0];
        if proto != PROTOCOL && !proto.starts_with("aemp-") {
            return Err(GreetingError::NotAemp);
        }
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let (auth_accept, framings) = (list(fields[3]), list(fields[4]));
        if auth_accept.is_empty() {
            return Err(GreetingError::EmptyList("auth methods"));
        }
        if framings.is_empty() {
            return Err(GreetingError::EmptyList("framings"));
        }
        let keys = fields[5..]
            .iter()
            .filter(|f| !f.is_empty() && !f.starts_with('='))
            .map(|f| match f.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => ((*f).to_owned(), None),
            })
            .collect();
        Ok(Greeting {
            proto: proto.to_owned(),
            version: fields[1].to_owned(),
            node_id: fields[2].to_owned(),
            auth_accept,
            framings,
            keys,
        })
    }

    /// The version as Perl's numeric conversion sees it (`"1.0"` is 1, `"x"` is 0).
    pub fn version_number(&self) -> f64 {
        perl_number(&self.version)
    }

    /// The value of an extra field; the last occurrence wins, as in Perl. `Some("")` for `key=`
    /// and for a bare `key`.
    pub fn key(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Whether the sender offers TLS: `tls=<v>` with `int(v) == 1`.
    pub fn offers_tls(&self) -> bool {
        self.key("tls")
            .is_some_and(|v| perl_number(v).trunc() == 1.0)
    }

    /// The line as it is sent (without terminator).
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "{};{};{};{};{}",
            self.proto,
            self.version,
            self.node_id,
            self.auth_accept.join(","),
            self.framings.join(",")
        );
        for (k, v) in &self.keys {
            line.push(';');
            line.push_str(k);
            if let Some(v) = v {
                line.push('=');
                line.push_str(v);
            }
        }
        line
    }
}

impl fmt::Display for Greeting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// Perl's string-to-number conversion: the longest numeric prefix after leading whitespace,
/// 0 when there is none.
pub fn perl_number(s: &str) -> f64 {
    let s = s.trim_start();
    let bytes = s.as_bytes();
    let mut end = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        end = 1;
    }
    let digits_start = end;
    while bytes.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    if bytes.get(end) == Some(&b'.') {
        end += 1;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    if end == digits_start || &s[digits_start..end] == "." {
        return 0.0;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exp_end = end + 1;
        if matches!(bytes.get(exp_end), Some(b'+' | b'-')) {
            exp_end += 1;
        }
        let exp_digits = exp_end;
        while bytes.get(exp_end).is_some_and(u8::is_ascii_digit) {
            exp_end += 1;
        }
        if exp_end > exp_digits {
            end = exp_end;
        }
    }
    s[..end].parse().unwrap_or(0.0)
}

/// A greeting line 2: the nonce, as base64 text.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce(String);

/// The OS random source failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw a nonce from the operating system: {0}")]
pub struct NonceError(String);

impl Nonce {
    /// Number of random bytes in a nonce, as Perl sends (88 base64 characters, no padding).
    pub const RANDOM_BYTES: usize = 66;

    /// A fresh nonce from the operating system's CSPRNG: `rand::rngs::SysRng` (rand 0.10's name
    /// for `OsRng`) reads `getrandom` for every nonce, with no user-space generator in between.
    /// Perl 1.x reads `/dev/urandom` as well (2.x uses `rand()`).
    pub fn random() -> Result<Nonce, NonceError> {
        let mut bytes = [0u8; Self::RANDOM_BYTES];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| NonceError(e.to_string()))?;
        Ok(Nonce(STANDARD_NO_PAD.encode(bytes)))
    }

    /// A nonce line given verbatim (for replaying captures). It must not contain CR or LF.
    pub fn from_line(line: impl Into<String>) -> Option<Nonce> {
        let line = line.into();
        (!line.contains(['\r', '\n'])).then_some(Nonce(line))
    }

    /// The nonce line as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: &str = "aemp;0;ruth;tls_md6_64_256,hmac_md6_64_256,tls_anon,cleartext;json,storable;provider=AE-1.0;timeout=12;peeraddr=10.0.0.1:37108";

    #[test]
    fn parses_a_perl_line() {
        let g = Greeting::parse(P0.as_bytes()).unwrap();
        assert_eq!(g.proto, "aemp");
        assert_eq!(g.version_number(), 0.0);
        assert_eq!(g.node_id, "ruth");
        assert_eq!(g.auth_accept.len(), 4);
        assert_eq!(g.framings, ["json", "storable"]);
        assert_eq!(g.key("timeout"), Some("12"));
        assert_eq!(g.key("peeraddr"), Some("10.0.0.1:37108"));
        assert_eq!(g.key("tls"), None);
        assert_eq!(g.to_line(), P0);
    }

    #[test]
    fn keys_follow_perl_rules() {
        let g = Greeting::parse(b"aemp;1;n;a;json;x=1;=skip;;flag;x=2;eq=a=b;empty=;;;").unwrap();
        assert_eq!(g.key("x"), Some("2"), "later duplicates win");
        assert_eq!(g.key("flag"), Some(""));
        assert_eq!(g.key("eq"), Some("a=b"));
        assert_eq!(g.key("empty"), Some(""));
        assert!(!g.keys.iter().any(|(k, _)| k.is_empty()));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(
            Greeting::parse(b"aemp;0;n;a"),
            Err(GreetingError::TooFewFields { found: 4 })
        );
        assert_eq!(
            Greeting::parse(b"aemp;0;n;a;json;;;"),
            Ok(Greeting::parse(b"aemp;0;n;a;json").unwrap())
        );
        assert_eq!(
            Greeting::parse(b"http;0;n;a;json"),
            Err(GreetingError::NotAemp)
        );
        assert_eq!(
            Greeting::parse(b"aemp;0;\xff;a;json"),
            Err(GreetingError::NotUtf8)
        );
        assert!(Greeting::parse(b"aemp-dataconn;1;n;a;json").is_ok());
        // Found by fuzzing: a list of only commas cannot be printed back.
        assert_eq!(
            Greeting::parse(b"aemp;0;n;a;,"),
            Err(GreetingError::EmptyList("framings"))
        );
        assert_eq!(
            Greeting::parse(b"aemp;0;n;,,;json"),
            Err(GreetingError::EmptyList("auth methods"))
        );
    }

    #[test]
    fn versions_compare_numerically() {
        for (text, n) in [
            ("0", 0.0),
            ("1", 1.0),
            ("1.0", 1.0),
            ("01", 1.0),
            ("x", 0.0),
            ("1x", 1.0),
            (" 2", 2.0),
            ("", 0.0),
            (".", 0.0),
            ("1e0", 1.0),
            ("-1", -1.0),
        ] {
            assert_eq!(perl_number(text), n, "{text:?}");
        }
    }

    #[test]
    fn tls_offer_needs_int_one() {
        let with =
            |v: &str| Greeting::parse(format!("aemp;0;n;a;json;tls={v}").as_bytes()).unwrap();
        assert!(with("1.0").offers_tls());
        assert!(with("1.9").offers_tls());
        assert!(!with("2").offers_tls());
        assert!(!with("").offers_tls());
    }

    #[test]
    fn random_nonces_are_88_base64_chars_and_differ() {
        let a = Nonce::random().unwrap();
        let b = Nonce::random().unwrap();
        assert_eq!(a.as_str().len(), 88);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        );
        assert_ne!(a, b);
        assert!(Nonce::from_line("a\nb").is_none());
    }
}
