//! Storms of signed SentDM deliveries sent straight to the replicas by a generator that
//! behaves as SentDM does (retries whatever got no 2xx, on the next replica), while a
//! replica is killed or the SurrealDB server restarts. What is proved: every event the
//! generator saw acknowledged is in the graph, once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graphagent::testing::SurrealServer;
use sentdm_client::SigningSecret;
use sentdm_sim::SimHandle;
use serde_json::{Value, json};

use super::{Deployment, Phases, action_id, free_port, kill, sim_webhooks, start_sim};

/// The statuses each storm message goes through: three distinct events.
const STEPS: [&str; 3] = ["QUEUED", "SENT", "DELIVERED"];

/// Signs and posts SentDM deliveries to the webhook the replicas registered.
#[derive(Clone)]
pub(super) struct Generator {
    http: reqwest::Client,
    webhook_id: String,
    secret: Arc<SigningSecret>,
    /// The callback's path and query (with its machine key), as SentDM has it.
    path: String,
}

impl Generator {
    pub(super) async fn of(sim: &SimHandle) -> Self {
        let hooks = sim_webhooks(sim).await;
        assert_eq!(hooks.len(), 1, "{hooks:#?}");
        let webhook_id = hooks[0]["id"].as_str().expect("id").to_owned();
        let url: reqwest::Url = hooks[0]["endpoint_url"]
            .as_str()
            .expect("endpoint_url")
            .parse()
            .expect("url");
        let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
        let secret = SigningSecret::parse(&sim.webhook_secret(&webhook_id).expect("secret"))
            .expect("secret parses");
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            webhook_id,
            secret: Arc::new(secret),
            path,
        }
    }

    /// One signed attempt to the replica on `port`: its status, or `None` when no answer
    /// came (refused, cut, timed out).
    pub(super) async fn post(&self, port: u16, body: &str) -> Option<u16> {
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let res = self
            .http
            .post(format!("http://127.0.0.1:{port}{}", self.path))
            .timeout(Duration::from_secs(30))
            .header("content-type", "application/json")
            .header("x-webhook-id", &self.webhook_id)
            .header("x-webhook-timestamp", ts.to_string())
            .header(
                "x-webhook-signature",
                self.secret.sign(&self.webhook_id, ts, body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await
            .ok()?;
        Some(res.status().as_u16())
    }
}

fn message_id(run: &str, message: usize) -> String {
    format!("{run}-{message:04}")
}

/// Event `step` of storm message `message`; every body distinct.
pub(super) fn event_body(run: &str, message: usize, step: usize) -> String {
    let status = STEPS[step];
    let at = format!("2026-05-14T10:{:02}:{:02}", message % 60, step * 10);
    json!({
        "field": "message",
        "sub_type": format!("message.{}", status.to_ascii_lowercase()),
        "timestamp": format!("{at}Z"),
        "payload": {
            "message_id": message_id(run, message),
            "message_status": status,
            "channel": "sms",
            "outbound_number": "+14155550100",
            "updated_at": format!("{at}.{:03}Z", message % 1000),
        }
    })
    .to_string()
}

/// What the generator saw.
#[derive(Default)]
struct Outcome {
    /// Per event index: the port of the replica that acknowledged it (2xx).
    acked: BTreeMap<usize, u16>,
    /// Attempts without a 2xx, by answer (`None`: no answer).
    refused: BTreeMap<Option<u16>, usize>,
}

/// Send every body, `concurrency` at a time, round-robin over `ports`. An attempt without
/// a 2xx is retried on the next replica after a short pause (SentDM's retry, scaled
/// down), until `deadline`. `acked` counts acknowledgements as they come, so the test
/// can act mid-storm.
async fn storm(
    generator: &Generator,
    ports: &[u16],
    bodies: Arc<Vec<String>>,
    concurrency: usize,
    deadline: Instant,
    acked: Arc<AtomicUsize>,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let turn = Arc::new(AtomicUsize::new(0));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let ports: Arc<Vec<u16>> = Arc::new(ports.to_vec());
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (generator, bodies, next, turn, outcome, ports, acked) = (
                generator.clone(),
                bodies.clone(),
                next.clone(),
                turn.clone(),
                outcome.clone(),
                ports.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    while Instant::now() < deadline {
                        let port = ports[turn.fetch_add(1, Ordering::Relaxed) % ports.len()];
                        match generator.post(port, body).await {
                            Some(status) if (200..300).contains(&status) => {
                                outcome.lock().expect("outcome").acked.insert(i, port);
                                acked.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            answer => {
                                *outcome
                                    .lock()
                                    .expect("outcome")
                                    .refused
                                    .entry(answer)
                                    .or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("storm worker");
    }
    Arc::try_unwrap(outcome)
        .ok()
        .expect("workers done")
        .into_inner()
        .expect("outcome")
}

/// Every storm message as the graph has it: status and the statuses of its webhook
/// events, read straight from the SurrealDB server (a fresh connection).
async fn graph_view(
    server: &SurrealServer,
    db: &str,
    run: &str,
) -> BTreeMap<String, (String, Vec<String>)> {
    let graph = graphagent::Graph::connect(server.url(), &server.options(db))
        .await
        .expect("connect to the graph");
    let rows = graph
        .query(
            "SELECT sentdm_message_id, status, events FROM sentdm_message \
             WHERE action_id = $action AND string::starts_with(sentdm_message_id, $run);",
            json!({"action": action_id(), "run": format!("{run}-")}),
        )
        .await
        .expect("query");
    let mut out = BTreeMap::new();
    for row in rows
        .first()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let events = row["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|e| e["source"] == "webhook")
            .filter_map(|e| e["status"].as_str().map(str::to_owned))
            .collect();
        out.insert(
            row["sentdm_message_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            (
                row["status"].as_str().unwrap_or_default().to_owned(),
                events,
            ),
        );
    }
    out
}

/// Every message of the storm is in the graph, delivered, with each of its three events
/// exactly once.
fn assert_complete(view: &BTreeMap<String, (String, Vec<String>)>, run: &str, messages: usize) {
    let mut wrong = Vec::new();
    for m in 0..messages {
        let id = message_id(run, m);
        match view.get(&id) {
            Some((status, events)) => {
                // The log keeps SentDM's spelling of each event's status.
                let mut sorted = events.clone();
                sorted.sort();
                let mut want: Vec<String> = STEPS.iter().map(|s| (*s).to_owned()).collect();
                want.sort();
                if status != "delivered" || sorted != want {
                    wrong.push(format!("{id}: {status} {events:?}"));
                }
            }
            None => wrong.push(format!("{id}: missing")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {messages} messages wrong: {wrong:#?}",
        wrong.len()
    );
}

fn bodies(run: &str, messages: usize) -> Arc<Vec<String>> {
    // Steps of one message far apart in the list, so they race across replicas.
    Arc::new(
        (0..STEPS.len())
            .flat_map(|step| (0..messages).map(move |m| event_body(run, m, step)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_kill_mid_storm_loses_no_acknowledged_event() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    let phases = Phases::start();
    let sim = start_sim().await;
    let ports = [free_port(), free_port(), free_port()];
    let deployment = Deployment::new(&sim, &server, "killstorm", "http://127.0.0.1:9");
    let mut children = deployment.start_all(&ports).await;
    phases.mark("3 replicas ready");

    let generator = Generator::of(&sim).await;
    let messages = 60;
    let bodies = bodies("kill", messages);
    let total = bodies.len();
    let acked = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(90);
    let run = {
        let (generator, bodies, acked) = (generator.clone(), bodies.clone(), acked.clone());
        tokio::spawn(async move { storm(&generator, &ports, bodies, 8, deadline, acked).await })
    };
    // Mid-way: kill -9 the third replica, with requests in flight to it.
    while acked.load(Ordering::Relaxed) < total / 3 && !run.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(&mut children[2]);
    let _ = children[2].wait().await;
    let at_kill = acked.load(Ordering::Relaxed);
    phases.mark(&format!(
        "replica :{} killed after {at_kill} acks",
        ports[2]
    ));
    let outcome = run.await.expect("storm");
    phases.mark("storm done");

    let by_killed = outcome.acked.values().filter(|p| **p == ports[2]).count();
    eprintln!(
        "  acked {} of {total} ({by_killed} by the killed replica); refused {:?}",
        outcome.acked.len(),
        outcome.refused
    );
    assert!(at_kill < total, "the kill came before the storm ended");
    assert!(
        by_killed > 0,
        "the killed replica acknowledged events first"
    );
    assert_eq!(
        outcome.acked.len(),
        total,
        "the survivors acknowledged every retried event: {:?}",
        outcome.refused
    );
    assert_complete(
        &graph_view(&server, "killstorm", "kill").await,
        "kill",
        messages,
    );
    phases.mark("graph checked");
    drop(children);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_server_restart_on_disk_loses_no_acknowledged_event() {
    let Some(mut server) = SurrealServer::start_on_disk().await else {
        return;
    };
    let phases = Phases::start();
    let sim = start_sim().await;
    let ports = [free_port(), free_port()];
    let deployment = Deployment::new(&sim, &server, "restart", "http://127.0.0.1:9");
    let children = deployment.start_all(&ports).await;
    phases.mark("2 replicas ready on a SurrealKV server");

    let generator = Generator::of(&sim).await;
    let messages = 40;
    let bodies = bodies("restart", messages);
    let total = bodies.len();
    let acked = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = {
        let (generator, bodies, acked) = (generator.clone(), bodies.clone(), acked.clone());
        tokio::spawn(async move { storm(&generator, &ports, bodies, 6, deadline, acked).await })
    };
    // Half-way: kill -9 the server and start it again on the same data, while the storm
    // goes on (attempts in between get 503 and are retried).
    while acked.load(Ordering::Relaxed) < total / 2 && !run.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_restart = acked.load(Ordering::Relaxed);
    server.restart().await;
    phases.mark(&format!("server restarted after {at_restart} acks"));
    // Each replica comes back by itself: its SDK connection reconnects.
    let http = reqwest::Client::new();
    for port in ports {
        let back = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            assert!(
                Instant::now() < back,
                "replica :{port} not ready again after the server restart:\n{}",
                deployment.log(port)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    phases.mark("replicas ready again");
    let outcome = run.await.expect("storm");
    phases.mark("storm done");
    eprintln!(
        "  acked {} of {total}; refused {:?}",
        outcome.acked.len(),
        outcome.refused
    );
    assert!(
        at_restart < total,
        "the restart came before the storm ended"
    );
    assert_eq!(outcome.acked.len(), total, "{:?}", outcome.refused);
    assert_complete(
        &graph_view(&server, "restart", "restart").await,
        "restart",
        messages,
    );
    phases.mark("graph checked");
    drop(children);
}
