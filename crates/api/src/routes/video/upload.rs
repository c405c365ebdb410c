//! `POST /videos/upload` and `POST /videos` (contract §2.7, §7.1): both answer an `ImportJob`
//! of one file that runs through the import machine (`source_kind` `upload` / `uri`).
//!
//! An upload is streamed to a staging file in `<data-dir>/uploads`, hashed while it arrives,
//! never held whole; past [`crate::ApiConfig::upload_max_bytes`] it is refused 413 and what
//! arrived is removed. A body cut off mid-stream leaves nothing either: the staging file is
//! removed, and a staged file no job took is swept at the next start.

use super::super::import_job::render_job;
use super::super::run_command;
use crate::body::{JsonBody, check_text, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sha2::Digest;
use spool_core::{Command, ImportCommand};
use spool_model::{ConnectorId, IndexId, Provider, Scope};
use tokio::io::AsyncWriteExt;

/// Default of [`crate::ApiConfig::upload_max_bytes`] (`SPOOL_UPLOAD_MAX_BYTES`): 4 GiB.
pub const UPLOAD_BYTES_MAX_DEFAULT: u64 = 4 << 30;
/// Longest text field of an upload form (`title`, `index_id`).
pub const UPLOAD_FIELD_BYTES_MAX: usize = 4096;
/// Default of [`crate::ApiConfig::upload_idle_timeout`] (`SPOOL_UPLOAD_IDLE_TIMEOUT`).
pub const UPLOAD_IDLE_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes of an over-large upload read and dropped before the 413 is answered.
pub const UPLOAD_DRAIN_BYTES_MAX: u64 = 64 << 20;
/// Default of [`crate::ApiConfig::upload_deadline`] (`SPOOL_UPLOAD_DEADLINE`): an upload must
/// end within an hour of its start, however steadily it trickles.
pub const UPLOAD_DEADLINE_DEFAULT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Parts of an upload form (`file`, `title`, `index_id` and any the client adds, which are read
/// and dropped, each within [`UPLOAD_FIELD_BYTES_MAX`]).
pub const UPLOAD_PARTS_MAX: usize = 16;
/// Longest extension given to a staged upload's file name (a longer one is no format Spool
/// imports: the job refuses it as `unsupported_format`).
const STAGED_EXT_CHARS_MAX: usize = 16;
/// Longest file name kept of an upload.
pub const UPLOAD_FILE_NAME_CHARS_MAX: usize = 255;
/// Longest `video_uri`.
pub const VIDEO_URI_CHARS_MAX: usize = 2048;

fn too_large(max: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the upload is larger than {max} bytes"))
        .details(serde_json::json!({ "max_bytes": max, "setting": "SPOOL_UPLOAD_MAX_BYTES" }))
}

fn cut_off(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "upload_incomplete", format!("the upload did not arrive whole: {e}"))
}

/// The next piece of the body, or 408 `upload_incomplete` when none arrives within `idle`
/// (a client that stops sending never holds a handler for ever).
async fn within<T, E: std::fmt::Display>(
    idle: std::time::Duration,
    next: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(idle, next).await {
        Ok(r) => r.map_err(cut_off),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "upload_incomplete",
            format!("no bytes of the upload arrived for {} s", idle.as_secs_f64()),
        )
        .details(serde_json::json!({ "setting": "SPOOL_UPLOAD_IDLE_TIMEOUT" }))),
    }
}

/// The staging file of one upload: removed when dropped unless kept.
struct Staged {
    path: std::path::PathBuf,
    keep: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The last component of a client's file name, without control characters.
fn clean_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let name: String = last.chars().filter(|c| !c.is_control()).take(UPLOAD_FILE_NAME_CHARS_MAX).collect();
    if name.is_empty() || name == "." || name == ".." { "upload".into() } else { name }
}

