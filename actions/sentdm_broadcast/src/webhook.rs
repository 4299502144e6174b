//! The action's SentDM webhook: keeping exactly one registered (reconcile), and taking
//! deliveries (verify → parse → de-duplicate and fold → answer after commit).

use std::time::Duration;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::inbound::{self, Parsed};
use crate::record::ReplyRecord;
use crate::{SentDmBroadcast, SentDmError, Verifier, store};
use graphagent::time::now_rfc3339;
use sentdm_client::model::{Webhook, WebhookRequest};
use sentdm_client::signing::{self, SignedParts, SigningSecret};

/// Path of the receiver; the action id makes it this action's.
pub fn endpoint_path(action_id: &str) -> String {
    format!("/api/sentdm/webhook/{action_id}")
}

/// Scope of the machine key in the webhook URL.
pub fn webhook_scope(action_id: &str) -> String {
    format!("webhook:sentdm:{action_id}")
}

/// Result of a reconcile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[schema(as = SentDmReconcileReport)]
pub struct ReconcileReport {
    /// `created`, `kept`, `updated`, `rotated`, `recreated`, `skipped` or `failed`.
    #[schema(example = "kept")]
    pub outcome: String,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// The webhook kept or created.
    pub webhook_id: Option<String>,
    /// Stale webhooks of this action deleted at SentDM.
    pub deleted: Vec<String>,
    /// SentDM calls that changed something (0 when nothing needed to change).
    pub changes: u32,
    /// When it ran.
    pub at: String,
}

impl ReconcileReport {
    fn new(outcome: &str, reason: Option<String>) -> Self {
        Self {
            outcome: outcome.into(),
            reason,
            webhook_id: None,
            deleted: Vec::new(),
            changes: 0,
            at: now_rfc3339(),
        }
    }
}

/// What the receiver answers SentDM (2xx).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[schema(as = SentDmWebhookAck)]
pub struct WebhookAck {
    /// `received`, `duplicate` or `ignored`.
    #[schema(example = "received")]
    pub status: String,
    /// The record the event was folded into.
    pub record_id: Option<String>,
    /// The record's status after the event.
    pub record_status: Option<String>,
    /// Why it was ignored.
    pub reason: Option<String>,
}

/// Why a delivery was refused (non-2xx).
#[derive(Debug)]
pub enum WebhookRejection {
    /// 401: signature, timestamp or webhook id wrong; nothing written.
    Unauthorized(String),
    /// 503: no signing secret on our side (an alert: fix by reconciling).
    NoSecret,
    /// 503: storage unavailable; SentDM retries.
    Storage(graphagent::GraphError),
}

fn origin_and_path(url: &str) -> Option<(String, String)> {
    let u = reqwest::Url::parse(url).ok()?;
    let origin = u.origin().ascii_serialization();
    Some((origin, u.path().trim_end_matches('/').to_owned()))
}

/// The callback URL with its machine key, or why there is none.
fn webhook_url(action: &SentDmBroadcast) -> Result<String, String> {
    let base = action
        .ctx
        .host
        .public_base_url
        .as_deref()
        .ok_or("GRAPHAGENT_PUBLIC_BASE_URL is not set")?;
    let key = action
        .ctx
        .keys
        .derive(&webhook_scope(&action.ctx.action_id))
        .ok_or("GRAPHAGENT_JWT_SECRET is not set, so no stable webhook key can be issued")?;
    Ok(format!(
        "{base}{}?api_key={key}",
        endpoint_path(&action.ctx.action_id)
    ))
}

/// The callback URL with the machine key removed (safe to show).
pub(crate) fn webhook_url_redacted(action: &SentDmBroadcast) -> Option<String> {
    get_webhook_url(action).ok()
}

/// The URL SentDM calls (machine key redacted), or why there is none.
pub(crate) fn get_webhook_url(action: &SentDmBroadcast) -> Result<String, String> {
    webhook_url(action).map(|u| {
        u.split_once('?')
            .map_or(u.clone(), |(p, _)| format!("{p}?api_key=***"))
    })
}

fn desired(action: &SentDmBroadcast, url: &str) -> WebhookRequest {
    WebhookRequest {
        display_name: action.config.webhook_display_name.clone(),
        endpoint_url: url.to_owned(),
        event_types: action.config.webhook_event_types.clone(),
        event_filters: (!action.config.webhook_event_filters.is_empty())
            .then(|| action.config.webhook_event_filters.clone()),
        retry_count: Some(action.config.webhook_retry_count),
        timeout_seconds: Some(action.config.webhook_timeout_seconds),
    }
}

