//! The server side of the reload engine ([`crate::engine`]): the
//! identities (the default first, which also carries the client trust),
//! each with its own pair, one `rustls::ServerConfig` selecting among them
//! by name, and what a server reload reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;

use crate::config::{LoadOptions, TlsFiles};
use crate::engine::{Engine, Failed, Served, Side, check_validity, failed};
use crate::error::Error;
use crate::event::{IdentityStatus, ReloadOutcome, Reloaded, TlsStatus, Trigger};
use crate::info::CertInfo;
use crate::load::{Digest, Inputs, Parsed, Resumption};
use crate::sni::{IdentitySpec, SniIdentity, SniResolver, covered_by};

/// One identity's served pair and what it was loaded from.
pub(crate) struct Pair {
    certified_key: Arc<CertifiedKey>,
    cert: CertInfo,
    chain_len: usize,
    loaded_at: SystemTime,
    /// Digest of the identity's files (for the default identity, client
    /// trust included).
    content_hash: Digest,
}

/// Which clients are trusted: from the default identity's files.
pub(crate) struct Trust {
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    client_ca: Vec<CertInfo>,
    hash: Digest,
    client: Option<Arc<crate::trust::ClientTrust>>,
}

impl Trust {
    /// Keeps the usage counts of the CAs `previous` trusted too.
    fn inherit_usage(mut self, previous: &Trust) -> Self {
        if let (Some(new), Some(old)) = (
            self.client.as_mut().and_then(Arc::get_mut),
            &previous.client,
        ) {
            new.inherit_usage(old);
        }
        self
    }
}

/// The server side: what every attempt loads with (the identities,
/// default first, the options and the crypto provider).
pub(crate) struct ServerSide {
    /// The default identity's files (and client trust).
    pub(crate) files: TlsFiles,
    specs: Vec<IdentitySpec>,
    load: LoadOptions,
    provider: Arc<CryptoProvider>,
}

/// State shared by every clone of an acceptor and its watcher.
pub(crate) type Shared = Engine<ServerSide>;

impl Side for ServerSide {
    type Config = ServerConfig;
    type Pair = Pair;
    type Trust = Trust;
    type Read = Inputs;

    fn options(&self) -> &LoadOptions {
        &self.load
    }

    fn units(&self) -> usize {
        self.specs.len()
    }

    fn label(&self, i: usize) -> &str {
        &self.specs[i].label
    }

    fn timeout_dir(&self) -> PathBuf {
        self.files
            .cert
            .parent()
            .map_or_else(|| self.files.cert.clone(), Path::to_path_buf)
    }

    /// Reads identity `i`'s files; the digest tells whether they are those
    /// served.
    fn read(&self, i: usize) -> Result<(Inputs, Digest), Failed> {
        let files = &self.specs[i].files;
        let inputs = Inputs::read(files, self.load.max_file_size).map_err(failed)?;
        let hash = inputs.content_hash(files.client_auth);
        Ok((inputs, hash))
    }

    /// Parses and checks what [`read`](Self::read) gave for identity `i`:
    /// the pair matches, the leaf covers the identity's names and, when
    /// `served` is given, passes the expiry policy against the served
    /// leaf. Returns the pair and the trust (which only the default
    /// identity's files carry).
    fn check(
        &self,
        i: usize,
        (inputs, content_hash): (Inputs, Digest),
        served: Option<&Pair>,
    ) -> Result<(Pair, Trust), Failed> {
        let spec = &self.specs[i];
        let files = &spec.files;
        let checked = Parsed::parse(files, &inputs, &self.provider).and_then(|parsed| {
            if let Some(served) = served {
                check_validity(&files.cert, &self.load, &served.cert, &parsed.cert)?;
            }
            check_names(spec, &parsed.cert)?;
            Ok(parsed)
        });
        let parsed = checked.map_err(|e| Box::new((e, content_hash)))?;
        Ok((
            Pair {
                chain_len: parsed.certified_key.cert.len(),
                certified_key: parsed.certified_key,
                cert: parsed.cert,
                loaded_at: SystemTime::now(),
                content_hash,
            },
            Trust {
                verifier: parsed.verifier,
                client_ca: parsed.client_ca,
                hash: inputs.trust_hash(files.client_auth),
                client: parsed.client_trust.map(Arc::new),
            },
        ))
    }

    /// The usage counts of the CAs trusted before carry over.
    fn next_trust(&self, next: Trust, published: &Trust) -> Trust {
        next.inherit_usage(published)
    }

    fn content_hash(pair: &Pair) -> &Digest {
        &pair.content_hash
    }

