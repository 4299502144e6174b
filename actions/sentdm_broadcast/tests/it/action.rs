//! The SentDM broadcast action end to end: real host, embedded graph, the simulator
//! over real HTTP sending real signed webhooks.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use sentdm_client::client::{ApiKey, Client, ClientConfig};
use sentdm_sim::{ApiFault, Faults, SimHandle};
use serde_json::{Value, json};

use crate::app::{App, AppOptions, eventually, tmp_graph};
use crate::util::{sim_builder, start_sim};

async fn sim_webhooks(sim: &SimHandle) -> Vec<sentdm_client::model::Webhook> {
    let client = Client::new(ClientConfig::new(
        sim.base_url(),
        ApiKey::new(sim.api_key()),
    ))
    .expect("client");
    client.list_all_webhooks().await.expect("list")
}

fn mutations(sim: &SimHandle, prefix: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path.starts_with(prefix))
        .count()
}

#[tokio::test]
async fn start_registers_one_webhook_and_a_restart_keeps_it() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::start(
        &sim,
        AppOptions {
            graph_url: Some(tmp_graph(dir.path())),
            ..AppOptions::default()
        },
    )
    .await;
    let hooks = sim_webhooks(&sim).await;
    assert_eq!(hooks.len(), 1);
    let id = hooks[0].id.clone();
    assert!(hooks[0].endpoint_url.contains(&format!(
        "/api/sentdm/webhook/{}?api_key=gsk_",
        App::action_id("sentdm")
    )));
    assert_eq!(hooks[0].event_types, ["message"]);
    let (_, status) = app.call(Method::GET, "/sentdm/status", None).await;
    assert_eq!(status["configured"], true);
    assert_eq!(status["reachable"], true);
    assert_eq!(status["webhook_registered"], true);
    assert_eq!(status["last_reconcile"]["outcome"], "created");
    // The machine key never appears in answers.
    assert!(
        status["webhook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("?api_key=***")),
        "{status}"
    );
    let port = app.port();
    app.stop().await;

    let before = mutations(&sim, "/v3/webhooks");
    let app = App::start(
        &sim,
        AppOptions {
            graph_url: Some(tmp_graph(dir.path())),
            port: Some(port),
            ..AppOptions::default()
        },
    )
    .await;
    let hooks = sim_webhooks(&sim).await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].id, id, "restart must keep the webhook");
    assert_eq!(
        mutations(&sim, "/v3/webhooks"),
        before,
        "no create/delete/rotate on restart"
    );
    let (_, report) = app
        .call(Method::POST, "/sentdm/webhook/register", None)
        .await;
    assert_eq!(report["outcome"], "kept");
    assert_eq!(report["changes"], 0);
    assert_eq!(mutations(&sim, "/v3/webhooks"), before);
}

#[tokio::test]
async fn two_actions_behind_one_url_keep_their_own_webhooks() {
    let sim = start_sim().await;
    // A webhook of another origin that must never be touched.
    let client = Client::new(ClientConfig::new(
        sim.base_url(),
        ApiKey::new(sim.api_key()),
    ))
    .expect("client");
    let foreign = client
        .create_webhook(
            &sentdm_client::model::WebhookRequest {
                display_name: "other system".into(),
                endpoint_url: format!(
                    "http://127.0.0.1:9/api/sentdm/webhook/{}",
                    App::action_id("a")
                ),
                event_types: vec!["message".into()],
                ..Default::default()
            },
            None,
        )
        .await
        .expect("foreign webhook");
    let app = App::start(
        &sim,
        AppOptions {
            names: &["a", "b"],
            ..AppOptions::default()
        },
    )
    .await;
    let hooks = sim_webhooks(&sim).await;
    assert_eq!(hooks.len(), 3, "{hooks:?}");
    assert!(hooks.iter().any(|h| h.id == foreign.id));
    for name in ["a", "b"] {
        let report = app.action(name).reconcile_webhook_endpoint().await;
        assert_eq!(
            (report.outcome.as_str(), report.changes),
            ("kept", 0),
            "{name}: {report:?}"
        );
    }
    assert_eq!(sim_webhooks(&sim).await.len(), 3);
}

#[tokio::test]
async fn a_webhook_whose_secret_was_lost_is_repaired() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (id, _) = app.webhook_state("sentdm").await.expect("state");
    app.graph
        .query("DELETE sentdm_webhook_state;", Value::Null)
        .await
        .expect("delete");
    let (_, report) = app
        .call(Method::POST, "/sentdm/webhook/register", None)
        .await;
    assert_eq!(report["outcome"], "rotated", "{report}");
    assert_eq!(report["webhook_id"], id.as_str());
    let (new_id, _) = app.webhook_state("sentdm").await.expect("state restored");
    assert_eq!(new_id, id);
    // Deliveries verify again: a broadcast's events land.
    let (status, _) = app.broadcast(json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": {"name": "Jo", "order_id": "1"}}})).await;
    assert_eq!(status, 202);
    sim.settle().await;
    let (_, page) = app.call(Method::GET, "/sentdm/broadcasts", None).await;
    assert_eq!(page["items"][0]["status"], "delivered", "{page}");
}

fn params() -> Value {
    json!({"name": "Jane", "order_id": "12345"})
}

