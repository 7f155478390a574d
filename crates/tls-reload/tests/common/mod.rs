//! What the integration tests add to `tls_reload::testing`: test-friendly
//! timings, and waits for events and for what a fresh client is served.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

pub use tls_reload::testing::SecretVolumes as Fixture;
use tls_reload::testing::{client_config, eventually, handshake, serve};
use tls_reload::{
    Builder, ClientAuth, ConnectorBuilder, Fingerprint, ReloadEvent, ReloadFailure,
    ReloadableAcceptor, ReloadableConnector, Reloaded, Subscription,
};

/// Generous bound for anything that should happen "soon": the suite runs
/// on two shared cores.
pub const SOON: Duration = Duration::from_secs(10);

/// How these tests use the volumes.
pub trait FixtureExt {
    /// A builder for the server volume with [`fast`] timings.
    fn builder(&self) -> Builder;
    /// [`builder`](Self::builder) for the server volume with client
    /// certificates of `client_ca` required.
    fn mtls_builder(&self) -> Builder;
    /// A client trusting the server CA, without a certificate.
    fn client(&self) -> Arc<ClientConfig>;
    /// A builder for the client volume with [`fast`] timings.
    fn connector_builder(&self) -> ConnectorBuilder;
    /// A connector for the client volume with the default settings, without
    /// a watcher.
    fn connector(&self) -> ReloadableConnector;
}

impl FixtureExt for Fixture {
    fn builder(&self) -> Builder {
        fast(ReloadableAcceptor::builder(self.files()))
    }

    fn mtls_builder(&self) -> Builder {
        fast(ReloadableAcceptor::builder(
            self.mtls_files(ClientAuth::Required),
        ))
    }

    fn client(&self) -> Arc<ClientConfig> {
        client_config(self.server_ca.cert_pem(), None)
    }

    fn connector_builder(&self) -> ConnectorBuilder {
        fast(ReloadableConnector::builder(self.client_files()))
    }

    fn connector(&self) -> ReloadableConnector {
        ReloadableConnector::builder(self.client_files())
            .build()
            .unwrap()
    }
}

/// Short debounce and backoff; a poll too slow to mask missing events.
/// For an acceptor's builder and a connector's alike.
pub fn fast<F>(builder: Builder<F>) -> Builder<F> {
    builder
        .debounce(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500))
        .poll_interval(Duration::from_secs(60))
        .retry_backoff(Duration::from_millis(50))
}

/// Serves `acceptor` on loopback, with the library's logs in the output of
/// a failed test.
pub async fn listen(acceptor: &ReloadableAcceptor) -> SocketAddr {
    init_logs();
    serve(acceptor.clone()).await.0
}

/// Puts the library's logs in the output of a failed test.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tls_reload=debug")
        .with_test_writer()
        .try_init();
}

/// Fingerprint of the client certificate a server connection verified,
/// `none` without one.
pub fn client_cert_of(conn: &rustls::ServerConnection) -> String {
    let seen = conn.peer_certificates().and_then(|c| c.first());
    seen.map_or("none".to_owned(), |c| Fingerprint::of(c).to_string())
}

/// Fingerprint of the certificate a fresh client is served.
pub async fn served(addr: SocketAddr, client: &Arc<ClientConfig>) -> String {
    handshake(addr, client.clone()).await.unwrap().fingerprint
}

/// Waits until a fresh client is served `fingerprint`; every handshake on
/// the way must succeed.
pub async fn wait_served(addr: SocketAddr, client: &Arc<ClientConfig>, fingerprint: &str) {
    eventually(SOON, &format!("serving {fingerprint}"), || async {
        let got = served(addr, client).await;
        if got == fingerprint { Ok(()) } else { Err(got) }
    })
    .await;
}

/// The next event, failing the test if none arrives soon.
pub async fn next_event(sub: &mut Subscription) -> ReloadEvent {
    tokio::time::timeout(SOON, sub.recv())
        .await
        .expect("no reload event in time")
        .expect("subscription closed")
}

/// The next event, which must be a reload.
pub async fn next_reloaded(sub: &mut Subscription) -> Arc<Reloaded> {
    match next_event(sub).await {
        ReloadEvent::Reloaded(r) => r,
        other => panic!("expected a reload, got {other:?}"),
    }
}

/// The next event, which must be a failure.
pub async fn next_failed(sub: &mut Subscription) -> Arc<ReloadFailure> {
    match next_event(sub).await {
        ReloadEvent::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The reload to `fingerprint`, past the failures (`allowed` checks each)
/// and reloads to other content on the way: a key can land a debounce
/// before its certificate on a loaded machine.
pub async fn reloaded_to(
    sub: &mut Subscription,
    fingerprint: &str,
    allowed: fn(&tls_reload::Error) -> bool,
) -> Arc<Reloaded> {
    loop {
        match next_event(sub).await {
            ReloadEvent::Reloaded(r) if r.current.fingerprint_sha256 == fingerprint => return r,
            ReloadEvent::Reloaded(_) => {}
            ReloadEvent::Failed(f) => assert!(allowed(&f.error), "{}", f.error),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Asserts that no event arrives within `quiet`.
pub async fn no_event(sub: &mut Subscription, quiet: Duration) {
    if let Ok(Some(ev)) = tokio::time::timeout(quiet, sub.recv()).await {
        panic!("unexpected event: {ev:?}");
    }
}
