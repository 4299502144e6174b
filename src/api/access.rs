//! Per-request observability: the `x-request-id` (kept when the caller's is sane, else
//! generated), a `request` span carrying it so every log line of the request has it, one
//! INFO access line, and the HTTP request metrics. Never the query string (provider
//! webhooks carry keys in it) nor any header but the id.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The request id header, read and answered.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest caller-supplied id kept; longer ones are replaced.
const MAX_ID_LEN: usize = 128;

/// The caller's id if it is 1 to 128 visible ASCII characters, else a fresh UUID v7.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    given
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= MAX_ID_LEN && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            // A UUID's text is always a valid header value.
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        })
}

/// Runs the request inside its `request` span, then logs and counts it and answers the id.
pub async fn track(mut request: Request, next: Next) -> Response {
    let id = request_id(request.headers().get(REQUEST_ID));
    request.headers_mut().insert(REQUEST_ID, id.clone());
    // The route template (`/api/actions/{action_id}/…`), never the concrete path: bounded
    // for metrics labels, and free of ids.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    // No query string or concrete path in it: SentDM's `?key=` is a credential.
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        request_id = %id.to_str().unwrap_or_default(),
        method = %method,
        route = %route,
        http.status_code = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("http.status_code", status);
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request served"
        );
    });
    let method_label: &'static str = match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    metrics::counter!(
        "graphagent_http_requests_total",
        "method" => method_label,
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "graphagent_http_request_duration_seconds",
        "method" => method_label,
        "route" => route
    )
    .record(elapsed.as_secs_f64());
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_others_replaced() {
        let keep = HeaderValue::from_static("req-42_abc.DEF");
        assert_eq!(request_id(Some(&keep)), keep);
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_static("has space"),
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        ] {
            let id = request_id(Some(&bad));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        }
        let max = HeaderValue::from_str(&"y".repeat(128)).unwrap();
        assert_eq!(request_id(Some(&max)), max);
        assert!(uuid::Uuid::parse_str(request_id(None).to_str().unwrap()).is_ok());
    }
}
