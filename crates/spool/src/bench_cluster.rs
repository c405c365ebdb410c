//! `spool bench cluster`: durable steps/s of one node on a PostgreSQL log against one node on
//! redb in the same run (the same load: writers creating indexes, each creation one durable
//! command), PostgreSQL transactions per durable step (`pg_stat_database.xact_commit` of the
//! log's database), steps/s of a partitioned cluster (four index partitions) on 1, 2 and 3 nodes
//! with the writers spread over the nodes, and the takeover time of a standby after SIGKILL of
//! its holder. The load, the nodes and the database share this machine's cores: the figures say
//! so.
#![allow(clippy::disallowed_methods)] // a benchmark: scratch names and its key are random

use crate::bench_engine::{Serve, Server, http};
use anyhow::{Context, ensure};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Args {
    /// A PostgreSQL URL whose user may create databases (one is made per run).
    pub pg: String,
    /// Index creations per run.
    pub steps: usize,
    /// Concurrent writers.
    pub writers: usize,
}

/// Aims (issue 26): durable steps/s on one partition (Restate measured ~4,060 here).
const AIM_STEPS_PER_S: f64 = 4_060.0;
/// Aim: PostgreSQL transactions per durable step.
const AIM_TX_PER_STEP: f64 = 0.05;
/// The lease of the takeover measurement.
const LEASE_S: u64 = 2;
/// Index partitions of the partitioned runs.
const PARTITIONS: u16 = 4;
/// The nodes of a partitioned run share this master key (a benchmark's, never a real one).
const BENCH_MASTER_KEY: &str = "YmVuY2gtb25seS1tYXN0ZXIta2V5LW5vdC1zZWNyZXQ=";

/// Wait until the nodes share the partitions evenly (each answers `/healthz` with `held`).
fn wait_balanced(nodes: &[Server], total: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let held: Vec<usize> = nodes
            .iter()
            .map(|n| match http(&n.addr, "GET", "/healthz", None, None) {
                Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["held"].as_array().map(Vec::len))
                    .unwrap_or(usize::MAX),
                _ => usize::MAX,
            })
            .collect();
        let (lo, hi) = (held.iter().copied().min().unwrap_or(0), held.iter().copied().max().unwrap_or(0));
        if hi != usize::MAX && held.iter().sum::<usize>() == total && hi - lo <= 1 {
            return Ok(());
        }
        ensure!(start.elapsed() < Duration::from_secs(60), "the nodes did not share the partitions: {held:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("spool-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = bench(&work, &args);
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&work);
        }
        Err(_) => eprintln!("spool bench cluster: scratch (with the server logs) left in {}", work.display()),
    }
    result
}

fn serve(work: &Path, env: Vec<(String, String)>) -> anyhow::Result<Serve> {
    Ok(Serve {
        exe: std::env::current_exe().context("finding the spool executable")?,
        key: format!("sk_test_bench_{:032x}", rand::random::<u128>()),
        roots: work.to_path_buf(),
        concurrency: 8,
        env,
    })
}

fn database(admin: &str, what: &str) -> anyhow::Result<String> {
    let name = format!("bench_{what}_{:08x}", rand::random::<u32>());
    spool_log::create_database(admin, &name).with_context(|| format!("creating the database {name}"))
}

/// `xact_commit` of the URL's database (after the statistics are flushed).
fn xact_commit(url: &str) -> anyhow::Result<f64> {
    std::thread::sleep(Duration::from_millis(1500));
    let out = std::process::Command::new("psql")
        .args([url, "-Atc", "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"])
        .output()
        .context("running psql (postgresql-client)")?;
    ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().context("xact_commit")
}

/// `steps` index creations by `writers` threads; returns steps/s.
fn load(server: &Server, key: &str, steps: usize, writers: usize) -> anyhow::Result<f64> {
    load_spread(std::slice::from_ref(&server.addr), key, steps, writers)
}

