//! What a certificate says about itself: the facts operators compare when
//! they ask "which certificate is being served?".

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::fingerprint::Fingerprint;

/// Why bytes are not one X.509 certificate ([`CertInfo::from_der`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertParseError {
    /// The X.509 parser rejected the bytes; its message.
    #[error("{0}")]
    Malformed(String),
    /// One certificate parsed, and this many bytes followed it.
    #[error("{0} trailing bytes after the certificate")]
    TrailingBytes(usize),
}

/// Facts parsed from one X.509 certificate.
///
/// The fingerprint displays as `openssl x509 -noout -fingerprint -sha256`
/// prints it (upper-case hex pairs joined by colons), so it can be compared
/// with the output of that command or of `kubectl get secret ... | openssl`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertInfo {
    /// SHA-256 of the DER encoding; displays as `AB:CD:...`.
    pub fingerprint_sha256: Fingerprint,
    /// Serial number, upper-case hex without separators, as
    /// `openssl x509 -serial` prints it.
    pub serial: String,
    /// Subject distinguished name, RFC 4514 style (`CN=localhost`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// DNS names from the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// IP addresses from the subjectAltName extension.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Parses a DER certificate.
    ///
    /// # Errors
    ///
    /// [`CertParseError`] when `der` is not one well-formed X.509
    /// certificate.
    ///
    /// ```
    /// use tls_reload::{CertInfo, CertParseError, Fingerprint};
    ///
    /// # let der = tls_reload::testing::TestCa::new("ca").server().cert_der.to_vec();
    /// let info = CertInfo::from_der(&der)?;
    /// assert_eq!(info.fingerprint_sha256, Fingerprint::of(&der));
    /// assert_eq!(info.subject, "CN=localhost");
    ///
    /// let err = CertInfo::from_der(b"not a certificate").unwrap_err();
    /// assert!(matches!(err, CertParseError::Malformed(_)));
    /// # Ok::<(), CertParseError>(())
    /// ```
    pub fn from_der(der: &[u8]) -> Result<Self, CertParseError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| CertParseError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertParseError::TrailingBytes(rest.len()));
        }
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        Ok(Self {
            fingerprint_sha256: Fingerprint::of(der),
            serial: hex_upper(cert.tbs_certificate.raw_serial()),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            dns_names,
            ip_addresses,
            not_before: unix_to_system_time(validity.not_before.timestamp()),
            not_after: unix_to_system_time(validity.not_after.timestamp()),
        })
    }

    /// Whether the certificate has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after
    }

    /// Time left until `not_after`, zero once expired.
    pub fn remaining_at(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// When a renewal of this certificate is overdue: `not_before` plus
    /// 23/30 of its lifetime, that is two thirds (when cert-manager renews
    /// by default) plus a tenth of it as grace. A certificate still served
    /// past this time was not renewed when it should have been.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tls_reload::CertInfo;
    ///
    /// # let der = tls_reload::testing::TestCa::new("ca").server().cert_der.to_vec();
    /// let info = CertInfo::from_der(&der)?;
    /// let lifetime = info.not_after.duration_since(info.not_before)?;
    /// let due = info.renewal_due().duration_since(info.not_before)?;
    /// assert!(due > lifetime * 2 / 3 && due < lifetime * 4 / 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn renewal_due(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime / 30 * 23
    }

    /// `not_before` as seconds since the Unix epoch (negative before 1970).
    pub fn not_before_unix(&self) -> i64 {
        system_time_to_unix(self.not_before)
    }

    /// `not_after` as seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        system_time_to_unix(self.not_after)
    }
}

/// `t` as RFC 3339 in UTC with whole seconds (`2026-11-28T23:49:41Z`).
///
/// Accepts any time an X.509 certificate can carry (years 0 to 9999, before
/// 1970 included) and never panics; a time outside that range, which no
/// certificate holds, is written as `@<seconds since the epoch>`.
pub fn format_rfc3339(t: SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    let secs = system_time_to_unix(t);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

fn hex_upper(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02X}");
    }
    out
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn unix_to_system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn system_time_to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bytes_that_are_not_a_certificate() {
        assert!(matches!(
            CertInfo::from_der(b"not a certificate"),
            Err(CertParseError::Malformed(_))
        ));
    }

    #[test]
    fn names_the_bytes_left_after_one_certificate() {
        let ca = crate::testing::TestCa::new("info-test");
        let mut der = ca.server().cert_der.to_vec();
        assert!(CertInfo::from_der(&der).is_ok());
        der.extend_from_slice(b"xyz");
        let err = CertInfo::from_der(&der).unwrap_err();
        assert_eq!(err, CertParseError::TrailingBytes(3));
        assert_eq!(err.to_string(), "3 trailing bytes after the certificate");
    }

    #[test]
    fn formats_rfc3339_before_and_after_1970_without_panicking() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (-631_152_000, "1950-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_910_981, "2026-11-29T00:09:41Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
            (253_402_300_800, "@253402300800"),
        ] {
            assert_eq!(format_rfc3339(unix_to_system_time(secs)), text, "{secs}");
        }
        // Agrees with humantime wherever humantime works.
        for secs in (0..4_000_000_000_i64).step_by(86_399 * 97) {
            let t = unix_to_system_time(secs);
            assert_eq!(
                format_rfc3339(t),
                humantime::format_rfc3339_seconds(t).to_string()
            );
        }
    }

    #[test]
    fn unix_conversion_round_trips_before_and_after_epoch() {
        for secs in [-86_400_i64, 0, 1_800_000_000] {
            assert_eq!(system_time_to_unix(unix_to_system_time(secs)), secs);
        }
    }
}
