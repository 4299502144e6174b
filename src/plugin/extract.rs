//! What an action's HTTP handlers may use: [`ActionState`] (the loaded actions and the
//! machine-key check, never the host's own state), the [`ActionRef`] extractor that finds
//! the instance a request is for, the host's JSON-error `Json` / `Path` / `Query`,
//! [`Paging`], and [`read_body`] for public routes that authenticate before reading.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, RawPathParams};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{Action, ActionDirectory, ScopedKeys};
use crate::error::{ApiError, ApiResult, rejection};

/// The state action routes run with: the loaded actions and the machine-key check.
/// Cheap to clone. The host builds it; an action never sees the host's own state.
#[derive(Clone)]
pub struct ActionState {
    directory: ActionDirectory,
    keys: Arc<dyn ScopedKeys>,
}

impl ActionState {
    /// State over `directory`, checking machine keys with `keys`.
    pub fn new(directory: ActionDirectory, keys: Arc<dyn ScopedKeys>) -> Self {
        Self { directory, keys }
    }

    /// Typed lookup of loaded actions.
    pub fn directory(&self) -> &ActionDirectory {
        &self.directory
    }

    /// Machine keys: derive one, or check that a presented key grants a scope.
    pub fn keys(&self) -> &dyn ScopedKeys {
        self.keys.as_ref()
    }
}

/// `axum::Json` whose rejections are JSON errors naming what is wrong.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // body_text() names the field and position for data errors.
        rejection(r.status(), r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        rejection(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        rejection(StatusCode::BAD_REQUEST, r.body_text())
    }
}

/// Validated `page` / `page_size` query parameters of a list endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// 1-based page.
    pub page: u32,
    /// Items per page.
    pub page_size: u32,
}

impl Paging {
    /// `page` (default 1, from 1) and `page_size` (default `default_size`, 1 to
    /// `max_size`); 400 naming the parameter otherwise.
    pub fn new(
        page: Option<u32>,
        page_size: Option<u32>,
        default_size: u32,
        max_size: u32,
    ) -> ApiResult<Self> {
        let page = page.unwrap_or(1);
        let page_size = page_size.unwrap_or(default_size);
        if page == 0 {
            return Err(ApiError::invalid_param("page", "starts at 1"));
        }
        if !(1..=max_size).contains(&page_size) {
            return Err(ApiError::invalid_param(
                "page_size",
                format!("must be 1 to {max_size}"),
            ));
        }
        Ok(Self { page, page_size })
    }

    /// Items before this page. In `u64`: `page * page_size` overflows `u32`.
    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.page_size)
    }
}

/// The loaded action of type `A` named by the request's `{action_id}` path parameter.
/// 404 when no such action is loaded (or it is of another type). The request keeps this
/// instance until it finishes, even if a reload replaces it meanwhile.
pub struct ActionRef<A>(pub Arc<A>);

impl<A: Action, S> FromRequestParts<S> for ActionRef<A>
where
    ActionState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let id = params
            .iter()
            .find(|(k, _)| *k == "action_id")
            .map(|(_, v)| v.to_owned())
            .ok_or_else(ApiError::internal)?;
        ActionState::from_ref(state)
            .directory()
            .get::<A>(&id)
            .map(ActionRef)
            .ok_or_else(|| {
                ApiError::not_found(format!("no loaded `{}` action `{id}`", A::TYPE_NAME))
            })
    }
}

/// Read a request body of at most `limit` bytes: 413 when it declares more or turns out
/// to be longer (nothing is read past the limit), 400 when it cannot be read. For public
/// routes that must authenticate before reading: they take [`axum::body::Body`], since
/// `Bytes` and `Json` buffer the body, up to the global limit, before the handler runs.
pub async fn read_body(body: axum::body::Body, limit: usize) -> ApiResult<axum::body::Bytes> {
    use axum::body::HttpBody;
    use futures::StreamExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    if declared > limit {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        if chunk.len() > limit.saturating_sub(buf.len()) {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}
