//! Connectors (contract §2.2): S3 (and S3-compatible stores through the `endpoint` extension)
//! and local folders (an extension). Credentials are sealed by the keyring for the
//! connector's own data key before they reach a command; no answer ever carries them.

pub(crate) mod views;

use super::{json, oldest_first, reply, run_command, to_reply, view_reply};
use crate::body::{JsonBody, PathParam, check_text, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use spool_core::{Command, Outcome};
use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, ImportMode, Provider, Scope};
use spool_storage::{BrowseError, BrowseRequest, Credentials};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(get "/connectors" list, "listConnectors", "connectors", Array("Connector")),
        op!(post "/connectors/s3" create_s3, "createS3Connector", "connectors", Model("Connector"), ok = 201, body = json_body("Object")),
        op!(post "/connectors/local" create_local, "createLocalConnector", "connectors", Model("Connector"), ok = 201, body = json_body("Object")),
        op!(post "/connectors/azure" create_azure, "createAzureConnector", "connectors", Model("Connector"), ok = 201, body = json_body("Object")),
        op!(post "/connectors/gcs" create_gcs, "createGcsConnector", "connectors", Model("Connector"), ok = 201, body = Body::Multipart),
        op!(get "/connectors/{connector_id}" retrieve, "getConnector", "connectors", Model("Connector")),
        op!(patch "/connectors/{connector_id}" patch, "updateConnector", "connectors", Model("Connector"), body = json_body("ConnectorPatch")),
        op!(delete "/connectors/{connector_id}" delete, "deleteConnector", "connectors", Model("DeleteResponse")),
        op!(post "/connectors/{connector_id}/test" test, "testConnector", "connectors", Model("TestConnectionResult")),
        op!(post "/connectors/{connector_id}/browse" browse, "browseConnector", "connectors", Array("CloudFile"), body = optional_body("Browse")),
    ]
}

fn parse_id(raw: &str) -> Result<ConnectorId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("connector", raw))
}

fn parse_scopes(raw: Option<Vec<String>>) -> Result<Option<Vec<ConnectorScope>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut out = Vec::new();
    for s in raw.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        out.push(match s {
            "import" => ConnectorScope::Import,
            "export" => ConnectorScope::Export,
            other => {
                return Err(ApiError::validation(
                    "scopes",
                    format!("unknown scope {other:?}; use import and/or export"),
                ));
            }
        });
    }
    Ok(Some(out))
}

fn parse_import_mode(raw: Option<&str>) -> Result<Option<ImportMode>, ApiError> {
    match raw {
        None => Ok(None),
        Some("all") => Ok(Some(ImportMode::All)),
        Some("new_only") => Ok(Some(ImportMode::NewOnly)),
        Some(other) => Err(ApiError::validation("import_mode", format!("must be all or new_only (got {other:?})"))),
    }
}

/// A storage setting refused by spool-storage, as the API's 422 naming the field.
fn store_invalid(e: spool_storage::StoreError) -> ApiError {
    match e {
        spool_storage::StoreError::Invalid { field, message } => ApiError::validation(field, message),
        spool_storage::StoreError::Build(m) => ApiError::validation("connector", m),
    }
}

fn required(field: &'static str, v: Option<String>) -> Result<String, ApiError> {
    match v.map(|s| s.trim().to_string()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::validation(field, "is required")),
    }
}

fn render_connector(st: &spool_core::State, out: Outcome, status: StatusCode) -> spool_runtime::Reply {
    let conn = match out {
        Outcome::Connector(id) => st.connectors.get(&id),
        _ => None,
    };
    view_reply(status, conn.map(views::connector))
}

struct NewConnector {
    provider: Provider,
    name: String,
    scopes: Option<Vec<String>>,
    import_mode: Option<String>,
    export_base_path: Option<String>,
    location: ConnectorLocation,
    credentials: Option<Credentials>,
}

