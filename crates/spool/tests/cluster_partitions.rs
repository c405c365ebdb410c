//! A partitioned cluster (`SPOOL_PARTITIONS=4`: a catalog and four index partitions) on three
//! nodes of one PostgreSQL log: the nodes share the five partitions; an index is made in an index
//! partition and carries it in its id, so every node answers it; the list through any node is
//! complete and oldest first; an idempotency key holds across nodes; a node SIGKILLed loses its
//! partitions to the others within the lease, one stopped with SIGTERM hands them over, and
//! nothing acknowledged is lost.
#![allow(clippy::disallowed_methods)] // the tests' PostgreSQL is named by SPOOL_TEST_PG_URL

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const MASTER: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

fn database() -> String {
    let admin = std::env::var("SPOOL_TEST_PG_URL")
        .expect("SPOOL_TEST_PG_URL: start PostgreSQL with scripts/pg.sh start DIR and source DIR/pg-env");
    let name = format!("parts_{}", ulid::Ulid::new().to_string().to_lowercase());
    spool_log::create_database(&admin, &name).unwrap()
}

/// The partitions a node says it holds (`None`: it does not answer).
fn held(addr: &str) -> Option<BTreeSet<i64>> {
    let (status, body) = request(addr, "GET", "/healthz", None, None).ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| v["held"].as_array().map(|a| a.iter().filter_map(|p| p.as_i64()).collect()))?
}

