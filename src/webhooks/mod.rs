//! Outbound webhooks: subscriptions, fan-out of outbox events into deliveries, the
//! delivery worker (Standard Webhooks signing, retries persisted as `next_attempt_at`,
//! leases in the graph), the attempt log, and the payload cleaner.
//!
//! Graph tables (all rows carry their id string in `key`; times are epoch milliseconds):
//! - `outbox_event` — written by actions inside their own transaction
//!   ([`crate::outbox::OutboxEvent`]); `fanned_out` flips once deliveries exist.
//! - `webhook_subscription` — url, event filter, secret(s), failure counters.
//! - `webhook_delivery` — one per (event, subscription), id `{event_id}_{subscription_id}`,
//!   so fan-out is exactly once even when repeated after a crash; `status` is
//!   `pending` / `succeeded` / `failed`, `next_attempt_at` and the lease
//!   (`locked_until`, `lease`) are what the worker claims on.
//! - `webhook_attempt` — one per HTTP attempt (kept after payloads expire).
//!
//! **Architecture Invariant.** Nothing the worker needs lives only in memory: a restart
//! (or another replica) picks pending deliveries up from the graph.

pub(crate) mod destination;
pub(crate) mod net;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::graph::{Graph, GraphResult};
use crate::outbox::{EventPublisher, EventType, OutboxEvent};
pub(crate) use crate::time::{ms_to_rfc3339, now_ms};
pub use settings::WebhookSettings;

/// Response bodies are kept up to this many bytes (as svix-server).
pub const RESPONSE_BODY_LIMIT: usize = 20_000;
const FAN_OUT_BATCH: usize = 100;
const CLEAN_BATCH: usize = 500;

pub(crate) const SCHEMA: &str = r#"
DEFINE TABLE IF NOT EXISTS outbox_event SCHEMALESS;
DEFINE INDEX IF NOT EXISTS outbox_fanned ON outbox_event FIELDS fanned_out, created_ms;
DEFINE INDEX IF NOT EXISTS outbox_created ON outbox_event FIELDS created_ms;
DEFINE TABLE IF NOT EXISTS webhook_subscription SCHEMALESS;
DEFINE TABLE IF NOT EXISTS webhook_delivery SCHEMALESS;
DEFINE INDEX IF NOT EXISTS delivery_due ON webhook_delivery FIELDS status, next_attempt_at;
DEFINE INDEX IF NOT EXISTS delivery_sub ON webhook_delivery FIELDS subscription_id, created_ms;
DEFINE INDEX IF NOT EXISTS delivery_event ON webhook_delivery FIELDS event_id;
DEFINE TABLE IF NOT EXISTS webhook_attempt SCHEMALESS;
DEFINE INDEX IF NOT EXISTS attempt_delivery ON webhook_attempt FIELDS delivery_id;
DEFINE INDEX IF NOT EXISTS attempt_created ON webhook_attempt FIELDS created_ms;
"#;

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A subscription as stored. No `Debug`: it holds the signing secrets, which must never
/// reach a log.
#[derive(Clone, Deserialize, Serialize)]
pub(crate) struct SubRow {
    pub key: String,
    pub url: String,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub action_id: Option<String>,
    pub enabled: bool,
    pub secret: String,
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default)]
    pub previous_secret_expires_ms: Option<i64>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub first_failure_ms: Option<i64>,
    #[serde(default)]
    pub disabled_reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl SubRow {
    fn matches(&self, event: &OutboxEvent) -> bool {
        self.enabled
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self
                .agent_id
                .as_ref()
                .is_none_or(|a| event.agent_id.as_deref() == Some(a.as_str()))
            && self
                .action_id
                .as_ref()
                .is_none_or(|a| event.action_id.as_deref() == Some(a.as_str()))
    }

    /// Secrets that sign right now: the current one, and the previous one during its grace.
    fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_secret_expires_ms)
            && until > now
        {
            out.push(prev.as_str());
        }
        out
    }
}

/// A delivery as stored.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DeliveryRow {
    pub key: String,
    pub event_id: String,
    pub subscription_id: String,
    pub event_type: String,
    pub status: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub scheduled_attempts: u32,
    #[serde(default)]
    pub next_attempt_at: i64,
    pub created_ms: i64,
    #[serde(default)]
    pub last_attempt_ms: Option<i64>,
    #[serde(default)]
    pub last_status_code: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub completed_ms: Option<i64>,
}

