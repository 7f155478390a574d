//! Clients for the gateway's ports: which certificate it serves, whether it
//! accepts a given client certificate, HTTP/1.1 and HTTP/2 requests (hyper's
//! client, over TLS or in plaintext) and gRPC channels.
//!
//! Every call is bounded by a timeout, so a stuck server fails the test
//! instead of hanging it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tls_reload::testing::Leaf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// The name the client asks for and verifies: the test certificates (and
/// the chart's) carry `localhost`, and port-forwards arrive on loopback.
const SERVER_NAME: &str = "localhost";

/// [`tls_reload::testing::client_config`] (ring provider, session
/// resumption off, so each handshake shows the certificate served at that
/// moment) trusting every CA certificate in `ca_pem` and presenting
/// `identity` when given, offering ALPN `http/1.1`.
///
/// # Errors
///
/// When `ca_pem` holds no certificate, or a block that is not PEM (a CA
/// bundle read from a cluster is checked before it is used).
pub fn client_config(ca_pem: &str, identity: Option<&Leaf>) -> Result<Arc<ClientConfig>> {
    let blocks = CertificateDer::pem_slice_iter(ca_pem.as_bytes()).collect::<Result<Vec<_>, _>>();
    let blocks = blocks.map_err(|e| Error::unexpected("CA bundle PEM", e.to_string()))?;
    if blocks.is_empty() {
        return Err(Error::unexpected("CA bundle PEM", "no CERTIFICATE block"));
    }
    let config = tls_reload::testing::client_config(ca_pem, identity);
    Ok(with_alpn(&config, Http::One))
}

/// `config` offering only the ALPN protocol of `version`.
pub fn with_alpn(config: &ClientConfig, version: Http) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![version.alpn().to_vec()];
    Arc::new(config)
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
    let handshake = tls_reload::testing::served_fingerprint(addr, config);
    bounded(within, format!("TLS handshake with {addr}"), handshake).await
}

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
    let what = format!("{fingerprint} served");
    tls_reload::testing::poll(within, every, &what, || {
        let config = config.clone();
        async move {
            match served_fingerprint(addr, config, exchange).await {
                Ok(served) if served == fingerprint => Ok(()),
                Ok(served) => Err(format!("served {served}")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;
    Ok(())
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
    let config = config.cloned();
    let endpoint = Endpoint::from_static("http://localhost").connect_timeout(within);
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_uri| {
        let config = config.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(connect(addr, config, Http::Two).await?)) }
    }));
    let connect = async { connect.await.map_err(io::Error::other) };
    bounded(within, format!("gRPC connection to {addr}"), connect).await
}

/// The HTTP version of a request: HTTP/1.1, or HTTP/2 (ALPN `h2` over TLS,
/// prior knowledge in plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1.
    One,
    /// HTTP/2.
    Two,
}

impl Http {
    fn alpn(self) -> &'static [u8] {
        match self {
            Self::One => b"http/1.1",
            Self::Two => b"h2",
        }
    }
}

/// A response, read to its end.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The trailers (gRPC puts its status there), when any came.
    pub trailers: Option<http::HeaderMap>,
    /// The body, lossily decoded.
    pub body: String,
}

impl Reply {
    /// The `grpc-status` in the trailers or the headers, if any.
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailers
            .iter()
            .chain([&self.headers])
            .find_map(|h| h.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
    }
}

/// A `GET path` request, for [`send`] and [`Connection::request`].
///
/// # Errors
///
/// When `path` is not a valid URI path.
pub fn get_request(path: &str) -> Result<http::Request<Full<Bytes>>> {
    http::Request::get(format!("http://{SERVER_NAME}{path}"))
        .body(Full::default())
        .map_err(|e| Error::unexpected(format!("GET {path}"), e.to_string()))
}

