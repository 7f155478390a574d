#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! The real `openshell-gateway` process serving two certificates by name
//! (`--tls-sni`) on loopback: the default identity from one kubelet-style
//! Secret volume, the external identity (`api.example.com`,
//! `*.apps.example.com`) from another, each written by `AtomicWriter` as
//! kubelet writes it. A real TLS client sends each kind of server name and
//! checks which leaf it is served; each identity is rotated and broken on
//! its own; the OCSF audit file names the identity of every event. The
//! flag, environment and TOML forms of the setting configure the same
//! gateway, and a certificate that does not cover its names is refused at
//! startup and on reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use openshell_e2e::ocsf::{self, event_code, tls_details, with_code};
use openshell_e2e::{GatewayCommand, GatewayProcess};
use serde_json::Value;
use tls_reload::testing::{
    AtomicWriter, Leaf, LeafOptions, SecretVolumes, eventually, served_for_name,
};

/// How long the gateway may take to start listening.
const STARTUP: Duration = Duration::from_secs(10);
/// How long a change may take to be served or reported: the debounce is
/// 100 ms; the rest is slack for a loaded two-core machine.
const RELOAD: Duration = Duration::from_secs(5);
/// One TLS handshake.
const EXCHANGE: Duration = Duration::from_secs(5);

/// The names of the external identity; its label is the first.
const NAMES: [&str; 2] = ["api.example.com", "*.apps.example.com"];

/// The default identity's volumes plus an external identity's volume, and
/// the leaf each serves.
struct Fixture {
    volumes: SecretVolumes,
    external: AtomicWriter,
    external_leaf: Leaf,
}

impl Fixture {
    fn new() -> Self {
        let volumes = SecretVolumes::new();
        let external = AtomicWriter::new(volumes.dir().join("external")).unwrap();
        let fixture = Self {
            external_leaf: external_leaf(&volumes, &NAMES),
            volumes,
            external,
        };
        fixture.publish_external(
            &fixture.external_leaf.cert_pem,
            &fixture.external_leaf.key_pem,
        );
        fixture
    }

    /// One kubelet update of the external volume.
    fn publish_external(&self, cert: &str, key: &str) {
        self.external
            .write(&[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())])
            .unwrap();
    }

    /// A new external leaf for `names`, published and remembered.
    fn rotate_external(&mut self, names: &[&str]) -> Leaf {
        self.external_leaf = external_leaf(&self.volumes, names);
        self.publish_external(&self.external_leaf.cert_pem, &self.external_leaf.key_pem);
        self.external_leaf.clone()
    }

    fn audit_log(&self) -> PathBuf {
        self.volumes.dir().join("audit.jsonl")
    }

    /// `NAMES=DIR` for the external identity.
    fn sni_arg(&self) -> String {
        format!("{}={}", NAMES.join(","), self.external.dir().display())
    }

    /// A gateway serving the default volume on an ephemeral loopback port,
    /// with a 100 ms debounce and the audit file, without the SNI setting.
    fn command(&self) -> GatewayCommand {
        GatewayCommand::new()
            .args(["--bind", "127.0.0.1:0", "--tls-reload-debounce", "100ms"])
            .arg("--tls-cert")
            .arg(self.volumes.server.path("tls.crt"))
            .arg("--tls-key")
            .arg(self.volumes.server.path("tls.key"))
            .ocsf_log(self.audit_log())
    }

    /// [`command`](Self::command) with `--tls-sni`.
    fn with_sni(&self) -> GatewayCommand {
        self.command().arg("--tls-sni").arg(self.sni_arg())
    }
}

/// A leaf of the fixture's server CA for `names`.
fn external_leaf(volumes: &SecretVolumes, names: &[&str]) -> Leaf {
    volumes
        .server_ca
        .issue(&LeafOptions::server().names(names.iter().copied()))
}

