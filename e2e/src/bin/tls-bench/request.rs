//! Figure 7: the request path against its own stack. `h2load` (Debian's
//! `nghttp2-client`), a separate process, drives in turn the in-process
//! gateway, a bare hyper server on tokio-rustls answering 200, a bare tonic
//! server with its own static `ServerTlsConfig` serving only
//! `grpc.health.v1`, and nginx `return 200` when nginx is installed. Every
//! server serves the same ECDSA P-256 leaf over TLS 1.3 with ALPN h2.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tls_reload::testing::{Leaf, TestCa};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::gateway::{start, stop, volume_config};
use openshell_e2e::command;
use procfs::process::Process;

use crate::load;
use crate::util::{self, Row, Settings};

/// h2load's load: a few connections, many concurrent streams on each.
const CONNECTIONS: usize = 4;
const STREAMS: usize = 32;
/// Target of the gateway over each bare stack.
const TARGET: f64 = 0.95;

/// An empty `grpc.health.v1.HealthCheckRequest` as one gRPC message: no
/// compression, length 0.
const GRPC_EMPTY_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

/// Figure 7.
pub(crate) async fn request_path(s: &Settings) -> Vec<Row> {
    println!("\n== 7. request path: gateway vs bare hyper, bare tonic and nginx, driven by h2load");
    if let Err(e) = Command::new("h2load").arg("--version").output() {
        let why = format!("h2load not runnable ({e}); install Debian's nghttp2-client");
        return vec![Row::skipped("7. request path (h2load)", why)];
    }
    let ca = TestCa::new("bench CA");
    let leaf = ca.server();
    let tmp = util::volume_dir();
    let (_writer, mut config) = volume_config(tmp.path(), &ca, &leaf, Duration::from_secs(1));
    config.shutdown_grace = Duration::from_secs(1);
    // Audit events to a file, so that they do not interleave with the
    // benchmark's output.
    config.ocsf = openshell_server::OcsfTarget::File(tmp.path().join("audit.jsonl"));
    let gateway = start(config).await;
    let static_tls = server_config(&leaf);
    let (hyper_addr, hyper_task) = bare_hyper(static_tls).await;
    let (tonic_addr, tonic_task) = bare_tonic(&leaf).await;
    let nginx = Server::nginx(tmp.path(), &leaf);
    if let Err(why) = &nginx {
        println!("   nginx arm skipped: {why}");
    }
    let path = std::env::current_exe()
        .expect("this executable")
        .with_file_name("openshell-gateway");
    let binary = Server::binary(tmp.path(), &leaf, &path);
    match &binary {
        Ok(_) => println!("   gateway binary arm: {}", path.display()),
        Err(why) => println!("   gateway binary arm skipped: {why}"),
    }

    let secs = s.pick(2, 1);
    let rounds = s.pick(10, 1);
    let body = tmp.path().join("grpc-health-check.bin");
    std::fs::write(&body, GRPC_EMPTY_MESSAGE).expect("gRPC request body");
    println!(
        "   h2load -c {CONNECTIONS} -m {STREAMS} -t 1 -D {secs} per run; {rounds} rounds, \
         order alternating per round; server CPU per request from this process's threads \
         (nginx: its worker processes)"
    );

    let grpc = Some(body.as_path());
    let mut http_arms = vec![
        Arm::new("bare hyper", hyper_addr, None, None),
        Arm::new("gateway", gateway.addr(), None, None),
    ];
    if let Ok(n) = &nginx {
        http_arms.push(Arm::new("nginx", n.addr, None, Some(n.child.id())));
    }
    let mut grpc_arms = vec![
        Arm::new("bare tonic", tonic_addr, grpc, None),
        Arm::new("gateway", gateway.addr(), grpc, None),
    ];
    if let Ok(b) = &binary {
        let pid = Some(b.child.id());
        http_arms.push(Arm::new("binary", b.addr, None, pid));
        grpc_arms.push(Arm::new("binary", b.addr, grpc, pid));
    }

    let mut errors = Vec::new();
    for round in 0..rounds {
        for arms in [&mut http_arms, &mut grpc_arms] {
            let n = arms.len();
            for k in 0..n {
                // A B C, C B A, A B C, ...: drift falls on every arm alike.
                let i = if round % 2 == 0 { k } else { n - 1 - k };
                if let Err(e) = arms[i].run(secs).await {
                    errors.push(format!("{}: {e}", arms[i].name));
                }
            }
        }
    }
    stop(gateway).await;
    hyper_task.abort();
    tonic_task.abort();
    let nginx_missing = nginx.err().unwrap_or_default();
    drop(binary);

    for a in http_arms.iter().chain(&grpc_arms) {
        let kind = if a.body.is_some() { "gRPC" } else { "HTTP/2" };
        println!("   {:<10} {kind:<6} {}", a.name, a.describe());
    }
    let find = |arms: &[Arm], name| arms.iter().position(|a: &Arm| a.name == name);
    let (http_bin, grpc_bin) = (find(&http_arms, "binary"), find(&grpc_arms, "binary"));
    let nginx = find(&http_arms, "nginx");
    let mut rows = Vec::new();
    // Arm B ÷ arm A of `arms`, when both ran.
    let mut ratio = |arms: &[Arm], b: Option<usize>, a: Option<usize>, what: &str| {
        let kind = match arms[0].body {
            Some(_) => "7. gRPC Health/Check calls/s",
            None => "7. HTTP/2 GET /healthz req/s",
        };
        let figure = format!("{kind}, gateway {what}");
        match (b, a) {
            (Some(b), Some(a)) => rows.push(ratio_row(figure, &arms[b], &arms[a])),
            // Arm 1, the in-process gateway, always runs: A is nginx, say why it is missing.
            (Some(1), None) => rows.push(Row::skipped(figure, nginx_missing.clone())),
            _ => {}
        }
    };
    ratio(&http_arms, Some(1), Some(0), "÷ bare hyper on tokio-rustls");
    ratio(&http_arms, http_bin, Some(0), "binary ÷ bare hyper");
    ratio(&http_arms, http_bin, nginx, "binary ÷ nginx return 200");
    ratio(&grpc_arms, grpc_bin, Some(0), "binary ÷ bare tonic");
    ratio(&http_arms, Some(1), nginx, "÷ nginx return 200");
    ratio(&grpc_arms, Some(1), Some(0), "÷ bare tonic with static TLS");
    let failed: u64 = http_arms.iter().chain(&grpc_arms).map(|a| a.failed).sum();
    rows.push(Row::zero(
        "7. failed requests (h2load: failed + errored, non-2xx)",
        format!("{failed}{}", util::first(errors.first().cloned())),
        failed == 0 && errors.is_empty(),
    ));
    rows
}

