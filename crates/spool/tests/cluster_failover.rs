//! Failover under a mixed load: three nodes of one PostgreSQL log (lease 2 s) while an import
//! raises `media.created` for every file (a webhook delivers each), a prompt run sends every
//! segment to an `http` worker played by this test, and a writer creates indexes through the
//! nodes that forward. The node holding the partition (the busiest: it does all the work) is
//! SIGKILLed ten times, each time timed on the work's progress; another node takes over, and the
//! killed one comes back as a node that forwards.
//!
//! At the end: every acknowledged index is there, every file imported once (one video each), one
//! result per segment (processor calls may repeat, counted), one delivery per (webhook, event) and
//! each received at least once (repeats counted), `verify` clean; each takeover time is printed.
//! Each node has a data directory of its own; media lives in a bucket of s3s-fs that every node
//! shares (`SPOOL_MEDIA_URL`): one object per video there, none left in a data directory, and
//! every video's media read through its signed URL from whichever node holds the partition at the
//! end (most were imported by nodes killed since).
#![allow(clippy::disallowed_methods)] // the tests' PostgreSQL is named by SPOOL_TEST_PG_URL
#![allow(clippy::cast_possible_truncation)] // test sizes

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FILES: usize = 200;
const SEGMENTS_PER_VIDEO: usize = 2;
const KILLS: usize = 10;
const LEASE: &str = "2s";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn database() -> String {
    let admin = std::env::var("SPOOL_TEST_PG_URL")
        .expect("SPOOL_TEST_PG_URL: start PostgreSQL with scripts/pg.sh start DIR and source DIR/pg-env");
    let name = format!("failover_{}", ulid::Ulid::new().to_string().to_lowercase());
    spool_log::create_database(&admin, &name).unwrap()
}

/// `/healthz` says this node holds the partition (`watched`: in a partitioned cluster, that
/// index partition).
fn holds(addr: &str, watched: Option<u16>) -> bool {
    // A partitioned node answers 503 while any partition is unserved (after a kill, while one
    // moves), and still lists what it holds: the watched partition's holder is found then too,
    // or kills would wait while the work goes on.
    let Ok((200 | 503, body)) = request(addr, "GET", "/healthz", None, None) else { return false };
    match watched {
        None => body.contains(r#""role":"holder""#),
        Some(p) => serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|h| h["held"].as_array().map(|a| a.iter().any(|x| x.as_u64() == Some(u64::from(p)))))
            .unwrap_or(false),
    }
}

struct Cluster {
    nodes: Vec<Option<Server>>,
    data: std::path::PathBuf,
    envs: Vec<(String, String)>,
    /// The partition whose holder is killed (`None`: the one partition of an unpartitioned log).
    watched: Option<u16>,
}

impl Cluster {
    fn start_node(&mut self, i: usize) {
        let mut envs: Vec<(&str, &str)> = self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let id = format!("node-{i}");
        envs.push(("SPOOL_NODE_ID", &id));
        self.nodes[i] = Some(start_with(&self.data_dir(i), &envs));
    }

    fn data_dir(&self, i: usize) -> std::path::PathBuf {
        self.data.join(format!("node-{i}"))
    }

    fn addr(&self, i: usize) -> Option<String> {
        self.nodes[i].as_ref().map(|s| s.addr.clone())
    }