async fn create(
    app: AppState,
    who: Principal,
    headers: HeaderMap,
    route: &str,
    canonical: &[u8],
    n: NewConnector,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let idem = idempotency_key(&headers, &who, "POST", route, canonical)?;
    // Names and export paths are checked by the connector machine (`decide`).
    let (name, export_base_path) = (n.name, n.export_base_path);
    let scopes = parse_scopes(n.scopes)?.unwrap_or_else(|| vec![ConnectorScope::Import]);
    let import_mode = parse_import_mode(n.import_mode.as_deref())?.unwrap_or(ImportMode::All);
    // The id is drawn here because it owns the data key the sequencer seals the credentials
    // with (in the same commit as `ConnectorCreated`).
    let connector_id = ConnectorId(app.rt.new_ulid());
    let cmd = Command::Connector(spool_core::ConnectorCommand::CreateConnector {
        connector_id,
        provider: n.provider,
        name,
        scopes,
        import_mode,
        export_base_path,
        location: n.location,
        credentials: None,
    });
    let work = spool_runtime::Runtime::create_connector(cmd, n.credentials);
    let render = |st: &spool_core::State, out: Outcome| render_connector(st, out, StatusCode::CREATED);
    run_command(&app, work, idem, Vec::new(), render).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateS3 {
    name: String,
    bucket: Option<String>,
    #[serde(default)]
    region: Option<String>,
    aws_access_key_id: Option<String>,
    aws_secret_access_key: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    import_mode: Option<String>,
    #[serde(default)]
    export_base_path: Option<String>,
    /// Extension: an S3-compatible endpoint (MinIO, R2, Ceph, a local test server).
    #[serde(default)]
    endpoint: Option<String>,
}

pub async fn create_s3(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<CreateS3>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let endpoint = match b.endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) => Some(spool_storage::normalize_endpoint(e).map_err(store_invalid)?),
        None => None,
    };
    // Parsed here; the shapes of bucket and region are the decision's (spool-model's `rules`).
    let bucket = required("bucket", b.bucket)?;
    let region = b.region.map(|r| r.trim().to_string()).unwrap_or_else(|| "us-east-1".to_string());
    let location =
        ConnectorLocation { bucket: Some(bucket), region: Some(region), endpoint, ..ConnectorLocation::default() };
    let credentials = Credentials {
        aws_access_key_id: Some(required("aws_access_key_id", b.aws_access_key_id)?),
        aws_secret_access_key: Some(required("aws_secret_access_key", b.aws_secret_access_key)?),
        ..Credentials::default()
    };
    let n = NewConnector {
        provider: Provider::S3,
        name: b.name,
        scopes: b.scopes,
        import_mode: b.import_mode,
        export_base_path: b.export_base_path,
        location,
        credentials: Some(credentials),
    };
    create(app, who, headers, "/connectors/s3", &body.canonical, n).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLocal {
    name: String,
    root: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    import_mode: Option<String>,
    #[serde(default)]
    export_base_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAzure {
    name: String,
    storage_account: Option<String>,
    container: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    import_mode: Option<String>,
    #[serde(default)]
    export_base_path: Option<String>,
    /// Extension: shared-key access instead of a service principal.
    #[serde(default)]
    account_key: Option<String>,
    /// Extension: the blob endpoint for shared-key access (e.g. an emulator's).
    #[serde(default)]
    endpoint: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub async fn create_azure(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<CreateAzure>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let endpoint = match non_empty(b.endpoint) {
        Some(e) => Some(spool_storage::normalize_endpoint(&e).map_err(store_invalid)?),
        None => None,
    };
    let account_key = non_empty(b.account_key);
    let container = required("container", b.container)?;
    let storage_account = required("storage_account", b.storage_account)?;
    for (field, v) in [("tenant_id", &b.tenant_id), ("client_id", &b.client_id)] {
        if let Some(v) = v {
            check_text(field, v, 128)?;
        }
    }
    let location = ConnectorLocation {
        storage_account: Some(storage_account),
        container: Some(container),
        tenant_id: non_empty(b.tenant_id),
        client_id: non_empty(b.client_id),
        endpoint,
        ..ConnectorLocation::default()
    };
    let credentials = Credentials {
        azure_client_secret: non_empty(b.client_secret),
        azure_account_key: account_key,
        ..Credentials::default()
    };
    // Without a key and outside emulator mode the service principal must be complete.
    if spool_storage::azure_access(&credentials, &app.cfg.storage) == spool_storage::AzureAccess::ServicePrincipal {
        for (field, v) in [
            ("tenant_id", &location.tenant_id),
            ("client_id", &location.client_id),
            ("client_secret", &credentials.azure_client_secret),
        ] {
            if v.is_none() {
                return Err(ApiError::validation(field, "is required for service-principal access"));
            }
        }
    }
    let n = NewConnector {
        provider: Provider::Azure,
        name: b.name,
        scopes: b.scopes,
        import_mode: b.import_mode,
        export_base_path: b.export_base_path,
        location,
        credentials: Some(credentials),
    };
    create(app, who, headers, "/connectors/azure", &body.canonical, n).await
}

/// Largest GCS service-account file accepted.
pub const GCS_CREDENTIALS_BYTES_MAX: usize = 64 * 1024;

/// `POST /connectors/gcs`: multipart, as the SDK sends it (`scopes` repeated or comma-separated).
pub async fn create_gcs(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    mp: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut mp = mp.map_err(|e| ApiError::validation("body", format!("must be multipart/form-data ({e})")))?;
    let mut text: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut file: Option<Vec<u8>> = None;
    let field_err = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.body_text())
        } else {
            ApiError::validation("body", e.body_text())
        }
    };
    while let Some(field) = mp.next_field().await.map_err(field_err)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "credentials_file" => {
                let bytes = field.bytes().await.map_err(field_err)?;
                if bytes.len() > GCS_CREDENTIALS_BYTES_MAX {
                    return Err(ApiError::validation(
                        "credentials_file",
                        format!("must be at most {GCS_CREDENTIALS_BYTES_MAX} bytes"),
                    ));
                }
                file = Some(bytes.to_vec());
            }
            "name" | "bucket" | "gcp_project_id" | "scopes" | "import_mode" | "export_base_path" => {
                let v = field.text().await.map_err(field_err)?;
                text.entry(name).or_default().push(v);
            }
            other => return Err(ApiError::validation("body", format!("unknown field {other:?}"))),
        }
    }
    let one = |k: &str| text.get(k).and_then(|v| v.last().cloned());
    let file = file.ok_or_else(|| ApiError::validation("credentials_file", "is required"))?;
    let sa: serde_json::Value =
        serde_json::from_slice(&file).map_err(|_| ApiError::validation("credentials_file", "is not JSON"))?;
    if !sa.is_object() {
        return Err(ApiError::validation("credentials_file", "must be a JSON object (a service-account key)"));
    }
    spool_storage::check_gcs_service_account(&sa).map_err(store_invalid)?;
    let sa_text = String::from_utf8(file).map_err(|_| ApiError::validation("credentials_file", "is not UTF-8"))?;
    // Fingerprint on decoded fields and a hash of the file, not on the raw multipart bytes.
    let canonical = {
        use sha2::Digest;
        serde_json::to_vec(&serde_json::json!({ "fields": &text, "credentials_sha256": hex::encode(sha2::Sha256::digest(sa_text.as_bytes())) }))
            .unwrap_or_default()
    };
    let bucket = required("bucket", one("bucket"))?;
    let gcp_project_id = non_empty(one("gcp_project_id"));
    if let Some(p) = &gcp_project_id {
        check_text("gcp_project_id", p, 128)?;
    }
    let location = ConnectorLocation { bucket: Some(bucket), gcp_project_id, ..ConnectorLocation::default() };
    let n = NewConnector {
        provider: Provider::Gcs,
        name: one("name").ok_or_else(|| ApiError::validation("name", "is required"))?,
        scopes: text.get("scopes").cloned(),
        import_mode: one("import_mode"),
        export_base_path: one("export_base_path"),
        location,
        credentials: Some(Credentials { gcs_service_account: Some(sa_text), ..Credentials::default() }),
    };
    create(app, who, headers, "/connectors/gcs", &canonical, n).await
}

