//! `/_sim/...` control endpoints (CONTRACT §6.2), unauthenticated, for tests and demos, and
//! the functions behind them that [`super::SimHandle`] also calls in-process.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::core::{self, AttemptOpts, Sim, Step, iso};
use super::{ApiFault, Faults};

pub(crate) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/_sim/messages/{id}/status", post(h_force_status))
        .route("/_sim/templates/{id}/status", post(h_template_status))
        .route("/_sim/advance", post(h_advance))
        .route("/_sim/settle", post(h_settle))
        .route("/_sim/clock", get(h_clock))
        .route(
            "/_sim/deliveries",
            get(h_deliveries).delete(h_clear_deliveries),
        )
        .route("/_sim/requests", get(h_requests))
        .route(
            "/_sim/webhooks/{id}/redeliver/{event_id}",
            post(h_redeliver),
        )
        .route("/_sim/faults", get(h_get_faults).put(h_put_faults))
        .route("/_sim/faults/api", post(h_push_api_fault))
        .route("/_sim/reset", post(h_reset))
        .with_state(sim)
}

pub(crate) async fn settle(sim: &Sim) {
    let _g = sim.runner.lock().await;
    core::run_until(sim, sim.now_ms()).await;
}

pub(crate) async fn advance(sim: &Sim, ms: i64) {
    let _g = sim.runner.lock().await;
    let target = sim.now_ms() + ms.max(0);
    core::run_until(sim, target).await;
    sim.clock.advance_to(target);
    drop(_g);
    sim.wake.notify_one();
}

const KNOWN: &[&str] = &[
    "QUEUED",
    "SCHEDULED",
    "ROUTED",
    "SENT",
    "DELIVERED",
    "READ",
    "FAILED",
    "BLOCKED",
    "FILTERED",
    "CANCELLED",
];

pub(crate) fn force_status(
    sim: &Sim,
    message_id: &str,
    status: &str,
    reason_code: Option<&str>,
    reason: Option<&str>,
) -> bool {
    let Ok(id) = message_id.parse::<Uuid>() else {
        return false;
    };
    let upper = status.to_ascii_uppercase();
    let Some(status) = KNOWN.iter().copied().find(|s| *s == upper) else {
        return false;
    };
    let mut st = sim.st();
    let read_receipts = sim.cfg.read_receipts;
    let Some(m) = st.messages.get_mut(&id) else {
        return false;
    };
    m.plan = if status == "QUEUED" {
        // A resend re-runs the pipeline on the same message id.
        // A neutral number takes the success path from PROCESSED on.
        core::plan_for("+10000000000", &m.channel, None, &[], read_receipts, None)
    } else {
        Default::default()
    };
    let negative = matches!(status, "FAILED" | "BLOCKED" | "FILTERED");
    let step = Step {
        status,
        reason_code: reason_code
            .map(str::to_owned)
            .or_else(|| negative.then(|| "DELIVERY_007".to_owned())),
        reason: reason
            .map(str::to_owned)
            .or_else(|| negative.then(|| "Forced by simulator control".to_owned())),
        hold_until_ms: None,
    };
    // Drop any pending step job for this message: the forced status replaces it.
    st.jobs
        .retain(|_, j| !matches!(j, core::Job::Step(m) if *m == id));
    core::apply_status(sim, &mut st, id, step);
    drop(st);
    sim.wake.notify_one();
    true
}

pub(crate) fn set_template_status(
    sim: &Sim,
    template_id: &str,
    status: &str,
    reason: Option<&str>,
) -> bool {
    let Ok(id) = template_id.parse::<Uuid>() else {
        return false;
    };
    let now = sim.now_ms();
    let mut st = sim.st();
    let Some(t) = st.templates.iter_mut().find(|t| t.id == id) else {
        return false;
    };
    t.status = status.to_ascii_uppercase();
    t.updated_ms = now;
    let payload = json!({
        "account_id": core::ACCOUNT_ID, "template_id": t.id, "template_name": t.name,
        "whatsapp_template_id": null, "status": t.status, "language": "en_US",
        "category": t.category, "channel": null, "reason": reason,
    });
    let accounts: Vec<Uuid> = st.accounts.iter().map(|a| a.id).collect();
    for account in accounts {
        core::emit(
            sim,
            &mut st,
            account,
            "templates",
            None,
            payload.clone(),
            None,
            now,
        );
    }
    drop(st);
    sim.wake.notify_one();
    true
}

