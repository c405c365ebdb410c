//! `spool bench engine`: import jobs from a local folder through a real `spool serve` child (this
//! executable), at several sizes, against `cp -r` + `sync` of the same folder in the same run;
//! for the largest size also the durable event rate against raw redb commits of the same
//! records, the server's resident memory, and its recovery time after `kill -9`. Readable lines,
//! then one JSON line. Not a test: nothing here asserts on time.
//!
//! Layout of the scratch directory `<work>` (`--dir`, else a fresh folder under the temporary
//! directory, removed at the end of a successful run):
//! - `srcs/src-N/dNNN/clipNNNNNN.png`: N copies of `fixtures/media/tiny.png`, 1,000 per folder;
//!   `srcs` is the only folder in `SPOOL_LOCAL_ROOTS`;
//! - `cp-N`: the baseline's copy (removed once counted);
//! - `data-N`: the server's data directory (a sibling of `srcs`, so outside every allowed root);
//! - `logs/serve-N.log`: the server's stdout and stderr;
//! - `raw.redb`: the raw redb baseline (removed once measured).
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose
#![allow(clippy::disallowed_methods)] // a benchmark names its scratch folder and key from OS randomness
use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The file every source folder is made of: a valid 24×24 RGB PNG of 1,024 bytes.
const TINY_PNG: &[u8] = include_bytes!("../../../fixtures/media/tiny.png");
/// Files per sub-folder of a source folder.
const FILES_PER_FOLDER: usize = 1000;
/// Sizes measured when none are given.
pub const DEFAULT_SIZES: [usize; 3] = [1000, 10_000, 100_000];
/// `SPOOL_IMPORT_CONCURRENCY` of the server when none is given.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Records per commit of the raw redb baseline.
const RAW_BATCH: usize = 1000;
/// How often the job is polled while it runs.
const JOB_POLL: Duration = Duration::from_millis(50);
/// How often `/healthz` is polled while the server starts (first start, after an import).
const START_POLL: Duration = Duration::from_millis(20);
/// How often `/healthz` is polled while the server recovers after `kill -9`.
const RECOVERY_POLL: Duration = Duration::from_millis(5);
/// Longest wait for a server to answer `/healthz` with 200.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for a server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Aim: files/s at the largest size ÷ files/s at the smallest.
const AIM_SCALING: f64 = 0.8;
/// Aim: files/s at [`AIM_FILES_AT`] files.
const AIM_FILES_PER_S: f64 = 5000.0;
const AIM_FILES_AT: usize = 100_000;
/// Aim: milliseconds from spawn to the first `/healthz` 200 after `kill -9` at rest.
const AIM_RECOVERY_MS: f64 = 1000.0;
/// How long the server is left without a request before the kill -9 of a recovery at rest.
const AT_REST: Duration = Duration::from_secs(3);
/// Aim (issue 27): resident memory after the largest import, at a million files.
const AIM_RSS_MIB: f64 = 300.0;
const AIM_RSS_AT: usize = 1_000_000;
/// Aim (issue 27): p99 of `GET /videos/{id}` and of a page of `GET /indexes/{id}/videos`.
const AIM_VIDEO_READ_P99_MS: f64 = 5.0;
/// Videos whose ids the video reads pick from, and pages of the index they walk.
const VIDEO_READ_IDS: usize = 1000;
const VIDEO_READ_PAGES: usize = 40;

pub struct Args {
    /// Files per import job, one job (and one fresh server) per size.
    pub sizes: Vec<usize>,
    /// Scratch directory (default: a fresh temporary directory, removed at the end).
    pub dir: Option<PathBuf>,
    /// `SPOOL_IMPORT_CONCURRENCY` of the server.
    pub concurrency: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut sizes = if args.sizes.is_empty() { DEFAULT_SIZES.to_vec() } else { args.sizes };
    sizes.sort_unstable();
    sizes.dedup();
    ensure!(sizes.first().is_some_and(|n| *n > 0), "every size must be at least 1 file");
    let concurrency = if args.concurrency == 0 { DEFAULT_CONCURRENCY } else { args.concurrency };
    let temporary = args.dir.is_none();
    let work = match args.dir {
        Some(d) => d,
        None => {
            let name = format!("spool-bench-engine-{}-{:08x}", std::process::id(), rand::random::<u32>());
            std::env::temp_dir().join(name)
        }
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = bench(&work, &sizes, concurrency);
    if temporary {
        match &result {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&work);
            }
            Err(_) => eprintln!("spool bench engine: scratch (with the server logs) left in {}", work.display()),
        }
    }
    result
}

