//! The one builder of both sides: the settings an acceptor and a connector
//! share, and the start of the one watcher. What only one side has (SNI
//! identities, what is built) is next to that side, in
//! [`crate::acceptor`] and [`crate::connector`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ClientFiles, LoadOptions, TlsFiles, WatchOptions};
use crate::engine::{Engine, Side};
use crate::error::{Error, SettingsError};
use crate::sni::SniIdentity;
use crate::watch::{Pending, Watcher};

/// Configures and builds a [`ReloadableAcceptor`](crate::ReloadableAcceptor)
/// (`Builder<TlsFiles>`, from
/// [`ReloadableAcceptor::builder`](crate::ReloadableAcceptor::builder)) or
/// a [`ReloadableConnector`](crate::ReloadableConnector)
/// ([`ConnectorBuilder`], from
/// [`ReloadableConnector::builder`](crate::ReloadableConnector::builder)).
///
/// The settings mean the same on both sides, with the same defaults. The
/// initial load happens in `build` or `start`, so a missing or invalid
/// file fails fast there.
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
///
/// # Example
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let volumes = tls_reload::testing::SecretVolumes::new();
/// # let (cert, key) = (volumes.server.path("tls.crt"), volumes.server.path("tls.key"));
/// use std::time::Duration;
/// use tls_reload::{ReloadableAcceptor, ReloadableConnector, TlsFiles};
///
/// let acceptor = ReloadableAcceptor::builder(TlsFiles::new(cert, key))
///     .alpn(["h2"])
///     .debounce(Duration::from_millis(200))
///     .poll_interval(Duration::from_secs(10))
///     .build()?; // no watcher: reloads only on reload_now
/// assert_eq!(acceptor.server_config().alpn_protocols, [b"h2".to_vec()]);
///
/// let connector = ReloadableConnector::builder(volumes.client_files())
///     .alpn(["h2"])
///     .build()?;
/// assert_eq!(connector.client_config().alpn_protocols, [b"h2".to_vec()]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder<F = TlsFiles> {
    pub(crate) files: F,
    /// The acceptor's SNI identities (always empty for a connector).
    pub(crate) sni: Vec<SniIdentity>,
    pub(crate) load: LoadOptions,
    pub(crate) watch: WatchOptions,
}

/// Configures and builds a [`ReloadableConnector`](crate::ReloadableConnector):
/// the [`Builder`] of the client side, with the same settings and defaults.
pub type ConnectorBuilder = Builder<ClientFiles>;

impl<F> Builder<F> {
    /// A builder for `files` with the default settings.
    pub(crate) fn new(files: F) -> Self {
        Self {
            files,
            sni: Vec::new(),
            load: LoadOptions::default(),
            watch: WatchOptions::default(),
        }
    }

    /// ALPN protocols in order of preference, such as `["h2", "http/1.1"]`
    /// (`["h2"]` for gRPC): offered to clients by an acceptor, requested
    /// from servers by a connector.
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

    /// How far in the future a replacement leaf's notBefore (the server
    /// certificate's, or the connector's client certificate's) may be:
    /// clock skew between the issuer and this host.
    ///
    /// Default: 5 minutes.
    pub fn not_before_tolerance(mut self, tolerance: Duration) -> Self {
        self.load.not_before_tolerance = tolerance;
        self
    }

    /// Number of TLS sessions kept for resumption. For a connector, 0 turns
    /// resumption off, and the store is replaced, empty, whenever the
    /// identity or the trust changes.
    ///
    /// Default: 1024.
    pub fn session_cache_size(mut self, sessions: usize) -> Self {
        self.load.session_cache_size = sessions;
        self
    }

    /// How long a reload may wait for the file system (reading and hashing
    /// the files) before it fails with [`Error::ReadTimedOut`]. A hung
    /// network or FUSE mount then delays reloads but never blocks callers
    /// of `reload_now` or the watcher's shutdown; while the hung read has
    /// not returned, later reloads fail at once rather than pile up blocked
    /// threads.
    ///
    /// Default: 10 s.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.load.read_timeout = timeout;
        self
    }

    /// Makes every reload's read wait `delay` first, as a hung mount would.
    #[cfg(feature = "testing")]
    pub fn read_delay(mut self, delay: Duration) -> Self {
        self.load.read_delay = delay;
        self
    }

    /// Quiet period after the last file-system event before reloading.
    ///
    /// Default: 1 s.
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.watch.debounce = debounce;
        self
    }

    /// Longest wait from the first event of a burst to the reload, so that
    /// a directory that keeps changing cannot starve reloads.
    ///
    /// Default: 5 s.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.watch.max_delay = max_delay;
        self
    }

    /// How often the files are re-read whatever the events say; also the cap
    /// of the retry backoff after a failure.
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

    /// Poll only, without file-system events (for file systems that do not
    /// deliver them, such as some network mounts).
    ///
    /// Default: false.
    pub fn poll_only(mut self, poll_only: bool) -> Self {
        self.watch.poll_only = poll_only;
        self
    }

    /// Makes the file-system event watcher fail to start, as it does when
    /// inotify limits are exhausted, to exercise the fallback to polling.
    #[cfg(feature = "testing")]
    pub fn fail_event_watcher(mut self) -> Self {
        self.watch.fail_event_watcher = true;
        self
    }

    /// What both sides' `start` do: checks that it runs inside a tokio
    /// runtime, builds with `build` and spawns the one watcher of `paths`
    /// over the engine that `engine` names in what was built.
    pub(crate) fn start_with<T, S: Side>(
        self,
        paths: Vec<PathBuf>,
        build: impl FnOnce(Self) -> Result<T, Error>,
        engine: impl FnOnce(&T) -> Arc<Engine<S>>,
    ) -> Result<(T, Watcher), Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Settings(SettingsError::NoRuntime));
        }
        let pending = Pending::new(paths, self.watch.clone());
        let built = build(self)?;
        let watcher = pending.spawn(engine(&built));
        Ok((built, watcher))
    }
}
