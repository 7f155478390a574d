#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! The fault matrix: every way the TLS files of a running gateway can go
//! bad, one test per row, each against the real `openshell-gateway`
//! process (TLS on, `--tls-reload-debounce 50ms`, `--tls-reload-poll 1s`,
//! `--ocsf-log <file>`).
//!
//! Every row runs the same script ([`run_row`]):
//!
//! 1. start the gateway on a good pair and check what it serves;
//! 2. break the files ([`Fault::apply`]) while a background client keeps
//!    handshaking;
//! 3. wait for the outcome the row expects: for most rows one
//!    `tls_reload_failed` OCSF event naming the file and the cause, then at
//!    least two retries of the same files, which must not add events (one
//!    failure event per distinct bad content);
//! 4. check it still serves the last good certificate (fresh handshakes
//!    show the original fingerprint), is healthy (`GET /healthz` is 200
//!    over TLS, the process is alive with the same pid and never restarted
//!    its listener), and no handshake failed;
//! 5. write a *new* good pair ([`Fault::heal`]) and check that its
//!    fingerprint is served within [`HEAL`], with exactly one swap since
//!    startup (two for the row whose bad state is legitimately accepted),
//!    and that every audit line is a valid OCSF event without key material.
//!
//! Faults in the *content* of the files are published the way kubelet
//! publishes a Secret volume ([`AtomicWriter`]: a new timestamped directory
//! and an atomic `..data` rename), so those rows also exercise the swap.
//! Faults of the *file itself* (a FIFO, a symlink loop, permissions, a
//! directory, a deleted directory, a flood of unrelated files, a sparse
//! 50 MiB file) use plain files in a plain directory, changed with plain
//! file operations.
//!
//! # Decisions
//!
//! * Text after a valid `-----END CERTIFICATE-----` line is tolerated, as
//!   `openssl` tolerates it: the `trailing_garbage_after_the_end_line` row
//!   republishes the *same* certificate with garbage appended and expects a
//!   reload that serves the same fingerprint and no failure. A trailing
//!   *partial* PEM section (a `BEGIN` line without its `END`) is a truncated
//!   file and fails (`trailing_partial_pem_section`).
//! * ring signs with ECDSA P-256 and P-384, Ed25519 and RSA only: both an
//!   Ed448 key and an ECDSA P-521 key from `openssl` are refused as
//!   unsupported, so both are rows. `openssl` may be missing on a
//!   developer's machine: those rows then print why they are skipped and
//!   pass, and the fixture-free rows (an X25519 PKCS#8 key built by hand,
//!   an encrypted-key label on a plain key) cover the same code paths.
//! * File permissions mean nothing to root, and CI runs tests as root: the
//!   `permission_denied` row then runs the gateway as `nobody` (65534),
//!   with the files readable by that user until the certificate is
//!   `chmod 000`.
//! * The 50 MiB row proves the file was not read with the gateway's peak
//!   resident set (`VmHWM`) as well as its current one (`VmRSS`): a file
//!   read into a buffer and refused at once leaves `VmRSS` flat, as the
//!   allocator hands a block that large back to the system on free.
//!
//! # Known problems
//!
//! * The `ten_thousand_unrelated_files_in_one_burst` row cannot observe a
//!   reload that changed nothing (there is no event for it, by design), so
//!   it watches the gateway for [`QUIET`] after the burst, then checks
//!   that the rotation which follows is generation 2: any swap in between
//!   would have made it 3. Its directory is on tmpfs (`/dev/shm`) when
//!   there is one, as Secret volumes are: on a busy disk, creating the
//!   files alone takes seconds.

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use openshell_e2e::ocsf::{self, SchemaCheck, event_code, tls_details, with_code};
use openshell_e2e::{Error, GatewayCommand, GatewayProcess, command, eventually, tls};
use rustls::ClientConfig;
use serde_json::Value;
use tempfile::TempDir;
use tls_reload::testing::{AtomicWriter, Leaf, LeafOptions, TestCa};
use tokio::task::JoinHandle;

/// How long the gateway may take to start listening.
const STARTUP: Duration = Duration::from_secs(10);
/// How long a change may take to be reported (the debounce is 50 ms; the
/// rest is slack for a loaded two-core machine).
const RELOAD: Duration = Duration::from_secs(5);
/// How long a good pair may take to be served after a fault: a change
/// event and the 50 ms debounce, or at worst a retry (backoff capped at the
/// 1 s poll interval) for a directory whose watch died with it.
const HEAL: Duration = Duration::from_secs(5);
/// One TLS exchange.
const EXCHANGE: Duration = Duration::from_secs(5);
/// How often a wait probes.
const EVERY: Duration = Duration::from_millis(25);
/// Pause between the background client's handshakes.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// How long the burst row watches the gateway after the burst: many times
/// the debounce.
const QUIET: Duration = Duration::from_millis(500);
/// Handshakes the background client must complete while the files are bad,
/// so that "no handshake failed" is not vacuous.
const MIN_BAD_STATE_HANDSHAKES: usize = 3;
/// The gateway's default file size cap.
const MAX_FILE_SIZE: u64 = 1 << 20;
/// Size of the sparse file of the `fifty_mib_file` row.
const HUGE: u64 = 50 << 20;
// The row means something only when the file exceeds the cap.
const _: () = assert!(MAX_FILE_SIZE < HUGE);
/// Memory growth tolerated in the `fifty_mib_file` row, for the resident
/// set and for its peak: far below the file's size, so a gateway that read
/// the file (even into a buffer it freed at once) fails the row.
const RSS_SLACK_KIB: u64 = 5 * 1024;
/// The user (and group) `nobody`, for the permission row under root.
const NOBODY: u32 = 65_534;
/// Unrelated files written in one burst.
const BURST_FILES: usize = 10_000;

