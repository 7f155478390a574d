//! `--dev`: development certificates generated once into a state directory,
//! so the gateway starts with TLS and mTLS on and nothing to set up.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// The files `--dev` serves with.
#[derive(Debug, Clone)]
pub(crate) struct DevFiles {
    /// The development CA certificate (trust it in clients).
    pub ca_cert: PathBuf,
    /// Server certificate for localhost, 127.0.0.1 and ::1.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate issued by the CA, for mTLS calls.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl DevFiles {
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("tls.crt"),
            server_key: dir.join("tls.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }

    fn is_key(&self, path: &Path) -> bool {
        path == self.server_key || path == self.client_key
    }

    fn all(&self) -> [&Path; 5] {
        [
            &self.ca_cert,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
        ]
    }
}

/// `$XDG_STATE_HOME/openshell/dev`, else `~/.local/state/openshell/dev`.
///
/// # Errors
///
/// When neither `XDG_STATE_HOME` nor `HOME` is set.
pub(crate) fn default_state_dir() -> Result<PathBuf> {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(state).join("openshell/dev"));
    }
    match std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/openshell/dev")),
        None => Err(Error::Dev(
            "neither XDG_STATE_HOME nor HOME is set; pass --state-dir".into(),
        )),
    }
}

/// Returns the dev files in `dir`, generating them all when any is missing
/// (a partial set cannot be trusted to match).
///
/// `dir` is created with mode 0700. An existing `dir` must be owned by this
/// user; if group or others can reach it, its mode is set to 0700 with a
/// warning. Reused files must be regular files (not symbolic links) owned by
/// this user, and a key that group or others can access is set to 0600 with
/// a warning. Each file is written to a new temporary file in `dir` and
/// renamed into place, so a gateway never reads half a file and a link at
/// the final name is replaced, not written through.
///
/// # Errors
///
/// When the directory or files cannot be created, `dir` or a reused file is
/// someone else's, a reused file is not a regular file, or generation fails.
pub(crate) fn ensure_files(dir: &Path) -> Result<DevFiles> {
    let me = current_uid()?;
    let dir_handle = open_state_dir(dir, me)?;
    let files = DevFiles::in_dir(dir);
    if files.all().iter().all(|p| exists(p)) {
        for path in files.all() {
            check_reused(path, me, files.is_key(path))?;
        }
        tracing::info!(dir = %dir.display(), "dev mode: reusing certificates");
        return Ok(files);
    }
    let pems = generate()
        .map_err(|e| Error::Dev(format!("generating certificates in {}: {e}", dir.display())))?;
    for (path, pem, mode) in [
        (&files.ca_cert, &pems.ca_cert, CERT_MODE),
        (&files.server_cert, &pems.server_cert, CERT_MODE),
        (&files.server_key, &pems.server_key, KEY_MODE),
        (&files.client_cert, &pems.client_cert, CERT_MODE),
        (&files.client_key, &pems.client_key, KEY_MODE),
    ] {
        write(dir, path, pem.as_bytes(), mode)?;
    }
    // Best effort: makes the renames durable. The files are synced already,
    // and a lost rename only means one more generation on the next start.
    let _ = dir_handle.sync_all();
    tracing::info!(dir = %dir.display(), "dev mode: generated a CA, a server and a client certificate");
    Ok(files)
}

/// The state directory's mode.
const DIR_MODE: u32 = 0o700;
/// The keys' mode.
const KEY_MODE: u32 = 0o600;
/// The certificates' mode.
const CERT_MODE: u32 = 0o644;
/// The mode bits for group and others.
const GROUP_OTHER: u32 = 0o077;

/// The uid that owns the files this process creates (the file-system uid,
/// which is the effective uid unless changed on purpose).
fn current_uid() -> Result<u32> {
    let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        // "Uid:" real, effective, saved set, file system.
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(3))
            .and_then(|fs_uid| fs_uid.parse().ok())
    });
    if let Some(uid) = from_proc {
        return Ok(uid);
    }
    // No procfs: the owner of a file created for the purpose.
    tempfile::tempfile()
        .and_then(|f| f.metadata())
        .map(|m| m.uid())
        .map_err(|e| Error::Dev(format!("finding this process's uid (temporary file): {e}")))
}

