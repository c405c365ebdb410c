//! Import jobs (contract §2.3, §6.1) and the videos they create (§2.7).

pub(crate) mod views;

use super::{json, run_command, view_reply};
use crate::body::{JsonBody, PathParam, Query, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use spool_core::imports::{FileStatus, JobStatus};
use spool_core::{Command, Outcome};
use spool_model::{ConnectorId, ImportJobId, ImportMode, IndexId, Scope, VideoId};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(post "/import-jobs" create, "createImportJob", "import-jobs", Model("ImportJob"), ok = 202, body = json_body("Object")),
        op!(get "/import-jobs" list, "listImportJobs", "import-jobs", Array("ImportJob"), query = &[q("status", QKind::Str), LIMIT_1000]),
        op!(get "/import-jobs/{job_id}" retrieve, "getImportJob", "import-jobs", Model("ImportJob")),
        op!(get "/import-jobs/{job_id}/outputs" outputs, "listImportJobOutputs", "import-jobs", Model("ImportOutputsPage"), query = &[LIMIT_1000, CURSOR]),
        op!(get "/import-jobs/{job_id}/files" files, "listImportJobFiles", "import-jobs", Model("ImportFilesPage"),
                query = &[LIMIT_1000, CURSOR, q("failed_only", QKind::Bool), q("status", QKind::Str)]),
        op!(post "/import-jobs/{job_id}/retry" retry, "retryImportJob", "import-jobs", Model("ImportJob"), ok = 202, body = optional_body("ImportRetry")),
        op!(post "/import-jobs/{job_id}/cancel" cancel, "cancelImportJob", "import-jobs", Model("ImportJob")),
    ]
}

fn parse_job(raw: &str) -> Result<ImportJobId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("import_job", raw))
}

/// Cursors are opaque: base64url of `v1:<key>`, where the key is where the next page starts
/// (a file id for a job's pages, `<created_ms>-<video_id>` for an index's videos). Pages read
/// from the key onward (`range`), so a page costs O(log n + limit) however deep it is.
pub fn encode_cursor(key: &str) -> String {
    spool_core::machines::import_job::view::encode_cursor(key)
}

/// The key of a cursor this server issued (`None` without one).
pub fn decode_cursor(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    use base64::Engine;
    let Some(c) = raw.filter(|c| !c.is_empty()) else { return Ok(None) };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("v1:").map(str::to_string))
        .map(Some)
        .ok_or_else(bad_cursor)
}

fn bad_cursor() -> ApiError {
    ApiError::validation("cursor", "is not a cursor this server issued")
}

/// A job page's cursor: the file id the page starts at (file ids are `u32`).
pub fn decode_file_cursor(raw: Option<&str>) -> Result<u32, ApiError> {
    match decode_cursor(raw)? {
        None => Ok(0),
        Some(k) => k.parse::<u32>().map_err(|_| bad_cursor()),
    }
}

/// An index videos page's cursor: the (created_ms, video id) the page starts at.
pub fn decode_video_cursor(raw: Option<&str>) -> Result<Option<(u64, VideoId)>, ApiError> {
    decode_created_cursor(raw)
}

/// A cursor of a page ordered by (created_ms, id): `<created_ms>-<id>`, for any id type.
pub fn decode_created_cursor<I: std::str::FromStr>(raw: Option<&str>) -> Result<Option<(u64, I)>, ApiError> {
    match decode_cursor(raw)? {
        None => Ok(None),
        Some(k) => {
            let (ms, id) = k.split_once('-').ok_or_else(bad_cursor)?;
            Ok(Some((ms.parse().map_err(|_| bad_cursor())?, id.parse().map_err(|_| bad_cursor())?)))
        }
    }
}

/// The statuses a job's file can have (`/import-jobs/{id}/files?status=`).
pub const FILE_STATUSES: [&str; 6] = ["pending", "importing", "imported", "failed", "skipped", "retrying"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    connector_id: String,
    index_id: String,
    #[serde(default)]
    source_prefix: Option<String>,
    #[serde(default)]
    file_pattern: Option<String>,
    #[serde(default)]
    recursive: Option<bool>,
    #[serde(default)]
    import_mode: Option<String>,
}

pub(crate) fn render_job(st: &spool_core::State, out: Outcome, status: StatusCode) -> spool_runtime::Reply {
    let job = match out {
        Outcome::Import(id) => st.imports.get(&id),
        _ => None,
    };
    // On the sequencer's thread: the job's first finished files were loaded for this command
    // (`spool_core::rows::needs`), or are rows of this very decision.
    view_reply(status, job.map(|j| views::import_job(j, st, &spool_core::rows::job_head_files(st, &j.job_id), st)))
}

