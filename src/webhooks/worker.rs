//! The delivery worker: fan out the outbox (leasing the new deliveries that fit the
//! concurrency limits in the same transaction), claim other due deliveries (a batch per
//! transaction), attempt each, record the outcomes (a batch per transaction). Everything it needs is in the graph, so a
//! restart (or another replica) picks up where this one stopped.

use std::collections::{HashMap, VecDeque};
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

/// Claimed deliveries a subscription may hold in this process (attempting or queued),
/// per attempt it may have in flight. Queued ones start the moment one of its attempts
/// ends, instead of waiting for the next claim.
const BACKLOG_PER_ATTEMPT: usize = 8;

/// The subscriptions' lanes in this process: at most `limit` attempts in flight per
/// subscription; claimed deliveries beyond that wait in the subscription's queue.
struct Lanes {
    limit: usize,
    state: Mutex<HashMap<String, Lane>>,
}

#[derive(Default)]
struct Lane {
    /// Reserved, queued or attempting.
    claimed: usize,
    running: usize,
    queue: VecDeque<Claimed>,
}

/// A claimed delivery with its share of the process-wide limit.
struct Claimed {
    job: Job,
    permit: OwnedSemaphorePermit,
}

/// Room for one delivery in a subscription's lane, taken before the claim is written;
/// given back on drop unless the claim succeeded and the delivery entered the lane.
struct Reservation {
    lanes: Arc<Lanes>,
    sub_id: String,
    armed: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.armed {
            self.lanes.release(&self.sub_id, false);
        }
    }
}

impl Lanes {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for one more claimed delivery of `sub_id`, if its backlog is not full.
    fn reserve(self: &Arc<Self>, sub_id: &str) -> Option<Reservation> {
        let mut state = self.lock();
        let lane = state.entry(sub_id.to_owned()).or_default();
        if lane.claimed >= self.limit * BACKLOG_PER_ATTEMPT {
            return None;
        }
        lane.claimed += 1;
        Some(Reservation {
            lanes: self.clone(),
            sub_id: sub_id.to_owned(),
            armed: true,
        })
    }

    /// Put a claimed delivery in its lane: returned when it may start now (the caller
    /// runs the lane), queued otherwise.
    fn submit(&self, mut reservation: Reservation, claimed: Claimed) -> Option<Claimed> {
        reservation.armed = false;
        let mut state = self.lock();
        let lane = state.entry(reservation.sub_id.clone()).or_default();
        if lane.running < self.limit {
            lane.running += 1;
            Some(claimed)
        } else {
            lane.queue.push_back(claimed);
            None
        }
    }

    /// One delivery of `sub_id` is done (or, `running` false, its reservation was given
    /// back): the next queued one to run in its place, if one is waiting.
    fn release(&self, sub_id: &str, running: bool) -> Option<Claimed> {
        let mut state = self.lock();
        let lane = state.get_mut(sub_id)?;
        lane.claimed = lane.claimed.saturating_sub(1);
        let next = if running {
            let next = lane.queue.pop_front();
            if next.is_none() {
                lane.running = lane.running.saturating_sub(1);
            }
            next
        } else {
            None
        };
        if lane.claimed == 0 && lane.running == 0 {
            state.remove(sub_id);
        }
        next
    }

    /// A lane's runner stopped abnormally: its queued deliveries are dropped (their
    /// permits come back; their leases expire and they are claimed again).
    fn abandon(&self, sub_id: &str) {
        let mut state = self.lock();
        if let Some(lane) = state.get_mut(sub_id) {
            let queued = lane.queue.len();
            lane.queue.clear();
            lane.claimed = lane.claimed.saturating_sub(queued + 1);
            lane.running = lane.running.saturating_sub(1);
            if lane.claimed == 0 && lane.running == 0 {
                state.remove(sub_id);
            }
        }
    }
}

/// Runs a lane until its queue is empty; if the task unwinds, gives the lane back.
struct Runner {
    lanes: Arc<Lanes>,
    sub_id: String,
    done: bool,
}

impl Drop for Runner {
    fn drop(&mut self) {
        if !self.done {
            self.lanes.abandon(&self.sub_id);
        }
    }
}

