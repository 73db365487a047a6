//! Mixed Perl/Rust clusters over real sockets: scripted Perl peers (2.02 global nodes and
//! slaves, 1.30 and 1.0 mesh nodes) play their side of the captures `p2-cluster-db-json`,
//! `p1b-mesh-groups` and `p0-mesh-groups` against Rust nodes, in the order the captures show,
//! and check that the Rust nodes answer in the shapes the Perl nodes did.
//!
//! The scripted peers are `common::scripted`'s.

mod common;

use aemp::node::{DialectMode, Node, NodeConfig};
use aemp::proto::dialect::Dialect;
use aemp::proto::value::Value;
use common::scripted::{
    J, Peer, WAIT, free_port, line1, loopback, rust_node, show, tag, to_json, until,
};
use common::{Capture, Dir};
use serde_json::json;
use tokio::net::TcpListener;

#[actix_rt::test]
async fn a_rust_slave_binds_to_a_perl_global_and_reaches_another_node_through_it() {
    let cap = Capture::load("p2-cluster-db-json");
    let (g1_listener, g1_addr) = loopback().await;
    let (s2_listener, s2_addr) = loopback().await;
    let node = rust_node(
        "rust-s1",
        &cap.secret,
        NodeConfig {
            seeds: vec![g1_addr.clone()],
            dialect: DialectMode::Fixed(Dialect::P2),
            ..NodeConfig::default()
        },
    )
    .await;
    let me = node.id().to_owned();
    let listener = node.listeners()[0].to_string();

    // conn5: the slave dials its seed ref-g1, a global node, which says so at node-up.
    let mut g1 = Peer::accept(
        &g1_listener,
        "ref-g1",
        line1(&cap, 5, Dir::S2c, "ref-g1", &listener),
        &cap.secret,
    )
    .await;
    assert_eq!(g1.other, me);
    g1.send(json!(["", "g_global"])).await;
    // `g_slave` (be global), then `g_slave db` (be my master), in this order.
    g1.expect_eq(json!(["", "g_slave"])).await;
    g1.expect_eq(json!(["", "g_slave", {"'l": {&me: [&listener]}}]))
        .await;
    until("ref-g1 is the master", || {
        node.master().as_deref() == Some("ref-g1")
    })
    .await;
    assert!(!node.is_global());

    // A message to a node nobody told us of: the master is asked (conn6 at 9.24 s).
    node.snd("ref-s2#p", &("hello-from-rust", 1)).unwrap();
    g1.expect_eq(json!(["", "g_find", "ref-s2"])).await;
    g1.send(json!(["", "g_found", "ref-s2", [&s2_addr]])).await;

    // conn7: the slave dials ref-s2 where the master said, and the message follows.
    let mut s2 = Peer::accept(
        &s2_listener,
        "ref-s2",
        line1(&cap, 7, Dir::S2c, "ref-s2", &listener),
        &cap.secret,
    )
    .await;
    assert_eq!(s2.other, me);
    let first = s2.recv(WAIT).await;
    assert_eq!(
        first,
        Some(json!(["p", "hello-from-rust", 1])),
        "ref-s2 received:\n{}",
        show(&s2.seen)
    );
    assert!(node.up_nodes().contains(&"ref-s2".to_owned()));
    // Nothing else went to ref-s2, and ref-g1 got only the requests above.
    assert_eq!(s2.settle().await.len(), 1, "{}", show(&s2.seen));
    let to_g1: Vec<J> = g1.settle().await.to_vec();
    assert_eq!(
        to_g1,
        [
            json!(["", "g_slave"]),
            json!(["", "g_slave", {"'l": {&me: [&listener]}}]),
            json!(["", "g_find", "ref-s2"]),
        ],
        "ref-g1 received:\n{}",
        show(&to_g1)
    );
    node.shutdown();
}

/// A Rust global node (its own listener is one of its seeds) in `p2-cluster-db-json`'s place
/// of ref-g1, with the scripted global ref-g2 (conn3) and slave ref-s1 (conn5) dialling it.
struct GlobalCase {
    cap: Capture,
    node: Node,
    me: String,
    addr: String,
    g2_addr: String,
    s1_addr: String,
    _listeners: [TcpListener; 2],
}

