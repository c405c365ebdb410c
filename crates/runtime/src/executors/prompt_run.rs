//! The prompt run machine's executor: list a run's videos, read a video's media for segment
//! boundaries, and run one task on the run's processor, validating the answer against the
//! prompt's schema before it is recorded (engine-spec/processors.md).
//!
//! Processors are named in the configuration (`[processors.<name>]`): `probe` (built in:
//! the segment's media facts) or `http` (an external worker Spool POSTs a signed request to).
//! Each processor has its own concurrency bound; an `http` call has a timeout and a bound on
//! the answer's size, and its retryable failures come back on durable timers (the core decides
//! the backoff and records it).

use crate::Runtime;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use spool_core::machines::prompt_run::{self as pr, PromptRunEffect};
use spool_core::{Command, DomainError, PromptRunCommand};
use spool_model::{CallUsage, FailureStage, MediaType, PromptRunId, RunTask, TaskAnswer, TaskFailure};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The built-in processor's name, and the default one.
pub const PROBE_PROCESSOR: &str = "probe";
/// Default timeout of an `http` processor call.
pub const HTTP_PROCESSOR_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);
/// Default calls in flight at once per `http` processor.
pub const HTTP_PROCESSOR_CONCURRENCY_DEFAULT: usize = 4;
/// Default bound of an `http` processor's answer.
pub const HTTP_PROCESSOR_RESPONSE_BYTES_DEFAULT: u64 = 1024 * 1024;
/// Calls in flight at once of the `probe` processor.
pub const PROBE_CONCURRENCY: usize = 64;
/// How long the media URL in a request stays valid.
pub const PROCESSOR_MEDIA_URL_TTL_SECS: u64 = 15 * 60;
/// Segment answers sent with one video-level request.
pub const VIDEO_LEVEL_SEGMENTS_MAX: usize = 500;
/// Parsed and compiled schemas kept (one or two per run that is running).
const SCHEMAS_KEPT_MAX: usize = 256;

/// One configured processor.
#[derive(Clone)]
pub enum ProcessorKind {
    Probe,
    Http { url: String, secret: String, timeout: Duration, response_bytes_max: u64 },
}

/// Never shows the secret.
impl std::fmt::Debug for ProcessorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessorKind::Probe => f.write_str("Probe"),
            ProcessorKind::Http { url, timeout, response_bytes_max, .. } => f
                .debug_struct("Http")
                .field("url", url)
                .field("secret", &"<redacted>")
                .field("timeout", timeout)
                .field("response_bytes_max", response_bytes_max)
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub kind: ProcessorKind,
    pub concurrency: usize,
}

/// The processors an operator configured (`[processors.<name>]`, `processors.default`).
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    pub processors: BTreeMap<String, ProcessorConfig>,
    /// The one a run that names none uses.
    pub default: String,
    /// The base a worker reaches Spool at, for media URLs (`public_url`, else the listen
    /// address over http).
    pub media_base_url: String,
    /// The `http` processor that writes prompt definitions (`processors.define`;
    /// `workflow.define`, `processors.md`), if any.
    pub define: Option<String>,
    /// The `embed` processor, if one is configured: it turns result texts, queries and images
    /// into vectors for semantic search (`engine-spec/search.md`).
    pub embedder: Option<EmbedderConfig>,
}

/// An `embed` processor (`[processors.<name>] kind = "embed"`, `engine-spec/processors.md`):
/// an http endpoint the operator runs, signed as an `http` processor is. It answers no tasks
/// (a run cannot name it).
#[derive(Clone)]
pub struct EmbedderConfig {
    pub name: String,
    pub url: String,
    pub secret: String,
    pub timeout: Duration,
    pub response_bytes_max: u64,
    pub concurrency: usize,
}

/// Never shows the secret.
impl std::fmt::Debug for EmbedderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedderConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EmbedderConfig {
    /// What the search projection records of the embedder its vectors came from: a digest of
    /// its name and URL (never the URL itself: it may carry a key). Another one rebuilds them.
    pub fn identity(&self) -> String {
        use sha2::Digest;
        let d = sha2::Sha256::digest(format!("{}\n{}", self.name, self.url).as_bytes());
        format!("{}:{}", self.name, hex::encode(&d[..8]))
    }
}

/// One input of an embedding request.
#[derive(Debug, Clone)]
pub enum EmbedInput {
    Text(String),
    /// An image, base64 (standard alphabet) as the caller sent it.
    Image(String),
}

/// Inputs in one request to the embedder at most.
pub const EMBED_INPUTS_MAX: usize = 64;
/// An `embed` processor's default `response_max_bytes`: 64 vectors of 4,096 numbers as JSON.
pub const EMBED_RESPONSE_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;
/// The longest vector an embedder may answer.
pub const EMBED_DIMS_MAX: usize = 4096;

impl Default for ProcessorSettings {
    fn default() -> Self {
        let mut processors = BTreeMap::new();
        processors.insert(
            PROBE_PROCESSOR.to_string(),
            ProcessorConfig { kind: ProcessorKind::Probe, concurrency: PROBE_CONCURRENCY },
        );
        ProcessorSettings {
            processors,
            default: PROBE_PROCESSOR.to_string(),
            media_base_url: "http://127.0.0.1:8080".into(),
            define: None,
            embedder: None,
        }
    }
}

impl ProcessorSettings {
    /// The processor a run's `processing_model` names (the default when it names none).
    pub fn resolve(&self, model: Option<&str>) -> Result<String, Vec<String>> {
        let name = model.map(str::trim).filter(|m| !m.is_empty()).unwrap_or(&self.default);
        if self.processors.contains_key(name) {
            Ok(name.to_string())
        } else {
            Err(self.processors.keys().cloned().collect())
        }
    }
}

