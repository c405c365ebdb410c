//! Idempotency records: the stored answer of a request made with an `Idempotency-Key`,
//! written in the same transaction as the events of that request.

use serde::{Deserialize, Serialize};

/// A request's idempotency key, scoped by principal, method and route, with a fingerprint
/// (a hash, never the body) of what was asked.
#[derive(Debug, Clone)]
pub struct IdemKey {
    /// `principal|METHOD|/route|key`.
    pub scoped: String,
    /// SHA-256 of the request's canonical form.
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub fingerprint: [u8; 32],
    pub status: u16,
    pub body: Vec<u8>,
    pub created_at_ms: u64,
}

impl IdemRecord {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).ok().map(|(r, _)| r)
    }
}
