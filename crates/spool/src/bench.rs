//! `spool bench …`: throughput measured against a baseline taken in the same run, printed as
//! readable lines and, last, one JSON line. Not a test: nothing here asserts on time.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

use anyhow::Context;
use spool_log::{AppendRequest, EventLog, Expected, NewEvent, READ_BATCH_MAX, RedbLog, RedbLogOptions};
use spool_model::{Envelope, Event, FORMAT_VERSION, IndexId, decode_envelope, encode_envelope};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// A prompt run over 1,000 imported videos (2 segments each) with the `probe` processor and
    /// with a local no-op `http` worker, against the same signed calls from a plain client loop
    /// (no engine) in the same run.
    PromptRun {
        /// Videos of the http comparison (two 1-second segments each).
        #[arg(long, default_value_t = 1000)]
        videos: usize,
        /// Images of the probe scale runs (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_values_t = crate::bench_prompt_run::DEFAULT_SIZES)]
        sizes: Vec<usize>,
        /// Work directory (default: a fresh temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Results indexed per second and queries per second (p50/p99) of the search projection's
    /// index at 10k and 100k results (`--sizes 1000000` for a million), against tantivy used
    /// directly on the same documents in the same run.
    Search {
        /// Results per run (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_values_t = crate::bench_search::DEFAULT_SIZES)]
        sizes: Vec<usize>,
        /// Queries per run (three words each, OR'd; the best 30).
        #[arg(long, default_value_t = 2000)]
        queries: usize,
        /// Work directory (default: a fresh temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Where a run's segments may be cut, read from the media: the silences of a 40-minute
    /// range (a 40-minute file, the last 40 minutes of a 2-hour one) and the keyframes of a
    /// 40-minute Matroska file, against ffmpeg / ffprobe reading the same in the same run.
    Cuts,
    /// Webhook deliveries/s to a receiver on loopback with 1, 16 and 64 webhooks (1, 16, 64 in
    /// flight), against the same signed POSTs from a plain client loop and the receiver's own
    /// ceiling measured with wrk in the same run; then the fan-out at 1, 100 and 10,000 webhooks.
    Webhooks {
        /// Domain events per run (each goes to every webhook).
        #[arg(long, default_value_t = 2000)]
        events: usize,
    },
    /// Local-folder imports of 1,000, 10,000 and 100,000 small PNG files through a real
    /// `spool serve` (files/s, durable steps/s, memory, recovery after kill -9), against
    /// `cp -r` + `sync` of the same folders and raw batched redb commits of the same events.
    Engine {
        /// Files per run (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_values_t = crate::bench_engine::DEFAULT_SIZES)]
        sizes: Vec<usize>,
        /// Work directory (default: a fresh temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// `SPOOL_IMPORT_CONCURRENCY` of the server.
        #[arg(long, default_value_t = crate::bench_engine::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// The largest import, measured after 1,000 and 100,000 (`--files 1000000`: the
        /// million-file run of issue 27); replaces `--sizes`.
        #[arg(long)]
        files: Option<usize>,
    },
    /// Durable steps/s of one node on a PostgreSQL log against one node on redb (index creations
    /// by concurrent writers), PostgreSQL transactions per step, and the takeover time of a
    /// standby after SIGKILL of its holder.
    Cluster {
        /// A PostgreSQL URL whose user may create databases (env SPOOL_TEST_PG_URL).
        #[arg(long, env = "SPOOL_TEST_PG_URL")]
        pg: String,
        /// Index creations per run.
        #[arg(long, default_value_t = 20_000)]
        steps: usize,
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        writers: usize,
    },
    /// Durable appends through the EventLog against raw redb commits; replay against raw decode.
    Log {
        /// Scratch directory (default: a fresh temporary directory).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Events appended by each of the three appender counts (1, 8, 64).
        #[arg(long, default_value_t = 16_000)]
        events: u64,
        /// Events loaded for the replay measurement.
        #[arg(long, default_value_t = 500_000)]
        replay_events: u64,
    },
    /// Browse (a recursive, glob-filtered listing) of an S3 bucket against `rclone lsjson -R` on
    /// the same bucket. The bucket must exist (for s3s-fs:
    /// `scripts/storage-servers.sh make-bucket STATE s3s spool-bench`); missing objects are
    /// uploaded first.
    Browse {
        #[arg(long, default_value = "http://127.0.0.1:8014")]
        endpoint: String,
        #[arg(long, default_value = "spool-bench")]
        bucket: String,
        #[arg(long, default_value = "AKIAEMULATOR")]
        access_key: String,
        #[arg(long, default_value = "emulatorsecret")]
        secret_key: String,
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        /// Runs of each side; the median counts.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// One import automation watch cycle over prefixes of 1k, 10k and 100k objects of an S3
    /// bucket (s3s-fs) against `rclone lsjson -R` of the same prefix. The bucket must exist
    /// (`scripts/storage-servers.sh make-bucket STATE s3s spool-bench-watch`); missing objects
    /// are uploaded first.
    Watch {
        /// `local` (a folder, through a local connector) or `s3` (the bucket below).
        #[arg(long, default_value = "local")]
        store: String,
        #[arg(long, default_value = "http://127.0.0.1:8014")]
        endpoint: String,
        #[arg(long, default_value = "spool-bench-watch")]
        bucket: String,
        #[arg(long, default_value = "AKIAEMULATOR")]
        access_key: String,
        #[arg(long, default_value = "emulatorsecret")]
        secret_key: String,
        #[arg(long, value_delimiter = ',', default_values_t = crate::bench_prompt_run::DEFAULT_SIZES)]
        sizes: Vec<usize>,
    },
    /// An export of a generated large index to S3 (s3s-fs) against `rclone copyto` of a file of
    /// the same size to the same bucket, and against the same multipart upload with
    /// object_store and no engine.
    Export {
        #[arg(long, default_value = "http://127.0.0.1:8014")]
        endpoint: String,
        #[arg(long, default_value = "spool-bench-export")]
        bucket: String,
        #[arg(long, default_value = "AKIAEMULATOR")]
        access_key: String,
        #[arg(long, default_value = "emulatorsecret")]
        secret_key: String,
        /// About this many MiB of artifact.
        #[arg(long, default_value_t = 128)]
        mib: usize,
    },
    /// Import jobs from an S3 bucket against `rclone copy` of the same objects to a local folder:
    /// many small objects (files/s) and one large object (MB/s). The bucket must exist (for
    /// s3s-fs: `scripts/storage-servers.sh make-bucket STATE s3s spool-bench-import`); missing
    /// objects are uploaded first.
    Import {
        #[arg(long, default_value = "http://127.0.0.1:8014")]
        endpoint: String,
        #[arg(long, default_value = "spool-bench-import")]
        bucket: String,
        #[arg(long, default_value = "AKIAEMULATOR")]
        access_key: String,
        #[arg(long, default_value = "emulatorsecret")]
        secret_key: String,
        #[arg(long, default_value_t = 2000)]
        small: usize,
        /// Size of the large object in MiB.
        #[arg(long, default_value_t = 1024)]
        large_mib: usize,
        /// Files copied at once by Spool, and `--transfers` of rclone.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::PromptRun { videos, sizes, dir } => {
            crate::bench_prompt_run::run(crate::bench_prompt_run::Args { videos, sizes, dir })
        }
        BenchCmd::Cluster { pg, steps, writers } => {
            crate::bench_cluster::run(crate::bench_cluster::Args { pg, steps, writers })
        }
        BenchCmd::Search { sizes, queries, dir } => {
            crate::bench_search::run(crate::bench_search::Args { sizes, queries, dir })
        }
        BenchCmd::Cuts => crate::bench_cuts::run(),
        BenchCmd::Webhooks { events } => crate::bench_webhooks::run(crate::bench_webhooks::Args { events }),
        BenchCmd::Engine { sizes, dir, concurrency, files } => {
            let sizes = match files {
                Some(n) => vec![1000, 100_000, n],
                None => sizes,
            };
            crate::bench_engine::run(crate::bench_engine::Args { sizes, dir, concurrency })
        }
        BenchCmd::Log { dir, events, replay_events } => {
            let tmp = tempdir(dir)?;
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(bench_log(&tmp, events, replay_events))
        }
        BenchCmd::Export { endpoint, bucket, access_key, secret_key, mib } => {
            crate::bench_export::run(crate::bench_export::Args { endpoint, bucket, access_key, secret_key, mib })
        }
        BenchCmd::Import { endpoint, bucket, access_key, secret_key, small, large_mib, concurrency } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(crate::bench_import::run(crate::bench_import::Args {
                endpoint,
                bucket,
                access_key,
                secret_key,
                small,
                large_mib,
                concurrency,
            }))
        }
        BenchCmd::Watch { store, endpoint, bucket, access_key, secret_key, sizes } => {
            crate::bench_watch::run(crate::bench_watch::Args { store, endpoint, bucket, access_key, secret_key, sizes })
        }
        BenchCmd::Browse { endpoint, bucket, access_key, secret_key, objects, runs } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(bench_browse(endpoint, bucket, access_key, secret_key, objects, runs.max(1)))
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn bench_browse(
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
    objects: usize,
    runs: usize,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    let loc = spool_model::ConnectorLocation {
        bucket: Some(bucket.clone()),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.clone()),
        ..Default::default()
    };
    let creds = spool_storage::Credentials {
        aws_access_key_id: Some(access_key.clone()),
        aws_secret_access_key: Some(secret_key.clone()),
        ..Default::default()
    };
    let store = spool_storage::build_store(spool_model::Provider::S3, &loc, &creds, &Default::default())?;
    let all = |max| spool_storage::BrowseRequest {
        prefix: String::new(),
        pattern: "*".into(),
        recursive: true,
        max_entries: max,
    };
    let present =
        spool_storage::browse(&store, &all(usize::MAX)).await.context("listing the bucket (does it exist?)")?;
    if present.len() < objects {
        println!("uploading {} objects to {bucket} …", objects - present.len());
        let have: std::collections::HashSet<String> = present.into_iter().map(|f| f.path).collect();
        let keys: Vec<String> = (0..objects)
            .map(|i| format!("bench/d{:03}/clip{i:06}.{}", i % 100, if i % 3 == 0 { "mov" } else { "mp4" }))
            .filter(|k| !have.contains(k))
            .collect();
        let results: Vec<_> = futures::stream::iter(keys)
            .map(|k| {
                let store = store.clone();
                async move {
                    store
                        .inner
                        .put(&object_store::path::Path::from(k), object_store::PutPayload::from_static(b"x"))
                        .await
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for r in results {
            r?;
        }
    }
    let mut ours = Vec::new();
    let mut count = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let files = spool_storage::browse(
            &store,
            &spool_storage::BrowseRequest {
                prefix: "bench/".into(),
                pattern: "*.{mp4,mov}".into(),
                recursive: true,
                max_entries: usize::MAX,
            },
        )
        .await?;
        count = files.len();
        ours.push(files.len() as f64 / start.elapsed().as_secs_f64());
    }
    let remote = format!(
        ":s3,provider=Other,endpoint='{endpoint}',force_path_style=true,region=us-east-1,access_key_id='{access_key}',secret_access_key='{secret_key}':{bucket}/bench/"
    );
    let mut theirs = Vec::new();
    let mut rclone_count = 0;
    // rclone's fastest listing is one flat recursive listing (ListR). s3s-fs answers it with
    // nothing, so there (and only there) rclone walks directories instead (--disable ListR);
    // which one ran is printed.
    let rclone = |flat: bool| -> anyhow::Result<(usize, f64)> {
        let start = Instant::now();
        // No HEAD per object: Spool's listing reads times and types from the listing too.
        let mut args = vec!["lsjson", "-R", "--files-only", "--no-modtime", "--no-mimetype"];
        if !flat {
            args.extend(["--disable", "ListR"]);
        }
        args.push(&remote);
        let out = std::process::Command::new("rclone")
            .args(&args)
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .context("running rclone (apt-get install rclone)")?;
        anyhow::ensure!(out.status.success(), "rclone failed: {}", String::from_utf8_lossy(&out.stderr));
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        Ok((listed.len(), start.elapsed().as_secs_f64()))
    };
    let flat = rclone(true)?.0 == count;
    println!("rclone listing: {}", if flat { "flat (ListR)" } else { "walking directories (--disable ListR)" });
    for _ in 0..runs {
        let (n, secs) = rclone(flat)?;
        rclone_count = n;
        theirs.push(n as f64 / secs);
    }
    anyhow::ensure!(rclone_count == count, "rclone listed {rclone_count} objects, Spool {count}");
    let (ours, theirs) = (median(ours), median(theirs));
    println!("browse   {count} objects: {ours:>9.0} objects/s (Spool, recursive, glob *.{{mp4,mov}})");
    println!("rclone   {rclone_count} objects: {theirs:>9.0} objects/s (rclone lsjson -R, same bucket, same run)");
    println!("ratio    {:.2}", ours / theirs);
    println!(
        "{}",
        serde_json::json!({
            "bench": "browse",
            "objects": count,
            "browse_objects_per_s": ours.round(),
            "rclone_objects_per_s": theirs.round(),
            "browse_vs_rclone": round2(ours / theirs),
        })
    );
    Ok(())
}

fn tempdir(dir: Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    let base = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("spool-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    Ok(base)
}

fn sample(n: u64) -> Event {
    Event::IndexCreated {
        index_id: IndexId(ulid::Ulid::from_parts(n, u128::from(n))),
        name: format!("bench index {n:08}"),
        user_id: "bench".into(),
    }
}

/// events/s through the EventLog with `appenders` concurrent tasks, one event per append;
/// returns (events/s, mean events per commit).
async fn through_log(path: &Path, appenders: u64, total: u64) -> anyhow::Result<(f64, f64)> {
    let _ = std::fs::remove_file(path);
    let log = Arc::new(RedbLog::open(path, RedbLogOptions::default())?);
    let per = total / appenders;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("idx_bench{a}");
            for i in 0..per {
                let ev = NewEvent { at_ms: 1_764_000_000_000 + i, event: sample(a * per + i) };
                log.append(AppendRequest::one(&stream, Expected::Exact(i), vec![ev])).await?;
            }
            Ok::<_, spool_log::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let commits = log.stats().commits.load(Ordering::Relaxed).max(1);
    let written = per * appenders;
    Ok((written as f64 / secs, written as f64 / commits as f64))
}

/// events/s of raw redb commits of `batch` records each (the same bytes the log writes).
fn raw_redb(path: &Path, batch: u64, total: u64) -> anyhow::Result<f64> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("raw");
    let _ = std::fs::remove_file(path);
    let db = redb::Database::create(path)?;
    let batch = batch.max(1);
    let commits = total.div_ceil(batch);
    let start = Instant::now();
    let mut seq = 0u64;
    for _ in 0..commits {
        let w = db.begin_write()?;
        {
            let mut t = w.open_table(T)?;
            for _ in 0..batch {
                seq += 1;
                let env = Envelope {
                    seq,
                    stream: "idx_bench0".into(),
                    at_ms: 1_764_000_000_000 + seq,
                    format_version: FORMAT_VERSION,
                    event: sample(seq),
                };
                t.insert(seq, encode_envelope(&env)?.as_slice())?;
            }
        }
        w.commit()?;
    }
    Ok(seq as f64 / start.elapsed().as_secs_f64())
}

async fn bench_log(dir: &Path, events: u64, replay_events: u64) -> anyhow::Result<()> {
    println!("spool bench log: scratch {}", dir.display());
    let mut ratios = Vec::new();
    for appenders in [1u64, 8, 64] {
        let total = if appenders == 1 { events / 4 } else { events };
        let (rate, mean_batch) = through_log(&dir.join("log.redb"), appenders, total).await?;
        let raw = raw_redb(&dir.join("raw.redb"), mean_batch.round() as u64, total)?;
        let ratio = rate / raw;
        println!(
            "append  appenders={appenders:<3} {rate:>10.0} events/s  (mean {mean_batch:.1} events/commit)   raw redb, same batch: {raw:>10.0} events/s   ratio {ratio:.2}"
        );
        ratios.push(ratio);
    }

    // Replay: load events in large batches, then decode all of them from the log.
    let path = dir.join("replay.redb");
    let _ = std::fs::remove_file(&path);
    let log = RedbLog::open(&path, RedbLogOptions::default())?;
    let mut n = 0u64;
    while n < replay_events {
        let k = 1000.min(replay_events - n);
        let evs = (0..k).map(|i| NewEvent { at_ms: 1_764_000_000_000 + n + i, event: sample(n + i) }).collect();
        log.append(AppendRequest::one(format!("idx_r{}", n / 10_000), Expected::Any, evs)).await?;
        n += k;
    }
    let start = Instant::now();
    let mut seq = 1;
    let mut count = 0u64;
    let mut checksum = 0u64;
    loop {
        let batch = log.read_from(seq, READ_BATCH_MAX)?;
        let Some(last) = batch.last() else { break };
        seq = last.seq + 1;
        count += batch.len() as u64;
        checksum = checksum.wrapping_add(batch.iter().map(|e| e.at_ms).sum::<u64>());
    }
    let replay_rate = count as f64 / start.elapsed().as_secs_f64();
    let mut raw = Vec::with_capacity(count as usize);
    let mut seq = 1;
    loop {
        let batch = log.read_raw(seq, READ_BATCH_MAX)?;
        let Some((last, _)) = batch.last() else { break };
        seq = last + 1;
        raw.extend(batch.into_iter().map(|(_, b)| b));
    }
    let start = Instant::now();
    let mut check2 = 0u64;
    for bytes in &raw {
        check2 = check2.wrapping_add(decode_envelope(bytes)?.at_ms);
    }
    let decode_rate = raw.len() as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(checksum == check2, "replay and raw decode disagree");
    let replay_ratio = replay_rate / decode_rate;
    println!(
        "replay  {count} events: {replay_rate:>10.0} events/s from the log   raw bincode decode in memory: {decode_rate:>10.0} events/s   ratio {replay_ratio:.2}"
    );
    drop(log);
    let _ = std::fs::remove_dir_all(dir);
    println!(
        "{}",
        serde_json::json!({
            "bench": "log",
            "append_1_ratio": round2(ratios[0]),
            "append_8_ratio": round2(ratios[1]),
            "append_64_ratio": round2(ratios[2]),
            "replay_events_per_s": replay_rate.round(),
            "replay_ratio": round2(replay_ratio),
        })
    );
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
