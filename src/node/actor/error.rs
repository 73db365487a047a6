//! What a typed send or request can end in.

use std::time::Duration;

use crate::proto::framing::FramingError;
use crate::proto::value::Value;

use super::super::NodeError;

/// Why a request (or a send through a [`PortRef`](super::PortRef)) did not get its answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// No reply came within the request's timeout.
    #[error("no reply from {port} within {after:?}")]
    Timeout {
        /// The port asked.
        port: String,
        /// The timeout.
        after: Duration,
    },
    /// The port died before it replied (or did not exist): its kill reason, as its monitors
    /// see it (empty for a normal exit, `("die", message)` for a failed handler,
    /// `("no_such_port", …)` for a port that was not there…).
    #[error("{port} died: {}", reason_text(reason))]
    PortDied {
        /// The port asked.
        port: String,
        /// Its kill reason.
        reason: Vec<Value>,
    },
    /// The port's node could not be reached, or its link was lost before the reply came
    /// (Perl's `("transport_error", node, message)`).
    #[error("cannot reach node {node}: {message}")]
    Unreachable {
        /// The node.
        node: String,
        /// The transport's error.
        message: String,
    },
    /// A reply came but does not decode as the reply type.
    #[error("the reply from {port} is not a {expected}: {source}")]
    Undecodable {
        /// The port asked.
        port: String,
        /// The reply type.
        expected: &'static str,
        /// Why it does not decode.
        source: FramingError,
    },
    /// The message could not be sent (it does not encode, say).
    #[error(transparent)]
    Send(#[from] NodeError),
    /// No port is registered under this database name (within the timeout).
    #[error("no port registered as {family}/{key}")]
    NotRegistered {
        /// The family.
        family: String,
        /// The key.
        key: String,
    },
}

impl RemoteError {
    /// The error a monitor's reason stands for: the node's loss, or the port's death.
    pub(crate) fn from_reason(port: &str, reason: Vec<Value>) -> RemoteError {
        if reason.first().and_then(Value::as_str).as_deref() == Some("transport_error") {
            let text = |i: usize| {
                reason
                    .get(i)
                    .and_then(Value::as_str)
                    .map(|s| s.into_owned())
                    .unwrap_or_default()
            };
            return RemoteError::Unreachable {
                node: text(1),
                message: text(2),
            };
        }
        RemoteError::PortDied {
            port: port.to_owned(),
            reason,
        }
    }
}

fn reason_text(reason: &[Value]) -> String {
    if reason.is_empty() {
        return "normal exit".into();
    }
    let parts: Vec<String> = reason
        .iter()
        .map(|v| match v.as_str() {
            Some(s) => s.into_owned(),
            None => format!("{v:?}"),
        })
        .collect();
    parts.join(", ")
}
