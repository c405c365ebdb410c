//! The index machine (engine-spec/machines/index.md): an index and its deletion
//! (draining → deleting → deleted).

mod decide;
mod effects;
mod evolve;

pub use decide::{INDEX_DESCRIPTION_CHARS_MAX, INDEX_NAME_CHARS_MAX, decide};
pub use effects::{IndexEffect, effects_for, work_key};
pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{DeletionId, DeletionStage, IndexId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexCommand {
    CreateIndex {
        name: String,
        user_id: String,
        /// Kept as `IndexDescriptionSet` beside `IndexCreated`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Start (or, when started, resume) the deletion of an index.
    DeleteIndex { index_id: IndexId },
    /// Effect outcome: the index has no running work any more.
    RecordIndexDrained { index_id: IndexId, deletion_id: DeletionId },
    /// Effect outcome: the index's data is gone.
    RecordIndexPurged { index_id: IndexId, deletion_id: DeletionId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub index_id: IndexId,
    pub name: String,
    pub user_id: String,
    pub description: Option<String>,
    pub created_at_ms: u64,
    pub deletion: Option<Deletion>,
}

impl Index {
    /// Visible to the API (no deletion has started).
    pub fn is_live(&self) -> bool {
        self.deletion.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub deletion_id: DeletionId,
    pub stage: DeletionStage,
    pub requested_at_ms: u64,
    pub finished_at_ms: Option<u64>,
}
