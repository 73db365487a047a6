//! TLS links over real loopback sockets: Rust nodes with each other, and a raw TLS peer
//! (driven step by step with the sans-IO handshake and rustls) against a node.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aemp::net::tls::{self, KeyKind, TlsSettings};
use aemp::node::{DialectMode, Node, NodeConfig, split_port_id};
use aemp::proto::dialect::Dialect;
use aemp::proto::framing::{Framing, encode_packet};
use aemp::proto::greeting::Nonce;
use aemp::proto::handshake::{Event, Handshake, HandshakeConfig, TlsRole};
use bytes::BytesMut;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const VECTOR_PEM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/tls/peer-cert-and-key.pem"
);

// ---- log capture: the typed errors of a node's transports are logged, and asserted here ----

/// Every warning of every node in this test binary, as "node=<id> message=<text>".
fn warnings() -> &'static Mutex<Vec<String>> {
    static LOG: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let _ = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("aemp=debug"))
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .with(Capture(log.clone()))
            .try_init();
        log
    })
}

struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut f = Fields(String::new());
            event.record(&mut f);
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(f.0);
        }
    }
}

/// Waits until `node` logged a warning containing every one of `needles`; returns it.
async fn logged(node: &Node, needles: &[&str]) -> String {
    let tag = format!("node={} ", node.id());
    for _ in 0..200 {
        let hit = warnings()
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(&tag) && needles.iter().all(|n| l.contains(n)))
            .cloned();
        if let Some(l) = hit {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} never logged {needles:?}; warnings: {:#?}",
        node.id(),
        warnings()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    );
}

// ---- nodes -------------------------------------------------------------------------------

fn vector() -> Arc<TlsSettings> {
    Arc::new(TlsSettings::from_pem_file(VECTOR_PEM).unwrap())
}

fn fresh() -> Arc<TlsSettings> {
    Arc::new(
        TlsSettings::from_pem(tls::generate_pem(KeyKind::EcdsaP256).unwrap().as_bytes()).unwrap(),
    )
}

async fn node(d: Dialect, tls: Option<Arc<TlsSettings>>, secret: &[u8], require_tls: bool) -> Node {
    warnings();
    Node::start(NodeConfig {
        secret: secret.to_vec(),
        dialect: DialectMode::Fixed(d),
        workers: 2,
        tls,
        require_tls,
        handshake_timeout: Duration::from_secs(5),
        ..NodeConfig::default()
    })
    .await
    .unwrap()
}

fn introduce(a: &Node, b: &Node) {
    a.add_node_addresses(
        b.id(),
        b.listeners().iter().map(|l| l.to_string()).collect(),
    );
}

async fn recv(rx: &mut aemp::node::PortStream) -> aemp::node::Message {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("timed out")
        .expect("port closed")
}

/// a → b and back; returns a's TLS role on the link.
async fn exchange(a: &Node, b: &Node) -> Option<TlsRole> {
    introduce(a, b);
    let (pa, mut rxa) = a.port_stream();
    let (pb, mut rxb) = b.port_stream();
    a.snd(pb.id(), &("ping", pa.id())).unwrap();
    let m = recv(&mut rxb).await;
    assert_eq!(&*m.from, a.id());
    let (tag, reply): (String, String) = m.decode().unwrap();
    assert_eq!(tag, "ping");
    b.snd(&reply, &("pong", 7)).unwrap();
    let (tag, n): (String, i32) = recv(&mut rxa).await.decode().unwrap();
    assert_eq!((tag.as_str(), n), ("pong", 7));
    let (ra, rb) = (a.link_tls(b.id()), b.link_tls(a.id()));
    // The two ends always take opposite roles.
    match (ra, rb) {
        (Some(TlsRole::Client), Some(TlsRole::Server))
        | (Some(TlsRole::Server), Some(TlsRole::Client))
        | (None, None) => {}
        other => panic!("inconsistent roles {other:?}"),
    }
    ra
}