pub async fn create(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<CreateJob>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let idem = idempotency_key(&headers, &who, "POST", "/import-jobs", &body.canonical)?;
    let b = body.value;
    let connector_id: ConnectorId =
        b.connector_id.parse().map_err(|_| ApiError::not_found("connector", &b.connector_id))?;
    let index_id: IndexId = b.index_id.parse().map_err(|_| ApiError::not_found("index", &b.index_id))?;
    let import_mode = match b.import_mode.as_deref() {
        None => None,
        Some("all") => Some(ImportMode::All),
        Some("new_only") => Some(ImportMode::NewOnly),
        Some(other) => {
            return Err(ApiError::validation("import_mode", format!("must be all or new_only (got {other:?})")));
        }
    };
    let file_pattern = b.file_pattern.unwrap_or_else(|| "*".into());
    let source_prefix = b.source_prefix.unwrap_or_default();
    // Prefix and pattern are checked by the decision (spool-model's `rules`): a bad one is a
    // 422 naming its field, for every caller alike.
    let cmd = Command::Import(spool_core::ImportCommand::CreateImportJob {
        connector_id,
        index_id,
        source_prefix,
        file_pattern,
        recursive: b.recursive.unwrap_or(true),
        import_mode,
    });
    let render = |st: &spool_core::State, out: Outcome| render_job(st, out, StatusCode::ACCEPTED);
    run_command(&app, cmd, idem, Vec::new(), render).await
}

pub async fn list(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = Query::parse(q.as_deref())?;
    let status = q.get("status").filter(|s| !s.is_empty()).map(|s| s.to_ascii_lowercase());
    let status = match status.as_deref() {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::validation("status", format!("unknown status {s:?}")).details(serde_json::json!({
                "field": "status",
                "allowed": ["pending", "scanning", "importing", "completed", "failed", "cancelled"],
            }))
        })?),
    };
    let limit = spool_model::num::sat_usize(q.int("limit", 100, 1, 1000)?);
    // Newest first, read from the (created_at, id) indexes: O(log n + limit).
    let ids: Vec<ImportJobId> = app.rt.read(|st| {
        let keys: Box<dyn Iterator<Item = (u64, ImportJobId)>> = match status {
            Some(s) => Box::new(st.imports_by_status.iter(s).rev()),
            None => Box::new(st.imports_by_created.iter().rev().copied()),
        };
        keys.take(limit).map(|(_, id)| id).collect()
    });
    let (heads, rows) = job_heads(&app, &ids)?;
    let items: Vec<serde_json::Value> = app.rt.read(|st| {
        ids.iter()
            .filter_map(|id| {
                Some(views::import_job(st.imports.get(id)?, st, heads.get(id).map_or(&[][..], |h| h), &rows))
            })
            .collect()
    });
    Ok(json(StatusCode::OK, &serde_json::Value::Array(items)))
}

pub async fn retrieve(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id = parse_job(&raw)?;
    let (heads, rows) = job_heads(&app, &[id])?;
    let done = heads.get(&id).map_or(&[][..], |h| h);
    let v = app
        .rt
        .read(|st| st.imports.get(&id).map(|j| views::import_job(j, st, done, &rows)))
        .ok_or_else(|| ApiError::not_found("import_job", &raw))?;
    Ok(json(StatusCode::OK, &v))
}

pub async fn outputs(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id = parse_job(&raw)?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 100, 1, 1000)?);
    let from = decode_file_cursor(q.get("cursor"))?;
    // Imported files are rows of the `job_files` table (`engine-spec/tables.md`).
    let done = app.rt.job_files(&id, FileStatus::Imported, from, limit + 1)?;
    let rows = app.rt.video_rows(views::outputs_videos(&done, limit))?;
    let v = app
        .rt
        .read(|st| st.imports.get(&id).map(|j| views::outputs_page(j, st, limit, &done, &rows)))
        .ok_or_else(|| ApiError::not_found("import_job", &raw))?;
    Ok(json(StatusCode::OK, &v))
}

