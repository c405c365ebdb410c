//! The connector machine (engine-spec/machines/connector.md): where imports and exports may
//! run, with which (sealed) credentials, in which scopes.

mod decide;
mod evolve;

pub use decide::{
    CONNECTOR_NAME_CHARS_MAX, EXPORT_BASE_PATH_CHARS_MAX, TEST_ERROR_CHARS_MAX, decide, normalize_export_base_path,
};
pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, ImportMode, Provider, Sealed};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // commands are transient: one per request
pub enum ConnectorCommand {
    /// The id is drawn by the runtime before sealing, since it owns the data key of the
    /// credentials; `decide` checks it is new.
    CreateConnector {
        connector_id: ConnectorId,
        provider: Provider,
        name: String,
        scopes: Vec<ConnectorScope>,
        import_mode: ImportMode,
        export_base_path: Option<String>,
        location: ConnectorLocation,
        credentials: Option<Sealed>,
    },
    UpdateConnector {
        connector_id: ConnectorId,
        name: Option<String>,
        scopes: Option<Vec<ConnectorScope>>,
        import_mode: Option<ImportMode>,
        /// `Some(None)` (JSON `null` or `""`) clears the path.
        export_base_path: Option<Option<String>>,
        credentials: Option<Sealed>,
    },
    /// The outcome of a connection test the runtime ran.
    RecordConnectorTest {
        connector_id: ConnectorId,
        success: bool,
        error: Option<String>,
    },
    DeleteConnector {
        connector_id: ConnectorId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connector {
    pub connector_id: ConnectorId,
    pub provider: Provider,
    pub name: String,
    pub scopes: Vec<ConnectorScope>,
    pub import_mode: ImportMode,
    pub export_base_path: Option<String>,
    pub location: ConnectorLocation,
    /// Sealed for the connector's data key; unreadable once the connector is deleted.
    pub credentials: Option<Sealed>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub last_test: Option<ConnectorTest>,
    pub deleted_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorTest {
    pub at_ms: u64,
    pub success: bool,
    pub error: Option<String>,
}

impl Connector {
    pub fn is_live(&self) -> bool {
        self.deleted_at_ms.is_none()
    }

    /// `active` until a test fails, `failed` until one succeeds.
    pub fn status(&self) -> &'static str {
        match &self.last_test {
            Some(t) if !t.success => "failed",
            _ => "active",
        }
    }

    pub fn has_scope(&self, scope: ConnectorScope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = ConnectorCommand;
    type Effect = super::NoEffect;
    type Key = spool_model::ConnectorId;
    const NOT_FOUND: &'static [(&'static str, &'static str)] = &[("connector", "resource_connector_not_found")];

    fn decide(
        state: &crate::State,
        cmd: &ConnectorCommand,
        ctx: &mut crate::Ctx,
    ) -> Result<crate::Decision, crate::DomainError> {
        decide(state, cmd, ctx)
    }

    fn evolve(state: &mut crate::State, env: &spool_model::Envelope) {
        evolve(state, env)
    }
}
