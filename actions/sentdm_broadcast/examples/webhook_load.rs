//! Load generator for the webhook receiver (the hot path): starts the host with one SentDM
//! action (its webhook registered at the simulator), then posts real signed SentDM events
//! over loopback HTTP from N concurrent connections and reports events folded per
//! second, latency percentiles, and whether every event landed exactly once.
//!
//! ```text
//! cargo run --release -p graphagent-sentdm --example webhook_load -- \
//!     --events 100000 --messages 20000 --concurrency 64 --graph surrealkv
//! ```
//!
//! `--baseline` also measures, in the same run, a receiver that only verifies the
//! signature and parses JSON (the ceiling set by HTTP and crypto).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use graphagent::{Graph, HostBuilder, Settings};
use graphagent_sentdm::SentDmBroadcast;
use sentdm_client::signing::{SignedParts, SigningSecret};
use sentdm_sim::Simulator;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Load the SentDM webhook receiver with signed events")]
struct Args {
    /// Events to post in the measured run.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Distinct messages the events are spread over (events per message = events/messages).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Graph: `surrealkv` (embedded, on disk, in a temp dir) or `mem`.
    #[arg(long, default_value = "surrealkv")]
    graph: String,
    /// Events posted before measuring (not counted).
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Also measure a verify-only receiver (HTTP + HMAC + JSON parse ceiling).
    #[arg(long)]
    baseline: bool,
    /// Also time one broadcast to this many recipients on sms + whatsapp (sends through
    /// the simulator, records persisted in batches); 0 = skip.
    #[arg(long, default_value_t = 0)]
    broadcast: usize,
    /// Enable one outbound-webhook subscription first, so that every status change also
    /// writes its outbound event (the outbox is only written while someone subscribes).
    /// It listens for `webhook.test` only, so nothing is delivered during the run.
    #[arg(long)]
    subscribed: bool,
    /// The action's `fold_writers` (1-64); one per core when not given.
    #[arg(long)]
    fold_writers: Option<u32>,
}

const STATUSES: [&str; 5] = ["QUEUED", "SENT", "DELIVERED", "READ", "ROUTED"];

fn event_body(message: usize, seq: usize) -> String {
    let status = STATUSES[seq % STATUSES.len()];
    // Distinct per event: the occurrence time advances with seq.
    let secs = seq / 60;
    json!({
        "field": "message",
        "sub_type": format!("message.{}", status.to_lowercase()),
        "timestamp": format!("2026-05-14T{:02}:{:02}:{:02}Z", 10 + (secs / 60) % 12, secs % 60, seq % 60),
        "payload": {
            "message_id": format!("load-{message:08}"),
            "message_status": status,
            "channel": "sms",
            "outbound_number": "+14155550100",
            "updated_at": format!("2026-05-14T{:02}:{:02}:{:02}.{:03}Z", 10 + (secs / 60) % 12, secs % 60, seq % 60, seq % 1000),
        }
    })
    .to_string()
}

struct Target {
    url: String,
    webhook_id: String,
    secret: SigningSecret,
}

