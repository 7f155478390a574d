//! One port, two protocols: requests with a gRPC content type go to tonic,
//! everything else to the HTTP routes.
//!
//! The HTTP routes are answered synchronously: their response is ready
//! when the request arrives, so the future hyper spawns per request is
//! small and nothing is cloned or boxed for them. Only gRPC requests take
//! the router's (boxed) future.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tonic::service::Routes;
use tower::ServiceExt as _;

use crate::grpc_api::PeerIdentity;
use crate::http_api;
use crate::state::State;

/// The body of every response on the main port.
pub(crate) type ResponseBody = Either<Full<Bytes>, tonic::body::Body>;

type Answer = Result<Response<ResponseBody>, Infallible>;

/// What one request's future is: ready for HTTP, the router's for gRPC.
pub(crate) enum RouteFuture {
    /// The synchronous answer of an HTTP route.
    Ready(Ready<Answer>),
    /// The gRPC router's future.
    Grpc(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

impl Future for RouteFuture {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Answer> {
        match self.get_mut() {
            Self::Ready(answer) => Pin::new(answer).poll(cx),
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
/// the health port (`grpc` unset: health routes only).
pub(crate) fn route(
    mut req: Request<Incoming>,
    grpc: Option<&Routes>,
    state: &State,
    peer: &PeerIdentity,
) -> RouteFuture {
    let http = |resp: Response<Full<Bytes>>| RouteFuture::Ready(ready(Ok(resp.map(Either::Left))));
    let Some(grpc) = grpc else {
        return http(http_api::handle(&req, state, http_api::Routes::HealthOnly));
    };
    if is_grpc(&req) {
        if req.version() != Version::HTTP_2 {
            return http(http_api::text(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2\n",
            ));
        }
        req.extensions_mut().insert(peer.clone());
        let call = grpc.clone().oneshot(req);
        return RouteFuture::Grpc(Box::pin(async move {
            call.await.map(|resp| resp.map(Either::Right))
        }));
    }
    http(http_api::handle(&req, state, http_api::Routes::All))
}
