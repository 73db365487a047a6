//! The whole handshake (line 1, line 2, auth line) against arbitrary peer bytes.
//!
//! Byte 0 picks our dialect (P0 or P2), byte 1 the feeding chunk size (0: all at once); the rest
//! is what the peer sends.
#![no_main]

use aemp::proto::dialect::Dialect;
use aemp_fuzz::{drive_handshake, new_handshake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, rest @ ..] = data else {
        return;
    };
    let dialect = if mode & 1 == 0 {
        Dialect::P0
    } else {
        Dialect::P2
    };
    let mut hs = new_handshake(dialect);
    let _ = hs.take_output();
    drive_handshake(&mut hs, rest, usize::from(*chunk));
});
