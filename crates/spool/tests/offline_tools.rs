//! The offline tools against a real data directory: `spool replay` of a job shows its files
//! (their events live on `job_…/fN` streams), and `spool verify` compares a fresh fold with the
//! snapshot the server wrote, so a difference (a non-deterministic fold, a damaged snapshot)
//! is reported and fails the command.

mod common;

use common::*;
use spool_log::{AppendRequest, EventLog, RedbLog, SideWrite};
use std::process::Command;
use std::time::{Duration, Instant};

fn call(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (s, b) = request(addr, method, path, Some(ADMIN_KEY), body).unwrap();
    (s, if b.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&b).unwrap() })
}

fn spool(args: &[&str], data: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spool")).args(args).arg("--data-dir").arg(data).output().unwrap()
}

#[test]
fn replay_of_a_job_includes_its_file_streams_and_verify_reports_a_snapshot_that_differs_from_a_fresh_fold() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = tmp.path().join("roots");
    let videos = roots.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    for i in 0..3 {
        std::fs::write(
            videos.join(format!("clip{i}.wav")),
            spool_media::pcm_wav(format!("bytes of clip {i}").as_bytes()),
        )
        .unwrap();
    }
    let data = tmp.path().join("data");
    let server = start_with(&data, &[("RUST_LOG", "warn"), ("SPOOL_LOCAL_ROOTS", roots.to_str().unwrap())]);
    let a = server.addr.clone();
    let (_, idx) = call(&a, "POST", "/api/v2/indexes", Some(r#"{"name":"replay"}"#));
    let body = format!(r#"{{"name":"local","root":"{}"}}"#, videos.display());
    let (s, conn) = call(&a, "POST", "/api/v2/connectors/local", Some(&body));
    assert_eq!(s, 201, "{conn}");
    let body = format!(
        r#"{{"connector_id":"{}","index_id":"{}","file_pattern":"*.wav"}}"#,
        conn["connector_id"].as_str().unwrap(),
        idx["index_id"].as_str().unwrap()
    );
    let (s, job) = call(&a, "POST", "/api/v2/import-jobs", Some(&body));
    assert_eq!(s, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, j) = call(&a, "GET", &format!("/api/v2/import-jobs/{job_id}"), None);
        if j["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the job did not complete: {j}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut server = server;
    sigterm(&server.child);
    assert!(server.child.wait().unwrap().success());

    // The replay of the job shows its files' steps and ends with every file imported.
    let out = spool(&["replay", &job_id], &data);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches("ImportFileStarted").count(), 3, "{text}");
    assert_eq!(text.matches("ImportFileImported").count(), 3, "{text}");
    let last_state = text.lines().rfind(|l| l.contains("state: ImportJob")).unwrap_or_default();
    assert!(last_state.contains("status: completed") && last_state.contains("imported: 3"), "{last_state}");

    // verify compares with the snapshot the server wrote at SIGTERM.
    let out = spool(&["verify"], &data);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("snapshot equals a fresh fold"), "{text}");

    // A snapshot that is not the fold of the log (as a non-deterministic fold would leave) is
    // reported, and verify fails.
    {
        let log = RedbLog::open_dir(&data).unwrap();
        let snap = log.snapshot(spool_runtime::SNAPSHOT_NAME).unwrap().expect("a snapshot at shutdown");
        let mut state = spool_core::State::from_snapshot(&snap.bytes).expect("this format");
        let index = state.indexes.values_mut().next().unwrap();
        index.name = "not what the log says".into();
        let req = AppendRequest {
            streams: vec![],
            side: vec![SideWrite::Snapshot {
                name: spool_runtime::SNAPSHOT_NAME.into(),
                at_seq: snap.at_seq,
                bytes: state.to_snapshot(),
            }],
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(log.append(req)).unwrap();
    }
    let out = spool(&["verify"], &data);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "verify passed a snapshot that differs from the fold: {text}");
    assert!(text.contains("differs from a fresh fold"), "{text}");
}
