//! HTTP endpoints of the SentDM action (tag `SentDM`): thin wrappers over the methods of
//! [`SentDmBroadcast`], plus the public webhook receiver.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use graphagent::error::ErrorBody;
use graphagent::plugin::{ActionRef, ActionState, Json, Paging, Path, Query, read_body};
use graphagent::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::record::{MessageRecord, Reply};
use crate::store::{BroadcastSummary, RecordFilter, ReplyFilter};
use crate::webhook::webhook_scope;
use crate::{
    BroadcastRequest, BroadcastResult, ReconcileReport, SentDmBroadcast, SentDmError, SentDmHealth,
    WebhookAck, WebhookRejection,
};
use sentdm_client::model::{Message, MessageActivities, MessageStatus, Page, Template};

const TAG: &str = "SentDM";

/// Largest SentDM delivery read (64 KiB; see `docs/decisions.md`). Envelopes are a few KB.
pub const MAX_DELIVERY_BYTES: usize = 64 * 1024;

impl From<SentDmError> for ApiError {
    fn from(e: SentDmError) -> Self {
        match e {
            SentDmError::NotConfigured => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_configured",
                e.to_string(),
            ),
            SentDmError::Invalid { field, message } => ApiError::invalid_field(field, message),
            SentDmError::NotFound(m) => ApiError::not_found(m),
            SentDmError::Unreachable(m) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "sentdm_unreachable",
                format!("SentDM could not be reached: {m}"),
            ),
            SentDmError::Graph(g) => g.into(),
            SentDmError::SentDm(api) => {
                let code = api
                    .code
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {}", api.status));
                let text = format!("SentDM: {code}: {}", api.message);
                match api.status {
                    400 | 422 => {
                        let mut err = ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "sentdm_rejected",
                            text,
                        );
                        err.field = api.details.keys().next().cloned();
                        err
                    }
                    404 => ApiError::new(StatusCode::NOT_FOUND, "sentdm_not_found", text),
                    409 => ApiError::new(StatusCode::CONFLICT, "sentdm_conflict", text),
                    429 => {
                        let mut err = ApiError::too_many_requests(
                            api.retry_after.map_or(60, |d| d.as_secs().max(1)),
                        );
                        err.message = text;
                        err
                    }
                    401 | 403 => ApiError::bad_gateway(
                        "sentdm_auth",
                        format!("{text} (check SENTDM_API_KEY)"),
                    ),
                    _ => ApiError::bad_gateway("sentdm_unavailable", text),
                }
            }
        }
    }
}

/// Description of the `SentDM` tag in the document.
const TAG_DESCRIPTION: &str = "SentDM broadcast action: template SMS / WhatsApp broadcasts through \
    SentDM v3, one record per sent message with its delivery status (folded from SentDM's \
    signed webhooks), inbound replies, and the action's webhook at SentDM. Try it without an \
    account against the bundled simulator (`graphagent demo`).";

/// The document part that carries the tag's description (merged with the routes').
fn tag_doc() -> utoipa::openapi::OpenApi {
    let mut doc = utoipa::openapi::OpenApi::default();
    doc.tags = Some(vec![
        utoipa::openapi::tag::TagBuilder::new()
            .name(TAG)
            .description(Some(TAG_DESCRIPTION))
            .build(),
    ]);
    doc
}

pub(super) fn private() -> OpenApiRouter<ActionState> {
    OpenApiRouter::with_openapi(tag_doc())
        .routes(routes!(send_broadcast))
        .routes(routes!(get_broadcast))
        .routes(routes!(get_message))
        .routes(routes!(get_activities))
        .routes(routes!(list_templates))
        .routes(routes!(status))
        .routes(routes!(register_webhook))
        .routes(routes!(get_webhook))
        .routes(routes!(list_records))
        .routes(routes!(get_record))
        .routes(routes!(refresh_record))
        .routes(routes!(list_replies))
        .routes(routes!(get_reply))
}

pub(super) fn public() -> OpenApiRouter<ActionState> {
    OpenApiRouter::new().routes(routes!(receive_webhook))
}

/// Send a template broadcast (SMS / WhatsApp).
#[utoipa::path(post, path = "/sentdm/broadcast", tag = TAG, request_body = BroadcastRequest,
    responses(
        (status = 202, description = "SentDM accepted the messages (delivery follows by webhook)", body = BroadcastResult),
        (status = 404, description = "No such action, or SentDM knows no such template or profile", body = ErrorBody),
        (status = 409, description = "SentDM refused: the idempotency key was used with another request", body = ErrorBody),
        (status = 422, description = "Invalid request, or SentDM rejected it; nothing was sent", body = ErrorBody),
        (status = 429, description = "SentDM rate limit (after retries)", body = ErrorBody),
        (status = 502, description = "SentDM failed", body = ErrorBody),
        (status = 503, description = "SentDM is not configured", body = ErrorBody),
    ))]
