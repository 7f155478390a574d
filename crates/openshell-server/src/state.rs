//! What every connection of one gateway shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openshell_ocsf::OcsfSink;
use tls_reload::ReloadableAcceptor;

use crate::metrics::Metrics;

/// Shared by the accept loops, the HTTP routes and the gRPC services.
#[derive(Debug)]
pub(crate) struct State {
    /// `None` when TLS is disabled.
    pub(crate) tls: Option<ReloadableAcceptor>,
    pub(crate) metrics: Metrics,
    /// Where audit events go; its failure count is a metric.
    pub(crate) audit_sink: Arc<OcsfSink>,
    ready: AtomicBool,
}

impl State {
    pub(crate) fn new(tls: Option<ReloadableAcceptor>, audit_sink: Arc<OcsfSink>) -> Self {
        Self {
            tls,
            metrics: Metrics::default(),
            audit_sink,
            ready: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