#[tokio::test]
async fn a_broadcast_to_n_recipients_on_two_channels_ends_final_in_the_graph() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    // …0001 fails after SENT (DELIVERY_007), the others succeed.
    let to = ["+14155550100", "+14155550200", "+14155550001"];
    let (status, result) = app
        .broadcast(json!({"to": to, "channels": ["sms", "whatsapp"], "template": {"name": "order_confirmation", "parameters": params()}, "idempotency_key": "order-12345"}))
        .await;
    assert_eq!(status, 202, "{result}");
    assert_eq!(result["status"], "accepted");
    assert_eq!(result["messages"].as_array().map(Vec::len), Some(6));
    assert_eq!(result["persisted"]["ok"], true);
    assert_eq!(result["persisted"]["records"], 6);
    let broadcast_id = result["broadcast_id"].as_str().expect("id").to_owned();

    let linked = app
        .graph
        .query(
            "RETURN count(SELECT id FROM type::record('action', $a)->sentdm_tracks->sentdm_message);
             RETURN count(SELECT id FROM type::record('sentdm_broadcast', $b)->sentdm_includes->sentdm_message);
             RETURN count(SELECT id FROM type::record('action', $a)->sentdm_sent->sentdm_broadcast);",
            json!({"a": App::action_id("sentdm"), "b": broadcast_id}),
        )
        .await
        .expect("query");
    assert_eq!(linked, vec![json!(6), json!(6), json!(1)]);
    let (_, page) = app
        .call(Method::GET, "/sentdm/broadcasts?page_size=100", None)
        .await;
    for item in page["items"].as_array().expect("items") {
        // The simulator's `queued` webhook may already have landed.
        assert!(
            item["status"] == "accepted" || item["status"] == "queued",
            "{item}"
        );
        assert_eq!(item["events"][0]["source"], "send");
    }

    sim.settle().await;
    let (_, page) = app
        .call(Method::GET, "/sentdm/broadcasts?page_size=100", None)
        .await;
    assert_eq!(page["total"], 6);
    for item in page["items"].as_array().expect("items") {
        let to = item["to"].as_str().unwrap_or_default();
        let channel = item["channel"].as_str().unwrap_or_default();
        let expected = match (to.ends_with("0001"), channel) {
            (true, _) => "failed",
            (false, "whatsapp") => "read",
            (false, _) => "delivered",
        };
        assert_eq!(item["status"], expected, "{item}");
        if expected == "failed" {
            assert_eq!(item["error"]["code"], "DELIVERY_007");
        }
        // send + queued, sent + delivered (+ read) or failed
        let statuses: Vec<&str> = item["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["status"].as_str())
            .collect();
        let want: &[&str] = match expected {
            // The default webhook filter takes every status SentDM reports.
            "read" => &["accepted", "QUEUED", "ROUTED", "SENT", "DELIVERED", "READ"],
            "delivered" => &["accepted", "QUEUED", "ROUTED", "SENT", "DELIVERED"],
            _ => &["accepted", "QUEUED", "ROUTED", "SENT", "FAILED"],
        };
        assert_eq!(statuses, want, "{item}");
        assert_eq!(item["broadcast_id"], broadcast_id.as_str());
    }

    let (status, summary) = app
        .call(
            Method::GET,
            &format!("/sentdm/broadcast/{broadcast_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary["funnel"],
        json!({"read": 2, "delivered": 2, "failed": 2})
    );
    assert_eq!(summary["message_count"], 6);
    let (status, _) = app
        .call(Method::GET, "/sentdm/broadcast/bc_nope", None)
        .await;
    assert_eq!(status, 404);

    // The same idempotency key again: nothing is sent twice, same broadcast.
    let sent_before = sim.message_count();
    let (status, again) = app
        .broadcast(json!({"to": to, "channels": ["sms", "whatsapp"], "template": {"name": "order_confirmation", "parameters": params()}, "idempotency_key": "order-12345"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(again["broadcast_id"], broadcast_id.as_str());
    assert_eq!(again["requests"][0]["replayed"], true);
    assert_eq!(sim.message_count(), sent_before);
    assert_eq!(app.record_count().await, 6);
}

#[tokio::test]
async fn the_event_log_is_bounded() {
    let sim = start_sim().await;
    let app = App::start(
        &sim,
        AppOptions {
            extra: "      record_event_history_limit: 3\n",
            ..AppOptions::default()
        },
    )
    .await;
    let (_, result) = app.broadcast(json!({"to": ["+14155550100"], "channels": ["whatsapp"], "template": {"name": "order_confirmation", "parameters": params()}})).await;
    sim.settle().await;
    let record_id = result["messages"][0]["record_id"]
        .as_str()
        .expect("record id");
    let (_, record) = app
        .call(
            Method::GET,
            &format!("/sentdm/broadcasts/{record_id}"),
            None,
        )
        .await;
    assert_eq!(record["status"], "read");
    let statuses: Vec<&str> = record["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(statuses, ["SENT", "DELIVERED", "READ"]);
    assert_eq!(
        record["event_count"], 6,
        "accepted, queued, routed, sent, delivered, read"
    );
}

fn envelope(message_id: &str, status: &str, updated_at: &str) -> String {
    json!({"field": "message", "sub_type": format!("message.{}", status.to_lowercase()), "timestamp": updated_at,
           "payload": {"message_id": message_id, "message_status": status, "channel": "sms",
                       "outbound_number": "+14155550100", "updated_at": updated_at}})
    .to_string()
}

/// A simulator that accepts sends but delivers no webhooks of its own, for tests that
/// craft every delivery themselves.
async fn silent_sim() -> SimHandle {
    let all = [
        "queued",
        "routed",
        "sent",
        "delivered",
        "read",
        "failed",
        "blocked",
        "filtered",
        "scheduled",
        "cancelled",
    ];
    sim_builder()
        .faults(Faults {
            drop_sub_types: all.iter().map(|s| format!("message.{s}")).collect(),
            ..Faults::default()
        })
        .start()
        .await
        .expect("sim")
}

async fn one_record(app: &App, sim: &SimHandle) -> (String, String) {
    let (_, result) = app.broadcast(json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": params()}})).await;
    let _ = sim;
    (
        result["messages"][0]["message_id"]
            .as_str()
            .expect("mid")
            .to_owned(),
        result["messages"][0]["record_id"]
            .as_str()
            .expect("rid")
            .to_owned(),
    )
}

#[tokio::test]
async fn deliveries_that_fail_verification_are_401_and_write_nothing() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (mid, rid) = one_record(&app, &sim).await;
    let body = envelope(&mid, "DELIVERED", "2026-05-14T18:49:20Z");
    type Tweak = Box<dyn FnOnce(&mut crate::app::Delivery)>;
    let cases: Vec<(&str, Tweak, u16)> = vec![
        (
            "tampered body",
            Box::new(|d| d.body = d.body.replace("DELIVERED", "READ")),
            401,
        ),
        (
            "bad signature",
            Box::new(|d| d.signature = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
            401,
        ),
        (
            "hex of body",
            Box::new(|d| d.signature = "sha256=00ff".into()),
            401,
        ),
        ("stale timestamp", Box::new(|d| d.timestamp -= 301), 401),
        (
            "wrong webhook id",
            Box::new(|d| d.webhook_id = "00000000-0000-0000-0000-000000000000".into()),
            401,
        ),
        ("missing key", Box::new(|d| d.key = None), 401),
        (
            "invalid key",
            Box::new(|d| d.key = Some("gsk_bm9wZQ.AAAA".into())),
            401,
        ),
    ];
    for (what, tweak, want) in cases {
        let (status, body) = app.deliver("sentdm", &body, tweak).await;
        assert_eq!(status, want, "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}");
    }
    // A valid key for another action's scope: 403.
    let other_key = {
        let settings = graphagent::AuthSettings {
            jwt_secret: Some(graphagent::testing::JWT_SECRET.into()),
            ..Default::default()
        };
        let auth =
            graphagent::auth::Auth::new(graphagent::Graph::memory().await.expect("g"), &settings)
                .await
                .expect("auth");
        use graphagent::plugin::ScopedKeys;
        auth.derive("webhook:sentdm:act_someone_else").expect("key")
    };
    let (status, _) = app
        .deliver("sentdm", &body, |d| d.key = Some(other_key))
        .await;
    assert_eq!(status, 403);
    let (_, record) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{rid}"), None)
        .await;
    assert_eq!(record["status"], "accepted");
    assert_eq!(record["event_count"], 1, "nothing was written: {record}");
    let keys = app
        .graph
        .query(
            "SELECT VALUE event_keys FROM type::record('sentdm_message', $rid);",
            json!({ "rid": rid }),
        )
        .await
        .expect("q");
    assert_eq!(keys[0], json!([null]), "no de-duplication key was recorded");
    // And the genuine one is accepted.
    let (status, ack) = app.deliver("sentdm", &body, |_| {}).await;
    assert_eq!(
        (status, ack["status"].clone(), ack["record_status"].clone()),
        (200, json!("received"), json!("delivered"))
    );
}

#[tokio::test]
async fn the_receiver_checks_key_and_action_before_reading_the_body() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let id = App::action_id("sentdm");
    let key = app.scoped_key("sentdm");
    let unknown_key = app.key_for_action_id("act_nope");
    let head = |path: &str, length: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
        )
    };
    // A mebibyte declared (the host's own limit), none of it sent: the answer does not
    // wait for it.
    let mib = "Content-Length: 1048576";
    let cases = [
        ("no key", format!("/api/sentdm/webhook/{id}"), 401),
        (
            "wrong key",
            format!("/api/sentdm/webhook/{id}?api_key=gsk_bm9wZQ.AAAA"),
            401,
        ),
        (
            "unknown action",
            format!("/api/sentdm/webhook/act_nope?api_key={unknown_key}"),
            404,
        ),
        (
            "keyed, over the route's limit",
            format!("/api/sentdm/webhook/{id}?api_key={key}"),
            413,
        ),
    ];
    for (what, path, want) in cases {
        let (status, body) = app
            .exchange(head(&path, mib).as_bytes(), Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(status, want, "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
        let text = body.to_string();
        assert!(
            !text.contains(&key) && !text.contains(&unknown_key),
            "{what}: {text}"
        );
    }

    // Chunked, so the size shows only while reading: still cut at the route's limit.
    let mut chunked = head(
        &format!("/api/sentdm/webhook/{id}?api_key={key}"),
        "Transfer-Encoding: chunked",
    )
    .into_bytes();
    let size = 64 * 1024 + 1000;
    chunked.extend_from_slice(format!("{size:x}\r\n").as_bytes());
    chunked.extend(std::iter::repeat_n(b' ', size));
    chunked.extend_from_slice(b"\r\n");
    let (status, body) = app
        .exchange(&chunked, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    // A genuine delivery is still received.
    let (mid, _) = one_record(&app, &sim).await;
    let (status, ack) = app
        .deliver(
            "sentdm",
            &envelope(&mid, "SENT", "2026-05-14T18:49:16Z"),
            |_| {},
        )
        .await;
    assert_eq!((status, ack["status"].clone()), (200, json!("received")));
}

#[tokio::test]
async fn replays_and_concurrent_duplicates_apply_once() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (mid, rid) = one_record(&app, &sim).await;
    let body = envelope(&mid, "SENT", "2026-05-14T18:49:16Z");
    let (_, first) = app.deliver("sentdm", &body, |_| {}).await;
    assert_eq!(first["status"], "received");
    let (status, replay) = app.deliver("sentdm", &body, |_| {}).await;
    assert_eq!(
        (status, replay["status"].clone()),
        (200, json!("duplicate"))
    );

    let body = envelope(&mid, "DELIVERED", "2026-05-14T18:49:20Z");
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            let body = body.clone();
            tokio::spawn(async move { app.deliver("sentdm", &body, |_| {}).await })
        })
        .collect();
    let mut outcomes = BTreeMap::new();
    for t in tasks {
        let (status, ack) = t.await.expect("join");
        assert_eq!(status, 200);
        *outcomes
            .entry(ack["status"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([("duplicate".to_owned(), 19), ("received".to_owned(), 1)])
    );
    let (_, record) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{rid}"), None)
        .await;
    assert_eq!(record["status"], "delivered");
    assert_eq!(
        record["event_count"], 3,
        "send + sent + delivered: {record}"
    );
}

#[tokio::test]
async fn fifty_distinct_concurrent_events_for_one_record_all_land() {
    let sim = silent_sim().await;
    let app = std::sync::Arc::new(App::start(&sim, AppOptions::default()).await);
    let (mid, rid) = one_record(&app, &sim).await;
    let statuses = ["QUEUED", "ROUTED", "SENT", "DELIVERED", "READ"];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            // Distinct events: the occurrence time differs; statuses in every order.
            let body = envelope(
                &mid,
                statuses[i % 5],
                &format!("2026-05-14T18:{:02}:{:02}Z", 10 + i / 60, i % 60),
            );
            tokio::spawn(async move { app.deliver("sentdm", &body, |_| {}).await })
        })
        .collect();
    for t in tasks {
        let (status, ack) = t.await.expect("join");
        assert_eq!(
            (status, ack["status"].clone()),
            (200, json!("received")),
            "{ack}"
        );
    }
    let (_, record) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{rid}"), None)
        .await;
    assert_eq!(record["event_count"], 51);
    assert_eq!(record["events"].as_array().map(Vec::len), Some(51));
    assert_eq!(record["status"], "read");
}

#[tokio::test]
async fn reordered_and_duplicated_deliveries_never_regress() {
    let sim = sim_builder()
        .faults(Faults {
            reorder: true,
            duplicate: true,
            ..Faults::default()
        })
        .start()
        .await
        .expect("sim");
    let app = App::start(&sim, AppOptions::default()).await;
    let to: Vec<String> = (0..8).map(|i| format!("+1415555{:04}", 1000 + i)).collect();
    let (status, _) = app.broadcast(json!({"to": to, "channels": ["sms", "whatsapp"], "template": {"name": "order_confirmation", "parameters": params()}})).await;
    assert_eq!(status, 202);
    sim.settle().await;
    let (_, page) = app
        .call(Method::GET, "/sentdm/broadcasts?page_size=100", None)
        .await;
    assert_eq!(page["total"], 16);
    for item in page["items"].as_array().expect("items") {
        let want = if item["channel"] == "whatsapp" {
            "read"
        } else {
            "delivered"
        };
        assert_eq!(item["status"], want, "{item}");
        // Every distinct event once, however often it was delivered.
        let n = item["events"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(n, if want == "read" { 6 } else { 5 }, "{item}");
    }
}

#[tokio::test]
async fn graph_outage_is_503_and_the_retry_applies_once() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (mid, rid) = one_record(&app, &sim).await;
    let (_, sent) = app
        .deliver(
            "sentdm",
            &envelope(&mid, "SENT", "2026-05-14T18:49:16Z"),
            |_| {},
        )
        .await;
    assert_eq!(sent["status"], "received");
    let body = envelope(&mid, "DELIVERED", "2026-05-14T18:49:20Z");
    app.graph.set_outage(true);
    let (status, err) = app.deliver("sentdm", &body, |_| {}).await;
    assert_eq!(status, 503, "{err}");
    app.graph.set_outage(false);
    let (status, ack) = app.deliver("sentdm", &body, |_| {}).await;
    assert_eq!((status, ack["status"].clone()), (200, json!("received")));
    let (_, ack) = app.deliver("sentdm", &body, |_| {}).await;
    assert_eq!(ack["status"], "duplicate");
    let (_, record) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{rid}"), None)
        .await;
    assert_eq!(record["status"], "delivered");
    assert_eq!(
        record["event_count"], 3,
        "send, sent, delivered once: {record}"
    );
}

#[tokio::test]
async fn dropped_webhooks_are_recovered_by_refresh_and_the_sweeper() {
    let sim = sim_builder()
        .faults(Faults {
            drop_sub_types: vec!["message.delivered".into(), "message.read".into()],
            ..Faults::default()
        })
        .start()
        .await
        .expect("sim");
    let app = App::start(&sim, AppOptions::default()).await;
    let (_, result) = app.broadcast(json!({"to": ["+14155550100", "+14155550200"], "channels": ["whatsapp"], "template": {"name": "order_confirmation", "parameters": params()}})).await;
    sim.settle().await;
    let first = result["messages"][0]["record_id"].as_str().expect("rid");
    let (_, record) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{first}"), None)
        .await;
    assert_eq!(
        record["status"], "sent",
        "the delivered/read webhooks were dropped"
    );
    let (status, refreshed) = app
        .call(
            Method::POST,
            &format!("/sentdm/broadcasts/{first}/refresh"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["status"], "read");
    assert_eq!(
        refreshed["events"]
            .as_array()
            .and_then(|e| e.last())
            .map(|e| e["source"].clone()),
        Some(json!("refresh"))
    );
    // The other one through the sweeper.
    let swept = app
        .action("sentdm")
        .sweep_once(Duration::ZERO, 100)
        .await
        .expect("sweep");
    assert!(swept >= 1);
    let second = result["messages"][1]["record_id"].as_str().expect("rid");
    let (_, record) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{second}"), None)
        .await;
    assert_eq!(record["status"], "read");
}

#[tokio::test]
async fn sandbox_sends_are_kept_only_when_asked() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (status, result) = app.broadcast(json!({"to": ["+14155550100"], "sandbox": true, "template": {"name": "order_confirmation", "parameters": params()}})).await;
    assert_eq!(status, 202, "{result}");
    assert_eq!(result["sandbox"], true);
    assert_eq!(result["persisted"]["ok"], false);
    assert!(
        result["persisted"]["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("sandbox"))
    );
    assert_eq!(app.record_count().await, 0);
    app.stop().await;

    let app = App::start(
        &sim,
        AppOptions {
            extra: "      persist_sandbox_sends: true\n",
            ..AppOptions::default()
        },
    )
    .await;
    let (_, result) = app.broadcast(json!({"to": ["+14155550100"], "sandbox": true, "template": {"name": "order_confirmation", "parameters": params()}})).await;
    assert_eq!(result["persisted"]["ok"], true);
    assert_eq!(app.record_count().await, 1);
}

#[tokio::test]
async fn sentdm_faults_on_send_are_retried_without_a_duplicate() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    // The first attempt is processed but its answer is lost (503); then a 429.
    sim.push_api_fault(
        ApiFault::status(503)
            .on("POST", "/v3/messages")
            .times(1)
            .after_processing(),
    );
    sim.push_api_fault(
        ApiFault::rate_limited(1)
            .on("POST", "/v3/messages")
            .times(1),
    );
    let (status, result) = app.broadcast(json!({"to": ["+14155550100", "+14155550200"], "template": {"name": "order_confirmation", "parameters": params()}})).await;
    assert_eq!(status, 202, "{result}");
    assert_eq!(sim.message_count(), 2, "retries reused the idempotency key");
    assert_eq!(result["messages"].as_array().map(Vec::len), Some(2));
    let keys: Vec<_> = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v3/messages")
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert!(
        keys.len() >= 2 && keys.windows(2).all(|w| w[0] == w[1]),
        "{keys:?}"
    );
}

#[tokio::test]
async fn bad_sends_are_clear_errors_and_send_nothing() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let cases = [
        (json!({"to": []}), "to"),
        (json!({"to": ["4155550100"]}), "to[0]"),
        (
            json!({"to": ["+14155550100"], "channels": ["fax"]}),
            "channels[0]",
        ),
        (
            json!({"to": ["+14155550100"], "idempotency_key": "no spaces"}),
            "idempotency_key",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = app.broadcast(body).await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    let (status, err) = app
        .broadcast(json!({"to": ["+14155550100"], "unknown": 1}))
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(mutations(&sim, "/v3/messages"), 0, "nothing reached SentDM");
    // SentDM's own rejection (unknown template) comes back with its code.
    let (status, err) = app.broadcast(json!({"to": ["+14155550100"], "template": {"id": "00000000-0000-4000-8000-000000000000"}})).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["code"], "sentdm_not_found");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("RESOURCE_002")),
        "{err}"
    );
    assert_eq!(app.record_count().await, 0);
}

#[tokio::test]
async fn admin_endpoints_need_credentials() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let base = format!("{}/api/actions/{}", app.base, App::action_id("sentdm"));
    for (method, path) in [
        (Method::POST, "/sentdm/broadcast"),
        (Method::GET, "/sentdm/status"),
        (Method::GET, "/sentdm/broadcasts"),
        (Method::GET, "/sentdm/templates"),
        (Method::POST, "/sentdm/webhook/register"),
        (Method::GET, "/sentdm/webhook"),
    ] {
        let res = app
            .http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), 401, "{method} {path}");
    }
    let (status, templates) = app
        .call(Method::GET, "/sentdm/templates?page_size=10", None)
        .await;
    assert_eq!(status, 200, "{templates}");
    assert!(
        templates["items"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "order_confirmation"))
    );
    let (status, _) = app
        .call(Method::GET, "/sentdm/templates?page_size=1000", None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn replies_are_stored_apart_and_streamed_to_agent_code() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (mid, _) = one_record(&app, &sim).await;
    let mut replies = app.action("sentdm").subscribe_replies();
    let body = json!({"field": "message", "sub_type": "message.received", "timestamp": "2025-10-31T10:10:42Z",
        "payload": {"message_id": "in-1", "inbound_number": "+14155550100", "outbound_number": "+14155550999", "channel": "sms", "text": "STOP"}}).to_string();
    let (status, ack) = app.deliver("sentdm", &body, |_| {}).await;
    assert_eq!(
        (status, ack["status"].clone()),
        (200, json!("received")),
        "{ack}"
    );
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.recv())
        .await
        .expect("in time")
        .expect("reply");
    assert_eq!(reply.text.as_deref(), Some("STOP"));
    let (_, dup) = app.deliver("sentdm", &body, |_| {}).await;
    assert_eq!(dup["status"], "duplicate");
    let rows = app
        .graph
        .query(
            "SELECT text, ->sentdm_replies_to->sentdm_message.sentdm_message_id AS answers FROM sentdm_inbound;
             RETURN count(SELECT id FROM sentdm_message);",
            Value::Null,
        )
        .await
        .expect("q");
    assert_eq!(rows[0][0]["text"], "STOP");
    assert_eq!(rows[0][0]["answers"], json!([mid]));
    assert_eq!(rows[1], json!(1), "a reply is not a broadcast record");
}