pub async fn create_local(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<CreateLocal>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let root = required("root", b.root)?;
    let canonical = spool_storage::check_local_root(&root, &app.cfg.storage).map_err(store_invalid)?;
    let n = NewConnector {
        provider: Provider::Local,
        name: b.name,
        scopes: b.scopes,
        import_mode: b.import_mode,
        export_base_path: b.export_base_path,
        location: ConnectorLocation {
            root: Some(canonical.to_string_lossy().into_owned()),
            ..ConnectorLocation::default()
        },
        credentials: None,
    };
    create(app, who, headers, "/connectors/local", &body.canonical, n).await
}

pub async fn list(State(app): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    Ok(oldest_first(app.rt.read(|st| {
        st.connectors
            .values()
            .filter(|c| c.is_live())
            .map(|c| (c.created_at_ms, c.connector_id.to_string(), views::connector(c)))
            .collect()
    })))
}

pub async fn retrieve(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    super::show(&app, "connector", &raw, |st, id| st.live_connector(&id).map(views::connector))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    import_mode: Option<String>,
    /// `null` or `""` clears it; absent leaves it.
    #[serde(default, deserialize_with = "crate::body::present")]
    export_base_path: Option<Option<String>>,
    #[serde(default)]
    aws_access_key_id: Option<String>,
    #[serde(default)]
    aws_secret_access_key: Option<String>,
    #[serde(default)]
    account_key: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    credentials: Option<Credentials>,
}

