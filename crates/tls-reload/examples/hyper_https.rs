#![allow(clippy::print_stderr)] // An example talks to its user on stderr.

//! Serves HTTPS with hyper from certificate files that may change.
//!
//! ```text
//! cargo run -p tls-reload --example hyper_https --features testing
//! ```
//!
//! With no arguments it generates a throw-away CA and certificate in a
//! temporary directory and prints a curl command; give `CERT KEY` to serve
//! your own files. Replace the files while it runs: the next connection
//! gets the new certificate.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tls_reload::{ReloadableAcceptor, TlsFiles};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (_tmp, files) = match args.as_slice() {
        [cert, key] => (None, TlsFiles::new(cert, key)),
        _ => {
            let tmp = tempfile::tempdir()?;
            let ca = tls_reload::testing::TestCa::new("example CA");
            let leaf = ca.server();
            std::fs::write(tmp.path().join("ca.crt"), ca.cert_pem())?;
            std::fs::write(tmp.path().join("tls.crt"), &leaf.cert_pem)?;
            std::fs::write(tmp.path().join("tls.key"), &leaf.key_pem)?;
            let files = TlsFiles::new(tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
            (Some(tmp), files)
        }
    };

    // The whole adoption: build, keep the watcher, accept through it.
    let (acceptor, _watcher) = ReloadableAcceptor::builder(files.clone())
        .alpn(["h2", "http/1.1"])
        .start()?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
    let ca_hint = files.cert_path().with_file_name("ca.crt");
    eprintln!(
        "serving https://localhost:8443/ ; try: curl --cacert {} https://localhost:8443/",
        ca_hint.display()
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let fingerprint = acceptor.status().cert.fingerprint_sha256;
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = format!("hello over TLS; certificate {fingerprint}\n");
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
