//! A replay of how kubelet updates a mounted Secret or ConfigMap volume.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Writes a directory exactly as kubelet's `AtomicWriter` does, so that
/// tests see the same file-system events as a real pod.
///
/// Each [`write`](Self::write):
///
/// 1. creates `D/..<UTC timestamp>.<random>`;
/// 2. writes every file into it and sets its mode (events: CREATE, ATTRIB
///    on the timestamped directory, invisible to a watch on `D`);
/// 3. creates the symlink `D/..data_tmp -> ..<timestamp>` (CREATE);
/// 4. renames `..data_tmp` over `..data` (MOVED_FROM, MOVED_TO): the atomic
///    switch;
/// 5. creates the user-visible `D/<name> -> ..data/<name>` symlinks that do
///    not exist yet (CREATE, first write only; they are never rewritten) and
///    removes those of files no longer present;
/// 6. removes the previous timestamped directory (DELETE).
///
/// The user-visible files never receive a MODIFY event.
///
/// # Example
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let tmp = tempfile::tempdir()?;
/// use std::fs;
/// use tls_reload::testing::AtomicWriter;
///
/// let volume = AtomicWriter::new(tmp.path().join("tls"))?;
/// volume.write(&[("tls.crt", b"one"), ("extra", b"x")])?;
/// assert_eq!(fs::read_link(volume.path("tls.crt"))?, std::path::Path::new("..data/tls.crt"));
/// volume.write(&[("tls.crt", b"two")])?;
/// assert_eq!(fs::read(volume.path("tls.crt"))?, b"two");
/// // Named as kubelet names them: `..2026_11_28_23_49_41.1234567890`.
/// let payload = fs::read_link(volume.path("..data"))?.to_string_lossy().into_owned();
/// assert!(payload.starts_with("..20") && payload.len() == 32, "{payload}");
/// // Left: `..data`, the one timestamped payload it names, and `tls.crt`.
/// assert_eq!(fs::read_dir(volume.dir())?.count(), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    dir: PathBuf,
}

impl AtomicWriter {
    /// A writer for the volume directory `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The user-visible path of `name` (`D/name`), the one a server is
    /// configured with.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Publishes a new payload: after this returns, `D/<name>` resolves to
    /// the given contents for every file, and files not in `files` are gone.
    pub fn write(&self, files: &[(&str, &[u8])]) -> io::Result<()> {
        let old_ts = fs::read_link(self.dir.join(DATA)).ok();
        let old_names: Vec<String> = match &old_ts {
            Some(ts) => fs::read_dir(self.dir.join(ts))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            None => Vec::new(),
        };

        let ts_name = timestamp_dir_name();
        let ts_dir = self.dir.join(&ts_name);
        fs::create_dir(&ts_dir)?;
        for (name, contents) in files {
            let path = ts_dir.join(name);
            fs::write(&path, contents)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        }
        fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o755))?;

        let tmp = self.dir.join(DATA_TMP);
        let _ = fs::remove_file(&tmp);
        symlink(&ts_name, &tmp)?;
        fs::rename(&tmp, self.dir.join(DATA))?;

        for (name, _) in files {
            let visible = self.dir.join(name);
            if fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new(DATA).join(name), &visible)?;
            }
        }
        for name in old_names {
            if !files.iter().any(|(n, _)| *n == name) {
                let _ = fs::remove_file(self.dir.join(&name));
            }
        }
        if let Some(old) = old_ts {
            fs::remove_dir_all(self.dir.join(old))?;
        }
        Ok(())
    }
}

/// `..2026_11_28_23_49_41.1234567890`, as kubelet names them
/// (`os.MkdirTemp` with a UTC timestamp prefix).
fn timestamp_dir_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_nanos(now).to_string();
    // 2026-11-28T23:49:41.123456789Z -> 2026_11_28_23_49_41
    let secs: String = stamp
        .chars()
        .take(19)
        .map(|c| if c.is_ascii_digit() { c } else { '_' })
        .collect();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "..{secs}.{:010}",
        (u64::from(nanos) ^ (n << 32) ^ u64::from(std::process::id())) % 10_000_000_000
    )
}
