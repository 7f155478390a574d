#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! The manual rotation check, replayed on a k3s cluster: install the chart
//! with TLS on, overwrite the server certificate Secret under the running
//! pod, wait for kubelet to project it, and check that the gateway serves
//! the Secret's certificate without a restart and logged the reload.
//!
//! Runs only when `OPENSHELL_E2E_KUBECONFIG` names a kubeconfig (see the
//! crate docs and `mise run e2e:k3s`); otherwise each test says it was
//! skipped and passes.
//!
//! The chart is installed with cert-manager off and the certificates in
//! Secrets these tests write (`server.tls.existingSecret`): cert-manager
//! owns the Secrets it issues and re-issues one whose key no longer matches
//! its CertificateRequest, which would race with the overwrite under test.
//! The Secret keeps the chart's default name, `openshell-server-tls`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use openshell_e2e::kube::{Cluster, IMAGE_ENV, ImageRef, PortForward, SKIP_MESSAGE, chart_dir};
use openshell_e2e::ocsf::{self, tls_details, with_code};
use openshell_e2e::{say, tls};
use serde_json::{Value, json};
use tls_reload::testing::{Leaf, TestCa, poll_blocking};
use tokio::runtime::Runtime;

/// The Helm release; its name contains the chart's, so the objects are
/// named `openshell` and the pod `openshell-0`.
const RELEASE: &str = "openshell";
/// The server certificate Secret (the chart's default name).
const SERVER_SECRET: &str = "openshell-server-tls";
/// The client-CA Secret (mTLS optional: the probes present no certificate).
const CLIENT_CA_SECRET: &str = "openshell-e2e-client-ca";
/// Selects the release's gateway pods.
const SELECTOR: &str = "app.kubernetes.io/instance=openshell,app.kubernetes.io/component=gateway";
/// The gateway container of the pod.
const CONTAINER: &str = "gateway";
/// The TLS port in the pod.
const GATEWAY_PORT: u16 = 8080;
/// Namespace where `mise run helm:skaffold:run` deploys, whose image is used
/// when `OPENSHELL_E2E_IMAGE` is not set.
const SKAFFOLD_NAMESPACE: &str = "openshell";

/// How long `helm upgrade --install --wait` may take.
const INSTALL: Duration = Duration::from_secs(6 * 60);
/// How long kubelet may take to project a changed Secret into the pod (its
/// sync period is a minute by default, plus its cache TTL), plus the
/// gateway's reload.
const PROJECTION: Duration = Duration::from_secs(120);
/// How long the logs may lag behind the served certificate.
const LOGS: Duration = Duration::from_secs(30);
/// One TLS handshake through the port-forward.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The tests share one release; they take turns.
static CLUSTER: Mutex<()> = Mutex::new(());

// === the deployed gateway ===

/// A gateway pod: its name, its UID and the restarts of its containers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pod {
    name: String,
    uid: String,
    restarts: u64,
}

/// The release's gateway pods.
fn gateway_pods(cluster: &Cluster) -> Vec<Pod> {
    let list = cluster
        .kubectl_json(&["get", "pods", "-l", SELECTOR])
        .unwrap();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let restarts = |p: &Value| {
        p["status"]["containerStatuses"]
            .as_array()
            .map(|s| s.iter().filter_map(|c| c["restartCount"].as_u64()).sum())
    };
    let pod = |p: &Value| Pod {
        name: text(&p["metadata"]["name"]),
        uid: text(&p["metadata"]["uid"]),
        restarts: restarts(p).expect("the pod has container statuses"),
    };
    items.iter().map(pod).collect()
}

/// The installed release: its one pod, forwarded to loopback.
struct Deployed {
    cluster: Cluster,
    pod: Pod,
    forward: PortForward,
    runtime: Runtime,
    _turn: MutexGuard<'static, ()>,
}

