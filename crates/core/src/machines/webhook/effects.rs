use super::{DeliveryStatus, WEBHOOK_DELIVERIES_IN_FLIGHT_MAX};
use crate::{State, WorkKey};
use serde::Serialize;
use spool_model::{DeliveryId, Event, WebhookId};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WebhookEffect {
    /// POST the delivery (its `attempt`); answer `RecordDeliveryAttempt`.
    Deliver { webhook_id: WebhookId, delivery_id: DeliveryId, attempt: u32 },
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

/// The first pending deliveries of an active webhook, in sequence order (bounded).
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
    out.extend(
        w.pending
            .iter()
            .take(WEBHOOK_DELIVERIES_IN_FLIGHT_MAX)
            .filter_map(|(_, d)| state.deliveries.get(d))
            .filter(|d| d.status == DeliveryStatus::Pending)
            .map(|d| WebhookEffect::Deliver { webhook_id: id, delivery_id: d.delivery_id, attempt: d.attempts + 1 }),
    );
    out
}
