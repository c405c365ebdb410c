use super::ConnectorCommand;
use crate::decide::check_name;
use crate::{Ctx, Decision, DomainError, Outcome, State};
use spool_model::{ConnectorId, ConnectorScope, Event};

pub const CONNECTOR_NAME_CHARS_MAX: usize = 100;
pub const EXPORT_BASE_PATH_CHARS_MAX: usize = 1024;
/// Longest connection-test error kept in an event.
pub const TEST_ERROR_CHARS_MAX: usize = 1000;

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

fn live_connector<'a>(state: &'a State, id: &ConnectorId) -> Result<&'a super::Connector, DomainError> {
    state.live_connector(id).ok_or_else(|| DomainError::NotFound { kind: "connector", id: id.to_string() })
}

pub fn decide(state: &State, cmd: &ConnectorCommand, _ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        ConnectorCommand::CreateConnector {
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
            // The location's shapes (spool-model's `rules`): every caller meets them here.
            spool_model::rules::connector_location(*provider, location).map_err(DomainError::from)?;
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
            Ok(Decision::one(connector_id.to_string(), vec![ev], Outcome::Connector(*connector_id)))
        }
        ConnectorCommand::UpdateConnector {
            connector_id,
            name,
            scopes,
            import_mode,
            export_base_path,
            credentials,
        } => {
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
            Ok(Decision::one(connector_id.to_string(), vec![ev], Outcome::Connector(*connector_id)))
        }
        ConnectorCommand::RecordConnectorTest { connector_id, success, error } => {
            live_connector(state, connector_id)?;
            let error = error.as_ref().map(|e| e.chars().take(TEST_ERROR_CHARS_MAX).collect());
            let ev = Event::ConnectorTested { connector_id: *connector_id, success: *success, error };
            Ok(Decision::one(connector_id.to_string(), vec![ev], Outcome::Connector(*connector_id)))
        }
        ConnectorCommand::DeleteConnector { connector_id } => match state.connectors.get(connector_id) {
            None => Err(DomainError::NotFound { kind: "connector", id: connector_id.to_string() }),
            // A repeated DELETE answers like the first (the SDK retries DELETE).
            Some(c) if !c.is_live() => Ok(Decision::nothing(Outcome::Connector(*connector_id))),
            Some(_) => Ok(Decision::one(
                connector_id.to_string(),
                vec![Event::ConnectorDeleted { connector_id: *connector_id }],
                Outcome::Connector(*connector_id),
            )),
        },
    }
}
