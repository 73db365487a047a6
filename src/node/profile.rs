//! Perl's profile file (`~/.perl-anyevent-mp`), shared with Perl nodes and Perl's `aemp`
//! (AEMP-NOTES §4.2).
//!
//! The file is a JSON object:
//!
//! ```json
//! {
//!    "version" : 1,
//!    "secret" : "global: every profile inherits this",
//!    "profile" : {
//!       "server" : { "binds" : ["*:4040"] },
//!       "web1" : { "parent" : "server", "nodeid" : "web1" }
//!    }
//! }
//! ```
//!
//! It is found at `$PERL_ANYEVENT_MP_RC`, else `$HOME/.perl-anyevent-mp`, else
//! `$APPDATA/perl-anyevent-mp`, and read with Perl's relaxed parser rules (trailing commas,
//! `#` comments to the end of the line, literal tabs inside strings). A missing file is an
//! empty one.
//!
//! # Resolution
//!
//! The settings of profile `P` ([`ProfileFile::resolve`]) are, each layer overriding the one
//! before: Perl's built-in defaults ([`perl_defaults`]), the program's own arguments (Perl's
//! `configure` arguments), the global section (the top level of the file), then the profiles
//! of `P`'s parent chain from the farthest ancestor down to `P`. So the file beats the
//! program, unless `force` is set (then the arguments come last). A profile that does not
//! exist is empty. The default profile name is the host name ([`host_name`]).
//!
//! # What a Rust node takes from it
//!
//! [`ResolvedProfile::apply_to`] maps the keys onto [`NodeConfig`]:
//!
//! | key | `NodeConfig` |
//! |-----|--------------|
//! | `nodeid` | `node_id`, `%n` → host name, `%u` → a random string; missing: `<profile>/` (a random suffix is added, as Perl's `<profile>/%u`) |
//! | `secret` | `secret` (a string; a number is taken as its decimal text) |
//! | `cert` | `tls`: the PEM text (key, certificate, CA certificates), as `--cert FILE` |
//! | `seeds` | `seeds` |
//! | `binds` | `binds`; missing: `["*"]`, as Perl |
//! | `services` | `services` ([`Service`]) |
//! | `monitor_timeout` (s) | `connect_timeout`, `handshake_timeout`, `seed_retry_max` and `liveness_timeout`: the parts Perl's `monitor_timeout` plays |
//! | `connect_interval` (s) | `connect_interval` |
//!
//! `framing_format`, `auth_offer`, `auth_accept`, `autocork`, `nodelay`, `secure` and `eval`
//! are kept in the resolved profile (and in the file) but do not change a Rust node: it
//! negotiates framing and auth by dialect, always sets `TCP_NODELAY`, never corks, and never
//! runs code sent by a peer (it is always "secure"); each one set is logged at debug level.
//! Keys this module does not know are kept as well, never dropped when the file is rewritten.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json};

use super::config::{NodeConfig, random_name};
use crate::net::tls::{TlsError, TlsSettings};
use crate::proto::value::Value;

/// The transport keys of a profile (notes §1.15) that `aemp set…`/`del…` edit as they are.
pub const TRANSPORT_KEYS: &[&str] = &[
    "monitor_timeout",
    "connect_interval",
    "framing_format",
    "auth_offer",
    "auth_accept",
    "autocork",
    "nodelay",
    "secure",
    "eval",
];

/// The environment variable that names the profile file.
pub const RC_ENV: &str = "PERL_ANYEVENT_MP_RC";

