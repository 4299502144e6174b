//! The action's `context:` in agent.yaml, with the defaults users of the original know
//! and the ranges SentDM accepts (CONTRACT §7.10).

use std::collections::BTreeMap;

use graphagent::FieldError;
use sentdm_client::model::MessageStatus;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Channels SentDM accepts in `channel` (`sent` = SentDM picks).
pub const CHANNELS: &[&str] = &["sms", "whatsapp", "rcs", "mms", "sent"];
/// Most fold writers an action runs: more writers than cores only add conflicts (two
/// writers on two cores measured best; see docs/BENCHMARKS.md).
pub const MAX_FOLD_WRITERS: u32 = 64;
/// Largest `fold_linger_ms`: a wait beyond it would be a latency, not a batching aid.
pub const MAX_FOLD_LINGER_MS: u32 = 100;
/// Event families a SentDM webhook can subscribe to.
pub const EVENT_TYPES: &[&str] = &["message", "templates"];
/// Sub-types usable in `webhook_event_filters.message`: the statuses SentDM reports by
/// webhook, lowercase.
pub fn message_filters() -> impl Iterator<Item = &'static str> {
    MessageStatus::ALL
        .iter()
        .filter(|s| s.has_webhook())
        .map(MessageStatus::lowercase)
}

/// A secret from config: compared and used as is, but serialized as a short fingerprint
/// (the effective config is stored on the action node and shown by the API).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    pub fn fingerprint(&self) -> String {
        let digest = crate::store::digest(&[self.0.as_bytes()]);
        format!("sha256:{}", &digest[..12])
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.fingerprint())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// `context:` of a `sentdm_broadcast` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentDmConfig {
    /// SentDM API base URL.
    pub api_base: String,
    /// API key; usually `${SENTDM_API_KEY}`. When absent the `SENTDM_API_KEY` environment
    /// variable is used. Without either the action loads but is "not configured".
    pub api_key: Option<Secret>,
    /// Channels used when a send names none.
    pub default_channels: Vec<String>,
    /// Template used when a send names none (id preferred over name).
    pub default_template_id: Option<String>,
    pub default_template_name: Option<String>,
    /// Organisation keys only: act as this child profile.
    pub profile_id: Option<String>,
    /// Request timeout towards SentDM, seconds (1–120).
    pub timeout: u64,
    /// Every send in sandbox mode (validated by SentDM, nothing sent).
    pub sandbox: bool,
    /// Name of the webhook registered at SentDM.
    pub webhook_display_name: String,
    /// Event families the webhook subscribes to.
    pub webhook_event_types: Vec<String>,
    /// Sub-types per family; `{}` means all. Default: every `message` sub-type SentDM
    /// reports ([`message_filters`]).
    pub webhook_event_filters: BTreeMap<String, Vec<String>>,
    /// SentDM's retries per event (1–5).
    pub webhook_retry_count: u32,
    /// SentDM's delivery timeout (5–120 s).
    pub webhook_timeout_seconds: u32,
    /// Store one record per sent message.
    pub persist_records: bool,
    /// Also store sandbox sends.
    pub persist_sandbox_sends: bool,
    /// Events kept per record (oldest dropped), 1–1000.
    pub record_event_history_limit: u32,
    /// How often the sweeper looks for records stuck in a non-final status; 0 = off.
    pub sweep_interval_seconds: u64,
    /// How long a record may sit in a non-final status before the sweeper refreshes it.
    pub sweep_stale_after_seconds: u64,
    /// How often the `graphagent_sentdm_records` gauge is recounted from the graph; 0 = off.
    pub metrics_refresh_seconds: u64,
    /// Fold writer tasks (1–64): webhook events are sharded by record over this many
    /// writers, each committing its own batches. Absent: one per core.
    pub fold_writers: Option<u32>,
    /// Milliseconds a fold writer holding fewer than [`LINGER_BELOW`](crate::store::LINGER_BELOW) events waits for
    /// more before it commits (0–100, default 2; 0 = commit at once). Each batch is one
    /// transaction whose cost barely depends on its size, so at a moderate steady rate,
    /// when batches hold one or two events, a short wait shares a transaction among more
    /// events for a little latency. Under load batches fill by themselves: no wait.
    pub fold_linger_ms: u32,
}