pub(crate) async fn load_verifier(action: &SentDmBroadcast) {
    match action.store.webhook_state().await {
        Ok(Some(state)) => match SigningSecret::parse(&state.signing_secret) {
            Ok(secret) => set_verifier(
                action,
                Some(Verifier {
                    webhook_id: state.webhook_id,
                    secret,
                }),
            ),
            Err(_) => {
                tracing::error!(action.id = %action.ctx.action_id, "the stored SentDM signing secret is malformed; reconcile to repair")
            }
        },
        Ok(None) => {}
        Err(e) => {
            tracing::error!(action.id = %action.ctx.action_id, error = %e, "cannot read the SentDM webhook state")
        }
    }
}

fn set_verifier(action: &SentDmBroadcast, v: Option<Verifier>) {
    *action.verifier.write().unwrap_or_else(|e| e.into_inner()) = v;
}

fn record_reconcile(action: &SentDmBroadcast, report: &ReconcileReport) {
    *action
        .last_reconcile
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
}

async fn adopt(
    action: &SentDmBroadcast,
    webhook_id: &str,
    secret: &str,
    report: &mut ReconcileReport,
) -> Result<(), String> {
    let parsed = SigningSecret::parse(secret)
        .map_err(|_| "SentDM returned a malformed signing secret".to_owned())?;
    action
        .store
        .save_webhook_state(webhook_id, secret, &endpoint_path(&action.ctx.action_id))
        .await
        .map_err(|e| format!("cannot store the signing secret: {e}"))?;
    set_verifier(
        action,
        Some(Verifier {
            webhook_id: webhook_id.to_owned(),
            secret: parsed,
        }),
    );
    report.webhook_id = Some(webhook_id.to_owned());
    Ok(())
}

/// Make SentDM hold exactly one webhook for this action, pointing at our URL with
/// our settings, whose signing secret we have. Idempotent: with nothing to change it
/// only lists. Never touches webhooks of other actions or other origins.
pub(crate) async fn reconcile_webhook_endpoint(action: &SentDmBroadcast) -> ReconcileReport {
    let report = reconcile_leased(action).await;
    match report.outcome.as_str() {
        "failed" => {
            tracing::error!(action.id = %action.ctx.action_id, reason = report.reason.as_deref(), "SentDM webhook reconcile failed")
        }
        "skipped" => {
            tracing::warn!(action.id = %action.ctx.action_id, reason = report.reason.as_deref(), "SentDM webhook reconcile skipped")
        }
        outcome => {
            tracing::info!(action.id = %action.ctx.action_id, outcome, webhook.id = report.webhook_id.as_deref(), deleted = report.deleted.len(), "SentDM webhook reconciled")
        }
    }
    record_reconcile(action, &report);
    publish_reconcile(action, &report).await;
    report
}

/// `sentdm.webhook.reconciled` / `reconcile_failed` for subscribers (not for skips:
/// nothing was attempted).
async fn publish_reconcile(action: &SentDmBroadcast, report: &ReconcileReport) {
    let event_type = match report.outcome.as_str() {
        "skipped" => return,
        "failed" => "sentdm.webhook.reconcile_failed",
        _ => "sentdm.webhook.reconciled",
    };
    let row = action
        .ctx
        .events
        .event(
            event_type,
            &action.ctx.agent_id,
            &action.ctx.action_id,
            crate::without_nulls(json!({
                "action_id": action.ctx.action_id, "outcome": report.outcome, "reason": report.reason,
                "webhook_id": report.webhook_id, "changes": report.changes, "deleted": report.deleted,
            })),
        )
        .into_row();
    match action.store.emit(&row).await {
        Ok(()) => action.ctx.events.notify(),
        Err(e) => {
            tracing::warn!(action.id = %action.ctx.action_id, error = %e, "could not queue the reconcile event")
        }
    }
}

/// How long one reconcile may take: a few SentDM calls, each within the client's
/// timeout; at least a minute.
fn reconcile_budget(action: &SentDmBroadcast) -> Duration {
    Duration::from_secs((4 * action.config.timeout).max(60))
}

/// How long the lease outlives the budget, so that a reconcile still running (cut at its
/// budget) never overlaps the next holder's.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// How often a replica waiting for the lease looks again.
const LEASE_POLL: Duration = Duration::from_millis(200);

