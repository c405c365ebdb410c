use serde::{Deserialize, Serialize};
use spool_model::{ApiKeyId, DeletionId, IndexId, Scope};

/// What someone (an API request, a timer, an effect's outcome) asks the engine to do.
/// Imperative names. Secrets that a command needs (a new key's secret) are drawn by the
/// runtime and carried here, so `decide` stays pure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateIndex {
        name: String,
        user_id: String,
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
        secret: String,
    },
    RevokeApiKey {
        key_id: ApiKeyId,
    },
    RotateApiKey {
        key_id: ApiKeyId,
        secret: String,
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

impl Command {
    /// The command with its secret replaced, for logs and scenario output.
    pub fn redacted(&self) -> Command {
        let mut c = self.clone();
        match &mut c {
            Command::CreateApiKey { secret, .. } | Command::RotateApiKey { secret, .. } => {
                *secret = "<redacted>".into()
            }
            _ => {}
        }
        c
    }
}