// === the matrix ===

macro_rules! rows {
    ($($(#[$doc:meta])* $name:ident => $fault:ident,)*) => {$(
        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run_row(Fault::$fault).await;
        }
    )*};
}

rows! {
    /// Both files published empty.
    empty_files => EmptyFiles,
    /// A certificate cut in the middle of its base64.
    truncated_pem => TruncatedPem,
    /// The same certificate with text after its END line: tolerated.
    trailing_garbage_after_the_end_line => TrailingGarbageAfterEnd,
    /// A good certificate followed by a BEGIN line without its END.
    trailing_partial_pem_section => TrailingPartialSection,
    /// The certificate as DER.
    der_instead_of_pem => DerInsteadOfPem,
    /// The chain with the CA first and the leaf second.
    chain_in_the_wrong_order => ChainInWrongOrder,
    /// An Ed448 key (and its certificate) from `openssl genpkey`.
    ed448_key_from_openssl => Ed448KeyFromOpenssl,
    /// An ECDSA P-521 key (and its certificate) from `openssl ecparam`.
    p521_key_from_openssl => P521KeyFromOpenssl,
    /// A well-formed PKCS#8 X25519 key, built by hand (no `openssl`).
    x25519_key_built_by_hand => X25519KeyByHand,
    /// The leaf's key encrypted by `openssl pkcs8 -topk8 -v2 aes-256-cbc`.
    encrypted_key_from_openssl => EncryptedKeyFromOpenssl,
    /// A key under the `ENCRYPTED PRIVATE KEY` label (no `openssl`).
    encrypted_key_label => EncryptedKeyLabel,
    /// Two private keys in the key file.
    two_keys_in_one_file => TwoKeysInOneFile,
    /// The key in the certificate file and the certificate in the key file.
    cert_and_key_swapped => CertAndKeySwapped,
    /// A valid certificate with the valid key of another one.
    key_for_another_cert => KeyForAnotherCert,
    /// A leaf that expired yesterday.
    expired_leaf => ExpiredLeaf,
    /// A leaf valid only from next week.
    leaf_valid_from_next_week => LeafValidFromNextWeek,
    /// A client CA bundle whose second certificate is garbage
    /// (`--tls-client-auth optional`).
    garbage_cert_in_the_client_ca_bundle => GarbageCertInClientCaBundle,
    /// A sparse 50 MiB certificate file, which must not be read.
    fifty_mib_file => FiftyMibFile,
    /// A FIFO in place of the certificate, which must not hang the watcher.
    fifo_in_place_of_the_cert => FifoInPlaceOfCert,
    /// `tls.crt -> a -> b -> a`.
    symlink_loop => SymlinkLoop,
    /// The certificate `chmod 000` (the gateway runs as `nobody` under root).
    permission_denied => PermissionDenied,
    /// The watched directory removed, then recreated with a good pair.
    watched_directory_deleted => WatchedDirectoryDeleted,
    /// The certificate and key replaced by directories.
    files_replaced_by_directories => FilesReplacedByDirectories,
    /// 10,000 unrelated files written next to the pair in one burst.
    ten_thousand_unrelated_files_in_one_burst => TenThousandFilesBurst,
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    EmptyFiles,
    TruncatedPem,
    TrailingGarbageAfterEnd,
    TrailingPartialSection,
    DerInsteadOfPem,
    ChainInWrongOrder,
    Ed448KeyFromOpenssl,
    P521KeyFromOpenssl,
    X25519KeyByHand,
    EncryptedKeyFromOpenssl,
    EncryptedKeyLabel,
    TwoKeysInOneFile,
    CertAndKeySwapped,
    KeyForAnotherCert,
    ExpiredLeaf,
    LeafValidFromNextWeek,
    GarbageCertInClientCaBundle,
    FiftyMibFile,
    FifoInPlaceOfCert,
    SymlinkLoop,
    PermissionDenied,
    WatchedDirectoryDeleted,
    FilesReplacedByDirectories,
    TenThousandFilesBurst,
}

/// How a row's files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A kubelet Secret volume, written by [`AtomicWriter`].
    Kubelet,
    /// Plain files in a plain directory.
    Plain,
}

/// What the gateway must make of a fault.
#[derive(Debug)]
enum Expect {
    /// The reload fails with a `tls_reload_failed` event whose
    /// `status_detail` contains each of `detail`.
    Fails {
        detail: Vec<&'static str>,
        /// The fault is one atomic change, so exactly one failure event;
        /// otherwise the steps in between may each fail differently, and
        /// only repeats of the same failure are forbidden.
        atomic: bool,
    },
    /// The change is accepted and serves the same certificate.
    SameCertReloaded,
    /// Nothing is reloaded and nothing fails.
    Nothing,
}

