#![allow(clippy::print_stderr, clippy::print_stdout)] // An example talks to its user.

//! Fetches a URL with hyper-util's `Client` over a connector whose client
//! certificate and trust bundle may change.
//!
//! ```text
//! cargo run -p tls-reload --example hyper_client --features testing,tower -- \
//!     https://localhost:8443/ CA_BUNDLE [CERT KEY]
//! ```
//!
//! It fetches the URL every 5 seconds; replace the files while it runs:
//! the next new connection presents the new certificate.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tls_reload::{ClientFiles, HttpsConnector, ReloadableConnector};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, files) = match args.as_slice() {
        [url, ca] => (url, ClientFiles::new(ca)),
        [url, ca, cert, key] => (url, ClientFiles::new(ca).identity(cert, key)),
        _ => {
            eprintln!("usage: hyper_client URL CA_BUNDLE [CERT KEY]");
            std::process::exit(2);
        }
    };

    // The whole adoption: build, keep the watcher, hand the connector over.
    let (connector, _watcher) = ReloadableConnector::builder(files)
        .alpn(["h2", "http/1.1"])
        .start()?;
    let mut changes = connector.changes();
    let mut client = new_client(&connector);

    loop {
        let response = client.get(url.parse()?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "{status} (generation {}): {}",
            connector.generation(),
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Pooled connections keep the old identity: after a change, start
        // a new pool so that every request uses the new one.
        if changes.has_changed()? {
            changes.borrow_and_update();
            client = new_client(&connector);
        }
    }
}

fn new_client(connector: &ReloadableConnector) -> Client<HttpsConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpsConnector::new(connector.clone()))
}
