//! The event builder and the TLS event constructors.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::enums::{ActivityId, SeverityId, StateId, StatusId};
use crate::event::{DeviceConfigStateChange, EventSource};
use crate::tls::TlsReloadDetails;

/// The kinds of TLS event, recorded in `metadata.event_code` so that a
/// parsed event renders the same shorthand as the one that was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Loaded,
    Reloaded,
    ReloadFailed,
    WatcherDegraded,
    CertExpiring,
    ReloadUnchanged,
    RenewalOverdue,
    TrustChanged,
}

impl Kind {
    const ALL: [Self; 8] = [
        Self::Loaded,
        Self::Reloaded,
        Self::ReloadFailed,
        Self::WatcherDegraded,
        Self::CertExpiring,
        Self::ReloadUnchanged,
        Self::RenewalOverdue,
        Self::TrustChanged,
    ];

    pub(crate) const fn code(self) -> &'static str {
        match self {
            Self::Loaded => "tls_loaded",
            Self::Reloaded => "tls_reloaded",
            Self::ReloadFailed => "tls_reload_failed",
            Self::WatcherDegraded => "tls_watcher_degraded",
            Self::CertExpiring => "tls_cert_expiring",
            Self::ReloadUnchanged => "tls_reload_unchanged",
            Self::RenewalOverdue => "tls_renewal_overdue",
            Self::TrustChanged => "tls_client_trust_changed",
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The message, severity, status and state its constructor presets.
    const fn preset(self) -> (&'static str, SeverityId, StatusId, StateId) {
        use SeverityId::{Informational, Low, Medium};
        use StateId::{Enabled, Unknown};
        use StatusId::{Failure, Success};
        match self {
            Self::Loaded => (LOADED, Informational, Success, Enabled),
            Self::Reloaded => (RELOADED, Informational, Success, Enabled),
            Self::ReloadFailed => (RELOAD_FAILED, Medium, Failure, Unknown),
            Self::WatcherDegraded => (WATCHER_DEGRADED, Low, Failure, Unknown),
            Self::CertExpiring => (CERT_EXPIRING, Medium, Success, Enabled),
            Self::ReloadUnchanged => (RELOAD_UNCHANGED, Informational, Success, Enabled),
            Self::RenewalOverdue => (RENEWAL_OVERDUE, Medium, Success, Enabled),
            Self::TrustChanged => (TRUST_CHANGED, Informational, Success, Enabled),
        }
    }
}

/// Message of [`DeviceConfigStateChange::tls_loaded`].
const LOADED: &str = "TLS certificate config loaded";
/// Message of [`DeviceConfigStateChange::tls_reloaded`].
const RELOADED: &str = "TLS certificate config reloaded successfully";
/// Message of [`DeviceConfigStateChange::tls_reload_failed`].
const RELOAD_FAILED: &str = "TLS certificate config reload failed";
/// Message of [`DeviceConfigStateChange::tls_watcher_degraded`].
const WATCHER_DEGRADED: &str = "TLS config watcher degraded to polling";
/// Message of [`DeviceConfigStateChange::tls_reload_unchanged`].
const RELOAD_UNCHANGED: &str = "TLS certificate config reload requested; files unchanged";
/// Message of [`DeviceConfigStateChange::tls_cert_expiring`].
const CERT_EXPIRING: &str = "Served TLS certificate is close to expiry";
/// Message of [`DeviceConfigStateChange::tls_renewal_overdue`].
const RENEWAL_OVERDUE: &str = "TLS certificate renewal overdue";
/// Message of [`DeviceConfigStateChange::tls_client_trust_changed`].
const TRUST_CHANGED: &str = "TLS client trust changed; open connections checked again";

// === impl DeviceConfigStateChange ===

impl DeviceConfigStateChange {
    /// A builder for an event from `source`, with the defaults below.
    ///
    /// # Defaults
    ///
    /// `time` now, `activity_id` Log, `severity_id` Informational,
    /// `status_id` Unknown, `state_id` Unknown, no `message`, no
    /// `status_detail`, no `unmapped.tls`.
    pub fn builder(source: &EventSource) -> EventBuilder {
        EventBuilder {
            time: None,
            activity: ActivityId::Log,
            severity: SeverityId::Informational,
            status: StatusId::Unknown,
            state: StateId::Unknown,
            message: None,
            status_detail: None,
            tls: None,
            event_code: None,
            source: source.clone(),
        }
    }

