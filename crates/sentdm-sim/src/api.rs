//! The `/v3` surface: one middleware for what SentDM does on every request (request ids,
//! faults, auth, rate limits, idempotency, headers) and thin handlers that validate the way
//! SentDM does and answer with its envelopes (CONTRACT §1, §2).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use rand::Rng as _;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::core::{
    self, AttemptOpts, EventStatus, Idem, MessageRec, Sim, Step, StoredResponse, WebhookRec, iso,
};
use super::{AccountKind, RecordedRequest};

tokio::task_local! {
    static CTX: Ctx;
}

#[derive(Clone)]
struct Ctx {
    request_id: String,
    now_ms: i64,
    /// The account the request acts as (a profile when `x-profile-id` was honoured).
    account: Uuid,
    profile: Option<Uuid>,
}

fn ctx() -> Ctx {
    CTX.try_with(Ctx::clone).unwrap_or_else(|_| Ctx {
        request_id: "req_unknown".into(),
        now_ms: 0,
        account: Uuid::nil(),
        profile: None,
    })
}

const MESSAGE_SUBTYPES: &[&str] = &[
    "queued",
    "routed",
    "sent",
    "delivered",
    "read",
    "failed",
    "blocked",
    "filtered",
    "scheduled",
    "cancelled",
    "received",
];
const FAMILIES: &[&str] = &["message", "templates", "contact", "channel", "link"];
const CHANNELS: &[&str] = &["sms", "whatsapp", "rcs", "mms", "sent"];

pub(crate) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/v3/me", get(me))
        .route("/v3/messages", post(send))
        .route("/v3/messages/{id}", get(get_message))
        .route("/v3/messages/{id}/activities", get(activities))
        .route("/v3/templates", get(list_templates))
        .route("/v3/templates/{id}", get(get_template))
        .route("/v3/webhooks", get(list_webhooks).post(create_webhook))
        .route("/v3/webhooks/event-types", get(event_types))
        .route(
            "/v3/webhooks/{id}",
            get(get_webhook).put(update_webhook).delete(delete_webhook),
        )
        .route("/v3/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/v3/webhooks/{id}/test", post(test_webhook))
        .route("/v3/webhooks/{id}/toggle-status", patch(toggle_webhook))
        .route("/v3/webhooks/{id}/events", get(webhook_events))
        .route("/v3/{*rest}", axum::routing::any(unknown_route))
        .layer(middleware::from_fn_with_state(sim.clone(), v3_middleware))
        .with_state(sim)
}

/// A SentDM error: status plus `{code, message, details}`.
#[derive(Debug)]
struct SimError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    details: Option<Value>,
}

impl SimError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            details: None,
        }
    }

    fn field(mut self, field: &str, msg: &str) -> Self {
        self.details = Some(json!({ field: [msg] }));
        self
    }

    fn bad(code: &'static str, field: &str, msg: impl Into<String>) -> Self {
        let msg = msg.into();
        Self::new(StatusCode::BAD_REQUEST, code, msg.clone()).field(field, &msg)
    }

    fn not_found(code: &'static str, what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, format!("{what} not found"))
    }
}

fn envelope(ctx: &Ctx, data: Value, error: Value) -> Value {
    json!({
        "success": error.is_null(),
        "data": data,
        "error": error,
        "meta": {"request_id": ctx.request_id, "timestamp": iso(ctx.now_ms), "version": "v3"},
    })
}

fn error_response(ctx: &Ctx, e: &SimError) -> Response {
    let err = json!({
        "code": e.code, "message": e.message, "details": e.details,
        "doc_url": format!("https://docs.sent.dm/errors/{}", e.code),
    });
    (e.status, axum::Json(envelope(ctx, Value::Null, err))).into_response()
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        error_response(&ctx(), &self)
    }
}

fn reply(status: StatusCode, data: Value, sandbox: bool) -> Response {
    let mut r = (status, axum::Json(envelope(&ctx(), data, Value::Null))).into_response();
    if sandbox {
        r.headers_mut()
            .insert("x-sandbox", HeaderValue::from_static("true"));
    }
    r
}

type R = Result<Response, SimError>;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn valid_idempotency_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 255
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

struct Limits {
    /// Seconds until one token is available again.
    retry_after_s: i64,
    limit: u32,
    remaining: u32,
    reset_s: i64,
}

/// Token bucket per (account, sensitive) on the simulator clock.
fn take_token(sim: &Sim, account: Uuid, sensitive: bool, now: i64) -> (bool, Limits) {
    let (per_min, burst) = if sensitive {
        (10.0, 5.0)
    } else {
        (200.0, 50.0)
    };
    let rate_ms = per_min / 60_000.0;
    let mut st = sim.st();
    let b = st
        .buckets
        .entry((account, sensitive))
        .or_insert((burst, now));
    b.0 = (b.0 + (now - b.1).max(0) as f64 * rate_ms).min(burst);
    b.1 = now;
    let ok = !sim.cfg.rate_limits || b.0 >= 1.0;
    if ok && sim.cfg.rate_limits {
        b.0 -= 1.0;
    }
    let to_full_ms = ((burst - b.0) / rate_ms) as i64;
    let next_token_ms = ((1.0 - b.0).max(0.0) / rate_ms) as i64;
    (
        ok,
        Limits {
            retry_after_s: (next_token_ms + 999) / 1000,
            limit: per_min as u32,
            remaining: if sim.cfg.rate_limits {
                b.0 as u32
            } else {
                per_min as u32
            },
            reset_s: (now + to_full_ms).div_euclid(1000) + 1,
        },
    )
}

