//! The reloadable connector and its builder: the client-side face of the
//! reload engine in [`crate::engine`].

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::builder::ConnectorBuilder;
use crate::client::ClientEngine;
use crate::config::ClientFiles;
use crate::error::Error;
use crate::event::{
    LastAttempt, ReloadCount, ReloadFailure, ReloadOutcome, Subscription, Trigger, WatcherMode,
};
use crate::info::CertInfo;
use crate::watch::Watcher;

/// A TLS connector whose client certificate and trust bundle can be
/// replaced while it connects.
///
/// Cloning is cheap and every clone uses the same, current config. Each
/// [`connect`](Self::connect) takes a snapshot of the config with one
/// atomic load: handshakes never lock and never wait for a reload, and
/// established connections keep what they were made with. Every new config
/// has a fresh session store, so no session made under a client
/// certificate or a trust that changed is resumed.
///
/// Long-lived connections (HTTP/2, gRPC channels) keep the identity they
/// were established with: watch [`changes`](Self::changes) to move to new
/// connections after a rotation.
///
/// Build one with [`ReloadableConnector::builder`].
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let volumes = tls_reload::testing::SecretVolumes::new();
/// # let acceptor = tls_reload::ReloadableAcceptor::builder(volumes.files()).build()?;
/// # let (addr, _server) = tls_reload::testing::serve(acceptor).await;
/// use rustls_pki_types::ServerName;
/// use tls_reload::ReloadableConnector;
///
/// // The trust bundle, and a client certificate for mutual TLS.
/// let (connector, watcher) = ReloadableConnector::builder(volumes.client_files())
///     .alpn(["h2"])
///     .start()?;
/// let tcp = tokio::net::TcpStream::connect(addr).await?;
/// let tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
/// assert!(tls.get_ref().1.peer_certificates().is_some());
/// # drop(tls);
/// watcher.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReloadableConnector {
    engine: Arc<ClientEngine>,
}

impl fmt::Debug for ReloadableConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let served = self.engine.served();
        let leaf = served.pairs[0].identity.as_ref();
        f.debug_struct("ReloadableConnector")
            .field("files", &self.engine.side.files)
            .field("generation", &served.generation)
            .field("fingerprint", &leaf.map(|i| &i.cert.fingerprint_sha256))
            .finish_non_exhaustive()
    }
}

impl ReloadableConnector {
    /// Starts configuring a connector for `files`, with the settings
    /// listed under [`ConnectorBuilder`]'s defaults.
    pub fn builder(files: ClientFiles) -> ConnectorBuilder {
        ConnectorBuilder::new(files)
    }

    /// Performs the TLS handshake on `io` with the config in use right now,
    /// verifying the server's certificate for `server_name` (also sent as
    /// SNI when it is a DNS name).
    pub fn connect<IO>(&self, server_name: ServerName<'static>, io: IO) -> tokio_rustls::Connect<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio_rustls::TlsConnector::from(self.client_config()).connect(server_name, io)
    }

