use super::*;
use crate::{Ctx, Decision, DomainError, Outcome, State};
use spool_model::{ConnectorScope, Event, Provider};

pub fn decide(state: &State, cmd: &ExportCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        ExportCommand::CreateExport { kind, target, run_ids, connector_id, subpath, user_id } => {
            create(state, *kind, target, run_ids, connector_id.as_ref(), subpath.as_deref(), user_id, ctx)
        }
        ExportCommand::StartExport { export_id, attempt } => start(state, export_id, *attempt),
        ExportCommand::RecordExportGenerated { export_id, attempt, size_bytes, sha256 } => {
            let e = export(state, export_id)?;
            // Recorded once; again only if the kept bytes had to be made anew (lost or altered).
            if !fits(e, *attempt) || e.sha256 == Some(*sha256) {
                return nothing(export_id);
            }
            Ok(one(
                export_id,
                vec![Event::ExportGenerated {
                    export_id: *export_id,
                    attempt: *attempt,
                    size_bytes: *size_bytes,
                    sha256: *sha256,
                }],
            ))
        }
        ExportCommand::RecordExportCompleted { export_id, attempt } => {
            let e = export(state, export_id)?;
            if !fits(e, *attempt) || e.size_bytes.is_none() {
                return nothing(export_id);
            }
            let mut s = summary(e);
            s["status"] = serde_json::json!("completed");
            Ok(one(
                export_id,
                vec![
                    Event::ExportCompleted { export_id: *export_id, attempt: *attempt },
                    domain(spool_model::DomainEventName::ExportReady, export_id, s),
                ],
            ))
        }
        ExportCommand::RecordUploadStarted { export_id, attempt, upload_id } => {
            let e = export(state, export_id)?;
            if !fits(e, *attempt) || e.size_bytes.is_none() {
                return nothing(export_id);
            }
            let id: String = upload_id.chars().take(1024).collect();
            Ok(one(
                export_id,
                vec![Event::ExportUploadStarted { export_id: *export_id, attempt: *attempt, upload_id: id }],
            ))
        }
        ExportCommand::RecordPartWritten { export_id, attempt, part, content_id } => {
            let e = export(state, export_id)?;
            // Parts are recorded in order, once: a repeated or out-of-order part is dropped.
            if !fits(e, *attempt) || e.upload_id.is_none() || *part as usize != e.parts.len() {
                return nothing(export_id);
            }
            let id: String = content_id.chars().take(1024).collect();
            Ok(one(export_id, vec![Event::ExportPartWritten { export_id: *export_id, part: *part, content_id: id }]))
        }
        ExportCommand::RecordExportFailed { export_id, attempt, error, retryable } => {
            let e = export(state, export_id)?;
            if !fits(e, *attempt) {
                return nothing(export_id);
            }
            let error: String = error.chars().take(1000).collect();
            let retry_due_ms =
                (*retryable && *attempt < EXPORT_ATTEMPTS_MAX).then(|| ctx.now_ms + backoff_ms(*attempt, ctx));
            let mut events = vec![Event::ExportFailed {
                export_id: *export_id,
                attempt: *attempt,
                error: error.clone(),
                retry_due_ms,
            }];
            if retry_due_ms.is_none() {
                let mut s = summary(e);
                s["status"] = serde_json::json!("failed");
                s["error_message"] = serde_json::json!(error);
                events.push(domain(spool_model::DomainEventName::ExportFailed, export_id, s));
            }
            Ok(one(export_id, events))
        }
    }
}

fn export<'a>(state: &'a State, id: &ExportId) -> Result<&'a Export, DomainError> {
    state.exports.get(id).ok_or_else(|| DomainError::NotFound { kind: "export", id: id.to_string() })
}

fn nothing(id: &ExportId) -> Result<Decision, DomainError> {
    Ok(Decision::nothing(Outcome::Export(*id)))
}