/// One attempt as stored (and served).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AttemptRow {
    pub key: String,
    pub delivery_id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub trigger: String,
    pub url: String,
    #[serde(default)]
    pub status_code: Option<u16>,
    pub success: bool,
    pub duration_ms: i64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub response_body: Option<String>,
    pub created_ms: i64,
}

/// How an attempt ended, for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Success,
    Retryable,
    Permanent,
}

struct Outcome {
    status_code: Option<u16>,
    duration_ms: i64,
    error: Option<String>,
    body: Option<String>,
    retry_after: Option<Duration>,
    class: Class,
}

/// Sign `{id}.{timestamp}.{body}` with every secret: `v1,<b64> v1,<b64>`.
pub(crate) fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut parts = Vec::new();
    for secret in secrets {
        let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
        let Ok(key) = B64.decode(raw) else { continue };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            continue;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        parts.push(format!("v1,{}", B64.encode(mac.finalize().into_bytes())));
    }
    parts.join(" ")
}

pub(crate) fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", B64.encode(bytes))
}

/// The outbound webhook service: shared by the API handlers and the worker.
pub struct Webhooks {
    graph: Graph,
    settings: WebhookSettings,
    policy: Arc<net::Policy>,
    client: reqwest::Client,
    publisher: EventPublisher,
    catalogue: Vec<EventType>,
    /// In-flight attempts per subscription in this process.
    per_sub: Mutex<HashMap<String, usize>>,
    instance: String,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    pub(crate) async fn new(
        graph: Graph,
        settings: WebhookSettings,
        publisher: EventPublisher,
        catalogue: Vec<EventType>,
    ) -> GraphResult<Self> {
        graph.apply_schema("webhooks", SCHEMA).await?;
        let policy = Arc::new(net::Policy::new(&settings));
        let client = net::client(&settings, policy.clone());
        Ok(Self {
            graph,
            settings,
            policy,
            client,
            publisher,
            catalogue,
            per_sub: Mutex::new(HashMap::new()),
            instance: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// Every event type subscriptions may name.
    pub fn catalogue(&self) -> &[EventType] {
        &self.catalogue
    }

    /// The settings in use.
    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// The destination policy (what a subscription URL may point at).
    pub(crate) fn policy(&self) -> &net::Policy {
        &self.policy
    }

    /// Wakes the worker after a commit that created deliveries or events.
    pub(crate) fn publisher(&self) -> &EventPublisher {
        &self.publisher
    }

    pub(crate) async fn subscription(&self, id: &str) -> GraphResult<Option<SubRow>> {
        self.graph
            .query_opt(
                "SELECT * FROM type::record('webhook_subscription', $id);",
                json!({"id": id}),
                0,
            )
            .await
    }

    /// Delete a subscription and fail its pending deliveries.
    ///
    /// Not one transaction: failing thousands of deliveries in the transaction that
    /// deletes the subscription conflicts with every attempt the worker records
    /// meanwhile, and the retried transaction could take longer than any client waits.
    /// The delete commits first; then unleased pending deliveries are failed in batches.
    /// A delivery leased right now is left to its worker, which finds the subscription
    /// gone and fails it with the same reason (see `process`).
    pub(crate) async fn delete_subscription(&self, id: &str) -> GraphResult<()> {
        self.graph
            .query(
                "DELETE type::record('webhook_subscription', $id);",
                json!({"id": id}),
            )
            .await?;
        let mut conflicts = 0;
        loop {
            let now = now_ms();
            let out = self
                .graph
                .query(
                    "LET $ids = (SELECT VALUE id FROM webhook_delivery WHERE subscription_id = $id \
                     AND status = 'pending' AND locked_until < $now LIMIT $n); \
                     UPDATE $ids SET status = 'failed', last_error = 'subscription deleted', \
                     completed_ms = $now WHERE status = 'pending' AND locked_until < $now RETURN NONE; \
                     RETURN array::len($ids);",
                    json!({"id": id, "now": now, "n": CLEAN_BATCH}),
                )
                .await;
            let n = match out {
                Ok(out) => out.last().and_then(Value::as_u64).unwrap_or(0),
                // The worker claimed one of these rows at the same moment: take the
                // batch afresh (a claimed row is no longer selected). Past a bound, the
                // rest is the worker's to settle as it comes due.
                Err(e) if e.is_conflict() => {
                    conflicts += 1;
                    if conflicts > 16 {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n < CLEAN_BATCH as u64 {
                return Ok(());
            }
        }
    }

    // ---- fan-out ----------------------------------------------------------------

    /// Turn unfanned outbox events into deliveries; returns how many events were handled.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn fan_out(&self) -> GraphResult<usize> {
        let events: Vec<OutboxEvent> = self
            .graph
            .query_rows(
                "SELECT * FROM outbox_event WHERE fanned_out = false ORDER BY created_ms LIMIT $n;",
                json!({"n": FAN_OUT_BATCH}),
                0,
            )
            .await?;
        if events.is_empty() {
            return Ok(0);
        }
        let subs: Vec<SubRow> = self
            .graph
            .query_rows(
                "SELECT * FROM webhook_subscription WHERE enabled = true;",
                Value::Null,
                0,
            )
            .await?;
        let now = now_ms();
        let rows: Vec<Value> = events
            .iter()
            .flat_map(|event| {
                subs.iter()
                    .filter(|s| s.matches(event))
                    .map(move |s| delivery_row(event, &s.key, now, 0, ""))
            })
            .collect();
        let ids: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
        // The whole batch in one transaction (one commit, not one per event: under load
        // a commit per event competed with the writes that produce the events).
        // Deterministic ids: repeating a fan-out (after a crash, or on another replica)
        // inserts nothing twice.
        let sql = if rows.is_empty() {
            "BEGIN; UPDATE $ids.map(|$i| type::record('outbox_event', $i)) SET fanned_out = true; COMMIT;"
        } else {
            "BEGIN; INSERT IGNORE INTO webhook_delivery $rows; \
             UPDATE $ids.map(|$i| type::record('outbox_event', $i)) SET fanned_out = true; COMMIT;"
        };
        self.graph
            .transaction(sql, json!({"ids": ids, "rows": rows}))
            .await?;
        Ok(events.len())
    }

    // ---- claiming and delivering ------------------------------------------------

    /// Claim a delivery for this worker until the lease expires. `None` when it is not
    /// due, already leased, or no longer pending.
    async fn claim(&self, id: &str, lease: &str, force: bool) -> GraphResult<Option<DeliveryRow>> {
        let now = now_ms();
        let until = now + duration_ms(self.settings.effective_lease());
        let sql = if force {
            "UPDATE type::record('webhook_delivery', $id) SET locked_until = $until, lease = $lease \
             WHERE locked_until < $now RETURN AFTER;"
        } else {
            "UPDATE type::record('webhook_delivery', $id) SET locked_until = $until, lease = $lease \
             WHERE status = 'pending' AND next_attempt_at <= $now AND locked_until < $now RETURN AFTER;"
        };
        match self
            .graph
            .query_opt(
                sql,
                json!({"id": id, "now": now, "until": until, "lease": lease}),
                0,
            )
            .await
        {
            Err(e) if e.is_conflict() => Ok(None),
            other => other,
        }
    }

    #[tracing::instrument(skip_all, fields(event = %event.key, subscription = %sub.key))]
    async fn send(&self, sub: &SubRow, event: &OutboxEvent) -> Outcome {
        let started = Instant::now();
        let Some(data) = event.data.clone().filter(|_| !event.payload_expired) else {
            return Outcome {
                status_code: None,
                duration_ms: 0,
                error: Some("payload expired (retention period passed)".to_owned()),
                body: None,
                retry_after: None,
                class: Class::Permanent,
            };
        };
        let envelope = json!({
            "id": event.key,
            "type": event.event_type,
            "timestamp": ms_to_rfc3339(event.created_ms),
            "data": data,
        });
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let ts = now_ms() / 1000;
        let signature = signature_header(&sub.signing_secrets(now_ms()), &event.key, ts, &body);
        // A destination the policy refuses stays refused: the failure is permanent, not
        // retried for a day (the same URL, or the same DNS answers, would be refused again).
        let result = match self.policy.check_url(&sub.url) {
            Err(net::UrlError::Invalid(e)) => Err((format!("URL refused: {e}"), Class::Permanent)),
            Err(refused @ net::UrlError::Refused(_)) => {
                Err((refused.to_string(), Class::Permanent))
            }
            Ok(url) => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &event.key)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(|e| match net::refusal_in(&e) {
                    Some(refused) => (refused.to_string(), Class::Permanent),
                    None => (describe_reqwest_error(e), Class::Retryable),
                }),
        };
        let mut outcome = match result {
            Err((error, class)) => Outcome {
                status_code: None,
                duration_ms: 0,
                error: Some(error),
                body: None,
                retry_after: None,
                class,
            },
            Ok(mut response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let mut buf = Vec::new();
                let mut read_error = None;
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = RESPONSE_BODY_LIMIT.saturating_sub(buf.len());
                            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                            if buf.len() >= RESPONSE_BODY_LIMIT {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            read_error = Some(describe_reqwest_error(e));
                            break;
                        }
                    }
                }
                let code = status.as_u16();
                let class = if status.is_success() {
                    Class::Success
                } else if status.is_server_error() || code == 408 || code == 429 {
                    Class::Retryable
                } else {
                    Class::Permanent
                };
                let error = match class {
                    Class::Success => None,
                    _ if status.is_redirection() => {
                        Some(format!("HTTP {code}: redirects are not followed"))
                    }
                    _ => Some(read_error.unwrap_or_else(|| format!("HTTP {code}"))),
                };
                Outcome {
                    status_code: Some(code),
                    duration_ms: 0,
                    error,
                    body: Some(String::from_utf8_lossy(&buf).into_owned()),
                    retry_after,
                    class,
                }
            }
        };
        outcome.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        outcome
    }

    fn retry_delay(&self, index: usize, outcome: &Outcome) -> Option<Duration> {
        let base = *self.settings.retry_schedule.get(index)?;
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        let mut delay = base.mul_f64(jitter);
        if let Some(hint) = outcome.retry_after {
            // Honour Retry-After, bounded: never sooner than scheduled, never more than
            // twice the scheduled delay.
            delay = hint.clamp(delay, base.saturating_mul(2).max(delay));
        }
        Some(delay)
    }

    /// Deliver one claimed delivery on schedule and record the outcome.
    #[tracing::instrument(skip_all, fields(delivery = %delivery.key))]
    async fn process(&self, delivery: DeliveryRow, lease: String) -> GraphResult<()> {
        let sub = self.subscription(&delivery.subscription_id).await?;
        let event: Option<OutboxEvent> = self
            .graph
            .query_opt(
                "SELECT * FROM type::record('outbox_event', $id);",
                json!({"id": delivery.event_id}),
                0,
            )
            .await?;
        let (Some(sub), Some(event)) = (sub, event) else {
            return self
                .abandon(&delivery.key, &lease, "subscription or event deleted")
                .await;
        };
        if !sub.enabled {
            return self
                .abandon(&delivery.key, &lease, "subscription disabled")
                .await;
        }
        if event.payload_expired || event.data.is_none() {
            // Not the endpoint's fault: fail the delivery without counting it against
            // the subscription.
            return self
                .abandon(&delivery.key, &lease, "payload expired before delivery")
                .await;
        }
        let outcome = self.send(&sub, &event).await;
        self.record(&delivery, &sub, &lease, outcome, "scheduled")
            .await
            .map(|_| ())
    }

    async fn abandon(&self, id: &str, lease: &str, reason: &str) -> GraphResult<()> {
        let now = now_ms();
        self.graph
            .query(
                "UPDATE type::record('webhook_delivery', $id) SET status = 'failed', \
                 last_error = $reason, completed_ms = $now, locked_until = 0, lease = '' \
                 WHERE lease = $lease;",
                json!({"id": id, "lease": lease, "reason": reason, "now": now}),
            )
            .await
            .map(|_| ())
    }

    /// Write the attempt and the delivery's new state (and, for a scheduled attempt,
    /// the subscription's failure counters) in one transaction, guarded by the lease.
    #[tracing::instrument(skip_all, fields(delivery = %delivery.key, trigger = %trigger))]
    async fn record(
        &self,
        delivery: &DeliveryRow,
        sub: &SubRow,
        lease: &str,
        outcome: Outcome,
        trigger: &str,
    ) -> GraphResult<AttemptRow> {
        let now = now_ms();
        let manual = trigger == "manual";
        let attempt = AttemptRow {
            key: format!("att_{}", uuid::Uuid::now_v7().simple()),
            delivery_id: delivery.key.clone(),
            subscription_id: sub.key.clone(),
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            attempt: delivery.attempts + 1,
            trigger: trigger.to_owned(),
            url: sub.url.clone(),
            status_code: outcome.status_code,
            success: outcome.class == Class::Success,
            duration_ms: outcome.duration_ms,
            error: outcome.error.clone(),
            response_body: outcome.body.clone(),
            created_ms: now,
        };
        let scheduled = if manual {
            delivery.scheduled_attempts
        } else {
            delivery.scheduled_attempts + 1
        };
        let mut next = delivery.next_attempt_at;
        let status = match outcome.class {
            Class::Success => "succeeded",
            _ if manual => {
                if delivery.status == "pending" {
                    "pending"
                } else {
                    "failed"
                }
            }
            Class::Retryable => match self.retry_delay(scheduled as usize - 1, &outcome) {
                Some(delay) => {
                    next = now + duration_ms(delay);
                    "pending"
                }
                None => "failed",
            },
            Class::Permanent => "failed",
        };
        let completed = (status != "pending").then_some(now);
        let mut sql = String::from(
            "BEGIN;
            LET $d = (UPDATE type::record('webhook_delivery', $id) SET status = $status,
                attempts += 1, scheduled_attempts = $scheduled, next_attempt_at = $next,
                locked_until = 0, lease = '', last_attempt_ms = $now, last_status_code = $code,
                last_error = $error, completed_ms = $completed WHERE lease = $lease RETURN AFTER);
            IF array::len($d) > 0 { CREATE type::record('webhook_attempt', $attempt.key) CONTENT $attempt; };",
        );
        if !manual && status == "succeeded" {
            sql.push_str(
                "IF array::len($d) > 0 { UPDATE type::record('webhook_subscription', $sub)
                    SET consecutive_failures = 0, first_failure_ms = NONE; };",
            );
        } else if !manual && status == "failed" {
            sql.push_str(
                "IF array::len($d) > 0 {
                    LET $s = (UPDATE type::record('webhook_subscription', $sub)
                        SET consecutive_failures += 1, first_failure_ms = first_failure_ms ?? $now
                        RETURN AFTER)[0];
                    IF $s.enabled AND ($s.consecutive_failures >= $threshold
                        OR $now - $s.first_failure_ms >= $period) {
                        UPDATE type::record('webhook_subscription', $sub) SET enabled = false,
                            disabled_reason = $reason, updated_ms = $now;
                        CREATE type::record('outbox_event', $op.key) CONTENT $op RETURN NONE;
                        UPDATE type::record('outbox_event', $op.key) SET data = {
                            subscription_id: $sub, url: $s.url,
                            consecutive_failures: $s.consecutive_failures, reason: $reason };
                    };
                };",
            );
        }
        sql.push_str("COMMIT;");
        let op = OutboxEvent::new("webhook.subscription.disabled", json!({}));
        let reason = format!(
            "disabled after {} consecutive failed events or {} h of failures",
            self.settings.disable_after_failures,
            self.settings.disable_after_failing_for.as_secs() / 3600
        );
        let attempt_json = serde_json::to_value(&attempt).unwrap_or(Value::Null);
        self.graph
            .transaction(
                &sql,
                json!({
                    "id": delivery.key, "status": status, "scheduled": scheduled, "next": next,
                    "now": now, "code": outcome.status_code, "error": outcome.error,
                    "completed": completed, "lease": lease, "attempt": attempt_json,
                    "sub": sub.key, "threshold": self.settings.disable_after_failures,
                    "period": duration_ms(self.settings.disable_after_failing_for),
                    "reason": reason, "op": op.row(),
                }),
            )
            .await?;
        if status == "failed" && !manual {
            // A disabling writes an operational event: let the worker fan it out now.
            self.publisher.notify();
        }
        Ok(attempt)
    }

