//! Search over prompt-run results (contract-search §2.11): lexical (BM25 over each result's
//! `metadata_text` and the strings of its `metadata`, the search projection of
//! `spool_runtime::search`), filters with typed operators, several runs at once, the
//! playground. With an embedder (`[processors.<name>] kind = "embed"`) a query's ranking fuses
//! lexical and semantic hits (RRF), and image and multimodal search compare segment image
//! vectors. Image search needs an embedder and image vectors in scope: without them it answers
//! 422 `image_search_unavailable` (never an empty list that reads as "no matches").

use super::json;
use crate::body::{JsonBody, PathParam};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};
use spool_model::{IndexId, PromptRunId, Scope as KeyScope, VideoId};
use spool_search::{Doc, Hit, PLAYGROUND, Scope};

use super::ops_prelude::*;

/// Most `search_fields`, `run_ids` or `index_ids` a request may name.
pub const SEARCH_IDS_MAX: usize = 100;
/// Most filter conditions (the SDK's own bound).
pub const CONDITIONS_MAX: usize = 4;
/// Results a filter page examines at most (the page then ends early, with a cursor).
pub const FILTER_SCAN_MAX: usize = 10_000;
/// `content_preview`'s length in characters.
const PREVIEW_CHARS: usize = 200;
/// RRF's constant (`1 / (k + rank)`), as most fusions use.
pub const RRF_K: f64 = 60.0;

pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(post "/indexes/{index_id}/search" text, "searchText", "search", Array("SearchResult"), body = json_body("AnyBody")),
        op!(post "/indexes/{index_id}/image-search" image, "searchImage", "search", Array("ImageSearchResult"), body = json_body("AnyBody")),
        op!(post "/indexes/{index_id}/multimodal-search" multimodal, "searchMultimodal", "search", Array("MultimodalSearchResult"), body = json_body("AnyBody")),
        op!(post "/search/filter/playground" filter_playground, "searchFilterPlayground", "search", Model("FilterSearchResponse"), body = json_body("AnyBody")),
        op!(post "/search/filter/{index_id}" filter, "searchFilter", "search", Model("FilterSearchResponse"), body = json_body("AnyBody")),
        op!(post "/search/multi-run" multi_run, "searchMultiRun", "search", Array("SearchResult"), body = json_body("AnyBody")),
        op!(post "/playground/search" playground, "searchPlayground", "search", Array("SearchResult"), body = json_body("AnyBody"),
            query = &[q("run_id", QKind::Str)]),
    ]
}

/// A body's object, or 422.
fn object(v: &Value) -> Result<&Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| ApiError::validation("body", "must be a JSON object"))
}

/// An optional integer field within `lo..=hi` (default `default`).
pub(crate) fn int_field(o: &Map<String, Value>, name: &str, default: u64, lo: u64, hi: u64) -> Result<u64, ApiError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => {
            match v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(spool_model::num::f64_to_u64)) {
                Some(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(ApiError::validation(name, format!("must be an integer from {lo} to {hi}"))),
            }
        }
    }
}

/// An optional number field within `0.0..=1.0`.
fn weight(o: &Map<String, Value>, name: &str, default: f64) -> Result<f64, ApiError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_f64() {
            Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
            _ => Err(ApiError::validation(name, "must be a number from 0.0 to 1.0")),
        },
    }
}

/// An optional string, or a list of strings (the SDK sends either for some fields), at most
/// [`SEARCH_IDS_MAX`].
pub(crate) fn strings(o: &Map<String, Value>, name: &str) -> Result<Vec<String>, ApiError> {
    let list = match o.get(name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::validation(name, "must be a list of strings"))?,
        Some(_) => return Err(ApiError::validation(name, "must be a list of strings")),
    };
    if list.len() > SEARCH_IDS_MAX {
        return Err(ApiError::validation(name, format!("names at most {SEARCH_IDS_MAX}")));
    }
    Ok(list)
}

/// The query text: present and not blank.
fn query_text(o: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match o.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            if s.len() > 4096 {
                return Err(ApiError::validation(name, "must be at most 4096 bytes"));
            }
            Ok(s.clone())
        }
        _ => Err(ApiError::validation(name, "must be a non-empty string")),
    }
}

/// `search_fields`: dot paths into a result's `metadata` (letters, digits, `_`, `-`, `.`), or
/// `metadata_text`.
fn search_fields(o: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let fields = strings(o, "search_fields")?;
    for f in &fields {
        let ok = !f.is_empty()
            && f.len() <= 200
            && f.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !f.starts_with('.')
            && !f.ends_with('.');
        if !ok {
            return Err(ApiError::validation(
                "search_fields",
                format!("{f:?} is not a field path such as `products` or `scene.summary`"),
            ));
        }
    }
    Ok(fields)
}

