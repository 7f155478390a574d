//! The gateway's APIs over its TLS port, in process, on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use openshell_server::pb::gateway_client::GatewayClient;
use openshell_server::pb::{GetTlsStatusRequest, ReloadTlsRequest};
use tls_reload::ClientAuth;
use tls_reload::testing::{Leaf, served_fingerprint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A client of the gateway API over TLS, with a client certificate or
/// without.
async fn gateway(
    addr: std::net::SocketAddr,
    pki: &Pki,
    identity: Option<&Leaf>,
) -> GatewayClient<tonic::transport::Channel> {
    GatewayClient::new(
        grpc(addr, tls(&pki.server_ca, identity, &["h2"]))
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_serving_over_tls() {
    let pki = Pki::new();
    let gw = start(test_config(pki.files())).await;
    let channel = grpc(gw.addr(), tls(&pki.server_ca, None, &["h2"]))
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "openshell.gateway.v1.Gateway"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "service {service:?}");
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let pki = Pki::new();
    let gw = start(test_config(pki.files())).await;
    let channel = grpc(gw.addr(), tls(&pki.server_ca, None, &["h2"]))
        .await
        .unwrap();
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
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tls_status_follows_a_kubelet_rotation() {
    let mut pki = Pki::new();
    let gw = start(test_config(pki.files())).await;
    let mut client = gateway(gw.addr(), &pki, None).await;

    let before = client
        .get_tls_status(GetTlsStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(before.tls_enabled);
    assert_eq!(before.generation, 1);
    assert_eq!(
        before.certificate.as_ref().unwrap().fingerprint_sha256,
        pki.leaf.fingerprint
    );
    assert_eq!(before.watcher_mode, "events");
    assert_eq!(before.client_auth, "none");

    let new = pki.rotate();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = client
            .get_tls_status(GetTlsStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if s.generation > before.generation {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reload seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cert = after.certificate.unwrap();
    assert_eq!(cert.fingerprint_sha256, new.fingerprint);
    assert_eq!(cert.dns_names, vec!["localhost".to_owned()]);
    let last = after.last_reload.unwrap();
    assert!(last.success);
    assert_eq!(last.trigger, "watch");
    assert_eq!(after.reloads_succeeded, 1);
    // The same, long-lived channel keeps working across the rotation.
    let served = served_fingerprint(gw.addr(), tls(&pki.server_ca, None, &[]))
        .await
        .unwrap();
    assert_eq!(served, new.fingerprint);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_auth_required_only_clients_of_the_ca_connect_and_may_reload() {
    let mut pki = Pki::new();
    let gw = start(test_config(pki.mtls_files(ClientAuth::Required))).await;

    // No certificate: the connection itself is refused.
    let anonymous = async {
        let channel = grpc(gw.addr(), tls(&pki.server_ca, None, &["h2"])).await?;
        GatewayClient::new(channel)
            .get_tls_status(GetTlsStatusRequest {})
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(
        anonymous.await.is_err(),
        "a client without a certificate must not get through"
    );
    let stranger = tls_reload::testing::TestCa::new("stranger").client("mallory");
    let channel = grpc(gw.addr(), tls(&pki.server_ca, Some(&stranger), &["h2"])).await;
    let refused = match channel {
        Err(_) => true,
        Ok(ch) => GatewayClient::new(ch)
            .get_tls_status(GetTlsStatusRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client of another CA must not get through");

    let alice = pki.client_ca.client("alice");
    let mut client = gateway(gw.addr(), &pki, Some(&alice)).await;
    let unchanged = client
        .reload_tls(ReloadTlsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!unchanged.changed);
    assert_eq!(unchanged.generation, 1);

    // Rotate with the watcher's debounce still pending: ReloadTls gets
    // there first or finds it done; either way the new cert is served.
    let new = pki.rotate();
    let resp = client
        .reload_tls(ReloadTlsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.certificate.unwrap().fingerprint_sha256,
        new.fingerprint
    );
    assert_eq!(resp.generation, 2);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_optional_client_auth_reload_tls_refuses_anonymous_callers() {
    let pki = Pki::new();
    let gw = start(test_config(pki.mtls_files(ClientAuth::Optional))).await;
    let mut client = gateway(gw.addr(), &pki, None).await;
    // Reading the status is open; reloading is not.
    client.get_tls_status(GetTlsStatusRequest {}).await.unwrap();
    let err = client.reload_tls(ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    let alice = pki.client_ca.client("alice");
    gateway(gw.addr(), &pki, Some(&alice))
        .await
        .reload_tls(ReloadTlsRequest {})
        .await
        .unwrap();
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_answer_over_http1_and_http2() {
    let pki = Pki::new();
    let gw = start(test_config(pki.files())).await;
    for version in [Http::One, Http::Two] {
        let (status, _, body) = get(gw.addr(), &pki.server_ca, version, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{version:?}");
        let (status, _, _) = get(gw.addr(), &pki.server_ca, version, "/readyz").await;
        assert_eq!(status, 200);
        let (status, ct, body) = get(gw.addr(), &pki.server_ca, version, "/v1/tls").await;
        assert_eq!(status, 200);
        assert_eq!(ct, "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["certificate"]["fingerprint_sha256"],
            pki.leaf.fingerprint.as_str()
        );
        assert_eq!(json["generation"], 1);
        assert_eq!(
            json["files"]["cert"],
            pki.server.path("tls.crt").to_str().unwrap()
        );
        let (status, ct, body) = get(gw.addr(), &pki.server_ca, version, "/metrics").await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let metrics = parse_metrics(&body);
        assert_eq!(metrics["openshell_tls_config_generation"], 1.0);
        let (status, _, _) = get(gw.addr(), &pki.server_ca, version, "/nope").await;
        assert_eq!(status, 404);
        let alpn = if version == Http::One {
            "http/1.1"
        } else {
            "h2"
        };
        let post = http::Request::post("https://localhost/healthz")
            .body(http_body_util::Full::default())
            .unwrap();
        let reply = send(
            connect(gw.addr(), &pki.server_ca, alpn).await,
            version,
            post,
        )
        .await;
        assert_eq!(reply.status, 405, "{version:?}");
        let allow = reply.headers[http::header::ALLOW].to_str().unwrap();
        assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    }
    gw.stop().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_on_reload_success_and_failure_and_the_old_cert_stays() {
    let pki = Pki::new();
    let mut config = test_config(pki.files());
    config.tls = openshell_server::TlsMode::Files {
        files: pki.files(),
        sni: Vec::new(),
        reload: None,
    };
    let gw = start(config).await;
    let acceptor = gw.acceptor().cloned().unwrap();
    let scrape = || async {
        parse_metrics(
            &get(gw.addr(), &pki.server_ca, Http::Two, "/metrics")
                .await
                .2,
        )
    };

    let m0 = scrape().await;
    assert_eq!(
        m0["openshell_tls_reload_total{result=\"success\",trigger=\"api\"}"],
        0.0
    );
    assert_eq!(m0["openshell_tls_watcher_mode{mode=\"off\"}"], 1.0);
    assert!(m0["openshell_tls_handshakes_total{result=\"success\"}"] >= 1.0);
    assert_eq!(
        m0["openshell_tls_cert_not_after_seconds{identity=\"default\"}"],
        acceptor.status().cert.not_after_unix() as f64
    );

    let new = pki.server_ca.server();
    pki.publish_leaf(&new);
    acceptor.reload_now(tls_reload::Trigger::Api).await.unwrap();
    let m1 = scrape().await;
    assert_eq!(
        m1["openshell_tls_reload_total{result=\"success\",trigger=\"api\"}"],
        1.0
    );
    assert_eq!(m1["openshell_tls_config_generation"], 2.0);
    // The gauges describe the new leaf (two leaves made in the same second
    // share their notAfter, so compare with the served one, not the old).
    let status = acceptor.status();
    assert_eq!(status.cert.fingerprint_sha256, new.fingerprint);
    assert_eq!(
        m1["openshell_tls_cert_not_after_seconds{identity=\"default\"}"],
        status.cert.not_after_unix() as f64
    );
    assert_eq!(
        m1["openshell_tls_cert_not_before_seconds{identity=\"default\"}"],
        status.cert.not_before_unix() as f64
    );
    assert!(
        m1["openshell_tls_last_reload_success_timestamp_seconds"]
            >= m0["openshell_tls_last_reload_success_timestamp_seconds"]
    );

    pki.server
        .write(&[
            ("tls.crt", new.cert_pem.as_bytes()),
            ("tls.key", b"garbage".as_slice()),
        ])
        .unwrap();
    acceptor
        .reload_now(tls_reload::Trigger::Signal)
        .await
        .unwrap_err();
    let m2 = scrape().await;
    assert_eq!(
        m2["openshell_tls_reload_total{result=\"failure\",trigger=\"signal\"}"],
        1.0
    );
    assert_eq!(m2["openshell_tls_config_generation"], 2.0);
    let served = served_fingerprint(gw.addr(), tls(&pki.server_ca, None, &[]))
        .await
        .unwrap();
    assert_eq!(
        served, new.fingerprint,
        "the last good cert is still served"
    );
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http1_is_refused_with_a_clear_status() {
    let pki = Pki::new();
    let gw = start(test_config(pki.files())).await;
    // Hand-made HTTP/1.1 request with a gRPC content type.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = connect(gw.addr(), &pki.server_ca, "http/1.1").await;
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
    let pki = Pki::new();
    let mut config = test_config(pki.files());
    config.max_connection_age = Duration::from_millis(300);
    config.max_connection_age_grace = Duration::from_millis(200);
    let gw = start(config).await;

    let tls_stream = connect(gw.addr(), &pki.server_ca, "h2").await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls_stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = || {
        http::Request::get("https://localhost/healthz")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(send.send_request(req()).await.unwrap().status(), 200);
    // The server sends GOAWAY at 300 ms and closes; the client connection
    // task ends.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("connection not closed after its max age")
        .unwrap()
        .ok();
    assert!(send.send_request(req()).await.is_err());
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_mode_reports_tls_disabled_and_refuses_reload() {
    let mut config = openshell_server::Config::with_tls(
        "127.0.0.1:0".parse().unwrap(),
        tls_reload::TlsFiles::new("unused", "unused"),
    );
    config.tls = openshell_server::TlsMode::Disabled;
    let gw = start(config).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GatewayClient::new(channel);
    let status = client
        .get_tls_status(GetTlsStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.tls_enabled);
    let err = client.reload_tls(ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_its_request_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let mut config = test_config(pki.files());
    config.handshake_timeout = Duration::from_millis(500);
    let gw = start(config).await;

    let mut tls = connect(gw.addr(), &pki.server_ca, "http/1.1").await;
    // Half a request line, then nothing.
    tls.write_all(b"GET /healthz HT").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed too early: {:?}",
        started.elapsed()
    );
    // Well-behaved clients are served meanwhile and after.
    let (status, _, _) = get(gw.addr(), &pki.server_ca, Http::One, "/healthz").await;
    assert_eq!(status, 200);
    gw.stop().await.unwrap();
}

/// An `api.example.com` / `*.apps.example.com` identity from its own
/// kubelet-style volume, next to the default one; its leaf is past its
/// renewal time (80 of 90 days used), the default's is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_is_listed_in_the_status_metrics_and_audit() {
    use std::time::SystemTime;
    use tls_reload::testing::{AtomicWriter, LeafOptions, served_for_name};

    let pki = Pki::new();
    let external = AtomicWriter::new(pki.dir().join("external")).unwrap();
    let now = SystemTime::now();
    let leaf = pki.server_ca.issue(
        &LeafOptions::server()
            .names(["api.example.com", "*.apps.example.com"])
            .valid(
                now - Duration::from_secs(80 * 86_400),
                now + Duration::from_secs(10 * 86_400),
            ),
    );
    external
        .write(&[
            ("tls.crt", leaf.cert_pem.as_bytes()),
            ("tls.key", leaf.key_pem.as_bytes()),
        ])
        .unwrap();
    let names = ["api.example.com", "*.apps.example.com"];
    let mut config = test_config(pki.files());
    if let openshell_server::TlsMode::Files { sni, .. } = &mut config.tls {
        sni.push(tls_reload::SniIdentity::new(
            names,
            tls_reload::TlsFiles::new(external.path("tls.crt"), external.path("tls.key")),
        ));
    }
    let audit_log = pki.dir().join("audit.jsonl");
    config.ocsf = openshell_server::OcsfTarget::File(audit_log.clone());
    let gw = start(config).await;

    // Real handshakes pick the identity by name.
    for (sni, want) in [
        (Some("api.example.com"), &leaf.fingerprint),
        (Some("x.apps.example.com"), &leaf.fingerprint),
        (Some("other.example.com"), &pki.leaf.fingerprint),
        (None, &pki.leaf.fingerprint),
    ] {
        assert_eq!(
            &served_for_name(gw.addr(), sni).await.unwrap(),
            want,
            "{sni:?}"
        );
    }

    // gRPC: the top-level fields stay the default identity's.
    let status = gateway(gw.addr(), &pki, None)
        .await
        .get_tls_status(GetTlsStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.certificate.as_ref().unwrap().fingerprint_sha256,
        pki.leaf.fingerprint
    );
    let ids: Vec<_> = status
        .identities
        .iter()
        .map(|i| {
            let cert = i.certificate.as_ref().unwrap();
            (
                i.label.as_str(),
                i.names.clone(),
                cert.fingerprint_sha256.as_str(),
                cert.dns_names.clone(),
                i.renewal_overdue,
            )
        })
        .collect();
    let owned = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        ids,
        [
            (
                "default",
                vec![],
                pki.leaf.fingerprint.as_str(),
                owned(&["localhost"]),
                false
            ),
            (
                "api.example.com",
                owned(&names),
                leaf.fingerprint.as_str(),
                owned(&names),
                true
            ),
        ]
    );
    let external_cert = status.identities[1].certificate.as_ref().unwrap();
    assert!(!external_cert.serial.is_empty() && external_cert.subject.contains("api.example.com"));
    assert!(external_cert.not_after_unix > external_cert.not_before_unix);

    // /v1/tls: the same, with the files of each identity.
    let (code, _, body) = get(gw.addr(), &pki.server_ca, Http::One, "/v1/tls").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["certificate"]["fingerprint_sha256"],
        pki.leaf.fingerprint
    );
    let api = &json["identities"][1];
    assert_eq!(api["label"], "api.example.com");
    assert_eq!(api["names"], serde_json::json!(names));
    assert_eq!(api["certificate"]["fingerprint_sha256"], leaf.fingerprint);
    assert_eq!(api["certificate"]["issuer"], json["certificate"]["issuer"]);
    assert!(api["certificate"]["not_after"].is_string());
    assert_eq!(api["renewal_overdue"], true);
    assert_eq!(
        api["files"]["cert"],
        external.path("tls.crt").to_str().unwrap()
    );
    assert_eq!(json["identities"][0]["label"], "default");
    assert_eq!(json["identities"][0]["renewal_overdue"], false);

    // Metrics: one series per identity.
    let m = parse_metrics(
        &get(gw.addr(), &pki.server_ca, Http::Two, "/metrics")
            .await
            .2,
    );
    for (identity, not_after, overdue) in [
        (
            "default",
            status.certificate.as_ref().unwrap().not_after_unix,
            0.0,
        ),
        ("api.example.com", external_cert.not_after_unix, 1.0),
    ] {
        let key = |name: &str| format!("{name}{{identity=\"{identity}\"}}");
        assert_eq!(
            m[&key("openshell_tls_cert_not_after_seconds")],
            not_after as f64
        );
        assert_eq!(m[&key("openshell_tls_renewal_overdue")], overdue);
        assert!(m.contains_key(&key("openshell_tls_cert_not_before_seconds")));
    }

    // The overdue renewal is one OCSF event naming the identity (the
    // library checks after each attempt).
    let acceptor = gw.acceptor().cloned().unwrap();
    acceptor.reload_now(tls_reload::Trigger::Api).await.unwrap();
    let overdue = tls_reload::testing::eventually(Duration::from_secs(10), "overdue event", || {
        let log = std::fs::read_to_string(&audit_log).unwrap_or_default();
        async move {
            log.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|e| e["metadata"]["event_code"] == "tls_renewal_overdue")
                .ok_or("not yet")
        }
    })
    .await;
    let tls = &overdue["unmapped"]["tls"];
    assert_eq!(overdue["message"], "TLS certificate renewal overdue");
    assert_eq!(overdue["severity"], "Medium");
    assert_eq!(tls["identity"], "api.example.com");
    assert_eq!(tls["new_fingerprint"], leaf.fingerprint);
    assert!(tls["renewal_due"].is_string() && tls["not_after"].is_string());
    let log = std::fs::read_to_string(&audit_log).unwrap();
    let loaded: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
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
