//! Simulator state, the message status machine, the virtual clock and the job runner that
//! delivers signed webhooks. The HTTP layers (`api`, `control`) only call into this.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    ApiFault, DeliveryAttempt, DeliveryOutcome, Faults, RecordedRequest, SimConfig, SubtypeKey,
};
use sentdm_client::signing::{self, SigningSecret};

pub(crate) type Sim = Arc<Shared>;

pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub clock: Clock,
    pub state: Mutex<State>,
    /// Serialises job execution so `advance`/`settle` return only after every due job,
    /// including its HTTP delivery, has finished.
    pub runner: tokio::sync::Mutex<()>,
    pub wake: tokio::sync::Notify,
    pub http: reqwest::Client,
}

impl Shared {
    pub fn st(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Virtual clock: wall time (or a fixed start when manual) plus an offset tests advance.
pub(crate) struct Clock {
    manual: bool,
    base_ms: i64,
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn new(manual: bool, start_ms: Option<i64>) -> Self {
        let wall = wall_ms();
        // A manual clock starts at wall time by default so wall-clock receivers accept the
        // signatures (±300 s); pin `start_ms` for byte-identical runs.
        let base_ms = if manual {
            start_ms.unwrap_or(wall - wall % 1000)
        } else {
            wall
        };
        let offset = if manual {
            0
        } else {
            start_ms.map_or(0, |s| s - wall)
        };
        Self {
            manual,
            base_ms,
            offset_ms: AtomicI64::new(offset),
        }
    }

    pub fn is_manual(&self) -> bool {
        self.manual
    }

    pub fn now_ms(&self) -> i64 {
        let base = if self.manual { self.base_ms } else { wall_ms() };
        base + self.offset_ms.load(Ordering::SeqCst)
    }

    pub fn advance_to(&self, target_ms: i64) {
        let now = self.now_ms();
        if target_ms > now {
            self.offset_ms.fetch_add(target_ms - now, Ordering::SeqCst);
        }
    }
}

fn wall_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

fn to_dt(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// ISO-8601 UTC with millisecond precision when non-zero (`2026-01-01T00:00:00.2Z`).
pub(crate) fn iso(ms: i64) -> String {
    to_dt(ms)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// ISO-8601 UTC in whole seconds, the webhook envelope's `timestamp` format.
pub(crate) fn iso_s(ms: i64) -> String {
    iso(ms.div_euclid(1000) * 1000)
}

pub(crate) const ACCOUNT_ID: &str = "550e8400-e29b-41d4-a716-446655440000";
pub(crate) const SMS_NUMBER: &str = "+14155550100";
/// Maximum entries kept in the request and delivery logs.
pub(crate) const LOG_CAP: usize = 100_000;

#[derive(Clone)]
pub(crate) struct AccountRec {
    pub id: Uuid,
    pub key: Option<String>,
    pub kind: super::AccountKind,
    pub organization_id: Option<Uuid>,
    pub name: String,
}

fn accounts_from(cfg: &SimConfig) -> Vec<AccountRec> {
    let mut out = vec![AccountRec {
        id: ACCOUNT_ID.parse().unwrap_or_default(),
        key: Some(cfg.api_key.clone()),
        kind: super::AccountKind::User,
        organization_id: None,
        name: "Simulated Account".into(),
    }];
    for a in &cfg.extra_accounts {
        // Ids that are not UUIDs cannot be addressed through the API; skip them loudly.
        let Ok(id) = a.id.parse() else {
            tracing::warn!(account.id = %a.id, "ignoring simulator account with a non-UUID id");
            continue;
        };
        out.push(AccountRec {
            id,
            key: a.api_key.clone(),
            kind: a.kind,
            organization_id: a.organization_id.as_deref().and_then(|o| o.parse().ok()),
            name: a.name.clone(),
        });
    }
    out
}

#[derive(Clone)]
pub(crate) struct TemplateRec {
    pub id: Uuid,
    pub name: String,
    pub category: String,
    pub status: String,
    pub channels: Vec<String>,
    pub variables: Vec<String>,
    /// Body with `{{n:variable}}` placeholders, as SentDM's definitions use.
    pub body: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl TemplateRec {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "category": self.category, "language": "en_US",
            "status": self.status, "channels": self.channels, "variables": self.variables,
            "is_published": self.status == "APPROVED", "customer_id": ACCOUNT_ID,
            "created_at": iso(self.created_ms), "updated_at": iso(self.updated_ms),
            "definition": {"body": {"multiChannel": {"template": self.body}}},
        })
    }

    pub fn render(&self, params: &BTreeMap<String, String>) -> String {
        let mut out = self.body.clone();
        for (i, v) in self.variables.iter().enumerate() {
            let value = params.get(v).map_or("", String::as_str);
            out = out.replace(&format!("{{{{{i}:{v}}}}}"), value);
        }
        out
    }
}

pub(crate) fn seed_templates(now_ms: i64) -> Vec<TemplateRec> {
    vec![
        TemplateRec {
            id: super::ORDER_CONFIRMATION_ID.parse().unwrap_or_default(),
            name: "order_confirmation".into(),
            category: "UTILITY".into(),
            status: "APPROVED".into(),
            channels: vec!["sms".into(), "whatsapp".into()],
            variables: vec!["name".into(), "order_id".into()],
            body: "Hi {{0:name}}, your order #{{1:order_id}} has been confirmed.".into(),
            created_ms: now_ms,
            updated_ms: now_ms,
        },
        TemplateRec {
            id: super::PROMO_PENDING_ID.parse().unwrap_or_default(),
            name: "promo_pending".into(),
            category: "MARKETING".into(),
            status: "PENDING".into(),
            channels: vec!["sms".into(), "whatsapp".into()],
            variables: vec!["name".into()],
            body: "Hi {{0:name}}, our sale starts today!".into(),
            created_ms: now_ms,
            updated_ms: now_ms,
        },
    ]
}

#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub status: &'static str,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    /// Absolute virtual time for the next step (SCHEDULED waits for `scheduled_at`).
    pub hold_until_ms: Option<i64>,
}

impl Step {
    fn ok(status: &'static str) -> Self {
        Self {
            status,
            reason_code: None,
            reason: None,
            hold_until_ms: None,
        }
    }

