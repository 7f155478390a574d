//! The reload engine: the state every clone of an acceptor and its watcher
//! share, one reload at a time (read, compare, check, build, swap) over
//! every identity, each with its own last good pair and dedupe of repeated
//! failures, the expiry policy and the check for overdue renewals.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use tokio::sync::mpsc;

use crate::config::{LoadOptions, TlsFiles};
use crate::error::Error;
use crate::event::{
    Degraded, IdentityStatus, LastAttempt, ReloadCount, ReloadEvent, ReloadFailure, ReloadOutcome,
    Reloaded, RenewalOverdue, Subscription, TlsStatus, Trigger, WatcherMode,
};
use crate::fingerprint::Fingerprint;
use crate::info::CertInfo;
use crate::load::{Digest, Inputs, Parsed, Resumption, digest_str};
use crate::sni::{IdentitySpec, SniIdentity, SniResolver, covered_by};

/// One identity's served pair and what it was loaded from.
struct Pair {
    certified_key: Arc<CertifiedKey>,
    cert: CertInfo,
    chain_len: usize,
    loaded_at: SystemTime,
    /// Digest of the identity's files (for the default identity, client
    /// trust included).
    content_hash: Digest,
}

/// Which clients are trusted: from the default identity's files.
struct Trust {
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    client_ca: Vec<CertInfo>,
    hash: Digest,
    client: Option<Arc<crate::trust::ClientTrust>>,
}

impl Trust {
    /// Keeps the usage counts of the CAs `previous` trusted too.
    fn inherit_usage(mut self, previous: &Trust) -> Self {
        if let (Some(new), Some(old)) = (
            self.client.as_mut().and_then(Arc::get_mut),
            &previous.client,
        ) {
            new.inherit_usage(old);
        }
        self
    }
}

/// A config together with what it was built from.
struct Served {
    config: Arc<ServerConfig>,
    /// One per identity, in the order of `Shared::specs` (default first).
    pairs: Vec<Arc<Pair>>,
    trust: Arc<Trust>,
    generation: u64,
}

/// What every attempt loads with: the identities (default first), the
/// options and the crypto provider.
struct Loader {
    specs: Vec<IdentitySpec>,
    load: LoadOptions,
    provider: Arc<CryptoProvider>,
}

impl Loader {
    /// Reads identity `i`'s files; the digest tells whether they are those
    /// served.
    fn read(&self, i: usize) -> Result<(Inputs, Digest), Failed> {
        let files = &self.specs[i].files;
        match Inputs::read(files, self.load.max_file_size) {
            Ok(inputs) => {
                let hash = inputs.content_hash(files.client_auth);
                Ok((inputs, hash))
            }
            Err(e) => {
                let id = digest_str(&e.to_string());
                Err(Box::new((e, id)))
            }
        }
    }

    /// Parses and checks what [`read`](Self::read) gave for identity `i`:
    /// the pair matches, the leaf covers the identity's names and, when
    /// `served` is given, passes the expiry policy against the served
    /// leaf. Returns the pair and the trust (which only the default
    /// identity's files carry).
    fn check(
        &self,
        i: usize,
        (inputs, content_hash): (Inputs, Digest),
        served: Option<&Pair>,
    ) -> Result<(Pair, Trust), Failed> {
        let spec = &self.specs[i];
        let files = &spec.files;
        let checked = Parsed::parse(files, &inputs, &self.provider).and_then(|parsed| {
            if let Some(served) = served {
                check_validity(files, &self.load, &served.cert, &parsed.cert)?;
            }
            check_names(spec, &parsed.cert)?;
            Ok(parsed)
        });
        let parsed = checked.map_err(|e| Box::new((e, content_hash)))?;
        Ok((
            Pair {
                chain_len: parsed.certified_key.cert.len(),
                certified_key: parsed.certified_key,
                cert: parsed.cert,
                loaded_at: SystemTime::now(),
                content_hash,
            },
            Trust {
                verifier: parsed.verifier,
                client_ca: parsed.client_ca,
                hash: inputs.trust_hash(files.client_auth),
                client: parsed.client_trust.map(Arc::new),
            },
        ))
    }