#[tokio::test]
async fn unknown_messages_get_a_minimal_record_unless_a_sibling_owns_them() {
    let sim = silent_sim().await;
    let app = App::start(
        &sim,
        AppOptions {
            names: &["sentdm", "other"],
            ..AppOptions::default()
        },
    )
    .await;
    let (_, ack) = app
        .deliver(
            "sentdm",
            &envelope("m-unknown", "SENT", "2026-05-14T18:49:16Z"),
            |_| {},
        )
        .await;
    assert_eq!(ack["status"], "received");
    let (_, record) = app
        .call(
            Method::GET,
            &format!(
                "/sentdm/broadcasts/{}",
                ack["record_id"].as_str().unwrap_or_default()
            ),
            None,
        )
        .await;
    assert_eq!(record["minimal"], true);
    assert_eq!(record["status"], "sent");
    // A message sent by the sibling action, delivered to this action's webhook too.
    let (_, sibling) = app
        .raw(Method::POST, &format!("{}/api/actions/{}/sentdm/broadcast", app.base, App::action_id("other")),
             Some(json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": params()}})))
        .await;
    let mid = sibling["messages"][0]["message_id"].as_str().expect("mid");
    let (status, ack) = app
        .deliver(
            "sentdm",
            &envelope(mid, "SENT", "2026-05-14T18:49:16Z"),
            |_| {},
        )
        .await;
    assert_eq!(
        (status, ack["status"].clone()),
        (200, json!("ignored")),
        "{ack}"
    );
    eventually(
        "no record for the sibling's message under this action",
        || async { app.record_count().await == 2 },
    )
    .await;
}

#[tokio::test]
async fn verified_but_unusable_bodies_are_200_and_counted() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    for body in [
        "not json",
        "[1,2]",
        r#"{"field":"message","payload":{}}"#,
        r#"{"field":"templates","payload":{"template_id":"t","status":"APPROVED"}}"#,
    ] {
        let (status, ack) = app.deliver("sentdm", body, |_| {}).await;
        assert_eq!(
            (status, ack["status"].clone()),
            (200, json!("ignored")),
            "{body}"
        );
    }
    let (_, health) = app.call(Method::GET, "/sentdm/status", None).await;
    assert_eq!(health["counters"]["ignored"], 4);
    assert_eq!(app.record_count().await, 0);
}

#[tokio::test]
async fn without_an_api_key_the_action_loads_and_says_so() {
    // Built by hand: no api_key and no SENTDM_API_KEY in this test's environment.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        "agent: a\nactions:\n  - action: jvagent/sentdm_broadcast_action\n    name: s\n",
    )
    .expect("write");
    let host = graphagent::HostBuilder::new()
        .action::<graphagent_sentdm::SentDmBroadcast>()
        .settings(graphagent::Settings {
            config_path: Some(config),
            graph_url: "mem://".into(),
            ..Default::default()
        })
        .build()
        .await
        .expect("loads");
    let action = host
        .agent("a")
        .and_then(|a| a.action::<graphagent_sentdm::SentDmBroadcast>())
        .expect("action");
    if std::env::var("SENTDM_API_KEY").is_err() {
        let health = action.healthcheck().await;
        assert!(!health.configured);
        assert_eq!(
            health.last_reconcile.map(|r| r.outcome),
            Some("skipped".into())
        );
        let err = action
            .send_broadcast(Default::default())
            .await
            .expect_err("not configured");
        assert!(err.to_string().contains("SENTDM_API_KEY"));
    }
}

