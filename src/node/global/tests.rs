//! The global services' state machines, from requests as they arrive on the wire.

use super::*;
use crate::proto::node_request::NodeRequest;

fn g() -> Global {
    let mut g = Global::default();
    g.start("me".into(), vec!["127.0.0.1:1".into()]);
    g
}

/// A `g_*` request as it arrives at the node port: parsed from `[tag, args…]`, then
/// answered; `None` if it parses as no `g_*` request.
fn wire(g: &mut Global, from: &str, tag: &str, args: &[Value]) -> Option<Vec<Effect>> {
    let mut packet = vec![s(tag)];
    packet.extend_from_slice(args);
    match NodeRequest::parse(Dialect::P2, packet).unwrap() {
        NodeRequest::Global(request) => Some(g.request(from, request)),
        _ => None,
    }
}

fn arr(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|i| s(i)).collect())
}

#[test]
fn node_up_introduces_us_and_picks_a_master() {
    let mut g = g();
    let out = g.helper_started("perl", "perl#h.1".into(), Dialect::P1b);
    assert_eq!(
        out,
        vec![
            Effect::Send("perl#h.1".into(), vec![s("addr"), arr(&["127.0.0.1:1"])]),
            Effect::Send("perl#h.1".into(), vec![s("setup")]),
            Effect::Send("perl#h.1".into(), vec![s("seedme1")]),
        ]
    );
    // A P0 peer gets neither setup nor seedme1, but hears of the nodes we know.
    g.helper_message("perl", Dialect::P1b, "addr", &[arr(&["10.0.0.1:4040"])]);
    let out = g.helper_started("old", "old#h.2".into(), Dialect::P0);
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[1],
        Effect::Send(
            "old#h.2".into(),
            vec![
                s("nodes"),
                Value::Map(vec![("perl".into(), arr(&["10.0.0.1:4040"]))])
            ]
        )
    );
}

#[test]
fn only_the_first_1x_peer_is_asked_for_news() {
    // p1b-mesh-groups: ref-b asks its seed (`seedme1`, conn1), not ref-a, which it meets
    // later through the seed (conn2: addr, nodes, setup).
    let mut g = g();
    let out = g.helper_started("ref-seed", "ref-seed#h.1".into(), Dialect::P1b);
    assert_eq!(out.last(), Some(&send("ref-seed#h.1", vec![s("seedme1")])));
    g.helper_message("ref-seed", Dialect::P1b, "addr", &[arr(&["10.0.0.1:1"])]);
    let out = g.helper_started("ref-a", "ref-a#h.2".into(), Dialect::P1b);
    assert_eq!(
        out,
        vec![
            send("ref-a#h.2", vec![s("addr"), arr(&["127.0.0.1:1"])]),
            send(
                "ref-a#h.2",
                vec![
                    s("nodes"),
                    Value::Map(vec![("ref-seed".into(), arr(&["10.0.0.1:1"]))])
                ]
            ),
            send("ref-a#h.2", vec![s("setup")]),
        ]
    );
    // The seed goes: ref-a is asked instead.
    let out = g.node_down("ref-seed");
    assert!(
        out.contains(&send("ref-a#h.2", vec![s("seedme1")])),
        "{out:?}"
    );
}

#[test]
fn find_answers_through_our_helper_on_the_asker() {
    let mut g = g();
    g.helper_started("a", "a#h".into(), Dialect::P1a);
    g.helper_message("b", Dialect::P1a, "addr", &[arr(&["10.0.0.2:1"])]);
    let out = g.helper_message("a", Dialect::P1a, "find", &[s("b")]);
    assert_eq!(
        out,
        vec![Effect::Send(
            "a#h".into(),
            vec![
                s("nodes"),
                Value::Map(vec![("b".into(), arr(&["10.0.0.2:1"]))])
            ]
        )]
    );
    assert!(
        g.helper_message("a", Dialect::P1a, "find", &[s("nobody")])
            .is_empty()
    );
}

