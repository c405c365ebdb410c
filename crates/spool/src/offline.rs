//! Offline tools: they open a data directory that no server holds (redb locks the file, so a
//! held directory is refused with exit code 2).

use crate::{DataDirArg, SourceArg};
use anyhow::{Context, bail};
use spool_log::{EventLog, LOG_FILE_NAME, RawLog, RedbLog};
use spool_model::Envelope;
use spool_model::time::rfc3339_ms;
use std::path::Path;

#[derive(clap::Subcommand)]
pub enum LogCmd {
    /// Print events as readable lines.
    Show(ShowArgs),
    /// Print the last events (default 20).
    Tail(ShowArgs),
    /// Print events whose line contains a text.
    Grep {
        pattern: String,
        #[command(flatten)]
        args: ShowArgs,
    },
}

#[derive(clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub dir: SourceArg,
    /// Only this stream (e.g. `idx_01J…`).
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this event kind (e.g. `IndexCreated`); repeatable.
    #[arg(long)]
    pub kind: Vec<String>,
    /// Start at this sequence number.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// At most this many lines.
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// `tail` only: follow a running server's log live (server-sent events) from `--from`
    /// (default: new events only), stopping after `--limit` events if given.
    #[arg(long)]
    pub server: Option<String>,
    /// An admin API key (with `--server`).
    #[arg(long, env = "SPOOL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Open an existing data directory for an offline tool.
pub fn open_existing(dir: &Path) -> anyhow::Result<RedbLog> {
    let file = dir.join(LOG_FILE_NAME);
    if !file.exists() {
        bail!("{} holds no Spool log ({} is missing)", dir.display(), LOG_FILE_NAME);
    }
    // redb would take an empty or foreign file as a new database and write one over it: an
    // offline tool reads logs, it never makes one.
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(&file).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    if read.is_err() || &magic != b"redb" {
        bail!("{} is not a Spool log (empty, or not a redb file); nothing was written to it", file.display());
    }
    // An offline tool only reads: no commit at rest either.
    let opts = spool_log::RedbLogOptions { commit_at_rest: false, ..Default::default() };
    Ok(RedbLog::open(&file, opts)?)
}

/// The log an offline tool reads: a data directory's, or a PostgreSQL log's partition (read
/// only: no lease is taken and no epoch moves, so a running cluster keeps serving).
pub enum Source {
    Redb(RedbLog),
    Postgres(spool_log::PgLog),
}

impl Source {
    pub fn open(src: &SourceArg) -> anyhow::Result<Source> {
        Ok(match &src.log_url {
            Some(url) => Source::Postgres(
                spool_log::PgLog::open_reader(url, src.partition.unwrap_or(0))
                    .with_context(|| format!("opening the PostgreSQL log {}", spool_log::redact_url(url)))?,
            ),
            None => Source::Redb(open_existing(&src.dir.data_dir)?),
        })
    }

    pub fn log(&self) -> &dyn EventLog {
        match self {
            Source::Redb(l) => l,
            Source::Postgres(l) => l,
        }
    }

    pub fn raw(&self) -> &dyn RawLog {
        match self {
            Source::Redb(l) => l,
            Source::Postgres(l) => l,
        }
    }
}

pub fn line(env: &Envelope) -> String {
    let body =
        serde_json::to_value(&env.event).ok().and_then(|v| v.as_object().and_then(|o| o.values().next().cloned()));
    spool_runtime::tools::event_line(env, body)
}

pub fn json_line(env: &Envelope) -> String {
    serde_json::json!({
        "seq": env.seq,
        "stream": env.stream,
        "at": rfc3339_ms(env.at_ms),
        "at_ms": env.at_ms,
        "format_version": env.format_version,
        "kind": env.event.kind(),
        "event": env.event,
    })
    .to_string()
}

fn matches(args: &ShowArgs, env: &Envelope) -> bool {
    args.stream.as_deref().is_none_or(|s| s == env.stream)
        && (args.kind.is_empty() || args.kind.iter().any(|k| k.eq_ignore_ascii_case(env.event.kind())))
}

