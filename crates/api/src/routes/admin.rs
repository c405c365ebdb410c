//! Admin reads of a running server's log (`engine-spec/debugging.md`): events from a position,
//! one stream, a workflow's bundle, and a live tail as server-sent events. Admin scope; sealed
//! values are shown as `"<sealed>"` and bundles carry no connector credentials.

use crate::body::Query;
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use spool_model::Scope;

/// Events per page of the admin log routes.
pub const ADMIN_LOG_PAGE_MAX: u64 = 1000;

fn page(events: Vec<spool_model::Envelope>, next: impl Fn(&spool_model::Envelope) -> u64) -> serde_json::Value {
    let next_from = events.last().map(&next);
    serde_json::json!({
        "events": events.iter().map(spool_runtime::tools::envelope_json).collect::<Vec<_>>(),
        "next_from": next_from,
    })
}

/// `GET /admin/log?from=SEQ&limit=N`: events from a sequence number, oldest first.
pub async fn log(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let q = Query::parse(q.as_deref())?;
    let from = q.int("from", 1, 1, u64::MAX)?;
    let limit = spool_model::num::sat_usize(q.int("limit", 100, 1, ADMIN_LOG_PAGE_MAX)?);
    let events = app.rt.log().read_from(from, limit).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(super::json(StatusCode::OK, &page(events, |e| e.seq + 1)))
}

/// Items an array of an event keeps in a `brief` stream page.
pub const BRIEF_ITEMS: usize = 10;

/// `GET /admin/streams/{stream}?from_version=V&limit=N&brief=B`: one stream's events in order;
/// `brief`: each list of records in an event's body cut to its first [`BRIEF_ITEMS`] (the event then
/// carries `"cut": true`), as the console's timeline reads it (a 100,000-file job's first 1,000
/// events were 6 MB, nearly all of it its scan pages' file lists).
pub async fn stream(
    State(app): State<AppState>,
    who: Principal,
    crate::body::PathParam(stream): crate::body::PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let q = Query::parse(q.as_deref())?;
    let from = q.int("from_version", 0, 0, u64::MAX)?;
    let limit = spool_model::num::sat_usize(q.int("limit", 100, 1, ADMIN_LOG_PAGE_MAX)?);
    let brief = q.bool("brief", false)?;
    let events = app.rt.log().read_stream(&stream, from, limit).map_err(|e| ApiError::internal(e.to_string()))?;
    let n = events.len() as u64;
    let mut v = page(events, |_| 0);
    if brief {
        // The console's timeline: an event's long lists (a scan page's 1,000 discovered files)
        // are cut to their first few, and the event says so.
        if let Some(events) = v["events"].as_array_mut() {
            for e in events {
                if spool_runtime::tools::cut_arrays(&mut e["event"], BRIEF_ITEMS) {
                    e["cut"] = serde_json::Value::Bool(true);
                }
            }
        }
    }
    v["next_from"] = if n == 0 { serde_json::Value::Null } else { serde_json::json!(from + n) };
    Ok(super::json(StatusCode::OK, &v))
}

/// Steps of one replay the admin route answers at most.
pub const ADMIN_REPLAY_STEPS_MAX: usize = 1000;

/// `GET /admin/replay/{stream}?until=SEQ`: the state after each of the stream's events (a job's
/// with its files'), as `spool replay` prints it (`tools::step_text`; each event's line with
/// sealed values shown as `"<sealed>"`), at most [`ADMIN_REPLAY_STEPS_MAX`] steps. The
/// console's time slider.
pub async fn replay(
    State(app): State<AppState>,
    who: Principal,
    crate::body::PathParam(stream): crate::body::PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let q = Query::parse(q.as_deref())?;
    let until = match q.get("until") {
        Some(_) => Some(q.int("until", 0, 1, u64::MAX)?),
        None => None,
    };
    let rt = app.rt.clone();
    let name = stream.clone();
    let (steps, truncated) = tokio::task::spawn_blocking(move || {
        let mut steps = Vec::new();
        let mut truncated = false;
        spool_runtime::tools::replay_stream(&**rt.log(), &name, until, |step| {
            if steps.len() >= ADMIN_REPLAY_STEPS_MAX {
                truncated = true;
                return false;
            }
            let env = &step.envelope;
            let header = spool_runtime::tools::redacted_line(env);
            steps.push(serde_json::json!({
                "seq": env.seq,
                "at": spool_model::time::rfc3339_ms(env.at_ms),
                "stream": env.stream,
                "kind": env.event.kind(),
                "state": spool_runtime::tools::step_text(step, &header),
            }));
            true
        })
        .map(|_| (steps, truncated))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    if steps.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            format!("stream {stream} has no events"),
        )
        .details(serde_json::json!({ "resource": "stream", "id": stream })));
    }
    Ok(super::json(StatusCode::OK, &serde_json::json!({ "stream": stream, "steps": steps, "truncated": truncated })))
}

