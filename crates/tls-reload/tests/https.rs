//! The tower connector for real: hyper-util's legacy `Client` and tonic's
//! `Endpoint::connect_with_connector`, against hyper and tonic servers on a
//! `ReloadableAcceptor` that requires client certificates.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::ServerName;
use tls_reload::testing::serve_with;
use tls_reload::{
    Fingerprint, HttpsConnectError, HttpsConnector, ReloadableAcceptor, ReloadableConnector,
    Trigger,
};
use tokio::task::JoinHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;

/// Serves HTTP/1.1 and HTTP/2 on `acceptor`: every request is answered
/// with the fingerprint of the client certificate of its connection.
async fn http_server(acceptor: ReloadableAcceptor) -> (SocketAddr, JoinHandle<()>) {
    serve_with(acceptor, |tls| async move {
        let client = client_cert_of(tls.get_ref().1);
        let service = service_fn(move |_req: Request<Incoming>| {
            let body = Full::new(Bytes::from(client.clone()));
            async move { Ok::<_, Infallible>(Response::new(body)) }
        });
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), service)
            .await;
    })
    .await
}

/// The URL of the server at `addr`, by IP address.
fn url(addr: SocketAddr) -> http::Uri {
    format!("https://127.0.0.1:{}/", addr.port())
        .parse()
        .unwrap()
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// One GET through a fresh client: the HTTP version and the body.
async fn get(connector: HttpsConnector, addr: SocketAddr) -> (http::Version, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let response = client.get(url(addr)).await.unwrap();
    assert_eq!(response.status(), 200);
    let version = response.version();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn hyper_util_client_speaks_h2_or_http1_as_negotiated_and_presents_the_rotated_identity() {
    let fx = Fixture::new();
    let acceptor = fx.mtls_builder().alpn(["h2", "http/1.1"]).build().unwrap();
    let (addr, _server) = http_server(acceptor).await;

    let h2 = ReloadableConnector::builder(fx.client_files())
        .alpn(["h2"])
        .build()
        .unwrap();
    let connector = HttpsConnector::new(h2.clone()).server_name(localhost());
    let (version, body) = get(connector.clone(), addr).await;
    // HTTP/2 only because the connection reported the negotiated h2.
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(body, fx.client.fingerprint);

    let http1 = ReloadableConnector::builder(fx.client_files())
        .alpn(["http/1.1"])
        .build()
        .unwrap();
    let (version, _) = get(HttpsConnector::new(http1).server_name(localhost()), addr).await;
    assert_eq!(version, http::Version::HTTP_11);

    let renewed = fx.client_ca.client("client");
    fx.publish_client(&renewed, fx.server_ca.cert_pem());
    h2.reload_now(Trigger::Manual).await.unwrap();
    let (_, body) = get(connector, addr).await;
    assert_eq!(body, renewed.fingerprint);
}

#[tokio::test]
async fn a_connection_tells_its_server_certificate_and_generation() {
    let fx = Fixture::new();
    let (addr, _server) = http_server(fx.mtls_builder().build().unwrap()).await;
    let connector = fx.connector();
    // The URI's host, an IP address, is verified against the leaf's SANs.
    let uri = url(addr);
    let https = HttpsConnector::new(connector.clone());
    let conn = https.clone().oneshot(uri.clone()).await.unwrap();
    assert_eq!(conn.generation(), 1);
    assert_eq!(
        conn.server_fingerprint().unwrap().to_string(),
        fx.leaf.fingerprint
    );
    assert_eq!(
        Fingerprint::of(conn.server_certificate().unwrap()).to_string(),
        fx.leaf.fingerprint
    );

    fx.publish_client(&fx.client_ca.client("client"), fx.server_ca.cert_pem());
    connector.reload_now(Trigger::Manual).await.unwrap();
    assert_eq!(https.clone().oneshot(uri).await.unwrap().generation(), 2);

    // A name the server's certificate does not cover: a typed error naming
    // the host.
    let wrong = HttpsConnector::new(connector)
        .server_name(ServerName::try_from("elsewhere.example").unwrap());
    let err = wrong.oneshot(url(addr)).await.unwrap_err();
    assert!(matches!(err, HttpsConnectError::Handshake { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn tonic_channel_calls_a_tonic_server_on_a_reloadable_acceptor() {
    let fx = Fixture::new();
    let acceptor = fx.mtls_builder().alpn(["h2"]).build().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let routes = tonic::service::Routes::new(health).prepare();
    let (addr, _server) = serve_with(acceptor, move |tls| {
        let routes = routes.clone();
        async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(routes))
                .await;
        }
    })
    .await;

    let connector = ReloadableConnector::builder(fx.client_files())
        .alpn(["h2"])
        .build()
        .unwrap();
    // `http`: tonic refuses `https` without its own TLS config when one of
    // its TLS features is on in the build (the workspace enables one); the
    // connector does TLS whatever the scheme.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", addr.port()))
            .unwrap()
            .connect_with_connector(HttpsConnector::new(connector))
            .await
            .unwrap();
    // The server requires a client certificate: the call only succeeds
    // with the connector's.
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn a_uri_without_a_host_is_a_typed_error() {
    let fx = Fixture::new();
    let connector = fx.connector();
    let err = HttpsConnector::new(connector)
        .oneshot(http::Uri::from_static("/relative"))
        .await
        .unwrap_err();
    assert!(matches!(err, HttpsConnectError::NoHost { .. }), "{err}");
}
