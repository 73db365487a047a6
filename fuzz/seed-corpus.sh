#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the Perl captures in tests/vectors.
# The corpus is not committed; run this once before `cargo +nightly fuzz run`.
#
# No capture has a link that negotiated storable, so decode_storable and data_phase get their
# seeds from examples/write_seeds.rs (built and run with the default toolchain): the packets
# of the json and cbor seeds cut here, re-encoded, and node-port requests with every tag.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
caps=${1:-$here/../tests/vectors/captures}
corpus=$here/corpus
mkdir -p "$corpus"/{greeting,handshake,auth_line,decode_json,decode_cbor,decode_storable,data_phase}

for dir in "$caps"/*/; do
    name=$(basename "$dir")
    for f in "$dir"conn*.bin; do
        [ -e "$f" ] || continue
        seed=$name-$(basename "$f" .bin)
        head -n 1 "$f" | tr -d '\n' > "$corpus/greeting/$seed"
        # Handshake: byte 0 picks our dialect (odd: P2), byte 1 the chunk size.
        case $name in p2-*) mode='\x01' ;; *) mode='\x00' ;; esac
        { printf "$mode\\x00"; cat "$f"; } > "$corpus/handshake/$seed"
        { printf "$mode\\x07"; cat "$f"; } > "$corpus/handshake/$seed-chunked"
        # Captures with TLS or a refusal have no plain auth line / data phase.
        case $name in *tls* | *mismatch*) continue ;; esac
        # Connections that ended before the auth line (line 1 and the nonce only).
        [ "$(head -n 3 "$f" | wc -l)" -eq 3 ] || continue
        head -n 3 "$f" | tail -n 1 | tr -d '\n' > "$corpus/auth_line/$seed"
        framing=$(head -n 3 "$f" | tail -n 1 | tr -d '\r\n' | awk -F';' '{print $3}')
        skip=$(head -n 3 "$f" | wc -c)
        if [ -d "$corpus/decode_$framing" ]; then
            tail -c +"$((skip + 1))" "$f" > "$corpus/decode_$framing/$seed"
        fi
    done
done
cargo run --quiet --manifest-path "$here/Cargo.toml" --example write_seeds -- "$corpus"
for t in "$corpus"/*/; do
    echo "$(basename "$t"): $(find "$t" -type f | wc -l) seeds"
done