fn one(id: &ExportId, events: Vec<Event>) -> Decision {
    Decision::one(id.to_string(), events, Outcome::Export(*id))
}

fn domain(name: spool_model::DomainEventName, id: &ExportId, data: serde_json::Value) -> Event {
    Event::DomainEventRaised { name, subject: id.to_string(), data_json: data.to_string() }
}

/// An outcome fits the started attempt of an export that has not ended.
fn fits(e: &Export, attempt: u32) -> bool {
    e.status == ExportStatus::Processing && !e.waiting && e.attempts == attempt
}

/// What `export.*` events carry.
pub fn summary(e: &Export) -> serde_json::Value {
    serde_json::json!({
        "export_id": e.export_id.to_string(),
        "export_type": view::kind_str(e.kind),
        "target_id": e.target_id(),
        "index_id": e.index_id.map(|i| i.to_string()),
        "destination_type": view::destination_type(e),
        "file_size_bytes": e.size_bytes,
    })
}

fn backoff_ms(attempt: u32, ctx: &mut Ctx) -> u64 {
    let i = (attempt.max(1) as usize - 1).min(EXPORT_RETRY_BACKOFF_MS.len() - 1);
    let base = EXPORT_RETRY_BACKOFF_MS[i];
    let spread = base / 5;
    base - spread + spool_model::num::low_u64(ctx.new_ulid().random()) % (2 * spread + 1)
}

fn start(state: &State, export_id: &ExportId, attempt: u32) -> Result<Decision, DomainError> {
    let e = export(state, export_id)?;
    if e.status.is_terminal() || e.waiting {
        return Err(DomainError::Stale(format!("export {export_id} cannot start attempt {attempt}")));
    }
    if attempt == e.attempts + 1 {
        return Ok(one(export_id, vec![Event::ExportStarted { export_id: *export_id, attempt }]));
    }
    if attempt == e.attempts && e.status == ExportStatus::Processing {
        return nothing(export_id); // resumed after a crash
    }
    Err(DomainError::Stale(format!("export {export_id} cannot start attempt {attempt}")))
}

/// `FireTimer` of an export's retry.
pub fn fire_retry(state: &State, timer: &crate::Timer) -> Result<Decision, DomainError> {
    let crate::Timer::ExportRetry { export_id, attempt } = timer else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    if !state.timer_due.contains_key(timer) {
        return Ok(Decision::nothing(Outcome::Done));
    }
    Ok(Decision::one(
        export_id.to_string(),
        vec![Event::ExportRetryDue { export_id: *export_id, attempt: *attempt }],
        Outcome::Done,
    ))
}

/// A `destination_subpath`: relative, `/`-separated, no empty, `.` or `..` segment, no
/// backslash, no `%` (nothing that a later decoding could turn into a separator or `..`), no
/// control characters. Returned without surrounding slashes.
pub fn check_subpath(raw: &str) -> Result<String, DomainError> {
    const FIELD: &str = "destination_subpath";
    let t = raw.trim();
    if t.chars().count() > SUBPATH_CHARS_MAX {
        return Err(DomainError::invalid(FIELD, format!("must be at most {SUBPATH_CHARS_MAX} characters")));
    }
    if t.starts_with('/') {
        return Err(DomainError::invalid(FIELD, "must be relative to the connector's export_base_path (no leading /)"));
    }
    if t.contains('\\') {
        return Err(DomainError::invalid(FIELD, "must use / as separator, not backslashes"));
    }
    if t.contains('%') {
        return Err(DomainError::invalid(FIELD, "must not contain % (percent-encoded names are refused)"));
    }
    if t.chars().any(|c| c.is_control()) {
        return Err(DomainError::invalid(FIELD, "must not contain control characters"));
    }
    let t = t.strip_suffix('/').unwrap_or(t);
    if t.is_empty() {
        return Ok(String::new());
    }
    for seg in t.split('/') {
        match seg {
            "" => return Err(DomainError::invalid(FIELD, "must not contain empty segments (//)")),
            "." | ".." => {
                return Err(DomainError::invalid(
                    FIELD,
                    "must not contain . or .. segments: it stays inside export_base_path",
                ));
            }
            _ => {}
        }
    }
    Ok(t.to_string())
}

