//! Webhooks (contract §2.5, §4): CRUD, secret rotation, the test endpoint, delivery logs and
//! manual retry. The secret is shown once (creation, rotation) and sealed at rest; deliveries
//! come from the outbox in the log (`spool-core`'s webhook machine).

pub(crate) mod views;

use super::{json, oldest_first, reply, run_command, to_reply, view_reply};
use crate::body::{JsonBody, PathParam, Query, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use spool_core::machines::webhook::{Delivery, DeliveryStatus, WEBHOOK_EVENTS};
use spool_core::{Command, Outcome, WebhookCommand};
use spool_model::{DeliveryId, IndexId, Scope, WebhookId};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(post "/webhooks" create, "createWebhook", "webhooks", Model("WebhookWithSecret"), ok = 201, body = json_body("Object")),
        op!(get "/webhooks" list, "listWebhooks", "webhooks", Array("Webhook")),
        op!(get "/webhooks/events" events, "listWebhookEvents", "webhooks", Strings, public = true),
        op!(get "/webhooks/deliveries/{delivery_id}" delivery, "getWebhookDelivery", "webhooks", Model("WebhookDelivery")),
        op!(post "/webhooks/deliveries/{delivery_id}/retry" retry, "retryWebhookDelivery", "webhooks", Model("WebhookDelivery"), ok = 202),
        op!(get "/webhooks/{webhook_id}" retrieve, "getWebhook", "webhooks", Model("Webhook")),
        op!(patch "/webhooks/{webhook_id}" patch, "updateWebhook", "webhooks", Model("Webhook"), body = json_body("WebhookPatch")),
        op!(delete "/webhooks/{webhook_id}" delete, "deleteWebhook", "webhooks", Model("DeleteResponse")),
        op!(post "/webhooks/{webhook_id}/rotate-secret" rotate, "rotateWebhookSecret", "webhooks", Model("RotateSecretResponse")),
        op!(post "/webhooks/{webhook_id}/test" test, "testWebhook", "webhooks", Model("WebhookTestResponse")),
        op!(get "/webhooks/{webhook_id}/deliveries" deliveries, "listWebhookDeliveries", "webhooks", Array("WebhookDelivery"),
                query = &[q("limit", QKind::Int(1, 1000)), q("status", QKind::Str), q("before", QKind::Str)]),
        op!(post "/webhooks/{webhook_id}/deliveries/retry" bulk_retry, "retryWebhookDeliveries", "webhooks", Local("Object"), ok = 202),
    ]
}

fn parse_id(raw: &str) -> Result<WebhookId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("webhook", raw))
}

fn parse_delivery(raw: &str) -> Result<DeliveryId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("delivery", raw))
}

fn check_events(events: &[String]) -> Result<(), ApiError> {
    if events.is_empty() {
        return Err(ApiError::validation("events", "must name at least one event")
            .details(serde_json::json!({ "field": "events", "allowed": WEBHOOK_EVENTS })));
    }
    if let Some(bad) = events.iter().find(|e| spool_model::DomainEventName::parse(e).is_none()) {
        return Err(ApiError::validation("events", format!("unknown event {bad:?}"))
            .details(serde_json::json!({ "field": "events", "allowed": WEBHOOK_EVENTS })));
    }
    Ok(())
}

fn check_url(app: &AppState, url: &str) -> Result<(), ApiError> {
    spool_runtime::check_target(app.rt.webhook_settings(), url.trim()).map_err(|m| ApiError::validation("url", m))
}

fn parse_indexes(app: &AppState, raw: Option<Vec<String>>) -> Result<Option<Vec<IndexId>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut out = Vec::new();
    for r in raw {
        let id: IndexId =
            r.parse().map_err(|_| ApiError::validation("index_ids", format!("{r:?} is not an index id")))?;
        // In the catalog of a partitioned cluster the indexes live in their partitions: the
        // node that routed the request checked each one there (`spool` `node.rs`).
        if !app.rt.is_partitioned_catalog() && app.rt.read(|st| st.live_index(&id).is_none()) {
            return Err(ApiError::validation("index_ids", format!("index {id} does not exist")));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(Some(out))
}

fn metadata(v: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(m) if m.is_object() => Ok(Some(m.to_string())),
        Some(_) => Err(ApiError::validation("metadata", "must be a JSON object")),
    }
}

