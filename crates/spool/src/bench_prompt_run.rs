//! `spool bench prompt-run`: a prompt run over 1,000 imported videos (two 1-second segments
//! each) through a real `spool serve` child (this executable), once with the built-in `probe`
//! processor and once with a local no-op `http` worker; against that worker's own ceiling
//! under a plain load generator (the same request size and concurrency, keep-alive) measured in
//! the same run. Readable lines, then one JSON line. Not a test: nothing asserts on time.

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The http processor's concurrency (and the load generator's).
const CONCURRENCY: usize = 8;
const KEY: &str = "sk_bench_prompt_run_0123456789abcdef";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub struct Args {
    pub videos: usize,
    pub dir: Option<PathBuf>,
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The no-op worker: answers every request with an empty object; counts requests.
async fn worker() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                let _ = body.len();
                axum::Json(
                    json!({ "metadata": {}, "metadata_text": "", "usage": { "input_tokens": 1, "output_tokens": 1 } }),
                )
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

fn spawn(work: &Path, data: &Path, config: &Path, media: &Path) -> anyhow::Result<Server> {
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

async fn call(c: &reqwest::Client, s: &Server, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let url = format!("{}/api/v2{path}", s.base);
    let req = match method {
        "POST" => c.post(&url).header("content-type", "application/json").body(body.unwrap_or(json!({})).to_string()),
        _ => c.get(&url),
    };
    let resp = req.bearer_auth(KEY).send().await?;
    let status = resp.status();
    let v: Value = serde_json::from_slice(&resp.bytes().await?).unwrap_or(Value::Null);
    ensure!(status.is_success(), "{method} {path}: {status} {v}");
    Ok(v)
}

async fn run_once(
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
    loop {
        let r = call(c, s, "GET", &format!("/prompt-runs/{id}"), None).await?;
        match r["status"].as_str() {
            Some("completed") => {
                let n = r["completed_segments"].as_u64().unwrap_or(0);
                return Ok((n, n as f64 / t.elapsed().as_secs_f64()));
            }
            Some("processing" | "pending") => tokio::time::sleep(Duration::from_millis(20)).await,
            other => bail!("the run ended {other:?}: {r}"),
        }
    }
}

/// The worker's ceiling: `total` POSTs of `body`, `CONCURRENCY` at a time, keep-alive.
async fn ceiling(url: &str, body: Vec<u8>, total: u64) -> anyhow::Result<(f64, u64)> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, next, failed, url, body) =
            (client.clone(), next.clone(), failed.clone(), url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let ok = match client
                    .post(&url)
                    .header("content-type", "application/json")
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
    let r = rt.block_on(bench(&work, args.videos.max(1)));
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("spool bench prompt-run: scratch and server log left in {}", work.display());
    }
    r
}

async fn bench(work: &Path, videos: usize) -> anyhow::Result<()> {
    let media = work.join("media");
    std::fs::create_dir_all(&media)?;
    for i in 0..videos {
        let samples: Vec<u8> = (0..16_000).map(|j| ((i * 31 + j) % 251) as u8).collect();
        std::fs::write(media.join(format!("c{i:05}.wav")), spool_media::pcm_wav(&samples))?;
    }
    let (url, served) = worker().await?;
    let config = work.join("spool.toml");
    std::fs::write(
        &config,
        format!(
            "[processors]\ndefault = \"probe\"\n\n[processors.noop]\nkind = \"http\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout = \"10s\"\nconcurrency = {CONCURRENCY}\n"
        ),
    )?;
    let server = spawn(work, &work.join("data"), &config, &media)?;
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get(format!("{}/healthz", server.base)).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        ensure!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idx = call(&c, &server, "POST", "/indexes", Some(json!({"name": "bench"}))).await?;
    let index = idx["index_id"].as_str().context("no index")?.to_string();
    let conn = call(&c, &server, "POST", "/connectors/local", Some(json!({"name": "m", "root": media}))).await?;
    let job = call(
        &c,
        &server,
        "POST",
        "/import-jobs",
        Some(json!({"connector_id": conn["connector_id"], "index_id": index, "file_pattern": "*.wav"})),
    )
    .await?;
    let job_id = job["job_id"].as_str().context("no job")?.to_string();
    loop {
        let j = call(&c, &server, "GET", &format!("/import-jobs/{job_id}"), None).await?;
        if j["status"] == "completed" {
            break;
        }
        ensure!(j["status"] != "failed", "the import failed: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prompt = call(
        &c,
        &server,
        "POST",
        "/prompts",
        Some(json!({"name": "bench", "prompt_text": "Describe every segment.", "json_schema": {"type": "object"}})),
    )
    .await?;
    let prompt = prompt["prompt_id"].as_str().context("no prompt")?.to_string();

    let (segments, probe_sps) = run_once(&c, &server, &prompt, &index, "probe").await?;
    println!("probe processor:      {segments} segments, {probe_sps:.0} segments/s");
    let before = served.load(Ordering::Relaxed);
    let (segments_http, http_sps) = run_once(&c, &server, &prompt, &index, "noop").await?;
    let calls = served.load(Ordering::Relaxed) - before;
    println!("no-op http worker:    {segments_http} segments, {http_sps:.0} segments/s ({calls} worker calls)");
    // A request of the size Spool sends (a segment request with its facts and media URL).
    let body = vec![b' '; 1500];
    let mut body = body;
    body[..2].copy_from_slice(b"{}");
    let (ceiling_rps, failed) = ceiling(&url, body, (segments_http.max(1000)) * 2).await?;
    ensure!(failed == 0, "the load generator saw {failed} failed requests: the baseline is not at its real speed");
    println!("worker ceiling:       {ceiling_rps:.0} requests/s ({CONCURRENCY} in flight, keep-alive, no failures)");
    let ratio = http_sps / ceiling_rps;
    println!("http run / ceiling:   {ratio:.2}");
    println!(
        "{}",
        json!({
            "bench": "prompt-run",
            "videos": videos,
            "segments": segments,
            "probe_segments_per_s": probe_sps.round(),
            "http_segments_per_s": http_sps.round(),
            "worker_ceiling_requests_per_s": ceiling_rps.round(),
            "http_vs_ceiling": (ratio * 100.0).round() / 100.0,
            "http_worker_calls": calls,
            "concurrency": CONCURRENCY,
        })
    );
    Ok(())
}
