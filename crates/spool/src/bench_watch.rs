//! `spool bench watch`: one import automation watch cycle over prefixes of 1k, 10k and 100k
//! objects, through a real `spool serve` child, against `rclone lsjson -R` of the same prefix in
//! the same run. `--store local` (the default) watches a folder through a local connector;
//! `--store s3` a bucket of the S3 server s3s-fs, whose every listed page re-reads the whole
//! prefix (2.8 s per page of 1,000 at 100k objects), so there the server's listing dominates. Per size: the first cycle (every
//! object is new: the manifest is filled and all are recorded as found), a steady cycle (nothing
//! changed: every object compared with the manifest, nothing recorded), the server's resident
//! memory before and after, and rclone's time and peak memory. Not a test: nothing asserts on
//! time. Ends with one JSON line.

use crate::bench_prompt_run::{Server, call, healthy, spawn};
use anyhow::{Context, ensure};
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Args {
    /// `local` or `s3`.
    pub store: String,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub sizes: Vec<usize>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let work = std::env::temp_dir().join(format!("spool-bench-watch-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let r = rt.block_on(bench(&a, &work));
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("spool bench watch: scratch and server log left in {}", work.display());
    }
    r
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// A folder of `n` one-byte objects under `root/prefix`, 100 per sub-folder.
fn fill_local(root: &Path, prefix: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let dir = root.join(prefix).join(format!("d{:03}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(dir.join(format!("clip{i:06}.mp4")), b"x")?;
    }
    Ok(())
}

async fn fill(a: &Args, prefix: &str, n: usize) -> anyhow::Result<()> {
    use object_store::ObjectStoreExt;
    let loc = spool_model::ConnectorLocation {
        bucket: Some(a.bucket.clone()),
        region: Some("us-east-1".into()),
        endpoint: Some(a.endpoint.clone()),
        ..Default::default()
    };
    let creds = spool_storage::Credentials {
        aws_access_key_id: Some(a.access_key.clone()),
        aws_secret_access_key: Some(a.secret_key.clone()),
        ..Default::default()
    };
    let store = spool_storage::build_store(spool_model::Provider::S3, &loc, &creds, &Default::default())?;
    let req = spool_storage::BrowseRequest {
        prefix: prefix.into(),
        pattern: "*".into(),
        recursive: true,
        max_entries: usize::MAX,
    };
    let present = spool_storage::browse(&store, &req).await.context("listing the bucket (does it exist?)")?;
    if present.len() >= n {
        return Ok(());
    }
    println!("uploading {} objects under {prefix} …", n - present.len());
    let have: std::collections::HashSet<String> = present.into_iter().map(|f| f.path).collect();
    let keys: Vec<String> =
        (0..n).map(|i| format!("{prefix}d{:03}/clip{i:06}.mp4", i % 100)).filter(|k| !have.contains(k)).collect();
    let results: Vec<_> = futures::stream::iter(keys)
        .map(|k| {
            let store = store.clone();
            async move {
                store.inner.put(&object_store::path::Path::from(k), object_store::PutPayload::from_static(b"x")).await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Wait until the listing the automation was told to make has ended (its `last_listed_at`
/// differs from `before`), polling every 5 ms.
async fn listed(c: &reqwest::Client, s: &Server, index: &str, before: &Value) -> anyhow::Result<Value> {
    let url = format!("/indexes/{index}/automations/import");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let a = call(c, s, "GET", &url, None).await?;
        if a["last_listed_at"] != *before && a["waiting_for"] != "listing" {
            ensure!(a["last_error"].is_null(), "the listing failed: {}", a["last_error"]);
            return Ok(a);
        }
        ensure!(Instant::now() < deadline, "the listing did not end: {a}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `rclone lsjson -R` of the prefix under `/usr/bin/time`: (objects, seconds, peak MiB).
fn rclone(a: &Args, local: Option<&Path>, prefix: &str, flat: bool) -> anyhow::Result<(usize, f64, f64)> {
    let remote = match local {
        Some(root) => root.join(prefix).to_string_lossy().into_owned(),
        None => format!(
            ":s3,provider=Other,endpoint='{}',force_path_style=true,region=us-east-1,access_key_id='{}',secret_access_key='{}':{}/{prefix}",
            a.endpoint, a.access_key, a.secret_key, a.bucket
        ),
    };
    let mut args = vec!["-f", "%M", "rclone", "lsjson", "-R", "--files-only", "--no-modtime", "--no-mimetype"];
    if !flat {
        args.extend(["--disable", "ListR"]);
    }
    args.push(&remote);
    let start = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(&args)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .context("running /usr/bin/time rclone (apt-get install time rclone)")?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(out.status.success(), "rclone failed: {}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    let peak_kb: f64 =
        String::from_utf8_lossy(&out.stderr).lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0.0);
    Ok((listed.len(), secs, peak_kb / 1024.0))
}

async fn bench(a: &Args, work: &Path) -> anyhow::Result<()> {
    let objects = work.join("objects");
    let local = (a.store == "local").then_some(objects.as_path());
    ensure!(local.is_some() || a.store == "s3", "--store is local or s3, not {:?}", a.store);
    for &n in &a.sizes {
        match local {
            Some(root) => fill_local(root, &format!("watch/n{n}/"), n)?,
            None => fill(a, &format!("watch/n{n}/"), n).await?,
        }
    }
    let config = work.join("spool.toml");
    std::fs::write(&config, "")?;
    let server = spawn(work, &work.join("data"), &config, work)?;
    let c = reqwest::Client::new();
    healthy(&c, &server).await?;
    let pid = server.pid();
    let conn = match local {
        Some(root) => {
            let body = json!({ "name": "watched", "root": root, "scopes": ["import"] });
            call(&c, &server, "POST", "/connectors/local", Some(body)).await?
        }
        None => {
            let body = json!({
                "name": "watched", "bucket": a.bucket, "region": "us-east-1", "endpoint": a.endpoint,
                "aws_access_key_id": a.access_key, "aws_secret_access_key": a.secret_key, "scopes": ["import"],
            });
            call(&c, &server, "POST", "/connectors/s3", Some(body)).await?
        }
    };
    let schema = json!({"type": "object"});
    let prompt = call(
        &c,
        &server,
        "POST",
        "/prompts",
        Some(json!({"name": "watch bench", "prompt_text": "Describe it.", "json_schema": schema})),
    )
    .await?;
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("watch"));
    out.insert("store".into(), json!(a.store));
    let mut last_ratio = 0.0;
    for &n in &a.sizes {
        let prefix = format!("watch/n{n}/");
        let index = call(&c, &server, "POST", "/indexes", Some(json!({"name": format!("w{n}")}))).await?;
        let index = index["index_id"].as_str().context("no index")?.to_string();
        let (rss0, _) = memory_mib(pid);
        // First cycle: saving lists at once; every object is new. A debounce of a day keeps
        // the import from starting.
        let doc = json!({
            "connector_id": conn["connector_id"], "source_prefix": prefix, "file_pattern": "*.mp4",
            "recursive": true, "debounce_interval": "1d",
            "prompt_preset": {"prompt_id": prompt["prompt_id"], "processing_model": "probe"},
        });
        let t = Instant::now();
        call(&c, &server, "PUT", &format!("/indexes/{index}/automations/import"), Some(doc)).await?;
        let first = listed(&c, &server, &index, &Value::Null).await?;
        let first_s = t.elapsed().as_secs_f64();
        ensure!(first["found_objects"] == n, "the first cycle found {} of {n}", first["found_objects"]);
        let (rss1, _) = memory_mib(pid);
        // Steady cycle: pause and resume (a resume lists at once); nothing changed.
        call(&c, &server, "POST", &format!("/indexes/{index}/automations/import/pause"), None).await?;
        let t = Instant::now();
        call(&c, &server, "POST", &format!("/indexes/{index}/automations/import/resume"), None).await?;
        let steady = listed(&c, &server, &index, &first["last_listed_at"]).await?;
        let steady_s = t.elapsed().as_secs_f64();
        ensure!(steady["found_objects"] == n && steady["manifest_objects"] == n, "the steady cycle changed: {steady}");
        let (rss2, hwm) = memory_mib(pid);
        // The baseline: rclone's listing of the same prefix (flat when the server answers it).
        let flat = local.is_some() || rclone(a, local, &prefix, true)?.0 == n;
        let (count, rclone_s, rclone_mib) = rclone(a, local, &prefix, flat)?;
        ensure!(count == n, "rclone listed {count} of {n}");
        let ratio = rclone_s / steady_s;
        println!(
            "{n:>7} objects: first cycle {first_s:.2} s ({:.0}/s), steady cycle {steady_s:.2} s ({:.0}/s); \
             server RSS {rss0:.0} -> {rss1:.0} -> {rss2:.0} MiB (peak {hwm:.0}); rclone lsjson -R{} {rclone_s:.2} s, \
             peak {rclone_mib:.0} MiB; rclone time / steady cycle time = {ratio:.2}",
            n as f64 / first_s,
            n as f64 / steady_s,
            if flat { "" } else { " --disable ListR" },
        );
        out.insert(format!("first_cycle_s_{n}"), json!(round(first_s, 3)));
        out.insert(format!("steady_cycle_s_{n}"), json!(round(steady_s, 3)));
        out.insert(format!("steady_objects_per_s_{n}"), json!((n as f64 / steady_s).round()));
        out.insert(format!("server_rss_growth_mib_{n}"), json!(round(rss2 - rss0, 1)));
        out.insert(format!("rclone_lsjson_s_{n}"), json!(round(rclone_s, 3)));
        out.insert(format!("rclone_peak_mib_{n}"), json!(round(rclone_mib, 1)));
        last_ratio = ratio;
    }
    out.insert("rclone_over_steady_cycle_largest".into(), json!(round(last_ratio, 2)));
    println!("{}", Value::Object(out));
    Ok(())
}
