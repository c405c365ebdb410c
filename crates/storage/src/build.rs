use crate::Store;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, RetryConfig};
use spool_model::{ConnectorLocation, Provider};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Request timeout of storage calls made for the API (test, browse).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opened credentials of a connector. `Debug` is redacted.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0}")]
    Build(String),
}

/// Check an endpoint URL: http or https, a host, nothing else odd. Returns it without a
/// trailing slash.
pub fn normalize_endpoint(raw: &str) -> Result<String, StoreError> {
    let t = raw.trim().trim_end_matches('/');
    let rest = t.strip_prefix("http://").or_else(|| t.strip_prefix("https://")).ok_or_else(|| StoreError::Invalid {
        field: "endpoint",
        message: "must start with http:// or https://".into(),
    })?;
    if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains('@') {
        return Err(StoreError::Invalid {
            field: "endpoint",
            message: "must be a URL with a host (and no credentials)".into(),
        });
    }
    Ok(t.to_string())
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
    let inner: Arc<dyn object_store::ObjectStore> = match provider {
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
            let endpoint = loc.endpoint.clone().or_else(|| env.aws_endpoint_url.clone());
            let mut opts = client_options();
            if let Some(ep) = endpoint {
                let ep = normalize_endpoint(&ep)?;
                if ep.starts_with("http://") {
                    opts = opts.with_allow_http(true);
                }
                b = b.with_endpoint(ep).with_virtual_hosted_style_request(false);
            }
            Arc::new(b.with_client_options(opts).build().map_err(|e| StoreError::Build(e.to_string()))?)
        }
        Provider::Local => {
            let root =
                loc.root.as_deref().ok_or(StoreError::Invalid { field: "root", message: "is required".into() })?;
            Arc::new(LocalFileSystem::new_with_prefix(root).map_err(|e| StoreError::Build(e.to_string()))?)
        }
        Provider::Gcs | Provider::Azure => {
            return Err(StoreError::Build(format!(
                "{} connectors are not available in this build yet",
                provider.as_str()
            )));
        }
    };
    Ok(Store { inner })
}
