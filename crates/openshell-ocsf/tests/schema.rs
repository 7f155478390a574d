//! Events validated against the OCSF v1.8.0 schema files in
//! `<repository>/../shared/ocsf/v1.8.0` (found from `CARGO_MANIFEST_DIR` as
//! `../../../shared/ocsf/v1.8.0`). The files are read, never copied. In a
//! clone without them each test prints a skip line and passes; `typed.rs`
//! checks the same facts without the files.

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is a failed test")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openshell_ocsf::schema::{Schema, Violation, default_schema_dir};
use openshell_ocsf::{
    ActivityId, DeviceConfigStateChange, DeviceTypeId, SeverityId, StateId, StatusId,
};
use serde_json::{Value, json};

use common::{REQUIRED, every_builder_event, every_constructor, json};

const SKIP: &str = "skipping: OCSF schema dir ../shared/ocsf/v1.8.0 not found";

/// `found`, or `None` after printing the skip line.
#[allow(
    clippy::print_stderr,
    reason = "the skip line is meant for the person running the tests"
)]
fn schema_dir(found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_none() {
        eprintln!("{SKIP}");
    }
    found
}

fn schema() -> Option<(PathBuf, Schema)> {
    let dir = schema_dir(default_schema_dir())?;
    let schema = Schema::load(&dir).unwrap();
    Some((dir, schema))
}