/// A unary gRPC request for `method` (`/package.Service/Method`) with the
/// encoded `message` as its one frame, for [`Connection::request`] over
/// HTTP/2: a test can then tell whether that very connection still
/// serves calls, which a tonic channel, reconnecting on its own, hides.
/// The reply's [`Reply::grpc_status`] says how the call ended.
///
/// # Errors
///
/// When `method` is not a valid URI path.
pub fn grpc_request(method: &str, message: &[u8]) -> Result<http::Request<Full<Bytes>>> {
    let len = u32::try_from(message.len())
        .map_err(|_| Error::unexpected(format!("gRPC {method}"), "message over 4 GiB"))?;
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    http::Request::post(format!("http://{SERVER_NAME}{method}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Full::new(Bytes::from(frame)))
        .map_err(|e| Error::unexpected(format!("gRPC {method}"), e.to_string()))
}

/// `GET path` over TLS with `config` (HTTP/1.1) and the whole reply.
///
/// A server that refuses the client certificate answers the request with
/// a TLS alert, which is this function's error ([`Error::Io`], its source
/// naming the alert).
///
/// # Errors
///
/// Any I/O, TLS or HTTP error, or no complete reply within `within`.
pub async fn get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    within: Duration,
) -> Result<Reply> {
    send(addr, Some(config), Http::One, get_request(path)?, within).await
}

/// Sends `request` on a new connection to `addr`, over TLS with `config`
/// or in plaintext when it is `None`, and reads the whole reply.
///
/// # Errors
///
/// As [`get`].
pub async fn send(
    addr: SocketAddr,
    config: Option<Arc<ClientConfig>>,
    version: Http,
    request: http::Request<Full<Bytes>>,
    within: Duration,
) -> Result<Reply> {
    let what = format!("{} {} from {addr}", request.method(), request.uri().path());
    let exchange = async {
        Connection::open(addr, config, version)
            .await?
            .request(request)
            .await
    };
    bounded(within, what, exchange).await
}

/// One HTTP connection (hyper's client), for tests that keep it open.
#[derive(Debug)]
pub struct Connection {
    sender: Sender,
    /// The task driving the connection, until it has been seen to end.
    driver: Option<JoinHandle<hyper::Result<()>>>,
}

#[derive(Debug)]
enum Sender {
    One(http1::SendRequest<Full<Bytes>>),
    Two(http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    /// Connects to `addr` (over TLS with `config`, in plaintext when it is
    /// `None`) and completes the HTTP handshake of `version`.
    ///
    /// # Errors
    ///
    /// Any I/O, TLS or HTTP error.
    pub async fn open(
        addr: SocketAddr,
        config: Option<Arc<ClientConfig>>,
        version: Http,
    ) -> io::Result<Self> {
        let io = TokioIo::new(connect(addr, config, version).await?);
        let (sender, driver) = match version {
            Http::One => {
                let (send, conn) = http1::handshake(io).await.map_err(io_error)?;
                (Sender::One(send), tokio::spawn(conn))
            }
            Http::Two => {
                let handshake = http2::handshake(TokioExecutor::new(), io).await;
                let (send, conn) = handshake.map_err(io_error)?;
                (Sender::Two(send), tokio::spawn(conn))
            }
        };
        let driver = Some(driver);
        Ok(Self { sender, driver })
    }

    /// Sends `request` and reads the whole reply.
    ///
    /// # Errors
    ///
    /// Any I/O, TLS or HTTP error.
    pub async fn request(&mut self, request: http::Request<Full<Bytes>>) -> io::Result<Reply> {
        let response = match &mut self.sender {
            Sender::One(send) => send.send_request(request).await,
            Sender::Two(send) => send.send_request(request).await,
        };
        let response = match response {
            Ok(response) => response,
            // The request only learns that it was canceled; the connection
            // knows why (a TLS alert from the server, say).
            Err(e) => {
                return Err(match self.closed(Duration::from_secs(1)).await {
                    Err(closed) if closed.kind() != io::ErrorKind::TimedOut => closed,
                    _ => io_error(e),
                });
            }
        };
        let (head, body) = response.into_parts();
        let body = body.collect().await.map_err(io_error)?;
        Ok(Reply {
            status: head.status.as_u16(),
            headers: head.headers,
            trailers: body.trailers().cloned(),
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        })
    }

    /// Waits at most `within` for the connection to end: `Ok` when it
    /// closed cleanly (for HTTP/2: after the server's GOAWAY), or when it
    /// was already seen to end.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] when it is still open, or the error it
    /// ended with.
    pub async fn closed(&mut self, within: Duration) -> io::Result<()> {
        let Some(driver) = self.driver.as_mut() else {
            return Ok(());
        };
        let ended = tokio::time::timeout(within, driver)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the connection is open"))?;
        self.driver = None;
        ended.map_err(io::Error::other)?.map_err(io_error)
    }
}

/// A stream to the gateway: TLS or plain TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A TCP connection to `addr`, inside TLS with `config` (offering the ALPN
/// protocol of `version`) when given.
async fn connect(
    addr: SocketAddr,
    config: Option<Arc<ClientConfig>>,
    version: Http,
) -> io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let Some(config) = config else {
        return Ok(Box::new(tcp));
    };
    let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
    let connector = TlsConnector::from(with_alpn(&config, version));
    Ok(Box::new(connector.connect(name, tcp).await?))
}

/// hyper's error as the I/O error under it when there is one (a TLS alert
/// from the server, say), so the message says what the server did.
fn io_error(error: hyper::Error) -> io::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io::Error::new(io.kind(), io.to_string());
        }
        cause = e.source();
    }
    io::Error::other(error)
}

/// Runs `io` for at most `within`, naming `what` in its error.
async fn bounded<T>(
    within: Duration,
    what: String,
    io: impl Future<Output = io::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(within, io).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::io(what, e)),
        Err(_) => Err(Error::Timeout {
            what,
            within,
            detail: String::new(),
        }),
    }
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
    fn pem_helpers_read_the_issued_leaf_and_every_ca_of_a_bundle() {
        let (a, b) = (TestCa::new("a"), TestCa::new("b"));
        let leaf = a.server();
        let fingerprint = fingerprint_of_pem(leaf.cert_pem.as_bytes()).unwrap();
        assert_eq!(fingerprint, leaf.fingerprint);
        assert!(fingerprint_of_pem(b"not a certificate").is_err());
        let bundle = format!("{}{}", a.cert_pem(), b.cert_pem());
        let config = client_config(&bundle, None).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(client_config("", None).is_err());
    }
}
