//! The search projection (`engine-spec/search.md`): a follower of the log that keeps every
//! task answer of every prompt run in a tantivy index on disk (`spool_search`), with the log
//! position it reflects recorded in each of its commits. It reads the durable, folded events
//! after that position (never ahead of what readers see), so a crash leaves it behind at worst
//! and it goes on from its position; an index ahead of the log (another log, a restored
//! backup) or of another format is rebuilt from the start.
//!
//! A run reads as finished only once the projection passed the event that finished it
//! ([`Runtime::searchable`]): `completed` means searchable.

use crate::Runtime;
use spool_core::State;
use spool_core::machines::prompt_run::segment_id;
use spool_model::{Envelope, Event, PromptRunId, RunTask, TaskAnswer};
use spool_search::{Doc, PLAYGROUND, SearchIndex};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The projection's folder inside the data directory (`search/` or `search/p<N>/`).
pub const SEARCH_DIR: &str = "search";
/// Events read from the log at a time.
const READ_BATCH: usize = 2048;
/// A catch-up commits after this many batches (a rebuild's progress survives a crash; finished
/// runs become searchable as it goes).
const COMMIT_BATCHES: u32 = 16;
/// With nothing indexed, the position is still recorded after this many events (a restart
/// reads at most that again).
const IDLE_COMMIT_EVENTS: u64 = 10_000;
/// Answers indexed while no run finished are committed at most this long after the last commit
/// (a tantivy commit writes a segment and syncs it: one per log commit cost a third of the
/// cores in `spool bench prompt-run`). A run's end, a deletion, [`COMMIT_RESULTS`] pending
/// results or a catch-up commit at once.
const COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Results pending that are committed without waiting for [`COMMIT_INTERVAL`].
const COMMIT_RESULTS: u64 = 20_000;
/// Commits of every search projection in this process (`/metrics`): a partitioned node keeps
/// one per index partition, and `/metrics` is answered by its catalog.
pub static SEARCH_COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The document of a task's answer, from the run as the state has it (`video_index`: the index
/// a video is in, for a run of named videos without one).
pub fn doc_of(
    st: &State,
    run_id: &PromptRunId,
    task: RunTask,
    answer: &TaskAnswer,
    video_index: impl Fn(&spool_model::VideoId) -> Option<spool_model::IndexId>,
) -> Option<Doc> {
    let run = st.prompt_runs.get(run_id)?;
    let (video_no, segment, range) = match task {
        RunTask::Segment(n) => {
            let seg = run.segments.get(usize::try_from(n).ok()?)?;
            (seg.video, Some(segment_id(run_id, n)), Some(seg.range))
        }
        RunTask::Video(v) => (v, None, None),
    };
    let video = run.videos.get(usize::try_from(video_no).ok()?)?;
    let index_id = match run.index_id() {
        Some(i) => i.to_string(),
        None => match (&run.target, video_index(&video.video_id)) {
            (spool_model::RunTarget::Videos { .. }, Some(index)) => index.to_string(),
            _ => PLAYGROUND.to_string(),
        },
    };
    let result_id = match &segment {
        Some(s) => format!("{run_id}:{s}"),
        None => format!("{run_id}:{}", video.video_id),
    };
    Some(Doc {
        result_id,
        run_id: run_id.to_string(),
        prompt_id: run.prompt_id.to_string(),
        video_id: video.video_id.to_string(),
        index_id,
        segment_id: segment,
        start_us: range.map_or(0, |r| r.start_us),
        end_us: range.map_or(0, |r| r.end_us),
        media_type: video.media_type.as_str().to_string(),
        metadata_json: answer.metadata_json.clone(),
        metadata_text: answer.metadata_text.clone(),
    })
}

impl Runtime {
    /// A prompt definition for `instruction` from the processor that writes them
    /// (`processors.define`), or `None` when no processor here does.
    pub async fn define_prompt(&self, instruction: &str) -> Result<Option<serde_json::Value>, String> {
        let id = format!("def_{}", self.new_ulid());
        self.executors.prompt_runs.define_prompt(instruction, &id, self.now_ms()).await
    }

    /// The `embed` processor, if one is configured.
    pub fn embedder(&self) -> Option<&crate::EmbedderConfig> {
        self.executors.prompt_runs.settings.embedder.as_ref()
    }

