//! The two Secret volumes a gateway pod mounts, as kubelet writes them.

use std::path::Path;

use tempfile::TempDir;

use super::{AtomicWriter, Leaf, TestCa};
use crate::{ClientAuth, ClientFiles, TlsFiles};

/// A server-certificate Secret volume and a client-CA Secret volume in a
/// temporary directory (removed on drop), with the CAs behind them.
///
/// `server` holds `tls.crt`, `tls.key` and `ca.crt`, as a cert-manager
/// `kubernetes.io/tls` Secret does; `client_ca_volume` holds `ca.crt`;
/// `client_volume`, a client's own Secret, holds the client certificate
/// (`tls.crt`, `tls.key`) and the server CA (`ca.crt`).
/// Every write goes through the kubelet sequence of [`AtomicWriter`].
///
/// # Example
///
/// ```
/// use tls_reload::ReloadableAcceptor;
/// use tls_reload::testing::SecretVolumes;
///
/// let mut volumes = SecretVolumes::new();
/// let acceptor = ReloadableAcceptor::builder(volumes.files()).build().unwrap();
/// assert_eq!(acceptor.status().cert.fingerprint_sha256, volumes.leaf.fingerprint);
/// let renewed = volumes.rotate(); // a new leaf, published as kubelet does
/// assert_ne!(renewed.fingerprint, acceptor.status().cert.fingerprint_sha256.to_string());
/// ```
#[derive(Debug)]
pub struct SecretVolumes {
    tmp: TempDir,
    /// Issues the server certificates.
    pub server_ca: TestCa,
    /// The CA clients must chain to.
    pub client_ca: TestCa,
    /// `<dir>/server`.
    pub server: AtomicWriter,
    /// `<dir>/client-ca`.
    pub client_ca_volume: AtomicWriter,
    /// `<dir>/client`: what a client of the server mounts.
    pub client_volume: AtomicWriter,
    /// The server certificate published last through [`rotate`](Self::rotate)
    /// (initially the one published by [`new`](Self::new)).
    pub leaf: Leaf,
    /// A client certificate issued by `client_ca`.
    pub client: Leaf,
}

impl SecretVolumes {
    /// Both volumes, populated: a fresh server leaf and the client CA.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let server_ca = TestCa::new("server CA");
        let client_ca = TestCa::new("client CA");
        let server = AtomicWriter::new(tmp.path().join("server")).expect("server volume");
        let client_ca_volume =
            AtomicWriter::new(tmp.path().join("client-ca")).expect("client CA volume");
        let client_volume = AtomicWriter::new(tmp.path().join("client")).expect("client volume");
        let leaf = server_ca.server();
        let client = client_ca.client("client");
        let volumes = Self {
            tmp,
            server_ca,
            client_ca,
            server,
            client_ca_volume,
            client_volume,
            leaf,
            client,
        };
        volumes.publish_leaf(&volumes.leaf);
        volumes.publish_client_ca(volumes.client_ca.cert_pem());
        volumes.publish_client(&volumes.client, volumes.server_ca.cert_pem());
        volumes
    }

    /// The temporary directory holding both volumes (and room for more
    /// files, such as an audit log).
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// One kubelet update of the server volume with these bytes, valid or
    /// not.
    pub fn publish(&self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) {
        self.server
            .write(&[
                ("tls.crt", cert.as_ref()),
                ("tls.key", key.as_ref()),
                ("ca.crt", self.server_ca.cert_pem().as_bytes()),
            ])
            .expect("write the server volume");
    }

    /// Publishes `leaf` and its key.
    pub fn publish_leaf(&self, leaf: &Leaf) {
        self.publish(&leaf.cert_pem, &leaf.key_pem);
    }

    /// Issues a new server leaf (new key), publishes it and remembers it as
    /// [`leaf`](Self::leaf).
    pub fn rotate(&mut self) -> Leaf {
        let leaf = self.server_ca.server();
        self.publish_leaf(&leaf);
        self.leaf = leaf.clone();
        leaf
    }

    /// One kubelet update of the client-CA volume.
    pub fn publish_client_ca(&self, bundle: impl AsRef<[u8]>) {
        self.client_ca_volume
            .write(&[("ca.crt", bundle.as_ref())])
            .expect("write the client CA volume");
    }

    /// One kubelet update of the client volume: `leaf` as the client
    /// certificate and `trust` as its trust bundle.
    pub fn publish_client(&self, leaf: &Leaf, trust: impl AsRef<[u8]>) {
        self.client_volume
            .write(&[
                ("tls.crt", leaf.cert_pem.as_bytes()),
                ("tls.key", leaf.key_pem.as_bytes()),
                ("ca.crt", trust.as_ref()),
            ])
            .expect("write the client volume");
    }

    /// The client volume as a client with a certificate (mutual TLS) is
    /// configured with it: the trust bundle and the identity.
    pub fn client_files(&self) -> ClientFiles {
        ClientFiles::new(self.client_volume.path("ca.crt")).identity(
            self.client_volume.path("tls.crt"),
            self.client_volume.path("tls.key"),
        )
    }

    /// The server certificate and key, as a server is configured with them.
    pub fn files(&self) -> TlsFiles {
        TlsFiles::new(self.server.path("tls.crt"), self.server.path("tls.key"))
    }

    /// [`files`](Self::files) plus the client CA in the given mode.
    pub fn mtls_files(&self, mode: ClientAuth) -> TlsFiles {
        self.files()
            .client_ca(self.client_ca_volume.path("ca.crt"), mode)
    }
}

impl Default for SecretVolumes {
    fn default() -> Self {
        Self::new()
    }
}
