#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! The fault matrix of the real `openshell-gateway` process (TLS on,
//! `--tls-reload-debounce 50ms`, `--tls-reload-poll 1s`, `--ocsf-log`):
//! the ways its TLS files can go bad whose effect only a process shows.
//!
//! How bad *content* is refused (empty, truncated, DER, wrong label, swapped
//! files, a mismatched, encrypted, unsupported or second key, an expired or
//! not yet valid leaf, a garbage client CA, a directory, over the size cap)
//! is tested once, in process, by `crates/tls-reload/tests/load.rs` and
//! `fuzz_loading.rs`. Here `truncated_pem` stands for all of them end to
//! end, and `trailing_garbage_after_the_end_line` keeps the one content
//! decision no library test replays: text after a valid `END` line is
//! tolerated, as `openssl` tolerates it. The other rows are faults of the
//! file itself: a FIFO that must not hang the watcher, a symlink loop, a
//! certificate the gateway's user may not read, a watched directory that
//! disappears, a 50 MiB file that must not be read into the process, and a
//! flood of unrelated files.
//!
//! Every row runs the same script ([`run_row`]):
//!
//! 1. start the gateway on a good pair and check what it serves;
//! 2. break the files ([`Fault::apply`]) while a background client keeps
//!    handshaking;
//! 3. wait for the outcome the row expects: for most rows one
//!    `tls_reload_failed` OCSF event naming the file and the cause, then at
//!    least two retries of the same files (counted by `/metrics`), which must
//!    not add events;
//! 4. check it still serves the last good certificate, `GET /healthz` is
//!    200, the process is the same and never restarted its listener, and no
//!    handshake failed;
//! 5. write a *new* good pair ([`Fault::heal`]) and check that it is served
//!    within [`RELOAD`] as the only swap since startup (two for the row whose
//!    bad state is legitimately accepted), and that every audit line is a
//!    valid OCSF event without key material.
//!
//! # Decisions
//!
//! * File permissions mean nothing to root, and CI runs tests as root: the
//!   `permission_denied` row then runs the gateway as `nobody` (65534).
//! * The 50 MiB row checks the gateway's peak resident set (`VmHWM`) as
//!   well as its current one: a file read into a buffer and refused at once
//!   leaves `VmRSS` flat, as the allocator hands such a block back on free.
//! * The burst row cannot observe a reload that changed nothing (there is no
//!   event for it), so it watches the gateway for [`QUIET`], then checks that
//!   the rotation which follows is generation 2. Its directory is on tmpfs
//!   (`/dev/shm`) when there is one, as Secret volumes are.

mod common;

use std::collections::HashSet;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{MetricsPage, Prober, RELOAD, STARTUP, details, event, get_ok, memory_kib, served};
use openshell_e2e::ocsf::{event_code, tls_details, with_code};
use openshell_e2e::{GatewayCommand, GatewayProcess, command, say, tls};
use rustls::ClientConfig;
use serde_json::{Value, json};
use tempfile::TempDir;
use tls_reload::testing::{Leaf, TestCa, eventually};

/// How long the burst row watches the gateway after the burst: many times
/// the debounce.
const QUIET: Duration = Duration::from_millis(500);
/// Handshakes the background client must complete while the files are bad,
/// so that "no handshake failed" is not vacuous.
const MIN_BAD_STATE_HANDSHAKES: usize = 3;
/// Size of the sparse file of the `fifty_mib_file` row: far over the
/// gateway's default 1 MiB cap.
const HUGE: u64 = 50 << 20;
/// Memory growth tolerated in the `fifty_mib_file` row, for the resident
/// set and for its peak: far below the file's size.
const RSS_SLACK_KIB: u64 = 5 * 1024;
/// The user (and group) `nobody`, for the permission row under root.
const NOBODY: u32 = 65_534;
/// Unrelated files written in one burst.
const BURST_FILES: usize = 10_000;

// === the matrix ===