fn render(st: &spool_core::State, out: Outcome, status: StatusCode) -> spool_runtime::Reply {
    let w = match out {
        Outcome::Webhook(id) => st.webhooks.get(&id),
        _ => None,
    };
    view_reply(status, w.map(views::webhook))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    name: String,
    url: String,
    events: Vec<String>,
    #[serde(default)]
    index_ids: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

pub async fn create(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<Create>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let mut idem = idempotency_key(&headers, &who, "POST", "/webhooks", &body.canonical)?;
    if let Some(k) = &mut idem {
        // The stored answer holds the secret.
        k.seal = true;
    }
    let b = body.value;
    check_events(&b.events)?;
    check_url(&app, &b.url)?;
    let index_ids = parse_indexes(&app, b.index_ids)?;
    let metadata_json = metadata(b.metadata)?;
    let webhook_id = WebhookId(app.rt.new_ulid());
    let secret = spool_runtime::new_secret(app.rt.ids().as_ref());
    let cmd = Command::Webhook(WebhookCommand::CreateWebhook {
        webhook_id,
        name: b.name,
        url: b.url.trim().to_string(),
        events: b.events,
        index_ids,
        metadata_json,
        secret: None,
    });
    let work = spool_runtime::Runtime::create_webhook(cmd, secret.clone());
    let render = move |st: &spool_core::State, out: Outcome| {
        let w = match out {
            Outcome::Webhook(id) => st.webhooks.get(&id),
            _ => None,
        };
        view_reply(
            StatusCode::CREATED,
            w.map(|w| {
                let mut v = views::webhook(w);
                v["secret"] = serde_json::json!(secret);
                v
            }),
        )
    };
    run_command(&app, work, idem, Vec::new(), render).await
}

pub async fn list(State(app): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    Ok(oldest_first(app.rt.read(|st| {
        st.webhooks
            .values()
            .filter(|w| w.is_live())
            .map(|w| (w.created_at_ms, w.webhook_id.to_string(), views::webhook(w)))
            .collect()
    })))
}

pub async fn retrieve(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    super::show(&app, "webhook", &raw, |st, id| st.webhooks.get(&id).filter(|w| w.is_live()).map(views::webhook))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    index_ids: Option<Vec<String>>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "crate::body::present")]
    metadata: Option<Option<serde_json::Value>>,
}

pub async fn patch(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    body: JsonBody<Patch>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_id(&raw)?;
    let b = body.value;
    if let Some(e) = &b.events {
        check_events(e)?;
    }
    if let Some(u) = &b.url {
        check_url(&app, u)?;
    }
    if let Some(s) = &b.status
        && s != "active"
        && s != "paused"
    {
        return Err(ApiError::validation("status", "must be active or paused"));
    }
    let cmd = Command::Webhook(WebhookCommand::UpdateWebhook {
        webhook_id: id,
        name: b.name,
        url: b.url.map(|u| u.trim().to_string()),
        events: b.events,
        index_ids: parse_indexes(&app, b.index_ids)?,
        metadata_json: match b.metadata {
            None => None,
            Some(m) => Some(metadata(m)?),
        },
        status: b.status,
    });
    let (r, _) = app.rt.execute_with(cmd, None, Vec::new(), |st, out| render(st, out, StatusCode::OK)).await?;
    Ok(reply(r))
}

pub async fn delete(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let id = parse_id(&raw)?;
    // The runtime deletes the secret's data key with `WebhookDeleted` (crypto-shredding).
    app.rt
        .execute_with(Command::Webhook(WebhookCommand::DeleteWebhook { webhook_id: id }), None, Vec::new(), |_, _| {
            to_reply(StatusCode::OK, &serde_json::json!({}))
        })
        .await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "message": format!("webhook {id} deleted") })))
}

