//! The webhook machine's executor: sign a delivery's body (serialized once, at creation) and
//! POST it through a guarded client, then record the attempt. First attempts and retries draw
//! on separate pools, so a dead receiver's retries never delay fresh deliveries.
//!
//! Network policy (`WebhookSettings::allow_hosts`, `SPOOL_WEBHOOK_ALLOW_HOSTS`): `https` only,
//! and only public addresses, unless the host (name or IP) is allowed. The resolver checks every
//! address it returns, at connect time, so a name that resolves to a private address later (DNS
//! rebinding) is refused then too. Redirects are never followed.

use crate::Runtime;
use base64::Engine;
use hmac::{Hmac, Mac};
use spool_core::{Command, WebhookCommand};
use spool_model::WebhookId;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First attempts in flight at once (all webhooks).
pub const WEBHOOK_FIRST_ATTEMPTS_CONCURRENCY_MAX: usize = 64;
/// Retries in flight at once (all webhooks): a separate pool.
pub const WEBHOOK_RETRIES_CONCURRENCY_MAX: usize = 16;

/// Answers recorded by one webhook's sender whose commit it has not waited for yet.
pub const WEBHOOK_RECORDS_IN_FLIGHT_MAX: usize = 32;

/// Deliveries one sender sends before it ends and is offered again: it holds one of the
/// runtime's `EFFECTS_CONCURRENCY_MAX` effect slots, so a busy webhook takes turns with the
/// other effects (imports, exports, other webhooks) instead of keeping its slot.
pub const WEBHOOK_SENDS_PER_TURN_MAX: usize = 64;

/// Wait for a submitted command's commit.
pub(crate) async fn settle(
    rx: tokio::sync::oneshot::Receiver<crate::sequencer::Answered>,
) -> Result<(), crate::RuntimeError> {
    rx.await.map_err(|_| crate::RuntimeError::Stopped)?.map(|_| ())
}

/// The operator's webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Hosts or IPs that may be plain http and private (`SPOOL_WEBHOOK_ALLOW_HOSTS`).
    pub allow_hosts: Vec<String>,
    /// Waits before each attempt: `[0]` before the first (0 s), `[n]` before attempt n+1.
    pub retry_schedule_ms: Vec<u64>,
    pub timeout: Duration,
    pub rotation_grace: Duration,
    /// Failed deliveries in a row after which a webhook is disabled (`SPOOL_WEBHOOK_DISABLE_AFTER`).
    pub disable_after: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_hosts: Vec::new(),
            retry_schedule_ms: vec![0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000],
            timeout: Duration::from_secs(15),
            rotation_grace: Duration::from_secs(24 * 3600),
            disable_after: spool_core::machines::webhook::WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES,
        }
    }
}

/// Parse a duration such as `500ms`, `5s`, `5m`, `2h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        return None;
    };
    num.trim().parse::<u64>().ok().and_then(|n| n.checked_mul(mul)).map(Duration::from_millis)
}

/// A new webhook secret: `whsec_` + standard padded base64 of 32 random bytes.
pub fn new_secret(ids: &dyn crate::IdSource) -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&ids.entropy().to_le_bytes());
    bytes[16..].copy_from_slice(&ids.entropy().to_le_bytes());
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `sha256=<hex HMAC-SHA256(key = the whole secret string, body)>`.
pub fn sha256_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Standard Webhooks: `v1,<base64 HMAC-SHA256(key = base64-decoded bytes after whsec_,
/// "{id}.{timestamp}.{body}")>`.
pub fn standard_signature(secret: &str, msg_id: &str, timestamp: u64, body: &[u8]) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())))
}

/// A host name or IP literal listed in the allow list (an IP also when a listed CIDR holds it).
fn host_allowed(allow: &[String], host: &str) -> bool {
    allow.iter().any(|a| a.eq_ignore_ascii_case(host)) || host.parse::<IpAddr>().is_ok_and(|ip| ip_allowed(allow, ip))
}

