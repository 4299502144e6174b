//! Times one large `send_broadcast` against an already running server over HTTP: log in,
//! send R recipients × channels, time the answer, then poll until every record is in the
//! graph (`--no-records`: the answer only). Prints one JSON line. Commands and numbers: docs/BENCHMARKS.md, "Sends".
//!
//! `cargo run --release -p graphagent-app --example send_bench -- --server http://127.0.0.1:8000
//!  --recipients 10000 --channels sms,whatsapp --email admin@example.com --password …`

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the running server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    server: String,
    /// Recipients (distinct E.164 numbers are generated; at most 10,000).
    #[arg(long, default_value_t = 10_000)]
    recipients: usize,
    /// Channels, comma-separated.
    #[arg(long, default_value = "sms,whatsapp", value_delimiter = ',')]
    channels: Vec<String>,
    /// Admin email.
    #[arg(long, env = "GRAPHAGENT_ADMIN_EMAIL")]
    email: String,
    /// Admin password.
    #[arg(long, env = "GRAPHAGENT_ADMIN_PASSWORD")]
    password: String,
    /// The SentDM action's id (default: the server's first `sentdm_broadcast` action).
    #[arg(long)]
    action_id: Option<String>,
    /// Template name at SentDM.
    #[arg(long, default_value = "order_confirmation")]
    template: String,
    /// The action keeps no records (`persist_records: false`): time the answer only.
    #[arg(long)]
    no_records: bool,
    /// Give up waiting for the records after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()?;
    let base = args.server.trim_end_matches('/');
    let login: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": args.email, "password": args.password }))
        .send()
        .await?
        .error_for_status()
        .context("login")?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .context("no access_token in the login answer")?
        .to_owned();
    let get = |path: String| {
        let req = http.get(format!("{base}{path}")).bearer_auth(&token);
        async move {
            let v: Value = req.send().await?.error_for_status()?.json().await?;
            anyhow::Ok(v)
        }
    };
    let action = match args.action_id.clone() {
        Some(id) => id,
        None => {
            find_action(&get(String::from("/api/agents")).await?, |id| {
                get(format!("/api/actions/{id}"))
            })
            .await?
        }
    };

    // Distinct numbers, none ending in the simulator's failure suffixes 0001..0005.
    let to: Vec<String> = (0..args.recipients)
        .map(|i| format!("+1415{:07}", 1_000_000 + i))
        .collect();
    let key = format!("send-bench-{}", std::process::id());
    let body = json!({
        "to": to, "channels": args.channels, "idempotency_key": key,
        "template": {"name": args.template, "parameters": {"name": "Bench", "order_id": "1"}},
    });
    let start = Instant::now();
    let answer = http
        .post(format!("{base}/api/actions/{action}/sentdm/broadcast"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await?;
    let status = answer.status();
    let result: Value = answer.json().await?;
    let answered = start.elapsed();
    if !status.is_success() {
        bail!("send_broadcast answered {status}: {result}");
    }
    let messages = result["messages"].as_array().map_or(0, Vec::len);
    let broadcast = result["broadcast_id"].as_str().unwrap_or_default();
    // Records visible through the records list, filtered by this broadcast.
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let mut stored = 0;
    while !args.no_records && Instant::now() < deadline {
        let page = get(format!(
            "/api/actions/{action}/sentdm/broadcasts?broadcast_id={broadcast}&page_size=1"
        ))
        .await?;
        stored = page["total"].as_u64().unwrap_or(0) as usize;
        if stored >= messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let persisted = start.elapsed();
    println!(
        "{}",
        json!({
            "recipients": args.recipients, "channels": args.channels, "messages": messages,
            "requests": result["requests"].as_array().map_or(0, Vec::len),
            "answer_s": answered.as_secs_f64(), "all_records_s": persisted.as_secs_f64(),
            "records": stored, "persisted": result["persisted"],
        })
    );
    if !args.no_records && stored < messages {
        bail!("only {stored} of {messages} records after {persisted:?}");
    }
    Ok(())
}

/// The first action of type `sentdm_broadcast` among the agents' actions.
async fn find_action<F, Fut>(agents: &Value, detail: F) -> anyhow::Result<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let ids = agents
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["action_ids"].as_array().into_iter().flatten())
        .filter_map(Value::as_str);
    for id in ids {
        if detail(id.to_owned()).await?["type_name"] == "sentdm_broadcast" {
            return Ok(id.to_owned());
        }
    }
    bail!("no sentdm_broadcast action on this server; pass --action-id")
}
