//! The watcher: file-system events on the parent directories, a trailing
//! debounce with a deadline, a periodic poll, and retries with backoff.
//!
//! Why parent directories: kubelet never writes `tls.crt`; it renames a
//! `..data` symlink next to it. A watch on the file itself sees nothing and
//! dies with the first rotation, a watch on the directory sees every step.

use std::collections::HashSet;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::WatchOptions;
use crate::engine::{Engine, Side};
use crate::event::{Trigger, WatcherMode};

/// The running watcher of one [`ReloadableAcceptor`] or
/// [`ReloadableConnector`].
///
/// It stops when [`shutdown`](Self::shutdown) is awaited or when this value
/// is dropped; either way the file-system watcher and its thread go with it.
/// There is no other way to start one than
/// [`Builder::start`](crate::Builder::start) or
/// [`ConnectorBuilder::start`](crate::ConnectorBuilder::start), so an
/// acceptor or a connector never has two.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let volumes = tls_reload::testing::SecretVolumes::new();
/// use tls_reload::{ReloadableAcceptor, WatcherMode};
///
/// let (acceptor, watcher) = ReloadableAcceptor::builder(volumes.files()).start()?;
/// assert_ne!(acceptor.status().watcher, WatcherMode::Off);
/// // Keep `watcher` alive while serving; on shutdown:
/// watcher.shutdown().await;
/// assert_eq!(acceptor.status().watcher, WatcherMode::Off);
/// # Ok(())
/// # }
/// ```
///
/// [`ReloadableAcceptor`]: crate::ReloadableAcceptor
/// [`ReloadableConnector`]: crate::ReloadableConnector
#[must_use = "dropping the Watcher stops watching"]
pub struct Watcher {
    stop: Option<oneshot::Sender<()>>,
    /// Ends the file-system event thread (tests of its loss).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    end_events: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field(
                "running",
                &self.task.as_ref().is_some_and(|t| !t.is_finished()),
            )
            .finish()
    }
}

impl Watcher {
    /// Stops watching and waits until the watcher task has ended. A reload
    /// in progress is abandoned (the served config stays as it is), so a
    /// hung file system cannot hold a shutdown up; a read blocked on it
    /// ends on its own thread when the file system answers.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

#[cfg(feature = "testing")]
impl Watcher {
    /// Ends the file-system event watcher and its thread, as when that
    /// thread dies, to exercise the fallback to polling.
    pub fn end_event_thread(&mut self) {
        if let Some(end) = self.end_events.take() {
            let _ = end.send(());
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which then exits on its own.
        self.stop.take();
    }
}

/// Watches placed before the initial load, so that no change between the
/// load and the start of the watcher task can go unseen.
pub(crate) struct Pending {
    fs: DirWatches,
    rx: mpsc::UnboundedReceiver<()>,
    options: WatchOptions,
}

impl Pending {
    /// Watches for every file of every identity.
    pub(crate) fn new(paths: Vec<PathBuf>, options: WatchOptions) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<()>();
        let mut fs = DirWatches::new(paths, tx, &options);
        fs.ensure();
        Self { fs, rx, options }
    }

