//! Admin endpoints for outbound webhooks (tag `Webhooks`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::outbox::{EventType, OutboxEvent};
use crate::plugin::{Json, Paging, Path, Query};
use crate::state::HostState;
use crate::time::{ms_to_rfc3339, now_ms, rfc3339_to_ms};
use crate::webhooks::{
    AttemptRow, AttemptTrigger, DeliveryRow, DeliveryStatus, ManualError, SubRow, Webhooks,
    new_secret,
};

/// A subscription (never its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    /// `sub_…`.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Event types delivered; empty means all.
    pub event_types: Vec<String>,
    /// Free text.
    pub description: String,
    /// Only events from this agent, when set.
    pub agent_id: Option<String>,
    /// Only events from this action, when set.
    pub action_id: Option<String>,
    /// Disabled subscriptions receive nothing.
    pub enabled: bool,
    /// Why it was disabled automatically, if it was.
    pub disabled_reason: Option<String>,
    /// Failed events since the last success.
    pub consecutive_failures: u32,
    /// Until when the previous secret also signs (after a rotation).
    pub previous_secret_valid_until: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<&SubRow> for Subscription {
    fn from(s: &SubRow) -> Self {
        let now = now_ms();
        Self {
            id: s.key.clone(),
            url: s.url.clone(),
            event_types: s.event_types.clone(),
            description: s.description.clone(),
            agent_id: s.agent_id.clone(),
            action_id: s.action_id.clone(),
            enabled: s.enabled,
            disabled_reason: s.disabled_reason.clone(),
            consecutive_failures: s.consecutive_failures,
            previous_secret_valid_until: s
                .previous_secret_expires_ms
                .filter(|t| *t > now && s.previous_secret.is_some())
                .map(ms_to_rfc3339),
            created_at: ms_to_rfc3339(s.created_ms),
            updated_at: ms_to_rfc3339(s.updated_ms),
        }
    }
}

/// A subscription with its signing secret: returned only on creation and rotation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionWithSecret {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// `whsec_…`: base64 of the HMAC key. Shown only now; store it.
    pub secret: String,
}

/// `POST /api/webhooks/subscriptions` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// An https URL whose host resolves to public addresses only (unless allow-listed).
    #[schema(example = "https://example.com/hooks/graphagent", format = "uri")]
    pub url: String,
    /// Event types to receive (see `GET /api/webhooks/event-types`); empty or absent
    /// means all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Free text (≤ 1000 characters).
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub description: String,
    /// Only events from this agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Only events from this action.
    #[serde(default)]
    pub action_id: Option<String>,
}

/// `PATCH /api/webhooks/subscriptions/{id}` body; absent fields are unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    /// New URL (https, public destination).
    #[schema(format = "uri")]
    pub url: Option<String>,
    /// New event types (empty = all).
    pub event_types: Option<Vec<String>>,
    /// New description (≤ 1000 characters).
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Enable or disable. Enabling resets the failure counters.
    pub enabled: Option<bool>,
}

/// One delivery attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    /// `att_…`.
    pub id: String,
    /// The delivery it belongs to.
    pub delivery_id: String,
    /// The subscription.
    pub subscription_id: String,
    /// The event (`webhook-id`).
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// 1 for the first attempt of the delivery.
    pub attempt: u32,
    /// What started it.
    pub trigger: AttemptTrigger,
    /// The URL called.
    pub url: String,
    /// HTTP status, when the endpoint answered.
    pub status_code: Option<u16>,
    /// 2xx.
    pub success: bool,
    /// Duration of the request.
    pub duration_ms: i64,
    /// What went wrong.
    pub error: Option<String>,
    /// The response body, cut at 20,000 bytes.
    pub response_body: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<AttemptRow> for Attempt {
    fn from(a: AttemptRow) -> Self {
        Self {
            id: a.key,
            delivery_id: a.delivery_id,
            subscription_id: a.subscription_id,
            event_id: a.event_id,
            event_type: a.event_type,
            attempt: a.attempt,
            trigger: a.trigger,
            url: a.url,
            status_code: a.status_code,
            success: a.success,
            duration_ms: a.duration_ms,
            error: a.error,
            response_body: a.response_body,
            created_at: ms_to_rfc3339(a.created_ms),
        }
    }
}

