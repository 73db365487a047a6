//! Data-phase codec costs in every framing: encoding a small packet, cutting packets out of a
//! stream (with the destination read, as the node layer does for routing) and typed decoding.
//!
//! A framing whose codec refuses the sample packet is skipped with a note, so the bench still
//! runs while a codec is unfinished.

use std::hint::black_box;
use std::time::Duration;

use aemp::proto::framing::{DEFAULT_MAX_PACKET, Framing, Packet, PacketDecoder, encode_packet};
use bytes::BytesMut;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const DEST: &str = "port.1";
const SMALL: (&str, i64, &str) = ("tag", 42, "0123456789abcdef");
const STREAM_PACKETS: usize = 1000;
const LARGE_PACKETS: usize = 100;
const LARGE_PAYLOAD: usize = 4096;

/// `count` copies of the packet `[DEST, "tag", 42, payload]`, back to back.
fn stream(framing: Framing, payload: &str, count: usize) -> Option<BytesMut> {
    let mut wire = BytesMut::new();
    for _ in 0..count {
        if let Err(e) = encode_packet(framing, DEST, &("tag", 42, payload), &mut wire) {
            eprintln!("skipping {framing}: {e}");
            return None;
        }
    }
    Some(wire)
}

/// Cuts every packet out of `wire`, reading each destination; returns how many there were.
fn cut_all(framing: Framing, mut wire: BytesMut) -> usize {
    let mut dec = PacketDecoder::new(framing, DEFAULT_MAX_PACKET);
    let mut n = 0;
    while let Ok(Some(p)) = dec.decode(&mut wire) {
        if let Ok(dest) = p.dest() {
            black_box(&dest);
        }
        n += 1;
    }
    n
}

/// Checks outside the timing that the prepared bytes decode as meant.
fn decodes_fully(framing: Framing, wire: &BytesMut, count: usize) -> bool {
    let ok = cut_all(framing, wire.clone()) == count;
    if !ok {
        eprintln!("skipping {framing}: its own packets do not decode back");
    }
    ok
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_16B");
    g.throughput(Throughput::Elements(1));
    for framing in Framing::ALL {
        let mut buf = BytesMut::with_capacity(256);
        if stream(framing, SMALL.2, 1).is_none() {
            continue;
        }
        g.bench_function(BenchmarkId::from_parameter(framing), |b| {
            b.iter(|| {
                buf.clear();
                let r = encode_packet(framing, black_box(DEST), black_box(&SMALL), &mut buf);
                black_box(r.is_ok())
            })
        });
    }
    g.finish();
}

fn decode_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_1000x16B");
    g.throughput(Throughput::Elements(STREAM_PACKETS as u64));
    for framing in Framing::ALL {
        let Some(wire) = stream(framing, SMALL.2, STREAM_PACKETS) else {
            continue;
        };
        if !decodes_fully(framing, &wire, STREAM_PACKETS) {
            continue;
        }
        g.bench_function(BenchmarkId::from_parameter(framing), |b| {
            b.iter_batched(
                || wire.clone(),
                |w| cut_all(framing, w),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn decode_large(c: &mut Criterion) {
    let payload = "x".repeat(LARGE_PAYLOAD);
    let mut g = c.benchmark_group("decode_100x4KiB");
    g.throughput(Throughput::Elements(LARGE_PACKETS as u64));
    for framing in Framing::ALL {
        let Some(wire) = stream(framing, &payload, LARGE_PACKETS) else {
            continue;
        };
        if !decodes_fully(framing, &wire, LARGE_PACKETS) {
            continue;
        }
        g.bench_function(BenchmarkId::from_parameter(framing), |b| {
            b.iter_batched(
                || wire.clone(),
                |w| cut_all(framing, w),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn decode_typed(c: &mut Criterion) {
    typed_group(c, "decode_typed_16B", &(SMALL.0, SMALL.1, SMALL.2));
    // The same message as Perl sends it when its number was last used as a string: the typed
    // decoders' loose conversion. For json, whose strict reading is the fast path, this is the
    // second, loose reading after the first failed.
    let number = SMALL.1.to_string();
    typed_group(
        c,
        "decode_typed_16B_number_as_string",
        &(SMALL.0, number, SMALL.2),
    );
}

/// `Packet::decode` of `[DEST, msg...]` (the whole packet, destination included) into
/// `(String, String, i64, String)`, in every framing.
fn typed_group(c: &mut Criterion, name: &str, msg: &impl serde::Serialize) {
    type Msg = (String, String, i64, String);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    for framing in Framing::ALL {
        let mut wire = BytesMut::new();
        if let Err(e) = encode_packet(framing, DEST, msg, &mut wire) {
            eprintln!("skipping {framing}: {e}");
            continue;
        }
        let mut dec = PacketDecoder::new(framing, DEFAULT_MAX_PACKET);
        let packet: Packet = match dec.decode(&mut wire) {
            Ok(Some(p)) => p,
            _ => {
                eprintln!("skipping {framing}: its own packet does not decode back");
                continue;
            }
        };
        match packet.decode::<Msg>() {
            Ok(m) if m == (DEST.into(), SMALL.0.into(), SMALL.1, SMALL.2.into()) => {}
            other => {
                eprintln!("skipping {framing}: typed decode gave {other:?}");
                continue;
            }
        }
        g.bench_function(BenchmarkId::from_parameter(framing), |b| {
            b.iter(|| black_box(&packet).decode::<Msg>())
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode, decode_stream, decode_large, decode_typed
}
criterion_main!(benches);
