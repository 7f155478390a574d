//! What a reload attempt reports: to its caller, to subscribers and in the
//! status snapshot.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::config::ClientAuth;
use crate::error::Error;
use crate::info::CertInfo;

/// What started a reload attempt.
///
/// Its [`as_str`](Self::as_str) (and `Display`) is the lower-case name other
/// crates carry in logs, metric labels and audit events.
///
/// ```
/// use tls_reload::Trigger;
///
/// let names: Vec<&str> = Trigger::ALL.iter().map(|t| t.as_str()).collect();
/// assert_eq!(names, ["startup", "watch", "poll", "signal", "api", "manual"]);
/// assert_eq!(Trigger::Watch.to_string(), "watch");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trigger {
    /// The initial load when the acceptor was built.
    Startup,
    /// A file-system event in a watched directory.
    Watch,
    /// The periodic poll.
    Poll,
    /// A signal such as SIGHUP.
    Signal,
    /// An administrative API call.
    Api,
    /// Any other caller of `reload_now`.
    Manual,
}

impl Trigger {
    /// Every trigger, in declaration order.
    pub const ALL: [Trigger; 6] = [
        Self::Startup,
        Self::Watch,
        Self::Poll,
        Self::Signal,
        Self::Api,
        Self::Manual,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Startup => 0,
            Self::Watch => 1,
            Self::Poll => 2,
            Self::Signal => 3,
            Self::Api => 4,
            Self::Manual => 5,
        }
    }

    /// The lower-case name used in logs, metrics labels and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Watch => "watch",
            Self::Poll => "poll",
            Self::Signal => "signal",
            Self::Api => "api",
            Self::Manual => "manual",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the watcher currently notices changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WatcherMode {
    /// No watcher runs; reloads happen only through `reload_now`.
    Off,
    /// File-system events, with the periodic poll as a safety net.
    Events,
    /// Periodic polling only (chosen, or because events are unavailable).
    Polling,
}

impl WatcherMode {
    /// The lower-case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Events => "events",
            Self::Polling => "polling",
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Events,
            2 => Self::Polling,
            _ => Self::Off,
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Events => 1,
            Self::Polling => 2,
        }
    }
}

impl fmt::Display for WatcherMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new config was swapped in: one identity's certificate changed (or,
/// for the default identity, its certificate or the client trust).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reloaded {
    /// What started the reload.
    pub trigger: Trigger,
    /// The identity that changed: `default`, or the first server name of an
    /// SNI identity ([`SniIdentity::label`](crate::SniIdentity::label)).
    /// Identities that changed in the same attempt share the generation.
    pub identity: String,
    /// Generation of the new config (the previous one plus one).
    pub generation: u64,
    /// The identity's leaf served before.
    pub previous: CertInfo,
    /// The identity's leaf served from now on.
    pub current: CertInfo,
    /// The client CA certificates trusted from now on.
    pub client_ca: Vec<CertInfo>,
    /// Whether the client CA, CRLs or client-auth mode changed; if so, no
    /// session from before can resume.
    pub trust_changed: bool,
    /// When the swap happened.
    pub at: SystemTime,
}

/// A new client config is in use: the client's certificate or its trust
/// bundle changed. Connections made from now on present the new identity
/// and verify servers against the new trust; no session from before
/// resumes.
///
/// A [`ReloadableConnector`](crate::ReloadableConnector) reports this
/// rather than [`Reloaded`], whose leaves are not optional: a client may
/// have no identity at all.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientReloaded {
    /// What started the reload.
    pub trigger: Trigger,
    /// Generation of the new config (the previous one plus one).
    pub generation: u64,
    /// The client certificate presented before, if any.
    pub previous: Option<CertInfo>,
    /// The client certificate presented from now on, if any.
    pub current: Option<CertInfo>,
    /// The CA certificates servers are verified against from now on.
    pub trusted: Vec<CertInfo>,
    /// Whether the client certificate changed.
    pub identity_changed: bool,
    /// Whether the trust bundle changed.
    pub trust_changed: bool,
    /// When the swap happened.
    pub at: SystemTime,
}

