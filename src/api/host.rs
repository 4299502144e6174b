//! The host's own endpoints: health, readiness, agents and actions.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::plugin::{ActionInfo, AgentInfo, Json, Path};
use crate::runtime::{LoadError, ReloadReport};
use crate::state::HostState;

/// `GET /healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `GET /readyz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Whether the graph answered.
    pub graph: bool,
    /// Number of loaded actions.
    pub actions: usize,
}

/// An action with its type-specific status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionDetail {
    /// The action.
    #[serde(flatten)]
    pub info: ActionInfo,
    /// What the action itself reports (e.g. provider connectivity); `null` for an action
    /// that reports nothing of its own.
    #[schema(value_type = Option<Object>, required = true)]
    pub details: serde_json::Value,
}

/// Process is up.
#[utoipa::path(get, path = "/healthz", tag = "Health",
    responses((status = 200, description = "The process is up", body = Health)))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Graph reachable and actions loaded.
#[utoipa::path(get, path = "/readyz", tag = "Health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The graph does not answer", body = Readiness),
    ))]
pub(super) async fn readyz(State(state): State<HostState>) -> (StatusCode, Json<Readiness>) {
    let graph = state.graph().ping().await.is_ok();
    let ready = graph && state.runtime().loaded();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "not_ready" },
            graph,
            actions: state.directory().len(),
        }),
    )
}

/// List loaded agents.
#[utoipa::path(get, path = "/api/agents", tag = "Agents",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Vec<AgentInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_agents(
    State(state): State<HostState>,
    _admin: Admin,
) -> Json<Vec<AgentInfo>> {
    Json(state.directory().agents())
}

fn find_agent(state: &HostState, agent_id: &str) -> ApiResult<AgentInfo> {
    state
        .directory()
        .agent(agent_id)
        .map(|a| a.info().clone())
        .ok_or_else(|| ApiError::not_found(format!("no agent `{agent_id}`")))
}

/// One agent.
#[utoipa::path(get, path = "/api/agents/{agent_id}", tag = "Agents",
    params(("agent_id" = String, Path, description = "Agent id (`agt_…`) or name")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = AgentInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_agent(
    State(state): State<HostState>,
    _admin: Admin,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    find_agent(&state, &agent_id).map(Json)
}

/// An agent's actions.
#[utoipa::path(get, path = "/api/agents/{agent_id}/actions", tag = "Agents",
    params(("agent_id" = String, Path, description = "Agent id (`agt_…`) or name")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Vec<ActionInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn agent_actions(
    State(state): State<HostState>,
    _admin: Admin,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<Vec<ActionInfo>>> {
    let agent = find_agent(&state, &agent_id)?;
    Ok(Json(
        agent
            .action_ids
            .iter()
            .filter_map(|id| state.directory().action_info(id))
            .collect(),
    ))
}

/// Re-read the configuration and apply it: new actions are registered, changed ones
/// reloaded, removed ones deregistered. Invalid configuration changes nothing (422).
#[utoipa::path(post, path = "/api/agents/{agent_id}/reload", tag = "Agents",
    params(("agent_id" = String, Path, description = "Agent id (`agt_…`) or name")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Applied", body = ReloadReport),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "The configuration is invalid; nothing changed", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub(super) async fn reload_agent(
    State(state): State<HostState>,
    _admin: Admin,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<ReloadReport>> {
    find_agent(&state, &agent_id)?;
    match state.runtime().reload_from_disk().await {
        Ok(report) => Ok(Json(report)),
        Err(LoadError::Config(errors)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            errors.to_string(),
        )),
        Err(LoadError::Graph(e)) => Err(e.into()),
    }
}

/// One action with its status.
#[utoipa::path(get, path = "/api/actions/{action_id}", tag = "Agents",
    params(("action_id" = String, Path, description = "Action id (`act_…`)")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = ActionDetail), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_action(
    State(state): State<HostState>,
    _admin: Admin,
    Path(action_id): Path<String>,
) -> ApiResult<Json<ActionDetail>> {
    let info = state
        .directory()
        .action_info(&action_id)
        .ok_or_else(|| ApiError::not_found(format!("no loaded action `{action_id}`")))?;
    let details = state
        .directory()
        .action_extra_status(&action_id)
        .await
        .unwrap_or_default();
    Ok(Json(ActionDetail { info, details }))
}