    /// A builder preset for `kind`, as its constructor documents.
    fn tls_kind(source: &EventSource, kind: Kind) -> EventBuilder {
        let (message, severity, status, state) = kind.preset();
        let mut builder = Self::builder(source)
            .message(message)
            .severity(severity)
            .status(status)
            .state(state);
        builder.event_code = Some(kind.code());
        builder
    }

    /// The TLS config was loaded when the process started.
    ///
    /// Severity Informational, status Success, state Enabled, message
    /// `TLS certificate config loaded`, `unmapped.tls` = `details`.
    ///
    /// A start with an expired leaf is the same event raised to High (an
    /// error the operator must act on), with the reason in `status_detail`:
    ///
    /// ```
    /// # use openshell_ocsf::*;
    /// # let source = EventSource::new(Product::new("p", "v", "1"), Device::new("h"));
    /// let details = TlsReloadDetails::new()
    ///     .trigger("startup")
    ///     .generation(1)
    ///     .not_after("2024-01-01T00:00:00Z");
    /// let event = DeviceConfigStateChange::tls_loaded(&source, details)
    ///     .severity(SeverityId::High)
    ///     .status_detail("served certificate expired at 2024-01-01T00:00:00Z")
    ///     .build();
    /// assert_eq!(event.severity_id(), SeverityId::High);
    /// ```
    pub fn tls_loaded(source: &EventSource, details: TlsReloadDetails) -> EventBuilder {
        Self::tls_kind(source, Kind::Loaded).tls(details)
    }

    /// A reload put a new TLS config into service.
    ///
    /// Severity Informational, status Success, state Enabled, message
    /// `TLS certificate config reloaded successfully`, `unmapped.tls` =
    /// `details`.
    pub fn tls_reloaded(source: &EventSource, details: TlsReloadDetails) -> EventBuilder {
        Self::tls_kind(source, Kind::Reloaded).tls(details)
    }

    /// A reload was rejected; the previous config stays in service.
    ///
    /// Severity Medium, status Failure, state Unknown (no config change took
    /// effect), message `TLS certificate config reload failed`,
    /// `status_detail` = `error`, `unmapped.tls` = `details` (whose
    /// `generation` is the one still served).
    pub fn tls_reload_failed(
        source: &EventSource,
        details: TlsReloadDetails,
        error: impl fmt::Display,
    ) -> EventBuilder {
        Self::tls_kind(source, Kind::ReloadFailed)
            .status_detail(error.to_string())
            .tls(details)
    }

    /// A reload asked for by an operator (a signal, an API call) found the
    /// files byte-for-byte as served: nothing changed, but the request is
    /// on record.
    ///
    /// Severity Informational, status Success, state Enabled, message
    /// `TLS certificate config reload requested; files unchanged`,
    /// `unmapped.tls` = `details` (the served generation and the trigger).
    pub fn tls_reload_unchanged(source: &EventSource, details: TlsReloadDetails) -> EventBuilder {
        Self::tls_kind(source, Kind::ReloadUnchanged).tls(details)
    }

    /// The file watcher stopped working and reloads now rely on polling.
    ///
    /// Severity Low (reloads still happen, later), status Failure (the watch
    /// failed), state Unknown, message `TLS config watcher degraded to
    /// polling`, `status_detail` = `reason`. Add paths with
    /// [`EventBuilder::tls`] if wanted.
    pub fn tls_watcher_degraded(source: &EventSource, reason: impl fmt::Display) -> EventBuilder {
        Self::tls_kind(source, Kind::WatcherDegraded).status_detail(reason.to_string())
    }