fn members(g: &Global, group: &str) -> Vec<String> {
    g.grp_members(group).into_iter().collect()
}

#[test]
fn groups_follow_the_dialects_argument_order_and_node_death() {
    let mut g = g();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    g.grp_subscribe("grp", tx);
    g.helper_message("a", Dialect::P0, "reg1", &[s("a#p"), s("grp")]);
    g.helper_message("b", Dialect::P1b, "reg1", &[s("grp"), s("b#q")]);
    g.helper_message(
        "c",
        Dialect::P1b,
        "set",
        &[Value::Map(vec![("grp".into(), arr(&["c#r", "c"]))])],
    );
    assert_eq!(members(&g, "grp"), ["a#p", "b#q", "c", "c#r"]);
    g.helper_message("b", Dialect::P1b, "reg0", &[s("grp"), s("b#q")]);
    g.node_down("a");
    // The node itself (its node port) and its ports go with its helper.
    g.helper_died("c", "c#unknown-helper");
    assert_eq!(members(&g, "grp"), ["c", "c#r"]);
    g.helpers.insert("c".into(), ("c#h".into(), Dialect::P1b));
    g.helper_died("c", "c#h");
    assert!(members(&g, "grp").is_empty());
    let changes: Vec<GroupChange> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let v = |items: &[&str]| items.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    let change = |m: &[&str], a: &[&str], r: &[&str]| GroupChange {
        members: v(m),
        added: v(a),
        removed: v(r),
    };
    assert_eq!(
        changes,
        [
            change(&["a#p"], &["a#p"], &[]),
            change(&["a#p", "b#q"], &["b#q"], &[]),
            change(&["a#p", "b#q", "c", "c#r"], &["c", "c#r"], &[]),
            change(&["a#p", "c", "c#r"], &[], &["b#q"]),
            change(&["c", "c#r"], &[], &["a#p"]),
            change(&[], &[], &["c", "c#r"]),
        ]
    );
    // Repeats and removals of non-members change nothing, and tell nobody.
    g.helper_message("b", Dialect::P1b, "reg0", &[s("grp"), s("b#q")]);
    g.helper_message("b", Dialect::P1b, "reg1", &[s("other"), s("b#q")]);
    g.helper_message("b", Dialect::P1b, "reg1", &[s("other"), s("b#q")]);
    g.helper_message("b", Dialect::P1b, "reg1", &[Value::Int(1), s("b#q")]);
    assert!(rx.try_recv().is_err());
    assert_eq!(members(&g, "other"), ["b#q"]);
}

#[test]
fn our_registrations_reach_each_helper_in_its_order_and_new_ones_in_set() {
    let mut g = g();
    g.helper_started("p0", "p0#h".into(), Dialect::P0);
    g.helper_started("p1", "p1#h".into(), Dialect::P1b);
    let out = g.grp_register("app_grp", "me#p", false).unwrap();
    let mut out_sorted = out.clone();
    out_sorted.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        out_sorted,
        [
            send("p0#h", vec![s("reg1"), s("me#p"), s("app_grp")]),
            send("p1#h", vec![s("reg1"), s("app_grp"), s("me#p")]),
        ]
    );
    assert_eq!(members(&g, "app_grp"), ["me#p"]);
    assert!(g.grp_register("app_grp", "me#p", false).is_none(), "twice");
    g.grp_register("eg_chat_server2", "me", false).unwrap();
    // A node linking later gets the whole registry: addr, nodes, set, setup, seedme1
    // (p1b-chat, conn0 and conn1).
    g.helper_message("p1", Dialect::P1b, "addr", &[arr(&["10.0.0.1:1"])]);
    g.node_down("p1");
    let out = g.helper_started("late", "late#h".into(), Dialect::P1b);
    let set = vec![
        s("set"),
        map(&[
            ("app_grp", arr(&["me#p"])),
            ("eg_chat_server2", arr(&["me"])),
        ]),
    ];
    assert_eq!(
        out,
        [
            send("late#h", vec![s("addr"), arr(&["127.0.0.1:1"])]),
            send("late#h", set),
            send("late#h", vec![s("setup")]),
            send("late#h", vec![s("seedme1")]),
        ]
    );
    let out = g.grp_unregister("app_grp", "me#p", false);
    let mut out_sorted = out.clone();
    out_sorted.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        out_sorted,
        [
            send("late#h", vec![s("reg0"), s("app_grp"), s("me#p")]),
            send("p0#h", vec![s("reg0"), s("me#p"), s("app_grp")]),
        ]
    );
    assert!(g.grp_unregister("app_grp", "me#p", false).is_empty());
    assert!(members(&g, "app_grp").is_empty());
    // A monitor's first change is the group as it is; an empty group gives none.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let id = g.grp_subscribe("eg_chat_server2", tx);
    assert_eq!(rx.try_recv().unwrap().added, ["me"]);
    let (tx, mut empty) = tokio::sync::mpsc::unbounded_channel();
    g.grp_subscribe("nothing", tx);
    assert!(empty.try_recv().is_err());
    g.grp_unsubscribe("eg_chat_server2", id);
    g.grp_unregister("eg_chat_server2", "me", false);
    assert!(rx.try_recv().is_err(), "unsubscribed");
}

