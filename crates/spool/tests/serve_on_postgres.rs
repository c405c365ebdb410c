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
}

/// A second server on the same database takes partition 0 over (its epoch moves on): the
/// first one's next write is refused inside its append transaction, and the second one has
/// every index the first acknowledged.
#[test]
fn a_second_server_takes_the_partition_and_the_first_can_no_longer_write() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    // Both nodes unwrap the same data keys: the same master key.
    std::fs::create_dir_all(&a_dir).unwrap();
    let mut a = start_with(&a_dir, &[("SPOOL_LOG_URL", &url)]);
    let (status, created) = call(&a.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"from-a"}"#));
    assert_eq!(status, 201, "{created}");
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::copy(a_dir.join("master.key"), b_dir.join("master.key")).unwrap();
    let mut b = start_with(&b_dir, &[("SPOOL_LOG_URL", &url)]);
    let on_b = index_ids(&b.addr);
    assert_eq!(on_b.get(created["index_id"].as_str().unwrap()).map(String::as_str), Some("from-a"));
    let (status, refused) = call(&a.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"late-from-a"}"#));
    assert_ne!(status, 201, "a fenced node acknowledged a write: {refused}");
    let (status, created_b) = call(&b.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"from-b"}"#));
    assert_eq!(status, 201, "{created_b}");
    let names: Vec<String> = index_ids(&b.addr).into_values().collect();
    assert!(names.contains(&"from-b".to_string()) && !names.contains(&"late-from-a".to_string()), "{names:?}");
    a.child.kill().unwrap();
    b.child.kill().unwrap();
    let _ = (a.child.wait(), b.child.wait());
}
