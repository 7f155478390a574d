//! Writing events as JSONL: directly to a sink, or through `tracing` with
//! target [`OCSF_TARGET`] and the [`OcsfLayer`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::error::Error;
use crate::event::DeviceConfigStateChange;

/// The `tracing` target of audit events: [`emit`] logs with it, [`OcsfLayer`]
/// writes only events with it, and the ordinary log layer should drop it.
pub const OCSF_TARGET: &str = "ocsf";

/// The `tracing` field of an [`OCSF_TARGET`] event that holds the JSON line.
// `emit` spells the field out: `tracing` macros take field names literally.
pub const OCSF_JSON_FIELD: &str = "ocsf";

/// Logs `event` through `tracing` for an [`OcsfLayer`] to write.
///
/// The `tracing` event has target [`OCSF_TARGET`], level INFO, the JSON line
/// in the field [`OCSF_JSON_FIELD`] and the shorthand as its message. With no
/// subscriber interested in that target, nothing is written.
///
/// Should serializing fail (the types of this crate give `serde_json` no
/// reason to), an ERROR event on this crate's own target says so, with the
/// shorthand.
pub fn emit(event: &DeviceConfigStateChange) {
    match event.to_json() {
        Ok(json) => {
            tracing::info!(target: OCSF_TARGET, ocsf = json.as_str(), "{event}");
        }
        Err(error) => {
            tracing::error!(%error, "dropping OCSF event: {event}");
        }
    }
}

// === impl OcsfSink ===

/// Where JSON lines go: stderr or a file opened for appending.
///
/// Each event is written as one `write` of the whole line and its newline,
/// under a lock, then flushed; lines from concurrent writers never
/// interleave.
#[derive(Debug)]
pub struct OcsfSink {
    output: Mutex<Output>,
    name: String,
    failed_writes: AtomicU64,
}

#[derive(Debug)]
enum Output {
    Stderr,
    File(File),
}

impl OcsfSink {
    /// A sink that writes to the process's stderr.
    pub fn stderr() -> Self {
        Self::new(Output::Stderr, "stderr".to_owned())
    }

    /// A sink that appends to the file at `path`, creating it if absent.
    ///
    /// # Errors
    ///
    /// [`Error::OpenSink`] when the file cannot be opened for appending.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::OpenSink {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self::new(Output::File(file), path.display().to_string()))
    }

    fn new(output: Output, name: String) -> Self {
        Self {
            output: Mutex::new(output),
            name,
            failed_writes: AtomicU64::new(0),
        }
    }

    /// Writes `event` as one JSON line.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] or [`Error::WriteSink`]; both also count in
    /// [`failed_writes`](Self::failed_writes).
    pub fn write(&self, event: &DeviceConfigStateChange) -> Result<(), Error> {
        match event.to_json() {
            Ok(json) => self.write_line(&json),
            Err(error) => {
                self.failed_writes.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// How many events could not be written, including those from the
    /// [`OcsfLayer`], which has no caller to return an error to. Worth
    /// exporting as a metric.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }

    fn write_line(&self, json: &str) -> Result<(), Error> {
        let mut line = String::with_capacity(json.len() + 1);
        line.push_str(json);
        line.push('\n');
        // A panic elsewhere while holding the lock leaves the handle usable.
        let mut output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match &mut *output {
            Output::Stderr => {
                let mut stderr = io::stderr().lock();
                stderr
                    .write_all(line.as_bytes())
                    .and_then(|()| stderr.flush())
            }
            Output::File(file) => file.write_all(line.as_bytes()).and_then(|()| file.flush()),
        };
        result.map_err(|source| {
            self.failed_writes.fetch_add(1, Ordering::Relaxed);
            Error::WriteSink {
                sink: self.name.clone(),
                source,
            }
        })
    }
}

// === impl OcsfLayer ===

/// A `tracing_subscriber` layer that writes the JSON line of every
/// [`OCSF_TARGET`] event (see [`emit`]) to an [`OcsfSink`], and ignores all
/// other events.
///
/// It filters inside `on_event` rather than through `Layer::enabled`, which
/// would disable the other events for every layer of the subscriber.
#[derive(Clone, Debug)]
pub struct OcsfLayer {
    sink: Arc<OcsfSink>,
}

impl OcsfLayer {
    /// A layer writing to `sink`; pass an `Arc` to keep a handle for
    /// [`OcsfSink::failed_writes`].
    pub fn new(sink: impl Into<Arc<OcsfSink>>) -> Self {
        Self { sink: sink.into() }
    }
}

impl<S: Subscriber> Layer<S> for OcsfLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != OCSF_TARGET {
            return;
        }
        let mut visitor = JsonField(None);
        event.record(&mut visitor);
        if let Some(json) = visitor.0 {
            // Nobody to return the error to; the sink counts it.
            let _ = self.sink.write_line(&json);
        }
    }
}

/// Picks the [`OCSF_JSON_FIELD`] out of an event.
struct JsonField(Option<String>);

impl Visit for JsonField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == OCSF_JSON_FIELD {
            self.0 = Some(value.to_owned());
        }
    }

    // Reached when the field was recorded with `%` (Display).
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == OCSF_JSON_FIELD {
            self.0 = Some(format!("{value:?}"));
        }
    }
}
