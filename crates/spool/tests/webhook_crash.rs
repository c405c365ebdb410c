//! Webhook deliveries under SIGKILL: an import raises `media.created` for each of a few hundred
//! files while the server is killed at least 10 times (timed on the deliveries received, so the
//! test does not depend on speed) and restarted. At the end every delivery the log holds is
//! delivered, the receiver got each at least once (none lost), and the number sent twice (at
//! least once, by design) is counted and printed.

mod common;

use common::*;
use std::time::{Duration, Instant};

const FILES: usize = 300;
const KILLS_MIN: usize = 10;

fn call(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (s, b) = request(addr, method, path, Some(ADMIN_KEY), body).unwrap();
    (s, if b.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&b).unwrap_or_default() })
}

#[test]
fn deliveries_survive_repeated_sigkill_none_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = tmp.path().join("roots");
    let videos = roots.join("v");
    std::fs::create_dir_all(&videos).unwrap();
    for i in 0..FILES {
        std::fs::write(videos.join(format!("clip{i:04}.wav")), spool_media::pcm_wav(format!("bytes {i}").as_bytes()))
            .unwrap();
    }
    let data = tmp.path().join("data");
    let envs = [
        ("RUST_LOG", "warn"),
        ("SPOOL_LOCAL_ROOTS", roots.to_str().unwrap()),
        ("SPOOL_WEBHOOK_ALLOW_HOSTS", "127.0.0.1"),
        ("SPOOL_WEBHOOK_RETRY_SCHEDULE", "0s,1s,1s,1s,1s,1s,1s,1s"),
        ("SPOOL_IMPORT_CONCURRENCY", "4"),
    ];
    let (url, seen) = receiver();
    let mut server = start_with(&data, &envs);
    let a = server.addr.clone();
    let (_, idx) = call(&a, "POST", "/api/v2/indexes", Some(r#"{"name":"hooks"}"#));
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    let body = format!(r#"{{"name":"hook","url":"{url}","events":["media.created"]}}"#);
    let (s, wh) = call(&a, "POST", "/api/v2/webhooks", Some(&body));
    assert_eq!(s, 201, "{wh}");
    let webhook_id = wh["webhook_id"].as_str().unwrap().to_string();
    let body = format!(r#"{{"name":"local","root":"{}"}}"#, videos.display());
    let (_, conn) = call(&a, "POST", "/api/v2/connectors/local", Some(&body));
    let body = format!(
        r#"{{"connector_id":"{}","index_id":"{index_id}","file_pattern":"*.wav"}}"#,
        conn["connector_id"].as_str().unwrap()
    );
    let (s, job) = call(&a, "POST", "/api/v2/import-jobs", Some(&body));
    assert_eq!(s, 202, "{job}");

    let thresholds: Vec<usize> = (1..=KILLS_MIN + 1).map(|k| k * FILES / (KILLS_MIN + 3)).collect();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while kills < thresholds.len() {
        assert!(Instant::now() < deadline, "stuck after {kills} kills");
        let received = seen.lock().unwrap().len();
        if received >= FILES {
            break;
        }
        if received >= thresholds[kills] {
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            kills += 1;
            server = start_with(&data, &envs);
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(kills >= KILLS_MIN, "only {kills} kills before every delivery arrived");
    let a = server.addr.clone();
    // Everything the log holds is delivered in the end.
    let delivered_ids: Vec<String> = loop {
        assert!(Instant::now() < deadline, "the deliveries did not all arrive");
        let (_, ds) = call(&a, "GET", &format!("/api/v2/webhooks/{webhook_id}/deliveries?limit=1000"), None);
        let ds = ds.as_array().cloned().unwrap_or_default();
        if ds.len() == FILES && ds.iter().all(|d| d["status"] == "delivered") {
            break ds.iter().map(|d| d["delivery_id"].as_str().unwrap().to_string()).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let seen = seen.lock().unwrap().clone();
    let lost: Vec<&String> = delivered_ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(lost.is_empty(), "deliveries the receiver never got: {lost:?}");
    let invented: Vec<&String> = seen.keys().filter(|id| !delivered_ids.contains(id)).collect();
    assert!(invented.is_empty(), "requests for deliveries the log does not hold: {invented:?}");
    let twice: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "webhook crash test: {kills} kills, {} deliveries, {twice} sent more than once, {} lost",
        delivered_ids.len(),
        lost.len()
    );
    sigterm(&server.child);
    assert!(server.child.wait().unwrap().success());
}
