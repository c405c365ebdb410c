//! Public ids: a short prefix, an underscore and a ULID (`idx_01JD…`).
//!
//! The SDK puts ids into paths without URL-encoding, so ids only use `[A-Za-z0-9_]`.
//! In JSON (and any human-readable format) an id is its string; in bincode it is the
//! 16-byte ULID, because the type already says which prefix it has.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use ulid::Ulid;

/// The id was not `<prefix>_<ULID>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a valid {kind} id (expected `{prefix}_` followed by a ULID)")]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub given: String,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            pub const KIND: &'static str = $kind;

            pub fn from_ulid(ulid: Ulid) -> Self {
                Self(ulid)
            }

            pub fn ulid(&self) -> Ulid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let err = || IdError { kind: $kind, prefix: $prefix, given: s.chars().take(80).collect() };
                let rest = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or_else(err)?;
                Ulid::from_string(rest).map(Self).map_err(|_| err())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_u128(self.0.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    Ok(Self(Ulid(u128::deserialize(d)?)))
                }
            }
        }
    };
}

prefixed_id!(/// An index (`idx_…`).
    IndexId, "idx", "index");
prefixed_id!(/// A video (`vid_…`).
    VideoId, "vid", "video");
prefixed_id!(/// A storage connector (`conn_…`).
    ConnectorId, "conn", "connector");
prefixed_id!(/// An import job (`job_…`).
    ImportJobId, "job", "import job");
prefixed_id!(/// A prompt (`prompt_…`).
    PromptId, "prompt", "prompt");
prefixed_id!(/// A prompt run (`run_…`).
    PromptRunId, "run", "prompt run");
prefixed_id!(/// An export (`exp_…`).
    ExportId, "exp", "export");
prefixed_id!(/// A webhook (`wh_…`).
    WebhookId, "wh", "webhook");
prefixed_id!(/// One webhook delivery (`del_…`).
    DeliveryId, "del", "delivery");
prefixed_id!(/// An index automation (`auto_…`).
    AutomationId, "auto", "automation");
prefixed_id!(/// An API key's public id (`key_…`); the secret itself is never an id.
    ApiKeyId, "key", "API key");
prefixed_id!(/// One index deletion (`dln_…`), stable across repeated DELETEs.
    DeletionId, "dln", "deletion");
prefixed_id!(/// One manual retry of a prompt run's segment (`retry_…`).
    RetryId, "retry", "segment retry");
prefixed_id!(/// One HTTP request (`req_…`), echoed in error envelopes.
    RequestId, "req", "request");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = IndexId(Ulid::from_parts(1_700_000_000_000, 42));
        let s = id.to_string();
        assert!(s.starts_with("idx_"), "{s}");
        assert_eq!(s.parse::<IndexId>().unwrap(), id);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn wrong_prefix_is_refused_with_the_kind_named() {
        let id = IndexId(Ulid::from_parts(1, 2)).to_string();
        let err = id.replace("idx_", "vid_").parse::<IndexId>().unwrap_err();
        assert_eq!(err.kind, "index");
        assert!("idx_".parse::<IndexId>().is_err());
        assert!("idx_not-a-ulid".parse::<IndexId>().is_err());
        assert!("".parse::<IndexId>().is_err());
    }

    #[test]
    fn json_is_the_prefixed_string() {
        let id = VideoId(Ulid::from_parts(5, 6));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<VideoId>(&json).unwrap(), id);
    }
}

/// The low bits of an id's random part that name the partition of a partitioned cluster which
/// made it (`engine-spec/cluster.md`, "Partitions"): any node routes a request by its id alone.
pub const PARTITION_BITS: u32 = 16;

/// `u` with its low [`PARTITION_BITS`] set to `partition`.
pub fn with_partition(u: ulid::Ulid, partition: u16) -> ulid::Ulid {
    let mask = (1u128 << PARTITION_BITS) - 1;
    ulid::Ulid::from_parts(u.timestamp_ms(), (u.random() & !mask) | u128::from(partition))
}

/// The partition an id was made in (meaningful in a partitioned cluster only).
pub fn partition_of(u: ulid::Ulid) -> u16 {
    u16::try_from(u.random() & ((1u128 << PARTITION_BITS) - 1)).unwrap_or(0)
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    #[test]
    fn an_id_carries_its_partition_and_keeps_its_time() {
        let u = ulid::Ulid::from_parts(1_764_000_000_000, 0xdead_beef_cafe_f00d_1234);
        for p in [0u16, 1, 31, 65535] {
            let t = with_partition(u, p);
            assert_eq!((partition_of(t), t.timestamp_ms()), (p, u.timestamp_ms()));
            assert_eq!(t.random() >> PARTITION_BITS, u.random() >> PARTITION_BITS);
        }
    }
}
