//! The client side of the reload engine ([`crate::engine`]): one unit of
//! files (the trust bundles and, for mutual TLS, the client's certificate
//! and key) that becomes a `rustls::ClientConfig`.
//!
//! Every new config gets a fresh session store: a session made under a
//! client certificate or a trust that changed never resumes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use zeroize::Zeroizing;

use crate::config::{ClientFiles, LoadOptions};
use crate::engine::{Engine, Failed, Served, Side, check_validity, failed};
use crate::error::{Error, FileRole};
use crate::event::{ClientReloaded, ReloadOutcome, Trigger};
use crate::info::CertInfo;
use crate::load::{
    Digest, absorb, add_roots, cert_infos, digest_of, parse_chain, parse_pair, read_files,
};

/// The label of a client's files in events and logs
/// ([`ReloadFailure::identity`](crate::ReloadFailure::identity),
/// [`RenewalOverdue::identity`](crate::RenewalOverdue::identity)).
pub const CLIENT_IDENTITY: &str = "client";

/// The client certificate in use.
pub(crate) struct Identity {
    pub(crate) certified_key: Arc<CertifiedKey>,
    pub(crate) cert: CertInfo,
}

/// What the client's files gave.
pub(crate) struct ClientPair {
    pub(crate) identity: Option<Identity>,
    pub(crate) loaded_at: SystemTime,
    content_hash: Digest,
}

/// The CAs servers are verified against (what this client trusts).
pub(crate) struct ServerTrust {
    verifier: Arc<WebPkiServerVerifier>,
    pub(crate) trusted: Vec<CertInfo>,
    hash: Digest,
}

/// The raw bytes of the client's files, in [`ClientFiles::paths`] order.
pub(crate) struct ClientRead(Vec<Zeroizing<Vec<u8>>>);

/// The client side: its files, the options and the crypto provider.
pub(crate) struct ClientSide {
    pub(crate) files: ClientFiles,
    load: LoadOptions,
    provider: Arc<CryptoProvider>,
}

/// State shared by every clone of a connector and its watcher.
pub(crate) type ClientEngine = Engine<ClientSide>;