    fn neg(status: &'static str, code: &str, reason: &str) -> Self {
        Self {
            status,
            reason_code: Some(code.into()),
            reason: Some(reason.into()),
            hold_until_ms: None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct MsgEvent {
    pub status: String,
    pub at_ms: i64,
    pub description: String,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
}

pub(crate) struct MessageRec {
    pub id: Uuid,
    pub account_id: Uuid,
    pub to: String,
    pub channel: String,
    pub template_id: Option<Uuid>,
    pub template_name: Option<String>,
    pub template_category: Option<String>,
    pub body: Option<String>,
    pub status: String,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub scheduled_at_ms: Option<i64>,
    pub created_ms: i64,
    pub events: Vec<MsgEvent>,
    pub plan: VecDeque<Step>,
}

/// Contacts are implicit: one stable id per phone number.
fn contact_id(phone: &str) -> Uuid {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(phone.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn is_negative(status: &str) -> bool {
    matches!(status, "FAILED" | "BLOCKED" | "FILTERED" | "CANCELLED")
}

fn describe(status: &str, channel: &str) -> String {
    match status {
        "QUEUED" => "Message accepted and queued for processing".into(),
        "PROCESSED" => "Message processed and queued for sending".into(),
        "ROUTED" => format!("Message routed via {}", channel.to_uppercase()),
        "SCHEDULED" => "Message scheduled for later delivery".into(),
        "SENT" => format!("Message sent via {}", channel.to_uppercase()),
        "DELIVERED" => "Message delivered to recipient".into(),
        "READ" => "Message read by recipient".into(),
        "FAILED" => "Message delivery failed".into(),
        "BLOCKED" => "Message blocked before delivery".into(),
        "FILTERED" => "Message filtered by policy".into(),
        "CANCELLED" => "Scheduled message cancelled".into(),
        other => format!("Status changed to {other}"),
    }
}

impl MessageRec {
    pub fn json(&self) -> Value {
        let events: Vec<Value> = self
            .events
            .iter()
            .filter(|e| e.status != "PROCESSED")
            .map(|e| {
                let mut v = json!({"status": e.status, "timestamp": iso(e.at_ms), "description": e.description});
                if let Some(c) = &e.reason_code {
                    v["reason_code"] = json!(c);
                    v["reason"] = json!(e.reason);
                }
                v
            })
            .collect();
        let mut v = json!({
            "id": self.id, "customer_id": self.account_id,
            "contact_id": contact_id(&self.to),
            "phone": self.to, "phone_international": self.to,
            "region_code": if self.to.starts_with("+1") { json!("US") } else { Value::Null },
            "direction": "outbound",
            "template_id": self.template_id, "template_name": self.template_name,
            "template_category": self.template_category, "channel": self.channel,
            "message_body": {"header": null, "content": self.body, "footer": null, "buttons": null},
            "status": self.status, "created_at": iso(self.created_ms),
            "price": 0.0055, "active_contact_price": 0.015, "events": events,
        });
        if let Some(c) = &self.reason_code {
            v["reason_code"] = json!(c);
            v["reason"] = json!(self.reason);
        }
        if let Some(s) = self.scheduled_at_ms {
            v["scheduled_at"] = json!(iso(s));
        }
        v
    }

    pub fn activities_json(&self) -> Value {
        let acts: Vec<Value> = self
            .events
            .iter()
            .rev()
            .map(|e| {
                let priced = e.status != "QUEUED" && e.status != "SCHEDULED";
                let from = matches!(e.status.as_str(), "SENT" | "DELIVERED" | "READ");
                let mut v = json!({
                    "status": e.status, "description": e.description,
                    "from": if from { json!(SMS_NUMBER) } else { Value::Null },
                    "timestamp": iso(e.at_ms),
                    "price": if priced { json!("0.0055") } else { Value::Null },
                    "active_contact_price": if priced { json!("0.0150") } else { Value::Null },
                });
                if let Some(c) = &e.reason_code {
                    v["reason_code"] = json!(c);
                    v["reason"] = json!(e.reason);
                }
                if matches!(e.status.as_str(), "SCHEDULED" | "CANCELLED") {
                    v["scheduled_at"] = json!(self.scheduled_at_ms.map(iso));
                }
                v
            })
            .collect();
        json!({"message_id": self.id, "activities": acts})
    }
}

pub(crate) struct WebhookRec {
    pub id: Uuid,
    pub account_id: Uuid,
    pub display_name: String,
    pub endpoint_url: String,
    pub secret: SigningSecret,
    pub is_active: bool,
    pub event_types: Vec<String>,
    pub event_filters: Option<BTreeMap<String, Vec<String>>>,
    pub retry_count: u32,
    pub timeout_seconds: u32,
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub consecutive_failures: u32,
    pub created_ms: i64,
    pub updated_ms: Option<i64>,
}

impl WebhookRec {
    pub fn json(&self, with_secret: bool) -> Value {
        json!({
            "id": self.id, "customer_id": self.account_id, "display_name": self.display_name,
            "endpoint_url": self.endpoint_url,
            "signing_secret": if with_secret { json!(self.secret.expose()) } else { Value::Null },
            "is_active": self.is_active, "event_types": self.event_types,
            "event_filters": self.event_filters, "retry_count": self.retry_count,
            "timeout_seconds": self.timeout_seconds,
            "last_delivery_attempt_at": self.last_attempt_ms.map(iso),
            "last_successful_delivery_at": self.last_success_ms.map(iso),
            "consecutive_failures": self.consecutive_failures,
            "created_at": iso(self.created_ms), "updated_at": self.updated_ms.map(iso),
        })
    }

    /// `event_types` names the family; `event_filters` (if non-empty for it) the suffixes.
    pub fn wants(&self, family: &str, sub_type: Option<&str>) -> bool {
        if !self.event_types.iter().any(|t| t == family) {
            return false;
        }
        let Some(filters) = self.event_filters.as_ref().and_then(|f| f.get(family)) else {
            return true;
        };
        if filters.is_empty() {
            return true;
        }
        let suffix = sub_type.and_then(|s| s.split_once('.').map(|(_, x)| x));
        suffix.is_some_and(|s| filters.iter().any(|f| f == s))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum EventStatus {
    Pending,
    Delivered,
    Failed,
}

pub(crate) struct EventRec {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_type: String,
    pub body: Arc<[u8]>,
    pub created_ms: i64,
    pub status: EventStatus,
    pub attempts: u32,
    pub http_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub started_ms: Option<i64>,
    pub completed_ms: Option<i64>,
}

impl EventRec {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id, "event_type": self.event_type,
            "event_data": serde_json::from_slice::<Value>(&self.body).unwrap_or(Value::Null),
            "delivery_status": match self.status {
                EventStatus::Pending => "pending",
                EventStatus::Delivered => "delivered",
                EventStatus::Failed => "failed",
            },
            "http_status_code": self.http_status, "response_body": self.response_body,
            "delivery_attempts": self.attempts, "error_message": self.error,
            "created_at": iso(self.created_ms),
            "processing_started_at": self.started_ms.map(iso),
            "processing_completed_at": self.completed_ms.map(iso),
        })
    }
}

#[derive(Clone)]
pub(crate) struct StoredResponse {
    pub status: u16,
    pub body: bytes::Bytes,
    pub request_id: String,
    pub sandbox: bool,
}

pub(crate) enum Idem {
    InFlight,
    Done(StoredResponse),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct DeliverJob {
    pub event_id: Uuid,
    pub attempt: u32,
    pub duplicate: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Job {
    Step(Uuid),
    Deliver(DeliverJob),
}

pub(crate) struct State {
    pub rng: StdRng,
    pub accounts: Vec<AccountRec>,
    pub templates: Vec<TemplateRec>,
    pub messages: HashMap<Uuid, MessageRec>,
    pub webhooks: Vec<WebhookRec>,
    pub events: HashMap<Uuid, EventRec>,
    pub event_order: Vec<Uuid>,
    pub deliveries: Vec<DeliveryAttempt>,
    pub requests: Vec<RecordedRequest>,
    pub idem: HashMap<(Uuid, String), Idem>,
    pub jobs: BTreeMap<(i64, u64), Job>,
    pub seq: u64,
    pub faults: Faults,
    pub api_faults: Vec<ApiFault>,
    pub reorder: HashMap<Uuid, Vec<Uuid>>,
    pub buckets: HashMap<(Uuid, bool), (f64, i64)>,
    pub delivery_seq: u64,
}

impl State {
    pub fn new(cfg: &SimConfig, now_ms: i64) -> Self {
        let rng = match cfg.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            rng,
            accounts: accounts_from(cfg),
            templates: seed_templates(now_ms),
            messages: HashMap::new(),
            webhooks: Vec::new(),
            events: HashMap::new(),
            event_order: Vec::new(),
            deliveries: Vec::new(),
            requests: Vec::new(),
            idem: HashMap::new(),
            jobs: BTreeMap::new(),
            seq: 0,
            faults: cfg.faults.clone(),
            api_faults: Vec::new(),
            reorder: HashMap::new(),
            buckets: HashMap::new(),
            delivery_seq: 0,
        }
    }

    /// Sequence number for the next delivery-log entry; trims the oldest tenth of the log
    /// when it reaches [`LOG_CAP`].
    pub fn next_delivery_seq(&mut self) -> u64 {
        if self.deliveries.len() >= LOG_CAP {
            self.deliveries.drain(..LOG_CAP / 10);
        }
        self.delivery_seq += 1;
        self.delivery_seq
    }

    pub fn new_id(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    pub fn request_id(&mut self) -> String {
        const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let s: String = (0..10)
            .map(|_| ALPHA[self.rng.random_range(0..ALPHA.len())] as char)
            .collect();
        format!("req_{s}")
    }

    pub fn new_secret(&mut self) -> SigningSecret {
        let key: [u8; 32] = self.rng.random();
        match SigningSecret::from_key(&key) {
            Ok(s) => s,
            Err(_) => unreachable!("a 32-byte key is never empty"),
        }
    }

    pub fn schedule(&mut self, due_ms: i64, job: Job) {
        self.seq += 1;
        self.jobs.insert((due_ms, self.seq), job);
    }

    pub fn webhook(&self, account: Uuid, id: Uuid) -> Option<&WebhookRec> {
        self.webhooks
            .iter()
            .find(|w| w.id == id && w.account_id == account)
    }

    pub fn webhook_mut(&mut self, account: Uuid, id: Uuid) -> Option<&mut WebhookRec> {
        self.webhooks
            .iter_mut()
            .find(|w| w.id == id && w.account_id == account)
    }

    pub fn find_template(&self, id: Option<&str>, name: Option<&str>) -> Option<&TemplateRec> {
        if let Some(id) = id {
            return self
                .templates
                .iter()
                .find(|t| t.id.to_string().eq_ignore_ascii_case(id));
        }
        name.and_then(|n| self.templates.iter().find(|t| t.name == n))
    }
}

/// The deterministic pipeline for a new message (CONTRACT §4).
pub(crate) fn plan_for(
    to: &str,
    channel: &str,
    template: Option<&TemplateRec>,
    missing_vars: &[String],
    read_receipts: bool,
    scheduled_at_ms: Option<i64>,
) -> VecDeque<Step> {
    let mut plan = VecDeque::new();
    if let Some(at) = scheduled_at_ms {
        plan.push_back(Step {
            hold_until_ms: Some(at),
            ..Step::ok("SCHEDULED")
        });
    }
    if template.is_some_and(|t| t.status != "APPROVED") {
        plan.push_back(Step::neg(
            "BLOCKED",
            "BUSINESS_005",
            "Template is not approved",
        ));
        return plan;
    }
    if channel == "rcs" {
        plan.push_back(Step::neg(
            "BLOCKED",
            "BUSINESS_007",
            "Channel rcs is not configured for this account",
        ));
        return plan;
    }
    let tail = to.get(to.len().saturating_sub(4)..).unwrap_or_default();
    match tail {
        "0002" => {
            plan.push_back(Step::neg("BLOCKED", "BUSINESS_003", "Insufficient balance"));
            return plan;
        }
        "0003" => {
            plan.push_back(Step::neg(
                "FILTERED",
                "COMPLIANCE_001",
                "Recipient has opted out",
            ));
            return plan;
        }
        _ => {}
    }
    plan.push_back(Step::ok("PROCESSED"));
    if !missing_vars.is_empty() {
        plan.push_back(Step::neg(
            "FAILED",
            "ERR_TEMPLATE_PARAMS_INVALID",
            &format!("Missing template parameters: {}", missing_vars.join(", ")),
        ));
        return plan;
    }
    plan.push_back(Step::ok("ROUTED"));
    plan.push_back(Step::ok("SENT"));
    const NOT_REGISTERED: &str = "The recipient is not registered on this channel";
    match tail {
        "0001" => plan.push_back(Step::neg("FAILED", "DELIVERY_007", NOT_REGISTERED)),
        "0004" => {}
        "0005" => {
            plan.push_back(Step::ok("DELIVERED"));
            plan.push_back(Step::neg("FAILED", "DELIVERY_007", NOT_REGISTERED));
        }
        _ => {
            plan.push_back(Step::ok("DELIVERED"));
            if read_receipts && matches!(channel, "whatsapp" | "rcs") {
                plan.push_back(Step::ok("READ"));
            }
        }
    }
    plan
}

/// Applies one status change: records it, emits webhooks, and schedules the next step.
pub(crate) fn apply_status(sim: &Shared, st: &mut State, msg_id: Uuid, step: Step) {
    let now = sim.now_ms();
    let Some(m) = st.messages.get_mut(&msg_id) else {
        return;
    };
    m.status = step.status.to_owned();
    if is_negative(step.status) {
        m.reason_code.clone_from(&step.reason_code);
        m.reason.clone_from(&step.reason);
    } else if step.status != "PROCESSED" {
        m.reason_code = None;
        m.reason = None;
    }
    m.events.push(MsgEvent {
        status: step.status.to_owned(),
        at_ms: now,
        description: describe(step.status, &m.channel),
        reason_code: step.reason_code.clone(),
        reason: step.reason.clone(),
    });
    let more = !m.plan.is_empty();
    let account = m.account_id;
    if step.status != "PROCESSED" {
        let sub_type = format!("message.{}", step.status.to_ascii_lowercase());
        let payload = message_payload(sim, m, &step, now);
        emit(
            sim,
            st,
            account,
            "message",
            Some(&sub_type),
            payload,
            Some(msg_id),
            now,
        );
    }
    if more {
        let due = step
            .hold_until_ms
            .unwrap_or(now + sim.cfg.step_delay.as_millis() as i64);
        st.schedule(due, Job::Step(msg_id));
    } else {
        flush_reorder(st, msg_id, now);
    }
}

fn message_payload(sim: &Shared, m: &MessageRec, step: &Step, now: i64) -> Value {
    let early = sim.cfg.early_unknown_fields && step.status == "QUEUED" && m.events.len() <= 1;
    if early {
        return json!({
            "account_id": m.account_id, "message_id": m.id, "message_status": step.status,
            "channel": "unknown", "inbound_number": "unknown", "outbound_number": "unknown",
            "template_id": m.template_id, "updated_at": iso(now),
        });
    }
    let mut p = json!({
        "account_id": m.account_id, "message_id": m.id, "message_status": step.status,
        "channel": m.channel, "outbound_number": m.to, "template_id": m.template_id,
        "template_name": m.template_name, "body": m.body, "updated_at": iso(now),
    });
    if let Some(c) = &step.reason_code {
        p["reason_code"] = json!(c);
        p["reason"] = json!(step.reason);
    }
    if matches!(step.status, "SCHEDULED" | "CANCELLED") {
        p["scheduled_at"] = json!(m.scheduled_at_ms.map(iso));
        if step.status == "SCHEDULED" {
            p["schedule_reason"] = json!("scheduled_send");
        }
    }
    p
}

#[derive(Serialize)]
struct Envelope<'a> {
    field: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    timestamp: String,
    payload: Value,
}

/// Builds the envelope bytes once and queues one delivery per matching active webhook.
#[expect(
    clippy::too_many_arguments,
    reason = "internal helper with one caller shape"
)]
pub(crate) fn emit(
    sim: &Shared,
    st: &mut State,
    account: Uuid,
    family: &str,
    sub_type: Option<&str>,
    payload: Value,
    message: Option<Uuid>,
    now: i64,
) {
    let event_type = sub_type.unwrap_or(family).to_owned();
    // Template events carry no sub-type key; filters match on `templates.<status>`.
    let template_subtype = (sub_type.is_none() && family == "templates").then(|| {
        let status = payload["status"].as_str().unwrap_or_default();
        format!("templates.{}", status.to_ascii_lowercase())
    });
    let filter_subtype = sub_type.or(template_subtype.as_deref());
    let targets: Vec<Uuid> = st
        .webhooks
        .iter()
        .filter(|w| w.account_id == account && w.is_active && w.wants(family, filter_subtype))
        .map(|w| w.id)
        .collect();
    let body = envelope_bytes(sim, family, sub_type, payload, now);
    for webhook_id in targets {
        let id = new_event(st, webhook_id, &event_type, body.clone(), now);
        if should_drop(st, &event_type) {
            drop_event(st, id, now);
            continue;
        }
        match message {
            Some(m) if st.faults.reorder => st.reorder.entry(m).or_default().push(id),
            _ => st.schedule(
                now,
                Job::Deliver(DeliverJob {
                    event_id: id,
                    attempt: 1,
                    duplicate: false,
                }),
            ),
        }
    }
}

/// Stores one event row for one webhook; the body is shared by all its attempts.
pub(crate) fn new_event(
    st: &mut State,
    webhook_id: Uuid,
    event_type: &str,
    body: Arc<[u8]>,
    now: i64,
) -> Uuid {
    let id = st.new_id();
    st.events.insert(
        id,
        EventRec {
            id,
            webhook_id,
            event_type: event_type.to_owned(),
            body,
            created_ms: now,
            status: EventStatus::Pending,
            attempts: 0,
            http_status: None,
            response_body: None,
            error: None,
            started_ms: None,
            completed_ms: None,
        },
    );
    st.event_order.push(id);
    id
}

/// Serialises an envelope with the configured sub-type key.
pub(crate) fn envelope_bytes(
    sim: &Shared,
    family: &str,
    sub_type: Option<&str>,
    payload: Value,
    now: i64,
) -> Arc<[u8]> {
    let (sub_key, event_key) = match sim.cfg.subtype_key {
        SubtypeKey::SubType => (sub_type, None),
        SubtypeKey::Event => (None, sub_type),
        SubtypeKey::Both => (sub_type, sub_type),
    };
    let env = Envelope {
        field: family,
        sub_type: sub_key,
        event: event_key,
        timestamp: iso_s(now),
        payload,
    };
    serde_json::to_vec(&env).unwrap_or_default().into()
}

fn should_drop(st: &mut State, event_type: &str) -> bool {
    if st.faults.drop_sub_types.iter().any(|s| s == event_type) {
        return true;
    }
    let rate = st.faults.drop_rate;
    rate > 0.0 && st.rng.random::<f64>() < rate
}

fn drop_event(st: &mut State, event_id: Uuid, now: i64) {
    let Some(ev) = st.events.get_mut(&event_id) else {
        return;
    };
    ev.status = EventStatus::Failed;
    ev.error = Some("dropped by fault injection".into());
    let (webhook_id, event_type, body) = (ev.webhook_id, ev.event_type.clone(), ev.body.clone());
    let url = st
        .webhooks
        .iter()
        .find(|w| w.id == webhook_id)
        .map(|w| w.endpoint_url.clone())
        .unwrap_or_default();
    let seq = st.next_delivery_seq();
    st.deliveries.push(DeliveryAttempt {
        seq,
        webhook_id: webhook_id.to_string(),
        event_id: event_id.to_string(),
        event_type,
        url,
        headers: BTreeMap::new(),
        body: String::from_utf8_lossy(&body).into_owned(),
        attempt: 0,
        at: iso(now),
        status_code: None,
        response_body: None,
        error: Some("dropped by fault injection".into()),
        outcome: DeliveryOutcome::Dropped,
        duplicate: false,
        bad_signature: false,
        redelivery: false,
    });
}

/// Reorder fault: a message's events are held until its pipeline ends, then delivered in
/// a seeded shuffle.
pub(crate) fn flush_reorder(st: &mut State, msg_id: Uuid, now: i64) {
    let Some(mut ids) = st.reorder.remove(&msg_id) else {
        return;
    };
    ids.shuffle(&mut st.rng);
    for event_id in ids {
        st.schedule(
            now,
            Job::Deliver(DeliverJob {
                event_id,
                attempt: 1,
                duplicate: false,
            }),
        );
    }
}

/// Runs every job due at or before `limit_ms`, moving the clock forward to each job's due
/// time so timestamps look as if time had passed.
pub(crate) async fn run_until(sim: &Sim, limit_ms: i64) {
    loop {
        let job = {
            let mut st = sim.st();
            match st.jobs.first_key_value() {
                Some((&(due, _), _)) if due <= limit_ms => {
                    // No-op unless `advance` asked for time beyond now.
                    sim.clock.advance_to(due);
                    st.jobs.pop_first().map(|(_, j)| j)
                }
                _ => None,
            }
        };
        let Some(job) = job else { return };
        match job {
            Job::Step(id) => {
                let mut st = sim.st();
                let step = st.messages.get_mut(&id).and_then(|m| m.plan.pop_front());
                if let Some(step) = step {
                    apply_status(sim, &mut st, id, step);
                }
            }
            Job::Deliver(j) => run_delivery_job(sim, j).await,
        }
    }
}

pub(crate) fn next_due(sim: &Shared) -> Option<i64> {
    sim.st().jobs.first_key_value().map(|(&(due, _), _)| due)
}

#[derive(Clone, Copy)]
pub(crate) struct AttemptOpts {
    pub attempt: u32,
    pub duplicate: bool,
    pub redelivery: bool,
    pub faults: bool,
}

struct Prepared {
    url: String,
    headers: BTreeMap<String, String>,
    body: Arc<[u8]>,
    timeout: Duration,
    webhook_id: Uuid,
    event_type: String,
    bad_signature: bool,
}

/// One signed HTTP attempt for a stored event, recorded in the delivery log. `None` when
/// the event or its webhook is gone, or the webhook is inactive.
pub(crate) async fn attempt(
    sim: &Sim,
    event_id: Uuid,
    opts: AttemptOpts,
) -> Option<DeliveryAttempt> {
    let prep = {
        let mut st = sim.st();
        let now = sim.now_ms();
        let (webhook_id, event_type, body) = {
            let ev = st.events.get(&event_id)?;
            (ev.webhook_id, ev.event_type.clone(), ev.body.clone())
        };
        let bad = opts.faults && {
            let rate = st.faults.bad_signature_rate;
            rate > 0.0 && st.rng.random::<f64>() < rate
        };
        let wrong = if bad { Some(st.new_secret()) } else { None };
        let w = st.webhooks.iter_mut().find(|w| w.id == webhook_id)?;
        if !w.is_active {
            return None;
        }
        w.last_attempt_ms = Some(now);
        let ts = now.div_euclid(1000);
        let id = w.id.to_string();
        let sig = wrong.as_ref().unwrap_or(&w.secret).sign(&id, ts, &body);
        let mut headers = BTreeMap::new();
        headers.insert("content-type".to_owned(), "application/json".to_owned());
        headers.insert(signing::HEADER_WEBHOOK_ID.to_owned(), id);
        headers.insert(signing::HEADER_TIMESTAMP.to_owned(), ts.to_string());
        headers.insert(signing::HEADER_SIGNATURE.to_owned(), sig);
        if sim.cfg.emit_event_type_header {
            headers.insert(signing::HEADER_EVENT_TYPE.to_owned(), event_type.clone());
        }
        if sim.cfg.emit_event_id_header {
            headers.insert(signing::HEADER_EVENT_ID.to_owned(), event_id.to_string());
        }
        let mut timeout = Duration::from_secs(u64::from(w.timeout_seconds));
        if let Some(cap) = sim.cfg.delivery_timeout_cap {
            timeout = timeout.min(cap);
        }
        let url = w.endpoint_url.clone();
        if let Some(ev) = st.events.get_mut(&event_id) {
            ev.started_ms.get_or_insert(now);
        }
        Prepared {
            url,
            headers,
            body,
            timeout,
            webhook_id,
            event_type,
            bad_signature: bad,
        }
    };
    let mut rb = sim
        .http
        .post(&prep.url)
        .timeout(prep.timeout)
        .body(prep.body.to_vec());
    for (k, v) in &prep.headers {
        rb = rb.header(k, v);
    }
    let (status_code, response_body, error) = match rb.send().await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let text: String = text.chars().take(4096).collect();
            (Some(code), Some(text), None)
        }
        Err(e) if e.is_timeout() => (None, None, Some("timeout".to_owned())),
        Err(e) => (None, None, Some(format!("connection failed: {e}"))),
    };
    let ok = status_code.is_some_and(|c| (200..300).contains(&c));
    let mut st = sim.st();
    let seq = st.next_delivery_seq();
    let d = DeliveryAttempt {
        seq,
        webhook_id: prep.webhook_id.to_string(),
        event_id: event_id.to_string(),
        event_type: prep.event_type,
        url: prep.url,
        headers: prep.headers,
        body: String::from_utf8_lossy(&prep.body).into_owned(),
        attempt: opts.attempt,
        at: iso(sim.now_ms()),
        status_code,
        response_body,
        error,
        outcome: if ok {
            DeliveryOutcome::Delivered
        } else {
            DeliveryOutcome::Failed
        },
        duplicate: opts.duplicate,
        bad_signature: prep.bad_signature,
        redelivery: opts.redelivery,
    };
    st.deliveries.push(d.clone());
    Some(d)
}

async fn run_delivery_job(sim: &Sim, j: DeliverJob) {
    let opts = AttemptOpts {
        attempt: j.attempt,
        duplicate: j.duplicate,
        redelivery: false,
        faults: true,
    };
    let result = attempt(sim, j.event_id, opts).await;
    let now = sim.now_ms();
    let mut st = sim.st();
    let duplicate_fault = st.faults.duplicate;
    let Some(ev) = st.events.get_mut(&j.event_id) else {
        return;
    };
    let Some(d) = result else {
        if !j.duplicate && ev.status == EventStatus::Pending {
            ev.status = EventStatus::Failed;
            ev.error = Some("webhook inactive or deleted".into());
            ev.completed_ms = Some(now);
        }
        return;
    };
    ev.attempts += 1;
    ev.http_status = d.status_code;
    ev.response_body.clone_from(&d.response_body);
    ev.error.clone_from(&d.error);
    if j.duplicate {
        return;
    }
    let webhook_id = ev.webhook_id;
    let delivered = d.outcome == DeliveryOutcome::Delivered;
    if delivered {
        ev.status = EventStatus::Delivered;
        ev.completed_ms = Some(now);
    }
    let auto_disable = sim.cfg.auto_disable_after;
    let retry_scale = sim.cfg.retry_scale;
    let Some(w) = st.webhooks.iter_mut().find(|w| w.id == webhook_id) else {
        return;
    };
    if delivered {
        w.consecutive_failures = 0;
        w.last_success_ms = Some(now);
        if duplicate_fault {
            st.schedule(
                now,
                Job::Deliver(DeliverJob {
                    duplicate: true,
                    ..j
                }),
            );
        }
    } else if j.attempt <= w.retry_count {
        // Backoff 1, 2, 4, 8, 16 s (CONTRACT §8), scaled for tests.
        let base = 1000i64 << (j.attempt - 1).min(4);
        let due = now + (base as f64 * retry_scale.max(0.0)) as i64;
        st.schedule(
            due,
            Job::Deliver(DeliverJob {
                attempt: j.attempt + 1,
                ..j
            }),
        );
    } else {
        w.consecutive_failures += 1;
        if w.consecutive_failures >= auto_disable {
            w.is_active = false;
            w.updated_ms = Some(now);
            tracing::info!(webhook.id = %w.id, "webhook auto-disabled after consecutive failures");
        }
        if let Some(ev) = st.events.get_mut(&j.event_id) {
            ev.status = EventStatus::Failed;
            ev.completed_ms = Some(now);
        }
    }
}