/// The executor's resources: a semaphore per processor, the HTTP client, compiled schemas.
pub(crate) struct PromptRunExecutor {
    pub settings: ProcessorSettings,
    slots: HashMap<String, Arc<tokio::sync::Semaphore>>,
    embed_slots: Arc<tokio::sync::Semaphore>,
    client: reqwest::Client,
    /// A run's schemas (its segments' and its video level's), parsed and compiled once: a
    /// parse per task cost 5 % of `spool bench prompt-run`.
    schemas: Mutex<HashMap<(PromptRunId, bool), Arc<RunSchema>>>,
}

/// A run's schema as its requests carry it and as its answers are checked against it.
struct RunSchema {
    /// `null` when the text is not JSON.
    value: Value,
    validator: Result<Arc<spool_core::machines::prompt::schema::Validator>, String>,
}

impl PromptRunExecutor {
    pub fn new(settings: ProcessorSettings) -> Result<PromptRunExecutor, reqwest::Error> {
        let slots = settings
            .processors
            .iter()
            .map(|(n, p)| (n.clone(), Arc::new(tokio::sync::Semaphore::new(p.concurrency.max(1)))))
            .collect();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()?;
        let embed_slots =
            Arc::new(tokio::sync::Semaphore::new(settings.embedder.as_ref().map_or(1, |e| e.concurrency.max(1))));
        Ok(PromptRunExecutor { settings, slots, embed_slots, client, schemas: Mutex::new(HashMap::new()) })
    }

    fn validator(
        &self,
        run_id: PromptRunId,
        video_level: bool,
        schema: &str,
    ) -> Result<Arc<spool_core::machines::prompt::schema::Validator>, String> {
        self.schema(run_id, video_level, schema).validator.clone()
    }

    /// The run's schema of that kind, parsed and compiled on its first use.
    fn schema(&self, run_id: PromptRunId, video_level: bool, text: &str) -> Arc<RunSchema> {
        let key = (run_id, video_level);
        if let Some(v) = self.schemas.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return v.clone();
        }
        let parsed = serde_json::from_str::<Value>(text);
        let validator = match &parsed {
            Ok(value) => spool_core::machines::prompt::schema::compile(value).map(Arc::new),
            Err(e) => Err(format!("the prompt's schema is not JSON: {e}")),
        };
        let v = Arc::new(RunSchema { value: parsed.unwrap_or(Value::Null), validator });
        let mut cache = self.schemas.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= SCHEMAS_KEPT_MAX {
            cache.clear();
        }
        cache.insert(key, v.clone());
        v
    }
}

/// A processor request (`processors.md`), serialized as it is built: no JSON tree of it.
#[derive(serde::Serialize)]
struct TaskRequest<'a> {
    version: u32,
    kind: &'static str,
    run_id: String,
    task_id: String,
    attempt: u32,
    prompt: RequestPrompt<'a>,
    video: RequestVideo<'a>,
    segment: Option<RequestSegment<'a>>,
    segments: Option<&'a [Value]>,
    media_url: Option<String>,
    media_url_expires_at: String,
    image_embedding: bool,
}

#[derive(serde::Serialize)]
struct RequestPrompt<'a> {
    prompt_id: &'a str,
    name: &'a str,
    text: &'a str,
    json_schema: &'a Value,
}

#[derive(serde::Serialize)]
struct RequestVideo<'a> {
    video_id: &'a str,
    title: &'a str,
    media_type: &'static str,
    facts: Option<Value>,
}

#[derive(serde::Serialize)]
struct RequestSegment<'a> {
    segment_id: &'a str,
    start_time: f64,
    end_time: f64,
}

/// What a task asks the processor for: one segment's answer, or a video's over its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskKind {
    Segment,
    Video,
}

impl TaskKind {
    /// The request's `kind` (processor protocol).
    fn as_str(self) -> &'static str {
        match self {
            TaskKind::Segment => "segment",
            TaskKind::Video => "video",
        }
    }
}

/// What a task needs, read from the state under the lock (no copy of the run).
struct TaskSpec {
    processor: String,
    kind: TaskKind,
    prompt_id: String,
    prompt_name: String,
    prompt_text: String,
    schema: String,
    video_id: String,
    title: String,
    media_type: MediaType,
    media_path: Option<String>,
    facts: Option<spool_model::MediaFacts>,
    segment_id: Option<String>,
    range_us: (u64, u64),
    /// Video-level: the video's segment answers.
    segments: Vec<Value>,
    /// The run asks for the segment's image vector (`enable_image_embedding`).
    image_embedding: bool,
}

/// The video a task is about, and the answers it reads (`run_answers`): a video-level task's
/// are its video's first segments' that succeeded.
fn task_inputs(
    st: &spool_core::State,
    run_id: &PromptRunId,
    task: RunTask,
) -> Option<(spool_model::VideoId, Vec<spool_core::AnswerKey>)> {
    let r = st.prompt_runs.get(run_id)?;
    let rv = r.videos.get(r.task_video(task)? as usize)?;
    let mut keys = Vec::new();
    if let RunTask::Video(_) = task {
        for n in rv.segments().take(VIDEO_LEVEL_SEGMENTS_MAX) {
            if r.segments.get(n as usize).is_some_and(|s| s.task.status == pr::TaskStatus::Succeeded) {
                keys.push(spool_core::AnswerKey { run_id: *run_id, task: RunTask::Segment(n) });
            }
        }
    }
    Some((rv.video_id, keys))
}

