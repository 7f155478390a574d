#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! Hardening of the real `openshell-gateway` process on loopback: storms of
//! concurrent reloads (gRPC `ReloadTls`, SIGHUP) while the Secret volume
//! rotates, hostile clients on the TLS port while a well-behaved client
//! keeps being served, and a run full of failures whose every output is
//! searched for private key material.
//!
//! Every loop here is bounded in count and in time, and every exchange has
//! a timeout, so a stuck gateway fails a test instead of hanging it.
//!
//! # How key buffers are zeroized (`crates/tls-reload/src/load.rs`)
//!
//! * The key file is read by `read_capped` into a `Vec` sized up front
//!   (so `read_to_end` never reallocates and leaves no stray copy) and moved
//!   at once into `Inputs::key: Zeroizing<Vec<u8>>`, zeroed on drop after
//!   every reload attempt.
//! * `pem_sections` wraps each decoded PEM section's DER in
//!   `Zeroizing<Vec<u8>>`; `parse_key` hands a borrow of it to ring's
//!   loader, so no owned copy of the DER outlives the function.
//! * Not covered: ring keeps its own copy of the key inside the signing key
//!   (it has no zeroize-on-drop); the base64 scratch buffer inside
//!   `rustls_pki_types::pem::SliceIter` is freed without zeroing; and a key
//!   file that turns out larger than the cap after being read is dropped
//!   from the plain `Vec` inside `read_capped`, before it is wrapped. This
//!   file checks what the gateway writes, not its memory.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{EVERY, EXCHANGE, MetricsPage, Prober, RELOAD, STARTUP, Volumes, memory_kib};
use http_body_util::Full;
use openshell_e2e::kube::free_loopback_port;
use openshell_e2e::ocsf::{self, tls_details, with_code};
use openshell_e2e::tls::Http;
use openshell_e2e::{GatewayProcess, say, tls};
use openshell_server::pb;
use openshell_server::pb::gateway_client::GatewayClient;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use serde_json::Value;
use tls_reload::testing::{Leaf, SecretVolumes, TestCa, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::Channel;

/// The handshake timeout given to gateways facing hostile clients.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

// === fixture ===

/// A server Secret volume and a client-CA volume, as kubelet writes them,
/// with their CAs, a client certificate and room for the audit log.
type Pki = SecretVolumes;

// === gRPC, HTTP and processes ===

type Client = GatewayClient<Channel>;

/// A gRPC client over one TLS (h2) connection to `addr`.
async fn grpc(addr: SocketAddr, config: &Arc<ClientConfig>) -> Client {
    let channel = tls::grpc_channel(addr, Some(config), EXCHANGE)
        .await
        .expect("gRPC connect");
    GatewayClient::new(channel)
}

async fn tls_status(client: &mut Client) -> pb::TlsStatus {
    tokio::time::timeout(EXCHANGE, client.get_tls_status(pb::GetTlsStatusRequest {}))
        .await
        .expect("GetTlsStatus timed out")
        .expect("GetTlsStatus")
        .into_inner()
}

async fn reload_tls(client: &mut Client) -> Result<pb::ReloadTlsResponse, tonic::Status> {
    match tokio::time::timeout(EXCHANGE, client.reload_tls(pb::ReloadTlsRequest {})).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "ReloadTls: no reply in time",
        )),
    }
}

/// `GET path` over TLS, HTTP/1.1; the body of a 200.
async fn http_get(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> String {
    let reply = tls::get(addr, config.clone(), path, EXCHANGE)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
    reply.body
}

async fn metrics(addr: SocketAddr, config: &Arc<ClientConfig>) -> MetricsPage {
    MetricsPage::fetch(addr, config).await.unwrap()
}

/// How many file descriptors a process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Raises the soft `RLIMIT_NOFILE` of `pid` toward `want` (never above the
/// hard limit) with util-linux `prlimit`, when it is below. Returns the
/// soft limit in force afterwards.
fn raise_nofile(pid: u32, want: u64) -> u64 {
    // The soft and hard limits (`u64::MAX` for unlimited).
    let limits = || {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"));
        let mut values = line
            .expect("Max open files in /proc/<pid>/limits")
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        (values.next().unwrap(), values.next().unwrap())
    };
    let (soft, hard) = limits();
    if soft < want {
        let target = want.min(hard);
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={target}:")])
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            say(&format!(
                "prlimit --pid {pid} --nofile={target}: failed ({status:?})"
            ));
        }
    }
    limits().0
}

// === 1. concurrency faults ===

/// A gateway requiring client certificates, a handshake prober, and a
/// rotation of its Secret: `count` new leaves (made first, so the swaps
/// come at a steady pace), `every` apart, while `rotating` is set.
struct Rotating {
    /// The volumes, removed when the test ends.
    _pki: Arc<Pki>,
    gateway: GatewayProcess,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    published: Arc<Mutex<HashSet<String>>>,
    rotating: Arc<AtomicBool>,
    rotator: tokio::task::JoinHandle<Leaf>,
    prober: Prober,
}

