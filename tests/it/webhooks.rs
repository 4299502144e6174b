//! Outbound webhooks end to end: a test action that changes a node and emits an event in
//! the same transaction, real receivers (axum on 127.0.0.1), real signatures checked with
//! an independent Standard Webhooks verifier written here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use graphagent::plugin::EventType;
use graphagent::plugin::{ActionRef, ActionState, Json};
use graphagent::{Action, ActionContext, ActionError, ApiResult, Settings};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::util::{ConfigDir, TestHost, builder, settings};
use graphagent::testing::WebhookReceiver;

// ---- a test action that emits events ----------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitterConfig {
    #[serde(default)]
    pub label: String,
}

pub struct Emitter {
    ctx: ActionContext,
}

const ITEM_EVENT: &str = "test.item.status_changed";

#[async_trait]
impl Action for Emitter {
    const TYPE_NAME: &'static str = "emitter";
    type Config = EmitterConfig;

    fn schema() -> &'static str {
        "DEFINE TABLE IF NOT EXISTS test_item SCHEMALESS;"
    }
    fn create(ctx: ActionContext, _config: EmitterConfig) -> Result<Self, ActionError> {
        Ok(Self { ctx })
    }
    fn event_types() -> Vec<EventType> {
        vec![EventType::new(
            ITEM_EVENT,
            "A test item's status changed.",
            json!({"item": "a", "status": "done"}),
        )]
    }
    fn routes() -> OpenApiRouter<ActionState> {
        OpenApiRouter::new().routes(routes!(set_status))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct SetStatus {
    item: String,
    status: String,
    #[serde(default)]
    fail: bool,
}

/// Change an item's status and emit an event in the same transaction.
#[utoipa::path(post, path = "/emitter/status", tag = "Emitter", request_body = SetStatus,
    responses((status = 200, body = String)))]
async fn set_status(
    ActionRef(me): ActionRef<Emitter>,
    Json(b): Json<SetStatus>,
) -> ApiResult<Json<String>> {
    let ctx = &me.ctx;
    let event = ctx.events.event(
        ITEM_EVENT,
        &ctx.agent_id,
        &ctx.action_id,
        json!({"item": b.item, "status": b.status}),
    );
    let sql = if b.fail {
        "BEGIN; UPSERT type::record('test_item', $item) SET status = $status; \
         INSERT INTO outbox_event $outbox; THROW 'refused on purpose'; COMMIT;"
    } else {
        "BEGIN; UPSERT type::record('test_item', $item) SET status = $status; \
         INSERT INTO outbox_event $outbox; COMMIT;"
    };
    ctx.graph
        .transaction(
            sql,
            json!({"item": b.item, "status": b.status, "outbox": [event.row()]}),
        )
        .await?;
    ctx.events.notify();
    Ok(Json(event.key))
}

// ---- receivers ----------------------------------------------------------------------

// ---- an independent Standard Webhooks verifier -------------------------------------

/// Which of `secrets` produced a valid `v1` signature in the headers (by index).
fn verify(secrets: &[&str], headers: &HeaderMap, body: &[u8]) -> Vec<usize> {
    let id = headers["webhook-id"].to_str().expect("id");
    let ts = headers["webhook-timestamp"].to_str().expect("ts");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let ts_n: i64 = ts.parse().expect("numeric timestamp");
    assert!((now - ts_n).abs() < 300, "timestamp within tolerance");
    let sigs: Vec<&str> = headers["webhook-signature"]
        .to_str()
        .expect("sig")
        .split(' ')
        .collect();
    let mut ok = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        let key = B64
            .decode(secret.strip_prefix("whsec_").expect("prefix"))
            .expect("b64 key");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("key");
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
        if sigs.contains(&expected.as_str()) {
            ok.push(i);
        }
    }
    ok
}

// ---- helpers ------------------------------------------------------------------------

const AGENT: &str = "agent: t\nactions:\n  - action: emitter\n    context: { label: e }\n";

fn wh_settings(s: &mut Settings) {
    s.auth.login_per_minute = 10_000;
    s.webhooks.allow_http_loopback = true;
    s.webhooks.retry_schedule = vec![Duration::from_millis(20); 4];
    s.webhooks.poll_interval = Duration::from_millis(20);
    s.webhooks.timeout = Duration::from_secs(5);
}

async fn start(dir: &ConfigDir, graph_url: &str, tweak: impl FnOnce(&mut Settings)) -> TestHost {
    let mut s = settings(Some(dir.path()), graph_url);
    wh_settings(&mut s);
    tweak(&mut s);
    TestHost::start(builder().action::<Emitter>(), s).await
}

struct Api<'a> {
    s: &'a TestHost,
    token: String,
}

impl<'a> Api<'a> {
    async fn new(s: &'a TestHost) -> Self {
        Self {
            token: s.token().await,
            s,
        }
    }
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .s
            .http
            .request(method, self.s.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }
    async fn subscribe(&self, url: &str, types: &[&str]) -> (String, String) {
        let (st, body) = self
            .post(
                "/api/webhooks/subscriptions",
                json!({"url": url, "event_types": types, "description": "test"}),
            )
            .await;
        assert_eq!(st, 201, "{body}");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["secret"].as_str().expect("secret").to_owned(),
        )
    }
    async fn emit(&self, item: &str, status: &str, fail: bool) -> (u16, Value) {
        let action = graphagent::plugin::action_id("t", "emitter");
        self.post(
            &format!("/api/actions/{action}/emitter/status"),
            json!({"item": item, "status": status, "fail": fail}),
        )
        .await
    }
    async fn deliveries(&self, query: &str) -> Vec<Value> {
        let (st, body) = self.get(&format!("/api/webhooks/deliveries?{query}")).await;
        assert_eq!(st, 200, "{body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }
}

/// Poll `check` until it returns `Some`, or panic after a generous deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn count(s: &TestHost, sql: &str) -> u64 {
    let out = s.graph.query(sql, Value::Null).await.expect("query");
    out[0].as_u64().unwrap_or(0)
}

