//! The JSON of an export (contract §2.4, with the SDK's model rules) and of its artifact.

use super::*;
use serde_json::{Value, json};
use spool_model::time::rfc3339_ms;

pub fn kind_str(k: ExportKind) -> &'static str {
    match k {
        ExportKind::Index => "index",
        ExportKind::PromptRun => "prompt_run",
    }
}

pub fn destination_type(e: &Export) -> &'static str {
    match e.destination {
        ExportDestination::Download => "download",
        ExportDestination::Connector { .. } => "connector",
    }
}

/// `queued|running|retrying|succeeded|failed`.
pub fn queue_status(e: &Export) -> &'static str {
    match e.status {
        ExportStatus::Pending => "queued",
        ExportStatus::Processing if e.waiting => "retrying",
        ExportStatus::Processing => "running",
        ExportStatus::Completed => "succeeded",
        ExportStatus::Failed => "failed",
    }
}

/// The relative download link of a completed download export (the SDK's rule), else `None`.
pub fn download_path(e: &Export) -> Option<String> {
    (e.status == ExportStatus::Completed && matches!(e.destination, ExportDestination::Download))
        .then(|| format!("/api/v2/exports/{}/download", e.export_id))
}

/// `Export`.
pub fn export(e: &Export) -> Value {
    let (connector_id, base, sub, uri) = match &e.destination {
        ExportDestination::Download => (None, None, None, None),
        ExportDestination::Connector { connector_id, base_path, subpath, uri, .. } => {
            (Some(connector_id.to_string()), Some(base_path.clone()), Some(subpath.clone()), Some(uri.clone()))
        }
    };
    json!({
        "export_id": e.export_id.to_string(),
        "export_type": kind_str(e.kind),
        "target_id": e.target_id(),
        "status": e.status.as_str(),
        "user_id": e.user_id,
        "created_at": rfc3339_ms(e.created_at_ms),
        "updated_at": rfc3339_ms(e.updated_at_ms),
        "started_at": e.started_at_ms.map(rfc3339_ms),
        "completed_at": e.completed_at_ms.map(rfc3339_ms),
        "available_at": rfc3339_ms(e.available_at_ms),
        "queue_status": queue_status(e),
        "attempts": e.attempts,
        "max_attempts": EXPORT_ATTEMPTS_MAX,
        "error_message": if e.status == ExportStatus::Failed { e.error.clone() } else { None },
        "last_error": e.error,
        "download_url": download_path(e),
        "file_size_bytes": e.size_bytes,
        "sha256": e.sha256.map(hex::encode),
        "parts_written": e.parts.len(),
        "gcs_uri": uri,
        "export_params": {
            "prompt_run_ids": if e.kind == ExportKind::Index { json!(e.run_ids.iter().map(|r| r.to_string()).collect::<Vec<_>>()) } else { Value::Null },
            "destination_subpath": sub,
        },
        "destination_type": destination_type(e),
        "destination_connector_id": connector_id,
        "destination_base_path": base,
        "destination_subpath": sub,
        "destination_uri": uri,
    })
}

/// The runs an export packages, oldest first: a run export's run; an index export's named
/// runs, or every run of the index.
pub fn runs<'a>(st: &'a crate::State, e: &Export) -> Vec<&'a crate::machines::prompt_run::PromptRun> {
    match (e.kind, e.index_id) {
        (ExportKind::Index, Some(index_id)) if e.run_ids.is_empty() => {
            st.runs_by_index.get(&index_id).into_iter().flatten().filter_map(|(_, r)| st.prompt_runs.get(r)).collect()
        }
        _ => e.run_ids.iter().filter_map(|r| st.prompt_runs.get(r)).collect(),
    }
}