/// What an outbound receiver got: (headers, body) per request.
type ReceivedLog = std::sync::Mutex<Vec<(BTreeMap<String, String>, String)>>;
type Received = std::sync::Arc<ReceivedLog>;

/// A receiver of the host's outbound webhooks: every (headers, body) it got.
async fn outbound_receiver() -> (String, Received) {
    use axum::http::HeaderMap;
    let got: Received = Default::default();
    let sink = got.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let h = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            v.to_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                sink.lock().expect("lock").push((h, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, got)
}

/// Standard Webhooks verification written out here, independent of the sender's code.
fn standard_webhooks_valid(secret: &str, headers: &BTreeMap<String, String>, body: &str) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret is base64");
    let signed = format!(
        "{}.{}.{}",
        headers["webhook-id"], headers["webhook-timestamp"], body
    );
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("key");
    mac.update(signed.as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    headers["webhook-signature"]
        .split(' ')
        .any(|s| s == expected)
}

#[tokio::test]
async fn status_changes_are_republished_once_per_subscription_and_signed() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (url_a, got_a) = outbound_receiver().await;
    let (url_b, got_b) = outbound_receiver().await;
    let mut secrets = Vec::new();
    for (url, types) in [
        (
            &url_a,
            json!([
                "sentdm.broadcast.accepted",
                "sentdm.message.queued",
                "sentdm.message.sent",
                "sentdm.message.delivered",
                "sentdm.message.read"
            ]),
        ),
        (
            &url_b,
            json!(["sentdm.message.read", "sentdm.message.failed"]),
        ),
    ] {
        let (status, sub) = app
            .raw(
                Method::POST,
                &format!("{}/api/webhooks/subscriptions", app.base),
                Some(json!({"url": url, "event_types": types})),
            )
            .await;
        assert_eq!(status, 201, "{sub}");
        secrets.push(
            sub["secret"]
                .as_str()
                .expect("secret shown once")
                .to_owned(),
        );
    }
    let (_, result) = app
        .broadcast(json!({"to": ["+14155550100", "+14155550001"], "channels": ["whatsapp"], "template": {"name": "order_confirmation", "parameters": params()}}))
        .await;
    sim.settle().await;
    // A: accepted + (queued, sent, delivered, read) for the good one + (queued, sent) for
    // the failing one = 7. B: read + failed = 2.
    for _ in 0..200 {
        if got_a.lock().expect("lock").len() >= 7 && got_b.lock().expect("lock").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let outbox = app
        .graph
        .query("SELECT type, fanned_out FROM outbox_event;", Value::Null)
        .await
        .expect("outbox");
    let types = |g: &ReceivedLog| -> Vec<String> {
        g.lock()
            .expect("lock")
            .iter()
            .map(|(_, b)| {
                serde_json::from_str::<Value>(b)
                    .map(|v| v["type"].to_string())
                    .unwrap_or_default()
            })
            .collect()
    };
    assert!(
        got_a.lock().expect("lock").len() >= 7 && got_b.lock().expect("lock").len() >= 2,
        "a: {:?}\nb: {:?}\noutbox: {}",
        types(&got_a),
        types(&got_b),
        outbox[0]
    );
    // A redelivered SentDM event changes nothing, so it is not re-published.
    let mid = result["messages"][0]["message_id"].as_str().expect("mid");
    let _ = app
        .deliver(
            "sentdm",
            &envelope(mid, "SENT", "2020-01-01T00:00:00Z"),
            |_| {},
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (got, secret, want) in [(&got_a, &secrets[0], 7), (&got_b, &secrets[1], 2)] {
        let got = got.lock().expect("lock").clone();
        assert_eq!(got.len(), want, "{got:?}");
        let mut ids = std::collections::BTreeSet::new();
        for (headers, body) in &got {
            assert!(
                standard_webhooks_valid(secret, headers, body),
                "signature: {headers:?}"
            );
            assert!(
                ids.insert(headers["webhook-id"].clone()),
                "sent twice: {body}"
            );
            let v: Value = serde_json::from_str(body).expect("json");
            assert!(
                v["type"].as_str().is_some_and(|t| t.starts_with("sentdm.")),
                "{v}"
            );
            assert_eq!(v["data"]["action_id"], App::action_id("sentdm").as_str());
        }
    }
    let b: Vec<Value> = got_b
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, b)| serde_json::from_str(b).expect("json"))
        .collect();
    let failed = b
        .iter()
        .find(|e| e["type"] == "sentdm.message.failed")
        .expect("failed event");
    assert_eq!(failed["data"]["error"]["code"], "DELIVERY_007");
    assert_eq!(failed["data"]["to"], "+14155550001");
}

