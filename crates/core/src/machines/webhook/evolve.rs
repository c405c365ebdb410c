use super::*;
use crate::{State, Timer};
use spool_model::{Envelope, Event};

fn set_delivery_status(state: &mut State, id: &DeliveryId, to: DeliveryStatus) {
    let Some(d) = state.deliveries.get_mut(id) else { return };
    let key = (d.sequence, d.delivery_id);
    let (from, open_key) = (d.status, (d.created_at_ms, d.delivery_id));
    d.status = to;
    if let Some(w) = state.webhooks.get_mut(&d.webhook_id) {
        // Delivered: it leaves the open deliveries (and the state) for its row.
        if to == DeliveryStatus::Delivered {
            w.open_by_status.remove(from, open_key);
        } else {
            w.open_by_status.moved(open_key, from, to);
        }
        if to == DeliveryStatus::Pending {
            w.pending.insert(key);
        } else {
            w.pending.remove(&key);
        }
        if w.pending.is_empty() {
            state.webhooks_with_work.remove(&d.webhook_id);
        } else {
            state.webhooks_with_work.insert(d.webhook_id);
        }
    }
}

/// Fold the webhook's and its deliveries' events; others are not this machine's.
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    // A webhook's subscriptions (`State::subscriptions`) are taken out before an event that
    // may change them and put back after it, as the webhook then is.
    let resubscribe = match &env.event {
        Event::WebhookCreated { webhook_id, .. }
        | Event::WebhookUpdated { webhook_id, .. }
        | Event::WebhookDeleted { webhook_id } => Some(*webhook_id),
        _ => None,
    };
    if let Some(id) = resubscribe {
        subscribe(state, &id, false);
    }
    evolve_event(state, env, at);
    if let Some(id) = resubscribe {
        subscribe(state, &id, true);
    }
}

