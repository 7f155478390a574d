//! `--dev` through the real `openshell-gateway` binary: how it treats a
//! state directory that is someone else's, or open to others, and keys
//! that others can read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::STARTUP;
use openshell_e2e::GatewayCommand;

/// `openshell-gateway --dev --state-dir <dir>` on an ephemeral loopback
/// port.
fn dev(dir: &Path) -> GatewayCommand {
    let cmd = GatewayCommand::new().args(["--dev", "--bind", "127.0.0.1:0", "--state-dir"]);
    cmd.arg(dir)
}

/// Starts `--dev` on `dir`, waits until it listens and returns what it had
/// logged by then (its certificate setup comes first); stops it.
async fn listen_then_stop(dir: &Path) -> String {
    let (gateway, _) = dev(dir).start(STARTUP).await.unwrap();
    gateway.stderr_lines().join("\n")
}

fn mode_of(path: &Path) -> String {
    format!("{:04o}", std::fs::metadata(path).unwrap().mode() & 0o7777)
}

#[tokio::test]
async fn a_state_dir_owned_by_someone_else_stops_startup_with_one_line_naming_it() {
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

    let mut gw = dev(&dir).spawn().unwrap();
    let status = gw.exit_within(STARTUP).await.unwrap();
    let status = status.unwrap_or_else(|| panic!("still running: {}", gw.output()));
    let stderr = gw.stderr_lines();
    assert!(!status.success(), "{status}\n{stderr:?}");
    let errors: Vec<&String> = stderr
        .iter()
        .filter(|l| l.starts_with("openshell-gateway:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr:?}");
    let line = errors[0];
    assert!(line.contains(&dir.display().to_string()), "{line}");
    assert!(line.contains(&format!("uid {owner}")), "{line}");
    if dir != Path::new("/") {
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "files written");
    }
}

#[tokio::test]
async fn a_permissive_state_dir_and_keys_are_repaired_and_each_warned_about() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dev");
    let first = listen_then_stop(&dir).await;
    assert!(first.contains("generated a CA"), "{first}");
    let key = std::fs::read(dir.join("tls.key")).unwrap();

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["tls.key", "client.key"] {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let second = listen_then_stop(&dir).await;
    assert!(second.contains("reusing certificates"), "{second}");
    let reused = std::fs::read(dir.join("tls.key")).unwrap();
    assert_eq!(reused, key, "regenerated");
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
        let named = |l: &&str| l.contains(&format!("\"{}\"", path.display())) && l.contains(old);
        let shown = path.display();
        assert!(
            warnings.iter().any(named),
            "no warning naming {shown} and {old}:\n{second}"
        );
    }
}
