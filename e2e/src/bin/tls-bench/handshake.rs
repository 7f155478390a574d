//! Figures 1 and 2: full-handshake throughput of the reloadable acceptor
//! against a plain `tokio_rustls::TlsAcceptor` over the same config (and,
//! with 1 and 3 SNI identities, against a plain single-certificate config,
//! so that the name lookup is measured), and with against without
//! rotations every 100 ms.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tls_reload::testing::{LeafOptions, TestCa};
use tls_reload::{ReloadableAcceptor, SniIdentity};
use tokio::task::JoinHandle;

use crate::interleave::{
    Schedule, interleave, interleave_flag, plain_vs_reloadable, plain_vs_reloadable_rows, summarize,
};
use crate::load::{self, After, ClientSpec, Clients, Published};
use crate::util::{self, KeyKind, Row, Settings};

/// One listener, one accept loop; which acceptor handshakes a connection
/// depends on the arm of the moment (the flag set: `reloadable`), so both
/// arms see the same clients, sockets and machine.
async fn switching_server(
    reloadable: ReloadableAcceptor,
    plain: tokio_rustls::TlsAcceptor,
) -> (Arc<AtomicBool>, SocketAddr, JoinHandle<()>) {
    let reloadable_arm = Arc::new(AtomicBool::new(false));
    let (listener, addr) = load::listen().await;
    let arm = reloadable_arm.clone();
    let server = load::spawn_server(listener, Duration::from_secs(600), move |tcp| {
        if arm.load(Ordering::Relaxed) {
            reloadable.accept(tcp)
        } else {
            plain.accept(tcp)
        }
    });
    (reloadable_arm, addr, server)
}

/// Starts the client loops of figure 1 against `addr` (each checking the
/// served leaf against `published`, if given) and lets them warm up.
async fn start_clients(
    s: &Settings,
    addr: SocketAddr,
    ca: &TestCa,
    published: Option<Arc<Published>>,
    what: &str,
    schedule: &Schedule,
) -> Clients {
    let spec = ClientSpec {
        addr,
        config: load::client(ca.cert_pem(), &[]),
        after: After::ReadOk,
        published,
        limit: Duration::from_secs(120),
    };
    println!(
        "   {} client loops{what}, one listener switching acceptor per slot; {}",
        s.clients,
        schedule.describe()
    );
    let clients = Clients::start(&spec, s.clients);
    tokio::time::sleep(s.pick(Duration::from_millis(500), Duration::from_millis(100))).await;
    clients
}

/// Figure 1.
pub(crate) async fn throughput(s: &Settings, kind: KeyKind) -> Vec<Row> {
    let figure = format!(
        "1. handshakes/s, reloadable ÷ plain TlsAcceptor ({})",
        kind.label()
    );
    println!("\n== {figure}");
    let ca = TestCa::new("bench CA");
    let leaf = match util::leaf(&ca, kind) {
        Ok(leaf) => leaf,
        Err(reason) => {
            println!("   skipped: {reason}");
            return vec![Row::skipped(figure, reason)];
        }
    };
    let tmp = util::volume_dir();
    let files = util::write_plain(tmp.path(), &leaf).expect("write cert and key");
    let (acceptor, watcher) = ReloadableAcceptor::builder(files)
        .start()
        .expect("start acceptor");
    // The baseline serves the very same ServerConfig, without the ArcSwap.
    let plain = tokio_rustls::TlsAcceptor::from(acceptor.server_config());
    let (reloadable_arm, addr, server) = switching_server(acceptor.clone(), plain).await;
    let schedule = Schedule {
        rounds: s.pick(12, 1),
        pairs_per_round: s.pick(10, 3),
        slot: Duration::from_millis(100),
        guard: Duration::from_millis(5),
    };
    let clients = start_clients(s, addr, &ca, None, "", &schedule).await;
    let control = (kind == KeyKind::EcdsaP256).then_some(s.pick(6, 1));
    let rounds = plain_vs_reloadable(&schedule, || clients.ok(), &reloadable_arm, control).await;
    let counters = clients.stop().await;
    server.abort();
    watcher.shutdown().await;

    let (failed, _, first_error) = counters.failures();
    let failures = format!("failed handshakes ({})", kind.label());
    plain_vs_reloadable_rows(&figure, 1, rounds, (failed, first_error), &failures)
}

