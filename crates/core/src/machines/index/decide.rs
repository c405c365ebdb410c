use super::IndexCommand;
use crate::decide::check_name;
use crate::{Ctx, Decision, DomainError, Outcome, State};
use spool_model::{DeletionId, DeletionStage, Event, IndexId};

pub const INDEX_NAME_CHARS_MAX: usize = 255;
pub const INDEX_DESCRIPTION_CHARS_MAX: usize = 2000;

pub fn decide(state: &State, cmd: &IndexCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        IndexCommand::CreateIndex { name, user_id, description } => {
            // A decision that panics, for the sequencer's tests (debug builds only).
            if name == "spool-failpoint-decide-panic" && spool_model::failpoint("decide_panic") {
                panic!("failpoint decide_panic");
            }
            let name = check_name("name", name, INDEX_NAME_CHARS_MAX)?;
            let description = match description.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
                None => None,
                Some(d) => {
                    if d.chars().count() > INDEX_DESCRIPTION_CHARS_MAX {
                        return Err(DomainError::invalid(
                            "description",
                            format!("must be at most {INDEX_DESCRIPTION_CHARS_MAX} characters"),
                        ));
                    }
                    if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                        return Err(DomainError::invalid("description", "must not contain control characters"));
                    }
                    Some(d.to_string())
                }
            };
            let index_id = IndexId(ctx.new_ulid());
            let mut events = vec![Event::IndexCreated { index_id, name, user_id: user_id.clone() }];
            if let Some(description) = description {
                events.push(Event::IndexDescriptionSet { index_id, description });
            }
            Ok(Decision::one(index_id.to_string(), events, Outcome::Index(index_id)))
        }
        IndexCommand::DeleteIndex { index_id } => {
            let index = state
                .indexes
                .get(index_id)
                .ok_or_else(|| DomainError::NotFound { kind: "index", id: index_id.to_string() })?;
            if index.deletion.is_some() {
                // Start or resume: a repeated DELETE returns the deletion already under way.
                return Ok(Decision::nothing(Outcome::Index(*index_id)));
            }
            let deletion_id = DeletionId(ctx.new_ulid());
            let ev = Event::IndexDeletionRequested { index_id: *index_id, deletion_id };
            Ok(Decision::one(index_id.to_string(), vec![ev], Outcome::Index(*index_id)))
        }
        IndexCommand::RecordIndexDrained { index_id, deletion_id } => {
            // Outcomes arrive at least once: only the first one for the current stage counts.
            let current = state.indexes.get(index_id).and_then(|i| i.deletion.as_ref());
            match current {
                Some(d) if d.deletion_id == *deletion_id && d.stage == DeletionStage::Draining => {
                    let ev = Event::IndexDrained { index_id: *index_id, deletion_id: *deletion_id };
                    Ok(Decision::one(index_id.to_string(), vec![ev], Outcome::Done))
                }
                _ => Ok(Decision::nothing(Outcome::Done)),
            }
        }
        IndexCommand::RecordIndexPurged { index_id, deletion_id } => {
            let current = state.indexes.get(index_id).and_then(|i| i.deletion.as_ref());
            match current {
                Some(d) if d.deletion_id == *deletion_id && d.stage == DeletionStage::Deleting => {
                    let ev = Event::IndexDeleted { index_id: *index_id, deletion_id: *deletion_id };
                    // Its automations leave with it, each in its own stream.
                    let mut streams: Vec<crate::StreamEvents> = [
                        crate::machines::automation::AutomationKind::Import,
                        crate::machines::automation::AutomationKind::Export,
                    ]
                    .into_iter()
                    .filter_map(|kind| state.automation_by_index.get(&(*index_id, kind)))
                    .map(|automation_id| crate::StreamEvents {
                        stream: automation_id.to_string(),
                        events: vec![Event::AutomationRemoved { automation_id: *automation_id }],
                    })
                    .collect();
                    streams.push(crate::StreamEvents { stream: index_id.to_string(), events: vec![ev] });
                    Ok(Decision { streams, outcome: Outcome::Done })
                }
                _ => Ok(Decision::nothing(Outcome::Done)),
            }
        }
    }
}
