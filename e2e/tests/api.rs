//! The gateway's APIs over its TLS port: gRPC (health, reflection, the
//! gateway API with and without client certificates) and the HTTP routes
//! over both HTTP versions. In process, on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use openshell_e2e::tls::{self, Http};
use openshell_server::pb::gateway_client::GatewayClient;
use openshell_server::pb::{GetTlsStatusRequest, ReloadTlsRequest, TlsStatus, WhoAmIRequest};
use openshell_server::{Config, OcsfTarget, TlsMode};
use rustls::ClientConfig;
use serde_json::Value;
use tls_reload::testing::{
    AtomicWriter, Leaf, LeafOptions, SecretVolumes, TestCa, eventually, served_for_name,
};
use tls_reload::{ClientAuth, SniIdentity, TlsFiles, Trigger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A client of the gateway API over TLS as `client`.
async fn gateway(addr: SocketAddr, client: &Arc<ClientConfig>) -> GatewayClient<Channel> {
    GatewayClient::new(grpc(addr, client).await)
}

/// `GetTlsStatus`, which must succeed.
async fn status(client: &mut GatewayClient<Channel>) -> TlsStatus {
    let reply = client.get_tls_status(GetTlsStatusRequest {}).await;
    reply.unwrap().into_inner()
}

/// Series name with labels (as `name{k="v",...}`, labels sorted) to value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("unexpected metric type {other:?}"),
        };
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        out.insert(key, value);
    }
    out
}

/// `GET /metrics` over HTTP/2, parsed.
async fn scrape(addr: SocketAddr, client: &Arc<ClientConfig>) -> HashMap<String, f64> {
    parse_metrics(&get_with(addr, client, Http::Two, "/metrics").await.body)
}

/// The OCSF events in the audit file at `path`.
fn audit_events(path: &std::path::Path) -> Vec<Value> {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_serving_over_tls() {
    let pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.files())).await;
    let mut health = HealthClient::new(grpc(gw.addr(), &pki.client_as(None)).await);
    for service in ["", "openshell.gateway.v1.Gateway"] {
        let service = service.to_owned();
        let resp = health.check(HealthCheckRequest { service }).await;
        let resp = resp.unwrap().into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "{resp:?}");
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.files())).await;
    let channel = grpc(gw.addr(), &pki.client_as(None)).await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "openshell.gateway.v1.Gateway",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tls_status_follows_a_kubelet_rotation() {
    let mut pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.files())).await;
    let anonymous = pki.client_as(None);
    let mut client = gateway(gw.addr(), &anonymous).await;

    let before = status(&mut client).await;
    assert!(before.tls_enabled);
    assert_eq!(before.generation, 1);
    let cert = before.certificate.as_ref().unwrap();
    assert_eq!(cert.fingerprint_sha256, pki.leaf.fingerprint);
    assert_eq!(before.watcher_mode, "events");
    assert_eq!(before.client_auth, "none");

    let new = pki.rotate();
    let after = eventually(Duration::from_secs(10), "a reload in GetTlsStatus", || {
        let mut client = client.clone();
        async move {
            let s = status(&mut client).await;
            if s.generation > 1 {
                Ok(s)
            } else {
                Err(s.generation)
            }
        }
    })
    .await;
    let cert = after.certificate.unwrap();
    assert_eq!(cert.fingerprint_sha256, new.fingerprint);
    assert_eq!(cert.dns_names, vec!["localhost".to_owned()]);
    let last = after.last_reload.unwrap();
    assert!(last.success);
    assert_eq!(last.trigger, "watch");
    assert_eq!(after.reloads_succeeded, 1);
    // The same, long-lived channel kept working across the rotation.
    assert_eq!(served(gw.addr(), &anonymous).await, new.fingerprint);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_auth_required_only_clients_of_the_ca_connect_and_may_reload() {
    let mut pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.mtls_files(ClientAuth::Required))).await;

    // No certificate, or one of another CA: the connection itself is
    // refused (at the handshake or at the first call).
    let stranger = TestCa::new("stranger").client("mallory");
    for (who, identity) in [("no certificate", None), ("another CA", Some(&stranger))] {
        let config = pki.client_as(identity);
        let refused = match tls::grpc_channel(gw.addr(), Some(&config), EXCHANGE).await {
            Err(_) => true,
            Ok(channel) => GatewayClient::new(channel)
                .get_tls_status(GetTlsStatusRequest {})
                .await
                .is_err(),
        };
        assert!(refused, "a client with {who} must not get through");
    }

    let mut client = gateway(gw.addr(), &pki.client_as(Some(&pki.client))).await;
    let unchanged = client.reload_tls(ReloadTlsRequest {}).await;
    let unchanged = unchanged.unwrap().into_inner();
    assert!(!unchanged.changed);
    assert_eq!(unchanged.generation, 1);

    // Rotate with the watcher's debounce still pending: ReloadTls gets
    // there first or finds it done; either way the new cert is served.
    let new = pki.rotate();
    let resp = client.reload_tls(ReloadTlsRequest {}).await;
    let resp = resp.unwrap().into_inner();
    let cert = resp.certificate.unwrap();
    assert_eq!(cert.fingerprint_sha256, new.fingerprint);
    assert_eq!(resp.generation, 2);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_optional_client_auth_reload_tls_refuses_anonymous_callers() {
    let pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.mtls_files(ClientAuth::Optional))).await;
    let mut client = gateway(gw.addr(), &pki.client_as(None)).await;
    // Reading the status is open; reloading is not.
    status(&mut client).await;
    let err = client.reload_tls(ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    let mut alice = gateway(gw.addr(), &pki.client_as(Some(&pki.client))).await;
    alice.reload_tls(ReloadTlsRequest {}).await.unwrap();
    gw.stop().await.unwrap();
}

