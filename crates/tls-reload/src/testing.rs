//! Test support: certificates, a kubelet Secret-volume simulator, TLS
//! client helpers and bounded waits. Enabled by the `testing` feature; meant for tests and
//! benchmarks of this crate and of the crates built on it.
//!
//! Helpers here panic on failure, as test code does: a broken fixture is a
//! failed test, with the reason in the message.
//!
//! # Example
//!
//! A rotation seen the way a client sees it:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tls_reload::ReloadableAcceptor;
//! use tls_reload::testing::{SecretVolumes, client_config, eventually, handshake, serve};
//!
//! let mut volumes = SecretVolumes::new();
//! let (acceptor, _watcher) = ReloadableAcceptor::builder(volumes.files())
//!     .debounce(Duration::from_millis(50))
//!     .start()?;
//! let (addr, _server) = serve(acceptor).await;
//! let client = client_config(volumes.server_ca.cert_pem(), None);
//! assert_eq!(handshake(addr, client.clone()).await?.fingerprint, volumes.leaf.fingerprint);
//!
//! let renewed = volumes.rotate();
//! eventually(Duration::from_secs(10), "the renewed certificate served", || {
//!     let (client, want) = (client.clone(), renewed.fingerprint.clone());
//!     async move {
//!         let got = handshake(addr, client).await.map_err(|e| e.to_string())?;
//!         if got.fingerprint == want { Ok(()) } else { Err(got.fingerprint) }
//!     }
//! })
//! .await;
//! # Ok(())
//! # }
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod client;
mod kubelet;
mod loops;
mod pki;
mod volumes;
mod wait;

pub use client::{
    HandshakeInfo, client_config, handshake, key_possession_client, serve, serve_with,
    served_fingerprint, served_for_name,
};
pub use kubelet::AtomicWriter;
pub use loops::{RotationLoops, Tally};
pub use pki::{Leaf, LeafOptions, TestCa};
pub use volumes::SecretVolumes;
pub use wait::{POLL_EVERY, TimedOut, eventually, eventually_blocking, poll, poll_blocking};