    /// Builds the config serving `pairs` (one per identity, default
    /// first): an immutable resolver over them.
    fn build(
        &self,
        pairs: Vec<Arc<Pair>>,
        trust: Arc<Trust>,
        resumption: Resumption,
        generation: u64,
    ) -> Result<Served, Error> {
        let resolver = SniResolver::new(
            pairs[0].certified_key.clone(),
            self.specs
                .iter()
                .zip(&pairs)
                .skip(1)
                .map(|(spec, pair)| (spec.names.as_slice(), pair.certified_key.clone())),
        );
        let config = crate::load::server_config(
            &self.provider,
            &self.load,
            trust.verifier.as_ref(),
            Arc::new(resolver),
            resumption,
        )?;
        Ok(Served {
            config: Arc::new(config),
            pairs,
            trust,
            generation,
        })
    }
}

/// Every configured name of an SNI identity must be covered by its leaf.
fn check_names(spec: &IdentitySpec, cert: &CertInfo) -> Result<(), Error> {
    match spec.names.iter().find(|n| !covered_by(n, &cert.dns_names)) {
        Some(name) => Err(Error::NameNotCovered {
            identity: spec.label.clone(),
            name: name.clone(),
            path: spec.files.cert.clone(),
            dns_names: cert.dns_names.clone(),
        }),
        None => Ok(()),
    }
}

struct ReloadState {
    /// Per identity, the identity of its last failure, so that a retry that
    /// fails the same way is not reported again.
    last_failure: Vec<Option<Digest>>,
}

/// Per identity, what the status and the overdue check remember.
#[derive(Default, Clone)]
struct IdentityRecord {
    last_attempt: Option<LastAttempt>,
    /// The certificate last reported as overdue.
    overdue_reported: Option<Fingerprint>,
}

/// State shared by every clone of an acceptor and its watcher.
pub(crate) struct Shared {
    /// The default identity's files (and client trust).
    pub(crate) files: TlsFiles,
    loader: Loader,
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
    /// One per identity, in the order of `specs`.
    records: Mutex<Vec<IdentityRecord>>,
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

/// What one attempt found, identity by identity.
struct Attempt {
    /// The config to publish, when some identity changed.
    next: Option<Box<Served>>,
    /// Indexes of the identities that changed.
    changed: Vec<usize>,
    /// The identities that failed, keeping their served pairs.
    failures: Vec<(usize, Failed)>,
}

impl Shared {
    /// Loads the files of every identity for the first time: generation 1.
    /// An expired leaf is served (and logged at error level) so that a
    /// renewal can heal the server; a missing or invalid file, or a leaf
    /// that does not cover its identity's names, fails.
    pub(crate) fn load(
        files: TlsFiles,
        sni: &[SniIdentity],
        load: LoadOptions,
    ) -> Result<Self, Error> {
        files.check()?;
        let loader = Loader {
            specs: IdentitySpec::all(&files, sni).map_err(Error::Settings)?,
            load,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let load_one = |i: usize| {
            let read = loader.read(i).map_err(|f| f.0)?;
            let (pair, trust) = loader.check(i, read, None).map_err(|f| f.0)?;
            if pair.cert.is_expired_at(SystemTime::now()) {
                tracing::error!(
                    identity = %loader.specs[i].label,
                    path = %loader.specs[i].files.cert.display(),
                    fingerprint = %pair.cert.fingerprint_sha256,
                    not_after = %crate::info::format_rfc3339(pair.cert.not_after),
                    "serving an expired certificate until a valid one is written"
                );
            }
            Ok::<_, Error>((Arc::new(pair), trust))
        };
        // The default identity comes first and carries the client trust.
        let (default, trust) = load_one(0)?;
        let mut pairs = vec![default];
        for i in 1..loader.specs.len() {
            pairs.push(load_one(i)?.0);
        }
        let resumption = Resumption::fresh(loader.load.session_cache_size)?;
        let served = loader.build(pairs, Arc::new(trust), resumption, 1)?;
        let count = loader.specs.len();
        Ok(Self {
            files,
            loader,
            served: ArcSwap::from_pointee(served),
            reload_lock: tokio::sync::Mutex::new(ReloadState {
                last_failure: vec![None; count],
            }),
            reading: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            by_trigger: Default::default(),
            last_attempt: Mutex::new(None),
            records: Mutex::new(vec![IdentityRecord::default(); count]),
            degraded: Mutex::new(None),
            watcher_mode: AtomicU8::new(WatcherMode::Off.to_u8()),
        })
    }

    /// The config served right now.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.served.load().config.clone()
    }