macro_rules! rows {
    ($($(#[$doc:meta])* $name:ident => $fault:ident,)*) => {
        /// One row of the matrix.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Fault { $($fault,)* }
        $(
            $(#[$doc])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_row(Fault::$fault).await;
            }
        )*
    };
}

rows! {
    /// A new certificate cut in the middle of its base64.
    truncated_pem => TruncatedPem,
    /// The served certificate with text after its END line: tolerated.
    trailing_garbage_after_the_end_line => TrailingGarbageAfterEnd,
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
    /// 10,000 unrelated files written next to the pair in one burst.
    ten_thousand_unrelated_files_in_one_burst => TenThousandFilesBurst,
}

/// What the gateway must make of a fault.
#[derive(Debug)]
enum Expect {
    /// The reload fails with a `tls_reload_failed` event whose
    /// `status_detail` contains each of these.
    Fails(&'static [&'static str]),
    /// The change is accepted and serves the same certificate.
    SameCertReloaded,
    /// Nothing is reloaded and nothing fails.
    Nothing,
}

impl Fault {
    /// Breaks the files of `f` and says what the gateway must make of it.
    fn apply(self, f: &Fixture) -> Expect {
        let cert = f.cert_path();
        match self {
            Self::TruncatedPem => {
                let next = f.ca.server().cert_pem;
                f.write_file(&cert, &next.as_bytes()[..next.len() / 2], false);
                Expect::Fails(&[
                    "tls.crt",
                    "malformed PEM",
                    "missing the -----END CERTIFICATE----- line",
                ])
            }
            Self::TrailingGarbageAfterEnd => {
                // The *served* certificate, so that the only change is the garbage.
                let mut with_garbage = f.leaf.cert_pem.clone().into_bytes();
                with_garbage.extend_from_slice(
                    b"this line is not PEM\n\tnor is this one: 0123 !@#$%^&*()\n",
                );
                with_garbage.extend_from_slice(b"\xff\xfe\x00\x01 binary junk\n");
                f.write_file(&cert, &with_garbage, false);
                Expect::SameCertReloaded
            }
            Self::FiftyMibFile => {
                let staged = f.dir.join(".tls.crt.huge");
                fs::File::create(&staged).unwrap().set_len(HUGE).unwrap();
                fs::rename(&staged, &cert).unwrap();
                Expect::Fails(&["tls.crt", "is larger than the 1048576-byte limit"])
            }
            Self::FifoInPlaceOfCert => {
                let staged = f.dir.join(".tls.crt.fifo");
                let mkfifo = command::run(
                    Command::new("mkfifo").arg(&staged),
                    None,
                    Duration::from_secs(5),
                );
                mkfifo.unwrap();
                fs::rename(&staged, &cert).unwrap();
                Expect::Fails(&["tls.crt", "is a FIFO, not a regular file"])
            }
            Self::SymlinkLoop => {
                symlink("b", f.dir.join("a")).unwrap();
                symlink("a", f.dir.join("b")).unwrap();
                let staged = f.dir.join(".tls.crt.link");
                symlink("a", &staged).unwrap();
                fs::rename(&staged, &cert).unwrap();
                Expect::Fails(&["reading certificate", "tls.crt", "(os error 40)"])
            }
            Self::PermissionDenied => {
                fs::set_permissions(&cert, fs::Permissions::from_mode(0o000)).unwrap();
                Expect::Fails(&["reading certificate", "tls.crt", "(os error 13)"])
            }
            Self::WatchedDirectoryDeleted => {
                fs::remove_dir_all(&f.dir).unwrap();
                Expect::Fails(&["reading certificate", "tls.crt", "(os error 2)"])
            }
            Self::TenThousandFilesBurst => {
                for i in 0..BURST_FILES {
                    fs::write(f.dir.join(format!("unrelated-{i:05}.txt")), i.to_string()).unwrap();
                }
                Expect::Nothing
            }
        }
    }

    /// Writes the new good pair `healed`.
    fn heal(self, f: &Fixture, healed: &Leaf) {
        if self == Self::WatchedDirectoryDeleted {
            // Recreated whole, as a restore from backup would: the
            // directory appears with both files in it.
            let staged = f.tmp.path().join("server.new");
            fs::create_dir(&staged).unwrap();
            fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).unwrap();
            f.write_file(&staged.join("tls.crt"), healed.cert_pem.as_bytes(), false);
            f.write_file(&staged.join("tls.key"), healed.key_pem.as_bytes(), true);
            fs::rename(&staged, &f.dir).unwrap();
        } else {
            f.publish(healed);
        }
    }
}

// === the script of every row ===

