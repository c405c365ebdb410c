//! The keyring: secrets at rest.
//!
//! An append-only log cannot forget, so no secret enters it in clear. Each owner (a connector,
//! a webhook, an idempotency record) has a 256-bit data key, wrapped by the master key and kept
//! in the log's `data_keys` table, outside the event stream. Values are sealed with
//! XChaCha20-Poly1305 under the owner's data key, with the owner id as associated data.
//! Deleting the owner deletes its data key in the same transaction as the deletion event
//! (crypto-shredding): the ciphertext left in the log can no longer be opened by anyone.
//!
//! The master key comes from `SPOOL_MASTER_KEY` (standard base64 of 32 bytes) or from
//! `<data-dir>/master.key`, created at first start with mode 0600 and refused if its mode is
//! wider.

#![allow(clippy::disallowed_methods)] // key material comes from the OS CSPRNG here, never from the injected IdSource; SPOOL_MASTER_KEY is read here
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use spool_log::{EventLog, SideTable, SideWrite};
use spool_model::Sealed;
use spool_model::sealed::SEALED_NONCE_BYTES;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

pub const MASTER_KEY_ENV: &str = "SPOOL_MASTER_KEY";
/// The new master key for `spool keys rotate-master` when the current one is in the environment.
pub const NEW_MASTER_KEY_ENV: &str = "SPOOL_NEW_MASTER_KEY";
pub const MASTER_KEY_FILE: &str = "master.key";
/// A data key whose only use is to tell, at open, whether the master key is the right one.
pub const CHECK_OWNER: &str = "spool:keyring-check";
const WRAP_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{MASTER_KEY_ENV} must be the standard base64 of 32 bytes")]
    BadEnvKey,
    #[error("{path}: must hold the standard base64 of 32 bytes")]
    BadKeyFile { path: PathBuf },
    #[error(
        "{path} has mode {mode:o}; the master key must be readable by its owner only. Fix it with: chmod 600 {path}"
    )]
    KeyFileMode { path: PathBuf, mode: u32 },
    #[error("the master key does not open this data directory's keyring (wrong {MASTER_KEY_ENV} or master.key?)")]
    WrongMasterKey,
    #[error("a stored data key is damaged: {0}")]
    Damaged(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Log(#[from] spool_log::Error),
}

/// The master key. Never printed.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

fn decode_key(text: &str) -> Option<MasterKey> {
    use base64::Engine;
    let bytes = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?);
    let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(MasterKey(Zeroizing::new(arr)))
}

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSource {
    Env,
    File(PathBuf),
}

