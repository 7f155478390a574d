//! The reload engine both sides share: the state every clone of an
//! acceptor or a connector and its watcher share, one reload at a time
//! (read, compare, check, build, swap) over every unit of files, each with
//! its own last good pair and dedupe of repeated failures, the counts, the
//! events and the check for overdue renewals.
//!
//! What differs between a server and a client (which files, how they are
//! parsed, which rustls config they become, what a reload reports) is a
//! [`Side`]: the server's is in [`crate::reload`], the client's in
//! [`crate::client`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::config::LoadOptions;
use crate::error::Error;
use crate::event::{
    Degraded, LastAttempt, ReloadCount, ReloadEvent, ReloadFailure, ReloadOutcome, RenewalOverdue,
    Subscription, Trigger, WatcherMode,
};
use crate::fingerprint::Fingerprint;
use crate::info::CertInfo;
use crate::load::{Digest, digest_str};

/// A failed attempt's error with its identity: the digest of the file
/// content it was about, or of its message when no content was read.
pub(crate) type Failed = Box<(Error, Digest)>;

/// Wraps an error with the digest of its message.
pub(crate) fn failed(error: Error) -> Failed {
    let id = digest_str(&error.to_string());
    Box::new((error, id))
}

/// What one side (server or client) loads and builds. Units are the sets
/// of files rotated on their own: the server's identities (the default
/// first, which also carries the trust), the client's one set.
pub(crate) trait Side: Send + Sync + Sized + 'static {
    /// The rustls config published.
    type Config: Send + Sync + 'static;
    /// What one unit's files gave.
    type Pair: Send + Sync + 'static;
    /// The trust, read from unit 0's files.
    type Trust: Send + Sync + 'static;
    /// The raw bytes of one unit's files.
    type Read: Send + 'static;

    /// How files are loaded.
    fn options(&self) -> &LoadOptions;
    /// How many units there are (at least one).
    fn units(&self) -> usize;
    /// The label of unit `i` in events and logs.
    fn label(&self, i: usize) -> &str;
    /// The directory named when reading times out.
    fn timeout_dir(&self) -> PathBuf;
    /// Reads unit `i`'s files; the digest tells whether they are those
    /// served.
    fn read(&self, i: usize) -> Result<(Self::Read, Digest), Failed>;
    /// Parses and checks what [`read`](Self::read) gave, against the
    /// served pair's leaf when there is one (the expiry policy).
    fn check(
        &self,
        i: usize,
        read: (Self::Read, Digest),
        served: Option<&Self::Pair>,
    ) -> Result<(Self::Pair, Self::Trust), Failed>;
    /// The trust to publish when unit 0's files changed: `next`, as
    /// parsed, by default; a side may carry state over from the trust
    /// published now.
    fn next_trust(&self, next: Self::Trust, _published: &Self::Trust) -> Self::Trust {
        next
    }
    /// The digest [`read`](Self::read) gave for a pair.
    fn content_hash(pair: &Self::Pair) -> &Digest;
    /// The leaf a pair presents, with its path, if it has one.
    fn leaf<'a>(&'a self, i: usize, pair: &'a Self::Pair) -> Option<(&'a Path, &'a CertInfo)>;
    /// Builds the config publishing `pairs` and `trust`; `previous` is
    /// what is published now (none at the initial load).
    fn config(
        &self,
        pairs: &[Arc<Self::Pair>],
        trust: &Arc<Self::Trust>,
        previous: Option<&Served<Self>>,
    ) -> Result<Self::Config, Error>;
    /// Reports (and logs) that unit `i` changed from `previous` to `next`.
    fn reloaded(
        &self,
        trigger: Trigger,
        i: usize,
        previous: &Served<Self>,
        next: &Served<Self>,
    ) -> ReloadOutcome;
}

/// A config together with what it was built from.
pub(crate) struct Served<S: Side> {
    pub(crate) config: Arc<S::Config>,
    /// One per unit, in order (unit 0 first).
    pub(crate) pairs: Vec<Arc<S::Pair>>,
    pub(crate) trust: Arc<S::Trust>,
    pub(crate) generation: u64,
}

struct ReloadState {
    /// Per unit, the identity of its last failure, so that a retry that
    /// fails the same way is not reported again.
    last_failure: Vec<Option<Digest>>,
}

/// Per unit, what the status and the overdue check remember.
#[derive(Default, Clone)]
struct UnitRecord {
    last_attempt: Option<LastAttempt>,
    /// The certificate last reported as overdue.
    overdue_reported: Option<Fingerprint>,
}

