//! Several certificates on one port, selected by SNI and each rotated on
//! its own, seen through real handshakes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Fixture, FixtureExt, SOON, listen, next_event, next_failed, next_reloaded, no_event};
use tls_reload::testing::{AtomicWriter, Leaf, LeafOptions, eventually, served_for_name};
use tls_reload::{
    Builder, Error, ReloadEvent, ReloadableAcceptor, RenewalOverdue, SettingsError, SniIdentity,
    TlsFiles, Trigger,
};

const API: &str = "api.example.com";
const APPS: &str = "*.apps.example.com";

/// The default identity (the server volume of [`Fixture`]) plus two SNI
/// identities in volumes of their own: `api` for `api.example.com`, `apps`
/// for `*.apps.example.com`.
struct Sni {
    volumes: Fixture,
    api: AtomicWriter,
    apps: AtomicWriter,
    api_leaf: Leaf,
    apps_leaf: Leaf,
}

impl Sni {
    fn new() -> Self {
        let volumes = Fixture::new();
        let api = AtomicWriter::new(volumes.dir().join("api")).unwrap();
        let apps = AtomicWriter::new(volumes.dir().join("apps")).unwrap();
        let sni = Self {
            api_leaf: issue(&volumes, &[API]),
            apps_leaf: issue(&volumes, &[APPS]),
            volumes,
            api,
            apps,
        };
        publish(&sni.api, &sni.api_leaf);
        publish(&sni.apps, &sni.apps_leaf);
        sni
    }

    /// The default identity with both SNI identities, fast timings.
    fn builder(&self) -> Builder {
        self.volumes
            .builder()
            .sni(SniIdentity::new([API], files(&self.api)))
            .sni(SniIdentity::new([APPS], files(&self.apps)))
    }
}

/// A server leaf of the fixture's CA for `names`.
fn issue(volumes: &Fixture, names: &[&str]) -> Leaf {
    let options = LeafOptions::server().names(names.iter().copied());
    volumes.server_ca.issue(&options)
}

fn files(volume: &AtomicWriter) -> TlsFiles {
    TlsFiles::new(volume.path("tls.crt"), volume.path("tls.key"))
}

/// One kubelet update of `volume` with `leaf`.
fn publish(volume: &AtomicWriter, leaf: &Leaf) {
    write(volume, &leaf.cert_pem, &leaf.key_pem);
}

