//! MD6 (default mode: L = 64, no key, 40 + d/4 rounds) over the `md6` crate's reference C code.
//!
//! The `md6` crate has sharp edges that this module keeps away from callers:
//!
//! * its `finalise`/`hash` write `bits / 8` bytes into any slice they are given, so the output
//!   buffer here is always an array whose length fixes the bit length;
//! * a single update of 512 MiB or more never returns (the C code counts bits in 32 bits), so input
//!   is fed in chunks of 64 MiB;
//! * its state is neither `Send` nor `Clone`, so [`Md6_256`] only buffers input and runs MD6 once,
//!   at finalization;
//! * unknown C error codes panic inside the crate; the only fallible call used here is state
//!   creation with a valid bit length, which the C code accepts unconditionally.

use digest::consts::{U32, U64};
use digest::{FixedOutput, FixedOutputReset, HashMarker, Output, OutputSizeUser, Reset, Update};
use md6::Md6;
use std::fmt;

/// Largest slice handed to one C `update` call: well below the 512 MiB at which it hangs.
const CHUNK: usize = 64 << 20;

/// MD6 of `data` with an `N`-byte digest (`N * 8` bits, `N` in 1..=64).
fn md6_fixed<const N: usize>(data: &[u8]) -> [u8; N] {
    md6_chunked(data, CHUNK)
}

/// As [`md6_fixed`], feeding the C code at most `chunk` bytes per update (`chunk` > 0).
fn md6_chunked<const N: usize>(data: &[u8], chunk: usize) -> [u8; N] {
    const { assert!(N >= 1 && N <= 64) };
    let mut out = [0u8; N];
    // N <= 64, so the bit length fits in i32 without loss.
    let bits = (N * 8) as i32;
    match Md6::new(bits) {
        Ok(mut state) => {
            for piece in data.chunks(chunk.max(1)) {
                state.update(piece);
            }
            // `out` is exactly bits/8 bytes long, which is what the C code writes.
            state.finalise(&mut out);
        }
        // The C init only rejects bit lengths outside 1..=512 (excluded at compile time above) and
        // a null state (reported as a panic inside the crate, before this match). Returning a
        // made-up digest here would turn into a predictable auth token, so stop instead.
        Err(e) => unreachable!("MD6 rejected a valid {bits}-bit output length: {e}"),
    }
    out
}

/// MD6-256 of `data` (default mode), as used by AEMP protocol versions 0 and 1.
pub fn md6_256(data: &[u8]) -> [u8; 32] {
    md6_fixed::<32>(data)
}

/// MD6-512 of `data` (default mode).
pub fn md6_512(data: &[u8]) -> [u8; 64] {
    md6_fixed::<64>(data)
}

/// MD6-256 as a RustCrypto hash, so that `hmac::SimpleHmac<Md6_256>` works.
///
/// The input is buffered and hashed in one go at finalization; this suits the small inputs AEMP
/// hashes (greetings, secrets) and keeps the value `Send + Clone`. The block size is 64 bytes, the
/// HMAC block size AEMP's `hmac_md6_64_256` uses.
#[derive(Clone, Default)]
pub struct Md6_256 {
    buf: Vec<u8>,
}

impl fmt::Debug for Md6_256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The buffer may hold key material (HMAC pads): don't print it.
        f.write_str("Md6_256 { .. }")
    }
}

impl HashMarker for Md6_256 {}

impl OutputSizeUser for Md6_256 {
    type OutputSize = U32;
}

impl digest::common::BlockSizeUser for Md6_256 {
    type BlockSize = U64;
}

