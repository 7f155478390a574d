//! The reloadable acceptor: one `ArcSwap<ServerConfig>` read by every
//! handshake and written by one reload at a time.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::config::{LoadOptions, TlsFiles, WatchOptions};
use crate::error::Error;
use crate::event::{
    Degraded, LastAttempt, ReloadCount, ReloadEvent, ReloadFailure, ReloadOutcome, Reloaded,
    Subscription, TlsStatus, Trigger, WatcherMode,
};
use crate::info::CertInfo;
use crate::load::{Digest, Inputs, Parsed, Resumption, digest_str};
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
        let served = self.shared.served.load();
        f.debug_struct("ReloadableAcceptor")
            .field("files", &self.shared.files)
            .field("generation", &served.generation)
            .field("fingerprint", &served.cert.fingerprint_sha256)
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
        self.shared.served.load().config.clone()
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
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = lock(&self.shared.subscribers);
        if let Some(degraded) = lock(&self.shared.degraded).clone() {
            let _ = tx.send(ReloadEvent::Degraded(degraded));
        }
        subscribers.push(tx);
        Subscription { rx }
    }

    /// What is served and how reloading has gone.
    pub fn status(&self) -> TlsStatus {
        let served = self.shared.served.load();
        TlsStatus {
            generation: served.generation,
            cert: served.cert.clone(),
            chain_len: served.chain_len,
            client_ca: served.client_ca.clone(),
            client_auth: self.shared.files.client_auth,
            loaded_at: served.loaded_at,
            last_attempt: lock(&self.shared.last_attempt).clone(),
            reloads_succeeded: self.shared.succeeded.load(Ordering::Relaxed),
            reloads_failed: self.shared.failed.load(Ordering::Relaxed),
            watcher: self.shared.watcher_mode(),
            by_trigger: Trigger::ALL
                .iter()
                .map(|&trigger| {
                    let [ok, failed] = &self.shared.by_trigger[trigger.index()];
                    ReloadCount {
                        trigger,
                        succeeded: ok.load(Ordering::Relaxed),
                        failed: failed.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
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
        self.files.check()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inputs = Inputs::read(&self.files, self.load.max_file_size)?;
        let parsed = Parsed::parse(&self.files, &inputs, &provider)?;
        let resumption = Resumption::fresh(self.load.session_cache_size)?;
        let served = Served::new(
            &self.files,
            &self.load,
            &provider,
            &inputs,
            parsed,
            resumption,
            1,
        )?;
        let now = SystemTime::now();
        if served.cert.is_expired_at(now) {
            tracing::error!(
                path = %self.files.cert.display(),
                fingerprint = %served.cert.fingerprint_sha256,
                not_after = %crate::info::format_rfc3339(served.cert.not_after),
                "serving an expired certificate until a valid one is written"
            );
        }
        Ok(ReloadableAcceptor {
            shared: Arc::new(Shared {
                files: self.files,
                load: self.load,
                provider,
                served: ArcSwap::from_pointee(served),
                reload_lock: tokio::sync::Mutex::new(ReloadState::default()),
                reading: AtomicBool::new(false),
                subscribers: Mutex::new(Vec::new()),
                succeeded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                by_trigger: Default::default(),
                last_attempt: Mutex::new(None),
                degraded: Mutex::new(None),
                watcher_mode: AtomicU8::new(WatcherMode::Off.to_u8()),
            }),
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
            return Err(Error::Settings(
                "the watcher needs a tokio runtime: call start() inside one".into(),
            ));
        }
        let pending = watch::Pending::new(&self.files, self.watch.clone());
        let acceptor = self.build()?;
        let watcher = pending.spawn(acceptor.shared.clone());
        Ok((acceptor, watcher))
    }
}

// === impl Shared ===

/// A config together with what it was built from.
pub(crate) struct Served {
    config: Arc<ServerConfig>,
    cert: CertInfo,
    chain_len: usize,
    client_ca: Vec<CertInfo>,
    generation: u64,
    loaded_at: SystemTime,
    content_hash: Digest,
    trust_hash: Digest,
}

impl Served {
    fn new(
        files: &TlsFiles,
        load: &LoadOptions,
        provider: &Arc<CryptoProvider>,
        inputs: &Inputs,
        parsed: Parsed,
        resumption: Resumption,
        generation: u64,
    ) -> Result<Self, Error> {
        let config = parsed.server_config(provider, load, resumption)?;
        Ok(Self {
            config: Arc::new(config),
            chain_len: parsed.certified_key.cert.len(),
            cert: parsed.cert,
            client_ca: parsed.client_ca,
            generation,
            loaded_at: SystemTime::now(),
            content_hash: inputs.content_hash(files.client_auth),
            trust_hash: inputs.trust_hash(files.client_auth),
        })
    }
}

#[derive(Default)]
struct ReloadState {
    /// Identity of the last failure, so a retry that fails the same way is
    /// not reported again.
    last_failure: Option<Digest>,
}

/// State shared by every clone of an acceptor and its watcher.
pub(crate) struct Shared {
    pub(crate) files: TlsFiles,
    load: LoadOptions,
    provider: Arc<CryptoProvider>,
    served: ArcSwap<Served>,
    /// Serializes reloads; handshakes never touch it.
    reload_lock: tokio::sync::Mutex<ReloadState>,
    /// Whether a blocking read of the files is still running (possibly
    /// past its timeout, on a hung mount).
    reading: AtomicBool,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<ReloadEvent>>>,
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// `[succeeded, failed]` per trigger, indexed by `Trigger::index`.
    by_trigger: [[AtomicU64; 2]; Trigger::ALL.len()],
    last_attempt: Mutex<Option<LastAttempt>>,
    /// The current degradation, replayed to new subscribers.
    degraded: Mutex<Option<Arc<Degraded>>>,
    watcher_mode: AtomicU8,
}

/// Clears a flag when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

enum Prepared {
    Unchanged,
    New(Box<Served>),
}

impl Shared {
    pub(crate) async fn reload(
        self: &Arc<Self>,
        trigger: Trigger,
    ) -> Result<ReloadOutcome, Arc<ReloadFailure>> {
        let mut state = self.reload_lock.lock().await;
        let previous = self.served.load_full();
        let prepared = self.prepare_bounded(&previous).await;
        match prepared {
            Ok(Prepared::Unchanged) => {
                state.last_failure = None;
                Ok(ReloadOutcome::Unchanged {
                    generation: previous.generation,
                })
            }
            Ok(Prepared::New(served)) => {
                state.last_failure = None;
                let reloaded = Arc::new(Reloaded {
                    trigger,
                    generation: served.generation,
                    previous: previous.cert.clone(),
                    current: served.cert.clone(),
                    client_ca: served.client_ca.clone(),
                    trust_changed: served.trust_hash != previous.trust_hash,
                    at: served.loaded_at,
                });
                self.served.store(Arc::from(served));
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                self.by_trigger[trigger.index()][0].fetch_add(1, Ordering::Relaxed);
                *lock(&self.last_attempt) = Some(LastAttempt {
                    at: reloaded.at,
                    trigger,
                    error: None,
                });
                tracing::info!(
                    trigger = %trigger,
                    generation = reloaded.generation,
                    fingerprint = %reloaded.current.fingerprint_sha256,
                    previous_fingerprint = %reloaded.previous.fingerprint_sha256,
                    trust_changed = reloaded.trust_changed,
                    "TLS config reloaded"
                );
                self.publish(ReloadEvent::Reloaded(reloaded.clone()));
                Ok(ReloadOutcome::Reloaded(reloaded))
            }
            Err((error, id)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.by_trigger[trigger.index()][1].fetch_add(1, Ordering::Relaxed);
                let failure = Arc::new(ReloadFailure {
                    trigger,
                    error,
                    served_generation: previous.generation,
                    at: SystemTime::now(),
                });
                *lock(&self.last_attempt) = Some(LastAttempt {
                    at: failure.at,
                    trigger,
                    error: Some(failure.error.to_string()),
                });
                if state.last_failure != Some(id) {
                    state.last_failure = Some(id);
                    tracing::warn!(
                        trigger = %trigger,
                        generation = previous.generation,
                        error = %failure.error,
                        "TLS reload failed; still serving the previous certificate"
                    );
                    self.publish(ReloadEvent::Failed(failure.clone()));
                } else {
                    tracing::debug!(trigger = %trigger, error = %failure.error, "TLS reload failed again");
                }
                Err(failure)
            }
        }
    }

    /// How long one reload may wait for the file system.
    pub(crate) fn read_timeout(&self) -> Duration {
        self.load.read_timeout
    }

    /// [`prepare`](Self::prepare) on a blocking thread (file reads may
    /// block on slow or network file systems: never on the async workers),
    /// for at most the read timeout. A read that times out keeps its thread
    /// until the file system answers; until then no other read starts.
    async fn prepare_bounded(
        self: &Arc<Self>,
        previous: &Arc<Served>,
    ) -> Result<Prepared, (Error, Digest)> {
        let failed = |error: Error| {
            let id = digest_str(&error.to_string());
            Err((error, id))
        };
        let timeout = self.load.read_timeout;
        let timed_out = |still_waiting| {
            failed(Error::ReadTimedOut {
                dir: self
                    .files
                    .cert
                    .parent()
                    .map_or_else(|| self.files.cert.clone(), Path::to_path_buf),
                timeout,
                still_waiting,
            })
        };
        if self.reading.swap(true, Ordering::AcqRel) {
            return timed_out(true);
        }
        let this = Arc::clone(self);
        let prev = Arc::clone(previous);
        let task = tokio::task::spawn_blocking(move || {
            // Cleared however the read ends, a panic included, and whether
            // or not anyone still waits for it.
            let _reading = ClearOnDrop(&this.reading);
            if !this.load.read_delay.is_zero() {
                std::thread::sleep(this.load.read_delay);
            }
            this.prepare(&prev)
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(e)) => failed(Error::Task(e.to_string())),
            Err(_) => timed_out(false),
        }
    }

    /// Reads, compares and builds; runs on a blocking thread. The error
    /// comes with an identity so repeated identical failures can be told
    /// apart from new ones.
    fn prepare(&self, served: &Served) -> Result<Prepared, (Error, Digest)> {
        let inputs = Inputs::read(&self.files, self.load.max_file_size).map_err(|e| {
            let id = digest_str(&e.to_string());
            (e, id)
        })?;
        let content_hash = inputs.content_hash(self.files.client_auth);
        if content_hash == served.content_hash {
            return Ok(Prepared::Unchanged);
        }
        let fail = |e: Error| (e, content_hash);
        let parsed = Parsed::parse(&self.files, &inputs, &self.provider).map_err(fail)?;

        let now = SystemTime::now();
        // Never trade a valid certificate for one that cannot be used; when
        // the served one has expired anyway, anything parseable is no worse.
        if !served.cert.is_expired_at(now) {
            if parsed.cert.is_expired_at(now) {
                return Err(fail(Error::Expired {
                    path: self.files.cert.clone(),
                    not_after: parsed.cert.not_after,
                }));
            }
            let tolerance = self.load.not_before_tolerance;
            // A tolerance too large to add to `now` means no limit.
            if now
                .checked_add(tolerance)
                .is_some_and(|limit| parsed.cert.not_before > limit)
            {
                return Err(fail(Error::NotYetValid {
                    path: self.files.cert.clone(),
                    not_before: parsed.cert.not_before,
                    tolerance,
                }));
            }
        }

        let trust_hash = inputs.trust_hash(self.files.client_auth);
        let resumption = if trust_hash == served.trust_hash {
            Resumption::of(&served.config)
        } else {
            Resumption::fresh(self.load.session_cache_size).map_err(fail)?
        };
        let next = Served::new(
            &self.files,
            &self.load,
            &self.provider,
            &inputs,
            parsed,
            resumption,
            served.generation + 1,
        )
        .map_err(fail)?;
        Ok(Prepared::New(Box::new(next)))
    }

    fn publish(&self, event: ReloadEvent) {
        lock(&self.subscribers).retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Records and announces a fall-back to polling. Called once per
    /// degradation: again only after events worked in between.
    pub(crate) fn publish_degraded(&self, reason: String, poll_interval: Duration) {
        tracing::warn!(
            reason = %reason,
            poll_interval = %humantime::format_duration(poll_interval),
            "file-system events unavailable; TLS files are polled instead"
        );
        let degraded = Arc::new(Degraded {
            reason,
            poll_interval,
            at: SystemTime::now(),
        });
        // Under the subscriber lock, so a concurrent subscribe() sees it
        // either replayed or published, never both or neither.
        let mut subscribers = lock(&self.subscribers);
        *lock(&self.degraded) = Some(degraded.clone());
        subscribers.retain(|tx| tx.send(ReloadEvent::Degraded(degraded.clone())).is_ok());
    }

    pub(crate) fn set_watcher_mode(&self, mode: WatcherMode) {
        self.watcher_mode.store(mode.to_u8(), Ordering::Relaxed);
        if mode == WatcherMode::Events {
            *lock(&self.degraded) = None;
        }
    }

    fn watcher_mode(&self) -> WatcherMode {
        WatcherMode::from_u8(self.watcher_mode.load(Ordering::Relaxed))
    }
}

/// Locks a std mutex, carrying on after a panic elsewhere: the data behind
/// these locks (subscriber lists, last attempt) stays consistent anyway.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
