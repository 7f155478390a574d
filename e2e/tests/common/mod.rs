//! What the local tests share: their time limits, the usual client calls,
//! the in-process gateway, a client probing the gateway in the background,
//! its `/metrics` page, its memory, and the checks of its audit stream.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use openshell_e2e::ocsf::with_code;
use openshell_e2e::tls::Http;
use openshell_e2e::{GatewayCommand, GatewayProcess, tls};
use openshell_server::{Config, Gateway, GatewayHandle, TlsMode};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tls_reload::TlsFiles;
use tls_reload::testing::{Leaf, SecretVolumes, eventually};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::Channel;

/// How long the gateway may take to start listening.
pub const STARTUP: Duration = Duration::from_secs(10);
/// How long a change may take to be served or reported (the debounce is
/// 50 or 100 ms; the rest is slack for a loaded two-core machine).
pub const RELOAD: Duration = Duration::from_secs(5);
/// One TLS exchange or RPC.
pub const EXCHANGE: Duration = Duration::from_secs(5);
/// How often a wait probes.
pub const EVERY: Duration = Duration::from_millis(25);

/// The gateways and clients of the tests that serve [`SecretVolumes`]: a
/// server volume, a client-CA volume, their CAs and a client certificate.
pub trait Volumes {
    /// Where [`start`](Self::start) has the gateway write its OCSF events.
    fn audit_log(&self) -> PathBuf;
    /// A gateway serving the server volume with a 100 ms debounce,
    /// requiring client certificates of the client-CA volume when `mtls`;
    /// without `--bind`.
    fn gateway(&self, mtls: bool) -> GatewayCommand;
    /// [`gateway`](Self::gateway) on an ephemeral loopback port with
    /// `extra` arguments and its events in [`audit_log`](Self::audit_log),
    /// started.
    async fn start(&self, mtls: bool, extra: &[&str]) -> (GatewayProcess, SocketAddr);
    /// A client trusting the server CA and presenting `identity`.
    fn client_as(&self, identity: Option<&Leaf>) -> Arc<ClientConfig>;
    /// A client trusting the server CA, presenting the volumes' client
    /// certificate when `with_cert`.
    fn client(&self, with_cert: bool) -> Arc<ClientConfig>;
}

impl Volumes for SecretVolumes {
    fn audit_log(&self) -> PathBuf {
        self.dir().join("audit.jsonl")
    }

    fn gateway(&self, mtls: bool) -> GatewayCommand {
        let cmd = GatewayCommand::new()
            .args(["--tls-reload-debounce", "100ms", "--tls-cert"])
            .arg(self.server.path("tls.crt"))
            .arg("--tls-key")
            .arg(self.server.path("tls.key"));
        let ca = self.client_ca_volume.path("ca.crt");
        let mtls_args = ["--tls-client-auth", "required", "--tls-client-ca"];
        if mtls {
            cmd.args(mtls_args).arg(ca)
        } else {
            cmd
        }
    }

    async fn start(&self, mtls: bool, extra: &[&str]) -> (GatewayProcess, SocketAddr) {
        let cmd = self
            .gateway(mtls)
            .args(["--bind", "127.0.0.1:0"])
            .args(extra);
        cmd.ocsf_log(self.audit_log()).start(STARTUP).await.unwrap()
    }

    fn client_as(&self, identity: Option<&Leaf>) -> Arc<ClientConfig> {
        tls::client_config(self.server_ca.cert_pem(), identity).unwrap()
    }

    fn client(&self, with_cert: bool) -> Arc<ClientConfig> {
        self.client_as(with_cert.then_some(&self.client))
    }
}

/// The fingerprint a fresh handshake is served.
pub async fn served(addr: SocketAddr, client: &Arc<ClientConfig>) -> String {
    let served = tls::served_fingerprint(addr, client.clone(), EXCHANGE).await;
    served.unwrap()
}

/// Waits until a fresh handshake is served `fingerprint`.
pub async fn wait_until_served(addr: SocketAddr, client: &Arc<ClientConfig>, fingerprint: &str) {
    let wait = tls::wait_until_served(addr, client, fingerprint, RELOAD, EVERY);
    wait.await.unwrap();
}

/// `GET path` over TLS as `client`; the reply, which must be a 200.
pub async fn get_ok(addr: SocketAddr, client: &Arc<ClientConfig>, path: &str) -> tls::Reply {
    let reply = tls::get(addr, client.clone(), path, EXCHANGE)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
    reply
}

/// A config serving `files` in process on an ephemeral loopback port, with
/// a 50 ms debounce and a 2 s shutdown grace.
pub fn in_process(files: TlsFiles) -> Config {
    let mut config = Config::with_tls("127.0.0.1:0".parse().unwrap(), files);
    if let TlsMode::Files {
        reload: Some(r), ..
    } = &mut config.tls
    {
        r.debounce = Duration::from_millis(50);
    }
    config.shutdown_grace = Duration::from_secs(2);
    config
}

