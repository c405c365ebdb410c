//! What the offline tools compute: the state of one stream after each event (`spool replay`)
//! and a full re-fold that checks decoding and determinism (`spool verify`).

use spool_core::{State, evolve, pending_effects};
use spool_log::{EventLog, READ_BATCH_MAX};
use spool_model::{Envelope, decode_envelope};

/// One step of `spool replay`: the event, the state it led to (borrowed: a replay keeps one
/// state, so its memory is the state's, not one copy per event) and the pending effects.
pub struct ReplayStep<'a> {
    pub envelope: Envelope,
    pub state: &'a State,
    pub effects: Vec<spool_core::Effect>,
}

/// What `spool replay` prints of one step (and the console's time slider shows): `header` (the
/// event's line), then the state of the aggregates the replay folded and the effects pending.
pub fn step_text(step: &ReplayStep<'_>, header: &str) -> String {
    use spool_model::time::rfc3339_ms;
    use std::fmt::Write;
    let mut out = String::new();
    let st = &step.state;
    let _ = writeln!(out, "{header}");
    for i in st.indexes.values() {
        let _ = writeln!(out, "    state: {i:?}");
    }
    for c in st.connectors.values() {
        let _ = writeln!(out, "    state: {c:?}");
    }
    for j in st.imports.values() {
        use spool_core::imports::FileStatus;
        let _ = writeln!(
            out,
            "    state: ImportJob {{ job_id: {}, status: {}, files: {}, pending: {}, importing: {}, retrying: {}, imported: {}, failed: {}, skipped: {}, cancel_requested: {} }}",
            j.job_id,
            j.status.as_str(),
            j.file_count,
            j.by_status.count(FileStatus::Pending),
            j.running(),
            j.by_status.count(FileStatus::Waiting),
            j.imported,
            j.failed,
            j.skipped,
            j.cancel_requested
        );
    }
    for r in st.prompt_runs.values() {
        let _ = writeln!(
            out,
            "    state: PromptRun {{ run_id: {}, status: {}, videos: {}, segments: {}, completed_segments: {}, failed_segments: {} }}",
            r.run_id,
            r.status.as_str(),
            r.videos.len(),
            r.segments.len(),
            r.completed_segments,
            r.failed_segments
        );
    }
    for e in st.exports.values() {
        let _ = writeln!(
            out,
            "    state: Export {{ export_id: {}, status: {}, attempts: {}, error: {:?} }}",
            e.export_id,
            e.status.as_str(),
            e.attempts,
            e.error
        );
    }
    for k in st.api_keys.values() {
        let _ = writeln!(
            out,
            "    state: ApiKey {{ key_id: {}, name: {:?}, scopes: {:?}, key_prefix: {:?}, created_at: {}, expires_at: {:?}, revoked_at: {:?}, last_used_at: {:?} }}",
            k.key_id,
            k.name,
            spool_core::decide::scope_names(&k.scopes),
            k.key_prefix,
            rfc3339_ms(k.created_at_ms),
            k.expires_at_ms.map(rfc3339_ms),
            k.revoked_at_ms.map(rfc3339_ms),
            k.last_used_at_ms.map(rfc3339_ms)
        );
    }
    if step.effects.is_empty() {
        let _ = writeln!(out, "    effects: none");
    }
    for e in &step.effects {
        let _ = writeln!(out, "    effect: {e:?}");
    }
    out
}

/// Fold the events of one stream (up to `until` seq) and return the state after each. A job's
/// replay includes its files' streams (`job_…/fN`), where their starts and outcomes are.
/// The state a data directory's log folds to (its snapshot, then the events after it), as a
/// server would start from it.
pub fn fold_state(log: &dyn EventLog) -> Result<spool_core::State, spool_log::Error> {
    crate::fold::load_state(log)
}

/// The SHA-256 (hex) of the state the first `until` events fold to, from nothing (no
/// snapshot): what `spool verify --against` compares between two builds.
pub fn fold_digest(events: &[spool_model::Envelope], until: usize) -> String {
    use sha2::Digest;
    let st = spool_core::replay(spool_core::State::default(), events.iter().take(until));
    hex::encode(sha2::Sha256::digest(st.to_snapshot()))
}

