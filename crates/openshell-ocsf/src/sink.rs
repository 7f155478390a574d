//! Writing events as JSONL to stderr or a file.
//!
//! Audit is data, not logging: the code that decides an event writes it
//! here and learns whether it was written. No log filter sits in between.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::Error;
use crate::event::DeviceConfigStateChange;

/// Where JSON lines go: stderr or a file opened for appending.
///
/// Each event is written as one `write` of the whole line and its newline,
/// under a lock, then flushed; lines from concurrent writers never
/// interleave.
///
/// A file sink opens its path for each event (audit events are rare), so a
/// file moved away by log rotation or deleted is created again, and a path
/// that can no longer be written is an error of that very write rather than
/// lines lost into a deleted file.
#[derive(Debug)]
pub struct OcsfSink {
    output: Output,
    /// Serialises writers, so lines never interleave.
    lock: Mutex<()>,
    failed_writes: AtomicU64,
}

#[derive(Debug)]
enum Output {
    Stderr,
    File(PathBuf),
}

impl OcsfSink {
    /// A sink that writes to the process's stderr.
    pub fn stderr() -> Self {
        Self::new(Output::Stderr)
    }

    /// A sink that appends to the file at `path`, creating it if absent.
    ///
    /// # Errors
    ///
    /// [`Error::OpenSink`] when the file cannot be opened for appending
    /// now, so that a wrong path is found at startup.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        open_append(path).map_err(|source| Error::OpenSink {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(Output::File(path.to_owned())))
    }

    fn new(output: Output) -> Self {
        Self {
            output,
            lock: Mutex::new(()),
            failed_writes: AtomicU64::new(0),
        }
    }

    /// What this sink writes to: `stderr` or the file's path.
    pub fn name(&self) -> String {
        match &self.output {
            Output::Stderr => "stderr".to_owned(),
            Output::File(path) => path.display().to_string(),
        }
    }

    /// Writes `event` as one JSON line.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] or [`Error::WriteSink`]; both also count in
    /// [`failed_writes`](Self::failed_writes).
    pub fn write(&self, event: &DeviceConfigStateChange) -> Result<(), Error> {
        let result = event.to_json().and_then(|json| self.write_line(&json));
        if result.is_err() {
            self.failed_writes.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// How many events could not be written. Worth exporting as a metric.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }

    fn write_line(&self, json: &str) -> Result<(), Error> {
        let mut line = String::with_capacity(json.len() + 1);
        line.push_str(json);
        line.push('\n');
        // A panic elsewhere while holding the lock leaves the sink usable.
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match &self.output {
            Output::Stderr => {
                let mut stderr = io::stderr().lock();
                stderr
                    .write_all(line.as_bytes())
                    .and_then(|()| stderr.flush())
            }
            Output::File(path) => open_append(path).and_then(|mut file| {
                file.write_all(line.as_bytes())?;
                file.flush()
            }),
        };
        result.map_err(|source| Error::WriteSink {
            sink: self.name(),
            source,
        })
    }
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}
