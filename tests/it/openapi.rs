//! The OpenAPI document covers every route with typed parameters, security and every
//! answer the host itself gives; schema names are unique across the host and action
//! types; the documentation UIs are served from the binary (no network). The SentDM
//! crate's `openapi` test checks live answers of every route against the document.

use std::collections::BTreeSet;

use async_trait::async_trait;
use graphagent::plugin::{ActionRef, ActionState, Json};
use graphagent::{Action, ActionContext, ActionError, HostBuilder, HostError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::util::{ConfigDir, TestHost, builder, settings};

async fn doc(s: &TestHost) -> Value {
    let res = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

#[tokio::test]
async fn document_is_complete_and_consistent() {
    let dir = ConfigDir::new(
        "agent: x\nactions:\n  - action: echo\n  - action: recorder\n    context: { tag: t }\n",
    );
    let s = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let doc = doc(&s).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        "/healthz",
        "/readyz",
        "/api/auth/login",
        "/api/auth/api-keys",
        "/api/auth/api-keys/{key_id}",
        "/api/agents",
        "/api/agents/{agent_id}",
        "/api/agents/{agent_id}/actions",
        "/api/agents/{agent_id}/reload",
        "/api/actions/{action_id}",
        "/api/actions/{action_id}/echo",
        "/api/actions/{action_id}/echo/ping",
        "/api/actions/{action_id}/recorder/tag",
        "/api/webhooks/event-types",
        "/api/webhooks/subscriptions",
        "/api/webhooks/subscriptions/{subscription_id}",
        "/api/webhooks/subscriptions/{subscription_id}/rotate-secret",
        "/api/webhooks/subscriptions/{subscription_id}/test",
        "/api/webhooks/subscriptions/{subscription_id}/recover",
        "/api/webhooks/deliveries",
        "/api/webhooks/deliveries/{delivery_id}",
        "/api/webhooks/deliveries/{delivery_id}/redeliver",
        "/api/webhooks/stats",
    ];
    let have: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(have, expected.into_iter().collect(), "paths");

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["name"], "x-api-key");

    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            let here = format!("{method} {path}");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{here}: responses"
            );
            // Every template parameter is declared as a typed path parameter.
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            {
                let declared = op["parameters"].as_array().into_iter().flatten().any(|p| {
                    p["name"] == name
                        && p["in"] == "path"
                        && p["required"] == true
                        && p["schema"].is_object()
                });
                assert!(declared, "{here}: path parameter {name}");
            }
            let public = ["/healthz", "/readyz", "/api/auth/login"].contains(&path.as_str());
            assert_eq!(op["security"].is_array(), !public, "{here}: security");
            if method == "post" && path.ends_with("/echo") {
                assert!(
                    op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                    "{here}: body"
                );
            }
            // The answers the host gives by itself are documented, as JSON errors.
            let mut expected = vec!["500"];
            if op["security"].is_array() {
                expected.extend(["401", "403", "503"]);
            }
            if path.starts_with("/api/actions/{action_id}/") {
                expected.push("404");
            }
            if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                expected.push("400");
            }
            if op["requestBody"]["content"]["application/json"]["schema"]["$ref"].is_string() {
                expected.extend(["400", "413", "415", "422", "503"]);
            }
            for status in expected {
                let response = &op["responses"][status];
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{here}: {status} is not documented as an ErrorBody"
                );
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{here}: {status} has no description"
                );
                // Its example (the host's own answer) shows this status's code, not the
                // schema's one example for every status.
                let example = &response["content"]["application/json"]["example"];
                let code = match status {
                    "400" => "bad_request",
                    "401" => "unauthorized",
                    "403" => "forbidden",
                    "404" => "not_found",
                    "413" => "payload_too_large",
                    "415" => "unsupported_media_type",
                    "422" => "validation_failed",
                    "503" => "unavailable",
                    _ => "internal",
                };
                assert!(
                    (example.is_null() && status != "500") || example["error"]["code"] == code,
                    "{here}: {status}'s example is {example}, not a `{code}` answer"
                );
            }
        }
    }
    assert_eq!(
        doc["paths"]["/api/auth/login"]["post"]["responses"]["429"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/ErrorBody",
        "the login limiter's answer"
    );
    // Subscriptions may only name catalogued event types: the document lists them.
    let (_, catalogue) = s.admin_get("/api/webhooks/event-types").await;
    let names: Vec<&Value> = catalogue
        .as_array()
        .expect("catalogue")
        .iter()
        .map(|t| &t["name"])
        .collect();
    assert!(!names.is_empty());
    for schema in ["CreateSubscription", "UpdateSubscription"] {
        let items = &doc["components"]["schemas"][schema]["properties"]["event_types"]["items"];
        let listed: Vec<&Value> = items["enum"].as_array().expect("enum").iter().collect();
        assert_eq!(listed, names, "{schema}.event_types");
    }
    // Every $ref resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").expect("schema ref");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(s)) => out.push(s.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn docs_uis_are_served_from_the_binary() {
    let s = TestHost::start(builder(), settings(None, "mem://")).await;
    let page = s.http.get(s.url("/docs/")).send().await.expect("get");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("text");
    assert!(html.contains("swagger-ui"), "{html}");
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/swagger-initializer.js",
    ] {
        let res = s.http.get(s.url(asset)).send().await.expect("get");
        assert_eq!(res.status(), 200, "{asset}");
        let body = res.text().await.expect("text");
        assert!(body.len() > 100, "{asset}");
        assert!(
            !body.contains("cdn.jsdelivr") && !body.contains("unpkg.com"),
            "{asset} points at a CDN"
        );
    }
    let init = s
        .http
        .get(s.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("get");
    assert!(init.text().await.expect("text").contains("/openapi.json"));
    // `/docs` without the slash reaches the UI too.
    let res = s.http.get(s.url("/docs")).send().await.expect("get");
    assert_eq!(res.status(), 200);

    let redoc = s.http.get(s.url("/redoc")).send().await.expect("get");
    assert_eq!(redoc.status(), 200);
    let html = redoc.text().await.expect("text");
    assert!(
        html.contains("spec-url=\"/openapi.json\"") && html.contains("/redoc/redoc.standalone.js")
    );
    let js = s
        .http
        .get(s.url("/redoc/redoc.standalone.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-type"], "application/javascript");
    assert!(js.text().await.expect("text").len() > 500_000);
}