    pub(crate) fn spawn<S: Side>(mut self, shared: Arc<Engine<S>>) -> Watcher {
        // Report the mode (and any failure to set up events) before
        // returning, so the status is right as soon as start() returns.
        self.fs.report(&shared, &self.options);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (end_tx, end_rx) = oneshot::channel();
        let task = tokio::spawn(run(shared, self, stop_rx, end_rx));
        Watcher {
            stop: Some(stop_tx),
            end_events: Some(end_tx),
            task: Some(task),
        }
    }
}

/// A burst of events waiting for the directory to go quiet.
#[derive(Clone, Copy)]
struct Burst {
    first: Instant,
    last: Instant,
}

#[derive(Clone, Copy)]
struct Retry {
    at: Instant,
    backoff: Duration,
    trigger: Trigger,
}

async fn run<S: Side>(
    shared: Arc<Engine<S>>,
    pending: Pending,
    mut stop: oneshot::Receiver<()>,
    mut end_events: oneshot::Receiver<()>,
) {
    let Pending {
        fs,
        mut rx,
        options,
    } = pending;
    let debounce = options.debounce.min(options.max_delay);
    let mut events_open = fs.has_watcher();
    // Shared with the blocking thread that upkeeps the watches; the async
    // side only ever `try_lock`s it, so a thread stuck on a hung mount
    // never stalls this task.
    let fs = Arc::new(std::sync::Mutex::new(fs));
    let mut upkeep: Option<JoinHandle<()>> = None;
    let mut ending = true;
    let mut next_poll = Instant::now() + options.poll_interval;
    let mut burst: Option<Burst> = None;
    let mut retry: Option<Retry> = None;

    'watching: loop {
        let burst_due = burst.map(|b| (b.last + debounce).min(b.first + options.max_delay));
        let wake = [Some(next_poll), burst_due, retry.map(|r| r.at)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_poll);

        tokio::select! {
            biased;
            _ = &mut stop => break,
            ended = &mut end_events, if ending => {
                // A completed receiver must not be polled again.
                ending = false;
                if ended.is_ok() {
                    // Dropping the watcher ends its thread and closes `rx`,
                    // which the next branch then sees, as after a real loss.
                    if let Ok(mut fs) = fs.try_lock() {
                        fs.watcher = None;
                    }
                }
            }
            msg = rx.recv(), if events_open => {
                if msg.is_none() {
                    // The file-system watcher's thread is gone: polling
                    // carries on, and the status and subscribers say so.
                    events_open = false;
                    match fs.try_lock() {
                        Ok(mut fs) => {
                            fs.events_lost("the file-system event thread ended");
                            fs.report(&shared, &options);
                        }
                        // The upkeep thread holds it; mode is right after.
                        Err(_) => shared.set_watcher_mode(WatcherMode::Polling),
                    }
                    continue;
                }
                while rx.try_recv().is_ok() {}
                let now = Instant::now();
                burst = Some(match burst {
                    Some(b) => Burst { first: b.first, last: now },
                    None => Burst { first: now, last: now },
                });
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                let mut trigger = None;
                let mut fresh_change = false;
                if burst_due.is_some_and(|due| due <= now) {
                    burst = None;
                    trigger = Some(Trigger::Watch);
                    fresh_change = true;
                } else if let Some(r) = retry.filter(|r| r.at <= now) {
                    trigger = Some(r.trigger);
                }
                if next_poll <= now {
                    next_poll = now + options.poll_interval;
                    trigger.get_or_insert(Trigger::Poll);
                }
                let Some(trigger) = trigger else { continue };

                // Re-establish watches on directories that were deleted and
                // recreated (or replaced) since the last look. Both this and
                // the reload touch the file system, which may hang (a
                // network mount): off the async workers, and never in the
                // way of a shutdown.
                if upkeep.as_ref().is_none_or(JoinHandle::is_finished) {
                    let fs = Arc::clone(&fs);
                    upkeep = Some(tokio::task::spawn_blocking(move || {
                        if let Ok(mut fs) = fs.lock() {
                            fs.ensure();
                        }
                    }));
                }
                if let Some(task) = upkeep.as_mut() {
                    // At most the read timeout; the reload then goes ahead
                    // with the watches as they are (and its own bound).
                    tokio::select! {
                        biased;
                        _ = &mut stop => break 'watching,
                        _ = tokio::time::timeout(shared.read_timeout(), task) => {}
                    }
                }
                if let Ok(mut fs) = fs.try_lock() {
                    fs.report(&shared, &options);
                }

                let reloaded = tokio::select! {
                    biased;
                    _ = &mut stop => break 'watching,
                    reloaded = shared.reload(trigger) => reloaded,
                };
                match reloaded {
                    Ok(_) => retry = None,
                    Err(_) => {
                        let backoff = match retry {
                            Some(r) if !fresh_change => r.backoff.saturating_mul(2),
                            _ => options.retry_initial,
                        }
                        .min(options.poll_interval);
                        retry = Some(Retry { at: Instant::now() + backoff, backoff, trigger });
                    }
                }
            }
        }
    }
    // `fs` may be on a blocking thread that a hung mount holds; it is
    // dropped there when that returns.
    shared.set_watcher_mode(WatcherMode::Off);
    tracing::debug!("TLS file watcher stopped");
}