    /// The served certificate is close to its expiry (the gateway warns
    /// within 7 days).
    ///
    /// Severity Medium (action required, not yet serious), status Success
    /// (it is still valid), state Enabled (it is in service), message
    /// `Served TLS certificate is close to expiry`, `unmapped.tls` =
    /// `details` (with `not_after`).
    pub fn tls_cert_expiring(source: &EventSource, details: TlsReloadDetails) -> EventBuilder {
        Self::tls_kind(source, Kind::CertExpiring).tls(details)
    }

    /// A served certificate is past the time its renewal was due and no
    /// rotation has replaced it: the renewal that should have come did not.
    ///
    /// Severity Medium (the certificate is still valid, with weeks left at
    /// usual lifetimes, but whatever renews it has stopped), status Success
    /// (it is still served), state Enabled, message `TLS certificate renewal
    /// overdue`, `unmapped.tls` = `details` (with `identity`,
    /// `new_fingerprint`, `not_after` and `renewal_due`).
    ///
    /// ```
    /// # use openshell_ocsf::*;
    /// # let source = EventSource::new(Product::new("p", "v", "1"), Device::new("h"));
    /// let details = TlsReloadDetails::new()
    ///     .identity("api.example.com")
    ///     .new_fingerprint("4F:01:C3")
    ///     .not_after("2026-03-01T00:00:00Z")
    ///     .renewal_due("2026-02-06T00:00:00Z");
    /// let event = DeviceConfigStateChange::tls_renewal_overdue(&source, details).build();
    /// assert_eq!(event.message(), Some("TLS certificate renewal overdue"));
    /// assert_eq!(event.severity_id(), SeverityId::Medium);
    /// ```
    pub fn tls_renewal_overdue(source: &EventSource, details: TlsReloadDetails) -> EventBuilder {
        Self::tls_kind(source, Kind::RenewalOverdue).tls(details)
    }

    /// The client trust changed (CA bundle, CRLs or client-auth mode) and
    /// every open connection that presented a client certificate was
    /// checked again against it; those that no longer verify were ended.
    ///
    /// Severity Informational, status Success, state Enabled, message
    /// `TLS client trust changed; open connections checked again`,
    /// `unmapped.tls` = `details` (with `client_cas_added`,
    /// `client_cas_removed`, `crls_changed`, `connections_checked` and
    /// `connections_ended`).
    ///
    /// ```
    /// # use openshell_ocsf::*;
    /// # let source = EventSource::new(Product::new("p", "v", "1"), Device::new("h"));
    /// let details = TlsReloadDetails::new()
    ///     .generation(4)
    ///     .client_cas_added([ClientCaRef::new("4F:01:C3", "CN=client CA 2026")])
    ///     .client_cas_removed([ClientCaRef::new("9A:77:10", "CN=client CA 2025")])
    ///     .crls_changed(false)
    ///     .connections_checked(12)
    ///     .connections_ended(3);
    /// let event = DeviceConfigStateChange::tls_client_trust_changed(&source, details).build();
    /// assert_eq!(event.event_code(), Some("tls_client_trust_changed"));
    /// assert_eq!(
    ///     event.to_string(),
    ///     "CONFIG:TRUST [INFO] TLS client trust changed; open connections checked again \
    ///      [generation:4 added:1 removed:1 ended:3]"
    /// );
    /// ```
    pub fn tls_client_trust_changed(
        source: &EventSource,
        details: TlsReloadDetails,
    ) -> EventBuilder {
        Self::tls_kind(source, Kind::TrustChanged).tls(details)
    }
}

// === impl EventBuilder ===

/// Builds a [`DeviceConfigStateChange`]; start from
/// [`DeviceConfigStateChange::builder`] or a TLS constructor.
///
/// Every setter takes a typed value, so [`build`](Self::build) cannot fail:
/// whatever is set, the event is valid OCSF.
#[derive(Clone, Debug)]
#[must_use = "an EventBuilder does nothing until `build` is called"]
pub struct EventBuilder {
    time: Option<SystemTime>,
    activity: ActivityId,
    severity: SeverityId,
    status: StatusId,
    state: StateId,
    message: Option<String>,
    status_detail: Option<String>,
    tls: Option<TlsReloadDetails>,
    event_code: Option<&'static str>,
    source: EventSource,
}

/// Builder setters, each replacing one field: `name(arg: Type) = stored
/// value;`, after the setter's docs.
macro_rules! setters {
    ($( $(#[$doc:meta])* $field:ident($arg:ident: $ty:ty) = $value:expr; )+) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, $arg: $ty) -> Self {
                self.$field = $value;
                self
            }
        )+
    };
}

impl EventBuilder {
    setters! {
        /// Sets `time`, written in milliseconds since the Unix epoch (sub-millisecond
        /// parts are dropped). Default: the time of [`build`](Self::build).
        time(time: SystemTime) = Some(time);
        /// Sets `activity_id` (and with it `type_uid`). Default: Log.
        activity(activity: ActivityId) = activity;
        /// Sets `severity_id`. Default: Informational, or the constructor's.
        severity(severity: SeverityId) = severity;
        /// Sets `status_id`. Default: Unknown, or the constructor's.
        status(status: StatusId) = status;
        /// Sets `state_id`. Default: Unknown, or the constructor's.
        state(state: StateId) = state;
        /// Sets `message`. Default: none, or the constructor's.
        message(message: impl Into<String>) = Some(message.into());
        /// Sets `status_detail`. Default: none, or the constructor's.
        status_detail(detail: impl Into<String>) = Some(detail.into());
        /// Sets `unmapped.tls`. Default: none, or the constructor's.
        tls(details: TlsReloadDetails) = Some(details);
    }

