//! The update patterns of Kubernetes Secret volumes and plain directories
//! (and their faults), each replayed against a live acceptor and observed
//! through real handshakes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rustls::ClientConfig;
use tls_reload::testing::{Leaf, TestCa, client_config, handshake};
use tls_reload::{Error, ReloadableAcceptor, Subscription, TlsFiles, Trigger, Watcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_served_pair_through_bad_kubelet_updates_and_serves_each_good_one() {
    let mut fx = Fixture::new();
    let (acceptor, _watcher) = fx.builder().start().unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let client = fx.client();
    let old = fx.leaf.fingerprint.clone();
    let (cert, key) = (fx.server.path("tls.crt"), fx.server.path("tls.key"));

    // Bad pairs first: garbage, then a certificate of another key.
    let garbage = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    fx.publish(garbage, &fx.leaf.key_pem);
    let failure = next_failed(&mut events).await;
    let error = &failure.error;
    assert!(matches!(error, Error::MalformedPem { .. }), "{error}");
    fx.publish(&fx.server_ca.server().cert_pem, &fx.leaf.key_pem);
    let failure = next_failed(&mut events).await;
    match &failure.error {
        Error::KeyMismatch {
            cert_path,
            key_path,
        } => assert_eq!((cert_path, key_path), (&cert, &key)),
        other => panic!("expected a key mismatch, got {other}"),
    }
    assert_eq!(served(addr, &client).await, old);
    assert_eq!(acceptor.status().generation, 1);

    // The user-visible file is a symlink that kubelet never rewrites.
    let link_before = fs::read_link(&cert).unwrap();
    let new = fx.rotate();
    assert_eq!(fs::read_link(&cert).unwrap(), link_before);
    let reloaded = next_reloaded(&mut events).await;
    assert_eq!(reloaded.trigger, Trigger::Watch);
    assert_eq!(reloaded.previous.fingerprint_sha256, old);
    assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
    assert_eq!(reloaded.generation, 2);
    assert!(!reloaded.trust_changed);
    assert_eq!(served(addr, &client).await, new.fingerprint);

    // A second rotation works too: the watch survived the first.
    let newer = fx.rotate();
    assert_eq!(next_reloaded(&mut events).await.generation, 3);
    assert_eq!(served(addr, &client).await, newer.fingerprint);
    assert_eq!(acceptor.status().reloads_succeeded, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_rotation_refuses_old_ca_clients_and_accepts_new_ones() {
    let fx = Fixture::new();
    let new_ca = TestCa::new("clients 2");
    let (acceptor, _watcher) = fx.mtls_builder().start().unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let old_client = client_config(fx.server_ca.cert_pem(), Some(&fx.client));
    let new_client = client_config(fx.server_ca.cert_pem(), Some(&new_ca.client("bob")));
    let anonymous = fx.client();
    let accepted = |config: &Arc<ClientConfig>| {
        let config = config.clone();
        async move { handshake(addr, config).await.is_ok() }
    };
    assert!(accepted(&old_client).await);
    assert!(!accepted(&new_client).await);
    assert!(!accepted(&anonymous).await, "client cert required");

    // A garbage bundle is refused and the old trust kept for real clients.
    fx.publish_client_ca("-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n");
    let failure = next_failed(&mut events).await;
    let bundle = fx.client_ca_volume.path("ca.crt");
    assert_eq!(failure.error.path(), Some(bundle.as_path()));
    assert!(accepted(&old_client).await, "old trust kept");
    assert!(!accepted(&new_client).await);

    fx.publish_client_ca(new_ca.cert_pem());
    let reloaded = next_reloaded(&mut events).await;
    assert!(reloaded.trust_changed);
    assert_eq!(reloaded.current, reloaded.previous, "server cert unchanged");
    assert_eq!(reloaded.client_ca.len(), 1);
    assert!(reloaded.client_ca[0].subject.contains("clients 2"));

    assert!(!accepted(&old_client).await, "removed CA");
    assert!(accepted(&new_client).await);
    assert!(!accepted(&anonymous).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_never_read_a_torn_pair_while_kubelet_swaps_the_volume() {
    // The files are read one after the other; a `..data` rename landing
    // between the two reads must not pair the old cert with the new key.
    let fx = Fixture::new();
    let acceptor = fx.builder().build().unwrap();
    let leaves: Vec<_> = (0..4).map(|_| fx.server_ca.server()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (fx, writer) = (Arc::new(fx), stop.clone());
    let volumes = fx.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0usize;
        while !writer.load(Ordering::Relaxed) && n < 3000 {
            volumes.publish_leaf(&leaves[n % leaves.len()]);
            n += 1;
        }
        n
    });
    let (mut ok, mut torn) = (0u32, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match acceptor.reload_now(Trigger::Manual).await {
            Ok(_) => ok += 1,
            Err(f) => torn.push(f.error.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rotations = writer.join().unwrap();
    let enough = rotations > 100 && ok > 100;
    assert!(enough, "{rotations} rotations, {ok} reloads");
    assert!(torn.is_empty(), "torn reads: {torn:?}");
}

/// Plain files in a plain directory, as on a VM or with `kubectl cp`,
/// served with a watcher whose poll (60 s) never runs during a test: only
/// events (and retries after a failure) bring changes in.
struct PlainDir {
    /// Holds the directory, and the CA that issues `old` and `new`.
    fx: Fixture,
    dir: PathBuf,
    old: Leaf,
    new: Leaf,
    acceptor: ReloadableAcceptor,
    _watcher: Watcher,
    events: Subscription,
    addr: SocketAddr,
}

impl PlainDir {
    /// Serves `old` from `tls.crt` and `tls.key`, laid out by `layout`.
    async fn serving(layout: fn(&Path, &Leaf)) -> Self {
        let fx = Fixture::new();
        let dir = fx.dir().join("tls");
        fs::create_dir(&dir).unwrap();
        let (old, new) = (fx.server_ca.server(), fx.server_ca.server());
        layout(&dir, &old);
        let files = TlsFiles::new(dir.join("tls.crt"), dir.join("tls.key"));
        let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(files)).start().unwrap();
        let events = acceptor.subscribe();
        let addr = listen(&acceptor).await;
        assert_eq!(served(addr, &fx.client()).await, old.fingerprint);
        Self {
            fx,
            dir,
            old,
            new,
            acceptor,
            _watcher,
            events,
            addr,
        }
    }

    async fn served(&self) -> String {
        served(self.addr, &self.fx.client()).await
    }

    async fn wait_served(&self, leaf: &Leaf) {
        wait_served(self.addr, &self.fx.client(), &leaf.fingerprint).await;
    }
}

/// The pair written in place.
fn plain(dir: &Path, leaf: &Leaf) {
    plain_as(dir, leaf, ["tls.key", "tls.crt"]);
}

/// The key and the certificate written in place under these names.
fn plain_as(dir: &Path, leaf: &Leaf, [key, cert]: [&str; 2]) {
    fs::write(dir.join(key), &leaf.key_pem).unwrap();
    fs::write(dir.join(cert), &leaf.cert_pem).unwrap();
}

/// `path` replaced through a temporary name and a rename, as most tools do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("incoming");
    fs::write(&tmp, contents).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_new_pair_however_a_plain_directory_is_updated() {
    /// How the files are laid out, and how the new pair is put in place.
    type Update = (&'static str, fn(&Path, &Leaf), fn(&Path, &Leaf));
    let updates: [Update; 4] = [
        // Truncate-and-write, as editors and `cp` do.
        ("in-place overwrite", plain, plain),
        // Staged elsewhere, hard-linked in under a temporary name, then
        // renamed over the served names: only CREATE and MOVED_TO.
        ("hard link then rename", plain, |dir, leaf| {
            let staging = tempfile::tempdir().unwrap();
            for (name, contents) in [("tls.key", &leaf.key_pem), ("tls.crt", &leaf.cert_pem)] {
                let (staged, link) = (staging.path().join(name), dir.join(".new"));
                fs::write(&staged, contents).unwrap();
                fs::hard_link(&staged, &link).unwrap();
                fs::rename(&link, dir.join(name)).unwrap();
            }
        }),
        // tls.crt -> cert-N.pem; the link is replaced in its own directory,
        // the common hand-made layout.
        ("symlink swapped", link_pair, link_pair),
        // tls.crt -> ../real/server.crt, replaced by a rename in `real`:
        // the directory of each hop of the link is watched.
        (
            "file behind a symlink into another directory",
            |dir, leaf| {
                let real = dir.with_file_name("real");
                fs::create_dir(&real).unwrap();
                for (name, target) in [("tls.key", "server.key"), ("tls.crt", "server.crt")] {
                    symlink(real.join(target), dir.join(name)).unwrap();
                }
                plain_as(&real, leaf, ["server.key", "server.crt"]);
            },
            |dir, leaf| {
                let real = dir.with_file_name("real");
                replace(&real.join("server.key"), &leaf.key_pem);
                replace(&real.join("server.crt"), &leaf.cert_pem);
            },
        ),
    ];
    for (name, layout, update) in updates {
        let d = PlainDir::serving(layout).await;
        update(&d.dir, &d.new);
        let waited = tokio::time::timeout(SOON, d.wait_served(&d.new)).await;
        waited.unwrap_or_else(|_| panic!("{name}: not served"));
        assert!(d.acceptor.status().generation >= 2, "{name}");
    }
}

/// `tls.crt` and `tls.key` as symlinks to a new pair of files beside them.
fn link_pair(dir: &Path, leaf: &Leaf) {
    for (name, contents) in [("tls.key", &leaf.key_pem), ("tls.crt", &leaf.cert_pem)] {
        let target = format!("{name}-{}", &leaf.fingerprint[..11]);
        fs::write(dir.join(&target), contents).unwrap();
        symlink(&target, dir.join(".link")).unwrap();
        fs::rename(dir.join(".link"), dir.join(name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_old_pair_while_only_the_cert_of_a_torn_pair_has_landed() {
    let mut d = PlainDir::serving(plain).await;
    // Handshake continuously: every one must succeed (a mismatched pair
    // fails the client's CertificateVerify check) and serve old or new.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (addr, client, stop) = (d.addr, d.fx.client(), stop.clone());
        let allowed = [d.old.fingerprint.clone(), d.new.fingerprint.clone()];
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let served = handshake(addr, client.clone()).await.unwrap();
                let fp = served.fingerprint;
                assert!(allowed.contains(&fp), "served {fp}");
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };

    replace(&d.dir.join("tls.crt"), &d.new.cert_pem);
    let failure = next_failed(&mut d.events).await;
    let error = &failure.error;
    assert!(matches!(error, Error::KeyMismatch { .. }), "{error}");
    assert_eq!(failure.served_generation, 1);

    // The key lands 2 s later. Retries happen meanwhile, but the same
    // failure is reported once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.served().await, d.old.fingerprint);
    assert!(d.acceptor.status().reloads_failed >= 2, "retried");
    replace(&d.dir.join("tls.key"), &d.new.key_pem);

    let reloaded = next_reloaded(&mut d.events).await;
    assert_eq!(reloaded.current.fingerprint_sha256, d.new.fingerprint);
    assert_eq!(d.served().await, d.new.fingerprint);
    stop.store(true, Ordering::Relaxed);
    assert!(prober.await.unwrap() > 10, "the prober ran throughout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_and_watches_again_after_the_files_or_their_directory_are_removed() {
    // What sees the changes can only be events: the deletion's, then
    // retries (which re-place the watch once the directory is back), then
    // events on the new directory.
    let remove_files: fn(&Path) = |dir| {
        fs::remove_file(dir.join("tls.crt")).unwrap();
        fs::remove_file(dir.join("tls.key")).unwrap();
    };
    let remove_dir: fn(&Path) = |dir| fs::remove_dir_all(dir).unwrap();
    for remove in [remove_files, remove_dir] {
        let mut d = PlainDir::serving(plain).await;
        remove(&d.dir);
        let failure = next_failed(&mut d.events).await;
        let error = &failure.error;
        assert!(matches!(error, Error::Read { .. }), "{error}");
        assert!(error.to_string().contains("tls.crt"), "{error}");
        assert_eq!(d.served().await, d.old.fingerprint, "old cert kept");
        fs::create_dir_all(&d.dir).unwrap();
        plain(&d.dir, &d.new);
        d.wait_served(&d.new).await;

        // Watched by events again: with no poll and no retry pending, only
        // an event can bring the next change in.
        d.events = d.acceptor.subscribe();
        let newer = d.fx.server_ca.server();
        replace(&d.dir.join("tls.key"), &newer.key_pem);
        replace(&d.dir.join("tls.crt"), &newer.cert_pem);
        let mismatch = |e: &Error| matches!(e, Error::KeyMismatch { .. });
        let reloaded = reloaded_to(&mut d.events, &newer.fingerprint, mismatch).await;
        assert_eq!(reloaded.trigger, Trigger::Watch);
    }
}
