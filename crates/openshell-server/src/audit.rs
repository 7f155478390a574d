//! Turns TLS reload outcomes into OCSF events (JSONL written to the audit
//! sink, shorthand in the logs) and watches the served certificate's expiry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use openshell_ocsf::{
    ClientCaRef, Device, DeviceConfigStateChange, EventSource, OcsfSink, Product, SeverityId,
    TlsReloadDetails,
};
use tls_reload::{
    CertInfo, Degraded, IdentityStatus, ReloadEvent, ReloadFailure, ReloadOutcome,
    ReloadableAcceptor, Reloaded, RenewalOverdue, SniIdentity, TlsFiles, TlsStatus, Trigger,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::trust::TrustChange;

/// A served certificate this close to its notAfter is reported.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Who the events are about.
pub(crate) fn source() -> EventSource {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    EventSource::new(
        Product::new("openshell-gateway", "OpenShell", env!("CARGO_PKG_VERSION")),
        Device::new(hostname),
    )
}

fn with_files(details: TlsReloadDetails, files: &TlsFiles) -> TlsReloadDetails {
    let mut d = details
        .cert_path(files.cert_path())
        .key_path(files.key_path());
    if let Some(ca) = files.client_ca_path() {
        d = d.client_ca_path(ca);
    }
    if !files.crl_paths().is_empty() {
        d = d.crl_paths(files.crl_paths().iter().map(|p| p.as_path()));
    }
    d
}

/// The details of `cert`, served for the identity `label` from `files`:
/// what every event about a served certificate says.
fn served_details(cert: &CertInfo, label: &str, files: &TlsFiles) -> TlsReloadDetails {
    let details = TlsReloadDetails::new()
        .new_fingerprint(&cert.fingerprint_sha256)
        .serial(&cert.serial)
        .not_after(tls_reload::format_rfc3339(cert.not_after));
    with_files(details, files).identity(label)
}

/// The event for the initial load of one identity; High severity when its
/// leaf has expired.
pub(crate) fn loaded_event(
    source: &EventSource,
    generation: u64,
    identity: &IdentityStatus,
    files: &TlsFiles,
) -> DeviceConfigStateChange {
    let details = served_details(&identity.cert, &identity.label, files)
        .generation(generation)
        .trigger(Trigger::Startup.as_str());
    let builder = DeviceConfigStateChange::tls_loaded(source, details);
    if identity.cert.is_expired_at(SystemTime::now()) {
        builder
            .severity(SeverityId::High)
            .status_detail(format!(
                "serving an expired certificate (notAfter {}) until a valid one is written",
                tls_reload::format_rfc3339(identity.cert.not_after)
            ))
            .build()
    } else {
        builder.build()
    }
}

pub(crate) fn reloaded_event(
    source: &EventSource,
    r: &Reloaded,
    files: &TlsFiles,
) -> DeviceConfigStateChange {
    let details = served_details(&r.current, &r.identity, files)
        .previous_fingerprint(&r.previous.fingerprint_sha256)
        .generation(r.generation)
        .trigger(r.trigger.as_str());
    DeviceConfigStateChange::tls_reloaded(source, details).build()
}

pub(crate) fn failed_event(
    source: &EventSource,
    f: &ReloadFailure,
    served: &CertInfo,
    files: &TlsFiles,
) -> DeviceConfigStateChange {
    // The fingerprint stays the served one: nothing new is served.
    let details = with_files(TlsReloadDetails::new(), files)
        .identity(&f.identity)
        .previous_fingerprint(&served.fingerprint_sha256)
        .generation(f.served_generation)
        .trigger(f.trigger.as_str());
    DeviceConfigStateChange::tls_reload_failed(source, details, &f.error).build()
}

pub(crate) fn unchanged_event(
    source: &EventSource,
    trigger: Trigger,
    served: &TlsStatus,
    files: &TlsFiles,
) -> DeviceConfigStateChange {
    let details = with_files(TlsReloadDetails::new(), files)
        .previous_fingerprint(&served.cert.fingerprint_sha256)
        .generation(served.generation)
        .trigger(trigger.as_str());
    DeviceConfigStateChange::tls_reload_unchanged(source, details).build()
}

/// A change of client trust and the connections it ended.
pub(crate) fn trust_changed_event(
    source: &EventSource,
    change: &TrustChange,
    files: &TlsFiles,
) -> DeviceConfigStateChange {
    let refs = |cas: &[CertInfo]| -> Vec<ClientCaRef> {
        cas.iter()
            .map(|c| ClientCaRef::new(c.fingerprint_sha256.to_string(), c.subject.clone()))
            .collect()
    };
    let details = with_files(TlsReloadDetails::new(), files)
        .generation(change.generation)
        .client_cas_added(refs(&change.diff.added))
        .client_cas_removed(refs(&change.diff.removed))
        .crls_changed(change.diff.crls_changed)
        .connections_checked(change.recheck.checked)
        .connections_ended(change.recheck.ended);
    DeviceConfigStateChange::tls_client_trust_changed(source, details).build()
}

/// The outcome of a reload an operator asked for (SIGHUP, `ReloadTls`).
#[derive(Debug)]
pub(crate) struct ManualReload {
    pub(crate) trigger: Trigger,
    pub(crate) outcome: Result<ReloadOutcome, Arc<ReloadFailure>>,
}

pub(crate) fn degraded_event(source: &EventSource, d: &Degraded) -> DeviceConfigStateChange {
    DeviceConfigStateChange::tls_watcher_degraded(
        source,
        format!(
            "{}; polling every {}",
            d.reason,
            humantime::format_duration(d.poll_interval)
        ),
    )
    .build()
}

/// A served certificate whose renewal is overdue: whatever renews it has
/// stopped, weeks before it expires.
pub(crate) fn renewal_overdue_event(
    source: &EventSource,
    overdue: &RenewalOverdue,
    files: &TlsFiles,
) -> DeviceConfigStateChange {
    let details = served_details(&overdue.cert, &overdue.identity, files)
        .renewal_due(tls_reload::format_rfc3339(overdue.due));
    DeviceConfigStateChange::tls_renewal_overdue(source, details).build()
}

/// Writes audit events to their sink. The sink is written directly, never
/// through `tracing`, so no log filter decides whether an audit record
/// exists; a failed write is counted by the sink (and exported as
/// `openshell_audit_write_failures_total`) and logged once per burst.
///
/// The writes happen on a thread of their own: a sink on a hung file
/// system then delays audit records, never an async worker, and a
/// shutdown waits for it only a bounded time.
pub(crate) struct Audit {
    events: std::sync::mpsc::Sender<DeviceConfigStateChange>,
    /// Fires once every event sent has been written (or failed).
    written: tokio::sync::oneshot::Receiver<()>,
    sink_name: String,
}

impl Audit {
    /// Starts the writer thread.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub(crate) fn start(sink: Arc<OcsfSink>) -> std::io::Result<Self> {
        let (events, queue) = std::sync::mpsc::channel::<DeviceConfigStateChange>();
        let (done, written) = tokio::sync::oneshot::channel();
        let sink_name = sink.name();
        std::thread::Builder::new()
            .name("openshell-audit".into())
            .spawn(move || {
                let mut failing = 0u64;
                for event in queue {
                    write_one(&sink, &event, &mut failing);
                }
                let _ = done.send(());
            })?;
        Ok(Self {
            events,
            written,
            sink_name,
        })
    }

    pub(crate) fn publish(&mut self, event: &DeviceConfigStateChange) {
        // The shorthand for people reading the logs.
        tracing::info!(target: "openshell::audit", "{event}");
        if self.events.send(event.clone()).is_err() {
            tracing::error!("audit writer gone; audit event not written: {event}");
        }
    }

    /// Waits, at most `bound`, until every event published is written.
    pub(crate) async fn finish(self, bound: Duration) {
        let Self {
            events,
            written,
            sink_name,
        } = self;
        drop(events);
        if tokio::time::timeout(bound, written).await.is_err() {
            tracing::error!(
                sink = %sink_name,
                waited = ?bound,
                "the audit sink did not answer in time; the last audit events may be unwritten"
            );
        }
    }
}