/// What went wrong reading, resolving or writing the profile file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not (relaxed) JSON.
    #[error("{}:{line}:{column}: not valid JSON: {message}", path.display())]
    BadJson {
        /// The file (empty when parsed from a string).
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The file's top level, or its `profile` member, is not a JSON object.
    #[error("{}: {what} is not a JSON object", path.display())]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// `the top level` or `"profile"` or `profile NAME`.
        what: String,
    },
    /// A key has a value of the wrong type.
    #[error("{key} in {section}: expected {expected}, found {found}")]
    WrongType {
        /// Where the value came from: `profile NAME`, `the global section`, `the arguments`.
        section: String,
        /// The key.
        key: String,
        /// What it should be.
        expected: &'static str,
        /// The value found (JSON, shortened).
        found: String,
    },
    /// The `parent` keys form a cycle.
    #[error("profile parents form a cycle: {}", chain.join(" -> "))]
    ParentCycle {
        /// The profiles of the cycle, the first repeated at the end.
        chain: Vec<String>,
    },
    /// The `cert` text is not a usable key + certificate PEM.
    #[error("cert in {section}: {source}")]
    Cert {
        /// Where the value came from.
        section: String,
        /// Why it is not usable.
        #[source]
        source: TlsError,
    },
    /// Writing the file (or its backup) failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither `PERL_ANYEVENT_MP_RC`, `HOME` nor `APPDATA` is set.
    #[error("no place for the profile file: set {RC_ENV} or HOME")]
    NoLocation,
}

/// Where the profile file is: `$PERL_ANYEVENT_MP_RC`, else `$HOME/.perl-anyevent-mp`, else
/// `$APPDATA/perl-anyevent-mp` (Perl's order).
pub fn default_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(RC_ENV) {
        return Some(path.into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        return Some(Path::new(&home).join(".perl-anyevent-mp"));
    }
    std::env::var_os("APPDATA").map(|dir| Path::new(&dir).join("perl-anyevent-mp"))
}

/// This machine's host name (Perl's `nodename`, `uname -n`): the default profile name.
/// `localhost` if it cannot be had.
pub fn host_name() -> String {
    gethostname::gethostname()
        .into_string()
        .unwrap_or_else(|_| "localhost".into())
}

/// Perl 2.x's built-in defaults, the first layer of every resolution: `monitor_timeout` 30,
/// `connect_interval` 2, and the P2 `framing_format`, `auth_offer` and `auth_accept` lists.
pub fn perl_defaults() -> Map<String, Json> {
    let list = |items: &[&str]| Json::Array(items.iter().map(|&s| s.into()).collect());
    let mut m = Map::new();
    m.insert("monitor_timeout".into(), 30.into());
    m.insert("connect_interval".into(), 2.into());
    m.insert("framing_format".into(), list(&["cbor", "json", "storable"]));
    m.insert(
        "auth_offer".into(),
        list(&["tls_sha3_512", "hmac_sha3_512"]),
    );
    m.insert(
        "auth_accept".into(),
        list(&["tls_sha3_512", "hmac_sha3_512", "tls_anon", "cleartext"]),
    );
    m
}

/// One layer of a resolution: its label (`the global section`, `profile NAME`) and its keys.
pub type Layer<'a> = (String, &'a Map<String, Json>);

/// The profile file, held as the JSON object it is (unknown keys included), to resolve
/// profiles from or to edit and write back.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileFile {
    path: Option<PathBuf>,
    root: Map<String, Json>,
}

impl Default for ProfileFile {
    /// An empty file: `{"version": 1}`, as Perl starts one.
    fn default() -> Self {
        let mut root = Map::new();
        root.insert("version".into(), 1.into());
        ProfileFile { path: None, root }
    }
}

impl ProfileFile {
    /// Reads the file at [`default_path`] (empty if there is no such file or place).
    pub fn load_default() -> Result<ProfileFile, ProfileError> {
        match default_path() {
            Some(path) => ProfileFile::load(path),
            None => Ok(ProfileFile::default()),
        }
    }

