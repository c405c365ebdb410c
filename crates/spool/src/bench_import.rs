//! `spool bench import`: an import job through the real engine (log, fold, effects, copy) in
//! this process, against `rclone copy` of the same objects in the same run.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

use anyhow::{Context, ensure};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use spool_core::Command;
use spool_core::imports::JobStatus;
use spool_model::{ConnectorId, ConnectorLocation, ConnectorScope, ImportMode, Provider};
use spool_runtime::{Runtime, RuntimeConfig, SystemClock, SystemIds};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Args {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub small: usize,
    pub large_mib: usize,
    pub concurrency: usize,
}

async fn ensure_objects(store: &spool_storage::Store, small: usize, large_bytes: u64) -> anyhow::Result<()> {
    let req = |prefix: &str| spool_storage::BrowseRequest {
        prefix: prefix.into(),
        pattern: "*".into(),
        recursive: true,
        max_entries: usize::MAX,
    };
    let have: std::collections::HashSet<String> =
        spool_storage::browse(store, &req("wav-small/")).await?.into_iter().map(|f| f.path).collect();
    let missing: Vec<String> =
        (0..small).map(|i| format!("wav-small/d{:02}/clip{i:05}.wav", i % 20)).filter(|k| !have.contains(k)).collect();
    if !missing.is_empty() {
        println!("uploading {} small objects …", missing.len());
        let results: Vec<_> = futures::stream::iter(missing)
            .map(|k| {
                let store = store.clone();
                // Real media (every imported file is probed): 16 KiB of WAV.
                let body = spool_media::pcm_wav(&[b'x'; 16 * 1024 - 44]);
                async move { store.inner.put(&object_store::path::Path::from(k), body.into()).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for r in results {
            r?;
        }
    }
    let large = spool_storage::browse(store, &req("wav-large/")).await?;
    if !large.iter().any(|f| f.size_bytes == large_bytes) {
        println!("uploading a {} MiB object …", large_bytes >> 20);
        let upload = store.inner.put_multipart(&object_store::path::Path::from("wav-large/big.wav")).await?;
        let mut w = object_store::WriteMultipart::new(upload);
        // A WAV header, then its samples: real media of the size asked.
        w.write(&spool_media::pcm_wav_header((large_bytes - 44) as u32));
        let chunk = vec![7u8; 8 << 20];
        let mut left = large_bytes - 44;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.wait_for_capacity(4).await?;
            w.write(&chunk[..n]);
            left -= n as u64;
        }
        w.finish().await?;
    }
    Ok(())
}

async fn run_job(
    rt: &Arc<Runtime>,
    conn: ConnectorId,
    index: spool_model::IndexId,
    prefix: &str,
) -> anyhow::Result<(Duration, u64, u64)> {
    let start = Instant::now();
    let out = rt
        .execute(Command::Import(spool_core::ImportCommand::CreateImportJob {
            connector_id: conn,
            index_id: index,
            source_prefix: prefix.into(),
            file_pattern: "*".into(),
            recursive: true,
            import_mode: Some(ImportMode::All),
        }))
        .await?;
    let spool_core::Outcome::Import(job_id) = out else { anyhow::bail!("no job") };
    loop {
        let (status, imported, failed, bytes) = rt.read(|st| {
            let j = &st.imports[&job_id];
            (j.status, j.imported, j.failed, j.bytes_transferred)
        });
        if status.is_terminal() {
            ensure!(
                status == JobStatus::Completed && failed == 0,
                "job {job_id} ended {status:?} with {failed} failed files"
            );
            return Ok((start.elapsed(), imported, bytes));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rclone_copy(a: &Args, prefix: &str, dest: &std::path::Path, expect_files: usize) -> anyhow::Result<Duration> {
    let _ = std::fs::remove_dir_all(dest);
    let remote = format!(
        ":s3,provider=Other,endpoint='{}',force_path_style=true,region=us-east-1,access_key_id='{}',secret_access_key='{}':{}/{prefix}",
        a.endpoint, a.access_key, a.secret_key, a.bucket
    );
    // rclone's fastest settings: no HEAD per object, no check of the destination, no checksum
    // verification (Spool verifies nothing either: it hashes what it copies). With its
    // defaults rclone HEADs every object, which s3s-fs answers slowly (about 1 s each), and
    // the ratio would flatter Spool.
    let n = a.concurrency.to_string();
    let start = Instant::now();
    let out = std::process::Command::new("rclone")
        .args([
            "copy",
            "--transfers",
            &n,
            "--checkers",
            &n,
            "--s3-no-head-object",
            "--no-check-dest",
            "--ignore-checksum",
            &remote,
        ])
        .arg(dest)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .context("running rclone (apt-get install rclone)")?;
    ensure!(out.status.success(), "rclone failed: {}", String::from_utf8_lossy(&out.stderr));
    let elapsed = start.elapsed();
    fn count(d: &std::path::Path) -> usize {
        std::fs::read_dir(d)
            .map(|es| es.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
    ensure!(count(dest) == expect_files, "rclone copied {} files, expected {expect_files}", count(dest));
    Ok(elapsed)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let loc = ConnectorLocation {
        bucket: Some(a.bucket.clone()),
        region: Some("us-east-1".into()),
        endpoint: Some(a.endpoint.clone()),
        ..Default::default()
    };
    let creds = spool_storage::Credentials {
        aws_access_key_id: Some(a.access_key.clone()),
        aws_secret_access_key: Some(a.secret_key.clone()),
        ..Default::default()
    };
    let store = spool_storage::build_store(Provider::S3, &loc, &creds, &Default::default())?;
    let large_bytes = (a.large_mib as u64) << 20;
    ensure_objects(&store, a.small, large_bytes).await.context("preparing the bucket (does it exist?)")?;

    let scratch = std::env::temp_dir().join(format!("spool-bench-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let mut cfg = RuntimeConfig::new(scratch.join("data"));
    cfg.import_concurrency = a.concurrency;
    let rt = Runtime::open(cfg, Arc::new(SystemClock), Arc::new(SystemIds)).await?;
    rt.wait_ready().await;
    let index = match rt
        .execute(Command::Index(spool_core::IndexCommand::CreateIndex {
            name: "bench".into(),
            user_id: "bench".into(),
            description: None,
        }))
        .await?
    {
        spool_core::Outcome::Index(i) => i,
        _ => anyhow::bail!("no index"),
    };
    let conn = ConnectorId(rt.new_ulid());
    let (sealed, put) = rt.keyring().seal(&conn.to_string(), &serde_json::to_vec(&creds)?)?;
    let cmd = Command::Connector(spool_core::ConnectorCommand::CreateConnector {
        connector_id: conn,
        provider: Provider::S3,
        name: "bench".into(),
        scopes: vec![ConnectorScope::Import],
        import_mode: ImportMode::All,
        export_base_path: None,
        location: loc,
        credentials: Some(sealed),
    });
    rt.execute_with(cmd, None, vec![put], |_, _| spool_runtime::Reply { status: 200, body: vec![] }).await?;

    // rclone first: the baseline is measured before Spool's own connections exist.
    let t_rclone_small = rclone_copy(&a, "wav-small", &scratch.join("rclone-small"), a.small)?;
    let (t_small, n_small, _) = run_job(&rt, conn, index, "wav-small/").await?;
    let spool_small = n_small as f64 / t_small.as_secs_f64();
    let rclone_small = a.small as f64 / t_rclone_small.as_secs_f64();
    println!(
        "small    {n_small} objects of 16 KiB: Spool {spool_small:>8.0} files/s   rclone copy {rclone_small:>8.0} files/s   ratio {:.2}",
        spool_small / rclone_small
    );

    let t_rclone_large = rclone_copy(&a, "wav-large", &scratch.join("rclone-large"), 1)?;
    let (t_large, _, bytes) = run_job(&rt, conn, index, "wav-large/").await?;
    let spool_large = bytes as f64 / (1 << 20) as f64 / t_large.as_secs_f64();
    let rclone_large = large_bytes as f64 / (1 << 20) as f64 / t_rclone_large.as_secs_f64();
    println!(
        "large    1 object of {} MiB: Spool {spool_large:>8.1} MiB/s   rclone copy {rclone_large:>8.1} MiB/s   ratio {:.2}",
        a.large_mib,
        spool_large / rclone_large
    );
    rt.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "import",
            "import_files_per_s": spool_small.round(),
            "import_vs_rclone_small": r2(spool_small / rclone_small),
            "import_mib_per_s_large": r2(spool_large),
            "import_vs_rclone_large": r2(spool_large / rclone_large),
        })
    );
    Ok(())
}
