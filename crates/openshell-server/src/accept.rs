//! The accept loops: TCP, then (on the main port) a bounded TLS handshake,
//! then hyper serving HTTP/1.1 and HTTP/2 on the same connection until it
//! ends, reaches its max age, or the gateway drains.
//!
//! A failed or slow handshake, or a broken connection, costs that
//! connection only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;

use crate::config::Config;
use crate::grpc_api::PeerIdentity;
use crate::http_api;
use crate::metrics::Handshake;
use crate::multiplex;
use crate::state::State;
use crate::trust::{self, Ended};

/// Dead peers (a node gone, a NAT that forgot the flow) are found by TCP
/// keepalive: first probe after 60 s idle, then every 20 s, closed after 3
/// unanswered. The kernel does it, so it costs nothing per request, where
/// HTTP/2 keep-alive pings make hyper record every frame under a lock
/// shared by the connection and its streams.
const TCP_KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(20))
    .with_retries(3);
/// At most one log line about failed accepts per this interval.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(5);

/// Per-connection limits, from the [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// For the TLS handshake, and then for the first request (and each
    /// HTTP/1 request's headers).
    handshake_timeout: Duration,
    max_age: Duration,
    max_age_grace: Duration,
    /// What a connection gets to finish when the gateway drains.
    shutdown_grace: Duration,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            handshake_timeout: config.handshake_timeout,
            max_age: config.max_connection_age,
            max_age_grace: config.max_connection_age_grace,
            shutdown_grace: config.shutdown_grace,
        }
    }
}

/// Which port a connection came in on, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    Main,
    Health,
}

impl Port {
    pub(crate) const ALL: [Port; 2] = [Self::Main, Self::Health];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Health => "health",
        }
    }
}

/// Accepts until `stop` is cancelled; connections are tracked by `tracker`
/// and drain when `stop` fires.
pub(crate) async fn serve_main(
    listener: TcpListener,
    state: Arc<State>,
    grpc: Routes,
    limits: Limits,
    max_connections: usize,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let http = http_api::router(state.clone(), http_api::Routes::All);
    accept_loop(listener, Port::Main, max_connections, &state, &stop, |tcp, permit| {
        let (state, grpc, http, stop) = (state.clone(), grpc.clone(), http.clone(), stop.clone());
        tracker.spawn(async move {
            let _permit = permit;
            match &state.tls {
                Some(acceptor) => {
                    // The client trust the handshake is (at the latest)
                    // checked against; a change after it is caught by
                    // `admit`.
                    let before = acceptor.client_trust();
                    let tls = match tokio::time::timeout(
                        limits.handshake_timeout,
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            state.metrics.handshake(Handshake::Failure);
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            state.metrics.handshake(Handshake::Timeout);
                            tracing::debug!(timeout = ?limits.handshake_timeout, "TLS handshake timed out");
                            return;
                        }
                    };
                    state.metrics.handshake(Handshake::Success);
                    let mut peer = PeerIdentity::of(tls.get_ref().1);
                    let (registration, ca) = trust::admit(
                        acceptor,
                        &state.connections,
                        before,
                        peer.client_chain.as_ref(),
                    );
                    peer.client_ca = ca;
                    let lifetime = Lifetime {
                        cert_expires_in: peer.client_leaf().map(|leaf| {
                            leaf.remaining_at(std::time::SystemTime::now())
                        }),
                        registration,
                    };
                    // Refused already: its chain fails the trust published
                    // during its handshake, or its certificate has expired
                    // (a resumed session is not verified again). Not one
                    // request is served.
                    if let Some(reason) = lifetime.refused() {
                        state.metrics.connection_ended(reason);
                        tracing::debug!(reason = reason.label(), "ending the connection before its first request");
                        return;
                    }
                    serve_http(tls, state, Some(grpc), http, peer, lifetime, limits, stop).await;
                }
                None => {
                    let peer = PeerIdentity::default();
                    let lifetime = Lifetime::default();
                    serve_http(tcp, state, Some(grpc), http, peer, lifetime, limits, stop).await;
                }
            }
        });
    })
    .await;
}

/// The plaintext probe port: `/healthz` and `/readyz`, nothing else, with
/// the same timers as the main port and its own small connection cap.
pub(crate) async fn serve_health(
    listener: TcpListener,
    state: Arc<State>,
    limits: Limits,
    max_connections: usize,
    stop: CancellationToken,
) {
    let http = http_api::router(state.clone(), http_api::Routes::HealthOnly);
    accept_loop(
        listener,
        Port::Health,
        max_connections,
        &state,
        &stop,
        |tcp, permit| {
            let (state, http, stop) = (state.clone(), http.clone(), stop.clone());
            tokio::spawn(async move {
                let _permit = permit;
                serve_http(
                    tcp,
                    state,
                    None,
                    http,
                    PeerIdentity::default(),
                    Lifetime::default(),
                    limits,
                    stop,
                )
                .await;
            });
        },
    )
    .await;
}