impl GlobalCase {
    async fn start() -> GlobalCase {
        let cap = Capture::load("p2-cluster-db-json");
        let addr = format!("127.0.0.1:{}", free_port());
        let node = rust_node(
            "rust-g1",
            &cap.secret,
            NodeConfig {
                binds: vec![addr.clone()],
                seeds: vec![addr.clone()],
                dialect: DialectMode::Auto {
                    default: Dialect::P2,
                },
                ..NodeConfig::default()
            },
        )
        .await;
        let me = node.id().to_owned();
        // As ref-g1 in the capture, which greeted ref-g2 with g_global before anything else.
        until("the node is global", || node.is_global()).await;
        assert_eq!(node.master().as_deref(), Some(me.as_str()));
        let (g2_listener, g2_addr) = loopback().await;
        let (s1_listener, s1_addr) = loopback().await;
        GlobalCase {
            cap,
            node,
            me,
            addr,
            g2_addr,
            s1_addr,
            _listeners: [g2_listener, s1_listener],
        }
    }

    /// conn3: the global ref-g2 dials us (we are its seed) and the two exchange databases;
    /// our `g_set` carries our slaves' listeners (`'l`), ours included.
    async fn global_joins(&self, slaves_l: J) -> Peer {
        let (me, addr, g2_addr) = (&self.me, &self.addr, &self.g2_addr);
        let line = line1(&self.cap, 3, Dir::C2s, "ref-g2", addr);
        let mut g2 = Peer::dial(addr, "ref-g2", line, &self.cap.secret).await;
        assert_eq!(g2.other, *me);
        g2.expect_eq(json!(["", "g_global"])).await;
        g2.send_all(vec![
            json!(["", "g_global"]),
            json!(["", "g_slave"]),
            json!(["", "g_upd", "'g", {me: null}, []]),
            json!(["", "g_set", {"'g": {me: null, "ref-g2": null}, "'l": {"ref-g2": [g2_addr]}}]),
        ])
        .await;
        let want = [
            json!(["", "g_global"]),
            json!(["", "g_upd", "'g", {"ref-g2": null}, []]),
            json!(["", "g_set", {"'g": {me: null, "ref-g2": null}, "'l": slaves_l}]),
            // ref-g2's listeners, mirrored in our own database, are a change of our part.
            json!(["", "g_upd", "'l", {"ref-g2": [g2_addr]}, []]),
        ];
        g2.expect_eq(want[3].clone()).await;
        let exchange = g2.settle().await.to_vec();
        assert_eq!(
            exchange,
            want,
            "order as in conn3; ref-g2 received:\n{}",
            show(&exchange)
        );
        g2
    }

    /// conn5: the slave ref-s1 dials us (its seed, so its master), sends its database and
    /// asks where we listen.
    async fn slave_joins(&self) -> Peer {
        let (me, addr) = (&self.me, &self.addr);
        let line = line1(&self.cap, 5, Dir::C2s, "ref-s1", addr);
        let mut s1 = Peer::dial(addr, "ref-s1", line, &self.cap.secret).await;
        s1.send_all(vec![
            json!(["", "g_slave"]),
            json!(["", "g_slave", {"'l": {"ref-s1": [&self.s1_addr]}}]),
            json!(["", "g_find", me]),
            json!(["", "g_slave"]),
        ])
        .await;
        s1.expect_eq(json!(["", "g_global"])).await;
        s1.expect_eq(json!(["", "g_found", me, [addr]])).await;
        let to_s1 = s1.settle().await.to_vec();
        assert_eq!(
            to_s1,
            [json!(["", "g_global"]), json!(["", "g_found", me, [addr]])],
            "ref-s1 received:\n{}",
            show(&to_s1)
        );
        s1
    }

    async fn l_keys(&self) -> Vec<String> {
        let mut keys = tokio::time::timeout(WAIT, self.node.db_keys("'l"))
            .await
            .expect("db_keys answered")
            .unwrap();
        keys.sort();
        keys
    }
}