    /// Reads the file at `path`; a file that does not exist is an empty one (which
    /// [`save`](Self::save) then creates).
    pub fn load(path: impl Into<PathBuf>) -> Result<ProfileFile, ProfileError> {
        let path = path.into();
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ProfileFile {
                    path: Some(path),
                    ..ProfileFile::default()
                });
            }
            Err(source) => return Err(ProfileError::Unreadable { path, source }),
        };
        let text = String::from_utf8_lossy(&text);
        let mut file = ProfileFile::parse_at(&text, &path)?;
        file.path = Some(path);
        Ok(file)
    }

    /// Parses the text of a profile file (relaxed JSON); it has no path to be saved to.
    pub fn parse(text: &str) -> Result<ProfileFile, ProfileError> {
        ProfileFile::parse_at(text, Path::new(""))
    }

    fn parse_at(text: &str, path: &Path) -> Result<ProfileFile, ProfileError> {
        let json: Json = serde_json::from_str(&relax(text)).map_err(|e| ProfileError::BadJson {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let Json::Object(root) = json else {
            return Err(ProfileError::NotAnObject {
                path: path.to_owned(),
                what: "the top level".into(),
            });
        };
        let file = ProfileFile { path: None, root };
        // Checked once here, so that later look-ups need not fail on it.
        match file.root.get("profile") {
            None | Some(Json::Object(_)) => Ok(file),
            Some(_) => Err(ProfileError::NotAnObject {
                path: path.to_owned(),
                what: "\"profile\"".into(),
            }),
        }
    }

    /// The file's path, if it was loaded from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Sets the path [`save`](Self::save) writes to.
    pub fn set_path(&mut self, path: impl Into<PathBuf>) {
        self.path = Some(path.into());
    }

    /// The whole file: the global section, with the profiles under `"profile"`.
    pub fn root(&self) -> &Map<String, Json> {
        &self.root
    }

    /// The whole file, to edit.
    pub fn root_mut(&mut self) -> &mut Map<String, Json> {
        &mut self.root
    }

    /// Profile `name`'s own keys, if it exists (`None` also when it is not an object).
    pub fn profile(&self, name: &str) -> Option<&Map<String, Json>> {
        match self.root.get("profile")?.get(name)? {
            Json::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The section the `aemp` edit commands change: the global one (`None`) or profile
    /// `name`, created empty if missing (or replaced if it is not an object).
    pub fn section_mut(&mut self, name: Option<&str>) -> &mut Map<String, Json> {
        let Some(name) = name else {
            return &mut self.root;
        };
        let profiles = self
            .root
            .entry("profile")
            .or_insert_with(|| Json::Object(Map::new()));
        if !profiles.is_object() {
            *profiles = Json::Object(Map::new());
        }
        let Json::Object(profiles) = profiles else {
            unreachable!("made an object just above")
        };
        let section = profiles
            .entry(name)
            .or_insert_with(|| Json::Object(Map::new()));
        if !section.is_object() {
            *section = Json::Object(Map::new());
        }
        match section {
            Json::Object(m) => m,
            _ => unreachable!("made an object just above"),
        }
    }

    /// Removes profile `name`; whether it existed.
    pub fn remove_profile(&mut self, name: &str) -> bool {
        match self.root.get_mut("profile") {
            Some(Json::Object(profiles)) => profiles.remove(name).is_some(),
            _ => false,
        }
    }

    /// The layers of profile `name` from the file alone, farthest first: the global section,
    /// then the parent chain from its root down to `name` (profiles that do not exist are
    /// left out). Each with its label (`the global section`, `profile NAME`).
    pub fn chain(&self, name: &str) -> Result<Vec<Layer<'_>>, ProfileError> {
        let mut seen = Vec::<String>::new();
        let mut layers = Vec::new();
        let mut next = Some(name.to_owned());
        while let Some(current) = next.take() {
            if let Some(at) = seen.iter().position(|n| *n == current) {
                let mut chain = seen.split_off(at);
                chain.push(current);
                return Err(ProfileError::ParentCycle { chain });
            }
            seen.push(current.clone());
            let section = format!("profile {current}");
            let Some(profile) = self.profile(&current) else {
                continue;
            };
            next = match profile.get("parent") {
                None | Some(Json::Null) => None,
                Some(Json::String(parent)) => Some(parent.clone()),
                Some(other) => {
                    return Err(wrong_type(&section, "parent", "a profile name", other));
                }
            };
            layers.push((section, profile));
        }
        layers.push(("the global section".into(), &self.root));
        layers.reverse();
        Ok(layers)
    }

    /// Profile `name` resolved as a Perl node resolves it: [`perl_defaults`], then `args`
    /// (the program's own settings), then the file's layers ([`chain`](Self::chain)); with
    /// `force`, `args` come last and win. `profile` and `parent` are left out of the result.
    pub fn resolve(
        &self,
        name: &str,
        args: &Map<String, Json>,
        force: bool,
    ) -> Result<ResolvedProfile, ProfileError> {
        let mut resolved = ResolvedProfile {
            name: name.to_owned(),
            values: Map::new(),
            origin: BTreeMap::new(),
        };
        resolved.overlay("the built-in defaults", &perl_defaults());
        if !force {
            resolved.overlay("the arguments", args);
        }
        for (label, layer) in self.chain(name)? {
            resolved.overlay(&label, layer);
        }
        if force {
            resolved.overlay("the arguments", args);
        }
        Ok(resolved)
    }

    /// The file as Perl's `aemp` writes it: pretty JSON (3-space indent, `"key" : value`), keys
    /// sorted, a final newline.
    pub fn to_pretty_string(&self) -> String {
        to_pretty_json(&Json::Object(self.root.clone()))
    }

    /// Writes the file to its path as Perl does: the new text to `FILE~new~`, the old file
    /// kept as `FILE~` (a hard link, or a copy where links are not possible), then an atomic
    /// rename over `FILE`.
    pub fn save(&self) -> Result<(), ProfileError> {
        let path = match (&self.path, default_path()) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p,
            (None, None) => return Err(ProfileError::NoLocation),
        };
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ProfileError::Write { path, source }
        };
        let mut name = path.as_os_str().to_owned();
        name.push("~new~");
        let new = PathBuf::from(name);
        let mut name = path.as_os_str().to_owned();
        name.push("~");
        let backup = PathBuf::from(name);
        write_private(&new, self.to_pretty_string().as_bytes()).map_err(write_err(&new))?;
        if path.exists() {
            let _ = std::fs::remove_file(&backup);
            if std::fs::hard_link(&path, &backup).is_err() {
                std::fs::copy(&path, &backup).map_err(write_err(&backup))?;
            }
        }
        std::fs::rename(&new, &path).map_err(write_err(&path))
    }
}

