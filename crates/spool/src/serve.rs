//! `spool serve`: the server. Settings come from flags, then the environment, then the TOML
//! file, then the defaults (design.md, "Operator interface").

#![allow(clippy::disallowed_methods)] // the one place of the operator settings (flags, environment, config file)
use anyhow::Context;
use spool_runtime::{Runtime, RuntimeConfig, SystemClock, SystemIds};
use std::path::PathBuf;
use std::sync::Arc;

pub const DEFAULT_DATA_DIR: &str = "./spool-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Most index partitions a cluster may have.
pub const PARTITIONS_MAX: u16 = 1024;
/// Worker threads of the server's async runtime: one per core, unless `SPOOL_SERVE_WORKERS`
/// says otherwise. It was 16 while a read waited for the sequencer's fsync (the read lock was
/// held through the commit, and each wait blocked a worker: with 2, `spool bench prompt-run`
/// fell from 8,398 to 2,794 segments/s). Reads no longer wait on a commit: with 2 workers the
/// same bench measured 7,254 segments/s against 7,592 with 16.
fn serve_worker_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Data directory (env SPOOL_DATA_DIR; default ./spool-data).
    #[arg(long, env = "SPOOL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (env SPOOL_LISTEN; default 127.0.0.1:8080).
    #[arg(long, env = "SPOOL_LISTEN")]
    pub listen: Option<String>,
    /// A TOML configuration file (env SPOOL_CONFIG).
    #[arg(long, env = "SPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// The log: `postgres://user@host:port/db` for a PostgreSQL log (env SPOOL_LOG_URL; config
    /// `log.url`); default: redb in the data directory.
    #[arg(long = "log", env = "SPOOL_LOG_URL")]
    pub log_url: Option<String>,
}

/// The configuration file. Unknown keys are refused, so a typo is not silently ignored.
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    /// `url`: the log (`postgres://…`; default redb in the data directory).
    #[serde(default)]
    pub log: LogConfig,
    /// `url`: the object store every node shares for media, uploads and export artifacts (env
    /// SPOOL_MEDIA_URL; default: the data directory).
    #[serde(default)]
    pub media: MediaConfig,
    pub listen: Option<String>,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    /// The base clients reach, e.g. `https://spool.example.com` (env SPOOL_PUBLIC_URL).
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub exports: ExportsConfig,
    /// `cert` and `key`: PEM files; `serve` then speaks https itself.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `watch_interval`: how often an import automation lists its location.
    #[serde(default)]
    pub automations: AutomationsConfig,
    /// `default = "<name>"` and one `[processors.<name>]` table per processor.
    #[serde(default)]
    pub processors: std::collections::BTreeMap<String, toml::Value>,
    /// `<category> = "N/minute"` or a list such as `["30/minute", "1000/hour"]` (env
    /// SPOOL_RATE_LIMITS, which replaces the table when set).
    #[serde(default)]
    pub rate_limits: std::collections::BTreeMap<String, toml::Value>,
    /// The prompt `POST /videos/{id}/process` uses when it names none (env SPOOL_DEFAULT_PROMPT).
    #[serde(default)]
    pub default_prompt: Option<String>,
}

/// The per-key rate limits: `SPOOL_RATE_LIMITS` when set, else the config file's
/// `[rate_limits]`, else none.
pub fn rate_limits(
    file: &std::collections::BTreeMap<String, toml::Value>,
) -> anyhow::Result<spool_api::rate_limit::RateLimits> {
    if let Ok(spec) = std::env::var("SPOOL_RATE_LIMITS") {
        return spool_api::rate_limit::parse_env(&spec).map_err(|e| anyhow::anyhow!("SPOOL_RATE_LIMITS: {e}"));
    }
    let mut pairs = Vec::new();
    for (cat, v) in file {
        let items = match v {
            toml::Value::String(s) => vec![s.clone()],
            toml::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("[rate_limits] {cat}: a list of strings such as \"30/minute\""))?,
            _ => anyhow::bail!("[rate_limits] {cat}: a string such as \"30/minute\" or a list of them"),
        };
        pairs.push((cat.clone(), items));
    }
    spool_api::rate_limit::from_pairs(&pairs).map_err(|e| anyhow::anyhow!("[rate_limits]: {e}"))
}

