//! The webhook tables in the graph: every statement the service and the worker run on
//! subscriptions, deliveries, attempts and the outbox, each guarded so that replicas
//! sharing one graph never double a delivery.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::retry::Settled;
use super::rows::{AttemptRow, AttemptTrigger, DeliveryRow, DeliveryStatus, SubRow};
use crate::graph::{Graph, GraphResult};
use crate::outbox::OutboxEvent;
use crate::time::now_ms;

/// Outbox events turned into deliveries per transaction.
const FAN_OUT_BATCH: usize = 256;
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

/// Write a batch of attempts and their deliveries' new states in one transaction. Each
/// outcome is guarded by its lease (an attempt whose lease was taken over, because it
/// outlived it, records nothing). A scheduled success also resets the subscription's
/// failure counters, written only when there is something to reset: a write on every
/// success made concurrent outcomes of one subscription conflict on its row. A scheduled
/// final failure counts against the subscription, disabling it past the threshold or the
/// failing period, with a `webhook.subscription.disabled` event in the same transaction.
/// Static text: the statement takes only bound parameters.
const RECORD: &str = "BEGIN;
FOR $o IN $outcomes {
    LET $d = (UPDATE type::record('webhook_delivery', $o.id) SET status = $o.status,
        attempts += 1, scheduled_attempts = $o.scheduled, next_attempt_at = $o.next,
        locked_until = 0, lease = '', last_attempt_ms = $o.now, last_status_code = $o.code,
        last_error = $o.error, completed_ms = $o.completed WHERE lease = $o.lease RETURN AFTER);
    IF array::len($d) > 0 {
        CREATE type::record('webhook_attempt', $o.attempt.key) CONTENT $o.attempt;
        IF $o.effect = 'succeeded' {
            UPDATE type::record('webhook_subscription', $o.sub)
                SET consecutive_failures = 0, first_failure_ms = NONE
                WHERE consecutive_failures > 0 OR (first_failure_ms ?? 0) > 0;
        } ELSE IF $o.effect = 'failed' {
            LET $s = (UPDATE type::record('webhook_subscription', $o.sub)
                SET consecutive_failures += 1, first_failure_ms = first_failure_ms ?? $o.now
                RETURN AFTER)[0];
            IF $s.enabled AND ($s.consecutive_failures >= $threshold
                OR $o.now - $s.first_failure_ms >= $period) {
                UPDATE type::record('webhook_subscription', $o.sub) SET enabled = false,
                    disabled_reason = $reason, updated_ms = $o.now;
                CREATE type::record('outbox_event', $o.op.key) CONTENT $o.op RETURN NONE;
                UPDATE type::record('outbox_event', $o.op.key) SET data = {
                    subscription_id: $o.sub, url: $s.url,
                    consecutive_failures: $s.consecutive_failures, reason: $reason };
            };
        };
    };
};
COMMIT;";

/// One attempt's outcome, to be recorded by [`DeliveryStore::record_many`].
pub(crate) struct Recorded<'a> {
    pub delivery: &'a DeliveryRow,
    pub lease: &'a str,
    pub attempt: &'a AttemptRow,
    pub settled: &'a Settled,
}

impl Recorded<'_> {
    /// The bound row for [`RECORD`]: the delivery's new state, the attempt, and what it
    /// does to the subscription.
    fn row(&self) -> Value {
        let scheduled = self.attempt.trigger == AttemptTrigger::Scheduled;
        // Only a scheduled final failure can disable the subscription, so only it needs
        // the event a disabling publishes.
        let (effect, op) = match self.settled.status {
            DeliveryStatus::Succeeded if scheduled => ("succeeded", None),
            DeliveryStatus::Failed if scheduled => (
                "failed",
                Some(OutboxEvent::new("webhook.subscription.disabled", json!({})).row()),
            ),
            _ => ("none", None),
        };
        json!({
            "id": self.delivery.key, "status": self.settled.status,
            "scheduled": self.settled.scheduled_attempts, "next": self.settled.next_attempt_at,
            "now": self.attempt.created_ms, "code": self.attempt.status_code,
            "error": self.attempt.error, "completed": self.settled.completed_ms,
            "lease": self.lease,
            "attempt": serde_json::to_value(self.attempt).unwrap_or(Value::Null),
            "sub": self.attempt.subscription_id, "effect": effect, "op": op,
        })
    }
}

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

/// Outbox events to fan out, with the subscriptions and deliveries they make.
pub(crate) struct FanOut {
    pub events: Vec<OutboxEvent>,
    pub subs: Vec<SubRow>,
    pub deliveries: Vec<DeliveryRow>,
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

    /// Turn unfanned outbox events into deliveries, none leased; returns how many events
    /// were handled. (The worker leases what it can first: `worker::fan_out_and_start`.)
    #[cfg(test)]
    pub(crate) async fn fan_out(&self) -> GraphResult<usize> {
        let Some(fan) = self.pending_fan_out().await? else {
            return Ok(0);
        };
        self.commit_fan_out(&fan).await?;
        Ok(fan.events.len())
    }