#[test]
fn in_p2_a_registration_is_a_database_entry_of_the_groups_family() {
    let mut g = Global::default();
    g.start("s1".into(), vec![]);
    g.node_up("seed", true, true);
    let out = g.grp_register("app_grp", "s1#p", true).unwrap();
    // As Perl's db_set sends it: `g_upd family {key: value}`.
    let set = vec![s("g_upd"), s("app_grp"), map(&[("s1#p", Value::Null)])];
    assert_eq!(out, [send("seed", set)]);
    // Known at once (our own entry), and the family's other keys once mirrored.
    assert_eq!(members(&g, "app_grp"), ["s1#p"]);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    g.db_subscribe("app_grp", tx);
    let state = map(&[("s1#p", Value::Null), ("s2#q", Value::Null)]);
    wire(&mut g, "seed", "g_chg1", &[s("app_grp"), state]).unwrap();
    assert_eq!(members(&g, "app_grp"), ["s1#p", "s2#q"]);
    let out = g.grp_unregister("app_grp", "s1#p", true);
    // As Perl's db_del sends it: `g_upd family undef [key]`.
    let del = vec![s("g_upd"), s("app_grp"), Value::Null, arr(&["s1#p"])];
    assert_eq!(out, [send("seed", del)]);
    // A global node knows the whole family.
    let mut g = global_g1();
    wire(
        &mut g,
        "ref-s1",
        "g_slave",
        &[map(&[("grp", map(&[("ref-s1#x", Value::Null)]))])],
    );
    assert_eq!(members(&g, "grp"), ["ref-s1#x"]);
}

#[test]
fn nodes_messages_make_us_connect_but_never_to_ourselves() {
    let mut g = g();
    let out = g.helper_message(
        "a",
        Dialect::P1b,
        "nodes",
        &[Value::Map(vec![
            ("me".into(), arr(&["127.0.0.1:1"])),
            ("z".into(), arr(&["10.0.0.9:5"])),
        ])],
    );
    assert_eq!(
        out,
        vec![
            Effect::Addresses("z".into(), vec!["10.0.0.9:5".into()]),
            Effect::Connect("z".into())
        ]
    );
}

fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn send(to: &str, msg: Vec<Value>) -> Effect {
    Effect::Send(to.into(), msg)
}

fn upd(family: &str, set: Value, del: &[&str]) -> Vec<Value> {
    vec![s("g_upd"), s(family), set, arr(del)]
}

/// A global node as in the capture `p2-cluster-db-json`: `ref-g1` (its own seed), linked to
/// the global `ref-g2`, then serving the slave `ref-s1`.
fn global_g1() -> Global {
    let mut g = Global::default();
    g.start("ref-g1".into(), vec!["127.0.0.1:35749".into()]);
    g.become_global();
    g
}

