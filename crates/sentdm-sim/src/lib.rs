//! A local SentDM v3 simulator (CONTRACT §4, §6): same paths, auth, validation, envelopes,
//! pagination, idempotency and sandbox as SentDM, an in-memory store, a status machine on a
//! virtual clock, and real signed HTTP webhooks with retries, auto-disable and fault
//! injection.
//!
//! Tests start it in-process on `127.0.0.1:0`:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use sentdm_sim::Simulator;
//!
//! let sim = Simulator::builder()
//!     .api_key("k")
//!     .seed(1)
//!     .step_delay(Duration::ZERO)
//!     .retry_scale(0.0)
//!     .manual_clock()
//!     .start()
//!     .await?;
//! // ... point the client at sim.base_url(), send, then:
//! sim.settle().await; // run everything that is due (status steps, deliveries)
//! let deliveries = sim.deliveries();
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod control;
mod core;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::core::{Clock, Shared, Sim, State};

/// Id of the seeded, APPROVED `order_confirmation` template (variables `name`, `order_id`).
pub const ORDER_CONFIRMATION_ID: &str = "7ba7b820-9dad-11d1-80b4-00c04fd430c8";
/// Id of the seeded, PENDING `promo_pending` template (sends become BLOCKED).
pub const PROMO_PENDING_ID: &str = "7ba7b821-9dad-11d1-80b4-00c04fd430c8";
/// Account id of the seeded account (`customer_id` on its objects).
pub const ACCOUNT_ID: &str = core::ACCOUNT_ID;
/// A conventional organization id for [`SimAccount::organization`] (used by the binary).
pub const ORGANIZATION_ID: &str = "d290f1ee-6c54-4b01-90e6-d701748f0851";

/// Which key carries the webhook sub-type (receivers must accept both, CONTRACT §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubtypeKey {
    #[default]
    SubType,
    Event,
    Both,
}

/// Webhook and API fault injection; every field off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Deliver each event twice (the second after the first got a 2xx).
    pub duplicate: bool,
    /// Hold a message's events until its pipeline ends, then deliver them shuffled.
    pub reorder: bool,
    /// Probability that an event is never delivered (recovery-by-refresh tests).
    pub drop_rate: f64,
    /// Event types (`message.delivered`, ...) that are always dropped.
    pub drop_sub_types: Vec<String>,
    /// Probability that an attempt is signed with a wrong key.
    pub bad_signature_rate: f64,
    /// Added to every `/v3` request, in real time.
    #[serde(with = "millis")]
    pub latency: Duration,
    /// Probability that a `/v3` request is answered 503 before it is processed.
    pub api_error_rate: f64,
    /// Probability that a `/v3` request is answered 429 with `Retry-After`.
    pub api_rate_limit_rate: f64,
    /// `Retry-After` seconds for injected 429s.
    pub retry_after_secs: u64,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A one-shot API fault: the next `times` matching `/v3` requests get `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiFault {
    /// `GET`, `POST`, ...; `None` matches any method.
    #[serde(default)]
    pub method: Option<String>,
    /// Matches request paths starting with this (e.g. `/v3/messages`); `None` matches all.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// 429 (with `Retry-After`) or a 5xx.
    pub status: u16,
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    #[serde(default = "one")]
    pub times: u32,
    /// Process the request normally, then replace the response (a lost response): the
    /// way to prove a retried send is not sent twice.
    #[serde(default)]
    pub after_processing: bool,
    /// Error code in the body; defaults to SentDM's usual code for `status`.
    #[serde(default)]
    pub code: Option<String>,
}

fn one() -> u32 {
    1
}

impl ApiFault {
    /// `status` once, before processing, for any request.
    pub fn status(status: u16) -> Self {
        Self {
            method: None,
            path_prefix: None,
            status,
            retry_after_secs: None,
            times: 1,
            after_processing: false,
            code: None,
        }
    }

    /// 429 with `Retry-After: secs`.
    pub fn rate_limited(secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..Self::status(429)
        }
    }

    pub fn on(mut self, method: &str, path_prefix: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self.path_prefix = Some(path_prefix.to_owned());
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    /// Overrides the error code (e.g. 422 with `BUSINESS_004`).
    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    pub fn after_processing(mut self) -> Self {
        self.after_processing = true;
        self
    }

    fn matches(&self, method: &str, path: &str, after: bool) -> bool {
        self.after_processing == after
            && self.times > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered,
    Failed,
    /// Never sent (fault injection).
    Dropped,
}

/// One webhook delivery attempt, as the receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// 1-based position in the delivery log.
    pub seq: u64,
    pub webhook_id: String,
    /// Stable per event across retries (`X-Webhook-Event-ID`).
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// Exact body bytes (UTF-8).
    pub body: String,
    /// 1 for the first attempt; 0 for dropped events.
    pub attempt: u32,
    /// Simulator time of the attempt.
    pub at: String,
    pub status_code: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub outcome: DeliveryOutcome,
    pub duplicate: bool,
    pub bad_signature: bool,
    pub redelivery: bool,
}

impl DeliveryAttempt {
    /// The body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// `payload.message_id` of a message event.
    pub fn message_id(&self) -> Option<String> {
        self.json()["payload"]["message_id"]
            .as_str()
            .map(str::to_owned)
    }

    /// `payload.message_status` of a message event.
    pub fn message_status(&self) -> Option<String> {
        self.json()["payload"]["message_status"]
            .as_str()
            .map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One `/v3` request as received, for conformance checks of what a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub idempotency_key: Option<String>,
    /// Parsed JSON body; `None` when empty or not JSON.
    pub body: Option<Value>,
}

/// Kind of account an API key belongs to (`data.type` of `GET /v3/me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    User,
    /// May send `x-profile-id` to act as one of its profiles.
    Organization,
    /// A child profile of an organization.
    Profile,
}