/// The limits as the configuration says now (`POST /rate-limit/refresh`): the file read again.
fn reload_rate_limits(config: Option<PathBuf>) -> Result<spool_api::rate_limit::RateLimits, String> {
    let file = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            toml::from_str::<FileConfig>(&text).map_err(|e| format!("in {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    rate_limits(&file.rate_limits).map_err(|e| format!("{e:#}"))
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct AutomationsConfig {
    /// e.g. `1m` (the default).
    #[serde(default)]
    pub watch_interval: Option<String>,
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    /// Largest download export in bytes (env SPOOL_EXPORT_DOWNLOAD_MAX_BYTES; default 64 MiB).
    #[serde(default)]
    pub download_max_bytes: Option<u64>,
}

/// One `[processors.<name>]` table.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ProcessorFile {
    pub kind: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    /// e.g. `120s` (the default).
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Largest answer in bytes (default 1 MiB).
    #[serde(default)]
    pub response_max_bytes: Option<u64>,
}

/// The processors of the config file's `[processors]` (the built-in `probe` is always there).
pub fn processors(
    file: &std::collections::BTreeMap<String, toml::Value>,
) -> anyhow::Result<spool_runtime::ProcessorSettings> {
    use spool_runtime::{ProcessorConfig, ProcessorKind};
    let mut out = spool_runtime::ProcessorSettings::default();
    for (name, v) in file {
        if name == "default" {
            out.default = v.as_str().with_context(|| "processors.default must be a processor's name")?.to_string();
            continue;
        }
        if name == "define" {
            out.define =
                Some(v.as_str().with_context(|| "processors.define must be an http processor's name")?.to_string());
            continue;
        }
        let p: ProcessorFile = v.clone().try_into().with_context(|| format!("in [processors.{name}]"))?;
        // An endpoint of the operator's (`http`, `embed`): its URL, secret and bounds.
        let endpoint = || -> anyhow::Result<(String, String, std::time::Duration, u64)> {
            let url = p.url.clone().with_context(|| format!("[processors.{name}] needs a url"))?;
            let parsed = reqwest::Url::parse(&url).with_context(|| format!("[processors.{name}] url {url:?}"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https"),
                "[processors.{name}] url must be http or https"
            );
            let secret = p.secret.clone().with_context(|| format!("[processors.{name}] needs a secret"))?;
            anyhow::ensure!(secret.len() >= 16, "[processors.{name}] secret must be at least 16 characters");
            let timeout = match &p.timeout {
                Some(t) => spool_runtime::parse_duration(t)
                    .with_context(|| format!("[processors.{name}] timeout {t:?} is not a duration such as 30s"))?,
                None => spool_runtime::HTTP_PROCESSOR_TIMEOUT_DEFAULT,
            };
            let max = p.response_max_bytes.unwrap_or(spool_runtime::HTTP_PROCESSOR_RESPONSE_BYTES_DEFAULT);
            Ok((url, secret, timeout, max))
        };
        let kind = match p.kind.as_str() {
            "probe" => ProcessorKind::Probe,
            "http" => {
                let (url, secret, timeout, response_bytes_max) = endpoint()?;
                ProcessorKind::Http { url, secret, timeout, response_bytes_max }
            }
            "embed" => {
                let (url, secret, timeout, _) = endpoint()?;
                // 64 vectors a request: its own default bound.
                let response_bytes_max = p.response_max_bytes.unwrap_or(spool_runtime::EMBED_RESPONSE_BYTES_DEFAULT);
                if let Some(other) = &out.embedder {
                    anyhow::bail!(
                        "[processors.{name}] and [processors.{}] are both kind \"embed\": configure one",
                        other.name
                    );
                }
                let concurrency =
                    p.concurrency.unwrap_or(spool_runtime::HTTP_PROCESSOR_CONCURRENCY_DEFAULT).clamp(1, 256);
                out.embedder = Some(spool_runtime::EmbedderConfig {
                    name: name.clone(),
                    url,
                    secret,
                    timeout,
                    response_bytes_max,
                    concurrency,
                });
                continue;
            }
            other => anyhow::bail!("[processors.{name}] kind {other:?}: must be \"probe\", \"http\" or \"embed\""),
        };
        let concurrency = p.concurrency.unwrap_or(spool_runtime::HTTP_PROCESSOR_CONCURRENCY_DEFAULT).clamp(1, 256);
        out.processors.insert(name.clone(), ProcessorConfig { kind, concurrency });
    }
    anyhow::ensure!(
        out.processors.contains_key(&out.default),
        "processors.default names {:?}, which is not configured",
        out.default
    );
    if let Some(d) = &out.define {
        anyhow::ensure!(
            matches!(out.processors.get(d).map(|p| &p.kind), Some(ProcessorKind::Http { .. })),
            "processors.define names {d:?}, which is not a configured http processor"
        );
    }
    Ok(out)
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Comma-separated durations, e.g. `0s,5s,5m,30m,2h,5h,10h,10h` (the default).
    #[serde(default)]
    pub retry_schedule: Option<String>,
    /// e.g. `15s` (the default).
    #[serde(default)]
    pub timeout: Option<String>,
    /// e.g. `24h` (the default).
    #[serde(default)]
    pub rotation_grace: Option<String>,
    /// Failed deliveries in a row that disable a webhook (default 20).
    #[serde(default)]
    pub disable_after: Option<u32>,
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub local_roots: Vec<PathBuf>,
    /// Largest browse answer (env SPOOL_BROWSE_MAX_ENTRIES; default 50,000).
    #[serde(default)]
    pub browse_max_entries: Option<usize>,
    #[serde(default)]
    pub import_concurrency: Option<usize>,
    /// Largest upload in bytes (env SPOOL_UPLOAD_MAX_BYTES; default 4 GiB).
    #[serde(default)]
    pub upload_max_bytes: Option<u64>,
    /// e.g. `60s` (the default): an upload that sends nothing for this long is answered 408.
    #[serde(default)]
    pub upload_idle_timeout: Option<String>,
    /// e.g. `1h` (the default): an upload that has not ended this long after it began is
    /// answered 408.
    #[serde(default)]
    pub upload_deadline: Option<String>,
}

/// The settings in force.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// The log (`--log`, env SPOOL_LOG_URL, config `log.url`): `postgres://…`, or `None` for
    /// redb in the data directory.
    pub log_url: Option<String>,
    /// This node's name in the log's lease (env SPOOL_NODE_ID; default: kept in
    /// `<data-dir>/node.id`).
    pub node_id: Option<String>,
    /// How long a PostgreSQL log's lease lasts unless renewed (env SPOOL_LEASE_TTL; 10s).
    pub lease_ttl: std::time::Duration,
    /// The object store every node shares for media, staged uploads and export artifacts
    /// (env SPOOL_MEDIA_URL; config `media.url`): `s3://bucket[/prefix][?endpoint=&region=]`
    /// or `file:///folder`; `None`: the data directory.
    pub media_url: Option<String>,
    /// Index partitions of a PostgreSQL cluster, recorded when it is created (env
    /// SPOOL_PARTITIONS; default 32, `spool_log::PARTITIONS_DEFAULT`; 0: one partition holds
    /// everything).
    pub partitions: Option<u16>,
    /// Where the other nodes of a cluster reach this one (env SPOOL_ADVERTISE_URL; default:
    /// the address it listens on, with 127.0.0.1 for an unspecified address).
    pub advertise_url: Option<String>,
    pub listen: String,
    /// Hosts, IPs or CIDRs webhooks may reach over plain http or private addresses
    /// (env SPOOL_WEBHOOK_ALLOW_HOSTS, comma-separated; config `webhooks.allow_hosts`).
    pub webhook_allow_hosts: Vec<String>,
    /// Webhook deliveries: schedule, timeout, rotation grace (env SPOOL_WEBHOOK_RETRY_SCHEDULE,
    /// SPOOL_WEBHOOK_TIMEOUT, SPOOL_WEBHOOK_ROTATION_GRACE; config `webhooks.*`).
    pub webhooks: spool_runtime::WebhookSettings,
    /// Folders `local` connectors may use (env SPOOL_LOCAL_ROOTS, separated by `:`;
    /// config `storage.local_roots`).
    pub local_roots: Vec<PathBuf>,
    pub browse_max_entries: usize,
    /// Files copied at once by import jobs (env SPOOL_IMPORT_CONCURRENCY; config
    /// `storage.import_concurrency`; default 8).
    pub import_concurrency: usize,
    /// Largest upload (env SPOOL_UPLOAD_MAX_BYTES; config `storage.upload_max_bytes`; 4 GiB).
    pub upload_max_bytes: u64,
    /// Idle time after which an upload is given up (env SPOOL_UPLOAD_IDLE_TIMEOUT; config
    /// `storage.upload_idle_timeout`; 60 s).
    pub upload_idle_timeout: std::time::Duration,
    /// The base clients reach (env SPOOL_PUBLIC_URL; config `public_url`).
    pub public_url: Option<String>,
    /// PEM certificate chain and key (env SPOOL_TLS_CERT / SPOOL_TLS_KEY; config `tls.cert` /
    /// `tls.key`): with both, `serve` speaks https.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often an import automation lists its location (env SPOOL_AUTOMATION_WATCH_INTERVAL;
    /// config `automations.watch_interval`; 1m).
    pub automation_watch_interval: std::time::Duration,
    /// A clock the caller moves (`spool demo` shows an automation's timers on one); `None`: the
    /// wall clock (or `SPOOL_TEST_CLOCK_MS` in a debug build).
    pub clock: Option<Arc<spool_runtime::TestClock>>,
    /// On a PostgreSQL log: the node's reader pool, shared by every partition it holds.
    pub pg_readers: Option<Arc<spool_log::PgReaders>>,
    /// The processors prompt runs use (config `[processors.<name>]`, `processors.default`).
    pub processors: spool_runtime::ProcessorSettings,
    /// Largest download export (env SPOOL_EXPORT_DOWNLOAD_MAX_BYTES; config
    /// `exports.download_max_bytes`; 64 MiB).
    pub export_download_max_bytes: u64,
    /// Connection bounds (env SPOOL_HEADER_READ_TIMEOUT, SPOOL_SHUTDOWN_GRACE; `http.rs`).
    pub http: crate::http::Limits,
    /// Longest upload, start to end (env SPOOL_UPLOAD_DEADLINE; config `storage.upload_deadline`;
    /// 1 h): past it the upload is answered 408 and nothing is kept.
    pub upload_deadline: std::time::Duration,
    /// Per-key rate limits (`[rate_limits]`, SPOOL_RATE_LIMITS), one limiter for every
    /// partition this node serves.
    pub rate_limiter: Arc<spool_api::rate_limit::Limiter>,
    /// The config file, read again by `POST /rate-limit/refresh`.
    pub config_path: Option<PathBuf>,
    /// `POST /videos/{id}/process`'s prompt when it names none (SPOOL_DEFAULT_PROMPT, config
    /// `default_prompt`).
    pub default_prompt: Option<String>,
}

pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
    let file = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading the config file {}", path.display()))?;
            toml::from_str::<FileConfig>(&text).with_context(|| format!("in the config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let duration = |name: &str, env: &str, file: Option<&String>| -> anyhow::Result<Option<std::time::Duration>> {
        let raw = std::env::var(env).ok().or_else(|| file.cloned());
        match raw {
            None => Ok(None),
            Some(v) => spool_runtime::parse_duration(&v)
                .map(Some)
                .with_context(|| format!("{name}={v:?} is not a duration such as 500ms, 5s, 5m or 2h")),
        }
    };
    let mut webhooks = spool_runtime::WebhookSettings::default();
    if let Some(raw) =
        std::env::var("SPOOL_WEBHOOK_RETRY_SCHEDULE").ok().or_else(|| file.webhooks.retry_schedule.clone())
    {
        let mut out = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let d = spool_runtime::parse_duration(part).with_context(|| {
                format!("SPOOL_WEBHOOK_RETRY_SCHEDULE: {part:?} is not a duration such as 5s or 2h")
            })?;
            out.push(spool_model::num::ms(d));
        }
        anyhow::ensure!(!out.is_empty(), "SPOOL_WEBHOOK_RETRY_SCHEDULE names no attempt");
        webhooks.retry_schedule_ms = out;
    }
    if let Some(d) = duration("SPOOL_WEBHOOK_TIMEOUT", "SPOOL_WEBHOOK_TIMEOUT", file.webhooks.timeout.as_ref())? {
        webhooks.timeout = d;
    }
    if let Some(d) =
        duration("SPOOL_WEBHOOK_ROTATION_GRACE", "SPOOL_WEBHOOK_ROTATION_GRACE", file.webhooks.rotation_grace.as_ref())?
    {
        webhooks.rotation_grace = d;
    }
    match std::env::var("SPOOL_WEBHOOK_DISABLE_AFTER") {
        Ok(v) => {
            webhooks.disable_after =
                v.trim().parse().with_context(|| format!("SPOOL_WEBHOOK_DISABLE_AFTER={v:?} is not a number"))?
        }
        Err(_) => {
            if let Some(n) = file.webhooks.disable_after {
                webhooks.disable_after = n;
            }
        }
    }
    Ok(Settings {
        webhooks,
        data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        log_url: match args.log_url.clone().or(file.log.url).filter(|u| !u.trim().is_empty()) {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => Some(u),
            Some(u) => anyhow::bail!(
                "--log / SPOOL_LOG_URL / log.url: {:?} is not a postgres:// URL (leave it unset for redb in the data directory)",
                spool_log::redact_url(&u)
            ),
            None => None,
        },
        media_url: std::env::var("SPOOL_MEDIA_URL")
            .ok()
            .or(file.media.url)
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty()),
        node_id: std::env::var("SPOOL_NODE_ID").ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
        partitions: match std::env::var("SPOOL_PARTITIONS") {
            Ok(v) if !v.trim().is_empty() => {
                Some(
                    v.trim().parse::<u16>().ok().filter(|n| *n <= PARTITIONS_MAX).with_context(|| {
                        format!("SPOOL_PARTITIONS={v:?} is not a number from 0 to {PARTITIONS_MAX}")
                    })?,
                )
            }
            _ => None,
        },
        advertise_url: match std::env::var("SPOOL_ADVERTISE_URL") {
            Ok(v) if !v.trim().is_empty() => {
                let u = v.trim().trim_end_matches('/').to_string();
                let parsed =
                    reqwest::Url::parse(&u).with_context(|| format!("SPOOL_ADVERTISE_URL={u:?} is not a URL"))?;
                anyhow::ensure!(
                    matches!(parsed.scheme(), "http" | "https") && parsed.path() == "/" && parsed.query().is_none(),
                    "SPOOL_ADVERTISE_URL={u:?} must be an http(s) URL of a host and port, such as http://10.0.0.5:8080"
                );
                Some(u)
            }
            _ => None,
        },
        lease_ttl: duration("SPOOL_LEASE_TTL", "SPOOL_LEASE_TTL", None)?
            .filter(|d| !d.is_zero())
            .unwrap_or(spool_log::LEASE_TTL_DEFAULT),
        listen: args.listen.clone().or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        webhook_allow_hosts: match std::env::var("SPOOL_WEBHOOK_ALLOW_HOSTS") {
            Ok(v) => v.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect(),
            Err(_) => file.webhooks.allow_hosts,
        },
        local_roots: match std::env::var_os("SPOOL_LOCAL_ROOTS") {
            Some(v) => std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect(),
            None => file.storage.local_roots,
        },
        browse_max_entries: match std::env::var("SPOOL_BROWSE_MAX_ENTRIES") {
            Ok(v) => v.trim().parse().with_context(|| format!("SPOOL_BROWSE_MAX_ENTRIES={v:?} is not a number"))?,
            Err(_) => file.storage.browse_max_entries.unwrap_or(spool_api::BROWSE_MAX_ENTRIES_DEFAULT),
        },
        upload_max_bytes: match std::env::var("SPOOL_UPLOAD_MAX_BYTES") {
            Ok(v) => v.trim().parse().with_context(|| format!("SPOOL_UPLOAD_MAX_BYTES={v:?} is not a number"))?,
            Err(_) => file.storage.upload_max_bytes.unwrap_or(spool_api::UPLOAD_BYTES_MAX_DEFAULT),
        },
        http: crate::http::Limits {
            header_read_timeout: duration("SPOOL_HEADER_READ_TIMEOUT", "SPOOL_HEADER_READ_TIMEOUT", None)?
                .filter(|d| !d.is_zero())
                .unwrap_or(crate::http::HEADER_READ_TIMEOUT_DEFAULT),
            shutdown_grace: duration("SPOOL_SHUTDOWN_GRACE", "SPOOL_SHUTDOWN_GRACE", None)?
                .unwrap_or(crate::http::SHUTDOWN_GRACE_DEFAULT),
        },
        upload_deadline: duration(
            "SPOOL_UPLOAD_DEADLINE",
            "SPOOL_UPLOAD_DEADLINE",
            file.storage.upload_deadline.as_ref(),
        )?
        .filter(|d| !d.is_zero())
        .unwrap_or(spool_api::UPLOAD_DEADLINE_DEFAULT),
        upload_idle_timeout: duration(
            "SPOOL_UPLOAD_IDLE_TIMEOUT",
            "SPOOL_UPLOAD_IDLE_TIMEOUT",
            file.storage.upload_idle_timeout.as_ref(),
        )?
        .unwrap_or(spool_api::UPLOAD_IDLE_TIMEOUT_DEFAULT),
        processors: processors(&file.processors)?,
        automation_watch_interval: duration(
            "SPOOL_AUTOMATION_WATCH_INTERVAL",
            "SPOOL_AUTOMATION_WATCH_INTERVAL",
            file.automations.watch_interval.as_ref(),
        )?
        .filter(|d| !d.is_zero())
        .unwrap_or(std::time::Duration::from_millis(spool_core::machines::automation::WATCH_INTERVAL_DEFAULT_MS)),
        clock: None,
        rate_limiter: Arc::new(spool_api::rate_limit::Limiter::new(rate_limits(&file.rate_limits)?)),
        config_path: args.config.clone(),
        default_prompt: std::env::var("SPOOL_DEFAULT_PROMPT")
            .ok()
            .or(file.default_prompt.clone())
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty()),
        pg_readers: None,
        export_download_max_bytes: match std::env::var("SPOOL_EXPORT_DOWNLOAD_MAX_BYTES") {
            Ok(v) => v
                .trim()
                .parse()
                .with_context(|| format!("SPOOL_EXPORT_DOWNLOAD_MAX_BYTES={v:?} is not a number of bytes"))?,
            Err(_) => file.exports.download_max_bytes.unwrap_or(spool_runtime::EXPORT_DOWNLOAD_MAX_BYTES_DEFAULT),
        },
        tls: {
            let env = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty()).map(PathBuf::from);
            match (env("SPOOL_TLS_CERT").or(file.tls.cert.clone()), env("SPOOL_TLS_KEY").or(file.tls.key.clone())) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => anyhow::bail!(
                    "TLS needs both a certificate and a key (SPOOL_TLS_CERT and SPOOL_TLS_KEY, or tls.cert and tls.key)"
                ),
            }
        },
        public_url: match std::env::var("SPOOL_PUBLIC_URL") {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
            _ => file.public_url.clone(),
        },
        import_concurrency: match std::env::var("SPOOL_IMPORT_CONCURRENCY") {
            Ok(v) => v.trim().parse().with_context(|| format!("SPOOL_IMPORT_CONCURRENCY={v:?} is not a number"))?,
            Err(_) => file.storage.import_concurrency.unwrap_or(spool_runtime::IMPORT_CONCURRENCY_DEFAULT),
        },
    })
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = resolve(&args)?;
    let workers = match std::env::var("SPOOL_SERVE_WORKERS") {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("SPOOL_SERVE_WORKERS={v:?} is not a positive number"))?,
        Err(_) => serve_worker_threads(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    let served = rt.block_on(serve(settings));
    // A standby stopped while it waits for the lease leaves that wait behind.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// A server that is open and bound, not yet serving.
pub struct Started {
    pub runtime: Arc<Runtime>,
    pub listener: tokio::net::TcpListener,
    pub app: axum::Router,
}

/// Open the data directory and bind the listener: everything `serve` does before it serves.
pub async fn start(settings: &Settings, env_key: Option<&str>) -> anyhow::Result<Started> {
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local_addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| settings.listen.clone());
    let (runtime, app) = open(settings, &local_addr, env_key, Part::ONE).await?;
    Ok(Started { runtime, listener, app })
}

