//! Figures 4 and 6, through the real gateway (`openshell_server::Gateway`
//! in this process): rotations under concurrent handshakes, and gRPC
//! throughput.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openshell_server::pb::GetTlsStatusRequest;
use openshell_server::pb::gateway_client::GatewayClient;
use openshell_server::{Config, Gateway, GatewayHandle, TlsMode};
use rustls::ClientConfig;
use tls_reload::ReloadEvent;
use tls_reload::testing::{AtomicWriter, Leaf, TestCa};
use tonic::transport::Channel;

use crate::interleave::{Round, Schedule, interleave_flag, summarize};
use crate::load::{self, After, ClientSpec, Clients, Published};
use crate::util::{self, Row, Settings};

/// Starts a gateway serving `config` in this process.
pub(crate) async fn start(config: Config) -> GatewayHandle {
    Gateway::spawn(config).await.expect("gateway bind")
}

/// Stops a gateway started by [`start`], waiting at most 20 s.
pub(crate) async fn stop(gateway: GatewayHandle) {
    match tokio::time::timeout(Duration::from_secs(20), gateway.stop()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => println!("   gateway stopped with an error: {e}"),
        Err(_) => println!("   gateway did not stop within 20 s; leaving it"),
    }
}

/// A Secret volume holding `leaf`, and a gateway config serving it with
/// the given watcher debounce.
pub(crate) fn volume_config(
    dir: &std::path::Path,
    ca: &TestCa,
    leaf: &Leaf,
    debounce: Duration,
) -> (AtomicWriter, Config) {
    let (writer, files) = util::volume(dir, leaf, ca);
    let mut config = Config::with_tls(SocketAddr::from(([127, 0, 0, 1], 0)), files);
    if let TlsMode::Files {
        reload: Some(r), ..
    } = &mut config.tls
    {
        r.debounce = debounce;
    }
    config.shutdown_grace = Duration::from_secs(2);
    (writer, config)
}

/// Server-side handshake failures plus timeouts counted by the gateway
/// (NaN when a series is missing).
async fn server_failures(addr: SocketAddr, ca: &TestCa) -> f64 {
    let config = load::client(ca.cert_pem(), &[]);
    let reply = openshell_e2e::tls::get(addr, config, "/metrics", Duration::from_secs(10)).await;
    let scrape = reply.map_err(|e| e.to_string()).and_then(|reply| {
        let lines = reply.body.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())
    });
    let Ok(scrape) = scrape.inspect_err(|e| println!("   could not read /metrics: {e}")) else {
        return f64::NAN;
    };
    let sample = |result| {
        let mut series = scrape
            .samples
            .iter()
            .filter(|s| s.labels.get("result") == Some(result));
        let series = series.find(|s| s.metric == "openshell_tls_handshakes_total");
        series.map_or(f64::NAN, |s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
    };
    sample("failure") + sample("timeout")
}

