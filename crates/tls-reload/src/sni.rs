//! Several certificates on one port, chosen by the name the client asks
//! for (SNI): the configured identities, the rules for their names, and
//! the resolver a published config selects with.
//!
//! A config serves a default identity and any number of SNI identities.
//! Per handshake the client's server name is looked up as an exact name,
//! then as a single-label wildcard (`*.example.com` matches
//! `a.example.com`, not `a.b.example.com` nor `example.com`); anything else,
//! and a client that sends no name, gets the default identity. Names are
//! compared case-insensitively.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;
use crate::error::SettingsError;

/// The label of the identity served when no SNI identity matches (its
/// [`IdentityStatus::label`](crate::IdentityStatus::label) and the
/// `identity` of its events).
pub const DEFAULT_IDENTITY: &str = "default";

/// A certificate and key served to clients that ask for one of its names.
///
/// Each identity is reloaded on its own: a broken or mismatched pair keeps
/// that identity's last good pair served and never holds up a rotation of
/// another one. Its certificate must cover every configured name (a SAN
/// DNS name equal to it, or a SAN wildcard `*.example.com` for a name
/// `a.example.com`; a configured wildcard needs the same wildcard in the
/// SAN).
///
/// Names are DNS names, compared case-insensitively; a wildcard is only
/// allowed as the whole leftmost label (`*.apps.example.com`). The
/// identity's label, used in events, errors and the status, is its first
/// name as configured. Only the certificate and key of `files` are used:
/// client trust belongs to the default identity's files.
///
/// # Example
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let ca = tls_reload::testing::TestCa::new("ca");
/// # let default = tls_reload::testing::SecretVolumes::new();
/// # let leaf = ca.issue(&tls_reload::testing::LeafOptions::server()
/// #     .names(["api.example.com", "*.apps.example.com"]));
/// # std::fs::write(dir.path().join("tls.crt"), &leaf.cert_pem)?;
/// # std::fs::write(dir.path().join("tls.key"), &leaf.key_pem)?;
/// # let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
/// use tls_reload::{ReloadableAcceptor, SniIdentity, TlsFiles};
///
/// let api = SniIdentity::new(["api.example.com", "*.apps.example.com"], TlsFiles::new(cert, key));
/// assert_eq!(api.label(), "api.example.com");
/// let acceptor = ReloadableAcceptor::builder(default.files()).sni(api).build()?;
/// let status = acceptor.status();
/// assert_eq!(status.identities.len(), 2);
/// assert_eq!(status.identities[0].label, "default");
/// assert_eq!(status.identities[1].names, ["api.example.com", "*.apps.example.com"]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SniIdentity {
    pub(crate) names: Vec<String>,
    pub(crate) files: TlsFiles,
}

impl SniIdentity {
    /// An identity serving the certificate and key of `files` to clients
    /// asking for any of `names`. The names are checked when the acceptor
    /// is built.
    pub fn new<I, N>(names: I, files: TlsFiles) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        Self {
            names: names.into_iter().map(Into::into).collect(),
            files,
        }
    }

    /// The server names, as configured.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The certificate and key.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The label used in events, errors and the status: the first name.
    pub fn label(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }
}

/// One identity as the engine loads it: a label, the names (lower case;
/// none for the default identity) and the files.
#[derive(Debug, Clone)]
pub(crate) struct IdentitySpec {
    pub(crate) label: String,
    pub(crate) names: Vec<String>,
    pub(crate) files: TlsFiles,
}

impl IdentitySpec {
    /// The default identity first, then the SNI identities in order, with
    /// their names checked and lowered.
    pub(crate) fn all(
        default: &TlsFiles,
        sni: &[SniIdentity],
    ) -> Result<Vec<IdentitySpec>, SettingsError> {
        let mut specs = vec![IdentitySpec {
            label: DEFAULT_IDENTITY.to_owned(),
            names: Vec::new(),
            files: default.clone(),
        }];
        let mut owner: HashMap<String, String> = HashMap::new();
        for identity in sni {
            let label = identity.label().to_owned();
            if identity.names.is_empty() {
                return Err(SettingsError::NoServerNames);
            }
            let f = &identity.files;
            if f.client_ca.is_some() || !f.crls.is_empty() {
                return Err(SettingsError::SniClientTrust { identity: label });
            }
            let mut names = Vec::with_capacity(identity.names.len());
            for name in &identity.names {
                let lower =
                    check_name(name).map_err(|reason| SettingsError::InvalidServerName {
                        identity: label.clone(),
                        name: name.clone(),
                        reason,
                    })?;
                if let Some(first) = owner.insert(lower.clone(), label.clone()) {
                    return Err(SettingsError::DuplicateServerName {
                        name: name.clone(),
                        first,
                        second: label,
                    });
                }
                names.push(lower);
            }
            specs.push(IdentitySpec {
                label,
                names,
                files: identity.files.clone(),
            });
        }
        Ok(specs)
    }
}

/// Checks a configured server name and returns it in lower case.
fn check_name(name: &str) -> Result<String, &'static str> {
    let lower = name.to_ascii_lowercase();
    let (wildcard, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if rest.is_empty() {
        return Err(if wildcard {
            "a wildcard needs a domain after `*.`"
        } else {
            "empty name"
        });
    }
    if rest.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in rest.split('.') {
        if label.contains('*') {
            return Err("a wildcard is only allowed as the whole leftmost label");
        }
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, `-` and `_` are allowed in a label");
        }
    }
    Ok(lower)
}

