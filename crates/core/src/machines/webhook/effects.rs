use super::{Delivery, DeliveryStatus};
use crate::{State, WorkKey};
use serde::Serialize;
use spool_model::{DeliveryId, Event, WebhookId};
use std::ops::Bound;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WebhookEffect {
    /// POST the webhook's pending deliveries, lowest `sequence` first, one at a time (the
    /// next once the previous one is answered); answer `RecordDeliveryAttempt` for each. One
    /// effect per webhook, so one sender: the executor pipelines each answer's record with the
    /// next POST, and a failed answer ends the effect (the next ones go on the next offer).
    Deliver { webhook_id: WebhookId },
    /// One step of a bulk retry: answer `RunBulkRetryStep`.
    BulkRetryStep { webhook_id: WebhookId },
}

impl WebhookEffect {
    pub fn work_key(&self) -> WorkKey {
        match self {
            WebhookEffect::Deliver { webhook_id, .. } | WebhookEffect::BulkRetryStep { webhook_id } => {
                WorkKey::Webhook(*webhook_id)
            }
        }
    }
}

/// The webhook whose effects this event can change.
pub fn work_key(event: &Event) -> Option<WorkKey> {
    match event {
        Event::WebhookUpdated { webhook_id, .. }
        | Event::WebhookDeleted { webhook_id }
        | Event::DeliveryCreated { webhook_id, .. }
        | Event::DeliveryAttempted { webhook_id, .. }
        | Event::DeliveryPending { webhook_id, .. }
        | Event::BulkRetryStarted { webhook_id, .. }
        | Event::BulkRetryProgressed { webhook_id, .. }
        | Event::BulkRetryFinished { webhook_id, .. } => Some(WorkKey::Webhook(*webhook_id)),
        _ => None,
    }
}

/// An active webhook's effects: its sender while a delivery is pending (one effect per
/// webhook, whatever the number of deliveries), and a bulk retry's step.
pub fn effects_for(state: &State, id: WebhookId) -> Vec<WebhookEffect> {
    let Some(w) = state.webhooks.get(&id) else { return Vec::new() };
    if !w.is_live() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if w.bulk_retry.is_some() {
        out.push(WebhookEffect::BulkRetryStep { webhook_id: id });
    }
    if w.status != spool_model::WebhookStatus::Active {
        return out;
    }
    if next_pending(state, id, None).is_some() {
        out.push(WebhookEffect::Deliver { webhook_id: id });
    }
    out
}

/// The first pending delivery of a webhook after `after` (its `(sequence, id)` key), in
/// sequence order: what its sender POSTs next. Looks at most `WEBHOOK_PENDING_LOOK_MAX` keys.
pub fn next_pending(
    state: &State,
    id: WebhookId,
    after: Option<(u64, DeliveryId)>,
) -> Option<((u64, DeliveryId), &Delivery)> {
    let w = state.webhooks.get(&id)?;
    let range = match after {
        None => w.pending.range(..),
        Some(k) => w.pending.range((Bound::Excluded(k), Bound::Unbounded)),
    };
    range
        .take(WEBHOOK_PENDING_LOOK_MAX)
        .filter_map(|k| state.deliveries.get(&k.1).map(|d| (*k, d)))
        .find(|(_, d)| d.status == DeliveryStatus::Pending)
}

/// Keys of a webhook's pending set looked at for the next one to send (all of them are
/// `pending`: the set holds nothing else; the bound keeps a broken invariant O(1)).
const WEBHOOK_PENDING_LOOK_MAX: usize = 16;
