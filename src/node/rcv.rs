//! Ports with tag dispatch, as Perl's `rcv`: the first element of a message picks the handler.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};

use super::{Message, Node, NodeError, Port};

/// What a handler sees besides the message: the node and its own port id (Perl's `$SELF`).
pub struct PortContext {
    /// The node the port lives on.
    pub node: Node,
    /// This port's id.
    pub port: String,
}

/// A message handler; an `Err` kills the port with `("die", message)`.
pub(crate) type RcvHandler = Box<dyn FnMut(&PortContext, Message) -> Result<(), String>>;

/// Builds a tag-dispatching port; see [`Node::rcv`].
///
/// # Example
///
/// A message no handler takes goes to the default handler; a handler's `Err` kills the port
/// with `("die", message)`, which its monitors see:
///
/// ```
/// use aemp::node::{Node, NodeConfig};
/// use aemp::proto::value::Value;
/// use tokio::sync::oneshot;
///
/// #[actix::main]
/// async fn main() {
///     let node = Node::start(NodeConfig::default()).await.unwrap();
///     let port = node
///         .rcv()
///         .on("ok", |_, _| Ok(()))
///         .default(|_, msg| Err(format!("unknown tag {}", msg.tag().unwrap_or_default())))
///         .start();
///     let (tx, rx) = oneshot::channel();
///     node.mon(&port, move |reason| drop(tx.send(reason)))
///         .detach();
///     node.snd(&port, &("ok",)).unwrap();
///     node.snd(&port, &("what",)).unwrap();
///     let reason = rx.await.unwrap();
///     assert_eq!(
///         reason,
///         vec![Value::from("die"), Value::from("unknown tag what")]
///     );
/// }
/// ```
#[must_use = "a port is only created by start()"]
pub struct Rcv {
    node: Node,
    tags: HashMap<String, RcvHandler>,
    default: Option<RcvHandler>,
}

impl Rcv {
    pub(crate) fn new(node: Node) -> Rcv {
        Rcv {
            node,
            tags: HashMap::new(),
            default: None,
        }
    }

    /// Handles messages whose first element is `tag` (the message still holds the tag).
    pub fn on(
        mut self,
        tag: impl Into<String>,
        f: impl FnMut(&PortContext, Message) -> Result<(), String> + 'static,
    ) -> Rcv {
        self.tags.insert(tag.into(), Box::new(f));
        self
    }

    /// Handles messages no tag matched. Without one, such a message kills the port, as in
    /// Perl.
    pub fn default(
        mut self,
        f: impl FnMut(&PortContext, Message) -> Result<(), String> + 'static,
    ) -> Rcv {
        self.default = Some(Box::new(f));
        self
    }

    /// Starts the port's actor on the current arbiter and returns the port id. The port lives
    /// until a handler fails or panics (`("die", message)`), or until it is killed.
    pub fn start(self) -> String {
        let node = self.node.clone();
        self.launch(|recipient| Ok(node.port(recipient)))
            .unwrap_or_default()
    }

    /// Like [`Rcv::start`], but the port gets the given name (or full id on this node), as a
    /// spawn init function needs: `node.rcv().on(…).start_named(&port_id)`.
    pub fn start_named(self, name: &str) -> Result<String, NodeError> {
        let node = self.node.clone();
        self.launch(|recipient| node.port_named(name, recipient))
    }

    fn launch(
        self,
        make: impl FnOnce(actix::Recipient<Message>) -> Result<Port, NodeError>,
    ) -> Result<String, NodeError> {
        let Rcv {
            node,
            tags,
            default,
        } = self;
        // The port must exist before the actor runs, and no actor may run without its port.
        let ctx = Context::new();
        let port = make(ctx.address().recipient())?;
        let id = port.id().to_owned();
        ctx.run(TagPort {
            cx: PortContext {
                node,
                port: id.clone(),
            },
            port: Some(port),
            tags,
            default,
        });
        Ok(id)
    }
}

struct TagPort {
    cx: PortContext,
    port: Option<Port>,
    tags: HashMap<String, RcvHandler>,
    default: Option<RcvHandler>,
}

impl Actor for TagPort {
    type Context = Context<Self>;
}

impl Handler<Message> for TagPort {
    type Result = ();

    fn handle(&mut self, msg: Message, ctx: &mut Context<Self>) {
        let tag = msg.tag();
        let handler = match tag.as_deref().and_then(|t| self.tags.get_mut(t)) {
            Some(h) => Some(h),
            None => self.default.as_mut(),
        };
        // The tag borrows the message, which the handler takes.
        drop(tag);
        let outcome = match handler {
            Some(h) => match catch_unwind(AssertUnwindSafe(|| h(&self.cx, msg))) {
                Ok(r) => r,
                Err(panic) => Err(panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "handler panicked".into())),
            },
            None => Err("received message on port without callback".into()),
        };
        if let Err(reason) = outcome {
            if let Some(port) = self.port.take() {
                port.die(reason.trim_end_matches('\n'));
            }
            ctx.stop();
        }
    }
}