async fn text_field(
    mut field: axum::extract::multipart::Field<'_>,
    name: &str,
    idle: std::time::Duration,
) -> Result<String, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = within(idle, field.chunk()).await? {
        out.extend_from_slice(&chunk);
        if out.len() > UPLOAD_FIELD_BYTES_MAX {
            return Err(ApiError::validation(name, format!("must be at most {UPLOAD_FIELD_BYTES_MAX} bytes")));
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::validation(name, "must be UTF-8 text"))
}

/// `POST /videos/upload`: multipart `file` (with its file name), `title`, `index_id` (absent:
/// the playground).
pub async fn upload(State(app): State<AppState>, who: Principal, req: Request) -> Result<Response, ApiError> {
    upload_as(app, who, req, false).await
}

/// An upload, as `POST /videos/upload` takes it or (`workflow`) as `POST /workflow/upload`:
/// that one also takes `index_name` (the index of that name, made when there is none), and
/// its title defaults to the file's name.
pub(crate) async fn upload_as(app: AppState, who: Principal, req: Request, workflow: bool) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let max = app.cfg.upload_max_bytes;
    let idle = app.cfg.upload_idle_timeout;
    let headers: HeaderMap = req.headers().clone();
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The form's own fields and boundaries add a little to the file.
    if declared.is_some_and(|n| n > max.saturating_add(64 * 1024)) {
        return Err(too_large(max));
    }
    let mut form = axum::extract::Multipart::from_request(req, &app).await.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send multipart/form-data with a `file` part: {e}"),
        )
    })?;
    let (mut title, mut index_raw, mut index_name) = (None::<String>, None::<String>, None::<String>);
    let mut received: Option<(Staged, String, u64, [u8; 32])> = None;
    let dir = app.rt.uploads_dir();
    let deadline = app.cfg.upload_deadline;
    let mut parts = 0usize;
    let read_form = async {
        while let Some(mut field) = within(idle, form.next_field()).await? {
            parts += 1;
            if parts > UPLOAD_PARTS_MAX {
                return Err(ApiError::validation("body", format!("an upload has at most {UPLOAD_PARTS_MAX} parts")));
            }
            match field.name().unwrap_or("") {
                "title" => title = Some(text_field(field, "title", idle).await?),
                "index_id" => index_raw = Some(text_field(field, "index_id", idle).await?),
                "index_name" if workflow => index_name = Some(text_field(field, "index_name", idle).await?),
                "file" => {
                    if received.is_some() {
                        return Err(ApiError::validation("file", "send one file per upload"));
                    }
                    let file_name = clean_file_name(field.file_name().unwrap_or("upload"));
                    let ext = spool_core::imports::extension(&file_name);
                    let id = app.rt.new_ulid();
                    let key = if ext.is_empty() || ext.chars().count() > STAGED_EXT_CHARS_MAX {
                        format!("up_{id}")
                    } else {
                        format!("up_{id}.{ext}")
                    };
                    let staged = Staged { path: dir.join(&key), keep: false };
                    let mut out = tokio::fs::File::create(&staged.path)
                        .await
                        .map_err(|e| ApiError::internal(format!("the upload cannot be staged ({})", e.kind())))?;
                    let mut hasher = sha2::Sha256::new();
                    let mut bytes = 0u64;
                    while let Some(chunk) = within(idle, field.chunk()).await? {
                        bytes += chunk.len() as u64;
                        if bytes > max {
                            drop(out);
                            drop(staged);
                            // Read (and drop) a bounded rest, so the client is not stuck sending
                            // and sees the answer.
                            let mut drained = 0u64;
                            while let Ok(Ok(Some(c))) = tokio::time::timeout(idle, field.chunk()).await {
                                drained += c.len() as u64;
                                if drained > UPLOAD_DRAIN_BYTES_MAX {
                                    break;
                                }
                            }
                            return Err(too_large(max));
                        }
                        hasher.update(&chunk);
                        out.write_all(&chunk)
                            .await
                            .map_err(|e| ApiError::internal(format!("the upload cannot be staged ({})", e.kind())))?;
                    }
                    // Durable before the job that names it is.
                    out.sync_all()
                        .await
                        .map_err(|e| ApiError::internal(format!("the upload cannot be staged ({})", e.kind())))?;
                    received = Some((staged, file_name, bytes, hasher.finalize().into()));
                }
                other => {
                    // Other parts are read (within the text field bound) and ignored.
                    let name = other.chars().take(64).collect::<String>();
                    text_field(field, &name, idle).await?;
                }
            }
        }
        Ok::<(), ApiError>(())
    };
    match tokio::time::timeout(deadline, read_form).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_incomplete",
                format!("the upload did not end within {} s of its start", deadline.as_secs_f64()),
            )
            .details(serde_json::json!({ "setting": "SPOOL_UPLOAD_DEADLINE" })));
        }
    }
    let Some((mut staged, file_name, bytes, sha256)) = received else {
        return Err(ApiError::validation("file", "a `file` part is required"));
    };
    if bytes == 0 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "empty_file", "the uploaded file is empty")
            .details(serde_json::json!({ "field": "file" })));
    }
    let title = match title {
        Some(t) => t,
        None if workflow => file_name.chars().take(spool_core::imports::TITLE_CHARS_MAX).collect(),
        None => return Err(ApiError::validation("title", "is required")),
    };
    check_text("title", &title, spool_core::imports::TITLE_CHARS_MAX)?;
    let mut index_id = match index_raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(raw.parse::<IndexId>().map_err(|_| ApiError::not_found("index", raw))?),
    };
    if let Some(name) = index_name.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let named = crate::routes::workflow::index_named(&app, &who, &headers, name).await?;
        if index_id.is_some_and(|i| i != named) {
            return Err(ApiError::validation("index_name", "names another index than index_id; send one of them")
                .details(serde_json::json!({ "field": "index_name", "index_id": index_id.map(|i| i.to_string()), "index_name": name })));
        }
        index_id = Some(named);
    }
    let staged_key = staged.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let canonical = format!(
        "{title}\n{}\n{file_name}\n{}",
        index_id.map(|i| i.to_string()).unwrap_or_default(),
        hex::encode(sha256)
    );
    let route = if workflow { "/workflow/upload" } else { "/videos/upload" };
    let idem = idempotency_key(&headers, &who, "POST", route, canonical.as_bytes())?;
    // With a shared store (`SPOOL_MEDIA_URL`) the staged upload goes there before its job is
    // opened: whichever node holds the partition when the job runs reads it.
    let shared = app
        .rt
        .publish_upload(&staged.path, &staged_key)
        .await
        .map_err(|e| ApiError::internal(format!("the upload cannot be staged in the shared store ({e})")))?;
    let cmd = Command::Import(ImportCommand::OpenUploadJob {
        index_id,
        title,
        file_name,
        staged_key: staged_key.clone(),
        size_bytes: bytes,
        sha256,
    });
    // Kept only if this upload's job took it: an idempotent replay answers the first upload's
    // job without deciding anything, so its render never runs and the new copy goes.
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let took = taken.clone();
    let key = staged_key.clone();
    let render = move |st: &spool_core::State, out: spool_core::Outcome| {
        if let spool_core::Outcome::Import(id) = out
            && let Some(spool_model::JobSource::Upload { staged_key: k, .. }) =
                st.imports.get(&id).and_then(|j| j.source.as_ref())
        {
            took.store(*k == staged_key, std::sync::atomic::Ordering::SeqCst);
        }
        render_job(st, out, StatusCode::ACCEPTED)
    };
    let answer = run_command(&app, cmd, idem, Vec::new(), render).await;
    let taken = taken.load(std::sync::atomic::Ordering::SeqCst);
    // Not taken by a job: an idempotent replay's copy goes, and a refused upload's (a 4xx). After
    // a failure whose outcome is unknown (the log unavailable: the job may have landed, a commit
    // whose answer was lost) the copy stays; the shared store's sweep removes it later if no job
    // names it.
    let unknown = answer.as_ref().err().is_some_and(|e| e.status.is_server_error());
    if shared && !taken && !unknown {
        app.rt.remove_upload(&key).await;
    }
    staged.keep = taken && !shared;
    answer
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVideo {
    title: String,
    video_uri: String,
    index_id: String,
    #[serde(default)]
    source_connector_id: Option<String>,
}