/// `GET /v1/tls/peer` as `client`, parsed.
async fn peer_json(addr: SocketAddr, client: &Arc<ClientConfig>) -> Value {
    serde_json::from_str(&get_ok(addr, client, "/v1/tls/peer").await.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_auth_required_who_am_i_and_tls_peer_name_the_verified_client_and_its_ca() {
    let pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.mtls_files(ClientAuth::Required))).await;
    let client = pki.client_as(Some(&pki.client));
    let ca = tls_reload::Fingerprint::of(pki.client_ca.cert_der()).to_string();

    let me = gateway(gw.addr(), &client)
        .await
        .who_am_i(WhoAmIRequest {})
        .await;
    let me = me.unwrap().into_inner();
    assert!(me.authenticated);
    let leaf = me.client_certificate.unwrap();
    assert_eq!(leaf.fingerprint_sha256, pki.client.fingerprint);
    assert_eq!(leaf.subject, "CN=client");
    assert_eq!(me.chain_length, 1);
    assert_eq!(me.client_ca_fingerprint_sha256, ca);

    let peer = peer_json(gw.addr(), &client).await;
    assert_eq!(peer["authenticated"], true);
    assert_eq!(
        peer["client_certificate"]["fingerprint_sha256"],
        pki.client.fingerprint.as_str()
    );
    assert_eq!(peer["chain_length"], 1);
    assert_eq!(peer["client_ca_fingerprint_sha256"], ca.as_str());

    // GetTlsStatus lists the CA with the handshakes attributed to it: the
    // gRPC channel's, /v1/tls/peer's and this one's.
    let s = status(&mut gateway(gw.addr(), &client).await).await;
    let [trusted] = s.trusted_cas.as_slice() else {
        panic!("one trusted CA expected: {:?}", s.trusted_cas);
    };
    assert_eq!(trusted.certificate.as_ref().unwrap().fingerprint_sha256, ca);
    assert_eq!(trusted.short_fingerprint, ca[..23]);
    assert_eq!(trusted.handshakes, 3);
    let age = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - trusted.last_used_unix_ms;
    assert!((0..60_000).contains(&age), "last used {age} ms ago");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_optional_client_auth_a_client_without_a_certificate_is_unauthenticated() {
    let pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.mtls_files(ClientAuth::Optional))).await;
    let anonymous = pki.client_as(None);

    let me = gateway(gw.addr(), &anonymous)
        .await
        .who_am_i(WhoAmIRequest {})
        .await;
    let me = me.unwrap().into_inner();
    assert!(!me.authenticated);
    assert_eq!(me.client_certificate, None);
    assert_eq!(me.chain_length, 0);
    assert_eq!(me.client_ca_fingerprint_sha256, "");

    let peer = peer_json(gw.addr(), &anonymous).await;
    assert_eq!(peer["authenticated"], false);
    assert_eq!(peer["client_certificate"], Value::Null);
    assert_eq!(peer["chain_length"], 0);
    assert_eq!(peer["client_ca_fingerprint_sha256"], Value::Null);

    // The same gateway names a client that does present a certificate.
    let peer = peer_json(gw.addr(), &pki.client_as(Some(&pki.client))).await;
    assert_eq!(peer["authenticated"], true);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_answer_over_http1_and_http2() {
    let pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.files())).await;
    let client = pki.client_as(None);
    let content_type = |reply: &tls::Reply| {
        let ct = reply.headers.get(http::header::CONTENT_TYPE);
        ct.map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    for version in [Http::One, Http::Two] {
        let reply = get_with(gw.addr(), &client, version, "/healthz").await;
        let answer = (reply.status, reply.body.as_str());
        assert_eq!(answer, (200, "ok\n"), "{version:?}");
        let reply = get_with(gw.addr(), &client, version, "/readyz").await;
        assert_eq!(reply.status, 200);
        let reply = get_with(gw.addr(), &client, version, "/v1/tls").await;
        assert_eq!(reply.status, 200);
        assert_eq!(content_type(&reply), "application/json");
        let json: Value = serde_json::from_str(&reply.body).unwrap();
        let fingerprint = &json["certificate"]["fingerprint_sha256"];
        assert_eq!(fingerprint, pki.leaf.fingerprint.as_str());
        assert_eq!(json["generation"], 1);
        let cert = pki.server.path("tls.crt");
        assert_eq!(json["files"]["cert"], cert.to_str().unwrap());
        let reply = get_with(gw.addr(), &client, version, "/metrics").await;
        assert_eq!(reply.status, 200);
        let ct = content_type(&reply);
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let metrics = parse_metrics(&reply.body);
        assert_eq!(metrics["openshell_tls_config_generation"], 1.0);
        let reply = get_with(gw.addr(), &client, version, "/nope").await;
        assert_eq!(reply.status, 404);
        let post = http::Request::post("https://localhost/healthz").body(Default::default());
        let reply = tls::send(
            gw.addr(),
            Some(client.clone()),
            version,
            post.unwrap(),
            EXCHANGE,
        );
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, 405, "{version:?}");
        let allow = reply.headers[http::header::ALLOW].to_str().unwrap();
        assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_on_reload_success_and_failure_and_the_old_cert_stays() {
    let pki = SecretVolumes::new();
    let mut config = in_process(pki.files());
    let (files, sni, reload) = (pki.files(), Vec::new(), None);
    config.tls = TlsMode::Files { files, sni, reload };
    let gw = spawn(config).await;
    let acceptor = gw.acceptor().cloned().unwrap();
    let client = pki.client_as(None);
    let not_after = r#"openshell_tls_cert_not_after_seconds{identity="default"}"#;
    let api_success = r#"openshell_tls_reload_total{result="success",trigger="api"}"#;

    let m0 = scrape(gw.addr(), &client).await;
    assert_eq!(m0[api_success], 0.0);
    assert_eq!(m0[r#"openshell_tls_watcher_mode{mode="off"}"#], 1.0);
    assert!(m0[r#"openshell_tls_handshakes_total{result="success"}"#] >= 1.0);
    let cert = acceptor.status().cert;
    assert_eq!(m0[not_after], cert.not_after_unix() as f64);

    let new = pki.server_ca.server();
    pki.publish_leaf(&new);
    acceptor.reload_now(Trigger::Api).await.unwrap();
    let m1 = scrape(gw.addr(), &client).await;
    assert_eq!(m1[api_success], 1.0);
    assert_eq!(m1["openshell_tls_config_generation"], 2.0);
    // The gauges describe the new leaf (two leaves made in the same second
    // share their notAfter, so compare with the served one, not the old).
    let cert = acceptor.status().cert;
    assert_eq!(cert.fingerprint_sha256, new.fingerprint);
    assert_eq!(m1[not_after], cert.not_after_unix() as f64);
    let not_before = r#"openshell_tls_cert_not_before_seconds{identity="default"}"#;
    assert_eq!(m1[not_before], cert.not_before_unix() as f64);
    let last_success = "openshell_tls_last_reload_success_timestamp_seconds";
    assert!(m1[last_success] >= m0[last_success]);

    pki.publish(&new.cert_pem, "garbage");
    acceptor.reload_now(Trigger::Signal).await.unwrap_err();
    let m2 = scrape(gw.addr(), &client).await;
    let signal_failure = r#"openshell_tls_reload_total{result="failure",trigger="signal"}"#;
    assert_eq!(m2[signal_failure], 1.0);
    assert_eq!(m2["openshell_tls_config_generation"], 2.0);
    let served = served(gw.addr(), &client).await;
    assert_eq!(
        served, new.fingerprint,
        "the last good cert is still served"
    );
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http1_is_refused_with_a_clear_status() {
    let pki = SecretVolumes::new();
    let gw = spawn(in_process(pki.files())).await;
    // A hand-made HTTP/1.1 request with a gRPC content type.
    let mut tls = tls_stream(gw.addr(), &pki.client_as(None), Http::One).await;
    tls.write_all(
        b"POST /openshell.gateway.v1.Gateway/GetTlsStatus HTTP/1.1\r\nhost: localhost\r\n\
          content-type: application/grpc\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut resp = String::new();
    tls.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 505"), "{resp}");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_their_max_age_are_closed_so_clients_rehandshake() {
    let pki = SecretVolumes::new();
    let mut config = in_process(pki.files());
    config.max_connection_age = Duration::from_millis(300);
    config.max_connection_age_grace = Duration::from_millis(200);
    let gw = spawn(config).await;

    let client = Some(pki.client_as(None));
    let mut conn = tls::Connection::open(gw.addr(), client, Http::Two)
        .await
        .unwrap();
    let healthz = || tls::get_request("/healthz").unwrap();
    assert_eq!(conn.request(healthz()).await.unwrap().status, 200);
    // The server sends GOAWAY at 300 ms and closes; the connection ends.
    let closed = conn.closed(Duration::from_secs(5)).await;
    let open = matches!(&closed, Err(e) if e.kind() == std::io::ErrorKind::TimedOut);
    assert!(!open, "connection not closed after its max age");
    assert!(conn.request(healthz()).await.is_err());
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_mode_reports_tls_disabled_and_refuses_reload() {
    let unused = TlsFiles::new("unused", "unused");
    let mut config = Config::with_tls("127.0.0.1:0".parse().unwrap(), unused);
    config.tls = TlsMode::Disabled;
    let gw = spawn(config).await;
    let channel = tls::grpc_channel(gw.addr(), None, EXCHANGE).await.unwrap();
    let mut client = GatewayClient::new(channel);
    assert!(!status(&mut client).await.tls_enabled);
    let err = client.reload_tls(ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_its_request_headers_is_cut_off() {
    let pki = SecretVolumes::new();
    let client = pki.client_as(None);
    let mut config = in_process(pki.files());
    config.handshake_timeout = Duration::from_millis(500);
    let gw = spawn(config).await;

    let mut tls = tls_stream(gw.addr(), &client, Http::One).await;
    // Half a request line, then nothing.
    tls.write_all(b"GET /healthz HT").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    // Well-behaved clients are served meanwhile and after.
    get_ok(gw.addr(), &client, "/healthz").await;
    gw.stop().await.unwrap();
}

/// An `api.example.com` / `*.apps.example.com` identity from its own
/// kubelet-style volume, next to the default one; its leaf is past its
/// renewal time (80 of 90 days used), the default's is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_is_listed_in_the_status_metrics_and_audit() {
    let pki = SecretVolumes::new();
    let external = AtomicWriter::new(pki.dir().join("external")).unwrap();
    let names = ["api.example.com", "*.apps.example.com"];
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let options = LeafOptions::server().names(names);
    let leaf: Leaf = pki
        .server_ca
        .issue(&options.valid(now - day * 80, now + day * 10));
    let (cert, key) = (leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes());
    external
        .write(&[("tls.crt", cert), ("tls.key", key)])
        .unwrap();
    let mut config = in_process(pki.files());
    if let TlsMode::Files { sni, .. } = &mut config.tls {
        let files = TlsFiles::new(external.path("tls.crt"), external.path("tls.key"));
        sni.push(SniIdentity::new(names, files));
    }
    let audit_log = pki.dir().join("audit.jsonl");
    config.ocsf = OcsfTarget::File(audit_log.clone());
    let gw = spawn(config).await;
    let client = pki.client_as(None);

    // Real handshakes pick the identity by name.
    for (sni, want) in [
        (Some("api.example.com"), &leaf.fingerprint),
        (Some("x.apps.example.com"), &leaf.fingerprint),
        (Some("other.example.com"), &pki.leaf.fingerprint),
        (None, &pki.leaf.fingerprint),
    ] {
        let served = served_for_name(gw.addr(), sni).await.unwrap();
        assert_eq!(&served, want, "{sni:?}");
    }

    // gRPC: the top-level fields stay the default identity's.
    let status = status(&mut gateway(gw.addr(), &client).await).await;
    let default_cert = status.certificate.as_ref().unwrap();
    assert_eq!(default_cert.fingerprint_sha256, pki.leaf.fingerprint);
    let ids: Vec<_> = status
        .identities
        .iter()
        .map(|i| {
            let cert = i.certificate.as_ref().unwrap();
            let fingerprint = cert.fingerprint_sha256.as_str();
            let label = i.label.as_str();
            (
                label,
                i.names.clone(),
                fingerprint,
                cert.dns_names.clone(),
                i.renewal_overdue,
            )
        })
        .collect();
    let owned = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let default = pki.leaf.fingerprint.as_str();
    let (api, all) = (leaf.fingerprint.as_str(), owned(&names));
    assert_eq!(
        ids,
        [
            ("default", vec![], default, owned(&["localhost"]), false),
            ("api.example.com", all.clone(), api, all, true),
        ]
    );
    let external_cert = status.identities[1].certificate.as_ref().unwrap();
    assert!(!external_cert.serial.is_empty() && external_cert.subject.contains("api.example.com"));
    assert!(external_cert.not_after_unix > external_cert.not_before_unix);

    // /v1/tls: the same, with the files of each identity.
    let json: Value =
        serde_json::from_str(&get_ok(gw.addr(), &client, "/v1/tls").await.body).unwrap();
    assert_eq!(json["certificate"]["fingerprint_sha256"], default);
    let api = &json["identities"][1];
    assert_eq!(api["label"], "api.example.com");
    assert_eq!(api["names"], serde_json::json!(names));
    assert_eq!(api["certificate"]["fingerprint_sha256"], leaf.fingerprint);
    assert_eq!(api["certificate"]["issuer"], json["certificate"]["issuer"]);
    assert!(api["certificate"]["not_after"].is_string());
    assert_eq!(api["renewal_overdue"], true);
    let cert_path = external.path("tls.crt");
    assert_eq!(api["files"]["cert"], cert_path.to_str().unwrap());
    assert_eq!(json["identities"][0]["label"], "default");
    assert_eq!(json["identities"][0]["renewal_overdue"], false);

    // Metrics: one series per identity.
    let m = scrape(gw.addr(), &client).await;
    for (identity, not_after, overdue) in [
        ("default", default_cert.not_after_unix, 0.0),
        ("api.example.com", external_cert.not_after_unix, 1.0),
    ] {
        let key = |name: &str| format!("{name}{{identity=\"{identity}\"}}");
        let seconds = m[&key("openshell_tls_cert_not_after_seconds")];
        assert_eq!(seconds, not_after as f64);
        assert_eq!(m[&key("openshell_tls_renewal_overdue")], overdue);
        assert!(m.contains_key(&key("openshell_tls_cert_not_before_seconds")));
    }

    // The overdue renewal is one OCSF event naming the identity (the
    // library checks after each attempt).
    let acceptor = gw.acceptor().cloned().unwrap();
    acceptor.reload_now(Trigger::Api).await.unwrap();
    let overdue = eventually(Duration::from_secs(10), "overdue event", || {
        let events = audit_events(&audit_log);
        let code = |e: &&Value| e["metadata"]["event_code"] == "tls_renewal_overdue";
        std::future::ready(events.iter().find(code).cloned().ok_or("not yet"))
    })
    .await;
    let tls = &overdue["unmapped"]["tls"];
    assert_eq!(overdue["message"], "TLS certificate renewal overdue");
    assert_eq!(overdue["severity"], "Medium");
    assert_eq!(tls["identity"], "api.example.com");
    assert_eq!(tls["new_fingerprint"], leaf.fingerprint);
    assert!(tls["renewal_due"].is_string() && tls["not_after"].is_string());
    let loaded: Vec<String> = audit_events(&audit_log)
        .iter()
        .filter(|e| e["metadata"]["event_code"] == "tls_loaded")
        .map(|e| {
            e["unmapped"]["tls"]["identity"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(loaded, ["default", "api.example.com"]);
    gw.stop().await.unwrap();
}