#[actix_rt::test]
async fn a_rust_global_serves_a_perl_slave_and_tells_a_perl_global() {
    let c = GlobalCase::start().await;
    let (me, addr, s1_addr) = (&c.me, &c.addr, &c.s1_addr);
    let mut g2 = c.global_joins(json!({me: [addr]})).await;
    let exchanged = g2.seen.len();
    let s1 = c.slave_joins().await;
    // The slave's listeners go to the other global as a change of ours (conn3 at 2.49 s).
    g2.expect_eq(json!(["", "g_upd", "'l", {"ref-s1": [s1_addr]}, []]))
        .await;
    assert_eq!(c.l_keys().await, ["ref-g2", "ref-s1", me.as_str()]);

    // The slave goes: its entry goes, and the other global is told (conn3 at 10.80 s).
    drop(s1);
    g2.expect_eq(json!(["", "g_upd", "'l", {}, ["ref-s1"]]))
        .await;
    let rest: Vec<J> = g2.settle().await[exchanged..].to_vec();
    assert_eq!(
        rest,
        [
            json!(["", "g_upd", "'l", {"ref-s1": [s1_addr]}, []]),
            json!(["", "g_upd", "'l", {}, ["ref-s1"]]),
        ],
        "ref-g2 received:\n{}",
        show(&g2.seen)
    );
    assert_eq!(c.l_keys().await, ["ref-g2", me.as_str()]);
    c.node.shutdown();
}

#[actix_rt::test]
async fn a_perl_global_that_joins_later_gets_the_rust_globals_slaves_in_g_set() {
    let c = GlobalCase::start().await;
    let (me, addr, s1_addr) = (&c.me, &c.addr, &c.s1_addr);
    let s1 = c.slave_joins().await;
    let mut g2 = c
        .global_joins(json!({me: [addr], "ref-s1": [s1_addr]}))
        .await;
    let exchanged = g2.seen.len();
    drop(s1);
    g2.expect_eq(json!(["", "g_upd", "'l", {}, ["ref-s1"]]))
        .await;
    let rest = g2.settle().await[exchanged..].to_vec();
    assert_eq!(rest.len(), 1, "ref-g2 received:\n{}", show(&g2.seen));
    c.node.shutdown();
}

/// A 1.x node's introduction on node-up (AEMP-NOTES §3.7): spawn its Global helper `helper`
/// on the peer (as `from`), monitor it, announce `addrs` and the `nodes` it knows, then
/// `setup` (1.24+).
fn helper_intro(helper: &str, from: &str, addrs: &[&str], nodes: Option<J>, setup: bool) -> Vec<J> {
    let mut intro = vec![
        json!([
            "",
            "AnyEvent::MP::_spawn",
            helper,
            "AnyEvent::MP::Global::connect",
            0,
            from
        ]),
        json!(["", "mon1", helper]),
        json!([helper, "addr", addrs]),
    ];
    intro.extend(nodes.map(|n| json!([helper, "nodes", n])));
    if setup {
        intro.push(json!([helper, "setup"]));
    }
    intro
}

/// What a 1.x mesh test needs to know of its capture.
struct Mesh {
    capture: &'static str,
    dialect: DialectMode,
    /// The seed's helper name on the node (the capture's, for its connection 1).
    seed_helper: &'static str,
    /// The third node's helper name on the node (connection 2).
    third_helper: &'static str,
    /// 1.24+: `setup` follows the introduction.
    setup: bool,
}

/// A Rust node plays `ref-b` of a 1.x mesh capture: seeded to the scripted `ref-seed` only, it
/// hears of `ref-a` through the seed's helper and connects to it.
async fn joins_a_mesh(m: Mesh) {
    let cap = Capture::load(m.capture);
    let (seed_listener, seed_addr) = loopback().await;
    let (a_listener, a_addr) = loopback().await;
    let node = rust_node(
        "rust-b",
        &cap.secret,
        NodeConfig {
            seeds: vec![seed_addr.clone()],
            dialect: m.dialect,
            ..NodeConfig::default()
        },
    )
    .await;
    let me = node.id().to_owned();
    let listener = node.listeners()[0].to_string();

    // conn1: ref-b dials the seed; each side spawns its helper on the other.
    let mut seed = Peer::accept(
        &seed_listener,
        "ref-seed",
        line1(&cap, 1, Dir::S2c, "ref-seed", &listener),
        &cap.secret,
    )
    .await;
    let nodes = json!({"ref-a": [&a_addr]});
    let intro = helper_intro(
        m.seed_helper,
        "ref-seed",
        &[&seed_addr],
        Some(nodes),
        m.setup,
    );
    seed.send_all(intro).await;
    let spawn = seed.expect_tag("AnyEvent::MP::_spawn").await;
    let helper = spawn[2].as_str().unwrap().to_owned();
    let mut want = helper_intro(&helper, &me, &[&listener], None, m.setup);
    assert_eq!(spawn, want[0]);
    if m.setup {
        // 1.1+: the first node up is asked for news (`seedme1`).
        want.push(json!([&helper, "seedme1"]));
    }
    seed.expect_eq(want.last().unwrap().clone()).await;

    // conn2: told of ref-a, the node connects to it — a full mesh.
    let mut a = Peer::accept(
        &a_listener,
        "ref-a",
        line1(&cap, 2, Dir::S2c, "ref-a", &listener),
        &cap.secret,
    )
    .await;
    assert_eq!(a.other, me);
    let nodes = json!({"ref-seed": [&seed_addr]});
    let intro = helper_intro(m.third_helper, "ref-a", &[&a_addr], Some(nodes), m.setup);
    a.send_all(intro).await;
    let spawn = a.expect_tag("AnyEvent::MP::_spawn").await;
    let helper = spawn[2].as_str().unwrap().to_owned();
    // No `seedme1` here: the node has its master (the seed) already.
    let nodes = json!({"ref-seed": [&seed_addr]});
    let want_a = helper_intro(&helper, &me, &[&listener], Some(nodes), m.setup);
    let to_a = a.settle().await.to_vec();
    assert_eq!(to_a, want_a, "ref-a received:\n{}", show(&to_a));
    let to_seed = seed.settle().await.to_vec();
    assert_eq!(to_seed, want, "ref-seed received:\n{}", show(&to_seed));
    let mut up = node.up_nodes();
    up.sort();
    assert_eq!(up, ["ref-a", "ref-seed"]);
    assert_eq!(
        node.known_listeners("ref-a"),
        Some(vec![a_addr.clone()]),
        "the helper's addr"
    );
    node.shutdown();
}