fn ratio_row(figure: String, b: &Arm, a: &Arm) -> Row {
    let ratios: Vec<f64> = b.rates.iter().zip(&a.rates).map(|(b, a)| b / a).collect();
    let (median, n, (lo, hi)) = (util::median(&ratios), ratios.len(), util::range(&ratios));
    let (a_ns, b_ns) = (util::median(&a.cpu_per_req), util::median(&b.cpu_per_req));
    let cpu = match a_ns.is_finite() && b_ns.is_finite() {
        true => format!(
            "; server CPU per request {:.1} µs vs {:.1} µs",
            b_ns / 1e3,
            a_ns / 1e3
        ),
        false => String::new(),
    };
    let (b_rate, a_rate) = (util::median(&b.rates), util::median(&a.rates));
    let value = format!(
        "{median:.3} (median of {n} rounds, range {lo:.3}..{hi:.3}; \
         {} {b_rate:.0}/s vs {} {a_rate:.0}/s{cpu})",
        b.name, a.name
    );
    Row::check(figure, value, format!("≥ {TARGET}"), median >= TARGET)
}

/// One server under h2load, and what its runs measured.
#[derive(Default)]
struct Arm {
    name: &'static str,
    url: String,
    /// The request body file: set for gRPC (POST), unset for GET.
    body: Option<PathBuf>,
    /// A separate server process whose CPU is counted (nginx), else this
    /// process's threads are.
    pid: Option<u32>,
    rates: Vec<f64>,
    cpu_per_req: Vec<f64>,
    failed: u64,
}

impl Arm {
    /// `GET /healthz`, or a gRPC `Health/Check` posting `body`.
    fn new(name: &'static str, addr: SocketAddr, body: Option<&Path>, pid: Option<u32>) -> Self {
        let path = if body.is_some() {
            "grpc.health.v1.Health/Check"
        } else {
            "healthz"
        };
        let url = format!("https://127.0.0.1:{}/{path}", addr.port());
        let body = body.map(Path::to_path_buf);
        Self {
            name,
            url,
            body,
            pid,
            ..Self::default()
        }
    }

