//! `spool serve --log postgres://…` (one node, partition 0): what clients were told is
//! durable survives SIGKILL of the server, on the tests' PostgreSQL (`scripts/pg.sh`); a second
//! server on the same database takes the partition over and the first can no longer write.
#![allow(clippy::disallowed_methods)] // the tests' PostgreSQL is named by SPOOL_TEST_PG_URL

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn database() -> String {
    let admin = std::env::var("SPOOL_TEST_PG_URL")
        .expect("SPOOL_TEST_PG_URL: start PostgreSQL with scripts/pg.sh start DIR and source DIR/pg-env");
    let name = format!("serve_{}", ulid::Ulid::new().to_string().to_lowercase());
    spool_log::create_database(&admin, &name).unwrap()
}

/// `spool verify --log URL`: every record decodes, no gap, the stream index agrees.
fn verify_clean(url: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool")).args(["verify", "--log", url]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("ok: every record decodes"), "{text}");
    assert!(!text.contains("s3cret"), "the password reached verify's output: {text}");
}

fn index_ids(addr: &str) -> BTreeMap<String, String> {
    let (status, list) = call(addr, "GET", "/api/v2/indexes", None);
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| (i["index_id"].as_str().unwrap().to_string(), i["name"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn acknowledged_indexes_survive_sigkill_on_a_postgres_log() {
    // A password in the URL (the tests' server trusts loopback and ignores it) must never
    // reach the server's output.
    let url = database().replacen("postgres://postgres@", "postgres://postgres:s3cret@", 1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    for round in 0..3 {
        let mut server = start_with(&data, &[("SPOOL_LOG_URL", &url)]);
        let present = index_ids(&server.addr);
        for (id, name) in acked.lock().unwrap().iter() {
            assert_eq!(present.get(id), Some(name), "round {round}: acknowledged index {id} lost");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (addr, acked, stop) = (server.addr.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let name = format!("r{round}-c{c}-n{n}");
                        n += 1;
                        let body = format!("{{\"name\":\"{name}\"}}");
                        match request(&addr, "POST", "/api/v2/indexes", Some(ADMIN_KEY), Some(&body)) {
                            Ok((201, resp)) => {
                                let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
                                acked.lock().unwrap().insert(v["index_id"].as_str().unwrap().to_string(), name);
                            }
                            Ok((503, _)) | Err(_) => {}
                            Ok((status, resp)) => panic!("unexpected {status}: {resp}"),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        server.child.kill().unwrap();
        let _ = server.child.wait();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
    }
    let server = start_with(&data, &[("SPOOL_LOG_URL", &url)]);
    let present = index_ids(&server.addr);
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 10, "only {} creations were acknowledged", acked.len());
    for (id, name) in acked.iter() {
        assert_eq!(present.get(id), Some(name), "acknowledged index {id} lost");
    }
    assert!(!server_log(&data).contains("s3cret"), "no password in the server log");
    verify_clean(&url);
    // A damaged record is found (verify is not a test that cannot fail).
    drop(server);
    let damaged = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-q",
            "-c",
            "UPDATE spool_events SET record = '\\x0100ff' WHERE partition = 0 AND seq = 2",
        ])
        .status()
        .unwrap();
    assert!(damaged.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool")).args(["verify", "--log", &url]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("decode error: seq 2"), "{text}");
}

/// `/healthz` answers 200 within a short wait (a standby's listener is bound but does not
/// answer until it holds the partition).
fn healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(sock) = addr.parse() else { return false };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(300)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    if s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

/// A node that is not the holder: started without waiting for it (it waits for the lease).
fn start_standby(dir: &std::path::Path, url: &str) -> Server {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log")).unwrap();
    let child = serve_command(dir, &addr, &[("SPOOL_LOG_URL", url), ("SPOOL_LEASE_TTL", LEASE)])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Server { child, addr }
}

const LEASE: &str = "2s";

/// Two nodes whose data directories share the master key (both unwrap the same data keys).
fn two_nodes(tmp: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    (a, b)
}

fn wait_healthy(addr: &str, within: Duration) -> Option<Duration> {
    let began = std::time::Instant::now();
    while began.elapsed() < within {
        if healthy(addr) {
            return Some(began.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A standby does not take the partition while its holder renews the lease; when the holder is
/// SIGKILLed it takes over within the lease's time and has everything the holder acknowledged.
#[test]
fn a_standby_takes_the_partition_over_when_its_holder_is_killed() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = two_nodes(tmp.path());
    let mut a = start_with(&a_dir, &[("SPOOL_LOG_URL", &url), ("SPOOL_LEASE_TTL", LEASE)]);
    let (status, created) = call(&a.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"from-a"}"#));
    assert_eq!(status, 201, "{created}");
    std::fs::copy(a_dir.join("master.key"), b_dir.join("master.key")).unwrap();
    let mut b = start_standby(&b_dir, &url);
    // Three lease times: the holder renews, the standby waits.
    assert!(wait_healthy(&b.addr, Duration::from_secs(6)).is_none(), "the standby took a held partition");
    let (status, more) = call(&a.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"from-a-2"}"#));
    assert_eq!(status, 201, "the holder kept the partition: {more}");
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let took = wait_healthy(&b.addr, Duration::from_secs(30)).expect("the standby took the partition over");
    eprintln!(
        "takeover after SIGKILL: {:.2} s from the kill to the standby's first /healthz 200 (lease {LEASE})",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(2 + 5), "takeover took {took:?}");
    let names: Vec<String> = index_ids(&b.addr).into_values().collect();
    assert!(names.contains(&"from-a".to_string()) && names.contains(&"from-a-2".to_string()), "{names:?}");
    let (status, created_b) = call(&b.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"from-b"}"#));
    assert_eq!(status, 201, "{created_b}");
    // `spool cluster status` against the new holder: partition 0 is its, at a later epoch.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["cluster", "status", "--json", "--server", &format!("http://{}", b.addr)])
        .env("SPOOL_API_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["log"], "postgres");
    let p0 = &status["partitions"][0];
    assert_eq!((p0["partition"].as_i64(), p0["held_here"].as_bool()), (Some(0), Some(true)), "{status}");
    assert!(p0["epoch"].as_u64().unwrap() >= 2 && p0["lease_expires_in_ms"].as_i64().unwrap() > 0, "{status}");
    assert_eq!(p0["owner"], status["node_id"]);
    b.child.kill().unwrap();
    let _ = b.child.wait();
}

/// Split brain: the holder is paused (SIGSTOP) past its lease, the standby takes over and
/// writes; resumed (SIGCONT), the old holder's next write is refused, it exits with code 3, and
/// nothing it was asked after the takeover is in the log.
#[test]
fn a_holder_paused_past_its_lease_is_refused_and_exits() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = two_nodes(tmp.path());
    let mut a = start_with(&a_dir, &[("SPOOL_LOG_URL", &url), ("SPOOL_LEASE_TTL", LEASE)]);
    let (status, _) = call(&a.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"from-a"}"#));
    assert_eq!(status, 201);
    std::fs::copy(a_dir.join("master.key"), b_dir.join("master.key")).unwrap();
    let mut b = start_standby(&b_dir, &url);
    let pid = a.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    wait_healthy(&b.addr, Duration::from_secs(30)).expect("the standby took the partition over");
    let (status, created_b) = call(&b.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"from-b"}"#));
    assert_eq!(status, 201, "{created_b}");
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let late = request(&a.addr, "POST", "/api/v2/indexes", Some(ADMIN_KEY), Some(r#"{"name":"late-from-a"}"#));
    assert!(!matches!(late, Ok((201, _))), "the paused holder acknowledged a write after the takeover: {late:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(std::time::Instant::now() < deadline, "the old holder did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(3), "{}", server_log(&a_dir));
    let names: Vec<String> = index_ids(&b.addr).into_values().collect();
    assert!(names.contains(&"from-a".to_string()) && names.contains(&"from-b".to_string()), "{names:?}");
    assert!(!names.contains(&"late-from-a".to_string()), "{names:?}");
    verify_clean(&url);
    b.child.kill().unwrap();
    let _ = b.child.wait();
}

/// Every node must unwrap the same data keys: a node whose master key is not the cluster's
/// refuses to start, saying so, instead of serving without being able to read credentials.
#[test]
fn a_node_with_another_master_key_refuses_to_start() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = two_nodes(tmp.path());
    let mut a = start_with(&a_dir, &[("SPOOL_LOG_URL", &url), ("SPOOL_LEASE_TTL", LEASE)]);
    // A webhook: its secret is sealed with a data key wrapped by a's master key.
    let (status, hook) = call(
        &a.addr,
        "POST",
        "/api/v2/webhooks",
        Some(r#"{"name":"h","url":"https://example.com/hook","events":["media.created"]}"#),
    );
    assert_eq!(status, 201, "{hook}");
    a.child.kill().unwrap();
    let _ = a.child.wait();
    // b has a master key of its own (made at its first start).
    let out = serve_command(
        &b_dir,
        &format!("127.0.0.1:{}", free_port()),
        &[("SPOOL_LOG_URL", &url), ("SPOOL_LEASE_TTL", LEASE)],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a node with another master key started");
    assert!(text.contains("the master key does not open"), "{text}");
}
