//! The accept loops: TCP, then (on the main port) a bounded TLS handshake,
//! then hyper serving HTTP/1.1 and HTTP/2 on the same connection until it
//! ends, reaches its max age, or the gateway drains.
//!
//! A failed or slow handshake, or a broken connection, costs that
//! connection only.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;

use crate::grpc_api::PeerIdentity;
use crate::http_api;
use crate::metrics::Handshake;
use crate::multiplex;
use crate::state::State;

/// How often an idle HTTP/2 connection is pinged.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a ping may go unanswered before the connection is closed.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_age: Duration,
    pub(crate) max_age_grace: Duration,
}

/// Accepts until `stop` is cancelled; connections are tracked by `tracker`
/// and drain when `stop` fires.
pub(crate) async fn serve_main(
    listener: TcpListener,
    state: Arc<State>,
    grpc: Routes,
    limits: Limits,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    accept_loop(listener, &stop, |tcp| {
        let (state, grpc, stop) = (state.clone(), grpc.clone(), stop.clone());
        tracker.spawn(async move {
            match &state.tls {
                Some(acceptor) => {
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
                    let peer = PeerIdentity {
                        verified_client: tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty()),
                    };
                    serve_http(tls, state, grpc, peer, limits, stop).await;
                }
                None => {
                    serve_http(tcp, state, grpc, PeerIdentity::default(), limits, stop).await;
                }
            }
        });
    })
    .await;
}

/// The plaintext probe port: `/healthz` and `/readyz`, nothing else.
pub(crate) async fn serve_health(
    listener: TcpListener,
    state: Arc<State>,
    stop: CancellationToken,
) {
    accept_loop(listener, &stop, |tcp| {
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = http_api::handle(&req, &state, http_api::Routes::HealthOnly);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    })
    .await;
}

async fn accept_loop(
    listener: TcpListener,
    stop: &CancellationToken,
    mut spawn: impl FnMut(TcpStream),
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                let _ = tcp.set_nodelay(true);
                spawn(tcp);
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of
                // spinning; the listener itself is fine.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_http<IO>(
    io: IO,
    state: Arc<State>,
    grpc: Routes,
    peer: PeerIdentity,
    limits: Limits,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        multiplex::route(req, grpc.clone(), state.clone(), peer.clone())
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that finished its handshake must still send its request
    // headers in time (slowloris over HTTP/1), and a silent HTTP/2 peer is
    // detected by pings rather than only at max connection age.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    // Past its max age, or when the gateway drains, the connection is asked
    // to finish (GOAWAY for HTTP/2, `Connection: close` for HTTP/1) and
    // given the grace period before it is dropped.
    let age = tokio::time::sleep(limits.max_age);
    tokio::pin!(age);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = &mut age => tracing::debug!("connection reached its max age"),
        () = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.max_age_grace, conn).await;
}
