//! `spool bench prompt-run`: a prompt run over 1,000 imported videos (two 1-second segments
//! each) through a real `spool serve` child (this executable), once with the built-in `probe`
//! processor and once with a local no-op `http` worker; against the same calls with no engine
//! (a plain client loop: the same request size and concurrency, keep-alive, each request signed
//! as Spool signs it) measured in the same run. Readable lines, then one JSON line. Not a test: nothing asserts on time.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) const KEY: &str = "sk_bench_prompt_run_0123456789abcdef";
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub struct Args {
    /// Videos of the http comparison (two 1-second WAV segments each).
    pub videos: usize,
    /// Images of the scale runs (one segment each), one fresh server per size.
    pub sizes: Vec<usize>,
    pub dir: Option<PathBuf>,
}

/// Sizes of the scale runs when none are given.
pub const DEFAULT_SIZES: [usize; 3] = [1000, 10_000, 100_000];
/// A valid 24×24 PNG of 1,024 bytes: one segment each.
const TINY_PNG: &[u8] = include_bytes!("../../../fixtures/media/tiny.png");
/// The concurrencies the http processor is measured at (each against the worker's ceiling at
/// the same concurrency).
const HTTP_CONCURRENCIES: [usize; 2] = [16, 64];

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The no-op worker: answers every request with an empty object; counts requests.
pub(crate) async fn worker(pad: usize) -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                let _ = body.len();
                let metadata = if pad > 0 { json!({ "pad": "x".repeat(pad) }) } else { json!({}) };
                axum::Json(json!({ "metadata": metadata, "metadata_text": "", "usage": { "input_tokens": 1, "output_tokens": 1 } }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, count))
}

pub(crate) fn spawn(work: &Path, data: &Path, config: &Path, media: &Path) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(work.join("serve.log"))?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .env("SPOOL_API_KEY", KEY)
        .env("SPOOL_LOCAL_ROOTS", media)
        .env("RUST_LOG", "warn")
        .env_remove("SPOOL_MASTER_KEY")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting spool serve")?;
    Ok(Server { child, base: format!("http://{addr}") })
}

pub(crate) async fn call(
    c: &reqwest::Client,
    s: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{}/api/v2{path}", s.base);
    let req = match method {
        "POST" => c.post(&url).header("content-type", "application/json").body(body.unwrap_or(json!({})).to_string()),
        "PUT" => c.put(&url).header("content-type", "application/json").body(body.unwrap_or(json!({})).to_string()),
        _ => c.get(&url),
    };
    let resp = req.bearer_auth(KEY).send().await?;
    let status = resp.status();
    let v: Value = serde_json::from_slice(&resp.bytes().await?).unwrap_or(Value::Null);
    ensure!(status.is_success(), "{method} {path}: {status} {v}");
    Ok(v)
}

pub(crate) async fn run_once(
    c: &reqwest::Client,
    s: &Server,
    prompt: &str,
    index: &str,
    model: &str,
) -> anyhow::Result<(u64, f64)> {
    let body = json!({
        "prompt_id": prompt, "target": {"type": "index", "index_id": index},
        "video_segmentation_type": "fixed", "audio_segmentation_type": "fixed",
        "video_segment_duration": 1, "audio_segment_duration": 1, "processing_model": model,
    });
    let t = Instant::now();
    let run = call(c, s, "POST", "/prompt-runs/execute", Some(body)).await?;
    let id = run["run_id"].as_str().context("no run id")?.to_string();
    // (seconds since the run was asked for, segments completed) at each poll: where the time went.
    let mut timeline: Vec<(f64, u64)> = Vec::new();
    loop {
        let r = call(c, s, "GET", &format!("/prompt-runs/{id}"), None).await?;
        timeline.push((t.elapsed().as_secs_f64(), r["completed_segments"].as_u64().unwrap_or(0)));
        match r["status"].as_str() {
            Some("completed") => {
                let n = r["completed_segments"].as_u64().unwrap_or(0);
                let took = t.elapsed().as_secs_f64();
                // Where the time went: the processor calls' own durations, as recorded.
                let calls = call(c, s, "GET", &format!("/prompt-runs/{id}/llm-calls"), None).await?;
                let d: Vec<f64> =
                    calls.as_array().into_iter().flatten().filter_map(|c| c["duration_ms"].as_f64()).collect();
                let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
                let first = calls
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|c| c["invoked_at"].as_str())
                    .unwrap_or("")
                    .to_string();
                let last = calls
                    .as_array()
                    .and_then(|a| a.last())
                    .and_then(|c| c["invoked_at"].as_str())
                    .unwrap_or("")
                    .to_string();
                eprintln!(
                    "  {model}: {took:.2} s, mean call {mean:.2} ms, first answer {first}, last {last}, run created {}",
                    r["created_at"]
                );
                let at = |share: f64| {
                    timeline.iter().find(|(_, done)| *done as f64 >= share * n as f64).map_or(took, |(s, _)| *s)
                };
                eprintln!(
                    "  {model}: first segment done at {:.2} s, a quarter {:.2} s, half {:.2} s, three quarters {:.2} s, all {:.2} s, completed read at {took:.2} s",
                    at(1.0 / n.max(1) as f64),
                    at(0.25),
                    at(0.5),
                    at(0.75),
                    at(1.0)
                );
                return Ok((n, n as f64 / took));
            }
            Some("processing" | "pending") => tokio::time::sleep(Duration::from_millis(20)).await,
            other => bail!("the run ended {other:?}: {r}"),
        }
    }
}