pub async fn patch(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    body: JsonBody<Patch>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_id(&raw)?;
    let b = body.value;
    if !app.rt.read(|st| st.live_connector(&id).is_some()) {
        return Err(ApiError::not_found("connector", &raw));
    }
    if let Some(c) = &b.credentials
        && c.aws_access_key_id.is_none()
        && c.aws_secret_access_key.is_none()
        && c.azure_account_key.is_none()
        && c.azure_client_secret.is_none()
        && c.gcs_service_account.is_none()
    {
        return Err(ApiError::validation("credentials", "names no credential to change"));
    }
    let mut patch = b.credentials.unwrap_or_default();
    if b.aws_access_key_id.is_some() {
        patch.aws_access_key_id = b.aws_access_key_id;
    }
    if b.aws_secret_access_key.is_some() {
        patch.aws_secret_access_key = b.aws_secret_access_key;
    }
    if b.account_key.is_some() {
        patch.azure_account_key = b.account_key;
    }
    if b.client_secret.is_some() {
        patch.azure_client_secret = b.client_secret;
    }
    if let Some(v) = patch.gcs_service_account.as_deref().filter(|v| !v.trim().is_empty()) {
        let sa = serde_json::from_str::<serde_json::Value>(v)
            .ok()
            .filter(|v| v.is_object())
            .ok_or_else(|| ApiError::validation("credentials", "gcs_service_account is not a JSON object"))?;
        spool_storage::check_gcs_service_account(&sa).map_err(store_invalid)?;
    }
    let any = patch.aws_access_key_id.is_some()
        || patch.aws_secret_access_key.is_some()
        || patch.azure_account_key.is_some()
        || patch.azure_client_secret.is_some()
        || patch.gcs_service_account.is_some();
    let cmd = Command::Connector(spool_core::ConnectorCommand::UpdateConnector {
        connector_id: id,
        name: b.name,
        scopes: parse_scopes(b.scopes)?,
        import_mode: parse_import_mode(b.import_mode.as_deref())?,
        export_base_path: b.export_base_path.map(|p| {
            p.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).map(Some).unwrap_or(Some(String::new()))
        }),
        credentials: None,
    });
    // The merge with the stored credentials happens in the sequencer, in order with every other
    // change of this connector.
    let cmd = spool_runtime::Runtime::update_connector(cmd, any.then_some(patch));
    let (r, _) =
        app.rt.execute_with(cmd, None, Vec::new(), |st, out| render_connector(st, out, StatusCode::OK)).await?;
    Ok(reply(r))
}

