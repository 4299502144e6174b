//! Outbound webhook settings (`GRAPHAGENT_WEBHOOK_*`).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

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
    /// Attempts in flight at once in this process (`GRAPHAGENT_WEBHOOK_MAX_CONCURRENCY`, 32).
    pub max_concurrency: usize,
    /// Attempts in flight at once per subscription in this process
    /// (`GRAPHAGENT_WEBHOOK_PER_SUBSCRIPTION_CONCURRENCY`, 4).
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
            max_concurrency: 32,
            per_subscription_concurrency: 4,
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

/// Parse `5s,5m,30m,2h` (units `ms`, `s`, `m`, `h`; a bare number is seconds).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_duration)
        .collect()
}

fn parse_duration(part: &str) -> Result<Duration, String> {
    let (num, mult_ms) = if let Some(n) = part.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = part.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = part.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = part.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (part, 1000)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{part}` is not a duration such as 5s, 5m or 2h"))?;
    Ok(Duration::from_millis(n.saturating_mul(mult_ms)))
}

impl WebhookSettings {
    /// Settings from the `GRAPHAGENT_WEBHOOK_*` environment variables. Unparseable values
    /// are reported by [`validate`](Self::validate) through `invalid`.
    pub fn from_env() -> (Self, Vec<String>) {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut s = Self::default();
        let mut invalid = Vec::new();
        let mut num = |name: &str, apply: &mut dyn FnMut(u64)| {
            if let Some(v) = var(name) {
                match v.trim().parse::<u64>() {
                    Ok(n) => apply(n),
                    Err(_) => invalid.push(format!("{name} must be a number, got `{v}`")),
                }
            }
        };
        num("GRAPHAGENT_WEBHOOK_TIMEOUT_SECS", &mut |n| {
            s.timeout = Duration::from_secs(n)
        });
        num("GRAPHAGENT_WEBHOOK_MAX_CONCURRENCY", &mut |n| {
            s.max_concurrency = n as usize
        });
        num(
            "GRAPHAGENT_WEBHOOK_PER_SUBSCRIPTION_CONCURRENCY",
            &mut |n| s.per_subscription_concurrency = n as usize,
        );
        num("GRAPHAGENT_WEBHOOK_DISABLE_AFTER_FAILURES", &mut |n| {
            s.disable_after_failures = u32::try_from(n).unwrap_or(u32::MAX)
        });
        num("GRAPHAGENT_WEBHOOK_DISABLE_AFTER_HOURS", &mut |n| {
            s.disable_after_failing_for = Duration::from_secs(n.saturating_mul(3600))
        });
        num("GRAPHAGENT_WEBHOOK_PAYLOAD_RETENTION_DAYS", &mut |n| {
            s.payload_retention = Duration::from_secs(n.saturating_mul(86400))
        });
        num("GRAPHAGENT_WEBHOOK_ROTATION_GRACE_HOURS", &mut |n| {
            s.rotation_grace = Duration::from_secs(n.saturating_mul(3600))
        });
        num("GRAPHAGENT_WEBHOOK_POLL_MS", &mut |n| {
            s.poll_interval = Duration::from_millis(n)
        });
        num("GRAPHAGENT_WEBHOOK_CLEANER_INTERVAL_SECS", &mut |n| {
            s.cleaner_interval = Duration::from_secs(n)
        });
        let flag = |v: String| matches!(v.trim(), "1" | "true" | "yes" | "on");
        if let Some(v) = var("GRAPHAGENT_WEBHOOK_WORKER") {
            s.worker = flag(v);
        }
        if let Some(v) = var("GRAPHAGENT_WEBHOOK_ALLOW_HTTP_LOOPBACK") {
            s.allow_http_loopback = flag(v);
        }
        if let Some(v) = var("GRAPHAGENT_WEBHOOK_ALLOWED_PRIVATE") {
            s.allowed_private = v
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
        }
        if let Some(v) = var("GRAPHAGENT_WEBHOOK_RETRY_SCHEDULE") {
            match parse_schedule(&v) {
                Ok(schedule) => s.retry_schedule = schedule,
                Err(e) => invalid.push(format!("GRAPHAGENT_WEBHOOK_RETRY_SCHEDULE: {e}")),
            }
        }
        (s, invalid)
    }

    /// Range checks; every problem, not just the first.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(30) {
            problems.push("GRAPHAGENT_WEBHOOK_TIMEOUT_SECS must be between 1 and 30".to_owned());
        }
        if self.max_concurrency == 0 || self.per_subscription_concurrency == 0 {
            problems.push("webhook concurrency limits must be at least 1".to_owned());
        }
        if self.disable_after_failures == 0 {
            problems
                .push("GRAPHAGENT_WEBHOOK_DISABLE_AFTER_FAILURES must be at least 1".to_owned());
        }
        if self.retry_schedule.len() > 20 {
            problems.push("GRAPHAGENT_WEBHOOK_RETRY_SCHEDULE has at most 20 entries".to_owned());
        }
        if self.payload_retention.is_zero() {
            problems
                .push("GRAPHAGENT_WEBHOOK_PAYLOAD_RETENTION_DAYS must be at least 1".to_owned());
        }
        if self.poll_interval.is_zero() || self.cleaner_interval.is_zero() {
            problems.push("webhook poll and cleaner intervals must be positive".to_owned());
        }
        for entry in &self.allowed_private {
            if entry.contains('/') && parse_net(entry).is_none() {
                problems.push(format!(
                    "GRAPHAGENT_WEBHOOK_ALLOWED_PRIVATE: `{entry}` is not a CIDR"
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
            parse_schedule("5s, 5m,2h,20ms,7").expect("parses"),
            vec![
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200),
                Duration::from_millis(20),
                Duration::from_secs(7)
            ]
        );
        assert!(parse_schedule("soon").is_err());
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
        assert_eq!(bad.validate().len(), 1);
    }

    #[test]
    fn defaults_are_valid() {
        assert!(WebhookSettings::default().validate().is_empty());
        let bad = WebhookSettings {
            timeout: Duration::from_secs(31),
            ..WebhookSettings::default()
        };
        assert_eq!(bad.validate().len(), 1);
    }
}