fn fails(detail: &[&'static str]) -> Expect {
    Expect::Fails {
        detail: detail.to_vec(),
        atomic: true,
    }
}

impl Fault {
    fn layout(self) -> Layout {
        match self {
            Self::FiftyMibFile
            | Self::FifoInPlaceOfCert
            | Self::SymlinkLoop
            | Self::PermissionDenied
            | Self::WatchedDirectoryDeleted
            | Self::FilesReplacedByDirectories
            | Self::TenThousandFilesBurst => Layout::Plain,
            _ => Layout::Kubelet,
        }
    }

    fn needs_openssl(self) -> bool {
        matches!(
            self,
            Self::Ed448KeyFromOpenssl | Self::P521KeyFromOpenssl | Self::EncryptedKeyFromOpenssl
        )
    }

    /// Why the row cannot run here, if it cannot.
    fn skip_reason(self) -> Option<String> {
        if self.needs_openssl() && !openssl_on_path() {
            let covered_by = if self == Self::EncryptedKeyFromOpenssl {
                "encrypted_key_label"
            } else {
                "x25519_key_built_by_hand"
            };
            return Some(format!(
                "`openssl` is not on PATH; the fixture-free row {covered_by} covers this fault"
            ));
        }
        None
    }

    /// Breaks the files of `f` and says what the gateway must make of it.
    fn apply(self, f: &Fixture) -> Expect {
        // A good new leaf, whose files each content row breaks in its own way.
        let next = f.ca.server();
        let (cert, key) = (next.cert_pem.as_bytes(), next.key_pem.as_bytes());
        match self {
            Self::EmptyFiles => {
                f.publish(b"", b"");
                fails(&["tls.crt", "is empty"])
            }
            Self::TruncatedPem => {
                f.publish(&cert[..cert.len() / 2], key);
                fails(&[
                    "tls.crt",
                    "malformed PEM",
                    "missing the -----END CERTIFICATE----- line",
                ])
            }
            Self::TrailingGarbageAfterEnd => {
                // The *served* pair, so that the only change is the garbage.
                let mut with_garbage = f.leaf.cert_pem.clone().into_bytes();
                with_garbage.extend_from_slice(
                    b"this line is not PEM\n\tnor is this one: 0123456789 !@#$%^&*()\n\xff\xfe\x00\x01 binary junk\n",
                );
                f.publish(&with_garbage, f.leaf.key_pem.as_bytes());
                Expect::SameCertReloaded
            }
            Self::TrailingPartialSection => {
                let other = f.ca.server().cert_pem;
                let partial: String = other.lines().take(3).map(|l| format!("{l}\n")).collect();
                assert!(partial.starts_with("-----BEGIN CERTIFICATE-----"));
                f.publish(format!("{}{partial}", next.cert_pem).as_bytes(), key);
                fails(&[
                    "tls.crt",
                    "malformed PEM",
                    "missing the -----END CERTIFICATE----- line",
                ])
            }
            Self::DerInsteadOfPem => {
                f.publish(next.cert_der.as_ref(), key);
                fails(&["tls.crt", "binary (DER) data"])
            }
            Self::ChainInWrongOrder => {
                let chain = format!("{}{}", f.ca.cert_pem(), next.cert_pem);
                f.publish(chain.as_bytes(), key);
                fails(&["tls.key", "does not match the certificate", "tls.crt"])
            }
            Self::Ed448KeyFromOpenssl => {
                let (cert, key) =
                    openssl_self_signed(f.tmp.path(), &["genpkey", "-algorithm", "ed448"]);
                assert!(key.contains("-----BEGIN PRIVATE KEY-----"), "{key}");
                f.publish(cert.as_bytes(), key.as_bytes());
                fails(&["tls.key", "unsupported key"])
            }
            Self::P521KeyFromOpenssl => {
                let (cert, key) = openssl_self_signed(
                    f.tmp.path(),
                    &["ecparam", "-name", "secp521r1", "-genkey", "-noout"],
                );
                assert!(key.contains("-----BEGIN EC PRIVATE KEY-----"), "{key}");
                f.publish(cert.as_bytes(), key.as_bytes());
                fails(&["tls.key", "unsupported key"])
            }
            Self::X25519KeyByHand => {
                let x25519 = x25519_pkcs8_pem();
                if openssl_on_path() {
                    // The fixture is well-formed: the refusal is about the
                    // algorithm, not the encoding.
                    let text = openssl(&["pkey", "-noout", "-text"], Some(x25519.as_bytes()));
                    assert!(text.contains("X25519"), "openssl reads: {text}");
                }
                f.publish(cert, x25519.as_bytes());
                fails(&["tls.key", "unsupported key"])
            }
            Self::EncryptedKeyFromOpenssl => {
                let encrypted = openssl(
                    &[
                        "pkcs8",
                        "-topk8",
                        "-v2",
                        "aes-256-cbc",
                        "-passout",
                        "pass:x",
                    ],
                    Some(key),
                );
                assert!(
                    encrypted.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
                    "{encrypted}"
                );
                f.publish(cert, encrypted.as_bytes());
                fails(&["tls.key", "encrypted PKCS#8 keys are not supported"])
            }
            Self::EncryptedKeyLabel => {
                let labelled = next.key_pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
                f.publish(cert, labelled.as_bytes());
                fails(&["tls.key", "encrypted PKCS#8 keys are not supported"])
            }
            Self::TwoKeysInOneFile => {
                let keys = format!("{}{}", next.key_pem, f.ca.server().key_pem);
                f.publish(cert, keys.as_bytes());
                fails(&["tls.key", "2 private keys found"])
            }
            Self::CertAndKeySwapped => {
                f.publish(key, cert);
                fails(&["tls.crt", "no CERTIFICATE PEM block"])
            }
            Self::KeyForAnotherCert => {
                f.publish(cert, f.ca.server().key_pem.as_bytes());
                fails(&["tls.key", "does not match the certificate", "tls.crt"])
            }
            Self::ExpiredLeaf => {
                let now = SystemTime::now();
                let expired =
                    f.ca.issue(&LeafOptions::server().valid(now - days(30), now - days(1)));
                f.publish(expired.cert_pem.as_bytes(), expired.key_pem.as_bytes());
                fails(&["tls.crt", "expired at", "keeping the served certificate"])
            }
            Self::LeafValidFromNextWeek => {
                let now = SystemTime::now();
                let early =
                    f.ca.issue(&LeafOptions::server().valid(now + days(7), now + days(97)));
                f.publish(early.cert_pem.as_bytes(), early.key_pem.as_bytes());
                fails(&["tls.crt", "is not valid before", "keeping the served"])
            }
            Self::GarbageCertInClientCaBundle => {
                let (client_ca, _) = f.client_ca.as_ref().expect("a client CA row");
                let garbage = pem(
                    "CERTIFICATE",
                    b"this is not DER, let alone an X.509 certificate",
                );
                f.publish_client_ca(format!("{}{garbage}", client_ca.cert_pem()).as_bytes());
                fails(&[
                    "client CA bundle",
                    "ca.crt",
                    "certificate #1 is not valid X.509",
                ])
            }
            Self::FiftyMibFile => {
                let staged = f.dir.join(".tls.crt.huge");
                fs::File::create(&staged).unwrap().set_len(HUGE).unwrap();
                fs::rename(&staged, f.cert_path()).unwrap();
                fails(&["tls.crt", "is larger than the 1048576-byte limit"])
            }
            Self::FifoInPlaceOfCert => {
                let staged = f.dir.join(".tls.crt.fifo");
                command::run(
                    Command::new("mkfifo").arg(&staged),
                    None,
                    Duration::from_secs(5),
                )
                .unwrap();
                fs::rename(&staged, f.cert_path()).unwrap();
                fails(&["tls.crt", "is a FIFO, not a regular file"])
            }
            Self::SymlinkLoop => {
                symlink("b", f.dir.join("a")).unwrap();
                symlink("a", f.dir.join("b")).unwrap();
                let staged = f.dir.join(".tls.crt.link");
                symlink("a", &staged).unwrap();
                fs::rename(&staged, f.cert_path()).unwrap();
                fails(&["reading certificate", "tls.crt", "(os error 40)"])
            }
            Self::PermissionDenied => {
                fs::set_permissions(f.cert_path(), fs::Permissions::from_mode(0o000)).unwrap();
                fails(&["reading certificate", "tls.crt", "(os error 13)"])
            }
            Self::WatchedDirectoryDeleted => {
                fs::remove_dir_all(&f.dir).unwrap();
                Expect::Fails {
                    detail: vec!["reading certificate", "tls.crt", "(os error 2)"],
                    atomic: false,
                }
            }
            Self::FilesReplacedByDirectories => {
                for path in [f.cert_path(), f.key_path()] {
                    fs::remove_file(&path).unwrap();
                    fs::create_dir(&path).unwrap();
                }
                Expect::Fails {
                    detail: vec!["tls.crt", "is a directory, not a regular file"],
                    atomic: false,
                }
            }
            Self::TenThousandFilesBurst => {
                for i in 0..BURST_FILES {
                    fs::write(f.dir.join(format!("unrelated-{i:05}.txt")), i.to_string()).unwrap();
                }
                Expect::Nothing
            }
        }
    }

    /// Writes the new good pair `healed`, after undoing what the plain
    /// file operations left in the way.
    fn heal(self, f: &Fixture, healed: &Leaf) {
        let (cert, key) = (healed.cert_pem.as_bytes(), healed.key_pem.as_bytes());
        match self {
            Self::WatchedDirectoryDeleted => {
                // Recreated whole, as a restore from backup would: the
                // directory appears with both files in it.
                let staged = f.tmp.path().join("server.new");
                fs::create_dir(&staged).unwrap();
                fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).unwrap();
                f.write_file(&staged.join("tls.crt"), cert, false);
                f.write_file(&staged.join("tls.key"), key, true);
                fs::rename(&staged, &f.dir).unwrap();
            }
            Self::FilesReplacedByDirectories => {
                fs::remove_dir(f.cert_path()).unwrap();
                fs::remove_dir(f.key_path()).unwrap();
                f.publish(cert, key);
            }
            Self::GarbageCertInClientCaBundle => {
                let (client_ca, _) = f.client_ca.as_ref().expect("a client CA row");
                f.publish_client_ca(client_ca.cert_pem().as_bytes());
                f.publish(cert, key);
            }
            _ => f.publish(cert, key),
        }
    }
}