// ---- tests --------------------------------------------------------------------------

#[tokio::test]
async fn status_change_emits_one_signed_event_per_subscription() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |_| {}).await;
    let api = Api::new(&s).await;
    let a = WebhookReceiver::new(200);
    let b = WebhookReceiver::new(200);
    let c = WebhookReceiver::new(200);
    let (a_url, b_url, c_url) = (a.start().await, b.start().await, c.start().await);
    let (_, secret_a) = api.subscribe(&format!("{a_url}/hook"), &[ITEM_EVENT]).await;
    let (_, secret_b) = api.subscribe(&format!("{b_url}/hook"), &[]).await;
    api.subscribe(&format!("{c_url}/hook"), &["webhook.subscription.disabled"])
        .await;

    let (st, evt) = api.emit("item1", "done", false).await;
    assert_eq!(st, 200, "{evt}");
    let evt = evt.as_str().expect("event id").to_owned();
    let node = s
        .graph
        .query("SELECT VALUE status FROM test_item:item1;", Value::Null)
        .await
        .expect("node");
    assert_eq!(node[0], json!(["done"]));

    eventually("both deliveries succeeded", || async {
        let items = api
            .deliveries(&format!("event_type={ITEM_EVENT}&outcome=success"))
            .await;
        (items.len() == 2).then_some(())
    })
    .await;
    for (recv, secret) in [(&a, &secret_a), (&b, &secret_b)] {
        let hits = recv.hits();
        assert_eq!(hits.len(), 1, "exactly one delivery");
        let hit = &hits[0];
        assert_eq!(hit.headers["webhook-id"], evt.as_str());
        assert_eq!(hit.headers["content-type"], "application/json");
        assert_eq!(verify(&[secret.as_str()], &hit.headers, &hit.body), vec![0]);
        assert!(
            verify(
                &["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
                &hit.headers,
                &hit.body
            )
            .is_empty()
        );
        let envelope: Value = serde_json::from_slice(&hit.body).expect("json body");
        assert_eq!(envelope["id"], evt.as_str());
        assert_eq!(envelope["type"], ITEM_EVENT);
        assert_eq!(envelope["data"], json!({"item": "item1", "status": "done"}));
        assert!(
            envelope["timestamp"]
                .as_str()
                .is_some_and(|t| t.contains('T'))
        );
    }
    assert!(c.hits().is_empty(), "filtered subscription got nothing");
    assert_eq!(
        count(&s, "RETURN count(SELECT id FROM webhook_delivery);").await,
        2
    );
    assert_eq!(
        count(
            &s,
            "RETURN count(SELECT id FROM outbox_event WHERE fanned_out = true);"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_failed_transaction_emits_nothing() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |_| {}).await;
    let api = Api::new(&s).await;
    let r = WebhookReceiver::new(200);
    let url = r.start().await;
    api.subscribe(&format!("{url}/hook"), &[]).await;
    let (st, body) = api.emit("item2", "done", true).await;
    assert!(st >= 500, "{st} {body}");
    assert_eq!(
        count(&s, "RETURN count(SELECT id FROM outbox_event);").await,
        0
    );
    assert_eq!(
        count(&s, "RETURN count(SELECT id FROM test_item);").await,
        0
    );
    // A later successful change is delivered, and only it.
    let (st, evt) = api.emit("item2", "ok", false).await;
    assert_eq!(st, 200);
    eventually("the successful change is delivered", || async {
        (r.hits().len() == 1).then_some(())
    })
    .await;
    assert_eq!(r.hits()[0].headers["webhook-id"], evt.as_str().expect("id"));
    assert_eq!(
        count(&s, "RETURN count(SELECT id FROM outbox_event);").await,
        1
    );
}

#[tokio::test]
async fn receiver_down_then_up_gets_everything_after_retries() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |w| {
        w.webhooks.retry_schedule = vec![Duration::from_millis(100); 20];
    })
    .await;
    let api = Api::new(&s).await;
    // Reserve a port, then close it: the receiver is down (connection refused).
    let reserved = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = reserved.local_addr().expect("addr");
    drop(reserved);
    api.subscribe(&format!("http://{addr}/hook"), &[]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, evt) = api.emit(&format!("i{i}"), "done", false).await;
        ids.push(evt.as_str().expect("id").to_owned());
    }
    eventually("failed attempts while the receiver is down", || async {
        let items = api.deliveries("outcome=pending").await;
        (items.len() == 3 && items.iter().all(|d| d["attempts"].as_u64() >= Some(2))).then_some(())
    })
    .await;
    let detail = api
        .get(&format!(
            "/api/webhooks/deliveries/{}",
            api.deliveries("").await[0]["id"].as_str().expect("id")
        ))
        .await
        .1;
    let first = &detail["attempts_log"][0];
    assert_eq!(first["success"], false);
    assert!(first["status_code"].is_null());
    assert!(
        first["error"]
            .as_str()
            .is_some_and(|e| e.contains("connection")),
        "{first}"
    );
    assert_eq!(first["trigger"], "scheduled");
    assert!(detail["next_attempt_at"].is_string());

    // Up, answering 429 and 503 once, then 200.
    let r = WebhookReceiver::new(200);
    r.script(&[429, 503]);
    r.serve(tokio::net::TcpListener::bind(addr).await.expect("rebind"));
    eventually("all three delivered", || async {
        (api.deliveries("outcome=success").await.len() == 3).then_some(())
    })
    .await;
    let ok: Vec<String> = r
        .hits()
        .iter()
        .filter(|h| h.answered == 200)
        .map(|h| h.headers["webhook-id"].to_str().expect("id").to_owned())
        .collect();
    let mut sorted = ok.clone();
    sorted.sort();
    ids.sort();
    assert_eq!(
        sorted, ids,
        "each event delivered successfully exactly once"
    );
    // webhook-id is stable across retries: every request carried one of the event ids.
    assert!(
        r.hits()
            .iter()
            .all(|h| ids.contains(&h.headers["webhook-id"].to_str().expect("id").to_owned()))
    );
}