    /// Send `delivery_id` now, outside the schedule (redeliver, test). One attempt; it
    /// does not schedule retries or count towards disabling.
    pub(crate) async fn deliver_now(&self, delivery_id: &str) -> Result<AttemptRow, ManualError> {
        let lease = format!("{}-{}", self.instance, uuid::Uuid::new_v4().simple());
        let Some(delivery) = self.claim(delivery_id, &lease, true).await? else {
            return Err(ManualError::Busy);
        };
        let sub = self.subscription(&delivery.subscription_id).await?;
        let event: Option<OutboxEvent> = self
            .graph
            .query_opt(
                "SELECT * FROM type::record('outbox_event', $id);",
                json!({"id": delivery.event_id}),
                0,
            )
            .await?;
        let (Some(sub), Some(event)) = (sub, event) else {
            self.release(delivery_id, &lease).await?;
            return Err(ManualError::Gone(
                "the subscription or the event no longer exists",
            ));
        };
        if event.payload_expired || event.data.is_none() {
            self.release(delivery_id, &lease).await?;
            return Err(ManualError::Gone("the event's payload has expired"));
        }
        let outcome = self.send(&sub, &event).await;
        Ok(self
            .record(&delivery, &sub, &lease, outcome, "manual")
            .await?)
    }

    async fn release(&self, id: &str, lease: &str) -> GraphResult<()> {
        self.graph
            .query(
                "UPDATE type::record('webhook_delivery', $id) SET locked_until = 0, lease = '' WHERE lease = $lease;",
                json!({"id": id, "lease": lease}),
            )
            .await
            .map(|_| ())
    }