    /// The event.
    pub fn build(self) -> DeviceConfigStateChange {
        let EventSource {
            product,
            device,
            log_name,
            ..
        } = self.source;
        DeviceConfigStateChange {
            time_ms: unix_millis(self.time.unwrap_or_else(SystemTime::now)),
            activity_id: self.activity,
            severity_id: self.severity,
            status_id: self.status,
            state_id: self.state,
            message: self.message,
            status_detail: self.status_detail,
            product,
            device,
            log_name,
            event_code: self.event_code.map(str::to_owned),
            tls: self.tls,
        }
    }
}

/// Milliseconds since the Unix epoch, negative before it, saturating far
/// outside the range of `i64`.
fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{Device, Product};

    fn source() -> EventSource {
        EventSource::new(
            Product::new("openshell-gateway", "OpenShell", "0.1.0"),
            Device::new("gw-0"),
        )
    }

    #[test]
    fn builder_defaults_are_documented_ones() {
        let event = DeviceConfigStateChange::builder(&source()).build();
        assert_eq!(event.activity_id(), ActivityId::Log);
        assert_eq!(event.severity_id(), SeverityId::Informational);
        assert_eq!(event.status_id(), StatusId::Unknown);
        assert_eq!(event.state_id(), StateId::Unknown);
        assert_eq!(event.message(), None);
        assert_eq!(event.status_detail(), None);
        assert_eq!(event.tls(), None);
        assert_eq!(event.event_code(), None);
    }

    #[test]
    fn time_defaults_to_now() {
        let before = unix_millis(SystemTime::now());
        let event = DeviceConfigStateChange::builder(&source()).build();
        let after = unix_millis(SystemTime::now());
        assert!((before..=after).contains(&event.time_ms()));
    }

    #[test]
    fn unix_millis_truncates_to_milliseconds_and_goes_negative_before_epoch() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_999);
        assert_eq!(unix_millis(t), 1_700_000_000_123);
        let before = UNIX_EPOCH - Duration::from_millis(5);
        assert_eq!(unix_millis(before), -5);
    }

    #[test]
    fn every_kind_code_maps_back_to_its_kind() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(Kind::from_code("tls_something_else"), None);
    }

    #[test]
    fn reload_failed_takes_any_display_error() {
        let err = std::io::Error::new(std::io::ErrorKind::NotFound, "tls.crt missing");
        let event =
            DeviceConfigStateChange::tls_reload_failed(&source(), TlsReloadDetails::new(), &err)
                .build();
        assert_eq!(event.status_detail(), Some("tls.crt missing"));
    }
}
