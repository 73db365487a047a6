//! A full handshake between two in-memory cores (both sides' work), per auth method.

use std::hint::black_box;
use std::time::Duration;

use aemp::proto::auth::AuthMethod;
use aemp::proto::dialect::Dialect;
use aemp::proto::handshake::{Event, Handshake, HandshakeConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Answers line-1 decisions and returns the peer's auth method once established.
fn events(hs: &mut Handshake) -> Option<AuthMethod> {
    let mut done = None;
    while let Some(ev) = hs.poll_event() {
        match ev {
            Event::PeerGreeting(_) => hs.accept_peer(None).ok()?,
            Event::Established(est) => done = Some(est.peer_auth()),
            Event::StartTls(_) => return None,
        }
    }
    done
}

/// Runs a handshake between `alpha` and `beta` in `dialect`; `None` if it does not complete.
fn handshake(dialect: Dialect) -> Option<(AuthMethod, AuthMethod)> {
    let mut a = Handshake::new(HandshakeConfig::new("alpha", b"s3cret".to_vec(), dialect)).ok()?;
    let mut b = Handshake::new(HandshakeConfig::new("beta", b"s3cret".to_vec(), dialect)).ok()?;
    let (mut auth_a, mut auth_b) = (None, None);
    // Line 1 + 2, then the auth lines: a few rounds suffice.
    for _ in 0..4 {
        let to_b = a.take_output();
        if !to_b.is_empty() && !b.is_established() {
            b.feed(&to_b).ok()?;
        }
        auth_b = auth_b.or(events(&mut b));
        let to_a = b.take_output();
        if !to_a.is_empty() && !a.is_established() {
            a.feed(&to_a).ok()?;
        }
        auth_a = auth_a.or(events(&mut a));
        if let (Some(x), Some(y)) = (auth_a, auth_b) {
            return Some((x, y));
        }
    }
    None
}

fn full_handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    for (dialect, method) in [
        (Dialect::P0, AuthMethod::HmacMd6_64_256),
        (Dialect::P2, AuthMethod::HmacSha3_512),
    ] {
        assert_eq!(
            handshake(dialect),
            Some((method, method)),
            "{dialect} handshake"
        );
        g.bench_function(BenchmarkId::from_parameter(method), |bench| {
            bench.iter(|| black_box(handshake(black_box(dialect))))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = full_handshake
}
criterion_main!(benches);
