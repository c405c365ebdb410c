//! Runs every scenario in `engine-spec/scenarios/`: given (commands or events), when
//! (commands), then the events, errors, state and effects, compared with the expected text
//! below the file's `---- expect` line. `UPDATE_EXPECT=1` rewrites that part after a reviewed
//! change of behaviour.
//!
//! Lines: `given <command json>` runs a command as setup (its output is not shown);
//! `when <command json>` runs a command and shows what it did; `# …` comments.
//! In command JSON, `$index`, `$key` and `$deletion` stand for the last index, the last API
//! key and that index's deletion id.

#![allow(clippy::disallowed_methods)] // tests read their environment
use spool_core::*;
use spool_model::{Envelope, FORMAT_VERSION};
use std::fmt::Write;
use std::path::{Path, PathBuf};

const BASE_MS: u64 = 1_764_000_000_000;

struct Run {
    state: State,
    step: u64,
    last_index: Option<String>,
    last_key: Option<String>,
    last_job: Option<String>,
    last_webhook: Option<String>,
    last_prompt: Option<String>,
    last_run: Option<String>,
    last_automation: Option<String>,
}

impl Run {
    fn substitute(&self, json: &str) -> String {
        let mut s = json.to_string();
        if let Some(i) = &self.last_index {
            s = s.replace("$index", i);
            let deletion = self
                .state
                .indexes
                .values()
                .find(|x| &x.index_id.to_string() == i)
                .and_then(|x| x.deletion.as_ref())
                .map(|d| d.deletion_id.to_string());
            if let Some(d) = deletion {
                s = s.replace("$deletion", &d);
            }
        }
        if let Some(k) = &self.last_key {
            s = s.replace("$key", k);
        }
        if let Some(j) = &self.last_job {
            s = s.replace("$job", j);
        }
        if let Some(w) = &self.last_webhook {
            s = s.replace("$webhook", w);
        }
        if let Some(p) = &self.last_prompt {
            s = s.replace("$prompt", p);
        }
        if let Some(r) = &self.last_run {
            s = s.replace("$run", r);
        }
        if let Some(a) = &self.last_automation {
            s = s.replace("$auto", a);
        }
        s
    }

    fn exec(&mut self, json: &str, out: Option<&mut String>) {
        self.step += 1;
        let json = self.substitute(json);
        let cmd: Command = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad command {json}: {e}"));
        let now = BASE_MS + self.step * 1000;
        let mut ctx = Ctx::new(now, u128::from(self.step));
        let result = decide(&self.state, &cmd, &mut ctx);
        let mut text = String::new();
        writeln!(text, "when {}", serde_json::to_string(&cmd.redacted()).unwrap()).unwrap();
        match result {
            Err(e) => {
                writeln!(text, "  error: {e:?}").unwrap();
            }
            Ok(decision) => {
                if decision.is_empty() {
                    writeln!(text, "  events: none").unwrap();
                }
                for s in &decision.streams {
                    for ev in &s.events {
                        let seq = self.state.applied_seq + 1;
                        let env = Envelope {
                            seq,
                            stream: s.stream.clone(),
                            at_ms: now,
                            format_version: FORMAT_VERSION,
                            event: ev.clone(),
                        };
                        writeln!(text, "  event {} {} {}", s.stream, ev.kind(), serde_json::to_string(ev).unwrap())
                            .unwrap();
                        evolve(&mut self.state, &env);
                    }
                }
                match decision.outcome {
                    Outcome::Index(id) => self.last_index = Some(id.to_string()),
                    Outcome::ApiKey(id) => self.last_key = Some(id.to_string()),
                    Outcome::Connector(_) => {}
                    Outcome::Import(id) => self.last_job = Some(id.to_string()),
                    Outcome::Webhook(id) => self.last_webhook = Some(id.to_string()),
                    Outcome::Prompt(id) => self.last_prompt = Some(id.to_string()),
                    Outcome::PromptRun(id) | Outcome::SegmentRetry(id, _) => self.last_run = Some(id.to_string()),
                    Outcome::Delivery(_)
                    | Outcome::Video(_)
                    | Outcome::Export(_)
                    | Outcome::Catalog(_)
                    | Outcome::Done => {}
                    Outcome::Automation(id) => self.last_automation = Some(id.to_string()),
                }
                writeln!(text, "  outcome: {:?}", decision.outcome).unwrap();
            }
        }
        text.push_str(&render_state(&self.state));
        for e in pending_effects(&self.state) {
            writeln!(text, "  effect {}", serde_json::to_string(&e).unwrap()).unwrap();
        }
        if let Some(out) = out {
            out.push_str(&text);
        }
    }
}

