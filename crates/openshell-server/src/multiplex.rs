//! One port, two protocols: requests with a gRPC content type go to tonic,
//! everything else to the HTTP routes' `axum::Router`, except the probes,
//! which are answered synchronously: their response is ready when the
//! request arrives, so the future hyper spawns per request is small and
//! nothing is cloned or boxed for them.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tonic::service::Routes;
use tower::{Service as _, ServiceExt as _};

use crate::grpc_api::PeerIdentity;
use crate::http_api;
use crate::state::State;

/// The body of every response: a probe's is not boxed, the routers' are.
pub(crate) type ResponseBody = Either<Full<Bytes>, Either<axum::body::Body, tonic::body::Body>>;

type Answer = Result<Response<ResponseBody>, Infallible>;

/// What one request's future is.
pub(crate) enum RouteFuture {
    /// An answer ready at once: a probe, or gRPC over HTTP/1.
    Ready(Ready<Answer>),
    /// The HTTP router's future, boxed so that it does not make every
    /// request's future (probes included) as large as itself.
    Http(Box<axum::routing::future::RouteFuture<Infallible>>),
    /// The gRPC router's future.
    Grpc(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

impl Future for RouteFuture {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Answer> {
        match self.get_mut() {
            Self::Ready(answer) => Pin::new(answer).poll(cx),
            Self::Http(call) => Pin::new(&mut **call)
                .poll(cx)
                .map(|answer| answer.map(|resp| resp.map(|b| Either::Right(Either::Left(b))))),
            Self::Grpc(call) => call.as_mut().poll(cx),
        }
    }
}

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`,
/// ...).
pub(crate) fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Routes one request of a connection on the main port (`grpc` set) or
/// the health port (`grpc` unset: its router has the health routes only).
pub(crate) fn route(
    mut req: Request<Incoming>,
    grpc: Option<&Routes>,
    http: &axum::Router,
    state: &State,
    peer: &PeerIdentity,
) -> RouteFuture {
    let now = |resp: Response<Full<Bytes>>| RouteFuture::Ready(ready(Ok(resp.map(Either::Left))));
    if let Some(grpc) = grpc.filter(|_| is_grpc(&req)) {
        if req.version() != Version::HTTP_2 {
            return now(http_api::text(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2\n",
            ));
        }
        req.extensions_mut().insert(peer.clone());
        let call = grpc.clone().oneshot(req);
        return RouteFuture::Grpc(Box::pin(async move {
            call.await
                .map(|resp| resp.map(|b| Either::Right(Either::Right(b))))
        }));
    }
    if let Some(resp) = http_api::probe(&req, state) {
        return now(resp);
    }
    req.extensions_mut().insert(peer.clone());
    RouteFuture::Http(Box::new(http.clone().call(req)))
}
