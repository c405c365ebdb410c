//! `spool bench export`: an export of a generated large index (videos whose prompt-run answers
//! are padded by a local worker, so the artifact is about `--mib` MiB) to the real S3 server
//! (s3s-fs) through a real `spool serve` child, against `rclone copyto` of a file of the same
//! size to the same bucket in the same run, and against the same multipart upload done with
//! object_store and no engine. MB/s each way, the ratios, one JSON line. Not a
//! test: nothing asserts on time.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

use crate::bench_prompt_run::{call, prepare, run_once, spawn, worker};
use anyhow::{Context, ensure};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Args {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// About this many MiB of artifact.
    pub mib: usize,
}

/// Seconds (= segments) per video, and answer padding per segment.
const SECONDS: usize = 20;
const PAD: usize = 8000;

fn rclone(args: &[&str]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = std::process::Command::new("rclone")
        .args(args)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .context("running rclone (apt-get install rclone)")?;
    ensure!(out.status.success(), "rclone {:?} failed: {}", args.first(), String::from_utf8_lossy(&out.stderr));
    Ok(t.elapsed())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let work = std::env::temp_dir().join(format!("spool-bench-export-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let r = rt.block_on(bench(&a, &work));
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("spool bench export: scratch and server log left in {}", work.display());
    }
    r
}

async fn bench(a: &Args, work: &Path) -> anyhow::Result<()> {
    let remote = |path: &str| {
        format!(
            ":s3,provider=Other,endpoint='{}',force_path_style=true,region=us-east-1,access_key_id='{}',secret_access_key='{}':{}/{path}",
            a.endpoint, a.access_key, a.secret_key, a.bucket
        )
    };
    rclone(&["mkdir", &remote("")])?;
    // Videos enough for the size: each segment's answer is about PAD bytes.
    let videos = ((a.mib << 20) / (SECONDS * (PAD + 450))).max(1);
    let media = work.join("media");
    std::fs::create_dir_all(&media)?;
    for i in 0..videos {
        let samples: Vec<u8> = (0..8_000 * SECONDS).map(|j| ((i * 31 + j) % 251) as u8).collect();
        std::fs::write(media.join(format!("c{i:05}.wav")), spool_media::pcm_wav(&samples))?;
    }
    let (url, _) = worker(PAD).await?;
    let config = work.join("spool.toml");
    std::fs::write(
        &config,
        format!(
            "[processors.pad]\nkind = \"http\"\nurl = \"{url}\"\nsecret = \"{}\"\nconcurrency = 32\n",
            crate::bench_prompt_run::SECRET
        ),
    )?;
    let server = spawn(work, &work.join("data"), &config, &media)?;
    let c = reqwest::Client::new();
    let (index, prompt) = prepare(&c, &server, &media, "*.wav").await?;
    let (segments, _) = run_once(&c, &server, &prompt, &index, "pad").await?;
    let body = json!({
        "name": "dest", "bucket": a.bucket, "region": "us-east-1", "endpoint": a.endpoint,
        "aws_access_key_id": a.access_key, "aws_secret_access_key": a.secret_key,
        "scopes": ["export"], "export_base_path": "bench",
    });
    let conn = call(&c, &server, "POST", "/connectors/s3", Some(body)).await?;
    let t = Instant::now();
    let created = call(
        &c,
        &server,
        "POST",
        &format!("/exports/index/{index}"),
        Some(json!({ "destination_connector_id": conn["connector_id"] })),
    )
    .await?;
    let id = created["export_id"].as_str().context("no export id")?.to_string();
    let e = loop {
        let e = call(&c, &server, "GET", &format!("/exports/{id}"), None).await?;
        if e["status"] == "completed" || e["status"] == "failed" {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let spool_s = t.elapsed().as_secs_f64();
    ensure!(e["status"] == "completed", "the export failed: {e}");
    let size = e["file_size_bytes"].as_u64().unwrap_or(0);
    let mb = size as f64 / 1e6;
    let spool_mbs = mb / spool_s;
    println!(
        "spool export:  {videos} videos, {segments} segments, {mb:.1} MB in {spool_s:.2} s = {spool_mbs:.1} MB/s ({} parts)",
        e["parts_written"]
    );
    // The same multipart upload with no engine: the artifact's bytes in parts of the export's
    // size (8 MiB), as many at a time as the export sends them, with object_store.
    let bare_mbs = {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&a.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_bucket_name(&a.bucket)
            .with_access_key_id(&a.access_key)
            .with_secret_access_key(&a.secret_key)
            .build()?;
        let bytes = std::fs::read(work.join("data/exports").join(format!("{id}.json")))?;
        let t = Instant::now();
        let mut upload = store.put_multipart(&object_store::path::Path::from("bare/same-size.json")).await?;
        {
            use futures::StreamExt;
            let sends = bytes
                .chunks(spool_core::machines::export::EXPORT_PART_BYTES_DEFAULT as usize)
                .map(|part| upload.put_part(object_store::PutPayload::from(part.to_vec())))
                .collect::<Vec<_>>();
            let mut sent = futures::stream::iter(sends).buffered(spool_runtime::EXPORT_PARTS_IN_FLIGHT_MAX);
            while let Some(r) = sent.next().await {
                r?;
            }
        }
        upload.complete().await?;
        mb / t.elapsed().as_secs_f64()
    };
    println!(
        "object_store:  {mb:.1} MB as one multipart upload of 8 MiB parts, {} at a time = {bare_mbs:.1} MB/s (ratio {:.2})",
        spool_runtime::EXPORT_PARTS_IN_FLIGHT_MAX,
        spool_mbs / bare_mbs
    );
    // The baseline: the same number of bytes, one file, rclone copyto to the same bucket.
    let file = work.join("same-size.json");
    std::fs::copy(work.join("data/exports").join(format!("{id}.json")), &file)?;
    let file_s = file.display().to_string();
    let rclone_s = rclone(&["copyto", "--s3-no-head", "--ignore-checksum", &file_s, &remote("rclone/same-size.json")])?
        .as_secs_f64();
    let rclone_mbs = mb / rclone_s;
    println!(
        "rclone copyto: {mb:.1} MB in {rclone_s:.2} s = {rclone_mbs:.1} MB/s (one PUT: rclone goes multipart above 200 MiB)"
    );
    println!("ratio:         {:.2}", spool_mbs / rclone_mbs);
    // rclone made to upload the same parts as the export (multipart, 8 MiB parts, as many at a
    // time): what the store's multipart path allows a tool that is not an engine.
    let chunk = format!("{}", spool_core::machines::export::EXPORT_PART_BYTES_DEFAULT);
    let conc = format!("{}", spool_runtime::EXPORT_PARTS_IN_FLIGHT_MAX);
    let multipart_s = rclone(&[
        "copyto",
        "--s3-no-head",
        "--ignore-checksum",
        "--s3-upload-cutoff",
        "0",
        "--s3-chunk-size",
        &chunk,
        "--s3-upload-concurrency",
        &conc,
        &file_s,
        &remote("rclone/same-size-multipart.json"),
    ])?
    .as_secs_f64();
    let multipart_mbs = mb / multipart_s;
    println!(
        "rclone copyto, multipart as the export ({conc} parts of 8 MiB at a time): {multipart_mbs:.1} MB/s (ratio {:.2})",
        spool_mbs / multipart_mbs
    );
    println!(
        "{}",
        json!({
            "bench": "export",
            "bytes": size,
            "videos": videos,
            "segments": segments,
            "spool_mb_per_s": (spool_mbs * 10.0).round() / 10.0,
            "rclone_copyto_mb_per_s": (rclone_mbs * 10.0).round() / 10.0,
            "export_vs_rclone": ((spool_mbs / rclone_mbs) * 100.0).round() / 100.0,
            "rclone_multipart_mb_per_s": (multipart_mbs * 10.0).round() / 10.0,
            "export_vs_rclone_multipart": ((spool_mbs / multipart_mbs) * 100.0).round() / 100.0,
            "bare_multipart_mb_per_s": (bare_mbs * 10.0).round() / 10.0,
            "export_vs_bare": ((spool_mbs / bare_mbs) * 100.0).round() / 100.0,
            "note": "the export's time includes making the artifact from the state",
        })
    );
    Ok(())
}