struct Report {
    sent: usize,
    ok: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Report {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    fn print(&self, label: &str) {
        println!(
            "{label}: {} events in {:.2} s = {:.0} events/s; ok {} errors {}; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.sent as f64 / self.elapsed.as_secs_f64(),
            self.ok,
            self.errors,
            self.pct(0.50),
            self.pct(0.90),
            self.pct(0.99),
            self.pct(1.0),
        );
    }
}

async fn run(target: Arc<Target>, bodies: Arc<Vec<(usize, String)>>, concurrency: usize) -> Report {
    let url: reqwest::Url = target.url.parse().expect("target url");
    let addr = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port_or_known_default().expect("port")
    );
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, bodies, target, addr, path) = (
                next.clone(),
                bodies.clone(),
                target.clone(),
                addr.clone(),
                path.clone(),
            );
            tokio::spawn(async move {
                // One keep-alive connection per worker, driven by a bare HTTP/1.1 client.
                let stream = tokio::net::TcpStream::connect(&addr)
                    .await
                    .expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(conn);
                let mut lat = Vec::new();
                let (mut ok, mut errors) = (0, 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, body)) = bodies.get(i) else {
                        break;
                    };
                    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
                    let sig = target.secret.sign(&target.webhook_id, ts, body.as_bytes());
                    let t0 = Instant::now();
                    let request = hyper::Request::post(&path)
                        .header("host", &addr)
                        .header("content-type", "application/json")
                        .header("x-webhook-id", &target.webhook_id)
                        .header("x-webhook-timestamp", ts.to_string())
                        .header("x-webhook-signature", sig)
                        .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
                        .expect("request");
                    let ok_now = match sender.send_request(request).await {
                        Ok(r) => {
                            let good = r.status().is_success();
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                            good
                        }
                        Err(_) => false,
                    };
                    lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    if ok_now { ok += 1 } else { errors += 1 }
                }
                (lat, ok, errors)
            })
        })
        .collect();
    let mut report = Report {
        sent: 0,
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for w in workers {
        let (lat, ok, errors) = w.await.expect("worker");
        report.latencies_us.extend(lat);
        report.ok += ok;
        report.errors += errors;
    }
    report.elapsed = start.elapsed();
    report.sent = report.ok + report.errors;
    report.latencies_us.sort_unstable();
    report
}