impl Default for SentDmConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.sent.dm".into(),
            api_key: None,
            default_channels: vec!["sms".into()],
            default_template_id: None,
            default_template_name: None,
            profile_id: None,
            timeout: 30,
            sandbox: false,
            webhook_display_name: "graphagent SentDM broadcast".into(),
            webhook_event_types: vec!["message".into()],
            // Every status SentDM reports: a filter that leaves one out leaves records
            // of that outcome (a BLOCKED or FILTERED send) in a stale status.
            webhook_event_filters: BTreeMap::from([(
                "message".into(),
                message_filters().map(String::from).collect(),
            )]),
            webhook_retry_count: 3,
            webhook_timeout_seconds: 30,
            persist_records: true,
            persist_sandbox_sends: false,
            record_event_history_limit: 25,
            sweep_interval_seconds: 300,
            sweep_stale_after_seconds: 900,
            metrics_refresh_seconds: 15,
            fold_writers: None,
            fold_linger_ms: 2,
        }
    }
}

impl SentDmConfig {
    /// How many fold writers to run: `fold_writers`, else one per core (at most
    /// [`MAX_FOLD_WRITERS`]).
    pub fn fold_writer_count(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.fold_writers
            .map_or(cores, |n| n as usize)
            .clamp(1, MAX_FOLD_WRITERS as usize)
    }

