//! Typed SentDM v3 requests and responses (CONTRACT §2).
//!
//! Responses are deliberately lenient: every field is optional or defaulted and unknown
//! fields are ignored, because SentDM adds fields often and its docs disagree on casing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Message status; parsed case-insensitively, unknown words kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    Accepted,
    Queued,
    Scheduled,
    Processed,
    Routed,
    Sent,
    Delivered,
    Read,
    Failed,
    Blocked,
    Filtered,
    Cancelled,
    Received,
    Other(String),
}

impl MessageStatus {
    pub fn parse(s: &str) -> Self {
        match s.trim().to_ascii_uppercase().as_str() {
            "ACCEPTED" => Self::Accepted,
            "QUEUED" => Self::Queued,
            "SCHEDULED" => Self::Scheduled,
            "PROCESSED" => Self::Processed,
            "ROUTED" => Self::Routed,
            "SENT" => Self::Sent,
            "DELIVERED" => Self::Delivered,
            "READ" => Self::Read,
            "FAILED" => Self::Failed,
            "BLOCKED" => Self::Blocked,
            "FILTERED" => Self::Filtered,
            "CANCELLED" | "CANCELED" => Self::Cancelled,
            "RECEIVED" => Self::Received,
            _ => Self::Other(s.to_owned()),
        }
    }

    /// The UPPERCASE wire form.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Accepted => "ACCEPTED",
            Self::Queued => "QUEUED",
            Self::Scheduled => "SCHEDULED",
            Self::Processed => "PROCESSED",
            Self::Routed => "ROUTED",
            Self::Sent => "SENT",
            Self::Delivered => "DELIVERED",
            Self::Read => "READ",
            Self::Failed => "FAILED",
            Self::Blocked => "BLOCKED",
            Self::Filtered => "FILTERED",
            Self::Cancelled => "CANCELLED",
            Self::Received => "RECEIVED",
            Self::Other(s) => s,
        }
    }

    /// No further transition is expected without a resend (CONTRACT §3.1).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Read | Self::Failed | Self::Blocked | Self::Filtered | Self::Cancelled
        )
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MessageStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

/// `meta` of the response envelope.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Meta {
    pub request_id: Option<String>,
    pub timestamp: Option<String>,
    pub version: Option<String>,
    pub response_time_ms: Option<f64>,
}

/// `data.pagination` of list endpoints (CONTRACT §1.5).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SentDmPagination))]
#[serde(default)]
pub struct Pagination {
    pub page: u32,
    pub page_size: u32,
    pub total_count: u64,
    pub total_pages: u32,
    pub has_more: bool,
}

/// One page of a list endpoint.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SentDmPage))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub pagination: Pagination,
}

/// Query for list endpoints. SentDM marks both fields required, so both are always sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            page: 1,
            page_size: 20,
        }
    }
}

/// `GET /v3/me`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Account {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<String>,
    pub organization_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub status: Option<String>,
    pub channels: Channels,
    pub sending_phone_number: Option<String>,
    pub profiles: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Channels {
    pub sms: ChannelInfo,
    pub whatsapp: ChannelInfo,
    pub rcs: ChannelInfo,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ChannelInfo {
    pub configured: bool,
    pub phone_number: Option<String>,
    pub business_name: Option<String>,
}

/// Template reference in a send. Send exactly one of `id` / `name` (prefer `id`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TemplateRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Parameter values are strings on the wire (CONTRACT §7.16).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub parameters: BTreeMap<String, String>,
}

/// `POST /v3/messages` body. `channel` is the singular API name with an array value; the
/// API's own `channels` (a sender-number map) is deliberately not modelled (CONTRACT §7.15).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendMessageRequest {
    pub to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `data` of a 202 send response.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SendMessageResponse {
    /// `QUEUED` normally; one docs example says `accepted`. Either means "accepted".
    pub status: Option<String>,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    pub body: Option<String>,
    pub recipients: Vec<SendRecipient>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct SendRecipient {
    pub message_id: String,
    pub to: String,
    /// `None` when SentDM picks the channel (`channel: ["sent"]` or omitted).
    pub channel: Option<String>,
    pub body: Option<String>,
}

/// What `send_message` returns: the response plus what a caller must persist.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub response: SendMessageResponse,
    /// The key actually sent (caller's or generated), for reuse on a later resubmission.
    pub idempotency_key: String,
    /// SentDM answered from its idempotency cache (`Idempotent-Replayed: true`).
    pub replayed: bool,
    pub sandbox: bool,
    pub request_id: Option<String>,
}

/// `GET /v3/messages/{id}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SentDmMessage))]
#[serde(default)]
pub struct Message {
    pub id: String,
    pub customer_id: Option<String>,
    pub phone: Option<String>,
    pub direction: Option<String>,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    pub channel: Option<String>,
    /// SentDM's word, uppercase (`DELIVERED`); unknown words are passed on as they are.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub status: Option<MessageStatus>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub created_at: Option<String>,
    pub scheduled_at: Option<String>,
    pub message_body: Option<MessageBody>,
    pub events: Vec<MessageEvent>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SentDmMessageBody))]
#[serde(default)]
pub struct MessageBody {
    pub header: Option<String>,
    pub content: Option<String>,
    pub footer: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SentDmMessageEvent))]
