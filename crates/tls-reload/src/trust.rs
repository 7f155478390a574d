//! The client trust of one served config, as a value a server can hold:
//! to check again, after a change of trust, the chains its open
//! connections presented, and to learn which trusted CA each client uses.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::config::ClientAuth;
use crate::fingerprint::Fingerprint;
use crate::info::CertInfo;

/// Which clients a served config trusts: its client-auth mode, its CA
/// bundle and its CRLs, with the verifier its handshakes use.
///
/// Get the one served now from
/// [`ReloadableAcceptor::client_trust`](crate::ReloadableAcceptor::client_trust).
/// A reload that changes the client trust ([`Reloaded::trust_changed`])
/// serves a new `ClientTrust`; one held from before keeps describing the
/// old trust, so a server can compare the two ([`diff`](Self::diff)) and
/// check each open connection's chain again with the new one
/// ([`verify`](Self::verify)).
///
/// Each trusted CA counts the handshakes attributed to it
/// ([`record_handshake`](Self::record_handshake)) and when it was last
/// used. The counts live as long as the CA stays in the bundle: a reload
/// that keeps a CA (same certificate, by fingerprint) keeps its counts, so
/// "the old CA has had no client since" is a question the status answers
/// across any number of reloads. They are bounded by the bundle, never by
/// the number of clients.
///
/// # Example
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let volumes = tls_reload::testing::SecretVolumes::new();
/// use std::time::SystemTime;
/// use tls_reload::{ClientAuth, ReloadableAcceptor};
///
/// let acceptor = ReloadableAcceptor::builder(volumes.mtls_files(ClientAuth::Required)).build()?;
/// let trust = acceptor.client_trust().ok_or("no client trust")?;
/// let chain = [volumes.client.cert_der.clone()]; // what a client presented
/// trust.verify(&chain, SystemTime::now())?;
/// let ca = trust.record_handshake(&chain).ok_or("not attributed")?;
/// assert_eq!(ca.cert().fingerprint_sha256, tls_reload::Fingerprint::of(volumes.client_ca.cert_der()));
/// assert_eq!(ca.handshakes(), 1);
/// # Ok(())
/// # }
/// ```
///
/// [`Reloaded::trust_changed`]: crate::Reloaded::trust_changed
pub struct ClientTrust {
    mode: ClientAuth,
    verifier: Arc<dyn ClientCertVerifier>,
    cas: Vec<TrustedCa>,
    /// Digest of the CRLs, in order.
    crls: Fingerprint,
    crl_count: usize,
    /// Every (issuer name, serial) the CRLs list, both DER.
    revoked: HashSet<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ClientTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTrust")
            .field("mode", &self.mode)
            .field("cas", &self.cas)
            .field("crls", &self.crl_count)
            .finish_non_exhaustive()
    }
}

/// One CA certificate of the client CA bundle, with its usage.
pub struct TrustedCa {
    info: CertInfo,
    short: String,
    der: CertificateDer<'static>,
    /// Its SubjectKeyIdentifier, when it has one.
    key_id: Option<Vec<u8>>,
    /// Its subject, DER.
    subject: Vec<u8>,
    /// A verifier trusting this CA alone (no CRLs), to tell apart CAs that
    /// a chain cannot be attributed to by name or key identifier.
    alone: Option<Arc<dyn ClientCertVerifier>>,
    usage: Arc<Usage>,
}

impl fmt::Debug for TrustedCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedCa")
            .field("fingerprint", &self.info.fingerprint_sha256)
            .field("subject", &self.info.subject)
            .field("handshakes", &self.handshakes())
            .finish_non_exhaustive()
    }
}

/// Handshakes attributed to a CA and the last one's time.
#[derive(Debug, Default)]
struct Usage {
    handshakes: AtomicU64,
    /// Milliseconds since the Unix epoch; 0 for never.
    last_used_ms: AtomicU64,
}

/// How two [`ClientTrust`]s differ, from [`ClientTrust::diff`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TrustDiff {
    /// CAs trusted now and not before.
    pub added: Vec<CertInfo>,
    /// CAs trusted before and not now.
    pub removed: Vec<CertInfo>,
    /// Whether the CRLs differ (any byte, any order).
    pub crls_changed: bool,
    /// Whether the client-auth mode differs.
    pub mode_changed: bool,
}