/// What one attempt found, unit by unit.
struct Attempt<S: Side> {
    /// The config to publish, when some unit changed.
    next: Option<Box<Served<S>>>,
    /// Indexes of the units that changed.
    changed: Vec<usize>,
    /// The units that failed, keeping their served pairs.
    failures: Vec<(usize, Failed)>,
}

/// How reloading has gone: what a server's and a client's status share.
pub(crate) struct History {
    /// The last attempt that swapped or failed, of any unit.
    pub(crate) last_attempt: Option<LastAttempt>,
    /// Per unit, its last attempt that swapped or failed.
    pub(crate) units: Vec<Option<LastAttempt>>,
    pub(crate) reloads_succeeded: u64,
    pub(crate) reloads_failed: u64,
    pub(crate) watcher: WatcherMode,
    /// Swaps and failures by trigger, in [`Trigger::ALL`] order.
    pub(crate) by_trigger: Vec<ReloadCount>,
}

/// State shared by every clone of an acceptor or a connector and its
/// watcher.
pub(crate) struct Engine<S: Side> {
    pub(crate) side: S,
    /// What is published; read it with one load.
    pub(crate) served: ArcSwap<Served<S>>,
    /// The published generation, for those waiting for a change.
    changes: watch::Sender<u64>,
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
    /// One per unit.
    records: Mutex<Vec<UnitRecord>>,
    /// The current degradation, replayed to new subscribers.
    degraded: Mutex<Option<Arc<Degraded>>>,
    watcher_mode: AtomicU8,
}

impl<S: Side> Engine<S> {
    /// Loads every unit for the first time: generation 1. An expired leaf
    /// is used (and logged at error level) so that a renewal can heal it; a
    /// missing or invalid file fails.
    pub(crate) fn load(side: S) -> Result<Self, Error> {
        let load_one = |i: usize| {
            let read = side.read(i).map_err(|f| f.0)?;
            let (pair, trust) = side.check(i, read, None).map_err(|f| f.0)?;
            if let Some((path, cert)) = side.leaf(i, &pair)
                && cert.is_expired_at(SystemTime::now())
            {
                tracing::error!(
                    identity = %side.label(i),
                    path = %path.display(),
                    fingerprint = %cert.fingerprint_sha256,
                    not_after = %crate::info::format_rfc3339(cert.not_after),
                    "using an expired certificate until a valid one is written"
                );
            }
            Ok::<_, Error>((Arc::new(pair), trust))
        };
        // Unit 0 comes first and carries the trust.
        let (first, trust) = load_one(0)?;
        let mut pairs = vec![first];
        for i in 1..side.units() {
            pairs.push(load_one(i)?.0);
        }
        let trust = Arc::new(trust);
        let config = side.config(&pairs, &trust, None)?;
        let count = side.units();
        Ok(Self {
            side,
            served: ArcSwap::from_pointee(Served {
                config: Arc::new(config),
                pairs,
                trust,
                generation: 1,
            }),
            changes: watch::Sender::new(1),
            reload_lock: tokio::sync::Mutex::new(ReloadState {
                last_failure: vec![None; count],
            }),
            reading: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            by_trigger: Default::default(),
            records: Mutex::new(vec![UnitRecord::default(); count]),
            degraded: Mutex::new(None),
            watcher_mode: AtomicU8::new(WatcherMode::Off.to_u8()),
        })
    }

    /// What is published right now: one atomic load.
    pub(crate) fn served(&self) -> arc_swap::Guard<Arc<Served<S>>> {
        self.served.load()
    }

