//! A tower `Service<Uri>` over a [`ReloadableConnector`], for hyper-util's
//! legacy `Client` and tonic's `Endpoint::connect_with_connector`: TCP to
//! the URI's host and port, then the handshake with the config in use.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::connector::ReloadableConnector;
use crate::fingerprint::Fingerprint;

/// The port connected to when the URI gives none, whatever its scheme:
/// this connector always speaks TLS.
const DEFAULT_PORT: u16 = 443;

/// Connects to a URI's host and port over TCP, then performs the TLS
/// handshake with the [`ReloadableConnector`]'s config in use at that
/// moment: a `tower_service::Service<http::Uri>` for
/// `hyper_util::client::legacy::Client` and for tonic's
/// `Endpoint::connect_with_connector` (with tonic's own TLS features off).
///
/// The server's certificate is verified for the URI's host unless
/// [`server_name`](Self::server_name) overrides it. A URI without a port
/// connects to 443, whatever its scheme.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tls_reload::{ClientFiles, HttpsConnector, ReloadableConnector};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let (connector, _watcher) = ReloadableConnector::builder(
///     ClientFiles::new("/etc/gateway-ca/ca.crt")
///         .identity("/etc/client-tls/tls.crt", "/etc/client-tls/tls.key"),
/// )
/// .alpn(["h2"])
/// .start()?;
/// let channel = tonic::transport::Endpoint::from_static("https://gateway.example:8443")
///     .connect_with_connector(HttpsConnector::new(connector))
///     .await?;
/// # drop(channel);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HttpsConnector {
    connector: ReloadableConnector,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for HttpsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsConnector")
            .field("connector", &self.connector)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl HttpsConnector {
    /// Connects with `connector`, verifying each server for its URI's host.
    pub fn new(connector: ReloadableConnector) -> Self {
        Self {
            connector,
            server_name: None,
        }
    }

    /// Verifies every server for `name` (and sends it as SNI) whatever the
    /// URI's host: to connect to `https://127.0.0.1:8443` and verify
    /// `gateway.example`, say.
    pub fn server_name(mut self, name: ServerName<'static>) -> Self {
        self.server_name = Some(name);
        self
    }

    /// The connector whose config each connection uses.
    pub fn connector(&self) -> &ReloadableConnector {
        &self.connector
    }
}

/// Why [`HttpsConnector`] could not connect, naming the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsConnectError {
    /// The URI has no host to connect to.
    #[error("the URI {uri} has no host")]
    NoHost {
        /// The URI as given.
        uri: String,
    },
    /// The host is neither a DNS name nor an IP address, so no server
    /// certificate can be verified for it.
    #[error("{host} is not a valid TLS server name")]
    InvalidServerName {
        /// The URI's host.
        host: String,
    },
    /// The TCP connection failed.
    #[error("connecting to {host}:{port}: {source}")]
    Connect {
        /// The URI's host.
        host: String,
        /// The port.
        port: u16,
        /// The operating system's error.
        source: io::Error,
    },
    /// The TLS handshake failed (the server's certificate was refused, or
    /// the server refused the client's).
    #[error("TLS handshake with {host}:{port}: {source}")]
    Handshake {
        /// The URI's host.
        host: String,
        /// The port.
        port: u16,
        /// The TLS error, as an I/O error.
        source: io::Error,
    },
}

impl tower_service::Service<Uri> for HttpsConnector {
    type Response = TlsConnection;
    type Error = HttpsConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConnection, HttpsConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.connector.clone();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let Some(host) = uri.host() else {
                return Err(HttpsConnectError::NoHost {
                    uri: uri.to_string(),
                });
            };
            // An IPv6 literal keeps its brackets in a URI.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(DEFAULT_PORT);
            let server_name = match server_name {
                Some(name) => name,
                None => ServerName::try_from(host.clone())
                    .map_err(|_| HttpsConnectError::InvalidServerName { host: host.clone() })?,
            };
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|source| HttpsConnectError::Connect {
                    host: host.clone(),
                    port,
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let (config, generation) = connector.snapshot();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await
                .map_err(|source| HttpsConnectError::Handshake { host, port, source })?;
            Ok(TlsConnection {
                io: TokioIo::new(tls),
                generation,
            })
        })
    }
}

/// A TLS connection made by [`HttpsConnector`]: hyper's `Read` and
/// `Write`, and hyper-util's `Connection`, which reports HTTP/2 when the
/// server chose `h2` by ALPN.
pub struct TlsConnection {
    io: TokioIo<TlsStream<TcpStream>>,
    generation: u64,
}

impl fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnection")
            .field("generation", &self.generation)
            .field("server_fingerprint", &self.server_fingerprint())
            .finish_non_exhaustive()
    }
}

impl TlsConnection {
    /// The leaf certificate the server presented.
    pub fn server_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.tls().1.peer_certificates()?.first()
    }

    /// The SHA-256 fingerprint of the leaf the server presented.
    pub fn server_fingerprint(&self) -> Option<Fingerprint> {
        self.server_certificate().map(|der| Fingerprint::of(der))
    }

    /// The [generation](ReloadableConnector::generation) of the connector
    /// config this connection was made with.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The TLS stream, for what rustls knows of the connection (ALPN,
    /// handshake kind, protocol version).
    pub fn get_ref(&self) -> &TlsStream<TcpStream> {
        self.io.inner()
    }

    fn tls(&self) -> (&TcpStream, &rustls::ClientConnection) {
        self.io.inner().get_ref()
    }
}

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.tls().1.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
