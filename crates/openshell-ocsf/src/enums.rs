//! The OCSF enum attributes this crate emits, with the ids and captions of
//! OCSF v1.8.0.
//!
//! Each enum serializes as its integer id (the `*_id` attribute); the sibling
//! string attribute (`severity`, `status`, ...) is its [`caption`], written by
//! the event serializer so that id and caption can never disagree. Every
//! OCSF enum has `Unknown` (0) and `Other` (99); the macro adds both.
//!
//! [`caption`]: SeverityId::caption

use serde::de::{self, Deserializer, Unexpected};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Defines a fieldless OCSF enum: `Unknown` (0), the listed variants with
/// their ids and captions (the variant's name unless given), and `Other`
/// (99); `id()`, `caption()`, `from_id()`, `ALL`, and serde as the integer
/// id. Each variant's docs end with its caption and id.
macro_rules! ocsf_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $attr:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $id:literal $(=> $caption:literal)? ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            /// The value is unknown (caption `Unknown`, id 0).
            Unknown,
            $(
                $(#[$vmeta])*
                #[doc = concat!("\n\nCaption `", caption!($variant $(, $caption)?), "`, id ", $id, ".")]
                $variant,
            )+
            /// A value OCSF does not normalize; the source names it in the
            /// sibling string (caption `Other`, id 99).
            Other,
        }

        impl $name {
            /// Every value, in the order of their ids.
            pub const ALL: &'static [Self] = &[Self::Unknown, $(Self::$variant,)+ Self::Other];

            /// The integer OCSF writes in the `*_id` attribute.
            pub const fn id(self) -> u8 {
                match self {
                    Self::Unknown => 0,
                    $(Self::$variant => $id,)+
                    Self::Other => 99,
                }
            }

            /// The OCSF caption of this value, written in the sibling string
            /// attribute.
            pub const fn caption(self) -> &'static str {
                match self {
                    Self::Unknown => "Unknown",
                    $(Self::$variant => caption!($variant $(, $caption)?),)+
                    Self::Other => "Other",
                }
            }

            /// The value with this id, or `None` when OCSF v1.8.0 defines no
            /// such value.
            pub const fn from_id(id: u64) -> Option<Self> {
                match id {
                    0 => Some(Self::Unknown),
                    $($id => Some(Self::$variant),)+
                    99 => Some(Self::Other),
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

/// A variant's caption: the one given, else the variant's name.
macro_rules! caption {
    ($variant:ident) => {
        stringify!($variant)
    };
    ($variant:ident, $caption:literal) => {
        $caption
    };
}

ocsf_enum! {
    /// `severity_id`: how much attention the event needs.
    SeverityId, "severity_id" {
        /// Informational message; no action required.
        Informational = 1,
        /// The user decides if action is needed.
        Low = 2,
        /// Action is required but the situation is not serious at this time.
        Medium = 3,
        /// Action is required immediately.
        High = 4,
        /// Action is required immediately and the scope is broad.
        Critical = 5,
        /// An error occurred but it is too late to take remedial action.
        Fatal = 6,
    }
}

ocsf_enum! {
    /// `status_id`: the outcome of the reported operation.
    StatusId, "status_id" {
        /// The operation succeeded.
        Success = 1,
        /// The operation failed.
        Failure = 2,
    }
}

ocsf_enum! {
    /// `state_id`: the Config Change State of the managed entity (class 5019).
    StateId, "state_id" {
        /// The config state changed to disabled.
        Disabled = 1,
        /// The config state changed to enabled.
        Enabled = 2,
    }
}

ocsf_enum! {
    /// `activity_id` of Device Config State Change (class 5019); it also
    /// fixes `type_uid` as `class_uid * 100 + activity_id`.
    ActivityId, "activity_id" {
        /// The information was discovered via a log.
        Log = 1,
        /// The information was discovered via a collection process.
        Collect = 2,
    }
}

ocsf_enum! {
    /// `device.type_id`: the kind of device the event is about (the
    /// captions say what each is: IOT, IDS and IPS are spelt as OCSF does).
    DeviceTypeId, "device.type_id" {
        Server = 1, Desktop = 2, Laptop = 3, Tablet = 4, Mobile = 5, Virtual = 6,
        Iot = 7 => "IOT", Browser = 8, Firewall = 9, Switch = 10, Hub = 11, Router = 12,
        Ids = 13 => "IDS", Ips = 14 => "IPS", LoadBalancer = 15 => "Load Balancer",
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
