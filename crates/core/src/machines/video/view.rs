//! The JSON of a video (contract §2.7): what the API answers and what webhook deliveries carry.

use super::{Video, VideoRow};
use serde_json::{Value, json};
use spool_model::time::rfc3339_ms;

/// A video with its status over its prompt runs (`status`, `processing_status`: one entry per
/// run it is in, oldest first).
pub fn video(v: &Video, row: &VideoRow, st: &crate::State) -> Value {
    serde_json::to_value(of(v, row, st)).unwrap_or(Value::Null)
}

/// The JSON of a video as a value that serializes straight to bytes (a page of videos is
/// written without building a `Value` per video, whose maps cost most of a page's time). Its
/// fields are in the order a `Value`'s keys take (sorted), so both give the same bytes.
#[derive(serde::Serialize)]
pub struct VideoJson<'a> {
    created_at: String,
    duration_seconds: f64,
    index_id: Option<String>,
    media: Option<FactsJson<'a>>,
    media_type: &'static str,
    metadata_keys: Option<()>,
    part: Option<PartJson>,
    processing_status: Option<Vec<Value>>,
    sha256: String,
    size_bytes: u64,
    source: SourceJson<'a>,
    status: &'static str,
    title: &'a str,
    updated_at: String,
    video_id: String,
    video_uri: String,
}

#[derive(serde::Serialize)]
struct FactsJson<'a> {
    bit_rate: Option<u64>,
    container: &'a str,
    duration_seconds: Option<f64>,
    streams: Vec<StreamJson<'a>>,
}

#[derive(serde::Serialize)]
struct StreamJson<'a> {
    channels: Option<u32>,
    codec: &'a str,
    duration_seconds: Option<f64>,
    frame_rate: Option<f64>,
    height: Option<u32>,
    kind: &'static str,
    sample_rate: Option<u32>,
    width: Option<u32>,
}

#[derive(serde::Serialize)]
struct PartJson {
    part_count: u32,
    part_index: u32,
    source_end_seconds: f64,
    source_start_seconds: f64,
}

#[derive(serde::Serialize)]
struct SourceJson<'a> {
    connector_id: Option<String>,
    etag: Option<&'a str>,
    path: &'a str,
}

/// A video's JSON ([`video`]) as a [`VideoJson`].
pub fn of<'a>(v: &Video, row: &'a VideoRow, st: &crate::State) -> VideoJson<'a> {
    let in_runs = || st.video_runs.get(&v.video_id).into_iter().flatten().filter_map(|r| st.prompt_runs.get(r));
    let runs: Vec<Value> = in_runs()
        .filter_map(|r| {
            r.video_pos.get(&v.video_id).and_then(|n| crate::machines::prompt_run::view::processing_status(r, *n))
        })
        .collect();
    let updated = in_runs().map(|r| r.updated_at_ms).max().unwrap_or(v.created_at_ms).max(v.created_at_ms);
    let created_at = rfc3339_ms(v.created_at_ms);
    VideoJson {
        updated_at: if updated == v.created_at_ms { created_at.clone() } else { rfc3339_ms(updated) },
        created_at,
        duration_seconds: v.range_seconds().1 - v.range_seconds().0,
        index_id: (!v.in_playground()).then(|| v.index_id.to_string()),
        media: row.facts.as_ref().map(|f| FactsJson {
            bit_rate: f.bit_rate,
            container: &f.container,
            duration_seconds: f.duration_us.map(|d| d as f64 / 1e6),
            streams: f
                .streams
                .iter()
                .map(|s| StreamJson {
                    channels: s.channels,
                    codec: &s.codec,
                    duration_seconds: s.duration_us.map(|d| d as f64 / 1e6),
                    frame_rate: s.frame_rate.map(|(n, d)| n as f64 / d as f64),
                    height: s.height,
                    kind: f.stream_kind_name(s),
                    sample_rate: s.sample_rate,
                    width: s.width,
                })
                .collect(),
        }),
        media_type: v.media_type.as_str(),
        metadata_keys: None,
        part: row.part.map(|p| PartJson {
            part_count: p.part_count,
            part_index: p.part_index,
            source_end_seconds: p.end_us as f64 / 1e6,
            source_start_seconds: p.start_us as f64 / 1e6,
        }),
        processing_status: (!runs.is_empty()).then_some(runs),
        sha256: hex::encode(row.sha256),
        size_bytes: row.size_bytes,
        source: SourceJson {
            connector_id: row.connector_id.map(|c| c.to_string()),
            etag: row.source_etag.as_deref(),
            path: &row.source_path,
        },
        status: crate::machines::prompt_run::view::video_status(st, &v.video_id),
        title: &row.title,
        video_id: v.video_id.to_string(),
        video_uri: format!("spool://media/{}", row.media_path),
    }
}

