//! One port, two protocols: requests with a gRPC content type go to tonic,
//! everything else to the HTTP routes.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceExt as _;

use crate::grpc_api::PeerIdentity;
use crate::http_api;
use crate::state::State;

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`,
/// ...).
pub(crate) fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Routes one request of a connection on the main port.
pub(crate) async fn route(
    mut req: Request<Incoming>,
    grpc: Routes,
    state: Arc<State>,
    peer: PeerIdentity,
) -> Result<Response<Body>, Infallible> {
    if is_grpc(&req) {
        if req.version() != Version::HTTP_2 {
            return Ok(http_api::text(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2\n",
            ));
        }
        req.extensions_mut().insert(peer);
        return grpc.oneshot(req).await;
    }
    Ok(http_api::handle(&req, &state, http_api::Routes::All))
}
