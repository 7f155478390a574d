//! Connections are bounded on both ports, and shutdowns are clean: first
//! request deadlines, connection caps, the shutdown delay and the drain's
//! grace. In process, on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TIMEOUT: Duration = Duration::from_millis(500);

fn config(pki: &Pki) -> openshell_server::Config {
    let mut config = test_config(pki.files());
    config.handshake_timeout = TIMEOUT;
    config.health_bind = Some("127.0.0.1:0".parse().unwrap());
    config
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
    let pki = Pki::new();
    let gw = start(config(&pki)).await;
    let health = gw.health_addr().unwrap();
    let limit = TIMEOUT * 4;

    // Each connection is timed from just before it was opened: the
    // server's deadline starts at its accept or handshake, which is later.
    // The plaintext health port: nothing at all, then half a request line.
    let t = Instant::now();
    let silent = (TcpStream::connect(health).await.unwrap(), t);
    let t = Instant::now();
    let mut half = TcpStream::connect(health).await.unwrap();
    half.write_all(b"GET /hea").await.unwrap();
    let half = (half, t);
    // The TLS port after a completed handshake: nothing (h2 and
    // http/1.1), and only the first byte of the HTTP/2 preface.
    let t = Instant::now();
    let h2_silent = (connect(gw.addr(), &pki.server_ca, "h2").await, t);
    let t = Instant::now();
    let h1_silent = (connect(gw.addr(), &pki.server_ca, "http/1.1").await, t);
    let t = Instant::now();
    let mut h2_p = connect(gw.addr(), &pki.server_ca, "h2").await;
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
    let mut h2 = HealthClient::new(
        grpc(gw.addr(), tls(&pki.server_ca, None, &["h2"]))
            .await
            .unwrap(),
    );
    let req = || HealthCheckRequest {
        service: String::new(),
    };
    h2.check(req()).await.unwrap();
    tokio::time::sleep(TIMEOUT * 2).await;
    assert_eq!(
        h2.check(req()).await.unwrap().into_inner().status(),
        ServingStatus::Serving
    );
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_port_caps_its_connections_counts_rejections_and_keeps_answering() {
    let pki = Pki::new();
    let mut cfg = config(&pki);
    cfg.health_max_connections = 4;
    cfg.handshake_timeout = Duration::from_secs(5);
    let gw = start(cfg).await;
    let health = gw.health_addr().unwrap();

    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(health).await.unwrap());
    }
    // Let the accept loop take all four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let extra = (TcpStream::connect(health).await.unwrap(), Instant::now());
    let took = closed_within(extra, Duration::from_secs(4)).await;
    assert!(took.is_some(), "a connection over the cap was kept open");

    let metrics = get(gw.addr(), &pki.server_ca, Http::One, "/metrics")
        .await
        .2;
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert!(sample(r#"openshell_connections_rejected_total{port="health"}"#) >= 1.0);
    assert_eq!(
        sample(r#"openshell_connections_rejected_total{port="main"}"#),
        0.0
    );
    assert_eq!(sample(r#"openshell_connections_open{port="health"}"#), 4.0);

    // Freed slots are usable again once the server has seen the closes.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = get(gw.addr(), &pki.server_ca, Http::One, "/metrics")
            .await
            .2;
        if page.contains("openshell_connections_open{port=\"health\"} 0\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health connections still open\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get_plain(health, "/healthz").await.status, 200);
    // The health port serves the probes only.
    assert_eq!(get_plain(health, "/metrics").await.status, 404);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_delay_keeps_accepting_while_readiness_fails() {
    let pki = Pki::new();
    let mut cfg = config(&pki);
    cfg.handshake_timeout = Duration::from_secs(5);
    cfg.shutdown_delay = Duration::from_secs(4);
    let gw = start(cfg).await;
    let (addr, health) = (gw.addr(), gw.health_addr().unwrap());
    assert_eq!(
        get(gw.addr(), &pki.server_ca, Http::Two, "/readyz").await.0,
        200
    );

    let start = Instant::now();
    gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Within the delay: new connections are served, readiness fails on
    // both ports, liveness does not.
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            get(gw.addr(), &pki.server_ca, Http::Two, "/readyz").await.0,
            503
        );
        assert_eq!(
            get(gw.addr(), &pki.server_ca, Http::One, "/healthz")
                .await
                .0,
            200
        );
        assert_eq!(get_plain(health, "/readyz").await.status, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then the listener closes and the gateway stops.
    tokio::time::timeout(Duration::from_secs(15), gw.stop())
        .await
        .expect("stopped after the delay and the drain")
        .unwrap();
    assert!(start.elapsed() >= Duration::from_secs(4));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_open_at_shutdown_gets_the_shutdown_grace_not_the_max_age_grace() {
    let pki = Pki::new();
    let mut cfg = config(&pki);
    cfg.handshake_timeout = Duration::from_secs(5);
    cfg.shutdown_grace = Duration::from_secs(4);
    cfg.max_connection_age_grace = Duration::from_millis(200);
    let gw = start(cfg).await;
    let channel = grpc(gw.addr(), tls(&pki.server_ca, None, &["h2"]))
        .await
        .unwrap();
    let mut stream = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    gw.begin_shutdown();
    // The stream learns of the shutdown...
    let next = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .expect("a status update")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    // ...and is still open well past the max-age grace.
    match tokio::time::timeout(Duration::from_millis(1500), stream.message()).await {
        Err(_) => {}
        Ok(end) => panic!("the stream ended within the shutdown grace: {end:?}"),
    }
    drop(stream);
    tokio::time::timeout(Duration::from_secs(6), gw.stop())
        .await
        .expect("stopped")
        .unwrap();
}