/// The object a `video_uri` names in a connector: `<scheme>://<bucket>/<key>` (the scheme and
/// bucket must be the connector's: `gs` for GCS, `s3` for S3, `az`/`azure` for Azure with the
/// container as bucket, `file` for a local folder), or a bare key inside the connector.
pub fn object_path(uri: &str, provider: Provider, location: &spool_model::ConnectorLocation) -> Result<String, String> {
    let key = match uri.split_once("://") {
        None => uri,
        Some((scheme, rest)) => {
            let ok = matches!(
                (scheme.to_ascii_lowercase().as_str(), provider),
                ("gs", Provider::Gcs)
                    | ("s3", Provider::S3)
                    | ("az" | "azure", Provider::Azure)
                    | ("file", Provider::Local)
            );
            if !ok {
                return Err(format!("a {} connector does not read {scheme}:// URIs", provider.as_str()));
            }
            let (bucket, key) = rest.split_once('/').ok_or("the URI names no object after its bucket")?;
            let own = match provider {
                Provider::Azure => location.container.as_deref(),
                Provider::Local => None,
                _ => location.bucket.as_deref(),
            };
            if let Some(own) = own
                && own != bucket
            {
                return Err(format!("the URI's bucket {bucket:?} is not the connector's ({own:?})"));
            }
            key
        }
    };
    let key = key.trim_start_matches('/');
    if key.is_empty() || key.ends_with('/') {
        return Err("the URI names a folder, not an object".into());
    }
    if key.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err("the URI's path has empty, `.` or `..` parts".into());
    }
    Ok(key.to_string())
}