    /// The client trust served right now.
    pub(crate) fn client_trust(&self) -> Option<Arc<crate::trust::ClientTrust>> {
        self.served.load().trust.client.clone()
    }

    /// The generation and default leaf served right now.
    pub(crate) fn served_cert(&self) -> (u64, CertInfo) {
        let served = self.served.load();
        (served.generation, served.pairs[0].cert.clone())
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
        let default = &served.pairs[0];
        let now = SystemTime::now();
        let records = lock(&self.records).clone();
        TlsStatus {
            generation: served.generation,
            cert: default.cert.clone(),
            chain_len: default.chain_len,
            client_ca: served.trust.client_ca.clone(),
            client_auth: self.files.client_auth,
            loaded_at: default.loaded_at,
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
            identities: self
                .loader
                .specs
                .iter()
                .zip(&served.pairs)
                .zip(records)
                .map(|((spec, pair), record)| IdentityStatus {
                    label: spec.label.clone(),
                    names: spec.names.clone(),
                    cert: pair.cert.clone(),
                    chain_len: pair.chain_len,
                    loaded_at: pair.loaded_at,
                    last_attempt: record.last_attempt,
                    renewal_overdue: now >= pair.cert.renewal_due(),
                })
                .collect(),
        }
    }

    /// One reload attempt over every identity. Each identity that changed
    /// is reported as reloaded, each that failed as failed (once per
    /// distinct failure); all changes of the attempt are published in one
    /// new config. Returns the first failure if any identity failed, else
    /// the first reload, else unchanged. Afterwards, overdue renewals are
    /// checked.
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
        previous: &Served,
        attempt: Attempt,
    ) -> Result<ReloadOutcome, Arc<ReloadFailure>> {
        let mut generation = previous.generation;
        let mut first_reloaded = None;
        // An identity that did not fail this time starts afresh: its next
        // failure is news.
        for (i, slot) in state.last_failure.iter_mut().enumerate() {
            if !attempt.failures.iter().any(|(failed, _)| *failed == i) {
                *slot = None;
            }
        }
        if let Some(next) = attempt.next {
            let next: Arc<Served> = Arc::from(next);
            generation = next.generation;
            self.served.store(next.clone());
            for &i in &attempt.changed {
                let reloaded = Arc::new(Reloaded {
                    trigger,
                    identity: self.loader.specs[i].label.clone(),
                    generation,
                    previous: previous.pairs[i].cert.clone(),
                    current: next.pairs[i].cert.clone(),
                    client_ca: next.trust.client_ca.clone(),
                    trust_changed: i == 0 && next.trust.hash != previous.trust.hash,
                    at: next.pairs[i].loaded_at,
                });
                self.count(trigger, 0);
                self.record(
                    i,
                    LastAttempt {
                        at: reloaded.at,
                        trigger,
                        error: None,
                    },
                );
                tracing::info!(
                    trigger = %trigger,
                    identity = %reloaded.identity,
                    generation,
                    fingerprint = %reloaded.current.fingerprint_sha256,
                    previous_fingerprint = %reloaded.previous.fingerprint_sha256,
                    trust_changed = reloaded.trust_changed,
                    "TLS config reloaded"
                );
                self.publish(ReloadEvent::Reloaded(reloaded.clone()));
                first_reloaded.get_or_insert(reloaded);
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
            (None, Some(reloaded)) => Ok(ReloadOutcome::Reloaded(reloaded)),
            (None, None) => Ok(ReloadOutcome::Unchanged { generation }),
        }
    }

    /// Records and (unless it repeats the identity's last failure)
    /// announces a failure of identity `i`.
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
            identity: self.loader.specs[i].label.clone(),
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
                "TLS reload failed; still serving the previous certificate"
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
        lock(&self.records)[i].last_attempt = Some(attempt.clone());
        *lock(&self.last_attempt) = Some(attempt);
    }

