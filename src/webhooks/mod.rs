//! Outbound webhooks: subscriptions, fan-out of outbox events into deliveries, the
//! delivery worker (Standard Webhooks signing, retries persisted as `next_attempt_at`,
//! leases in the graph), the attempt log, and the payload cleaner.
//!
//! The parts, bottom-up: `rows` (the stored shapes), `signing`, `retry` (the policy as
//! pure functions), `attempt` (one HTTP attempt, no graph), `store` (every statement on
//! the webhook tables), `worker` and `cleaner` (the background tasks); [`Webhooks`] is
//! the service the API handlers and the worker share. `destination`, `net` and
//! `settings` hold the SSRF policy, the delivery client and the settings.
//!
//! Graph tables (all rows carry their id string in `key`; times are epoch milliseconds):
//! - `outbox_event` — written by actions inside their own transaction
//!   ([`crate::outbox::OutboxEvent`]); `fanned_out` flips once deliveries exist.
//! - `webhook_subscription` — url, event filter, secret(s), failure counters.
//! - `webhook_delivery` — one per (event, subscription), id `{event_id}_{subscription_id}`,
//!   so fan-out is exactly once even when repeated after a crash; `status` is a
//!   [`DeliveryStatus`], `next_attempt_at` and the lease (`locked_until`, `lease`) are
//!   what the worker claims on.
//! - `webhook_attempt` — one per HTTP attempt (kept after payloads expire).
//!
//! **Architecture Invariant.** Nothing the worker needs lives only in memory: a restart
//! (or another replica) picks pending deliveries up from the graph.

mod attempt;
mod cleaner;
pub(crate) mod destination;
pub(crate) mod net;
mod retry;
mod rows;
pub mod settings;
mod signing;
mod store;
mod worker;

use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::graph::{GraphError, GraphResult};
use crate::outbox::{EventPublisher, EventType, OutboxEvent};
use crate::time::now_ms;
pub use attempt::RESPONSE_BODY_LIMIT;
use attempt::Sender;
use retry::duration_ms;
pub(crate) use rows::{AttemptRow, DeliveryRow, SubRow};
pub use rows::{AttemptTrigger, DeliveryStatus};
pub use settings::WebhookSettings;
pub(crate) use signing::new_secret;
use store::{DeliveryStore, DisablePolicy};