/// Creates `path` with `bytes`; readable by its owner only (the file holds secrets and keys).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The settings of one profile after resolution, with where each came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedProfile {
    name: String,
    values: Map<String, Json>,
    origin: BTreeMap<String, String>,
}

impl ResolvedProfile {
    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every resolved key (unknown ones included), as Perl's `aemp showconfig` shows them.
    pub fn values(&self) -> &Map<String, Json> {
        &self.values
    }

    /// One resolved value.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.values.get(key)
    }

    /// Which layer `key`'s value came from (`the global section`, `profile NAME`, …).
    pub fn origin(&self, key: &str) -> Option<&str> {
        self.origin.get(key).map(String::as_str)
    }

    fn overlay(&mut self, label: &str, layer: &Map<String, Json>) {
        for (k, v) in layer {
            if k == "profile" || k == "parent" {
                continue;
            }
            self.values.insert(k.clone(), v.clone());
            self.origin.insert(k.clone(), label.to_owned());
        }
    }

    fn section(&self, key: &str) -> &str {
        self.origin(key).unwrap_or("the profile")
    }

    fn string(&self, key: &str) -> Result<Option<String>, ProfileError> {
        match self.values.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            // Perl does not tell numbers from strings: `aemp setsecret 1234` may be either.
            Some(Json::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(wrong_type(self.section(key), key, "a string", other)),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ProfileError> {
        let expected = "an array of strings";
        match self.values.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Json::String(s) => Ok(s.clone()),
                    Json::Number(n) => Ok(n.to_string()),
                    _ => Err(wrong_type(self.section(key), key, expected, item)),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(wrong_type(self.section(key), key, expected, other)),
        }
    }

    fn seconds(&self, key: &str) -> Result<Option<Duration>, ProfileError> {
        let expected = "a positive number of seconds";
        let secs = match self.values.get(key) {
            None | Some(Json::Null) => return Ok(None),
            Some(Json::Number(n)) => n.as_f64(),
            // `aemp setmonitor_timeout 10` stores the text "10", as Perl's does.
            Some(Json::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match secs.and_then(|s| (s > 0.0).then(|| Duration::try_from_secs_f64(s).ok())) {
            Some(Some(d)) => Ok(Some(d)),
            _ => {
                let found = self.values.get(key).unwrap_or(&Json::Null);
                Err(wrong_type(self.section(key), key, expected, found))
            }
        }
    }

    /// The `services` list.
    pub fn services(&self) -> Result<Vec<Service>, ProfileError> {
        let key = "services";
        let expected = "an array of \"Pkg::func\" strings or [\"Pkg::func\", args…] arrays";
        let items = match self.values.get(key) {
            None | Some(Json::Null) => return Ok(Vec::new()),
            Some(Json::Array(items)) => items,
            Some(other) => return Err(wrong_type(self.section(key), key, expected, other)),
        };
        items
            .iter()
            .map(|item| {
                let bad = || wrong_type(self.section(key), key, expected, item);
                match item {
                    Json::String(name) => Ok(Service::from_name(name.clone(), Vec::new())),
                    Json::Array(call) => match call.split_first() {
                        Some((Json::String(name), args)) => {
                            let args = args
                                .iter()
                                .map(|a| serde_json::from_value::<Value>(a.clone()))
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|_| bad())?;
                            Ok(Service::from_name(name.clone(), args))
                        }
                        _ => Err(bad()),
                    },
                    _ => Err(bad()),
                }
            })
            .collect()
    }

    /// Sets what this profile says on `config` (the mapping is in the [module
    /// documentation](self)); keys it does not set leave `config` as it is, except `nodeid`
    /// (default `<profile>/`) and `binds` (default `["*"]`), which Perl always decides.
    pub fn apply_to(&self, config: &mut NodeConfig) -> Result<(), ProfileError> {
        let node_id = self
            .string("nodeid")?
            .unwrap_or_else(|| format!("{}/", self.name));
        config.node_id = expand_node_id(&node_id);
        if let Some(secret) = self.string("secret")? {
            config.secret = secret.into_bytes();
        }
        if let Some(cert) = self.string("cert")? {
            let tls =
                TlsSettings::from_pem(cert.as_bytes()).map_err(|source| ProfileError::Cert {
                    section: self.section("cert").to_owned(),
                    source,
                })?;
            config.tls = Some(Arc::new(tls));
        }
        if let Some(seeds) = self.strings("seeds")? {
            config.seeds = seeds;
        }
        config.binds = self.strings("binds")?.unwrap_or_else(|| vec!["*".into()]);
        config.services = self.services()?;
        if let Some(t) = self.seconds("monitor_timeout")? {
            config.connect_timeout = t;
            config.handshake_timeout = t;
            config.seed_retry_max = t;
            config.liveness_timeout = Some(t);
        }
        if let Some(i) = self.seconds("connect_interval")? {
            config.connect_interval = i;
        }
        let defaults = perl_defaults();
        // The transport keys after the two above change nothing here.
        for &key in &TRANSPORT_KEYS[2..] {
            if let Some(v) = self.values.get(key)
                && defaults.get(key) != Some(v)
            {
                tracing::debug!(profile = %self.name, key, value = %v, "profile key has no effect on a Rust node");
            }
        }
        let known: BTreeSet<&str> = [
            "nodeid",
            "secret",
            "cert",
            "seeds",
            "binds",
            "services",
            "monitor_timeout",
            "connect_interval",
            "version",
        ]
        .into_iter()
        .chain(defaults.keys().map(String::as_str))
        .chain(["autocork", "nodelay", "secure", "eval"])
        .collect();
        for key in self.values.keys().filter(|k| !known.contains(k.as_str())) {
            tracing::debug!(profile = %self.name, key, "unknown profile key, ignored");
        }
        Ok(())
    }

    /// A [`NodeConfig`] with what this profile says over [`NodeConfig::default()`].
    pub fn to_node_config(&self) -> Result<NodeConfig, ProfileError> {
        let mut config = NodeConfig::default();
        self.apply_to(&mut config)?;
        Ok(config)
    }
}

/// One entry of a profile's `services` list: what a node starts when it starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Service {
    /// `"Pkg::"`: in Perl, load that module. A Rust node runs the init function registered
    /// under exactly this name, if any.
    Module(String),
    /// `"Pkg::func"` or `["Pkg::func", args…]`: call that init function with the arguments.
    Call {
        /// The init function's name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
}

impl Service {
    fn from_name(name: String, args: Vec<Value>) -> Service {
        if name.ends_with("::") && args.is_empty() {
            Service::Module(name)
        } else {
            Service::Call { name, args }
        }
    }

    /// The name an init function must be registered under to run this service.
    pub fn name(&self) -> &str {
        match self {
            Service::Module(name) | Service::Call { name, .. } => name,
        }
    }

    /// The arguments the init function gets.
    pub fn args(&self) -> &[Value] {
        match self {
            Service::Module(_) => &[],
            Service::Call { args, .. } => args,
        }
    }
}

impl NodeConfig {
    /// The configuration profile `name` (default: the host name) of the profile file
    /// ([`default_path`]) describes, over [`NodeConfig::default()`]; see the [module
    /// documentation](crate::node::profile) for what is taken. A missing file is an empty one.
    pub fn from_profile(name: Option<&str>) -> Result<NodeConfig, ProfileError> {
        NodeConfig::from_profile_file(&ProfileFile::load_default()?, name)
    }

    /// Like [`from_profile`](Self::from_profile), from a file already read (or parsed).
    pub fn from_profile_file(
        file: &ProfileFile,
        name: Option<&str>,
    ) -> Result<NodeConfig, ProfileError> {
        let name = name.map_or_else(host_name, str::to_owned);
        file.resolve(&name, &Map::new(), false)?.to_node_config()
    }
}

/// Perl's `%n` (host name) and `%u` (a random string) in a node id.
fn expand_node_id(id: &str) -> String {
    let mut id = id.replace("%n", &host_name());
    while id.contains("%u") {
        id = id.replacen("%u", &random_name(12), 1);
    }
    id
}

fn wrong_type(section: &str, key: &str, expected: &'static str, found: &Json) -> ProfileError {
    let mut found = found.to_string();
    if found.len() > 60 {
        let cut = (0..=57)
            .rev()
            .find(|&i| found.is_char_boundary(i))
            .unwrap_or(0);
        found.truncate(cut);
        found.push_str("...");
    }
    ProfileError::WrongType {
        section: section.to_owned(),
        key: key.to_owned(),
        expected,
        found,
    }
}

/// Turns relaxed JSON (what Perl's JSON::XS `relaxed` accepts) into strict JSON of the same
/// line layout, so that parser errors point at the right line: `#` comments become spaces,
/// a comma before `]` or `}` becomes a space, literal tabs in strings become `\t`.
fn relax(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    // Index in `out` of a comma not yet followed by anything but blanks.
    let mut pending_comma: Option<usize> = None;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    out.push(c);
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                '\t' => out.push_str("\\t"),
                _ => out.push(c),
            }
            continue;
        }
        match c {
            '#' => {
                while let Some(&next) = chars.peek() {
                    if next == '\n' {
                        break;
                    }
                    chars.next();
                    out.push(' ');
                }
            }
            ']' | '}' => {
                if let Some(at) = pending_comma.take() {
                    out.replace_range(at..at + 1, " ");
                }
                out.push(c);
            }
            ',' => {
                pending_comma = Some(out.len());
                out.push(c);
            }
            c if c.is_whitespace() => out.push(c),
            c => {
                pending_comma = None;
                in_string = c == '"';
                out.push(c);
            }
        }
    }
    out
}