/// The error an injected fault answers with: SentDM's usual code for the status unless
/// the fault names one (e.g. 422 `BUSINESS_004`, the legacy synchronous rejections).
fn fault_error(status: u16, code: Option<String>) -> SimError {
    let (default_code, message) = match status {
        400 => ("VALIDATION_001", "Simulated validation error"),
        401 => ("AUTH_002", "Invalid API key"),
        403 => ("AUTH_004", "Simulated forbidden"),
        404 => ("RESOURCE_001", "Resource not found"),
        409 => (
            "CONFLICT_001",
            "A request with this Idempotency-Key is still being processed",
        ),
        422 => ("BUSINESS_003", "Insufficient balance"),
        429 => ("BUSINESS_002", "Rate limit exceeded"),
        503 => ("SERVICE_001", "Service unavailable"),
        _ => ("INTERNAL_001", "Simulated server error"),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut e = SimError::new(status, default_code, message);
    if let Some(c) = code {
        e.code = Cow::Owned(c);
    }
    e
}

struct FiredFault {
    status: u16,
    retry_after_secs: u64,
    code: Option<String>,
}

fn take_api_fault(sim: &Sim, method: &str, path: &str, after: bool) -> Option<FiredFault> {
    let mut st = sim.st();
    let f = st
        .api_faults
        .iter_mut()
        .find(|f| f.matches(method, path, after))?;
    f.times -= 1;
    let out = FiredFault {
        status: f.status,
        retry_after_secs: f.retry_after_secs.unwrap_or(1),
        code: f.code.clone(),
    };
    st.api_faults.retain(|f| f.times > 0);
    Some(out)
}

fn fault_response(ctx: &Ctx, f: FiredFault) -> Response {
    let status = f.status;
    let r = error_response(ctx, &fault_error(status, f.code));
    if status == 429 {
        with_retry_after(r, f.retry_after_secs)
    } else {
        r
    }
}

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

async fn v3_middleware(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let now = sim.now_ms();
    let request_id = sim.st().request_id();
    let mut ctx = Ctx {
        request_id,
        now_ms: now,
        account: Uuid::nil(),
        profile: None,
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        let e = SimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "VALIDATION_001",
            "Body too large",
        );
        return finish(error_response(&ctx, &e), &ctx, None);
    };
    let idem_key = header(&parts.headers, "idempotency-key").map(str::to_owned);
    let latency = {
        let mut st = sim.st();
        // Bounded so a long-running simulator does not grow without limit.
        if st.requests.len() >= core::LOG_CAP {
            st.requests.drain(..core::LOG_CAP / 10);
        }
        st.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_owned),
            idempotency_key: idem_key.clone(),
            body: serde_json::from_slice(&bytes).ok(),
        });
        st.faults.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    // Injected faults answer before anything else, the way an overloaded edge would.
    let random_fault = {
        let mut st = sim.st();
        let (e, r) = (st.faults.api_error_rate, st.faults.api_rate_limit_rate);
        if r > 0.0 && st.rng.random::<f64>() < r {
            Some(FiredFault {
                status: 429,
                retry_after_secs: st.faults.retry_after_secs.max(1),
                code: None,
            })
        } else if e > 0.0 && st.rng.random::<f64>() < e {
            Some(FiredFault {
                status: 503,
                retry_after_secs: 0,
                code: None,
            })
        } else {
            None
        }
    };
    if let Some(f) = random_fault.or_else(|| take_api_fault(&sim, method.as_str(), &path, false)) {
        return finish(fault_response(&ctx, f), &ctx, None);
    }

    let Some(key) = header(&parts.headers, "x-api-key").filter(|k| !k.is_empty()) else {
        let e = SimError::new(StatusCode::UNAUTHORIZED, "AUTH_001", "API key is required");
        return finish(error_response(&ctx, &e), &ctx, None);
    };
    let found = sim
        .st()
        .accounts
        .iter()
        .find(|a| a.key.as_deref() == Some(key))
        .cloned();
    let Some(acct) = found else {
        let e = SimError::new(StatusCode::UNAUTHORIZED, "AUTH_002", "Invalid API key");
        return finish(error_response(&ctx, &e), &ctx, None);
    };
    ctx.account = acct.id;
    // An organization and its profiles share one rate-limit pool.
    let mut pool = acct.organization_id.unwrap_or(acct.id);
    if let Some(raw) = parts.headers.get("x-profile-id") {
        match act_as_profile(&sim, &acct, raw) {
            Ok(profile) => {
                ctx.account = profile;
                ctx.profile = Some(profile);
                pool = acct.id;
            }
            Err(e) => return finish(error_response(&ctx, &e), &ctx, None),
        }
    }
    let account = ctx.account;

    let sensitive =
        method == Method::POST && (path.ends_with("/rotate-secret") || path.ends_with("/test"));
    let (allowed, limits) = take_token(&sim, pool, sensitive, now);
    if !allowed {
        let e = SimError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "BUSINESS_002",
            "Rate limit exceeded",
        );
        let wait = limits.retry_after_s.clamp(1, 60) as u64;
        let r = with_retry_after(error_response(&ctx, &e), wait);
        return finish(r, &ctx, Some(&limits));
    }

    let mutation = method != Method::GET && method != Method::HEAD;
    let idem = match idem_key.filter(|_| mutation) {
        Some(k) if !valid_idempotency_key(&k) => {
            let e = SimError::bad(
                "VALIDATION_007",
                "Idempotency-Key",
                "Idempotency-Key must match ^[A-Za-z0-9_-]{1,255}$",
            );
            return finish(error_response(&ctx, &e), &ctx, Some(&limits));
        }
        Some(k) => {
            let slot = (account, k);
            let mut st = sim.st();
            match st.idem.get(&slot) {
                Some(Idem::Done(stored)) => {
                    let stored = stored.clone();
                    drop(st);
                    return finish(replay(&stored), &ctx, Some(&limits));
                }
                Some(Idem::InFlight) => {
                    drop(st);
                    let e = SimError::new(
                        StatusCode::CONFLICT,
                        "CONFLICT_001",
                        "A request with this Idempotency-Key is still being processed",
                    );
                    return finish(error_response(&ctx, &e), &ctx, Some(&limits));
                }
                None => {
                    st.idem.insert(slot.clone(), Idem::InFlight);
                    Some(slot)
                }
            }
        }
        None => None,
    };

    let req = Request::from_parts(parts, Body::from(bytes));
    let mut resp = CTX.scope(ctx.clone(), next.run(req)).await;

    if let Some(slot) = idem {
        let (p, b) = resp.into_parts();
        let body = axum::body::to_bytes(b, usize::MAX)
            .await
            .unwrap_or_default();
        let status = p.status.as_u16();
        let mut st = sim.st();
        if status < 500 && status != 409 && status != 429 {
            let stored = StoredResponse {
                status,
                body: body.clone(),
                request_id: ctx.request_id.clone(),
                sandbox: p.headers.contains_key("x-sandbox"),
            };
            st.idem.insert(slot, Idem::Done(stored));
        } else {
            st.idem.remove(&slot);
        }
        resp = Response::from_parts(p, Body::from(body));
    }

    if let Some(f) = take_api_fault(&sim, method.as_str(), &path, true) {
        resp = fault_response(&ctx, f);
    }
    finish(resp, &ctx, Some(&limits))
}

