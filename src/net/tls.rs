//! TLS on AEMP links, with Perl's trust model.
//!
//! A node's certificate setting is one PEM holding its private key and certificate, plus any
//! CA certificates. Every certificate in it is also a trust anchor: a peer is accepted when the
//! certificate it presents is one of them (Perl's `aemp gencert` makes one self-signed
//! certificate that all nodes share) or chains to one of them. Certificates are required both
//! ways and no host name is checked. Handshake signatures are always verified.
//!
//! TLS starts on the TCP stream right after the two greeting lines; bytes already read past
//! line 2 belong to TLS and are replayed to it through a rewinding reader.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::proto::handshake::TlsRole;

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("TLS needs a crypto provider: enable the `ring` or the `aws-lc-rs` feature");

/// The name a TLS client asks for. It is never checked (Perl's certificates carry no names)
/// and, with SNI off, never sent.
const SERVER_NAME: &str = "anyevent-mp.invalid";

/// What went wrong with TLS: setting it up, or on a link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The PEM text is malformed.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// The PEM holds no certificate.
    #[error("the PEM holds no certificate")]
    NoCertificate,
    /// The PEM holds no private key.
    #[error("the PEM holds no private key")]
    NoKey,
    /// A configured certificate cannot serve as a trust anchor.
    #[error("unusable certificate in the PEM: {0}")]
    BadCertificate(rustls::Error),
    /// rustls refused the key and certificates (e.g. the key does not match the certificate).
    #[error("cannot set up TLS: {0}")]
    Setup(rustls::Error),
    /// A certificate could not be generated.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// RSA keys can only be generated with the `aws-lc-rs` feature (ring cannot make them).
    #[error(
        "this build cannot generate RSA keys (ring has no RSA key generation): rebuild with \
         `--features aws-lc-rs`, or use the default ECDSA P-256 key"
    )]
    RsaUnavailable,
    /// This node requires TLS but the peer's greeting does not offer it.
    #[error("TLS is required, but the peer does not offer it")]
    PeerOffersNoTls,
    /// This node requires TLS but has no certificate to speak it with.
    #[error("TLS is required, but this node has no certificate")]
    NotConfigured,
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate is neither one of ours nor signed by one of them.
    #[error("the peer's certificate is not trusted: {0}")]
    UntrustedPeer(CertificateError),
    /// The peer aborted the TLS handshake with an alert (typically: it refused our certificate).
    #[error("the peer refused TLS with alert {0:?}")]
    Alert(AlertDescription),
    /// What arrived is not TLS (e.g. plaintext where TLS was due).
    #[error("the peer did not speak TLS: {0}")]
    NotTls(rustls::Error),
    /// Any other TLS protocol failure.
    #[error("TLS failed: {0}")]
    Protocol(rustls::Error),
    /// The peer closed the connection during the TLS handshake.
    #[error("the peer closed the connection during the TLS handshake")]
    Closed,
    /// The socket failed.
    #[error("socket error during TLS: {0}")]
    Io(io::Error),
}

impl TlsError {
    /// Classifies an error from a TLS stream (tokio-rustls wraps rustls errors in `io::Error`).
    pub fn from_io(e: io::Error) -> TlsError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return TlsError::Closed;
        }
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(err) => TlsError::from_rustls(err.clone()),
            None => TlsError::Io(e),
        }
    }

    fn from_rustls(err: rustls::Error) -> TlsError {
        match err {
            rustls::Error::NoCertificatesPresented => TlsError::NoPeerCertificate,
            rustls::Error::InvalidCertificate(c) => TlsError::UntrustedPeer(c),
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                TlsError::NoPeerCertificate
            }
            rustls::Error::AlertReceived(a) => TlsError::Alert(a),
            e @ rustls::Error::InvalidMessage(_) => TlsError::NotTls(e),
            e => TlsError::Protocol(e),
        }
    }
}

