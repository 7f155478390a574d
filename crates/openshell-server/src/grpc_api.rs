//! The `openshell.gateway.v1.Gateway` service.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use rustls_pki_types::CertificateDer;
use tls_reload::{CertInfo, ClientAuth, Fingerprint, LastAttempt, ReloadOutcome, Trigger};
use tonic::{Request, Response, Status};

use crate::state::State;

/// Generated protobuf types, server and client of the gateway API.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("openshell.gateway.v1");

    /// The encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("gateway_descriptor");
}

/// What the TLS layer established about the peer of a connection; attached
/// to every request on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerIdentity {
    /// The chain the client presented (leaf first), when it presented one;
    /// it was verified, since rustls refuses unverifiable ones. Shared by
    /// every request of the connection, parsed only when asked for.
    pub(crate) client_chain: Option<Arc<[CertificateDer<'static>]>>,
    /// The trusted CA the chain ends at, as attributed at the handshake.
    pub(crate) client_ca: Option<Fingerprint>,
}

impl PeerIdentity {
    /// The identity of a TLS connection's peer.
    pub(crate) fn of(conn: &rustls::ServerConnection) -> Self {
        Self {
            client_chain: conn
                .peer_certificates()
                .filter(|chain| !chain.is_empty())
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect()),
            client_ca: None,
        }
    }

    /// Whether the client presented a (verified) certificate.
    pub(crate) fn verified_client(&self) -> bool {
        self.client_chain.is_some()
    }

    /// The client's leaf, parsed; `None` when it presented none (or, which
    /// rustls would have refused, one that does not parse).
    pub(crate) fn client_leaf(&self) -> Option<CertInfo> {
        let chain = self.client_chain.as_deref()?;
        CertInfo::from_der(chain.first()?).ok()
    }

    /// What the handshake verified of the caller, as `WhoAmI` and
    /// `/v1/tls/peer` both report it.
    pub(crate) fn view(&self) -> PeerView {
        PeerView {
            client_leaf: self.client_leaf(),
            chain_length: self.client_chain.as_ref().map_or(0, |c| c.len()),
            client_ca: self.client_ca.as_ref().map(ToString::to_string),
        }
    }
}

/// A connection's peer as the APIs report it; see [`PeerIdentity::view`].
#[derive(Debug, Default)]
pub(crate) struct PeerView {
    /// The client's leaf; `None` for an unauthenticated caller.
    pub(crate) client_leaf: Option<CertInfo>,
    /// How many certificates the client presented.
    pub(crate) chain_length: usize,
    /// The fingerprint of the trusted CA the chain ends at.
    pub(crate) client_ca: Option<String>,
}

pub(crate) struct GatewayApi {
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayApi {
    async fn get_tls_status(
        &self,
        _request: Request<pb::GetTlsStatusRequest>,
    ) -> Result<Response<pb::TlsStatus>, Status> {
        let Some(tls) = &self.state.tls else {
            return Ok(Response::new(pb::TlsStatus::default()));
        };
        let s = tls.status();
        Ok(Response::new(pb::TlsStatus {
            tls_enabled: true,
            generation: s.generation,
            certificate: Some(cert(&s.cert)),
            chain_length: u32::try_from(s.chain_len).unwrap_or(u32::MAX),
            client_ca: s.client_ca.iter().map(cert).collect(),
            client_auth: s.client_auth.to_string(),
            loaded_at_unix_ms: unix_ms(s.loaded_at),
            last_reload: s.last_attempt.as_ref().map(last_reload),
            reloads_succeeded: s.reloads_succeeded,
            reloads_failed: s.reloads_failed,
            watcher_mode: s.watcher.to_string(),
            identities: s
                .identities
                .iter()
                .map(|i| pb::TlsIdentity {
                    label: i.label.clone(),
                    names: i.names.clone(),
                    certificate: Some(cert(&i.cert)),
                    chain_length: u32::try_from(i.chain_len).unwrap_or(u32::MAX),
                    loaded_at_unix_ms: unix_ms(i.loaded_at),
                    last_reload: i.last_attempt.as_ref().map(last_reload),
                    renewal_overdue: i.renewal_overdue,
                })
                .collect(),
            trusted_cas: tls
                .client_trust()
                .map(|t| {
                    t.cas()
                        .iter()
                        .map(|ca| pb::TrustedCa {
                            certificate: Some(cert(ca.cert())),
                            short_fingerprint: ca.short_fingerprint().to_owned(),
                            handshakes: ca.handshakes(),
                            last_used_unix_ms: ca.last_used().map_or(0, unix_ms),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    async fn reload_tls(
        &self,
        request: Request<pb::ReloadTlsRequest>,
    ) -> Result<Response<pb::ReloadTlsResponse>, Status> {
        let Some(tls) = &self.state.tls else {
            return Err(Status::failed_precondition(
                "TLS is disabled on this gateway",
            ));
        };
        if tls.files().client_auth() != ClientAuth::None {
            let verified = request
                .extensions()
                .get::<PeerIdentity>()
                .is_some_and(PeerIdentity::verified_client);
            if !verified {
                return Err(Status::unauthenticated(
                    "ReloadTls requires a verified client certificate",
                ));
            }
        }
        let Some(outcome) = self.state.reload_now(Trigger::Api).await else {
            return Err(Status::failed_precondition(
                "TLS is disabled on this gateway",
            ));
        };
        match outcome {
            Ok(outcome) => {
                let changed = matches!(outcome, ReloadOutcome::Reloaded(_));
                let s = tls.status();
                Ok(Response::new(pb::ReloadTlsResponse {
                    changed,
                    generation: outcome.generation(),
                    certificate: Some(cert(&s.cert)),
                }))
            }
            Err(failure) => Err(Status::failed_precondition(format!(
                "reload failed, still serving generation {}: {}",
                failure.served_generation, failure.error
            ))),
        }
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerIdentity>()
            .map(PeerIdentity::view)
            .unwrap_or_default();
        Ok(Response::new(pb::WhoAmIResponse {
            authenticated: peer.client_leaf.is_some(),
            client_certificate: peer.client_leaf.as_ref().map(cert),
            chain_length: u32::try_from(peer.chain_length).unwrap_or(u32::MAX),
            client_ca_fingerprint_sha256: peer.client_ca.unwrap_or_default(),
        }))
    }
}

fn last_reload(a: &LastAttempt) -> pb::LastReload {
    pb::LastReload {
        at_unix_ms: unix_ms(a.at),
        trigger: a.trigger.to_string(),
        success: a.error.is_none(),
        error: a.error.clone().unwrap_or_default(),
    }
}

fn cert(c: &CertInfo) -> pb::Certificate {
    pb::Certificate {
        fingerprint_sha256: c.fingerprint_sha256.to_string(),
        serial: c.serial.clone(),
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        dns_names: c.dns_names.clone(),
        ip_addresses: c.ip_addresses.iter().map(ToString::to_string).collect(),
        not_before_unix: c.not_before_unix(),
        not_after_unix: c.not_after_unix(),
    }
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