/// The artifact's head: everything but the videos (`"videos": [` follows).
pub fn artifact_head(st: &crate::State, e: &Export) -> Value {
    let runs: Vec<Value> = runs(st, e)
        .into_iter()
        .map(|r| {
            let mut v = crate::machines::prompt_run::view::run(r);
            v["prompt"] = json!({
                "name": r.prompt.name,
                "prompt_text": r.prompt.prompt_text,
                "json_schema": serde_json::from_str::<Value>(&r.prompt.json_schema).unwrap_or(Value::Null),
                "video_level": r.prompt.video_level.as_ref().map(|vl| json!({
                    "instructions_text": vl.instructions_text,
                    "json_schema": serde_json::from_str::<Value>(&vl.json_schema).unwrap_or(Value::Null),
                })),
            });
            v
        })
        .collect();
    let index = e
        .index_id
        .and_then(|i| st.indexes.get(&i))
        .map(|i| json!({ "index_id": i.index_id.to_string(), "name": i.name }));
    json!({
        "format": "spool.export.v1",
        "export_id": e.export_id.to_string(),
        "export_type": kind_str(e.kind),
        "target_id": e.target_id(),
        "created_at": rfc3339_ms(e.created_at_ms),
        "index": index,
        "prompt_runs": runs,
    })
}

/// The videos an export packages, in order: a run's in its order; `Err(index)` for an index's,
/// which are its pages in the `index_videos` table, by (created, id).
pub fn video_ids(st: &crate::State, e: &Export) -> Result<Vec<spool_model::VideoId>, spool_model::IndexId> {
    match (e.kind, e.index_id) {
        (ExportKind::Index, Some(i)) => Err(i),
        _ => Ok(runs(st, e).first().map(|r| r.videos.iter().map(|v| v.video_id).collect()).unwrap_or_default()),
    }
}

/// The answers [`artifact_video`] reads for these videos (`run_answers`).
pub fn artifact_answer_keys(
    runs: &[&crate::machines::prompt_run::PromptRun],
    videos: &[spool_model::VideoId],
) -> Vec<crate::AnswerKey> {
    let mut out = Vec::new();
    for id in videos {
        for r in runs {
            if let Some(n) = r.video_pos.get(id) {
                crate::machines::prompt_run::view::video_answer_keys(r, *n, 0, usize::MAX, &mut out);
            }
        }
    }
    out
}

/// One video of the artifact: its facts and, per packaged run it is in, its segments with
/// their results and its video-level result.
/// `runs` is [`runs`] of the export, read once per chunk of videos rather than per video.
pub fn artifact_video(
    st: &crate::State,
    runs: &[&crate::machines::prompt_run::PromptRun],
    video_id: &spool_model::VideoId,
    rows: &dyn crate::RowSource,
) -> Option<Value> {
    let row = rows.video_row(video_id)?;
    let v = st.video_of(*video_id, &row);
    let mut results = Vec::new();
    for r in runs.iter().copied() {
        let Some(n) = r.video_pos.get(video_id) else { continue };
        let Some(rv) = r.videos.get(*n as usize) else { continue };
        let segments: Vec<Value> = rv
            .segments()
            .filter_map(|s| {
                let seg = r.segments.get(s as usize)?;
                let answer = rows
                    .answer(&r.run_id, spool_model::RunTask::Segment(s))
                    .filter(|_| seg.task.status == crate::machines::prompt_run::TaskStatus::Succeeded);
                Some(json!({
                    "segment_id": crate::machines::prompt_run::segment_id(&r.run_id, s),
                    "start_time": seg.range.start_us as f64 / 1e6,
                    "end_time": seg.range.end_us as f64 / 1e6,
                    "status": crate::machines::prompt_run::view::task_status(r, &seg.task),
                    "metadata": answer.as_ref().and_then(|a| serde_json::from_str::<Value>(&a.metadata_json).ok()),
                    "metadata_text": answer.as_ref().map(|a| a.metadata_text.clone()),
                    "failure": seg.task.failure.as_ref().map(|f| json!({ "stage": f.stage, "code": f.code, "message": f.message })),
                }))
            })
            .collect();
        results.push(json!({
            "run_id": r.run_id.to_string(),
            "segmentation_method": rv.method,
            "segments": segments,
            "video_level": crate::machines::prompt_run::view::video_result(r, *n, rows),
        }));
    }
    Some(json!({
        "video_id": v.video_id.to_string(),
        "title": row.title,
        "media_type": v.media_type.as_str(),
        "duration_seconds": v.range_seconds().1 - v.range_seconds().0,
        "media": row.facts.as_ref().map(crate::machines::video::view::facts),
        "source": { "path": row.source_path, "sha256": hex::encode(row.sha256), "size_bytes": row.size_bytes },
        "results": results,
    }))
}