/// Every absolute http(s) URL in `text` (up to a quote, space or bracket).
fn absolute_urls(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for scheme in ["http://", "https://"] {
        for (at, _) in text.match_indices(scheme) {
            let url: String = text[at..]
                .chars()
                .take_while(|c| !matches!(c, '"' | '\'' | ' ' | ')' | '>' | '<' | '`' | '\n'))
                .collect();
            out.push(url);
        }
    }
    out
}

#[tokio::test]
async fn docs_pages_reference_nothing_outside_the_server() {
    let s = TestHost::start(builder(), settings(None, "mem://")).await;
    for page in ["/docs/", "/docs/swagger-initializer.js", "/redoc"] {
        let res = s.http.get(s.url(page)).send().await.expect("get");
        assert_eq!(res.status(), 200, "{page}");
        let text = res.text().await.expect("text");
        let outside: Vec<String> = absolute_urls(&text)
            .into_iter()
            .filter(|u| !u.starts_with(&s.base))
            .collect();
        assert!(outside.is_empty(), "{page} references {outside:?}");
    }
    let init = s
        .http
        .get(s.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    // Without it Swagger UI posts the document to validator.swagger.io (its default).
    let compact: String = init.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(compact.contains(r#""validatorUrl":"none""#), "{init}");
    let redoc = s
        .http
        .get(s.url("/redoc/redoc.standalone.js"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        !redoc.contains("cdn.redoc.ly"),
        "Redoc loads its logo from a CDN"
    );
    assert!(
        !redoc.contains(r#"src:"http"#),
        "Redoc loads an image from outside"
    );
}

/// Validate `instance` against component `name` of the served document.
pub async fn assert_matches_schema(s: &TestHost, name: &str, instance: &Value) {
    let doc = doc(s).await;
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "$ref": format!("#/components/schemas/{name}"),
    });
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at `{}`", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{instance:#}");
}

#[tokio::test]
async fn an_action_without_a_status_of_its_own_matches_the_document() {
    let dir = ConfigDir::new("agent: x\nactions:\n  - action: recorder\n    context: { tag: t }\n");
    let s = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let id = graphagent::plugin::action_id("x", "recorder");
    let (status, detail) = s.admin_get(&format!("/api/actions/{id}")).await;
    assert_eq!(status, 200);
    assert!(detail["details"].is_null(), "{detail}");
    assert_matches_schema(&s, "ActionDetail", &detail).await;
}

/// An action whose answer type is named like the host's `Health`, with another shape.
struct Clash;

/// Not the host's `Health`.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
struct Health {
    beats: u32,
}

#[async_trait]
impl Action for Clash {
    const TYPE_NAME: &'static str = "clash";
    const ALIASES: &'static [&'static str] = &[];
    type Config = ClashConfig;

    fn create(_: ActionContext, _: ClashConfig) -> Result<Self, ActionError> {
        Ok(Self)
    }
    fn routes() -> OpenApiRouter<ActionState> {
        OpenApiRouter::new().routes(routes!(clash_health))
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct ClashConfig {}

/// Answers a `Health` that is not the host's.
#[utoipa::path(get, path = "/clash/health", tag = "Clash", responses((status = 200, body = Health)))]
async fn clash_health(_: ActionRef<Clash>) -> Json<Health> {
    Json(Health { beats: 1 })
}

#[tokio::test]
async fn two_types_with_one_schema_name_stop_the_host() {
    let built = builder()
        .action::<Clash>()
        .settings(settings(None, "mem://"))
        .build()
        .await;
    let Err(HostError::OpenApi(e)) = built else {
        panic!("the host started with two `Health` schemas");
    };
    let message = e.to_string();
    for part in ["`Health`", "the host", "action type `clash`", "#[schema(as"] {
        assert!(message.contains(part), "{message}");
    }
    // The same registry without the clash starts (shared types such as `ErrorBody` are
    // defined by several parts, identically).
    HostBuilder::new()
        .action::<graphagent_echo::Echo>()
        .settings(settings(None, "mem://"))
        .build()
        .await
        .expect("host builds");
}
