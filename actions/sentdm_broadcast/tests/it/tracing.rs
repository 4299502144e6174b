//! OTLP traces (`GRAPHAGENT_OTLP_ENDPOINT`) against a fake collector: a real HTTP server
//! on loopback that decodes the OTLP/HTTP protobuf the host posts. Each test runs in its
//! own process (nextest): the process's subscriber and its OTLP slot are the test's.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use graphagent::testing::WebhookReceiver;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::Method;
use serde_json::json;

use crate::app::{App, AppOptions, eventually};
use crate::util::start_sim;

/// Everything a collector received: each request's path and raw body.
#[derive(Clone, Default)]
struct Collector {
    posts: Arc<Mutex<Vec<(String, Bytes)>>>,
}

impl Collector {
    /// Serve on `listener`; every request is recorded, `/v1/traces` is answered 200.
    fn serve(&self, listener: tokio::net::TcpListener) -> String {
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .fallback(
                |State(c): State<Collector>, uri: axum::http::Uri, body: Bytes| async move {
                    let path = uri.path().to_owned();
                    let ok = path == "/v1/traces";
                    c.posts.lock().unwrap().push((path, body));
                    if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    }
                },
            )
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    fn posts(&self) -> Vec<(String, Bytes)> {
        self.posts.lock().unwrap().clone()
    }

    /// Every exported span with its resource's `service.name`; panics on a body that is
    /// not an OTLP trace export.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for (path, body) in self.posts() {
            assert_eq!(path, "/v1/traces");
            let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    out.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
        }
        out
    }
}

/// An attribute's value as text (numbers and booleans written out).
fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(text)
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn named<'a>(spans: &'a [(String, Span)], name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == name)
        .collect()
}

