//! Several `graphagent serve` processes (replicas) on one SurrealDB server, behind a
//! loopback load balancer, as docs/operations.md runs them: they start together, agree on
//! one SentDM webhook, fold every event once wherever it lands, deliver each outbound
//! event once, survive a replica's kill -9 and the server's restart.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use graphagent::GraphOptions;
use graphagent::testing::{SurrealServer, WebhookReceiver, login};
use sentdm_sim::{Faults, SimHandle, Simulator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_graphagent");
const SECRET: &str = "replicas-test-secret-replicas-test-secret";
const EMAIL: &str = "ops@example.com";
const PASSWORD: &str = "replicas test password";
/// A debug build starting next to others on two shared cores.
const READY_WITHIN: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn action_id() -> String {
    graphagent::plugin::action_id("acme/notifier", "sentdm")
}

/// One loopback balancer in front of the replicas: per request, the next replica that
/// accepts the connection (a dead one is skipped, as a balancer's health check would),
/// or, in fan-out mode, every replica at once (a provider retry racing a slow ack).
#[derive(Clone)]
struct Balancer {
    backends: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    fan_out: Arc<AtomicBool>,
    /// Per replica index: the bodies of the answers it gave to fanned-out requests.
    fanned: Arc<Mutex<Vec<(usize, u16, Value)>>>,
    /// Requests each replica answered.
    served: Arc<Vec<AtomicUsize>>,
    http: reqwest::Client,
}

impl Balancer {
    async fn start(ports: &[u16]) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind balancer");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let lb = Self {
            backends: Arc::new(
                ports
                    .iter()
                    .map(|p| format!("http://127.0.0.1:{p}"))
                    .collect(),
            ),
            next: Arc::default(),
            fan_out: Arc::default(),
            fanned: Arc::default(),
            served: Arc::new(ports.iter().map(|_| AtomicUsize::new(0)).collect()),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        };
        let app = axum::Router::new().fallback(forward).with_state(lb.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (lb, base)
    }

    async fn send(
        &self,
        i: usize,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(u16, Bytes), reqwest::Error> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.backends[i]))
            .body(body.clone())
            .timeout(Duration::from_secs(30));
        for (k, v) in headers {
            if k != "host" && k != "content-length" {
                req = req.header(k, v);
            }
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        self.served[i].fetch_add(1, Ordering::Relaxed);
        Ok((status, bytes))
    }
}

async fn forward(
    State(lb): State<Balancer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = lb.backends.len();
    if lb.fan_out.load(Ordering::Relaxed) {
        let all =
            futures::future::join_all((0..n).map(|i| lb.send(i, &method, &uri, &headers, &body)))
                .await;
        let mut first = None;
        for (i, answer) in all.into_iter().enumerate() {
            if let Ok((status, bytes)) = answer {
                let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                lb.fanned.lock().expect("fanned").push((i, status, value));
                first.get_or_insert((status, bytes));
            }
        }
        return match first {
            Some((status, bytes)) => {
                (StatusCode::from_u16(status).expect("status"), bytes).into_response()
            }
            None => StatusCode::BAD_GATEWAY.into_response(),
        };
    }
    let start = lb.next.fetch_add(1, Ordering::Relaxed);
    for k in 0..n {
        let i = (start + k) % n;
        match lb.send(i, &method, &uri, &headers, &body).await {
            Ok((status, bytes)) => {
                return (StatusCode::from_u16(status).expect("status"), bytes).into_response();
            }
            // Refused: that replica is down; try the next one.
            Err(e) if e.is_connect() => continue,
            // Cut mid-request (killed): the caller retries, as it would behind a balancer.
            Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
        }
    }
    StatusCode::BAD_GATEWAY.into_response()
}

/// The replicas' shared deployment: one SurrealDB server, one agent.yaml, one public URL
/// (the balancer), one JWT secret.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    graph_url: String,
    graph: GraphOptions,
    public: String,
    extra_env: Vec<(String, String)>,
}

impl Deployment {
    fn new(sim: &SimHandle, server: &SurrealServer, db: &str, public: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.yaml");
        std::fs::write(&config, agent_yaml(sim, "Graphagent")).expect("write config");
        Self {
            dir,
            config,
            graph_url: server.url().to_owned(),
            graph: server.options(db),
            public: public.to_owned(),
            extra_env: Vec::new(),
        }
    }

