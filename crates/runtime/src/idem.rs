//! Idempotency records: the stored answer of a request made with an `Idempotency-Key`,
//! written in the same transaction as the events of that request.

use serde::{Deserialize, Serialize};
use sha2::Digest;
use spool_model::Sealed;

/// A request's idempotency key, scoped by principal, method and route, with a fingerprint
/// (a hash, never the body) of what was asked.
#[derive(Debug, Clone)]
pub struct IdemKey {
    /// `principal|METHOD|/route|key`.
    pub scoped: String,
    /// SHA-256 of the request's canonical form.
    pub fingerprint: [u8; 32],
    /// The answer holds a secret: store it sealed by the keyring.
    pub seal: bool,
}

impl IdemKey {
    /// The keyring owner of a sealed record: a hash of the scoped key.
    pub fn owner(&self) -> String {
        let h = sha2::Sha256::digest(self.scoped.as_bytes());
        format!("idem:{}", hex::encode(&h[..16]))
    }
}

/// A stored answer body: in clear, or sealed when it holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdemBody {
    Plain(Vec<u8>),
    Sealed(Sealed),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub fingerprint: [u8; 32],
    pub status: u16,
    pub body: IdemBody,
    pub created_at_ms: u64,
}

impl IdemRecord {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        // Bounded like a log record: a damaged length is refused, not allocated.
        let config = bincode::config::standard().with_limit::<{ spool_model::codec::RECORD_BYTES_MAX }>();
        bincode::serde::decode_from_slice(bytes, config).ok().map(|(r, _)| r)
    }
}
