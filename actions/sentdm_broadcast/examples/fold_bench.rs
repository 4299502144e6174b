//! Micro-benchmark of the fold alone (no HTTP): how many events per second
//! `store::apply_batch` applies in batches of a given size, with W writers in parallel
//! (each owning its own records, as the action's sharded writers do), on SurrealKV or
//! in memory. Complements `webhook_load` when looking for where the time goes.
//!
//! `cargo run --release -p graphagent-sentdm --example fold_bench -- surrealkv 64 20000 2 [nosub]`

use std::time::Instant;

use graphagent::{Graph, GraphOptions};
use graphagent_sentdm::record::LogEntry;
use graphagent_sentdm::store::{FoldEvent, FoldScope, SCHEMA, apply_batch};
use serde_json::json;

/// Event `i` of `messages` messages: five statuses per message, interleaved.
fn event(i: usize, messages: usize) -> FoldEvent {
    let m = i % messages;
    let status = ["queued", "routed", "sent", "delivered", "read"][(i / messages) % 5];
    FoldEvent {
        key: format!("k{i}"),
        rid: format!("a_m{m}"),
        message_id: format!("m{m}"),
        create_if_missing: true,
        status: Some(sentdm_client::model::MessageStatus::parse(status)),
        t_ms: Some(i as i64),
        occurred_at: Some("2026-05-14T18:49:20Z".into()),
        error: None,
        entry: LogEntry {
            source: "webhook".into(),
            status: Some(status.to_uppercase()),
            occurred_at: Some("2026-05-14T18:49:20Z".into()),
            ..LogEntry::default()
        },
        payload: json!({"message_id": format!("m{m}"), "message_status": status}),
        to: Some("+14155550100".into()),
        channel: Some("sms".into()),
        template_id: None,
        template_name: None,
        outbox: Some(
            json!({"event_type": "sentdm.message.sent", "data": {"message_id": format!("m{m}")}}),
        ),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let engine = args.next().unwrap_or_else(|| "mem".into());
    let batch: usize = args
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
        .max(1);
    let total: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let writers: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = if engine == "surrealkv" {
        format!("surrealkv://{}", dir.path().join("g").display())
    } else {
        "mem://".into()
    };
    let graph = Graph::connect(&url, &GraphOptions::default())
        .await
        .expect("graph");
    graph.apply_schema("sentdm", SCHEMA).await.expect("schema");
    // With an enabled subscription (the default) every status change also writes its
    // outbound event; `nosub` measures the fold without them.
    let subscribed = args.next().as_deref() != Some("nosub");
    graph
        .query(
            "DEFINE TABLE IF NOT EXISTS outbox_event SCHEMALESS;
             DEFINE TABLE IF NOT EXISTS webhook_subscription SCHEMALESS;
             IF $subscribed { CREATE webhook_subscription:bench SET enabled = true };",
            json!({ "subscribed": subscribed }),
        )
        .await
        .expect("schema");
    let scope = FoldScope {
        action_id: "a".into(),
        agent_id: "g".into(),
        limit: 25,
    };
    let messages = (total / 5).max(1);
    // Writer w owns the messages m with m % writers == w, like the action's shards.
    let mut shards: Vec<Vec<FoldEvent>> = vec![Vec::new(); writers];
    for i in 0..total {
        shards[(i % messages) % writers].push(event(i, messages));
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = shards
        .into_iter()
        .map(|events| {
            let (graph, scope) = (graph.clone(), scope.clone());
            tokio::spawn(async move {
                for chunk in events.chunks(batch) {
                    apply_batch(&graph, &scope, chunk).await.expect("batch");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let took = t0.elapsed();
    let applied: Vec<serde_json::Value> = graph
        .query(
            "RETURN math::sum(SELECT VALUE event_count FROM sentdm_message);",
            serde_json::Value::Null,
        )
        .await
        .expect("count");
    println!(
        "{engine}: {total} events, {writers} writer(s), batches of {batch}: {:.2} s = {:.0} events/s; applied {}",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        applied[0]
    );
}
