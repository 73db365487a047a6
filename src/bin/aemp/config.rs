//! Perl's `aemp` configuration commands: chained edits of the profile file (AEMP-NOTES §4.4).
//!
//! clap cannot parse `aemp profile seed setbinds '*:4040' profile client setseeds …`, so these
//! words are read here, one command after the other, each taking its own arguments.

use aemp::node::profile::{self, ProfileFile, host_name, to_pretty_json};
use serde_json::{Map, Value as Json};

/// The transport keys with `set`/`del` commands and nothing more to them.
const PLAIN_KEYS: &[&str] = profile::TRANSPORT_KEYS;

/// The command words (without the `X` aliases of `setX`).
const COMMANDS: &[&str] = &[
    "setnodeid",
    "delnodeid",
    "gensecret",
    "setsecret",
    "delsecret",
    "gencert",
    "setcert",
    "delcert",
    "setseeds",
    "delseeds",
    "addseed",
    "delseed",
    "setbinds",
    "delbinds",
    "addbind",
    "delbind",
    "setservices",
    "delservices",
    "addservice",
    "delservice",
    "profile",
    "delprofile",
    "setparent",
    "delparent",
    "showprofile",
    "showconfig",
];

/// What `aemp --help` lists after the network commands.
pub const HELP: &str = "\
Configuration commands (Perl's aemp; they edit the profile file $PERL_ANYEVENT_MP_RC, else
~/.perl-anyevent-mp, and chain: aemp profile seed setbinds '*:4040' profile client setseeds h:4040):
  setnodeid ID | delnodeid              the node id (%n: host name, %u: random)
  gensecret | setsecret S | delsecret   the shared secret
  gencert | setcert FILE | delcert      key + certificate PEM (TLS)
  setseeds A,B | addseed A | delseed A | delseeds
  setbinds A,B | addbind A | delbind A | delbinds
  setservices F,G | addservice F | delservice F | delservices
  profile NAME ...                      the following commands edit profile NAME
  setparent NAME | delparent | delprofile NAME
  showprofile NAME                      the profile's own keys
  showconfig [NAME [KEY VALUE...]]      the settings a node with profile NAME (default: host name) gets
  [set|del]monitor_timeout|connect_interval|framing_format|auth_offer|auth_accept|autocork|nodelay|secure|eval
