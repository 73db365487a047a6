//! [`PortRef`]: a typed handle to a port, by id or by a name in the network's database.

use std::any::TypeId;
use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::super::port_stream::Inbox;
use super::super::{Node, split_port_id};
use super::wire::{Elements, ReplyBody};
use super::{RemoteError, RemoteMessage, Request, Tell};

/// How long [`PortRef::request`] waits by default (Perl's `monitor_timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A typed handle to a port on any node: sends `M`s to it. `Clone + Send + Sync`; cheap to
/// clone.
///
/// Made by [`Node::port_ref`] (a port id), [`Node::lookup`] (a database name that follows the
/// port registered under it, see [`Exposed::register`](super::Exposed::register)) or
/// [`Exposed::port_ref`](super::Exposed::port_ref).
///
/// # Example
///
/// ```
/// use actix::{Actor, Context, Handler};
/// use aemp::node::{Node, NodeConfig, RemoteMessage};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, RemoteMessage)]
/// #[remote(tag = "add", reply = i64)]
/// struct Add(i64, i64);
///
/// struct Adder;
/// impl Actor for Adder {
///     type Context = Context<Self>;
/// }
/// impl Handler<Add> for Adder {
///     type Result = i64;
///     fn handle(&mut self, Add(a, b): Add, _: &mut Context<Self>) -> i64 {
///         a + b
///     }
/// }
///
/// #[actix::main]
/// async fn main() {
///     let server = Node::start(NodeConfig::with_secret("s3cret")).await.unwrap();
///     let adder = server.expose(Adder.start()).request::<Add>().start();
///     let client = Node::start(NodeConfig {
///         seeds: vec![server.listeners()[0].to_string()],
///         ..NodeConfig::with_secret("s3cret")
///     })
///     .await
///     .unwrap();
///     // On the wire: ["add", 2, 3, "<client>#<reply port>"], answered with [5].
///     let add = client.port_ref::<Add>(adder.id());
///     assert_eq!(add.request(Add(2, 3)).await.unwrap(), 5);
/// }
/// ```
pub struct PortRef<M> {
    node: Node,
    target: Target,
    timeout: Duration,
    _msg: PhantomData<fn() -> M>,
}

impl<M> Clone for PortRef<M> {
    fn clone(&self) -> Self {
        PortRef {
            node: self.node.clone(),
            target: self.target.clone(),
            timeout: self.timeout,
            _msg: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for PortRef<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Id(id) => write!(f, "PortRef({id})"),
            Target::Named(n) => write!(f, "PortRef({}/{} = {:?})", n.family, n.key, n.current()),
        }
    }
}

#[derive(Clone)]
enum Target {
    Id(Arc<str>),
    Named(Arc<Named>),
}

/// A database name and the port id it holds now, kept current by a task that monitors the
/// family (and ends with the last handle).
pub(crate) struct Named {
    pub family: String,
    pub key: String,
    pub current: watch::Receiver<Option<String>>,
    pub task: tokio::task::AbortHandle,
}

impl Named {
    fn current(&self) -> Option<String> {
        self.current.borrow().clone()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<M> PortRef<M> {
    pub(crate) fn by_id(node: Node, id: &str) -> PortRef<M> {
        PortRef {
            node,
            target: Target::Id(id.into()),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            _msg: PhantomData,
        }
    }

    pub(crate) fn named(node: Node, named: Named) -> PortRef<M> {
        PortRef {
            node,
            target: Target::Named(Arc::new(named)),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            _msg: PhantomData,
        }
    }

    /// The port id messages go to now (`None` while a name has no port registered).
    pub fn port_id(&self) -> Option<String> {
        match &self.target {
            Target::Id(id) => Some(id.to_string()),
            Target::Named(n) => n.current(),
        }
    }

    /// The same handle with another request timeout (also how long a name without a port is
    /// waited for).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A handle for another message type to the same port (an actor that takes several).
    pub fn cast<N>(&self) -> PortRef<N> {
        PortRef {
            node: self.node.clone(),
            target: self.target.clone(),
            timeout: self.timeout,
            _msg: PhantomData,
        }
    }

    /// The port id now, without waiting.
    fn id_now(&self) -> Result<Cow<'_, str>, RemoteError> {
        match &self.target {
            Target::Id(id) => Ok(Cow::Borrowed(id)),
            Target::Named(n) => n
                .current()
                .map(Cow::Owned)
                .ok_or_else(|| self.not_registered()),
        }
    }

    /// The port id, waiting up to the timeout for a name to get one.
    async fn id_within(&self) -> Result<Cow<'_, str>, RemoteError> {
        let Target::Named(n) = &self.target else {
            return self.id_now();
        };
        let mut rx = n.current.clone();
        let got = tokio::time::timeout(self.timeout, rx.wait_for(Option::is_some)).await;
        match got {
            Ok(Ok(id)) => id
                .clone()
                .map(Cow::Owned)
                .ok_or_else(|| self.not_registered()),
            _ => Err(self.not_registered()),
        }
    }

