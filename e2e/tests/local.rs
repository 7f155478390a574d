#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! The real `openshell-gateway` process on loopback.
//!
//! Rotations: the server certificate comes from one kubelet-style Secret
//! directory and the client CA from another (both written by
//! `AtomicWriter`, exactly as kubelet swaps them), with mutual TLS required
//! and a 100 ms reload debounce. A real TLS client checks what is served
//! after each rotation; the OCSF audit file and the logs are checked for
//! the matching events.
//!
//! The process: SIGHUP without a watcher, the SIGTERM drain, the handshake
//! timeout, `--dev`, a startup error, log filters, an unwritable audit
//! file, a low open-file limit and the plaintext health port.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    EVERY, EXCHANGE, MetricsPage, RELOAD, STARTUP, Volumes, assert_ocsf_valid, get_ok, served,
};
use common::{assert_no_key_material, details, logged, wait_until_served};
use http_body_util::Full;
use openshell_e2e::kube::free_loopback_port;
use openshell_e2e::ocsf::{event_code, tls_details, with_code};
use openshell_e2e::tls::{self, Connection, Http};
use openshell_e2e::{Error, GatewayCommand, GatewayProcess};
use rustls::ClientConfig;
use serde_json::{Value, json};
use tls_reload::testing::{SecretVolumes, TestCa, eventually};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

// === fixture ===

/// Two Secret volumes (server certificate, client CA), the CAs behind them
/// and a client certificate, in a temporary directory.
type Fixture = SecretVolumes;

// === helpers ===

/// `GET path` in plaintext HTTP/1.1.
async fn get_plain(addr: SocketAddr, path: &str) -> tls::Reply {
    let request = tls::get_request(path).unwrap();
    tls::send(addr, None, Http::One, request, EXCHANGE)
        .await
        .unwrap()
}

