//! A running server's log, read through its admin routes: events from a position, one stream, a
//! workflow's bundle, and `spool log tail --server` following new events live (server-sent
//! events). Sealed values never leave the server: they read `"<sealed>"`.

mod common;
use common::{ADMIN_KEY, call, request, start};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_admin_routes_read_the_log_and_tail_follows_it_live() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(&tmp.path().join("data"));
    let (s, idx) = call(&server.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"first"}"#));
    assert_eq!(s, 201);
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    let body = r#"{"name":"s3","bucket":"bucket","region":"us-east-1","endpoint":"http://127.0.0.1:9","aws_access_key_id":"AKIAEXAMPLE","aws_secret_access_key":"very-secret-value"}"#;
    let (s, conn) = call(&server.addr, "POST", "/api/v2/connectors/s3", Some(body));
    assert_eq!(s, 201, "{conn}");

    let (s, log) = call(&server.addr, "GET", "/api/v2/admin/log?from=1&limit=50", None);
    assert_eq!(s, 200, "{log}");
    let kinds: Vec<&str> = log["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"IndexCreated") && kinds.contains(&"ConnectorCreated"), "{kinds:?}");
    let text = log.to_string();
    assert!(text.contains("<sealed>") && !text.contains("sealed.v1.") && !text.contains("very-secret-value"), "{text}");

    let (s, stream) = call(&server.addr, "GET", &format!("/api/v2/admin/streams/{index_id}"), None);
    assert_eq!(s, 200);
    assert_eq!(stream["events"].as_array().unwrap().len(), 1, "{stream}");
    let (s, raw) =
        request(&server.addr, "GET", &format!("/api/v2/admin/bundles/{index_id}"), Some(ADMIN_KEY), None).unwrap();
    assert_eq!(s, 200);
    let header: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["format"].as_str(), header["subject"].as_str()),
        (Some("spool.bundle.v1"), Some(index_id.as_str()))
    );
    // Without the admin scope: refused.
    let (s, _) = request(&server.addr, "GET", "/api/v2/admin/log", None, None).unwrap();
    assert_eq!(s, 401);

    // Live: the tail prints the events committed after it connects.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["log", "tail", "--server", &format!("http://{}", server.addr), "--kind", "IndexCreated", "--limit", "2"])
        .env("SPOOL_API_KEY", ADMIN_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for name in ["second", "third"] {
        let (s, _) = call(&server.addr, "POST", "/api/v2/indexes", Some(&format!(r#"{{"name":"{name}"}}"#)));
        assert_eq!(s, 201);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = tail.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the tail did not print the two new events");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    tail.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("IndexCreated") && lines[0].contains("second"), "{out}");
    assert!(lines[1].contains("third"), "{out}");
}