/// The outbound webhook service: shared by the API handlers and the worker.
pub struct Webhooks {
    store: DeliveryStore,
    sender: Sender,
    settings: WebhookSettings,
    publisher: EventPublisher,
    catalogue: Vec<EventType>,
    disable: DisablePolicy,
    /// Prefix of this process's leases, so a lease names who holds it.
    instance: String,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    pub(crate) async fn new(
        graph: crate::graph::Graph,
        settings: WebhookSettings,
        publisher: EventPublisher,
        catalogue: Vec<EventType>,
    ) -> GraphResult<Self> {
        let store = DeliveryStore::open(graph).await?;
        let policy = Arc::new(net::Policy::new(&settings));
        let sender = Sender::new(net::client(&settings, policy.clone()), policy);
        let disable = DisablePolicy {
            after_failures: settings.disable_after_failures,
            after_failing_ms: duration_ms(settings.disable_after_failing_for),
            reason: format!(
                "disabled after {} consecutive failed events or {} h of failures",
                settings.disable_after_failures,
                settings.disable_after_failing_for.as_secs() / 3600
            ),
        };
        Ok(Self {
            store,
            sender,
            settings,
            publisher,
            catalogue,
            disable,
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
        self.sender.policy()
    }

    /// Wakes the worker after a commit that created deliveries or events.
    pub(crate) fn publisher(&self) -> &EventPublisher {
        &self.publisher
    }

    pub(crate) fn store(&self) -> &DeliveryStore {
        &self.store
    }

    pub(crate) async fn subscription(&self, id: &str) -> GraphResult<Option<SubRow>> {
        self.store.subscription(id).await
    }

    /// Delete a subscription and fail its pending deliveries (see
    /// [`DeliveryStore::delete_subscription`]).
    pub(crate) async fn delete_subscription(&self, id: &str) -> GraphResult<()> {
        self.store.delete_subscription(id).await
    }

    /// A lease name unique to one claim by this process.
    fn new_lease(&self) -> String {
        format!("{}-{}", self.instance, uuid::Uuid::new_v4().simple())
    }

    /// Lease `id` for one attempt (see [`DeliveryStore::claim`]).
    async fn claim(&self, id: &str, lease: &str, force: bool) -> GraphResult<Option<DeliveryRow>> {
        let until = now_ms() + duration_ms(self.settings.effective_lease());
        self.store.claim(id, lease, until, force).await
    }

    /// Attempt a leased delivery now, then record the attempt and the delivery's new
    /// state (retry, success, failure, maybe the subscription's disabling) in one
    /// transaction guarded by the lease.
    async fn attempt(
        &self,
        delivery: &DeliveryRow,
        sub: &SubRow,
        event: &OutboxEvent,
        lease: &str,
        trigger: AttemptTrigger,
    ) -> GraphResult<AttemptRow> {
        let (attempt, settled) = self.send(delivery, sub, event, trigger).await;
        self.store
            .record(delivery, lease, &attempt, &settled, &self.disable)
            .await?;
        if settled.status == DeliveryStatus::Failed && trigger == AttemptTrigger::Scheduled {
            // A disabling writes an operational event: let the worker fan it out now.
            self.publisher.notify();
        }
        Ok(attempt)
    }

    /// POST a leased delivery now: the attempt row and the delivery's next state, not yet
    /// recorded.
    async fn send(
        &self,
        delivery: &DeliveryRow,
        sub: &SubRow,
        event: &OutboxEvent,
        trigger: AttemptTrigger,
    ) -> (AttemptRow, retry::Settled) {
        let outcome = self.sender.send(sub, event).await;
        crate::telemetry::outbound_attempt(outcome.class.label(), outcome.duration_ms);
        let now = now_ms();
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        let settled = retry::settle(delivery, outcome.class, trigger, now, |failed| {
            retry::retry_delay(
                &self.settings.retry_schedule,
                failed,
                outcome.retry_after,
                jitter,
            )
        });
        let attempt = AttemptRow {
            key: format!("att_{}", uuid::Uuid::now_v7().simple()),
            delivery_id: delivery.key.clone(),
            subscription_id: sub.key.clone(),
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            attempt: delivery.attempts + 1,
            trigger,
            url: sub.url.clone(),
            status_code: outcome.status_code,
            success: outcome.class == retry::Class::Success,
            duration_ms: outcome.duration_ms,
            error: outcome.error,
            response_body: outcome.body,
            created_ms: now,
        };
        (attempt, settled)
    }

    /// Record scheduled outcomes in one transaction; when that fails, each on its own, so
    /// one bad outcome costs only itself (the others' leases would otherwise expire and
    /// their events be sent again).
    async fn record_many(&self, outcomes: &[store::Recorded<'_>]) {
        if let Err(e) = self.store.record_many(outcomes, &self.disable).await {
            tracing::warn!(error = %e, outcomes = outcomes.len(), "recording a batch of webhook attempts failed; recording them one by one");
            for o in outcomes {
                if let Err(e) = self
                    .store
                    .record(o.delivery, o.lease, o.attempt, o.settled, &self.disable)
                    .await
                {
                    tracing::warn!(delivery = %o.delivery.key, error = %e, "recording a webhook attempt failed");
                }
            }
        }
        if outcomes
            .iter()
            .any(|o| o.settled.status == DeliveryStatus::Failed)
        {
            // A disabling writes an operational event: let the worker fan it out now.
            self.publisher.notify();
        }
    }

    /// Send `delivery_id` now, outside the schedule (redeliver, test). One attempt; it
    /// does not schedule retries or count towards disabling.
    pub(crate) async fn deliver_now(&self, delivery_id: &str) -> Result<AttemptRow, ManualError> {
        let lease = self.new_lease();
        let Some(delivery) = self.claim(delivery_id, &lease, true).await? else {
            return Err(ManualError::Busy);
        };
        let sub = self.store.subscription(&delivery.subscription_id).await?;
        let event = self.store.event(&delivery.event_id).await?;
        let (Some(sub), Some(event)) = (sub, event) else {
            self.store.release(delivery_id, &lease).await?;
            return Err(ManualError::Gone(
                "the subscription or the event no longer exists",
            ));
        };
        if event.payload_expired || event.data.is_none() {
            self.store.release(delivery_id, &lease).await?;
            return Err(ManualError::Gone("the event's payload has expired"));
        }
        Ok(self
            .attempt(&delivery, &sub, &event, &lease, AttemptTrigger::Manual)
            .await?)
    }

    /// Create a `webhook.test` event for one subscription and send it now.
    pub(crate) async fn send_test(&self, sub: &SubRow) -> Result<AttemptRow, ManualError> {
        let mut event = OutboxEvent::new(
            "webhook.test",
            json!({"message": "This is a test event from graphagent.", "subscription_id": sub.key}),
        );
        event.fanned_out = true;
        let mut delivery = DeliveryRow::new(&event, &sub.key, now_ms());
        delivery.status = DeliveryStatus::Sending;
        self.store.insert_test(&event, &delivery).await?;
        self.deliver_now(&delivery.key).await
    }

    /// Run the delivery worker (and the payload cleaner) until `cancel`.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        worker::run(self, cancel).await;
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
    Graph(GraphError),
}

impl From<GraphError> for ManualError {
    fn from(e: GraphError) -> Self {
        Self::Graph(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;
    use crate::outbox::EventPublisher;
    use crate::time::now_ms;
    use rows::DeliveryRow;
    use serde_json::Value;
    use signing::new_secret;

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
                json!({"row": DeliveryRow::new(&event, "sub_1", now_ms() - 10).row()}),
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

    async fn insert_due(graph: &Graph, n: usize, sub: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let event = OutboxEvent::new("webhook.test", json!({}));
            let row = DeliveryRow::new(&event, sub, now_ms() - 10);
            ids.push(row.key.clone());
            graph
                .query(
                    "INSERT INTO webhook_delivery $row;",
                    json!({"row": row.row()}),
                )
                .await
                .expect("insert");
        }
        ids
    }

    #[tokio::test]
    async fn a_batch_claim_never_hands_a_delivery_to_two_workers() {
        let graph = Graph::memory().await.expect("graph");
        let (a, b) = (service(&graph).await, service(&graph).await);
        let ids = insert_due(&graph, 60, "sub_1").await;
        let all: Vec<&str> = ids.iter().map(String::as_str).collect();
        let until = now_ms() + 60_000;
        // Overlapping batches, claimed at the same moment by two replicas.
        let (x, y) = tokio::join!(
            a.store().claim_many(&all[..40], "lease-a", until),
            b.store().claim_many(&all[20..], "lease-b", until)
        );
        let (x, y) = (x.expect("a"), y.expect("b"));
        let mut won: Vec<&str> = x.iter().chain(&y).map(|d| d.key.as_str()).collect();
        won.sort_unstable();
        let before = won.len();
        won.dedup();
        assert_eq!(won.len(), before, "a delivery was claimed twice");
        assert!(x.iter().all(|d| d.lease == "lease-a"));
        assert!(y.iter().all(|d| d.lease == "lease-b"));
        // What each claimed is leased to it in the graph; nothing can be claimed again.
        let leased = count(
            &graph,
            "RETURN count(SELECT id FROM webhook_delivery WHERE lease != '' AND locked_until > time::millis(time::now()));",
        )
        .await;
        assert_eq!(leased, won.len() as u64);
        assert!(
            a.store()
                .claim_many(&won, "lease-c", until)
                .await
                .expect("again")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_batch_reads_its_events_and_subscriptions_at_once() {
        let graph = Graph::memory().await.expect("graph");
        let w = service(&graph).await;
        let sub = json!({"id": "sub_1", "key": "sub_1", "url": "https://example.com/h",
            "event_types": [], "enabled": true, "secret": new_secret(),
            "created_ms": 0, "updated_ms": 0});
        graph
            .query("INSERT INTO webhook_subscription $s;", json!({"s": sub}))
            .await
            .expect("sub");
        let events: Vec<OutboxEvent> = (0..3)
            .map(|_| EventPublisher::default().event("webhook.test", "agt", "act", json!({})))
            .collect();
        let rows: Vec<Value> = events.iter().map(OutboxEvent::row).collect();
        graph
            .query(crate::outbox::INSERT_OUTBOX, json!({"outbox": rows}))
            .await
            .expect("events");
        let mut ids: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
        ids.push("evt_missing");
        let mut read: Vec<String> = w
            .store()
            .events(&ids)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.key)
            .collect();
        read.sort_unstable();
        let mut want: Vec<String> = events.iter().map(|e| e.key.clone()).collect();
        want.sort_unstable();
        assert_eq!(read, want);
        let subs = w
            .store()
            .subscriptions(&["sub_1", "sub_gone"])
            .await
            .expect("subs");
        assert_eq!(
            subs.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["sub_1"]
        );
    }

    #[tokio::test]
    async fn a_batch_of_outcomes_records_each_its_own_way() {
        let graph = Graph::memory().await.expect("graph");
        let w = service(&graph).await;
        graph
            .query(
                "INSERT INTO webhook_subscription $s;",
                json!({"s": {"id": "sub_1", "key": "sub_1", "url": "https://example.com/h",
                    "event_types": [], "enabled": true, "secret": new_secret(),
                    "consecutive_failures": 3, "first_failure_ms": 1,
                    "created_ms": 0, "updated_ms": 0}}),
            )
            .await
            .expect("sub");
        let ids = insert_due(&graph, 4, "sub_1").await;
        let all: Vec<&str> = ids.iter().map(String::as_str).collect();
        let claimed = w
            .store()
            .claim_many(&all, "lease-1", now_ms() + 60_000)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 4);
        let now = now_ms();
        let attempt = |d: &DeliveryRow, code: u16| AttemptRow {
            key: format!("att_{}", d.key),
            delivery_id: d.key.clone(),
            subscription_id: "sub_1".into(),
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            attempt: 1,
            trigger: AttemptTrigger::Scheduled,
            url: "https://example.com/h".into(),
            status_code: Some(code),
            success: code == 200,
            duration_ms: 1,
            error: (code != 200).then(|| format!("HTTP {code}")),
            response_body: None,
            created_ms: now,
        };
        let settled = |status, next, completed| retry::Settled {
            status,
            scheduled_attempts: 1,
            next_attempt_at: next,
            completed_ms: completed,
        };
        let by_key = |k: &str| claimed.iter().find(|d| d.key == k).expect("claimed");
        let (ok, retry, failed, lost) = (
            by_key(&ids[0]),
            by_key(&ids[1]),
            by_key(&ids[2]),
            by_key(&ids[3]),
        );
        let rows = [
            (
                ok,
                200,
                settled(DeliveryStatus::Succeeded, now, Some(now)),
                "lease-1",
            ),
            (
                retry,
                503,
                settled(DeliveryStatus::Pending, now + 5_000, None),
                "lease-1",
            ),
            (
                failed,
                400,
                settled(DeliveryStatus::Failed, now, Some(now)),
                "lease-1",
            ),
            // Its lease was taken over meanwhile: nothing of it is recorded.
            (
                lost,
                200,
                settled(DeliveryStatus::Succeeded, now, Some(now)),
                "lease-stale",
            ),
        ];
        let attempts: Vec<AttemptRow> = rows.iter().map(|(d, c, _, _)| attempt(d, *c)).collect();
        let outcomes: Vec<store::Recorded<'_>> = rows
            .iter()
            .zip(&attempts)
            .map(|((d, _, s, lease), a)| store::Recorded {
                delivery: d,
                lease,
                attempt: a,
                settled: s,
            })
            .collect();
        w.record_many(&outcomes).await;
        let state = |id: &str| {
            let graph = graph.clone();
            let id = id.to_owned();
            async move {
                graph
                    .query(
                        "SELECT VALUE [status, attempts, next_attempt_at, lease] FROM ONLY type::record('webhook_delivery', $id);",
                        json!({"id": id}),
                    )
                    .await
                    .expect("state")[0]
                    .clone()
            }
        };
        assert_eq!(state(&ids[0]).await, json!(["succeeded", 1, now, ""]));
        assert_eq!(state(&ids[1]).await, json!(["pending", 1, now + 5_000, ""]));
        assert_eq!(state(&ids[2]).await, json!(["failed", 1, now, ""]));
        assert_eq!(state(&ids[3]).await[0], json!("pending"));
        assert_eq!(state(&ids[3]).await[3], json!("lease-1"));
        assert_eq!(
            count(&graph, "RETURN count(SELECT id FROM webhook_attempt);").await,
            3
        );
        // In batch order: the success reset the streak, the final failure started one.
        let sub = graph
            .query(
                "SELECT VALUE [consecutive_failures, first_failure_ms] FROM ONLY webhook_subscription:sub_1;",
                Value::Null,
            )
            .await
            .expect("sub")[0]
            .clone();
        assert_eq!(sub, json!([1, now]));
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
        assert_eq!(w.store().fan_out().await.expect("fan out"), 1);
        // A crash after the deliveries were written but before the flag: run it again.
        graph
            .query("UPDATE outbox_event SET fanned_out = false;", Value::Null)
            .await
            .expect("reset");
        assert_eq!(w.store().fan_out().await.expect("fan out again"), 1);
        assert_eq!(w.store().fan_out().await.expect("nothing left"), 0);
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
    /// Two workers (replicas) fanning out the same events at once, each leasing the
    /// deliveries to itself: exactly one of them marks each event and gets its
    /// deliveries; the other gets none and the rows carry the winner's lease.
    #[tokio::test]
    async fn concurrent_fan_outs_lease_each_delivery_to_one_worker() {
        let graph = Graph::memory().await.expect("graph");
        let w = service(&graph).await;
        let sub = json!({"id": "sub_1", "key": "sub_1", "url": "https://example.com/h",
            "event_types": [], "enabled": true, "secret": new_secret(),
            "created_ms": 0, "updated_ms": 0});
        graph
            .query("INSERT INTO webhook_subscription $s;", json!({"s": sub}))
            .await
            .expect("sub");
        let publisher = EventPublisher::default();
        let rows: Vec<Value> = (0..20)
            .map(|i| {
                publisher
                    .event("webhook.test", "agt", "act", json!({"i": i}))
                    .row()
            })
            .collect();
        graph
            .query(crate::outbox::INSERT_OUTBOX, json!({"outbox": rows}))
            .await
            .expect("events");
        // Both read the same pending events before either writes, as two replicas can.
        let store = w.store();
        let mut fans = Vec::new();
        for lease in ["lease-a", "lease-b"] {
            let mut fan = store
                .pending_fan_out()
                .await
                .expect("read")
                .expect("events");
            for d in &mut fan.deliveries {
                d.lease = lease.to_owned();
                d.locked_until = i64::MAX;
            }
            fans.push(fan);
        }
        let (a, b) = tokio::join!(
            store.commit_fan_out(&fans[0]),
            store.commit_fan_out(&fans[1])
        );
        let (a, b) = (a.expect("commit a"), b.expect("commit b"));
        assert_eq!(a.len() + b.len(), 20, "every event marked by one of them");
        assert!(a.is_disjoint(&b), "no event marked by both");
        let by_lease = |lease: &'static str| {
            let graph = graph.clone();
            async move {
                count(
                    &graph,
                    &format!(
                        "RETURN count(SELECT id FROM webhook_delivery WHERE lease = '{lease}');"
                    ),
                )
                .await
            }
        };
        assert_eq!(by_lease("lease-a").await, a.len() as u64);
        assert_eq!(by_lease("lease-b").await, b.len() as u64);
        assert_eq!(w.store().fan_out().await.expect("nothing left"), 0);
    }
}