/// Reconcile while holding the action's lease in the shared graph, so that replicas
/// reconcile one after another: the first registers the webhook and stores its secret,
/// the next ones find it on record and keep it (only a list call each). Without the
/// lease, replicas starting together each created a webhook and deleted the others'.
async fn reconcile_leased(action: &SentDmBroadcast) -> ReconcileReport {
    if action.client.is_none() || webhook_url(action).is_err() {
        // Skipped without a SentDM call; no lease needed.
        return reconcile_inner(action).await;
    }
    let budget = reconcile_budget(action);
    let lease = budget + LEASE_MARGIN;
    let holder = uuid::Uuid::new_v4().to_string();
    // A holder killed mid-reconcile keeps the lease until it expires; waiting that long
    // (plus a poll) is enough to get it.
    let give_up = tokio::time::Instant::now() + lease + LEASE_POLL * 5;
    loop {
        let now = graphagent::time::now_ms();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        match action.store.take_reconcile_lease(&holder, now, until).await {
            Ok(true) => break,
            Ok(false) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(LEASE_POLL).await;
            }
            Ok(false) => {
                return ReconcileReport::new(
                    "failed",
                    Some("another replica kept the webhook reconcile lease; try again".into()),
                );
            }
            Err(e) => {
                return ReconcileReport::new(
                    "failed",
                    Some(format!("cannot take the webhook reconcile lease: {e}")),
                );
            }
        }
    }
    let report = match tokio::time::timeout(budget, reconcile_inner(action)).await {
        Ok(report) => report,
        Err(_) => ReconcileReport::new(
            "failed",
            Some(format!(
                "the reconcile took longer than {} s and was stopped",
                budget.as_secs()
            )),
        ),
    };
    if let Err(e) = action.store.release_reconcile_lease(&holder).await {
        // It expires by itself; the next reconcile waits for that.
        tracing::warn!(action.id = %action.ctx.action_id, error = %e, "could not release the webhook reconcile lease");
    }
    report
}

async fn reconcile_inner(action: &SentDmBroadcast) -> ReconcileReport {
    let Some(client) = &action.client else {
        return ReconcileReport::new("skipped", Some("SENTDM_API_KEY is not set".into()));
    };
    let url = match webhook_url(action) {
        Ok(u) => u,
        Err(reason) => return ReconcileReport::new("skipped", Some(reason.to_owned())),
    };
    let Some((our_origin, our_path)) = origin_and_path(&url) else {
        return ReconcileReport::new("failed", Some("the public base URL does not parse".into()));
    };
    let desired = desired(action, &url);
    let fail = |reason: String| ReconcileReport::new("failed", Some(reason));
    let all = match client.list_all_webhooks().await {
        Ok(all) => all,
        Err(e) => return fail(format!("listing webhooks: {e}")),
    };
    // Ours: same origin and this action's path. Anything else is left alone.
    let ours: Vec<&Webhook> = all
        .iter()
        .filter(|w| {
            origin_and_path(&w.endpoint_url).is_some_and(|(o, p)| o == our_origin && p == our_path)
        })
        .collect();
    let stored = action.store.webhook_state().await.ok().flatten();
    let exact = ours
        .iter()
        .filter(|w| w.endpoint_url == url)
        .max_by_key(|w| stored.as_ref().is_some_and(|s| s.webhook_id == w.id))
        .copied();
    let mut report = ReconcileReport::new("kept", None);
    let kept_id = match exact {
        Some(w) => {
            let settings_differ = w.event_types != desired.event_types
                || w.event_filters != desired.event_filters
                || w.retry_count != desired.retry_count
                || w.timeout_seconds != desired.timeout_seconds
                || w.display_name.as_deref() != Some(desired.display_name.as_str());
            if settings_differ {
                if let Err(e) = client.update_webhook(&w.id, &desired).await {
                    return fail(format!("updating webhook {}: {e}", w.id));
                }
                report.outcome = "updated".into();
                report.changes += 1;
            }
            if !w.is_active {
                if let Err(e) = client.toggle_webhook(&w.id, true).await {
                    return fail(format!("re-activating webhook {}: {e}", w.id));
                }
                report.changes += 1;
            }
            let on_record = stored
                .as_ref()
                .filter(|s| s.webhook_id == w.id)
                .and_then(|s| SigningSecret::parse(&s.signing_secret).ok());
            if let Some(secret) = on_record {
                // Nothing to store: the state already says exactly this.
                set_verifier(
                    action,
                    Some(Verifier {
                        webhook_id: w.id.clone(),
                        secret,
                    }),
                );
                report.webhook_id = Some(w.id.clone());
                Some(w.id.clone())
            } else {
                // We cannot verify its deliveries: get a secret we know (CONTRACT §7.7).
                match client.rotate_webhook_secret(&w.id).await {
                    Ok(secret) => {
                        if let Err(e) = adopt(action, &w.id, &secret, &mut report).await {
                            return fail(e);
                        }
                        report.outcome = "rotated".into();
                        report.changes += 1;
                        Some(w.id.clone())
                    }
                    Err(e) => {
                        tracing::warn!(action.id = %action.ctx.action_id, error = %e, "rotating the webhook secret failed; recreating the webhook");
                        report.outcome = "recreated".into();
                        None
                    }
                }
            }
        }
        None => None,
    };
    let kept_id = match kept_id {
        Some(id) => id,
        None => match client.create_webhook(&desired, None).await {
            Ok(created) => {
                report.changes += 1;
                if report.outcome != "recreated" {
                    report.outcome = "created".into();
                }
                let secret = match created.signing_secret.clone() {
                    Some(s) => s,
                    None => match client.rotate_webhook_secret(&created.id).await {
                        Ok(s) => s,
                        Err(e) => {
                            return fail(format!(
                                "webhook {} created without a secret, rotate failed: {e}",
                                created.id
                            ));
                        }
                    },
                };
                if let Err(e) = adopt(action, &created.id, &secret, &mut report).await {
                    return fail(e);
                }
                created.id
            }
            Err(e) => return fail(format!("creating the webhook: {e}")),
        },
    };
    // Delete stale entries for this action's path only after the new one exists.
    for w in ours.iter().filter(|w| w.id != kept_id) {
        match client.delete_webhook(&w.id).await {
            Ok(()) => {
                report.deleted.push(w.id.clone());
                report.changes += 1;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(action.id = %action.ctx.action_id, webhook.id = %w.id, error = %e, "could not delete a stale webhook")
            }
        }
    }
    report
}

