//! Conformance: (a) every body the client sends validates against SentDM's request schema
//! in `docs/openapi.json` (SentDM's own document, vendored); (b) every simulator response matches the shapes in
//! CONTRACT.md, written once in `tests/fixtures/sentdm_responses.schema.json`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use sentdm_client::client::{ApiKey, Client, ClientConfig, IdempotencyKey};
use sentdm_client::model::{PageRequest, TemplateQuery};
use sentdm_sim::{ApiFault, ORDER_CONFIRMATION_ID, SimHandle};
use serde_json::{Value, json};

use crate::util::{Receiver, client_for, order_send, start_sim};

fn load(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn assert_valid(schema: &Value, instance: &Value, what: &str) {
    let v = jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("schema for {what}: {e}"));
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}\n{instance:#}");
}

/// Matches a concrete path against an OpenAPI template (`/v3/webhooks/{id}`).
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<_> = template.split('/').collect();
    let p: Vec<_> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(a, b)| (a.starts_with('{') && a.ends_with('}')) || a == b)
}

/// Exercises every client method, including the sandbox and retry paths.
async fn drive_every_client_call(sim: &SimHandle, c: &Client) {
    let rx = Receiver::start().await;
    c.me().await.unwrap();
    let out = c
        .send_message(
            &order_send(&["+14155551234"], Some(&["sms", "whatsapp"])),
            Some(IdempotencyKey::derive(&["conformance"])),
        )
        .await
        .unwrap();
    let id = &out.response.recipients[0].message_id;
    c.get_message(id).await.unwrap();
    c.message_activities(id).await.unwrap();
    c.list_templates(&TemplateQuery {
        search: Some("order".into()),
        status: Some("APPROVED".into()),
        category: Some("UTILITY".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.get_template(ORDER_CONFIRMATION_ID).await.unwrap();
    let w = c
        .create_webhook(&rx.webhook(Some(&["delivered", "failed"]), 3), None)
        .await
        .unwrap();
    c.list_webhooks(PageRequest::default()).await.unwrap();
    c.list_all_webhooks().await.unwrap();
    c.get_webhook(&w.id).await.unwrap();
    c.update_webhook(&w.id, &rx.webhook(None, 4)).await.unwrap();
    c.toggle_webhook(&w.id, false).await.unwrap();
    c.toggle_webhook(&w.id, true).await.unwrap();
    c.rotate_webhook_secret(&w.id).await.unwrap();
    c.test_webhook(&w.id, "message.delivered").await.unwrap();
    c.webhook_event_types().await.unwrap();
    c.webhook_events(&w.id, PageRequest::default())
        .await
        .unwrap();
    sim.push_api_fault(ApiFault::status(502).on("DELETE", "/v3/webhooks"));
    c.delete_webhook(&w.id).await.unwrap();
}

#[tokio::test]
async fn client_request_bodies_validate_against_openapi() {
    let spec = load("docs/openapi.json");
    let sim = start_sim().await;
    let (c, _) = client_for(&sim);
    drive_every_client_call(&sim, &c).await;
    let mut sandbox_cfg = ClientConfig::new(sim.base_url(), ApiKey::new(sim.api_key()));
    sandbox_cfg.sandbox = true;
    let sandboxed = Client::new(sandbox_cfg).unwrap();
    sandboxed
        .send_message(&order_send(&["+14155551234"], None), None)
        .await
        .unwrap();

    let paths = spec["paths"].as_object().unwrap();
    let mut checked = BTreeSet::new();
    for req in sim.requests() {
        // Prefer the most literal template (`/v3/webhooks/event-types` over `/{id}`).
        let (template, item) = paths
            .iter()
            .filter(|(t, _)| template_matches(t, &req.path))
            .max_by_key(|(t, _)| t.split('/').filter(|s| !s.starts_with('{')).count())
            .unwrap_or_else(|| panic!("{} {} is not in openapi.json", req.method, req.path));
        let op = &item[req.method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {template} is not in openapi.json",
            req.method
        );

        // Query parameters must be ones the spec declares; lists always send paging.
        if let Some(q) = &req.query {
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let sent: BTreeSet<&str> = q.split('&').filter_map(|kv| kv.split('=').next()).collect();
            assert!(
                sent.is_subset(&declared),
                "{template}: {sent:?} vs {declared:?}"
            );
            assert!(
                sent.contains("page") && sent.contains("page_size"),
                "{template}"
            );
        }

        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        match (&req.body, schema.is_object()) {
            (Some(body), true) => {
                assert_valid(schema, body, &format!("{} {template}", req.method));
                // The spec schemas allow extra keys; be stricter: only declared keys, plus
                // `event_filters`, which CONTRACT §7.18 lists as a known spec omission.
                let declared: BTreeSet<&str> = schema["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                for k in body.as_object().unwrap().keys() {
                    assert!(
                        declared.contains(k.as_str()) || k == "event_filters",
                        "{} {template}: undeclared field {k}",
                        req.method
                    );
                }
                assert!(body.get("sandbox").is_some(), "mutations carry sandbox");
                if req.method == "POST" {
                    assert!(req.idempotency_key.is_some(), "POST {template} has a key");
                }
                checked.insert(format!("{} {template}", req.method));
            }
            (Some(body), false) => panic!(
                "{} {template} sent a body {body} the spec lacks",
                req.method
            ),
            (None, true) => panic!("{} {template} sent no body", req.method),
            (None, false) => {}
        }
    }
    for op in [
        "POST /v3/messages",
        "POST /v3/webhooks",
        "PUT /v3/webhooks/{id}",
        "PATCH /v3/webhooks/{id}/toggle-status",
        "POST /v3/webhooks/{id}/rotate-secret",
        "POST /v3/webhooks/{id}/test",
    ] {
        assert!(checked.contains(op), "{op} not exercised");
    }
    sim.shutdown().await;
}

struct Shapes {
    doc: Value,
}

impl Shapes {
    fn new() -> Self {
        Self {
            doc: load("tests/fixtures/sentdm_responses.schema.json"),
        }
    }

    fn check(&self, def: &str, instance: &Value) {
        let schema = json!({"$defs": self.doc["$defs"], "$ref": format!("#/$defs/{def}")});
        assert_valid(&schema, instance, def);
    }
}

struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    empty: bool,
}

async fn call(sim: &SimHandle, method: reqwest::Method, path: &str, body: Option<Value>) -> Raw {
    call_with(sim, method, path, body, Some(sim.api_key())).await
}

async fn call_with(
    sim: &SimHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Raw {
    let mut rb = reqwest::Client::new().request(method, format!("{}{path}", sim.base_url()));
    if let Some(k) = key {
        rb = rb.header("x-api-key", k);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    Raw {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        empty: bytes.is_empty(),
    }
}

impl Shapes {
    fn ok(&self, r: &Raw, status: u16, def: &str) {
        assert_eq!(r.status, status, "{def}: {:#}", r.body);
        self.check("success_envelope", &r.body);
        self.check(def, &r.body["data"]);
        assert_eq!(
            r.headers["x-request-id"].to_str().unwrap(),
            r.body["meta"]["request_id"].as_str().unwrap()
        );
        assert_eq!(r.headers["x-api-version"], "v3");
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(r.headers.contains_key(h), "{def}: {h}");
        }
    }

    fn err(&self, r: &Raw, status: u16, code: &str) {
        assert_eq!(r.status, status, "{code}: {:#}", r.body);
        self.check("error_envelope", &r.body);
        assert_eq!(r.body["error"]["code"], code);
    }
}

#[tokio::test]
async fn simulator_responses_match_contract_shapes() {
    use reqwest::Method;
    let s = Shapes::new();
    let sim = start_sim().await;
    let rx = Receiver::start().await;

    s.ok(&call(&sim, Method::GET, "/v3/me", None).await, 200, "me");
    let send_body = json!({
        "to": ["+14155551234", "+14155550001"], "channel": ["sms", "whatsapp"],
        "template": {"id": ORDER_CONFIRMATION_ID, "parameters": {"name": "A", "order_id": "1"}},
    });
    let sent = call(&sim, Method::POST, "/v3/messages", Some(send_body.clone())).await;
    s.ok(&sent, 202, "send");
    let id = sent.body["data"]["recipients"][1]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.settle().await;
    s.ok(
        &call(&sim, Method::GET, &format!("/v3/messages/{id}"), None).await,
        200,
        "message",
    );
    s.ok(
        &call(
            &sim,
            Method::GET,
            &format!("/v3/messages/{id}/activities"),
            None,
        )
        .await,
        200,
        "activities",
    );
    let tl = call(&sim, Method::GET, "/v3/templates?page=1&page_size=1", None).await;
    s.ok(&tl, 200, "templates_list");
    assert_eq!(tl.body["data"]["pagination"]["has_more"], true);
    s.ok(
        &call(
            &sim,
            Method::GET,
            &format!("/v3/templates/{ORDER_CONFIRMATION_ID}"),
            None,
        )
        .await,
        200,
        "template",
    );

    let hook = json!({"display_name": "c", "endpoint_url": rx.url, "event_types": ["messages"],
                      "event_filters": {"message": ["delivered"]}, "retry_count": 2, "timeout_seconds": 10});
    let created = call(&sim, Method::POST, "/v3/webhooks", Some(hook.clone())).await;
    s.ok(&created, 200, "webhook_with_secret");
    assert_eq!(
        created.body["data"]["event_types"],
        json!(["message"]),
        "alias stored as message"
    );
    let wid = created.body["data"]["id"].as_str().unwrap().to_owned();
    let got = call(&sim, Method::GET, &format!("/v3/webhooks/{wid}"), None).await;
    s.ok(&got, 200, "webhook");
    assert!(got.body["data"]["signing_secret"].is_null());
    s.ok(
        &call(
            &sim,
            Method::PUT,
            &format!("/v3/webhooks/{wid}"),
            Some(hook),
        )
        .await,
        200,
        "webhook",
    );
    s.ok(
        &call(
            &sim,
            Method::PATCH,
            &format!("/v3/webhooks/{wid}/toggle-status"),
            Some(json!({"is_active": true})),
        )
        .await,
        200,
        "webhook",
    );
    s.ok(
        &call(
            &sim,
            Method::POST,
            &format!("/v3/webhooks/{wid}/rotate-secret"),
            Some(json!({})),
        )
        .await,
        200,
        "rotate",
    );
    s.ok(
        &call(
            &sim,
            Method::POST,
            &format!("/v3/webhooks/{wid}/test"),
            Some(json!({"event_type": "message.sent"})),
        )
        .await,
        200,
        "webhook_test",
    );
    s.ok(
        &call(&sim, Method::GET, "/v3/webhooks?page=1&page_size=20", None).await,
        200,
        "webhooks_list",
    );
    s.ok(
        &call(&sim, Method::GET, "/v3/webhooks/event-types", None).await,
        200,
        "event_types",
    );
    call(&sim, Method::POST, "/v3/messages", Some(send_body.clone())).await;
    sim.settle().await;
    let events = call(
        &sim,
        Method::GET,
        &format!("/v3/webhooks/{wid}/events?page=1&page_size=5"),
        None,
    )
    .await;
    s.ok(&events, 200, "webhook_events");
    assert!(!events.body["data"]["events"].as_array().unwrap().is_empty());
    for d in sim.deliveries() {
        s.check("webhook_envelope", &d.json());
    }

    // Sandbox and idempotency headers.
    let mut sb = send_body.clone();
    sb["sandbox"] = json!(true);
    let r = call(&sim, Method::POST, "/v3/messages", Some(sb)).await;
    s.ok(&r, 202, "send");
    assert_eq!(r.headers["x-sandbox"], "true");
    let keyed = |key: &'static str| {
        let url = format!("{}/v3/messages", sim.base_url());
        let body = send_body.clone();
        let api_key = sim.api_key().to_owned();
        async move {
            reqwest::Client::new()
                .post(url)
                .header("x-api-key", api_key)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = keyed("k-1").await;
    let first_id = first.headers()["x-request-id"].clone();
    let replay = keyed("k-1").await;
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["x-original-request-id"], first_id);
    assert_eq!(keyed("bad key").await.status(), 400);

    // 204 with an empty body on delete.
    let del = call(&sim, Method::DELETE, &format!("/v3/webhooks/{wid}"), None).await;
    assert_eq!(del.status, 204);
    assert!(del.empty);

    // Error classes.
    s.err(
        &call_with(&sim, Method::GET, "/v3/me", None, None).await,
        401,
        "AUTH_001",
    );
    s.err(
        &call_with(&sim, Method::GET, "/v3/me", None, Some("wrong")).await,
        401,
        "AUTH_002",
    );
    let bad_phone = call(
        &sim,
        Method::POST,
        "/v3/messages",
        Some(json!({"to": ["555"], "template": {"id": ORDER_CONFIRMATION_ID}})),
    )
    .await;
    s.err(&bad_phone, 400, "VALIDATION_002");
    assert!(bad_phone.body["error"]["details"]["to"].is_array());
    s.err(
        &call(
            &sim,
            Method::POST,
            "/v3/messages",
            Some(json!({"to": [], "template": {"id": ORDER_CONFIRMATION_ID}})),
        )
        .await,
        400,
        "VALIDATION_004",
    );
    s.err(
        &call(
            &sim,
            Method::POST,
            "/v3/messages",
            Some(json!({"to": ["+14155551234"], "template": {"name": "nope"}})),
        )
        .await,
        404,
        "RESOURCE_002",
    );
    s.err(
        &call(&sim, Method::GET, "/v3/messages/xyz", None).await,
        400,
        "VALIDATION_001",
    );
    s.err(
        &call(&sim, Method::GET, &format!("/v3/messages/{wid}"), None).await,
        404,
        "RESOURCE_003",
    );
    s.err(
        &call(&sim, Method::GET, &format!("/v3/webhooks/{wid}"), None).await,
        404,
        "RESOURCE_008",
    );
    s.err(
        &call(&sim, Method::GET, "/v3/templates?page=1&page_size=0", None).await,
        400,
        "VALIDATION_001",
    );
    s.err(&call(&sim, Method::POST, "/v3/webhooks",
        Some(json!({"display_name": "x", "endpoint_url": rx.url, "event_types": ["message"], "timeout_seconds": 500}))).await,
        400, "VALIDATION_005");
    s.err(
        &call(
            &sim,
            Method::POST,
            &format!("/v3/webhooks/{wid}/test"),
            Some(json!({})),
        )
        .await,
        404,
        "RESOURCE_008",
    );
    sim.push_api_fault(ApiFault::rate_limited(4));
    let limited = call(&sim, Method::GET, "/v3/me", None).await;
    s.err(&limited, 429, "BUSINESS_002");
    assert_eq!(limited.headers["retry-after"], "4");
    sim.push_api_fault(ApiFault::status(503));
    s.err(
        &call(&sim, Method::GET, "/v3/me", None).await,
        503,
        "SERVICE_001",
    );
    sim.push_api_fault(ApiFault::status(500));
    s.err(
        &call(&sim, Method::GET, "/v3/me", None).await,
        500,
        "INTERNAL_001",
    );
    s.err(
        &call(&sim, Method::GET, "/v3/nothing-here", None).await,
        404,
        "RESOURCE_001",
    );
    sim.shutdown().await;
}
