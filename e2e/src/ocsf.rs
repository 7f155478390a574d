//! Reading the gateway's OCSF audit events (JSONL) and validating them
//! against the OCSF v1.8.0 schema files when those are present.

use std::path::Path;

use openshell_ocsf::schema::{Schema, default_schema_dir};
use serde_json::Value;

use crate::error::{Error, Result};

/// The OCSF events among `lines`: those that are JSON objects with a
/// `class_uid`. Log lines (JSON or not) are skipped, so this reads a
/// stream where logs and audit events are interleaved (`--ocsf-log
/// stderr`, `kubectl logs`).
pub fn events_in<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Value> {
    lines
        .into_iter()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter(|v| v.get("class_uid").is_some())
        .collect()
}

/// The events of an OCSF JSONL file (`--ocsf-log PATH`); a file not yet
/// created has none.
///
/// A last line without its newline is being written and is left for the
/// next read.
///
/// # Errors
///
/// When the file cannot be read, or a complete line is not a JSON object:
/// the file must hold nothing but events.
pub fn read_file(path: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => Ok(v),
            Ok(_) => Err(Error::unexpected(
                format!("{} line {}", path.display(), n + 1),
                format!("not a JSON object: {line}"),
            )),
            Err(e) => Err(Error::unexpected(
                format!("{} line {}", path.display(), n + 1),
                format!("not JSON ({e}): {line}"),
            )),
        })
        .collect()
}

/// `metadata.event_code` of an event (`tls_loaded`, `tls_reloaded`,
/// `tls_reload_failed`, ...), or `""`.
pub fn event_code(event: &Value) -> &str {
    event["metadata"]["event_code"].as_str().unwrap_or_default()
}

/// The TLS details of an event (`unmapped.tls`).
pub fn tls_details(event: &Value) -> &Value {
    &event["unmapped"]["tls"]
}

/// The events of `events` whose `metadata.event_code` is `code`.
pub fn with_code<'a>(events: &'a [Value], code: &'a str) -> impl Iterator<Item = &'a Value> {
    events.iter().filter(move |e| event_code(e) == code)
}

/// Checks events for a test: there must be some, and each must validate
/// against the OCSF schema directory that
/// [`openshell_ocsf::schema::default_schema_dir`] finds beside the
/// repository; when there is none, the test says so on stderr
/// ([`say`](crate::say)) and passes.
///
/// # Errors
///
/// When there are no events, [`Error::Schema`] when the directory cannot
/// be loaded, and [`Error::SchemaViolations`] for the first event that
/// does not validate.
pub fn check(events: &[Value]) -> Result<()> {
    if events.is_empty() {
        return Err(Error::unexpected("the OCSF events", "there are none"));
    }
    let dir = match default_schema_dir() {
        Ok(dir) => dir,
        Err(skipped) => {
            crate::say(&format!("OCSF schema validation {skipped}"));
            return Ok(());
        }
    };
    let schema = Schema::load(&dir)?;
    for event in events {
        if let Err(violations) = schema.validate(event) {
            return Err(Error::SchemaViolations {
                event: event.to_string(),
                violations: violations.iter().map(ToString::to_string).collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_picked_out_of_interleaved_logs() {
        let lines = [
            r#"{"timestamp":"x","level":"INFO","fields":{"message":"listening"}}"#,
            "plain text",
            r#"{"class_uid":5019,"metadata":{"event_code":"tls_loaded"}}"#,
        ];
        let events = events_in(lines);
        assert_eq!(events.len(), 1);
        assert_eq!(event_code(&events[0]), "tls_loaded");
    }

    #[test]
    fn a_file_skips_its_unfinished_last_line_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        assert!(read_file(&path).unwrap().is_empty(), "missing file");
        std::fs::write(&path, "{\"class_uid\":5019}\n{\"class_u").unwrap();
        assert_eq!(read_file(&path).unwrap().len(), 1);
        std::fs::write(&path, "{\"class_uid\":5019}\nnope\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