// === the script of every row ===

async fn run_row(fault: Fault) {
    if let Some(reason) = fault.skip_reason() {
        say(&format!("SKIPPED fault row {fault:?}: {reason}"));
        return;
    }
    let fixture = Fixture::new(fault);
    let mut gateway = fixture.spawn();
    let addr = gateway.listening(STARTUP).await.unwrap();
    let pid = gateway.pid();
    if let Some((uid, _)) = fixture.run_as {
        assert_eq!(
            effective_uid_of(&pid.to_string()),
            uid,
            "the gateway's user"
        );
    }
    let client = fixture.client();
    let original = fixture.leaf.fingerprint.clone();
    assert_eq!(served(addr, &client).await, original);
    let loaded = wait_for_event(&mut gateway, "tls_loaded", |_| true).await;
    assert_eq!(tls_details(&loaded)["new_fingerprint"], original.as_str());
    assert_eq!(healthz(addr, &client).await, 200);

    // Break the files while a client keeps handshaking.
    let monitor = Monitor::start(addr, client.clone());
    monitor.wait_for_first().await;
    let memory_before = Memory::of(pid);
    let fault_at = monitor.len();
    let expect = tokio::task::block_in_place(|| fault.apply(&fixture));

    match &expect {
        Expect::Fails { detail, atomic } => {
            let failed = wait_for_event(&mut gateway, "tls_reload_failed", |e| {
                detail.iter().all(|d| status_detail(e).contains(d))
            })
            .await;
            assert_eq!(failed["status_id"], 2, "{failed}");
            assert_eq!(
                tls_details(&failed)["previous_fingerprint"],
                original.as_str(),
                "{failed}"
            );
            assert_eq!(tls_details(&failed)["generation"], 1, "{failed}");
            // The watcher retries the same files; the retries must not be
            // reported again.
            wait_for_retries(&gateway, addr, &client).await;
            let events = gateway.ocsf_events().unwrap();
            let failures: Vec<&Value> = with_code(&events, "tls_reload_failed").collect();
            let details: Vec<&str> = failures.iter().map(|e| status_detail(e)).collect();
            if *atomic {
                assert_eq!(
                    failures.len(),
                    1,
                    "one failure event for one bad content: {details:#?}"
                );
            }
            let distinct: HashSet<&str> = details.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                details.len(),
                "a failure was reported twice: {details:#?}"
            );
            let last = details.last().copied().unwrap_or_default();
            assert!(
                detail.iter().all(|d| last.contains(d)),
                "the last failure is not the final bad state's: {last}"
            );
            assert_codes(&events, &["tls_loaded", "tls_reload_failed"]);
        }
        Expect::SameCertReloaded => {
            let reloaded = wait_for_event(&mut gateway, "tls_reloaded", |_| true).await;
            let details = tls_details(&reloaded);
            assert_eq!(details["new_fingerprint"], original.as_str(), "{reloaded}");
            assert_eq!(
                details["previous_fingerprint"],
                original.as_str(),
                "{reloaded}"
            );
            assert_eq!(details["generation"], 2, "{reloaded}");
            assert_codes(
                &gateway.ocsf_events().unwrap(),
                &["tls_loaded", "tls_reloaded"],
            );
        }
        Expect::Nothing => {
            // The monitor keeps handshaking meanwhile.
            tokio::time::sleep(QUIET).await;
            assert_codes(&gateway.ocsf_events().unwrap(), &["tls_loaded"]);
        }
    }

    // Still serving the last good certificate, and healthy.
    for _ in 0..3 {
        assert_eq!(
            served(addr, &client).await,
            original,
            "a fresh handshake after {fault:?}"
        );
    }
    assert_eq!(healthz(addr, &client).await, 200);
    assert_alive(&mut gateway, pid);
    if fault == Fault::FiftyMibFile {
        let memory_after = Memory::of(pid);
        for (what, before, after) in [
            ("VmRSS", memory_before.rss, memory_after.rss),
            ("VmHWM (peak RSS)", memory_before.peak, memory_after.peak),
        ] {
            assert!(
                after.saturating_sub(before) <= RSS_SLACK_KIB,
                "{what} grew from {before} KiB to {after} KiB: the {HUGE}-byte file was read"
            );
        }
    }
    if let Some((client_ca, _)) = &fixture.client_ca {
        check_client_trust_is_unchanged(addr, &fixture, client_ca).await;
    }
    let heal_at = monitor.len();

    // A new good pair heals it.
    let healed = fixture.ca.server();
    tokio::task::block_in_place(|| fault.heal(&fixture, &healed));
    wait_until_served(addr, &client, &healed.fingerprint).await;
    let probes = monitor.stop().await;
    check_handshakes(&probes, fault_at, heal_at, &original, &healed.fingerprint);

    let reloaded = wait_for_event(&mut gateway, "tls_reloaded", |e| {
        tls_details(e)["new_fingerprint"] == healed.fingerprint.as_str()
    })
    .await;
    let details = tls_details(&reloaded);
    assert_eq!(
        details["previous_fingerprint"],
        original.as_str(),
        "{reloaded}"
    );
    let swaps = if matches!(expect, Expect::SameCertReloaded) {
        3
    } else {
        2
    };
    assert_eq!(
        details["generation"], swaps,
        "something else was swapped in before the heal: {reloaded}"
    );
    assert_eq!(healthz(addr, &client).await, 200);
    assert_alive(&mut gateway, pid);
    assert_ocsf_valid(&gateway);
    assert_no_key_material(&fixture, &[&fixture.leaf.key_pem, &healed.key_pem]);
}