impl Rotating {
    async fn start(count: usize, every: Duration) -> Self {
        let pki = Arc::new(Pki::new());
        let (gateway, addr) = pki.start(true, &[]).await;
        let config = pki.client(true);
        let published = Arc::new(Mutex::new(HashSet::from([pki.leaf.fingerprint.clone()])));
        let rotating = Arc::new(AtomicBool::new(true));
        let rotator = tokio::task::spawn_blocking({
            let (pki, published, rotating) = (pki.clone(), published.clone(), rotating.clone());
            move || {
                let leaves: Vec<Leaf> = (0..count).map(|_| pki.server_ca.server()).collect();
                for leaf in &leaves {
                    published.lock().unwrap().insert(leaf.fingerprint.clone());
                    pki.publish_leaf(leaf);
                    std::thread::sleep(every);
                }
                rotating.store(false, Ordering::Relaxed);
                leaves.last().cloned().expect("at least one rotation")
            }
        });
        let prober = Prober::handshakes(addr, config.clone());
        Self {
            _pki: pki,
            gateway,
            addr,
            config,
            published,
            rotating,
            rotator,
            prober,
        }
    }

    /// Waits for the rotation to end, then checks that every handshake of
    /// the prober succeeded with a published leaf and that the gateway
    /// ends consistent: the last published leaf is served (after one more
    /// `ReloadTls`), the generation is 1 + successful swaps, `GetTlsStatus`,
    /// `/metrics` and the OCSF audit agree swap for swap, no reload and no
    /// handshake failed, and the process never restarted. Returns the
    /// status and the swaps by trigger.
    async fn finish(mut self, what: &str, client: &mut Client) -> (pb::TlsStatus, Swaps) {
        let last = self.rotator.await.unwrap();
        let served = self.prober.stop(what).await;
        let published = self.published.lock().unwrap().clone();
        let never = served.iter().find(|fp| !published.contains(*fp));
        assert!(never.is_none(), "{what}: served {never:?}, never published");
        let (addr, config) = (self.addr, self.config.clone());
        let final_reload = reload_tls(client).await;
        assert!(final_reload.is_ok(), "final ReloadTls: {final_reload:?}");
        let now = tls::served_fingerprint(addr, config.clone(), EXCHANGE).await;
        assert_eq!(now.unwrap(), last.fingerprint, "not the last leaf");

        // `GetTlsStatus` and `/metrics` read while no reload ran in between.
        let key = |s: &pb::TlsStatus| (s.generation, s.reloads_succeeded, s.reloads_failed);
        let (status, page) = eventually(RELOAD, "a quiet gateway", || {
            let (config, mut client) = (config.clone(), client.clone());
            async move {
                let before = tls_status(&mut client).await;
                let page = metrics(addr, &config).await;
                let after = tls_status(&mut client).await;
                let quiet = key(&before) == key(&after);
                quiet.then_some((after, page)).ok_or("reloading")
            }
        })
        .await;
        let cert = status.certificate.clone().unwrap_or_default();
        assert_eq!(cert.fingerprint_sha256, last.fingerprint);
        let (ok, failed, generation) = (
            status.reloads_succeeded,
            status.reloads_failed,
            status.generation,
        );
        let consistent = (generation, failed) == (1 + ok, 0);
        assert!(consistent, "a reload failed: {status:?}");
        let reloads = |labels: &[(&str, &str)]| page.sum("openshell_tls_reload_total", labels);
        let result = |r| reloads(&[("result", r)]);
        let page_says = (
            result("success"),
            result("failure"),
            page.sum("openshell_tls_config_generation", &[]),
        );
        assert_eq!(page_says, (ok, failed, generation), "{}", page.0);
        let by_trigger = |t: &str| {
            let count = |r| reloads(&[("result", r), ("trigger", t)]);
            (t.to_owned(), (count("success"), count("failure")))
        };
        let swaps: Swaps = ["watch", "poll", "signal", "api", "manual"]
            .map(by_trigger)
            .into();
        let bad = (page.handshakes("failure"), page.handshakes("timeout"));
        assert_eq!(bad, (0, 0), "failed and timed-out handshakes\n{}", page.0);

        // One audit event per swap, generations 2..=N without gap or
        // repeat, and as many per trigger as /metrics counts.
        let expected = usize::try_from(ok).unwrap();
        let events =
            self.gateway
                .wait_for_ocsf(RELOAD, "one tls_reloaded event per swap", |events| {
                    (with_code(events, "tls_reloaded").count() >= expected).then(|| events.to_vec())
                });
        let events = events.await.unwrap();
        let reloaded: Vec<&Value> = with_code(&events, "tls_reloaded").collect();
        let detail = |e: &Value, name: &str| tls_details(e)[name].clone();
        let generations: Vec<Value> = reloaded.iter().map(|e| detail(e, "generation")).collect();
        let want: Vec<Value> = (2..=generation).map(Value::from).collect();
        assert_eq!(generations, want, "audit generations");
        for (trigger, (ok, _)) in &swaps {
            let audited = reloaded
                .iter()
                .filter(|e| detail(e, "trigger") == **trigger);
            let audited = audited.count() as u64;
            assert_eq!(audited, *ok, "{trigger} swaps vs {swaps:?}");
        }
        assert_eq!(with_code(&events, "tls_reload_failed").count(), 0);
        let pid = self.gateway.pid();
        self.gateway.ensure_not_restarted(pid).unwrap();
        let figures = (generation, ok, served.len());
        say(&format!(
            "{what}: (generation, swaps, handshakes) {figures:?}, {swaps:?}"
        ));
        (status, swaps)
    }
}