#[tokio::test]
async fn the_event_catalogue_lists_the_sentdm_types() {
    let sim = start_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (status, types) = app
        .raw(
            Method::GET,
            &format!("{}/api/webhooks/event-types", app.base),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = types
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for t in [
        "sentdm.broadcast.accepted",
        "sentdm.message.queued",
        "sentdm.message.sent",
        "sentdm.message.delivered",
        "sentdm.message.read",
        "sentdm.message.failed",
        "sentdm.message.received",
        "sentdm.webhook.reconciled",
        "sentdm.webhook.reconcile_failed",
        "webhook.test",
    ] {
        assert!(names.contains(&t), "{t} missing: {names:?}");
    }
}

#[tokio::test]
async fn a_send_is_never_failed_by_bookkeeping() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    // The bearer token is checked without the graph, so only persistence fails.
    app.graph.set_outage(true);
    let (status, result) = app
        .broadcast(json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": params()}}))
        .await;
    app.graph.set_outage(false);
    assert_eq!(status, 202, "{result}");
    assert_eq!(result["status"], "accepted");
    assert_eq!(result["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(result["persisted"]["ok"], false);
    assert!(
        result["persisted"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("graph unavailable")),
        "{result}"
    );
    assert_eq!(sim.message_count(), 1, "SentDM has the message");
    assert_eq!(app.record_count().await, 0);
}

/// Issue: hostile or odd input. A correctly signed body may still be hostile in shape:
/// nested deep enough to overflow the graph engine's stack, large, or with an id that
/// would become a 20,000-character record key. The process survives, answers 200 (so
/// SentDM does not retry into auto-disable), counts what it ignored, and nothing it
/// stores grows without bound.
#[tokio::test]
async fn hostile_signed_payloads_are_bounded_and_the_server_survives() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (mid, rid) = one_record(&app, &sim).await;

    let nested = (0..100).fold(json!("leaf"), |inner, _| json!({ "n": inner }));
    let deep = json!({"field": "message", "sub_type": "message.sent", "timestamp": "2026-05-14T18:49:16Z",
        "payload": {"message_id": mid, "message_status": "SENT", "channel": "sms",
                    "updated_at": "2026-05-14T18:49:16Z", "extra": nested}});
    let (status, ack) = app.deliver("sentdm", &deep.to_string(), |_| {}).await;
    assert_eq!(
        (status, ack["status"].clone()),
        (200, json!("received")),
        "{ack}"
    );

    let large = json!({"field": "message", "sub_type": "message.delivered", "timestamp": "2026-05-14T18:49:20Z",
        "payload": {"message_id": mid, "message_status": "DELIVERED", "channel": "sms",
                    "updated_at": "2026-05-14T18:49:20Z", "body": "x".repeat(20_000),
                    "reason": "r".repeat(8_000)}});
    let (status, ack) = app.deliver("sentdm", &large.to_string(), |_| {}).await;
    assert_eq!(
        (status, ack["status"].clone()),
        (200, json!("received")),
        "{ack}"
    );

    let long_id = json!({"field": "message", "sub_type": "message.sent",
        "payload": {"message_id": "m".repeat(20_000), "message_status": "SENT"}});
    let (status, ack) = app.deliver("sentdm", &long_id.to_string(), |_| {}).await;
    assert_eq!(
        (status, ack["status"].clone()),
        (200, json!("ignored")),
        "{ack}"
    );

    // A time whose fraction holds multibyte characters (a byte slice would panic).
    let odd_time = envelope(&mid, "READ", "2026-05-14T18:49:30.12345678é9Z");
    let (status, ack) = app.deliver("sentdm", &odd_time, |_| {}).await;
    assert_eq!(
        (status, ack["status"].clone()),
        (200, json!("received")),
        "{ack}"
    );

    // Still serving, and what was stored is bounded.
    let (status, record) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{rid}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(record["status"], "read");
    assert_eq!(record["last_event_payload"]["message_status"], "READ");
    let stored = serde_json::to_string(&record).expect("json");
    assert!(stored.len() < 32 * 1024, "record is {} bytes", stored.len());
    let rows = app
        .graph
        .query(
            "SELECT VALUE last_event_payload FROM sentdm_message WHERE sentdm_message_id = $m;",
            json!({ "m": mid }),
        )
        .await
        .expect("query");
    assert!(rows[0][0].is_object());
    let (_, health) = app.call(Method::GET, "/sentdm/status", None).await;
    assert_eq!(health["counters"]["ignored"], 1);
    assert_eq!(health["counters"]["received"], 3);
    assert_eq!(
        app.record_count().await,
        1,
        "no record keyed by the long id"
    );
}

#[tokio::test]
async fn the_deep_payload_is_stored_as_a_flat_summary() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (mid, rid) = one_record(&app, &sim).await;
    let nested = (0..100).fold(json!([1]), |inner, _| json!([inner]));
    let deep = json!({"field": "message", "sub_type": "message.sent", "timestamp": "2026-05-14T18:49:16Z",
        "payload": {"message_id": mid, "message_status": "SENT", "extra": nested}});
    let (status, _) = app.deliver("sentdm", &deep.to_string(), |_| {}).await;
    assert_eq!(status, 200);
    let (_, record) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{rid}"), None)
        .await;
    let payload = &record["last_event_payload"];
    assert_eq!(payload["truncated"], true, "{payload}");
    assert!(
        payload["reason"].as_str().unwrap_or("").contains("nested"),
        "{payload}"
    );
    assert!(payload["preview"].is_string());
}

/// Paging arithmetic in `u64` and parameter errors as 400 naming the parameter.
#[tokio::test]
async fn paging_is_validated_and_never_overflows() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    one_record(&app, &sim).await;
    let (status, page) = app
        .call(
            Method::GET,
            "/sentdm/broadcasts?page=4294967295&page_size=100",
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["total"], 1);
    for (query, field) in [
        ("page=0", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("status=exploded", "status"),
    ] {
        let (status, err) = app
            .call(Method::GET, &format!("/sentdm/broadcasts?{query}"), None)
            .await;
        assert_eq!(
            (status, err["error"]["field"].clone()),
            (400, json!(field)),
            "{query}: {err}"
        );
    }
    let (status, err) = app
        .call(Method::GET, "/sentdm/broadcasts?page=-1", None)
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("page"),
        "{err}"
    );
    let (status, _) = app
        .call(Method::GET, "/sentdm/templates?page=0", None)
        .await;
    assert_eq!(status, 400);
}

