use crate::imports::ListedObject;
use serde::{Deserialize, Serialize};
use spool_model::{
    ApiKeyId, ConnectorId, ConnectorLocation, ConnectorScope, DeletionId, FileFailure, ImportJobId, ImportMode,
    IndexId, Provider, Scope, Sealed,
};

/// A secret a command carries (a new API key). Its `Debug` is redacted, so a logged command
/// never shows it; its JSON is the plain string (scenario files).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What someone (an API request, a timer, an effect's outcome) asks the engine to do.
/// Imperative names. Secrets that a command needs (a new key's secret) are drawn by the
/// runtime and carried here, so `decide` stays pure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // commands are transient: one per request or outcome
pub enum Command {
    CreateIndex {
        name: String,
        user_id: String,
        /// Kept as `IndexDescriptionSet` beside `IndexCreated`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Start (or, when started, resume) the deletion of an index.
    DeleteIndex {
        index_id: IndexId,
    },
    /// Effect outcome: the index has no running work any more.
    RecordIndexDrained {
        index_id: IndexId,
        deletion_id: DeletionId,
    },
    /// Effect outcome: the index's data is gone.
    RecordIndexPurged {
        index_id: IndexId,
        deletion_id: DeletionId,
    },
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
    CreateImportJob {
        connector_id: ConnectorId,
        index_id: IndexId,
        source_prefix: String,
        file_pattern: String,
        recursive: bool,
        import_mode: Option<ImportMode>,
    },
    /// Effect outcome: one listed page of the scan.
    RecordScanPage {
        job_id: ImportJobId,
        objects: Vec<ListedObject>,
    },
    /// Effect outcome: the listing ended.
    RecordScanCompleted {
        job_id: ImportJobId,
    },
    /// Effect outcome: job-level trouble (listing failed, connector or index gone).
    RecordImportJobFailed {
        job_id: ImportJobId,
        error: String,
    },
    /// A copy attempt begins (the executor records it before copying).
    StartImportFile {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
    },
    RecordFileImported {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
        bytes: u64,
        sha256: [u8; 32],
    },
    RecordFileFailed {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
        failure: FileFailure,
    },
    CancelImportJob {
        job_id: ImportJobId,
    },
    RetryImportJob {
        job_id: ImportJobId,
    },
    /// Effect outcome: end the job if it is done (or cancelled with nothing running).
    RecordImportJobFinished {
        job_id: ImportJobId,
    },
    /// A durable timer is due (the runtime's timer service).
    FireTimer {
        timer: crate::Timer,
    },
}

impl Command {
    /// The command with its secret replaced, for logs and scenario output.
    pub fn redacted(&self) -> Command {
        let mut c = self.clone();
        match &mut c {
            Command::CreateApiKey { secret, .. } | Command::RotateApiKey { secret, .. } => {
                *secret = Secret("<redacted>".into())
            }
            _ => {}
        }
        c
    }
}