/// Which partition of the log a runtime serves.
#[derive(Debug, Clone)]
pub struct Part {
    pub partition: i32,
    /// Set in a partitioned cluster: new ids carry the partition.
    pub tag: Option<u16>,
    /// Wait while another node holds it (a standby) instead of failing at once.
    pub wait: bool,
    /// An index partition's view of the catalog's log (`spool_runtime::CatalogLog`).
    pub catalog: Option<spool_runtime::CatalogLog>,
    /// The catalog's: the index partitions whose published domain events it delivers.
    pub index_partitions: u16,
}

impl Part {
    /// The log's one partition (redb, or a PostgreSQL cluster of one partition).
    pub const ONE: Part = Part { partition: 0, tag: None, wait: true, catalog: None, index_partitions: 0 };
}

/// The shared store of `SPOOL_MEDIA_URL` (its keys from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`), under its prefix.
pub fn shared_files(url: &str, storage: &spool_storage::StorageEnv) -> anyhow::Result<spool_storage::Store> {
    let creds = spool_storage::Credentials {
        aws_access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty()),
        aws_secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok().filter(|v| !v.is_empty()),
        ..Default::default()
    };
    let (store, prefix) = spool_storage::shared_store(url, &creds, storage).map_err(|e| anyhow::anyhow!("{e}"))?;
    if prefix.is_empty() {
        Ok(store)
    } else {
        store.under(&prefix).map_err(|e| anyhow::anyhow!("SPOOL_MEDIA_URL: {e}"))
    }
}