/// A client retrying `send_broadcast` with the same idempotency key (after a crash, a
/// timeout) changes nothing: no second `send` entry, no bumped count, no extra edges.
#[tokio::test]
async fn a_repeated_send_is_idempotent_all_the_way_to_the_records() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let request = json!({"to": ["+14155550100", "+14155550200"], "channels": ["sms", "whatsapp"],
        "template": {"name": "order_confirmation", "parameters": params()}, "idempotency_key": "retry-me"});
    let (status, first) = app.broadcast(request.clone()).await;
    assert_eq!(status, 202, "{first}");
    let broadcast_id = first["broadcast_id"].as_str().expect("id").to_owned();
    let node = |graph: graphagent::Graph, b: String| async move {
        graph
            .query(
                "SELECT VALUE created_at FROM type::record('sentdm_broadcast', $b);
                 RETURN count(SELECT id FROM type::record('sentdm_broadcast', $b)->sentdm_includes->sentdm_message);
                 RETURN count(SELECT id FROM sentdm_tracks);",
                json!({ "b": b }),
            )
            .await
            .expect("query")
    };
    let before = node(app.graph.clone(), broadcast_id.clone()).await;
    for _ in 0..2 {
        let (status, again) = app.broadcast(request.clone()).await;
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["broadcast_id"], broadcast_id.as_str());
        assert_eq!(again["persisted"]["ok"], true, "{again}");
    }
    assert_eq!(node(app.graph.clone(), broadcast_id.clone()).await, before);
    assert_eq!(before[1], json!(4));
    assert_eq!(app.record_count().await, 4);
    let (_, page) = app
        .call(Method::GET, "/sentdm/broadcasts?page_size=100", None)
        .await;
    for item in page["items"].as_array().expect("items") {
        assert_eq!(item["event_count"], 1, "{item}");
        assert_eq!(item["events"].as_array().map(Vec::len), Some(1), "{item}");
        assert_eq!(item["events"][0]["source"], "send");
    }
}

