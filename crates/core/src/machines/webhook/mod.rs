//! The webhook machine (engine-spec/webhooks.md): webhooks and their deliveries. Deliveries
//! are an outbox in the log: `outbox` adds a `DeliveryCreated` for every matching webhook to the
//! same append as the domain event that causes it, so none can be lost or invented.

mod decide;
mod effects;
mod evolve;

pub use decide::{OUTBOX_STREAM, decide, fire_retry, outbox, outbox_rows, publish};
pub use effects::{WebhookEffect, effects_for, next_pending, work_key};
pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{DeliveryId, DomainEventName, IndexId, Sealed, WebhookId};
use std::collections::BTreeSet;

/// The event names a webhook may subscribe to (contract §4.1), in the contract's order.
pub const WEBHOOK_EVENTS: &[DomainEventName] = DomainEventName::ALL;
pub const WEBHOOK_NAME_CHARS_MAX: usize = 100;
pub const WEBHOOK_URL_CHARS_MAX: usize = 2048;
/// Largest `metadata` object (its JSON).
pub const WEBHOOK_METADATA_BYTES_MAX: usize = 16 * 1024;
/// Bytes of a receiver's answer kept with an attempt.
pub const RESPONSE_EXCERPT_BYTES_MAX: usize = 4096;
/// Deliveries of one webhook in flight at once: one, so they reach the receiver in `sequence`
/// order (a delivery waiting for a retry lets the next ones go).
pub const WEBHOOK_DELIVERIES_IN_FLIGHT_MAX: usize = 1;
/// Default of the consecutive failed deliveries after which a webhook is `disabled`.
pub const WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES: u32 = 20;
/// A receiver's `Retry-After` can push a retry later, by at most this much.
pub const RETRY_AFTER_CAP_MS: u64 = 3_600_000;
/// Deliveries a bulk retry looks at per step.
pub const BULK_RETRY_PAGE_MAX: usize = 256;
/// Jitter of a retry's wait, in percent either way.
pub const DELIVERY_RETRY_JITTER_PCT: u64 = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookCommand {
    /// The id is drawn by the runtime, which seals the secret with the webhook's data key
    /// (`secret` is filled in the sequencer).
    CreateWebhook {
        webhook_id: WebhookId,
        name: String,
        url: String,
        events: Vec<String>,
        index_ids: Option<Vec<IndexId>>,
        metadata_json: Option<String>,
        secret: Option<Sealed>,
    },
    UpdateWebhook {
        webhook_id: WebhookId,
        name: Option<String>,
        url: Option<String>,
        events: Option<Vec<String>>,
        index_ids: Option<Vec<IndexId>>,
        metadata_json: Option<Option<String>>,
        /// `active` or `paused` (`disabled` is set by the engine).
        status: Option<String>,
    },
    RotateWebhookSecret {
        webhook_id: WebhookId,
        secret: Option<Sealed>,
        grace_ms: u64,
    },
    DeleteWebhook {
        webhook_id: WebhookId,
    },
    /// Effect outcome: one attempt. `schedule_ms[n]` is the wait before attempt n+1 (the
    /// operator's retry schedule); `retry_after_ms` is the receiver's `Retry-After`.
    RecordDeliveryAttempt {
        delivery_id: DeliveryId,
        attempt: u32,
        status_code: Option<u16>,
        response_excerpt: Option<String>,
        error: Option<String>,
        duration_ms: u64,
        retry_after_ms: Option<u64>,
        schedule_ms: Vec<u64>,
        /// Failed deliveries in a row that disable the webhook (the operator's setting).
        #[serde(default = "default_disable_after")]
        disable_after: u32,
    },
    /// `POST /webhooks/deliveries/{id}/retry`: a failed (or waiting) delivery goes out now.
    RetryDelivery {
        delivery_id: DeliveryId,
    },
    /// `POST /webhooks/{id}/deliveries/retry`: retry every delivery in `status` (failed or
    /// retrying) created within the range, as a durable job of bounded steps.
    StartBulkRetry {
        webhook_id: WebhookId,
        status: DeliveryStatus,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    },
    /// Effect outcome: one step of a bulk retry.
    RunBulkRetryStep {
        webhook_id: WebhookId,
    },
    /// In the catalog of a partitioned cluster: index partition `partition`'s log was read from
    /// `after` + 1 through `through_seq`; `events` are its `DomainEventPublished` events, in
    /// order. Their deliveries are decided here (one per subscribed webhook, `sequence` per
    /// webhook) with the partition's cursor in the same append. Refused unless the cursor is at
    /// `after`, so a delivery is never decided twice for one event.
    Ingest {
        partition: u16,
        after: u64,
        through_seq: u64,
        events: Vec<spool_model::MirroredEvent>,
    },
}

/// A bulk retry under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRetry {
    pub status: DeliveryStatus,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// The last delivery looked at, by (created_ms, id).
    pub after: Option<(u64, DeliveryId)>,
    pub retried: u64,
}