/// One event for one subscription.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// `{event_id}_{subscription_id}`.
    pub id: String,
    /// The event (`webhook-id` header).
    pub event_id: String,
    /// The subscription.
    pub subscription_id: String,
    /// The event type.
    pub event_type: String,
    /// Where it stands (`sending` only while a test event's one attempt runs).
    pub status: DeliveryStatus,
    /// Attempts made (scheduled and manual).
    pub attempts: u32,
    /// When the next scheduled attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<String>,
    /// Last HTTP status.
    pub last_status_code: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// When it succeeded or finally failed.
    pub completed_at: Option<String>,
}

impl From<DeliveryRow> for Delivery {
    fn from(d: DeliveryRow) -> Self {
        Self {
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| ms_to_rfc3339(d.next_attempt_at)),
            id: d.key,
            event_id: d.event_id,
            subscription_id: d.subscription_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            last_attempt_at: d.last_attempt_ms.map(ms_to_rfc3339),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: ms_to_rfc3339(d.created_ms),
            completed_at: d.completed_ms.map(ms_to_rfc3339),
        }
    }
}

/// A delivery with its attempts and payload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// The event's `data`; `null` once the retention period has passed.
    #[schema(value_type = Option<Object>, required = true)]
    pub payload: Value,
    /// Whether the payload was removed by the retention cleaner.
    pub payload_expired: bool,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<Attempt>,
}

/// A page of deliveries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<Delivery>,
    /// 1-based.
    pub page: u32,
    /// Items per page.
    pub page_size: u32,
    /// Whether a next page exists.
    pub has_more: bool,
}

/// Filters for `GET /api/webhooks/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFilter {
    /// Only this subscription.
    pub subscription_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// `success`, `failure` or `pending`.
    #[param(schema_with = outcome_schema)]
    pub outcome: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 4_294_967_295_u32, format = Int64, default = 1)]
    pub page: Option<u32>,
    /// 1–200 (default 50).
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub page_size: Option<u32>,
}

/// Values of `outcome` (the delivery statuses they select are `succeeded`, `failed`,
/// `pending`).
const OUTCOMES: [&str; 3] = ["success", "failure", "pending"];

fn outcome_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(OUTCOMES))
        .description(Some("`success`, `failure` or `pending`."))
        .build()
}

/// `?since=` for recovery.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecoverQuery {
    /// Re-queue failed deliveries created at or after this time (RFC 3339); at most 14
    /// days back (default: 14 days ago).
    #[param(format = DateTime)]
    pub since: Option<String>,
}

/// What a recovery re-queued.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecoverResult {
    /// Failed deliveries put back in the queue (at most 10,000).
    pub requeued: usize,
}

/// `?period_days=` for stats.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// 1–90 (default 7).
    #[param(minimum = 1, maximum = 90, default = 7)]
    pub period_days: Option<u32>,
}

/// Per event type counts.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct TypeStats {
    /// Event type.
    pub event_type: String,
    /// Deliveries created in the period.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Finally failed.
    pub failed: u64,
    /// Still pending.
    pub pending: u64,
}

/// Delivery statistics over a period.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// The period in days.
    pub period_days: u32,
    /// Deliveries created in the period.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Finally failed.
    pub failed: u64,
    /// Still pending.
    pub pending: u64,
    /// succeeded / (succeeded + failed); `null` when nothing finished.
    pub success_rate: Option<f64>,
    /// Attempts made in the period.
    pub attempts: u64,
    /// Mean attempt duration in the period.
    pub average_latency_ms: Option<f64>,
    /// By event type.
    pub by_event_type: Vec<TypeStats>,
}

