//! Port groups over real sockets: a scripted Perl 1.30 or 1.0 node (the captures
//! `p1b-mesh-groups` and `p0-mesh-groups`) registers ports that a Rust node's `grp_get` and
//! `grp_mon` show, and hears of the Rust node's registrations (`set`, `reg1`, `reg0`) in its
//! version's argument order; two Rust nodes share groups through the P2 database.

mod common;

use std::time::Duration;

use aemp::node::{GroupChange, GroupMonitor, Node, NodeConfig};
use common::Capture;
use common::Dir;
use common::scripted::{Peer, line1, rust_node, show, until};
use serde_json::json;

const GROUP: &str = "app_grp";

async fn change(mon: &mut GroupMonitor) -> GroupChange {
    tokio::time::timeout(Duration::from_secs(10), mon.next_change())
        .await
        .expect("a group change within 10 s")
        .expect("the monitor runs")
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// What differs between the 1.x versions.
struct Version {
    capture: &'static str,
    /// 1.0 sends `reg1 port group`, 1.1+ `reg1 group port`.
    port_first: bool,
    /// 1.1+: `setup` and `seedme1` follow the introduction.
    p1b: bool,
}

impl Version {
    fn reg(&self, helper: &str, tag: &str, port: &str) -> serde_json::Value {
        if self.port_first {
            json!([helper, tag, port, GROUP])
        } else {
            json!([helper, tag, GROUP, port])
        }
    }
}

/// A Rust node with a port in `app_grp`; the scripted Perl node `ref-a` dials it, and the
/// groups go both ways.
async fn groups_with_a_perl_1x_node(version: Version) {
    let cap = Capture::load(version.capture);
    let node = rust_node("rust-b", &cap.secret, NodeConfig::default()).await;
    let me = node.id().to_owned();
    let addr = node.listeners()[0].to_string();
    let mut mon = node.grp_mon(GROUP);

    // Registered before the peer links: it hears of it in `set`.
    let (p1, _p1_inbox) = node.port_stream();
    let reg1 = node.grp_reg(GROUP, p1.id()).unwrap();
    let first = change(&mut mon).await;
    assert_eq!((first.members, first.added), (v(&[p1.id()]), v(&[p1.id()])));

    // conn2 of the captures: ref-a (1.x) links to the Rust node; each spawns its helper.
    let line = line1(&cap, 2, Dir::C2s, "ref-a", &addr);
    let mut a = Peer::dial(&addr, "ref-a", line, &cap.secret).await;
    let h = "ref-a-helper.b";
    let mut intro = vec![
        json!([
            "",
            "AnyEvent::MP::_spawn",
            h,
            "AnyEvent::MP::Global::connect",
            0,
            "ref-a"
        ]),
        json!(["", "mon1", h]),
        json!([h, "addr", ["127.0.0.1:9"]]),
        json!([h, "set", {GROUP: ["ref-a#p.d", "ref-a"], "other": ["ref-a#p.x"]}]),
    ];
    if version.p1b {
        intro.push(json!([h, "setup"]));
    }
    a.send_all(intro).await;
    let spawn = a.expect_tag("AnyEvent::MP::_spawn").await;
    let helper = spawn[2].as_str().unwrap().to_owned();
    let mut want = vec![
        json!([
            "",
            "AnyEvent::MP::_spawn",
            &helper,
            "AnyEvent::MP::Global::connect",
            0,
            &me
        ]),
        json!(["", "mon1", &helper]),
        json!([&helper, "addr", [&addr]]),
        json!([&helper, "set", {GROUP: [p1.id()]}]),
    ];
    if version.p1b {
        want.push(json!([&helper, "setup"]));
        want.push(json!([&helper, "seedme1"]));
    }
    a.expect_eq(want.last().unwrap().clone()).await;

    // The peer's `set` shows in grp_mon and grp_get.
    let c = change(&mut mon).await;
    assert_eq!(c.added, v(&["ref-a", "ref-a#p.d"]), "{c:?}");
    assert_eq!(c.members, v(&["ref-a", "ref-a#p.d", p1.id()]));
    assert_eq!(node.grp_get("other"), v(&["ref-a#p.x"]));

    // Its `reg1`/`reg0`, in its version's order.
    a.send(version.reg(h, "reg1", "ref-a#p.e")).await;
    let c = change(&mut mon).await;
    assert_eq!(c.added, v(&["ref-a#p.e"]), "{c:?}");
    a.send(version.reg(h, "reg0", "ref-a#p.d")).await;
    let c = change(&mut mon).await;
    assert_eq!(c.removed, v(&["ref-a#p.d"]), "{c:?}");
    assert_eq!(node.grp_get(GROUP), v(&["ref-a", "ref-a#p.e", p1.id()]));

    // A Rust registration reaches the peer as `reg1`; the port's death as `reg0`; so does the
    // end of the first registration.
    let (p2, _p2_inbox) = node.port_stream();
    node.grp_reg(GROUP, p2.id()).unwrap().detach();
    a.expect_eq(version.reg(&helper, "reg1", p2.id())).await;
    assert_eq!(change(&mut mon).await.added, v(&[p2.id()]));
    node.kil(p2.id(), Vec::new()).unwrap();
    a.expect_eq(version.reg(&helper, "reg0", p2.id())).await;
    assert_eq!(change(&mut mon).await.removed, v(&[p2.id()]));
    drop(reg1);
    a.expect_eq(version.reg(&helper, "reg0", p1.id())).await;
    assert_eq!(change(&mut mon).await.removed, v(&[p1.id()]));

    let got = a.settle().await.to_vec();
    want.extend([
        version.reg(&helper, "reg1", p2.id()),
        version.reg(&helper, "reg0", p2.id()),
        version.reg(&helper, "reg0", p1.id()),
    ]);
    assert_eq!(got, want, "ref-a received:\n{}", show(&got));

    // The peer goes: its ports leave the group.
    drop(a);
    let c = change(&mut mon).await;
    assert_eq!(c.removed, v(&["ref-a", "ref-a#p.e"]), "{c:?}");
    assert!(c.members.is_empty());
    assert!(node.grp_get(GROUP).is_empty() && node.grp_get("other").is_empty());
    node.shutdown();
}

#[actix_rt::test]
async fn groups_with_a_perl_1_30_node() {
    groups_with_a_perl_1x_node(Version {
        capture: "p1b-mesh-groups",
        port_first: false,
        p1b: true,
    })
    .await;
}

#[actix_rt::test]
async fn groups_with_a_perl_1_0_node() {
    groups_with_a_perl_1x_node(Version {
        capture: "p0-mesh-groups",
        port_first: true,
        p1b: false,
    })
    .await;
}

#[actix_rt::test]
async fn registrations_are_checked() {
    let node = rust_node("rust-c", b"secret", NodeConfig::default()).await;
    let (p, _inbox) = node.port_stream();
    let guard = node.grp_reg(GROUP, p.id()).unwrap();
    assert!(node.grp_reg(GROUP, p.id()).is_err(), "twice");
    assert!(node.grp_reg("", p.id()).is_err(), "no name");
    assert!(node.grp_reg(GROUP, "elsewhere#p").is_err(), "not local");
    // The node port never dies: its registration stays until its guard goes.
    let node_reg = node.grp_reg(GROUP, node.id()).unwrap();
    assert_eq!(node.grp_get(GROUP).len(), 2);
    drop((guard, node_reg));
    assert!(node.grp_get(GROUP).is_empty());
    // A port that does not exist (any more) leaves at once.
    let gone = format!("{}#gone", node.id());
    let _guard = node.grp_reg(GROUP, &gone).unwrap();
    assert!(node.grp_get(GROUP).is_empty());
    node.shutdown();
}

async fn p2_node(seeds: Vec<String>) -> Node {
    rust_node(
        "anon/",
        b"p2-groups",
        NodeConfig {
            seeds,
            ..NodeConfig::default()
        },
    )
    .await
}

#[actix_rt::test]
async fn two_rust_nodes_share_groups_through_the_database() {
    let g = p2_node(Vec::new()).await;
    let s = p2_node(vec![g.listeners()[0].to_string()]).await;
    until("s is bound to g", || s.master().as_deref() == Some(g.id())).await;
    let mut on_g = g.grp_mon(GROUP);
    let mut on_s = s.grp_mon(GROUP);

    // The slave's registration reaches the global's monitor and its grp_get.
    let (sp, _sp_inbox) = s.port_stream();
    let s_reg = s.grp_reg(GROUP, sp.id()).unwrap();
    assert_eq!(change(&mut on_g).await.added, v(&[sp.id()]));
    assert_eq!(g.grp_get(GROUP), v(&[sp.id()]));
    assert_eq!(change(&mut on_s).await.added, v(&[sp.id()]));

    // The global's registration reaches the slave; a port's death ends it.
    let (gp, _gp_inbox) = g.port_stream();
    g.grp_reg(GROUP, gp.id()).unwrap().detach();
    let c = change(&mut on_s).await;
    assert_eq!(c.added, v(&[gp.id()]), "{c:?}");
    assert_eq!(s.grp_get(GROUP).len(), 2);
    assert_eq!(change(&mut on_g).await.added, v(&[gp.id()]));
    g.kil(gp.id(), Vec::new()).unwrap();
    assert_eq!(change(&mut on_s).await.removed, v(&[gp.id()]));
    assert_eq!(change(&mut on_g).await.removed, v(&[gp.id()]));

    // A dropped guard, then the slave's node itself going: the entries go.
    drop(s_reg);
    let c = change(&mut on_g).await;
    assert_eq!((c.removed, c.members), (v(&[sp.id()]), v(&[])));
    let (sp2, _sp2_inbox) = s.port_stream();
    s.grp_reg(GROUP, sp2.id()).unwrap().detach();
    assert_eq!(change(&mut on_g).await.added, v(&[sp2.id()]));
    s.shutdown();
    assert_eq!(change(&mut on_g).await.removed, v(&[sp2.id()]));
    assert!(g.grp_get(GROUP).is_empty());
    g.shutdown();
}