/// Writes one event; logs the first failure of a burst (with the event,
/// so it is not lost from sight) and the recovery after one.
fn write_one(sink: &OcsfSink, event: &DeviceConfigStateChange, failing: &mut u64) {
    match sink.write(event) {
        Ok(()) => {
            if *failing > 0 {
                tracing::warn!(
                    sink = %sink.name(),
                    failed = *failing,
                    "audit events are written again after failures"
                );
                *failing = 0;
            }
        }
        Err(error) => {
            if *failing == 0 {
                tracing::error!(%error, "audit event not written: {event}");
            }
            *failing += 1;
        }
    }
}

/// Published failures remembered to recognise manual outcomes: more than
/// the manual reloads that can be in flight at once in practice.
const RECENT_FAILURES: usize = 64;

/// How long a stopping gateway waits for the audit sink.
pub(crate) const AUDIT_FLUSH_BOUND: Duration = Duration::from_secs(2);

/// Emits the startup event, then one event per reload outcome (every
/// outcome of a manual reload, see [`ManualReload`]) and an expiry warning
/// once per served certificate, until `stop`; events that arrived before
/// `stop` are written before it returns.
pub(crate) async fn run(
    acceptor: ReloadableAcceptor,
    sni: Vec<SniIdentity>,
    mut events: tls_reload::Subscription,
    mut manual: mpsc::UnboundedReceiver<ManualReload>,
    mut trust_changes: mpsc::UnboundedReceiver<TrustChange>,
    audit: Audit,
    stop: CancellationToken,
) {
    let mut ctx = Context {
        audit,
        source: source(),
        acceptor,
        sni,
        warned_for: std::collections::HashSet::new(),
        recent_failures: std::collections::VecDeque::new(),
    };
    let status = ctx.acceptor.status();
    for identity in &status.identities {
        let files = ctx.files_of(&identity.label).clone();
        ctx.audit.publish(&loaded_event(
            &ctx.source,
            status.generation,
            identity,
            &files,
        ));
    }
    ctx.check_expiry();

    let mut hourly = tokio::time::interval(EXPIRY_CHECK_EVERY);
    hourly.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = hourly.tick() => ctx.check_expiry(),
            event = events.recv() => match event {
                Some(event) => ctx.library(event),
                None => break,
            },
            Some(reload) = manual.recv() => {
                // The library published this reload's event (if any)
                // before `reload_now` returned: audit those first, so that
                // the manual outcome can tell what is already on record.
                while let Some(event) = events.try_recv() {
                    ctx.library(event);
                }
                ctx.manual(reload);
            }
            Some(change) = trust_changes.recv() => {
                // The reload that changed the trust is on record first.
                while let Some(event) = events.try_recv() {
                    ctx.library(event);
                }
                ctx.trust_changed(&change);
            }
        }
    }
    // Nothing that happened before the stop is left unaudited.
    while let Some(event) = events.try_recv() {
        ctx.library(event);
    }
    while let Ok(reload) = manual.try_recv() {
        ctx.manual(reload);
    }
    // A check of the open connections still running when the stop came
    // reports when it is done: wait for it (the trust watch ends at the
    // stop too, closing the channel), within the flush bound.
    let _ = tokio::time::timeout(AUDIT_FLUSH_BOUND, async {
        while let Some(change) = trust_changes.recv().await {
            ctx.trust_changed(&change);
        }
    })
    .await;
    ctx.audit.finish(AUDIT_FLUSH_BOUND).await;
}

