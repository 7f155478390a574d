//! What every connection of one gateway shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openshell_ocsf::OcsfSink;
use tls_reload::{
    ReloadFailure, ReloadOutcome, ReloadableAcceptor, SniIdentity, TlsFiles, Trigger,
};
use tokio::sync::mpsc;

use crate::audit::ManualReload;

use crate::metrics::Metrics;

/// Shared by the accept loops, the HTTP routes and the gRPC services.
#[derive(Debug)]
pub(crate) struct State {
    /// `None` when TLS is disabled.
    pub(crate) tls: Option<ReloadableAcceptor>,
    /// The SNI identities served besides the default one, as configured.
    pub(crate) sni: Vec<SniIdentity>,
    pub(crate) metrics: Metrics,
    /// The open connections a change of client trust may end.
    pub(crate) connections: Arc<crate::trust::Connections>,
    /// Where audit events go; its failure count is a metric.
    pub(crate) audit_sink: Arc<OcsfSink>,
    /// Outcomes of reloads operators asked for, to the audit task.
    manual_reloads: mpsc::UnboundedSender<ManualReload>,
    /// Manual reloads in flight: the gateway waits for them before it stops
    /// the audit task, so that none ends unaudited.
    pub(crate) manual_in_flight: tokio_util::task::TaskTracker,
    ready: AtomicBool,
}

impl State {
    pub(crate) fn new(
        tls: Option<ReloadableAcceptor>,
        sni: Vec<SniIdentity>,
        audit_sink: Arc<OcsfSink>,
        manual_reloads: mpsc::UnboundedSender<ManualReload>,
    ) -> Self {
        Self {
            tls,
            sni,
            metrics: Metrics::default(),
            connections: Arc::default(),
            audit_sink,
            manual_reloads,
            manual_in_flight: tokio_util::task::TaskTracker::new(),
            ready: AtomicBool::new(false),
        }
    }

    /// Reloads now on an operator's request (SIGHUP, `ReloadTls`) and has
    /// the outcome audited, whatever it is: the library reports only
    /// changes and new failures, but every request of an operator is on
    /// record. `None` with TLS disabled.
    pub(crate) async fn reload_now(
        &self,
        trigger: Trigger,
    ) -> Option<Result<ReloadOutcome, Arc<ReloadFailure>>> {
        let _in_flight = self.manual_in_flight.token();
        let outcome = self.tls.as_ref()?.reload_now(trigger).await;
        // The audit task lives as long as the gateway serves.
        let _ = self.manual_reloads.send(ManualReload {
            trigger,
            outcome: outcome.clone(),
        });
        Some(outcome)
    }

    /// The files of the identity labelled `label` (`default`, or an SNI
    /// identity's first name).
    pub(crate) fn identity_files(&self, label: &str) -> Option<&TlsFiles> {
        identity_files(self.tls.as_ref()?, &self.sni, label)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// The files of the identity labelled `label` among the default identity of
/// `acceptor` and the SNI identities `sni`.
pub(crate) fn identity_files<'a>(
    acceptor: &'a ReloadableAcceptor,
    sni: &'a [SniIdentity],
    label: &str,
) -> Option<&'a TlsFiles> {
    sni.iter()
        .find(|i| i.label() == label)
        .map(SniIdentity::files)
        .or_else(|| (label == tls_reload::DEFAULT_IDENTITY).then(|| acceptor.files()))
}
