//! The client side: a `ReloadableConnector` rotating its certificate and
//! trust from kubelet-style volumes, against servers on
//! `ReloadableAcceptor`s.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use tls_reload::testing::{RotationLoops, eventually, serve_with};
use tls_reload::{
    ClientFiles, Error, Fingerprint, ReloadEvent, ReloadOutcome, ReloadableAcceptor,
    ReloadableConnector, Trigger,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Serves `acceptor` on loopback: each connection is answered with the
/// fingerprint of the client certificate its handshake verified (`none`
/// without one) and closed.
async fn echo_client_cert(acceptor: ReloadableAcceptor) -> (SocketAddr, JoinHandle<()>) {
    init_logs();
    serve_with(acceptor, |mut tls| async move {
        let reply = client_cert_of(tls.get_ref().1);
        let _ = tls.write_all(reply.as_bytes()).await;
        let _ = tls.shutdown().await;
    })
    .await
}

/// What one connection through the connector saw.
#[derive(Debug)]
struct Seen {
    /// The client certificate the server verified, or `none`.
    client_cert: String,
    /// The server's leaf.
    server_cert: String,
    kind: Option<HandshakeKind>,
}

/// Connects to `addr` as `localhost` and reads the server's answer to the
/// end (so TLS 1.3 session tickets are received).
async fn connect(connector: &ReloadableConnector, addr: SocketAddr) -> io::Result<Seen> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply).await?;
    let conn = tls.get_ref().1;
    let leaf = conn.peer_certificates().and_then(|c| c.first()).unwrap();
    Ok(Seen {
        client_cert: reply,
        server_cert: Fingerprint::of(leaf).to_string(),
        kind: conn.handshake_kind(),
    })
}

/// The client certificate fingerprint the server saw, on a fresh
/// connection.
async fn presented(connector: &ReloadableConnector, addr: SocketAddr) -> String {
    connect(connector, addr).await.unwrap().client_cert
}

/// Waits until a fresh connection presents the client certificate
/// `fingerprint`; every connection on the way must succeed.
async fn wait_presented(
    connector: &ReloadableConnector,
    addr: SocketAddr,
    fingerprint: &str,
    what: &str,
) {
    eventually(SOON, what, || async {
        let got = presented(connector, addr).await;
        if got == fingerprint { Ok(()) } else { Err(got) }
    })
    .await;
}

/// Two volumes under two server CAs, and a server on each (`a` on the
/// first, `b` on the second), without client certificates.
async fn two_servers() -> (Fixture, Fixture, [(SocketAddr, JoinHandle<()>); 2]) {
    let (fx, other) = (Fixture::new(), Fixture::new());
    let a = echo_client_cert(fx.builder().build().unwrap()).await;
    let b = echo_client_cert(other.builder().build().unwrap()).await;
    (fx, other, [a, b])
}

/// The leaf of each server at `addrs`, connecting to each in turn; every
/// connection must succeed.
async fn server_certs<const N: usize>(
    connector: &ReloadableConnector,
    addrs: [SocketAddr; N],
) -> Vec<String> {
    let mut certs = Vec::new();
    for addr in addrs {
        certs.push(connect(connector, addr).await.unwrap().server_cert);
    }
    certs
}