/// Delete this action's webhook at SentDM (on deregister).
pub(crate) async fn remove_webhook(action: &SentDmBroadcast) -> Result<(), SentDmError> {
    let Some(client) = &action.client else {
        return Ok(());
    };
    let Ok(url) = webhook_url(action) else {
        return Ok(());
    };
    let Some((origin, path)) = origin_and_path(&url) else {
        return Ok(());
    };
    for w in client.list_all_webhooks().await? {
        if origin_and_path(&w.endpoint_url).is_some_and(|(o, p)| o == origin && p == path) {
            match client.delete_webhook(&w.id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    set_verifier(action, None);
    Ok(())
}

pub(crate) fn spawn_sweeper(action: &SentDmBroadcast) {
    let every = action.config.sweep_interval_seconds;
    if every == 0 || action.client.is_none() {
        return;
    }
    let age = Duration::from_secs(action.config.sweep_stale_after_seconds);
    let stop = action.stop.clone();
    let directory = action.ctx.directory.clone();
    let id = action.ctx.action_id.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // The live instance, looked up each time: holding it would keep a
            // replaced instance (and this task) alive forever.
            let Some(action) = directory.get::<SentDmBroadcast>(&id) else {
                continue;
            };
            match action.sweep_once(age, 100).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(action.id = %id, refreshed = n, "sweeper refreshed stale records")
                }
                Err(e) => tracing::warn!(action.id = %id, error = %e, "sweep failed"),
            }
        }
    });
}