impl MasterKey {
    /// An HMAC-SHA256 of `msg` under a key derived from this master key for `purpose` (signed
    /// media URLs; requests between the nodes of a cluster, which share the master key).
    pub fn mac(&self, purpose: &str, msg: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut derive = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.as_ref()).expect("any key length");
        derive.update(b"spool/");
        derive.update(purpose.as_bytes());
        let key: Zeroizing<[u8; 32]> = Zeroizing::new(derive.finalize().into_bytes().into());
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_ref()).expect("any key length");
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }

    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(k.as_mut());
        MasterKey(k)
    }

    pub fn from_base64(text: &str) -> Option<Self> {
        decode_key(text)
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        use base64::Engine;
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }

    /// `SPOOL_MASTER_KEY`, else `<data_dir>/master.key`, created (0600) when missing.
    pub fn load(data_dir: &Path) -> Result<(MasterKey, MasterSource), KeyringError> {
        if let Ok(v) = std::env::var(MASTER_KEY_ENV) {
            return decode_key(&v).map(|k| (k, MasterSource::Env)).ok_or(KeyringError::BadEnvKey);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyringError::KeyFileMode { path, mode });
                }
                let text = Zeroizing::new(
                    std::fs::read_to_string(&path).map_err(|e| KeyringError::Io(format!("{}: {e}", path.display())))?,
                );
                let key = decode_key(&text).ok_or_else(|| KeyringError::BadKeyFile { path: path.clone() })?;
                Ok((key, MasterSource::File(path)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| KeyringError::Io(format!("{}: {e}", data_dir.display())))?;
                let key = MasterKey::generate();
                key.write_file(&path)?;
                tracing::info!(path = %path.display(), "created the master key; back it up with the data directory");
                Ok((key, MasterSource::File(path)))
            }
            Err(e) => Err(KeyringError::Io(format!("{}: {e}", path.display()))),
        }
    }

    /// Write the key to a new file with mode 0600, durably.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyringError> {
        let io = |e: std::io::Error| KeyringError::Io(format!("{}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
        f.write_all(self.to_base64().as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }
}

fn wrap_aad(owner: &str) -> Vec<u8> {
    [b"spool-data-key:".as_slice(), owner.as_bytes()].concat()
}

fn seal_aad(owner: &str) -> Vec<u8> {
    [b"spool-sealed:".as_slice(), owner.as_bytes()].concat()
}

fn nonce() -> [u8; SEALED_NONCE_BYTES] {
    let mut n = [0u8; SEALED_NONCE_BYTES];
    rand::rng().fill_bytes(&mut n);
    n
}

/// `[version][nonce 24][ciphertext of the 32-byte key + 16-byte tag]`.
fn wrap(master: &MasterKey, owner: &str, dk: &[u8; 32]) -> Vec<u8> {
    let n = nonce();
    let ct = master
        .cipher()
        .encrypt(XNonce::from_slice(&n), Payload { msg: dk, aad: &wrap_aad(owner) })
        .expect("XChaCha20-Poly1305 encryption of 32 bytes cannot fail");
    [&[WRAP_VERSION][..], &n, &ct].concat()
}

fn unwrap(master: &MasterKey, owner: &str, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyringError> {
    if wrapped.len() != 1 + SEALED_NONCE_BYTES + 48 || wrapped[0] != WRAP_VERSION {
        return Err(KeyringError::Damaged(format!("data key of {owner} has an unknown shape")));
    }
    let n = &wrapped[1..1 + SEALED_NONCE_BYTES];
    let pt = Zeroizing::new(
        master
            .cipher()
            .decrypt(XNonce::from_slice(n), Payload { msg: &wrapped[1 + SEALED_NONCE_BYTES..], aad: &wrap_aad(owner) })
            .map_err(|_| KeyringError::WrongMasterKey)?,
    );
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&pt);
    Ok(k)
}

pub struct Keyring {
    master: MasterKey,
    /// Any log: the keyring reads its data keys there.
    log: Arc<dyn EventLog>,
    cache: Mutex<HashMap<String, Zeroizing<[u8; 32]>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(<redacted>)")
    }
}

impl Keyring {
    /// Open the keyring of a log with its master key. A wrong master key is refused here, at
    /// start, rather than at the first secret. On a new log the check key is written.
    pub async fn load(master: MasterKey, log: Arc<dyn EventLog>) -> Result<Keyring, KeyringError> {
        match log.side_get(SideTable::DataKeys, CHECK_OWNER)? {
            Some(w) => {
                unwrap(&master, CHECK_OWNER, &w)?;
            }
            None => {
                let mut dk = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(dk.as_mut());
                let put = SideWrite::Put {
                    table: SideTable::DataKeys,
                    key: CHECK_OWNER.into(),
                    value: wrap(&master, CHECK_OWNER, &dk),
                };
                log.append(spool_log::AppendRequest { streams: vec![], side: vec![put] }).await?;
            }
        }
        Ok(Keyring { master, log, cache: Mutex::new(HashMap::new()) })
    }

    /// Read the data keys from `log` instead (an index partition of a partitioned cluster opens
    /// the catalog's secrets with the catalog's keys). The master-key check stays this log's.
    pub fn reading_keys_from(mut self, log: Arc<dyn EventLog>) -> Keyring {
        self.log = log;
        self
    }

    /// Forget the cached data key of `owner`: the next use reads it again (and finds none once
    /// it was shredded elsewhere).
    pub fn evict(&self, owner: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(owner);
    }

    fn data_key(&self, owner: &str) -> Result<Option<Zeroizing<[u8; 32]>>, KeyringError> {
        if let Some(k) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(owner) {
            return Ok(Some(k.clone()));
        }
        match self.log.side_get(SideTable::DataKeys, owner)? {
            None => Ok(None),
            Some(w) => {
                let k = unwrap(&self.master, owner, &w)?;
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(owner.to_string(), k.clone());
                Ok(Some(k))
            }
        }
    }