/// A reload attempt failed for one identity, which keeps serving its last
/// good certificate; other identities are not held up.
#[derive(Debug)]
#[non_exhaustive]
pub struct ReloadFailure {
    /// What started the attempt.
    pub trigger: Trigger,
    /// The identity whose files failed: `default`, or the first server name
    /// of an SNI identity. A failure of the attempt as a whole (a read
    /// timeout) is reported under `default`.
    pub identity: String,
    /// Why it failed.
    pub error: Error,
    /// Generation of the config that is still served.
    pub served_generation: u64,
    /// When the attempt ended.
    pub at: SystemTime,
}

impl std::fmt::Display for ReloadFailure {
    /// `TLS reload (trigger) failed, still serving generation N: <error>`,
    /// with `of identity <label>` after the trigger for an SNI identity.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS reload ({})", self.trigger)?;
        if self.identity != crate::sni::DEFAULT_IDENTITY {
            write!(f, " of identity {}", self.identity)?;
        }
        write!(
            f,
            " failed, still serving generation {}: {}",
            self.served_generation, self.error
        )
    }
}

/// So that `reload_now(..).await?` works in functions returning
/// `Box<dyn Error>` (through `Arc<ReloadFailure>`'s own impl) and the cause
/// chain reaches the [`Error`].
impl std::error::Error for ReloadFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The watcher could not use file-system events and polls instead.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Degraded {
    /// Why events are unavailable, with the path concerned.
    pub reason: String,
    /// The poll interval now relied on.
    pub poll_interval: std::time::Duration,
    /// When it happened.
    pub at: SystemTime,
}

/// A served certificate is past [`CertInfo::renewal_due`] and no rotation
/// has replaced it: the renewal that should have come did not. A renewal
/// that silently stopped is how certificates expire in production, so this
/// is reported once per certificate, well before it expires.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RenewalOverdue {
    /// The identity serving it: `default` or an SNI identity's label.
    pub identity: String,
    /// The certificate.
    pub cert: CertInfo,
    /// When its renewal became overdue.
    pub due: SystemTime,
    /// When this was noticed.
    pub at: SystemTime,
}

/// One outcome, as delivered to subscribers.
///
/// Unchanged attempts (`touch`, an unrelated file, a kubelet resync) are not
/// events: nothing happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReloadEvent {
    /// A new config is served.
    Reloaded(Arc<Reloaded>),
    /// An attempt failed. Repeated failures on the same file content are
    /// reported once.
    Failed(Arc<ReloadFailure>),
    /// The watcher fell back to polling. Reported once per watcher.
    Degraded(Arc<Degraded>),
    /// A served certificate was not renewed in time. Checked after every
    /// reload attempt (the watcher's poll tick included); reported once per
    /// certificate.
    RenewalOverdue(Arc<RenewalOverdue>),
    /// A new client config is in use (from a
    /// [`ReloadableConnector`](crate::ReloadableConnector) only).
    ClientReloaded(Arc<ClientReloaded>),
}

/// What a successful `reload_now` did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// A new config is served.
    Reloaded(Arc<Reloaded>),
    /// The files of every identity are byte-for-byte what is served:
    /// nothing was swapped.
    Unchanged {
        /// Generation still served.
        generation: u64,
    },
    /// A new client config is in use (from a
    /// [`ReloadableConnector`](crate::ReloadableConnector) only).
    ClientReloaded(Arc<ClientReloaded>),
}

impl ReloadOutcome {
    /// The generation served after this outcome.
    pub fn generation(&self) -> u64 {
        match self {
            Self::Reloaded(r) => r.generation,
            Self::Unchanged { generation } => *generation,
            Self::ClientReloaded(r) => r.generation,
        }
    }

    /// When the swap happened, if one did.
    pub(crate) fn at(&self) -> Option<SystemTime> {
        match self {
            Self::Reloaded(r) => Some(r.at),
            Self::ClientReloaded(r) => Some(r.at),
            Self::Unchanged { .. } => None,
        }
    }

    /// The event announcing this outcome, if it changed something.
    pub(crate) fn event(&self) -> Option<ReloadEvent> {
        match self {
            Self::Reloaded(r) => Some(ReloadEvent::Reloaded(r.clone())),
            Self::ClientReloaded(r) => Some(ReloadEvent::ClientReloaded(r.clone())),
            Self::Unchanged { .. } => None,
        }
    }
}