#[test]
fn global_nodes_exchange_databases_in_the_captures_order() {
    let mut g = global_g1();
    assert_eq!(g.master(), Some("ref-g1"));
    let out = g.node_up("ref-g2", true, false);
    assert_eq!(out, vec![send("ref-g2", vec![s("g_global")])]);
    // g_global from the other global: it joins our 'g (told to it as our change), it gets our
    // slaves' database, and we keep a link to it.
    let out = wire(&mut g, "ref-g2", "g_global", &[]).unwrap();
    let g_l = map(&[("ref-g1", arr(&["127.0.0.1:35749"]))]);
    let both = map(&[("ref-g1", Value::Null), ("ref-g2", Value::Null)]);
    assert_eq!(
        out,
        vec![
            send("ref-g2", upd("'g", map(&[("ref-g2", Value::Null)]), &[])),
            Effect::KeepAlive(vec!["ref-g2".into()]),
            send(
                "ref-g2",
                vec![s("g_set"), map(&[("'g", both.clone()), ("'l", g_l)])]
            ),
        ]
    );
    // Its g_set: its listeners become known, and we mirror them in our own 'l.
    let g2_l = map(&[("ref-g2", arr(&["127.0.0.1:37839"]))]);
    let theirs = map(&[("'g", both), ("'l", g2_l.clone())]);
    let out = wire(&mut g, "ref-g2", "g_set", &[theirs]).unwrap();
    assert_eq!(
        out,
        vec![
            Effect::Addresses("ref-g2".into(), vec!["127.0.0.1:37839".into()]),
            Effect::Addresses("ref-g2".into(), vec!["127.0.0.1:37839".into()]),
            send("ref-g2", upd("'l", g2_l, &[])),
        ]
    );
    assert_eq!(
        g.listeners_of("ref-g2"),
        Some(vec!["127.0.0.1:37839".into()])
    );
}

#[test]
fn a_global_node_serves_a_slave_and_tells_the_other_globals() {
    let mut g = global_g1();
    g.node_up("ref-g2", true, false);
    wire(&mut g, "ref-g2", "g_global", &[]).unwrap();
    // The slave: g_global on node-up; its empty g_slave changes nothing; its database is
    // broadcast to the other global as a change of ours.
    assert_eq!(
        g.node_up("ref-s1", true, false),
        vec![send("ref-s1", vec![s("g_global")])]
    );
    assert!(wire(&mut g, "ref-s1", "g_slave", &[]).unwrap().is_empty());
    let s1_l = map(&[("ref-s1", arr(&["127.0.0.1:40421"]))]);
    let out = wire(&mut g, "ref-s1", "g_slave", &[map(&[("'l", s1_l.clone())])]).unwrap();
    assert_eq!(
        out,
        vec![
            Effect::Addresses("ref-s1".into(), vec!["127.0.0.1:40421".into()]),
            send("ref-g2", upd("'l", s1_l, &[])),
        ]
    );
    let out = wire(&mut g, "ref-s1", "g_find", &[s("ref-g1")]).unwrap();
    assert_eq!(
        out,
        vec![send(
            "ref-s1",
            vec![s("g_found"), s("ref-g1"), arr(&["127.0.0.1:35749"])]
        )]
    );
    let out = wire(&mut g, "ref-s1", "g_find", &[s("ghost")]).unwrap();
    assert_eq!(
        out,
        vec![send("ref-s1", vec![s("g_found"), s("ghost"), Value::Null])]
    );
    // A change of the slave's goes to the other global; a monitor hears of it.
    wire(&mut g, "ref-s2", "g_mon1", &[s("app_svc")]).unwrap();
    let k1 = map(&[("k1", s("v1"))]);
    let out = wire(
        &mut g,
        "ref-s1",
        "g_upd",
        &[s("app_svc"), k1.clone(), Value::Null],
    )
    .unwrap();
    assert_eq!(
        out,
        vec![
            // The other global first (its monitors wait for it), then our own monitors.
            send("ref-g2", upd("app_svc", k1.clone(), &[])),
            send("ref-s2", vec![s("g_chg2"), s("app_svc"), k1, arr(&[])]),
        ]
    );
    let out = wire(&mut g, "ref-s2", "g_db_keys", &[s("'l"), s("q1")]).unwrap();
    assert_eq!(
        out,
        vec![send(
            "ref-s2",
            vec![s("g_reply"), s("q1"), arr(&["ref-g1", "ref-s1"])]
        )]
    );
    // The slave leaves: its entries go, everywhere.
    let out = g.node_down("ref-s1");
    assert!(
        out.contains(&send("ref-g2", upd("app_svc", map(&[]), &["k1"]))),
        "{out:?}"
    );
    assert!(
        out.contains(&send("ref-g2", upd("'l", map(&[]), &["ref-s1"]))),
        "{out:?}"
    );
    assert!(out.contains(&send(
        "ref-s2",
        vec![s("g_chg2"), s("app_svc"), map(&[]), arr(&["k1"])]
    )));
    assert_eq!(g.listeners_of("ref-s1"), None);
    assert!(wire(&mut g, "x", "g_nonsense", &[]).is_none());
}

