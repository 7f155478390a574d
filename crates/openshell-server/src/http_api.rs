//! The HTTP routes of the TLS port, as an `axum::Router`: health,
//! readiness, metrics and TLS status. The plaintext health port serves the
//! first two only. A known path with another method than GET or HEAD gets
//! 405 (with `Allow`), any other path 404.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Extension;
use axum::Router;
use axum::extract::State as Shared;
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;
use tls_reload::{CertInfo, LastAttempt};

use crate::grpc_api::PeerIdentity;
use crate::state::State;

/// Which routes a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routes {
    /// Everything: the TLS port.
    All,
    /// `/healthz` and `/readyz` only: the plaintext probe port.
    HealthOnly,
}

/// The router of one port.
pub(crate) fn router(state: Arc<State>, routes: Routes) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| std::future::ready(healthz())))
        .route("/readyz", get(readyz));
    if routes == Routes::All {
        router = router
            .route("/metrics", get(metrics))
            .route("/v1/tls", get(tls))
            .route("/v1/tls/peer", get(peer));
    }
    router
        .fallback(|| std::future::ready(text(StatusCode::NOT_FOUND, "not found\n")))
        .with_state(state)
}

/// The answer to a probe (`GET` or `HEAD` of `/healthz` or `/readyz`),
/// without the router: probes are the hot path (kubelet, load balancers,
/// benchmarks), and answering them here costs no boxing and no shared
/// reference count per request. Anything else is `None`, for the router,
/// which serves the same two routes (and their 405s) through the same
/// functions.
pub(crate) fn probe<B>(req: &Request<B>, state: &State) -> Option<Response<Full<Bytes>>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    match req.uri().path() {
        "/healthz" => Some(healthz()),
        "/readyz" => Some(readiness(state)),
        _ => None,
    }
}

fn healthz() -> Response<Full<Bytes>> {
    text(StatusCode::OK, "ok\n")
}

fn readiness(state: &State) -> Response<Full<Bytes>> {
    if state.is_ready() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn readyz(Shared(state): Shared<Arc<State>>) -> Response<Full<Bytes>> {
    readiness(&state)
}

async fn metrics(Shared(state): Shared<Arc<State>>) -> Response<Full<Bytes>> {
    let status = state.tls.as_ref().map(|t| t.status());
    let trust = state.tls.as_ref().and_then(|t| t.client_trust());
    let page = state.metrics.render(
        status.as_ref(),
        trust.as_deref(),
        state.audit_sink.failed_writes(),
    );
    respond(StatusCode::OK, crate::metrics::CONTENT_TYPE, page)
}

async fn tls(Shared(state): Shared<Arc<State>>) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        "application/json",
        tls_json(&state).to_string() + "\n",
    )
}

/// `/v1/tls/peer`: what the handshake of this connection verified of the
/// caller (as the gRPC `WhoAmI`).
async fn peer(Extension(peer): Extension<PeerIdentity>) -> Response<Full<Bytes>> {
    let peer = peer.view();
    let body = json!({
        "authenticated": peer.client_leaf.is_some(),
        "client_certificate": peer.client_leaf.as_ref().map(cert_json),
        "chain_length": peer.chain_length,
        "client_ca_fingerprint_sha256": peer.client_ca,
    });
    respond(StatusCode::OK, "application/json", body.to_string() + "\n")
}

/// The body of `/v1/tls`.
fn tls_json(state: &State) -> serde_json::Value {
    let Some(tls) = &state.tls else {
        return json!({ "tls_enabled": false });
    };
    let s = tls.status();
    let ms = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    json!({
        "tls_enabled": true,
        "generation": s.generation,
        "certificate": cert_json(&s.cert),
        "chain_length": s.chain_len,
        "client_auth": s.client_auth.to_string(),
        "client_ca": s.client_ca.iter().map(cert_json).collect::<Vec<_>>(),
        "trusted_cas": tls.client_trust().map(|t| t.cas().iter().map(|ca| json!({
            "certificate": cert_json(ca.cert()),
            "short_fingerprint": ca.short_fingerprint(),
            "handshakes": ca.handshakes(),
            "last_used": ca.last_used().map(tls_reload::format_rfc3339),
            "last_used_unix_ms": ca.last_used().map(ms),
        })).collect::<Vec<_>>()).unwrap_or_default(),
        "loaded_at": tls_reload::format_rfc3339(s.loaded_at),
        "loaded_at_unix_ms": ms(s.loaded_at),
        "last_reload": s.last_attempt.as_ref().map(last_reload_json),
        "reloads_succeeded": s.reloads_succeeded,
        "reloads_failed": s.reloads_failed,
        "watcher_mode": s.watcher.as_str(),
        "files": {
            "cert": tls.files().cert_path(),
            "key": tls.files().key_path(),
            "client_ca": tls.files().client_ca_path(),
            "crls": tls.files().crl_paths(),
        },
        "identities": s.identities.iter().map(|i| json!({
            "label": i.label,
            "names": i.names,
            "certificate": cert_json(&i.cert),
            "chain_length": i.chain_len,
            "loaded_at": tls_reload::format_rfc3339(i.loaded_at),
            "last_reload": i.last_attempt.as_ref().map(last_reload_json),
            "renewal_overdue": i.renewal_overdue,
            "renewal_due": tls_reload::format_rfc3339(i.cert.renewal_due()),
            "files": state.identity_files(&i.label).map(|f| json!({
                "cert": f.cert_path(),
                "key": f.key_path(),
            })),
        })).collect::<Vec<_>>(),
    })
}

fn last_reload_json(a: &LastAttempt) -> serde_json::Value {
    json!({
        "at": tls_reload::format_rfc3339(a.at),
        "trigger": a.trigger.as_str(),
        "success": a.error.is_none(),
        "error": a.error,
    })
}

fn cert_json(c: &CertInfo) -> serde_json::Value {
    json!({
        "fingerprint_sha256": c.fingerprint_sha256.to_string(),
        "serial": c.serial,
        "subject": c.subject,
        "issuer": c.issuer,
        "dns_names": c.dns_names,
        "ip_addresses": c.ip_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "not_before": tls_reload::format_rfc3339(c.not_before),
        "not_after": tls_reload::format_rfc3339(c.not_after),
    })
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    // Static bodies are not copied: `/healthz` is on the probe path.
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