/// A node whose shared store cannot be written refuses to start, saying why (never a node that
/// takes a partition and then cannot import or serve its media).
async fn check_shared_files(url: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let storage = spool_storage::StorageEnv {
        data_dir: std::fs::canonicalize(data_dir).ok(),
        aws_endpoint_url: std::env::var("AWS_ENDPOINT_URL").ok().filter(|v| !v.trim().is_empty()),
        ..Default::default()
    };
    let store = shared_files(url, &storage)?;
    spool_runtime::clear_scratch(data_dir).with_context(|| format!("emptying {}/scratch", data_dir.display()))?;
    // Its own name: nodes starting together (each PID 1 in a container) never share a probe.
    let probe = ulid::Ulid::new().to_string().to_lowercase();
    spool_storage::test_connection(&store, true, None, &probe)
        .await
        .map_err(|e| anyhow::anyhow!("SPOOL_MEDIA_URL={url:?}: the shared store cannot be written: {e}"))?;
    tracing::info!(url, "media, uploads and export artifacts live in the shared store");
    Ok(())
}

/// Open the data directory (on a PostgreSQL log: once this node holds the partition) and build
/// the API.
pub async fn open(
    settings: &Settings,
    local_addr: &str,
    env_key: Option<&str>,
    part: Part,
) -> anyhow::Result<(Arc<Runtime>, axum::Router)> {
    // Local roots are compared canonically; a root that does not exist is skipped with a warning.
    let local_roots = settings
        .local_roots
        .iter()
        .filter_map(|r| match std::fs::canonicalize(r) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(root = %r.display(), error = %e, "a local root is not usable; skipped");
                None
            }
        })
        .collect();
    // The data directory is never a local connector's root (nor inside or around one).
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating the data directory {}", settings.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&settings.data_dir)
        .with_context(|| format!("resolving the data directory {}", settings.data_dir.display()))?;
    let storage = spool_storage::StorageEnv {
        data_dir: Some(data_dir),
        aws_endpoint_url: std::env::var("AWS_ENDPOINT_URL").ok().filter(|v| !v.trim().is_empty()),
        local_roots,
        azure_use_emulator: std::env::var("AZURE_STORAGE_USE_EMULATOR")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
        twins: None,
    };
    let mut cfg = RuntimeConfig::new(&settings.data_dir);
    cfg.shared_files = match &settings.media_url {
        Some(url) => Some(shared_files(url, &storage)?),
        None => None,
    };
    cfg.log_url = settings.log_url.clone();
    cfg.node_id = settings.node_id.clone().unwrap_or_default();
    cfg.lease_ttl = settings.lease_ttl;
    cfg.pg_readers = settings.pg_readers.clone();
    cfg.partition = part.partition;
    cfg.partition_tag = part.tag;
    cfg.wait_for_lease = part.wait;
    cfg.catalog = part.catalog;
    cfg.index_partitions = part.index_partitions;
    cfg.storage = storage.clone();
    cfg.import_concurrency = settings.import_concurrency;
    cfg.webhooks = spool_runtime::WebhookSettings {
        allow_hosts: settings.webhook_allow_hosts.clone(),
        ..settings.webhooks.clone()
    };
    cfg.processors = settings.processors.clone();
    cfg.export_download_max_bytes = settings.export_download_max_bytes;
    cfg.automation_watch_interval = settings.automation_watch_interval;
    // Debug builds: tests reach the bound on events per decision with a few webhooks.
    if cfg!(debug_assertions)
        && let Some(n) = std::env::var("SPOOL_TEST_DECISION_EVENTS_MAX").ok().and_then(|v| v.trim().parse().ok())
    {
        cfg.decision_events_max = n;
    }
    // Smaller parts make a resumable upload testable with a small artifact.
    if let Ok(v) = std::env::var("SPOOL_EXPORT_PART_BYTES") {
        cfg.export_part_bytes =
            v.trim().parse().with_context(|| format!("SPOOL_EXPORT_PART_BYTES={v:?} is not a number of bytes"))?;
    }
    cfg.processors.media_base_url = match &settings.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("{}://{local_addr}", if settings.tls.is_some() { "https" } else { "http" }),
    };
    let clock: Arc<dyn spool_runtime::Clock> = match &settings.clock {
        Some(c) => c.clone(),
        None => engine_clock()?,
    };
    let runtime = Runtime::open(cfg, clock, Arc::new(SystemIds))
        .await
        .with_context(|| format!("opening the data directory {}", settings.data_dir.display()))?;
    let app = spool_api::router(
        runtime.clone(),
        spool_api::ApiConfig {
            env_admin_key_hash: env_key.map(spool_core::hash_secret),
            storage: storage.clone(),
            browse_max_entries: settings.browse_max_entries.max(1),
            upload_max_bytes: settings.upload_max_bytes,
            upload_idle_timeout: settings.upload_idle_timeout,
            upload_deadline: settings.upload_deadline,
            public_url: settings.public_url.clone(),
            limiter: settings.rate_limiter.clone(),
            default_prompt: settings.default_prompt.clone(),
            reload_limits: {
                let path = settings.config_path.clone();
                Some(Arc::new(move || reload_rate_limits(path.clone())))
            },
        },
    );
    Ok((runtime, app))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let env_key = std::env::var("SPOOL_API_KEY").ok().filter(|k| !k.trim().is_empty());
    // A bad certificate stops the start before anything is opened or printed.
    let tls = match &settings.tls {
        Some((cert, key)) => Some(crate::tls::config(cert, key)?),
        None => None,
    };
    if let Some(url) = &settings.media_url {
        check_shared_files(url, &settings.data_dir).await?;
    }
    if let Some(url) = settings.log_url.clone() {
        return serve_node(settings, url, env_key, tls).await;
    }
    // redb in the data directory: one process, no partition to lose (`serve_node` is the
    // PostgreSQL path).
    let Started { runtime, listener, app } = start(&settings, env_key.as_deref()).await?;
    announce(&settings);
    bootstrap_first_key(runtime.clone(), env_key);
    crate::http::serve(listener, app, tls, settings.http, shutdown_signal()).await?;
    tracing::info!("draining");
    runtime.shutdown().await;
    tracing::info!("stopped; everything acknowledged is durable");
    Ok(())
}

