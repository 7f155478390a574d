//! TLS 1.3 resumption across rotations, and none across trust changes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use rustls::ClientConfig;
use rustls::HandshakeKind::{Full, Resumed};
use tls_reload::testing::{TestCa, client_config, handshake};
use tls_reload::{ClientAuth, ReloadOutcome, ReloadableAcceptor, Trigger};

/// `config` with a session cache of its own.
fn resuming(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = (*config).clone();
    config.resumption = rustls::client::Resumption::in_memory_sessions(64);
    Arc::new(config)
}

/// Whether each of `n` handshakes in a row was full or resumed.
async fn kinds(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    n: usize,
) -> Vec<rustls::HandshakeKind> {
    let mut kinds = Vec::new();
    for _ in 0..n {
        kinds.push(handshake(addr, client.clone()).await.unwrap().kind.unwrap());
    }
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_across_a_certificate_only_rotation() {
    let mut fx = Fixture::new();
    let acceptor = fx.builder().build().unwrap();
    let addr = listen(&acceptor).await;
    let client = resuming(fx.client());
    assert_eq!(
        kinds(addr, &client, 2).await,
        [Full, Resumed],
        "resumption works at all"
    );

    let new = fx.rotate();
    let reloaded = acceptor.reload_now(Trigger::Manual).await.unwrap();
    assert_eq!(reloaded.generation(), 2);
    assert_eq!(
        kinds(addr, &client, 1).await,
        [Resumed],
        "resumed across the rotation"
    );
    // A new client sees the new certificate.
    assert_eq!(served(addr, &fx.client()).await, new.fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_do_not_resume_after_the_client_ca_changes() {
    let fx = Fixture::new();
    let (clients, more_clients) = (TestCa::new("clients"), TestCa::new("more clients"));
    fx.publish_client_ca(clients.cert_pem());
    let files = fx.mtls_files(ClientAuth::Required);
    let acceptor = fast(ReloadableAcceptor::builder(files)).build().unwrap();
    let addr = listen(&acceptor).await;
    let alice = clients.client("alice");
    let client = resuming(client_config(fx.server_ca.cert_pem(), Some(&alice)));
    assert_eq!(kinds(addr, &client, 2).await, [Full, Resumed]);

    // Alice's CA stays trusted; only the bundle changes.
    fx.publish_client_ca(format!("{}{}", clients.cert_pem(), more_clients.cert_pem()));
    let outcome = acceptor.reload_now(Trigger::Manual).await.unwrap();
    assert!(matches!(outcome, ReloadOutcome::Reloaded(r) if r.trust_changed));
    // No resumption across a trust change; the new trust's sessions resume.
    assert_eq!(kinds(addr, &client, 2).await, [Full, Resumed]);
}
