//! Signed webhook delivery, the status machine on the virtual clock, retries,
//! auto-disable, fault injection and the `/_sim` control API.

use std::collections::BTreeMap;
use std::time::Duration;

use sentdm_client::model::MessageStatus;
use sentdm_client::signing::{SignedParts, SigningSecret, VerifyError};
use sentdm_sim::{DeliveryOutcome, Faults};
use serde_json::{Value, json};

use crate::util::{Receiver, client_for, order_send, sim_builder, start_sim};

fn verify(secret: &SigningSecret, r: &crate::util::Received, now: i64) -> Result<(), VerifyError> {
    let parts = SignedParts::from_headers(&r.headers)?;
    secret.verify(&parts, &r.body, now, 300)
}

fn statuses(rx: &Receiver) -> Vec<String> {
    rx.all()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["payload"]["message_status"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn deliveries_are_signed_and_verify() {
    let sim = start_sim().await;
    let rx = Receiver::start().await;
    let (c, _) = client_for(&sim);
    let w = c.create_webhook(&rx.webhook(None, 3), None).await.unwrap();
    let secret = SigningSecret::parse(w.signing_secret.as_deref().unwrap()).unwrap();
    let out = c
        .send_message(&order_send(&["+14155551234"], Some(&["sms"])), None)
        .await
        .unwrap();
    sim.settle().await;
    assert_eq!(statuses(&rx), ["QUEUED", "ROUTED", "SENT", "DELIVERED"]);
    let now = sim.now_ms() / 1000;
    let all = rx.all();
    for r in &all {
        verify(&secret, r, now).unwrap();
        assert_eq!(r.headers["x-webhook-id"], w.id.as_str());
        assert_eq!(r.headers["content-type"], "application/json");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["field"], "message");
        assert_eq!(
            r.headers["x-webhook-event-type"],
            v["sub_type"].as_str().unwrap()
        );
        assert!(r.headers.contains_key("x-webhook-event-id"));
        assert_eq!(
            v["payload"]["message_id"],
            out.response.recipients[0].message_id.as_str()
        );
    }
    let queued: Value = serde_json::from_slice(&all[0].body).unwrap();
    assert_eq!(
        queued["payload"]["channel"], "unknown",
        "early unknown fields"
    );

    // Tampered body, wrong secret, stale timestamp: all rejected.
    let mut tampered = all[3].clone();
    tampered.body = String::from_utf8(tampered.body.to_vec())
        .unwrap()
        .replace("DELIVERED", "READ")
        .into();
    assert_eq!(verify(&secret, &tampered, now), Err(VerifyError::NoMatch));
    let wrong = SigningSecret::from_key(&[9u8; 32]).unwrap();
    assert_eq!(verify(&wrong, &all[3], now), Err(VerifyError::NoMatch));
    assert_eq!(
        verify(&secret, &all[3], now + 301),
        Err(VerifyError::TimestampOutOfWindow)
    );

    // The delivery log mirrors what the receiver got.
    let log = sim.deliveries();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|d| d.outcome == DeliveryOutcome::Delivered));
    assert_eq!(log[3].message_status().as_deref(), Some("DELIVERED"));
    assert_eq!(log[3].body.as_bytes(), &all[3].body[..]);
    sim.shutdown().await;
}