/// Whether a certificate's SAN DNS names cover the configured (lower-case)
/// `name`, as RFC 6125 says: an equal SAN name, or for a plain name a SAN
/// wildcard whose suffix is the name's parent domain. A configured
/// wildcard needs the same wildcard.
pub(crate) fn covered_by(name: &str, dns_names: &[String]) -> bool {
    let parent = match name.split_once('.') {
        Some((first, parent)) if first != "*" && !first.is_empty() => Some(parent),
        _ => None,
    };
    dns_names.iter().any(|san| {
        san.eq_ignore_ascii_case(name)
            || parent.is_some_and(|parent| {
                san.strip_prefix("*.")
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case(parent))
            })
    })
}

/// Selects the certificate of a handshake; immutable, one per published
/// config.
pub(crate) struct SniResolver {
    /// Lower-case exact names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Lower-case suffixes of wildcards: `apps.example.com` for
    /// `*.apps.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    /// A resolver serving `default`, and each key to its (lower-case,
    /// checked) names.
    pub(crate) fn new<'a>(
        default: Arc<CertifiedKey>,
        identities: impl IntoIterator<Item = (&'a [String], Arc<CertifiedKey>)>,
    ) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (names, key) in identities {
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.insert(suffix.to_owned(), key.clone()),
                    None => exact.insert(name.clone(), key.clone()),
                };
            }
        }
        Self {
            exact,
            wildcard,
            default,
        }
    }

    /// The key for a client's server name (`None`: no SNI).
    fn select(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return &self.default;
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        // rustls hands the name over lower-cased already; a copy is made
        // only for a resolver driven some other way.
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.lookup(&name.to_ascii_lowercase())
        } else {
            self.lookup(name)
        }
    }

    fn lookup(&self, name: &str) -> &Arc<CertifiedKey> {
        if let Some(key) = self.exact.get(name) {
            return key;
        }
        match name.split_once('.') {
            Some((first, parent)) if !first.is_empty() => {
                self.wildcard.get(parent).unwrap_or(&self.default)
            }
            _ => &self.default,
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn configured_names_are_lowered_and_malformed_ones_refused() {
        for (name, want) in [
            ("API.Example.com", Ok("api.example.com")),
            ("*.Apps.example.com", Ok("*.apps.example.com")),
            ("localhost", Ok("localhost")),
            ("a_b.example.com", Ok("a_b.example.com")),
            ("", Err("empty name")),
            ("*.", Err("a wildcard needs a domain after `*.`")),
            (
                "a*.example.com",
                Err("a wildcard is only allowed as the whole leftmost label"),
            ),
            (
                "a.*.example.com",
                Err("a wildcard is only allowed as the whole leftmost label"),
            ),
            (
                "*.*.example.com",
                Err("a wildcard is only allowed as the whole leftmost label"),
            ),
            (
                "*",
                Err("a wildcard is only allowed as the whole leftmost label"),
            ),
            ("a..example.com", Err("empty label")),
            ("example.com.", Err("empty label")),
            (
                "a b.example.com",
                Err("only letters, digits, `-` and `_` are allowed in a label"),
            ),
        ] {
            assert_eq!(check_name(name).as_deref(), want.as_deref(), "{name:?}");
        }
    }

    #[test]
    fn a_san_covers_a_name_as_rfc_6125_says() {
        let sans = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        for (name, san, covered) in [
            ("a.example.com", &["a.example.com"][..], true),
            ("a.example.com", &["A.EXAMPLE.COM"], true),
            ("a.example.com", &["*.example.com"], true),
            ("a.b.example.com", &["*.example.com"], false),
            ("example.com", &["*.example.com"], false),
            ("*.example.com", &["*.example.com"], true),
            ("*.example.com", &["a.example.com"], false),
            ("*.example.com", &["*.com"], false),
            ("a.example.com", &["b.example.com", "*.other.com"], false),
            ("a.example.com", &[], false),
        ] {
            assert_eq!(covered_by(name, &sans(san)), covered, "{name} by {san:?}");
        }
    }

    #[test]
    fn the_resolver_tries_exact_then_one_label_wildcard_then_the_default() {
        let ca = crate::testing::TestCa::new("resolver");
        let key = |_| {
            let leaf = ca.server();
            let provider = rustls::crypto::ring::default_provider();
            let der = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            let signing = provider.key_provider.load_private_key(der).unwrap();
            Arc::new(CertifiedKey::new(vec![leaf.cert_der], signing))
        };
        let (default, api, apps) = (key(0), key(1), key(2));
        let api_names = ["api.example.com".to_owned()];
        let apps_names = [
            "*.apps.example.com".to_owned(),
            "apps.example.com".to_owned(),
        ];
        let resolver = SniResolver::new(
            default.clone(),
            [
                (&api_names[..], api.clone()),
                (&apps_names[..], apps.clone()),
            ],
        );
        for (sni, want) in [
            (Some("api.example.com"), &api),
            (Some("API.Example.COM"), &api),
            (Some("api.example.com."), &api),
            (Some("x.apps.example.com"), &apps),
            (Some("X.APPS.example.com"), &apps),
            (Some("apps.example.com"), &apps),
            (Some("x.y.apps.example.com"), &default),
            (Some(".apps.example.com"), &default),
            (Some("example.com"), &default),
            (Some("other.example.com"), &default),
            (Some("localhost"), &default),
            (None, &default),
        ] {
            assert!(Arc::ptr_eq(resolver.select(sni), want), "{sni:?}");
        }
    }
}