    /// Create a `webhook.test` event for one subscription and send it now.
    pub(crate) async fn send_test(&self, sub: &SubRow) -> Result<AttemptRow, ManualError> {
        let mut event = OutboxEvent::new(
            "webhook.test",
            json!({"message": "This is a test event from graphagent.", "subscription_id": sub.key}),
        );
        event.fanned_out = true;
        let now = now_ms();
        // `sending`: never picked by the scheduler; the manual attempt settles it.
        let mut delivery = delivery_row(&event, &sub.key, now, 0, "");
        delivery["status"] = json!("sending");
        let delivery_id = delivery["key"].as_str().unwrap_or_default().to_owned();
        self.graph
            .transaction(
                "BEGIN; INSERT INTO outbox_event $event; INSERT INTO webhook_delivery $delivery; COMMIT;",
                json!({"event": event.row(), "delivery": delivery}),
            )
            .await?;
        self.deliver_now(&delivery_id).await
    }

    // ---- worker -----------------------------------------------------------------

    /// Claim due deliveries up to the free concurrency and start them.
    async fn dispatch_due(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        permits: &Arc<Semaphore>,
    ) -> GraphResult<usize> {
        let free = permits.available_permits();
        if free == 0 {
            return Ok(0);
        }
        let now = now_ms();
        let due: Vec<DeliveryRow> = self
            .graph
            .query_rows(
                "SELECT * FROM webhook_delivery WHERE status = 'pending' AND next_attempt_at <= $now \
                 AND locked_until < $now ORDER BY next_attempt_at LIMIT $n;",
                json!({"now": now, "n": free * 2}),
                0,
            )
            .await?;
        let mut started = 0;
        for candidate in due {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let sub_id = candidate.subscription_id.clone();
            {
                let Ok(mut per_sub) = self.per_sub.lock() else {
                    break;
                };
                let n = per_sub.entry(sub_id.clone()).or_default();
                if *n >= self.settings.per_subscription_concurrency {
                    continue;
                }
                *n += 1;
            }
            let lease = format!("{}-{}", self.instance, uuid::Uuid::new_v4().simple());
            let claimed = self.claim(&candidate.key, &lease, false).await;
            let delivery = match claimed {
                Ok(Some(d)) => d,
                other => {
                    if let Err(e) = other {
                        tracing::warn!(error = %e, "claiming a webhook delivery failed");
                    }
                    self.done(&sub_id);
                    continue;
                }
            };
            let slot = Slot {
                webhooks: self.clone(),
                sub_id,
                _permit: permit,
            };
            started += 1;
            tasks.spawn(async move {
                let id = delivery.key.clone();
                // Even if this panics, the slot is released on unwind and the lease
                // expires, so the delivery is picked up again.
                if let Err(e) = slot.webhooks.process(delivery, lease).await {
                    tracing::warn!(delivery = %id, error = %e, "recording a webhook attempt failed");
                }
                drop(slot);
            });
        }
        Ok(started)
    }

