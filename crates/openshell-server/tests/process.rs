#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! The real `openshell-gateway` binary as a child process on loopback:
//! signals, shutdown, handshake timeout, dev mode, startup errors, OCSF
//! audit lines and the plaintext health port.

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openshell_ocsf::schema::{Schema, default_schema_dir};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tls_reload::testing::{client_config, eventually};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::{Http, Pki, Reply, send};

/// How long the gateway may take to start listening.
const STARTUP: Duration = Duration::from_secs(10);

// === the child process ===

/// Lines a reader thread has collected from one of the child's pipes.
type Lines = Arc<Mutex<Vec<String>>>;

/// A running `openshell-gateway`, killed on drop so that no process
/// outlives a failing test.
struct GatewayProcess {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl GatewayProcess {
    /// Starts the binary with `args` and JSON logs, with no `OPENSHELL_*`
    /// variable inherited from the test's environment.
    fn spawn<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self::spawn_logging(args, "info")
    }

    /// [`spawn`](Self::spawn) with `RUST_LOG` set to `rust_log`.
    fn spawn_logging<I, S>(args: I, rust_log: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self::spawn_with(args, rust_log, None)
    }

    /// [`spawn_logging`](Self::spawn_logging), with the open-file limit
    /// lowered to `nofile` when given (through the shell's `ulimit -n`).
    fn spawn_with<I, S>(args: I, rust_log: &str, nofile: Option<u32>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let binary = env!("CARGO_BIN_EXE_openshell-gateway");
        let mut cmd = match nofile {
            None => Command::new(binary),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                sh
            }
        };
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPENSHELL_") {
                cmd.env_remove(name);
            }
        }
        cmd.args(args.into_iter().map(Into::into))
            .args(["--log-format", "json"])
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn openshell-gateway");
        let (stdout, stderr) = (Lines::default(), Lines::default());
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
            status: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything the child said, for assertion messages.
    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    /// Whether the child is still running.
    fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits for the `listening` log line and returns the TLS port's
    /// address.
    async fn listening(&mut self) -> SocketAddr {
        let deadline = Instant::now() + STARTUP;
        loop {
            let addr = self.stderr().iter().find_map(|line| {
                let log: Value = serde_json::from_str(line).ok()?;
                (log["fields"]["message"] == "listening")
                    .then(|| log["fields"]["addr"].as_str()?.parse().ok())?
            });
            if let Some(addr) = addr {
                return addr;
            }
            if let Some(status) = self.try_status() {
                panic!(
                    "gateway exited ({status}) before listening\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway not listening after {STARTUP:?}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until some stderr line satisfies `pred`.
    async fn stderr_line(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.stderr().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching stderr line within {within:?}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`) with kill(1).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {}: {status}", self.pid());
    }

    /// Waits for the child to exit, then for its pipes to be read to the
    /// end; `None` if it is still running after `within`.
    async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.try_status() {
                break status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        for reader in self.readers.drain(..) {
            reader.join().expect("pipe reader");
        }
        Some(status)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            #[allow(clippy::print_stderr)] // The child's output explains the failure.
            {
                eprintln!("gateway pid {}:\n{}", self.child.id(), self.output());
            }
        }
    }
}

/// A thread appending each line of `pipe` to `lines` until it closes.
fn collect(pipe: impl Read + Send + 'static, lines: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    })
}

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// === clients ===

/// The fingerprint the gateway serves, bounded so a stuck server fails the
/// test instead of hanging it.
async fn served_fingerprint(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<String> {
    tokio::time::timeout(
        Duration::from_secs(5),
        tls_reload::testing::served_fingerprint(addr, config),
    )
    .await
    .map_err(std::io::Error::other)?
}

/// A client config trusting `ca_pem`, with one ALPN protocol.
fn trusting(ca_pem: &str, alpn: &str) -> Arc<ClientConfig> {
    let mut config = (*client_config(ca_pem, None)).clone();
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Arc::new(config)
}

fn get_request(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("http://localhost{path}"))
        .body(Full::default())
        .unwrap()
}

/// `GET path` over TLS (HTTP/1.1), trusting `ca_pem`.
async fn get_tls(addr: SocketAddr, ca_pem: &str, path: &str) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(trusting(ca_pem, "http/1.1"))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    send(tls, Http::One, get_request(path)).await
}

/// `GET path` in plaintext HTTP/1.1.
async fn get_plain(addr: SocketAddr, path: &str) -> Reply {
    send(
        TcpStream::connect(addr).await.unwrap(),
        Http::One,
        get_request(path),
    )
    .await
}

/// The gateway flags serving the TLS files of `pki` on an ephemeral port.
fn tls_args(pki: &Pki) -> Vec<OsString> {
    vec![
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        pki.server.path("tls.crt").into(),
        "--tls-key".into(),
        pki.server.path("tls.key").into(),
    ]
}

fn with(mut args: Vec<OsString>, more: &[&str]) -> Vec<OsString> {
    args.extend(more.iter().map(OsString::from));
    args
}

fn fingerprint_of_pem_file(path: &Path) -> String {
    let der = rustls_pki_types::CertificateDer::from_pem_file(path).unwrap();
    tls_reload::Fingerprint::of(&der).to_string()
}

// === scenarios ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rotated_certificate() {
    let mut pki = Pki::new();
    let mut gw = GatewayProcess::spawn(with(tls_args(&pki), &["--no-tls-reload"]));
    let addr = gw.listening().await;
    let pid = gw.pid();
    let client = client_config(pki.server_ca.cert_pem(), None);
    let first = pki.leaf.fingerprint.clone();
    assert_eq!(
        served_fingerprint(addr, client.clone()).await.unwrap(),
        first
    );

    let rotated = pki.rotate();
    // Without a watcher the new files are not noticed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served_fingerprint(addr, client.clone()).await.unwrap(),
        first,
        "reloaded without a signal despite --no-tls-reload"
    );

    gw.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "the rotated certificate served",
        || {
            let client = client.clone();
            let want = rotated.fingerprint.clone();
            async move {
                let served = served_fingerprint(addr, client)
                    .await
                    .map_err(|e| e.to_string())?;
                (served == want).then_some(()).ok_or(served)
            }
        },
    )
    .await;
    let audit = gw
        .stderr_line(Duration::from_secs(2), |l| {
            l.contains("CONFIG:RELOADED") && l.contains("trigger:signal")
        })
        .await;
    assert!(audit.contains(&rotated.fingerprint[..8]), "{audit}");
    assert!(gw.is_running(), "the gateway stopped\n{}", gw.output());
    assert_eq!(gw.pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_open_connection_exits_zero_within_the_grace_period() {
    const GRACE: Duration = Duration::from_secs(2);
    let pki = Pki::new();
    let mut gw = GatewayProcess::spawn(with(tls_args(&pki), &["--shutdown-grace", "2s"]));
    let addr = gw.listening().await;

    // An HTTP/2 connection that has served a request and stays open.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(common::tls(&pki.server_ca, None, &["h2"]))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let mut conn = tokio::spawn(conn);
    let resp = h2
        .send_request(
            http::Request::get("https://localhost/healthz")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // And a client stuck before its handshake (the default handshake
    // timeout, 10 s, is longer than the grace period).
    let _silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let sent = Instant::now();
    gw.signal("TERM");
    // The idle HTTP/2 connection is drained (GOAWAY, then closed) while the
    // gateway waits for the stuck one.
    let drained = tokio::time::timeout(Duration::from_millis(1500), &mut conn).await;
    assert!(
        matches!(drained, Ok(Ok(Ok(())))),
        "the idle HTTP/2 connection was not closed gracefully: {drained:?}\n{}",
        gw.output()
    );
    let status = gw
        .exit_within(GRACE + Duration::from_secs(3))
        .await
        .unwrap_or_else(|| {
            panic!(
                "still running {GRACE:?} + 3 s after SIGTERM\n{}",
                gw.output()
            )
        });
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status}\n{}", gw.output());
    assert!(took < GRACE + Duration::from_secs(3), "took {took:?}");
    assert!(
        gw.stderr().iter().any(|l| l.contains("stopped")),
        "no orderly stop logged\n{}",
        gw.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_cut_off_after_the_handshake_timeout_while_others_are_served() {
    let pki = Pki::new();
    let mut gw = GatewayProcess::spawn(with(tls_args(&pki), &["--handshake-timeout", "1s"]));
    let addr = gw.listening().await;

    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Meanwhile a well-behaved client is served.
    let client = client_config(pki.server_ca.cert_pem(), None);
    assert_eq!(
        served_fingerprint(addr, client).await.unwrap(),
        pki.leaf.fingerprint
    );
    let healthz = get_tls(addr, pki.server_ca.cert_pem(), "/healthz").await;
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
    assert!(
        opened.elapsed() < Duration::from_millis(900),
        "the good client took too long to prove concurrency: {:?}",
        opened.elapsed()
    );

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("the silent connection is still open 3 s later");
    let cut_after = opened.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF or an error, got {read:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(900),
        "cut off after {cut_after:?}, before the 1 s handshake timeout"
    );

    // It cost that connection only: the server still serves, and counted it.
    let metrics = get_tls(addr, pki.server_ca.cert_pem(), "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == "openshell_tls_handshakes_total{result=\"timeout\"} 1"),
        "{}",
        metrics.body
    );
    assert!(gw.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_generates_certificates_then_reuses_them() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("dev");
    let dev_args = || -> Vec<OsString> {
        vec![
            "--dev".into(),
            "--state-dir".into(),
            dir.clone().into(),
            "--bind".into(),
            "127.0.0.1:0".into(),
        ]
    };

    let mut gw = GatewayProcess::spawn(dev_args());
    let addr = gw.listening().await;
    let ca = dir.join("ca.crt");
    let port = addr.port();
    let curl = format!(
        "curl --cacert {} https://localhost:{port}/healthz",
        ca.display()
    );
    let grpcurl = format!("grpcurl -cacert {} localhost:{port} list", ca.display());
    eventually(Duration::from_secs(3), "the dev banner on stdout", || {
        let out = gw.stdout().join("\n");
        let found = out.contains(&curl) && out.contains(&grpcurl);
        async move { found.then_some(()).ok_or("") }
    })
    .await;
    for name in ["ca.crt", "tls.crt", "tls.key", "client.crt", "client.key"] {
        assert!(dir.join(name).is_file(), "{name} not generated");
    }
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let healthz = get_tls(addr, &ca_pem, "/healthz").await;
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
    let cert = std::fs::read(dir.join("tls.crt")).unwrap();
    let served = fingerprint_of_pem_file(&dir.join("tls.crt"));
    assert_eq!(
        served_fingerprint(addr, client_config(&ca_pem, None))
            .await
            .unwrap(),
        served
    );

    gw.signal("TERM");
    let status = gw
        .exit_within(Duration::from_secs(5))
        .await
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status}\n{}", gw.output());

    let mut again = GatewayProcess::spawn(dev_args());
    let addr = again.listening().await;
    assert_eq!(
        std::fs::read(dir.join("tls.crt")).unwrap(),
        cert,
        "tls.crt regenerated"
    );
    assert_eq!(
        std::fs::read_to_string(&ca).unwrap(),
        ca_pem,
        "ca.crt regenerated"
    );
    assert_eq!(
        served_fingerprint(addr, client_config(&ca_pem, None))
            .await
            .unwrap(),
        served
    );
    assert!(again.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_logs_whether_it_generated_or_reused_its_certificates() {
    let state = tempfile::tempdir().unwrap();
    let args = [
        OsString::from("--dev"),
        "--state-dir".into(),
        state.path().into(),
        "--bind".into(),
        "127.0.0.1:0".into(),
    ];
    for expected in ["generated a CA", "reusing certificates"] {
        let mut gw = GatewayProcess::spawn(args.clone());
        gw.listening().await;
        gw.signal("TERM");
        let status = gw
            .exit_within(Duration::from_secs(5))
            .await
            .expect("exit after SIGTERM");
        assert!(status.success(), "{status}");
        assert!(
            gw.stderr().iter().any(|l| l.contains(expected)),
            "no log line saying {expected:?}\n{}",
            gw.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_with_a_missing_key_exits_nonzero_with_one_line_naming_the_path() {
    let pki = Pki::new();
    let missing = pki.dir().join("nowhere/tls.key");
    let started = Instant::now();
    let mut gw = GatewayProcess::spawn([
        OsString::from("--bind"),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        pki.server.path("tls.crt").into(),
        "--tls-key".into(),
        missing.clone().into(),
    ]);
    let status = gw
        .exit_within(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("still running 5 s after start\n{}", gw.output()));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!status.success(), "exit status {status}");
    assert!(status.code().is_some_and(|c| c != 0), "{status}");

    let stderr = gw.stderr();
    let errors: Vec<&String> = stderr
        .iter()
        .filter(|l| l.starts_with("openshell-gateway:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", gw.output());
    let last = stderr.iter().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert_eq!(last, errors[0], "{}", gw.output());
    assert!(
        last.contains(&missing.display().to_string()),
        "the error does not name {}: {last}",
        missing.display()
    );
    assert!(
        !gw.stderr().iter().any(|l| l.contains("listening")),
        "{}",
        gw.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_events_are_ocsf_lines_that_validate_against_the_schema() {
    let mut pki = Pki::new();
    let first = pki.leaf.fingerprint.clone();
    let audit = pki.dir().join("audit.jsonl");
    let mut args = with(
        tls_args(&pki),
        &["--tls-reload-debounce", "50ms", "--ocsf-log"],
    );
    args.push(audit.clone().into());
    let mut gw = GatewayProcess::spawn(args);
    let addr = gw.listening().await;
    let client = client_config(pki.server_ca.cert_pem(), None);

    let events = || -> Vec<Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let with_code = |code: &str| -> Option<Value> {
        events()
            .into_iter()
            .find(|e| e["metadata"]["event_code"] == code)
    };
    let loaded = eventually(Duration::from_secs(3), "the startup event", || {
        let e = with_code("tls_loaded");
        async move { e.ok_or("") }
    })
    .await;
    assert_eq!(loaded["unmapped"]["tls"]["trigger"], "startup");
    assert_eq!(loaded["unmapped"]["tls"]["new_fingerprint"], first.as_str());

    let rotated = pki.rotate();
    let reloaded = eventually(Duration::from_secs(5), "the reload event", || {
        let e = with_code("tls_reloaded");
        async move { e.ok_or("") }
    })
    .await;
    assert_eq!(
        served_fingerprint(addr, client.clone()).await.unwrap(),
        rotated.fingerprint
    );

    pki.server
        .write(&[
            ("tls.crt", rotated.cert_pem.as_bytes()),
            ("tls.key", b"garbage"),
        ])
        .unwrap();
    let failed = eventually(Duration::from_secs(5), "the failure event", || {
        let e = with_code("tls_reload_failed");
        async move { e.ok_or("") }
    })
    .await;

    // Success.
    assert_eq!(reloaded["class_uid"], 5019);
    assert_eq!(reloaded["status_id"], 1);
    assert_eq!(
        reloaded["message"],
        "TLS certificate config reloaded successfully"
    );
    let tls = &reloaded["unmapped"]["tls"];
    assert_eq!(tls["new_fingerprint"], rotated.fingerprint.as_str());
    assert_eq!(tls["previous_fingerprint"], first.as_str());
    assert_eq!(tls["trigger"], "watch");
    // Failure.
    assert_eq!(failed["status_id"], 2);
    assert_eq!(failed["severity_id"], 3);
    let detail = failed["status_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("tls.key"), "status_detail: {detail}");
    let all = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !all.contains("garbage") && !all.contains("-----BEGIN"),
        "key material in the audit log"
    );
    // The rotated certificate is still served after the failure.
    assert_eq!(
        served_fingerprint(addr, client).await.unwrap(),
        rotated.fingerprint
    );

    // Every line is a valid OCSF v1.8.0 event.
    let lines = events();
    assert!(lines.len() >= 3, "{lines:?}");
    match default_schema_dir() {
        Some(dir) => {
            let schema = Schema::load(&dir).unwrap();
            for event in &lines {
                if let Err(violations) = schema.validate(event) {
                    let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
                    panic!("{event}\nviolates the schema: {list:#?}");
                }
            }
        }
        None => {
            #[allow(clippy::print_stdout)] // Say what was not checked.
            {
                println!("skipping schema validation: ../shared/ocsf/v1.8.0 not found");
            }
        }
    }

    // The shorthand is in the logs.
    gw.stderr_line(Duration::from_secs(2), |l| l.contains("CONFIG:RELOADED"))
        .await;
    gw.stderr_line(Duration::from_secs(2), |l| l.contains("CONFIG:FAILED"))
        .await;
    assert!(gw.is_running());
}

/// Waits until the gateway at `addr` serves `fingerprint`.
async fn wait_serving(addr: SocketAddr, client: Arc<ClientConfig>, fingerprint: &str) {
    eventually(Duration::from_secs(10), "the certificate served", || {
        let client = client.clone();
        async move {
            let served = served_fingerprint(addr, client)
                .await
                .map_err(|e| e.to_string())?;
            (served == fingerprint).then_some(()).ok_or(served)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_filter_drops_an_audit_event() {
    for rust_log in ["off", "warn"] {
        let mut pki = Pki::new();
        let addr = free_port();
        let mut args = tls_args(&pki);
        args[1] = addr.to_string().into();
        let mut gw =
            GatewayProcess::spawn_logging(with(args, &["--tls-reload-debounce", "50ms"]), rust_log);
        let client = client_config(pki.server_ca.cert_pem(), None);
        wait_serving(addr, client.clone(), &pki.leaf.fingerprint.clone()).await;
        let rotated = pki.rotate();
        wait_serving(addr, client, &rotated.fingerprint).await;
        let line = gw
            .stderr_line(Duration::from_secs(5), |l| {
                l.contains(r#""event_code":"tls_reloaded""#)
            })
            .await;
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["class_uid"], 5019, "RUST_LOG={rust_log}: {line}");
        assert_eq!(
            event["unmapped"]["tls"]["new_fingerprint"],
            rotated.fingerprint.as_str()
        );
        assert!(
            gw.stderr()
                .iter()
                .any(|l| l.contains(r#""event_code":"tls_loaded""#)),
            "RUST_LOG={rust_log}: no startup event\n{}",
            gw.output()
        );
        // The filter still applies to the logs themselves.
        assert!(
            !gw.stderr().iter().any(|l| l.contains("listening")),
            "RUST_LOG={rust_log} let an INFO log line through\n{}",
            gw.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_file_is_counted_and_stops_nothing() {
    let mut pki = Pki::new();
    let logs = pki.dir().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let audit = logs.join("audit.jsonl");
    let mut args = with(
        tls_args(&pki),
        &["--tls-reload-debounce", "50ms", "--ocsf-log"],
    );
    args.push(audit.clone().into());
    let mut gw = GatewayProcess::spawn(args);
    let addr = gw.listening().await;
    let ca = pki.server_ca.cert_pem().to_owned();
    let client = client_config(&ca, None);
    eventually(Duration::from_secs(3), "the startup event", || {
        let written = std::fs::read_to_string(&audit).unwrap_or_default();
        async move { written.contains("tls_loaded").then_some(()).ok_or("") }
    })
    .await;
    let failures = |page: &str| -> Option<f64> {
        page.lines()
            .find_map(|l| l.strip_prefix("openshell_audit_write_failures_total "))
            .and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(
        failures(&get_tls(addr, &ca, "/metrics").await.body),
        Some(0.0)
    );

    std::fs::remove_dir_all(&logs).unwrap();
    for _ in 0..2 {
        let rotated = pki.rotate();
        wait_serving(addr, client.clone(), &rotated.fingerprint).await;
    }
    let count = eventually(Duration::from_secs(5), "two counted failures", || {
        let ca = ca.clone();
        async move {
            let n = failures(&get_tls(addr, &ca, "/metrics").await.body).ok_or("no counter")?;
            (n >= 2.0).then_some(n).ok_or("fewer than two")
        }
    })
    .await;
    assert_eq!(count, 2.0, "one failure per unwritten event");
    // Logged once for the burst, with the event's shorthand.
    let logged: Vec<String> = gw
        .stderr()
        .into_iter()
        .filter(|l| l.contains("audit event not written"))
        .collect();
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(logged[0].contains("CONFIG:RELOADED"), "{}", logged[0]);
    assert!(
        logged[0].contains(&audit.display().to_string()),
        "{}",
        logged[0]
    );
    assert!(gw.is_running(), "the gateway stopped\n{}", gw.output());

    // The directory comes back: the next event is written again.
    std::fs::create_dir(&logs).unwrap();
    let rotated = pki.rotate();
    wait_serving(addr, client, &rotated.fingerprint).await;
    eventually(
        Duration::from_secs(5),
        "the audit file written again",
        || {
            let written = std::fs::read_to_string(&audit).unwrap_or_default();
            let want = rotated.fingerprint.clone();
            async move { written.contains(&want).then_some(()).ok_or("") }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_under_a_low_fd_limit_does_not_starve_the_health_port() {
    let pki = Pki::new();
    let health = free_port();
    let mut args = with(
        tls_args(&pki),
        &["--handshake-timeout", "30s", "--health-bind"],
    );
    args.push(health.to_string().into());
    let mut gw = GatewayProcess::spawn_with(args, "info", Some(128));
    let addr = gw.listening().await;

    // More idle connections than the process has descriptors.
    let mut flood = Vec::new();
    for _ in 0..140 {
        match TcpStream::connect(addr).await {
            Ok(tcp) => flood.push(tcp),
            Err(e) => panic!("connect: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let start = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(1), get_plain(health, "/healthz"))
            .await
            .unwrap_or_else(|_| panic!("/healthz did not answer within 1 s\n{}", gw.output()));
        assert_eq!(reply.status, 200);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    let open_files_errors = gw
        .stderr()
        .iter()
        .filter(|l| l.contains("Too many open files"))
        .count();
    assert_eq!(open_files_errors, 0, "{}", gw.output());
    let limit_lines = gw
        .stderr()
        .iter()
        .filter(|l| l.contains("connection limit reached"))
        .count();
    assert!(
        (1..=2).contains(&limit_lines),
        "the cap is logged at a bounded rate, got {limit_lines} lines"
    );
    drop(flood);
    assert!(gw.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manual_reload_is_audited_even_repeats_and_during_the_drain() {
    let pki = Pki::new();
    let audit = pki.dir().join("audit.jsonl");
    let mut args = with(
        tls_args(&pki),
        &["--no-tls-reload", "--shutdown-delay", "3s", "--ocsf-log"],
    );
    args.push(audit.clone().into());
    let mut gw = GatewayProcess::spawn(args);
    gw.listening().await;
    let codes = || -> Vec<(String, String)> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let e: Value = serde_json::from_str(l).unwrap();
                (
                    e["metadata"]["event_code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e["unmapped"]["tls"]["trigger"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    let wait_for = |n: usize| {
        let codes = &codes;
        async move {
            eventually(Duration::from_secs(5), "audit lines", || {
                let got = codes();
                async move {
                    let seen = format!("{got:?}");
                    (got.len() >= n).then_some(got).ok_or(seen)
                }
            })
            .await
        }
    };
    wait_for(1).await;

    // Nothing changed: the request is still on record.
    gw.signal("HUP");
    wait_for(2).await;
    // The same broken key three times: three failures, not one.
    let rotated = pki.server_ca.server();
    pki.server
        .write(&[
            ("tls.crt", rotated.cert_pem.as_bytes()),
            ("tls.key", pki.leaf.key_pem.as_bytes()),
        ])
        .unwrap();
    for n in 3..=5 {
        gw.signal("HUP");
        wait_for(n).await;
    }
    // SIGTERM, then a fixed pair and a SIGHUP while the gateway is still
    // in its shutdown delay: that reload is audited before it exits.
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    pki.server
        .write(&[
            ("tls.crt", rotated.cert_pem.as_bytes()),
            ("tls.key", rotated.key_pem.as_bytes()),
        ])
        .unwrap();
    gw.signal("HUP");
    let status = gw.exit_within(Duration::from_secs(10)).await.expect("exit");
    assert!(status.success(), "{status}\n{}", gw.output());

    let signal = |code: &str| (code.to_owned(), "signal".to_owned());
    assert_eq!(
        codes(),
        vec![
            ("tls_loaded".to_owned(), "startup".to_owned()),
            signal("tls_reload_unchanged"),
            signal("tls_reload_failed"),
            signal("tls_reload_failed"),
            signal("tls_reload_failed"),
            signal("tls_reloaded"),
        ],
        "{}",
        gw.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_port_serves_health_only() {
    let pki = Pki::new();
    let health = free_port();
    let mut args = tls_args(&pki);
    args.extend(["--health-bind".into(), health.to_string().into()]);
    let mut gw = GatewayProcess::spawn(args);
    let addr = gw.listening().await;

    let healthz = get_plain(health, "/healthz").await;
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
    assert_eq!(get_plain(health, "/readyz").await.status, 200);
    assert_eq!(get_plain(health, "/metrics").await.status, 404);
    assert_eq!(get_plain(health, "/v1/tls").await.status, 404);
    // ... whereas the TLS port serves them.
    assert_eq!(
        get_tls(addr, pki.server_ca.cert_pem(), "/metrics")
            .await
            .status,
        200
    );
    assert_eq!(
        get_tls(addr, pki.server_ca.cert_pem(), "/v1/tls")
            .await
            .status,
        200
    );

    // gRPC does not reach the Gateway service on the health port, over
    // h2c or HTTP/1.1.
    for version in [Http::Two, Http::One] {
        let req = http::Request::post("http://localhost/openshell.gateway.v1.Gateway/GetTlsStatus")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .unwrap();
        let reply = send(TcpStream::connect(health).await.unwrap(), version, req).await;
        assert_eq!(reply.status, 404, "{version:?}");
        assert_ne!(reply.grpc_status().as_deref(), Some("0"), "{version:?}");
        assert!(
            !reply.body.contains("fingerprint"),
            "{version:?}: {}",
            reply.body
        );
    }
    assert!(gw.is_running());
}
