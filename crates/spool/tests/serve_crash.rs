//! The server under SIGKILL: clients create indexes while the server is killed at random
//! moments; after each restart every index whose creation was acknowledged is there. The
//! last round stops the server with SIGTERM, which must drain and exit cleanly, and then
//! `spool verify` must find the log clean.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: u32 = 6;
const CLIENTS: usize = 8;

fn index_ids(addr: &str) -> BTreeMap<String, String> {
    let (status, body) = request(addr, "GET", "/api/v2/indexes", Some(ADMIN_KEY), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| (i["index_id"].as_str().unwrap().to_string(), i["name"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn acknowledged_indexes_survive_sigkill_and_sigterm_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut rng = 0x1234_5678_u64;
    for round in 0..ROUNDS {
        let mut server = start(&data);
        // Everything acknowledged so far is there.
        let present = index_ids(&server.addr);
        for (id, name) in acked.lock().unwrap().iter() {
            assert_eq!(present.get(id), Some(name), "round {round}: acknowledged index {id} lost");
        }
        if round == 0 {
            // An offline tool refuses the held data directory with exit code 2.
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
                .args(["log", "show", "--data-dir"])
                .arg(&data)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stderr).contains("held by a running server"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (addr, acked, stop) = (server.addr.clone(), acked.clone(), stop.clone());
            clients.push(std::thread::spawn(move || {
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
                        Ok((503, _)) => {}
                        Ok((status, resp)) => panic!("unexpected {status}: {resp}"),
                        Err(_) => {}
                    }
                }
            }));
        }
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(150 + (rng >> 33) % 400));
        let last = round == ROUNDS - 1;
        if last {
            sigterm(&server.child);
            let status = server.child.wait().unwrap();
            assert!(status.success(), "SIGTERM must drain and exit 0, got {status}");
        } else {
            server.child.kill().unwrap();
            server.child.wait().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
    }
    let total = acked.lock().unwrap().len();
    assert!(total > 50, "only {total} acknowledged creations; the test proved little");
    let mut server = start(&data);
    let present = index_ids(&server.addr);
    for (id, name) in acked.lock().unwrap().iter() {
        assert_eq!(present.get(id), Some(name), "acknowledged index {id} lost after the last restart");
    }
    sigterm(&server.child);
    assert!(server.child.wait().unwrap().success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{ROUNDS} rounds, {total} acknowledged indexes, all present; verify clean");
}
