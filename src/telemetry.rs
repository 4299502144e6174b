//! Process metrics in Prometheus text format: the recorder every crate's `metrics::…!`
//! calls land in, its rendering for `/metrics`, the gauges counted from the graph on an
//! interval, and the settings for both (names and meanings in `docs/metrics.md`); the
//! optional OTLP trace export is [`otlp`].

pub mod otlp;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::graph::Graph;
use crate::settings_source::{Fields, Key, SettingError, SettingsErrors, Source};

/// Latency buckets (seconds): from a loopback round trip to a slow provider.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Fold batch sizes (events): one up to the writer's largest batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// `/metrics` and the gauges behind it; the OTLP trace export.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Serve `/metrics` (`GRAPHAGENT_METRICS_ENABLED`).
    pub metrics_enabled: bool,
    /// How often gauges that need a graph query are recounted
    /// (`GRAPHAGENT_METRICS_REFRESH_SECS`).
    pub metrics_refresh: Duration,
    /// Base URL of an OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`; spans go to its
    /// `/v1/traces` (`GRAPHAGENT_OTLP_ENDPOINT`). `None`: no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (`GRAPHAGENT_OTLP_SERVICE_NAME`), to tell
    /// apps built on the host apart in one collector.
    pub otlp_service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
            metrics_refresh: Duration::from_secs(15),
            otlp_endpoint: None,
            otlp_service_name: "graphagent".to_owned(),
        }
    }
}

impl TelemetrySettings {
    /// The settings these are read from.
    pub const KEYS: &'static [Key] = &[
        Key::plain("metrics_enabled"),
        Key::plain("metrics_refresh_secs"),
        Key::plain("otlp_endpoint"),
        Key::plain("otlp_service_name"),
    ];

    /// Settings from `source` over the defaults, checked.
    pub fn from_source(source: &Source) -> Result<Self, SettingsErrors> {
        let mut f = Fields::new(source, Self::KEYS);
        let d = Self::default();
        let s = Self {
            metrics_enabled: f.flag("metrics_enabled").unwrap_or(d.metrics_enabled),
            metrics_refresh: f
                .whole("metrics_refresh_secs", "seconds")
                .map_or(d.metrics_refresh, Duration::from_secs),
            otlp_endpoint: f.text("otlp_endpoint").filter(|t| !t.trim().is_empty()),
            otlp_service_name: f.text("otlp_service_name").unwrap_or(d.otlp_service_name),
        };
        f.checked(s, |s| s.validate(source))
    }

    /// Range checks, named as `source` has them.
    pub fn validate(&self, source: &Source) -> Vec<SettingError> {
        let mut errors = Vec::new();
        let secs = self.metrics_refresh.as_secs();
        if self.metrics_refresh.is_zero() || secs > 3600 {
            errors.push(source.error(
                "metrics_refresh_secs",
                format!("expected 1 to 3600 seconds, got {secs}"),
            ));
        }
        if let Some(url) = &self.otlp_endpoint
            && let Err(message) = otlp_endpoint(url)
        {
            errors.push(source.error("otlp_endpoint", message));
        }
        let name = self.otlp_service_name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            errors.push(source.error(
                "otlp_service_name",
                "expected a name of 1 to 128 printable characters",
            ));
        }
        errors
    }
}

/// `url` checked as an OTLP/HTTP collector base: `http(s)://host[:port][/path]`, no
/// credentials (collectors take those in headers), no query or fragment (`/v1/traces`
/// is appended to it).
pub fn otlp_endpoint(url: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected an http(s) URL such as http://127.0.0.1:4318";
    let parsed = reqwest::Url::parse(url.trim()).map_err(|_| format!("{EXPECTED}, got `{url}`"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // The value is not shown: it holds credentials.
        return Err(format!("{EXPECTED} without credentials in it"));
    }
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none_or(str::is_empty)
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(format!("{EXPECTED}, got `{url}`"));
    }
    Ok(())
}

/// The process's Prometheus recorder, installed on first use. Metrics are per process
/// (Prometheus scrapes each replica); a second host in one process shares them.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("graphagent_sentdm_fold_batch_size".into()),
                    BATCH_BUCKETS,
                )
            });
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            // Only an empty bucket list fails, and the lists above are not empty.
            Err(e) => {
                tracing::error!(error = %e, "metrics buckets refused; histograms become summaries");
                PrometheusBuilder::new().build_recorder()
            }
        };
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics shows only what reaches this one"
            );
        }
        handle
    })
}

