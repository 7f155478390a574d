//! The Device Config State Change (class 5019) event and the objects it carries.

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::enums::{ActivityId, DeviceTypeId, SeverityId, StateId, StatusId};
use crate::error::Error;
use crate::tls::TlsReloadDetails;

/// The OCSF schema version every event declares in `metadata.version`.
pub const OCSF_VERSION: &str = "1.8.0";

// === impl Product ===

/// `metadata.product`: the software that reports the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Product {
    /// Product name, e.g. `openshell-gateway`.
    pub name: String,
    /// Vendor name, e.g. `OpenShell`.
    pub vendor_name: String,
    /// Product version, e.g. `0.1.0`.
    pub version: String,
}

impl Product {
    /// A product with its name, vendor and version.
    pub fn new(
        name: impl Into<String>,
        vendor_name: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            vendor_name: vendor_name.into(),
            version: version.into(),
        }
    }
}

// === impl Device ===

/// `device`: the host whose configuration changed.
///
/// Serialized with `hostname`, `type_id` and `type` (the caption of
/// `type_id`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Device {
    /// Host name of the device, e.g. the pod name.
    pub hostname: String,
    /// Kind of device.
    pub type_id: DeviceTypeId,
}

impl Device {
    /// A device with this host name.
    ///
    /// # Defaults
    ///
    /// `type_id` is [`DeviceTypeId::Server`].
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            type_id: DeviceTypeId::Server,
        }
    }
}

impl Serialize for Device {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Device", 3)?;
        s.serialize_field("hostname", &self.hostname)?;
        s.serialize_field("type_id", &self.type_id)?;
        s.serialize_field("type", self.type_id.caption())?;
        s.end()
    }
}

// === impl EventSource ===

/// Who reports the events and about which device: the parts of an event
/// that stay the same for the life of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventSource {
    /// Written as `metadata.product`.
    pub product: Product,
    /// Written as `device`.
    pub device: Device,
    /// Written as `metadata.log_name` when set.
    pub log_name: Option<String>,
}

impl EventSource {
    /// A source with this product and device.
    ///
    /// # Defaults
    ///
    /// No `log_name`.
    pub fn new(product: Product, device: Device) -> Self {
        Self {
            product,
            device,
            log_name: None,
        }
    }

    /// Sets `metadata.log_name`, e.g. `audit`. Default: none.
    #[must_use]
    pub fn log_name(mut self, name: impl Into<String>) -> Self {
        self.log_name = Some(name.into());
        self
    }
}

// === impl DeviceConfigStateChange ===

/// An OCSF v1.8.0 Device Config State Change (class 5019) event.
///
/// Build one with [`DeviceConfigStateChange::builder`] or one of the TLS
/// constructors ([`tls_reloaded`](Self::tls_reloaded) and friends).
///
/// Only the values that can vary are stored: `class_uid`, `category_uid`
/// and their names are constants of the type, `type_uid` is computed from
/// `activity_id`, and every `*_name` or caption sibling (`severity`,
/// `status`, `state`, `activity_name`, `type_name`, `device.type`) is written
/// from its id. So no event can carry an inconsistent classification.
///
/// # Renderings
///
/// * JSON, one object per line: [`to_json`](Self::to_json) (and `serde`).
/// * One-line shorthand for people: [`Display`](std::fmt::Display), see the
///   crate docs for its format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfigStateChange {
    pub(crate) time_ms: i64,
    pub(crate) activity_id: ActivityId,
    pub(crate) severity_id: SeverityId,
    pub(crate) status_id: StatusId,
    pub(crate) state_id: StateId,
    pub(crate) message: Option<String>,
    pub(crate) status_detail: Option<String>,
    pub(crate) product: Product,
    pub(crate) device: Device,
    pub(crate) log_name: Option<String>,
    pub(crate) event_code: Option<String>,
    pub(crate) tls: Option<TlsReloadDetails>,
}

impl DeviceConfigStateChange {
    /// `class_uid` of Device Config State Change.
    pub const CLASS_UID: u32 = 5019;
    /// `class_name` of Device Config State Change.
    pub const CLASS_NAME: &'static str = "Device Config State Change";
    /// `category_uid` of the Discovery category.
    pub const CATEGORY_UID: u32 = 5;
    /// `category_name` of the Discovery category.
    pub const CATEGORY_NAME: &'static str = "Discovery";

    /// `time`: when the event occurred, in milliseconds since the Unix epoch.
    pub fn time_ms(&self) -> i64 {
        self.time_ms
    }

    /// `activity_id`.
    pub fn activity_id(&self) -> ActivityId {
        self.activity_id
    }

    /// `type_uid`: `class_uid * 100 + activity_id`.
    pub fn type_uid(&self) -> u32 {
        Self::CLASS_UID * 100 + u32::from(self.activity_id.id())
    }

    /// `type_name`: `"Device Config State Change: "` and the activity caption.
    pub fn type_name(&self) -> String {
        format!("{}: {}", Self::CLASS_NAME, self.activity_id.caption())
    }

    /// `severity_id`.
    pub fn severity_id(&self) -> SeverityId {
        self.severity_id
    }

    /// `status_id`.
    pub fn status_id(&self) -> StatusId {
        self.status_id
    }

    /// `state_id`.
    pub fn state_id(&self) -> StateId {
        self.state_id
    }

    /// `message`, when set.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// `status_detail`, when set (the error of a failed reload).
    pub fn status_detail(&self) -> Option<&str> {
        self.status_detail.as_deref()
    }

    /// `metadata.product`.
    pub fn product(&self) -> &Product {
        &self.product
    }

    /// `device`.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `metadata.log_name`, when set.
    pub fn log_name(&self) -> Option<&str> {
        self.log_name.as_deref()
    }

