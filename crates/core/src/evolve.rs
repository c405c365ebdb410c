//! `evolve`: fold one envelope into the state. Pure, total, deterministic: an event that does
//! not fit the state (it cannot happen if `decide` wrote it) changes nothing.

use crate::{ApiKey, Connector, ConnectorTest, Deletion, Index, State};
use spool_model::{DeletionStage, Envelope, Event};

pub fn evolve(state: &mut State, env: &Envelope) {
    state.applied_seq = env.seq;
    let at = env.at_ms;
    match &env.event {
        Event::IndexCreated { index_id, name, user_id } => {
            state.indexes.insert(
                *index_id,
                Index {
                    index_id: *index_id,
                    name: name.clone(),
                    user_id: user_id.clone(),
                    description: None,
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
        Event::ConnectorCreated {
            connector_id,
            provider,
            name,
            scopes,
            import_mode,
            export_base_path,
            location,
            credentials,
        } => {
            state.connectors.insert(
                *connector_id,
                Connector {
                    connector_id: *connector_id,
                    provider: *provider,
                    name: name.clone(),
                    scopes: scopes.clone(),
                    import_mode: *import_mode,
                    export_base_path: export_base_path.clone(),
                    location: location.clone(),
                    credentials: credentials.clone(),
                    created_at_ms: at,
                    updated_at_ms: at,
                    last_test: None,
                    deleted_at_ms: None,
                },
            );
        }
        Event::ConnectorUpdated { connector_id, name, scopes, import_mode, export_base_path, credentials } => {
            if let Some(c) = state.connectors.get_mut(connector_id) {
                if let Some(n) = name {
                    c.name = n.clone();
                }
                if let Some(s) = scopes {
                    c.scopes = s.clone();
                }
                if let Some(m) = import_mode {
                    c.import_mode = *m;
                }
                if let Some(p) = export_base_path {
                    c.export_base_path = p.clone();
                }
                if let Some(cr) = credentials {
                    c.credentials = Some(cr.clone());
                }
                c.updated_at_ms = at;
            }
        }
        Event::ConnectorTested { connector_id, success, error } => {
            if let Some(c) = state.connectors.get_mut(connector_id) {
                c.last_test = Some(ConnectorTest { at_ms: at, success: *success, error: error.clone() });
            }
        }
        Event::ImportJobCreated { .. }
        | Event::ImportFilesDiscovered { .. }
        | Event::ImportScanCompleted { .. }
        | Event::ImportFileStarted { .. }
        | Event::ImportFileImported { .. }
        | Event::ImportFileFailed { .. }
        | Event::ImportJobCompleted { .. }
        | Event::ImportJobFailed { .. }
        | Event::ImportJobCancelled { .. }
        | Event::ImportJobRetried { .. }
        | Event::VideoCreated { .. }
        | Event::DomainEventRaised { .. }
        | Event::ImportJobCancelRequested { .. }
        | Event::ImportFileRetryScheduled { .. }
        | Event::ImportFileRetryDue { .. } => crate::imports::evolve(state, env),
        Event::IndexDescriptionSet { index_id, description } => {
            if let Some(i) = state.indexes.get_mut(index_id) {
                i.description = Some(description.clone());
            }
        }
        Event::ConnectorDeleted { connector_id } => {
            if let Some(c) = state.connectors.get_mut(connector_id) {
                c.deleted_at_ms = Some(at);
                // The sealed bytes stay in the log; the data key is gone, so keep no copy.
                c.credentials = None;
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