pub async fn rotate(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_id(&raw)?;
    let secret = spool_runtime::new_secret(app.rt.ids().as_ref());
    let grace_ms = spool_model::num::ms(app.rt.webhook_settings().rotation_grace);
    let work = spool_runtime::Runtime::rotate_webhook_secret(id, secret.clone(), grace_ms);
    let (r, _) = app
        .rt
        .execute_with(work, None, Vec::new(), move |_, _| {
            to_reply(StatusCode::OK, &serde_json::json!({ "webhook_id": id.to_string(), "new_secret": secret }))
        })
        .await?;
    Ok(reply(r))
}

/// `POST /webhooks/{id}/test`: one signed test delivery now (also when paused); the answer is
/// the receiver's status. Nothing is recorded.
pub async fn test(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_id(&raw)?;
    let url = app
        .rt
        .read(|st| st.webhooks.get(&id).filter(|w| w.is_live()).map(|w| w.url.clone()))
        .ok_or_else(|| ApiError::not_found("webhook", &raw))?;
    let secrets = app.rt.webhook_secrets(&id).map_err(ApiError::internal)?;
    let delivery_id = format!("test_{}", app.rt.new_ulid());
    let body = serde_json::json!({
        "id": format!("evt_{}", app.rt.new_ulid()),
        "event": "webhook.test",
        "created_at": spool_model::time::rfc3339_ms(app.rt.now_ms()),
        "api_version": "2",
        "data": { "message": "a test delivery from Spool" },
        "webhook_id": id.to_string(),
        "delivery_id": delivery_id,
    })
    .to_string();
    let sent =
        app.rt.send_webhook(&url, &id.to_string(), &delivery_id, "webhook.test", body.as_bytes(), &secrets).await;
    let success = sent.status_code.is_some_and(|c| (200..300).contains(&c));
    let error = if success {
        None
    } else {
        sent.error.or_else(|| sent.status_code.map(|c| format!("the receiver answered {c}")))
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "success": success, "status_code": sent.status_code, "error": error }),
    ))
}

pub async fn deliveries(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id = parse_id(&raw)?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, 1000)?);
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::validation("status", format!("unknown status {s:?}")).details(serde_json::json!({
                "field": "status",
                "allowed": ["pending", "delivered", "retrying", "failed"],
            }))
        })?),
    };
    // From the cursor `before` (a page's `X-Next-Cursor`: the last delivery's creation time and
    // id), older ones only.
    let before: Option<(u64, DeliveryId)> = match q.get("before").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => {
            let bad = || ApiError::validation("before", "must be a cursor from an earlier page (X-Next-Cursor)");
            let (ms, d) = raw.split_once('.').ok_or_else(bad)?;
            Some((ms.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?))
        }
    };
    let upper = before.unwrap_or((u64::MAX, DeliveryId(ulid::Ulid::from(u128::MAX))));
    // The webhook's open deliveries (not delivered) from the read state — one status's set when
    // a status is asked, so a page reads at most `limit` of them —, its delivered ones from the
    // tables (newest first, `limit` at most), then one answer from both.
    let open: Vec<Delivery> = app
        .rt
        .read(|st| {
            let w = st.webhooks.get(&id).filter(|w| w.is_live())?;
            let keys: Box<dyn Iterator<Item = (u64, DeliveryId)>> = match status {
                Some(DeliveryStatus::Delivered) => Box::new(std::iter::empty()),
                Some(s) => Box::new(w.open_by_status.before(s, upper)),
                None => Box::new(w.open.range(..upper).rev().copied()),
            };
            Some(keys.take(limit).filter_map(|(_, d)| st.deliveries.get(&d)).cloned().collect())
        })
        .ok_or_else(|| ApiError::not_found("webhook", &raw))?;
    let delivered = if status.is_none_or(|s| s == DeliveryStatus::Delivered) {
        let keys = app.rt.webhook_delivered(&id, before, limit)?;
        app.rt.delivered_rows(keys.into_iter().map(|(_, d)| d))?.into_values().collect()
    } else {
        Vec::new()
    };
    let (items, next) = app.rt.read(|st| {
        // One delivered while this was read is in both: its row wins.
        let mut all: std::collections::BTreeMap<(u64, DeliveryId), &Delivery> =
            open.iter().map(|d| ((d.created_at_ms, d.delivery_id), d)).collect();
        for d in &delivered {
            all.insert((d.created_at_ms, d.delivery_id), &**d);
        }
        let page: Vec<_> = all.iter().rev().take(limit).collect();
        let next = (page.len() == limit).then(|| page.last().map(|(k, _)| format!("{:020}.{}", k.0, k.1))).flatten();
        (page.into_iter().map(|(_, d)| views::delivery_in(st, d, false)).collect::<Vec<_>>(), next)
    });
    let mut resp = json(StatusCode::OK, &serde_json::Value::Array(items));
    if let Some(c) = next
        && let Ok(v) = axum::http::HeaderValue::from_str(&c)
    {
        resp.headers_mut().insert(axum::http::HeaderName::from_static("x-next-cursor"), v);
    }
    Ok(resp)
}