#[actix_rt::test]
async fn a_rust_node_joins_a_perl_1_30_mesh_through_its_seed() {
    joins_a_mesh(Mesh {
        capture: "p1b-mesh-groups",
        dialect: DialectMode::Auto {
            default: Dialect::P1b,
        },
        seed_helper: "hqBKDjcx21Ec9nQiB.c",
        third_helper: "ylKhn4do7VMFBvjG.c",
        setup: true,
    })
    .await;
}

#[actix_rt::test]
async fn a_rust_node_joins_a_perl_1_0_mesh_through_its_seed() {
    joins_a_mesh(Mesh {
        capture: "p0-mesh-groups",
        dialect: DialectMode::Fixed(Dialect::P0),
        seed_helper: "OwWVNZLQnG2NB8i1.c",
        third_helper: "k9Vm0RdnRsz4LojY.c",
        setup: false,
    })
    .await;
}

/// The JSON packets of one side of a capture's connection, in order.
fn packets(cap: &Capture, conn: usize, dir: Dir) -> Vec<J> {
    cap.entries(conn, dir, "JSON")
        .iter()
        .map(|p| serde_json::from_str::<J>(p).unwrap())
        .collect()
}

/// A Rust node named `id` (P2) whose seed is a scripted Perl global `master` (greeting as on
/// the capture's `conn`), once it has bound itself to that master.
async fn slave_of_scripted_master(
    cap: &Capture,
    id: &str,
    conn: usize,
    master: &str,
) -> (Node, Peer) {
    let (listener, addr) = loopback().await;
    let node = rust_node(
        id,
        &cap.secret,
        NodeConfig {
            seeds: vec![addr],
            dialect: DialectMode::Fixed(Dialect::P2),
            ..NodeConfig::default()
        },
    )
    .await;
    let ours = node.listeners()[0].to_string();
    let line = line1(cap, conn, Dir::S2c, master, &ours);
    let mut peer = Peer::accept(&listener, master, line, &cap.secret).await;
    peer.send(json!(["", "g_global"])).await;
    peer.expect_eq(json!(["", "g_slave"])).await;
    peer.expect_tag("g_slave").await;
    until("the scripted global is the master", || {
        node.master().as_deref() == Some(master)
    })
    .await;
    (node, peer)
}

/// What `scenario.txt` says a node's `db_mon` callback got: (family name, family, added,
/// changed, deleted), in order.
fn db_mon_callbacks(capture: &str, node: &str) -> Vec<(String, J, J, J, J)> {
    let path = common::vectors().join(format!("captures/{capture}/scenario.txt"));
    let text = std::fs::read_to_string(path).unwrap();
    let marker = format!(" {node} db_mon ");
    text.lines()
        .filter_map(|l| {
            let rest = &l[l.find(&marker)? + marker.len()..];
            let (fam, rest) = rest.split_once(": family=")?;
            let (family, rest) = rest.split_once(" added=")?;
            let (added, rest) = rest.split_once(" changed=")?;
            let (changed, deleted) = rest.split_once(" deleted=")?;
            let j = |t: &str| serde_json::from_str::<J>(t).unwrap();
            Some((fam.to_owned(), j(family), j(added), j(changed), j(deleted)))
        })
        .collect()
}