/// Successful and failed reloads by trigger, as `/metrics` counts them.
type Swaps = BTreeMap<String, (u64, u64)>;

/// Kubelet swaps the certificate and the key with one rename, but the
/// gateway reads them one after the other: a reload whose reads straddle
/// the rename must not pair the old certificate with the new key. This
/// storm aims at that window with `ReloadTls` calls back to back from 8
/// clients at once while the Secret rotates every 5 ms; no call may fail
/// (a torn pair would fail with `FAILED_PRECONDITION`), and each swap a
/// caller reports is its own generation, counted by `/metrics` as an api
/// swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_tls_storm_while_kubelet_swaps_the_secret_never_reads_a_torn_pair() {
    const CALLS_PER_CLIENT: usize = 2_500;
    const MAX_TIME: Duration = Duration::from_secs(20);
    let started = Instant::now();
    let rot = Rotating::start(600, Duration::from_millis(5)).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(grpc(rot.addr, &rot.config).await);
    }
    let mut callers = JoinSet::new();
    for mut client in clients.clone() {
        let rotating = rot.rotating.clone();
        callers.spawn(async move {
            let mut replies = Vec::new();
            for _ in 0..CALLS_PER_CLIENT {
                if !rotating.load(Ordering::Relaxed) || started.elapsed() > MAX_TIME {
                    break;
                }
                replies.push(reload_tls(&mut client).await.map_err(|s| format!("{s:?}")));
            }
            replies
        });
    }
    let replies: Vec<_> = callers.join_all().await.into_iter().flatten().collect();
    let failed: Vec<&String> = replies.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed, Vec::<&String>::new(), "ReloadTls calls failed");
    let (status, swaps) = rot.finish("ReloadTls storm", &mut clients[0]).await;
    let swapped = replies.iter().flatten().filter(|r| r.changed);
    let changed: Vec<u64> = swapped.map(|r| r.generation).collect();
    let distinct: BTreeSet<u64> = changed.iter().copied().collect();
    let n = distinct.len() as u64;
    let twice = n < changed.len() as u64;
    assert!(!twice, "two calls reported one swap: {changed:?}");
    assert!(distinct.iter().all(|g| (2..=status.generation).contains(g)));
    // The final ReloadTls of the end checks may have swapped too.
    let api_swaps = swaps["api"].0;
    let api_ok = [n, n + 1].contains(&api_swaps);
    assert!(api_ok, "{api_swaps} api swaps in /metrics, {n} reported");
    say(&format!("{} ReloadTls calls, {n} swapped", replies.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_storm_ends_consistent() {
    const SIGNALS: usize = 200;
    let rot = Rotating::start(20, Duration::from_millis(100)).await;
    let mut client = grpc(rot.addr, &rot.config).await;
    let sent = tokio::task::block_in_place(|| {
        let signal = |_: &usize| {
            std::thread::sleep(Duration::from_millis(8));
            rot.gateway.signal("HUP").is_ok()
        };
        (0..SIGNALS).filter(signal).count()
    });
    assert_eq!(sent, SIGNALS, "kill -s HUP failed");
    let logs = rot.gateway.logs();
    let (_, swaps) = rot.finish("SIGHUP storm", &mut client).await;
    let signalled = swaps["signal"].0 + swaps["signal"].1;
    let handled = logs
        .iter()
        .filter(|l| l["fields"]["message"] == "SIGHUP: reloading TLS files");
    let counts = (signalled as usize, handled.count());
    let within = |n| (1..=SIGNALS).contains(&n);
    let bounded = within(counts.0) && within(counts.1);
    assert!(bounded, "(signal reloads, SIGHUP lines) {counts:?}");
}

// === 2. client faults ===

/// Starts a gateway without client authentication and with a handshake
/// timeout of [`HANDSHAKE_TIMEOUT`], runs `attack` against it while a
/// well-behaved client keeps getting `GET /healthz`, then checks that
/// every one of those requests was served and the process carried on.
/// `attack` gets the address, a client and the gateway's pid, and returns
/// its figures, for the report.
async fn under_attack<F, Fut>(what: &str, attack: F)
where
    F: FnOnce(SocketAddr, Arc<ClientConfig>, u32) -> Fut,
    Fut: Future<Output = String>,
{
    let pki = Pki::new();
    let timeout = format!("{}s", HANDSHAKE_TIMEOUT.as_secs());
    let (mut gateway, addr) = pki.start(false, &["--handshake-timeout", &timeout]).await;
    let pid = gateway.pid();
    let config = pki.client(false);
    let prober = Prober::healthz(addr, config.clone());
    let figures = attack(addr, config, pid).await;
    let probes = prober.stop(what).await;
    gateway.ensure_not_restarted(pid).unwrap();
    say(&format!(
        "{what}: {figures}; prober {} OK 0 failed",
        probes.len()
    ));
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Half the ClientHello record a real rustls client sends first.
fn half_a_client_hello(config: Arc<ClientConfig>) -> Vec<u8> {
    let mut conn =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() && hello.len() < 64 * 1024 {
        conn.write_tls(&mut hello).unwrap();
    }
    assert_eq!(hello.first(), Some(&0x16), "not a handshake record");
    hello.truncate(hello.len() / 2);
    hello
}

/// Sends `bytes` (ignoring write errors: the server may hang up first),
/// then an EOF when `eof`, and reads until the server closes; returns how
/// long that took, or `None` if it was still open after `within`.
async fn send_and_wait_for_close(
    addr: SocketAddr,
    bytes: Vec<u8>,
    eof: bool,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        // Without `eof`, keep the write half open: closing it would hand
        // the server an EOF instead of letting it judge the bytes (or time
        // out).
        if !eof {
            tokio::time::sleep(within).await;
        }
    });
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        while let Ok(1..) = rd.read(&mut buf).await {}
    });
    let closed = closed.await.ok().map(|()| started.elapsed());
    writer.abort();
    closed
}

