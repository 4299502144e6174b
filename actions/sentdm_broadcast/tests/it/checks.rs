//! What a user relies on not being silent: a send's parameters checked against the
//! template before anything is sent, warnings in the send's answer, the webhook checked
//! at SentDM by the status endpoint, and inbound replies readable over HTTP.

use reqwest::Method;
use sentdm_client::client::{ApiKey, Client, ClientConfig};
use sentdm_sim::{ApiFault, Faults, ORDER_CONFIRMATION_ID, SimHandle};
use serde_json::{Value, json};

use crate::app::{App, AppOptions};
use crate::util::sim_builder;

/// A simulator that sends no status webhooks (replies are delivered by hand).
async fn quiet_sim() -> SimHandle {
    let words = [
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
            drop_sub_types: words.iter().map(|s| format!("message.{s}")).collect(),
            ..Faults::default()
        })
        .start()
        .await
        .expect("sim")
}

fn sends(sim: &SimHandle) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/v3/messages"))
        .count()
}

#[tokio::test]
async fn parameters_that_do_not_match_the_template_are_refused_before_sending() {
    let sim = quiet_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let cases = [
        (
            json!({"name": "order_confirmation", "parameters": {"name": "Jo"}}),
            "missing order_id",
        ),
        (
            json!({"id": ORDER_CONFIRMATION_ID, "parameters": {"name": "Jo", "order_id": "1", "coupon": "X"}}),
            "unknown coupon",
        ),
        // The action's default template (order_confirmation) is checked too.
        (json!({"parameters": {}}), "missing name, order_id"),
    ];
    for (template, words) in cases {
        let (status, err) = app
            .broadcast(json!({"to": ["+14155550100"], "template": template}))
            .await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["error"]["field"], "template.parameters", "{err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{message}");
        assert!(message.contains("declares: name, order_id"), "{message}");
    }
    assert_eq!(sends(&sim), 0, "nothing reached SentDM");
    assert_eq!(app.record_count().await, 0);

    // Matching parameters go out.
    for _ in 0..2 {
        let (status, result) = app
            .broadcast(json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": {"name": "Jo", "order_id": "1"}}}))
            .await;
        assert_eq!(status, 202, "{result}");
        assert_eq!(result["warnings"], json!([]), "{result}");
    }
    // Read once by name (shared with the default, which is the same name) and once by id.
    assert_eq!(template_reads(&sim), 2, "templates are cached");
}

fn template_reads(sim: &SimHandle) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v3/templates"))
        .count()
}

