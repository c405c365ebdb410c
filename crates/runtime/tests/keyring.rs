//! The keyring: sealing, a wrong master key refused at open, crypto-shredding, master key
//! rotation, and the key file's mode.

#![allow(clippy::disallowed_methods)] // tests read their environment and draw keys
use spool_log::{AppendRequest, EventLog, RedbLog, SideWrite};
use spool_runtime::keyring::{Keyring, KeyringError, MASTER_KEY_FILE, MasterKey};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

const PLANTED: &[u8] = b"planted-secret-7f3c9a-do-not-store-in-clear";

async fn commit(log: &RedbLog, side: Vec<SideWrite>) {
    log.append(AppendRequest { streams: vec![], side }).await.unwrap();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn sealed_values_open_only_with_their_data_key_and_never_reach_the_file_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let log = Arc::new(RedbLog::open_dir(dir.path()).unwrap());
    let ring = Keyring::load(master.clone(), log.clone()).await.unwrap();
    let (sealed, put) = ring.seal("conn_A", PLANTED).unwrap();
    assert!(!contains(&sealed.ciphertext, PLANTED));
    assert!(!format!("{sealed:?} {sealed}").contains("planted"));
    commit(&log, vec![put]).await;
    assert_eq!(ring.open(&sealed).unwrap().unwrap().as_slice(), PLANTED);
    // The owner is the associated data: the same bytes under another owner do not open.
    let mut moved = sealed.clone();
    moved.owner = "conn_B".into();
    let (_, put_b) = ring.seal("conn_B", b"other").unwrap();
    commit(&log, vec![put_b]).await;
    assert!(matches!(ring.open(&moved), Err(KeyringError::Damaged(_))));
    drop(ring);
    drop(log);
    let bytes = std::fs::read(dir.path().join(spool_log::LOG_FILE_NAME)).unwrap();
    assert!(!contains(&bytes, PLANTED), "the log file holds the secret in clear");
    // A new process with the same master key opens it.
    let log = Arc::new(RedbLog::open_dir(dir.path()).unwrap());
    let ring = Keyring::load(master, log).await.unwrap();
    assert_eq!(ring.open(&sealed).unwrap().unwrap().as_slice(), PLANTED);
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(RedbLog::open_dir(dir.path()).unwrap());
    Keyring::load(MasterKey::generate(), log.clone()).await.unwrap();
    let err = Keyring::load(MasterKey::generate(), log).await.unwrap_err();
    assert!(matches!(err, KeyringError::WrongMasterKey), "{err}");
}

#[tokio::test]
async fn shredding_the_data_key_makes_the_sealed_bytes_unopenable_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let log = Arc::new(RedbLog::open_dir(dir.path()).unwrap());
    let ring = Keyring::load(master.clone(), log.clone()).await.unwrap();
    let (sealed, put) = ring.seal("conn_S", PLANTED).unwrap();
    commit(&log, vec![put]).await;
    commit(&log, vec![ring.shred("conn_S")]).await;
    assert!(ring.open(&sealed).unwrap().is_none());
    drop(ring);
    let ring = Keyring::load(master, log).await.unwrap();
    assert!(ring.open(&sealed).unwrap().is_none(), "a restart does not bring the key back");
}

#[tokio::test]
async fn rotating_the_master_key_rewraps_everything_and_the_old_key_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let log = Arc::new(RedbLog::open_dir(dir.path()).unwrap());
    let ring = Keyring::load(old.clone(), log.clone()).await.unwrap();
    let mut sealed = Vec::new();
    for i in 0..5 {
        let (s, put) = ring.seal(&format!("conn_{i}"), format!("secret {i}").as_bytes()).unwrap();
        commit(&log, vec![put]).await;
        sealed.push(s);
    }
    let side = ring.rewrap_all(&new).unwrap();
    assert_eq!(side.len(), 6, "five owners and the check key");
    commit(&log, side).await;
    drop(ring);
    assert!(matches!(Keyring::load(old, log.clone()).await, Err(KeyringError::WrongMasterKey)));
    let ring = Keyring::load(new, log).await.unwrap();
    for (i, s) in sealed.iter().enumerate() {
        assert_eq!(ring.open(s).unwrap().unwrap().as_slice(), format!("secret {i}").as_bytes());
    }
}

#[test]
fn the_master_key_file_is_created_owner_only_and_a_wider_mode_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os(spool_runtime::keyring::MASTER_KEY_ENV).is_some() {
        return; // The environment decides; the file is not used.
    }
    let (k1, _) = MasterKey::load(dir.path()).unwrap();
    let path = dir.path().join(MASTER_KEY_FILE);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let (k2, _) = MasterKey::load(dir.path()).unwrap();
    assert_eq!(k1.to_base64(), k2.to_base64(), "the same key is read back");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = MasterKey::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert!(!format!("{k1:?}").contains(k1.to_base64().as_str()));
}
