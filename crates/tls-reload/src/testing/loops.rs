//! Connection loops racing certificate rotations.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

/// What the loops of [`RotationLoops`] saw, over all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tally {
    /// Connections that succeeded.
    pub ok: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Successful connections that saw a certificate never
    /// [published](RotationLoops::publish).
    pub unknown: u64,
}

/// Tasks that connect in a loop while a test rotates certificates, each
/// connection checked against the certificates published so far: a
/// rotation must fail no connection and never show a certificate that was
/// not published.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tls_reload::testing::{RotationLoops, SecretVolumes, client_config, handshake, serve};
/// use tls_reload::{ReloadableAcceptor, Trigger};
///
/// let volumes = SecretVolumes::new();
/// let acceptor = ReloadableAcceptor::builder(volumes.files()).build()?;
/// let (addr, _server) = serve(acceptor.clone()).await;
/// let client = client_config(volumes.server_ca.cert_pem(), None);
/// let loops = RotationLoops::start(2, &volumes.leaf.fingerprint, move || {
///     let client = client.clone();
///     async move { Ok(handshake(addr, client).await?.fingerprint) }
/// });
/// let leaf = volumes.server_ca.server();
/// loops.publish(&leaf.fingerprint); // before the files change
/// volumes.publish_leaf(&leaf);
/// acceptor.reload_now(Trigger::Manual).await?;
/// tokio::task::yield_now().await;
/// let tally = loops.stop().await;
/// assert_eq!((tally.failed, tally.unknown), (0, 0));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RotationLoops {
    stop: Arc<AtomicBool>,
    published: Arc<Mutex<HashSet<String>>>,
    tasks: Vec<JoinHandle<Tally>>,
}

impl Tally {
    /// Asserts that no connection failed, none saw a certificate never
    /// published, and at least `loops` connections succeeded (one per
    /// loop, on average).
    ///
    /// # Panics
    ///
    /// When any of those does not hold, saying which.
    pub fn assert_clean(&self, loops: usize) {
        let ok = self.ok;
        assert_eq!(self.failed, 0, "failed connections ({ok} succeeded)");
        assert_eq!(self.unknown, 0, "saw a certificate never published");
        assert!(
            ok >= loops as u64,
            "only {ok} connections for {loops} loops"
        );
    }
}

impl RotationLoops {
    /// Spawns `loops` tasks, each calling `attempt` until
    /// [`stop`](Self::stop): a connection that returns the fingerprint of
    /// the certificate it saw. `first` is the certificate published when
    /// the loops start.
    pub fn start<A, Fut>(loops: usize, first: &str, attempt: A) -> Self
    where
        A: Fn() -> Fut + Clone + Send + 'static,
        Fut: Future<Output = io::Result<String>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(Mutex::new(HashSet::from([first.to_owned()])));
        let tasks = (0..loops)
            .map(|_| {
                let (attempt, stop, published) = (attempt.clone(), stop.clone(), published.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        match attempt().await {
                            Ok(seen) => {
                                tally.ok += 1;
                                if !published.lock().unwrap().contains(&seen) {
                                    tally.unknown += 1;
                                }
                            }
                            Err(_) => tally.failed += 1,
                        }
                    }
                    tally
                })
            })
            .collect();
        Self {
            stop,
            published,
            tasks,
        }
    }

    /// Adds `fingerprint` to the certificates the loops may see: call it
    /// before the certificate's files are written.
    pub fn publish(&self, fingerprint: &str) {
        self.published
            .lock()
            .unwrap()
            .insert(fingerprint.to_owned());
    }

    /// Stops the loops and sums what they saw.
    ///
    /// # Panics
    ///
    /// If a loop panicked.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut sum = Tally::default();
        for task in self.tasks {
            let tally = task.await.expect("connection loop");
            sum.ok += tally.ok;
            sum.failed += tally.failed;
            sum.unknown += tally.unknown;
        }
        sum
    }
}
