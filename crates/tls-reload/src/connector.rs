//! The reloadable connector and its builder: the client-side face of the
//! reload engine in [`crate::engine`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::client::ClientEngine;
use crate::config::{ClientFiles, LoadOptions, WatchOptions};
use crate::error::{Error, SettingsError};
use crate::event::{
    LastAttempt, ReloadCount, ReloadFailure, ReloadOutcome, Subscription, Trigger, WatcherMode,
};
use crate::info::CertInfo;
use crate::watch::{self as watcher, Watcher};

/// A TLS connector whose client certificate and trust bundle can be
/// replaced while it connects.
///
/// Cloning is cheap and every clone uses the same, current config. Each
/// [`connect`](Self::connect) takes a snapshot of the config with one
/// atomic load: handshakes never lock and never wait for a reload, and
/// established connections keep what they were made with. Every new config
/// has a fresh session store, so no session made under a client
/// certificate or a trust that changed is resumed.
///
/// Long-lived connections (HTTP/2, gRPC channels) keep the identity they
/// were established with: watch [`changes`](Self::changes) to move to new
/// connections after a rotation.
///
/// Build one with [`ReloadableConnector::builder`].
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let volumes = tls_reload::testing::SecretVolumes::new();
/// # let acceptor = tls_reload::ReloadableAcceptor::builder(volumes.files()).build()?;
/// # let (addr, _server) = tls_reload::testing::serve(acceptor).await;
/// use rustls_pki_types::ServerName;
/// use tls_reload::ReloadableConnector;
///
/// // The trust bundle, and a client certificate for mutual TLS.
/// let (connector, watcher) = ReloadableConnector::builder(volumes.client_files())
///     .alpn(["h2"])
///     .start()?;
/// let tcp = tokio::net::TcpStream::connect(addr).await?;
/// let tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
/// assert!(tls.get_ref().1.peer_certificates().is_some());
/// # drop(tls);
/// watcher.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReloadableConnector {
    engine: Arc<ClientEngine>,
}

impl fmt::Debug for ReloadableConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let served = self.engine.served();
        let leaf = served.pairs[0].identity.as_ref();
        f.debug_struct("ReloadableConnector")
            .field("files", &self.engine.side.files)
            .field("generation", &served.generation)
            .field("fingerprint", &leaf.map(|i| &i.cert.fingerprint_sha256))
            .finish_non_exhaustive()
    }
}

impl ReloadableConnector {
    /// Starts configuring a connector for `files`, with the settings
    /// listed under [`ConnectorBuilder`]'s defaults.
    pub fn builder(files: ClientFiles) -> ConnectorBuilder {
        ConnectorBuilder {
            files,
            load: LoadOptions::default(),
            watch: WatchOptions::default(),
        }
    }

    /// Performs the TLS handshake on `io` with the config in use right now,
    /// verifying the server's certificate for `server_name` (also sent as
    /// SNI when it is a DNS name).
    pub fn connect<IO>(&self, server_name: ServerName<'static>, io: IO) -> tokio_rustls::Connect<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio_rustls::TlsConnector::from(self.client_config()).connect(server_name, io)
    }

