//! What the file system can do to a watcher: a hung mount and a
//! file-system event thread that dies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tls_reload::{Error, ReloadEvent, Trigger, WatcherMode};

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
    let Error::ReadTimedOut {
        dir,
        still_waiting: false,
        ..
    } = &failure.error
    else {
        panic!("expected a timeout, got {failure}");
    };
    assert_eq!(dir, fx.server.dir());
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
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let still_waiting = matches!(
        again.error,
        Error::ReadTimedOut {
            still_waiting: true,
            ..
        }
    );
    assert!(still_waiting, "{again}");
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
    let reloaded = next_reloaded(&mut events).await;
    assert_eq!(reloaded.trigger, Trigger::Poll);
    assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
    // Said once, not at every poll.
    no_event(&mut events, Duration::from_millis(900)).await;
    assert_eq!(acceptor.status().watcher, WatcherMode::Polling);
}
