//! `spool migrate-log --data-dir DIR --to postgres://…`: copy a data directory's redb log into
//! an empty PostgreSQL log (partition 0), one way, then verify the copy event by event.
//!
//! The data directory must not be held by a running server (redb's lock refuses it), and no node
//! may hold the PostgreSQL partition (the copy takes its lease, and hands it back at the end).
//! Events keep their sequence numbers, streams, versions and times; side records (idempotency
//! records, the keyring's data keys) are copied as they are. Media, uploads, exports and
//! `master.key` stay in the data directory: a node started on the PostgreSQL log with that data
//! directory (or the same `SPOOL_MASTER_KEY`) goes on where the redb server stopped.

use anyhow::{Context, bail};
use spool_log::{AppendRequest, EventLog, Expected, NewEvent, RawLog, SideTable, SideWrite, StreamAppend};
use std::path::Path;

/// Events read (and queued) at once.
const BATCH: usize = spool_log::READ_BATCH_MAX;

pub fn run(data_dir: &Path, to: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(migrate(data_dir, to))
}

async fn migrate(data_dir: &Path, to: &str) -> anyhow::Result<()> {
    let shown = spool_log::redact_url(to);
    anyhow::ensure!(
        to.starts_with("postgres://") || to.starts_with("postgresql://"),
        "--to {shown:?} is not a postgres:// URL"
    );
    let src = crate::offline::open_existing(data_dir)?;
    let dir = spool_log::Directory::open(to).await.with_context(|| format!("opening {shown}"))?;
    if let Some(h) = dir.holder(0).await?
        && h.lease_expires_in_ms > 0
    {
        bail!(
            "node {} holds partition 0 of {shown}: stop the cluster before migrating into it (nothing was written)",
            h.node_id
        );
    }
    // A migrated log is a cluster of one partition: its shape is recorded first, so a node
    // starting meanwhile cannot make it a catalog of 32 index partitions.
    let shape = dir.partitions(Some(0)).await.with_context(|| format!("recording the shape of {shown}"))?;
    anyhow::ensure!(
        shape == 0,
        "{shown} is a cluster of {shape} index partitions: migrate-log fills an empty log of one partition (nothing was written)"
    );
    let mut opts = spool_log::PgLogOptions::new(to, "migrate-log");
    opts.partition = 0;
    let dst = tokio::task::spawn_blocking(move || spool_log::PgLog::open(opts)).await??;
    let result = copy_and_verify(&src, &dst, &shown).await;
    let dst = std::sync::Arc::new(dst);
    let closing = dst.clone();
    tokio::task::spawn_blocking(move || closing.hand_back()).await?;
    result
}

async fn copy_and_verify(src: &spool_log::RedbLog, dst: &spool_log::PgLog, shown: &str) -> anyhow::Result<()> {
    if dst.head() != 0
        || !dst.side_scan(SideTable::Idempotency, None, 1)?.is_empty()
        || !dst.side_scan(SideTable::DataKeys, None, 1)?.is_empty()
    {
        bail!(
            "partition 0 of {shown} is not empty ({} events): migrate-log only fills an empty log (nothing was written)",
            dst.head()
        );
    }
    let head = src.head();
    let began = std::time::Instant::now();
    // Side records first, in one append: the data keys that events' sealed secrets need.
    let mut side = Vec::new();
    let mut copied_side = 0usize;
    for table in [SideTable::DataKeys, SideTable::Idempotency] {
        let mut after: Option<String> = None;
        loop {
            let rows = src.side_scan(table, after.as_deref(), BATCH)?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            copied_side += rows.len();
            side.extend(rows.into_iter().map(|(key, value)| SideWrite::Put { table, key, value }));
            if side.len() >= BATCH {
                dst.append(AppendRequest { streams: Vec::new(), side: std::mem::take(&mut side) }).await?;
            }
        }
    }
    if !side.is_empty() {
        dst.append(AppendRequest { streams: Vec::new(), side }).await?;
    }
    // Events in order: each run of one stream's consecutive events is one append, queued behind
    // the one before it, so sequence numbers and versions come out as they were.
    let mut seq = 1;
    while seq <= head {
        let batch = src.read_from(seq, BATCH)?;
        let Some(last) = batch.last() else { break };
        seq = last.seq + 1;
        let mut queued = Vec::new();
        let mut run: Option<StreamAppend> = None;
        for env in batch {
            let event = NewEvent { at_ms: env.at_ms, event: env.event };
            match &mut run {
                Some(r) if r.stream == env.stream => r.events.push(event),
                _ => {
                    if let Some(r) = run.take() {
                        queued.push(dst.submit(AppendRequest { streams: vec![r], side: Vec::new() }));
                    }
                    run = Some(StreamAppend { stream: env.stream, expected: Expected::Any, events: vec![event] });
                }
            }
        }
        if let Some(r) = run.take() {
            queued.push(dst.submit(AppendRequest { streams: vec![r], side: Vec::new() }));
        }
        for q in queued {
            q.await?;
        }
        eprint!("\rcopied {} of {head} events", seq - 1);
    }
    eprintln!();
    anyhow::ensure!(dst.head() == head, "the copy ends at {} but the data directory's log at {head}", dst.head());
    // Verify: every event the same (sequence number, stream, time, event), every stream at the
    // same version, every side record the same.
    let mut seq = 1;
    while seq <= head {
        let a = src.read_from(seq, BATCH)?;
        let b = dst.read_from(seq, BATCH)?;
        anyhow::ensure!(a.len() == b.len(), "the copy has {} events from {seq}, the original {}", b.len(), a.len());
        for (x, y) in a.iter().zip(&b) {
            if (x.seq, &x.stream, x.at_ms, &x.event) != (y.seq, &y.stream, y.at_ms, &y.event) {
                bail!("event {} differs in the copy", x.seq);
            }
        }
        seq += a.len() as u64;
        if a.is_empty() {
            break;
        }
    }
    let mut after: Option<String> = None;
    let mut streams = 0usize;
    loop {
        let a = RawLog::streams(src, after.as_deref(), BATCH)?;
        let b = RawLog::streams(dst, after.as_deref(), BATCH)?;
        anyhow::ensure!(a == b, "the copy's streams differ after {after:?}");
        let Some((last, _)) = a.last() else { break };
        after = Some(last.clone());
        streams += a.len();
    }
    for table in [SideTable::DataKeys, SideTable::Idempotency] {
        let mut after: Option<String> = None;
        loop {
            let a = src.side_scan(table, after.as_deref(), BATCH)?;
            let b = dst.side_scan(table, after.as_deref(), BATCH)?;
            anyhow::ensure!(a == b, "the copy's {table:?} records differ");
            let Some((last, _)) = a.last() else { break };
            after = Some(last.clone());
        }
    }
    let report = spool_runtime::tools::verify(dst)?;
    anyhow::ensure!(
        report.is_clean(),
        "verify found problems in the copy: {:?} {:?}",
        report.decode_errors,
        report.problems
    );
    println!(
        "migrated {head} events in {streams} streams and {copied_side} side records into partition 0 of {shown} in {:.1} s; verified event by event",
        began.elapsed().as_secs_f64()
    );
    println!(
        "start the nodes with --log {shown} and this data directory's master key (copy master.key, or SPOOL_MASTER_KEY); media stay in the data directory"
    );
    Ok(())
}