async fn send_broadcast(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Json(req): Json<BroadcastRequest>,
) -> ApiResult<(StatusCode, Json<BroadcastResult>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(action.send_broadcast(req).await?),
    ))
}

/// A broadcast and its delivery funnel (records counted by current status).
#[utoipa::path(get, path = "/sentdm/broadcast/{broadcast_id}", tag = TAG,
    params(("broadcast_id" = String, Path, description = "Broadcast id (`bc_…`)")),
    responses(
        (status = 200, description = "The broadcast with its delivery funnel", body = BroadcastSummary),
        (status = 404, description = "No such action, or no such broadcast of this action", body = ErrorBody),
    ))]
async fn get_broadcast(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<BroadcastSummary>> {
    Ok(Json(action.get_broadcast(&ids.1).await?))
}

/// A message's status at SentDM.
#[utoipa::path(get, path = "/sentdm/messages/{message_id}", tag = TAG,
    params(("message_id" = String, Path, description = "SentDM message id (a UUID)", pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "SentDM's view of the message", body = Message),
        (status = 404, description = "No such action, or SentDM knows no such message", body = ErrorBody),
        (status = 422, description = "SentDM rejected the message id (`sentdm_rejected`, e.g. not a UUID)", body = ErrorBody),
        (status = 429, description = "SentDM rate limit (after retries)", body = ErrorBody),
        (status = 502, description = "SentDM failed or could not be reached", body = ErrorBody),
        (status = 503, description = "SentDM is not configured", body = ErrorBody),
    ))]
async fn get_message(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<Message>> {
    Ok(Json(action.get_message_status(&ids.1).await?))
}

/// A message's activities at SentDM (newest first).
#[utoipa::path(get, path = "/sentdm/messages/{message_id}/activities", tag = TAG,
    params(("message_id" = String, Path, description = "SentDM message id (a UUID)", pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "The message's activities, newest first", body = MessageActivities),
        (status = 404, description = "No such action, or SentDM knows no such message", body = ErrorBody),
        (status = 422, description = "SentDM rejected the message id (`sentdm_rejected`, e.g. not a UUID)", body = ErrorBody),
        (status = 429, description = "SentDM rate limit (after retries)", body = ErrorBody),
        (status = 502, description = "SentDM failed or could not be reached", body = ErrorBody),
        (status = 503, description = "SentDM is not configured", body = ErrorBody),
    ))]
async fn get_activities(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<MessageActivities>> {
    Ok(Json(action.get_message_activities(&ids.1).await?))
}

/// Paging for SentDM lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TemplateParams {
    /// Page, from 1.
    #[param(minimum = 1, maximum = 4_294_967_295_u32, format = Int64, default = 1)]
    page: Option<u32>,
    /// Items per page (1–100).
    #[param(minimum = 1, maximum = 100, default = 20)]
    page_size: Option<u32>,
    /// Name contains.
    search: Option<String>,
}

fn paging(page: Option<u32>, page_size: Option<u32>) -> ApiResult<Paging> {
    Paging::new(page, page_size, 20, 100)
}

/// Templates at SentDM.
#[utoipa::path(get, path = "/sentdm/templates", tag = TAG, params(TemplateParams),
    responses(
        (status = 200, description = "One page of SentDM's templates", body = Page<Template>),
        (status = 422, description = "`page` or `page_size` out of range", body = ErrorBody),
        (status = 429, description = "SentDM rate limit (after retries)", body = ErrorBody),
        (status = 502, description = "SentDM failed or could not be reached", body = ErrorBody),
        (status = 503, description = "SentDM is not configured", body = ErrorBody),
    ))]
async fn list_templates(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Query(q): Query<TemplateParams>,
) -> ApiResult<Json<Page<Template>>> {
    let p = paging(q.page, q.page_size)?;
    Ok(Json(
        action.list_templates(p.page, p.page_size, q.search).await?,
    ))
}

/// Health: configured, SentDM reachable, account channels, webhook registered.
#[utoipa::path(get, path = "/sentdm/status", tag = TAG,
    responses((status = 200, description = "Whether SentDM can be used; never fails because SentDM is down", body = SentDmHealth)))]
async fn status(ActionRef(action): ActionRef<SentDmBroadcast>) -> Json<SentDmHealth> {
    Json(action.healthcheck().await)
}

/// Reconcile the SentDM webhook now (register, repair or keep).
#[utoipa::path(post, path = "/sentdm/webhook/register", tag = TAG,
    responses((status = 200, description = "Reconciled (see `outcome`)", body = ReconcileReport)))]
async fn register_webhook(ActionRef(action): ActionRef<SentDmBroadcast>) -> Json<ReconcileReport> {
    Json(action.reconcile_webhook_endpoint().await)
}