fn write(volume: &AtomicWriter, cert: &str, key: &str) {
    let files = [("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())];
    volume.write(&files).unwrap();
}

async fn served(addr: SocketAddr, name: Option<&str>) -> String {
    served_for_name(addr, name).await.unwrap()
}

/// Waits until a client asking for `name` is served `fingerprint`.
async fn wait_served_for(addr: SocketAddr, name: &str, fingerprint: &str) {
    let what = format!("{name} served {fingerprint}");
    eventually(SOON, &what, || async move {
        let got = served(addr, Some(name)).await;
        if got == fingerprint { Ok(()) } else { Err(got) }
    })
    .await;
}

#[tokio::test]
async fn each_name_gets_its_identity_and_any_other_name_or_none_the_default() {
    let sni = Sni::new();
    let acceptor = sni.builder().build().unwrap();
    let addr = listen(&acceptor).await;
    let (default, api, apps) = (
        &sni.volumes.leaf.fingerprint,
        &sni.api_leaf.fingerprint,
        &sni.apps_leaf.fingerprint,
    );
    for (name, want) in [
        (Some("api.example.com"), api),
        (Some("API.Example.COM"), api),
        (Some("x.apps.example.com"), apps),
        (Some("X.APPS.EXAMPLE.COM"), apps),
        // A wildcard covers one label only, and not its parent domain.
        (Some("x.y.apps.example.com"), default),
        (Some("apps.example.com"), default),
        (Some("example.com"), default),
        (Some("localhost"), default),
        (None, default),
    ] {
        assert_eq!(&served(addr, name).await, want, "{name:?}");
    }
    // A client that checks the name accepts what it is served.
    let client = sni.volumes.client();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(API).unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    connector.connect(name, tcp).await.unwrap();
}

#[tokio::test]
async fn rotating_one_identity_changes_only_what_its_names_get() {
    let sni = Sni::new();
    let (acceptor, _watcher) = sni.builder().start().unwrap();
    let addr = listen(&acceptor).await;
    let mut events = acceptor.subscribe();
    let before = acceptor.server_config();

    let renewed = issue(&sni.volumes, &[APPS]);
    publish(&sni.apps, &renewed);
    // The one watcher sees the identity's own directory.
    let reloaded = next_reloaded(&mut events).await;
    assert_eq!(reloaded.identity, APPS);
    let swap = (&reloaded.previous, &reloaded.current);
    assert_eq!(swap.0.fingerprint_sha256, sni.apps_leaf.fingerprint);
    assert_eq!(swap.1.fingerprint_sha256, renewed.fingerprint);
    assert!(!reloaded.trust_changed);
    wait_served_for(addr, "x.apps.example.com", &renewed.fingerprint).await;

    assert_eq!(served(addr, Some(API)).await, sni.api_leaf.fingerprint);
    assert_eq!(served(addr, None).await, sni.volumes.leaf.fingerprint);
    // Sessions made before resume after: same cache and ticket keys.
    let after = acceptor.server_config();
    assert!(Arc::ptr_eq(&before.session_storage, &after.session_storage));
    assert!(Arc::ptr_eq(&before.ticketer, &after.ticketer));
    let status = acceptor.status();
    assert_eq!(status.generation, 2);
    assert_eq!(status.cert.fingerprint_sha256, sni.volumes.leaf.fingerprint);
    let [default, api, apps] = &status.identities[..] else {
        panic!("{:?}", status.identities)
    };
    let labels = [&default.label, &api.label, &apps.label];
    assert_eq!(labels, ["default", API, APPS]);
    assert!(default.names.is_empty());
    assert_eq!(api.names, [API]);
    assert!(default.last_attempt.is_none() && api.last_attempt.is_none());
    let apps_attempt = apps.last_attempt.as_ref().unwrap();
    assert_eq!(apps_attempt.trigger, Trigger::Watch);
    assert_eq!(apps_attempt.error, None);
    assert_eq!(apps.cert.fingerprint_sha256, renewed.fingerprint);
}

#[tokio::test]
async fn a_broken_or_uncovering_identity_keeps_its_last_good_pair_and_holds_up_no_other() {
    let mut sni = Sni::new();
    let acceptor = sni.builder().build().unwrap();
    let addr = listen(&acceptor).await;
    let mut events = acceptor.subscribe();

    write(&sni.api, &sni.api_leaf.cert_pem, "garbage");
    let renewed = sni.volumes.rotate();
    let failure = acceptor.reload_now(Trigger::Api).await.unwrap_err();
    assert_eq!(failure.identity, API);
    let key = sni.api.path("tls.key");
    assert_eq!(failure.error.path(), Some(key.as_path()));
    assert_eq!(failure.served_generation, 2);
    let text = failure.to_string();
    assert!(text.contains("of identity api.example.com"), "{text}");

    // The default identity's rotation is served, and reported; so is the
    // failure, under the identity that failed.
    let reloaded = next_reloaded(&mut events).await;
    assert_eq!((&*reloaded.identity, reloaded.generation), ("default", 2));
    assert_eq!(reloaded.current.fingerprint_sha256, renewed.fingerprint);
    assert!(Arc::ptr_eq(&next_failed(&mut events).await, &failure));
    assert_eq!(served(addr, None).await, renewed.fingerprint);
    assert_eq!(served(addr, Some(API)).await, sni.api_leaf.fingerprint);

    // A retry that fails the same way is not reported again; the status
    // tells which identity is failing.
    assert!(acceptor.reload_now(Trigger::Poll).await.is_err());
    let status = acceptor.status();
    let errors: Vec<_> = (status.identities.iter())
        .map(|i| i.last_attempt.as_ref().map(|a| a.error.clone()))
        .collect();
    let api_failing =
        matches!(&errors[..], [Some(None), Some(Some(e)), _] if e.contains("tls.key"));
    assert!(api_failing, "{errors:?}");
    assert_eq!(status.reloads_failed, 2);

    // A pair that no longer covers the identity's name is refused too.
    publish(&sni.api, &issue(&sni.volumes, &["web.example.com"]));
    let failure = acceptor.reload_now(Trigger::Api).await.unwrap_err();
    let Error::NameNotCovered {
        identity,
        name,
        path,
        dns_names,
    } = &failure.error
    else {
        panic!("{failure}")
    };
    assert_eq!(
        (&identity[..], &name[..], path),
        (API, API, &sni.api.path("tls.crt"))
    );
    assert_eq!(dns_names, &["web.example.com"]);
    assert!(Arc::ptr_eq(&next_failed(&mut events).await, &failure));
    assert_eq!(served(addr, Some(API)).await, sni.api_leaf.fingerprint);
    assert_eq!(acceptor.status().generation, 2);

    // Repaired, it is served again.
    let repaired = issue(&sni.volumes, &[API]);
    publish(&sni.api, &repaired);
    acceptor.reload_now(Trigger::Api).await.unwrap();
    assert_eq!(next_reloaded(&mut events).await.identity, API);
    assert_eq!(served(addr, Some(API)).await, repaired.fingerprint);
    no_event(&mut events, Duration::from_millis(100)).await;
}

#[test]
fn a_certificate_that_does_not_cover_its_names_fails_the_start() {
    let volumes = Fixture::new();
    let dir = AtomicWriter::new(volumes.dir().join("id")).unwrap();
    // (SAN DNS names of the leaf, configured names, the name not covered)
    #[rustfmt::skip] // A table: one case a row.
    let cases: [(&[&str], &[&str], Option<&str>); 7] = [
        (&["*.example.com"], &["a.example.com"], None),
        (&["*.example.com"], &["*.example.com"], None),
        (&["a.example.com", "b.example.com"], &["B.example.com", "a.example.com"], None),
        (&["*.example.com"], &["a.b.example.com"], Some("a.b.example.com")),
        (&["*.example.com"], &["example.com"], Some("example.com")),
        (&["a.example.com"], &["*.example.com"], Some("*.example.com")),
        (&["a.example.com"], &["a.example.com", "c.example.com"], Some("c.example.com")),
    ];
    for (sans, names, missing) in cases {
        publish(&dir, &issue(&volumes, sans));
        let built = ReloadableAcceptor::builder(volumes.files())
            .sni(SniIdentity::new(names.iter().copied(), files(&dir)))
            .build();
        match (built, missing) {
            (Ok(_), None) => {}
            (Err(e @ Error::NameNotCovered { .. }), Some(missing)) => {
                let (text, file) = (e.to_string(), dir.path("tls.crt").display().to_string());
                for part in [names[0], missing, file.as_str()] {
                    assert!(text.contains(part), "{text} lacks {part}");
                }
            }
            (built, _) => panic!("{sans:?} for {names:?}: {:?}", built.err()),
        }
    }
}

#[test]
fn bad_names_are_refused_at_configuration_naming_identity_and_name() {
    let volumes = Fixture::new();
    let f = || volumes.files();
    let mtls = || volumes.mtls_files(tls_reload::ClientAuth::Required);
    let invalid = |identity: &str, name: &str| SettingsError::InvalidServerName {
        identity: identity.into(),
        name: name.into(),
        reason: "a wildcard is only allowed as the whole leftmost label",
    };
    let (a, b) = ("a.example.com", "A.Example.com");
    #[rustfmt::skip] // A table: one case a row.
    let cases = [
        (SniIdentity::new([a, "b.*.example.com"], f()), invalid(a, "b.*.example.com")),
        (SniIdentity::new(["x*.example.com"], f()), invalid("x*.example.com", "x*.example.com")),
        (SniIdentity::new([a, b], f()),
            SettingsError::DuplicateServerName { name: b.into(), first: a.into(), second: a.into() }),
        (SniIdentity::new(Vec::<&str>::new(), f()), SettingsError::NoServerNames),
        (SniIdentity::new([a], mtls()), SettingsError::SniClientTrust { identity: a.into() }),
    ];
    for (identity, want) in cases {
        let builder = ReloadableAcceptor::builder(f());
        match builder.sni(identity.clone()).build().unwrap_err() {
            Error::Settings(got) => assert_eq!(got, want, "{identity:?}"),
            other => panic!("{identity:?}: {other}"),
        }
    }
}

/// A leaf whose renewal is overdue now: valid from 100 s ago for 120 s,
/// so overdue since 8 s ago (and expiring in 20 s).
fn overdue_leaf(volumes: &Fixture, names: &[&str]) -> Leaf {
    let now = SystemTime::now();
    let options = LeafOptions::server().names(names.iter().copied()).valid(
        now - Duration::from_secs(100),
        now + Duration::from_secs(20),
    );
    volumes.server_ca.issue(&options)
}

/// Whether each identity's renewal is overdue, as the status says.
fn overdue(acceptor: &ReloadableAcceptor) -> Vec<bool> {
    let identities = acceptor.status().identities;
    identities.iter().map(|i| i.renewal_overdue).collect()
}

/// The next overdue report, past any other event.
async fn next_overdue(events: &mut tls_reload::Subscription) -> Arc<RenewalOverdue> {
    loop {
        if let ReloadEvent::RenewalOverdue(o) = next_event(events).await {
            return o;
        }
    }
}

#[tokio::test]
async fn an_overdue_renewal_is_reported_once_per_certificate() {
    let sni = Sni::new();
    let late = overdue_leaf(&sni.volumes, &[API]);
    publish(&sni.api, &late);
    let poll = Duration::from_millis(20);
    let api = SniIdentity::new([API], files(&sni.api));
    let builder = sni.volumes.builder().sni(api).poll_interval(poll);
    let (acceptor, _watcher) = builder.start().unwrap();
    let mut events = acceptor.subscribe();

    // The watcher's poll finds it.
    let report = next_overdue(&mut events).await;
    assert_eq!(report.identity, API);
    assert_eq!(report.cert.fingerprint_sha256, late.fingerprint);
    assert_eq!(report.due, report.cert.renewal_due());
    assert!(report.due <= report.at);
    assert_eq!(overdue(&acceptor), [false, true]);

    // Not again, however many polls and reloads look.
    for _ in 0..3 {
        acceptor.reload_now(Trigger::Poll).await.unwrap();
    }
    no_event(&mut events, poll * 10).await;

    // A renewal clears it; a new overdue certificate, of the default
    // identity this time, is reported in its turn.
    let renewed = issue(&sni.volumes, &[API]);
    publish(&sni.api, &renewed);
    let late_default = overdue_leaf(&sni.volumes, &["localhost"]);
    sni.volumes.publish_leaf(&late_default);
    let report = next_overdue(&mut events).await;
    assert_eq!(report.identity, "default");
    assert_eq!(report.cert.fingerprint_sha256, late_default.fingerprint);
    eventually(SOON, "the renewed identity no longer overdue", || async {
        let seen = overdue(&acceptor);
        let done = seen == [true, false];
        done.then_some(()).ok_or(format!("{seen:?}"))
    })
    .await;
    no_event(&mut events, poll * 10).await;
}
