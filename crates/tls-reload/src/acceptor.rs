//! The reloadable acceptor and its builder: the public face of the reload
//! engine in [`crate::reload`].

use std::fmt;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::builder::Builder;
use crate::config::TlsFiles;
use crate::error::Error;
use crate::event::{ReloadFailure, ReloadOutcome, Subscription, TlsStatus, Trigger};
use crate::reload::Shared;
use crate::sni::SniIdentity;
use crate::watch::Watcher;

/// A TLS acceptor whose certificate, key and client trust can be replaced
/// while it serves.
///
/// Cloning is cheap and every clone serves the same, current config. Each
/// [`accept`](Self::accept) takes a snapshot of the config with one atomic
/// load: handshakes never lock and never wait for a reload, and established
/// connections keep the config they started with.
///
/// Build one with [`ReloadableAcceptor::builder`].
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let volumes = tls_reload::testing::SecretVolumes::new();
/// # let (cert, key) = (volumes.server.path("tls.crt"), volumes.server.path("tls.key"));
/// use tls_reload::{ReloadableAcceptor, TlsFiles};
///
/// let (acceptor, watcher) = ReloadableAcceptor::builder(TlsFiles::new(cert, key))
///     .alpn(["h2", "http/1.1"])
///     .start()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let client = tls_reload::testing::client_config(volumes.server_ca.cert_pem(), None);
/// # let probe = tokio::spawn(tls_reload::testing::handshake(addr, client));
/// let (tcp, _) = listener.accept().await?;
/// let tls = acceptor.accept(tcp).await?;
/// assert_eq!(tls.get_ref().1.alpn_protocol(), None);
/// # drop(tls);
/// # let _ = probe.await; // the client saw the connection close
/// watcher.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReloadableAcceptor {
    shared: Arc<Shared>,
}

impl fmt::Debug for ReloadableAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (generation, cert) = self.shared.served_cert();
        f.debug_struct("ReloadableAcceptor")
            .field("files", self.shared.files())
            .field("generation", &generation)
            .field("fingerprint", &cert.fingerprint_sha256)
            .finish_non_exhaustive()
    }
}

impl ReloadableAcceptor {
    /// Starts configuring an acceptor for `files`, with the settings listed
    /// under [`Builder`]'s defaults.
    pub fn builder(files: TlsFiles) -> Builder {
        Builder::new(files)
    }

    /// Performs the TLS handshake on `stream` with the config served right
    /// now.
    pub fn accept<IO>(&self, stream: IO) -> tokio_rustls::Accept<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio_rustls::TlsAcceptor::from(self.server_config()).accept(stream)
    }

    /// The config served right now, for servers that drive rustls
    /// themselves (for example with `tokio_rustls::LazyConfigAcceptor`).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.shared.server_config()
    }

    /// Re-reads the files now and swaps them in if they changed and are
    /// valid, exactly as the watcher does. Reloads are serialized: a call
    /// made while another reload runs waits for it and then reads the files
    /// afresh.
    ///
    /// # Errors
    ///
    /// Returns the failure (also delivered to subscribers, once per distinct
    /// file content) when the files cannot be loaded; the served config is
    /// then untouched. With [SNI identities](Builder::sni), every identity
    /// is read: the result is the first failure if any identity failed
    /// (identities that did not fail are swapped in all the same), else the
    /// first reload, else unchanged; subscribers get one event per
    /// identity. [`ReloadFailure`] is a `std::error::Error`, so `?`
    /// works in a function returning `Box<dyn Error>`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tls_reload::{ReloadOutcome, ReloadableAcceptor, TlsFiles, Trigger};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let acceptor =
    ///     ReloadableAcceptor::builder(TlsFiles::new("/etc/tls/tls.crt", "/etc/tls/tls.key"))
    ///         .build()?;
    /// // On SIGHUP, say:
    /// match acceptor.reload_now(Trigger::Signal).await? {
    ///     ReloadOutcome::Reloaded(r) => println!("now serving {}", r.current.fingerprint_sha256),
    ///     other => println!("unchanged, generation {}", other.generation()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reload_now(&self, trigger: Trigger) -> Result<ReloadOutcome, Arc<ReloadFailure>> {
        self.shared.reload(trigger).await
    }

    /// Subscribes to every later outcome: reloads, failures and watcher
    /// degradation.
    ///
    /// While the watcher is degraded to polling, a new subscription starts
    /// with that [`ReloadEvent::Degraded`], so every subscriber learns of it
    /// exactly once, however late it subscribed.
    ///
    /// [`ReloadEvent::Degraded`]: crate::ReloadEvent::Degraded
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut volumes = tls_reload::testing::SecretVolumes::new();
    /// use tls_reload::{ReloadEvent, ReloadableAcceptor, Trigger};
    ///
    /// let acceptor = ReloadableAcceptor::builder(volumes.files()).build()?;
    /// let mut events = acceptor.subscribe();
    /// let renewed = volumes.rotate(); // kubelet swaps the Secret volume
    /// acceptor.reload_now(Trigger::Api).await?;
    /// match events.recv().await {
    ///     Some(ReloadEvent::Reloaded(r)) => assert_eq!(r.current.fingerprint_sha256, renewed.fingerprint),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self) -> Subscription {
        self.shared.subscribe()
    }

    /// What is served and how reloading has gone.
    ///
    /// # Example
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let volumes = tls_reload::testing::SecretVolumes::new();
    /// use std::time::{Duration, SystemTime};
    /// use tls_reload::{ReloadableAcceptor, WatcherMode};
    ///
    /// let acceptor = ReloadableAcceptor::builder(volumes.files()).build()?;
    /// let status = acceptor.status();
    /// assert_eq!(status.generation, 1);
    /// assert_eq!(status.watcher, WatcherMode::Off); // built without a watcher
    /// assert!(status.cert.remaining_at(SystemTime::now()) > Duration::from_secs(86_400));
    /// println!("serving {} until {:?}", status.cert.fingerprint_sha256, status.cert.not_after);
    /// # Ok(())
    /// # }
    /// ```
    pub fn status(&self) -> TlsStatus {
        self.shared.status()
    }

    /// The client trust served right now (`None` without a client CA):
    /// to check open connections again after a change of trust, and the
    /// usage of each trusted CA. See [`ClientTrust`](crate::ClientTrust).
    pub fn client_trust(&self) -> Option<Arc<crate::ClientTrust>> {
        self.shared.client_trust()
    }

    /// The files of the default identity (and the client trust).
    pub fn files(&self) -> &TlsFiles {
        self.shared.files()
    }
}

