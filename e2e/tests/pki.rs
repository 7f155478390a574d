#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! The whole PKI of a gateway and of one long-lived mTLS client rotates
//! while the client calls, with no failed call and no restart of either.
//!
//! The real `openshell-gateway` process requires client certificates
//! (`--tls-client-auth required`) and closes connections after 3 s
//! (`--max-connection-age`); the `mtls_client` example of
//! `openshell-server` runs as a second process, calling `WhoAmI` every
//! 200 ms through its `ReloadableConnector` and printing one JSON line per
//! call. Every file of both sides lives in a kubelet-style volume written
//! by `AtomicWriter`: the gateway's server certificate (`tls.crt`,
//! `tls.key`) and client-CA bundle (`ca.crt`), and the client's Secret
//! (`tls.crt`, `tls.key`, `ca.crt`). Both debounce for 200 ms.
//!
//! One CA, A, issues both leaves at first. In turn: (a) the server
//! certificate is reissued, (b) the client certificate is reissued, (c) the
//! CA rolls over to B: both bundles become A+B, both leaves are reissued
//! from B, both bundles become B alone. After each step the lines show the
//! new leaves (the server's on the connection the client made, the
//! client's as the gateway verified it) within the debounce plus a second
//! (plus the max connection age for (a), since a connection keeps the
//! certificate it was made with), and no line of (a) to (c) is a failed
//! call. Then a client trust bundle holding only an unrelated CA makes new
//! calls fail within 2 s, and restoring it heals the client.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use openshell_e2e::ocsf::with_code;
use openshell_e2e::{GatewayCommand, GatewayProcess, MtlsClientProcess, say};
use serde_json::Value;
use tls_reload::testing::{AtomicWriter, Leaf, TestCa};

/// How long the gateway may take to start listening.
const STARTUP: Duration = Duration::from_secs(10);
/// How long the client may take to make its first call (it may have to be
/// built first when `OPENSHELL_MTLS_CLIENT_BIN` is not set).
const FIRST_CALL: Duration = Duration::from_secs(15);
/// The reload debounce of both sides.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// The client's call interval.
const INTERVAL: &str = "200ms";
/// The gateway's max connection age; it jitters it by up to 10 %
/// (to 3.3 s).
const MAX_AGE: Duration = Duration::from_secs(3);
/// How long a change may take to show in the lines: the debounce plus a
/// second.
const SHOWN: Duration = DEBOUNCE.saturating_add(Duration::from_secs(1));
/// How long a new server certificate may take to show on a connection
/// that is not remade for another reason: [`SHOWN`] plus the jittered max
/// connection age (3.3 s).
const SHOWN_AFTER_MAX_AGE: Duration = SHOWN.saturating_add(Duration::from_millis(3300));
/// How long new calls may keep succeeding after the client's trust is
/// broken.
const BROKEN: Duration = Duration::from_secs(2);
/// How long the harness waits for anything at all: a change that shows
/// later than its budget is reported with its delay, not as a timeout.
const PATIENCE: Duration = Duration::from_secs(15);
/// Calls that must succeed after a step before the next one starts.
const SETTLE_CALLS: usize = 3;

/// The volumes of both sides, in a temporary directory.
struct Pki {
    tmp: tempfile::TempDir,
    /// The gateway's server certificate: `tls.crt`, `tls.key`.
    server: AtomicWriter,
    /// The gateway's client-CA bundle: `ca.crt`.
    client_ca: AtomicWriter,
    /// The client's Secret: `tls.crt`, `tls.key`, `ca.crt`.
    client: AtomicWriter,
}

