//! The JSON of an import job and its pages (contract §2.3, §6.1): what the API answers and what
//! webhook deliveries carry as `data`.

use serde_json::{Value, json};
use std::sync::Arc;

/// Items of the first outputs / failed-files page embedded in an `ImportJob`.
pub const EMBEDDED_PAGE_ITEMS: usize = 100;

/// Cursors are opaque: base64url of `v1:<key>`, where the key is where the next page starts
/// (a file id for a job's pages, `<created_ms>-<video_id>` for an index's videos).
pub fn encode_cursor(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{key}"))
}
use super::{FileStatus, ImportFile, ImportJob};
use spool_model::time::rfc3339_ms;

/// One output per part of an imported file.
fn outputs(j: &ImportJob, f: &ImportFile, st: &crate::State, rows: &dyn crate::RowSource) -> Vec<Value> {
    let parts = f.part_videos();
    let count = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(i, video_id)| {
            let title = super::part_title(j, &f.file.path, i, count);
            let (start, end) = rows.video_row(video_id).map_or((0, 0), |r| r.range_us());
            let (start, end) = (start as f64 / 1e6, end as f64 / 1e6);
            json!({
                "file_id": f.file.file_id.to_string(),
                "file_name": f.file.path,
                "source_ordinal": f.file.file_id,
                "part_index": i,
                "part_count": count,
                "source_start_seconds": start,
                "source_end_seconds": end,
                "video_id": video_id.to_string(),
                "title": title,
                "status": if st.video_deletions.contains_key(video_id) { "deleted" } else { "ready" },
            })
        })
        .collect()
}

fn source_file(f: &ImportFile) -> Value {
    json!({
        "file_id": f.file.file_id.to_string(),
        "file_name": f.file.path,
        "source_ordinal": f.file.file_id,
        "status": f.status.as_str(),
        "part_count": if f.file.video_id.is_some() { json!(f.parts.len().max(1)) } else { Value::Null },
        "parts_completed": if f.status == FileStatus::Imported { f.parts.len().max(1) } else { 0 },
        "parts_failed": if f.status == FileStatus::Failed { 1 } else { 0 },
        "failure": f.failure.as_ref().map(|x| json!({ "code": x.code, "message": x.message, "retryable": x.retryable })),
        "skip_reason": f.file.skip_reason,
        "size_bytes": f.file.size_bytes,
        "bytes_transferred": f.bytes,
        "attempts": f.attempts,
        "video_id": if f.status == FileStatus::Imported { f.file.video_id.map(|v| v.to_string()) } else { None },
        "video_ids": if f.status == FileStatus::Imported { f.part_videos().iter().map(|v| json!(v.to_string())).collect::<Vec<_>>() } else { Vec::new() },
    })
}

fn cursor_at(next: Option<u32>) -> Value {
    match next {
        Some(id) => json!(encode_cursor(&id.to_string())),
        None => Value::Null,
    }
}

/// `ImportOutputsPage`: imported files from file id `from` on. `done`: the job's finished
/// files (rows of the `job_files` table, `engine-spec/tables.md`) with ids from `from` on, in id
/// order: at least `limit + 1` imported ones when there are so many (more, and skipped ones,
/// are fine). `rows`: the rows of their videos (their time ranges).
pub fn outputs_page(
    j: &ImportJob,
    st: &crate::State,
    limit: usize,
    done: &[Arc<ImportFile>],
    rows: &dyn crate::RowSource,
) -> Value {
    let mut files = done.iter().filter(|f| f.status == FileStatus::Imported);
    let items: Vec<Value> = files.by_ref().take(limit).flat_map(|f| outputs(j, f, st, rows)).collect();
    let next = files.next().map(|f| f.file.file_id);
    let total = j.imported + j.extra_parts;
    json!({ "items": items, "next_cursor": cursor_at(next), "total": total })
}

/// The job's own files (in flight or failed) of a page of [`files_page`]: with `status`, or all
/// of them, from file id `from` on, at most `limit + 1`.
pub fn own_files(j: &ImportJob, status: Option<FileStatus>, from: u32, limit: usize) -> Vec<ImportFile> {
    match status {
        Some(FileStatus::Imported | FileStatus::Skipped) => Vec::new(),
        Some(s) => j.by_status.from(s, from).take(limit + 1).filter_map(|id| j.files.get(&id)).cloned().collect(),
        None => j.files.range(from..).take(limit + 1).map(|(_, f)| f.clone()).collect(),
    }
}