    /// Range and cross-field checks.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut p = Vec::new();
        let base = self.api_base.trim();
        if !(base.starts_with("https://") || base.starts_with("http://"))
            || reqwest::Url::parse(base).is_err()
        {
            p.push(FieldError::new("api_base", "must be an http(s) URL"));
        }
        if self.api_key.as_ref().is_some_and(|k| k.0.trim().is_empty()) {
            p.push(FieldError::new(
                "api_key",
                "is empty (an unset ${SENTDM_API_KEY:-}?); remove the key or set it",
            ));
        }
        if self.default_channels.is_empty() {
            p.push(FieldError::new(
                "default_channels",
                "must name at least one channel",
            ));
        }
        for (i, c) in self.default_channels.iter().enumerate() {
            if !CHANNELS.contains(&c.as_str()) {
                p.push(FieldError::new(
                    format!("default_channels[{i}]"),
                    format!("unknown channel `{c}`; one of {}", CHANNELS.join(", ")),
                ));
            }
        }
        for (key, v) in [
            ("default_template_id", &self.default_template_id),
            ("default_template_name", &self.default_template_name),
            ("profile_id", &self.profile_id),
        ] {
            if v.as_ref().is_some_and(|s| s.trim().is_empty()) {
                p.push(FieldError::new(key, "must not be empty when given"));
            }
        }
        if !(1..=120).contains(&self.timeout) {
            p.push(FieldError::new("timeout", "must be 1 to 120 seconds"));
        }
        if self.webhook_display_name.trim().is_empty() || self.webhook_display_name.len() > 100 {
            p.push(FieldError::new(
                "webhook_display_name",
                "must be 1 to 100 characters",
            ));
        }
        if self.webhook_event_types.is_empty() {
            p.push(FieldError::new(
                "webhook_event_types",
                "must name at least one family",
            ));
        }
        for (i, t) in self.webhook_event_types.iter().enumerate() {
            if !EVENT_TYPES.contains(&t.as_str()) {
                p.push(FieldError::new(
                    format!("webhook_event_types[{i}]"),
                    format!(
                        "unknown event type `{t}`; one of {}",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        for (family, subs) in &self.webhook_event_filters {
            if !self.webhook_event_types.contains(family) {
                p.push(FieldError::new(
                    format!("webhook_event_filters.{family}"),
                    "filters a family that webhook_event_types does not subscribe to",
                ));
            }
            if family == "message" {
                for (i, s) in subs.iter().enumerate() {
                    if !MessageStatus::from_lowercase(s).is_some_and(|s| s.has_webhook()) {
                        p.push(FieldError::new(
                            format!("webhook_event_filters.message[{i}]"),
                            format!(
                                "unknown sub-type `{s}`; one of {}",
                                message_filters().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        if !(1..=5).contains(&self.webhook_retry_count) {
            p.push(FieldError::new(
                "webhook_retry_count",
                "SentDM accepts 1 to 5",
            ));
        }
        if !(5..=120).contains(&self.webhook_timeout_seconds) {
            p.push(FieldError::new(
                "webhook_timeout_seconds",
                "SentDM accepts 5 to 120 seconds",
            ));
        }
        if !(1..=1000).contains(&self.record_event_history_limit) {
            p.push(FieldError::new(
                "record_event_history_limit",
                "must be 1 to 1000",
            ));
        }
        if self
            .fold_writers
            .is_some_and(|n| !(1..=MAX_FOLD_WRITERS).contains(&n))
        {
            p.push(FieldError::new(
                "fold_writers",
                format!("must be 1 to {MAX_FOLD_WRITERS} (or absent: one per core)"),
            ));
        }
        if self.fold_linger_ms > MAX_FOLD_LINGER_MS {
            p.push(FieldError::new(
                "fold_linger_ms",
                format!("must be 0 to {MAX_FOLD_LINGER_MS} (milliseconds)"),
            ));
        }
        if self.sweep_interval_seconds != 0 && self.sweep_stale_after_seconds == 0 {
            p.push(FieldError::new(
                "sweep_stale_after_seconds",
                "must be > 0 when sweeping",
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_secrets_serialize_as_fingerprints() {
        assert!(SentDmConfig::default().problems().is_empty());
        let c = SentDmConfig {
            api_key: Some(Secret("sk_live_abc".into())),
            ..SentDmConfig::default()
        };
        let json = serde_json::to_string(&c).expect("json");
        assert!(!json.contains("sk_live_abc"), "{json}");
        assert!(json.contains("sha256:"));
        assert_eq!(format!("{:?}", c.api_key), "Some(Secret(***))");
    }

    #[test]
    fn fold_writers_default_to_the_cores_and_take_a_setting() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(SentDmConfig::default().fold_writer_count(), cores.min(64));
        let set = |n| SentDmConfig {
            fold_writers: Some(n),
            ..SentDmConfig::default()
        };
        assert_eq!(set(3).fold_writer_count(), 3);
        assert!(set(64).problems().is_empty());
        assert_eq!(set(65).problems()[0].key, "fold_writers");
    }

    #[test]
    fn the_default_filter_takes_every_status_sentdm_reports() {
        let defaults = SentDmConfig::default();
        let message = &defaults.webhook_event_filters["message"];
        for word in [
            "queued",
            "routed",
            "sent",
            "delivered",
            "read",
            "failed",
            "blocked",
            "filtered",
            "cancelled",
            "scheduled",
            "received",
        ] {
            assert!(
                message.iter().any(|w| w == word),
                "`{word}` missing from {message:?}"
            );
        }
        assert!(
            !message.iter().any(|w| w == "accepted" || w == "processed"),
            "{message:?}"
        );
        let bad = SentDmConfig {
            webhook_event_filters: BTreeMap::from([("message".into(), vec!["Delivered".into()])]),
            ..SentDmConfig::default()
        };
        let problem = &bad.problems()[0];
        assert_eq!(problem.key, "webhook_event_filters.message[0]");
        assert!(
            problem.message.contains("`Delivered`")
                && problem.message.contains("blocked, filtered"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn ranges_name_their_keys() {
        let c = SentDmConfig {
            webhook_retry_count: 0,
            webhook_timeout_seconds: 300,
            default_channels: vec!["sms".into(), "fax".into()],
            webhook_event_filters: BTreeMap::from([("message".into(), vec!["opened".into()])]),
            fold_writers: Some(0),
            fold_linger_ms: MAX_FOLD_LINGER_MS + 1,
            ..SentDmConfig::default()
        };
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "default_channels[1]",
                "webhook_event_filters.message[0]",
                "webhook_retry_count",
                "webhook_timeout_seconds",
                "fold_writers",
                "fold_linger_ms"
            ]
        );
    }
}