/// Insert (`on`) or remove the webhook's entries of `State::subscriptions`: one per event name
/// it is subscribed to and index it is limited to (`None`: every index), while it is not
/// deleted. (An entry's webhook may be disabled or paused: delivery looks at that.)
fn subscribe(state: &mut State, id: &spool_model::WebhookId, on: bool) {
    let Some(w) = state.webhooks.get(id).filter(|w| w.is_live()) else { return };
    let scopes: Vec<Option<spool_model::IndexId>> = match &w.index_ids {
        // Limited to no index: only events without one reach it (they read every entry of
        // their name); a nil id stands for it, as no index has one.
        Some(list) if list.is_empty() => vec![Some(spool_model::IndexId(ulid::Ulid::nil()))],
        Some(list) => list.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let keys: Vec<_> = w.events.iter().flat_map(|name| scopes.iter().map(move |scope| (*name, *scope, *id))).collect();
    for k in keys {
        if on {
            state.subscriptions.insert(k);
        } else {
            state.subscriptions.remove(&k);
        }
    }
}

fn evolve_event(state: &mut State, env: &Envelope, at: u64) {
    match &env.event {
        Event::PartitionIngested { partition, through_seq } => {
            state.ingested.insert(*partition, *through_seq);
        }
        Event::WebhookCreated { webhook_id, name, url, events, index_ids, metadata_json, secret } => {
            state.webhooks.insert(
                *webhook_id,
                Webhook {
                    webhook_id: *webhook_id,
                    name: name.clone(),
                    url: url.clone(),
                    events: events.clone(),
                    index_ids: index_ids.clone(),
                    metadata_json: metadata_json.clone(),
                    status: spool_model::WebhookStatus::Active,
                    secret: Some(secret.clone()),
                    previous_secret: None,
                    created_at_ms: at,
                    updated_at_ms: at,
                    failure_count: 0,
                    last_failure_at_ms: None,
                    last_success_at_ms: None,
                    next_sequence: 1,
                    deleted: false,
                    open: BTreeSet::new(),
                    open_by_status: Default::default(),
                    delivered: 0,
                    pending: BTreeSet::new(),
                    bulk_retry: None,
                    last_bulk_retried: None,
                },
            );
        }
        Event::WebhookUpdated { webhook_id, name, url, events, index_ids, metadata_json, status } => {
            if let Some(w) = state.webhooks.get_mut(webhook_id) {
                if let Some(v) = name {
                    w.name = v.clone();
                }
                if let Some(v) = url {
                    w.url = v.clone();
                }
                if let Some(v) = events {
                    w.events = v.clone();
                }
                if let Some(v) = index_ids {
                    w.index_ids = Some(v.clone());
                }
                if let Some(v) = metadata_json {
                    w.metadata_json = v.clone();
                }
                // Only `active`, `paused` and `disabled` were ever written; another text is no status.
                if let Some(v) = *status {
                    if v == spool_model::WebhookStatus::Active {
                        w.failure_count = 0;
                    }
                    w.status = v;
                }
                w.updated_at_ms = at;
            }
        }
        Event::WebhookSecretRotated { webhook_id, secret, grace_until_ms } => {
            if let Some(w) = state.webhooks.get_mut(webhook_id) {
                w.previous_secret = w.secret.take().map(|s| (s, *grace_until_ms));
                w.secret = Some(secret.clone());
                w.updated_at_ms = at;
            }
        }
        Event::WebhookDeleted { webhook_id } => {
            if let Some(w) = state.webhooks.get_mut(webhook_id) {
                w.deleted = true;
                // The data key is gone: keep no copy of the sealed bytes.
                w.secret = None;
                w.previous_secret = None;
                w.pending.clear();
                w.updated_at_ms = at;
            }
            state.webhooks_with_work.remove(webhook_id);
        }
        Event::DeliveryCreated { delivery_id, webhook_id, event_type, sequence, index_id, payload_json } => {
            state.deliveries.insert(
                *delivery_id,
                Delivery {
                    delivery_id: *delivery_id,
                    webhook_id: *webhook_id,
                    event_type: *event_type,
                    sequence: *sequence,
                    index_id: *index_id,
                    payload_json: payload_json.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    last_attempt_at_ms: None,
                    next_retry_at_ms: None,
                    response_status_code: None,
                    response_body: None,
                    error_message: None,
                    created_at_ms: at,
                    completed_at_ms: None,
                },
            );
            if let Some(w) = state.webhooks.get_mut(webhook_id) {
                w.next_sequence = w.next_sequence.max(sequence + 1);
                w.open.insert((at, *delivery_id));
                w.open_by_status.insert(DeliveryStatus::Pending, (at, *delivery_id));
                w.pending.insert((*sequence, *delivery_id));
                state.webhooks_with_work.insert(*webhook_id);
            }
        }
        Event::DeliveryAttempted {
            delivery_id,
            webhook_id,
            attempt,
            status_code,
            response_excerpt,
            error,
            delivered,
            retry_at_ms,
            ..
        } => {
            let to = if *delivered {
                DeliveryStatus::Delivered
            } else if retry_at_ms.is_some() {
                DeliveryStatus::Retrying
            } else {
                DeliveryStatus::Failed
            };
            if let Some(d) = state.deliveries.get_mut(delivery_id) {
                d.attempts = *attempt;
                d.last_attempt_at_ms = Some(at);
                d.response_status_code = *status_code;
                d.response_body = response_excerpt.clone();
                d.error_message = error.clone();
                d.next_retry_at_ms = *retry_at_ms;
                if to != DeliveryStatus::Retrying {
                    d.completed_at_ms = Some(at);
                }
            }
            set_delivery_status(state, delivery_id, to);
            if let Some(due) = retry_at_ms {
                state.set_timer(Timer::DeliveryRetry { delivery_id: *delivery_id, attempt: *attempt }, *due);
            }
            // Delivered: it never changes again, and leaves the state for its row.
            if to == DeliveryStatus::Delivered
                && let Some(d) = state.deliveries.remove(delivery_id)
            {
                if let Some(w) = state.webhooks.get_mut(&d.webhook_id) {
                    w.open.remove(&(d.created_at_ms, d.delivery_id));
                    w.delivered += 1;
                }
                if state.rows.emit {
                    state.rows.delivered(d, env.seq);
                }
            }
            if let Some(w) = state.webhooks.get_mut(webhook_id) {
                match to {
                    DeliveryStatus::Delivered => {
                        w.failure_count = 0;
                        w.last_success_at_ms = Some(at);
                    }
                    DeliveryStatus::Failed => {
                        w.failure_count += 1;
                        w.last_failure_at_ms = Some(at);
                    }
                    _ => w.last_failure_at_ms = Some(at),
                }
            }
        }
        Event::BulkRetryStarted { webhook_id, status, from_ms, to_ms } => {
            if let Some(w) = state.webhooks.get_mut(webhook_id) {
                w.bulk_retry = Some(BulkRetry {
                    status: DeliveryStatus::parse(status).unwrap_or(DeliveryStatus::Failed),
                    from_ms: *from_ms,
                    to_ms: *to_ms,
                    after: None,
                    retried: 0,
                });
            }
        }
        Event::BulkRetryProgressed { webhook_id, after_ms, after, retried } => {
            if let Some(b) = state.webhooks.get_mut(webhook_id).and_then(|w| w.bulk_retry.as_mut()) {
                b.after = Some((*after_ms, *after));
                b.retried = *retried;
            }
        }
        Event::BulkRetryFinished { webhook_id, retried } => {
            if let Some(w) = state.webhooks.get_mut(webhook_id) {
                w.bulk_retry = None;
                w.last_bulk_retried = Some(*retried);
            }
        }
        Event::DeliveryPending { delivery_id, .. } => {
            let attempts = state.deliveries.get(delivery_id).map(|d| d.attempts);
            if let Some(a) = attempts {
                state.clear_timer(&Timer::DeliveryRetry { delivery_id: *delivery_id, attempt: a });
            }
            // Only a delivery that waits or failed goes out again (a stale timer changes nothing).
            let again = state
                .deliveries
                .get(delivery_id)
                .is_some_and(|d| matches!(d.status, DeliveryStatus::Retrying | DeliveryStatus::Failed));
            if again {
                if let Some(d) = state.deliveries.get_mut(delivery_id) {
                    d.next_retry_at_ms = None;
                    d.completed_at_ms = None;
                }
                set_delivery_status(state, delivery_id, DeliveryStatus::Pending);
            }
        }
        _ => {}
    }
}
