//! `spool bench search`: the search projection's index (`spool_search`: Spool's tokenising, the
//! `paths` field, the scope terms, an upsert that replaces, the stored result) against tantivy
//! used directly on the same documents in the same run (its default tokenizer over one text
//! field, its own writer defaults, the same stored bytes), at 10k, 100k (and 1M) results:
//! results indexed per second, queries per second, p50/p99 of a query. Both commit every
//! 1,000 results (the follower commits each batch it reads).
//!
//! Then semantic search: the same results with a 100-d vector each (`SearchIndex::nearest`, an
//! exact scan of the scope's vectors) against the same scan done without the index (the
//! vectors in one flat `Vec<f32>` in memory, a dot product each, the same top-k heap).
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)] // a bench: sizes it chose

use spool_search::{Doc, Scope, SearchIndex};
use std::time::Instant;
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{STORED, STRING, Schema, TEXT};
use tantivy::{Index, TantivyDocument, Term};

pub const DEFAULT_SIZES: [usize; 2] = [10_000, 100_000];
/// Results committed at a time, by both sides.
const COMMIT_EVERY: usize = 1000;
const VOCABULARY: usize = 20_000;

pub struct Args {
    pub sizes: Vec<usize>,
    pub queries: usize,
    pub dir: Option<std::path::PathBuf>,
}

/// A deterministic stream of numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A word of a Zipf-like vocabulary (frequent words are frequent).
    fn word(&mut self) -> String {
        let r = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        let rank = ((VOCABULARY as f64).powf(r)) as usize;
        format!("w{rank}")
    }

    fn words(&mut self, n: usize) -> String {
        (0..n).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }
}

fn doc(rng: &mut Rng, i: usize) -> Doc {
    let meta = serde_json::json!({
        "summary": rng.words(12),
        "objects": [rng.word(), rng.word(), rng.word()],
        "scene": { "place": rng.words(2) },
        "count": i % 7,
    });
    Doc {
        result_id: format!("run_{:08}:seg_{i}", i / 1000),
        run_id: format!("run_{:08}", i / 1000),
        prompt_id: "prm_bench".into(),
        video_id: format!("vid_{:08}", i / 10),
        index_id: "idx_bench".into(),
        segment_id: Some(format!("seg_{i}")),
        start_us: (i as u64 % 10) * 1_000_000,
        end_us: (i as u64 % 10 + 1) * 1_000_000,
        media_type: "video".into(),
        metadata_json: meta.to_string(),
        metadata_text: rng.words(24),
    }
}