/// Every `/api/webhooks/…` route, for the host router.
pub(crate) fn router() -> OpenApiRouter<HostState> {
    OpenApiRouter::new()
        .routes(routes!(list_event_types))
        .routes(routes!(create_subscription, list_subscriptions))
        .routes(routes!(
            get_subscription,
            update_subscription,
            delete_subscription
        ))
        .routes(routes!(rotate_secret))
        .routes(routes!(test_subscription))
        .routes(routes!(recover_subscription))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(redeliver))
        .routes(routes!(stats))
}

fn webhooks(state: &HostState) -> &Webhooks {
    state.webhooks()
}

fn check_event_types(state: &HostState, types: &[String]) -> ApiResult<()> {
    let catalogue = webhooks(state).catalogue();
    for (i, t) in types.iter().enumerate() {
        if !catalogue.iter().any(|e| e.name == *t) {
            return Err(ApiError::invalid_field(
                format!("event_types[{i}]"),
                format!("unknown event type `{t}`; see GET /api/webhooks/event-types"),
            ));
        }
    }
    Ok(())
}

/// The URL's shape and destination: an address literal, or every address its host name
/// resolves to now (it is judged again at every attempt). 422 naming `url` when refused.
async fn check_url(state: &HostState, raw: &str) -> ApiResult<String> {
    let policy = webhooks(state).policy();
    let url = policy
        .check_url(raw)
        .map_err(|e| ApiError::invalid_field("url", e.to_string()))?;
    if let Some(host) = url.domain() {
        let port = url.port_or_known_default().unwrap_or(443);
        // A name that does not resolve yet is accepted; the delivery decides.
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            policy.resolve(host, port),
        )
        .await;
        if let Ok(Ok(screened)) = lookup
            && let Some(refused) = screened.refusal(host)
        {
            return Err(ApiError::invalid_field("url", refused.to_string()));
        }
    }
    Ok(url.to_string())
}