    fn leaf<'a>(&'a self, i: usize, pair: &'a Pair) -> Option<(&'a Path, &'a CertInfo)> {
        Some((&self.specs[i].files.cert, &pair.cert))
    }

    /// Builds the config serving `pairs` (one per identity, default
    /// first): an immutable resolver over them. Sessions resume across a
    /// certificate-only change, never across a change of client trust.
    fn config(
        &self,
        pairs: &[Arc<Pair>],
        trust: &Arc<Trust>,
        previous: Option<&Served<Self>>,
    ) -> Result<ServerConfig, Error> {
        let resumption = match previous {
            Some(previous) if previous.trust.hash == trust.hash => Resumption::of(&previous.config),
            _ => Resumption::fresh(self.load.session_cache_size)?,
        };
        let resolver = SniResolver::new(
            pairs[0].certified_key.clone(),
            self.specs
                .iter()
                .zip(pairs)
                .skip(1)
                .map(|(spec, pair)| (spec.names.as_slice(), pair.certified_key.clone())),
        );
        crate::load::server_config(
            &self.provider,
            &self.load,
            trust.verifier.as_ref(),
            Arc::new(resolver),
            resumption,
        )
    }

    fn reloaded(
        &self,
        trigger: Trigger,
        i: usize,
        previous: &Served<Self>,
        next: &Served<Self>,
    ) -> ReloadOutcome {
        let reloaded = Arc::new(Reloaded {
            trigger,
            identity: self.specs[i].label.clone(),
            generation: next.generation,
            previous: previous.pairs[i].cert.clone(),
            current: next.pairs[i].cert.clone(),
            client_ca: next.trust.client_ca.clone(),
            trust_changed: i == 0 && next.trust.hash != previous.trust.hash,
            at: next.pairs[i].loaded_at,
        });
        tracing::info!(
            trigger = %trigger,
            identity = %reloaded.identity,
            generation = next.generation,
            fingerprint = %reloaded.current.fingerprint_sha256,
            previous_fingerprint = %reloaded.previous.fingerprint_sha256,
            trust_changed = reloaded.trust_changed,
            "TLS config reloaded"
        );
        ReloadOutcome::Reloaded(reloaded)
    }
}

/// Every configured name of an SNI identity must be covered by its leaf.
fn check_names(spec: &IdentitySpec, cert: &CertInfo) -> Result<(), Error> {
    match spec.names.iter().find(|n| !covered_by(n, &cert.dns_names)) {
        Some(name) => Err(Error::NameNotCovered {
            identity: spec.label.clone(),
            name: name.clone(),
            path: spec.files.cert.clone(),
            dns_names: cert.dns_names.clone(),
        }),
        None => Ok(()),
    }
}

impl Shared {
    /// Loads the files of every identity for the first time: generation 1.
    /// An expired leaf is served (and logged at error level) so that a
    /// renewal can heal the server; a missing or invalid file, or a leaf
    /// that does not cover its identity's names, fails.
    pub(crate) fn load_server(
        files: TlsFiles,
        sni: &[SniIdentity],
        load: LoadOptions,
    ) -> Result<Self, Error> {
        files.check()?;
        Engine::load(ServerSide {
            specs: IdentitySpec::all(&files, sni).map_err(Error::Settings)?,
            files,
            load,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The default identity's files (and client trust).
    pub(crate) fn files(&self) -> &TlsFiles {
        &self.side.files
    }

    /// The config served right now.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.served().config.clone()
    }

    /// The client trust served right now.
    pub(crate) fn client_trust(&self) -> Option<Arc<crate::trust::ClientTrust>> {
        self.served().trust.client.clone()
    }

    /// The generation and default leaf served right now.
    pub(crate) fn served_cert(&self) -> (u64, CertInfo) {
        let served = self.served();
        (served.generation, served.pairs[0].cert.clone())
    }

    /// What is served and how reloading has gone.
    pub(crate) fn status(&self) -> TlsStatus {
        let served = self.served();
        let default = &served.pairs[0];
        let now = SystemTime::now();
        let history = self.history();
        TlsStatus {
            generation: served.generation,
            cert: default.cert.clone(),
            chain_len: default.chain_len,
            client_ca: served.trust.client_ca.clone(),
            client_auth: self.side.files.client_auth,
            loaded_at: default.loaded_at,
            last_attempt: history.last_attempt,
            reloads_succeeded: history.reloads_succeeded,
            reloads_failed: history.reloads_failed,
            watcher: history.watcher,
            by_trigger: history.by_trigger,
            identities: self
                .side
                .specs
                .iter()
                .zip(&served.pairs)
                .zip(history.units)
                .map(|((spec, pair), last_attempt)| IdentityStatus {
                    label: spec.label.clone(),
                    names: spec.names.clone(),
                    cert: pair.cert.clone(),
                    chain_len: pair.chain_len,
                    loaded_at: pair.loaded_at,
                    last_attempt,
                    renewal_overdue: now >= pair.cert.renewal_due(),
                })
                .collect(),
        }
    }
}
