//! `--dev`: development certificates generated once into a state directory,
//! so the gateway starts with TLS and mTLS on and nothing to set up.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// The files `--dev` serves with.
#[derive(Debug, Clone)]
pub struct DevFiles {
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
pub fn default_state_dir() -> Result<PathBuf> {
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
/// # Errors
///
/// When the directory or files cannot be created, or generation fails.
pub fn ensure_files(dir: &Path) -> Result<DevFiles> {
    let files = DevFiles::in_dir(dir);
    if files.all().iter().all(|p| p.is_file()) {
        tracing::info!(dir = %dir.display(), "dev mode: reusing certificates");
        return Ok(files);
    }
    fs::create_dir_all(dir)
        .map_err(|e| Error::Dev(format!("creating state dir {}: {e}", dir.display())))?;
    generate(&files)
        .map_err(|e| Error::Dev(format!("generating certificates in {}: {e}", dir.display())))?;
    tracing::info!(dir = %dir.display(), "dev mode: generated a CA, a server and a client certificate");
    Ok(files)
}

fn generate(files: &DevFiles) -> std::result::Result<(), Box<dyn std::error::Error>> {
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
    let (server_pem, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_pem, client_key) = leaf(
        vec!["openshell-dev-client".into()],
        "openshell-dev-client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    write(&files.ca_cert, ca_cert.pem().as_bytes(), 0o644)?;
    write(&files.server_cert, server_pem.as_bytes(), 0o644)?;
    write(&files.server_key, server_key.as_bytes(), 0o600)?;
    write(&files.client_cert, client_pem.as_bytes(), 0o644)?;
    write(&files.client_key, client_key.as_bytes(), 0o600)?;
    Ok(())
}

/// Writes through a temporary file and a rename, so a running gateway
/// never reads half a file.
fn write(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Prints [`banner`] on stdout: the one thing `--dev` says to a person.
#[allow(clippy::print_stdout)]
pub(crate) fn print_banner(state_dir: &Path, addr: std::net::SocketAddr) {
    println!("{}", banner(state_dir, addr));
}

/// The lines `--dev` prints once the gateway listens.
pub fn banner(state_dir: &Path, addr: std::net::SocketAddr) -> String {
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
        use std::os::unix::fs::PermissionsExt;
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
}