impl Update for Md6_256 {
    fn update(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
}

impl FixedOutput for Md6_256 {
    fn finalize_into(self, out: &mut Output<Self>) {
        out.copy_from_slice(&md6_256(&self.buf));
    }
}

impl Reset for Md6_256 {
    fn reset(&mut self) {
        // Overwrite before truncating so a reused hasher does not keep old input around.
        self.buf.fill(0);
        self.buf.clear();
    }
}

impl FixedOutputReset for Md6_256 {
    fn finalize_into_reset(&mut self, out: &mut Output<Self>) {
        out.copy_from_slice(&md6_256(&self.buf));
        Reset::reset(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use digest::{Digest, KeyInit, Mac};

    const SECRET: &[u8] =
        b"8ugxrtw6H5tKnfPWfaSr4HGhE8MoJXmzTT1BWq7sLutNcD0IbXprQlZjIbl7MBKoeklG3IEfY9GlJthC0pENzk";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // Values from tests/vectors/md6.txt (Perl Digest::MD6 0.11).
    #[test]
    fn md6_256_empty() {
        assert_eq!(
            hex(&md6_256(b"")),
            "bca38b24a804aa37d821d31af00f5598230122c5bbfc4c4ad5ed40e4258f04ca"
        );
    }

    #[test]
    fn md6_256_abc() {
        assert_eq!(
            hex(&md6_256(b"abc")),
            "230637d4e6845cf0d092b558e87625f03881dd53a7439da34cf3b94ed0d8b2c5"
        );
    }

    #[test]
    fn md6_512_abc() {
        assert_eq!(
            hex(&md6_512(b"abc")),
            "00918245271e377a7ffb202b90f3bda5477d8feab12d8a3a8994ebc55fe6e74c\
             a8341520032eeea3fdef892f2882378f636212af4b2683ccf80bf025b7d9b457"
        );
    }

    #[test]
    fn md6_256_full_example_secret() {
        assert_eq!(
            hex(&md6_256(SECRET)),
            "21bbec58f7330e200e0ff56a96dd6451aae049a4ce6c59b4fd0b7dcc101136c7"
        );
    }

    #[test]
    fn digest_wrapper_matches_one_shot_across_chunkings() {
        // Longer than several MD6 blocks (512 bytes each) so splits cross block boundaries.
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = md6_256(&data);
        for piece in [1usize, 7, 64, 511, 512, 513, 2999] {
            let mut h = Md6_256::default();
            for part in data.chunks(piece) {
                Update::update(&mut h, part);
            }
            assert_eq!(
                h.finalize_fixed().as_slice(),
                &whole[..],
                "piece size {piece}"
            );
        }
        assert_ne!(whole, md6_256(&data[..2999]));
    }

    #[test]
    fn c_streaming_matches_single_update() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut single = [0u8; 32];
        md6::hash(256, &data, &mut single).unwrap();
        assert_eq!(md6_256(&data), single);
        for chunk in [1usize, 3, 100, 512, 4096] {
            assert_eq!(md6_chunked::<32>(&data, chunk), single, "chunk {chunk}");
        }
        let mut single512 = [0u8; 64];
        md6::hash(512, &data, &mut single512).unwrap();
        assert_eq!(md6_chunked::<64>(&data, 333), single512);
    }

    #[test]
    fn digest_trait_reset_and_empty() {
        let mut h = <Md6_256 as Digest>::new();
        Digest::update(&mut h, b"junk");
        Digest::reset(&mut h);
        Digest::update(&mut h, b"abc");
        assert_eq!(h.finalize_reset().as_slice(), &md6_256(b"abc")[..]);
        assert_eq!(h.finalize().as_slice(), &md6_256(b"")[..]);
    }

    #[test]
    fn simple_hmac_matches_manual_construction() {
        // Key longer than the 64-byte block: it is hashed first, as in AEMP's greeting key.
        let key: Vec<u8> = (0..150u8).collect();
        let msg = md6_256(SECRET);
        let mut mac = hmac::SimpleHmac::<Md6_256>::new_from_slice(&key).unwrap();
        Mac::update(&mut mac, &msg);
        let got = mac.finalize().into_bytes();

        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&md6_256(&key));
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg).collect();
        let inner = md6_256(&ipad);
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner).collect();
        assert_eq!(got.as_slice(), &md6_256(&opad)[..]);
    }

    #[test]
    fn wrapper_is_send_and_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Md6_256>();
    }
}
