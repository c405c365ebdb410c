//! `spool demo`: a real workflow on embedded defaults. A fresh data directory (temporary unless
//! `--data-dir`), the media fixtures embedded in this binary written to a local folder, a local
//! connector, an index and an import job driven through the HTTP API, with a progress bar on a
//! terminal (plain lines elsewhere), then a summary of what was imported (duration, codecs),
//! what failed and what was skipped (with reasons), and the commands to look further. It exits
//! 0 and leaves nothing running; `--serve` keeps the server up, printing its URL and key.

use crate::serve::{Settings, Started, start};
use anyhow::Context;
use serde_json::Value;
use spool_runtime::Clock as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The media the demo imports: the files of `fixtures/media`, embedded.
const MEDIA: &[(&str, &[u8])] = &[
    ("h264_aac.mp4", include_bytes!("../../../fixtures/media/h264_aac.mp4")),
    ("h264_faststart.mov", include_bytes!("../../../fixtures/media/h264_faststart.mov")),
    ("vp9_opus.webm", include_bytes!("../../../fixtures/media/vp9_opus.webm")),
    ("vp8_live.webm", include_bytes!("../../../fixtures/media/vp8_live.webm")),
    ("mpeg4_flac.mkv", include_bytes!("../../../fixtures/media/mpeg4_flac.mkv")),
    ("vorbis.ogg", include_bytes!("../../../fixtures/media/vorbis.ogg")),
    ("tone.mp3", include_bytes!("../../../fixtures/media/tone.mp3")),
    ("tone.wav", include_bytes!("../../../fixtures/media/tone.wav")),
    ("tone.flac", include_bytes!("../../../fixtures/media/tone.flac")),
    ("still.jpg", include_bytes!("../../../fixtures/media/still.jpg")),
    ("still.png", include_bytes!("../../../fixtures/media/still.png")),
    ("tiny.png", include_bytes!("../../../fixtures/media/tiny.png")),
    ("corrupt.mp4", include_bytes!("../../../fixtures/media/corrupt.mp4")),
    ("empty.mp4", include_bytes!("../../../fixtures/media/empty.mp4")),
    ("README.md", include_bytes!("../../../fixtures/media/README.md")),
];

