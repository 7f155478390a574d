#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! The real `openshell-gateway` process on loopback, serving its server
//! certificate from one kubelet-style Secret directory and its client CA
//! from another (both written by `AtomicWriter`, exactly as kubelet swaps
//! them), with mutual TLS required and a 100 ms reload debounce. A real TLS
//! client checks what is served after each rotation; the OCSF audit file
//! and the logs are checked for the matching events.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openshell_e2e::ocsf::{self, SchemaCheck, event_code, tls_details, with_code};
use openshell_e2e::{Error, GatewayCommand, GatewayProcess, eventually, tls};
use rustls::ClientConfig;
use serde_json::Value;
use tls_reload::testing::{Leaf, SecretVolumes, TestCa};

/// How long the gateway may take to start listening.
const STARTUP: Duration = Duration::from_secs(10);
/// How long a change may take to be served (or to fail): the debounce is
/// 100 ms; the rest is slack for a loaded two-core machine.
const RELOAD: Duration = Duration::from_secs(5);
/// One TLS exchange.
const EXCHANGE: Duration = Duration::from_secs(5);
/// How often a wait probes.
const EVERY: Duration = Duration::from_millis(25);

// === fixture ===

/// Two Secret volumes (server certificate, client CA), the CAs behind them
/// and a client certificate, in a temporary directory.
type Fixture = SecretVolumes;

/// What these tests add to the shared volumes: the gateway they start and
/// the clients they use.
trait FixtureExt {
    fn audit_log(&self) -> PathBuf;
    async fn start(&self) -> (GatewayProcess, SocketAddr);
    fn client_as(&self, identity: &Leaf) -> Arc<ClientConfig>;
    fn client(&self) -> Arc<ClientConfig>;
}

impl FixtureExt for Fixture {
    fn audit_log(&self) -> PathBuf {
        self.dir().join("audit.jsonl")
    }

