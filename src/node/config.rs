//! Node configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::peer::InitFn;
use super::profile::Service;
use crate::net::tls::TlsSettings;
use crate::proto::auth::Redacted;
use crate::proto::dialect::Dialect;
use crate::proto::framing::DEFAULT_MAX_PACKET;

/// Which dialect a node speaks on its links.
///
/// The default is `Auto { default: P2 }`: two Rust nodes link in P2 (SHA3 auth, CBOR), and a
/// Rust node dialling a Perl node links in that node's dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialectMode {
    /// Listening: answer in the dialect of the dialler's line 1. Dialling: greet in `default`,
    /// or in the dialect the listener at that address last showed. A listener that answers in
    /// another dialect is dialled again at once in its own (once per dial, and remembered per
    /// address, so later links to it need no second attempt); that first, failed attempt is
    /// logged at debug level and not reported as a [`LinkError`](super::LinkError).
    Auto {
        /// The dialect used when dialling an address not seen before.
        default: Dialect,
    },
    /// Always this dialect (peers of other versions are refused).
    Fixed(Dialect),
}

impl Default for DialectMode {
    /// `Auto` dialling in P2, the richest dialect: Perl listeners of other versions show theirs
    /// in their greeting and are dialled again in it.
    fn default() -> Self {
        DialectMode::Auto {
            default: Dialect::P2,
        }
    }
}