/// How long the demo waits for its import.
const DEMO_IMPORT_WAIT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Data directory (default: a fresh temporary one, kept afterwards for `spool log show`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the server running afterwards (until Ctrl-C), printing its URL and key.
    #[arg(long)]
    pub serve: bool,
    /// Address to listen on (default: a free loopback port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let base_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("spool-demo-{}", ulid::Ulid::new().to_string().to_lowercase())),
    };
    let data_dir = base_dir.join("data");
    if data_dir.join("spool.redb").exists() || data_dir.join("log.redb").exists() {
        anyhow::bail!("{} already holds a Spool data directory; the demo needs a fresh one", data_dir.display());
    }
    let media_dir = base_dir.join("demo-media");
    std::fs::create_dir_all(&media_dir).with_context(|| format!("creating {}", media_dir.display()))?;
    for (name, bytes) in MEDIA {
        std::fs::write(media_dir.join(name), bytes).with_context(|| format!("writing {name}"))?;
    }
    let key = format!("sk_demo_{}", ulid::Ulid::new().to_string().to_lowercase());
    let clock = std::sync::Arc::new(spool_runtime::TestClock::new(spool_runtime::SystemClock.now_ms()));
    let settings = Settings {
        data_dir: data_dir.clone(),
        log_url: None,
        media_url: None,
        node_id: None,
        advertise_url: None,
        partitions: None,
        lease_ttl: spool_log::LEASE_TTL_DEFAULT,
        listen: args.listen.clone(),
        webhook_allow_hosts: Vec::new(),
        webhooks: spool_runtime::WebhookSettings::default(),
        local_roots: vec![media_dir.clone()],
        browse_max_entries: spool_api::BROWSE_MAX_ENTRIES_DEFAULT,
        import_concurrency: spool_runtime::IMPORT_CONCURRENCY_DEFAULT,
        upload_max_bytes: spool_api::UPLOAD_BYTES_MAX_DEFAULT,
        upload_idle_timeout: spool_api::UPLOAD_IDLE_TIMEOUT_DEFAULT,
        upload_deadline: spool_api::UPLOAD_DEADLINE_DEFAULT,
        rate_limiter: std::sync::Arc::new(spool_api::rate_limit::Limiter::new(Default::default())),
        config_path: None,
        default_prompt: None,
        http: crate::http::Limits::default(),
        public_url: None,
        tls: None,
        processors: spool_runtime::ProcessorSettings::default(),
        export_download_max_bytes: spool_runtime::EXPORT_DOWNLOAD_MAX_BYTES_DEFAULT,
        automation_watch_interval: std::time::Duration::from_millis(
            spool_core::machines::automation::WATCH_INTERVAL_DEFAULT_MS,
        ),
        // The demo's engine runs on a clock it moves, so an automation's debounce is shown
        // firing without waiting five minutes.
        clock: Some(clock.clone()),
        pg_readers: None,
    };
    let Started { runtime, listener, app } = start(&settings, Some(&key)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    runtime.wait_ready().await;
    let base = format!("http://{addr}/api/v2");
    println!("Spool demo: data in {}, media in {}", data_dir.display(), media_dir.display());
    let outcome = drive(&base, &key, &media_dir, &clock).await;
    let keep_serving = args.serve && outcome.is_ok();
    if let Ok(job_id) = &outcome {
        println!();
        println!("Look further (once the server is stopped):");
        println!("  spool log show --data-dir {}", data_dir.display());
        println!("  spool replay --data-dir {} {job_id}", data_dir.display());
        println!("  spool verify --data-dir {}", data_dir.display());
    }
    if keep_serving {
        println!();
        println!("Serving at http://{addr} (API base {base}), key {key}; Ctrl-C stops.");
        println!("  VIDEO_VECTOR_BASE_URL={base} VIDEO_VECTOR_API_KEY={key} python -c 'import videovector'");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    let _ = server.await;
    runtime.shutdown().await;
    outcome.map(|_| ())
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base)).header("X-API-Key", &self.key);
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.bytes().await.with_context(|| format!("{method} {path}"))?;
        let v: Value =
            serde_json::from_slice(&text).with_context(|| format!("{method} {path}: the answer is not JSON"))?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status}: {v}");
        Ok(v)
    }
}

/// The workflow: index, connector, import job (watched to its end), summary. Returns the job id.
async fn drive(
    base: &str,
    key: &str,
    media_dir: &std::path::Path,
    clock: &spool_runtime::TestClock,
) -> anyhow::Result<String> {
    let api = Api { http: reqwest::Client::new(), base: base.to_string(), key: key.to_string() };
    let index = api.call(reqwest::Method::POST, "/indexes", Some(serde_json::json!({ "name": "demo" }))).await?;
    let index_id = index["index_id"].as_str().context("index_id")?.to_string();
    let root = media_dir.to_string_lossy().to_string();
    let conn = api
        .call(
            reqwest::Method::POST,
            "/connectors/local",
            Some(serde_json::json!({
                "name": "demo media",
                "root": root,
                "scopes": ["import", "export"],
                "export_base_path": "exports",
            })),
        )
        .await?;
    let connector_id = conn["connector_id"].as_str().context("connector_id")?.to_string();
    let job = api
        .call(
            reqwest::Method::POST,
            "/import-jobs",
            Some(serde_json::json!({ "connector_id": connector_id, "index_id": index_id })),
        )
        .await?;
    let job_id = job["job_id"].as_str().context("job_id")?.to_string();
    println!("index {index_id}, connector {connector_id}, import job {job_id}");
    let job = watch(&api, &job_id).await?;
    summary(&api, &job_id, &job).await?;
    let prompt_id = prompt_run(&api, &index_id).await?;
    export(&api, &index_id, &connector_id, media_dir).await?;
    automation(&api, &index_id, &connector_id, &prompt_id, media_dir, clock).await?;
    Ok(job_id)
}

