use crate::Store;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{ClientOptions, RetryConfig};
use spool_model::{ConnectorLocation, Provider};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Request timeout of storage calls made for the API (test, browse).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opened credentials of a connector. `Debug` is redacted. Unknown fields are refused (a
/// `PATCH` naming `{"foo": ...}` is a mistake to report, not to ignore).
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    /// Azure service principal secret.
    #[serde(default)]
    pub azure_client_secret: Option<String>,
    /// Azure shared key (extension).
    #[serde(default)]
    pub azure_account_key: Option<String>,
    /// The GCS service-account JSON, as uploaded.
    #[serde(default)]
    pub gcs_service_account: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// What the operator's environment says about storage (read once at start).
#[derive(Clone, Debug, Default)]
pub struct StorageEnv {
    /// `AWS_ENDPOINT_URL`: the S3 endpoint for connectors without their own.
    pub aws_endpoint_url: Option<String>,
    /// `SPOOL_LOCAL_ROOTS`: folders local connectors may use (canonical paths).
    pub local_roots: Vec<PathBuf>,
    /// `AZURE_STORAGE_USE_EMULATOR=true`: Azure connectors without an account key use the
    /// emulator account (its URL from `AZURITE_BLOB_STORAGE_URL`, read by object_store).
    pub azure_use_emulator: bool,
    /// Spool's own data directory (canonical): never usable as, in or around a local root.
    pub data_dir: Option<PathBuf>,
    /// In-memory twins of buckets (the runtime simulator only): an S3 connector whose bucket is
    /// registered here gets the twin instead of a client. `None` in `serve`.
    pub twins: Option<crate::twin::Twins>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0}")]
    Build(String),
}

/// Longest endpoint or base URL accepted.
pub const ENDPOINT_CHARS_MAX: usize = 2048;

