//! `graphagent demo`: SentDM with no account. Starts the local SentDM simulator and a host
//! in this process, sends a broadcast and prints each record's status as webhooks arrive.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use graphagent::{HostBuilder, Settings};
use graphagent_sentdm::TemplateInput;
use graphagent_sentdm::record::MessageRecord;
use graphagent_sentdm::store::RecordFilter;
use graphagent_sentdm::{BroadcastRequest, SentDmBroadcast};
use rand::distr::{Alphanumeric, SampleString};
use sentdm_sim::Simulator;
use tokio::sync::oneshot;

use crate::sentdm_cli::{is_final, timeline};

/// The agent the demo declares.
const AGENT: &str = "demo/notifier";

/// `graphagent demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Give up waiting for final statuses after this many seconds.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    /// Simulated time between two status steps of a message, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub step_delay_ms: u64,
    /// Seed of the simulator (ids, secrets).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Recipients: the simulator decides outcomes by a number's last four digits.
const RECIPIENTS: &[(&str, &str)] = &[
    ("+14155550100", "delivered (and read on whatsapp)"),
    ("+14155550123", "delivered (and read on whatsapp)"),
    ("+14155550001", "fails after sent (DELIVERY_007)"),
];
const CHANNELS: &[&str] = &["sms", "whatsapp"];

fn agent_yaml(api_base: &str, api_key: &str) -> String {
    format!(
        "agent: {AGENT}
actions:
  - action: sentdm_broadcast
    name: sentdm
    context:
      api_base: {api_base}
      api_key: {api_key}
      default_channels: [sms]
      default_template_name: order_confirmation
      # every status, so the timelines are complete
      webhook_event_filters: {{}}
      sweep_interval_seconds: 0
"
    )
}

/// Run the demo; errors end it with exit 1.
pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("graphagent demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let api_key = format!("sim_{}", Alphanumeric.sample_string(&mut rand::rng(), 24));
    let sim = Simulator::builder()
        .api_key(api_key.clone())
        .seed(args.seed)
        .step_delay(Duration::from_millis(args.step_delay_ms))
        .retry_scale(0.25)
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("simulator: {e}"))?;

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, agent_yaml(&sim.base_url(), &api_key))?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let mut settings = Settings {
        config_path: Some(config),
        bind: addr,
        graph_url: "mem://".into(),
        public_base_url: Some(base.clone()),
        ..Settings::default()
    };
    settings.auth.jwt_secret = Some(Alphanumeric.sample_string(&mut rand::rng(), 48).into());

    println!("SentDM simulator   {}", sim.base_url());
    println!("graphagent         {base} (graph in memory, agent {AGENT})");
    let host = HostBuilder::new()
        .action::<SentDmBroadcast>()
        .settings(settings)
        .build()
        .await?;
    let action = host
        .agent(AGENT)
        .and_then(|a| a.action::<SentDmBroadcast>())
        .ok_or_else(|| anyhow::anyhow!("the demo agent has no SentDM action"))?;
    let health = action.healthcheck().await;
    match &health.last_reconcile {
        Some(r) => println!(
            "webhook            {} ({})",
            r.outcome,
            health.webhook_url.as_deref().unwrap_or("-")
        ),
        None => println!("webhook            not reconciled"),
    }
    if !health.webhook_registered {
        anyhow::bail!("the webhook was not registered at the simulator");
    }

    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(host.serve(listener, async move {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    let outcome = watch(&action, &args, started).await;

    let _ = stop.send(());
    drop(action);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("graphagent demo: server: {e}"),
        Err(e) => eprintln!("graphagent demo: server task: {e}"),
    }
    sim.shutdown().await;
    outcome
}

/// Send, then print status changes until every record is final or time is up.
async fn watch(
    action: &SentDmBroadcast,
    args: &DemoArgs,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    println!("\nRecipients (the simulator decides by the last four digits):");
    for (to, fate) in RECIPIENTS {
        println!("  {to}  {fate}");
    }
    let result = action
        .send_broadcast(BroadcastRequest {
            to: RECIPIENTS.iter().map(|(to, _)| (*to).to_owned()).collect(),
            template: Some(TemplateInput {
                id: None,
                name: Some("order_confirmation".into()),
                parameters: BTreeMap::from([
                    ("name".to_owned(), "Jane".to_owned()),
                    ("order_id".to_owned(), "1042".to_owned()),
                ]),
            }),
            channels: Some(CHANNELS.iter().map(|c| (*c).to_owned()).collect()),
            ..BroadcastRequest::default()
        })
        .await?;
    println!(
        "\nsend_broadcast: {} {}, {} message(s) on {}; {} record(s) stored\n",
        result.broadcast_id,
        result.status,
        result.messages.len(),
        CHANNELS.join(" + "),
        result.persisted.records
    );
    if !result.persisted.ok {
        anyhow::bail!(
            "records were not stored: {}",
            result.persisted.error.unwrap_or_default()
        );
    }

    let filter = RecordFilter {
        broadcast_id: Some(result.broadcast_id.clone()),
        paging: graphagent::plugin::Paging {
            page: 1,
            page_size: 100,
        },
        ..RecordFilter::default()
    };
    let deadline = started + Duration::from_secs(args.timeout);
    let mut shown: HashMap<String, usize> = HashMap::new();
    let mut records: Vec<MessageRecord>;
    loop {
        records = action.list_records(&filter).await?.0;
        records.sort_by(|a, b| (&a.to, &a.channel).cmp(&(&b.to, &b.channel)));
        for r in &records {
            let steps = timeline(r);
            let seen = shown.entry(r.id.clone()).or_default();
            // `accepted` is the send itself, reported above.
            for status in steps.iter().skip(*seen).filter(|s| *s != "accepted") {
                println!(
                    "  {:>5.1}s  {:<13} {:<9} {status}",
                    started.elapsed().as_secs_f64(),
                    r.to.as_deref().unwrap_or("-"),
                    r.channel.as_deref().unwrap_or("-"),
                );
            }
            *seen = (*seen).max(steps.len());
        }
        let all_final = records.len() == result.messages.len() && records.iter().all(is_final);
        if all_final || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("\nStatus timelines:");
    for r in &records {
        let mut line = timeline(r).join(" → ");
        if let Some(code) = r.error.as_ref().and_then(|e| e.code.as_deref()) {
            line.push_str(&format!("  ({code})"));
        }
        println!(
            "  {:<13} {:<9} {line}",
            r.to.as_deref().unwrap_or("-"),
            r.channel.as_deref().unwrap_or("-"),
        );
    }
    let done = records.iter().filter(|r| is_final(r)).count();
    let webhooks = records.iter().any(|r| timeline(r).len() > 1);
    if done == result.messages.len() {
        println!(
            "\nAll {done} record(s) final after {:.1}s. Next: `graphagent serve` with \
             SENTDM_API_KEY, then `graphagent sentdm --help`.",
            started.elapsed().as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    } else if webhooks {
        println!(
            "\n{done} of {} record(s) final after {}s (--timeout); the rest are still moving.",
            result.messages.len(),
            args.timeout
        );
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "no delivery webhook arrived within {}s; the records only show the send",
            args.timeout
        )
    }
}
