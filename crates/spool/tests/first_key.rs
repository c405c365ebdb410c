//! The first admin key of a new data directory is printed once, on its own marked line, and
//! works; the message of an offline tool against a held data directory points to routes that
//! exist.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn first_admin_key_is_printed_on_its_own_marked_line_and_the_held_dir_message_names_real_routes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log_path = tmp.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(&data)
        .env_remove("SPOOL_API_KEY")
        .env_remove("SPOOL_MASTER_KEY")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let key = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if let Some(i) = lines.iter().position(|l| l.starts_with("SPOOL_FIRST_ADMIN_KEY=")) {
            // The line is the key alone, between two marker lines.
            assert!(lines[i - 1].starts_with("==== spool: first admin API key"), "{text}");
            assert_eq!(lines[i + 1], "====", "{text}");
            break lines[i]["SPOOL_FIRST_ADMIN_KEY=".len()..].to_string();
        }
        assert!(Instant::now() < deadline, "no first admin key printed:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(key.starts_with("sk_live_") && !key.contains(' '), "{key:?}");
    let (status, body) = common::request(&addr, "GET", "/api/v2/api-keys", Some(&key), None).unwrap();
    assert_eq!(status, 200, "{body}");

    // An offline tool refuses the held directory and points to `/api/v2/api-keys`, which exists.
    let out =
        Command::new(env!("CARGO_BIN_EXE_spool")).args(["keys", "list", "--data-dir"]).arg(&data).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("/api/v2/api-keys"), "{msg}");
    assert!(!msg.contains("admin routes"), "{msg}");

    common::sigterm(&child);
    assert!(child.wait().unwrap().success());
    // The key is printed once: a restart prints none.
    let mut restart = common::start(&data);
    common::sigterm(&restart.child);
    restart.child.wait().unwrap();
    let again = common::server_log(&data);
    assert!(!again.contains("SPOOL_FIRST_ADMIN_KEY"), "{again}");
}