/// Index ids, each live here (404 for any other).
pub(crate) fn live_indexes(app: &AppState, raw: &[String]) -> Result<Vec<IndexId>, ApiError> {
    let ids = raw
        .iter()
        .map(|r| r.parse::<IndexId>().map_err(|_| ApiError::not_found("index", r)))
        .collect::<Result<Vec<_>, _>>()?;
    app.rt.read(|st| {
        for (id, r) in ids.iter().zip(raw) {
            st.live_index(id).ok_or_else(|| ApiError::not_found("index", r))?;
        }
        Ok(ids)
    })
}

/// Run ids, each known here (404 for any other).
pub(crate) fn known_runs(app: &AppState, raw: &[String]) -> Result<Vec<PromptRunId>, ApiError> {
    let ids = raw
        .iter()
        .map(|r| r.parse::<PromptRunId>().map_err(|_| ApiError::not_found("prompt_run", r)))
        .collect::<Result<Vec<_>, _>>()?;
    app.rt.read(|st| {
        for (id, r) in ids.iter().zip(raw) {
            if !st.prompt_runs.contains_key(id) {
                return Err(ApiError::not_found("prompt_run", r));
            }
        }
        Ok(ids)
    })
}

fn index(app: &AppState) -> Result<&std::sync::Arc<spool_search::SearchIndex>, ApiError> {
    app.rt.search_index().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "search_unavailable", "this server keeps no search index")
    })
}

fn search_error(e: spool_search::Error) -> ApiError {
    tracing::error!(error = %e, "a search failed");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "search_unavailable", "the search index could not be read")
}

/// Lexical hits: the best `top_k` of `scope` for `query`, in visible videos only.
pub(crate) fn lexical(
    app: &AppState,
    query: &str,
    fields: &[String],
    scope: &Scope,
    top_k: usize,
) -> Result<Vec<Hit>, ApiError> {
    app.searches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hits = index(app)?.search(query, fields, scope, top_k).map_err(search_error)?;
    visible(app, hits)
}

/// Hits each ranking of a fusion contributes at most.
const FUSION_DEPTH_MAX: usize = 200;

fn embedder_failed(e: &spool_runtime::PostError) -> ApiError {
    tracing::warn!(error = %e.message, "the embedder failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "embedder_failed",
        format!("the embedder could not embed the query: {}", e.client),
    )
}

/// A query's vector from the embedder (`None`: no embedder is configured).
async fn query_vector(app: &AppState, input: spool_runtime::EmbedInput) -> Result<Option<Vec<f32>>, ApiError> {
    match app.rt.embed(&[input]).await {
        Ok(Some(mut v)) => Ok(v.pop()),
        Ok(None) => Ok(None),
        Err(e) => Err(embedder_failed(&e)),
    }
}

/// The results of `scope` nearest a query vector (`which` of their vectors), in visible
/// videos.
fn semantic(
    app: &AppState,
    which: spool_search::Vectors,
    v: &[f32],
    scope: &Scope,
    top_k: usize,
) -> Result<spool_search::Nearby, ApiError> {
    let mut n = index(app)?.nearest(which, v, scope, top_k).map_err(search_error)?;
    n.hits = visible(app, std::mem::take(&mut n.hits))?;
    Ok(n)
}

/// Image hits, or 422 when nothing in scope could be compared: no image vector at all, or
/// only vectors of another length than the embedder's.
fn image_hits(app: &AppState, v: &[f32], scope: &Scope, top_k: usize) -> Result<Vec<Hit>, ApiError> {
    let n = semantic(app, spool_search::Vectors::Image, v, scope, top_k)?;
    match (n.present, n.compared) {
        (0, _) => Err(no_image_vectors()),
        (_, 0) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_search_unavailable",
            format!(
                "the image vectors in scope are not of the length of the embedder's ({} numbers): the run's processor and the embedder must share one model",
                v.len()
            ),
        )
        .details(json!({ "setting": "image_vector", "embedder_dimensions": v.len() }))),
        _ => Ok(n.hits),
    }
}

