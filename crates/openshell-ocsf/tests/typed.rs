//! The OCSF v1.8.0 facts about class 5019, encoded here so they are checked
//! on every run, with or without the shared schema files (`schema.rs` checks
//! these same tables against the files when they are present).

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is a failed test")]

mod common;

use openshell_ocsf::{
    ActivityId, DeviceConfigStateChange, DeviceTypeId, OCSF_VERSION, SeverityId, StateId, StatusId,
    TlsReloadDetails,
};
use serde_json::json;

use common::{
    REQUIRED, TIME_MS, at, constructed, enum_table, every_builder_event, every_constructor, json,
    source,
};

#[test]
fn class_is_device_config_state_change_in_discovery() {
    assert_eq!(DeviceConfigStateChange::CLASS_UID, 5019);
    assert_eq!(
        DeviceConfigStateChange::CLASS_NAME,
        "Device Config State Change"
    );
    assert_eq!(DeviceConfigStateChange::CATEGORY_UID, 5);
    assert_eq!(DeviceConfigStateChange::CATEGORY_NAME, "Discovery");
    assert_eq!(OCSF_VERSION, "1.8.0");
}

/// `id caption, ...` of an enum table.
fn text(table: &[(u8, &str)]) -> String {
    let pairs: Vec<String> = table
        .iter()
        .map(|(id, caption)| format!("{id} {caption}"))
        .collect();
    pairs.join(", ")
}

#[test]
fn enum_ids_and_captions_are_those_of_ocsf_1_8_0_and_class_5019() {
    let tables = [
        (
            enum_table!(SeverityId),
            "0 Unknown, 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical, 6 Fatal, 99 Other",
        ),
        (
            enum_table!(StatusId),
            "0 Unknown, 1 Success, 2 Failure, 99 Other",
        ),
        (
            enum_table!(StateId),
            "0 Unknown, 1 Disabled, 2 Enabled, 99 Other",
        ),
        (
            enum_table!(ActivityId),
            "0 Unknown, 1 Log, 2 Collect, 99 Other",
        ),
        (
            enum_table!(DeviceTypeId),
            "0 Unknown, 1 Server, 2 Desktop, 3 Laptop, 4 Tablet, 5 Mobile, 6 Virtual, 7 IOT, \
             8 Browser, 9 Firewall, 10 Switch, 11 Hub, 12 Router, 13 IDS, 14 IPS, \
             15 Load Balancer, 99 Other",
        ),
    ];
    for (table, expected) in tables {
        assert_eq!(text(&table), expected);
    }
}

#[test]
fn type_uid_is_class_uid_times_100_plus_activity_id() {
    let expected = [
        (ActivityId::Unknown, 501_900),
        (ActivityId::Log, 501_901),
        (ActivityId::Collect, 501_902),
        (ActivityId::Other, 501_999),
    ];
    for (activity, type_uid) in expected {
        let event = DeviceConfigStateChange::builder(&source())
            .activity(activity)
            .build();
        assert_eq!(event.type_uid(), type_uid);
        let value = json(&event);
        assert_eq!(value["type_uid"], type_uid);
        assert_eq!(value["class_uid"], 5019);
        assert_eq!(value["activity_id"], activity.id());
        assert_eq!(
            value["type_name"],
            format!("Device Config State Change: {}", activity.caption())
        );
    }
}

#[test]
fn tls_events_are_activity_log_type_501901() {
    for (name, event) in every_constructor() {
        assert_eq!(event.activity_id(), ActivityId::Log, "{name}");
        assert_eq!(json(&event)["type_uid"], 501_901, "{name}");
    }
}

#[test]
fn every_event_has_the_required_attributes_with_their_ocsf_json_types() {
    for event in every_builder_event() {
        let value = json(&event);
        for attribute in REQUIRED {
            assert!(
                value.get(attribute).is_some(),
                "{attribute} missing in {value}"
            );
        }
        for id in [
            "time",
            "class_uid",
            "category_uid",
            "activity_id",
            "type_uid",
            "severity_id",
            "status_id",
            "state_id",
        ] {
            assert!(value[id].is_i64(), "{id} is not an integer in {value}");
        }
        assert_eq!(value["class_uid"], 5019);
        assert_eq!(value["category_uid"], 5);
        assert_eq!(
            value["type_uid"].as_i64().unwrap(),
            value["class_uid"].as_i64().unwrap() * 100 + value["activity_id"].as_i64().unwrap()
        );
        assert_eq!(value["metadata"]["version"], "1.8.0");
        assert!(value["metadata"]["product"]["name"].is_string());
        assert!(value["metadata"]["product"]["vendor_name"].is_string());
        assert!(value["metadata"]["product"]["version"].is_string());
        assert!(value["device"]["hostname"].is_string());
        assert!(value["device"]["type_id"].is_i64());
        assert!(value.get("metadata").unwrap().get("profiles").is_none());
    }
}

