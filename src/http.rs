//! The HTTP surface: shared state, JSON-error extractors, the host's own endpoints, and
//! the assembly of host + action routes and their OpenAPI document into one router.
//!
//! **Architecture Invariant.** Routes are built once per action *type*; which instance
//! serves a request is resolved per request from the `{action_id}` path parameter, so a
//! reload swaps instances without rebuilding the router.

use std::sync::Arc;

use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::{Router, middleware};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ArrayItems, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr, Required, ResponseBuilder,
    SecurityRequirement,
};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{self, Admin, Auth};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::graph::Graph;
use crate::plugin::{ActionDirectory, ActionInfo, ActionState, AgentInfo, Json, Path, ScopedKeys};
use crate::runtime::{LoadError, ReloadReport, Runtime};
use crate::webhooks::{Webhooks, api as wh};

/// State shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct HostState {
    inner: Arc<Shared>,
}

struct Shared {
    runtime: Arc<Runtime>,
    auth: Arc<Auth>,
    webhooks: Arc<Webhooks>,
    actions: ActionState,
}

impl HostState {
    pub(crate) fn new(runtime: Arc<Runtime>, auth: Arc<Auth>, webhooks: Arc<Webhooks>) -> Self {
        let keys: Arc<dyn ScopedKeys> = auth.clone();
        let actions = ActionState::new(runtime.directory().clone(), keys);
        Self {
            inner: Arc::new(Shared {
                runtime,
                auth,
                webhooks,
                actions,
            }),
        }
    }

    /// Outbound webhooks (subscriptions, deliveries).
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// The shared graph.
    pub fn graph(&self) -> &Graph {
        self.inner.runtime.graph()
    }

    /// Typed lookup of loaded actions.
    pub fn directory(&self) -> &ActionDirectory {
        self.inner.runtime.directory()
    }

    /// Credentials checks (admin, scoped machine keys).
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }
}

/// What action routes run with: a part of the host's state, never all of it.
impl FromRef<HostState> for ActionState {
    fn from_ref(state: &HostState) -> Self {
        state.inner.actions.clone()
    }
}

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
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Graph reachable and actions loaded.
#[utoipa::path(get, path = "/readyz", tag = "Health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The graph does not answer", body = Readiness),
    ))]
async fn readyz(State(state): State<HostState>) -> (StatusCode, Json<Readiness>) {
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
async fn list_agents(State(state): State<HostState>, _admin: Admin) -> Json<Vec<AgentInfo>> {
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
async fn get_agent(
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
async fn agent_actions(
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
async fn reload_agent(
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
async fn get_action(
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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "graphagent",
        description = "Host for agent actions whose state lives in a graph. Admin endpoints take \
                       `Authorization: Bearer <token>` (from `POST /api/auth/login`) or an \
                       `x-api-key` with the `admin` scope.",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody)),
    tags(
        (name = "Health", description = "Liveness and readiness"),
        (name = "Auth", description = "Login and API keys"),
        (name = "Agents", description = "Loaded agents and actions"),
        (name = "Webhooks", description = "Outbound webhooks: event types, subscriptions, deliveries"),
    )
)]
struct HostDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

/// Body size limit for every route, unless configured otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Build the router and the OpenAPI document for the host and every registered type.
/// Fails when two parts of the document (the host, an action type) define one schema
/// name differently: merged, the second would silently point at the first's shape.
pub(crate) fn build_router(
    state: HostState,
    max_body_bytes: usize,
) -> Result<(Router, OpenApiDoc), SchemaConflict> {
    let mut api = OpenApiRouter::with_openapi(HostDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(auth::login))
        .routes(routes!(auth::create_api_key, auth::list_api_keys))
        .routes(routes!(auth::revoke_api_key))
        .routes(routes!(list_agents))
        .routes(routes!(get_agent))
        .routes(routes!(agent_actions))
        .routes(routes!(reload_agent))
        .routes(routes!(get_action))
        .merge(wh::router());

    let mut schemas = SchemaOwners::default();
    schemas.claim("the host", api.get_openapi())?;
    // Action routes run with the actions' own state, never the host's.
    let actions = ActionState::from_ref(&state);
    let mut private = OpenApiRouter::<ActionState>::new();
    let mut public = OpenApiRouter::<ActionState>::new();
    for ty in state.runtime().types().all() {
        let owner = format!("action type `{}`", ty.type_name());
        let (routes, public_routes) = (ty.routes(), ty.public_routes());
        schemas.claim(&owner, routes.get_openapi())?;
        schemas.claim(&owner, public_routes.get_openapi())?;
        private = private.merge(routes);
        public = public.merge(public_routes);
    }
    // Every action route is admin-only; the layer enforces it whatever the handler takes.
    let private = private.route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    api = api
        .nest(
            "/api/actions/{action_id}",
            private.with_state(actions.clone()),
        )
        .merge(public.with_state(actions));

    let (router, mut doc) = api.split_for_parts();
    complete_doc(&mut doc);
    let event_types: Vec<String> = state
        .webhooks()
        .catalogue()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    for name in ["CreateSubscription", "UpdateSubscription"] {
        restrict_items(&mut doc, name, "event_types", &event_types);
    }

    let swagger: Router<HostState> = SwaggerUi::new("/docs")
        .url("/openapi.json", doc.clone())
        .into();
    let router = router
        .merge(swagger)
        .route("/redoc", axum::routing::get(redoc_page))
        .route("/redoc/redoc.standalone.js", axum::routing::get(redoc_js))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                // Path only: query strings can carry machine keys (`?api_key=`).
                |req: &Request| {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                },
            ),
        );
    Ok((router, doc))
}

