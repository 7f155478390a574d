//! The OCSF enum attributes this crate emits, with the ids and captions of
//! OCSF v1.8.0.
//!
//! Each enum serializes as its integer id (the `*_id` attribute); the sibling
//! string attribute (`severity`, `status`, ...) is its [`caption`], written by
//! the event serializer so that id and caption can never disagree.
//!
//! [`caption`]: SeverityId::caption

use serde::de::{self, Deserializer, Unexpected};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Defines a fieldless OCSF enum: the variants with their ids and captions,
/// `id()`, `caption()`, `from_id()`, `ALL`, and serde as the integer id.
macro_rules! ocsf_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $attr:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $id:literal => $caption:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order of their ids.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The integer OCSF writes in the `*_id` attribute.
            pub const fn id(self) -> u8 {
                match self {
                    $(Self::$variant => $id,)+
                }
            }

            /// The OCSF caption of this value, written in the sibling string
            /// attribute.
            pub const fn caption(self) -> &'static str {
                match self {
                    $(Self::$variant => $caption,)+
                }
            }

            /// The value with this id, or `None` when OCSF v1.8.0 defines no
            /// such value.
            pub const fn from_id(id: u64) -> Option<Self> {
                match id {
                    $($id => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_u8(self.id())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let id = u64::deserialize(deserializer)?;
                Self::from_id(id).ok_or_else(|| {
                    de::Error::invalid_value(
                        Unexpected::Unsigned(id),
                        &concat!("an OCSF v1.8.0 ", $attr, " value"),
                    )
                })
            }
        }
    };
}

ocsf_enum! {
    /// `severity_id`: how much attention the event needs.
    SeverityId, "severity_id" {
        /// The severity is unknown.
        Unknown = 0 => "Unknown",
        /// Informational message; no action required.
        Informational = 1 => "Informational",
        /// The user decides if action is needed.
        Low = 2 => "Low",
        /// Action is required but the situation is not serious at this time.
        Medium = 3 => "Medium",
        /// Action is required immediately.
        High = 4 => "High",
        /// Action is required immediately and the scope is broad.
        Critical = 5 => "Critical",
        /// An error occurred but it is too late to take remedial action.
        Fatal = 6 => "Fatal",
        /// Not mapped to a normalized severity.
        Other = 99 => "Other",
    }
}

ocsf_enum! {
    /// `status_id`: the outcome of the reported operation.
    StatusId, "status_id" {
        /// The status is unknown.
        Unknown = 0 => "Unknown",
        /// The operation succeeded.
        Success = 1 => "Success",
        /// The operation failed.
        Failure = 2 => "Failure",
        /// Not mapped to a normalized status.
        Other = 99 => "Other",
    }
}

ocsf_enum! {
    /// `state_id`: the Config Change State of the managed entity (class 5019).
    StateId, "state_id" {
        /// The config change state is unknown or does not apply.
        Unknown = 0 => "Unknown",
        /// The config state changed to disabled.
        Disabled = 1 => "Disabled",
        /// The config state changed to enabled.
        Enabled = 2 => "Enabled",
        /// Not mapped to a normalized state.
        Other = 99 => "Other",
    }
}

ocsf_enum! {
    /// `activity_id` of Device Config State Change (class 5019); it also
    /// fixes `type_uid` as `class_uid * 100 + activity_id`.
    ActivityId, "activity_id" {
        /// The activity is unknown.
        Unknown = 0 => "Unknown",
        /// The information was discovered via a log.
        Log = 1 => "Log",
        /// The information was discovered via a collection process.
        Collect = 2 => "Collect",
        /// Not mapped to a normalized activity.
        Other = 99 => "Other",
    }
}

ocsf_enum! {
    /// `device.type_id`: the kind of device the event is about.
    DeviceTypeId, "device.type_id" {
        /// The type is unknown.
        Unknown = 0 => "Unknown",
        /// A server.
        Server = 1 => "Server",
        /// A desktop computer.
        Desktop = 2 => "Desktop",
        /// A laptop computer.
        Laptop = 3 => "Laptop",
        /// A tablet computer.
        Tablet = 4 => "Tablet",
        /// A mobile phone.
        Mobile = 5 => "Mobile",
        /// A virtual machine.
        Virtual = 6 => "Virtual",
        /// An IoT device.
        Iot = 7 => "IOT",
        /// A web browser.
        Browser = 8 => "Browser",
        /// A firewall.
        Firewall = 9 => "Firewall",
        /// A network switch.
        Switch = 10 => "Switch",
        /// A network hub.
        Hub = 11 => "Hub",
        /// A router.
        Router = 12 => "Router",
        /// An intrusion detection system.
        Ids = 13 => "IDS",
        /// An intrusion prevention system.
        Ips = 14 => "IPS",
        /// A load balancer.
        LoadBalancer = 15 => "Load Balancer",
        /// Not mapped to a normalized device type.
        Other = 99 => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_id_inverts_id_for_every_value() {
        for &s in SeverityId::ALL {
            assert_eq!(SeverityId::from_id(u64::from(s.id())), Some(s));
        }
        for &s in StatusId::ALL {
            assert_eq!(StatusId::from_id(u64::from(s.id())), Some(s));
        }
        for &s in StateId::ALL {
            assert_eq!(StateId::from_id(u64::from(s.id())), Some(s));
        }
        for &a in ActivityId::ALL {
            assert_eq!(ActivityId::from_id(u64::from(a.id())), Some(a));
        }
        for &d in DeviceTypeId::ALL {
            assert_eq!(DeviceTypeId::from_id(u64::from(d.id())), Some(d));
        }
    }

    #[test]
    fn from_id_rejects_ids_ocsf_does_not_define() {
        assert_eq!(SeverityId::from_id(7), None);
        assert_eq!(StatusId::from_id(3), None);
        assert_eq!(StateId::from_id(3), None);
        assert_eq!(ActivityId::from_id(3), None);
        assert_eq!(DeviceTypeId::from_id(16), None);
    }

    #[test]
    fn serializes_as_the_integer_id() {
        assert_eq!(serde_json::to_string(&SeverityId::Medium).unwrap(), "3");
        assert_eq!(serde_json::to_string(&StatusId::Other).unwrap(), "99");
    }

    #[test]
    fn deserializing_an_undefined_id_names_the_attribute() {
        let err = serde_json::from_str::<SeverityId>("7").unwrap_err();
        assert!(
            err.to_string().contains("an OCSF v1.8.0 severity_id value"),
            "{err}"
        );
    }
}
