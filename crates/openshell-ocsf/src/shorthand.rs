//! The one-line shorthand rendering (`Display`); the format is documented in
//! the crate docs.

use std::fmt::{self, Write as _};

use crate::builder::Kind;
use crate::enums::{SeverityId, StatusId};
use crate::event::DeviceConfigStateChange;

/// Fingerprints with more colon-separated groups than this are cut to this
/// many, followed by `..` (the full value is in the JSON).
const FINGERPRINT_GROUPS: usize = 8;

impl fmt::Display for DeviceConfigStateChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.event_code.as_deref().and_then(Kind::from_code);
        write!(
            f,
            "CONFIG:{} [{}] ",
            tag(kind, self.status_id),
            severity_tag(self.severity_id)
        )?;
        write_message(f, self.message.as_deref().unwrap_or(Self::CLASS_NAME))?;

        let tls = self.tls.as_ref();
        let mut fields = Fields::new(f);
        if let Some(detail) = &self.status_detail {
            let label = match kind {
                Some(Kind::ReloadFailed) => "error",
                Some(Kind::WatcherDegraded) => "reason",
                _ => "detail",
            };
            fields.quoted(label, detail)?;
        }
        if let Some(identity) = tls.and_then(|t| t.identity.as_deref()) {
            fields.plain("identity", identity)?;
        }
        if let Some(fingerprint) = tls.and_then(|t| t.new_fingerprint.as_deref()) {
            fields.plain("fingerprint", &abbreviate_fingerprint(fingerprint))?;
        }
        if matches!(kind, Some(Kind::CertExpiring | Kind::RenewalOverdue))
            && let Some(not_after) = tls.and_then(|t| t.not_after.as_deref())
        {
            fields.plain("not_after", not_after)?;
        }
        if let Some(generation) = tls.and_then(|t| t.generation) {
            fields.plain("generation", &generation.to_string())?;
        }
        if let Some(trigger) = tls.and_then(|t| t.trigger.as_deref()) {
            fields.plain("trigger", trigger)?;
        }
        if let Some(tls) = tls {
            let counts = [
                (
                    "added",
                    tls.client_cas_added.as_ref().map(|c| c.len() as u64),
                ),
                (
                    "removed",
                    tls.client_cas_removed.as_ref().map(|c| c.len() as u64),
                ),
                ("ended", tls.connections_ended),
            ];
            for (key, count) in counts {
                if let Some(count) = count {
                    fields.plain(key, &count.to_string())?;
                }
            }
        }
        fields.finish()
    }
}

fn tag(kind: Option<Kind>, status: StatusId) -> &'static str {
    match kind {
        Some(Kind::Loaded) => "LOADED",
        Some(Kind::Reloaded) => "RELOADED",
        Some(Kind::ReloadFailed) => "FAILED",
        Some(Kind::WatcherDegraded) => "DEGRADED",
        Some(Kind::CertExpiring) => "EXPIRING",
        Some(Kind::ReloadUnchanged) => "UNCHANGED",
        Some(Kind::RenewalOverdue) => "OVERDUE",
        Some(Kind::TrustChanged) => "TRUST",
        None if status == StatusId::Failure => "FAILED",
        None => "CHANGED",
    }
}

fn severity_tag(severity: SeverityId) -> &'static str {
    match severity {
        SeverityId::Unknown => "UNK",
        SeverityId::Informational => "INFO",
        SeverityId::Low => "LOW",
        SeverityId::Medium => "MED",
        SeverityId::High => "HIGH",
        SeverityId::Critical => "CRIT",
        SeverityId::Fatal => "FATAL",
        SeverityId::Other => "OTHER",
    }
}

/// Writes the message with control characters escaped, so the shorthand
/// stays on one line whatever the message holds.
fn write_message(f: &mut fmt::Formatter<'_>, message: &str) -> fmt::Result {
    for c in message.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

/// `4F:01:A2:...` (32 groups) becomes `4F:01:A2:B3:C4:D5:E6:F7:..`; values
/// with at most [`FINGERPRINT_GROUPS`] groups are kept whole.
fn abbreviate_fingerprint(fingerprint: &str) -> String {
    let groups: Vec<&str> = fingerprint.split(':').collect();
    if groups.len() <= FINGERPRINT_GROUPS {
        return fingerprint.to_owned();
    }
    let mut short = groups[..FINGERPRINT_GROUPS].join(":");
    short.push_str(":..");
    short
}

/// The trailing ` [key:value key:value]` list; nothing when empty.
struct Fields<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    any: bool,
}

impl<'a, 'b> Fields<'a, 'b> {
    fn new(f: &'a mut fmt::Formatter<'b>) -> Self {
        Self { f, any: false }
    }

    fn key(&mut self, key: &str) -> fmt::Result {
        self.f.write_str(if self.any { " " } else { " [" })?;
        self.any = true;
        write!(self.f, "{key}:")
    }

    /// Always quoted: free text such as an error message.
    fn quoted(&mut self, key: &str, value: &str) -> fmt::Result {
        self.key(key)?;
        write!(self.f, "{value:?}")
    }

    /// Written bare, unless it is empty or holds a space, quote, bracket or
    /// control character, in which case it is quoted like free text.
    fn plain(&mut self, key: &str, value: &str) -> fmt::Result {
        let needs_quotes = value.is_empty()
            || value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '[' | ']'));
        if needs_quotes {
            self.quoted(key, value)
        } else {
            self.key(key)?;
            self.f.write_str(value)
        }
    }

    fn finish(self) -> fmt::Result {
        if self.any {
            self.f.write_str("]")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fingerprints_keep_eight_groups() {
        let full = (0..32)
            .map(|i| format!("{i:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(abbreviate_fingerprint(&full), "00:01:02:03:04:05:06:07:..");
    }

    #[test]
    fn short_fingerprints_are_kept_whole() {
        assert_eq!(abbreviate_fingerprint("4F:01:C3"), "4F:01:C3");
        assert_eq!(abbreviate_fingerprint("4f01c3"), "4f01c3");
    }

    #[test]
    fn every_severity_has_a_distinct_tag() {
        let mut tags: Vec<&str> = SeverityId::ALL.iter().map(|&s| severity_tag(s)).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), SeverityId::ALL.len());
    }
}