    /// An HMAC-SHA256 of `msg` under a key derived from the master key for `purpose` (signed
    /// media URLs): verifiable by the servers that share this master key (a cluster's nodes),
    /// invalid after a master-key rotation.
    pub fn mac(&self, purpose: &str, msg: &[u8]) -> [u8; 32] {
        self.master.mac(purpose, msg)
    }

    /// Seal `plaintext` for `owner`. The returned side write stores the owner's (wrapped) data
    /// key; append it in the same request as the event that carries the sealed value.
    pub fn seal(&self, owner: &str, plaintext: &[u8]) -> Result<(Sealed, SideWrite), KeyringError> {
        let dk = match self.data_key(owner)? {
            Some(k) => k,
            None => {
                let mut k = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(k.as_mut());
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(owner.to_string(), k.clone());
                k
            }
        };
        let n = nonce();
        let ct = XChaCha20Poly1305::new(dk.as_ref().into())
            .encrypt(XNonce::from_slice(&n), Payload { msg: plaintext, aad: &seal_aad(owner) })
            .map_err(|_| KeyringError::Damaged("encryption failed".into()))?;
        let put = SideWrite::Put {
            table: SideTable::DataKeys,
            key: owner.to_string(),
            value: wrap(&self.master, owner, &dk),
        };
        Ok((Sealed { owner: owner.to_string(), nonce: n, ciphertext: ct }, put))
    }

    /// Open a sealed value; `None` when its owner's data key was shredded.
    pub fn open(&self, sealed: &Sealed) -> Result<Option<Zeroizing<Vec<u8>>>, KeyringError> {
        let Some(dk) = self.data_key(&sealed.owner)? else { return Ok(None) };
        let pt = XChaCha20Poly1305::new(dk.as_ref().into())
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload { msg: &sealed.ciphertext, aad: &seal_aad(&sealed.owner) },
            )
            .map_err(|_| KeyringError::Damaged(format!("a value sealed for {} does not open", sealed.owner)))?;
        Ok(Some(Zeroizing::new(pt)))
    }

    /// The side write that deletes the owner's data key; append it with the owner's deletion.
    pub fn shred(&self, owner: &str) -> SideWrite {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(owner);
        SideWrite::Delete { table: SideTable::DataKeys, key: owner.to_string() }
    }

    /// Every data key re-wrapped under `new` (for one transaction), and how many.
    pub fn rewrap_all(&self, new: &MasterKey) -> Result<Vec<SideWrite>, KeyringError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let batch = self.log.side_scan(SideTable::DataKeys, after.as_deref(), spool_log::READ_BATCH_MAX)?;
            let Some((last, _)) = batch.last().cloned() else { break };
            for (owner, w) in batch {
                let dk = unwrap(&self.master, &owner, &w)?;
                out.push(SideWrite::Put {
                    table: SideTable::DataKeys,
                    key: owner.clone(),
                    value: wrap(new, &owner, &dk),
                });
            }
            after = Some(last);
        }
        Ok(out)
    }
}

/// Finish a master-key rotation that stopped between its transaction and the file rename:
/// when `master.key.new` exists, keep whichever key opens the keyring.
pub fn recover_rotation(data_dir: &Path, log: &dyn EventLog) -> Result<(), KeyringError> {
    let new_path = data_dir.join(format!("{MASTER_KEY_FILE}.new"));
    let Ok(text) = std::fs::read_to_string(&new_path).map(Zeroizing::new) else { return Ok(()) };
    let Some(check) = log.side_get(SideTable::DataKeys, CHECK_OWNER)? else { return Ok(()) };
    let opens_new = decode_key(&text).is_some_and(|k| unwrap(&k, CHECK_OWNER, &check).is_ok());
    let io = |e: std::io::Error| KeyringError::Io(format!("{}: {e}", new_path.display()));
    if opens_new {
        std::fs::rename(&new_path, data_dir.join(MASTER_KEY_FILE)).map_err(io)?;
        tracing::warn!("finished an interrupted master key rotation");
    } else {
        std::fs::remove_file(&new_path).map_err(io)?;
    }
    Ok(())
}