    async fn start(&self) -> (GatewayProcess, SocketAddr) {
        let mut gateway = GatewayCommand::new()
            .args(["--bind", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(self.server.path("tls.crt"))
            .arg("--tls-key")
            .arg(self.server.path("tls.key"))
            .arg("--tls-client-ca")
            .arg(self.client_ca_volume.path("ca.crt"))
            .args(["--tls-client-auth", "required"])
            .args(["--tls-reload-debounce", "100ms"])
            .ocsf_log(self.audit_log())
            .spawn()
            .unwrap();
        let addr = gateway.listening(STARTUP).await.unwrap();
        (gateway, addr)
    }

    /// A client trusting the server CA and presenting `identity`.
    fn client_as(&self, identity: &Leaf) -> Arc<ClientConfig> {
        tls::client_config(self.server_ca.cert_pem(), Some(identity)).unwrap()
    }

    /// The usual client: the client certificate of the initial client CA.
    fn client(&self) -> Arc<ClientConfig> {
        self.client_as(&self.client)
    }
}

// === helpers ===

async fn served(addr: SocketAddr, client: Arc<ClientConfig>) -> String {
    tls::served_fingerprint(addr, client, EXCHANGE)
        .await
        .unwrap()
}

/// Waits until a new handshake shows `fingerprint`.
async fn wait_until_served(addr: SocketAddr, client: &Arc<ClientConfig>, fingerprint: &str) {
    tls::wait_until_served(addr, client, fingerprint, RELOAD, EVERY)
        .await
        .unwrap();
}

/// `GET /healthz` as the client `config`: `Ok` when the gateway accepted
/// it and answered, `Err` with the reason otherwise.
async fn healthz(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<u16, Error> {
    tls::get(addr, config, "/healthz", EXCHANGE)
        .await
        .map(|reply| reply.status)
}

/// Asserts that the gateway refused the client during the handshake with
/// the TLS alert `alert` (not a timeout, not an HTTP error status).
async fn assert_refused(addr: SocketAddr, config: Arc<ClientConfig>, alert: &str, who: &str) {
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

/// The process is the one that started and never restarted its listener.
fn assert_not_restarted(gateway: &mut GatewayProcess, pid: u32) {
    gateway.ensure_not_restarted(pid).unwrap();
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

/// Writes a line to the test's stderr even when the harness captures
/// output, so a skipped check is visible in `cargo test`'s output.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Every OCSF line validates against the schema, when the schema files are
/// there; says so when they are not. Returns the events.
fn assert_ocsf_valid(gateway: &GatewayProcess) -> Vec<Value> {
    let events = gateway.ocsf_events().unwrap();
    assert!(!events.is_empty(), "no OCSF events\n{}", gateway.output());
    match ocsf::validate(&events) {
        Ok(SchemaCheck::Validated { events: n, .. }) => assert_eq!(n, events.len()),
        Ok(SchemaCheck::Skipped { reason }) => {
            say(&format!("skipping OCSF schema validation: {reason}"));
        }
        Ok(other) => panic!("unexpected schema check {other:?}"),
        Err(e) => panic!("{e}"),
    }
    events
}

/// No private key (or any PEM) ever reaches the audit stream.
fn assert_no_key_material(fixture: &Fixture, keys: &[&str]) {
    let audit = std::fs::read_to_string(fixture.audit_log()).unwrap();
    assert!(!audit.contains("-----BEGIN"), "PEM in the audit log");
    for key in keys {
        assert!(!audit.contains(key.trim()), "key material in the audit log");
    }
}

// === scenarios ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_server_secret_serves_the_new_certificate_without_a_restart() {
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start().await;
    let pid = gateway.pid();
    let client = fixture.client();
    let first = fixture.leaf.fingerprint.clone();
    assert_eq!(served(addr, client.clone()).await, first);
    let loaded = nth_event(&mut gateway, "tls_loaded", 1).await;
    assert_eq!(tls_details(&loaded)["new_fingerprint"], first.as_str());

    let rotated = fixture.server_ca.server();
    fixture.publish(&rotated.cert_pem, &rotated.key_pem);
    wait_until_served(addr, &client, &rotated.fingerprint).await;
    assert_not_restarted(&mut gateway, pid);

    let reloaded = nth_event(&mut gateway, "tls_reloaded", 1).await;
    let details = tls_details(&reloaded);
    assert_eq!(details["new_fingerprint"], rotated.fingerprint.as_str());
    assert_eq!(details["previous_fingerprint"], first.as_str());
    assert_eq!(
        details["trigger"], "watch",
        "the kubelet swap was not noticed by the watcher: {reloaded}"
    );
    assert!(
        details["generation"].as_u64() > tls_details(&loaded)["generation"].as_u64(),
        "generation did not increase: {loaded} then {reloaded}"
    );
    gateway
        .wait_for_stderr(RELOAD, "CONFIG:RELOADED in the logs", |l| {
            l.contains("CONFIG:RELOADED") && l.contains(&rotated.fingerprint[..23])
        })
        .await
        .unwrap();

    // Established trust is unchanged: the same client is still accepted.
    assert_eq!(healthz(addr, client).await.unwrap(), 200);
    assert_ocsf_valid(&gateway);
    assert_no_key_material(&fixture, &[&fixture.leaf.key_pem, &rotated.key_pem]);

    // And the reloaded gateway still stops cleanly (its watcher included).
    gateway.signal("TERM").unwrap();
    let status = gateway
        .exit_within(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM\n{}", gateway.output()));
    assert!(status.success(), "{status}\n{}", gateway.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_key_keeps_the_served_certificate_until_a_good_update_heals_it() {
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start().await;
    let pid = gateway.pid();
    let client = fixture.client();
    let first = fixture.leaf.fingerprint.clone();

    // A new certificate whose key arrived as garbage.
    let broken = fixture.server_ca.server();
    fixture.publish(&broken.cert_pem, "-----BEGIN PRIVATE KEY-----\ngarbage\n");
    let failed = nth_event(&mut gateway, "tls_reload_failed", 1).await;
    assert_eq!(failed["status_id"], 2, "{failed}");
    let detail = failed["status_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("tls.key"), "status_detail: {detail}");
    assert_eq!(tls_details(&failed)["previous_fingerprint"], first.as_str());
    gateway
        .wait_for_stderr(RELOAD, "CONFIG:FAILED in the logs", |l| {
            l.contains("CONFIG:FAILED")
        })
        .await
        .unwrap();

    // The old certificate is still served, through the retries, which
    // report nothing new for the same broken files.
    assert_eq!(served(addr, client.clone()).await, first);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(served(addr, client.clone()).await, first);
    let events = gateway.ocsf_events().unwrap();
    assert_eq!(
        with_code(&events, "tls_reload_failed").count(),
        1,
        "one failure event per broken content, not per retry"
    );
    assert_eq!(with_code(&events, "tls_reloaded").count(), 0);
    assert_not_restarted(&mut gateway, pid);

    // The next renewal heals it.
    let healed = fixture.server_ca.server();
    fixture.publish(&healed.cert_pem, &healed.key_pem);
    wait_until_served(addr, &client, &healed.fingerprint).await;
    let reloaded = nth_event(&mut gateway, "tls_reloaded", 1).await;
    assert_eq!(
        tls_details(&reloaded)["new_fingerprint"],
        healed.fingerprint.as_str()
    );
    assert_eq!(
        tls_details(&reloaded)["previous_fingerprint"],
        first.as_str()
    );
    assert_not_restarted(&mut gateway, pid);
    assert_ocsf_valid(&gateway);
    assert_no_key_material(&fixture, &[&fixture.leaf.key_pem, &healed.key_pem]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_pair_keeps_the_served_certificate_until_a_good_update_heals_it() {
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start().await;
    let pid = gateway.pid();
    let client = fixture.client();
    let first = fixture.leaf.fingerprint.clone();

    // A valid certificate and a valid key that do not belong together.
    let (cert_of, key_of) = (fixture.server_ca.server(), fixture.server_ca.server());
    fixture.publish(&cert_of.cert_pem, &key_of.key_pem);
    let failed = nth_event(&mut gateway, "tls_reload_failed", 1).await;
    let detail = failed["status_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("does not match"), "status_detail: {detail}");
    assert_eq!(tls_details(&failed)["previous_fingerprint"], first.as_str());

    assert_eq!(served(addr, client.clone()).await, first);
    assert_ne!(served(addr, client.clone()).await, cert_of.fingerprint);
    assert_not_restarted(&mut gateway, pid);

    let healed = fixture.server_ca.server();
    fixture.publish(&healed.cert_pem, &healed.key_pem);
    wait_until_served(addr, &client, &healed.fingerprint).await;
    let reloaded = nth_event(&mut gateway, "tls_reloaded", 1).await;
    assert_eq!(
        tls_details(&reloaded)["new_fingerprint"],
        healed.fingerprint.as_str()
    );
    gateway
        .wait_for_stderr(RELOAD, "CONFIG:RELOADED in the logs", |l| {
            l.contains("CONFIG:RELOADED")
        })
        .await
        .unwrap();
    assert_not_restarted(&mut gateway, pid);
    assert_ocsf_valid(&gateway);
    assert_no_key_material(
        &fixture,
        &[&fixture.leaf.key_pem, &key_of.key_pem, &healed.key_pem],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_client_ca_switches_which_client_certificates_are_accepted() {
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start().await;
    let pid = gateway.pid();
    let new_ca = TestCa::new("openshell-e2e client CA (rotated)");
    let old_client = fixture.client_as(&fixture.client);
    let new_client = fixture.client_as(&new_ca.client("openshell-e2e-client-2"));
    let anonymous = tls::client_config(fixture.server_ca.cert_pem(), None).unwrap();

    // Before: only the old CA's client is accepted.
    assert_eq!(healthz(addr, old_client.clone()).await.unwrap(), 200);
    assert_refused(
        addr,
        new_client.clone(),
        "UnknownCA",
        "new-CA client before the rotation",
    )
    .await;
    assert_refused(
        addr,
        anonymous.clone(),
        "CertificateRequired",
        "client without a certificate",
    )
    .await;

    fixture.publish_client_ca(new_ca.cert_pem());
    eventually(RELOAD, EVERY, "the new CA's client accepted", || {
        let client = new_client.clone();
        async move {
            match healthz(addr, client).await {
                Ok(200) => Ok(()),
                Ok(status) => Err(format!("HTTP {status}")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap();

    // After: only the new CA's client is accepted.
    assert_refused(
        addr,
        old_client.clone(),
        "UnknownCA",
        "old-CA client after the rotation",
    )
    .await;
    assert_refused(
        addr,
        anonymous,
        "CertificateRequired",
        "client without a certificate",
    )
    .await;
    assert_eq!(healthz(addr, new_client.clone()).await.unwrap(), 200);

    // The server certificate did not change; the reload is audited.
    assert_eq!(
        served(addr, new_client).await,
        fixture.leaf.fingerprint.as_str()
    );
    let reloaded = nth_event(&mut gateway, "tls_reloaded", 1).await;
    assert_eq!(
        tls_details(&reloaded)["new_fingerprint"],
        fixture.leaf.fingerprint.as_str()
    );
    gateway
        .wait_for_stderr(RELOAD, "CONFIG:RELOADED in the logs", |l| {
            l.contains("CONFIG:RELOADED")
        })
        .await
        .unwrap();
    assert_not_restarted(&mut gateway, pid);
    assert_ocsf_valid(&gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_line_is_a_valid_ocsf_event_with_a_shorthand_in_the_logs() {
    let fixture = Fixture::new();
    let (mut gateway, addr) = fixture.start().await;
    let client = fixture.client();

    // One of each outcome: startup, a rotation, a failure, a CA change
    // with a recovery.
    let rotated = fixture.server_ca.server();
    fixture.publish(&rotated.cert_pem, &rotated.key_pem);
    wait_until_served(addr, &client, &rotated.fingerprint).await;
    fixture.publish(&rotated.cert_pem, "garbage");
    nth_event(&mut gateway, "tls_reload_failed", 1).await;
    let healed = fixture.server_ca.server();
    fixture.publish(&healed.cert_pem, &healed.key_pem);
    wait_until_served(addr, &client, &healed.fingerprint).await;
    let new_ca = TestCa::new("openshell-e2e client CA (rotated)");
    fixture.publish_client_ca(new_ca.cert_pem());
    nth_event(&mut gateway, "tls_reloaded", 3).await;

    let events = assert_ocsf_valid(&gateway);
    let codes: Vec<&str> = events.iter().map(event_code).collect();
    assert_eq!(
        codes,
        [
            "tls_loaded",
            "tls_reloaded",
            "tls_reload_failed",
            "tls_reloaded",
            "tls_reloaded"
        ],
        "{events:#?}"
    );
    for event in &events {
        assert_eq!(event["class_uid"], 5019, "{event}");
        assert_eq!(event["type_uid"], 501_901, "{event}");
    }
    // Each event also has its one-line shorthand in the logs (logged just
    // after the JSONL line is written).
    let counts = || {
        let lines = gateway.stderr_lines();
        ["CONFIG:LOADED", "CONFIG:RELOADED", "CONFIG:FAILED"]
            .map(|tag| lines.iter().filter(|l| l.contains(tag)).count())
    };
    eventually(RELOAD, EVERY, "one shorthand log line per event", || {
        let seen = counts();
        async move {
            if seen == [1, 3, 1] {
                Ok(())
            } else {
                Err(format!("[LOADED, RELOADED, FAILED] = {seen:?}"))
            }
        }
    })
    .await
    .unwrap();
    assert_no_key_material(
        &fixture,
        &[&fixture.leaf.key_pem, &rotated.key_pem, &healed.key_pem],
    );
}
