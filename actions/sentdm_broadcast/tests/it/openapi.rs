//! The OpenAPI document matches what is served: every route of a host with a SentDM
//! action (against the simulator) is called, in success and in its main error cases, and
//! each live answer must have a documented status, the documented content type and a
//! body valid against the documented schema (`$ref`s resolved into `components`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{App, AppOptions};
use crate::util::start_sim;
use graphagent::testing::WebhookReceiver;
use graphagent::testing::{ADMIN_EMAIL, ADMIN_PASSWORD};

/// How a probe authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// The admin's bearer token.
    Admin,
    /// No credentials.
    None,
    /// `x-api-key`.
    Key(&'a str),
}

/// What a probe sends as its body.
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

/// The served document and what the probes have seen of it.
struct Probe<'a> {
    app: &'a App,
    doc: Value,
    validators: Mutex<HashMap<String, jsonschema::Validator>>,
    /// (method, template) → statuses seen.
    seen: Mutex<BTreeMap<(String, String), BTreeSet<u16>>>,
}

impl<'a> Probe<'a> {
    async fn new(app: &'a App) -> Self {
        let doc: Value = app
            .http
            .get(format!("{}/openapi.json", app.base))
            .send()
            .await
            .expect("get document")
            .json()
            .await
            .expect("document is JSON");
        Self {
            app,
            doc,
            validators: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    /// Every (method, template) of the document.
    fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    /// The template `path` is an instance of (the most literal one wins, as in routing).
    fn template(&self, method: &Method, path: &str) -> String {
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .filter(|(t, item)| {
                let ts: Vec<&str> = t.split('/').collect();
                item.get(method.as_str().to_lowercase()).is_some()
                    && ts.len() == segments.len()
                    && ts
                        .iter()
                        .zip(&segments)
                        .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
            })
            .max_by_key(|(t, _)| t.split('/').filter(|s| !s.starts_with('{')).count())
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| panic!("{method} {path} is not in the document"))
    }

    /// Check one answer against the document: status documented, content type as
    /// documented, body valid against the documented schema.
    fn check(
        &self,
        method: &Method,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &Value,
    ) {
        let template = self.template(method, path);
        let here = format!("{method} {template} → {status}");
        let op = &self.doc["paths"][&template][method.as_str().to_lowercase()];
        let responses = op["responses"].as_object().expect("responses");
        let Some(response) = responses.get(&status.to_string()) else {
            panic!(
                "{here}: status not documented (documented: {:?}); body {body}",
                responses.keys().collect::<Vec<_>>()
            );
        };
        let content = response["content"].as_object();
        match content.and_then(|c| c.get("application/json")) {
            Some(media) => {
                if let Some(ct) = content_type {
                    assert!(
                        ct.starts_with("application/json"),
                        "{here}: content type `{ct}`, documented application/json"
                    );
                }
                let key = here.clone();
                let mut validators = self.validators.lock().expect("lock");
                let validator = validators.entry(key).or_insert_with(|| {
                    let schema = json!({
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "components": self.doc["components"],
                        "allOf": [media["schema"]],
                    });
                    jsonschema::validator_for(&schema).unwrap_or_else(|e| {
                        panic!("{here}: the documented schema does not compile: {e}")
                    })
                });
                let errors: Vec<String> = validator
                    .iter_errors(body)
                    .map(|e| format!("{e} (at `{}`)", e.instance_path))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{here}: the body violates the documented schema:\n  {}\nbody: {body:#}",
                    errors.join("\n  ")
                );
                drop(validators);
                // An error's documented examples show the codes it comes with.
                let codes = example_codes(media);
                if status >= 400 && !codes.is_empty() {
                    let code = body["error"]["code"].as_str().unwrap_or_default();
                    assert!(
                        codes.iter().any(|c| c == code),
                        "{here}: code `{code}` is in none of the documented examples \
                         (they show {codes:?}); body {body}"
                    );
                }
            }
            None => assert!(
                body.is_null(),
                "{here}: a body {body} where the document declares none"
            ),
        }
        self.seen
            .lock()
            .expect("lock")
            .entry((method.to_string(), template))
            .or_default()
            .insert(status);
    }

    /// Send a request, check the answer, return status and JSON body.
    async fn call(&self, method: Method, path: &str, auth: Auth<'_>, body: Body) -> (u16, Value) {
        let url = format!("{}{path}", self.app.base);
        let mut req = self.app.http.request(method.clone(), &url);
        req = match auth {
            Auth::Admin => req.bearer_auth(&self.app.token),
            Auth::None => req,
            Auth::Key(k) => req.header("x-api-key", k),
        };
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Raw(ct, bytes) => req.header("content-type", ct).body(bytes),
        };
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = res.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{method} {path} → {status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        let path_only = path.split('?').next().unwrap_or(path);
        self.check(&method, path_only, status, ct.as_deref(), &value);
        (status, value)
    }

    /// [`Probe::call`] that must answer `expected`.
    async fn expect(
        &self,
        expected: u16,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Body,
    ) -> Value {
        let (status, value) = self.call(method.clone(), path, auth, body).await;
        assert_eq!(status, expected, "{method} {path}: {value}");
        value
    }

    /// Every operation answered at least once with success, and once with an error
    /// unless it documents no client error (`/healthz`: only a panic's 500).
    fn assert_covered(&self) {
        let seen = self.seen.lock().expect("lock");
        let mut missing = Vec::new();
        for (method, template) in self.operations() {
            let op = &self.doc["paths"][&template][method.to_lowercase()];
            let can_fail = op["responses"]
                .as_object()
                .is_some_and(|r| r.keys().any(|k| k.starts_with('4') || k == "503"));
            let statuses = seen.get(&(method.clone(), template.clone()));
            let ok = statuses.is_some_and(|s| s.iter().any(|c| (200..300).contains(c)));
            let err = !can_fail || statuses.is_some_and(|s| s.iter().any(|c| *c >= 400));
            if !ok || !err {
                missing.push(format!("{method} {template} (seen {statuses:?})"));
            }
        }
        assert!(
            missing.is_empty(),
            "operations not exercised in success and error:\n  {}",
            missing.join("\n  ")
        );
    }
}

/// The `error.code`s of a media type's example and named examples.
fn example_codes(media: &Value) -> Vec<String> {
    let named = media["examples"]
        .as_object()
        .into_iter()
        .flat_map(|e| e.values())
        .map(|e| &e["value"]);
    std::iter::once(&media["example"])
        .chain(named)
        .filter_map(|e| e["error"]["code"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The request examples of an operation's JSON body: its `example` and the values of
/// its named `examples`.
fn request_examples(op: &Value) -> Vec<Value> {
    let media = &op["requestBody"]["content"]["application/json"];
    let named = media["examples"]
        .as_object()
        .into_iter()
        .flat_map(|e| e.values())
        .map(|e| e["value"].clone());
    std::iter::once(media["example"].clone())
        .filter(|e| !e.is_null())
        .chain(named)
        .collect()
}

/// Fill a template's parameters: `action_id` with the action, others from `ids`.
fn fill(template: &str, ids: &HashMap<&str, String>) -> String {
    template
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => ids
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| format!("no-such-{name}")),
                None => s.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The error answers the host gives on every route that has what causes them, derived
/// from the document (security, `{action_id}`, parameters, typed JSON body), so a route
/// added later is covered without editing this test.
async fn systematic_errors(p: &Probe<'_>, ids: &HashMap<&str, String>, non_admin_key: &str) {
    for (method, template) in p.operations() {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let op = p.doc["paths"][&template][method.to_lowercase()].clone();
        let path = fill(&template, ids);
        let public_receiver = template.starts_with("/api/sentdm/webhook/");
        if op["security"].is_array() {
            p.expect(401, m.clone(), &path, Auth::None, Body::None)
                .await;
            p.expect(403, m.clone(), &path, Auth::Key(non_admin_key), Body::None)
                .await;
        }
        if template.starts_with("/api/actions/{action_id}/") {
            let mut other = ids.clone();
            other.insert("action_id", "act_00000000000000000000".into());
            p.expect(
                404,
                m.clone(),
                &fill(&template, &other),
                Auth::Admin,
                Body::None,
            )
            .await;
        }
        // A parameter that is not UTF-8 once decoded cannot be extracted.
        if template.contains('{') && !public_receiver {
            let name = template
                .split('/')
                .rev()
                .find_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .unwrap_or_default();
            let mut bad = ids.clone();
            bad.insert(name, "%FF".into());
            p.expect(
                400,
                m.clone(),
                &fill(&template, &bad),
                Auth::Admin,
                Body::None,
            )
            .await;
        }
        // An integer query parameter that is not a number.
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] == "query" && param["schema"]["type"] == "integer" {
                let name = param["name"].as_str().expect("name");
                p.expect(
                    400,
                    m.clone(),
                    &format!("{path}?{name}=many"),
                    Auth::Admin,
                    Body::None,
                )
                .await;
            }
        }
        let typed_body =
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"].is_string();
        if typed_body {
            let body = || Body::Raw("application/json", b"{ not json".to_vec());
            p.expect(400, m.clone(), &path, Auth::Admin, body()).await;
            let plain = Body::Raw("text/plain", b"{}".to_vec());
            p.expect(415, m.clone(), &path, Auth::Admin, plain).await;
            let unknown = Body::Json(json!({"no_such_field": 1}));
            p.expect(422, m.clone(), &path, Auth::Admin, unknown).await;
            let mut big = b"{\"pad\": \"".to_vec();
            big.resize(graphagent::settings::DEFAULT_MAX_BODY_BYTES + 16, b'x');
            big.extend_from_slice(b"\"}");
            let big = Body::Raw("application/json", big);
            p.expect(413, m.clone(), &path, Auth::Admin, big).await;
        }
    }
}

#[tokio::test]
async fn every_route_answers_as_documented() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let p = Probe::new(&app).await;
    let action_id = App::action_id("sentdm");
    let agent_id = graphagent::plugin::agent_id("acme/notifier");
    let a = format!("/api/actions/{action_id}");
    use Method as M;
    let sentdm_tag = p.doc["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["name"] == "SentDM"))
        .cloned()
        .unwrap_or_default();
    assert!(
        sentdm_tag["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "the SentDM tag is described: {}",
        p.doc["tags"]
    );

    // Each error answer of a SentDM route shows examples of its own (the schema's one
    // example, a 422's, would otherwise stand for all), and no code under two statuses.
    for (method, template) in p.operations() {
        let op = &p.doc["paths"][&template][method.to_lowercase()];
        if !op["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("SentDM")))
        {
            continue;
        }
        let mut owner: HashMap<String, String> = HashMap::new();
        for (status, response) in op["responses"].as_object().expect("responses") {
            if status.as_str() < "400" {
                continue;
            }
            let codes = example_codes(&response["content"]["application/json"]);
            assert!(
                !codes.is_empty(),
                "{method} {template} → {status}: no example"
            );
            for code in codes {
                if let Some(other) = owner.insert(code.clone(), status.clone())
                    && other != *status
                {
                    panic!("{method} {template}: `{code}` is shown under {other} and {status}");
                }
            }
        }
    }

    // Host: health, agents, actions.
    p.expect(200, M::GET, "/healthz", Auth::None, Body::None)
        .await;
    p.expect(200, M::GET, "/readyz", Auth::None, Body::None)
        .await;
    p.expect(200, M::GET, "/api/agents", Auth::Admin, Body::None)
        .await;
    for suffix in ["", "/actions"] {
        let path = format!("/api/agents/{agent_id}{suffix}");
        p.expect(200, M::GET, &path, Auth::Admin, Body::None).await;
        let path = format!("/api/agents/agt_none{suffix}");
        p.expect(404, M::GET, &path, Auth::Admin, Body::None).await;
    }
    let reload = format!("/api/agents/{agent_id}/reload");
    p.expect(200, M::POST, &reload, Auth::Admin, Body::None)
        .await;
    p.expect(
        404,
        M::POST,
        "/api/agents/agt_none/reload",
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(200, M::GET, &a, Auth::Admin, Body::None).await;
    p.expect(
        404,
        M::GET,
        "/api/actions/act_none",
        Auth::Admin,
        Body::None,
    )
    .await;

    // Auth: log in, API keys.
    let login = |password: &str| Body::Json(json!({"email": ADMIN_EMAIL, "password": password}));
    p.expect(
        200,
        M::POST,
        "/api/auth/login",
        Auth::None,
        login(ADMIN_PASSWORD),
    )
    .await;
    p.expect(401, M::POST, "/api/auth/login", Auth::None, login("wrong"))
        .await;
    let keys = "/api/auth/api-keys";
    let machine = p
        .expect(
            201,
            M::POST,
            keys,
            Auth::Admin,
            Body::Json(json!({"name": "machine", "scopes": ["webhook:sentdm:other"]})),
        )
        .await;
    let admin_key = p
        .expect(
            201,
            M::POST,
            keys,
            Auth::Admin,
            Body::Json(json!({"name": "ops", "scopes": ["admin"]})),
        )
        .await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    p.expect(
        422,
        M::POST,
        keys,
        Auth::Admin,
        Body::Json(json!({"name": "none", "scopes": []})),
    )
    .await;
    p.expect(200, M::GET, keys, Auth::Key(&admin_key), Body::None)
        .await;
    let revoke = format!("{keys}/{}", machine["id"].as_str().expect("id"));
    p.expect(200, M::DELETE, &revoke, Auth::Admin, Body::None)
        .await;
    p.expect(
        404,
        M::DELETE,
        &format!("{keys}/key_0000000000000000"),
        Auth::Admin,
        Body::None,
    )
    .await;
    let non_admin_key = p
        .expect(
            201,
            M::POST,
            keys,
            Auth::Admin,
            Body::Json(json!({"name": "other", "scopes": ["report:read"]})),
        )
        .await["key"]
        .as_str()
        .expect("key")
        .to_owned();

    // SentDM: a broadcast and what it left.
    let s = format!("{a}/sentdm");
    let sent = p
        .expect(
            202,
            M::POST,
            &format!("{s}/broadcast"),
            Auth::Admin,
            Body::Json(json!({"to": ["+14155551234"], "channels": ["sms"], "idempotency_key": "openapi-1",
                              "template": {"name": "order_confirmation", "parameters": {"name": "Jane", "order_id": "1"}}})),
        )
        .await;
    for bad in [
        json!({"to": ["4155551234"]}),
        json!({"to": ["+14155551234"], "channels": ["pigeon"]}),
        json!({"to": ["+14155551234"], "idempotency_key": "spaces are not allowed"}),
    ] {
        p.expect(
            422,
            M::POST,
            &format!("{s}/broadcast"),
            Auth::Admin,
            Body::Json(bad),
        )
        .await;
    }
    // Found by the API fuzz: a profile this key may not use is the caller's error (it
    // was a 502 blaming the deployment), and a template naming neither id nor name
    // takes the default one (it was refused as "no default template is configured").
    let profile = json!({"to": ["+14155551234"], "profile_id": "0"});
    let refused = p
        .expect(
            422,
            M::POST,
            &format!("{s}/broadcast"),
            Auth::Admin,
            Body::Json(profile),
        )
        .await;
    assert_eq!(refused["error"]["field"], "profile_id", "{refused}");
    let defaulted = json!({"to": ["+14155551234"], "template": {"parameters": {"name": "Jane", "order_id": "2"}}});
    p.expect(
        202,
        M::POST,
        &format!("{s}/broadcast"),
        Auth::Admin,
        Body::Json(defaulted),
    )
    .await;
    let broadcast_id = sent["broadcast_id"]
        .as_str()
        .expect("broadcast id")
        .to_owned();
    let message_id = sent["messages"][0]["message_id"]
        .as_str()
        .expect("mid")
        .to_owned();
    let record_id = sent["messages"][0]["record_id"]
        .as_str()
        .expect("rid")
        .to_owned();
    p.expect(
        200,
        M::GET,
        &format!("{s}/broadcast/{broadcast_id}"),
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        404,
        M::GET,
        &format!("{s}/broadcast/bc_none"),
        Auth::Admin,
        Body::None,
    )
    .await;
    for suffix in ["", "/activities"] {
        let path = format!("{s}/messages/{message_id}{suffix}");
        p.expect(200, M::GET, &path, Auth::Admin, Body::None).await;
        let path = format!("{s}/messages/00000000-0000-0000-0000-000000000000{suffix}");
        p.expect(404, M::GET, &path, Auth::Admin, Body::None).await;
    }
    // SentDM failing (every retry) is a documented 502.
    sim.push_api_fault(
        sentdm_sim::ApiFault::status(500)
            .on("GET", "/v3/messages")
            .times(3),
    );
    let (status, _) = p
        .call(
            M::GET,
            &format!("{s}/messages/{message_id}"),
            Auth::Admin,
            Body::None,
        )
        .await;
    assert_eq!(status, 502);
    // SentDM's rate limit outlasting the retries is a documented 429.
    sim.push_api_fault(
        sentdm_sim::ApiFault::rate_limited(0)
            .on("GET", "/v3/messages")
            .times(3),
    );
    let (status, _) = p
        .call(
            M::GET,
            &format!("{s}/messages/{message_id}"),
            Auth::Admin,
            Body::None,
        )
        .await;
    assert_eq!(status, 429);
    p.expect(
        200,
        M::GET,
        &format!("{s}/templates?page=1&page_size=5"),
        Auth::Admin,
        Body::None,
    )
    .await;
    let (status, _) = p
        .call(
            M::GET,
            &format!("{s}/templates?page_size=500"),
            Auth::Admin,
            Body::None,
        )
        .await;
    assert!((400..500).contains(&status), "page_size 500: {status}");
    p.expect(200, M::GET, &format!("{s}/status"), Auth::Admin, Body::None)
        .await;
    p.expect(
        200,
        M::GET,
        &format!("{s}/webhook"),
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        200,
        M::POST,
        &format!("{s}/webhook/register"),
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        200,
        M::GET,
        &format!("{s}/broadcasts?status=accepted&page=1"),
        Auth::Admin,
        Body::None,
    )
    .await;
    // The last page of the documented range (its offset overflowed u32).
    let last = format!("{s}/broadcasts?page=4294967295&page_size=100");
    let page = p.expect(200, M::GET, &last, Auth::Admin, Body::None).await;
    assert_eq!(page["items"], json!([]));
    let (status, _) = p
        .call(
            M::GET,
            &format!("{s}/broadcasts?status=lost"),
            Auth::Admin,
            Body::None,
        )
        .await;
    assert!((400..500).contains(&status), "unknown status: {status}");
    p.expect(
        200,
        M::GET,
        &format!("{s}/broadcasts/{record_id}"),
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        404,
        M::GET,
        &format!("{s}/broadcasts/none"),
        Auth::Admin,
        Body::None,
    )
    .await;
    let reply = json!({"field": "message", "sub_type": "message.received", "timestamp": "2025-10-31T10:10:42Z",
        "payload": {"message_id": "in-1", "inbound_number": "+14155551234", "outbound_number": "+14155550999",
                    "channel": "sms", "text": "YES", "in_reply_to": message_id}});
    let (status, ack) = p.app.deliver("sentdm", &reply.to_string(), |_| {}).await;
    assert_eq!(status, 200, "{ack}");
    let replies = p
        .expect(
            200,
            M::GET,
            &format!("{s}/replies?from=%2B14155551234&page=1"),
            Auth::Admin,
            Body::None,
        )
        .await;
    let reply_id = replies["items"][0]["id"]
        .as_str()
        .expect("reply id")
        .to_owned();
    p.expect(
        200,
        M::GET,
        &format!("{s}/replies/{reply_id}"),
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        404,
        M::GET,
        &format!("{s}/replies/none"),
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        400,
        M::GET,
        &format!("{s}/replies?from=555"),
        Auth::Admin,
        Body::None,
    )
    .await;
    let refresh = format!("{s}/broadcasts/{record_id}/refresh");
    p.expect(200, M::POST, &refresh, Auth::Admin, Body::None)
        .await;
    p.expect(
        404,
        M::POST,
        &format!("{s}/broadcasts/none/refresh"),
        Auth::Admin,
        Body::None,
    )
    .await;
    // The graph down is a documented 503.
    app.graph.set_outage(true);
    let (status, _) = p
        .call(M::GET, &format!("{s}/broadcasts"), Auth::Admin, Body::None)
        .await;
    let (ready, _) = p.call(M::GET, "/readyz", Auth::None, Body::None).await;
    app.graph.set_outage(false);
    assert_eq!((status, ready), (503, 503));

    // The provider webhook: signed deliveries in, forged ones out.
    let receiver = format!("/api/sentdm/webhook/{action_id}");
    let event =
        json!({"field": "message", "sub_type": "message.sent", "timestamp": "2026-01-01T00:00:01Z",
        "payload": {"message_id": message_id, "message_status": "SENT", "channel": "sms",
                    "outbound_number": "+14155551234", "updated_at": "2026-01-01T00:00:01Z"}})
        .to_string();
    let (status, body) = app.deliver("sentdm", &event, |_| {}).await;
    p.check(&M::POST, &receiver, status, None, &body);
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .deliver("sentdm", &event, |d| d.signature = "v1,AAAA".into())
        .await;
    p.check(&M::POST, &receiver, status, None, &body);
    assert_eq!(status, 401, "{body}");
    let key = app.derive_key(&format!("webhook:sentdm:{}", App::action_id("gone")));
    let unknown = format!(
        "/api/sentdm/webhook/{}?api_key={key}",
        App::action_id("gone")
    );
    p.expect(
        404,
        M::POST,
        &unknown,
        Auth::None,
        Body::Raw("application/json", b"{}".to_vec()),
    )
    .await;

    // Outbound webhooks.
    let hook = WebhookReceiver::new(200);
    let hook_url = format!("{}/hook", hook.start().await);
    let subs = "/api/webhooks/subscriptions";
    let sub = p
        .expect(
            201,
            M::POST,
            subs,
            Auth::Admin,
            Body::Json(json!({"url": hook_url, "event_types": ["sentdm.message.delivered"]})),
        )
        .await;
    for bad in [
        json!({"url": "ftp://example.com/"}),
        json!({"url": hook_url, "event_types": ["no.such"]}),
    ] {
        p.expect(422, M::POST, subs, Auth::Admin, Body::Json(bad))
            .await;
    }
    let sub_id = sub["id"].as_str().expect("id").to_owned();
    let one = format!("{subs}/{sub_id}");
    let none = format!("{subs}/sub_none");
    p.expect(
        200,
        M::GET,
        "/api/webhooks/event-types",
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(200, M::GET, subs, Auth::Admin, Body::None).await;
    p.expect(200, M::GET, &one, Auth::Admin, Body::None).await;
    p.expect(404, M::GET, &none, Auth::Admin, Body::None).await;
    let patch = || Body::Json(json!({"description": "ops"}));
    p.expect(200, M::PATCH, &one, Auth::Admin, patch()).await;
    p.expect(404, M::PATCH, &none, Auth::Admin, patch()).await;
    let long = Body::Json(json!({"description": "x".repeat(1001)}));
    p.expect(422, M::PATCH, &one, Auth::Admin, long).await;
    for action in ["rotate-secret", "test", "recover"] {
        p.expect(
            200,
            M::POST,
            &format!("{one}/{action}"),
            Auth::Admin,
            Body::None,
        )
        .await;
        p.expect(
            404,
            M::POST,
            &format!("{none}/{action}"),
            Auth::Admin,
            Body::None,
        )
        .await;
    }
    p.expect(
        400,
        M::POST,
        &format!("{one}/recover?since=yesterday"),
        Auth::Admin,
        Body::None,
    )
    .await;
    let deliveries = p
        .expect(
            200,
            M::GET,
            "/api/webhooks/deliveries?outcome=success&page=1",
            Auth::Admin,
            Body::None,
        )
        .await;
    let delivery_id = deliveries["items"][0]["id"]
        .as_str()
        .expect("the test delivery")
        .to_owned();
    for bad in ["page=0", "page_size=0", "outcome=maybe", "until=soon"] {
        let path = format!("/api/webhooks/deliveries?{bad}");
        p.expect(400, M::GET, &path, Auth::Admin, Body::None).await;
    }
    let d = format!("/api/webhooks/deliveries/{delivery_id}");
    p.expect(200, M::GET, &d, Auth::Admin, Body::None).await;
    p.expect(
        200,
        M::POST,
        &format!("{d}/redeliver"),
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        404,
        M::GET,
        "/api/webhooks/deliveries/none",
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        404,
        M::POST,
        "/api/webhooks/deliveries/none/redeliver",
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        200,
        M::GET,
        "/api/webhooks/stats?period_days=30",
        Auth::Admin,
        Body::None,
    )
    .await;
    p.expect(
        400,
        M::GET,
        "/api/webhooks/stats?period_days=0",
        Auth::Admin,
        Body::None,
    )
    .await;

    // What the host answers on every route that has its cause, then deletion.
    let ids: HashMap<&str, String> = HashMap::from([
        ("action_id", action_id.clone()),
        ("agent_id", agent_id.clone()),
        ("broadcast_id", broadcast_id),
        ("message_id", message_id),
        ("record_id", record_id),
        ("subscription_id", sub_id),
        ("delivery_id", delivery_id),
        ("key_id", "key_0000000000000000".into()),
    ]);
    systematic_errors(&p, &ids, &non_admin_key).await;
    p.expect(200, M::DELETE, &one, Auth::Admin, Body::None)
        .await;
    p.expect(404, M::DELETE, &one, Auth::Admin, Body::None)
        .await;

    // Last, since it locks this address out of logging in: the login limiter.
    let mut limited = false;
    for _ in 0..20 {
        let (status, _) = p
            .call(M::POST, "/api/auth/login", Auth::None, login("wrong"))
            .await;
        if status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the login limiter never answered");

    p.assert_covered();
    app.stop().await;
    sim.shutdown().await;
}

/// Operations whose examples are not sent, and why.
const NOT_REPLAYED: &[(&str, &str, &str)] = &[(
    "POST",
    "/api/sentdm/webhook/{action_id}",
    "called by SentDM, not by people: a delivery must carry SentDM's signature of its \
     own body and a machine key, which no example in a document can",
)];

/// A parameter's value as shown: its example (of the parameter or of its schema), else
/// the default Swagger UI pre-fills; `None` when the document shows none.
fn shown_value(param: &Value) -> Option<String> {
    [
        &param["example"],
        &param["schema"]["example"],
        &param["schema"]["default"],
    ]
    .into_iter()
    .find(|v| !v.is_null())
    .map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Check `instance` against `schema` (with the document's components).
fn assert_valid(doc: &Value, here: &str, schema: &Value, instance: &Value) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{here}: the documented schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at `{}`)", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{here}: the example violates its own schema:\n  {}\nexample: {instance:#}",
        errors.join("\n  ")
    );
}

/// Objects the path parameters of the document name, created before the examples are
/// sent: an example cannot know the ids a server gives out (`bc_…`, message UUIDs,
/// `sub_…`), so a path parameter without an example of its own is filled from here.
async fn example_state(p: &Probe<'_>, app: &App) -> HashMap<&'static str, String> {
    use Method as M;
    let action_id = App::action_id("sentdm");
    let s = format!("/api/actions/{action_id}/sentdm");
    // A broadcast: its id, its message's SentDM id and its record.
    let send = json!({"to": ["+14155550100"], "idempotency_key": "examples-state",
        "template": {"name": "order_confirmation", "parameters": {"name": "Ada", "order_id": "1"}}});
    let sent = p
        .expect(
            202,
            M::POST,
            &format!("{s}/broadcast"),
            Auth::Admin,
            Body::Json(send),
        )
        .await;
    let message_id = sent["messages"][0]["message_id"]
        .as_str()
        .expect("message id")
        .to_owned();
    // A reply to it, delivered as SentDM signs it.
    let reply = json!({"field": "message", "sub_type": "message.received", "timestamp": "2025-10-31T10:10:42Z",
        "payload": {"message_id": "in-examples", "inbound_number": "+14155550100",
                    "outbound_number": "+14155550999", "channel": "sms", "text": "YES",
                    "in_reply_to": message_id}});
    let (status, ack) = app.deliver("sentdm", &reply.to_string(), |_| {}).await;
    assert_eq!(status, 200, "{ack}");
    let replies = p
        .expect(
            200,
            M::GET,
            &format!("{s}/replies"),
            Auth::Admin,
            Body::None,
        )
        .await;
    // A subscription to a receiver on loopback, and the delivery of its test event.
    let hook = WebhookReceiver::new(200);
    let hook_url = format!("{}/hook", hook.start().await);
    let subs = "/api/webhooks/subscriptions";
    let sub = p
        .expect(
            201,
            M::POST,
            subs,
            Auth::Admin,
            Body::Json(json!({"url": hook_url, "event_types": ["webhook.test"]})),
        )
        .await;
    let sub_id = sub["id"].as_str().expect("subscription id").to_owned();
    let test = format!("{subs}/{sub_id}/test");
    p.expect(200, M::POST, &test, Auth::Admin, Body::None).await;
    let deliveries = p
        .expect(
            200,
            M::GET,
            &format!("/api/webhooks/deliveries?subscription_id={sub_id}"),
            Auth::Admin,
            Body::None,
        )
        .await;
    // An API key (its revocation is replayed last).
    let key = p
        .expect(
            201,
            M::POST,
            "/api/auth/api-keys",
            Auth::Admin,
            Body::Json(json!({"name": "to revoke", "scopes": ["admin"]})),
        )
        .await;
    let id = |v: &Value, what: &str| {
        v.as_str()
            .unwrap_or_else(|| panic!("no {what} in the answer"))
            .to_owned()
    };
    HashMap::from([
        ("action_id", action_id),
        ("agent_id", graphagent::plugin::agent_id("acme/notifier")),
        ("broadcast_id", id(&sent["broadcast_id"], "broadcast id")),
        ("message_id", message_id),
        (
            "record_id",
            id(&sent["messages"][0]["record_id"], "record id"),
        ),
        ("reply_id", id(&replies["items"][0]["id"], "reply id")),
        ("subscription_id", sub_id),
        (
            "delivery_id",
            id(&deliveries["items"][0]["id"], "delivery id"),
        ),
        ("key_id", id(&key["id"], "key id")),
    ])
}

/// Every example the document shows works as shown: each operation is sent with its
/// request body example(s), its parameters' examples (or the defaults Swagger UI
/// pre-fills) and the credentials it documents, against a host whose SentDM action talks
/// to the simulator; every answer must be a success. A JSON body without an example
/// fails the test: Swagger UI would make one up from the schema (`template: null`,
/// `"string"` for every id), which does not work.
#[tokio::test]
async fn every_documented_example_works_as_shown() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let p = Probe::new(&app).await;
    let state = example_state(&p, &app).await;

    let mut operations = p.operations();
    // Deletions last: they remove what the other examples use.
    operations.sort_by_key(|(method, _)| method == "DELETE");
    let mut sent = 0;
    for (method, template) in operations {
        if NOT_REPLAYED
            .iter()
            .any(|(m, t, _)| *m == method && *t == template)
        {
            continue;
        }
        let here = format!("{method} {template}");
        let op = p.doc["paths"][&template][method.to_lowercase()].clone();
        let params: Vec<Value> = op["parameters"].as_array().cloned().unwrap_or_default();
        let mut path = template.clone();
        for name in template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let documented = params
                .iter()
                .find(|p| p["in"] == "path" && p["name"] == name)
                .and_then(shown_value);
            let value = documented
                .or_else(|| state.get(name).cloned())
                .unwrap_or_else(|| {
                    panic!(
                        "{here}: path parameter `{name}` shows no example and this test \
                         creates no `{name}`: give it an example that exists on a fresh \
                         server, or create one in `example_state`"
                    )
                });
            path = path.replace(&format!("{{{name}}}"), &value);
        }
        let mut query = Vec::new();
        for param in params.iter().filter(|p| p["in"] == "query") {
            let name = param["name"].as_str().expect("parameter name");
            match shown_value(param) {
                Some(value) => query.push((name.to_owned(), value)),
                None => assert!(
                    param["required"] != true,
                    "{here}: required query parameter `{name}` shows no example"
                ),
            }
        }
        if !query.is_empty() {
            let url = reqwest::Url::parse_with_params("http://x/", &query).expect("query");
            path = format!("{path}?{}", url.query().unwrap_or_default());
        }
        let auth = if op["security"].is_array() {
            Auth::Admin
        } else {
            Auth::None
        };
        let bodies = if op["requestBody"].is_object() {
            let examples = request_examples(&op);
            assert!(
                !examples.is_empty(),
                "{here}: the request body shows no example; Swagger UI would make one up \
                 from the schema. Give it one that works (`request_body(..., example = ...)`)"
            );
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            for example in &examples {
                assert_valid(&p.doc, &here, schema, example);
            }
            examples.into_iter().map(Body::Json).collect()
        } else {
            vec![Body::None]
        };
        for body in bodies {
            let shown = match &body {
                Body::Json(v) => v.to_string(),
                _ => String::new(),
            };
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            let (status, answer) = p.call(m, &path, auth, body).await;
            assert!(
                (200..300).contains(&status),
                "{here}: the documented example fails: {method} {path} {shown} → {status} {answer}"
            );
            sent += 1;
        }
    }
    // Each exclusion still names an operation of the document (a stale entry would
    // outlive the route it was written for).
    for (method, template, why) in NOT_REPLAYED {
        assert!(
            p.operations()
                .iter()
                .any(|(m, t)| m == method && t == template),
            "NOT_REPLAYED names {method} {template} ({why}), which the document lacks"
        );
    }
    assert!(sent > 0, "no example was sent");

    // The subscription the create example made points at example.com: remove it so no
    // delivery is attempted there while the host stops.
    let subs = p
        .expect(
            200,
            Method::GET,
            "/api/webhooks/subscriptions",
            Auth::Admin,
            Body::None,
        )
        .await;
    for sub in subs.as_array().into_iter().flatten() {
        if sub["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://example.com/"))
        {
            let one = format!(
                "/api/webhooks/subscriptions/{}",
                sub["id"].as_str().expect("id")
            );
            p.expect(200, Method::DELETE, &one, Auth::Admin, Body::None)
                .await;
        }
    }
    app.stop().await;
    sim.shutdown().await;
}