    /// Reports, once per certificate, every served leaf past its renewal
    /// time ([`CertInfo::renewal_due`]).
    pub(crate) fn check_renewals(&self) {
        let served = self.served.load();
        let now = SystemTime::now();
        let mut overdue = Vec::new();
        {
            let mut records = lock(&self.records);
            for ((spec, pair), record) in self
                .loader
                .specs
                .iter()
                .zip(&served.pairs)
                .zip(&mut *records)
            {
                let due = pair.cert.renewal_due();
                let fingerprint = &pair.cert.fingerprint_sha256;
                if now < due || record.overdue_reported.as_ref() == Some(fingerprint) {
                    continue;
                }
                record.overdue_reported = Some(fingerprint.clone());
                overdue.push(Arc::new(RenewalOverdue {
                    identity: spec.label.clone(),
                    cert: pair.cert.clone(),
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
        self.loader.load.read_timeout
    }

    /// [`prepare`](Self::prepare) on a blocking thread (file reads may
    /// block on slow or network file systems: never on the async workers),
    /// for at most the read timeout. A read that times out keeps its thread
    /// until the file system answers; until then no other read starts.
    async fn prepare_bounded(self: &Arc<Self>, previous: &Arc<Served>) -> Result<Attempt, Failed> {
        let failed = |error: Error| {
            let id = digest_str(&error.to_string());
            Err(Box::new((error, id)))
        };
        let timeout = self.loader.load.read_timeout;
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
            if !this.loader.load.read_delay.is_zero() {
                std::thread::sleep(this.loader.load.read_delay);
            }
            this.prepare(&prev)
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(e)) => failed(Error::Task(e)),
            Err(_) => timed_out(false),
        }
    }

    /// Reads, compares and builds, identity by identity; runs on a blocking
    /// thread. An identity that fails keeps its served pair; only building
    /// the config fails the attempt as a whole.
    fn prepare(&self, served: &Served) -> Result<Attempt, Failed> {
        let mut pairs = served.pairs.clone();
        let mut trust = served.trust.clone();
        let mut changed = Vec::new();
        let mut failures = Vec::new();
        for (i, current) in served.pairs.iter().enumerate() {
            let loaded = self.loader.read(i).and_then(|read| {
                if read.1 == current.content_hash {
                    return Ok(None);
                }
                self.loader.check(i, read, Some(current)).map(Some)
            });
            match loaded {
                Ok(None) => {}
                Ok(Some((pair, t))) => {
                    pairs[i] = Arc::new(pair);
                    if i == 0 {
                        trust = Arc::new(t.inherit_usage(&served.trust));
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
        let fail = |e: Error| {
            let id = digest_str(&e.to_string());
            Box::new((e, id))
        };
        let resumption = if trust.hash == served.trust.hash {
            Resumption::of(&served.config)
        } else {
            Resumption::fresh(self.loader.load.session_cache_size).map_err(fail)?
        };
        let next = self
            .loader
            .build(pairs, trust, resumption, served.generation + 1)
            .map_err(fail)?;
        Ok(Attempt {
            next: Some(Box::new(next)),
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
