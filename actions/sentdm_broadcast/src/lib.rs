//! The SentDM broadcast action: template broadcasts through SentDM v3, a webhook it
//! registers by itself, and a graph audit trail of every message's delivery status.
//!
//! Rust callers use the methods of [`SentDmBroadcast`]; the HTTP endpoints in
//! [`routes`] are thin wrappers over the same methods. The SentDM API itself is the
//! [`sentdm_client`] crate's; the simulator tests and demos use is `sentdm-sim`.

pub mod config;
pub mod events;
pub mod inbound;
mod metrics;
mod persist;
pub mod plan;
pub mod record;
pub mod routes;
pub mod store;
pub mod templates;
mod webhook;

use graphagent::time::now_rfc3339;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use graphagent::plugin::ActionState;
use graphagent::{Action, ActionContext, ActionError, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

pub use config::SentDmConfig;
pub use inbound::ReplyEvent;
use plan::BroadcastPlan;
use record::{LogEntry, MessageRecord, RecordError};
use sentdm_client::client::{self, ApiKey, Client, ClientConfig};
use sentdm_client::model::{
    Account, MessageActivities, MessageStatus, Page, PageRequest, SendMessageRequest, Template,
    TemplateQuery,
};
use sentdm_client::signing::SigningSecret;
use store::{FoldOutcome, FoldWriter, RecordFilter, Store};
pub use webhook::{ReconcileReport, WebhookAck, WebhookRejection};

/// Recipients per SentDM request (SentDM publishes no maximum; this keeps one request's
/// failure small and its body well under any limit).
pub const RECIPIENTS_PER_REQUEST: usize = 100;
/// Largest broadcast accepted in one call.
pub const MAX_RECIPIENTS: usize = 10_000;
/// SentDM requests in flight at once for one broadcast (the client's limiter still
/// keeps the rate under SentDM's).
const SEND_CONCURRENCY: usize = 4;

/// Why a call failed; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum SentDmError {
    /// No API key: the action loaded but cannot call SentDM.
    #[error("SentDM is not configured: set SENTDM_API_KEY (or api_key in agent.yaml)")]
    NotConfigured,
    /// The request is invalid; nothing was sent.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// SentDM answered with an error (after retries where retrying is safe).
    #[error("SentDM: {0}")]
    SentDm(Box<client::ErrorResponse>),
    /// SentDM could not be reached.
    #[error("SentDM unreachable: {0}")]
    Unreachable(String),
    /// No such record (or message).
    #[error("{0}")]
    NotFound(String),
    /// The graph failed.
    #[error("graph: {0}")]
    Graph(#[from] graphagent::GraphError),
}

impl SentDmError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<client::Error> for SentDmError {
    fn from(e: client::Error) -> Self {
        match e {
            client::Error::Api(api) => Self::SentDm(api),
            client::Error::InvalidRequest(m) => Self::invalid("request", m),
            other => Self::Unreachable(other.to_string()),
        }
    }
}

/// A template reference in a send.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmTemplateInput)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// SentDM template id (preferred).
    #[schema(example = "7ba7b820-9dad-11d1-80b4-00c04fd430c8")]
    pub id: Option<String>,
    /// Template name, when no id is given.
    #[schema(example = "order_confirmation")]
    pub name: Option<String>,
    /// Values for the template's variables (strings).
    #[serde(default)]
    #[schema(example = json!({"name": "Jane", "order_id": "12345"}))]
    pub parameters: BTreeMap<String, String>,
}

/// What `send_broadcast` takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmBroadcastRequest)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// Recipients, E.164 (`+14155551234`); duplicates are sent once. Up to 10,000.
    #[schema(schema_with = recipients_schema)]
    pub to: Vec<String>,
    /// Template; the action's default template when absent or when it names neither
    /// `id` nor `name` (its `parameters` then go to the default template).
    pub template: Option<TemplateInput>,
    /// Channels (`sms`, `whatsapp`, `rcs`, `mms`, `sent` = SentDM picks); the action's
    /// `default_channels` when absent.
    #[schema(schema_with = channels_schema)]
    pub channels: Option<Vec<String>>,
    /// Validate at SentDM without sending; the action's `sandbox` when absent.
    pub sandbox: Option<bool>,
    /// Makes the call safe to repeat: the same key sends nothing twice and maps to the
    /// same broadcast. `[A-Za-z0-9_-]`, up to 200 characters.
    #[schema(
        example = "order-12345-confirmation",
        pattern = r"^[A-Za-z0-9_-]{1,200}$",
        min_length = 1,
        max_length = 200
    )]
    pub idempotency_key: Option<String>,
    /// Organisation keys only: send as this child profile (not blank).
    #[schema(pattern = r"\S")]
    pub profile_id: Option<String>,
}

/// What the recipient check (`plan::valid_e164`) accepts, for the document.
pub const E164_PATTERN: &str = r"^\+[1-9][0-9]{6,14}$";