    async fn run(&mut self, secs: u64) -> Result<(), String> {
        let mut cmd = Command::new("h2load");
        let (c, m, d) = (
            CONNECTIONS.to_string(),
            STREAMS.to_string(),
            secs.to_string(),
        );
        cmd.args(["-c", &c, "-m", &m, "-t", "1", "-D", &d]);
        if let Some(body) = &self.body {
            cmd.args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
                .arg("-d")
                .arg(body);
        }
        cmd.arg(&self.url);
        let threads_before = util::ThreadsCpu::now();
        let tree_before = self.pid.map(process_tree_cpu_ns);
        let within = Duration::from_secs(secs + 60);
        let out = tokio::task::spawn_blocking(move || command::run(&mut cmd, None, within))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("running h2load: {e}"))?;
        let cpu = match (self.pid, tree_before) {
            (Some(pid), Some(before)) => process_tree_cpu_ns(pid).saturating_sub(before),
            _ => util::ThreadsCpu::now().since(&threads_before),
        };
        let report = H2load::parse(&out)
            .ok_or_else(|| format!("unreadable h2load output: {}", out.trim()))?;
        self.failed += report.failed;
        self.rates.push(report.per_second);
        if report.succeeded > 0 {
            self.cpu_per_req.push(cpu as f64 / report.succeeded as f64);
        }
        match report.failed {
            0 => Ok(()),
            n => Err(format!("{n} of {} requests failed", report.done)),
        }
    }

    fn describe(&self) -> String {
        let (median, n, (lo, hi)) = (
            util::median(&self.rates),
            self.rates.len(),
            util::range(&self.rates),
        );
        let cpu = util::median(&self.cpu_per_req) / 1e3;
        format!(
            "median {median:.0}/s over {n} runs (range {lo:.0}..{hi:.0}), CPU/request {cpu:.1} µs"
        )
    }
}

/// What one h2load run reported.
#[derive(Debug, Clone, Copy, PartialEq)]
struct H2load {
    per_second: f64,
    done: u64,
    succeeded: u64,
    /// Failed, errored, and non-2xx responses.
    failed: u64,
}

impl H2load {
    /// Reads `finished in 2.00s, 93847.50 req/s, ...`, `requests: ...` and
    /// `status codes: ...`.
    fn parse(text: &str) -> Option<Self> {
        let per_second = text.lines().find_map(|l| {
            let rest = l.strip_prefix("finished in ")?;
            let rate = rest.split(", ").nth(1)?.strip_suffix(" req/s")?;
            rate.trim().parse().ok()
        })?;
        let numbers = |prefix: &str| -> Option<Vec<u64>> {
            let line = text.lines().find_map(|l| l.strip_prefix(prefix))?;
            let first_word = |part: &str| part.split_whitespace().next()?.parse().ok();
            Some(line.split(',').filter_map(first_word).collect())
        };
        // total, started, done, succeeded, failed, errored, timeout
        let requests = numbers("requests: ")?;
        // 2xx, 3xx, 4xx, 5xx
        let codes = numbers("status codes: ")?;
        let (done, succeeded) = (*requests.get(2)?, *requests.get(3)?);
        let failed = requests.get(4)? + requests.get(5)? + codes.iter().skip(1).sum::<u64>();
        Some(Self {
            per_second,
            done,
            succeeded,
            failed,
        })
    }
}

/// The static config of the bare servers: the same leaf, TLS 1.3 and 1.2,
/// ALPN h2 and http/1.1, ring.
fn server_config(leaf: &Leaf) -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("leaf PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// hyper 1 on tokio-rustls: the auto builder and a `service_fn` answering
/// 200 `ok\n`, one task per connection, nothing else.
async fn bare_hyper(config: Arc<ServerConfig>) -> (SocketAddr, JoinHandle<()>) {
    let (listener, addr) = load::listen().await;
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// tonic with its own static `ServerTlsConfig`, serving tonic-health only.
async fn bare_tonic(leaf: &Leaf) -> (SocketAddr, JoinHandle<()>) {
    let (listener, addr) = load::listen().await;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let identity = tonic::transport::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem);
    let mut server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .expect("tonic TLS config");
    // As tonic's own `serve` (and every other server here) would: no Nagle.
    let nodelay =
        |tcp: std::io::Result<TcpStream>| tcp.inspect(|t| t.set_nodelay(true).unwrap_or_default());
    let incoming = StreamExt::map(TcpListenerStream::new(listener), nodelay);
    let router = server.add_service(health);
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    (addr, task)
}

/// A server process on loopback serving the leaf (nginx, the gateway
/// binary), stopped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Stop with SIGQUIT, nginx's graceful stop, which takes the workers
    /// with the master (a SIGKILL of the master would leave them running);
    /// SIGKILL only if it has not gone within 5 s.
    graceful: bool,
}

