//! `spool bundle` and `spool replay --bundle`: one import job from the real S3 server (s3s-fs)
//! with a connector that has credentials, bundled from the stopped server's data directory; the
//! bundle replayed with no data directory matches the original's `spool replay` line for line,
//! holds the job's index, connector and videos, and no credentials.

#![allow(clippy::disallowed_methods)] // tests read their environment
mod common;
use common::{call, sigterm, start_with};
use std::process::Command;
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: start scripts/storage-servers.sh"))
}

#[test]
fn a_bundle_replayed_elsewhere_matches_the_original_replay_line_for_line() {
    let endpoint = env("SPOOL_TEST_S3S_ENDPOINT");
    let root = std::path::PathBuf::from(env("SPOOL_TEST_S3S_ROOT"));
    let (ak, sk) = (env("SPOOL_TEST_S3S_ACCESS_KEY"), env("SPOOL_TEST_S3S_SECRET_KEY"));
    let bucket = format!("bundle-{}", std::process::id());
    for i in 0..3 {
        let path = root.join(&bucket).join(format!("in/c{i}.wav"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, spool_media::pcm_wav(format!("clip {i}").as_bytes())).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = start_with(&data, &[("RUST_LOG", "warn"), ("AWS_ENDPOINT_URL", endpoint.as_str())]);
    let (_, idx) = call(&server.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"bundled"}"#));
    let body = format!(
        r#"{{"name":"src","bucket":"{bucket}","region":"us-east-1","aws_access_key_id":"{ak}","aws_secret_access_key":"{sk}"}}"#
    );
    let (s, conn) = call(&server.addr, "POST", "/api/v2/connectors/s3", Some(&body));
    assert_eq!(s, 201, "{conn}");
    let body = format!(
        r#"{{"connector_id":"{}","index_id":"{}","source_prefix":"in/","file_pattern":"*.wav"}}"#,
        conn["connector_id"].as_str().unwrap(),
        idx["index_id"].as_str().unwrap()
    );
    let (_, job) = call(&server.addr, "POST", "/api/v2/import-jobs", Some(&body));
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, j) = call(&server.addr, "GET", &format!("/api/v2/import-jobs/{job_id}"), None);
        if j["status"] == "completed" {
            assert_eq!(j["progress"]["imported"], 3, "{j}");
            break;
        }
        assert!(Instant::now() < deadline, "the job did not complete: {j}");
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(&server.child);
    server.child.wait().unwrap();

    let spool = env!("CARGO_BIN_EXE_spool");
    let file = tmp.path().join("job.bundle");
    let out = Command::new(spool)
        .arg("bundle")
        .arg(&job_id)
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let original = Command::new(spool).arg("replay").arg(&job_id).arg("--data-dir").arg(&data).output().unwrap();
    assert!(original.status.success());
    // Elsewhere: no data directory at all (the data directory is moved away first).
    std::fs::rename(&data, tmp.path().join("gone")).unwrap();
    let replayed = Command::new(spool).args(["replay", "--bundle"]).arg(&file).output().unwrap();
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    let (a, b) = (String::from_utf8_lossy(&original.stdout), String::from_utf8_lossy(&replayed.stdout));
    assert!(a.lines().count() > 10);
    for (n, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        assert_eq!(x, y, "line {} differs", n + 1);
    }
    assert_eq!(a.lines().count(), b.lines().count());

    // The bundle holds the index, the connector (without credentials) and the three videos.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["subject"], job_id.as_str());
    let events: Vec<spool_model::Envelope> =
        lines.map(|l| spool_model::decode_envelope(&hex::decode(l).unwrap()).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind()).collect();
    assert!(kinds.contains(&"IndexCreated") && kinds.contains(&"ConnectorCreated"), "{kinds:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.stream.starts_with("vid_"))
            .map(|e| &e.stream)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
    for e in &events {
        if let spool_model::Event::ConnectorCreated { credentials, .. } = &e.event {
            assert!(credentials.is_none(), "a bundle holds the connector's credentials");
        }
    }
    assert!(!text.contains(&hex::encode(sk.as_bytes())) && !text.contains(&sk));
}