/// `x-profile-id`: only an organization key may send it, and only for its own profiles.
fn act_as_profile(sim: &Sim, acct: &core::AccountRec, raw: &HeaderValue) -> Result<Uuid, SimError> {
    let value = raw.to_str().unwrap_or_default().trim();
    if value.is_empty() {
        return Err(SimError::bad(
            "VALIDATION_001",
            "x-profile-id",
            "x-profile-id must not be empty",
        ));
    }
    if acct.kind != AccountKind::Organization {
        return Err(SimError::new(
            StatusCode::FORBIDDEN,
            "AUTH_004",
            "x-profile-id may only be used with an organization API key",
        ));
    }
    let id: Uuid = value.parse().map_err(|_| {
        SimError::bad(
            "VALIDATION_003",
            "x-profile-id",
            "x-profile-id must be a UUID",
        )
    })?;
    let owned = sim.st().accounts.iter().any(|a| {
        a.id == id && a.kind == AccountKind::Profile && a.organization_id == Some(acct.id)
    });
    if !owned {
        return Err(SimError::not_found("RESOURCE_001", "Profile"));
    }
    Ok(id)
}

fn replay(stored: &StoredResponse) -> Response {
    let mut r = Response::new(Body::from(stored.body.clone()));
    *r.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    if !stored.body.is_empty() {
        h.insert("content-type", HeaderValue::from_static("application/json"));
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if let Ok(v) = HeaderValue::from_str(&stored.request_id) {
        h.insert("x-original-request-id", v);
    }
    if stored.sandbox {
        h.insert("x-sandbox", HeaderValue::from_static("true"));
    }
    r
}

fn finish(mut r: Response, ctx: &Ctx, limits: Option<&Limits>) -> Response {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        h.insert("x-request-id", v);
    }
    h.insert("x-api-version", HeaderValue::from_static("v3"));
    if let Some(p) = ctx.profile
        && let Ok(v) = HeaderValue::from_str(&p.to_string())
    {
        h.insert("x-profile-id", v);
    }
    if let Some(l) = limits {
        for (k, v) in [
            ("x-ratelimit-limit", l.limit.to_string()),
            ("x-ratelimit-remaining", l.remaining.to_string()),
            ("x-ratelimit-reset", l.reset_s.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
    }
    r
}

// ---- request parsing helpers ----

fn body_object(bytes: &Bytes) -> Result<Map<String, Value>, SimError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(SimError::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_001",
            "Request body must be a JSON object",
        )),
    }
}

fn sandbox_of(b: &Map<String, Value>) -> Result<bool, SimError> {
    match b.get("sandbox") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(v)) => Ok(*v),
        Some(_) => Err(SimError::bad(
            "VALIDATION_001",
            "sandbox",
            "sandbox must be a boolean",
        )),
    }
}

fn parse_id(raw: &str, thing: &str) -> Result<Uuid, SimError> {
    raw.parse().map_err(|_| {
        SimError::bad(
            "VALIDATION_001",
            "id",
            format!("Invalid {thing} ID format."),
        )
    })
}

type Q = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query(q: Q) -> Result<HashMap<String, String>, SimError> {
    q.map(|Query(q)| q).map_err(|_| {
        SimError::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_001",
            "Invalid query string",
        )
    })
}

fn paging(q: &HashMap<String, String>) -> Result<(usize, usize), SimError> {
    let num = |k: &str, default: usize| -> Result<usize, SimError> {
        match q.get(k) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| SimError::bad("VALIDATION_001", k, format!("{k} must be an integer"))),
        }
    };
    let page = num("page", 1)?;
    let size = num("page_size", 20)?;
    if page < 1 {
        return Err(SimError::bad(
            "VALIDATION_001",
            "page",
            "page must be at least 1",
        ));
    }
    if !(1..=100).contains(&size) {
        return Err(SimError::bad(
            "VALIDATION_001",
            "page_size",
            "page_size must be between 1 and 100",
        ));
    }
    Ok((page, size))
}

