//! Outbound webhook settings (`GRAPHAGENT_WEBHOOK_*`): their defaults, how they are
//! read from a settings [`Source`] and checked, schedule parsing, allow-list entries.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::settings_source::{Fields, Key, SettingError, SettingsErrors, Source};

/// How outbound webhooks are delivered. Defaults follow svix-server where the issue is
/// silent (see `docs/decisions.md`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Run the delivery worker and the payload cleaner in this process
    /// (`GRAPHAGENT_WEBHOOK_WORKER`, default true). The API works either way.
    pub worker: bool,
    /// Delays before each *retry*; the first attempt is immediate, so there are
    /// `retry_schedule.len() + 1` attempts in all (`GRAPHAGENT_WEBHOOK_RETRY_SCHEDULE`,
    /// e.g. `5s,5m,30m,2h,5h,10h,10h`). ±20 % jitter is added to each delay.
    pub retry_schedule: Vec<Duration>,
    /// Per-attempt timeout, 1–30 s (`GRAPHAGENT_WEBHOOK_TIMEOUT_SECS`, default 15).
    pub timeout: Duration,
    /// Deliveries in progress at once in this process: claimed, being attempted, or
    /// waiting for their outcome to be written (`GRAPHAGENT_WEBHOOK_MAX_CONCURRENCY`, 256).
    pub max_concurrency: usize,
    /// Attempts in flight at once per subscription in this process
    /// (`GRAPHAGENT_WEBHOOK_PER_SUBSCRIPTION_CONCURRENCY`, 32). Sized from `tools/bench`
    /// (one subscriber, ~3,000 events/s in): at 4 (and 32 per process) the lag p99 was
    /// 13–15 s, at 32 (and 256) 3.4–4.8 s; past that the cores bind (docs/decisions.md).
    pub per_subscription_concurrency: usize,
    /// Disable a subscription after this many consecutive failed events
    /// (`GRAPHAGENT_WEBHOOK_DISABLE_AFTER_FAILURES`, 20).
    pub disable_after_failures: u32,
    /// … or when its events have been failing (no success) for this long
    /// (`GRAPHAGENT_WEBHOOK_DISABLE_AFTER_HOURS`, 120 h).
    pub disable_after_failing_for: Duration,
    /// Accept `http://` URLs and loopback destinations (127.0.0.0/8, ::1, their
    /// IPv4-mapped form, `localhost` and `*.localhost`). For development and tests only
    /// (`GRAPHAGENT_WEBHOOK_ALLOW_HTTP_LOOPBACK`, false).
    pub allow_http_loopback: bool,
    /// Destinations that are not public unicast but allowed anyway: CIDRs (`10.0.0.0/8`,
    /// also covering that IPv4 range's IPv4-mapped, NAT64 and ISATAP forms), addresses or
    /// host names (`GRAPHAGENT_WEBHOOK_ALLOWED_PRIVATE`, comma-separated).
    pub allowed_private: Vec<String>,
    /// How long event payloads are kept (`GRAPHAGENT_WEBHOOK_PAYLOAD_RETENTION_DAYS`, 1–90,
    /// default 30). Attempt metadata is kept.
    pub payload_retention: Duration,
    /// How long the previous secret keeps signing after a rotation
    /// (`GRAPHAGENT_WEBHOOK_ROTATION_GRACE_HOURS`, 24).
    pub rotation_grace: Duration,
    /// How often the worker looks for due work besides being woken
    /// (`GRAPHAGENT_WEBHOOK_POLL_MS`, 1000).
    pub poll_interval: Duration,
    /// How often the cleaner runs (`GRAPHAGENT_WEBHOOK_CLEANER_INTERVAL_SECS`, 3600).
    pub cleaner_interval: Duration,
    /// How long a claimed attempt is leased before another worker may take it over;
    /// always at least the timeout plus 30 s.
    pub lease: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        let s = |n: u64| Duration::from_secs(n);
        Self {
            worker: true,
            retry_schedule: vec![s(5), s(300), s(1800), s(7200), s(18000), s(36000), s(36000)],
            timeout: s(15),
            max_concurrency: 256,
            per_subscription_concurrency: 32,
            disable_after_failures: 20,
            disable_after_failing_for: s(120 * 3600),
            allow_http_loopback: false,
            allowed_private: Vec::new(),
            payload_retention: s(30 * 86400),
            rotation_grace: s(24 * 3600),
            poll_interval: Duration::from_millis(1000),
            cleaner_interval: s(3600),
            lease: s(60),
        }
    }
}

