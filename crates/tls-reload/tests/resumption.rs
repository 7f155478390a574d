//! TLS 1.3 resumption across rotations, and none across trust changes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::sync::Arc;

use common::*;
use rustls::HandshakeKind;
use rustls::client::Resumption;
use tls_reload::testing::{TestCa, client_config, handshake};
use tls_reload::{ClientAuth, ReloadableAcceptor, Trigger};

fn resuming(config: Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut config = (*config).clone();
    config.resumption = Resumption::in_memory_sessions(64);
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_across_a_certificate_only_rotation() {
    let mut fx = Fixture::new();
    let acceptor = fx.builder().build().unwrap();
    let addr = listen(&acceptor).await;
    let client = resuming(fx.client());

    let first = handshake(addr, client.clone()).await.unwrap();
    assert_eq!(first.kind, Some(HandshakeKind::Full));
    let again = handshake(addr, client.clone()).await.unwrap();
    assert_eq!(
        again.kind,
        Some(HandshakeKind::Resumed),
        "resumption works at all"
    );

    let new = fx.rotate();
    let reloaded = acceptor.reload_now(Trigger::Manual).await.unwrap();
    assert_eq!(reloaded.generation(), 2);
    let after = handshake(addr, client.clone()).await.unwrap();
    assert_eq!(
        after.kind,
        Some(HandshakeKind::Resumed),
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
    let client = resuming(client_config(
        fx.server_ca.cert_pem(),
        Some(&clients.client("alice")),
    ));

    assert_eq!(
        handshake(addr, client.clone()).await.unwrap().kind,
        Some(HandshakeKind::Full)
    );
    assert_eq!(
        handshake(addr, client.clone()).await.unwrap().kind,
        Some(HandshakeKind::Resumed)
    );

    // Alice's CA stays trusted; only the bundle changes.
    let bundle = format!("{}{}", clients.cert_pem(), more_clients.cert_pem());
    fx.publish_client_ca(bundle);
    match acceptor.reload_now(Trigger::Manual).await.unwrap() {
        tls_reload::ReloadOutcome::Reloaded(r) => assert!(r.trust_changed),
        other => panic!("expected a reload, got {other:?}"),
    }
    let after = handshake(addr, client.clone()).await.unwrap();
    assert_eq!(
        after.kind,
        Some(HandshakeKind::Full),
        "no resumption across a trust change"
    );
    // And the new trust's sessions resume again.
    assert_eq!(
        handshake(addr, client).await.unwrap().kind,
        Some(HandshakeKind::Resumed)
    );
}
