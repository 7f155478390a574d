//! Figure 5: memory across many reloads, the cost of one reload, and the
//! CPU of an idle gateway with its watcher on.

use std::time::{Duration, Instant};

use tls_reload::testing::TestCa;
use tls_reload::{ReloadOutcome, ReloadableAcceptor, Trigger};

use crate::gateway::{start, stop, volume_config};
use crate::util::{self, Row, Settings};

/// Figure 5a and 5c: RSS before and after many reloads, and the cost of
/// one reload.
pub(crate) async fn reloads(s: &Settings) -> Vec<Row> {
    let n = s.pick(10_000, 200);
    let warm = s.pick(200, 20);
    let figure = format!("5. RSS growth across {n} reloads");
    println!("\n== {figure} (two cert pairs alternating, reload_now each)");
    let ca = TestCa::new("bench CA");
    let pair = [ca.server(), ca.server()];
    let tmp = util::volume_dir();
    let (writer, files) = util::volume(tmp.path(), &pair[0], &ca);
    let acceptor = ReloadableAcceptor::builder(files).build();
    let acceptor = acceptor.expect("acceptor");

    let mut failures = 0u64;
    let mut first_error = None;
    let mut costs = Vec::with_capacity(n);
    let mut trend = Vec::new();
    let mut rss0 = 0;
    for i in 0..warm + n {
        if i == warm {
            rss0 = util::rss_kib().unwrap_or(0);
            trend.push(rss0);
        }
        let leaf = &pair[(i + 1) % 2];
        writer
            .write(&util::payload(leaf, ca.cert_pem()))
            .expect("kubelet-style write");
        let t = Instant::now();
        let outcome = acceptor.reload_now(Trigger::Manual).await;
        let cost = t.elapsed();
        let error = match outcome {
            Ok(ReloadOutcome::Reloaded(r)) if r.current.fingerprint_sha256 == leaf.fingerprint => {
                None
            }
            Ok(other) => Some(format!("unexpected outcome {other:?}")),
            Err(e) => Some(e.error.to_string()),
        };
        if let Some(e) = error {
            failures += 1;
            first_error.get_or_insert(e);
        }
        if i >= warm {
            costs.push(util::ms(cost));
            let done = i + 1 - warm;
            if done.is_multiple_of((n / 4).max(1)) {
                trend.push(util::rss_kib().unwrap_or(0));
            }
        }
    }
    let rss1 = util::rss_kib().unwrap_or(0);
    let growth_kib = rss1 as i64 - rss0 as i64;
    let mib = |kib: u64| format!("{:.2}", kib as f64 / 1024.0);
    let trend: Vec<String> = trend.into_iter().map(mib).collect();
    let (from, to, trend) = (mib(rss0), mib(rss1), trend.join(" → "));
    let (mean, p50) = (util::mean(&costs), util::percentile(&costs, 50.0));
    let (p99, max) = (util::percentile(&costs, 99.0), util::range(&costs).1);
    println!(
        "   RSS {from} MiB → {to} MiB (after {warm} warm-up reloads; every quarter: {trend} MiB); \
         reload cost mean {mean:.3} ms, p50 {p50:.3}, p99 {p99:.3}, max {max:.3} ms; {failures} failures"
    );
    let error = util::first(first_error);
    let growth = growth_kib as f64 / 1024.0;
    let shown = if failures > 0 { error.as_str() } else { "" };
    vec![
        Row::check(
            figure,
            format!("{growth:+.2} MiB ({from} → {to} MiB){shown}"),
            "< 2 MiB",
            growth_kib < 2048 && failures == 0,
        ),
        Row::info(
            "5. cost of one reload (reload_now, read+parse+build+swap)",
            format!("mean {mean:.3} ms, p99 {p99:.3} ms (n={n}, {failures} failures){error}"),
        ),
    ]
}

/// CPU time of this process over `wall`, as a percentage of one core, by
/// `/proc/self/stat` (ticks, every thread) and by the threads' schedstat
/// (nanoseconds, live threads).
async fn cpu_over(wall: Duration) -> (f64, f64, Duration) {
    let (c0, n0, t0) = (util::process_cpu(), util::ThreadsCpu::now(), Instant::now());
    tokio::time::sleep(wall).await;
    let (c1, n1, elapsed) = (util::process_cpu(), util::ThreadsCpu::now(), t0.elapsed());
    let cpu = c1
        .zip(c0)
        .map_or(Duration::ZERO, |(b, a)| b.saturating_sub(a));
    let ns = n1.since(&n0);
    let pct = |used: f64| used / elapsed.as_secs_f64() * 100.0;
    (pct(cpu.as_secs_f64()), pct(ns as f64 / 1e9), cpu)
}

/// Figure 5b.
pub(crate) async fn idle_cpu(s: &Settings) -> Vec<Row> {
    let wall = s.pick(Duration::from_secs(30), Duration::from_secs(2));
    let base_wall = s.pick(Duration::from_secs(5), Duration::from_millis(500));
    let figure = format!("5. idle gateway CPU, watcher on, over {} s", wall.as_secs());
    println!("\n== {figure}");
    // Let whatever earlier figures left behind (closing sockets, blocking
    // threads) settle, then measure this process doing nothing.
    tokio::time::sleep(s.pick(Duration::from_secs(1), Duration::from_millis(100))).await;
    let (base_pct, base_ns_pct, _) = cpu_over(base_wall).await;

    let ca = TestCa::new("bench CA");
    let leaf = ca.server();
    let tmp = util::volume_dir();
    // Production timings: debounce 1 s, poll every 30 s.
    let (_writer, config) = volume_config(tmp.path(), &ca, &leaf, Duration::from_secs(1));
    let gateway = start(config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pct, ns_pct, used) = cpu_over(wall).await;
    let mode = gateway.acceptor().map(|a| a.status().watcher.to_string());
    let mode = mode.unwrap_or_default();
    stop(gateway).await;
    let (used, secs, base_ms) = (util::ms(used), wall.as_secs(), base_wall.as_millis());
    println!(
        "   {used:.1} ms CPU in {secs} s = {pct:.3} % of one core (schedstat {ns_pct:.4} %); \
         same process without gateway over {base_ms} ms: {base_pct:.3} % (schedstat {base_ns_pct:.4} %); \
         watcher mode {mode}; clock tick {} ms",
        1000 / util::clock_ticks()
    );
    let value = format!(
        "{pct:.3} % of one core ({used:.0} ms CPU; schedstat {ns_pct:.4} %; \
         baseline without gateway {base_ns_pct:.4} %; watcher {mode})"
    );
    vec![Row::check(figure, value, "< 0.5 %", pct < 0.5)]
}
