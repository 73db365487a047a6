//! [`NodeStats`] in the Prometheus text exposition format (what `aemp run --metrics` serves at
//! `/metrics`), written with `prometheus-client`.
//!
//! Link metrics are labelled `peer` (node id) and `dialect`; their counters start at zero when a
//! link comes up (a reconnect is a counter reset to Prometheus, which `rate()` handles).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `aemp_link_messages_sent_total`, `aemp_link_messages_received_total` | counter | peer, dialect |
//! | `aemp_link_bytes_sent_total`, `aemp_link_bytes_received_total` | counter | peer, dialect |
//! | `aemp_link_bytes_queued` | gauge | peer, dialect |
//! | `aemp_link_up_since_seconds` (Unix time) | gauge | peer, dialect |
//! | `aemp_link_info` (always 1) | gauge | peer, dialect, tls, direction, conn, addr |
//! | `aemp_links_up` | gauge | |
//! | `aemp_reconnects_total` | counter | peer |
//! | `aemp_handshake_failures_total` | counter | cause |
//! | `aemp_connections_dialled_total`, `aemp_connections_accepted_total` | counter | |
//! | `aemp_connections_open` | gauge | |
//! | `aemp_node_info` (always 1) | gauge | node |

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::NodeStats;

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counters {
    let family = Counters::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauges {
    let family = Gauges::default();
    registry.register(name, help, family.clone());
    family
}

/// Saturating, for gauges (an i64).
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Renders `stats` in the Prometheus text exposition format (OpenMetrics flavour, ending in
/// `# EOF`), as served with content type
/// `application/openmetrics-text; version=1.0.0; charset=utf-8`.
pub fn encode(stats: &NodeStats) -> String {
    // A fresh registry per scrape: the values are a snapshot, not live metric objects.
    let mut r = Registry::with_prefix("aemp");
    let sent = counter(&mut r, "link_messages_sent", "Packets queued for the peer");
    let received = counter(&mut r, "link_messages_received", "Packets received");
    let bytes_sent = counter(&mut r, "link_bytes_sent", "Bytes written to the link");
    let bytes_received = counter(&mut r, "link_bytes_received", "Bytes read from the link");
    let queued = gauge(&mut r, "link_bytes_queued", "Bytes queued, not yet written");
    let since = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    r.register(
        "link_up_since_seconds",
        "When the link came up (Unix time)",
        since.clone(),
    );
    let info = gauge(&mut r, "link_info", "An up link (value 1)");
    let up = Gauge::<i64>::default();
    r.register("links_up", "Links up now", up.clone());
    let reconnects = counter(
        &mut r,
        "reconnects",
        "Links that came up again for a node seen before",
    );
    let failures = counter(
        &mut r,
        "handshake_failures",
        "Connections that failed before their link came up",
    );
    let dialled = Counter::<u64>::default();
    r.register(
        "connections_dialled",
        "Connections dialled",
        dialled.clone(),
    );
    let accepted = Counter::<u64>::default();
    r.register(
        "connections_accepted",
        "Connections accepted",
        accepted.clone(),
    );
    let open = Gauge::<i64>::default();
    r.register("connections_open", "Connections open now", open.clone());
    let node = gauge(&mut r, "node_info", "This node (value 1)");

    for l in &stats.links {
        let key = labels(&[("peer", &l.peer), ("dialect", l.dialect)]);
        sent.get_or_create(&key).inc_by(l.messages_sent);
        received.get_or_create(&key).inc_by(l.messages_received);
        bytes_sent.get_or_create(&key).inc_by(l.bytes_sent);
        bytes_received.get_or_create(&key).inc_by(l.bytes_received);
        queued.get_or_create(&key).set(signed(l.bytes_queued));
        since.get_or_create(&key).set(l.since_unix);
        let conn = l.conn.to_string();
        let details = labels(&[
            ("peer", &l.peer),
            ("dialect", l.dialect),
            ("tls", if l.tls { "1" } else { "0" }),
            ("direction", l.direction.label()),
            ("conn", &conn),
            ("addr", &l.addr),
        ]);
        info.get_or_create(&details).set(1);
    }
    up.set(signed(stats.links.len() as u64));
    for (peer, n) in &stats.reconnects {
        reconnects
            .get_or_create(&labels(&[("peer", peer)]))
            .inc_by(*n);
    }
    for (cause, n) in &stats.handshake_failures {
        failures
            .get_or_create(&labels(&[("cause", cause.label())]))
            .inc_by(*n);
    }
    dialled.inc_by(stats.connections.dialled);
    accepted.inc_by(stats.connections.accepted);
    open.set(signed(stats.connections.open));
    node.get_or_create(&labels(&[("node", &stats.node)])).set(1);

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::FailureCause;
    use crate::node::{ConnectionStats, Direction, LinkStats};

    #[test]
    fn a_snapshot_renders_with_its_labels_and_values() {
        let stats = NodeStats {
            node: "a".into(),
            links: vec![LinkStats {
                peer: "b".into(),
                conn: 3,
                dialect: "p2",
                tls: false,
                direction: Direction::Dialled,
                addr: "127.0.0.1:1".into(),
                since_unix: 1.5,
                messages_sent: 7,
                bytes_sent: 70,
                messages_received: 5,
                bytes_received: 50,
                bytes_queued: 0,
            }],
            connections: ConnectionStats {
                dialled: 2,
                accepted: 1,
                open: 1,
            },
            reconnects: [("b".to_owned(), 1)].into(),
            handshake_failures: FailureCause::ALL.iter().map(|c| (*c, 0)).collect(),
        };
        let text = encode(&stats);
        for line in [
            r#"aemp_link_messages_sent_total{peer="b",dialect="p2"} 7"#,
            r#"aemp_link_bytes_received_total{peer="b",dialect="p2"} 50"#,
            r#"aemp_reconnects_total{peer="b"} 1"#,
            r#"aemp_handshake_failures_total{cause="auth"} 0"#,
            "aemp_connections_dialled_total 2",
            "aemp_connections_open 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
