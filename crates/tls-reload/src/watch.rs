//! The watcher: file-system events on the parent directories, a trailing
//! debounce with a deadline, a periodic poll, and retries with backoff.
//!
//! Why parent directories: kubelet never writes `tls.crt`; it renames a
//! `..data` symlink next to it. A watch on the file itself sees nothing and
//! dies with the first rotation, a watch on the directory sees every step.

use std::collections::HashSet;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acceptor::Shared;
use crate::config::{TlsFiles, WatchOptions};
use crate::event::{Trigger, WatcherMode};

/// The running watcher of one [`ReloadableAcceptor`].
///
/// It stops when [`shutdown`](Self::shutdown) is awaited or when this value
/// is dropped; either way the file-system watcher and its thread go with it.
/// There is no other way to start one than
/// [`Builder::start`](crate::Builder::start), so an acceptor never has two.
///
/// [`ReloadableAcceptor`]: crate::ReloadableAcceptor
#[must_use = "dropping the Watcher stops watching"]
pub struct Watcher {
    stop: Option<oneshot::Sender<()>>,
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
    /// Stops watching and waits until the watcher task and its file-system
    /// watcher have ended. A reload in progress completes first.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
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
    pub(crate) fn new(files: &TlsFiles, options: WatchOptions) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<()>();
        let mut fs = DirWatches::new(parent_dirs(files), tx, &options);
        fs.ensure();
        Self { fs, rx, options }
    }

    pub(crate) fn spawn(mut self, shared: Arc<Shared>) -> Watcher {
        // Report the mode (and any failure to set up events) before
        // returning, so the status is right as soon as start() returns.
        self.fs.report(&shared, &self.options);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(shared, self, stop_rx));
        Watcher {
            stop: Some(stop_tx),
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

async fn run(shared: Arc<Shared>, pending: Pending, mut stop: oneshot::Receiver<()>) {
    let Pending {
        mut fs,
        mut rx,
        options,
    } = pending;
    let debounce = options.debounce.min(options.max_delay);
    let mut events_open = fs.has_watcher();
    let mut next_poll = Instant::now() + options.poll_interval;
    let mut burst: Option<Burst> = None;
    let mut retry: Option<Retry> = None;

    loop {
        let burst_due = burst.map(|b| (b.last + debounce).min(b.first + options.max_delay));
        let wake = [Some(next_poll), burst_due, retry.map(|r| r.at)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_poll);

        tokio::select! {
            biased;
            _ = &mut stop => break,
            msg = rx.recv(), if events_open => {
                if msg.is_none() {
                    // The file-system watcher is gone; polling carries on.
                    events_open = false;
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
                // recreated (or replaced) since the last look.
                fs.ensure();
                fs.report(&shared, &options);

                match shared.reload(trigger).await {
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
    drop(fs);
    shared.set_watcher_mode(WatcherMode::Off);
    tracing::debug!("TLS file watcher stopped");
}

/// The distinct parent directories of the configured files, in order.
fn parent_dirs(files: &TlsFiles) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    files
        .paths()
        .map(|p| match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .filter(|d| seen.insert(d.clone()))
        .collect()
}

/// Watches on the parent directories, each remembered with the identity
/// (device, inode) of the directory it was placed on.
struct DirWatches {
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
    fn new(dirs: Vec<PathBuf>, tx: mpsc::UnboundedSender<()>, options: &WatchOptions) -> Self {
        let mut this = Self {
            watcher: None,
            dirs: dirs.into_iter().map(|d| (d, None)).collect(),
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
    fn report(&mut self, shared: &Shared, options: &WatchOptions) {
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

    #[test]
    fn parent_dirs_are_distinct_and_relative_paths_use_the_working_directory() {
        let files = TlsFiles::new("/etc/tls/tls.crt", "/etc/tls/tls.key")
            .client_ca("/etc/ca/ca.crt", crate::ClientAuth::Required)
            .crl("crl.pem");
        assert_eq!(
            parent_dirs(&files),
            vec![
                PathBuf::from("/etc/tls"),
                PathBuf::from("/etc/ca"),
                PathBuf::from(".")
            ]
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
