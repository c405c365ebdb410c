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

/// `/healthz` within a short wait: `None` if it does not answer 200.
fn health(addr: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let sock = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(300)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

/// The node at `addr` holds the partition (its `/healthz` says `"role": "holder"`).
fn holds(addr: &str) -> bool {
    health(addr).is_some_and(|h| h["role"] == "holder")
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

/// How long until the node at `addr` holds the partition (`None`: not within `within`).
fn wait_holder(addr: &str, within: Duration) -> Option<Duration> {
    let began = std::time::Instant::now();
    while began.elapsed() < within {
        if holds(addr) {
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
    // Three lease times: the holder renews, the standby waits (and forwards).
    assert!(wait_holder(&b.addr, Duration::from_secs(6)).is_none(), "the standby took a held partition");
    let via_b = health(&b.addr).expect("the standby answers /healthz");
    assert_eq!((&via_b["role"], &via_b["status"]), (&"forwarding".into(), &"ok".into()), "{via_b}");
    let (status, more) = call(&a.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"from-a-2"}"#));
    assert_eq!(status, 201, "the holder kept the partition: {more}");
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let took = wait_holder(&b.addr, Duration::from_secs(30)).expect("the standby took the partition over");
    eprintln!(
        "takeover after SIGKILL: {:.2} s from the kill to the standby's /healthz saying it holds the partition (lease {LEASE})",
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
    wait_holder(&b.addr, Duration::from_secs(30)).expect("the standby took the partition over");
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

/// Any node answers any request: the nodes that do not hold the partition forward writes, reads
/// and admin calls to the one that does, an idempotency key holds across nodes, and SIGTERM of
/// the holder hands the partition over at once (well within its 10 s lease) with everything
/// written through any node.
#[test]
fn every_node_answers_and_sigterm_hands_the_partition_over() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<std::path::PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let d = tmp.path().join(n);
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    let env = [("SPOOL_LOG_URL", url.as_str()), ("SPOOL_LEASE_TTL", "10s")];
    let a = start_with(&dirs[0], &env);
    for d in &dirs[1..] {
        std::fs::copy(dirs[0].join("master.key"), d.join("master.key")).unwrap();
    }
    let b = start_with(&dirs[1], &env);
    let c = start_with(&dirs[2], &env);
    assert!(holds(&a.addr), "{:?}", health(&a.addr));
    for n in [&b, &c] {
        let h = health(&n.addr).unwrap();
        assert_eq!(h["role"], "forwarding", "{h}");
        assert_eq!(h["holder"], health(&a.addr).unwrap()["node_id"], "{h}");
    }
    for (i, n) in [&a, &b, &c].into_iter().enumerate() {
        let (status, created) = call(&n.addr, "POST", "/api/v2/indexes", Some(&format!(r#"{{"name":"via-{i}"}}"#)));
        assert_eq!(status, 201, "through node {i}: {created}");
    }
    for n in [&a, &b, &c] {
        let names: Vec<String> = index_ids(&n.addr).into_values().collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
    // One idempotency key, sent through two forwarding nodes: one index.
    let once = |addr: &str| {
        let (status, body) = request_h(
            addr,
            "POST",
            "/api/v2/indexes",
            Some(ADMIN_KEY),
            Some(r#"{"name":"once"}"#),
            &[("Idempotency-Key", "k-across-nodes")],
        )
        .unwrap();
        assert_eq!(status, 201, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["index_id"].as_str().unwrap().to_string()
    };
    assert_eq!(once(&b.addr), once(&c.addr));
    // An unknown route and a bad key answer in the envelope, through a forwarding node too.
    let (status, body) = request(&b.addr, "GET", "/api/v2/indexes", Some("sk_wrong"), None).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("request_id"), "{body}");
    // SIGTERM: the holder drains and hands the lease back; a forwarding node takes over.
    let began = std::time::Instant::now();
    sigterm(&a.child);
    let mut a = a;
    assert!(a.child.wait().unwrap().success());
    let new_holder = loop {
        if let Some(n) = [&b, &c].into_iter().find(|n| holds(&n.addr)) {
            break n;
        }
        assert!(
            began.elapsed() < Duration::from_secs(8),
            "no node took the partition within 8 s of SIGTERM (lease 10 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("handover after SIGTERM: {:.2} s (lease 10 s)", began.elapsed().as_secs_f64());
    let other = if std::ptr::eq(new_holder, &b) { &c } else { &b };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while health(&other.addr).is_none_or(|h| h["holder"] != health(&new_holder.addr).unwrap()["node_id"]) {
        assert!(std::time::Instant::now() < deadline, "{:?}", health(&other.addr));
        std::thread::sleep(Duration::from_millis(20));
    }
    let names: Vec<String> = index_ids(&other.addr).into_values().collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let (status, created) = call(&other.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"after"}"#));
    assert_eq!(status, 201, "{created}");
    let (status, cluster) = call(&other.addr, "GET", "/api/v2/admin/cluster", None);
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["nodes"].as_array().map(Vec::len), Some(3), "{cluster}");
    verify_clean(&url);
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

fn spool(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `spool migrate-log`: a redb server's log (events, an idempotency record, a webhook's data
/// key) copied into an empty PostgreSQL log and verified; a node started on it with the same data
/// directory has everything, replays the idempotency key, and unseals the webhook's secret. A
/// second migration into the same log is refused. The offline tools read the PostgreSQL log with
/// `--log` while that node serves.
#[test]
fn migrate_log_moves_a_redb_server_onto_postgres_and_the_offline_tools_read_it() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let allow = [("SPOOL_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")];
    let server = start_with(&dir, &allow);
    let idem = |addr: &str| {
        let (status, body) = request_h(
            addr,
            "POST",
            "/api/v2/indexes",
            Some(ADMIN_KEY),
            Some(r#"{"name":"kept"}"#),
            &[("Idempotency-Key", "k-migrated")],
        )
        .unwrap();
        assert_eq!(status, 201, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["index_id"].as_str().unwrap().to_string()
    };
    let index = idem(&server.addr);
    let (status, hook) = call(
        &server.addr,
        "POST",
        "/api/v2/webhooks",
        Some(r#"{"name":"h","url":"http://127.0.0.1:9/hook","events":["media.created"]}"#),
    );
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["webhook_id"].as_str().or(hook["id"].as_str()).unwrap().to_string();
    sigterm(&server.child);
    let mut server = server;
    assert!(server.child.wait().unwrap().success());

    let d = dir.to_str().unwrap();
    let (ok, text) = spool(&["migrate-log", "--data-dir", d, "--to", &url]);
    assert!(ok && text.contains("verified event by event"), "{text}");
    let (ok, again) = spool(&["migrate-log", "--data-dir", d, "--to", &url]);
    assert!(!ok && again.contains("not empty"), "{again}");
    verify_clean(&url);

    let node = start_with(&dir, &[("SPOOL_LOG_URL", &url), allow[0]]);
    assert!(holds(&node.addr));
    assert_eq!(idem(&node.addr), index, "the idempotency record came along");
    let (status, tested) = call(&node.addr, "POST", &format!("/api/v2/webhooks/{hook_id}/test"), Some("{}"));
    assert_eq!(status, 200, "the webhook's secret is unsealed on the new log: {tested}");

    let (ok, shown) = spool(&["log", "show", "--log", &url, "--data-dir", "/nonexistent"]);
    assert!(ok && shown.contains("IndexCreated") && shown.contains(&index), "{shown}");
    let (ok, replayed) = spool(&["replay", "--log", &url, &index]);
    assert!(ok && replayed.contains("kept"), "{replayed}");
    let file = tmp.path().join("i.bundle");
    let (ok, bundled) = spool(&["bundle", &index, "--log", &url, "--out", file.to_str().unwrap()]);
    assert!(ok, "{bundled}");
    let (ok, from_bundle) = spool(&["replay", "--bundle", file.to_str().unwrap()]);
    assert!(ok && from_bundle.contains("kept"), "{from_bundle}");
    // The node kept its partition through all of it (the tools take no lease).
    let (status, _) = call(&node.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"after-tools"}"#));
    assert_eq!(status, 201);
}

/// The shared store of these tests: a new bucket of s3s-fs (a folder of its root) and the
/// settings that point a node at it (`SPOOL_MEDIA_URL` and its keys).
fn shared_store() -> (std::path::PathBuf, Vec<(String, String)>) {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}: start scripts/storage-servers.sh"));
    let bucket = format!("shared-{}", ulid::Ulid::new().to_string().to_lowercase());
    let dir = std::path::Path::new(&env("SPOOL_TEST_S3S_ROOT")).join(&bucket);
    std::fs::create_dir_all(&dir).unwrap();
    let envs = vec![
        ("SPOOL_MEDIA_URL".to_string(), format!("s3://{bucket}/files?endpoint={}", env("SPOOL_TEST_S3S_ENDPOINT"))),
        ("AWS_ACCESS_KEY_ID".to_string(), env("SPOOL_TEST_S3S_ACCESS_KEY")),
        ("AWS_SECRET_ACCESS_KEY".to_string(), env("SPOOL_TEST_S3S_SECRET_KEY")),
    ];
    (dir.join("files"), envs)
}

/// Media and an export artifact made by a holder that is then SIGKILLed are served by the node
/// that takes over, from the shared store (each node has a data directory of its own): a range
/// of the media through a signed URL, the artifact's download with its recorded size and hash.
#[test]
fn files_of_a_killed_holder_are_served_by_the_next_from_the_shared_store() {
    use sha2::Digest;
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = two_nodes(tmp.path());
    let source = tmp.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    let samples: Vec<u8> = (0..16_000u32).map(|j| u8::try_from(j % 251).unwrap()).collect();
    let wav = spool_media::pcm_wav(&samples);
    std::fs::write(source.join("clip.wav"), &wav).unwrap();
    let (shared_dir, shared) = shared_store();
    let master = spool_runtime::MasterKey::generate().to_base64();
    let roots = source.display().to_string();
    let mut envs: Vec<(&str, &str)> = vec![
        ("SPOOL_LOG_URL", &url),
        ("SPOOL_LEASE_TTL", LEASE),
        ("SPOOL_MASTER_KEY", &master),
        ("SPOOL_LOCAL_ROOTS", &roots),
    ];
    envs.extend(shared.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut a = start_with(&a_dir, &envs);
    let (_, idx) = call(&a.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"shared"}"#));
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    let body = format!(r#"{{"name":"src","root":"{roots}"}}"#);
    let (s, conn) = call(&a.addr, "POST", "/api/v2/connectors/local", Some(&body));
    assert_eq!(s, 201, "{conn}");
    let body = format!(
        r#"{{"connector_id":"{}","index_id":"{index_id}","file_pattern":"*.wav"}}"#,
        conn["connector_id"].as_str().unwrap()
    );
    let (s, job) = call(&a.addr, "POST", "/api/v2/import-jobs", Some(&body));
    assert_eq!(s, 202, "{job}");
    let job_path = format!("/api/v2/import-jobs/{}", job["job_id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while call(&a.addr, "GET", &job_path, None).1["status"] != "completed" {
        assert!(std::time::Instant::now() < deadline, "the import did not complete");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (s, created) = call(&a.addr, "POST", &format!("/api/v2/exports/index/{index_id}"), None);
    assert_eq!(s, 202, "{created}");
    let export_path = format!("/api/v2/exports/{}", created["export_id"].as_str().unwrap());
    let export = loop {
        let (_, e) = call(&a.addr, "GET", &export_path, None);
        if e["status"] == "completed" {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "the export did not complete: {e}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The files are in the shared store; a's data directory keeps no media.
    let stored: Vec<_> = files_under(&shared_dir.join("media"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(std::fs::read(&stored[0]).unwrap(), wav);
    assert_eq!(files_under(&shared_dir.join("exports")).len(), 1);
    assert!(files_under(&a_dir.join("media")).is_empty() && files_under(&a_dir.join("scratch")).is_empty());

    let mut b = start_with(&b_dir, &envs);
    a.child.kill().unwrap();
    let _ = a.child.wait();
    assert!(wait_holder(&b.addr, Duration::from_secs(30)).is_some(), "b did not take over");
    let (_, videos) = call(&b.addr, "GET", &format!("/api/v2/indexes/{index_id}/videos"), None);
    let uri = videos["data"][0]["video_uri"].as_str().unwrap().to_string();
    let (s, signed) = call(&b.addr, "POST", "/api/v2/videos/signed-url", Some(&format!(r#"{{"gcs_uri":"{uri}"}}"#)));
    assert_eq!(s, 200, "{signed}");
    let signed = signed["signed_url"].as_str().unwrap();
    let media_path = &signed[signed.find("/media/").unwrap()..];
    let (s, whole) = get_bytes(&b.addr, media_path).unwrap();
    assert_eq!((s, whole == wav), (200, true), "the whole media from the shared store");
    let (s, part) = get_bytes_h(&b.addr, media_path, &[("Range", "bytes=100-1099")]).unwrap();
    assert_eq!((s, part.as_slice()), (206, &wav[100..1100]), "a range of the media from the shared store");
    let (s, artifact) = get_bytes_h(&b.addr, &format!("{export_path}/download"), &[("X-API-Key", ADMIN_KEY)]).unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&artifact));
    assert_eq!(export["file_size_bytes"].as_u64(), Some(artifact.len() as u64));
    assert_eq!(export["sha256"].as_str().unwrap(), hex::encode(sha2::Sha256::digest(&artifact)));
    // Deleting the index on b removes its media from the shared store.
    let (s, _) = call(&b.addr, "DELETE", &format!("/api/v2/indexes/{index_id}"), None);
    assert!(s == 200 || s == 202 || s == 204, "{s}");
    while !files_under(&shared_dir.join("media")).is_empty() {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(30), "the media outlived its index");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.child.kill().unwrap();
    let _ = b.child.wait();
}

/// A node whose shared store cannot be written (here: a bucket that does not exist) refuses to
/// start and says why.
#[test]
fn a_node_whose_shared_store_cannot_be_written_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, mut shared) = shared_store();
    shared[0].1 = shared[0].1.replacen("s3://shared-", "s3://missing-", 1);
    let envs: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = serve_command(&tmp.path().join("data"), &format!("127.0.0.1:{}", free_port()), &envs).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a node started on a store it cannot write");
    assert!(text.contains("SPOOL_MEDIA_URL") && text.contains("cannot be written"), "{text}");
    assert!(!text.contains(&shared[2].1), "the secret key reached the output: {text}");
}
