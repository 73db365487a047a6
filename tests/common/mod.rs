//! Shared test support: the capture vectors and an in-memory handshake driver.
#![allow(dead_code)]

use std::path::PathBuf;

use aemp::proto::dialect::Dialect;
use aemp::proto::handshake::{Established, Event, Handshake, HandshakeConfig, HandshakeError};

/// The test vectors kept in the repository (`tests/vectors`).
pub fn vectors() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
}

/// One direction of one connection of a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// connecting side -> listening side (`>` in the transcript)
    C2s,
    /// listening side -> connecting side (`<`)
    S2c,
}

impl Dir {
    pub fn file(self) -> &'static str {
        match self {
            Dir::C2s => "c2s",
            Dir::S2c => "s2c",
        }
    }
    pub fn opposite(self) -> Dir {
        match self {
            Dir::C2s => Dir::S2c,
            Dir::S2c => Dir::C2s,
        }
    }
    fn marker(self) -> &'static str {
        match self {
            Dir::C2s => ">",
            Dir::S2c => "<",
        }
    }
}

/// A capture folder.
pub struct Capture {
    pub name: &'static str,
    pub secret: Vec<u8>,
    pub transcript: String,
}

impl Capture {
    pub fn load(name: &'static str) -> Capture {
        let dir = vectors().join("captures").join(name);
        Capture {
            name,
            secret: std::fs::read(dir.join("secret.txt")).unwrap(),
            transcript: std::fs::read_to_string(dir.join("transcript.txt")).unwrap(),
        }
    }

    pub fn bytes(&self, conn: usize, dir: Dir) -> Vec<u8> {
        let path = vectors()
            .join("captures")
            .join(self.name)
            .join(format!("conn{conn}.{}.bin", dir.file()));
        std::fs::read(path).unwrap()
    }

    pub fn connections(&self) -> usize {
        (0..)
            .take_while(|n| {
                vectors()
                    .join("captures")
                    .join(self.name)
                    .join(format!("conn{n}.c2s.bin"))
                    .exists()
            })
            .count()
    }

    /// The transcript entries of one kind (`JSON`, `CBOR-bytes`, `LINE`, …) for a direction.
    pub fn entries(&self, conn: usize, dir: Dir, kind: &str) -> Vec<String> {
        self.transcript
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (_t, c, d, k) = (it.next()?, it.next()?, it.next()?, it.next()?);
                if c != conn.to_string() || d != dir.marker() || k != kind {
                    return None;
                }
                let at = l.find(&format!(" {k} "))? + k.len() + 2;
                Some(l[at..].to_owned())
            })
            .collect()
    }
}

/// Splits the first `n` LF-terminated lines (without LF) off `bytes`; returns them and the rest.
pub fn lines(bytes: &[u8], n: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut out = Vec::new();
    let mut rest = bytes;
    for _ in 0..n {
        let end = rest.iter().position(|&b| b == b'\n').expect("line");
        out.push(rest[..end].to_vec());
        rest = &rest[end + 1..];
    }
    (out, rest.to_vec())
}

/// Length of the first `n` lines including their LFs.
pub fn prefix_len(bytes: &[u8], n: usize) -> usize {
    let (ls, _) = lines(bytes, n);
    ls.iter().map(|l| l.len() + 1).sum()
}

/// The outcome of driving one side of an in-memory pair.
#[derive(Debug, Default)]
pub struct Outcome {
    pub established: Option<Box<Established>>,
    pub error: Option<HandshakeError>,
    pub tls_role: Option<aemp::proto::handshake::TlsRole>,
    pub peer_dialect: Option<Option<Dialect>>,
}

struct Side {
    hs: Handshake,
    out: Outcome,
    choose: Option<Dialect>,
}

impl Side {
    /// Handles the events; returns bytes to send.
    fn pump(&mut self) -> Vec<u8> {
        while let Some(ev) = self.hs.poll_event() {
            match ev {
                Event::PeerGreeting(p) => {
                    self.out.peer_dialect = Some(p.dialect);
                    if let Err(e) = self.hs.accept_peer(self.choose) {
                        self.out.error.get_or_insert(e);
                    }
                }
                Event::StartTls(role) => {
                    // In memory, TLS is a transparent tunnel: what arrived past line 2 is the
                    // peer's (here unencrypted) auth line, fed once "TLS" is up.
                    self.out.tls_role = Some(role);
                    let early = self.hs.take_tls_leftover();
                    if let Err(e) = self.hs.tls_established().and_then(|()| {
                        if early.is_empty() {
                            Ok(())
                        } else {
                            self.hs.feed(&early)
                        }
                    }) {
                        self.out.error.get_or_insert(e);
                    }
                }
                Event::Established(e) => self.out.established = Some(e),
            }
        }
        self.hs.take_output()
    }

    fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.out.error.is_some() || self.out.established.is_some() {
            return;
        }
        if let Err(e) = self.hs.feed(bytes) {
            self.out.error.get_or_insert(e);
        }
    }
}

/// Drives two handshakes against each other until both finish or fail. `choose_*` is the
/// dialect each side picks at `accept_peer` (for deferred greetings).
pub fn run_pair_with(
    a: HandshakeConfig,
    b: HandshakeConfig,
    choose_a: Option<Dialect>,
    choose_b: Option<Dialect>,
) -> (Outcome, Outcome) {
    let mut a = Side {
        hs: Handshake::new(a).unwrap(),
        out: Outcome::default(),
        choose: choose_a,
    };
    let mut b = Side {
        hs: Handshake::new(b).unwrap(),
        out: Outcome::default(),
        choose: choose_b,
    };
    for _ in 0..20 {
        let to_b = a.pump();
        b.feed(&to_b);
        let to_a = b.pump();
        a.feed(&to_a);
        let done = |s: &Side| s.out.error.is_some() || s.out.established.is_some();
        if done(&a) && done(&b) {
            break;
        }
    }
    a.pump();
    b.pump();
    (a.out, b.out)
}

pub fn run_pair(a: HandshakeConfig, b: HandshakeConfig) -> (Outcome, Outcome) {
    run_pair_with(a, b, None, None)
}

pub mod procs;
pub mod scripted;
