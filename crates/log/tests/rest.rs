//! Issue 27: a redb log that was at rest when its process was killed opens without redb's
//! repair walk (the writer recorded the allocator state at rest); one killed while it commits
//! is repaired, and both keep every acknowledged event. A snapshot's commit counts as a rest
//! (role `snapshot`: the bench's idle server was killed after its snapshot's commit and before
//! a rest commit, and paid the repair walk: 2.8 s at a million videos). The killed process is this test
//! binary again, in the role `SPOOL_TEST_REDB_CHILD` names.
#![allow(clippy::disallowed_methods)] // the child's role comes from the environment its parent set

use spool_log::*;
use spool_model::{Event, IndexId};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use ulid::Ulid;

const CHILD: &str = "SPOOL_TEST_REDB_CHILD";

fn ev(n: u64) -> NewEvent {
    NewEvent {
        at_ms: 1_000 + n,
        event: Event::IndexCreated {
            index_id: IndexId(Ulid::from_parts(n, 0)),
            name: format!("n{n}"),
            user_id: "u".into(),
        },
    }
}

/// The child: append, then either rest (and say how many events are durable) or keep
/// appending (saying so after the first ones); the parent kills it.
fn child(role: &str, dir: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let log = RedbLog::open_dir(std::path::Path::new(dir)).unwrap();
        let mut n = 0;
        for _ in 0..20 {
            n += 1;
            log.append(AppendRequest::one("s", Expected::Any, vec![ev(n)])).await.unwrap();
        }
        let mut out = std::io::stdout();
        if role == "rest" {
            tokio::time::sleep(REST_QUICK_REPAIR_AFTER * 4).await;
            writeln!(out, "durable {n}").unwrap();
            out.flush().unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        } else if role == "snapshot" {
            // A snapshot's commit (the runtime writes one when it is idle) records the
            // allocator state itself: killed right after it, before a rest commit could come.
            let side = vec![SideWrite::Snapshot { name: "state".into(), at_seq: n, bytes: vec![7; 64] }];
            log.append(AppendRequest { streams: Vec::new(), side }).await.unwrap();
            writeln!(out, "durable {n}").unwrap();
            out.flush().unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        } else {
            writeln!(out, "durable {n}").unwrap();
            out.flush().unwrap();
            loop {
                n += 1;
                log.append(AppendRequest::one("s", Expected::Any, vec![ev(n)])).await.unwrap();
            }
        }
    });
}

/// Run the child in `role` on `dir`, kill it (SIGKILL) once it said how many events are
/// durable, and return that number.
fn killed(role: &str, dir: &std::path::Path) -> u64 {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_log_at_rest_opens_after_a_kill_without_a_repair", "--nocapture", "--test-threads", "1"])
        .env(CHILD, format!("{role}:{}", dir.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(c.stdout.take().unwrap()).lines();
    let durable = loop {
        let line = lines.next().expect("the child said how many events are durable").unwrap();
        // (The harness may have begun the line: "test … ... durable N".)
        if let Some((_, n)) = line.split_once("durable ") {
            break n.trim().parse().unwrap();
        }
    };
    c.kill().unwrap();
    c.wait().unwrap();
    durable
}

#[test]
fn a_log_at_rest_opens_after_a_kill_without_a_repair() {
    if let Ok(v) = std::env::var(CHILD) {
        let (role, dir) = v.split_once(':').unwrap();
        return child(role, dir);
    }
    for (role, repaired) in [("rest", false), ("snapshot", false), ("busy", true)] {
        let dir = tempfile::tempdir().unwrap();
        let durable = killed(role, dir.path());
        let log = RedbLog::open_dir(dir.path()).unwrap();
        assert_eq!(log.repaired(), repaired, "{role}: repaired");
        assert!(log.head() >= durable, "{role}: {} events after the kill, {durable} were durable", log.head());
        let read = log.read_from(1, READ_BATCH_MAX).unwrap();
        assert_eq!(read.len() as u64, log.head().min(READ_BATCH_MAX as u64), "{role}");
        drop(log);
        // Closed cleanly this time: no repair.
        assert!(!RedbLog::open_dir(dir.path()).unwrap().repaired(), "{role}: a clean close");
    }
}