/// Figure 4.
pub(crate) async fn rotations_under_load(s: &Settings) -> Vec<Row> {
    let rotations = s.pick(1000, 10);
    let loops = s.pick(64, 16);
    let figure_failed = format!("4. failed handshakes, {rotations} rotations × {loops} loops");
    let figure_mismatch = "4. served-pair mismatches (gateway)";
    println!("\n== 4. {rotations} rotations under {loops} concurrent handshake loops (gateway)");
    let started = Instant::now();
    let ca = TestCa::new("bench CA");
    let leaves = util::leaves(&ca, rotations + 1);
    let (n, secs) = (leaves.len(), started.elapsed().as_secs_f64());
    println!("   {n} distinct leaves generated in {secs:.1} s");
    let published = Arc::new(Published::new(leaves.iter().map(|l| l.fingerprint.clone())));
    let tmp = util::volume_dir();
    let debounce = Duration::from_millis(10);
    let (writer, config) = volume_config(tmp.path(), &ca, &leaves[0], debounce);
    let gateway = start(config).await;
    let acceptor = gateway.acceptor().cloned().expect("TLS gateway");
    let mut events = acceptor.subscribe();
    let server_failed0 = server_failures(gateway.addr(), &ca).await;

    let spec = ClientSpec {
        addr: gateway.addr(),
        config: load::client(ca.cert_pem(), &["h2"]),
        after: After::Close,
        published: Some(published.clone()),
        limit: Duration::from_secs(s.pick(300, 60)),
    };
    let clients = Clients::start(&spec, loops);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Each rotation is a kubelet-style write; the next one starts once the
    // watcher has swapped it in, so that every one of them is served.
    let budget = Duration::from_secs(s.pick(200, 30));
    let t0 = Instant::now();
    let ok0 = clients.ok();
    let (mut served, mut not_served) = (0usize, 0usize);
    let mut per_rotation = Vec::with_capacity(rotations);
    for (r, leaf) in leaves.iter().enumerate().skip(1) {
        if t0.elapsed() > budget {
            let (secs, done) = (budget.as_secs(), r - 1);
            println!("   time budget of {secs} s spent after {done} rotations");
            break;
        }
        published.publish(r);
        let tr = Instant::now();
        util::rotate(&writer, leaf, &ca).await;
        let swapped = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(event) = events.recv().await {
                if let ReloadEvent::Reloaded(r) = event
                    && r.current.fingerprint_sha256 == leaf.fingerprint
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if swapped {
            served += 1;
            per_rotation.push(util::ms(tr.elapsed()));
        } else {
            not_served += 1;
            println!("   rotation {r}: not swapped in within 5 s");
        }
    }
    let elapsed = t0.elapsed();
    let handshakes = clients.ok() - ok0;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counters = clients.stop().await;
    let server_failed = server_failures(gateway.addr(), &ca).await - server_failed0;
    let status = acceptor.status();
    stop(gateway).await;

    let (failed, mismatched, first_error) = counters.failures();
    let total = counters.ok.load(Ordering::Relaxed);
    let seen = counters.seen.lock().expect("seen").len();
    let first_error = first_error
        .map(|e| format!("; first error: {e}"))
        .unwrap_or_default();
    let (secs, debounce) = (elapsed.as_secs_f64(), debounce.as_millis());
    let p50 = util::percentile(&per_rotation, 50.0);
    let p99 = util::percentile(&per_rotation, 99.0);
    let (rate, generation, reloads_failed) = (
        handshakes as f64 / secs,
        status.generation,
        status.reloads_failed,
    );
    println!(
        "   {served} rotations served in {secs:.1} s (p50 {p50:.1} ms, p99 {p99:.1} ms each, \
         debounce {debounce} ms), {handshakes} handshakes meanwhile ({rate:.0}/s), \
         generation now {generation}, {reloads_failed} failed reloads"
    );
    vec![
        Row::zero(
            figure_failed,
            format!(
                "{failed} client-side of {total}; {server_failed} server-side (gateway metrics)\
                 {first_error}"
            ),
            failed == 0 && server_failed == 0.0,
        ),
        Row::zero(
            figure_mismatch,
            format!(
                "{mismatched} unpublished certs served; every handshake verified the served key; \
                 {seen} distinct certs seen by clients"
            ),
            mismatched == 0,
        ),
        Row::check(
            "4. rotations swapped in",
            format!(
                "{served}/{rotations} in {secs:.1} s (p50 {p50:.1} ms each), {reloads_failed} failed reloads"
            ),
            format!("{rotations}/{rotations}, 0 failed"),
            served == rotations && not_served == 0 && reloads_failed == 0,
        ),
    ]
}

// === gRPC ===

async fn get_status(mut client: GatewayClient<Channel>) -> Result<(), String> {
    client
        .get_tls_status(GetTlsStatusRequest {})
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Figure 6.
pub(crate) async fn grpc(s: &Settings) -> Vec<Row> {
    println!("\n== 6. gRPC GetTlsStatus through the gateway, TLS vs a plaintext gateway");
    let ca = TestCa::new("bench CA");
    let leaf = ca.server();
    let tmp = util::volume_dir();
    let (_writer, tls_config) = volume_config(tmp.path(), &ca, &leaf, Duration::from_secs(1));
    let mut plain_config = tls_config.clone();
    plain_config.tls = TlsMode::Disabled;
    let tls_gw = start(tls_config).await;
    let plain_gw = start(plain_config).await;
    let client_tls = load::client(ca.cert_pem(), &["h2"]);

    let schedule = Schedule {
        rounds: s.pick(6, 1),
        pairs_per_round: s.pick(10, 3),
        slot: Duration::from_millis(100),
        guard: Duration::from_millis(5),
    };
    let (callers, conn_loops) = (16, s.clients);
    let limit = Duration::from_secs(120);
    let warmup = s.pick(Duration::from_millis(300), Duration::from_millis(100));
    // Which gateway the loops talk to: switched per slot.
    let use_tls = Arc::new(AtomicBool::new(false));
    let names = ["plaintext", "TLS"];
    println!(
        "   A = plaintext gateway (h2c), B = TLS gateway; loops switch gateway per slot; {}",
        schedule.describe()
    );
    let measure = async |loops: Clients| {
        tokio::time::sleep(warmup).await;
        let rounds = interleave_flag(&schedule, || loops.ok(), names, &use_tls).await;
        (rounds, loops.stop().await.failures())
    };
    // The gateway of the moment's address and client config.
    let target = {
        let (use_tls, tls_addr, plain_addr) = (use_tls.clone(), tls_gw.addr(), plain_gw.addr());
        let client_tls = client_tls.clone();
        move || match use_tls.load(Ordering::Relaxed) {
            true => (tls_addr, Some(client_tls.clone())),
            false => (plain_addr, None),
        }
    };
    let channel = async |(addr, tls): (SocketAddr, Option<Arc<ClientConfig>>)| {
        openshell_e2e::tls::grpc_channel(addr, tls.as_ref(), Duration::from_secs(10)).await
    };

    // Unary calls over one HTTP/2 connection per gateway.
    println!("   one connection: {callers} concurrent callers sharing one channel per gateway");
    let tls_ch = channel((tls_gw.addr(), Some(client_tls.clone()))).await;
    let tls_ch = tls_ch.expect("gRPC channel (TLS)");
    let plain_ch = channel((plain_gw.addr(), None)).await;
    let plain_ch = plain_ch.expect("gRPC channel (plaintext)");
    let arm = use_tls.clone();
    let (one, (mut failed, _, mut first_error)) =
        measure(Clients::run(callers, limit, move |_| {
            let ch = if arm.load(Ordering::Relaxed) {
                &tls_ch
            } else {
                &plain_ch
            };
            get_status(GatewayClient::new(ch.clone()))
        }))
        .await;

    // A new connection (TCP, TLS, HTTP/2) for every call.
    println!("   new connection: {conn_loops} loops of connect + handshake + HTTP/2 + one call");
    let (fresh, (f, _, e)) = measure(Clients::run(conn_loops, limit, move |_| {
        let target = target();
        async move {
            let ch = channel(target).await.map_err(|e| format!("{e:?}"))?;
            get_status(GatewayClient::new(ch)).await
        }
    }))
    .await;
    failed += f;
    first_error = first_error.or(e);
    stop(tls_gw).await;
    stop(plain_gw).await;

    let median_tls =
        |rounds: &[Round]| util::median(&rounds.iter().map(|r| r.rates[1]).collect::<Vec<_>>());
    let (one_tls, fresh_tls) = (median_tls(&one), median_tls(&fresh));
    vec![
        Row::info(
            format!(
                "6. gRPC unary calls/s, one HTTP/2 connection ({callers} callers), TLS ÷ plaintext"
            ),
            summarize(&one, names).1,
        ),
        Row::info(
            format!(
                "6. gRPC calls/s, new connection per call ({conn_loops} loops), TLS ÷ plaintext"
            ),
            format!(
                "{}; new-connection ÷ one-connection calls/s over TLS {:.3}",
                summarize(&fresh, names).1,
                fresh_tls / one_tls
            ),
        ),
        Row::zero(
            "6. failed gRPC calls",
            format!("{failed}{}", util::first(first_error)),
            failed == 0,
        ),
    ]
}
