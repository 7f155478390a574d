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
//! | `identity` | string | the certificate identity concerned: `default`, or the first server name of an SNI identity |
//! | `renewal_due` | string | RFC 3339 time the certificate's renewal was due (renewal overdue events) |
//! | `cert_path`, `key_path`, `client_ca_path` | string | the files read |
//! | `crl_paths` | array of strings | the CRL files read |
//! | `client_cas_added`, `client_cas_removed` | array of `{fingerprint, subject}` | client CAs trusted from now on, or no longer (client trust changes) |
//! | `crls_changed` | boolean | whether the CRLs changed (client trust changes) |
//! | `connections_checked` | integer | open connections checked again against the new client trust |
//! | `connections_ended` | integer | open connections ended because they no longer verify |
//!
//! Absent values are left out. Every value is a string or number the caller
//! hands in; there is no field for key bytes and no way to add other keys.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Declares [`TlsReloadDetails`]: each optional field, left out of the JSON
/// when empty, with its chained setter (`field: Option<T> = |arg: A|
/// stored value`), then the CRL paths.
macro_rules! tls_reload_details {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$doc:meta])* $field:ident: Option<$ty:ty> = |$arg:ident: $arg_ty:ty| $value:expr, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        #[non_exhaustive]
        pub struct $name {
            $(
                $(#[$doc])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )+
            /// Paths of the CRL files.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            pub crl_paths: Vec<String>,
        }

        impl $name {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), "). Default: none.")]
                #[must_use]
                pub fn $field(mut self, $arg: $arg_ty) -> Self {
                    self.$field = Some($value);
                    self
                }
            )+
        }
    };
}

tls_reload_details! {
    /// Details of a TLS config load or reload, written as `unmapped.tls`.
    ///
    /// Build it with [`TlsReloadDetails::new`] and the chained setters; the
    /// fields are public for reading. Paths are stored as strings, lossily
    /// when they are not UTF-8, so that serializing never fails.
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
    pub struct TlsReloadDetails {
        /// Fingerprint of the certificate served before the event.
        previous_fingerprint: Option<String> = |fingerprint: impl Into<String>| fingerprint.into(),
        /// Fingerprint of the certificate served after the event (on failure:
        /// the one that was offered and rejected, when it could be read).
        new_fingerprint: Option<String> = |fingerprint: impl Into<String>| fingerprint.into(),
        /// Serial number of the new leaf certificate.
        serial: Option<String> = |serial: impl Into<String>| serial.into(),
        /// Expiry (`notAfter`) of the new leaf, as an RFC 3339 string.
        not_after: Option<String> = |rfc3339: impl Into<String>| rfc3339.into(),
        /// Config generation served after the event (unchanged on failure).
        generation: Option<u64> = |generation: u64| generation,
        /// What started the load: `watch` (a file-system event), `poll` (the
        /// periodic re-read), `signal` (SIGHUP), `api` (a reload API call) or
        /// `startup` (the first load).
        ///
        /// A string rather than a type of this crate, so that the reload
        /// library's own trigger type is written by its name without this
        /// crate depending on that library.
        trigger: Option<String> = |trigger: impl Into<String>| trigger.into(),
        /// The certificate identity the event is about: `default`, or the
        /// label (first server name) of an SNI identity.
        identity: Option<String> = |label: impl Into<String>| label.into(),
        /// When the certificate's renewal was due, as an RFC 3339 string.
        renewal_due: Option<String> = |rfc3339: impl Into<String>| rfc3339.into(),
        /// Path of the certificate chain file.
        cert_path: Option<String> = |path: impl AsRef<Path>| lossy(path.as_ref()),
        /// Path of the private key file (the path only, never its contents).
        key_path: Option<String> = |path: impl AsRef<Path>| lossy(path.as_ref()),
        /// Path of the client-CA bundle, when mTLS is configured.
        client_ca_path: Option<String> = |path: impl AsRef<Path>| lossy(path.as_ref()),
        /// Client CA certificates trusted from now on and not before.
        client_cas_added: Option<Vec<ClientCaRef>> = |cas: impl IntoIterator<Item = ClientCaRef>| cas.into_iter().collect(),
        /// Client CA certificates trusted before and no longer.
        client_cas_removed: Option<Vec<ClientCaRef>> = |cas: impl IntoIterator<Item = ClientCaRef>| cas.into_iter().collect(),
        /// Whether the certificate revocation lists changed.
        crls_changed: Option<bool> = |changed: bool| changed,
        /// Open connections checked again against the new client trust.
        connections_checked: Option<u64> = |count: u64| count,
        /// Open connections ended because their client certificate no
        /// longer verifies under the new client trust.
        connections_ended: Option<u64> = |count: u64| count,
    }
}

/// A client CA certificate named in a client trust change: its
/// fingerprint and subject.
///
/// ```
/// use openshell_ocsf::{ClientCaRef, TlsReloadDetails};
///
/// let added = ClientCaRef::new("4F:01:C3", "CN=client CA 2026");
/// let details = TlsReloadDetails::new().client_cas_added([added]).connections_ended(0);
/// assert_eq!(details.client_cas_added.as_ref().map(Vec::len), Some(1));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ClientCaRef {
    /// SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint: String,
    /// Subject distinguished name.
    pub subject: String,
}

impl ClientCaRef {
    /// A CA by fingerprint and subject.
    pub fn new(fingerprint: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            fingerprint: fingerprint.into(),
            subject: subject.into(),
        }
    }
}

impl TlsReloadDetails {
    /// Empty details; add values with the setters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`crl_paths`](Self::crl_paths). Default: none.
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
            .identity("api.example.com")
            .renewal_due("2029-11-01T00:00:00Z")
            .cert_path("/c")
            .key_path("/k")
            .client_ca_path("/ca")
            .crl_paths(["/crl1", "/crl2"])
            .client_cas_added([ClientCaRef::new("CC", "CN=new")])
            .client_cas_removed([ClientCaRef::new("DD", "CN=old")])
            .crls_changed(true)
            .connections_checked(3)
            .connections_ended(2);
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
                "client_cas_added",
                "client_cas_removed",
                "connections_checked",
                "connections_ended",
                "crl_paths",
                "crls_changed",
                "generation",
                "identity",
                "key_path",
                "new_fingerprint",
                "not_after",
                "previous_fingerprint",
                "renewal_due",
                "serial",
                "trigger",
            ]
        );
        assert_eq!(value["crl_paths"], serde_json::json!(["/crl1", "/crl2"]));
        assert_eq!(value["generation"], 2);
        assert_eq!(
            value["client_cas_removed"],
            serde_json::json!([{"fingerprint": "DD", "subject": "CN=old"}])
        );
        assert_eq!(value["connections_ended"], 2);
        assert_eq!(value["crls_changed"], true);
    }
}
