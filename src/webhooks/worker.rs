//! The delivery worker: fan out the outbox (leasing the new deliveries that fit the
//! concurrency limits in the same transaction), claim other due deliveries (a batch per
//! transaction), attempt each, record the outcomes (a batch per transaction). Everything it needs is in the graph, so a
//! restart (or another replica) picks up where this one stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Webhooks;
use super::retry::{Settled, duration_ms};
use super::rows::{AttemptRow, AttemptTrigger, DeliveryRow, SubRow};
use super::store::Recorded;
use crate::graph::GraphResult;
use crate::outbox::OutboxEvent;
use crate::time::now_ms;

/// In-flight attempts per subscription in this process.
#[derive(Default)]
struct PerSubscription(Mutex<HashMap<String, usize>>);

impl PerSubscription {
    /// Take a slot for `sub_id` unless it already has `limit` attempts in flight.
    fn try_take(&self, sub_id: &str, limit: usize) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        let n = map.entry(sub_id.to_owned()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, sub_id: &str) {
        if let Ok(mut map) = self.0.lock()
            && let Some(n) = map.get_mut(sub_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(sub_id);
            }
        }
    }
}

/// Outcomes recorded in one transaction at most. The recorder takes whatever has
/// finished since its last commit, so under load batches grow by themselves, up to the
/// deliveries in progress (`max_concurrency`).
const RECORD_BATCH: usize = 256;

/// One in-flight attempt's share of its subscription's limit; released on drop (also
/// when the task panics).
struct Slot {
    per_sub: Arc<PerSubscription>,
    sub_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.per_sub.give_back(&self.sub_id);
    }
}

/// An attempt made and not yet recorded. It keeps its share of the process-wide limit
/// until the recorder has written it, so unrecorded outcomes stay bounded.
struct Done {
    delivery: DeliveryRow,
    lease: Arc<str>,
    attempt: AttemptRow,
    settled: Settled,
    _permit: OwnedSemaphorePermit,
}

/// The delivery loop: fan out, claim due deliveries, sleep until notified or the poll
/// interval passes. On cancel, stop claiming and let in-flight attempts finish and be
/// recorded.
pub(crate) async fn run(webhooks: Arc<Webhooks>, cancel: CancellationToken) {
    let settings = webhooks.settings().clone();
    let permits = Arc::new(Semaphore::new(settings.max_concurrency));
    let per_sub = Arc::new(PerSubscription::default());
    let mut tasks = JoinSet::new();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let recorded = Arc::new(Notify::new());
    let recorder = tokio::spawn(record_loop(webhooks.clone(), done_rx, recorded.clone()));
    let cleaner = tokio::spawn(super::cleaner::run(
        webhooks.store().clone(),
        settings.clone(),
        cancel.clone(),
    ));
    let limits = Limits {
        permits: &permits,
        per_sub: &per_sub,
        done: &done_tx,
    };
    tracing::info!("webhook worker started");
    while !cancel.is_cancelled() {
        while tasks.try_join_next().is_some() {}
        let mut progressed = match fan_out_and_start(&webhooks, &mut tasks, &limits).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "webhook fan-out failed; will retry");
                false
            }
        };
        match dispatch_due(&webhooks, &mut tasks, &limits).await {
            Ok(n) => progressed |= n > 0,
            Err(e) => tracing::warn!(error = %e, "webhook dispatch failed; will retry"),
        }
        if progressed {
            // The graph may answer without ever suspending (in memory): give the
            // attempts just started, and everything else on this thread, their turn.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            () = webhooks.publisher().notified() => {}
            // Permits come free when outcomes are written: once per recorded batch, not
            // once per finished attempt (a `due` read per attempt cost more than the
            // attempts under load).
            () = recorded.notified() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
    // Drain: attempts in flight finish (bounded by the timeout) and are recorded.
    while tasks.join_next().await.is_some() {}
    drop(done_tx);
    if recorder.await.is_err() {
        tracing::warn!(
            "the webhook recorder stopped abnormally; unrecorded leases expire and are retried"
        );
    }
    cleaner.abort();
    tracing::info!("webhook worker stopped");
}

/// What bounds the worker: deliveries in progress in this process (claimed, attempting
/// or waiting to be recorded), attempts in flight per subscription, and where finished
/// attempts go.
struct Limits<'a> {
    permits: &'a Arc<Semaphore>,
    per_sub: &'a Arc<PerSubscription>,
    done: &'a mpsc::UnboundedSender<Done>,
}