fn read_json(dir: &Path, file: &str) -> Value {
    let path = dir.join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `id -> caption` of an enum attribute in a schema file.
fn schema_enum(file: &Value, attribute: &str) -> BTreeMap<u64, String> {
    file["attributes"][attribute]["enum"]
        .as_object()
        .unwrap_or_else(|| panic!("{attribute} has no enum"))
        .iter()
        .map(|(id, value)| {
            (
                id.parse().unwrap(),
                value["caption"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn typed_enum<T: Copy>(
    all: &[T],
    id: impl Fn(T) -> u8,
    caption: impl Fn(T) -> &'static str,
) -> BTreeMap<u64, String> {
    all.iter()
        .map(|&v| (u64::from(id(v)), caption(v).to_owned()))
        .collect()
}

fn reloaded() -> Value {
    let (_, event) = every_constructor()
        .into_iter()
        .find(|(name, _)| *name == "reloaded")
        .unwrap();
    json(&event)
}

fn violations(schema: &Schema, event: &Value) -> Vec<Violation> {
    schema.validate(event).err().unwrap_or_default()
}

#[test]
fn schema_test_skips_cleanly_without_the_schema_dir() {
    assert_eq!(schema_dir(None), None);
    assert!(SKIP.starts_with("skipping: ") && SKIP.contains("../shared/ocsf/v1.8.0"));
}

#[test]
fn default_schema_dir_is_the_shared_dir_beside_the_repository() {
    let Some(dir) = schema_dir(default_schema_dir()) else {
        return;
    };
    let expected = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/ocsf/v1.8.0");
    assert_eq!(dir, expected.canonicalize().unwrap());
    assert!(
        dir.join("classes/device_config_state_change.json")
            .is_file()
    );
}

#[test]
fn every_event_the_builder_can_produce_validates() {
    let Some((_, schema)) = schema() else { return };
    let events = every_builder_event();
    assert!(events.len() > 8_000);
    for event in &events {
        let value = json(event);
        if let Err(violations) = schema.validate(&value) {
            panic!("{value}\nviolates the schema:\n{violations:#?}");
        }
    }
}

#[test]
fn every_tls_event_validates() {
    let Some((_, schema)) = schema() else { return };
    for (name, event) in every_constructor() {
        assert_eq!(schema.validate(&json(&event)), Ok(()), "{name}");
    }
}

#[test]
fn typed_required_list_is_the_class_files_required_non_profile_attributes() {
    let Some((dir, _)) = schema() else { return };
    let class = read_json(&dir, "classes/device_config_state_change.json");
    let mut required = Vec::new();
    let mut profile_required = Vec::new();
    for (name, attribute) in class["attributes"].as_object().unwrap() {
        if attribute["requirement"] != "required" {
            continue;
        }
        // A non-empty `profiles` list means the attribute comes with a
        // profile and is required only when the event declares it.
        match attribute.get("profiles").and_then(Value::as_array) {
            Some(profiles) if !profiles.is_empty() => profile_required.push(name.as_str()),
            _ => required.push(name.as_str()),
        }
    }
    required.sort_unstable();
    profile_required.sort_unstable();
    assert_eq!(required, REQUIRED);
    assert_eq!(profile_required, ["cloud", "osint"]);
}

#[test]
fn class_identity_matches_the_class_file() {
    let Some((dir, schema)) = schema() else {
        return;
    };
    let class = read_json(&dir, "classes/device_config_state_change.json");
    assert_eq!(class["uid"], DeviceConfigStateChange::CLASS_UID);
    assert_eq!(class["caption"], DeviceConfigStateChange::CLASS_NAME);
    assert_eq!(class["category_uid"], DeviceConfigStateChange::CATEGORY_UID);
    assert_eq!(
        class["category_name"],
        DeviceConfigStateChange::CATEGORY_NAME
    );
    assert_eq!(schema.version(), openshell_ocsf::OCSF_VERSION);
}

#[test]
fn typed_enums_are_exactly_the_schema_enums() {
    let Some((dir, _)) = schema() else { return };
    let class = read_json(&dir, "classes/device_config_state_change.json");
    let device = read_json(&dir, "objects/device.json");
    assert_eq!(
        typed_enum(SeverityId::ALL, SeverityId::id, SeverityId::caption),
        schema_enum(&class, "severity_id")
    );
    assert_eq!(
        typed_enum(StatusId::ALL, StatusId::id, StatusId::caption),
        schema_enum(&class, "status_id")
    );
    assert_eq!(
        typed_enum(StateId::ALL, StateId::id, StateId::caption),
        schema_enum(&class, "state_id")
    );
    assert_eq!(
        typed_enum(ActivityId::ALL, ActivityId::id, ActivityId::caption),
        schema_enum(&class, "activity_id")
    );
    assert_eq!(
        typed_enum(DeviceTypeId::ALL, DeviceTypeId::id, DeviceTypeId::caption),
        schema_enum(&device, "type_id")
    );
    let type_uids: BTreeMap<u64, String> = ActivityId::ALL
        .iter()
        .map(|a| {
            (
                501_900 + u64::from(a.id()),
                format!("Device Config State Change: {}", a.caption()),
            )
        })
        .collect();
    assert_eq!(type_uids, schema_enum(&class, "type_uid"));
}

#[test]
fn rejects_an_event_missing_any_required_attribute() {
    let Some((_, schema)) = schema() else { return };
    for attribute in REQUIRED {
        let mut event = reloaded();
        event.as_object_mut().unwrap().remove(attribute);
        let found = violations(&schema, &event);
        let missing = Violation::MissingRequired {
            path: attribute.to_owned(),
        };
        // Without class_uid the class is unknown and nothing else is checked.
        assert!(found.contains(&missing), "{attribute}: {found:?}");
    }
}

#[test]
fn rejects_missing_required_attributes_of_objects() {
    let Some((_, schema)) = schema() else { return };
    for (object, attribute) in [
        ("metadata", "version"),
        ("metadata", "product"),
        ("device", "type_id"),
    ] {
        let mut event = reloaded();
        event[object].as_object_mut().unwrap().remove(attribute);
        let found = violations(&schema, &event);
        let missing = Violation::MissingRequired {
            path: format!("{object}.{attribute}"),
        };
        assert!(found.contains(&missing), "{object}.{attribute}: {found:?}");
    }
}

#[test]
fn profile_attributes_are_required_only_when_the_profile_is_declared() {
    let Some((_, schema)) = schema() else { return };
    let event = reloaded();
    assert_eq!(schema.validate(&event), Ok(()));
    for profile in ["osint", "cloud"] {
        let mut declared = event.clone();
        declared["metadata"]["profiles"] = json!([profile]);
        assert_eq!(
            violations(&schema, &declared),
            [Violation::MissingRequired {
                path: profile.to_owned()
            }]
        );
    }
}

#[test]
fn rejects_time_that_is_not_integer_milliseconds() {
    let Some((_, schema)) = schema() else { return };
    for time in [json!("2026-01-01T00:00:00Z"), json!(1_767_225_600.5)] {
        let mut event = reloaded();
        event["time"] = time.clone();
        assert!(
            matches!(
                violations(&schema, &event).as_slice(),
                [Violation::WrongType { path, expected: "integer", .. }] if path == "time"
            ),
            "{time}"
        );
    }
}

#[test]
fn rejects_enum_values_outside_the_schema() {
    let Some((_, schema)) = schema() else { return };
    for (attribute, value) in [("severity_id", 7), ("status_id", 3), ("state_id", 3)] {
        let mut event = reloaded();
        event[attribute] = json!(value);
        assert_eq!(
            violations(&schema, &event),
            [Violation::NotInEnum {
                path: attribute.to_owned(),
                value: value.to_string()
            }],
            "{attribute}"
        );
    }
    let mut event = reloaded();
    event["device"]["type_id"] = json!(16);
    assert_eq!(
        violations(&schema, &event),
        [Violation::NotInEnum {
            path: "device.type_id".to_owned(),
            value: "16".to_owned()
        }]
    );
}

#[test]
fn rejects_type_uid_inconsistent_with_class_and_activity() {
    let Some((_, schema)) = schema() else { return };
    let mut event = reloaded();
    event["activity_id"] = json!(2);
    event["activity_name"] = json!("Collect");
    let found = violations(&schema, &event);
    assert_eq!(
        found,
        [Violation::TypeUidMismatch {
            expected: 501_902,
            found: 501_901
        }]
    );
}

#[test]
fn rejects_a_caption_that_does_not_match_its_id() {
    let Some((_, schema)) = schema() else { return };
    let mut event = reloaded();
    event["severity"] = json!("High");
    assert_eq!(
        violations(&schema, &event),
        [Violation::SiblingMismatch {
            path: "severity".to_owned(),
            expected: "Informational".to_owned(),
            found: "High".to_owned()
        }]
    );
}

#[test]
fn rejects_attributes_outside_the_class_and_its_objects() {
    let Some((_, schema)) = schema() else { return };
    let mut event = reloaded();
    event["fingerprint"] = json!("4F:01");
    event["device"]["tls_key"] = json!("-----BEGIN PRIVATE KEY-----");
    let mut found = violations(&schema, &event);
    found.sort_by(|a, b| a.path().cmp(b.path()));
    assert_eq!(
        found,
        [
            Violation::UnknownAttribute {
                path: "device.tls_key".to_owned()
            },
            Violation::UnknownAttribute {
                path: "fingerprint".to_owned()
            },
        ]
    );
}

#[test]
fn rejects_a_product_with_neither_name_nor_uid() {
    let Some((_, schema)) = schema() else { return };
    let mut event = reloaded();
    event["metadata"]["product"] = json!({"vendor_name": "OpenShell"});
    assert!(matches!(
        violations(&schema, &event).as_slice(),
        [Violation::ConstraintUnmet { path, constraint: "at_least_one", .. }]
            if path == "metadata.product"
    ));
}

#[test]
fn rejects_a_metadata_version_other_than_1_8_0() {
    let Some((_, schema)) = schema() else { return };
    let mut event = reloaded();
    event["metadata"]["version"] = json!("1.7.0");
    assert_eq!(
        violations(&schema, &event),
        [Violation::VersionMismatch {
            expected: "1.8.0".to_owned(),
            found: "1.7.0".to_owned()
        }]
    );
}