/// Poll `path` until `done` holds.
async fn until(api: &Api, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = Instant::now() + DEMO_IMPORT_WAIT;
    loop {
        let v = api.call(reqwest::Method::GET, path, None).await?;
        if done(&v) {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what} did not happen in time: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Index automations on the demo's clock: two files dropped into `incoming/` are found by the
/// import automation's watch; five minutes later (the clock is moved, not waited for) its
/// debounce fires one import job of exactly those files, the preset's prompt run follows, and
/// the export automation writes the completed run under `exports/automated/`.
async fn automation(
    api: &Api,
    index_id: &str,
    connector_id: &str,
    prompt_id: &str,
    media_dir: &std::path::Path,
    clock: &spool_runtime::TestClock,
) -> anyhow::Result<()> {
    let incoming = media_dir.join("incoming");
    std::fs::create_dir_all(&incoming)?;
    for (name, bytes) in MEDIA.iter().filter(|(n, _)| *n == "h264_aac.mp4" || *n == "tone.wav") {
        std::fs::write(incoming.join(name), bytes)?;
    }
    let (export_path, path) =
        (format!("/indexes/{index_id}/automations/export"), format!("/indexes/{index_id}/automations/import"));
    let export_doc =
        serde_json::json!({ "destination_connector_id": connector_id, "destination_subpath": "automated" });
    api.call(reqwest::Method::PUT, &export_path, Some(export_doc)).await?;
    let import_doc = serde_json::json!({
        "connector_id": connector_id, "source_prefix": "incoming/", "file_pattern": "*",
        "debounce_interval": "5m",
        "prompt_preset": {
            "prompt_id": prompt_id, "processing_model": "probe",
            "video_segmentation_type": "fixed", "video_segment_duration": 1,
            "audio_segmentation_type": "fixed", "audio_segment_duration": 1,
        },
    });
    let saved = api.call(reqwest::Method::PUT, &path, Some(import_doc)).await?;
    let a = until(api, &path, "the first listing", |a| a["waiting_for"] == "debounce").await?;
    println!();
    println!(
        "Import automation {} watches incoming/: found {} new objects, import due at {} (debounce 5m)",
        saved["automation_id"].as_str().unwrap_or("?"),
        a["found_objects"],
        a["next_due_at"].as_str().unwrap_or("?"),
    );
    clock.advance(5 * 60 * 1000);
    println!("The demo's engine clock moves 5 minutes on (serve runs on the wall clock)");
    let a = until(api, &path, "the automation's import", |a| a["last_import_job_id"].is_string()).await?;
    let job_id = a["last_import_job_id"].as_str().unwrap_or_default().to_string();
    let job = until(api, &format!("/import-jobs/{job_id}"), "the automation's run", |j| {
        j["execution"]["status"] != "pending"
    })
    .await?;
    anyhow::ensure!(job["execution"]["status"] == "submitted", "no prompt run started: {}", job["execution"]);
    let run_id = job["execution"]["run_id"].as_str().unwrap_or_default().to_string();
    let run = until(api, &format!("/prompt-runs/{run_id}"), "the automation's prompt run", |r| {
        !matches!(r["status"].as_str(), Some("pending" | "processing"))
    })
    .await?;
    let exp = until(api, &export_path, "the automation's export", |e| e["last_export_id"].is_string()).await?;
    let export_id = exp["last_export_id"].as_str().unwrap_or_default().to_string();
    let e = until(api, &format!("/exports/{export_id}"), "the automation's export", |e| {
        matches!(e["status"].as_str(), Some("completed" | "failed"))
    })
    .await?;
    println!(
        "Automation import job {job_id}: {} of {} files imported; prompt run {run_id} {} ({} segments); export {export_id} {} to {}",
        job["progress"]["imported"],
        job["progress"]["total_files"],
        run["status"].as_str().unwrap_or("?"),
        run["completed_segments"],
        e["status"].as_str().unwrap_or("?"),
        media_dir.join("exports/automated").join(format!("{export_id}.json")).display(),
    );
    Ok(())
}

/// An export of the index (its run, its videos with their facts and results) written to the
/// demo's media folder through the same connector, under `exports/`.
async fn export(api: &Api, index_id: &str, connector_id: &str, media_dir: &std::path::Path) -> anyhow::Result<()> {
    let body = serde_json::json!({ "destination_connector_id": connector_id, "destination_subpath": "demo" });
    let created = api.call(reqwest::Method::POST, &format!("/exports/index/{index_id}"), Some(body)).await?;
    let export_id = created["export_id"].as_str().context("export_id")?.to_string();
    let deadline = Instant::now() + DEMO_IMPORT_WAIT;
    let e = loop {
        let e = api.call(reqwest::Method::GET, &format!("/exports/{export_id}"), None).await?;
        if matches!(e["status"].as_str(), Some("completed" | "failed")) {
            break e;
        }
        anyhow::ensure!(Instant::now() < deadline, "the export did not finish in time: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    anyhow::ensure!(e["status"] == "completed", "the export failed: {}", e["error_message"]);
    let path = media_dir.join("exports/demo").join(format!("{export_id}.json"));
    println!(
        "Export {export_id} completed: {} bytes (sha256 {}) written to {}",
        e["file_size_bytes"],
        e["sha256"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}

/// A prompt run over the imported media with the built-in `probe` processor: each segment's
/// real media facts, checked against a schema that describes them.
async fn prompt_run(api: &Api, index_id: &str) -> anyhow::Result<String> {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "media_type": { "enum": ["video", "audio", "image"] },
            "duration_seconds": { "type": "number", "minimum": 0 },
            "container": { "type": ["string", "null"] },
        },
        "required": ["media_type", "duration_seconds"],
    });
    let prompt = api
        .call(
            reqwest::Method::POST,
            "/prompts",
            Some(serde_json::json!({
                "name": "media facts",
                "prompt_text": "Report the media facts of each segment.",
                "json_schema": schema,
            })),
        )
        .await?;
    let body = serde_json::json!({
        "prompt_id": prompt["prompt_id"],
        "target": { "type": "index", "index_id": index_id },
        "video_segmentation_type": "fixed",
        "video_segment_duration": 1,
        "audio_segmentation_type": "fixed",
        "audio_segment_duration": 1,
        "processing_model": "probe",
    });
    let run = api.call(reqwest::Method::POST, "/prompt-runs/execute", Some(body)).await?;
    let run_id = run["run_id"].as_str().context("run_id")?.to_string();
    let deadline = Instant::now() + DEMO_IMPORT_WAIT;
    let run = loop {
        let r = api.call(reqwest::Method::GET, &format!("/prompt-runs/{run_id}"), None).await?;
        if !matches!(r["status"].as_str(), Some("pending" | "processing")) {
            break r;
        }
        anyhow::ensure!(Instant::now() < deadline, "the prompt run did not finish in time: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!();
    println!(
        "Prompt run {run_id} {}: {} of {} segments answered by the probe processor ({} videos, {} audios, {} images)",
        run["status"].as_str().unwrap_or("?"),
        run["completed_segments"],
        run["total_segments"],
        run["total_videos"],
        run["total_audios"],
        run["total_images"],
    );
    Ok(prompt["prompt_id"].as_str().unwrap_or_default().to_string())
}

/// Poll the job to its end: a progress bar on a terminal, a line per change elsewhere.
async fn watch(api: &Api, job_id: &str) -> anyhow::Result<Value> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} importing [{bar:30}] {pos}/{len} files {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    let deadline = Instant::now() + DEMO_IMPORT_WAIT;
    let mut last = String::new();
    loop {
        let job = api.call(reqwest::Method::GET, &format!("/import-jobs/{job_id}"), None).await?;
        let p = &job["progress"];
        let (total, done) = (
            p["total_files"].as_u64().unwrap_or(0),
            p["imported"].as_u64().unwrap_or(0)
                + p["failed"].as_u64().unwrap_or(0)
                + p["skipped"].as_u64().unwrap_or(0),
        );
        let status = job["status"].as_str().unwrap_or("?").to_string();
        let line = format!(
            "{status}: {done}/{total} files (imported {}, failed {}, skipped {})",
            p["imported"], p["failed"], p["skipped"]
        );
        match &bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(done);
                b.set_message(status.clone());
            }
            None if line != last => println!("  {line}"),
            None => {}
        }
        last = line;
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            if let Some(b) = &bar {
                b.finish_with_message(status);
            }
            return Ok(job);
        }
        anyhow::ensure!(Instant::now() < deadline, "the import did not finish within {DEMO_IMPORT_WAIT:?}: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn codecs(media: &Value) -> String {
    let streams = media["streams"].as_array().cloned().unwrap_or_default();
    streams
        .iter()
        .map(|s| {
            let mut d = format!("{} {}", s["kind"].as_str().unwrap_or("?"), s["codec"].as_str().unwrap_or("?"));
            if let (Some(w), Some(h)) = (s["width"].as_u64(), s["height"].as_u64()) {
                d.push_str(&format!(" {w}x{h}"));
            }
            if let Some(f) = s["frame_rate"].as_f64() {
                d.push_str(&format!(" {f:.2}fps"));
            }
            if let Some(r) = s["sample_rate"].as_u64() {
                d.push_str(&format!(" {r}Hz"));
            }
            if let Some(c) = s["channels"].as_u64() {
                d.push_str(&format!(" {c}ch"));
            }
            d
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn summary(api: &Api, job_id: &str, job: &Value) -> anyhow::Result<()> {
    let files = api.call(reqwest::Method::GET, &format!("/import-jobs/{job_id}/files?limit=1000"), None).await?;
    let mut items = files["items"].as_array().cloned().unwrap_or_default();
    items.sort_by(|a, b| a["file_name"].as_str().cmp(&b["file_name"].as_str()));
    let p = &job["progress"];
    println!();
    println!(
        "Import {}: {} imported, {} failed, {} skipped of {} files ({} bytes)",
        job["status"].as_str().unwrap_or("?"),
        p["imported"],
        p["failed"],
        p["skipped"],
        p["total_files"],
        p["bytes_transferred"]
    );
    println!();
    println!("{:<20} {:<9} {:<6} {:>9}  {:<9} details", "file", "status", "type", "seconds", "container");
    for f in &items {
        let name = f["file_name"].as_str().unwrap_or("?");
        let status = f["status"].as_str().unwrap_or("?");
        match status {
            "imported" => {
                let vid = f["video_id"].as_str().unwrap_or("");
                let v = api.call(reqwest::Method::GET, &format!("/videos/{vid}"), None).await?;
                let media = &v["media"];
                let secs = media["duration_seconds"].as_f64().map(|d| format!("{d:.3}")).unwrap_or_else(|| "-".into());
                let container = media["container"].as_str().unwrap_or("?");
                let kind = v["media_type"].as_str().unwrap_or("?");
                println!("{name:<20} {status:<9} {kind:<6} {secs:>9}  {container:<9} {}", codecs(media));
            }
            "failed" => {
                let why = format!(
                    "{}: {}",
                    f["failure"]["code"].as_str().unwrap_or("?"),
                    f["failure"]["message"].as_str().unwrap_or("")
                );
                println!("{name:<20} {status:<9} {:<6} {:>9}  {:<9} {why}", "-", "-", "-");
            }
            _ => {
                let why = f["skip_reason"].as_str().unwrap_or("");
                println!("{name:<20} {status:<9} {:<6} {:>9}  {:<9} {why}", "-", "-", "-");
            }
        }
    }
    Ok(())
}
