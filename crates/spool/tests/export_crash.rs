//! An export to the real S3 server (s3s-fs) under SIGKILL: an index of 100 videos whose prompt
//! run (on an `http` worker answering 4 KB per segment) makes an artifact of about 17 MB, which
//! goes up as a multipart upload of 5 MiB parts (S3's smallest), each part an event; the
//! server is killed three times while parts go up (each kill timed on the recorded parts) and
//! restarted. At the end: the export completed, the upload was started once and each part was
//! recorded once (it resumed from the last durable part), and the object in the bucket is
//! byte-identical to the kept artifact (SHA-256).
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose
#![allow(clippy::disallowed_methods)] // tests read their environment
mod common;

use common::*;
use sha2::Digest;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const VIDEOS: usize = 100;
/// Seconds of each video (one segment per second).
const SECONDS: usize = 40;
const PART_BYTES: u64 = 5 * 1024 * 1024;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the storage servers (scripts/storage-servers.sh start DIR; . DIR/env), as scripts/test.sh does")
    })
}

#[test]
fn an_export_to_s3_resumes_from_its_last_durable_part_after_sigkill_and_writes_identical_bytes() {
    let endpoint = env("SPOOL_TEST_S3S_ENDPOINT");
    let s3_root = PathBuf::from(env("SPOOL_TEST_S3S_ROOT"));
    let (ak, sk) = (env("SPOOL_TEST_S3S_ACCESS_KEY"), env("SPOOL_TEST_S3S_SECRET_KEY"));
    let bucket = format!("exports-{}", std::process::id());
    std::fs::create_dir_all(s3_root.join(&bucket)).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    for i in 0..VIDEOS {
        let samples: Vec<u8> = (0..8_000 * SECONDS).map(|j| ((i * 13 + j) % 251) as u8).collect();
        std::fs::write(media.join(format!("c{i:04}.wav")), spool_media::pcm_wav(&samples)).unwrap();
    }
    let (url, _, _) = worker(4000);
    let config = tmp.path().join("spool.toml");
    std::fs::write(
        &config,
        format!("[processors.worker]\nkind = \"http\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nconcurrency = 16\n"),
    )
    .unwrap();
    let config_s = config.display().to_string();
    let data = tmp.path().join("data");
    let roots = media.display().to_string();
    let part = PART_BYTES.to_string();
    let envs = [
        ("RUST_LOG", "warn"),
        ("SPOOL_CONFIG", config_s.as_str()),
        ("SPOOL_LOCAL_ROOTS", roots.as_str()),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("SPOOL_EXPORT_PART_BYTES", part.as_str()),
        // Debug builds only: each part's record waits 150 ms, so kills land between parts.
        ("SPOOL_FAILPOINTS", "export_part_slow"),
    ];
    let mut server = start_with(&data, &envs);
    let a = server.addr.clone();
    let (_, idx) = call(&a, "POST", "/api/v2/indexes", Some(r#"{"name":"big"}"#));
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    let body = format!(r#"{{"name":"local","root":"{}"}}"#, media.display());
    let (_, local) = call(&a, "POST", "/api/v2/connectors/local", Some(&body));
    let body = format!(
        r#"{{"connector_id":"{}","index_id":"{index_id}","file_pattern":"*.wav"}}"#,
        local["connector_id"].as_str().unwrap()
    );
    let (s, job) = call(&a, "POST", "/api/v2/import-jobs", Some(&body));
    assert_eq!(s, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(240);
    while call(&a, "GET", &format!("/api/v2/import-jobs/{job_id}"), None).1["status"] != "completed" {
        assert!(Instant::now() < deadline, "the import did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let schema = r#"{"type":"object","required":["label"]}"#;
    let (_, prompt) = call(
        &a,
        "POST",
        "/api/v2/prompts",
        Some(&format!(r#"{{"name":"pads","prompt_text":"Label every second.","json_schema":{schema}}}"#)),
    );
    let body = format!(
        r#"{{"prompt_id":"{}","target":{{"type":"index","index_id":"{index_id}"}},"audio_segmentation_type":"fixed","audio_segment_duration":1,"processing_model":"worker"}}"#,
        prompt["prompt_id"].as_str().unwrap()
    );
    let (s, run) = call(&a, "POST", "/api/v2/prompt-runs/execute", Some(&body));
    assert_eq!(s, 200, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    loop {
        let (_, r) = call(&a, "GET", &format!("/api/v2/prompt-runs/{run_id}"), None);
        if r["status"] == "completed" {
            assert_eq!(r["completed_segments"].as_u64(), Some((VIDEOS * SECONDS) as u64));
            break;
        }
        // The deadline holds whatever the status (it once bound only `processing`, so a run
        // stuck `pending` looped for ever).
        assert!(Instant::now() < deadline, "the run did not complete: {r}");
        assert!(r["status"] == "processing" || r["status"] == "pending", "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = format!(
        r#"{{"name":"dest","bucket":"{bucket}","region":"us-east-1","aws_access_key_id":"{ak}","aws_secret_access_key":"{sk}","scopes":["export"],"export_base_path":"exports"}}"#
    );
    let (s, s3) = call(&a, "POST", "/api/v2/connectors/s3", Some(&body));
    assert_eq!(s, 201, "{s3}");
    let body = format!(
        r#"{{"destination_connector_id":"{}","destination_subpath":"nightly"}}"#,
        s3["connector_id"].as_str().unwrap()
    );
    let (s, created) = call(&a, "POST", &format!("/api/v2/exports/index/{index_id}"), Some(&body));
    assert_eq!(s, 202, "{created}");
    let export_id = created["export_id"].as_str().unwrap().to_string();

    // Kills between parts, before the last one (never during the final complete).
    let thresholds = [1u64, 2, 3];
    let mut kills = 0usize;
    let done = loop {
        assert!(Instant::now() < deadline, "the export did not finish");
        let (_, e) = call(&server.addr, "GET", &format!("/api/v2/exports/{export_id}"), None);
        if e["status"] == "completed" || e["status"] == "failed" {
            break e;
        }
        let parts = e["parts_written"].as_u64().unwrap_or(0);
        match thresholds.get(kills) {
            Some(t) if parts >= *t => {
                server.child.kill().unwrap();
                server.child.wait().unwrap();
                kills += 1;
                server = start_with(&data, &envs);
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    assert_eq!(done["status"], "completed", "after {kills} kills: {done}");
    assert_eq!(kills, thresholds.len(), "the export finished before every kill: {done}");
    let size = done["file_size_bytes"].as_u64().unwrap();
    assert!(size > 3 * PART_BYTES, "the artifact is only {size} bytes");
    assert_eq!(done["parts_written"].as_u64(), Some(size.div_ceil(PART_BYTES)));

    // The object is the kept artifact, byte for byte.
    let object = s3_root.join(&bucket).join("exports/nightly").join(format!("{export_id}.json"));
    let bytes = std::fs::read(&object).unwrap_or_else(|e| panic!("{}: {e}", object.display()));
    let kept = std::fs::read(data.join("exports").join(format!("{export_id}.json"))).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), done["sha256"].as_str().unwrap());
    assert!(bytes == kept, "the uploaded object differs from the kept artifact");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["videos"].as_array().unwrap().len(),
        VIDEOS
    );

    // It resumed: one upload, each part recorded once, in order.
    sigterm(&server.child);
    server.child.wait().unwrap();
    let log = |kind: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(["log", "show", "--json", "--kind", kind, "--stream", &export_id, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(log("ExportUploadStarted").len(), 1, "the upload started again instead of resuming");
    let parts = log("ExportPartWritten");
    assert_eq!(parts.len() as u64, size.div_ceil(PART_BYTES));
    eprintln!("export crash test: {kills} kills, {size} bytes, {} parts", parts.len());
}
