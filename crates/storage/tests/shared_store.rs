//! `SPOOL_MEDIA_URL`: what `shared_store` accepts and what it refuses, with a reason.

use spool_storage::{Credentials, StorageEnv, StoreError, shared_store};

fn keys() -> Credentials {
    Credentials {
        aws_access_key_id: Some("AKIAEXAMPLE".into()),
        aws_secret_access_key: Some("not-a-real-secret".into()),
        ..Default::default()
    }
}

fn refused(url: &str, creds: &Credentials, env: &StorageEnv) -> String {
    match shared_store(url, creds, env) {
        Err(e @ StoreError::Invalid { field: "SPOOL_MEDIA_URL", .. }) => e.to_string(),
        Err(other) => panic!("{url}: {other}"),
        Ok(_) => panic!("{url} was accepted"),
    }
}

#[test]
fn an_s3_url_names_its_bucket_prefix_endpoint_and_region() {
    let (store, prefix) = shared_store(
        "s3://media/cluster/a?endpoint=http://127.0.0.1:9/&region=eu-west-1",
        &keys(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(prefix, "cluster/a");
    assert!(store.local_root.is_none() && store.multipart.is_some());
    let (_, prefix) = shared_store("s3://media", &keys(), &Default::default()).unwrap();
    assert_eq!(prefix, "");
    // The URL's own normalization: `..` never leaves the bucket.
    let (_, prefix) = shared_store("s3://media/a/../../b", &keys(), &Default::default()).unwrap();
    assert_eq!(prefix, "b");
}

#[test]
fn bad_shared_urls_are_refused_with_a_reason() {
    let env = StorageEnv::default();
    assert!(refused("not a url", &keys(), &env).contains("is not a URL"));
    assert!(refused("gs://media", &keys(), &env).contains("use s3:// or file://"));
    assert!(refused("s3://media?color=blue", &keys(), &env).contains("unknown setting"));
    assert!(refused("s3://media", &Credentials::default(), &env).contains("AWS_ACCESS_KEY_ID"));
    assert!(refused(&format!("s3://media/{}", "a".repeat(3000)), &keys(), &env).contains("longer than"));
}

#[test]
fn a_shared_folder_must_not_be_in_or_around_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let env = StorageEnv { data_dir: Some(std::fs::canonicalize(&data).unwrap()), ..Default::default() };
    for bad in [data.join("shared"), tmp.path().to_path_buf()] {
        let msg = refused(&format!("file://{}", bad.display()), &keys(), &env);
        assert!(msg.contains("data directory"), "{msg}");
    }
    let spaced = shared_store(&format!("file://{}/with%20space", tmp.path().display()), &keys(), &env).unwrap().0;
    assert!(spaced.local_root.unwrap().ends_with("with space"), "a percent-encoded path is decoded");
    assert!(refused("file://elsewhere/srv", &keys(), &env).contains("host"));
    let ok = tmp.path().join("shared");
    let (store, prefix) = shared_store(&format!("file://{}", ok.display()), &keys(), &env).unwrap();
    assert_eq!((store.local_root, prefix), (Some(std::fs::canonicalize(&ok).unwrap()), String::new()));
}