/// Connects to `addr`, whose certificate the connector must refuse.
async fn assert_refused(connector: &ReloadableConnector, addr: SocketAddr) {
    let refused = connect(connector, addr).await.unwrap_err();
    assert!(
        refused.to_string().contains("invalid peer certificate"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_rotated_client_certificate_is_presented_on_the_next_connection() {
    let fx = Fixture::new();
    let (addr, _server) = echo_client_cert(fx.mtls_builder().build().unwrap()).await;
    let (connector, _watcher) = fx.connector_builder().start().unwrap();
    assert_eq!(presented(&connector, addr).await, fx.client.fingerprint);
    let status = connector.status();
    assert_eq!(status.generation, 1);
    assert_eq!(
        status.identity.unwrap().fingerprint_sha256.to_string(),
        fx.client.fingerprint
    );
    assert_eq!(
        status.trusted[0].fingerprint_sha256,
        Fingerprint::of(fx.server_ca.cert_der())
    );

    // Kubelet swaps the client's Secret volume; only the watcher sees it.
    let renewed = fx.client_ca.client("client");
    fx.publish_client(&renewed, fx.server_ca.cert_pem());
    wait_presented(
        &connector,
        addr,
        &renewed.fingerprint,
        "the renewed client certificate presented",
    )
    .await;
    let status = connector.status();
    assert_eq!(status.generation, 2);
    assert_eq!(status.reloads_succeeded, 1);
    assert_eq!(status.reloads_failed, 0);
}

#[tokio::test]
async fn a_change_is_announced_to_watchers_of_changes_and_to_subscribers() {
    let fx = Fixture::new();
    let (connector, _watcher) = fx.connector_builder().start().unwrap();
    let mut changes = connector.changes();
    assert_eq!(*changes.borrow_and_update(), 1);
    let mut events = connector.subscribe();

    let renewed = fx.client_ca.client("client");
    fx.publish_client(&renewed, fx.server_ca.cert_pem());
    tokio::time::timeout(SOON, changes.changed())
        .await
        .expect("no change in time")
        .unwrap();
    assert_eq!(*changes.borrow_and_update(), 2);
    match next_event(&mut events).await {
        ReloadEvent::ClientReloaded(r) => {
            assert_eq!(r.trigger, Trigger::Watch);
            assert_eq!(r.generation, 2);
            assert!(r.identity_changed && !r.trust_changed);
            let fp = |c: &Option<tls_reload::CertInfo>| {
                c.as_ref().unwrap().fingerprint_sha256.to_string()
            };
            assert_eq!(fp(&r.previous), fx.client.fingerprint);
            assert_eq!(fp(&r.current), renewed.fingerprint);
        }
        other => panic!("expected a client reload, got {other:?}"),
    }

    // Same bytes again (a kubelet resync): nothing changes, nothing is said.
    fx.publish_client(&renewed, fx.server_ca.cert_pem());
    let outcome = connector.reload_now(Trigger::Manual).await.unwrap();
    assert!(matches!(
        outcome,
        ReloadOutcome::Unchanged { generation: 2 }
    ));
    assert!(!changes.has_changed().unwrap());
    no_event(&mut events, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_trust_change_refuses_servers_of_the_removed_ca_and_accepts_the_added_one() {
    let (fx, other, [(a, _a), (b, _b)]) = two_servers().await;
    // A client without a certificate: only a trust bundle.
    let connector = ReloadableConnector::builder(ClientFiles::new(fx.client_volume.path("ca.crt")))
        .build()
        .unwrap();
    assert!(connector.status().identity.is_none());
    assert_eq!(connect(&connector, a).await.unwrap().client_cert, "none");
    assert_refused(&connector, b).await;

    fx.publish_client(&fx.client, other.server_ca.cert_pem());
    match connector.reload_now(Trigger::Api).await.unwrap() {
        ReloadOutcome::ClientReloaded(r) => {
            assert!(r.trust_changed && !r.identity_changed);
            assert!(r.current.is_none());
            assert_eq!(
                r.trusted[0].fingerprint_sha256,
                Fingerprint::of(other.server_ca.cert_der())
            );
        }
        other => panic!("{other:?}"),
    }
    assert_refused(&connector, a).await;
    assert_eq!(
        server_certs(&connector, [b]).await,
        [other.leaf.fingerprint.as_str()]
    );

    // Both CAs in one bundle: both servers pass.
    let both = format!("{}{}", fx.server_ca.cert_pem(), other.server_ca.cert_pem());
    fx.publish_client(&fx.client, both);
    connector.reload_now(Trigger::Api).await.unwrap();
    assert_eq!(connector.status().trusted.len(), 2);
    assert_eq!(
        server_certs(&connector, [a, b]).await,
        [fx.leaf.fingerprint.as_str(), &other.leaf.fingerprint]
    );
}

#[tokio::test]
async fn several_trust_bundle_files_are_trusted_together() {
    let (fx, other, [(a, _a), (b, _b)]) = two_servers().await;
    let connector = ReloadableConnector::builder(
        ClientFiles::new(fx.client_volume.path("ca.crt")).ca(other.server.path("ca.crt")),
    )
    .build()
    .unwrap();
    assert_eq!(connector.files().paths().count(), 2);
    assert_eq!(
        server_certs(&connector, [a, b]).await,
        [fx.leaf.fingerprint.as_str(), &other.leaf.fingerprint]
    );
}

#[tokio::test]
async fn no_session_resumes_across_an_identity_or_trust_change() {
    let fx = Fixture::new();
    let (addr, _server) = echo_client_cert(fx.mtls_builder().build().unwrap()).await;
    let connector = fx.connector();
    let first = connect(&connector, addr).await.unwrap();
    assert_eq!(first.kind, Some(HandshakeKind::Full));
    let second = connect(&connector, addr).await.unwrap();
    assert_eq!(second.kind, Some(HandshakeKind::Resumed));
    assert_eq!(second.client_cert, fx.client.fingerprint);

    // A new client certificate: the next handshake is a full one, showing
    // the new certificate; then that session resumes.
    let renewed = fx.client_ca.client("client");
    fx.publish_client(&renewed, fx.server_ca.cert_pem());
    connector.reload_now(Trigger::Manual).await.unwrap();
    let third = connect(&connector, addr).await.unwrap();
    assert_eq!(third.kind, Some(HandshakeKind::Full));
    assert_eq!(third.client_cert, renewed.fingerprint);
    let fourth = connect(&connector, addr).await.unwrap();
    assert_eq!(fourth.kind, Some(HandshakeKind::Resumed));

    // A trust change alone (one more CA) also starts from a full handshake.
    let extra = tls_reload::testing::TestCa::new("extra CA");
    let bundle = format!("{}{}", fx.server_ca.cert_pem(), extra.cert_pem());
    fx.publish_client(&renewed, bundle);
    connector.reload_now(Trigger::Manual).await.unwrap();
    assert_eq!(
        connect(&connector, addr).await.unwrap().kind,
        Some(HandshakeKind::Full)
    );
}

#[tokio::test]
async fn a_torn_or_mismatched_client_pair_is_never_presented() {
    let fx = Fixture::new();
    let (addr, _server) = echo_client_cert(fx.mtls_builder().build().unwrap()).await;
    let (connector, _watcher) = fx.connector_builder().start().unwrap();
    let mut events = connector.subscribe();

    // cert-manager writing the certificate a step before its key: the new
    // certificate with the old key.
    let renewed = fx.client_ca.client("client");
    fx.client_volume
        .write(&[
            ("tls.crt", renewed.cert_pem.as_bytes()),
            ("tls.key", fx.client.key_pem.as_bytes()),
            ("ca.crt", fx.server_ca.cert_pem().as_bytes()),
        ])
        .unwrap();
    let failure = next_failed(&mut events).await;
    assert_eq!(failure.identity, tls_reload::CLIENT_IDENTITY);
    assert!(
        matches!(failure.error, Error::KeyMismatch { .. }),
        "{}",
        failure.error
    );
    // The old pair keeps being presented, whole.
    for _ in 0..3 {
        assert_eq!(presented(&connector, addr).await, fx.client.fingerprint);
    }
    let err = connector.reload_now(Trigger::Manual).await.unwrap_err();
    assert!(matches!(err.error, Error::KeyMismatch { .. }));
    assert_eq!(connector.generation(), 1);

    // The key lands: the new pair is used.
    fx.publish_client(&renewed, fx.server_ca.cert_pem());
    wait_presented(
        &connector,
        addr,
        &renewed.fingerprint,
        "the renewed pair presented",
    )
    .await;
}

#[tokio::test]
async fn an_invalid_initial_file_fails_the_build_naming_it() {
    let fx = Fixture::new();
    fx.client_volume
        .write(&[
            ("tls.crt", fx.client.cert_pem.as_bytes()),
            ("tls.key", fx.client.key_pem.as_bytes()),
            ("ca.crt", b"not a certificate"),
        ])
        .unwrap();
    let err = ReloadableConnector::builder(fx.client_files())
        .build()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("trust bundle") && msg.contains("ca.crt"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_client_rotations_under_sixteen_connect_loops_fail_no_connection() {
    const ROTATIONS: usize = 200;
    const LOOPS: usize = 16;

    let fx = Fixture::new();
    let (addr, _server) = echo_client_cert(fx.mtls_builder().build().unwrap()).await;
    // The watcher runs too, so its reloads race with the manual ones.
    let (connector, _watcher) = fx.connector_builder().start().unwrap();
    let connector_for_loops = connector.clone();
    let loops = RotationLoops::start(LOOPS, &fx.client.fingerprint, move || {
        let connector = connector_for_loops.clone();
        // The server verified the client's signature with the presented
        // leaf: the pair matched.
        async move { Ok(connect(&connector, addr).await?.client_cert) }
    });

    for _ in 0..ROTATIONS {
        let leaf = fx.client_ca.client("client");
        loops.publish(&leaf.fingerprint);
        fx.publish_client(&leaf, fx.server_ca.cert_pem());
        connector.reload_now(Trigger::Manual).await.unwrap();
        tokio::task::yield_now().await;
    }
    loops.stop().await.assert_clean(LOOPS);
    // Each rotation was published once, by whichever reload saw it first.
    assert_eq!(connector.generation(), ROTATIONS as u64 + 1);
}

#[tokio::test]
async fn without_file_system_events_the_connector_polls_and_says_so_once() {
    let fx = Fixture::new();
    let (connector, _watcher) = fx
        .connector_builder()
        .poll_interval(Duration::from_millis(100))
        .fail_event_watcher()
        .start()
        .unwrap();
    assert_eq!(connector.status().watcher, tls_reload::WatcherMode::Polling);
    let mut events = connector.subscribe();
    // A late subscriber still learns of the degradation, first.
    assert!(matches!(
        next_event(&mut events).await,
        ReloadEvent::Degraded(_)
    ));
    let renewed = fx.client_ca.client("client");
    fx.publish_client(&renewed, fx.server_ca.cert_pem());
    match next_event(&mut events).await {
        ReloadEvent::ClientReloaded(r) => assert_eq!(r.trigger, Trigger::Poll),
        other => panic!("expected a client reload, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_or_not_yet_valid_replacement_keeps_the_client_certificate_in_use() {
    use std::time::SystemTime;
    use tls_reload::testing::LeafOptions;

    let fx = Fixture::new();
    let (addr, _server) = echo_client_cert(fx.mtls_builder().build().unwrap()).await;
    let connector = fx.connector();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired = fx
        .client_ca
        .issue(&LeafOptions::client("client").valid(now - 3 * day, now - day));
    fx.publish_client(&expired, fx.server_ca.cert_pem());
    let err = connector.reload_now(Trigger::Manual).await.unwrap_err();
    assert!(matches!(err.error, Error::Expired { .. }), "{}", err.error);
    let future = fx
        .client_ca
        .issue(&LeafOptions::client("client").valid(now + day, now + 3 * day));
    fx.publish_client(&future, fx.server_ca.cert_pem());
    let err = connector.reload_now(Trigger::Manual).await.unwrap_err();
    assert!(
        matches!(err.error, Error::NotYetValid { .. }),
        "{}",
        err.error
    );
    assert_eq!(connector.generation(), 1);
    assert_eq!(connector.status().reloads_failed, 2);
    assert_eq!(presented(&connector, addr).await, fx.client.fingerprint);
}
