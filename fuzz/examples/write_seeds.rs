//! Writes the seeds no capture gives directly, from the ones `seed-corpus.sh` cut:
//! `decode_storable/` (the json and cbor seeds' packets re-encoded in storable, and the
//! node-port requests of `aemp_fuzz::seeds`) and `data_phase/` (every json, cbor and storable
//! seed behind its link's selector byte, and those requests on every link kind).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds -- fuzz/corpus`

use std::fs;
use std::path::Path;

use aemp::proto::dialect::Dialect;
use aemp::proto::framing::Framing;
use aemp_fuzz::seeds::{
    capture_dialect, data_phase_input, encode_stream, node_port_requests, packets,
};

fn main() -> std::io::Result<()> {
    let corpus = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let corpus = Path::new(&corpus);
    let storable = corpus.join("decode_storable");
    let data_phase = corpus.join("data_phase");
    fs::create_dir_all(&storable)?;
    fs::create_dir_all(&data_phase)?;
    // The captures' streams, re-encoded.
    for framing in [Framing::Json, Framing::Cbor] {
        let dir = corpus.join(format!("decode_{framing}"));
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let found = packets(framing, &fs::read(&path)?);
            if found.is_empty() {
                continue;
            }
            fs::write(
                storable.join(format!("{name}-{framing}")),
                encode_stream(Framing::Storable, &found),
            )?;
            let dialect = capture_dialect(&name).unwrap_or(Dialect::P2);
            for to in Framing::ALL {
                fs::write(
                    data_phase.join(format!("{name}-{to}")),
                    data_phase_input(dialect, to, &found),
                )?;
            }
        }
    }
    // Requests with every node-port tag, and messages to the target's ports.
    for (i, group) in node_port_requests().iter().enumerate() {
        fs::write(
            storable.join(format!("requests-{i}")),
            encode_stream(Framing::Storable, group),
        )?;
        for dialect in Dialect::ALL {
            for framing in Framing::ALL {
                fs::write(
                    data_phase.join(format!("requests-{i}-{}-{framing}", dialect.name())),
                    data_phase_input(dialect, framing, group),
                )?;
            }
        }
    }
    Ok(())
}