/// One `MessageRecord` shape both ways: what the send persists is exactly what the
/// records routes read back, field by field, through the real embedded graph.
#[tokio::test]
async fn a_sent_record_reads_back_as_written() {
    use graphagent_sentdm::record::{LogEntry, MessageRecord};
    use sentdm_client::model::MessageStatus;

    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (status, result) = app
        .broadcast(json!({"to": ["+14155550100"], "channels": ["whatsapp"], "idempotency_key": "round-trip-1",
                          "template": {"name": "order_confirmation", "parameters": params()}}))
        .await;
    assert_eq!(status, 202, "{result}");
    let (mid, rid) = (
        result["messages"][0]["message_id"].as_str().expect("mid"),
        result["messages"][0]["record_id"].as_str().expect("rid"),
    );
    let (status, one) = app
        .call(Method::GET, &format!("/sentdm/broadcasts/{rid}"), None)
        .await;
    assert_eq!(status, 200, "{one}");
    let read: MessageRecord = serde_json::from_value(one.clone()).expect("a MessageRecord");
    let created = read.created_at.clone().expect("created_at");
    let expected = MessageRecord {
        id: rid.to_owned(),
        sentdm_message_id: mid.to_owned(),
        action_id: App::action_id("sentdm"),
        agent_id: Some(graphagent::plugin::agent_id("acme/notifier")),
        broadcast_id: result["broadcast_id"].as_str().map(str::to_owned),
        to: Some("+14155550100".into()),
        channel: Some("whatsapp".into()),
        template_name: Some("order_confirmation".into()),
        parameters: Some(BTreeMap::from([
            ("name".into(), "Jane".into()),
            ("order_id".into(), "12345".into()),
        ])),
        idempotency_key: Some("round-trip-1".into()),
        sandbox: Some(false),
        status: Some(MessageStatus::Accepted),
        events: vec![LogEntry {
            source: "send".into(),
            status: Some("accepted".into()),
            occurred_at: Some(created.clone()),
            broadcast_id: result["broadcast_id"].as_str().map(str::to_owned),
            ..LogEntry::default()
        }],
        event_count: Some(1),
        created_at: Some(created.clone()),
        updated_at: Some(created),
        ..MessageRecord::default()
    };
    assert_eq!(read, expected);
    assert_eq!(one["status"], "accepted", "stored and shown lowercase");
    // The list reads the same shape.
    let (status, page) = app
        .call(Method::GET, "/sentdm/broadcasts?status=accepted", None)
        .await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<MessageRecord> =
        serde_json::from_value(page["items"].clone()).expect("records");
    assert_eq!(listed, [expected]);
    app.stop().await;
}