impl Server {
    /// Writes the leaf as `dir/name/tls.crt` and `tls.key`, picks a
    /// loopback port that was free a moment ago, starts what `command`
    /// makes of them (the program and what to call it) and waits at most
    /// 10 s for it to listen.
    fn start(
        dir: &Path,
        name: &str,
        leaf: &Leaf,
        command: impl FnOnce(&Path, SocketAddr) -> Result<(Command, String), String>,
    ) -> Result<Self, String> {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("logs"))
            .and_then(|()| std::fs::write(root.join("tls.crt"), &leaf.cert_pem))
            .and_then(|()| std::fs::write(root.join("tls.key"), &leaf.key_pem))
            .map_err(|e| e.to_string())?;
        let port = openshell_e2e::kube::free_loopback_port().map_err(|e| e.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (mut cmd, what) = command(&root, addr)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("starting {what}: {e}"))?;
        let server = Self {
            child,
            addr,
            graceful: name == "nginx",
        };
        let listening = || std::net::TcpStream::connect(addr).map_err(|e| e.to_string());
        tls_reload::testing::poll_blocking(
            Duration::from_secs(10),
            Duration::from_millis(20),
            &format!("{what} listening on {addr}"),
            listening,
        )
        .map_err(|e| e.to_string())?;
        Ok(server)
    }

    /// nginx `return 200` with HTTP/2 over TLS, one worker per core.
    fn nginx(dir: &Path, leaf: &Leaf) -> Result<Self, String> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("nginx not installed (Debian's nginx-light)")?;
        Self::start(dir, "nginx", leaf, |root, addr| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let conf = format!(
                "daemon off;\nworker_processes {cores};\npid {root}/nginx.pid;\n\
                 error_log {root}/logs/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 1000000000;\n  client_body_temp_path {root}/tmp;\n\
                 proxy_temp_path {root}/tmp;\n  fastcgi_temp_path {root}/tmp;\n\
                 uwsgi_temp_path {root}/tmp;\n  scgi_temp_path {root}/tmp;\n\
                 server {{\n    listen {addr} ssl http2;\n\
                 ssl_certificate {root}/tls.crt;\n    ssl_certificate_key {root}/tls.key;\n\
                 ssl_protocols TLSv1.3;\n    http2_max_concurrent_streams 128;\n\
                 location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
                root = root.display()
            );
            let conf_path = root.join("nginx.conf");
            std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
            let mut cmd = Command::new(binary);
            cmd.arg("-p").arg(root).arg("-c").arg(conf_path);
            let log = root.join("logs/error.log");
            Ok((cmd, format!("nginx (see {})", log.display())))
        })
    }

    /// The release binary beside this executable (`target/release/`), as
    /// an operator runs it: its own log subscriber (`RUST_LOG` unset:
    /// `info`), the audit stream to a file.
    fn binary(dir: &Path, leaf: &Leaf, path: &Path) -> Result<Self, String> {
        if !path.exists() {
            return Err(format!(
                "{} not built (cargo build --release -p openshell-server --bin openshell-gateway)",
                path.display()
            ));
        }
        Self::start(dir, "binary", leaf, |root, addr| {
            let mut cmd = Command::new(path);
            cmd.arg("--bind")
                .arg(addr.to_string())
                .arg("--tls-cert")
                .arg(root.join("tls.crt"))
                .arg("--tls-key")
                .arg(root.join("tls.key"))
                .arg("--ocsf-log")
                .arg(root.join("audit.jsonl"))
                .env_remove("RUST_LOG");
            Ok((cmd, path.display().to_string()))
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.graceful {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            let within = Duration::from_secs(5);
            let gone = tls_reload::testing::poll_blocking(
                within,
                Duration::from_millis(20),
                "exit",
                || self.child.try_wait().ok().flatten().ok_or("running"),
            );
            if gone.is_ok() {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of `pid` and its child processes, in nanoseconds.
fn process_tree_cpu_ns(pid: u32) -> u64 {
    let process = i32::try_from(pid)
        .ok()
        .and_then(|pid| Process::new(pid).ok());
    let main = process.as_ref().and_then(|p| p.task_main_thread().ok());
    let children = main.and_then(|t| t.children().ok()).unwrap_or_default();
    let ticks: u64 = std::iter::once(pid)
        .chain(children)
        .filter_map(|p| util::stat_ticks(&Process::new(i32::try_from(p).ok()?).ok()?))
        .sum();
    ticks * 1_000_000_000 / util::clock_ticks().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_h2load_report() {
        let text = "finished in 2.00s, 93847.50 req/s, 3.13MB/s\n\
                    requests: 187695 total, 187823 started, 187695 done, 187690 succeeded, 5 failed, 2 errored, 0 timeout\n\
                    status codes: 187690 2xx, 0 3xx, 3 4xx, 0 5xx\n";
        assert_eq!(
            H2load::parse(text),
            Some(H2load {
                per_second: 93847.5,
                done: 187695,
                succeeded: 187690,
                failed: 10,
            })
        );
        assert_eq!(H2load::parse("h2load: connection refused"), None);
    }
}
