//! `sentdm-sim`: run the local SentDM v3 simulator as a standalone server.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sentdm_sim::{Faults, ORGANIZATION_ID, SimAccount, SimConfig, Simulator, SubtypeKey};

/// A local SentDM v3 simulator: same paths, auth, validation and envelopes as
/// api.sent.dm, an in-memory store, and real signed status webhooks.
///
/// Recipient numbers ending in 0001..0005 pick failure paths (failed, blocked, filtered,
/// no receipt, late failure). Control endpoints live under /_sim (no auth): advance the
/// clock, force statuses, list deliveries, set faults, reset.
#[derive(Debug, Parser)]
#[command(name = "sentdm-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787", env = "SENTDM_SIM_BIND")]
    bind: SocketAddr,

    /// API key clients must send in `x-api-key`.
    #[arg(long, default_value = "test-key", env = "SENTDM_SIM_API_KEY")]
    api_key: String,

    /// Seed for ids, secrets and random fault decisions (omit for a random seed).
    #[arg(long)]
    seed: Option<u64>,

    /// Virtual time between message status steps, in milliseconds.
    #[arg(long, default_value_t = 200)]
    step_delay_ms: u64,

    /// Only move time through `POST /_sim/advance`; due work runs on `POST /_sim/settle`
    /// or when the clock is advanced.
    #[arg(long)]
    manual_clock: bool,

    /// Do not emit READ after DELIVERED on whatsapp/rcs.
    #[arg(long)]
    no_read_receipts: bool,

    /// Multiplier for the webhook retry backoff (1, 2, 4, 8, 16 s); 0 retries at once.
    #[arg(long, default_value_t = 1.0)]
    retry_scale: f64,

    /// Which envelope key carries the sub-type.
    #[arg(long, value_enum, default_value_t = SubtypeArg::SubType)]
    subtype_key: SubtypeArg,

    /// Do not send the `X-Webhook-Event-ID` header.
    #[arg(long)]
    no_event_id_header: bool,

    /// Do not send the `x-webhook-event-type` header.
    #[arg(long)]
    no_event_type_header: bool,

    /// Send real channel and number on `message.queued` instead of "unknown".
    #[arg(long)]
    no_early_unknown_fields: bool,

    /// Enforce SentDM's rate limits (200/min burst 50; 10/min burst 5 for
    /// rotate-secret and test).
    #[arg(long)]
    rate_limits: bool,

    /// Return `signing_secret` on webhook list/get/toggle as well.
    #[arg(long)]
    signing_secret_in_reads: bool,

    /// Accept `http://` webhook URLs on any host (default: only on loopback).
    #[arg(long)]
    allow_http_webhooks: bool,

    /// Cap every webhook delivery timeout at this many milliseconds.
    #[arg(long)]
    delivery_timeout_cap_ms: Option<u64>,

    /// Consecutive failed events before a webhook is auto-disabled.
    #[arg(long, default_value_t = 10)]
    auto_disable_after: u32,

    /// Also accept this key for an organization account (id `sim::ORGANIZATION_ID`), which
    /// may send `x-profile-id` for its profiles.
    #[arg(long)]
    org_api_key: Option<String>,

    /// Child profile UUID of the organization (repeatable; requires --org-api-key).
    #[arg(long = "org-profile", requires = "org_api_key")]
    org_profiles: Vec<String>,

    /// Fault: deliver every webhook event twice.
    #[arg(long)]
    fault_duplicate: bool,

    /// Fault: deliver each message's events in a shuffled order.
    #[arg(long)]
    fault_reorder: bool,

    /// Fault: probability (0..1) that a webhook event is never delivered.
    #[arg(long, default_value_t = 0.0)]
    fault_drop_rate: f64,

    /// Fault: always drop this event type (repeatable), e.g. `message.delivered`.
    #[arg(long = "fault-drop-sub-type")]
    fault_drop_sub_types: Vec<String>,

    /// Fault: probability (0..1) that a delivery attempt carries a bad signature.
    #[arg(long, default_value_t = 0.0)]
    fault_bad_signature_rate: f64,

    /// Fault: added latency on every /v3 request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    fault_latency_ms: u64,

    /// Fault: probability (0..1) that a /v3 request is answered 503.
    #[arg(long, default_value_t = 0.0)]
    fault_api_error_rate: f64,

    /// Fault: probability (0..1) that a /v3 request is answered 429.
    #[arg(long, default_value_t = 0.0)]
    fault_api_rate_limit_rate: f64,

    /// `Retry-After` seconds sent with injected 429s.
    #[arg(long, default_value_t = 1)]
    fault_retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SubtypeArg {
    SubType,
    Event,
    Both,
}

fn unit(name: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!((0.0..=1.0).contains(&v), "--{name} must be between 0 and 1");
    Ok(v)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let a = Args::parse();
    anyhow::ensure!(a.retry_scale >= 0.0, "--retry-scale must not be negative");
    let mut extra_accounts = Vec::new();
    if let Some(key) = &a.org_api_key {
        extra_accounts.push(SimAccount::organization(key, ORGANIZATION_ID));
        for p in &a.org_profiles {
            anyhow::ensure!(
                p.parse::<uuid::Uuid>().is_ok(),
                "--org-profile {p} is not a UUID"
            );
            extra_accounts.push(SimAccount::profile(None, p, ORGANIZATION_ID));
        }
    }
    let cfg = SimConfig {
        api_key: a.api_key,
        seed: a.seed,
        step_delay: Duration::from_millis(a.step_delay_ms),
        manual_clock: a.manual_clock,
        start_ms: None,
        read_receipts: !a.no_read_receipts,
        retry_scale: a.retry_scale,
        subtype_key: match a.subtype_key {
            SubtypeArg::SubType => SubtypeKey::SubType,
            SubtypeArg::Event => SubtypeKey::Event,
            SubtypeArg::Both => SubtypeKey::Both,
        },
        emit_event_id_header: !a.no_event_id_header,
        emit_event_type_header: !a.no_event_type_header,
        early_unknown_fields: !a.no_early_unknown_fields,
        rate_limits: a.rate_limits,
        signing_secret_in_reads: a.signing_secret_in_reads,
        allow_http_webhooks: a.allow_http_webhooks,
        delivery_timeout_cap: a.delivery_timeout_cap_ms.map(Duration::from_millis),
        auto_disable_after: a.auto_disable_after.max(1),
        faults: Faults {
            duplicate: a.fault_duplicate,
            reorder: a.fault_reorder,
            drop_rate: unit("fault-drop-rate", a.fault_drop_rate)?,
            drop_sub_types: a.fault_drop_sub_types,
            bad_signature_rate: unit("fault-bad-signature-rate", a.fault_bad_signature_rate)?,
            latency: Duration::from_millis(a.fault_latency_ms),
            api_error_rate: unit("fault-api-error-rate", a.fault_api_error_rate)?,
            api_rate_limit_rate: unit("fault-api-rate-limit-rate", a.fault_api_rate_limit_rate)?,
            retry_after_secs: a.fault_retry_after_secs,
        },
        extra_accounts,
    };
    let sim = Simulator::builder()
        .config(cfg)
        .bind(a.bind)
        .start()
        .await?;
    tracing::info!(base_url = %sim.base_url(), "SentDM simulator listening");
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