/// An extra API key and the account behind it (the seeded `user` account always exists).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAccount {
    /// `None` for a profile reachable only through its organization's key.
    pub api_key: Option<String>,
    /// UUID; also the `customer_id` of everything the account creates.
    pub id: String,
    pub kind: AccountKind,
    /// Owning organization's id, for profiles.
    pub organization_id: Option<String>,
    pub name: String,
}

impl std::fmt::Debug for SimAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAccount")
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

impl SimAccount {
    pub fn organization(api_key: &str, id: &str) -> Self {
        Self {
            api_key: Some(api_key.to_owned()),
            id: id.to_owned(),
            kind: AccountKind::Organization,
            organization_id: None,
            name: "Simulated Organization".into(),
        }
    }

    pub fn profile(api_key: Option<&str>, id: &str, organization_id: &str) -> Self {
        Self {
            api_key: api_key.map(str::to_owned),
            id: id.to_owned(),
            kind: AccountKind::Profile,
            organization_id: Some(organization_id.to_owned()),
            name: "Simulated Profile".into(),
        }
    }
}

/// Simulator configuration (CONTRACT §6.1). Prefer [`Simulator::builder`].
#[derive(Clone)]
pub struct SimConfig {
    pub api_key: String,
    /// Seeds ids, secrets and every random fault decision.
    pub seed: Option<u64>,
    /// Virtual time between status steps (default 200 ms; 0 runs a pipeline at once).
    pub step_delay: Duration,
    /// Time moves only through `advance`; jobs due "now" still run.
    pub manual_clock: bool,
    /// Start time (unix ms) of the virtual clock; default: wall time.
    pub start_ms: Option<i64>,
    pub read_receipts: bool,
    /// Multiplies the webhook retry backoff (1, 2, 4, 8, 16 s); 0 retries at once.
    pub retry_scale: f64,
    pub subtype_key: SubtypeKey,
    pub emit_event_id_header: bool,
    pub emit_event_type_header: bool,
    /// `message.queued` carries `"unknown"` channel and numbers, like the real capture.
    pub early_unknown_fields: bool,
    /// Enforce SentDM's rate limits (200/min burst 50; 10/min burst 5 for sensitive).
    pub rate_limits: bool,
    /// Return `signing_secret` on list/get/toggle too (it is always returned on create
    /// and rotate).
    pub signing_secret_in_reads: bool,
    /// Accept `http://` endpoint URLs on any host (default: https anywhere, http only on
    /// loopback).
    pub allow_http_webhooks: bool,
    /// Caps each delivery's timeout below the webhook's `timeout_seconds`.
    pub delivery_timeout_cap: Option<Duration>,
    /// Consecutive failed events before a webhook is disabled.
    pub auto_disable_after: u32,
    pub faults: Faults,
    /// Organizations and profiles besides the seeded `user` account.
    pub extra_accounts: Vec<SimAccount>,
}

