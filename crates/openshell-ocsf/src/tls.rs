//! TLS reload details, written under `unmapped.tls`.
//!
//! OCSF has no attributes for a certificate reload, so the details go under
//! `unmapped` (the place OCSF gives source-specific data) with names that are
//! part of this crate's contract:
//!
//! | key | JSON type | meaning |
//! | --- | --- | --- |
//! | `previous_fingerprint` | string | fingerprint of the certificate served before |
//! | `new_fingerprint` | string | fingerprint of the certificate served now (or offered, on failure) |
//! | `serial` | string | serial number of the new leaf |
//! | `not_after` | string | RFC 3339 expiry of the new leaf |
//! | `generation` | integer | config generation served after the event |
//! | `trigger` | string | what started the load: `watch`, `poll`, `signal`, `api`, `startup` |
//! | `cert_path`, `key_path`, `client_ca_path` | string | the files read |
//! | `crl_paths` | array of strings | the CRL files read |
//!
//! Absent values are left out. Every value is a string or number the caller
//! hands in; there is no field for key bytes and no way to add other keys.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Details of a TLS config load or reload, written as `unmapped.tls`.
///
/// Build it with [`TlsReloadDetails::new`] and the chained setters; the
/// fields are public for reading.
///
/// # Defaults
///
/// Every field is empty; empty fields are left out of the JSON.
///
/// # Example
///
/// ```
/// use openshell_ocsf::TlsReloadDetails;
///
/// let details = TlsReloadDetails::new()
///     .trigger("watch")
///     .generation(3)
///     .previous_fingerprint("9A:77:10")
///     .new_fingerprint("4F:01:C3")
///     .cert_path("/etc/openshell-tls/server/tls.crt");
/// assert_eq!(details.generation, Some(3));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TlsReloadDetails {
    /// Fingerprint of the certificate served before the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_fingerprint: Option<String>,
    /// Fingerprint of the certificate served after the event (on failure:
    /// the one that was offered and rejected, when it could be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_fingerprint: Option<String>,
    /// Serial number of the new leaf certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Expiry (`notAfter`) of the new leaf, as an RFC 3339 string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Config generation served after the event (unchanged on failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// What started the load: `watch`, `poll`, `signal`, `api` or
    /// `startup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Path of the certificate chain file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_path: Option<String>,
    /// Path of the private key file (the path only, never its contents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    /// Path of the client-CA bundle, when mTLS is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_path: Option<String>,
    /// Paths of the CRL files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub crl_paths: Vec<String>,
}

impl TlsReloadDetails {
    /// Empty details; add values with the setters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the fingerprint of the certificate served before. Default: none.
    #[must_use]
    pub fn previous_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.previous_fingerprint = Some(fingerprint.into());
        self
    }

    /// Sets the fingerprint of the new certificate. Default: none.
    #[must_use]
    pub fn new_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.new_fingerprint = Some(fingerprint.into());
        self
    }

    /// Sets the serial number of the new leaf. Default: none.
    #[must_use]
    pub fn serial(mut self, serial: impl Into<String>) -> Self {
        self.serial = Some(serial.into());
        self
    }

    /// Sets the RFC 3339 expiry of the new leaf. Default: none.
    #[must_use]
    pub fn not_after(mut self, rfc3339: impl Into<String>) -> Self {
        self.not_after = Some(rfc3339.into());
        self
    }

    /// Sets the config generation. Default: none.
    #[must_use]
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = Some(generation);
        self
    }

    /// Sets what started the load, one of `watch` (a file-system event),
    /// `poll` (the periodic re-read), `signal` (SIGHUP), `api` (a reload
    /// API call) or `startup` (the first load). Default: none.
    ///
    /// A string rather than a type of this crate, so that the reload
    /// library's own trigger type can be written here without this crate
    /// depending on it: pass its name.
    #[must_use]
    pub fn trigger(mut self, trigger: impl Into<String>) -> Self {
        self.trigger = Some(trigger.into());
        self
    }

    /// Sets the certificate chain path. Default: none.
    ///
    /// A path that is not UTF-8 is written lossily.
    #[must_use]
    pub fn cert_path(mut self, path: impl AsRef<Path>) -> Self {
        self.cert_path = Some(lossy(path.as_ref()));
        self
    }

    /// Sets the private key path. Default: none.
    ///
    /// A path that is not UTF-8 is written lossily.
    #[must_use]
    pub fn key_path(mut self, path: impl AsRef<Path>) -> Self {
        self.key_path = Some(lossy(path.as_ref()));
        self
    }

    /// Sets the client-CA bundle path. Default: none.
    ///
    /// A path that is not UTF-8 is written lossily.
    #[must_use]
    pub fn client_ca_path(mut self, path: impl AsRef<Path>) -> Self {
        self.client_ca_path = Some(lossy(path.as_ref()));
        self
    }

    /// Sets the CRL file paths. Default: none.
    ///
    /// A path that is not UTF-8 is written lossily.
    #[must_use]
    pub fn crl_paths<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        self.crl_paths = paths.into_iter().map(|p| lossy(p.as_ref())).collect();
        self
    }
}

// Paths are stored as strings so that serializing can never fail on a
// non-UTF-8 path (serde_json refuses those).
fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_details_serialize_as_an_empty_object() {
        let json = serde_json::to_string(&TlsReloadDetails::new()).unwrap();
        assert_eq!(json, "{}");
    }

    #[test]
    fn setters_fill_the_stable_keys() {
        let details = TlsReloadDetails::new()
            .previous_fingerprint("AA")
            .new_fingerprint("BB")
            .serial("01")
            .not_after("2030-01-01T00:00:00Z")
            .generation(2)
            .trigger("poll")
            .cert_path("/c")
            .key_path("/k")
            .client_ca_path("/ca")
            .crl_paths(["/crl1", "/crl2"]);
        let value = serde_json::to_value(&details).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "cert_path",
                "client_ca_path",
                "crl_paths",
                "generation",
                "key_path",
                "new_fingerprint",
                "not_after",
                "previous_fingerprint",
                "serial",
                "trigger",
            ]
        );
        assert_eq!(value["crl_paths"], serde_json::json!(["/crl1", "/crl2"]));
        assert_eq!(value["generation"], 2);
    }
}