/// The webhook as this action sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmWebhookInfo)]
pub struct WebhookInfo {
    /// URL SentDM calls (machine key redacted).
    pub url: Option<String>,
    /// Why there is no URL.
    pub url_error: Option<String>,
    /// Webhook id at SentDM, when registered.
    pub webhook_id: Option<String>,
    /// Its signing secret is on record.
    pub signing_secret_on_record: bool,
    /// The last reconcile.
    pub last_reconcile: Option<ReconcileReport>,
}

/// The action's SentDM webhook.
#[utoipa::path(get, path = "/sentdm/webhook", tag = TAG, responses((status = 200, body = WebhookInfo)))]
async fn get_webhook(ActionRef(action): ActionRef<SentDmBroadcast>) -> Json<WebhookInfo> {
    let (url, url_error) = match action.get_webhook_url() {
        Ok(u) => (Some(u), None),
        Err(e) => (None, Some(e)),
    };
    let verifier = action
        .verifier
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let health = action.local_health();
    Json(WebhookInfo {
        url,
        url_error,
        webhook_id: verifier.as_ref().map(|v| v.webhook_id.clone()),
        signing_secret_on_record: verifier.is_some(),
        last_reconcile: health.last_reconcile,
    })
}

/// Record filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordParams {
    /// Current status, e.g. `delivered`.
    #[param(schema_with = status_schema)]
    status: Option<String>,
    /// Recipient, E.164.
    to: Option<String>,
    /// SentDM message id.
    sentdm_message_id: Option<String>,
    /// Broadcast id.
    broadcast_id: Option<String>,
    /// Page, from 1.
    #[param(minimum = 1, maximum = 4_294_967_295_u32, format = Int64, default = 1)]
    page: Option<u32>,
    /// Items per page (1–100).
    #[param(minimum = 1, maximum = 100, default = 20)]
    page_size: Option<u32>,
}

fn status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(
            MessageStatus::ALL
                .iter()
                .filter(|s| s.is_ranked())
                .map(MessageStatus::lowercase),
        ))
        .description(Some("Current status, e.g. `delivered`."))
        .build()
}

/// A page of records.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmRecordPage)]
pub struct RecordPage {
    /// Records, newest first.
    pub items: Vec<MessageRecord>,
    /// This page.
    pub page: u32,
    /// Its size.
    pub page_size: u32,
    /// Records matching the filters.
    pub total: u64,
}

/// Records of sent messages (one per SentDM message id, recipient and channel).
#[utoipa::path(get, path = "/sentdm/broadcasts", tag = TAG, params(RecordParams),
    responses(
        (status = 200, body = RecordPage),
        (status = 422, description = "Unknown `status`, or `page` / `page_size` out of range", body = ErrorBody),
    ))]
async fn list_records(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Query(q): Query<RecordParams>,
) -> ApiResult<Json<RecordPage>> {
    let paging = paging(q.page, q.page_size)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(word) => Some(
            MessageStatus::from_lowercase(word)
                .filter(MessageStatus::is_ranked)
                .ok_or_else(|| {
                    ApiError::invalid_param("status", format!("unknown status `{word}`"))
                })?,
        ),
    };
    let filter = RecordFilter {
        status,
        to: q.to,
        sentdm_message_id: q.sentdm_message_id,
        broadcast_id: q.broadcast_id,
        paging,
    };
    let (items, total) = action.list_records(&filter).await?;
    Ok(Json(RecordPage {
        items,
        page: paging.page,
        page_size: paging.page_size,
        total,
    }))
}

/// One record with its event log.
#[utoipa::path(get, path = "/sentdm/broadcasts/{record_id}", tag = TAG,
    params(("record_id" = String, Path, description = "Record id")),
    responses(
        (status = 200, body = MessageRecord),
        (status = 404, description = "No such action, or no such record of this action", body = ErrorBody),
    ))]
async fn get_record(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<MessageRecord>> {
    Ok(Json(action.get_record(&ids.1).await?))
}

/// Re-read the message from SentDM and fold it in (`refresh` event).
#[utoipa::path(post, path = "/sentdm/broadcasts/{record_id}/refresh", tag = TAG,
    params(("record_id" = String, Path, description = "Record id")),
    responses(
        (status = 200, description = "The record after the refresh", body = MessageRecord),
        (status = 404, description = "No such action or record, or SentDM knows no such message", body = ErrorBody),
        (status = 422, description = "A sandbox record (SentDM keeps no such message)", body = ErrorBody),
        (status = 429, description = "SentDM rate limit (after retries)", body = ErrorBody),
        (status = 502, description = "SentDM failed or could not be reached", body = ErrorBody),
        (status = 503, description = "SentDM is not configured", body = ErrorBody),
    ))]
