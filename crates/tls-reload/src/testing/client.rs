//! A rustls client and a minimal TLS server for loopback tests.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConnection, DigitallySignedStruct as Dss, SignatureScheme};
use rustls::{HandshakeKind, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::server::TlsStream as ServerTlsStream;

use super::Leaf;
use crate::Fingerprint;
use crate::ReloadableAcceptor;

/// A client config trusting the CA certificates in `ca_pem`, presenting
/// `identity` when given. Uses the ring provider.
///
/// Session resumption is off, so each handshake shows the certificate
/// served at that moment (a resumed session reports the certificate of the
/// original one). Tests of resumption turn it on by setting
/// `resumption` on a clone of the config.
pub fn client_config(ca_pem: &str, identity: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.cert_der.clone()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key"),
            )
            .expect("client auth cert"),
        None => builder.with_no_client_auth(),
    };
    let mut config = config;
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// What one handshake saw.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HandshakeInfo {
    /// Fingerprint of the leaf the server presented (for a resumed session:
    /// the leaf of the original session).
    pub fingerprint: String,
    /// Full or resumed.
    pub kind: Option<HandshakeKind>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// What the server sent before closing.
    pub reply: Vec<u8>,
}

/// Connects to `addr` as `localhost`, completes the handshake (which
/// verifies the chain and that the server holds the leaf's key) and reads
/// until the server closes, so TLS 1.3 session tickets are received.
///
/// # Errors
///
/// Any I/O or TLS error, including the server refusing the client
/// certificate (which a TLS 1.3 client only learns on its first read).
pub async fn handshake(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<HandshakeInfo> {
    let mut tls = connect(addr, config, "localhost").await?;
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await?;
    let (_, conn) = tls.get_ref();
    Ok(HandshakeInfo {
        fingerprint: leaf_fingerprint(conn)?,
        kind: conn.handshake_kind(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        reply,
    })
}

/// Connects to `addr` as `localhost`, completes the handshake and returns
/// the fingerprint of the leaf the server presented, without reading: for
/// servers (HTTP, gRPC) that wait for the client to speak first.
///
/// # Errors
///
/// Any I/O or TLS error of the handshake.
pub async fn served_fingerprint(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<String> {
    leaf_fingerprint(connect(addr, config, "localhost").await?.get_ref().1)
}

async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).map_err(io::Error::other)?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// Connects to `addr` asking for `server_name` (SNI; `None` sends no
/// name at all), completes the handshake and returns the fingerprint of
/// the leaf the server selected, for tests of selection by name.
///
/// The leaf is checked against no CA and no name (a client would refuse
/// the default certificate for a name it does not cover, which is what
/// such tests look for), but the server must still prove that it holds
/// the leaf's key.
///
/// # Errors
///
/// Any I/O or TLS error of the handshake, or a name that is not a valid
/// DNS name.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tls_reload::ReloadableAcceptor;
/// use tls_reload::testing::{SecretVolumes, serve, served_for_name};
///
/// let volumes = SecretVolumes::new();
/// let (addr, _server) = serve(ReloadableAcceptor::builder(volumes.files()).build()?).await;
/// assert_eq!(served_for_name(addr, None).await?, volumes.leaf.fingerprint);
/// assert_eq!(served_for_name(addr, Some("other.example.com")).await?, volumes.leaf.fingerprint);
/// # Ok(())
/// # }
/// ```
pub async fn served_for_name(addr: SocketAddr, server_name: Option<&str>) -> io::Result<String> {
    let mut config = (*key_possession_client()).clone();
    config.enable_sni = server_name.is_some();
    let name = server_name.unwrap_or("localhost");
    leaf_fingerprint(connect(addr, Arc::new(config), name).await?.get_ref().1)
}

/// A client config that accepts any server leaf, checked against no CA
/// and no name, but verifies the handshake signature with it: a handshake
/// succeeds exactly when the server holds the private key of the leaf it
/// presents, whatever the chain. Session resumption is off, as in
/// [`client_config`].
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tls_reload::ReloadableAcceptor;
/// use tls_reload::testing::{SecretVolumes, handshake, key_possession_client, serve};
///
/// let volumes = SecretVolumes::new();
/// let (addr, _server) = serve(ReloadableAcceptor::builder(volumes.files()).build()?).await;
/// let seen = handshake(addr, key_possession_client()).await?;
/// assert_eq!(seen.fingerprint, volumes.leaf.fingerprint);
/// # Ok(())
/// # }
/// ```
pub fn key_possession_client() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyLeaf(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

type Der<'a> = CertificateDer<'a>;
type SignatureResult = Result<HandshakeSignatureValid, rustls::Error>;

/// Accepts any leaf, but checks the handshake signature with it.
#[derive(Debug)]
struct AnyLeaf(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyLeaf {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &Der<'_>, d: &Dss) -> SignatureResult {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &Der<'_>, d: &Dss) -> SignatureResult {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn leaf_fingerprint(conn: &ClientConnection) -> io::Result<String> {
    let leaf = conn.peer_certificates().and_then(|c| c.first());
    let leaf = leaf.ok_or_else(|| io::Error::other("no server certificate"))?;
    Ok(Fingerprint::of(leaf).to_string())
}

/// Serves `acceptor` on an ephemeral loopback port: each connection is
/// handshaken, answered with `ok\n` and closed. Failed handshakes cost only
/// their connection. Abort the returned task to stop.
pub async fn serve(acceptor: ReloadableAcceptor) -> (SocketAddr, JoinHandle<()>) {
    serve_with(acceptor, |mut tls| async move {
        let _ = tls.write_all(b"ok\n").await;
        let _ = tls.shutdown().await;
    })
    .await
}

/// Serves `acceptor` on an ephemeral loopback port, each connection on a
/// task of its own: `handler` gets every connection whose handshake
/// succeeded. Failed handshakes cost only their connection. Abort the
/// returned task to stop.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tls_reload::ReloadableAcceptor;
/// use tls_reload::testing::{SecretVolumes, client_config, handshake, serve_with};
/// use tokio::io::AsyncWriteExt;
///
/// let volumes = SecretVolumes::new();
/// let acceptor = ReloadableAcceptor::builder(volumes.files()).build()?;
/// let (addr, _server) = serve_with(acceptor, |mut tls| async move {
///     let _ = tls.write_all(b"hello").await;
///     let _ = tls.shutdown().await;
/// })
/// .await;
/// let seen = handshake(addr, client_config(volumes.server_ca.cert_pem(), None)).await?;
/// assert_eq!(seen.reply, b"hello");
/// # Ok(())
/// # }
/// ```
pub async fn serve_with<H, Fut>(
    acceptor: ReloadableAcceptor,
    handler: H,
) -> (SocketAddr, JoinHandle<()>)
where
    H: Fn(ServerTlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    handler(tls).await;
                }
            });
        }
    });
    (addr, task)
}
