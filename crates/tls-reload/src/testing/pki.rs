//! Certificate authorities and leaves generated with rcgen.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::Fingerprint;

/// A certificate authority that issues server and client certificates.
///
/// # Example
///
/// ```
/// use tls_reload::CertInfo;
/// use tls_reload::testing::TestCa;
///
/// let ca = TestCa::new("example CA");
/// let leaf = ca.server();
/// let info = CertInfo::from_der(&leaf.cert_der).unwrap();
/// assert_eq!(info.fingerprint_sha256, leaf.fingerprint);
/// assert!(info.dns_names.iter().any(|n| n == "localhost"));
/// ```
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa")
            .field("fingerprint", &Fingerprint::of(&self.cert_der))
            .finish_non_exhaustive()
    }
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeafOptions {
    /// Common name.
    pub common_name: String,
    /// Subject alternative names; IP addresses are recognised.
    pub names: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// A client (true) or server (false) certificate.
    pub client: bool,
}

impl LeafOptions {
    /// A server certificate for localhost, 127.0.0.1 and ::1, valid from an
    /// hour ago for 90 days.
    pub fn server() -> Self {
        let now = SystemTime::now();
        Self {
            common_name: "localhost".into(),
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(90 * 86_400),
            client: false,
        }
    }

    /// A client certificate with the given common name.
    pub fn client(common_name: &str) -> Self {
        Self {
            common_name: common_name.into(),
            names: vec![common_name.into()],
            client: true,
            ..Self::server()
        }
    }

    /// Sets the subject alternative names (DNS names, wildcards such as
    /// `*.example.com`, IP addresses); the first is also the common name.
    pub fn names<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.names = names.into_iter().map(Into::into).collect();
        if let Some(first) = self.names.first() {
            self.common_name = first.clone();
        }
        self
    }

    /// Sets the validity window.
    pub fn valid(mut self, not_before: SystemTime, not_after: SystemTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// An issued certificate with its private key, both PEM.
#[derive(Clone)]
#[non_exhaustive]
pub struct Leaf {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// SHA-256 fingerprint of the leaf, as `openssl` prints it (the text of
    /// [`Fingerprint`]).
    pub fingerprint: String,
    /// The serial number's bytes.
    pub serial: Vec<u8>,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("fingerprint", &self.fingerprint)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn serial() -> SerialNumber {
    // Unique within the process and across runs: time plus a counter.
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[0] &= 0x7f; // keep it positive
    bytes[0] |= 0x01; // and of full length
    SerialNumber::from_slice(&bytes)
}

fn offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

impl TestCa {
    /// A new self-signed CA (ECDSA P-256) named `name`, valid for 10 years.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "OpenShell test");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial());
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(86_400));
        params.not_after = offset(now + Duration::from_secs(3650 * 86_400));
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A server certificate for localhost with default validity.
    pub fn server(&self) -> Leaf {
        self.issue(&LeafOptions::server())
    }

    /// A client certificate with the given common name.
    pub fn client(&self, common_name: &str) -> Leaf {
        self.issue(&LeafOptions::client(common_name))
    }

    /// A leaf as described by `options`, with a fresh ECDSA P-256 key.
    pub fn issue(&self, options: &LeafOptions) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        self.issue_with_key(options, &key)
    }

    /// A leaf as described by `options` for the given key.
    pub fn issue_with_key(&self, options: &LeafOptions, key: &KeyPair) -> Leaf {
        let mut params = CertificateParams::new(options.names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, options.common_name.as_str());
        let serial = serial();
        params.serial_number = Some(serial.clone());
        params.not_before = offset(options.not_before);
        params.not_after = offset(options.not_after);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if options.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: Fingerprint::of(cert.der()).to_string(),
            cert_der: cert.der().clone(),
            serial: serial.to_bytes(),
        }
    }

    /// A CRL, PEM, signed by this CA, revoking `revoked`; valid from an hour
    /// ago for a week.
    pub fn crl(&self, revoked: &[&Leaf]) -> String {
        let now = SystemTime::now();
        let params = CertificateRevocationListParams {
            this_update: offset(now - Duration::from_secs(3600)),
            next_update: offset(now + Duration::from_secs(7 * 86_400)),
            crl_number: serial(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&leaf.serial),
                    revocation_time: offset(now - Duration::from_secs(60)),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("sign CRL")
            .pem()
            .expect("CRL PEM")
    }
}