fn announce(settings: &Settings) {
    tracing::info!(
        listen = %settings.listen,
        data_dir = %settings.data_dir.display(),
        webhook_allow_hosts = ?settings.webhook_allow_hosts,
        local_roots = ?settings.local_roots,
        "spool serving"
    );
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    eprintln!("spool: listening on {scheme}://{} (data in {})", settings.listen, settings.data_dir.display());
}

/// The first admin key, printed once, when the log has none and `SPOOL_API_KEY` is not set.
fn bootstrap_first_key(runtime: Arc<Runtime>, env_key: Option<String>) {
    tokio::spawn(async move {
        runtime.wait_ready().await;
        if env_key.is_none()
            && runtime.read(|st| st.api_keys_created == 0)
            && let Err(e) = crate::keys::create_first_admin_key(&runtime).await
        {
            tracing::error!(error = %e, "could not create the first admin key");
        }
    });
}

/// Exit with code 3 when this node loses its partition of a PostgreSQL log (another node took
/// it over, or its lease could not be renewed in time): it appends nothing more, and a
/// supervisor restarts it, as a node that forwards until the partition is free again.
fn exit_when_lost(runtime: &Runtime) {
    if let Some(mut lost) = runtime.partition_lost() {
        tokio::spawn(async move {
            if lost.wait_for(|l| *l).await.is_ok() {
                tracing::error!("this node lost partition 0 of the log; exiting with code 3");
                eprintln!("spool: this node lost partition 0 of the log to another node; exiting (code 3)");
                std::process::exit(3);
            }
        });
    }
}

