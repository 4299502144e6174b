//! `ga-load`: replays signed SentDM delivery events against a running `graphagent serve`
//! from its own process, and checks that nothing was lost.
//!
//! 1. Logs in, finds the `sentdm_broadcast` action and its SentDM webhook (URL and id
//!    from the server; the signing secret from the simulator, started with
//!    `--signing-secret-in-reads`).
//! 2. Seeds `--messages` records through the real send path: broadcasts (sms) against the
//!    simulator, so every event targets a record the server created itself.
//! 3. Optionally subscribes `--subscribe` URLs (a `ga-sink`) to every event type.
//! 4. Posts `--statuses` events per message (QUEUED, SENT, DELIVERED, READ: each a status
//!    change), round after round, signed as SentDM signs, over `--concurrency` keep-alive
//!    HTTP/1.1 connections; optionally paced at `--rate`, or for `--soak` time.
//! 5. Reads the records back over the API: each must have folded every event posted to it
//!    and reached the last status; waits for the sink to see every delivery; deletes the
//!    subscriptions.
//!
//! Prints a summary and writes it as JSON with `--json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use graphagent_bench::{Percentiles, cpu};
use sentdm_client::signing::SigningSecret;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Replay signed SentDM webhook events against a running graphagent")]
struct Args {
    /// The server, e.g. http://127.0.0.1:8000.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    server: String,
    /// The SentDM simulator the action sends through (for the webhook's signing secret).
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    sim: String,
    /// The simulator's API key.
    #[arg(long, env = "SENTDM_API_KEY", default_value = "test-key")]
    sim_key: String,
    /// Admin login.
    #[arg(long, env = "GRAPHAGENT_ADMIN_EMAIL")]
    admin_email: String,
    #[arg(long, env = "GRAPHAGENT_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: String,
    /// The `sentdm_broadcast` action; the only one loaded when not given.
    #[arg(long)]
    action: Option<String>,
    /// Messages (records) to seed and post events for.
    #[arg(long, default_value_t = 6_000)]
    messages: usize,
    /// Events per message, 1 to 4 (QUEUED, SENT, DELIVERED, READ).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=4))]
    statuses: u8,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Post at most this many events per second (0 = as fast as answers come).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Keep posting for this long (e.g. `10m`) at `--rate`, cycling over the messages
    /// (later cycles repeat statuses with new occurrence times: folded, no status change).
    #[arg(long, value_parser = humantime::parse_duration)]
    soak: Option<Duration>,
    /// Subscribe this URL to every event type for the run (repeatable; e.g. a ga-sink
    /// path per subscriber: http://127.0.0.1:9900/s1).
    #[arg(long)]
    subscribe: Vec<String>,
    /// The ga-sink to reset before and read after the run (its base URL).
    #[arg(long)]
    sink: Option<String>,
    /// After the load, wait for the sink until every delivery arrived or nothing arrived
    /// for this long.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    drain_idle: Duration,
    /// Post to these HOST:PORTs instead of the webhook URL's, connection i to the
    /// (i mod n)-th (repeatable): replicas sharing one graph, without a balancer.
    #[arg(long)]
    replica: Vec<String>,
    /// The server's process id, to report its CPU per event (Linux procfs).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A name for this run in the summary.
    #[arg(long, default_value = "ingest")]
    label: String,
    /// Write the summary here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

const STATUSES: [&str; 4] = ["QUEUED", "SENT", "DELIVERED", "READ"];

/// The admin API of the server under test.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(base: &str, email: &str, password: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let res = http
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .context("login request")?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            bail!("login failed: HTTP {status}");
        };
        Ok(Self {
            token: token.to_owned(),
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: HTTP {status}: {body}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

fn text<'a>(v: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("`{key}` missing in {v}"))
}

/// The only loaded `sentdm_broadcast` action.
async fn discover(api: &Api) -> anyhow::Result<String> {
    let agents = api.get("/api/agents").await?;
    let mut found = Vec::new();
    for agent in agents.as_array().into_iter().flatten() {
        let id = text(agent, "id")?;
        let actions = api.get(&format!("/api/agents/{id}/actions")).await?;
        for a in actions.as_array().into_iter().flatten() {
            if a.as_object()
                .is_some_and(|o| o.values().any(|v| v == "sentdm_broadcast"))
            {
                found.push(text(a, "id")?.to_owned());
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no sentdm_broadcast action is loaded"),
        _ => bail!("several sentdm_broadcast actions are loaded; pick one with --action"),
    }
}

/// Where the action's webhook is, and the secret SentDM signs it with.
async fn webhook_target(api: &Api, action: &str, args: &Args) -> anyhow::Result<Target> {
    let info = api
        .get(&format!("/api/actions/{action}/sentdm/webhook"))
        .await?;
    let webhook_id = text(&info, "webhook_id")?.to_owned();
    let sim = api
        .http
        .get(format!(
            "{}/v3/webhooks/{webhook_id}",
            args.sim.trim_end_matches('/')
        ))
        .header("x-api-key", &args.sim_key)
        .send()
        .await?
        .json::<Value>()
        .await?;
    let secret = sim
        .pointer("/data/signing_secret")
        .and_then(Value::as_str)
        .context("the simulator did not return the signing secret (start it with --signing-secret-in-reads)")?;
    // The server shows its webhook URL without the key; SentDM has it whole.
    let url = sim
        .pointer("/data/endpoint_url")
        .and_then(Value::as_str)
        .context("the simulator did not return the webhook's endpoint URL")?
        .to_owned();
    let secret =
        SigningSecret::parse(secret).map_err(|e| anyhow::anyhow!("signing secret: {e:?}"))?;
    let parsed = reqwest::Url::parse(&url)?;
    let addr = format!(
        "{}:{}",
        parsed.host_str().context("webhook URL without host")?,
        parsed
            .port_or_known_default()
            .context("webhook URL without port")?
    );
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    Ok(Target {
        addr,
        path,
        webhook_id,
        secret,
    })
}

/// Recipients whose last four digits pick the simulator's failure paths are skipped.
fn recipient(i: usize) -> Option<String> {
    let n = 1_000_000 + i;
    (!(1..=5).contains(&(n % 10_000))).then(|| format!("+1415{n:07}"))
}

/// Send broadcasts (sms) to `messages` recipients; the SentDM message ids and broadcast ids.
async fn seed(
    api: &Api,
    action: &str,
    messages: usize,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut ids = Vec::with_capacity(messages);
    let mut broadcasts = Vec::new();
    let mut next = 0;
    while ids.len() < messages {
        let mut to = Vec::new();
        while to.len() < (messages - ids.len()).min(10_000) {
            if let Some(r) = recipient(next) {
                to.push(r);
            }
            next += 1;
        }
        let result = api
            .post(
                &format!("/api/actions/{action}/sentdm/broadcast"),
                json!({"to": to, "channels": ["sms"],
                    "template": {"name": "order_confirmation",
                        "parameters": {"name": "Jane", "order_id": "1"}}}),
            )
            .await?;
        broadcasts.push(text(&result, "broadcast_id")?.to_owned());
        let before = ids.len();
        for m in result["messages"].as_array().into_iter().flatten() {
            ids.push(text(m, "message_id")?.to_owned());
        }
        if ids.len() - before < to.len() {
            bail!(
                "the broadcast sent {} of {} messages",
                ids.len() - before,
                to.len()
            );
        }
    }
    Ok((ids, broadcasts))
}

/// Each record's status and folded event count, by SentDM message id.
async fn read_records(
    api: &Api,
    action: &str,
    broadcasts: &[String],
) -> anyhow::Result<BTreeMap<String, (String, u64)>> {
    let mut out = BTreeMap::new();
    for b in broadcasts {
        for page in 1.. {
            let body = api
                .get(&format!(
                    "/api/actions/{action}/sentdm/broadcasts?broadcast_id={b}&page={page}&page_size=100"
                ))
                .await?;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            for r in &items {
                out.insert(
                    text(r, "sentdm_message_id")?.to_owned(),
                    (
                        r["status"].as_str().unwrap_or("").to_owned(),
                        r["event_count"].as_u64().unwrap_or(0),
                    ),
                );
            }
            if items.len() < 100 {
                break;
            }
        }
    }
    Ok(out)
}

struct Target {
    addr: String,
    path: String,
    webhook_id: String,
    secret: SigningSecret,
}

/// The `seq`-th event: round `seq / messages` of message `seq % messages`.
fn event(ids: &[String], statuses: usize, base_s: i64, seq: usize) -> Option<(usize, String)> {
    let m = seq % ids.len();
    let round = seq / ids.len();
    let status = STATUSES.get(round % statuses)?;
    // Occurrence times move on with every round, so every body (the receiver's
    // de-duplication key) is distinct, also in later soak cycles.
    let at = time::OffsetDateTime::from_unix_timestamp(base_s + round as i64)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    let body = json!({
        "field": "message",
        "sub_type": format!("message.{}", status.to_lowercase()),
        "timestamp": at,
        "payload": {
            "message_id": ids.get(m)?,
            "message_status": status,
            "channel": "sms",
            "outbound_number": "+14155550100",
            "updated_at": at,
        }
    });
    Some((m, body.to_string()))
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u64>,
    ok: usize,
    errors: BTreeMap<String, usize>,
    /// Events answered 2xx, per message index.
    acked: Vec<(usize, u32)>,
}

#[derive(Serialize)]
struct Inbound {
    events: usize,
    ok: usize,
    errors: BTreeMap<String, usize>,
    elapsed_s: f64,
    rate_per_s: f64,
    latency: Percentiles,
    /// CPU over the load window (not the seeding, the drain or the check).
    cpu: cpu::Usage,
}

#[derive(Serialize)]
struct Verify {
    records: usize,
    /// Events answered 2xx.
    acked: u64,
    /// Events the records folded during the run.
    folded: u64,
    /// Records that folded fewer events than were acknowledged for them.
    short_records: usize,
    /// Records not at the last status posted (finite runs only).
    wrong_status: usize,
    ok: bool,
}

#[derive(Serialize)]
struct Outbound {
    subscribers: usize,
    /// Deliveries expected: the events that changed a status, to every subscriber.
    expected: Option<u64>,
    sink: Value,
    /// Deliveries per subscriber per second over the sink's window, over the inbound
    /// rate of the same run.
    keep_pace_ratio: f64,
    complete: bool,
}

#[derive(Serialize)]
struct Summary {
    label: String,
    messages: usize,
    statuses: u8,
    concurrency: usize,
    inbound: Inbound,
    verify: Verify,
    outbound: Option<Outbound>,
}

fn class(status: Option<u16>, e: Option<&hyper::Error>) -> String {
    match (status, e) {
        (Some(code), _) => format!("http_{code}"),
        (None, Some(e)) if e.is_timeout() => "timeout".into(),
        (None, Some(e)) if e.is_closed() || e.is_incomplete_message() => "connection_closed".into(),
        _ => "io".into(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

struct Plan {
    ids: Vec<String>,
    statuses: usize,
    base_s: i64,
    /// Events to post (`usize::MAX` for a soak, which stops on `stop`).
    total: usize,
    rate: f64,
    stop: AtomicBool,
    next: AtomicUsize,
}

async fn worker(
    target: Arc<Target>,
    addr: String,
    plan: Arc<Plan>,
    start: Instant,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    let mut sender = None;
    loop {
        if plan.stop.load(Ordering::Relaxed) {
            break;
        }
        let seq = plan.next.fetch_add(1, Ordering::Relaxed);
        if seq >= plan.total {
            break;
        }
        let Some((m, body)) = event(&plan.ids, plan.statuses, plan.base_s, seq) else {
            break;
        };
        if plan.rate > 0.0 {
            let due = start + Duration::from_secs_f64(seq as f64 / plan.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        if sender.is_none() {
            match connect(&addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    *out.errors.entry("connect".into()).or_default() += 1;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let sig = target.secret.sign(&target.webhook_id, ts, body.as_bytes());
        let request = hyper::Request::post(&target.path)
            .header("host", &addr)
            .header("content-type", "application/json")
            .header("x-webhook-id", &target.webhook_id)
            .header("x-webhook-timestamp", ts.to_string())
            .header("x-webhook-signature", sig)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)));
        let Ok(request) = request else {
            *out.errors.entry("request".into()).or_default() += 1;
            continue;
        };
        let t0 = Instant::now();
        let answer = s.send_request(request).await;
        let code = match answer {
            Ok(r) => {
                let code = r.status().as_u16();
                let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                Ok(code)
            }
            Err(e) => Err(e),
        };
        out.latencies_us
            .push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
        match code {
            Ok(code) if (200..300).contains(&code) => {
                out.ok += 1;
                out.acked.push((m, 1));
            }
            Ok(code) => *out.errors.entry(class(Some(code), None)).or_default() += 1,
            Err(e) => {
                *out.errors.entry(class(None, Some(&e))).or_default() += 1;
                sender = None;
            }
        }
    }
    out
}

async fn sink_stats(http: &reqwest::Client, sink: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{}/stats", sink.trim_end_matches('/')))
        .send()
        .await?
        .json()
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.soak.is_some() && args.rate <= 0.0 {
        bail!("--soak needs a --rate");
    }
    let api = Api::login(&args.server, &args.admin_email, &args.admin_password).await?;
    let action = match &args.action {
        Some(a) => a.clone(),
        None => discover(&api).await?,
    };
    let target = Arc::new(webhook_target(&api, &action, &args).await?);
    let seed_start = Instant::now();
    let (ids, broadcasts) = seed(&api, &action, args.messages).await?;
    eprintln!(
        "seeded {} messages in {} broadcast(s), {:.1} s",
        ids.len(),
        broadcasts.len(),
        seed_start.elapsed().as_secs_f64()
    );
    let mut subscriptions = Vec::new();
    for url in &args.subscribe {
        let sub = api
            .post(
                "/api/webhooks/subscriptions",
                json!({"url": url, "event_types": [], "description": format!("ga-load {}", args.label)}),
            )
            .await?;
        subscriptions.push(text(&sub, "id")?.to_owned());
    }

    // Read after subscribing and after the simulator has sent the events it has due for
    // the seeded messages (`/_sim/settle` returns once they are delivered, i.e. folded):
    // each status change from here on is published, whoever made it, so the deliveries
    // expected are counted from this state.
    api.http
        .post(format!("{}/_sim/settle", args.sim.trim_end_matches('/')))
        .send()
        .await?
        .error_for_status()?;
    let before = read_records(&api, &action, &broadcasts).await?;
    if before.len() != ids.len() {
        bail!("{} records for {} messages sent", before.len(), ids.len());
    }
    let statuses = usize::from(args.statuses);
    let total = if args.soak.is_some() {
        usize::MAX
    } else {
        ids.len() * statuses
    };
    let plan = Arc::new(Plan {
        ids,
        statuses,
        base_s: time::OffsetDateTime::now_utc().unix_timestamp(),
        total,
        rate: args.rate,
        stop: AtomicBool::new(false),
        next: AtomicUsize::new(0),
    });
    // The sink's window starts with this run's events: deliveries of events created
    // before now (the simulator's own, for the seeded messages) are counted apart.
    if let Some(sink) = &args.sink {
        let since_us = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
        api.http
            .post(format!(
                "{}/reset?since_us={since_us}",
                sink.trim_end_matches('/')
            ))
            .send()
            .await?
            .error_for_status()?;
    }
    let start = Instant::now();
    let cpu_start = cpu::Sample::now(args.server_pid);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let addr = match args.replica.as_slice() {
                [] => target.addr.clone(),
                replicas => replicas[i % replicas.len()].clone(),
            };
            tokio::spawn(worker(target.clone(), addr, plan.clone(), start))
        })
        .collect();
    if let Some(soak) = args.soak {
        tokio::time::sleep(soak).await;
        plan.stop.store(true, Ordering::Relaxed);
    }
    let mut latencies = Vec::new();
    let mut ok = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut acked = vec![0u64; plan.ids.len()];
    for w in workers {
        let r = w.await?;
        latencies.extend(r.latencies_us);
        ok += r.ok;
        for (k, n) in r.errors {
            *errors.entry(k).or_default() += n;
        }
        for (m, n) in r.acked {
            if let Some(a) = acked.get_mut(m) {
                *a += u64::from(n);
            }
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_start.usage_until(&cpu::Sample::now(args.server_pid), ok);
    let events = ok + errors.values().sum::<usize>();
    let inbound = Inbound {
        events,
        ok,
        errors,
        elapsed_s: elapsed.as_secs_f64(),
        rate_per_s: ok as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Percentiles::of_micros(&mut latencies),
        cpu,
    };
    let ms = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.3}"));
    eprintln!(
        "{}: {} events in {:.2} s = {:.0}/s, p50 {:.1} ms p95 {:.1} ms p99 {:.1} ms, errors {:?}; \
         CPU ms per event: server {}, generator {}; machine {}% busy",
        args.label,
        inbound.events,
        inbound.elapsed_s,
        inbound.rate_per_s,
        inbound.latency.p50_ms,
        inbound.latency.p95_ms,
        inbound.latency.p99_ms,
        inbound.errors,
        ms(cpu.server_ms_per_event),
        ms(cpu.generator_ms_per_event),
        cpu.machine_busy_pct
            .map_or("?".to_owned(), |v| format!("{v:.0}")),
    );

    // Outbound: wait until every delivery arrived, or nothing arrives for a while.
    let finite = args.soak.is_none();
    let outbound = match (&args.sink, args.subscribe.len()) {
        (Some(sink), subs) if subs > 0 => {
            // Events that move a record past the status it had before the run each
            // publish one outbound event (a record seeded as `queued` publishes nothing
            // for its QUEUED event).
            let changing: u64 = plan
                .ids
                .iter()
                .zip(&acked)
                .map(|(id, n)| {
                    let was = before.get(id).map(|r| r.0.as_str()).unwrap_or("");
                    let skipped = STATUSES
                        .iter()
                        .take(statuses)
                        .position(|s| s.eq_ignore_ascii_case(was))
                        .map_or(0, |i| i as u64 + 1);
                    n.saturating_sub(skipped)
                })
                .sum();
            let expected = finite.then_some(changing * subs as u64);
            let mut last = (0u64, Instant::now());
            let stats = loop {
                let stats = sink_stats(&api.http, sink).await?;
                let unique = stats["unique"].as_u64().unwrap_or(0);
                if expected.is_some_and(|e| unique >= e) {
                    break stats;
                }
                if unique != last.0 {
                    last = (unique, Instant::now());
                } else if last.1.elapsed() >= args.drain_idle {
                    break stats;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let unique = stats["unique"].as_u64().unwrap_or(0);
            let window = stats["window_s"].as_f64().unwrap_or(0.0);
            let per_sub_rate = if window > 0.0 {
                unique as f64 / subs as f64 / window
            } else {
                0.0
            };
            Some(Outbound {
                subscribers: subs,
                expected,
                complete: unique > 0 && expected.is_none_or(|e| unique >= e),
                keep_pace_ratio: per_sub_rate / inbound.rate_per_s.max(1e-9),
                sink: stats,
            })
        }
        _ => None,
    };
    for id in &subscriptions {
        api.call(
            reqwest::Method::DELETE,
            &format!("/api/webhooks/subscriptions/{id}"),
            None,
        )
        .await?;
    }

    // Nothing lost: every acknowledged event was folded into its record.
    let after = read_records(&api, &action, &broadcasts).await?;
    let last_status = STATUSES
        .get(statuses - 1)
        .map(|s| s.to_lowercase())
        .unwrap_or_default();
    let mut verify = Verify {
        records: after.len(),
        acked: acked.iter().sum(),
        folded: 0,
        short_records: 0,
        wrong_status: 0,
        ok: false,
    };
    for (i, id) in plan.ids.iter().enumerate() {
        let was = before.get(id).map_or(0, |r| r.1);
        let (status, now) = after.get(id).cloned().unwrap_or_default();
        let folded = now.saturating_sub(was);
        verify.folded += folded;
        if folded < acked.get(i).copied().unwrap_or(0) {
            verify.short_records += 1;
        }
        let complete = acked.get(i).copied().unwrap_or(0) >= statuses as u64;
        if finite && complete && status != last_status {
            verify.wrong_status += 1;
        }
    }
    // Every event posted must have been acknowledged and folded.
    verify.ok = verify.acked == events as u64
        && verify.short_records == 0
        && verify.wrong_status == 0
        && verify.records == plan.ids.len();
    eprintln!(
        "verify: {} records, {} events acknowledged, {} folded, {} short, {} at a wrong status: {}",
        verify.records,
        verify.acked,
        verify.folded,
        verify.short_records,
        verify.wrong_status,
        if verify.ok { "OK" } else { "FAIL" }
    );
    if let Some(o) = &outbound {
        eprintln!(
            "outbound: {} subscriber(s), {} of {:?} deliveries, {:.0}/s, lag p50 {} ms p99 {} ms, duplicates {}, keep-pace {:.2}",
            o.subscribers,
            o.sink["unique"],
            o.expected,
            o.sink["rate_per_s"].as_f64().unwrap_or(0.0),
            o.sink["lag"]["p50_ms"],
            o.sink["lag"]["p99_ms"],
            o.sink["duplicates"],
            o.keep_pace_ratio
        );
    }
    let failed = !verify.ok || outbound.as_ref().is_some_and(|o| !o.complete);
    let summary = Summary {
        label: args.label.clone(),
        messages: plan.ids.len(),
        statuses: args.statuses,
        concurrency: args.concurrency,
        inbound,
        verify,
        outbound,
    };
    let text = serde_json::to_string_pretty(&summary)?;
    if let Some(path) = &args.json {
        std::fs::write(path, &text)?;
    } else {
        println!("{text}");
    }
    if failed {
        bail!("events were lost or deliveries are missing");
    }
    Ok(())
}