/// Creates `dir` (mode 0700) if needed and returns it open, once it is
/// known to be this user's and closed to group and others.
fn open_state_dir(dir: &Path, me: u32) -> Result<fs::File> {
    let shown = dir.display();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::Dev(format!("creating state dir {shown}: {e}")))?;
    // Checked and repaired through a handle, so the directory checked is
    // the one repaired even if the path changes meanwhile.
    let handle =
        fs::File::open(dir).map_err(|e| Error::Dev(format!("opening state dir {shown}: {e}")))?;
    let meta = handle
        .metadata()
        .map_err(|e| Error::Dev(format!("reading state dir {shown}: {e}")))?;
    if !meta.is_dir() {
        return Err(Error::Dev(format!("state dir {shown} is not a directory")));
    }
    if meta.uid() != me {
        return Err(Error::Dev(format!(
            "state dir {shown} is owned by uid {}, not by this user (uid {me}); \
             choose another --state-dir",
            meta.uid()
        )));
    }
    let old = meta.mode() & 0o7777;
    if old & GROUP_OTHER != 0 {
        handle
            .set_permissions(fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| {
                Error::Dev(format!(
                    "setting state dir {shown} (mode {old:04o}) to 0700: {e}"
                ))
            })?;
        tracing::warn!(
            dir = %shown,
            old_mode = %format!("{old:04o}"),
            "dev mode: the state dir was open to group or others; set its mode to 0700"
        );
    }
    Ok(handle)
}

/// Whether something (anything, a dangling link included) is at `path`.
fn exists(path: &Path) -> bool {
    !matches!(fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Checks a file about to be reused: a regular file, not a link, owned by
/// `me`; a key is also set to 0600 if group or others can access it.
fn check_reused(path: &Path, me: u32, key: bool) -> Result<()> {
    let shown = path.display();
    // No following links, and no waiting for a writer on a FIFO.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::Dev(format!(
                "{shown} is a symbolic link; remove it to have the dev files generated again"
            )),
            _ => Error::Dev(format!("opening {shown}: {e}")),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::Dev(format!("reading {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::Dev(format!(
            "{shown} is not a regular file; remove it to have the dev files generated again"
        )));
    }
    if meta.uid() != me {
        return Err(Error::Dev(format!(
            "{shown} is owned by uid {}, not by this user (uid {me}); \
             remove it to have the dev files generated again",
            meta.uid()
        )));
    }
    let old = meta.mode() & 0o7777;
    if key && old & GROUP_OTHER != 0 {
        file.set_permissions(fs::Permissions::from_mode(KEY_MODE))
            .map_err(|e| Error::Dev(format!("setting {shown} (mode {old:04o}) to 0600: {e}")))?;
        tracing::warn!(
            path = %shown,
            old_mode = %format!("{old:04o}"),
            "dev mode: a key was accessible to group or others; set its mode to 0600"
        );
    }
    Ok(())
}

