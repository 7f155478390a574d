//! Changes of client trust reach open connections, against the real
//! gateway process with mTLS required and kubelet-style volumes: a CA
//! rollover (A, then A+B, then B only), a new CRL, and a client
//! certificate that expires while connected; the per-CA usage in the
//! status and metrics, and the audit event of each change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use openshell_e2e::GatewayProcess;
use openshell_e2e::tls::{self, Connection, Http};
use rustls::ClientConfig;
use serde_json::Value;
use tls_reload::testing::{Leaf, LeafOptions, SecretVolumes, TestCa, eventually};
use tls_reload::{CertInfo, Fingerprint};

/// How long after a change of trust an affected connection may stay open.
const ENDED_WITHIN: Duration = Duration::from_secs(2);

const WHO_AM_I: &str = "/openshell.gateway.v1.Gateway/WhoAmI";

/// A connection of `client` with HTTP `version`, which answers a first
/// request.
async fn open(addr: SocketAddr, client: &Arc<ClientConfig>, version: Http) -> Connection {
    let mut conn = Connection::open(addr, Some(client.clone()), version)
        .await
        .unwrap();
    assert_works(&mut conn, version).await;
    conn
}

/// One more request on `conn` succeeds: `GET /healthz` on HTTP/1.1, the
/// gRPC `WhoAmI` on HTTP/2.
async fn assert_works(conn: &mut Connection, version: Http) {
    let request = match version {
        Http::One => tls::get_request("/healthz").unwrap(),
        Http::Two => tls::grpc_request(WHO_AM_I, &[]).unwrap(),
    };
    let reply = tokio::time::timeout(EXCHANGE, conn.request(request))
        .await
        .expect("the request timed out")
        .expect("the connection serves requests");
    assert_eq!(reply.status, 200, "{reply:?}");
    if version == Http::Two {
        assert_eq!(reply.grpc_status(), Some("0"), "{reply:?}");
    }
}

/// Waits, until `deadline`, for `conn` to be ended by the gateway.
async fn assert_ended_by(conn: &mut Connection, deadline: Instant, what: &str) {
    let left = deadline.saturating_duration_since(Instant::now());
    match conn.closed(left).await {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            panic!("{what}: still open {ENDED_WITHIN:?} after the change")
        }
        // A clean close (GOAWAY, or EOF after `Connection: close`), or a
        // reset: either way the gateway ended it.
        _ => {}
    }
}

/// `GET /v1/tls` as `client`, parsed.
async fn tls_status(addr: SocketAddr, client: &Arc<ClientConfig>) -> Value {
    serde_json::from_str(&get_ok(addr, client, "/v1/tls").await.body).unwrap()
}