/// The fingerprint a handshake sending `name` (or no SNI) is served.
async fn served(addr: SocketAddr, name: Option<&str>) -> String {
    tokio::time::timeout(EXCHANGE, served_for_name(addr, name))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// Waits until a handshake sending `name` is served `fingerprint`.
async fn wait_served(addr: SocketAddr, name: Option<&str>, fingerprint: &str) {
    eventually(
        RELOAD,
        &format!("{fingerprint} served to {name:?}"),
        || async move {
            let got = served(addr, name).await;
            if got == fingerprint {
                Ok(())
            } else {
                Err(format!("served {got}"))
            }
        },
    )
    .await;
}

/// Checks the fingerprints served to an exact name, a one-label wildcard
/// match, a two-label name under the wildcard (the default), and a client
/// without SNI (the default).
async fn assert_served_by_kind(addr: SocketAddr, want: [&String; 4]) {
    let got = [
        served(addr, Some("api.example.com")).await,
        served(addr, Some("x.apps.example.com")).await,
        served(addr, Some("a.b.apps.example.com")).await,
        served(addr, None).await,
    ];
    assert_eq!(
        got.each_ref(),
        want,
        "exact, one-label wildcard, two labels, no SNI"
    );
}

/// Waits for the first OCSF event satisfying `pred`.
async fn wait_event(
    gateway: &mut GatewayProcess,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    gateway
        .wait_for_ocsf(RELOAD, what, |events| {
            events.iter().find(|e| pred(e)).cloned()
        })
        .await
        .unwrap()
}

/// Waits for the first OCSF event `code` of `identity` and checks the
/// fingerprint it says was served before.
async fn wait_identity_event(
    gateway: &mut GatewayProcess,
    code: &str,
    identity: &str,
    previous: &str,
) -> Value {
    let event = wait_event(gateway, &format!("{code} of {identity}"), |e| {
        event_code(e) == code && tls_details(e)["identity"] == identity
    })
    .await;
    assert_eq!(
        tls_details(&event)["previous_fingerprint"],
        previous,
        "{event}"
    );
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_gets_its_identity_and_each_identity_rotates_on_its_own() {
    let mut f = Fixture::new();
    let (mut gateway, addr) = f.with_sni().start(STARTUP).await.unwrap();
    let (default, external) = (
        f.volumes.leaf.fingerprint.clone(),
        f.external_leaf.fingerprint.clone(),
    );
    assert_served_by_kind(addr, [&external, &external, &default, &default]).await;

    // Rotating the external identity changes only what its names get.
    let renewed = f.rotate_external(&NAMES).fingerprint;
    wait_served(addr, Some("api.example.com"), &renewed).await;
    assert_served_by_kind(addr, [&renewed, &renewed, &default, &default]).await;
    let reloaded = wait_identity_event(&mut gateway, "tls_reloaded", NAMES[0], &external).await;
    assert_eq!(tls_details(&reloaded)["new_fingerprint"], renewed.as_str());
    assert_eq!(
        tls_details(&reloaded)["cert_path"],
        f.external.path("tls.crt").to_str().unwrap()
    );

    // A garbage key in the external identity keeps its last good pair,
    // while a rotation of the default identity is served.
    let broken = external_leaf(&f.volumes, &NAMES);
    f.publish_external(&broken.cert_pem, "garbage");
    let failed = wait_identity_event(&mut gateway, "tls_reload_failed", NAMES[0], &renewed).await;
    assert!(
        failed["status_detail"]
            .as_str()
            .is_some_and(|d| d.contains("tls.key")),
        "{failed}"
    );
    // The shorthand in the log names it too.
    gateway
        .wait_for_stderr(RELOAD, "CONFIG:FAILED of the identity in the log", |l| {
            l.contains("CONFIG:FAILED") && l.contains("identity:api.example.com")
        })
        .await
        .unwrap();
    let rotated = f.volumes.rotate().fingerprint;
    wait_served(addr, None, &rotated).await;
    assert_served_by_kind(addr, [&renewed, &renewed, &rotated, &rotated]).await;
    let reloaded = wait_identity_event(&mut gateway, "tls_reloaded", "default", &default).await;
    assert_eq!(tls_details(&reloaded)["new_fingerprint"], rotated.as_str());

    // Every line names its identity, and the log validates.
    let events = gateway.ocsf_events().unwrap();
    let loaded: Vec<&Value> = with_code(&events, "tls_loaded")
        .map(|e| &tls_details(e)["identity"])
        .collect();
    assert_eq!(loaded, ["default", "api.example.com"]);
    for event in &events {
        if event_code(event) != "tls_watcher_degraded" {
            assert!(tls_details(event)["identity"].is_string(), "{event}");
        }
    }
    ocsf::check(&events).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_variable_and_the_toml_file_configure_the_same_identities() {
    let f = Fixture::new();
    let second = AtomicWriter::new(f.volumes.dir().join("second")).unwrap();
    let second_leaf = external_leaf(&f.volumes, &["b.example.com"]);
    second
        .write(&[
            ("tls.crt", second_leaf.cert_pem.as_bytes()),
            ("tls.key", second_leaf.key_pem.as_bytes()),
        ])
        .unwrap();
    let (default, external) = (&f.volumes.leaf.fingerprint, &f.external_leaf.fingerprint);

    // A table with `dir`, and one with `cert` + `key`.
    let toml = f.volumes.dir().join("gateway.toml");
    let quoted = |p: &Path| format!("{:?}", p.to_str().unwrap());
    std::fs::write(
        &toml,
        format!(
            "[[tls_sni]]\nnames = [\"api.example.com\", \"*.apps.example.com\"]\ndir = {}\n\
             [[tls_sni]]\nnames = [\"b.example.com\"]\ncert = {}\nkey = {}\n",
            quoted(f.external.dir()),
            quoted(&second.path("tls.crt")),
            quoted(&second.path("tls.key")),
        ),
    )
    .unwrap();
    // `;` separates identities in OPENSHELL_TLS_SNI.
    let env = format!("{};b.example.com={}", f.sni_arg(), second.dir().display());
    for (form, command) in [
        ("variable", f.command().env("OPENSHELL_TLS_SNI", env)),
        ("file", f.command().arg("--config").arg(&toml)),
    ] {
        let (gateway, addr) = command.start(STARTUP).await.unwrap();
        assert_served_by_kind(addr, [external, external, default, default]).await;
        assert_eq!(
            served(addr, Some("b.example.com")).await,
            second_leaf.fingerprint,
            "{form}"
        );
        drop(gateway);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_cover_its_names_is_refused_at_startup_and_on_reload() {
    let mut f = Fixture::new();

    // Startup: the external certificate lacks the wildcard.
    f.rotate_external(&["api.example.com"]);
    let mut gateway = f.with_sni().spawn().unwrap();
    let status = gateway
        .exit_within(STARTUP)
        .await
        .unwrap()
        .expect("the gateway exits");
    assert!(!status.success(), "{status}");
    let crt = f.external.path("tls.crt").display().to_string();
    let errors: Vec<String> = gateway
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("openshell-gateway:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", gateway.output());
    for part in [
        "identity api.example.com",
        "*.apps.example.com",
        crt.as_str(),
    ] {
        assert!(errors[0].contains(part), "no {part:?} in {}", errors[0]);
    }

    // Reload: a renewal that drops the wildcard is refused; the last good
    // pair stays served to both names.
    let good = f.rotate_external(&NAMES).fingerprint;
    let (mut gateway, addr) = f.with_sni().start(STARTUP).await.unwrap();
    assert_eq!(served(addr, Some("x.apps.example.com")).await, good);
    let narrow = f.rotate_external(&["api.example.com"]);
    let failed = wait_identity_event(&mut gateway, "tls_reload_failed", NAMES[0], &good).await;
    let detail = failed["status_detail"].as_str().unwrap();
    assert!(
        detail.contains("does not cover") && detail.contains("*.apps.example.com"),
        "{detail}"
    );
    for name in ["api.example.com", "x.apps.example.com"] {
        assert_eq!(served(addr, Some(name)).await, good, "{name}");
    }
    assert_ne!(narrow.fingerprint, good);
    ocsf::check(&gateway.ocsf_events().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_renewal_is_one_audit_event_naming_the_identity() {
    let f = Fixture::new();
    // 80 of 90 days used: past the renewal time (two thirds plus a tenth).
    let now = SystemTime::now();
    let old = f
        .volumes
        .server_ca
        .issue(&LeafOptions::server().names(NAMES).valid(
            now - Duration::from_secs(80 * 86_400),
            now + Duration::from_secs(10 * 86_400),
        ));
    f.publish_external(&old.cert_pem, &old.key_pem);
    let (mut gateway, _addr) = f.with_sni().start(STARTUP).await.unwrap();
    // The check runs after each reload attempt; SIGHUP makes one.
    gateway.signal("HUP").unwrap();
    let overdue = wait_event(&mut gateway, "the overdue event", |e| {
        event_code(e) == "tls_renewal_overdue"
    })
    .await;
    assert_eq!(overdue["message"], "TLS certificate renewal overdue");
    let tls = tls_details(&overdue);
    assert_eq!(tls["identity"], "api.example.com");
    assert_eq!(tls["new_fingerprint"], old.fingerprint.as_str());
    assert!(tls["not_after"].is_string() && tls["renewal_due"].is_string());
    gateway.signal("HUP").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = gateway.ocsf_events().unwrap();
    assert_eq!(with_code(&events, "tls_renewal_overdue").count(), 1);
    ocsf::check(&events).unwrap();
}