/// Walk the matching events in order, calling `f` for each.
fn walk(log: &dyn EventLog, args: &ShowArgs, mut f: impl FnMut(&Envelope) -> bool) -> anyhow::Result<()> {
    if let Some(stream) = &args.stream {
        let mut version = 0;
        loop {
            let batch = log.read_stream(stream, version, spool_log::READ_BATCH_MAX)?;
            if batch.is_empty() {
                return Ok(());
            }
            version += batch.len() as u64;
            for env in batch.iter().filter(|e| e.seq >= args.from && matches(args, e)) {
                if !f(env) {
                    return Ok(());
                }
            }
        }
    }
    let mut seq = args.from;
    loop {
        let batch = log.read_from(seq, spool_log::READ_BATCH_MAX)?;
        let Some(last) = batch.last() else { return Ok(()) };
        seq = last.seq + 1;
        for env in batch.iter().filter(|e| matches(args, e)) {
            if !f(env) {
                return Ok(());
            }
        }
    }
}

pub fn log(cmd: LogCmd) -> anyhow::Result<()> {
    use std::io::Write;
    let (args, pattern, tail) = match cmd {
        LogCmd::Show(a) => (a, None, false),
        LogCmd::Tail(a) => (a, None, true),
        LogCmd::Grep { pattern, args } => (args, Some(pattern), false),
    };
    if let (true, Some(server)) = (tail, args.server.as_deref()) {
        return follow(server, args.api_key.as_deref(), &args);
    }
    let source = Source::open(&args.dir)?;
    let log = source.log();
    let render = |e: &Envelope| if args.json { json_line(e) } else { line(e) };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if tail {
        let keep = args.limit.unwrap_or(20);
        let mut ring = std::collections::VecDeque::with_capacity(keep + 1);
        walk(log, &args, |e| {
            ring.push_back(render(e));
            if ring.len() > keep {
                ring.pop_front();
            }
            true
        })?;
        for l in ring {
            writeln!(out, "{l}")?;
        }
        return Ok(());
    }
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut io_err = None;
    walk(log, &args, |e| {
        let l = render(e);
        if pattern.as_deref().is_some_and(|p| !l.contains(p)) {
            return true;
        }
        if let Err(err) = writeln!(out, "{l}") {
            io_err = Some(err);
            return false;
        }
        left -= 1;
        left > 0
    })
    .context("reading the log")?;
    match io_err {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `spool replay <stream> [--until SEQ]`: the state of the stream's aggregate and its pending
/// effects after each of its events.
pub fn replay(dir: &SourceArg, stream: &str, until: Option<u64>) -> anyhow::Result<()> {
    let source = Source::open(dir)?;
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let steps = spool_runtime::tools::replay_stream(source.log(), stream, until, |step| {
        keep_printing(&mut out, step, &mut failed)
    })?;
    if steps == 0 {
        bail!("stream {stream} has no events");
    }
    quiet_on_closed_pipe(failed)
}

use spool_runtime::tools::BUNDLE_FORMAT;

/// `spool bundle <id>`: every event of one workflow and of the streams it refers to, in log
/// order, connector credentials removed, into one file (`tools::bundle_text`).
pub fn bundle(dir: &SourceArg, id: &str, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    if spool_runtime::tools::never_bundled(id) {
        bail!("{id}: API keys, webhooks and deliveries are never bundled (their hashes and secrets stay here)");
    }
    let source = Source::open(dir)?;
    let st = spool_runtime::tools::fold_state(source.log())?;
    // A job's imported files are rows of its table, built by the server at start: a data
    // directory it has not opened since the tables came has none to read.
    let format = source.log().side_get(spool_log::SideTable::Videos, spool_core::rows::TABLES_FORMAT_KEY)?;
    if format.as_deref() != Some(&spool_core::rows::TABLES_FORMAT.to_le_bytes()[..]) {
        bail!(
            "the tables of this data directory are not built yet: start `spool serve` on it once (they are built at start), then bundle"
        );
    }
    let (mut streams, jobs) = spool_runtime::tools::bundle_streams(&st, id);
    spool_runtime::tools::bundle_job_videos(source.log(), &jobs, &mut streams)?;
    let Some((events, streams, text)) = spool_runtime::tools::bundle_text(source.log(), &streams, id, usize::MAX)?
    else {
        bail!("{id} has no events");
    };
    let path = out.map(std::path::Path::to_path_buf).unwrap_or_else(|| format!("{id}.bundle").into());
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("{events} events of {streams} streams written to {}", path.display());
    Ok(())
}

/// `spool replay --bundle FILE`: the bundle's subject replayed as `spool replay` replays it,
/// without a data directory.
pub fn replay_bundle(file: &std::path::Path, until: Option<u64>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut lines = text.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("")).context("the bundle has no header line")?;
    anyhow::ensure!(header["format"] == BUNDLE_FORMAT, "{} is not a {BUNDLE_FORMAT} bundle", file.display());
    let subject = header["subject"].as_str().context("the bundle names no subject")?.to_string();
    let mut events = Vec::new();
    for (n, l) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bytes = hex::decode(l.trim()).with_context(|| format!("line {}: not a record", n + 2))?;
        events.push(spool_model::decode_envelope(&bytes).with_context(|| format!("line {}: not a record", n + 2))?);
    }
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let steps =
        spool_runtime::tools::replay_events(events, &subject, until, |step| keep_printing(&mut out, step, &mut failed));
    if steps == 0 {
        bail!("the bundle holds no event of {subject}");
    }
    quiet_on_closed_pipe(failed)
}

