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

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = IndexCommand;
    type Effect = IndexEffect;
    type Key = spool_model::IndexId;
    const NOT_FOUND: &'static [(&'static str, &'static str)] =
        &[("index", "resource_index_not_found"), ("deletion", "resource_deletion_not_found")];

    fn decide(
        state: &crate::State,
        cmd: &IndexCommand,
        ctx: &mut crate::Ctx,
    ) -> Result<crate::Decision, crate::DomainError> {
        decide(state, cmd, ctx)
    }

    fn evolve(state: &mut crate::State, env: &spool_model::Envelope) {
        evolve(state, env)
    }

    fn work_key(event: &spool_model::Event) -> Option<crate::WorkKey> {
        work_key(event)
    }

    fn effects_for(state: &crate::State, key: spool_model::IndexId) -> Vec<IndexEffect> {
        effects_for(state, key)
    }

    fn with_work(state: &crate::State) -> Vec<spool_model::IndexId> {
        state.deleting.iter().copied().collect()
    }
}