/// Reciprocal Rank Fusion of ranked lists, each with its weight: `Σ weight / (RRF_K + rank)`
/// (1-based ranks; a list that misses a result adds nothing), best first, ties by result id.
/// Each fused hit has the fused score and its rank in each list.
pub(crate) fn fuse(lists: &[(&[Hit], f64)]) -> Vec<(Hit, f64, Vec<Option<usize>>)> {
    let mut by_id: std::collections::HashMap<String, (Hit, f64, Vec<Option<usize>>)> = std::collections::HashMap::new();
    for (n, (hits, w)) in lists.iter().enumerate() {
        for (i, h) in hits.iter().enumerate() {
            let e = by_id.entry(h.doc.result_id.clone()).or_insert_with(|| (h.clone(), 0.0, vec![None; lists.len()]));
            if e.2[n].is_none() {
                e.2[n] = Some(i + 1);
                e.1 += w / (RRF_K + (i + 1) as f64);
            }
        }
    }
    let mut out: Vec<_> = by_id.into_values().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.doc.result_id.cmp(&b.0.doc.result_id)));
    out
}

/// The best `top_k` hits for a query: lexical (BM25) alone; with an embedder and no
/// `search_fields` (a vector is a whole result's), lexical and semantic hits fused by RRF, the
/// fused score as each hit's score.
pub(crate) async fn ranked(
    app: &AppState,
    query: &str,
    fields: &[String],
    scope: &Scope,
    top_k: usize,
) -> Result<Vec<Hit>, ApiError> {
    if app.rt.embedder().is_none() || !fields.is_empty() {
        return lexical(app, query, fields, scope, top_k);
    }
    let depth = top_k.saturating_mul(2).clamp(50, FUSION_DEPTH_MAX).max(top_k);
    let lex = lexical(app, query, fields, scope, depth)?;
    let Some(v) = query_vector(app, spool_runtime::EmbedInput::Text(query.to_string())).await? else {
        return Ok(lex.into_iter().take(top_k).collect());
    };
    let sem = semantic(app, spool_search::Vectors::Text, &v, scope, depth)?.hits;
    #[allow(clippy::cast_possible_truncation)]
    let fused = fuse(&[(&lex, 1.0), (&sem, 1.0)])
        .into_iter()
        .take(top_k)
        .map(|(mut h, score, _)| {
            h.score = Some(score as f32);
            h
        })
        .collect();
    Ok(fused)
}

/// Drops the hits of videos no longer visible (deleted, or their index deleted) that the
/// projection has not removed yet.
fn visible(app: &AppState, hits: Vec<Hit>) -> Result<Vec<Hit>, ApiError> {
    let ids: Vec<VideoId> = hits.iter().filter_map(|h| h.doc.video_id.parse().ok()).collect();
    let rows = app.rt.video_rows(ids)?;
    Ok(app.rt.read(|st| {
        hits.into_iter()
            .filter(|h| h.doc.video_id.parse::<VideoId>().ok().is_some_and(|v| super::shown(st, &rows, &v).is_some()))
            .collect()
    }))
}

/// A hit as the SDK's `SearchResult` (contract-search §2.11): `similarity_score` is the
/// lexical score (BM25, higher is better), `null` for a filter's hits.
pub(crate) fn result_json(app: &AppState, d: &Doc, score: Option<f32>, matched: &[String]) -> Value {
    let meta: Value = serde_json::from_str(&d.metadata_json).unwrap_or_else(|_| json!({}));
    let title =
        d.video_id.parse::<VideoId>().ok().and_then(|v| app.rt.video_row(&v).ok().flatten()).map(|r| r.title.clone());
    let preview: String = d.metadata_text.chars().take(PREVIEW_CHARS).collect();
    let mut v = json!({
        "result_type": if d.segment_id.is_some() { "segment" } else { "video" },
        "result_id": d.result_id,
        "video_id": d.video_id,
        "text_content": d.metadata_text,
        "content_preview": preview,
        "metadata_text": d.metadata_text,
        "metadata": meta,
        "extracted_metadata": meta,
        "media_type": d.media_type,
        "run_id": d.run_id,
        "source_run_id": d.run_id,
        "prompt_run_id": d.run_id,
        "prompt_id": d.prompt_id,
        "matched_field_paths": matched,
    });
    if let Some(t) = title {
        v["video_name"] = json!(t);
    }
    if d.index_id != PLAYGROUND {
        v["source_index_id"] = json!(d.index_id);
    }
    if let Some(s) = &d.segment_id {
        v["segment_id"] = json!(s);
        v["start_time"] = json!(d.start_us as f64 / 1e6);
        v["end_time"] = json!(d.end_us as f64 / 1e6);
    }
    if let Some(s) = score {
        v["similarity_score"] = json!(f64::from(s));
        v["text_score"] = json!(f64::from(s));
    }
    v
}

