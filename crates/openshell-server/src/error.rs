//! The gateway's one error type.

use std::net::SocketAddr;

/// Why the gateway could not start or stopped with an error.
///
/// `Display` is one line that names the file, address or setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad command line, or `--help` or `--version` (the text to print;
    /// `clap::Error::exit` prints it and exits as clap would).
    #[error("{0}")]
    Args(#[from] clap::Error),

    /// Invalid or contradictory settings.
    #[error("configuration: {0}")]
    Config(String),

    /// The TLS files could not be loaded at startup.
    #[error(transparent)]
    Tls(#[from] tls_reload::Error),

    /// A listening socket could not be opened.
    #[error("binding {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        error: std::io::Error,
    },

    /// A development file could not be written or read.
    #[error("dev mode: {0}")]
    Dev(String),

    /// The OCSF audit sink could not be opened.
    #[error("OCSF audit log: {0}")]
    Ocsf(#[from] openshell_ocsf::Error),

    /// The thread that writes audit events could not be started.
    #[error("starting the audit writer thread: {0}")]
    Audit(std::io::Error),

    /// Installing a signal handler failed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),

    /// Building the gRPC reflection service failed.
    #[error("gRPC reflection: {0}")]
    Reflection(String),

    /// The task serving a spawned gateway panicked or was cancelled.
    #[error("gateway task ended abnormally: {0}")]
    Stopped(String),
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
