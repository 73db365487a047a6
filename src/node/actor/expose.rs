//! Exposing an actix actor as one port: messages dispatched by tag to its handlers.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};

use super::super::port_stream::{Inbox, PortHandler};
use super::super::{Message, MonitorGuard, Node, NodeError, Port};
use super::port_ref::PortRef;
use super::routes::{Dispatch, Dispatched, RequestRoute, Route, Routes, TellRoute};
use super::{RemoteMessage, Request, Tell};
use crate::proto::value::Value;

/// Builds the port of an actor; see [`Node::expose`]. `R` is the list of message types taken
/// so far (built by [`Expose::tell`] and [`Expose::request`]).
#[must_use = "the port is only created by start()"]
pub struct Expose<A: Actor, R = ()> {
    node: Node,
    addr: Addr<A>,
    routes: R,
    local: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    tolerant: bool,
}

impl<A: Actor> Expose<A> {
    pub(crate) fn new(node: Node, addr: Addr<A>) -> Expose<A> {
        Expose {
            node,
            addr,
            routes: (),
            local: HashMap::new(),
            tolerant: false,
        }
    }
}

impl<A: Actor, R: Routes> Expose<A, R> {
    /// Takes `M` (one-way): each `[M::TAG, fields...]` is decoded and sent to the actor.
    pub fn tell<M>(mut self) -> Expose<A, (TellRoute<M>, R)>
    where
        M: Tell,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let recipient = self.recipient::<M>();
        self.route(TellRoute { recipient })
    }

    /// Takes `M` as a request: each `[M::TAG, fields..., reply_port]` is decoded and sent to
    /// the actor, and what its handler returns is sent to the reply port.
    pub fn request<M>(mut self) -> Expose<A, (RequestRoute<M>, R)>
    where
        M: Request,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let recipient = self.recipient::<M>();
        let node = Arc::downgrade(&self.node.shared);
        self.route(RequestRoute { recipient, node })
    }

    fn route<H: Route>(self, head: H) -> Expose<A, (H, R)> {
        Expose {
            node: self.node,
            addr: self.addr,
            routes: (head, self.routes),
            local: self.local,
            tolerant: self.tolerant,
        }
    }

    /// The actor as a recipient of `M`, also kept for the local path.
    fn recipient<M>(&mut self) -> Recipient<M>
    where
        M: RemoteMessage,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let recipient: Recipient<M> = self.addr.clone().recipient();
        self.local
            .insert(TypeId::of::<M>(), Box::new(recipient.clone()));
        recipient
    }

    /// Logs and drops a message with an unknown tag or fields that do not decode, instead of
    /// killing the port as Perl's `rcv` would.
    pub fn tolerant(mut self) -> Self {
        self.tolerant = true;
        self
    }

    fn handler(self) -> (Node, Inbox) {
        let Expose {
            node,
            addr,
            routes,
            local,
            tolerant,
        } = self;
        let connected: Box<dyn Fn() -> bool + Send + Sync> = Box::new(move || addr.connected());
        let handler = TagDispatch {
            routes,
            local,
            connected,
            tolerant,
        };
        (node, Inbox::Handler(Arc::new(handler)))
    }

    /// Creates the port (a fresh name) and returns its handle; the port lives until the handle
    /// is dropped, the port is killed, or the actor stops.
    pub fn start(self) -> Exposed {
        let (node, inbox) = self.handler();
        Exposed {
            names: Vec::new(),
            port: node.new_port(inbox),
            node,
        }
    }

    /// Like [`Expose::start`] with a given port name (or full id on this node), as a spawn
    /// init function needs.
    pub fn start_named(self, name: &str) -> Result<Exposed, NodeError> {
        let (node, inbox) = self.handler();
        let port = node.named_port(name, inbox)?;
        Ok(Exposed {
            names: Vec::new(),
            port,
            node,
        })
    }
}

