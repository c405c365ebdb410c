//! An import under SIGKILL: a few hundred objects from the real S3 server (s3s-fs, started
//! by scripts/test.sh), the server killed at least 10 times while the job runs (each kill timed
//! on the job's progress, so the test does not depend on the engine's speed) and restarted each
//! time. At the end: the job completed, every file imported exactly
//! once, counters equal to the file outcomes, and no orphan object in the media store.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose
#![allow(clippy::disallowed_methods)] // tests read their environment
mod common;

use common::*;
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OBJECTS: usize = 400;
const KILLS_MIN: u32 = 10;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the storage servers (scripts/storage-servers.sh start DIR; . DIR/env), as scripts/test.sh does")
    })
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn call(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (s, b) = request(addr, method, path, Some(ADMIN_KEY), body).unwrap();
    (s, if b.is_empty() { serde_json::Value::Null } else { json(&b) })
}

fn media_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(media_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn an_import_survives_repeated_sigkill_and_imports_every_file_exactly_once() {
    let endpoint = env("SPOOL_TEST_S3S_ENDPOINT");
    let root = PathBuf::from(env("SPOOL_TEST_S3S_ROOT"));
    let (ak, sk) = (env("SPOOL_TEST_S3S_ACCESS_KEY"), env("SPOOL_TEST_S3S_SECRET_KEY"));
    let bucket = format!("crash-{}", std::process::id());
    let mut expected: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for i in 0..OBJECTS {
        let key = format!("clips/d{}/c{i:04}.wav", i % 7);
        let samples: Vec<u8> = (0..(1000 + i * 37)).map(|j| ((i * 31 + j) % 251) as u8).collect();
        let body = spool_media::pcm_wav(&samples);
        let path = root.join(&bucket).join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &body).unwrap();
        expected.insert(key, (body.len() as u64, hex::encode(sha2::Sha256::digest(&body))));
    }

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let envs = [("RUST_LOG", "warn"), ("SPOOL_IMPORT_CONCURRENCY", "4"), ("AWS_ENDPOINT_URL", endpoint.as_str())];
    let mut server = start_with(&data, &envs);
    let (s, idx) = call(&server.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"crash"}"#));
    assert_eq!(s, 201);
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    let body = format!(
        r#"{{"name":"src","bucket":"{bucket}","region":"us-east-1","aws_access_key_id":"{ak}","aws_secret_access_key":"{sk}"}}"#
    );
    let (s, conn) = call(&server.addr, "POST", "/api/v2/connectors/s3", Some(&body));
    assert_eq!(s, 201, "{conn}");
    let body = format!(
        r#"{{"connector_id":"{}","index_id":"{index_id}","source_prefix":"clips/","file_pattern":"*.wav","recursive":true}}"#,
        conn["connector_id"].as_str().unwrap()
    );
    let (s, job) = call(&server.addr, "POST", "/api/v2/import-jobs", Some(&body));
    assert_eq!(s, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();

    // Kills are timed on progress, not on the clock: the k-th kill comes once the job has
    // imported k/(KILLS_MIN+3) of the files (plus a small random delay), so a faster engine
    // still gets at least KILLS_MIN kills spread over the whole job.
    let thresholds: Vec<u64> =
        (1..=KILLS_MIN as u64 + 1).map(|k| k * OBJECTS as u64 / (KILLS_MIN as u64 + 3)).collect();
    let mut rng = 0x9e37_79b9_u64;
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    let final_job = loop {
        assert!(Instant::now() < deadline, "the import did not finish");
        let (_, j) = call(&server.addr, "GET", &format!("/api/v2/import-jobs/{job_id}"), None);
        let terminal = ["completed", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or(""));
        if terminal {
            if kills >= KILLS_MIN {
                break j;
            }
            panic!("the job finished after only {kills} kills; the progress thresholds were {thresholds:?} ({j})");
        }
        let imported = j["progress"]["imported"].as_u64().unwrap_or(0);
        match thresholds.get(kills as usize) {
            Some(t) if imported >= *t => {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis((rng >> 33) % 15));
                server.child.kill().unwrap();
                server.child.wait().unwrap();
                kills += 1;
                server = start_with(&data, &envs);
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    assert_eq!(final_job["status"], "completed", "{final_job}");
    let p = &final_job["progress"];
    assert_eq!(p["total_files"], OBJECTS);
    assert_eq!(
        (p["imported"].as_u64(), p["failed"].as_u64(), p["skipped"].as_u64()),
        (Some(OBJECTS as u64), Some(0), Some(0))
    );

    // Every file: imported exactly once, with its own video, whose bytes are in the media store.
    let mut files = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) =
            call(&server.addr, "GET", &format!("/api/v2/import-jobs/{job_id}/files?limit=1000{cursor}"), None);
        files.extend(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(files.len(), OBJECTS);
    let mut videos = BTreeSet::new();
    for f in &files {
        assert_eq!(f["status"], "imported", "{f}");
        assert_eq!(f["parts_completed"], 1);
        let vid = f["video_id"].as_str().unwrap().to_string();
        let (s, v) = call(&server.addr, "GET", &format!("/api/v2/videos/{vid}"), None);
        assert_eq!(s, 200);
        let (size, sha) = &expected[f["file_name"].as_str().unwrap()];
        assert_eq!((v["size_bytes"].as_u64().unwrap(), v["sha256"].as_str().unwrap()), (*size, sha.as_str()));
        assert!(videos.insert(vid), "a video id appears twice");
    }
    // The index holds exactly these videos: nothing was imported twice.
    let (_, page) = call(&server.addr, "GET", &format!("/api/v2/indexes/{index_id}/videos?limit=100"), None);
    assert_eq!(page["pagination"]["total"], OBJECTS);

    // No orphan: the media store holds one object per video and nothing else.
    let stored = media_files(&data.join("media"));
    assert_eq!(stored.len(), OBJECTS, "media store objects: {}", stored.len());
    for path in stored {
        let vid = path.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(videos.contains(&vid), "orphan object {}", path.display());
        let bytes = std::fs::read(&path).unwrap();
        assert!(expected.values().any(|(_, sha)| *sha == hex::encode(sha2::Sha256::digest(&bytes))));
    }
    // Deleting the index purges its media.
    let (s, _) = call(&server.addr, "DELETE", &format!("/api/v2/indexes/{index_id}"), None);
    assert_eq!(s, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, d) = call(&server.addr, "GET", &format!("/api/v2/indexes/{index_id}/deletion"), None);
        if d["status"] == "deleted" {
            break;
        }
        assert!(Instant::now() < deadline, "the deletion did not finish: {d}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(media_files(&data.join("media")).len(), 0, "the index's media is gone");
    let some_video = videos.iter().next().unwrap();
    assert_eq!(call(&server.addr, "GET", &format!("/api/v2/videos/{some_video}"), None).0, 404);
    sigterm(&server.child);
    assert!(server.child.wait().unwrap().success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{kills} kills survived; {OBJECTS} files imported exactly once");
}
