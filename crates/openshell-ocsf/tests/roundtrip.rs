//! JSONL output and parsing it back.

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is a failed test")]

mod common;

use openshell_ocsf::DeviceConfigStateChange;

use common::{constructed, every_builder_event, every_constructor, source};

#[test]
fn reload_event_serializes_to_this_exact_line() {
    assert_eq!(
        constructed("reloaded").to_json().unwrap(),
        concat!(
            r#"{"time":1767225600000,"class_uid":5019,"class_name":"Device Config State Change","#,
            r#""category_uid":5,"category_name":"Discovery","activity_id":1,"activity_name":"Log","#,
            r#""type_uid":501901,"type_name":"Device Config State Change: Log","#,
            r#""severity_id":1,"severity":"Informational","status_id":1,"status":"Success","#,
            r#""state_id":2,"state":"Enabled","message":"TLS certificate config reloaded successfully","#,
            r#""metadata":{"version":"1.8.0","product":{"name":"openshell-gateway","vendor_name":"OpenShell","version":"0.1.0"},"event_code":"tls_reloaded"},"#,
            r#""device":{"hostname":"gateway-0","type_id":1,"type":"Server"},"#,
            r#""unmapped":{"tls":{"#,
            r#""previous_fingerprint":"9A:77:10:5B:2E:C4:D1:08:3F:66:A9:12:E0:4B:75:C8:1F:D3:8A:2C:60:B5:97:0E:4D:F1:23:AC:58:E6:09:7B","#,
            r#""new_fingerprint":"4F:01:C3:8E:2A:19:B7:60:D5:3C:91:E4:08:7A:B2:5F:C6:1D:93:40:AE:72:0B:E9:58:14:F3:6C:2D:A7:90:BB","#,
            r#""serial":"1A2B3C4D","not_after":"2026-03-01T00:00:00Z","generation":3,"trigger":"watch","#,
            r#""identity":"api.example.com","renewal_due":"2026-02-06T00:00:00Z","#,
            r#""cert_path":"/etc/openshell-tls/server/tls.crt","key_path":"/etc/openshell-tls/server/tls.key","#,
            r#""client_ca_path":"/etc/openshell-tls/client-ca/ca.crt","#,
            r#""crl_paths":["/etc/openshell-tls/crl/a.pem","/etc/openshell-tls/crl/b.pem"]}}}"#,
        )
    );
}

#[test]
fn jsonl_line_round_trips_through_serde() {
    for event in every_builder_event() {
        let line = event.to_json().unwrap();
        assert!(!line.contains('\n'), "{line}");
        let parsed: DeviceConfigStateChange = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, event);
        assert_eq!(parsed.to_json().unwrap(), line);
    }
}

#[test]
fn parsed_event_renders_the_same_shorthand() {
    for (name, event) in every_constructor() {
        let parsed: DeviceConfigStateChange =
            serde_json::from_str(&event.to_json().unwrap()).unwrap();
        assert_eq!(parsed.to_string(), event.to_string(), "{name}");
    }
}

#[test]
fn newlines_in_values_stay_escaped_inside_the_line() {
    let event = DeviceConfigStateChange::tls_reload_failed(
        &source(),
        openshell_ocsf::TlsReloadDetails::new(),
        "line one\nline two",
    )
    .build();
    let line = event.to_json().unwrap();
    assert!(
        line.contains(r#""status_detail":"line one\nline two""#),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);
}

fn parse_error(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value =
        serde_json::from_str(&constructed("reloaded").to_json().unwrap()).unwrap();
    edit(&mut value);
    serde_json::from_value::<DeviceConfigStateChange>(value)
        .unwrap_err()
        .to_string()
}

#[test]
fn parsing_rejects_a_type_uid_inconsistent_with_the_activity() {
    let message = parse_error(|v| v["type_uid"] = 501_902.into());
    assert_eq!(
        message,
        "OCSF event attribute type_uid is 501902, expected 501901"
    );
}

#[test]
fn parsing_rejects_another_class_or_category() {
    assert!(
        parse_error(|v| v["class_uid"] = 1001.into()).contains("class_uid is 1001, expected 5019")
    );
    assert!(
        parse_error(|v| v["category_uid"] = 1.into()).contains("category_uid is 1, expected 5")
    );
}

#[test]
fn parsing_rejects_another_ocsf_version() {
    let message = parse_error(|v| v["metadata"]["version"] = "1.7.0".into());
    assert!(
        message.contains("metadata.version is 1.7.0, expected 1.8.0"),
        "{message}"
    );
}

#[test]
fn parsing_rejects_enum_ids_ocsf_does_not_define() {
    let message = parse_error(|v| v["severity_id"] = 7.into());
    assert!(message.contains("severity_id"), "{message}");
}
