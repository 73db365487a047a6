//! Typed remote actors: actix messages with an AEMP wire form, actors exposed as ports, and
//! typed handles to ports on any node. See [`RemoteMessage`].

mod call;
mod error;
mod expose;
mod port_ref;
mod routes;
mod wire;

pub use error::RemoteError;
pub use expose::{Expose, Exposed};
pub use port_ref::{DEFAULT_REQUEST_TIMEOUT, PortRef};
pub use routes::{RequestRoute, Route, Routes, TellRoute};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use wire::Elements;

/// A message type with an AEMP wire form: `[TAG, fields...]`. Derive it with
/// `#[derive(RemoteMessage)]` and `#[remote(tag = "…")]` or `#[remote(tag = "…", reply = Type)]`.
///
/// # Wire form
///
/// A [`RemoteMessage`] travels as `[TAG, field, ...]`: its tag, then its fields in declaration
/// order (names are not sent; a tuple struct's elements, a newtype's inner fields; a unit
/// struct has none). That is what a Perl node sends with `snd $port, tag => @fields` and what
/// its `rcv $port, tag => sub { my @fields = @_ }` receives.
///
/// A [`Tell`] is sent one-way. A [`Request`] travels as Perl's `cal` sends it: the reply
/// port's id is appended as the last element (`[TAG, field, ..., reply_port]`), and the reply
/// is one message to that port whose elements are the reply value's fields (`snd $reply,
/// @values`): a number or string is one element, a tuple or struct several, `()` none, a `Vec`
/// one per item.
///
/// Both are declared with `#[derive(RemoteMessage)]`, which also implements `actix::Message`:
///
/// ```
/// use aemp::node::RemoteMessage;
/// use serde::{Deserialize, Serialize};
///
/// /// `["say", text]`, one-way.
/// #[derive(Serialize, Deserialize, RemoteMessage)]
/// #[remote(tag = "say")]
/// struct Say {
///     text: String,
/// }
///
/// /// `["add", a, b, reply_port]`, answered with `[sum]`.
/// #[derive(Serialize, Deserialize, RemoteMessage)]
/// #[remote(tag = "add", reply = i64)]
/// struct Add(i64, i64);
/// ```
///
/// # Exposing an actor
///
/// [`Node::expose`](super::Node::expose) gives an actor one port; each message is dispatched by its tag to the
/// actor's `Handler` for that type, and a request's reply goes back to its reply port. A
/// message whose tag the port does not know, or whose fields do not decode, is treated as
/// Perl's `rcv` treats a message no callback takes or a callback that dies: it is logged and
/// the port is killed, with `("unhandled_message", "no callback found for message 'TAG'")` or
/// `("die", "cannot decode …")`, which the port's monitors see. [`Expose::tolerant`] logs and
/// drops such messages instead.
///
/// # Handles
///
/// A [`PortRef<M>`] sends `M` to a port: [`PortRef::do_send`] (never blocks, as `snd`),
/// [`PortRef::send`] (waits for room in the link's queue, as [`Node::send`](super::Node::send)) and
/// [`PortRef::request`], whose [`RemoteError`] tells a timeout, a dead port (with its kill
/// reason), an unreachable node and an undecodable reply apart. On a local exposed actor the
/// handle hands the value straight to the actor: nothing is encoded.
pub trait RemoteMessage:
    actix::Message<Result: Send> + Serialize + DeserializeOwned + Send + 'static
{
    /// The message's first element, which Perl's `rcv` dispatches on.
    const TAG: &'static str;
}

/// A one-way message (`#[remote(tag = "…")]`): its actix result is `()`.
pub trait Tell: RemoteMessage + actix::Message<Result = ()> {}

/// A request (`#[remote(tag = "…", reply = Type)]`): sent with a reply port, answered with one
/// message whose elements are the reply's fields. The reply type is the actix result, what the
/// actor's handler returns.
pub trait Request:
    RemoteMessage + actix::Message<Result: Serialize + DeserializeOwned + Send + 'static>
{
}

