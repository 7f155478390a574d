//! What `faults.rs` and `hardening.rs` share: their time limits, a client
//! probing the gateway in the background, its `/metrics` page, its memory,
//! and the OCSF check a run ends with.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use openshell_e2e::ocsf::{self, SchemaCheck};
use openshell_e2e::{GatewayProcess, eventually, tls};
use rustls::ClientConfig;
use tokio::task::JoinHandle;

/// How long the gateway may take to start listening.
pub const STARTUP: Duration = Duration::from_secs(10);
/// How long a change may take to be served or reported (the debounce is
/// 50 or 100 ms; the rest is slack for a loaded two-core machine).
pub const RELOAD: Duration = Duration::from_secs(5);
/// One TLS exchange or RPC.
pub const EXCHANGE: Duration = Duration::from_secs(5);
/// How often a wait probes.
pub const EVERY: Duration = Duration::from_millis(25);

/// Writes a line to the test's stderr even when the harness captures
/// output, so a skipped check or a figure is visible.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A Prometheus text page from `GET /metrics`.
pub struct MetricsPage(pub String);

impl MetricsPage {
    /// The page, or why it could not be had.
    pub async fn fetch(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<Self, String> {
        let reply = tls::get(addr, config.clone(), "/metrics", EXCHANGE)
            .await
            .map_err(|e| e.to_string())?;
        match reply.status {
            200 => Ok(Self(reply.body)),
            status => Err(format!("/metrics: HTTP {status}")),
        }
    }

    /// Sum of the series named `name` whose labels include every one of
    /// `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let total: f64 = self
            .0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
                let have: Vec<(&str, &str)> = rest
                    .trim_end_matches('}')
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k, v.trim_matches('"')))
                    .collect();
                (metric == name && labels.iter().all(|want| have.contains(want)))
                    .then(|| value.parse::<f64>().ok())?
            })
            .sum();
        total as u64
    }

    /// `openshell_tls_handshakes_total{result=...}`.
    pub fn handshakes(&self, result: &str) -> u64 {
        self.sum("openshell_tls_handshakes_total", &[("result", result)])
    }
}

/// `VmRSS` (resident now) and `VmHWM` (its peak so far, where a buffer
/// allocated and freed between two looks shows) of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Every OCSF line validates against the schema, when the schema files are
/// there; says so when they are not.
pub fn assert_ocsf_valid(gateway: &GatewayProcess) {
    let events = gateway.ocsf_events().unwrap();
    match ocsf::validate(&events).unwrap() {
        SchemaCheck::Validated { events: n, .. } => assert_eq!(n, events.len()),
        SchemaCheck::Skipped { reason } => say(&format!("OCSF schema check skipped: {reason}")),
        other => panic!("unexpected schema check {other:?}"),
    }
}

/// What one try of a [`Prober`] saw: what was served, or why it failed.
pub type Probe = Result<String, String>;

/// A well-behaved client trying again and again, [`PROBE_PAUSE`] apart
/// (for at most [`PROBE_MAX_TIME`]), recording what each try saw until
/// stopped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
    task: JoinHandle<()>,
}

/// Pause between a prober's tries.
const PROBE_PAUSE: Duration = Duration::from_millis(20);
/// How long a prober runs at most.
const PROBE_MAX_TIME: Duration = Duration::from_secs(60);

impl Prober {
    fn spawn<F, Fut>(mut probe: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Probe> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, probes) = (stop.clone(), probes.clone());
            async move {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < PROBE_MAX_TIME {
                    let seen = probe().await;
                    lock(&probes).push(seen);
                    tokio::time::sleep(PROBE_PAUSE).await;
                }
            }
        });
        Self { stop, probes, task }
    }

    /// Full handshakes, each recording the served fingerprint.
    pub fn handshakes(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        Self::spawn(move || {
            let config = config.clone();
            async move {
                let served = tls::served_fingerprint(addr, config, EXCHANGE).await;
                served.map_err(|e| e.to_string())
            }
        })
    }

    /// `GET /healthz` over TLS, each of which must answer 200.
    pub fn healthz(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        Self::spawn(move || {
            let config = config.clone();
            async move {
                match tls::get(addr, config, "/healthz", EXCHANGE).await {
                    Ok(reply) if reply.status == 200 => Ok(reply.body),
                    Ok(reply) => Err(format!("HTTP {}", reply.status)),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
    }

    /// How many tries so far.
    pub fn len(&self) -> usize {
        lock(&self.probes).len()
    }

    /// Waits until `n` tries have been recorded.
    pub async fn wait_for(&self, n: usize) {
        eventually(RELOAD, EVERY, &format!("{n} tries of the prober"), || {
            let seen = self.len();
            async move { if seen >= n { Ok(()) } else { Err(seen) } }
        })
        .await
        .unwrap();
    }

    /// Stops it and returns what each try saw; `what` failed if any try
    /// failed, or none ran.
    pub async fn stop(self, what: &str) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let stopped = tokio::time::timeout(EXCHANGE * 2, self.task).await;
        stopped.expect("the prober did not stop").unwrap();
        let probes = std::mem::take(&mut *lock(&self.probes));
        assert!(!probes.is_empty(), "{what}: the prober never ran");
        let n = probes.len();
        let seen = probes.into_iter().enumerate();
        seen.map(|(i, p)| p.unwrap_or_else(|e| panic!("{what}: try #{i} of {n} failed: {e}")))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
