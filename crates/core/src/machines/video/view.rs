//! The JSON of a video (contract §2.7): what the API answers and what webhook deliveries carry.

use super::{Video, VideoRow};
use serde_json::{Value, json};
use spool_model::time::rfc3339_ms;

/// A video with its status over its prompt runs (`status`, `processing_status`: one entry per
/// run it is in, oldest first).
pub fn video(v: &Video, row: &VideoRow, st: &crate::State) -> Value {
    let runs: Vec<Value> = st
        .video_runs
        .get(&v.video_id)
        .into_iter()
        .flatten()
        .filter_map(|r| st.prompt_runs.get(r))
        .filter_map(|r| {
            r.video_pos.get(&v.video_id).and_then(|n| crate::machines::prompt_run::view::processing_status(r, *n))
        })
        .collect();
    let updated = st
        .video_runs
        .get(&v.video_id)
        .into_iter()
        .flatten()
        .filter_map(|r| st.prompt_runs.get(r))
        .map(|r| r.updated_at_ms)
        .max();
    json!({
        "video_id": v.video_id.to_string(),
        "title": row.title,
        "video_uri": format!("spool://media/{}", row.media_path),
        "status": crate::machines::prompt_run::view::video_status(st, &v.video_id),
        "created_at": rfc3339_ms(v.created_at_ms),
        "updated_at": rfc3339_ms(updated.unwrap_or(v.created_at_ms).max(v.created_at_ms)),
        "metadata_keys": null,
        "media_type": v.media_type.as_str(),
        "processing_status": if runs.is_empty() { Value::Null } else { Value::Array(runs) },
        "index_id": if v.in_playground() { Value::Null } else { json!(v.index_id.to_string()) },
        "duration_seconds": v.range_seconds().1 - v.range_seconds().0,
        "media": row.facts.as_ref().map(facts),
        "part": row.part.map(|p| json!({
            "part_index": p.part_index,
            "part_count": p.part_count,
            "source_start_seconds": p.start_us as f64 / 1e6,
            "source_end_seconds": p.end_us as f64 / 1e6,
        })),
        "size_bytes": row.size_bytes,
        "sha256": hex::encode(row.sha256),
        "source": {
            "connector_id": row.connector_id.map(|c| c.to_string()),
            "path": row.source_path,
            "etag": row.source_etag,
        },
    })
}

/// The probe's facts as JSON (`Video.media`).
pub fn facts(f: &spool_model::MediaFacts) -> Value {
    json!({
        "container": f.container,
        "duration_seconds": f.duration_us.map(|d| d as f64 / 1e6),
        "bit_rate": f.bit_rate,
        "streams": f.streams.iter().map(|s| json!({
            "kind": s.kind.as_str(),
            "codec": s.codec,
            "width": s.width,
            "height": s.height,
            "frame_rate": s.frame_rate.map(|(n, d)| n as f64 / d as f64),
            "sample_rate": s.sample_rate,
            "channels": s.channels,
            "duration_seconds": s.duration_us.map(|d| d as f64 / 1e6),
        })).collect::<Vec<_>>(),
    })
}
