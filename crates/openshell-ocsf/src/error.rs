//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// Each variant names its input (the file, the sink, the attribute) before
/// the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OCSF log file could not be opened for appending.
    #[error("opening OCSF log {path}: {source}")]
    OpenSink {
        /// The file that was opened.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },

    /// A line could not be written to the sink.
    #[error("writing OCSF event to {sink}: {source}")]
    WriteSink {
        /// `stderr`, or the path of the log file.
        sink: String,
        /// Why it failed.
        source: io::Error,
    },

    /// An event could not be serialized to JSON.
    #[error("serializing OCSF event: {0}")]
    Serialize(#[source] serde_json::Error),

    /// Parsed event JSON contradicts the Device Config State Change class
    /// (for example `type_uid` is not `class_uid * 100 + activity_id`).
    #[error("OCSF event attribute {attribute} is {found}, expected {expected}")]
    InconsistentEvent {
        /// The attribute, e.g. `type_uid`.
        attribute: &'static str,
        /// The value that arrived.
        found: String,
        /// The value this class requires.
        expected: String,
    },

    /// A schema file or directory could not be read.
    #[cfg(feature = "schema")]
    #[error("reading OCSF schema {path}: {source}")]
    ReadSchema {
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },

    /// A schema file is not JSON of the expected shape.
    #[cfg(feature = "schema")]
    #[error("parsing OCSF schema file {path}: {source}")]
    ParseSchema {
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: serde_json::Error,
    },
}