/// The generated PEM files.
struct Pems {
    ca_cert: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn generate() -> std::result::Result<Pems, rcgen::Error> {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "OpenShell dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = (now - day).into();
    ca_params.not_after = (now + 3650 * day).into();
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = (now - day).into();
        params.not_after = (now + 365 * day).into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_cert, client_key) = leaf(
        vec!["openshell-dev-client".into()],
        "openshell-dev-client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Pems {
        ca_cert: ca_cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}

/// Writes `path` through a new temporary file in `dir` (created
/// exclusively, with a unique name and mode 0600) and a rename, so a
/// running gateway never reads half a file, and whatever is at `path` (a
/// symbolic link, say) is replaced, never written through.
fn write(dir: &Path, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let fail = |e: std::io::Error| Error::Dev(format!("writing {}: {e}", path.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(contents).map_err(fail)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Prints [`banner`] on stdout: the one thing `--dev` says to a person.
#[allow(clippy::print_stdout)]
pub(crate) fn print_banner(state_dir: &Path, addr: std::net::SocketAddr) {
    println!("{}", banner(state_dir, addr));
}

/// The lines `--dev` prints once the gateway listens.
pub(crate) fn banner(state_dir: &Path, addr: std::net::SocketAddr) -> String {
    let f = DevFiles::in_dir(state_dir);
    let port = addr.port();
    let (ca, cert, key) = (
        f.ca_cert.display(),
        f.client_cert.display(),
        f.client_key.display(),
    );
    format!(
        "\nOpenShell gateway (dev mode) on https://localhost:{port}\n\
         certificates in {dir} (reused on the next start)\n\n\
         HTTP:\n  curl --cacert {ca} https://localhost:{port}/healthz\n  \
         curl --cacert {ca} https://localhost:{port}/v1/tls\n  \
         curl --cacert {ca} https://localhost:{port}/metrics\n\
         gRPC:\n  grpcurl -cacert {ca} localhost:{port} list\n  \
         grpcurl -cacert {ca} localhost:{port} openshell.gateway.v1.Gateway/GetTlsStatus\n  \
         grpcurl -cacert {ca} -cert {cert} -key {key} localhost:{port} openshell.gateway.v1.Gateway/ReloadTls\n\
         Rotate: replace {dir}/tls.crt and tls.key; the gateway reloads them (or send SIGHUP).\n",
        dir = state_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_files(dir.path()).unwrap();
        let cert = fs::read(&first.server_cert).unwrap();
        let mode = fs::metadata(&first.server_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = ensure_files(dir.path()).unwrap();
        assert_eq!(
            fs::read(&second.server_cert).unwrap(),
            cert,
            "reused, not regenerated"
        );
    }

    #[test]
    fn a_partial_set_is_regenerated_whole() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_files(dir.path()).unwrap();
        let cert = fs::read(&first.server_cert).unwrap();
        fs::remove_file(&first.client_key).unwrap();
        let second = ensure_files(dir.path()).unwrap();
        assert!(second.client_key.is_file());
        assert_ne!(fs::read(&second.server_cert).unwrap(), cert);
    }

    // === hardening: the state directory, key modes, how files are written ===

    use std::os::unix::fs::symlink;
    use std::sync::{Arc, Mutex};

    /// The mode of `path` (not following a link), in octal.
    fn mode_of(path: &Path) -> String {
        let mode = fs::symlink_metadata(path).unwrap().permissions().mode();
        format!("{:04o}", mode & 0o7777)
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What `tracing` said at WARN and above while `f` ran, with `f`'s result.
    fn warnings_during<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let said = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (out, said)
    }

    /// A uid that is not this process's.
    fn another_uid() -> u32 {
        let me = fs::metadata(tempfile::tempdir().unwrap().path())
            .unwrap()
            .uid();
        if me == 65_534 { 65_533 } else { 65_534 }
    }

    #[test]
    fn a_new_state_dir_is_created_0700() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/openshell/dev");
        ensure_files(&dir).unwrap();
        assert_eq!(mode_of(&dir), "0700", "{}", dir.display());
    }

    #[test]
    fn a_permissive_state_dir_is_repaired_to_0700_with_a_warning() {
        for reuse in [false, true] {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("dev");
            if reuse {
                ensure_files(&dir).unwrap();
            } else {
                fs::create_dir(&dir).unwrap();
            }
            chmod(&dir, 0o777);
            let (files, said) = warnings_during(|| ensure_files(&dir));
            files.unwrap();
            assert_eq!(mode_of(&dir), "0700", "reuse: {reuse}");
            assert!(
                said.contains("WARN") && said.contains(&dir.display().to_string()),
                "no warning naming {}: {said:?}",
                dir.display()
            );
            assert!(said.contains("0777"), "old mode not named: {said:?}");
        }
    }

    #[test]
    fn a_state_dir_owned_by_someone_else_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("dev");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o777);
        let other = another_uid();
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(other), None) {
            // Not root: a directory this user cannot chown away is
            // still someone else's (`/`, normally root's).
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
            let slash = Path::new("/");
            let owner = fs::metadata(slash).unwrap().uid();
            let err = ensure_files(slash).unwrap_err().to_string();
            assert!(err.contains(&format!("uid {owner}")), "{err}");
            return;
        }
        let err = ensure_files(&dir).unwrap_err().to_string();
        assert!(!err.contains('\n'), "not one line: {err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains(&format!("uid {other}")), "{err}");
        assert_eq!(
            mode_of(&dir),
            "0777",
            "someone else's directory was changed"
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "files written");
    }

    #[test]
    fn permissive_keys_are_repaired_to_0600_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_files(dir.path()).unwrap();
        let key = fs::read(&first.server_key).unwrap();
        chmod(&first.server_key, 0o666);
        chmod(&first.client_key, 0o644);
        let (second, said) = warnings_during(|| ensure_files(dir.path()));
        let second = second.unwrap();
        assert_eq!(fs::read(&second.server_key).unwrap(), key, "regenerated");
        for (path, old) in [(&second.server_key, "0666"), (&second.client_key, "0644")] {
            assert_eq!(mode_of(path), "0600", "{}", path.display());
            assert!(
                said.lines()
                    .any(|l| l.contains(&path.display().to_string()) && l.contains(old)),
                "no warning naming {} and {old}: {said:?}",
                path.display()
            );
        }
        let (_, quiet) = warnings_during(|| ensure_files(dir.path()).unwrap());
        assert_eq!(quiet, "", "warned again once repaired");
    }

