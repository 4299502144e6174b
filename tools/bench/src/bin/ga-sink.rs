//! `ga-sink`: an outbound-webhook subscriber for benchmarks. Answers every POST 200 at
//! once and counts, per subscriber (the request path), arrivals, duplicates by
//! `webhook-id`, and the lag from the event's creation (the envelope's `timestamp`, the
//! outbox row's creation time) to its first arrival.
//!
//! `GET /stats` returns the summary as JSON, `POST /reset` starts afresh
//! (`?since_us=T`: deliveries of events created before T, Unix microseconds, are only
//! counted as `earlier`, so a run's window starts with its own events); on Ctrl-C or
//! SIGTERM the summary is printed (and written to `--summary`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use clap::Parser;
use graphagent_bench::Percentiles;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "A webhook subscriber that reports arrival rate, lag and duplicates")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9900")]
    bind: SocketAddr,
    /// Also write the final summary here (JSON) on shutdown.
    #[arg(long)]
    summary: Option<PathBuf>,
}

#[derive(Default)]
struct Counts {
    /// (subscriber path, webhook-id) seen.
    seen: HashSet<(String, String)>,
    per_path: HashMap<String, usize>,
    requests: usize,
    duplicates: usize,
    /// Requests without a `webhook-id` or with an envelope whose timestamp is unreadable.
    malformed: usize,
    lag_us: Vec<u64>,
    /// Distinct deliveries per envelope `type`.
    types: HashMap<String, usize>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Events created before this (Unix µs) are not the run's: counted in `earlier` only.
    since_us: Option<i64>,
    earlier: usize,
}

#[derive(Serialize)]
struct Summary {
    /// Requests received, duplicates included.
    requests: usize,
    /// Distinct (subscriber, webhook-id) pairs.
    unique: usize,
    duplicates: usize,
    malformed: usize,
    /// Deliveries of events created before the reset's `since_us` (not counted above).
    earlier: usize,
    /// Distinct deliveries per subscriber path.
    per_subscriber: HashMap<String, usize>,
    /// Seconds from the first to the last arrival.
    window_s: f64,
    /// Distinct deliveries per second over that window.
    rate_per_s: f64,
    /// Distinct deliveries per envelope `type`.
    types: HashMap<String, usize>,
    /// Event creation → first arrival.
    lag: Percentiles,
}

type Shared = Arc<Mutex<Counts>>;

fn summary(counts: &Counts) -> Summary {
    let window_s = match (counts.first, counts.last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let unique = counts.seen.len();
    Summary {
        requests: counts.requests,
        unique,
        duplicates: counts.duplicates,
        malformed: counts.malformed,
        earlier: counts.earlier,
        per_subscriber: counts.per_path.clone(),
        window_s,
        rate_per_s: if window_s > 0.0 {
            unique as f64 / window_s
        } else {
            0.0
        },
        types: counts.types.clone(),
        lag: Percentiles::of_micros(&mut counts.lag_us.clone()),
    }
}

/// When the envelope says the event was created, in Unix microseconds, and its `type`.
fn envelope_created_and_type(body: &[u8]) -> Option<(i128, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let kind = v
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("?")
        .to_owned();
    let ts = v.get("timestamp")?.as_str()?;
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1000, kind))
}

async fn receive(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now_us = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let created = envelope_created_and_type(&body);
    let Ok(mut c) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    if let (Some(since), Some((created, _))) = (c.since_us, &created)
        && *created < i128::from(since)
    {
        c.earlier += 1;
        return StatusCode::OK;
    }
    let now = Instant::now();
    c.requests += 1;
    c.first.get_or_insert(now);
    c.last = Some(now);
    let (Some(id), Some((created, kind))) = (id, created) else {
        c.malformed += 1;
        return StatusCode::OK;
    };
    let path = uri.path().to_owned();
    if c.seen.insert((path.clone(), id)) {
        *c.per_path.entry(path).or_default() += 1;
        *c.types.entry(kind).or_default() += 1;
        c.lag_us
            .push(u64::try_from(now_us.saturating_sub(created)).unwrap_or(0));
    } else {
        c.duplicates += 1;
    }
    StatusCode::OK
}

async fn stats(State(shared): State<Shared>) -> Result<Json<Summary>, StatusCode> {
    let c = shared
        .lock()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(summary(&c)))
}

#[derive(serde::Deserialize)]
struct ResetQuery {
    since_us: Option<i64>,
}

async fn reset(State(shared): State<Shared>, Query(q): Query<ResetQuery>) -> StatusCode {
    match shared.lock() {
        Ok(mut c) => {
            *c = Counts {
                since_us: q.since_us,
                ..Counts::default()
            };
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .fallback(post(receive))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    eprintln!("ga-sink listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    let text = {
        let c = shared
            .lock()
            .map_err(|_| anyhow::anyhow!("counter lock poisoned"))?;
        serde_json::to_string_pretty(&summary(&c))?
    };
    println!("{text}");
    if let Some(path) = args.summary {
        std::fs::write(path, text)?;
    }
    Ok(())
}