    fn not_registered(&self) -> RemoteError {
        match &self.target {
            Target::Named(n) => RemoteError::NotRegistered {
                family: n.family.clone(),
                key: n.key.clone(),
            },
            Target::Id(id) => RemoteError::PortDied {
                port: id.to_string(),
                reason: Vec::new(),
            },
        }
    }
}

impl<M: RemoteMessage> PortRef<M> {
    /// The actix recipient of a local exposed actor that takes `M`, if the port is one.
    fn local(&self, id: &str) -> Option<actix::Recipient<M>> {
        let (node, name) = split_port_id(id);
        let shared = &self.node.shared;
        if node != &*shared.id {
            return None;
        }
        let Some(Inbox::Handler(h)) = shared.ports.inbox(name) else {
            return None;
        };
        let recipient = h
            .local(TypeId::of::<M>())?
            .downcast_ref::<actix::Recipient<M>>()?
            .clone();
        if recipient.connected() {
            Some(recipient)
        } else {
            // The actor stopped: its port dies now, as at a delivery.
            shared.kill_local(name, Vec::new());
            None
        }
    }
}

impl<M: Tell> PortRef<M> {
    /// Sends `msg`; never blocks (Perl's `snd`). Fails only if the message does not encode or
    /// a name has no port; a lost message is reported to the port's monitors, as in AEMP.
    pub fn do_send(&self, msg: M) -> Result<(), RemoteError> {
        let id = self.id_now()?;
        if let Some(r) = self.local(&id) {
            r.do_send(msg);
            return Ok(());
        }
        Ok(self.node.snd(&id, &super::tagged(&msg))?)
    }

    /// Sends `msg`, waiting for room in the link's queue ([`Node::send`]) and, for a name, up
    /// to the timeout for a port to be registered under it.
    pub async fn send(&self, msg: M) -> Result<(), RemoteError> {
        let id = self.id_within().await?;
        if let Some(r) = self.local(&id) {
            r.do_send(msg);
            return Ok(());
        }
        Ok(self.node.send(&id, &super::tagged(&msg)).await?)
    }
}

impl<M: Request> PortRef<M> {
    /// Sends `msg` as a request and waits for the reply, at most the handle's timeout
    /// ([`DEFAULT_REQUEST_TIMEOUT`](crate::node::DEFAULT_REQUEST_TIMEOUT) unless [`PortRef::with_timeout`] said otherwise).
    pub fn request(&self, msg: M) -> impl Future<Output = Result<M::Result, RemoteError>> + use<M> {
        let this = self.clone();
        async move {
            let id = this.id_within().await?;
            if let Some(r) = this.local(&id) {
                return local_request(&id, r, msg, this.timeout).await;
            }
            let call = this.node.start_call(&id, this.timeout);
            let sent = this.node.snd(
                &id,
                &Elements {
                    tag: Some(M::TAG),
                    body: &msg,
                    trailer: Some(call.reply_id()),
                },
            );
            let answer = call.wait(sent).await?;
            answer
                .decode::<ReplyBody<M::Result>>()
                .map(|r| r.0)
                .map_err(|source| RemoteError::Undecodable {
                    port: id.to_string(),
                    expected: std::any::type_name::<M::Result>(),
                    source,
                })
        }
    }
}

/// A request to an actor on this node: the value goes into its mailbox and the reply comes
/// back as a value.
async fn local_request<M: Request>(
    id: &str,
    r: actix::Recipient<M>,
    msg: M,
    timeout: Duration,
) -> Result<M::Result, RemoteError> {
    let reply = r.send(msg);
    match tokio::time::timeout(timeout, reply).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err(RemoteError::PortDied {
            port: id.to_owned(),
            reason: Vec::new(),
        }),
        Err(_) => Err(RemoteError::Timeout {
            port: id.to_owned(),
            after: timeout,
        }),
    }
}