/// `POST /videos`: register one object of a connector as a video (an `ImportJob` of one file).
pub async fn create(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<CreateVideo>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let idem = idempotency_key(&headers, &who, "POST", "/videos", &body.canonical)?;
    let b = body.value;
    check_text("title", &b.title, spool_core::imports::TITLE_CHARS_MAX)?;
    check_text("video_uri", &b.video_uri, VIDEO_URI_CHARS_MAX)?;
    let index_id: IndexId = b.index_id.parse().map_err(|_| ApiError::not_found("index", &b.index_id))?;
    let Some(raw_conn) = b.source_connector_id else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "source_connector_required",
            "Spool reads objects through a connector: send source_connector_id (public and platform objects do not exist here)",
        )
        .details(serde_json::json!({ "field": "source_connector_id" })));
    };
    let connector_id: ConnectorId = raw_conn.parse().map_err(|_| ApiError::not_found("connector", &raw_conn))?;
    let located = app.rt.read(|st| st.live_connector(&connector_id).map(|c| (c.provider, c.location.clone())));
    let (provider, location) = located.ok_or_else(|| ApiError::not_found("connector", &raw_conn))?;
    let path =
        object_path(b.video_uri.trim(), provider, &location).map_err(|m| ApiError::validation("video_uri", m))?;
    let cmd = Command::Import(ImportCommand::OpenUriJob {
        index_id,
        title: b.title,
        connector_id,
        video_uri: b.video_uri,
        path,
    });
    let render = |st: &spool_core::State, out: spool_core::Outcome| render_job(st, out, StatusCode::ACCEPTED);
    run_command(&app, cmd, idem, Vec::new(), render).await
}

#[cfg(test)]
mod props {
    //! Property tests of what an upload and a registration parse (proptest): any multipart
    //! body is read field by field or refused, never a panic; any file name becomes one plain
    //! component; any `video_uri` is an object key without empty, `.` or `..` parts, or refused.
    use super::*;
    use proptest::prelude::*;