impl TrustDiff {
    /// Whether a chain that verified under the old trust may fail under
    /// the new one: a CA was removed, the CRLs or the mode changed. Adding
    /// CAs alone never invalidates a chain.
    pub fn may_invalidate(&self) -> bool {
        !self.removed.is_empty() || self.crls_changed || self.mode_changed
    }
}

/// The certificates CRLs list as revoked, by issuer name and serial.
#[derive(Default)]
pub(crate) struct Revoked(HashSet<(Vec<u8>, Vec<u8>)>);

impl Revoked {
    /// Adds the entries of one CRL.
    pub(crate) fn add(&mut self, crl: &CertificateRevocationList<'_>) {
        let issuer = crl.issuer().as_raw();
        for entry in crl.iter_revoked_certificates() {
            self.0
                .insert((issuer.to_vec(), entry.raw_serial().to_vec()));
        }
    }
}

impl ClientTrust {
    /// The trust of a config built from these parts: `verifier` was built
    /// from `cas` (parsed as `infos`, in the same order) and `crls` (which
    /// list `revoked`).
    pub(crate) fn new(
        mode: ClientAuth,
        verifier: Arc<dyn ClientCertVerifier>,
        cas: &[CertificateDer<'static>],
        infos: &[CertInfo],
        crls: &[CertificateRevocationListDer<'static>],
        revoked: Revoked,
        provider: &Arc<CryptoProvider>,
    ) -> Self {
        // A CA listed twice (bundles concatenated during a rollover) is
        // one CA, counted once.
        let mut seen = HashSet::new();
        let cas = cas
            .iter()
            .zip(infos)
            .filter(|(_, info)| seen.insert(info.fingerprint_sha256.clone()))
            .map(|(der, info)| TrustedCa::new(der.clone(), info.clone(), provider))
            .collect();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for crl in crls {
            ctx.update(&(crl.len() as u64).to_be_bytes());
            ctx.update(crl);
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ctx.finish().as_ref());
        Self {
            mode,
            verifier,
            cas,
            crls: Fingerprint::from_bytes(digest),
            crl_count: crls.len(),
            revoked: revoked.0,
        }
    }

    /// Shares the usage counts of every CA that `previous` trusted too, so
    /// that counts survive reloads that keep the CA.
    pub(crate) fn inherit_usage(&mut self, previous: &ClientTrust) {
        for ca in &mut self.cas {
            if let Some(old) = previous.find(&ca.info.fingerprint_sha256) {
                ca.usage = old.usage.clone();
            }
        }
    }

    /// The verifier handshakes under this trust use.
    pub(crate) fn verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.verifier
    }

    /// The client authentication mode.
    pub fn mode(&self) -> ClientAuth {
        self.mode
    }

    /// The trusted CA certificates, in bundle order.
    pub fn cas(&self) -> &[TrustedCa] {
        &self.cas
    }

    /// The number of CRLs checked.
    pub fn crl_count(&self) -> usize {
        self.crl_count
    }

    /// The trusted CA with this fingerprint.
    pub fn find(&self, fingerprint: &Fingerprint) -> Option<&TrustedCa> {
        self.cas
            .iter()
            .find(|ca| ca.info.fingerprint_sha256 == *fingerprint)
    }

    /// Checks `chain` (leaf first, as the client presented it) as a
    /// handshake under this trust would at `now`: it chains to a trusted
    /// CA, no certificate of it is revoked by the CRLs, and each is within
    /// its validity.
    ///
    /// # Errors
    ///
    /// The verifier's error; [`rustls::Error::NoCertificatesPresented`]
    /// for an empty chain.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), rustls::Error> {
        verify_with(&*self.verifier, chain, now)
    }

