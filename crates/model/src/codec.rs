//! The envelope and its byte format (see `engine-spec/log-format.md`).
//!
//! A record is `format_version` as 2 bytes little-endian, then the bincode 2 (standard
//! config: varints, little-endian) encoding of the body for that version. The current
//! version is [`FORMAT_VERSION`]; older versions are decoded here and upgraded in memory.

use crate::event::Event;
use serde::{Deserialize, Serialize};

/// The format written by this build.
pub const FORMAT_VERSION: u16 = 1;

/// One event as stored: its global position, its stream, its time and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Global sequence number, from 1, without gaps.
    pub seq: u64,
    /// The aggregate's public id (`idx_…`, `key_…`, …).
    pub stream: String,
    /// When the event was decided, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The format the record was read from (writes always use [`FORMAT_VERSION`]).
    pub format_version: u16,
    pub event: Event,
}

#[derive(Serialize)]
struct BodyV1Ref<'a> {
    seq: u64,
    stream: &'a str,
    at_ms: u64,
    event: &'a Event,
}

#[derive(Deserialize)]
struct BodyV1 {
    seq: u64,
    stream: String,
    at_ms: u64,
    event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is {0} bytes, shorter than its 2-byte version header")]
    Truncated(usize),
    #[error("record has format_version {0}, which this build does not know")]
    UnknownVersion(u16),
    #[error("record body does not decode: {0}")]
    Decode(String),
    #[error("record has {0} trailing bytes after its body")]
    TrailingBytes(usize),
    #[error("event does not encode: {0}")]
    Encode(String),
}

/// The most bytes one record may claim when decoded: a damaged length field that claims more is
/// refused before anything is allocated (an unbounded claim aborted the process). The largest
/// event written is far below it (a page of 1,000 discovered files is ~200 KB).
pub const RECORD_BYTES_MAX: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RECORD_BYTES_MAX>()
}

/// Encode the event body alone (what the golden files hold).
pub fn encode_event(event: &Event) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(event, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode an event body written by [`encode_event`].
pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
    let (event, used) = bincode::serde::decode_from_slice::<Event, _>(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(event)
}

/// Encode an envelope in the current format. `env.format_version` is ignored: writes are
/// always [`FORMAT_VERSION`].
pub fn encode_envelope(env: &Envelope) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let body = BodyV1Ref { seq: env.seq, stream: &env.stream, at_ms: env.at_ms, event: &env.event };
    bincode::serde::encode_into_std_write(&body, &mut out, config()).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decode a record of any known format version.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, CodecError> {
    if bytes.len() < 2 {
        return Err(CodecError::Truncated(bytes.len()));
    }
    let version = u16::from_le_bytes([bytes[0], bytes[1]]);
    let body = &bytes[2..];
    match version {
        1 => {
            let (b, used) = bincode::serde::decode_from_slice::<BodyV1, _>(body, config())
                .map_err(|e| CodecError::Decode(e.to_string()))?;
            if used != body.len() {
                return Err(CodecError::TrailingBytes(body.len() - used));
            }
            Ok(Envelope { seq: b.seq, stream: b.stream, at_ms: b.at_ms, format_version: 1, event: b.event })
        }
        other => Err(CodecError::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_for_every_sample() {
        for (i, event) in Event::samples().into_iter().enumerate() {
            let env = Envelope {
                seq: i as u64 + 1,
                stream: "idx_x".into(),
                at_ms: 1_764_000_000_000 + i as u64,
                format_version: FORMAT_VERSION,
                event,
            };
            let bytes = encode_envelope(&env).unwrap();
            assert_eq!(decode_envelope(&bytes).unwrap(), env);
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let env =
            Envelope { seq: 7, stream: "key_x".into(), at_ms: 9, format_version: 1, event: Event::samples().remove(4) };
        let bytes = encode_envelope(&env).unwrap();
        assert!(matches!(decode_envelope(&bytes[..1]), Err(CodecError::Truncated(1))));
        let mut future = bytes.clone();
        future[0] = 99;
        assert!(matches!(decode_envelope(&future), Err(CodecError::UnknownVersion(99))));
        for cut in 2..bytes.len() {
            assert!(decode_envelope(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(decode_envelope(&long), Err(CodecError::TrailingBytes(1))));
    }
}
