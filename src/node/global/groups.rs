//! Port groups, 1.x Perl's `grp_reg`/`grp_get`/`grp_mon` (AEMP-NOTES §3.7), as state.
//!
//! Toward 1.x peers this is the group registry of Perl's `Global.pm`: our own registrations
//! (`lreg`) go to every helper port we spawned (`reg1`/`reg0`, arguments in the peer's order) and,
//! whole, in `set` to each new one; what peers tell us (`set`, `reg1`, `reg0`) is merged with them
//! (`greg`), and a peer's ports leave when its helper or its link goes. Local monitors hear of
//! each change of the merged view.
//!
//! Toward P2 peers a group is a database family (Perl 2.x's compatibility layer): a registration
//! is the entry `group/port = null` of our own database, written with it
//! ([`Global::db_write`]); [`Global::grp_members`] adds the keys of the family this node knows.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;

use super::{Effect, Global, MAX_ENTRIES, s, strings};
use crate::proto::dialect::Dialect;
use crate::proto::node_request::Family;
use crate::proto::value::Value;

/// One change of a port group, as [`crate::node::GroupMonitor`] yields it (Perl's
/// `grp_mon` callback: all members, those added, those removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupChange {
    /// Every member after the change, sorted.
    pub members: Vec<String>,
    /// Ports that joined, sorted.
    pub added: Vec<String>,
    /// Ports that left, sorted.
    pub removed: Vec<String>,
}

/// The 1.x group registry.
#[derive(Default)]
pub(super) struct Groups {
    /// group → members: ours and those peers told us (Perl's `%greg`).
    members: BTreeMap<String, BTreeSet<String>>,
    /// group → our own registered ports (Perl's `%lreg`).
    local: BTreeMap<String, BTreeSet<String>>,
    /// group → subscription id → where its changes go.
    monitors: BTreeMap<String, BTreeMap<u64, mpsc::UnboundedSender<GroupChange>>>,
}

/// `["reg1"|"reg0", …]` in the argument order of a peer of `dialect` (1.0: port, group).
fn reg_msg(tag: &str, dialect: Dialect, group: &str, port: &str) -> Vec<Value> {
    match dialect {
        Dialect::P0 => vec![s(tag), s(port), s(group)],
        _ => vec![s(tag), s(group), s(port)],
    }
}

impl Global {
    /// Adds and removes members of a 1.x group; monitors hear of what actually changed.
    fn group_update(&mut self, group: &str, add: &[String], del: &[String]) {
        let g = &mut self.groups;
        if !g.members.contains_key(group) && (add.is_empty() || g.members.len() >= MAX_ENTRIES) {
            return;
        }
        let members = g.members.entry(group.to_owned()).or_default();
        let mut removed: Vec<String> = del.iter().filter(|p| members.remove(*p)).cloned().collect();
        let mut added = Vec::new();
        for port in add {
            if members.len() < MAX_ENTRIES && members.insert(port.clone()) {
                added.push(port.clone());
            }
        }
        let all: Vec<String> = members.iter().cloned().collect();
        if members.is_empty() {
            g.members.remove(group);
        }
        if added.is_empty() && removed.is_empty() {
            return;
        }
        added.sort();
        removed.sort();
        removed.dedup();
        let change = GroupChange {
            members: all,
            added,
            removed,
        };
        if let Some(subs) = g.monitors.get_mut(group) {
            subs.retain(|_, tx| tx.send(change.clone()).is_ok());
        }
    }

    /// The members of `group` this node knows: the 1.x registry (our registrations included)
    /// and the keys of the database family of that name as this node holds them.
    pub fn grp_members(&self, group: &str) -> BTreeSet<String> {
        let mut out = self.groups.members.get(group).cloned().unwrap_or_default();
        out.extend(self.db_known_keys(group));
        out
    }

    /// Registers our `port` in `group`: told to every 1.x helper (`reg1`), and with `p2`
    /// written to our database as `group/port = null`. `None` if it is registered already.
    pub fn grp_register(&mut self, group: &str, port: &str, p2: bool) -> Option<Vec<Effect>> {
        let local = &mut self.groups.local;
        if local.get(group).is_some_and(|l| l.contains(port)) {
            return None;
        }
        local
            .entry(group.to_owned())
            .or_default()
            .insert(port.to_owned());
        let mut out: Vec<Effect> = self
            .helpers
            .values()
            .map(|(helper, d)| Effect::Send(helper.clone(), reg_msg("reg1", *d, group, port)))
            .collect();
        self.group_update(group, &[port.to_owned()], &[]);
        if p2 {
            let entry = Family::from([(port.to_owned(), Value::Null)]);
            out.extend(self.db_write(group, entry, &[]));
        }
        Some(out)
    }

