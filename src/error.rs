//! The request-path error: one type for every handler, rendered as
//! `{"error": {"code", "message"}}` with the HTTP status it names.
//!
//! Only what is built here reaches a client. Internal failures (graph, IO) are logged
//! where they are converted and answered with a generic message, so internals and
//! secrets never leak into a response.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, for machines (`code`) and people (`message`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `validation_failed`, `unauthorized`.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// Human-readable explanation; names the offending field where there is one.
    #[schema(example = "to[0]: not an E.164 phone number")]
    pub message: String,
    /// The field the error is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error a handler returns; its status and code are what the client sees.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {code}: {message}")]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Message for the client. Never put secrets or internal error text here.
    pub message: String,
    /// The field the error is about.
    pub field: Option<String>,
    /// Extra headers (e.g. `Retry-After` on 429).
    pub retry_after_secs: Option<u64>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 about one field: the message is prefixed with the field name.
    pub fn invalid_field(field: impl Into<String>, message: impl AsRef<str>) -> Self {
        let field = field.into();
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{field}: {}", message.as_ref()),
        );
        err.field = Some(field);
        err
    }

    /// 400 about one request parameter (query or path): the message is prefixed with
    /// its name.
    pub fn invalid_param(field: impl Into<String>, message: impl AsRef<str>) -> Self {
        let field = field.into();
        let mut err = Self::bad_request(format!("{field}: {}", message.as_ref()));
        err.field = Some(field);
        err
    }

    /// 401: credentials missing, invalid or expired.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: authenticated, but not allowed to do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 429 with a `Retry-After` hint.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry after {retry_after_secs} s"),
        );
        err.retry_after_secs = Some(retry_after_secs);
        err
    }

    /// 503: a dependency (graph, provider) is unavailable; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 with a generic message. Log the cause where it is known, not here.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// 502: an upstream provider answered with an error.
    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }

    /// The JSON body this error renders as.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = http::HeaderValue::from_str(&secs.to_string())
        {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<crate::graph::GraphError> for ApiError {
    fn from(err: crate::graph::GraphError) -> Self {
        // Classify rather than wrap: an unreachable graph is retryable (503), the rest
        // is a bug or data problem (500). Either way the detail stays in the log.
        tracing::error!(error = %err, "graph operation failed");
        if err.is_unavailable() {
            Self::unavailable("the graph store is unavailable; retry later")
        } else {
            Self::internal()
        }
    }
}

/// Rejections from axum's own extractors (`Json`, `Path`, `Query`) as JSON errors.
pub(crate) fn rejection(status: StatusCode, message: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
        _ => "bad_request",
    };
    ApiError::new(status, code, message)
}
