//! Typed async client for the SentDM v3 endpoints the broadcast action uses (CONTRACT §2).
//!
//! It owns the cross-cutting rules so callers cannot get them wrong: the envelope and its
//! variants, the typed error, retries with capped jittered backoff that honour
//! `Retry-After`, an idempotency key on every POST (so a retry can never send twice), a
//! per-client timeout, and a token-bucket limiter under SentDM's documented rate.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder, Retryable as _};
use http::{HeaderMap, Method, StatusCode};
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::model::{
    Account, Message, MessageActivities, Meta, Page, PageRequest, Pagination, SendMessageRequest,
    SendMessageResponse, SendOutcome, Template, TemplateQuery, Webhook, WebhookEvent,
    WebhookEventType, WebhookRequest, WebhookTestResult,
};

/// SentDM's production base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.sent.dm";

/// An API key, kept as a [`SecretString`] so neither `Debug` nor a log line can print it.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(SecretString::from(key.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.expose().as_bytes().ct_eq(other.expose().as_bytes()))
    }
}

impl Eq for ApiKey {}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// A validated `Idempotency-Key` (`^[A-Za-z0-9_-]{1,255}$`, CONTRACT §1.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        let valid = !key.is_empty()
            && key.len() <= 255
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(key))
        } else {
            Err(Error::InvalidRequest(
                "idempotency key must match ^[A-Za-z0-9_-]{1,255}$".into(),
            ))
        }
    }

    /// A fresh random key, for one-off operations.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A deterministic key from the parts that identify one operation (for example
    /// action id + broadcast id), so a resubmission after a crash reuses the same key.
    pub fn derive(parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        let digest = h.finalize();
        Self(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A token bucket: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Standard endpoints (CONTRACT §1.8).
    pub const STANDARD: Self = Self {
        per_minute: 200,
        burst: 50,
    };
    /// rotate-secret and test.
    pub const SENSITIVE: Self = Self {
        per_minute: 10,
        burst: 5,
    };
}

/// Reported to [`ClientConfig::on_retry`] before each retry sleep.
#[derive(Debug, Clone)]
pub struct RetryEvent {
    pub method: Method,
    pub path: String,
    /// 1 for the first retry.
    pub retry: u32,
    /// HTTP status of the failed attempt, `None` for connect errors and timeouts.
    pub status: Option<u16>,
    /// The delay the policy chose (before [`ClientConfig::backoff_scale`]).
    pub delay: Duration,
    /// The delay came from `Retry-After` / `retry-after-ms`.
    pub from_retry_after: bool,
}

pub type RetryHook = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// Client configuration. Defaults mirror SentDM's SDK (CONTRACT §1.9).
#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub api_key: ApiKey,
    /// Organisation keys only: act as this child profile. Never sent when empty.
    pub profile_id: Option<String>,
    /// Adds `"sandbox": true` to every mutating body.
    pub sandbox: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Multiplies every retry sleep; tests set 0 to retry at once while still observing
    /// the chosen delay through `on_retry`.
    pub backoff_scale: f64,
    pub rate_limit: Option<RateLimit>,
    pub sensitive_rate_limit: Option<RateLimit>,
    pub on_retry: Option<RetryHook>,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            profile_id: None,
            sandbox: false,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_retries: 2,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(8),
            backoff_scale: 1.0,
            rate_limit: Some(RateLimit::STANDARD),
            sensitive_rate_limit: Some(RateLimit::SENSITIVE),
            on_retry: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("profile_id", &self.profile_id)
            .field("sandbox", &self.sandbox)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// Coarse class of an API error, for callers deciding between retry, fix and give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Validation,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    Unprocessable,
    RateLimited,
    Server,
    Other,
}

/// SentDM's error envelope (`error: {code, message, details, doc_url}`) plus the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub status: u16,
    /// `None` when the body was empty or not an envelope.
    pub code: Option<String>,
    pub message: String,
    /// Field errors: `{ "to": ["..."] }`.
    pub details: BTreeMap<String, Vec<String>>,
    pub doc_url: Option<String>,
    pub request_id: Option<String>,
    pub retry_after: Option<Duration>,
}