/// The crypto provider of this build: aws-lc-rs when that feature is enabled (an explicit
/// choice), else ring (the default).
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let p = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let p = rustls::crypto::ring::default_provider();
    Arc::new(p)
}

/// A node's TLS identity and trust anchors, with the rustls configurations built once.
pub struct TlsSettings {
    certs: Vec<CertificateDer<'static>>,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    verifier: Arc<PeerVerifier>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("certificates", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads Perl's `cert` setting: the private key and the certificates (own first, then any
    /// CA certificates), in any order, in one PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<TlsSettings, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoKey,
            e => TlsError::Pem(e.to_string()),
        })?;
        TlsSettings::new(certs, key)
    }

    /// [`TlsSettings::from_pem`] from a file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<TlsSettings, TlsError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|source| TlsError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        TlsSettings::from_pem(&pem)
    }

    /// Settings from a certificate chain (own certificate first) and its key; every
    /// certificate is also a trust anchor.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsSettings, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let provider = provider();
        let verifier = Arc::new(PeerVerifier::new(&certs, provider.clone())?);
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(TlsError::Setup)?;
        client.enable_sni = false;
        // Every link verifies the full certificate; one cache for all peers would only blur that.
        client.resumption = Resumption::disabled();
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(certs.clone(), key)
            .map_err(TlsError::Setup)?;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(TlsSettings {
            certs,
            client: Arc::new(client),
            server: Arc::new(server),
            verifier,
        })
    }

    /// The certificates of the PEM (own first); all of them are trusted.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The rustls client configuration links use.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// The rustls server configuration links use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The verifier of peer certificates (both directions).
    pub fn verifier(&self) -> Arc<PeerVerifier> {
        self.verifier.clone()
    }

    /// Runs the TLS handshake in `role` on `stream`, replaying `leftover` (bytes already read
    /// past greeting line 2) first.
    pub(crate) async fn start<S>(
        &self,
        role: TlsRole,
        stream: S,
        leftover: Vec<u8>,
    ) -> Result<TlsStream<Rewind<S>>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let io = Rewind::new(stream, leftover);
        let result = match role {
            TlsRole::Client => TlsConnector::from(self.client.clone())
                .connect(server_name(), io)
                .await
                .map(TlsStream::Client),
            TlsRole::Server => TlsAcceptor::from(self.server.clone())
                .accept(io)
                .await
                .map(TlsStream::Server),
        };
        result.map_err(TlsError::from_io)
    }
}

/// The (unchecked) server name TLS clients use.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME)
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

/// Perl's trust model as a rustls verifier, for both directions: a peer certificate is
/// accepted when it is byte-identical to a configured certificate that is currently valid, or
/// when it chains to a configured certificate (server certificates: names are not checked).
pub struct PeerVerifier {
    trusted: Vec<CertificateDer<'static>>,
    server: Arc<WebPkiServerVerifier>,
    client: Arc<dyn ClientCertVerifier>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("trusted", &self.trusted.len())
            .finish_non_exhaustive()
    }
}

