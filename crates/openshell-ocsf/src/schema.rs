//! Validation of event JSON against OCSF schema files.
//!
//! [`Schema::load`] reads a directory laid out as the OCSF schema export:
//!
//! ```text
//! VERSION                       e.g. 1.8.0
//! classes/<name>.json           one class, with its inherited attributes
//! objects/<name>.json           one object
//! ```
//!
//! The class files hold the resolved attribute set of the class (the base
//! event's attributes included), so no `extends` chain is followed. The
//! files are not part of the repository: [`default_schema_dir`] looks for
//! them at run time, beside it, and says `skipped: ...` when they are absent.
//!
//! [`Schema::validate`] checks one event, given as a `serde_json::Value`:
//!
//! * the class is one the directory defines (by `class_uid`);
//! * every required attribute is present, taking profiles into account (see
//!   below), at the top level and in every object whose file was loaded
//!   (`metadata`, `metadata.product`, `device`, ...);
//! * no attribute the class or object does not define (source-specific data
//!   belongs under `unmapped`, which is not checked);
//! * each value has the JSON type of its OCSF type (`timestamp_t` and
//!   `long_t` are integers, `integer_t` a 32-bit integer, `boolean_t` a
//!   boolean, `object_t` an object, arrays where `is_array`, and the
//!   string-based types strings);
//! * each enum attribute holds a value of its `enum`, and its sibling string
//!   (`severity` for `severity_id`, ...) is that value's caption unless the
//!   value is 99 (Other), whose caption the source defines;
//! * object constraints (`at_least_one`, `just_one`) hold;
//! * `type_uid == class_uid * 100 + activity_id`;
//! * `metadata.version` is the schema's `VERSION`.
//!
//! Objects without a file in the directory (e.g. `metadata.reporter`) are
//! only checked to be objects.
//!
//! # Profiles
//!
//! A class file lists the attributes of every profile the class supports,
//! with the requirement they have *inside* that profile: in class 5019,
//! `osint` (profile `osint`) and `cloud` (profile `cloud`) say `required`.
//! Such an attribute carries a non-empty `profiles` list and is required only
//! when the event declares one of those profiles in `metadata.profiles`; an
//! event that declares no profile need not have it. An attribute whose
//! `profiles` is absent or `null` belongs to the class itself and is always
//! as required as it says: class 5019 overrides the base event's `device`
//! (profile `host`, recommended) with `profiles: null`, required.
//!
//! # Example
//!
//! ```
//! use openshell_ocsf::schema::{Schema, default_schema_dir};
//! # fn main() -> Result<(), openshell_ocsf::Error> {
//! // The schema files live beside the repository; skip when absent.
//! let dir = match default_schema_dir() {
//!     Ok(dir) => dir,
//!     Err(skipped) => {
//!         println!("{skipped}");
//!         return Ok(());
//!     }
//! };
//! let schema = Schema::load(&dir)?;
//! let event = serde_json::json!({ "class_uid": 5019 });
//! let violations = schema.validate(&event).unwrap_err();
//! assert!(violations.iter().any(|v| v.to_string().contains("time")));
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Error;

/// Where the OCSF v1.8.0 schema files are kept, relative to a directory at
/// or above the repository: `shared/ocsf/v1.8.0`.
pub const SHARED_SCHEMA_DIR: &str = "shared/ocsf/v1.8.0";

/// The nearest [`SHARED_SCHEMA_DIR`] in `start` or a directory above it
/// (in this project's layout: beside the repository).
///
/// # Errors
///
/// [`NotFound`] when no such directory exists; a test then skips and says
/// so with the error's text.
pub fn find_schema_dir(start: &Path) -> Result<PathBuf, NotFound> {
    start
        .ancestors()
        .map(|dir| dir.join(SHARED_SCHEMA_DIR))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| NotFound {
            start: start.to_owned(),
        })
}