#[actix_rt::test]
async fn rust_nodes_link_over_tls_in_both_roles() {
    let cases: [(&str, Arc<TlsSettings>, Dialect, &[u8]); 4] = [
        ("vector P0", vector(), Dialect::P0, b"s"),
        ("vector P2", vector(), Dialect::P2, b""),
        ("gencert P0", fresh(), Dialect::P0, b""),
        ("gencert P2", fresh(), Dialect::P2, b"s"),
    ];
    for (name, settings, d, secret) in cases {
        let (mut client, mut server) = (false, false);
        for _ in 0..40 {
            let a = node(d, Some(settings.clone()), secret, false).await;
            let b = node(d, Some(settings.clone()), secret, true).await;
            match exchange(&a, &b).await {
                Some(TlsRole::Client) => client = true,
                Some(TlsRole::Server) => server = true,
                None => panic!("{name}: link not in TLS"),
            }
            assert_eq!(a.link_dialect(b.id()), Some(d));
            a.shutdown();
            b.shutdown();
            if client && server {
                break;
            }
        }
        assert!(client && server, "{name}: both roles seen");
    }
}

#[actix_rt::test]
async fn a_foreign_certificate_is_refused_and_the_node_keeps_serving() {
    let a = node(Dialect::P2, Some(vector()), b"", false).await;
    let foreign = node(Dialect::P2, Some(fresh()), b"", false).await;
    introduce(&foreign, &a);
    let (pa, _rxa) = a.port_stream();
    foreign.snd(pa.id(), &("let me in",)).unwrap();
    // The TLS client checks first; the other end then sees its alert.
    let la = logged(&a, &["TLS with"]).await;
    let lf = logged(&foreign, &["TLS with"]).await;
    assert!(
        la.contains("not trusted") || lf.contains("not trusted"),
        "{la}\n{lf}"
    );
    for l in [&la, &lf] {
        assert!(
            l.contains("not trusted") || l.contains("refused TLS with alert"),
            "{l}"
        );
    }
    assert!(a.up_nodes().is_empty());
    let b = node(Dialect::P2, Some(vector()), b"", false).await;
    assert!(exchange(&b, &a).await.is_some());
    assert_eq!(a.up_nodes(), vec![b.id().to_owned()]);
}

#[actix_rt::test]
async fn require_tls_refuses_a_plaintext_peer_which_others_accept_by_secret() {
    let strict = node(Dialect::P0, Some(vector()), b"k", true).await;
    let lenient = node(Dialect::P0, Some(vector()), b"k", false).await;
    let plain = node(Dialect::P0, None, b"k", false).await;
    introduce(&plain, &strict);
    let (ps, _rxs) = strict.port_stream();
    plain.snd(ps.id(), &("x",)).unwrap();
    logged(
        &strict,
        &[
            "TLS with",
            "TLS is required, but the peer does not offer it",
        ],
    )
    .await;
    assert!(strict.up_nodes().is_empty());
    // A node that merely has a certificate links by secret, outside TLS.
    assert_eq!(exchange(&plain, &lenient).await, None);
    assert_eq!(lenient.link_tls(plain.id()), None);
    assert_eq!(lenient.link_dialect(plain.id()), Some(Dialect::P0));
}

// ---- a raw peer ----------------------------------------------------------------------------

/// What the raw peer does once TLS is due.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Complete TLS, then write the auth line and a first packet in one TLS write.
    AuthAndPacket,
    /// Skip TLS and write the auth line in plaintext.
    Plaintext,
}

struct Raw {
    node_id: String,
    /// Our nonce line: `+` sorts before any base64 nonce (we are the TLS client), `~` after.
    nonce: &'static str,
    dialect: Dialect,
    client: Option<Arc<rustls::ClientConfig>>,
    server: Option<Arc<rustls::ServerConfig>>,
    /// The destination port name and payload of the first packet.
    packet: (String, String),
    then: Then,
}

/// Outcome of a raw session: the node's auth method and the TLS version, or what failed.
type RawResult = Result<(String, Option<rustls::ProtocolVersion>), String>;

impl Raw {
    fn new(node_id: &str, nonce: &'static str, settings: &TlsSettings, port: &str) -> Raw {
        Raw {
            node_id: node_id.into(),
            nonce,
            dialect: Dialect::P0,
            client: Some(settings.client_config()),
            server: Some(settings.server_config()),
            packet: (split_port_id(port).1.to_owned(), "first".into()),
            then: Then::AuthAndPacket,
        }
    }

    async fn run(self, addr: std::net::SocketAddr) -> RawResult {
        tokio::task::spawn_blocking(move || self.session(addr))
            .await
            .unwrap()
    }