async fn run_row(fault: Fault) {
    let fixture = Fixture::new(fault);
    let mut gateway = fixture.spawn();
    let addr = gateway.listening(STARTUP).await.unwrap();
    let pid = gateway.pid();
    if let Some((uid, _)) = fixture.run_as {
        assert_eq!(effective_uid(&pid.to_string()), uid, "the gateway's user");
    }
    let client = tls::client_config(fixture.ca.cert_pem(), None).unwrap();
    let original = fixture.leaf.fingerprint.clone();
    assert_eq!(served(addr, &client).await, original);
    let loaded = event(&mut gateway, "tls_loaded", |_| true).await;
    assert_eq!(tls_details(&loaded)["new_fingerprint"], original.as_str());
    get_ok(addr, &client, "/healthz").await;

    // Break the files while a client keeps handshaking.
    let monitor = Prober::handshakes(addr, client.clone());
    monitor.wait_for(1).await;
    let memory_before = memory_kib(pid);
    let fault_at = monitor.len();
    let expect = tokio::task::block_in_place(|| fault.apply(&fixture));

    match &expect {
        Expect::Fails(detail) => {
            let failed = event(&mut gateway, "tls_reload_failed", |e| {
                detail.iter().all(|d| status_detail(e).contains(d))
            })
            .await;
            let seen = details(&failed, &["previous_fingerprint", "generation"]);
            assert_eq!(failed["status_id"], 2, "{failed}");
            assert_eq!(seen, json!([original, 1]), "{failed}");
            // The watcher retries the same files; the retries must not be
            // reported again.
            wait_for_retries(&gateway, addr, &client).await;
            let events = gateway.ocsf_events().unwrap();
            let failures = with_code(&events, "tls_reload_failed");
            let failures: Vec<&str> = failures.map(status_detail).collect();
            // A deleted directory is many changes, whose steps in between may
            // each fail differently; any other fault is one change.
            let one = fault != Fault::WatchedDirectoryDeleted;
            let counted = !one || failures.len() == 1;
            assert!(counted, "one per bad content: {failures:#?}");
            let distinct: HashSet<&str> = failures.iter().copied().collect();
            let twice = distinct.len() < failures.len();
            assert!(!twice, "reported twice: {failures:#?}");
            let last = failures.last().copied().unwrap_or_default();
            let is_last = detail.iter().all(|d| last.contains(d));
            assert!(is_last, "not the final bad state's: {last}");
            assert_codes(&events, &["tls_loaded", "tls_reload_failed"]);
        }
        Expect::SameCertReloaded => {
            let reloaded = event(&mut gateway, "tls_reloaded", |_| true).await;
            let names = ["new_fingerprint", "previous_fingerprint", "generation"];
            let want = json!([original, original, 2]);
            assert_eq!(details(&reloaded, &names), want, "{reloaded}");
            let events = gateway.ocsf_events().unwrap();
            assert_codes(&events, &["tls_loaded", "tls_reloaded"]);
        }
        Expect::Nothing => {
            // The background client keeps handshaking meanwhile.
            tokio::time::sleep(QUIET).await;
            assert_codes(&gateway.ocsf_events().unwrap(), &["tls_loaded"]);
        }
    }

    // Healthy, and still serving the last good certificate (as the
    // background client checks, once it has seen enough of the bad state).
    monitor.wait_for(fault_at + MIN_BAD_STATE_HANDSHAKES).await;
    get_ok(addr, &client, "/healthz").await;
    gateway.ensure_not_restarted(pid).unwrap();
    if fault == Fault::FiftyMibFile {
        let (rss, peak) = memory_kib(pid);
        let grown = [
            ("VmRSS", memory_before.0, rss),
            ("VmHWM", memory_before.1, peak),
        ];
        for (what, before, after) in grown {
            let read = format!("{what} grew from {before} KiB to {after} KiB: {HUGE} bytes read");
            assert!(after.saturating_sub(before) <= RSS_SLACK_KIB, "{read}");
        }
    }
    let heal_at = monitor.len();

    // A new good pair heals it.
    let healed = fixture.ca.server();
    tokio::task::block_in_place(|| fault.heal(&fixture, &healed));
    common::wait_until_served(addr, &client, &healed.fingerprint).await;
    let served = monitor.stop("the background client").await;
    check_handshakes(&served, (fault_at, heal_at), &original, &healed.fingerprint);

    let reloaded = event(&mut gateway, "tls_reloaded", |e| {
        tls_details(e)["new_fingerprint"] == healed.fingerprint.as_str()
    })
    .await;
    // Generation 2, or 3 after a bad state legitimately accepted.
    let swaps = 2 + u64::from(matches!(expect, Expect::SameCertReloaded));
    let seen = details(&reloaded, &["previous_fingerprint", "generation"]);
    let want = json!([original, swaps]);
    assert_eq!(seen, want, "swapped before the heal: {reloaded}");
    get_ok(addr, &client, "/healthz").await;
    gateway.ensure_not_restarted(pid).unwrap();
    common::assert_ocsf_valid(&gateway);
    let keys = [fixture.leaf.key_pem.as_str(), &healed.key_pem];
    common::assert_no_key_material(&fixture.audit_log(), &keys);
}

// === fixture ===

/// A temporary directory with plain `tls.crt` and `tls.key` files, the CA
/// behind them, and the audit log.
struct Fixture {
    tmp: TempDir,
    ca: TestCa,
    /// The directory holding `tls.crt` and `tls.key`.
    dir: PathBuf,
    /// The pair served at startup.
    leaf: Leaf,
    /// The user and group the gateway runs as, when not the test's.
    run_as: Option<(u32, u32)>,
}