#[tokio::test]
async fn deterministic_outcomes_on_the_virtual_clock() {
    let sim = sim_builder()
        .step_delay(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let (c, _) = client_for(&sim);
    let numbers = [
        "+14155550001",
        "+14155550002",
        "+14155550003",
        "+14155550004",
        "+14155550005",
        "+14155559999",
    ];
    let out = c
        .send_message(&order_send(&numbers, Some(&["whatsapp"])), None)
        .await
        .unwrap();
    let id = |i: usize| out.response.recipients[i].message_id.clone();
    sim.settle().await;
    for i in 0..numbers.len() {
        assert_eq!(sim.message_status(&id(i)).as_deref(), Some("QUEUED"));
    }
    sim.advance(Duration::from_secs(1)).await;
    assert_eq!(sim.message_status(&id(1)).as_deref(), Some("BLOCKED"));
    assert_eq!(sim.message_status(&id(5)).as_deref(), Some("PROCESSED"));
    sim.advance(Duration::from_secs(10)).await;

    let expect = [
        ("FAILED", Some("DELIVERY_007")),
        ("BLOCKED", Some("BUSINESS_003")),
        ("FILTERED", Some("COMPLIANCE_001")),
        ("SENT", None),
        ("FAILED", Some("DELIVERY_007")),
        ("READ", None),
    ];
    for (i, (status, code)) in expect.iter().enumerate() {
        let m = c.get_message(&id(i)).await.unwrap();
        assert_eq!(
            m.status.as_ref().map(MessageStatus::as_str),
            Some(*status),
            "{}",
            numbers[i]
        );
        assert_eq!(m.reason_code.as_deref(), *code);
    }
    // Late failure: DELIVERED first, then FAILED.
    let late = c.get_message(&id(4)).await.unwrap();
    let trail: Vec<_> = late
        .events
        .iter()
        .filter_map(|e| e.status.clone())
        .collect();
    assert_eq!(
        trail,
        [
            MessageStatus::Queued,
            MessageStatus::Routed,
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Failed
        ]
    );
    // Event timestamps follow the virtual clock, one step apart.
    let ts: Vec<_> = late
        .events
        .iter()
        .filter_map(|e| e.timestamp.clone())
        .collect();
    assert_ne!(ts[0], ts[1]);
    sim.shutdown().await;
}

#[tokio::test]
async fn filters_force_status_and_templates_family() {
    let sim = start_sim().await;
    let rx = Receiver::start().await;
    let (c, _) = client_for(&sim);
    let mut req = rx.webhook(Some(&["delivered", "failed"]), 3);
    req.event_types.push("templates".into());
    c.create_webhook(&req, None).await.unwrap();
    let out = c
        .send_message(
            &order_send(&["+14155550004", "+14155551111"], Some(&["sms"])),
            None,
        )
        .await
        .unwrap();
    sim.settle().await;
    assert_eq!(statuses(&rx), ["DELIVERED"]);

    let stuck = &out.response.recipients[0].message_id;
    assert!(
        sim.force_status(stuck, "FAILED", Some("DELIVERY_007"), None)
            .await
    );
    assert_eq!(statuses(&rx), ["DELIVERED", "FAILED"]);
    let m = c.get_message(stuck).await.unwrap();
    assert_eq!(m.status, Some(MessageStatus::Failed));

    assert!(
        sim.set_template_status(sentdm_sim::PROMO_PENDING_ID, "APPROVED")
            .await
    );
    let last: Value = serde_json::from_slice(&rx.all().last().unwrap().body).unwrap();
    assert_eq!(last["field"], "templates");
    assert_eq!(last["payload"]["status"], "APPROVED");
    assert!(last.get("sub_type").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn retries_then_auto_disable_after_ten_failed_events() {
    let sim = start_sim().await;
    let rx = Receiver::start().await;
    rx.set_status(500);
    let (c, _) = client_for(&sim);
    let w = c
        .create_webhook(&rx.webhook(Some(&["delivered"]), 1), None)
        .await
        .unwrap();
    let to: Vec<String> = (0..11)
        .map(|i| format!("+1415555{:04}", 1000 + i))
        .collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    c.send_message(&order_send(&to, Some(&["sms"])), None)
        .await
        .unwrap();
    sim.settle().await;
    // All 11 events are emitted and attempted once before any retry is due; the retries
    // exhaust events 1..10, the 10th exhaustion disables the webhook, and event 11's retry
    // is never sent: 11 + 10 attempts.
    assert_eq!(rx.all().len(), 21);
    let got = c.get_webhook(&w.id).await.unwrap();
    assert!(!got.is_active);
    assert_eq!(got.consecutive_failures, 10);
    assert!(got.last_delivery_attempt_at.is_some());

    let on = c.toggle_webhook(&w.id, true).await.unwrap();
    assert!(on.is_active);
    assert_eq!(on.consecutive_failures, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn retry_is_resigned_with_identical_body() {
    let sim = sim_builder().retry_scale(1.0).start().await.unwrap();
    let rx = Receiver::start().await;
    rx.set_status(503);
    let (c, _) = client_for(&sim);
    let w = c
        .create_webhook(&rx.webhook(Some(&["delivered"]), 3), None)
        .await
        .unwrap();
    c.send_message(&order_send(&["+14155551234"], Some(&["sms"])), None)
        .await
        .unwrap();
    sim.settle().await;
    assert_eq!(rx.all().len(), 1);
    rx.set_status(200);
    sim.advance(Duration::from_secs(1)).await;
    let all = rx.all();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].body, all[1].body);
    assert_ne!(
        all[0].headers["x-webhook-timestamp"],
        all[1].headers["x-webhook-timestamp"]
    );
    assert_eq!(
        all[0].headers["x-webhook-event-id"],
        all[1].headers["x-webhook-event-id"]
    );
    let secret = SigningSecret::parse(w.signing_secret.as_deref().unwrap()).unwrap();
    verify(&secret, &all[1], sim.now_ms() / 1000).unwrap();
    let events = c.webhook_events(&w.id, Default::default()).await.unwrap();
    assert_eq!(events.items[0].delivery_attempts, 2);
    assert_eq!(
        events.items[0].delivery_status.as_deref(),
        Some("delivered")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn rotation_and_redelivery() {
    let sim = start_sim().await;
    let rx = Receiver::start().await;
    let (c, _) = client_for(&sim);
    let w = c
        .create_webhook(&rx.webhook(Some(&["delivered"]), 3), None)
        .await
        .unwrap();
    let old = SigningSecret::parse(w.signing_secret.as_deref().unwrap()).unwrap();
    c.send_message(&order_send(&["+14155551234"], Some(&["sms"])), None)
        .await
        .unwrap();
    sim.settle().await;
    let new = SigningSecret::parse(&c.rotate_webhook_secret(&w.id).await.unwrap()).unwrap();
    let first = sim.deliveries()[0].clone();
    let again = sim.redeliver(&w.id, &first.event_id).await.unwrap();
    assert!(again.redelivery);
    assert_eq!(again.body, first.body);
    let all = rx.all();
    let now = sim.now_ms() / 1000;
    assert_eq!(all[0].body, all[1].body);
    assert_eq!(verify(&old, &all[1], now), Err(VerifyError::NoMatch));
    verify(&new, &all[1], now).unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn duplicate_reorder_drop_and_bad_signature_faults() {
    let sim = start_sim().await;
    let rx = Receiver::start().await;
    let (c, _) = client_for(&sim);
    let w = c.create_webhook(&rx.webhook(None, 1), None).await.unwrap();
    let secret = SigningSecret::parse(w.signing_secret.as_deref().unwrap()).unwrap();

    sim.set_faults(Faults {
        duplicate: true,
        ..Default::default()
    });
    c.send_message(&order_send(&["+14155551234"], Some(&["sms"])), None)
        .await
        .unwrap();
    sim.settle().await;
    assert_eq!(
        statuses(&rx),
        [
            "QUEUED",
            "QUEUED",
            "ROUTED",
            "ROUTED",
            "SENT",
            "SENT",
            "DELIVERED",
            "DELIVERED"
        ]
    );
    assert_eq!(sim.deliveries().iter().filter(|d| d.duplicate).count(), 4);

    // Reorder: same multiset of events per message, shuffled order for some message.
    rx.received.lock().unwrap().clear();
    sim.set_faults(Faults {
        reorder: true,
        ..Default::default()
    });
    let to: Vec<String> = (0..6).map(|i| format!("+1415556{:04}", 1000 + i)).collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    c.send_message(&order_send(&to, Some(&["sms"])), None)
        .await
        .unwrap();
    sim.settle().await;
    let mut per_message: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rx.all() {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        per_message
            .entry(v["payload"]["message_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(v["payload"]["message_status"].as_str().unwrap().to_owned());
    }
    let canonical = ["QUEUED", "ROUTED", "SENT", "DELIVERED"];
    assert_eq!(per_message.len(), 6);
    let mut shuffled = 0;
    for seq in per_message.values() {
        let mut sorted = seq.clone();
        sorted.sort();
        let mut want: Vec<String> = canonical.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(sorted, want);
        if seq.as_slice() != canonical {
            shuffled += 1;
        }
    }
    assert!(shuffled > 0, "seeded shuffle reorders at least one message");

    // Drop: the receiver never sees `delivered`, but the REST API does (refresh recovers).
    rx.received.lock().unwrap().clear();
    sim.set_faults(Faults {
        drop_sub_types: vec!["message.delivered".into()],
        ..Default::default()
    });
    let out = c
        .send_message(&order_send(&["+14155551234"], Some(&["sms"])), None)
        .await
        .unwrap();
    sim.settle().await;
    assert_eq!(statuses(&rx), ["QUEUED", "ROUTED", "SENT"]);
    let m = c
        .get_message(&out.response.recipients[0].message_id)
        .await
        .unwrap();
    assert_eq!(m.status, Some(MessageStatus::Delivered));
    assert!(
        sim.deliveries()
            .iter()
            .any(|d| d.outcome == DeliveryOutcome::Dropped)
    );

    // Bad signatures: every attempt fails verification with the real secret.
    rx.received.lock().unwrap().clear();
    sim.set_faults(Faults {
        bad_signature_rate: 1.0,
        ..Default::default()
    });
    c.send_message(&order_send(&["+14155551234"], Some(&["sms"])), None)
        .await
        .unwrap();
    sim.settle().await;
    let now = sim.now_ms() / 1000;
    assert!(!rx.all().is_empty());
    for r in rx.all() {
        assert_eq!(verify(&secret, &r, now), Err(VerifyError::NoMatch));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn control_api_over_http() {
    let sim = sim_builder()
        .step_delay(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let rx = Receiver::start().await;
    let (c, _) = client_for(&sim);
    c.create_webhook(&rx.webhook(None, 3), None).await.unwrap();
    let out = c
        .send_message(&order_send(&["+14155550004"], Some(&["sms"])), None)
        .await
        .unwrap();
    let id = &out.response.recipients[0].message_id;
    let http = reqwest::Client::new();
    let base = sim.base_url();

    let before = sim.now_ms();
    let r: Value = http
        .post(format!("{base}/_sim/advance"))
        .json(&json!({"ms": 5000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["now_ms"].as_i64().unwrap(), before + 5000);
    assert_eq!(sim.message_status(id).as_deref(), Some("SENT"));

    let r: Value = http
        .post(format!("{base}/_sim/messages/{id}/status"))
        .json(&json!({"status": "FAILED", "reason_code": "DELIVERY_007", "reason": "late"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "FAILED");
    assert_eq!(r["reason"], "late");

    let d: Value = http
        .get(format!("{base}/_sim/deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = d["deliveries"].as_array().unwrap();
    assert_eq!(list.len(), 4, "queued, routed, sent, failed");
    assert!(
        list[0]["headers"]["x-webhook-signature"]
            .as_str()
            .unwrap()
            .starts_with("v1,")
    );

    let resp = http
        .put(format!("{base}/_sim/faults"))
        .json(&json!({"duplicate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(sim.faults().duplicate);

    let resp = http
        .post(format!("{base}/_sim/faults/api"))
        .json(&json!({"status": 429, "retry_after_secs": 2, "path_prefix": "/v3/me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let raw = http
        .get(format!("{base}/v3/me"))
        .header("x-api-key", sim.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.headers()["retry-after"], "2");

    let resp = http
        .post(format!("{base}/_sim/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(sim.message_count(), 0);
    assert!(sim.deliveries().is_empty());
    assert!(c.list_all_webhooks().await.unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn same_key_in_flight_conflicts_then_replays() {
    use axum::routing::post;
    use std::sync::Arc;
    use tokio::sync::{Notify, mpsc};

    let sim = start_sim().await;
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let app = axum::Router::new().route(
        "/slow",
        post(move || {
            let (tx, g) = (arrived_tx.clone(), g.clone());
            async move {
                let _ = tx.send(());
                g.notified().await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (c, _) = client_for(&sim);
    let mut req = Receiver::start().await.webhook(None, 3);
    req.endpoint_url = format!("http://{addr}/slow");
    let w = c.create_webhook(&req, None).await.unwrap();

    let url = format!("{}/v3/webhooks/{}/test", sim.base_url(), w.id);
    let post_test = |url: String, key: String| async move {
        reqwest::Client::new()
            .post(url)
            .header("x-api-key", key)
            .header("idempotency-key", "test-once")
            .json(&json!({"event_type": "message.sent"}))
            .send()
            .await
            .unwrap()
    };
    let first = tokio::spawn(post_test(url.clone(), sim.api_key().to_owned()));
    arrived.recv().await.unwrap();
    let second = post_test(url.clone(), sim.api_key().to_owned()).await;
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "CONFLICT_001");

    gate.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    let replay = post_test(url, sim.api_key().to_owned()).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        sim.deliveries().len(),
        1,
        "the replay did not deliver the test event again"
    );
    server.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn scheduled_send_waits_for_its_time() {
    let sim = start_sim().await;
    let rx = Receiver::start().await;
    let (c, _) = client_for(&sim);
    c.create_webhook(&rx.webhook(Some(&["scheduled", "delivered"]), 3), None)
        .await
        .unwrap();
    let at = time::OffsetDateTime::from_unix_timestamp(sim.now_ms() / 1000 + 120)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v3/messages", sim.base_url()))
        .header("x-api-key", sim.api_key())
        .json(&json!({
            "to": ["+14155551234"], "channel": ["sms"], "scheduled_at": at,
            "template": {"name": "order_confirmation", "parameters": {"name": "A", "order_id": "1"}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let id = body["data"]["recipients"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.settle().await;
    assert_eq!(sim.message_status(&id).as_deref(), Some("SCHEDULED"));
    assert_eq!(statuses(&rx), ["SCHEDULED"]);
    sim.advance(Duration::from_secs(100)).await;
    assert_eq!(sim.message_status(&id).as_deref(), Some("SCHEDULED"));
    sim.advance(Duration::from_secs(30)).await;
    assert_eq!(sim.message_status(&id).as_deref(), Some("DELIVERED"));
    assert_eq!(statuses(&rx), ["SCHEDULED", "DELIVERED"]);
    let m = c.get_message(&id).await.unwrap();
    assert!(m.scheduled_at.is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn real_clock_mode_progresses_on_its_own() {
    let sim = sentdm_sim::Simulator::builder()
        .api_key(crate::util::KEY)
        .seed(1)
        .step_delay(Duration::from_millis(5))
        .start()
        .await
        .unwrap();
    let rx = Receiver::start().await;
    let (c, _) = client_for(&sim);
    let mut req = rx.webhook(None, 3);
    req.event_types.push("templates".into());
    req.event_filters = Some(
        [
            ("message".to_owned(), vec!["delivered".to_owned()]),
            ("templates".to_owned(), vec!["rejected".to_owned()]),
        ]
        .into_iter()
        .collect(),
    );
    c.create_webhook(&req, None).await.unwrap();
    let out = c
        .send_message(&order_send(&["+14155551234"], Some(&["sms"])), None)
        .await
        .unwrap();
    let id = &out.response.recipients[0].message_id;
    // Poll (no timing assertion): the driver advances the pipeline in real time.
    let mut status = None;
    for _ in 0..500 {
        status = sim.message_status(id);
        if status.as_deref() == Some("DELIVERED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status.as_deref(), Some("DELIVERED"));
    sim.settle().await;
    assert_eq!(statuses(&rx), ["DELIVERED"]);
    // Template filters match on the status: APPROVED is filtered out, REJECTED is not.
    sim.set_template_status(sentdm_sim::PROMO_PENDING_ID, "APPROVED")
        .await;
    sim.set_template_status(sentdm_sim::PROMO_PENDING_ID, "REJECTED")
        .await;
    let last: Value = serde_json::from_slice(&rx.all().last().unwrap().body).unwrap();
    assert_eq!(rx.all().len(), 2);
    assert_eq!(last["payload"]["status"], "REJECTED");
    sim.shutdown().await;
}

#[tokio::test]
async fn seeded_runs_are_byte_identical() {
    async fn run() -> Vec<(String, String, String)> {
        let sim = sim_builder()
            .start_time_ms(1_767_225_600_000)
            .step_delay(Duration::from_millis(250))
            .start()
            .await
            .unwrap();
        let rx = Receiver::start().await;
        let (c, _) = client_for(&sim);
        // The receiver's port differs per run, but the URL is neither in the body nor
        // signed, so bodies and signatures must match exactly.
        c.create_webhook(&rx.webhook(None, 3), None).await.unwrap();
        c.send_message(
            &order_send(
                &["+14155551234", "+14155550001"],
                Some(&["sms", "whatsapp"]),
            ),
            None,
        )
        .await
        .unwrap();
        sim.advance(Duration::from_secs(5)).await;
        let out = sim
            .deliveries()
            .into_iter()
            .map(|d| {
                let sig = d
                    .header("x-webhook-signature")
                    .unwrap_or_default()
                    .to_owned();
                (d.event_type, d.body, sig)
            })
            .collect();
        sim.shutdown().await;
        out
    }
    let a = run().await;
    let b = run().await;
    assert!(a.len() > 8);
    assert_eq!(a, b);
}