/// [`find_schema_dir`] from the package directory cargo names for this run
/// (`CARGO_MANIFEST_DIR`, read at run time), else from the current
/// directory.
///
/// # Errors
///
/// [`NotFound`] as [`find_schema_dir`].
pub fn default_schema_dir() -> Result<PathBuf, NotFound> {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    find_schema_dir(&start)
}

/// No [`SHARED_SCHEMA_DIR`] at or above a directory; its text is the skip
/// line: `skipped: shared/ocsf/v1.8.0 not found in <dir> or above`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("skipped: {SHARED_SCHEMA_DIR} not found in {} or above", start.display())]
pub struct NotFound {
    start: PathBuf,
}

impl NotFound {
    /// The directory the search started from.
    pub fn start(&self) -> &Path {
        &self.start
    }
}

// === impl Schema ===

/// The classes and objects of an OCSF schema directory.
#[derive(Clone, Debug)]
pub struct Schema {
    version: String,
    classes: BTreeMap<u64, Definition>,
    objects: BTreeMap<String, Definition>,
}

/// A class or object file; only the keys validation uses are read.
#[derive(Clone, Debug, Deserialize)]
struct Definition {
    name: String,
    uid: Option<u64>,
    #[serde(default)]
    attributes: BTreeMap<String, Attribute>,
    #[serde(default)]
    constraints: Constraints,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Constraints {
    #[serde(default)]
    at_least_one: Vec<String>,
    #[serde(default)]
    just_one: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct Attribute {
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    requirement: Option<String>,
    #[serde(default)]
    is_array: bool,
    #[serde(rename = "enum", default)]
    values: Option<BTreeMap<String, EnumValue>>,
    #[serde(default)]
    sibling: Option<String>,
    #[serde(default)]
    object_type: Option<String>,
    // Absent and `null` both mean "not from a profile".
    #[serde(default)]
    profiles: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
struct EnumValue {
    #[serde(default)]
    caption: Option<String>,
}

impl Attribute {
    fn is_required(&self, declared: &BTreeSet<String>) -> bool {
        if self.requirement.as_deref() != Some("required") {
            return false;
        }
        match &self.profiles {
            Some(profiles) if !profiles.is_empty() => profiles.iter().any(|p| declared.contains(p)),
            _ => true,
        }
    }
}

impl Schema {
    /// Reads `VERSION`, `classes/*.json` and `objects/*.json` under `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::ReadSchema`] when a file or directory cannot be read,
    /// [`Error::ParseSchema`] when a file is not a class or object definition
    /// (a class file must have a `uid`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let version_path = dir.join("VERSION");
        let version = fs::read_to_string(&version_path)
            .map_err(|source| Error::ReadSchema {
                path: version_path,
                source,
            })?
            .trim()
            .to_owned();
        let mut classes = Vec::new();
        for path in json_files(&dir.join("classes"))? {
            let text = read(&path)?;
            classes.push((path, text));
        }
        let mut objects = Vec::new();
        for path in json_files(&dir.join("objects"))? {
            let text = read(&path)?;
            objects.push((path, text));
        }
        Self::parse(version, &classes, &objects)
    }

    fn parse(
        version: String,
        classes: &[(PathBuf, String)],
        objects: &[(PathBuf, String)],
    ) -> Result<Self, Error> {
        let mut schema = Self {
            version,
            classes: BTreeMap::new(),
            objects: BTreeMap::new(),
        };
        for (path, text) in classes {
            let class = definition(path, text)?;
            let uid = class.uid.ok_or_else(|| Error::ParseSchema {
                path: path.clone(),
                source: serde::de::Error::custom("class definition has no `uid`"),
            })?;
            schema.classes.insert(uid, class);
        }
        for (path, text) in objects {
            let object = definition(path, text)?;
            schema.objects.insert(object.name.clone(), object);
        }
        Ok(schema)
    }

    /// The schema version, from the `VERSION` file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Checks `event` against the schema; see the module docs for what is
    /// checked.
    ///
    /// # Errors
    ///
    /// Every violation found, in the order found.
    pub fn validate(&self, event: &Value) -> Result<(), Vec<Violation>> {
        let mut check = Check {
            schema: self,
            declared_profiles: declared_profiles(event),
            violations: Vec::new(),
        };
        check.event(event);
        if check.violations.is_empty() {
            Ok(())
        } else {
            Err(check.violations)
        }
    }
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_error = |source| Error::ReadSchema {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::ReadSchema {
        path: path.to_owned(),
        source,
    })
}

fn definition(path: &Path, text: &str) -> Result<Definition, Error> {
    serde_json::from_str(text).map_err(|source| Error::ParseSchema {
        path: path.to_owned(),
        source,
    })
}

fn declared_profiles(event: &Value) -> BTreeSet<String> {
    event
        .pointer("/metadata/profiles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

// === impl Violation ===

/// One way an event breaks the schema; `path` is the attribute, dotted from
/// the event root (`metadata.product.name`, `metadata.profiles[0]`), empty
/// for the event itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A required attribute is absent (or `null`).
    #[error("{path}: required attribute is missing")]
    MissingRequired {
        /// The attribute.
        path: String,
    },
    /// The class or object defines no such attribute.
    #[error("{path}: not defined by the schema (use `unmapped`)")]
    UnknownAttribute {
        /// The attribute.
        path: String,
    },
    /// The value has the wrong JSON type, or an integer is out of range.
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        /// The attribute.
        path: String,
        /// What the OCSF type requires, e.g. `integer`.
        expected: &'static str,
        /// What arrived, e.g. `string`.
        found: &'static str,
    },
    /// An enum attribute holds a value its `enum` does not list.
    #[error("{path}: {value} is not in the enum")]
    NotInEnum {
        /// The attribute.
        path: String,
        /// The value, as text.
        value: String,
    },
    /// A sibling string is not the caption of its id.
    #[error("{path}: expected caption {expected:?}, found {found:?}")]
    SiblingMismatch {
        /// The sibling attribute, e.g. `severity`.
        path: String,
        /// The caption of the id.
        expected: String,
        /// What arrived.
        found: String,
    },
    /// An object constraint does not hold.
    #[error("{}: {constraint} of {attributes:?} not met", if path.is_empty() { "event" } else { path })]
    ConstraintUnmet {
        /// The object.
        path: String,
        /// `at_least_one` or `just_one`.
        constraint: &'static str,
        /// The attributes it names.
        attributes: Vec<String>,
    },
    /// No class file has this `class_uid`.
    #[error("class_uid: no class {class_uid} in the schema")]
    UnknownClass {
        /// The `class_uid` that arrived.
        class_uid: u64,
    },
    /// `type_uid` is not `class_uid * 100 + activity_id`.
    #[error("type_uid: expected {expected} (class_uid * 100 + activity_id), found {found}")]
    TypeUidMismatch {
        /// `class_uid * 100 + activity_id`.
        expected: u64,
        /// The `type_uid` that arrived.
        found: u64,
    },
    /// `metadata.version` is not the schema's version.
    #[error("metadata.version: expected {expected:?}, found {found:?}")]
    VersionMismatch {
        /// The schema's version.
        expected: String,
        /// The `metadata.version` that arrived.
        found: String,
    },
}

impl Violation {
    /// The attribute the violation is about (empty for the event itself).
    pub fn path(&self) -> &str {
        match self {
            Self::MissingRequired { path }
            | Self::UnknownAttribute { path }
            | Self::WrongType { path, .. }
            | Self::NotInEnum { path, .. }
            | Self::SiblingMismatch { path, .. }
            | Self::ConstraintUnmet { path, .. } => path,
            Self::UnknownClass { .. } => "class_uid",
            Self::TypeUidMismatch { .. } => "type_uid",
            Self::VersionMismatch { .. } => "metadata.version",
        }
    }
}

// === impl Check ===

/// One validation run.
struct Check<'a> {
    schema: &'a Schema,
    declared_profiles: BTreeSet<String>,
    violations: Vec<Violation>,
}

/// The JSON shape an OCSF type maps to.
#[derive(Clone, Copy)]
enum JsonType {
    Int32,
    Int64,
    Number,
    Boolean,
    String,
    Object,
    Any,
}

impl JsonType {
    fn of(ocsf_type: &str) -> Self {
        match ocsf_type {
            "integer_t" | "port_t" => Self::Int32,
            "long_t" | "timestamp_t" => Self::Int64,
            "float_t" => Self::Number,
            "boolean_t" => Self::Boolean,
            "object_t" => Self::Object,
            "json_t" => Self::Any,
            // Every other OCSF scalar type (hostname_t, ip_t, datetime_t,
            // uuid_t, ...) is a refinement of string_t.
            _ => Self::String,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Int32 => "32-bit integer",
            Self::Int64 => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Object => "object",
            Self::Any => "any JSON value",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match self {
            Self::Int32 => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            // u64 above i64::MAX is no OCSF long either.
            Self::Int64 => value.is_i64(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::String => value.is_string(),
            Self::Object => value.is_object(),
            Self::Any => true,
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "fractional number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn present(value: Option<&Value>) -> bool {
    value.is_some_and(|v| !v.is_null())
}

/// An enum key as the schema writes it: integers and strings as text.
fn enum_key(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

impl Check<'_> {
    fn report(&mut self, violation: Violation) {
        self.violations.push(violation);
    }

    fn event(&mut self, event: &Value) {
        let Some(fields) = event.as_object() else {
            self.report(Violation::WrongType {
                path: String::new(),
                expected: "object",
                found: json_kind(event),
            });
            return;
        };
        let class_uid = match fields.get("class_uid") {
            None | Some(Value::Null) => {
                self.report(Violation::MissingRequired {
                    path: "class_uid".to_owned(),
                });
                return;
            }
            Some(value) => match value.as_u64() {
                Some(uid) => uid,
                None => {
                    self.report(Violation::WrongType {
                        path: "class_uid".to_owned(),
                        expected: "integer",
                        found: json_kind(value),
                    });
                    return;
                }
            },
        };
        let schema = self.schema;
        let Some(class) = schema.classes.get(&class_uid) else {
            self.report(Violation::UnknownClass { class_uid });
            return;
        };
        self.object("", class, fields);

        let activity_id = fields.get("activity_id").and_then(Value::as_u64);
        let type_uid = fields.get("type_uid").and_then(Value::as_u64);
        if let (Some(activity_id), Some(found)) = (activity_id, type_uid) {
            let expected = class_uid * 100 + activity_id;
            if found != expected {
                self.report(Violation::TypeUidMismatch { expected, found });
            }
        }

        if let Some(found) = event.pointer("/metadata/version").and_then(Value::as_str)
            && found != schema.version
        {
            self.report(Violation::VersionMismatch {
                expected: schema.version.clone(),
                found: found.to_owned(),
            });
        }
    }

    fn object(&mut self, path: &str, definition: &Definition, fields: &Map<String, Value>) {
        for (name, attribute) in &definition.attributes {
            if attribute.is_required(&self.declared_profiles) && !present(fields.get(name)) {
                self.report(Violation::MissingRequired {
                    path: join(path, name),
                });
            }
        }

        for (key, value) in fields {
            let key_path = join(path, key);
            match definition.attributes.get(key) {
                Some(attribute) => self.value(&key_path, attribute, value),
                None => self.report(Violation::UnknownAttribute { path: key_path }),
            }
        }

        let constraints = &definition.constraints;
        let count = |names: &[String]| names.iter().filter(|n| present(fields.get(*n))).count();
        if !constraints.at_least_one.is_empty() && count(&constraints.at_least_one) == 0 {
            self.report(Violation::ConstraintUnmet {
                path: path.to_owned(),
                constraint: "at_least_one",
                attributes: constraints.at_least_one.clone(),
            });
        }
        if !constraints.just_one.is_empty() && count(&constraints.just_one) != 1 {
            self.report(Violation::ConstraintUnmet {
                path: path.to_owned(),
                constraint: "just_one",
                attributes: constraints.just_one.clone(),
            });
        }

        for (name, attribute) in &definition.attributes {
            self.sibling(path, name, attribute, fields);
        }
    }

    /// The sibling string of an enum id must be its caption, except for 99
    /// (Other), where the source supplies it.
    fn sibling(
        &mut self,
        path: &str,
        name: &str,
        attribute: &Attribute,
        fields: &Map<String, Value>,
    ) {
        let (Some(values), Some(sibling)) = (&attribute.values, &attribute.sibling) else {
            return;
        };
        let (Some(id), Some(found)) = (
            fields.get(name).and_then(enum_key),
            fields.get(sibling).and_then(Value::as_str),
        ) else {
            return;
        };
        if id == "99" {
            return;
        }
        let Some(expected) = values.get(&id).and_then(|v| v.caption.as_deref()) else {
            return;
        };
        if found != expected {
            self.report(Violation::SiblingMismatch {
                path: join(path, sibling),
                expected: expected.to_owned(),
                found: found.to_owned(),
            });
        }
    }

    fn value(&mut self, path: &str, attribute: &Attribute, value: &Value) {
        if attribute.is_array {
            match value.as_array() {
                Some(items) => {
                    for (index, item) in items.iter().enumerate() {
                        self.scalar(&format!("{path}[{index}]"), attribute, item);
                    }
                }
                None => self.report(Violation::WrongType {
                    path: path.to_owned(),
                    expected: "array",
                    found: json_kind(value),
                }),
            }
        } else {
            self.scalar(path, attribute, value);
        }
    }

    fn scalar(&mut self, path: &str, attribute: &Attribute, value: &Value) {
        let expected = JsonType::of(&attribute.type_name);
        if !expected.matches(value) {
            self.report(Violation::WrongType {
                path: path.to_owned(),
                expected: expected.name(),
                found: json_kind(value),
            });
            return;
        }
        if let Some(values) = &attribute.values
            && let Some(key) = enum_key(value)
            && !values.contains_key(&key)
        {
            self.report(Violation::NotInEnum {
                path: path.to_owned(),
                value: key,
            });
        }
        if let (Some(fields), Some(object_type)) = (value.as_object(), &attribute.object_type) {
            let schema = self.schema;
            if let Some(definition) = schema.objects.get(object_type) {
                self.object(path, definition, fields);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The validator's rules, on a small made-up schema so that they are
    //! tested whether or not the shared OCSF files are present.

    use serde_json::json;

    use super::*;

    const CLASS: &str = r#"{
        "name": "widget_change", "uid": 9,
        "attributes": {
            "time": {"type": "timestamp_t", "requirement": "required"},
            "class_uid": {"type": "integer_t", "requirement": "required", "enum": {"9": {"caption": "Widget Change"}}},
            "activity_id": {"type": "integer_t", "requirement": "required", "sibling": "activity_name",
                            "enum": {"1": {"caption": "Log"}, "99": {"caption": "Other"}}},
            "activity_name": {"type": "string_t", "requirement": "optional"},
            "type_uid": {"type": "long_t", "requirement": "required"},
            "count": {"type": "integer_t", "requirement": "optional"},
            "labels": {"type": "string_t", "requirement": "optional", "is_array": true},
            "metadata": {"type": "object_t", "requirement": "required", "object_type": "metadata"},
            "device": {"type": "object_t", "requirement": "required", "object_type": "device", "profiles": null},
            "cloud": {"type": "object_t", "requirement": "required", "object_type": "cloud", "profiles": ["cloud"]},
            "unmapped": {"type": "object_t", "requirement": "optional", "object_type": "object"}
        }
    }"#;
    const METADATA: &str = r#"{
        "name": "metadata",
        "attributes": {
            "version": {"type": "string_t", "requirement": "required"},
            "product": {"type": "object_t", "requirement": "required", "object_type": "product"},
            "profiles": {"type": "string_t", "requirement": "optional", "is_array": true}
        }
    }"#;
    const PRODUCT: &str = r#"{
        "name": "product", "constraints": {"at_least_one": ["name", "uid"]},
        "attributes": {
            "name": {"type": "string_t", "requirement": "recommended"},
            "uid": {"type": "string_t", "requirement": "recommended"}
        }
    }"#;
    const DEVICE: &str = r#"{
        "name": "device",
        "attributes": {"hostname": {"type": "hostname_t", "requirement": "recommended"}}
    }"#;

    fn schema() -> Schema {
        let file = |name: &str, text: &str| (PathBuf::from(name), text.to_owned());
        Schema::parse(
            "1.8.0".to_owned(),
            &[file("widget_change.json", CLASS)],
            &[
                file("metadata.json", METADATA),
                file("product.json", PRODUCT),
                file("device.json", DEVICE),
            ],
        )
        .unwrap()
    }

    fn valid() -> Value {
        json!({
            "time": 1_700_000_000_000_i64,
            "class_uid": 9,
            "activity_id": 1,
            "activity_name": "Log",
            "type_uid": 901,
            "metadata": {"version": "1.8.0", "product": {"name": "p"}},
            "device": {"hostname": "h"},
            "unmapped": {"anything": [1, "two"]}
        })
    }

    /// Sorted by path, so that the order does not depend on how
    /// `serde_json` orders object keys.
    fn violations(event: &Value) -> Vec<Violation> {
        let mut found = schema().validate(event).err().unwrap_or_default();
        found.sort_by_key(|v| (v.path().to_owned(), v.to_string()));
        found
    }

    #[test]
    fn accepts_a_valid_event() {
        assert_eq!(schema().validate(&valid()), Ok(()));
    }

    /// A change to the valid event.
    type Edit = fn(&mut Value);

    fn remove(value: &mut Value, key: &str) {
        value.as_object_mut().unwrap().remove(key);
    }

    /// Each rule, by an edit of the valid event and the violations it
    /// causes (sorted by path).
    #[test]
    fn each_rule_reports_what_breaks_it() {
        let missing = |path: &str| Violation::MissingRequired { path: path.into() };
        let wrong = |path: &str, expected, found| Violation::WrongType {
            path: path.into(),
            expected,
            found,
        };
        let cases: Vec<(&str, Edit, Vec<Violation>)> = vec![
            (
                "required attributes at every level",
                |e| {
                    remove(e, "time");
                    remove(&mut e["metadata"], "product");
                },
                vec![missing("metadata.product"), missing("time")],
            ),
            (
                "a profile attribute once the profile is declared",
                |e| e["metadata"]["profiles"] = json!(["cloud"]),
                vec![missing("cloud")],
            ),
            (
                "`profiles: null` means always required",
                |e| remove(e, "device"),
                vec![missing("device")],
            ),
            (
                "JSON types",
                |e| {
                    e["time"] = json!("2024-01-01T00:00:00Z");
                    e["count"] = json!(1.5);
                    e["labels"] = json!(["a", 2]);
                    e["device"]["hostname"] = json!(7);
                },
                vec![
                    wrong("count", "32-bit integer", "fractional number"),
                    wrong("device.hostname", "string", "integer"),
                    wrong("labels[1]", "string", "integer"),
                    wrong("time", "integer", "string"),
                ],
            ),
            (
                "integer_t fits in 32 bits",
                |e| e["count"] = json!(i64::from(i32::MAX) + 1),
                vec![wrong("count", "32-bit integer", "integer")],
            ),
            (
                "a value outside the enum",
                |e| {
                    e["activity_id"] = json!(2);
                    e["type_uid"] = json!(902);
                },
                vec![Violation::NotInEnum {
                    path: "activity_id".into(),
                    value: "2".into(),
                }],
            ),
            (
                "a sibling that is not the caption",
                |e| e["activity_name"] = json!("Collect"),
                vec![Violation::SiblingMismatch {
                    path: "activity_name".into(),
                    expected: "Log".into(),
                    found: "Collect".into(),
                }],
            ),
            (
                "type_uid other than class_uid * 100 + activity_id",
                |e| e["type_uid"] = json!(902),
                vec![Violation::TypeUidMismatch {
                    expected: 901,
                    found: 902,
                }],
            ),
            (
                "attributes the schema does not define",
                |e| {
                    e["fingerprint"] = json!("4F:01");
                    e["metadata"]["product"]["color"] = json!("red");
                },
                vec![
                    Violation::UnknownAttribute {
                        path: "fingerprint".into(),
                    },
                    Violation::UnknownAttribute {
                        path: "metadata.product.color".into(),
                    },
                ],
            ),
            (
                "an unmet at_least_one constraint",
                |e| e["metadata"]["product"] = json!({}),
                vec![Violation::ConstraintUnmet {
                    path: "metadata.product".into(),
                    constraint: "at_least_one",
                    attributes: vec!["name".into(), "uid".into()],
                }],
            ),
            (
                "another metadata.version",
                |e| e["metadata"]["version"] = json!("1.7.0"),
                vec![Violation::VersionMismatch {
                    expected: "1.8.0".into(),
                    found: "1.7.0".into(),
                }],
            ),
            (
                "Other (99) takes any sibling",
                |e| {
                    e["activity_id"] = json!(99);
                    e["activity_name"] = json!("Collect");
                    e["type_uid"] = json!(999);
                },
                vec![],
            ),
        ];
        for (rule, edit, expected) in cases {
            let mut event = valid();
            edit(&mut event);
            assert_eq!(violations(&event), expected, "{rule}");
        }
    }

    #[test]
    fn reports_unknown_or_missing_class() {
        assert_eq!(
            violations(&json!({"class_uid": 5019})),
            [Violation::UnknownClass { class_uid: 5019 }]
        );
        assert_eq!(
            violations(&json!({})),
            [Violation::MissingRequired {
                path: "class_uid".into()
            }]
        );
        assert!(matches!(
            violations(&json!([])).as_slice(),
            [Violation::WrongType {
                expected: "object",
                found: "array",
                ..
            }]
        ));
    }

    #[test]
    fn class_file_without_uid_is_a_parse_error_naming_the_file() {
        let class = (
            PathBuf::from("classes/bad.json"),
            r#"{"name": "bad"}"#.to_owned(),
        );
        let message = Schema::parse("1.8.0".to_owned(), &[class], &[])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("classes/bad.json: class definition has no `uid`"),
            "{message}"
        );
    }

    #[test]
    fn load_of_a_missing_directory_names_the_version_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Schema::load(dir.path().join("nope")).unwrap_err();
        assert!(
            matches!(&err, Error::ReadSchema { path, .. } if path.ends_with("nope/VERSION")),
            "{err}"
        );
    }

    #[test]
    fn load_reads_version_classes_and_objects_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("VERSION", "1.8.0\n"),
            ("classes/widget_change.json", CLASS),
            ("objects/metadata.json", METADATA),
            ("objects/product.json", PRODUCT),
            ("objects/device.json", DEVICE),
            ("objects/README.md", "not json"),
        ];
        for (name, text) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let schema = Schema::load(dir.path()).unwrap();
        assert_eq!(schema.version(), "1.8.0");
        assert_eq!(schema.validate(&valid()), Ok(()));
    }
}