/// How the server is started: the same command for every start, only the data directory, the
/// port and the log file differ.
pub(crate) struct Serve {
    pub exe: PathBuf,
    pub key: String,
    pub roots: PathBuf,
    pub concurrency: usize,
    /// More environment of the server (`bench cluster`: its log, node and lease).
    pub env: Vec<(String, String)>,
}

impl Serve {
    /// Start `spool serve` on a free loopback port; stdout and stderr are appended to `log`.
    pub fn spawn(&self, data_dir: &Path, log: &Path) -> anyhow::Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(&self.exe)
            .args(["serve", "--listen", &addr, "--data-dir"])
            .arg(data_dir)
            .env("SPOOL_API_KEY", &self.key)
            .env("SPOOL_LOCAL_ROOTS", &self.roots)
            .env("SPOOL_IMPORT_CONCURRENCY", self.concurrency.to_string())
            .env("RUST_LOG", "warn")
            // The operator's own settings must not change what is measured.
            .env_remove("SPOOL_CONFIG")
            .env_remove("SPOOL_MASTER_KEY")
            .env_remove("SPOOL_LOG_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} serve", self.exe.display()))?;
        Ok(Server { child, addr, log: log.to_path_buf() })
    }
}

/// A running `spool serve` child. Dropping it on an error path kills it, so no server is left
/// behind.
pub(crate) struct Server {
    pub child: Child,
    pub addr: String,
    log: PathBuf,
}

impl Server {
    /// An error when the server has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("spool serve exited ({status}); see {}", self.log.display());
        }
        Ok(())
    }

    /// Poll `/healthz` every `poll` until it answers 200.
    pub fn wait_healthy(&mut self, poll: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = http(&self.addr, "GET", "/healthz", None, None) {
                return Ok(());
            }
            self.check_running()?;
            ensure!(
                start.elapsed() < START_TIMEOUT,
                "spool serve did not become healthy in {} s; see {}",
                START_TIMEOUT.as_secs(),
                self.log.display()
            );
            std::thread::sleep(poll);
        }
    }

    /// Wait until this node of a PostgreSQL cluster holds the partition (`/healthz` says
    /// `"role":"holder"`; a node that forwards answers 200 before).
    pub fn wait_holder(&mut self, poll: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok((200, body)) = http(&self.addr, "GET", "/healthz", None, None)
                && body.contains(r#""role":"holder""#)
            {
                return Ok(());
            }
            self.check_running()?;
            ensure!(
                start.elapsed() < START_TIMEOUT,
                "the node did not take the partition in {} s; see {}",
                START_TIMEOUT.as_secs(),
                self.log.display()
            );
            std::thread::sleep(poll);
        }
    }

    /// SIGTERM, then wait for a clean exit. `kill(1)` rather than libc: `unsafe_code` is
    /// forbidden workspace-wide.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().context("running kill -TERM")?.success();
        ensure!(ok, "kill -TERM {pid} failed");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "spool serve ended {status} after SIGTERM; see {}", self.log.display());
                return Ok(());
            }
            ensure!(
                start.elapsed() < STOP_TIMEOUT,
                "spool serve did not stop {} s after SIGTERM; see {}",
                STOP_TIMEOUT.as_secs(),
                self.log.display()
            );
            std::thread::sleep(START_POLL);
        }
    }

    /// `kill -9` and reap.
    fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("kill -9 of spool serve")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one import job measured.
struct Measured {
    secs: f64,
    /// Increase of the counters whose names contain `commands`, and those series.
    commands: f64,
    command_series: Vec<String>,
    /// `applied_seq` of `/healthz` before the job was created and after it ended.
    seq_before: u64,
    seq_after: u64,
    /// The import job (read back by the read-latency phase).
    job_id: String,
}

impl Measured {
    fn events(&self) -> u64 {
        self.seq_after.saturating_sub(self.seq_before)
    }
}

/// One size's results.
struct SizeResult {
    n: usize,
    files_per_s: f64,
    cp_files_per_s: f64,
    /// The server's resident memory after the import.
    rss_mib: Option<f64>,
}