#[tokio::test]
async fn pending_retries_survive_a_restart_and_nothing_is_sent_twice() {
    let dir = ConfigDir::new(AGENT);
    let graph = dir.graph_url();
    let r = WebhookReceiver::new(503);
    let url = r.start().await;
    let schedule = |w: &mut Settings| {
        w.webhooks.retry_schedule = vec![Duration::from_millis(150); 10];
    };
    let first = start(&dir, &graph, schedule).await;
    let mut ids = Vec::new();
    {
        let api = Api::new(&first).await;
        api.subscribe(&format!("{url}/hook"), &[]).await;
        for i in 0..3 {
            let (_, evt) = api.emit(&format!("r{i}"), "done", false).await;
            ids.push(evt.as_str().expect("id").to_owned());
        }
        eventually("every event failed at least once", || async {
            let hits = r.hits();
            ids.iter()
                .all(|id| hits.iter().any(|h| h.headers["webhook-id"] == id.as_str()))
                .then_some(())
        })
        .await;
    }
    first.stop().await.expect("stop");
    assert!(r.hits().iter().all(|h| h.answered == 503));
    r.set_default(200);

    let second = start(&dir, &graph, schedule).await;
    let api = Api::new(&second).await;
    eventually("pending retries resumed and delivered", || async {
        (api.deliveries("outcome=success").await.len() == 3).then_some(())
    })
    .await;
    assert!(api.deliveries("outcome=pending").await.is_empty());
    let mut ok: Vec<String> = r
        .hits()
        .iter()
        .filter(|h| h.answered == 200)
        .map(|h| h.headers["webhook-id"].to_str().expect("id").to_owned())
        .collect();
    ok.sort();
    ids.sort();
    assert_eq!(ok, ids, "each event succeeded exactly once");
    // Recorded state agrees: one successful attempt per delivery.
    assert_eq!(
        count(
            &second,
            "RETURN count(SELECT id FROM webhook_attempt WHERE success = true);"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn client_errors_are_final_and_failing_subscriptions_get_disabled() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |w| {
        w.webhooks.disable_after_failures = 3;
    })
    .await;
    let api = Api::new(&s).await;
    let bad = WebhookReceiver::new(400);
    let ops = WebhookReceiver::new(200);
    let bad_url = bad.start().await;
    let ops_url = ops.start().await;
    let (sub, _) = api
        .subscribe(&format!("{bad_url}/hook"), &[ITEM_EVENT])
        .await;
    let (_, ops_secret) = api
        .subscribe(
            &format!("{ops_url}/ops"),
            &["webhook.subscription.disabled"],
        )
        .await;
    for i in 0..3 {
        api.emit(&format!("f{i}"), "x", false).await;
    }
    let disabled = eventually("the subscription is disabled", || async {
        let (_, body) = api.get(&format!("/api/webhooks/subscriptions/{sub}")).await;
        (body["enabled"] == false).then_some(body)
    })
    .await;
    assert_eq!(disabled["consecutive_failures"], 3);
    assert!(disabled["disabled_reason"].is_string());
    // 400 is final: one attempt per event, no retry.
    let failed = api
        .deliveries(&format!("subscription_id={sub}&outcome=failure"))
        .await;
    assert_eq!(failed.len(), 3);
    assert!(
        failed
            .iter()
            .all(|d| d["attempts"] == 1 && d["last_status_code"] == 400)
    );
    assert_eq!(bad.hits().len(), 3);
    // The operational event reached the ops subscription, signed.
    let hit = eventually("operational event delivered", || async {
        ops.hits().into_iter().next()
    })
    .await;
    assert_eq!(
        verify(&[ops_secret.as_str()], &hit.headers, &hit.body),
        vec![0]
    );
    let envelope: Value = serde_json::from_slice(&hit.body).expect("json");
    assert_eq!(envelope["type"], "webhook.subscription.disabled");
    assert_eq!(envelope["data"]["subscription_id"], sub.as_str());
    assert_eq!(ops.hits().len(), 1, "emitted once");

    // Disabled: new events are not delivered to it.
    api.emit("f4", "x", false).await;
    // Re-enabling resets the counter; the next event is delivered.
    bad.set_default(200);
    let (st, body) = api
        .patch(
            &format!("/api/webhooks/subscriptions/{sub}"),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["consecutive_failures"], 0);
    assert!(body["disabled_reason"].is_null());
    let (_, evt) = api.emit("f5", "x", false).await;
    eventually("delivered after re-enabling", || async {
        bad.hits()
            .iter()
            .any(|h| h.headers["webhook-id"] == evt.as_str().expect("id") && h.answered == 200)
            .then_some(())
    })
    .await;
    assert!(
        !bad.hits().iter().any(|h| {
            let e: Value = serde_json::from_slice(&h.body).unwrap_or_default();
            e["data"]["item"] == "f4"
        }),
        "events emitted while disabled are not delivered"
    );
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allowed() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |w| {
        w.webhooks.allow_http_loopback = false;
        w.webhooks.allowed_private = vec!["10.0.0.0/8".to_owned()];
    })
    .await;
    let api = Api::new(&s).await;
    let r = WebhookReceiver::new(200);
    let url = r.start().await;
    let port = url.rsplit(':').next().expect("port").to_owned();
    for refused in [
        format!("{url}/hook"),
        format!("https://127.0.0.1:{port}/hook"),
        format!("https://localhost:{port}/hook"),
        "https://192.168.1.10/hook".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::1]/hook".to_owned(),
    ] {
        let (st, body) = api
            .post("/api/webhooks/subscriptions", json!({"url": refused}))
            .await;
        assert_eq!(st, 422, "{refused}: {body}");
        assert_eq!(body["error"]["field"], "url");
    }
    let (st, body) = api
        .post(
            "/api/webhooks/subscriptions",
            json!({"url": "https://10.1.2.3/hook"}),
        )
        .await;
    assert_eq!(st, 201, "allow-listed: {body}");

    // A subscription that slipped past the check (written directly) is still refused at
    // delivery time, after DNS: nothing reaches the receiver.
    s.graph
        .query(
            "CREATE webhook_subscription:sub_direct CONTENT { key: 'sub_direct', url: $url, \
             event_types: [], description: '', enabled: true, \
             secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', consecutive_failures: 0, \
             created_ms: 0, updated_ms: 0 };",
            json!({"url": format!("https://localhost:{port}/hook")}),
        )
        .await
        .expect("insert");
    let (st, attempt) = api
        .post("/api/webhooks/subscriptions/sub_direct/test", json!({}))
        .await;
    assert_eq!(st, 200, "{attempt}");
    assert_eq!(attempt["success"], false);
    assert!(
        attempt["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("destination localhost refused: 127.0.0.1 is loopback")),
        "{attempt}"
    );
    assert!(r.hits().is_empty());
}