/// One schema name defined with two different shapes by two parts of the document.
#[derive(Debug, thiserror::Error)]
#[error(
    "OpenAPI schema `{name}` is defined by {first} and, differently, by {second}; \
     give one of the types another name (`#[schema(as = UniqueName)]`)"
)]
pub struct SchemaConflict {
    /// The schema name.
    pub name: String,
    /// Who defined it first.
    pub first: String,
    /// Who defined it again, differently.
    pub second: String,
}

/// Which part of the document defined each schema name, and as what.
#[derive(Default)]
struct SchemaOwners {
    seen: std::collections::BTreeMap<String, (String, serde_json::Value)>,
}

impl SchemaOwners {
    /// Record `part`'s schemas; the same name with the same shape (a shared type, such as
    /// `ErrorBody`) is fine, a different shape is a conflict.
    fn claim(&mut self, owner: &str, part: &OpenApiDoc) -> Result<(), SchemaConflict> {
        let Some(components) = &part.components else {
            return Ok(());
        };
        for (name, schema) in &components.schemas {
            let shape = serde_json::to_value(schema).unwrap_or_default();
            match self.seen.get(name) {
                Some((first, known)) if *known != shape => {
                    return Err(SchemaConflict {
                        name: name.clone(),
                        first: first.clone(),
                        second: owner.to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    self.seen.insert(name.clone(), (owner.to_owned(), shape));
                }
            }
        }
        Ok(())
    }
}

/// Declare what the handlers leave implicit, so the document matches what is served:
/// the `{action_id}` parameter and admin security of action routes, and the answers the
/// host's extractors and layers give on every route that has what causes them.
fn complete_doc(doc: &mut OpenApiDoc) {
    let admin = vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::new("api_key", Vec::<String>::new()),
    ];
    for (path, item) in doc.paths.paths.iter_mut() {
        let names: Vec<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let is_action_route = path.starts_with("/api/actions/{action_id}/");
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let params = op.parameters.get_or_insert_with(Vec::new);
            for name in &names {
                let declared = params
                    .iter()
                    .any(|p| p.name == *name && p.parameter_in == ParameterIn::Path);
                if !declared {
                    params.insert(0, path_param(name));
                }
            }
            if is_action_route && op.security.is_none() {
                op.security = Some(admin.clone());
            }
            add_error_responses(op, is_action_route);
        }
    }
}

/// The error answers an operation can get from the host itself, derived from what the
/// operation has. Answers the handler documents keep their description.
fn add_error_responses(op: &mut Operation, is_action_route: bool) {
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    // A body declared with a named schema is read by the host's `Json` extractor; a
    // free-form one (`content = Object`, e.g. a signed provider webhook) by the handler.
    let json_body = op.request_body.as_ref().is_some_and(|b| {
        b.content
            .values()
            .any(|c| matches!(c.schema, Some(RefOr::Ref(_))))
    });
    let mut generic: Vec<(&str, &str)> = Vec::new();
    if has_params || json_body {
        generic.push((
            "400",
            "Malformed request: a path or query parameter, or the JSON body, cannot be \
             parsed (the message says which)",
        ));
    }
    if secured {
        generic.push(("401", "Credentials missing, invalid, expired or revoked"));
        generic.push((
            "403",
            "Valid credentials without the scope this route needs",
        ));
    }
    if is_action_route {
        generic.push(("404", "No loaded action of this type has this id"));
    }
    if json_body {
        generic.push(("413", "The body is larger than the server's limit"));
        generic.push(("415", "The body is not sent as `application/json`"));
        generic.push((
            "422",
            "The JSON body has a wrong type, or a missing or unknown field (named in the message)",
        ));
    }
    generic.push(("500", "Internal error; the detail is in the server log"));
    // Credentials checks and bodies lead to graph reads (API keys, users, state).
    if secured || json_body {
        generic.push(("503", "The graph store is unavailable; retry later"));
    }
    for (status, description) in generic {
        match op.responses.responses.get_mut(status) {
            Some(RefOr::T(existing)) if existing.description.is_empty() => {
                existing.description = description.to_owned();
            }
            Some(_) => {}
            None => {
                op.responses
                    .responses
                    .insert(status.to_owned(), error_response(description));
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// Restrict the items of array property `field` of component `schema` to `values` (the
/// server checks them against a list only known once the action types are registered).
fn restrict_items(doc: &mut OpenApiDoc, schema: &str, field: &str, values: &[String]) {
    let property = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut(schema))
        .and_then(|s| match s {
            RefOr::T(Schema::Object(o)) => o.properties.get_mut(field),
            _ => None,
        });
    if let Some(RefOr::T(Schema::Array(array))) = property
        && let ArrayItems::RefOrSchema(items) = &mut array.items
        && let RefOr::T(Schema::Object(item)) = items.as_mut()
    {
        item.enum_values = Some(values.iter().map(|v| serde_json::json!(v)).collect());
    }
}

fn path_param(name: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(if name == "action_id" {
            "Action id (`act_…`)".to_owned()
        } else {
            name.replace('_', " ")
        }))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        ))
        .build()
}

async fn require_admin(State(state): State<HostState>, request: Request, next: Next) -> Response {
    match state.auth().authorize_admin(request.headers()).await {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

const REDOC_JS: &str = include_str!("../assets/redoc/redoc.standalone.js");

async fn redoc_page() -> Html<&'static str> {
    Html(
        r#"<!DOCTYPE html>
<html><head><title>graphagent API</title><meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="/redoc/redoc.standalone.js"></script></body></html>"#,
    )
}

async fn redoc_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/javascript"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        REDOC_JS,
    )
        .into_response()
}