#[allow(clippy::too_many_arguments)]
fn create(
    state: &State,
    kind: ExportKind,
    target: &str,
    run_ids: &[PromptRunId],
    connector_id: Option<&ConnectorId>,
    subpath: Option<&str>,
    user_id: &str,
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let (index_id, runs) = match kind {
        ExportKind::Index => {
            let index_id: IndexId =
                target.parse().map_err(|_| DomainError::NotFound { kind: "index", id: target.into() })?;
            state.live_index(&index_id).ok_or_else(|| DomainError::NotFound { kind: "index", id: target.into() })?;
            if run_ids.len() > EXPORT_RUN_IDS_MAX {
                return Err(DomainError::invalid("prompt_run_ids", format!("at most {EXPORT_RUN_IDS_MAX} runs")));
            }
            let mut runs = Vec::new();
            for r in run_ids {
                let run = state
                    .prompt_runs
                    .get(r)
                    .ok_or_else(|| DomainError::NotFound { kind: "prompt_run", id: r.to_string() })?;
                let belongs = run.index_id() == Some(index_id)
                    || run.videos.iter().any(|v| state.video_row(&v.video_id).is_some_and(|x| x.index_id == index_id));
                if !belongs {
                    return Err(DomainError::Unprocessable {
                        code: "prompt_run_not_in_index",
                        message: format!("prompt run {r} does not belong to index {index_id}"),
                    });
                }
                if !runs.contains(r) {
                    runs.push(*r);
                }
            }
            (Some(index_id), runs)
        }
        ExportKind::PromptRun => {
            let run_id: PromptRunId =
                target.parse().map_err(|_| DomainError::NotFound { kind: "prompt_run", id: target.into() })?;
            let run = state
                .prompt_runs
                .get(&run_id)
                .ok_or_else(|| DomainError::NotFound { kind: "prompt_run", id: target.into() })?;
            (run.index_id(), vec![run_id])
        }
    };
    let export_id = ExportId(ctx.new_ulid());
    let destination = match connector_id {
        None => {
            if subpath.is_some_and(|s| !s.trim().is_empty()) {
                return Err(DomainError::invalid("destination_subpath", "needs a destination_connector_id"));
            }
            ExportDestination::Download
        }
        Some(c) => {
            let conn = state
                .live_connector(c)
                .ok_or_else(|| DomainError::NotFound { kind: "connector", id: c.to_string() })?;
            if !conn.has_scope(ConnectorScope::Export) {
                return Err(DomainError::Unprocessable {
                    code: "connector_scope_missing",
                    message: format!("connector {c} does not have the export scope"),
                });
            }
            let sub = check_subpath(subpath.unwrap_or(""))?;
            let base = conn.export_base_path.clone().unwrap_or_default();
            let name = format!("{export_id}.json");
            let object_path = [base.as_str(), sub.as_str(), name.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join("/");
            let scheme = match conn.provider {
                Provider::S3 => "s3",
                Provider::Gcs => "gs",
                Provider::Azure => "azure",
                Provider::Local => "file",
            };
            let bucket = conn.location.bucket.clone().or_else(|| conn.location.container.clone()).unwrap_or_default();
            let uri = format!("{scheme}://{bucket}/{object_path}");
            ExportDestination::Connector { connector_id: *c, base_path: base, subpath: sub, object_path, uri }
        }
    };
    let events = vec![Event::ExportCreated {
        export_id,
        kind,
        index_id,
        run_ids: runs,
        destination,
        user_id: user_id.to_string(),
    }];
    Ok(one(&export_id, events))
}