/// `GET /healthz` as the client `config`: `Ok` when the gateway accepted
/// it and answered, `Err` with the reason otherwise.
async fn healthz(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<u16, Error> {
    tls::get(addr, config.clone(), "/healthz", EXCHANGE)
        .await
        .map(|reply| reply.status)
}

/// Asserts that the gateway accepts `accepted` and refuses each of
/// `refused` (client, who) during the handshake with the TLS alert named
/// beside it (not a timeout, not an HTTP error status).
async fn assert_only_accepted(
    addr: SocketAddr,
    accepted: &Arc<ClientConfig>,
    refused: &[(&Arc<ClientConfig>, &str, &str)],
) {
    assert_eq!(healthz(addr, accepted).await.unwrap(), 200);
    for (config, alert, who) in refused {
        match healthz(addr, config).await {
            Err(Error::Io { source, .. }) => {
                let msg = source.to_string();
                assert!(
                    msg.contains(&format!("received fatal alert: {alert}")),
                    "{who}: expected alert {alert}, got: {msg}"
                );
            }
            Err(other) => panic!("{who}: expected alert {alert}, got {other}"),
            Ok(status) => panic!("{who}: accepted (HTTP {status}), expected alert {alert}"),
        }
    }
}

/// Waits for the `n`th event with `code` and returns it.
async fn nth_event(gateway: &mut GatewayProcess, code: &'static str, n: usize) -> Value {
    gateway
        .wait_for_ocsf(RELOAD, &format!("OCSF event #{n} {code}"), |events| {
            with_code(events, code).nth(n - 1).cloned()
        })
        .await
        .unwrap()
}

/// Sends SIGTERM and asserts a successful exit within `within`.
async fn assert_stops(gateway: &mut GatewayProcess, within: Duration) {
    gateway.signal("TERM").unwrap();
    let status = gateway.exit_within(within).await.unwrap();
    let output = gateway.output();
    let status = status.unwrap_or_else(|| panic!("running {within:?} after SIGTERM\n{output}"));
    assert!(status.success(), "{status}\n{output}");
}

// === rotations ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_server_secret_serves_the_new_certificate_without_a_restart() {
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start(true, &[]).await;
    let pid = gateway.pid();
    let client = fixture.client(true);
    let first = fixture.leaf.fingerprint.clone();
    assert_eq!(served(addr, &client).await, first);
    let loaded = nth_event(&mut gateway, "tls_loaded", 1).await;
    assert_eq!(tls_details(&loaded)["new_fingerprint"], first.as_str());

    let rotated = fixture.server_ca.server();
    fixture.publish_leaf(&rotated);
    wait_until_served(addr, &client, &rotated.fingerprint).await;
    gateway.ensure_not_restarted(pid).unwrap();

    // Noticed by the watcher (the kubelet swap), as the next generation.
    let reloaded = nth_event(&mut gateway, "tls_reloaded", 1).await;
    let names = [
        "new_fingerprint",
        "previous_fingerprint",
        "trigger",
        "generation",
    ];
    let next = tls_details(&loaded)["generation"].as_u64().unwrap() + 1;
    let want = json!([rotated.fingerprint, first, "watch", next]);
    assert_eq!(details(&reloaded, &names), want, "{loaded} then {reloaded}");
    logged(
        &mut gateway,
        &["CONFIG:RELOADED", &rotated.fingerprint[..23]],
    )
    .await;

    // Established trust is unchanged: the same client is still accepted.
    assert_eq!(healthz(addr, &client).await.unwrap(), 200);
    assert_ocsf_valid(&gateway);
    let keys = [fixture.leaf.key_pem.as_str(), &rotated.key_pem];
    assert_no_key_material(&fixture.audit_log(), &keys);

    // And the reloaded gateway still stops cleanly (its watcher included).
    assert_stops(&mut gateway, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_client_ca_switches_which_client_certificates_are_accepted() {
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start(true, &[]).await;
    let pid = gateway.pid();
    let new_ca = TestCa::new("openshell-e2e client CA (rotated)");
    let old_client = fixture.client(true);
    let new_client = fixture.client_as(Some(&new_ca.client("openshell-e2e-client-2")));
    let anonymous = fixture.client_as(None);
    let without = (&anonymous, "CertificateRequired", "a client without one");

    // Before: only the old CA's client is accepted.
    let refused = (&new_client, "UnknownCA", "the new CA's client before");
    assert_only_accepted(addr, &old_client, &[refused, without]).await;

    fixture.publish_client_ca(new_ca.cert_pem());
    eventually(RELOAD, "the new CA's client accepted", || async {
        match healthz(addr, &new_client).await {
            Ok(200) => Ok(()),
            Ok(status) => Err(format!("HTTP {status}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;

    // After: only the new CA's client is accepted.
    let refused = (&old_client, "UnknownCA", "the old CA's client after");
    assert_only_accepted(addr, &new_client, &[refused, without]).await;

    // The server certificate did not change; the reload is audited.
    assert_eq!(served(addr, &new_client).await, fixture.leaf.fingerprint);
    let reloaded = nth_event(&mut gateway, "tls_reloaded", 1).await;
    let fingerprint = &tls_details(&reloaded)["new_fingerprint"];
    assert_eq!(fingerprint, fixture.leaf.fingerprint.as_str());
    logged(&mut gateway, &["CONFIG:RELOADED"]).await;
    gateway.ensure_not_restarted(pid).unwrap();
    assert_ocsf_valid(&gateway);
}

/// One of each outcome: startup, a rotation, a garbage key and a
/// mismatched pair (each refused while the last good certificate stays
/// served), the renewal that heals it, and a client-CA change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reloads_keep_the_served_certificate_and_every_outcome_is_audited_as_ocsf() {
    let mut fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start(true, &[]).await;
    let pid = gateway.pid();
    let client = fixture.client(true);
    let first = fixture.leaf.clone();
    let rotated = fixture.rotate();
    wait_until_served(addr, &client, &rotated.fingerprint).await;

    let (cert_of, key_of) = (fixture.server_ca.server(), fixture.server_ca.server());
    let garbage = "-----BEGIN PRIVATE KEY-----\ngarbage\n";
    let broken = [
        (&rotated.cert_pem, garbage, "tls.key"),
        (&cert_of.cert_pem, key_of.key_pem.as_str(), "does not match"),
    ];
    for (n, (cert, key, cause)) in broken.into_iter().enumerate() {
        fixture.publish(cert, key);
        let failed = nth_event(&mut gateway, "tls_reload_failed", n + 1).await;
        let detail = failed["status_detail"].as_str().unwrap_or_default();
        assert!(detail.contains(cause), "status_detail: {detail}");
        let previous = &tls_details(&failed)["previous_fingerprint"];
        assert_eq!(previous, rotated.fingerprint.as_str());
        // Still served through the retries, which report nothing new for
        // the same broken files.
        assert_eq!(served(addr, &client).await, rotated.fingerprint);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(served(addr, &client).await, rotated.fingerprint);
        let events = gateway.ocsf_events().unwrap();
        let failures = with_code(&events, "tls_reload_failed").count();
        assert_eq!(failures, n + 1, "one failure event per broken content");
    }
    let healed = fixture.rotate();
    wait_until_served(addr, &client, &healed.fingerprint).await;
    let new_ca = TestCa::new("openshell-e2e client CA (rotated)");
    fixture.publish_client_ca(new_ca.cert_pem());
    nth_event(&mut gateway, "tls_reloaded", 3).await;
    // The new client CA is a change of client trust: reported after it.
    nth_event(&mut gateway, "tls_client_trust_changed", 1).await;
    gateway.ensure_not_restarted(pid).unwrap();

    let events = assert_ocsf_valid(&gateway);
    let codes: Vec<&str> = events.iter().map(event_code).collect();
    let (ok, failed) = ("tls_reloaded", "tls_reload_failed");
    let want = [
        "tls_loaded",
        ok,
        failed,
        failed,
        ok,
        ok,
        "tls_client_trust_changed",
    ];
    assert_eq!(codes, want, "{events:#?}");
    for event in &events {
        assert_eq!(event["class_uid"], 5019, "{event}");
        assert_eq!(event["type_uid"], 501_901, "{event}");
    }
    let (loaded, reloaded, failed) = (&events[0], &events[1], &events[2]);
    assert_eq!(tls_details(loaded)["trigger"], "startup");
    assert_eq!(tls_details(loaded)["new_fingerprint"], first.fingerprint);
    assert_eq!(reloaded["status_id"], 1, "{reloaded}");
    let message = &reloaded["message"];
    assert_eq!(message, "TLS certificate config reloaded successfully");
    let (status, severity) = (&failed["status_id"], &failed["severity_id"]);
    assert_eq!((status, severity), (&2.into(), &3.into()), "{failed}");
    let healing = tls_details(&events[4]);
    let fingerprints = (
        &healing["previous_fingerprint"],
        &healing["new_fingerprint"],
    );
    let want = (rotated.fingerprint.as_str(), healed.fingerprint.as_str());
    assert_eq!(fingerprints, (&want.0.into(), &want.1.into()));
    // Each event also has its one-line shorthand in the logs (logged just
    // after the JSONL line is written).
    let counts = || {
        let lines = gateway.stderr_lines();
        ["CONFIG:LOADED", "CONFIG:RELOADED", "CONFIG:FAILED"]
            .map(|tag| lines.iter().filter(|l| l.contains(tag)).count())
    };
    eventually(RELOAD, "one shorthand log line per event", || {
        let seen = counts();
        async move {
            match seen {
                [1, 3, 2] => Ok(()),
                _ => Err(format!("[LOADED, RELOADED, FAILED] = {seen:?}")),
            }
        }
    })
    .await;
    let keys = [
        &first.key_pem,
        &rotated.key_pem,
        &key_of.key_pem,
        &healed.key_pem,
    ];
    assert_no_key_material(&fixture.audit_log(), &keys.map(String::as_str));
}

// === the process ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_watcher_every_sighup_reloads_and_is_audited_even_repeats_and_during_the_drain() {
    let fixture = Fixture::new();
    let first = fixture.leaf.fingerprint.clone();
    let args = ["--no-tls-reload", "--shutdown-delay", "3s"];
    let (mut gateway, addr) = fixture.start(false, &args).await;
    let pid = gateway.pid();
    let client = fixture.client_as(None);
    let audited = |gateway: &GatewayProcess| -> Vec<(String, String)> {
        let events = gateway.ocsf_events().unwrap();
        let trigger = |e: &Value| tls_details(e)["trigger"].as_str().unwrap_or("").to_owned();
        let code = |e: &Value| event_code(e).to_owned();
        events.iter().map(|e| (code(e), trigger(e))).collect()
    };
    let wait_for = async |gateway: &mut GatewayProcess, n: usize| {
        let what = format!("{n} audit lines");
        gateway
            .wait_for_ocsf(RELOAD, &what, |events| (events.len() >= n).then_some(()))
            .await
            .unwrap();
    };
    wait_for(&mut gateway, 1).await;

    // Nothing changed: the request is still on record.
    gateway.signal("HUP").unwrap();
    wait_for(&mut gateway, 2).await;
    // A rotation is not noticed without a watcher...
    let rotated = fixture.server_ca.server();
    fixture.publish_leaf(&rotated);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served(addr, &client).await, first, "reloaded unasked");
    // ... until SIGHUP.
    gateway.signal("HUP").unwrap();
    wait_until_served(addr, &client, &rotated.fingerprint).await;
    let shorthand = logged(&mut gateway, &["CONFIG:RELOADED", "trigger:signal"]).await;
    assert!(shorthand.contains(&rotated.fingerprint[..8]), "{shorthand}");
    gateway.ensure_not_restarted(pid).unwrap();
    // The same mismatched pair three times: three failures, not one.
    let next = fixture.server_ca.server();
    fixture.publish(&next.cert_pem, &rotated.key_pem);
    for n in 4..=6 {
        gateway.signal("HUP").unwrap();
        wait_for(&mut gateway, n).await;
    }
    // SIGTERM, then a fixed pair and a SIGHUP while the gateway is still
    // in its shutdown delay: that reload is audited before it exits.
    gateway.signal("TERM").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    fixture.publish_leaf(&next);
    gateway.signal("HUP").unwrap();
    let status = gateway.exit_within(Duration::from_secs(10)).await.unwrap();
    assert!(status.unwrap().success(), "{}", gateway.output());

    let (failed, ok) = ("tls_reload_failed", "tls_reloaded");
    let codes = ["tls_reload_unchanged", ok, failed, failed, failed, ok];
    let signalled = codes.map(|code| (code.to_owned(), "signal".to_owned()));
    let want = [
        [("tls_loaded".to_owned(), "startup".to_owned())].as_slice(),
        &signalled,
    ]
    .concat();
    assert_eq!(audited(&gateway), want, "{}", gateway.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_open_connection_exits_zero_within_the_grace_period() {
    const GRACE: Duration = Duration::from_secs(2);
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start(false, &["--shutdown-grace", "2s"]).await;

    // An HTTP/2 connection that has served a request and stays open.
    let client = fixture.client_as(None);
    let mut h2 = Connection::open(addr, Some(client), Http::Two)
        .await
        .unwrap();
    let reply = h2.request(tls::get_request("/healthz").unwrap()).await;
    assert_eq!(reply.unwrap().status, 200);
    // And a client stuck before its handshake (the default handshake
    // timeout, 10 s, is longer than the grace period).
    let _silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let sent = Instant::now();
    gateway.signal("TERM").unwrap();
    // The idle HTTP/2 connection is drained (GOAWAY, then closed) while the
    // gateway waits for the stuck one.
    let drained = h2.closed(Duration::from_millis(1500)).await;
    let output = gateway.output();
    assert!(
        drained.is_ok(),
        "the idle HTTP/2 connection not closed: {drained:?}\n{output}"
    );
    let took = GRACE + Duration::from_secs(3);
    let status = gateway.exit_within(took).await.unwrap();
    let output = gateway.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} {took:?} after SIGTERM\n{output}"
    );
    assert!(sent.elapsed() < took, "took {:?}", sent.elapsed());
    let stopped = gateway.stderr_lines().iter().any(|l| l.contains("stopped"));
    assert!(stopped, "no orderly stop logged\n{}", gateway.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_cut_off_after_the_handshake_timeout_while_others_are_served() {
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start(false, &["--handshake-timeout", "1s"]).await;
    let client = fixture.client_as(None);

    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Meanwhile a well-behaved client is served.
    assert_eq!(served(addr, &client).await, fixture.leaf.fingerprint);
    assert_eq!(get_ok(addr, &client, "/healthz").await.body, "ok\n");
    let took = opened.elapsed();
    assert!(took < Duration::from_millis(900), "served after {took:?}");

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("the silent connection is still open 3 s later");
    let cut_after = opened.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "expected EOF, got {read:?}");
    let early = cut_after < Duration::from_millis(900);
    assert!(!early, "cut off after {cut_after:?}, before 1 s");

    // It cost that connection only: the server still serves, and counted it.
    let page = MetricsPage::fetch(addr, &client).await.unwrap();
    assert_eq!(page.handshakes("timeout"), 1, "{}", page.0);
    assert!(gateway.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_generates_certificates_then_reuses_them() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("dev");
    let ca_path = dir.join("ca.crt");
    let mut generated: Option<(String, String)> = None;
    for logged in ["generated a CA", "reusing certificates"] {
        let dev = GatewayCommand::new().args(["--dev", "--bind", "127.0.0.1:0", "--state-dir"]);
        let (mut gateway, addr) = dev.arg(&dir).start(STARTUP).await.unwrap();
        for name in ["ca.crt", "tls.crt", "tls.key", "client.crt", "client.key"] {
            assert!(dir.join(name).is_file(), "{name} not generated");
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let files = (read("ca.crt"), read("tls.crt"));
        let first = generated.get_or_insert_with(|| files.clone());
        assert_eq!(&files, first, "the certificates were regenerated");
        let (ca_pem, cert_pem) = &files;

        // The banner says how to connect, and that works.
        let port = addr.port();
        let ca = ca_path.display();
        let curl = format!("curl --cacert {ca} https://localhost:{port}/healthz");
        let grpcurl = format!("grpcurl -cacert {ca} localhost:{port} list");
        eventually(RELOAD, "the dev banner on stdout", || {
            let out = gateway.stdout_lines().join("\n");
            let found = out.contains(&curl) && out.contains(&grpcurl);
            async move { found.then_some(()).ok_or(out) }
        })
        .await;
        let client = tls::client_config(ca_pem, None).unwrap();
        assert_eq!(get_ok(addr, &client, "/healthz").await.body, "ok\n");
        let fingerprint = tls::fingerprint_of_pem(cert_pem.as_bytes()).unwrap();
        assert_eq!(served(addr, &client).await, fingerprint);

        assert_stops(&mut gateway, Duration::from_secs(5)).await;
        let said = gateway.stderr_lines().iter().any(|l| l.contains(logged));
        assert!(said, "no log line saying {logged:?}\n{}", gateway.output());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_with_a_missing_key_exits_nonzero_with_one_line_naming_the_path() {
    let fixture = Fixture::new();
    let missing = fixture.dir().join("nowhere/tls.key");
    let mut gateway = GatewayCommand::new()
        .args(["--bind", "127.0.0.1:0", "--tls-cert"])
        .arg(fixture.server.path("tls.crt"))
        .arg("--tls-key")
        .arg(&missing)
        .spawn()
        .unwrap();
    let status = gateway.exit_within(Duration::from_secs(5)).await.unwrap();
    let output = gateway.output();
    let status = status.unwrap_or_else(|| panic!("still running 5 s after start\n{output}"));
    assert!(status.code().is_some_and(|c| c != 0), "{status}");

    let stderr = gateway.stderr_lines();
    let errors = stderr
        .iter()
        .filter(|l| l.starts_with("openshell-gateway:"));
    let errors: Vec<&String> = errors.collect();
    assert_eq!(errors.len(), 1, "{output}");
    let last = stderr.iter().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert_eq!(last, errors[0], "{output}");
    assert!(last.contains(&missing.display().to_string()), "{last}");
    assert_eq!(gateway.listening_count(), 0, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_filter_drops_an_audit_event() {
    for rust_log in ["off", "warn"] {
        let mut fixture = Fixture::new();
        // Nothing logs the address at these levels: choose it.
        let addr = SocketAddr::from(([127, 0, 0, 1], free_loopback_port().unwrap()));
        let gateway = fixture.gateway(false).arg("--bind").arg(addr.to_string());
        let mut gateway = gateway.env("RUST_LOG", rust_log).spawn().unwrap();
        let client = fixture.client_as(None);
        let first = fixture.leaf.fingerprint.clone();
        let started = tls::wait_until_served(addr, &client, &first, STARTUP, EVERY);
        started.await.unwrap();
        let rotated = fixture.rotate();
        wait_until_served(addr, &client, &rotated.fingerprint).await;
        let reloaded = nth_event(&mut gateway, "tls_reloaded", 1).await;
        assert_eq!(reloaded["class_uid"], 5019, "RUST_LOG={rust_log}");
        let fingerprint = &tls_details(&reloaded)["new_fingerprint"];
        assert_eq!(fingerprint, rotated.fingerprint.as_str());
        let events = gateway.ocsf_events().unwrap();
        let output = gateway.output();
        let loaded = with_code(&events, "tls_loaded").count();
        assert_eq!(loaded, 1, "RUST_LOG={rust_log}: no startup event\n{output}");
        // The filter still applies to the logs themselves.
        let no_info = gateway.logs().iter().all(|l| l["level"] != "INFO");
        assert!(no_info, "RUST_LOG={rust_log} let INFO through\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_file_is_counted_and_stops_nothing() {
    let mut fixture = Fixture::new();
    let logs = fixture.dir().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let audit = logs.join("audit.jsonl");
    let gateway = fixture.gateway(false).args(["--bind", "127.0.0.1:0"]);
    let (mut gateway, addr) = gateway.ocsf_log(&audit).start(STARTUP).await.unwrap();
    let client = fixture.client_as(None);
    nth_event(&mut gateway, "tls_loaded", 1).await;
    let failures = async || {
        let page = MetricsPage::fetch(addr, &client).await.unwrap();
        page.sum("openshell_audit_write_failures_total", &[])
    };
    assert_eq!(failures().await, 0);

    std::fs::remove_dir_all(&logs).unwrap();
    for _ in 0..2 {
        let rotated = fixture.rotate();
        wait_until_served(addr, &client, &rotated.fingerprint).await;
    }
    let count = eventually(RELOAD, "two counted failures", || async {
        let n = failures().await;
        if n >= 2 { Ok(n) } else { Err(n) }
    })
    .await;
    assert_eq!(count, 2, "one failure per unwritten event");
    // Logged once for the burst, with the event's shorthand.
    let lines = gateway.stderr_lines();
    let unwritten: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("audit event not written"))
        .collect();
    let [line] = unwritten[..] else {
        panic!("{unwritten:#?}")
    };
    let path = audit.display().to_string();
    assert!(
        line.contains("CONFIG:RELOADED") && line.contains(&path),
        "{line}"
    );
    assert!(gateway.is_running(), "the gateway stopped");

    // The directory comes back: the next event is written again.
    std::fs::create_dir(&logs).unwrap();
    let rotated = fixture.rotate();
    wait_until_served(addr, &client, &rotated.fingerprint).await;
    let new = |e: &Value| tls_details(e)["new_fingerprint"] == rotated.fingerprint;
    common::event(&mut gateway, "tls_reloaded", new).await;
}

/// `command` with a plaintext health port on loopback: the gateway, its
/// TLS and its health addresses.
async fn with_health_port(command: GatewayCommand) -> (GatewayProcess, SocketAddr, SocketAddr) {
    let command = command.args(["--bind", "127.0.0.1:0", "--handshake-timeout", "30s"]);
    let command = command.args(["--health-bind", "127.0.0.1:0"]);
    let (gateway, addr) = command.start(STARTUP).await.unwrap();
    let health = gateway.health_addr().expect("the health port is logged");
    (gateway, addr, health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_under_a_low_fd_limit_does_not_starve_the_health_port() {
    let fixture = Fixture::new();
    let (mut gateway, addr, health) = with_health_port(fixture.gateway(false).nofile(128)).await;

    // More idle connections than the process has descriptors.
    let mut flood = Vec::new();
    for _ in 0..140 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let start = Instant::now();
        let request = tls::get_request("/healthz").unwrap();
        let within = Duration::from_secs(1);
        let reply = tls::send(health, None, Http::One, request, within).await;
        assert_eq!(reply.unwrap().status, 200, "{}", gateway.output());
        assert!(start.elapsed() < within);
    }
    let count = |text: &str| {
        let lines = gateway.stderr_lines();
        lines.iter().filter(|l| l.contains(text)).count()
    };
    assert_eq!(count("Too many open files"), 0, "{}", gateway.output());
    let capped = count("connection limit reached");
    assert!(
        (1..=2).contains(&capped),
        "the cap logged at a bounded rate: {capped} lines"
    );
    drop(flood);
    assert!(gateway.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_port_serves_health_only() {
    let fixture = Fixture::new();
    let (mut gateway, addr, health) = with_health_port(fixture.gateway(false)).await;
    let client = fixture.client_as(None);

    let healthz = get_plain(health, "/healthz").await;
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
    assert_eq!(get_plain(health, "/readyz").await.status, 200);
    for path in ["/metrics", "/v1/tls"] {
        assert_eq!(get_plain(health, path).await.status, 404, "{path}");
        // ... whereas the TLS port serves them.
        get_ok(addr, &client, path).await;
    }

    // gRPC does not reach the Gateway service on the health port, over
    // h2c or HTTP/1.1.
    for version in [Http::Two, Http::One] {
        let request =
            http::Request::post("http://localhost/openshell.gateway.v1.Gateway/GetTlsStatus")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
                .unwrap();
        let reply = tls::send(health, None, version, request, EXCHANGE)
            .await
            .unwrap();
        let (status, grpc) = (reply.status, reply.grpc_status());
        let leaked = reply.body.contains("fingerprint");
        assert!(
            status == 404 && grpc != Some("0") && !leaked,
            "{version:?}: {reply:?}"
        );
    }
    assert!(gateway.is_running());
}
