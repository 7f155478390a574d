//! Connections are bounded on both ports, and shutdowns are clean: first
//! request deadlines, connection caps, the shutdown delay and the drain's
//! grace. In process, on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openshell_e2e::tls::Http;
use rustls::ClientConfig;
use tls_reload::testing::{SecretVolumes, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TIMEOUT: Duration = Duration::from_millis(500);

/// The in-process gateway with a health port and a first-request deadline
/// of `handshake_timeout`.
fn config(pki: &SecretVolumes, handshake_timeout: Duration) -> openshell_server::Config {
    let mut config = in_process(pki.files());
    config.handshake_timeout = handshake_timeout;
    config.health_bind = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// A gRPC health client over TLS as `client`.
async fn health(addr: SocketAddr, client: &Arc<ClientConfig>) -> HealthClient<Channel> {
    HealthClient::new(grpc(addr, client).await)
}

fn any_service() -> HealthCheckRequest {
    let service = String::new();
    HealthCheckRequest { service }
}

/// Reads until the peer closes; how long after `start` that was, or `None`
/// if it was still open `within` after `start`.
async fn closed_within<R: AsyncReadExt + Unpin>(
    (mut io, start): (R, Instant),
    within: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + within).into(), io.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            // HTTP/2 sends its SETTINGS first; keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_request_are_closed_on_both_ports() {
    let pki = SecretVolumes::new();
    let gw = spawn(config(&pki, TIMEOUT)).await;
    let (addr, health_port) = (gw.addr(), gw.health_addr().unwrap());
    let client = pki.client_as(None);
    let limit = TIMEOUT * 4;

    // Each connection is timed from just before it was opened: the
    // server's deadline starts at its accept or handshake, which is later.
    // The plaintext health port: nothing at all, then half a request line.
    let t = Instant::now();
    let silent = (TcpStream::connect(health_port).await.unwrap(), t);
    let t = Instant::now();
    let mut half = TcpStream::connect(health_port).await.unwrap();
    half.write_all(b"GET /hea").await.unwrap();
    let half = (half, t);
    // The TLS port after a completed handshake: nothing (h2 and
    // http/1.1), and only the first byte of the HTTP/2 preface.
    let t = Instant::now();
    let h2_silent = (tls_stream(addr, &client, Http::Two).await, t);
    let t = Instant::now();
    let h1_silent = (tls_stream(addr, &client, Http::One).await, t);
    let t = Instant::now();
    let mut h2_p = tls_stream(addr, &client, Http::Two).await;
    h2_p.write_all(b"P").await.unwrap();
    h2_p.flush().await.unwrap();
    let h2_p = (h2_p, t);

    let (a, b, c, d, e) = tokio::join!(
        closed_within(silent, limit),
        closed_within(half, limit),
        closed_within(h2_silent, limit),
        closed_within(h1_silent, limit),
        closed_within(h2_p, limit),
    );
    for (what, took) in [
        ("health port, silent", a),
        ("health port, half a request line", b),
        ("TLS h2, silent", c),
        ("TLS http/1.1, silent", d),
        ("TLS h2, only P", e),
    ] {
        let took = took.unwrap_or_else(|| panic!("{what}: still open after {limit:?}"));
        assert!(
            took >= TIMEOUT,
            "{what}: closed after {took:?}, before the timeout"
        );
    }

    // A connection that did send a request is not cut by that deadline.
    let mut h2 = health(addr, &client).await;
    h2.check(any_service()).await.unwrap();
    tokio::time::sleep(TIMEOUT * 2).await;
    let status = h2.check(any_service()).await.unwrap().into_inner().status();
    assert_eq!(status, ServingStatus::Serving);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_port_caps_its_connections_counts_rejections_and_keeps_answering() {
    let pki = SecretVolumes::new();
    let mut cfg = config(&pki, Duration::from_secs(5));
    cfg.health_max_connections = 4;
    let gw = spawn(cfg).await;
    let (addr, health_port) = (gw.addr(), gw.health_addr().unwrap());
    let client = pki.client_as(None);

    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(health_port).await.unwrap());
    }
    // Let the accept loop take all four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let extra = (
        TcpStream::connect(health_port).await.unwrap(),
        Instant::now(),
    );
    let took = closed_within(extra, Duration::from_secs(4)).await;
    assert!(took.is_some(), "a connection over the cap was kept open");

    let metrics = get_ok(addr, &client, "/metrics").await.body;
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert!(sample(r#"openshell_connections_rejected_total{port="health"}"#) >= 1.0);
    let rejected_main = sample(r#"openshell_connections_rejected_total{port="main"}"#);
    assert_eq!(rejected_main, 0.0);
    assert_eq!(sample(r#"openshell_connections_open{port="health"}"#), 4.0);

    // Freed slots are usable again once the server has seen the closes.
    drop(idle);
    eventually(Duration::from_secs(10), "no open health connection", || {
        let client = client.clone();
        async move {
            let page = get_ok(addr, &client, "/metrics").await.body;
            let closed = page.contains("openshell_connections_open{port=\"health\"} 0\n");
            closed.then_some(()).ok_or(page)
        }
    })
    .await;
    assert_eq!(get_plain(health_port, "/healthz").await.status, 200);
    // The health port serves the probes only.
    assert_eq!(get_plain(health_port, "/metrics").await.status, 404);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_delay_keeps_accepting_while_readiness_fails() {
    let pki = SecretVolumes::new();
    let mut cfg = config(&pki, Duration::from_secs(5));
    cfg.shutdown_delay = Duration::from_secs(4);
    let gw = spawn(cfg).await;
    let (addr, health_port) = (gw.addr(), gw.health_addr().unwrap());
    let client = pki.client_as(None);
    let status = |version, path| {
        let client = client.clone();
        async move { get_with(addr, &client, version, path).await.status }
    };
    assert_eq!(status(Http::Two, "/readyz").await, 200);

    let start = Instant::now();
    gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Within the delay: new connections are served, readiness fails on
    // both ports, liveness does not.
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(status(Http::Two, "/readyz").await, 503);
        assert_eq!(status(Http::One, "/healthz").await, 200);
        assert_eq!(get_plain(health_port, "/readyz").await.status, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then the listener closes and the gateway stops.
    let stopped = tokio::time::timeout(Duration::from_secs(15), gw.stop()).await;
    stopped
        .expect("stopped after the delay and the drain")
        .unwrap();
    assert!(start.elapsed() >= Duration::from_secs(4));
    let connect = TcpStream::connect(addr).await;
    assert!(connect.is_err(), "still accepting after the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_open_at_shutdown_gets_the_shutdown_grace_not_the_max_age_grace() {
    let pki = SecretVolumes::new();
    let mut cfg = config(&pki, Duration::from_secs(5));
    cfg.shutdown_grace = Duration::from_secs(4);
    cfg.max_connection_age_grace = Duration::from_millis(200);
    let gw = spawn(cfg).await;
    let mut health = health(gw.addr(), &pki.client_as(None)).await;
    let mut stream = health.watch(any_service()).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    gw.begin_shutdown();
    // The stream learns of the shutdown...
    let next = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
    let next = next.expect("a status update").unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    // ...and is still open well past the max-age grace.
    match tokio::time::timeout(Duration::from_millis(1500), stream.message()).await {
        Err(_) => {}
        Ok(end) => panic!("the stream ended within the shutdown grace: {end:?}"),
    }
    drop(stream);
    let stopped = tokio::time::timeout(Duration::from_secs(6), gw.stop()).await;
    stopped.expect("stopped").unwrap();
}