/// The distinct parent directories of the configured files, in order.
fn parent_dirs(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    paths
        .iter()
        .map(|p| parent_of(p))
        .filter(|d| seen.insert(d.clone()))
        .collect()
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Symlinks followed per configured path, as the kernel's own limit.
const MAX_HOPS: usize = 40;

/// The directories to watch: each configured file's parent, then the
/// directory of each hop of its symlink chain (`/etc/tls/tls.crt ->
/// /var/certs/tls.crt`): a change there changes what the path names, and
/// the parent's watch would not see it. Hops that stay below a directory
/// already watched are left out: kubelet's `tls.crt -> ..data/tls.crt` is
/// swapped by a rename in the volume directory itself. Blocking (reads
/// links).
fn watch_dirs(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = parent_dirs(paths);
    for path in paths {
        let mut current = path.to_path_buf();
        for _ in 0..MAX_HOPS {
            let Ok(target) = std::fs::read_link(&current) else {
                break;
            };
            let next = normalize(&parent_of(&current).join(target));
            let dir = parent_of(&next);
            if !dirs.iter().any(|d| dir.starts_with(d)) {
                dirs.push(dir);
            }
            current = next;
        }
    }
    dirs
}

/// Resolves `.` and `..` lexically (a symlink target such as
/// `../certs/tls.crt`), without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Watches on the parent directories, each remembered with the identity
/// (device, inode) of the directory it was placed on.
struct DirWatches {
    /// Every configured file; the directories to watch follow their
    /// symlinks.
    paths: Vec<PathBuf>,
    watcher: Option<RecommendedWatcher>,
    dirs: Vec<(PathBuf, Option<(u64, u64)>)>,
    /// Why events are (partly) unavailable, not yet reported.
    degraded: Option<String>,
    /// Whether some directory could not be watched for a reason other than
    /// not existing.
    failing: bool,
    /// Whether the current degradation was announced; reset once events
    /// work again, so that a later degradation is announced too.
    announced: bool,
}

impl DirWatches {
    fn new(paths: Vec<PathBuf>, tx: mpsc::UnboundedSender<()>, options: &WatchOptions) -> Self {
        let mut this = Self {
            dirs: parent_dirs(&paths).into_iter().map(|d| (d, None)).collect(),
            paths,
            watcher: None,
            degraded: None,
            failing: false,
            announced: false,
        };
        if options.poll_only {
            return this;
        }
        if options.fail_event_watcher {
            this.degraded =
                Some("file-system event watcher unavailable (simulated failure)".into());
            return this;
        }
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(event) = &res
                && is_pure_access(&event.kind)
            {
                return;
            }
            // Errors (queue overflow among them) also mean "maybe changed".
            let _ = tx.send(());
        };
        match notify::recommended_watcher(handler) {
            Ok(w) => this.watcher = Some(w),
            Err(e) => this.degraded = Some(format!("creating the file-system watcher: {e}")),
        }
        this
    }

    /// The event watcher is gone for good: report polling from now on.
    fn events_lost(&mut self, reason: &str) {
        self.watcher = None;
        self.announced = false;
        self.degraded = Some(reason.to_owned());
    }

    fn has_watcher(&self) -> bool {
        self.watcher.is_some()
    }

    fn mode(&self) -> WatcherMode {
        if self.watcher.is_some() && !self.failing {
            WatcherMode::Events
        } else {
            WatcherMode::Polling
        }
    }

    /// Publishes the mode, and announces a degradation once.
    fn report<S: Side>(&mut self, shared: &Engine<S>, options: &WatchOptions) {
        let mode = self.mode();
        shared.set_watcher_mode(mode);
        if mode == WatcherMode::Events {
            self.announced = false;
        }
        if let Some(reason) = self.degraded.take() {
            if !self.announced && !options.poll_only {
                self.announced = true;
                shared.publish_degraded(reason, options.poll_interval);
            } else {
                tracing::debug!(reason = %reason, "file-system watch still unavailable");
            }
        }
    }

    /// Places a watch on each directory that has none, or whose directory
    /// was replaced, and forgets watches on directories that are gone.
    fn ensure(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        self.failing = false;
        // Symlinks may have been retargeted since the last look.
        let wanted = watch_dirs(&self.paths);
        self.dirs.retain(|(dir, watched)| {
            let keep = wanted.contains(dir);
            if !keep && watched.is_some() {
                let _ = watcher.unwatch(dir);
            }
            keep
        });
        for dir in wanted {
            if !self.dirs.iter().any(|(d, _)| *d == dir) {
                self.dirs.push((dir, None));
            }
        }
        for (dir, watched) in &mut self.dirs {
            let current = std::fs::metadata(&*dir).ok().map(|m| (m.dev(), m.ino()));
            if current == *watched {
                continue;
            }
            if watched.is_some() {
                let _ = watcher.unwatch(dir);
                *watched = None;
            }
            if current.is_none() {
                continue;
            }
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching TLS directory");
                    *watched = current;
                }
                Err(e) => {
                    self.failing = true;
                    if self.degraded.is_none() {
                        self.degraded = Some(format!("watching {}: {e}", dir.display()));
                    }
                }
            }
        }
    }
}

