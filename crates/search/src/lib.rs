//! The search projection's index: every result of a prompt run (a segment's or a video's
//! answer) as one tantivy document, ranked by BM25 (`engine-spec/search.md`).
//!
//! Spool does its own tokenising (lower-cased runs of letters and digits, at most
//! [`TOKEN_CHARS_MAX`] characters, [`TOKENS_PER_RESULT_MAX`] a result), so a query and a result
//! are cut the same way and a field path can be part of a term: the `text` field holds every
//! word of a result (its `metadata_text` and every string of its `metadata`); the `paths` field
//! holds `<path>\u{1f}<word>` for each, so a search can be narrowed to fields. Both are indexed
//! with frequencies (BM25's term frequency and length norm work as for any text field).
//!
//! With an embedder, a result also carries vectors (`tvec`: its text's; `ivec`: its segment
//! image's, when the run's processor gave one) in bytes fast fields, L2-normalised little-endian
//! `f32`s; [`SearchIndex::nearest`] ranks the results of a scope by cosine similarity to a query
//! vector (a scan of the scope: exact, no approximate index).
//!
//! The index records the log position it reflects in each commit's payload
//! (`{"format":N,"position":P,"embedder":E}`); an index of another format is emptied at open
//! (position 0: the runtime rebuilds it from the log), and so is one whose vectors came from
//! another embedder (the runtime's check, [`SearchIndex::embedder`]).

use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

/// The format of the documents and the payload; another format is rebuilt.
pub const SEARCH_FORMAT: u32 = 2;
/// A word longer than this is not indexed (nor searched).
pub const TOKEN_CHARS_MAX: usize = 40;
/// Words indexed per result at most (its first ones).
pub const TOKENS_PER_RESULT_MAX: usize = 20_000;
/// The writer's memory budget.
const WRITER_BYTES: usize = 16 * 1024 * 1024;
/// The separator between a field path and a word in the `paths` field.
const PATH_SEP: char = '\u{1f}';
/// How the `index_id` field names results of runs without an index.
pub const PLAYGROUND: &str = "playground";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index folder {0}: {1}")]
    Io(String, std::io::Error),
    #[error("search index: {0}")]
    Other(String),
}

/// One result, as indexed and as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// `{run_id}:{segment_id}` or `{run_id}:{video_id}` (a video-level result).
    pub result_id: String,
    pub run_id: String,
    pub prompt_id: String,
    pub video_id: String,
    /// The run's index, or [`PLAYGROUND`].
    pub index_id: String,
    /// `None` for a video-level result.
    pub segment_id: Option<String>,
    pub start_us: u64,
    pub end_us: u64,
    /// `video`, `audio` or `image`.
    pub media_type: String,
    pub metadata_json: String,
    pub metadata_text: String,
}

/// One hit: the result and its score (BM25; `None` for a filter's hits).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub score: Option<f32>,
    pub doc: Doc,
}

/// Which results a search looks at: all of the given runs and indexes (an empty list: any).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub run_ids: Vec<String>,
    pub index_ids: Vec<String>,
    pub video_ids: Vec<String>,
}

struct Fields {
    result_id: Field,
    run_id: Field,
    video_id: Field,
    index_id: Field,
    text: Field,
    paths: Field,
    doc: Field,
    tvec: Field,
    ivec: Field,
}

/// What a nearest-neighbour search found.
#[derive(Debug, Default)]
pub struct Nearby {
    /// Best first, the cosine similarity as the score.
    pub hits: Vec<Hit>,
    /// Results in scope with such a vector.
    pub present: u64,
    /// Of those, the ones of the query's length (compared).
    pub compared: u64,
}

/// Which of a result's vectors a nearest-neighbour search compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vectors {
    /// The result's text.
    Text,
    /// The segment's image (runs with image embedding).
    Image,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer("raw").set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        result_id: b.add_text_field("result_id", STRING | tantivy::schema::FAST),
        run_id: b.add_text_field("run_id", STRING),
        video_id: b.add_text_field("video_id", STRING),
        index_id: b.add_text_field("index_id", STRING),
        text: b.add_text_field("text", words.clone()),
        paths: b.add_text_field("paths", words),
        doc: b.add_bytes_field("doc", STORED),
        tvec: b.add_bytes_field("tvec", tantivy::schema::FAST),
        ivec: b.add_bytes_field("ivec", tantivy::schema::FAST),
    };
    (b.build(), fields)
}

