use super::*;
use crate::decide::check_name;
use crate::{Ctx, Decision, DomainError, Outcome, State, StreamEvents, Timer};
use spool_model::Event;

fn live<'a>(state: &'a State, id: &WebhookId) -> Result<&'a Webhook, DomainError> {
    state
        .webhooks
        .get(id)
        .filter(|w| w.is_live())
        .ok_or_else(|| DomainError::NotFound { kind: "webhook", id: id.to_string() })
}

/// A delivery: in the state when it is not delivered, else its row (loaded for the decision,
/// `crate::rows::Need::Deliveries`).
fn delivery<'a>(state: &'a State, id: &DeliveryId) -> Result<&'a Delivery, DomainError> {
    state
        .deliveries
        .get(id)
        .or_else(|| state.rows.delivery(id))
        .ok_or_else(|| DomainError::NotFound { kind: "delivery", id: id.to_string() })
}

fn check_events(events: &[String]) -> Result<Vec<DomainEventName>, DomainError> {
    if events.is_empty() {
        return Err(DomainError::invalid("events", "must name at least one event"));
    }
    let mut out = Vec::new();
    for e in events {
        let Some(name) = DomainEventName::parse(e) else {
            return Err(DomainError::invalid("events", format!("unknown event {e:?}")));
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

fn check_url(url: &str) -> Result<String, DomainError> {
    let u = url.trim();
    if u.is_empty() || u.chars().count() > WEBHOOK_URL_CHARS_MAX || u.chars().any(|c| c.is_control() || c == ' ') {
        return Err(DomainError::invalid(
            "url",
            format!("must be a URL of at most {WEBHOOK_URL_CHARS_MAX} characters"),
        ));
    }
    let lower = u.to_ascii_lowercase();
    if !lower.starts_with("https://") && !lower.starts_with("http://") {
        return Err(DomainError::invalid("url", "must start with https://"));
    }
    Ok(u.to_string())
}

fn check_metadata(m: &str) -> Result<(), DomainError> {
    if m.len() > WEBHOOK_METADATA_BYTES_MAX {
        return Err(DomainError::invalid("metadata", format!("must be at most {WEBHOOK_METADATA_BYTES_MAX} bytes")));
    }
    match serde_json::from_str::<serde_json::Value>(m) {
        Ok(v) if v.is_object() => Ok(()),
        _ => Err(DomainError::invalid("metadata", "must be a JSON object")),
    }
}

fn one(webhook_id: &WebhookId, events: Vec<Event>, outcome: Outcome) -> Decision {
    Decision::one(webhook_id.to_string(), events, outcome)
}

pub fn decide(state: &State, cmd: &WebhookCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        WebhookCommand::Ingest { partition, after, through_seq, events } => {
            ingest(state, *partition, *after, *through_seq, events, ctx)
        }
        WebhookCommand::CreateWebhook { webhook_id, name, url, events, index_ids, metadata_json, secret } => {
            if state.webhooks.contains_key(webhook_id) {
                return Err(DomainError::InvalidState(format!("webhook {webhook_id} already exists")));
            }
            let name = check_name("name", name, WEBHOOK_NAME_CHARS_MAX)?;
            let url = check_url(url)?;
            let events = check_events(events)?;
            if let Some(m) = metadata_json {
                check_metadata(m)?;
            }
            let secret = secret.clone().ok_or_else(|| DomainError::InvalidState("the secret was not sealed".into()))?;
            let ev = Event::WebhookCreated {
                webhook_id: *webhook_id,
                name,
                url,
                events,
                index_ids: index_ids.clone(),
                metadata_json: metadata_json.clone(),
                secret,
            };
            Ok(one(webhook_id, vec![ev], Outcome::Webhook(*webhook_id)))
        }
        WebhookCommand::UpdateWebhook { webhook_id, name, url, events, index_ids, metadata_json, status } => {
            let w = live(state, webhook_id)?;
            let name = name.as_deref().map(|n| check_name("name", n, WEBHOOK_NAME_CHARS_MAX)).transpose()?;
            let url = url.as_deref().map(check_url).transpose()?;
            let events = events.as_deref().map(check_events).transpose()?;
            if let Some(Some(m)) = metadata_json {
                check_metadata(m)?;
            }
            let asked = match status.as_deref() {
                None => None,
                Some(s) => match spool_model::WebhookStatus::parse(s) {
                    Some(v @ (spool_model::WebhookStatus::Active | spool_model::WebhookStatus::Paused)) => Some(v),
                    _ => return Err(DomainError::invalid("status", "must be active or paused")),
                },
            };
            let ev = Event::WebhookUpdated {
                webhook_id: *webhook_id,
                name: name.filter(|n| *n != w.name),
                url: url.filter(|u| *u != w.url),
                events: events.filter(|e| *e != w.events),
                index_ids: index_ids.clone().filter(|i| Some(i) != w.index_ids.as_ref()),
                metadata_json: metadata_json.clone().filter(|m| *m != w.metadata_json),
                status: asked.filter(|s| *s != w.status),
            };
            if let Event::WebhookUpdated {
                name: None,
                url: None,
                events: None,
                index_ids: None,
                metadata_json: None,
                status: None,
                ..
            } = ev
            {
                return Ok(Decision::nothing(Outcome::Webhook(*webhook_id)));
            }
            Ok(one(webhook_id, vec![ev], Outcome::Webhook(*webhook_id)))
        }
        WebhookCommand::RotateWebhookSecret { webhook_id, secret, grace_ms } => {
            live(state, webhook_id)?;
            let secret = secret.clone().ok_or_else(|| DomainError::InvalidState("the secret was not sealed".into()))?;
            let ev = Event::WebhookSecretRotated {
                webhook_id: *webhook_id,
                secret,
                grace_until_ms: ctx.now_ms.saturating_add(*grace_ms),
            };
            Ok(one(webhook_id, vec![ev], Outcome::Webhook(*webhook_id)))
        }
        WebhookCommand::DeleteWebhook { webhook_id } => match state.webhooks.get(webhook_id) {
            None => Err(DomainError::NotFound { kind: "webhook", id: webhook_id.to_string() }),
            Some(w) if !w.is_live() => Ok(Decision::nothing(Outcome::Webhook(*webhook_id))),
            Some(_) => Ok(one(
                webhook_id,
                vec![Event::WebhookDeleted { webhook_id: *webhook_id }],
                Outcome::Webhook(*webhook_id),
            )),
        },
        WebhookCommand::RecordDeliveryAttempt {
            delivery_id,
            attempt,
            status_code,
            response_excerpt,
            error,
            duration_ms,
            retry_after_ms,
            schedule_ms,
            disable_after,
        } => {
            // A delivered one left the state: a late outcome for it changes nothing.
            let Some(d) = state.deliveries.get(delivery_id) else { return Ok(Decision::nothing(Outcome::Done)) };
            let Some(w) = state.webhooks.get(&d.webhook_id) else {
                return Ok(Decision::nothing(Outcome::Done));
            };
            if d.status != DeliveryStatus::Pending || d.attempts + 1 != *attempt || !w.is_live() {
                // A duplicate or stale outcome (the attempt ran twice, or the webhook is gone).
                return Ok(Decision::nothing(Outcome::Done));
            }
            let delivered = status_code.is_some_and(|c| (200..300).contains(&c));
            let retry_at_ms = if delivered || (*attempt as usize) >= schedule_ms.len() {
                None
            } else {
                let base = schedule_ms[*attempt as usize];
                let spread = base * DELIVERY_RETRY_JITTER_PCT / 100;
                let jitter =
                    if spread == 0 { 0 } else { spool_model::num::low_u64(ctx.new_ulid().random()) % (2 * spread + 1) };
                let mut at = ctx.now_ms + base - spread + jitter;
                if let Some(ra) = retry_after_ms {
                    at = at.max(ctx.now_ms + (*ra).min(RETRY_AFTER_CAP_MS));
                }
                Some(at)
            };
            let excerpt = response_excerpt.as_ref().map(|b| {
                let mut end = b.len().min(RESPONSE_EXCERPT_BYTES_MAX);
                while !b.is_char_boundary(end) {
                    end -= 1;
                }
                b[..end].to_string()
            });
            let mut events = vec![Event::DeliveryAttempted {
                delivery_id: *delivery_id,
                webhook_id: d.webhook_id,
                attempt: *attempt,
                status_code: *status_code,
                response_excerpt: excerpt,
                error: error.as_ref().map(|e| e.chars().take(1000).collect()),
                duration_ms: *duration_ms,
                delivered,
                retry_at_ms,
            }];
            // The last attempt failed: after enough failed deliveries in a row, the webhook is
            // disabled (no more deliveries until it is set active again).
            if !delivered
                && retry_at_ms.is_none()
                && w.failure_count + 1 >= (*disable_after).max(1)
                && w.status != spool_model::WebhookStatus::Disabled
            {
                events.push(Event::WebhookUpdated {
                    webhook_id: d.webhook_id,
                    name: None,
                    url: None,
                    events: None,
                    index_ids: None,
                    metadata_json: None,
                    status: Some(spool_model::WebhookStatus::Disabled),
                });
            }
            Ok(one(&d.webhook_id, events, Outcome::Done))
        }
        WebhookCommand::StartBulkRetry { webhook_id, status, from_ms, to_ms } => {
            let w = live(state, webhook_id)?;
            if w.bulk_retry.is_some() {
                return Err(DomainError::InvalidState(format!("a bulk retry of {webhook_id} is already running")));
            }
            if !matches!(status, DeliveryStatus::Failed | DeliveryStatus::Retrying) {
                return Err(DomainError::invalid("status", "must be failed or retrying"));
            }
            let ev = Event::BulkRetryStarted {
                webhook_id: *webhook_id,
                status: status.as_str().into(),
                from_ms: *from_ms,
                to_ms: *to_ms,
            };
            Ok(one(webhook_id, vec![ev], Outcome::Webhook(*webhook_id)))
        }
        WebhookCommand::RunBulkRetryStep { webhook_id } => {
            let Some(w) = state.webhooks.get(webhook_id).filter(|w| w.is_live() && w.bulk_retry.is_some()) else {
                return Ok(Decision::nothing(Outcome::Done));
            };
            Ok(one(webhook_id, bulk_step(state, w), Outcome::Done))
        }
        WebhookCommand::RetryDelivery { delivery_id } => {
            let d = delivery(state, delivery_id)?;
            match d.status {
                DeliveryStatus::Delivered => {
                    Err(DomainError::InvalidState(format!("delivery {delivery_id} was delivered; nothing to retry")))
                }
                DeliveryStatus::Pending => Ok(Decision::nothing(Outcome::Delivery(*delivery_id))),
                DeliveryStatus::Failed | DeliveryStatus::Retrying => Ok(one(
                    &d.webhook_id,
                    vec![Event::DeliveryPending { delivery_id: *delivery_id, webhook_id: d.webhook_id }],
                    Outcome::Delivery(*delivery_id),
                )),
            }
        }
    }
}

fn bulk_step(state: &State, w: &Webhook) -> Vec<Event> {
    let Some(b) = &w.bulk_retry else { return Vec::new() };
    let start = match b.after {
        Some(k) => std::ops::Bound::Excluded(k),
        None => std::ops::Bound::Unbounded,
    };
    let mut events = Vec::new();
    let mut last = None;
    let mut retried = b.retried;
    // Only a delivery not delivered is retried: the webhook's open ones.
    for (created, id) in w.open.range((start, std::ops::Bound::Unbounded)).take(BULK_RETRY_PAGE_MAX) {
        last = Some((*created, *id));
        let in_range = b.from_ms.is_none_or(|f| *created >= f) && b.to_ms.is_none_or(|t| *created <= t);
        if in_range && state.deliveries.get(id).is_some_and(|d| d.status == b.status) {
            events.push(Event::DeliveryPending { delivery_id: *id, webhook_id: w.webhook_id });
            retried += 1;
        }
    }
    match last {
        Some((after_ms, after))
            if w.open
                .range((std::ops::Bound::Excluded((after_ms, after)), std::ops::Bound::Unbounded))
                .next()
                .is_some() =>
        {
            events.push(Event::BulkRetryProgressed { webhook_id: w.webhook_id, after_ms, after, retried });
        }
        _ => events.push(Event::BulkRetryFinished { webhook_id: w.webhook_id, retried }),
    }
    events
}

/// `FireTimer` of a delivery's retry: it is pending again. A timer that is set always fires
/// once (its event clears it); `evolve` makes only a retrying or failed delivery pending.
pub fn fire_retry(state: &State, timer: &Timer) -> Result<Decision, DomainError> {
    let Timer::DeliveryRetry { delivery_id, .. } = timer else {
        return Ok(Decision::nothing(Outcome::Done));
    };
    if !state.timer_due.contains_key(timer) {
        return Ok(Decision::nothing(Outcome::Done));
    }
    let Some(d) = state.deliveries.get(delivery_id) else { return Ok(Decision::nothing(Outcome::Done)) };
    Ok(one(
        &d.webhook_id,
        vec![Event::DeliveryPending { delivery_id: *delivery_id, webhook_id: d.webhook_id }],
        Outcome::Done,
    ))
}

/// The outbox: for each domain event of a decision, a `DeliveryCreated` for every live webhook
/// (active or paused; paused ones hold it as `pending`) subscribed to its name whose index filter
/// matches (an event without an index reaches every subscribed webhook). Called by the sequencer
/// with the state *after* the decision's events, so `data` is the resource as the API shows it
/// then (an `ImportJob`, a `Video`); the deliveries join the decision's append.
pub fn outbox(state: &State, decision: &Decision, ctx: &mut Ctx) -> Vec<StreamEvents> {
    let mut out = Vec::new();
    if state.webhooks.is_empty() {
        return out;
    }
    let mut next: std::collections::BTreeMap<WebhookId, u64> = Default::default();
    for (name, subject, data_json) in raised(decision) {
        let (data, index_id) = resolved(state, name, &subject, &data_json);
        let event_id = format!("evt_{}", ctx.new_ulid());
        let created_at_ms = ctx.now_ms;
        deliveries(state, &mut next, name, index_id, &data, &event_id, created_at_ms, ctx, &mut out);
    }
    out
}

/// What [`outbox`] and [`publish`] read from the tables to resolve a decision's domain events:
/// the rows of its video events' videos, the first finished files of its import job events'
/// jobs. The runtime loads what the state does not hold first.
pub fn outbox_rows(state: &State, decision: &Decision) -> Vec<crate::rows::Need> {
    let mut videos = Vec::new();
    let mut out = Vec::new();
    for (name, subject, _) in raised(decision) {
        match name.subject() {
            spool_model::names::Subject::Video => videos.extend(subject.parse::<spool_model::VideoId>().ok()),
            spool_model::names::Subject::ImportJob => {
                if let Ok(id) = subject.parse::<spool_model::ImportJobId>() {
                    out.extend(crate::rows::job_head(state, &id));
                }
            }
            _ => {}
        }
    }
    if !videos.is_empty() {
        out.push(crate::rows::Need::Videos(videos));
    }
    out
}

fn raised(decision: &Decision) -> Vec<(DomainEventName, String, String)> {
    let mut raised = Vec::new();
    for s in &decision.streams {
        for ev in &s.events {
            if let Event::DomainEventRaised { name, subject, data_json } = ev {
                raised.push((*name, subject.clone(), data_json.clone()));
            }
        }
    }
    raised
}

/// The data of a domain event: the resource as the API shows it right after it, or the
/// event's own summary when there is none; and the index it concerns.
fn resolved(
    state: &State,
    name: DomainEventName,
    subject: &str,
    data_json: &str,
) -> (serde_json::Value, Option<IndexId>) {
    let summary: serde_json::Value = serde_json::from_str(data_json).unwrap_or(serde_json::Value::Null);
    let index_id: Option<IndexId> = summary.get("index_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok());
    let data = if name.subject() == spool_model::names::Subject::ImportJob {
        subject.parse::<spool_model::ImportJobId>().ok().and_then(|id| state.imports.get(&id)).map(|j| {
            let done = crate::rows::job_head_files(state, &j.job_id);
            crate::machines::import_job::view::import_job(j, state, &done, state)
        })
    } else if name.subject() == spool_model::names::Subject::Video {
        subject
            .parse::<spool_model::VideoId>()
            .ok()
            .and_then(|id| Some((state.video(&id)?, state.video_row(&id)?)))
            .map(|(v, row)| crate::machines::video::view::video(&v, row, state))
    } else {
        None
    }
    .unwrap_or(summary);
    (data, index_id)
}

/// In an index partition of a partitioned cluster, instead of deliveries (its webhooks live in
/// the catalog): each domain event of the decision published with its resolved data, for the
/// catalog to deliver (`Event::DomainEventPublished`, stream `outbox`).
pub fn publish(state: &State, decision: &Decision, ctx: &mut Ctx) -> Vec<StreamEvents> {
    let events: Vec<Event> = raised(decision)
        .into_iter()
        .map(|(name, subject, data_json)| {
            let (data, index_id) = resolved(state, name, &subject, &data_json);
            Event::DomainEventPublished {
                event_id: format!("evt_{}", ctx.new_ulid()),
                name,
                index_id,
                data_json: data.to_string(),
            }
        })
        .collect();
    if events.is_empty() { Vec::new() } else { vec![StreamEvents { stream: OUTBOX_STREAM.to_string(), events }] }
}

/// The stream of published domain events (index partitions) and of ingest cursors (catalog).
pub const OUTBOX_STREAM: &str = "outbox";

/// `WebhookCommand::Ingest`: the deliveries of an index partition's published events.
fn ingest(
    state: &State,
    partition: u16,
    after: u64,
    through_seq: u64,
    events: &[spool_model::MirroredEvent],
    ctx: &mut Ctx,
) -> Result<Decision, DomainError> {
    let at = state.ingested.get(&partition).copied().unwrap_or(0);
    if at != after {
        return Err(DomainError::Stale(format!("partition {partition} is ingested through {at}, not {after}")));
    }
    if through_seq <= after
        || events.iter().any(|m| m.seq <= after || m.seq > through_seq)
        || events.windows(2).any(|w| w[0].seq >= w[1].seq)
    {
        return Err(DomainError::invalid("events", "not the partition's next events in order"));
    }
    let mut streams = vec![StreamEvents {
        stream: OUTBOX_STREAM.to_string(),
        events: vec![Event::PartitionIngested { partition, through_seq }],
    }];
    let mut next: std::collections::BTreeMap<WebhookId, u64> = Default::default();
    for m in events {
        if let Event::DomainEventPublished { event_id, name, index_id, data_json } = &m.event {
            let data: serde_json::Value = serde_json::from_str(data_json).unwrap_or(serde_json::Value::Null);
            deliveries(state, &mut next, *name, *index_id, &data, event_id, m.at_ms, ctx, &mut streams);
        }
    }
    Ok(Decision { streams, outcome: Outcome::Done })
}

/// One `DeliveryCreated` per live webhook subscribed to `name` whose `index_ids` contain the
/// event's index (an event without an index reaches every subscribed webhook).
#[allow(clippy::too_many_arguments)]
fn deliveries(
    state: &State,
    next: &mut std::collections::BTreeMap<WebhookId, u64>,
    name: DomainEventName,
    index_id: Option<IndexId>,
    data: &serde_json::Value,
    event_id: &str,
    created_at_ms: u64,
    ctx: &mut Ctx,
    out: &mut Vec<StreamEvents>,
) {
    // The webhooks subscribed to `name` for every index, and those limited to the event's
    // index; an event without an index reaches every webhook subscribed to `name`.
    let nil = WebhookId(ulid::Ulid::nil());
    let max = WebhookId(ulid::Ulid::from(u128::MAX));
    let ids: BTreeSet<WebhookId> = match index_id {
        Some(idx) => state
            .subscriptions
            .range((name, None, nil)..=(name, None, max))
            .chain(state.subscriptions.range((name, Some(idx), nil)..=(name, Some(idx), max)))
            .map(|(_, _, id)| *id)
            .collect(),
        None => state
            .subscriptions
            .range((name, None, nil)..)
            .take_while(|(n, _, _)| *n == name)
            .map(|(_, _, id)| *id)
            .collect(),
    };
    let subscribed = ids
        .iter()
        .filter_map(|id| state.webhooks.get(id))
        .filter(|w| w.is_live() && w.status != spool_model::WebhookStatus::Disabled);
    for w in subscribed {
        let sequence = *next.entry(w.webhook_id).or_insert(w.next_sequence);
        next.insert(w.webhook_id, sequence + 1);
        let delivery_id = DeliveryId(ctx.new_ulid());
        let mut payload = serde_json::json!({
            "id": event_id,
            "event": name,
            "created_at": spool_model::time::rfc3339_ms(created_at_ms),
            "api_version": "2",
            "data": data,
            "webhook_id": w.webhook_id.to_string(),
            "delivery_id": delivery_id.to_string(),
            "sequence": sequence,
        });
        if let Some(i) = &index_id {
            payload["index_id"] = serde_json::json!(i.to_string());
        }
        if let Some(m) = w.metadata_json.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()) {
            payload["metadata"] = m;
        }
        out.push(StreamEvents {
            stream: w.webhook_id.to_string(),
            events: vec![Event::DeliveryCreated {
                delivery_id,
                webhook_id: w.webhook_id,
                event_type: name,
                sequence,
                index_id,
                payload_json: payload.to_string(),
            }],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_model::{Envelope, Event, WebhookStatus};

    fn apply(state: &mut State, stream: String, event: Event) {
        let env = Envelope { seq: state.applied_seq + 1, stream, at_ms: 1_000, format_version: 1, event };
        crate::evolve(state, &env);
    }

    fn hook(state: &mut State, n: u128, events: &[DomainEventName], index_ids: Option<Vec<IndexId>>) -> WebhookId {
        let id = WebhookId(ulid::Ulid(n));
        let secret = Sealed { owner: id.to_string(), nonce: [0; 24], ciphertext: vec![1] };
        let event = Event::WebhookCreated {
            webhook_id: id,
            name: format!("h{n}"),
            url: "http://127.0.0.1/hook".into(),
            events: events.to_vec(),
            index_ids,
            metadata_json: None,
            secret,
        };
        apply(state, id.to_string(), event);
        id
    }

    /// The webhooks one event reaches.
    fn reached(state: &State, name: DomainEventName, index_id: Option<IndexId>) -> Vec<WebhookId> {
        let mut out = Vec::new();
        let mut ctx = Ctx::new(1_000, 7);
        let data = serde_json::Value::Null;
        deliveries(state, &mut Default::default(), name, index_id, &data, "evt_1", 1_000, &mut ctx, &mut out);
        out.iter()
            .map(|s| match &s.events[0] {
                Event::DeliveryCreated { webhook_id, .. } => *webhook_id,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn an_event_reaches_exactly_the_webhooks_subscribed_to_its_name_and_index() {
        use DomainEventName::{ExportReady, ImportJobCompleted};
        let mut st = State::default();
        let (a, b) = (IndexId(ulid::Ulid(11)), IndexId(ulid::Ulid(12)));
        let every = hook(&mut st, 1, &[ImportJobCompleted], None);
        let only_a = hook(&mut st, 2, &[ImportJobCompleted, ExportReady], Some(vec![a]));
        let only_b = hook(&mut st, 3, &[ImportJobCompleted], Some(vec![b]));
        let none = hook(&mut st, 4, &[ImportJobCompleted], Some(vec![]));
        let other = hook(&mut st, 5, &[ExportReady], None);
        for n in 100..1_100u128 {
            hook(&mut st, n, &[ExportReady], Some(vec![b]));
        }
        assert_eq!(reached(&st, ImportJobCompleted, Some(a)), vec![every, only_a]);
        assert_eq!(reached(&st, ImportJobCompleted, Some(b)), vec![every, only_b]);
        // Without an index: every webhook subscribed to the name, whatever its indexes.
        assert_eq!(reached(&st, ImportJobCompleted, None), vec![every, only_a, only_b, none]);
        assert_eq!(reached(&st, ExportReady, Some(a)), vec![only_a, other]);
        // An update moves the subscriptions; a disabled webhook gets none; a deleted one leaves.
        let update = Event::WebhookUpdated {
            webhook_id: only_a,
            name: None,
            url: None,
            events: Some(vec![ExportReady]),
            index_ids: Some(vec![b]),
            metadata_json: None,
            status: None,
        };
        apply(&mut st, only_a.to_string(), update);
        assert_eq!(reached(&st, ImportJobCompleted, Some(a)), vec![every]);
        let disable = Event::WebhookUpdated {
            webhook_id: every,
            name: None,
            url: None,
            events: None,
            index_ids: None,
            metadata_json: None,
            status: Some(WebhookStatus::Disabled),
        };
        apply(&mut st, every.to_string(), disable);
        assert_eq!(reached(&st, ImportJobCompleted, Some(b)), vec![only_b]);
        apply(&mut st, only_b.to_string(), Event::WebhookDeleted { webhook_id: only_b });
        assert_eq!(reached(&st, ImportJobCompleted, Some(b)), Vec::<WebhookId>::new());
        assert!(!st.subscriptions.iter().any(|(_, _, w)| *w == only_b));
        // The index holds one entry per (name, scope) of each webhook not deleted.
        assert_eq!(st.subscriptions.iter().filter(|(_, _, w)| *w == only_a).count(), 1);
    }
}