/// `row`: the task's video's row, and `answers` those it reads (read before, from the tables:
/// [`task_inputs`]).
fn read_task(
    st: &spool_core::State,
    run_id: &PromptRunId,
    task: RunTask,
    row: Option<&spool_core::VideoRow>,
    answers: &spool_core::Answers,
) -> Option<TaskSpec> {
    let r = st.prompt_runs.get(run_id)?;
    let v = r.task_video(task)?;
    let rv = r.videos.get(v as usize)?;
    let video = row.filter(|row| st.video_of(rv.video_id, row).visible(st));
    let (kind, schema, prompt_text, segment_id, range_us, segments) = match task {
        RunTask::Segment(n) => {
            let s = r.segments.get(n as usize)?;
            let range = (s.range.start_us, s.range.end_us);
            (
                TaskKind::Segment,
                r.prompt.json_schema.clone(),
                r.prompt.prompt_text.clone(),
                Some(pr::segment_id(run_id, n)),
                range,
                Vec::new(),
            )
        }
        RunTask::Video(_) => {
            let vl = r.prompt.video_level.as_ref()?;
            let segs: Vec<Value> = rv
                .segments()
                .take(VIDEO_LEVEL_SEGMENTS_MAX)
                .filter_map(|n| {
                    let s = r.segments.get(n as usize)?;
                    let a = answers.get(&spool_core::AnswerKey { run_id: *run_id, task: RunTask::Segment(n) })?;
                    Some(json!({
                        "segment_id": pr::segment_id(run_id, n),
                        "start_time": s.range.start_us as f64 / 1e6,
                        "end_time": s.range.end_us as f64 / 1e6,
                        "metadata": serde_json::from_str::<Value>(&a.metadata_json).unwrap_or(Value::Null),
                        "metadata_text": a.metadata_text,
                    }))
                })
                .collect();
            let first = rv.segments().next().and_then(|n| r.segments.get(n as usize)).map_or(0, |s| s.range.start_us);
            let last = rv.segments().last().and_then(|n| r.segments.get(n as usize)).map_or(0, |s| s.range.end_us);
            (TaskKind::Video, vl.json_schema.clone(), vl.instructions_text.clone(), None, (first, last), segs)
        }
    };
    Some(TaskSpec {
        processor: r.settings.processor.clone(),
        kind,
        prompt_id: r.prompt_id.to_string(),
        prompt_name: r.prompt.name.clone(),
        prompt_text,
        schema,
        video_id: rv.video_id.to_string(),
        title: video.map(|v| v.title.clone()).unwrap_or_default(),
        media_type: rv.media_type,
        media_path: video.map(|v| v.media_path.clone()),
        facts: video.and_then(|v| v.facts.clone()),
        segment_id,
        range_us,
        segments,
        image_embedding: r.settings.enable_image_embedding && kind == TaskKind::Segment,
    })
}

fn failure(stage: FailureStage, code: &str, message: impl Into<String>, retryable: bool) -> TaskFailure {
    TaskFailure { stage, code: code.into(), message: message.into(), retryable, error_paths: Vec::new() }
}

/// The `probe` processor: the segment's media facts as the answer.
fn probe_answer(spec: &TaskSpec) -> (Value, String) {
    use spool_model::StreamKind;
    let (start, end) = (spec.range_us.0 as f64 / 1e6, spec.range_us.1 as f64 / 1e6);
    let duration = ((end - start) * 1000.0).round() / 1000.0;
    let f = spec.facts.as_ref();
    let video = f.and_then(|f| f.first(StreamKind::Video));
    let audio = f.and_then(|f| f.first(StreamKind::Audio));
    let mut m = json!({
        "media_type": spec.media_type.as_str(),
        "container": f.map(|f| f.container.clone()),
        "start_time": start,
        "end_time": end,
        "duration_seconds": duration,
        "bit_rate": f.and_then(|f| f.bit_rate),
        "video_codec": video.map(|s| s.codec.clone()),
        "width": video.and_then(|s| s.width),
        "height": video.and_then(|s| s.height),
        "frame_rate": video.and_then(|s| s.frame_rate).map(|(n, d)| ((n as f64 / d.max(1) as f64) * 1000.0).round() / 1000.0),
        "audio_codec": audio.map(|s| s.codec.clone()),
        "sample_rate": audio.and_then(|s| s.sample_rate),
        "channels": audio.and_then(|s| s.channels),
    });
    if spec.kind == TaskKind::Video {
        m["segment_count"] = json!(spec.segments.len());
    }
    let what = match (video, audio) {
        (Some(v), Some(a)) => {
            format!("{} {}x{} video with {} audio", v.codec, v.width.unwrap_or(0), v.height.unwrap_or(0), a.codec)
        }
        (Some(v), None) if spec.media_type == MediaType::Image => {
            format!("{} image of {}x{}", v.codec, v.width.unwrap_or(0), v.height.unwrap_or(0))
        }
        (Some(v), None) => {
            format!("{} {}x{} video without audio", v.codec, v.width.unwrap_or(0), v.height.unwrap_or(0))
        }
        (None, Some(a)) => {
            format!("{} audio, {} Hz, {} channel(s)", a.codec, a.sample_rate.unwrap_or(0), a.channels.unwrap_or(0))
        }
        (None, None) => "media without readable streams".to_string(),
    };
    let text = match spec.kind {
        TaskKind::Video => format!("{}: {what}, {} segments over {duration} s.", spec.title, spec.segments.len()),
        TaskKind::Segment => format!("{} from {start} s to {end} s ({duration} s): {what}.", spec.title),
    };
    (m, text)
}