    /// The config in use right now, for clients that drive rustls
    /// themselves.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.engine.served().config.clone()
    }

    /// The config in use right now and its generation, from one load.
    #[cfg(feature = "tower")]
    pub(crate) fn snapshot(&self) -> (Arc<ClientConfig>, u64) {
        let served = self.engine.served();
        (served.config.clone(), served.generation)
    }

    /// Re-reads the files now and swaps them in if they changed and are
    /// valid, exactly as the watcher does. Reloads are serialized.
    ///
    /// # Errors
    ///
    /// Returns the failure (also delivered to subscribers, once per
    /// distinct file content) when the files cannot be loaded; the config
    /// in use is then untouched.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let volumes = tls_reload::testing::SecretVolumes::new();
    /// use tls_reload::{ReloadOutcome, ReloadableConnector, Trigger};
    ///
    /// let connector = ReloadableConnector::builder(volumes.client_files()).build()?;
    /// let renewed = volumes.client_ca.client("client");
    /// volumes.publish_client(&renewed, volumes.server_ca.cert_pem());
    /// match connector.reload_now(Trigger::Api).await? {
    ///     ReloadOutcome::ClientReloaded(r) => {
    ///         assert!(r.identity_changed && !r.trust_changed);
    ///         let current = r.current.as_ref().map(|c| c.fingerprint_sha256.to_string());
    ///         assert_eq!(current, Some(renewed.fingerprint));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// assert_eq!(connector.generation(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reload_now(&self, trigger: Trigger) -> Result<ReloadOutcome, Arc<ReloadFailure>> {
        self.engine.reload(trigger).await
    }

    /// Subscribes to every later outcome: reloads
    /// ([`ReloadEvent::ClientReloaded`]), failures, watcher degradation and
    /// an overdue renewal of the client certificate. As for the acceptor, a
    /// current degradation is replayed to a new subscriber first.
    ///
    /// [`ReloadEvent::ClientReloaded`]: crate::ReloadEvent::ClientReloaded
    pub fn subscribe(&self) -> Subscription {
        self.engine.subscribe()
    }

    /// The generation in use, updated on every published change of the
    /// identity or the trust: `changed().await` wakes a long-lived client
    /// when it should move to new connections.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let volumes = tls_reload::testing::SecretVolumes::new();
    /// use tls_reload::{ReloadableConnector, Trigger};
    ///
    /// let connector = ReloadableConnector::builder(volumes.client_files()).build()?;
    /// let mut changes = connector.changes();
    /// assert_eq!(*changes.borrow_and_update(), 1);
    /// volumes.publish_client(&volumes.client_ca.client("client"), volumes.server_ca.cert_pem());
    /// connector.reload_now(Trigger::Api).await?;
    /// changes.changed().await?; // reconnect here
    /// assert_eq!(*changes.borrow_and_update(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.engine.changes()
    }

    /// Generation of the config in use; 1 is the initial load.
    pub fn generation(&self) -> u64 {
        self.engine.served().generation
    }

    /// What is used now and how reloading has gone.
    pub fn status(&self) -> ClientStatus {
        let served = self.engine.served();
        let pair = &served.pairs[0];
        let history = self.engine.history();
        ClientStatus {
            generation: served.generation,
            identity: pair.identity.as_ref().map(|i| i.cert.clone()),
            chain_len: pair
                .identity
                .as_ref()
                .map_or(0, |i| i.certified_key.cert.len()),
            trusted: served.trust.trusted.clone(),
            loaded_at: pair.loaded_at,
            renewal_overdue: pair
                .identity
                .as_ref()
                .is_some_and(|i| SystemTime::now() >= i.cert.renewal_due()),
            last_attempt: history.last_attempt,
            reloads_succeeded: history.reloads_succeeded,
            reloads_failed: history.reloads_failed,
            watcher: history.watcher,
            by_trigger: history.by_trigger,
        }
    }

    /// The files this connector loads.
    pub fn files(&self) -> &ClientFiles {
        &self.engine.side.files
    }
}

/// A snapshot of what a [`ReloadableConnector`] uses and how reloading
/// has gone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientStatus {
    /// Generation of the config in use; 1 is the initial load.
    pub generation: u64,
    /// The client certificate presented, if any.
    pub identity: Option<CertInfo>,
    /// Number of certificates in the presented chain, leaf included (0
    /// without a client certificate).
    pub chain_len: usize,
    /// The CA certificates servers are verified against, from every trust
    /// bundle in order.
    pub trusted: Vec<CertInfo>,
    /// When the files in use were loaded.
    pub loaded_at: SystemTime,
    /// Whether the client certificate is past
    /// [`CertInfo::renewal_due`] (false without one).
    pub renewal_overdue: bool,
    /// The last attempt that swapped or failed.
    pub last_attempt: Option<LastAttempt>,
    /// Successful swaps since start (the initial load excluded).
    pub reloads_succeeded: u64,
    /// Failed attempts since start, counting each retry.
    pub reloads_failed: u64,
    /// How changes are noticed.
    pub watcher: WatcherMode,
    /// Swaps and failures by trigger, one entry per trigger in
    /// [`Trigger::ALL`] order.
    pub by_trigger: Vec<ReloadCount>,
}

/// What only the [`ConnectorBuilder`] has: what is built.
impl ConnectorBuilder {
    /// Loads the files and returns a connector without a watcher: it
    /// changes only on [`ReloadableConnector::reload_now`].
    ///
    /// # Errors
    ///
    /// Any [`Error`] of loading: the initial files must be valid. An
    /// expired client certificate is accepted here (and logged at error
    /// level) so that a later renewal can heal the client.
    pub fn build(self) -> Result<ReloadableConnector, Error> {
        Ok(ReloadableConnector {
            engine: Arc::new(ClientEngine::load_client(self.files, self.load)?),
        })
    }

    /// Loads the files and starts the one watcher of the returned
    /// connector. The watcher runs until the [`Watcher`] is shut down or
    /// dropped.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and [`Error::Settings`] when called
    /// outside a tokio runtime.
    pub fn start(self) -> Result<(ReloadableConnector, Watcher), Error> {
        let paths = self
            .files
            .paths()
            .map(std::path::Path::to_path_buf)
            .collect();
        self.start_with(paths, Self::build, |connector| connector.engine.clone())
    }
}