fn render_state(state: &State) -> String {
    let mut t = String::new();
    for a in state.automations.values() {
        let found: Vec<&str> = a.found.keys().map(String::as_str).collect();
        writeln!(
            t,
            "  state automation {} kind={} active={} listing_due={} listing={} manifest={} found={:?} last_job={:?} jobs_ended={} error={:?}",
            a.automation_id,
            a.kind().as_str(),
            a.active(),
            a.listing_due,
            a.listing,
            a.manifest.len(),
            found,
            a.last_import_job_id.map(|j| j.to_string()),
            a.jobs_ended.len(),
            a.last_error,
        )
        .unwrap();
    }
    for (job, e) in &state.automation_jobs {
        writeln!(
            t,
            "  state execution {job} {} run={:?} code={:?}",
            e.status(),
            e.run_id.map(|r| r.to_string()),
            e.error_code
        )
        .unwrap();
    }
    for (due, timer) in &state.timers {
        writeln!(t, "  timer {due} {}", serde_json::to_string(timer).unwrap()).unwrap();
    }
    for r in state.prompt_runs.values() {
        use spool_core::machines::prompt_run::TaskStatus as T;
        writeln!(
            t,
            "  state run {} status={} videos={} segments={} completed={} failed={} pending={} started={} waiting={} stop={}",
            r.run_id,
            r.status.as_str(),
            r.videos.len(),
            r.segments.len(),
            r.completed_segments,
            r.failed_segments,
            r.tasks.count(T::Pending),
            r.tasks.count(T::Started),
            r.tasks.count(T::Waiting),
            r.stop.is_some()
        )
        .unwrap();
    }
    for p in state.prompts.values() {
        writeln!(
            t,
            "  state prompt {} name={:?} schema={} video_level={} deleted={}",
            p.prompt_id,
            p.name,
            p.json_schema,
            p.video_level.is_some(),
            p.deleted_at_ms.is_some()
        )
        .unwrap();
    }
    for i in state.indexes.values() {
        let deletion = match &i.deletion {
            None => "none".to_string(),
            Some(d) => format!("{} {}", d.stage.as_str(), d.deletion_id),
        };
        writeln!(t, "  state index {} name={:?} deletion={deletion}", i.index_id, i.name).unwrap();
    }
    for c in state.connectors.values() {
        writeln!(
            t,
            "  state connector {} provider={} name={:?} scopes={:?} import_mode={} export_base_path={:?} status={} credentials={} test={:?} deleted={}",
            c.connector_id,
            c.provider.as_str(),
            c.name,
            c.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            c.import_mode.as_str(),
            c.export_base_path,
            c.status(),
            if c.credentials.is_some() { "sealed" } else { "none" },
            c.last_test.as_ref().map(|t| (t.success, t.error.clone())),
            c.deleted_at_ms.is_some()
        )
        .unwrap();
    }
    for j in state.imports.values() {
        writeln!(
            t,
            "  state job {} status={} scan_done={} imported={} failed={} skipped={} open={:?}",
            j.job_id,
            j.status.as_str(),
            j.scan_done,
            j.imported,
            j.failed,
            j.skipped,
            j.files_in(spool_core::imports::FileStatus::Pending)
                .chain(j.files_in(spool_core::imports::FileStatus::Started))
                .collect::<std::collections::BTreeSet<u32>>()
        )
        .unwrap();
        // The job's own files and its finished ones (rows the fold kept), in id order.
        let mut files: Vec<spool_core::imports::ImportFile> = j.files.values().cloned().collect();
        for s in [spool_core::imports::FileStatus::Imported, spool_core::imports::FileStatus::Skipped] {
            files.extend(state.rows.finished_files(&j.job_id, s, usize::MAX).iter().map(|f| (**f).clone()));
        }
        files.sort_by_key(|f| f.file.file_id);
        for f in &files {
            writeln!(
                t,
                "    file {} {} {} attempts={} skip={:?} failure={:?}",
                f.file.file_id,
                f.file.path,
                f.status.as_str(),
                f.attempts,
                f.file.skip_reason,
                f.failure.as_ref().map(|x| x.code.clone())
            )
            .unwrap();
        }
    }
    for (id, (_, row)) in &state.rows.videos {
        // A video is a row the fold emitted (`spool_core::rows`), kept by this state.
        writeln!(t, "  state video {} index={} title={:?} bytes={}", id, row.index_id, row.title, row.size_bytes)
            .unwrap();
    }
    for k in state.api_keys.values() {
        writeln!(
            t,
            "  state key {} name={:?} scopes={:?} prefix={} revoked={} expires={:?} last_used={:?}",
            k.key_id,
            k.name,
            decide::scope_names(&k.scopes),
            k.key_prefix,
            k.revoked_at_ms.is_some(),
            k.expires_at_ms,
            k.last_used_at_ms
        )
        .unwrap();
    }
    t
}