/// The gateway image: `OPENSHELL_E2E_IMAGE`, else the one that
/// `mise run helm:skaffold:run` deployed.
fn image(cluster: &Cluster) -> ImageRef {
    if let Some(reference) = std::env::var(IMAGE_ENV).ok().filter(|r| !r.is_empty()) {
        return ImageRef::parse(&reference).unwrap();
    }
    let skaffold = Cluster::new(cluster.kubeconfig(), SKAFFOLD_NAMESPACE);
    let jsonpath = "jsonpath={.items[0].spec.containers[?(@.name==\"gateway\")].image}";
    let found = skaffold.kubectl(&["get", "pods", "-l", SELECTOR, "-o", jsonpath]);
    let reference = found
        .ok()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "OPENSHELL_E2E_IMAGE is not set and no gateway runs in namespace \
                 {SKAFFOLD_NAMESPACE}: run `mise run helm:skaffold:run` first, or set \
                 OPENSHELL_E2E_IMAGE to an image the cluster can pull"
            )
        });
    say(&format!(
        "using the image deployed by skaffold: {reference}"
    ));
    ImageRef::parse(&reference).unwrap()
}

/// Writes the server certificate Secret as cert-manager lays it out.
fn publish(cluster: &Cluster, ca: &TestCa, cert_pem: &str, key_pem: &str) {
    let (crt, key, ca) = (
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    );
    let files = [("tls.crt", crt), ("tls.key", key), ("ca.crt", ca)];
    let kind = "kubernetes.io/tls";
    cluster.apply_secret(SERVER_SECRET, kind, &files).unwrap();
}

