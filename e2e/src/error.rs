//! The one error type of this crate.

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

/// What went wrong while driving the gateway, a program or a cluster.
///
/// Each variant names what was being done (the command line, the file, the
/// awaited condition) and carries what the other side said, so that a
/// failed end-to-end test explains itself. `Debug` prints the same
/// message as `Display` (and its sources), so that a test's `unwrap()`
/// shows it readably.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program could not be started at all (not installed, not
    /// executable).
    #[error("starting `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },

    /// A program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {}", stderr.trim())]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its standard error.
        stderr: String,
    },

    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path or address.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An awaited condition did not come true in time.
    #[error("{what}: not within {}{}", humantime::format_duration(*within), detail_suffix(detail))]
    Timeout {
        /// The condition.
        what: String,
        /// How long it was given.
        within: Duration,
        /// The last observation, or the process output, when there is one.
        detail: String,
    },

    /// A child process (the gateway, a client) exited while it was
    /// expected to run.
    #[error("the {program} exited ({status}) while {during}\n{output}")]
    Exited {
        /// Which program (`gateway`, `mtls_client`).
        program: String,
        /// How it exited.
        status: ExitStatus,
        /// What the harness was waiting for.
        during: String,
        /// Everything it printed.
        output: String,
    },

    /// A program's output, a log line or a file did not have the expected
    /// shape.
    #[error("{what}: {detail}")]
    Unexpected {
        /// What was being read.
        what: String,
        /// What was wrong with it.
        detail: String,
    },

    /// The OCSF schema directory could not be loaded.
    #[error("loading the OCSF schema: {0}")]
    Schema(#[from] openshell_ocsf::Error),

    /// An OCSF event does not validate against the schema.
    #[error("OCSF event violates the schema: {}\nevent: {event}", violations.join("; "))]
    SchemaViolations {
        /// The event, as JSON.
        event: String,
        /// Each violation, rendered.
        violations: Vec<String>,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\ncaused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!("\n{detail}")
    }
}

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Unexpected`] about `what`.
    pub fn unexpected(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Unexpected {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// A wait of [`tls_reload::testing::poll`] that ran out of time.
impl From<tls_reload::testing::TimedOut> for Error {
    fn from(t: tls_reload::testing::TimedOut) -> Self {
        let detail = match t.last.is_empty() {
            true => t.last,
            false => format!("last seen: {}", t.last),
        };
        Error::Timeout {
            what: t.what,
            within: t.within,
            detail,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_names_the_condition_and_the_last_observation() {
        let within = Duration::from_millis(30);
        let probe = || Err::<(), _>("grey");
        let waited = tls_reload::testing::poll_blocking(within, within / 6, "blue", probe);
        let msg = Error::from(waited.unwrap_err()).to_string();
        assert!(
            msg.contains("blue") && msg.contains("last seen: grey"),
            "{msg}"
        );
    }
}
