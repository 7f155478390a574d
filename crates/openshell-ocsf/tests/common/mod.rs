//! Events and facts shared by the integration tests.

#![allow(
    dead_code,
    unused_imports,
    unused_macros,
    reason = "each test file uses a different part"
)]
#![allow(clippy::unwrap_used, reason = "test support: a panic is a failed test")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openshell_ocsf::{
    ActivityId, ClientCaRef, Device, DeviceConfigStateChange, DeviceTypeId, EventSource, Product,
    SeverityId, StateId, StatusId, TlsReloadDetails,
};

/// 2026-01-01T00:00:00.000Z, in milliseconds.
pub const TIME_MS: i64 = 1_767_225_600_000;

/// The attributes class 5019 requires of every event that declares no
/// profile (the schema test checks this list against the class file).
pub const REQUIRED: [&str; 8] = [
    "activity_id",
    "category_uid",
    "class_uid",
    "device",
    "metadata",
    "severity_id",
    "time",
    "type_uid",
];

/// SHA-256 fingerprint of the new certificate (32 groups).
pub const NEW_FINGERPRINT: &str = "4F:01:C3:8E:2A:19:B7:60:D5:3C:91:E4:08:7A:B2:5F:\
                                   C6:1D:93:40:AE:72:0B:E9:58:14:F3:6C:2D:A7:90:BB";

/// SHA-256 fingerprint of the previous certificate (32 groups).
pub const PREVIOUS_FINGERPRINT: &str = "9A:77:10:5B:2E:C4:D1:08:3F:66:A9:12:E0:4B:75:C8:\
                                        1F:D3:8A:2C:60:B5:97:0E:4D:F1:23:AC:58:E6:09:7B";

pub fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(TIME_MS.unsigned_abs())
}

pub fn source() -> EventSource {
    EventSource::new(
        Product::new("openshell-gateway", "OpenShell", "0.1.0"),
        Device::new("gateway-0"),
    )
}

/// Everything `TlsReloadDetails` can hold.
pub fn reload_details() -> TlsReloadDetails {
    TlsReloadDetails::new()
        .previous_fingerprint(PREVIOUS_FINGERPRINT)
        .new_fingerprint(NEW_FINGERPRINT)
        .serial("1A2B3C4D")
        .not_after("2026-03-01T00:00:00Z")
        .generation(3)
        .trigger("watch")
        .identity("api.example.com")
        .renewal_due("2026-02-06T00:00:00Z")
        .cert_path("/etc/openshell-tls/server/tls.crt")
        .key_path("/etc/openshell-tls/server/tls.key")
        .client_ca_path("/etc/openshell-tls/client-ca/ca.crt")
        .crl_paths(["a", "b"].map(|name| format!("/etc/openshell-tls/crl/{name}.pem")))
}

