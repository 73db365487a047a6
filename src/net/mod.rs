//! The socket side: transports and listeners.

pub mod listener;
pub mod tls;
pub mod transport;