/// A stream of [`ReloadEvent`]s, from [`ReloadableAcceptor::subscribe`]
/// or [`ReloadableConnector::subscribe`].
///
/// Every event is delivered, in order, however slowly it is read; drop the
/// subscription to stop receiving.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let volumes = tls_reload::testing::SecretVolumes::new();
/// use tls_reload::{ReloadEvent, ReloadableAcceptor, Trigger};
///
/// let acceptor = ReloadableAcceptor::builder(volumes.files()).build()?;
/// let mut events = acceptor.subscribe();
/// volumes.publish("not a certificate", "not a key");
/// assert!(acceptor.reload_now(Trigger::Signal).await.is_err());
/// match events.recv().await {
///     Some(ReloadEvent::Failed(f)) => assert!(f.error.to_string().contains("tls.crt")),
///     other => panic!("{other:?}"),
/// }
/// assert!(events.try_recv().is_none());
/// # Ok(())
/// # }
/// ```
///
/// [`ReloadableAcceptor::subscribe`]: crate::ReloadableAcceptor::subscribe
/// [`ReloadableConnector::subscribe`]: crate::ReloadableConnector::subscribe
#[derive(Debug)]
pub struct Subscription {
    pub(crate) rx: mpsc::UnboundedReceiver<ReloadEvent>,
}

impl Subscription {
    /// Waits for the next event. `None` once the acceptor (or connector)
    /// and its watcher are gone.
    pub async fn recv(&mut self) -> Option<ReloadEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<ReloadEvent> {
        self.rx.try_recv().ok()
    }
}

/// The result of the most recent reload attempt that changed something or
/// failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastAttempt {
    /// When it ended.
    pub at: SystemTime,
    /// What started it.
    pub trigger: Trigger,
    /// `None` on success, the error text on failure.
    pub error: Option<String>,
}

/// A snapshot of what is served and how reloading has gone.
///
/// The top-level certificate fields describe the default identity; every
/// identity, the default first, is listed in
/// [`identities`](Self::identities).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsStatus {
    /// Generation of the served config; 1 is the initial load.
    pub generation: u64,
    /// The default identity's served leaf.
    pub cert: CertInfo,
    /// Number of certificates in the default identity's served chain, leaf
    /// included.
    pub chain_len: usize,
    /// The trusted client CA certificates.
    pub client_ca: Vec<CertInfo>,
    /// The client authentication mode.
    pub client_auth: ClientAuth,
    /// When the default identity's served pair (and client trust) was
    /// loaded.
    pub loaded_at: SystemTime,
    /// The last attempt that swapped or failed, of any identity.
    pub last_attempt: Option<LastAttempt>,
    /// Successful swaps since start (the initial load excluded), one per
    /// identity swapped.
    pub reloads_succeeded: u64,
    /// Failed attempts since start, counting each retry, one per identity
    /// that failed.
    pub reloads_failed: u64,
    /// How changes are noticed.
    pub watcher: WatcherMode,
    /// Swaps and failures by trigger (unchanged attempts are not counted),
    /// one entry per trigger in [`Trigger::ALL`] order.
    pub by_trigger: Vec<ReloadCount>,
    /// Every identity, the default first, then the SNI identities in the
    /// order they were configured.
    pub identities: Vec<IdentityStatus>,
}

/// What one identity serves and how its last attempt went.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IdentityStatus {
    /// `default`, or the SNI identity's first server name.
    pub label: String,
    /// The server names it is served for, lower case (none for the default
    /// identity, which is served when no name matches).
    pub names: Vec<String>,
    /// The served leaf.
    pub cert: CertInfo,
    /// Number of certificates in the served chain, leaf included.
    pub chain_len: usize,
    /// When the served pair was loaded.
    pub loaded_at: SystemTime,
    /// This identity's last attempt that swapped or failed.
    pub last_attempt: Option<LastAttempt>,
    /// Whether the served leaf is past [`CertInfo::renewal_due`].
    pub renewal_overdue: bool,
}

/// Reload attempts that swapped or failed, for one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadCount {
    /// What started the attempts.
    pub trigger: Trigger,
    /// Attempts that swapped in a new config.
    pub succeeded: u64,
    /// Attempts that failed.
    pub failed: u64,
}