/// Issue 10, class 3: IPv6 forms that carry an IPv4 address, and the other special
/// ranges, are refused when subscribing (created or changed), even with the loopback
/// development switch on.
#[tokio::test]
async fn ipv4_carrying_forms_and_special_ranges_are_refused_naming_url() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |_| {}).await;
    let api = Api::new(&s).await;
    let r = WebhookReceiver::new(200);
    let url = r.start().await;
    let (sub, _) = api.subscribe(&format!("{url}/hook"), &[]).await;
    for (refused, range) in [
        (
            "https://[::127.0.0.1]/hook",
            "(::/96, RFC 4291) carrying 127.0.0.1",
        ),
        (
            "https://[64:ff9b::a9fe:a9fe]/hook",
            "NAT64 form of 169.254.169.254, link-local",
        ),
        (
            "https://[2002:a9fe:a9fe::]/hook",
            "6to4 (2002::/16, RFC 3056) carrying 169.254.169.254",
        ),
        (
            "https://[::ffff:0:7f00:1]/hook",
            "(::ffff:0:0:0/96, RFC 2765) carrying 127.0.0.1",
        ),
        (
            "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/hook",
            "Teredo (2001::/32, RFC 4380) carrying server 65.54.227.120, client 10.0.0.1",
        ),
        (
            "https://[64:ff9b:1::a9fe:a9fe]/hook",
            "local-use NAT64 (64:ff9b:1::/48",
        ),
        (
            "https://[::ffff:169.254.169.254]/hook",
            "IPv4-mapped form of 169.254.169.254",
        ),
        (
            "https://100.64.0.1/hook",
            "shared address space (100.64.0.0/10",
        ),
        ("https://198.18.0.1/hook", "benchmarking (198.18.0.0/15"),
        ("https://192.0.0.8/hook", "(192.0.0.8/32"),
        ("https://240.0.0.1/hook", "reserved (240.0.0.0/4"),
        (
            "https://[fec0::1]/hook",
            "site-local (deprecated) (fec0::/10",
        ),
        ("https://[5f00::1]/hook", "(5f00::/16"),
        ("https://[2001:db8::1]/hook", "documentation (2001:db8::/32"),
    ] {
        let (st, body) = api
            .post("/api/webhooks/subscriptions", json!({"url": refused}))
            .await;
        assert_eq!(st, 422, "{refused}: {body}");
        assert_eq!(body["error"]["field"], "url", "{refused}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("url: destination ") && message.contains(range),
            "{refused}: {message}"
        );
        let (st, body) = api
            .patch(
                &format!("/api/webhooks/subscriptions/{sub}"),
                json!({"url": refused}),
            )
            .await;
        assert_eq!(st, 422, "{refused}: {body}");
        assert_eq!(body["error"]["field"], "url", "{refused}");
    }
    let (_, kept) = api.get(&format!("/api/webhooks/subscriptions/{sub}")).await;
    assert_eq!(
        kept["url"],
        format!("{url}/hook"),
        "a refused change changes nothing"
    );
    assert_eq!(
        count(&s, "RETURN count(SELECT id FROM webhook_subscription);").await,
        1
    );
}

