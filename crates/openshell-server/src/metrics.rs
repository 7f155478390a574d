//! Prometheus metrics through `prometheus-client`: the gateway's own
//! counters live here; the TLS series are read from the acceptor's status
//! at scrape time, so they can never disagree with `/v1/tls`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tls_reload::{ClientTrust, TlsStatus, Trigger, WatcherMode};
use tokio::sync::Semaphore;

use crate::accept::Port;
use crate::trust::Ended;

/// The `Content-Type` of `/metrics`: the Prometheus text format 0.0.4.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Outcome of one TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Success,
    Failure,
    Timeout,
}

impl Handshake {
    /// In declaration order, so `outcome as usize` indexes it.
    const ALL: [Handshake; 3] = [Self::Success, Self::Failure, Self::Timeout];

    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaLabel {
    /// The CA's short fingerprint (its first 8 bytes).
    ca: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
    trigger: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabel {
    /// `default`, or the first server name of an SNI identity.
    identity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

/// A port's connection cap: its semaphore and its size.
type Cap = (Arc<Semaphore>, usize);

/// Counters the gateway keeps itself; the rest comes from the acceptor.
#[derive(Debug)]
pub(crate) struct Metrics {
    handshakes: Family<ResultLabel, Counter>,
    /// Per port: connections closed at once because the cap was reached.
    rejected: Family<PortLabel, Counter>,
    /// The series of `handshakes` by [`Handshake`] and of `rejected` by
    /// [`Port`], looked up once: a handshake then adds to an atomic
    /// without the family's lock or a label hash.
    handshake_series: [Counter; 3],
    rejected_series: [Counter; 2],
    /// Connections the gateway ended, by [`Ended`] reason, each series
    /// looked up once.
    ended: Family<ReasonLabel, Counter>,
    ended_series: [Counter; 4],
    /// Checks of the open connections after a change of client trust, and
    /// how long the last one took.
    rechecks: Counter,
    last_recheck_seconds: Gauge<f64, AtomicU64>,
    /// Per port: the semaphore bounding open connections, and its size.
    caps: Mutex<[Option<Cap>; 2]>,
}

impl Default for Metrics {
    fn default() -> Self {
        let handshakes = Family::<ResultLabel, Counter>::default();
        let rejected = Family::<PortLabel, Counter>::default();
        // Every series is on the page from the start, at 0.
        let handshake_series = Handshake::ALL.map(|outcome| {
            handshakes.get_or_create_owned(&ResultLabel {
                result: outcome.label(),
            })
        });
        let rejected_series = Port::ALL.map(|port| rejected.get_or_create_owned(&port_label(port)));
        let ended = Family::<ReasonLabel, Counter>::default();
        let ended_series = Ended::ALL.map(|reason| {
            ended.get_or_create_owned(&ReasonLabel {
                reason: reason.label(),
            })
        });
        Self {
            handshakes,
            rejected,
            handshake_series,
            rejected_series,
            ended,
            ended_series,
            rechecks: Counter::default(),
            last_recheck_seconds: Gauge::default(),
            caps: Mutex::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn set_connection_cap(&self, port: Port, open: Arc<Semaphore>, max: usize) {
        self.caps.lock().unwrap_or_else(PoisonError::into_inner)[port as usize] = Some((open, max));
    }

    pub(crate) fn connection_rejected(&self, port: Port) {
        self.rejected_series[port as usize].inc();
    }

    pub(crate) fn handshake(&self, outcome: Handshake) {
        self.handshake_series[outcome as usize].inc();
    }

    /// The gateway ended a connection for `reason`.
    pub(crate) fn connection_ended(&self, reason: Ended) {
        self.ended_series[reason as usize].inc();
    }

    /// The open connections were checked against a new client trust.
    pub(crate) fn trust_rechecked(&self, took: std::time::Duration) {
        self.rechecks.inc();
        self.last_recheck_seconds.set(took.as_secs_f64());
    }

    /// The metrics page. `tls` is `None` when TLS is disabled;
    /// `audit_failures` is the audit sink's count of unwritten events.
    pub(crate) fn render(
        &self,
        tls: Option<&TlsStatus>,
        trust: Option<&ClientTrust>,
        audit_failures: u64,
    ) -> String {
        let mut registry = Registry::default();
        if let Some(status) = tls {
            register_tls(&mut registry, status);
        }
        if let Some(trust) = trust {
            register_client_cas(&mut registry, trust);
        }
        registry.register(
            "openshell_tls_connections_ended",
            "Connections the gateway ended, by reason: trust_changed (the client certificate no \
             longer verifies after a change of client trust), client_cert_expired, max_age, shutdown",
            self.ended.clone(),
        );
        registry.register(
            "openshell_tls_trust_rechecks",
            "Checks of the open connections after a change of client trust",
            self.rechecks.clone(),
        );
        registry.register(
            "openshell_tls_trust_recheck_last_duration_seconds",
            "How long the last check of the open connections after a change of client trust took",
            self.last_recheck_seconds.clone(),
        );
        registry.register(
            "openshell_tls_handshakes",
            "TLS handshakes by result",
            self.handshakes.clone(),
        );
        let open = Family::<PortLabel, Gauge>::default();
        let caps = self
            .caps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for port in Port::ALL {
            if let Some((sem, max)) = &caps[port as usize] {
                let n = max.saturating_sub(sem.available_permits());
                open.get_or_create(&port_label(port))
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        registry.register(
            "openshell_connections_open",
            "Open connections, by port (main: the TLS port; health: the probe port)",
            open,
        );
        registry.register(
            "openshell_connections_rejected",
            "Connections closed on accept because the port's connection cap was reached",
            self.rejected.clone(),
        );
        let audit = Counter::<u64>::default();
        audit.inc_by(audit_failures);
        registry.register(
            "openshell_audit_write_failures",
            "OCSF audit events that could not be written to the audit sink",
            audit,
        );
        let mut page = String::with_capacity(2048);
        // Writing into a `String` cannot fail.
        let _ = prometheus_text::encode(&mut page, &registry);
        page
    }
}

/// Per trusted client CA: handshakes attributed to it and when it was
/// last used, labelled by short fingerprint (bounded by the bundle).
fn register_client_cas(registry: &mut Registry, trust: &ClientTrust) {
    let handshakes = Family::<CaLabel, Counter>::default();
    let last_used = Family::<CaLabel, Gauge>::default();
    for ca in trust.cas() {
        let label = CaLabel {
            ca: ca.short_fingerprint().to_owned(),
        };
        handshakes.get_or_create(&label).inc_by(ca.handshakes());
        if let Some(at) = ca.last_used() {
            let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            last_used
                .get_or_create(&label)
                .set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
    }
    registry.register(
        "openshell_tls_client_handshakes",
        "Successful mTLS handshakes by the trusted client CA the client's chain ends at (ca: the \
         first 8 bytes of its SHA-256 fingerprint; subjects are in /v1/tls)",
        handshakes,
    );
    registry.register(
        "openshell_tls_client_ca_last_used_timestamp_seconds",
        "When a handshake was last attributed to each trusted client CA, Unix seconds (absent: \
         never since it entered the bundle)",
        last_used,
    );
}

/// The series read from the acceptor's status.
fn register_tls(registry: &mut Registry, status: &TlsStatus) {
    let reloads = Family::<ReloadLabels, Counter>::default();
    for count in status
        .by_trigger
        .iter()
        .filter(|c| c.trigger != Trigger::Startup)
    {
        let trigger = count.trigger.as_str();
        for (result, n) in [("success", count.succeeded), ("failure", count.failed)] {
            reloads
                .get_or_create(&ReloadLabels { result, trigger })
                .inc_by(n);
        }
    }
    registry.register(
        "openshell_tls_reload",
        "TLS reload attempts that swapped (success) or failed, by trigger",
        reloads,
    );
    let gauge = |value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        g
    };
    let not_after = Family::<IdentityLabel, Gauge>::default();
    let not_before = Family::<IdentityLabel, Gauge>::default();
    let overdue = Family::<IdentityLabel, Gauge>::default();
    for identity in &status.identities {
        let label = IdentityLabel {
            identity: identity.label.clone(),
        };
        not_after
            .get_or_create(&label)
            .set(identity.cert.not_after_unix());
        not_before
            .get_or_create(&label)
            .set(identity.cert.not_before_unix());
        overdue
            .get_or_create(&label)
            .set(i64::from(identity.renewal_overdue));
    }
    registry.register(
        "openshell_tls_cert_not_after_seconds",
        "notAfter of each identity's served leaf certificate, Unix seconds",
        not_after,
    );
    registry.register(
        "openshell_tls_cert_not_before_seconds",
        "notBefore of each identity's served leaf certificate, Unix seconds",
        not_before,
    );
    registry.register(
        "openshell_tls_renewal_overdue",
        "1 when an identity's served leaf is past its renewal time without having been replaced",
        overdue,
    );
    if let Some(earliest) = status.client_ca.iter().map(|c| c.not_after_unix()).min() {
        registry.register(
            "openshell_tls_client_ca_not_after_seconds",
            "Earliest notAfter among the trusted client CA certificates, Unix seconds",
            gauge(earliest),
        );
    }
    registry.register(
        "openshell_tls_config_generation",
        "Generation of the served TLS config: 1 at startup, +1 per reload",
        gauge(i64::try_from(status.generation).unwrap_or(i64::MAX)),
    );
    let loaded = Gauge::<f64, AtomicU64>::default();
    loaded.set(
        status
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    registry.register(
        "openshell_tls_last_reload_success_timestamp_seconds",
        "When the served TLS config was loaded, Unix seconds",
        loaded,
    );
    let modes = Family::<ModeLabel, Gauge>::default();
    for mode in [WatcherMode::Off, WatcherMode::Events, WatcherMode::Polling] {
        modes
            .get_or_create(&ModeLabel {
                mode: mode.as_str(),
            })
            .set(i64::from(status.watcher == mode));
    }
    registry.register(
        "openshell_tls_watcher_mode",
        "How TLS file changes are noticed: 1 for the current mode",
        modes,
    );
}

fn port_label(port: Port) -> PortLabel {
    PortLabel { port: port.label() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_keeps_its_name_and_labels_and_the_page_parses() {
        let metrics = Metrics::default();
        metrics.handshake(Handshake::Timeout);
        metrics.connection_rejected(Port::Health);
        metrics.set_connection_cap(Port::Main, Arc::new(Semaphore::new(10)), 12);
        metrics.connection_ended(Ended::TrustChanged);
        let page = metrics.render(None, None, 3);
        for line in [
            "# TYPE openshell_tls_handshakes_total counter",
            "openshell_tls_handshakes_total{result=\"success\"} 0",
            "openshell_tls_handshakes_total{result=\"failure\"} 0",
            "openshell_tls_handshakes_total{result=\"timeout\"} 1",
            "# TYPE openshell_connections_open gauge",
            "openshell_connections_open{port=\"main\"} 2",
            "openshell_connections_rejected_total{port=\"health\"} 1",
            "openshell_connections_rejected_total{port=\"main\"} 0",
            "openshell_audit_write_failures_total 3",
            "openshell_tls_connections_ended_total{reason=\"trust_changed\"} 1",
            "openshell_tls_connections_ended_total{reason=\"shutdown\"} 0",
            "openshell_tls_trust_rechecks_total 0",
        ] {
            assert!(page.lines().any(|l| l == line), "no {line} in\n{page}");
        }
        let scrape = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_owned())))
            .expect("Prometheus text format");
        assert_eq!(scrape.samples.len(), 3 + 1 + 2 + 1 + 4 + 1 + 1, "{page}");
    }
}