/// Print a step; on a write error keep it and stop (false).
fn keep_printing(
    out: &mut impl std::io::Write,
    step: &spool_runtime::tools::ReplayStep<'_>,
    failed: &mut Option<std::io::Error>,
) -> bool {
    match print_step(out, step) {
        Ok(()) => true,
        Err(e) => {
            *failed = Some(e);
            false
        }
    }
}

/// A reader that went away (`| head`) ends the output quietly; any other write error is one.
fn quiet_on_closed_pipe(failed: Option<std::io::Error>) -> anyhow::Result<()> {
    match failed {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn print_step(out: &mut impl std::io::Write, step: &spool_runtime::tools::ReplayStep<'_>) -> std::io::Result<()> {
    write!(out, "{}", spool_runtime::tools::step_text(step, &line(&step.envelope)))
}

/// `spool verify`: re-fold everything; exit non-zero on any decode error or inconsistency.
pub fn verify(dir: &SourceArg) -> anyhow::Result<()> {
    // A PostgreSQL log without `--partition`: every partition, one after the other.
    if let (Some(url), None) = (&dir.log_url, dir.partition) {
        let parts = Source::open(dir)?.log().partitions()?;
        let mut failed = Vec::new();
        for p in parts.iter().map(|p| p.partition) {
            println!("partition {p}:");
            let one = SourceArg { dir: dir.dir.clone(), log_url: Some(url.clone()), partition: Some(p) };
            if let Err(e) = verify(&one) {
                println!("  {e}");
                failed.push(p);
            }
        }
        anyhow::ensure!(failed.is_empty(), "verify found problems in partitions {failed:?}");
        if parts.len() > 1 {
            println!("ok: every partition ({}) verified", parts.len());
        }
        return Ok(());
    }
    let source = Source::open(dir)?;
    let mut report = spool_runtime::tools::verify(source.raw())?;
    // The search projection on disk (a data directory's; a partition's folder in a cluster).
    {
        let data = &dir.dir.data_dir;
        let folder = match (dir.log_url.as_ref(), dir.partition) {
            (Some(_), Some(p)) => data.join(spool_runtime::search::SEARCH_DIR).join(format!("p{p}")),
            _ => data.join(spool_runtime::search::SEARCH_DIR),
        };
        if folder.exists() {
            let state = spool_runtime::fold::load_state(source.raw())?;
            let found = spool_runtime::search::verify_search(source.raw(), &state, &folder)?;
            if found.is_empty() {
                println!("search index: agrees with the log");
            }
            report.problems.extend(found);
        }
    }
    println!("{} events in {} streams", report.events, report.streams);
    for e in &report.decode_errors {
        println!("decode error: {e}");
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    if !report.is_clean() {
        bail!("verify found {} decode errors and {} problems", report.decode_errors.len(), report.problems.len());
    }
    if report.snapshot_compared {
        println!("ok: every record decodes, the indexes agree, the server's snapshot equals a fresh fold");
    } else {
        println!("ok: every record decodes, the indexes agree (no snapshot of this format to compare the fold with)");
    }
    Ok(())
}

/// Every event of a data directory, read once (the log is closed again, so another build can
/// open it).
fn all_events(dir: &std::path::Path) -> anyhow::Result<Vec<Envelope>> {
    let log = open_existing(dir)?;
    let mut out = Vec::new();
    loop {
        let batch = log.read_from(out.len() as u64 + 1, spool_log::READ_BATCH_MAX)?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}

use spool_runtime::tools::fold_digest;

/// `spool debug fold-digest`: what `verify --against` asks the other build.
pub fn print_fold_digest(dir: &DataDirArg, until: u64) -> anyhow::Result<()> {
    let events = all_events(&dir.data_dir)?;
    let json = serde_json::json!({
        "state_format": spool_core::state::STATE_FORMAT,
        "digest": fold_digest(&events, spool_model::num::sat_usize(until)),
    });
    println!("{json}");
    Ok(())
}

/// `spool verify --against OTHER`: fold the same log with this build and another one and name
/// the first event after which their states differ (a bisection: O(n log n) events folded).
pub fn verify_against(dir: &DataDirArg, other: &std::path::Path) -> anyhow::Result<()> {
    let events = all_events(&dir.data_dir)?;
    let theirs = |until: usize| -> anyhow::Result<(u32, String)> {
        let out = std::process::Command::new(other)
            .args(["debug", "fold-digest", "--data-dir"])
            .arg(&dir.data_dir)
            .args(["--until", &until.to_string()])
            .output()
            .with_context(|| format!("running {}", other.display()))?;
        anyhow::ensure!(out.status.success(), "{} failed: {}", other.display(), String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).with_context(|| format!("{} printed no digest", other.display()))?;
        Ok((
            spool_model::num::sat_u32(v["state_format"].as_u64().unwrap_or(0)),
            v["digest"].as_str().unwrap_or("").to_string(),
        ))
    };
    let n = events.len();
    let (format, digest) = theirs(n)?;
    let ours = spool_core::state::STATE_FORMAT;
    if format != ours {
        bail!(
            "the builds keep different state shapes (STATE_FORMAT {ours} here, {format} there): their folds cannot be compared"
        );
    }
    if digest == fold_digest(&events, n) {
        println!("ok: both builds fold the {n} events to the same state");
        return Ok(());
    }
    // The states agree after `lo` events and differ after `hi`.
    let (mut lo, mut hi) = (0usize, n);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if theirs(mid)?.1 == fold_digest(&events, mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let env = &events[hi - 1];
    println!("the states first differ after event {}:", env.seq);
    println!("{}", line(env));
    bail!("{} folds the log differently from this build from event {} on", other.display(), env.seq)
}

/// `spool why <id>`: one line with the workflow's kind, status and what it waits on, then the
/// detail as JSON.
pub fn why(id: &str, dir: &SourceArg, server: Option<&str>, api_key: Option<&str>) -> anyhow::Result<()> {
    let (kind, status, waiting) = match server {
        None => {
            let src = Source::open(dir)?;
            let mut st = spool_runtime::tools::fold_state(src.log())?;
            // A delivered delivery is a row of the tables, built by the server at start.
            if let Ok(d) = id.parse::<spool_model::DeliveryId>() {
                let format = src.log().side_get(spool_log::SideTable::Videos, spool_core::rows::TABLES_FORMAT_KEY)?;
                if !st.deliveries.contains_key(&d)
                    && format.as_deref() != Some(&spool_core::rows::TABLES_FORMAT.to_le_bytes()[..])
                {
                    bail!(
                        "the tables of this data directory are not built yet: start `spool serve` on it once (they are built at start), then ask again"
                    );
                }
                spool_runtime::rows::load(src.log(), &mut st, &[spool_core::rows::Need::Deliveries(vec![d])])?;
            }
            let (kind, status, w) = spool_core::waiting::of_id(&st, id).map_err(|e| anyhow::anyhow!(e))?;
            (kind.to_string(), status, w.map(|w| w.json()).unwrap_or(serde_json::Value::Null))
        }
        Some(base) => {
            let path = match id.split('_').next() {
                Some("job") => format!("/import-jobs/{id}"),
                Some("run") => format!("/prompt-runs/{id}"),
                Some("exp") => format!("/exports/{id}"),
                _ => anyhow::bail!(
                    "{id}: with --server, give a job_, run_ or exp_ id (an automation is read by its index)"
                ),
            };
            let v = get_json(base, api_key, &path)?;
            let kind = match id.split('_').next() {
                Some("job") => "import_job",
                Some("run") => "prompt_run",
                Some("exp") => "export",
                _ => "delivery",
            }
            .to_string();
            (kind, v["status"].as_str().unwrap_or("?").to_string(), v["waiting_on"].clone())
        }
    };
    if waiting.is_null() {
        println!("{id} ({kind}, {status}): it has ended; it waits on nothing");
        return Ok(());
    }
    let at = |k: &str| waiting[k].as_str().map(|t| format!(" {k} {t}")).unwrap_or_default();
    println!(
        "{id} ({kind}, {status}): waiting on {}{}{}",
        waiting["reason"].as_str().unwrap_or("?"),
        at("since"),
        at("until")
    );
    println!("  detail: {}", waiting["detail"]);
    Ok(())
}

/// `spool log tail --server URL`: the server's `GET /admin/log/tail` (server-sent events), one
/// line per event as `log show` prints them.
fn follow(server: &str, api_key: Option<&str>, args: &ShowArgs) -> anyhow::Result<()> {
    use futures::StreamExt;
    use std::io::Write;
    let key = api_key.context("--server needs an admin API key (SPOOL_API_KEY or --api-key)")?;
    let mut url = format!("{}/api/v2/admin/log/tail", server.trim_end_matches('/'));
    if args.from > 1 {
        url.push_str(&format!("?from={}", args.from));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(&url)
            .header("x-api-key", key)
            .header("accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("reaching {server}"))?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "the server answered {status}: {}", resp.text().await.unwrap_or_default());
        let mut body = resp.bytes_stream();
        let (mut pending, mut printed) = (String::new(), 0usize);
        let stdout = std::io::stdout();
        while let Some(chunk) = body.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(i) = pending.find('\n') {
                let l: String = pending.drain(..=i).collect();
                let Some(data) = l.trim_end().strip_prefix("data:") else { continue };
                let v: serde_json::Value = serde_json::from_str(data.trim())?;
                if args.stream.as_ref().is_some_and(|s| v["stream"] != s.as_str())
                    || (!args.kind.is_empty() && !args.kind.iter().any(|k| v["kind"] == k.as_str()))
                {
                    continue;
                }
                let text = if args.json {
                    v.to_string()
                } else {
                    let body = v["event"].as_object().and_then(|o| o.values().next().cloned()).unwrap_or_default();
                    format!(
                        "{:>8}  {}  {:<32}  {:<24} {}",
                        v["seq"],
                        v["at"].as_str().unwrap_or(""),
                        v["stream"].as_str().unwrap_or(""),
                        v["kind"].as_str().unwrap_or(""),
                        body
                    )
                };
                let mut out = stdout.lock();
                writeln!(out, "{text}")?;
                out.flush()?;
                printed += 1;
                if args.limit.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
        }
        Ok(())
    })
}

/// `GET <base>/api/v2<path>` with an API key; the answer's JSON.
fn get_json(base: &str, api_key: Option<&str>, path: &str) -> anyhow::Result<serde_json::Value> {
    let key = api_key.context("--server needs an API key (SPOOL_API_KEY or --api-key)")?;
    let url = format!("{}/api/v2{path}", base.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(&url)
            .header("x-api-key", key)
            .send()
            .await
            .with_context(|| format!("reaching {base}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "the server answered {status}: {text}");
        Ok::<_, anyhow::Error>(serde_json::from_str(&text)?)
    })
}

/// `spool cluster status --server URL`: the server's log, its node, and the partitions of a
/// shared log with their holders, epochs and heads; `--json` prints the answer as it is.
pub fn cluster_status(server: &str, api_key: Option<&str>, json: bool) -> anyhow::Result<()> {
    let v = get_json(server, api_key, "/admin/cluster")?;
    if json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "log: {}   node: {}   applied seq: {}",
        v["log"].as_str().unwrap_or("?"),
        v["node_id"].as_str().unwrap_or("-"),
        v["applied_seq"]
    );
    let parts = v["partitions"].as_array().cloned().unwrap_or_default();
    if parts.is_empty() {
        println!("no partitions (a log of one process)");
    }
    for p in parts {
        println!(
            "partition {:>3}  epoch {:>5}  head {:>10}  owner {}{}  lease {}",
            p["partition"],
            p["epoch"],
            p["head"],
            p["owner"].as_str().unwrap_or("-"),
            if p["held_here"].as_bool() == Some(true) { " (this node)" } else { "" },
            match p["lease_expires_in_ms"].as_i64() {
                Some(ms) if ms >= 0 => format!("expires in {:.1} s", ms as f64 / 1000.0),
                Some(ms) => format!("expired {:.1} s ago", -ms as f64 / 1000.0),
                None => "-".to_string(),
            }
        );
    }
    for n in v["nodes"].as_array().cloned().unwrap_or_default() {
        println!(
            "node {}  at {}  seen {:.1} s ago",
            n["node_id"].as_str().unwrap_or("?"),
            n["advertise_url"].as_str().unwrap_or("?"),
            n["seen_ms_ago"].as_f64().unwrap_or(f64::NAN) / 1000.0
        );
    }
    Ok(())
}
