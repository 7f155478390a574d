//! A real TLS client for the gateway's port: which certificate it serves,
//! and whether it accepts a given client certificate.
//!
//! Every call is bounded by a timeout, so a stuck server fails the test
//! instead of hanging it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tls_reload::testing::Leaf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// The name the client asks for and verifies: the test certificates (and
/// the chart's) carry `localhost`, and port-forwards arrive on loopback.
const SERVER_NAME: &str = "localhost";

/// A client config (ring provider) trusting every CA certificate in
/// `ca_pem` (one or several PEM blocks), presenting `identity` when given,
/// offering ALPN `http/1.1`.
///
/// Session resumption is off, so that each handshake shows the certificate
/// served at that moment and is verified against the trust in force at that
/// moment.
///
/// # Errors
///
/// When `ca_pem` holds no usable certificate, or the identity's key cannot
/// be used.
pub fn client_config(ca_pem: &str, identity: Option<&Leaf>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::unexpected("CA bundle PEM", e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| Error::unexpected("CA certificate", e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(Error::unexpected("CA bundle PEM", "no CERTIFICATE block"));
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::unexpected("TLS protocol versions", e.to_string()))?
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => {
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                .map_err(|e| Error::unexpected("client key PEM", e.to_string()))?;
            builder
                .with_client_auth_cert(vec![leaf.cert_der.clone()], key)
                .map_err(|e| Error::unexpected("client certificate", e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to `addr`, completes a handshake (which verifies the chain and
/// that the server holds the leaf's key) and returns the SHA-256
/// fingerprint of the leaf the server presented, as `openssl` prints it.
///
/// With TLS 1.3 a server that requires a client certificate rejects a
/// missing or untrusted one only after the client's handshake is complete,
/// so this sees the served certificate either way; use [`get`] to learn
/// whether the server accepts the client.
///
/// # Errors
///
/// Any I/O or TLS error, or a handshake not done within `within`.
pub async fn served_fingerprint(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    within: Duration,
) -> Result<String> {
    let context = || format!("TLS handshake with {addr}");
    tokio::time::timeout(
        within,
        tls_reload::testing::served_fingerprint(addr, config),
    )
    .await
    .map_err(|_| Error::Timeout {
        what: context(),
        within,
        detail: String::new(),
    })?
    .map_err(|e| Error::io(context(), e))
}

/// A gRPC channel (one HTTP/2 connection) to the gateway at `addr`: over
/// TLS with `config` (ALPN set to `h2` here), or plaintext HTTP/2 with prior
/// knowledge when `config` is `None`. Connecting is bounded by `within`.
///
/// # Errors
///
/// [`Error::Io`] when the connection or handshake fails,
/// [`Error::Timeout`] when it takes longer than `within`.
pub async fn grpc_channel(
    addr: SocketAddr,
    config: Option<&Arc<ClientConfig>>,
    within: Duration,
) -> Result<Channel> {
    let connector = config.map(|c| {
        let mut c = (**c).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        TlsConnector::from(Arc::new(c))
    });
    let endpoint = Endpoint::from_static("http://localhost").connect_timeout(within);
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_uri| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let io: Box<dyn Io> = match connector {
                Some(c) => {
                    let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
                    Box::new(c.connect(name, tcp).await?)
                }
                None => Box::new(tcp),
            };
            Ok::<_, std::io::Error>(TokioIo::new(io))
        }
    }));
    let context = || format!("gRPC connection to {addr}");
    tokio::time::timeout(within, connect)
        .await
        .map_err(|_| Error::Timeout {
            what: context(),
            within,
            detail: String::new(),
        })?
        .map_err(|e| Error::io(context(), std::io::Error::other(e)))
}

/// A stream a gRPC channel can run over: TLS or plain TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Waits until a fresh handshake with `addr` is served `fingerprint`,
/// probing every `every` for at most `within`; each handshake is bounded by
/// 5 s.
///
/// # Errors
///
/// [`Error::Timeout`] with the last fingerprint seen (or handshake error).
pub async fn wait_until_served(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    fingerprint: &str,
    within: Duration,
    every: Duration,
) -> Result<()> {
    let exchange = Duration::from_secs(5);
    crate::eventually(within, every, &format!("{fingerprint} served"), || {
        let config = config.clone();
        async move {
            match served_fingerprint(addr, config, exchange).await {
                Ok(served) if served == fingerprint => Ok(()),
                Ok(served) => Err(format!("served {served}")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// A response to [`get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    /// The body, lossily decoded.
    pub body: String,
}

/// `GET path` over TLS (HTTP/1.1, `Connection: close`) and the whole reply.
///
/// A server that refuses the client certificate answers the request with
/// a TLS alert, which is this function's error.
///
/// # Errors
///
/// Any I/O or TLS error (a refused client certificate included), a reply
/// that is not HTTP, or no complete reply within `within`.
pub async fn get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    within: Duration,
) -> Result<Reply> {
    let context = format!("GET {path} from https://{addr}");
    let raw = tokio::time::timeout(within, exchange(addr, config, path))
        .await
        .map_err(|_| Error::Timeout {
            what: context.clone(),
            within,
            detail: String::new(),
        })?
        .map_err(|e| Error::io(context.clone(), e))?;
    parse_reply(&raw).ok_or_else(|| {
        Error::unexpected(
            context,
            format!("not an HTTP reply: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

async fn exchange(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    tls.flush().await?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw).await {
        Ok(_) => Ok(raw),
        // A server closing without close_notify after a complete reply is
        // not the client's problem.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()?;
    Some(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// The SHA-256 fingerprint of the first certificate in `pem`, as `openssl
/// x509 -fingerprint -sha256` prints it.
///
/// # Errors
///
/// When `pem` holds no certificate.
pub fn fingerprint_of_pem(pem: &[u8]) -> Result<String> {
    let der = CertificateDer::from_pem_slice(pem)
        .map_err(|e| Error::unexpected("certificate PEM", e.to_string()))?;
    Ok(tls_reload::Fingerprint::of(&der).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tls_reload::testing::TestCa;

    #[test]
    fn fingerprint_of_pem_matches_the_issued_leaf() {
        let leaf = TestCa::new("ca").server();
        assert_eq!(
            fingerprint_of_pem(leaf.cert_pem.as_bytes()).unwrap(),
            leaf.fingerprint
        );
        assert!(fingerprint_of_pem(b"not a certificate").is_err());
    }

    #[test]
    fn client_config_trusts_every_ca_of_a_bundle_and_rejects_an_empty_one() {
        let (a, b) = (TestCa::new("a"), TestCa::new("b"));
        let bundle = format!("{}{}", a.cert_pem(), b.cert_pem());
        assert!(client_config(&bundle, None).is_ok());
        assert!(client_config("", None).is_err());
    }

    #[test]
    fn replies_are_parsed_with_their_status() {
        let reply = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "ok\n");
        assert!(parse_reply(b"garbage").is_none());
    }
}