/// An address listed in the allow list, exactly or inside a listed CIDR (`10.0.0.0/8`).
pub fn ip_allowed(allow: &[String], ip: IpAddr) -> bool {
    allow.iter().any(|a| match a.split_once('/') {
        None => a.parse::<IpAddr>().is_ok_and(|x| x == ip),
        Some((net, bits)) => match (net.parse::<IpAddr>(), bits.parse::<u32>()) {
            (Ok(IpAddr::V4(n)), Ok(b)) if b <= 32 => match ip {
                IpAddr::V4(v) => {
                    let mask = if b == 0 { 0 } else { u32::MAX << (32 - b) };
                    (u32::from(v) & mask) == (u32::from(n) & mask)
                }
                IpAddr::V6(_) => false,
            },
            (Ok(IpAddr::V6(n)), Ok(b)) if b <= 128 => match ip {
                IpAddr::V6(v) => {
                    let mask = if b == 0 { 0 } else { u128::MAX << (128 - b) };
                    (u128::from(v) & mask) == (u128::from(n) & mask)
                }
                IpAddr::V4(_) => false,
            },
            _ => false,
        },
    })
}

/// The first `max` bytes of an answer's body, read in chunks; the rest is never read (the
/// connection is dropped), so a receiver that answers gigabytes costs at most `max` bytes.
pub async fn read_excerpt(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(max - out.len());
                out.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// IPv4 special-purpose blocks (IANA's IPv4 Special-Purpose Address Registry, with multicast
/// and the reserved 240/4): none is a public unicast destination.
const V4_SPECIAL: [([u8; 4], u8); 19] = [
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 31, 196, 0], 24), // AS112-v4
    ([192, 52, 193, 0], 24), // AMT
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([192, 175, 48, 0], 24), // direct delegation AS112
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved (and 255.255.255.255, broadcast)
    ([255, 255, 255, 255], 32),
];

/// IPv6 special-purpose blocks inside global unicast 2000::/3 (everything outside 2000::/3 is
/// refused too, except the two forms that embed an IPv4 address, judged by that address).
const V6_SPECIAL_IN_GLOBAL: [(u128, u8); 5] = [
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 23), // IETF protocol assignments (Teredo, ORCHID, …)
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // documentation
    (0x2002_0000_0000_0000_0000_0000_0000_0000, 16), // 6to4 (embeds any IPv4 address)
    (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20), // documentation
    (0x2620_004f_8000_0000_0000_0000_0000_0000, 48), // direct delegation AS112
];

fn in_block(addr: u128, net: u128, bits: u8, width: u32) -> bool {
    let mask = if bits == 0 { 0 } else { u128::MAX << (width - bits as u32) };
    (addr & mask) == (net & mask)
}

/// Public unicast: no special-purpose address of IANA's IPv4 and IPv6 registries (loopback,
/// private, shared, link-local, documentation, benchmarking, reserved, multicast, ULA,
/// site-local, discard, 6to4, Teredo, …), also when an IPv4 address comes embedded in IPv6
/// (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, translated `::ffff:0:a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`): only a public IPv4 address behind NAT64 or the mapped form passes.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let a = u32::from(v4) as u128;
            !V4_SPECIAL.iter().any(|(net, bits)| in_block(a, u32::from_be_bytes(*net) as u128, *bits, 32))
        }
        IpAddr::V6(v6) => {
            let a = u128::from(v6);
            let embedded = std::net::Ipv4Addr::from((a & 0xffff_ffff) as u32);
            if in_block(a, 0xffff_0000_0000, 96, 128) || in_block(a, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96, 128)
            {
                // Mapped, or the well-known NAT64 prefix: as public as the IPv4 address.
                return is_public(IpAddr::V4(embedded));
            }
            in_block(a, 0x2000_0000_0000_0000_0000_0000_0000_0000, 3, 128)
                && !V6_SPECIAL_IN_GLOBAL.iter().any(|(net, bits)| in_block(a, *net, *bits, 128))
        }
    }
}

