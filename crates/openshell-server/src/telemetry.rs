//! Logs and the OCSF audit stream: two layers on one subscriber, kept
//! apart by the `ocsf` target.

use openshell_ocsf::{OCSF_TARGET, OcsfLayer, OcsfSink};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::prelude::*;

use crate::config::{Config, LogFormat, OcsfTarget};
use crate::error::Result;

/// Installs the global subscriber: logs (`RUST_LOG`, default `info`) in the
/// configured format on stderr, and every OCSF event, unfiltered, to the
/// configured sink.
///
/// # Errors
///
/// When the OCSF log file cannot be opened.
pub fn init(config: &Config) -> Result<()> {
    let env = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let not_audit = filter_fn(|meta| meta.target() != OCSF_TARGET);
    let logs = match config.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(not_audit)
            .with_filter(env())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter_fn(|meta| meta.target() != OCSF_TARGET))
            .with_filter(env())
            .boxed(),
    };
    let sink = match &config.ocsf {
        OcsfTarget::Stderr => OcsfSink::stderr(),
        OcsfTarget::File(path) => OcsfSink::file(path)?,
    };
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(OcsfLayer::new(sink))
        .try_init();
    Ok(())
}