/// Outcomes recorded in one transaction at most. The recorder takes whatever has
/// finished since its last commit, so under load batches grow by themselves, up to the
/// deliveries in progress (`max_concurrency`).
const RECORD_BATCH: usize = 256;

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
    let lanes = Arc::new(Lanes::new(settings.per_subscription_concurrency));
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
        lanes: &lanes,
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
/// or waiting to be recorded), the subscriptions' lanes, and where finished attempts go.
struct Limits<'a> {
    permits: &'a Arc<Semaphore>,
    lanes: &'a Arc<Lanes>,
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
    let lease: Arc<str> = webhooks.new_lease().into();
    let until = now_ms() + duration_ms(webhooks.settings().effective_lease());
    let mut chosen: HashMap<String, (Reservation, OwnedSemaphorePermit)> = HashMap::new();
    for delivery in &mut fan.deliveries {
        let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
            break;
        };
        let Some(reservation) = limits.lanes.reserve(&delivery.subscription_id) else {
            continue;
        };
        delivery.locked_until = until;
        delivery.lease = lease.to_string();
        chosen.insert(delivery.key.clone(), (reservation, permit));
    }
    // On failure `chosen` is dropped: reservations and permits come back, and the events
    // stay unfanned for the next turn.
    let marked = store.commit_fan_out(&fan).await?;
    let events: HashMap<&str, &OutboxEvent> =
        fan.events.iter().map(|e| (e.key.as_str(), e)).collect();
    let subs: HashMap<&str, &SubRow> = fan.subs.iter().map(|s| (s.key.as_str(), s)).collect();
    let count = fan.events.len();
    for delivery in fan.deliveries {
        if !marked.contains(&delivery.event_id) {
            continue;
        }
        let Some((reservation, permit)) = chosen.remove(&delivery.key) else {
            continue;
        };
        let job = Job {
            sub: subs
                .get(delivery.subscription_id.as_str())
                .map(|s| (*s).clone()),
            event: events.get(delivery.event_id.as_str()).map(|e| (*e).clone()),
            delivery,
            lease: lease.clone(),
            until,
        };
        start(
            webhooks,
            tasks,
            limits,
            reservation,
            Claimed { job, permit },
        );
    }
    Ok(count)
}

/// Put a claimed delivery in its subscription's lane, and run the lane as a task if it
/// may start now: the task attempts it, then each delivery queued behind it.
fn start(
    webhooks: &Arc<Webhooks>,
    tasks: &mut JoinSet<()>,
    limits: &Limits<'_>,
    reservation: Reservation,
    claimed: Claimed,
) {
    let sub_id = reservation.sub_id.clone();
    let Some(first) = limits.lanes.submit(reservation, claimed) else {
        return;
    };
    let (webhooks, lanes, done) = (webhooks.clone(), limits.lanes.clone(), limits.done.clone());
    tasks.spawn(async move {
        // Should this unwind, the lane is given back and its queue dropped: permits come
        // back, leases expire and the deliveries are claimed again.
        let mut runner = Runner {
            lanes: lanes.clone(),
            sub_id: sub_id.clone(),
            done: false,
        };
        let mut next = Some(first);
        while let Some(Claimed { job, permit }) = next {
            let id = job.delivery.key.clone();
            // A delivery that waited in the queue must still hold its lease for a whole
            // attempt; otherwise another worker could take it over mid-attempt. Left
            // alone, its lease expires and it is claimed again.
            let margin = duration_ms(webhooks.settings().timeout) + LEASE_MARGIN_MS;
            if job.until - now_ms() < margin {
                tracing::debug!(delivery = %id, "lease too close to expiry after queueing; left for a later claim");
                drop(permit);
            } else if let Err(e) = process(&webhooks, job, permit, &done).await {
                tracing::warn!(delivery = %id, error = %e, "settling a webhook delivery failed");
            }
            next = lanes.release(&sub_id, true);
        }
        runner.done = true;
    });
}

/// Time a queued delivery's lease must still have beyond one attempt's timeout, ms.
const LEASE_MARGIN_MS: i64 = 5_000;

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
    let due = webhooks.store().due(now_ms(), free * 2).await?;
    let mut chosen: HashMap<String, (Reservation, OwnedSemaphorePermit)> = HashMap::new();
    for candidate in due {
        let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
            break;
        };
        let Some(reservation) = limits.lanes.reserve(&candidate.subscription_id) else {
            continue;
        };
        chosen.insert(candidate.key, (reservation, permit));
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
        let Some((reservation, permit)) = chosen.remove(&delivery.key) else {
            continue;
        };
        started += 1;
        let job = Job {
            sub: subs.get(&delivery.subscription_id).cloned(),
            event: events.get(&delivery.event_id).cloned(),
            delivery,
            lease: lease.clone(),
            until,
        };
        start(
            webhooks,
            tasks,
            limits,
            reservation,
            Claimed { job, permit },
        );
    }
    Ok(started)
}