/// Everything a node needs to start. `NodeConfig::default()` is a node with a random
/// `anon/…` id on an ephemeral loopback port, no secret, no seeds, in
/// [`DialectMode::default()`] (auto, dialling in P2).
///
/// Its `Debug` output shows the secret's length, never the secret.
#[derive(Clone)]
pub struct NodeConfig {
    /// The node id; `anon/` (the default) or any id ending in `/` gets a random suffix, as in
    /// Perl.
    pub node_id: String,
    /// The shared secret. Without one (and without TLS) no link can authenticate.
    pub secret: Vec<u8>,
    /// Accept the `cleartext` auth method, and list it in our greeting. Off by default.
    ///
    /// **Risk**: a peer that authenticates with `cleartext` sends the shared secret itself, in
    /// hex, and outside TLS anyone who can see or redirect the connection learns it. With the
    /// secret one can join the network as any node (and ask Perl nodes to run code). Perl
    /// nodes never send `cleartext` (they authenticate with `hmac_*` or `tls_*`), so they
    /// link fine without it; turn it on only for simple clients that cannot compute an HMAC
    /// (the minimal client of the AnyEvent::MP documentation), ideally inside TLS. This node
    /// never sends `cleartext` itself.
    pub allow_cleartext: bool,
    /// Addresses to listen on, in Perl's syntax ([`crate::net::addr`]); each entry may be a
    /// comma-separated list of `host:port`, `[v6]:port`, a bare `port` (this machine's host
    /// name) or `*:port` (every interface address but loopback). Port `*` or 0: ephemeral.
    /// Every address an entry stands for gets its own listener, and the node announces what
    /// was actually bound (`ip:port`, ports resolved); `*` with port 0 uses one port on all
    /// its addresses where it can. `*` on a machine with nothing but loopback falls back to
    /// `127.0.0.1` (and `::1`) with a warning, where Perl would have no listener. Empty: a node
    /// without listeners. Default: `127.0.0.1:0`.
    pub binds: Vec<String>,
    /// Addresses of our seed nodes, in the syntax of `binds` (an entry that resolves to several
    /// addresses stands for each; parsed at start, where a bad one fails
    /// [`Node::start`](super::Node::start); resolved in the background, one that does not
    /// resolve is logged). Their ids are learned from their greetings. The node keeps a link to
    /// every seed for as long as it runs: a seed that is not up yet, or that went away, is
    /// dialled again with back-off (0.6–1.2 s at first, doubling up to `seed_retry_max`). On
    /// P2 links (and between Rust nodes) seeds act as global nodes: the first one up becomes
    /// this node's master, which resolves other node ids for it.
    pub seeds: Vec<String>,
    /// The longest pause between two rounds of seed dialling (Perl's `monitor_timeout` plays
    /// this part); also bounds the back-off of a global node's links to the other globals.
    pub seed_retry_max: Duration,
    /// The dialect policy; by default auto, dialling in P2 (see [`DialectMode`]).
    pub dialect: DialectMode,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// Handshakes of accepted connections under way at once (default 512). At the bound the
    /// oldest is dropped to make room, so connections that never finish cost a bounded number
    /// of sockets while a real peer, which finishes in moments, still links up.
    pub max_handshakes: usize,
    /// Connections (accepted and dialled, up or in handshake) at once (default 4096); an
    /// accepted connection beyond it is closed at once. Keep it below the process's limit on
    /// open files.
    pub max_connections: usize,
    /// How long messages to an unreachable node are kept before its monitors fire.
    pub connect_timeout: Duration,
    /// While messages wait for a node that is not up, its addresses are dialled again this
    /// often (Perl's `connect_interval`), until one answers or `connect_timeout` expires: a
    /// peer that is restarting is reached as soon as it listens again.
    pub connect_interval: Duration,
    /// The liveness bound of a link: a peer that cannot be heard from for about this long
    /// (its host died, the path was cut without a FIN or RST) has its link failed — monitors
    /// fire with `("transport_error", node, "…Connection timed out…")`, node-down is emitted.
    /// Perl's `monitor_timeout` plays this part; 30 s by default.
    ///
    /// The kernel enforces it, so it costs nothing on a busy link and works with every peer
    /// (Perl's too, which answer the probes in their kernel): TCP keepalive probes after a third
    /// of the bound without anything received, every sixth of it after that, the last one due
    /// at the bound; and on Linux `TCP_USER_TIMEOUT` = the bound, so that sent data that stays
    /// unacknowledged that long fails the link too. Whole seconds, at least 2 s. Without
    /// `TCP_USER_TIMEOUT` (not Linux) a link with data in flight is failed by the OS's
    /// retransmission limit instead (about 15 minutes), or by `write_timeout` once the socket
    /// buffers are full. `None` leaves the OS's keepalive settings (on Linux: the first probe
    /// after 2 hours idle).
    pub liveness_timeout: Option<Duration>,
    /// P1 links of a node without listeners send `[]` after this much write silence.
    pub keepalive: Duration,
    /// Bytes that may wait in one link's send queue (or, about, for a node not up yet); `snd`
    /// beyond it fails the link, `send` waits for room.
    pub send_queue_bytes: usize,
    /// A write to a link's socket that makes no progress for this long fails the link (its
    /// monitors fire, node-down is emitted, the socket closes): a peer that stops reading
    /// cannot hold a link open.
    pub write_timeout: Duration,
    /// Largest packet accepted from a peer.
    pub max_packet: usize,
    /// Worker threads (actix arbiters) that run transports; 0 = one per core. The arbiter the
    /// node is started on counts as the first.
    pub workers: usize,
    /// Perl's `cert`: our certificate, key and trust anchors. With it we offer TLS
    /// (`tls=1.0`), and links to peers that offer it too run inside TLS.
    pub tls: Option<Arc<TlsSettings>>,
    /// Refuse peers that do not offer TLS (at their greeting line 1).
    pub require_tls: bool,
    /// Perl's `services`: run at the end of [`Node::start`](super::Node::start), in order,
    /// each by calling the init function registered under its name (from `init_functions`
    /// or, for a few built into this crate, always there) with the node, a fresh port id
    /// `<node id>#<name>` it may create a port under, and the service's arguments. A service
    /// with no such function is logged as a warning and skipped (a Rust node cannot load Perl
    /// code); one whose function fails is logged as a warning too. `AnyEvent::MP::Global::`
    /// is built in (every node runs the global service) and needs nothing. Usually filled
    /// from a profile ([`NodeConfig::from_profile`]).
    pub services: Vec<Service>,
    /// Init functions registered on the node before anything else happens, by name
    /// ([`NodeConfig::with_init`]): they run the `services`, and other nodes may spawn them,
    /// as those registered with [`Node::register_init`](super::Node::register_init).
    pub init_functions: BTreeMap<String, InitFn>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: "anon/".into(),
            secret: Vec::new(),
            allow_cleartext: false,
            binds: vec!["127.0.0.1:0".into()],
            seeds: Vec::new(),
            seed_retry_max: Duration::from_secs(30),
            dialect: DialectMode::default(),
            handshake_timeout: Duration::from_secs(30),
            max_handshakes: 512,
            max_connections: 4096,
            connect_timeout: Duration::from_secs(30),
            connect_interval: Duration::from_secs(2),
            liveness_timeout: Some(Duration::from_secs(30)),
            keepalive: Duration::from_secs(30),
            send_queue_bytes: 16 << 20,
            write_timeout: Duration::from_secs(30),
            max_packet: DEFAULT_MAX_PACKET,
            workers: 0,
            tls: None,
            require_tls: false,
            services: Vec::new(),
            init_functions: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so that a new field cannot be forgotten here.
        let NodeConfig {
            node_id,
            secret,
            allow_cleartext,
            binds,
            seeds,
            seed_retry_max,
            dialect,
            handshake_timeout,
            max_handshakes,
            max_connections,
            connect_timeout,
            connect_interval,
            liveness_timeout,
            keepalive,
            send_queue_bytes,
            write_timeout,
            max_packet,
            workers,
            tls,
            require_tls,
            services,
            init_functions,
        } = self;
        f.debug_struct("NodeConfig")
            .field("node_id", node_id)
            .field("secret", &Redacted(secret))
            .field("allow_cleartext", allow_cleartext)
            .field("binds", binds)
            .field("seeds", seeds)
            .field("seed_retry_max", seed_retry_max)
            .field("dialect", dialect)
            .field("handshake_timeout", handshake_timeout)
            .field("max_handshakes", max_handshakes)
            .field("max_connections", max_connections)
            .field("connect_timeout", connect_timeout)
            .field("connect_interval", connect_interval)
            .field("liveness_timeout", liveness_timeout)
            .field("keepalive", keepalive)
            .field("send_queue_bytes", send_queue_bytes)
            .field("write_timeout", write_timeout)
            .field("max_packet", max_packet)
            .field("workers", workers)
            .field("tls", tls)
            .field("require_tls", require_tls)
            .field("services", services)
            .field("init_functions", &init_functions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl NodeConfig {
    /// A default configuration with this secret.
    pub fn with_secret(secret: impl Into<Vec<u8>>) -> Self {
        NodeConfig {
            secret: secret.into(),
            ..NodeConfig::default()
        }
    }

    /// This configuration with init function `f` registered under `name` (see
    /// `init_functions`): a profile's service of that name runs it when the node starts.
    ///
    /// # Example
    ///
    /// ```
    /// use aemp::node::{Node, NodeConfig, Service};
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let config = NodeConfig {
    ///         // Usually from a profile: `aemp addservice My::hello`.
    ///         services: vec![Service::Call { name: "My::hello".into(), args: vec![] }],
    ///         ..NodeConfig::with_secret("s3cret")
    ///     }
    ///     .with_init("My::hello", |node, port_id, _args| {
    ///         node.rcv().on("hi", |_, _| Ok(())).start_named(&port_id).map(drop).map_err(|e| e.to_string())
    ///     });
    ///     let node = Node::start(config).await.unwrap();
    ///     node.shutdown().await;
    /// }
    /// ```
    pub fn with_init(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&super::Node, String, Vec<crate::proto::value::Value>) -> Result<(), String>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.init_functions.insert(name.into(), Arc::new(f));
        self
    }
}

/// Replaces a trailing `/` of a node id with a random suffix, as Perl does for `anon/`.
pub(crate) fn resolve_node_id(id: &str) -> String {
    if id.is_empty() || id.ends_with('/') {
        let base = if id.is_empty() { "anon/" } else { id };
        format!("{base}{}", random_name(12))
    } else {
        id.to_owned()
    }
}

/// A random name of `len` characters from `[0-9A-Za-z]`.
pub(crate) fn random_name(len: usize) -> String {
    use rand::RngExt as _;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_does_not_show_the_secret() {
        let secret = "sup3r-s3cret-value";
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        let bytes = format!("{:?}", secret.as_bytes());
        let config = NodeConfig {
            allow_cleartext: true,
            ..NodeConfig::with_secret(secret)
        };
        let transport = super::super::transport_config(&"me".into(), &config);
        let shown = format!("{config:?} {config:#?} {transport:?} {transport:#?}");
        assert!(shown.contains("<redacted 18 bytes>"), "{shown}");
        assert!(shown.contains("allow_cleartext: true"), "{shown}");
        for needle in [secret, hex.as_str(), &bytes[1..bytes.len() - 1]] {
            assert!(!shown.contains(needle), "{needle:?} in {shown}");
        }
        assert!(format!("{:?}", NodeConfig::default()).contains("secret: \"<none>\""));
    }

    #[test]
    fn cleartext_is_off_by_default_and_carried_to_the_transports() {
        assert!(!NodeConfig::default().allow_cleartext);
        assert!(!NodeConfig::with_secret("k").allow_cleartext);
        let config = NodeConfig {
            allow_cleartext: true,
            ..NodeConfig::with_secret("k")
        };
        assert!(super::super::transport_config(&"me".into(), &config).allow_cleartext);
    }
}