#[test]
fn a_slave_binds_to_its_first_seed_asks_it_and_moves_to_another() {
    let mut g = Global::default();
    g.start("ref-s1".into(), vec!["127.0.0.1:40421".into()]);
    let db = map(&[("'l", map(&[("ref-s1", arr(&["127.0.0.1:40421"]))]))]);
    // A lookup before any master is kept, and asked of the master once there is one.
    assert!(g.lookup("ref-s2").is_empty());
    let out = g.node_up("ref-g1", true, true);
    assert_eq!(
        out,
        vec![
            send("ref-g1", vec![s("g_slave")]),
            send("ref-g1", vec![s("g_slave"), db.clone()]),
            send("ref-g1", vec![s("g_find"), s("ref-s2")]),
        ]
    );
    assert_eq!(g.master(), Some("ref-g1"));
    // A second seed is asked to be global, not made master.
    assert_eq!(
        g.node_up("ref-g2", true, true),
        vec![send("ref-g2", vec![s("g_slave")])]
    );
    // The master goes: the other seed is master now, and gets the open request again.
    let out = g.node_down("ref-g1");
    assert_eq!(
        out,
        vec![
            send("ref-g2", vec![s("g_slave"), db]),
            send("ref-g2", vec![s("g_find"), s("ref-s2")]),
        ]
    );
    // The answer makes the registry dial; it closes the request.
    let found = [s("ref-s2"), arr(&["127.0.0.1:41537"])];
    assert_eq!(
        wire(&mut g, "ref-g2", "g_found", &found).unwrap(),
        vec![Effect::Addresses(
            "ref-s2".into(),
            vec!["127.0.0.1:41537".into()]
        )]
    );
    assert_eq!(
        g.lookup("ref-s3"),
        vec![send("ref-g2", vec![s("g_find"), s("ref-s3")])]
    );
    assert!(g.node_down("ref-g2").is_empty());
    assert_eq!(g.master(), None);
    // A peer that is no seed (or a 1.x seed) makes no master.
    assert!(g.node_up("other", true, false).is_empty());
    assert!(g.node_up("perl1x", false, true).is_empty());
    assert_eq!(g.master(), None);
    // g_global makes a non-global node only remember it.
    assert!(wire(&mut g, "other", "g_global", &[]).unwrap().is_empty());
    assert!(!g.is_global());
    // An empty g_slave makes us global: our own master, announced to every linked peer.
    let out = wire(&mut g, "other", "g_slave", &[]).unwrap();
    assert!(g.is_global() && g.master() == Some("ref-s1"));
    assert!(out.contains(&send("other", vec![s("g_global")])), "{out:?}");
}

