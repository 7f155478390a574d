//! Shutdown leaves nothing running. Alone in its test binary so that no
//! other test's watcher threads are counted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::time::Duration;

use common::*;
use tls_reload::WatcherMode;
use tls_reload::testing::eventually;

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Waits until no thread's name starts with `prefix`.
async fn no_thread_named(prefix: &str) {
    eventually(SOON, &format!("no {prefix} thread"), || async {
        let n = threads_named(prefix);
        if n == 0 { Ok(()) } else { Err(n) }
    })
    .await;
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
    assert_eq!(acceptor.status().watcher, WatcherMode::Off, "task ended");
    no_thread_named(NOTIFY).await;
    // Nothing reacts to changes any more; the acceptor still serves.
    fx.rotate();
    no_event(&mut events, Duration::from_millis(300)).await;
    assert_eq!(acceptor.status().generation, 1);

    // Dropping the handle stops it too.
    let (acceptor, watcher) = fx.builder().start().unwrap();
    assert_eq!(threads_named(NOTIFY), 1);
    drop(watcher);
    no_thread_named(NOTIFY).await;
    eventually(SOON, "the watcher task has ended", || async {
        let mode = acceptor.status().watcher;
        (mode == WatcherMode::Off).then_some(()).ok_or(mode)
    })
    .await;
}
