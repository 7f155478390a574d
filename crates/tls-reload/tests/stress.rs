//! Rotation under continuous handshakes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use tls_reload::Trigger;
use tls_reload::testing::handshake;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_rotations_under_sixteen_handshake_loops_fail_no_handshake() {
    const ROTATIONS: usize = 200;
    const LOOPS: usize = 16;

    let mut fx = Fixture::new();
    // The watcher runs too, so its reloads race with the manual ones.
    let (acceptor, _watcher) = fx.builder().start().unwrap();
    let addr = listen(&acceptor).await;
    let client = fx.client();
    let published = Arc::new(Mutex::new(HashSet::from([fx.leaf.fingerprint.clone()])));
    let stop = Arc::new(AtomicBool::new(false));

    let loops: Vec<_> = (0..LOOPS)
        .map(|_| {
            let (client, stop, published) = (client.clone(), stop.clone(), published.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut unknown) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match handshake(addr, client.clone()).await {
                        // A successful handshake proves the served key
                        // matches the served leaf: the client checked the
                        // CertificateVerify signature against it.
                        Ok(hs) => {
                            ok += 1;
                            if !published.lock().unwrap().contains(&hs.fingerprint) {
                                unknown += 1;
                            }
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed, unknown)
            })
        })
        .collect();

    for _ in 0..ROTATIONS {
        let leaf = fx.server_ca.server();
        published.lock().unwrap().insert(leaf.fingerprint.clone());
        fx.publish_leaf(&leaf);
        fx.leaf = leaf;
        acceptor.reload_now(Trigger::Manual).await.unwrap();
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);

    let (mut ok, mut failed, mut unknown) = (0, 0, 0);
    for l in loops {
        let (o, f, u) = l.await.unwrap();
        ok += o;
        failed += f;
        unknown += u;
    }
    assert_eq!(failed, 0, "failed handshakes ({ok} succeeded)");
    assert_eq!(unknown, 0, "served a certificate that was never published");
    assert!(ok >= LOOPS as u64, "not every loop handshook: {ok}");
    let status = acceptor.status();
    assert_eq!(status.cert.fingerprint_sha256, fx.leaf.fingerprint);
    // One generation per rotation.
    assert_eq!(status.generation, ROTATIONS as u64 + 1);
    assert_eq!(status.reloads_failed, 0);
    assert_eq!(served(addr, &client).await, fx.leaf.fingerprint);
}