/// A gateway serving `config` in this process until stopped or dropped.
pub async fn spawn(config: Config) -> GatewayHandle {
    Gateway::spawn(config).await.unwrap()
}

/// `GET path` over TLS as `client` with HTTP `version`; the whole reply.
pub async fn get_with(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    version: Http,
    path: &str,
) -> tls::Reply {
    let request = tls::get_request(path).unwrap();
    let sent = tls::send(addr, Some(client.clone()), version, request, EXCHANGE);
    sent.await.unwrap()
}

/// `GET path` in plaintext HTTP/1.1 (the health port); the whole reply.
pub async fn get_plain(addr: SocketAddr, path: &str) -> tls::Reply {
    let request = tls::get_request(path).unwrap();
    let sent = tls::send(addr, None, Http::One, request, EXCHANGE);
    sent.await.unwrap()
}

/// A gRPC channel over TLS as `client`.
pub async fn grpc(addr: SocketAddr, client: &Arc<ClientConfig>) -> Channel {
    let channel = tls::grpc_channel(addr, Some(client), EXCHANGE);
    channel.await.unwrap()
}

/// A bare TLS stream offering the ALPN protocol of `version`, for the
/// tests that write bytes no HTTP client would.
pub async fn tls_stream(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    version: Http,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let connector = TlsConnector::from(tls::with_alpn(client, version));
    connector.connect(name, tcp).await.unwrap()
}

/// Waits for the first event with `code` that satisfies `pred`.
pub async fn event(
    gateway: &mut GatewayProcess,
    code: &'static str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("an OCSF {code} event");
    let found = gateway.wait_for_ocsf(RELOAD, &what, |events| {
        with_code(events, code).find(|e| pred(e)).cloned()
    });
    found.await.unwrap()
}

/// Waits until a stderr line of `gateway` contains each of `needles`;
/// returns it.
pub async fn logged(gateway: &mut GatewayProcess, needles: &[&str]) -> String {
    let what = format!("a log line with {needles:?}");
    let found = gateway.wait_for_stderr(RELOAD, &what, |l| needles.iter().all(|n| l.contains(n)));
    found.await.unwrap()
}

/// The TLS details `names` of `event`, as one JSON array to compare.
pub fn details(event: &Value, names: &[&str]) -> Value {
    let tls = openshell_e2e::ocsf::tls_details(event);
    names.iter().map(|name| tls[name].clone()).collect()
}

/// Every OCSF line of `gateway` validates against the schema (when the
/// schema files are there); returns the events.
pub fn assert_ocsf_valid(gateway: &GatewayProcess) -> Vec<Value> {
    let events = gateway.ocsf_events().unwrap();
    openshell_e2e::ocsf::check(&events).unwrap();
    events
}

/// No PEM armour and none of `keys` in the audit file at `path`.
pub fn assert_no_key_material(path: &Path, keys: &[&str]) {
    let audit = std::fs::read_to_string(path).unwrap();
    assert!(!audit.contains("-----BEGIN"), "PEM in the audit log");
    for key in keys {
        assert!(!audit.contains(key.trim()), "key material in the audit log");
    }
}

/// A Prometheus text page from `GET /metrics`.
pub struct MetricsPage(pub String);

impl MetricsPage {
    /// The page, or why it could not be had.
    pub async fn fetch(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<Self, String> {
        let reply = tls::get(addr, config.clone(), "/metrics", EXCHANGE).await;
        let reply = reply.map_err(|e| e.to_string())?;
        let ok = reply.status == 200;
        ok.then_some(Self(reply.body))
            .ok_or(format!("/metrics: HTTP {}", reply.status))
    }

    /// Sum of the series named `name` whose labels include every one of
    /// `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let value = |line: &str| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let pairs = rest
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| kv.split_once('='));
            let have: Vec<(&str, &str)> = pairs.map(|(k, v)| (k, v.trim_matches('"'))).collect();
            let wanted = metric == name && labels.iter().all(|want| have.contains(want));
            wanted.then(|| value.parse::<f64>().ok())?
        };
        let samples = self.0.lines().filter(|l| !l.starts_with('#'));
        samples.filter_map(value).sum::<f64>() as u64
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
                let reply = tls::get(addr, config, "/healthz", EXCHANGE).await;
                let reply = reply.map_err(|e| e.to_string())?;
                let ok = reply.status == 200;
                ok.then_some(reply.body)
                    .ok_or(format!("HTTP {}", reply.status))
            }
        })
    }

    /// How many tries so far.
    pub fn len(&self) -> usize {
        lock(&self.probes).len()
    }

    /// Waits until `n` tries have been recorded.
    pub async fn wait_for(&self, n: usize) {
        eventually(RELOAD, &format!("{n} tries of the prober"), || {
            let seen = self.len();
            async move { if seen >= n { Ok(()) } else { Err(seen) } }
        })
        .await;
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