// === fixture ===

/// A temporary directory with the server files (and, for the client-CA
/// row, a client CA volume), the CA behind them, and the audit log.
struct Fixture {
    tmp: TempDir,
    ca: TestCa,
    /// The directory holding `tls.crt` and `tls.key`.
    dir: PathBuf,
    /// Set for [`Layout::Kubelet`] rows.
    kubelet: Option<AtomicWriter>,
    /// The client CA and its volume, for the client-CA row.
    client_ca: Option<(TestCa, AtomicWriter)>,
    /// The pair served at startup.
    leaf: Leaf,
    /// The user and group the gateway runs as, when not the test's.
    run_as: Option<(u32, u32)>,
}

impl Fixture {
    fn new(fault: Fault) -> Self {
        let tmp = if fault == Fault::TenThousandFilesBurst {
            memory_backed_tempdir()
        } else {
            tempfile::tempdir().unwrap()
        };
        let run_as = (fault == Fault::PermissionDenied && effective_uid() == 0).then(|| {
            say(&format!(
                "{fault:?}: running as root, which ignores file modes; \
                 the gateway runs as uid/gid {NOBODY} for this row"
            ));
            (NOBODY, NOBODY)
        });
        if run_as.is_some() {
            // tempdir() makes it 0700: let the gateway's user in.
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dir = tmp.path().join("server");
        let kubelet = match fault.layout() {
            Layout::Kubelet => Some(AtomicWriter::new(&dir).unwrap()),
            Layout::Plain => {
                fs::create_dir(&dir).unwrap();
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
                None
            }
        };
        let client_ca = (fault == Fault::GarbageCertInClientCaBundle).then(|| {
            let ca = TestCa::new("openshell-e2e faults client CA");
            let volume = AtomicWriter::new(tmp.path().join("client-ca")).unwrap();
            (ca, volume)
        });
        let ca = TestCa::new("openshell-e2e faults server CA");
        let leaf = ca.server();
        let fixture = Self {
            tmp,
            ca,
            dir,
            kubelet,
            client_ca,
            leaf,
            run_as,
        };
        fixture.publish(
            fixture.leaf.cert_pem.as_bytes(),
            fixture.leaf.key_pem.as_bytes(),
        );
        if let Some((ca, _)) = &fixture.client_ca {
            fixture.publish_client_ca(ca.cert_pem().as_bytes());
        }
        if let Some((uid, gid)) = run_as {
            // The gateway appends to the audit log as its own user.
            fs::write(fixture.audit_log(), b"").unwrap();
            std::os::unix::fs::chown(fixture.audit_log(), Some(uid), Some(gid)).unwrap();
        }
        fixture
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    fn audit_log(&self) -> PathBuf {
        self.tmp.path().join("audit.jsonl")
    }

    /// Writes a pair: one kubelet update of the volume, or for plain files
    /// each file written beside its name and renamed over it.
    fn publish(&self, cert: &[u8], key: &[u8]) {
        match &self.kubelet {
            Some(volume) => volume
                .write(&[("tls.crt", cert), ("tls.key", key)])
                .unwrap(),
            None => {
                self.write_file(&self.cert_path(), cert, false);
                self.write_file(&self.key_path(), key, true);
            }
        }
    }

    /// One kubelet update of the client CA volume.
    fn publish_client_ca(&self, bundle: &[u8]) {
        let (_, volume) = self.client_ca.as_ref().expect("a client CA row");
        volume.write(&[("ca.crt", bundle)]).unwrap();
    }

    /// Replaces `path` with `bytes` (written beside it, then renamed), with
    /// the modes a deployment would use: a certificate anyone may read, a
    /// key only its owner and the gateway's group may.
    fn write_file(&self, path: &Path, bytes: &[u8], is_key: bool) {
        let name = path.file_name().unwrap().to_string_lossy();
        let staged = path.with_file_name(format!(".{name}.tmp"));
        fs::write(&staged, bytes).unwrap();
        let mode = match (is_key, self.run_as) {
            (false, _) => 0o644,
            (true, None) => 0o600,
            (true, Some((_, gid))) => {
                std::os::unix::fs::chown(&staged, None, Some(gid)).unwrap();
                0o640
            }
        };
        fs::set_permissions(&staged, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&staged, path).unwrap();
    }

    fn spawn(&self) -> GatewayProcess {
        let mut cmd = GatewayCommand::new()
            .args(["--bind", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(self.cert_path())
            .arg("--tls-key")
            .arg(self.key_path())
            .args(["--tls-reload-debounce", "50ms", "--tls-reload-poll", "1s"])
            .ocsf_log(self.audit_log());
        if let Some((_, volume)) = &self.client_ca {
            cmd = cmd
                .arg("--tls-client-ca")
                .arg(volume.path("ca.crt"))
                .args(["--tls-client-auth", "optional"]);
        }
        if let Some((uid, gid)) = self.run_as {
            cmd = cmd.user(uid, gid);
        }
        cmd.spawn().unwrap()
    }

    /// A client trusting the server CA, without a client certificate.
    fn client(&self) -> Arc<ClientConfig> {
        tls::client_config(self.ca.cert_pem(), None).unwrap()
    }
}

// === the background client ===

/// One handshake of the background client: the served fingerprint, or why
/// the handshake failed.
type Probe = Result<String, String>;

/// Handshakes with the gateway back to back until stopped, recording what
/// each one saw.
struct Monitor {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
    task: JoinHandle<()>,
}

impl Monitor {
    fn start(addr: SocketAddr, client: Arc<ClientConfig>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, probes) = (stop.clone(), probes.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let probe = tls::served_fingerprint(addr, client.clone(), EXCHANGE)
                        .await
                        .map_err(|e| e.to_string());
                    lock(&probes).push(probe);
                    tokio::time::sleep(PROBE_EVERY).await;
                }
            }
        });
        Self { stop, probes, task }
    }