/// A change as the scenario prints a callback: the family after it, and the keys (sorted).
fn as_callback(change: &aemp::node::DbChange, family: &aemp::node::DbMonitor) -> (J, J, J, J) {
    let keys = |m: &std::collections::BTreeMap<String, Value>| {
        J::Array(m.keys().map(|k| J::String(k.clone())).collect())
    };
    let mut deleted = change.deleted.clone();
    deleted.sort();
    let fam: serde_json::Map<String, J> = family
        .family()
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect();
    (
        J::Object(fam),
        keys(&change.added),
        keys(&change.changed),
        json!(deleted),
    )
}

fn sorted(v: &J) -> J {
    let mut items: Vec<J> = v.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|a| a.to_string());
    J::Array(items)
}

/// A Rust node in ref-s2's place of `p2-cluster-db-json`: a scripted ref-g2 replays what the
/// Perl master sent on conn6 (`g_chg1`/`g_chg2` of `app_svc` and `'l`, the query replies), and
/// the Rust `db_mon` streams yield what Perl's callbacks got in `scenario.txt`.
#[actix_rt::test]
async fn a_rust_slave_mirrors_families_as_the_perl_slave_did() {
    let cap = Capture::load("p2-cluster-db-json");
    let (node, mut g2) = slave_of_scripted_master(&cap, "ref-s2", 6, "ref-g2").await;

    // What the master sent, in order; the callbacks the Perl slave printed, in order.
    let sent = packets(&cap, 6, Dir::S2c);
    let queries: Vec<J> = packets(&cap, 6, Dir::C2s)
        .into_iter()
        .filter(|p| tag(p).is_some_and(|t| t.starts_with("g_db_")))
        .collect();
    let mut want = db_mon_callbacks("p2-cluster-db-json", "ref-s2").into_iter();
    let mut mon_app = node.db_mon("app_svc").unwrap();
    let mut mon_l = None;
    for p in sent {
        match tag(&p) {
            Some("g_chg1" | "g_chg2") => {
                let family = p[2].as_str().unwrap().to_owned();
                if p[1] == "g_chg1" {
                    g2.expect_eq(json!(["", "g_mon1", &family])).await;
                }
                g2.send(p.clone()).await;
                let mon = if family == "'l" {
                    mon_l.as_mut().unwrap()
                } else {
                    &mut mon_app
                };
                let change = tokio::time::timeout(WAIT, mon.next_change())
                    .await
                    .unwrap_or_else(|_| panic!("no change after {p}"))
                    .unwrap();
                let (f, fam, added, changed, deleted) = want.next().expect("a callback");
                assert_eq!(f, family, "after {p}");
                let got = as_callback(&change, mon);
                assert_eq!(
                    (got.0, sorted(&got.1), sorted(&got.2), sorted(&got.3)),
                    (fam, sorted(&added), sorted(&changed), sorted(&deleted)),
                    "after {p}"
                );
                // Perl's driver started monitoring 'l right after app_svc's first callback.
                if mon_l.is_none() {
                    mon_l = Some(node.db_mon("'l").unwrap());
                }
            }
            Some("g_reply") => {
                // A query the Perl slave made (conn6, its side): ours asks the same.
                let result = p[3].clone();
                let (asked, fam) = queries
                    .iter()
                    .find(|q| q[3] == p[2])
                    .map(|q| (q[1].as_str().unwrap(), q[2].as_str().unwrap()))
                    .unwrap_or_else(|| panic!("no query for {p}"));
                let n2 = node.clone();
                let (asked, family) = (asked.to_owned(), fam.to_owned());
                let (what, fam) = (asked.clone(), family.clone());
                let ask = tokio::spawn(async move {
                    let fam = fam.as_str();
                    match what.as_str() {
                        "g_db_family" => json!(
                            n2.db_family(fam)
                                .await
                                .unwrap()
                                .iter()
                                .map(|(k, v)| (k.clone(), to_json(v)))
                                .collect::<serde_json::Map<_, _>>()
                        ),
                        "g_db_keys" => json!(n2.db_keys(fam).await.unwrap()),
                        _ => J::Array(
                            n2.db_values(fam)
                                .await
                                .unwrap()
                                .iter()
                                .map(to_json)
                                .collect(),
                        ),
                    }
                });
                let q = g2.expect_tag(&asked).await;
                assert_eq!(q[2], json!(family), "{q}");
                g2.send(json!(["", "g_reply", q[3].clone(), result.clone()]))
                    .await;
                let got = tokio::time::timeout(WAIT, ask).await.unwrap().unwrap();
                assert_eq!(sorted(&got), sorted(&result), "{asked} {family}");
            }
            _ => {}
        }
    }
    assert!(
        want.next().is_none(),
        "every callback of the scenario was seen"
    );
    node.shutdown();
}