/// Reads and opens change nothing, and the watcher's own reads of the files
/// would otherwise wake it. A close after writing does count.
fn is_pure_access(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if !matches!(access, AccessKind::Close(AccessMode::Write)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsFiles;

    fn paths(files: &TlsFiles) -> Vec<PathBuf> {
        files.paths().map(Path::to_path_buf).collect()
    }

    #[test]
    fn parent_dirs_are_distinct_and_relative_paths_use_the_working_directory() {
        let files = TlsFiles::new("/etc/tls/tls.crt", "/etc/tls/tls.key")
            .client_ca("/etc/ca/ca.crt", crate::ClientAuth::Required)
            .crl("crl.pem");
        assert_eq!(
            parent_dirs(&paths(&files)),
            vec![
                PathBuf::from("/etc/tls"),
                PathBuf::from("/etc/ca"),
                PathBuf::from(".")
            ]
        );
    }

    #[test]
    fn symlink_hops_into_other_directories_are_watched_but_kubelet_data_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let (conf, real) = (tmp.path().join("conf"), tmp.path().join("real"));
        let kube = tmp.path().join("kube");
        for d in [
            &conf,
            &real,
            &kube,
            &kube.join("..2026_01"),
            &real.join("sub"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        // conf/tls.crt -> ../real/sub/../tls.crt (relative, with `..`).
        std::os::unix::fs::symlink("../real/sub/../tls.crt", conf.join("tls.crt")).unwrap();
        // kubelet: kube/tls.key -> ..data/tls.key, ..data -> ..2026_01.
        std::os::unix::fs::symlink("..2026_01", kube.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", kube.join("tls.key")).unwrap();
        let files = TlsFiles::new(conf.join("tls.crt"), kube.join("tls.key"));
        assert_eq!(watch_dirs(&paths(&files)), vec![conf, kube, real]);
    }

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
        assert_eq!(
            normalize(Path::new("/d/..data/x")),
            PathBuf::from("/d/..data/x")
        );
    }

    #[test]
    fn only_reads_and_read_closes_are_ignored() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        assert!(is_pure_access(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(is_pure_access(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_pure_access(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_pure_access(&EventKind::Create(CreateKind::Any)));
        assert!(!is_pure_access(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(!is_pure_access(&EventKind::Remove(RemoveKind::Any)));
        assert!(!is_pure_access(&EventKind::Other));
    }
}
