//! Watcher behaviour: what counts as a change, debounce, polling (chosen,
//! or after events are lost), retries, manual reloads, and a hung mount.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use tls_reload::{Error, ReloadEvent, ReloadOutcome, Trigger, WatcherMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_and_unrelated_files_cause_no_reload_and_no_event() {
    let fx = Fixture::new();
    let (acceptor, _watcher) = fx.builder().start().unwrap();
    let mut events = acceptor.subscribe();
    assert_eq!(acceptor.status().watcher, WatcherMode::Events);

    // touch: new mtime, same bytes.
    let path = fx.server.path("tls.crt");
    let cert = fs::File::options().append(true).open(path).unwrap();
    cert.set_modified(std::time::SystemTime::now()).unwrap();
    // Unrelated files come and go in the same directory.
    fs::write(fx.server.dir().join("README"), "unrelated").unwrap();
    fs::write(fx.server.dir().join("README"), "changed").unwrap();
    fs::remove_file(fx.server.dir().join("README")).unwrap();
    // A kubelet resync rewrites identical content.
    fx.publish_leaf(&fx.leaf);

    no_event(&mut events, Duration::from_millis(800)).await;
    let status = acceptor.status();
    assert_eq!(status.generation, 1);
    assert_eq!(status.reloads_succeeded, 0);
    assert_eq!(status.reloads_failed, 0);
    assert_eq!(status.last_attempt, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_never_goes_quiet_still_reloads_within_max_delay() {
    let mut fx = Fixture::new();
    let debounce = Duration::from_millis(500);
    let max_delay = Duration::from_millis(1500);
    let builder = fx.builder().debounce(debounce).max_delay(max_delay);
    let (acceptor, _watcher) = builder.start().unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let client = fx.client();

    // Something writes into the directory every 200 ms, forever: the
    // debounce alone would never fire.
    let dir = fx.server.dir().to_owned();
    let churn = tokio::spawn(async move {
        for i in 0u64.. {
            fs::write(dir.join("heartbeat"), i.to_string()).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let new = fx.rotate();
    let reloaded = next_reloaded(&mut events).await;
    let took = start.elapsed();
    churn.abort();

    assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
    assert_eq!(served(addr, &client).await, new.fingerprint);
    // The burst began before the rotation, so the deadline can only come
    // sooner; allow scheduling slack on a loaded machine.
    let slack = Duration::from_millis(700);
    assert!(took <= max_delay + slack, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_when_events_are_lost_at_start_or_later_and_says_so_once() {
    let poll = Duration::from_millis(400);
    // Whether the event watcher fails to start (inotify limits), and what
    // the degradation then says.
    for (at_start, reason) in [(true, "unavailable"), (false, "event thread")] {
        let mut fx = Fixture::new();
        let mut builder = fx.builder().poll_interval(poll);
        if at_start {
            builder = builder.fail_event_watcher();
        }
        let (acceptor, mut watcher) = builder.start().unwrap();
        let mut events = acceptor.subscribe();
        let addr = listen(&acceptor).await;
        if !at_start {
            assert_eq!(acceptor.status().watcher, WatcherMode::Events);
            watcher.end_event_thread();
        }
        // A degradation at start came before this subscription: it is
        // replayed, once, and the status reports it.
        match next_event(&mut events).await {
            ReloadEvent::Degraded(d) => {
                assert!(d.reason.contains(reason), "{}", d.reason);
                assert_eq!(d.poll_interval, poll);
            }
            other => panic!("expected the degradation first, got {other:?}"),
        }
        assert_eq!(acceptor.status().watcher, WatcherMode::Polling);
        let start = Instant::now();
        let new = fx.rotate();
        let reloaded = next_reloaded(&mut events).await;
        assert_eq!(reloaded.trigger, Trigger::Poll);
        assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
        let took = start.elapsed();
        assert!(took <= poll + Duration::from_millis(500), "{took:?}");
        assert_eq!(served(addr, &fx.client()).await, new.fingerprint);

        // A later subscriber learns of it too, once; no further degraded
        // events for anyone while it keeps polling.
        let mut late = acceptor.subscribe();
        let first = next_event(&mut late).await;
        assert!(matches!(first, ReloadEvent::Degraded(_)), "{first:?}");
        let quiet = poll * 3;
        tokio::join!(no_event(&mut events, quiet), no_event(&mut late, quiet));
        assert_eq!(acceptor.status().watcher, WatcherMode::Polling);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_only_is_not_a_degradation() {
    let fx = Fixture::new();
    let builder = fx.builder().poll_interval(Duration::from_millis(100));
    let (acceptor, _watcher) = builder.poll_only(true).start().unwrap();
    let mut events = acceptor.subscribe();
    assert_eq!(acceptor.status().watcher, WatcherMode::Polling);
    no_event(&mut events, Duration::from_millis(400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_now_reports_each_outcome_and_every_subscriber_sees_each_swap_in_order() {
    let mut fx = Fixture::new();
    let acceptor = fx.builder().build().unwrap();
    assert_eq!(acceptor.status().watcher, WatcherMode::Off);
    let (mut a, mut b) = (acceptor.subscribe(), acceptor.subscribe());

    let outcome = acceptor.reload_now(Trigger::Api).await.unwrap();
    let unchanged = matches!(outcome, ReloadOutcome::Unchanged { generation: 1 });
    assert!(unchanged, "{outcome:?}");
    fx.rotate();
    // Without a watcher nothing changes by itself.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(acceptor.status().generation, 1);

    let mut generations = Vec::new();
    for n in 0..5 {
        if n > 0 {
            fx.rotate();
        }
        let outcome = acceptor.reload_now(Trigger::Signal).await.unwrap();
        generations.push((Trigger::Signal, outcome.generation()));
    }
    assert_eq!(generations.last(), Some(&(Trigger::Signal, 6)));
    for sub in [&mut a, &mut b] {
        let seen: Vec<_> = std::iter::from_fn(|| match sub.try_recv()? {
            ReloadEvent::Reloaded(r) => Some((r.trigger, r.generation)),
            _ => None,
        })
        .collect();
        assert_eq!(seen, generations);
    }
    let status = acceptor.status();
    assert_eq!(status.cert.fingerprint_sha256, fx.leaf.fingerprint);
    assert_eq!(status.last_attempt.unwrap().trigger, Trigger::Signal);
    // Unchanged is not counted.
    let counts: Vec<_> = (status.by_trigger.iter())
        .map(|c| (c.trigger, c.succeeded, c.failed))
        .filter(|&(_, ok, failed)| ok + failed > 0)
        .collect();
    assert_eq!(counts, [(Trigger::Signal, 5, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_one_failure_per_distinct_content_but_counts_every_attempt() {
    let fx = Fixture::new();
    let acceptor = fx.builder().build().unwrap();
    let mut events = acceptor.subscribe();
    fx.publish("garbage", &fx.leaf.key_pem);

    for _ in 0..3 {
        let failure = acceptor.reload_now(Trigger::Api).await.unwrap_err();
        assert!(failure.error.to_string().contains("tls.crt"), "{failure}");
    }
    next_failed(&mut events).await;
    no_event(&mut events, Duration::from_millis(200)).await;

    // Different bad content is a new failure.
    fx.publish("other garbage", &fx.leaf.key_pem);
    acceptor.reload_now(Trigger::Api).await.unwrap_err();
    next_failed(&mut events).await;

    let status = acceptor.status();
    assert_eq!(status.reloads_failed, 4);
    assert_eq!(status.generation, 1);
    let last_error = status.last_attempt.unwrap().error.unwrap();
    assert!(last_error.contains("tls.crt"), "{last_error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_until_the_files_load() {
    let fx = Fixture::new();
    // The poll (60 s) never runs: only retries find the repair below.
    let builder = fx.builder().retry_backoff(Duration::from_millis(100));
    let (acceptor, _watcher) = builder.start().unwrap();
    let mut events = acceptor.subscribe();

    // The cert lands, the key does not: the watcher fails and retries.
    let new = fx.server_ca.server();
    fx.publish(&new.cert_pem, &fx.leaf.key_pem);
    next_failed(&mut events).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // 100 + 200 + 400 + 800 ms: about four retries in 1.6 s, not sixteen.
    let failed = acceptor.status().reloads_failed;
    assert!((3..=7).contains(&failed), "{failed} attempts");

    // Fix the key behind the watcher's back: written into the data
    // directory, it makes no event in the watched one; a retry finds it.
    fs::write(fx.server.dir().join("..data").join("tls.key"), &new.key_pem).unwrap();
    let reloaded = next_reloaded(&mut events).await;
    assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_read_times_out_blocks_no_later_caller_and_never_the_shutdown() {
    let fx = Fixture::new();
    let builder = fx.builder().read_delay(Duration::from_secs(3));
    let (acceptor, watcher) = builder
        .read_timeout(Duration::from_millis(300))
        .start()
        .unwrap();

    let start = Instant::now();
    let failure = acceptor.reload_now(Trigger::Api).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "waited {took:?}");
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
    let dir_text = fx.server.dir().display().to_string();
    assert!(msg.contains(&dir_text), "{msg}");

    // The hung read still holds its thread: the next reload does not
    // start another one, and says why at once.
    let start = Instant::now();
    let again = acceptor.reload_now(Trigger::Signal).await.unwrap_err();
    // At once: well under the read timeout it would otherwise wait.
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let still_waiting = matches!(
        again.error,
        Error::ReadTimedOut { still_waiting, .. } if still_waiting
    );
    assert!(still_waiting, "{again}");
    // The served config is untouched, and handshakes go on.
    assert_eq!(acceptor.status().generation, 1);
    let addr = listen(&acceptor).await;
    assert_eq!(served(addr, &fx.client()).await, fx.leaf.fingerprint);

    // A shutdown does not wait for the file system.
    let start = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(1), watcher.shutdown()).await;
    stopped.expect("the watcher stopped while a read was hung");
    assert!(start.elapsed() < Duration::from_secs(1));
}
