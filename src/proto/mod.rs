//! The sans-IO protocol core: no sockets, no clocks, no actix.
//!
//! * [`greeting`]: the two greeting lines (parse, build, nonce).
//! * [`dialect`]: the released Perl dialects and how to recognise them.
//! * [`auth`]: the auth methods and their tokens.
//! * [`handshake`]: the state machine from the first byte to the data phase.
//! * [`framing`]: data-phase packets in json, cbor and storable.
//! * [`node_request`]: requests to the node port `""`, parsed into a typed enum.
//! * [`value`]: the loosely typed value Perl peers exchange.

pub mod auth;
pub mod dialect;
pub mod framing;
pub mod greeting;
pub mod handshake;
pub mod node_request;
pub mod value;
