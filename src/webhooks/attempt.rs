//! One HTTP attempt: sign the envelope, check the destination, POST it, read a bounded
//! answer, and class the outcome. No graph access here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::net;
use super::retry::{self, Class};
use super::rows::SubRow;
use super::signing::signature_header;
use crate::outbox::OutboxEvent;
use crate::time::{ms_to_rfc3339, now_ms};

/// Response bodies are kept up to this many bytes (as svix-server).
pub const RESPONSE_BODY_LIMIT: usize = 20_000;

/// What one attempt gave.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub body: Option<String>,
    pub retry_after: Option<Duration>,
    pub class: Class,
}

impl Outcome {
    /// An attempt that never reached the endpoint.
    fn not_sent(error: String, class: Class) -> Self {
        Self {
            status_code: None,
            duration_ms: 0,
            error: Some(error),
            body: None,
            retry_after: None,
            class,
        }
    }
}

/// Sends deliveries: the delivery HTTP client and the destination policy it enforces.
pub(crate) struct Sender {
    client: reqwest::Client,
    policy: Arc<net::Policy>,
}

impl Sender {
    pub(crate) fn new(client: reqwest::Client, policy: Arc<net::Policy>) -> Self {
        Self { client, policy }
    }

    /// The destination policy (what a subscription URL may point at).
    pub(crate) fn policy(&self) -> &net::Policy {
        &self.policy
    }

    /// POST `event` to `sub`, signed with the secrets that sign now.
    // Named for the trace (docs/metrics.md, "Tracing"); ids only: the URL and the body
    // may carry secrets or personal data.
    #[tracing::instrument(
        name = "webhook.attempt",
        skip_all,
        fields(
            otel.kind = "client",
            event = %event.key,
            subscription = %sub.key,
            outcome = tracing::field::Empty,
            http.status_code = tracing::field::Empty,
        )
    )]
    pub(crate) async fn send(&self, sub: &SubRow, event: &OutboxEvent) -> Outcome {
        let started = Instant::now();
        let Some(data) = event.data.as_ref().filter(|_| !event.payload_expired) else {
            return Outcome::not_sent(
                "payload expired (retention period passed)".to_owned(),
                Class::Permanent,
            );
        };
        let envelope = json!({
            "id": event.key,
            "type": event.event_type,
            "timestamp": ms_to_rfc3339(event.created_ms),
            "data": data,
        });
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let now = now_ms();
        let ts = now / 1000;
        let signature = signature_header(&sub.signing_secrets(now), &event.key, ts, &body);
        // A destination the policy refuses stays refused: the failure is permanent, not
        // retried for a day (the same URL, or the same DNS answers, would be refused again).
        let result = match self.policy.check_url(&sub.url) {
            Err(net::UrlError::Invalid(e)) => Err((format!("URL refused: {e}"), Class::Permanent)),
            Err(refused @ net::UrlError::Refused(_)) => {
                Err((refused.to_string(), Class::Permanent))
            }
            Ok(url) => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &event.key)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(|e| match net::refusal_in(&e) {
                    Some(refused) => (refused.to_string(), Class::Permanent),
                    None => (describe_reqwest_error(e), Class::Retryable),
                }),
        };
        let mut outcome = match result {
            Err((error, class)) => Outcome::not_sent(error, class),
            Ok(response) => read_answer(response).await,
        };
        outcome.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let span = tracing::Span::current();
        span.record("outcome", outcome.class.label());
        if let Some(code) = outcome.status_code {
            span.record("http.status_code", code);
        }
        outcome
    }
}

/// The answer's status, `Retry-After` and up to [`RESPONSE_BODY_LIMIT`] bytes of body.
async fn read_answer(mut response: reqwest::Response) -> Outcome {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut buf = Vec::new();
    let mut read_error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_BODY_LIMIT.saturating_sub(buf.len());
                buf.extend_from_slice(chunk.get(..chunk.len().min(room)).unwrap_or_default());
                if buf.len() >= RESPONSE_BODY_LIMIT {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                read_error = Some(describe_reqwest_error(e));
                break;
            }
        }
    }
    let code = status.as_u16();
    let class = retry::classify(code);
    let error = match class {
        Class::Success => None,
        _ if status.is_redirection() => Some(format!("HTTP {code}: redirects are not followed")),
        _ => Some(read_error.unwrap_or_else(|| format!("HTTP {code}"))),
    };
    Outcome {
        status_code: Some(code),
        duration_ms: 0,
        error,
        body: Some(String::from_utf8_lossy(&buf).into_owned()),
        retry_after,
        class,
    }
}

/// A transport error in a line, without the URL (it may carry credentials).
fn describe_reqwest_error(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The innermost cause names the reason (refused, DNS policy) without the URL.
    let mut source: Option<&dyn std::error::Error> = e.source();
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    match last {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}