fn hits_json(app: &AppState, hits: &[Hit], fields: &[String]) -> Value {
    Value::Array(hits.iter().map(|h| result_json(app, &h.doc, h.score, fields)).collect())
}

/// The ids an index search covers: the path's and `index_ids` (each live, else 404).
fn index_scope(app: &AppState, path: &str, o: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let mut raw = vec![path.to_string()];
    for i in strings(o, "index_ids")? {
        if !raw.contains(&i) {
            raw.push(i);
        }
    }
    Ok(live_indexes(app, &raw)?.iter().map(ToString::to_string).collect())
}

/// `POST /indexes/{id}/search`.
pub async fn text(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let o = object(&body.value)?;
    let index_ids = index_scope(&app, &raw, o)?;
    let query = query_text(o, "query")?;
    let top_k = spool_model::num::sat_usize(int_field(o, "top_k", 30, 1, 100)?);
    let fields = search_fields(o)?;
    let run_ids = known_runs(&app, &strings(o, "run_ids")?)?.iter().map(ToString::to_string).collect();
    let scope = Scope { run_ids, index_ids, video_ids: Vec::new() };
    let hits = ranked(&app, &query, &fields, &scope, top_k).await?;
    Ok(json(StatusCode::OK, &hits_json(&app, &hits, &fields)))
}

fn image_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "image_search_unavailable",
        "image search needs image embeddings, which need an embedder: configure a [processors.<name>] table with kind = \"embed\" (this server has none)",
    )
    .details(json!({ "setting": "[processors.<name>] kind = \"embed\"" }))
}

fn no_image_vectors() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "image_search_unavailable",
        "no result in scope has an image vector: image vectors come from runs with enable_image_embedding whose processor answers image_vector",
    )
    .details(json!({ "setting": "enable_image_embedding" }))
}

/// The largest image a search may send, decoded: what fits, in base64, in a request body
/// (`BODY_BYTES_MAX`, 1 MiB: a larger body is 413 before this is read).
pub const QUERY_IMAGE_BYTES_MAX: usize = 768 << 10;

