//! The reload engine: the state every clone of an acceptor and its watcher
//! share, one reload at a time (read, compare, check, build, swap), the
//! dedupe of repeated failures and the expiry policy.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio::sync::mpsc;

use crate::config::{LoadOptions, TlsFiles};
use crate::error::Error;
use crate::event::{
    Degraded, LastAttempt, ReloadCount, ReloadEvent, ReloadFailure, ReloadOutcome, Reloaded,
    Subscription, TlsStatus, Trigger, WatcherMode,
};
use crate::info::CertInfo;
use crate::load::{Digest, Inputs, Parsed, Resumption, digest_str};

/// A config together with what it was built from.
struct Served {
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

/// A failed attempt's error with its identity: the digest of the file
/// content it was about, or of its message when no content was read.
type Failed = Box<(Error, Digest)>;

enum Prepared {
    Unchanged,
    New(Box<Served>),
}

impl Shared {
    /// Loads the files for the first time: generation 1. An expired leaf
    /// is served (and logged at error level) so that a renewal can heal
    /// the server; a missing or invalid file fails.
    pub(crate) fn load(files: TlsFiles, load: LoadOptions) -> Result<Self, Error> {
        files.check()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inputs = Inputs::read(&files, load.max_file_size)?;
        let parsed = Parsed::parse(&files, &inputs, &provider)?;
        let resumption = Resumption::fresh(load.session_cache_size)?;
        let served = Served::new(&files, &load, &provider, &inputs, parsed, resumption, 1)?;
        if served.cert.is_expired_at(SystemTime::now()) {
            tracing::error!(
                path = %files.cert.display(),
                fingerprint = %served.cert.fingerprint_sha256,
                not_after = %crate::info::format_rfc3339(served.cert.not_after),
                "serving an expired certificate until a valid one is written"
            );
        }
        Ok(Self {
            files,
            load,
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
        })
    }

    /// The config served right now.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.served.load().config.clone()
    }

    /// The generation and leaf served right now.
    pub(crate) fn served_cert(&self) -> (u64, CertInfo) {
        let served = self.served.load();
        (served.generation, served.cert.clone())
    }

    /// A new subscriber; a current degradation is replayed to it first.
    pub(crate) fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = lock(&self.subscribers);
        if let Some(degraded) = lock(&self.degraded).clone() {
            let _ = tx.send(ReloadEvent::Degraded(degraded));
        }
        subscribers.push(tx);
        Subscription { rx }
    }

    /// What is served and how reloading has gone.
    pub(crate) fn status(&self) -> TlsStatus {
        let served = self.served.load();
        TlsStatus {
            generation: served.generation,
            cert: served.cert.clone(),
            chain_len: served.chain_len,
            client_ca: served.client_ca.clone(),
            client_auth: self.files.client_auth,
            loaded_at: served.loaded_at,
            last_attempt: lock(&self.last_attempt).clone(),
            reloads_succeeded: self.succeeded.load(Ordering::Relaxed),
            reloads_failed: self.failed.load(Ordering::Relaxed),
            watcher: self.watcher_mode(),
            by_trigger: Trigger::ALL
                .iter()
                .map(|&trigger| {
                    let [ok, failed] = &self.by_trigger[trigger.index()];
                    ReloadCount {
                        trigger,
                        succeeded: ok.load(Ordering::Relaxed),
                        failed: failed.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
    }

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
            Err(failed) => {
                let (error, id) = *failed;
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
    async fn prepare_bounded(self: &Arc<Self>, previous: &Arc<Served>) -> Result<Prepared, Failed> {
        let failed = |error: Error| {
            let id = digest_str(&error.to_string());
            Err(Box::new((error, id)))
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
            Ok(Err(e)) => failed(Error::Task(e)),
            Err(_) => timed_out(false),
        }
    }

    /// Reads, compares and builds; runs on a blocking thread. The error
    /// comes with an identity so repeated identical failures can be told
    /// apart from new ones.
    fn prepare(&self, served: &Served) -> Result<Prepared, Failed> {
        let inputs = Inputs::read(&self.files, self.load.max_file_size).map_err(|e| {
            let id = digest_str(&e.to_string());
            Box::new((e, id))
        })?;
        let content_hash = inputs.content_hash(self.files.client_auth);
        if content_hash == served.content_hash {
            return Ok(Prepared::Unchanged);
        }
        let fail = |e: Error| Box::new((e, content_hash));
        let parsed = Parsed::parse(&self.files, &inputs, &self.provider).map_err(fail)?;

        check_validity(&self.files, &self.load, &served.cert, &parsed.cert).map_err(fail)?;

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

/// The expiry policy: never trade a valid certificate for one that cannot
/// be used (expired, or valid only further in the future than the
/// tolerated clock skew); when the served one has expired anyway, anything
/// parseable is no worse.
fn check_validity(
    files: &TlsFiles,
    load: &LoadOptions,
    served: &CertInfo,
    next: &CertInfo,
) -> Result<(), Error> {
    let now = SystemTime::now();
    if served.is_expired_at(now) {
        return Ok(());
    }
    if next.is_expired_at(now) {
        return Err(Error::Expired {
            path: files.cert.clone(),
            not_after: next.not_after,
        });
    }
    let tolerance = load.not_before_tolerance;
    // A tolerance too large to add to `now` means no limit.
    if now
        .checked_add(tolerance)
        .is_some_and(|limit| next.not_before > limit)
    {
        return Err(Error::NotYetValid {
            path: files.cert.clone(),
            not_before: next.not_before,
            tolerance,
        });
    }
    Ok(())
}

/// Locks a std mutex, carrying on after a panic elsewhere: the data behind
/// these locks (subscriber lists, last attempt) stays consistent anyway.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