pub(crate) async fn redeliver(
    sim: &Sim,
    webhook_id: &str,
    event_id: &str,
) -> Option<super::DeliveryAttempt> {
    let wid: Uuid = webhook_id.parse().ok()?;
    let eid: Uuid = event_id.parse().ok()?;
    if sim.st().events.get(&eid)?.webhook_id != wid {
        return None;
    }
    let opts = AttemptOpts {
        attempt: 1,
        duplicate: false,
        redelivery: true,
        faults: false,
    };
    core::attempt(sim, eid, opts).await
}

pub(crate) async fn reset(sim: &Sim) {
    let _g = sim.runner.lock().await;
    let now = sim.now_ms();
    let mut st = sim.st();
    *st = core::State::new(&sim.cfg, now);
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("unknown {what}")})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ForceBody {
    status: String,
    reason_code: Option<String>,
    reason: Option<String>,
}

async fn h_force_status(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    Json(b): Json<ForceBody>,
) -> Response {
    if !force_status(
        &sim,
        &id,
        &b.status,
        b.reason_code.as_deref(),
        b.reason.as_deref(),
    ) {
        return not_found("message or status");
    }
    settle(&sim).await;
    let msg = id
        .parse()
        .ok()
        .and_then(|id| sim.st().messages.get(&id).map(core::MessageRec::json));
    Json(msg.unwrap_or(Value::Null)).into_response()
}

#[derive(Deserialize)]
struct TemplateStatusBody {
    status: String,
    reason: Option<String>,
}

async fn h_template_status(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    Json(b): Json<TemplateStatusBody>,
) -> Response {
    if !set_template_status(&sim, &id, &b.status, b.reason.as_deref()) {
        return not_found("template");
    }
    settle(&sim).await;
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct AdvanceBody {
    ms: i64,
}

async fn h_advance(State(sim): State<Sim>, Json(b): Json<AdvanceBody>) -> Response {
    advance(&sim, b.ms).await;
    Json(json!({"now": iso(sim.now_ms()), "now_ms": sim.now_ms()})).into_response()
}

async fn h_settle(State(sim): State<Sim>) -> Response {
    settle(&sim).await;
    StatusCode::NO_CONTENT.into_response()
}

async fn h_clock(State(sim): State<Sim>) -> Response {
    Json(json!({
        "now": iso(sim.now_ms()), "now_ms": sim.now_ms(), "manual": sim.clock.is_manual(),
        "pending_jobs": sim.st().jobs.len(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct DeliveryFilter {
    webhook_id: Option<String>,
}

async fn h_deliveries(State(sim): State<Sim>, Query(f): Query<DeliveryFilter>) -> Response {
    let all = sim.st().deliveries.clone();
    let list: Vec<_> = all
        .into_iter()
        .filter(|d| f.webhook_id.as_ref().is_none_or(|w| *w == d.webhook_id))
        .collect();
    Json(json!({ "deliveries": list })).into_response()
}

async fn h_clear_deliveries(State(sim): State<Sim>) -> Response {
    sim.st().deliveries.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn h_requests(State(sim): State<Sim>) -> Response {
    let list = sim.st().requests.clone();
    Json(json!({ "requests": list })).into_response()
}

async fn h_redeliver(
    State(sim): State<Sim>,
    Path((id, event_id)): Path<(String, String)>,
) -> Response {
    match redeliver(&sim, &id, &event_id).await {
        Some(d) => Json(d).into_response(),
        None => not_found("webhook, event, or inactive webhook"),
    }
}

async fn h_get_faults(State(sim): State<Sim>) -> Response {
    let f = sim.st().faults.clone();
    Json(json!({"faults": f, "api_faults": sim.st().api_faults.clone()})).into_response()
}

async fn h_put_faults(State(sim): State<Sim>, Json(f): Json<Faults>) -> Response {
    sim.st().faults = f;
    StatusCode::NO_CONTENT.into_response()
}

async fn h_push_api_fault(State(sim): State<Sim>, Json(f): Json<ApiFault>) -> Response {
    sim.st().api_faults.push(f);
    StatusCode::NO_CONTENT.into_response()
}

async fn h_reset(State(sim): State<Sim>) -> Response {
    reset(&sim).await;
    StatusCode::NO_CONTENT.into_response()
}