fn paginate(items: Vec<Value>, page: usize, size: usize) -> (Vec<Value>, Value) {
    let total = items.len();
    let pages = total.div_ceil(size);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    let p = json!({
        "page": page, "page_size": size, "total_count": total, "total_pages": pages,
        "has_more": page < pages, "cursors": null,
    });
    (slice, p)
}

fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

// ---- handlers ----

async fn unknown_route() -> SimError {
    SimError::new(StatusCode::NOT_FOUND, "RESOURCE_001", "Resource not found")
}

async fn me(State(sim): State<Sim>) -> Response {
    let c = ctx();
    let st = sim.st();
    let created = st.templates.first().map_or(0, |t| t.created_ms);
    let acct = st.accounts.iter().find(|a| a.id == c.account).cloned();
    let (kind, name, org) = match &acct {
        Some(a) => (a.kind, a.name.clone(), a.organization_id),
        None => (AccountKind::User, "Simulated Account".to_owned(), None),
    };
    let profiles: Vec<Value> = if kind == AccountKind::Organization {
        st.accounts
            .iter()
            .filter(|a| a.kind == AccountKind::Profile && a.organization_id == Some(c.account))
            .map(|a| json!({"id": a.id, "name": a.name, "status": "approved"}))
            .collect()
    } else {
        Vec::new()
    };
    let mut data = json!({
        "type": match kind {
            AccountKind::User => "user",
            AccountKind::Organization => "organization",
            AccountKind::Profile => "profile",
        },
        "id": c.account, "name": name, "email": "sim@sentdm.invalid",
        "icon": null, "description": null, "created_at": iso(created),
        "channels": {
            "sms": {"configured": true, "phone_number": core::SMS_NUMBER},
            "whatsapp": {"configured": true, "phone_number": core::SMS_NUMBER, "business_name": "Simulated"},
            "rcs": {"configured": false},
        },
        "sending_phone_number": core::SMS_NUMBER, "status": "approved", "settings": {},
        "profiles": profiles,
    });
    if kind == AccountKind::Profile {
        data["organization_id"] = json!(org);
        data["short_name"] = json!("SIM");
    }
    drop(st);
    reply(StatusCode::OK, data, false)
}

struct SendSpec {
    to: Vec<String>,
    channels: Vec<String>,
    auto_channel: bool,
    template: Option<(Option<String>, Option<String>)>,
    params: BTreeMap<String, String>,
    text: Option<String>,
    sandbox: bool,
    scheduled_at_ms: Option<i64>,
}

fn parse_send(b: &Map<String, Value>, now: i64) -> Result<SendSpec, SimError> {
    let to = match b.get("to") {
        None | Some(Value::Null) => {
            return Err(SimError::bad(
                "VALIDATION_004",
                "to",
                "The to field is required.",
            ));
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(SimError::bad("VALIDATION_001", "to", "to must be an array")),
    };
    if to.is_empty() {
        return Err(SimError::bad(
            "VALIDATION_004",
            "to",
            "At least one recipient is required.",
        ));
    }
    let mut recipients = Vec::with_capacity(to.len());
    for v in to {
        match v.as_str() {
            Some(s) if is_e164(s) => recipients.push(s.to_owned()),
            _ => {
                return Err(SimError::bad(
                    "VALIDATION_002",
                    "to",
                    format!("Invalid phone number format: {v}. Use E.164, e.g. +14155551234."),
                ));
            }
        }
    }
    let (channels, auto_channel) = match b.get("channel") {
        None | Some(Value::Null) => (vec!["sms".to_owned()], true),
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut out = Vec::new();
            for c in a {
                match c.as_str() {
                    Some(c) if CHANNELS.contains(&c) => out.push(c.to_owned()),
                    _ => {
                        return Err(SimError::bad(
                            "VALIDATION_006",
                            "channel",
                            format!("Invalid channel {c}. Allowed: sms, whatsapp, rcs, mms, sent."),
                        ));
                    }
                }
            }
            if out.iter().any(|c| c == "mms") && b.get("media_urls").is_none() {
                return Err(SimError::bad(
                    "VALIDATION_001",
                    "media_urls",
                    "mms requires media_urls",
                ));
            }
            let auto = out.iter().all(|c| c == "sent");
            let real: Vec<String> = out.into_iter().filter(|c| c != "sent").collect();
            if real.is_empty() {
                (vec!["sms".to_owned()], auto)
            } else {
                (real, false)
            }
        }
        Some(_) => {
            return Err(SimError::bad(
                "VALIDATION_001",
                "channel",
                "channel must be a non-empty array of strings",
            ));
        }
    };
    let text = match b.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(SimError::bad(
                "VALIDATION_001",
                "text",
                "text must be a string",
            ));
        }
    };
    let mut params = BTreeMap::new();
    let template = match b.get("template") {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => {
            let id = match t.get("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.parse::<Uuid>().is_ok() => Some(s.clone()),
                Some(_) => {
                    return Err(SimError::bad(
                        "VALIDATION_003",
                        "template.id",
                        "template.id must be a UUID",
                    ));
                }
            };
            let name = t.get("name").and_then(Value::as_str).map(str::to_owned);
            if id.is_none() && name.is_none() {
                return Err(SimError::bad(
                    "VALIDATION_004",
                    "template",
                    "template.id or template.name is required",
                ));
            }
            match t.get("parameters") {
                None | Some(Value::Null) => {}
                Some(Value::Object(p)) => {
                    for (k, v) in p {
                        let Some(s) = v.as_str() else {
                            return Err(SimError::bad(
                                "VALIDATION_001",
                                &format!("template.parameters.{k}"),
                                "template parameter values must be strings",
                            ));
                        };
                        params.insert(k.clone(), s.to_owned());
                    }
                }
                Some(_) => {
                    return Err(SimError::bad(
                        "VALIDATION_001",
                        "template.parameters",
                        "template.parameters must be an object",
                    ));
                }
            }
            Some((id, name))
        }
        Some(_) => {
            return Err(SimError::bad(
                "VALIDATION_001",
                "template",
                "template must be an object",
            ));
        }
    };
    match (&template, &text) {
        (None, None) => {
            return Err(SimError::bad(
                "VALIDATION_004",
                "template",
                "Either template or text is required",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(SimError::bad(
                "VALIDATION_001",
                "text",
                "Provide either template or text, not both",
            ));
        }
        _ => {}
    }
    let scheduled_at_ms = match b.get("scheduled_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    SimError::bad(
                        "VALIDATION_001",
                        "scheduled_at",
                        "scheduled_at must be ISO-8601 with an offset",
                    )
                })?;
            let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
            if ms < now + 60_000 || ms > now + 30 * 86_400_000 {
                return Err(SimError::bad(
                    "VALIDATION_005",
                    "scheduled_at",
                    "scheduled_at must be between 1 minute and 30 days ahead",
                ));
            }
            Some(ms)
        }
        Some(_) => {
            return Err(SimError::bad(
                "VALIDATION_001",
                "scheduled_at",
                "scheduled_at must be a string",
            ));
        }
    };
    Ok(SendSpec {
        to: recipients,
        channels,
        auto_channel,
        template,
        params,
        text,
        sandbox: sandbox_of(b)?,
        scheduled_at_ms,
    })
}