#[test]
fn every_caption_is_written_beside_its_id() {
    for event in every_builder_event() {
        let value = json(&event);
        assert_eq!(value["class_name"], "Device Config State Change");
        assert_eq!(value["category_name"], "Discovery");
        assert_eq!(value["severity"], event.severity_id().caption());
        assert_eq!(value["status"], event.status_id().caption());
        assert_eq!(value["state"], event.state_id().caption());
        assert_eq!(value["activity_name"], event.activity_id().caption());
        assert_eq!(value["device"]["type"], event.device().type_id.caption());
    }
}

#[test]
fn time_is_the_given_system_time_in_integer_milliseconds() {
    let event = DeviceConfigStateChange::builder(&source())
        .time(at())
        .build();
    assert_eq!(event.time_ms(), TIME_MS);
    assert_eq!(json(&event)["time"], json!(TIME_MS));
}

#[test]
fn each_constructor_sets_its_documented_classification_and_message() {
    let expected = [
        "loaded: tls_loaded Informational Success Enabled \"TLS certificate config loaded\"",
        "loaded with expired leaf: tls_loaded High Success Enabled \"TLS certificate config loaded\"",
        "reloaded: tls_reloaded Informational Success Enabled \"TLS certificate config reloaded successfully\"",
        "reload failed: tls_reload_failed Medium Failure Unknown \"TLS certificate config reload failed\"",
        "watcher degraded: tls_watcher_degraded Low Failure Unknown \"TLS config watcher degraded to polling\"",
        "cert expiring: tls_cert_expiring Medium Success Enabled \"Served TLS certificate is close to expiry\"",
        "reload unchanged: tls_reload_unchanged Informational Success Enabled \"TLS certificate config reload requested; files unchanged\"",
        "renewal overdue: tls_renewal_overdue Medium Success Enabled \"TLS certificate renewal overdue\"",
        "client trust changed: tls_client_trust_changed Informational Success Enabled \"TLS client trust changed; open connections checked again\"",
    ];
    let found: Vec<String> = every_constructor()
        .iter()
        .map(|(name, event)| {
            format!(
                "{name}: {} {} {} {} {:?}",
                event.event_code().unwrap(),
                event.severity_id().caption(),
                event.status_id().caption(),
                event.state_id().caption(),
                event.message().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn a_failure_carries_its_error_in_status_detail() {
    let error = "reading certificate /etc/tls/tls.crt: permission denied";
    let event =
        DeviceConfigStateChange::tls_reload_failed(&source(), TlsReloadDetails::new(), error)
            .build();
    assert_eq!(json(&event)["status_detail"], error);
    let reloaded =
        DeviceConfigStateChange::tls_reloaded(&source(), TlsReloadDetails::new()).build();
    assert_eq!(reloaded.status_detail(), None);
}

#[test]
fn startup_with_an_expired_leaf_is_a_high_severity_event() {
    let value = json(&constructed("loaded with expired leaf"));
    assert_eq!(value["severity_id"], 4);
    assert_eq!(value["severity"], "High");
    assert_eq!(
        value["status_detail"],
        "served certificate expired at 2025-12-01T00:00:00Z"
    );
    assert_eq!(value["unmapped"]["tls"]["trigger"], "startup");
}

#[test]
fn tls_details_go_under_unmapped_tls_with_stable_names() {
    let event = DeviceConfigStateChange::tls_reloaded(&source(), common::reload_details()).build();
    let value = json(&event);
    assert_eq!(
        value["unmapped"],
        json!({
            "tls": {
                "previous_fingerprint": common::PREVIOUS_FINGERPRINT,
                "new_fingerprint": common::NEW_FINGERPRINT,
                "serial": "1A2B3C4D",
                "not_after": "2026-03-01T00:00:00Z",
                "generation": 3,
                "trigger": "watch",
                "identity": "api.example.com",
                "renewal_due": "2026-02-06T00:00:00Z",
                "cert_path": "/etc/openshell-tls/server/tls.crt",
                "key_path": "/etc/openshell-tls/server/tls.key",
                "client_ca_path": "/etc/openshell-tls/client-ca/ca.crt",
                "crl_paths": ["/etc/openshell-tls/crl/a.pem", "/etc/openshell-tls/crl/b.pem"]
            }
        })
    );
}

#[test]
fn events_without_tls_details_have_no_unmapped() {
    let event = DeviceConfigStateChange::tls_watcher_degraded(&source(), "inotify failed").build();
    assert!(json(&event).get("unmapped").is_none());
}