    fn holder(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.addr(i).is_some_and(|a| holds(&a, self.watched)))
    }

    /// An answer from any live node (503s and refused connections while the partition moves
    /// are tried again).
    fn ask(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0usize;
        loop {
            n += 1;
            if let Some(addr) = self.addr(n % self.nodes.len())
                && let Ok((status, text)) = request(&addr, method, path, Some(ADMIN_KEY), body)
                && status != 503
            {
                return (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null));
            }
            assert!(Instant::now() < deadline, "no node answered {method} {path}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn three_nodes_lose_and_double_nothing_when_the_holder_is_killed_ten_times() {
    failover(0);
}

/// The same on a partitioned cluster (a catalog and four index partitions spread over the three
/// nodes): the node holding the index's partition (its imports, its run) is killed ten times;
/// the deliveries are decided in the catalog, wherever it is.
#[test]
fn a_partitioned_cluster_loses_and_doubles_nothing_when_the_busiest_node_is_killed_ten_times() {
    failover(4);
}

/// One cluster at a time: two on these two cores slow each other until the work can end before
/// its ten kills.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn failover(partitions: u16) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let url = database();
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    for i in 0..FILES {
        // 2 s of 8 kHz PCM: two 1-second segments.
        let samples: Vec<u8> = (0..16_000).map(|j| ((i * 31 + j) % 251) as u8).collect();
        std::fs::write(media.join(format!("c{i:04}.wav")), spool_media::pcm_wav(&samples)).unwrap();
    }
    let (worker_url, calls, _) = worker(0);
    let (hook_url, seen) = receiver();
    // The shared store: a bucket of s3s-fs (a folder of its root).
    let s3s = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}: start scripts/storage-servers.sh"));
    let bucket = format!("failover-{}", ulid::Ulid::new().to_string().to_lowercase());
    let bucket_dir = std::path::Path::new(&s3s("SPOOL_TEST_S3S_ROOT")).join(&bucket);
    std::fs::create_dir_all(&bucket_dir).unwrap();
    let media_url = format!("s3://{bucket}/spool?endpoint={}", s3s("SPOOL_TEST_S3S_ENDPOINT"));
    let (access, secret) = (s3s("SPOOL_TEST_S3S_ACCESS_KEY"), s3s("SPOOL_TEST_S3S_SECRET_KEY"));
    // Every node unwraps the same data keys.
    let master = spool_runtime::MasterKey::generate().to_base64();
    let config = tmp.path().join("spool.toml");
    std::fs::write(
        &config,
        format!(
            "[processors]\ndefault = \"probe\"\n\n[processors.worker]\nkind = \"http\"\nurl = \"{worker_url}\"\nsecret = \"{SECRET}\"\ntimeout = \"5s\"\nconcurrency = 8\n"
        ),
    )
    .unwrap();
    let envs: Vec<(String, String)> = [
        ("RUST_LOG", "warn"),
        ("SPOOL_LOG_URL", url.as_str()),
        ("SPOOL_LEASE_TTL", LEASE),
        ("SPOOL_LOCAL_ROOTS", media.to_str().unwrap()),
        ("SPOOL_CONFIG", config.to_str().unwrap()),
        ("SPOOL_WEBHOOK_ALLOW_HOSTS", "127.0.0.1"),
        ("SPOOL_WEBHOOK_RETRY_SCHEDULE", "0s,1s,1s,1s,1s,1s,1s,1s"),
        ("SPOOL_IMPORT_CONCURRENCY", "4"),
        ("SPOOL_MEDIA_URL", media_url.as_str()),
        ("AWS_ACCESS_KEY_ID", access.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("SPOOL_MASTER_KEY", master.as_str()),
        ("SPOOL_PARTITIONS", &partitions.to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut cluster = Cluster { nodes: vec![None, None, None], data: tmp.path().join("data"), envs, watched: None };
    std::fs::create_dir_all(&cluster.data).unwrap();
    for i in 0..3 {
        cluster.start_node(i);
    }
    if partitions == 0 {
        assert_eq!(cluster.holder(), Some(0));
    }

    let (s, idx) = cluster.ask("POST", "/api/v2/indexes", Some(r#"{"name":"failover"}"#));
    assert_eq!(s, 201, "{idx}");
    let index_id = idx["index_id"].as_str().unwrap().to_string();
    if partitions > 0 {
        let id: spool_model::IndexId = index_id.parse().unwrap();
        cluster.watched = Some(spool_model::partition_of(id.0));
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.holder().is_none() {
            assert!(Instant::now() < deadline, "nobody holds the index's partition");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (s, wh) = cluster.ask(
        "POST",
        "/api/v2/webhooks",
        Some(&format!(r#"{{"name":"hook","url":"{hook_url}","events":["media.created"]}}"#)),
    );
    assert_eq!(s, 201, "{wh}");
    let webhook_id = wh["webhook_id"].as_str().unwrap().to_string();
    let (s, conn) = cluster.ask(
        "POST",
        "/api/v2/connectors/local",
        Some(&format!(r#"{{"name":"local","root":"{}"}}"#, media.display())),
    );
    assert_eq!(s, 201, "{conn}");
    let (s, job) = cluster.ask(
        "POST",
        "/api/v2/import-jobs",
        Some(&format!(
            r#"{{"connector_id":"{}","index_id":"{index_id}","file_pattern":"*.wav"}}"#,
            conn["connector_id"].as_str().unwrap()
        )),
    );
    assert_eq!(s, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let schema = r#"{"type":"object","properties":{"label":{"type":"string"}},"required":["label"]}"#;
    let (s, prompt) = cluster.ask(
        "POST",
        "/api/v2/prompts",
        Some(&format!(r#"{{"name":"labels","prompt_text":"Label every segment.","json_schema":{schema}}}"#)),
    );
    assert_eq!(s, 201, "{prompt}");
    let prompt_id = prompt["prompt_id"].as_str().unwrap().to_string();

    // A writer through the nodes: every index it was told is created must be there at the end.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let addrs: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new((0..3).filter_map(|i| cluster.addr(i)).collect()));
    let writer = {
        let (stop, acknowledged, addrs) = (stop.clone(), acknowledged.clone(), addrs.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let list = addrs.lock().unwrap().clone();
                let addr = &list[(n as usize) % list.len()];
                let body = format!(r#"{{"name":"w-{n}"}}"#);
                if let Ok((201, text)) = request(addr, "POST", "/api/v2/indexes", Some(ADMIN_KEY), Some(&body)) {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    acknowledged.lock().unwrap().insert(v["index_id"].as_str().unwrap().to_string());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let total_segments = FILES * SEGMENTS_PER_VIDEO;
    let total = FILES + total_segments;
    let thresholds: Vec<usize> = (1..=KILLS).map(|k| k * total / (KILLS + 2)).collect();
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut run_id: Option<String> = None;
    let mut takeovers = Vec::new();
    let mut kills = 0;
    loop {
        assert!(Instant::now() < deadline, "stuck after {kills} kills");
        let (_, j) = cluster.ask("GET", &format!("/api/v2/import-jobs/{job_id}"), None);
        let imported = j["progress"]["imported"].as_u64().unwrap_or(0) as usize;
        if run_id.is_none() && j["status"] == "completed" {
            assert_eq!(imported, FILES, "{j}");
            let (s, run) = cluster.ask(
                "POST",
                "/api/v2/prompt-runs/execute",
                Some(&format!(
                    r#"{{"prompt_id":"{prompt_id}","target":{{"type":"index","index_id":"{index_id}"}},"video_segmentation_type":"fixed","audio_segmentation_type":"fixed","video_segment_duration":1,"audio_segment_duration":1,"processing_model":"worker"}}"#
                )),
            );
            assert_eq!(s, 200, "{run}");
            run_id = Some(run["run_id"].as_str().unwrap().to_string());
        }
        let (segments, run_done) = match &run_id {
            Some(id) => {
                let (_, r) = cluster.ask("GET", &format!("/api/v2/prompt-runs/{id}"), None);
                let status = r["status"].as_str().unwrap_or("").to_string();
                (
                    r["completed_segments"].as_u64().unwrap_or(0) as usize,
                    ["completed", "completed_with_failures", "failed", "cancelled"].contains(&status.as_str()),
                )
            }
            None => (0, false),
        };
        if run_done {
            break;
        }
        let progress = imported + segments;
        if kills < KILLS && progress >= thresholds[kills] {
            let Some(h) = cluster.holder() else { continue };
            let mut victim = cluster.nodes[h].take().unwrap();
            victim.child.kill().unwrap();
            victim.child.wait().unwrap();
            let killed_at = Instant::now();
            let taken = loop {
                if let Some(n) = cluster.holder() {
                    break n;
                }
                assert!(killed_at.elapsed() < Duration::from_secs(30), "no node took over after kill {}", kills + 1);
                std::thread::sleep(Duration::from_millis(20));
            };
            takeovers.push(killed_at.elapsed().as_secs_f64());
            assert_ne!(taken, h);
            kills += 1;
            cluster.start_node(h);
            *addrs.lock().unwrap() = (0..3).filter_map(|i| cluster.addr(i)).collect();
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(kills, KILLS, "the work ended after {kills} kills (thresholds {thresholds:?})");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // Every file imported once: one video each.
    let mut videos = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = cluster.ask("GET", &format!("/api/v2/indexes/{index_id}/videos?limit=100{cursor}"), None);
        for v in page["data"].as_array().unwrap() {
            videos.push(v["video_id"].as_str().unwrap().to_string());
        }
        match page["pagination"]["next_cursor"].as_str() {
            Some(c) if page["pagination"]["has_more"] == true => cursor = format!("&cursor={c}"),
            _ => break,
        }
    }
    assert_eq!(videos.len(), FILES, "a file imported twice or not at all");
    // One object per video in the shared store, none in a node's data directory, and each read
    // back whole through the node now holding the partition.
    let shared = files_under(&bucket_dir.join("spool/media"));
    assert_eq!(shared.len(), FILES, "the shared store holds one object per video: {shared:?}");
    for i in 0..3 {
        let mut local = files_under(&cluster.data_dir(i).join("media"));
        local.extend(files_under(&cluster.data_dir(i).join("scratch")));
        assert!(local.is_empty(), "media left in node {i}'s data directory: {local:?}");
    }
    // The partition may be moving back to a restarted node's share right now.
    let holder = loop {
        if let Some(h) = cluster.holder() {
            break cluster.addr(h).unwrap();
        }
        assert!(Instant::now() < deadline, "no holder of the index's partition at the end");
        std::thread::sleep(Duration::from_millis(20));
    };
    for vid in &videos {
        let (_, v) = cluster.ask("GET", &format!("/api/v2/videos/{vid}"), None);
        let uri = v["video_uri"].as_str().unwrap();
        let (s, signed) = cluster.ask("POST", "/api/v2/videos/signed-url", Some(&format!(r#"{{"gcs_uri":"{uri}"}}"#)));
        assert_eq!(s, 200, "{signed}");
        let url = signed["signed_url"].as_str().unwrap();
        let path = &url[url.find("/media/").unwrap()..];
        let (s, got) = get_bytes(&holder, path).unwrap();
        assert_eq!(s, 200, "{vid}: {}", String::from_utf8_lossy(&got));
        let name = v["source"]["path"].as_str().unwrap();
        let want = std::fs::read(media.join(name)).unwrap();
        assert!(got == want, "{vid}: the shared media is not the imported file {name}");
    }
    // One result per segment, each the answer to that segment.
    let run_id = run_id.unwrap();
    let (_, r) = cluster.ask("GET", &format!("/api/v2/prompt-runs/{run_id}"), None);
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["completed_segments"].as_u64(), Some(total_segments as u64), "{r}");
    let mut results = BTreeSet::new();
    for vid in &videos {
        let (_, res) =
            cluster.ask("GET", &format!("/api/v2/prompt-runs/{run_id}/results?video_id={vid}&limit=100"), None);
        let data = res["data"].as_array().unwrap();
        assert_eq!(data.len(), SEGMENTS_PER_VIDEO, "{res}");
        for x in data {
            let sid = x["segment_id"].as_str().unwrap().to_string();
            assert_eq!(x["metadata"]["label"], sid.as_str(), "a result is another segment's answer");
            assert!(results.insert(sid), "a segment has two results");
        }
    }
    let made: u64 = calls.lock().unwrap().values().sum();
    // One delivery per `media.created`, every one delivered, each received at least once.
    let delivered: Vec<String> = loop {
        assert!(Instant::now() < deadline, "the deliveries did not all arrive");
        let (_, ds) = cluster.ask("GET", &format!("/api/v2/webhooks/{webhook_id}/deliveries?limit=1000"), None);
        let ds = ds.as_array().cloned().unwrap_or_default();
        if ds.len() >= FILES && ds.iter().all(|d| d["status"] == "delivered") {
            break ds.iter().map(|d| d["delivery_id"].as_str().unwrap().to_string()).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(delivered.len(), FILES, "a media.created delivered twice or not at all");
    let seen = seen.lock().unwrap().clone();
    let lost: Vec<&String> = delivered.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(lost.is_empty(), "deliveries the receiver never got: {lost:?}");
    let repeated: u32 = seen.values().map(|n| n - 1).sum();
    // Every acknowledged index is there.
    let mut names = BTreeMap::new();
    let (_, list) = cluster.ask("GET", "/api/v2/indexes?limit=1000", None);
    for i in list.as_array().unwrap() {
        names.insert(i["index_id"].as_str().unwrap().to_string(), i["name"].as_str().unwrap().to_string());
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !names.contains_key(*id)).collect();
    assert!(missing.is_empty(), "acknowledged indexes lost: {missing:?}");
    // `verify` clean in every partition.
    for p in 0..=partitions {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(["verify", "--log", &url, "--partition", &p.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("ok: every record decodes"), "partition {p}: {text}");
    }
    let worst = takeovers.iter().copied().fold(0.0, f64::max);
    let mean = takeovers.iter().sum::<f64>() / takeovers.len() as f64;
    eprintln!(
        "failover ({partitions} index partitions): {kills} SIGKILLs of the holder (lease {LEASE}); takeover mean {mean:.2} s, worst {worst:.2} s; \
         {FILES} files imported once; {} segments, one result each, {made} processor calls; \
         {} deliveries, {repeated} received more than once, 0 lost; {} acknowledged indexes, 0 lost; verify clean",
        results.len(),
        delivered.len(),
        acknowledged.len()
    );
}