/// Check a storage endpoint or base URL that a user gave: `http` or `https`, a host, a port in
/// range, no user info, no query, no fragment. Returns it without a trailing slash. Everything
/// object_store would later choke on (and some of it by panicking) is refused here, with the
/// field named.
pub fn check_url(field: &'static str, raw: &str) -> Result<String, StoreError> {
    let bad = |message: &str| StoreError::Invalid { field, message: message.to_string() };
    let t = raw.trim();
    if t.is_empty() {
        return Err(bad("must not be empty"));
    }
    if t.len() > ENDPOINT_CHARS_MAX {
        return Err(bad(&format!("must be at most {ENDPOINT_CHARS_MAX} characters")));
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    let lower = t.to_ascii_lowercase();
    if !lower.starts_with("http://") && !lower.starts_with("https://") {
        return Err(bad("must start with http:// or https://"));
    }
    let url = url::Url::parse(t).map_err(|e| bad(&format!("is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    match url.host_str() {
        None | Some("") => return Err(bad("must name a host")),
        Some(_) => {}
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry user info (credentials go in their own fields)"));
    }
    if url.query().is_some() {
        return Err(bad("must not have a query string"));
    }
    if url.fragment().is_some() {
        return Err(bad("must not have a fragment"));
    }
    if url.port() == Some(0) {
        return Err(bad("must have a port from 1 to 65535"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// [`check_url`] for the `endpoint` field.
pub fn normalize_endpoint(raw: &str) -> Result<String, StoreError> {
    check_url("endpoint", raw)
}

/// Check the `gcs_base_url` of a GCS service-account JSON, when it has one.
pub fn check_gcs_service_account(sa: &serde_json::Value) -> Result<(), StoreError> {
    match sa.get("gcs_base_url") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(u)) => check_url("gcs_base_url", u).map(|_| ()),
        Some(_) => Err(StoreError::Invalid { field: "gcs_base_url", message: "must be a string".into() }),
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new().with_timeout(REQUEST_TIMEOUT).with_connect_timeout(CONNECT_TIMEOUT)
}

fn retry() -> RetryConfig {
    // Fail fast: a test or browse answers within seconds; jobs have their own retries.
    RetryConfig { max_retries: 1, retry_timeout: Duration::from_secs(10), ..RetryConfig::default() }
}

/// Build the object store of a connector.
pub fn build_store(
    provider: Provider,
    loc: &ConnectorLocation,
    creds: &Credentials,
    env: &StorageEnv,
) -> Result<Store, StoreError> {
    fn both<S: object_store::ObjectStore + object_store::multipart::MultipartStore>(
        s: S,
    ) -> (Arc<dyn object_store::ObjectStore>, Arc<dyn object_store::multipart::MultipartStore>) {
        let s = Arc::new(s);
        (s.clone(), s)
    }
    if let (Provider::S3, Some(twins), Some(bucket)) = (provider, &env.twins, loc.bucket.as_deref())
        && let Some(twin) = twins.get(bucket)
    {
        return Ok(twin.store());
    }
    let (inner, multipart) = match provider {
        Provider::S3 => {
            let bucket =
                loc.bucket.as_deref().ok_or(StoreError::Invalid { field: "bucket", message: "is required".into() })?;
            let (Some(id), Some(secret)) = (&creds.aws_access_key_id, &creds.aws_secret_access_key) else {
                // Without keys object_store would ask the instance metadata service (a
                // link-local address); Spool never does that.
                return Err(StoreError::Invalid {
                    field: "aws_access_key_id",
                    message: "access key id and secret are required".into(),
                });
            };
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(loc.region.as_deref().unwrap_or("us-east-1"))
                .with_access_key_id(id)
                .with_secret_access_key(secret)
                .with_retry(retry());
            let mut opts = client_options();
            let endpoint = match (&loc.endpoint, &env.aws_endpoint_url) {
                (Some(ep), _) => Some(normalize_endpoint(ep)?),
                (None, Some(ep)) => Some(check_url("AWS_ENDPOINT_URL", ep)?),
                (None, None) => None,
            };
            if let Some(ep) = endpoint {
                if ep.starts_with("http://") {
                    opts = opts.with_allow_http(true);
                }
                b = b.with_endpoint(ep).with_virtual_hosted_style_request(false);
            }
            both(b.with_client_options(opts).build().map_err(|e| StoreError::Build(e.to_string()))?)
        }
        Provider::Local => {
            let root =
                loc.root.as_deref().ok_or(StoreError::Invalid { field: "root", message: "is required".into() })?;
            // Checked again on every build: the operator's settings may have changed since.
            let root = crate::local::check_local_root(root, env)?;
            return Store::local(&root);
        }
        Provider::Azure => both(azure_builder(loc, creds, env)?.build().map_err(|e| StoreError::Build(e.to_string()))?),
        Provider::Gcs => both(gcs_builder(loc, creds)?.build().map_err(|e| StoreError::Build(e.to_string()))?),
    };
    Ok(Store { inner, multipart: Some(multipart), local_root: None })
}

/// Which way an Azure connector reaches its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureAccess {
    /// `account_key` (+ `endpoint`): shared-key signing.
    SharedKey,
    /// `AZURE_STORAGE_USE_EMULATOR=true`: the emulator's well-known account.
    Emulator,
    /// tenant_id, client_id, client_secret: OAuth client credentials.
    ServicePrincipal,
}

pub fn azure_access(creds: &Credentials, env: &StorageEnv) -> AzureAccess {
    if creds.azure_account_key.is_some() {
        AzureAccess::SharedKey
    } else if env.azure_use_emulator {
        AzureAccess::Emulator
    } else {
        AzureAccess::ServicePrincipal
    }
}

/// The object_store builder of an Azure connector (public so tests can check the
/// configuration of the service-principal path without contacting Azure).
pub fn azure_builder(
    loc: &ConnectorLocation,
    creds: &Credentials,
    env: &StorageEnv,
) -> Result<MicrosoftAzureBuilder, StoreError> {
    let container =
        loc.container.as_deref().ok_or(StoreError::Invalid { field: "container", message: "is required".into() })?;
    let mut opts = client_options();
    let b = MicrosoftAzureBuilder::new().with_container_name(container).with_retry(retry());
    let b = match azure_access(creds, env) {
        AzureAccess::SharedKey => {
            let account = loc
                .storage_account
                .as_deref()
                .ok_or(StoreError::Invalid { field: "storage_account", message: "is required".into() })?;
            let key = creds.azure_account_key.as_deref().unwrap_or_default();
            let mut b = b.with_account(account).with_access_key(key);
            if let Some(ep) = &loc.endpoint {
                let ep = normalize_endpoint(ep)?;
                if ep.starts_with("http://") {
                    opts = opts.with_allow_http(true);
                    b = b.with_allow_http(true);
                }
                b = b.with_endpoint(ep);
            }
            b
        }
        AzureAccess::Emulator => {
            opts = opts.with_allow_http(true);
            b.with_use_emulator(true)
        }
        AzureAccess::ServicePrincipal => {
            let field = |f: &'static str, v: &Option<String>| {
                v.clone()
                    .filter(|s| !s.is_empty())
                    .ok_or(StoreError::Invalid { field: f, message: "is required".into() })
            };
            b.with_account(field("storage_account", &loc.storage_account)?)
                .with_tenant_id(field("tenant_id", &loc.tenant_id)?)
                .with_client_id(field("client_id", &loc.client_id)?)
                .with_client_secret(field("client_secret", &creds.azure_client_secret)?)
        }
    };
    Ok(b.with_client_options(opts))
}

/// The object_store builder of a GCS connector. The base URL comes from the service-account
/// JSON (`gcs_base_url`, and `disable_oauth` for emulators): object_store's own convention.
pub fn gcs_builder(loc: &ConnectorLocation, creds: &Credentials) -> Result<GoogleCloudStorageBuilder, StoreError> {
    let bucket = loc.bucket.as_deref().ok_or(StoreError::Invalid { field: "bucket", message: "is required".into() })?;
    let sa = creds
        .gcs_service_account
        .as_deref()
        .ok_or(StoreError::Invalid { field: "credentials_file", message: "is required".into() })?;
    let parsed: serde_json::Value = serde_json::from_str(sa)
        .map_err(|_| StoreError::Invalid { field: "credentials_file", message: "is not JSON".into() })?;
    check_gcs_service_account(&parsed)?;
    let mut opts = client_options();
    if parsed.get("gcs_base_url").and_then(|v| v.as_str()).is_some_and(|u| u.starts_with("http://")) {
        opts = opts.with_allow_http(true);
    }
    Ok(GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_service_account_key(sa)
        .with_retry(retry())
        .with_client_options(opts))
}

/// The object store every node of a cluster shares for media, staged uploads and export
/// artifacts (`SPOOL_MEDIA_URL`): `s3://bucket[/prefix][?endpoint=URL&region=R]` (the keys
/// from `creds`: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`; the endpoint else
/// `AWS_ENDPOINT_URL`), or `file:///folder[/…]` (a folder every node mounts). The answer is
/// the store and the prefix its objects go under (no leading or trailing `/`).
pub fn shared_store(url: &str, creds: &Credentials, env: &StorageEnv) -> Result<(Store, String), StoreError> {
    let invalid = |message: String| StoreError::Invalid { field: "SPOOL_MEDIA_URL", message };
    if url.len() > ENDPOINT_CHARS_MAX {
        return Err(invalid(format!("is longer than {ENDPOINT_CHARS_MAX} characters")));
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid(format!("is not a URL ({e})")))?;
    let prefix = parsed.path().trim_matches('/').to_string();
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(invalid("has `.` or `..` in its path".into()));
    }
    match parsed.scheme() {
        "s3" => {
            let bucket =
                parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| invalid("names no bucket".into()))?;
            let mut loc = ConnectorLocation { bucket: Some(bucket.to_string()), ..Default::default() };
            for (k, v) in parsed.query_pairs() {
                match &*k {
                    "endpoint" => loc.endpoint = Some(v.to_string()),
                    "region" => loc.region = Some(v.to_string()),
                    other => return Err(invalid(format!("has an unknown setting {other:?} (endpoint, region)"))),
                }
            }
            if creds.aws_access_key_id.is_none() || creds.aws_secret_access_key.is_none() {
                return Err(invalid("needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into()));
            }
            let store = build_store(Provider::S3, &loc, creds, env)?;
            Ok((store, prefix))
        }
        "file" => {
            if parsed.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(invalid("names a host; use file:///folder".into()));
            }
            let root = parsed.to_file_path().map_err(|()| invalid("is not a folder's path".into()))?;
            let root = root.as_path();
            std::fs::create_dir_all(root).map_err(|e| invalid(format!("the folder cannot be made ({})", e.kind())))?;
            if let Some(data) = &env.data_dir
                && let Ok(root) = std::fs::canonicalize(root)
                && (root.starts_with(data) || data.starts_with(&root))
            {
                return Err(invalid("must not be in, or around, the data directory".into()));
            }
            Ok((Store::local(root)?, String::new()))
        }
        other => Err(invalid(format!("has the scheme {other:?}; use s3:// or file://"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::azure::AzureConfigKey;

    fn loc() -> ConnectorLocation {
        ConnectorLocation {
            storage_account: Some("acct".into()),
            container: Some("videos".into()),
            tenant_id: Some("tenant-1".into()),
            client_id: Some("client-1".into()),
            ..ConnectorLocation::default()
        }
    }

    #[test]
    fn azure_service_principal_configuration_is_built_without_contacting_azure() {
        let creds = Credentials { azure_client_secret: Some("s3cr3t".into()), ..Credentials::default() };
        let env = StorageEnv::default();
        assert_eq!(azure_access(&creds, &env), AzureAccess::ServicePrincipal);
        let b = azure_builder(&loc(), &creds, &env).unwrap();
        assert_eq!(b.get_config_value(&AzureConfigKey::AccountName).as_deref(), Some("acct"));
        assert_eq!(b.get_config_value(&AzureConfigKey::AuthorityId).as_deref(), Some("tenant-1"));
        assert_eq!(b.get_config_value(&AzureConfigKey::ClientId).as_deref(), Some("client-1"));
        assert_eq!(b.get_config_value(&AzureConfigKey::ClientSecret).as_deref(), Some("s3cr3t"));
        assert_eq!(b.get_config_value(&AzureConfigKey::ContainerName).as_deref(), Some("videos"));
        assert_eq!(b.get_config_value(&AzureConfigKey::UseEmulator).as_deref(), Some("false"));
        // Building it makes no request.
        assert!(b.build().is_ok());
        let missing = Credentials::default();
        assert!(matches!(
            azure_builder(&loc(), &missing, &env),
            Err(StoreError::Invalid { field: "client_secret", .. })
        ));
    }

    #[test]
    fn azure_account_key_wins_over_the_emulator_and_the_emulator_over_oauth() {
        let env = StorageEnv { azure_use_emulator: true, ..StorageEnv::default() };
        let key = Credentials { azure_account_key: Some("a2V5".into()), ..Credentials::default() };
        assert_eq!(azure_access(&key, &env), AzureAccess::SharedKey);
        assert_eq!(azure_access(&Credentials::default(), &env), AzureAccess::Emulator);
        let b = azure_builder(&loc(), &Credentials::default(), &env).unwrap();
        assert_eq!(b.get_config_value(&AzureConfigKey::UseEmulator).as_deref(), Some("true"));
    }

    #[test]
    fn gcs_needs_json_credentials() {
        let l = ConnectorLocation { bucket: Some("b".into()), ..ConnectorLocation::default() };
        let bad = Credentials { gcs_service_account: Some("not json".into()), ..Credentials::default() };
        assert!(matches!(gcs_builder(&l, &bad), Err(StoreError::Invalid { field: "credentials_file", .. })));
        let good = Credentials {
            gcs_service_account: Some(r#"{"gcs_base_url":"http://127.0.0.1:4444","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}"#.into()),
            ..Credentials::default()
        };
        assert!(gcs_builder(&l, &good).unwrap().build().is_ok());
    }
}