#[tokio::test]
async fn a_template_that_cannot_be_read_does_not_stop_the_send_and_is_warned_about() {
    let sim = quiet_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    // More failures than the client retries.
    sim.push_api_fault(ApiFault::status(503).on("GET", "/v3/templates").times(5));
    let (status, result) = app
        .broadcast(json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": {"name": "Jo", "order_id": "1"}}}))
        .await;
    assert_eq!(status, 202, "{result}");
    let warnings = result["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{result}");
    assert_eq!(warnings[0]["code"], "template_not_checked");
    assert_eq!(sends(&sim), 1);
}

#[tokio::test]
async fn a_send_without_a_webhook_says_no_status_will_arrive() {
    let sim = quiet_sim().await;
    let app = App::start(
        &sim,
        AppOptions {
            public_url: false,
            ..AppOptions::default()
        },
    )
    .await;
    let body = json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": {"name": "Jo", "order_id": "1"}}});
    let (status, result) = app.broadcast(body.clone()).await;
    assert_eq!(status, 202, "{result}");
    let codes: Vec<&str> = result["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert_eq!(codes, ["no_webhook"], "{result}");
    // A sandbox send expects no status anyway.
    let mut sandbox = body;
    sandbox["sandbox"] = json!(true);
    let (status, result) = app.broadcast(sandbox).await;
    assert_eq!(status, 202, "{result}");
    assert_eq!(result["warnings"], json!([]), "{result}");
    let (_, health) = app.call(Method::GET, "/sentdm/status", None).await;
    assert_eq!(health["webhook_registered"], false, "{health}");
    assert!(
        health["webhook_problem"]
            .as_str()
            .is_some_and(|p| p.contains("no webhook is registered")),
        "{health}"
    );
}

#[tokio::test]
async fn status_checks_the_webhook_at_sentdm() {
    let sim = quiet_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (_, health) = app.call(Method::GET, "/sentdm/status", None).await;
    assert_eq!(
        (
            health["webhook_registered"].clone(),
            health["webhook_checked"].clone(),
            health["webhook_active"].clone(),
            health["webhook_problem"].clone()
        ),
        (json!(true), json!(true), json!(true), Value::Null),
        "{health}"
    );
    // Someone deletes the webhook at SentDM (its dashboard, another tool).
    let client = Client::new(ClientConfig::new(
        sim.base_url(),
        ApiKey::new(sim.api_key()),
    ))
    .expect("client");
    let (id, _) = app.webhook_state("sentdm").await.expect("state");
    client.delete_webhook(&id).await.expect("delete");
    let (status, health) = app.call(Method::GET, "/sentdm/status", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["webhook_registered"], false, "{health}");
    assert!(
        health["webhook_problem"]
            .as_str()
            .is_some_and(|p| p.contains("no longer exists at SentDM")),
        "{health}"
    );
    // Repairing it clears the problem.
    let (_, report) = app
        .call(Method::POST, "/sentdm/webhook/register", None)
        .await;
    assert_ne!(report["outcome"], "failed", "{report}");
    let (_, health) = app.call(Method::GET, "/sentdm/status", None).await;
    assert_eq!(health["webhook_registered"], true, "{health}");
    assert_eq!(health["webhook_problem"], Value::Null, "{health}");
}

#[tokio::test]
async fn replies_are_listed_and_read_over_http_with_the_message_they_answer() {
    let sim = quiet_sim().await;
    let app = App::start(&sim, AppOptions::default()).await;
    let (_, sent) = app
        .broadcast(json!({"to": ["+14155550100"], "template": {"name": "order_confirmation", "parameters": {"name": "Jo", "order_id": "1"}}}))
        .await;
    let mid = sent["messages"][0]["message_id"].as_str().expect("mid");
    let rid = sent["messages"][0]["record_id"].as_str().expect("rid");
    let reply = |id: &str, from: &str, text: &str, in_reply_to: Option<&str>| {
        let mut payload = json!({"message_id": id, "inbound_number": from, "outbound_number": "+14155550999", "channel": "sms", "text": text});
        if let Some(m) = in_reply_to {
            payload["in_reply_to"] = json!(m);
        }
        json!({"field": "message", "sub_type": "message.received", "timestamp": "2025-10-31T10:10:42Z", "payload": payload}).to_string()
    };
    for body in [
        reply("in-1", "+14155550100", "YES", Some(mid)),
        reply("in-2", "+14155550100", "and thanks", None),
        reply("in-3", "+14155550777", "who is this?", None),
    ] {
        let (status, ack) = app.deliver("sentdm", &body, |_| {}).await;
        assert_eq!(status, 200, "{ack}");
    }
    let (status, page) = app
        .call(Method::GET, "/sentdm/replies?page_size=2", None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["total"].clone(), page["page_size"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));

    let (_, mine) = app
        .call(Method::GET, "/sentdm/replies?from=%2B14155550100", None)
        .await;
    let items = mine["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{mine}");
    let by_text = |t: &str| {
        items
            .iter()
            .find(|r| r["text"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no reply `{t}` in {mine}"))
    };
    let yes = by_text("YES");
    assert_eq!(
        (
            yes["in_reply_to"].as_str(),
            yes["answers_record"].as_str(),
            yes["link"].as_str()
        ),
        (Some(mid), Some(rid), Some("in_reply_to"))
    );
    let thanks = by_text("and thanks");
    assert_eq!(thanks["answers_record"].as_str(), Some(rid));
    assert_eq!(thanks["link"], "latest_to_sender");

    let (_, stranger) = app
        .call(Method::GET, "/sentdm/replies?from=%2B14155550777", None)
        .await;
    assert_eq!(
        stranger["items"][0]["answers_record"],
        Value::Null,
        "{stranger}"
    );
    assert_eq!(stranger["items"][0]["link"], Value::Null, "{stranger}");

    let (_, linked) = app
        .call(
            Method::GET,
            &format!("/sentdm/replies?record_id={rid}"),
            None,
        )
        .await;
    assert_eq!(linked["total"], 2, "{linked}");

    let id = yes["id"].as_str().expect("id");
    let (status, one) = app
        .call(Method::GET, &format!("/sentdm/replies/{id}"), None)
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, yes);

    let (status, err) = app
        .call(Method::GET, "/sentdm/replies/no-such-reply", None)
        .await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = app
        .call(Method::GET, "/sentdm/replies?from=555", None)
        .await;
    assert_eq!(
        (status, err["error"]["field"].clone()),
        (400, json!("from")),
        "{err}"
    );
}
