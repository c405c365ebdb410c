//! `pending_effects`: what must happen next, derived from the state alone. The runtime runs
//! each effect (at least once) and reports the outcome as a command; `decide` drops outcomes
//! that no longer fit, so a repeated effect is harmless.

use crate::State;
use serde::Serialize;
use spool_model::{DeletionId, DeletionStage, IndexId};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Effect {
    /// Stop the index's running work; answer `RecordIndexDrained`.
    DrainIndex { index_id: IndexId, deletion_id: DeletionId },
    /// Remove what the index owns; answer `RecordIndexPurged`.
    PurgeIndex { index_id: IndexId, deletion_id: DeletionId },
}

/// Effects for the aggregates that have work (kept in small sets by `evolve`, so this does not
/// scan everything).
pub fn pending_effects(state: &State) -> Vec<Effect> {
    let mut out = Vec::new();
    for id in &state.deleting {
        let Some(d) = state.indexes.get(id).and_then(|i| i.deletion.as_ref()) else { continue };
        match d.stage {
            DeletionStage::Draining => out.push(Effect::DrainIndex { index_id: *id, deletion_id: d.deletion_id }),
            DeletionStage::Deleting => out.push(Effect::PurgeIndex { index_id: *id, deletion_id: d.deletion_id }),
            DeletionStage::Deleted => {}
        }
    }
    out
}

/// Effects that concern one stream (for `spool replay`).
pub fn pending_effects_for(state: &State, stream: &str) -> Vec<Effect> {
    pending_effects(state)
        .into_iter()
        .filter(|e| match e {
            Effect::DrainIndex { index_id, .. } | Effect::PurgeIndex { index_id, .. } => index_id.to_string() == stream,
        })
        .collect()
}
