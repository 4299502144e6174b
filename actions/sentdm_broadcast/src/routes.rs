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
#[utoipa::path(post, path = "/sentdm/broadcast", tag = TAG,
    request_body(content = BroadcastRequest, example = answers::send_example),
    responses(
        (status = 202, description = "SentDM accepted the messages (delivery follows by webhook)", body = BroadcastResult),
        (status = 404, description = "No such action, or SentDM knows no such template or profile", body = ErrorBody, examples(
            ("No such action" = (value = json!(answers::no_action()))),
            ("Unknown template" = (value = json!(answers::unknown_template()))),
        )),
        (status = 409, description = "SentDM refused: a request with this idempotency key is still being processed (retry shortly)", body = ErrorBody, example = answers::in_flight),
        (status = 422, description = "Invalid request, or SentDM rejected it; nothing was sent", body = ErrorBody, examples(
            ("Invalid request" = (value = json!(answers::invalid_recipient()))),
            ("Unknown field" = (value = json!(answers::unknown_field()))),
            ("SentDM rejected it" = (value = json!(answers::sentdm_rejected()))),
        )),
        (status = 429, description = "SentDM rate limit (after retries); `Retry-After` says when to retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
            example = answers::rate_limited),
        (status = 502, description = "SentDM failed, could not be reached, or refused the API key", body = ErrorBody, examples(
            ("SentDM failed" = (value = json!(answers::sentdm_failed()))),
            ("SentDM unreachable" = (value = json!(answers::unreachable()))),
            ("API key refused" = (value = json!(answers::auth_refused()))),
        )),
        (status = 503, description = "SentDM is not configured, or the graph store is unavailable", body = ErrorBody, examples(
            ("Not configured" = (value = json!(answers::not_configured()))),
            ("Graph unavailable" = (value = json!(answers::graph_unavailable()))),
        )),
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
        (status = 404, description = "No such action, or no such broadcast of this action", body = ErrorBody, examples(
            ("No such action" = (value = json!(answers::no_action()))),
            ("No such broadcast" = (value = json!(answers::no_broadcast()))),
        )),
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
        (status = 404, description = "No such action, or SentDM knows no such message", body = ErrorBody, examples(
            ("No such action" = (value = json!(answers::no_action()))),
            ("Unknown message" = (value = json!(answers::unknown_message()))),
        )),
        (status = 422, description = "SentDM rejected the message id (`sentdm_rejected`, e.g. not a UUID)", body = ErrorBody, example = answers::bad_message_id),
        (status = 429, description = "SentDM rate limit (after retries); `Retry-After` says when to retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
            example = answers::rate_limited),
        (status = 502, description = "SentDM failed, could not be reached, or refused the API key", body = ErrorBody, examples(
            ("SentDM failed" = (value = json!(answers::sentdm_failed()))),
            ("SentDM unreachable" = (value = json!(answers::unreachable()))),
            ("API key refused" = (value = json!(answers::auth_refused()))),
        )),
        (status = 503, description = "SentDM is not configured", body = ErrorBody, example = answers::not_configured),
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
        (status = 404, description = "No such action, or SentDM knows no such message", body = ErrorBody, examples(
            ("No such action" = (value = json!(answers::no_action()))),
            ("Unknown message" = (value = json!(answers::unknown_message()))),
        )),
        (status = 422, description = "SentDM rejected the message id (`sentdm_rejected`, e.g. not a UUID)", body = ErrorBody, example = answers::bad_message_id),
        (status = 429, description = "SentDM rate limit (after retries); `Retry-After` says when to retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
            example = answers::rate_limited),
        (status = 502, description = "SentDM failed, could not be reached, or refused the API key", body = ErrorBody, examples(
            ("SentDM failed" = (value = json!(answers::sentdm_failed()))),
            ("SentDM unreachable" = (value = json!(answers::unreachable()))),
            ("API key refused" = (value = json!(answers::auth_refused()))),
        )),
        (status = 503, description = "SentDM is not configured", body = ErrorBody, example = answers::not_configured),
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
        (status = 400, description = "`page` or `page_size` out of range, or a parameter that cannot be parsed", body = ErrorBody, example = answers::page_size_out_of_range),
        (status = 429, description = "SentDM rate limit (after retries); `Retry-After` says when to retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
            example = answers::rate_limited),
        (status = 502, description = "SentDM failed, could not be reached, or refused the API key", body = ErrorBody, examples(
            ("SentDM failed" = (value = json!(answers::sentdm_failed()))),
            ("SentDM unreachable" = (value = json!(answers::unreachable()))),
            ("API key refused" = (value = json!(answers::auth_refused()))),
        )),
        (status = 503, description = "SentDM is not configured", body = ErrorBody, example = answers::not_configured),
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
        (status = 400, description = "Unknown `status`, `page` / `page_size` out of range, or a parameter that cannot be parsed", body = ErrorBody, examples(
            ("Unknown status" = (value = json!(answers::unknown_status()))),
            ("Page size out of range" = (value = json!(answers::page_size_out_of_range()))),
        )),
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
                .ok_or_else(|| unknown_status(word))?,
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
        (status = 404, description = "No such action, or no such record of this action", body = ErrorBody, examples(
            ("No such action" = (value = json!(answers::no_action()))),
            ("No such record" = (value = json!(answers::no_record()))),
        )),
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
        (status = 404, description = "No such action or record, or SentDM knows no such message", body = ErrorBody, examples(
            ("No such action" = (value = json!(answers::no_action()))),
            ("No such record" = (value = json!(answers::no_record()))),
            ("Unknown message" = (value = json!(answers::unknown_message()))),
        )),
        (status = 422, description = "A sandbox record (SentDM keeps no such message)", body = ErrorBody, example = answers::sandbox_record),
        (status = 429, description = "SentDM rate limit (after retries); `Retry-After` says when to retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
            example = answers::rate_limited),
        (status = 502, description = "SentDM failed, could not be reached, or refused the API key", body = ErrorBody, examples(
            ("SentDM failed" = (value = json!(answers::sentdm_failed()))),
            ("SentDM unreachable" = (value = json!(answers::unreachable()))),
            ("API key refused" = (value = json!(answers::auth_refused()))),
        )),
        (status = 503, description = "SentDM is not configured", body = ErrorBody, example = answers::not_configured),
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
        (status = 400, description = "`from` is not E.164, `page` / `page_size` out of range, or a parameter that cannot be parsed", body = ErrorBody, examples(
            ("Not E.164" = (value = json!(answers::from_not_e164()))),
            ("Page size out of range" = (value = json!(answers::page_size_out_of_range()))),
        )),
    ))]