async fn send(State(sim): State<Sim>, body: Bytes) -> R {
    let c = ctx();
    let b = body_object(&body)?;
    let spec = parse_send(&b, c.now_ms)?;
    let mut st = sim.st();
    let template = match &spec.template {
        Some((id, name)) => Some(
            st.find_template(id.as_deref(), name.as_deref())
                .cloned()
                .ok_or_else(|| SimError::not_found("RESOURCE_002", "Template"))?,
        ),
        None => None,
    };
    let missing: Vec<String> = template
        .as_ref()
        .map(|t| {
            t.variables
                .iter()
                .filter(|v| !spec.params.contains_key(*v))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let rendered = match &template {
        Some(t) => t.render(&spec.params),
        None => spec.text.clone().unwrap_or_default(),
    };
    let mut recipients = Vec::new();
    let mut created = Vec::new();
    for to in &spec.to {
        for channel in &spec.channels {
            let id = st.new_id();
            recipients.push(json!({
                "message_id": id, "to": to,
                "channel": if spec.auto_channel { Value::Null } else { json!(channel) },
                "body": if spec.auto_channel { Value::Null } else { json!(rendered) },
            }));
            if spec.sandbox {
                continue;
            }
            let plan = core::plan_for(
                to,
                channel,
                template.as_ref(),
                &missing,
                sim.cfg.read_receipts,
                spec.scheduled_at_ms,
            );
            st.messages.insert(
                id,
                MessageRec {
                    id,
                    account_id: c.account,
                    to: to.clone(),
                    channel: channel.clone(),
                    template_id: template.as_ref().map(|t| t.id),
                    template_name: template.as_ref().map(|t| t.name.clone()),
                    template_category: template.as_ref().map(|t| t.category.clone()),
                    body: Some(rendered.clone()),
                    status: "QUEUED".into(),
                    reason_code: None,
                    reason: None,
                    scheduled_at_ms: spec.scheduled_at_ms,
                    created_ms: c.now_ms,
                    events: Vec::new(),
                    plan,
                },
            );
            created.push(id);
        }
    }
    for id in created {
        core::apply_status(
            &sim,
            &mut st,
            id,
            Step {
                status: "QUEUED",
                reason_code: None,
                reason: None,
                hold_until_ms: None,
            },
        );
    }
    drop(st);
    sim.wake.notify_one();
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({
            "status": "QUEUED",
            "template_id": template.as_ref().map(|t| t.id),
            "template_name": template.as_ref().map(|t| t.name.clone()),
            "recipients": recipients,
        }),
        spec.sandbox,
    ))
}

async fn get_message(State(sim): State<Sim>, Path(id): Path<String>) -> R {
    let id = parse_id(&id, "message")?;
    let st = sim.st();
    let m = st
        .messages
        .get(&id)
        .filter(|m| m.account_id == ctx().account)
        .ok_or_else(|| SimError::not_found("RESOURCE_003", "Message"))?;
    Ok(reply(StatusCode::OK, m.json(), false))
}

async fn activities(State(sim): State<Sim>, Path(id): Path<String>) -> R {
    let id = parse_id(&id, "message")?;
    let st = sim.st();
    let m = st
        .messages
        .get(&id)
        .filter(|m| m.account_id == ctx().account)
        .ok_or_else(|| SimError::not_found("RESOURCE_003", "Message"))?;
    Ok(reply(StatusCode::OK, m.activities_json(), false))
}

