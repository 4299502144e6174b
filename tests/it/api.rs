//! Health, readiness, agents and actions endpoints, JSON errors for every failure, body
//! limits, and an example action reached through the host.

use serde_json::{Value, json};

use crate::util::{ConfigDir, TestHost, builder, settings};

const ONE: &str = "agent: acme/notifier\ncontext: { alias: Notifier }\nactions:\n  - action: echo\n    context: { greeting: hi }\n";

#[tokio::test]
async fn health_and_readiness() {
    let dir = ConfigDir::new(ONE);
    let s = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let res = s.http.get(s.url("/healthz")).send().await.expect("get");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.expect("json"),
        json!({"status": "ok"})
    );
    let res = s.http.get(s.url("/readyz")).send().await.expect("get");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.expect("json"),
        json!({"status": "ready", "graph": true, "actions": 1})
    );
    s.graph.set_outage(true);
    let res = s.http.get(s.url("/readyz")).send().await.expect("get");
    assert_eq!(res.status(), 503);
    assert_eq!(res.json::<Value>().await.expect("json")["graph"], false);
    // Liveness does not depend on the graph.
    assert_eq!(
        s.http
            .get(s.url("/healthz"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
}

#[tokio::test]
async fn agents_and_actions_are_listed() {
    let dir = ConfigDir::new(ONE);
    let s = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let agent_id = graphagent::plugin::agent_id("acme/notifier");
    let action_id = graphagent::plugin::action_id("acme/notifier", "echo");
    let (status, agents) = s.admin_get("/api/agents").await;
    assert_eq!(status, 200);
    assert_eq!(agents[0]["id"], agent_id.as_str());
    assert_eq!(agents[0]["alias"], "Notifier");
    assert_eq!(agents[0]["action_ids"], json!([action_id]));
    let (status, agent) = s.admin_get(&format!("/api/agents/{agent_id}")).await;
    assert_eq!(
        (status, agent["name"].clone()),
        (200, json!("acme/notifier"))
    );
    let (status, actions) = s
        .admin_get(&format!("/api/agents/{agent_id}/actions"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(actions[0]["type_name"], "echo");
    assert_eq!(
        actions[0]["config"],
        json!({"greeting": "hi", "max_message_chars": 1000})
    );
    let (status, action) = s.admin_get(&format!("/api/actions/{action_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(action["status"]["state"], "registered");
    assert_eq!(action["details"]["greeting"], "hi");
    let (status, err) = s.admin_get("/api/agents/agt_nope").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
    let (status, _) = s.admin_get("/api/actions/act_nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn action_routes_store_in_the_graph_and_need_admin() {
    let dir = ConfigDir::new(ONE);
    let s = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let id = graphagent::plugin::action_id("acme/notifier", "echo");
    let path = format!("/api/actions/{id}/echo");
    let anonymous = s
        .http
        .post(s.url(&path))
        .json(&json!({"message": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), 401);
    let (status, reply) = s.admin_post(&path, json!({"message": "hello"})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["reply"], "hi: hello");
    assert_eq!(reply["stored"], 1);
    let linked = s
        .graph
        .query(
            "SELECT VALUE ->echoed->echo_message.message FROM type::record('action', $id);",
            json!({"id": id}),
        )
        .await
        .expect("query");
    assert_eq!(linked[0], json!([["hello"]]));
    // An unknown action id or one of another type is 404, not a panic.
    let (status, _) = s
        .admin_post("/api/actions/act_nope/echo", json!({"message": "x"}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn every_error_is_json_and_changes_nothing() {
    let dir = ConfigDir::new(ONE);
    let mut cfg = settings(Some(dir.path()), "mem://");
    cfg.max_body_bytes = 1024;
    let s = TestHost::start(builder(), cfg).await;
    let id = graphagent::plugin::action_id("acme/notifier", "echo");
    let path = format!("/api/actions/{id}/echo");
    let token = s.token().await;
    let post = |body: String| {
        s.http
            .post(s.url(&path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        (post("{".into()).await, 400, "bad_request"),
        (
            post(json!({"message": 5}).to_string()).await,
            422,
            "validation_failed",
        ),
        (
            post(json!({"message": "x", "extra": 1}).to_string()).await,
            422,
            "validation_failed",
        ),
        (
            post(json!({"message": "x".repeat(2000)}).to_string()).await,
            413,
            "payload_too_large",
        ),
        (s.http.get(s.url("/nope")).send().await, 404, "not_found"),
        (
            s.http.delete(s.url("/healthz")).send().await,
            405,
            "method_not_allowed",
        ),
        (
            s.http
                .post(s.url(&path))
                .bearer_auth(&token)
                .body("message=x")
                .send()
                .await,
            415,
            "unsupported_media_type",
        ),
    ];
    for (res, status, code) in cases {
        let res = res.expect("request");
        assert_eq!(res.status().as_u16(), status);
        let body: Value = res.json().await.expect("JSON error body");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let res = post(json!({"message": 5}).to_string()).await.expect("post");
    let body: Value = res.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("message"),
        "{body}"
    );
    let count = s
        .graph
        .query("RETURN count(SELECT id FROM echo_message);", Value::Null)
        .await
        .expect("q");
    assert_eq!(count[0], json!(0));
}

#[tokio::test]
async fn agent_code_gets_typed_access() {
    let dir = ConfigDir::new(ONE);
    let host = crate::util::builder()
        .settings(settings(Some(dir.path()), "mem://"))
        .build()
        .await
        .expect("host");
    let agent = host.agent("acme/notifier").expect("agent by name");
    let echo = agent
        .action::<graphagent_echo::Echo>()
        .expect("typed action");
    assert_eq!(echo.config().greeting, "hi");
    let reply = echo.echo("from rust").await.expect("echo");
    assert_eq!(reply.reply, "hi: from rust");
    let by_id = host
        .agent(&graphagent::plugin::agent_id("acme/notifier"))
        .expect("agent by id");
    assert!(
        by_id
            .action_named::<graphagent_echo::Echo>("echo")
            .is_some()
    );
    assert!(by_id.action::<crate::util::Recorder>().is_none());
    let id = graphagent::plugin::action_id("acme/notifier", "echo");
    assert!(host.directory().get::<graphagent_echo::Echo>(&id).is_some());
    assert_eq!(host.directory().ids_of::<graphagent_echo::Echo>(), vec![id]);
}