impl PeerVerifier {
    /// A verifier trusting `certs` (each one also a trust anchor for chains).
    pub fn new(
        certs: &[CertificateDer<'static>],
        provider: Arc<CryptoProvider>,
    ) -> Result<PeerVerifier, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert.clone()).map_err(TlsError::BadCertificate)?;
        }
        let roots = Arc::new(roots);
        let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(rustls::Error::General(e.to_string())))?;
        let client = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(rustls::Error::General(e.to_string())))?;
        Ok(PeerVerifier {
            trusted: certs.to_vec(),
            server,
            client,
            provider,
        })
    }

    /// Checks a certificate a peer presented as TLS server (`as_server`) or client.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        as_server: bool,
    ) -> Result<(), rustls::Error> {
        let chained = if as_server {
            self.server
                .verify_server_cert(end_entity, intermediates, &server_name(), &[], now)
                .map(|_| ())
        } else {
            self.client
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ())
        };
        let pinned = self
            .trusted
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref());
        match chained {
            Ok(()) => Ok(()),
            // webpki checks names only after the chain verified; Perl checks no names.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if as_server => Ok(()),
            // A configured certificate is trusted as it is (a gencert certificate is a CA used
            // as end entity, which webpki refuses), but only while it is valid: webpki checks
            // the validity period before anything else, so any other error means it passed.
            Err(e) if pinned && !is_validity_error(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

fn is_validity_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. }
                | CertificateError::BadEncoding
        )
    )
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now, true)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.client.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now, false)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// A stream that first yields bytes already read off its inner stream, then reads on.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `prefix` to be read before it.
    pub fn new(inner: S, prefix: Vec<u8>) -> Rewind<S> {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.pos += n;
            if this.pos >= this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The key of a generated certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// ECDSA on P-256 (any build).
    #[default]
    EcdsaP256,
    /// RSA-2048, as Perl's `aemp gencert` (needs the `aws-lc-rs` feature).
    Rsa2048,
}

