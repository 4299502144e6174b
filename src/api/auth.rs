//! `/api/auth`: login and API keys, thin handlers over [`Auth`].

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;

use crate::auth::{Admin, ApiKeyCreated, ApiKeyInfo, CreateApiKey, LoginRequest, TokenResponse};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::plugin::{Json, Path};
use crate::state::HostState;

/// Log in with email and password.
#[utoipa::path(post, path = "/api/auth/login", tag = "Auth",
    request_body(description = "The admin's email and password, as `GRAPHAGENT_ADMIN_EMAIL` and \
            `GRAPHAGENT_ADMIN_PASSWORD` set them; the example logs in to a server started \
            as the README's first command starts it",
        content = LoginRequest,
        example = json!({"email": "admin@example.com", "password": "change-me"})),
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 429, description = "Too many attempts from this client address, or too many \
            consecutive failed logins for this email (the password was not checked); \
            retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
pub(super) async fn login(
    State(state): State<HostState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    Json(request): Json<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state
        .auth()
        .admit_login(addr.ip())
        .map_err(ApiError::too_many_requests)?;
    state
        .auth()
        .login(&request.email, &request.password)
        .await
        .map(Json)
}

/// Create an API key (shown once).
#[utoipa::path(post, path = "/api/auth/api-keys", tag = "Auth",
    request_body(content = CreateApiKey, example = json!({"name": "ci deploys", "scopes": ["admin"]})),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = ApiKeyCreated),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, description = "Bad name or scope", body = ErrorBody),
    ))]
pub(super) async fn create_api_key(
    State(state): State<HostState>,
    _admin: Admin,
    Json(request): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    let created = state.auth().create_key(request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List API keys (never the keys themselves).
#[utoipa::path(get, path = "/api/auth/api-keys", tag = "Auth",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = Vec<ApiKeyInfo>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub(super) async fn list_api_keys(
    State(state): State<HostState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    state.auth().list_keys().await.map(Json)
}

/// Revoke an API key.
#[utoipa::path(delete, path = "/api/auth/api-keys/{key_id}", tag = "Auth",
    params(("key_id" = String, Path, description = "Key id, e.g. `key_3f9a61c2d4e5b6a7`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyInfo),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub(super) async fn revoke_api_key(
    State(state): State<HostState>,
    _admin: Admin,
    Path(key_id): Path<String>,
) -> ApiResult<Json<ApiKeyInfo>> {
    state.auth().revoke_key(&key_id).await.map(Json)
}
