//! The auth line: a valid peer greeting is fed first, then the input (plus a line feed) as the
//! peer's auth line, against a P0 and a P2 handshake.
#![no_main]

use aemp::proto::dialect::Dialect;
use aemp_fuzz::{Outcome, drive_handshake, new_handshake, peer_greeting};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut line = data.to_vec();
    line.push(b'\n');
    for dialect in [Dialect::P0, Dialect::P2] {
        let mut hs = new_handshake(dialect);
        assert_eq!(
            drive_handshake(&mut hs, peer_greeting(dialect), 0),
            Outcome::Pending,
            "the fixed peer greeting was refused"
        );
        drive_handshake(&mut hs, &line, 0);
    }
});
