//! The P2 cluster protocol as every node takes part in it (Perl 2.x `Kernel.pm`): each seed is
//! asked to run the global service (`g_slave`), the first up seed becomes our master and gets
//! our database (`g_slave db`), and what we ask the network goes to the master and is asked
//! again of each new one (`g_find`, `g_db_*` queries).

use tokio::sync::oneshot;

use super::{Effect, Global, MAX_ENTRIES, db_value, s};
use crate::proto::dialect::Dialect;
use crate::proto::node_request::{NodeRequest, tag};
use crate::proto::value::Value;

impl Global {
    /// A peer that speaks the cluster protocol came up.
    pub(super) fn member_up(&mut self, node: &str, seed: bool) -> Vec<Effect> {
        self.cluster_up.insert(node.to_owned());
        let mut out = Vec::new();
        if self.is_global {
            out.push(Effect::Send(node.to_owned(), vec![s(tag::G_GLOBAL)]));
        }
        if seed {
            out.extend(self.seed_up(node));
        }
        out
    }

    /// A link to one of our seeds is up (or an up peer turned out to be one): make sure it
    /// runs the global service, and bind to it if we have no master yet.
    pub fn seed_up(&mut self, node: &str) -> Vec<Effect> {
        if !self.cluster_up.contains(node) {
            // A 1.x seed: the 1.x mesh (`mesh1`) does the seeding there.
            return Vec::new();
        }
        self.seeds_up.insert(node.to_owned());
        let mut out = vec![Effect::Send(node.to_owned(), vec![s(tag::G_SLAVE)])];
        if self.master.is_none() {
            out.extend(self.master_set(node.to_owned()));
        }
        out
    }

    /// A peer went down: if it was our master, bind to another up seed.
    pub(super) fn member_down(&mut self, node: &str) -> Vec<Effect> {
        self.cluster_up.remove(node);
        self.seeds_up.remove(node);
        self.globals.remove(node);
        if self.master.as_deref() != Some(node) {
            return Vec::new();
        }
        self.master = None;
        match self.seeds_up.iter().next().cloned() {
            Some(next) => self.master_set(next),
            None => Vec::new(),
        }
    }

    /// Binds us to `master`: it gets our database and every request still open.
    pub(super) fn master_set(&mut self, master: String) -> Vec<Effect> {
        tracing::debug!(node = %self.own_id, %master, "new master node");
        let mut out = Vec::new();
        if master == self.own_id {
            // A global node is its own master (and its own slave).
            out.extend(self.slave(&master, self.local_db.clone()));
        } else {
            out.push(Effect::Send(
                master.clone(),
                vec![s(tag::G_SLAVE), db_value(&self.local_db)],
            ));
        }
        self.master = Some(master);
        let requests: Vec<Vec<Value>> = self.requests.values().cloned().collect();
        for request in requests {
            out.extend(self.ask_master(request));
        }
        out
    }

    /// Sends `request` to our master; on a global node (its own master) it is served here
    /// at once, with what it leads to for ourselves, not through the node port: a node that
    /// becomes global may replay many requests, more than one dispatch may follow.
    pub(super) fn ask_master(&mut self, request: Vec<Value>) -> Vec<Effect> {
        let Some(master) = self.master.clone() else {
            return Vec::new();
        };
        if master != self.own_id {
            return vec![Effect::Send(master, request)];
        }
        let mut out = Vec::new();
        // A request to ourselves is answered to ourselves (g_found, g_reply, g_chg1), whose
        // handling ends there: two rounds.
        let mut todo = vec![request];
        for _ in 0..2 {
            let mut next = Vec::new();
            for msg in todo {
                let Ok(NodeRequest::Global(r)) = NodeRequest::parse(Dialect::P2, msg) else {
                    continue;
                };
                for effect in self.request(&master, r) {
                    match effect {
                        Effect::Send(to, msg) if to == master => next.push(msg),
                        other => out.push(other),
                    }
                }
            }
            todo = next;
        }
        out.extend(
            todo.into_iter()
                .map(|msg| Effect::Send(master.clone(), msg)),
        );
        out
    }

    /// The master we are bound to, if any.
    pub fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }

    /// Whether we are a global node.
    pub fn is_global(&self) -> bool {
        self.is_global
    }

    /// Messages wait for `node`, whose address the registry does not know: what we know of it,
    /// or a question to the network (`g_find` to our master; 1.x `find` to our mesh master).
    pub fn lookup(&mut self, node: &str) -> Vec<Effect> {
        if node == self.own_id {
            return Vec::new();
        }
        if let Some(addrs) = self.listeners_of(node).filter(|a| !a.is_empty()) {
            return vec![Effect::Addresses(node.to_owned(), addrs)];
        }
        let mut out = self.mesh_find(node);
        let request = vec![s(tag::G_FIND), s(node)];
        if self.requests.len() < MAX_ENTRIES {
            self.requests
                .insert(format!("{} {node}", tag::G_FIND), request.clone());
        }
        match &self.master {
            Some(master) if *master != self.own_id => {
                out.push(Effect::Send(master.clone(), request));
            }
            _ => {}
        }
        out
    }

    /// `g_found node addrs`: the master's answer to our `g_find`.
    pub(super) fn found(&mut self, node: String, addrs: Option<Vec<String>>) -> Vec<Effect> {
        self.requests.remove(&format!("{} {node}", tag::G_FIND));
        match addrs {
            Some(addrs) if !addrs.is_empty() && node != self.own_id => {
                vec![Effect::Addresses(node, addrs)]
            }
            // Not known (yet): it may be joining right now; the registry asks again soon.
            _ if node != self.own_id => vec![Effect::NotFound(node)],
            _ => Vec::new(),
        }
    }

    /// Asks the master `[tag, family, id]`; `tx` gets the `g_reply`'s result.
    pub(super) fn call(
        &mut self,
        tag: &'static str,
        family: &str,
        tx: oneshot::Sender<Value>,
    ) -> Vec<Effect> {
        // Callers that gave up (timed out) leave a closed sender: forget their requests.
        let gone: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.calls.remove(&id);
            self.requests.remove(&id);
        }
        self.next_call += 1;
        let id = format!("rs{}", self.next_call);
        let request = vec![s(tag), s(family), s(&id)];
        self.requests.insert(id.clone(), request.clone());
        self.calls.insert(id, tx);
        self.ask_master(request)
    }

    /// `g_reply id result`: completes one of our queries.
    pub(super) fn reply(&mut self, id: Value, result: Value) {
        let Some(id) = id.as_str().map(|i| i.into_owned()) else {
            return;
        };
        self.requests.remove(&id);
        if let Some(tx) = self.calls.remove(&id) {
            let _ = tx.send(result);
        }
    }
}
