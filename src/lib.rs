//! # aemp — AnyEvent::MP's node protocol for Rust and actix
//!
//! `aemp` speaks AEMP, the node-to-node protocol of Perl's AnyEvent::MP, and is accepted by Perl
//! nodes as a peer. It is built in two layers:
//!
//! * [`proto`]: a sans-IO protocol core — greeting, authentication, framing and packets. It owns no
//!   sockets and reads no clocks; it is fed bytes and tells what to write. It does not depend on
//!   actix.
//! * the actix shell (`net`, `node`): transports, the node registry, ports and the node kernel.
//!
//! [`crypto`] wraps MD6, which AEMP protocol versions 0 and 1 use for authentication.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crypto;
pub mod net;
pub mod node;
pub mod proto;
