//! Test support for the gateway: clients for its TLS port (gRPC and HTTP/1.1
//! and HTTP/2), and an in-process gateway on loopback.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openshell_server::{Config, Gateway, GatewayHandle};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tls_reload::TlsFiles;
use tls_reload::testing::{Leaf, SecretVolumes, TestCa, client_config};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

/// A client config for the gateway with the given ALPN.
pub fn tls(ca: &TestCa, identity: Option<&Leaf>, alpn: &[&str]) -> Arc<ClientConfig> {
    let mut c = (*client_config(ca.cert_pem(), identity)).clone();
    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(c)
}

/// A gRPC channel over TLS (HTTP/2) to `addr`, verifying against `config`.
pub async fn grpc(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = TlsConnector::from(config);
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

/// A TLS connection to `addr` offering the one ALPN protocol `alpn`.
pub async fn connect(addr: SocketAddr, ca: &TestCa, alpn: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(tls(ca, None, &[alpn]))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// `GET path` over plaintext HTTP/1.1 (the health port).
pub async fn get_plain(addr: SocketAddr, path: &str) -> Reply {
    let req = http::Request::get(format!("http://localhost{path}"))
        .body(Full::default())
        .unwrap();
    send(TcpStream::connect(addr).await.unwrap(), Http::One, req).await
}

/// HTTP version to use in [`get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    One,
    Two,
}

/// `GET path` over TLS with the given HTTP version; returns status,
/// content type and body.
pub async fn get(
    addr: SocketAddr,
    ca: &TestCa,
    version: Http,
    path: &str,
) -> (u16, String, String) {
    let alpn = match version {
        Http::One => "http/1.1",
        Http::Two => "h2",
    };
    let tls = connect(addr, ca, alpn).await;
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(Full::default())
        .unwrap();
    let reply = send(tls, version, req).await;
    let ct = reply
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (reply.status, ct, reply.body)
}

/// What a request got back.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub trailers: Option<http::HeaderMap>,
    pub body: String,
}

impl Reply {
    /// The `grpc-status` in the headers or trailers, if any.
    pub fn grpc_status(&self) -> Option<String> {
        self.trailers
            .iter()
            .chain(std::iter::once(&self.headers))
            .find_map(|h| h.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// Sends `req` on a new HTTP/1.1 or HTTP/2 (prior knowledge) connection
/// over `io`.
pub async fn send<IO>(io: IO, version: Http, req: http::Request<Full<Bytes>>) -> Reply
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let resp = match version {
        Http::One => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        }
        Http::Two => {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    Reply {
        status,
        headers,
        trailers,
        body,
    }
}

/// The server and client-CA Secret volumes, kubelet-style.
pub type Pki = SecretVolumes;

/// A config serving `files` with test timings on an ephemeral loopback port.
pub fn test_config(files: TlsFiles) -> Config {
    let mut config = Config::with_tls("127.0.0.1:0".parse().unwrap(), files);
    if let openshell_server::TlsMode::Files {
        reload: Some(r), ..
    } = &mut config.tls
    {
        r.debounce = Duration::from_millis(50);
    }
    config.shutdown_grace = Duration::from_secs(2);
    config
}

/// A gateway serving `config` in this process until stopped or dropped.
pub async fn start(config: Config) -> GatewayHandle {
    Gateway::spawn(config).await.unwrap()
}