Every setX is also X (but eval). An argument starting with [, { or \" is JSON; a lone first
argument starting with [ is a JSON array of all arguments.
Network commands read profile `aemp` (run: the host name's, or --profile NAME); flags given win.";

/// Whether `word` is a configuration command (or an alias of one).
fn is_command(word: &str) -> bool {
    COMMANDS.contains(&word)
        || PLAIN_KEYS
            .iter()
            .any(|k| word.strip_prefix("set").or(word.strip_prefix("del")) == Some(k))
        || alias_of(word).is_some()
}

/// `X` for `setX` (`eval` stays free: it is a network command in Perl's aemp).
fn alias_of(word: &str) -> Option<String> {
    let full = format!("set{word}");
    let plain = PLAIN_KEYS.contains(&word) && word != "eval";
    (plain || COMMANDS.contains(&full.as_str())).then_some(full)
}

/// Perl's argument rules: a lone first argument starting with `[` is a JSON array that replaces
/// all arguments; otherwise each argument starting with `[`, `{` or `"` is a JSON value.
pub fn json_args(args: &[String]) -> Result<Vec<Json>, String> {
    let decode = |a: &str| serde_json::from_str::<Json>(a).map_err(|e| format!("{a}: {e}"));
    if let [only] = args
        && only.starts_with('[')
    {
        return match decode(only)? {
            Json::Array(items) => Ok(items),
            _ => Err(format!("{only}: not a JSON array")),
        };
    }
    args.iter()
        .map(|a| {
            if a.starts_with(['[', '{', '"']) {
                decode(a)
            } else {
                Ok(Json::String(a.clone()))
            }
        })
        .collect()
}

/// Whether the command line is one of configuration commands. `gencert` followed by a flag
/// (`--out`, `--rsa`) is the older clap subcommand that prints or writes a PEM.
pub fn wanted(args: &[Json]) -> bool {
    match args {
        [Json::String(first), Json::String(next), ..] if first == "gencert" => {
            !next.starts_with('-')
        }
        [Json::String(first), ..] => is_command(first),
        _ => false,
    }
}

/// Runs the chained commands on the profile file, writing it back if it changed.
pub fn run(args: Vec<Json>) -> Result<(), String> {
    let file = ProfileFile::load_default().map_err(|e| e.to_string())?;
    if file.path().is_none() {
        return Err(profile::ProfileError::NoLocation.to_string());
    }
    let before = file.root().clone();
    let mut session = Session {
        file,
        profile: None,
        args: args.into_iter(),
    };
    while let Some(word) = session.args.next() {
        let Json::String(word) = word else {
            return Err(format!("{word}: not an aemp command"));
        };
        session.command(&word)?;
    }
    if session.file.root() != &before {
        session.file.save().map_err(|e| e.to_string())?;
    }
    Ok(())
}

struct Session {
    file: ProfileFile,
    /// The profile being edited (`profile NAME`); `None`: the global section.
    profile: Option<String>,
    args: std::vec::IntoIter<Json>,
}

impl Session {
    fn arg(&mut self, what: &str) -> Result<Json, String> {
        self.args.next().ok_or_else(|| format!("{what} missing"))
    }

    fn name(&mut self, what: &str) -> Result<String, String> {
        match self.arg(what)? {
            Json::String(s) => Ok(s),
            other => Err(format!("{what}: expected a string, got {other}")),
        }
    }

    fn section(&mut self) -> &mut Map<String, Json> {
        self.file.section_mut(self.profile.as_deref())
    }

    fn where_(&self) -> String {
        match &self.profile {
            Some(p) => format!("profile {p}"),
            None => "the global section".into(),
        }
    }

    fn set(&mut self, key: &str, value: Json) {
        self.section().insert(key.into(), value);
    }

    fn del(&mut self, key: &str) {
        self.section().remove(key);
    }

    /// A list argument: a JSON array as it is, else text split at commas (as Perl's `split`,
    /// empty trailing fields dropped).
    fn list(&mut self, what: &str) -> Result<Json, String> {
        Ok(match self.arg(what)? {
            Json::String(text) => {
                let mut items: Vec<&str> = text.split(',').collect();
                while items.last() == Some(&"") {
                    items.pop();
                }
                Json::Array(items.into_iter().map(Json::from).collect())
            }
            other => other,
        })
    }

    /// The array under `key` in the section being edited (created empty if missing).
    fn array(&mut self, key: &str) -> Result<&mut Vec<Json>, String> {
        let where_ = self.where_();
        let value = self
            .section()
            .entry(key)
            .or_insert_with(|| Json::Array(Vec::new()));
        match value {
            Json::Array(items) => Ok(items),
            other => Err(format!("{key} in {where_} is not a list: {other}")),
        }
    }

    fn command(&mut self, word: &str) -> Result<(), String> {
        let word = alias_of(word).unwrap_or_else(|| word.to_owned());
        match word.as_str() {
            "setnodeid" => {
                let v = self.arg("node id")?;
                self.set("nodeid", v);
            }
            "delnodeid" => self.del("nodeid"),
            "setsecret" => {
                let v = self.arg("shared secret")?;
                self.set("secret", v);
            }
            "gensecret" => self.set("secret", random_secret().into()),
            "delsecret" => self.del("secret"),
            "setcert" => {
                let path = self.name("key+certificate PEM file name")?;
                let pem = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                self.set("cert", pem.into());
            }
            "gencert" => {
                let pem = aemp::net::tls::generate_pem(aemp::net::tls::KeyKind::EcdsaP256)
                    .map_err(|e| e.to_string())?;
                self.set("cert", pem.into());
            }
            "delcert" => self.del("cert"),
            "setseeds" | "setbinds" | "setservices" => {
                let key = &word["set".len()..];
                let v = self.list(key)?;
                self.set(key, v);
            }
            "delseeds" | "delbinds" | "delservices" => self.del(&word["del".len()..]),
            "addseed" | "addbind" => {
                let key = format!("{}s", &word["add".len()..]);
                let v = self.arg(&format!("{} address", &word["add".len()..]))?;
                let items = self.array(&key)?;
                items.retain(|i| *i != v);
                items.push(v);
            }
            "delseed" | "delbind" => {
                let key = format!("{}s", &word["del".len()..]);
                let v = self.arg(&format!("{} address", &word["del".len()..]))?;
                self.array(&key)?.retain(|i| *i != v);
            }
            "addservice" => {
                let v = self.arg("service")?;
                self.array("services")?.push(v);
            }
            "delservice" => {
                let v = self.arg("service")?;
                let items = self.array("services")?;
                // One instance, as a service may be listed more than once.
                if let Some(at) = items.iter().position(|i| *i == v) {
                    items.remove(at);
                }
            }
            "profile" => {
                let name = self.name("profile name")?;
                self.profile = Some(name);
                // Created now, as Perl does, even if nothing else is set in it.
                self.section();
            }
            "delprofile" => {
                let name = self.name("profile name")?;
                self.file.remove_profile(&name);
            }
            "setparent" => {
                let name = self.name("profile name")?;
                self.set("parent", name.into());
            }
            "delparent" => self.del("parent"),
            "showprofile" => {
                let name = self.name("profile name")?;
                let own = self.file.profile(&name).cloned().unwrap_or_default();
                print!("{}", to_pretty_json(&Json::Object(own)));
            }
            "showconfig" => self.showconfig()?,
            other => {
                if let Some(key) = other.strip_prefix("set").filter(|k| PLAIN_KEYS.contains(k)) {
                    let v = self.arg(&format!("{key} value"))?;
                    self.set(key, v);
                } else if let Some(key) =
                    other.strip_prefix("del").filter(|k| PLAIN_KEYS.contains(k))
                {
                    self.del(key);
                } else {
                    return Err(format!("{other}: no such aemp command (try aemp --help)"));
                }
            }
        }
        Ok(())
    }

    /// `showconfig [NAME [KEY VALUE…]]`: what a node started with profile NAME (default: the
    /// host name) and these configure arguments gets; takes all remaining arguments.
    fn showconfig(&mut self) -> Result<(), String> {
        let name = match self.args.next() {
            None => host_name(),
            Some(Json::String(s)) => s,
            Some(other) => return Err(format!("profile name: expected a string, got {other}")),
        };
        let mut kv = Map::new();
        while let Some(key) = self.args.next() {
            let Json::String(key) = key else {
                return Err(format!("showconfig: key {key} is not a string"));
            };
            let value = self.arg(&format!("value of {key}"))?;
            kv.insert(key, value);
        }
        let truthy = |v: Option<Json>| {
            v.is_some_and(|v| {
                !matches!(v, Json::Null | Json::Bool(false)) && v != 0 && v != "0" && v != ""
            })
        };
        let norc = truthy(kv.remove("norc"));
        let force = truthy(kv.remove("force"));
        let file = if norc {
            ProfileFile::default()
        } else {
            self.file.clone()
        };
        let resolved = file.resolve(&name, &kv, force).map_err(|e| e.to_string())?;
        print!(
            "{}",
            to_pretty_json(&Json::Object(resolved.values().clone()))
        );
        Ok(())
    }
}

/// 64 random characters of `[0-9A-Za-z]` (about 380 bits), as `gensecret` makes.
fn random_secret() -> String {
    use rand::RngExt as _;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..64)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arguments_as_perl() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            json_args(&s(&[r#"["setseeds", ["a:1", "b:2"]]"#])).unwrap(),
            [Json::from("setseeds"), serde_json::json!(["a:1", "b:2"])]
        );
        assert_eq!(
            json_args(&s(&["setservices", r#"[["M::f", 1]]"#, "x", r#""q""#])).unwrap(),
            [
                Json::from("setservices"),
                serde_json::json!([["M::f", 1]]),
                Json::from("x"),
                Json::from("q")
            ]
        );
        assert!(json_args(&s(&["setseeds", "[oops"])).is_err());
    }

    #[test]
    fn which_words_are_config_commands() {
        let w = |v: &[&str]| wanted(&v.iter().map(|s| Json::from(*s)).collect::<Vec<_>>());
        for yes in [
            &["setseeds", "a"][..],
            &["seeds", "a"],
            &["profile", "x"],
            &["gencert"],
            &["gencert", "profile", "x"],
            &["setnodelay", "1"],
            &["delmonitor_timeout"],
            &["secure", "1"],
            &["seteval", "1"],
            &["showconfig"],
        ] {
            assert!(w(yes), "{yes:?}");
        }
        for no in [
            &["run"][..],
            &["snd", "x"],
            &["gencert", "--out", "f"],
            &["eval", "node"],
            &["nodes"],
            &["--secret", "x", "run"],
        ] {
            assert!(!w(no), "{no:?}");
        }
    }
}