impl std::fmt::Debug for SimConfig {
    // Keys stay out of logs even for a simulator: configs get copied into real setups.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("api_key", &"***")
            .field("seed", &self.seed)
            .field("step_delay", &self.step_delay)
            .field("manual_clock", &self.manual_clock)
            .field("retry_scale", &self.retry_scale)
            .field("rate_limits", &self.rate_limits)
            .field("faults", &self.faults)
            .field("extra_accounts", &self.extra_accounts)
            .finish_non_exhaustive()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_key: "test-key".into(),
            seed: None,
            step_delay: Duration::from_millis(200),
            manual_clock: false,
            start_ms: None,
            read_receipts: true,
            retry_scale: 1.0,
            subtype_key: SubtypeKey::SubType,
            emit_event_id_header: true,
            emit_event_type_header: true,
            early_unknown_fields: true,
            rate_limits: false,
            signing_secret_in_reads: false,
            allow_http_webhooks: false,
            delivery_timeout_cap: None,
            auto_disable_after: 10,
            faults: Faults::default(),
            extra_accounts: Vec::new(),
        }
    }
}

/// Entry point: `Simulator::builder()...start().await`.
pub struct Simulator;

impl Simulator {
    pub fn builder() -> SimBuilder {
        SimBuilder {
            cfg: SimConfig::default(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// Builder for a running simulator.
#[derive(Debug, Clone)]
pub struct SimBuilder {
    cfg: SimConfig,
    bind: SocketAddr,
}

impl SimBuilder {
    pub fn config(mut self, cfg: SimConfig) -> Self {
        self.cfg = cfg;
        self
    }

    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.cfg.api_key = key.into();
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.cfg.seed = Some(seed);
        self
    }

    pub fn step_delay(mut self, d: Duration) -> Self {
        self.cfg.step_delay = d;
        self
    }

    pub fn manual_clock(mut self) -> Self {
        self.cfg.manual_clock = true;
        self
    }

    pub fn start_time_ms(mut self, unix_ms: i64) -> Self {
        self.cfg.start_ms = Some(unix_ms);
        self
    }

    pub fn read_receipts(mut self, on: bool) -> Self {
        self.cfg.read_receipts = on;
        self
    }

    pub fn retry_scale(mut self, scale: f64) -> Self {
        self.cfg.retry_scale = scale;
        self
    }

    pub fn subtype_key(mut self, k: SubtypeKey) -> Self {
        self.cfg.subtype_key = k;
        self
    }

    pub fn emit_event_id_header(mut self, on: bool) -> Self {
        self.cfg.emit_event_id_header = on;
        self
    }

    pub fn rate_limits(mut self, on: bool) -> Self {
        self.cfg.rate_limits = on;
        self
    }

    pub fn allow_http_webhooks(mut self, on: bool) -> Self {
        self.cfg.allow_http_webhooks = on;
        self
    }

    pub fn delivery_timeout_cap(mut self, d: Duration) -> Self {
        self.cfg.delivery_timeout_cap = Some(d);
        self
    }

    /// Reproducible and immediate, for tests: a fixed seed, a manual clock (statuses
    /// advance only when told), no delay between steps or retries, and deliveries time
    /// out after 5 s at most.
    pub fn deterministic(self) -> Self {
        self.seed(7)
            .step_delay(Duration::ZERO)
            .retry_scale(0.0)
            .manual_clock()
            .delivery_timeout_cap(Duration::from_secs(5))
    }

    /// Adds an organization or profile account (see [`SimAccount`]).
    pub fn account(mut self, a: SimAccount) -> Self {
        self.cfg.extra_accounts.push(a);
        self
    }

    pub fn faults(mut self, f: Faults) -> Self {
        self.cfg.faults = f;
        self
    }

    /// Binds, spawns the server and the job driver, and returns a handle.
    pub async fn start(self) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let clock = Clock::new(self.cfg.manual_clock, self.cfg.start_ms);
        let state = State::new(&self.cfg, clock.now_ms());
        let http = reqwest::Client::builder()
            .no_proxy()
            .user_agent("SentDM-Webhooks/sim")
            .build()
            .map_err(std::io::Error::other)?;
        let sim: Sim = Arc::new(Shared {
            cfg: self.cfg,
            clock,
            state: std::sync::Mutex::new(state),
            runner: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            http,
        });
        let app = api::router(sim.clone()).merge(control::router(sim.clone()));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "simulator server stopped");
            }
        });
        let driver = tokio::spawn(drive(sim.clone()));
        Ok(SimHandle {
            sim,
            addr,
            stop: Some(stop_tx),
            server: Some(server),
            driver: Some(driver),
        })
    }
}

