//! The SHA-256 fingerprint of a certificate, in the form operators compare.

use std::fmt;
use std::str::FromStr;

/// The SHA-256 digest of a certificate's DER encoding.
///
/// It displays as `openssl x509 -noout -fingerprint -sha256` prints it:
/// upper-case hex pairs joined by colons (`AB:CD:...`), so it can be
/// compared with the output of that command. It parses back from that form
/// (lower-case hex is accepted too), and compares equal to a string of that
/// form, so tests and logs can hold either.
///
/// # Example
///
/// ```
/// use tls_reload::Fingerprint;
///
/// # fn main() -> Result<(), tls_reload::ParseFingerprintError> {
/// let fp = Fingerprint::of(b"abc");
/// let text = fp.to_string();
/// assert!(text.starts_with("BA:78:16:BF:"));
/// assert_eq!(text.len(), 32 * 3 - 1);
/// assert_eq!(text.parse::<Fingerprint>()?, fp);
/// assert_eq!(fp, text);
/// assert_eq!(fp.as_bytes()[0], 0xBA);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `der`: its SHA-256 digest.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// A fingerprint from its 32 digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    /// Upper-case hex pairs joined by colons, as openssl prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a string is not a [`Fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 fingerprint (32 hex pairs joined by colons): {0:?}")]
pub struct ParseFingerprintError(String);

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    /// Parses `AB:CD:...` (32 hex pairs, either case, joined by colons).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFingerprintError(s.chars().take(100).collect());
        let mut bytes = [0u8; 32];
        let mut pairs = s.split(':');
        for byte in &mut bytes {
            let pair = pairs.next().ok_or_else(err)?;
            if pair.len() != 2 || !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        if pairs.next().is_some() {
            return Err(err());
        }
        Ok(Self(bytes))
    }
}

/// The text form, for APIs that carry fingerprints as strings.
impl From<Fingerprint> for String {
    fn from(fp: Fingerprint) -> Self {
        fp.to_string()
    }
}

/// The text form, for APIs that carry fingerprints as strings.
impl From<&Fingerprint> for String {
    fn from(fp: &Fingerprint) -> Self {
        fp.to_string()
    }
}

/// Equal when `other` is this fingerprint's text form (hex in either case).
impl PartialEq<str> for Fingerprint {
    fn eq(&self, other: &str) -> bool {
        other.parse::<Fingerprint>().is_ok_and(|fp| fp == *self)
    }
}

/// Equal when `other` is this fingerprint's text form (hex in either case).
impl PartialEq<&str> for Fingerprint {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

/// Equal when `other` is this fingerprint's text form (hex in either case).
impl PartialEq<String> for Fingerprint {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

/// Equal when `self` is the fingerprint's text form (hex in either case).
impl PartialEq<Fingerprint> for String {
    fn eq(&self, other: &Fingerprint) -> bool {
        *other == *self.as_str()
    }
}

/// Equal when `self` is the fingerprint's text form (hex in either case).
impl PartialEq<Fingerprint> for &str {
    fn eq(&self, other: &Fingerprint) -> bool {
        *other == **self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_colon_separated_upper_hex_of_sha256() {
        // SHA-256("abc") from FIPS 180-2.
        let text = "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD";
        let fp = Fingerprint::of(b"abc");
        assert_eq!(fp.to_string(), text);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp.clone()));
        assert_eq!(text.to_lowercase().parse::<Fingerprint>(), Ok(fp.clone()));
        assert_eq!(fp, text);
        assert_eq!(String::from(fp), text);
    }

    #[test]
    fn rejects_text_that_is_not_32_hex_pairs() {
        let good = Fingerprint::of(b"abc").to_string();
        for bad in [
            String::new(),
            good[3..].to_string(),
            format!("{good}:00"),
            good.replace(':', ""),
            good.replacen("BA", "XY", 1),
            good.replacen("BA", "+A", 1),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
            assert_ne!(Fingerprint::of(b"abc"), bad);
        }
    }
}
