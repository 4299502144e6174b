//! Agent code calling the SentDM action from Rust: `send_broadcast` and the reply stream,
//! against the local simulator. Run: `cargo run -p graphagent-app --example send_from_agent`

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use graphagent::{HostBuilder, Settings};
use graphagent_sentdm::TemplateInput;
use graphagent_sentdm::store::RecordFilter;
use graphagent_sentdm::{BroadcastRequest, SentDmBroadcast};
use sentdm_client::client::{ApiKey, Client, ClientConfig};
use sentdm_client::model::MessageStatus;
use sentdm_sim::{SimHandle, Simulator};
use serde_json::json;
use tokio::sync::oneshot;

const AGENT: &str = "acme/notifier";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. A SentDM stand-in: the simulator, real clock, 200 ms between status steps.
    let sim = Simulator::builder()
        .api_key("example-key")
        .seed(3)
        .step_delay(Duration::from_millis(200))
        .start()
        .await?;

    // 2. The host, as a server would run it: agent.yaml, a graph, a public URL for the
    //    webhook SentDM calls, and a JWT secret (the webhook's key derives from it).
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "agent: {AGENT}\nactions:\n  - action: sentdm_broadcast\n    name: sentdm\n    context:\n      api_base: {}\n      api_key: {}\n      sweep_interval_seconds: 0\n",
            sim.base_url(),
            sim.api_key()
        ),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let mut settings = Settings {
        config_path: Some(config),
        graph_url: "mem://".into(),
        public_base_url: Some(base),
        ..Settings::default()
    };
    settings.auth.jwt_secret = Some("example-only-secret-example-only-secret".into());
    let host = HostBuilder::new()
        .action::<SentDmBroadcast>()
        .settings(settings)
        .build()
        .await?;

    // 3. Agent code: typed access to the agent's SentDM action.
    let sentdm = host
        .agent(AGENT)
        .and_then(|agent| agent.action::<SentDmBroadcast>())
        .context("no SentDM action on the agent")?;

    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(host.serve(listener, async move {
        let _ = stopped.await;
    }));

    // Replies (`message.received`) reach agent code as a stream.
    let mut replies = sentdm.subscribe_replies();
    let listener_task = tokio::spawn(async move {
        while let Ok(reply) = replies.recv().await {
            println!(
                "reply from {}: {:?} (in answer to {})",
                reply.from.as_deref().unwrap_or("?"),
                reply.text.as_deref().unwrap_or(""),
                reply.in_reply_to.as_deref().unwrap_or("an unknown message"),
            );
        }
    });

    let result = sentdm
        .send_broadcast(BroadcastRequest {
            to: vec!["+14155550100".into(), "+14155550001".into()],
            template: Some(TemplateInput {
                id: None,
                name: Some("order_confirmation".into()),
                parameters: BTreeMap::from([
                    ("name".into(), "Jane".into()),
                    ("order_id".into(), "12345".into()),
                ]),
            }),
            channels: Some(vec!["whatsapp".into()]),
            idempotency_key: Some("order-12345-confirmation".into()),
            ..BroadcastRequest::default()
        })
        .await?;
    println!(
        "broadcast {}: {} ({} message(s))",
        result.broadcast_id,
        result.status,
        result.messages.len()
    );
    for m in &result.messages {
        println!(
            "  {} {} -> message {}",
            m.to,
            m.channel.as_deref().unwrap_or("-"),
            m.message_id
        );
    }

    // Delivery statuses arrive by webhook and are folded into the records.
    let filter = RecordFilter {
        broadcast_id: Some(result.broadcast_id.clone()),
        paging: graphagent::plugin::Paging {
            page: 1,
            page_size: 100,
        },
        ..RecordFilter::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (records, _) = sentdm.list_records(&filter).await?;
        let done = records
            .iter()
            .all(|r| r.status.as_ref().is_some_and(MessageStatus::is_terminal));
        if done || tokio::time::Instant::now() >= deadline {
            for r in &records {
                println!(
                    "  {} is {}",
                    r.to.as_deref().unwrap_or("-"),
                    r.status.as_ref().map_or("-", MessageStatus::lowercase)
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The simulator does not model inbound messages, so deliver one customer reply the
    // way SentDM would: to the registered webhook URL, signed with its secret.
    reply_as_sentdm(&sim, "+14155550100", "Thanks, got it!").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    listener_task.abort();
    drop(sentdm);
    let _ = stop.send(());
    server.await??;
    sim.shutdown().await;
    Ok(())
}

/// POST a signed `message.received` event to the webhook registered at the simulator.
async fn reply_as_sentdm(sim: &SimHandle, from: &str, text: &str) -> anyhow::Result<()> {
    let client = Client::new(ClientConfig::new(
        sim.base_url(),
        ApiKey::new(sim.api_key().to_owned()),
    ))?;
    let webhook = client
        .list_all_webhooks()
        .await?
        .into_iter()
        .next()
        .context("no webhook registered")?;
    let secret = sim
        .webhook_secret(&webhook.id)
        .context("no secret for the webhook")?;
    let secret = sentdm_client::signing::SigningSecret::parse(&secret)?;
    let body = json!({
        "field": "message", "sub_type": "message.received",
        "timestamp": time_now(),
        "payload": {"message_id": "inbound-1", "inbound_number": from,
                    "outbound_number": "+14155550999", "channel": "whatsapp", "text": text},
    })
    .to_string();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let res = reqwest::Client::new()
        .post(&webhook.endpoint_url)
        .header("content-type", "application/json")
        .header("x-webhook-id", &webhook.id)
        .header("x-webhook-timestamp", ts.to_string())
        .header(
            "x-webhook-signature",
            secret.sign(&webhook.id, ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("the webhook answered {}", res.status());
    }
    Ok(())
}

fn time_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