/// The port of an exposed actor. Dropping it kills the port (a normal exit: its monitors fire
/// with no reason) and removes the names registered for it. Keep it in the actor, so that the
/// port lives as long as the actor; drop it in `Supervised::restarting`, so that a restarted
/// actor gets a new port (port ids are never reused) and its names move to it.
///
/// The port holds the actor's address, so an actor that keeps its `Exposed` runs until its
/// port is killed or it stops itself (`ctx.stop()`), not when the other addresses of it are
/// dropped: a port lives until it is killed, as in Perl. A killed port (by [`Node::kil`], a
/// monitor link, or a message it cannot take) lets go of the actor.
#[must_use = "dropping an Exposed kills its port"]
pub struct Exposed {
    // Each name is held by a monitor on the port: it goes when the port dies, however it
    // dies, and (dropped first) before the port when this handle is dropped.
    names: Vec<MonitorGuard>,
    port: Port,
    node: Node,
}

impl Exposed {
    /// The port id.
    pub fn id(&self) -> &str {
        self.port.id()
    }

    /// Registers the port in the network's database as `family`/`key` (the value is the port
    /// id) for as long as the port lives and this handle is held: [`Node::lookup`] handles
    /// follow it, also when a restarted actor registers its new port under the same name.
    /// (The entry reaches the network through this node's master, see [`Node::db_set`].)
    pub fn register(&mut self, family: &str, key: &str) -> Result<(), NodeError> {
        let guard = self.node.db_set(family, key, self.port.id())?;
        self.names.push(self.node.mon_guard(self.port.id(), guard));
        Ok(())
    }

    /// A typed handle to this port.
    pub fn port_ref<M>(&self) -> PortRef<M> {
        PortRef::by_id(self.node.clone(), self.port.id())
    }

    /// Keeps the port (and its names) alive without this handle; it dies when killed or when
    /// the actor stops. Returns the port id.
    pub fn detach(self) -> String {
        for guard in self.names {
            guard.detach();
        }
        self.port.detach()
    }
}

impl std::fmt::Debug for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Exposed({})", self.port.id())
    }
}

/// The inbox of an exposed actor.
struct TagDispatch<R> {
    routes: R,
    local: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    connected: Box<dyn Fn() -> bool + Send + Sync>,
    tolerant: bool,
}

impl<R: Routes> PortHandler for TagDispatch<R> {
    fn deliver(&self, msg: &Message) -> Result<(), Vec<Value>> {
        let reason = match msg.decode_seed(Dispatch(&self.routes)) {
            Ok(Dispatched::Taken) => return Ok(()),
            // Failures are rare: the tag is read again, the slow way, to say which it was.
            Ok(Dispatched::Unknown) => {
                let tag = printable(msg.tag().as_deref().unwrap_or_default());
                tracing::warn!(from = %msg.from, tag, "message with an unknown tag");
                vec![
                    Value::Str("unhandled_message".into()),
                    Value::Str(format!("no callback found for message '{tag}'")),
                ]
            }
            Err(e) => {
                let tag = printable(msg.tag().as_deref().unwrap_or_default());
                tracing::warn!(from = %msg.from, tag, "undecodable message: {e}");
                vec![
                    Value::Str("die".into()),
                    Value::Str(format!("cannot decode message '{tag}': {e}")),
                ]
            }
        };
        if self.tolerant { Ok(()) } else { Err(reason) }
    }

    fn is_live(&self) -> bool {
        (self.connected)()
    }

    fn local(&self, ty: TypeId) -> Option<&(dyn Any + Send + Sync)> {
        self.local.get(&ty).map(|b| &**b)
    }
}

/// A tag as Perl quotes it in `unhandled_message`: at most 30 characters, unprintable ones as
/// dots.
fn printable(tag: &str) -> String {
    tag.chars()
        .take(30)
        .map(|c| if (' '..='~').contains(&c) { c } else { '.' })
        .collect()
}