impl Fixture {
    fn new(fault: Fault) -> Self {
        let tmp = if fault == Fault::TenThousandFilesBurst {
            // Where Kubernetes mounts Secret volumes, and where creating
            // 10,000 files takes a fraction of a second on a busy machine.
            tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let run_as = (fault == Fault::PermissionDenied && effective_uid("self") == 0).then(|| {
            say(&format!(
                "{fault:?}: running as root, which ignores file modes; \
                 the gateway runs as uid/gid {NOBODY} for this row"
            ));
            (NOBODY, NOBODY)
        });
        let dir = tmp.path().join("server");
        fs::create_dir(&dir).unwrap();
        for path in [tmp.path(), &dir] {
            // tempdir() makes it 0700: let the gateway's user in.
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let ca = TestCa::new("openshell-e2e faults server CA");
        let leaf = ca.server();
        let fixture = Self {
            tmp,
            ca,
            dir,
            leaf,
            run_as,
        };
        fixture.publish(&fixture.leaf);
        if let Some((uid, gid)) = run_as {
            // The gateway appends to the audit log as its own user.
            fs::write(fixture.audit_log(), b"").unwrap();
            chown(fixture.audit_log(), Some(uid), Some(gid)).unwrap();
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

    fn publish(&self, leaf: &Leaf) {
        self.write_file(&self.cert_path(), leaf.cert_pem.as_bytes(), false);
        self.write_file(&self.key_path(), leaf.key_pem.as_bytes(), true);
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
                chown(&staged, None, Some(gid)).unwrap();
                0o640
            }
        };
        fs::set_permissions(&staged, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&staged, path).unwrap();
    }

    fn spawn(&self) -> GatewayProcess {
        let mut cmd = GatewayCommand::new()
            .args(["--bind", "127.0.0.1:0", "--tls-cert"])
            .arg(self.cert_path())
            .arg("--tls-key")
            .arg(self.key_path())
            .args(["--tls-reload-debounce", "50ms", "--tls-reload-poll", "1s"])
            .ocsf_log(self.audit_log());
        if let Some((uid, gid)) = self.run_as {
            cmd = cmd.user(uid, gid);
        }
        cmd.spawn().unwrap()
    }
}

// === helpers ===

/// While the files were bad only `original` was served (and handshakes
/// did happen then); after the heal the served certificate went from
/// `original` to `healed` once, never back.
fn check_handshakes(served: &[String], at: (usize, usize), original: &str, healed: &str) {
    let (fault_at, heal_at) = at;
    let bad_state = heal_at - fault_at;
    let enough = bad_state >= MIN_BAD_STATE_HANDSHAKES;
    assert!(enough, "{bad_state} handshakes in the bad state");
    let switch = served.iter().position(|fp| fp != original);
    let switch = switch.unwrap_or(served.len());
    let early = served.get(switch).filter(|_| switch < heal_at);
    assert!(early.is_none(), "#{switch} before the heal: {early:?}");
    let after = served[switch..].iter().position(|fp| fp != healed);
    assert!(after.is_none(), "{original} then {healed}: {served:?}");
}

fn status_detail(event: &Value) -> &str {
    event["status_detail"].as_str().unwrap_or_default()
}

/// Waits until the watcher has retried the bad files at least twice more
/// than there are failure events: `/metrics` counts every failed attempt,
/// retries included.
async fn wait_for_retries(gateway: &GatewayProcess, addr: SocketAddr, client: &Arc<ClientConfig>) {
    eventually(RELOAD, "two retries of the same bad files", || async {
        let page = MetricsPage::fetch(addr, client).await?;
        let attempts = page.sum("openshell_tls_reload_total", &[("result", "failure")]);
        let events = gateway.ocsf_events().map_err(|e| e.to_string())?;
        let reported = with_code(&events, "tls_reload_failed").count() as u64;
        let retried = attempts >= reported + 2;
        retried
            .then_some(())
            .ok_or(format!("{attempts} failed attempts, {reported} events"))
    })
    .await;
}

/// The events so far have only the given codes, and the first is
/// `tls_loaded`.
fn assert_codes(events: &[Value], allowed: &[&str]) {
    let codes: Vec<&str> = events.iter().map(event_code).collect();
    assert_eq!(codes.first(), Some(&"tls_loaded"), "{codes:?}");
    let only = codes.iter().all(|c| allowed.contains(c));
    assert!(only, "{codes:?}, not only {allowed:?}\n{events:#?}");
    if allowed.contains(&"tls_reloaded") {
        assert_eq!(with_code(events, "tls_reloaded").count(), 1, "{codes:?}");
    }
}

/// The effective uid of process `pid` (`self` for this one): the second
/// field of the `Uid:` line of `/proc/<pid>/status`.
fn effective_uid(pid: &str) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    let uid = ids.and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok());
    uid.unwrap_or_else(|| panic!("no Uid line in /proc/{pid}/status:\n{status}"))
}