/// Figure 1 with SNI: `identities` SNI identities (the last one named
/// `localhost`, the name the load clients send, the others names no
/// client asks for), against a plain `TlsAcceptor` whose config holds just
/// that identity's certificate (rustls's single-certificate resolver): the
/// difference is the swap plus the name lookup.
pub(crate) async fn sni(s: &Settings, identities: usize) -> Vec<Row> {
    let figure = format!(
        "1. handshakes/s, reloadable with {identities} SNI identit{} ÷ plain single-cert \
         TlsAcceptor (ECDSA)",
        if identities == 1 { "y" } else { "ies" }
    );
    println!("\n== {figure}");
    let ca = TestCa::new("bench CA");
    let tmp = util::volume_dir();
    let default = ca.issue(&LeafOptions::server().names(["default.example.com"]));
    let default_dir = tmp.path().join("default");
    std::fs::create_dir_all(&default_dir).expect("default dir");
    let default_files = util::write_plain(&default_dir, &default).expect("write default pair");
    let mut builder = ReloadableAcceptor::builder(default_files);
    let mut hit = None;
    for i in 0..identities {
        let last = i + 1 == identities;
        let names = if last {
            vec!["localhost".to_owned()]
        } else {
            vec![
                format!("svc{i}.example.com"),
                format!("*.apps{i}.example.com"),
            ]
        };
        let leaf = ca.issue(&LeafOptions::server().names(names.iter().cloned()));
        let dir = tmp.path().join(format!("sni{i}"));
        std::fs::create_dir_all(&dir).expect("identity dir");
        let files = util::write_plain(&dir, &leaf).expect("write identity pair");
        builder = builder.sni(SniIdentity::new(names, files));
        if last {
            hit = Some(leaf);
        }
    }
    let hit = hit.expect("at least one identity");
    let (acceptor, watcher) = builder.start().expect("start acceptor");
    let chain = vec![CertificateDer::from_pem_slice(hit.cert_pem.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(hit.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("single-cert config");
    let plain = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (reloadable_arm, addr, server) = switching_server(acceptor, plain).await;
    let schedule = Schedule {
        rounds: s.pick(8, 1),
        pairs_per_round: s.pick(10, 2),
        slot: Duration::from_millis(100),
        guard: Duration::from_millis(5),
    };
    // Every handshake checks that the SNI identity's leaf was served.
    let published = Arc::new(Published::new([hit.fingerprint.clone()]));
    let clients = start_clients(
        s,
        addr,
        &ca,
        Some(published),
        " sending SNI localhost",
        &schedule,
    )
    .await;
    let names = ["plain", "reloadable"];
    let rounds = interleave_flag(&schedule, || clients.ok(), names, &reloadable_arm).await;
    let counters = clients.stop().await;
    server.abort();
    watcher.shutdown().await;

    let (ratio, value) = summarize(&rounds, names);
    let (failed, mismatched, first_error) = counters.failures();
    let mut rows = vec![Row::check(figure, value, "≥ 0.97", ratio >= 0.97)];
    if failed > 0 || mismatched > 0 {
        rows.push(Row::check(
            format!("1. failed or wrong-certificate handshakes ({identities} SNI)"),
            format!(
                "{failed} failed, {mismatched} another leaf (first: {})",
                first_error.unwrap_or_default()
            ),
            "0",
            false,
        ));
    }
    rows
}

/// Figure 2.
pub(crate) async fn rotating(s: &Settings) -> Vec<Row> {
    let figure = "2. handshakes/s, rotating every 100 ms ÷ not rotating";
    println!("\n== {figure}");
    let ca = Arc::new(TestCa::new("bench CA"));
    let pool = Arc::new(util::leaves(&ca, 4));
    let published = Arc::new(Published::new(pool.iter().map(|l| l.fingerprint.clone())));
    let tmp = util::volume_dir();
    let (writer, files) = util::volume(tmp.path(), &pool[0], &ca);
    let debounce = Duration::from_millis(10);
    let (acceptor, watcher) = ReloadableAcceptor::builder(files)
        .debounce(debounce)
        .start()
        .expect("start acceptor");
    let (listener, addr) = load::listen().await;
    let served = acceptor.clone();
    let server = load::spawn_server(listener, Duration::from_secs(600), move |tcp| {
        served.accept(tcp)
    });

    // Each rotating slot holds one rotation per 100 ms of slot time; short
    // slots keep the two arms close in time (less noise), and the reload
    // (debounce 10 ms) lands well inside the slot that caused it.
    let period = Duration::from_millis(100);
    let per_slot = 1u32;
    let schedule = Schedule {
        rounds: s.pick(12, 1),
        pairs_per_round: s.pick(10, 3),
        slot: period * per_slot,
        guard: Duration::from_millis(5),
    };
    let spec = ClientSpec {
        addr,
        config: load::client(ca.cert_pem(), &[]),
        after: After::ReadOk,
        published: Some(published.clone()),
        limit: Duration::from_secs(120),
    };
    println!(
        "   {} client loops checking each served fingerprint; watcher debounce {} ms; a rotating \
         slot writes a new pair kubelet-style every {} ms ({per_slot} per slot); {}",
        s.clients,
        debounce.as_millis(),
        period.as_millis(),
        schedule.describe()
    );
    let reloads_before = acceptor.status().reloads_succeeded;
    let clients = Clients::start(&spec, s.clients);
    tokio::time::sleep(s.pick(Duration::from_millis(500), Duration::from_millis(100))).await;
    let next = Arc::new(AtomicU64::new(1));
    let rotations = Arc::new(AtomicU64::new(0));
    let names = ["steady", "rotating"];
    let rounds = interleave(
        &schedule,
        || clients.ok(),
        names,
        |_| {},
        |rotate| {
            let (writer, ca, pool, published, next, rotations) = (
                writer.clone(),
                ca.clone(),
                pool.clone(),
                published.clone(),
                next.clone(),
                rotations.clone(),
            );
            async move {
                if !rotate {
                    tokio::time::sleep(period * per_slot).await;
                    return;
                }
                let start = tokio::time::Instant::now();
                for k in 0..per_slot {
                    tokio::time::sleep_until(start + period * k).await;
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize % pool.len();
                    published.publish(i);
                    util::rotate(&writer, &pool[i], &ca).await;
                    rotations.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep_until(start + period * per_slot).await;
            }
        },
    )
    .await;
    let counters = clients.stop().await;
    // Let the last write land (bounded) before counting reloads.
    let last = pool[(next.load(Ordering::Relaxed) as usize - 1) % pool.len()]
        .fingerprint
        .clone();
    let settle = Instant::now();
    while acceptor.status().cert.fingerprint_sha256 != last
        && settle.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = acceptor.status();
    let reloads = status.reloads_succeeded - reloads_before;
    server.abort();
    watcher.shutdown().await;

    let (ratio, value) = summarize(&rounds, names);
    let (failed, mismatched, first_error) = counters.failures();
    let rotations = rotations.load(Ordering::Relaxed);
    let error = first_error
        .map(|e| format!(" (first: {e})"))
        .unwrap_or_default();
    vec![
        Row::check(figure, value, "≥ 0.97", ratio >= 0.97),
        Row::check(
            "2. failed handshakes while rotating",
            format!(
                "{failed} of {} handshakes, {rotations} rotations ({reloads} reloads, {} failed reloads){error}",
                counters.ok.load(Ordering::Relaxed),
                status.reloads_failed
            ),
            "0",
            failed == 0 && status.reloads_failed == 0,
        ),
        Row::check(
            "2. handshakes serving an unpublished cert",
            format!("{mismatched}"),
            "0",
            mismatched == 0,
        ),
    ]
}
