//! Figures 4 and 6, through the real gateway (`openshell_server::Gateway`
//! in this process): rotations under concurrent handshakes, and gRPC
//! throughput.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use openshell_server::pb::GetTlsStatusRequest;
use openshell_server::pb::gateway_client::GatewayClient;
use openshell_server::{Config, Gateway, TlsMode};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tls_reload::testing::{AtomicWriter, Leaf, TestCa};
use tls_reload::{ReloadEvent, ReloadableAcceptor, TlsFiles};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::handshake::{Pairs, Plan};
use crate::load::{self, After, ClientSpec, Clients, Published, Rate};
use crate::util::{self, Row, Settings};

/// A gateway serving in this process until stopped.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) acceptor: Option<ReloadableAcceptor>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<openshell_server::Result<()>>,
}

impl Running {
    pub(crate) async fn start(config: Config) -> Self {
        let gateway = Gateway::bind(config).await.expect("gateway bind");
        let addr = gateway.local_addr().expect("gateway address");
        let acceptor = gateway.acceptor().cloned();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            acceptor,
            stop: Some(tx),
            task,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .is_err()
        {
            println!("   gateway did not stop within 20 s; aborting it");
            abort.abort();
        }
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
    let writer = AtomicWriter::new(dir.join("server")).expect("volume");
    writer
        .write(&util::payload(leaf, ca))
        .expect("initial write");
    let files = TlsFiles::new(writer.path("tls.crt"), writer.path("tls.key"));
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

/// `GET /metrics` over TLS and HTTP/1.1.
async fn metrics(addr: SocketAddr, ca: &TestCa) -> io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let mut tls = TlsConnector::from(load::client(ca.cert_pem(), &["http/1.1"]))
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    tls.read_to_end(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The value of the sample `series` (name with labels) in Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Server-side handshake failures and timeouts counted by the gateway.
async fn server_failures(addr: SocketAddr, ca: &TestCa) -> (f64, f64) {
    match metrics(addr, ca).await {
        Ok(text) => (
            sample(&text, "openshell_tls_handshakes_total{result=\"failure\"}"),
            sample(&text, "openshell_tls_handshakes_total{result=\"timeout\"}"),
        ),
        Err(e) => {
            println!("   could not read /metrics: {e}");
            (f64::NAN, f64::NAN)
        }
    }
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
    println!(
        "   {} distinct leaves generated in {:.1} s",
        leaves.len(),
        started.elapsed().as_secs_f64()
    );
    let published = Arc::new(Published::new(leaves.iter().map(|l| l.fingerprint.clone())));
    let tmp = tempfile::tempdir().expect("tempdir");
    let debounce = Duration::from_millis(10);
    let (writer, config) = volume_config(tmp.path(), &ca, &leaves[0], debounce);
    let gateway = Running::start(config).await;
    let acceptor = gateway.acceptor.clone().expect("TLS gateway");
    let mut events = acceptor.subscribe();
    let (fail0, timeout0) = server_failures(gateway.addr, &ca).await;

    let spec = ClientSpec {
        addr: gateway.addr,
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
            println!(
                "   time budget of {} s spent after {} rotations",
                budget.as_secs(),
                r - 1
            );
            break;
        }
        published.publish(r);
        let (w, payload_leaf, payload_ca) =
            (writer.clone(), leaf.clone(), ca.cert_pem().to_owned());
        let tr = Instant::now();
        tokio::task::spawn_blocking(move || {
            w.write(&[
                ("tls.crt", payload_leaf.cert_pem.as_bytes()),
                ("tls.key", payload_leaf.key_pem.as_bytes()),
                ("ca.crt", payload_ca.as_bytes()),
            ])
            .expect("kubelet-style write")
        })
        .await
        .expect("writer task");
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
    let (fail1, timeout1) = server_failures(gateway.addr, &ca).await;
    let status = acceptor.status();
    gateway.stop().await;

    let failed = counters.failed.load(Ordering::Relaxed);
    let total = counters.ok.load(Ordering::Relaxed);
    let mismatched = counters.mismatched.load(Ordering::Relaxed);
    let seen = counters.seen.lock().expect("seen").len();
    let first_error = counters
        .first_error
        .lock()
        .expect("first error")
        .clone()
        .map(|e| format!("; first error: {e}"))
        .unwrap_or_default();
    let server_failed = (fail1 - fail0) + (timeout1 - timeout0);
    println!(
        "   {served} rotations served in {:.1} s (p50 {:.1} ms, p99 {:.1} ms each, debounce {} ms), \
         {handshakes} handshakes meanwhile ({:.0}/s), generation now {}, {} failed reloads",
        elapsed.as_secs_f64(),
        util::percentile(&per_rotation, 50.0),
        util::percentile(&per_rotation, 99.0),
        debounce.as_millis(),
        handshakes as f64 / elapsed.as_secs_f64(),
        status.generation,
        status.reloads_failed,
    );
    vec![
        Row::check(
            figure_failed,
            format!(
                "{failed} client-side of {total}; {server_failed} server-side (gateway metrics){first_error}"
            ),
            "0",
            failed == 0 && server_failed == 0.0,
        ),
        Row::check(
            figure_mismatch,
            format!(
                "{mismatched} unpublished certs served; every handshake verified the served key; \
                 {seen} distinct certs seen by clients"
            ),
            "0",
            mismatched == 0,
        ),
        Row::check(
            "4. rotations swapped in",
            format!(
                "{served}/{rotations} in {:.1} s (p50 {:.1} ms each), {} failed reloads",
                elapsed.as_secs_f64(),
                util::percentile(&per_rotation, 50.0),
                status.reloads_failed
            ),
            format!("{rotations}/{rotations}, 0 failed"),
            served == rotations && not_served == 0 && status.reloads_failed == 0,
        ),
    ]
}

// === gRPC ===

/// Any byte stream a gRPC channel can run over.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A gRPC channel (one HTTP/2 connection) to `addr`, over TLS when `tls`
/// is given, else plaintext HTTP/2 (prior knowledge).
async fn channel(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tls.map(TlsConnector::from);
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let io: Box<dyn Io> = match connector {
                    Some(c) => {
                        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
                        Box::new(c.connect(name, tcp).await?)
                    }
                    None => Box::new(tcp),
                };
                Ok::<_, io::Error>(TokioIo::new(io))
            }
        }))
        .await
}

