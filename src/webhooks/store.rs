//! The webhook tables in the graph: every statement the service and the worker run on
//! subscriptions, deliveries, attempts and the outbox, each guarded so that replicas
//! sharing one graph never double a delivery.

use serde_json::{Value, json};

use super::retry::Settled;
use super::rows::{AttemptRow, AttemptTrigger, DeliveryRow, DeliveryStatus, SubRow};
use crate::graph::{Graph, GraphResult};
use crate::outbox::OutboxEvent;
use crate::time::now_ms;

/// Outbox events turned into deliveries per transaction.
const FAN_OUT_BATCH: usize = 100;
/// Rows changed per statement by the cleaners.
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

/// A transaction that writes the attempt and the delivery's new state, guarded by the
/// lease (an attempt whose lease was taken over, because it outlived it, records
/// nothing), then `$then` when it did record. Static text: the statements take only
/// bound parameters.
macro_rules! record_sql {
    ($then:literal) => {
        concat!(
            "BEGIN;
            LET $d = (UPDATE type::record('webhook_delivery', $id) SET status = $status,
                attempts += 1, scheduled_attempts = $scheduled, next_attempt_at = $next,
                locked_until = 0, lease = '', last_attempt_ms = $now, last_status_code = $code,
                last_error = $error, completed_ms = $completed WHERE lease = $lease RETURN AFTER);
            IF array::len($d) > 0 {
                CREATE type::record('webhook_attempt', $attempt.key) CONTENT $attempt;",
            $then,
            "};
            COMMIT;"
        )
    };
}

/// A manual attempt, or a scheduled one that leaves the delivery pending.
const RECORD: &str = record_sql!("");

/// A scheduled success also resets the subscription's failure counters.
const RECORD_SUCCEEDED: &str = record_sql!(
    "UPDATE type::record('webhook_subscription', $sub)
        SET consecutive_failures = 0, first_failure_ms = NONE;"
);

/// A scheduled final failure also counts against the subscription, disabling it past
/// the threshold or the failing period, with a `webhook.subscription.disabled` event in
/// the same transaction.
const RECORD_FAILED: &str = record_sql!(
    "LET $s = (UPDATE type::record('webhook_subscription', $sub)
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
    };"
);

/// When a subscription is disabled for failing.
#[derive(Debug, Clone)]
pub(crate) struct DisablePolicy {
    /// Consecutive failed deliveries.
    pub after_failures: u32,
    /// Milliseconds since the first failure of the current streak.
    pub after_failing_ms: i64,
    /// The reason recorded and published.
    pub reason: String,
}

/// The webhook tables of one graph. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DeliveryStore {
    graph: Graph,
}

impl DeliveryStore {
    /// The store over `graph`, its schema applied.
    pub(crate) async fn open(graph: Graph) -> GraphResult<Self> {
        graph.apply_schema("webhooks", SCHEMA).await?;
        Ok(Self { graph })
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

    pub(crate) async fn event(&self, id: &str) -> GraphResult<Option<OutboxEvent>> {
        self.graph
            .query_opt(
                "SELECT * FROM type::record('outbox_event', $id);",
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
    /// gone and fails it with the same reason.
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
                    .map(move |s| DeliveryRow::new(event, &s.key, now).row())
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

    /// Up to `n` pending deliveries due at `now` and not leased, the most overdue first.
    pub(crate) async fn due(&self, now: i64, n: usize) -> GraphResult<Vec<DeliveryRow>> {
        self.graph
            .query_rows(
                "SELECT * FROM webhook_delivery WHERE status = 'pending' AND next_attempt_at <= $now \
                 AND locked_until < $now ORDER BY next_attempt_at LIMIT $n;",
                json!({"now": now, "n": n}),
                0,
            )
            .await
    }

    /// Lease a delivery until `until`. `None` when it is not due, already leased, or no
    /// longer pending; `force` (a manual attempt) takes any delivery not leased now.
    pub(crate) async fn claim(
        &self,
        id: &str,
        lease: &str,
        until: i64,
        force: bool,
    ) -> GraphResult<Option<DeliveryRow>> {
        let now = now_ms();
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

    /// Fail a leased delivery without an attempt (its subscription or payload is gone).
    pub(crate) async fn abandon(&self, id: &str, lease: &str, reason: &str) -> GraphResult<()> {
        self.graph
            .query(
                "UPDATE type::record('webhook_delivery', $id) SET status = 'failed', \
                 last_error = $reason, completed_ms = $now, locked_until = 0, lease = '' \
                 WHERE lease = $lease;",
                json!({"id": id, "lease": lease, "reason": reason, "now": now_ms()}),
            )
            .await
            .map(|_| ())
    }

    /// Give a lease back without an attempt.
    pub(crate) async fn release(&self, id: &str, lease: &str) -> GraphResult<()> {
        self.graph
            .query(
                "UPDATE type::record('webhook_delivery', $id) SET locked_until = 0, lease = '' WHERE lease = $lease;",
                json!({"id": id, "lease": lease}),
            )
            .await
            .map(|_| ())
    }

    /// Write `attempt` and the delivery's `settled` state in one transaction, guarded by
    /// the lease; a scheduled attempt also updates the subscription's failure counters
    /// (and may disable it by `disable`).
    #[tracing::instrument(skip_all, fields(delivery = %delivery.key, trigger = %attempt.trigger))]
    pub(crate) async fn record(
        &self,
        delivery: &DeliveryRow,
        lease: &str,
        attempt: &AttemptRow,
        settled: &Settled,
        disable: &DisablePolicy,
    ) -> GraphResult<()> {
        let scheduled = attempt.trigger == AttemptTrigger::Scheduled;
        // Only a scheduled final failure can disable the subscription, so only it needs
        // the event a disabling publishes.
        let (sql, op) = match settled.status {
            DeliveryStatus::Succeeded if scheduled => (RECORD_SUCCEEDED, None),
            DeliveryStatus::Failed if scheduled => (
                RECORD_FAILED,
                Some(OutboxEvent::new("webhook.subscription.disabled", json!({})).row()),
            ),
            _ => (RECORD, None),
        };
        self.graph
            .transaction(
                sql,
                json!({
                    "id": delivery.key, "status": settled.status, "scheduled": settled.scheduled_attempts,
                    "next": settled.next_attempt_at, "now": attempt.created_ms,
                    "code": attempt.status_code, "error": attempt.error,
                    "completed": settled.completed_ms, "lease": lease,
                    "attempt": serde_json::to_value(attempt).unwrap_or(Value::Null),
                    "sub": attempt.subscription_id, "threshold": disable.after_failures,
                    "period": disable.after_failing_ms, "reason": disable.reason, "op": op,
                }),
            )
            .await
            .map(|_| ())
    }

    /// Write a test event and its one delivery (status `sending`: never picked by the
    /// scheduler; the manual attempt settles it).
    pub(crate) async fn insert_test(
        &self,
        event: &OutboxEvent,
        delivery: &DeliveryRow,
    ) -> GraphResult<()> {
        self.graph
            .transaction(
                "BEGIN; INSERT INTO outbox_event $event; INSERT INTO webhook_delivery $delivery; COMMIT;",
                json!({"event": event.row(), "delivery": delivery.row()}),
            )
            .await
            .map(|_| ())
    }

    /// Remove the payload of events created before `cutoff_ms`, in batches; attempt and
    /// delivery metadata are kept. Returns how many payloads were removed.
    pub(crate) async fn expire_payloads(&self, cutoff_ms: i64) -> GraphResult<usize> {
        let mut total = 0;
        loop {
            let out = self
                .graph
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
}
