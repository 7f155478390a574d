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
    /// A bundle of CA certificates that a client verifies servers against.
    TrustBundle,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate",
            Self::PrivateKey => "private key",
            Self::ClientCa => "client CA bundle",
            Self::Crl => "CRL",
            Self::TrustBundle => "trust bundle",
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
        /// What was found instead.
        kind: FileKind,
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
    #[error("{role} {}: malformed PEM: {cause}", path.display())]
    MalformedPem {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// What is wrong with it.
        cause: PemError,
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
    #[error("private key {}: unsupported key: {cause}", path.display())]
    UnsupportedKey {
        /// The path as configured.
        path: PathBuf,
        /// Why it is unsupported.
        cause: KeyError,
    },

    /// A certificate could not be parsed as X.509.
    #[error("{role} {}: certificate #{index} is not valid X.509: {cause}", path.display())]
    InvalidCertificate {
        /// Which input this is.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// Position of the certificate (or CRL) in the file, from 0.
        index: usize,
        /// What is wrong with it.
        cause: CertError,
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

    /// A certificate does not cover a server name its identity is
    /// configured for: no SAN DNS name equals it, nor (for a plain name) a
    /// SAN wildcard of its parent domain.
    #[error(
        "certificate {} of identity {identity} does not cover the configured name {name} (its DNS names: {})",
        path.display(),
        if dns_names.is_empty() { "none".to_owned() } else { dns_names.join(", ") }
    )]
    NameNotCovered {
        /// The identity's label.
        identity: String,
        /// The configured name that is not covered.
        name: String,
        /// The certificate path.
        path: PathBuf,
        /// The certificate's SAN DNS names.
        dns_names: Vec<String>,
    },

    /// The client CA bundle or CRLs could not be turned into a client
    /// certificate verifier.
    #[error("client certificate verifier from {}: {cause}", path.display())]
    ClientVerifier {
        /// The client CA bundle path.
        path: PathBuf,
        /// What rustls reported.
        cause: rustls::server::VerifierBuilderError,
    },

    /// The trust bundles could not be turned into a server certificate
    /// verifier (a client's).
    #[error("server certificate verifier from {}: {cause}", path.display())]
    ServerVerifier {
        /// The first trust bundle path.
        path: PathBuf,
        /// What rustls reported.
        cause: rustls::client::VerifierBuilderError,
    },

    /// The settings contradict each other (for example client
    /// authentication without a client CA).
    #[error("invalid TLS settings: {0}")]
    Settings(SettingsError),

    /// rustls refused to build the server or client configuration.
    #[error("building the TLS config: {0}")]
    Rustls(#[from] rustls::Error),

    /// The blocking task that reads the files was cancelled or panicked.
    #[error("the reload task did not complete: {0}")]
    Task(tokio::task::JoinError),
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
            | Self::NameNotCovered { path, .. }
            | Self::ClientVerifier { path, .. }
            | Self::ServerVerifier { path, .. } => Some(path),
            Self::KeyMismatch { key_path, .. } => Some(key_path),
            Self::KeptChanging { paths, .. } => paths.first().map(PathBuf::as_path),
            Self::ReadTimedOut { dir, .. } => Some(dir),
            Self::Settings(_) | Self::Rustls(_) | Self::Task(_) => None,
        }
    }
}

/// What a path named instead of a regular file ([`Error::NotAFile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A named pipe; never opened for a blocking read.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A block or character device.
    Device,
    /// Anything else that is not a regular file.
    Other,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Directory => "directory",
            Self::Fifo => "FIFO",
            Self::Socket => "socket",
            Self::Device => "device",
            Self::Other => "special file",
        })
    }
}