pub async fn files(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id = parse_job(&raw)?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 100, 1, 1000)?);
    let failed_only = q.bool("failed_only", false)?;
    let status = q.get("status").filter(|s| !s.is_empty()).map(|s| s.to_ascii_lowercase());
    let status = match status.as_deref() {
        None => None,
        Some(s) => Some(FileStatus::parse(s).ok_or_else(|| {
            ApiError::validation("status", format!("unknown status {s:?}"))
                .details(serde_json::json!({ "field": "status", "allowed": FILE_STATUSES }))
        })?),
    };
    let status = match (failed_only, status) {
        (true, Some(s)) if s != FileStatus::Failed => {
            return Err(ApiError::validation("status", "contradicts failed_only=true"));
        }
        (true, _) => Some(FileStatus::Failed),
        (false, s) => s,
    };
    let from = decode_file_cursor(q.get("cursor"))?;
    // Imported and skipped files are rows of the `job_files` table, the others the job's own:
    // the job's first, then the table's, so a file that finishes in between is in both.
    let (own, known) = app
        .rt
        .read(|st| st.imports.get(&id).map(|j| (views::own_files(j, status, from, limit), j.file_count)))
        .ok_or_else(|| ApiError::not_found("import_job", &raw))?;
    let mut done = Vec::new();
    for s in [FileStatus::Imported, FileStatus::Skipped] {
        if status.is_none_or(|st| st == s) {
            done.extend(app.rt.job_files(&id, s, from, limit + 1)?);
        }
    }
    done.sort_by_key(|f| f.file.file_id);
    let v = app
        .rt
        .read(|st| st.imports.get(&id).map(|j| views::files_page(j, status, from, limit, (&own, known), &done)))
        .ok_or_else(|| ApiError::not_found("import_job", &raw))?;
    Ok(json(StatusCode::OK, &v))
}

/// The first finished files of each job (`spool_core::rows::JOB_FILES_HEAD` of each finished
/// status), read from the `job_files` table for their JSON; none for a job that has none.
type Heads = std::collections::BTreeMap<ImportJobId, Vec<std::sync::Arc<spool_core::imports::ImportFile>>>;

/// The first finished files of these jobs (`spool_core::rows::JOB_FILES_HEAD` of each finished
/// status), and the rows of the videos their outputs show.
fn job_heads(app: &AppState, ids: &[ImportJobId]) -> Result<(Heads, crate::routes::VideoRows), ApiError> {
    let wanted: Vec<(ImportJobId, u64, u64)> = app.rt.read(|st| {
        ids.iter()
            .filter_map(|id| st.imports.get(id).map(|j| (*id, j.imported, j.skipped)))
            .filter(|(_, i, s)| i + s > 0)
            .collect()
    });
    let n = spool_core::rows::JOB_FILES_HEAD;
    let mut out = std::collections::BTreeMap::new();
    for (id, imported, skipped) in wanted {
        let mut done = Vec::new();
        if imported > 0 {
            done.extend(app.rt.job_files(&id, FileStatus::Imported, 0, n)?);
        }
        if skipped > 0 {
            done.extend(app.rt.job_files(&id, FileStatus::Skipped, 0, n)?);
        }
        done.sort_by_key(|f| f.file.file_id);
        out.insert(id, done);
    }
    let videos = out.values().flat_map(|done| views::outputs_videos(done, views::EMBEDDED_PAGE_ITEMS));
    let rows = app.rt.video_rows(videos)?;
    Ok((out, rows))
}

async fn job_command(
    app: AppState,
    who: Principal,
    headers: HeaderMap,
    raw: String,
    route: &str,
    retry: bool,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_job(&raw)?;
    let idem = idempotency_key(&headers, &who, "POST", &format!("/import-jobs/{id}/{route}"), b"")?;
    let cmd = if retry {
        Command::Import(spool_core::ImportCommand::RetryImportJob { job_id: id })
    } else {
        Command::Import(spool_core::ImportCommand::CancelImportJob { job_id: id })
    };
    let render = |st: &spool_core::State, out: Outcome| render_job(st, out, StatusCode::OK);
    run_command(&app, cmd, idem, Vec::new(), render).await
}

pub async fn retry(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    job_command(app, who, headers, raw, "retry", true).await
}

pub async fn cancel(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    job_command(app, who, headers, raw, "cancel", false).await
}

#[cfg(test)]
mod props {
    //! Property tests of page cursors (proptest): any string is a cursor this server issued or a
    //! 422, never a panic; every issued cursor decodes to its key.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn any_cursor_is_decoded_or_refused_never_a_panic(raw in ".{0,120}", b64 in "[A-Za-z0-9_-]{0,120}") {
            for c in [&raw, &b64] {
                let _ = decode_cursor(Some(c));
                let _ = decode_file_cursor(Some(c));
                let _ = decode_video_cursor(Some(c));
            }
        }

        #[test]
        fn an_issued_cursor_decodes_to_its_key(key in ".{0,80}", file in any::<u32>(), ms in any::<u64>()) {
            prop_assert_eq!(decode_cursor(Some(&encode_cursor(&key))).unwrap(), Some(key.clone()));
            prop_assert_eq!(decode_file_cursor(Some(&encode_cursor(&file.to_string()))).unwrap(), file);
            let v = VideoId(ulid::Ulid::from_parts(ms >> 16, 9));
            let c = encode_cursor(&format!("{ms}-{v}"));
            prop_assert_eq!(decode_video_cursor(Some(&c)).unwrap(), Some((ms, v)));
        }
    }
}
