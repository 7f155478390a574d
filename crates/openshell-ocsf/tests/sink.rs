//! Writing JSONL: the direct sink, and `tracing` with the `ocsf` target kept
//! out of the ordinary logs.

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is a failed test")]

mod common;

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use openshell_ocsf::{
    DeviceConfigStateChange, Error, OCSF_JSON_FIELD, OCSF_TARGET, OcsfLayer, OcsfSink, emit,
};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

use common::every_constructor;

fn events() -> Vec<DeviceConfigStateChange> {
    every_constructor().into_iter().map(|(_, e)| e).collect()
}

fn parse_lines(text: &str) -> Vec<DeviceConfigStateChange> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A `tracing_subscriber` writer that collects output in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn file_sink_writes_one_json_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    let sink = OcsfSink::file(&path).unwrap();
    for event in events() {
        sink.write(&event).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(parse_lines(&text), events());
    assert_eq!(sink.failed_writes(), 0);
}

#[test]
fn file_sink_appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    let events = events();
    OcsfSink::file(&path).unwrap().write(&events[0]).unwrap();
    OcsfSink::file(&path).unwrap().write(&events[1]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(parse_lines(&text), events[..2]);
}

#[test]
fn file_sink_open_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("ocsf.jsonl");
    let err = OcsfSink::file(&path).unwrap_err();
    assert!(matches!(&err, Error::OpenSink { path: p, .. } if *p == path));
    assert!(
        err.to_string()
            .starts_with(&format!("opening OCSF log {}: ", path.display()))
    );
}

#[cfg(target_os = "linux")]
#[test]
fn failed_write_is_returned_and_counted() {
    // Every write to /dev/full fails with "no space left on device".
    let sink = OcsfSink::file("/dev/full").unwrap();
    let err = sink.write(&events()[0]).unwrap_err();
    assert!(
        matches!(&err, Error::WriteSink { sink, .. } if sink == "/dev/full"),
        "{err}"
    );
    assert_eq!(sink.failed_writes(), 1);
}

#[test]
fn layer_writes_only_ocsf_target_events_to_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    let subscriber =
        tracing_subscriber::registry().with(OcsfLayer::new(OcsfSink::file(&path).unwrap()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("ordinary log line");
        tracing::info!(target: "ocsf_other", ocsf = "{}", "a near-miss target");
        for event in events() {
            emit(&event);
        }
    });
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(parse_lines(&text), events());
}

#[test]
fn log_layer_filter_keeps_the_audit_stream_out_of_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_filter(filter_fn(|meta| meta.target() != OCSF_TARGET)),
        )
        .with(OcsfLayer::new(OcsfSink::file(&path).unwrap()));
    let event = &events()[2];
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("ordinary log line");
        emit(event);
    });
    let logs = logs.text();
    assert!(logs.contains("ordinary log line"), "{logs}");
    assert!(!logs.contains("5019"), "{logs}");
    assert!(!logs.contains("TLS certificate"), "{logs}");
    let audit = std::fs::read_to_string(&path).unwrap();
    assert_eq!(audit, format!("{}\n", event.to_json().unwrap()));
}

#[test]
fn emit_carries_the_json_line_and_the_shorthand() {
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(move || writer.clone()),
    );
    let event = &events()[2];
    tracing::subscriber::with_default(subscriber, || emit(event));
    let logged: serde_json::Value = serde_json::from_str(logs.text().trim()).unwrap();
    assert_eq!(logged["target"], OCSF_TARGET);
    assert_eq!(logged["level"], "INFO");
    assert_eq!(logged["fields"][OCSF_JSON_FIELD], event.to_json().unwrap());
    assert_eq!(logged["fields"]["message"], event.to_string());
}
