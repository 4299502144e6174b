//! The rows the webhook tables hold, as the store writes and reads them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::outbox::OutboxEvent;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next scheduled attempt (`next_attempt_at`).
    Pending,
    /// A test event's single manual attempt is under way; never picked by the scheduler.
    Sending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// Failed for good: retries exhausted, a permanent answer, or abandoned.
    Failed,
}

impl DeliveryStatus {
    /// Succeeded or failed: no attempt will follow.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What started an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptTrigger {
    /// The retry schedule; counts towards retries and disabling.
    Scheduled,
    /// A redelivery or test asked for by an admin; schedules nothing, disables nothing.
    Manual,
}

impl std::fmt::Display for AttemptTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
        })
    }
}

/// A subscription as stored. No `Debug`: it holds the signing secrets, which must never
/// reach a log.
#[derive(Clone, Deserialize, Serialize)]
pub(crate) struct SubRow {
    pub key: String,
    pub url: String,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub action_id: Option<String>,
    pub enabled: bool,
    pub secret: String,
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default)]
    pub previous_secret_expires_ms: Option<i64>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub first_failure_ms: Option<i64>,
    #[serde(default)]
    pub disabled_reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl SubRow {
    /// Whether this subscription receives `event`.
    pub(crate) fn matches(&self, event: &OutboxEvent) -> bool {
        self.enabled
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self
                .agent_id
                .as_ref()
                .is_none_or(|a| event.agent_id.as_deref() == Some(a.as_str()))
            && self
                .action_id
                .as_ref()
                .is_none_or(|a| event.action_id.as_deref() == Some(a.as_str()))
    }

    /// Secrets that sign right now: the current one, and the previous one during its grace.
    pub(crate) fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_secret_expires_ms)
            && until > now
        {
            out.push(prev.as_str());
        }
        out
    }
}

/// A delivery as stored: one per (event, subscription), id `{event_id}_{subscription_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveryRow {
    pub key: String,
    pub event_id: String,
    pub subscription_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub scheduled_attempts: u32,
    #[serde(default)]
    pub next_attempt_at: i64,
    /// The lease: who holds it, and until when (epoch ms); `0` / empty when free.
    #[serde(default)]
    pub locked_until: i64,
    #[serde(default)]
    pub lease: String,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<i64>,
}

impl DeliveryRow {
    /// A new delivery of `event` to subscription `sub_id`, due at `now`. Its id is derived
    /// from both, so writing it twice (a repeated fan-out) inserts nothing twice.
    pub(crate) fn new(event: &OutboxEvent, sub_id: &str, now: i64) -> Self {
        Self {
            key: format!("{}_{}", event.key, sub_id),
            event_id: event.key.clone(),
            subscription_id: sub_id.to_owned(),
            event_type: event.event_type.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            scheduled_attempts: 0,
            next_attempt_at: now,
            locked_until: 0,
            lease: String::new(),
            created_ms: now,
            last_attempt_ms: None,
            last_status_code: None,
            last_error: None,
            completed_ms: None,
        }
    }

    /// The row to insert (`id` is the record key).
    pub(crate) fn row(&self) -> serde_json::Value {
        crate::graph::keyed_row(&self.key, self)
    }
}

/// One attempt as stored (and served).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AttemptRow {
    pub key: String,
    pub delivery_id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub trigger: AttemptTrigger,
    pub url: String,
    #[serde(default)]
    pub status_code: Option<u16>,
    pub success: bool,
    pub duration_ms: i64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub response_body: Option<String>,
    pub created_ms: i64,
}
