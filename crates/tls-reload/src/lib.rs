//! Serve TLS from certificate files that change, without restarting.
//!
//! `tls-reload` gives any tokio server (hyper, tonic, axum, a hand-written
//! accept loop) a rustls acceptor whose certificate, private key and client
//! trust are replaced in place when the files on disk change: when
//! cert-manager renews a certificate and kubelet swaps the mounted Secret,
//! the next handshake serves the new certificate.
//!
//! # Getting started
//!
//! ```no_run
//! use tls_reload::{ReloadableAcceptor, TlsFiles};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let files = TlsFiles::new("/etc/tls/tls.crt", "/etc/tls/tls.key");
//! // Loads the files now (failing fast if they are invalid) and starts the
//! // one watcher of this acceptor; keep `watcher` alive while serving.
//! let (acceptor, watcher) = ReloadableAcceptor::builder(files)
//!     .alpn(["h2", "http/1.1"])
//!     .start()?;
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let acceptor = acceptor.clone();
//!     tokio::spawn(async move {
//!         // Each handshake uses the config served at this instant.
//!         let Ok(tls) = acceptor.accept(tcp).await else { return };
//!         // ... hand `tls` to hyper, tonic or your protocol ...
//!         # drop(tls);
//!     });
//! }
//! # }
//! ```
//!
//! `examples/hyper_https.rs` serves HTTPS with hyper in the same few lines.
//!
//! # Design
//!
//! * **Loading** ([`TlsFiles`], [`Builder`]): each file is read with a size
//!   cap and without following FIFOs; PEM, X.509 and the key are checked, and
//!   the key must match the leaf. Every failure is an [`Error`] naming the
//!   file and the cause. The crypto provider is ring, passed explicitly: no
//!   process-wide default is installed or needed.
//! * **Swapping** ([`ReloadableAcceptor`]): a reload builds a whole new
//!   `rustls::ServerConfig` and publishes it with one `ArcSwap` store.
//!   Handshakes take a snapshot with one atomic load and never wait for a
//!   reload. Unchanged bytes swap nothing; a failed reload keeps the served
//!   config. Sessions resume across a certificate-only rotation and never
//!   across a change of client trust.
//! * **Watching** ([`Watcher`]): events on the parent directories, a trailing
//!   debounce with a maximum delay, a periodic poll that also re-establishes
//!   lost watches (and replaces events entirely when they are unavailable),
//!   and retries with backoff after a failure.
//! * **Reporting** ([`ReloadEvent`], [`TlsStatus`]): every change (a new
//!   config, a new failure, a degraded watcher) reaches subscribers, and
//!   every `reload_now` returns its outcome; the status snapshot tells what
//!   is served. This crate does not depend on any audit format.
//!
//! # Non-goals
//!
//! Obtaining certificates (ACME, cert-manager do that), per-SNI certificate
//! selection, OCSP stapling, and client-side TLS.
//!
//! # Known problems
//!
//! * Kubernetes Secret volumes never modify `tls.crt`; kubelet renames a
//!   `..data` symlink in the directory. That is why directories are watched,
//!   and why a watch placed on the file itself (as many libraries do) goes
//!   deaf after the first rotation.
//! * `subPath` mounts are never updated by kubelet: mount the Secret as a
//!   directory.
//! * When a configured path is a symlink, the directory of each hop of its
//!   chain is watched too. A hop into a subdirectory of a directory already
//!   watched is not (kubelet's `..data` layout is swapped by a rename in
//!   the volume directory itself, which its watch sees); a change there in
//!   any other layout is found by the poll.
//! * A hung file system (a network or FUSE mount) cannot block callers:
//!   each reload waits for it at most the read timeout (10 s by default)
//!   and fails with [`Error::ReadTimedOut`], and so does the upkeep of the
//!   watches before it; the watcher stops at once whatever the file system
//!   does.
//! * If the file-system event thread dies, the watcher reports a single
//!   [`ReloadEvent::Degraded`] and polls.
//! * The files are read one after the other, so a read can straddle
//!   kubelet's swap. Every file read is held open until each path is seen
//!   to still name it (an open file's inode number cannot be reused by the
//!   next generation), and the read is repeated until it is consistent;
//!   files that keep changing for 2 s are reported as
//!   [`Error::KeptChanging`].
//! * cert-manager may write the certificate and the key in separate steps
//!   on some volume types: the mismatched intermediate state is rejected
//!   (never served) and retried with backoff until the pair matches.
//! * inotify limits (`fs.inotify.max_user_instances`, `max_user_watches`) can
//!   make event watching impossible; the watcher then polls and reports a
//!   single [`ReloadEvent::Degraded`].
//! * Long-lived connections (HTTP/2, gRPC) keep the certificate they were
//!   established with; bound their age in the server so clients re-handshake.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acceptor;
mod config;
mod error;
mod event;
mod fingerprint;
mod info;
mod load;
mod reload;
mod sni;
mod watch;

#[cfg(feature = "testing")]
pub mod testing;

pub use acceptor::{Builder, ReloadableAcceptor};
pub use config::{ClientAuth, TlsFiles};
pub use error::{CertError, Error, FileKind, FileRole, KeyError, PemError, SettingsError};
pub use event::{
    Degraded, IdentityStatus, LastAttempt, ReloadCount, ReloadEvent, ReloadFailure, ReloadOutcome,
    Reloaded, RenewalOverdue, Subscription, TlsStatus, Trigger, WatcherMode,
};
pub use fingerprint::{Fingerprint, ParseFingerprintError};
pub use info::{CertInfo, CertParseError, format_rfc3339};
pub use sni::SniIdentity;
pub use watch::Watcher;
