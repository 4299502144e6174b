//! Micro-benchmark of the fold statement alone (no HTTP): how many events per second the
//! graph applies with `fn::sentdm_apply` in batches of a given size, on SurrealKV or in
//! memory. Complements `webhook_load` when looking for where the time goes.
//!
//! `cargo run --release -p graphagent-sentdm --example fold_bench -- surrealkv 64 20000`

use std::time::Instant;

use graphagent::{Graph, GraphOptions};
use graphagent_sentdm::action::store::{SCHEMA, apply_batch};
use serde_json::{Value, json};

fn event(i: usize, messages: usize) -> Value {
    let m = i % messages;
    let status = ["queued", "sent", "delivered", "read", "routed"][i % 5];
    json!({
        "key": format!("k{i}"), "rid": format!("a_m{m}"), "action_id": "a", "agent_id": "g",
        "message_id": format!("m{m}"), "create_if_missing": true, "to": "+14155550100", "channel": "sms",
        "status": status, "t_ms": i as i64, "occurred_at": "2026-05-14T18:49:20Z",
        "entry": {"source": "webhook", "status": status.to_uppercase(), "occurred_at": "2026-05-14T18:49:20Z"},
        "limit": 25, "field": "message", "payload": {"message_id": format!("m{m}"), "message_status": status},
        "source": "webhook",
    })
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let engine = args.next().unwrap_or_else(|| "mem".into());
    let batch: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(64);
    let total: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = if engine == "surrealkv" {
        format!("surrealkv://{}", dir.path().join("g").display())
    } else {
        "mem://".into()
    };
    let graph = Graph::connect(&url, &GraphOptions::default())
        .await
        .expect("graph");
    // FOLD_SCHEMA=path tries another schema without rebuilding.
    let schema = std::env::var("FOLD_SCHEMA")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| SCHEMA.to_owned());
    graph.apply_schema("sentdm", &schema).await.expect("schema");
    graph
        .apply_schema(
            "outbox",
            "DEFINE TABLE IF NOT EXISTS outbox_event SCHEMALESS;",
        )
        .await
        .expect("schema");
    let messages = total / 5;
    let events: Vec<Value> = (0..total).map(|i| event(i, messages)).collect();
    let t0 = Instant::now();
    // FOLD_QUERY=… runs another batch statement (binding $events) instead of the action's.
    let custom = std::env::var("FOLD_QUERY").ok();
    for chunk in events.chunks(batch) {
        match &custom {
            Some(q) => {
                graph
                    .transaction(q, json!({"events": chunk}))
                    .await
                    .expect("custom batch");
            }
            None => {
                apply_batch(&graph, chunk).await.expect("batch");
            }
        }
    }
    let took = t0.elapsed();
    println!(
        "{engine}: {total} events in batches of {batch}: {:.2} s = {:.0} events/s ({:.3} ms per batch)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / (total / batch).max(1) as f64
    );
}