    /// The config in use right now, for clients that drive rustls
    /// themselves.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.engine.served().config.clone()
    }

    /// The config in use right now and its generation, from one load.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn snapshot(&self) -> (Arc<ClientConfig>, u64) {
        let served = self.engine.served();
        (served.config.clone(), served.generation)
    }

    /// Re-reads the files now and swaps them in if they changed and are
    /// valid, exactly as the watcher does. Reloads are serialized.
    ///
    /// # Errors
    ///
    /// Returns the failure (also delivered to subscribers, once per
    /// distinct file content) when the files cannot be loaded; the config
    /// in use is then untouched.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let volumes = tls_reload::testing::SecretVolumes::new();
    /// use tls_reload::{ReloadOutcome, ReloadableConnector, Trigger};
    ///
    /// let connector = ReloadableConnector::builder(volumes.client_files()).build()?;
    /// let renewed = volumes.client_ca.client("client");
    /// volumes.publish_client(&renewed, volumes.server_ca.cert_pem());
    /// match connector.reload_now(Trigger::Api).await? {
    ///     ReloadOutcome::ClientReloaded(r) => {
    ///         assert!(r.identity_changed && !r.trust_changed);
    ///         let current = r.current.as_ref().map(|c| c.fingerprint_sha256.to_string());
    ///         assert_eq!(current, Some(renewed.fingerprint));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// assert_eq!(connector.generation(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reload_now(&self, trigger: Trigger) -> Result<ReloadOutcome, Arc<ReloadFailure>> {
        self.engine.reload(trigger).await
    }

    /// Subscribes to every later outcome: reloads
    /// ([`ReloadEvent::ClientReloaded`]), failures, watcher degradation and
    /// an overdue renewal of the client certificate. As for the acceptor, a
    /// current degradation is replayed to a new subscriber first.
    ///
    /// [`ReloadEvent::ClientReloaded`]: crate::ReloadEvent::ClientReloaded
    pub fn subscribe(&self) -> Subscription {
        self.engine.subscribe()
    }

    /// The generation in use, updated on every published change of the
    /// identity or the trust: `changed().await` wakes a long-lived client
    /// when it should move to new connections.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let volumes = tls_reload::testing::SecretVolumes::new();
    /// use tls_reload::{ReloadableConnector, Trigger};
    ///
    /// let connector = ReloadableConnector::builder(volumes.client_files()).build()?;
    /// let mut changes = connector.changes();
    /// assert_eq!(*changes.borrow_and_update(), 1);
    /// volumes.publish_client(&volumes.client_ca.client("client"), volumes.server_ca.cert_pem());
    /// connector.reload_now(Trigger::Api).await?;
    /// changes.changed().await?; // reconnect here
    /// assert_eq!(*changes.borrow_and_update(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.engine.changes()
    }

    /// Generation of the config in use; 1 is the initial load.
    pub fn generation(&self) -> u64 {
        self.engine.served().generation
    }

    /// What is used now and how reloading has gone.
    pub fn status(&self) -> ClientStatus {
        let served = self.engine.served();
        let pair = &served.pairs[0];
        let (reloads_succeeded, reloads_failed) = self.engine.totals();
        ClientStatus {
            generation: served.generation,
            identity: pair.identity.as_ref().map(|i| i.cert.clone()),
            chain_len: pair
                .identity
                .as_ref()
                .map_or(0, |i| i.certified_key.cert.len()),
            trusted: served.trust.trusted.clone(),
            loaded_at: pair.loaded_at,
            last_attempt: self.engine.last_attempt(),
            reloads_succeeded,
            reloads_failed,
            watcher: self.engine.watcher_mode(),
            by_trigger: self.engine.by_trigger(),
        }
    }

    /// The files this connector loads.
    pub fn files(&self) -> &ClientFiles {
        &self.engine.side.files
    }
}

/// A snapshot of what a [`ReloadableConnector`] uses and how reloading
/// has gone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientStatus {
    /// Generation of the config in use; 1 is the initial load.
    pub generation: u64,
    /// The client certificate presented, if any.
    pub identity: Option<CertInfo>,
    /// Number of certificates in the presented chain, leaf included (0
    /// without a client certificate).
    pub chain_len: usize,
    /// The CA certificates servers are verified against, from every trust
    /// bundle in order.
    pub trusted: Vec<CertInfo>,
    /// When the files in use were loaded.
    pub loaded_at: SystemTime,
    /// The last attempt that swapped or failed.
    pub last_attempt: Option<LastAttempt>,
    /// Successful swaps since start (the initial load excluded).
    pub reloads_succeeded: u64,
    /// Failed attempts since start, counting each retry.
    pub reloads_failed: u64,
    /// How changes are noticed.
    pub watcher: WatcherMode,
    /// Swaps and failures by trigger, one entry per trigger in
    /// [`Trigger::ALL`] order.
    pub by_trigger: Vec<ReloadCount>,
}

/// Configures and builds a [`ReloadableConnector`].
///
/// The settings mean what they mean for the acceptor's
/// [`Builder`](crate::Builder), with the same defaults; the initial load
/// happens in [`build`](Self::build) or [`start`](Self::start), so a
/// missing or invalid file fails fast there.
///
/// # Defaults
///
/// | setting | default |
/// | --- | --- |
/// | [`alpn`](Self::alpn) | none |
/// | [`max_file_size`](Self::max_file_size) | 1 MiB |
/// | [`not_before_tolerance`](Self::not_before_tolerance) | 5 minutes |
/// | [`session_cache_size`](Self::session_cache_size) | 1024 sessions |
/// | [`read_timeout`](Self::read_timeout) | 10 s |
/// | [`debounce`](Self::debounce) | 1 s |
/// | [`max_delay`](Self::max_delay) | 5 s |
/// | [`poll_interval`](Self::poll_interval) | 30 s |
/// | [`retry_backoff`](Self::retry_backoff) | 250 ms |
/// | [`poll_only`](Self::poll_only) | false |
#[derive(Debug, Clone)]
#[must_use]
pub struct ConnectorBuilder {
    files: ClientFiles,
    load: LoadOptions,
    watch: WatchOptions,
}

