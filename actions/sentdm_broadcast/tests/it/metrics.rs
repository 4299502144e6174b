//! `/metrics` after real traffic: a send through the simulator, its signed deliveries
//! folded, their status changes re-published to a subscriber. Each test runs in its own
//! process (nextest), so the process-wide counters start at zero and values are exact.

use std::collections::BTreeMap;

use graphagent::testing::WebhookReceiver;
use reqwest::Method;
use serde_json::json;

use crate::app::{App, AppOptions, eventually};
use crate::util::start_sim;

/// One parsed sample: metric name and its labels, sorted.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Parses the text exposition format strictly: every line is a `# HELP`, a `# TYPE` with
/// a known type declared before the family's samples, or `name{label="value",…} value`.
fn parse_exposition(text: &str) -> Result<Samples, String> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Samples::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !valid_name(name) {
                return Err(format!("bad name in `{line}`"));
            }
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(format!("bad type in `{line}`"));
                    }
                    types.insert(name.to_owned(), t.to_owned());
                }
                _ => return Err(format!("bad comment `{line}`")),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value in `{line}`"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("bad value in `{line}`"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels in `{line}`"))?;
                let mut labels = Vec::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .ok_or_else(|| format!("bad label in `{line}`"))?;
                    if !valid_name(k) {
                        return Err(format!("bad label name in `{line}`"));
                    }
                    labels.push((k.to_owned(), v.trim_end_matches('"').to_owned()));
                }
                labels.sort();
                (name, labels)
            }
        };
        if !valid_name(name) {
            return Err(format!("bad metric name in `{line}`"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(format!("sample before its # TYPE: `{line}`"));
        }
        samples.insert((name.to_owned(), labels), value);
    }
    Ok(samples)
}

fn get(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    samples.get(&(name.to_owned(), want)).copied()
}

async fn scrape(app: &App) -> (String, Samples) {
    let resp = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.expect("body");
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, samples)
}

#[test]
fn the_exposition_parser_refuses_what_is_not_exposition() {
    assert!(parse_exposition("# TYPE a_total counter\na_total{x=\"1\"} 2\n").is_ok());
    for bad in [
        "a_total 1\n",
        "# TYPE a counter\na{x=1} 1\n",
        "# TYPE a counter\na one\n",
        "# TYPE 1a counter\n",
        "<html>",
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn metrics_count_a_send_its_deliveries_and_their_republication() {
    let sim = start_sim().await;
    let app = App::start(
        &sim,
        AppOptions {
            extra: "      metrics_refresh_seconds: 1\n",
            ..AppOptions::default()
        },
    )
    .await;
    let receiver = WebhookReceiver::new(204);
    let url = receiver.start().await;
    let (status, sub) = app
        .raw(
            Method::POST,
            &format!("{}/api/webhooks/subscriptions", app.base),
            Some(json!({"url": format!("{url}/hook"), "event_types": ["sentdm.message.delivered", "sentdm.message.read"]})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let to = "+14155550100";
    let (status, result) = app
        .broadcast(json!({"to": [to], "channels": ["whatsapp"], "template": {"name": "order_confirmation", "parameters": {"name": "Ada", "order_id": "A-1"}}}))
        .await;
    assert_eq!(status, 202, "{result}");
    sim.settle().await;
    eventually("both status changes re-published", || async {
        receiver.hits().len() >= 2
    })
    .await;
    let action_id = App::action_id("sentdm");
    eventually("the records gauge counts the read record", || async {
        let (_, s) = scrape(&app).await;
        get(
            &s,
            "graphagent_sentdm_records",
            &[("action_id", &action_id), ("status", "read")],
        ) == Some(1.0)
    })
    .await;

    let (text, s) = scrape(&app).await;
    let deliveries = sim.deliveries().len() as f64;
    let received = get(
        &s,
        "graphagent_sentdm_inbound_deliveries_total",
        &[("outcome", "received")],
    );
    assert_eq!(
        received,
        Some(deliveries),
        "every simulator delivery folded once\n{text}"
    );
    assert_eq!(
        get(&s, "graphagent_sentdm_fold_batch_size_sum", &[]),
        Some(deliveries),
        "each folded event is in exactly one batch"
    );
    assert!(
        get(&s, "graphagent_sentdm_fold_duration_seconds_count", &[]).is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        get(
            &s,
            "graphagent_sentdm_records",
            &[("action_id", &action_id), ("status", "queued")]
        ),
        Some(0.0),
        "an emptied status is zeroed, not left stale"
    );
    // One send request, answered 202 by the simulator; the limiter took every request.
    assert_eq!(
        get(
            &s,
            "sentdm_client_requests_total",
            &[("method", "POST"), ("status", "202")]
        )
        .map(|n| n >= 1.0),
        Some(true),
        "{text}"
    );
    assert!(
        get(
            &s,
            "sentdm_client_rate_limit_wait_seconds_count",
            &[("class", "standard")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        get(
            &s,
            "graphagent_webhook_attempts_total",
            &[("outcome", "success")]
        ),
        Some(receiver.hits().len() as f64)
    );
    assert!(
        get(
            &s,
            "graphagent_webhook_attempt_duration_seconds_count",
            &[("outcome", "success")]
        )
        .is_some()
    );
    assert!(get(&s, "graphagent_webhook_outbox_depth", &[]).is_some());
    assert!(get(&s, "graphagent_webhook_deliveries_pending", &[]).is_some());
    assert_eq!(
        get(
            &s,
            "graphagent_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/sentdm/webhook/{action_id}"),
                ("status", "200")
            ]
        ),
        Some(deliveries)
    );
    // No phone number, key or token in any name or label (the action id is a label on
    // purpose: not a secret, one per configured action).
    for secret in [to, sim.api_key(), app.token.as_str()] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    assert!(!text.contains("api_key="));
}