#[test]
fn queries_are_answered_by_g_reply_and_given_up_callers_are_forgotten() {
    let mut g = Global::default();
    g.start("me".into(), vec![]);
    g.node_up("seed", true, true);
    let (tx, mut rx) = oneshot::channel();
    let out = g.call("g_db_keys", "'l", tx);
    assert_eq!(
        out,
        vec![send("seed", vec![s("g_db_keys"), s("'l"), s("rs1")])]
    );
    let (tx2, rx2) = oneshot::channel();
    drop(rx2);
    g.call("g_db_family", "x", tx2);
    let (tx3, _rx3) = oneshot::channel();
    g.call("g_db_family", "y", tx3);
    assert!(!g.requests.contains_key("rs2"), "a closed call is dropped");
    wire(&mut g, "seed", "g_reply", &[s("rs1"), arr(&["a"])]).unwrap();
    assert_eq!(rx.try_recv().unwrap(), arr(&["a"]));
    assert!(!g.requests.contains_key("rs1"));
}

#[test]
fn a_monitor_starts_with_the_family_as_it_is_even_empty() {
    let mut g = Global::default();
    g.start("me".into(), vec![]);
    g.node_up("seed", true, true);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_, out) = g.db_subscribe("svc", tx);
    assert_eq!(out, vec![send("seed", vec![s("g_mon1"), s("svc")])]);
    assert!(rx.try_recv().is_err(), "nothing before the master answers");
    // The master's first g_chg1 of an empty family (null on the wire) is the first item.
    wire(&mut g, "seed", "g_chg1", &[s("svc"), Value::Null]).unwrap();
    let first = rx.try_recv().unwrap();
    assert!(first.added.is_empty() && first.deleted.is_empty() && first.family == "svc");
    // A second subscriber gets the (empty) snapshot at once; an empty g_chg2 tells nobody.
    let (tx2, mut rx2) = tokio::sync::mpsc::unbounded_channel();
    g.db_subscribe("svc", tx2);
    assert!(rx2.try_recv().unwrap().added.is_empty());
    wire(&mut g, "seed", "g_chg2", &[s("svc"), map(&[]), arr(&[])]).unwrap();
    wire(&mut g, "seed", "g_chg1", &[s("svc"), Value::Null]).unwrap();
    assert!(rx.try_recv().is_err() && rx2.try_recv().is_err());
    let set = map(&[("k", Value::Int(1))]);
    wire(&mut g, "seed", "g_chg2", &[s("svc"), set, arr(&[])]).unwrap();
    assert_eq!(rx.try_recv().unwrap().added.get("k"), Some(&Value::Int(1)));
    assert_eq!(rx2.try_recv().unwrap().added.get("k"), Some(&Value::Int(1)));
}

#[test]
fn a_node_that_becomes_global_serves_its_open_requests_itself() {
    let mut g = Global::default();
    g.start("me".into(), vec!["127.0.0.1:1".into()]);
    // Lookups pile up while the node has no master (more than the node port's hop bound).
    for i in 0..100 {
        assert!(g.lookup(&format!("n{i}")).is_empty());
    }
    let (tx, mut rx) = oneshot::channel();
    assert!(g.call("g_db_keys", "'l", tx).is_empty());
    let out = wire(&mut g, "slave", "g_slave", &[]).unwrap();
    assert!(g.is_global());
    // Nothing goes to our own node port; unknown nodes are reported as such, the query is
    // answered from our own replica.
    assert!(
        out.iter()
            .all(|e| !matches!(e, Effect::Send(to, _) if to == "me")),
        "{out:?}"
    );
    let not_found = out
        .iter()
        .filter(|e| matches!(e, Effect::NotFound(_)))
        .count();
    assert_eq!(not_found, 100);
    assert_eq!(rx.try_recv().unwrap(), arr(&["me"]));
    assert!(g.requests.is_empty(), "{:?}", g.requests.keys());
}