impl Pki {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let volume = |name: &str| AtomicWriter::new(tmp.path().join(name)).unwrap();
        Self {
            server: volume("server"),
            client_ca: volume("client-ca"),
            client: volume("client"),
            tmp,
        }
    }

    fn publish_server(&self, leaf: &Leaf) -> u128 {
        let files = [
            ("tls.crt", leaf.cert_pem.as_bytes()),
            ("tls.key", leaf.key_pem.as_bytes()),
        ];
        self.server.write(&files).unwrap();
        unix_ms()
    }

    fn publish_client_ca(&self, bundle: &str) -> u128 {
        self.client_ca
            .write(&[("ca.crt", bundle.as_bytes())])
            .unwrap();
        unix_ms()
    }

    fn publish_client(&self, leaf: &Leaf, trust: &str) -> u128 {
        let files = [
            ("tls.crt", leaf.cert_pem.as_bytes()),
            ("tls.key", leaf.key_pem.as_bytes()),
            ("ca.crt", trust.as_bytes()),
        ];
        self.client.write(&files).unwrap();
        unix_ms()
    }

    fn gateway(&self) -> GatewayCommand {
        let debounce = humantime::format_duration(DEBOUNCE).to_string();
        let max_age = humantime::format_duration(MAX_AGE).to_string();
        GatewayCommand::new()
            .args(["--bind", "127.0.0.1:0", "--tls-client-auth", "required"])
            .args(["--tls-reload-debounce", &debounce])
            .args(["--max-connection-age", &max_age])
            .args(["--max-connection-age-grace", "1s"])
            .arg("--tls-cert")
            .arg(self.server.path("tls.crt"))
            .arg("--tls-key")
            .arg(self.server.path("tls.key"))
            .arg("--tls-client-ca")
            .arg(self.client_ca.path("ca.crt"))
            .ocsf_log(self.tmp.path().join("audit.jsonl"))
    }

    fn client_args(&self, addr: &str) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        let debounce = humantime::format_duration(DEBOUNCE).to_string();
        [
            "--addr",
            addr,
            "--server-name",
            "localhost",
            "--interval",
            INTERVAL,
            "--debounce",
            &debounce,
            "--ca",
            &path(&self.client.path("ca.crt")),
            "--cert",
            &path(&self.client.path("tls.crt")),
            "--key",
            &path(&self.client.path("tls.key")),
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// The PEM bundle of `cas`, one after the other.
fn bundle(cas: &[&TestCa]) -> String {
    cas.iter()
        .map(|ca| format!("{}\n", ca.cert_pem().trim_end()))
        .collect()
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn at_ms(line: &Value) -> u128 {
    u128::from(line["at_ms"].as_u64().expect("at_ms"))
}

fn shows(line: &Value, server: &str, client: &str) -> bool {
    line["ok"] == true
        && line["server_fingerprint"] == server
        && line["client_fingerprint"] == client
}

/// One step's figures, for the test's output.
struct Step {
    name: String,
    lines: usize,
    retried: usize,
    failed: usize,
    took: Duration,
}

/// Drives the client and gateway through the steps.
struct Run {
    client: MtlsClientProcess,
    gateway: GatewayProcess,
    /// The index of the first line of the current step.
    step_start: usize,
    /// The gateway's `tls_reloaded` events expected so far.
    gateway_reloads: usize,
    /// The client connector's generation at the first call.
    first_generation: u64,
    /// The changes of the client's identity or trust expected so far.
    client_changes: u64,
    steps: Vec<Step>,
}

impl Run {
    /// Waits for the first line of step `step` showing both leaves, checks
    /// that it came within `budget` of `written`, then waits for
    /// [`SETTLE_CALLS`] more successful calls, and closes the step.
    async fn shown(
        &mut self,
        step: &str,
        written: u128,
        (server, client): (&Leaf, &Leaf),
        budget: Duration,
    ) {
        let what = &format!("{step}: both leaves shown");
        let (server, client) = (&server.fingerprint, &client.fingerprint);
        let (index, line) = self.in_step(what, |l| shows(l, server, client)).await;
        let delay = Duration::from_millis(at_ms(&line).saturating_sub(written) as u64);
        assert!(
            delay <= budget,
            "{what}: shown {delay:?} after the write, budget {budget:?}: {line}"
        );
        self.settle(what, index).await;
        self.end_step(step, delay);
    }

    /// Waits for the first line of this step satisfying `pred`, and
    /// returns its index and the line.
    async fn in_step(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> (usize, Value) {
        let from = self.step_start;
        self.client
            .wait_for_line(PATIENCE, what, from, pred)
            .await
            .unwrap()
    }

    /// Waits for [`SETTLE_CALLS`] successful calls after line `index`.
    async fn settle(&mut self, what: &str, index: usize) {
        let mut from = index + 1;
        for _ in 0..SETTLE_CALLS {
            let what = format!("a successful call after {what}");
            let (i, _) = self
                .client
                .wait_for_line(PATIENCE, &what, from, |l| l["ok"] == true)
                .await
                .unwrap();
            from = i + 1;
        }
    }

    /// Waits until the gateway has logged one more `tls_reloaded` event.
    async fn gateway_reloaded(&mut self, what: &str) {
        self.gateway_reloads += 1;
        let n = self.gateway_reloads;
        self.gateway
            .wait_for_ocsf(
                PATIENCE,
                &format!("gateway reload #{n}: {what}"),
                |events| (with_code(events, "tls_reloaded").count() >= n).then_some(()),
            )
            .await
            .unwrap();
    }

    /// Waits for a line saying the client's identity or trust has changed
    /// once more (its connector's generation), and returns its index.
    async fn client_reloaded(&mut self, what: &str) -> usize {
        self.client_changes += 1;
        let n = self.first_generation + self.client_changes;
        let what = format!("client change #{}: {what}", self.client_changes);
        let generation = |l: &Value| l["generation"].as_u64().is_some_and(|g| g >= n);
        self.in_step(&what, generation).await.0
    }

    /// Step `step`: both trust bundles become `trust` (the CAs `cas`), the
    /// client's leaf staying; waits for both sides to reload and for
    /// [`SETTLE_CALLS`] successful calls, then closes the step.
    async fn bundles(&mut self, pki: &Pki, step: &str, cas: &str, trust: &str, client: &Leaf) {
        let written = pki.publish_client_ca(trust);
        pki.publish_client(client, trust);
        self.gateway_reloaded(&format!("{step} client CA {cas}"))
            .await;
        let index = self.client_reloaded(&format!("{step} trust {cas}")).await;
        self.settle(&format!("{step} both bundles {cas}"), index)
            .await;
        let delay = Duration::from_millis((unix_ms() - written) as u64);
        self.end_step(format!("{step} bundles {cas}"), delay);
    }

    /// Closes the current step: counts its lines, and starts the next.
    fn end_step(&mut self, name: impl Into<String>, took: Duration) {
        let lines = self.client.lines().unwrap();
        let step = &lines[self.step_start..];
        self.steps.push(Step {
            name: name.into(),
            lines: step.len(),
            retried: step.iter().filter(|l| l["attempts"] != 1).count(),
            failed: step.iter().filter(|l| l["ok"] != true).count(),
            took,
        });
        self.step_start = lines.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pki_rotates_under_a_calling_client_with_no_failed_call_and_no_restart() {
    // Built before the gateway starts, so that its first connection is
    // not kept waiting by the build.
    openshell_e2e::mtls_client_binary().unwrap();
    let began = Instant::now();
    let pki = Pki::new();
    let ca_a = TestCa::new("openshell-e2e PKI A");
    let ca_b = TestCa::new("openshell-e2e PKI B");
    let unrelated = TestCa::new("openshell-e2e unrelated CA");
    let client_leaf = |ca: &TestCa| ca.client("sandbox-supervisor");

    let (mut server_leaf, mut client_cert) = (ca_a.server(), client_leaf(&ca_a));
    pki.publish_server(&server_leaf);
    pki.publish_client_ca(&bundle(&[&ca_a]));
    pki.publish_client(&client_cert, &bundle(&[&ca_a]));
    let (gateway, addr) = pki.gateway().start(STARTUP).await.unwrap();
    let gateway_pid = gateway.pid();
    let client = MtlsClientProcess::spawn(pki.client_args(&addr.to_string())).unwrap();
    let client_pid = client.pid();
    let mut run = Run {
        client,
        gateway,
        step_start: 0,
        gateway_reloads: 0,
        first_generation: 0,
        client_changes: 0,
        steps: Vec::new(),
    };

    // The first calls show the first leaves.
    let (first, line) = run
        .client
        .wait_for_line(FIRST_CALL, "a first successful call", 0, |l| {
            l["ok"] == true
        })
        .await
        .unwrap();
    assert!(
        shows(&line, &server_leaf.fingerprint, &client_cert.fingerprint),
        "{line}"
    );
    assert_eq!(line["authenticated"], true, "{line}");
    run.first_generation = line["generation"].as_u64().expect("generation");
    run.settle("the start", first).await;
    let rotations_began = first;
    run.end_step("start", Duration::ZERO);

    // (a) The server certificate: the open connection keeps the old one
    // until its max age.
    server_leaf = ca_a.server();
    let written = pki.publish_server(&server_leaf);
    run.gateway_reloaded("(a) server certificate").await;
    let leaves = (&server_leaf, &client_cert);
    run.shown(
        "(a) server certificate",
        written,
        leaves,
        SHOWN_AFTER_MAX_AGE,
    )
    .await;

    // (b) The client certificate: the client moves to a fresh channel.
    client_cert = client_leaf(&ca_a);
    let written = pki.publish_client(&client_cert, &bundle(&[&ca_a]));
    run.client_reloaded("(b) client certificate").await;
    let leaves = (&server_leaf, &client_cert);
    run.shown("(b) client certificate", written, leaves, SHOWN)
        .await;

    // (c1) Both bundles trust A and B; the leaves stay.
    let both = bundle(&[&ca_a, &ca_b]);
    run.bundles(&pki, "(c1)", "A+B", &both, &client_cert).await;

    // (c2) Both leaves reissued from B: the server's first, so that the
    // client's fresh channel after its own change meets the new one.
    server_leaf = ca_b.server();
    pki.publish_server(&server_leaf);
    run.gateway_reloaded("(c2) server leaf from B").await;
    client_cert = client_leaf(&ca_b);
    let written = pki.publish_client(&client_cert, &both);
    run.client_reloaded("(c2) client leaf from B").await;
    let leaves = (&server_leaf, &client_cert);
    run.shown("(c2) leaves from B", written, leaves, SHOWN)
        .await;

    // (c3) Both bundles trust B alone.
    let only_b = bundle(&[&ca_b]);
    run.bundles(&pki, "(c3)", "B", &only_b, &client_cert).await;

    // No call failed from the first one to here.
    let lines = run.client.lines().unwrap();
    let failed: Vec<&Value> = lines[rotations_began..]
        .iter()
        .filter(|l| l["ok"] != true)
        .collect();
    assert!(
        failed.is_empty(),
        "failed calls during the rotations: {failed:#?}"
    );
    let rotation_lines = lines.len() - rotations_began;

    // A trust bundle holding only an unrelated CA: new calls fail.
    let written = pki.publish_client(&client_cert, &bundle(&[&unrelated]));
    let (_, line) = run
        .in_step("a call failing on the unrelated trust", |l| {
            l["ok"] == false
        })
        .await;
    let failed_after = Duration::from_millis(at_ms(&line).saturating_sub(written) as u64);
    assert!(
        failed_after <= BROKEN,
        "failing {failed_after:?} after the write: {line}"
    );
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("certificate"),
        "the error names the certificate: {line}"
    );
    // Retried once on a fresh channel, and both failures reported.
    assert_eq!(line["attempts"], 2, "{line}");
    assert!(line["first_error"].is_string(), "{line}");
    run.client_changes += 1;
    run.end_step("broken trust", failed_after);

    // Restoring it heals.
    let written = pki.publish_client(&client_cert, &only_b);
    let leaves = (&server_leaf, &client_cert);
    run.shown("restored trust", written, leaves, SHOWN).await;

    // Every connection verified the gateway's certificate in a full
    // handshake: a resumed session would still show the old one.
    let lines = run.client.lines().unwrap();
    assert!(
        lines.iter().all(|l| l["resumed"] != true),
        "a session resumed"
    );

    // Neither side restarted.
    run.gateway.ensure_not_restarted(gateway_pid).unwrap();
    assert!(run.client.is_running(), "{}", run.client.output());
    assert_eq!(run.client.pid(), client_pid);

    say(&format!(
        "pki: {rotation_lines} calls during the rotations, 0 failed; {:.1}s in all",
        began.elapsed().as_secs_f64()
    ));
    for step in &run.steps {
        say(&format!(
            "pki: {:<24} {:>3} lines, {} retried, {} failed, took {:?}",
            step.name, step.lines, step.retried, step.failed, step.took
        ));
    }
}

/// `args` with the value after `flag` replaced by `value`.
fn with_arg(mut args: Vec<String>, flag: &str, value: &Path) -> Vec<String> {
    let at = args.iter().position(|a| a == flag).expect(flag) + 1;
    args[at] = value.display().to_string();
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_each_call_exits_after_its_count_and_names_what_it_cannot_read() {
    openshell_e2e::mtls_client_binary().unwrap();
    let pki = Pki::new();
    let ca = TestCa::new("openshell-e2e PKI");
    let (server_leaf, client_cert) = (ca.server(), ca.client("sandbox-supervisor"));
    pki.publish_server(&server_leaf);
    pki.publish_client_ca(&bundle(&[&ca]));
    pki.publish_client(&client_cert, &bundle(&[&ca]));
    let (_gateway, addr) = pki.gateway().start(STARTUP).await.unwrap();
    let args = pki.client_args(&addr.to_string());

    // Three calls, three lines, exit 0.
    let counted = [args.clone(), vec!["--count".into(), "3".into()]].concat();
    let mut client = MtlsClientProcess::spawn(counted).unwrap();
    let status = client.exit_within(PATIENCE).await.unwrap();
    let output = client.output();
    assert!(status.is_some_and(|s| s.success()), "{output}");
    let lines = client.lines().unwrap();
    let seqs: Vec<&Value> = lines.iter().map(|l| &l["seq"]).collect();
    assert_eq!(seqs, [1, 2, 3], "{output}");
    let (s, c) = (&server_leaf.fingerprint, &client_cert.fingerprint);
    assert!(lines.iter().all(|l| shows(l, s, c)), "{output}");

    // A certificate the gateway does not trust: each call fails, retried
    // once, on stdout and stderr, and the exit status says so.
    let stranger = TestCa::new("openshell-e2e stranger").client("stranger");
    let dir = pki.tmp.path().join("stranger");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &stranger.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &stranger.key_pem).unwrap();
    let refused = with_arg(args.clone(), "--cert", &dir.join("tls.crt"));
    let refused = with_arg(refused, "--key", &dir.join("tls.key"));
    let refused = [refused, vec!["--count".into(), "2".into()]].concat();
    let mut client = MtlsClientProcess::spawn(refused).unwrap();
    let status = client.exit_within(PATIENCE).await.unwrap();
    let output = client.output();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{output}");
    let lines = client.lines().unwrap();
    assert_eq!(lines.len(), 2, "{output}");
    for line in &lines {
        assert_eq!(line["ok"], false, "{output}");
        assert_eq!(line["attempts"], 2, "{output}");
        assert!(
            line["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{output}"
        );
    }
    let failures = client.stderr_lines();
    assert_eq!(
        failures.len(),
        2,
        "one stderr line per failed call: {output}"
    );
    assert!(
        failures[0].starts_with("mtls_client: call 1 failed"),
        "{output}"
    );

    // A key file that does not exist: exit 1 before any call, naming it.
    let missing = pki.tmp.path().join("nowhere").join("tls.key");
    let mut client = MtlsClientProcess::spawn(with_arg(args, "--key", &missing)).unwrap();
    let status = client.exit_within(PATIENCE).await.unwrap();
    let output = client.output();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{output}");
    assert_eq!(client.line_count(), 0, "{output}");
    let said = client.stderr_lines().join("\n");
    assert!(said.starts_with("mtls_client: error: "), "{output}");
    assert!(said.contains(&missing.display().to_string()), "{output}");
}