    /// Vectors for `inputs` from the embedder (`None`: none is configured).
    pub async fn embed(&self, inputs: &[crate::EmbedInput]) -> Result<Option<Vec<Vec<f32>>>, crate::PostError> {
        let id = format!("emb_{}", self.new_ulid());
        self.executors.prompt_runs.embed(inputs, &id, || self.now_ms()).await
    }

    /// Vectors for the texts of a step, or the reason to try the step again. The runtime
    /// stopping ends the wait. An answer the embedder will give again (a 4xx, a malformed
    /// answer) is not a reason to hold the projection back: each text is then asked alone, and
    /// one that still fails is indexed without a vector (logged).
    fn embed_texts(&self, inputs: &[crate::EmbedInput]) -> Result<Vec<Option<Vec<f32>>>, String> {
        let mut stop = self.stopping.subscribe();
        let ask = |inputs: &[crate::EmbedInput]| {
            let inputs = inputs.to_vec();
            let mut stop = self.stopping.subscribe();
            tokio::runtime::Handle::current().block_on(async {
                tokio::select! {
                    r = self.embed(&inputs) => Some(r),
                    _ = stop.wait_for(|s| *s) => None,
                }
            })
        };
        let stopped = || "the runtime is stopping".to_string();
        match ask(inputs).ok_or_else(stopped)? {
            Ok(Some(v)) => Ok(v.into_iter().map(Some).collect()),
            Ok(None) => Err("the embedder is gone".into()),
            Err(e) if !e.permanent => Err(e.message),
            Err(e) => {
                tracing::warn!(error = %e.message, "the embedder refused a batch of result texts; asking for each alone");
                let mut out = Vec::with_capacity(inputs.len());
                for one in inputs {
                    if *stop.borrow_and_update() {
                        return Err(stopped());
                    }
                    match ask(std::slice::from_ref(one)).ok_or_else(stopped)? {
                        Ok(Some(mut v)) => out.push(v.pop()),
                        Ok(None) => return Err("the embedder is gone".into()),
                        Err(e) if !e.permanent => return Err(e.message),
                        Err(e) => {
                            tracing::warn!(error = %e.message, "a result text is indexed without a vector: the embedder refused it");
                            out.push(None);
                        }
                    }
                }
                // Vectors of another length than the rest's are not kept.
                let len = out.iter().flatten().next().map(Vec::len);
                Ok(out.into_iter().map(|v| v.filter(|v| Some(v.len()) == len)).collect())
            }
        }
    }

