//! The OpenShell gateway: gRPC (tonic) and HTTP on one TLS port, with the
//! certificate, key and client CA reloaded from disk as they change.
//!
//! The binary `openshell-gateway` parses a [`Config`] and calls [`run`].
//! Embedders and tests use [`Gateway`] directly:
//!
//! ```no_run
//! use openshell_server::{Config, Gateway};
//! use tls_reload::TlsFiles;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let files = TlsFiles::new("/etc/openshell-tls/server/tls.crt", "/etc/openshell-tls/server/tls.key");
//! let gateway = Gateway::bind(Config::with_tls("127.0.0.1:8443".parse()?, files)).await?;
//! gateway.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! What it serves on the main port (TLS with ALPN `h2` and `http/1.1`):
//!
//! * gRPC (requests with `content-type: application/grpc*`, HTTP/2):
//!   `grpc.health.v1.Health`, server reflection, and
//!   `openshell.gateway.v1.Gateway` (`GetTlsStatus`, `ReloadTls`, `WhoAmI`);
//! * HTTP: `/healthz`, `/readyz`, `/metrics` (Prometheus), `/v1/tls` (JSON).
//!
//! The optional plaintext health port serves `/healthz` and `/readyz` only.

#![deny(missing_docs)]

mod accept;
mod audit;
mod config;
mod dev;
mod error;
mod gateway;
mod grpc_api;
mod http_api;
mod metrics;
mod multiplex;
mod state;
mod telemetry;
mod trust;

pub use config::{Config, LogFormat, OcsfTarget, ReloadSettings, TlsMode};
pub use error::{Error, Result};
pub use gateway::{Gateway, GatewayHandle, run};
pub use grpc_api::pb;
pub use telemetry::init as init_telemetry;