/// Makes what Perl's `aemp gencert` makes: a self-signed CA certificate with CN
/// `AnyEvent::MP`, no subjectAltName, valid for about ten years, as one PEM text holding the
/// private key and the certificate. All nodes of a network share it.
pub fn generate_pem(kind: KeyKind) -> Result<String, TlsError> {
    let alg = match kind {
        KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
    };
    let key = rcgen::KeyPair::generate_for(alg).map_err(|e| match e {
        rcgen::Error::KeyGenerationUnavailable => TlsError::RsaUnavailable,
        e => TlsError::Generate(e),
    })?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "AnyEvent::MP");
    params.distinguished_name = name;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    const DAY: Duration = Duration::from_secs(86_400);
    // A day of slack for nodes whose clocks lag behind ours.
    params.not_before = now - DAY;
    params.not_after = now + DAY * 3650;
    let cert = params.self_signed(&key)?;
    Ok(format!("{}{}", key.serialize_pem(), cert.pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/tls/peer-cert-and-key.pem"
    ));

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn the_vector_pem_loads_with_its_rsa_key() {
        let s = TlsSettings::from_pem(VECTOR.as_bytes()).unwrap();
        assert_eq!(s.certificates().len(), 1);
    }

    #[test]
    fn verifier_accepts_the_configured_certificate_both_ways() {
        let s = TlsSettings::from_pem(VECTOR.as_bytes()).unwrap();
        let own = &s.certificates()[0];
        let v = s.verifier();
        v.check(own, &[], now(), true).unwrap();
        v.check(own, &[], now(), false).unwrap();
        // Plain webpki refuses it: that is why the verifier exists.
        let err = v
            .server
            .verify_server_cert(own, &[], &server_name(), &[], now());
        assert!(err.is_err());
    }

    #[test]
    fn verifier_refuses_a_foreign_self_signed_certificate() {
        let ours = TlsSettings::from_pem(VECTOR.as_bytes()).unwrap();
        let foreign =
            TlsSettings::from_pem(generate_pem(KeyKind::EcdsaP256).unwrap().as_bytes()).unwrap();
        let theirs = &foreign.certificates()[0];
        for as_server in [true, false] {
            // webpki stops at "CA used as end entity" before looking for an issuer.
            let err = ours
                .verifier()
                .check(theirs, &[], now(), as_server)
                .unwrap_err();
            assert!(
                matches!(err, rustls::Error::InvalidCertificate(_)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_pinned_certificate_is_refused_outside_its_validity() {
        let s = TlsSettings::from_pem(VECTOR.as_bytes()).unwrap();
        let own = &s.certificates()[0];
        // The vector is valid from 2026-11-26 to 2036-11-23.
        let before = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
        let after = UnixTime::since_unix_epoch(Duration::from_secs(2_200_000_000));
        for t in [before, after] {
            let err = s.verifier().check(own, &[], t, true).unwrap_err();
            assert!(is_validity_error(&err), "{err:?}");
        }
    }

    fn named(cn: &str) -> rcgen::CertificateParams {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p
    }

    #[test]
    fn a_certificate_signed_by_a_configured_ca_is_accepted() {
        // The PEM holds our leaf and the CA that issued it; a sibling leaf of that CA chains
        // to a trust anchor without being one of the configured certificates.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = named("test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let own_key = rcgen::KeyPair::generate().unwrap();
        let own = named("node a").signed_by(&own_key, &issuer).unwrap();
        let pem = format!("{}{}{}", own_key.serialize_pem(), own.pem(), ca_cert.pem());
        let s = TlsSettings::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(s.certificates().len(), 2);
        let sibling_key = rcgen::KeyPair::generate().unwrap();
        let sibling = named("node b").signed_by(&sibling_key, &issuer).unwrap();
        s.verifier().check(sibling.der(), &[], now(), true).unwrap();
        s.verifier()
            .check(sibling.der(), &[], now(), false)
            .unwrap();
        // A leaf of another CA is not accepted.
        let other_ca_key = rcgen::KeyPair::generate().unwrap();
        let mut other_ca = named("test CA");
        other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let other_issuer = rcgen::Issuer::new(other_ca, other_ca_key);
        let stranger_key = rcgen::KeyPair::generate().unwrap();
        let stranger = named("node b")
            .signed_by(&stranger_key, &other_issuer)
            .unwrap();
        for as_server in [true, false] {
            let err = s
                .verifier()
                .check(stranger.der(), &[], now(), as_server)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer | CertificateError::BadSignature
                    )
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn gencert_output_parses_back() {
        let pem = generate_pem(KeyKind::EcdsaP256).unwrap();
        assert!(pem.contains("BEGIN PRIVATE KEY"));
        assert!(pem.contains("BEGIN CERTIFICATE"));
        let s = TlsSettings::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(s.certificates().len(), 1);
        // Self-trusting: the verifier takes its own certificate.
        s.verifier()
            .check(&s.certificates()[0], &[], now(), true)
            .unwrap();
        // Two runs make two different certificates.
        let other =
            TlsSettings::from_pem(generate_pem(KeyKind::EcdsaP256).unwrap().as_bytes()).unwrap();
        assert_ne!(s.certificates()[0], other.certificates()[0]);
    }

    #[test]
    fn rsa_generation_depends_on_the_provider() {
        let r = generate_pem(KeyKind::Rsa2048);
        if cfg!(feature = "aws-lc-rs") {
            TlsSettings::from_pem(r.unwrap().as_bytes()).unwrap();
        } else {
            assert!(matches!(r, Err(TlsError::RsaUnavailable)), "{r:?}");
        }
    }

    #[test]
    fn pem_without_key_or_certificate_is_refused() {
        let pem = generate_pem(KeyKind::EcdsaP256).unwrap();
        let (key, cert) = pem.split_at(pem.find("-----BEGIN CERTIFICATE").unwrap());
        assert!(matches!(
            TlsSettings::from_pem(cert.as_bytes()),
            Err(TlsError::NoKey)
        ));
        assert!(matches!(
            TlsSettings::from_pem(key.as_bytes()),
            Err(TlsError::NoCertificate)
        ));
        // A key that does not belong to the certificate.
        let other = generate_pem(KeyKind::EcdsaP256).unwrap();
        let (other_key, _) = other.split_at(other.find("-----BEGIN CERTIFICATE").unwrap());
        let mixed = format!("{other_key}{cert}");
        assert!(matches!(
            TlsSettings::from_pem(mixed.as_bytes()),
            Err(TlsError::Setup(_))
        ));
    }

    #[tokio::test]
    async fn rewind_yields_the_prefix_first() {
        use tokio::io::AsyncReadExt;
        let inner: &[u8] = b" world";
        let mut r = Rewind::new(inner, b"hello".to_vec());
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