/// Wait until the nodes at `addrs` hold every partition between them, each at least one.
fn wait_shared(addrs: &[&str], within: Duration) -> Duration {
    let began = Instant::now();
    loop {
        let sets: Vec<BTreeSet<i64>> = addrs.iter().filter_map(|a| held(a)).collect();
        let all: BTreeSet<i64> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        if sets.len() == addrs.len() && all == (0..=4).collect() && total == 5 && sets.iter().all(|s| !s.is_empty()) {
            return began.elapsed();
        }
        assert!(began.elapsed() < within, "the partitions were not shared: {sets:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn partition_of(id: &str) -> u16 {
    spool_model::partition_of(id.split_once('_').unwrap().1.parse().unwrap())
}

/// An answer that is not a 503 (while a partition moves), within 30 s.
fn ask(addr: &str, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((status, text)) = request_h(addr, method, path, Some(ADMIN_KEY), body, headers)
            && status != 503
        {
            return (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null));
        }
        assert!(Instant::now() < deadline, "{method} {path} kept answering 503");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_nodes_share_the_partitions_and_answer_every_index() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("SPOOL_LOG_URL", url.as_str()),
        ("SPOOL_LEASE_TTL", "2s"),
        ("SPOOL_PARTITIONS", "4"),
        ("SPOOL_MASTER_KEY", MASTER),
        ("RUST_LOG", "info"),
    ];
    let dirs: Vec<std::path::PathBuf> = (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let mut nodes: Vec<Option<Server>> = dirs.iter().map(|d| Some(start_with(d, &env))).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.as_ref().unwrap().addr.clone()).collect();
    let took = wait_shared(&addrs.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(60));
    eprintln!("three nodes shared the five partitions {:.2} s after the last started", took.as_secs_f64());

    // Indexes through every node, each in an index partition named by its id.
    let mut made = Vec::new();
    for i in 0..12 {
        let (status, idx) =
            ask(&addrs[i % 3], "POST", "/api/v2/indexes", Some(&format!(r#"{{"name":"i-{i:02}"}}"#)), &[]);
        assert_eq!(status, 201, "{idx}");
        let id = idx["index_id"].as_str().unwrap().to_string();
        assert!((1..=4).contains(&partition_of(&id)), "{id} is not in an index partition");
        made.push(id);
    }
    for a in &addrs {
        for id in &made {
            let (status, got) = ask(a, "GET", &format!("/api/v2/indexes/{id}"), None, &[]);
            assert_eq!((status, got["index_id"].as_str()), (200, Some(id.as_str())), "{got}");
        }
        let (status, list) = ask(a, "GET", "/api/v2/indexes", None, &[]);
        assert_eq!(status, 200, "{list}");
        let names: Vec<&str> = list.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        let expected: Vec<String> = (0..12).map(|i| format!("i-{i:02}")).collect();
        assert_eq!(names, expected, "the list through {a} is not complete and oldest first");
    }
    // An unknown id is answered, in the envelope, by whichever partition it names.
    let (status, missing) = ask(&addrs[1], "GET", "/api/v2/indexes/idx_01JD000000000000000000000Z", None, &[]);
    assert_eq!(status, 404, "{missing}");
    assert!(missing["error"]["code"].is_string(), "{missing}");
    // One idempotency key through two nodes: one index.
    let key = [("Idempotency-Key", "k-partitioned")];
    let (s1, a) = ask(&addrs[0], "POST", "/api/v2/indexes", Some(r#"{"name":"once"}"#), &key);
    let (s2, b) = ask(&addrs[2], "POST", "/api/v2/indexes", Some(r#"{"name":"once"}"#), &key);
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(a["index_id"], b["index_id"]);
    made.push(a["index_id"].as_str().unwrap().to_string());
    // The catalog's resources go to partition 0, from any node.
    let (status, hook) = ask(
        &addrs[1],
        "POST",
        "/api/v2/webhooks",
        Some(r#"{"name":"h","url":"https://example.com/hook","events":["media.created"]}"#),
        &[],
    );
    assert_eq!(status, 201, "{hook}");
    assert_eq!(partition_of(hook["webhook_id"].as_str().unwrap()), 0);

    // SIGKILL the node holding the most partitions: the others take them within the lease.
    let victim = (0..3).max_by_key(|&i| held(&addrs[i]).map(|s| s.len()).unwrap_or(0)).unwrap();
    let mut v = nodes[victim].take().unwrap();
    v.child.kill().unwrap();
    v.child.wait().unwrap();
    let rest: Vec<&str> = (0..3).filter(|&i| i != victim).map(|i| addrs[i].as_str()).collect();
    let took = wait_shared(&rest, Duration::from_secs(30));
    eprintln!("after SIGKILL of a node: its partitions were taken over in {:.2} s (lease 2 s)", took.as_secs_f64());
    for a in &rest {
        let (_, list) = ask(a, "GET", "/api/v2/indexes", None, &[]);
        let ids: BTreeSet<&str> = list.as_array().unwrap().iter().map(|i| i["index_id"].as_str().unwrap()).collect();
        assert!(made.iter().all(|id| ids.contains(id.as_str())), "an acknowledged index was lost");
    }
    // SIGTERM another: it hands its partitions over at once.
    let leaving = (0..3).find(|&i| i != victim).unwrap();
    let staying = (0..3).find(|&i| i != victim && i != leaving).unwrap();
    let began = Instant::now();
    sigterm(&nodes[leaving].as_ref().unwrap().child);
    assert!(nodes[leaving].as_mut().unwrap().child.wait().unwrap().success());
    wait_shared(&[addrs[staying].as_str()], Duration::from_secs(30));
    eprintln!("after SIGTERM: the last node holds all five partitions {:.2} s later", began.elapsed().as_secs_f64());
    let (_, list) = ask(&addrs[staying], "GET", "/api/v2/indexes", None, &[]);
    assert_eq!(list.as_array().unwrap().len(), made.len());
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: start scripts/storage-servers.sh"))
}

/// Wait until `f` holds (checked every 50 ms), at most `within`; how long it took.
fn until(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !f() {
        assert!(began.elapsed() < within, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    began.elapsed()
}

/// A webhook receiver on loopback: every body it got (answers 200).
fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    let Ok(n) = stream.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            if let Ok(v) = serde_json::from_slice(&buf[end + 4..end + 4 + len]) {
                                g.lock().unwrap().push(v);
                            }
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, got)
}

/// The catalog's facts reach the index partitions (`CatalogFollowed`): an API key made in the
/// catalog opens an index partition's routes, and its revocation closes them, within a bound;
/// an S3 connector (its secret sealed with the catalog's data key) imports into an index in an
/// index partition, through a request routed by its body; a prompt made in the catalog runs
/// there; the gathered lists have the job and the run; the domain events of the index
/// partition are delivered by the catalog's webhook, once each, `sequence` 1, 2, … with their
/// resources' data; a connector deleted in the catalog is gone in the index partition too.
#[test]
fn the_catalog_reaches_the_index_partitions() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = env_var("SPOOL_TEST_S3S_ENDPOINT");
    let root = std::path::PathBuf::from(env_var("SPOOL_TEST_S3S_ROOT"));
    let (ak, sk) = (env_var("SPOOL_TEST_S3S_ACCESS_KEY"), env_var("SPOOL_TEST_S3S_SECRET_KEY"));
    let bucket = format!("parts-{}", std::process::id());
    for i in 0..3 {
        let path = root.join(&bucket).join(format!("in/c{i}.wav"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, spool_media::pcm_wav(format!("clip {i}").as_bytes())).unwrap();
    }
    let env = [
        ("SPOOL_LOG_URL", url.as_str()),
        ("SPOOL_LEASE_TTL", "2s"),
        ("SPOOL_PARTITIONS", "3"),
        ("SPOOL_MASTER_KEY", MASTER),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("SPOOL_WEBHOOK_ALLOW_HOSTS", "127.0.0.1"),
    ];
    let (hook_url, received) = receiver();
    let a = start_with(&tmp.path().join("a"), &env);
    let b = start_with(&tmp.path().join("b"), &env);
    until(Duration::from_secs(30), "the partitions being shared", || {
        let (x, y) = (held(&a.addr).unwrap_or_default(), held(&b.addr).unwrap_or_default());
        x.len() + y.len() == 4 && !x.is_empty() && !y.is_empty()
    });
    let (s, idx) = ask(&a.addr, "POST", "/api/v2/indexes", Some(r#"{"name":"catalog-test"}"#), &[]);
    assert_eq!(s, 201, "{idx}");
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    assert!(partition_of(&index_id) >= 1);

    // A key made in the catalog opens the index partition's routes once followed there.
    let (s, key) = ask(&b.addr, "POST", "/api/v2/api-keys", Some(r#"{"name":"reader","scopes":["read"]}"#), &[]);
    assert_eq!(s, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    let key_id = key["key_id"].as_str().or(key["id"].as_str()).unwrap().to_string();
    let path = format!("/api/v2/indexes/{index_id}");
    let took = until(Duration::from_secs(10), "the new key opening the index partition", || {
        matches!(request(&a.addr, "GET", &path, Some(&secret), None), Ok((200, _)))
    });
    eprintln!("a key made in the catalog works in an index partition {:.2} s later", took.as_secs_f64());
    // A revocation is answered once every index partition followed it: the key is refused
    // there at once, through either node.
    let began = Instant::now();
    let (s, revoked) = ask(&a.addr, "POST", &format!("/api/v2/api-keys/{key_id}/revoke"), Some("{}"), &[]);
    assert_eq!(s, 200, "{revoked}");
    eprintln!(
        "a key revocation answered after every index partition followed it: {:.3} s",
        began.elapsed().as_secs_f64()
    );
    for node in [&a.addr, &b.addr] {
        let answer = request(node, "GET", &path, Some(&secret), None).map(|(s, _)| s);
        assert_eq!(answer.ok(), Some(401), "the revoked key was still let in by an index partition");
    }
    // The catch-up the nodes ask of each other is refused to anyone else, however it is dressed.
    for sig in [None, Some("1.00"), Some("not a signature")] {
        let mut headers = vec![("x-spool-forwarded-by", "node-x"), ("x-spool-partition", "1")];
        if let Some(s) = sig {
            headers.push(("x-spool-internal", s));
        }
        let (s, err) = ask(&a.addr, "POST", "/internal/catch-up?to=18446744073709551615", None, &headers);
        assert_eq!(s, 403, "{sig:?}: {err}");
    }

    // A webhook in the catalog, for the index partition's domain events.
    let (s, hook) = ask(
        &b.addr,
        "POST",
        "/api/v2/webhooks",
        Some(&format!(r#"{{"name":"h","url":"{hook_url}","events":["media.created","import_job.completed"]}}"#)),
        &[],
    );
    assert_eq!(s, 201, "{hook}");
    let hook_id = hook["webhook_id"].as_str().unwrap().to_string();

    // An S3 connector: its credentials are sealed in the catalog, opened by the index partition.
    let body = format!(
        r#"{{"name":"src","bucket":"{bucket}","region":"us-east-1","aws_access_key_id":"{ak}","aws_secret_access_key":"{sk}"}}"#
    );
    let (s, conn) = ask(&a.addr, "POST", "/api/v2/connectors/s3", Some(&body), &[]);
    assert_eq!(s, 201, "{conn}");
    let conn_id = conn["connector_id"].as_str().unwrap().to_string();
    assert_eq!(partition_of(&conn_id), 0);
    let job_body = format!(
        r#"{{"connector_id":"{conn_id}","index_id":"{index_id}","source_prefix":"in/","file_pattern":"*.wav"}}"#
    );
    let mut job = serde_json::Value::Null;
    until(Duration::from_secs(10), "the connector reaching the index partition", || {
        let (s, j) = ask(&b.addr, "POST", "/api/v2/import-jobs", Some(&job_body), &[]);
        job = j;
        s == 202
    });
    let job_id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(partition_of(&job_id), partition_of(&index_id), "the job is made in its index's partition");
    until(Duration::from_secs(60), "the import completing", || {
        let (_, j) = ask(&a.addr, "GET", &format!("/api/v2/import-jobs/{job_id}"), None, &[]);
        j["status"] == "completed" && j["progress"]["imported"] == 3
    });

    // Its domain events are delivered by the catalog: once each, in sequence, with their data.
    let deliveries_path = format!("/api/v2/webhooks/{hook_id}/deliveries?limit=100");
    let took = until(Duration::from_secs(30), "the deliveries of the import", || {
        let (_, ds) = ask(&a.addr, "GET", &deliveries_path, None, &[]);
        let ds = ds.as_array().cloned().unwrap_or_default();
        ds.len() == 4 && ds.iter().all(|d| d["status"] == "delivered")
    });
    eprintln!("the index partition's 4 domain events were delivered by the catalog within {:.2} s", took.as_secs_f64());
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 4, "{got:?}");
    let mut seqs: Vec<u64> = got.iter().map(|b| b["sequence"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    let media: Vec<&serde_json::Value> = got.iter().filter(|b| b["event"] == "media.created").collect();
    assert_eq!(media.len(), 3);
    for m in &media {
        assert_eq!(m["index_id"], index_id.as_str());
        let vid = m["data"]["video_id"].as_str().expect("the video's data");
        assert_eq!(partition_of(vid), partition_of(&index_id));
    }
    let done = got.iter().find(|b| b["event"] == "import_job.completed").unwrap();
    assert_eq!(done["data"]["job_id"], job_id.as_str());

    // A prompt made in the catalog runs in the index partition (the built-in probe processor).
    let schema = r#"{"type":"object","properties":{"duration_s":{"type":"number"}}}"#;
    let (s, prompt) = ask(
        &b.addr,
        "POST",
        "/api/v2/prompts",
        Some(&format!(r#"{{"name":"probe it","prompt_text":"Describe every segment.","json_schema":{schema}}}"#)),
        &[],
    );
    assert_eq!(s, 201, "{prompt}");
    let prompt_id = prompt["prompt_id"].as_str().unwrap().to_string();
    let run_body = format!(
        r#"{{"prompt_id":"{prompt_id}","target":{{"type":"index","index_id":"{index_id}"}},"video_segmentation_type":"fixed","audio_segmentation_type":"fixed","video_segment_duration":1,"audio_segment_duration":1}}"#
    );
    let mut run = serde_json::Value::Null;
    until(Duration::from_secs(10), "the prompt reaching the index partition", || {
        let (s, r) = ask(&a.addr, "POST", "/api/v2/prompt-runs/execute", Some(&run_body), &[]);
        run = r;
        s == 200
    });
    let run_id = run["run_id"].as_str().unwrap().to_string();
    until(Duration::from_secs(60), "the run completing", || {
        let (_, r) = ask(&b.addr, "GET", &format!("/api/v2/prompt-runs/{run_id}"), None, &[]);
        r["status"] == "completed"
    });
    // The gathered lists have them, through either node.
    for n in [&a, &b] {
        let (_, jobs) = ask(&n.addr, "GET", "/api/v2/import-jobs", None, &[]);
        assert!(jobs.as_array().unwrap().iter().any(|j| j["job_id"] == job_id.as_str()), "{jobs}");
        let (_, runs) = ask(&n.addr, "GET", "/api/v2/prompt-runs", None, &[]);
        assert!(runs.as_array().unwrap().iter().any(|r| r["run_id"] == run_id.as_str()), "{runs}");
    }
    // A connector deleted in the catalog is gone in the index partition.
    let (s, deleted) = ask(&a.addr, "DELETE", &format!("/api/v2/connectors/{conn_id}"), None, &[]);
    assert_eq!(s, 200, "{deleted}");
    until(Duration::from_secs(10), "the deletion reaching the index partition", || {
        let (s, _) = ask(&b.addr, "POST", "/api/v2/import-jobs", Some(&job_body), &[]);
        s == 404
    });
}

/// On the default shape (a catalog and 32 index partitions, one node), a key made a moment ago
/// opens a list gathered over every partition at once, every time: each partition that does
/// not know it yet reads the catalog, and reads again from where it then is when a follower
/// recorded meanwhile. (A catch-up that stopped at its first refusal let one such request
/// through as 401 in the SDK suite's run on the default shape.)
#[test]
fn a_key_made_a_moment_ago_opens_every_partition_of_the_default_shape() {
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let node = start_with(&tmp.path().join("a"), &[("SPOOL_LOG_URL", url.as_str()), ("SPOOL_PARTITIONS", "32")]);
    until(Duration::from_secs(60), "the 33 partitions being held", || held(&node.addr).is_some_and(|h| h.len() == 33));
    // Catalog facts made all along, so the followers keep recording while keys are used.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (addr, stop) = (node.addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let body = format!(r#"{{"name":"churn{n}","scopes":["read"]}}"#);
                let _ = request(&addr, "POST", "/api/v2/api-keys", Some(ADMIN_KEY), Some(&body));
            }
        })
    };
    for i in 0..60 {
        let body = format!(r#"{{"name":"k{i}","scopes":["read"]}}"#);
        let (s, key) = ask(&node.addr, "POST", "/api/v2/api-keys", Some(&body), &[]);
        assert_eq!(s, 201, "{key}");
        let secret = key["key"].as_str().unwrap();
        let (s, list) = request(&node.addr, "GET", "/api/v2/indexes", Some(secret), None).unwrap();
        assert_eq!(s, 200, "key {i}, used at once: {list}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    churn.join().unwrap();
}