/// A delivery the policy refuses (the URL, its address, or every address its name
/// resolves to) fails at once: one attempt, a reason, no retry schedule, counted against the
/// subscription. The subscriptions were made while the policy allowed loopback; the
/// server that delivers refuses it.
#[tokio::test]
async fn a_delivery_refused_by_the_policy_fails_at_once_and_is_not_retried() {
    let dir = ConfigDir::new(AGENT);
    let graph = dir.graph_url();
    let r = WebhookReceiver::new(200);
    let url = r.start().await;
    let port = url.rsplit(':').next().expect("port").to_owned();
    let targets = [
        // Judged after DNS: `*.localhost` resolves to 127.0.0.1 and ::1.
        (
            format!("https://hook.localhost:{port}/dns"),
            "destination hook.localhost refused: 127.0.0.1 is loopback (127.0.0.0/8, RFC 1122); ::1 is loopback (::1/128, RFC 4291)",
        ),
        // Judged as a literal.
        (
            format!("https://[::ffff:127.0.0.1]:{port}/literal"),
            "destination ::ffff:127.0.0.1 refused: IPv4-mapped form of 127.0.0.1, loopback (127.0.0.0/8, RFC 1122)",
        ),
        // Refused by shape: http is for loopback while the switch is on.
        (
            format!("http://127.0.0.1:{port}/http"),
            "URL refused: must be https (http is accepted only for loopback, when enabled)",
        ),
    ];
    let mut subs = Vec::new();
    {
        let first = start(&dir, &graph, |_| {}).await;
        let api = Api::new(&first).await;
        // With loopback allowed, a `*.localhost` name really is delivered to.
        let (sub, _) = api
            .subscribe(&format!("http://hook.localhost:{port}/allowed"), &[])
            .await;
        let (st, attempt) = api
            .post(
                &format!("/api/webhooks/subscriptions/{sub}/test"),
                json!({}),
            )
            .await;
        assert_eq!((st, &attempt["success"]), (200, &json!(true)), "{attempt}");
        assert_eq!(r.hits_on("/allowed").len(), 1);
        api.patch(
            &format!("/api/webhooks/subscriptions/{sub}"),
            json!({"enabled": false}),
        )
        .await;
        for (target, _) in &targets {
            subs.push(api.subscribe(target, &[ITEM_EVENT]).await.0);
        }
        first.stop().await.expect("stop");
    }

    let second = start(&dir, &graph, |w| w.webhooks.allow_http_loopback = false).await;
    let api = Api::new(&second).await;
    api.emit("p1", "done", false).await;
    let failed = eventually("every delivery failed", || async {
        let items = api.deliveries("outcome=failure").await;
        (items.len() == targets.len()).then_some(items)
    })
    .await;
    // Several retry intervals (20 ms each) later, still one attempt each.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for (sub, (_, reason)) in subs.iter().zip(&targets) {
        let delivery = failed
            .iter()
            .find(|d| d["subscription_id"] == sub.as_str())
            .expect("a failed delivery per subscription");
        let id = delivery["id"].as_str().expect("id");
        let (_, detail) = api.get(&format!("/api/webhooks/deliveries/{id}")).await;
        assert_eq!(detail["status"], "failed", "{detail}");
        assert_eq!(detail["attempts"], 1, "{detail}");
        assert_eq!(detail["last_error"], *reason, "{detail}");
        assert!(detail["next_attempt_at"].is_null(), "{detail}");
        assert_eq!(
            detail["attempts_log"].as_array().map(Vec::len),
            Some(1),
            "{detail}"
        );
        let (_, s) = api.get(&format!("/api/webhooks/subscriptions/{sub}")).await;
        assert_eq!(s["consecutive_failures"], 1, "{s}");
    }
    assert_eq!(
        count(
            &second,
            "RETURN count(SELECT id FROM webhook_attempt WHERE trigger = 'scheduled');"
        )
        .await,
        targets.len() as u64
    );
    assert!(
        ["/dns", "/literal", "/http"]
            .iter()
            .all(|p| r.hits_on(p).is_empty())
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |_| {}).await;
    let api = Api::new(&s).await;
    let r = WebhookReceiver::new(307);
    let url = r.start().await;
    let (sub, _) = api.subscribe(&format!("{url}/hook"), &[]).await;
    let (st, attempt) = api
        .post(
            &format!("/api/webhooks/subscriptions/{sub}/test"),
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{attempt}");
    assert_eq!(attempt["status_code"], 307);
    assert_eq!(attempt["success"], false);
    assert_eq!(attempt["trigger"], "manual");
    assert!(r.hits_on("/other").is_empty(), "redirect followed");
    assert_eq!(r.hits_on("/hook").len(), 1);
    // Scheduled deliveries: a redirect is final, not retried.
    api.emit("rd", "x", false).await;
    eventually("the redirected delivery failed", || async {
        let items = api
            .deliveries(&format!("event_type={ITEM_EVENT}&outcome=failure"))
            .await;
        (items.len() == 1).then_some(items)
    })
    .await;
    assert!(r.hits_on("/other").is_empty());
    assert_eq!(r.hits_on("/hook").len(), 2);
}