/// What only the acceptor's [`Builder`] has: SNI identities, and what is
/// built.
impl Builder<TlsFiles> {
    /// Also serves `identity` to clients asking for one of its names (SNI).
    /// May be called more than once; the files given to
    /// [`ReloadableAcceptor::builder`] stay the default identity, served
    /// when no name matches and to clients that send none.
    ///
    /// Each identity is loaded, checked and rotated on its own, and the one
    /// watcher watches the directories of all of them. The names are
    /// checked in [`build`](Self::build): a malformed name, a wildcard that
    /// is not the whole leftmost label or a name given to two identities is
    /// an [`Error::Settings`]; a certificate that does not cover its names
    /// is an [`Error::NameNotCovered`] naming the identity, the name and the
    /// file.
    ///
    /// Default: no SNI identities.
    ///
    /// # Example
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let volumes = tls_reload::testing::SecretVolumes::new();
    /// # let api = tls_reload::testing::AtomicWriter::new(volumes.dir().join("api"))?;
    /// # let leaf = volumes.server_ca.issue(
    /// #     &tls_reload::testing::LeafOptions::server().names(["api.example.com"]));
    /// # api.write(&[("tls.crt", leaf.cert_pem.as_bytes()), ("tls.key", leaf.key_pem.as_bytes())])?;
    /// use tls_reload::{Error, ReloadableAcceptor, SettingsError, SniIdentity, TlsFiles};
    ///
    /// let api_files = TlsFiles::new(api.path("tls.crt"), api.path("tls.key"));
    /// let acceptor = ReloadableAcceptor::builder(volumes.files())
    ///     .sni(SniIdentity::new(["api.example.com"], api_files.clone()))
    ///     .build()?;
    /// assert_eq!(acceptor.status().identities[1].label, "api.example.com");
    ///
    /// // A wildcard is only allowed as the whole leftmost label.
    /// let err = ReloadableAcceptor::builder(volumes.files())
    ///     .sni(SniIdentity::new(["api.*.example.com"], api_files.clone()))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::Settings(SettingsError::InvalidServerName { .. })));
    ///
    /// // The certificate must cover every configured name.
    /// let err = ReloadableAcceptor::builder(volumes.files())
    ///     .sni(SniIdentity::new(["web.example.com"], api_files))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::NameNotCovered { .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn sni(mut self, identity: SniIdentity) -> Self {
        self.sni.push(identity);
        self
    }

    /// Loads the files and returns an acceptor without a watcher: it changes
    /// only on [`ReloadableAcceptor::reload_now`].
    ///
    /// # Errors
    ///
    /// Any [`Error`] of loading: the initial config must be valid. An
    /// expired leaf is accepted here (and logged at error level) so that a
    /// later renewal can heal the server.
    pub fn build(self) -> Result<ReloadableAcceptor, Error> {
        Ok(ReloadableAcceptor {
            shared: Arc::new(Shared::load_server(self.files, &self.sni, self.load)?),
        })
    }

    /// Loads the files and starts the one watcher of the returned acceptor.
    /// The watcher runs until the [`Watcher`] is shut down or dropped.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and [`Error::Settings`] when called
    /// outside a tokio runtime.
    pub fn start(self) -> Result<(ReloadableAcceptor, Watcher), Error> {
        let paths = std::iter::once(&self.files)
            .chain(self.sni.iter().map(|identity| &identity.files))
            .flat_map(|files| files.paths().map(std::path::Path::to_path_buf))
            .collect();
        self.start_with(paths, Self::build, |acceptor| acceptor.shared.clone())
    }
}