/// `v` scaled to length 1 (`None`: empty, zero or not finite).
fn normalized(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if v.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

/// A vector as stored: normalised, little-endian `f32`s.
fn vector_bytes(v: &[f32]) -> Option<Vec<u8>> {
    Some(normalized(v)?.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// The dot product of a stored vector with `q` (`None`: another length).
fn dot(stored: &[u8], q: &[f32]) -> Option<f32> {
    if stored.len() != q.len() * 4 {
        return None;
    }
    Some(stored.chunks_exact(4).zip(q).map(|(b, y)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * y).sum())
}

/// A score and a document, ordered by score (a min-heap keeps the best `k`).
struct Scored(f32, DocAddress);

impl PartialEq for Scored {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    // Reversed: the heap's top is the worst kept; ties by address, for a stable order.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then_with(|| self.1.cmp(&o.1))
    }
}

/// Collects the `top_k` documents whose vector in `field` is nearest `query` (normalised).
struct Nearest {
    field: &'static str,
    query: Vec<f32>,
    top_k: usize,
}

struct NearestInSegment {
    column: Option<tantivy::columnar::BytesColumn>,
    query: Vec<f32>,
    top_k: usize,
    segment: u32,
    /// `(vector ordinal, document)` of each document in scope that has a vector: the vectors are
    /// read in one ordered pass of the column's dictionary at the end (a lookup each would seek).
    found: Vec<(u64, tantivy::DocId)>,
}

impl tantivy::collector::Collector for Nearest {
    type Fruit = (Vec<(f32, DocAddress)>, (u64, u64));
    type Child = NearestInSegment;

    fn for_segment(&self, segment: u32, reader: &tantivy::SegmentReader) -> tantivy::Result<NearestInSegment> {
        Ok(NearestInSegment {
            column: reader.fast_fields().bytes(self.field)?,
            query: self.query.clone(),
            top_k: self.top_k,
            segment,
            found: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        let with = (fruits.iter().map(|f| f.1.0).sum(), fruits.iter().map(|f| f.1.1).sum());
        let mut all: Vec<Scored> = fruits.into_iter().flat_map(|f| f.0).map(|(s, a)| Scored(s, a)).collect();
        all.sort();
        all.truncate(self.top_k);
        Ok((all.into_iter().map(|s| (s.0, s.1)).collect(), with))
    }
}

impl tantivy::collector::SegmentCollector for NearestInSegment {
    type Fruit = (Vec<(f32, DocAddress)>, (u64, u64));

    fn collect(&mut self, doc: tantivy::DocId, _score: tantivy::Score) {
        if let Some(ord) = self.column.as_ref().and_then(|c| c.term_ords(doc).next()) {
            self.found.push((ord, doc));
        }
    }

    fn harvest(mut self) -> Self::Fruit {
        let Some(col) = &self.column else { return (Vec::new(), (0, 0)) };
        let present = self.found.len() as u64;
        self.found.sort_unstable();
        let mut ords: Vec<u64> = self.found.iter().map(|f| f.0).collect();
        ords.dedup();
        // The score of each distinct vector, in ordinal order (`None`: another length).
        let mut scores: Vec<Option<f32>> = Vec::with_capacity(ords.len());
        let q = &self.query;
        let read = col.dictionary().sorted_ords_to_term_cb(ords.iter().copied(), |bytes| {
            scores.push(dot(bytes, q));
            Ok(())
        });
        if read.is_err() || scores.len() != ords.len() {
            return (Vec::new(), (present, 0));
        }
        let mut heap = std::collections::BinaryHeap::with_capacity(self.top_k + 1);
        let mut with = 0u64;
        let mut at = 0usize;
        for (ord, doc) in &self.found {
            while ords[at] != *ord {
                at += 1;
            }
            let Some(score) = scores[at] else { continue };
            with += 1;
            let s = Scored(score, DocAddress::new(self.segment, *doc));
            if heap.len() < self.top_k {
                heap.push(s);
            } else if heap.peek().is_some_and(|worst| s < *worst) {
                heap.pop();
                heap.push(s);
            }
        }
        (heap.into_iter().map(|s| (s.0, s.1)).collect(), (present, with))
    }
}

/// Lower-cased runs of letters and digits, each at most [`TOKEN_CHARS_MAX`] characters (longer
/// ones are dropped), at most `max` of them.
pub fn tokens(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        if out.len() >= max {
            break;
        }
        if w.is_empty() || w.chars().count() > TOKEN_CHARS_MAX {
            continue;
        }
        out.push(w.to_lowercase());
    }
    out
}

/// Every string of a JSON value with its dot path (an array's items under the array's path).
pub fn string_leaves<'a>(v: &'a serde_json::Value, path: &mut String, out: &mut Vec<(String, &'a str)>) {
    match v {
        serde_json::Value::String(s) => out.push((path.clone(), s)),
        serde_json::Value::Array(a) => {
            for item in a {
                string_leaves(item, path, out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, item) in o {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                string_leaves(item, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The search projection's index in one folder.
pub struct SearchIndex {
    writer: Mutex<IndexWriter<TantivyDocument>>,
    reader: IndexReader,
    f: Fields,
    position: AtomicU64,
    /// The last log position whose event was applied (committed or not): an event at or before
    /// it is not applied again (two followers of one index, `SearchIndex::open_shared`).
    applied: AtomicU64,
    /// Results added or deleted since the last commit.
    pending: AtomicU64,
    /// Held while one event is applied ([`SearchIndex::apply_at`]).
    apply_lock: Mutex<()>,
    /// The embedder the vectors came from (recorded in each commit).
    embedder: Mutex<Option<String>>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    format: u32,
    position: u64,
    #[serde(default)]
    embedder: Option<String>,
}

/// The indexes open in this process, by folder: tantivy lets one writer hold a folder, and a
/// runtime opened again in the same process (a partition taken back, a simulated crash) must
/// find the index its earlier self still holds.
static OPEN: std::sync::LazyLock<Mutex<std::collections::HashMap<std::path::PathBuf, std::sync::Weak<SearchIndex>>>> =
    std::sync::LazyLock::new(Default::default);

impl SearchIndex {
    /// The index in `dir`, shared with whoever in this process has it open already.
    pub fn open_shared(dir: &Path) -> Result<std::sync::Arc<SearchIndex>, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        let key = dir.canonicalize().map_err(|e| Error::Io(dir.display().to_string(), e))?;
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, w| w.strong_count() > 0);
        if let Some(ix) = open.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok(ix);
        }
        let ix = std::sync::Arc::new(SearchIndex::open(dir)?);
        open.insert(key, std::sync::Arc::downgrade(&ix));
        Ok(ix)
    }

    /// Opens (or makes) the index in `dir`. An index of another format or schema is emptied
    /// (position 0).
    pub fn open(dir: &Path) -> Result<SearchIndex, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        let (schema, f) = schema();
        let opened = match Index::open_in_dir(dir) {
            // An index that cannot be read (damaged files) is rebuilt like one of another format.
            Ok(index) => {
                let payload: Option<Payload> =
                    index.load_metas().ok().and_then(|meta| meta.payload.and_then(|p| serde_json::from_str(&p).ok()));
                match payload {
                    Some(p) if p.format == SEARCH_FORMAT && index.schema() == schema => {
                        Some((index, p.position, p.embedder))
                    }
                    _ => None,
                }
            }
            Err(_) => None,
        };
        let (index, position, embedder) = match opened {
            Some(x) => x,
            None => {
                // Another format, no payload (never committed) or nothing: start again.
                for entry in std::fs::read_dir(dir).map_err(|e| Error::Io(dir.display().to_string(), e))? {
                    let p = entry.map_err(|e| Error::Io(dir.display().to_string(), e))?.path();
                    let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                }
                (Index::create_in_dir(dir, schema)?, 0, None)
            }
        };
        let writer = index.writer_with_num_threads(1, WRITER_BYTES)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(SearchIndex {
            writer: Mutex::new(writer),
            reader,
            f,
            position: AtomicU64::new(position),
            applied: AtomicU64::new(position),
            pending: AtomicU64::new(0),
            apply_lock: Mutex::new(()),
            embedder: Mutex::new(embedder),
        })
    }

    /// The log position the last commit reflects.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::SeqCst)
    }

    /// Results added or deleted and not committed yet.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter<TantivyDocument>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The embedder the index's vectors came from, as its last commit records it.
    pub fn embedder(&self) -> Option<String> {
        self.embedder.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds a result, replacing the one of the same `result_id`.
    pub fn upsert(&self, d: &Doc) -> Result<(), Error> {
        self.upsert_with(d, None, None)
    }

    /// Adds a result with its text's and its image's vectors (either may be absent).
    pub fn upsert_with(&self, d: &Doc, tvec: Option<&[f32]>, ivec: Option<&[f32]>) -> Result<(), Error> {
        let mut doc = TantivyDocument::new();
        if let Some(v) = tvec.and_then(vector_bytes) {
            doc.add_bytes(self.f.tvec, &v);
        }
        if let Some(v) = ivec.and_then(vector_bytes) {
            doc.add_bytes(self.f.ivec, &v);
        }
        doc.add_text(self.f.result_id, &d.result_id);
        doc.add_text(self.f.run_id, &d.run_id);
        doc.add_text(self.f.video_id, &d.video_id);
        doc.add_text(self.f.index_id, &d.index_id);
        let mut budget = TOKENS_PER_RESULT_MAX;
        let mut add = |path: &str, text: &str, budget: &mut usize| {
            for t in tokens(text, *budget) {
                *budget -= 1;
                doc.add_text(self.f.paths, format!("{path}{PATH_SEP}{t}"));
                doc.add_text(self.f.text, t);
            }
        };
        add("metadata_text", &d.metadata_text, &mut budget);
        if let Ok(meta) = serde_json::from_str::<serde_json::Value>(&d.metadata_json) {
            let mut leaves = Vec::new();
            string_leaves(&meta, &mut String::new(), &mut leaves);
            for (path, s) in leaves {
                add(&path, s, &mut budget);
            }
        }
        let bytes = serde_json::to_vec(d).map_err(|e| Error::Other(e.to_string()))?;
        doc.add_bytes(self.f.doc, &bytes);
        let w = self.writer();
        w.delete_term(Term::from_field_text(self.f.result_id, &d.result_id));
        w.add_document(doc)?;
        self.pending.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Deletes every result of a video (deleted, or out of its index).
    pub fn delete_video(&self, video_id: &str) {
        self.writer().delete_term(Term::from_field_text(self.f.video_id, video_id));
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// Deletes every result of an index's runs.
    pub fn delete_index(&self, index_id: &str) {
        self.writer().delete_term(Term::from_field_text(self.f.index_id, index_id));
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// Deletes one result.
    pub fn delete_result(&self, result_id: &str) {
        self.writer().delete_term(Term::from_field_text(self.f.result_id, result_id));
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// Makes everything added so far durable and visible, recording that the index reflects
    /// the log through `position`.
    pub fn commit(&self, position: u64) -> Result<(), Error> {
        let payload = serde_json::to_string(&Payload { format: SEARCH_FORMAT, position, embedder: self.embedder() })
            .map_err(|e| Error::Other(e.to_string()))?;
        {
            let mut w = self.writer();
            let mut prepared = w.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
        }
        self.reader.reload()?;
        self.pending.store(0, Ordering::SeqCst);
        // Never back: two followers of one index (an earlier runtime of the same process still
        // stopping) read the same log.
        self.position.fetch_max(position, Ordering::SeqCst);
        Ok(())
    }

    /// Empties the index and records position 0 and the embedder its vectors will come from,
    /// durably: it is then rebuilt from the start of the log.
    pub fn clear(&self, embedder: Option<&str>) -> Result<(), Error> {
        let embedder = embedder.map(str::to_string);
        let payload =
            serde_json::to_string(&Payload { format: SEARCH_FORMAT, position: 0, embedder: embedder.clone() })
                .map_err(|e| Error::Other(e.to_string()))?;
        {
            let _turn = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut w = self.writer();
            w.delete_all_documents()?;
            let mut prepared = w.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
            self.position.store(0, Ordering::SeqCst);
            self.applied.store(0, Ordering::SeqCst);
            // Only once the empty index with it is durable: a failed clear keeps the old one.
            *self.embedder.lock().unwrap_or_else(|p| p.into_inner()) = embedder;
        }
        self.reader.reload()?;
        self.pending.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Drops what was applied since the last commit (a step that failed: its documents may be
    /// lost with a failed indexing worker); the follower reads again from the position.
    pub fn rollback(&self) -> Result<(), Error> {
        let _turn = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.writer().rollback()?;
        self.applied.store(self.position(), Ordering::SeqCst);
        self.pending.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Applies the change an event at log position `seq` makes (`op`, under the writer's lock),
    /// unless an event at or after it was applied already (by another follower of the index):
    /// whether it did.
    pub fn apply_at(&self, seq: u64, op: impl FnOnce(&SearchIndex) -> Result<(), Error>) -> Result<bool, Error> {
        let _turn = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.applied.load(Ordering::SeqCst) >= seq {
            return Ok(false);
        }
        op(self)?;
        self.applied.store(seq, Ordering::SeqCst);
        Ok(true)
    }

    /// The last log position whose event was applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// How many results are visible.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn scope_query(&self, scope: &Scope) -> Vec<(Occur, Box<dyn Query>)> {
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, ids) in
            [(self.f.run_id, &scope.run_ids), (self.f.index_id, &scope.index_ids), (self.f.video_id, &scope.video_ids)]
        {
            if ids.is_empty() {
                continue;
            }
            let any: Vec<(Occur, Box<dyn Query>)> = ids
                .iter()
                .map(|id| {
                    let q: Box<dyn Query> =
                        Box::new(TermQuery::new(Term::from_field_text(field, id), IndexRecordOption::Basic));
                    (Occur::Should, q)
                })
                .collect();
            // A scope filters; it adds nothing to a hit's score (a run's id is rarer than
            // another's: scored, it would rank one run's hits over another's).
            let filter = tantivy::query::ConstScoreQuery::new(Box::new(BooleanQuery::new(any)), 0.0);
            must.push((Occur::Must, Box::new(filter)));
        }
        must
    }

    fn load(&self, searcher: &tantivy::Searcher, addr: DocAddress) -> Result<Doc, Error> {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let bytes = doc.get_first(self.f.doc).and_then(|v| v.as_bytes()).unwrap_or_default();
        serde_json::from_slice(bytes).map_err(|e| Error::Other(format!("a stored result: {e}")))
    }

    /// The best `top_k` results for the words of `query` (any of them; BM25), in `fields`
    /// (dot paths into `metadata`, or `metadata_text`; empty: every field), within `scope`.
    pub fn search(&self, query: &str, fields: &[String], scope: &Scope, top_k: usize) -> Result<Vec<Hit>, Error> {
        let words = tokens(query, 64);
        if words.is_empty() || top_k == 0 {
            return Ok(Vec::new());
        }
        let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for w in &words {
            if fields.is_empty() {
                any.push((
                    Occur::Should,
                    Box::new(TermQuery::new(Term::from_field_text(self.f.text, w), IndexRecordOption::WithFreqs)),
                ));
            } else {
                for path in fields {
                    let term = Term::from_field_text(self.f.paths, &format!("{path}{PATH_SEP}{w}"));
                    any.push((Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))));
                }
            }
        }
        let words = BooleanQuery::new(any);
        let mut all = self.scope_query(scope);
        // Unscoped, the disjunction alone: tantivy then prunes with block-max WAND.
        let q: Box<dyn Query> = if all.is_empty() {
            Box::new(words)
        } else {
            all.push((Occur::Must, Box::new(words)));
            Box::new(BooleanQuery::new(all))
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(&*q, &TopDocs::with_limit(top_k))?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            out.push(Hit { score: Some(score), doc: self.load(&searcher, addr)? });
        }
        Ok(out)
    }

    /// The `top_k` results of `scope` whose `which` vector is nearest `query` (cosine
    /// similarity, best first), how many results of the scope have such a vector and how many
    /// of those could be compared (of the query's length; 0 of either: no comparison was
    /// possible, which is not "no match"). A scan of the scope's vectors.
    pub fn nearest(&self, which: Vectors, query: &[f32], scope: &Scope, top_k: usize) -> Result<Nearby, Error> {
        let Some(q) = normalized(query) else { return Ok(Nearby::default()) };
        let mut all = self.scope_query(scope);
        all.push((Occur::Must, Box::new(tantivy::query::AllQuery)));
        let scoped = BooleanQuery::new(all);
        let field = match which {
            Vectors::Text => "tvec",
            Vectors::Image => "ivec",
        };
        let searcher = self.reader.searcher();
        let (top, (present, compared)) = searcher.search(&scoped, &Nearest { field, query: q, top_k: top_k.max(1) })?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top.into_iter().take(top_k) {
            hits.push(Hit { score: Some(score), doc: self.load(&searcher, addr)? });
        }
        Ok(Nearby { hits, present, compared })
    }

    /// Up to `limit` results of `scope` after `after` (a `result_id`), in `result_id` order.
    pub fn scan(&self, scope: &Scope, after: Option<&str>, limit: usize) -> Result<Vec<Doc>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut all = self.scope_query(scope);
        let lower = match after {
            Some(a) => Bound::Excluded(Term::from_field_text(self.f.result_id, a)),
            None => Bound::Unbounded,
        };
        if after.is_some() {
            all.push((Occur::Must, Box::new(RangeQuery::new(lower, Bound::Unbounded))));
        } else {
            all.push((Occur::Must, Box::new(tantivy::query::AllQuery)));
        }
        let q = BooleanQuery::new(all);
        let searcher = self.reader.searcher();
        let top =
            searcher.search(&q, &TopDocs::with_limit(limit).order_by_string_fast_field("result_id", Order::Asc))?;
        let mut out = Vec::with_capacity(top.len());
        for (_, addr) in top {
            out.push(self.load(&searcher, addr)?);
        }
        Ok(out)
    }
}

/// Every result of the index in `dir` and the position it records, read without a writer
/// (`spool verify`); `None` when there is no index of this format there.
pub fn read_all(dir: &Path) -> Result<Option<(u64, Vec<Doc>)>, Error> {
    let Ok(index) = Index::open_in_dir(dir) else { return Ok(None) };
    let (schema, f) = schema();
    let meta = index.load_metas()?;
    let payload: Option<Payload> = meta.payload.as_deref().and_then(|p| serde_json::from_str(p).ok());
    let Some(p) = payload.filter(|p| p.format == SEARCH_FORMAT && index.schema() == schema) else { return Ok(None) };
    let reader: IndexReader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
    let searcher = reader.searcher();
    let mut out = Vec::new();
    for segment in searcher.segment_readers() {
        let store = segment.get_store_reader(64).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        let alive = segment.alive_bitset();
        for doc_id in 0..segment.max_doc() {
            if alive.is_some_and(|a| !a.is_alive(doc_id)) {
                continue;
            }
            let doc: TantivyDocument = store.get(doc_id)?;
            let bytes = doc.get_first(f.doc).and_then(|v| v.as_bytes()).unwrap_or_default();
            out.push(serde_json::from_slice(bytes).map_err(|e| Error::Other(format!("a stored result: {e}")))?);
        }
    }
    Ok(Some((p.position, out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(run: &str, seg: &str, video: &str, index: &str, text: &str, meta: serde_json::Value) -> Doc {
        Doc {
            result_id: format!("{run}:{seg}"),
            run_id: run.into(),
            prompt_id: "prm_1".into(),
            video_id: video.into(),
            index_id: index.into(),
            segment_id: Some(seg.into()),
            start_us: 0,
            end_us: 1_000_000,
            media_type: "video".into(),
            metadata_json: meta.to_string(),
            metadata_text: text.into(),
        }
    }

    #[test]
    fn tokens_are_lower_cased_words_and_long_ones_are_dropped() {
        assert_eq!(tokens("Hello, wörld! x_y 42", 10), vec!["hello", "wörld", "x", "y", "42"]);
        let long = "a".repeat(TOKEN_CHARS_MAX + 1);
        assert_eq!(tokens(&format!("{long} b"), 10), vec!["b"]);
        assert_eq!(tokens("a b c", 2), vec!["a", "b"]);
    }

    #[test]
    fn a_search_ranks_finds_narrows_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ix = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(ix.position(), 0);
        ix.upsert(&doc("run_a", "s1", "vid_1", "idx_1", "a red bicycle", serde_json::json!({"product": "bicycle"})))
            .unwrap();
        ix.upsert(&doc(
            "run_a",
            "s2",
            "vid_1",
            "idx_1",
            "shelves near the checkout",
            serde_json::json!({"scene": {"place": "checkout"}, "tags": ["store", "shelf"]}),
        ))
        .unwrap();
        ix.upsert(&doc("run_b", "s1", "vid_2", "idx_2", "checkout checkout", serde_json::json!({}))).unwrap();
        ix.commit(7).unwrap();
        let hits = ix.search("Checkout", &[], &Scope::default(), 10).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].doc.result_id, "run_b:s1", "two occurrences rank first");
        let narrowed = ix.search("checkout", &["scene.place".into()], &Scope::default(), 10).unwrap();
        assert_eq!(narrowed.len(), 1);
        assert_eq!(narrowed[0].doc.result_id, "run_a:s2");
        let tagged = ix.search("store", &["tags".into()], &Scope::default(), 10).unwrap();
        assert_eq!(tagged.len(), 1);
        let scoped =
            ix.search("checkout", &[], &Scope { index_ids: vec!["idx_1".into()], ..Default::default() }, 10).unwrap();
        assert_eq!(scoped.len(), 1);
        assert!(ix.search("nothing", &[], &Scope::default(), 10).unwrap().is_empty());
        // Upsert replaces; a video's deletion removes its results.
        ix.upsert(&doc("run_a", "s1", "vid_1", "idx_1", "a blue bicycle", serde_json::json!({}))).unwrap();
        ix.commit(8).unwrap();
        assert_eq!(ix.len(), 3);
        assert!(ix.search("red", &[], &Scope::default(), 10).unwrap().is_empty());
        drop(ix);
        let ix = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(ix.position(), 8);
        assert_eq!(ix.search("blue", &[], &Scope::default(), 10).unwrap().len(), 1);
        ix.delete_video("vid_1");
        ix.commit(9).unwrap();
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn a_scan_pages_in_result_order() {
        let dir = tempfile::tempdir().unwrap();
        let ix = SearchIndex::open(dir.path()).unwrap();
        for i in 0..25 {
            ix.upsert(&doc("run_a", &format!("s{i:03}"), "vid_1", "idx_1", "x", serde_json::json!({}))).unwrap();
        }
        ix.commit(1).unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = ix.scan(&Scope::default(), after.as_deref(), 10).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|d| d.result_id.clone());
            seen.extend(page.into_iter().map(|d| d.result_id));
        }
        let want: Vec<String> = (0..25).map(|i| format!("run_a:s{i:03}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_cleared_index_records_position_zero_and_is_rebuilt_from_the_start() {
        // A regression: clearing kept the old position in memory (commit never moves it back),
        // so a rebuild read on from there and skipped the log before it.
        let dir = tempfile::tempdir().unwrap();
        let ix = SearchIndex::open(dir.path()).unwrap();
        ix.upsert(&doc("run_a", "s1", "vid_1", "idx_1", "x", serde_json::json!({}))).unwrap();
        ix.commit(50).unwrap();
        ix.clear(None).unwrap();
        assert_eq!(ix.position(), 0);
        assert!(ix.is_empty());
        assert!(ix.apply_at(1, |_| Ok(())).unwrap(), "events from the start apply again");
        drop(ix);
        let ix = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(ix.position(), 0, "the cleared position is durable");
    }

    #[test]
    fn an_event_applied_by_one_follower_is_not_applied_again_by_another() {
        // A regression: a follower still stopping put an older answer back over a newer one.
        let dir = tempfile::tempdir().unwrap();
        let ix = SearchIndex::open(dir.path()).unwrap();
        let newer = doc("run_a", "s1", "vid_1", "idx_1", "newer", serde_json::json!({}));
        let older = doc("run_a", "s1", "vid_1", "idx_1", "older", serde_json::json!({}));
        assert!(ix.apply_at(110, |ix| ix.upsert(&newer)).unwrap());
        assert!(!ix.apply_at(60, |ix| ix.upsert(&older)).unwrap());
        ix.commit(110).unwrap();
        assert_eq!(ix.search("newer", &[], &Scope::default(), 5).unwrap().len(), 1);
        assert!(ix.search("older", &[], &Scope::default(), 5).unwrap().is_empty());
    }

    #[test]
    fn a_rolled_back_step_is_applied_again() {
        // A regression: after a failed step the follower skipped the events it had applied,
        // though their documents were lost, and committed past them.
        let dir = tempfile::tempdir().unwrap();
        let ix = SearchIndex::open(dir.path()).unwrap();
        let d = doc("run_a", "s1", "vid_1", "idx_1", "word", serde_json::json!({}));
        assert!(ix.apply_at(5, |ix| ix.upsert(&d)).unwrap());
        ix.rollback().unwrap();
        assert!(ix.apply_at(5, |ix| ix.upsert(&d)).unwrap(), "read again after the rollback");
        ix.commit(5).unwrap();
        assert_eq!(ix.search("word", &[], &Scope::default(), 5).unwrap().len(), 1);
    }

    #[test]
    fn an_index_of_another_format_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ix = SearchIndex::open(dir.path()).unwrap();
            ix.upsert(&doc("run_a", "s1", "vid_1", "idx_1", "x", serde_json::json!({}))).unwrap();
            let payload = serde_json::json!({"format": SEARCH_FORMAT + 1, "position": 5}).to_string();
            let mut w = ix.writer();
            let mut p = w.prepare_commit().unwrap();
            p.set_payload(&payload);
            p.commit().unwrap();
        }
        let ix = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(ix.position(), 0);
        assert!(ix.is_empty());
    }

    #[test]
    fn nearest_ranks_by_cosine_within_the_scope_and_counts_what_has_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let ix = SearchIndex::open(dir.path()).unwrap();
        let d = |seg: &str, index: &str| doc("run_a", seg, "vid_1", index, "x", serde_json::json!({}));
        ix.upsert_with(&d("s1", "idx_1"), Some(&[1.0, 0.0, 0.0]), None).unwrap();
        ix.upsert_with(&d("s2", "idx_1"), Some(&[0.6, 0.8, 0.0]), Some(&[0.0, 0.0, 5.0])).unwrap();
        ix.upsert_with(&d("s3", "idx_2"), Some(&[0.9, 0.1, 0.0]), None).unwrap();
        // Another length (another embedder's) never compares, nor does no vector at all.
        ix.upsert_with(&d("s4", "idx_1"), Some(&[1.0, 0.0]), None).unwrap();
        ix.upsert(&d("s5", "idx_1")).unwrap();
        ix.commit(9).unwrap();
        let ids = |hits: &[Hit]| hits.iter().map(|h| h.doc.result_id.clone()).collect::<Vec<_>>();
        let n = ix.nearest(Vectors::Text, &[2.0, 0.0, 0.0], &Scope::default(), 10).unwrap();
        assert_eq!(ids(&n.hits), vec!["run_a:s1", "run_a:s3", "run_a:s2"]);
        assert_eq!((n.present, n.compared), (4, 3));
        assert!((n.hits[0].score.unwrap() - 1.0).abs() < 1e-6);
        let scope = Scope { index_ids: vec!["idx_1".into()], ..Default::default() };
        let hits = ix.nearest(Vectors::Text, &[0.0, 1.0, 0.0], &scope, 1).unwrap().hits;
        assert_eq!(ids(&hits), vec!["run_a:s2"]);
        let n = ix.nearest(Vectors::Image, &[0.0, 0.0, 1.0], &scope, 5).unwrap();
        assert_eq!((ids(&n.hits), n.compared), (vec!["run_a:s2".to_string()], 1));
        let scope2 = Scope { index_ids: vec!["idx_2".into()], ..Default::default() };
        assert_eq!(ix.nearest(Vectors::Image, &[0.0, 0.0, 1.0], &scope2, 5).unwrap().present, 0);
        // Two results with one vector (one dictionary entry) are both found.
        ix.upsert_with(&d("s6", "idx_2"), Some(&[0.9, 0.1, 0.0]), None).unwrap();
        ix.commit(10).unwrap();
        let hits = ix.nearest(Vectors::Text, &[0.9, 0.1, 0.0], &scope2, 5).unwrap().hits;
        assert_eq!(ids(&hits), vec!["run_a:s3", "run_a:s6"]);
        // A deleted result is gone from the scan; a zero query compares nothing.
        ix.delete_result("run_a:s1");
        ix.delete_result("run_a:s6");
        ix.commit(11).unwrap();
        let hits = ix.nearest(Vectors::Text, &[1.0, 0.0, 0.0], &Scope::default(), 10).unwrap().hits;
        assert_eq!(ids(&hits), vec!["run_a:s3", "run_a:s2"]);
        assert_eq!(ix.nearest(Vectors::Text, &[0.0, 0.0, 0.0], &Scope::default(), 10).unwrap().compared, 0);
    }

    #[test]
    fn the_embedder_is_recorded_in_each_commit_and_clear_sets_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ix = SearchIndex::open(dir.path()).unwrap();
            assert_eq!(ix.embedder(), None);
            ix.clear(Some("emb:abc")).unwrap();
            ix.upsert(&doc("run_a", "s1", "vid_1", "idx_1", "x", serde_json::json!({}))).unwrap();
            ix.commit(3).unwrap();
        }
        let ix = SearchIndex::open(dir.path()).unwrap();
        assert_eq!((ix.embedder().as_deref(), ix.position(), ix.len()), (Some("emb:abc"), 3, 1));
    }
}
