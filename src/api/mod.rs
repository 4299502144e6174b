//! The HTTP surface: one router for the host's endpoints (`host`, `auth`, `webhooks`)
//! and every action type's routes, with one OpenAPI document (`openapi`), the docs pages
//! (`docs`) and the JSON fallbacks.
//!
//! **Architecture Invariant.** Routes are built once per action *type*; which instance
//! serves a request is resolved per request from the `{action_id}` path parameter, so a
//! reload swaps instances without rebuilding the router.

mod access;
mod auth;
mod docs;
mod host;
mod openapi;
mod webhooks;

use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::plugin::ActionState;
use crate::state::HostState;
pub use host::{ActionDetail, Health, Readiness};
pub use openapi::SchemaConflict;
use openapi::{HostDoc, SchemaOwners, complete_doc, restrict_items};

/// Build the router and the OpenAPI document for the host and every registered type.
/// Fails when two parts of the document (the host, an action type) define one schema
/// name differently: merged, the second would silently point at the first's shape.
pub(crate) fn build_router(
    state: HostState,
    max_body_bytes: usize,
    telemetry: &crate::telemetry::TelemetrySettings,
) -> Result<(Router, OpenApiDoc), SchemaConflict> {
    let mut api = OpenApiRouter::with_openapi(HostDoc::openapi())
        .routes(routes!(host::healthz))
        .routes(routes!(host::readyz))
        .routes(routes!(auth::login))
        .routes(routes!(auth::create_api_key, auth::list_api_keys))
        .routes(routes!(auth::revoke_api_key))
        .routes(routes!(host::list_agents))
        .routes(routes!(host::get_agent))
        .routes(routes!(host::agent_actions))
        .routes(routes!(host::reload_agent))
        .routes(routes!(host::get_action))
        .merge(webhooks::router());

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

    // `validatorUrl: none`: Swagger UI would otherwise send the document to
    // validator.swagger.io from any host but localhost; the docs load nothing from outside.
    let swagger: Router<HostState> = SwaggerUi::new("/docs")
        .url("/openapi.json", doc.clone())
        .config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none"))
        .into();
    let mut router = router.merge(swagger);
    if telemetry.metrics_enabled {
        // Unauthenticated, as Prometheus scrapes: it holds counts, never secrets (see
        // docs/metrics.md); `GRAPHAGENT_METRICS_ENABLED=false` removes it.
        router = router.route("/metrics", axum::routing::get(metrics));
    }
    let router = router
        .route("/redoc", axum::routing::get(docs::redoc_page))
        .route("/redoc/redoc.standalone.js", axum::routing::get(docs::redoc_js))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(access::track))
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

async fn require_admin(State(state): State<HostState>, request: Request, next: Next) -> Response {
    match state.auth().authorize_admin(request.headers()).await {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render(),
    )
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