/// Fan out new outbox events and start their deliveries at once: the deliveries that fit
/// the free concurrency are written already leased to this worker, in the fan-out's own
/// transaction, so a new event's first attempt costs no claim (no `due` read, no claim
/// commit, no re-read of the event and the subscription). The rest are written unleased
/// for [`dispatch_due`]. Returns how many events were fanned out.
async fn fan_out_and_start(
    webhooks: &Arc<Webhooks>,
    tasks: &mut JoinSet<()>,
    limits: &Limits<'_>,
) -> GraphResult<usize> {
    let store = webhooks.store();
    let Some(mut fan) = store.pending_fan_out().await? else {
        return Ok(0);
    };
    let limit = webhooks.settings().per_subscription_concurrency;
    let lease: Arc<str> = webhooks.new_lease().into();
    let until = now_ms() + duration_ms(webhooks.settings().effective_lease());
    let mut chosen: HashMap<String, (Slot, OwnedSemaphorePermit)> = HashMap::new();
    for delivery in &mut fan.deliveries {
        let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
            break;
        };
        if !limits.per_sub.try_take(&delivery.subscription_id, limit) {
            continue;
        }
        let slot = Slot {
            per_sub: limits.per_sub.clone(),
            sub_id: delivery.subscription_id.clone(),
        };
        delivery.locked_until = until;
        delivery.lease = lease.to_string();
        chosen.insert(delivery.key.clone(), (slot, permit));
    }
    // On failure `chosen` is dropped: slots and permits come back, and the events stay
    // unfanned for the next turn.
    let marked = store.commit_fan_out(&fan).await?;
    let events: HashMap<&str, &OutboxEvent> =
        fan.events.iter().map(|e| (e.key.as_str(), e)).collect();
    let subs: HashMap<&str, &SubRow> = fan.subs.iter().map(|s| (s.key.as_str(), s)).collect();
    let count = fan.events.len();
    for delivery in fan.deliveries {
        if !marked.contains(&delivery.event_id) {
            continue;
        }
        let Some((slot, permit)) = chosen.remove(&delivery.key) else {
            continue;
        };
        let job = Job {
            sub: subs
                .get(delivery.subscription_id.as_str())
                .map(|s| (*s).clone()),
            event: events.get(delivery.event_id.as_str()).map(|e| (*e).clone()),
            delivery,
            lease: lease.clone(),
        };
        start(webhooks, tasks, limits, job, slot, permit);
    }
    Ok(count)
}

/// Run one claimed delivery's attempt as a task.
fn start(
    webhooks: &Arc<Webhooks>,
    tasks: &mut JoinSet<()>,
    limits: &Limits<'_>,
    job: Job,
    slot: Slot,
    permit: OwnedSemaphorePermit,
) {
    let (webhooks, done) = (webhooks.clone(), limits.done.clone());
    tasks.spawn(async move {
        let id = job.delivery.key.clone();
        // Even if this panics, the slot and the permit are released on unwind and the
        // lease expires, so the delivery is picked up again.
        if let Err(e) = process(&webhooks, job, slot, permit, &done).await {
            tracing::warn!(delivery = %id, error = %e, "settling a webhook delivery failed");
        }
    });
}

