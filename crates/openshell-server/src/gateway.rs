//! Startup, serving and shutdown of one gateway.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use openshell_ocsf::OcsfSink;
use tls_reload::{ReloadableAcceptor, Trigger, Watcher};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::accept::{self, Limits};
use crate::config::{Config, OcsfTarget, TlsMode};
use crate::error::{Error, Result};
use crate::grpc_api::{GatewayApi, pb};
use crate::state::State;

/// How long a stopping gateway waits for manual reloads in flight: longer
/// than a reload's own bound on the file system (10 s).
const MANUAL_RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(12);

/// ALPN offered on the main port: gRPC needs h2, curl and browsers may use
/// either.
const ALPN: [&str; 2] = ["h2", "http/1.1"];

/// A gateway whose TLS material is loaded and whose ports are bound, ready
/// to [`serve`](Self::serve).
pub struct Gateway {
    config: Config,
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    state: Arc<State>,
    watcher: Option<Watcher>,
    grpc: Routes,
    health: HealthReporter,
    stop: CancellationToken,
    /// Stops the audit task when dropped: at the end of `serve`, or with a
    /// gateway bound but never served.
    audit_stop: tokio_util::sync::DropGuard,
    audit_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("bind", &self.listener.local_addr().ok())
            .field("tls", &self.state.tls)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Loads the TLS files (failing fast with the file and cause), starts
    /// the watcher, and binds the ports.
    ///
    /// # Errors
    ///
    /// Settings out of range ([`Config::check`]), invalid TLS files, or an
    /// address that cannot be bound.
    pub async fn bind(config: Config) -> Result<Self> {
        config.check()?;
        let (acceptor, watcher) = match &config.tls {
            TlsMode::Disabled => {
                tracing::warn!("TLS is disabled: serving plaintext");
                (None, None)
            }
            TlsMode::Files { files, sni, reload } => {
                let builder = sni
                    .iter()
                    .cloned()
                    .fold(ReloadableAcceptor::builder(files.clone()), |b, identity| {
                        b.sni(identity)
                    })
                    .alpn(ALPN);
                match reload {
                    Some(r) => {
                        let (acceptor, watcher) =
                            builder.debounce(r.debounce).poll_interval(r.poll).start()?;
                        (Some(acceptor), Some(watcher))
                    }
                    None => (Some(builder.build()?), None),
                }
            }
        };
        let listener = bind(config.bind).await?;
        let health_listener = match config.health_bind {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };

        let audit_sink = Arc::new(match &config.ocsf {
            OcsfTarget::Stderr => OcsfSink::stderr(),
            OcsfTarget::File(path) => OcsfSink::file(path)?,
        });
        let (manual_tx, manual_rx) = tokio::sync::mpsc::unbounded_channel();
        let sni = match &config.tls {
            TlsMode::Files { sni, .. } => sni.clone(),
            TlsMode::Disabled => Vec::new(),
        };
        let state = Arc::new(State::new(acceptor, sni, audit_sink.clone(), manual_tx));
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Reflection(e.to_string()))?;
        let grpc = Routes::new(health_service)
            .add_service(reflection)
            .add_service(pb::gateway_server::GatewayServer::new(GatewayApi {
                state: state.clone(),
            }))
            .prepare();

        let stop = CancellationToken::new();
        // The audit task outlives the drain: reloads during it are audited
        // too. It stops once the watcher has.
        let audit_stop = CancellationToken::new();
        let audit_task = match &state.tls {
            Some(acceptor) => {
                // Checks the open connections after each change of client
                // trust, and has the audit task report it.
                let (trust_tx, trust_rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(crate::trust::watch(
                    acceptor.clone(),
                    acceptor.subscribe(),
                    state.clone(),
                    trust_tx,
                    audit_stop.clone(),
                ));
                Some(tokio::spawn(crate::audit::run(
                    acceptor.clone(),
                    state.sni.clone(),
                    acceptor.subscribe(),
                    manual_rx,
                    trust_rx,
                    crate::audit::Audit::start(audit_sink).map_err(Error::Audit)?,
                    audit_stop.clone(),
                )))
            }
            None => None,
        };
        Ok(Self {
            config,
            listener,
            health_listener,
            state,
            watcher,
            grpc,
            health,
            stop,
            audit_stop: audit_stop.drop_guard(),
            audit_task,
        })
    }

    /// The address of the main (TLS) port.
    ///
    /// # Errors
    ///
    /// As `getsockname`.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of the plaintext health port, if any.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The reloadable acceptor (`None` with TLS disabled).
    pub fn acceptor(&self) -> Option<&ReloadableAcceptor> {
        self.state.tls.as_ref()
    }

    /// Binds (as [`bind`](Self::bind)) and serves in a task of the current
    /// tokio runtime until the returned handle is stopped or dropped.
    ///
    /// This is the in-process gateway of tests, benchmarks and embedders
    /// that do not need their own shutdown future.
    ///
    /// ```no_run
    /// use openshell_server::{Config, Gateway};
    /// use tls_reload::TlsFiles;
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let files = TlsFiles::new("/etc/tls/tls.crt", "/etc/tls/tls.key");
    /// let running = Gateway::spawn(Config::with_tls("127.0.0.1:0".parse()?, files)).await?;
    /// println!("serving on {}", running.addr());
    /// running.stop().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind).
    pub async fn spawn(config: Config) -> Result<GatewayHandle> {
        let gateway = Self::bind(config).await?;
        let addr = gateway.local_addr().map_err(|error| Error::Bind {
            addr: gateway.config.bind,
            error,
        })?;
        let health_addr = gateway.health_addr();
        let acceptor = gateway.acceptor().cloned();
        let stop = CancellationToken::new();
        let task = tokio::spawn(gateway.serve(stop.clone().cancelled_owned()));
        Ok(GatewayHandle {
            addr,
            health_addr,
            acceptor,
            stop,
            task,
        })
    }