    fn len(&self) -> usize {
        lock(&self.probes).len()
    }

    async fn wait_for_first(&self) {
        eventually(
            RELOAD,
            EVERY,
            "the background client's first handshake",
            || {
                let n = self.len();
                async move { if n > 0 { Ok(()) } else { Err(String::new()) } }
            },
        )
        .await
        .unwrap();
    }

    async fn stop(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        std::mem::take(&mut *lock(&self.probes))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// No handshake failed; while the files were bad only `original` was
/// served (and handshakes did happen then); after the heal the served
/// certificate went from `original` to `healed` once, never back.
fn check_handshakes(
    probes: &[Probe],
    fault_at: usize,
    heal_at: usize,
    original: &str,
    healed: &str,
) {
    for (i, probe) in probes.iter().enumerate() {
        if let Err(e) = probe {
            panic!("handshake #{i} of {} failed: {e}", probes.len());
        }
    }
    let served: Vec<&str> = probes.iter().flatten().map(String::as_str).collect();
    assert!(
        heal_at - fault_at >= MIN_BAD_STATE_HANDSHAKES,
        "only {} handshakes while the files were bad",
        heal_at - fault_at
    );
    if let Some(i) = served[..heal_at].iter().position(|fp| *fp != original) {
        panic!(
            "handshake #{i} (before the heal) was served {}, not {original}",
            served[i]
        );
    }
    let after = &served[heal_at..];
    let switch = after
        .iter()
        .position(|fp| *fp != original)
        .unwrap_or(after.len());
    if let Some(i) = after[switch..].iter().position(|fp| *fp != healed) {
        panic!(
            "after the heal, handshake #{} was served {}: expected {original} then {healed} only",
            heal_at + switch + i,
            after[switch + i]
        );
    }
}

// === helpers ===

async fn served(addr: SocketAddr, client: &Arc<ClientConfig>) -> String {
    tls::served_fingerprint(addr, client.clone(), EXCHANGE)
        .await
        .unwrap()
}

async fn healthz(addr: SocketAddr, client: &Arc<ClientConfig>) -> u16 {
    tls::get(addr, client.clone(), "/healthz", EXCHANGE)
        .await
        .unwrap()
        .status
}

/// Waits until a new handshake shows `fingerprint`.
async fn wait_until_served(addr: SocketAddr, client: &Arc<ClientConfig>, fingerprint: &str) {
    tls::wait_until_served(addr, client, fingerprint, HEAL, EVERY)
        .await
        .unwrap();
}

/// Waits for the first event with `code` that satisfies `pred`.
async fn wait_for_event(
    gateway: &mut GatewayProcess,
    code: &'static str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    gateway
        .wait_for_ocsf(RELOAD, &format!("an OCSF {code} event"), |events| {
            with_code(events, code).find(|e| pred(e)).cloned()
        })
        .await
        .unwrap()
}

fn status_detail(event: &Value) -> &str {
    event["status_detail"].as_str().unwrap_or_default()
}

/// The sum of `openshell_tls_reload_total{result="failure",..}`: every
/// failed attempt, retries included.
async fn failed_attempts(addr: SocketAddr, client: &Arc<ClientConfig>) -> Result<u64, String> {
    let reply = tls::get(addr, client.clone(), "/metrics", EXCHANGE)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("/metrics: HTTP {}", reply.status));
    }
    let total: f64 = reply
        .body
        .lines()
        .filter(|l| l.starts_with("openshell_tls_reload_total{result=\"failure\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Ok(total as u64)
}

/// Waits until the watcher has retried the bad files at least twice more
/// than there are failure events.
async fn wait_for_retries(gateway: &GatewayProcess, addr: SocketAddr, client: &Arc<ClientConfig>) {
    eventually(
        RELOAD,
        EVERY,
        "two retries of the same bad files",
        || async {
            let attempts = failed_attempts(addr, client).await?;
            let events = gateway.ocsf_events().map_err(|e| e.to_string())?;
            let reported = with_code(&events, "tls_reload_failed").count() as u64;
            if attempts >= reported + 2 {
                Ok(())
            } else {
                Err(format!(
                    "{attempts} failed attempts, {reported} failure events"
                ))
            }
        },
    )
    .await
    .unwrap();
}

/// The events so far have only the given codes, and the first is
/// `tls_loaded`.
fn assert_codes(events: &[Value], allowed: &[&str]) {
    let codes: Vec<&str> = events.iter().map(event_code).collect();
    assert_eq!(codes.first(), Some(&"tls_loaded"), "{codes:?}");
    assert!(
        codes.iter().all(|c| allowed.contains(c)),
        "events {codes:?}, expected only {allowed:?}\n{events:#?}"
    );
    if allowed.contains(&"tls_reloaded") {
        assert_eq!(with_code(events, "tls_reloaded").count(), 1, "{codes:?}");
    }
}

/// The process is the one that started and never restarted its listener.
fn assert_alive(gateway: &mut GatewayProcess, pid: u32) {
    gateway.ensure_not_restarted(pid).unwrap();
}

/// While the client CA bundle is bad, the old trust holds: a client of
/// the client CA is accepted, one of an unknown CA is refused.
async fn check_client_trust_is_unchanged(addr: SocketAddr, fixture: &Fixture, client_ca: &TestCa) {
    let member = client_ca.client("openshell-e2e-client");
    let member = tls::client_config(fixture.ca.cert_pem(), Some(&member)).unwrap();
    let status = tls::get(addr, member, "/healthz", EXCHANGE)
        .await
        .unwrap()
        .status;
    assert_eq!(status, 200, "a client of the client CA");
    let stranger = TestCa::new("openshell-e2e stranger CA").client("stranger");
    let stranger = tls::client_config(fixture.ca.cert_pem(), Some(&stranger)).unwrap();
    match tls::get(addr, stranger, "/healthz", EXCHANGE).await {
        Err(Error::Io { source, .. }) => {
            let msg = source.to_string();
            assert!(msg.contains("UnknownCA"), "stranger refused with: {msg}");
        }
        other => panic!("a client of an unknown CA: expected UnknownCA, got {other:?}"),
    }
}

/// Every OCSF line validates against the schema, when the schema files are
/// there; says so when they are not.
fn assert_ocsf_valid(gateway: &GatewayProcess) {
    let events = gateway.ocsf_events().unwrap();
    match ocsf::validate(&events) {
        Ok(SchemaCheck::Validated { events: n, .. }) => assert_eq!(n, events.len()),
        Ok(SchemaCheck::Skipped { reason }) => {
            say(&format!("skipping OCSF schema validation: {reason}"));
        }
        Ok(other) => panic!("unexpected schema check {other:?}"),
        Err(e) => panic!("{e}"),
    }
}

/// No private key (or any PEM) ever reaches the audit stream.
fn assert_no_key_material(fixture: &Fixture, keys: &[&str]) {
    let audit = fs::read_to_string(fixture.audit_log()).unwrap();
    assert!(!audit.contains("-----BEGIN"), "PEM in the audit log");
    for key in keys {
        assert!(!audit.contains(key.trim()), "key material in the audit log");
    }
}

/// The memory of a process, from `/proc/<pid>/status`.
struct Memory {
    /// `VmRSS`: resident now, KiB.
    rss: u64,
    /// `VmHWM`: the peak of `VmRSS` so far, KiB. A buffer allocated and
    /// freed between two looks shows here, not in `rss`.
    peak: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
        };
        Self {
            rss: kib("VmRSS:"),
            peak: kib("VmHWM:"),
        }
    }
}