/// A Rust node in ref-s1's place of `p2-cluster-db-json`: its database changes reach the
/// master as the `g_upd`s the Perl slave sent on conn5, in the same shapes and order.
#[actix_rt::test]
async fn a_rust_slave_sends_its_changes_as_the_perl_slave_did() {
    let cap = Capture::load("p2-cluster-db-json");
    let (node, mut g1) = slave_of_scripted_master(&cap, "ref-s1", 5, "ref-g1").await;
    let perl: Vec<J> = packets(&cap, 5, Dir::C2s)
        .into_iter()
        .filter(|p| tag(p) == Some("g_upd"))
        .collect();
    // The driver's steps (scenario.txt): db_set k1 v1, db_reg p1, db_set k1 v2, db_del k1,
    // kil p1, db_set k2 left-behind.
    let (port, _inbox) = node.port_stream();
    let k1 = node.db_set("app_svc", "k1", "v1").unwrap();
    let reg = node.db_reg("app_svc", port.id(), &()).unwrap();
    reg.detach();
    let k1_again = node.db_set("app_svc", "k1", "v2").unwrap();
    k1.detach();
    drop(k1_again);
    node.kil(port.id(), vec![]).unwrap();
    node.db_set("app_svc", "k2", "left-behind")
        .unwrap()
        .detach();
    let mut got = Vec::new();
    for _ in 0..perl.len() {
        got.push(g1.expect_tag("g_upd").await);
    }
    // Port ids differ; everything else is as Perl sent it.
    let ours = |p: &J| p.to_string().replace(port.id(), "<p1>");
    let theirs = |p: &J| p.to_string().replace("ref-s1#vG7bjOPqRc", "<p1>");
    assert_eq!(
        got.iter().map(ours).collect::<Vec<_>>(),
        perl.iter().map(theirs).collect::<Vec<_>>()
    );
    assert!(
        g1.settle()
            .await
            .iter()
            .filter(|p| tag(p) == Some("g_upd"))
            .count()
            == perl.len()
    );
    node.shutdown();
}

/// A Rust global node in ref-g1's place: the Perl slave ref-s1's changes (conn5) reach the other
/// global as the `g_upd`s ref-g1 sent on conn3, in order; when the slave leaves, what it left
/// behind goes everywhere (Perl's order between families is its hash order: any order here).
#[actix_rt::test]
async fn a_rust_global_relays_a_perl_slaves_changes_as_the_perl_global_did() {
    let c = GlobalCase::start().await;
    let (me, addr) = (&c.me, &c.addr);
    let mut g2 = c.global_joins(json!({me: [addr]})).await;
    let mut s1 = c.slave_joins().await;
    g2.expect_tag("g_upd").await; // ref-s1's 'l
    let from_slave: Vec<J> = packets(&c.cap, 5, Dir::C2s)
        .into_iter()
        .filter(|p| tag(p) == Some("g_upd"))
        .collect();
    let relayed: Vec<J> = packets(&c.cap, 3, Dir::S2c)
        .into_iter()
        .filter(|p| tag(p) == Some("g_upd") && p[2] == "app_svc")
        .collect();
    // The capture's last relay of app_svc is the slave leaving (k2 left behind).
    let (changes, leaving) = relayed.split_at(relayed.len() - 1);
    s1.send_all(from_slave).await;
    for want in changes {
        g2.expect_eq(want.clone()).await;
    }
    drop(s1);
    g2.expect_eq(leaving[0].clone()).await;
    g2.expect_eq(json!(["", "g_upd", "'l", {}, ["ref-s1"]]))
        .await;
    assert!(
        tokio::time::timeout(WAIT, c.node.db_family("app_svc"))
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    c.node.shutdown();
}