    /// Whether a CRL lists a certificate of `chain` (by issuer name and
    /// serial). A quick look to order work, not a verification:
    /// [`verify`](Self::verify) decides, and may refuse chains this does
    /// not flag (a CA removed, a CRL missing for an issuer).
    pub fn lists_as_revoked(&self, chain: &[CertificateDer<'_>]) -> bool {
        !self.revoked.is_empty()
            && chain.iter().any(|der| {
                X509Certificate::from_der(der).is_ok_and(|(_, cert)| {
                    let key = (
                        cert.issuer().as_raw().to_vec(),
                        cert.tbs_certificate.raw_serial().to_vec(),
                    );
                    self.revoked.contains(&key)
                })
            })
    }

    /// The trusted CA that `chain` (leaf first, as presented) ends at,
    /// when there is one.
    ///
    /// Walking from the leaf, each certificate's issuer is looked for
    /// among the trusted CAs: by AuthorityKeyIdentifier against their
    /// SubjectKeyIdentifiers, else by issuer name against their subjects;
    /// when several CAs match (a CA renewed under the same name and key
    /// identifiers missing), the one the chain verifies with is taken. A
    /// chain that includes a trusted CA certificate itself ends there.
    /// The first certificate issued by a trusted CA decides, as it does in
    /// path building.
    pub fn issuer_of(&self, chain: &[CertificateDer<'_>]) -> Option<&TrustedCa> {
        for der in chain {
            if let Some(ca) = self.cas.iter().find(|ca| ca.der.as_ref() == der.as_ref()) {
                return Some(ca);
            }
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                return None;
            };
            let aki = authority_key_id(&cert);
            let issuer = cert.issuer().as_raw();
            let mut candidates = self.cas.iter().filter(|ca| match (aki, &ca.key_id) {
                (Some(aki), Some(ski)) => aki == ski.as_slice(),
                _ => ca.subject == issuer,
            });
            let Some(first) = candidates.next() else {
                continue;
            };
            let Some(second) = candidates.next() else {
                return Some(first);
            };
            // Ambiguous: the signature decides.
            let now = SystemTime::now();
            return [first, second].into_iter().chain(candidates).find(|ca| {
                ca.alone
                    .as_ref()
                    .is_some_and(|v| verify_with(&**v, chain, now).is_ok())
            });
        }
        None
    }

    /// [`issuer_of`](Self::issuer_of), counting the handshake for that CA
    /// and recording now as its last use. Two atomic stores and no
    /// allocation beyond parsing the chain's certificates (without
    /// copying them).
    pub fn record_handshake(&self, chain: &[CertificateDer<'_>]) -> Option<&TrustedCa> {
        let ca = self.issuer_of(chain)?;
        ca.usage.handshakes.fetch_add(1, Ordering::Relaxed);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ca.usage.last_used_ms.fetch_max(ms, Ordering::Relaxed);
        Some(ca)
    }

    /// How this trust differs from `previous`: CAs added and removed (by
    /// fingerprint), and whether the CRLs or the mode changed.
    pub fn diff(&self, previous: &ClientTrust) -> TrustDiff {
        let missing_from = |trust: &ClientTrust, cas: &[TrustedCa]| -> Vec<CertInfo> {
            cas.iter()
                .filter(|ca| trust.find(&ca.info.fingerprint_sha256).is_none())
                .map(|ca| ca.info.clone())
                .collect()
        };
        TrustDiff {
            added: missing_from(previous, &self.cas),
            removed: missing_from(self, &previous.cas),
            crls_changed: self.crls != previous.crls,
            mode_changed: self.mode != previous.mode,
        }
    }
}

impl TrustedCa {
    fn new(der: CertificateDer<'static>, info: CertInfo, provider: &Arc<CryptoProvider>) -> Self {
        let (key_id, subject) = match X509Certificate::from_der(&der) {
            Ok((_, cert)) => (
                cert.extensions()
                    .iter()
                    .find_map(|e| match e.parsed_extension() {
                        ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                        _ => None,
                    }),
                cert.subject().as_raw().to_vec(),
            ),
            // Parsed before, for `info`: unreachable in practice.
            Err(_) => (None, Vec::new()),
        };
        let mut roots = RootCertStore::empty();
        let alone = roots.add(der.clone()).ok().and_then(|()| {
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .ok()
        });
        Self {
            short: short_fingerprint(&info.fingerprint_sha256),
            info,
            der,
            key_id,
            subject,
            alone,
            usage: Arc::default(),
        }
    }

    /// The CA certificate.
    pub fn cert(&self) -> &CertInfo {
        &self.info
    }

    /// The first 8 bytes of the fingerprint, as `AB:CD:...` (23
    /// characters): a label for metrics, unique within any real bundle.
    pub fn short_fingerprint(&self) -> &str {
        &self.short
    }

    /// Handshakes attributed to this CA since it entered the bundle.
    pub fn handshakes(&self) -> u64 {
        self.usage.handshakes.load(Ordering::Relaxed)
    }

    /// When the last handshake attributed to it happened; `None` if none
    /// has since it entered the bundle.
    pub fn last_used(&self) -> Option<SystemTime> {
        match self.usage.last_used_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

fn verify_with(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(rustls::Error::NoCertificatesPresented);
    };
    let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::since_unix_epoch(since))
        .map(|_| ())
}

/// The key identifier of a certificate's AuthorityKeyIdentifier.
fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0)
            }
            _ => None,
        })
}

