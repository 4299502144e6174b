//! The OpenAPI document covers every route with typed parameters and security, and the
//! documentation UIs are served from the binary (no network).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::util::{ConfigDir, TestServer, settings};

async fn doc(s: &TestServer) -> Value {
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
    let s = TestServer::start(settings(Some(dir.path()), "mem://")).await;
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
        }
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
    let s = TestServer::start(settings(None, "mem://")).await;
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