    fn done(&self, sub_id: &str) {
        if let Ok(mut per_sub) = self.per_sub.lock()
            && let Some(n) = per_sub.get_mut(sub_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_sub.remove(sub_id);
            }
        }
    }

    /// The delivery loop: fan out, claim due deliveries, sleep until notified or the
    /// poll interval passes. On cancel, stop claiming and let in-flight attempts finish.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.max_concurrency));
        let mut tasks = JoinSet::new();
        let cleaner = tokio::spawn(self.clone().run_cleaner(cancel.clone()));
        tracing::info!("webhook worker started");
        while !cancel.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let mut progressed = match self.fan_out().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook fan-out failed; will retry");
                    false
                }
            };
            match self.dispatch_due(&mut tasks, &permits).await {
                Ok(n) => progressed |= n > 0,
                Err(e) => tracing::warn!(error = %e, "webhook dispatch failed; will retry"),
            }
            if progressed {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = self.publisher.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Drain: attempts in flight finish (bounded by the timeout) and are recorded.
        while tasks.join_next().await.is_some() {}
        cleaner.abort();
        tracing::info!("webhook worker stopped");
    }

    async fn run_cleaner(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.settings.cleaner_interval) => {}
            }
            let cutoff = now_ms() - duration_ms(self.settings.payload_retention);
            match expire_payloads(&self.graph, cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired webhook payloads"),
                Err(e) => tracing::warn!(error = %e, "webhook payload cleaner failed"),
            }
        }
    }
}

