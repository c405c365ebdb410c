//! Secrets at rest, end to end: planted secrets (an API key created through an idempotent
//! request, an S3 connector's secret) are found nowhere in clear: not in the data directory,
//! not in the server's output at trace level, not in any response, not in `spool log show`,
//! `spool replay` or `spool verify`. Deleting the connector shreds its data key and replay
//! still works; `spool keys rotate-master` re-wraps every key and the old master key then
//! opens nothing; a master key file readable by others is refused.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const PLANTED: &str = "PLANTED-aws-secret-9c1e7b2d44";

fn tool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("SPOOL_MASTER_KEY")
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn grep_dir(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            hits.extend(grep_dir(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn stop(mut server: Server) {
    sigterm(&server.child);
    assert!(server.child.wait().unwrap().success());
}

#[test]
fn planted_secrets_are_nowhere_in_clear_and_shredding_and_rotation_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let trace = [("RUST_LOG", "trace")];
    let server = start_with(&data, &trace);
    let a = server.addr.clone();
    let mut responses = Vec::new();

    // An API key created through an idempotent request: the stored answer holds the secret.
    let idem = [("Idempotency-Key", "planted-key-1")];
    let (s, first) = request_h(
        &a,
        "POST",
        "/api/v2/api-keys",
        Some(ADMIN_KEY),
        Some(r#"{"name":"planted","scopes":["read"]}"#),
        &idem,
    )
    .unwrap();
    assert_eq!(s, 201, "{first}");
    let key_secret = json(&first)["key"].as_str().unwrap().to_string();
    let (s, again) = request_h(
        &a,
        "POST",
        "/api/v2/api-keys",
        Some(ADMIN_KEY),
        Some(r#"{"name":"planted","scopes":["read"]}"#),
        &idem,
    )
    .unwrap();
    assert_eq!(
        (s, json(&again)["key"].as_str().unwrap()),
        (201, key_secret.as_str()),
        "the replay answers the same key"
    );
    let (s, _) = request(&a, "GET", "/api/v2/indexes", Some(&key_secret), None).unwrap();
    assert_eq!(s, 200, "the new key works");

    // An S3 connector whose secret is planted (its endpoint is a closed loopback port).
    let body = format!(
        r#"{{"name":"planted","bucket":"bkt","region":"us-east-1","aws_access_key_id":"AKIAPLANTED","aws_secret_access_key":"{PLANTED}","endpoint":"http://127.0.0.1:1","scopes":["import","export"]}}"#
    );
    let (s, created) = request(&a, "POST", "/api/v2/connectors/s3", Some(ADMIN_KEY), Some(&body)).unwrap();
    assert_eq!(s, 201, "{created}");
    let conn = json(&created)["connector_id"].as_str().unwrap().to_string();
    responses.push(created);
    let (s, tested) = request(&a, "POST", &format!("/api/v2/connectors/{conn}/test"), Some(ADMIN_KEY), None).unwrap();
    assert_eq!((s, json(&tested)["success"].as_bool()), (200, Some(false)), "{tested}");
    responses.push(tested);
    for path in ["/api/v2/connectors".to_string(), format!("/api/v2/connectors/{conn}"), "/api/v2/api-keys".into()] {
        responses.push(request(&a, "GET", &path, Some(ADMIN_KEY), None).unwrap().1);
    }
    stop(server);

    let mode = std::fs::metadata(data.join("master.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (ok, shown) = tool(&["log", "show", "--json"], &data);
    assert!(ok, "{shown}");
    assert!(shown.contains("ConnectorCreated") && shown.contains("sealed.v1."), "the event carries a sealed value");
    let (ok, replayed) = tool(&["replay", &conn], &data);
    assert!(ok, "{replayed}");
    let (ok, verified) = tool(&["verify"], &data);
    assert!(ok, "{verified}");
    for secret in [PLANTED, key_secret.as_str(), ADMIN_KEY] {
        assert_eq!(grep_dir(&data, secret), Vec::<String>::new(), "{secret} in clear in the data directory");
        assert!(!server_log(&data).contains(secret), "{secret} in the server's trace output");
        for text in responses.iter().chain([&shown, &replayed, &verified]) {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    // Deleting the connector shreds its data key; replay and verify still work.
    let server = start(&data);
    let (s, _) = request(&server.addr, "DELETE", &format!("/api/v2/connectors/{conn}"), Some(ADMIN_KEY), None).unwrap();
    assert_eq!(s, 200);
    stop(server);
    let (ok, replayed) = tool(&["replay", &conn], &data);
    assert!(ok, "{replayed}");
    assert!(replayed.contains("ConnectorDeleted") && replayed.contains("credentials: None"), "{replayed}");
    assert!(tool(&["verify"], &data).0);

    // Rotation: every data key re-wrapped; the old master key opens nothing.
    let old_master = std::fs::read_to_string(data.join("master.key")).unwrap();
    let (ok, rotated) = tool(&["keys", "rotate-master"], &data);
    assert!(ok, "{rotated}");
    let new_master = std::fs::read_to_string(data.join("master.key")).unwrap();
    assert_ne!(old_master, new_master);
    assert!(!rotated.contains(new_master.trim()), "rotate-master must not print the key");
    let port = free_port().to_string();
    let out = serve_command(&data, &format!("127.0.0.1:{port}"), &[("SPOOL_MASTER_KEY", old_master.trim())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("master key does not open"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = start(&data);
    let (s, replay) = request_h(
        &server.addr,
        "POST",
        "/api/v2/api-keys",
        Some(ADMIN_KEY),
        Some(r#"{"name":"planted","scopes":["read"]}"#),
        &idem,
    )
    .unwrap();
    assert_eq!(
        (s, json(&replay)["key"].as_str().unwrap()),
        (201, key_secret.as_str()),
        "sealed records open under the new master key"
    );
    stop(server);

    // A master key file readable by others is refused, with the fix in the message.
    std::fs::set_permissions(data.join("master.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = serve_command(&data, &format!("127.0.0.1:{port}"), &[]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"), "{}", String::from_utf8_lossy(&out.stderr));
}