/// `ImportFilesPage`: the job's files (all, or those with `status`), from file id `from` on.
/// `own`: the job's own files of the page ([`own_files`]), taken when the job had discovered
/// `known` files; `done`: its finished files as [`outputs_page`] takes them (imported and
/// skipped ones, at least `limit + 1` of each when there are so many). The API reads `own`
/// first and `done` after: a file that finished in between is in both (the finished row is
/// shown), never in neither, and the page of all files stops at `known` (a file discovered in
/// between, pending, is in neither; the next page starts there).
pub fn files_page(
    j: &ImportJob,
    status: Option<FileStatus>,
    from: u32,
    limit: usize,
    (own, known): (&[ImportFile], u32),
    done: &[Arc<ImportFile>],
) -> Value {
    let finished = |s: Option<FileStatus>| -> Vec<&ImportFile> {
        done.iter()
            .map(|f| &**f)
            .filter(|f| f.file.file_id >= from && s.is_none_or(|s| f.status == s))
            .take(limit + 1)
            .collect()
    };
    let mut page: Vec<&ImportFile> = match status {
        Some(s @ (FileStatus::Imported | FileStatus::Skipped)) => finished(Some(s)),
        Some(_) => own.iter().collect(),
        None => {
            // The table's imported and skipped files, each in id order, merged with the job's
            // own; a file in both finished in between: its row is shown.
            let mut all = finished(Some(FileStatus::Imported));
            all.extend(finished(Some(FileStatus::Skipped)));
            all.retain(|f| f.file.file_id < known);
            let rows: std::collections::BTreeSet<u32> = all.iter().map(|f| f.file.file_id).collect();
            all.extend(own.iter().filter(|f| !rows.contains(&f.file.file_id)));
            all.sort_by_key(|f| f.file.file_id);
            all
        }
    };
    page.truncate(limit + 1);
    let next = match page.get(limit) {
        Some(f) => Some(f.file.file_id),
        // The page of all files ended at what the job had discovered when it was read.
        None if status.is_none() && j.file_count > known => Some(known.max(from)),
        None => None,
    };
    page.truncate(limit);
    let items: Vec<Value> = page.into_iter().map(source_file).collect();
    let total = match status {
        Some(s) => j.count(s),
        None => u64::from(j.file_count),
    };
    json!({ "items": items, "next_cursor": cursor_at(next), "total": total })
}

/// What became of the prompt run an import automation starts when its job ends: `pending`,
/// `submitted` with `run_id`, or `blocked` with `error_code`; `not_requested` for every other job.
fn execution(j: &ImportJob, st: &crate::State) -> Value {
    let Some(e) = st.automation_jobs.get(&j.job_id) else { return json!({ "status": "not_requested" }) };
    let mut v = json!({ "status": e.status(), "automation_id": e.automation_id.to_string() });
    if let Some(run) = e.run_id {
        v["run_id"] = json!(run.to_string());
    }
    if let Some(code) = &e.error_code {
        v["error_code"] = json!(code);
        v["error"] = json!(e.error);
    }
    v
}

/// An ImportJob's JSON, with `waiting_on` (why it is not moving) while it has not ended.
/// `done`: its first finished files (`crate::rows::JOB_FILES_HEAD` of each finished status, in
/// id order), read from the table by the API, loaded by the runtime for a decision; `rows`: the
/// rows of their videos ([`outputs_videos`]).
pub fn import_job(j: &ImportJob, st: &crate::State, done: &[Arc<ImportFile>], rows: &dyn crate::RowSource) -> Value {
    let mut v = import_job_fields(j, st, done, rows);
    if let Some(w) = crate::waiting::of_job(st, j) {
        v["waiting_on"] = w.json();
    }
    v
}

fn import_job_fields(j: &ImportJob, st: &crate::State, done: &[Arc<ImportFile>], rows: &dyn crate::RowSource) -> Value {
    let n = EMBEDDED_PAGE_ITEMS;
    let outputs = outputs_page(j, st, n, done, rows);
    let video_ids: Vec<Value> =
        outputs["items"].as_array().map(|a| a.iter().map(|o| o["video_id"].clone()).collect()).unwrap_or_default();
    let known = j.file_count;
    let failed =
        files_page(j, Some(FileStatus::Failed), 0, n, (&own_files(j, Some(FileStatus::Failed), 0, n), known), done);
    let skipped = files_page(j, Some(FileStatus::Skipped), 0, n, (&[], known), done);
    let current = j.files_in(FileStatus::Started).next().and_then(|id| j.files.get(&id)).map(|f| f.file.path.clone());
    let index = if j.index_id == super::PLAYGROUND { Value::Null } else { json!(j.index_id.to_string()) };
    let phase = match j.status.as_str() {
        _ if j.cancel_requested && !j.status.is_terminal() => "cancelling",
        "pending" | "scanning" => "listing",
        "importing" => "transferring",
        _ => "finished",
    };
    json!({
        "job_id": j.job_id.to_string(),
        "status": j.status.as_str(),
        "phase": phase,
        "source_kind": j.source_kind(),
        "connector_id": if j.source_kind() == "upload" { Value::Null } else { json!(j.connector_id.to_string()) },
        "target_index_id": index,
        "index_id": index,
        "title": j.title,
        "source_prefix": j.source_prefix,
        "file_pattern": j.file_pattern,
        "recursive": j.recursive,
        "import_mode": j.import_mode.as_str(),
        "created_at": rfc3339_ms(j.created_at_ms),
        "updated_at": rfc3339_ms(j.updated_at_ms),
        "started_at": rfc3339_ms(j.created_at_ms),
        "completed_at": j.completed_at_ms.map(rfc3339_ms),
        "error_message": j.error,
        "progress": {
            "total_files": j.file_count,
            "imported": j.imported,
            "failed": j.failed,
            "skipped": j.skipped,
            "bytes_transferred": j.bytes_transferred,
            "current_file": current,
            "parts_total": j.candidates + j.extra_parts,
            "parts_completed": j.imported + j.extra_parts,
            "parts_failed": j.failed,
        },
        "outputs": outputs,
        "execution": execution(j, st),
        "video_ids": video_ids,
        "failed_files": failed["items"],
        "failed_files_next_cursor": failed["next_cursor"],
        "skipped_files": skipped["items"],
    })
}

/// The videos whose rows an outputs page of these finished files shows (at most `limit` imported
/// files'; [`outputs_page`]).
pub fn outputs_videos(done: &[Arc<ImportFile>], limit: usize) -> Vec<spool_model::VideoId> {
    done.iter().filter(|f| f.status == FileStatus::Imported).take(limit).flat_map(|f| f.part_videos()).collect()
}