/// Why a file is not well-formed PEM ([`Error::MalformedPem`]).
///
/// Labels are quoted from the file: at most 64 bytes, control characters
/// escaped, and never what follows a label on its line (it may be key
/// material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// A section has no END line (a truncated file?).
    #[error("missing the -----END {label}----- line (truncated file?)")]
    MissingEnd {
        /// The label of the section, such as `CERTIFICATE`.
        label: String,
    },
    /// A BEGIN line has text after its closing dashes (a lost line break?).
    #[error(
        "the BEGIN line of a {label} section has text after its closing dashes (a lost line break?)"
    )]
    TextAfterBegin {
        /// The label of the section.
        label: String,
    },
    /// A BEGIN line's label is followed by something other than five
    /// dashes and the end of the line.
    #[error(
        "the BEGIN line of a {label} section must end with five dashes and nothing after them (a lost line break?)"
    )]
    BeginNotClosed {
        /// The label of the section.
        label: String,
    },
    /// A BEGIN line without the dashes that close its label.
    #[error("a BEGIN line without its closing dashes")]
    BeginWithoutDashes,
    /// The body of a section is not valid base64.
    #[error("invalid base64 in a PEM section")]
    Base64,
    /// The file is binary DER, a common mistake for PEM.
    #[error("binary (DER) data; expected PEM with a {expected} block")]
    Der {
        /// The PEM label that was expected, such as `CERTIFICATE`.
        expected: &'static str,
    },
    /// Anything else the PEM decoder reported.
    #[error("{0}")]
    Other(String),
}

/// Why a private key cannot be used ([`Error::UnsupportedKey`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An encrypted PKCS#8 key: the gateway has no passphrase.
    #[error("encrypted PKCS#8 keys are not supported; decrypt it (openssl pkcs8 -nocrypt)")]
    Encrypted,
    /// A DSA key.
    #[error("DSA keys are not supported; use ECDSA, Ed25519 or RSA")]
    Dsa,
    /// A key in OpenSSH's own format.
    #[error("OpenSSH-format keys are not supported; use PKCS#8 PEM")]
    OpenSsh,
    /// The ring provider cannot sign with it (an unsupported curve or
    /// algorithm, a malformed encoding).
    #[error("{0}")]
    Rejected(rustls::Error),
}

/// Why a certificate or CRL was refused ([`Error::InvalidCertificate`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// It is not one well-formed X.509 certificate.
    #[error("{0}")]
    Malformed(crate::CertParseError),
    /// It parses, but rustls cannot use it as a trust anchor.
    #[error("{0}")]
    Unusable(rustls::Error),
    /// A CRL that does not parse; the parser's message.
    #[error("invalid CRL: {0}")]
    MalformedCrl(String),
    /// A CRL that parses but that the client verifier refuses (trailing
    /// data, no CRL number, a mismatched signature algorithm).
    #[error("invalid CRL: {0}")]
    RejectedCrl(rustls::server::VerifierBuilderError),
}

/// How the configured settings contradict each other ([`Error::Settings`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A client CA was given with client authentication turned off.
    #[error("client CA {} given with client auth mode none; use optional or required", .0.display())]
    ClientCaWithoutAuth(PathBuf),
    /// Client authentication was asked for without a client CA.
    #[error("client auth mode {0} needs a client CA bundle")]
    AuthWithoutClientCa(crate::ClientAuth),
    /// CRLs were given without a client CA.
    #[error("CRLs need a client CA bundle: they only apply to client certificates")]
    CrlsWithoutClientCa,
    /// An SNI identity was given without server names.
    #[error("an SNI identity needs at least one server name")]
    NoServerNames,
    /// A configured server name is not a DNS name, or has a wildcard
    /// anywhere but as the whole leftmost label.
    #[error("server name {name:?} of identity {identity}: {reason}")]
    InvalidServerName {
        /// The identity's label.
        identity: String,
        /// The name as configured.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two SNI identities claim the same server name.
    #[error("server name {name:?} is configured for both identity {first} and identity {second}")]
    DuplicateServerName {
        /// The name as configured the second time.
        name: String,
        /// The identity that claimed it first.
        first: String,
        /// The identity that claimed it again.
        second: String,
    },
    /// An SNI identity's files carry a client CA or CRLs: client trust is
    /// set once, on the default identity's files.
    #[error("identity {identity}: client CA and CRLs belong to the default identity's files")]
    SniClientTrust {
        /// The identity's label.
        identity: String,
    },
    /// The watcher was started outside a tokio runtime.
    #[error("the watcher needs a tokio runtime: call start() inside one")]
    NoRuntime,
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
