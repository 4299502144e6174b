//! Outbound delivery across replica processes: the replica holding an attempt's lease is
//! killed mid-attempt; another takes the delivery over only once the lease has expired,
//! it is delivered once, under the same `webhook-id`, and a retry scheduled before a
//! restart is made after it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use graphagent::testing::SurrealServer;
use serde_json::{Value, json};
use tokio::process::Child;

use super::storm::{Generator, event_body};
use super::{Admin, Deployment, Phases, free_port, kill, start_sim};

/// Per-attempt timeout of the replicas' outbound worker: the longest allowed, so that the
/// first attempt is still in flight when its replica is killed on a slow machine. The
/// lease is then max(60 s default, 30 s + 30 s) = 60 s.
const TIMEOUT_SECS: u64 = 30;
const LEASE: Duration = Duration::from_secs(60);
/// The first retry comes this long after a failed attempt.
const FIRST_RETRY_SECS: u64 = 10;

/// One request the subscriber got.
#[derive(Debug, Clone)]
struct Hit {
    at_ms: i64,
    webhook_id: String,
    /// The replica's end of the connection.
    peer: SocketAddr,
    answered: Option<u16>,
}

/// A subscriber whose first request never gets an answer, whose second gets 503 and
/// every later one 200.
#[derive(Clone, Default)]
struct Subscriber {
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Subscriber {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let me = self.clone();
        let app = axum::Router::new().fallback(
            move |ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap| {
                let me = me.clone();
                async move { me.answer(peer, &headers).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        url
    }

    async fn answer(&self, peer: SocketAddr, headers: &HeaderMap) -> StatusCode {
        let n = {
            let mut hits = self.hits.lock().expect("hits");
            let answered = match hits.len() {
                0 => None,
                1 => Some(503),
                _ => Some(200),
            };
            hits.push(Hit {
                at_ms: graphagent::time::now_ms(),
                webhook_id: headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                peer,
                answered,
            });
            hits.len()
        };
        match n {
            // Never answers: the attempt hangs until its replica gives up or dies.
            1 => std::future::pending().await,
            2 => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "{n} requests expected within {within:?}, got {hits:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The socket inodes of loopback TCP connections whose local port is `port`.
fn socket_inodes(port: u16) -> HashSet<String> {
    let mut out = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Some(inode) = cols.get(9)
            {
                out.insert((*inode).to_owned());
            }
        }
    }
    out
}

/// Which of `children` owns the client end of a connection from `peer` (Linux: the
/// socket's inode among the process's open files).
fn owner(children: &[Child], peer: SocketAddr) -> Option<usize> {
    let inodes = socket_inodes(peer.port());
    children.iter().position(|child| {
        let Some(pid) = child.id() else { return false };
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|link| {
                link.to_str()
                    .and_then(|l| l.strip_prefix("socket:["))
                    .and_then(|l| l.strip_suffix(']'))
                    .map(str::to_owned)
            })
            .any(|inode| inodes.contains(&inode))
    })
}

/// The subscription's one delivery row, read from the graph.
async fn delivery(graph: &graphagent::Graph, subscription: &str) -> Value {
    let rows = graph
        .query(
            "SELECT * FROM webhook_delivery WHERE subscription_id = $sub;",
            json!({"sub": subscription}),
        )
        .await
        .expect("query");
    let rows = rows
        .first()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert_eq!(rows.len(), 1, "one delivery: {rows:#?}");
    rows[0].clone()
}

async fn wait_delivery(
    graph: &graphagent::Graph,
    subscription: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let row = delivery(graph, subscription).await;
        if done(&row) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "delivery not as expected: {row:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_outbound_attempt_taken_over_after_lease_and_delivered_once() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    if !std::path::Path::new("/proc/net/tcp").exists() {
        eprintln!("SKIPPED: finding the replica that holds a connection needs Linux /proc");
        return;
    }
    let phases = Phases::start();
    let sim = start_sim().await;
    let ports = [free_port(), free_port()];
    let mut deployment = Deployment::new(&sim, &server, "outbound", "http://127.0.0.1:9");
    deployment.extra_env = vec![
        (
            "GRAPHAGENT_WEBHOOK_TIMEOUT_SECS".into(),
            TIMEOUT_SECS.to_string(),
        ),
        (
            "GRAPHAGENT_WEBHOOK_RETRY_SCHEDULE".into(),
            format!("{FIRST_RETRY_SECS}s,1s,1s"),
        ),
    ];
    let mut children = deployment.start_all(&ports).await;
    phases.mark("2 replicas ready");

    let subscriber = Subscriber::default();
    let url = subscriber.start().await;
    let admin = Admin::of(ports[0]).await;
    let (status, sub) = admin
        .call(
            reqwest::Method::POST,
            "/api/webhooks/subscriptions",
            Some(json!({"url": url, "event_types": ["sentdm.message.delivered"]})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let sub_id = sub["id"].as_str().expect("subscription id").to_owned();
    let graph = graphagent::Graph::connect(server.url(), &server.options("outbound"))
        .await
        .expect("graph");

    // One SentDM event folded → one outbound event → one delivery, claimed by whichever
    // replica's worker gets it first.
    let generator = Generator::of(&sim).await;
    let status = generator
        .post(ports[0], &event_body("out", 0, 2))
        .await
        .expect("answer");
    assert_eq!(status, 200);
    let first = subscriber.wait_for(1, Duration::from_secs(60)).await[0].clone();
    let holder = owner(&children, first.peer).expect("the replica making the attempt");
    let other = 1 - holder;
    let leased = delivery(&graph, &sub_id).await;
    let locked_until = leased["locked_until"].as_i64().expect("locked_until");
    assert!(
        locked_until - first.at_ms >= i64::try_from(TIMEOUT_SECS * 1000).expect("ms"),
        "the lease outlives the attempt's timeout: {leased:#}"
    );
    // Mid-attempt (the subscriber has not answered): kill -9 the lease holder.
    kill(&mut children[holder]);
    let _ = children[holder].wait().await;
    phases.mark(&format!(
        "lease holder :{} killed mid-attempt",
        ports[holder]
    ));

    // The other replica takes it over, not before the lease expires.
    let hits = subscriber
        .wait_for(2, LEASE + Duration::from_secs(60))
        .await;
    let second = hits[1].clone();
    phases.mark("taken over");
    assert!(
        second.at_ms >= locked_until,
        "taken over at {} before the lease expired at {locked_until}",
        second.at_ms
    );
    assert!(second.at_ms - first.at_ms >= i64::try_from(TIMEOUT_SECS * 1000).expect("ms"));
    // Only `other` is alive now, so it made this attempt.
    assert_eq!(second.webhook_id, first.webhook_id, "the same event id");

    // It answered 503: a retry is scheduled. Kill that replica too once the attempt is
    // recorded, restart the first one: the retry is made by the restarted process.
    wait_delivery(&graph, &sub_id, Duration::from_secs(30), |d| {
        d["last_status_code"] == 503 && d["status"] == "pending"
    })
    .await;
    kill(&mut children[other]);
    let _ = children[other].wait().await;
    children[holder] = deployment.spawn(ports[holder]);
    deployment
        .wait_ready(&mut children[holder], ports[holder])
        .await;
    phases.mark("replica restarted");
    let done = wait_delivery(&graph, &sub_id, Duration::from_secs(60), |d| {
        d["status"] == "succeeded"
    })
    .await;
    phases.mark("delivered");
    // Give a stray duplicate a chance to show up before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hits = subscriber.hits();
    assert_eq!(hits.len(), 3, "{hits:#?}");
    assert!(
        hits.iter().all(|h| h.webhook_id == first.webhook_id),
        "{hits:#?}"
    );
    assert_eq!(
        hits.iter().filter(|h| h.answered == Some(200)).count(),
        1,
        "delivered once: {hits:#?}"
    );
    assert_eq!(done["last_status_code"], 200, "{done:#}");
    drop(children);
}