async fn list_templates(State(sim): State<Sim>, q: Q) -> R {
    let q = query(q)?;
    let (page, size) = paging(&q)?;
    let status = q.get("status").filter(|s| !s.is_empty());
    if let Some(s) = status
        && !["APPROVED", "PENDING", "REJECTED"].contains(&s.as_str())
    {
        return Err(SimError::bad(
            "VALIDATION_006",
            "status",
            "status must be one of APPROVED, PENDING, REJECTED",
        ));
    }
    let category = q.get("category").filter(|s| !s.is_empty());
    if let Some(c) = category
        && !["MARKETING", "UTILITY", "AUTHENTICATION"].contains(&c.as_str())
    {
        return Err(SimError::bad(
            "VALIDATION_006",
            "category",
            "category must be one of MARKETING, UTILITY, AUTHENTICATION",
        ));
    }
    let search = q.get("search").map(|s| s.to_lowercase());
    let items: Vec<Value> = sim
        .st()
        .templates
        .iter()
        .filter(|t| status.is_none_or(|s| *s == t.status))
        .filter(|t| category.is_none_or(|c| *c == t.category))
        .filter(|t| {
            search
                .as_deref()
                .is_none_or(|s| t.name.to_lowercase().contains(s))
        })
        .map(|t| {
            let mut v = t.json();
            if let Some(m) = v.as_object_mut() {
                m.remove("definition");
            }
            v
        })
        .collect();
    let (items, pagination) = paginate(items, page, size);
    Ok(reply(
        StatusCode::OK,
        json!({"templates": items, "pagination": pagination}),
        false,
    ))
}

async fn get_template(State(sim): State<Sim>, Path(id): Path<String>) -> R {
    let id = parse_id(&id, "template")?;
    let st = sim.st();
    let t = st
        .templates
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| SimError::not_found("RESOURCE_002", "Template"))?;
    Ok(reply(StatusCode::OK, t.json(), false))
}

struct WebhookSpec {
    display_name: String,
    endpoint_url: String,
    event_types: Vec<String>,
    event_filters: Option<BTreeMap<String, Vec<String>>>,
    retry_count: u32,
    timeout_seconds: u32,
}

fn family(name: &str) -> Option<String> {
    let n = if name == "messages" { "message" } else { name };
    FAMILIES.contains(&n).then(|| n.to_owned())
}

fn int_in(
    b: &Map<String, Value>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
) -> Result<u32, SimError> {
    let out_of_range = || {
        SimError::bad(
            "VALIDATION_005",
            key,
            format!(
                "{key} must be between {} and {}",
                range.start(),
                range.end()
            ),
        )
    };
    match b.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(-1.0);
            if f.fract() != 0.0 {
                return Err(out_of_range());
            }
            let v = f as i64;
            u32::try_from(v)
                .ok()
                .filter(|v| range.contains(v))
                .ok_or_else(out_of_range)
        }
        Some(_) => Err(SimError::bad(
            "VALIDATION_001",
            key,
            format!("{key} must be an integer"),
        )),
    }
}

fn parse_webhook(b: &Map<String, Value>, allow_http: bool) -> Result<WebhookSpec, SimError> {
    let display_name = match b.get("display_name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => {
            return Err(SimError::bad(
                "VALIDATION_004",
                "display_name",
                "The display_name field is required.",
            ));
        }
    };
    let url_err = || {
        SimError::bad(
            "VALIDATION_001",
            "endpoint_url",
            "Endpoint URL must be a valid HTTP or HTTPS URL",
        )
    };
    let endpoint_url = match b.get("endpoint_url") {
        None | Some(Value::Null) => {
            return Err(SimError::bad(
                "VALIDATION_004",
                "endpoint_url",
                "The endpoint_url field is required.",
            ));
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(url_err()),
    };
    let url = reqwest::Url::parse(&endpoint_url).map_err(|_| url_err())?;
    let loopback = matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    match url.scheme() {
        "https" => {}
        "http" if loopback || allow_http => {}
        _ => return Err(url_err()),
    }
    let types = match b.get("event_types") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(SimError::bad(
                "VALIDATION_004",
                "event_types",
                "At least one event type is required.",
            ));
        }
    };
    let mut event_types: Vec<String> = Vec::new();
    for t in types {
        let f = t.as_str().and_then(family).ok_or_else(|| {
            SimError::bad(
                "VALIDATION_006",
                "event_types",
                format!("Unknown event type {t}"),
            )
        })?;
        if !event_types.contains(&f) {
            event_types.push(f);
        }
    }
    let event_filters = match b.get("event_filters") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let f = family(k).ok_or_else(|| {
                    SimError::bad(
                        "VALIDATION_006",
                        "event_filters",
                        format!("Unknown event type {k}"),
                    )
                })?;
                let Value::Array(list) = v else {
                    return Err(SimError::bad(
                        "VALIDATION_001",
                        "event_filters",
                        "event_filters values must be arrays",
                    ));
                };
                let mut subs = Vec::new();
                for s in list {
                    let ok = s
                        .as_str()
                        .filter(|s| f != "message" || MESSAGE_SUBTYPES.contains(s));
                    let Some(s) = ok else {
                        return Err(SimError::bad(
                            "VALIDATION_006",
                            "event_filters",
                            format!("Unknown sub-type {s} for {f}"),
                        ));
                    };
                    subs.push(s.to_owned());
                }
                out.insert(f, subs);
            }
            (!out.is_empty()).then_some(out)
        }
        Some(_) => {
            return Err(SimError::bad(
                "VALIDATION_001",
                "event_filters",
                "event_filters must be an object",
            ));
        }
    };
    Ok(WebhookSpec {
        display_name,
        endpoint_url,
        event_types,
        event_filters,
        retry_count: int_in(b, "retry_count", 1..=5, 3)?,
        timeout_seconds: int_in(b, "timeout_seconds", 5..=120, 30)?,
    })
}

