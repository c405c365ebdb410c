//! A prompt run under SIGKILL: 1,000 videos (two 1-second segments each) sent to an `http`
//! processor played by this test (it answers each segment with its own id after a short
//! delay), the server killed at least 10 times while the run goes (each kill timed on the run's
//! progress) and restarted each time. At the end: the run completed, exactly one result per
//! segment (each the answer to that segment), counters equal to the outcomes, and at least as
//! many processor calls as segments (calls may repeat; results never duplicate).
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const VIDEOS: usize = 1000;
const SEGMENTS_PER_VIDEO: usize = 2;
const KILLS_MIN: u64 = 10;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A worker: answers every request `{"metadata":{"label":<segment id>}, …}` after 1 ms; counts
/// calls per segment.
#[test]
fn a_prompt_run_survives_repeated_sigkill_with_one_result_per_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    for i in 0..VIDEOS {
        // 2 s of 8 kHz PCM.
        let samples: Vec<u8> = (0..16_000).map(|j| ((i * 31 + j) % 251) as u8).collect();
        std::fs::write(media.join(format!("c{i:04}.wav")), spool_media::pcm_wav(&samples)).unwrap();
    }
    let (url, calls, total_calls) = worker(0);
    let config = tmp.path().join("spool.toml");
    std::fs::write(
        &config,
        format!(
            "[processors]\ndefault = \"probe\"\n\n[processors.worker]\nkind = \"http\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout = \"5s\"\nconcurrency = 8\n"
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let roots = media.display().to_string();
    let config_s = config.display().to_string();
    let envs = [("RUST_LOG", "warn"), ("SPOOL_LOCAL_ROOTS", roots.as_str()), ("SPOOL_CONFIG", config_s.as_str())];
    let mut server = start_with(&data, &envs);
    let a = server.addr.clone();
    let (_, idx) = call(&a, "POST", "/api/v2/indexes", Some(r#"{"name":"runs"}"#));
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    let body = format!(r#"{{"name":"local","root":"{}"}}"#, media.display());
    let (s, conn) = call(&a, "POST", "/api/v2/connectors/local", Some(&body));
    assert_eq!(s, 201, "{conn}");
    let body = format!(
        r#"{{"connector_id":"{}","index_id":"{index_id}","file_pattern":"*.wav"}}"#,
        conn["connector_id"].as_str().unwrap()
    );
    let (s, job) = call(&a, "POST", "/api/v2/import-jobs", Some(&body));
    assert_eq!(s, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, j) = call(&a, "GET", &format!("/api/v2/import-jobs/{job_id}"), None);
        if j["status"] == "completed" {
            assert_eq!(j["progress"]["imported"], VIDEOS, "{j}");
            break;
        }
        assert!(Instant::now() < deadline, "the import did not finish: {j}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let schema = r#"{"type":"object","properties":{"label":{"type":"string"}},"required":["label"]}"#;
    let body = format!(r#"{{"name":"labels","prompt_text":"Label every segment.","json_schema":{schema}}}"#);
    let (s, prompt) = call(&a, "POST", "/api/v2/prompts", Some(&body));
    assert_eq!(s, 201, "{prompt}");
    let body = format!(
        r#"{{"prompt_id":"{}","target":{{"type":"index","index_id":"{index_id}"}},"video_segmentation_type":"fixed","audio_segmentation_type":"fixed","video_segment_duration":1,"audio_segment_duration":1,"processing_model":"worker"}}"#,
        prompt["prompt_id"].as_str().unwrap()
    );
    let (s, run) = call(&a, "POST", "/api/v2/prompt-runs/execute", Some(&body));
    assert_eq!(s, 200, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();

    let total = (VIDEOS * SEGMENTS_PER_VIDEO) as u64;
    let thresholds: Vec<u64> = (1..=KILLS_MIN + 1).map(|k| k * total / (KILLS_MIN + 3)).collect();
    let mut rng = 0x2545_f491_u64;
    let mut kills = 0u64;
    let final_run = loop {
        assert!(Instant::now() < deadline, "the run did not finish");
        let (_, r) = call(&server.addr, "GET", &format!("/api/v2/prompt-runs/{run_id}"), None);
        let status = r["status"].as_str().unwrap_or("");
        if ["completed", "completed_with_failures", "failed", "cancelled"].contains(&status) {
            assert!(kills >= KILLS_MIN, "the run finished after only {kills} kills (thresholds {thresholds:?}): {r}");
            break r;
        }
        let done = r["completed_segments"].as_u64().unwrap_or(0);
        match thresholds.get(kills as usize) {
            Some(t) if done >= *t => {
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
    let a = server.addr.clone();
    assert_eq!(final_run["status"], "completed", "{final_run}");
    assert_eq!(final_run["total_segments"].as_u64(), Some(total));
    assert_eq!(final_run["completed_segments"].as_u64(), Some(total));
    assert_eq!(final_run["failed_segments"].as_u64(), Some(0));
    assert_eq!(final_run["total_audios"].as_u64(), Some(VIDEOS as u64));
    assert_eq!(final_run["completed_audios"].as_u64(), Some(VIDEOS as u64));

    // Exactly one result per segment, each the answer to that very segment.
    let (_, page) = call(&a, "GET", &format!("/api/v2/indexes/{index_id}/videos?limit=100"), None);
    assert_eq!(page["pagination"]["total"], VIDEOS);
    let mut segments = BTreeSet::new();
    let mut cursor = String::new();
    let mut videos = Vec::new();
    loop {
        let (_, page) = call(&a, "GET", &format!("/api/v2/indexes/{index_id}/videos?limit=100{cursor}"), None);
        for v in page["data"].as_array().unwrap() {
            videos.push(v["video_id"].as_str().unwrap().to_string());
        }
        match page["pagination"]["next_cursor"].as_str() {
            Some(c) if page["pagination"]["has_more"] == true => cursor = format!("&cursor={c}"),
            _ => break,
        }
    }
    assert_eq!(videos.len(), VIDEOS);
    for vid in &videos {
        let (_, res) = call(&a, "GET", &format!("/api/v2/prompt-runs/{run_id}/results?video_id={vid}&limit=100"), None);
        let data = res["data"].as_array().unwrap();
        assert_eq!(data.len(), SEGMENTS_PER_VIDEO, "{res}");
        for r in data {
            let sid = r["segment_id"].as_str().unwrap().to_string();
            assert_eq!(r["metadata"]["label"], sid.as_str(), "a result is another segment's answer");
            assert!(segments.insert(sid), "a segment has two results");
        }
    }
    assert_eq!(segments.len() as u64, total);
    let calls = calls.lock().unwrap();
    assert!(segments.iter().all(|s| calls.contains_key(s)), "a result without a processor call");
    let made = total_calls.load(Ordering::SeqCst);
    assert!(made >= total, "{made} calls for {total} segments");
    let (_, llm) = call(&a, "GET", &format!("/api/v2/prompt-runs/{run_id}/llm-calls"), None);
    let recorded = llm.as_array().unwrap().len() as u64;
    // Every recorded call was made; a call cut by a kill before its outcome was appended is not
    // recorded (and runs again).
    assert!(recorded >= total && recorded <= made, "{recorded} recorded, {made} made, {total} segments");
    eprintln!("prompt run crash test: {kills} kills, {total} segments, {made} processor calls, {recorded} recorded");
}