/// The same calls with no engine: `total` POSTs of `body`, `concurrency` at a time,
/// keep-alive, each signed as Spool signs a processor request (Standard Webhooks headers, a
/// fresh id, this second) and its answer read whole; (calls/s, failed calls).
async fn ceiling(url: &str, body: Vec<u8>, total: u64, concurrency: usize) -> anyhow::Result<(f64, u64)> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, failed, url, body) =
            (client.clone(), next.clone(), failed.clone(), url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let id = format!("run_bench:segment:{n}");
                let ts = spool_runtime::Clock::now_ms(&spool_runtime::SystemClock) / 1000;
                let sig = spool_runtime::sign_request(SECRET, &id, ts, &body);
                let ok = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok((total as f64 / t.elapsed().as_secs_f64(), failed.load(Ordering::Relaxed)))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let work = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("spool-bench-prompt-run-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    let sizes = if args.sizes.is_empty() { DEFAULT_SIZES.to_vec() } else { args.sizes };
    let r = rt.block_on(bench(&work, args.videos.max(1), &sizes));
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("spool bench prompt-run: scratch and server log left in {}", work.display());
    }
    r
}

pub(crate) async fn healthy(c: &reqwest::Client, s: &Server) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while c.get(format!("{}/healthz", s.base)).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        ensure!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// An index with everything in `media` imported; returns (index, prompt).
pub(crate) async fn prepare(
    c: &reqwest::Client,
    s: &Server,
    media: &Path,
    pattern: &str,
) -> anyhow::Result<(String, String)> {
    healthy(c, s).await?;
    let idx = call(c, s, "POST", "/indexes", Some(json!({"name": "bench"}))).await?;
    let index = idx["index_id"].as_str().context("no index")?.to_string();
    let conn = call(c, s, "POST", "/connectors/local", Some(json!({"name": "m", "root": media}))).await?;
    let job = call(
        c,
        s,
        "POST",
        "/import-jobs",
        Some(json!({"connector_id": conn["connector_id"], "index_id": index, "file_pattern": pattern})),
    )
    .await?;
    let job_id = job["job_id"].as_str().context("no job")?.to_string();
    loop {
        let j = call(c, s, "GET", &format!("/import-jobs/{job_id}"), None).await?;
        if j["status"] == "completed" {
            break;
        }
        ensure!(j["status"] != "failed", "the import failed: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prompt = call(
        c,
        s,
        "POST",
        "/prompts",
        Some(json!({"name": "bench", "prompt_text": "Describe every segment.", "json_schema": {"type": "object"}})),
    )
    .await?;
    Ok((index, prompt["prompt_id"].as_str().context("no prompt")?.to_string()))
}

async fn bench(work: &Path, videos: usize, sizes: &[usize]) -> anyhow::Result<()> {
    let c = reqwest::Client::new();
    let no_config = work.join("none.toml");
    std::fs::write(&no_config, "")?;
    // Scale: the probe processor over 1k / 10k / 100k one-segment images, a fresh server each.
    let mut scale = Vec::new();
    for &n in sizes {
        let media = work.join(format!("images-{n}"));
        for i in 0..n {
            let d = media.join(format!("d{:03}", i / 1000));
            if i % 1000 == 0 {
                std::fs::create_dir_all(&d)?;
            }
            std::fs::write(d.join(format!("i{i:06}.png")), TINY_PNG)?;
        }
        let server = spawn(work, &work.join(format!("data-{n}")), &no_config, &media)?;
        let (index, prompt) = prepare(&c, &server, &media, "*.png").await?;
        let (segments, sps) = run_once(&c, &server, &prompt, &index, "probe").await?;
        // Resident once the run has ended: its answers are rows (`run_answers`), its structure
        // is in memory (`engine-spec/tables.md`).
        let pid = server.pid();
        let rss = tokio::task::spawn_blocking(move || crate::bench_engine::settled_rss_mib(pid)).await?;
        let rss_text = rss.map_or("n/a".to_string(), |r| format!("{r:.1} MiB"));
        println!("probe, {n:>7} images: {segments} segments, {sps:.0} segments/s; resident after the run {rss_text}");
        scale.push((n, sps, rss));
        drop(server);
        let _ = std::fs::remove_dir_all(&media);
        let _ = std::fs::remove_dir_all(work.join(format!("data-{n}")));
    }
    let ratio_scale = match (scale.first(), scale.last()) {
        (Some(a), Some(b)) if a.1 > 0.0 => b.1 / a.1,
        _ => 0.0,
    };
    // Memory per finished segment (a one-segment image: its video's row, its place and task
    // state in the run, its `video_runs` entry), from the smallest run to the largest.
    let bytes_per_segment = match (scale.first(), scale.last()) {
        (Some((n0, _, Some(r0))), Some((n1, _, Some(r1)))) if n1 > n0 => {
            Some((r1 - r0) * 1024.0 * 1024.0 / (n1 - n0) as f64)
        }
        _ => None,
    };
    if let Some(b) = bytes_per_segment {
        println!("resident growth:      {b:.0} bytes per finished one-segment image");
    }
    println!("largest / smallest:   {ratio_scale:.2} (O(1) per outcome keeps this near 1)");

    // The http processor against its worker's ceiling.
    let media = work.join("media");
    std::fs::create_dir_all(&media)?;
    for i in 0..videos {
        let samples: Vec<u8> = (0..16_000).map(|j| ((i * 31 + j) % 251) as u8).collect();
        std::fs::write(media.join(format!("c{i:05}.wav")), spool_media::pcm_wav(&samples))?;
    }
    let (url, served) = worker(0).await?;
    let config = work.join("spool.toml");
    let mut text = "[processors]\ndefault = \"probe\"\n".to_string();
    for n in HTTP_CONCURRENCIES {
        text.push_str(&format!(
            "\n[processors.noop{n}]\nkind = \"http\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout = \"10s\"\nconcurrency = {n}\n"
        ));
    }
    std::fs::write(&config, text)?;
    let server = spawn(work, &work.join("data"), &config, &media)?;
    let (index, prompt) = prepare(&c, &server, &media, "*.wav").await?;
    let (segments, probe_sps) = run_once(&c, &server, &prompt, &index, "probe").await?;
    println!("probe, {videos} WAVs:     {segments} segments, {probe_sps:.0} segments/s");
    // A request of the size Spool sends (a segment request with its facts and media URL).
    let mut body = vec![b' '; 1500];
    body[..2].copy_from_slice(b"{}");
    let mut http = Vec::new();
    for n in HTTP_CONCURRENCIES {
        let before = served.load(Ordering::Relaxed);
        let (done, sps) = run_once(&c, &server, &prompt, &index, &format!("noop{n}")).await?;
        let calls = served.load(Ordering::Relaxed) - before;
        let (ceiling_rps, failed) = ceiling(&url, body.clone(), done.max(1000) * 2, n).await?;
        ensure!(failed == 0, "the load generator saw {failed} failed requests: the baseline is not at its real speed");
        println!(
            "http, {n:>2} in flight:    {done} segments, {sps:.0} segments/s ({calls} worker calls); the same signed calls with no engine {ceiling_rps:.0}/s; ratio {:.2}",
            sps / ceiling_rps
        );
        http.push(json!({
            "concurrency": n,
            "segments_per_s": sps.round(),
            "bare_signed_calls_per_s": ceiling_rps.round(),
            "ratio": ((sps / ceiling_rps) * 100.0).round() / 100.0,
            "worker_calls": calls,
        }));
    }
    let mut line = json!({
        "bench": "prompt-run",
        "probe_wav_segments_per_s": probe_sps.round(),
        "http": http,
        "scale_largest_vs_smallest": (ratio_scale * 100.0).round() / 100.0,
    });
    for (n, sps, rss) in &scale {
        line[format!("probe_segments_per_s_{n}")] = json!(sps.round());
        line[format!("rss_mib_{n}")] = json!(rss.map(|r| (r * 10.0).round() / 10.0));
    }
    line["rss_bytes_per_segment"] = json!(bytes_per_segment.map(f64::round));
    println!("{line}");
    Ok(())
}
