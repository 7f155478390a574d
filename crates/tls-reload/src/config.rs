//! What to load and how to watch it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::error::SettingsError;

/// Whether and how clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificate is requested.
    #[default]
    None,
    /// A client certificate is requested and verified when presented;
    /// clients without one are still accepted.
    Optional,
    /// Every client must present a certificate that chains to the client CA.
    Required,
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        })
    }
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!(
                "unknown client auth mode {other:?}, expected none, optional or required"
            )),
        }
    }
}

/// The files that make up a TLS server identity and its client trust.
///
/// Paths are kept as given: relative paths resolve against the working
/// directory at each reload. In Kubernetes, point them at the user-visible
/// names in the mounted Secret directory (`/etc/tls/tls.crt`), never at the
/// `..data` or timestamped directories, which kubelet replaces.
///
/// # Example
///
/// ```
/// use tls_reload::{ClientAuth, TlsFiles};
///
/// let files = TlsFiles::new("/etc/tls/tls.crt", "/etc/tls/tls.key")
///     .client_ca("/etc/client-ca/ca.crt", ClientAuth::Required)
///     .crl("/etc/client-ca/ca.crl");
/// assert_eq!(files.client_auth(), ClientAuth::Required);
/// assert_eq!(files.paths().count(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) crls: Vec<PathBuf>,
}

impl TlsFiles {
    /// A certificate chain (leaf first) and its private key, both PEM.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_auth: ClientAuth::None,
            crls: Vec::new(),
        }
    }

    /// Verify client certificates against the CA bundle at `path`, in the
    /// given mode.
    ///
    /// Default: no client authentication.
    pub fn client_ca(mut self, path: impl Into<PathBuf>, mode: ClientAuth) -> Self {
        self.client_ca = Some(path.into());
        self.client_auth = mode;
        self
    }

    /// Also check client certificates against the CRL(s) in the PEM file at
    /// `path`. May be called more than once. Requires a client CA.
    ///
    /// Default: no CRLs.
    pub fn crl(mut self, path: impl Into<PathBuf>) -> Self {
        self.crls.push(path.into());
        self
    }

    /// The certificate chain path.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The private key path.
    pub fn key_path(&self) -> &Path {
        &self.key
    }

    /// The client CA bundle path, if any.
    pub fn client_ca_path(&self) -> Option<&Path> {
        self.client_ca.as_deref()
    }

    /// The client authentication mode.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The CRL paths.
    pub fn crl_paths(&self) -> &[PathBuf] {
        &self.crls
    }

    /// Every configured path, in the order certificate, key, client CA, CRLs.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            Some(self.cert.as_path()),
            Some(self.key.as_path()),
            self.client_ca.as_deref(),
        ]
        .into_iter()
        .flatten()
        .chain(self.crls.iter().map(PathBuf::as_path))
    }

    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        let problem = match (self.client_auth, &self.client_ca) {
            (ClientAuth::None, Some(ca)) => SettingsError::ClientCaWithoutAuth(ca.clone()),
            (ClientAuth::Optional | ClientAuth::Required, None) => {
                SettingsError::AuthWithoutClientCa(self.client_auth)
            }
            _ if !self.crls.is_empty() && self.client_ca.is_none() => {
                SettingsError::CrlsWithoutClientCa
            }
            _ => return Ok(()),
        };
        Err(crate::Error::Settings(problem))
    }
}

/// The files of a TLS client: the trust bundle servers are verified
/// against and, for mutual TLS, the client's own certificate and key.
///
/// As with [`TlsFiles`], paths are kept as given; in Kubernetes point them
/// at the user-visible names in the mounted Secret directories.
///
/// # Example
///
/// ```
/// use tls_reload::ClientFiles;
///
/// let files = ClientFiles::new("/etc/gateway-ca/ca.crt")
///     .ca("/etc/extra-ca/ca.crt")
///     .identity("/etc/client-tls/tls.crt", "/etc/client-tls/tls.key");
/// assert_eq!(files.paths().count(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientFiles {
    pub(crate) cas: Vec<PathBuf>,
    pub(crate) identity: Option<(PathBuf, PathBuf)>,
}

impl ClientFiles {
    /// A trust bundle: a PEM file of one or more CA certificates that
    /// servers must chain to. No client certificate.
    pub fn new(ca_bundle: impl Into<PathBuf>) -> Self {
        Self {
            cas: vec![ca_bundle.into()],
            identity: None,
        }
    }

    /// Also trusts the CA certificates in `another_bundle` (a server is
    /// accepted when it chains to any CA of any bundle). May be called more
    /// than once.
    pub fn ca(mut self, another_bundle: impl Into<PathBuf>) -> Self {
        self.cas.push(another_bundle.into());
        self
    }

    /// Presents this certificate chain (leaf first) and private key, both
    /// PEM, to servers that ask for one (mutual TLS).
    ///
    /// Default: no client certificate.
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// The trust bundle paths.
    pub fn ca_paths(&self) -> &[PathBuf] {
        &self.cas
    }

    /// The client certificate and key paths, if any.
    pub fn identity_paths(&self) -> Option<(&Path, &Path)> {
        self.identity
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()))
    }

    /// Every configured path: the trust bundles, then the certificate and
    /// the key.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.cas.iter().map(PathBuf::as_path).chain(
            self.identity
                .iter()
                .flat_map(|(cert, key)| [cert.as_path(), key.as_path()]),
        )
    }
}

/// How files are loaded into a rustls config.
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    pub(crate) alpn: Vec<Vec<u8>>,
    pub(crate) max_file_size: u64,
    pub(crate) not_before_tolerance: Duration,
    pub(crate) session_cache_size: usize,
    /// How long one reload may wait for the file system.
    pub(crate) read_timeout: Duration,
    /// Makes every read of the files wait this long first, as a hung mount
    /// would, so tests can exercise the bound.
    pub(crate) read_delay: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            alpn: Vec::new(),
            max_file_size: 1024 * 1024,
            not_before_tolerance: Duration::from_secs(5 * 60),
            session_cache_size: 1024,
            read_timeout: Duration::from_secs(10),
            read_delay: Duration::ZERO,
        }
    }
}

/// How the watcher notices changes.
#[derive(Debug, Clone)]
pub(crate) struct WatchOptions {
    pub(crate) debounce: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) retry_initial: Duration,
    pub(crate) poll_only: bool,
    /// Makes the event watcher fail to start, as it does when the inotify
    /// limits are exhausted, so tests can exercise the fallback.
    pub(crate) fail_event_watcher: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            poll_interval: Duration::from_secs(30),
            retry_initial: Duration::from_millis(250),
            poll_only: false,
            fail_event_watcher: false,
        }
    }
}