fn recipients_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(E164_PATTERN)),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_RECIPIENTS))
        .description(Some(
            "Recipients, E.164 (`+14155551234`); duplicates are sent once. 1 to 10,000.",
        ))
        .examples([json!(["+14155551234", "+14155555678"])])
        .build()
}

fn channels_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(config::CHANNELS.iter().copied())),
        )
        .min_items(Some(1))
        .description(Some(
            "Channels (`sent` = SentDM picks); the action's `default_channels` when absent.",
        ))
        .examples([json!(["sms", "whatsapp"])])
        .build()
}

/// One message SentDM accepted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmSentMessage)]
pub struct SentMessage {
    /// SentDM message id.
    pub message_id: String,
    /// Recipient.
    pub to: String,
    /// Channel (absent when SentDM picks).
    pub channel: Option<String>,
    /// Id of its record in the graph, when persisted.
    pub record_id: Option<String>,
}

/// Outcome of one SentDM request of a broadcast.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmRequestOutcome)]
pub struct RequestOutcome {
    /// Position in the broadcast.
    pub index: usize,
    /// Recipients in it.
    pub recipients: usize,
    /// Whether SentDM accepted it.
    pub accepted: bool,
    /// SentDM's request id.
    pub request_id: Option<String>,
    /// SentDM answered from its idempotency cache (a repeated call).
    pub replayed: bool,
    /// The idempotency key sent.
    pub idempotency_key: String,
    /// SentDM's error when not accepted.
    pub error: Option<ErrorInfo>,
}

/// A SentDM error, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmErrorInfo)]
pub struct ErrorInfo {
    /// HTTP status from SentDM (0 when unreachable).
    pub status: u16,
    /// SentDM's code, e.g. `VALIDATION_002`.
    pub code: Option<String>,
    /// SentDM's message.
    pub message: String,
    /// Field errors.
    #[serde(default)]
    pub details: BTreeMap<String, Vec<String>>,
}

/// Whether the records were stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmPersisted)]
pub struct Persisted {
    /// Records were written.
    pub ok: bool,
    /// How many.
    pub records: usize,
    /// Why nothing was written when that was intended (`persist_records: false`,
    /// sandbox send).
    pub skipped: Option<String>,
    /// The failure, when writing failed (the send itself still succeeded).
    pub error: Option<String>,
}

/// What `send_broadcast` returns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmBroadcastResult)]
pub struct BroadcastResult {
    /// Broadcast id (stable for a given idempotency key).
    #[schema(example = "bc_0192f1c3a7d87b2e9c1f4a5b6c7d8e9f")]
    pub broadcast_id: String,
    /// `accepted` when every request was, `partial` otherwise.
    #[schema(example = "accepted")]
    pub status: String,
    /// Sent in sandbox mode.
    pub sandbox: bool,
    /// Messages SentDM accepted: one per recipient and channel.
    pub messages: Vec<SentMessage>,
    /// One entry per SentDM request.
    pub requests: Vec<RequestOutcome>,
    /// Bookkeeping outcome.
    pub persisted: Persisted,
    /// Things the caller should know although SentDM accepted the send (no webhook
    /// registered, parameters not checked); empty when there are none.
    #[serde(default)]
    pub warnings: Vec<SendWarning>,
}

/// Something a successful send did not do as asked, or that will not happen after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmSendWarning)]
pub struct SendWarning {
    /// `no_webhook`: no webhook is registered at SentDM, so no delivery status will
    /// arrive (records stay `accepted` until refreshed); `template_not_checked`: the
    /// template could not be read from SentDM, so the parameters were not checked.
    #[schema(schema_with = warning_code_schema)]
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

/// Codes of [`SendWarning`].
pub const WARNING_CODES: &[&str] = &["no_webhook", "template_not_checked"];

fn warning_code_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(WARNING_CODES.iter().copied()))
        .description(Some("What the warning is about."))
        .build()
}

/// `healthcheck` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SentDmHealth {
    /// An API key is set.
    pub configured: bool,
    /// `GET /v3/me` answered.
    pub reachable: bool,
    /// Why not, when it did not.
    pub reachable_error: Option<String>,
    /// Channels configured on the account.
    pub channels: Option<BTreeMap<String, bool>>,
    /// A webhook is registered at SentDM for this action: checked at SentDM by the
    /// status endpoint (`healthcheck`); the action's own record of it otherwise.
    pub webhook_registered: bool,
    /// SentDM has the webhook on record and said whether it is active; `false` when
    /// SentDM could not be asked (not configured, unreachable) or there is none.
    #[serde(default)]
    pub webhook_checked: bool,
    /// Whether SentDM delivers to it (SentDM disables a webhook after repeated failures).
    #[serde(default)]
    pub webhook_active: Option<bool>,
    /// Why deliveries will not arrive, when the check found a reason (gone at SentDM,
    /// disabled, not registered) or could not be made.
    #[serde(default)]
    pub webhook_problem: Option<String>,
    /// Its signing secret is on record here (deliveries can be verified).
    pub signing_secret_on_record: bool,
    /// The public URL deliveries reach (machine key redacted).
    pub webhook_url: Option<String>,
    /// The last reconcile.
    pub last_reconcile: Option<ReconcileReport>,
    /// Webhook deliveries handled since start.
    pub counters: Counters,
}