async fn load_sub(state: &HostState, id: &str) -> ApiResult<SubRow> {
    webhooks(state)
        .subscription(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`")))
}

fn manual_error(e: ManualError) -> ApiError {
    match e {
        ManualError::Busy => {
            ApiError::conflict("an attempt for this delivery is in flight; try again shortly")
        }
        ManualError::Gone(m) => ApiError::new(StatusCode::GONE, "gone", m),
        ManualError::Graph(e) => e.into(),
    }
}

fn parse_time(field: &str, text: &str) -> ApiResult<i64> {
    rfc3339_to_ms(text).ok_or_else(|| {
        ApiError::invalid_param(
            field,
            "must be an RFC 3339 time such as 2026-01-31T12:00:00Z",
        )
    })
}

/// The event types subscriptions may name, with a description and an example payload.
#[utoipa::path(get, path = "/api/webhooks/event-types", tag = "Webhooks",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Vec<EventType>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_event_types(
    State(state): State<HostState>,
    _admin: Admin,
) -> Json<Vec<EventType>> {
    Json(webhooks(&state).catalogue().to_vec())
}

/// Create a subscription. The answer carries its secret, shown only now.
#[utoipa::path(post, path = "/api/webhooks/subscriptions", tag = "Webhooks",
    request_body(content = CreateSubscription, example = json!({
        "url": "https://example.com/hooks/graphagent",
        "event_types": ["sentdm.message.delivered", "sentdm.message.failed"],
        "description": "Order notifications"
    })),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = SubscriptionWithSecret),
        (status = 400, description = "Unknown event type", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, description = "Refused URL (`field`: `url`) or invalid body", body = ErrorBody),
    ))]
pub(crate) async fn create_subscription(
    State(state): State<HostState>,
    _admin: Admin,
    Json(body): Json<CreateSubscription>,
) -> ApiResult<(StatusCode, Json<SubscriptionWithSecret>)> {
    check_event_types(&state, &body.event_types)?;
    let url = check_url(&state, &body.url).await?;
    if body.description.chars().count() > 1000 {
        return Err(ApiError::invalid_field(
            "description",
            "at most 1000 characters",
        ));
    }
    let now = now_ms();
    let id = format!("sub_{}", uuid::Uuid::now_v7().simple());
    let secret = new_secret();
    let row = SubRow {
        key: id.clone(),
        url,
        event_types: body.event_types,
        description: body.description,
        agent_id: body.agent_id.filter(|s| !s.is_empty()),
        action_id: body.action_id.filter(|s| !s.is_empty()),
        enabled: true,
        secret: secret.clone(),
        previous_secret: None,
        previous_secret_expires_ms: None,
        consecutive_failures: 0,
        first_failure_ms: None,
        disabled_reason: None,
        created_ms: now,
        updated_ms: now,
    };
    let content = serde_json::to_value(&row).map_err(|_| ApiError::internal())?;
    state
        .graph()
        .query(
            "CREATE type::record('webhook_subscription', $id) CONTENT $row RETURN NONE;",
            json!({"id": id, "row": content}),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SubscriptionWithSecret {
            subscription: Subscription::from(&row),
            secret,
        }),
    ))
}

/// List subscriptions (without secrets).
#[utoipa::path(get, path = "/api/webhooks/subscriptions", tag = "Webhooks",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Vec<Subscription>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_subscriptions(
    State(state): State<HostState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<Subscription>>> {
    let rows: Vec<SubRow> = state
        .graph()
        .query_rows(
            "SELECT * FROM webhook_subscription ORDER BY created_ms;",
            Value::Null,
            0,
        )
        .await?;
    Ok(Json(rows.iter().map(Subscription::from).collect()))
}

/// One subscription (without its secret).
#[utoipa::path(get, path = "/api/webhooks/subscriptions/{subscription_id}", tag = "Webhooks",
    params(("subscription_id" = String, Path, description = "`sub_…`")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Subscription), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_subscription(
    State(state): State<HostState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Subscription>> {
    Ok(Json(Subscription::from(&load_sub(&state, &id).await?)))
}

/// Change a subscription. Enabling resets its failure counters.
#[utoipa::path(patch, path = "/api/webhooks/subscriptions/{subscription_id}", tag = "Webhooks",
    params(("subscription_id" = String, Path, description = "`sub_…`")),
    request_body(content = UpdateSubscription,
        example = json!({"description": "Order notifications", "enabled": true})),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Subscription), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn update_subscription(
    State(state): State<HostState>,
    _admin: Admin,
    Path(id): Path<String>,
    Json(body): Json<UpdateSubscription>,
) -> ApiResult<Json<Subscription>> {
    load_sub(&state, &id).await?;
    let mut set = serde_json::Map::new();
    if let Some(url) = &body.url {
        set.insert("url".into(), json!(check_url(&state, url).await?));
    }
    if let Some(types) = &body.event_types {
        check_event_types(&state, types)?;
        set.insert("event_types".into(), json!(types));
    }
    if let Some(d) = &body.description {
        if d.chars().count() > 1000 {
            return Err(ApiError::invalid_field(
                "description",
                "at most 1000 characters",
            ));
        }
        set.insert("description".into(), json!(d));
    }
    if let Some(enabled) = body.enabled {
        set.insert("enabled".into(), json!(enabled));
        if enabled {
            set.insert("consecutive_failures".into(), json!(0));
            set.insert("first_failure_ms".into(), Value::Null);
            set.insert("disabled_reason".into(), Value::Null);
        }
    }
    set.insert("updated_ms".into(), json!(now_ms()));
    let row: Option<SubRow> = state
        .graph()
        .query_opt(
            "UPDATE type::record('webhook_subscription', $id) MERGE $set RETURN AFTER;",
            json!({"id": id, "set": set}),
            0,
        )
        .await?;
    let row = row.ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`")))?;
    if body.enabled == Some(true) {
        state.webhooks().publisher().notify();
    }
    Ok(Json(Subscription::from(&row)))
}

/// Delete a subscription; its pending deliveries are abandoned.
#[utoipa::path(delete, path = "/api/webhooks/subscriptions/{subscription_id}", tag = "Webhooks",
    params(("subscription_id" = String, Path, description = "`sub_…`")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Deleted", body = Subscription), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_subscription(
    State(state): State<HostState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Subscription>> {
    let row = load_sub(&state, &id).await?;
    webhooks(&state).delete_subscription(&id).await?;
    Ok(Json(Subscription::from(&row)))
}

/// Issue a new secret. The previous one keeps signing for the grace period (both
/// signatures are sent meanwhile). The new secret is shown only now.
#[utoipa::path(post, path = "/api/webhooks/subscriptions/{subscription_id}/rotate-secret", tag = "Webhooks",
    params(("subscription_id" = String, Path, description = "`sub_…`")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Rotated; `secret` is shown only now", body = SubscriptionWithSecret),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn rotate_secret(
    State(state): State<HostState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<SubscriptionWithSecret>> {
    load_sub(&state, &id).await?;
    let secret = new_secret();
    let now = now_ms();
    let grace =
        i64::try_from(webhooks(&state).settings().rotation_grace.as_millis()).unwrap_or(i64::MAX);
    let row: Option<SubRow> = state
        .graph()
        .query_opt(
            "UPDATE type::record('webhook_subscription', $id) SET previous_secret = secret, \
             previous_secret_expires_ms = $until, secret = $secret, updated_ms = $now RETURN AFTER;",
            json!({"id": id, "secret": secret, "until": now.saturating_add(grace), "now": now}),
            0,
        )
        .await?;
    let row = row.ok_or_else(|| ApiError::not_found(format!("no subscription `{id}`")))?;
    Ok(Json(SubscriptionWithSecret {
        subscription: Subscription::from(&row),
        secret,
    }))
}

/// Send a `webhook.test` event to the subscription now and return the attempt.
#[utoipa::path(post, path = "/api/webhooks/subscriptions/{subscription_id}/test", tag = "Webhooks",
    params(("subscription_id" = String, Path, description = "`sub_…`")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The attempt (successful or not)", body = Attempt),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn test_subscription(
    State(state): State<HostState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Attempt>> {
    let sub = load_sub(&state, &id).await?;
    let attempt = webhooks(&state)
        .send_test(&sub)
        .await
        .map_err(manual_error)?;
    Ok(Json(attempt.into()))
}

/// Re-queue the subscription's failed deliveries created since `since` (at most 14
/// days back, at most 10,000).
#[utoipa::path(post, path = "/api/webhooks/subscriptions/{subscription_id}/recover", tag = "Webhooks",
    params(("subscription_id" = String, Path, description = "`sub_…`"), RecoverQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = RecoverResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn recover_subscription(
    State(state): State<HostState>,
    _admin: Admin,
    Path(id): Path<String>,
    Query(q): Query<RecoverQuery>,
) -> ApiResult<Json<RecoverResult>> {
    load_sub(&state, &id).await?;
    let now = now_ms();
    let floor = now - 14 * 86_400_000;
    let since = match &q.since {
        Some(s) => parse_time("since", s)?.max(floor),
        None => floor,
    };
    let out = state
        .graph()
        .query(
            "LET $ids = (SELECT VALUE id FROM webhook_delivery WHERE subscription_id = $id \
             AND status = 'failed' AND created_ms >= $since LIMIT 10000); \
             UPDATE $ids SET status = 'pending', scheduled_attempts = 0, next_attempt_at = $now, \
             completed_ms = NONE RETURN NONE; RETURN array::len($ids);",
            json!({"id": id, "since": since, "now": now}),
        )
        .await?;
    let requeued = out
        .last()
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    webhooks(&state).publisher().notify();
    Ok(Json(RecoverResult { requeued }))
}

/// Deliveries, newest first, filtered.
#[utoipa::path(get, path = "/api/webhooks/deliveries", tag = "Webhooks",
    params(DeliveryFilter),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_deliveries(
    State(state): State<HostState>,
    _admin: Admin,
    Query(f): Query<DeliveryFilter>,
) -> ApiResult<Json<DeliveryPage>> {
    let paging = Paging::new(f.page, f.page_size, 50, 200)?;
    let (page, page_size) = (paging.page, paging.page_size);
    let mut conds = vec!["true".to_owned()];
    let mut vars = serde_json::Map::new();
    if let Some(s) = f.subscription_id {
        conds.push("subscription_id = $sub".into());
        vars.insert("sub".into(), json!(s));
    }
    if let Some(t) = f.event_type {
        conds.push("event_type = $type".into());
        vars.insert("type".into(), json!(t));
    }
    if let Some(o) = f.outcome.as_deref() {
        let status = match o {
            "success" => DeliveryStatus::Succeeded,
            "failure" => DeliveryStatus::Failed,
            "pending" => DeliveryStatus::Pending,
            _ => {
                return Err(ApiError::invalid_param(
                    "outcome",
                    format!("must be one of {}", OUTCOMES.join(", ")),
                ));
            }
        };
        conds.push("status = $status".into());
        vars.insert("status".into(), json!(status));
    }
    if let Some(s) = &f.since {
        conds.push("created_ms >= $since".into());
        vars.insert("since".into(), json!(parse_time("since", s)?));
    }
    if let Some(u) = &f.until {
        conds.push("created_ms < $until".into());
        vars.insert("until".into(), json!(parse_time("until", u)?));
    }
    vars.insert("limit".into(), json!(page_size + 1));
    vars.insert("start".into(), json!(paging.offset()));
    let sql = format!(
        "SELECT * FROM webhook_delivery WHERE {} ORDER BY created_ms DESC, key DESC LIMIT $limit START $start;",
        conds.join(" AND ")
    );
    let mut rows: Vec<DeliveryRow> = state
        .graph()
        .query_rows(&sql, Value::Object(vars), 0)
        .await?;
    let has_more = rows.len() > page_size as usize;
    rows.truncate(page_size as usize);
    Ok(Json(DeliveryPage {
        items: rows.into_iter().map(Delivery::from).collect(),
        page,
        page_size,
        has_more,
    }))
}

/// One delivery with its payload and attempts.
#[utoipa::path(get, path = "/api/webhooks/deliveries/{delivery_id}", tag = "Webhooks",
    params(("delivery_id" = String, Path, description = "`{event_id}_{subscription_id}`")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = DeliveryDetail), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_delivery(
    State(state): State<HostState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryDetail>> {
    let out = state
        .graph()
        .query(
            "SELECT * FROM type::record('webhook_delivery', $id); \
             SELECT * FROM webhook_attempt WHERE delivery_id = $id ORDER BY created_ms, key;",
            json!({"id": id}),
        )
        .await?;
    let mut out = out.into_iter();
    let delivery: Option<DeliveryRow> = crate::graph::rows_from(out.next().unwrap_or(Value::Null))?
        .into_iter()
        .next();
    let delivery = delivery.ok_or_else(|| ApiError::not_found(format!("no delivery `{id}`")))?;
    let attempts: Vec<AttemptRow> = crate::graph::rows_from(out.next().unwrap_or(Value::Null))?;
    let event: Option<OutboxEvent> = state
        .graph()
        .query_opt(
            "SELECT * FROM type::record('outbox_event', $id);",
            json!({"id": delivery.event_id}),
            0,
        )
        .await?;
    let (payload, payload_expired) = match event {
        Some(e) => (e.data.unwrap_or(Value::Null), e.payload_expired),
        None => (Value::Null, true),
    };
    Ok(Json(DeliveryDetail {
        delivery: delivery.into(),
        payload,
        payload_expired,
        attempts_log: attempts.into_iter().map(Attempt::from).collect(),
    }))
}

/// Send a delivery again now (one manual attempt) and return the attempt.
#[utoipa::path(post, path = "/api/webhooks/deliveries/{delivery_id}/redeliver", tag = "Webhooks",
    params(("delivery_id" = String, Path, description = "`{event_id}_{subscription_id}`")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The attempt (successful or not)", body = Attempt),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "An attempt is in flight", body = ErrorBody),
        (status = 410, description = "The payload has expired", body = ErrorBody)))]
pub(crate) async fn redeliver(
    State(state): State<HostState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Attempt>> {
    let exists: Option<Value> = state
        .graph()
        .query_opt(
            "SELECT key FROM type::record('webhook_delivery', $id);",
            json!({"id": id}),
            0,
        )
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!("no delivery `{id}`")));
    }
    let attempt = webhooks(&state)
        .deliver_now(&id)
        .await
        .map_err(manual_error)?;
    Ok(Json(attempt.into()))
}

/// Totals, success rate, average latency and counts by event type over a period.
#[utoipa::path(get, path = "/api/webhooks/stats", tag = "Webhooks",
    params(StatsQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Stats), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn stats(
    State(state): State<HostState>,
    _admin: Admin,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let period_days = q.period_days.unwrap_or(7);
    if !(1..=90).contains(&period_days) {
        return Err(ApiError::invalid_param(
            "period_days",
            "must be between 1 and 90",
        ));
    }
    let since = now_ms() - i64::from(period_days) * 86_400_000;
    let out = state
        .graph()
        .query(
            "SELECT event_type, status, count() AS n FROM webhook_delivery \
             WHERE created_ms >= $since GROUP BY event_type, status; \
             SELECT count() AS n, math::mean(duration_ms) AS avg FROM webhook_attempt \
             WHERE created_ms >= $since GROUP ALL;",
            json!({"since": since}),
        )
        .await?;
    #[derive(Deserialize)]
    struct Group {
        event_type: String,
        status: String,
        n: u64,
    }
    #[derive(Deserialize)]
    struct Latency {
        n: u64,
        avg: Option<f64>,
    }
    let mut out = out.into_iter();
    let groups: Vec<Group> = crate::graph::rows_from(out.next().unwrap_or(Value::Null))?;
    let latency: Option<Latency> = crate::graph::rows_from(out.next().unwrap_or(Value::Null))?
        .into_iter()
        .next();
    let mut by_type: std::collections::BTreeMap<String, TypeStats> = Default::default();
    for g in groups {
        let t = by_type
            .entry(g.event_type.clone())
            .or_insert_with(|| TypeStats {
                event_type: g.event_type.clone(),
                ..TypeStats::default()
            });
        t.total += g.n;
        match g.status.as_str() {
            "succeeded" => t.succeeded += g.n,
            "failed" => t.failed += g.n,
            _ => t.pending += g.n,
        }
    }
    let sum = |f: fn(&TypeStats) -> u64| by_type.values().map(f).sum::<u64>();
    let (total, succeeded, failed, pending) = (
        sum(|t| t.total),
        sum(|t| t.succeeded),
        sum(|t| t.failed),
        sum(|t| t.pending),
    );
    let finished = succeeded + failed;
    Ok(Json(Stats {
        period_days,
        total,
        succeeded,
        failed,
        pending,
        success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
        attempts: latency.as_ref().map_or(0, |l| l.n),
        average_latency_ms: latency.and_then(|l| l.avg),
        by_event_type: by_type.into_values().collect(),
    }))
}
