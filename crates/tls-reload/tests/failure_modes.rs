//! What the file system can do to a watcher: a hung mount, a file-system
//! event thread that dies, and configured paths that are symlinks into
//! other directories.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tls_reload::testing::TestCa;
use tls_reload::{Error, ReloadEvent, ReloadableAcceptor, TlsFiles, Trigger, WatcherMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_read_times_out_blocks_no_later_caller_and_never_the_shutdown() {
    let fx = Fixture::new();
    let (acceptor, watcher) = fx
        .builder()
        .read_delay(Duration::from_secs(3))
        .read_timeout(Duration::from_millis(300))
        .start()
        .unwrap();

    let start = Instant::now();
    let failure = acceptor.reload_now(Trigger::Api).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "waited {took:?} for a hung read"
    );
    match &failure.error {
        Error::ReadTimedOut {
            dir, still_waiting, ..
        } => {
            assert!(!still_waiting);
            assert_eq!(dir, fx.server.dir());
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let msg = failure.error.to_string();
    assert!(
        msg.contains(&fx.server.dir().display().to_string()),
        "{msg}"
    );

    // The hung read still holds its thread: the next reload does not
    // start another one, and says why at once.
    let start = Instant::now();
    let again = acceptor.reload_now(Trigger::Signal).await.unwrap_err();
    // At once: well under the read timeout it would otherwise wait.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            again.error,
            Error::ReadTimedOut {
                still_waiting: true,
                ..
            }
        ),
        "{}",
        again.error
    );
    // The served config is untouched, and handshakes go on.
    assert_eq!(acceptor.status().generation, 1);
    let addr = listen(&acceptor).await;
    assert_eq!(served(addr, &fx.client()).await, fx.leaf.fingerprint);

    // A shutdown does not wait for the file system.
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(1), watcher.shutdown())
        .await
        .expect("the watcher stopped while a read was hung");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_event_thread_is_reported_once_and_polling_takes_over() {
    let mut fx = Fixture::new();
    let (acceptor, mut watcher) = fx
        .builder()
        .poll_interval(Duration::from_millis(300))
        .start()
        .unwrap();
    let mut events = acceptor.subscribe();
    assert_eq!(acceptor.status().watcher, WatcherMode::Events);

    watcher.end_event_thread();
    match next_event(&mut events).await {
        ReloadEvent::Degraded(d) => assert!(d.reason.contains("event thread"), "{}", d.reason),
        other => panic!("expected the degradation, got {other:?}"),
    }
    assert_eq!(acceptor.status().watcher, WatcherMode::Polling);

    let new = fx.rotate();
    let reloaded = expect_reloaded(next_event(&mut events).await);
    assert_eq!(reloaded.trigger, Trigger::Poll);
    assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
    // Said once, not at every poll.
    no_event(&mut events, Duration::from_millis(900)).await;
    assert_eq!(acceptor.status().watcher, WatcherMode::Polling);
}

/// Writes through a temporary name and a rename, as most tools do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("incoming");
    fs::write(&tmp, contents).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_into_another_directory_is_watched_by_events() {
    let ca = TestCa::new("ca");
    let (old, new) = (ca.server(), ca.server());
    let tmp = tempfile::tempdir().unwrap();
    let (conf, real): (PathBuf, PathBuf) = (tmp.path().join("conf"), tmp.path().join("real"));
    fs::create_dir(&conf).unwrap();
    fs::create_dir(&real).unwrap();
    fs::write(real.join("server.crt"), &old.cert_pem).unwrap();
    fs::write(real.join("server.key"), &old.key_pem).unwrap();
    std::os::unix::fs::symlink(real.join("server.crt"), conf.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink(real.join("server.key"), conf.join("tls.key")).unwrap();

    // The poll (60 s) never runs during the test: only events can see it.
    let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(TlsFiles::new(
        conf.join("tls.crt"),
        conf.join("tls.key"),
    )))
    .start()
    .unwrap();
    let mut events = acceptor.subscribe();
    replace(&real.join("server.key"), &new.key_pem);
    replace(&real.join("server.crt"), &new.cert_pem);
    let reloaded = loop {
        match next_event(&mut events).await {
            ReloadEvent::Reloaded(r) => break r,
            // The key may land before the certificate: retried.
            ReloadEvent::Failed(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reloaded.trigger, Trigger::Watch);
    assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
}
