//! Prometheus metrics, rendered in the text exposition format at scrape
//! time from the acceptor's status and the gateway's own counters.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tls_reload::{TlsStatus, Trigger, WatcherMode};
use tokio::sync::Semaphore;

use crate::accept::Port;

/// Outcome of one TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Success,
    Failure,
    Timeout,
}

impl Handshake {
    const ALL: [Handshake; 3] = [Self::Success, Self::Failure, Self::Timeout];

    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
        }
    }
}

/// A port's connection cap: its semaphore and its size.
type Cap = (Arc<Semaphore>, usize);

/// Counters the gateway keeps itself; the rest comes from the acceptor.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    handshakes: [AtomicU64; 3],
    /// Per port: connections closed at once because the cap was reached.
    rejected: [AtomicU64; 2],
    /// Per port: the semaphore bounding open connections, and its size.
    caps: Mutex<[Option<Cap>; 2]>,
}

impl Metrics {
    pub(crate) fn set_connection_cap(&self, port: Port, open: Arc<Semaphore>, max: usize) {
        self.caps.lock().unwrap_or_else(PoisonError::into_inner)[port as usize] = Some((open, max));
    }

    pub(crate) fn connection_rejected(&self, port: Port) {
        self.rejected[port as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handshake(&self, outcome: Handshake) {
        self.handshakes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handshakes(&self, outcome: Handshake) -> u64 {
        self.handshakes[outcome as usize].load(Ordering::Relaxed)
    }

    /// The metrics page. `tls` is `None` when TLS is disabled;
    /// `audit_failures` is the audit sink's count of unwritten events.
    pub(crate) fn render(&self, tls: Option<&TlsStatus>, audit_failures: u64) -> String {
        let mut out = String::with_capacity(2048);
        let w = &mut out;
        if let Some(status) = tls {
            header(
                w,
                "openshell_tls_reload_total",
                "counter",
                "TLS reload attempts that swapped (success) or failed, by trigger.",
            );
            for count in status
                .by_trigger
                .iter()
                .filter(|c| c.trigger != Trigger::Startup)
            {
                let t = count.trigger.as_str();
                line(
                    w,
                    &format!("openshell_tls_reload_total{{result=\"success\",trigger=\"{t}\"}}"),
                    count.succeeded as f64,
                );
                line(
                    w,
                    &format!("openshell_tls_reload_total{{result=\"failure\",trigger=\"{t}\"}}"),
                    count.failed as f64,
                );
            }
            header(
                w,
                "openshell_tls_cert_not_after_seconds",
                "gauge",
                "notAfter of the served leaf certificate, Unix seconds.",
            );
            line(
                w,
                "openshell_tls_cert_not_after_seconds",
                status.cert.not_after_unix() as f64,
            );
            header(
                w,
                "openshell_tls_cert_not_before_seconds",
                "gauge",
                "notBefore of the served leaf certificate, Unix seconds.",
            );
            line(
                w,
                "openshell_tls_cert_not_before_seconds",
                status.cert.not_before_unix() as f64,
            );
            if let Some(earliest) = status.client_ca.iter().map(|c| c.not_after_unix()).min() {
                header(
                    w,
                    "openshell_tls_client_ca_not_after_seconds",
                    "gauge",
                    "Earliest notAfter among the trusted client CA certificates, Unix seconds.",
                );
                line(
                    w,
                    "openshell_tls_client_ca_not_after_seconds",
                    earliest as f64,
                );
            }
            header(
                w,
                "openshell_tls_config_generation",
                "gauge",
                "Generation of the served TLS config: 1 at startup, +1 per reload.",
            );
            line(
                w,
                "openshell_tls_config_generation",
                status.generation as f64,
            );
            header(
                w,
                "openshell_tls_last_reload_success_timestamp_seconds",
                "gauge",
                "When the served TLS config was loaded, Unix seconds.",
            );
            line(
                w,
                "openshell_tls_last_reload_success_timestamp_seconds",
                unix_seconds(status.loaded_at),
            );
            header(
                w,
                "openshell_tls_watcher_mode",
                "gauge",
                "How TLS file changes are noticed: 1 for the current mode.",
            );
            for mode in [WatcherMode::Off, WatcherMode::Events, WatcherMode::Polling] {
                let v = if status.watcher == mode { 1.0 } else { 0.0 };
                line(
                    w,
                    &format!("openshell_tls_watcher_mode{{mode=\"{mode}\"}}"),
                    v,
                );
            }
        }
        header(
            w,
            "openshell_tls_handshakes_total",
            "counter",
            "TLS handshakes by result.",
        );
        for outcome in Handshake::ALL {
            line(
                w,
                &format!(
                    "openshell_tls_handshakes_total{{result=\"{}\"}}",
                    outcome.label()
                ),
                self.handshakes(outcome) as f64,
            );
        }
        header(
            w,
            "openshell_connections_open",
            "gauge",
            "Open connections, by port (main: the TLS port; health: the probe port).",
        );
        let caps = self
            .caps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for port in Port::ALL {
            if let Some((open, max)) = &caps[port as usize] {
                let n = max.saturating_sub(open.available_permits());
                line(
                    w,
                    &format!("openshell_connections_open{{port=\"{}\"}}", port.label()),
                    n as f64,
                );
            }
        }
        header(
            w,
            "openshell_connections_rejected_total",
            "counter",
            "Connections closed on accept because the port's connection cap was reached.",
        );
        for port in Port::ALL {
            line(
                w,
                &format!(
                    "openshell_connections_rejected_total{{port=\"{}\"}}",
                    port.label()
                ),
                self.rejected[port as usize].load(Ordering::Relaxed) as f64,
            );
        }
        header(
            w,
            "openshell_audit_write_failures_total",
            "counter",
            "OCSF audit events that could not be written to the audit sink.",
        );
        line(
            w,
            "openshell_audit_write_failures_total",
            audit_failures as f64,
        );
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(w: &mut String, series: &str, value: f64) {
    let _ = writeln!(w, "{series} {value}");
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