/// A claimed delivery and what its attempt needs (`None`: deleted meanwhile).
struct Job {
    delivery: DeliveryRow,
    sub: Option<SubRow>,
    event: Option<OutboxEvent>,
    lease: Arc<str>,
    /// When the lease ends (epoch ms).
    until: i64,
}

/// Deliver one claimed delivery on schedule and hand the outcome to the recorder.
#[tracing::instrument(skip_all, fields(delivery = %job.delivery.key))]
async fn process(
    webhooks: &Webhooks,
    job: Job,
    permit: OwnedSemaphorePermit,
    done: &mpsc::UnboundedSender<Done>,
) -> GraphResult<()> {
    let store = webhooks.store();
    let Job {
        delivery,
        sub,
        event,
        lease,
        until: _,
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
    // The endpoint is free for the subscription's next attempt (the lane goes on); this
    // delivery stays leased until its outcome is written.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(sub: &str, n: usize, permits: &Arc<Semaphore>) -> Claimed {
        let event = OutboxEvent::new("webhook.test", serde_json::json!({ "n": n }));
        Claimed {
            job: Job {
                delivery: DeliveryRow::new(&event, sub, 0),
                sub: None,
                event: Some(event),
                lease: Arc::from("lease"),
                until: i64::MAX,
            },
            permit: permits.clone().try_acquire_owned().expect("permit"),
        }
    }

    #[test]
    fn a_lane_runs_up_to_its_limit_and_queues_the_rest_in_order() {
        let lanes = Arc::new(Lanes::new(2));
        let permits = Arc::new(Semaphore::new(64));
        let mut started = Vec::new();
        for n in 0..5 {
            let r = lanes.reserve("s1").expect("room");
            if let Some(c) = lanes.submit(r, claimed("s1", n, &permits)) {
                started.push(c.job.event.map(|e| e.data));
            }
        }
        assert_eq!(started.len(), 2, "two attempts at once, three queued");
        // Each ending attempt hands its place to the oldest queued delivery.
        let order: Vec<_> = std::iter::from_fn(|| lanes.release("s1", true))
            .map(|c| c.job.event.and_then(|e| e.data).map(|d| d["n"].clone()))
            .collect();
        assert_eq!(order.len(), 3);
        assert_eq!(order[0], Some(serde_json::json!(2)));
        assert_eq!(order[2], Some(serde_json::json!(4)));
        // The two runners end: the lane is gone and all permits are back.
        assert!(lanes.release("s1", true).is_none());
        assert!(lanes.release("s1", true).is_none());
        assert!(lanes.lock().is_empty());
        assert_eq!(permits.available_permits(), 64);
    }

    #[test]
    fn a_subscription_holds_at_most_its_backlog_and_a_dropped_reservation_gives_room_back() {
        let lanes = Arc::new(Lanes::new(1));
        let held: Vec<Reservation> = (0..BACKLOG_PER_ATTEMPT)
            .map(|_| lanes.reserve("s1").expect("room"))
            .collect();
        assert!(lanes.reserve("s1").is_none(), "backlog full");
        assert!(
            lanes.reserve("s2").is_some(),
            "other subscriptions unaffected"
        );
        drop(held);
        assert!(
            lanes.reserve("s1").is_some(),
            "a failed claim gives its room back"
        );
    }

    #[test]
    fn an_abandoned_lane_drops_its_queue_and_frees_its_permits() {
        let lanes = Arc::new(Lanes::new(1));
        let permits = Arc::new(Semaphore::new(8));
        let mut running = Vec::new();
        for n in 0..3 {
            let r = lanes.reserve("s1").expect("room");
            running.extend(lanes.submit(r, claimed("s1", n, &permits)));
        }
        assert_eq!(running.len(), 1);
        assert_eq!(permits.available_permits(), 5, "one running, two queued");
        // The runner unwinds (its delivery goes with it), the lane is given back.
        drop(running);
        lanes.abandon("s1");
        assert!(lanes.lock().is_empty());
        assert_eq!(
            permits.available_permits(),
            8,
            "the queued ones' permits are back"
        );
    }
}