/// The effective uid of this process.
fn effective_uid() -> u32 {
    effective_uid_of("self")
}

/// The effective uid of process `pid` (`self` for this one): the second
/// field of the `Uid:` line of `/proc/<pid>/status` (real, effective,
/// saved, file system).
fn effective_uid_of(pid: &str) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no Uid line in /proc/{pid}/status:\n{status}"))
}

/// A temporary directory in `/dev/shm` (tmpfs) when there is one, else
/// in the usual place.
///
/// Kubernetes mounts Secret volumes on tmpfs, so that is the realistic
/// place for the burst row; it is also where creating 10,000 files takes a
/// fraction of a second rather than seconds on a busy disk.
fn memory_backed_tempdir() -> TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// Writes a line to the test's stderr even when the harness captures
/// output, so a skipped row is visible in `cargo test`'s output.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

// === key material ===

/// Whether an `openssl` executable is on `PATH`.
fn openssl_on_path() -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join("openssl"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Runs `openssl args` with `input` on stdin and returns its stdout.
fn openssl(args: &[&str], input: Option<&[u8]>) -> String {
    command::run(
        Command::new("openssl").args(args),
        input,
        Duration::from_secs(30),
    )
    .unwrap()
    .stdout
}

/// A key generated by `openssl genkey` (its arguments) and a self-signed
/// certificate for localhost made with it, both PEM.
fn openssl_self_signed(tmp: &Path, genkey: &[&str]) -> (String, String) {
    let key = openssl(genkey, None);
    let key_path = tmp.join("openssl-key.pem");
    fs::write(&key_path, &key).unwrap();
    let cert = openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            key_path.to_str().unwrap(),
            "-subj",
            "/CN=localhost",
            "-days",
            "30",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        None,
    );
    fs::remove_file(&key_path).unwrap();
    assert!(cert.contains("-----BEGIN CERTIFICATE-----"), "{cert}");
    (cert, key)
}

/// A well-formed PKCS#8 `PrivateKeyInfo` for an X25519 key (RFC 8410 §7):
/// a key-agreement algorithm, which cannot sign and which ring refuses.
fn x25519_pkcs8_pem() -> String {
    let mut der = vec![
        0x30, 0x2e, // SEQUENCE, 46 bytes
        0x02, 0x01, 0x00, // INTEGER 0 (version)
        0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, // AlgorithmIdentifier { id-X25519 }
        0x04, 0x22, 0x04, 0x20, // OCTET STRING { OCTET STRING, 32 bytes }
    ];
    der.extend((0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    pem("PRIVATE KEY", &der)
}

/// `bytes` as a PEM block with `label`.
fn pem(label: &str, bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[test]
fn pem_encodes_base64_with_padding() {
    assert_eq!(
        pem("X", b"Man"),
        "-----BEGIN X-----\nTWFu\n-----END X-----\n"
    );
    assert_eq!(
        pem("X", b"Ma"),
        "-----BEGIN X-----\nTWE=\n-----END X-----\n"
    );
    assert_eq!(pem("X", b"M"), "-----BEGIN X-----\nTQ==\n-----END X-----\n");
}