async fn list_webhooks(State(sim): State<Sim>, q: Q) -> R {
    let q = query(q)?;
    let (page, size) = paging(&q)?;
    let is_active = match q.get("is_active").map(String::as_str) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(SimError::bad(
                "VALIDATION_001",
                "is_active",
                "is_active must be true or false",
            ));
        }
    };
    let search = q.get("search").map(|s| s.to_lowercase());
    let account = ctx().account;
    let with_secret = sim.cfg.signing_secret_in_reads;
    let items: Vec<Value> = sim
        .st()
        .webhooks
        .iter()
        .filter(|w| w.account_id == account)
        .filter(|w| is_active.is_none_or(|a| a == w.is_active))
        .filter(|w| {
            search.as_deref().is_none_or(|s| {
                w.display_name.to_lowercase().contains(s) || w.endpoint_url.contains(s)
            })
        })
        .map(|w| w.json(with_secret))
        .collect();
    let (items, pagination) = paginate(items, page, size);
    Ok(reply(
        StatusCode::OK,
        json!({"webhooks": items, "pagination": pagination}),
        false,
    ))
}

async fn create_webhook(State(sim): State<Sim>, body: Bytes) -> R {
    let c = ctx();
    let b = body_object(&body)?;
    let spec = parse_webhook(&b, sim.cfg.allow_http_webhooks)?;
    let sandbox = sandbox_of(&b)?;
    let mut st = sim.st();
    let w = WebhookRec {
        id: st.new_id(),
        account_id: c.account,
        display_name: spec.display_name,
        endpoint_url: spec.endpoint_url,
        secret: st.new_secret(),
        is_active: true,
        event_types: spec.event_types,
        event_filters: spec.event_filters,
        retry_count: spec.retry_count,
        timeout_seconds: spec.timeout_seconds,
        last_attempt_ms: None,
        last_success_ms: None,
        consecutive_failures: 0,
        created_ms: c.now_ms,
        updated_ms: None,
    };
    let data = w.json(true);
    if !sandbox {
        st.webhooks.push(w);
    }
    Ok(reply(StatusCode::OK, data, sandbox))
}

fn webhook_id(raw: &str) -> Result<Uuid, SimError> {
    parse_id(raw, "webhook")
}

fn missing_webhook() -> SimError {
    SimError::not_found("RESOURCE_008", "Webhook")
}

async fn get_webhook(State(sim): State<Sim>, Path(id): Path<String>) -> R {
    let id = webhook_id(&id)?;
    let st = sim.st();
    let w = st.webhook(ctx().account, id).ok_or_else(missing_webhook)?;
    Ok(reply(
        StatusCode::OK,
        w.json(sim.cfg.signing_secret_in_reads),
        false,
    ))
}