/// `spool serve --log postgres://…`: a node of a cluster. It answers at once, forwarding every
/// request to the partition's holder, and serves them itself from the moment it holds the
/// partition (`node.rs`, `engine-spec/cluster.md`).
/// Reading connections of a node on a PostgreSQL log (its partitions share them).
const PG_NODE_READERS: usize = 4;

async fn serve_node(
    settings: Settings,
    url: String,
    env_key: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let mut bound = listener.local_addr().with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local_addr = bound.to_string();
    if bound.ip().is_unspecified() {
        bound.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    if settings.advertise_url.is_none() && listener.local_addr().is_ok_and(|a| a.ip().is_unspecified()) {
        tracing::warn!(
            "listening on every address without SPOOL_ADVERTISE_URL: this node advertises {bound}, which nodes on other machines cannot reach"
        );
    }
    let advertise = settings.advertise_url.clone().unwrap_or_else(|| format!("{scheme}://{bound}"));
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating the data directory {}", settings.data_dir.display()))?;
    let node_id = match &settings.node_id {
        Some(id) => id.clone(),
        None => spool_runtime::node_id_of(&settings.data_dir, &SystemIds)?,
    };
    let dir = Arc::new(
        spool_log::Directory::open(&url)
            .await
            .with_context(|| format!("opening the cluster's database {}", spool_log::redact_url(&url)))?,
    );
    dir.register(&node_id, &advertise).await.context("registering this node in the cluster's database")?;
    let dir_beat = dir.clone();
    let partitions = dir.partitions(settings.partitions).await.context("reading the cluster's partitions")?;
    if partitions > 0 && settings.media_url.is_none() {
        tracing::warn!(
            partitions,
            "no SPOOL_MEDIA_URL: this node keeps media, uploads and export artifacts in its data directory, and a partition that moves to another node (when nodes join, leave or die) cannot serve the files imported before; set SPOOL_MEDIA_URL when the cluster has more than one node"
        );
    }
    if let Some(asked) = settings.partitions
        && asked != partitions
    {
        tracing::warn!(
            asked,
            partitions,
            "SPOOL_PARTITIONS is fixed when the cluster is created; the cluster has {partitions}"
        );
    }
    // The cluster's master key signs the requests the nodes make of each other.
    let (master, _) = spool_runtime::MasterKey::load(&settings.data_dir).context("loading the master key")?;
    let node = crate::node::Node::new(node_id.clone(), dir.clone(), partitions, master)?;
    let limits = settings.http;
    let mut settings = settings;
    settings.node_id = Some(node_id.clone());
    // One pool of reading connections for every partition this node holds.
    settings.pg_readers = Some(spool_log::PgReaders::start(&url, PG_NODE_READERS)?);
    let settings = Arc::new(settings);
    // Set on SIGTERM: the node stops taking partitions before it drains.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opening = if partitions == 0 {
        let (node, env_key, settings) = (node.clone(), env_key.clone(), settings.clone());
        let local_addr = local_addr.clone();
        tokio::spawn(async move {
            // Waits while another node holds the partition (this node forwards meanwhile).
            match open(&settings, &local_addr, env_key.as_deref(), Part::ONE).await {
                Ok((runtime, app)) => {
                    exit_when_lost(&runtime);
                    node.install(0, crate::node::Held { app, runtime: runtime.clone() });
                    bootstrap_first_key(runtime, env_key);
                }
                Err(e) => {
                    // Never a half-working node (a wrong master key, a newer log): it stops.
                    tracing::error!(error = %format!("{e:#}"), "this node cannot open the log; exiting");
                    eprintln!("spool: {e:#}");
                    std::process::exit(1);
                }
            }
        })
    } else {
        tokio::spawn(manage_partitions(node.clone(), dir, settings.clone(), local_addr.clone(), env_key, stop_rx))
    };
    tracing::info!(node_id, advertise = %advertise, listen = %local_addr, partitions, "spool serving as a node of a cluster");
    eprintln!("spool: listening on {scheme}://{local_addr} as node {node_id} (reached at {advertise})");
    let heartbeat = {
        // A heartbeat, so that the nodes share the partitions among the live ones and
        // `spool cluster status` shows which nodes are alive.
        let (dir, node_id, advertise) = (dir_beat.clone(), node_id.clone(), advertise.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if let Err(e) = dir.register(&node_id, &advertise).await {
                    tracing::warn!(error = %e, "the node's heartbeat failed; retrying");
                }
            }
        })
    };
    // SIGTERM: first the node says it is leaving (it no longer counts among the live nodes) and
    // stops taking partitions; then connections drain; then its partitions are handed back.
    let leaving = {
        let (dir, node_id) = (dir_beat.clone(), node_id.clone());
        async move {
            shutdown_signal().await;
            heartbeat.abort();
            let _ = stop_tx.send(true);
            if let Err(e) = dir.leave(&node_id).await {
                tracing::warn!(error = %e, "could not say this node is leaving; the others see it when its heartbeat stops");
            }
        }
    };
    let served = crate::http::serve(listener, crate::node::router(node.clone()), tls, limits, leaving).await;
    if partitions == 0 {
        opening.abort();
    } else {
        // It ends at its next look (it never stops between taking a lease and installing it).
        let _ = opening.await;
    }
    let held = node.held();
    if !held.is_empty() {
        tracing::info!("draining");
    }
    for (p, h) in held {
        node.remove(p);
        h.runtime.shutdown().await;
    }
    tracing::info!("stopped; everything acknowledged is durable, the partitions are handed back");
    served
}