/// The cluster's release, installed (or upgraded) with its pod running,
/// or `None` after printing the skip line. The Secrets are created first
/// when they do not exist yet (a rerun keeps them).
fn deploy_or_skip() -> Option<Deployed> {
    let Some(cluster) = Cluster::from_env().unwrap() else {
        say(SKIP_MESSAGE);
        return None;
    };
    let turn = CLUSTER.lock().unwrap_or_else(PoisonError::into_inner);
    cluster.ensure_namespace().unwrap();
    if !cluster.secret_exists(SERVER_SECRET).unwrap() {
        let ca = TestCa::new("openshell-e2e server CA");
        let leaf = ca.server();
        publish(&cluster, &ca, &leaf.cert_pem, &leaf.key_pem);
    }
    if !cluster.secret_exists(CLIENT_CA_SECRET).unwrap() {
        let ca = TestCa::new("openshell-e2e client CA");
        cluster
            .apply_secret(
                CLIENT_CA_SECRET,
                "Opaque",
                &[("ca.crt", ca.cert_pem().as_bytes())],
            )
            .unwrap();
    }

    let values = json!({
        "image": image(&cluster).values(),
        "certManager": { "enabled": false },
        "server": {
            "logFormat": "json",
            "ocsfLog": "stderr",
            "tls": {
                "existingSecret": SERVER_SECRET,
                "clientAuth": "optional",
                "clientCa": {
                    "enabled": true,
                    "existingSecret": CLIENT_CA_SECRET,
                    "key": "ca.crt",
                },
                "reload": { "enabled": true, "debounce": "200ms", "poll": "10s" },
            },
        },
        "resources": {
            "requests": { "cpu": "10m", "memory": "32Mi" },
            "limits": { "memory": "256Mi" },
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let values_file = dir.path().join("values.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let namespace = cluster.namespace();
    say(&format!(
        "installing release {RELEASE} into namespace {namespace}"
    ));
    let (chart, values) = (chart_dir(), values_file.to_str().unwrap().to_owned());
    let install = [
        "upgrade",
        "--install",
        RELEASE,
        chart.to_str().unwrap(),
        "--values",
    ];
    let args = [&install[..], &[&values, "--wait", "--timeout", "5m"]].concat();
    cluster.helm(&args, INSTALL).unwrap();
    let statefulset = format!("statefulset/{RELEASE}");
    let rollout = ["rollout", "status", &statefulset, "--timeout=50s"];
    cluster.kubectl(&rollout).unwrap();

    let pods = gateway_pods(&cluster);
    assert_eq!(pods.len(), 1, "expected one gateway pod: {pods:?}");
    let pod = pods[0].clone();
    let target = format!("pod/{}", pod.name);
    let forward = cluster.port_forward(&target, GATEWAY_PORT).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some(Deployed {
        cluster,
        pod,
        forward,
        runtime,
        _turn: turn,
    })
}

impl Deployed {
    /// The fingerprint the gateway serves now, through the port-forward,
    /// verified against `trust` (PEM CA bundle).
    fn served(&mut self, trust: &str) -> Result<String, String> {
        let addr = self.forward.addr().map_err(|e| e.to_string())?;
        let client = tls::client_config(trust, None).map_err(|e| e.to_string())?;
        self.runtime
            .block_on(tls::served_fingerprint(addr, client, HANDSHAKE))
            .map_err(|e| e.to_string())
    }

    /// Waits until the gateway serves `fingerprint`; returns how long it
    /// took.
    fn wait_until_served(&mut self, trust: &str, fingerprint: &str, what: &str) -> Duration {
        let started = Instant::now();
        poll_blocking(PROJECTION, Duration::from_secs(1), what, || {
            match self.served(trust)? {
                served if served == fingerprint => Ok(()),
                served => Err(format!("served {served}")),
            }
        })
        .unwrap_or_else(|e| panic!("{e}\nport-forward: {}", self.forward.output()));
        started.elapsed()
    }

    /// Waits until the gateway serves the Secret's certificate (a rerun
    /// may find an earlier overwrite still being projected); returns the
    /// certificate's fingerprint and the CA bundle to trust it with.
    fn serving_the_secret(&mut self, what: &str) -> (String, String) {
        let (fingerprint, ca) = self.secret();
        self.wait_until_served(&ca, &fingerprint, what);
        (fingerprint, ca)
    }

    /// The Secret's certificate: its fingerprint and the CA bundle to
    /// trust it with.
    fn secret(&self) -> (String, String) {
        let cert = self.cluster.secret_value(SERVER_SECRET, "tls.crt").unwrap();
        let ca = self.cluster.secret_value(SERVER_SECRET, "ca.crt").unwrap();
        (tls::fingerprint_of_pem(cert.as_bytes()).unwrap(), ca)
    }

    /// The pod is the one installed (same UID), alone, and its container
    /// never restarted.
    fn assert_not_restarted(&self) {
        let installed = Pod {
            restarts: 0,
            ..self.pod.clone()
        };
        let pods = gateway_pods(&self.cluster);
        assert_eq!(pods, [installed], "the pod was replaced or restarted");
    }

    fn logs(&self) -> Result<String, String> {
        let logs = self
            .cluster
            .kubectl(&["logs", &self.pod.name, "-c", CONTAINER]);
        logs.map_err(|e| e.to_string())
    }

    /// Waits at most `within` until the pod's logs satisfy `pred`;
    /// returns them.
    fn wait_for_logs(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&str, &[Value]) -> bool,
    ) -> String {
        poll_blocking(within, Duration::from_secs(2), what, || {
            let logs = self.logs()?;
            let events = ocsf::events_in(logs.lines());
            match pred(&logs, &events) {
                true => Ok(logs),
                false => Err(format!("{} OCSF events in the logs", events.len())),
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n--- logs ---\n{:?}", self.logs()))
    }
}

/// Validates the OCSF lines of the pod's logs against the schema, or says
/// the schema is not there.
fn assert_ocsf_valid(logs: &str) {
    ocsf::check(&ocsf::events_in(logs.lines())).unwrap();
}

/// Whether the logs hold the shorthand and the OCSF event of a reload to
/// `fingerprint`.
fn logged_reload_to(logs: &str, events: &[Value], fingerprint: &str) -> bool {
    // The shorthand abbreviates the fingerprint to its first 8 groups.
    let shorthand = logs
        .lines()
        .any(|l| l.contains("CONFIG:RELOADED") && l.contains(&fingerprint[..23]));
    let event =
        with_code(events, "tls_reloaded").any(|e| tls_details(e)["new_fingerprint"] == fingerprint);
    shorthand && event
}

/// A new server certificate from a new CA, and the bundle that trusts both
/// it and the one served now.
fn next_certificate(current_ca: &str) -> (TestCa, Leaf, String) {
    let ca = TestCa::new("openshell-e2e server CA (rotated)");
    let leaf = ca.server();
    let trust = format!("{}\n{current_ca}", ca.cert_pem());
    (ca, leaf, trust)
}

/// `took` in whole seconds, for the progress lines.
fn seconds(took: Duration) -> String {
    humantime::format_duration(Duration::from_secs(took.as_secs())).to_string()
}

// === scenarios ===

#[test]
fn overwriting_the_server_secret_is_served_without_a_pod_restart() {
    let Some(mut gw) = deploy_or_skip() else {
        return;
    };
    let (before, ca) = gw.serving_the_secret("the Secret's certificate served before");
    gw.assert_not_restarted();
    say(&format!("served before the rotation: {before}"));

    // Overwrite the Secret under the running pod.
    let (new_ca, leaf, trust) = next_certificate(&ca);
    publish(&gw.cluster, &new_ca, &leaf.cert_pem, &leaf.key_pem);
    let took = gw.wait_until_served(&trust, &leaf.fingerprint, "the new certificate served");
    let (took, fingerprint) = (seconds(took), &leaf.fingerprint);
    say(&format!("served {took} after the overwrite: {fingerprint}"));

    // The served fingerprint is the Secret's, and nothing restarted.
    let (in_secret, _) = gw.secret();
    assert_eq!(in_secret, leaf.fingerprint, "not overwritten");
    assert_eq!(gw.served(&trust).unwrap(), in_secret);
    gw.assert_not_restarted();

    // The reload is in the pod's logs, as shorthand and as an OCSF event.
    let logs = gw.wait_for_logs(LOGS, "CONFIG:RELOADED for the new certificate", |l, e| {
        logged_reload_to(l, e, &leaf.fingerprint)
    });
    let events = ocsf::events_in(logs.lines());
    let to_leaf = |e: &&Value| tls_details(e)["new_fingerprint"] == leaf.fingerprint.as_str();
    let reloaded = with_code(&events, "tls_reloaded").find(to_leaf).unwrap();
    let previous = &tls_details(reloaded)["previous_fingerprint"];
    assert_eq!(previous, before.as_str());
    assert_ocsf_valid(&logs);
}

#[test]
fn a_secret_with_a_garbage_key_keeps_the_served_certificate_until_it_is_fixed() {
    let Some(mut gw) = deploy_or_skip() else {
        return;
    };
    let (before, ca) = gw.serving_the_secret("the Secret's certificate served");
    let events = ocsf::events_in(gw.logs().unwrap().lines());
    let failures_before = with_code(&events, "tls_reload_failed").count();

    // A renewal whose key is garbage: the gateway must keep serving.
    let (new_ca, broken, _) = next_certificate(&ca);
    publish(&gw.cluster, &new_ca, &broken.cert_pem, "garbage");
    // Kubelet projects it on its own schedule.
    let started = Instant::now();
    gw.wait_for_logs(PROJECTION, "a reload failure logged", |logs, events| {
        let failures = with_code(events, "tls_reload_failed").count();
        failures > failures_before && logs.contains("CONFIG:FAILED")
    });
    let took = seconds(started.elapsed());
    say(&format!(
        "the broken Secret was rejected {took} after the overwrite"
    ));
    let served = gw.served(&ca).unwrap();
    assert_eq!(served, before, "a broken Secret was served");
    gw.assert_not_restarted();

    // The next good write heals it.
    let healed = new_ca.server();
    let trust = format!("{}\n{ca}", new_ca.cert_pem());
    publish(&gw.cluster, &new_ca, &healed.cert_pem, &healed.key_pem);
    gw.wait_until_served(&trust, &healed.fingerprint, "the fixed certificate served");
    gw.assert_not_restarted();
    let logs = gw.wait_for_logs(LOGS, "CONFIG:RELOADED for the fixed certificate", |l, e| {
        logged_reload_to(l, e, &healed.fingerprint)
    });
    assert!(!logs.contains("garbage"), "key material in the logs");
    assert_ocsf_valid(&logs);
}
