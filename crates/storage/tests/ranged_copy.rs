//! A large object of a real S3 server (s3s-fs, `scripts/storage-servers.sh`) is copied into a
//! local folder in ranges fetched in parallel: the bytes and their SHA-256 are the object's,
//! a missing object is `source_object_missing`, and nothing is left under a staging name.

#![allow(clippy::disallowed_methods)] // tests read their environment

use sha2::Digest;
use spool_storage::{COPY_RANGE_BYTES, Credentials, Store, copy_then, shared_store};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the storage servers (scripts/storage-servers.sh start DIR; . DIR/env), as scripts/test.sh does")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_comes_in_parallel_ranges_byte_identical_with_its_sha256() {
    let root = std::path::PathBuf::from(env("SPOOL_TEST_S3S_ROOT"));
    let bucket = format!("ranged-{}", std::process::id());
    // Three and a half ranges: the last one short.
    let size = usize::try_from(COPY_RANGE_BYTES * 3 + COPY_RANGE_BYTES / 2).unwrap();
    let body: Vec<u8> = (0..size).map(|i| u8::try_from((i * 7 + i / 4096) % 251).unwrap()).collect();
    std::fs::create_dir_all(root.join(&bucket).join("big")).unwrap();
    std::fs::write(root.join(&bucket).join("big/clip.mp4"), &body).unwrap();
    let creds = Credentials {
        aws_access_key_id: Some(env("SPOOL_TEST_S3S_ACCESS_KEY")),
        aws_secret_access_key: Some(env("SPOOL_TEST_S3S_SECRET_KEY")),
        ..Default::default()
    };
    let url = format!("s3://{bucket}?endpoint={}", env("SPOOL_TEST_S3S_ENDPOINT"));
    let (src, _) = shared_store(&url, &creds, &Default::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dst = Store::local(out.path()).unwrap();
    let size_u64 = u64::try_from(size).unwrap();
    let ((bytes, sha), on_disk) =
        copy_then(&src, "big/clip.mp4", &dst, "v/clip.mp4", Some(size_u64), |p| std::fs::read(p).unwrap())
            .await
            .unwrap();
    assert_eq!(bytes, size_u64);
    assert!(on_disk == body, "the copy's bytes differ from the object's");
    let want: [u8; 32] = sha2::Sha256::digest(&body).into();
    assert_eq!(sha, want);
    let missing = copy_then(&src, "big/none.mp4", &dst, "v/none.mp4", Some(size_u64), |_| ()).await.unwrap_err();
    assert_eq!(missing.code, "source_object_missing", "{missing:?}");
    let left: Vec<_> = std::fs::read_dir(out.path().join("v")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("clip.mp4")], "a staging file was left");
    let _ = std::fs::remove_dir_all(root.join(&bucket));
}