    /// `metadata.event_code`: which kind of TLS event this is, when it was
    /// made by a TLS constructor (`tls_loaded`, `tls_reloaded`,
    /// `tls_reload_failed`, `tls_watcher_degraded`, `tls_cert_expiring`).
    pub fn event_code(&self) -> Option<&str> {
        self.event_code.as_deref()
    }

    /// `unmapped.tls`, when set.
    pub fn tls(&self) -> Option<&TlsReloadDetails> {
        self.tls.as_ref()
    }

    /// The event as one line of JSON, without the trailing newline.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] if `serde_json` fails, which the types of this
    /// crate give it no reason to do.
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string(self).map_err(Error::Serialize)
    }
}

/// `metadata`, borrowed from the event for serializing.
struct MetadataRef<'a> {
    product: &'a Product,
    log_name: Option<&'a str>,
    event_code: Option<&'a str>,
}

impl Serialize for MetadataRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Metadata", 4)?;
        s.serialize_field("version", OCSF_VERSION)?;
        s.serialize_field("product", self.product)?;
        if let Some(log_name) = self.log_name {
            s.serialize_field("log_name", log_name)?;
        }
        if let Some(event_code) = self.event_code {
            s.serialize_field("event_code", event_code)?;
        }
        s.end()
    }
}

/// `unmapped`, borrowed from the event for serializing.
#[derive(Serialize)]
struct UnmappedRef<'a> {
    tls: &'a TlsReloadDetails,
}

impl Serialize for DeviceConfigStateChange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("DeviceConfigStateChange", 21)?;
        s.serialize_field("time", &self.time_ms)?;
        s.serialize_field("class_uid", &Self::CLASS_UID)?;
        s.serialize_field("class_name", Self::CLASS_NAME)?;
        s.serialize_field("category_uid", &Self::CATEGORY_UID)?;
        s.serialize_field("category_name", Self::CATEGORY_NAME)?;
        s.serialize_field("activity_id", &self.activity_id)?;
        s.serialize_field("activity_name", self.activity_id.caption())?;
        s.serialize_field("type_uid", &self.type_uid())?;
        s.serialize_field("type_name", &self.type_name())?;
        s.serialize_field("severity_id", &self.severity_id)?;
        s.serialize_field("severity", self.severity_id.caption())?;
        s.serialize_field("status_id", &self.status_id)?;
        s.serialize_field("status", self.status_id.caption())?;
        if let Some(detail) = &self.status_detail {
            s.serialize_field("status_detail", detail)?;
        }
        s.serialize_field("state_id", &self.state_id)?;
        s.serialize_field("state", self.state_id.caption())?;
        if let Some(message) = &self.message {
            s.serialize_field("message", message)?;
        }
        s.serialize_field(
            "metadata",
            &MetadataRef {
                product: &self.product,
                log_name: self.log_name.as_deref(),
                event_code: self.event_code.as_deref(),
            },
        )?;
        s.serialize_field("device", &self.device)?;
        if let Some(tls) = &self.tls {
            s.serialize_field("unmapped", &UnmappedRef { tls })?;
        }
        s.end()
    }
}

/// The JSON shape accepted when parsing; derived names are ignored (they
/// are rewritten from the ids), the uids are checked.
#[derive(Deserialize)]
struct WireEvent {
    time: i64,
    class_uid: u64,
    category_uid: u64,
    activity_id: ActivityId,
    type_uid: u64,
    severity_id: SeverityId,
    status_id: Option<StatusId>,
    state_id: Option<StateId>,
    message: Option<String>,
    status_detail: Option<String>,
    metadata: WireMetadata,
    device: Device,
    unmapped: Option<WireUnmapped>,
}

#[derive(Deserialize)]
struct WireMetadata {
    version: String,
    product: Product,
    log_name: Option<String>,
    event_code: Option<String>,
}

#[derive(Deserialize)]
struct WireUnmapped {
    tls: Option<TlsReloadDetails>,
}

fn expect_eq(attribute: &'static str, found: u64, expected: u64) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::InconsistentEvent {
            attribute,
            found: found.to_string(),
            expected: expected.to_string(),
        })
    }
}

impl TryFrom<WireEvent> for DeviceConfigStateChange {
    type Error = Error;

    fn try_from(wire: WireEvent) -> Result<Self, Error> {
        expect_eq("class_uid", wire.class_uid, u64::from(Self::CLASS_UID))?;
        expect_eq(
            "category_uid",
            wire.category_uid,
            u64::from(Self::CATEGORY_UID),
        )?;
        let type_uid = u64::from(Self::CLASS_UID) * 100 + u64::from(wire.activity_id.id());
        expect_eq("type_uid", wire.type_uid, type_uid)?;
        if wire.metadata.version != OCSF_VERSION {
            return Err(Error::InconsistentEvent {
                attribute: "metadata.version",
                found: wire.metadata.version,
                expected: OCSF_VERSION.to_owned(),
            });
        }
        Ok(Self {
            time_ms: wire.time,
            activity_id: wire.activity_id,
            severity_id: wire.severity_id,
            status_id: wire.status_id.unwrap_or(StatusId::Unknown),
            state_id: wire.state_id.unwrap_or(StateId::Unknown),
            message: wire.message,
            status_detail: wire.status_detail,
            product: wire.metadata.product,
            device: wire.device,
            log_name: wire.metadata.log_name,
            event_code: wire.metadata.event_code,
            tls: wire.unmapped.and_then(|u| u.tls),
        })
    }
}

impl<'de> Deserialize<'de> for DeviceConfigStateChange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireEvent::deserialize(deserializer)?;
        Self::try_from(wire).map_err(serde::de::Error::custom)
    }
}
