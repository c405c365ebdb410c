//! `decide`: a command and the state in, events (or a refusal) out. Pure.

use crate::{ApiKey, Command, Ctx, DomainError, State, hash_secret, imports};
use spool_model::{ApiKeyId, ConnectorId, ConnectorScope, DeletionId, DeletionStage, Event, IndexId, Scope};

pub const INDEX_NAME_CHARS_MAX: usize = 255;
pub const INDEX_DESCRIPTION_CHARS_MAX: usize = 2000;
pub const KEY_NAME_CHARS_MAX: usize = 100;
pub const CONNECTOR_NAME_CHARS_MAX: usize = 100;
pub const EXPORT_BASE_PATH_CHARS_MAX: usize = 1024;
/// Longest connection-test error kept in an event.
pub const TEST_ERROR_CHARS_MAX: usize = 1000;
pub const KEY_EXPIRY_DAYS_MAX: u32 = 365;
/// Characters of a key's secret that are shown as its `key_prefix`.
pub const KEY_PREFIX_CHARS: usize = 12;
const DAY_MS: u64 = 86_400_000;

/// Events for one stream. The sequencer appends decisions in the order it made them, so no
/// expected version is needed: nothing else writes events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvents {
    pub stream: String,
    pub events: Vec<Event>,
}

/// What a command resolved to, so the caller can render its answer from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Index(IndexId),
    ApiKey(ApiKeyId),
    Connector(ConnectorId),
    ImportJob(spool_model::ImportJobId),
    /// Nothing to show (effect outcomes, usage records).
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub streams: Vec<StreamEvents>,
    pub outcome: Outcome,
}

impl Decision {
    fn one(_state: &State, stream: String, events: Vec<Event>, outcome: Outcome) -> Decision {
        Decision { streams: vec![StreamEvents { stream, events }], outcome }
    }

    fn nothing(outcome: Outcome) -> Decision {
        Decision { streams: Vec::new(), outcome }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.iter().all(|s| s.events.is_empty())
    }
}

fn check_name(field: &'static str, name: &str, max: usize) -> Result<String, DomainError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    let n = name.chars().count();
    if n > max {
        return Err(DomainError::invalid(field, format!("must be at most {max} characters (got {n})")));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(DomainError::invalid(field, "must not contain control characters"));
    }
    Ok(name.to_string())
}

/// Normalize an export base path: relative, `/`-separated, no empty, `.` or `..` segments,
/// no backslashes; a trailing `/` is dropped; empty means none.
pub fn normalize_export_base_path(raw: &str) -> Result<Option<String>, DomainError> {
    const FIELD: &str = "export_base_path";
    let t = raw.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.chars().count() > EXPORT_BASE_PATH_CHARS_MAX {
        return Err(DomainError::invalid(FIELD, format!("must be at most {EXPORT_BASE_PATH_CHARS_MAX} characters")));
    }
    if t.contains('\\') {
        return Err(DomainError::invalid(FIELD, "must use / as separator, not backslashes"));
    }
    if t.starts_with('/') {
        return Err(DomainError::invalid(FIELD, "must be relative to the bucket (no leading /)"));
    }
    if t.chars().any(|c| c.is_control()) {
        return Err(DomainError::invalid(FIELD, "must not contain control characters"));
    }
    let t = t.strip_suffix('/').unwrap_or(t);
    for seg in t.split('/') {
        match seg {
            "" => return Err(DomainError::invalid(FIELD, "must not contain empty segments (//)")),
            "." | ".." => return Err(DomainError::invalid(FIELD, "must not contain . or .. segments")),
            _ => {}
        }
    }
    Ok(Some(t.to_string()))
}

fn check_scopes(scopes: &[ConnectorScope]) -> Result<Vec<ConnectorScope>, DomainError> {
    if scopes.is_empty() {
        return Err(DomainError::invalid("scopes", "must name import, export or both"));
    }
    let mut s = scopes.to_vec();
    s.sort();
    s.dedup();
    Ok(s)
}

fn live_connector<'a>(state: &'a State, id: &ConnectorId) -> Result<&'a crate::Connector, DomainError> {
    state.live_connector(id).ok_or_else(|| DomainError::NotFound { kind: "connector", id: id.to_string() })
}

fn key_prefix(secret: &str) -> String {
    secret.chars().take(KEY_PREFIX_CHARS).collect()
}

fn existing_key<'a>(state: &'a State, key_id: &ApiKeyId) -> Result<&'a ApiKey, DomainError> {
    state.api_keys.get(key_id).ok_or_else(|| DomainError::NotFound { kind: "api_key", id: key_id.to_string() })
}