/// Webhook deliveries handled by this instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmCounters)]
pub struct Counters {
    pub received: u64,
    pub duplicate: u64,
    pub ignored: u64,
    pub replies: u64,
    pub rejected: u64,
    pub failed: u64,
}

#[derive(Default)]
struct AtomicCounters {
    received: AtomicU64,
    duplicate: AtomicU64,
    ignored: AtomicU64,
    replies: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

impl AtomicCounters {
    fn snapshot(&self) -> Counters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            received: g(&self.received),
            duplicate: g(&self.duplicate),
            ignored: g(&self.ignored),
            replies: g(&self.replies),
            rejected: g(&self.rejected),
            failed: g(&self.failed),
        }
    }
}

/// The verification key for deliveries: the webhook id on record and its secret.
#[derive(Clone)]
struct Verifier {
    webhook_id: String,
    secret: SigningSecret,
}

/// The action.
pub struct SentDmBroadcast {
    ctx: ActionContext,
    config: SentDmConfig,
    client: Option<Client>,
    store: Store,
    writer: FoldWriter,
    verifier: RwLock<Option<Verifier>>,
    last_reconcile: Mutex<Option<ReconcileReport>>,
    replies: broadcast::Sender<ReplyEvent>,
    counters: AtomicCounters,
    templates: templates::TemplateCache,
    stop: CancellationToken,
}

impl Drop for SentDmBroadcast {
    fn drop(&mut self) {
        // Background work belongs to this instance; a reload builds a new one.
        self.stop.cancel();
    }
}

use store::without_nulls;

impl SentDmBroadcast {
    /// The configuration this instance runs with.
    pub fn config(&self) -> &SentDmConfig {
        &self.config
    }

    /// This action's id.
    pub fn action_id(&self) -> &str {
        &self.ctx.action_id
    }

    /// The URL SentDM calls (machine key redacted), or why there is none.
    pub fn get_webhook_url(&self) -> Result<String, String> {
        webhook::get_webhook_url(self)
    }

    /// Make SentDM hold exactly one webhook for this action, pointing at our URL with
    /// our settings, whose signing secret we have. Idempotent: with nothing to change it
    /// only lists. Never touches webhooks of other actions or other origins.
    pub async fn reconcile_webhook_endpoint(&self) -> ReconcileReport {
        webhook::reconcile_webhook_endpoint(self).await
    }