#[serde(default)]
pub struct MessageEvent {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub status: Option<MessageStatus>,
    pub timestamp: Option<String>,
    pub description: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
}

/// `GET /v3/messages/{id}/activities` (newest first).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SentDmMessageActivities))]
#[serde(default)]
pub struct MessageActivities {
    pub message_id: String,
    pub activities: Vec<Activity>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SentDmActivity))]
#[serde(default)]
pub struct Activity {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub status: Option<MessageStatus>,
    pub description: Option<String>,
    pub from: Option<String>,
    pub timestamp: Option<String>,
    /// Prices are strings with 4 decimals on this endpoint.
    pub price: Option<String>,
    pub active_contact_price: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
}

/// Template filters for `GET /v3/templates`.
#[derive(Debug, Clone, Default)]
pub struct TemplateQuery {
    pub page: PageRequest,
    pub search: Option<String>,
    pub status: Option<String>,
    pub category: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SentDmTemplate))]
#[serde(default)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub category: Option<String>,
    pub language: Option<String>,
    pub status: Option<String>,
    pub channels: Vec<String>,
    pub variables: Vec<String>,
    pub is_published: Option<bool>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// Promised by the docs, absent from the SDK model: optional.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub definition: Option<serde_json::Value>,
}

/// Desired webhook configuration for create / update (full replacement on update).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookRequest {
    pub display_name: String,
    pub endpoint_url: String,
    pub event_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_filters: Option<BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

impl fmt::Debug for WebhookRequest {
    // The endpoint URL may carry `?api_key=...`; keep the query out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRequest")
            .field("display_name", &self.display_name)
            .field("endpoint_url", &redact_query(&self.endpoint_url))
            .field("event_types", &self.event_types)
            .field("event_filters", &self.event_filters)
            .field("retry_count", &self.retry_count)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// Webhook object (CONTRACT §2.7).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Webhook {
    pub id: String,
    pub customer_id: Option<String>,
    pub display_name: Option<String>,
    pub endpoint_url: String,
    /// Present in full on create and rotate only; never depend on reading it back.
    pub signing_secret: Option<String>,
    pub is_active: bool,
    pub event_types: Vec<String>,
    pub event_filters: Option<BTreeMap<String, Vec<String>>>,
    pub retry_count: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub last_delivery_attempt_at: Option<String>,
    pub last_successful_delivery_at: Option<String>,
    pub consecutive_failures: u32,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("display_name", &self.display_name)
            .field("endpoint_url", &redact_query(&self.endpoint_url))
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "whsec_***"),
            )
            .field("is_active", &self.is_active)
            .field("event_types", &self.event_types)
            .field("event_filters", &self.event_filters)
            .field("consecutive_failures", &self.consecutive_failures)
            .finish_non_exhaustive()
    }
}

/// Result of `POST /v3/webhooks/{id}/test`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct WebhookTestResult {
    pub success: bool,
    pub message: Option<String>,
}

/// One entry of `GET /v3/webhooks/event-types`; `sub_types` nest recursively.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EventType {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub is_active: Option<bool>,
    pub sub_types: Vec<EventType>,
}

impl EventType {
    /// Every `name` in a (possibly nested, possibly flat) list, depth first.
    pub fn flatten_names(types: &[EventType]) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(types: &[EventType], out: &mut Vec<String>) {
            for t in types {
                out.push(t.name.clone());
                walk(&t.sub_types, out);
            }
        }
        walk(types, &mut out);
        out
    }
}

/// One row of `GET /v3/webhooks/{id}/events` (one per event, not per attempt).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct WebhookEvent {
    pub id: String,
    pub event_type: Option<String>,
    pub event_data: Option<serde_json::Value>,
    pub delivery_status: Option<String>,
    pub http_status_code: Option<u16>,
    pub response_body: Option<String>,
    pub delivery_attempts: u32,
    pub error_message: Option<String>,
    pub created_at: Option<String>,
}

/// Cuts the query string (which may hold an API key) from a URL for logging.
pub(crate) fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?***"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_case_insensitive() {
        assert_eq!(MessageStatus::parse("delivered"), MessageStatus::Delivered);
        assert_eq!(MessageStatus::parse("DELIVERED"), MessageStatus::Delivered);
        assert_eq!(
            MessageStatus::parse("weird"),
            MessageStatus::Other("weird".into())
        );
    }

    #[test]
    fn event_types_flatten_nested_and_flat() {
        let nested: Vec<EventType> = serde_json::from_str(
            r#"[{"name":"message","sub_types":[{"name":"message.sent"},{"name":"message.read","extra":1}]},{"name":"templates"}]"#,
        )
        .unwrap();
        assert_eq!(
            EventType::flatten_names(&nested),
            ["message", "message.sent", "message.read", "templates"]
        );
    }

    #[test]
    fn webhook_debug_redacts_secret_and_query() {
        let w = Webhook {
            endpoint_url: "https://h/x?api_key=abc".into(),
            signing_secret: Some("whsec_AAAA".into()),
            ..Default::default()
        };
        let s = format!("{w:?}");
        assert!(!s.contains("abc") && !s.contains("AAAA"), "{s}");
    }
}