    /// Blocking, so that every write is exactly one `write` on the socket.
    fn session(self, addr: std::net::SocketAddr) -> RawResult {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut sock = std::net::TcpStream::connect(addr).map_err(|x| e(&x))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.set_nodelay(true).unwrap();
        let cfg = HandshakeConfig {
            tls: true,
            ..HandshakeConfig::new(self.node_id.clone(), Vec::new(), self.dialect)
        };
        let mut hs = Handshake::with_nonce(cfg, Nonce::from_line(self.nonce).unwrap()).unwrap();
        let client_role = self.nonce == "+";
        let mut conn: rustls::Connection = if client_role {
            rustls::ClientConnection::new(self.client.clone().unwrap(), tls::server_name())
                .unwrap()
                .into()
        } else {
            rustls::ServerConnection::new(self.server.clone().unwrap())
                .unwrap()
                .into()
        };
        // Greeting and ClientHello in one segment: the node must hand the rest to TLS.
        let mut first = hs.take_output();
        if client_role && self.then == Then::AuthAndPacket {
            conn.write_tls(&mut first).unwrap();
        }
        sock.write_all(&first).map_err(|x| e(&x))?;
        // The node's two lines, byte by byte so that nothing of TLS is read here.
        let mut lines = Vec::new();
        let mut byte = [0u8; 1];
        while lines.iter().filter(|&&b| b == b'\n').count() < 2 {
            if sock.read(&mut byte).map_err(|x| e(&x))? == 0 {
                return Err("EOF in greeting".into());
            }
            lines.push(byte[0]);
        }
        hs.feed(&lines).map_err(|x| e(&x))?;
        let mut role = None;
        while let Some(ev) = hs.poll_event() {
            match ev {
                Event::PeerGreeting(_) => hs.accept_peer(None).map_err(|x| e(&x))?,
                Event::StartTls(r) => role = Some(r),
                Event::Established(_) => return Err("established without TLS".into()),
            }
        }
        let want = if client_role {
            TlsRole::Client
        } else {
            TlsRole::Server
        };
        assert_eq!(role, Some(want), "TLS role by nonce order");
        assert!(hs.take_tls_leftover().is_empty());
        hs.tls_established().map_err(|x| e(&x))?;
        let auth = hs.take_output();
        if self.then == Then::Plaintext {
            sock.write_all(&auth).map_err(|x| e(&x))?;
            let mut rest = Vec::new();
            return match sock.read_to_end(&mut rest) {
                Ok(_) => Err(format!("closed after {} bytes", rest.len())),
                Err(x) => Err(x.to_string()),
            };
        }
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|x| e(&x))?;
        }
        let version = conn.protocol_version();
        let mut packet = BytesMut::new();
        // What the node's framing list makes us choose.
        let framing = match self.dialect {
            Dialect::P2 => Framing::Cbor,
            _ => Framing::Json,
        };
        encode_packet(framing, &self.packet.0, &(&self.packet.1,), &mut packet).unwrap();
        let mut both = auth;
        both.extend_from_slice(&packet);
        conn.writer().write_all(&both).unwrap();
        let mut record = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut record).unwrap();
        }
        sock.write_all(&record).map_err(|x| e(&x))?;
        // Read the node's auth line inside TLS (it may already be buffered in `conn`).
        let mut plain = [0u8; 4096];
        loop {
            match conn.reader().read(&mut plain) {
                Ok(0) => return Err("TLS closed".into()),
                Ok(n) => {
                    hs.feed(&plain[..n]).map_err(|x| e(&x))?;
                    if let Some(Event::Established(est)) = hs.poll_event() {
                        // Give the node time to read the packet before we close.
                        std::thread::sleep(Duration::from_millis(200));
                        return Ok((est.peer_auth().name().to_owned(), version));
                    }
                    continue;
                }
                Err(x) if x.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(x) => return Err(x.to_string()),
            }
            if conn.read_tls(&mut sock).map_err(|x| e(&x))? == 0 {
                return Err("EOF inside TLS".into());
            }
            conn.process_new_packets().map_err(|x| e(&x))?;
        }
    }
}

fn addr(n: &Node) -> std::net::SocketAddr {
    n.listeners()[0]
}

