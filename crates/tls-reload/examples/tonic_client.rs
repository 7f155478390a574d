#![allow(clippy::print_stderr, clippy::print_stdout)] // An example talks to its user.

//! Calls the standard gRPC health service over tonic through a connector
//! whose client certificate and trust bundle may change.
//!
//! ```text
//! cargo run -p tls-reload --example tonic_client --features testing,tower -- \
//!     https://localhost:8443 CA_BUNDLE [CERT KEY]
//! ```
//!
//! It checks every 5 seconds, and moves to a new channel whenever the
//! connector's identity or trust changes.

use std::time::Duration;

use tls_reload::{ClientFiles, HttpsConnector, ReloadableConnector};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, files) = match args.as_slice() {
        [url, ca] => (url.clone(), ClientFiles::new(ca)),
        [url, ca, cert, key] => (url.clone(), ClientFiles::new(ca).identity(cert, key)),
        _ => {
            eprintln!("usage: tonic_client URL CA_BUNDLE [CERT KEY]");
            std::process::exit(2);
        }
    };

    // gRPC needs HTTP/2: offer it by ALPN. Tonic's own TLS stays off.
    let (connector, _watcher) = ReloadableConnector::builder(files).alpn(["h2"]).start()?;
    let endpoint = Endpoint::from_shared(url)?;
    let mut changes = connector.changes();

    loop {
        let channel = endpoint
            .connect_with_connector(HttpsConnector::new(connector.clone()))
            .await?;
        let mut health = HealthClient::new(channel);
        loop {
            let reply = health.check(HealthCheckRequest::default()).await?;
            println!(
                "generation {}: {:?}",
                connector.generation(),
                reply.into_inner().status()
            );
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                // A new identity or trust: reconnect with it.
                changed = changes.changed() => { changed?; break; }
            }
        }
    }
}