/// One in-flight attempt's share of the concurrency limits; released on drop (also when
/// the task panics).
struct Slot {
    webhooks: Arc<Webhooks>,
    sub_id: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.webhooks.done(&self.sub_id);
    }
}

/// Remove the payload of events created before `cutoff_ms`, in batches; attempt and
/// delivery metadata are kept. Returns how many payloads were removed.
pub async fn expire_payloads(graph: &Graph, cutoff_ms: i64) -> GraphResult<usize> {
    let mut total = 0;
    loop {
        let out = graph
            .query(
                "LET $ids = (SELECT VALUE id FROM outbox_event WHERE created_ms < $cutoff \
                 AND payload_expired = false LIMIT $n); \
                 UPDATE $ids SET data = NONE, payload_expired = true RETURN NONE; \
                 RETURN array::len($ids);",
                json!({"cutoff": cutoff_ms, "n": CLEAN_BATCH}),
            )
            .await?;
        let n = out
            .last()
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        total += n;
        if n < CLEAN_BATCH {
            return Ok(total);
        }
    }
}

fn delivery_row(
    event: &OutboxEvent,
    sub_id: &str,
    now: i64,
    locked_until: i64,
    lease: &str,
) -> Value {
    let key = format!("{}_{}", event.key, sub_id);
    json!({
        "id": key, "key": key, "event_id": event.key, "subscription_id": sub_id,
        "event_type": event.event_type, "status": "pending", "attempts": 0, "scheduled_attempts": 0,
        "next_attempt_at": now, "locked_until": locked_until, "lease": lease,
        "created_ms": now,
    })
}

