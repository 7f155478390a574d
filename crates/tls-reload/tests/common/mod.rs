//! Shared fixtures for the integration tests: a Secret volume written the
//! way kubelet writes it, a CA, and helpers that observe the server only
//! through real TLS handshakes over loopback.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tempfile::TempDir;
use tls_reload::testing::{AtomicWriter, Leaf, TestCa, client_config, handshake, serve};
use tls_reload::{Builder, ReloadEvent, ReloadableAcceptor, Subscription, TlsFiles};

/// Generous bound for anything that should happen "soon": the suite runs
/// on two shared cores.
pub const SOON: Duration = Duration::from_secs(10);

/// A Secret volume holding a server certificate.
pub struct Fixture {
    pub tmp: TempDir,
    pub volume: AtomicWriter,
    pub ca: TestCa,
    pub leaf: Leaf,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let volume = AtomicWriter::new(tmp.path().join("server")).unwrap();
        let ca = TestCa::new("server CA");
        let leaf = ca.server();
        let fixture = Self {
            tmp,
            volume,
            ca,
            leaf,
        };
        fixture.publish(&fixture.leaf);
        fixture
    }

    /// Writes `leaf` as `tls.crt`/`tls.key`/`ca.crt` through the kubelet
    /// sequence.
    pub fn publish(&self, leaf: &Leaf) {
        self.volume
            .write(&[
                ("tls.crt", leaf.cert_pem.as_bytes()),
                ("tls.key", leaf.key_pem.as_bytes()),
                ("ca.crt", self.ca.cert_pem().as_bytes()),
            ])
            .unwrap();
    }

    /// Issues a new leaf (new key) and publishes it.
    pub fn rotate(&mut self) -> Leaf {
        let leaf = self.ca.server();
        self.publish(&leaf);
        self.leaf = leaf.clone();
        leaf
    }

    pub fn files(&self) -> TlsFiles {
        TlsFiles::new(self.volume.path("tls.crt"), self.volume.path("tls.key"))
    }

    /// A builder with test-friendly timings: short debounce, a poll too slow
    /// to mask missing events.
    pub fn builder(&self) -> Builder {
        fast(ReloadableAcceptor::builder(self.files()))
    }

    pub fn client(&self) -> Arc<ClientConfig> {
        client_config(self.ca.cert_pem(), None)
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