/// The text tantivy indexes on the library's side: the same words Spool indexes.
fn body_of(d: &Doc) -> String {
    let mut out = d.metadata_text.clone();
    if let Ok(meta) = serde_json::from_str::<serde_json::Value>(&d.metadata_json) {
        let mut leaves = Vec::new();
        spool_search::string_leaves(&meta, &mut String::new(), &mut leaves);
        for (_, s) in leaves {
            out.push(' ');
            out.push_str(s);
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Side {
    docs_per_s: f64,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    hits: usize,
}

fn queries(n: usize) -> Vec<String> {
    let mut rng = Rng(0x5eed_0000_0000_0001);
    (0..n).map(|_| rng.words(3)).collect()
}

fn spool_side(dir: &std::path::Path, size: usize, qs: &[String]) -> anyhow::Result<Side> {
    let ix = SearchIndex::open(dir)?;
    let mut rng = Rng(0x0dd5_eed5_0000_0001);
    let t = Instant::now();
    for i in 0..size {
        ix.upsert(&doc(&mut rng, i))?;
        if (i + 1) % COMMIT_EVERY == 0 {
            ix.commit(i as u64 + 1)?;
        }
    }
    ix.commit(size as u64 + 1)?;
    let docs_per_s = size as f64 / t.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(qs.len());
    let mut hits = 0;
    let t = Instant::now();
    for q in qs {
        let s = Instant::now();
        hits += ix.search(q, &[], &Scope::default(), 30)?.len();
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let qps = qs.len() as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(Side { docs_per_s, qps, p50_ms: percentile(&lat, 0.5), p99_ms: percentile(&lat, 0.99), hits })
}

fn library_side(dir: &std::path::Path, size: usize, qs: &[String]) -> anyhow::Result<Side> {
    let mut b = Schema::builder();
    let id = b.add_text_field("id", STRING);
    let body = b.add_text_field("body", TEXT);
    let stored = b.add_bytes_field("doc", STORED);
    let index = Index::create_in_dir(dir, b.build())?;
    // The library's own defaults: its writer with every core and a 50 MB budget.
    let mut writer: tantivy::IndexWriter<TantivyDocument> = index.writer(50_000_000)?;
    let mut rng = Rng(0x0dd5_eed5_0000_0001);
    let t = Instant::now();
    for i in 0..size {
        let d = doc(&mut rng, i);
        let mut td = TantivyDocument::new();
        td.add_text(id, &d.result_id);
        td.add_text(body, body_of(&d));
        td.add_bytes(stored, &serde_json::to_vec(&d)?);
        writer.delete_term(Term::from_field_text(id, &d.result_id));
        writer.add_document(td)?;
        if (i + 1) % COMMIT_EVERY == 0 {
            writer.commit()?;
        }
    }
    writer.commit()?;
    let docs_per_s = size as f64 / t.elapsed().as_secs_f64();
    let reader = index.reader()?;
    reader.reload()?;
    let parser = QueryParser::for_index(&index, vec![body]);
    let mut lat = Vec::with_capacity(qs.len());
    let mut hits = 0;
    let t = Instant::now();
    for q in qs {
        let s = Instant::now();
        let searcher = reader.searcher();
        let query = parser.parse_query(q)?;
        let top = searcher.search(&query, &TopDocs::with_limit(30))?;
        for (_, addr) in &top {
            let d: TantivyDocument = searcher.doc(*addr)?;
            use tantivy::schema::Value;
            let bytes = d.get_first(stored).and_then(|v| v.as_bytes()).unwrap_or_default();
            let _: Doc = serde_json::from_slice(bytes)?;
        }
        hits += top.len();
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let qps = qs.len() as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(Side { docs_per_s, qps, p50_ms: percentile(&lat, 0.5), p99_ms: percentile(&lat, 0.99), hits })
}

/// The dimensions of the bench's vectors (the test embedder's).
const DIMS: usize = 100;
/// Vector queries per size (each scans every result).
const VECTOR_QUERIES: usize = 50;

fn vector(rng: &mut Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMS).map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.into_iter().map(|x| x / n).collect()
}

/// Semantic search: Spool's index with vectors, and the same exact scan over a flat array.
struct VectorSide {
    spool_qps: f64,
    spool_p99_ms: f64,
    flat_qps: f64,
    flat_p99_ms: f64,
    same_top: bool,
}

fn vector_side(dir: &std::path::Path, size: usize) -> anyhow::Result<VectorSide> {
    let ix = SearchIndex::open(dir)?;
    let mut rng = Rng(0x0dd5_eed5_0000_0001);
    let mut vrng = Rng(0x7ec7_0000_0000_0001);
    let mut flat: Vec<f32> = Vec::with_capacity(size * DIMS);
    for i in 0..size {
        let v = vector(&mut vrng);
        ix.upsert_with(&doc(&mut rng, i), Some(&v), None)?;
        flat.extend_from_slice(&v);
        if (i + 1) % COMMIT_EVERY == 0 {
            ix.commit(i as u64 + 1)?;
        }
    }
    ix.commit(size as u64 + 1)?;
    let mut qrng = Rng(0x9e77_0000_0000_0001);
    let queries: Vec<Vec<f32>> = (0..VECTOR_QUERIES).map(|_| vector(&mut qrng)).collect();
    let (mut lat, mut tops) = (Vec::new(), Vec::new());
    let t = Instant::now();
    for q in &queries {
        let s = Instant::now();
        let hits = ix.nearest(spool_search::Vectors::Text, q, &Scope::default(), 30)?.hits;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
        tops.push(hits.first().map(|h| h.doc.result_id.clone()));
    }
    let spool_qps = queries.len() as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let spool_p99_ms = percentile(&lat, 0.99);
    let (mut lat, mut same_top) = (Vec::new(), true);
    let t = Instant::now();
    for (q, top) in queries.iter().zip(&tops) {
        let s = Instant::now();
        let mut heap = std::collections::BinaryHeap::new();
        for (i, row) in flat.chunks_exact(DIMS).enumerate() {
            let score: f32 = row.iter().zip(q).map(|(a, b)| a * b).sum();
            heap.push(std::cmp::Reverse((OrdF32(score), i)));
            if heap.len() > 30 {
                heap.pop();
            }
        }
        let best = heap.into_sorted_vec().first().map(|r| r.0.1);
        lat.push(s.elapsed().as_secs_f64() * 1e3);
        same_top &= best.map(|i| format!("run_{:08}:seg_{i}", i / 1000)) == *top;
    }
    let flat_qps = queries.len() as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(VectorSide { spool_qps, spool_p99_ms, flat_qps, flat_p99_ms: percentile(&lat, 0.99), same_top })
}

/// An `f32` ordered totally (for the flat scan's heap).
#[derive(PartialEq, Clone, Copy)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tmp = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let qs = queries(args.queries);
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let lib_dir = tmp.path().join(format!("lib-{size}"));
        std::fs::create_dir_all(&lib_dir)?;
        let lib = library_side(&lib_dir, size, &qs)?;
        std::fs::remove_dir_all(&lib_dir)?;
        let spool_dir = tmp.path().join(format!("spool-{size}"));
        let spool = spool_side(&spool_dir, size, &qs)?;
        std::fs::remove_dir_all(&spool_dir)?;
        println!(
            "{size:>9} results: indexed {:>8.0}/s (tantivy directly {:>8.0}/s, ratio {:.2}); queries {:>7.0}/s (tantivy {:>7.0}/s, ratio {:.2}); p50 {:.2} ms p99 {:.2} ms (tantivy p50 {:.2} p99 {:.2}); hits {} / {}",
            spool.docs_per_s,
            lib.docs_per_s,
            spool.docs_per_s / lib.docs_per_s,
            spool.qps,
            lib.qps,
            spool.qps / lib.qps,
            spool.p50_ms,
            spool.p99_ms,
            lib.p50_ms,
            lib.p99_ms,
            spool.hits,
            lib.hits,
        );
        let vec_dir = tmp.path().join(format!("vec-{size}"));
        let v = vector_side(&vec_dir, size)?;
        std::fs::remove_dir_all(&vec_dir)?;
        println!(
            "{size:>9} results, semantic: {:>7.1} queries/s p99 {:.2} ms (the same scan over a flat array: {:>7.1}/s p99 {:.2} ms, ratio {:.2}); same best hit: {}",
            v.spool_qps,
            v.spool_p99_ms,
            v.flat_qps,
            v.flat_p99_ms,
            v.spool_qps / v.flat_qps,
            v.same_top,
        );
        rows.push(serde_json::json!({
            "results": size,
            "vector_queries_per_s": (v.spool_qps * 10.0).round() / 10.0,
            "vector_p99_ms": (v.spool_p99_ms * 100.0).round() / 100.0,
            "flat_scan_queries_per_s": (v.flat_qps * 10.0).round() / 10.0,
            "flat_scan_p99_ms": (v.flat_p99_ms * 100.0).round() / 100.0,
            "vector_query_ratio": (v.spool_qps / v.flat_qps * 100.0).round() / 100.0,
            "vector_same_best_hit": v.same_top,
            "indexed_per_s": spool.docs_per_s.round(),
            "library_indexed_per_s": lib.docs_per_s.round(),
            "index_ratio": (spool.docs_per_s / lib.docs_per_s * 100.0).round() / 100.0,
            "queries_per_s": spool.qps.round(),
            "library_queries_per_s": lib.qps.round(),
            "query_ratio": (spool.qps / lib.qps * 100.0).round() / 100.0,
            "p50_ms": (spool.p50_ms * 100.0).round() / 100.0,
            "p99_ms": (spool.p99_ms * 100.0).round() / 100.0,
            "library_p50_ms": (lib.p50_ms * 100.0).round() / 100.0,
            "library_p99_ms": (lib.p99_ms * 100.0).round() / 100.0,
        }));
    }
    println!("{}", serde_json::json!({ "bench": "search", "queries": args.queries, "runs": rows }));
    Ok(())
}
