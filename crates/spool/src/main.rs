//! `spool`: the binary. It parses the command line and hands over to the library crates;
//! the work lives there. `anyhow` is used here and nowhere else.

mod bench;
mod bench_cluster;
mod bench_cuts;
mod bench_engine;
mod bench_export;
mod bench_import;
mod bench_prompt_run;
mod bench_search;
mod bench_watch;
mod bench_webhooks;
mod debug;
mod demo;
mod http;
mod keys;
mod migrate;
mod node;
mod offline;
mod routing;
mod serve;
mod tls;
mod webhooks_cli;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc returns freed memory to the system: after an import of a million files the server's
/// resident memory is what it holds, not the peak the import passed through.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of an offline tool whose data directory is held by a running server.
pub const EXIT_HELD: u8 = 2;

#[derive(Parser)]
#[command(name = "spool", version, about = "Spool: a self-hosted, event-sourced workflow engine for media libraries")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
pub struct DataDirArg {
    /// The data directory (holds the log and the master key).
    #[arg(long, env = "SPOOL_DATA_DIR", default_value = "./spool-data")]
    pub data_dir: PathBuf,
}

/// Where an offline tool reads: the data directory's redb log, or a PostgreSQL log.
#[derive(clap::Args, Clone)]
pub struct SourceArg {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Read a PostgreSQL log (`postgres://…`) instead of the data directory's: read
    /// only, it takes no lease (a running cluster keeps serving).
    #[arg(long = "log", env = "SPOOL_LOG_URL")]
    pub log_url: Option<String>,
    /// With `--log`: which partition of a partitioned cluster (0, the catalog, by default;
    /// `verify` without it checks every partition).
    #[arg(long, requires = "log_url")]
    pub partition: Option<i32>,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// The server's log, its node, and each partition's holder, epoch, head and lease.
    Status {
        /// A running server's base URL, e.g. `http://127.0.0.1:8080`.
        #[arg(long)]
        server: String,
        /// An admin API key.
        #[arg(long, env = "SPOOL_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// The server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Run a real workflow on embedded media in a fresh data directory, then stop.
    Demo(demo::DemoArgs),
    /// Show the state and pending effects of one stream after each of its events (offline),
    /// or of a bundle's subject with `--bundle FILE` (no data directory needed).
    Replay {
        #[command(flatten)]
        dir: SourceArg,
        /// The stream, e.g. `idx_01J…` (not with `--bundle`).
        #[arg(required_unless_present = "bundle")]
        stream: Option<String>,
        /// Stop after this sequence number.
        #[arg(long)]
        until: Option<u64>,
        /// A file written by `spool bundle`.
        #[arg(long, conflicts_with = "stream")]
        bundle: Option<PathBuf>,
    },
    /// Every event of one workflow and of what it refers to (index, connector without its
    /// credentials, prompt, videos, runs) into one file, for `spool replay --bundle` elsewhere.
    Bundle {
        /// `job_…`, `run_…`, `exp_…`, `auto_…` or any stream.
        id: String,
        #[command(flatten)]
        dir: SourceArg,
        /// The file (default `<id>.bundle`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Why an import job, prompt run, export or automation is not moving: offline from a data
    /// directory, or from a running server with `--server URL` (and `SPOOL_API_KEY`).
    Why {
        /// `job_…`, `run_…`, `exp_…` or `auto_…`.
        id: String,
        #[command(flatten)]
        dir: SourceArg,
        /// A running server's base URL, e.g. `http://127.0.0.1:8080` (then the data directory is
        /// not opened).
        #[arg(long)]
        server: Option<String>,
        /// An API key with the read scope (with `--server`).
        #[arg(long, env = "SPOOL_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Re-fold the whole log: decoding, determinism, index consistency (offline). With
    /// `--against OTHER_BINARY`, fold it with that build too and name the first event after
    /// which the two states differ.
    Verify {
        #[command(flatten)]
        dir: SourceArg,
        #[arg(long, conflicts_with = "log_url")]
        against: Option<PathBuf>,
    },
    /// Copy a data directory's log into an empty PostgreSQL log (partition 0), one way, and
    /// verify the copy event by event. Stop the server first.
    MigrateLog {
        #[command(flatten)]
        dir: DataDirArg,
        /// The PostgreSQL log, `postgres://user[:password]@host:port/db`.
        #[arg(long)]
        to: String,
    },
    /// A cluster on a PostgreSQL log.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Manage API keys (offline).
    Keys {
        #[command(subcommand)]
        cmd: keys::KeysCmd,
    },
    /// Read the event log of a data directory that no server holds.
    Log {
        #[command(subcommand)]
        cmd: offline::LogCmd,
    },
    /// Webhooks of a running server (through its API).
    Webhooks {
        #[command(subcommand)]
        cmd: webhooks_cli::WebhooksCmd,
    },
    /// Print the media facts Spool records for files (container, duration, streams, bitrate),
    /// one JSON line each; exits 1 if any is unreadable.
    Probe {
        /// Files to probe.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Benchmarks (run by hand; each ends with one JSON line).
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// A seeded simulation of the machines under faults (engine-spec/invariants.md): one seed
    /// with `--seed N`, many with `--seeds COUNT [--from N]`; exits 1 if any seed breaks an
    /// invariant, printing the command that replays it.
    Sim {
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Steps per seed (default: 300 for the machines, 60 with `--runtime`).
        #[arg(long)]
        steps: Option<usize>,
        /// The runtime simulator instead (`crates/sim`): the real runtime against in-memory
        /// twins of the disk and the bucket.
        #[arg(long)]
        runtime: bool,
        /// With `--runtime`: nodes sharing one partition of an in-memory shared log (kills,
        /// pauses past the lease, lost answers, skewed clocks); 1 is the single-node mode.
        #[arg(long, default_value_t = 1, requires = "runtime")]
        nodes: u64,
    },
    /// Test helpers (used by the crash tests).
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        cmd: debug::DebugCmd,
    },
}

/// `spool sim`: run the seeds, one line per failing seed with the command that replays it, a
/// summary, and one JSON line.
fn sim(seed: Option<u64>, seeds: u64, from: u64, steps: usize) -> anyhow::Result<()> {
    let range = match seed {
        Some(s) => s..s + 1,
        None => from..from.saturating_add(seeds),
    };
    let start = std::time::Instant::now();
    let mut total = spool_core::sim::SimReport::default();
    let (mut ran, mut failed) = (0u64, Vec::new());
    // A failing seed's panic message is reported below, once.
    std::panic::set_hook(Box::new(|_| {}));
    for s in range {
        ran += 1;
        match spool_core::sim::run(s, steps) {
            Ok(r) => {
                total.steps += r.steps;
                total.events += r.events;
                total.crashes += r.crashes;
                total.failed_commits += r.failed_commits;
                total.duplicates += r.duplicates;
                total.simulated_ms += r.simulated_ms;
                total.jobs += r.jobs;
                total.runs += r.runs;
                total.exports += r.exports;
                total.videos += r.videos;
                if seed.is_some() {
                    println!("{r:?}");
                }
            }
            Err(e) => {
                println!("FAILED {e}\n  replay: spool sim --seed {s} --steps {steps}");
                failed.push(s);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let hours = total.simulated_ms as f64 / 3_600_000.0;
    println!(
        "{ran} seeds in {secs:.1} s: {} failed; {} steps, {} events, {} crashes, {} failed commits, {} duplicated outcomes, \
         {hours:.0} simulated hours; {} jobs, {} runs, {} exports, {} videos",
        failed.len(),
        total.steps,
        total.events,
        total.crashes,
        total.failed_commits,
        total.duplicates,
        total.jobs,
        total.runs,
        total.exports,
        total.videos,
    );
    println!(
        "{}",
        serde_json::json!({
            "sim": "core", "seeds": ran, "failed": failed, "steps": total.steps, "events": total.events,
            "crashes": total.crashes, "failed_commits": total.failed_commits, "duplicates": total.duplicates,
            "simulated_hours": hours.round(), "seconds": (secs * 10.0).round() / 10.0,
        })
    );
    anyhow::ensure!(failed.is_empty(), "{} of {ran} seeds broke an invariant", failed.len());
    Ok(())
}

/// `spool sim --runtime`: the same report shape for the runtime simulator.
fn runtime_sim(seed: Option<u64>, seeds: u64, from: u64, steps: usize, nodes: u64) -> anyhow::Result<()> {
    let range = match seed {
        Some(s) => s..s + 1,
        None => from..from.saturating_add(seeds),
    };
    let start = std::time::Instant::now();
    let mut total = spool_sim::SimReport::default();
    let (mut ran, mut failed) = (0u64, Vec::new());
    for s in range {
        ran += 1;
        match spool_sim::run_nodes(s, steps, nodes) {
            Ok(r) => {
                if seed.is_some() {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                }
                total.add(&r);
            }
            Err(e) => {
                let with = if nodes > 1 { format!(" --nodes {nodes}") } else { String::new() };
                println!("FAILED {e}\n  replay: spool sim --runtime{with} --seed {s} --steps {steps}");
                failed.push(s);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let hours = total.simulated_ms as f64 / 3_600_000.0;
    println!(
        "{ran} seeds in {secs:.1} s: {} failed; {} steps, {} events, {} crashes, {} failed commits, {} injected storage faults, \
         {} injected receiver and processor faults, {hours:.1} simulated hours; {} jobs, {} runs, {} exports, {} videos, \
         {} deliveries, {} answers, {} processor calls",
        failed.len(),
        total.steps,
        total.events,
        total.crashes,
        total.failed_commits,
        total.injected_storage_faults,
        total.injected_peer_faults,
        total.jobs,
        total.runs,
        total.exports,
        total.videos,
        total.deliveries,
        total.answers,
        total.processor_calls,
    );
    println!(
        "{}",
        serde_json::json!({
            "sim": "runtime", "seeds": ran, "failed": failed, "steps": total.steps, "events": total.events,
            "crashes": total.crashes, "failed_commits": total.failed_commits,
            "injected_storage_faults": total.injected_storage_faults, "jobs": total.jobs, "runs": total.runs,
            "exports": total.exports, "videos": total.videos, "deliveries": total.deliveries,
            "answers": total.answers, "injected_peer_faults": total.injected_peer_faults, "processor_calls": total.processor_calls,
            "uri_jobs": total.uri_jobs, "segment_retries": total.segment_retries,
            "credential_patches": total.credential_patches, "nodes": nodes, "takeovers": total.takeovers,
            "fenced": total.fenced, "lost_answers": total.lost_answers,
            "simulated_hours": (hours * 10.0).round() / 10.0, "seconds": (secs * 10.0).round() / 10.0,
        })
    );
    anyhow::ensure!(failed.is_empty(), "{} of {ran} seeds broke an invariant", failed.len());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; the server's request lines would drown it.
    // The simulators crash and fail on purpose: the runtime's warnings would drown the report.
    let default_level = match cli.cmd {
        Cmd::Demo(_) => "warn",
        Cmd::Sim { .. } => "off",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
                // The probe reports unreadable media as a file failure; symphonia's own log
                // lines about the same file are noise.
                .add_directive("symphonia=off".parse().expect("a valid directive"))
                // tantivy logs every commit of the search index at info.
                .add_directive("tantivy=warn".parse().expect("a valid directive"))
                .add_directive("symphonia_core=off".parse().expect("a valid directive"))
                .add_directive("symphonia_format_isomp4=off".parse().expect("a valid directive"))
                .add_directive("symphonia_format_mkv=off".parse().expect("a valid directive")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.cmd {
        Cmd::Serve(args) => serve::run(args),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Replay { bundle: Some(file), until, .. } => offline::replay_bundle(&file, until),
        Cmd::Replay { dir, stream, until, bundle: None } => {
            offline::replay(&dir, stream.as_deref().unwrap_or(""), until)
        }
        Cmd::Bundle { id, dir, out } => offline::bundle(&dir, &id, out.as_deref()),
        Cmd::Verify { dir, against: None } => offline::verify(&dir),
        Cmd::Verify { dir, against: Some(other) } => offline::verify_against(&dir.dir, &other),
        Cmd::Why { id, dir, server, api_key } => offline::why(&id, &dir, server.as_deref(), api_key.as_deref()),
        Cmd::Cluster { cmd: ClusterCmd::Status { server, api_key, json } } => {
            offline::cluster_status(&server, api_key.as_deref(), json)
        }
        Cmd::MigrateLog { dir, to } => migrate::run(&dir.data_dir, &to),
        Cmd::Keys { cmd } => keys::run(cmd),
        Cmd::Log { cmd } => offline::log(cmd),
        Cmd::Bench { cmd } => bench::run(cmd),
        Cmd::Probe { files } => probe(&files),
        Cmd::Webhooks { cmd } => webhooks_cli::run(cmd),
        Cmd::Debug { cmd } => debug::run(cmd),
        Cmd::Sim { seed, seeds, from, steps, runtime: false, .. } => {
            sim(seed, seeds, from, steps.unwrap_or(spool_core::sim::SIM_STEPS_DEFAULT))
        }
        Cmd::Sim { seed, seeds, from, steps, runtime: true, nodes } => {
            runtime_sim(seed, seeds, from, steps.unwrap_or(spool_sim::SIM_STEPS_DEFAULT), nodes)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Unreadable>().is_some() => ExitCode::FAILURE,
        Err(e) => {
            if let Some(spool_log::Error::AlreadyOpen { path }) = e.downcast_ref::<spool_log::Error>() {
                eprintln!(
                    "spool: {} is held by a running server; stop it first (SIGTERM), or manage keys live through the API (POST/GET /api/v2/api-keys with an admin key)",
                    path.display()
                );
                return ExitCode::from(EXIT_HELD);
            }
            eprintln!("spool: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Some file of `spool probe` was unreadable (each said why already).
#[derive(Debug)]
struct Unreadable;

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("some files are unreadable")
    }
}

impl std::error::Error for Unreadable {}

fn probe(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut bad = false;
    for f in files {
        let ext = f.extension().map(|e| e.to_string_lossy().to_string()).unwrap_or_default();
        let line = match spool_media::probe_file(f, &ext) {
            Ok(facts) => serde_json::json!({ "file": f, "media": spool_core::machines::video::view::facts(&facts) }),
            Err(e) => {
                bad = true;
                serde_json::json!({ "file": f, "error": { "code": e.code(), "message": e.to_string() } })
            }
        };
        println!("{line}");
    }
    if bad { Err(Unreadable.into()) } else { Ok(()) }
}
