//! The cbor framing: packets cut from arbitrary bytes (in one piece and in pieces of byte 0 + 1
//! bytes), read every way, re-encoded and decoded again.
#![no_main]

use aemp::proto::framing::Framing;
use aemp_fuzz::decode_stream;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let chunk = data.first().map_or(1, |&b| usize::from(b) + 1);
    decode_stream(Framing::Cbor, data, chunk);
});
