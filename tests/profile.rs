//! Perl's profile file: read with Perl's precedence, edited by `aemp`'s configuration
//! commands (as processes), and used by `aemp run` and by `Node::start` (services).
//!
//! Every `aemp` process here gets `PERL_ANYEVENT_MP_RC` pointing into a fresh directory: the
//! profile file of the machine running the tests is never read or written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aemp::node::profile::host_name;
use aemp::node::{Node, NodeConfig, ProfileError, ProfileFile, Service};
use aemp::proto::value::Value;
use common::procs::{AEMP, Proc};
use serde_json::json;

/// The fixture in Perl's format: comments, trailing commas, a parent chain, global keys,
/// services with JSON arguments, an unknown key.
fn fixture() -> PathBuf {
    common::vectors().join("profile/perl-anyevent-mp.json")
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aemp-profile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `aemp ARGS…` with the profile file `rc`.
fn aemp(rc: &Path, args: &[&str]) -> Output {
    Command::new(AEMP)
        .env("PERL_ANYEVENT_MP_RC", rc)
        .env("RUST_LOG", "off")
        .env_remove("AEMP_SECRET")
        .env_remove("AEMP_CERT")
        .args(args)
        .output()
        .expect("run aemp")
}

fn ok(rc: &Path, args: &[&str]) -> String {
    let out = aemp(rc, args);
    assert!(
        out.status.success(),
        "aemp {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_fixture_resolves_with_perls_precedence() {
    let file = ProfileFile::load(fixture()).unwrap();
    // web1 → server → base, over the global section.
    let web1 = NodeConfig::from_profile_file(&file, Some("web1")).unwrap();
    assert_eq!(web1.node_id, format!("web1/{}", host_name()));
    assert_eq!(web1.secret, b"global-secret");
    assert_eq!(web1.seeds, ["seed1:4040", "seed2:4040"]);
    assert_eq!(web1.binds, ["*:4040"]);
    assert_eq!(web1.connect_timeout, Duration::from_secs(10));
    assert_eq!(web1.connect_interval, Duration::from_millis(500));
    assert_eq!(web1.services.len(), 2);
    assert_eq!(
        web1.services[1],
        Service::Call {
            name: "My::Web::start".into(),
            args: vec![Value::Int(8080), Value::Str("docroot".into())],
        }
    );
    // The same through `aemp showconfig`, with configure arguments that lose to the file
    // (secret) or win where the file says nothing (x-arg), and `force`.
    let rc = fixture();
    let shown: serde_json::Value = serde_json::from_str(&ok(
        &rc,
        &["showconfig", "web1", "secret", "arg", "x-arg", "1"],
    ))
    .unwrap();
    assert_eq!(shown["secret"], "global-secret");
    assert_eq!(shown["x-arg"], "1");
    assert_eq!(shown["binds"], json!(["*:4040"]));
    assert_eq!(shown["framing_format"], json!(["json", "storable"]));
    assert_eq!(shown["x-unknown"], json!({"kept": true}));
    assert_eq!(
        shown["auth_offer"],
        json!(["tls_sha3_512", "hmac_sha3_512"])
    );
    let forced: serde_json::Value = serde_json::from_str(&ok(
        &rc,
        &["showconfig", "web1", "secret", "arg", "force", "1"],
    ))
    .unwrap();
    assert_eq!(forced["secret"], "arg");
    let own: serde_json::Value = serde_json::from_str(&ok(&rc, &["showprofile", "web1"])).unwrap();
    assert_eq!(
        own,
        json!({"parent": "server", "nodeid": "web1/%n", "framing_format": ["json", "storable"]})
    );
}

#[test]
fn config_commands_write_a_file_that_reads_back() {
    let dir = scratch("edit");
    let rc = dir.join("rc");
    let original = std::fs::read(fixture()).unwrap();
    std::fs::write(&rc, &original).unwrap();
    let cert = dir.join("node.pem");
    ok(
        &dir.join("unused"),
        &["gencert", "--out", cert.to_str().unwrap()],
    );
    ok(
        &rc,
        &[
            "setsecret",
            "new-secret",
            "profile",
            "x",
            "setseeds",
            "a:1,b:2",
            "addseed",
            "c:3",
            "delseed",
            "a:1",
            "addseed",
            "b:2",
            "binds",
            r#"["127.0.0.1:0"]"#,
            "setparent",
            "server",
            "setservices",
            r#"[["My::f", 1, {"k": "v"}]]"#,
            "addservice",
            "My::g",
            "monitor_timeout",
            "7",
            "setnodelay",
            "1",
            "nodeid",
            "x-%n",
            "setcert",
            cert.to_str().unwrap(),
            "profile",
            "client",
            "delnodeid",
        ],
    );
    // Perl's backup: the old file as it was.
    assert_eq!(std::fs::read(dir.join("rc~")).unwrap(), original);
    let text = std::fs::read_to_string(&rc).unwrap();
    assert!(text.starts_with("{\n   \"binds\" : [\n"), "{text}");
    let file = ProfileFile::load(&rc).unwrap();
    assert_eq!(
        file.root()["x-unknown"],
        json!({"kept": true}),
        "unknown key kept"
    );
    assert_eq!(file.root()["secret"], "new-secret");
    assert!(file.profile("client").unwrap().is_empty());
    assert_eq!(file.profile("web1").unwrap()["nodeid"], "web1/%n");
    let x = file.profile("x").unwrap();
    assert_eq!(x["seeds"], json!(["c:3", "b:2"]));
    assert_eq!(x["monitor_timeout"], "7");
    assert_eq!(x["nodelay"], "1");
    let c = NodeConfig::from_profile_file(&file, Some("x")).unwrap();
    assert_eq!(c.node_id, format!("x-{}", host_name()));
    assert_eq!(c.secret, b"new-secret");
    assert_eq!(c.seeds, ["c:3", "b:2"]);
    assert_eq!(c.binds, ["127.0.0.1:0"]);
    assert_eq!(c.connect_timeout, Duration::from_secs(7));
    // Inherited from base through server.
    assert_eq!(c.connect_interval, Duration::from_millis(500));
    assert!(c.tls.is_some());
    assert_eq!(
        c.services,
        [
            Service::Call {
                name: "My::f".into(),
                args: vec![
                    Value::Int(1),
                    Value::Map(vec![("k".into(), Value::Str("v".into()))])
                ],
            },
            Service::Call {
                name: "My::g".into(),
                args: vec![]
            },
        ]
    );

    // Commands that change nothing leave the file (and its backup) alone.
    let before = std::fs::read(&rc).unwrap();
    ok(&rc, &["showconfig", "x", "showprofile", "x"]);
    ok(&rc, &["profile", "x", "delseed", "nosuch:1"]);
    assert_eq!(std::fs::read(&rc).unwrap(), before);
    assert_eq!(std::fs::read(dir.join("rc~")).unwrap(), original);

    // A failing chain writes nothing.
    let out = aemp(&rc, &["gensecret", "profile", "x", "setseeds"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seeds missing"));
    assert_eq!(std::fs::read(&rc).unwrap(), before);

    // A lone JSON array is the whole command line; del commands and delprofile.
    ok(
        &rc,
        &[
            r#"["gensecret", "profile", "x", "setseeds", ["d:4"], "delcert", "delmonitor_timeout", "delprofile", "client"]"#,
        ],
    );
    let file = ProfileFile::load(&rc).unwrap();
    assert_ne!(file.root()["secret"], "new-secret");
    assert_eq!(file.root()["secret"].as_str().unwrap().len(), 64);
    let x = file.profile("x").unwrap();
    assert_eq!(x["seeds"], json!(["d:4"]));
    assert!(!x.contains_key("cert") && !x.contains_key("monitor_timeout"));
    assert!(file.profile("client").is_none());
    assert_eq!(
        std::fs::read(dir.join("rc~")).unwrap(),
        before,
        "backup of the last version"
    );

    // A file that does not exist is created (and no backup made).
    let fresh = dir.join("fresh");
    ok(&fresh, &["profile", "p", "setparent", "q", "gensecret"]);
    let file = ProfileFile::load(&fresh).unwrap();
    assert_eq!(file.root()["version"], 1);
    assert_eq!(file.profile("p").unwrap()["parent"], "q");
    assert!(!dir.join("fresh~").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broken_files_are_reported_and_left_alone() {
    let dir = scratch("broken");
    let rc = dir.join("rc");
    let text = "{\n  \"version\" : 1,\n  \"secret\" : oops\n}\n";
    std::fs::write(&rc, text).unwrap();
    match ProfileFile::load(&rc) {
        Err(ProfileError::BadJson { line: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
    let out = aemp(&rc, &["setsecret", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":3:"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), text);
    // Network commands refuse it too, unless told not to read it.
    let out = aemp(&rc, &["nodes", "--seed", "127.0.0.1:1", "--timeout", "0.5"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not valid JSON"),
        "{out:?}"
    );
    let out = aemp(
        &rc,
        &[
            "--norc",
            "nodes",
            "--seed",
            "127.0.0.1:1",
            "--timeout",
            "0.5",
        ],
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not valid JSON"),
        "{out:?}"
    );
    // A parent cycle is named.
    std::fs::write(
        &rc,
        r#"{"profile": {"a": {"parent": "b"}, "b": {"parent": "a"}}}"#,
    )
    .unwrap();
    let out = aemp(&rc, &["showconfig", "a"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a -> b -> a"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `aemp run` with nothing but the profile: one node from profile `alpha` (`--profile`),
/// another from the host name's profile with alpha as its seed, no other flag.
#[test]
fn aemp_run_takes_everything_from_the_profile() {
    let dir = scratch("run");
    let rc = dir.join("rc");
    ok(
        &rc,
        &[
            "setsecret",
            "profile-secret",
            "profile",
            "alpha",
            "setbinds",
            "127.0.0.1:0",
            "setnodeid",
            "alpha-node",
        ],
    );
    let run = |args: &[&str]| {
        let mut cmd = Command::new(AEMP);
        cmd.env("PERL_ANYEVENT_MP_RC", &rc)
            .env("RUST_LOG", "off")
            .env_remove("AEMP_SECRET")
            .env_remove("AEMP_CERT")
            .arg("run")
            .args(args);
        cmd
    };
    let mut alpha = Proc::start("alpha", run(&["--profile", "alpha"]));
    assert_eq!(alpha.node, "alpha-node");
    let host = host_name();
    ok(
        &rc,
        &[
            "profile",
            &host,
            "setseeds",
            &alpha.addr,
            "setbinds",
            "127.0.0.1:0",
            "setnodeid",
            "beta-%n",
        ],
    );
    let mut beta = Proc::start("beta", run(&[]));
    assert_eq!(beta.node, format!("beta-{host}"));
    beta.wait_for(|l| l == "UP alpha-node p2", Duration::from_secs(20));
    alpha.wait_for(
        |l| l.starts_with(&format!("UP beta-{host}")),
        Duration::from_secs(20),
    );
    // A flag given wins over the profile: another secret cannot link.
    let out = Command::new(AEMP)
        .env("PERL_ANYEVENT_MP_RC", &rc)
        .env("RUST_LOG", "off")
        .args([
            "nodes",
            "--seed",
            &alpha.addr,
            "--timeout",
            "2",
            "--secret",
            "wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    // Profile `aemp` (here: only the global secret) serves the one-shot commands.
    let out = ok(&rc, &["nodes", "--seed", &alpha.addr, "--timeout", "10"]);
    assert!(out.contains("alpha-node"), "{out}");
    alpha.signal("-TERM");
    assert_eq!(alpha.wait_exit(Duration::from_secs(20)), Some(0));
    drop(beta);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node runs the services its configuration lists with the init functions it was given;
/// one it has no function for is skipped (and logged), the others still run.
#[actix_rt::test]
async fn node_start_runs_the_services() {
    let file = ProfileFile::parse(
        r#"{"secret": "svc", "binds": ["127.0.0.1:0"],
            "profile": {"svc": {"services": ["AnyEvent::MP::Global::", "Not::registered",
                                             ["Echo::start", "hello"]]}}}"#,
    )
    .unwrap();
    let config = NodeConfig::from_profile_file(&file, Some("svc"))
        .unwrap()
        .with_init("Echo::start", |node, _port_id, args| {
            let greeting = args
                .first()
                .and_then(Value::as_str)
                .map(|s| s.into_owned())
                .ok_or("a greeting")?;
            node.rcv()
                .on("ping", move |cx, msg| {
                    let (_, reply): (String, String) = msg.decode().map_err(|e| e.to_string())?;
                    cx.node
                        .snd(&reply, &(greeting.as_str(),))
                        .map_err(|e| e.to_string())
                })
                .start_named("echo")
                .map(drop)
                .map_err(|e| e.to_string())
        });
    let node = Node::start(config).await.unwrap();
    assert!(node.id().starts_with("svc/"), "{}", node.id());
    let echo = format!("{}#echo", node.id());
    let (me, mut inbox) = node.port_stream();
    node.snd(&echo, &("ping", me.id())).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("the service answers")
        .expect("open");
    assert_eq!(answer.decode::<(String,)>().unwrap().0, "hello");
    node.shutdown().await;
}
