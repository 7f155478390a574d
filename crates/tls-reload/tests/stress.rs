//! Rotation under continuous handshakes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use common::*;
use tls_reload::Trigger;
use tls_reload::testing::{RotationLoops, handshake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_rotations_under_sixteen_handshake_loops_fail_no_handshake() {
    const ROTATIONS: usize = 200;
    const LOOPS: usize = 16;

    let mut fx = Fixture::new();
    // The watcher runs too, so its reloads race with the manual ones.
    let (acceptor, _watcher) = fx.builder().start().unwrap();
    let addr = listen(&acceptor).await;
    let client = fx.client();
    let loops_client = client.clone();
    let loops = RotationLoops::start(LOOPS, &fx.leaf.fingerprint, move || {
        let client = loops_client.clone();
        // A successful handshake proves the served key matches the served
        // leaf: the client checked the CertificateVerify signature against
        // it.
        async move { Ok(handshake(addr, client).await?.fingerprint) }
    });

    for _ in 0..ROTATIONS {
        let leaf = fx.server_ca.server();
        loops.publish(&leaf.fingerprint);
        fx.publish_leaf(&leaf);
        fx.leaf = leaf;
        acceptor.reload_now(Trigger::Manual).await.unwrap();
        tokio::task::yield_now().await;
    }

    loops.stop().await.assert_clean(LOOPS);
    let status = acceptor.status();
    assert_eq!(status.cert.fingerprint_sha256, fx.leaf.fingerprint);
    // One generation per rotation.
    assert_eq!(status.generation, ROTATIONS as u64 + 1);
    assert_eq!(status.reloads_failed, 0);
    assert_eq!(served(addr, &client).await, fx.leaf.fingerprint);
}
