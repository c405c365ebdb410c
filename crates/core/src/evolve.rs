//! `evolve`: fold one envelope into the state. Pure, total, deterministic: an event that does
//! not fit the state (it cannot happen if `decide` wrote it) changes nothing.

use crate::{ApiKey, Deletion, Index, State};
use spool_model::{DeletionStage, Envelope, Event};

pub fn evolve(state: &mut State, env: &Envelope) {
    state.applied_seq = env.seq;
    *state.versions.entry(env.stream.clone()).or_insert(0) += 1;
    let at = env.at_ms;
    match &env.event {
        Event::IndexCreated { index_id, name, user_id } => {
            state.indexes.insert(
                *index_id,
                Index {
                    index_id: *index_id,
                    name: name.clone(),
                    user_id: user_id.clone(),
                    created_at_ms: at,
                    deletion: None,
                },
            );
        }
        Event::IndexDeletionRequested { index_id, deletion_id } => {
            if let Some(i) = state.indexes.get_mut(index_id) {
                i.deletion = Some(Deletion {
                    deletion_id: *deletion_id,
                    stage: DeletionStage::Draining,
                    requested_at_ms: at,
                    finished_at_ms: None,
                });
                state.deleting.insert(*index_id);
            }
        }
        Event::IndexDrained { index_id, .. } => {
            if let Some(d) = state.indexes.get_mut(index_id).and_then(|i| i.deletion.as_mut()) {
                d.stage = DeletionStage::Deleting;
            }
        }
        Event::IndexDeleted { index_id, .. } => {
            if let Some(d) = state.indexes.get_mut(index_id).and_then(|i| i.deletion.as_mut()) {
                d.stage = DeletionStage::Deleted;
                d.finished_at_ms = Some(at);
            }
            state.deleting.remove(index_id);
        }
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
    }
}

/// Fold envelopes, in order, into a state.
pub fn replay<'a>(mut state: State, envs: impl IntoIterator<Item = &'a Envelope>) -> State {
    for env in envs {
        evolve(&mut state, env);
    }
    state
}