#[actix_rt::test]
async fn the_first_packet_in_the_auth_lines_segment_is_delivered() {
    for (dialect, method) in [
        (Dialect::P0, "tls_md6_64_256"),
        (Dialect::P2, "tls_sha3_512"),
    ] {
        for nonce in ["+", "~"] {
            let settings = vector();
            let a = node(dialect, Some(settings.clone()), b"", false).await;
            let (port, mut rx) = a.port_stream();
            let mut events = a.node_events();
            let mut raw = Raw::new(&format!("raw/first{nonce}"), nonce, &settings, port.id());
            raw.dialect = dialect;
            let (auth, version) = raw.run(addr(&a)).await.unwrap();
            assert_eq!(auth, method);
            assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
            let m = recv(&mut rx).await;
            let (s,): (String,) = m.decode().unwrap();
            assert_eq!(s, "first", "{nonce}");
            // The raw peer closed without close_notify, as Perl does, after a whole packet: it
            // left (no TLS error).
            let mut reasons = Vec::new();
            while reasons.is_empty() {
                let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
                    .await
                    .unwrap()
                    .unwrap();
                if !ev.up {
                    reasons = ev.reason;
                }
            }
            assert_eq!(reasons[2], aemp::proto::value::Value::from("peer left"));
            a.shutdown();
        }
    }
}

#[actix_rt::test]
async fn a_peer_without_a_certificate_is_refused_and_may_retry() {
    let settings = vector();
    let a = node(Dialect::P0, Some(settings.clone()), b"", false).await;
    let (port, mut rx) = a.port_stream();
    let anonymous = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(settings.verifier())
        .with_no_client_auth();
    let mut raw = Raw::new("raw/nocert", "+", &settings, port.id());
    raw.client = Some(Arc::new(anonymous));
    let err = raw.run(addr(&a)).await.unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    logged(&a, &["TLS with", "the peer presented no certificate"]).await;
    // The same node id may come back with a certificate: the failed attempt left nothing behind.
    let raw = Raw::new("raw/nocert", "+", &settings, port.id());
    raw.run(addr(&a)).await.unwrap();
    let (s,): (String,) = recv(&mut rx).await.decode().unwrap();
    assert_eq!(s, "first");
}

#[actix_rt::test]
async fn a_foreign_certificate_is_refused_in_either_role() {
    use rustls::pki_types::pem::PemObject as _;
    let ours = vector();
    let theirs_pem = tls::generate_pem(KeyKind::EcdsaP256).unwrap();
    let theirs = TlsSettings::from_pem(theirs_pem.as_bytes()).unwrap();
    let theirs_certs = theirs.certificates().to_vec();
    let theirs_key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(theirs_pem.as_bytes()).unwrap();
    for nonce in ["+", "~"] {
        let a = node(Dialect::P0, Some(ours.clone()), b"", false).await;
        let (port, _rx) = a.port_stream();
        // The raw peer trusts the node, but has its own certificate, which the node does not.
        let mut raw = Raw::new(&format!("raw/foreign{nonce}"), nonce, &theirs, port.id());
        let provider = tls::provider;
        raw.client = Some(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(ours.verifier())
                .with_client_auth_cert(theirs_certs.clone(), theirs_key.clone_key())
                .unwrap(),
        ));
        raw.server = Some(Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(ours.verifier())
                .with_single_cert(theirs_certs.clone(), theirs_key.clone_key())
                .unwrap(),
        ));
        let err = raw.run(addr(&a)).await.unwrap_err();
        let l = logged(&a, &["TLS with", "not trusted"]).await;
        assert!(l.contains("127.0.0.1:"), "names the peer: {l}");
        assert!(err.contains("fatal alert"), "{err}");
        assert!(a.up_nodes().is_empty());
        a.shutdown();
    }
}

#[actix_rt::test]
async fn plaintext_where_tls_was_due_is_refused() {
    let settings = vector();
    let a = node(Dialect::P0, Some(settings.clone()), b"", false).await;
    let (port, _rx) = a.port_stream();
    let mut raw = Raw::new("raw/plain", "+", &settings, port.id());
    raw.then = Then::Plaintext;
    let err = raw.run(addr(&a)).await.unwrap_err();
    // The node alerts and closes.
    assert!(
        err.starts_with("closed after") || err.contains("reset"),
        "{err}"
    );
    logged(&a, &["TLS with", "did not speak TLS"]).await;
    assert!(a.up_nodes().is_empty());
}