/// The wire form of a typed message, `[TAG, fields...]`, as a value to pass to
/// [`Node::snd`](super::Node::snd), [`Node::after`](super::Node::after) or
/// [`Node::mon_send`](super::Node::mon_send).
pub fn tagged<M: RemoteMessage>(msg: &M) -> impl Serialize + '_ {
    Elements {
        tag: Some(M::TAG),
        body: msg,
        trailer: None,
    }
}

use actix::{Actor, Addr};
use tokio::sync::watch;

use super::{Node, NodeError};

impl Node {
    /// Exposes an actor as a port: list the message types it takes with [`Expose::tell`] and
    /// [`Expose::request`], then [`Expose::start`].
    ///
    /// # Example
    ///
    /// A room that Perl's `cal $room, join => "ann", sub { … }` and a Rust
    /// [`PortRef<Join>`](PortRef) reach alike:
    ///
    /// ```
    /// use actix::{Actor, Context, Handler};
    /// use aemp::node::{Node, NodeConfig, RemoteMessage};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, RemoteMessage)]
    /// #[remote(tag = "join", reply = usize)]
    /// struct Join {
    ///     name: String,
    /// }
    ///
    /// #[derive(Default)]
    /// struct Room {
    ///     members: Vec<String>,
    /// }
    ///
    /// impl Actor for Room {
    ///     type Context = Context<Self>;
    /// }
    ///
    /// impl Handler<Join> for Room {
    ///     type Result = usize;
    ///     fn handle(&mut self, join: Join, _: &mut Context<Self>) -> usize {
    ///         self.members.push(join.name);
    ///         self.members.len()
    ///     }
    /// }
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let node = Node::start(NodeConfig::default()).await.unwrap();
    ///     // The port lives as long as this handle (keep it in the actor to tie the two).
    ///     let room = node.expose(Room::default().start()).request::<Join>().start();
    ///     let join = node.port_ref::<Join>(room.id());
    ///     let name = String::from("ann");
    ///     assert_eq!(join.request(Join { name }).await.unwrap(), 1);
    /// }
    /// ```
    pub fn expose<A: Actor>(&self, addr: Addr<A>) -> Expose<A> {
        Expose::new(self.clone(), addr)
    }

    /// A typed handle to the port `port` (on any node).
    pub fn port_ref<M>(&self, port: &str) -> PortRef<M> {
        PortRef::by_id(self.clone(), port)
    }

    /// A typed handle to the port registered in the network's database as `family`/`key`
    /// ([`Exposed::register`], or Perl's `db_set $family, $key, $port`). It follows the name:
    /// when the port registered under it changes (a restarted actor), later messages go to the
    /// new port. Messages sent while the name has no port wait for one up to the handle's
    /// timeout ([`PortRef::send`], [`PortRef::request`]) or fail ([`PortRef::do_send`]).
    /// Names live in the network's database, which needs a master: a seed (a node alone can be
    /// its own seed).
    ///
    /// Must be called within the actix system that runs the node.
    pub fn lookup<M>(&self, family: &str, key: &str) -> Result<PortRef<M>, NodeError> {
        let mut mon = self.db_mon(family)?;
        let (tx, current) = watch::channel(None::<String>);
        let wanted = key.to_owned();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    change = mon.next_change() => {
                        if change.is_none() {
                            break;
                        }
                        let now = mon
                            .family()
                            .get(&wanted)
                            .and_then(|v| v.as_str())
                            .map(|s| s.into_owned());
                        tx.send_if_modified(|cur| {
                            let changed = *cur != now;
                            *cur = now;
                            changed
                        });
                    }
                    () = tx.closed() => break,
                }
            }
        });
        Ok(PortRef::named(
            self.clone(),
            port_ref::Named {
                family: family.to_owned(),
                key: key.to_owned(),
                current,
                task: task.abort_handle(),
            },
        ))
    }
}

#[cfg(test)]
mod tests;