/// Check a webhook URL against the policy (at creation and update; the resolver checks again
/// at connect time). Returns a sentence for the 422.
pub fn check_target(settings: &WebhookSettings, raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    let host = url.host_str().ok_or("must name a host")?.trim_start_matches('[').trim_end_matches(']').to_string();
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user info".into());
    }
    let allowed = host_allowed(&settings.allow_hosts, &host);
    match url.scheme() {
        "https" => {}
        "http" if allowed => {}
        _ => return Err("must be https (plain http only for hosts in SPOOL_WEBHOOK_ALLOW_HOSTS)".into()),
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && !allowed
        && !is_public(ip)
    {
        return Err(
            "points to a private, loopback or link-local address (allow it with SPOOL_WEBHOOK_ALLOW_HOSTS)".into()
        );
    }
    Ok(())
}

/// A resolver that refuses private answers for hosts that are not allowed (DNS rebinding).
struct GuardedResolver {
    allow: Vec<String>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allowed = host_allowed(&self.allow, &host);
        let allow = self.allow.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allowed && addrs.iter().any(|a| !is_public(a.ip()) && !ip_allowed(&allow, a.ip())) {
                return Err(format!("{host} resolves to a private address; refused").into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// The executor's resources.
pub(crate) struct WebhookExecutor {
    pub settings: WebhookSettings,
    pub client: reqwest::Client,
    pub first_attempts: Arc<tokio::sync::Semaphore>,
    pub retries: Arc<tokio::sync::Semaphore>,
}

impl WebhookExecutor {
    pub fn new(settings: WebhookSettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .dns_resolver(Arc::new(GuardedResolver { allow: settings.allow_hosts.clone() }))
            .user_agent("VideoVector-Webhooks/1 (Spool)")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(WebhookExecutor {
            settings,
            client,
            first_attempts: Arc::new(tokio::sync::Semaphore::new(WEBHOOK_FIRST_ATTEMPTS_CONCURRENCY_MAX)),
            retries: Arc::new(tokio::sync::Semaphore::new(WEBHOOK_RETRIES_CONCURRENCY_MAX)),
        })
    }
}

/// What a POST came to.
pub struct Sent {
    pub status_code: Option<u16>,
    pub body: Option<String>,
    pub error: Option<String>,
    pub retry_after_ms: Option<u64>,
    pub duration_ms: u64,
}

/// The signing secrets of a webhook, opened: the current one, and the previous one while its
/// grace lasts.
pub struct Secrets {
    pub current: String,
    pub previous: Option<String>,
}

impl Runtime {
    /// Open a webhook's secrets (the previous one only while its grace lasts).
    pub fn webhook_secrets(&self, id: &WebhookId) -> Result<Secrets, String> {
        let (current, previous) = self
            .read(|st| {
                st.webhooks.get(id).filter(|w| w.is_live()).map(|w| (w.secret.clone(), w.previous_secret.clone()))
            })
            .ok_or_else(|| format!("webhook {id} is gone"))?;
        let open = |s: &spool_model::Sealed| -> Result<String, String> {
            match self.keyring().open(s) {
                Ok(Some(b)) => String::from_utf8(b.to_vec()).map_err(|_| "the stored secret is damaged".to_string()),
                Ok(None) => Err("the secret's key was deleted".into()),
                Err(e) => Err(format!("the secret cannot be opened: {e}")),
            }
        };
        let current = open(current.as_ref().ok_or("the webhook has no secret")?)?;
        let now = self.now_ms();
        let previous = match previous {
            Some((s, until)) if now < until => Some(open(&s)?),
            _ => None,
        };
        Ok(Secrets { current, previous })
    }

    /// POST a body, signed both ways, with these ids; never follows a redirect.
    pub async fn send_webhook(
        &self,
        url: &str,
        webhook_id: &str,
        delivery_id: &str,
        event_type: &str,
        body: &[u8],
        secrets: &Secrets,
    ) -> Sent {
        let ex = &self.executors.webhooks;
        let ts = self.now_ms() / 1000;
        let mut standard = standard_signature(&secrets.current, delivery_id, ts, body).unwrap_or_default();
        if let Some(prev) = &secrets.previous
            && let Some(p) = standard_signature(prev, delivery_id, ts, body)
        {
            standard = format!("{standard} {p}");
        }
        let started = Instant::now();
        let req = ex
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-webhook-signature", sha256_signature(&secrets.current, body))
            .header("x-webhook-id", webhook_id)
            .header("x-delivery-id", delivery_id)
            .header("x-event-type", event_type)
            .header("idempotency-key", delivery_id)
            .header("webhook-id", delivery_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", standard)
            .body(body.to_vec());
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after_ms = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| s.saturating_mul(1000));
                let bytes = read_excerpt(resp, spool_core::machines::webhook::RESPONSE_EXCERPT_BYTES_MAX).await;
                Sent {
                    status_code: Some(status),
                    body: Some(String::from_utf8_lossy(&bytes).into_owned()),
                    error: None,
                    retry_after_ms,
                    duration_ms: spool_model::num::ms(started.elapsed()),
                }
            }
            Err(e) => Sent {
                status_code: None,
                body: None,
                error: Some(if e.is_timeout() {
                    "the receiver did not answer in time".to_string()
                } else if e.is_connect() {
                    format!("could not connect: {e}")
                } else {
                    format!("the request failed: {e}")
                }),
                retry_after_ms: None,
                duration_ms: spool_model::num::ms(started.elapsed()),
            },
        }
    }

    /// The `Deliver` effect: a webhook's sender. It POSTs the webhook's pending deliveries in
    /// `sequence` order, one at a time, and records each answer as a command; the next POST
    /// goes once the previous one is answered, while that answer's record commits
    /// (`WEBHOOK_RECORDS_IN_FLIGHT_MAX` records at most wait for their commit). A failed
    /// answer ends it once every record is durable: the machine then decides the retry, and
    /// the next offer sends the deliveries after it. It also ends after
    /// `WEBHOOK_SENDS_PER_TURN_MAX` sends, to take turns for its effect slot. The state may lag the records in flight,
    /// so the sender walks the pending set from its own cursor, not from its head.
    pub(super) async fn deliver(self: &Arc<Self>, webhook_id: &WebhookId) -> Result<(), crate::RuntimeError> {
        let mut after = None;
        let mut records = std::collections::VecDeque::new();
        let mut first_error = None;
        let mut sent_this_turn = 0usize;
        loop {
            let next = self.read(|st| {
                let w = st.webhooks.get(webhook_id).filter(|w| w.is_live())?;
                if w.status != spool_model::WebhookStatus::Active {
                    return None;
                }
                let (key, d) = spool_core::machines::webhook::next_pending(st, *webhook_id, after)?;
                Some((key, d.delivery_id, d.attempts + 1, w.url.clone(), d.event_type, d.payload_json.clone()))
            });
            let Some((key, delivery_id, attempt, url, event_type, payload)) = next else { break };
            let pool = if attempt <= 1 {
                self.executors.webhooks.first_attempts.clone()
            } else {
                self.executors.webhooks.retries.clone()
            };
            let Ok(slot) = pool.acquire_owned().await else { break };
            let sent = match self.webhook_secrets(webhook_id) {
                Ok(secrets) => {
                    self.send_webhook(
                        &url,
                        &webhook_id.to_string(),
                        &delivery_id.to_string(),
                        event_type.as_str(),
                        payload.as_bytes(),
                        &secrets,
                    )
                    .await
                }
                Err(e) => Sent { status_code: None, body: None, error: Some(e), retry_after_ms: None, duration_ms: 0 },
            };
            drop(slot);
            let answered = sent.status_code.is_some_and(|s| (200..300).contains(&s));
            let record = self
                .submit(Command::Webhook(WebhookCommand::RecordDeliveryAttempt {
                    delivery_id,
                    attempt,
                    status_code: sent.status_code,
                    response_excerpt: sent.body,
                    error: sent.error,
                    duration_ms: sent.duration_ms,
                    retry_after_ms: sent.retry_after_ms,
                    schedule_ms: self.executors.webhooks.settings.retry_schedule_ms.clone(),
                    disable_after: self.executors.webhooks.settings.disable_after,
                }))
                .await;
            match record {
                Ok(rx) => records.push_back(rx),
                Err(e) => {
                    first_error.get_or_insert(e);
                    break;
                }
            }
            // Records already answered are read at once (a failed one stops the sender before
            // its next send, not 32 sends later); past the bound, the oldest is waited for.
            while let Some(front) = records.front_mut() {
                let answer = match front.try_recv() {
                    Ok(answer) => Some(answer.map(|_| ())),
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(Err(crate::RuntimeError::Stopped)),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
                };
                let result = match answer {
                    Some(result) => {
                        records.pop_front();
                        result
                    }
                    None if records.len() > WEBHOOK_RECORDS_IN_FLIGHT_MAX => match records.pop_front() {
                        Some(rx) => settle(rx).await,
                        None => break,
                    },
                    None => break,
                };
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            }
            // A record that failed to commit leaves its delivery pending: stop here, the next
            // offer sends it again.
            sent_this_turn += 1;
            if !answered || first_error.is_some() || sent_this_turn >= WEBHOOK_SENDS_PER_TURN_MAX {
                break;
            }
            after = Some(key);
        }
        for rx in records {
            if let Err(e) = settle(rx).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A webhook's creation, its secret sealed inside the sequencer with the webhook's own data
    /// key (the key's side write commits with `WebhookCreated`).
    pub fn create_webhook(cmd: Command, secret: String) -> crate::Work {
        crate::Work::Prepared(Box::new(move |_st, keyring| {
            let mut cmd = cmd;
            let mut side = Vec::new();
            if let Command::Webhook(WebhookCommand::CreateWebhook { webhook_id, secret: slot, .. }) = &mut cmd {
                let (sealed, put) = keyring.seal(&webhook_id.to_string(), secret.as_bytes())?;
                *slot = Some(sealed);
                side.push(put);
            }
            Ok((cmd, side))
        }))
    }

    /// A rotation: the new secret sealed with the webhook's data key, in the sequencer.
    pub fn rotate_webhook_secret(webhook_id: WebhookId, secret: String, grace_ms: u64) -> crate::Work {
        crate::Work::Prepared(Box::new(move |_st, keyring| {
            let (sealed, put) = keyring.seal(&webhook_id.to_string(), secret.as_bytes())?;
            Ok((
                Command::Webhook(WebhookCommand::RotateWebhookSecret { webhook_id, secret: Some(sealed), grace_ms }),
                vec![put],
            ))
        }))
    }
}

#[cfg(test)]
mod props {
    //! Property tests of the signing inputs (proptest): any secret, message id, timestamp and
    //! body are signed or refused, never a panic; a processor request signed with a `whsec_`
    //! secret carries the Standard Webhooks signature of the same inputs; any allow-list entry
    //! is read without a panic, and a CIDR holds the addresses it names.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn any_signing_input_is_signed_or_refused_never_a_panic(
            secret in ".{0,80}",
            id in ".{0,80}",
            ts in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = standard_signature(&secret, &id, ts, &body);
            let _ = sha256_signature(&secret, &body);
            let _ = crate::executors::prompt_run::sign_request(&secret, &id, ts, &body);
        }

        #[test]
        fn a_whsec_secret_signs_processor_requests_as_standard_webhooks(
            key in proptest::collection::vec(any::<u8>(), 1..64),
            id in "[a-z0-9_]{1,40}",
            ts in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            use base64::Engine;
            let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
            let standard = standard_signature(&secret, &id, ts, &body).expect("a whsec_ secret signs");
            prop_assert_eq!(crate::executors::prompt_run::sign_request(&secret, &id, ts, &body), standard);
        }

        #[test]
        fn any_allow_list_entry_is_read_without_a_panic(entry in ".{0,48}", v4 in any::<u32>(), v6 in any::<u128>()) {
            let allow = vec![entry];
            let _ = ip_allowed(&allow, IpAddr::V4(v4.into()));
            let _ = ip_allowed(&allow, IpAddr::V6(v6.into()));
        }

        #[test]
        fn a_cidr_holds_the_addresses_it_names(net in any::<u32>(), bits in 0u32..=32, host in any::<u32>()) {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            let inside = (net & mask) | (host & !mask);
            let allow = vec![format!("{}/{bits}", std::net::Ipv4Addr::from(net))];
            prop_assert!(ip_allowed(&allow, IpAddr::V4(inside.into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_both_schemes() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        // Standard Webhooks' published example (webhook-id msg_p5jXN8AQM9LWM0D4loKWxJek,
        // timestamp 1614265330, body {"test": 2432232314}).
        let sig = standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(sig.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        let s = sha256_signature("whsec_abc", b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
    }

    #[test]
    fn webhook_url_check_refuses_special_purpose_ranges_in_every_embedded_form() {
        let s = WebhookSettings::default();
        for bad in [
            "https://[::127.0.0.1]/h",
            "https://[::ffff:0:127.0.0.1]/h",
            "https://[::ffff:127.0.0.1]/h",
            "https://[64:ff9b::7f00:1]/h",
            "https://[64:ff9b:1::1]/h",
            "https://[2002:7f00:1::]/h",
            "https://[2001::1]/h",
            "https://[2001:db8::1]/h",
            "https://[3fff::1]/h",
            "https://[100::1]/h",
            "https://[fec0::1]/h",
            "https://[fe80::1]/h",
            "https://[ff02::1]/h",
            "https://[::]/h",
            "https://198.18.0.1/h",
            "https://198.19.255.255/h",
            "https://192.0.0.8/h",
            "https://240.0.0.1/h",
            "https://255.255.255.255/h",
            "https://100.64.0.1/h",
            "https://192.88.99.1/h",
            "https://0.1.2.3/h",
            "https://224.0.0.1/h",
        ] {
            assert!(check_target(&s, bad).is_err(), "{bad} was accepted");
        }
        for good in [
            "https://8.8.8.8/h",
            "https://[2606:4700::1111]/h",
            "https://[64:ff9b::808:808]/h",
            "https://[::ffff:8.8.8.8]/h",
        ] {
            assert!(check_target(&s, good).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        let mut s = WebhookSettings::default();
        assert!(check_target(&s, "https://hooks.example.com/x").is_ok());
        assert!(check_target(&s, "http://hooks.example.com/x").is_err());
        for bad in [
            "https://127.0.0.1/x",
            "https://10.0.0.8/x",
            "https://169.254.169.254/",
            "https://[::1]/",
            "https://[fd00::1]/",
        ] {
            assert!(check_target(&s, bad).is_err(), "{bad}");
        }
        s.allow_hosts = vec!["127.0.0.1".into()];
        assert!(check_target(&s, "http://127.0.0.1:9/x").is_ok());
        assert!(check_target(&s, "https://10.1.2.3/x").is_err());
        s.allow_hosts = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
        assert!(check_target(&s, "http://10.1.2.3/x").is_ok());
        assert!(check_target(&s, "https://[fd12::1]/x").is_ok());
        assert!(check_target(&s, "https://192.168.1.1/x").is_err());
        assert!(parse_duration("5m") == Some(Duration::from_secs(300)) && parse_duration("x").is_none());
    }
}

impl super::Execute for spool_core::WebhookEffect {
    async fn run(&self, rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError> {
        match self {
            spool_core::WebhookEffect::Deliver { webhook_id } => rt.deliver(webhook_id).await,
            spool_core::WebhookEffect::BulkRetryStep { webhook_id } => rt
                .execute(Command::Webhook(WebhookCommand::RunBulkRetryStep { webhook_id: *webhook_id }))
                .await
                .map(|_| ()),
        }
    }
}