/// `image_data`: base64 of an image (PNG, JPEG, GIF, WebP, …) within [`QUERY_IMAGE_BYTES_MAX`].
fn query_image(o: &Map<String, Value>) -> Result<String, ApiError> {
    use base64::Engine;
    let raw = o.get("image_data").and_then(Value::as_str).unwrap_or("").trim();
    if raw.is_empty() {
        return Err(ApiError::validation("image_data", "image_data (a base64 image) is required"));
    }
    // The part after a data URL's comma, if it is one.
    let b64 = raw.split_once(";base64,").map_or(raw, |(_, b)| b);
    if b64.len() > QUERY_IMAGE_BYTES_MAX / 3 * 4 + 4 {
        return Err(ApiError::validation(
            "image_data",
            format!("the image is larger than {QUERY_IMAGE_BYTES_MAX} bytes"),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| ApiError::validation("image_data", "image_data is not standard base64"))?;
    if imagesize::blob_size(&bytes).is_err() {
        return Err(ApiError::validation(
            "image_data",
            "image_data is not an image Spool recognises (PNG, JPEG, GIF, WebP, …)",
        ));
    }
    Ok(b64.to_string())
}

/// An image hit: the similarity as `similarity_score` and `matched_image_score`, the segment's
/// start as `matched_image_timestamp`.
fn image_hit_json(app: &AppState, h: &Hit) -> Value {
    let mut v = result_json(app, &h.doc, h.score, &[]);
    v.as_object_mut().map(|m| m.remove("text_score"));
    if let Some(s) = h.score {
        v["matched_image_score"] = json!(f64::from(s));
        v["image_score"] = json!(f64::from(s));
    }
    if h.doc.segment_id.is_some() {
        v["matched_image_timestamp"] = json!(h.doc.start_us as f64 / 1e6);
    }
    v
}

/// `POST /indexes/{id}/image-search`: the segments whose image vectors are nearest the image's;
/// 422 without an embedder, or with no image vector in scope.
pub async fn image(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let o = object(&body.value)?;
    let index_ids = index_scope(&app, &raw, o)?;
    let top_k = spool_model::num::sat_usize(int_field(o, "top_k", 20, 1, 100)?);
    if app.rt.embedder().is_none() {
        return Err(image_unavailable());
    }
    let image = query_image(o)?;
    let run_ids = known_runs(&app, &strings(o, "run_ids")?)?.iter().map(ToString::to_string).collect();
    let scope = Scope { run_ids, index_ids, video_ids: Vec::new() };
    app.searches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let v = query_vector(&app, spool_runtime::EmbedInput::Image(image)).await?.ok_or_else(image_unavailable)?;
    let hits = image_hits(&app, &v, &scope, top_k)?;
    Ok(json(StatusCode::OK, &Value::Array(hits.iter().map(|h| image_hit_json(&app, h)).collect())))
}

/// `POST /indexes/{id}/multimodal-search`: RRF of the text ranking and the image ranking,
/// `fused_score = text_weight/(60+text_rank) + image_weight/(60+image_rank)`. Text only is
/// answered truthfully (`text_only`); an image needs an embedder and image vectors (422).
pub async fn multimodal(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let o = object(&body.value)?;
    let index_ids = index_scope(&app, &raw, o)?;
    let has_image = o.get("image_data").is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()));
    let has_text = o.get("text_query").is_some_and(|v| v.as_str().is_some_and(|s| !s.trim().is_empty()));
    let top_k = spool_model::num::sat_usize(int_field(o, "top_k", 20, 1, 100)?);
    let text_weight = weight(o, "text_weight", 0.5)?;
    let image_weight = weight(o, "image_weight", 0.5)?;
    if has_image && app.rt.embedder().is_none() {
        return Err(image_unavailable());
    }
    if !has_text && !has_image {
        return Err(ApiError::validation("text_query", "text_query or image_data is required"));
    }
    let fields = search_fields(o)?;
    let run_ids = known_runs(&app, &strings(o, "run_ids")?)?.iter().map(ToString::to_string).collect();
    let scope = Scope { run_ids, index_ids, video_ids: Vec::new() };
    let depth = top_k.saturating_mul(2).clamp(50, FUSION_DEPTH_MAX).max(top_k);
    let text_hits = if has_text {
        let query = query_text(o, "text_query")?;
        ranked(&app, &query, &fields, &scope, depth).await?
    } else {
        Vec::new()
    };
    let image_hits = if has_image {
        let image = query_image(o)?;
        app.searches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let v = query_vector(&app, spool_runtime::EmbedInput::Image(image)).await?.ok_or_else(image_unavailable)?;
        image_hits(&app, &v, &scope, depth)?
    } else {
        Vec::new()
    };
    let out: Vec<Value> = fuse(&[(&text_hits, text_weight), (&image_hits, image_weight)])
        .into_iter()
        .take(top_k)
        .map(|(h, fused, ranks)| {
            let mut v = result_json(&app, &h.doc, h.score, &fields);
            v.as_object_mut().map(|m| m.remove("text_score"));
            let (tr, ir) = (ranks[0], ranks[1]);
            if let Some(r) = tr {
                v["text_rank"] = json!(r);
                if let Some(s) = text_hits[r - 1].score {
                    v["text_score"] = json!(f64::from(s));
                }
            }
            if let Some(r) = ir {
                v["image_rank"] = json!(r);
                if let Some(s) = image_hits[r - 1].score {
                    v["image_score"] = json!(f64::from(s));
                    v["matched_image_score"] = json!(f64::from(s));
                }
                if h.doc.segment_id.is_some() {
                    v["matched_image_timestamp"] = json!(h.doc.start_us as f64 / 1e6);
                }
            }
            v["match_type"] = json!(match (tr, ir) {
                (Some(_), Some(_)) => "both",
                (None, Some(_)) => "image_only",
                _ => "text_only",
            });
            v["fused_score"] = json!(fused);
            v["similarity_score"] = json!(fused);
            v
        })
        .collect();
    Ok(json(StatusCode::OK, &Value::Array(out)))
}

/// One filter condition (contract-search §2.11's rules, checked again here).
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub field: String,
    pub op: String,
    pub kind: String,
    pub value: Option<Value>,
}

const OPS: [(&str, &[&str]); 5] = [
    ("string", &["equals", "contains", "starts_with", "ends_with", "is_empty", "is_not_empty"]),
    ("integer", &["equals", "greater_than", "greater_equal", "less_than", "less_equal"]),
    ("number", &["equals", "greater_than", "greater_equal", "less_than", "less_equal"]),
    ("boolean", &["equals"]),
    (
        "array",
        &["item_equals", "item_contains", "length_equals", "length_greater", "length_less", "is_empty", "is_not_empty"],
    ),
];