impl ClientEngine {
    /// Loads the client's files for the first time: generation 1.
    pub(crate) fn load_client(files: ClientFiles, load: LoadOptions) -> Result<Self, Error> {
        Engine::load(ClientSide {
            files,
            load,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }
}

impl ClientSide {
    fn roles(&self) -> Vec<(FileRole, &Path)> {
        let mut roles: Vec<_> = self
            .files
            .cas
            .iter()
            .map(|p| (FileRole::TrustBundle, p.as_path()))
            .collect();
        if let Some((cert, key)) = &self.files.identity {
            roles.push((FileRole::Certificate, cert));
            roles.push((FileRole::PrivateKey, key));
        }
        roles
    }

    /// Parses the trust bundles into a verifier.
    fn trust(&self, bundles: &[Zeroizing<Vec<u8>>]) -> Result<ServerTrust, Error> {
        let role = FileRole::TrustBundle;
        let mut roots = RootCertStore::empty();
        let mut trusted = Vec::new();
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        for (path, bytes) in self.files.cas.iter().zip(bundles) {
            absorb(&mut hash, b"ca", Some(bytes));
            let cas = parse_chain(role, path, bytes)?;
            trusted.extend(cert_infos(role, path, &cas)?);
            add_roots(&mut roots, role, path, cas)?;
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|cause| Error::ServerVerifier {
                    path: self.files.cas.first().cloned().unwrap_or_default(),
                    cause,
                })?;
        Ok(ServerTrust {
            verifier,
            trusted,
            hash: digest_of(hash),
        })
    }
}

impl Side for ClientSide {
    type Config = ClientConfig;
    type Pair = ClientPair;
    type Trust = ServerTrust;
    type Read = ClientRead;

    fn options(&self) -> &LoadOptions {
        &self.load
    }

    fn units(&self) -> usize {
        1
    }

    fn label(&self, _: usize) -> &str {
        CLIENT_IDENTITY
    }

    fn timeout_dir(&self) -> PathBuf {
        let first = self
            .files
            .identity
            .as_ref()
            .map_or(self.files.cas.first(), |(cert, _)| Some(cert));
        first
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn read(&self, _: usize) -> Result<(ClientRead, Digest), Failed> {
        let read = read_files(&self.roles(), self.load.max_file_size).map_err(failed)?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        for (i, bytes) in read.iter().enumerate() {
            let tag: &[u8] = if i < self.files.cas.len() {
                b"ca"
            } else {
                b"identity"
            };
            absorb(&mut hash, tag, Some(bytes));
        }
        Ok((ClientRead(read), digest_of(hash)))
    }

    /// The trust bundles parse into a verifier; the client pair (if any)
    /// matches and, when replacing one in use, passes the expiry policy.
    fn check(
        &self,
        _: usize,
        (ClientRead(read), content_hash): (ClientRead, Digest),
        served: Option<&ClientPair>,
    ) -> Result<(ClientPair, ServerTrust), Failed> {
        let (bundles, identity) = read.split_at(self.files.cas.len().min(read.len()));
        let checked = self.trust(bundles).and_then(|trust| {
            let identity = match (&self.files.identity, identity) {
                (Some((cert_path, key_path)), [cert, key]) => {
                    let (certified_key, cert) = parse_pair(cert_path, cert, key_path, key)?;
                    if let Some(served) = served.and_then(|p| p.identity.as_ref()) {
                        check_validity(cert_path, &self.load, &served.cert, &cert)?;
                    }
                    Some(Identity {
                        certified_key,
                        cert,
                    })
                }
                _ => None,
            };
            Ok((identity, trust))
        });
        let (identity, trust) = checked.map_err(|e| Box::new((e, content_hash)))?;
        Ok((
            ClientPair {
                identity,
                loaded_at: SystemTime::now(),
                content_hash,
            },
            trust,
        ))
    }

    fn content_hash(pair: &ClientPair) -> &Digest {
        &pair.content_hash
    }

    fn leaf<'a>(&'a self, _: usize, pair: &'a ClientPair) -> Option<(&'a Path, &'a CertInfo)> {
        let (cert_path, _) = self.files.identity.as_ref()?;
        Some((cert_path, &pair.identity.as_ref()?.cert))
    }

    /// A new config with a fresh session store, so that nothing resumes
    /// across a change of identity or trust.
    fn config(
        &self,
        pairs: &[Arc<ClientPair>],
        trust: &Arc<ServerTrust>,
        _previous: Option<&Served<Self>>,
    ) -> Result<ClientConfig, Error> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_webpki_verifier(trust.verifier.clone());
        let identity = pairs.first().and_then(|p| p.identity.as_ref());
        let mut config = match identity {
            Some(identity) => {
                builder.with_client_cert_resolver(Arc::new(Present(identity.certified_key.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.load.alpn.clone();
        config.resumption = match self.load.session_cache_size {
            0 => rustls::client::Resumption::disabled(),
            sessions => rustls::client::Resumption::in_memory_sessions(sessions),
        };
        Ok(config)
    }

    fn reloaded(
        &self,
        trigger: Trigger,
        _: usize,
        previous: &Served<Self>,
        next: &Served<Self>,
    ) -> ReloadOutcome {
        let leaf = |s: &Served<Self>| s.pairs[0].identity.as_ref().map(|i| i.cert.clone());
        let (before, after) = (leaf(previous), leaf(next));
        let fingerprint = |c: &Option<CertInfo>| c.as_ref().map(|c| c.fingerprint_sha256.clone());
        let reloaded = Arc::new(ClientReloaded {
            trigger,
            generation: next.generation,
            identity_changed: fingerprint(&before) != fingerprint(&after),
            trust_changed: previous.trust.hash != next.trust.hash,
            previous: before,
            current: after,
            trusted: next.trust.trusted.clone(),
            at: next.pairs[0].loaded_at,
        });
        tracing::info!(
            trigger = %trigger,
            identity = CLIENT_IDENTITY,
            generation = next.generation,
            fingerprint = ?reloaded.current.as_ref().map(|c| c.fingerprint_sha256.to_string()),
            previous_fingerprint = ?reloaded.previous.as_ref().map(|c| c.fingerprint_sha256.to_string()),
            identity_changed = reloaded.identity_changed,
            trust_changed = reloaded.trust_changed,
            "TLS client config reloaded"
        );
        ReloadOutcome::ClientReloaded(reloaded)
    }
}

/// Presents one certificate to every server that asks.
#[derive(Debug)]
struct Present(Arc<CertifiedKey>);

impl ResolvesClientCert for Present {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
