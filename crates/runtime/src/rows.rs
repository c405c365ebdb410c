//! The tables of the fold (`engine-spec/tables.md`), on any [`EventLog`]: the one place that
//! reads them for decisions (rows loaded into the working state before the decision that reads
//! them) and for answers, the side writes that commit emitted rows with their events, and the
//! rebuild of the tables from the log when their format changed (or they are missing: a data
//! directory from before them).

use spool_core::imports::{FileStatus, ImportFile, file_row_key, file_row_prefix};
use spool_core::machines::webhook::Delivery;
use spool_core::rows::{Need, TABLES_FORMAT, TABLES_FORMAT_KEY};
use spool_core::{RowWrite, State, VideoRow};
use spool_log::{AppendRequest, EventLog, READ_BATCH_MAX, SideTable, SideWrite};
use spool_model::{DeliveryId, ImportJobId, IndexId, VideoId, WebhookId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Rows put in one append of a rebuild.
const REBUILD_ROWS_PER_APPEND: usize = 4096;
/// …and at most about this many bytes of rows.
const REBUILD_BYTES_PER_APPEND: usize = 32 << 20;

fn side_write_bytes(w: &SideWrite) -> usize {
    match w {
        SideWrite::Put { key, value, .. } => key.len() + value.len(),
        SideWrite::Delete { key, .. } => key.len(),
        SideWrite::Snapshot { bytes, .. } => bytes.len(),
    }
}

/// The side writes of emitted rows: each commits with the events it follows from.
pub fn side_writes(rows: Vec<RowWrite>, out: &mut Vec<SideWrite>) {
    for r in rows {
        match r {
            RowWrite::Video(id, row) => {
                out.push(SideWrite::Put { table: SideTable::Videos, key: id.to_string(), value: row.encode() })
            }
            RowWrite::ImportKey(k) => {
                out.push(SideWrite::Put { table: SideTable::ImportKeys, key: hex::encode(k), value: Vec::new() })
            }
            RowWrite::JobFile(job_id, f) => out.push(SideWrite::Put {
                table: SideTable::JobFiles,
                key: file_row_key(&job_id, f.status, f.file.file_id),
                value: f.encode_row(),
            }),
            RowWrite::IndexVideo { index_id, created_at_ms, video_id, present } => {
                let key = spool_core::rows::index_video_key(&index_id, created_at_ms, &video_id);
                out.push(if present {
                    SideWrite::Put { table: SideTable::IndexVideos, key, value: Vec::new() }
                } else {
                    SideWrite::Delete { table: SideTable::IndexVideos, key }
                })
            }
            RowWrite::Delivery(d) => {
                let key =
                    spool_core::machines::webhook::webhook_delivery_key(&d.webhook_id, d.created_at_ms, &d.delivery_id);
                out.push(SideWrite::Put { table: SideTable::WebhookDeliveries, key, value: Vec::new() });
                out.push(SideWrite::Put {
                    table: SideTable::Deliveries,
                    key: d.delivery_id.to_string(),
                    value: d.encode_row(),
                });
            }
            RowWrite::Call(run_id, n, call) => out.push(SideWrite::Put {
                table: SideTable::RunCalls,
                key: spool_core::rows::call_key(&run_id, n),
                value: spool_core::rows::encode_row(spool_core::rows::CALL_ROW_FORMAT, &*call),
            }),
            RowWrite::Answer(key, answer) => out.push(SideWrite::Put {
                table: SideTable::RunAnswers,
                key: key.to_string(),
                value: spool_core::rows::encode_row(spool_core::rows::ANSWER_ROW_FORMAT, &*answer),
            }),
        }
    }
}

/// The rows of these ids that `table` holds (keyed by the id's text), in chunks of
/// [`READ_BATCH_MAX`]; a row that does not decode is left out, with a warning naming `what`.
fn read_rows<K: Ord + Copy + std::fmt::Display, V>(
    log: &(impl EventLog + ?Sized),
    table: SideTable,
    ids: impl IntoIterator<Item = K>,
    decode: fn(&[u8]) -> Option<V>,
    what: &str,
) -> Result<BTreeMap<K, Arc<V>>, spool_log::Error> {
    let mut ids: Vec<K> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(READ_BATCH_MAX) {
        let keys: Vec<String> = chunk.iter().map(|id| id.to_string()).collect();
        for (id, bytes) in chunk.iter().zip(log.side_get_many(table, &keys)?) {
            match bytes.as_deref().map(decode) {
                Some(Some(row)) => {
                    out.insert(*id, Arc::new(row));
                }
                Some(None) => tracing::warn!(id = %id, what, "a row of another format or damaged; left out"),
                None => {}
            }
        }
    }
    Ok(out)
}

/// The keys of `table` that begin with `prefix`, after `from` (a key, or the prefix itself for
/// the first), parsed, at most `n`; a key `parse` refuses is left out with a warning.
fn scan_keys<T>(
    log: &(impl EventLog + ?Sized),
    table: SideTable,
    prefix: &str,
    from: String,
    n: usize,
    parse: fn(&str) -> Option<T>,
) -> Result<Vec<T>, spool_log::Error> {
    scan_rows(log, table, prefix, from, n, |key, _| parse(key))
}

/// [`scan_keys`] over keys and values: the rows of `table` whose keys begin with `prefix`,
/// after `from`, parsed, at most `n`; a row `parse` refuses is left out with a warning.
fn scan_rows<T>(
    log: &(impl EventLog + ?Sized),
    table: SideTable,
    prefix: &str,
    mut from: String,
    n: usize,
    parse: impl Fn(&str, &[u8]) -> Option<T>,
) -> Result<Vec<T>, spool_log::Error> {
    let mut out = Vec::new();
    while out.len() < n {
        let want = (n - out.len()).min(READ_BATCH_MAX);
        let page = log.side_scan(table, Some(&from), want)?;
        let full = page.len() == want;
        for (key, value) in page {
            if !key.starts_with(prefix) {
                return Ok(out);
            }
            match parse(&key, &value) {
                Some(k) => out.push(k),
                None => tracing::warn!(key = %key, ?table, "a row of another shape or format; left out"),
            }
            from = key;
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Read the rows of these videos (those the table holds).
pub fn read_video_rows<L: EventLog + ?Sized>(
    log: &L,
    ids: impl IntoIterator<Item = VideoId>,
) -> Result<BTreeMap<VideoId, Arc<VideoRow>>, spool_log::Error> {
    read_rows(log, SideTable::Videos, ids, VideoRow::decode, "video")
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

/// Load what `named` names, then what it names once that is loaded, until it names nothing new
/// (at most [`spool_core::rows::NEEDS_ROUNDS_MAX`] rounds): a job's files, then their videos.
pub fn load_needs<L: EventLog + ?Sized>(
    log: &L,
    st: &mut State,
    named: impl Fn(&State) -> Vec<Need>,
) -> Result<(), spool_log::Error> {
    let mut before = Vec::new();
    for _ in 0..spool_core::rows::NEEDS_ROUNDS_MAX {
        let needs = named(st);
        if needs == before {
            break;
        }
        load(log, st, &needs)?;
        before = needs;
    }
    Ok(())
}

/// A job's finished files of one status (`Imported` or `Skipped`) with ids from `from` on, in id
/// order, at most `n`, from the `job_files` table.
pub fn read_job_files<L: EventLog + ?Sized>(
    log: &L,
    job_id: &ImportJobId,
    status: FileStatus,
    from: u32,
    n: usize,
) -> Result<Vec<Arc<ImportFile>>, spool_log::Error> {
    let prefix = file_row_prefix(job_id, status);
    let mut after = match from.checked_sub(1) {
        Some(before) => file_row_key(job_id, status, before),
        None => prefix.clone(),
    };
    let mut out = Vec::new();
    while out.len() < n {
        let page = log.side_scan(SideTable::JobFiles, Some(&after), (n - out.len()).min(READ_BATCH_MAX))?;
        let full = page.len() == (n - out.len()).min(READ_BATCH_MAX);
        for (key, bytes) in page {
            if !key.starts_with(&prefix) {
                return Ok(out);
            }
            match ImportFile::decode_row(&bytes) {
                Some(f) => out.push(Arc::new(f)),
                None => tracing::warn!(key = %key, "a job file row of another format or damaged; left out"),
            }
            after = key;
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

/// An index's videos after `after` in page order, at most `n`, from the `index_videos` table.
pub fn read_index_page<L: EventLog + ?Sized>(
    log: &L,
    index_id: &IndexId,
    after: Option<(u64, VideoId)>,
    n: usize,
) -> Result<Vec<(u64, VideoId)>, spool_log::Error> {
    let prefix = spool_core::rows::index_video_prefix(index_id);
    let from = match after {
        Some((c, v)) => spool_core::rows::index_video_key(index_id, c, &v),
        None => prefix.clone(),
    };
    scan_keys(log, SideTable::IndexVideos, &prefix, from, n, spool_core::rows::parse_index_video_key)
}

/// The rows of these delivered deliveries (those the table holds).
pub fn read_deliveries<L: EventLog + ?Sized>(
    log: &L,
    ids: impl IntoIterator<Item = DeliveryId>,
) -> Result<BTreeMap<DeliveryId, Arc<Delivery>>, spool_log::Error> {
    read_rows(log, SideTable::Deliveries, ids, Delivery::decode_row, "delivery")
}

/// The answers of these tasks (those the table holds: a task's answer is written in the commit
/// of the event in which it succeeded).
pub fn read_answers<L: EventLog + ?Sized>(
    log: &L,
    keys: impl IntoIterator<Item = spool_core::AnswerKey>,
) -> Result<spool_core::Answers, spool_log::Error> {
    read_rows(
        log,
        SideTable::RunAnswers,
        keys,
        |b| spool_core::rows::decode_row(spool_core::rows::ANSWER_ROW_FORMAT, b),
        "answer",
    )
}

/// A run's processor calls from number `from` on, at most `n` (`run_calls`), in order; a row
/// that does not decode is left out with a warning.
pub fn read_run_calls<L: EventLog + ?Sized>(
    log: &L,
    run_id: &spool_model::PromptRunId,
    from: u64,
    n: usize,
) -> Result<Vec<spool_core::machines::prompt_run::LlmCallRecord>, spool_log::Error> {
    let prefix = format!("{run_id}/");
    // The scan starts after a key: the one before `from`'s (the prefix itself for 0).
    let after = if from == 0 { prefix.clone() } else { spool_core::rows::call_key(run_id, from - 1) };
    scan_rows(log, SideTable::RunCalls, &prefix, after, n, |_, bytes| {
        spool_core::rows::decode_row(spool_core::rows::CALL_ROW_FORMAT, bytes)
    })
}

/// A webhook's delivered deliveries, newest first, at most `n` (from the `webhook_deliveries`
/// table): their (created_at, id).
pub fn read_webhook_delivered<L: EventLog + ?Sized>(
    log: &L,
    webhook_id: &WebhookId,
    before: Option<(u64, DeliveryId)>,
    n: usize,
) -> Result<Vec<(u64, DeliveryId)>, spool_log::Error> {
    use spool_core::machines::webhook::{parse_webhook_delivery_key, webhook_delivery_key, webhook_delivery_prefix};
    let prefix = webhook_delivery_prefix(webhook_id);
    // Keys sort newest first: the ones after a delivery's own key are older than it.
    let from = before.map_or_else(|| prefix.clone(), |(at, d)| webhook_delivery_key(webhook_id, at, &d));
    scan_keys(log, SideTable::WebhookDeliveries, &prefix, from, n, parse_webhook_delivery_key)
}

/// Load what a decision reads from the tables into the state (`spool_core::rows::Need`): the
/// one place that reads tables for decisions. Rows the state holds are not read again; loaded
/// rows count as durable (sequence 0).
pub fn load<L: EventLog + ?Sized>(log: &L, st: &mut State, needs: &[Need]) -> Result<(), spool_log::Error> {
    for need in needs {
        match need {
            Need::Videos(ids) => load_video_rows(log, st, ids)?,
            Need::ImportKeys(keys) => {
                let mut missing: Vec<_> = keys.iter().filter(|k| !st.rows.keys.contains_key(*k)).copied().collect();
                missing.sort_unstable();
                missing.dedup();
                for chunk in missing.chunks(READ_BATCH_MAX) {
                    let names: Vec<String> = chunk.iter().map(hex::encode).collect();
                    for (k, found) in chunk.iter().zip(log.side_get_many(SideTable::ImportKeys, &names)?) {
                        st.rows.keys.insert(*k, (0, found.is_some()));
                    }
                }
            }
            Need::IndexPage { index_id, after, n } => {
                if st.rows.index_pages.get(&(*index_id, *after)).is_some_and(|p| p.n >= *n) {
                    continue;
                }
                let keys = read_index_page(log, index_id, *after, *n)?;
                st.rows.index_pages.insert((*index_id, *after), spool_core::rows::IndexPage { n: *n, keys });
            }
            Need::Deliveries(ids) => {
                let missing: Vec<DeliveryId> =
                    ids.iter().filter(|id| !st.rows.deliveries.contains_key(id)).copied().collect();
                if !missing.is_empty() {
                    for (id, d) in read_deliveries(log, missing)? {
                        st.rows.deliveries.insert(id, (0, d));
                    }
                }
            }
            Need::JobFiles { job_id, status, n } => {
                if st.rows.has_head(job_id, *status, *n) {
                    continue;
                }
                for f in read_job_files(log, job_id, *status, 0, *n)? {
                    st.rows.files.entry((*job_id, f.file.file_id)).or_insert((0, f));
                }
                st.rows.file_heads.insert((*job_id, *status), *n);
            }
        }
    }
    Ok(())
}

/// Build the tables from the log when they are not of [`TABLES_FORMAT`]: the log is folded from
/// its first event with rows emitted (a row may depend on the state its event folds into: a
/// job's file), each row put as it comes (4,096 per append), then the format, last (a rebuild
/// cut short starts again). Runs before the sequencer takes commands. Returns the rows written
/// (0 when the tables were current).
pub fn ensure_tables<L: EventLog + ?Sized>(log: &L) -> Result<u64, spool_log::Error> {
    let format = TABLES_FORMAT.to_le_bytes().to_vec();
    if log.side_get(SideTable::Videos, TABLES_FORMAT_KEY)?.as_deref() == Some(&format[..]) {
        return Ok(0);
    }
    let began = std::time::Instant::now();
    let mut st = State::default();
    st.rows.emit = true;
    let mut written = 0u64;
    let mut side = Vec::new();
    let mut kept_from = 0;
    loop {
        let batch = log.read_from(st.applied_seq + 1, READ_BATCH_MAX)?;
        let Some(first) = batch.first().map(|e| e.seq) else { break };
        // The rows a later event may complete (a file's parts) come from the batch before at
        // most: older ones are let go.
        st.rows.forget_durable(kept_from);
        kept_from = first.saturating_sub(1);
        for env in &batch {
            // An event from before the tables reads its videos' rows: the rows put so far are
            // written first, so it finds them in the table.
            let reads = spool_core::rows::fold_reads(&env.event);
            if !reads.is_empty() {
                let rows = st.rows.take_written();
                written += rows.len() as u64;
                side_writes(rows, &mut side);
                futures::executor::block_on(
                    log.append(AppendRequest { streams: vec![], side: std::mem::take(&mut side) }),
                )?;
                load_video_rows(log, &mut st, &reads)?;
            }
            spool_core::evolve(&mut st, env);
        }
        let rows = st.rows.take_written();
        written += rows.len() as u64;
        side_writes(rows, &mut side);
        // Bounded in rows and in bytes (an answer's row can be as large as a processor's
        // response, 1 MiB by default).
        let bytes: usize = side.iter().map(side_write_bytes).sum();
        if side.len() >= REBUILD_ROWS_PER_APPEND || bytes >= REBUILD_BYTES_PER_APPEND {
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
