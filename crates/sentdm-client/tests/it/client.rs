//! Every client endpoint and error class against the simulator over real HTTP.

use sentdm_client::client::{
    ApiKey, Client, ClientConfig, Error, ErrorKind, IdempotencyKey, RateLimit,
};
use sentdm_client::model::{
    MessageStatus, PageRequest, SendMessageRequest, TemplateQuery, TemplateRef, WebhookEventType,
};
use sentdm_sim::{ApiFault, ORDER_CONFIRMATION_ID, PROMO_PENDING_ID};

use crate::util::{Receiver, client_for, order_send, sim_builder, start_sim};

fn api_err(e: Error) -> sentdm_client::ErrorResponse {
    match e {
        Error::Api(a) => *a,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn me_reports_channels() {
    let sim = start_sim().await;
    let (c, _) = client_for(&sim);
    let me = c.me().await.unwrap();
    assert_eq!(me.kind.as_deref(), Some("user"));
    assert!(me.channels.sms.configured && me.channels.whatsapp.configured);
    assert!(!me.channels.rcs.configured);
    sim.shutdown().await;
}

#[tokio::test]
async fn send_get_and_activities() {
    let sim = start_sim().await;
    let (c, _) = client_for(&sim);
    let out = c
        .send_message(
            &order_send(
                &["+14155551234", "+14155555678"],
                Some(&["sms", "whatsapp"]),
            ),
            None,
        )
        .await
        .unwrap();
    assert!(!out.replayed && !out.sandbox);
    assert!(IdempotencyKey::new(out.idempotency_key.clone()).is_ok());
    assert_eq!(out.response.recipients.len(), 4);
    assert_eq!(out.response.status.as_deref(), Some("QUEUED"));
    assert_eq!(
        out.response.template_name.as_deref(),
        Some("order_confirmation")
    );
    let r = &out.response.recipients[0];
    assert_eq!(
        r.body.as_deref(),
        Some("Hi Jane, your order #12345 has been confirmed.")
    );

    // With a zero step delay the driver runs the pipeline as soon as it is due;
    // `settle` waits for it (the QUEUED-before-advance view is tested in `webhooks`).
    sim.settle().await;
    for r in &out.response.recipients {
        let m = c.get_message(&r.message_id).await.unwrap();
        let want = if r.channel.as_deref() == Some("whatsapp") {
            MessageStatus::Read
        } else {
            MessageStatus::Delivered
        };
        assert_eq!(m.status, Some(want), "{r:?}");
        assert_eq!(m.phone.as_deref(), Some(r.to.as_str()));
        let acts = c.message_activities(&r.message_id).await.unwrap();
        assert_eq!(acts.message_id, r.message_id);
        let statuses: Vec<_> = acts
            .activities
            .iter()
            .filter_map(|a| a.status.clone())
            .collect();
        assert_eq!(statuses.first(), m.status.as_ref(), "newest first");
        assert_eq!(statuses.last(), Some(&MessageStatus::Queued));
        assert!(statuses.contains(&MessageStatus::Processed));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn auto_channel_reports_null_then_real_channel() {
    let sim = start_sim().await;
    let (c, _) = client_for(&sim);
    let out = c
        .send_message(&order_send(&["+14155551234"], Some(&["sent"])), None)
        .await
        .unwrap();
    let r = &out.response.recipients[0];
    assert_eq!(r.channel, None);
    let m = c.get_message(&r.message_id).await.unwrap();
    assert_eq!(m.channel.as_deref(), Some("sms"));
    sim.shutdown().await;
}

#[tokio::test]
async fn templates_list_filter_and_get() {
    let sim = start_sim().await;
    let (c, _) = client_for(&sim);
    let q = TemplateQuery {
        page: PageRequest {
            page: 1,
            page_size: 1,
        },
        ..Default::default()
    };
    let p1 = c.list_templates(&q).await.unwrap();
    assert_eq!(p1.items.len(), 1);
    assert!(p1.pagination.has_more);
    assert_eq!(p1.pagination.total_count, 2);
    let approved = c
        .list_templates(&TemplateQuery {
            status: Some("APPROVED".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(approved.items.len(), 1);
    assert_eq!(approved.items[0].name, "order_confirmation");
    assert_eq!(approved.items[0].variables, ["name", "order_id"]);

    let t = c.get_template(ORDER_CONFIRMATION_ID).await.unwrap();
    assert_eq!(t.channels, ["sms", "whatsapp"]);
    assert!(t.definition.is_some());

    let bad = api_err(
        c.list_templates(&TemplateQuery {
            status: Some("approved".into()),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert!(bad.code_is("VALIDATION_006") && bad.kind() == ErrorKind::Validation);
    let missing = api_err(
        c.get_template("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap_err(),
    );
    assert!(missing.code_is("RESOURCE_002") && missing.kind() == ErrorKind::NotFound);
    let size = api_err(
        c.list_webhooks(PageRequest {
            page: 1,
            page_size: 101,
        })
        .await
        .unwrap_err(),
    );
    assert!(size.code_is("VALIDATION_001"));
    assert!(size.details.contains_key("page_size"));
    sim.shutdown().await;
}

#[tokio::test]
async fn webhook_lifecycle() {
    let sim = start_sim().await;
    let rx = Receiver::start().await;
    let (c, _) = client_for(&sim);
    let mut created = Vec::new();
    for i in 0..3 {
        let mut req = rx.webhook(Some(&["delivered"]), 3);
        req.display_name = format!("hook {i}");
        let w = c.create_webhook(&req, None).await.unwrap();
        assert!(w.signing_secret.as_deref().unwrap().starts_with("whsec_"));
        assert_eq!(w.endpoint_url, rx.url, "query string kept");
        created.push(w);
    }
    let page = c
        .list_webhooks(PageRequest {
            page: 1,
            page_size: 2,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.pagination.has_more);
    assert_eq!(c.list_all_webhooks().await.unwrap().len(), 3);

    let id = created[0].id.clone();
    let got = c.get_webhook(&id).await.unwrap();
    assert_eq!(got.signing_secret, None, "secret only on create/rotate");

    let mut update = rx.webhook(None, 5);
    update.display_name = "renamed".into();
    let updated = c.update_webhook(&id, &update).await.unwrap();
    assert_eq!(updated.display_name.as_deref(), Some("renamed"));
    assert_eq!(updated.retry_count, Some(5));
    assert_eq!(updated.event_filters, None);

    let off = c.toggle_webhook(&id, false).await.unwrap();
    assert!(!off.is_active);
    let on = c.toggle_webhook(&id, true).await.unwrap();
    assert!(on.is_active);

    let new_secret = c.rotate_webhook_secret(&id).await.unwrap();
    assert_ne!(
        Some(new_secret.as_str()),
        created[0].signing_secret.as_deref()
    );
    assert_eq!(
        sim.webhook_secret(&id).as_deref(),
        Some(new_secret.as_str())
    );

    let t = c.test_webhook(&id, "message.sent").await.unwrap();
    assert!(t.success, "{t:?}");
    rx.set_status(500);
    let t = c.test_webhook(&id, "message.sent").await.unwrap();
    assert!(!t.success);
    assert!(t.message.unwrap().contains("500"));

    let events = c.webhook_events(&id, PageRequest::default()).await.unwrap();
    assert_eq!(events.items.len(), 2);
    assert_eq!(events.items[0].delivery_status.as_deref(), Some("failed"));
    assert_eq!(
        events.items[1].delivery_status.as_deref(),
        Some("delivered")
    );

    let names = WebhookEventType::flatten_names(&c.webhook_event_types().await.unwrap());
    for n in [
        "message",
        "message.delivered",
        "message.failed",
        "templates",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }

    c.delete_webhook(&id).await.unwrap();
    assert!(c.get_webhook(&id).await.unwrap_err().is_not_found());
    let again = api_err(c.delete_webhook(&id).await.unwrap_err());
    assert!(again.code_is("RESOURCE_008"));
    sim.shutdown().await;
}

#[tokio::test]
async fn error_classes() {
    let sim = start_sim().await;
    let (c, _) = client_for(&sim);

    let wrong = Client::new(ClientConfig::new(sim.base_url(), ApiKey::new("nope"))).unwrap();
    let e = api_err(wrong.me().await.unwrap_err());
    assert_eq!((e.status, e.kind()), (401, ErrorKind::Unauthorized));
    assert!(e.code_is("AUTH_002"));
    assert!(e.request_id.as_deref().unwrap().starts_with("req_"));
    let empty = Client::new(ClientConfig::new(sim.base_url(), ApiKey::new(""))).unwrap();
    assert!(api_err(empty.me().await.unwrap_err()).code_is("AUTH_001"));

    let mut cfg = ClientConfig::new(sim.base_url(), ApiKey::new(sim.api_key()));
    cfg.profile_id = Some("a1b2c3d4-e5f6-7890-abcd-ef1234567890".into());
    let profiled = Client::new(cfg).unwrap();
    let e = api_err(profiled.me().await.unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Forbidden);

    let e = api_err(
        c.send_message(&order_send(&["4155551234"], None), None)
            .await
            .unwrap_err(),
    );
    assert!(e.code_is("VALIDATION_002"));
    assert!(e.details["to"][0].contains("4155551234"));

    let mut unknown = order_send(&["+14155551234"], None);
    unknown.template = Some(TemplateRef {
        name: Some("no_such_template".into()),
        ..Default::default()
    });
    let e = api_err(c.send_message(&unknown, None).await.unwrap_err());
    assert!(e.code_is("RESOURCE_002") && e.kind() == ErrorKind::NotFound);

    let neither = SendMessageRequest {
        to: vec!["+14155551234".into()],
        ..Default::default()
    };
    assert!(api_err(c.send_message(&neither, None).await.unwrap_err()).code_is("VALIDATION_004"));
    let bad_channel = order_send(&["+14155551234"], Some(&["SMS"]));
    assert!(
        api_err(c.send_message(&bad_channel, None).await.unwrap_err()).code_is("VALIDATION_006")
    );
    assert!(matches!(
        c.send_message(&order_send(&[], None), None).await,
        Err(Error::InvalidRequest(_))
    ));

    let e = api_err(c.get_message("not-a-uuid").await.unwrap_err());
    assert!(e.code_is("VALIDATION_001"));
    let e = api_err(
        c.get_message("8ba7b830-9dad-11d1-80b4-00c04fd430c8")
            .await
            .unwrap_err(),
    );
    assert!(e.code_is("RESOURCE_003"));
    let e = api_err(
        c.message_activities("8ba7b830-9dad-11d1-80b4-00c04fd430c8")
            .await
            .unwrap_err(),
    );
    assert!(e.code_is("RESOURCE_003"));

    let rx = Receiver::start().await;
    let e = api_err(
        c.create_webhook(&rx.webhook(None, 9), None)
            .await
            .unwrap_err(),
    );
    assert!(e.code_is("VALIDATION_005") && e.details.contains_key("retry_count"));
    let mut plain_http = rx.webhook(None, 3);
    plain_http.endpoint_url = "http://example.com/hook".into();
    assert!(
        api_err(c.create_webhook(&plain_http, None).await.unwrap_err()).code_is("VALIDATION_001")
    );
    let mut bad_type = rx.webhook(None, 3);
    bad_type.event_types = vec!["nope".into()];
    assert!(
        api_err(c.create_webhook(&bad_type, None).await.unwrap_err()).code_is("VALIDATION_006")
    );

    assert!(IdempotencyKey::new("bad key!").is_err());

    // Legacy synchronous 422s are typed and never retried.
    let (c2, retries) = client_for(&sim);
    sim.push_api_fault(
        ApiFault::status(422)
            .on("POST", "/v3/messages")
            .code("BUSINESS_004"),
    );
    let e = api_err(
        c2.send_message(&order_send(&["+14155551234"], None), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind(), ErrorKind::Unprocessable);
    assert!(e.code_is("BUSINESS_004"));
    assert!(retries.lock().unwrap().is_empty());
    // 409 is retried (the first request may still be in flight), then reported.
    sim.push_api_fault(ApiFault::status(409).on("GET", "/v3/me").times(3));
    let e = api_err(c2.me().await.unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.code_is("CONFLICT_001"));
    assert_eq!(retries.lock().unwrap().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn retries_429_honouring_retry_after_and_5xx_with_backoff() {
    let sim = start_sim().await;
    let (c, retries) = client_for(&sim);

    sim.push_api_fault(ApiFault::rate_limited(3).on("GET", "/v3/me"));
    c.me().await.unwrap();
    {
        let r = retries.lock().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, Some(429));
        assert!(r[0].from_retry_after);
        assert_eq!(r[0].delay, std::time::Duration::from_secs(3));
    }
    retries.lock().unwrap().clear();

    sim.push_api_fault(ApiFault::status(503).on("GET", "/v3/templates").times(2));
    c.list_templates(&TemplateQuery::default()).await.unwrap();
    {
        let r = retries.lock().unwrap();
        assert_eq!(
            r.iter().map(|e| e.status).collect::<Vec<_>>(),
            [Some(503); 2]
        );
        assert!(r.iter().all(|e| !e.from_retry_after));
        // Exponential with 25 % jitter: 0.5 s then 1 s, each scaled into [0.75x, 1x].
        assert!(r[0].delay <= std::time::Duration::from_millis(500));
        assert!(r[0].delay >= std::time::Duration::from_millis(375));
        assert!(r[1].delay <= std::time::Duration::from_millis(1000));
        assert!(r[1].delay >= std::time::Duration::from_millis(750));
    }
    retries.lock().unwrap().clear();

    sim.push_api_fault(ApiFault::status(500).on("GET", "/v3/me").times(3));
    let e = api_err(c.me().await.unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Server);
    assert_eq!(retries.lock().unwrap().len(), 2, "max_retries = 2");

    // 4xx other than 408/409/429 are never retried.
    retries.lock().unwrap().clear();
    let _ = c.get_message("nope").await;
    assert!(retries.lock().unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn retried_send_is_never_sent_twice() {
    let sim = start_sim().await;
    let (c, retries) = client_for(&sim);
    // The first attempt is processed, then its response is lost (503).
    sim.push_api_fault(
        ApiFault::status(503)
            .on("POST", "/v3/messages")
            .after_processing(),
    );
    let out = c
        .send_message(&order_send(&["+14155551234", "+14155555678"], None), None)
        .await
        .unwrap();
    assert_eq!(retries.lock().unwrap().len(), 1);
    assert!(
        out.replayed,
        "second attempt answered from the idempotency cache"
    );
    assert_eq!(sim.message_count(), 2);
    let posts: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v3/messages")
        .collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].idempotency_key, posts[1].idempotency_key);
    assert_eq!(
        posts[0].idempotency_key.as_deref(),
        Some(out.idempotency_key.as_str())
    );

    // A caller-supplied key replays the first answer even for a different body.
    let key = IdempotencyKey::derive(&["action", "broadcast-1"]);
    let a = c
        .send_message(&order_send(&["+14155550009"], None), Some(key.clone()))
        .await
        .unwrap();
    let b = c
        .send_message(&order_send(&["+14155550010"], None), Some(key))
        .await
        .unwrap();
    assert!(!a.replayed && b.replayed);
    assert_eq!(a.response.recipients, b.response.recipients);
    assert_eq!(sim.message_count(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn connect_errors_are_retried_then_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let retries = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let sink = retries.clone();
    let mut cfg = ClientConfig::new(format!("http://{addr}"), ApiKey::new("k"));
    cfg.backoff_scale = 0.0;
    cfg.on_retry = Some(std::sync::Arc::new(move |e| {
        assert_eq!(e.status, None);
        *sink.lock().unwrap() += 1;
    }));
    let c = Client::new(cfg).unwrap();
    assert!(matches!(c.me().await, Err(Error::Connect(_))));
    assert_eq!(*retries.lock().unwrap(), 2);
}

#[tokio::test]
async fn sandbox_validates_without_side_effects() {
    let sim = start_sim().await;
    let rx = Receiver::start().await;
    let mut cfg = ClientConfig::new(sim.base_url(), ApiKey::new(sim.api_key()));
    cfg.sandbox = true;
    let c = Client::new(cfg).unwrap();
    let out = c
        .send_message(&order_send(&["+14155551234"], Some(&["sms"])), None)
        .await
        .unwrap();
    assert!(out.sandbox);
    assert_eq!(sim.message_count(), 0);
    let id = &out.response.recipients[0].message_id;
    assert!(c.get_message(id).await.unwrap_err().is_not_found());
    let w = c.create_webhook(&rx.webhook(None, 3), None).await.unwrap();
    assert!(w.signing_secret.is_some());
    assert!(c.list_all_webhooks().await.unwrap().is_empty());
    // Validation still applies in sandbox.
    assert!(
        c.send_message(&order_send(&["123"], None), None)
            .await
            .is_err()
    );
    sim.settle().await;
    assert!(sim.deliveries().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn simulator_rate_limits_and_client_limiter() {
    let sim = sim_builder().rate_limits(true).start().await.unwrap();
    let mut cfg = ClientConfig::new(sim.base_url(), ApiKey::new(sim.api_key()));
    cfg.rate_limit = None;
    cfg.max_retries = 0;
    let unlimited = Client::new(cfg).unwrap();
    let mut limited = None;
    for _ in 0..60 {
        if let Err(e) = unlimited.me().await {
            limited = Some(api_err(e));
            break;
        }
    }
    let e = limited.expect("burst of 50 exceeded");
    assert!(e.code_is("BUSINESS_002"));
    assert!(e.retry_after.is_some());

    // The client's own limiter keeps a burst within its bucket without ever seeing 429.
    let sim2 = sim_builder().rate_limits(true).start().await.unwrap();
    let mut cfg = ClientConfig::new(sim2.base_url(), ApiKey::new(sim2.api_key()));
    cfg.rate_limit = Some(RateLimit {
        per_minute: 200,
        burst: 50,
    });
    cfg.max_retries = 0;
    let c = Client::new(cfg).unwrap();
    for _ in 0..50 {
        c.me().await.unwrap();
    }
    sim.shutdown().await;
    sim2.shutdown().await;
}

#[tokio::test]
async fn pending_template_and_missing_parameters_surface_per_message() {
    let sim = start_sim().await;
    let (c, _) = client_for(&sim);
    let mut pending = order_send(&["+14155551234"], Some(&["sms"]));
    pending.template = Some(TemplateRef {
        id: Some(PROMO_PENDING_ID.into()),
        ..Default::default()
    });
    let out = c.send_message(&pending, None).await.unwrap();
    let mut missing = order_send(&["+14155551234"], Some(&["sms"]));
    if let Some(t) = missing.template.as_mut() {
        t.parameters.remove("order_id");
    }
    let out2 = c.send_message(&missing, None).await.unwrap();
    sim.settle().await;
    let m = c
        .get_message(&out.response.recipients[0].message_id)
        .await
        .unwrap();
    assert_eq!(m.status, Some(MessageStatus::Blocked));
    assert_eq!(m.reason_code.as_deref(), Some("BUSINESS_005"));
    let m = c
        .get_message(&out2.response.recipients[0].message_id)
        .await
        .unwrap();
    assert_eq!(m.status, Some(MessageStatus::Failed));
    assert_eq!(
        m.reason_code.as_deref(),
        Some("ERR_TEMPLATE_PARAMS_INVALID")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn organization_keys_act_as_their_profiles() {
    use sentdm_sim::{ORGANIZATION_ID, SimAccount};
    const PROFILE: &str = "a1b2c3d4-e5f6-4890-abcd-ef1234567890";
    const OTHER_ORG: &str = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
    const FOREIGN: &str = "b1b2c3d4-e5f6-4890-abcd-ef1234567890";
    let sim = sim_builder()
        .account(SimAccount::organization("org-key", ORGANIZATION_ID))
        .account(SimAccount::profile(
            Some("profile-key"),
            PROFILE,
            ORGANIZATION_ID,
        ))
        .account(SimAccount::organization("other-key", OTHER_ORG))
        .account(SimAccount::profile(None, FOREIGN, OTHER_ORG))
        .start()
        .await
        .unwrap();
    let client = |key: &str, profile: Option<&str>| {
        let mut cfg = ClientConfig::new(sim.base_url(), ApiKey::new(key));
        cfg.profile_id = profile.map(str::to_owned);
        Client::new(cfg).unwrap()
    };
    let org = client("org-key", None).me().await.unwrap();
    assert_eq!(org.kind.as_deref(), Some("organization"));
    assert_eq!(org.profiles.len(), 1);

    let as_profile = client("org-key", Some(PROFILE));
    let me = as_profile.me().await.unwrap();
    assert_eq!(me.kind.as_deref(), Some("profile"));
    assert_eq!(me.id.as_deref(), Some(PROFILE));
    assert_eq!(me.organization_id.as_deref(), Some(ORGANIZATION_ID));

    // Data is scoped to the profile: the org itself does not see the profile's webhook.
    let rx = Receiver::start().await;
    let w = as_profile
        .create_webhook(&rx.webhook(None, 3), None)
        .await
        .unwrap();
    assert_eq!(w.customer_id.as_deref(), Some(PROFILE));
    assert_eq!(
        client("profile-key", None)
            .list_all_webhooks()
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        client("org-key", None)
            .list_all_webhooks()
            .await
            .unwrap()
            .is_empty()
    );

    let e = api_err(client("profile-key", Some(PROFILE)).me().await.unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    let e = api_err(client("org-key", Some(FOREIGN)).me().await.unwrap_err());
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        Client::new({
            let mut cfg = ClientConfig::new(sim.base_url(), ApiKey::new("org-key"));
            cfg.profile_id = Some(String::new());
            cfg
        })
        .is_err()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let sim = start_sim().await;
    sim.set_faults(sentdm_sim::Faults {
        latency: std::time::Duration::from_millis(400),
        ..Default::default()
    });
    let count = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let sink = count.clone();
    let mut cfg = ClientConfig::new(sim.base_url(), ApiKey::new(sim.api_key()));
    cfg.backoff_scale = 0.0;
    cfg.max_retries = 1;
    cfg.timeout = std::time::Duration::from_millis(100);
    cfg.on_retry = Some(std::sync::Arc::new(move |e| {
        assert_eq!(e.status, None);
        *sink.lock().unwrap() += 1;
    }));
    let c = Client::new(cfg).unwrap();
    assert!(matches!(c.me().await, Err(Error::Timeout(_))));
    assert_eq!(*count.lock().unwrap(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn debug_of_client_and_config_never_prints_the_api_key() {
    let key = "sk_live_do-not-print-9f8e7d";
    let cfg = ClientConfig::new("http://127.0.0.1:9", ApiKey::new(key));
    let client = Client::new(cfg.clone()).unwrap();
    for printed in [
        format!("{cfg:?}"),
        format!("{cfg:#?}"),
        format!("{client:?}"),
        format!("{:?}", client.config().api_key),
    ] {
        assert!(!printed.contains(key), "{printed}");
        assert!(!printed.contains("do-not-print"), "{printed}");
    }
    // The key is still what goes on the wire.
    assert_eq!(client.config().api_key.expose(), key);
}
