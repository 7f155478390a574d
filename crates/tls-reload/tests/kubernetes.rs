//! The update patterns of Kubernetes Secret volumes (and their faults), each replayed against a live acceptor
//! and observed through real handshakes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::*;
use tls_reload::testing::{TestCa, client_config, handshake};
use tls_reload::{ClientAuth, Error, ReloadEvent, ReloadableAcceptor, TlsFiles, Trigger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_new_cert_after_kubelet_atomic_update() {
    let mut fx = Fixture::new();
    let (acceptor, _watcher) = fx.builder().start().unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let client = fx.client();
    let old = fx.leaf.fingerprint.clone();
    assert_eq!(served(addr, &client).await, old);

    // The user-visible file is a symlink that kubelet never rewrites.
    let link_before = fs::read_link(fx.server.path("tls.crt")).unwrap();
    let new = fx.rotate();
    assert_eq!(
        fs::read_link(fx.server.path("tls.crt")).unwrap(),
        link_before
    );

    let reloaded = expect_reloaded(next_event(&mut events).await);
    assert_eq!(reloaded.trigger, Trigger::Watch);
    assert_eq!(reloaded.previous.fingerprint_sha256, old);
    assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
    assert_eq!(reloaded.generation, 2);
    assert!(!reloaded.trust_changed);
    assert_eq!(served(addr, &client).await, new.fingerprint);

    // A second rotation works too: the watch survived the first.
    let newer = fx.rotate();
    assert_eq!(expect_reloaded(next_event(&mut events).await).generation, 3);
    assert_eq!(served(addr, &client).await, newer.fingerprint);
    assert_eq!(acceptor.status().reloads_succeeded, 2);
}

/// Plain files in a plain directory, as on a VM or with `kubectl cp`.
struct PlainDir {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl PlainDir {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        fs::create_dir(&dir).unwrap();
        Self { _tmp: tmp, dir }
    }
    fn cert(&self) -> std::path::PathBuf {
        self.dir.join("tls.crt")
    }
    fn key(&self) -> std::path::PathBuf {
        self.dir.join("tls.key")
    }
    fn files(&self) -> TlsFiles {
        TlsFiles::new(self.cert(), self.key())
    }
    /// Writes `contents` to `path` through a temporary file and a rename.
    fn replace(&self, path: &Path, contents: &str) {
        let tmp = self.dir.join(".incoming");
        fs::write(&tmp, contents).unwrap();
        fs::rename(&tmp, path).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_new_cert_after_in_place_overwrite() {
    let ca = TestCa::new("ca");
    let (old, new) = (ca.server(), ca.server());
    let d = PlainDir::new();
    fs::write(d.cert(), &old.cert_pem).unwrap();
    fs::write(d.key(), &old.key_pem).unwrap();
    let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(d.files()))
        .start()
        .unwrap();
    let addr = listen(&acceptor).await;
    let client = client_config(ca.cert_pem(), None);
    assert_eq!(served(addr, &client).await, old.fingerprint);

    // Truncate-and-write, as editors and `cp` do.
    fs::write(d.key(), &new.key_pem).unwrap();
    fs::write(d.cert(), &new.cert_pem).unwrap();
    wait_served(addr, &client, &new.fingerprint).await;
    assert!(acceptor.status().generation >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_old_pair_while_only_the_cert_of_a_torn_pair_has_landed() {
    let ca = TestCa::new("ca");
    let (old, new) = (ca.server(), ca.server());
    let d = PlainDir::new();
    fs::write(d.cert(), &old.cert_pem).unwrap();
    fs::write(d.key(), &old.key_pem).unwrap();
    let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(d.files()))
        .start()
        .unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let client = client_config(ca.cert_pem(), None);

    // Handshake continuously: every one must succeed (a mismatched pair
    // fails the client's CertificateVerify check) and serve old or new.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (client, stop) = (client.clone(), stop.clone());
        let allowed = [old.fingerprint.clone(), new.fingerprint.clone()];
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let hs = handshake(addr, client.clone())
                    .await
                    .expect("handshake failed");
                assert!(
                    allowed.contains(&hs.fingerprint),
                    "served {}",
                    hs.fingerprint
                );
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };

    d.replace(&d.cert(), &new.cert_pem);
    let failure = expect_failed(next_event(&mut events).await);
    assert!(
        matches!(failure.error, Error::KeyMismatch { .. }),
        "{}",
        failure.error
    );
    assert_eq!(failure.served_generation, 1);

    // The key lands 2 s later. Retries happen meanwhile, but the same
    // failure is reported once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(served(addr, &client).await, old.fingerprint);
    assert!(
        acceptor.status().reloads_failed >= 2,
        "retried with backoff"
    );
    d.replace(&d.key(), &new.key_pem);

    let reloaded = expect_reloaded(next_event(&mut events).await);
    assert_eq!(reloaded.current.fingerprint_sha256, new.fingerprint);
    assert_eq!(served(addr, &client).await, new.fingerprint);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(prober.await.unwrap() > 10, "the prober ran throughout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_files_are_deleted_then_recreated() {
    let ca = TestCa::new("ca");
    let (old, new) = (ca.server(), ca.server());
    let d = PlainDir::new();
    fs::write(d.cert(), &old.cert_pem).unwrap();
    fs::write(d.key(), &old.key_pem).unwrap();
    let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(d.files()))
        .start()
        .unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let client = client_config(ca.cert_pem(), None);

    fs::remove_file(d.cert()).unwrap();
    fs::remove_file(d.key()).unwrap();
    let failure = expect_failed(next_event(&mut events).await);
    assert!(
        matches!(failure.error, Error::Read { .. }),
        "{}",
        failure.error
    );
    assert!(
        failure.error.to_string().contains("tls.crt"),
        "{}",
        failure.error
    );
    assert_eq!(served(addr, &client).await, old.fingerprint);

    fs::write(d.key(), &new.key_pem).unwrap();
    fs::write(d.cert(), &new.cert_pem).unwrap();
    wait_served(addr, &client, &new.fingerprint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewatches_a_directory_that_was_removed_and_recreated() {
    let ca = TestCa::new("ca");
    let (old, new, newer) = (ca.server(), ca.server(), ca.server());
    let d = PlainDir::new();
    fs::write(d.cert(), &old.cert_pem).unwrap();
    fs::write(d.key(), &old.key_pem).unwrap();
    // The poll (60 s) never runs during the test, so what sees the changes
    // can only be events: the deletion's, then retries (which re-place the
    // watch once the directory is back), then events on the new directory.
    // A 1 s poll made the last step a race between the poll and the event.
    let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(d.files()))
        .start()
        .unwrap();
    let addr = listen(&acceptor).await;
    let client = client_config(ca.cert_pem(), None);

    fs::remove_dir_all(&d.dir).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served(addr, &client).await,
        old.fingerprint,
        "old cert kept"
    );
    fs::create_dir(&d.dir).unwrap();
    fs::write(d.key(), &new.key_pem).unwrap();
    fs::write(d.cert(), &new.cert_pem).unwrap();
    wait_served(addr, &client, &new.fingerprint).await;

    // The new directory is watched by events again: with no poll and no
    // retry pending, only an event can bring the next change in.
    let mut events = acceptor.subscribe();
    d.replace(&d.key(), &newer.key_pem);
    d.replace(&d.cert(), &newer.cert_pem);
    let reloaded = loop {
        match next_event(&mut events).await {
            ReloadEvent::Reloaded(r) if r.current.fingerprint_sha256 == newer.fingerprint => {
                break r;
            }
            ReloadEvent::Reloaded(_) => {}
            // The key can land a debounce before the certificate on a
            // loaded machine: a mismatch, retried.
            ReloadEvent::Failed(f) => {
                assert!(matches!(f.error, Error::KeyMismatch { .. }), "{}", f.error)
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reloaded.trigger, Trigger::Watch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_old_cert_when_kubelet_publishes_garbage_pem() {
    let mut fx = Fixture::new();
    let (acceptor, _watcher) = fx.builder().start().unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let client = fx.client();
    let old = fx.leaf.fingerprint.clone();

    fx.server
        .write(&[
            (
                "tls.crt",
                b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
            ),
            ("tls.key", fx.leaf.key_pem.as_bytes()),
        ])
        .unwrap();
    let failure = expect_failed(next_event(&mut events).await);
    assert!(
        matches!(failure.error, Error::MalformedPem { .. }),
        "{}",
        failure.error
    );
    assert_eq!(served(addr, &client).await, old);
    assert_eq!(acceptor.status().generation, 1);

    let new = fx.rotate();
    expect_reloaded(next_event(&mut events).await);
    assert_eq!(served(addr, &client).await, new.fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_serves_a_mismatched_pair() {
    let fx = Fixture::new();
    let (acceptor, _watcher) = fx.builder().start().unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let client = fx.client();

    let other = fx.server_ca.server();
    fx.server
        .write(&[
            ("tls.crt", other.cert_pem.as_bytes()),
            ("tls.key", fx.leaf.key_pem.as_bytes()),
        ])
        .unwrap();
    let failure = expect_failed(next_event(&mut events).await);
    match &failure.error {
        Error::KeyMismatch {
            cert_path,
            key_path,
        } => {
            assert_eq!(cert_path, &fx.server.path("tls.crt"));
            assert_eq!(key_path, &fx.server.path("tls.key"));
        }
        other => panic!("expected a key mismatch, got {other}"),
    }
    assert_eq!(served(addr, &client).await, fx.leaf.fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_rotation_refuses_old_ca_clients_and_accepts_new_ones() {
    let fx = Fixture::new();
    let (old_ca, new_ca) = (TestCa::new("clients 1"), TestCa::new("clients 2"));
    fx.publish_client_ca(old_ca.cert_pem());
    let files = fx.mtls_files(ClientAuth::Required);
    let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(files)).start().unwrap();
    let mut events = acceptor.subscribe();
    let addr = listen(&acceptor).await;
    let old_client = client_config(fx.server_ca.cert_pem(), Some(&old_ca.client("alice")));
    let new_client = client_config(fx.server_ca.cert_pem(), Some(&new_ca.client("bob")));
    let anonymous = fx.client();

    assert!(handshake(addr, old_client.clone()).await.is_ok());
    assert!(handshake(addr, new_client.clone()).await.is_err());
    assert!(
        handshake(addr, anonymous.clone()).await.is_err(),
        "client cert required"
    );

    fx.publish_client_ca(new_ca.cert_pem());
    let reloaded = expect_reloaded(next_event(&mut events).await);
    assert!(reloaded.trust_changed);
    assert_eq!(reloaded.current, reloaded.previous, "server cert unchanged");
    assert_eq!(reloaded.client_ca.len(), 1);
    assert!(reloaded.client_ca[0].subject.contains("clients 2"));

    let refused = handshake(addr, old_client).await;
    assert!(refused.is_err(), "client of the removed CA must be refused");
    let accepted = handshake(addr, new_client).await.unwrap();
    assert_eq!(accepted.fingerprint, fx.leaf.fingerprint);
    assert!(handshake(addr, anonymous).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_new_cert_after_hard_link_then_rename() {
    let ca = TestCa::new("ca");
    let (old, new) = (ca.server(), ca.server());
    let d = PlainDir::new();
    fs::write(d.cert(), &old.cert_pem).unwrap();
    fs::write(d.key(), &old.key_pem).unwrap();
    let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(d.files()))
        .start()
        .unwrap();
    let addr = listen(&acceptor).await;
    let client = client_config(ca.cert_pem(), None);

    // Staged elsewhere, hard-linked in under a temporary name, then renamed
    // over the served names: the directory sees CREATE and MOVED_TO only.
    let staging = tempfile::tempdir().unwrap();
    for (name, contents, target) in [
        ("key", &new.key_pem, d.key()),
        ("crt", &new.cert_pem, d.cert()),
    ] {
        let staged = staging.path().join(name);
        fs::write(&staged, contents).unwrap();
        let link = d.dir.join(format!(".{name}.new"));
        fs::hard_link(&staged, &link).unwrap();
        fs::rename(&link, &target).unwrap();
    }
    wait_served(addr, &client, &new.fingerprint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_symlinked_file_replaced_in_its_directory() {
    // tls.crt -> real/cert.pem; the link target is replaced through the
    // link's own directory, the common hand-made layout.
    let ca = TestCa::new("ca");
    let (old, new) = (ca.server(), ca.server());
    let d = PlainDir::new();
    fs::write(d.dir.join("cert-1.pem"), &old.cert_pem).unwrap();
    fs::write(d.dir.join("key-1.pem"), &old.key_pem).unwrap();
    symlink("cert-1.pem", d.cert()).unwrap();
    symlink("key-1.pem", d.key()).unwrap();
    let (acceptor, _watcher) = fast(ReloadableAcceptor::builder(d.files()))
        .start()
        .unwrap();
    let addr = listen(&acceptor).await;
    let client = client_config(ca.cert_pem(), None);

    fs::write(d.dir.join("cert-2.pem"), &new.cert_pem).unwrap();
    fs::write(d.dir.join("key-2.pem"), &new.key_pem).unwrap();
    for (target, link) in [("key-2.pem", d.key()), ("cert-2.pem", d.cert())] {
        let tmp = d.dir.join(".link");
        symlink(target, &tmp).unwrap();
        fs::rename(&tmp, link).unwrap();
    }
    wait_served(addr, &client, &new.fingerprint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_never_read_a_torn_pair_while_kubelet_swaps_the_volume() {
    // The files are read one after the other; a `..data` rename landing
    // between the two reads must not pair the old cert with the new key.
    let fx = Fixture::new();
    let acceptor = fx.builder().build().unwrap();
    let leaves: Vec<_> = (0..4).map(|_| fx.server_ca.server()).collect();
    let volume = fx.server.clone();
    let ca_pem = fx.server_ca.cert_pem().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 3000 {
                let leaf = &leaves[n % leaves.len()];
                volume
                    .write(&[
                        ("tls.crt", leaf.cert_pem.as_bytes()),
                        ("tls.key", leaf.key_pem.as_bytes()),
                        ("ca.crt", ca_pem.as_bytes()),
                    ])
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let (mut ok, mut torn) = (0u32, Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        match acceptor.reload_now(Trigger::Manual).await {
            Ok(_) => ok += 1,
            Err(f) => torn.push(f.error.to_string()),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rotations = writer.join().unwrap();
    assert!(
        rotations > 100 && ok > 100,
        "{rotations} rotations, {ok} reloads"
    );
    assert!(
        torn.is_empty(),
        "{} torn reads, first: {}",
        torn.len(),
        torn[0]
    );
}
