//! The API key machine (engine-spec/machines/api-key.md): keys stored as SHA-256 of their
//! secret, with scopes, expiry, revocation, rotation and coarse usage.

mod decide;
mod evolve;

pub use decide::{KEY_EXPIRY_DAYS_MAX, KEY_NAME_CHARS_MAX, KEY_PREFIX_CHARS, decide};
pub use evolve::evolve;

use crate::Secret;
use serde::{Deserialize, Serialize};
use spool_model::{ApiKeyId, Scope};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiKeyCommand {
    CreateApiKey {
        name: String,
        scopes: Vec<Scope>,
        expires_in_days: Option<u32>,
        secret: Secret,
    },
    RevokeApiKey {
        key_id: ApiKeyId,
    },
    RotateApiKey {
        key_id: ApiKeyId,
        secret: Secret,
    },
    DeleteApiKey {
        key_id: ApiKeyId,
    },
    /// Coarse usage, flushed by the runtime (never one per request).
    RecordApiKeyUse {
        key_id: ApiKeyId,
        used_at_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub key_prefix: String,
    pub key_hash: [u8; 32],
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    pub last_used_at_ms: Option<u64>,
}

impl ApiKey {
    /// The highest scope the key holds.
    pub fn top_scope(&self) -> Scope {
        self.scopes.iter().copied().max().unwrap_or(Scope::Read)
    }

    /// Usable at `now_ms`: not revoked, not expired.
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|e| now_ms < e)
    }
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = ApiKeyCommand;
    type Effect = super::NoEffect;
    type Key = spool_model::ApiKeyId;
    const NOT_FOUND: &'static [(&'static str, &'static str)] = &[("api_key", "resource_api_key_not_found")];

    fn decide(
        state: &crate::State,
        cmd: &ApiKeyCommand,
        ctx: &mut crate::Ctx,
    ) -> Result<crate::Decision, crate::DomainError> {
        decide(state, cmd, ctx)
    }

    fn evolve(state: &mut crate::State, env: &spool_model::Envelope) {
        evolve(state, env)
    }
}
