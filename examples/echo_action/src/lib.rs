//! `echo`: the smallest complete action. It proves the plugin contract is general (typed
//! config, hooks, graph state, admin routes with OpenAPI) and is the template to copy
//! when writing a new action (see `docs/ARCHITECTURE.md`).

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use graphagent::plugin::{ActionRef, ActionState, Json};
use graphagent::{Action, ActionContext, ActionError, ApiError, ApiResult, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `context:` of an `echo` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EchoConfig {
    /// Word answered by ping and prefixed to echoes.
    pub greeting: String,
    /// Longest message accepted, in characters (1–10,000).
    pub max_message_chars: usize,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            greeting: "pong".into(),
            max_message_chars: 1000,
        }
    }
}

/// The echo action.
pub struct Echo {
    ctx: ActionContext,
    config: EchoConfig,
    pings: AtomicU64,
}

/// What `POST …/echo` answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct EchoReply {
    /// `{greeting}: {message}`.
    #[schema(example = "pong: hello")]
    pub reply: String,
    /// Graph id of the stored message.
    pub id: String,
    /// How many messages this action has stored.
    pub stored: u64,
}

/// Why an echo failed.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The message is empty or too long; nothing was stored.
    #[error("message: {0}")]
    Invalid(String),
    /// The graph failed.
    #[error("graph: {0}")]
    Graph(#[from] graphagent::GraphError),
}

impl From<EchoError> for ApiError {
    fn from(e: EchoError) -> Self {
        match e {
            EchoError::Invalid(m) => ApiError::invalid_field("message", m),
            EchoError::Graph(g) => g.into(),
        }
    }
}

/// `POST …/echo` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoRequest {
    /// What to echo: 1 to the action's `max_message_chars` characters (1,000 unless
    /// configured, at most 10,000).
    #[schema(example = "hello", min_length = 1, max_length = 10_000)]
    pub message: String,
}

/// What `GET …/echo/ping` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = EchoPing)]
pub struct Ping {
    /// The configured greeting.
    pub greeting: String,
    /// This action's id.
    pub action_id: String,
    /// Pings served by this instance (a reload starts a new instance).
    pub pings: u64,
}

const SCHEMA: &str = "
DEFINE TABLE IF NOT EXISTS echo_message SCHEMALESS;
DEFINE INDEX IF NOT EXISTS echo_message_action ON echo_message FIELDS action_id;
DEFINE TABLE IF NOT EXISTS echoed TYPE RELATION IN action OUT echo_message;
";

impl Echo {
    /// Store `message` as a node linked to this action and answer with the greeting.
    pub async fn echo(&self, message: &str) -> Result<EchoReply, EchoError> {
        let chars = message.chars().count();
        if chars == 0 || chars > self.config.max_message_chars {
            return Err(EchoError::Invalid(format!(
                "must be 1 to {} characters",
                self.config.max_message_chars
            )));
        }
        let id = format!("echo_{}", uuid::Uuid::now_v7().simple());
        let out = self
            .ctx
            .graph
            .transaction(
                "BEGIN;
                 CREATE type::record('echo_message', $id) CONTENT { action_id: $action_id, message: $message, created_at: time::now() };
                 RELATE (type::record('action', $action_id))->echoed->(type::record('echo_message', $id));
                 RETURN count(SELECT id FROM echo_message WHERE action_id = $action_id);
                 COMMIT;",
                json!({"id": id, "action_id": self.ctx.action_id, "message": message}),
            )
            .await?;
        // Index 0 is BEGIN; the count is the fourth statement.
        let stored = out.get(3).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Ok(EchoReply {
            reply: format!("{}: {message}", self.config.greeting),
            id,
            stored,
        })
    }

    /// Answer a ping.
    pub fn ping(&self) -> Ping {
        Ping {
            greeting: self.config.greeting.clone(),
            action_id: self.ctx.action_id.clone(),
            pings: self.pings.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// The configuration this instance runs with.
    pub fn config(&self) -> &EchoConfig {
        &self.config
    }
}

#[async_trait]
impl Action for Echo {
    const TYPE_NAME: &'static str = "echo";
    const ALIASES: &'static [&'static str] = &["examples/echo_action"];
    type Config = EchoConfig;

    fn validate(config: &EchoConfig) -> Vec<FieldError> {
        let mut problems = Vec::new();
        if config.greeting.trim().is_empty() {
            problems.push(FieldError::new("greeting", "must not be empty"));
        }
        if !(1..=10_000).contains(&config.max_message_chars) {
            problems.push(FieldError::new("max_message_chars", "must be 1 to 10000"));
        }
        problems
    }

    fn schema() -> &'static str {
        SCHEMA
    }

    fn create(ctx: ActionContext, config: EchoConfig) -> Result<Self, ActionError> {
        Ok(Self {
            ctx,
            config,
            pings: AtomicU64::new(0),
        })
    }

    async fn on_register(&self) -> Result<(), ActionError> {
        tracing::info!(action.id = %self.ctx.action_id, greeting = %self.config.greeting, "echo ready");
        Ok(())
    }

    fn routes() -> OpenApiRouter<ActionState> {
        OpenApiRouter::new()
            .routes(routes!(ping_route))
            .routes(routes!(echo_route))
    }

    async fn status(&self) -> serde_json::Value {
        json!({"greeting": self.config.greeting, "pings": self.pings.load(Ordering::Relaxed)})
    }
}

/// Ping the action.
#[utoipa::path(get, path = "/echo/ping", tag = "Echo",
    responses((status = 200, body = Ping), (status = 404, body = graphagent::error::ErrorBody)))]
async fn ping_route(ActionRef(echo): ActionRef<Echo>) -> Json<Ping> {
    Json(echo.ping())
}

/// Echo a message and store it in the graph.
#[utoipa::path(post, path = "/echo", tag = "Echo", request_body = EchoRequest,
    responses(
        (status = 200, body = EchoReply),
        (status = 422, description = "Empty or too long message", body = graphagent::error::ErrorBody),
    ))]
async fn echo_route(
    ActionRef(echo): ActionRef<Echo>,
    Json(request): Json<EchoRequest>,
) -> ApiResult<Json<EchoReply>> {
    Ok(Json(echo.echo(&request.message).await?))
}
