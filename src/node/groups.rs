//! Port groups from Rust, Perl's `grp_reg`, `grp_get` and `grp_mon` (AEMP-NOTES §3.7, §3.8): a
//! service registers its port under a name, and other nodes find it by that name.
//!
//! Perl has two generations of them, and a Rust node speaks both:
//!
//! * **1.x** (links to Perl 1.0 and 1.1+ nodes): the group registry of 1.x `Global.pm`. A
//!   registration is told to every linked 1.x node through the helper port we spawned there
//!   (`reg1`/`reg0`, in the argument order of the peer's version), and to each node that links
//!   later in one `set` with all our registrations; 1.x peers tell us theirs the same way.
//! * **P2** (links to Perl 2.x and Rust nodes): a group is a family of the network's database, as
//!   in Perl 2.x's compatibility layer: `grp_reg` is `db_reg(group, port, null)`, `grp_mon` is a
//!   `db_mon` of the family, `grp_get` the family's keys as this node knows them.
//!
//! **Both kinds of links.** A registration is made in both at once, whatever links the node has
//! at that moment: 1.x nodes that link later get it in their `set`, and a master bound later gets
//! it with our database. [`Node::grp_get`] and [`Node::grp_mon`] show the union of the two views
//! (a port registered in both is one member). The two are not bridged: a Perl 1.x node sees the
//! registrations of the nodes it is linked to over 1.x links (Rust ones included), a Perl 2.x
//! node those in the database; a Rust node does not relay one side's registrations to the other.
//! A group name that is not a family name (`[A-Za-z][A-Za-z0-9_:]*`, see [`valid_family`]) lives
//! in the 1.x registry only.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use super::global;
pub use super::global::GroupChange;
use super::{DbMonitor, MonitorGuard, Node, NodeError, Shared, split_port_id, valid_family};

/// A registration made with [`Node::grp_reg`]; dropping the guard ends it
/// ([`GroupGuard::detach`] keeps it until the port dies).
#[must_use = "dropping a GroupGuard ends the registration; call detach() to keep it"]
pub struct GroupGuard {
    shared: Arc<Shared>,
    group: String,
    port: String,
    /// Ends the registration when the port dies (none for the node port, which does not die).
    death: Option<MonitorGuard>,
    detached: bool,
}

impl GroupGuard {
    /// Keeps the registration until the port dies (or the node shuts down).
    pub fn detach(mut self) {
        self.detached = true;
        if let Some(death) = self.death.take() {
            death.detach();
        }
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The registered port.
    pub fn port(&self) -> &str {
        &self.port
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.detached {
            self.death = None;
            unregister(&self.shared, &self.group, &self.port);
        }
    }
}

impl std::fmt::Debug for GroupGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupGuard")
            .field("group", &self.group)
            .field("port", &self.port)
            .finish()
    }
}

fn unregister(shared: &Arc<Shared>, group: &str, port: &str) {
    let effects = shared
        .global()
        .grp_unregister(group, port, valid_family(group));
    global::apply(shared, effects);
}

/// A group watched with [`Node::grp_mon`]: a [`Stream`] of its changes. The first change is the
/// group as this node knows it (every member "added"), when it has members; then one per change.
/// The monitor ends when dropped.
pub struct GroupMonitor {
    shared: Arc<Shared>,
    group: String,
    id: u64,
    /// Changes of the 1.x registry.
    mesh_rx: mpsc::UnboundedReceiver<GroupChange>,
    mesh: BTreeSet<String>,
    /// The family of that name, for P2 networks (none for a name that is no family name).
    db: Option<DbMonitor>,
    db_keys: BTreeSet<String>,
    /// The union of both, as the changes yielded so far make it.
    members: BTreeSet<String>,
}

impl GroupMonitor {
    /// The group's members as the changes yielded so far make it.
    pub fn members(&self) -> &BTreeSet<String> {
        &self.members
    }

    /// The next change (`None` once the node is gone).
    pub async fn next_change(&mut self) -> Option<GroupChange> {
        futures_util::StreamExt::next(self).await
    }

    /// The union of both views, if it differs from what was yielded last.
    fn merge(&mut self) -> Option<GroupChange> {
        let now: BTreeSet<String> = self.mesh.union(&self.db_keys).cloned().collect();
        if now == self.members {
            return None;
        }
        let added = now.difference(&self.members).cloned().collect();
        let removed = self.members.difference(&now).cloned().collect();
        self.members = now;
        Some(GroupChange {
            members: self.members.iter().cloned().collect(),
            added,
            removed,
        })
    }
}

impl Stream for GroupMonitor {
    type Item = GroupChange;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GroupChange>> {
        let this = self.get_mut();
        loop {
            let mut news = false;
            let mut open = false;
            match this.mesh_rx.poll_recv(cx) {
                Poll::Ready(Some(change)) => {
                    this.mesh = change.members.into_iter().collect();
                    news = true;
                }
                Poll::Ready(None) => {}
                Poll::Pending => open = true,
            }
            if let Some(db) = &mut this.db {
                match Pin::new(db).poll_next(cx) {
                    Poll::Ready(Some(change)) => {
                        for k in &change.deleted {
                            this.db_keys.remove(k);
                        }
                        this.db_keys.extend(change.added.into_keys());
                        this.db_keys.extend(change.changed.into_keys());
                        news = true;
                    }
                    Poll::Ready(None) => {}
                    Poll::Pending => open = true,
                }
            }
            if !news {
                return if open {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            }
            if let Some(change) = this.merge() {
                return Poll::Ready(Some(change));
            }
        }
    }
}

impl Drop for GroupMonitor {
    fn drop(&mut self) {
        self.shared.global().grp_unsubscribe(&self.group, self.id);
    }
}

impl std::fmt::Debug for GroupMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMonitor")
            .field("group", &self.group)
            .field("members", &self.members)
            .finish()
    }
}