/// The text exposition of every metric recorded so far.
pub fn render() -> String {
    let handle = prometheus();
    handle.run_upkeep();
    handle.render()
}

/// Counts one outbound webhook attempt by outcome (`success`, `retryable`, `permanent`)
/// with its duration.
pub fn outbound_attempt(outcome: &'static str, duration_ms: i64) {
    metrics::counter!("graphagent_webhook_attempts_total", "outcome" => outcome).increment(1);
    // Milliseconds → seconds; a negative duration (clock step) counts as zero.
    let secs = duration_ms.max(0) as f64 / 1000.0;
    metrics::histogram!("graphagent_webhook_attempt_duration_seconds", "outcome" => outcome)
        .record(secs);
}

/// Recounts the outbox gauges every `every` until `stop`: events not yet fanned out and
/// deliveries waiting for an attempt. Two indexed counts per interval, never per scrape.
pub async fn refresh_gauges(graph: Graph, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let counted = graph
            .query(
                "SELECT count() AS n FROM outbox_event WHERE fanned_out = false GROUP ALL;
                 SELECT count() AS n FROM webhook_delivery WHERE status = $pending GROUP ALL;",
                json!({"pending": "pending"}),
            )
            .await;
        match counted {
            Ok(out) => {
                metrics::gauge!("graphagent_webhook_outbox_depth").set(first_count(out.first()));
                metrics::gauge!("graphagent_webhook_deliveries_pending")
                    .set(first_count(out.get(1)));
            }
            Err(e) => tracing::warn!(error = %e, "could not count the outbox for metrics"),
        }
        prometheus().run_upkeep();
    }
}

/// `n` of a `GROUP ALL` count's only row; no row means nothing matched.
fn first_count(result: Option<&Value>) -> f64 {
    result
        .and_then(Value::as_array)
        .and_then(|rows| rows.first())
        .and_then(|row| row["n"].as_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_interval_is_bounded() {
        let mut source = Source::new();
        source.set_env("metrics_refresh_secs", "0");
        let e = TelemetrySettings::from_source(&source).unwrap_err();
        assert!(
            e.to_string().contains("GRAPHAGENT_METRICS_REFRESH_SECS"),
            "{e}"
        );
        let mut source = Source::new();
        source.set_env("metrics_enabled", "false");
        source.set_env("metrics_refresh_secs", "60");
        let s = TelemetrySettings::from_source(&source).unwrap();
        assert!(!s.metrics_enabled);
        assert_eq!(s.metrics_refresh, Duration::from_secs(60));
    }

    #[test]
    fn otlp_endpoint_is_an_http_url_or_unset() {
        let s = TelemetrySettings::from_source(&Source::new()).unwrap();
        assert_eq!(s.otlp_endpoint, None);
        let mut source = Source::new();
        source.set_env("otlp_endpoint", "http://127.0.0.1:4318/");
        let s = TelemetrySettings::from_source(&source).unwrap();
        assert_eq!(
            otlp::traces_url(s.otlp_endpoint.as_deref().unwrap()),
            "http://127.0.0.1:4318/v1/traces"
        );
        for bad in [
            "127.0.0.1:4318",
            "grpc://collector:4317",
            "http://collector:4318?token=x",
        ] {
            let mut source = Source::new();
            source.set_env("otlp_endpoint", bad);
            let e = TelemetrySettings::from_source(&source).unwrap_err();
            assert!(e.to_string().contains("GRAPHAGENT_OTLP_ENDPOINT"), "{e}");
        }
        let mut source = Source::new();
        source.set_env("otlp_endpoint", "https://user:hunter2@collector");
        let e = TelemetrySettings::from_source(&source)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("without credentials") && !e.contains("hunter2"),
            "{e}"
        );
        let mut source = Source::new();
        source.set_env("otlp_service_name", &"n".repeat(129));
        let e = TelemetrySettings::from_source(&source).unwrap_err();
        assert!(
            e.to_string().contains("GRAPHAGENT_OTLP_SERVICE_NAME"),
            "{e}"
        );
    }

    #[test]
    fn counts_read_from_group_all_rows() {
        assert_eq!(first_count(Some(&json!([{"n": 7}]))), 7.0);
        assert_eq!(first_count(Some(&json!([]))), 0.0);
        assert_eq!(first_count(None), 0.0);
    }
}