/// Noise of several sizes (plain, and behind a plausible TLS record header,
/// which makes the server wait for the announced length) and half a real
/// ClientHello, held open or followed by an EOF: each connection is closed
/// and counted as a failed or timed-out handshake, and costs nothing else.
/// The held half ClientHello is closed by the handshake timeout, not
/// before; the one followed by an EOF fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_cut_client_hellos_cost_only_their_connection() {
    const HELD: &str = "half a ClientHello, held open";
    const CUT: &str = "half a ClientHello, then EOF";
    under_attack("garbage", |addr, config, _| async move {
        let half = half_a_client_hello(config.clone());
        let mut cases = vec![
            (HELD.to_owned(), half.clone(), false),
            (CUT.to_owned(), half, true),
        ];
        let sizes = [1usize, 5, 100, 517, 4096, 16 * 1024 + 5, 64 * 1024];
        for (i, size) in (0..).zip(sizes) {
            let framed = [
                [0x16, 0x03, 0x01, 0x3f, 0xff].into(),
                pseudo_random(i + 100, size),
            ];
            let plain = pseudo_random(i + 1, size);
            cases.push((format!("{size} random bytes"), plain, false));
            cases.push((
                format!("record header + {size} random bytes"),
                framed.concat(),
                false,
            ));
        }
        let garbage = cases.len() as u64;
        let mut set = JoinSet::new();
        for (name, bytes, eof) in cases {
            set.spawn(async move {
                let within = HANDSHAKE_TIMEOUT + Duration::from_secs(4);
                let closed = send_and_wait_for_close(addr, bytes, eof, within).await;
                (
                    name.clone(),
                    closed.unwrap_or_else(|| panic!("{name}: kept open")),
                )
            });
        }
        let closed: BTreeMap<String, Duration> = set.join_all().await.into_iter().collect();
        let (held, cut) = (closed[HELD], closed[CUT]);
        let timeout = HANDSHAKE_TIMEOUT - Duration::from_millis(200);
        assert!(held >= timeout, "{HELD}: {held:?}");
        assert!(cut < HANDSHAKE_TIMEOUT, "{CUT}: closed after {cut:?}");
        let page = eventually(RELOAD, "every garbage connection counted", || async {
            let page = MetricsPage::fetch(addr, &config).await?;
            let bad = page.handshakes("failure") + page.handshakes("timeout");
            let counted = format!("{bad} of {garbage} counted");
            (bad == garbage).then_some(page).ok_or(counted)
        })
        .await;
        let (failed, timed_out) = (page.handshakes("failure"), page.handshakes("timeout"));
        format!("{garbage} connections: {failed} failed, {timed_out} timed out; {closed:?}")
    })
    .await;
}

/// Opens `count` TCP connections to `addr` (100 at a time) that never
/// finish a handshake: every other one sends `half` (half a ClientHello),
/// the rest send nothing.
async fn open_idle(addr: SocketAddr, half: Arc<Vec<u8>>, count: usize) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(100) {
        let mut set = JoinSet::new();
        for i in batch * 100..count.min(batch * 100 + 100) {
            let half = half.clone();
            set.spawn(async move {
                let mut tcp = tokio::time::timeout(EXCHANGE, TcpStream::connect(addr))
                    .await
                    .expect("connect timed out")
                    .expect("connect");
                if i % 2 == 1 {
                    tcp.write_all(&half).await.unwrap();
                }
                tcp
            });
        }
        idle.extend(set.join_all().await);
    }
    idle
}