impl Node {
    /// Perl's `grp_reg`: registers the local `port` (or this node's id, its node port) in
    /// `group`. The registration ends when the port dies or the guard is dropped
    /// ([`GroupGuard::detach`] keeps it).
    ///
    /// Toward Perl 1.x peers it is 1.x's group registry: every linked 1.x node is told
    /// (`reg1`, and `reg0` at the end, in the argument order of its version), and each node that
    /// links later gets all our registrations in one `set`. Toward P2 peers (Perl 2.x and Rust
    /// nodes) a group is a family of the network's database, as in Perl 2.x's compatibility
    /// layer: the registration is the entry `group/port = null` of this node's database (Perl's
    /// `db_reg`), which reaches the master now or once there is one.
    ///
    /// **Both kinds of links**: the registration is made in both, whatever links the node has
    /// at that moment, and [`Node::grp_get`] and [`Node::grp_mon`] show the union of what the
    /// two tell (a port registered in both is one member). The two are not bridged: a Perl 1.x
    /// node sees the registrations of the nodes linked to it over 1.x links (Rust ones
    /// included), a Perl 2.x node those in the database; a Rust node does not relay one side's
    /// registrations to the other. A group name that is not a family name
    /// (`[A-Za-z][A-Za-z0-9_:]*`, see [`valid_family`]) lives in the 1.x registry only.
    ///
    /// Fails for a port of another node, an empty group name, or a port already registered in
    /// that group (as Perl refuses a second registration).
    ///
    /// # Example
    ///
    /// A service registers its port; another node finds it by the group's name:
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use aemp::node::{Node, NodeConfig};
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let server = Node::start(NodeConfig::with_secret("s3cret"))
    ///         .await
    ///         .unwrap();
    ///     let (service, _inbox) = server.port_stream();
    ///     let registration = server.grp_reg("app_service", service.id()).unwrap();
    ///     assert_eq!(server.grp_get("app_service"), [service.id()]);
    ///
    ///     // The server is the client's seed, so its master: the group is a family there.
    ///     let client = Node::start(NodeConfig {
    ///         seeds: vec![server.listeners()[0].to_string()],
    ///         ..NodeConfig::with_secret("s3cret")
    ///     })
    ///     .await
    ///     .unwrap();
    ///     let mut group = client.grp_mon("app_service");
    ///     let first = tokio::time::timeout(Duration::from_secs(10), group.next_change())
    ///         .await
    ///         .expect("the group within 10 s")
    ///         .unwrap();
    ///     assert_eq!(first.added, [service.id()]);
    ///
    ///     drop(registration);
    ///     let gone = group.next_change().await.unwrap();
    ///     assert_eq!(gone.removed, [service.id()]);
    ///     assert!(gone.members.is_empty());
    /// }
    /// ```
    pub fn grp_reg(&self, group: &str, port: &str) -> Result<GroupGuard, NodeError> {
        let (node, name) = split_port_id(port);
        if node != self.id() {
            return Err(NodeError::NotLocal(port.to_owned()));
        }
        let refuse = |reason| NodeError::Group {
            group: group.to_owned(),
            port: port.to_owned(),
            reason,
        };
        if group.is_empty() {
            return Err(refuse("the group name is empty"));
        }
        let registered = self
            .shared
            .global()
            .grp_register(group, port, valid_family(group));
        let Some(effects) = registered else {
            return Err(refuse("the port is registered in it already"));
        };
        global::apply(&self.shared, effects);
        // The node port never dies; any other port leaves the group when it does.
        let death = (!name.is_empty()).then(|| {
            let shared = Arc::downgrade(&self.shared);
            let (g, p) = (group.to_owned(), port.to_owned());
            self.mon(port, move |_| {
                if let Some(shared) = shared.upgrade() {
                    unregister(&shared, &g, &p);
                }
            })
        });
        Ok(GroupGuard {
            shared: self.shared.clone(),
            group: group.to_owned(),
            port: port.to_owned(),
            death,
            detached: false,
        })
    }

    /// Perl's `grp_get`: the members of `group` as this node knows them, sorted (empty where
    /// Perl returns `undef`): what 1.x peers told it, its own registrations, and the keys of the
    /// database family of that name it holds — all of them on a global node, those of a family
    /// it monitors (a [`Node::grp_mon`] of the group is one) elsewhere. For the network's view
    /// from a P2 node that is not global, keep a [`GroupMonitor`] or ask [`Node::db_keys`].
    pub fn grp_get(&self, group: &str) -> Vec<String> {
        self.shared
            .global()
            .grp_members(group)
            .into_iter()
            .collect()
    }

    /// Perl's `grp_mon`: watches `group`, in the 1.x registry and (for a family name) the
    /// database family of that name; see [`GroupMonitor`].
    pub fn grp_mon(&self, group: &str) -> GroupMonitor {
        let (tx, mesh_rx) = mpsc::unbounded_channel();
        let id = self.shared.global().grp_subscribe(group, tx);
        let db = if valid_family(group) {
            self.db_mon(group).ok()
        } else {
            None
        };
        GroupMonitor {
            shared: self.shared.clone(),
            group: group.to_owned(),
            id,
            mesh_rx,
            mesh: BTreeSet::new(),
            db,
            db_keys: BTreeSet::new(),
            members: BTreeSet::new(),
        }
    }
}