/// The probe's facts as JSON (`Video.media`).
pub fn facts(f: &spool_model::MediaFacts) -> Value {
    json!({
        "container": f.container,
        "duration_seconds": f.duration_us.map(|d| d as f64 / 1e6),
        "bit_rate": f.bit_rate,
        "streams": f.streams.iter().map(|s| json!({
            "kind": f.stream_kind_name(s),
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

#[cfg(test)]
mod tests {
    use super::*;
    use spool_model::{ConnectorId, IndexId, MediaFacts, MediaType, PartRange, StreamFacts, StreamKind, VideoId};

    /// A page writes `VideoJson` straight to bytes; a single video goes through a `Value`, whose
    /// keys are sorted: both must give the same bytes (the struct's fields in sorted order).
    #[test]
    fn a_video_written_straight_to_bytes_is_the_same_as_through_a_value() {
        let row = VideoRow {
            index_id: IndexId(ulid::Ulid::from_parts(1, 1)),
            media_type: MediaType::Video,
            created_at_ms: 1_764_000_000_000,
            title: "clip \"one\".mp4".into(),
            connector_id: Some(ConnectorId(ulid::Ulid::from_parts(2, 2))),
            source_path: "in/clip.mp4".into(),
            source_etag: Some("\"e1\"".into()),
            size_bytes: 1234,
            sha256: [7; 32],
            media_path: "videos/ab/vid.mp4".into(),
            facts: Some(MediaFacts {
                container: "mp4".into(),
                duration_us: Some(2_500_000),
                bit_rate: Some(4_000),
                streams: vec![
                    StreamFacts {
                        kind: StreamKind::Video,
                        codec: "h264".into(),
                        width: Some(640),
                        height: Some(360),
                        frame_rate: Some((30_000, 1_001)),
                        sample_rate: None,
                        channels: None,
                        duration_us: Some(2_500_000),
                    },
                    StreamFacts {
                        kind: StreamKind::Audio,
                        codec: "aac".into(),
                        width: None,
                        height: None,
                        frame_rate: Some((1, 0)),
                        sample_rate: Some(48_000),
                        channels: Some(2),
                        duration_us: None,
                    },
                ],
            }),
            part: Some(PartRange { part_index: 1, part_count: 3, start_us: 1_000_000, end_us: 2_500_000 }),
            parts: vec![],
        };
        let id = VideoId(ulid::Ulid::from_parts(3, 3));
        let v = Video::of(id, &row, None);
        let st = crate::State::default();
        let direct = serde_json::to_vec(&of(&v, &row, &st)).unwrap();
        let through = serde_json::to_vec(&video(&v, &row, &st)).unwrap();
        assert_eq!(String::from_utf8(direct.clone()).unwrap(), String::from_utf8(through).unwrap());
        // The JSON as it was built before (a `json!` literal): the same bytes.
        let before = json!({
            "video_id": v.video_id.to_string(),
            "title": row.title,
            "video_uri": format!("spool://media/{}", row.media_path),
            "status": crate::machines::prompt_run::view::video_status(&st, &v.video_id),
            "created_at": rfc3339_ms(v.created_at_ms),
            "updated_at": rfc3339_ms(v.created_at_ms),
            "metadata_keys": null,
            "media_type": v.media_type.as_str(),
            "processing_status": Value::Null,
            "index_id": json!(v.index_id.to_string()),
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
        });
        assert_eq!(String::from_utf8(direct).unwrap(), serde_json::to_string(&before).unwrap());
        let j = video(&v, &row, &st);
        assert_eq!(j["media"]["streams"][1]["frame_rate"], Value::Null, "a rate over 0 is no number");
        assert_eq!(j["part"]["source_start_seconds"], json!(1.0));
        assert_eq!(j["source"]["etag"], json!("\"e1\""));
    }
}