    /// A receiver of the published generation.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A new subscriber; a current degradation is replayed to it first.
    pub(crate) fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = lock(&self.subscribers);
        // Subscriptions dropped since the last event leave now, so that
        // subscribing often while nothing changes does not grow the list.
        subscribers.retain(|tx| !tx.is_closed());
        if let Some(degraded) = lock(&self.degraded).clone() {
            let _ = tx.send(ReloadEvent::Degraded(degraded));
        }
        subscribers.push(tx);
        Subscription { rx }
    }

    /// How reloading has gone, from one look at the records.
    pub(crate) fn history(&self) -> History {
        let units: Vec<_> = lock(&self.records)
            .iter()
            .map(|r| r.last_attempt.clone())
            .collect();
        History {
            // The last attempt of any unit is the latest of the units' own.
            last_attempt: units.iter().flatten().max_by_key(|a| a.at).cloned(),
            units,
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

    /// One reload attempt over every unit. Each unit that changed is
    /// reported as reloaded, each that failed as failed (once per distinct
    /// failure); all changes of the attempt are published in one new
    /// config. Returns the first failure if any unit failed, else the first
    /// reload, else unchanged. Afterwards, overdue renewals are checked.
    pub(crate) async fn reload(
        self: &Arc<Self>,
        trigger: Trigger,
    ) -> Result<ReloadOutcome, Arc<ReloadFailure>> {
        let outcome = {
            let mut state = self.reload_lock.lock().await;
            let previous = self.served.load_full();
            match self.prepare_bounded(&previous).await {
                Ok(attempt) => self.apply(&mut state, trigger, &previous, attempt),
                Err(failed) => {
                    let (error, id) = *failed;
                    Err(self.fail(&mut state, trigger, 0, error, id, previous.generation))
                }
            }
        };
        self.check_renewals();
        outcome
    }

    /// Publishes an attempt's new config and reports its outcomes.
    fn apply(
        &self,
        state: &mut ReloadState,
        trigger: Trigger,
        previous: &Served<S>,
        attempt: Attempt<S>,
    ) -> Result<ReloadOutcome, Arc<ReloadFailure>> {
        let mut generation = previous.generation;
        let mut first_reloaded = None;
        // A unit that did not fail this time starts afresh: its next
        // failure is news.
        for (i, slot) in state.last_failure.iter_mut().enumerate() {
            if !attempt.failures.iter().any(|(failed, _)| *failed == i) {
                *slot = None;
            }
        }
        if let Some(next) = attempt.next {
            let next: Arc<Served<S>> = Arc::from(next);
            generation = next.generation;
            self.served.store(next.clone());
            self.changes.send_replace(generation);
            for &i in &attempt.changed {
                let outcome = self.side.reloaded(trigger, i, previous, &next);
                self.count(trigger, 0);
                self.record(
                    i,
                    LastAttempt {
                        at: outcome.at().unwrap_or_else(SystemTime::now),
                        trigger,
                        error: None,
                    },
                );
                if let Some(event) = outcome.event() {
                    self.publish(event);
                }
                first_reloaded.get_or_insert(outcome);
            }
        }
        let mut first_failure = None;
        for (i, failed) in attempt.failures {
            let (error, id) = *failed;
            let failure = self.fail(state, trigger, i, error, id, generation);
            first_failure.get_or_insert(failure);
        }
        match (first_failure, first_reloaded) {
            (Some(failure), _) => Err(failure),
            (None, Some(reloaded)) => Ok(reloaded),
            (None, None) => Ok(ReloadOutcome::Unchanged { generation }),
        }
    }

    /// Records and (unless it repeats the unit's last failure) announces a
    /// failure of unit `i`.
    fn fail(
        &self,
        state: &mut ReloadState,
        trigger: Trigger,
        i: usize,
        error: Error,
        id: Digest,
        served_generation: u64,
    ) -> Arc<ReloadFailure> {
        self.count(trigger, 1);
        let failure = Arc::new(ReloadFailure {
            trigger,
            identity: self.side.label(i).to_owned(),
            error,
            served_generation,
            at: SystemTime::now(),
        });
        self.record(
            i,
            LastAttempt {
                at: failure.at,
                trigger,
                error: Some(failure.error.to_string()),
            },
        );
        if state.last_failure[i] != Some(id) {
            state.last_failure[i] = Some(id);
            tracing::warn!(
                trigger = %trigger,
                identity = %failure.identity,
                generation = served_generation,
                error = %failure.error,
                "TLS reload failed; still using the previous certificate"
            );
            self.publish(ReloadEvent::Failed(failure.clone()));
        } else {
            tracing::debug!(
                trigger = %trigger,
                identity = %failure.identity,
                error = %failure.error,
                "TLS reload failed again"
            );
        }
        failure
    }

    /// Counts a swap (`outcome` 0) or a failure (1).
    fn count(&self, trigger: Trigger, outcome: usize) {
        let total = if outcome == 0 {
            &self.succeeded
        } else {
            &self.failed
        };
        total.fetch_add(1, Ordering::Relaxed);
        self.by_trigger[trigger.index()][outcome].fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, i: usize, attempt: LastAttempt) {
        lock(&self.records)[i].last_attempt = Some(attempt);
    }

    /// Reports, once per certificate, every leaf in use past its renewal
    /// time ([`CertInfo::renewal_due`]).
    pub(crate) fn check_renewals(&self) {
        let served = self.served.load();
        let now = SystemTime::now();
        let mut overdue = Vec::new();
        {
            let mut records = lock(&self.records);
            for (i, (pair, record)) in served.pairs.iter().zip(&mut *records).enumerate() {
                let Some((_, cert)) = self.side.leaf(i, pair) else {
                    continue;
                };
                let due = cert.renewal_due();
                let fingerprint = &cert.fingerprint_sha256;
                if now < due || record.overdue_reported.as_ref() == Some(fingerprint) {
                    continue;
                }
                record.overdue_reported = Some(fingerprint.clone());
                overdue.push(Arc::new(RenewalOverdue {
                    identity: self.side.label(i).to_owned(),
                    cert: cert.clone(),
                    due,
                    at: now,
                }));
            }
        }
        for report in overdue {
            tracing::warn!(
                identity = %report.identity,
                fingerprint = %report.cert.fingerprint_sha256,
                due = %crate::info::format_rfc3339(report.due),
                not_after = %crate::info::format_rfc3339(report.cert.not_after),
                "certificate renewal is overdue: no rotation has replaced it"
            );
            self.publish(ReloadEvent::RenewalOverdue(report));
        }
    }

    /// How long one reload may wait for the file system.
    pub(crate) fn read_timeout(&self) -> Duration {
        self.side.options().read_timeout
    }

    /// [`prepare`](Self::prepare) on a blocking thread (file reads may
    /// block on slow or network file systems: never on the async workers),
    /// for at most the read timeout. A read that times out keeps its thread
    /// until the file system answers; until then no other read starts.
    async fn prepare_bounded(
        self: &Arc<Self>,
        previous: &Arc<Served<S>>,
    ) -> Result<Attempt<S>, Failed> {
        let timeout = self.side.options().read_timeout;
        let timed_out = |still_waiting| {
            Err(failed(Error::ReadTimedOut {
                dir: self.side.timeout_dir(),
                timeout,
                still_waiting,
            }))
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
            let delay = this.side.options().read_delay;
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            this.prepare(&prev)
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(e)) => Err(failed(Error::Task(e))),
            Err(_) => timed_out(false),
        }
    }

    /// Reads, compares and builds, unit by unit; runs on a blocking thread.
    /// A unit that fails keeps its served pair; only building the config
    /// fails the attempt as a whole.
    fn prepare(&self, served: &Served<S>) -> Result<Attempt<S>, Failed> {
        let mut pairs = served.pairs.clone();
        let mut trust = served.trust.clone();
        let mut changed = Vec::new();
        let mut failures = Vec::new();
        for (i, current) in served.pairs.iter().enumerate() {
            let loaded = self.side.read(i).and_then(|read| {
                if read.1 == *S::content_hash(current) {
                    return Ok(None);
                }
                self.side.check(i, read, Some(current)).map(Some)
            });
            match loaded {
                Ok(None) => {}
                Ok(Some((pair, t))) => {
                    pairs[i] = Arc::new(pair);
                    if i == 0 {
                        trust = Arc::new(self.side.next_trust(t, &served.trust));
                    }
                    changed.push(i);
                }
                Err(failed) => failures.push((i, failed)),
            }
        }
        if changed.is_empty() {
            return Ok(Attempt {
                next: None,
                changed,
                failures,
            });
        }
        let config = self
            .side
            .config(&pairs, &trust, Some(served))
            .map_err(failed)?;
        Ok(Attempt {
            next: Some(Box::new(Served {
                config: Arc::new(config),
                pairs,
                trust,
                generation: served.generation + 1,
            })),
            changed,
            failures,
        })
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

    pub(crate) fn watcher_mode(&self) -> WatcherMode {
        WatcherMode::from_u8(self.watcher_mode.load(Ordering::Relaxed))
    }
}

/// Clears a flag when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The expiry policy: never trade a valid certificate for one that cannot
/// be used (expired, or valid only further in the future than the
/// tolerated clock skew); when the one in use has expired anyway, anything
/// parseable is no worse.
pub(crate) fn check_validity(
    cert_path: &Path,
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
            path: cert_path.to_owned(),
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
            path: cert_path.to_owned(),
            not_before: next.not_before,
            tolerance,
        });
    }
    Ok(())
}

/// Locks a std mutex, carrying on after a panic elsewhere: the data behind
/// these locks (subscriber lists, last attempt) stays consistent anyway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