async fn refresh_record(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<MessageRecord>> {
    Ok(Json(action.refresh_record(&ids.1).await?))
}

/// Reply filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplyParams {
    /// The contact who wrote, E.164.
    #[param(pattern = r"^\+[1-9][0-9]{6,14}$")]
    from: Option<String>,
    /// Replies linked to this record id.
    record_id: Option<String>,
    /// Page, from 1.
    #[param(minimum = 1, maximum = 4_294_967_295_u32, format = Int64, default = 1)]
    page: Option<u32>,
    /// Items per page (1–100).
    #[param(minimum = 1, maximum = 100, default = 20)]
    page_size: Option<u32>,
}

/// A page of inbound replies.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmReplyPage)]
pub struct ReplyPage {
    /// Replies, newest first.
    pub items: Vec<Reply>,
    /// This page.
    pub page: u32,
    /// Its size.
    pub page_size: u32,
    /// Replies matching the filters.
    pub total: u64,
}

/// Inbound replies (`message.received`), each with the record it answers when known.
#[utoipa::path(get, path = "/sentdm/replies", tag = TAG, params(ReplyParams),
    responses(
        (status = 200, description = "One page of replies, newest first", body = ReplyPage),
        (status = 400, description = "`from` is not E.164, or `page` / `page_size` out of range", body = ErrorBody),
    ))]
async fn list_replies(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Query(q): Query<ReplyParams>,
) -> ApiResult<Json<ReplyPage>> {
    let paging = paging(q.page, q.page_size)?;
    if let Some(from) = &q.from
        && !crate::plan::valid_e164(from)
    {
        return Err(ApiError::invalid_param(
            "from",
            format!("`{from}` is not an E.164 phone number (+ and 7-15 digits)"),
        ));
    }
    let filter = ReplyFilter {
        from: q.from,
        answers_record: q.record_id,
        paging,
    };
    let (items, total) = action.list_replies(&filter).await?;
    Ok(Json(ReplyPage {
        items,
        page: paging.page,
        page_size: paging.page_size,
        total,
    }))
}

/// One inbound reply.
#[utoipa::path(get, path = "/sentdm/replies/{reply_id}", tag = TAG,
    params(("reply_id" = String, Path, description = "Reply id (from the replies list)")),
    responses(
        (status = 200, description = "The reply", body = Reply),
        (status = 404, description = "No such action, or no such reply of this action", body = ErrorBody),
    ))]
async fn get_reply(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<Reply>> {
    Ok(Json(action.get_reply(&ids.1).await?))
}

/// The machine key of a delivery.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookParams {
    /// Scoped key `webhook:sentdm:{action_id}` (also accepted as `x-api-key`).
    api_key: Option<String>,
}

/// SentDM delivery events (called by SentDM, signed).
#[utoipa::path(post, path = "/api/sentdm/webhook/{action_id}", tag = TAG,
    params(("action_id" = String, Path, description = "Action id (`act_…`)"), WebhookParams),
    request_body(content = Object, description = "SentDM webhook envelope, signed with x-webhook-signature"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Committed (`received`), already applied (`duplicate`) or verified but unusable (`ignored`)", body = WebhookAck),
        (status = 401, description = "Missing/invalid key, bad signature, stale timestamp or unknown webhook id; nothing written", body = ErrorBody),
        (status = 403, description = "Key for another scope", body = ErrorBody),
        (status = 404, description = "No loaded SentDM action has this id", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB (checked after the key and the action, before reading the body)", body = ErrorBody),
        (status = 503, description = "No signing secret on record, or storage unavailable; SentDM retries", body = ErrorBody),
    ))]
async fn receive_webhook(
    State(state): State<ActionState>,
    Path(action_id): Path<String>,
    Query(q): Query<WebhookParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<WebhookAck>> {
    let key = q
        .api_key
        .as_deref()
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    state
        .keys()
        .authorize(key, &webhook_scope(&action_id))
        .await?;
    let action = state
        .directory()
        .get::<SentDmBroadcast>(&action_id)
        .ok_or_else(|| ApiError::not_found(format!("no loaded SentDM action `{action_id}`")))?;
    // Only now: a caller without the key, or for no action, never costs a body buffer.
    let body = read_body(body, MAX_DELIVERY_BYTES).await?;
    let result = action.receive_webhook(&headers, &body).await;
    crate::metrics::inbound(&result);
    match result {
        Ok(ack) => Ok(Json(ack)),
        Err(WebhookRejection::Unauthorized(why)) => {
            Err(ApiError::unauthorized(format!("delivery rejected: {why}")))
        }
        Err(WebhookRejection::NoSecret) => Err(ApiError::unavailable(
            "no signing secret on record for this webhook",
        )),
        Err(WebhookRejection::Storage(e)) => Err(e.into()),
    }
}
