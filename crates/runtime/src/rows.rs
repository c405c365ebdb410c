//! The tables of the fold (`engine-spec/tables.md`), on any [`EventLog`]: the one place that
//! reads them for decisions (rows loaded into the working state before the decision that reads
//! them) and for answers, the side writes that commit emitted rows with their events, and the
//! rebuild of the tables from the log when their format changed (or they are missing: a data
//! directory from before them).

use spool_core::rows::{TABLES_FORMAT, TABLES_FORMAT_KEY};
use spool_core::{RowWrite, State, VideoRow};
use spool_log::{AppendRequest, EventLog, READ_BATCH_MAX, SideTable, SideWrite};
use spool_model::VideoId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Rows put in one append of a rebuild.
const REBUILD_ROWS_PER_APPEND: usize = 4096;

/// The side writes of emitted rows: each commits with the events it follows from.
pub fn side_writes(rows: Vec<RowWrite>, out: &mut Vec<SideWrite>) {
    for r in rows {
        match r {
            RowWrite::Video(id, row) => {
                out.push(SideWrite::Put { table: SideTable::Videos, key: id.to_string(), value: row.encode() })
            }
        }
    }
}

/// Read the rows of these videos (those the table holds), in chunks of [`READ_BATCH_MAX`].
pub fn read_video_rows<L: EventLog + ?Sized>(
    log: &L,
    ids: impl IntoIterator<Item = VideoId>,
) -> Result<BTreeMap<VideoId, Arc<VideoRow>>, spool_log::Error> {
    let mut ids: Vec<VideoId> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(READ_BATCH_MAX) {
        let keys: Vec<String> = chunk.iter().map(|id| id.to_string()).collect();
        for (id, bytes) in chunk.iter().zip(log.side_get_many(SideTable::Videos, &keys)?) {
            match bytes.as_deref().map(VideoRow::decode) {
                Some(Some(row)) => {
                    out.insert(*id, Arc::new(row));
                }
                Some(None) => tracing::warn!(video = %id, "a video row of another format or damaged; left out"),
                None => {}
            }
        }
    }
    Ok(out)
}

/// Load into a state the rows of these videos that it does not hold (the one place a decision's
/// rows are read): loaded rows count as durable (sequence 0).
pub fn load_video_rows<L: EventLog + ?Sized>(log: &L, st: &mut State, ids: &[VideoId]) -> Result<(), spool_log::Error> {
    let missing: Vec<VideoId> = ids.iter().filter(|id| !st.rows.videos.contains_key(id)).copied().collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (id, row) in read_video_rows(log, missing)? {
        st.rows.videos.insert(id, (0, row));
    }
    Ok(())
}

/// Build the tables from the log when they are not of [`TABLES_FORMAT`]: every row the log's
/// events write, then the format, last (a rebuild cut short starts again). Runs before the
/// sequencer takes commands. Returns the rows written (0 when the tables were current).
pub fn ensure_tables<L: EventLog + ?Sized>(log: &L) -> Result<u64, spool_log::Error> {
    let format = TABLES_FORMAT.to_le_bytes().to_vec();
    if log.side_get(SideTable::Videos, TABLES_FORMAT_KEY)?.as_deref() == Some(&format[..]) {
        return Ok(0);
    }
    let began = std::time::Instant::now();
    let mut written = 0u64;
    let mut side = Vec::new();
    let mut from = 1;
    loop {
        let batch = log.read_from(from, READ_BATCH_MAX)?;
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for env in &batch {
            if let Some(row) = spool_core::rows::of_event(&env.event) {
                side_writes(vec![row], &mut side);
                written += 1;
            }
        }
        if side.len() >= REBUILD_ROWS_PER_APPEND {
            futures::executor::block_on(
                log.append(AppendRequest { streams: vec![], side: std::mem::take(&mut side) }),
            )?;
        }
    }
    side.push(SideWrite::Put { table: SideTable::Videos, key: TABLES_FORMAT_KEY.into(), value: format });
    futures::executor::block_on(log.append(AppendRequest { streams: vec![], side }))?;
    tracing::info!(rows = written, ms = spool_model::num::ms(began.elapsed()), "the tables were built from the log");
    Ok(written)
}
