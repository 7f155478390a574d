//! Shutdown leaves nothing running. Alone in its test binary so that no
//! other test's watcher threads are counted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tls_reload::WatcherMode;

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Waits up to a few seconds for the count to reach `want`.
async fn settle(prefix: &str, want: usize) -> usize {
    let start = Instant::now();
    loop {
        let n = threads_named(prefix);
        if n == want || start.elapsed() > Duration::from_secs(5) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_drop_leave_no_watcher_thread_or_task() {
    // notify's inotify thread is named "notify-rs inotify loop" (the kernel
    // keeps the first 15 bytes).
    const NOTIFY: &str = "notify-rs";
    assert_eq!(threads_named(NOTIFY), 0);

    let mut fx = Fixture::new();
    let (acceptor, watcher) = fx.builder().start().unwrap();
    assert_eq!(threads_named(NOTIFY), 1, "one watcher thread");
    assert_eq!(acceptor.status().watcher, WatcherMode::Events);
    let mut events = acceptor.subscribe();

    watcher.shutdown().await;
    assert_eq!(
        acceptor.status().watcher,
        WatcherMode::Off,
        "the task has ended"
    );
    assert_eq!(settle(NOTIFY, 0).await, 0, "the notify thread has ended");
    // Nothing reacts to changes any more; the acceptor still serves.
    fx.rotate();
    no_event(&mut events, Duration::from_millis(300)).await;
    assert_eq!(acceptor.status().generation, 1);

    // Dropping the handle stops it too.
    let (acceptor, watcher) = fx.builder().start().unwrap();
    assert_eq!(threads_named(NOTIFY), 1);
    drop(watcher);
    assert_eq!(settle(NOTIFY, 0).await, 0);
    let start = Instant::now();
    while acceptor.status().watcher != WatcherMode::Off {
        assert!(start.elapsed() < SOON, "watcher task still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
