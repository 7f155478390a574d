#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

//! `--dev` through the real `openshell-gateway` binary: how it treats a
//! state directory that is someone else's, or open to others, and keys
//! that others can read.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the gateway may take to start listening or to exit.
const WITHIN: Duration = Duration::from_secs(10);

/// A running `openshell-gateway --dev`, killed on drop.
struct Gateway {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Starts `openshell-gateway --dev --state-dir <dir>` on an ephemeral
    /// loopback port, with JSON logs and no `OPENSHELL_*` variable
    /// inherited.
    fn dev(dir: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openshell-gateway"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPENSHELL_") {
                cmd.env_remove(name);
            }
        }
        let args: [OsString; 7] = [
            "--dev".into(),
            "--state-dir".into(),
            dir.into(),
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--log-format".into(),
            "json".into(),
        ];
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openshell-gateway");
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::<Mutex<Vec<String>>>::default();
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits up to `within` for the exit; `None` if it is still running.
    fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the gateway (if it still runs) and returns all of its stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.stderr()
    }

    /// Waits for the `listening` log line, then stops the gateway and
    /// returns its stderr.
    fn listen_then_stop(mut self) -> String {
        let deadline = Instant::now() + WITHIN;
        while !self.stderr().contains(r#""message":"listening""#) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited ({status}) before listening:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "not listening:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode_of(path: &Path) -> String {
    format!("{:04o}", std::fs::metadata(path).unwrap().mode() & 0o7777)
}

#[test]
fn a_state_dir_owned_by_someone_else_stops_startup_with_one_line_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(root.path()).unwrap().uid();
    let other = if me == 65_534 { 65_533 } else { 65_534 };
    let mut dir = root.path().join("dev");
    std::fs::create_dir(&dir).unwrap();
    if std::os::unix::fs::chown(&dir, Some(other), None).is_err() {
        // Not root: `/` is someone else's (root's, normally).
        dir = "/".into();
    }
    let owner = std::fs::metadata(&dir).unwrap().uid();
    assert_ne!(owner, me, "no directory owned by someone else to test with");

    let mut gw = Gateway::dev(&dir);
    let status = gw.exit_within(WITHIN);
    let stderr = gw.stop();
    let status = status.unwrap_or_else(|| panic!("still running: {stderr}"));
    assert!(!status.success(), "{status}\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("openshell-gateway:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let line = errors[0];
    assert!(line.contains(&dir.display().to_string()), "{line}");
    assert!(line.contains(&format!("uid {owner}")), "{line}");
    if dir != Path::new("/") {
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "files written");
    }
}

#[test]
fn a_permissive_state_dir_and_keys_are_repaired_and_each_warned_about() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dev");
    let first = Gateway::dev(&dir).listen_then_stop();
    assert!(first.contains("generated a CA"), "{first}");
    let key = std::fs::read(dir.join("tls.key")).unwrap();

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["tls.key", "client.key"] {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let second = Gateway::dev(&dir).listen_then_stop();
    assert!(second.contains("reusing certificates"), "{second}");
    assert_eq!(
        std::fs::read(dir.join("tls.key")).unwrap(),
        key,
        "regenerated"
    );
    assert_eq!(mode_of(&dir), "0700");
    let warnings: Vec<&str> = second
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#))
        .collect();
    for path in [dir.clone(), dir.join("tls.key"), dir.join("client.key")] {
        if path != dir {
            assert_eq!(mode_of(&path), "0600", "{}", path.display());
        }
        let old = if path == dir { "0755" } else { "0644" };
        assert!(
            warnings
                .iter()
                .any(|l| l.contains(&format!("\"{}\"", path.display())) && l.contains(old)),
            "no warning naming {} and {old}:\n{second}",
            path.display()
        );
    }
}
