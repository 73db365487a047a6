//! Seeds for the targets no capture covers directly: `decode_storable` (no captured link
//! negotiated storable) and `data_phase` (a selector byte, then a data-phase stream).
//!
//! `examples/write_seeds.rs` runs these over the json and cbor seeds that `seed-corpus.sh` cut
//! from the captures; every packet found there is re-encoded in the other framings, and a fixed
//! set of node-port requests (every tag) and port messages is added.

use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{DEFAULT_MAX_PACKET, Framing, PacketDecoder, encode_value};
use aemp::proto::value::Value;
use bytes::BytesMut;

use crate::data_phase::{FIXED_PORTS, FUZZ_INIT, NODE, selector};

/// The packets at the start of a data-phase stream, as values, up to the first error or the
/// first incomplete packet.
pub fn packets(framing: Framing, stream: &[u8]) -> Vec<Value> {
    let mut dec = PacketDecoder::new(framing, DEFAULT_MAX_PACKET);
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    while let Ok(Some(p)) = dec.decode(&mut buf) {
        if let Ok(v) = p.to_value() {
            out.push(v);
        }
    }
    out
}

/// `packets` encoded back to back in `framing`; those that cannot be (a NaN in json) are left
/// out.
pub fn encode_stream(framing: Framing, packets: &[Value]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        let before = out.len();
        if encode_value(framing, p, &mut out).is_err() {
            out.truncate(before);
        }
    }
    out.to_vec()
}

/// One packet written as JSON text, read with the crate's json framing.
fn json(text: &str) -> Value {
    let found = packets(Framing::Json, text.as_bytes());
    assert_eq!(found.len(), 1, "seed packet {text} is not one json packet");
    found.into_iter().next().unwrap_or(Value::Null)
}