/// Runs `n` loops of `op` and returns the completions per second over
/// `window` (after `warmup`), the failures and the first error.
async fn rate_of<F, Fut>(
    n: usize,
    warmup: Duration,
    window: Duration,
    op: F,
) -> (Rate, u64, Option<String>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let deadline = Instant::now() + warmup + window + Duration::from_secs(30);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (stop, ok, failed, first_error, op) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                first_error.clone(),
                op.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match op().await {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().expect("first error").get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    let (c0, start) = (ok.load(Ordering::Relaxed), util::WindowStart::now());
    tokio::time::sleep(window).await;
    let (c1, w) = (ok.load(Ordering::Relaxed), start.finish());
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let error = first_error.lock().expect("first error").clone();
    (
        Rate::of(c1.saturating_sub(c0), &w),
        failed.load(Ordering::Relaxed),
        error,
    )
}

async fn get_status(client: &mut GatewayClient<Channel>) -> Result<(), String> {
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
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_writer, tls_config) = volume_config(tmp.path(), &ca, &leaf, Duration::from_secs(1));
    let mut plain_config = tls_config.clone();
    plain_config.tls = TlsMode::Disabled;
    let tls_gw = Running::start(tls_config).await;
    let plain_gw = Running::start(plain_config).await;
    let client_tls = load::client(ca.cert_pem(), &["h2"]);

    let plan = Plan {
        clean: s.pick(3, 1),
        max: s.pick(6, 1),
        ..Plan::new(s)
    };
    let (callers, conn_loops) = (16, s.clients);
    println!(
        "   one connection: {callers} concurrent callers on one channel; new connection: \
         {conn_loops} loops of connect + TLS + HTTP/2 + one call; A = plaintext gateway, \
         B = TLS gateway; {}",
        plan.describe()
    );

    let (mut one, mut fresh) = (Pairs::default(), Pairs::default());
    let (mut failed, mut first_error) = (0u64, None);
    let mut i = 0;
    while (one.clean_count() < plan.clean || fresh.clean_count() < plan.clean) && i < plan.max {
        let mut rates = [None, None, None, None];
        for tls in Plan::order(i) {
            let (addr, cfg) = if tls {
                (tls_gw.addr, Some(client_tls.clone()))
            } else {
                (plain_gw.addr, None)
            };
            let ch = channel(addr, cfg.clone()).await.expect("gRPC channel");
            let (rate, f, e) = rate_of(callers, plan.warmup, plan.window, move || {
                let mut client = GatewayClient::new(ch.clone());
                async move { get_status(&mut client).await }
            })
            .await;
            failed += f;
            first_error = first_error.or(e);
            rates[usize::from(tls)] = Some(rate);

            let (rate, f, e) = rate_of(conn_loops, plan.warmup, plan.window, move || {
                let cfg = cfg.clone();
                async move {
                    let ch = channel(addr, cfg).await.map_err(|e| format!("{e:?}"))?;
                    get_status(&mut GatewayClient::new(ch)).await
                }
            })
            .await;
            failed += f;
            first_error = first_error.or(e);
            rates[2 + usize::from(tls)] = Some(rate);
        }
        let [Some(a1), Some(b1), Some(a2), Some(b2)] = rates else {
            unreachable!()
        };
        one.push(i, ["one conn plaintext", "TLS"], a1, b1);
        fresh.push(i, ["new conn plaintext", "TLS"], a2, b2);
        i += 1;
    }
    tls_gw.stop().await;
    plain_gw.stop().await;

    let error = first_error
        .map(|e| format!(" (first: {e})"))
        .unwrap_or_default();
    vec![
        Row::info(
            format!(
                "6. gRPC unary calls/s, one HTTP/2 connection ({callers} callers), TLS ÷ plaintext"
            ),
            one.summary("plaintext", "TLS"),
        ),
        Row::info(
            format!(
                "6. gRPC calls/s, new connection per call ({conn_loops} loops), TLS ÷ plaintext"
            ),
            fresh.summary("plaintext", "TLS"),
        ),
        Row::check(
            "6. failed gRPC calls",
            format!("{failed}{error}"),
            "0",
            failed == 0,
        ),
    ]
}
