use super::{Deletion, Index};
use crate::State;
use spool_model::{DeletionStage, Envelope, Event};

/// Fold the index's events; others are not this machine's.
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::IndexCreated { index_id, name, user_id } => {
            // A deliberately changed fold (debug builds, `SPOOL_FAILPOINTS=fold_changed`): the
            // test of `spool verify --against` runs a build that folds differently.
            let name = if spool_model::failpoint("fold_changed") { name.to_uppercase() } else { name.clone() };
            state.indexes.insert(
                *index_id,
                Index {
                    index_id: *index_id,
                    name,
                    user_id: user_id.clone(),
                    description: None,
                    created_at_ms: at,
                    deletion: None,
                },
            );
        }
        Event::IndexDescriptionSet { index_id, description } => {
            if let Some(i) = state.indexes.get_mut(index_id) {
                i.description = Some(description.clone());
            }
        }
        Event::IndexDeletionRequested { index_id, deletion_id } => {
            if let Some(i) = state.indexes.get_mut(index_id) {
                i.deletion = Some(Deletion {
                    deletion_id: *deletion_id,
                    stage: DeletionStage::Draining,
                    requested_at_ms: at,
                    finished_at_ms: None,
                });
                state.deleting.insert(*index_id);
            }
        }
        Event::IndexDrained { index_id, .. } => {
            if let Some(d) = state.indexes.get_mut(index_id).and_then(|i| i.deletion.as_mut()) {
                d.stage = DeletionStage::Deleting;
            }
        }
        Event::IndexDeleted { index_id, .. } => {
            if let Some(d) = state.indexes.get_mut(index_id).and_then(|i| i.deletion.as_mut()) {
                d.stage = DeletionStage::Deleted;
                d.finished_at_ms = Some(at);
            }
            state.deleting.remove(index_id);
        }
        _ => {}
    }
}
