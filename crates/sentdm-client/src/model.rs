//! Typed SentDM v3 requests and responses (CONTRACT §2).
//!
//! Responses are deliberately lenient: every field is optional or defaulted and unknown
//! fields are ignored, because SentDM adds fields often and its docs disagree on casing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Message status (CONTRACT §3.1); parsed case-insensitively, unknown words kept verbatim.
///
/// The one place the status facts live: the fold's rank (§3.3), which statuses are
/// final, failures, still pending, and which SentDM reports by webhook. Users of the
/// client rank and filter through these rather than their own lists of words.
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
    /// Every status SentDM documents, in ladder order then the negative terminals, then
    /// `Received` (an inbound message, not a step of an outbound one).
    pub const ALL: &'static [MessageStatus] = &[
        Self::Accepted,
        Self::Queued,
        Self::Scheduled,
        Self::Processed,
        Self::Routed,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
        Self::Blocked,
        Self::Filtered,
        Self::Cancelled,
        Self::Received,
    ];

    pub fn parse(s: &str) -> Self {
        let word = s.trim();
        Self::ALL
            .iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(word))
            .cloned()
            .unwrap_or_else(|| {
                if word.eq_ignore_ascii_case("CANCELED") {
                    Self::Cancelled
                } else {
                    Self::Other(s.to_owned())
                }
            })
    }

    /// The status for a word SentDM documents (any case, `canceled` too), or `None`.
    pub fn known(s: &str) -> Option<Self> {
        Some(Self::parse(s)).filter(|k| !matches!(k, Self::Other(_)))
    }

    /// The status whose [`lowercase`](Self::lowercase) word is exactly `s` (as stored,
    /// and as filters are spelt: SentDM's filter enum is case-sensitive).
    pub fn from_lowercase(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|k| k.lowercase() == s).cloned()
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

    /// The lowercase word (as stored, and as webhook filter suffixes and sub-types spell
    /// it); an unknown word as it came.
    pub fn lowercase(&self) -> &str {
        match self {
            Self::Accepted => "accepted",
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Processed => "processed",
            Self::Routed => "routed",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Blocked => "blocked",
            Self::Filtered => "filtered",
            Self::Cancelled => "cancelled",
            Self::Received => "received",
            Self::Other(s) => s,
        }
    }

    /// Rank in the status fold (CONTRACT §3.3): the positive ladder 1 (`accepted`,
    /// `queued`, `scheduled`) to 6 (`read`), -1 for the negative terminals, 0 for what
    /// is no step of an outbound message (`received`, unknown words).
    pub fn rank(&self) -> i8 {
        match self {
            Self::Accepted | Self::Queued | Self::Scheduled => 1,
            Self::Processed => 2,
            Self::Routed => 3,
            Self::Sent => 4,
            Self::Delivered => 5,
            Self::Read => 6,
            Self::Failed | Self::Blocked | Self::Filtered | Self::Cancelled => -1,
            Self::Received | Self::Other(_) => 0,
        }
    }

    /// A step of an outbound message the fold can rank (rank ≠ 0).
    pub fn is_ranked(&self) -> bool {
        self.rank() != 0
    }

    /// A negative terminal: the message was not delivered (`failed`, `blocked`,
    /// `filtered`, `cancelled`); its `reason_code` / `reason` say why.
    pub fn is_failure(&self) -> bool {
        self.rank() < 0
    }

    /// No further transition is expected without a resend (CONTRACT §3.1).
    pub fn is_terminal(&self) -> bool {
        self.is_failure() || *self == Self::Read
    }

    /// Nothing replaces it, not even a resend (§3.3 rule 3): `read`, `filtered`,
    /// `cancelled`.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Read | Self::Filtered | Self::Cancelled)
    }

    /// A terminal a resend may leave (`failed`, `blocked`: §3.2, same message id).
    pub fn is_resendable(&self) -> bool {
        matches!(self, Self::Failed | Self::Blocked)
    }

    /// Accepted by SentDM and neither delivered nor stopped yet: a record in such a
    /// status is waiting for a webhook.
    pub fn is_pending(&self) -> bool {
        (1..=4).contains(&self.rank())
    }

    /// SentDM reports it by webhook (`message.<status>`, the word being the
    /// `event_filters` suffix); `accepted` and `processed` appear in activities only.
    pub fn has_webhook(&self) -> bool {
        !matches!(self, Self::Accepted | Self::Processed | Self::Other(_))
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
pub struct WebhookEventType {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub is_active: Option<bool>,
    pub sub_types: Vec<WebhookEventType>,
}

impl WebhookEventType {
    /// Every `name` in a (possibly nested, possibly flat) list, depth first.
    pub fn flatten_names(types: &[WebhookEventType]) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(types: &[WebhookEventType], out: &mut Vec<String>) {
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
    fn every_known_status_round_trips_in_both_cases() {
        for s in MessageStatus::ALL {
            assert_eq!(&MessageStatus::parse(s.as_str()), s);
            assert_eq!(MessageStatus::known(s.lowercase()).as_ref(), Some(s));
            assert_eq!(s.lowercase(), s.as_str().to_ascii_lowercase());
        }
        assert_eq!(
            MessageStatus::known(" Canceled "),
            Some(MessageStatus::Cancelled)
        );
        assert_eq!(MessageStatus::known("opened"), None);
        assert_eq!(MessageStatus::from_lowercase("DELIVERED"), None);
        assert_eq!(
            MessageStatus::from_lowercase("delivered"),
            Some(MessageStatus::Delivered)
        );
        assert_eq!(MessageStatus::ALL.len(), 13, "CONTRACT §3.1 lists 13");
    }

    #[test]
    fn ranks_follow_the_contract_ladder() {
        use MessageStatus as S;
        let ladder = [
            S::Queued,
            S::Processed,
            S::Routed,
            S::Sent,
            S::Delivered,
            S::Read,
        ];
        for pair in ladder.windows(2) {
            assert!(pair[0].rank() < pair[1].rank(), "{pair:?}");
        }
        assert_eq!(S::Accepted.rank(), S::Queued.rank());
        assert_eq!(S::Scheduled.rank(), S::Queued.rank());
        for s in [S::Failed, S::Blocked, S::Filtered, S::Cancelled] {
            assert_eq!(s.rank(), -1, "{s}");
            assert!(s.is_failure() && s.is_terminal() && !s.is_pending(), "{s}");
        }
        assert_eq!(S::Received.rank(), 0);
        assert_eq!(S::Other("exploded".into()).rank(), 0);
        let ranked: Vec<_> = S::ALL.iter().filter(|s| s.is_ranked()).collect();
        assert_eq!(ranked.len(), 12, "all but received");
    }

    #[test]
    fn final_resendable_pending_and_webhook_statuses() {
        use MessageStatus as S;
        let which = |f: fn(&S) -> bool| -> Vec<&str> {
            S::ALL.iter().filter(|s| f(s)).map(S::lowercase).collect()
        };
        assert_eq!(which(S::is_final), ["read", "filtered", "cancelled"]);
        assert_eq!(which(S::is_resendable), ["failed", "blocked"]);
        assert_eq!(
            which(S::is_terminal),
            ["read", "failed", "blocked", "filtered", "cancelled"]
        );
        assert_eq!(
            which(S::is_pending),
            [
                "accepted",
                "queued",
                "scheduled",
                "processed",
                "routed",
                "sent"
            ]
        );
        assert_eq!(
            which(S::has_webhook),
            [
                "queued",
                "scheduled",
                "routed",
                "sent",
                "delivered",
                "read",
                "failed",
                "blocked",
                "filtered",
                "cancelled",
                "received"
            ]
        );
    }

    #[test]
    fn event_types_flatten_nested_and_flat() {
        let nested: Vec<WebhookEventType> = serde_json::from_str(
            r#"[{"name":"message","sub_types":[{"name":"message.sent"},{"name":"message.read","extra":1}]},{"name":"templates"}]"#,
        )
        .unwrap();
        assert_eq!(
            WebhookEventType::flatten_names(&nested),
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
