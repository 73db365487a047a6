//! The network's database between Rust nodes over TCP: two global nodes, a slave of each; what
//! one slave sets is seen by the other's `db_mon`, by queries, and goes when it is deleted, its
//! guard dropped, its registered port killed, or its node gone.

use std::time::Duration;

use aemp::node::{DbChange, DbMonitor, Node, NodeConfig};
use aemp::proto::value::Value;

const SECRET: &str = "db-secret";

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn node(binds: Vec<String>, seeds: Vec<String>) -> Node {
    Node::start(NodeConfig {
        binds,
        seeds,
        workers: 1,
        ..NodeConfig::with_secret(SECRET)
    })
    .await
    .unwrap()
}

async fn change(mon: &mut DbMonitor) -> DbChange {
    tokio::time::timeout(Duration::from_secs(10), mon.next_change())
        .await
        .expect("a change within 10 s")
        .expect("the monitor runs")
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

/// Waits until `cond` holds (checked every 20 ms, for 10 s).
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 10 s");
}

#[actix_rt::test]
async fn a_value_set_on_a_slave_of_one_global_reaches_a_monitor_on_a_slave_of_the_other() {
    let (a1, a2) = (free_addr(), free_addr());
    let seeds = vec![a1.clone(), a2.clone()];
    let g1 = node(vec![a1.clone()], seeds.clone()).await;
    let g2 = node(vec![a2.clone()], seeds.clone()).await;
    until("globals", || g1.is_global() && g2.is_global()).await;
    let s1 = node(vec!["127.0.0.1:0".into()], vec![a1.clone()]).await;
    let s2 = node(vec!["127.0.0.1:0".into()], vec![a2.clone()]).await;
    until("masters", || {
        s1.master().as_deref() == Some(g1.id()) && s2.master().as_deref() == Some(g2.id())
    })
    .await;

    let mut mon = s2.db_mon("app_svc").unwrap();
    // The first item is the family as it is: empty (as Perl calls a new db_mon callback).
    let c = change(&mut mon).await;
    assert!(c.added.is_empty() && c.deleted.is_empty(), "{c:?}");
    let k1 = s1.db_set("app_svc", "k1", "v1").unwrap();
    let c = change(&mut mon).await;
    assert_eq!(c.added.get("k1"), Some(&s("v1")), "{c:?}");

    // A change, then a registered port, then the port killed.
    let _k1 = s1.db_set("app_svc", "k1", "v2").unwrap();
    drop(k1); // the first guard's key is the same: dropping it deletes k1
    let c = change(&mut mon).await;
    assert_eq!(c.changed.get("k1"), Some(&s("v2")), "{c:?}");
    let c = change(&mut mon).await;
    assert_eq!(c.deleted, vec!["k1".to_string()], "{c:?}");

    let (port, _stream) = s1.port_stream();
    let reg = s1.db_reg("app_svc", port.id(), &()).unwrap();
    reg.detach();
    let c = change(&mut mon).await;
    assert_eq!(c.added.get(port.id()), Some(&Value::Null), "{c:?}");
    assert_eq!(
        s2.db_keys("app_svc").await.unwrap(),
        vec![port.id().to_owned()]
    );
    s1.kil(port.id(), vec![]).unwrap();
    let c = change(&mut mon).await;
    assert_eq!(c.deleted, vec![port.id().to_owned()], "{c:?}");

    // A detached entry stays until its node leaves the network.
    s1.db_set("app_svc", "k2", "left-behind").unwrap().detach();
    let c = change(&mut mon).await;
    assert_eq!(c.added.get("k2"), Some(&s("left-behind")), "{c:?}");
    assert_eq!(
        mon.family().get("k2"),
        Some(&s("left-behind")),
        "the monitor's view"
    );
    let family = g1.db_family("app_svc").await.unwrap();
    assert_eq!(family.get("k2"), Some(&s("left-behind")));
    s1.shutdown();
    let c = change(&mut mon).await;
    assert_eq!(c.deleted, vec!["k2".to_string()], "{c:?}");
    assert!(s2.db_family("app_svc").await.unwrap().is_empty());

    // 'l lists every node still there.
    let mut keys = s2.db_keys("'l").await.unwrap();
    keys.sort();
    let mut want = vec![g1.id().to_owned(), g2.id().to_owned(), s2.id().to_owned()];
    want.sort();
    assert_eq!(keys, want);
    assert!(s2.db_set("'l", "x", &1).is_err() && s2.db_set("9a", "x", &1).is_err());
    drop(mon);
    g1.shutdown();
    g2.shutdown();
    s2.shutdown();
}

#[actix_rt::test]
async fn a_global_node_monitors_and_queries_its_own_replica() {
    let a = free_addr();
    let g = node(vec![a.clone()], vec![a.clone()]).await;
    until("global", || g.is_global()).await;
    let s = node(vec!["127.0.0.1:0".into()], vec![a]).await;
    until("master", || s.master().as_deref() == Some(g.id())).await;
    let mut mon = g.db_mon("svc").unwrap();
    assert!(change(&mut mon).await.added.is_empty(), "empty at first");
    let _e = s.db_set("svc", "k", &[1, 2]).unwrap();
    let c = change(&mut mon).await;
    assert_eq!(
        c.added.get("k"),
        Some(&Value::Array(vec![Value::Int(1), Value::Int(2)]))
    );
    assert_eq!(g.db_values("svc").await.unwrap().len(), 1);
    // A second monitor of the same family starts with the family as it is.
    let mut again = g.db_mon("svc").unwrap();
    let c = change(&mut again).await;
    assert_eq!(c.added.len(), 1, "{c:?}");
    g.shutdown();
    s.shutdown();
}
