//! The JSON of a video (contract §2.7): what the API answers and what webhook deliveries carry.

use super::Video;
use serde_json::{Value, json};
use spool_model::time::rfc3339_ms;

pub fn video(v: &Video) -> Value {
    json!({
        "video_id": v.video_id.to_string(),
        "title": v.title,
        "video_uri": format!("spool://media/{}", v.media_path),
        "status": "not_processed",
        "created_at": rfc3339_ms(v.created_at_ms),
        "updated_at": rfc3339_ms(v.created_at_ms),
        "metadata_keys": null,
        "media_type": v.media_type.as_str(),
        "processing_status": null,
        "index_id": v.index_id.to_string(),
        "size_bytes": v.size_bytes,
        "sha256": hex::encode(v.sha256),
        "source": {
            "connector_id": v.connector_id.map(|c| c.to_string()),
            "path": v.source_path,
            "etag": v.source_etag,
        },
    })
}
