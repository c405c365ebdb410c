use super::ApiKey;
use crate::State;
use spool_model::{Envelope, Event};

/// Fold the key's events; others are not this machine's.
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::ApiKeyCreated { key_id, name, scopes, key_prefix, key_hash, expires_at_ms } => {
            state.api_keys.insert(
                *key_id,
                ApiKey {
                    key_id: *key_id,
                    name: name.clone(),
                    scopes: scopes.clone(),
                    key_prefix: key_prefix.clone(),
                    key_hash: *key_hash,
                    created_at_ms: at,
                    expires_at_ms: *expires_at_ms,
                    revoked_at_ms: None,
                    last_used_at_ms: None,
                },
            );
            state.key_by_hash.insert(*key_hash, *key_id);
            state.api_keys_created += 1;
        }
        Event::ApiKeyRevoked { key_id } => {
            if let Some(k) = state.api_keys.get_mut(key_id) {
                k.revoked_at_ms.get_or_insert(at);
                state.key_by_hash.remove(&k.key_hash);
            }
        }
        Event::ApiKeyRotated { key_id, key_prefix, key_hash } => {
            if let Some(k) = state.api_keys.get_mut(key_id) {
                state.key_by_hash.remove(&k.key_hash);
                k.key_hash = *key_hash;
                k.key_prefix = key_prefix.clone();
                state.key_by_hash.insert(*key_hash, *key_id);
            }
        }
        Event::ApiKeyDeleted { key_id } => {
            if let Some(k) = state.api_keys.remove(key_id) {
                state.key_by_hash.remove(&k.key_hash);
            }
        }
        Event::ApiKeyUsed { key_id, used_at_ms } => {
            if let Some(k) = state.api_keys.get_mut(key_id) {
                k.last_used_at_ms = Some(k.last_used_at_ms.map_or(*used_at_ms, |t| t.max(*used_at_ms)));
            }
        }
        _ => {}
    }
}
