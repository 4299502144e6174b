//! Start, reload (added / changed / removed), hook failures, stable ids, in-flight
//! requests across a reload, graceful shutdown.
//!
//! The start/reload and restart checks are functions taking the graph to run on, so
//! `remote.rs` runs the same ones against a SurrealDB server.

use std::time::Duration;

use graphagent::GraphOptions;
use serde_json::{Value, json};

use crate::util::{
    ConfigDir, TestHost, builder, clear_hooks, hooks, settings, settings_with_graph,
};

const THREE: &str = "\
agent: acme/notifier
context: { alias: Notifier }
actions:
  - action: recorder
    name: a
    context: { tag: a1 }
  - action: recorder
    name: b
    context: { tag: b1 }
  - action: echo
";

#[tokio::test]
async fn hooks_run_in_order_on_start_and_reload() {
    start_and_reload(|_| "mem://".to_owned(), &GraphOptions::default()).await;
}

/// Start with [`THREE`], then reload a file where one action changed, one was removed and
/// one added: hooks run in order, and the reload report and the graph's agent and action
/// nodes and their edges say the same. `graph_url` gets the test's config dir.
pub async fn start_and_reload(graph_url: impl Fn(&ConfigDir) -> String, graph: &GraphOptions) {
    clear_hooks();
    let dir = ConfigDir::new(THREE);
    let server = TestHost::start(
        builder(),
        settings_with_graph(Some(dir.path()), &graph_url(&dir), graph),
    )
    .await;
    assert_eq!(hooks(), ["on_register a a1", "on_register b b1"]);

    // a changes, b is removed, c is added; echo is untouched.
    clear_hooks();
    dir.write(
        "agent: acme/notifier\nactions:\n  - action: recorder\n    name: a\n    context: { tag: a2 }\n  - action: tests/recorder_action\n    name: c\n    context: { tag: c1 }\n  - action: echo\n",
    );
    let (status, report) = server
        .admin_post("/api/agents/acme%2Fnotifier/reload", json!({}))
        .await;
    assert_eq!(status, 200, "{report}");
    // Removals run first, so a renamed action never has two live instances.
    assert_eq!(
        hooks(),
        ["on_deregister b b1", "on_reload a a2", "on_register c c1"]
    );
    let id = |name: &str| graphagent::plugin::action_id("acme/notifier", name);
    assert_eq!(report["removed"], json!([id("b")]));
    assert_eq!(report["changed"], json!([id("a")]));
    assert_eq!(report["added"], json!([id("c")]));
    assert_eq!(report["unchanged"], json!([id("echo")]));

    // The graph shows the same: b deregistered, a's node carries its new config, every
    // action hangs off the one agent node.
    let rows = server
        .graph
        .query(
            "SELECT name, status.state AS state, config FROM action ORDER BY name;
             RETURN array::sort(SELECT VALUE out.name FROM has_action);
             SELECT VALUE name FROM agent;
             RETURN array::distinct(SELECT VALUE in.name FROM has_action);",
            Value::Null,
        )
        .await
        .expect("query");
    assert_eq!(
        rows[0],
        json!([
            {"name": "a", "state": "registered", "config": {"tag": "a2", "fail": null}},
            {"name": "b", "state": "deregistered", "config": {"tag": "b1", "fail": null}},
            {"name": "c", "state": "registered", "config": {"tag": "c1", "fail": null}},
            {"name": "echo", "state": "registered", "config": {"greeting": "pong", "max_message_chars": 1000}},
        ])
    );
    assert_eq!(rows[1], json!(["a", "b", "c", "echo"]));
    assert_eq!(rows[2], json!(["acme/notifier"]));
    assert_eq!(rows[3], json!(["acme/notifier"]));

    // Reloading an unchanged file runs no hook.
    clear_hooks();
    let (status, report) = server
        .admin_post("/api/agents/acme%2Fnotifier/reload", json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(hooks().is_empty(), "{:?}", hooks());
    assert_eq!(report["unchanged"].as_array().map(Vec::len), Some(3));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn failing_hooks_do_not_stop_the_server() {
    clear_hooks();
    let dir = ConfigDir::new(
        "agent: x\nactions:\n  - action: recorder\n    name: bad\n    context: { tag: t, fail: on_register }\n",
    );
    let server = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let id = graphagent::plugin::action_id("x", "bad");
    let (status, action) = server.admin_get(&format!("/api/actions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(action["status"]["state"], "failed");
    assert_eq!(action["status"]["last_hook"], "on_register");
    assert_eq!(
        action["status"]["last_error"],
        "on_register failed on purpose"
    );
    // It still serves.
    let (status, tag) = server
        .admin_get(&format!("/api/actions/{id}/recorder/tag"))
        .await;
    assert_eq!((status, tag), (200, json!("t")));

    // A failing on_reload: the reload is reported, the new config serves.
    dir.write("agent: x\nactions:\n  - action: recorder\n    name: bad\n    context: { tag: t2, fail: on_reload }\n");
    let (status, report) = server.admin_post("/api/agents/x/reload", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        report["hook_errors"],
        json!([format!("{id}: on_reload failed on purpose")])
    );
    let (_, tag) = server
        .admin_get(&format!("/api/actions/{id}/recorder/tag"))
        .await;
    assert_eq!(tag, json!("t2"));
}

#[tokio::test]
async fn invalid_reload_changes_nothing() {
    clear_hooks();
    let dir = ConfigDir::new(THREE);
    let server = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    clear_hooks();
    dir.write("agent: acme/notifier\nactions:\n  - action: recorder\n    name: a\n    context: { tag: 5, colour: red }\n");
    let (status, body) = server
        .admin_post("/api/agents/acme%2Fnotifier/reload", json!({}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("agent.yaml:5:"), "{message}");
    assert!(message.contains("actions[0].context.colour"), "{message}");
    assert!(hooks().is_empty());
    let (_, actions) = server
        .admin_get("/api/agents/acme%2Fnotifier/actions")
        .await;
    assert_eq!(actions.as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    clear_hooks();
    let dir = ConfigDir::new(
        "agent: x\nactions:\n  - action: recorder\n    name: a\n    context: { tag: one }\n",
    );
    let server = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let id = graphagent::plugin::action_id("x", "a");
    let (_, tag) = server
        .admin_get(&format!("/api/actions/{id}/recorder/tag"))
        .await;
    assert_eq!(tag, json!("one"));
    dir.write("agent: x\nactions:\n  - action: recorder\n    name: a\n    context: { tag: two }\n");
    let pid = std::process::id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut tag = Value::Null;
    for _ in 0..100 {
        tag = server
            .admin_get(&format!("/api/actions/{id}/recorder/tag"))
            .await
            .1;
        if tag == json!("two") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tag, json!("two"));
    assert!(
        hooks().contains(&"on_reload a two".to_owned()),
        "{:?}",
        hooks()
    );
}

#[tokio::test]
async fn in_flight_requests_keep_the_old_instance() {
    let dir = ConfigDir::new(
        "agent: x\nactions:\n  - action: recorder\n    name: a\n    context: { tag: old }\n",
    );
    let server = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let id = graphagent::plugin::action_id("x", "a");
    let token = server.token().await;
    let slow = server
        .http
        .get(server.url(&format!("/api/actions/{id}/recorder/tag?delay_ms=700")))
        .bearer_auth(&token)
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(150)).await;
    dir.write("agent: x\nactions:\n  - action: recorder\n    name: a\n    context: { tag: new }\n");
    let (status, _) = server.admin_post("/api/agents/x/reload", json!({})).await;
    assert_eq!(status, 200);
    let (_, fresh) = server
        .admin_get(&format!("/api/actions/{id}/recorder/tag"))
        .await;
    assert_eq!(fresh, json!("new"));
    let old: Value = slow
        .await
        .expect("join")
        .expect("slow request")
        .json()
        .await
        .expect("json");
    assert_eq!(old, json!("old"));
}

#[tokio::test]
async fn ids_are_stable_across_restarts_on_the_same_data_dir() {
    restart_keeps_ids(ConfigDir::graph_url, &GraphOptions::default()).await;
}

/// Start with [`THREE`], stop, start again on the same graph: the same agent and action
/// ids, and one node and one edge per action, not one per start. `graph_url` gets the
/// test's config dir.
pub async fn restart_keeps_ids(graph_url: impl Fn(&ConfigDir) -> String, graph: &GraphOptions) {
    let dir = ConfigDir::new(THREE);
    let url = graph_url(&dir);
    let first = TestHost::start(
        builder(),
        settings_with_graph(Some(dir.path()), &url, graph),
    )
    .await;
    let (_, agents) = first.admin_get("/api/agents").await;
    let (_, actions) = first.admin_get("/api/agents/acme%2Fnotifier/actions").await;
    first.stop().await.expect("stop");

    let second = TestHost::start(
        builder(),
        settings_with_graph(Some(dir.path()), &url, graph),
    )
    .await;
    let (_, agents_again) = second.admin_get("/api/agents").await;
    let (_, actions_again) = second
        .admin_get("/api/agents/acme%2Fnotifier/actions")
        .await;
    assert_eq!(agents[0]["id"], agents_again[0]["id"]);
    let ids = |v: &Value| -> Vec<Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|a| a["id"].clone())
            .collect()
    };
    assert_eq!(ids(&actions), ids(&actions_again));
    assert_eq!(ids(&actions).len(), 3);
    // One node per action and one edge each, not one per start.
    let counts = second
        .graph
        .query(
            "RETURN count(SELECT id FROM action); RETURN count(SELECT id FROM has_action); RETURN count(SELECT id FROM agent);",
            Value::Null,
        )
        .await
        .expect("counts");
    assert_eq!(counts, vec![json!(3), json!(3), json!(1)]);
}

#[tokio::test]
async fn config_errors_stop_start_up_with_file_line_and_key() {
    let dir = ConfigDir::new(
        "agent: x\nactions:\n  - action: nope\n  - action: echo\n    context:\n      greeting: hi\n      max_message_chars: lots\n",
    );
    let err = builder()
        .settings(settings(Some(dir.path()), "mem://"))
        .build()
        .await
        .err()
        .expect("invalid config");
    let text = err.to_string();
    assert!(
        text.contains("agent.yaml:3:5: actions[0].action: unknown action type `nope`"),
        "{text}"
    );
    assert!(
        text.contains("agent.yaml:7:7: actions[1].context.max_message_chars"),
        "{text}"
    );

    dir.write("agent: x\nactions:\n  - action: echo\n    context: { greeting: '' }\n");
    let text = builder()
        .settings(settings(Some(dir.path()), "mem://"))
        .build()
        .await
        .err()
        .expect("invalid")
        .to_string();
    assert!(
        text.contains("actions[0].context.greeting: must not be empty"),
        "{text}"
    );
}

#[tokio::test]
async fn env_references_are_expanded() {
    // Set variables are covered through the real binary (app/tests);
    // here the defaults apply because the variables are unset.
    let dir = ConfigDir::new(
        "agent: x\nactions:\n  - action: echo\n    context:\n      greeting: ${GA_TEST_UNSET_GREETING:-ahoy}\n      max_message_chars: ${GA_TEST_UNSET:-12}\n",
    );
    let server = TestHost::start(builder(), settings(Some(dir.path()), "mem://")).await;
    let id = graphagent::plugin::action_id("x", "echo");
    let (_, ping) = server
        .admin_get(&format!("/api/actions/{id}/echo/ping"))
        .await;
    assert_eq!(ping["greeting"], "ahoy");
    let (status, body) = server
        .admin_post(
            &format!("/api/actions/{id}/echo"),
            json!({"message": "x".repeat(13)}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "message");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let dir = ConfigDir::new(
        "agent: x\nactions:\n  - action: recorder\n    name: a\n    context: { tag: t }\n",
    );
    let mut server = TestHost::start(builder(), settings(Some(dir.path()), &dir.graph_url())).await;
    let id = graphagent::plugin::action_id("x", "a");
    let token = server.token().await;
    let slow = tokio::spawn(
        server
            .http
            .get(server.url(&format!("/api/actions/{id}/recorder/tag?delay_ms=600")))
            .bearer_auth(&token)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let base = server.base.clone();
    server.trigger_stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connections once shutdown began.
    let refused = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "new request was served during shutdown");
    let res = slow
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.expect("json"), json!("t"));
    server.join().await.expect("server stops cleanly");
    // The graph was closed: the same data dir opens again.
    let again = TestHost::start(builder(), settings(Some(dir.path()), &dir.graph_url())).await;
    let (status, _) = again.admin_get("/api/agents").await;
    assert_eq!(status, 200);
}