    /// Ends a registration of [`Global::grp_register`] (`reg0` to every 1.x helper, the
    /// database entry deleted); nothing if it is gone already.
    pub fn grp_unregister(&mut self, group: &str, port: &str, p2: bool) -> Vec<Effect> {
        let Some(local) = self.groups.local.get_mut(group) else {
            return Vec::new();
        };
        if !local.remove(port) {
            return Vec::new();
        }
        if local.is_empty() {
            self.groups.local.remove(group);
        }
        let mut out: Vec<Effect> = self
            .helpers
            .values()
            .map(|(helper, d)| Effect::Send(helper.clone(), reg_msg("reg0", *d, group, port)))
            .collect();
        self.group_update(group, &[], &[port.to_owned()]);
        if p2 {
            out.extend(self.db_write(group, Family::new(), &[port.to_owned()]));
        }
        out
    }

    /// Starts handing the changes of the 1.x registry's `group` to `tx`, the first being its
    /// members now (if any, all "added", as Perl's `grp_mon`). Returns the subscription's id.
    pub fn grp_subscribe(&mut self, group: &str, tx: mpsc::UnboundedSender<GroupChange>) -> u64 {
        self.next_call += 1;
        let id = self.next_call;
        let g = &mut self.groups;
        if !g.monitors.contains_key(group) && g.monitors.len() >= MAX_ENTRIES {
            // Dropping `tx` ends that part of the monitor.
            return id;
        }
        if let Some(members) = g.members.get(group).filter(|m| !m.is_empty()) {
            let all: Vec<String> = members.iter().cloned().collect();
            let _ = tx.send(GroupChange {
                members: all.clone(),
                added: all,
                removed: Vec::new(),
            });
        }
        g.monitors
            .entry(group.to_owned())
            .or_default()
            .insert(id, tx);
        id
    }

    /// Ends subscription `id` to `group`.
    pub fn grp_unsubscribe(&mut self, group: &str, id: u64) {
        if let Some(subs) = self.groups.monitors.get_mut(group) {
            subs.remove(&id);
            if subs.is_empty() {
                self.groups.monitors.remove(group);
            }
        }
    }

    /// Our whole registry as 1.x's `set` sends it to a new helper (`None` when empty).
    pub(super) fn grp_set_msg(&self) -> Option<Vec<Value>> {
        if self.groups.local.is_empty() {
            return None;
        }
        let map = self
            .groups
            .local
            .iter()
            .map(|(g, ports)| {
                (
                    g.clone(),
                    Value::Array(ports.iter().map(|p| s(p)).collect()),
                )
            })
            .collect();
        Some(vec![s("set"), Value::Map(map)])
    }

    /// A group message to the helper port a 1.x peer of `dialect` spawned on us (`set`,
    /// `reg1`, `reg0`); `false` if `tag` is none of these.
    pub(super) fn helper_group_message(
        &mut self,
        dialect: Dialect,
        tag: &str,
        args: &[Value],
    ) -> bool {
        let text = |i: usize| args.get(i).and_then(Value::as_str).map(|t| t.into_owned());
        match tag {
            "set" => {
                let Some(map) = args.first().and_then(Value::as_map) else {
                    return true;
                };
                for (group, ports) in map.iter().take(MAX_ENTRIES) {
                    let ports = strings(ports).unwrap_or_default();
                    self.group_update(group, &ports, &[]);
                }
            }
            "reg1" | "reg0" => {
                // 1.0 sent (port, group), 1.1+ (group, port).
                let (group, port) = match dialect {
                    Dialect::P0 => (text(1), text(0)),
                    _ => (text(0), text(1)),
                };
                if let (Some(group), Some(port)) = (group, port) {
                    let port = [port];
                    if tag == "reg1" {
                        self.group_update(&group, &port, &[]);
                    } else {
                        self.group_update(&group, &[], &port);
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// `node`'s ports (and the node itself) leave every group: its helper or its link went.
    pub(super) fn unreg_node(&mut self, node: &str) {
        let prefix = format!("{node}#");
        let hits: Vec<(String, Vec<String>)> = self
            .groups
            .members
            .iter()
            .map(|(g, m)| {
                let gone = m
                    .iter()
                    .filter(|p| *p == node || p.starts_with(&prefix))
                    .cloned();
                (g.clone(), gone.collect::<Vec<_>>())
            })
            .filter(|(_, gone)| !gone.is_empty())
            .collect();
        for (group, gone) in hits {
            self.group_update(&group, &[], &gone);
        }
    }
}