#[tokio::test]
async fn otlp_exports_a_delivery_from_receive_to_the_outbound_attempt() {
    let collector = Collector::default();
    let endpoint = collector.serve(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let sim = start_sim().await;
    let app = App::start(
        &sim,
        AppOptions {
            otlp_endpoint: Some(endpoint),
            ..AppOptions::default()
        },
    )
    .await;
    assert!(graphagent::telemetry::otlp::is_active());
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
    let sub_id = sub["id"].as_str().expect("subscription id").to_owned();
    let to = "+14155550100";
    let (status, result) = app
        .broadcast(json!({"to": [to], "channels": ["whatsapp"], "template": {"name": "order_confirmation", "parameters": {"name": "Ada Lovelace", "order_id": "A-1"}}}))
        .await;
    assert_eq!(status, 202, "{result}");
    sim.settle().await;
    eventually("both status changes re-published", || async {
        receiver.hits().len() >= 2
    })
    .await;
    // Dropped events (attempt 0) never reached the host.
    let deliveries: Vec<_> = sim
        .deliveries()
        .into_iter()
        .filter(|d| d.attempt > 0)
        .collect();
    assert!(!deliveries.is_empty());
    // Secrets this flow handled: none may reach the collector, in any attribute, event,
    // link or resource (the raw export is searched, not just the attributes decoded).
    let mut secrets: Vec<String> = vec![
        to.to_owned(),
        to.trim_start_matches('+').to_owned(),
        sim.api_key().to_owned(),
        app.token.clone(),
        "Ada Lovelace".to_owned(),
    ];
    for d in &deliveries {
        let key = d.url.split_once("key=").map(|(_, k)| k.to_owned());
        secrets.extend(key.filter(|k| !k.is_empty()));
        secrets.extend(sim.webhook_secret(&d.webhook_id));
    }
    // A graceful stop flushes the exporter.
    app.stop().await;
    assert!(!graphagent::telemetry::otlp::is_active());

    let spans = collector.spans();
    assert!(!spans.is_empty(), "nothing exported");
    assert!(spans.iter().all(|(service, _)| service == "graphagent"));
    // Receive: the request span of each signed delivery, with its verification inside.
    let inbound: Vec<&Span> = named(&spans, "request")
        .into_iter()
        .filter(|s| {
            attr(&s.attributes, "route").as_deref() == Some("/api/sentdm/webhook/{action_id}")
        })
        .collect();
    assert_eq!(
        inbound.len(),
        deliveries.len(),
        "one request span per delivery"
    );
    assert!(
        inbound
            .iter()
            .all(|s| attr(&s.attributes, "http.status_code").as_deref() == Some("200"))
    );
    let verify = named(&spans, "sentdm.webhook.verify");
    assert_eq!(verify.len(), deliveries.len());
    for v in &verify {
        assert!(
            inbound
                .iter()
                .any(|r| r.span_id == v.parent_span_id && r.trace_id == v.trace_id),
            "verification is a child of its request"
        );
    }
    // Fold: batches are roots of their own traces, linked to the requests they folded.
    let batches = named(&spans, "sentdm.fold.batch");
    assert!(!batches.is_empty());
    let linked: usize = batches
        .iter()
        .flat_map(|b| &b.links)
        .filter(|l| inbound.iter().any(|r| r.span_id == l.span_id))
        .count();
    assert_eq!(
        linked,
        deliveries.len(),
        "every delivery's request is linked from the batch that folded it"
    );
    let batch_events: i64 = batches
        .iter()
        .map(|b| {
            attr(&b.attributes, "events")
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(batch_events, deliveries.len() as i64);
    // Its commit: batch → apply → graph.commit, and the write with its outbox rows.
    let applies = named(&spans, "sentdm.fold.apply");
    let commits = named(&spans, "graph.commit");
    let under = |child: &Span, parents: &[&Span]| {
        parents
            .iter()
            .any(|p| p.span_id == child.parent_span_id && p.trace_id == child.trace_id)
    };
    assert!(applies.iter().all(|a| under(a, &batches)));
    assert!(
        commits.iter().filter(|c| under(c, &applies)).count() >= batches.len(),
        "each batch's transaction commits under it"
    );
    let writes = named(&spans, "sentdm.fold.write");
    assert!(writes.iter().all(|w| under(w, &applies)));
    let outbox_rows: i64 = writes
        .iter()
        .map(|w| {
            attr(&w.attributes, "outbox.rows")
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert!(
        outbox_rows >= 2,
        "the delivered and read events went to the outbox"
    );
    // Delivery: one attempt span per POST the receiver saw, with its subscription and
    // outcome.
    let attempts = named(&spans, "webhook.attempt");
    assert_eq!(attempts.len(), receiver.hits().len());
    for a in &attempts {
        assert_eq!(attr(&a.attributes, "subscription"), Some(sub_id.clone()));
        assert_eq!(attr(&a.attributes, "outcome").as_deref(), Some("success"));
        assert_eq!(
            attr(&a.attributes, "http.status_code").as_deref(),
            Some("204")
        );
    }

    for (_, body) in collector.posts() {
        for secret in &secrets {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "`{secret}` reached the collector"
            );
        }
        assert!(!body.windows(4).any(|w| w == b"key="), "a query key leaked");
    }
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported() {
    // The collector listens where an exporter left to its defaults would post (the OTLP
    // port on loopback), so a host that exported without being asked would be seen.
    let collector = Collector::default();
    collector.serve(
        tokio::net::TcpListener::bind("127.0.0.1:4318")
            .await
            .expect("bind the default OTLP/HTTP port on loopback"),
    );
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    assert!(!graphagent::telemetry::otlp::is_active());
    let (status, result) = app
        .broadcast(json!({"to": ["+14155550100"], "channels": ["whatsapp"], "template": {"name": "order_confirmation", "parameters": {"name": "Ada Lovelace", "order_id": "A-1"}}}))
        .await;
    assert_eq!(status, 202, "{result}");
    sim.settle().await;
    assert!(!sim.deliveries().is_empty());
    app.stop().await;
    // The batch processor would export within its 5 s schedule or at the stop's flush.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(collector.posts().is_empty(), "{:?}", collector.posts());
}