/// `GET /admin/bundles/{id}`: the workflow's bundle (what `spool bundle` writes), as text.
pub async fn bundle(
    State(app): State<AppState>,
    who: Principal,
    crate::body::PathParam(id): crate::body::PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    // Under the read lock only the names of the bundle's streams are taken (a job's imported
    // files read from its table); the log scan that
    // follows runs without it, within ADMIN_BUNDLE_EVENTS_MAX events.
    let (mut streams, jobs) = app.rt.read(|st| spool_runtime::tools::bundle_streams(st, &id));
    spool_runtime::tools::bundle_job_videos(&**app.rt.log(), &jobs, &mut streams)
        .map_err(spool_runtime::RuntimeError::Log)?;
    let text = match spool_runtime::tools::bundle_text(&**app.rt.log(), &streams, &id, ADMIN_BUNDLE_EVENTS_MAX) {
        Ok(Some(b)) => b.2,
        Ok(None) => return Err(ApiError::not_found("stream", &id)),
        Err(spool_log::Error::Invalid(why)) => {
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", why)
                .details(serde_json::json!({ "max_events": ADMIN_BUNDLE_EVENTS_MAX })));
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}

/// Events of a bundle the admin route answers (a larger one is written offline).
pub const ADMIN_BUNDLE_EVENTS_MAX: usize = 200_000;

/// How often an open tail checks its key when nothing commits.
pub const TAIL_KEY_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /admin/log/tail?from=SEQ` (server-sent events): every event from `from` (default: the
/// next one), then each new one as its batch becomes durable; one `data:` line per event.
pub async fn tail(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let q = Query::parse(q.as_deref())?;
    let from = q.int("from", app.rt.applied_seq() + 1, 1, u64::MAX)?;
    Ok(tail_from(&app, &who, from, None, |env| Some(spool_runtime::tools::envelope_json(env).to_string())))
}

/// Server-sent events from `from` on, as they commit: each event `pick` writes a line of (and
/// none of those it passes over). With a `gap`, lines come at most one per gap: those in
/// between are dropped but the last of them, which is sent when the gap has passed (a
/// reader that only needs to know that something changed hears of the last change). The stream lasts while the key that opened it does: revoked,
/// deleted, expired or rotated (its hash changed), it ends. The key is checked at every commit
/// and every `TAIL_KEY_RECHECK`.
pub(crate) fn tail_from(
    app: &AppState,
    who: &Principal,
    from: u64,
    gap: Option<std::time::Duration>,
    pick: impl Fn(&spool_model::Envelope) -> Option<String> + Send + Sync + 'static,
) -> Response {
    let rt = app.rt.clone();
    let applied = rt.watch_applied();
    let opened_with = who.key_id.and_then(|id| app.rt.read(|st| st.api_keys.get(&id).map(|k| k.key_hash)));
    let key_id = who.key_id;
    let pick = std::sync::Arc::new(pick);
    let start = (from, std::collections::VecDeque::<spool_model::Envelope>::new(), applied, None, None);
    let events = futures::stream::unfold(start, move |(mut next, mut buf, mut applied, sent_at, mut held)| {
        let rt = rt.clone();
        let pick = pick.clone();
        async move {
            let key_lives = |rt: &spool_runtime::Runtime| match key_id {
                None => true,
                Some(id) => {
                    let now = rt.now_ms();
                    rt.read(|st| {
                        st.api_keys.get(&id).is_some_and(|k| k.is_active(now) && Some(k.key_hash) == opened_with)
                    })
                }
            };
            loop {
                if !key_lives(&rt) {
                    return None;
                }
                while let Some(env) = buf.pop_front() {
                    if let Some(data) = pick(&env) {
                        if let (Some(g), Some(t)) = (gap, sent_at)
                            && tokio::time::Instant::now() < t + g
                        {
                            held = Some(data);
                            continue;
                        }
                        return Some((
                            Ok::<_, std::convert::Infallible>(SseEvent::default().data(data)),
                            (next, buf, applied, Some(tokio::time::Instant::now()), None),
                        ));
                    }
                }
                if let (Some(data), Some(g), Some(t)) = (held.take(), gap, sent_at) {
                    tokio::time::sleep_until(t + g).await;
                    return Some((
                        Ok::<_, std::convert::Infallible>(SseEvent::default().data(data)),
                        (next, buf, applied, Some(tokio::time::Instant::now()), None),
                    ));
                }
                // Mark the current value seen before reading, so a commit after the read wakes us.
                applied.borrow_and_update();
                if rt.applied_seq() >= next {
                    buf = rt
                        .log()
                        .read_from(next, spool_model::num::sat_usize(ADMIN_LOG_PAGE_MAX))
                        .unwrap_or_default()
                        .into();
                    if let Some(last) = buf.back() {
                        next = last.seq + 1;
                        continue;
                    }
                }
                tokio::select! {
                    changed = applied.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = tokio::time::sleep(TAIL_KEY_RECHECK) => {}
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// `GET /admin/cluster` (admin): the log, this node, and on a shared log its partitions with
/// their epochs, heads and lease holders, and the nodes with the addresses they advertise and
/// when each was last seen (`spool cluster status`).
pub async fn cluster(State(app): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let node = app.rt.node_id();
    let rt = app.rt.clone();
    let (partitions, nodes) = tokio::task::spawn_blocking(move || Ok((rt.log().partitions()?, rt.log().nodes()?)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e: spool_log::Error| ApiError::internal(e.to_string()))?;
    let partitions: Vec<serde_json::Value> = partitions
        .into_iter()
        .map(|p| {
            let held_here = node.is_some() && p.owner == node;
            let mut v = serde_json::to_value(&p).unwrap_or_default();
            v["held_here"] = serde_json::json!(held_here);
            v
        })
        .collect();
    Ok(super::json(
        StatusCode::OK,
        &serde_json::json!({
            "log": if node.is_some() { "postgres" } else { "redb" },
            "node_id": node,
            "applied_seq": app.rt.applied_seq(),
            "partitions": partitions,
            "nodes": nodes,
        }),
    ))
}
