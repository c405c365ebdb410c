use super::{ApiKey, ApiKeyCommand};
use crate::decide::check_name;
use crate::{Ctx, Decision, DomainError, Outcome, State, hash_secret};
use spool_model::{ApiKeyId, Event};

pub const KEY_NAME_CHARS_MAX: usize = 100;
pub const KEY_EXPIRY_DAYS_MAX: u32 = 365;
/// Characters of a key's secret that are shown as its `key_prefix`.
pub const KEY_PREFIX_CHARS: usize = 12;
const DAY_MS: u64 = 86_400_000;

fn key_prefix(secret: &str) -> String {
    secret.chars().take(KEY_PREFIX_CHARS).collect()
}

fn existing_key<'a>(state: &'a State, key_id: &ApiKeyId) -> Result<&'a ApiKey, DomainError> {
    state.api_keys.get(key_id).ok_or_else(|| DomainError::NotFound { kind: "api_key", id: key_id.to_string() })
}

pub fn decide(state: &State, cmd: &ApiKeyCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        ApiKeyCommand::CreateApiKey { name, scopes, expires_in_days, secret } => {
            let name = check_name("name", name, KEY_NAME_CHARS_MAX)?;
            if scopes.is_empty() {
                return Err(DomainError::invalid("scopes", "must name at least one scope"));
            }
            let mut scopes = scopes.clone();
            scopes.sort();
            scopes.dedup();
            let expires_at_ms = match expires_in_days {
                None => None,
                Some(d) if (1..=KEY_EXPIRY_DAYS_MAX).contains(d) => Some(ctx.now_ms + u64::from(*d) * DAY_MS),
                Some(d) => {
                    return Err(DomainError::invalid(
                        "expires_in_days",
                        format!("must be between 1 and {KEY_EXPIRY_DAYS_MAX} (got {d})"),
                    ));
                }
            };
            let key_hash = hash_secret(&secret.0);
            if state.key_by_hash.contains_key(&key_hash) {
                return Err(DomainError::InvalidState("this secret is already in use".into()));
            }
            let key_id = ApiKeyId(ctx.new_ulid());
            let ev = Event::ApiKeyCreated {
                key_id,
                name,
                scopes,
                key_prefix: key_prefix(&secret.0),
                key_hash,
                expires_at_ms,
            };
            Ok(Decision::one(key_id.to_string(), vec![ev], Outcome::ApiKey(key_id)))
        }
        ApiKeyCommand::RevokeApiKey { key_id } => {
            let key = existing_key(state, key_id)?;
            if key.revoked_at_ms.is_some() {
                return Ok(Decision::nothing(Outcome::ApiKey(*key_id)));
            }
            Ok(Decision::one(
                key_id.to_string(),
                vec![Event::ApiKeyRevoked { key_id: *key_id }],
                Outcome::ApiKey(*key_id),
            ))
        }
        ApiKeyCommand::RotateApiKey { key_id, secret } => {
            let key = existing_key(state, key_id)?;
            if key.revoked_at_ms.is_some() {
                return Err(DomainError::InvalidState(format!("API key {key_id} is revoked and cannot be rotated")));
            }
            let key_hash = hash_secret(&secret.0);
            if state.key_by_hash.contains_key(&key_hash) {
                return Err(DomainError::InvalidState("this secret is already in use".into()));
            }
            let ev = Event::ApiKeyRotated { key_id: *key_id, key_prefix: key_prefix(&secret.0), key_hash };
            Ok(Decision::one(key_id.to_string(), vec![ev], Outcome::ApiKey(*key_id)))
        }
        ApiKeyCommand::DeleteApiKey { key_id } => {
            existing_key(state, key_id)?;
            Ok(Decision::one(key_id.to_string(), vec![Event::ApiKeyDeleted { key_id: *key_id }], Outcome::Done))
        }
        ApiKeyCommand::RecordApiKeyUse { key_id, used_at_ms } => match state.api_keys.get(key_id) {
            Some(k) if k.last_used_at_ms.is_none_or(|t| t < *used_at_ms) => {
                let ev = Event::ApiKeyUsed { key_id: *key_id, used_at_ms: *used_at_ms };
                Ok(Decision::one(key_id.to_string(), vec![ev], Outcome::Done))
            }
            _ => Ok(Decision::nothing(Outcome::Done)),
        },
    }
}
