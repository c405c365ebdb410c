use super::*;
use crate::State;
use spool_model::{Envelope, Event};

pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::ExportCreated { export_id, kind, index_id, run_ids, destination, user_id } => {
            state.exports_by_created.insert((at, *export_id));
            state.active_exports.insert(*export_id);
            state.exports.insert(
                *export_id,
                Export {
                    export_id: *export_id,
                    kind: *kind,
                    index_id: *index_id,
                    run_ids: run_ids.clone(),
                    destination: destination.clone(),
                    user_id: user_id.clone(),
                    status: ExportStatus::Pending,
                    attempts: 0,
                    waiting: false,
                    next_attempt: 1,
                    available_at_ms: at,
                    created_at_ms: at,
                    started_at_ms: None,
                    updated_at_ms: at,
                    completed_at_ms: None,
                    size_bytes: None,
                    sha256: None,
                    error: None,
                    upload_id: None,
                    parts: Vec::new(),
                },
            );
        }
        Event::ExportStarted { export_id, attempt } => {
            let Some(e) = state.exports.get_mut(export_id) else { return };
            e.status = ExportStatus::Processing;
            e.attempts = *attempt;
            e.next_attempt = *attempt;
            e.waiting = false;
            e.started_at_ms.get_or_insert(at);
            e.updated_at_ms = at;
        }
        Event::ExportGenerated { export_id, size_bytes, sha256, .. } => {
            let Some(e) = state.exports.get_mut(export_id) else { return };
            // New bytes: an upload of the old ones cannot go on.
            if e.sha256.is_some_and(|old| old != *sha256) {
                e.upload_id = None;
                e.parts.clear();
            }
            e.size_bytes = Some(*size_bytes);
            e.sha256 = Some(*sha256);
            e.updated_at_ms = at;
        }
        Event::ExportCompleted { export_id, .. } => {
            let Some(e) = state.exports.get_mut(export_id) else { return };
            e.status = ExportStatus::Completed;
            e.completed_at_ms = Some(at);
            e.error = None;
            e.updated_at_ms = at;
            state.active_exports.remove(export_id);
        }
        Event::ExportFailed { export_id, attempt, error, retry_due_ms } => {
            let Some(e) = state.exports.get_mut(export_id) else { return };
            e.error = Some(error.clone());
            e.updated_at_ms = at;
            match retry_due_ms {
                Some(due) => {
                    e.waiting = true;
                    e.next_attempt = attempt + 1;
                    e.available_at_ms = *due;
                    state.set_timer(crate::Timer::ExportRetry { export_id: *export_id, attempt: *attempt }, *due);
                }
                None => {
                    e.status = ExportStatus::Failed;
                    e.completed_at_ms = Some(at);
                    state.active_exports.remove(export_id);
                }
            }
        }
        Event::ExportUploadStarted { export_id, upload_id, .. } => {
            let Some(e) = state.exports.get_mut(export_id) else { return };
            e.upload_id = Some(upload_id.clone());
            e.parts.clear();
            e.updated_at_ms = at;
        }
        Event::ExportPartWritten { export_id, part, content_id } => {
            let Some(e) = state.exports.get_mut(export_id) else { return };
            if *part as usize == e.parts.len() {
                e.parts.push(content_id.clone());
            }
            e.updated_at_ms = at;
        }
        Event::ExportRetryDue { export_id, attempt } => {
            state.clear_timer(&crate::Timer::ExportRetry { export_id: *export_id, attempt: *attempt });
            let Some(e) = state.exports.get_mut(export_id) else { return };
            e.waiting = false;
            e.updated_at_ms = at;
        }
        _ => {}
    }
}