async fn list_replies(
    ActionRef(action): ActionRef<SentDmBroadcast>,
    Query(q): Query<ReplyParams>,
) -> ApiResult<Json<ReplyPage>> {
    let paging = paging(q.page, q.page_size)?;
    if let Some(from) = &q.from
        && !crate::plan::valid_e164(from)
    {
        return Err(not_e164(from));
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

/// `status` names no status a record can be in.
fn unknown_status(word: &str) -> ApiError {
    ApiError::invalid_param("status", format!("unknown status `{word}`"))
}

/// `from` is not a phone number the sends would accept.
fn not_e164(from: &str) -> ApiError {
    ApiError::invalid_param(
        "from",
        format!("`{from}` is not an E.164 phone number (+ and 7-15 digits)"),
    )
}

/// One inbound reply.
#[utoipa::path(get, path = "/sentdm/replies/{reply_id}", tag = TAG,
    params(("reply_id" = String, Path, description = "Reply id (from the replies list)")),
    responses(
        (status = 200, description = "The reply", body = Reply),
        (status = 404, description = "No such action, or no such reply of this action", body = ErrorBody, examples(
            ("No such action" = (value = json!(answers::no_action()))),
            ("No such reply" = (value = json!(answers::no_reply()))),
        )),
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
        (status = 401, description = "Missing/invalid key, bad signature, stale timestamp or unknown webhook id; nothing written", body = ErrorBody, examples(
            ("Bad signature" = (value = json!(answers::bad_signature()))),
            ("Missing key" = (value = json!(answers::missing_key()))),
        )),
        (status = 403, description = "Key for another scope", body = ErrorBody, example = answers::wrong_scope),
        (status = 404, description = "No loaded SentDM action has this id", body = ErrorBody, example = answers::no_receiver),
        (status = 413, description = "Body over 64 KiB (checked after the key and the action, before reading the body)", body = ErrorBody, example = answers::delivery_too_large),
        (status = 503, description = "No signing secret on record, or storage unavailable; SentDM retries", body = ErrorBody, examples(
            ("No signing secret" = (value = json!(answers::no_secret()))),
            ("Graph unavailable" = (value = json!(answers::graph_unavailable()))),
        )),
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
        .ok_or_else(|| no_receiver(&action_id))?;
    // Only now: a caller without the key, or for no action, never costs a body buffer.
    let body = read_body(body, MAX_DELIVERY_BYTES).await?;
    let result = action.receive_webhook(&headers, &body).await;
    crate::metrics::inbound(&result);
    match result {
        Ok(ack) => Ok(Json(ack)),
        Err(rejection) => Err(rejected(rejection)),
    }
}

/// No loaded SentDM action has the id a delivery names.
fn no_receiver(action_id: &str) -> ApiError {
    ApiError::not_found(format!("no loaded SentDM action `{action_id}`"))
}

/// A delivery the action refused.
fn rejected(rejection: WebhookRejection) -> ApiError {
    match rejection {
        WebhookRejection::Unauthorized(why) => {
            ApiError::unauthorized(format!("delivery rejected: {why}"))
        }
        WebhookRejection::NoSecret => {
            ApiError::unavailable("no signing secret on record for this webhook")
        }
        WebhookRejection::Storage(e) => e.into(),
    }
}

/// The document's examples: a send that works against the simulator as shown, and error
/// answers built by the conversions the handlers use (`From<SentDmError> for ApiError`),
/// so their code and message are the ones served.
mod answers {
    use std::time::Duration;

    use graphagent::ApiError;
    use graphagent::error::ErrorBody;
    use sentdm_client::ErrorResponse;
    use serde_json::{Value, json};

    use crate::SentDmError;

    /// A send to a number the simulator delivers to, with the template it seeds
    /// (`order_confirmation`) and both of its variables; the key makes a repeat answer
    /// the same broadcast instead of sending again.
    pub fn send_example() -> Value {
        json!({
            "to": ["+14155551234"],
            "template": {
                "id": "7ba7b820-9dad-11d1-80b4-00c04fd430c8",
                "parameters": {"name": "Jane", "order_id": "12345"}
            },
            "channels": ["sms"],
            "idempotency_key": "order-12345-confirmation"
        })
    }

    fn from(e: SentDmError) -> ErrorBody {
        ApiError::from(e).body()
    }

    /// SentDM's answer `status` with its error envelope.
    fn sentdm(status: u16, code: &str, message: &str, field: Option<&str>) -> ErrorBody {
        from(SentDmError::SentDm(Box::new(ErrorResponse {
            status,
            code: Some(code.to_owned()),
            message: message.to_owned(),
            details: field
                .map(|f| (f.to_owned(), vec![message.to_owned()]))
                .into_iter()
                .collect(),
            doc_url: None,
            request_id: None,
            retry_after: (status == 429).then(|| Duration::from_secs(30)),
        })))
    }

    pub fn no_action() -> ErrorBody {
        ApiError::not_found(format!(
            "no loaded `{}` action `act_3f9c2a7d1e4b8c6f0a5d`",
            <crate::SentDmBroadcast as graphagent::Action>::TYPE_NAME
        ))
        .body()
    }

    pub fn no_broadcast() -> ErrorBody {
        from(SentDmError::NotFound("no broadcast `bc_none`".into()))
    }

    pub fn no_record() -> ErrorBody {
        from(SentDmError::NotFound("no record `none`".into()))
    }

    pub fn no_reply() -> ErrorBody {
        from(SentDmError::NotFound("no reply `none`".into()))
    }

    pub fn unknown_template() -> ErrorBody {
        sentdm(404, "RESOURCE_002", "Template not found", None)
    }

    pub fn unknown_message() -> ErrorBody {
        sentdm(404, "RESOURCE_003", "Message not found", None)
    }

    pub fn bad_message_id() -> ErrorBody {
        sentdm(
            400,
            "VALIDATION_001",
            "Invalid message ID format.",
            Some("id"),
        )
    }

    pub fn in_flight() -> ErrorBody {
        sentdm(
            409,
            "CONFLICT_001",
            "A request with this Idempotency-Key is still being processed",
            None,
        )
    }

    pub fn invalid_recipient() -> ErrorBody {
        from(SentDmError::Invalid {
            field: "to[0]".into(),
            message: "`4155551234` is not an E.164 phone number (+ and 7-15 digits)".into(),
        })
    }

    /// The host's JSON extractor on a field the body type does not have.
    pub fn unknown_field() -> ErrorBody {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Failed to deserialize the JSON body into the target type: recipients: unknown field \
             `recipients`, \
             expected one of `to`, `template`, `channels`, `sandbox`, `idempotency_key`, `profile_id`",
        )
        .body()
    }

    pub fn sentdm_rejected() -> ErrorBody {
        sentdm(422, "BUSINESS_003", "Insufficient balance", None)
    }

    pub fn sandbox_record() -> ErrorBody {
        from(SentDmError::Invalid {
            field: "record_id".into(),
            message: "sandbox messages cannot be read back from SentDM".into(),
        })
    }

    pub fn rate_limited() -> ErrorBody {
        sentdm(429, "BUSINESS_002", "Rate limit exceeded", None)
    }

    pub fn sentdm_failed() -> ErrorBody {
        sentdm(503, "SERVICE_001", "Service unavailable", None)
    }

    pub fn unreachable() -> ErrorBody {
        from(SentDmError::Unreachable(
            "could not connect to SentDM".into(),
        ))
    }

    pub fn auth_refused() -> ErrorBody {
        sentdm(401, "AUTH_002", "Invalid API key", None)
    }

    pub fn not_configured() -> ErrorBody {
        from(SentDmError::NotConfigured)
    }

    pub fn graph_unavailable() -> ErrorBody {
        ApiError::unavailable("the graph store is unavailable; retry later").body()
    }

    pub fn page_size_out_of_range() -> ErrorBody {
        super::paging(Some(1), Some(500))
            .err()
            .unwrap_or_else(ApiError::internal)
            .body()
    }

    pub fn bad_signature() -> ErrorBody {
        super::rejected(crate::WebhookRejection::Unauthorized(
            sentdm_client::signing::VerifyError::NoMatch.to_string(),
        ))
        .body()
    }

    pub fn missing_key() -> ErrorBody {
        ApiError::unauthorized("missing api key").body()
    }

    pub fn wrong_scope() -> ErrorBody {
        ApiError::forbidden(format!(
            "this API key is not valid for scope `{}`",
            crate::webhook::webhook_scope("act_3f9c2a7d1e4b8c6f0a5d")
        ))
        .body()
    }

    pub fn no_receiver() -> ErrorBody {
        super::no_receiver("act_3f9c2a7d1e4b8c6f0a5d").body()
    }

    pub fn delivery_too_large() -> ErrorBody {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than {} bytes",
                super::MAX_DELIVERY_BYTES
            ),
        )
        .body()
    }

    pub fn no_secret() -> ErrorBody {
        super::rejected(crate::WebhookRejection::NoSecret).body()
    }

    pub fn unknown_status() -> ErrorBody {
        super::unknown_status("lost").body()
    }

    pub fn from_not_e164() -> ErrorBody {
        super::not_e164("555").body()
    }
}