/// The conditions of a filter (1..=`max` of them), each checked as the SDK checks them.
pub(crate) fn parse_conditions(v: Option<&Value>, name: &str, max: usize) -> Result<Vec<Condition>, ApiError> {
    let list = v
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty() && a.len() <= max)
        .ok_or_else(|| ApiError::validation(name, format!("must be a list of 1 to {max} conditions")))?;
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let at = format!("{name}[{i}]");
        let o = c.as_object().ok_or_else(|| ApiError::validation(&at, "must be an object"))?;
        if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "field" | "operator" | "value" | "type")) {
            return Err(ApiError::validation(&at, format!("unknown key {k:?}")));
        }
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        let field =
            s("field").ok_or_else(|| ApiError::validation(&format!("{at}.field"), "must be a non-empty string"))?;
        if field.len() > 200 {
            return Err(ApiError::validation(&format!("{at}.field"), "must be at most 200 bytes"));
        }
        let kind =
            s("type").ok_or_else(|| ApiError::validation(&format!("{at}.type"), "must be a non-empty string"))?;
        let op = s("operator")
            .ok_or_else(|| ApiError::validation(&format!("{at}.operator"), "must be a non-empty string"))?;
        let allowed = OPS.iter().find(|(k, _)| *k == kind).map(|(_, ops)| *ops).ok_or_else(|| {
            ApiError::validation(&format!("{at}.type"), "must be one of: string, integer, number, boolean, array")
        })?;
        if !allowed.contains(&op) {
            return Err(ApiError::validation(
                &format!("{at}.operator"),
                format!("{op:?} is not an operator of type {kind}: {}", allowed.join(", ")),
            ));
        }
        let value = o.get("value");
        let valueless = matches!(op, "is_empty" | "is_not_empty");
        let vat = format!("{at}.value");
        if valueless {
            if value.is_some() {
                return Err(ApiError::validation(&vat, format!("must be absent for {op}")));
            }
        } else {
            let v = value.filter(|v| !v.is_null()).ok_or_else(|| ApiError::validation(&vat, "is required"))?;
            if v.as_str().is_some_and(|s| s.trim().is_empty()) {
                return Err(ApiError::validation(&vat, "must not be blank"));
            }
            let ok = match (kind, op) {
                ("string", _) => v.is_string(),
                ("integer", _) => v.is_i64() || v.is_u64(),
                ("number", _) => v.is_number(),
                ("boolean", _) => v.is_boolean(),
                ("array", "length_equals" | "length_greater" | "length_less") => v.is_u64(),
                ("array", "item_contains") => v.is_string(),
                ("array", _) => v.is_string() || v.is_number() || v.is_boolean(),
                _ => false,
            };
            if !ok {
                return Err(ApiError::validation(&vat, format!("is not a value for {kind} {op}")));
            }
        }
        out.push(Condition {
            field: field.to_string(),
            op: op.to_string(),
            kind: kind.to_string(),
            value: value.cloned(),
        });
    }
    Ok(out)
}

