//! Shared fixtures for the integration tests: a Secret volume written the
//! way kubelet writes it, a CA, and helpers that observe the server only
//! through real TLS handshakes over loopback.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use tls_reload::testing::{SecretVolumes, client_config, handshake, serve};
use tls_reload::{Builder, ReloadEvent, ReloadableAcceptor, Subscription};

/// Generous bound for anything that should happen "soon": the suite runs
/// on two shared cores.
pub const SOON: Duration = Duration::from_secs(10);

/// The server (and client-CA) Secret volumes, kubelet-style.
pub type Fixture = SecretVolumes;

/// How these tests use the volumes.
pub trait FixtureExt {
    /// A builder for the server volume with test-friendly timings: short
    /// debounce, a poll too slow to mask missing events.
    fn builder(&self) -> Builder;
    /// A client trusting the server CA, without a certificate.
    fn client(&self) -> Arc<ClientConfig>;
}

impl FixtureExt for Fixture {
    fn builder(&self) -> Builder {
        fast(ReloadableAcceptor::builder(self.files()))
    }

    fn client(&self) -> Arc<ClientConfig> {
        client_config(self.server_ca.cert_pem(), None)
    }
}

pub fn fast(builder: Builder) -> Builder {
    builder
        .debounce(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500))
        .poll_interval(Duration::from_secs(60))
        .retry_backoff(Duration::from_millis(50))
}

/// Sends the library's logs to the test output, shown when a test fails.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tls_reload=debug")
        .with_test_writer()
        .try_init();
}

/// Serves `acceptor` on loopback.
pub async fn listen(acceptor: &ReloadableAcceptor) -> SocketAddr {
    init_logs();
    serve(acceptor.clone()).await.0
}

/// Fingerprint of the certificate a fresh client is served.
pub async fn served(addr: SocketAddr, client: &Arc<ClientConfig>) -> String {
    handshake(addr, client.clone()).await.unwrap().fingerprint
}

/// Waits until a fresh handshake is served `fingerprint`; returns how long
/// that took. Every handshake on the way must succeed.
pub async fn wait_served(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    fingerprint: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = served(addr, client).await;
        if got == fingerprint {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < SOON,
            "still served {got} after {SOON:?}, expected {fingerprint}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next event, failing the test if none arrives soon.
pub async fn next_event(sub: &mut Subscription) -> ReloadEvent {
    tokio::time::timeout(SOON, sub.recv())
        .await
        .expect("no reload event in time")
        .expect("subscription closed")
}

/// Asserts that no event arrives within `quiet`.
pub async fn no_event(sub: &mut Subscription, quiet: Duration) {
    if let Ok(Some(ev)) = tokio::time::timeout(quiet, sub.recv()).await {
        panic!("unexpected event: {ev:?}");
    }
}

pub fn expect_reloaded(ev: ReloadEvent) -> Arc<tls_reload::Reloaded> {
    match ev {
        ReloadEvent::Reloaded(r) => r,
        other => panic!("expected a reload, got {other:?}"),
    }
}

pub fn expect_failed(ev: ReloadEvent) -> Arc<tls_reload::ReloadFailure> {
    match ev {
        ReloadEvent::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}