    /// A `graphagent serve` on `port`, not waited for.
    fn spawn(&self, port: u16) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(port))
            .expect("log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .args([
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--graph",
                &self.graph_url,
            ])
            .env("GRAPHAGENT_PUBLIC_BASE_URL", &self.public)
            .env("GRAPHAGENT_JWT_SECRET", SECRET)
            .env("GRAPHAGENT_ADMIN_EMAIL", EMAIL)
            .env("GRAPHAGENT_ADMIN_PASSWORD", PASSWORD)
            .env(
                "GRAPHAGENT_GRAPH_USER",
                self.graph.username.as_deref().unwrap_or_default(),
            )
            .env(
                "GRAPHAGENT_GRAPH_NS",
                self.graph.namespace.as_deref().unwrap_or_default(),
            )
            .env(
                "GRAPHAGENT_GRAPH_DB",
                self.graph.database.as_deref().unwrap_or_default(),
            )
            .env(
                "GRAPHAGENT_GRAPH_PASSWORD",
                graphagent::testing::SURREAL_PASSWORD,
            )
            .env("GRAPHAGENT_WEBHOOK_ALLOW_HTTP_LOOPBACK", "true")
            .env("GRAPHAGENT_WEBHOOK_POLL_MS", "500")
            .env("RUST_LOG", "warn")
            .env_remove("SENTDM_API_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn serve")
    }

    fn log_path(&self, port: u16) -> PathBuf {
        self.dir.path().join(format!("replica-{port}.log"))
    }

    fn log(&self, port: u16) -> String {
        std::fs::read_to_string(self.log_path(port)).unwrap_or_default()
    }

    /// Start replicas on `ports` at the same moment; all of them ready.
    async fn start_all(&self, ports: &[u16]) -> Vec<Child> {
        let mut children: Vec<Child> = ports.iter().map(|p| self.spawn(*p)).collect();
        for (child, port) in children.iter_mut().zip(ports) {
            self.wait_ready(child, *port).await;
        }
        children
    }

    async fn wait_ready(&self, child: &mut Child, port: u16) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = child.try_wait().expect("status") {
                panic!("replica :{port} exited ({status}):\n{}", self.log(port));
            }
            if let Ok(res) = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                && res.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica :{port} not ready:\n{}",
                self.log(port)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn agent_yaml(sim: &SimHandle, display_name: &str) -> String {
    format!(
        "agent: acme/notifier
actions:
  - action: sentdm_broadcast
    name: sentdm
    context:
      api_base: {}
      api_key: {}
      default_channels: [sms]
      default_template_name: order_confirmation
      webhook_event_filters: {{}}
      webhook_display_name: {display_name}
      sweep_interval_seconds: 0
",
        sim.base_url(),
        sim.api_key()
    )
}

async fn start_sim() -> SimHandle {
    Simulator::builder()
        .api_key("replicas-test-key")
        .seed(5)
        .step_delay(Duration::from_millis(50))
        .retry_scale(0.01)
        .read_receipts(false)
        .start()
        .await
        .expect("simulator")
}