async fn update_webhook(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> R {
    let c = ctx();
    let id = webhook_id(&id)?;
    let b = body_object(&body)?;
    let mut st = sim.st();
    if st.webhook(c.account, id).is_none() {
        return Err(missing_webhook());
    }
    let spec = parse_webhook(&b, sim.cfg.allow_http_webhooks)?;
    let sandbox = sandbox_of(&b)?;
    let with_secret = sim.cfg.signing_secret_in_reads;
    let w = st.webhook_mut(c.account, id).ok_or_else(missing_webhook)?;
    if sandbox {
        let mut preview = w.json(with_secret);
        preview["display_name"] = json!(spec.display_name);
        preview["endpoint_url"] = json!(spec.endpoint_url);
        preview["event_types"] = json!(spec.event_types);
        preview["event_filters"] = json!(spec.event_filters);
        preview["retry_count"] = json!(spec.retry_count);
        preview["timeout_seconds"] = json!(spec.timeout_seconds);
        return Ok(reply(StatusCode::OK, preview, true));
    }
    w.display_name = spec.display_name;
    w.endpoint_url = spec.endpoint_url;
    w.event_types = spec.event_types;
    w.event_filters = spec.event_filters;
    w.retry_count = spec.retry_count;
    w.timeout_seconds = spec.timeout_seconds;
    w.updated_ms = Some(c.now_ms);
    Ok(reply(StatusCode::OK, w.json(with_secret), false))
}

async fn delete_webhook(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> R {
    let c = ctx();
    let id = webhook_id(&id)?;
    let sandbox = sandbox_of(&body_object(&body)?)?;
    let mut st = sim.st();
    if st.webhook(c.account, id).is_none() {
        return Err(missing_webhook());
    }
    if !sandbox {
        st.webhooks.retain(|w| w.id != id);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if sandbox {
        r.headers_mut()
            .insert("x-sandbox", HeaderValue::from_static("true"));
    }
    Ok(r)
}

async fn rotate_secret(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> R {
    let c = ctx();
    let id = webhook_id(&id)?;
    let sandbox = sandbox_of(&body_object(&body)?)?;
    let mut st = sim.st();
    if st.webhook(c.account, id).is_none() {
        return Err(missing_webhook());
    }
    let secret = st.new_secret();
    let data = json!({"signing_secret": secret.expose()});
    if !sandbox && let Some(w) = st.webhook_mut(c.account, id) {
        w.secret = secret;
        w.updated_ms = Some(c.now_ms);
    }
    Ok(reply(StatusCode::OK, data, sandbox))
}

async fn toggle_webhook(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> R {
    let c = ctx();
    let id = webhook_id(&id)?;
    let b = body_object(&body)?;
    let Some(active) = b.get("is_active").and_then(Value::as_bool) else {
        return Err(SimError::bad(
            "VALIDATION_004",
            "is_active",
            "The is_active field is required.",
        ));
    };
    let sandbox = sandbox_of(&b)?;
    let with_secret = sim.cfg.signing_secret_in_reads;
    let mut st = sim.st();
    let w = st.webhook_mut(c.account, id).ok_or_else(missing_webhook)?;
    if sandbox {
        let mut preview = w.json(with_secret);
        preview["is_active"] = json!(active);
        return Ok(reply(StatusCode::OK, preview, true));
    }
    if active && !w.is_active {
        w.consecutive_failures = 0;
    }
    w.is_active = active;
    w.updated_ms = Some(c.now_ms);
    Ok(reply(StatusCode::OK, w.json(with_secret), false))
}

async fn test_webhook(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> R {
    let c = ctx();
    let id = webhook_id(&id)?;
    let b = body_object(&body)?;
    let sandbox = sandbox_of(&b)?;
    if sim.st().webhook(c.account, id).is_none() {
        return Err(missing_webhook());
    }
    let event_type = match b.get("event_type") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(SimError::bad(
                "VALIDATION_004",
                "event_type",
                "Event type is required",
            ));
        }
    };
    let (fam, suffix) = event_type.split_once('.').unwrap_or((&event_type, ""));
    let valid = match fam {
        "message" => MESSAGE_SUBTYPES.contains(&suffix),
        "templates" => true,
        _ => false,
    };
    if !valid {
        return Err(SimError::bad(
            "VALIDATION_006",
            "event_type",
            format!("Unknown event type {event_type}"),
        ));
    }
    if sandbox {
        return Ok(reply(
            StatusCode::OK,
            json!({"success": true, "message": "Test event validated (sandbox)"}),
            true,
        ));
    }
    let event_id = {
        let mut st = sim.st();
        let specimen = st.new_id();
        let payload = if fam == "message" {
            json!({
                "account_id": c.account, "message_id": specimen,
                "message_status": suffix.to_ascii_uppercase(), "channel": "sms",
                "outbound_number": "+14155551234", "template_id": null, "body": null,
                "updated_at": iso(c.now_ms),
            })
        } else {
            json!({"account_id": c.account, "template_id": specimen, "template_name": "test_template",
                   "status": suffix.to_ascii_uppercase(), "language": "en_US", "category": "UTILITY",
                   "channel": null, "reason": null})
        };
        let sub = (fam == "message").then_some(event_type.as_str());
        let bytes = core::envelope_bytes(&sim, fam, sub, payload, c.now_ms);
        core::new_event(&mut st, id, &event_type, bytes, c.now_ms)
    };
    let opts = AttemptOpts {
        attempt: 1,
        duplicate: false,
        redelivery: false,
        faults: false,
    };
    let d = core::attempt(&sim, event_id, opts).await;
    let now = sim.now_ms();
    let (success, message) = match &d {
        None => (false, "Webhook is inactive".to_owned()),
        Some(d) if d.outcome == super::DeliveryOutcome::Delivered => {
            (true, "Test event delivered successfully".to_owned())
        }
        Some(d) => match (d.status_code, &d.error) {
            (Some(code), _) => (false, format!("Endpoint responded with HTTP {code}")),
            (None, Some(e)) => (false, format!("Delivery failed: {e}")),
            (None, None) => (false, "Delivery failed".to_owned()),
        },
    };
    if let Some(ev) = sim.st().events.get_mut(&event_id) {
        ev.attempts = u32::from(d.is_some());
        ev.status = if success {
            EventStatus::Delivered
        } else {
            EventStatus::Failed
        };
        if let Some(d) = &d {
            ev.http_status = d.status_code;
            ev.response_body.clone_from(&d.response_body);
            ev.error.clone_from(&d.error);
        }
        ev.completed_ms = Some(now);
    }
    Ok(reply(
        StatusCode::OK,
        json!({"success": success, "message": message}),
        false,
    ))
}

async fn event_types() -> Response {
    let subs: Vec<Value> = MESSAGE_SUBTYPES
        .iter()
        .map(|s| {
            let mut title = s.to_string();
            if let Some(first) = title.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            json!({
                "name": format!("message.{s}"), "display_name": format!("Message {title}"),
                "description": format!("A message reached status {}", s.to_ascii_uppercase()),
                "is_active": true,
            })
        })
        .collect();
    reply(
        StatusCode::OK,
        json!({"event_types": [
            {"name": "message", "display_name": "Messages",
             "description": "Message lifecycle and inbound messages", "is_active": true,
             "sub_types": subs},
            {"name": "templates", "display_name": "Templates",
             "description": "Template review outcomes", "is_active": true, "sub_types": []},
        ]}),
        false,
    )
}

async fn webhook_events(State(sim): State<Sim>, Path(id): Path<String>, q: Q) -> R {
    let id = webhook_id(&id)?;
    let q = query(q)?;
    let (page, size) = paging(&q)?;
    let search = q.get("search").map(|s| s.to_lowercase());
    let st = sim.st();
    if st.webhook(ctx().account, id).is_none() {
        return Err(missing_webhook());
    }
    let items: Vec<Value> = st
        .event_order
        .iter()
        .rev()
        .filter_map(|e| st.events.get(e))
        .filter(|e| e.webhook_id == id)
        .filter(|e| {
            search
                .as_deref()
                .is_none_or(|s| e.event_type.to_lowercase().contains(s))
        })
        .map(core::EventRec::json)
        .collect();
    let (items, pagination) = paginate(items, page, size);
    Ok(reply(
        StatusCode::OK,
        json!({"events": items, "pagination": pagination}),
        false,
    ))
}