impl ErrorResponse {
    pub fn kind(&self) -> ErrorKind {
        match self.status {
            400 => ErrorKind::Validation,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 | 410 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            422 => ErrorKind::Unprocessable,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Other,
        }
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP {} {}: {}",
            self.status,
            self.code.as_deref().unwrap_or("-"),
            self.message
        )
    }
}

impl std::error::Error for ErrorResponse {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Boxed: the error envelope is large and most results are `Ok`.
    #[error("SentDM error: {0}")]
    Api(Box<ErrorResponse>),
    #[error("SentDM request timed out")]
    Timeout(#[source] reqwest::Error),
    #[error("could not connect to SentDM")]
    Connect(#[source] reqwest::Error),
    #[error("HTTP transport error talking to SentDM")]
    Transport(#[source] reqwest::Error),
    #[error("unexpected SentDM response (HTTP {status}): {reason}")]
    Decode { status: u16, reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl From<ErrorResponse> for Error {
    fn from(e: ErrorResponse) -> Self {
        Self::Api(Box::new(e))
    }
}

impl Error {
    pub fn api(&self) -> Option<&ErrorResponse> {
        match self {
            Self::Api(e) => Some(e.as_ref()),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.api().is_some_and(|e| e.kind() == ErrorKind::NotFound)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// governor's clock, read from tokio's: paused-clock tests then drive the limiter, and
/// its waits are tokio sleeps like every other wait of the client.
#[derive(Clone)]
struct TokioClock(tokio::time::Instant);

impl governor::clock::Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

type Gcra = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

/// A GCRA limiter shared by clones of one client: `burst` at once, then one request per
/// `60 s / per_minute`, which is exactly a token bucket of `burst` tokens refilled at
/// `per_minute`.
struct Limiter {
    gcra: Gcra,
    clock: TokioClock,
    /// `standard` or `sensitive`, the metrics label.
    class: &'static str,
}

impl Limiter {
    fn new(limit: RateLimit, class: &'static str) -> Self {
        let per_minute = NonZeroU32::new(limit.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = governor::Quota::per_minute(per_minute).allow_burst(burst);
        let clock = TokioClock(tokio::time::Instant::now());
        Self {
            gcra: governor::RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            class,
        }
    }

    /// Waits for a slot; returns how long it waited.
    async fn acquire(&self) -> Duration {
        let mut waited = Duration::ZERO;
        while let Err(not_until) = self.gcra.check() {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&self.clock));
            tokio::time::sleep(wait).await;
            waited += wait;
        }
        metrics::histogram!("sentdm_client_rate_limit_wait_seconds", "class" => self.class)
            .record(waited.as_secs_f64());
        waited
    }
}

struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// The SentDM client. Cheap to clone; clones share the connection pool and limiters.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    cfg: Arc<ClientConfig>,
    base: Arc<str>,
    limiter: Option<Arc<Limiter>>,
    sensitive: Option<Arc<Limiter>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("cfg", &self.cfg).finish()
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self> {
        let base = cfg.base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| Error::InvalidRequest(format!("base URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidRequest("base URL must be http(s)".into()));
        }
        if cfg
            .profile_id
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return Err(Error::InvalidRequest("profile id must not be empty".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .user_agent(concat!("sentdm-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Transport)?;
        Ok(Self {
            http,
            limiter: cfg
                .rate_limit
                .map(|l| Arc::new(Limiter::new(l, "standard"))),
            sensitive: cfg
                .sensitive_rate_limit
                .map(|l| Arc::new(Limiter::new(l, "sensitive"))),
            base: base.into(),
            cfg: Arc::new(cfg),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The same client (connection pool and rate limiters shared) acting in sandbox mode
    /// and/or as another profile, for one call's per-request options.
    pub fn with_options(&self, sandbox: bool, profile_id: Option<String>) -> Result<Self> {
        if profile_id.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(Error::InvalidRequest("profile id must not be empty".into()));
        }
        let mut cfg = (*self.cfg).clone();
        cfg.sandbox = sandbox;
        if profile_id.is_some() {
            cfg.profile_id = profile_id;
        }
        Ok(Self {
            cfg: Arc::new(cfg),
            ..self.clone()
        })
    }

    /// `GET /v3/me`.
    pub async fn me(&self) -> Result<Account> {
        let raw = self.call(Req::get("/v3/me")).await?;
        data(&raw)
    }

    /// `POST /v3/messages` → 202. Always carries an `Idempotency-Key` (the caller's, or a
    /// generated one returned in the outcome) and reuses it on retries.
    pub async fn send_message(
        &self,
        req: &SendMessageRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<SendOutcome> {
        if req.to.is_empty() {
            return Err(Error::InvalidRequest("`to` must not be empty".into()));
        }
        let key = key.unwrap_or_else(IdempotencyKey::generate);
        let body = self.mutation_body(req)?;
        let raw = self
            .call(
                Req::new(Method::POST, "/v3/messages".into())
                    .body(body)
                    .key(&key),
            )
            .await?;
        let response: SendMessageResponse = data(&raw)?;
        Ok(SendOutcome {
            response,
            idempotency_key: key.0,
            replayed: header_is_true(&raw.headers, "idempotent-replayed"),
            sandbox: header_is_true(&raw.headers, "x-sandbox"),
            request_id: header_str(&raw.headers, "x-request-id"),
        })
    }

    /// `GET /v3/messages/{id}`.
    pub async fn get_message(&self, id: &str) -> Result<Message> {
        let raw = self
            .call(Req::get(&format!("/v3/messages/{}", seg(id))))
            .await?;
        data(&raw)
    }

    /// `GET /v3/messages/{id}/activities` (newest first).
    pub async fn message_activities(&self, id: &str) -> Result<MessageActivities> {
        let path = format!("/v3/messages/{}/activities", seg(id));
        let raw = self.call(Req::get(&path)).await?;
        data(&raw)
    }

    /// `GET /v3/templates`.
    pub async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>> {
        let mut req = Req::get("/v3/templates").page(q.page);
        for (k, v) in [
            ("search", &q.search),
            ("status", &q.status),
            ("category", &q.category),
        ] {
            if let Some(v) = v {
                req.query.push((k, v.clone()));
            }
        }
        let raw = self.call(req).await?;
        page(&raw, "templates")
    }

    /// `GET /v3/templates/{id}`.
    pub async fn get_template(&self, id: &str) -> Result<Template> {
        let raw = self
            .call(Req::get(&format!("/v3/templates/{}", seg(id))))
            .await?;
        data(&raw)
    }

    /// `GET /v3/webhooks`, one page.
    pub async fn list_webhooks(&self, p: PageRequest) -> Result<Page<Webhook>> {
        let raw = self.call(Req::get("/v3/webhooks").page(p)).await?;
        page(&raw, "webhooks")
    }

    /// Every webhook, walking pages with a constant page size while `has_more`.
    pub async fn list_all_webhooks(&self) -> Result<Vec<Webhook>> {
        let mut out = Vec::new();
        let mut p = PageRequest {
            page: 1,
            page_size: 100,
        };
        loop {
            let page = self.list_webhooks(p).await?;
            let empty = page.items.is_empty();
            out.extend(page.items);
            if !page.pagination.has_more || empty {
                return Ok(out);
            }
            p.page += 1;
        }
    }

    /// `GET /v3/webhooks/{id}`.
    pub async fn get_webhook(&self, id: &str) -> Result<Webhook> {
        let raw = self
            .call(Req::get(&format!("/v3/webhooks/{}", seg(id))))
            .await?;
        data(&raw)
    }

    /// `POST /v3/webhooks`. Pass a key derived from the desired config so a lost response
    /// can be retried later without creating a second webhook.
    pub async fn create_webhook(
        &self,
        req: &WebhookRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<Webhook> {
        let key = key.unwrap_or_else(IdempotencyKey::generate);
        let body = self.mutation_body(req)?;
        let raw = self
            .call(
                Req::new(Method::POST, "/v3/webhooks".into())
                    .body(body)
                    .key(&key),
            )
            .await?;
        data(&raw)
    }

    /// `PUT /v3/webhooks/{id}`: full replacement with the complete desired config.
    pub async fn update_webhook(&self, id: &str, req: &WebhookRequest) -> Result<Webhook> {
        let body = self.mutation_body(req)?;
        let path = format!("/v3/webhooks/{}", seg(id));
        let raw = self.call(Req::new(Method::PUT, path).body(body)).await?;
        data(&raw)
    }

    /// `DELETE /v3/webhooks/{id}` → 204. A 404 is returned as an error; reconcilers
    /// usually treat it as "already gone" via [`Error::is_not_found`].
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        let path = format!("/v3/webhooks/{}", seg(id));
        self.call(Req::new(Method::DELETE, path)).await?;
        Ok(())
    }

    /// `POST /v3/webhooks/{id}/rotate-secret`; the old secret stops working at once, so
    /// persist the returned one before anything else. Retried under one idempotency key,
    /// so a lost response replays the same new secret instead of rotating twice.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Rotated {
            signing_secret: String,
        }
        let path = format!("/v3/webhooks/{}/rotate-secret", seg(id));
        let key = IdempotencyKey::generate();
        let body = self.mutation_body(&json!({}))?;
        let raw = self
            .call(
                Req::new(Method::POST, path)
                    .body(body)
                    .key(&key)
                    .sensitive(),
            )
            .await?;
        let r: Rotated = data(&raw)?;
        Ok(r.signing_secret)
    }

    /// `POST /v3/webhooks/{id}/test` with e.g. `message.sent`.
    pub async fn test_webhook(&self, id: &str, event_type: &str) -> Result<WebhookTestResult> {
        let path = format!("/v3/webhooks/{}/test", seg(id));
        let key = IdempotencyKey::generate();
        let body = self.mutation_body(&json!({ "event_type": event_type }))?;
        let raw = self
            .call(
                Req::new(Method::POST, path)
                    .body(body)
                    .key(&key)
                    .sensitive(),
            )
            .await?;
        data(&raw)
    }

    /// `PATCH /v3/webhooks/{id}/toggle-status`.
    pub async fn toggle_webhook(&self, id: &str, is_active: bool) -> Result<Webhook> {
        let path = format!("/v3/webhooks/{}/toggle-status", seg(id));
        let body = self.mutation_body(&json!({ "is_active": is_active }))?;
        let raw = self.call(Req::new(Method::PATCH, path).body(body)).await?;
        data(&raw)
    }

    /// `GET /v3/webhooks/event-types`; see [`WebhookEventType::flatten_names`].
    pub async fn webhook_event_types(&self) -> Result<Vec<WebhookEventType>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Types {
            event_types: Vec<Value>,
        }
        let raw = self.call(Req::get("/v3/webhooks/event-types")).await?;
        let t: Types = data(&raw)?;
        // The docs show a flat list of names as well as nested objects: accept both.
        Ok(t.event_types
            .into_iter()
            .filter_map(|v| match v {
                Value::String(name) => Some(WebhookEventType {
                    name,
                    ..WebhookEventType::default()
                }),
                other => serde_json::from_value(other).ok(),
            })
            .collect())
    }

    /// `GET /v3/webhooks/{id}/events`, one page (newest first).
    pub async fn webhook_events(&self, id: &str, p: PageRequest) -> Result<Page<WebhookEvent>> {
        let path = format!("/v3/webhooks/{}/events", seg(id));
        let raw = self.call(Req::get(&path).page(p)).await?;
        page(&raw, "events")
    }

    fn mutation_body<T: serde::Serialize>(&self, body: &T) -> Result<Value> {
        let mut v =
            serde_json::to_value(body).map_err(|e| Error::InvalidRequest(format!("body: {e}")))?;
        if let Value::Object(m) = &mut v {
            m.insert("sandbox".into(), Value::Bool(self.cfg.sandbox));
        }
        Ok(v)
    }

    async fn call(&self, req: Req) -> Result<Raw> {
        let url = format!("{}{}", self.base, req.path);
        // POSTs are retried only under an idempotency key: without one a lost response
        // followed by a retry could send a broadcast twice.
        let retryable_method = req.method != Method::POST || req.key.is_some();
        let scale = self.cfg.backoff_scale.max(0.0);
        let mut retry = 0u32;
        let outcome = (|| self.attempt(&req, &url, retryable_method))
            .retry(self.backoff_policy())
            .sleep(move |delay: Duration| async move {
                let scaled = delay.mul_f64(scale);
                if !scaled.is_zero() {
                    tokio::time::sleep(scaled).await;
                }
            })
            .when(|f: &Failed| f.retryable)
            // `Retry-After` replaces the policy's delay, but only while retries remain.
            .adjust(|f: &Failed, next| next.map(|d| f.retry_after.unwrap_or(d)))
            .notify(|f: &Failed, delay| {
                retry += 1;
                self.on_retry(&req, retry, f, delay);
            })
            .await;
        outcome.map_err(|f| f.error)
    }

    /// One attempt, after the rate limiter; a failure says whether it may be retried.
    async fn attempt(&self, req: &Req, url: &str, retryable_method: bool) -> Result<Raw, Failed> {
        if let Some(l) = if req.sensitive {
            &self.sensitive
        } else {
            &self.limiter
        } {
            l.acquire().await;
        }
        let mut rb = self
            .http
            .request(req.method.clone(), url)
            .header("x-api-key", self.cfg.api_key.expose())
            .header("accept", "application/json");
        if let Some(p) = &self.cfg.profile_id {
            rb = rb.header("x-profile-id", p);
        }
        if let Some(k) = &req.key {
            rb = rb.header("idempotency-key", k);
        }
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(b) = &req.body {
            rb = rb.json(b);
        }
        let raw = match rb.send().await.map_err(classify) {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                match resp.bytes().await {
                    Ok(body) => Ok(Raw {
                        status,
                        headers,
                        body,
                    }),
                    Err(e) => Err(classify(e)),
                }
            }
            Err(e) => Err(e),
        };
        count_request(&req.method, &raw);
        let raw = raw.map_err(|e| Failed::transport(e, retryable_method))?;
        if raw.status.is_success() {
            return Ok(raw);
        }
        Err(Failed {
            retryable: retryable_method && should_retry(&raw),
            status: Some(raw.status.as_u16()),
            retry_after: retry_after(&raw.headers),
            error: api_error(&raw).into(),
        })
    }

    /// SentDM's SDK schedule (CONTRACT §1.9): `min(base × 2^n, cap)`, each scaled by
    /// `1 − 0.25·rand` (backon's own jitter only lengthens delays, up to double).
    fn backoff_policy(&self) -> impl backon::Backoff {
        let cap = self.cfg.backoff_cap;
        ExponentialBuilder::new()
            .with_min_delay(self.cfg.backoff_base.min(cap))
            .with_max_delay(cap)
            .with_factor(2.0)
            .with_max_times(usize::try_from(self.cfg.max_retries).unwrap_or(usize::MAX))
            .build()
            .map(|d| d.mul_f64(1.0 - 0.25 * rand::rng().random::<f64>()))
    }

    fn on_retry(&self, req: &Req, retry: u32, f: &Failed, delay: Duration) {
        metrics::counter!("sentdm_client_retries_total", "method" => req.method.to_string())
            .increment(1);
        if let Some(hook) = &self.cfg.on_retry {
            hook(&RetryEvent {
                method: req.method.clone(),
                path: req.path.clone(),
                retry,
                status: f.status,
                delay,
                from_retry_after: f.retry_after == Some(delay),
            });
        }
        tracing::debug!(
            http.method = %req.method,
            http.path = %req.path,
            retry,
            status = f.status,
            delay_ms = delay.as_millis() as u64,
            "retrying SentDM request"
        );
    }
}

/// Counts one attempt by method and answer: the HTTP status, or `timeout`, `connect` or
/// `transport` when there was none (labels from fixed sets: never a path, id or key).
fn count_request(method: &Method, outcome: &Result<Raw>) {
    let status = match outcome {
        Ok(raw) => raw.status.as_u16().to_string(),
        Err(Error::Timeout(_)) => "timeout".into(),
        Err(Error::Connect(_)) => "connect".into(),
        Err(_) => "transport".into(),
    };
    metrics::counter!("sentdm_client_requests_total", "method" => method.to_string(), "status" => status)
        .increment(1);
}

/// A failed attempt, as the retry loop sees it.
struct Failed {
    error: Error,
    retryable: bool,
    /// HTTP status, `None` for connect errors and timeouts.
    status: Option<u16>,
    retry_after: Option<Duration>,
}

impl Failed {
    /// Connect errors and timeouts may be retried; other transport errors may not.
    fn transport(error: Error, retryable_method: bool) -> Self {
        Self {
            retryable: retryable_method && matches!(error, Error::Timeout(_) | Error::Connect(_)),
            error,
            status: None,
            retry_after: None,
        }
    }
}

struct Req {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    key: Option<String>,
    sensitive: bool,
}

impl Req {
    fn new(method: Method, path: String) -> Self {
        Self {
            method,
            path,
            query: Vec::new(),
            body: None,
            key: None,
            sensitive: false,
        }
    }

    fn get(path: &str) -> Self {
        Self::new(Method::GET, path.to_owned())
    }

    fn page(mut self, p: PageRequest) -> Self {
        self.query.push(("page", p.page.to_string()));
        self.query.push(("page_size", p.page_size.to_string()));
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn key(mut self, key: &IdempotencyKey) -> Self {
        self.key = Some(key.0.clone());
        self
    }

    fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

/// Percent-encodes a path segment so an id can never change the path.
fn seg(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn classify(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout(e)
    } else if e.is_connect() {
        Error::Connect(e)
    } else {
        Error::Transport(e)
    }
}

fn should_retry(raw: &Raw) -> bool {
    match header_str(&raw.headers, "x-should-retry").as_deref() {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    let s = raw.status.as_u16();
    matches!(s, 408 | 409 | 429) || s >= 500
}

/// `retry-after-ms` or `Retry-After` (seconds or HTTP date), used only when in (0, 60] s.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let d = if let Some(ms) =
        header_str(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok())
    {
        Some(ms / 1000.0)
    } else {
        header_str(headers, "retry-after").and_then(|v| {
            v.trim().parse::<f64>().ok().or_else(|| {
                let when = time::OffsetDateTime::parse(
                    v.trim(),
                    &time::format_description::well_known::Rfc2822,
                )
                .ok()?;
                Some((when - time::OffsetDateTime::now_utc()).as_seconds_f64())
            })
        })
    }?;
    (d > 0.0 && d <= 60.0).then(|| Duration::from_secs_f64(d))
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn header_is_true(h: &HeaderMap, name: &str) -> bool {
    header_str(h, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorEnvelope {
    error: Option<ErrorBody>,
    meta: Option<Meta>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
    details: Option<BTreeMap<String, Value>>,
    doc_url: Option<String>,
}

fn api_error(raw: &Raw) -> ErrorResponse {
    let status = raw.status.as_u16();
    // Some error statuses come with an empty or non-JSON body (CONTRACT §1.2).
    let env: ErrorEnvelope = serde_json::from_slice(&raw.body).unwrap_or_default();
    let body = env.error.unwrap_or_default();
    let details = body
        .details
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let msgs = match v {
                Value::Array(a) => a
                    .into_iter()
                    .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
                    .collect(),
                Value::String(s) => vec![s],
                other => vec![other.to_string()],
            };
            (k, msgs)
        })
        .collect();
    ErrorResponse {
        status,
        code: body.code,
        message: body.message.unwrap_or_else(|| format!("HTTP {status}")),
        details,
        doc_url: body.doc_url,
        request_id: env
            .meta
            .and_then(|m| m.request_id)
            .or_else(|| header_str(&raw.headers, "x-request-id")),
        retry_after: retry_after(&raw.headers),
    }
}

/// Extracts `data` from the envelope; tolerates a bare object without an envelope.
fn data<T: DeserializeOwned>(raw: &Raw) -> Result<T> {
    let status = raw.status.as_u16();
    let decode = |reason: String| Error::Decode { status, reason };
    let v: Value = serde_json::from_slice(&raw.body).map_err(|e| decode(e.to_string()))?;
    let inner = match v {
        // `success` alone is not enough: the test endpoint's own data has a `success` key.
        Value::Object(mut m)
            if m.contains_key("data")
                || (m.contains_key("success")
                    && (m.contains_key("error") || m.contains_key("meta"))) =>
        {
            if m.get("success") == Some(&Value::Bool(false)) {
                return Err(api_error(raw).into());
            }
            m.remove("data").unwrap_or(Value::Null)
        }
        other => other,
    };
    serde_json::from_value(inner).map_err(|e| decode(e.to_string()))
}

fn page<T: DeserializeOwned>(raw: &Raw, key: &str) -> Result<Page<T>> {
    let mut v: Value = data(raw)?;
    let items = v
        .get_mut(key)
        .map(Value::take)
        .unwrap_or(Value::Array(Vec::new()));
    let items: Vec<T> = serde_json::from_value(items).map_err(|e| Error::Decode {
        status: raw.status.as_u16(),
        reason: format!("{key}: {e}"),
    })?;
    let pagination: Pagination = v
        .get_mut("pagination")
        .map(Value::take)
        .and_then(|p| serde_json::from_value(p).ok())
        .unwrap_or_default();
    Ok(Page { items, pagination })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_validated() {
        assert!(IdempotencyKey::new("abc_DEF-123").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("has space").is_err());
        assert!(IdempotencyKey::new("x".repeat(256)).is_err());
        let d = IdempotencyKey::derive(&["act", "b1"]);
        assert_eq!(d, IdempotencyKey::derive(&["act", "b1"]));
        assert_ne!(d, IdempotencyKey::derive(&["actb", "1"]));
        assert!(IdempotencyKey::new(d.as_str()).is_ok());
    }

    #[test]
    fn retry_after_bounds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", "120".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn debug_never_prints_the_key() {
        let cfg = ClientConfig::new("http://x", ApiKey::new("super-secret"));
        assert!(!format!("{cfg:?}").contains("super-secret"));
    }

    fn raw(status: u16, body: &str) -> Raw {
        Raw {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn tolerates_envelope_variants() {
        // Docs example: lowercase `accepted`, top-level `data.body`, unknown fields.
        let r = raw(
            202,
            r#"{"success":true,"data":{"status":"accepted","body":"hi","x":1,
                "recipients":[{"message_id":"m1","to":"+14155551234","channel":null}]},
                "error":null,"meta":{"request_id":"req_1","response_time_ms":3}}"#,
        );
        let s: SendMessageResponse = data(&r).unwrap();
        assert_eq!(s.status.as_deref(), Some("accepted"));
        assert_eq!(s.recipients[0].channel, None);
        // A bare object without an envelope.
        let t: WebhookTestResult = data(&raw(200, r#"{"success":true,"message":"ok"}"#)).unwrap();
        assert!(t.success);
        // Lowercase REST status.
        let m: Message = data(&raw(200, r#"{"data":{"id":"m","status":"delivered"}}"#)).unwrap();
        assert_eq!(m.status, Some(crate::model::MessageStatus::Delivered));
    }

    #[test]
    fn error_bodies_become_typed_errors() {
        let e = api_error(&raw(
            400,
            r#"{"success":false,"data":null,"error":{"code":"VALIDATION_002","message":"bad",
                "details":{"to":["not E.164"]},"doc_url":null},"meta":{"request_id":"req_9"}}"#,
        ));
        assert_eq!(e.kind(), ErrorKind::Validation);
        assert!(e.code_is("VALIDATION_002"));
        assert_eq!(e.details["to"], ["not E.164"]);
        assert_eq!(e.request_id.as_deref(), Some("req_9"));
        // Empty and non-JSON bodies are synthesised.
        for body in ["", "<html>Forbidden</html>"] {
            let e = api_error(&raw(403, body));
            assert_eq!((e.code.as_deref(), e.message.as_str()), (None, "HTTP 403"));
            assert_eq!(e.kind(), ErrorKind::Forbidden);
        }
        // `success: false` on a 2xx is still an error.
        let r = raw(
            200,
            r#"{"success":false,"error":{"code":"INTERNAL_001","message":"x"}}"#,
        );
        assert!(matches!(data::<Value>(&r), Err(Error::Api(_))));
    }

    #[test]
    fn should_retry_header_overrides_status() {
        let mut r = raw(503, "");
        assert!(should_retry(&r));
        r.headers.insert("x-should-retry", "false".parse().unwrap());
        assert!(!should_retry(&r));
        let mut r = raw(400, "");
        assert!(!should_retry(&r));
        r.headers.insert("x-should-retry", "true".parse().unwrap());
        assert!(should_retry(&r));
        assert!(should_retry(&raw(409, "")) && should_retry(&raw(408, "")));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_allows_burst_then_paces() {
        let l = Limiter::new(
            RateLimit {
                per_minute: 200,
                burst: 50,
            },
            "standard",
        );
        let start = tokio::time::Instant::now();
        for _ in 0..50 {
            assert_eq!(l.acquire().await, Duration::ZERO);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(l.acquire().await >= Duration::from_millis(300));
        // One token per 300 ms at 200/min; the paused clock makes this exact.
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(start.elapsed() < Duration::from_millis(310));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }
}