/// Handle one delivery whose machine key the caller already checked: verify the
/// signature, timestamp and webhook id, then parse, de-duplicate and fold in one
/// transaction; `Ok` only after commit.
pub(crate) async fn receive_webhook(
    action: &SentDmBroadcast,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookAck, WebhookRejection> {
    let reject = |why: String| {
        action
            .counters
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WebhookRejection::Unauthorized(why)
    };
    let current = || {
        action
            .verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    };
    // Nothing in memory: another replica may have registered the webhook since this one
    // started, so look at the stored secret first. With none on record the answer is 503
    // (SentDM retries) whatever the delivery carries, as docs/sentdm.md promises.
    let mut reloaded = false;
    let mut cached = current();
    if cached.is_none() {
        load_verifier(action).await;
        reloaded = true;
        cached = current();
    }
    let Some(cached) = cached else {
        action
            .counters
            .failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(action.id = %action.ctx.action_id, "ALERT: a SentDM delivery arrived but no signing secret is on record; reconcile the webhook (POST …/sentdm/webhook/register)");
        return Err(WebhookRejection::NoSecret);
    };
    let parts = SignedParts::from_headers(headers).map_err(|e| reject(e.to_string()))?;
    if let Err(first) = verify(&cached, &parts, body) {
        if reloaded {
            return Err(reject(first));
        }
        // Another replica may have rotated the secret since this one loaded it: look at
        // the stored one before refusing. Only callers holding the machine key get here,
        // and it costs one read by id.
        load_verifier(action).await;
        match current() {
            Some(fresh) => verify(&fresh, &parts, body).map_err(|_| reject(first))?,
            None => return Err(reject(first)),
        }
    }
    let event_id = headers
        .get("x-webhook-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| inbound::truncate_chars(id.trim(), inbound::Bounds::SHORT_CHARS).to_owned());

    match inbound::parse(body) {
        Parsed::Unusable(reason) => {
            action
                .counters
                .ignored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(action.id = %action.ctx.action_id, reason, "verified SentDM delivery ignored");
            Ok(WebhookAck {
                status: "ignored".into(),
                record_id: None,
                record_status: None,
                reason: Some(reason.into()),
            })
        }
        Parsed::Other(family) => {
            action
                .counters
                .ignored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(WebhookAck {
                status: "ignored".into(),
                record_id: None,
                record_status: None,
                reason: Some(format!("`{family}` events are not folded")),
            })
        }
        Parsed::Reply(reply) => store_reply(action, reply, body).await,
        Parsed::Status(event) => {
            let key = store::digest(&[action.ctx.action_id.as_bytes(), body]);
            let fold = action.fold_event(event, key, "webhook", event_id.as_deref(), true);
            let outcome = action.writer.apply(fold).await.map_err(|e| {
                action.counters.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(action.id = %action.ctx.action_id, error = %e, "could not fold a SentDM event; answering 503 so SentDM retries");
                WebhookRejection::Storage(e)
            })?;
            action.apply_outcome_counters(&outcome);
            Ok(WebhookAck {
                status: outcome.outcome,
                record_id: outcome.record,
                record_status: outcome.status,
                reason: outcome.reason,
            })
        }
    }
}

/// Check a delivery's webhook id, signature and timestamp against `verifier`.
fn verify(verifier: &Verifier, parts: &SignedParts<'_>, body: &[u8]) -> Result<(), String> {
    if parts.webhook_id != verifier.webhook_id {
        return Err("x-webhook-id is not this action's webhook".into());
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    tracing::info_span!("sentdm.webhook.verify")
        .in_scope(|| {
            verifier
                .secret
                .verify(parts, body, now, signing::DEFAULT_TOLERANCE_SECS)
        })
        .map_err(|e| e.to_string())
}

async fn store_reply(
    action: &SentDmBroadcast,
    reply: inbound::ReplyEvent,
    body: &[u8],
) -> Result<WebhookAck, WebhookRejection> {
    let key = store::digest(&[action.ctx.action_id.as_bytes(), body]);
    let answers = match &reply.in_reply_to {
        Some(id) => Some(store::record_key(&action.ctx.action_id, id)),
        None => match &reply.from {
            Some(from) => action
                .store
                .latest_record_to(from, reply.channel.as_deref())
                .await
                .map_err(WebhookRejection::Storage)?,
            None => None,
        },
    };
    let node = ReplyRecord {
        action_id: action.ctx.action_id.clone(),
        agent_id: action.ctx.agent_id.clone(),
        sentdm_message_id: reply.message_id.clone(),
        from: reply.from.clone(),
        to: reply.to.clone(),
        channel: reply.channel.clone(),
        text: reply.text.clone(),
        received_at: reply.received_at.clone(),
        in_reply_to: reply.in_reply_to.clone(),
        answers_record: answers,
        created_at: now_rfc3339(),
    };
    let outbox = action
        .ctx
        .events
        .event(
            "sentdm.message.received",
            &action.ctx.agent_id,
            &action.ctx.action_id,
            serde_json::to_value(&node).unwrap_or(Value::Null),
        )
        .into_row();
    let fresh = action
        .store
        .store_reply(&key, &node, &outbox)
        .await
        .map_err(WebhookRejection::Storage)?;
    if fresh {
        action.ctx.events.notify();
        action
            .counters
            .replies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Nobody listening is fine: the reply is in the graph.
        let _ = action.replies.send(reply);
    } else {
        action
            .counters
            .duplicate
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(WebhookAck {
        status: if fresh { "received" } else { "duplicate" }.into(),
        record_id: Some(key),
        record_status: Some("received".into()),
        reason: None,
    })
}