    fn read_form(body: Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            let req = axum::http::Request::builder()
                .method("POST")
                .header("content-type", "multipart/form-data; boundary=XyZ")
                .body(axum::body::Body::from(body))
                .unwrap();
            let Ok(mut form) = axum::extract::Multipart::from_request(req, &()).await else { return };
            while let Ok(Some(mut field)) = form.next_field().await {
                let _ = (field.name().map(str::to_string), field.file_name().map(clean_file_name));
                while let Ok(Some(_)) = field.chunk().await {}
            }
        });
    }

    fn part() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![
                Just("file".to_string()),
                Just("title".to_string()),
                Just("index_id".to_string()),
                "[a-z\"]{0,8}"
            ],
            "[ -~]{0,24}",
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
        )
            .prop_map(|(name, file, content, close)| {
                let mut p =
                    format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\r\n")
                        .into_bytes();
                p.extend(content);
                if close {
                    p.extend(b"\r\n");
                }
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_multipart_body_is_read_or_refused_never_a_panic(
            noise in proptest::collection::vec(any::<u8>(), 0..300),
            parts in proptest::collection::vec(part(), 0..4),
            end in any::<bool>(),
        ) {
            read_form(noise);
            let mut body: Vec<u8> = parts.concat();
            if end {
                body.extend(b"--XyZ--\r\n");
            }
            read_form(body);
        }

        #[test]
        fn any_file_name_becomes_one_plain_component(raw in ".{0,80}") {
            let name = clean_file_name(&raw);
            prop_assert!(!name.is_empty() && name != "." && name != "..", "{name:?}");
            prop_assert!(!name.contains(['/', '\\', '\0']), "{name:?}");
        }

        #[test]
        fn any_video_uri_is_a_clean_key_or_refused(uri in "([a-z]{1,6}://)?[a-z./]{0,40}", raw in ".{0,60}") {
            let loc = spool_model::ConnectorLocation { bucket: Some("media".into()), ..Default::default() };
            for u in [&uri, &raw] {
                for provider in [Provider::S3, Provider::Gcs, Provider::Azure, Provider::Local] {
                    if let Ok(key) = object_path(u, provider, &loc) {
                        prop_assert!(!key.starts_with('/') && !key.is_empty(), "{u:?} -> {key:?}");
                        prop_assert!(key.split('/').all(|p| !p.is_empty() && p != "." && p != ".."), "{u:?} -> {key:?}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_uri_names_an_object_of_its_connector_only() {
        let loc = spool_model::ConnectorLocation { bucket: Some("media".into()), ..Default::default() };
        assert_eq!(object_path("gs://media/a/b.mp4", Provider::Gcs, &loc).unwrap(), "a/b.mp4");
        assert_eq!(object_path("a/b.mp4", Provider::Gcs, &loc).unwrap(), "a/b.mp4");
        assert!(object_path("gs://other/a.mp4", Provider::Gcs, &loc).is_err());
        assert!(object_path("s3://media/a.mp4", Provider::Gcs, &loc).is_err());
        assert!(object_path("gs://media/../etc/passwd", Provider::Gcs, &loc).is_err());
        assert!(object_path("gs://media/", Provider::Gcs, &loc).is_err());
        assert!(object_path("gs://media", Provider::Gcs, &loc).is_err());
        let az = spool_model::ConnectorLocation { container: Some("c".into()), ..Default::default() };
        assert_eq!(object_path("az://c/x.mov", Provider::Azure, &az).unwrap(), "x.mov");
    }

    #[test]
    fn an_upload_keeps_only_the_last_component_of_its_file_name() {
        assert_eq!(clean_file_name("../../etc/passwd.mp4"), "passwd.mp4");
        assert_eq!(clean_file_name("C:\\clips\\a.mov"), "a.mov");
        assert_eq!(clean_file_name(".."), "upload");
        assert_eq!(clean_file_name("a\u{0}b.mp4"), "ab.mp4");
    }
}