    #[test]
    fn symlinks_planted_at_the_old_temporary_names_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut victims = Vec::new();
        for name in ["ca.tmp", "tls.tmp", "client.tmp"] {
            let victim = outside.path().join(name);
            fs::write(&victim, "victim").unwrap();
            symlink(&victim, dir.path().join(name)).unwrap();
            victims.push(victim);
        }
        let files = ensure_files(dir.path()).unwrap();
        for victim in &victims {
            assert_eq!(
                fs::read_to_string(victim).unwrap(),
                "victim",
                "{}",
                victim.display()
            );
        }
        for path in files.all() {
            let meta = fs::symlink_metadata(path).unwrap();
            assert!(
                meta.file_type().is_file(),
                "{} is not a regular file",
                path.display()
            );
        }
        for cert in [&files.ca_cert, &files.server_cert, &files.client_cert] {
            assert_eq!(mode_of(cert), "0644", "{}", cert.display());
        }
        for key in [&files.server_key, &files.client_key] {
            assert_eq!(mode_of(key), "0600", "{}", key.display());
        }
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "ca.crt",
                "ca.tmp",
                "client.crt",
                "client.key",
                "client.tmp",
                "tls.crt",
                "tls.key",
                "tls.tmp"
            ],
            "temporary files left behind"
        );
    }

    #[test]
    fn a_symlink_at_a_final_name_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "victim").unwrap();
        chmod(&victim, 0o644);
        symlink(&victim, dir.path().join("tls.key")).unwrap();
        let files = ensure_files(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim");
        assert_eq!(mode_of(&victim), "0644");
        assert!(
            fs::symlink_metadata(&files.server_key)
                .unwrap()
                .file_type()
                .is_file()
        );
        assert_eq!(mode_of(&files.server_key), "0600");
    }

    #[test]
    fn a_complete_set_with_a_symlink_or_someone_elses_file_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_files(dir.path()).unwrap();
        let elsewhere = outside.path().join("tls.key");
        fs::rename(&files.server_key, &elsewhere).unwrap();
        chmod(&elsewhere, 0o644);
        symlink(&elsewhere, &files.server_key).unwrap();
        let err = ensure_files(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&files.server_key.display().to_string()),
            "{err}"
        );
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(mode_of(&elsewhere), "0644", "the link's target was changed");

        let dir = tempfile::tempdir().unwrap();
        let files = ensure_files(dir.path()).unwrap();
        let other = another_uid();
        if std::os::unix::fs::chown(&files.ca_cert, Some(other), None).is_ok() {
            let err = ensure_files(dir.path()).unwrap_err().to_string();
            assert!(err.contains(&files.ca_cert.display().to_string()), "{err}");
            assert!(err.contains(&format!("uid {other}")), "{err}");
        }
    }
}