    /// The oldest unfanned outbox events, the enabled subscriptions, and the deliveries
    /// they make (written by [`commit_fan_out`](Self::commit_fan_out), which the caller
    /// may have leased first). Reads only.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn pending_fan_out(&self) -> GraphResult<Option<FanOut>> {
        let events: Vec<OutboxEvent> = self
            .graph
            .query_rows(
                "SELECT * FROM outbox_event WHERE fanned_out = false ORDER BY created_ms LIMIT $n;",
                json!({"n": FAN_OUT_BATCH}),
                0,
            )
            .await?;
        if events.is_empty() {
            return Ok(None);
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
        let deliveries = events
            .iter()
            .flat_map(|event| {
                subs.iter()
                    .filter(|s| s.matches(event))
                    .map(move |s| DeliveryRow::new(event, &s.key, now))
            })
            .collect();
        Ok(Some(FanOut {
            events,
            subs,
            deliveries,
        }))
    }

    /// Write a fan-out in one transaction: mark its events fanned out and insert the
    /// deliveries of the events this transaction was the one to mark, leased or not as
    /// the caller set them. Returns the ids of those events; a delivery of any other
    /// event was written by another worker (or replica) and is not this caller's.
    ///
    /// Two workers fanning out one event both write its row, so one of them conflicts
    /// and runs again, finding it already marked. Deterministic delivery ids make a
    /// repeated insert a no-op as well.
    #[tracing::instrument(skip_all, fields(events = fan.events.len()))]
    pub(crate) async fn commit_fan_out(&self, fan: &FanOut) -> GraphResult<HashSet<String>> {
        let ids: Vec<&str> = fan.events.iter().map(|e| e.key.as_str()).collect();
        let mut attempt = 0;
        loop {
            match self.try_commit_fan_out(&ids, &fan.deliveries).await {
                Err(e)
                    if e.is_conflict()
                        && crate::graph::retry_after_conflict(&mut attempt).await => {}
                other => return other,
            }
        }
    }

    async fn try_commit_fan_out(
        &self,
        ids: &[&str],
        deliveries: &[DeliveryRow],
    ) -> GraphResult<HashSet<String>> {
        let txn = self.graph.begin().await?;
        let marked = txn
            .query(
                "UPDATE $ids.map(|$i| type::record('outbox_event', $i)) SET fanned_out = true \
                 WHERE fanned_out = false RETURN VALUE record::id(id);",
                json!({ "ids": ids }),
            )
            .await?
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        let marked: HashSet<String> = crate::graph::rows_from(marked)?.into_iter().collect();
        let rows: Vec<Value> = deliveries
            .iter()
            .filter(|d| marked.contains(&d.event_id))
            .map(DeliveryRow::row)
            .collect();
        if !rows.is_empty() {
            txn.query(
                "INSERT IGNORE INTO webhook_delivery $rows RETURN NONE;",
                json!({ "rows": rows }),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(marked)
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

    /// Lease every delivery of `ids` that is still due and not leased, all under `lease`
    /// until `until`, in one transaction; the deliveries won. Another replica claiming
    /// some of them at the same moment makes the transaction conflict and run again, so
    /// a delivery is never handed to two workers.
    pub(crate) async fn claim_many(
        &self,
        ids: &[&str],
        lease: &str,
        until: i64,
    ) -> GraphResult<Vec<DeliveryRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = self
            .graph
            .transaction(
                "BEGIN; UPDATE $ids.map(|$i| type::record('webhook_delivery', $i)) \
                 SET locked_until = $until, lease = $lease WHERE status = 'pending' \
                 AND next_attempt_at <= $now AND locked_until < $now RETURN AFTER; COMMIT;",
                json!({"ids": ids, "now": now_ms(), "until": until, "lease": lease}),
            )
            .await?;
        let won = if out.len() > 1 {
            out.swap_remove(1)
        } else {
            Value::Null
        };
        crate::graph::rows_from(won)
    }

    /// The subscriptions named, in one read (missing ones are left out).
    pub(crate) async fn subscriptions(&self, ids: &[&str]) -> GraphResult<Vec<SubRow>> {
        self.graph
            .query_rows(
                "SELECT * FROM $ids.map(|$i| type::record('webhook_subscription', $i));",
                json!({"ids": ids}),
                0,
            )
            .await
    }

    /// The outbox events named, in one read (missing ones are left out).
    pub(crate) async fn events(&self, ids: &[&str]) -> GraphResult<Vec<OutboxEvent>> {
        self.graph
            .query_rows(
                "SELECT * FROM $ids.map(|$i| type::record('outbox_event', $i));",
                json!({"ids": ids}),
                0,
            )
            .await
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
        let one = Recorded {
            delivery,
            lease,
            attempt,
            settled,
        };
        self.record_many(std::slice::from_ref(&one), disable).await
    }

    /// Record a batch of outcomes in one transaction (one commit for the batch), each
    /// exactly as [`record`](Self::record) would.
    #[tracing::instrument(skip_all, fields(outcomes = outcomes.len()))]
    pub(crate) async fn record_many(
        &self,
        outcomes: &[Recorded<'_>],
        disable: &DisablePolicy,
    ) -> GraphResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let rows: Vec<Value> = outcomes.iter().map(Recorded::row).collect();
        self.graph
            .transaction(
                RECORD,
                json!({
                    "outcomes": rows, "threshold": disable.after_failures,
                    "period": disable.after_failing_ms, "reason": disable.reason,
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