/// Runs due jobs whenever woken; with a real clock also sleeps until the next due job.
async fn drive(sim: Sim) {
    loop {
        {
            let _g = sim.runner.lock().await;
            core::run_until(&sim, sim.now_ms()).await;
        }
        let wait = match core::next_due(&sim) {
            Some(due) if !sim.clock.is_manual() => {
                Some(Duration::from_millis((due - sim.now_ms()).max(1) as u64))
            }
            _ => None,
        };
        match wait {
            Some(w) => {
                tokio::select! {
                    () = sim.wake.notified() => {}
                    () = tokio::time::sleep(w) => {}
                }
            }
            None => sim.wake.notified().await,
        }
    }
}

/// A running simulator. Dropping it stops the server; prefer [`SimHandle::shutdown`].
pub struct SimHandle {
    sim: Sim,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    driver: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:<port>`: the client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn api_key(&self) -> &str {
        &self.sim.cfg.api_key
    }

    /// Simulator time, unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.sim.now_ms()
    }

    /// Runs every job that is due now (status steps, deliveries, retries) and returns
    /// once they and their HTTP deliveries have finished.
    pub async fn settle(&self) {
        control::settle(&self.sim).await;
    }

    /// Advances the virtual clock by `d`, running every job that falls due on the way in
    /// order. Works with the real clock too (it shifts the simulator's time).
    pub async fn advance(&self, d: Duration) {
        control::advance(&self.sim, d.as_millis() as i64).await;
    }

    /// Forces a message into `status` now (emitting its webhook) and cancels the rest of
    /// its pipeline; `QUEUED` re-runs the pipeline (a resend). Returns false if unknown.
    pub async fn force_status(
        &self,
        message_id: &str,
        status: &str,
        reason_code: Option<&str>,
        reason: Option<&str>,
    ) -> bool {
        let ok = control::force_status(&self.sim, message_id, status, reason_code, reason);
        self.settle().await;
        ok
    }

    /// Sets a template's status and emits a `templates` event.
    pub async fn set_template_status(&self, template_id: &str, status: &str) -> bool {
        let ok = control::set_template_status(&self.sim, template_id, status, None);
        self.settle().await;
        ok
    }

    /// Every delivery attempt so far, in order.
    pub fn deliveries(&self) -> Vec<DeliveryAttempt> {
        self.sim.st().deliveries.clone()
    }

    pub fn clear_deliveries(&self) {
        self.sim.st().deliveries.clear();
    }

    /// Every `/v3` request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.sim.st().requests.clone()
    }

    /// Resends a stored event byte-identically with a fresh timestamp and signature.
    pub async fn redeliver(&self, webhook_id: &str, event_id: &str) -> Option<DeliveryAttempt> {
        control::redeliver(&self.sim, webhook_id, event_id).await
    }

    pub fn faults(&self) -> Faults {
        self.sim.st().faults.clone()
    }

    pub fn set_faults(&self, f: Faults) {
        self.sim.st().faults = f;
    }

    pub fn push_api_fault(&self, f: ApiFault) {
        self.sim.st().api_faults.push(f);
    }

    /// Current message status as the REST API would report it.
    pub fn message_status(&self, message_id: &str) -> Option<String> {
        let id = message_id.parse().ok()?;
        self.sim.st().messages.get(&id).map(|m| m.status.clone())
    }

    /// Number of stored (non-sandbox) messages.
    pub fn message_count(&self) -> usize {
        self.sim.st().messages.len()
    }

    /// The current signing secret of a webhook (`whsec_...`).
    pub fn webhook_secret(&self, webhook_id: &str) -> Option<String> {
        let id: uuid::Uuid = webhook_id.parse().ok()?;
        self.sim
            .st()
            .webhooks
            .iter()
            .find(|w| w.id == id)
            .map(|w| w.secret.expose().to_owned())
    }

    /// Clears messages, webhooks, events, deliveries, idempotency, faults; reseeds.
    pub async fn reset(&self) {
        control::reset(&self.sim).await;
    }

    /// Stops the server and the job driver.
    pub async fn shutdown(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(d) = self.driver.take() {
            d.abort();
            let _ = d.await;
        }
        if let Some(s) = self.server.take() {
            // Graceful shutdown waits for open connections; do not let a client that keeps
            // one open hang the caller.
            if tokio::time::timeout(Duration::from_secs(5), s)
                .await
                .is_err()
            {
                tracing::warn!("simulator server did not stop within 5 s");
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}