/// What the audit task keeps between events.
struct Context {
    audit: Audit,
    source: EventSource,
    acceptor: ReloadableAcceptor,
    sni: Vec<SniIdentity>,
    /// Fingerprints of the served certificates already reported as close
    /// to expiry.
    warned_for: std::collections::HashSet<String>,
    /// The failures the library published lately: a manual failure that is
    /// one of them (the same `Arc`) is on record already. Concurrent manual
    /// reloads can finish in any order, hence more than the last one.
    recent_failures: std::collections::VecDeque<Arc<ReloadFailure>>,
}

impl Context {
    /// The files of an identity; the default identity's for a label not
    /// configured (a failure of a whole attempt is reported as `default`).
    fn files_of(&self, label: &str) -> &TlsFiles {
        crate::state::identity_files(&self.acceptor, &self.sni, label)
            .unwrap_or(self.acceptor.files())
    }

    /// The certificate an identity serves now.
    fn served(&self, label: &str) -> CertInfo {
        let status = self.acceptor.status();
        status
            .identities
            .into_iter()
            .find(|i| i.label == label)
            .map_or(status.cert, |i| i.cert)
    }

    fn trust_changed(&mut self, change: &TrustChange) {
        let event = trust_changed_event(&self.source, change, self.acceptor.files());
        self.audit.publish(&event);
    }

    fn failed(&mut self, f: &ReloadFailure) {
        let served = self.served(&f.identity);
        let event = failed_event(&self.source, f, &served, self.files_of(&f.identity));
        self.audit.publish(&event);
    }

