//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Which input a file is, so that errors say "private key /etc/tls/tls.key"
/// rather than only a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileRole {
    /// The certificate chain PEM (leaf first).
    Certificate,
    /// The private key PEM of the leaf.
    PrivateKey,
    /// The bundle of CA certificates that client certificates must chain to.
    ClientCa,
    /// A certificate revocation list PEM.
    Crl,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate",
            Self::PrivateKey => "private key",
            Self::ClientCa => "client CA bundle",
            Self::Crl => "CRL",
        })
    }
}

/// Everything that can go wrong while loading, swapping or watching TLS
/// material.
///
/// Each variant names the file it concerns first and the cause second, so
/// that its `Display` is a complete one-line diagnosis such as
/// `reading private key /etc/tls/tls.key: Permission denied (os error 13)`.
/// Nothing in an error ever contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("reading {role} {}: {error}", path.display())]
    Read {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },

    /// The path names something other than a regular file (a directory, a
    /// FIFO, a socket, a device). FIFOs are refused without being read, so
    /// one can never block a reload.
    #[error("{role} {} is a {kind}, not a regular file", path.display())]
    NotAFile {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// What was found instead, such as `directory` or `FIFO`.
        kind: &'static str,
    },

    /// The file is larger than the configured cap.
    #[error("{role} {} is larger than the {limit}-byte limit", path.display())]
    TooLarge {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// The cap in bytes.
        limit: u64,
    },

    /// The file is empty.
    #[error("{role} {} is empty", path.display())]
    Empty {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
    },

    /// The file is not well-formed PEM (a section without its END line, bad
    /// base64).
    #[error("{role} {}: malformed PEM: {detail}", path.display())]
    MalformedPem {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// What the PEM decoder reported.
        detail: String,
    },

    /// The file holds no PEM item of the kind expected.
    #[error("{role} {}: no {expected} PEM block found", path.display())]
    NoPemItem {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// The PEM label that was expected, such as `CERTIFICATE`.
        expected: &'static str,
    },

    /// The key file holds more than one private key, so which one to serve
    /// would be a guess.
    #[error("private key {}: {count} private keys found, expected exactly one", path.display())]
    MultipleKeys {
        /// The path as configured.
        path: PathBuf,
        /// How many keys were found.
        count: usize,
    },

    /// The private key is of a type or form the ring provider cannot sign
    /// with (encrypted PKCS#8, DSA, an unsupported curve, ...).
    #[error("private key {}: unsupported key: {detail}", path.display())]
    UnsupportedKey {
        /// The path as configured.
        path: PathBuf,
        /// Why it is unsupported.
        detail: String,
    },

    /// A certificate could not be parsed as X.509.
    #[error("{role} {}: certificate #{index} is not valid X.509: {detail}", path.display())]
    InvalidCertificate {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// What the parser reported.
        detail: String,
    },

    /// The private key does not belong to the leaf certificate. Such a pair
    /// is never served.
    #[error("private key {} does not match the certificate {}", key_path.display(), cert_path.display())]
    KeyMismatch {
        /// The certificate path.
        cert_path: PathBuf,
        /// The key path.
        key_path: PathBuf,
    },

    /// The replacement leaf has already expired while the served one is
    /// still valid.
    #[error(
        "certificate {} expired at {}; keeping the served certificate",
        path.display(),
        crate::info::format_rfc3339(*not_after)
    )]
    Expired {
        /// The certificate path.
        path: PathBuf,
        /// The leaf's notAfter.
        not_after: SystemTime,
    },

    /// The replacement leaf only becomes valid further in the future than
    /// the tolerated clock skew.
    #[error(
        "certificate {} is not valid before {} (more than {} from now); keeping the served certificate",
        path.display(),
        crate::info::format_rfc3339(*not_before),
        humantime::format_duration(*tolerance)
    )]
    NotYetValid {
        /// The certificate path.
        path: PathBuf,
        /// The leaf's notBefore.
        not_before: SystemTime,
        /// The tolerated skew.
        tolerance: Duration,
    },

    /// The files were replaced during every read for as long as a read is
    /// retried, so no consistent set of them could be read. Kubelet swaps
    /// a volume in one rename; files that keep changing for seconds point
    /// at something else rewriting them.
    #[error(
        "{} kept changing while being read for {}; no consistent set could be read",
        DisplayPaths(paths),
        humantime::format_duration(*waited)
    )]
    KeptChanging {
        /// Every input path, as configured.
        paths: Vec<PathBuf>,
        /// How long reading was retried.
        waited: Duration,
    },

    /// Reading the files did not finish within the read timeout: the file
    /// system is hung or very slow (a network or FUSE mount). The served
    /// config is kept; the read goes on in the background, and until it
    /// returns further reloads fail at once with `still_waiting`.
    #[error(
        "reading the TLS files in {} did not finish within {}{}",
        dir.display(),
        humantime::format_duration(*timeout),
        if *still_waiting { " (an earlier read is still waiting for the file system)" } else { "" }
    )]
    ReadTimedOut {
        /// The directory of the certificate.
        dir: PathBuf,
        /// The read timeout.
        timeout: Duration,
        /// Whether this reload did not even start because an earlier read
        /// has not returned.
        still_waiting: bool,
    },

    /// The client CA bundle or CRLs could not be turned into a client
    /// certificate verifier.
    #[error("client certificate verifier from {}: {detail}", path.display())]
    ClientVerifier {
        /// The client CA bundle path.
        path: PathBuf,
        /// What rustls reported.
        detail: String,
    },

    /// The settings contradict each other (for example client
    /// authentication without a client CA).
    #[error("invalid TLS settings: {0}")]
    Settings(String),

    /// rustls refused to build the server configuration.
    #[error("building the TLS server config: {0}")]
    Rustls(#[from] rustls::Error),

    /// The blocking task that reads the files was cancelled or panicked.
    #[error("the reload task did not complete: {0}")]
    Task(String),
}

impl Error {
    /// The file this error is about, when it is about one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Read { path, .. }
            | Self::NotAFile { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Empty { path, .. }
            | Self::MalformedPem { path, .. }
            | Self::NoPemItem { path, .. }
            | Self::MultipleKeys { path, .. }
            | Self::UnsupportedKey { path, .. }
            | Self::InvalidCertificate { path, .. }
            | Self::Expired { path, .. }
            | Self::NotYetValid { path, .. }
            | Self::ClientVerifier { path, .. } => Some(path),
            Self::KeyMismatch { key_path, .. } => Some(key_path),
            Self::KeptChanging { paths, .. } => paths.first().map(PathBuf::as_path),
            Self::ReadTimedOut { dir, .. } => Some(dir),
            Self::Settings(_) | Self::Rustls(_) | Self::Task(_) => None,
        }
    }
}

/// Paths joined with `, ` for an error message.
struct DisplayPaths<'a>(&'a [PathBuf]);

impl fmt::Display for DisplayPaths<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, path) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", path.display())?;
        }
        Ok(())
    }
}