/// The value at a dot path of a result's metadata.
fn at_path<'a>(meta: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = meta;
    for part in path.split('.') {
        v = match v {
            Value::Object(o) => o.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn num_cmp(op: &str, a: f64, b: f64) -> bool {
    match op {
        "equals" => a == b,
        "greater_than" => a > b,
        "greater_equal" => a >= b,
        "less_than" => a < b,
        "less_equal" => a <= b,
        _ => false,
    }
}

/// Whether a result's metadata meets one condition: a missing (or null) field meets
/// `is_empty` alone; `contains`, `starts_with`, `ends_with` and `item_contains` ignore case;
/// `equals` and `item_equals` do not.
pub(crate) fn meets(meta: &Value, c: &Condition) -> bool {
    let v = at_path(meta, &c.field).filter(|v| !v.is_null());
    let Some(v) = v else { return c.op == "is_empty" };
    let want = c.value.as_ref();
    let lower = |s: &str| s.to_lowercase();
    match (c.kind.as_str(), c.op.as_str()) {
        ("string", "is_empty") => v.as_str() == Some(""),
        ("string", "is_not_empty") => v.as_str().is_some_and(|s| !s.is_empty()),
        ("string", op) => {
            let (Some(s), Some(w)) = (v.as_str(), want.and_then(Value::as_str)) else { return false };
            match op {
                "equals" => s == w,
                "contains" => lower(s).contains(&lower(w)),
                "starts_with" => lower(s).starts_with(&lower(w)),
                "ends_with" => lower(s).ends_with(&lower(w)),
                _ => false,
            }
        }
        ("integer", op) => match (v.as_i64(), want.and_then(Value::as_i64)) {
            (Some(a), Some(b)) => match op {
                "equals" => a == b,
                "greater_than" => a > b,
                "greater_equal" => a >= b,
                "less_than" => a < b,
                "less_equal" => a <= b,
                _ => false,
            },
            _ => false,
        },
        ("number", op) => match (v.as_f64(), want.and_then(Value::as_f64)) {
            (Some(a), Some(b)) => num_cmp(op, a, b),
            _ => false,
        },
        ("boolean", _) => v.as_bool().is_some() && v.as_bool() == want.and_then(Value::as_bool),
        ("array", op) => {
            let Some(items) = v.as_array() else { return false };
            match op {
                "is_empty" => items.is_empty(),
                "is_not_empty" => !items.is_empty(),
                "length_equals" => want.and_then(Value::as_u64) == Some(items.len() as u64),
                "length_greater" => want.and_then(Value::as_u64).is_some_and(|n| items.len() as u64 > n),
                "length_less" => want.and_then(Value::as_u64).is_some_and(|n| (items.len() as u64) < n),
                "item_contains" => want.and_then(Value::as_str).is_some_and(|w| {
                    let w = lower(w);
                    items.iter().any(|i| i.as_str().is_some_and(|s| lower(s).contains(&w)))
                }),
                "item_equals" => want.is_some_and(|w| {
                    items.iter().any(|i| match (i.as_f64(), w.as_f64()) {
                        (Some(a), Some(b)) => a == b,
                        _ => i == w,
                    })
                }),
                _ => false,
            }
        }
        _ => false,
    }
}

/// One page of a filter: the matching results after `after` (a `result_id`) in `result_id`
/// order, at most `page_size`; the cursor is the last result returned (or the last examined
/// when [`FILTER_SCAN_MAX`] results were examined first).
pub(crate) fn filter_page(
    app: &AppState,
    conds: &[Condition],
    scope: &Scope,
    after: Option<String>,
    page_size: usize,
) -> Result<(Vec<Doc>, Option<String>), ApiError> {
    app.searches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ix = index(app)?;
    let mut found: Vec<Doc> = Vec::new();
    let mut after = after;
    let mut examined = 0usize;
    loop {
        let batch = ix.scan(scope, after.as_deref(), 256).map_err(search_error)?;
        let full = batch.len() == 256;
        // The batch's last id (visible or not) is where the next read starts.
        let batch_last = batch.last().map(|d| d.result_id.clone());
        examined += batch.len();
        let batch = visible(app, batch.into_iter().map(|doc| Hit { score: None, doc }).collect())?;
        for h in batch {
            let meta: Value = serde_json::from_str(&h.doc.metadata_json).unwrap_or(Value::Null);
            if conds.iter().all(|c| meets(&meta, c)) {
                if found.len() == page_size {
                    // One more exists: the page is full and has a next one.
                    let next = found.last().map(|d| d.result_id.clone());
                    return Ok((found, next));
                }
                found.push(h.doc);
            }
        }
        if !full {
            return Ok((found, None));
        }
        after = batch_last;
        if examined >= FILTER_SCAN_MAX {
            // Every result through `after` was examined: the next page starts there.
            return Ok((found, after));
        }
    }
}

fn filter_response(app: &AppState, docs: &[Doc], next: Option<String>, page_size: usize, conds: &[Condition]) -> Value {
    let fields: Vec<String> = conds.iter().map(|c| c.field.clone()).collect();
    let results: Vec<Value> = docs.iter().map(|d| result_json(app, d, None, &fields)).collect();
    let next = next.map(|n| super::import_job::encode_cursor(&n));
    json!({
        "results": results,
        "data": results,
        "next_page_token": next,
        "total_shown": results.len(),
        "pagination": { "limit": page_size, "has_more": next.is_some(), "next_cursor": next },
    })
}

async fn filter_in(app: AppState, o: &Map<String, Value>, index_ids: Vec<String>) -> Result<Response, ApiError> {
    let conds = parse_conditions(o.get("conditions"), "conditions", CONDITIONS_MAX)?;
    let page_size = spool_model::num::sat_usize(int_field(o, "page_size", 50, 1, 100)?);
    let after = super::import_job::decode_cursor(o.get("cursor").and_then(Value::as_str)).map_err(|_| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_cursor", "cursor: is not a cursor this server issued")
    })?;
    let run_ids = known_runs(&app, &strings(o, "run_ids")?)?.iter().map(ToString::to_string).collect();
    let scope = Scope { run_ids, index_ids, video_ids: Vec::new() };
    let (docs, next) = filter_page(&app, &conds, &scope, after, page_size)?;
    Ok(json(StatusCode::OK, &filter_response(&app, &docs, next, page_size, &conds)))
}

/// `POST /search/filter/{index_id}`.
pub async fn filter(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let o = object(&body.value)?;
    let index_ids = index_scope(&app, &raw, o)?;
    filter_in(app.clone(), o, index_ids).await
}

/// `POST /search/filter/playground`: the results of runs over the playground (and of
/// `index_ids`, when named).
pub async fn filter_playground(
    State(app): State<AppState>,
    who: Principal,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let o = object(&body.value)?;
    let mut index_ids: Vec<String> =
        live_indexes(&app, &strings(o, "index_ids")?)?.iter().map(ToString::to_string).collect();
    index_ids.push(PLAYGROUND.to_string());
    filter_in(app.clone(), o, index_ids).await
}

/// `POST /search/multi-run`: one query over several runs (`run_ids`; else every run of
/// `index_id`; else every run). `best` keeps one hit per video segment (time range), the best
/// scored across runs; `all` keeps every run's hit; `weighted` scales each run's scores by its
/// recency (the newest run 1.0, the others down to 0.5).
pub async fn multi_run(
    State(app): State<AppState>,
    who: Principal,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let o = object(&body.value)?;
    let query = query_text(o, "query")?;
    let top_k = spool_model::num::sat_usize(int_field(o, "top_k", 5, 1, 50)?);
    let aggregation = o.get("aggregation").and_then(Value::as_str).unwrap_or("best").to_string();
    if !matches!(aggregation.as_str(), "best" | "all" | "weighted") {
        return Err(ApiError::validation("aggregation", "must be one of: best, all, weighted"));
    }
    let runs = known_runs(&app, &strings(o, "run_ids")?)?;
    let index_ids = match o.get("index_id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(i) => live_indexes(&app, &[i.to_string()])?.iter().map(ToString::to_string).collect(),
        None => Vec::new(),
    };
    let scope = Scope { run_ids: runs.iter().map(ToString::to_string).collect(), index_ids, video_ids: Vec::new() };
    // Each run may give `top_k` hits (the docstring's "per run"); at most 50 runs' worth.
    let wide = top_k * runs.len().clamp(1, 50);
    let mut hits = ranked(&app, &query, &[], &scope, wide).await?;
    match aggregation.as_str() {
        "best" => {
            let mut seen = std::collections::HashSet::new();
            hits.retain(|h| {
                seen.insert((h.doc.video_id.clone(), h.doc.start_us, h.doc.end_us, h.doc.segment_id.is_some()))
            });
        }
        "weighted" => {
            let created: std::collections::HashMap<String, u64> = app.rt.read(|st| {
                hits.iter()
                    .filter_map(|h| {
                        let id: PromptRunId = h.doc.run_id.parse().ok()?;
                        Some((h.doc.run_id.clone(), st.prompt_runs.get(&id)?.created_at_ms))
                    })
                    .collect()
            });
            let newest = created.values().copied().max().unwrap_or(0);
            let oldest = created.values().copied().min().unwrap_or(0);
            for h in &mut hits {
                let c = created.get(&h.doc.run_id).copied().unwrap_or(oldest);
                let w: f32 =
                    if newest == oldest { 1.0 } else { 0.5 + 0.5 * (c - oldest) as f32 / (newest - oldest) as f32 };
                h.score = h.score.map(|s| s * w);
            }
            hits.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
        }
        _ => {}
    }
    hits.truncate(if aggregation == "all" { wide } else { top_k });
    Ok(json(StatusCode::OK, &hits_json(&app, &hits, &[])))
}

/// `POST /playground/search?run_id=`: the results of runs over the playground, or of the run
/// named.
pub async fn playground(
    State(app): State<AppState>,
    who: Principal,
    RawQuery(q): RawQuery,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let o = object(&body.value)?;
    let qs = crate::body::Query::parse(q.as_deref())?;
    let query = query_text(o, "query")?;
    let top_k = spool_model::num::sat_usize(int_field(o, "top_k", 30, 1, 100)?);
    let scope = match qs.get("run_id").filter(|s| !s.is_empty()) {
        Some(r) => Scope {
            run_ids: known_runs(&app, &[r.to_string()])?.iter().map(ToString::to_string).collect(),
            ..Default::default()
        },
        None => Scope { index_ids: vec![PLAYGROUND.to_string()], ..Default::default() },
    };
    let hits = ranked(&app, &query, &[], &scope, top_k).await?;
    Ok(json(StatusCode::OK, &hits_json(&app, &hits, &[])))
}