/// Requests to the node port with every tag the node knows (and a few it does not), and
/// messages to the fixed ports of the `data_phase` target, as a peer would send them.
pub fn node_port_requests() -> Vec<Vec<Value>> {
    let me = NODE;
    let [actor, stream, tagged] = FIXED_PORTS;
    let groups: Vec<Vec<String>> = vec![
        // Keepalives, devnull, monitors, kills.
        vec![
            "[]".into(),
            r#"[""]"#.into(),
            r#"["",""]"#.into(),
            r#"["","devnull",1,[2]]"#.into(),
            format!(r#"["","mon1","{actor}"]"#),
            format!(r#"["","mon0","{actor}"]"#),
            r#"["","mon1","nosuchport"]"#.into(),
            format!(r#"["","kil","{stream}","die","seed"]"#),
            format!(r#"["","kil0","{tagged}","die","seed"]"#),
            format!(r#"["","kil1","{tagged}"]"#),
        ],
        // Relays: to our own ports, our own node port (a hop), a made-up node.
        vec![
            format!(r#"["","snd","{me}#{actor}","hello",1]"#),
            format!(r#"["","snd","{me}#{stream}","hello",2.5]"#),
            format!(r#"["","snd","{me}#{tagged}","echo","{me}#{stream}","back"]"#),
            format!(r#"["","snd","{me}","info","{me}#{stream}"]"#),
            r#"["","snd","made-up#port","x"]"#.into(),
            format!(
                r#"["","snd_multiple",["{me}#{actor}","m",1],["{me}#{stream}","m",2],["other#p"]]"#
            ),
        ],
        // Questions with a reply spec.
        vec![
            format!(r#"["","info","{me}#{stream}","pfx"]"#),
            r#"["","known_nodes","peer#reply"]"#.into(),
            r#"["","up_nodes","peer#reply",1]"#.into(),
            r#"["","time","peer#reply"]"#.into(),
            r#"["","can","kil1","peer#reply"]"#.into(),
            r#"["","eval","1+1","peer#reply"]"#.into(),
            r#"["","eval"]"#.into(),
            r#"["","Some::function",1,2]"#.into(),
            r#"["","no_such_tag",{"k":[1,null]}]"#.into(),
        ],
        // Spawns: the 1.x global helper, the target's own init, an unknown init, a taken name.
        vec![
            r#"["","AnyEvent::MP::_spawn","h1","AnyEvent::MP::Global::connect",0,"made-up"]"#
                .into(),
            format!(r#"["","AnyEvent::MP::_spawn","p1","{FUZZ_INIT}","x"]"#),
            format!(r#"["","snd","{me}#p1","echo","{me}#{stream}","from p1"]"#),
            r#"["","AnyEvent::MP::_spawn","p2","No::Such::init"]"#.into(),
            format!(r#"["","AnyEvent::MP::_spawn","{actor}","{FUZZ_INIT}"]"#),
            r#"["","mon1","p2"]"#.into(),
        ],
        // The 2.x global protocol.
        vec![
            r#"["","g_slave"]"#.into(),
            r#"["","g_slave",{"'l":{"n1":["127.0.0.1:1"]},"fam":{"k":"v"}}]"#.into(),
            r#"["","g_global"]"#.into(),
            r#"["","g_set",{"fam":{"k":[1,2]}}]"#.into(),
            r#"["","g_upd","fam",{"k2":"v2"},["k"]]"#.into(),
            r#"["","g_upd","'l",{"n2":["127.0.0.1:2"]},null]"#.into(),
            r#"["","g_find","n1"]"#.into(),
            r#"["","g_found","n1",["127.0.0.1:1"]]"#.into(),
            r#"["","g_db_family","fam",7]"#.into(),
            r#"["","g_db_keys","fam","id"]"#.into(),
            r#"["","g_db_values","'l",[1]]"#.into(),
            r#"["","g_reply",7,{}]"#.into(),
            r#"["","g_mon1","fam"]"#.into(),
            r#"["","g_upd","fam",{"k3":3},null]"#.into(),
            r#"["","g_mon0","fam"]"#.into(),
            r#"["","g_chg1","fam",null]"#.into(),
            r#"["","g_chg2","fam",{"a":1},["b"]]"#.into(),
        ],
        // Messages to the fixed ports, the rcv port's tags included.
        vec![
            format!(r#"["{actor}","hello",[1,2,3],{{"k":"v"}}]"#),
            format!(r#"["{stream}","hello",null,true,-1]"#),
            format!(r#"["{tagged}","echo","{me}#{actor}","a",1]"#),
            format!(r#"["{tagged}","unknown tag"]"#),
            format!(r#"["{tagged}","die"]"#),
            r#"["nosuchport","x"]"#.into(),
        ],
    ];
    groups
        .into_iter()
        .map(|g| g.iter().map(|t| json(t)).collect())
        .collect()
}

/// The dialect a capture was made in, from its directory name (`p0-…`, `p1b-…`, `p2-…`).
pub fn capture_dialect(name: &str) -> Option<Dialect> {
    Dialect::ALL
        .into_iter()
        .find(|d| name.starts_with(&format!("{}-", d.name())))
}

/// A `data_phase` input: the selector byte, then `packets` in `framing`.
pub fn data_phase_input(dialect: Dialect, framing: Framing, packets: &[Value]) -> Vec<u8> {
    let mut out = vec![selector(dialect, framing)];
    out.extend(encode_stream(framing, packets));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_phase::link_kind;

    #[test]
    fn every_request_group_encodes_in_every_framing() {
        for group in node_port_requests() {
            for framing in Framing::ALL {
                let wire = encode_stream(framing, &group);
                assert_eq!(packets(framing, &wire).len(), group.len(), "{framing}");
            }
        }
    }

    #[test]
    fn data_phase_inputs_start_with_their_selector() {
        let group = &node_port_requests()[0];
        for dialect in Dialect::ALL {
            for framing in Framing::ALL {
                let input = data_phase_input(dialect, framing, group);
                assert_eq!(link_kind(input[0]), (dialect, framing));
            }
        }
        assert_eq!(capture_dialect("p1b-chat"), Some(Dialect::P1b));
        assert_eq!(capture_dialect("p2-echo-cbor"), Some(Dialect::P2));
        assert_eq!(capture_dialect("other"), None);
    }
}