pub fn decide(state: &State, cmd: &Command, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        Command::CreateIndex { name, user_id, description } => {
            let name = check_name("name", name, INDEX_NAME_CHARS_MAX)?;
            let description = match description.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
                None => None,
                Some(d) => {
                    if d.chars().count() > INDEX_DESCRIPTION_CHARS_MAX {
                        return Err(DomainError::invalid(
                            "description",
                            format!("must be at most {INDEX_DESCRIPTION_CHARS_MAX} characters"),
                        ));
                    }
                    if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                        return Err(DomainError::invalid("description", "must not contain control characters"));
                    }
                    Some(d.to_string())
                }
            };
            let index_id = IndexId(ctx.new_ulid());
            let mut events = vec![Event::IndexCreated { index_id, name, user_id: user_id.clone() }];
            if let Some(description) = description {
                events.push(Event::IndexDescriptionSet { index_id, description });
            }
            Ok(Decision::one(state, index_id.to_string(), events, Outcome::Index(index_id)))
        }
        Command::DeleteIndex { index_id } => {
            let index = state
                .indexes
                .get(index_id)
                .ok_or_else(|| DomainError::NotFound { kind: "index", id: index_id.to_string() })?;
            if index.deletion.is_some() {
                // Start or resume: a repeated DELETE returns the deletion already under way.
                return Ok(Decision::nothing(Outcome::Index(*index_id)));
            }
            let deletion_id = DeletionId(ctx.new_ulid());
            let ev = Event::IndexDeletionRequested { index_id: *index_id, deletion_id };
            Ok(Decision::one(state, index_id.to_string(), vec![ev], Outcome::Index(*index_id)))
        }
        Command::RecordIndexDrained { index_id, deletion_id } => {
            // Outcomes arrive at least once: only the first one for the current stage counts.
            let current = state.indexes.get(index_id).and_then(|i| i.deletion.as_ref());
            match current {
                Some(d) if d.deletion_id == *deletion_id && d.stage == DeletionStage::Draining => {
                    let ev = Event::IndexDrained { index_id: *index_id, deletion_id: *deletion_id };
                    Ok(Decision::one(state, index_id.to_string(), vec![ev], Outcome::Done))
                }
                _ => Ok(Decision::nothing(Outcome::Done)),
            }
        }
        Command::RecordIndexPurged { index_id, deletion_id } => {
            let current = state.indexes.get(index_id).and_then(|i| i.deletion.as_ref());
            match current {
                Some(d) if d.deletion_id == *deletion_id && d.stage == DeletionStage::Deleting => {
                    let ev = Event::IndexDeleted { index_id: *index_id, deletion_id: *deletion_id };
                    Ok(Decision::one(state, index_id.to_string(), vec![ev], Outcome::Done))
                }
                _ => Ok(Decision::nothing(Outcome::Done)),
            }
        }
        Command::CreateApiKey { name, scopes, expires_in_days, secret } => {
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
            Ok(Decision::one(state, key_id.to_string(), vec![ev], Outcome::ApiKey(key_id)))
        }
        Command::RevokeApiKey { key_id } => {
            let key = existing_key(state, key_id)?;
            if key.revoked_at_ms.is_some() {
                return Ok(Decision::nothing(Outcome::ApiKey(*key_id)));
            }
            Ok(Decision::one(
                state,
                key_id.to_string(),
                vec![Event::ApiKeyRevoked { key_id: *key_id }],
                Outcome::ApiKey(*key_id),
            ))
        }
        Command::RotateApiKey { key_id, secret } => {
            let key = existing_key(state, key_id)?;
            if key.revoked_at_ms.is_some() {
                return Err(DomainError::InvalidState(format!("API key {key_id} is revoked and cannot be rotated")));
            }
            let key_hash = hash_secret(&secret.0);
            if state.key_by_hash.contains_key(&key_hash) {
                return Err(DomainError::InvalidState("this secret is already in use".into()));
            }
            let ev = Event::ApiKeyRotated { key_id: *key_id, key_prefix: key_prefix(&secret.0), key_hash };
            Ok(Decision::one(state, key_id.to_string(), vec![ev], Outcome::ApiKey(*key_id)))
        }
        Command::DeleteApiKey { key_id } => {
            existing_key(state, key_id)?;
            Ok(Decision::one(state, key_id.to_string(), vec![Event::ApiKeyDeleted { key_id: *key_id }], Outcome::Done))
        }
        Command::CreateConnector {
            connector_id,
            provider,
            name,
            scopes,
            import_mode,
            export_base_path,
            location,
            credentials,
        } => {
            if state.connectors.contains_key(connector_id) {
                return Err(DomainError::InvalidState(format!("connector {connector_id} already exists")));
            }
            let name = check_name("name", name, CONNECTOR_NAME_CHARS_MAX)?;
            let scopes = check_scopes(scopes)?;
            let export_base_path = match export_base_path {
                Some(p) => normalize_export_base_path(p)?,
                None => None,
            };
            let ev = Event::ConnectorCreated {
                connector_id: *connector_id,
                provider: *provider,
                name,
                scopes,
                import_mode: *import_mode,
                export_base_path,
                location: location.clone(),
                credentials: credentials.clone(),
            };
            Ok(Decision::one(state, connector_id.to_string(), vec![ev], Outcome::Connector(*connector_id)))
        }
        Command::UpdateConnector { connector_id, name, scopes, import_mode, export_base_path, credentials } => {
            let current = live_connector(state, connector_id)?;
            let name = match name {
                Some(n) => Some(check_name("name", n, CONNECTOR_NAME_CHARS_MAX)?),
                None => None,
            };
            let scopes = match scopes {
                Some(s) => Some(check_scopes(s)?),
                None => None,
            };
            let export_base_path = match export_base_path {
                Some(Some(p)) => Some(normalize_export_base_path(p)?),
                Some(None) => Some(None),
                None => None,
            };
            // Only what changes is recorded; a patch that changes nothing appends nothing.
            let name = name.filter(|n| *n != current.name);
            let scopes = scopes.filter(|s| *s != current.scopes);
            let import_mode = import_mode.filter(|m| *m != current.import_mode);
            let export_base_path = export_base_path.filter(|p| *p != current.export_base_path);
            if name.is_none()
                && scopes.is_none()
                && import_mode.is_none()
                && export_base_path.is_none()
                && credentials.is_none()
            {
                return Ok(Decision::nothing(Outcome::Connector(*connector_id)));
            }
            let ev = Event::ConnectorUpdated {
                connector_id: *connector_id,
                name,
                scopes,
                import_mode,
                export_base_path,
                credentials: credentials.clone(),
            };
            Ok(Decision::one(state, connector_id.to_string(), vec![ev], Outcome::Connector(*connector_id)))
        }
        Command::RecordConnectorTest { connector_id, success, error } => {
            live_connector(state, connector_id)?;
            let error = error.as_ref().map(|e| e.chars().take(TEST_ERROR_CHARS_MAX).collect());
            let ev = Event::ConnectorTested { connector_id: *connector_id, success: *success, error };
            Ok(Decision::one(state, connector_id.to_string(), vec![ev], Outcome::Connector(*connector_id)))
        }
        Command::DeleteConnector { connector_id } => match state.connectors.get(connector_id) {
            None => Err(DomainError::NotFound { kind: "connector", id: connector_id.to_string() }),
            // A repeated DELETE answers like the first (the SDK retries DELETE).
            Some(c) if !c.is_live() => Ok(Decision::nothing(Outcome::Connector(*connector_id))),
            Some(_) => Ok(Decision::one(
                state,
                connector_id.to_string(),
                vec![Event::ConnectorDeleted { connector_id: *connector_id }],
                Outcome::Connector(*connector_id),
            )),
        },
        Command::CreateImportJob { connector_id, index_id, source_prefix, file_pattern, recursive, import_mode } => {
            let job_id = spool_model::ImportJobId(ctx.new_ulid());
            imports::create(
                state,
                job_id,
                connector_id,
                index_id,
                source_prefix,
                file_pattern,
                *recursive,
                *import_mode,
            )
        }
        Command::RecordScanPage { job_id, objects } => imports::record_scan_page(state, job_id, objects, ctx),
        Command::RecordScanCompleted { job_id } => imports::record_scan_completed(state, job_id),
        Command::RecordImportJobFailed { job_id, error } => imports::record_job_failed(state, job_id, error),
        Command::StartImportFile { job_id, file_id, attempt } => imports::start_file(state, job_id, *file_id, *attempt),
        Command::RecordFileImported { job_id, file_id, attempt, bytes, sha256 } => {
            imports::record_file_imported(state, job_id, *file_id, *attempt, *bytes, *sha256, ctx.now_ms)
        }
        Command::RecordFileFailed { job_id, file_id, attempt, failure } => {
            imports::record_file_failed(state, job_id, *file_id, *attempt, failure, ctx)
        }
        Command::CancelImportJob { job_id } => imports::cancel(state, job_id),
        Command::RetryImportJob { job_id } => imports::retry(state, job_id),
        Command::RecordImportJobFinished { job_id } => imports::record_finished(state, job_id),
        Command::FireTimer { timer } => match timer {
            crate::Timer::ImportFileRetry { .. } => imports::fire_retry(state, timer),
        },
        Command::RecordApiKeyUse { key_id, used_at_ms } => match state.api_keys.get(key_id) {
            Some(k) if k.last_used_at_ms.is_none_or(|t| t < *used_at_ms) => {
                let ev = Event::ApiKeyUsed { key_id: *key_id, used_at_ms: *used_at_ms };
                Ok(Decision::one(state, key_id.to_string(), vec![ev], Outcome::Done))
            }
            _ => Ok(Decision::nothing(Outcome::Done)),
        },
    }
}

/// Scopes in the order the API lists them.
pub fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}