/// `AB:CD:...`: the first 8 bytes of `fingerprint`.
fn short_fingerprint(fingerprint: &Fingerprint) -> String {
    let text = fingerprint.to_string();
    text[..8 * 3 - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{LeafOptions, TestCa};

    fn trust(cas: &[&TestCa], crls: &[String]) -> ClientTrust {
        let ders: Vec<CertificateDer<'static>> = cas.iter().map(|c| c.cert_der().clone()).collect();
        let crls: Vec<CertificateRevocationListDer<'static>> = crls
            .iter()
            .map(|pem| {
                use rustls_pki_types::pem::PemObject;
                CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap()
            })
            .collect();
        trust_of(&ders, &crls)
    }

    /// The trust of the CA certificates `ders` and the CRLs `crls`, client
    /// certificates required.
    fn trust_of(
        ders: &[CertificateDer<'static>],
        crls: &[CertificateRevocationListDer<'static>],
    ) -> ClientTrust {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let infos: Vec<CertInfo> = ders
            .iter()
            .map(|d| CertInfo::from_der(d).unwrap())
            .collect();
        let mut roots = RootCertStore::empty();
        for der in ders {
            roots.add(der.clone()).unwrap();
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls.to_vec())
                .build()
                .unwrap();
        let mut revoked = Revoked::default();
        for crl in crls {
            revoked.add(&CertificateRevocationList::from_der(crl).unwrap().1);
        }
        ClientTrust::new(
            ClientAuth::Required,
            verifier,
            ders,
            &infos,
            crls,
            revoked,
            &provider,
        )
    }

    #[test]
    fn a_chain_is_attributed_to_the_ca_it_ends_at_and_counted_there() {
        let (a, b) = (TestCa::new("ca a"), TestCa::new("ca b"));
        let trust = trust(&[&a, &b], &[]);
        let client = [b.client("bob").cert_der];
        assert!(trust.cas()[1].last_used().is_none());
        let ca = trust.record_handshake(&client).unwrap();
        assert_eq!(ca.cert().fingerprint_sha256, Fingerprint::of(b.cert_der()));
        assert_eq!(ca.short_fingerprint().len(), 23);
        assert_eq!(
            (trust.cas()[0].handshakes(), trust.cas()[1].handshakes()),
            (0, 1)
        );
        assert!(trust.cas()[1].last_used().is_some());
        let stranger = [TestCa::new("stranger").client("eve").cert_der];
        assert!(trust.issuer_of(&stranger).is_none());
        assert!(trust.verify(&stranger, SystemTime::now()).is_err());
        assert!(trust.verify(&client, SystemTime::now()).is_ok());
        assert!(trust.verify(&[], SystemTime::now()).is_err());
    }

    #[test]
    fn a_ca_listed_twice_is_one_ca_counted_once() {
        let a = TestCa::new("ca a");
        let trust = trust(&[&a, &a], &[]);
        assert_eq!(trust.cas().len(), 1);
        trust.record_handshake(&[a.client("alice").cert_der]);
        assert_eq!(trust.cas()[0].handshakes(), 1);
    }

    #[test]
    fn cas_renewed_under_the_same_name_are_told_apart() {
        // Same subject: two CAs named alike, as a rollover often is.
        let (old, new) = (TestCa::new("rollover"), TestCa::new("rollover"));
        let trust = trust(&[&old, &new], &[]);
        for ca in [&old, &new] {
            let chain = [ca.client("c").cert_der];
            let found = trust.issuer_of(&chain).unwrap();
            assert_eq!(
                found.cert().fingerprint_sha256,
                Fingerprint::of(ca.cert_der())
            );
        }
    }

    #[test]
    fn a_leaf_without_authority_key_id_under_two_cas_of_one_name_goes_to_the_one_that_signed_it() {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let ca = || {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "same name");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert.der().clone(), Issuer::new(params, key))
        };
        let (old, new) = (ca(), ca());
        let ders = [old.0.clone(), new.0.clone()];
        let trust = trust_of(&ders, &[]);
        for (i, (_, issuer)) in [&old, &new].into_iter().enumerate() {
            let mut params = CertificateParams::new(vec!["client".to_owned()]).unwrap();
            params.use_authority_key_identifier_extension = false;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let leaf = params
                .signed_by(&KeyPair::generate().unwrap(), issuer)
                .unwrap();
            let chain = [leaf.der().clone()];
            let found = trust.issuer_of(&chain).unwrap();
            assert_eq!(
                found.cert().fingerprint_sha256,
                Fingerprint::of(&ders[i]),
                "leaf of CA {i}"
            );
        }
    }

    #[test]
    fn diff_names_cas_added_and_removed_and_crl_changes_and_usage_carries_over() {
        let (a, b) = (TestCa::new("a"), TestCa::new("b"));
        let before = trust(&[&a], &[]);
        let chain = [a.client("x").cert_der];
        before.record_handshake(&chain).unwrap();
        let a_crl = a.crl(&[]);
        let mut after = trust(&[&a, &b], std::slice::from_ref(&a_crl));
        after.inherit_usage(&before);
        assert_eq!(
            after.cas()[0].handshakes(),
            1,
            "A's count survives the reload"
        );
        assert_eq!(after.cas()[1].handshakes(), 0);
        let diff = after.diff(&before);
        assert_eq!(diff.added.len(), 1);
        assert_eq!(
            diff.added[0].fingerprint_sha256,
            Fingerprint::of(b.cert_der())
        );
        assert!(diff.removed.is_empty());
        assert!(diff.crls_changed && !diff.mode_changed);
        assert!(diff.may_invalidate());
        let only_b = trust(&[&b], std::slice::from_ref(&a_crl));
        let diff = only_b.diff(&after);
        assert_eq!(
            diff.removed[0].fingerprint_sha256,
            Fingerprint::of(a.cert_der())
        );
        assert!(!diff.crls_changed, "the same CRL bytes");
        let same = trust(&[&a, &b], &[]);
        assert!(
            !same.diff(&trust(&[&a], &[])).may_invalidate(),
            "adding a CA alone"
        );
    }

    #[test]
    fn verify_applies_new_crls_and_validity() {
        let a = TestCa::new("a");
        let (good, bad) = (a.client("good"), a.client("bad"));
        let trust = trust(&[&a], &[a.crl(&[&bad])]);
        assert!(trust.lists_as_revoked(std::slice::from_ref(&bad.cert_der)));
        assert!(!trust.lists_as_revoked(std::slice::from_ref(&good.cert_der)));
        let now = SystemTime::now();
        // Whether the one-certificate chain `leaf` verifies at `at`.
        let verifies = |leaf: &CertificateDer<'static>, at| {
            trust.verify(std::slice::from_ref(leaf), at).is_ok()
        };
        assert!(verifies(&good.cert_der, now));
        assert!(!verifies(&bad.cert_der, now));
        let short = a.issue(
            &LeafOptions::client("short")
                .valid(now - Duration::from_secs(60), now + Duration::from_secs(60)),
        );
        assert!(verifies(&short.cert_der, now));
        assert!(!verifies(&short.cert_der, now + Duration::from_secs(120)));
    }

    #[tokio::test]
    async fn the_acceptor_serves_a_new_trust_after_a_reload_and_keeps_the_counts_of_cas_kept() {
        let volumes = crate::testing::SecretVolumes::new();
        let acceptor = crate::ReloadableAcceptor::builder(volumes.mtls_files(ClientAuth::Required))
            .build()
            .unwrap();
        let before = acceptor.client_trust().unwrap();
        before
            .record_handshake(std::slice::from_ref(&volumes.client.cert_der))
            .unwrap();
        let b = TestCa::new("b");
        volumes.publish_client_ca(format!("{}{}", volumes.client_ca.cert_pem(), b.cert_pem()));
        acceptor.reload_now(crate::Trigger::Manual).await.unwrap();
        let after = acceptor.client_trust().unwrap();
        assert!(!Arc::ptr_eq(&before, &after));
        let diff = after.diff(&before);
        assert_eq!((diff.added.len(), diff.removed.len()), (1, 0));
        assert_eq!(after.cas()[0].handshakes(), 1);
        assert_eq!(after.cas()[1].handshakes(), 0);
        assert!(acceptor.status().client_ca.len() == 2);
    }
}
