//! OCSF audit events for TLS certificate reloads.
//!
//! The gateway reports every change to its TLS configuration (the first load,
//! each reload and failed reload, a file watcher that fell back to polling, a
//! served certificate close to expiry) as an [OCSF] v1.8.0 **Device Config
//! State Change** event (class_uid 5019, category Discovery, activity Log,
//! type_uid 501901). This crate is the model of that event and its two
//! renderings:
//!
//! * JSON, one object per line (JSONL), for the audit stream and SIEMs;
//! * a one-line shorthand for people reading logs.
//!
//! It also writes the JSONL to stderr or a file. With the `schema` feature,
//! test support that is off by default, it checks events against the OCSF
//! schema files.
//!
//! # Non-goals
//!
//! * It is not a general OCSF library: it models one class and only the
//!   attributes the gateway fills.
//! * It knows nothing of TLS libraries or certificates: fingerprints,
//!   serials and dates arrive as the strings the caller computed. No part of
//!   the API takes key material, and `unmapped` holds only the named TLS
//!   details of [`TlsReloadDetails`].
//! * It does not ship events anywhere; a log collector reads the JSONL.
//!
//! # Design
//!
//! [`DeviceConfigStateChange`] stores only what can vary; class, category
//! and type uids, and every caption next to an id, are written from the ids,
//! so an event cannot be inconsistent. The enums ([`SeverityId`],
//! [`StatusId`], [`StateId`], [`ActivityId`], [`DeviceTypeId`]) hold the
//! OCSF values and captions and serialize as integers. Events are made by an
//! [`EventBuilder`] that cannot fail; the TLS constructors preset it:
//!
//! | constructor | `metadata.event_code` | severity | status | state | message |
//! | --- | --- | --- | --- | --- | --- |
//! | [`tls_loaded`] | `tls_loaded` | Informational | Success | Enabled | `TLS certificate config loaded` |
//! | [`tls_reloaded`] | `tls_reloaded` | Informational | Success | Enabled | `TLS certificate config reloaded successfully` |
//! | [`tls_reload_failed`] | `tls_reload_failed` | Medium | Failure | Unknown | `TLS certificate config reload failed` |
//! | [`tls_watcher_degraded`] | `tls_watcher_degraded` | Low | Failure | Unknown | `TLS config watcher degraded to polling` |
//! | [`tls_cert_expiring`] | `tls_cert_expiring` | Medium | Success | Enabled | `Served TLS certificate is close to expiry` |
//! | [`tls_reload_unchanged`] | `tls_reload_unchanged` | Informational | Success | Enabled | `TLS certificate config reload requested; files unchanged` |
//! | [`tls_renewal_overdue`] | `tls_renewal_overdue` | Medium | Success | Enabled | `TLS certificate renewal overdue` |
//! | [`tls_client_trust_changed`] | `tls_client_trust_changed` | Informational | Success | Enabled | `TLS client trust changed; open connections checked again` |
//!
//! The error of a failed reload, and the reason of a degraded watcher, go in
//! `status_detail`. A start with an expired leaf is a [`tls_loaded`] event
//! raised to [`SeverityId::High`]. TLS details go under `unmapped.tls`, with
//! the names listed at [`TlsReloadDetails`].
//!
//! # Example
//!
//! Build a reload event and print both renderings (a fixed time makes the
//! output reproducible; without it the builder uses the current time):
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! use openshell_ocsf::{
//!     Device, DeviceConfigStateChange, EventSource, Product, TlsReloadDetails,
//! };
//!
//! # fn main() -> Result<(), openshell_ocsf::Error> {
//! // Once per process.
//! let source = EventSource::new(
//!     Product::new("openshell-gateway", "OpenShell", "0.1.0"),
//!     Device::new("gateway-0"),
//! );
//!
//! // Per reload.
//! let details = TlsReloadDetails::new()
//!     .trigger("watch")
//!     .generation(3)
//!     .previous_fingerprint("9A:77:10:5B:2E:C4:D1:08:3F")
//!     .new_fingerprint("4F:01:C3:8E:2A:19:B7:60:D5")
//!     .serial("1A2B3C")
//!     .not_after("2026-03-01T00:00:00Z")
//!     .cert_path("/etc/openshell-tls/server/tls.crt")
//!     .key_path("/etc/openshell-tls/server/tls.key");
//! let event = DeviceConfigStateChange::tls_reloaded(&source, details)
//!     .time(UNIX_EPOCH + Duration::from_millis(1_767_225_600_000))
//!     .build();
//!
//! println!("{event}");
//! assert_eq!(
//!     event.to_string(),
//!     "CONFIG:RELOADED [INFO] TLS certificate config reloaded successfully \
//!      [fingerprint:4F:01:C3:8E:2A:19:B7:60:.. generation:3 trigger:watch]",
//! );
//!
//! let line = event.to_json()?;
//! println!("{line}");
//! assert!(line.starts_with(r#"{"time":1767225600000,"class_uid":5019,"#));
//! assert!(line.contains(r#""type_uid":501901"#));
//! assert!(line.contains(r#""unmapped":{"tls":{"previous_fingerprint":"9A:77"#));
//! # Ok(())
//! # }
//! ```
//!
//! # Shorthand format
//!
//! [`DeviceConfigStateChange`] implements `Display` as one line:
//!
//! ```text
//! CONFIG:<TAG> [<SEV>] <message>[ [<key>:<value> <key>:<value> ...]]
//! ```
//!
//! * `TAG` comes from `metadata.event_code`: `LOADED`, `RELOADED`, `FAILED`,
//!   `DEGRADED`, `EXPIRING`, `UNCHANGED`, `OVERDUE`, `TRUST`; for other events, `FAILED` when the status is
//!   Failure, else `CHANGED`.
//! * `SEV` is the severity: `UNK`, `INFO`, `LOW`, `MED`, `HIGH`, `CRIT`,
//!   `FATAL`, `OTHER`.
//! * `message` has control characters escaped (`\n`), so the line stays one
//!   line; without a message the class name is used.
//! * The bracket lists, in this order and each only when set:
//!   `error:` (FAILED), `reason:` (DEGRADED) or `detail:` (others) with
//!   `status_detail`, always quoted; `identity:` with the identity;
//!   `fingerprint:` with the new
//!   fingerprint, cut after 8 colon-separated groups and marked `..`;
//!   `not_after:` (EXPIRING and OVERDUE only); `generation:`; `trigger:`;
//!   `added:`, `removed:` (how many client CAs) and `ended:` (how many
//!   connections) when the details hold them. The brackets
//!   are left out when the list is empty.
//! * Quoted values and values holding a space, quote, bracket or control
//!   character are written as escaped, double-quoted strings.
//!
//! ```text
//! CONFIG:RELOADED [INFO] TLS certificate config reloaded successfully [fingerprint:4F:01:C3:8E:2A:19:B7:60:.. generation:3 trigger:watch]
//! CONFIG:FAILED [MED] TLS certificate config reload failed [error:"private key does not match certificate" generation:3 trigger:watch]
//! CONFIG:LOADED [INFO] TLS certificate config loaded [fingerprint:4F:01:C3 generation:1 trigger:startup]
//! CONFIG:DEGRADED [LOW] TLS config watcher degraded to polling [reason:"inotify watch limit reached"]
//! CONFIG:EXPIRING [MED] Served TLS certificate is close to expiry [fingerprint:4F:01:C3 not_after:2026-03-01T00:00:00Z generation:3]
//! CONFIG:OVERDUE [MED] TLS certificate renewal overdue [identity:api.example.com fingerprint:4F:01:C3 not_after:2026-03-01T00:00:00Z]
//! CONFIG:TRUST [INFO] TLS client trust changed; open connections checked again [generation:4 added:1 removed:1 ended:3]
//! ```
//!
//! # Writing the audit stream
//!
//! Write each event to an [`OcsfSink`] from the code that decides it, and
//! handle the error: the sink says whether the line was written and counts
//! the lines it could not write. Audit events deliberately do not travel
//! through a logging framework, where a log filter (`RUST_LOG=warn`) or a
//! missing subscriber would drop them silently, and where an audit layer
//! would make every disabled log callsite of the process cost something.
//! Log the shorthand (`{event}`) as an ordinary log line if people should
//! see it.
//!
//! ```
//! use openshell_ocsf::{
//!     Device, DeviceConfigStateChange, EventSource, OcsfSink, Product, TlsReloadDetails,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("audit.jsonl");
//! let sink = OcsfSink::file(&path)?; // or OcsfSink::stderr()
//! let source = EventSource::new(
//!     Product::new("openshell-gateway", "OpenShell", "0.1.0"),
//!     Device::new("gateway-0"),
//! );
//! let event = DeviceConfigStateChange::tls_loaded(&source, TlsReloadDetails::new()).build();
//! if let Err(error) = sink.write(&event) {
//!     eprintln!("audit event not written: {error}: {event}");
//! }
//! assert_eq!(sink.failed_writes(), 0);
//! assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Testing against the schema (feature `schema`)
//!
//! `schema::Schema` loads an OCSF schema directory given by path and
//! validates event JSON. The v1.8.0 files are not part of the repository:
//! `schema::default_schema_dir` looks for `shared/ocsf/v1.8.0` at run time,
//! from the package directory cargo names (`CARGO_MANIFEST_DIR`) or the
//! current directory upwards, so beside the repository; when there is none
//! its error reads `skipped: shared/ocsf/v1.8.0 not found in <dir> or
//! above`, and tests print that and pass. Other crates' tests enable the
//! feature as a dev-dependency to check the lines they emit; the gateway
//! does not link the validator. The facts the schema test checks (class
//! 5019's required attributes and enums) are also encoded in the typed
//! tests, which always run.
//!
//! # Triggers
//!
//! `unmapped.tls.trigger` is a string (`watch`, `poll`, `signal`, `api`,
//! `startup`): the caller passes its reload library's own trigger by name
//! (`tls_reload::Trigger::as_str` in the gateway), so this crate needs no
//! trigger type and no dependency on that library.
//!
//! [OCSF]: https://schema.ocsf.io/1.8.0/classes/device_config_state_change
//! [`tls_loaded`]: DeviceConfigStateChange::tls_loaded
//! [`tls_reloaded`]: DeviceConfigStateChange::tls_reloaded
//! [`tls_reload_failed`]: DeviceConfigStateChange::tls_reload_failed
//! [`tls_watcher_degraded`]: DeviceConfigStateChange::tls_watcher_degraded
//! [`tls_cert_expiring`]: DeviceConfigStateChange::tls_cert_expiring
//! [`tls_renewal_overdue`]: DeviceConfigStateChange::tls_renewal_overdue
//! [`tls_reload_unchanged`]: DeviceConfigStateChange::tls_reload_unchanged
//! [`tls_client_trust_changed`]: DeviceConfigStateChange::tls_client_trust_changed

#![deny(missing_docs)]

mod builder;
mod enums;
mod error;
mod event;
#[cfg(feature = "schema")]
pub mod schema;
mod shorthand;
mod sink;
mod tls;

pub use crate::builder::EventBuilder;
pub use crate::enums::{ActivityId, DeviceTypeId, SeverityId, StateId, StatusId};
pub use crate::error::Error;
pub use crate::event::{Device, DeviceConfigStateChange, EventSource, OCSF_VERSION, Product};
pub use crate::sink::OcsfSink;
pub use crate::tls::{ClientCaRef, TlsReloadDetails};