/// An admin client of one replica.
struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    async fn of(port: u16) -> Self {
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let token = login(&http, &base, EMAIL, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("login on :{port}: {e:?}"));
        Self { http, base, token }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn action(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call(method, &format!("/api/actions/{}{path}", action_id()), body)
            .await
    }

    /// Send one broadcast to `to`; the SentDM message ids.
    async fn broadcast(&self, to: &[String]) -> Vec<String> {
        let (status, answer) = self
            .action(
                reqwest::Method::POST,
                "/sentdm/broadcast",
                Some(json!({"to": to, "template": {"name": "order_confirmation",
                    "parameters": {"name": "Jo", "order_id": "1"}}})),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        let ids: Vec<String> = answer["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["message_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(ids.len(), to.len(), "{answer}");
        ids
    }

    /// Every record of the action, by SentDM message id.
    async fn records(&self) -> Vec<Value> {
        let (status, page) = self
            .action(
                reqwest::Method::GET,
                "/sentdm/broadcasts?page_size=100",
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    }
}

fn recipients(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("+1415555{:04}", 2000 + i))
        .collect()
}

/// Phase timings on stderr (shown when a test fails or runs slow): where a slow run
/// spent its time.
struct Phases(Instant);

impl Phases {
    fn start() -> Self {
        Self(Instant::now())
    }

    fn mark(&self, what: &str) {
        eprintln!("[{:>6.1} s] {what}", self.0.elapsed().as_secs_f64());
    }
}

/// Wait until every message's record holds SentDM's final status (delivered or failed),
/// then check that each status event is in its log exactly once.
///
/// The simulator delivers on its own clock, one delivery at a time; this only polls the
/// records. (It used to drive `SimHandle::settle`, which delivers inline while holding
/// the simulator's runner: cutting it with a timeout dropped a delivery already taken
/// off the queue, and that message then never settled.)
async fn settled(sim: &SimHandle, admin: &Admin, ids: &[String]) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let mut last_report = start;
    loop {
        let records = admin.records().await;
        let record = |id: &str| {
            records
                .iter()
                .find(|r| r["sentdm_message_id"] == id)
                .cloned()
        };
        let pending: Vec<&String> = ids
            .iter()
            .filter(|id| {
                let want = sim.message_status(id).map(|s| s.to_ascii_lowercase());
                !record(id).is_some_and(|r| {
                    want.as_deref()
                        .is_some_and(|w| r["status"] == w && matches!(w, "delivered" | "failed"))
                })
            })
            .collect();
        if pending.is_empty() {
            eprintln!(
                "  {} messages settled in {:.1} s",
                ids.len(),
                start.elapsed().as_secs_f64()
            );
            for id in ids {
                let record = record(id).expect("record");
                let mut statuses: Vec<&str> = record["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .filter(|e| e["source"] == "webhook")
                    .filter_map(|e| e["status"].as_str())
                    .collect();
                let n = statuses.len();
                statuses.sort_unstable();
                statuses.dedup();
                assert_eq!(n, statuses.len(), "an event folded twice: {record}");
            }
            return;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "  after {:.0} s: {} of {} messages not settled; {} deliveries so far",
                start.elapsed().as_secs_f64(),
                pending.len(),
                ids.len(),
                sim.deliveries().len()
            );
        }
        assert!(
            Instant::now() < deadline,
            "records did not reach SentDM's statuses: {:#?}",
            pending
                .iter()
                .map(|id| (id, sim.message_status(id), record(id)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// SentDM calls that change webhooks (create, update, rotate, toggle, delete).
fn webhook_changes(sim: &SimHandle) -> Vec<String> {
    sim.requests()
        .iter()
        .filter(|r| r.path.starts_with("/v3/webhooks") && r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

async fn sim_webhooks(sim: &SimHandle) -> Vec<Value> {
    let res = reqwest::Client::new()
        .get(format!("{}/v3/webhooks?page_size=100", sim.base_url()))
        .header("x-api-key", sim.api_key())
        .send()
        .await
        .expect("list webhooks");
    let body: Value = res.json().await.expect("json");
    body["data"]["webhooks"]
        .as_array()
        .or_else(|| body["data"].as_array())
        .cloned()
        .unwrap_or_default()
}

fn kill(child: &mut Child) {
    // SIGKILL: no shutdown hook, no flush, as a crash or an OOM kill.
    child.start_kill().expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_start_together_and_keep_one_webhook() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    let phases = Phases::start();
    let sim = start_sim().await;
    let ports = [free_port(), free_port(), free_port()];
    let (_lb, public) = Balancer::start(&ports).await;
    let deployment = Deployment::new(&sim, &server, "together", &public);

    // Start together: every replica comes up (the schema is defined by all at once).
    // SentDM answering slowly makes their reconciles overlap, as they do in production
    // where SentDM is a network away, rather than run one after another by chance.
    sim.set_faults(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    let mut children = deployment.start_all(&ports).await;
    sim.set_faults(Faults::default());
    phases.mark("3 replicas ready");

    // One webhook at SentDM, registered once, nothing deleted or rotated.
    let hooks = sim_webhooks(&sim).await;
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    let hook_id = hooks[0]["id"].as_str().expect("id").to_owned();
    let secret = sim.webhook_secret(&hook_id).expect("secret");
    assert_eq!(webhook_changes(&sim), vec!["POST /v3/webhooks".to_owned()]);

    // Rolling restart: each replica killed and started again, one at a time; then a
    // forced reconcile on one: the same webhook and secret, no SentDM change.
    for (child, port) in children.iter_mut().zip(ports) {
        kill(child);
        let _ = child.wait().await;
        *child = deployment.spawn(port);
        deployment.wait_ready(child, port).await;
    }
    phases.mark("rolling restart done");
    let (status, report) = Admin::of(ports[1])
        .await
        .action(reqwest::Method::POST, "/sentdm/webhook/register", None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["outcome"], "kept", "{report}");
    assert_eq!(webhook_changes(&sim), vec!["POST /v3/webhooks".to_owned()]);
    assert_eq!(sim_webhooks(&sim).await.len(), 1);
    assert_eq!(
        sim.webhook_secret(&hook_id).as_deref(),
        Some(secret.as_str())
    );

    // Reload of one replica with a changed setting: updated in place, secret kept, and
    // every replica still verifies SentDM's deliveries.
    std::fs::write(&deployment.config, agent_yaml(&sim, "Graphagent replicas")).expect("write");
    let agent = graphagent::plugin::agent_id("acme/notifier");
    let admin = Admin::of(ports[2]).await;
    let (status, reload) = admin
        .call(
            reqwest::Method::POST,
            &format!("/api/agents/{agent}/reload"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reload}");
    assert_eq!(
        webhook_changes(&sim),
        vec![
            "POST /v3/webhooks".to_owned(),
            format!("PUT /v3/webhooks/{hook_id}")
        ]
    );
    assert_eq!(
        sim.webhook_secret(&hook_id).as_deref(),
        Some(secret.as_str())
    );
    phases.mark("reloaded");
    let ids = admin.broadcast(&recipients(0, 4)).await;
    settled(&sim, &admin, &ids).await;
    let refused: Vec<_> = sim
        .deliveries()
        .into_iter()
        .filter(|d| d.status_code != Some(200))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    phases.mark("deliveries after the reload verified");
    drop(children);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_fold_each_event_once_wherever_it_lands() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    let phases = Phases::start();
    let sim = start_sim().await;
    let ports = [free_port(), free_port(), free_port()];
    let (lb, public) = Balancer::start(&ports).await;
    let deployment = Deployment::new(&sim, &server, "fold", &public);
    let children = deployment.start_all(&ports).await;
    phases.mark("3 replicas ready");

    // A subscriber of the outbound events, served by every replica's worker.
    let receiver = WebhookReceiver::new(200);
    let hook_url = receiver.start().await;
    let admin = Admin::of(ports[0]).await;
    let (status, sub) = admin
        .call(
            reqwest::Method::POST,
            "/api/webhooks/subscriptions",
            Some(json!({"url": hook_url, "event_types": ["sentdm.message.delivered", "sentdm.message.failed", "sentdm.message.sent"]})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");

    // Ingest across replicas: events land round-robin on the three.
    let ids = admin.broadcast(&recipients(0, 3)).await;
    settled(&sim, &admin, &ids).await;
    phases.mark("round-robin ingest settled");
    let served: Vec<usize> = lb
        .served
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .collect();
    assert!(
        served.iter().all(|n| *n > 0),
        "every replica took deliveries: {served:?}"
    );
    let refused: Vec<_> = sim
        .deliveries()
        .into_iter()
        .filter(|d| d.status_code != Some(200))
        .collect();
    assert!(
        refused.is_empty(),
        "every replica verified with the shared secret: {refused:#?}"
    );

    // One event delivered to every replica at once: applied once, the others answer
    // `duplicate`.
    lb.fan_out.store(true, Ordering::Relaxed);
    let raced = admin.broadcast(&recipients(20, 1)).await;
    settled(&sim, &admin, &raced).await;
    lb.fan_out.store(false, Ordering::Relaxed);
    phases.mark("fanned-out ingest settled");
    let fanned = lb.fanned.lock().expect("fanned").clone();
    assert!(!fanned.is_empty());
    assert!(
        fanned.iter().all(|(_, status, _)| *status == 200),
        "{fanned:#?}"
    );
    let received = fanned
        .iter()
        .filter(|(_, _, a)| a["status"] == "received")
        .count();
    let duplicate = fanned
        .iter()
        .filter(|(_, _, a)| a["status"] == "duplicate")
        .count();
    assert_eq!(
        received * 3,
        fanned.len(),
        "one `received` per event: {fanned:#?}"
    );
    assert_eq!(duplicate, received * 2, "{fanned:#?}");

    // Outbound across replicas: each event delivered once to the subscription.
    let all_ids: Vec<String> = ids.iter().chain(&raced).cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hits = receiver.hits();
        let mut event_ids: Vec<String> = hits
            .iter()
            .filter_map(|h| {
                h.headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .collect();
        let n = event_ids.len();
        event_ids.sort();
        event_ids.dedup();
        assert_eq!(n, event_ids.len(), "an outbound event was delivered twice");
        // At least one status event per message (sent, then delivered or failed).
        if n >= all_ids.len() * 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "outbound deliveries missing: {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phases.mark("outbound delivered");
    drop(children);
}

mod outbound;
mod storm;