pub async fn delete(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let id = parse_id(&raw)?;
    // The runtime deletes the data key in the same transaction as `ConnectorDeleted`
    // (crypto-shredding follows from the event, not from this handler).
    app.rt
        .execute_with(
            Command::Connector(spool_core::ConnectorCommand::DeleteConnector { connector_id: id }),
            None,
            Vec::new(),
            |_, _| to_reply(StatusCode::OK, &serde_json::json!({})),
        )
        .await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "message": format!("connector {id} deleted") })))
}

fn store_of(
    app: &AppState,
    id: &ConnectorId,
    raw: &str,
) -> Result<(spool_storage::Store, spool_core::Connector), ApiError> {
    let conn = app.rt.read(|st| st.live_connector(id).cloned()).ok_or_else(|| ApiError::not_found("connector", raw))?;
    // The runtime's store, the one imports use (cached per connector version).
    let store = app
        .rt
        .connector_store(id)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "connector_invalid", e))?;
    Ok((store, conn))
}

/// `POST /connectors/{id}/test`: reach the storage for real; a storage failure is
/// `success: false` with a message, never an error status.
pub async fn test(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_id(&raw)?;
    if spool_model::failpoint("connector_test_panic") {
        panic!("failpoint connector_test_panic");
    }
    let outcome = match store_of(&app, &id, &raw) {
        Ok((store, conn)) => {
            let probe = app.rt.new_ulid().to_string();
            spool_storage::test_connection(
                &store,
                conn.has_scope(ConnectorScope::Export),
                conn.export_base_path.as_deref(),
                &probe,
            )
            .await
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(e),
        Err(e) => Err(e.message),
    };
    let (success, error) = match outcome {
        Ok(()) => (true, None),
        Err(m) => (false, Some(m)),
    };
    app.rt
        .execute(Command::Connector(spool_core::ConnectorCommand::RecordConnectorTest {
            connector_id: id,
            success,
            error: error.clone(),
        }))
        .await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "success": success, "error_message": error })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Browse {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    recursive: Option<bool>,
}

pub async fn browse(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    body: JsonBody<Browse>,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id = parse_id(&raw)?;
    let (store, _) = store_of(&app, &id, &raw)?;
    let req = BrowseRequest {
        prefix: body.value.prefix.unwrap_or_default(),
        pattern: body.value.pattern.unwrap_or_else(|| "*".into()),
        recursive: body.value.recursive.unwrap_or(true),
        max_entries: app.cfg.browse_max_entries,
    };
    match spool_storage::browse(&store, &req).await {
        Ok(files) => Ok(json(StatusCode::OK, &serde_json::to_value(files).unwrap_or_default())),
        Err(BrowseError::BadPattern(m)) => Err(ApiError::validation("pattern", m)),
        Err(BrowseError::TooMany { max }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "browse_too_many_results",
            format!("more than {max} objects match; narrow the prefix or the pattern"),
        )
        .details(serde_json::json!({ "max_entries": max }))),
        Err(BrowseError::Storage(m) | BrowseError::Unreachable(m)) => {
            Err(ApiError::new(StatusCode::BAD_GATEWAY, "connector_storage_error", m))
        }
    }
}
