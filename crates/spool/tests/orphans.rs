//! The start-up sweep of files no recorded event names: a media file whose copy finished but
//! whose outcome a crash cut off (a debug failpoint aborts the server right after the copy),
//! a staged upload no job names and an export artifact no export names are removed when the
//! server starts again, and counted in one log line; the media of imported videos and the
//! artifact of a recorded export are kept.
#![allow(clippy::disallowed_methods)] // tests read their environment
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = files_under(dir);
    out.sort();
    out
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn orphans_are_swept_at_start_up_and_what_events_name_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("src");
    let src2 = tmp.path().join("src2");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&src2).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(src.join("kept.wav"), spool_media::pcm_wav(&[7u8; 8_000])).unwrap();
    let roots = format!("{}:{}:{}", src.display(), src2.display(), out.display());
    let quiet = [("RUST_LOG", "warn"), ("SPOOL_LOCAL_ROOTS", roots.as_str())];

    // A recorded import and a recorded export: what the sweep must keep.
    let server = start_with(&data, &quiet);
    let a = server.addr.clone();
    let (_, idx) = call(&a, "POST", "/api/v2/indexes", Some(r#"{"name":"library"}"#));
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    let (s, local) =
        call(&a, "POST", "/api/v2/connectors/local", Some(&format!(r#"{{"name":"src","root":"{}"}}"#, src.display())));
    assert_eq!(s, 201, "{local}");
    let connector = local["connector_id"].as_str().unwrap().to_string();
    let job = |addr: &str, connector: &str| {
        let body = format!(r#"{{"connector_id":"{connector}","index_id":"{index_id}","file_pattern":"*.wav"}}"#);
        let (s, job) = call(addr, "POST", "/api/v2/import-jobs", Some(&body));
        assert_eq!(s, 202, "{job}");
        job["job_id"].as_str().unwrap().to_string()
    };
    let first = job(&a, &connector);
    until("the first import", || {
        call(&a, "GET", &format!("/api/v2/import-jobs/{first}"), None).1["status"] == "completed"
    });
    let (s, dest) = call(
        &a,
        "POST",
        "/api/v2/connectors/local",
        Some(&format!(r#"{{"name":"out","root":"{}","scopes":["export"]}}"#, out.display())),
    );
    assert_eq!(s, 201, "{dest}");
    let body = format!(r#"{{"destination_connector_id":"{}"}}"#, dest["connector_id"].as_str().unwrap());
    let (s, export) = call(&a, "POST", &format!("/api/v2/exports/index/{index_id}"), Some(&body));
    assert_eq!(s, 202, "{export}");
    let export_id = export["export_id"].as_str().unwrap().to_string();
    let (s, second_src) = call(
        &a,
        "POST",
        "/api/v2/connectors/local",
        Some(&format!(r#"{{"name":"src2","root":"{}"}}"#, src2.display())),
    );
    assert_eq!(s, 201, "{second_src}");
    let connector2 = second_src["connector_id"].as_str().unwrap().to_string();
    until("the export", || call(&a, "GET", &format!("/api/v2/exports/{export_id}"), None).1["status"] == "completed");
    sigterm(&server.child);
    drop(server);
    let media = data.join("media");
    let kept_media = files(&media);
    assert_eq!(kept_media.len(), 1, "{kept_media:?}");
    let artifact = data.join("exports").join(format!("{export_id}.json"));
    assert!(artifact.exists());

    // A copy that finishes and is not recorded: the server aborts right after it (debug
    // builds), leaving a media file no event names.
    std::fs::write(src2.join("cut.wav"), spool_media::pcm_wav(&[9u8; 8_000])).unwrap();
    let aborting =
        [("RUST_LOG", "warn"), ("SPOOL_LOCAL_ROOTS", roots.as_str()), ("SPOOL_FAILPOINTS", "import_abort_after_copy")];
    let mut server = start_with(&data, &aborting);
    let second = job(&server.addr, &connector2);
    let status = server.child.wait().unwrap();
    assert!(!status.success(), "the failpoint did not abort the server");
    let after_crash = files(&media);
    assert_eq!(after_crash.len(), 2, "the cut copy is not there: {after_crash:?}");
    let orphan_media = after_crash.iter().find(|p| !kept_media.contains(p)).unwrap().clone();

    // A staged upload no job names and an artifact no export names, planted.
    let staged = data.join("uploads").join("up_01KAV9FTZ80000000000000099.bin");
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(&staged, b"half an upload").unwrap();
    let stray = data.join("exports").join("exp_01KAV9FTZ80000000000000098.json");
    std::fs::write(&stray, b"{}").unwrap();

    let before = server_log(&data).len();
    let server = start_with(&data, &[("RUST_LOG", "info"), ("SPOOL_LOCAL_ROOTS", roots.as_str())]);
    let log = server_log(&data)[before..].to_string();
    let line = log.lines().find(|l| l.contains("start-up sweep")).unwrap_or_else(|| panic!("no sweep line in:\n{log}"));
    assert!(line.contains("removed 1 media files, 1 staged uploads and 1 export artifacts"), "{line}");
    assert!(!staged.exists() && !stray.exists());
    // Kept: what recorded events name.
    assert!(artifact.exists(), "the recorded export's artifact was removed");
    assert!(kept_media.iter().all(|p| p.exists()), "an imported video's media was removed");
    // The cut file's attempt is begun again: imported once, at the same path.
    let a = server.addr.clone();
    until("the second import", || {
        call(&a, "GET", &format!("/api/v2/import-jobs/{second}"), None).1["status"] == "completed"
    });
    let (_, j) = call(&a, "GET", &format!("/api/v2/import-jobs/{second}"), None);
    assert_eq!(j["progress"]["imported"], 1, "{j}");
    let now = files(&media);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&orphan_media));
}
