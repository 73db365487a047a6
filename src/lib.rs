#![doc = include_str!("../README.md")]
//!
//! ## Reading the API
//!
//! * [`proto`]: the sans-IO protocol core — greeting, authentication, framing and packets. It
//!   owns no sockets and reads no clocks; it is fed bytes and tells what to write. It does not
//!   depend on actix.
//! * [`node`] and [`net`]: the actix shell — the [`Node`](node::Node) handle, ports, the node
//!   registry, the node kernel, and the transports under them.
//! * [`crypto`]: MD6, which AEMP protocol versions 0 and 1 use for authentication.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// `#[derive(RemoteMessage)]` names `::aemp`, also inside this crate.
extern crate self as aemp;

pub mod crypto;
pub mod net;
pub mod node;
pub mod proto;
