//! Figure 3: rotation latency, from a kubelet-style write to the first
//! handshake that serves the new certificate.

use std::time::{Duration, Instant};

use tls_reload::ReloadableAcceptor;
use tls_reload::testing::{TestCa, served_fingerprint};

use crate::load;
use crate::util::{self, Row, Settings};

/// Figure 3 for one debounce setting.
pub(crate) async fn latency(s: &Settings, debounce: Duration) -> Vec<Row> {
    let rotations = s.pick(100, 3);
    let figure = format!("3. rotation latency, debounce {} ms", debounce.as_millis());
    println!("\n== {figure}");
    let ca = TestCa::new("bench CA");
    let pool = util::leaves(&ca, 8);
    let tmp = util::volume_dir();
    let (writer, files) = util::volume(tmp.path(), &pool[0], &ca);
    // The event path is what is measured: keep the safety-net poll out.
    let builder = ReloadableAcceptor::builder(files).debounce(debounce);
    let started = builder.poll_interval(Duration::from_secs(3600)).start();
    let (acceptor, watcher) = started.expect("start acceptor");
    let (addr, server) = tls_reload::testing::serve(acceptor.clone()).await;
    let config = load::client(ca.cert_pem(), &[]);
    println!(
        "   {rotations} rotations; t0 = just before the kubelet-style write (mkdir, files, \
         ..data_tmp symlink, rename over ..data, rm old dir); probe = full handshake every ~1 ms"
    );

    let timeout = debounce + Duration::from_secs(5);
    let mut latencies = Vec::with_capacity(rotations);
    let mut write_ms = Vec::with_capacity(rotations);
    let (mut timeouts, mut probe_errors, mut probes) = (0u32, 0u64, 0u64);
    for i in 1..=rotations {
        let next = pool[i % pool.len()].clone();
        let t0 = Instant::now();
        util::rotate(&writer, &next, &ca).await;
        write_ms.push(util::ms(t0.elapsed()));
        loop {
            probes += 1;
            match served_fingerprint(addr, config.clone()).await {
                Ok(fp) if fp == next.fingerprint => {
                    latencies.push(util::ms(t0.elapsed()));
                    break;
                }
                Ok(_) => {}
                Err(_) => probe_errors += 1,
            }
            if t0.elapsed() > timeout {
                timeouts += 1;
                println!(
                    "   rotation {i}: not served after {} ms",
                    timeout.as_millis()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    server.abort();
    watcher.shutdown().await;

    let (p50, p99) = (
        util::percentile(&latencies, 50.0),
        util::percentile(&latencies, 99.0),
    );
    let (max, debounce_ms) = (util::range(&latencies).1, util::ms(debounce));
    let (above, write_p50) = (p99 - debounce_ms, util::percentile(&write_ms, 50.0));
    let budget = debounce_ms + 100.0;
    println!(
        "   p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; p99 above debounce {above:.1} ms; \
         write itself p50 {write_p50:.2} ms; {probes} probes, {probe_errors} probe errors"
    );
    let (n, debounce) = (latencies.len(), debounce.as_millis());
    vec![Row::check(
        figure,
        format!(
            "p50 {p50:.1} / p99 {p99:.1} / max {max:.1} ms (n={n}, debounce {debounce} ms, timeouts {timeouts})"
        ),
        format!("p99 ≤ {budget:.0} ms"),
        p99 <= budget && timeouts == 0,
    )]
}