fn check(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap();
    let (script, expected) = match text.split_once("\n---- expect\n") {
        Some((s, e)) => (s.to_string(), e.to_string()),
        None => (text.trim_end().to_string(), String::new()),
    };
    let mut run = Run {
        state: State::kept_rows(),
        step: 0,
        last_index: None,
        last_key: None,
        last_job: None,
        last_webhook: None,
        last_prompt: None,
        last_run: None,
        last_automation: None,
    };
    let mut actual = String::new();
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(c) = line.strip_prefix("given ") {
            run.exec(c, None);
        } else if let Some(c) = line.strip_prefix("when ") {
            run.exec(c, Some(&mut actual));
        } else {
            panic!("{}: cannot read line {line:?}", path.display());
        }
    }
    if actual == expected {
        return Ok(());
    }
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(path, format!("{script}\n---- expect\n{actual}")).unwrap();
        return Ok(());
    }
    Err(format!("{}:\n--- expected\n{expected}\n--- actual\n{actual}", path.display()))
}

#[test]
fn scenarios() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../engine-spec/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "scenario"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected the scenario files in {}", dir.display());
    let failures: Vec<String> = files.iter().filter_map(|f| check(f).err()).collect();
    assert!(
        failures.is_empty(),
        "{} scenario(s) differ (UPDATE_EXPECT=1 after review):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn snapshots_round_trip_and_refold_is_deterministic() {
    let mut run = Run {
        state: State::kept_rows(),
        step: 0,
        last_index: None,
        last_key: None,
        last_job: None,
        last_webhook: None,
        last_prompt: None,
        last_run: None,
        last_automation: None,
    };
    run.exec(r#"{"CreateIndex":{"name":"a","user_id":"u"}}"#, None);
    run.exec(
        r#"{"CreateApiKey":{"name":"k","scopes":["write"],"expires_in_days":3,"secret":"sk_test_abcdefghijklmnop"}}"#,
        None,
    );
    run.exec(r#"{"DeleteIndex":{"index_id":"$index"}}"#, None);
    let bytes = run.state.to_snapshot();
    assert_eq!(State::from_snapshot(&bytes).as_ref(), Some(&run.state));
    let mut other = bytes.clone();
    other[0] ^= 0xff;
    assert_eq!(State::from_snapshot(&other), None, "another state format is ignored, not misread");
    assert_eq!(State::from_snapshot(&bytes[..bytes.len() - 1]), None);
}
