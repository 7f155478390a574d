//! Figure 8: connections/s through the reloadable connector against a
//! plain `tokio_rustls::TlsConnector` over the very same `ClientConfig`,
//! the client side of figure 1. Each connection is a TCP connect, a TLS
//! 1.3 handshake presenting a client certificate (ECDSA) to a server that
//! requires one, and the read of the server's `ok\n`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tls_reload::testing::TestCa;
use tls_reload::{ClientAuth, ClientFiles, ReloadableAcceptor, ReloadableConnector};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::interleave::{Schedule, plain_vs_reloadable, plain_vs_reloadable_rows};
use crate::load::{self, Clients};
use crate::util::{self, Row, Settings};

/// One connection, through the reloadable connector when `arm` is set,
/// else through the plain one.
async fn one(
    addr: SocketAddr,
    arm: &AtomicBool,
    reloadable: &ReloadableConnector,
    plain: &TlsConnector,
) -> io::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let mut tls = if arm.load(Ordering::Relaxed) {
        reloadable.connect(name, tcp).await?
    } else {
        plain.connect(name, tcp).await?
    };
    let mut reply = Vec::with_capacity(8);
    tls.read_to_end(&mut reply).await?;
    if reply != b"ok\n" {
        return Err(io::Error::other(format!("unexpected reply {reply:?}")));
    }
    Ok(())
}

/// Figure 8, with full handshakes (`resume` false: the client keeps no
/// sessions) or resumed ones (the default session store, shared by both
/// arms since they share the config).
pub(crate) async fn throughput(s: &Settings, resume: bool) -> Vec<Row> {
    let kind = if resume {
        "resumed sessions"
    } else {
        "full handshakes"
    };
    let figure = format!("8. connections/s, reloadable ÷ plain TlsConnector (ECDSA, mTLS, {kind})");
    println!("\n== {figure}");
    let (server_ca, client_ca) = (TestCa::new("bench CA"), TestCa::new("bench client CA"));
    let (leaf, client) = (server_ca.server(), client_ca.client("bench-client"));
    let tmp = util::volume_dir();
    let write = |name: &str, pem: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, pem).expect("write bench file");
        path
    };
    let server_files = util::write_plain(tmp.path(), &leaf)
        .expect("write cert and key")
        .client_ca(
            write("client-ca.crt", client_ca.cert_pem()),
            ClientAuth::Required,
        );
    let client_files = ClientFiles::new(write("ca.crt", server_ca.cert_pem())).identity(
        write("client.crt", &client.cert_pem),
        write("client.key", &client.key_pem),
    );
    let (acceptor, server_watcher) = ReloadableAcceptor::builder(server_files)
        .start()
        .expect("start acceptor");
    let (reloadable, client_watcher) = ReloadableConnector::builder(client_files)
        .session_cache_size(if resume { 1024 } else { 0 })
        .start()
        .expect("start connector");
    // The baseline connects with the very same ClientConfig, without the
    // ArcSwap.
    let plain = TlsConnector::from(reloadable.client_config());
    let (listener, addr) = load::listen().await;
    let server = load::spawn_server(listener, Duration::from_secs(600), move |tcp| {
        acceptor.accept(tcp)
    });

    let arm = Arc::new(AtomicBool::new(false));
    let schedule = Schedule {
        rounds: s.pick(20, 1),
        pairs_per_round: s.pick(10, 3),
        slot: Duration::from_millis(100),
        guard: Duration::from_millis(5),
    };
    println!(
        "   {} client loops, one connector or the other per slot (the flag they read); {}",
        s.clients,
        schedule.describe()
    );
    let clients = {
        let (arm, reloadable, plain) = (arm.clone(), reloadable.clone(), plain.clone());
        Clients::run(s.clients, Duration::from_secs(120), move |_| {
            let (arm, reloadable, plain) = (arm.clone(), reloadable.clone(), plain.clone());
            async move {
                one(addr, &arm, &reloadable, &plain)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
    };
    tokio::time::sleep(s.pick(Duration::from_millis(500), Duration::from_millis(100))).await;
    let control = (!resume).then_some(s.pick(6, 1));
    let rounds = plain_vs_reloadable(&schedule, || clients.ok(), &arm, control).await;
    let counters = clients.stop().await;
    server.abort();
    client_watcher.shutdown().await;
    server_watcher.shutdown().await;

    let (failed, _, first_error) = counters.failures();
    let failures = format!("failed connections ({kind})");
    plain_vs_reloadable_rows(&figure, 8, rounds, (failed, first_error), &failures)
}
