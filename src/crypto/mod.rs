//! Hash functions AEMP needs that the RustCrypto ecosystem does not provide.

pub mod md6;