/// The entry of `trusted_cas` for `ca`, if it is trusted.
fn trusted(status: &Value, ca: &TestCa) -> Option<Value> {
    let fingerprint = Fingerprint::of(ca.cert_der()).to_string();
    status["trusted_cas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["certificate"]["fingerprint_sha256"] == fingerprint.as_str())
        .cloned()
}

/// Waits until the gateway trusts exactly `cas`.
async fn wait_until_trusted(addr: SocketAddr, client: &Arc<ClientConfig>, cas: &[&TestCa]) {
    eventually(RELOAD, "the new client CA bundle in /v1/tls", || async {
        let status = tls_status(addr, client).await;
        let n = status["trusted_cas"].as_array().map_or(0, Vec::len);
        let all = cas.iter().all(|ca| trusted(&status, ca).is_some());
        if all && n == cas.len() {
            Ok(())
        } else {
            Err(status["trusted_cas"].clone())
        }
    })
    .await;
}

/// Waits until exactly `n` connections are open on the main port (the
/// scrape's own included), so that a change of trust finds only the
/// connections the test holds.
async fn wait_until_open(addr: SocketAddr, client: &Arc<ClientConfig>, n: u64) {
    eventually(RELOAD, &format!("{n} open connections"), || async {
        let page = MetricsPage::fetch(addr, client).await?;
        let open = page.sum("openshell_connections_open", &[("port", "main")]);
        if open == n {
            Ok(())
        } else {
            Err(format!("{open} open"))
        }
    })
    .await;
}

/// The trust-change event of `gateway` that satisfies `pred`.
async fn trust_event(gateway: &mut GatewayProcess, pred: impl Fn(&Value) -> bool) -> Value {
    event(gateway, "tls_client_trust_changed", pred).await
}

fn non_empty(list: &Value) -> bool {
    list.as_array().is_some_and(|l| !l.is_empty())
}

fn fingerprints(list: &Value) -> Vec<String> {
    let list = list.as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|c| c["fingerprint"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rollover_keeps_connections_while_both_cas_are_trusted_and_ends_the_old_cas_when_it_is_removed()
 {
    let pki = SecretVolumes::new();
    let (mut gw, addr) = pki.start(true, &[]).await;
    let (a, b) = (&pki.client_ca, TestCa::new("client CA B"));
    let of_a = pki.client(true);
    let bob = b.client("bob");
    let of_b = pki.client_as(Some(&bob));

    // Clients of A keep a keep-alive HTTP/1.1 and an HTTP/2 (gRPC)
    // connection open.
    let mut h1 = open(addr, &of_a, Http::One).await;
    let mut h2 = open(addr, &of_a, Http::Two).await;
    let before = tls_status(addr, &of_a).await;
    let used_a = trusted(&before, a).unwrap();
    assert!(used_a["handshakes"].as_u64().unwrap() >= 3, "{used_a}");
    assert!(used_a["last_used_unix_ms"].as_u64().is_some(), "{used_a}");

    // Add B: both stay open and keep serving.
    pki.publish_client_ca(format!("{}{}", a.cert_pem(), b.cert_pem()));
    wait_until_trusted(addr, &of_a, &[a, &b]).await;
    let added = trust_event(&mut gw, |e| {
        non_empty(&e["unmapped"]["tls"]["client_cas_added"])
    })
    .await;
    assert_eq!(
        fingerprints(&added["unmapped"]["tls"]["client_cas_added"]),
        [Fingerprint::of(b.cert_der()).to_string()]
    );
    assert_eq!(added["unmapped"]["tls"]["connections_ended"], 0);
    assert_works(&mut h1, Http::One).await;
    assert_works(&mut h2, Http::Two).await;

    // A client of B: B's count and last use move, A's do not.
    let a_before = trusted(&tls_status(addr, &of_b).await, a).unwrap()["handshakes"].clone();
    let peer: Value =
        serde_json::from_str(&get_ok(addr, &of_b, "/v1/tls/peer").await.body).unwrap();
    assert_eq!(
        peer["client_ca_fingerprint_sha256"],
        Fingerprint::of(b.cert_der()).to_string()
    );
    let after = tls_status(addr, &of_b).await;
    let used_b = trusted(&after, &b).unwrap();
    assert_eq!(used_b["handshakes"], 3, "{used_b}"); // two /v1/tls and /v1/tls/peer
    assert!(
        used_b["last_used_unix_ms"].as_u64().unwrap() > 0,
        "{used_b}"
    );
    assert_eq!(trusted(&after, a).unwrap()["handshakes"], a_before);
    let page = MetricsPage::fetch(addr, &of_b).await.unwrap();
    let short = used_b["short_fingerprint"].as_str().unwrap();
    assert_eq!(
        page.sum("openshell_tls_client_handshakes_total", &[("ca", short)]),
        4
    );

    // Remove A: both of A's connections end within 2 s, B's clients go on.
    wait_until_open(addr, &of_b, 3).await;
    pki.publish_client_ca(b.cert_pem());
    let deadline = Instant::now() + ENDED_WITHIN;
    assert_ended_by(&mut h1, deadline, "A's HTTP/1.1 connection").await;
    assert_ended_by(&mut h2, deadline, "A's HTTP/2 connection").await;
    let removed = trust_event(&mut gw, |e| {
        non_empty(&e["unmapped"]["tls"]["client_cas_removed"])
    })
    .await;
    let details = &removed["unmapped"]["tls"];
    assert_eq!(
        fingerprints(&details["client_cas_removed"]),
        [Fingerprint::of(a.cert_der()).to_string()]
    );
    assert_eq!(
        details["client_cas_removed"][0]["subject"],
        CertInfo::from_der(a.cert_der()).unwrap().subject
    );
    assert_eq!(details["connections_ended"], 2, "{removed}");
    assert_eq!(details["crls_changed"], false);
    let page = MetricsPage::fetch(addr, &of_b).await.unwrap();
    let ended = |reason| {
        page.sum(
            "openshell_tls_connections_ended_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(ended("trust_changed"), 2);
    assert!(
        tls::get(addr, of_a, "/healthz", EXCHANGE).await.is_err(),
        "A is no longer trusted"
    );
    assert_ocsf_valid(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_crl_ends_the_revoked_clients_connection_and_leaves_another_clients_open() {
    let pki = SecretVolumes::new();
    let publish = |revoked: &[&Leaf]| {
        let crl = pki.client_ca.crl(revoked);
        let files = [
            ("ca.crt", pki.client_ca.cert_pem().as_bytes()),
            ("ca.crl", crl.as_bytes()),
        ];
        pki.client_ca_volume.write(&files).unwrap();
    };
    publish(&[]);
    let crl = pki.client_ca_volume.path("ca.crl");
    let (mut gw, addr) = pki.start(true, &["--tls-crl", crl.to_str().unwrap()]).await;
    let mallory = pki.client_ca.client("mallory");
    let (of_mallory, of_alice) = (pki.client_as(Some(&mallory)), pki.client(true));
    let mut revoked = open(addr, &of_mallory, Http::Two).await;
    let mut kept = open(addr, &of_alice, Http::Two).await;
    let mut kept_h1 = open(addr, &of_alice, Http::One).await;
    wait_until_open(addr, &of_alice, 4).await;

    publish(&[&mallory]);
    assert_ended_by(
        &mut revoked,
        Instant::now() + ENDED_WITHIN,
        "the revoked client's connection",
    )
    .await;
    let event = trust_event(&mut gw, |e| e["unmapped"]["tls"]["crls_changed"] == true).await;
    let details = &event["unmapped"]["tls"];
    assert_eq!(details["connections_ended"], 1, "{event}");
    assert_eq!(details["connections_checked"], 3, "{event}");
    assert_eq!(details["client_cas_removed"], serde_json::json!([]));
    assert_works(&mut kept, Http::Two).await;
    assert_works(&mut kept_h1, Http::One).await;
    assert!(
        tls::get(addr, of_mallory, "/healthz", EXCHANGE)
            .await
            .is_err(),
        "revoked"
    );
    assert_ocsf_valid(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_when_its_client_certificate_expires() {
    let pki = SecretVolumes::new();
    let (_gw, addr) = pki.start(true, &[]).await;
    // Valid for a few seconds more: long enough for the handshake on a
    // loaded machine, short enough for a test.
    let now = SystemTime::now();
    let options = LeafOptions::client("short-lived")
        .valid(now - Duration::from_secs(60), now + Duration::from_secs(4));
    let short = pki.client_ca.issue(&options);
    let not_after = CertInfo::from_der(&short.cert_der).unwrap().not_after;
    let mut expiring = open(addr, &pki.client_as(Some(&short)), Http::One).await;
    let mut other = open(addr, &pki.client(true), Http::Two).await;

    let until = not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    match expiring.closed(until + ENDED_WITHIN).await {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            panic!("still open {ENDED_WITHIN:?} after the client certificate's notAfter")
        }
        _ => {}
    }
    let ended_at = SystemTime::now();
    assert!(
        ended_at + Duration::from_millis(200) >= not_after,
        "ended {:?} before notAfter",
        not_after.duration_since(ended_at).unwrap_or_default()
    );
    assert_works(&mut other, Http::Two).await;
    let page = MetricsPage::fetch(addr, &pki.client(true)).await.unwrap();
    let ended = |reason| {
        page.sum(
            "openshell_tls_connections_ended_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(
        (ended("client_cert_expired"), ended("trust_changed")),
        (1, 0)
    );
}
