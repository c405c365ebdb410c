//! Exports through the real binary: a download export above `SPOOL_EXPORT_DOWNLOAD_MAX_BYTES`
//! fails with an error that names the connector destination as the way out; the same export to
//! a connector has no such bound and writes exactly the bytes it reports (size and SHA-256);
//! a destination path that leaves `export_base_path` is refused however it is spelled.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

mod common;

use common::*;
use sha2::Digest;
use std::time::{Duration, Instant};

fn wait(addr: &str, export_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, e) = call(addr, "GET", &format!("/api/v2/exports/{export_id}"), None);
        if e["status"] == "completed" || e["status"] == "failed" {
            return e;
        }
        assert!(Instant::now() < deadline, "the export did not end: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_download_export_over_the_bound_fails_naming_the_connector_way_out_which_has_no_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(media.join("in")).unwrap();
    for i in 0..20 {
        let samples: Vec<u8> = (0..8_000).map(|j| ((i * 7 + j) % 251) as u8).collect();
        std::fs::write(media.join("in").join(format!("c{i:02}.wav")), spool_media::pcm_wav(&samples)).unwrap();
    }
    let data = tmp.path().join("data");
    let roots = media.display().to_string();
    let envs =
        [("RUST_LOG", "warn"), ("SPOOL_LOCAL_ROOTS", roots.as_str()), ("SPOOL_EXPORT_DOWNLOAD_MAX_BYTES", "4000")];
    let server = start_with(&data, &envs);
    let a = server.addr.clone();
    let (_, idx) = call(&a, "POST", "/api/v2/indexes", Some(r#"{"name":"exports"}"#));
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    let body = format!(
        r#"{{"name":"local","root":"{}","scopes":["import","export"],"export_base_path":"out"}}"#,
        media.display()
    );
    let (s, conn) = call(&a, "POST", "/api/v2/connectors/local", Some(&body));
    assert_eq!(s, 201, "{conn}");
    let connector_id = conn["connector_id"].as_str().unwrap().to_string();
    let body = format!(
        r#"{{"connector_id":"{connector_id}","index_id":"{index_id}","source_prefix":"in/","file_pattern":"*.wav"}}"#
    );
    let (s, job) = call(&a, "POST", "/api/v2/import-jobs", Some(&body));
    assert_eq!(s, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(&a, "GET", &format!("/api/v2/import-jobs/{job_id}"), None).1["status"] != "completed" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }

    // Over the bound as a download: failed, and the message says what to do instead.
    let (s, created) = call(&a, "POST", &format!("/api/v2/exports/index/{index_id}"), None);
    assert_eq!(s, 202, "{created}");
    let e = wait(&a, created["export_id"].as_str().unwrap());
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["queue_status"], "failed");
    let msg = e["error_message"].as_str().unwrap();
    assert!(msg.contains("4000") && msg.contains("destination_connector_id"), "{msg}");
    assert!(e["download_url"].is_null());

    // To the connector: no bound; the object is the artifact, byte for byte.
    let body = format!(r#"{{"destination_connector_id":"{connector_id}","destination_subpath":"weekly/run1"}}"#);
    let (s, created) = call(&a, "POST", &format!("/api/v2/exports/index/{index_id}"), Some(&body));
    assert_eq!(s, 202, "{created}");
    let export_id = created["export_id"].as_str().unwrap().to_string();
    let e = wait(&a, &export_id);
    assert_eq!(e["status"], "completed", "{e}");
    assert_eq!(e["destination_type"], "connector");
    assert!(e["download_url"].is_null());
    let object = media.join("out/weekly/run1").join(format!("{export_id}.json"));
    let bytes = std::fs::read(&object).unwrap();
    assert!(bytes.len() > 4000);
    assert_eq!(e["file_size_bytes"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(e["sha256"].as_str().unwrap(), hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(e["destination_uri"].as_str().unwrap(), format!("file:///out/weekly/run1/{export_id}.json"));
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["format"], "spool.export.v1");
    assert_eq!(doc["videos"].as_array().unwrap().len(), 20);

    // A path that leaves export_base_path is refused, however it is spelled.
    for sub in ["../x", "a/../../x", "/abs", "a//b", "a\\\\..\\\\x", "%2e%2e/x", "a/./b"] {
        let body = format!(r#"{{"destination_connector_id":"{connector_id}","destination_subpath":"{sub}"}}"#);
        let (s, err) = call(&a, "POST", &format!("/api/v2/exports/index/{index_id}"), Some(&body));
        assert_eq!(s, 422, "{sub}: {err}");
        assert_eq!(err["error"]["details"]["field"], "destination_subpath", "{sub}: {err}");
    }
}
