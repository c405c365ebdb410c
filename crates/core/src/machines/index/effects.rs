use crate::{State, WorkKey};
use serde::Serialize;
use spool_model::{DeletionId, DeletionStage, Event, IndexId};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IndexEffect {
    /// Stop the index's running work; answer `RecordIndexDrained`.
    DrainIndex { index_id: IndexId, deletion_id: DeletionId },
    /// Remove what the index owns; answer `RecordIndexPurged`.
    PurgeIndex { index_id: IndexId, deletion_id: DeletionId },
}

impl IndexEffect {
    pub fn work_key(&self) -> WorkKey {
        match self {
            IndexEffect::DrainIndex { index_id, .. } | IndexEffect::PurgeIndex { index_id, .. } => {
                WorkKey::Index(*index_id)
            }
        }
    }
}

/// The index whose effects this event can change.
pub fn work_key(event: &Event) -> Option<WorkKey> {
    match event {
        Event::IndexDeletionRequested { index_id, .. }
        | Event::IndexDrained { index_id, .. }
        | Event::IndexDeleted { index_id, .. } => Some(WorkKey::Index(*index_id)),
        _ => None,
    }
}

/// What the index's deletion needs next.
pub fn effects_for(state: &State, id: IndexId) -> Vec<IndexEffect> {
    let Some(d) = state.indexes.get(&id).and_then(|i| i.deletion.as_ref()) else { return Vec::new() };
    match d.stage {
        DeletionStage::Draining => vec![IndexEffect::DrainIndex { index_id: id, deletion_id: d.deletion_id }],
        DeletionStage::Deleting => vec![IndexEffect::PurgeIndex { index_id: id, deletion_id: d.deletion_id }],
        DeletionStage::Deleted => Vec::new(),
    }
}
