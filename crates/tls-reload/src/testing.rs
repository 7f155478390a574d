//! Test support: certificates, a kubelet Secret-volume simulator, TLS
//! client helpers and bounded waits. Enabled by the `testing` feature; meant for tests and
//! benchmarks of this crate and of the crates built on it.
//!
//! Helpers here panic on failure, as test code does: a broken fixture is a
//! failed test, with the reason in the message.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod client;
mod kubelet;
mod pki;
mod volumes;
mod wait;

pub use client::{HandshakeInfo, client_config, handshake, serve, served_fingerprint};
pub use kubelet::AtomicWriter;
pub use pki::{Leaf, LeafOptions, TestCa};
pub use volumes::SecretVolumes;
pub use wait::{POLL_EVERY, TimedOut, eventually, eventually_blocking, poll, poll_blocking};