    /// Serves until `shutdown` completes, then stops accepting, lets open
    /// connections finish within the shutdown grace period, stops the
    /// watcher and returns.
    ///
    /// # Errors
    ///
    /// None at present; the signature leaves room for fatal serving errors.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (config, state, stop, health) = (&self.config, &self.state, &self.stop, &self.health);
        set_health(health, ServingStatus::Serving).await;
        state.set_ready(true);

        let tracker = TaskTracker::new();
        let limits = Limits::from(config);
        let main = tokio::spawn(accept::serve_main(
            self.listener,
            state.clone(),
            self.grpc,
            limits,
            config.max_connections,
            stop.clone(),
            tracker.clone(),
        ));
        // The health port outlives the drain so probes keep answering
        // (readiness says "not ready" meanwhile).
        let health_stop = CancellationToken::new();
        let health_task = self.health_listener.map(|l| {
            tokio::spawn(accept::serve_health(
                l,
                state.clone(),
                limits,
                config.health_max_connections,
                health_stop.clone(),
            ))
        });

        shutdown.await;
        state.set_ready(false);
        set_health(health, ServingStatus::NotServing).await;
        if !config.shutdown_delay.is_zero() {
            // Kubernetes keeps routing to a terminating pod until the
            // endpoint removal has reached every node: keep accepting.
            tracing::info!(delay = ?config.shutdown_delay, "shutting down: not ready, still accepting");
            tokio::time::sleep(config.shutdown_delay).await;
        }
        tracing::info!(grace = ?config.shutdown_grace, "shutting down: draining connections");
        stop.cancel();
        let _ = main.await;
        tracker.close();
        if tokio::time::timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.len(),
                "grace period over: closing remaining connections"
            );
        }
        health_stop.cancel();
        if let Some(task) = health_task {
            let _ = task.await;
        }
        if let Some(watcher) = self.watcher {
            watcher.shutdown().await;
        }
        // A SIGHUP or ReloadTls still reloading is audited before the audit
        // task stops (its read is bounded by the read timeout).
        state.manual_in_flight.close();
        if tokio::time::timeout(MANUAL_RELOAD_WAIT, state.manual_in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!("a manual reload is still running; it may end unaudited");
        }
        drop(self.audit_stop);
        if let Some(task) = self.audit_task {
            let _ = task.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// A gateway serving in a task of its own, from [`Gateway::spawn`].
///
/// Dropping the handle starts the shutdown (as SIGTERM does) without
/// waiting for it; [`stop`](Self::stop) waits for it.
#[derive(Debug)]
pub struct GatewayHandle {
    addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    acceptor: Option<ReloadableAcceptor>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl GatewayHandle {
    /// The address of the main (TLS) port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the plaintext health port, if any.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// The reloadable acceptor (`None` with TLS disabled).
    pub fn acceptor(&self) -> Option<&ReloadableAcceptor> {
        self.acceptor.as_ref()
    }

    /// Starts the shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }

    /// Whether the serving task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Starts the shutdown and waits until the gateway has stopped.
    ///
    /// # Errors
    ///
    /// What [`Gateway::serve`] returned, or [`Error::Stopped`] when its
    /// task panicked or was cancelled.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        (&mut self.task)
            .await
            .map_err(|e| Error::Stopped(e.to_string()))?
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sets the gRPC health of the server as a whole and of the Gateway service.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in ["", "openshell.gateway.v1.Gateway"] {
        health.set_service_status(service, status).await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| Error::Bind { addr, error })
}

/// Runs a gateway with process signals: SIGHUP reloads the TLS files,
/// SIGTERM and SIGINT drain and stop. In `--dev` mode, prints how to connect.
///
/// # Errors
///
/// Any startup error of [`Gateway::bind`], or failing to install signal
/// handlers.
pub async fn run(config: Config) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(Error::Signals)?;

    let dev_dir = config.dev_state_dir.clone();
    if let Some(dir) = &dev_dir {
        crate::dev::ensure_files(dir)?;
    }
    let gateway = Gateway::bind(config).await?;
    let addr = gateway.local_addr().map_err(|error| Error::Bind {
        addr: ([0, 0, 0, 0], 0).into(),
        error,
    })?;
    tracing::info!(%addr, health = ?gateway.health_addr(), tls = gateway.acceptor().is_some(), "listening");
    if let Some(dir) = dev_dir {
        crate::dev::print_banner(&dir, addr);
    }

    if gateway.acceptor().is_some() {
        let state = gateway.state.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading TLS files");
                // The outcome is logged, and audited whatever it is.
                let _ = state.reload_now(Trigger::Signal).await;
            }
        });
    }
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    };
    gateway.serve(shutdown).await
}
