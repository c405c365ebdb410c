//! The persisted events. One enum for every aggregate; each event's stream is the public id
//! of the aggregate it belongs to (see `engine-spec/events.md`).
//!
//! Architecture invariant: variants are only ever appended at the end, fields of an existing
//! variant never change. A change of shape is a new variant (or a new `format_version`
//! decoded in [`crate::codec`]). bincode is not self-describing: no `untagged`, `flatten` or
//! `skip_serializing_if` in anything persisted.

use crate::ids::*;
use serde::{Deserialize, Serialize};

/// API key scopes, ordered: admin > write > read. The SDK's `search` is accepted as read
/// at the API boundary and never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// Where an index deletion stands; the SDK validates these three strings strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeletionStage {
    Draining,
    Deleting,
    Deleted,
}

impl DeletionStage {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionStage::Draining => "draining",
            DeletionStage::Deleting => "deleting",
            DeletionStage::Deleted => "deleted",
        }
    }
}

/// Every fact Spool records. Past tense; the time of the fact is the envelope's `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Stream `idx_…`.
    IndexCreated { index_id: IndexId, name: String, user_id: String },
    /// Stream `idx_…`. The deletion id is decided once; repeated DELETEs return it.
    IndexDeletionRequested { index_id: IndexId, deletion_id: DeletionId },
    /// Stream `idx_…`. No work of the index is running any more.
    IndexDrained { index_id: IndexId, deletion_id: DeletionId },
    /// Stream `idx_…`. Terminal: the index and what it owned are gone.
    IndexDeleted { index_id: IndexId, deletion_id: DeletionId },
    /// Stream `key_…`. Only the SHA-256 of the secret is stored.
    ApiKeyCreated {
        key_id: ApiKeyId,
        name: String,
        scopes: Vec<Scope>,
        key_prefix: String,
        key_hash: [u8; 32],
        expires_at_ms: Option<u64>,
    },
    /// Stream `key_…`.
    ApiKeyRevoked { key_id: ApiKeyId },
    /// Stream `key_…`. The old secret stops working in the same instant.
    ApiKeyRotated { key_id: ApiKeyId, key_prefix: String, key_hash: [u8; 32] },
    /// Stream `key_…`. Terminal.
    ApiKeyDeleted { key_id: ApiKeyId },
    /// Stream `key_…`. Coarse usage (at most one per key per flush interval), never one per request.
    ApiKeyUsed { key_id: ApiKeyId, used_at_ms: u64 },
}

/// The names of the variants, in declaration order; `Event::kind_index` indexes into it.
pub const EVENT_KINDS: &[&str] = &[
    "IndexCreated",
    "IndexDeletionRequested",
    "IndexDrained",
    "IndexDeleted",
    "ApiKeyCreated",
    "ApiKeyRevoked",
    "ApiKeyRotated",
    "ApiKeyDeleted",
    "ApiKeyUsed",
];

impl Event {
    /// The variant's position, equal to the index bincode writes. Exhaustive on purpose:
    /// a new variant does not compile until it is given the next number here.
    pub fn kind_index(&self) -> usize {
        match self {
            Event::IndexCreated { .. } => 0,
            Event::IndexDeletionRequested { .. } => 1,
            Event::IndexDrained { .. } => 2,
            Event::IndexDeleted { .. } => 3,
            Event::ApiKeyCreated { .. } => 4,
            Event::ApiKeyRevoked { .. } => 5,
            Event::ApiKeyRotated { .. } => 6,
            Event::ApiKeyDeleted { .. } => 7,
            Event::ApiKeyUsed { .. } => 8,
        }
    }

    /// The variant's name, as `spool log show` prints it and `--kind` filters it.
    pub fn kind(&self) -> &'static str {
        EVENT_KINDS[self.kind_index()]
    }

    /// One fixed example of every variant, used by the golden-encoding tests.
    #[doc(hidden)]
    pub fn samples() -> Vec<Event> {
        use ulid::Ulid;
        let index_id = IndexId(Ulid::from_parts(1_764_000_000_000, 1));
        let deletion_id = DeletionId(Ulid::from_parts(1_764_000_000_001, 2));
        let key_id = ApiKeyId(Ulid::from_parts(1_764_000_000_002, 3));
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = i as u8 * 7;
        }
        vec![
            Event::IndexCreated { index_id, name: "Library ünïcode".into(), user_id: "local".into() },
            Event::IndexDeletionRequested { index_id, deletion_id },
            Event::IndexDrained { index_id, deletion_id },
            Event::IndexDeleted { index_id, deletion_id },
            Event::ApiKeyCreated {
                key_id,
                name: "ci".into(),
                scopes: vec![Scope::Read, Scope::Write],
                key_prefix: "sk_live_abcd".into(),
                key_hash: hash,
                expires_at_ms: Some(1_800_000_000_000),
            },
            Event::ApiKeyRevoked { key_id },
            Event::ApiKeyRotated { key_id, key_prefix: "sk_live_efgh".into(), key_hash: hash },
            Event::ApiKeyDeleted { key_id },
            Event::ApiKeyUsed { key_id, used_at_ms: 1_764_000_100_000 },
        ]
    }
}