async fn accept_loop(
    listener: TcpListener,
    port: Port,
    max_connections: usize,
    state: &State,
    stop: &CancellationToken,
    mut spawn: impl FnMut(TcpStream, OwnedSemaphorePermit),
) {
    let open = Arc::new(Semaphore::new(max_connections));
    state
        .metrics
        .set_connection_cap(port, open.clone(), max_connections);
    let mut errors = RateLimited::new(ACCEPT_ERROR_LOG_EVERY);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    // At the cap: close at once (the client sees a reset
                    // or EOF), rather than queue without bound.
                    state.metrics.connection_rejected(port);
                    if let Some(suppressed) = errors.ready() {
                        tracing::warn!(
                            port = port.label(),
                            %peer,
                            max_connections,
                            suppressed,
                            "connection limit reached: closing new connections"
                        );
                    }
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&TCP_KEEPALIVE);
                spawn(tcp, permit);
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of
                // spinning; the listener itself is fine.
                if let Some(suppressed) = errors.ready() {
                    tracing::warn!(port = port.label(), error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Lets one log line through per interval and counts the rest.
struct RateLimited {
    every: Duration,
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be
    /// written now.
    fn ready(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|last| now - last < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `max_age` give or take up to 10 %, so that connections opened together
/// (a client fleet restarting, a load balancer reconnecting) do not all
/// get their GOAWAY at the same instant.
fn jittered(max_age: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A fresh `RandomState` is randomly keyed: a random number without a
    // dependency for a purpose that needs no cryptographic strength.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    // Uniform in [-1, 1].
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    Duration::try_from_secs_f64(max_age.as_secs_f64() * (1.0 + 0.1 * unit)).unwrap_or(max_age)
}

/// What may end a connection besides its max age and the drain.
#[derive(Default)]
pub(crate) struct Lifetime {
    /// Time left until the client's leaf expires, when it presented one.
    cert_expires_in: Option<Duration>,
    /// Its place among the connections a change of client trust checks.
    registration: Option<trust::Registration>,
}

impl Lifetime {
    /// A lifetime as a connection's admission would make it.
    #[cfg(test)]
    pub(crate) fn for_tests(
        registration: Option<trust::Registration>,
        cert_expires_in: Option<Duration>,
    ) -> Self {
        Self {
            cert_expires_in,
            registration,
        }
    }

    /// Why the connection must end before its first request, if it must.
    pub(crate) fn refused(&self) -> Option<Ended> {
        if self
            .registration
            .as_ref()
            .is_some_and(|r| r.ended().is_cancelled())
        {
            Some(Ended::TrustChanged)
        } else if self.cert_expires_in == Some(Duration::ZERO) {
            Some(Ended::ClientCertExpired)
        } else {
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_http<IO>(
    io: IO,
    state: Arc<State>,
    grpc: Option<Routes>,
    http: axum::Router,
    peer: PeerIdentity,
    lifetime: Lifetime,
    limits: Limits,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Set by the first request: a connection that sends none (nothing at
    // all, or only part of the HTTP/2 preface) is closed when the
    // handshake timeout passes again, not kept until its max age.
    let requested = Arc::new(AtomicBool::new(false));
    let service = {
        let (requested, state) = (requested.clone(), state.clone());
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            requested.store(true, Ordering::Relaxed);
            multiplex::route(req, grpc.as_ref(), &http, &state, &peer)
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that finished its handshake must still send its request
    // headers in time (slowloris over HTTP/1); dead peers are found by TCP
    // keepalive (set at accept).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    let first_request = tokio::time::sleep(limits.handshake_timeout);
    tokio::pin!(first_request);
    let mut waiting_first = true;
    // Past its max age or its client certificate's notAfter, when a
    // change of client trust rejects its certificate, or when the gateway
    // drains, the connection is asked to finish (GOAWAY for HTTP/2,
    // `Connection: close` for HTTP/1) and given the grace period before it
    // is dropped.
    let max_age = jittered(limits.max_age);
    let (until, timed_reason) = match lifetime.cert_expires_in {
        Some(left) if left < max_age => (left, Ended::ClientCertExpired),
        _ => (max_age, Ended::MaxAge),
    };
    let age = tokio::time::sleep(until);
    tokio::pin!(age);
    let revoked = lifetime
        .registration
        .as_ref()
        .map(trust::Registration::ended);
    let revoked = async {
        match revoked {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(revoked);
    let reason = loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = &mut first_request, if waiting_first => {
                if !requested.load(Ordering::Relaxed) {
                    tracing::debug!(timeout = ?limits.handshake_timeout, "no request in time: closing");
                    return;
                }
                waiting_first = false;
            }
            () = &mut age => break timed_reason,
            () = &mut revoked => break Ended::TrustChanged,
            () = stop.cancelled() => break Ended::Shutdown,
        }
    };
    tracing::debug!(reason = reason.label(), "ending the connection");
    state.metrics.connection_ended(reason);
    conn.as_mut().graceful_shutdown();
    if reason != Ended::Shutdown {
        // Finishing after its max age (or its certificate's); a drain that
        // starts meanwhile gives it the shutdown grace from then, as every
        // other connection.
        tokio::select! {
            _ = tokio::time::timeout(limits.max_age_grace, conn.as_mut()) => return,
            () = stop.cancelled() => {}
        }
    }
    let _ = tokio::time::timeout(limits.shutdown_grace, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_jittered_within_ten_percent_and_not_the_same_for_all() {
        let age = Duration::from_secs(3600);
        let ages: Vec<Duration> = (0..200).map(|_| jittered(age)).collect();
        for a in &ages {
            assert!(
                *a >= age.mul_f64(0.9) && *a <= age.mul_f64(1.1),
                "{a:?} outside 3600 s ± 10 %"
            );
        }
        let (min, max) = (ages.iter().min().unwrap(), ages.iter().max().unwrap());
        // 200 uniform draws over ±360 s: a spread under 5 minutes would be
        // a broken source of randomness, not bad luck.
        assert!(*max - *min > Duration::from_secs(300), "{min:?}..{max:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_lets_one_line_through_per_interval_and_counts_the_rest() {
        let mut limit = RateLimited::new(Duration::from_secs(5));
        assert_eq!(limit.ready(), Some(0));
        for _ in 0..3 {
            assert_eq!(limit.ready(), None);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(limit.ready(), Some(3));
        assert_eq!(limit.ready(), None);
    }
}