    /// Everything the library publishes is audited, whatever started it.
    fn library(&mut self, event: ReloadEvent) {
        match event {
            ReloadEvent::Reloaded(r) => {
                let event = reloaded_event(&self.source, &r, self.files_of(&r.identity));
                self.audit.publish(&event);
                self.check_expiry();
            }
            ReloadEvent::Failed(f) => {
                self.failed(&f);
                if self.recent_failures.len() == RECENT_FAILURES {
                    self.recent_failures.pop_front();
                }
                self.recent_failures.push_back(f);
            }
            ReloadEvent::Degraded(d) => self.audit.publish(&degraded_event(&self.source, &d)),
            ReloadEvent::RenewalOverdue(o) => {
                tracing::warn!(
                    identity = %o.identity,
                    fingerprint = %o.cert.fingerprint_sha256,
                    due = %tls_reload::format_rfc3339(o.due),
                    "TLS certificate renewal overdue"
                );
                let event = renewal_overdue_event(&self.source, &o, self.files_of(&o.identity));
                self.audit.publish(&event);
            }
            _ => {}
        }
    }

    /// A manual reload's outcome, when the library did not publish it: an
    /// unchanged result, or a failure the library had reported before.
    fn manual(&mut self, reload: ManualReload) {
        match reload.outcome {
            // The library publishes every swap: audited there already.
            Ok(ReloadOutcome::Reloaded(_)) => {}
            Ok(_) => {
                let status = self.acceptor.status();
                self.audit.publish(&unchanged_event(
                    &self.source,
                    reload.trigger,
                    &status,
                    self.acceptor.files(),
                ));
            }
            Err(f) => {
                let published = self.recent_failures.iter().any(|p| Arc::ptr_eq(p, &f));
                if !published {
                    self.failed(&f);
                }
            }
        }
    }

    /// Reports each served certificate once when it is close to expiry.
    fn check_expiry(&mut self) {
        let status = self.acceptor.status();
        // Only what is served now is remembered: the set stays bounded.
        let served: Vec<String> = status
            .identities
            .iter()
            .map(|i| i.cert.fingerprint_sha256.to_string())
            .collect();
        self.warned_for.retain(|f| served.contains(f));
        for identity in &status.identities {
            let remaining = identity.cert.remaining_at(SystemTime::now());
            let fingerprint = identity.cert.fingerprint_sha256.to_string();
            if remaining <= EXPIRY_WARNING && !self.warned_for.contains(&fingerprint) {
                tracing::warn!(
                    identity = %identity.label,
                    fingerprint = %fingerprint,
                    remaining = %humantime::format_duration(Duration::from_secs(remaining.as_secs())),
                    "served TLS certificate expires soon"
                );
                let files = self.files_of(&identity.label);
                let details = served_details(&identity.cert, &identity.label, files)
                    .generation(status.generation);
                let event = DeviceConfigStateChange::tls_cert_expiring(&self.source, details);
                self.audit.publish(&event.build());
                self.warned_for.insert(fingerprint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Recheck;
    use tls_reload::ClientAuth;
    use tls_reload::testing::SecretVolumes;

    #[tokio::test]
    async fn a_trust_change_reported_after_the_stop_is_still_audited() {
        let volumes = SecretVolumes::new();
        let acceptor = ReloadableAcceptor::builder(volumes.mtls_files(ClientAuth::Required))
            .build()
            .unwrap();
        let log = volumes.dir().join("audit.jsonl");
        let sink = Arc::new(OcsfSink::file(&log).unwrap());
        let (_manual_tx, manual_rx) = mpsc::unbounded_channel();
        let (trust_tx, trust_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            acceptor.clone(),
            Vec::new(),
            acceptor.subscribe(),
            manual_rx,
            trust_rx,
            Audit::start(sink).unwrap(),
            stop.clone(),
        ));
        // The stop comes while a check of the connections still runs; it
        // reports afterwards.
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let trust = acceptor.client_trust().unwrap();
        let recheck = Recheck {
            checked: 3,
            verified: 1,
            ended: 1,
        };
        trust_tx
            .send(TrustChange {
                generation: 2,
                diff: trust.diff(&trust),
                recheck,
            })
            .unwrap();
        drop(trust_tx);
        task.await.unwrap();
        let written = std::fs::read_to_string(&log).unwrap();
        assert!(
            written.contains("tls_client_trust_changed"),
            "the late trust change is on record:\n{written}"
        );
    }
}