    /// Handle one delivery whose machine key the caller already checked: verify the
    /// signature, timestamp and webhook id, then parse, de-duplicate and fold in one
    /// transaction; `Ok` only after commit.
    pub async fn receive_webhook(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<WebhookAck, WebhookRejection> {
        webhook::receive_webhook(self, headers, body).await
    }

    /// Fold writer tasks running (`fold_writers`, or one per core).
    pub fn fold_writers(&self) -> usize {
        self.writer.writers()
    }

    fn client(&self) -> Result<&Client, SentDmError> {
        self.client.as_ref().ok_or(SentDmError::NotConfigured)
    }

    /// Inbound replies (`message.received`) as they arrive, for agent code.
    pub fn subscribe_replies(&self) -> broadcast::Receiver<ReplyEvent> {
        self.replies.subscribe()
    }

    /// Send a template broadcast. Validates before calling SentDM; splits large lists
    /// into SentDM-sized requests sent with bounded concurrency; persists one broadcast
    /// node and one record per accepted message (when configured). Bookkeeping failures
    /// are reported in [`BroadcastResult::persisted`], never as a failed send.
    pub async fn send_broadcast(
        &self,
        req: BroadcastRequest,
    ) -> Result<BroadcastResult, SentDmError> {
        let client = self.client()?;
        // Validation first: nothing leaves the process for a bad request.
        let plan = BroadcastPlan::parse(req, &self.config, &self.ctx.action_id)?;
        let client = client
            .with_options(plan.sandbox, plan.profile_id.clone())
            .map_err(|_| SentDmError::invalid("profile_id", "must not be empty"))?;
        let warnings = self.send_warnings(&client, &plan).await?;
        // Records are stored as each answer arrives, by a task of their own, while the
        // next requests are in flight (persist.rs).
        let persister = self.persists(&plan).then(|| {
            persist::Persister::spawn(
                self.store.clone(),
                plan.broadcast_id.clone(),
                self.config.record_event_history_limit,
                SEND_CONCURRENCY,
            )
        });
        let shape = persist::RecordShape {
            action_id: &self.ctx.action_id,
            agent_id: &self.ctx.agent_id,
            plan: &plan,
        };
        let (shape, queue) = (&shape, persister.as_ref().map(persist::Persister::sender));
        // Owned chunks: the futures must not borrow from the closure's argument.
        let sends = plan.chunks.clone().into_iter().map(|chunk| {
            let count = chunk.recipients.len();
            let request = SendMessageRequest {
                to: chunk.recipients,
                channel: Some(plan.channels.clone()),
                template: Some(plan.template.clone()),
                text: None,
            };
            let (client, key, index) = (client.clone(), chunk.key, chunk.index);
            async move {
                // A slot for this answer's records before the request leaves: when the
                // graph falls behind, the next request waits, never an answer in flight.
                let slot = match queue {
                    Some(q) => q.reserve().await.ok(),
                    None => None,
                };
                let key_text = key.as_str().to_owned();
                let outcome = client.send_message(&request, Some(key)).await;
                let mut handed = 0;
                if let (Some(slot), Ok(out)) = (slot, &outcome) {
                    let records = shape.records(&out.response.recipients);
                    handed = records.len();
                    slot.send(records);
                }
                (index, count, key_text, outcome, handed)
            }
        });
        let mut results: Vec<_> = futures::stream::iter(sends)
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        results.sort_by_key(|(index, ..)| *index);
        let handed_over = results.iter().map(|r| r.4).sum();
        let report = match persister {
            Some(p) => Some(p.finish(handed_over).await),
            None => None,
        };

        let mut messages = Vec::new();
        let mut requests = Vec::new();
        let mut first_error = None;
        for (index, recipients, key, outcome, _) in results {
            match outcome {
                Ok(out) => {
                    requests.push(RequestOutcome {
                        index,
                        recipients,
                        accepted: true,
                        request_id: out.request_id.clone(),
                        replayed: out.replayed,
                        idempotency_key: key,
                        error: None,
                    });
                    messages.extend(out.response.recipients.into_iter().map(|r| SentMessage {
                        message_id: r.message_id,
                        to: r.to,
                        channel: r.channel,
                        record_id: None,
                    }));
                }
                Err(e) => {
                    let info = match &e {
                        client::Error::Api(api) => ErrorInfo {
                            status: api.status,
                            code: api.code.clone(),
                            message: api.message.clone(),
                            details: api.details.clone(),
                        },
                        other => ErrorInfo {
                            status: 0,
                            code: None,
                            message: other.to_string(),
                            details: BTreeMap::new(),
                        },
                    };
                    tracing::warn!(action.id = %self.ctx.action_id, broadcast.id = %plan.broadcast_id, request = index, error = %info.message, "SentDM rejected a broadcast request");
                    requests.push(RequestOutcome {
                        index,
                        recipients,
                        accepted: false,
                        request_id: None,
                        replayed: false,
                        idempotency_key: key,
                        error: Some(info),
                    });
                    first_error.get_or_insert(e);
                }
            }
        }
        if messages.is_empty()
            && let Some(e) = first_error
        {
            // A profile this key may not act as is the caller's mistake (SentDM: 403),
            // not the deployment's credentials (which 403 otherwise means).
            if let client::Error::Api(api) = &e
                && api.status == 403
                && plan.profile_id.is_some()
            {
                return Err(SentDmError::invalid(
                    "profile_id",
                    format!("SentDM refused it: {}", api.message),
                ));
            }
            // Nothing was accepted: the caller gets SentDM's error itself.
            return Err(e.into());
        }
        let all = requests.iter().all(|r| r.accepted);
        let mut result = BroadcastResult {
            broadcast_id: plan.broadcast_id.clone(),
            status: if all { "accepted" } else { "partial" }.into(),
            sandbox: plan.sandbox,
            messages,
            requests,
            persisted: Persisted {
                ok: false,
                records: 0,
                skipped: None,
                error: None,
            },
            warnings,
        };
        if !self.config.persist_records && !plan.sandbox {
            // Nothing is stored, but subscribers still hear that SentDM accepted the send.
            let accepted = self.broadcast_event(&result, &plan);
            match self.store.emit(&accepted).await {
                Ok(()) => self.ctx.events.notify(),
                Err(e) => {
                    tracing::error!(action.id = %self.ctx.action_id, error = %e, "could not queue sentdm.broadcast.accepted")
                }
            }
        }
        result.persisted = match report {
            Some(report) => self.persist(&mut result, &plan, report).await,
            None if !self.config.persist_records => Persisted {
                ok: false,
                records: 0,
                skipped: Some("persist_records is false".into()),
                error: None,
            },
            None => Persisted {
                ok: false,
                records: 0,
                skipped: Some("sandbox send (persist_sandbox_sends is false)".into()),
                error: None,
            },
        };
        Ok(result)
    }

    /// Checks of a send before it goes out: the parameters against the template's
    /// variables (an error when they do not match), and what the caller should be told
    /// although the send will be accepted.
    async fn send_warnings(
        &self,
        client: &Client,
        plan: &BroadcastPlan,
    ) -> Result<Vec<SendWarning>, SentDmError> {
        let mut warnings = Vec::new();
        let profile = plan.sent_as_profile.as_deref();
        match self.templates.lookup(client, profile, &plan.template).await {
            Ok(templates::Lookup::Found(t)) => plan::check_parameters(&plan.template, &t)?,
            Ok(templates::Lookup::Unknown) => {}
            // Not reading the template must not stop a send SentDM would take: it still
            // checks the parameters itself (and fails the message when they are wrong).
            Err(e) => {
                tracing::warn!(action.id = %self.ctx.action_id, error = %e, "template could not be read; parameters not checked");
                warnings.push(SendWarning {
                    code: "template_not_checked".into(),
                    message: format!(
                        "the template could not be read from SentDM ({e}); its parameters were not checked, and a missing one fails the message later"
                    ),
                });
            }
        }
        let registered = self
            .verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !registered && !plan.sandbox {
            warnings.push(SendWarning {
                code: "no_webhook".into(),
                message: "no webhook is registered at SentDM for this action, so no delivery status will arrive: records stay `accepted` until refreshed. See `last_reconcile` in the action's status, then register it (POST …/sentdm/webhook/register)".into(),
            });
        }
        Ok(warnings)
    }

    /// The `sentdm.broadcast.accepted` outbox row of a send.
    fn broadcast_event(&self, result: &BroadcastResult, plan: &BroadcastPlan) -> Value {
        let recipients: std::collections::BTreeSet<&str> =
            result.messages.iter().map(|m| m.to.as_str()).collect();
        self.ctx
            .events
            .event(
                "sentdm.broadcast.accepted",
                &self.ctx.agent_id,
                &self.ctx.action_id,
                json!({
                    "action_id": self.ctx.action_id, "broadcast_id": result.broadcast_id,
                    "messages": result.messages.len(), "recipients": recipients, "channels": plan.channels,
                    "template_id": plan.template.id, "template_name": plan.template.name, "status": result.status,
                }),
            )
            .into_row()
    }

    /// Whether this send's records are kept.
    fn persists(&self, plan: &BroadcastPlan) -> bool {
        self.config.persist_records && (!plan.sandbox || self.config.persist_sandbox_sends)
    }

    /// The broadcast's node and outbound event, once its records are stored (or given
    /// up), and what the answer says about both.
    async fn persist(
        &self,
        result: &mut BroadcastResult,
        plan: &BroadcastPlan,
        mut report: persist::PersistReport,
    ) -> Persisted {
        let node = store::BroadcastNode {
            action_id: self.ctx.action_id.clone(),
            agent_id: Some(self.ctx.agent_id.clone()),
            recipients: result
                .messages
                .iter()
                .map(|m| m.to.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            channels: plan.channels.clone(),
            template_id: plan.template.id.clone(),
            template_name: plan.template.name.clone(),
            idempotency_key: plan.idempotency_key.clone(),
            sandbox: result.sandbox,
            message_count: result.messages.len() as u64,
            status: result.status.clone(),
            request_ids: result
                .requests
                .iter()
                .filter_map(|r| r.request_id.clone())
                .collect(),
        };
        let broadcast = json!({
            "id": result.broadcast_id,
            "action_id": self.ctx.action_id,
            "fields": node,
            // Set once: a retry with the same idempotency key keeps the first time.
            "created_at": now_rfc3339(),
        });
        let accepted = self.broadcast_event(result, plan);
        let mut node_stored = false;
        // When records were given up the graph is down already: one try, no second wait.
        let retries = if report.failed == 0 {
            persist::DEFERRED_RETRY.as_slice()
        } else {
            &[]
        };
        for wait in std::iter::once(&Duration::ZERO).chain(retries) {
            tokio::time::sleep(*wait).await;
            match self
                .store
                .persist_broadcast(&broadcast, Some(&accepted))
                .await
            {
                Ok(()) => {
                    node_stored = true;
                    break;
                }
                Err(e) => {
                    let again = e.is_unavailable();
                    report.error = Some(e);
                    if !again {
                        break;
                    }
                }
            }
        }
        if node_stored {
            self.ctx.events.notify();
        }
        for m in &mut result.messages {
            let key = store::record_key(&self.ctx.action_id, &m.message_id);
            if report.stored.contains(&key) {
                m.record_id = Some(key);
            }
        }
        let records = report.stored.len();
        match report.error.filter(|_| !node_stored || report.failed > 0) {
            None => Persisted {
                ok: true,
                records,
                skipped: None,
                error: None,
            },
            Some(e) => {
                // Invariant 6: SentDM accepted the send; the caller still gets its answer.
                tracing::error!(action.id = %self.ctx.action_id, broadcast.id = %result.broadcast_id, error = %e, records.not_stored = report.failed, broadcast.stored = node_stored, "sent, but the bookkeeping is incomplete");
                let what = if report.failed > 0 {
                    format!(
                        "{} of {} records not stored",
                        report.failed,
                        records + report.failed
                    )
                } else {
                    "broadcast not stored".to_owned()
                };
                Persisted {
                    ok: false,
                    records,
                    skipped: None,
                    error: Some(format!("{what}: {}", graph_failure(&e))),
                }
            }
        }
    }

    /// `GET /v3/messages/{id}` at SentDM.
    pub async fn get_message_status(
        &self,
        message_id: &str,
    ) -> Result<sentdm_client::model::Message, SentDmError> {
        Ok(self.client()?.get_message(message_id).await?)
    }

    /// `GET /v3/messages/{id}/activities` at SentDM.
    pub async fn get_message_activities(
        &self,
        message_id: &str,
    ) -> Result<MessageActivities, SentDmError> {
        Ok(self.client()?.message_activities(message_id).await?)
    }

    /// Templates at SentDM, one page.
    pub async fn list_templates(
        &self,
        page: u32,
        page_size: u32,
        search: Option<String>,
    ) -> Result<Page<Template>, SentDmError> {
        let q = TemplateQuery {
            page: PageRequest { page, page_size },
            search,
            status: None,
            category: None,
        };
        Ok(self.client()?.list_templates(&q).await?)
    }

    /// The SentDM account (`GET /v3/me`).
    pub async fn get_account(&self) -> Result<Account, SentDmError> {
        Ok(self.client()?.me().await?)
    }

    /// Configured? Reachable? Webhook registered and verifiable?
    pub async fn healthcheck(&self) -> SentDmHealth {
        let (reachable, reachable_error, channels) = match &self.client {
            None => (false, Some("not configured".to_owned()), None),
            Some(c) => match c.me().await {
                Ok(me) => (
                    true,
                    None,
                    Some(BTreeMap::from([
                        ("sms".to_owned(), me.channels.sms.configured),
                        ("whatsapp".to_owned(), me.channels.whatsapp.configured),
                        ("rcs".to_owned(), me.channels.rcs.configured),
                    ])),
                ),
                Err(e) => (false, Some(e.to_string()), None),
            },
        };
        let mut health = self.local_health();
        health.reachable = reachable;
        health.reachable_error = reachable_error;
        health.channels = channels;
        if reachable {
            self.check_webhook(&mut health).await;
        }
        health
    }

    /// Ask SentDM whether the webhook on record still exists and is active: a webhook
    /// deleted or disabled at SentDM means no delivery status arrives, whatever our
    /// record says.
    async fn check_webhook(&self, health: &mut SentDmHealth) {
        const REPAIR: &str = "run `graphagent sentdm webhook register` (POST …/sentdm/webhook/register) to repair it";
        let webhook_id = self
            .verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|v| v.webhook_id.clone());
        let (Some(client), Some(id)) = (&self.client, webhook_id) else {
            health.webhook_problem = Some(format!(
                "no webhook is registered: delivery statuses will not arrive; {REPAIR}"
            ));
            return;
        };
        match client.get_webhook(&id).await {
            Ok(w) => {
                health.webhook_checked = true;
                health.webhook_active = Some(w.is_active);
                if !w.is_active {
                    health.webhook_problem = Some(format!(
                        "SentDM has disabled webhook {id} (after {} consecutive failures): delivery statuses will not arrive; {REPAIR}",
                        w.consecutive_failures
                    ));
                }
            }
            Err(client::Error::Api(e)) if e.status == 404 => {
                health.webhook_checked = true;
                health.webhook_registered = false;
                health.webhook_problem = Some(format!(
                    "webhook {id} no longer exists at SentDM: delivery statuses will not arrive; {REPAIR}"
                ));
            }
            Err(e) => {
                health.webhook_problem =
                    Some(format!("could not check the webhook at SentDM: {e}"));
            }
        }
    }

    fn local_health(&self) -> SentDmHealth {
        let verifier = self
            .verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let last = self
            .last_reconcile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SentDmHealth {
            configured: self.client.is_some(),
            reachable: false,
            reachable_error: None,
            channels: None,
            webhook_registered: verifier.is_some(),
            webhook_checked: false,
            webhook_active: None,
            webhook_problem: None,
            signing_secret_on_record: verifier.is_some(),
            webhook_url: webhook::webhook_url_redacted(self),
            last_reconcile: last,
            counters: self.counters.snapshot(),
        }
    }

    /// Records of this action, newest first, with the total.
    pub async fn list_records(
        &self,
        filter: &RecordFilter,
    ) -> Result<(Vec<MessageRecord>, u64), SentDmError> {
        Ok(self.store.list_records(filter).await?)
    }

    /// Inbound replies of this action, newest first, with the total.
    pub async fn list_replies(
        &self,
        filter: &store::ReplyFilter,
    ) -> Result<(Vec<record::Reply>, u64), SentDmError> {
        Ok(self.store.list_replies(filter).await?)
    }

    /// One inbound reply.
    pub async fn get_reply(&self, reply_id: &str) -> Result<record::Reply, SentDmError> {
        self.store
            .get_reply(reply_id)
            .await?
            .ok_or_else(|| SentDmError::NotFound(format!("no reply `{reply_id}`")))
    }

    /// One record.
    pub async fn get_record(&self, record_id: &str) -> Result<MessageRecord, SentDmError> {
        self.store
            .get_record(record_id)
            .await?
            .ok_or_else(|| SentDmError::NotFound(format!("no record `{record_id}`")))
    }

    /// A broadcast with its delivery funnel (records counted by current status).
    pub async fn get_broadcast(
        &self,
        broadcast_id: &str,
    ) -> Result<store::BroadcastSummary, SentDmError> {
        self.store
            .broadcast_summary(broadcast_id)
            .await?
            .ok_or_else(|| SentDmError::NotFound(format!("no broadcast `{broadcast_id}`")))
    }

    /// Read the message from SentDM and fold it in as a `refresh` event (recovers
    /// records whose webhooks were lost).
    pub async fn refresh_record(&self, record_id: &str) -> Result<MessageRecord, SentDmError> {
        let record = self.get_record(record_id).await?;
        if record.sandbox == Some(true) {
            return Err(SentDmError::invalid(
                "record_id",
                "sandbox messages cannot be read back from SentDM",
            ));
        }
        let message = self
            .client()?
            .get_message(&record.sentdm_message_id)
            .await?;
        let latest = message
            .events
            .iter()
            .filter_map(|e| e.timestamp.as_deref())
            .max_by_key(|t| inbound::parse_time_ms(t).unwrap_or(i64::MIN))
            .map(str::to_owned)
            .or_else(|| message.created_at.clone());
        let raw_status = message.status.as_ref().map(|s| s.as_str().to_owned());
        let status = raw_status.as_deref().and_then(inbound::normalize_status);
        let occurred_ms = latest.as_deref().and_then(inbound::parse_time_ms);
        let key = store::digest(&[
            b"refresh",
            record_id.as_bytes(),
            raw_status.as_deref().unwrap_or("").as_bytes(),
            latest.as_deref().unwrap_or("").as_bytes(),
        ]);
        let event = inbound::StatusEvent {
            message_id: record.sentdm_message_id.clone(),
            status,
            raw_status,
            sub_type: None,
            occurred_at: latest,
            occurred_ms,
            to: message.phone.clone(),
            channel: message.channel.clone(),
            template_id: message.template_id.clone(),
            template_name: message.template_name.clone(),
            reason_code: message.reason_code.clone(),
            reason: message.reason.clone(),
            payload: inbound::bounded_payload(
                &serde_json::to_value(&message).unwrap_or(Value::Null),
            ),
        };
        self.writer
            .apply(self.fold_event(event, key, "refresh", None, false))
            .await?;
        self.get_record(record_id).await
    }

    /// The fold's view of a status event (see [`store::apply_batch`]).
    fn fold_event(
        &self,
        e: inbound::StatusEvent,
        key: String,
        source: &str,
        event_id: Option<&str>,
        create: bool,
    ) -> store::FoldEvent {
        let error = (e.reason_code.is_some() || e.reason.is_some()).then(|| RecordError {
            code: e.reason_code.clone(),
            reason: e.reason.clone(),
        });
        let entry = LogEntry {
            source: source.to_owned(),
            status: e.raw_status,
            sub_type: e.sub_type,
            occurred_at: e.occurred_at.clone(),
            received_at: Some(now_rfc3339()),
            event_id: event_id.map(str::to_owned),
            reason_code: e.reason_code,
            reason: e.reason,
            broadcast_id: None,
        };
        let rid = store::record_key(&self.ctx.action_id, &e.message_id);
        // Written by the fold only if this event changes the status (same transaction).
        let outbox = e.status.as_ref().and_then(events::message_event_type).map(|event_type| {
            self.ctx
                .events
                .event(
                    event_type,
                    &self.ctx.agent_id,
                    &self.ctx.action_id,
                    without_nulls(json!({
                        "action_id": self.ctx.action_id, "agent_id": self.ctx.agent_id, "record_id": rid,
                        "sentdm_message_id": e.message_id, "to": e.to, "channel": e.channel,
                        "status": e.status.as_ref().map(MessageStatus::lowercase), "occurred_at": e.occurred_at, "source": source,
                        "error": if event_type == "sentdm.message.failed" { error.clone() } else { None },
                    })),
                )
                .into_row()
        });
        store::FoldEvent {
            key,
            rid,
            message_id: e.message_id,
            create_if_missing: create,
            status: e.status,
            t_ms: e.occurred_ms,
            occurred_at: e.occurred_at,
            error,
            entry,
            payload: e.payload,
            to: e.to,
            channel: e.channel,
            template_id: e.template_id,
            template_name: e.template_name,
            outbox,
        }
    }

    /// Refresh records stuck in a non-final status (missed webhooks). Returns how many
    /// were refreshed.
    pub async fn sweep_once(&self, older_than: Duration, limit: u32) -> Result<usize, SentDmError> {
        self.client()?;
        let stale = self.store.stale_records(older_than, limit).await?;
        let mut done = 0;
        for record in stale {
            match self.refresh_record(&record.id).await {
                Ok(_) => done += 1,
                Err(e) => {
                    tracing::warn!(action.id = %self.ctx.action_id, record = %record.id, error = %e, "sweeper could not refresh a record")
                }
            }
        }
        Ok(done)
    }

    fn apply_outcome_counters(&self, outcome: &FoldOutcome) {
        let c = match outcome.outcome.as_str() {
            "received" => &self.counters.received,
            "duplicate" => &self.counters.duplicate,
            _ => &self.counters.ignored,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A short, secret-free description of a graph failure for API answers.
fn graph_failure(e: &graphagent::GraphError) -> &'static str {
    if e.is_unavailable() {
        "graph unavailable"
    } else if e.is_conflict() {
        "graph conflict"
    } else {
        "graph error"
    }
}

#[async_trait]
impl Action for SentDmBroadcast {
    const TYPE_NAME: &'static str = "sentdm_broadcast";
    const ALIASES: &'static [&'static str] = &["jvagent/sentdm_broadcast_action"];
    type Config = SentDmConfig;

    fn validate(config: &SentDmConfig) -> Vec<FieldError> {
        config.problems()
    }

    fn schema() -> &'static str {
        store::SCHEMA
    }

    fn create(ctx: ActionContext, config: SentDmConfig) -> Result<Self, ActionError> {
        let key = config.api_key.as_ref().map(|k| k.0.clone()).or_else(|| {
            std::env::var("SENTDM_API_KEY")
                .ok()
                .filter(|k| !k.trim().is_empty())
        });
        let client = match key {
            Some(key) => {
                let mut cfg = ClientConfig::new(config.api_base.trim(), ApiKey::new(key));
                cfg.timeout = Duration::from_secs(config.timeout);
                cfg.profile_id = config.profile_id.clone();
                cfg.sandbox = config.sandbox;
                Some(
                    Client::new(cfg)
                        .map_err(|e| ActionError::new(format!("SentDM client: {e}")))?,
                )
            }
            None => None,
        };
        let store = Store::new(ctx.graph.clone(), ctx.action_id.clone());
        let writer = FoldWriter::spawn(
            ctx.graph.clone(),
            ctx.events.clone(),
            store::FoldScope {
                action_id: ctx.action_id.clone(),
                agent_id: ctx.agent_id.clone(),
                limit: config.record_event_history_limit as usize,
            },
            config.fold_writer_count(),
            std::time::Duration::from_millis(config.fold_linger_ms.into()),
        );
        Ok(Self {
            ctx,
            config,
            client,
            store,
            writer,
            verifier: RwLock::new(None),
            last_reconcile: Mutex::new(None),
            replies: broadcast::channel(1024).0,
            counters: AtomicCounters::default(),
            templates: templates::TemplateCache::default(),
            stop: CancellationToken::new(),
        })
    }

    async fn on_register(&self) -> Result<(), ActionError> {
        webhook::load_verifier(self).await;
        if self.client.is_none() {
            tracing::warn!(action.id = %self.ctx.action_id, "SentDM action loaded without an API key: set SENTDM_API_KEY");
        }
        webhook::spawn_sweeper(self);
        metrics::spawn_records_gauge(self);
        let report = self.reconcile_webhook_endpoint().await;
        if report.outcome == "failed" {
            return Err(ActionError::new(format!(
                "webhook reconcile failed: {}",
                report.reason.unwrap_or_default()
            )));
        }
        Ok(())
    }

    async fn on_deregister(&self) -> Result<(), ActionError> {
        self.stop.cancel();
        webhook::remove_webhook(self)
            .await
            .map_err(|e| ActionError::new(format!("webhook removal: {e}")))
    }

    fn routes() -> OpenApiRouter<ActionState> {
        routes::private()
    }

    fn event_types() -> Vec<graphagent::plugin::EventType> {
        events::event_types()
    }

    fn public_routes() -> OpenApiRouter<ActionState> {
        routes::public()
    }

    async fn status(&self) -> Value {
        serde_json::to_value(self.local_health()).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_phone_pattern_is_the_check() {
        let schema = json!({"type": "string", "pattern": E164_PATTERN});
        let documented = jsonschema::validator_for(&schema).expect("the pattern compiles");
        for n in [
            "+14155551234",
            "+1415555",
            "+123456789012345",
            "+1234567890123456",
            "14155551234",
            "+0123456789",
            "+141555",
            "+1 415 555 1234",
            "+1415555123\n",
            "+١٤١٥٥٥٥١٢٣٤",
            "",
        ] {
            assert_eq!(documented.is_valid(&json!(n)), plan::valid_e164(n), "`{n}`");
        }
    }

    #[test]
    fn nulls_become_absent() {
        assert_eq!(without_nulls(json!({"a": null, "b": 1})), json!({"b": 1}));
    }
}