/// The same, writer `w` sending to `addrs[w % n]`.
fn load_spread(addrs: &[String], key: &str, steps: usize, writers: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (addr, key, next) = (addrs[w % addrs.len()].clone(), key.to_string(), next.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                while next.fetch_add(1, Ordering::SeqCst) < steps {
                    let body = format!("{{\"name\":\"bench-{w}\"}}");
                    let (status, text) = http(&addr, "POST", "/api/v2/indexes", Some(&key), Some(&body))?;
                    ensure!(status == 201, "POST /indexes answered {status}: {text}");
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    Ok(steps as f64 / began.elapsed().as_secs_f64())
}

fn bench(work: &Path, args: &Args) -> anyhow::Result<()> {
    println!(
        "spool bench cluster: {} index creations by {} writers; spool, PostgreSQL and the load share this machine's {} cores",
        args.steps,
        args.writers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // redb, the embedded baseline.
    let redb = serve(work, Vec::new())?;
    let mut server = redb.spawn(&work.join("redb"), &work.join("redb.log"))?;
    server.wait_healthy(Duration::from_millis(20))?;
    let redb_steps = load(&server, &redb.key, args.steps, args.writers)?;
    server.stop()?;
    println!("redb:       {redb_steps:>8.0} durable steps/s");

    // PostgreSQL, one node holding partition 0.
    let url = database(&args.pg, "steps")?;
    let pg = serve(work, vec![("SPOOL_LOG_URL".into(), url.clone()), ("SPOOL_PARTITIONS".into(), "0".into())])?;
    let mut server = pg.spawn(&work.join("pg"), &work.join("pg.log"))?;
    server.wait_healthy(Duration::from_millis(20))?;
    let before = xact_commit(&url)?;
    let pg_steps = load(&server, &pg.key, args.steps, args.writers)?;
    let after = xact_commit(&url)?;
    server.stop()?;
    let tx_per_step = (after - before) / args.steps as f64;
    println!(
        "postgres:   {pg_steps:>8.0} durable steps/s   ratio to redb {:.2}   {tx_per_step:.3} transactions per step",
        pg_steps / redb_steps
    );

    // A partitioned cluster (a catalog and four index partitions) on 1, 2 and 3 nodes, the
    // writers spread over the nodes (each forwards what it does not hold).
    let mut by_nodes = Vec::new();
    for n in 1..=3usize {
        let url = database(&args.pg, &format!("nodes{n}"))?;
        let env = vec![
            ("SPOOL_LOG_URL".into(), url),
            ("SPOOL_PARTITIONS".into(), PARTITIONS.to_string()),
            ("SPOOL_MASTER_KEY".into(), BENCH_MASTER_KEY.into()),
        ];
        let cluster = serve(work, env)?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = work.join(format!("p{n}-{i}"));
            nodes.push(cluster.spawn(&dir, &work.join(format!("p{n}-{i}.log")))?);
        }
        for node in &mut nodes {
            node.wait_healthy(Duration::from_millis(20))?;
        }
        wait_balanced(&nodes, usize::from(PARTITIONS) + 1)?;
        let addrs: Vec<String> = nodes.iter().map(|s| s.addr.clone()).collect();
        let steps = load_spread(&addrs, &cluster.key, args.steps, args.writers)?;
        for node in &mut nodes {
            node.stop()?;
        }
        println!("partitioned, {n} node(s): {steps:>8.0} durable steps/s ({PARTITIONS} index partitions)");
        by_nodes.push(steps);
    }

    // Takeover: a holder and a standby, SIGKILL the holder.
    let url = database(&args.pg, "takeover")?;
    let env = vec![
        ("SPOOL_LOG_URL".into(), url),
        ("SPOOL_LEASE_TTL".into(), format!("{LEASE_S}s")),
        ("SPOOL_PARTITIONS".into(), "0".into()),
    ];
    let nodes = serve(work, env)?;
    let mut holder = nodes.spawn(&work.join("node-a"), &work.join("node-a.log"))?;
    holder.wait_healthy(Duration::from_millis(20))?;
    std::fs::create_dir_all(work.join("node-b"))?;
    std::fs::copy(work.join("node-a").join("master.key"), work.join("node-b").join("master.key"))?;
    let mut standby = nodes.spawn(&work.join("node-b"), &work.join("node-b.log"))?;
    std::thread::sleep(Duration::from_secs(LEASE_S * 2));
    holder.child.kill()?;
    let _ = holder.child.wait();
    let killed = Instant::now();
    standby.wait_holder(Duration::from_millis(10))?;
    let takeover = killed.elapsed().as_secs_f64();
    standby.stop()?;
    println!(
        "takeover:   {takeover:.2} s from SIGKILL of the holder to the standby's /healthz saying it holds the partition (lease {LEASE_S} s)"
    );

    let met = |ok: bool| if ok { "met" } else { "not met" };
    println!(
        "aim ≥ {AIM_STEPS_PER_S:.0} durable steps/s on one partition: {pg_steps:.0}: {}",
        met(pg_steps >= AIM_STEPS_PER_S)
    );
    println!(
        "aim ≤ {AIM_TX_PER_STEP} transactions per step: {tx_per_step:.3}: {}",
        met(tx_per_step <= AIM_TX_PER_STEP)
    );
    println!("aim takeover ≤ lease + 1 s: {takeover:.2} s: {}", met(takeover <= (LEASE_S + 1) as f64));
    println!(
        "{}",
        json!({
            "bench": "cluster",
            "steps": args.steps,
            "writers": args.writers,
            "steps_per_s_redb": redb_steps.round(),
            "steps_per_s_postgres": pg_steps.round(),
            "postgres_vs_redb": (pg_steps / redb_steps * 100.0).round() / 100.0,
            "pg_transactions_per_step": (tx_per_step * 1000.0).round() / 1000.0,
            "takeover_s": (takeover * 100.0).round() / 100.0,
            "partitions": PARTITIONS,
            "steps_per_s_partitioned_1_node": by_nodes[0].round(),
            "steps_per_s_partitioned_2_nodes": by_nodes[1].round(),
            "steps_per_s_partitioned_3_nodes": by_nodes[2].round(),
            "lease_s": LEASE_S,
            "shared_cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        })
    );
    Ok(())
}
