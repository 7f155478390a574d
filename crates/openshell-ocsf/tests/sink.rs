//! Writing JSONL to the sink: one line per event, failures returned and
//! counted, rotated and removed files.

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is a failed test")]

mod common;

use openshell_ocsf::{DeviceConfigStateChange, Error, OcsfSink};

use common::every_constructor;

fn events() -> Vec<DeviceConfigStateChange> {
    every_constructor().into_iter().map(|(_, e)| e).collect()
}

fn parse_lines(text: &str) -> Vec<DeviceConfigStateChange> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
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
fn a_rotated_file_is_created_again_for_the_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    let sink = OcsfSink::file(&path).unwrap();
    let events = events();
    sink.write(&events[0]).unwrap();
    // logrotate without copytruncate: the file is moved away.
    std::fs::rename(&path, dir.path().join("ocsf.jsonl.1")).unwrap();
    sink.write(&events[1]).unwrap();
    assert_eq!(
        parse_lines(&std::fs::read_to_string(&path).unwrap()),
        events[1..2]
    );
    let rotated = std::fs::read_to_string(dir.path().join("ocsf.jsonl.1")).unwrap();
    assert_eq!(parse_lines(&rotated), events[..1]);
}

#[test]
fn a_file_whose_directory_was_removed_fails_each_write_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let path = logs.join("ocsf.jsonl");
    let sink = OcsfSink::file(&path).unwrap();
    std::fs::remove_dir_all(&logs).unwrap();
    for (i, event) in events().iter().take(3).enumerate() {
        let err = sink.write(event).unwrap_err();
        assert!(
            matches!(&err, Error::WriteSink { sink, .. } if *sink == path.display().to_string()),
            "{err}"
        );
        assert_eq!(sink.failed_writes(), i as u64 + 1);
    }
    // The directory comes back: writing resumes, nothing else to do.
    std::fs::create_dir(&logs).unwrap();
    sink.write(&events()[0]).unwrap();
    assert_eq!(sink.failed_writes(), 3);
}

#[test]
fn the_sink_names_what_it_writes_to() {
    assert_eq!(OcsfSink::stderr().name(), "stderr");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    assert_eq!(
        OcsfSink::file(&path).unwrap().name(),
        path.display().to_string()
    );
}

#[test]
fn concurrent_writers_never_interleave_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsf.jsonl");
    let sink = std::sync::Arc::new(OcsfSink::file(&path).unwrap());
    let events = events();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (sink, events) = (sink.clone(), &events);
            scope.spawn(move || {
                for event in events.iter().cycle().take(50) {
                    sink.write(event).unwrap();
                }
            });
        }
    });
    let lines = parse_lines(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|line| events.contains(line)));
}