impl ConnectorBuilder {
    /// ALPN protocols to offer, in order of preference, such as
    /// `["h2", "http/1.1"]` (`["h2"]` for gRPC).
    ///
    /// Default: none.
    pub fn alpn<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.load.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Largest file accepted, in bytes; larger files fail the reload.
    ///
    /// Default: 1 MiB.
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.load.max_file_size = bytes;
        self
    }

    /// How far in the future a replacement client certificate's notBefore
    /// may be (clock skew between the issuer and this host).
    ///
    /// Default: 5 minutes.
    pub fn not_before_tolerance(mut self, tolerance: Duration) -> Self {
        self.load.not_before_tolerance = tolerance;
        self
    }

    /// Number of TLS sessions kept for resumption; 0 turns resumption off.
    /// The store is replaced, empty, whenever the identity or the trust
    /// changes.
    ///
    /// Default: 1024.
    pub fn session_cache_size(mut self, sessions: usize) -> Self {
        self.load.session_cache_size = sessions;
        self
    }

    /// How long a reload may wait for the file system before it fails with
    /// [`Error::ReadTimedOut`].
    ///
    /// Default: 10 s.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.load.read_timeout = timeout;
        self
    }

    /// Quiet period after the last file-system event before reloading.
    ///
    /// Default: 1 s.
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.watch.debounce = debounce;
        self
    }

    /// Longest wait from the first event of a burst to the reload.
    ///
    /// Default: 5 s.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.watch.max_delay = max_delay;
        self
    }

    /// How often the files are re-read whatever the events say; also the
    /// cap of the retry backoff after a failure.
    ///
    /// Default: 30 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.watch.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// First retry delay after a failed reload; it doubles on each failure
    /// up to the poll interval.
    ///
    /// Default: 250 ms.
    pub fn retry_backoff(mut self, initial: Duration) -> Self {
        self.watch.retry_initial = initial.max(Duration::from_millis(1));
        self
    }

    /// Poll only, without file-system events.
    ///
    /// Default: false.
    pub fn poll_only(mut self, poll_only: bool) -> Self {
        self.watch.poll_only = poll_only;
        self
    }

    /// Makes every reload's read wait `delay` first, as a hung mount would.
    #[cfg(feature = "testing")]
    pub fn read_delay(mut self, delay: Duration) -> Self {
        self.load.read_delay = delay;
        self
    }

    /// Makes the file-system event watcher fail to start, as it does when
    /// inotify limits are exhausted, to exercise the fallback to polling.
    #[cfg(feature = "testing")]
    pub fn fail_event_watcher(mut self) -> Self {
        self.watch.fail_event_watcher = true;
        self
    }

    /// Loads the files and returns a connector without a watcher: it
    /// changes only on [`ReloadableConnector::reload_now`].
    ///
    /// # Errors
    ///
    /// Any [`Error`] of loading: the initial files must be valid. An
    /// expired client certificate is accepted here (and logged at error
    /// level) so that a later renewal can heal the client.
    pub fn build(self) -> Result<ReloadableConnector, Error> {
        Ok(ReloadableConnector {
            engine: Arc::new(ClientEngine::load_client(self.files, self.load)?),
        })
    }

    /// Loads the files and starts the one watcher of the returned
    /// connector. The watcher runs until the [`Watcher`] is shut down or
    /// dropped.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and [`Error::Settings`] when called
    /// outside a tokio runtime.
    pub fn start(self) -> Result<(ReloadableConnector, Watcher), Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Settings(SettingsError::NoRuntime));
        }
        let paths = self
            .files
            .paths()
            .map(std::path::Path::to_path_buf)
            .collect();
        let pending = watcher::Pending::new(paths, self.watch.clone());
        let connector = self.build()?;
        let watcher = pending.spawn(connector.engine.clone());
        Ok((connector, watcher))
    }
}