/// The signature headers of a processor request: Standard Webhooks' scheme, so a worker can
/// verify with any Standard Webhooks library (`whsec_` secrets are base64-decoded, others
/// are used as their UTF-8 bytes).
pub fn sign_request(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => {
            base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_else(|_| secret.as_bytes().to_vec())
        }
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// A task's outcome: its answer, what the call cost and the segment's image vector (little-endian
/// `f32`s; empty: none), or why it failed.
type Outcome = Result<(TaskAnswer, CallUsage, Vec<u8>), (TaskFailure, Option<CallUsage>)>;

tokio::task_local! {
    /// The processor slot of the prompt task running in this effect task (taken by the
    /// executor once the processor answered).
    pub(crate) static PROCESSOR_SLOT: std::cell::RefCell<Option<tokio::sync::OwnedSemaphorePermit>>;
}

impl Runtime {
    /// The processor slot a prompt task needs before it runs (`None` for other effects, and for
    /// a task whose processor is not configured: it fails without a call).
    pub(crate) async fn processor_slot(
        &self,
        effect: &spool_core::Effect,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let spool_core::Effect::PromptRun(PromptRunEffect::RunTask { run_id, .. }) = effect else { return None };
        let processor = self.read(|st| st.prompt_runs.get(run_id).map(|r| r.settings.processor.clone()))?;
        let slots = self.executors.prompt_runs.slots.get(&processor)?.clone();
        slots.acquire_owned().await.ok()
    }

    pub(super) async fn run_prompt_effect(
        self: &Arc<Self>,
        effect: &PromptRunEffect,
    ) -> Result<(), crate::RuntimeError> {
        match effect {
            PromptRunEffect::ListRunVideos { run_id } => {
                self.execute(Command::PromptRun(PromptRunCommand::AddRunVideos { run_id: *run_id })).await.map(|_| ())
            }
            PromptRunEffect::FinishRun { run_id } => {
                self.execute(Command::PromptRun(PromptRunCommand::FinishRun { run_id: *run_id })).await.map(|_| ())
            }
            PromptRunEffect::PlanVideo { run_id, video } => self.plan_video(run_id, *video).await,
            PromptRunEffect::RunTask { run_id, task, attempt } => self.run_task(run_id, *task, *attempt).await,
        }
    }

    /// Read the media for boundaries when the run's segmentation wants them.
    async fn plan_video(self: &Arc<Self>, run_id: &PromptRunId, video: u32) -> Result<(), crate::RuntimeError> {
        let video_id = self.read(|st| st.prompt_runs.get(run_id)?.videos.get(video as usize).map(|rv| rv.video_id));
        let row = match video_id {
            Some(id) => self.video_row(&id)?,
            None => None,
        };
        let spec = self.read(|st| {
            let r = st.prompt_runs.get(run_id)?;
            let rv = r.videos.get(video as usize)?;
            let row = row.as_ref()?;
            let v = st.video_of(rv.video_id, row);
            let wants = pr::plan::wants_boundaries(&r.settings, v.media_type);
            Some((wants, v.media_type, row.media_path.clone(), v.range_us))
        });
        let local = match &spec {
            Some((true, _, path, _)) => self.media_local(path).await,
            _ => None,
        };
        let (boundaries, source) = match (spec, local) {
            (Some((true, media_type, path, range)), Some(local)) => {
                let ext = spool_core::imports::extension(&path);
                let found = tokio::task::spawn_blocking(move || {
                    let file = &local.path;
                    match media_type {
                        MediaType::Audio => {
                            spool_media::boundaries::silences(file, &ext, range).map(|b| (b, "silence"))
                        }
                        _ => spool_media::boundaries::video_keyframes(file)
                            .map(|b| (b, "keyframes"))
                            .or_else(|| spool_media::boundaries::silences(file, &ext, range).map(|b| (b, "silence"))),
                    }
                })
                .await
                .ok()
                .flatten();
                match found {
                    Some((b, s)) => (Some(b), s),
                    None => (Some(Vec::new()), "none"),
                }
            }
            _ => (None, "none"),
        };
        let cmd = PromptRunCommand::RecordVideoAnalysis {
            run_id: *run_id,
            video,
            boundaries_us: boundaries,
            source: source.into(),
        };
        self.execute(Command::PromptRun(cmd)).await.map(|_| ())
    }

    async fn run_task(
        self: &Arc<Self>,
        run_id: &PromptRunId,
        task: RunTask,
        attempt: u32,
    ) -> Result<(), crate::RuntimeError> {
        let Some((video_id, keys)) = self.read(|st| task_inputs(st, run_id, task)) else { return Ok(()) };
        let row = self.video_row(&video_id)?;
        let answers = if keys.is_empty() { Default::default() } else { self.run_answers(keys)? };
        let Some(mut spec) = self.read(|st| read_task(st, run_id, task, row.as_deref(), &answers)) else {
            return Ok(());
        };
        let exec = &self.executors.prompt_runs;
        // A segment's image vector is asked for only where it can be searched (an embedder).
        spec.image_embedding &= exec.settings.embedder.is_some();
        if !exec.slots.contains_key(&spec.processor) {
            // A processor removed from the configuration since the run began.
            let f = failure(
                FailureStage::Processing,
                "processor_not_configured",
                format!("the processor {:?} is not configured", spec.processor),
                false,
            );
            self.start_and_record(run_id, task, attempt, Err((f, None))).await?;
            return Ok(());
        }
        // The start is durable before the processor is called (its slot is held already, see
        // `processor_slot`): after a cancel nothing new reaches a processor.
        match self.execute(Command::PromptRun(PromptRunCommand::StartTask { run_id: *run_id, task, attempt })).await {
            Ok(_) => {}
            Err(crate::RuntimeError::Domain(DomainError::Stale(_))) => return Ok(()),
            Err(e) => return Err(e),
        }
        let outcome = self.call_processor(run_id, task, attempt, &spec).await;
        // The processor answered: its slot goes to the next task while this outcome commits.
        let _ = PROCESSOR_SLOT.try_with(|slot| slot.borrow_mut().take());
        self.record_outcome(run_id, task, attempt, outcome).await
    }

    async fn start_and_record(
        &self,
        run_id: &PromptRunId,
        task: RunTask,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<(), crate::RuntimeError> {
        match self.execute(Command::PromptRun(PromptRunCommand::StartTask { run_id: *run_id, task, attempt })).await {
            Ok(_) => {}
            Err(crate::RuntimeError::Domain(DomainError::Stale(_))) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.record_outcome(run_id, task, attempt, outcome).await
    }

    async fn record_outcome(
        &self,
        run_id: &PromptRunId,
        task: RunTask,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<(), crate::RuntimeError> {
        let cmd = match outcome {
            Ok((answer, usage, image_vector_le)) => {
                PromptRunCommand::RecordTaskSucceeded { run_id: *run_id, task, attempt, answer, usage, image_vector_le }
            }
            Err((failure, usage)) => {
                PromptRunCommand::RecordTaskFailed { run_id: *run_id, task, attempt, failure, usage }
            }
        };
        self.execute(Command::PromptRun(cmd)).await.map(|_| ())
    }

    async fn call_processor(&self, run_id: &PromptRunId, task: RunTask, attempt: u32, spec: &TaskSpec) -> Outcome {
        let started = Instant::now();
        if spec.media_path.is_none() {
            return Err((
                failure(FailureStage::Processing, "video_not_found", format!("video {} is gone", spec.video_id), false),
                None,
            ));
        }
        let exec = &self.executors.prompt_runs;
        let Some(cfg) = exec.settings.processors.get(&spec.processor) else {
            return Err((
                failure(FailureStage::Processing, "processor_not_configured", "the processor is not configured", false),
                None,
            ));
        };
        let (metadata, text, usage, image_vector) = match &cfg.kind {
            ProcessorKind::Probe => {
                let (m, t) = probe_answer(spec);
                let usage = CallUsage {
                    input_tokens: 0,
                    output_tokens: 0,
                    duration_ms: spool_model::num::ms(started.elapsed()),
                };
                (m, t, usage, Vec::new())
            }
            ProcessorKind::Http { url, secret, timeout, response_bytes_max } => {
                let body = self.request_body(run_id, task, attempt, spec);
                // The same (task, attempt) always has the same message id: a worker can tell a
                // repeated call from a new attempt.
                let id = format!("msg_{}_{attempt}", task_id(run_id, task, spec));
                let call = Call { url, secret, id: &id, timeout: *timeout, max_bytes: *response_bytes_max };
                match call_http(&exec.client, call, &body, self.now_ms()).await {
                    Ok((m, t, mut u, iv)) => {
                        u.duration_ms = spool_model::num::ms(started.elapsed());
                        let iv = match iv.filter(|_| spec.image_embedding).map(|iv| image_vector_of(&iv)) {
                            None => Vec::new(),
                            Some(Ok(iv)) => iv,
                            Some(Err(f)) => return Err((f, Some(u))),
                        };
                        (m, t, u, iv)
                    }
                    Err(f) => {
                        return Err((
                            f,
                            Some(CallUsage {
                                duration_ms: spool_model::num::ms(started.elapsed()),
                                ..Default::default()
                            }),
                        ));
                    }
                }
            }
        };
        let validator = match exec.validator(*run_id, spec.kind == TaskKind::Video, &spec.schema) {
            Ok(v) => v,
            Err(e) => return Err((failure(FailureStage::FieldExtraction, "schema_unusable", e, false), Some(usage))),
        };
        if let Err(errors) = spool_core::machines::prompt::schema::validate(&validator, &metadata) {
            // The probe answers the same every time: retrying its mismatch cannot help.
            let retryable = !matches!(cfg.kind, ProcessorKind::Probe);
            let mut f = failure(
                FailureStage::FieldExtraction,
                "schema_mismatch",
                format!("the answer does not match the prompt's schema: {}", errors.join("; ")),
                retryable,
            );
            f.error_paths = errors.iter().map(|e| e.split(": ").next().unwrap_or("/").to_string()).collect();
            return Err((f, Some(usage)));
        }
        Ok((TaskAnswer { metadata_json: metadata.to_string(), metadata_text: text }, usage, image_vector))
    }

    /// The JSON an `http` processor receives (engine-spec/processors.md).
    fn request_body(&self, run_id: &PromptRunId, task: RunTask, attempt: u32, spec: &TaskSpec) -> Vec<u8> {
        let exec = &self.executors.prompt_runs;
        let expires = self.now_ms() / 1000 + PROCESSOR_MEDIA_URL_TTL_SECS;
        let media_url = spec.media_path.as_ref().map(|p| {
            let sig =
                hex::encode(self.keyring().mac(crate::MEDIA_SIGNING_PURPOSE, format!("{p}\n{expires}").as_bytes()));
            format!("{}/media/{p}?expires={expires}&sig={sig}", exec.settings.media_base_url.trim_end_matches('/'))
        });
        let task_id = task_id(run_id, task, spec);
        let schema = exec.schema(*run_id, spec.kind == TaskKind::Video, &spec.schema);
        let body = TaskRequest {
            version: 1,
            kind: spec.kind.as_str(),
            run_id: run_id.to_string(),
            task_id,
            attempt,
            prompt: RequestPrompt {
                prompt_id: &spec.prompt_id,
                name: &spec.prompt_name,
                text: &spec.prompt_text,
                json_schema: &schema.value,
            },
            video: RequestVideo {
                video_id: &spec.video_id,
                title: &spec.title,
                media_type: spec.media_type.as_str(),
                facts: spec.facts.as_ref().map(spool_core::machines::video::view::facts),
            },
            segment: spec.segment_id.as_deref().map(|id| RequestSegment {
                segment_id: id,
                start_time: spec.range_us.0 as f64 / 1e6,
                end_time: spec.range_us.1 as f64 / 1e6,
            }),
            segments: (spec.kind == TaskKind::Video).then_some(spec.segments.as_slice()),
            media_url,
            media_url_expires_at: spool_model::time::rfc3339_ms(expires * 1000),
            image_embedding: spec.image_embedding,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// A task's id in processor requests: the segment id, or `<run>_video_<video>`.
fn task_id(run_id: &PromptRunId, task: RunTask, spec: &TaskSpec) -> String {
    match task {
        RunTask::Segment(n) => pr::segment_id(run_id, n),
        RunTask::Video(_) => format!("{}_video_{}", run_id, spec.video_id),
    }
}

impl PromptRunExecutor {
    /// Asks the processor named by `processors.define` to write a prompt definition for an
    /// instruction (`{"version":1,"kind":"define","instruction":…}`, signed like a task; the
    /// answer is a JSON object read within the processor's bound). `Ok(None)`: no processor
    /// here writes definitions.
    pub async fn define_prompt(&self, instruction: &str, id: &str, now_ms: u64) -> Result<Option<Value>, String> {
        let Some(name) = &self.settings.define else { return Ok(None) };
        let Some(ProcessorConfig { kind: ProcessorKind::Http { url, secret, timeout, response_bytes_max }, .. }) =
            self.settings.processors.get(name)
        else {
            return Ok(None);
        };
        let body =
            serde_json::to_vec(&serde_json::json!({ "version": 1, "kind": "define", "instruction": instruction }))
                .map_err(|e| e.to_string())?;
        let buf = self
            .post_signed(
                name,
                SignedPost { url, secret, id, timeout: *timeout, max_bytes: *response_bytes_max },
                body,
                now_ms,
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e.message, "a prompt definition could not be written");
                e.client
            })?;
        match serde_json::from_slice::<Value>(&buf) {
            Ok(v) if v.is_object() => Ok(Some(v)),
            _ => Err(format!("the processor {name}'s answer is not a JSON object")),
        }
    }
}

/// A signed POST outside a task (a definition, an embedding): where, signed how, bounded how.
struct SignedPost<'a> {
    url: &'a str,
    secret: &'a str,
    id: &'a str,
    timeout: Duration,
    max_bytes: u64,
}

/// A signed POST that failed: the whole story for the server's log, a shorter one for a
/// client (never the URL, never the answer's body: a proxy may echo what it was sent), and
/// whether trying the same request again may help.
#[derive(Debug, Clone)]
pub struct PostError {
    pub message: String,
    pub client: String,
    /// A 4xx other than 408 and 429, an answer too large or not of the expected shape: the same
    /// request meets the same.
    pub permanent: bool,
}

impl PostError {
    fn new(message: String, permanent: bool) -> PostError {
        PostError { client: message.clone(), message, permanent }
    }
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl PromptRunExecutor {
    /// POSTs `body` to the processor `name`, signed at `now_ms`, and reads a 2xx answer within
    /// the bounds. Errors never carry the URL (a key in its query must not reach a client or a
    /// log).
    async fn post_signed(
        &self,
        name: &str,
        p: SignedPost<'_>,
        body: Vec<u8>,
        now_ms: u64,
    ) -> Result<Vec<u8>, PostError> {
        let SignedPost { url, secret, id, timeout, max_bytes } = p;
        let ts = now_ms / 1000;
        let sig = sign_request(secret, id, ts, &body);
        let send = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .timeout(timeout)
            .send();
        let mut resp = send.await.map_err(|e| {
            PostError::new(format!("the processor {name} could not be reached: {}", e.without_url()), false)
        })?;
        let status = resp.status();
        let mut buf = Vec::new();
        while let Some(chunk) = tokio::time::timeout(timeout, resp.chunk())
            .await
            .map_err(|_| PostError::new(format!("the processor {name} did not answer in time"), false))?
            .map_err(|e| {
                PostError::new(format!("reading the processor {name}'s answer failed: {}", e.without_url()), false)
            })?
        {
            if buf.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(PostError::new(
                    format!("the processor {name}'s answer is larger than {max_bytes} bytes"),
                    true,
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let excerpt: String = String::from_utf8_lossy(&buf).chars().take(300).collect();
            let passing = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
            return Err(PostError {
                message: format!("the processor {name} answered {status}: {excerpt}"),
                client: format!("the processor {name} answered {status}"),
                permanent: !passing,
            });
        }
        Ok(buf)
    }

    /// Vectors for `inputs` from the `embed` processor (at most [`EMBED_INPUTS_MAX`] a request,
    /// each request signed at `now()`; one vector per input, all of one length within
    /// [`EMBED_DIMS_MAX`], finite). `Ok(None)`: no embedder is configured.
    pub async fn embed(
        &self,
        inputs: &[EmbedInput],
        id: &str,
        now: impl Fn() -> u64,
    ) -> Result<Option<Vec<Vec<f32>>>, PostError> {
        let Some(e) = &self.settings.embedder else { return Ok(None) };
        let mut out: Vec<Vec<f32>> = Vec::with_capacity(inputs.len());
        for (n, chunk) in inputs.chunks(EMBED_INPUTS_MAX).enumerate() {
            let items: Vec<Value> = chunk
                .iter()
                .map(|i| match i {
                    EmbedInput::Text(t) => serde_json::json!({ "type": "text", "text": t }),
                    EmbedInput::Image(b) => serde_json::json!({ "type": "image", "image_base64": b }),
                })
                .collect();
            let body = serde_json::to_vec(&serde_json::json!({ "version": 1, "kind": "embed", "inputs": items }))
                .map_err(|e| PostError::new(e.to_string(), true))?;
            let _slot = self.embed_slots.acquire().await.map_err(|e| PostError::new(e.to_string(), false))?;
            let id = format!("{id}_{n}");
            let post = SignedPost {
                url: &e.url,
                secret: &e.secret,
                id: &id,
                timeout: e.timeout,
                max_bytes: e.response_bytes_max,
            };
            let buf = self.post_signed(&e.name, post, body, now()).await?;
            let got = parse_vectors(&e.name, &buf, chunk.len()).map_err(|m| PostError::new(m, true))?;
            if let (Some(first), Some(v)) = (out.first(), got.first())
                && first.len() != v.len()
            {
                return Err(PostError::new(
                    format!("the processor {}'s vectors are not all of one length", e.name),
                    true,
                ));
            }
            out.extend(got);
        }
        Ok(Some(out))
    }
}

/// An embedder's answer: `{"vectors": [[f32, …], …]}`, `want` of them, each 1..=
/// [`EMBED_DIMS_MAX`] finite numbers of one length.
pub fn parse_vectors(name: &str, buf: &[u8], want: usize) -> Result<Vec<Vec<f32>>, String> {
    let bad = |why: &str| format!("the processor {name}'s answer {why}");
    let v: Value = serde_json::from_slice(buf).map_err(|_| bad("is not JSON"))?;
    let list = v.get("vectors").and_then(Value::as_array).ok_or_else(|| bad("has no vectors array"))?;
    if list.len() != want {
        return Err(bad(&format!("has {} vectors for {want} inputs", list.len())));
    }
    let mut out = Vec::with_capacity(want);
    for item in list {
        let nums = item.as_array().ok_or_else(|| bad("has a vector that is not an array"))?;
        if nums.is_empty() || nums.len() > EMBED_DIMS_MAX {
            return Err(bad(&format!("has a vector of {} numbers (1 to {EMBED_DIMS_MAX})", nums.len())));
        }
        let mut vec = Vec::with_capacity(nums.len());
        for x in nums {
            #[allow(clippy::cast_possible_truncation)]
            let f = x
                .as_f64()
                .map(|f| f as f32)
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad("has a number that is not finite"))?;
            vec.push(f);
        }
        if vec.len() != out.first().map_or(vec.len(), Vec::len) {
            return Err(bad("has vectors of different lengths"));
        }
        out.push(vec);
    }
    Ok(out)
}

/// An answer's `image_vector` as little-endian `f32`s: 1 to [`EMBED_DIMS_MAX`] finite numbers,
/// else the attempt fails `processor_bad_answer` (retryable).
fn image_vector_of(iv: &Value) -> Result<Vec<u8>, TaskFailure> {
    let nums = iv.as_array().filter(|a| !a.is_empty() && a.len() <= EMBED_DIMS_MAX);
    let floats: Option<Vec<f32>> = nums.and_then(|a| {
        #[allow(clippy::cast_possible_truncation)]
        a.iter().map(|x| x.as_f64().map(|f| f as f32).filter(|f| f.is_finite())).collect()
    });
    let Some(floats) = floats else {
        return Err(failure(
            FailureStage::Processing,
            "processor_bad_answer",
            format!("`image_vector` is not an array of 1 to {EMBED_DIMS_MAX} finite numbers"),
            true,
        ));
    };
    Ok(floats.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// One call to an `http` processor: where, signed how, bounded how.
struct Call<'a> {
    url: &'a str,
    secret: &'a str,
    id: &'a str,
    timeout: Duration,
    max_bytes: u64,
}

/// POST a request to an `http` processor and read its answer within the bounds.
async fn call_http(
    client: &reqwest::Client,
    call: Call<'_>,
    body: &[u8],
    now_ms: u64,
) -> Result<(Value, String, CallUsage, Option<Value>), TaskFailure> {
    let Call { url, secret, id, timeout, max_bytes } = call;
    let ts = now_ms / 1000;
    let sig = sign_request(secret, id, ts, body);
    let send = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body.to_vec())
        .timeout(timeout)
        .send();
    let mut resp = match send.await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(failure(
                FailureStage::Processing,
                "processor_timeout",
                format!("no answer within {} ms", timeout.as_millis()),
                true,
            ));
        }
        Err(e) => {
            return Err(failure(
                FailureStage::Processing,
                "processor_unreachable",
                format!("the processor could not be reached: {}", e.without_url()),
                true,
            ));
        }
    };
    let status = resp.status();
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout(timeout, resp.chunk()).await {
            Err(_) => {
                return Err(failure(
                    FailureStage::Processing,
                    "processor_timeout",
                    "the answer did not arrive in time",
                    true,
                ));
            }
            Ok(Err(e)) => {
                return Err(failure(
                    FailureStage::Processing,
                    "processor_unreachable",
                    format!("reading the answer failed: {}", e.without_url()),
                    true,
                ));
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => {
                if buf.len() as u64 + chunk.len() as u64 > max_bytes {
                    // Whatever the status: an answer past the bound is never read further.
                    return Err(failure(
                        FailureStage::Processing,
                        "response_too_large",
                        format!("the answer is larger than {max_bytes} bytes"),
                        false,
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    if !status.is_success() {
        let excerpt: String = String::from_utf8_lossy(&buf).chars().take(300).collect();
        let retryable = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
        let code = if retryable { "processor_error" } else { "processor_rejected" };
        return Err(failure(
            FailureStage::Processing,
            code,
            format!("the processor answered {status}: {excerpt}"),
            retryable,
        ));
    }
    let v: Value = serde_json::from_slice(&buf).map_err(|e| {
        failure(FailureStage::Processing, "processor_bad_answer", format!("the answer is not JSON: {e}"), true)
    })?;
    let Some(metadata) = v.get("metadata").filter(|m| m.is_object()).cloned() else {
        return Err(failure(
            FailureStage::Processing,
            "processor_bad_answer",
            "the answer has no `metadata` object",
            true,
        ));
    };
    let text = v.get("metadata_text").and_then(|t| t.as_str()).unwrap_or("").to_string();
    let tokens = |k: &str| v.get("usage").and_then(|u| u.get(k)).and_then(|n| n.as_u64()).unwrap_or(0);
    // `image_vector`, read only when the request asked for it (`image_vector_of`).
    let image_vector = v.get("image_vector").filter(|iv| !iv.is_null()).cloned();
    Ok((
        metadata,
        text,
        CallUsage { input_tokens: tokens("input_tokens"), output_tokens: tokens("output_tokens"), duration_ms: 0 },
        image_vector,
    ))
}

impl super::Execute for PromptRunEffect {
    async fn run(&self, rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError> {
        rt.run_prompt_effect(self).await
    }

    fn give_up(&self, code: &str, message: String) -> Vec<Command> {
        match self {
            PromptRunEffect::RunTask { run_id, task, attempt } => {
                let failure = spool_model::TaskFailure {
                    stage: FailureStage::Processing,
                    code: code.into(),
                    message,
                    retryable: false,
                    error_paths: Vec::new(),
                };
                use PromptRunCommand as C;
                vec![
                    Command::PromptRun(C::StartTask { run_id: *run_id, task: *task, attempt: *attempt }),
                    Command::PromptRun(C::RecordTaskFailed {
                        run_id: *run_id,
                        task: *task,
                        attempt: *attempt,
                        failure,
                        usage: None,
                    }),
                ]
            }
            // Planned without boundaries (fixed segmentation).
            PromptRunEffect::PlanVideo { run_id, video } => {
                vec![Command::PromptRun(PromptRunCommand::RecordVideoAnalysis {
                    run_id: *run_id,
                    video: *video,
                    boundaries_us: None,
                    source: "none".into(),
                })]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod schema_budget {
    //! A run validates its answers with its prompt's schema, compiled once per run. A schema
    //! stored before the expansion budget existed (levels of `anyOf`, each referring twice to
    //! the level below) must fail the run's tasks, not take gigabytes at every restart.
    use super::*;

    #[test]
    fn a_stored_schema_whose_refs_expand_exponentially_is_refused_when_a_run_compiles_it() {
        let mut defs = serde_json::Map::new();
        defs.insert("l0".into(), serde_json::json!({ "type": "string" }));
        for i in 1..=29 {
            let below = format!("#/$defs/l{}", i - 1);
            defs.insert(format!("l{i}"), serde_json::json!({ "anyOf": [{ "$ref": below }, { "$ref": below }] }));
        }
        let bomb =
            serde_json::json!({ "$defs": defs, "type": "object", "properties": { "a": { "$ref": "#/$defs/l29" } } });
        let exec = PromptRunExecutor::new(ProcessorSettings::default()).unwrap();
        let run = PromptRunId(ulid::Ulid::from_parts(1, 1));
        let got = exec.validator(run, false, &bomb.to_string());
        assert!(got.as_ref().is_err_and(|e| e.contains("expands to more than")), "{:?}", got.err());
        // A small schema of the same shape still compiles.
        let ok = serde_json::json!({ "$defs": { "l0": { "type": "string" } }, "type": "object", "properties": { "a": { "$ref": "#/$defs/l0" } } });
        assert!(exec.validator(run, true, &ok.to_string()).is_ok());
    }
}

#[cfg(test)]
mod vector_tests {
    use super::*;

    #[test]
    fn an_image_vector_is_finite_numbers_within_the_bound_else_a_bad_answer() {
        let ok = image_vector_of(&json!([0.5, -1, 2.0])).unwrap();
        assert_eq!(ok, [0.5f32, -1.0, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        for bad in [json!([]), json!("0.5"), json!([0.5, "x"]), json!([1e300]), json!(vec![0.0; EMBED_DIMS_MAX + 1])] {
            let f = image_vector_of(&bad).unwrap_err();
            assert_eq!((f.code.as_str(), f.retryable), ("processor_bad_answer", true), "{bad}");
        }
    }

    #[test]
    fn an_embedders_answer_is_one_vector_per_input_of_one_length() {
        let v = parse_vectors("e", br#"{"vectors":[[1,0],[0.5,0.5]]}"#, 2).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.5, 0.5]]);
        for (body, want) in [
            (&br#"{"vectors":[[1,0]]}"#[..], "1 vectors for 2 inputs"),
            (br#"{"vectors":[[1,0],[1]]}"#, "different lengths"),
            (br#"{"vectors":[[1,0],[]]}"#, "0 numbers"),
            (br#"{"vectors":[[1,0],[1,"x"]]}"#, "not finite"),
            (br#"[1]"#, "no vectors array"),
            (b"nope", "not JSON"),
        ] {
            let e = parse_vectors("e", body, 2).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
