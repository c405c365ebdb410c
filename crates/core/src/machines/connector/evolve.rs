use super::{Connector, ConnectorTest};
use crate::State;
use spool_model::{Envelope, Event};

/// Fold the connector's events; others are not this machine's.
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
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
        Event::ConnectorDeleted { connector_id } => {
            if let Some(c) = state.connectors.get_mut(connector_id) {
                c.deleted_at_ms = Some(at);
                // The sealed bytes stay in the log; the data key is gone, so keep no copy.
                c.credentials = None;
            }
        }
        _ => {}
    }
}
