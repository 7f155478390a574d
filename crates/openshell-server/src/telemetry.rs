//! Logs: one subscriber, one global filter.
//!
//! The filter is global (not per layer) so that a callsite it disables is
//! disabled for good: the spans of h2, hyper and tonic on the request path
//! then cost a cached check, not a registry entry per request. Audit
//! events do not pass through here: the audit task writes them to their
//! sink itself, so no log filter can drop one.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};
use crate::error::Result;

/// Installs the global subscriber: logs (`RUST_LOG`, default `info`) in the
/// configured format on stderr. A second call does nothing.
///
/// # Errors
///
/// None at present; the signature leaves room for log sinks that can fail
/// to open.
pub fn init(config: &Config) -> Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