/// Parse `5s,5m,30m,2h`: comma-separated durations in humantime's forms (`20ms`, `5s`,
/// `5m`, `2h`, `1h 30m`, `1d`); a bare number is seconds.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_duration)
        .collect()
}

fn parse_duration(part: &str) -> Result<Duration, String> {
    match part.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(part)
            .map_err(|_| format!("`{part}` is not a duration such as 5s, 5m or 2h")),
    }
}

/// Most retries a schedule may hold.
const MAX_RETRIES: usize = 20;

impl WebhookSettings {
    /// The settings these are read from.
    pub const KEYS: &'static [Key] = &[
        Key::plain("webhook_worker"),
        Key::plain("webhook_retry_schedule"),
        Key::plain("webhook_timeout_secs"),
        Key::plain("webhook_max_concurrency"),
        Key::plain("webhook_per_subscription_concurrency"),
        Key::plain("webhook_disable_after_failures"),
        Key::plain("webhook_disable_after_hours"),
        Key::plain("webhook_allow_http_loopback"),
        Key::plain("webhook_allowed_private"),
        Key::plain("webhook_payload_retention_days"),
        Key::plain("webhook_rotation_grace_hours"),
        Key::plain("webhook_poll_ms"),
        Key::plain("webhook_cleaner_interval_secs"),
    ];

    /// Settings from `source` (`GRAPHAGENT_WEBHOOK_*`) over the defaults, checked; every
    /// problem, not just the first.
    pub fn from_source(source: &Source) -> Result<Self, SettingsErrors> {
        let mut f = Fields::new(source, Self::KEYS);
        let d = Self::default();
        let hours = |n: u64| Duration::from_secs(n.saturating_mul(3600));
        let s = Self {
            worker: f.flag("webhook_worker").unwrap_or(d.worker),
            retry_schedule: f
                .parse(
                    "webhook_retry_schedule",
                    "comma-separated delays such as 5s,5m,2h (ms, s, m, h, d; a bare number is seconds)",
                    |t| parse_schedule(t).ok(),
                )
                .unwrap_or(d.retry_schedule),
            timeout: f
                .whole("webhook_timeout_secs", "seconds")
                .map_or(d.timeout, Duration::from_secs),
            max_concurrency: f
                .whole("webhook_max_concurrency", "attempts")
                .unwrap_or(d.max_concurrency),
            per_subscription_concurrency: f
                .whole("webhook_per_subscription_concurrency", "attempts")
                .unwrap_or(d.per_subscription_concurrency),
            disable_after_failures: f
                .whole("webhook_disable_after_failures", "failures")
                .unwrap_or(d.disable_after_failures),
            disable_after_failing_for: f
                .whole("webhook_disable_after_hours", "hours")
                .map_or(d.disable_after_failing_for, hours),
            allow_http_loopback: f
                .flag("webhook_allow_http_loopback")
                .unwrap_or(d.allow_http_loopback),
            allowed_private: f
                .list("webhook_allowed_private")
                .unwrap_or(d.allowed_private),
            payload_retention: f
                .whole("webhook_payload_retention_days", "days")
                .map_or(d.payload_retention, |n: u64| {
                    Duration::from_secs(n.saturating_mul(86_400))
                }),
            rotation_grace: f
                .whole("webhook_rotation_grace_hours", "hours")
                .map_or(d.rotation_grace, hours),
            poll_interval: f
                .whole("webhook_poll_ms", "milliseconds")
                .map_or(d.poll_interval, Duration::from_millis),
            cleaner_interval: f
                .whole("webhook_cleaner_interval_secs", "seconds")
                .map_or(d.cleaner_interval, Duration::from_secs),
            lease: d.lease,
        };
        f.checked(s, |s| s.validate(source))
    }

    /// Range checks; every problem, not just the first, named as `source` has them.
    pub fn validate(&self, source: &Source) -> Vec<SettingError> {
        let mut problems = Vec::new();
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(30) {
            problems.push(source.error(
                "webhook_timeout_secs",
                format!("expected 1 to 30 seconds, got {}", self.timeout.as_secs()),
            ));
        }
        for (key, value) in [
            ("webhook_max_concurrency", self.max_concurrency),
            (
                "webhook_per_subscription_concurrency",
                self.per_subscription_concurrency,
            ),
            (
                "webhook_disable_after_failures",
                self.disable_after_failures as usize,
            ),
        ] {
            if value == 0 {
                problems.push(source.error(key, "expected at least 1, got 0"));
            }
        }
        if self.retry_schedule.len() > MAX_RETRIES {
            problems.push(source.error(
                "webhook_retry_schedule",
                format!(
                    "expected at most {MAX_RETRIES} delays, got {}",
                    self.retry_schedule.len()
                ),
            ));
        }
        for (key, value) in [
            ("webhook_payload_retention_days", self.payload_retention),
            ("webhook_poll_ms", self.poll_interval),
            ("webhook_cleaner_interval_secs", self.cleaner_interval),
        ] {
            if value.is_zero() {
                problems.push(source.error(key, "expected at least 1, got 0"));
            }
        }
        for entry in &self.allowed_private {
            if entry.contains('/') && parse_net(entry).is_none() {
                problems.push(source.invalid(
                    &Key::plain("webhook_allowed_private"),
                    "CIDRs such as 10.0.0.0/8, addresses or host names",
                    entry,
                ));
            }
        }
        problems
    }

    /// The lease actually used: never shorter than the timeout plus 30 s.
    pub(crate) fn effective_lease(&self) -> Duration {
        self.lease.max(self.timeout + Duration::from_secs(30))
    }
}