#[tokio::test]
async fn secret_is_shown_once_and_rotation_signs_with_both() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |w| {
        w.webhooks.rotation_grace = Duration::from_millis(1500);
    })
    .await;
    let api = Api::new(&s).await;
    let r = WebhookReceiver::new(200);
    let url = r.start().await;
    let (sub, old) = api.subscribe(&format!("{url}/hook"), &[]).await;
    assert!(old.starts_with("whsec_"));
    let (_, one) = api.get(&format!("/api/webhooks/subscriptions/{sub}")).await;
    let (_, list) = api.get("/api/webhooks/subscriptions").await;
    for body in [&one, &list] {
        let text = body.to_string();
        assert!(
            !text.contains(&old) && !text.contains("whsec_") && !text.contains("\"secret\""),
            "{text}"
        );
    }
    let (st, rotated) = api
        .post(
            &format!("/api/webhooks/subscriptions/{sub}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{rotated}");
    let new = rotated["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_valid_until"].is_string());
    let (st, attempt) = api
        .post(
            &format!("/api/webhooks/subscriptions/{sub}/test"),
            json!({}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(attempt["success"], true, "{attempt}");
    let hit = r.hits().pop().expect("hit");
    assert_eq!(
        hit.headers["webhook-signature"]
            .to_str()
            .expect("sig")
            .split(' ')
            .count(),
        2
    );
    assert_eq!(verify(&[&old, &new], &hit.headers, &hit.body), vec![0, 1]);
    let envelope: Value = serde_json::from_slice(&hit.body).expect("json");
    assert_eq!(envelope["type"], "webhook.test");
    // After the grace period only the new secret signs.
    eventually("the old secret stops signing", || async {
        api.post(
            &format!("/api/webhooks/subscriptions/{sub}/test"),
            json!({}),
        )
        .await;
        let hit = r.hits().pop()?;
        (verify(&[&old, &new], &hit.headers, &hit.body) == vec![1]).then_some(())
    })
    .await;
    let (_, one) = api.get(&format!("/api/webhooks/subscriptions/{sub}")).await;
    assert!(!one.to_string().contains(&new));
}

#[tokio::test]
async fn event_types_are_listed_and_unknown_ones_refused() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |_| {}).await;
    let api = Api::new(&s).await;
    let (st, types) = api.get("/api/webhooks/event-types").await;
    assert_eq!(st, 200);
    let names: Vec<&str> = types
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    for required in ["webhook.test", "webhook.subscription.disabled", ITEM_EVENT] {
        assert!(
            names.contains(&required),
            "{required} missing from {names:?}"
        );
    }
    assert!(
        types
            .as_array()
            .expect("array")
            .iter()
            .all(|t| t["description"].is_string() && t["example"].is_object())
    );
    let (st, body) = api
        .post(
            "/api/webhooks/subscriptions",
            json!({"url": "https://example.com/hook", "event_types": [ITEM_EVENT, "nope.nothing"]}),
        )
        .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["field"], "event_types[1]");
    let (st, _) = s
        .http
        .get(s.url("/api/webhooks/event-types"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("get");
    assert_eq!(st, 401, "admin only");
}

#[tokio::test]
async fn delivery_log_redeliver_recover_and_stats() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |w| {
        w.webhooks.retry_schedule = vec![Duration::from_millis(10); 2];
    })
    .await;
    let api = Api::new(&s).await;
    let r = WebhookReceiver::new(500);
    let url = r.start().await;
    let (sub, _) = api.subscribe(&format!("{url}/hook"), &[]).await;
    for i in 0..2 {
        api.emit(&format!("d{i}"), "x", false).await;
    }
    let failed = eventually("both deliveries exhausted their retries", || async {
        let items = api.deliveries("outcome=failure").await;
        (items.len() == 2).then_some(items)
    })
    .await;
    assert!(failed.iter().all(|d| d["attempts"] == 3), "1 + 2 retries");
    let id = failed[0]["id"].as_str().expect("id").to_owned();
    let (st, detail) = api.get(&format!("/api/webhooks/deliveries/{id}")).await;
    assert_eq!(st, 200);
    let log = detail["attempts_log"].as_array().expect("log");
    assert_eq!(log.len(), 3);
    assert_eq!(
        log.iter()
            .map(|a| a["attempt"].as_u64().expect("n"))
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(log.iter().all(|a| a["status_code"] == 500
        && a["response_body"] == "ok"
        && a["duration_ms"].is_i64()));
    assert_eq!(detail["payload"]["status"], "x");

    // Manual redelivery.
    r.set_default(200);
    let (st, attempt) = api
        .post(
            &format!("/api/webhooks/deliveries/{id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{attempt}");
    assert_eq!(attempt["success"], true);
    assert_eq!(attempt["trigger"], "manual");
    assert_eq!(attempt["attempt"], 4);
    let (_, detail) = api.get(&format!("/api/webhooks/deliveries/{id}")).await;
    assert_eq!(detail["status"], "succeeded");

    // Recovery re-queues the other failed one.
    let (st, rec) = api
        .post(
            &format!("/api/webhooks/subscriptions/{sub}/recover?since=2020-01-01T00:00:00Z"),
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{rec}");
    assert_eq!(rec["requeued"], 1);
    eventually("the recovered delivery succeeded", || async {
        (api.deliveries("outcome=success").await.len() == 2).then_some(())
    })
    .await;

    // Filters and paging.
    assert_eq!(
        api.deliveries(&format!("subscription_id={sub}&page_size=1"))
            .await
            .len(),
        1
    );
    let (_, page2) = api.get("/api/webhooks/deliveries?page=2&page_size=1").await;
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["has_more"], false);
    assert!(api.deliveries("event_type=webhook.test").await.is_empty());
    assert!(
        api.deliveries("until=2020-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    let (st, _) = api.get("/api/webhooks/deliveries?outcome=maybe").await;
    assert_eq!(st, 400);

    let (st, stats) = api.get("/api/webhooks/stats?period_days=1").await;
    assert_eq!(st, 200, "{stats}");
    assert_eq!(stats["total"], 2);
    assert_eq!(stats["succeeded"], 2);
    assert_eq!(stats["success_rate"], 1.0);
    assert_eq!(stats["attempts"], 8, "3 + 3 failed, 1 manual, 1 recovered");
    assert!(stats["average_latency_ms"].is_number());
    assert_eq!(stats["by_event_type"][0]["event_type"], ITEM_EVENT);
    let (st, _) = api.get("/api/webhooks/stats?period_days=0").await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn the_cleaner_expires_payloads_and_keeps_attempts() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |w| {
        w.webhooks.cleaner_interval = Duration::from_millis(50);
    })
    .await;
    let api = Api::new(&s).await;
    let r = WebhookReceiver::new(200);
    let url = r.start().await;
    api.subscribe(&format!("{url}/hook"), &[]).await;
    api.emit("old", "x", false).await;
    api.emit("new", "y", false).await;
    let items = eventually("delivered", || async {
        let items = api.deliveries("outcome=success").await;
        (items.len() == 2).then_some(items)
    })
    .await;
    let by_item: HashMap<String, String> = {
        let mut m = HashMap::new();
        for d in &items {
            let id = d["id"].as_str().expect("id").to_owned();
            let (_, detail) = api.get(&format!("/api/webhooks/deliveries/{id}")).await;
            m.insert(
                detail["payload"]["item"].as_str().expect("item").to_owned(),
                id,
            );
        }
        m
    };
    // Age one event past the retention period.
    s.graph
        .query(
            "UPDATE outbox_event SET created_ms = 0 WHERE data.item = 'old';",
            Value::Null,
        )
        .await
        .expect("age");
    let old = by_item["old"].clone();
    let detail = eventually("the old payload expired", || async {
        let (_, d) = api.get(&format!("/api/webhooks/deliveries/{old}")).await;
        (d["payload_expired"] == true).then_some(d)
    })
    .await;
    assert!(detail["payload"].is_null());
    crate::openapi::assert_matches_schema(&s, "DeliveryDetail", &detail).await;
    assert_eq!(
        detail["attempts_log"].as_array().map(Vec::len),
        Some(1),
        "attempts kept"
    );
    let (_, fresh) = api
        .get(&format!("/api/webhooks/deliveries/{}", by_item["new"]))
        .await;
    assert_eq!(fresh["payload"]["item"], "new");
    let (st, _) = api
        .post(
            &format!("/api/webhooks/deliveries/{old}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(st, 410);
}

#[tokio::test]
async fn a_subscription_failing_for_too_long_is_disabled() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |w| {
        w.webhooks.disable_after_failures = 1000;
        w.webhooks.disable_after_failing_for = Duration::from_millis(1);
    })
    .await;
    let api = Api::new(&s).await;
    let r = WebhookReceiver::new(410);
    let url = r.start().await;
    let (sub, _) = api.subscribe(&format!("{url}/hook"), &[]).await;
    api.emit("p1", "x", false).await;
    eventually("the first event failed", || async {
        (api.deliveries("outcome=failure").await.len() == 1).then_some(())
    })
    .await;
    let (_, body) = api.get(&format!("/api/webhooks/subscriptions/{sub}")).await;
    assert_eq!(body["enabled"], true, "one failure starts the clock only");
    tokio::time::sleep(Duration::from_millis(5)).await;
    api.emit("p2", "x", false).await;
    let body = eventually("disabled by the failure period", || async {
        let (_, body) = api.get(&format!("/api/webhooks/subscriptions/{sub}")).await;
        (body["enabled"] == false).then_some(body)
    })
    .await;
    assert_eq!(body["consecutive_failures"], 2);
}

#[tokio::test]
async fn unusable_webhook_settings_stop_start_up() {
    let mut s = settings(None, "mem://");
    s.webhooks.timeout = Duration::from_secs(31);
    s.webhooks.allowed_private = vec!["10.0.0.0/40".to_owned()];
    let err = match builder().settings(s).build().await {
        Ok(_) => panic!("built with a 31 s timeout"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("GRAPHAGENT_WEBHOOK_TIMEOUT_SECS"), "{err}");
    assert!(err.contains("10.0.0.0/40"), "{err}");
}

/// A receiver that answers 200 after `delay`, counting requests in flight.
#[derive(Clone, Default)]
struct SlowReceiver {
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    max_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    done: Arc<std::sync::atomic::AtomicUsize>,
    started: Arc<std::sync::atomic::AtomicUsize>,
}

impl SlowReceiver {
    async fn start(&self, delay: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let me = self.clone();
        let app = axum::Router::new().fallback(move || {
            let me = me.clone();
            async move {
                me.started.fetch_add(1, Ordering::SeqCst);
                let now = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                me.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                me.in_flight.fetch_sub(1, Ordering::SeqCst);
                me.done.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

#[tokio::test]
async fn concurrency_per_subscription_is_bounded() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |w| {
        w.webhooks.per_subscription_concurrency = 2;
    })
    .await;
    let api = Api::new(&s).await;
    let r = SlowReceiver::default();
    let url = r.start(Duration::from_millis(150)).await;
    api.subscribe(&format!("{url}/hook"), &[]).await;
    for i in 0..6 {
        api.emit(&format!("c{i}"), "x", false).await;
    }
    eventually("all six delivered", || async {
        (api.deliveries("outcome=success").await.len() == 6).then_some(())
    })
    .await;
    let max = r.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} attempts in flight for one subscription");
    assert_eq!(r.done.load(Ordering::SeqCst), 6);
}

/// A server on `graph` whose worker has one attempt in flight, to a receiver that answers
/// after `delay`.
async fn attempt_in_flight(
    dir: &ConfigDir,
    graph: &str,
    delay: Duration,
    tweak: impl FnOnce(&mut Settings),
) -> (TestHost, SlowReceiver) {
    let r = SlowReceiver::default();
    let url = r.start(delay).await;
    let server = start(dir, graph, tweak).await;
    let api = Api::new(&server).await;
    api.subscribe(&format!("{url}/hook"), &[]).await;
    api.emit("s1", "x", false).await;
    eventually("the attempt is in flight", || async {
        (r.started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    (server, r)
}

#[tokio::test]
async fn shutdown_lets_in_flight_attempts_finish_and_records_them() {
    let dir = ConfigDir::new(AGENT);
    let graph = dir.graph_url();
    let (first, r) = attempt_in_flight(&dir, &graph, Duration::from_millis(400), |_| {}).await;
    first.stop().await.expect("stop");
    assert_eq!(
        r.done.load(Ordering::SeqCst),
        1,
        "stop waited for the attempt"
    );

    let second = start(&dir, &graph, |_| {}).await;
    let api = Api::new(&second).await;
    let items = api.deliveries("").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "succeeded", "{}", items[0]);
    assert_eq!(items[0]["attempts"], 1);
    assert_eq!(
        r.started.load(Ordering::SeqCst),
        1,
        "not sent again after restart"
    );
}

#[tokio::test]
async fn shutdown_abandons_attempts_still_running_after_the_grace_period() {
    let dir = ConfigDir::new(AGENT);
    let graph = dir.graph_url();
    let (first, r) = attempt_in_flight(&dir, &graph, Duration::from_secs(60), |s| {
        s.webhooks.timeout = Duration::from_secs(20);
        s.server.shutdown_grace = Duration::from_millis(500);
    })
    .await;
    let started = std::time::Instant::now();
    first.stop().await.expect("stop");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "stop waited {took:?} for an attempt with a 20 s timeout"
    );
    assert_eq!(r.done.load(Ordering::SeqCst), 0);

    // Nothing was recorded for it: the delivery is still pending, to be attempted again
    // once its lease expires.
    let second = start(&dir, &graph, |s| s.webhooks.worker = false).await;
    let api = Api::new(&second).await;
    let items = api.deliveries("").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "pending", "{}", items[0]);
    assert_eq!(items[0]["attempts"], 0, "{}", items[0]);
}

/// Deleting a subscription with many pending deliveries, while the worker keeps
/// attempting them, answers promptly and leaves none of them pending. (Found by the
/// API fuzz: failing them in the deleting transaction conflicted with every attempt
/// the worker recorded, and the retried transaction outlasted the client.)
#[tokio::test]
async fn deleting_a_busy_subscription_answers_promptly_and_fails_its_pending_deliveries() {
    let dir = ConfigDir::new(AGENT);
    let s = start(&dir, "mem://", |s| {
        // 150 deliveries failing and retried every second keep the worker writing them.
        s.webhooks.retry_schedule = vec![Duration::from_millis(1000); 20];
    })
    .await;
    let api = Api::new(&s).await;
    let down = WebhookReceiver::new(503);
    let base = down.start().await;
    let (sub, _) = api.subscribe(&format!("{base}/hook"), &[ITEM_EVENT]).await;
    for i in 0..150 {
        let (st, _) = api.emit(&format!("i{i}"), "done", false).await;
        assert_eq!(st, 200);
    }
    eventually("every event fanned out and attempted", || async {
        (count(
            &s,
            "RETURN count(SELECT id FROM webhook_delivery WHERE attempts > 0);",
        )
        .await
            >= 150)
            .then_some(())
    })
    .await;
    let started = tokio::time::Instant::now();
    let (st, body) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/webhooks/subscriptions/{sub}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "delete took {:?}",
        started.elapsed()
    );
    // What the delete left to in-flight attempts is settled by the worker.
    eventually(
        "no delivery of the deleted subscription pending",
        || async {
            (count(
                &s,
                "RETURN count(SELECT id FROM webhook_delivery WHERE status = 'pending');",
            )
            .await
                == 0)
                .then_some(())
        },
    )
    .await;
    let failed = api.deliveries("outcome=failure&page_size=200").await;
    assert_eq!(failed.len(), 150);
    assert!(
        failed
            .iter()
            .all(|d| d["last_error"].as_str().unwrap_or("").contains("deleted")),
        "{:?}",
        failed.first()
    );
}
