//! Tables of the fold (`engine-spec/tables.md`): the facts that never change once written
//! (today the immutable facts of videos, [`VideoRow`]) live in tables of the log's store, not in
//! the state. The fold emits them: the sequencer commits each row in the same transaction as
//! the event it follows from, so a row is durable exactly when its event is. A decision that
//! reads rows gets them from [`Rows::videos`]: the rows of events folded into this state and not
//! yet known durable, and the rows the runtime loaded for it (`spool_runtime`'s loader, the one
//! place that reads tables for decisions).

use crate::machines::video::VideoRow;
use spool_model::VideoId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The format of the tables as a whole; the log's store keeps the format it was built with
/// under [`TABLES_FORMAT_KEY`] of the `videos` table, and a store of another format (or none:
/// a data directory from before the tables) is rebuilt from the log at start.
pub const TABLES_FORMAT: u32 = 1;
/// Where the tables' format is kept (a key no video id can take).
pub const TABLES_FORMAT_KEY: &str = "~format";
/// Rows a state keeps for decisions beyond those of events in flight; past it the runtime
/// forgets the durable ones.
pub const ROWS_KEPT_MAX: usize = 4096;

/// A write into a table, emitted by the fold of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowWrite {
    Video(VideoId, Arc<VideoRow>),
}

/// The rows a state holds for decisions and the rows its fold emitted. Not part of the state's
/// truth: it is never in a snapshot and two states that differ only here are equal.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Whether the fold emits rows (`written`) and keeps the rows of new videos (`videos`): the
    /// sequencer's working state and a rebuild; the read state's fold does not (its rows are in
    /// the table already).
    pub emit: bool,
    /// Rows written by the events folded since the last [`Rows::take_written`].
    pub written: Vec<RowWrite>,
    /// Rows a decision may read, with the sequence number of the event that wrote them (0: read
    /// from the table).
    pub videos: BTreeMap<VideoId, (u64, Arc<VideoRow>)>,
}

impl PartialEq for Rows {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rows {}

impl Rows {
    /// The rows emitted since the last call.
    pub fn take_written(&mut self) -> Vec<RowWrite> {
        std::mem::take(&mut self.written)
    }

    /// Forget the rows that are durable (written at or below `durable_seq`, or loaded) once
    /// more than [`ROWS_KEPT_MAX`] are kept: those still in flight stay, the rest can be read
    /// from the table again.
    pub fn forget_durable(&mut self, durable_seq: u64) {
        if self.videos.len() > ROWS_KEPT_MAX {
            self.videos.retain(|_, (seq, _)| *seq > durable_seq);
        }
    }
}

/// The row an event writes, if any: a pure function of the event (the fold emits it, and a
/// rebuild of the tables from the log reads it off each event).
pub fn of_event(event: &spool_model::Event) -> Option<RowWrite> {
    use spool_model::Event;
    match event {
        Event::VideoCreated {
            video_id,
            title,
            connector_id,
            source_path,
            source_etag,
            size_bytes,
            sha256,
            media_path,
            ..
        } => Some(RowWrite::Video(
            *video_id,
            Arc::new(VideoRow {
                title: title.clone(),
                connector_id: *connector_id,
                source_path: source_path.clone(),
                source_etag: source_etag.clone(),
                size_bytes: *size_bytes,
                sha256: *sha256,
                media_path: media_path.clone(),
                facts: None,
                part: None,
                parts: Vec::new(),
            }),
        )),
        Event::VideoImported {
            video_id,
            title,
            connector_id,
            source_path,
            source_etag,
            size_bytes,
            sha256,
            media_path,
            facts,
            part,
            parts,
            ..
        } => Some(RowWrite::Video(
            *video_id,
            Arc::new(VideoRow {
                title: title.clone(),
                connector_id: *connector_id,
                source_path: source_path.clone(),
                source_etag: source_etag.clone(),
                size_bytes: *size_bytes,
                sha256: *sha256,
                media_path: media_path.clone(),
                facts: Some(facts.clone()),
                part: Some(*part),
                parts: parts.clone(),
            }),
        )),
        _ => None,
    }
}

/// Where a view reads the immutable facts of videos: a state's [`Rows`], or rows the API read
/// from the table for one answer.
pub trait RowSource {
    fn video_row(&self, id: &VideoId) -> Option<Arc<VideoRow>>;
}

impl RowSource for crate::State {
    fn video_row(&self, id: &VideoId) -> Option<Arc<VideoRow>> {
        self.rows.videos.get(id).map(|(_, r)| r.clone())
    }
}

impl RowSource for BTreeMap<VideoId, Arc<VideoRow>> {
    fn video_row(&self, id: &VideoId) -> Option<Arc<VideoRow>> {
        self.get(id).cloned()
    }
}

/// No rows (views that need none, and tests).
pub struct NoRows;

impl RowSource for NoRows {
    fn video_row(&self, _: &VideoId) -> Option<Arc<VideoRow>> {
        None
    }
}