    /// For a follower of the log that has read through `read_to`: how far the read state has
    /// folded once it is past `read_to` (waiting for a commit), or `None` when the runtime stops.
    pub(crate) async fn events_after(
        &self,
        read_to: u64,
        applied: &mut tokio::sync::watch::Receiver<u64>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<u64> {
        loop {
            if *stop.borrow() {
                return None;
            }
            let through = self.applied_seq();
            if through > read_to {
                return Some(through);
            }
            tokio::select! {
                _ = applied.changed() => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// The search projection, when this runtime keeps one.
    pub fn search_index(&self) -> Option<&Arc<SearchIndex>> {
        self.search.as_ref()
    }

    /// Whether a run finished at `finished_seq` is searchable (the projection passed it; true
    /// when this runtime keeps no projection).
    pub fn searchable(&self, finished_seq: u64) -> bool {
        self.search.as_ref().is_none_or(|s| s.position() >= finished_seq)
    }

    /// What one event does to the projection: an answer to index, a video's or an index's
    /// results to delete, nothing (`None`: the event does not concern it).
    fn search_op(&self, env: &Envelope) -> Option<Op> {
        match &env.event {
            Event::PromptTaskSucceeded { run_id, task, answer, .. } => {
                let index_of = |v: &spool_model::VideoId| self.video_row(v).ok().flatten().map(|r| r.index_id);
                let doc = self.read(|st| doc_of(st, run_id, *task, answer, index_of)).map(Box::new);
                Some(Op::Upsert { key: (*run_id, *task), doc, ivec: None })
            }
            Event::PromptTaskImageVector { run_id, task, vector_le, .. } => {
                Some(Op::ImageVector { key: (*run_id, *task), ivec: vector_of(vector_le) })
            }
            Event::VideoDeleted { video_id, .. } => Some(Op::DeleteVideo(video_id.to_string())),
            Event::IndexDeleted { index_id, .. } => Some(Op::DeleteIndex(index_id.to_string())),
            Event::PromptRunFinished { .. } => Some(Op::RunFinished),
            _ => None,
        }
    }

    /// The upsert of a task's answer read again from the log, with its image vector.
    fn answer_again(&self, key: (PromptRunId, RunTask), ivec: Option<Vec<f32>>) -> Result<Op, crate::RuntimeError> {
        let (run_id, task) = key;
        let answers = self.run_answers([spool_core::AnswerKey { run_id, task }])?;
        let Some(answer) = answers.get(&spool_core::AnswerKey { run_id, task }) else { return Ok(Op::Nothing) };
        let index_of = |v: &spool_model::VideoId| self.video_row(v).ok().flatten().map(|r| r.index_id);
        let doc = self.read(|st| doc_of(st, &run_id, task, answer, index_of)).map(Box::new);
        Ok(Op::Upsert { key, doc, ivec })
    }

    /// Applies `ops` in log order (each once: `SearchIndex::apply_at`), the answers' texts
    /// embedded first when an embedder is configured (one request per
    /// [`crate::EMBED_INPUTS_MAX`] answers).
    fn apply_ops(&self, ix: &SearchIndex, ops: &mut Vec<(u64, Op)>) -> Result<(), String> {
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; ops.len()];
        let embedder = self.embedder().is_some();
        if embedder {
            let mut at = Vec::new();
            let mut inputs = Vec::new();
            for (i, (seq, op)) in ops.iter().enumerate() {
                if let (Op::Upsert { doc: Some(d), .. }, true) = (op, ix.applied() < *seq) {
                    let text = embed_text(d);
                    if !text.is_empty() {
                        at.push(i);
                        inputs.push(crate::EmbedInput::Text(text));
                    }
                }
            }
            if !inputs.is_empty() {
                let got = self.embed_texts(&inputs)?;
                for (i, v) in at.into_iter().zip(got) {
                    vectors[i] = v;
                }
            }
        }
        for ((seq, op), tvec) in ops.drain(..).zip(vectors) {
            ix.apply_at(seq, |ix| match &op {
                // Image vectors are searched with the embedder's: without one they are not kept.
                Op::Upsert { doc: Some(d), ivec, .. } => {
                    ix.upsert_with(d, tvec.as_deref(), ivec.as_deref().filter(|_| embedder))
                }
                Op::DeleteVideo(v) => {
                    ix.delete_video(v);
                    Ok(())
                }
                Op::DeleteIndex(i) => {
                    ix.delete_index(i);
                    Ok(())
                }
                Op::Upsert { doc: None, .. } | Op::Nothing | Op::RunFinished | Op::ImageVector { .. } => Ok(()),
            })
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Follows the log into the search projection until the runtime stops.
    pub(crate) async fn follow_search(self: Arc<Self>) {
        let Some(ix) = self.search.clone() else { return };
        let mut stop = self.stopping.subscribe();
        let mut applied = self.watch_applied();
        self.wait_ready().await;
        let head = self.log().head();
        let embedder = self.embedder().map(crate::EmbedderConfig::identity);
        let other_embedder = ix.embedder() != embedder && (ix.position() > 0 || embedder.is_some());
        if ix.position() > head || other_embedder {
            if other_embedder {
                tracing::warn!("the search index's vectors are not the configured embedder's; rebuilding it");
            } else {
                tracing::warn!(position = ix.position(), head, "the search index is ahead of the log; rebuilding it");
            }
            while let Err(e) = ix.clear(embedder.as_deref()) {
                tracing::error!(error = %e, "the search index cannot be cleared; trying again in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
        let mut read_to = ix.position();
        let mut last_commit = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            // Debug builds: `SPOOL_FAILPOINTS=search_stall` keeps the projection where it is (a
            // crash between a run's end and its indexing, `tests/sdk/test_search_crash.py`).
            if spool_model::failpoint("search_stall") {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            // Indexed and not committed: committed by the interval's end if nothing urgent
            // comes first.
            let waiting = ix.pending() > 0;
            let due = last_commit + COMMIT_INTERVAL;
            let next = tokio::select! {
                n = self.events_after(read_to, &mut applied, &mut stop) => match n {
                    Some(through) => Some(through),
                    None => return,
                },
                _ = tokio::time::sleep_until(due), if waiting => None,
            };
            let me = self.clone();
            let ix2 = ix.clone();
            let now = tokio::time::Instant::now();
            let commit_due = now >= due;
            let step = tokio::task::spawn_blocking(move || match next {
                Some(through) => me.search_step(&ix2, read_to, through, commit_due),
                None => me.search_commit(&ix2, read_to).map(|()| (read_to, true)),
            })
            .await;
            let failed = match step {
                Ok(Ok((to, committed))) => {
                    read_to = to;
                    if committed {
                        last_commit = now;
                    }
                    continue;
                }
                Ok(Err(e)) => format!("the step failed: {e}"),
                // A panic while indexing is handled as a failure.
                Err(e) => format!("the step panicked: {e}"),
            };
            // Logged, what the step applied dropped (a failed indexing worker may have lost
            // it), and read again from the last commit a second later (finished runs read
            // `processing` meanwhile).
            tracing::error!(error = %failed, "the search projection could not index; trying again in 1 s");
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = ix.rollback() {
                tracing::error!(error = %e, "the search index could not roll back");
            }
            read_to = ix.position();
            last_commit = tokio::time::Instant::now();
        }
    }

    /// Commits what was applied through `read_to`.
    fn search_commit(&self, ix: &SearchIndex, read_to: u64) -> Result<(), String> {
        ix.commit(read_to).map_err(|e| e.to_string())?;
        SEARCH_COMMITS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the events after `from` through at most `through` and indexes them; commits when a
    /// run finished or something was deleted among them, when [`COMMIT_RESULTS`] results wait,
    /// when `due` (the interval since the last commit passed) and something changed, or after
    /// [`IDLE_COMMIT_EVENTS`] with nothing changed; returns how far it read and whether it
    /// committed.
    fn search_step(&self, ix: &SearchIndex, from: u64, through: u64, due: bool) -> Result<(u64, bool), String> {
        let mut read_to = from;
        let mut urgent = false;
        let mut committed = false;
        let mut batches = 0u32;
        while read_to < through {
            // A long catch-up (a rebuild) commits as it goes and stops with the runtime.
            if batches > 0 && batches.is_multiple_of(COMMIT_BATCHES) {
                if read_to > ix.position() || ix.pending() > 0 {
                    self.search_commit(ix, read_to)?;
                    committed = true;
                    urgent = false;
                }
                if *self.stopping.borrow() {
                    return Ok((read_to, committed));
                }
            }
            batches += 1;
            let envs = self.log().read_from(read_to + 1, READ_BATCH).map_err(|e| e.to_string())?;
            if envs.is_empty() {
                break;
            }
            let mut ops = Vec::new();
            for env in &envs {
                if env.seq > through {
                    break;
                }
                if let Some(mut op) = self.search_op(env) {
                    // A segment's image vector follows its answer in the same decision: it goes
                    // with the answer's upsert, or (the answer read in an earlier step) with the
                    // answer read again.
                    if let Op::ImageVector { key, ivec } = op {
                        match ops.last_mut() {
                            Some((_, Op::Upsert { key: k, ivec: slot, .. })) if *k == key => {
                                *slot = ivec;
                                read_to = env.seq;
                                continue;
                            }
                            _ => op = self.answer_again(key, ivec).map_err(|e| e.to_string())?,
                        }
                    }
                    // A deletion waits for the answers before it (their texts are embedded
                    // together): applied in log order.
                    let flush = matches!(op, Op::DeleteVideo(_) | Op::DeleteIndex(_));
                    // A finished run reads `completed` once committed; a deletion is seen at once.
                    urgent |= flush || matches!(op, Op::RunFinished);
                    ops.push((env.seq, op));
                    if flush {
                        self.apply_ops(ix, &mut ops)?;
                    }
                }
                read_to = env.seq;
            }
            self.apply_ops(ix, &mut ops)?;
            if envs.len() < READ_BATCH {
                break;
            }
        }
        let changed = ix.pending() > 0;
        if urgent || ix.pending() >= COMMIT_RESULTS || (due && changed) || read_to >= ix.position() + IDLE_COMMIT_EVENTS
        {
            self.search_commit(ix, read_to)?;
            committed = true;
        }
        Ok((read_to, committed))
    }
}

/// A change an event makes to the projection.
enum Op {
    /// A task's answer (`None`: the run or video is gone from the state), with the segment's
    /// image vector when one follows it.
    Upsert {
        key: (PromptRunId, RunTask),
        doc: Option<Box<Doc>>,
        ivec: Option<Vec<f32>>,
    },
    /// A segment's image vector (attached to its answer's upsert).
    ImageVector {
        key: (PromptRunId, RunTask),
        ivec: Option<Vec<f32>>,
    },
    DeleteVideo(String),
    DeleteIndex(String),
    /// A run finished: it reads `completed` once the projection committed past it.
    RunFinished,
    Nothing,
}

/// A vector from its little-endian bytes (`None`: not a whole number of `f32`s, or empty).
fn vector_of(le: &[u8]) -> Option<Vec<f32>> {
    if le.is_empty() || !le.len().is_multiple_of(4) {
        return None;
    }
    Some(le.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// The longest text embedded of a result (its first characters).
pub const EMBED_TEXT_CHARS_MAX: usize = 2_000;

/// The text of a result an embedder turns into its vector: its `metadata_text`, else the
/// strings of its `metadata`, at most [`EMBED_TEXT_CHARS_MAX`] characters.
pub fn embed_text(d: &Doc) -> String {
    let text = if d.metadata_text.trim().is_empty() {
        let meta: serde_json::Value = serde_json::from_str(&d.metadata_json).unwrap_or_default();
        let mut leaves = Vec::new();
        spool_search::string_leaves(&meta, &mut String::new(), &mut leaves);
        leaves.iter().map(|(_, s)| *s).collect::<Vec<_>>().join(". ")
    } else {
        d.metadata_text.clone()
    };
    text.trim().chars().take(EMBED_TEXT_CHARS_MAX).collect()
}

/// What `spool verify` finds of the search projection in `dir` against the log: the projection
/// rebuilt from the log (through the position the index on disk records, with the final
/// state, as a rebuild would) and compared result by result.
pub fn verify_search(
    log: &dyn spool_log::RawLog,
    state: &State,
    dir: &std::path::Path,
) -> Result<Vec<String>, spool_log::Error> {
    use std::collections::BTreeMap;
    let mut problems = Vec::new();
    let storage = |e: spool_search::Error| spool_log::Error::Storage(e.to_string());
    let Some((position, on_disk)) = spool_search::read_all(dir).map_err(storage)? else {
        return Ok(problems);
    };
    let head = log.head();
    if position > head {
        problems.push(format!(
            "the search index is at seq {position}, ahead of the log's head {head} (it is rebuilt at the next start)"
        ));
        return Ok(problems);
    }
    let digest = |d: &Doc| -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(serde_json::to_vec(d).unwrap_or_default()).into()
    };
    let mut want: BTreeMap<String, ([u8; 32], String, String)> = BTreeMap::new();
    let mut seq = 1;
    'read: loop {
        let batch = log.read_from(seq, spool_log::READ_BATCH_MAX)?;
        let Some(last) = batch.last().map(|e| e.seq) else { break };
        seq = last + 1;
        for env in batch {
            if env.seq > position {
                break 'read;
            }
            match &env.event {
                Event::PromptTaskSucceeded { run_id, task, answer, .. } => {
                    let index_of = |v: &spool_model::VideoId| {
                        crate::rows::read_video_rows(log, [*v]).ok().and_then(|mut m| m.remove(v)).map(|r| r.index_id)
                    };
                    if let Some(doc) = doc_of(state, run_id, *task, answer, index_of) {
                        want.insert(doc.result_id.clone(), (digest(&doc), doc.video_id.clone(), doc.index_id.clone()));
                    }
                }
                Event::VideoDeleted { video_id, .. } => {
                    let v = video_id.to_string();
                    want.retain(|_, (_, video, _)| *video != v);
                }
                Event::IndexDeleted { index_id, .. } => {
                    let i = index_id.to_string();
                    want.retain(|_, (_, _, index)| *index != i);
                }
                _ => {}
            }
        }
    }
    let mut found = 0usize;
    for d in &on_disk {
        match want.get(&d.result_id) {
            None => problems.push(format!("the search index holds {} that the log does not make", d.result_id)),
            Some((h, _, _)) if *h != digest(d) => {
                problems.push(format!("the search index's {} differs from the log's", d.result_id))
            }
            Some(_) => found += 1,
        }
        if problems.len() >= 20 {
            problems.push("(more differences not listed)".into());
            return Ok(problems);
        }
    }
    if found < want.len() {
        let have: std::collections::HashSet<&str> = on_disk.iter().map(|d| d.result_id.as_str()).collect();
        for id in want.keys().filter(|k| !have.contains(k.as_str())).take(20) {
            problems.push(format!("the search index lacks {id}, which the log makes (through seq {position})"));
        }
    }
    Ok(problems)
}
