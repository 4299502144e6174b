//! The delivery worker: fan out the outbox, claim due deliveries within the concurrency
//! limits, attempt each, record the outcome. Everything it needs is in the graph, so a
//! restart (or another replica) picks up where this one stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Webhooks;
use super::rows::{AttemptTrigger, DeliveryRow};
use crate::graph::GraphResult;
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

/// One in-flight attempt's share of the concurrency limits; released on drop (also when
/// the task panics).
struct Slot {
    per_sub: Arc<PerSubscription>,
    sub_id: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.per_sub.give_back(&self.sub_id);
    }
}

/// The delivery loop: fan out, claim due deliveries, sleep until notified or the poll
/// interval passes. On cancel, stop claiming and let in-flight attempts finish.
pub(crate) async fn run(webhooks: Arc<Webhooks>, cancel: CancellationToken) {
    let settings = webhooks.settings().clone();
    let permits = Arc::new(Semaphore::new(settings.max_concurrency));
    let per_sub = Arc::new(PerSubscription::default());
    let mut tasks = JoinSet::new();
    let cleaner = tokio::spawn(super::cleaner::run(
        webhooks.store().clone(),
        settings.clone(),
        cancel.clone(),
    ));
    tracing::info!("webhook worker started");
    while !cancel.is_cancelled() {
        while tasks.try_join_next().is_some() {}
        let mut progressed = match webhooks.store().fan_out().await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "webhook fan-out failed; will retry");
                false
            }
        };
        match dispatch_due(&webhooks, &mut tasks, &permits, &per_sub).await {
            Ok(n) => progressed |= n > 0,
            Err(e) => tracing::warn!(error = %e, "webhook dispatch failed; will retry"),
        }
        if progressed {
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            () = webhooks.publisher().notified() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Drain: attempts in flight finish (bounded by the timeout) and are recorded.
    while tasks.join_next().await.is_some() {}
    cleaner.abort();
    tracing::info!("webhook worker stopped");
}

/// Claim due deliveries up to the free concurrency and start them.
async fn dispatch_due(
    webhooks: &Arc<Webhooks>,
    tasks: &mut JoinSet<()>,
    permits: &Arc<Semaphore>,
    per_sub: &Arc<PerSubscription>,
) -> GraphResult<usize> {
    let free = permits.available_permits();
    if free == 0 {
        return Ok(0);
    }
    let limit = webhooks.settings().per_subscription_concurrency;
    let due = webhooks.store().due(now_ms(), free * 2).await?;
    let mut started = 0;
    for candidate in due {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            break;
        };
        let sub_id = candidate.subscription_id.clone();
        if !per_sub.try_take(&sub_id, limit) {
            continue;
        }
        let slot = Slot {
            per_sub: per_sub.clone(),
            sub_id,
            _permit: permit,
        };
        let lease = webhooks.new_lease();
        let delivery = match webhooks.claim(&candidate.key, &lease, false).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "claiming a webhook delivery failed");
                continue;
            }
        };
        started += 1;
        let webhooks = webhooks.clone();
        tasks.spawn(async move {
            let id = delivery.key.clone();
            // Even if this panics, the slot is released on unwind and the lease
            // expires, so the delivery is picked up again.
            if let Err(e) = process(&webhooks, delivery, lease).await {
                tracing::warn!(delivery = %id, error = %e, "recording a webhook attempt failed");
            }
            drop(slot);
        });
    }
    Ok(started)
}

/// Deliver one claimed delivery on schedule and record the outcome.
#[tracing::instrument(skip_all, fields(delivery = %delivery.key))]
async fn process(webhooks: &Webhooks, delivery: DeliveryRow, lease: String) -> GraphResult<()> {
    let store = webhooks.store();
    let sub = store.subscription(&delivery.subscription_id).await?;
    let event = store.event(&delivery.event_id).await?;
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
    webhooks
        .attempt(&delivery, &sub, &event, &lease, AttemptTrigger::Scheduled)
        .await
        .map(|_| ())
}
