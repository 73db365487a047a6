//! Requests: a reply port that takes one message, a monitor on the port asked, and a timeout —
//! Perl's `cal`, with its three endings told apart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::super::port_stream::{Inbox, PortHandler};
use super::super::{Message, MonitorGuard, Node, NodeError, Port, lock};
use super::RemoteError;
use crate::proto::value::Value;

/// A reply port's inbox: keeps the first message and wants no more.
struct ReplySlot(Mutex<Option<oneshot::Sender<Message>>>);

impl PortHandler for ReplySlot {
    fn deliver(&self, msg: &Message) -> Result<(), Vec<Value>> {
        if let Some(tx) = lock(&self.0).take() {
            let _ = tx.send(msg.clone());
        }
        Ok(())
    }

    fn is_live(&self) -> bool {
        lock(&self.0).as_ref().is_some_and(|tx| !tx.is_closed())
    }
}

/// A request under way: its reply port and the monitor on the port asked.
pub(crate) struct Call {
    reply: Port,
    answer: oneshot::Receiver<Message>,
    died: oneshot::Receiver<Vec<Value>>,
    guard: MonitorGuard,
    port: String,
    timeout: Duration,
}

impl Node {
    /// Opens a request to `port`: a reply port and a monitor. Send the request (with
    /// [`Call::reply_id`] in it), then [`Call::wait`].
    pub(crate) fn start_call(&self, port: &str, timeout: Duration) -> Call {
        let (answer_tx, answer) = oneshot::channel();
        let reply = self.new_port(Inbox::Handler(Arc::new(ReplySlot(Mutex::new(Some(
            answer_tx,
        ))))));
        let (died_tx, died) = oneshot::channel();
        // Monitor first: the mon1 then reaches the port's node before the request.
        let guard = self.mon(port, move |reason| drop(died_tx.send(reason)));
        Call {
            reply,
            answer,
            died,
            guard,
            port: port.to_owned(),
            timeout,
        }
    }
}

impl Call {
    /// The reply port's id, to send along.
    pub fn reply_id(&self) -> &str {
        self.reply.id()
    }

    /// Waits for the first message on the reply port, for the port asked to die, or for the
    /// timeout. `sent` is how sending the request went.
    pub async fn wait(self, sent: Result<(), NodeError>) -> Result<Message, RemoteError> {
        let Call {
            reply,
            mut answer,
            died,
            guard,
            port,
            timeout,
        } = self;
        sent?;
        enum Ending {
            Answer(Result<Message, oneshot::error::RecvError>),
            Died(Vec<Value>),
            Timeout,
        }
        // A port that answers and then dies: the answer came first on the link and is in the
        // slot before the monitor fires, so the slot is looked at first.
        let ending = tokio::select! {
            biased;
            got = &mut answer => Ending::Answer(got),
            reason = died => Ending::Died(reason.unwrap_or_default()),
            () = tokio::time::sleep(timeout) => Ending::Timeout,
        };
        let outcome = match ending {
            Ending::Answer(Ok(msg)) => Ok(msg),
            Ending::Answer(Err(_)) => Err(RemoteError::PortDied {
                port,
                reason: Vec::new(),
            }),
            Ending::Died(reason) => match answer.try_recv() {
                Ok(msg) => Ok(msg),
                Err(_) => Err(RemoteError::from_reason(&port, reason)),
            },
            Ending::Timeout => Err(RemoteError::Timeout {
                port,
                after: timeout,
            }),
        };
        drop(guard);
        drop(reply);
        outcome
    }
}