/// How often a node of a partitioned cluster looks at the partitions' leases.
const PARTITION_POLL: std::time::Duration = std::time::Duration::from_millis(500);
/// A node whose heartbeat (every second) is older than this no longer shares the partitions.
const NODE_LIVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// A node of a partitioned cluster takes and hands back partitions so that the live nodes share
/// them evenly (`cluster.md`, "Sharing the partitions"). Every half second it drops the
/// partitions it lost; takes the partitions nobody holds (free, or their holder's lease
/// expired) up to its share (the partitions over the live nodes, rounded up), and whatever its
/// share those that were already unheld at the last look (so a partition is never left
/// unserved); and, when it took none, hands one back if it holds more than its share and
/// another live node holds fewer (who takes it).
async fn manage_partitions(
    node: Arc<crate::node::Node>,
    dir: Arc<spool_log::Directory>,
    settings: Arc<Settings>,
    local_addr: String,
    env_key: Option<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let total = usize::from(node.partitions) + 1;
    let mut bootstrapped = false;
    // The catalog's log as the index partitions read it (one reader for all of them).
    let mut catalog: Option<spool_runtime::CatalogLog> = None;
    // Partitions seen without a live holder at the last look: anyone takes those now.
    let mut unserved: Vec<i32> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PARTITION_POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for (p, h) in node.held() {
            if h.runtime.partition_lost().is_some_and(|l| *l.borrow()) {
                tracing::error!(partition = p, "this node lost a partition to another node; it stops serving it");
                node.remove(p);
                let runtime = h.runtime.clone();
                tokio::spawn(async move { runtime.shutdown().await });
            }
        }
        let (holders, live) = match (dir.holders().await, dir.live_nodes(NODE_LIVE_WITHIN).await) {
            (Ok(h), Ok(l)) => (h, l),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot read the partitions' leases; trying again");
                continue;
            }
        };
        let share = total.div_ceil(live.len().max(1));
        let held: Vec<i32> = node.held().into_iter().map(|(p, _)| p).collect();
        let free: Vec<i32> = holders
            .iter()
            .filter(|(p, h)| !held.contains(p) && h.as_ref().is_none_or(|h| h.lease_expires_in_ms <= 0))
            .map(|(p, _)| *p)
            .collect();
        let urgent: Vec<i32> = free.iter().copied().filter(|p| unserved.contains(p)).collect();
        unserved = free.clone();
        // Live nodes holding fewer than their share (they take what is handed back).
        let mut counts: std::collections::BTreeMap<&str, usize> = live.iter().map(|n| (n.as_str(), 0)).collect();
        for h in holders.iter().filter_map(|(_, h)| h.as_ref()).filter(|h| h.lease_expires_in_ms > 0) {
            if let Some(c) = counts.get_mut(h.node_id.as_str()) {
                *c += 1;
            }
        }
        let someone_short = counts.iter().any(|(n, c)| *n != node.node_id && *c < share);
        // Every partition left unheld since the last look, and free ones up to this node's share.
        let mut take: Vec<i32> = urgent.clone();
        for p in &free {
            if held.len() + take.len() >= share.max(urgent.len()) {
                break;
            }
            if !take.contains(p) {
                take.push(*p);
            }
        }
        let took_any = !take.is_empty();
        for p in take {
            if *stop.borrow() {
                return;
            }
            if p > 0 && catalog.is_none() {
                let url = settings.log_url.clone().unwrap_or_default();
                let pool = settings.pg_readers.clone();
                match tokio::task::spawn_blocking(move || spool_log::PgLog::open_reader_on(&url, 0, pool)).await {
                    Ok(Ok(reader)) => catalog = Some(spool_runtime::CatalogLog(Arc::new(reader))),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot read the catalog; trying again");
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            let part = Part {
                partition: p,
                tag: u16::try_from(p).ok(),
                wait: false,
                catalog: if p > 0 { catalog.clone() } else { None },
                index_partitions: if p == 0 { node.partitions } else { 0 },
            };
            match open(&settings, &local_addr, env_key.as_deref(), part).await {
                Ok((runtime, app)) => {
                    tracing::info!(partition = p, "this node took a partition");
                    node.install(p, crate::node::Held { app, runtime: runtime.clone() });
                    if p == 0 && !bootstrapped {
                        bootstrapped = true;
                        bootstrap_first_key(runtime, env_key.clone());
                    }
                }
                Err(e)
                    if e.chain().any(|c| {
                        matches!(c.downcast_ref::<spool_log::Error>(), Some(spool_log::Error::HeldElsewhere(_)))
                            || matches!(
                                c.downcast_ref::<spool_runtime::RuntimeError>(),
                                Some(spool_runtime::RuntimeError::Log(spool_log::Error::HeldElsewhere(_)))
                            )
                    }) => {}
                Err(e) => {
                    if e.chain().any(|c| c.to_string().contains("master key does not open")) {
                        tracing::error!(error = %format!("{e:#}"), "this node cannot open the log; exiting");
                        eprintln!("spool: {e:#}");
                        std::process::exit(1);
                    }
                    tracing::warn!(partition = p, error = %format!("{e:#}"), "could not take a partition; trying again");
                }
            }
        }
        if !took_any
            && held.len() > share
            && someone_short
            && let Some(&p) = held.last()
            && let Some(h) = node.remove(p)
        {
            tracing::info!(partition = p, share, "handing a partition over (this node holds more than its share)");
            h.runtime.shutdown().await;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// The wall clock; in debug builds, `SPOOL_TEST_CLOCK_MS=<epoch ms>` gives a controllable clock
/// starting there instead, moved by `POST /api/v2/admin/test-clock/advance` (tests drive
/// timers with it, never by sleeping). Release builds ignore the variable.
fn engine_clock() -> anyhow::Result<Arc<dyn spool_runtime::Clock>> {
    if cfg!(debug_assertions)
        && let Ok(v) = std::env::var("SPOOL_TEST_CLOCK_MS")
    {
        let start: u64 = v.trim().parse().with_context(|| format!("SPOOL_TEST_CLOCK_MS={v:?} is not a number"))?;
        tracing::warn!(start_ms = start, "SPOOL_TEST_CLOCK_MS: the engine runs on a test clock");
        return Ok(Arc::new(spool_runtime::TestClock::new(start)));
    }
    Ok(Arc::new(SystemClock))
}

#[cfg(test)]
mod tests {
    use super::processors;

    fn table(toml_text: &str) -> std::collections::BTreeMap<String, toml::Value> {
        let v: toml::Value = toml::from_str(toml_text).unwrap();
        v.get("processors").and_then(toml::Value::as_table).unwrap().clone().into_iter().collect()
    }

    #[test]
    fn an_embed_processor_is_the_embedder_and_no_run_can_name_it() {
        let p = processors(&table(
            "[processors.vectors]\nkind = \"embed\"\nurl = \"http://127.0.0.1:9/embed\"\nsecret = \"0123456789abcdef\"\ntimeout = \"5s\"\n",
        ))
        .unwrap();
        let e = p.embedder.as_ref().unwrap();
        assert_eq!((e.name.as_str(), e.timeout), ("vectors", std::time::Duration::from_secs(5)));
        assert!(!format!("{e:?}").contains("0123456789abcdef"));
        assert!(!e.identity().contains("127.0.0.1"));
        assert!(p.resolve(Some("vectors")).is_err());
    }

    #[test]
    fn two_embed_processors_or_one_without_a_url_stop_the_server() {
        let one = "kind = \"embed\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"\n";
        let two = format!("[processors.a]\n{one}\n[processors.b]\n{one}");
        assert!(processors(&table(&two)).unwrap_err().to_string().contains("both kind \"embed\""));
        let no_url = "[processors.a]\nkind = \"embed\"\nsecret = \"0123456789abcdef\"\n";
        assert!(processors(&table(no_url)).unwrap_err().to_string().contains("needs a url"));
        let bad = "[processors.a]\nkind = \"vector\"\n";
        assert!(processors(&table(bad)).unwrap_err().to_string().contains("\"embed\""));
    }
}
