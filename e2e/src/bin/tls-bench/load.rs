//! Load generation: a minimal TLS server over any accept function, and
//! concurrent client loops that count completed and failed handshakes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Serves `listener`: each connection is handshaken with `accept`, answered
/// with `ok\n` and closed (close_notify, then FIN), as
/// `tls_reload::testing::serve` does. Abort the handle to stop; it also
/// stops by itself after `limit`.
pub(crate) fn spawn_server<F>(listener: TcpListener, limit: Duration, accept: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> tokio_rustls::Accept<TcpStream> + Send + 'static,
{
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(accepted) = tokio::time::timeout_at(deadline, listener.accept()).await {
            let Ok((tcp, _)) = accepted else {
                // Out of descriptors or similar: back off, do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let handshake = accept(tcp);
            tokio::spawn(async move {
                if let Ok(mut tls) = handshake.await {
                    let _ = tls.write_all(b"ok\n").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    })
}

/// A loopback listener on an ephemeral port.
pub(crate) async fn listen() -> (TcpListener, SocketAddr) {
    let bound = TcpListener::bind("127.0.0.1:0").await;
    let listener = bound.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// What a client does after its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Read until the server closes and expect `ok\n` (the [`spawn_server`]
    /// protocol): the server's side of the handshake completed too.
    ReadOk,
    /// Send close_notify and close (servers that wait for the client, such
    /// as HTTP and gRPC).
    Close,
}

/// Which served certificates are acceptable, and from when: fingerprint to
/// the index of its publication, and the highest index published so far.
#[derive(Debug, Default)]
pub(crate) struct Published {
    index: HashMap<String, usize>,
    upto: AtomicUsize,
}

impl Published {
    /// Fingerprints in the order they will be published; the first is
    /// published already.
    pub(crate) fn new(fingerprints: impl IntoIterator<Item = String>) -> Self {
        let index = fingerprints.into_iter().enumerate().map(|(i, f)| (f, i));
        let index = index.collect();
        Self {
            index,
            ..Self::default()
        }
    }

    /// Marks publication `i` as published (call before writing it).
    pub(crate) fn publish(&self, i: usize) {
        self.upto.fetch_max(i, Ordering::SeqCst);
    }

    /// Whether `fingerprint` was published by the time the handshake that
    /// served it completed.
    pub(crate) fn allows(&self, fingerprint: &str) -> bool {
        let upto = self.upto.load(Ordering::SeqCst);
        self.index_of(fingerprint).is_some_and(|i| i <= upto)
    }

    /// The publication index of `fingerprint`.
    pub(crate) fn index_of(&self, fingerprint: &str) -> Option<usize> {
        self.index.get(fingerprint).copied()
    }
}

/// Counters shared by the loops of one run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Completed handshakes that served a certificate not (yet) published.
    pub(crate) mismatched: AtomicU64,
    /// First error seen, for the report.
    pub(crate) first_error: Mutex<Option<String>>,
    /// Publication indexes served, when fingerprints are checked.
    pub(crate) seen: Mutex<std::collections::HashSet<usize>>,
}

impl Counters {
    /// Failures, unpublished certificates served, and the first error.
    pub(crate) fn failures(&self) -> (u64, u64, Option<String>) {
        let first = self.first_error.lock().expect("first error").clone();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (load(&self.failed), load(&self.mismatched), first)
    }

    fn note(&self, error: String) {
        self.first_error
            .lock()
            .expect("first error")
            .get_or_insert(error);
    }
}

/// Running loops of one operation, counting completions and failures.
pub(crate) struct Clients {
    stop: Arc<AtomicBool>,
    pub(crate) counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

/// Client-side settings of a run.
#[derive(Clone)]
pub(crate) struct ClientSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) after: After,
    /// When set, each served fingerprint is checked against it.
    pub(crate) published: Option<Arc<Published>>,
    /// The loops end by themselves after this long whatever happens.
    pub(crate) limit: Duration,
}

impl Clients {
    /// Starts `n` loops of handshakes against `spec.addr`.
    pub(crate) fn start(spec: &ClientSpec, n: usize) -> Self {
        let spec = Arc::new(spec.clone());
        let connector = TlsConnector::from(spec.config.clone());
        Self::run(n, spec.limit, move |counters| {
            let (spec, connector) = (spec.clone(), connector.clone());
            async move {
                one(&spec, &connector, &counters)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
    }

    /// Starts `n` loops of `op`; they end by themselves after `limit`.
    pub(crate) fn run<F, Fut>(n: usize, limit: Duration, op: F) -> Self
    where
        F: Fn(Arc<Counters>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let deadline = Instant::now() + limit;
        let tasks = (0..n)
            .map(|_| {
                let (stop, counters, op) = (stop.clone(), counters.clone(), op.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match op(counters.clone()).await {
                            Ok(()) => counters.ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                counters.note(e);
                                counters.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            counters,
            tasks,
        }
    }

    /// Completed operations so far.
    pub(crate) fn ok(&self) -> u64 {
        self.counters.ok.load(Ordering::Relaxed)
    }

    /// Stops the loops and waits for them (each finishes its operation).
    pub(crate) async fn stop(self) -> Arc<Counters> {
        self.stop.store(true, Ordering::Relaxed);
        crate::util::join_or_abort(self.tasks, Duration::from_secs(15)).await;
        self.counters
    }
}

/// One connection: TCP, TLS handshake (verifying the chain and the
/// server's signature with the leaf's key), then `spec.after`; then, when
/// `spec.published` is set, the served fingerprint is checked against it.
async fn one(spec: &ClientSpec, connector: &TlsConnector, counters: &Counters) -> io::Result<()> {
    let tcp = TcpStream::connect(spec.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let mut tls = connector.connect(name, tcp).await?;
    let mut fingerprint = None;
    if spec.published.is_some() {
        let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
        let leaf = leaf.ok_or_else(|| io::Error::other("no server certificate"))?;
        fingerprint = Some(tls_reload::Fingerprint::of(leaf).to_string());
    }
    match spec.after {
        After::ReadOk => {
            let mut reply = Vec::with_capacity(8);
            tls.read_to_end(&mut reply).await?;
            if reply != b"ok\n" {
                return Err(io::Error::other(format!("unexpected reply {reply:?}")));
            }
        }
        After::Close => tls.shutdown().await?,
    }
    if let (Some(published), Some(fp)) = (&spec.published, fingerprint) {
        if !published.allows(&fp) {
            counters.mismatched.fetch_add(1, Ordering::Relaxed);
            counters.note(format!("served unpublished {fp}"));
        }
        if let Some(i) = published.index_of(&fp) {
            counters.seen.lock().expect("seen").insert(i);
        }
    }
    Ok(())
}

/// A client config trusting `ca_pem`, resumption off, with `alpn`.
pub(crate) fn client(ca_pem: &str, alpn: &[&str]) -> Arc<ClientConfig> {
    let mut c = (*tls_reload::testing::client_config(ca_pem, None)).clone();
    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(c)
}