fn bench(work: &Path, sizes: &[usize], concurrency: usize) -> anyhow::Result<()> {
    let srcs = work.join("srcs");
    let logs = work.join("logs");
    std::fs::create_dir_all(&srcs).with_context(|| format!("creating {}", srcs.display()))?;
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let serve = Serve {
        exe: std::env::current_exe().context("finding the spool executable")?,
        key: format!("sk_test_bench_{:032x}", rand::random::<u128>()),
        roots: srcs.clone(),
        concurrency,
        env: Vec::new(),
    };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    println!("spool bench engine: scratch {}, import concurrency {concurrency}", work.display());

    let mut results = Vec::new();
    let mut last: Option<Measured> = None;
    let mut rss_mib = None;
    let mut recovery_ms = 0.0;
    let mut recovery_after_commit_ms = 0.0;
    let mut reads: Option<Reads> = None;
    let mut video_reads: Option<(Latency, Latency)> = None;
    let mut console: Option<(Latency, Latency)> = None;
    for &n in sizes {
        let src = srcs.join(format!("src-{n}"));
        make_source(&src, n)?;
        let cp_files_per_s = cp_baseline(&src, &work.join(format!("cp-{n}")), n)?;

        let data = work.join(format!("data-{n}"));
        if data.exists() {
            std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        }
        let log = logs.join(format!("serve-{n}.log"));
        let mut server = serve.spawn(&data, &log)?;
        server.wait_healthy(START_POLL)?;
        let m = import(&mut server, &serve.key, &src, n)?;
        let files_per_s = n as f64 / m.secs;
        println!(
            "spool  {n:>7} files: {files_per_s:>9.0} files/s   cp -r+sync: {cp_files_per_s:>9.0} files/s   ratio {:.2}",
            files_per_s / cp_files_per_s
        );
        println!(
            "       durable: {:>9.0} steps/s ({} commands: {})   {:>9.0} events/s ({} events: applied_seq {} → {})   {:.2} s",
            m.commands / m.secs,
            m.commands,
            m.command_series.join(" + "),
            m.events() as f64 / m.secs,
            m.events(),
            m.seq_before,
            m.seq_after,
            m.secs
        );
        let rss = settled_rss_mib(server.child.id());
        results.push(SizeResult { n, files_per_s, cp_files_per_s, rss_mib: rss });

        if n == largest {
            rss_mib = rss;
            match rss_mib {
                Some(r) => println!("memory after {n} files: {r:.1} MiB resident (VmRSS of spool serve)"),
                None => println!("memory after {n} files: n/a (no /proc/<pid>/status)"),
            }
            // At rest: the server committed nothing for three seconds (what a crash of an idle
            // server meets).
            std::thread::sleep(AT_REST);
            // Kill, start again, and time it from spawn to the first `/healthz` 200.
            let recover = |s: &mut Server| -> anyhow::Result<(Server, f64)> {
                s.kill9()?;
                let start = Instant::now();
                let mut again = serve.spawn(&data, &log)?;
                again.wait_healthy(RECOVERY_POLL)?;
                Ok((again, start.elapsed().as_secs_f64() * 1000.0))
            };
            let (mut again, ms) = recover(&mut server)?;
            recovery_ms = ms;
            println!(
                "recovery after kill -9 at {n} files, at rest: {recovery_ms:.0} ms from spawn to the first /healthz 200 ({} events in the log)",
                m.seq_after
            );
            // Right after a commit: redb walks the whole file (its repair), which grows with
            // the library.
            let (s, _) = http(&again.addr, "POST", "/api/v2/indexes", Some(&serve.key), Some(r#"{"name":"after"}"#))?;
            ensure!(s == 201 || s == 200, "creating an index before the kill: {s}");
            let (mut again, ms) = recover(&mut again)?;
            recovery_after_commit_ms = ms;
            println!(
                "recovery after kill -9 at {n} files, right after a commit: {recovery_after_commit_ms:.0} ms (redb's repair walk of the file)"
            );
            reads = Some(read_latency(&again.addr, &serve.key, &m.job_id)?);
            video_reads = Some(video_latency(&again.addr, &serve.key, &m.job_id)?);
            console = Some(console_latency(&again.addr, &serve.key, &m.job_id)?);
            again.stop()?;
            last = Some(m);
        } else {
            server.stop()?;
        }
    }
    let m = last.context("no size was measured")?;
    let (Some(smallest), Some(biggest)) = (results.first(), results.last()) else { bail!("no size was measured") };

    // Raw redb: the very records the largest import appended, in commits of RAW_BATCH.
    let records = logged_records(&work.join(format!("data-{largest}")), m.seq_before + 1, m.seq_after)?;
    let mean_bytes = records.iter().map(Vec::len).sum::<usize>() as f64 / records.len() as f64;
    let raw_events_per_s = raw_redb(&work.join("raw.redb"), &records, RAW_BATCH)?;
    let durable_events_per_s = m.events() as f64 / m.secs;
    let durable_steps_per_s = m.commands / m.secs;
    let durable_vs_raw = durable_events_per_s / raw_events_per_s;
    println!(
        "raw redb {} records of {mean_bytes:.0} bytes (mean), {RAW_BATCH} per commit: {raw_events_per_s:>9.0} events/s   durable/raw: {durable_vs_raw:.2}",
        records.len()
    );

    // The aims: reported, never asserted.
    let met = |ok: bool| if ok { "met" } else { "not met" };
    let scaling = biggest.files_per_s / smallest.files_per_s;
    println!(
        "aim files/s at {} ÷ files/s at {} ≥ {AIM_SCALING:.2}: {scaling:.2}: {}",
        biggest.n,
        smallest.n,
        met(scaling >= AIM_SCALING)
    );
    match results.iter().find(|r| r.n == AIM_FILES_AT) {
        Some(r) => println!(
            "aim ≥ {AIM_FILES_PER_S:.0} files/s at {AIM_FILES_AT} files: {:.0} files/s: {}",
            r.files_per_s,
            met(r.files_per_s >= AIM_FILES_PER_S)
        ),
        None => println!("aim ≥ {AIM_FILES_PER_S:.0} files/s at {AIM_FILES_AT} files: not measured (no such size)"),
    }
    println!(
        "aim recovery ≤ {AIM_RECOVERY_MS:.0} ms (kill -9 at rest): {recovery_ms:.0} ms: {}; right after a commit: {recovery_after_commit_ms:.0} ms",
        met(recovery_ms <= AIM_RECOVERY_MS)
    );
    match rss_mib {
        Some(r) if biggest.n >= AIM_RSS_AT => println!(
            "aim resident memory ≤ {AIM_RSS_MIB:.0} MiB after {} files: {r:.1} MiB: {}",
            biggest.n,
            met(r <= AIM_RSS_MIB)
        ),
        _ => println!(
            "aim resident memory ≤ {AIM_RSS_MIB:.0} MiB after {AIM_RSS_AT} files: not measured (--files {AIM_RSS_AT})"
        ),
    }
    // The growth of resident memory between the smallest and the largest import, per file more
    // (it counts the log's page cache filling too: at most `RedbLogOptions::cache_bytes`).
    let bytes_per_video = match (smallest.rss_mib, biggest.rss_mib) {
        (Some(a), Some(b)) if biggest.n > smallest.n => {
            Some((b - a) * 1024.0 * 1024.0 / (biggest.n - smallest.n) as f64)
        }
        _ => None,
    };
    if let Some(b) = bytes_per_video {
        println!("resident memory growth per finished video ({} → {} files): {b:.0} bytes", smallest.n, biggest.n);
    }
    if let Some((get, page)) = &video_reads {
        println!(
            "aim p99 ≤ {AIM_VIDEO_READ_P99_MS:.0} ms of GET /videos/{{id}}: {:.2} ms: {}; of a page of GET /indexes/{{id}}/videos: {:.2} ms: {}",
            get.p99,
            met(get.p99 <= AIM_VIDEO_READ_P99_MS),
            page.p99,
            met(page.p99 <= AIM_VIDEO_READ_P99_MS)
        );
    }

    if let Some((overview, job_page)) = &console {
        println!(
            "aim the console's pages open in under 1 s at {} files: the overview's reads {:.2} ms p99, a job page's reads (job, its first 100 files, its timeline's 1,000 events) {:.2} ms p99: {}",
            biggest.n,
            overview.p99,
            job_page.p99,
            met(overview.p99 < 1000.0 && job_page.p99 < 1000.0)
        );
    }

    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("engine"));
    for r in &results {
        out.insert(format!("files_per_s_{}", r.n), json!(r.files_per_s.round()));
        out.insert(format!("cp_files_per_s_{}", r.n), json!(r.cp_files_per_s.round()));
    }
    out.insert("ratio_largest_to_smallest".into(), json!(round2(scaling)));
    out.insert("durable_steps_per_s".into(), json!(durable_steps_per_s.round()));
    out.insert("durable_events_per_s".into(), json!(durable_events_per_s.round()));
    out.insert("raw_redb_events_per_s".into(), json!(raw_events_per_s.round()));
    out.insert("durable_vs_raw".into(), json!(round2(durable_vs_raw)));
    out.insert("rss_mib_after_largest".into(), json!(rss_mib.map(round2)));
    for r in &results {
        out.insert(format!("rss_mib_{}", r.n), json!(r.rss_mib.map(round2)));
    }
    out.insert("rss_growth_bytes_per_video".into(), json!(bytes_per_video.map(f64::round)));
    if let Some((get, page)) = &video_reads {
        out.insert("video_get_p50_ms".into(), json!(round2(get.p50)));
        out.insert("video_get_p99_ms".into(), json!(round2(get.p99)));
        out.insert("video_page_p50_ms".into(), json!(round2(page.p50)));
        out.insert("video_page_p99_ms".into(), json!(round2(page.p99)));
    }
    if let Some((overview, job_page)) = &console {
        out.insert("console_overview_p99_ms".into(), json!(round2(overview.p99)));
        out.insert("console_job_page_p99_ms".into(), json!(round2(job_page.p99)));
    }
    out.insert("recovery_ms".into(), json!(round2(recovery_ms)));
    out.insert("recovery_after_commit_ms".into(), json!(round2(recovery_after_commit_ms)));
    if let Some(r) = &reads {
        let aim = 2.0 * r.idle.p99 + r.fsync_batch_ms;
        println!(
            "aim read p99 under {READ_WRITERS} writers ≤ 2 × idle p99 + one batch commit ({:.2} ms): {:.2} ms: {}",
            aim,
            r.loaded.p99,
            met(r.loaded.p99 <= aim)
        );
        out.insert("read_p50_idle_ms".into(), json!(round2(r.idle.p50)));
        out.insert("read_p99_idle_ms".into(), json!(round2(r.idle.p99)));
        out.insert("read_p50_loaded_ms".into(), json!(round2(r.loaded.p50)));
        out.insert("read_p99_loaded_ms".into(), json!(round2(r.loaded.p99)));
        out.insert("reads_per_s_idle".into(), json!(r.idle.per_s.round()));
        out.insert("reads_per_s_loaded".into(), json!(r.loaded.per_s.round()));
        out.insert("writes_per_s_during_reads".into(), json!(r.writes_per_s.round()));
        out.insert("batch_commit_ms".into(), json!(round2(r.fsync_batch_ms)));
    }
    println!("{}", Value::Object(out));
    Ok(())
}

/// A fresh folder of `n` copies of [`TINY_PNG`]: `dNNN/clipNNNNNN.png`, [`FILES_PER_FOLDER`] per
/// sub-folder.
fn make_source(dir: &Path, n: usize) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut sub = dir.to_path_buf();
    for i in 0..n {
        if i % FILES_PER_FOLDER == 0 {
            sub = dir.join(format!("d{:03}", i / FILES_PER_FOLDER));
            std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let file = sub.join(format!("clip{i:06}.png"));
        std::fs::write(&file, TINY_PNG).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// Regular files below `dir`.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|es| es.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

/// Run a program to completion; an error unless it succeeds.
fn sh(program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    ensure!(out.status.success(), "{program} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// files/s of `cp -r src dest && sync`. The source is synced first (untimed), so the timed
/// `sync` flushes the copy only; the copy is removed once counted.
fn cp_baseline(src: &Path, dest: &Path, n: usize) -> anyhow::Result<f64> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    sh("sync", &[])?;
    let start = Instant::now();
    sh("cp", &["-r".as_ref(), src.as_os_str(), dest.as_os_str()])?;
    sh("sync", &[])?;
    let secs = start.elapsed().as_secs_f64();
    let copied = count_files(dest);
    ensure!(copied == n, "cp -r copied {copied} files, expected {n}");
    std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    // Flush the removal now, not during the import that follows.
    sh("sync", &[])?;
    Ok(n as f64 / secs)
}

/// One import job of the whole source folder through the HTTP API: a new index and local
/// connector (untimed), then the clock runs from the job's creation to its end. A job that did
/// not import every file is an error: its numbers would mean nothing.
fn import(server: &mut Server, key: &str, src: &Path, n: usize) -> anyhow::Result<Measured> {
    let addr = server.addr.clone();
    let index = api(&addr, key, "POST", "/api/v2/indexes", Some(&json!({ "name": "bench" })))?;
    let index_id = text_field(&index, "index_id")?;
    let root = src.to_str().with_context(|| format!("{} is not UTF-8", src.display()))?;
    let conn = api(&addr, key, "POST", "/api/v2/connectors/local", Some(&json!({ "name": "bench", "root": root })))?;
    let connector_id = text_field(&conn, "connector_id")?;

    let (commands_before, _) = commands_total(&addr)?;
    let seq_before = applied_seq(&addr)?;
    let start = Instant::now();
    let body = json!({
        "connector_id": connector_id,
        "index_id": index_id,
        "file_pattern": "*.png",
        "recursive": true,
    });
    let job = api(&addr, key, "POST", "/api/v2/import-jobs", Some(&body))?;
    let job_id = text_field(&job, "job_id")?;
    let path = format!("/api/v2/import-jobs/{job_id}");
    // Generous: a stuck job must end the bench, not hang it.
    let timeout = Duration::from_secs(120) + Duration::from_millis(10) * u32::try_from(n).unwrap_or(u32::MAX);
    let view = loop {
        let v = api(&addr, key, "GET", &path, None)?;
        match v["status"].as_str() {
            Some("completed" | "failed" | "cancelled") => break v,
            Some(_) => {}
            None => bail!("GET {path}: no status in {v}"),
        }
        server.check_running()?;
        ensure!(start.elapsed() < timeout, "job {job_id} did not end in {} s", timeout.as_secs());
        std::thread::sleep(JOB_POLL);
    };
    let secs = start.elapsed().as_secs_f64();
    let seq_after = applied_seq(&addr)?;
    let (commands_after, command_series) = commands_total(&addr)?;

    let p = &view["progress"];
    let count = |name: &str| p[name].as_u64();
    let status = view["status"].as_str().unwrap_or("");
    ensure!(
        status == "completed" && count("imported") == Some(n as u64),
        "job {job_id} of {n} files ended {status:?}: imported {:?}, failed {:?}, skipped {:?}, total_files {:?}, \
         error {}; see {}",
        count("imported"),
        count("failed"),
        count("skipped"),
        count("total_files"),
        view["error_message"],
        server.log.display()
    );
    Ok(Measured { secs, commands: commands_after - commands_before, command_series, seq_before, seq_after, job_id })
}

fn text_field(v: &Value, name: &str) -> anyhow::Result<String> {
    v[name].as_str().map(str::to_string).with_context(|| format!("no {name:?} in {v}"))
}

/// A JSON request with the API key; an error unless the answer is 2xx JSON.
fn api(addr: &str, key: &str, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let text = body.map(Value::to_string);
    let (status, resp) =
        http(addr, method, path, Some(key), text.as_deref()).with_context(|| format!("{method} {path}"))?;
    ensure!((200..300).contains(&status), "{method} {path} answered {status}: {resp}");
    serde_json::from_str(&resp).with_context(|| format!("{method} {path} answered no JSON: {resp}"))
}

/// `applied_seq` of `/healthz`: the number of durable events folded.
fn applied_seq(addr: &str) -> anyhow::Result<u64> {
    let (status, body) = http(addr, "GET", "/healthz", None, None).context("GET /healthz")?;
    ensure!(status == 200, "GET /healthz answered {status}: {body}");
    let v: Value = serde_json::from_str(&body).with_context(|| format!("GET /healthz answered no JSON: {body}"))?;
    v["applied_seq"].as_u64().with_context(|| format!("no applied_seq in /healthz: {body}"))
}

/// The sum of the `/metrics` samples whose metric names contain `commands`, and their series
/// (printed, so a renamed metric shows).
fn commands_total(addr: &str) -> anyhow::Result<(f64, Vec<String>)> {
    let (status, text) = http(addr, "GET", "/metrics", None, None).context("GET /metrics")?;
    ensure!(status == 200, "GET /metrics answered {status}: {text}");
    let mut total = 0.0;
    let mut series = Vec::new();
    let mut names = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name = &line[..line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len())];
        names.push(name);
        if !name.contains("commands") {
            continue;
        }
        let (s, value) = line.rsplit_once(char::is_whitespace).with_context(|| format!("/metrics line {line:?}"))?;
        total += value.parse::<f64>().with_context(|| format!("/metrics line {line:?}"))?;
        series.push(s.trim().to_string());
    }
    ensure!(!series.is_empty(), "/metrics has no metric whose name contains `commands` (it has: {})", names.join(", "));
    Ok((total, series))
}

/// One request on its own connection (HTTP/1.1, `Connection: close`); returns (status, body).
/// Errors are connection failures or unreadable answers.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let sock = addr.parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(k) = key {
        req.push_str(&format!("X-API-Key: {k}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = find(&raw, b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no end of the header"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let rest = &raw[end + 4..];
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_vec() };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The body of a chunked answer.
fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(s, b"\r\n") {
        let size = std::str::from_utf8(&s[..i])
            .ok()
            .and_then(|h| usize::from_str_radix(h.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        let rest = &s[i + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        s = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// VmRSS of a process in MiB, where `/proc` exists.
fn rss_mib_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// The stored records `from..=to` of the log of a data directory that no server holds.
fn logged_records(data_dir: &Path, from: u64, to: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    ensure!(to >= from, "the import appended no events (applied_seq {} → {to})", from - 1);
    let log = spool_log::RedbLog::open_dir(data_dir)
        .with_context(|| format!("opening the log of {} after the server stopped", data_dir.display()))?;
    let mut out = Vec::new();
    let mut seq = from;
    while seq <= to {
        let batch = log.read_raw(seq, spool_log::READ_BATCH_MAX)?;
        let Some(&(last, _)) = batch.last() else { break };
        out.extend(batch.into_iter().filter(|(s, _)| *s <= to).map(|(_, bytes)| bytes));
        seq = last + 1;
    }
    log.close();
    ensure!(!out.is_empty(), "the log of {} holds no events {from}..={to}", data_dir.display());
    if out.len() as u64 != to - from + 1 {
        println!("note: the log holds {} records in {from}..={to}", out.len());
    }
    Ok(out)
}

/// events/s of raw redb commits of `batch` records each (the default durability, like the
/// log), in a fresh file removed afterwards.
fn raw_redb(path: &Path, records: &[Vec<u8>], batch: usize) -> anyhow::Result<f64> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("raw");
    let _ = std::fs::remove_file(path);
    let db = redb::Database::create(path).with_context(|| format!("creating {}", path.display()))?;
    let start = Instant::now();
    let mut seq = 0u64;
    for chunk in records.chunks(batch.max(1)) {
        let w = db.begin_write()?;
        {
            let mut t = w.open_table(T)?;
            for r in chunk {
                seq += 1;
                t.insert(seq, r.as_slice())?;
            }
        }
        w.commit()?;
    }
    let rate = seq as f64 / start.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_file(path);
    Ok(rate)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Concurrent writers of the read-latency phase (`POST /indexes`, as fast as they are answered).
const READ_WRITERS: usize = 64;
/// Concurrent readers (`GET /import-jobs/{id}`) and reads each makes per phase.
const READERS: usize = 8;
const READS_EACH: usize = 400;

struct Latency {
    p50: f64,
    p99: f64,
    per_s: f64,
}

struct Reads {
    idle: Latency,
    loaded: Latency,
    writes_per_s: f64,
    /// The log's mean time per durable commit while the writers ran.
    fsync_batch_ms: f64,
}

/// p50 / p99 of `GET /import-jobs/{id}` (a job of every file the largest import made) from
/// [`READERS`] readers, on the idle server and then while [`READ_WRITERS`] writers create
/// indexes, in the same run: readers must never wait on a commit.
fn read_latency(addr: &str, key: &str, job_id: &str) -> anyhow::Result<Reads> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let paths = [format!("/api/v2/import-jobs/{job_id}")];
    let phase = |label: &str| timed_reads(addr, key, label, &paths);
    let idle = phase("idle")?;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let commits_before = log_commits(addr)?;
    let writers: Vec<_> = (0..READ_WRITERS)
        .map(|w| {
            let (addr, key, stop, written) = (addr.to_string(), key.to_string(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("{{\"name\":\"writer {w} {i}\"}}");
                    if matches!(http(&addr, "POST", "/api/v2/indexes", Some(&key), Some(&body)), Ok((201, _))) {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Let the writers reach their pace first.
    std::thread::sleep(Duration::from_millis(500));
    let w0 = written.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let loaded = phase(&format!("under {READ_WRITERS} writers"))?;
    let writes_per_s = (written.load(Ordering::Relaxed) - w0) as f64 / t0.elapsed().as_secs_f64();
    let writers_secs = t0.elapsed().as_secs_f64() + 0.5;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let commits = (log_commits(addr)? - commits_before).max(1.0);
    let fsync_batch_ms = writers_secs * 1000.0 / commits;
    println!(
        "writes during the loaded reads: {writes_per_s:.0} index creations/s in {commits:.0} commits ({fsync_batch_ms:.2} ms per commit)"
    );
    Ok(Reads { idle, loaded, writes_per_s, fsync_batch_ms })
}

/// Resident memory once it has settled (a checkpoint or the allocator's delayed release may be
/// under way when the job ends): sampled every 250 ms until two samples are within 1 MiB, at
/// most 20 s.
pub(crate) fn settled_rss_mib(pid: u32) -> Option<f64> {
    let mut last = rss_mib_of(pid)?;
    for _ in 0..80 {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss_mib_of(pid)?;
        if (now - last).abs() < 1.0 {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

/// p50 / p99 of `GET /videos/{id}` over [`VIDEO_READ_IDS`] of the largest import's videos, and
/// of pages (50 videos) of `GET /indexes/{id}/videos` at the first [`VIDEO_READ_PAGES`] cursors,
/// from [`READERS`] readers on the idle server (issue 27: reads of finished work come from
/// tables).
fn video_latency(addr: &str, key: &str, job_id: &str) -> anyhow::Result<(Latency, Latency)> {
    let (s, out) =
        http(addr, "GET", &format!("/api/v2/import-jobs/{job_id}/outputs?limit={VIDEO_READ_IDS}"), Some(key), None)?;
    ensure!(s == 200, "outputs of {job_id}: {s}");
    let out: Value = serde_json::from_str(&out)?;
    let ids: Vec<String> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["video_id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    ensure!(!ids.is_empty(), "the import made no video");
    let (_, job) = http(addr, "GET", &format!("/api/v2/import-jobs/{job_id}"), Some(key), None)?;
    let job: Value = serde_json::from_str(&job)?;
    let index = job["target_index_id"].as_str().context("the job's index")?.to_string();
    let mut pages = vec![format!("/api/v2/indexes/{index}/videos?limit=50")];
    while pages.len() < VIDEO_READ_PAGES {
        let (s, page) = http(addr, "GET", pages.last().map_or("", String::as_str), Some(key), None)?;
        ensure!(s == 200, "a page of {index}: {s}");
        let page: Value = serde_json::from_str(&page)?;
        let Some(c) = page["pagination"]["next_cursor"].as_str() else { break };
        pages.push(format!("/api/v2/indexes/{index}/videos?limit=50&cursor={c}"));
    }
    let get: Vec<String> = ids.iter().map(|v| format!("/api/v2/videos/{v}")).collect();
    Ok((timed_reads(addr, key, "GET /videos/{id}", &get)?, timed_reads(addr, key, "index video pages", &pages)?))
}

/// What the console reads to open its overview, and a job's page (the job, its first 100
/// files, its timeline's first 1,000 events), each load timed whole, one after another.
fn console_latency(addr: &str, key: &str, job_id: &str) -> anyhow::Result<(Latency, Latency)> {
    let load = |paths: &[String]| -> anyhow::Result<Latency> {
        let mut all = Vec::new();
        let start = Instant::now();
        for _ in 0..CONSOLE_LOADS {
            let t = Instant::now();
            for path in paths {
                let (status, _) = http(addr, "GET", path, Some(key), None)?;
                ensure!(status == 200, "GET {path}: {status}");
            }
            all.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let secs = start.elapsed().as_secs_f64();
        all.sort_by(f64::total_cmp);
        let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        Ok(Latency { p50: at(0.50), p99: at(0.99), per_s: all.len() as f64 / secs })
    };
    let overview = load(&["/api/v2/console/overview".to_string()])?;
    let job = load(&[
        format!("/api/v2/import-jobs/{job_id}"),
        format!("/api/v2/import-jobs/{job_id}/files?limit=100"),
        format!("/api/v2/admin/streams/{job_id}?limit=1000&brief=true"),
    ])?;
    println!(
        "console reads: overview p50 {:.2} ms p99 {:.2} ms; a job's page p50 {:.2} ms p99 {:.2} ms",
        overview.p50, overview.p99, job.p50, job.p99
    );
    Ok((overview, job))
}

/// Loads of each console page the bench times.
const CONSOLE_LOADS: usize = 50;

/// [`READERS`] readers, [`READS_EACH`] reads each, cycling through `paths`: p50, p99, reads/s.
fn timed_reads(addr: &str, key: &str, label: &str, paths: &[String]) -> anyhow::Result<Latency> {
    let start = Instant::now();
    let handles: Vec<_> = (0..READERS)
        .map(|r| {
            let (addr, key, paths) = (addr.to_string(), key.to_string(), paths.to_vec());
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let mut out = Vec::with_capacity(READS_EACH);
                for i in 0..READS_EACH {
                    let path = &paths[(r * 7919 + i * 104_729) % paths.len()];
                    let t = Instant::now();
                    let (status, _) = http(&addr, "GET", path, Some(&key), None)?;
                    ensure!(status == 200, "GET {path}: {status}");
                    out.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    let l = Latency { p50: at(0.50), p99: at(0.99), per_s: all.len() as f64 / secs };
    println!("reads {label:<26} p50 {:>7.2} ms   p99 {:>7.2} ms   {:>8.0} reads/s", l.p50, l.p99, l.per_s);
    Ok(l)
}

/// `spool_log_commits_total` of `/metrics`.
pub(crate) fn log_commits(addr: &str) -> anyhow::Result<f64> {
    let (_, text) = http(addr, "GET", "/metrics", None, None)?;
    text.lines()
        .find_map(|l| l.strip_prefix("spool_log_commits_total ").and_then(|v| v.trim().parse().ok()))
        .context("no spool_log_commits_total in /metrics")
}
