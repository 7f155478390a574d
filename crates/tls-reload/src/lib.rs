//! Serve and connect over TLS from certificate files that change, without
//! restarting.
//!
//! `tls-reload` gives any tokio server (hyper, tonic, axum, a hand-written
//! accept loop) a rustls acceptor whose certificate, private key and client
//! trust are replaced in place when the files on disk change: when
//! cert-manager renews a certificate and kubelet swaps the mounted Secret,
//! the next handshake serves the new certificate. Clients get the same for
//! their trust bundle and client certificate ([`ReloadableConnector`]).
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
//! # Several certificates by name (SNI)
//!
//! The files given to the builder are the default identity; each
//! [`SniIdentity`] adds a certificate and key served to clients asking for
//! one of its names. Each identity is rotated on its own: a broken pair in
//! one keeps that identity's last good pair and never holds up another.
//!
//! ```no_run
//! use tls_reload::{ReloadableAcceptor, SniIdentity, TlsFiles};
//!
//! # fn main() -> Result<(), tls_reload::Error> {
//! let (acceptor, watcher) =
//!     ReloadableAcceptor::builder(TlsFiles::new("/etc/tls/tls.crt", "/etc/tls/tls.key"))
//!         .sni(SniIdentity::new(
//!             ["api.example.com", "*.apps.example.com"],
//!             TlsFiles::new("/etc/tls-api/tls.crt", "/etc/tls-api/tls.key"),
//!         ))
//!         .start()?;
//! for identity in acceptor.status().identities {
//!     println!("{} {:?}: {}", identity.label, identity.names, identity.cert.fingerprint_sha256);
//! }
//! # drop(watcher);
//! # Ok(())
//! # }
//! ```
//!
//! # Clients
//!
//! A [`ReloadableConnector`] is built from a trust bundle (one or more CA
//! files) and, for mutual TLS, a client certificate and key, and is rotated
//! by the same engine and watcher as the acceptor. Each `connect` uses the
//! config of that instant; [`changes`](ReloadableConnector::changes) tells
//! a long-lived client when to move to new connections. With the `tower`
//! feature, [`HttpsConnector`] plugs it into hyper-util's `Client` and
//! tonic's `Endpoint::connect_with_connector` (`examples/hyper_client.rs`,
//! `examples/tonic_client.rs`).
//!
//! ```no_run
//! use rustls_pki_types::ServerName;
//! use tls_reload::{ClientFiles, ReloadableConnector};
//!
//! # async fn connect() -> Result<(), Box<dyn std::error::Error>> {
//! let files = ClientFiles::new("/etc/gateway-ca/ca.crt")
//!     .identity("/etc/client-tls/tls.crt", "/etc/client-tls/tls.key");
//! let (connector, watcher) = ReloadableConnector::builder(files).alpn(["h2"]).start()?;
//! let tcp = tokio::net::TcpStream::connect("gateway.example:8443").await?;
//! let tls = connector.connect(ServerName::try_from("gateway.example")?, tcp).await?;
//! # drop((tls, watcher));
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! * **Loading** ([`TlsFiles`], [`Builder`]): each file is read with a size
//!   cap and without following FIFOs; PEM, X.509 and the key are checked, and
//!   the key must match the leaf. Every failure is an [`Error`] naming the
//!   file and the cause. The crypto provider is ring, passed explicitly: no
//!   process-wide default is installed or needed.
//! * **Swapping** ([`ReloadableAcceptor`], [`ReloadableConnector`]): a
//!   reload builds a whole new `rustls::ServerConfig` (or `ClientConfig`)
//!   and publishes it with one `ArcSwap` store.
//!   Handshakes take a snapshot with one atomic load and never wait for a
//!   reload. Unchanged bytes swap nothing; a failed reload keeps the served
//!   config. Sessions resume across a certificate-only rotation and never
//!   across a change of client trust; a client's sessions never resume
//!   across any change of its files (each new config has a fresh store).
//!   One engine serves both sides: only reading, parsing and building
//!   differ.
//! * **Selecting** ([`SniIdentity`]): each published config carries an
//!   immutable resolver: a map of exact names and one of wildcard suffixes
//!   to certificates, and the default. A handshake looks its name up (the
//!   exact name, then the name's parent domain for a single-label
//!   wildcard) without locking, and without allocating when the name is
//!   lower case. Each identity has its own last good pair, failure dedupe
//!   and status; one attempt reads every identity and publishes all that
//!   changed in one config.
//! * **Renewal** ([`ReloadEvent::RenewalOverdue`]): a served leaf past two
//!   thirds of its lifetime (when cert-manager renews) plus a tenth of it
//!   ([`CertInfo::renewal_due`]) is reported once, well before it expires.
//! * **Watching** ([`Watcher`]): events on the parent directories, a trailing
//!   debounce with a maximum delay, a periodic poll that also re-establishes
//!   lost watches (and replaces events entirely when they are unavailable),
//!   and retries with backoff after a failure.
//! * **Reporting** ([`ReloadEvent`], [`TlsStatus`], [`ClientStatus`]):
//!   every change (a new config, a new failure, a degraded watcher) reaches
//!   subscribers, and every `reload_now` returns its outcome; the status
//!   snapshot tells what is served (or presented). This crate does not
//!   depend on any audit format.
//!
//! # Non-goals
//!
//! Obtaining certificates (ACME, cert-manager do that), OCSP stapling,
//! and client trust per SNI identity (the client CA and CRLs apply to every
//! name). A connector does not check revocation of server certificates.
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
//!   On the client side, a pooled hyper `Client` or a tonic `Channel` keeps
//!   its connections too: rebuild it when
//!   [`ReloadableConnector::changes`] fires.
//! * A resumed TLS session is authenticated by its first handshake: a
//!   client that resumes after the server rotated its certificate alone
//!   (the acceptor keeps resumption across such a rotation) still reports
//!   the old server certificate as the peer's. A client that must see the
//!   server's current certificate on every new connection turns resumption
//!   off with a session cache size of 0.
//! * A client that sends no SNI (most clients connecting by IP address)
//!   always gets the default identity; so does one asking for a name no
//!   identity has. A client may resume a session made under another
//!   identity's certificate only as rustls allows, which requires the same
//!   name.
//! * [`ReloadableAcceptor::reload_now`] returns one outcome for all
//!   identities: the first failure when any identity failed (others may
//!   have been swapped in by the same attempt), else the first reload.
//!   Subscribers receive one event per identity.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acceptor;
mod builder;
mod client;
mod config;
mod connector;
mod engine;
mod error;
mod event;
mod fingerprint;
#[cfg(feature = "tower")]
mod https;
mod info;
mod load;
mod reload;
mod sni;
mod trust;
mod watch;

#[cfg(feature = "testing")]
pub mod testing;

pub use acceptor::ReloadableAcceptor;
pub use builder::{Builder, ConnectorBuilder};
pub use client::CLIENT_IDENTITY;
pub use config::{ClientAuth, ClientFiles, TlsFiles};
pub use connector::{ClientStatus, ReloadableConnector};
pub use error::{CertError, Error, FileKind, FileRole, KeyError, PemError, SettingsError};
pub use event::{
    ClientReloaded, Degraded, IdentityStatus, LastAttempt, ReloadCount, ReloadEvent, ReloadFailure,
    ReloadOutcome, Reloaded, RenewalOverdue, Subscription, TlsStatus, Trigger, WatcherMode,
};
pub use fingerprint::{Fingerprint, ParseFingerprintError};
#[cfg(feature = "tower")]
pub use https::{HttpsConnectError, HttpsConnector, TlsConnection};
pub use info::{CertInfo, CertParseError, format_rfc3339};
pub use sni::{DEFAULT_IDENTITY, SniIdentity};
pub use trust::{ClientTrust, TrustDiff, TrustedCa};
pub use watch::Watcher;