/// Claim due deliveries up to the free concurrency, in one transaction, and start them.
async fn dispatch_due(
    webhooks: &Arc<Webhooks>,
    tasks: &mut JoinSet<()>,
    limits: &Limits<'_>,
) -> GraphResult<usize> {
    let free = limits.permits.available_permits();
    if free == 0 {
        return Ok(0);
    }
    let limit = webhooks.settings().per_subscription_concurrency;
    let due = webhooks.store().due(now_ms(), free * 2).await?;
    let mut chosen: HashMap<String, (Slot, OwnedSemaphorePermit)> = HashMap::new();
    for candidate in due {
        let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
            break;
        };
        let sub_id = candidate.subscription_id;
        if !limits.per_sub.try_take(&sub_id, limit) {
            continue;
        }
        let slot = Slot {
            per_sub: limits.per_sub.clone(),
            sub_id,
        };
        chosen.insert(candidate.key, (slot, permit));
    }
    if chosen.is_empty() {
        return Ok(0);
    }
    let lease: Arc<str> = webhooks.new_lease().into();
    let until = now_ms() + duration_ms(webhooks.settings().effective_lease());
    let ids: Vec<&str> = chosen.keys().map(String::as_str).collect();
    let store = webhooks.store();
    let claimed = store.claim_many(&ids, &lease, until).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    // What the attempts need, in two reads for the whole batch.
    let event_ids: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
    let mut sub_ids: Vec<&str> = claimed.iter().map(|d| d.subscription_id.as_str()).collect();
    sub_ids.sort_unstable();
    sub_ids.dedup();
    let (events, subs) = match tokio::try_join!(
        store.events(&event_ids),
        store.subscriptions(&sub_ids)
    ) {
        Ok(read) => read,
        Err(e) => {
            // Give the leases back so the batch is taken again at once, not after expiry.
            for d in &claimed {
                if let Err(e) = store.release(&d.key, &lease).await {
                    tracing::warn!(delivery = %d.key, error = %e, "releasing a webhook lease failed; it expires");
                }
            }
            return Err(e);
        }
    };
    let events: HashMap<String, OutboxEvent> =
        events.into_iter().map(|e| (e.key.clone(), e)).collect();
    let subs: HashMap<String, SubRow> = subs.into_iter().map(|s| (s.key.clone(), s)).collect();
    let mut started = 0;
    for delivery in claimed {
        let Some((slot, permit)) = chosen.remove(&delivery.key) else {
            continue;
        };
        started += 1;
        let job = Job {
            sub: subs.get(&delivery.subscription_id).cloned(),
            event: events.get(&delivery.event_id).cloned(),
            delivery,
            lease: lease.clone(),
        };
        start(webhooks, tasks, limits, job, slot, permit);
    }
    Ok(started)
}

/// A claimed delivery and what its attempt needs (`None`: deleted meanwhile).
struct Job {
    delivery: DeliveryRow,
    sub: Option<SubRow>,
    event: Option<OutboxEvent>,
    lease: Arc<str>,
}

/// Deliver one claimed delivery on schedule and hand the outcome to the recorder.
#[tracing::instrument(skip_all, fields(delivery = %job.delivery.key))]
async fn process(
    webhooks: &Webhooks,
    job: Job,
    slot: Slot,
    permit: OwnedSemaphorePermit,
    done: &mpsc::UnboundedSender<Done>,
) -> GraphResult<()> {
    let store = webhooks.store();
    let Job {
        delivery,
        sub,
        event,
        lease,
    } = job;
    let (Some(sub), Some(event)) = (sub, event) else {
        return store
            .abandon(&delivery.key, &lease, "subscription or event deleted")
            .await;
    };
    if !sub.enabled {
        return store
            .abandon(&delivery.key, &lease, "subscription disabled")
            .await;
    }
    if event.payload_expired || event.data.is_none() {
        // Not the endpoint's fault: fail the delivery without counting it against the
        // subscription.
        return store
            .abandon(&delivery.key, &lease, "payload expired before delivery")
            .await;
    }
    let (attempt, settled) = webhooks
        .send(&delivery, &sub, &event, AttemptTrigger::Scheduled)
        .await;
    // The endpoint is free for the subscription's next attempt; this delivery stays
    // leased until its outcome is written.
    drop(slot);
    let outcome = Done {
        delivery,
        lease,
        attempt,
        settled,
        _permit: permit,
    };
    if let Err(mpsc::error::SendError(outcome)) = done.send(outcome) {
        // The recorder is gone (shutting down): write this one directly.
        webhooks.record_many(&[outcome.recorded()]).await;
    }
    Ok(())
}

impl Done {
    fn recorded(&self) -> Recorded<'_> {
        Recorded {
            delivery: &self.delivery,
            lease: &self.lease,
            attempt: &self.attempt,
            settled: &self.settled,
        }
    }
}

/// Write finished attempts in batches: whatever has finished since the last commit, one
/// transaction for all of it. Wakes the worker after each batch (permits came free).
async fn record_loop(
    webhooks: Arc<Webhooks>,
    mut done: mpsc::UnboundedReceiver<Done>,
    recorded: Arc<Notify>,
) {
    while let Some(first) = done.recv().await {
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match done.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        let outcomes: Vec<Recorded<'_>> = batch.iter().map(Done::recorded).collect();
        webhooks.record_many(&outcomes).await;
        drop(outcomes);
        drop(batch);
        recorded.notify_one();
    }
}