/// A receiver that verifies and parses, and does nothing else.
async fn baseline_server(secret: SigningSecret) -> String {
    let secret = Arc::new(secret);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let secret = secret.clone();
            async move {
                let Ok(parts) = SignedParts::from_headers(&headers) else {
                    return StatusCode::UNAUTHORIZED;
                };
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                if secret.verify(&parts, &body, now, 300).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                match serde_json::from_slice::<Value>(&body) {
                    Ok(_) => StatusCode::OK,
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    println!("machine: {}; args: {args:?}", machine());
    let sim = Simulator::builder()
        .manual_clock()
        .seed(1)
        .start()
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let graph_url = match args.graph.as_str() {
        "mem" => "mem://".to_owned(),
        _ => format!("surrealkv://{}", dir.path().join("graph").display()),
    };
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "agent: bench\nactions:\n  - action: sentdm_broadcast\n    name: sentdm\n    context:\n      api_base: {}\n      api_key: {}\n      sweep_interval_seconds: 0\n      record_event_history_limit: 25\n{}",
            sim.base_url(),
            sim.api_key(),
            args.fold_writers
                .map(|n| format!("      fold_writers: {n}\n"))
                .unwrap_or_default()
        ),
    )
    .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let mut settings = Settings {
        config_path: Some(config),
        graph_url,
        public_base_url: Some(base.clone()),
        ..Settings::default()
    };
    settings.auth.jwt_secret = Some("load-test-secret-load-test-secret-0000".into());
    let host = HostBuilder::new()
        .action::<SentDmBroadcast>()
        .settings(settings)
        .build()
        .await
        .expect("host");
    let graph: Graph = host.graph().clone();
    let action_id = graphagent::plugin::action_id("bench", "sentdm");
    let host_agent = host.agent("bench").expect("agent");
    tokio::spawn(host.serve(listener, std::future::pending()));

    let state = graph
        .query(
            "SELECT webhook_id, signing_secret FROM type::record('sentdm_webhook_state', $id);",
            json!({"id": action_id}),
        )
        .await
        .expect("state");
    let row = &state[0][0];
    let webhook_id = row["webhook_id"].as_str().expect("webhook id").to_owned();
    let secret = SigningSecret::parse(row["signing_secret"].as_str().expect("secret"))
        .expect("secret parses");
    if args.subscribed {
        graph
            .query(
                "INSERT INTO webhook_subscription { id: 'bench', key: 'bench', url: 'https://example.com/hook',
                    event_types: ['webhook.test'], enabled: true, secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
                    created_ms: 0, updated_ms: 0 };",
                Value::Null,
            )
            .await
            .expect("subscription");
    }
    let hooks = sim_webhook_url(&sim).await;
    let target = Arc::new(Target {
        url: hooks,
        webhook_id: webhook_id.clone(),
        secret: secret.clone(),
    });

    // Events spread over `messages` records, each record's events interleaved with others.
    let total = args.warmup + args.events;
    let bodies: Vec<(usize, String)> = (0..total)
        .map(|seq| (seq % args.messages, event_body(seq % args.messages, seq)))
        .collect();
    let (warm, measured) = bodies.split_at(args.warmup);
    if !warm.is_empty() {
        run(target.clone(), Arc::new(warm.to_vec()), args.concurrency)
            .await
            .print("warm-up");
    }
    let report = run(
        target.clone(),
        Arc::new(measured.to_vec()),
        args.concurrency,
    )
    .await;
    report.print("receiver (verify + dedupe + fold + commit)");

    // Nothing lost, nothing applied twice.
    let check = graph
        .query(
            "RETURN math::sum(SELECT VALUE array::len(event_keys ?? []) FROM sentdm_message WHERE action_id = $a);
             RETURN math::sum(SELECT VALUE event_count FROM sentdm_message WHERE action_id = $a);
             RETURN count(SELECT id FROM sentdm_message WHERE action_id = $a);",
            json!({"a": action_id}),
        )
        .await
        .expect("check");
    println!(
        "graph: distinct event keys recorded {} (events posted {}), events applied {}, records {}",
        check[0], total, check[1], check[2]
    );
    let lost = check[0].as_u64() != Some(total as u64) || check[1].as_u64() != Some(total as u64);
    if lost || report.errors > 0 {
        println!("RESULT: FAIL (events lost, doubled or rejected)");
    } else {
        println!("RESULT: OK (every event applied exactly once)");
    }

    if args.broadcast > 0 {
        let action = host_agent
            .action::<SentDmBroadcast>()
            .expect("loaded action");
        let to: Vec<String> = (0..args.broadcast)
            .map(|i| format!("+1415{:07}", 1_000_000 + i))
            .collect();
        let t0 = Instant::now();
        let result = action
            .send_broadcast(graphagent_sentdm::BroadcastRequest {
                to,
                channels: Some(vec!["sms".into(), "whatsapp".into()]),
                template: Some(graphagent_sentdm::TemplateInput {
                    name: Some("order_confirmation".into()),
                    parameters: [
                        ("name".to_owned(), "Jane".to_owned()),
                        ("order_id".to_owned(), "1".to_owned()),
                    ]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("broadcast");
        let took = t0.elapsed();
        println!(
            "broadcast: {} recipients x 2 channels = {} messages in {} SentDM requests, {} records persisted, {:.2} s end to end ({:.0} messages/s)",
            args.broadcast,
            result.messages.len(),
            result.requests.len(),
            result.persisted.records,
            took.as_secs_f64(),
            result.messages.len() as f64 / took.as_secs_f64()
        );
    }

    if args.baseline {
        let url = baseline_server(secret).await;
        let base_target = Arc::new(Target {
            url,
            webhook_id,
            secret: target.secret.clone(),
        });
        let bodies = Arc::new(measured.to_vec());
        run(base_target, bodies, args.concurrency)
            .await
            .print("baseline (verify + parse only)");
    }
    std::process::exit(i32::from(lost || report.errors > 0));
}

async fn sim_webhook_url(sim: &sentdm_sim::SimHandle) -> String {
    use sentdm_client::client::{ApiKey, Client, ClientConfig};
    let client = Client::new(ClientConfig::new(
        sim.base_url(),
        ApiKey::new(sim.api_key()),
    ))
    .expect("client");
    let hooks = client.list_all_webhooks().await.expect("webhooks");
    hooks
        .first()
        .map(|h| h.endpoint_url.clone())
        .expect("one webhook registered")
}