/// `fold_writers` from agent.yaml sets the writer count; out of range, and a webhook
/// filter word SentDM does not report, are refused with 422 naming each key, and the
/// running action is left as it was.
#[tokio::test]
async fn fold_writers_and_filter_words_from_agent_yaml_are_honoured_or_refused() {
    let sim = start_sim().await;
    let app = App::start(
        &sim,
        AppOptions {
            extra: "      fold_writers: 3\n",
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.action("sentdm").fold_writers(), 3);
    let (status, body) = app
        .reload(
            &sim,
            "      fold_writers: 0\n      webhook_event_filters:\n        message: [delivered, opened]\n",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("actions[0].context.fold_writers: must be 1 to 64"),
        "{message}"
    );
    assert!(
        message.contains(
            "actions[0].context.webhook_event_filters.message[1]: unknown sub-type `opened`"
        ),
        "{message}"
    );
    // `accepted` is a status, but SentDM never reports it by webhook.
    let (status, body) = app
        .reload(
            &sim,
            "      webhook_event_filters:\n        message: [accepted]\n",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("webhook_event_filters.message[0]")),
        "{body}"
    );
    assert_eq!(app.action("sentdm").fold_writers(), 3, "nothing changed");
    let (status, body) = app.reload(&sim, "      fold_writers: 2\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.action("sentdm").fold_writers(), 2);
    app.stop().await;
}

/// Every records filter narrows the page and the total; unset filters match anything.
#[tokio::test]
async fn record_filters_narrow_the_page_and_the_total() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (_, first) = app
        .broadcast(json!({"to": ["+14155550100", "+14155550111"], "template": {"name": "order_confirmation", "parameters": params()}}))
        .await;
    let (_, second) = app
        .broadcast(json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": params()}}))
        .await;
    let b1 = first["broadcast_id"].as_str().expect("b1");
    let b2 = second["broadcast_id"].as_str().expect("b2");
    let mid = first["messages"][0]["message_id"].as_str().expect("mid");
    let list = |query: String| {
        let app = &app;
        async move {
            let (status, page) = app
                .call(Method::GET, &format!("/sentdm/broadcasts?{query}"), None)
                .await;
            assert_eq!(status, 200, "{query}: {page}");
            let ids: Vec<String> = page["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter_map(|r| r["broadcast_id"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(page["total"].as_u64(), Some(ids.len() as u64), "{query}");
            ids
        }
    };
    assert_eq!(list(String::new()).await.len(), 3);
    assert_eq!(list("to=%2B14155550100".into()).await, [b2, b1]);
    assert_eq!(list(format!("broadcast_id={b1}")).await, [b1, b1]);
    assert_eq!(list(format!("sentdm_message_id={mid}")).await, [b1]);
    assert_eq!(
        list(format!("to=%2B14155550111&broadcast_id={b2}"))
            .await
            .len(),
        0
    );
    assert_eq!(
        list(format!("status=accepted&broadcast_id={b2}")).await,
        [b2]
    );
    assert_eq!(list("status=delivered".into()).await.len(), 0);
    app.stop().await;
}

/// With no signing secret on record (the webhook could not be registered), a delivery is
/// 503 (SentDM retries, an operator is alerted), whether or not it carries signature
/// headers: the secret is looked for (in memory, then in the graph, where another replica
/// may have stored it) before the headers are read.
#[tokio::test]
async fn no_secret_on_record_is_503_with_or_without_signature_headers() {
    let sim = silent_sim().await;
    // Every SentDM call fails: the webhook is never registered, no secret is stored.
    sim.set_faults(Faults {
        api_error_rate: 1.0,
        ..Faults::default()
    });
    let app = App::start(&sim, AppOptions::default()).await;
    let url = format!(
        "{}/api/sentdm/webhook/{}?api_key={}",
        app.base,
        App::action_id("sentdm"),
        app.scoped_key("sentdm")
    );
    let body = envelope("m-1", "SENT", "2026-05-14T18:49:16Z");
    let bare = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(bare.status(), 503);
    let signed = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("x-webhook-id", "00000000-0000-0000-0000-000000000000")
        .header("x-webhook-timestamp", "1")
        .header("x-webhook-signature", "v1,AAAA")
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(signed.status(), 503);
}

/// `n` distinct recipients that the simulator sends without a failure path.
fn recipients(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("+1415{:07}", 1_000_000 + i))
        .collect()
}

/// Records are written as SentDM's answers arrive, not after the last one: while a
/// broadcast of five requests (four at a time, each held 700 ms by SentDM) is still
/// unanswered, the first wave's records are already in the graph, and at the end every
/// message has its record, linked to the action and to the broadcast.
#[tokio::test]
async fn records_are_stored_while_the_next_requests_are_in_flight() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let mut faults = sim.faults();
    faults.latency = Duration::from_millis(700);
    sim.set_faults(faults);
    let to = recipients(500);
    let send = app.broadcast(json!({"to": to, "channels": ["sms"],
        "template": {"name": "order_confirmation", "parameters": params()}}));
    tokio::pin!(send);
    let mut seen_midway = 0;
    let (status, result) = loop {
        tokio::select! {
            answer = &mut send => break answer,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                let n = app.record_count().await;
                if n > 0 && n < 500 {
                    seen_midway = seen_midway.max(n);
                }
            }
        }
    };
    assert_eq!(status, 202, "{result}");
    assert!(
        seen_midway > 0,
        "no record was stored before the last answer"
    );
    assert_eq!(result["persisted"]["ok"], true, "{result}");
    assert_eq!(result["persisted"]["records"], 500);
    let messages = result["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 500);
    assert!(messages.iter().all(|m| m["record_id"].is_string()));
    let linked = app
        .graph
        .query(
            "RETURN count(SELECT id FROM type::record('action', $a)->sentdm_tracks->sentdm_message);
             RETURN count(SELECT id FROM type::record('sentdm_broadcast', $b)->sentdm_includes->sentdm_message);
             RETURN count(SELECT id FROM sentdm_message WHERE event_count = 1 AND events[0].source = 'send');",
            json!({"a": App::action_id("sentdm"), "b": result["broadcast_id"]}),
        )
        .await
        .expect("query");
    assert_eq!(linked, vec![json!(500), json!(500), json!(500)]);
}

/// Invariant 6 under a graph outage that ends while the send is answered: the records
/// SentDM's answers produced are kept and stored once the graph is back, and the send
/// is reported fully stored.
#[tokio::test]
async fn records_refused_during_a_graph_outage_are_stored_when_it_ends() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    app.graph.set_outage(true);
    let graph = app.graph.clone();
    let lift = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        graph.set_outage(false);
    });
    let (status, result) = app
        .broadcast(
            json!({"to": recipients(60), "channels": ["sms", "whatsapp"],
            "template": {"name": "order_confirmation", "parameters": params()}}),
        )
        .await;
    lift.await.expect("lift");
    assert_eq!(status, 202, "{result}");
    assert_eq!(result["status"], "accepted");
    assert_eq!(result["persisted"]["ok"], true, "{result}");
    assert_eq!(result["persisted"]["records"], 120);
    assert_eq!(app.record_count().await, 120);
}

/// A send whose records the graph refused (the outage outlasts the retries) is
/// answered with SentDM's messages and the failure; the caller's retry with the same
/// idempotency key stores every record exactly once.
#[tokio::test]
async fn a_send_retried_after_its_records_were_refused_stores_them_once() {
    let sim = silent_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let request = json!({"to": recipients(60), "channels": ["sms", "whatsapp"],
        "template": {"name": "order_confirmation", "parameters": params()}, "idempotency_key": "outage-then-retry"});
    app.graph.set_outage(true);
    let (status, first) = app.broadcast(request.clone()).await;
    app.graph.set_outage(false);
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["messages"].as_array().map(Vec::len), Some(120));
    assert_eq!(first["persisted"]["ok"], false, "{first}");
    assert_eq!(first["persisted"]["records"], 0);
    assert!(
        first["persisted"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("120 of 120 records not stored")),
        "{first}"
    );
    assert_eq!(app.record_count().await, 0);

    for _ in 0..2 {
        let (status, again) = app.broadcast(request.clone()).await;
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["persisted"]["ok"], true, "{again}");
        assert_eq!(again["persisted"]["records"], 120);
    }
    assert_eq!(sim.message_count(), 120, "nothing was sent twice");
    let counts = app
        .graph
        .query(
            "RETURN count(SELECT id FROM sentdm_message);
             RETURN count(SELECT id FROM sentdm_tracks);
             RETURN count(SELECT id FROM sentdm_includes);
             RETURN count(SELECT id FROM sentdm_message WHERE event_count != 1 OR array::len(events) != 1);",
            Value::Null,
        )
        .await
        .expect("query");
    assert_eq!(counts, vec![json!(120), json!(120), json!(120), json!(0)]);
}