/// Waits (bounded) until the gateway has counted `target` handshake
/// timeouts, sampling its RSS meanwhile; returns the count reached and
/// the highest RSS seen, in KiB.
async fn await_timeouts(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    pid: u32,
    target: u64,
) -> (u64, u64) {
    let mut peak = 0;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT + Duration::from_secs(15);
    loop {
        peak = peak.max(memory_kib(pid).0);
        let timeouts = metrics(addr, config).await.handshakes("timeout");
        if timeouts >= target || Instant::now() >= deadline {
            return (timeouts, peak);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_that_never_finish_the_handshake_time_out_with_bounded_memory() {
    const CONNECTIONS: usize = 1000;
    const MIB: u64 = 1024;
    // Three waves. Memory grows with the connections pending at once and
    // glibc keeps the freed heap, so RSS stays near the first peak instead
    // of returning to the baseline; later waves must reuse it (a leak of
    // the per-connection state, about 14 KiB, would add ~14 MiB a wave),
    // and every socket must be closed after each wave.
    const WAVES: u64 = 3;
    let own_limit = raise_nofile(std::process::id(), 2500);
    let enough = own_limit >= 2 * CONNECTIONS as u64;
    assert!(enough, "RLIMIT_NOFILE of the test process is {own_limit}");
    under_attack("slowloris", |addr, config, pid| async move {
        let child_limit = raise_nofile(pid, 4096);
        let enough = child_limit >= 2 * CONNECTIONS as u64;
        assert!(enough, "RLIMIT_NOFILE of the gateway is {child_limit}");
        // Baseline after some real traffic, so lazily allocated state is in.
        for _ in 0..20 {
            http_get(addr, &config, "/healthz").await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (baseline, baseline_fds) = (memory_kib(pid).0, open_fds(pid));
        let half = Arc::new(half_a_client_hello(config.clone()));
        let mut figures = Vec::new();
        for wave in 1..=WAVES {
            let idle = open_idle(addr, half.clone(), CONNECTIONS).await;
            assert_eq!(idle.len(), CONNECTIONS);
            let want = wave * CONNECTIONS as u64;
            let (timeouts, peak) = await_timeouts(addr, &config, pid, want).await;
            drop(idle);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (after, fds) = (memory_kib(pid).0, open_fds(pid));
            let wave = format!("wave {wave}: {timeouts} timeouts, RSS peak {peak} KiB");
            let wave = format!("{wave}, after {after} KiB, {fds} fds");
            let counted = (want - 10..=want).contains(&timeouts);
            assert!(counted, "{wave}: {want} timeouts expected");
            // More than a few is a connection leaked.
            assert!(fds <= baseline_fds + 8, "{wave}: {baseline_fds} fds before");
            figures.push((peak, after, wave));
        }
        // VmHWM and the sampled VmRSS are kept apart by the kernel's
        // per-thread RSS counters: the peak is the larger.
        let hwm = figures
            .iter()
            .map(|f| f.0)
            .fold(memory_kib(pid).1, u64::max);
        let page = metrics(addr, &config).await;
        assert_eq!(page.handshakes("failure"), 0, "{}", page.0);
        let grown = |kib: u64| kib.saturating_sub(baseline);
        let (first, last) = (figures[0].1, figures[figures.len() - 1].1);
        let report = format!("baseline {baseline} KiB, {baseline_fds} fds, VmHWM {hwm} KiB");
        let report = format!("{report}, {figures:?}");
        let (peak, kept) = (grown(hwm), grown(last));
        assert!(peak < 64 * MIB, "RSS grew by {peak} KiB: {report}");
        assert!(kept < 32 * MIB, "RSS stayed high: {report}");
        // A leak would grow it wave after wave: memory must be reused.
        let growth = last.saturating_sub(first);
        assert!(growth < 12 * MIB, "RSS kept growing: {report}");
        report
    })
    .await;
}

/// One `GET /healthz` over TLS in `version` with a header of `size`
/// bytes: the status, or the error that ended the exchange.
async fn with_big_header(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    version: Http,
    size: usize,
) -> Result<u16, String> {
    let request = http::Request::get("https://localhost/healthz")
        .header("x-oversized", "a".repeat(size))
        .body(Full::default())
        .unwrap();
    let reply = tls::send(addr, Some(config.clone()), version, request, EXCHANGE * 2).await;
    reply.map(|r| r.status).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_or_a_closed_connection_never_a_crash() {
    const MIB: usize = 1024 * 1024;
    under_attack("oversized headers", |addr, config, _| async move {
        // HTTP/1.1: one 1 MiB header. HTTP/2: 1 MiB (too many CONTINUATION
        // frames), 64 KiB (far over the 16 KiB header list limit) and
        // 20 KiB (just over it).
        let mut outcomes = Vec::new();
        let cases = [
            (Http::One, MIB),
            (Http::Two, MIB),
            (Http::Two, 64 << 10),
            (Http::Two, 20 << 10),
        ];
        for (version, size) in cases {
            let outcome = with_big_header(addr, &config, version, size).await;
            let what = format!("{version:?} with a {size}-byte header: {outcome:?}");
            assert!(matches!(outcome, Ok(431) | Err(_)), "{what}");
            outcomes.push(what);
        }
        // The same client still gets served normally afterwards.
        assert_eq!(http_get(addr, &config, "/healthz").await, "ok\n");
        outcomes.join("; ")
    })
    .await;
}

// === 3. secrets ===

/// `der` as PEM under `label`, 64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// Standard base64 with padding, on one line.
fn base64(bytes: &[u8]) -> String {
    let pem = pem("X", bytes);
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The DER of a P-256 PKCS#8 key PEM, and where its `ECPrivateKey` (the
/// last element, the SEC1 form) starts: a SEQUENCE of version INTEGER 1
/// (`02 01 01`) then the 32-byte secret scalar (`04 20 ...`).
fn p256_key(pkcs8_pem: &str) -> (Vec<u8>, usize) {
    let der = PrivateKeyDer::from_pem_slice(pkcs8_pem.as_bytes()).unwrap();
    let der = der.secret_der().to_vec();
    let version_and_scalar = der.windows(5).position(|w| w == [2, 1, 1, 4, 32]);
    let at = version_and_scalar.expect("a P-256 PKCS#8 key") - 2;
    let header = (der[at], usize::from(der[at + 1]));
    assert_eq!(
        header,
        (0x30, der.len() - at - 2),
        "an ECPrivateKey SEQUENCE ends the key"
    );
    (der, at)
}

/// The same key as a SEC1 `EC PRIVATE KEY` PEM, the form cert-manager
/// writes ECDSA keys in with its default PKCS#1 encoding.
fn sec1_pem(pkcs8_pem: &str) -> String {
    let (der, at) = p256_key(pkcs8_pem);
    let sec1 = pem("EC PRIVATE KEY", &der[at..]);
    let parsed = PrivateKeyDer::from_pem_slice(sec1.as_bytes()).unwrap();
    assert!(matches!(parsed, PrivateKeyDer::Sec1(_)));
    sec1
}

/// Strings that must never appear in anything the gateway writes, for each
/// private key PEM: every base64 line of 16 characters or more, the whole
/// base64 body, the DER in hex, 16-byte windows of the secret scalar in hex
/// and base64, and 16-character pieces of the PEM body that encode nothing
/// but scalar bytes (so a quote of part of a line is caught too).
fn key_needles(pems: &[String]) -> Vec<(String, String)> {
    let mut needles = Vec::new();
    for (k, pem) in pems.iter().enumerate() {
        let mut add = |what: String, needle| needles.push((format!("key #{k} {what}"), needle));
        let lines = pem.lines().map(str::trim);
        let body: Vec<&str> = lines
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            .collect();
        assert!(!body.is_empty(), "key #{k} has no base64 lines");
        for (i, line) in body.iter().enumerate() {
            add(format!("base64 line {i}"), (*line).to_owned());
        }
        // A SEC1 PEM is the end of its PKCS#8 form: search by the scalar.
        let (der, at) = if pem.contains("EC PRIVATE KEY") {
            let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
            (der.secret_der().to_vec(), 0)
        } else {
            p256_key(pem)
        };
        add("DER, base64".to_owned(), base64(&der));
        add("DER, hex".to_owned(), hex_upper(&der));
        let (scalar_start, scalar_end) = (at + 7, at + 7 + 32);
        let scalar = &der[scalar_start..scalar_end];
        add("scalar, base64".to_owned(), base64(scalar));
        for offset in [0, 8, 16] {
            let window = &scalar[offset..offset + 16];
            add(format!("scalar[{offset}..+16], hex"), hex_upper(window));
            add(format!("scalar[{offset}..+16], base64"), base64(window));
        }
        let body = base64(&der);
        let mut c = scalar_start.div_ceil(3) * 4;
        while c / 4 * 3 + 12 <= scalar_end {
            let piece = body[c..c + 16].to_owned();
            add(format!("PEM body chars {c}..+16 (scalar)"), piece);
            c += 4;
        }
    }
    needles
}

/// Contexts in which the words `PRIVATE KEY` are a diagnostic naming the
/// PEM label that was expected, not key material.
const LABEL_DIAGNOSTICS: &[&str] = &[
    "no PRIVATE KEY PEM block found",
    "expected PEM with a PRIVATE KEY block",
    "missing the -----END PRIVATE KEY----- line",
    "missing the -----END EC PRIVATE KEY----- line",
    "BEGIN line of a PRIVATE KEY section",
    "BEGIN line of a EC PRIVATE KEY section",
];

/// What in `text` (one output of the gateway, named `what`) looks like
/// key material: PEM armour, `PRIVATE KEY` outside a label diagnostic, or
/// any of the `needles`. One finding per kind and needle, each with an
/// excerpt.
fn key_material_in(what: &str, text: &str, needles: &[(String, String)]) -> Vec<String> {
    // Up to 120 bytes before and 200 after `at`.
    let excerpt = |text: &str, at: usize| {
        let bytes = &text.as_bytes()[at.saturating_sub(120)..(at + 200).min(text.len())];
        String::from_utf8_lossy(bytes).into_owned()
    };
    let mut findings = Vec::new();
    if let Some(at) = text.find("-----BEGIN") {
        findings.push(format!("{what}: PEM armour: …{}…", excerpt(text, at)));
    }
    let stripped = LABEL_DIAGNOSTICS
        .iter()
        .fold(text.to_owned(), |t, allowed| {
            t.replace(allowed, "<label diagnostic>")
        });
    if let Some(at) = stripped.find("PRIVATE KEY") {
        findings.push(format!(
            "{what}: `PRIVATE KEY`: …{}…",
            excerpt(&stripped, at)
        ));
    }
    let lower = text.to_ascii_lowercase();
    for (name, needle) in needles {
        let found = if needle.chars().all(|c| c.is_ascii_hexdigit()) {
            lower.find(&needle.to_ascii_lowercase())
        } else {
            text.find(needle.as_str())
        };
        if let Some(at) = found {
            findings.push(format!("{what}: {name}: …{}…", excerpt(text, at)));
        }
    }
    findings
}

/// A gateway logging in `format` (`json`, or `pretty`, whose listening
/// line the harness does not read: it gets a port chosen here) with
/// `RUST_LOG=debug`.
async fn start_logging(pki: &Pki, format: &'static str) -> (GatewayProcess, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_loopback_port().unwrap()));
    let cmd = pki.gateway(true).arg("--bind").arg(addr.to_string());
    let cmd = cmd.log_format(format).env("RUST_LOG", "debug");
    let cmd = cmd.ocsf_log(pki.audit_log());
    let gateway = cmd.spawn().unwrap();
    let client = pki.client(true);
    let up = tls::wait_until_served(addr, &client, &pki.leaf.fingerprint, STARTUP, EVERY);
    up.await.unwrap();
    (gateway, addr)
}

/// Stops `gateway` with SIGTERM and adds everything it printed to `out`.
async fn stop_logging(mut gateway: GatewayProcess, format: &str, out: &mut Outputs) {
    gateway.signal("TERM").unwrap();
    let status = gateway.exit_within(Duration::from_secs(10)).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{}", gateway.output());
    out.push((
        format!("{format} stderr"),
        gateway.stderr_lines().join("\n"),
    ));
    out.push((
        format!("{format} stdout"),
        gateway.stdout_lines().join("\n"),
    ));
}

/// Everything a gateway said: where, and what.
type Outputs = Vec<(String, String)>;

/// A broken Secret content: its name, `tls.crt` and `tls.key`.
type Payload = (&'static str, Vec<u8>, Vec<u8>);

/// Every kind of broken Secret content, and the key PEMs they show the
/// gateway.
fn broken_payloads(ca: &TestCa) -> (Vec<Payload>, Vec<String>) {
    let (a, b) = (ca.server(), ca.server());
    let (cert, key) = (a.cert_pem.as_bytes(), a.key_pem.as_str());
    let sec1 = sec1_pem(key);
    let flat = |pem: &str, sep: &str| pem.lines().collect::<Vec<_>>().join(sep).into_bytes();
    let half = |pem: &str| pem.as_bytes()[..pem.len() / 2].to_vec();
    let row = |name, key: Vec<u8>| (name, cert.to_vec(), key);
    let mut garbled: Vec<&str> = key.lines().collect();
    garbled.insert(2, "!!not*base64!!");
    let relabelled = |label: &str| key.replace("PRIVATE KEY", label).into_bytes();
    let payloads = vec![
        row("garbage key", garbled.join("\n").into_bytes()),
        row("mismatched pair", b.key_pem.clone().into_bytes()),
        row("truncated key", half(key)),
        row("two keys", format!("{key}{}", b.key_pem).into_bytes()),
        // Newlines lost in a copy, with no separator and with spaces.
        row("key on one line", flat(key, "")),
        row("key on one line, spaces", flat(key, " ")),
        // A SEC1 key's secret starts nine base64 characters after the BEGIN
        // line. (The "missing END line" diagnostic used to quote what
        // followed the BEGIN line's dashes: the whole key, later its first
        // 64 bytes, which for SEC1 is 27 of the 32 secret bytes.)
        row("SEC1 key on one line", flat(&sec1, "")),
        row("truncated SEC1 key", half(&sec1)),
        row("DER key", p256_key(key).0),
        ("key in the certificate file", key.into(), key.into()),
        (
            "key labelled CERTIFICATE",
            relabelled("CERTIFICATE"),
            key.into(),
        ),
        row(
            "PKCS#8 key labelled EC PRIVATE KEY",
            relabelled("EC PRIVATE KEY"),
        ),
    ];
    (payloads, vec![a.key_pem, b.key_pem, sec1])
}

/// Drives one gateway through every kind of failure and two good
/// rotations; returns what its APIs said and every key PEM it was shown.
async fn run_full_of_failures(
    pki: &Pki,
    gateway: &GatewayProcess,
    addr: SocketAddr,
) -> (Outputs, Vec<String>) {
    let config = pki.client(true);
    let mut client = grpc(addr, &config).await;
    let mut out = Outputs::new();
    let (payloads, mut keys) = broken_payloads(&pki.server_ca);
    keys.extend([pki.leaf.key_pem.clone(), pki.client.key_pem.clone()]);
    let signal_failures = |page: MetricsPage| {
        let labels = [("result", "failure"), ("trigger", "signal")];
        page.sum("openshell_tls_reload_total", &labels)
    };
    for (n, (name, cert, key)) in payloads.into_iter().enumerate() {
        pki.publish(&cert, &key);
        // The watcher reports it once.
        eventually(RELOAD, &format!("{name}: failure event"), || async {
            let events = ocsf::read_file(&pki.audit_log()).unwrap_or_default();
            let seen = with_code(&events, "tls_reload_failed").count();
            if seen > n { Ok(()) } else { Err(seen) }
        })
        .await;
        // ReloadTls fails cleanly with the cause.
        let status = reload_tls(&mut client).await.unwrap_err();
        let code = status.code();
        assert_eq!(code, Code::FailedPrecondition, "{name}: {status:?}");
        out.push((
            format!("ReloadTls error ({name})"),
            status.message().to_owned(),
        ));
        // So does SIGHUP (counted by trigger: a watcher retry may be the
        // last attempt by the time we look).
        let before = signal_failures(metrics(addr, &config).await);
        gateway.signal("HUP").unwrap();
        eventually(RELOAD, &format!("{name}: SIGHUP failure"), || async {
            let seen = signal_failures(MetricsPage::fetch(addr, &config).await?);
            if seen > before {
                Ok(())
            } else {
                Err(format!("{seen} signal failures"))
            }
        })
        .await;
        let status = tls_status(&mut client).await;
        out.push((format!("GetTlsStatus ({name})"), format!("{status:?}")));
        out.push((
            format!("/v1/tls ({name})"),
            http_get(addr, &config, "/v1/tls").await,
        ));
        let served = status.certificate.unwrap_or_default().fingerprint_sha256;
        assert_eq!(served, pki.leaf.fingerprint, "{name}: changed");
    }

    // Clients that fail their handshakes.
    let stranger = TestCa::new("stranger CA").client("stranger");
    keys.push(stranger.key_pem.clone());
    let trusting = |ca: &str, identity| tls::client_config(ca, Some(identity)).unwrap();
    let refused = [
        ("no client certificate", pki.client(false)),
        (
            "an unknown CA's client",
            trusting(pki.server_ca.cert_pem(), &stranger),
        ),
        (
            "a client not trusting the server",
            trusting(TestCa::new("other").cert_pem(), &pki.client),
        ),
    ];
    for (name, bad) in refused {
        let result = tls::get(addr, bad, "/healthz", EXCHANGE).await;
        assert!(result.is_err(), "{name}: accepted");
    }
    let _ = send_and_wait_for_close(addr, pseudo_random(7, 300), false, EXCHANGE).await;

    // Two good rotations, each through ReloadTls.
    for _ in 0..2 {
        let leaf = pki.server_ca.server();
        keys.push(leaf.key_pem.clone());
        pki.publish_leaf(&leaf);
        let reply = reload_tls(&mut client).await.unwrap();
        out.push(("ReloadTls reply".to_owned(), format!("{reply:?}")));
        let served = tls::served_fingerprint(addr, config.clone(), EXCHANGE).await;
        assert_eq!(served.unwrap(), leaf.fingerprint);
    }

    let status = tls_status(&mut client).await;
    assert!(status.reloads_failed >= 20, "{status:?}");
    out.push(("GetTlsStatus (end)".to_owned(), format!("{status:?}")));
    for path in ["/metrics", "/v1/tls"] {
        out.push((format!("{path} (end)"), http_get(addr, &config, path).await));
    }
    (out, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_gateway_writes_contains_key_material() {
    let started = Instant::now();
    let (json_pki, pretty_pki) = (Pki::new(), Pki::new());
    let (json, json_addr) = start_logging(&json_pki, "json").await;
    let (pretty, pretty_addr) = start_logging(&pretty_pki, "pretty").await;
    let (json_run, pretty_run) = tokio::join!(
        run_full_of_failures(&json_pki, &json, json_addr),
        run_full_of_failures(&pretty_pki, &pretty, pretty_addr),
    );
    let mut checked = Vec::new();
    let mut findings = Vec::new();
    for (pki, gateway, format, (mut outputs, keys)) in [
        (&json_pki, json, "json", json_run),
        (&pretty_pki, pretty, "pretty", pretty_run),
    ] {
        stop_logging(gateway, format, &mut outputs).await;
        let audit = std::fs::read_to_string(pki.audit_log()).unwrap();
        outputs.push(("OCSF file".to_owned(), audit));
        let keys: Vec<String> = keys
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let needles = key_needles(&keys);
        for (what, text) in &outputs {
            findings.extend(key_material_in(what, text, &needles));
        }
        let kib = outputs.iter().map(|(_, t)| t.len()).sum::<usize>() / 1024;
        let (n, k) = (needles.len(), keys.len());
        checked.push(format!(
            "{} outputs ({kib} KiB) against {n} needles from {k} keys",
            outputs.len()
        ));
    }
    let n = findings.len();
    let findings = findings.join("\n");
    assert!(n == 0, "{n} findings of key material:\n{findings}");
    let took = started.elapsed();
    say(&format!(
        "secrets: JSON run {}; pretty run {}; {took:.1?}",
        checked[0], checked[1]
    ));
}
