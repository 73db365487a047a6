//! The socket side: transports, listeners, TLS, and the contract with the node that runs them.

pub mod addr;
pub(crate) mod contract;
mod handshake;
mod handshake_gate;
pub(crate) mod listener;
mod liveness;
pub(crate) mod log_throttle;
pub(crate) mod send_queue;
pub mod tls;
pub(crate) mod transport;

pub use contract::LinkEnd;
pub use transport::{FailureCause, TransportError};

#[cfg(test)]
mod tests;