/// An allow-list entry as a network: a CIDR (`10.0.0.0/8`) or one address (`10.1.2.3`,
/// `fd00::1`). `None` for anything else, which is then a host name.
pub(crate) fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_parses_units() {
        assert_eq!(
            parse_schedule("5s, 5m,2h,20ms,7,1h 30m,1d").expect("parses"),
            vec![
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200),
                Duration::from_millis(20),
                Duration::from_secs(7),
                Duration::from_secs(5400),
                Duration::from_secs(86_400),
            ]
        );
        assert!(parse_schedule("soon").is_err());
        assert!(parse_schedule("5 parsecs").is_err());
        assert!(parse_schedule("-5s").is_err());
    }

    #[test]
    fn allow_list_entries_parse_as_networks_or_host_names() {
        let net = |t: &str| parse_net(t).map(|n| n.to_string());
        assert_eq!(net("10.0.0.0/8").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(net(" 10.1.2.3 ").as_deref(), Some("10.1.2.3/32"));
        assert_eq!(net("fd00::/8").as_deref(), Some("fd00::/8"));
        assert_eq!(net("::1").as_deref(), Some("::1/128"));
        assert_eq!(net("10.0.0.0/33"), None);
        assert_eq!(net("internal.example"), None);
        let bad = WebhookSettings {
            allowed_private: vec!["10.0.0.0/33".to_owned(), "internal.example".to_owned()],
            ..WebhookSettings::default()
        };
        assert_eq!(bad.validate(&Source::new()).len(), 1);
    }

    #[test]
    fn defaults_are_valid() {
        assert!(
            WebhookSettings::default()
                .validate(&Source::new())
                .is_empty()
        );
        let bad = WebhookSettings {
            timeout: Duration::from_secs(31),
            ..WebhookSettings::default()
        };
        assert_eq!(bad.validate(&Source::new()).len(), 1);
    }

    #[test]
    fn values_are_read_and_each_bad_one_named() {
        let mut source = Source::new();
        source.set_env("webhook_worker", "off");
        source.set_env("webhook_retry_schedule", "1s, 2m");
        source.set_env("webhook_allowed_private", "10.0.0.0/8, hooks.internal");
        source.set_env("webhook_disable_after_hours", "2");
        let s = WebhookSettings::from_source(&source).expect("valid");
        assert!(!s.worker);
        assert_eq!(
            s.retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert_eq!(s.allowed_private, ["10.0.0.0/8", "hooks.internal"]);
        assert_eq!(s.disable_after_failing_for, Duration::from_secs(7200));

        source.set_env("webhook_allow_http_loopback", "sometimes");
        source.set_env("webhook_retry_schedule", "soon");
        source.set_env("webhook_poll_ms", "0");
        source.set_env("webhook_max_concurrency", "0");
        let errors = WebhookSettings::from_source(&source).expect_err("refused");
        let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "GRAPHAGENT_WEBHOOK_RETRY_SCHEDULE: expected comma-separated delays such as \
                 5s,5m,2h (ms, s, m, h, d; a bare number is seconds), got `soon`",
                "GRAPHAGENT_WEBHOOK_ALLOW_HTTP_LOOPBACK: expected true or false, got `sometimes`",
                "GRAPHAGENT_WEBHOOK_MAX_CONCURRENCY: expected at least 1, got 0",
                "GRAPHAGENT_WEBHOOK_POLL_MS: expected at least 1, got 0",
            ]
        );
    }
}