/// `value` in the layout of Perl's JSON::XS `pretty` (3-space indent, `"key" : value`), keys
/// sorted (`canonical`), with a final newline: how the profile file is written.
pub fn to_pretty_json(value: &Json) -> String {
    let mut out = String::new();
    pretty_into(&mut out, value, 0);
    out.push('\n');
    out
}

fn pretty_into(out: &mut String, value: &Json, depth: usize) {
    const INDENT: &str = "   ";
    match value {
        Json::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&INDENT.repeat(depth + 1));
                pretty_into(out, item, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&INDENT.repeat(depth));
            out.push(']');
        }
        Json::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.iter().enumerate() {
                out.push_str(&INDENT.repeat(depth + 1));
                out.push_str(&Json::String((*key).clone()).to_string());
                out.push_str(" : ");
                pretty_into(out, &map[key.as_str()], depth + 1);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&INDENT.repeat(depth));
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/vectors/profile/perl-anyevent-mp.json");

    fn fixture() -> ProfileFile {
        ProfileFile::parse(FIXTURE).expect("the fixture parses")
    }

    fn get<'a>(r: &'a ResolvedProfile, key: &str) -> &'a Json {
        r.get(key).unwrap_or_else(|| panic!("{key} missing"))
    }

    #[test]
    fn relaxed_json_comments_trailing_commas_tabs() {
        let text =
            "{ # a comment, with \"quotes\" and ]\n \"a\" : [1, 2,],\n \"b\" : \"x\ty#z\",\n}\n";
        let file = ProfileFile::parse(text).unwrap();
        assert_eq!(file.root()["a"], serde_json::json!([1, 2]));
        assert_eq!(file.root()["b"], "x\ty#z");
    }

    #[test]
    fn bad_json_names_the_line() {
        let err = ProfileFile::parse("{\n \"a\" : 1,\n \"b\" : nope\n}").unwrap_err();
        assert!(
            matches!(err, ProfileError::BadJson { line: 3, .. }),
            "{err:?}"
        );
        let err = ProfileFile::parse("[1]").unwrap_err();
        assert!(matches!(err, ProfileError::NotAnObject { .. }), "{err:?}");
        let err = ProfileFile::parse("{\"profile\": 3}").unwrap_err();
        assert!(matches!(err, ProfileError::NotAnObject { .. }), "{err:?}");
    }

    #[test]
    fn file_beats_arguments_nearer_profile_beats_farther() {
        let file = fixture();
        let mut args = Map::new();
        args.insert("secret".into(), "from-args".into());
        args.insert("nodeid".into(), "args-id".into());
        args.insert("only_in_args".into(), 7.into());
        let r = file.resolve("web1", &args, false).unwrap();
        // web1 → server → base: base's binds, server's seeds and monitor_timeout, web1's id.
        assert_eq!(get(&r, "nodeid"), "web1/%n");
        assert_eq!(r.origin("nodeid"), Some("profile web1"));
        assert_eq!(
            get(&r, "seeds"),
            &serde_json::json!(["seed1:4040", "seed2:4040"])
        );
        assert_eq!(r.origin("seeds"), Some("profile server"));
        assert_eq!(get(&r, "binds"), &serde_json::json!(["*:4040"]));
        assert_eq!(r.origin("binds"), Some("profile base"));
        assert_eq!(get(&r, "monitor_timeout"), "10");
        // Global section beats the arguments; arguments beat the defaults.
        assert_eq!(get(&r, "secret"), "global-secret");
        assert_eq!(get(&r, "only_in_args"), 7);
        assert_eq!(get(&r, "connect_interval"), 0.5);
        assert_eq!(get(&r, "auth_offer")[0], "tls_sha3_512");
        // Unknown keys are kept; profile/parent are not part of the result.
        assert_eq!(get(&r, "x-unknown"), &serde_json::json!({"kept": true}));
        assert!(r.get("profile").is_none() && r.get("parent").is_none());
        // force: the arguments win over the file.
        let forced = file.resolve("web1", &args, true).unwrap();
        assert_eq!(get(&forced, "secret"), "from-args");
        assert_eq!(get(&forced, "nodeid"), "args-id");
        // A profile that does not exist is empty: global section and defaults only.
        let none = file.resolve("nosuch", &Map::new(), false).unwrap();
        assert_eq!(get(&none, "secret"), "global-secret");
        assert!(none.get("seeds").is_none());
    }

    #[test]
    fn node_config_from_the_fixture() {
        let file = fixture();
        let c = NodeConfig::from_profile_file(&file, Some("web1")).unwrap();
        assert_eq!(c.node_id, format!("web1/{}", host_name()));
        assert_eq!(c.secret, b"global-secret");
        assert_eq!(c.seeds, ["seed1:4040", "seed2:4040"]);
        assert_eq!(c.binds, ["*:4040"]);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.liveness_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.connect_interval, Duration::from_millis(500));
        assert_eq!(
            c.services,
            [
                Service::Module("AnyEvent::MP::Global::".into()),
                Service::Call {
                    name: "My::Web::start".into(),
                    args: vec![Value::Int(8080), Value::Str("docroot".into())],
                },
            ]
        );
        // No nodeid anywhere: `<profile>/`; the global binds.
        let c = NodeConfig::from_profile_file(&file, Some("nosuch")).unwrap();
        assert_eq!(c.node_id, "nosuch/");
        assert_eq!(c.binds, ["127.0.0.1:1"]);
        // An empty file: Perl's default binds, NodeConfig's defaults otherwise.
        let c = NodeConfig::from_profile_file(&ProfileFile::default(), Some("e")).unwrap();
        assert_eq!(
            (c.node_id.as_str(), c.binds.as_slice()),
            ("e/", &["*".to_owned()][..])
        );
        assert_eq!(c.connect_timeout, NodeConfig::default().connect_timeout);
        // %u becomes a random string.
        let c = NodeConfig::from_profile_file(&file, Some("client")).unwrap();
        let rest = c.node_id.strip_prefix("client-").unwrap();
        assert_eq!(rest.len(), 12, "{}", c.node_id);
    }

    #[test]
    fn cert_text_becomes_tls_settings() {
        let pem = crate::net::tls::generate_pem(crate::net::tls::KeyKind::EcdsaP256).unwrap();
        let mut file = ProfileFile::default();
        file.section_mut(Some("t"))
            .insert("cert".into(), pem.into());
        let c = NodeConfig::from_profile_file(&file, Some("t")).unwrap();
        assert!(c.tls.is_some());
        file.section_mut(Some("t"))
            .insert("cert".into(), "not a pem".into());
        let err = NodeConfig::from_profile_file(&file, Some("t")).unwrap_err();
        assert!(matches!(err, ProfileError::Cert { .. }), "{err}");
    }

    #[test]
    fn parent_cycles_are_an_error() {
        let file = ProfileFile::parse(
            r#"{"profile": {"a": {"parent": "b"}, "b": {"parent": "c"}, "c": {"parent": "a"}}}"#,
        )
        .unwrap();
        match file.resolve("a", &Map::new(), false) {
            Err(ProfileError::ParentCycle { chain }) => assert_eq!(chain, ["a", "b", "c", "a"]),
            other => panic!("{other:?}"),
        }
        let file = ProfileFile::parse(r#"{"profile": {"a": {"parent": "a"}}}"#).unwrap();
        assert!(matches!(
            file.resolve("a", &Map::new(), false),
            Err(ProfileError::ParentCycle { .. })
        ));
    }

    #[test]
    fn wrong_types_name_key_and_profile() {
        for (text, key) in [
            (r#"{"profile": {"p": {"seeds": "a:1"}}}"#, "seeds"),
            (r#"{"profile": {"p": {"binds": [[1]]}}}"#, "binds"),
            (r#"{"profile": {"p": {"secret": {}}}}"#, "secret"),
            (
                r#"{"profile": {"p": {"monitor_timeout": "soon"}}}"#,
                "monitor_timeout",
            ),
            (
                r#"{"profile": {"p": {"connect_interval": -1}}}"#,
                "connect_interval",
            ),
            (r#"{"profile": {"p": {"services": [3]}}}"#, "services"),
            (r#"{"profile": {"p": {"parent": 1}}}"#, "parent"),
        ] {
            let file = ProfileFile::parse(text).unwrap();
            match NodeConfig::from_profile_file(&file, Some("p")) {
                Err(ProfileError::WrongType {
                    section, key: k, ..
                }) => {
                    assert_eq!((section.as_str(), k.as_str()), ("profile p", key), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let file = ProfileFile::parse(r#"{"nodeid": ["x"]}"#).unwrap();
        let err = NodeConfig::from_profile_file(&file, Some("p")).unwrap_err();
        assert!(err.to_string().contains("the global section"), "{err}");
    }

    #[test]
    fn pretty_output_is_perls_layout_and_parses_back() {
        let file = fixture();
        let text = file.to_pretty_string();
        assert!(
            text.starts_with("{\n   \"binds\" : [\n      \"127.0.0.1:1\"\n   ],\n"),
            "{text}"
        );
        assert!(text.ends_with("}\n"));
        assert_eq!(ProfileFile::parse(&text).unwrap().root(), file.root());
    }
}