fn default_disable_after() -> u32 {
    WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Retrying,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "retrying" => DeliveryStatus::Retrying,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub webhook_id: WebhookId,
    pub name: String,
    pub url: String,
    pub events: Vec<DomainEventName>,
    pub index_ids: Option<Vec<IndexId>>,
    pub metadata_json: Option<String>,
    pub status: spool_model::WebhookStatus,
    pub secret: Option<Sealed>,
    /// The secret before the last rotation, and until when it still signs.
    pub previous_secret: Option<(Sealed, u64)>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Consecutive failed deliveries (reset by a delivered one).
    pub failure_count: u32,
    pub last_failure_at_ms: Option<u64>,
    pub last_success_at_ms: Option<u64>,
    /// The next delivery's `sequence`.
    pub next_sequence: u64,
    pub deleted: bool,
    /// Deliveries not delivered (pending, retrying, failed), by (created_at, id): what a bulk
    /// retry looks at, and `GET /webhooks/{id}/deliveries` beside the delivered ones, which are
    /// rows of the `deliveries` and `webhook_deliveries` tables (`engine-spec/tables.md`).
    pub open: BTreeSet<(u64, DeliveryId)>,
    /// The same, by status: `GET /webhooks/{id}/deliveries?status=` pages one status's set.
    #[serde(default)]
    pub open_by_status: crate::workset::StatusSets<DeliveryStatus, (u64, DeliveryId)>,
    /// Deliveries delivered (each a row of the tables).
    #[serde(default)]
    pub delivered: u64,
    /// Deliveries waiting to go out, by sequence: the work `effects_for` offers, in order.
    pub pending: BTreeSet<(u64, DeliveryId)>,
    /// A bulk retry under way (one at a time), and how the last one ended.
    pub bulk_retry: Option<BulkRetry>,
    pub last_bulk_retried: Option<u64>,
}

impl Webhook {
    pub fn is_live(&self) -> bool {
        !self.deleted
    }
}

/// A delivery. One not delivered is in the state (`State::deliveries`); a delivered one is a
/// row of the `deliveries` table, written in the commit of the attempt that delivered it
/// (`encode_row`), and never changes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_type: DomainEventName,
    pub sequence: u64,
    pub index_id: Option<IndexId>,
    pub payload_json: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_attempt_at_ms: Option<u64>,
    pub next_retry_at_ms: Option<u64>,
    pub response_status_code: Option<u16>,
    pub response_body: Option<String>,
    pub error_message: Option<String>,
    pub created_at_ms: u64,
    pub completed_at_ms: Option<u64>,
}

/// The format of a delivery's row: its first byte.
pub const DELIVERY_ROW_FORMAT: u8 = 1;

impl Delivery {
    /// A delivered delivery's row: [`DELIVERY_ROW_FORMAT`] and the bincode of the delivery.
    pub fn encode_row(&self) -> Vec<u8> {
        crate::rows::encode_row(DELIVERY_ROW_FORMAT, self)
    }

    /// A row written by [`Delivery::encode_row`]; `None` for another format or damaged bytes.
    pub fn decode_row(bytes: &[u8]) -> Option<Delivery> {
        crate::rows::decode_row(DELIVERY_ROW_FORMAT, bytes)
    }
}

/// The key of a delivered delivery on its webhook's list (`webhook_deliveries`):
/// `{webhook}/{u64::MAX - created_at_ms, 16 hex}/{u128::MAX - id, 32 hex}`, so a webhook's keys
/// are one range, newest first (as the list pages).
pub fn webhook_delivery_key(webhook_id: &WebhookId, created_at_ms: u64, delivery_id: &DeliveryId) -> String {
    format!("{webhook_id}/{:016x}/{:032x}", u64::MAX - created_at_ms, u128::MAX - u128::from(delivery_id.0))
}

/// Where a webhook's keys start on `webhook_deliveries`.
pub fn webhook_delivery_prefix(webhook_id: &WebhookId) -> String {
    format!("{webhook_id}/")
}

/// The (created_at, delivery) of a [`webhook_delivery_key`]; `None` for another shape.
pub fn parse_webhook_delivery_key(key: &str) -> Option<(u64, DeliveryId)> {
    let mut parts = key.rsplitn(3, '/');
    let id = u128::MAX - u128::from_str_radix(parts.next()?, 16).ok()?;
    let created = u64::MAX - u64::from_str_radix(parts.next()?, 16).ok()?;
    Some((created, DeliveryId(ulid::Ulid(id))))
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = WebhookCommand;
    type Effect = WebhookEffect;
    type Key = spool_model::WebhookId;
    const NOT_FOUND: &'static [(&'static str, &'static str)] =
        &[("webhook", "resource_webhook_not_found"), ("delivery", "resource_delivery_not_found")];

    fn decide(
        state: &crate::State,
        cmd: &WebhookCommand,
        ctx: &mut crate::Ctx,
    ) -> Result<crate::Decision, crate::DomainError> {
        decide(state, cmd, ctx)
    }

    fn evolve(state: &mut crate::State, env: &spool_model::Envelope) {
        evolve(state, env)
    }

    fn work_key(event: &spool_model::Event) -> Option<crate::WorkKey> {
        work_key(event)
    }

    fn effects_for(state: &crate::State, key: spool_model::WebhookId) -> Vec<WebhookEffect> {
        effects_for(state, key)
    }

    fn with_work(state: &crate::State) -> Vec<spool_model::WebhookId> {
        state.webhooks_with_work.iter().copied().collect()
    }

    fn fire(
        state: &crate::State,
        timer: &crate::Timer,
        _ctx: &mut crate::Ctx,
    ) -> Option<Result<crate::Decision, crate::DomainError>> {
        match timer {
            crate::Timer::DeliveryRetry { .. } => Some(fire_retry(state, timer)),
            _ => None,
        }
    }
}
