//! The log under SIGKILL: a child process appends from many tasks and is killed at random
//! moments; after each reopen every acknowledged append is there, in order, with no gap in
//! sequence numbers and every record decoding.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose
#![allow(clippy::disallowed_methods)] // tests read their environment
use spool_log::{EventLog, RedbLog};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const KILLS: u32 = 24;

/// A small deterministic generator (the test must not need a seed file to be repeatable).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("SPOOL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    let mut rng = Lcg(seed);
    // stream -> highest acknowledged (version, seq)
    let mut acked: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut total_acks = 0u64;
    for round in 0..KILLS {
        let batch = 1 + rng.next(3);
        let mut child = Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(["debug", "hammer", "--tasks", "24", "--batch", &batch.to_string(), "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start spool debug hammer");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        // Let it run for a random time after it is up (startup included), then SIGKILL.
        std::thread::sleep(Duration::from_millis(30 + rng.next(250)));
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the child was supposed to die, not finish");
        let lines = reader.join().unwrap();
        for l in &lines {
            let parts: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(parts.len(), 4, "bad line {l:?}");
            let (stream, version, seq) =
                (parts[1].to_string(), parts[2].parse::<u64>().unwrap(), parts[3].parse::<u64>().unwrap());
            let e = acked.entry(stream).or_insert((0, 0));
            assert!(version > e.0 && seq > e.1, "round {round}: acks of a stream go forward");
            *e = (version, seq);
            total_acks += 1;
        }

        let log = RedbLog::open_dir(dir.path()).expect("reopen after SIGKILL");
        let head = log.head();
        // Every record decodes, and sequence numbers run 1..=head without a gap.
        let mut seq = 1;
        let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        loop {
            let batch = log.read_from(seq, spool_log::READ_BATCH_MAX).expect("every record decodes");
            let Some(last) = batch.last() else { break };
            for env in &batch {
                assert_eq!(env.seq, seq, "round {round}: gap or disorder at {seq}");
                seq += 1;
                per_stream.entry(env.stream.clone()).or_default().push(env.seq);
            }
            seq = last.seq + 1;
        }
        assert_eq!(seq - 1, head, "round {round}: head matches the last record");
        // Every acknowledged append is present: the stream holds at least that version, and
        // the event at that version has the acknowledged sequence number.
        for (stream, &(version, ack_seq)) in &acked {
            let seqs = per_stream.get(stream).unwrap_or_else(|| panic!("round {round}: stream {stream} lost"));
            assert!(
                seqs.len() as u64 >= version,
                "round {round}: {stream} has {} events, {version} acknowledged",
                seqs.len()
            );
            assert_eq!(seqs[version as usize - 1], ack_seq, "round {round}: {stream} v{version} moved");
            assert_eq!(log.stream_version(stream).unwrap(), seqs.len() as u64);
            let via_index: Vec<u64> = log.read_stream(stream, 0, usize::MAX).unwrap().iter().map(|e| e.seq).collect();
            assert_eq!(&via_index[..seqs.len().min(via_index.len())], &seqs[..via_index.len().min(seqs.len())]);
        }
        drop(log);
    }
    assert!(total_acks > 100, "the children acknowledged only {total_acks} appends; the test proved little");
    eprintln!("{KILLS} kills, {total_acks} acknowledged appends checked");
}