fn describe_reqwest_error(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The innermost cause names the reason (refused, DNS policy) without the URL.
    let mut source: Option<&dyn std::error::Error> = e.source();
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    match last {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}

/// Why a manual send could not happen.
#[derive(Debug)]
pub(crate) enum ManualError {
    /// Another attempt holds the lease.
    Busy,
    /// The payload, event or subscription is gone.
    Gone(&'static str),
    /// The graph failed.
    Graph(crate::graph::GraphError),
}

impl From<crate::graph::GraphError> for ManualError {
    fn from(e: crate::graph::GraphError) -> Self {
        Self::Graph(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_standard_webhooks_vector() {
        // Test vector from the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = signature_header(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    async fn service(graph: &Graph) -> Webhooks {
        Webhooks::new(
            graph.clone(),
            WebhookSettings::default(),
            EventPublisher::default(),
            crate::outbox::catalogue(Vec::new()),
        )
        .await
        .expect("service")
    }

    async fn count(graph: &Graph, sql: &str) -> u64 {
        graph.query(sql, Value::Null).await.expect("count")[0]
            .as_u64()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn two_replicas_never_claim_the_same_delivery() {
        let graph = Graph::memory().await.expect("graph");
        let (a, b) = (service(&graph).await, service(&graph).await);
        let event = OutboxEvent::new("webhook.test", json!({}));
        graph
            .query(
                "INSERT INTO webhook_delivery $row;",
                json!({"row": delivery_row(&event, "sub_1", now_ms() - 10, 0, "")}),
            )
            .await
            .expect("insert");
        let id = &format!("{}_sub_1", event.key);
        let (x, y) = tokio::join!(a.claim(id, "lease-a", false), b.claim(id, "lease-b", false));
        let claimed = [x.expect("a").is_some(), y.expect("b").is_some()];
        assert_eq!(claimed.iter().filter(|c| **c).count(), 1, "{claimed:?}");
        // Still leased: neither can take it again, not even by force.
        assert!(a.claim(id, "lease-c", false).await.expect("a").is_none());
        assert!(b.claim(id, "lease-d", true).await.expect("b").is_none());
    }

    #[tokio::test]
    async fn the_outbox_is_written_only_while_a_subscription_is_enabled() {
        let graph = Graph::memory().await.expect("graph");
        let _w = service(&graph).await;
        let emit = async |n: usize| {
            let rows: Vec<Value> = (0..n)
                .map(|_| {
                    EventPublisher::default()
                        .event("webhook.test", "agt", "act", json!({}))
                        .into_row()
                })
                .collect();
            graph
                .query(crate::outbox::INSERT_OUTBOX, json!({"outbox": rows}))
                .await
                .expect("emit");
            count(&graph, "RETURN count(SELECT id FROM outbox_event);").await
        };
        assert_eq!(emit(1).await, 0, "no subscription: nothing to publish");
        let sub = |id: &str, enabled: bool| {
            json!({"id": id, "key": id, "url": "https://example.com/h", "event_types": [],
                "enabled": enabled, "secret": new_secret(), "created_ms": 0, "updated_ms": 0})
        };
        graph
            .query(
                "INSERT INTO webhook_subscription $s;",
                json!({"s": sub("sub_off", false)}),
            )
            .await
            .expect("disabled sub");
        assert_eq!(emit(1).await, 0, "a disabled subscription receives nothing");
        graph
            .query(
                "INSERT INTO webhook_subscription $s;",
                json!({"s": sub("sub_on", true)}),
            )
            .await
            .expect("enabled sub");
        assert_eq!(emit(2).await, 2);
    }

    #[tokio::test]
    async fn fan_out_is_exactly_once_even_when_repeated() {
        let graph = Graph::memory().await.expect("graph");
        let w = service(&graph).await;
        let sub = json!({"id": "sub_1", "key": "sub_1", "url": "https://example.com/h",
            "event_types": [], "enabled": true, "secret": new_secret(),
            "created_ms": 0, "updated_ms": 0});
        graph
            .query("INSERT INTO webhook_subscription $s;", json!({"s": sub}))
            .await
            .expect("sub");
        let event = EventPublisher::default().event("webhook.test", "agt", "act", json!({}));
        let id = event.key.clone();
        graph
            .query(
                crate::outbox::INSERT_OUTBOX,
                json!({"outbox": [event.row()]}),
            )
            .await
            .expect("event");
        assert_eq!(w.fan_out().await.expect("fan out"), 1);
        // A crash after the deliveries were written but before the flag: run it again.
        graph
            .query("UPDATE outbox_event SET fanned_out = false;", Value::Null)
            .await
            .expect("reset");
        assert_eq!(w.fan_out().await.expect("fan out again"), 1);
        assert_eq!(w.fan_out().await.expect("nothing left"), 0);
        assert_eq!(
            count(&graph, "RETURN count(SELECT id FROM webhook_delivery);").await,
            1
        );
        let key = format!("{id}_sub_1");
        assert_eq!(
            count(
                &graph,
                &format!("RETURN count(SELECT id FROM webhook_delivery WHERE key = '{key}');")
            )
            .await,
            1
        );
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let a = new_secret();
        let b = new_secret();
        assert!(a.starts_with("whsec_") && a != b);
        let sig = signature_header(&[&a, &b], "evt_1", 1, b"{}");
        assert_eq!(sig.split(' ').count(), 2);
    }
}
