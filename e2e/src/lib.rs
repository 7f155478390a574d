//! Drives the real `openshell-gateway` binary end to end: locally against a
//! kubelet-style Secret directory, and on a k3s cluster when
//! `OPENSHELL_E2E_KUBECONFIG` is set.
//!
//! The tests of `tls-reload` exercise the library in process; this crate
//! holds the gateway's: its APIs and connection limits in process
//! ([`openshell_server::Gateway::spawn`]), and what an operator sees: a
//! separate process with its real command line, files
//! swapped the way kubelet swaps them, a TLS client on the other side of a
//! socket, the OCSF audit lines and logs it writes, and, on a cluster, the
//! Helm chart with cert Secrets that get overwritten under a running pod.
//!
//! It does not measure performance (the `tls-bench` binary does) and does
//! not create clusters (`mise run helm:k3s:create` does).
//!
//! # Running the tests locally
//!
//! ```text
//! cargo test -p openshell-e2e          # or: mise run e2e
//! ```
//!
//! The local tests need nothing but the workspace: the gateway binary is
//! `OPENSHELL_GATEWAY_BIN` when set, else built once per test binary with
//! `escargot` ([`gateway_binary`]). They serve certificates from
//! temporary directories written by
//! [`AtomicWriter`](tls_reload::testing::AtomicWriter), as kubelet writes
//! Secret volumes, and talk to the gateway on loopback with a real TLS
//! client.
//!
//! * `tests/api.rs` (in process): gRPC health and reflection, the gateway
//!   API with and without client certificates, the HTTP routes over
//!   HTTP/1.1 and HTTP/2, metrics across reloads, plaintext mode, and every
//!   SNI identity in the status, metrics and audit.
//! * `tests/lifecycle.rs` (in process): first-request deadlines on both
//!   ports, the health port's connection cap, the shutdown delay and the
//!   drain's grace for open streams.
//! * `tests/dev_mode.rs`: `--dev` with a state directory owned by someone
//!   else, or open to others with keys others can read.
//! * `tests/sni.rs`: two identities from two kubelet-style volumes.
//! * `tests/trust.rs`: changes of client trust reaching open connections
//!   (a CA rollover, a new CRL, a client certificate expiring while
//!   connected), the per-CA usage in the status and metrics, and the
//!   audit event of each change.
//! * `tests/local.rs`: rotations of the server certificate and the client
//!   CA, failed reloads and their audit trail, and the process itself:
//!   signals, the shutdown drain, the handshake timeout, `--dev`, startup
//!   errors, log filters, an unwritable audit file, a low open-file limit
//!   and the plaintext health port.
//! * `tests/faults.rs`: the file faults whose effect only a process shows
//!   (a truncated PEM standing for every bad content, text after the END
//!   line, a 50 MiB file, a FIFO, a symlink loop, no permission, a deleted
//!   directory, a burst of unrelated files), each checking that the last
//!   good certificate stays served and that a new pair heals the gateway;
//!   under root its permission row runs the gateway as `nobody`
//!   ([`GatewayCommand::user`]). How bad content is refused is tested once,
//!   in process, by `tls-reload`.
//! * `tests/hardening.rs`: reload storms, hostile clients, and every output
//!   scanned for key material.
//! * `tests/pki.rs`: the whole PKI (server certificate, client
//!   certificate, a CA rollover on both sides) rotates under a long-lived
//!   mTLS client, the `mtls_client` example of `openshell-server` run as a
//!   second process ([`MtlsClientProcess`]), with no failed call and no
//!   restart of either side.
//! * `tests/k3s.rs`: prints why it is skipped and passes without a cluster.
//!
//! The OCSF lines are validated against the schema in `../shared/ocsf/v1.8.0`
//! when that directory exists ([`ocsf::check`]); otherwise the tests say
//! the validation was skipped. `tests/common` holds their time limits and
//! shared checks, and the in-process gateway's config.
//!
//! [`GatewayCommand`] starts the binary and [`GatewayProcess`] watches it
//! (its log, stderr and OCSF events, each wait bounded by
//! [`tls_reload::testing::poll`]); [`tls`] is the client side: served
//! fingerprints, one HTTP client on hyper for both HTTP versions over TLS
//! or in plaintext, and gRPC channels.
//!
//! # Running the tests on k3s
//!
//! ```text
//! mise run helm:k3s:create        # k3d cluster "openshell" with cert-manager
//! mise run helm:skaffold:run      # builds the gateway image and loads it into k3d
//! OPENSHELL_E2E_KUBECONFIG=$(k3d kubeconfig write openshell) \
//!     cargo test -p openshell-e2e --test k3s -- --nocapture
//! ```
//!
//! (`mise run e2e:k3s` does the last step.) The tests install the chart as
//! release `openshell` into `OPENSHELL_E2E_NAMESPACE` (default
//! `openshell-e2e`) with image `OPENSHELL_E2E_IMAGE`, or, when that is not
//! set, the image of the gateway that `helm:skaffold:run` deployed in
//! namespace `openshell`. Then they replay the manual rotation check:
//! overwrite the `openshell-server-tls` Secret with a new certificate and
//! key, wait for kubelet to project it, and compare the served fingerprint
//! with the Secret's, with no pod restart and a reload event in the pod's
//! logs. The release is left installed for inspection; `kubectl delete
//! namespace openshell-e2e` removes it.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use openshell_e2e::{GatewayCommand, tls};
//! use tls_reload::testing::{AtomicWriter, TestCa};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let ca = TestCa::new("server CA");
//! let leaf = ca.server();
//! let volume = AtomicWriter::new(tmp.path().join("server"))?;
//! volume.write(&[
//!     ("tls.crt", leaf.cert_pem.as_bytes()),
//!     ("tls.key", leaf.key_pem.as_bytes()),
//! ])?;
//!
//! let mut gateway = GatewayCommand::new()
//!     .args(["--bind", "127.0.0.1:0", "--tls-reload-debounce", "100ms"])
//!     .arg("--tls-cert")
//!     .arg(volume.path("tls.crt"))
//!     .arg("--tls-key")
//!     .arg(volume.path("tls.key"))
//!     .ocsf_log(tmp.path().join("audit.jsonl"))
//!     .spawn()?;
//! let addr = gateway.listening(Duration::from_secs(10)).await?;
//! let client = tls::client_config(ca.cert_pem(), None)?;
//! let served = tls::served_fingerprint(addr, client, Duration::from_secs(5)).await?;
//! assert_eq!(served, leaf.fingerprint);
//! # Ok(())
//! # }
//! ```
//!
//! # Known problems
//!
//! * Kubelet projects a changed Secret on its own schedule (up to about a
//!   minute and a half with default settings), so the k3s tests take
//!   minutes, and a cluster with a longer sync period fails them.
//! * The local tests start one gateway process each and run in parallel;
//!   every wait is bounded, so a gateway that never reloads fails within
//!   seconds.

#![deny(missing_docs)]

mod child;
pub mod command;
mod error;
mod gateway;
pub mod kube;
mod mtls_client;
pub mod ocsf;
pub mod tls;

pub use child::workspace_root;
pub use error::{Error, Result};
pub use gateway::{GATEWAY_BIN_ENV, GatewayCommand, GatewayProcess, gateway_binary};
pub use mtls_client::{MTLS_CLIENT_BIN_ENV, MtlsClientProcess, mtls_client_binary};

/// Writes a line to the test's stderr even when the test harness captures
/// output, so that a skipped check or the progress of a slow test shows in
/// `cargo test`'s output.
pub fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
