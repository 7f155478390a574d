//! The one-line shorthand, byte for byte.

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is a failed test")]

mod common;

use openshell_ocsf::{DeviceConfigStateChange, SeverityId, StatusId, TlsReloadDetails};

use common::{constructed, every_builder_event, source};

#[test]
fn each_constructor_event_has_this_shorthand() {
    let expected = [
        (
            "reloaded",
            "CONFIG:RELOADED [INFO] TLS certificate config reloaded successfully \
             [identity:api.example.com fingerprint:4F:01:C3:8E:2A:19:B7:60:.. generation:3 trigger:watch]",
        ),
        (
            "reload failed",
            "CONFIG:FAILED [MED] TLS certificate config reload failed \
             [error:\"private key does not match certificate\" generation:3 trigger:watch]",
        ),
        (
            "loaded",
            "CONFIG:LOADED [INFO] TLS certificate config loaded \
             [fingerprint:4F:01:C3:8E:2A:19:B7:60:.. generation:1 trigger:startup]",
        ),
        (
            "loaded with expired leaf",
            "CONFIG:LOADED [HIGH] TLS certificate config loaded \
             [detail:\"served certificate expired at 2025-12-01T00:00:00Z\" \
             fingerprint:4F:01:C3:8E:2A:19:B7:60:.. generation:1 trigger:startup]",
        ),
        (
            "watcher degraded",
            "CONFIG:DEGRADED [LOW] TLS config watcher degraded to polling \
             [reason:\"inotify watch limit reached\"]",
        ),
        (
            "cert expiring",
            "CONFIG:EXPIRING [MED] Served TLS certificate is close to expiry \
             [fingerprint:4F:01:C3:8E:2A:19:B7:60:.. not_after:2026-01-05T00:00:00Z generation:3]",
        ),
        (
            "reload unchanged",
            "CONFIG:UNCHANGED [INFO] TLS certificate config reload requested; files unchanged \
             [generation:3 trigger:signal]",
        ),
        (
            "renewal overdue",
            "CONFIG:OVERDUE [MED] TLS certificate renewal overdue \
             [identity:api.example.com fingerprint:4F:01:C3:8E:2A:19:B7:60:.. not_after:2026-03-01T00:00:00Z]",
        ),
        (
            "client trust changed",
            "CONFIG:TRUST [INFO] TLS client trust changed; open connections checked again \
             [generation:4 added:1 removed:1 ended:3]",
        ),
    ];
    for (name, shorthand) in expected {
        assert_eq!(constructed(name).to_string(), shorthand, "{name}");
    }
}

#[test]
fn failure_with_the_offered_fingerprint_lists_it_after_the_error() {
    let event = DeviceConfigStateChange::tls_reload_failed(
        &source(),
        TlsReloadDetails::new()
            .new_fingerprint("AB:CD")
            .generation(7)
            .trigger("signal"),
        "certificate expired",
    )
    .build();
    assert_eq!(
        event.to_string(),
        "CONFIG:FAILED [MED] TLS certificate config reload failed \
         [error:\"certificate expired\" fingerprint:AB:CD generation:7 trigger:signal]"
    );
}

#[test]
fn error_text_is_escaped_onto_one_line() {
    let event = DeviceConfigStateChange::tls_reload_failed(
        &source(),
        TlsReloadDetails::new(),
        "bad PEM:\n\"line 2\" \\ end",
    )
    .build();
    assert_eq!(
        event.to_string(),
        r#"CONFIG:FAILED [MED] TLS certificate config reload failed [error:"bad PEM:\n\"line 2\" \\ end"]"#
    );
}

#[test]
fn plain_values_with_spaces_are_quoted() {
    let event = DeviceConfigStateChange::tls_reloaded(
        &source(),
        TlsReloadDetails::new().new_fingerprint("4F 01"),
    )
    .build();
    assert_eq!(
        event.to_string(),
        "CONFIG:RELOADED [INFO] TLS certificate config reloaded successfully [fingerprint:\"4F 01\"]"
    );
}

#[test]
fn builder_event_without_message_or_details_uses_the_class_name() {
    let event = DeviceConfigStateChange::builder(&source()).build();
    assert_eq!(
        event.to_string(),
        "CONFIG:CHANGED [INFO] Device Config State Change"
    );
}

#[test]
fn builder_event_tags_failure_and_escapes_its_message() {
    let event = DeviceConfigStateChange::builder(&source())
        .severity(SeverityId::Critical)
        .status(StatusId::Failure)
        .message("two\nlines")
        .status_detail("why")
        .build();
    assert_eq!(
        event.to_string(),
        r#"CONFIG:FAILED [CRIT] two\nlines [detail:"why"]"#
    );
}

#[test]
fn every_event_renders_as_exactly_one_line() {
    for event in every_builder_event() {
        let line = event.to_string();
        assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
        assert!(line.starts_with("CONFIG:"), "{line}");
    }
}
