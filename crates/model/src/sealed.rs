//! A secret as events carry it: ciphertext and the owner whose data key sealed it, never the
//! plaintext. Opening it needs the runtime's keyring; once the owner's data key is deleted
//! (crypto-shredding) nobody can.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Bytes of the XChaCha20-Poly1305 nonce.
pub const SEALED_NONCE_BYTES: usize = 24;

#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The owner (a connector id, a webhook id, an idempotency record) whose data key sealed
    /// this; it is also the AEAD's associated data.
    pub owner: String,
    pub nonce: [u8; SEALED_NONCE_BYTES],
    /// Ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed(<redacted> {} bytes for {})", self.ciphertext.len(), self.owner)
    }
}

impl fmt::Display for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<sealed>")
    }
}

#[derive(Serialize, Deserialize)]
struct SealedParts {
    owner: String,
    nonce: [u8; SEALED_NONCE_BYTES],
    ciphertext: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

/// In JSON a sealed value is one string, `sealed.v1.<owner>.<nonce>.<ciphertext>` (base64url):
/// readable enough for `spool log show --json`, and still only ciphertext.
impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format!("sealed.v1.{}.{}.{}", self.owner, b64(&self.nonce), b64(&self.ciphertext)))
        } else {
            SealedParts { owner: self.owner.clone(), nonce: self.nonce, ciphertext: self.ciphertext.clone() }
                .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let bad = || serde::de::Error::custom("not a sealed value (sealed.v1.<owner>.<nonce>.<ciphertext>)");
            let rest = s.strip_prefix("sealed.v1.").ok_or_else(bad)?;
            let mut parts = rest.rsplitn(3, '.');
            let ct = parts.next().and_then(unb64).ok_or_else(bad)?;
            let nonce = parts.next().and_then(unb64).ok_or_else(bad)?;
            let owner = parts.next().ok_or_else(bad)?.to_string();
            let nonce: [u8; SEALED_NONCE_BYTES] = nonce.try_into().map_err(|_| bad())?;
            Ok(Sealed { owner, nonce, ciphertext: ct })
        } else {
            let p = SealedParts::deserialize(d)?;
            Ok(Sealed { owner: p.owner, nonce: p.nonce, ciphertext: p.ciphertext })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_bytes_and_json_round_trips() {
        let s = Sealed { owner: "conn_X".into(), nonce: [7; 24], ciphertext: vec![1, 2, 3, 250, 251, 252, 9] };
        assert_eq!(format!("{s}"), "<sealed>");
        assert!(!format!("{s:?}").contains("250"));
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.starts_with("\"sealed.v1.conn_X."), "{json}");
        assert_eq!(serde_json::from_str::<Sealed>(&json).unwrap(), s);
        for n in 0..10 {
            let bytes: Vec<u8> = (0..n).map(|i: u32| u8::try_from((i * 37) % 256).unwrap_or(0)).collect();
            assert_eq!(unb64(&b64(&bytes)).unwrap(), bytes);
        }
    }
}
