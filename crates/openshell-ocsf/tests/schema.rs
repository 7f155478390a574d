//! Events validated against the OCSF v1.8.0 schema files, found at run time
//! in `shared/ocsf/v1.8.0` beside the repository (feature `schema`). The
//! files are read, never copied. In a clone without them each test prints
//! `skipped: ...` and passes; `typed.rs` checks the same facts without the
//! files.

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is a failed test")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use openshell_ocsf::schema::{
    SHARED_SCHEMA_DIR, Schema, Violation, default_schema_dir, find_schema_dir,
};
use openshell_ocsf::{
    ActivityId, DeviceConfigStateChange, DeviceTypeId, SeverityId, StateId, StatusId,
};
use serde_json::{Value, json};

use common::{REQUIRED, constructed, enum_table, every_builder_event, every_constructor, json};

/// The schema directory and the schema, or `None` after printing the skip
/// line.
#[allow(
    clippy::print_stderr,
    reason = "the skip line is meant for the person running the tests"
)]
fn schema() -> Option<(PathBuf, Schema)> {
    match default_schema_dir() {
        Ok(dir) => Some((dir.clone(), Schema::load(&dir).unwrap())),
        Err(skipped) => {
            eprintln!("{skipped}");
            None
        }
    }
}

fn read_json(dir: &std::path::Path, file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
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

/// The violations of the reload event after `edit`.
fn violations(schema: &Schema, edit: impl FnOnce(&mut Value)) -> Vec<Violation> {
    let mut event = json(&constructed("reloaded"));
    edit(&mut event);
    let mut found = schema.validate(&event).err().unwrap_or_default();
    found.sort_by(|a, b| a.path().cmp(b.path()));
    found
}

#[test]
fn the_schema_dir_is_found_above_the_start_or_reported_as_skipped() {
    let root = tempfile::tempdir().unwrap();
    let start = root.path().join("repo/crates/openshell-ocsf");
    std::fs::create_dir_all(&start).unwrap();
    let skipped = find_schema_dir(&start).unwrap_err();
    assert_eq!(skipped.start(), start);
    assert_eq!(
        skipped.to_string(),
        format!(
            "skipped: shared/ocsf/v1.8.0 not found in {} or above",
            start.display()
        )
    );
    // Beside the repository, as in this project's layout.
    let shared = root.path().join(SHARED_SCHEMA_DIR);
    std::fs::create_dir_all(&shared).unwrap();
    assert_eq!(find_schema_dir(&start).unwrap(), shared);
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
    for (name, event) in every_constructor() {
        assert_eq!(schema.validate(&json(&event)), Ok(()), "{name}");
    }
}

#[test]
fn typed_facts_are_those_of_the_class_file() {
    let Some((dir, schema)) = schema() else {
        return;
    };
    let class = read_json(&dir, "classes/device_config_state_change.json");
    let device = read_json(&dir, "objects/device.json");

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

    assert_eq!(class["uid"], DeviceConfigStateChange::CLASS_UID);
    assert_eq!(class["caption"], DeviceConfigStateChange::CLASS_NAME);
    assert_eq!(class["category_uid"], DeviceConfigStateChange::CATEGORY_UID);
    assert_eq!(
        class["category_name"],
        DeviceConfigStateChange::CATEGORY_NAME
    );
    assert_eq!(schema.version(), openshell_ocsf::OCSF_VERSION);

    let typed = [
        (enum_table!(SeverityId), &class, "severity_id"),
        (enum_table!(StatusId), &class, "status_id"),
        (enum_table!(StateId), &class, "state_id"),
        (enum_table!(ActivityId), &class, "activity_id"),
        (enum_table!(DeviceTypeId), &device, "type_id"),
    ];
    for (table, file, attribute) in typed {
        let table: BTreeMap<u64, String> = table
            .into_iter()
            .map(|(id, caption)| (u64::from(id), caption.to_owned()))
            .collect();
        assert_eq!(table, schema_enum(file, attribute), "{attribute}");
    }
    let type_uids: BTreeMap<u64, String> = ActivityId::ALL
        .iter()
        .map(|a| {
            let caption = format!("Device Config State Change: {}", a.caption());
            (501_900 + u64::from(a.id()), caption)
        })
        .collect();
    assert_eq!(type_uids, schema_enum(&class, "type_uid"));
}

#[test]
fn rejects_an_event_missing_any_required_attribute() {
    let Some((_, schema)) = schema() else { return };
    let nested = ["metadata.version", "metadata.product", "device.type_id"];
    for path in REQUIRED.into_iter().chain(nested) {
        let found = violations(&schema, |event| {
            let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
            let parent = if parent.is_empty() {
                event
            } else {
                &mut event[parent]
            };
            parent.as_object_mut().unwrap().remove(key);
        });
        // Without class_uid the class is unknown and nothing else is checked.
        let missing = Violation::MissingRequired {
            path: path.to_owned(),
        };
        assert!(found.contains(&missing), "{path}: {found:?}");
    }
}

#[test]
fn profile_attributes_are_required_only_when_the_profile_is_declared() {
    let Some((_, schema)) = schema() else { return };
    assert_eq!(violations(&schema, |_| {}), []);
    for profile in ["osint", "cloud"] {
        assert_eq!(
            violations(&schema, |event| event["metadata"]["profiles"] =
                json!([profile])),
            [Violation::MissingRequired {
                path: profile.to_owned()
            }]
        );
    }
}

/// A change to an event.
type Edit = fn(&mut Value);

/// Each way of breaking the reload event, and what the validator says
/// (the rules themselves are unit tests of `schema.rs`; here they meet the
/// real class and object files).
#[test]
fn rejects_each_kind_of_violation_saying_what_is_wrong() {
    let Some((_, schema)) = schema() else { return };
    let cases: [(Edit, &[&str]); 9] = [
        (
            |e| e["time"] = json!("2026-01-01T00:00:00Z"),
            &["time: expected integer, found string"],
        ),
        (
            |e| e["time"] = json!(1_767_225_600.5),
            &["time: expected integer, found fractional number"],
        ),
        (
            |e| e["severity_id"] = json!(7),
            &["severity_id: 7 is not in the enum"],
        ),
        (
            |e| e["status_id"] = json!(3),
            &["status_id: 3 is not in the enum"],
        ),
        (
            |e| e["state_id"] = json!(3),
            &["state_id: 3 is not in the enum"],
        ),
        (
            |e| e["device"]["type_id"] = json!(16),
            &["device.type_id: 16 is not in the enum"],
        ),
        (
            |e| {
                e["activity_id"] = json!(2);
                e["activity_name"] = json!("Collect");
            },
            &["type_uid: expected 501902 (class_uid * 100 + activity_id), found 501901"],
        ),
        (
            |e| e["severity"] = json!("High"),
            &[r#"severity: expected caption "Informational", found "High""#],
        ),
        (
            |e| {
                e["fingerprint"] = json!("4F:01");
                e["device"]["tls_key"] = json!("-----BEGIN PRIVATE KEY-----");
                e["metadata"]["product"] = json!({"vendor_name": "OpenShell"});
                e["metadata"]["version"] = json!("1.7.0");
            },
            &[
                "device.tls_key: not defined by the schema (use `unmapped`)",
                "fingerprint: not defined by the schema (use `unmapped`)",
                r#"metadata.product: at_least_one of ["name", "uid"] not met"#,
                r#"metadata.version: expected "1.8.0", found "1.7.0""#,
            ],
        ),
    ];
    for (edit, expected) in cases {
        let found: Vec<String> = violations(&schema, edit)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, expected);
    }
}
