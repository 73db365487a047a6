//! A node's data phase: byte 0 picks a link (dialect and framing, see
//! `aemp_fuzz::data_phase::link_kind`) from a made-up peer, the rest is what that peer sends. The
//! packets reach the node as a transport's reader hands them over, node-port requests included.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    aemp_fuzz::data_phase::run(data);
});