/// `replay_stream` over events in hand (a bundle's): the stream's events (a job's with its
/// files'), folded from nothing, in order, up to `until`.
pub fn replay_events(
    events: impl IntoIterator<Item = spool_model::Envelope>,
    stream: &str,
    until: Option<u64>,
    mut each: impl FnMut(&ReplayStep<'_>) -> bool,
) -> usize {
    let is_job = stream.parse::<spool_model::ImportJobId>().is_ok();
    let children = format!("{stream}/");
    let mut state = State::default();
    let mut n = 0;
    for env in events {
        if until.is_some_and(|u| env.seq > u) {
            break;
        }
        if env.stream != stream && !(is_job && env.stream.starts_with(&children)) {
            continue;
        }
        evolve(&mut state, &env);
        let effects = spool_core::effect::pending_effects_for(&state, stream);
        n += 1;
        if !each(&ReplayStep { envelope: env, state: &state, effects }) {
            break;
        }
    }
    n
}

/// The streams one workflow's bundle holds: its own (a job's files' too), and the ones it
/// refers to: its index, connectors, prompt, videos, runs, and an automation's jobs.
/// Also the jobs whose imported files' videos belong to the bundle: their rows are read from the
/// table by [`bundle_job_videos`], off the state's lock.
pub fn bundle_streams(
    st: &State,
    subject: &str,
) -> (std::collections::BTreeSet<String>, Vec<spool_model::ImportJobId>) {
    use spool_model::*;
    let mut out = std::collections::BTreeSet::new();
    let mut jobs = Vec::new();
    out.insert(subject.to_string());
    let mut job = |out: &mut std::collections::BTreeSet<String>, j: &spool_core::machines::import_job::ImportJob| {
        out.insert(j.job_id.to_string());
        out.insert(j.index_id.to_string());
        out.insert(j.connector_id.to_string());
        for f in j.files.values() {
            out.extend(f.part_videos().into_iter().map(|v| v.to_string()));
        }
        jobs.push(j.job_id);
    };
    if let Some(j) = subject.parse::<ImportJobId>().ok().and_then(|id| st.imports.get(&id)) {
        job(&mut out, j);
    }
    let run = |out: &mut std::collections::BTreeSet<String>, r: &spool_core::machines::prompt_run::PromptRun| {
        out.insert(r.run_id.to_string());
        out.insert(r.prompt_id.to_string());
        if let Some(i) = r.index_id() {
            out.insert(i.to_string());
        }
        out.extend(r.videos.iter().map(|v| v.video_id.to_string()));
    };
    if let Some(r) = subject.parse::<PromptRunId>().ok().and_then(|id| st.prompt_runs.get(&id)) {
        run(&mut out, r);
    }
    if let Some(e) = subject.parse::<ExportId>().ok().and_then(|id| st.exports.get(&id)) {
        if let Some(i) = e.index_id {
            out.insert(i.to_string());
        }
        if let ExportDestination::Connector { connector_id, .. } = &e.destination {
            out.insert(connector_id.to_string());
        }
        for r in e.run_ids.iter().filter_map(|id| st.prompt_runs.get(id)) {
            run(&mut out, r);
        }
    }
    if let Some(a) = subject.parse::<AutomationId>().ok().and_then(|id| st.automations.get(&id)) {
        out.insert(a.index_id.to_string());
        match &a.config {
            AutomationConfig::Import { connector_id, prompt_id, .. } => {
                out.insert(connector_id.to_string());
                out.insert(prompt_id.to_string());
            }
            AutomationConfig::Export { connector_id, .. } => {
                out.insert(connector_id.to_string());
            }
        }
        for (job_id, e) in st.automation_jobs.iter().filter(|(_, e)| e.automation_id == a.automation_id) {
            if let Some(j) = st.imports.get(job_id) {
                job(&mut out, j);
            }
            if let Some(r) = e.run_id.and_then(|id| st.prompt_runs.get(&id)) {
                run(&mut out, r);
            }
        }
    }
    out.retain(|s| !never_bundled(s));
    (out, jobs)
}

/// The videos of the bundle's jobs' imported files (rows of the `job_files` table), added to its
/// streams.
pub fn bundle_job_videos<L: EventLog + ?Sized>(
    log: &L,
    jobs: &[spool_model::ImportJobId],
    streams: &mut std::collections::BTreeSet<String>,
) -> Result<(), spool_log::Error> {
    for job_id in jobs {
        for f in crate::rows::read_job_files(log, job_id, spool_core::imports::FileStatus::Imported, 0, usize::MAX)? {
            streams.extend(f.part_videos().into_iter().map(|v| v.to_string()));
        }
    }
    Ok(())
}

/// API keys (their hashes), webhooks (their sealed secrets) and deliveries are never in a
/// bundle, also when one is named as the subject.
pub fn never_bundled(stream: &str) -> bool {
    stream.parse::<spool_model::ApiKeyId>().is_ok()
        || stream.parse::<spool_model::WebhookId>().is_ok()
        || stream.parse::<spool_model::DeliveryId>().is_ok()
}

/// An event as a bundle holds it: connector credentials (sealed, but still secret material)
/// are removed.
pub fn without_secrets(mut event: spool_model::Event) -> spool_model::Event {
    use spool_model::Event as E;
    if let E::ConnectorCreated { credentials, .. } | E::ConnectorUpdated { credentials, .. } = &mut event {
        *credentials = None;
    }
    event
}

/// The first line of a bundle file.
pub const BUNDLE_FORMAT: &str = "spool.bundle.v1";

/// A bundle of one workflow (`spool bundle`, `GET /admin/bundles/{id}`): a JSON header line,
/// then one line per event of its streams (the hex of the record), in log order, connector
/// credentials removed. `None` when the id has no events.
///
/// `streams` is [`bundle_streams`] of the subject, computed by the caller under the state's
/// read lock (a set of names, not a copy of the state); the log scan runs without any lock.
/// Past `events_max` events the bundle is refused (`Error::Invalid`), so one request never
/// holds an unbounded text.
pub fn bundle_text(
    log: &dyn EventLog,
    streams: &std::collections::BTreeSet<String>,
    id: &str,
    events_max: usize,
) -> Result<Option<(usize, usize, String)>, spool_log::Error> {
    let is_job = id.parse::<spool_model::ImportJobId>().is_ok();
    let children = format!("{id}/");
    let mut lines = Vec::new();
    let mut from = 1;
    loop {
        let batch = log.read_from(from, READ_BATCH_MAX)?;
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for mut env in batch {
            if (streams.contains(&env.stream) || (is_job && env.stream.starts_with(&children)))
                && !never_bundled(&env.stream)
            {
                if lines.len() >= events_max {
                    return Err(spool_log::Error::Invalid(format!(
                        "{id} has more than {events_max} events; write it with `spool bundle` on the data directory"
                    )));
                }
                env.event = without_secrets(env.event);
                // Encoding a record that was just decoded cannot fail.
                lines.push(hex::encode(spool_model::encode_envelope(&env).unwrap_or_default()));
            }
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let header = serde_json::json!({
        "format": BUNDLE_FORMAT,
        "subject": id,
        "events": lines.len(),
        "streams": streams,
        "written_by": concat!("spool ", env!("CARGO_PKG_VERSION")),
        "secrets": "connector credentials removed",
    });
    Ok(Some((lines.len(), streams.len(), format!("{header}\n{}\n", lines.join("\n")))))
}

/// An envelope as the admin log routes and `spool log --json` show it, sealed values replaced
/// by `"<sealed>"` (their ciphertext never leaves the server).
/// An event's line as `spool replay` prints it (sequence number, time, stream, kind, body), its
/// sealed values shown as `"<sealed>"`: what a route may answer.
pub fn redacted_line(env: &spool_model::Envelope) -> String {
    let v = envelope_json(env);
    event_line(env, v["event"].as_object().and_then(|o| o.values().next().cloned()))
}

/// An event's line: sequence number, time, stream, kind, then `body` (its fields' JSON).
pub fn event_line(env: &spool_model::Envelope, body: Option<serde_json::Value>) -> String {
    format!(
        "{:>8}  {}  {:<32}  {:<24} {}",
        env.seq,
        spool_model::time::rfc3339_ms(env.at_ms),
        env.stream,
        env.event.kind(),
        body.map(|b| b.to_string()).unwrap_or_default()
    )
}

/// Cut every list of records in `v` (an array of objects or arrays, at any depth) to its first
/// `max` items; whether any was cut. Arrays of numbers or strings (a digest's bytes) are kept.
pub fn cut_arrays(v: &mut serde_json::Value, max: usize) -> bool {
    match v {
        serde_json::Value::Array(a) => {
            let records = a.first().is_some_and(|x| x.is_object() || x.is_array());
            let mut cut = records && a.len() > max;
            if cut {
                a.truncate(max);
            }
            for item in a.iter_mut() {
                cut |= cut_arrays(item, max);
            }
            cut
        }
        serde_json::Value::Object(m) => {
            // Every value is visited (no short circuit): each list in it is cut.
            let mut cut = false;
            for item in m.values_mut() {
                cut |= cut_arrays(item, max);
            }
            cut
        }
        _ => false,
    }
}

pub fn envelope_json(env: &spool_model::Envelope) -> serde_json::Value {
    fn redact(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key("ciphertext") && m.contains_key("nonce") {
                    *v = serde_json::Value::from("<sealed>");
                    return;
                }
                m.values_mut().for_each(redact);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
            // A sealed value's JSON form (`Sealed`'s serde text).
            serde_json::Value::String(s) if s.starts_with("sealed.v1.") => *v = serde_json::Value::from("<sealed>"),
            _ => {}
        }
    }
    let mut event = serde_json::to_value(&env.event).unwrap_or_default();
    redact(&mut event);
    serde_json::json!({
        "seq": env.seq,
        "stream": env.stream,
        "at": spool_model::time::rfc3339_ms(env.at_ms),
        "kind": env.event.kind(),
        "event": event,
    })
}

/// `spool replay`: each step of one stream (a job's with its files'), folded from nothing, in
/// order, up to `until`, handed to `each` (which returns false to stop). Returns the steps.
pub fn replay_stream(
    log: &dyn EventLog,
    stream: &str,
    until: Option<u64>,
    mut each: impl FnMut(&ReplayStep<'_>) -> bool,
) -> Result<usize, spool_log::Error> {
    let mut state = State::default();
    let mut n = 0;
    let mut step = |state: &mut State, env: Envelope| {
        if crate::fold::fold_one(log, state, &env).is_err() {
            evolve(state, &env);
        }
        let effects = spool_core::effect::pending_effects_for(state, stream);
        n += 1;
        each(&ReplayStep { envelope: env, state, effects })
    };
    if stream.parse::<spool_model::ImportJobId>().is_ok() {
        // The job and its files, in log order: a scan of the log (an offline tool's cost).
        let children = format!("{stream}/");
        let mut from = 1;
        loop {
            let batch = log.read_from(from, READ_BATCH_MAX)?;
            let Some(last) = batch.last() else { break };
            from = last.seq + 1;
            for env in batch {
                if until.is_some_and(|u| env.seq > u) {
                    return Ok(n);
                }
                if env.stream != stream && !env.stream.starts_with(&children) {
                    continue;
                }
                if !step(&mut state, env) {
                    return Ok(n);
                }
            }
        }
        return Ok(n);
    }
    let mut version = 0;
    loop {
        let batch = log.read_stream(stream, version, READ_BATCH_MAX)?;
        if batch.is_empty() {
            return Ok(n);
        }
        version += batch.len() as u64;
        for env in batch {
            if until.is_some_and(|u| env.seq > u) {
                return Ok(n);
            }
            if !step(&mut state, env) {
                return Ok(n);
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub events: u64,
    pub streams: u64,
    pub decode_errors: Vec<String>,
    pub problems: Vec<String>,
    /// Whether a snapshot of this state format was there to compare with.
    pub snapshot_compared: bool,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.decode_errors.is_empty() && self.problems.is_empty()
    }
}

/// Re-fold everything; check every record decodes, sequence numbers have no gaps, the stream
/// index agrees with the records, and the state the server wrote as its snapshot (another
/// process, another run) equals this fold at the snapshot's sequence number: that comparison is
/// what can catch a non-deterministic fold.
pub fn verify(log: &dyn spool_log::RawLog) -> Result<VerifyReport, spool_log::Error> {
    let mut report = VerifyReport::default();
    let snapshot = log.snapshot(crate::runtime::SNAPSHOT_NAME)?;
    let mut a = State::default();
    let mut compared = false;
    // Each stream's number of events, counted here (the state keeps none).
    let mut versions: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut expected_seq = 1;
    let mut seq = 1;
    loop {
        let batch = log.read_raw(seq, READ_BATCH_MAX)?;
        let Some((last, _)) = batch.last() else { break };
        seq = last + 1;
        for (key, bytes) in batch {
            if key != expected_seq {
                report.problems.push(format!("gap: expected seq {expected_seq}, found {key}"));
            }
            expected_seq = key + 1;
            report.events += 1;
            match decode_envelope(&bytes) {
                Err(e) => report.decode_errors.push(format!("seq {key}: {e}")),
                Ok(env) => {
                    if env.seq != key {
                        report.problems.push(format!("record at {key} says seq {}", env.seq));
                    }
                    *versions.entry(env.stream.clone()).or_insert(0u64) += 1;
                    if let Err(e) = crate::fold::fold_one(log, &mut a, &env) {
                        report.problems.push(format!("seq {key}: reading the rows its fold reads: {e}"));
                    }
                    if let Some(s) = &snapshot
                        && s.at_seq == key
                        && let Some(snap) = State::from_snapshot(&s.bytes)
                    {
                        compared = true;
                        if snap != a {
                            report.problems.push(format!(
                                "the snapshot at seq {key} (written by the server) differs from a fresh fold: the fold is not deterministic, or the snapshot is damaged"
                            ));
                        }
                    }
                }
            }
        }
    }
    report.snapshot_compared = compared;
    let _ = pending_effects(&a);
    let mut after = None::<String>;
    loop {
        let streams = log.streams(after.as_deref(), READ_BATCH_MAX)?;
        let Some((last, _)) = streams.last().cloned() else { break };
        for (name, version) in streams {
            report.streams += 1;
            let seen = versions.get(&name).copied().unwrap_or(0);
            if seen != version {
                report.problems.push(format!("stream {name}: index says {version} events, the fold saw {seen}"));
            }
        }
        after = Some(last);
    }
    if log.head() != expected_seq - 1 {
        report.problems.push(format!("head is {}, the last record is {}", log.head(), expected_seq - 1));
    }
    Ok(report)
}