pub async fn delivery(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id = parse_delivery(&raw)?;
    if let Some(v) = app.rt.read(|st| st.deliveries.get(&id).map(|d| views::delivery_in(st, d, true))) {
        return Ok(json(StatusCode::OK, &v));
    }
    // Delivered: its row (written before the state that let it go was published).
    let row = app.rt.delivered_rows([id])?.remove(&id).ok_or_else(|| ApiError::not_found("delivery", &raw))?;
    let v = app.rt.read(|st| views::delivery_in(st, &row, true));
    Ok(json(StatusCode::OK, &v))
}

pub async fn retry(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_delivery(&raw)?;
    let (r, _) = app
        .rt
        .execute_with(
            Command::Webhook(WebhookCommand::RetryDelivery { delivery_id: id }),
            None,
            Vec::new(),
            move |st, _| view_reply(StatusCode::OK, st.deliveries.get(&id).map(|d| views::delivery_in(st, d, true))),
        )
        .await?;
    Ok(reply(r))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    #[serde(default)]
    status: Option<String>,
    /// RFC 3339; deliveries created at or after.
    #[serde(default)]
    since: Option<String>,
    /// RFC 3339; deliveries created at or before.
    #[serde(default)]
    until: Option<String>,
}

/// `POST /webhooks/{id}/deliveries/retry`: retry every failed (or retrying) delivery created in
/// a time range, as a durable job; answers 202 with the webhook (its `bulk_retry` shows the run).
pub async fn bulk_retry(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    body: JsonBody<BulkRetry>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_id(&raw)?;
    let b = body.value;
    let status = match b.status.as_deref().unwrap_or("failed") {
        "failed" => DeliveryStatus::Failed,
        "retrying" => DeliveryStatus::Retrying,
        other => {
            return Err(ApiError::validation("status", format!("must be failed or retrying (got {other:?})"))
                .details(serde_json::json!({ "field": "status", "allowed": ["failed", "retrying"] })));
        }
    };
    let time = |field: &'static str, v: Option<String>| -> Result<Option<u64>, ApiError> {
        v.map(|t| {
            spool_model::time::parse_rfc3339_ms(&t).ok_or_else(|| {
                ApiError::validation(field, "must be an RFC 3339 time in UTC, such as 2026-12-01T08:00:00Z")
            })
        })
        .transpose()
    };
    let (from_ms, to_ms) = (time("since", b.since)?, time("until", b.until)?);
    let cmd = Command::Webhook(WebhookCommand::StartBulkRetry { webhook_id: id, status, from_ms, to_ms });
    let (r, _) = app.rt.execute_with(cmd, None, Vec::new(), |st, out| render(st, out, StatusCode::ACCEPTED)).await?;
    Ok(reply(r))
}

/// `GET /webhooks/events`: public, the event names as a JSON array of strings.
pub async fn events() -> Response {
    json(StatusCode::OK, &serde_json::json!(WEBHOOK_EVENTS))
}