/// One event of each kind the gateway emits, at [`TIME_MS`].
pub fn every_constructor() -> Vec<(&'static str, DeviceConfigStateChange)> {
    let source = source();
    let startup = TlsReloadDetails::new()
        .new_fingerprint(NEW_FINGERPRINT)
        .serial("1A2B3C4D")
        .not_after("2026-03-01T00:00:00Z")
        .generation(1)
        .trigger("startup")
        .cert_path("/etc/openshell-tls/server/tls.crt")
        .key_path("/etc/openshell-tls/server/tls.key");
    let expired = startup.clone().not_after("2025-12-01T00:00:00Z");
    let served = || TlsReloadDetails::new().generation(3);
    let expiring = served()
        .new_fingerprint(NEW_FINGERPRINT)
        .not_after("2026-01-05T00:00:00Z");
    let overdue = TlsReloadDetails::new()
        .identity("api.example.com")
        .new_fingerprint(NEW_FINGERPRINT)
        .not_after("2026-03-01T00:00:00Z")
        .renewal_due("2025-12-20T00:00:00Z");
    let failure = "private key does not match certificate";
    let trust_change = TlsReloadDetails::new()
        .generation(4)
        .client_ca_path("/etc/openshell-tls/client-ca/ca.crt")
        .client_cas_added([ClientCaRef::new("4F:01:C3", "CN=client CA 2026")])
        .client_cas_removed([ClientCaRef::new("9A:77:10", "CN=client CA 2025")])
        .crls_changed(false)
        .connections_checked(12)
        .connections_ended(3);
    [
        (
            "loaded",
            DeviceConfigStateChange::tls_loaded(&source, startup),
        ),
        (
            "loaded with expired leaf",
            DeviceConfigStateChange::tls_loaded(&source, expired)
                .severity(SeverityId::High)
                .status_detail("served certificate expired at 2025-12-01T00:00:00Z"),
        ),
        (
            "reloaded",
            DeviceConfigStateChange::tls_reloaded(&source, reload_details()),
        ),
        (
            "reload failed",
            DeviceConfigStateChange::tls_reload_failed(&source, served().trigger("watch"), failure),
        ),
        (
            "watcher degraded",
            DeviceConfigStateChange::tls_watcher_degraded(&source, "inotify watch limit reached"),
        ),
        (
            "cert expiring",
            DeviceConfigStateChange::tls_cert_expiring(&source, expiring),
        ),
        (
            "reload unchanged",
            DeviceConfigStateChange::tls_reload_unchanged(&source, served().trigger("signal")),
        ),
        (
            "renewal overdue",
            DeviceConfigStateChange::tls_renewal_overdue(&source, overdue),
        ),
        (
            "client trust changed",
            DeviceConfigStateChange::tls_client_trust_changed(&source, trust_change),
        ),
    ]
    .map(|(name, builder)| (name, builder.time(at()).build()))
    .into()
}

/// The constructor's event called `name` in [`every_constructor`].
pub fn constructed(name: &str) -> DeviceConfigStateChange {
    every_constructor()
        .into_iter()
        .find_map(|(n, event)| (n == name).then_some(event))
        .unwrap_or_else(|| panic!("no constructor event {name:?}"))
}

/// `[(id, caption)]` of every value of an OCSF enum, in id order.
macro_rules! enum_table {
    ($enum:ty) => {
        <$enum>::ALL
            .iter()
            .map(|&v| (v.id(), v.caption()))
            .collect::<Vec<(u8, &'static str)>>()
    };
}
pub(crate) use enum_table;

/// The constructors' events, then every combination of every enum value the
/// builder takes, with the optional parts on and off.
pub fn every_builder_event() -> Vec<DeviceConfigStateChange> {
    let mut events: Vec<_> = every_constructor().into_iter().map(|(_, e)| e).collect();
    let mut n = 0_usize;
    for &device_type in DeviceTypeId::ALL {
        let mut source = source();
        source.device.type_id = device_type;
        if device_type.id() % 2 == 0 {
            source = source.log_name("audit");
        }
        for &activity in ActivityId::ALL {
            for &severity in SeverityId::ALL {
                for &status in StatusId::ALL {
                    for &state in StateId::ALL {
                        n += 1;
                        let mut builder = DeviceConfigStateChange::builder(&source)
                            .activity(activity)
                            .severity(severity)
                            .status(status)
                            .state(state)
                            .time(at() + Duration::from_millis(n as u64));
                        if n.is_multiple_of(2) {
                            builder = builder.message("a change");
                        }
                        if n.is_multiple_of(3) {
                            builder = builder.status_detail("some detail");
                        }
                        if n.is_multiple_of(5) {
                            builder = builder.tls(reload_details());
                        } else if n % 5 == 1 {
                            builder = builder.tls(TlsReloadDetails::new());
                        }
                        events.push(builder.build());
                    }
                }
            }
        }
    }
    events
}

pub fn json(event: &DeviceConfigStateChange) -> serde_json::Value {
    serde_json::from_str(&event.to_json().unwrap()).unwrap()
}
