//! The reloadable acceptor and its builder: the public face of the reload
//! engine in [`crate::reload`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{LoadOptions, TlsFiles, WatchOptions};
use crate::error::{Error, SettingsError};
use crate::event::{ReloadFailure, ReloadOutcome, Subscription, TlsStatus, Trigger};
use crate::reload::Shared;
use crate::watch::{self, Watcher};

/// A TLS acceptor whose certificate, key and client trust can be replaced
/// while it serves.
///
/// Cloning is cheap and every clone serves the same, current config. Each
/// [`accept`](Self::accept) takes a snapshot of the config with one atomic
/// load: handshakes never lock and never wait for a reload, and established
/// connections keep the config they started with.
///
/// Build one with [`ReloadableAcceptor::builder`].
#[derive(Clone)]
pub struct ReloadableAcceptor {
    shared: Arc<Shared>,
}

impl fmt::Debug for ReloadableAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (generation, cert) = self.shared.served_cert();
        f.debug_struct("ReloadableAcceptor")
            .field("files", &self.shared.files)
            .field("generation", &generation)
            .field("fingerprint", &cert.fingerprint_sha256)
            .finish_non_exhaustive()
    }
}

impl ReloadableAcceptor {
    /// Starts configuring an acceptor for `files`.
    pub fn builder(files: TlsFiles) -> Builder {
        Builder {
            files,
            load: LoadOptions::default(),
            watch: WatchOptions::default(),
        }
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
    /// then untouched. [`ReloadFailure`] is a `std::error::Error`, so `?`
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
    pub fn subscribe(&self) -> Subscription {
        self.shared.subscribe()
    }

    /// What is served and how reloading has gone.
    pub fn status(&self) -> TlsStatus {
        self.shared.status()
    }

    /// The files this acceptor loads.
    pub fn files(&self) -> &TlsFiles {
        &self.shared.files
    }
}

/// Configures and builds a [`ReloadableAcceptor`].
///
/// The initial load happens in [`build`](Self::build) or
/// [`start`](Self::start), so a missing or invalid file fails fast there.
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder {
    files: TlsFiles,
    load: LoadOptions,
    watch: WatchOptions,
}

impl Builder {
    /// ALPN protocols to offer, in order of preference, such as
    /// `["h2", "http/1.1"]`.
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

    /// How far in the future a replacement leaf's notBefore may be (clock
    /// skew between the issuer and this host).
    ///
    /// Default: 5 minutes.
    pub fn not_before_tolerance(mut self, tolerance: Duration) -> Self {
        self.load.not_before_tolerance = tolerance;
        self
    }

    /// Number of TLS sessions kept for resumption.
    ///
    /// Default: 1024.
    pub fn session_cache_size(mut self, sessions: usize) -> Self {
        self.load.session_cache_size = sessions;
        self
    }

    /// How long a reload may wait for the file system (reading and hashing
    /// the files) before it fails with [`Error::ReadTimedOut`]. A hung
    /// network or FUSE mount then delays reloads but never blocks callers
    /// of [`ReloadableAcceptor::reload_now`] or the watcher's shutdown; while
    /// the hung read has not returned, later reloads fail at once rather
    /// than pile up blocked threads.
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
            shared: Arc::new(Shared::load(self.files, self.load)?),
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
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Settings(SettingsError::NoRuntime));
        }
        let pending = watch::Pending::new(&self.files, self.watch.clone());
        let acceptor = self.build()?;
        let watcher = pending.spawn(acceptor.shared.clone());
        Ok((acceptor, watcher))
    }
}
