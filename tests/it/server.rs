//! The server against misbehaving clients, over bare TCP: slow request heads, bodies that
//! never complete, idle keep-alive connections, the connection cap, and a shutdown with
//! clients that would hold it forever. Timeouts are a fraction of a second here; bounds on
//! elapsed time are generous so a loaded machine does not fail them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{ConfigDir, TestHost, builder, settings};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Settings whose timeouts are all long, for tests to shorten the one they are about.
fn quiet() -> graphagent::Settings {
    let mut s = settings(None, "mem://");
    s.server.header_read_timeout = Duration::from_secs(60);
    s.server.body_timeout = Duration::from_secs(60);
    s.server.idle_timeout = Duration::from_secs(60);
    s
}

/// A bare HTTP/1.1 connection, for clients that misbehave on purpose.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(base: &str) -> Self {
        let addr = base.trim_start_matches("http://");
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.expect("send");
    }

    /// One response's status and JSON body, or why there was none within `within`.
    async fn response(&mut self, within: Duration) -> Result<(u16, Value), String> {
        tokio::time::timeout(within, self.read_response())
            .await
            .map_err(|_| format!("no response within {within:?}"))?
    }

    async fn read_response(&mut self) -> Result<(u16, Value), String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("not an HTTP response: {head}"))?;
                let len: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                let total = end + 4 + len;
                if self.buf.len() >= total {
                    let body =
                        serde_json::from_slice(&self.buf[end + 4..total]).unwrap_or(Value::Null);
                    self.buf.drain(..total);
                    return Ok((status, body));
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Wait for the server to close the connection without answering; how long it took.
    async fn closed(&mut self, within: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(within, self.stream.read(&mut chunk))
            .await
            .map_err(|_| format!("still open after {within:?}"))?;
        match read {
            Ok(0) | Err(_) => Ok(start.elapsed()),
            Ok(n) => Err(format!(
                "got data instead of a close: {}",
                String::from_utf8_lossy(&chunk[..n])
            )),
        }
    }
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

/// Send a request head one byte at a time, `gap` apart, until the server closes the
/// connection; how long after connecting that was.
async fn slow_head(base: String, gap: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut raw = Raw::connect(&base).await;
    let (mut rd, mut wr) = raw.stream.split();
    let trickle = async {
        for byte in HEALTHZ.as_bytes().iter().cycle() {
            if wr.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(gap).await;
        }
    };
    let mut chunk = [0u8; 1024];
    tokio::select! {
        () = trickle => Ok(start.elapsed()),
        read = rd.read(&mut chunk) => match read {
            Ok(0) | Err(_) => Ok(start.elapsed()),
            Ok(n) => Err(format!("answered: {}", String::from_utf8_lossy(&chunk[..n]))),
        },
        () = tokio::time::sleep(Duration::from_secs(20)) => Err("never cut off".into()),
    }
}

#[tokio::test]
async fn slow_request_heads_are_cut_off_and_others_are_still_served_past_the_cap() {
    let mut s = quiet();
    s.server.header_read_timeout = ms(500);
    s.server.max_connections = 4;
    let server = TestHost::start(builder(), s).await;
    // Twice the cap, each sending a byte every 150 ms: no head completes in 500 ms.
    let slow: Vec<_> = (0..8)
        .map(|_| tokio::spawn(slow_head(server.base.clone(), ms(150))))
        .collect();
    tokio::time::sleep(ms(200)).await;
    let started = Instant::now();
    let res = server
        .http
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("a normal client is served");
    assert_eq!(res.status(), 200);
    // Slots free up as slow clients are cut off, one header timeout after they were
    // accepted; 15 s is far more than that.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    for task in slow {
        let cut = task.await.expect("join").expect("slow client cut off");
        assert!(cut >= ms(500), "cut off before the header timeout: {cut:?}");
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test]
async fn a_request_body_that_never_completes_is_408() {
    let mut s = quiet();
    s.server.body_timeout = ms(500);
    let server = TestHost::start(builder(), s).await;
    let head = "POST /api/auth/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n";
    let body = json!({"email": "nobody@example.com", "password": "wrong"}).to_string();

    let mut raw = Raw::connect(&server.base).await;
    let started = Instant::now();
    raw.send(&format!(
        "{head}Content-Length: {}\r\n\r\n",
        body.len() + 10
    ))
    .await;
    raw.send(&body).await;
    let (status, answer) = raw.response(secs(10)).await.expect("an answer");
    assert_eq!(status, 408, "{answer}");
    assert_eq!(answer["error"]["code"], "request_timeout");
    assert!(started.elapsed() >= ms(500), "{:?}", started.elapsed());
    // The rest of that body would be read as the next request: the connection is closed.
    raw.closed(secs(10)).await.expect("closed after the 408");

    // A body that arrives in pieces, but within the timeout, is handled as usual.
    let mut raw = Raw::connect(&server.base).await;
    raw.send(&format!("{head}Content-Length: {}\r\n\r\n", body.len()))
        .await;
    let (first, rest) = body.split_at(10);
    raw.send(first).await;
    tokio::time::sleep(ms(100)).await;
    raw.send(rest).await;
    let (status, answer) = raw.response(secs(10)).await.expect("an answer");
    assert_eq!(status, 401, "{answer}");
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    let mut s = quiet();
    s.server.header_read_timeout = ms(300);
    s.server.idle_timeout = secs(3);
    let server = TestHost::start(builder(), s).await;
    let mut raw = Raw::connect(&server.base).await;
    raw.send(HEALTHZ).await;
    assert_eq!(raw.response(secs(10)).await.expect("first").0, 200);
    // Idle for over three header timeouts: the connection is still there.
    tokio::time::sleep(secs(1)).await;
    raw.send(HEALTHZ).await;
    let second = raw
        .response(secs(10))
        .await
        .expect("second, same connection");
    assert_eq!(second.0, 200);
    let idle = raw
        .closed(secs(15))
        .await
        .expect("closed once idle too long");
    assert!(
        idle >= secs(2),
        "closed after {idle:?}, before the idle timeout"
    );
}

#[tokio::test]
async fn no_more_than_max_connections_are_served_at_once() {
    let mut s = quiet();
    s.server.max_connections = 3;
    let server = TestHost::start(builder(), s).await;
    // Three connections in the middle of a request head: none idle, none to close.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(&server.base).await;
        raw.send("GET /healthz HTTP/1.1\r\nHost: te").await;
        held.push(raw);
    }
    // The kernel completes the fourth handshake, but the server does not take it on
    // while three connections are open.
    let mut fourth = Raw::connect(&server.base).await;
    fourth.send(HEALTHZ).await;
    let early = fourth.response(ms(700)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    drop(held.pop());
    let (status, _) = fourth
        .response(secs(10))
        .await
        .expect("served once a slot frees");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    let mut s = quiet();
    s.server.max_connections = 2;
    let server = TestHost::start(builder(), s).await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut raw = Raw::connect(&server.base).await;
        raw.send(HEALTHZ).await;
        assert_eq!(raw.response(secs(10)).await.expect("served").0, 200);
        idle.push(raw);
        // Distinct idle-since instants, so "longest idle" is the first.
        tokio::time::sleep(ms(50)).await;
    }
    // Without eviction this would wait for the 60 s idle timeout.
    let mut third = Raw::connect(&server.base).await;
    third.send(HEALTHZ).await;
    let (status, _) = third.response(secs(10)).await.expect("served at the cap");
    assert_eq!(status, 200);
    let mut second = idle.pop().expect("second");
    let mut first = idle.pop().expect("first");
    first
        .closed(secs(5))
        .await
        .expect("the longest idle was closed");
    second.send(HEALTHZ).await;
    let (status, _) = second.response(secs(10)).await.expect("the other kept");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn shutdown_ends_within_the_grace_period_despite_stuck_clients() {
    let dir = ConfigDir::new(
        "agent: x\nactions:\n  - action: recorder\n    name: a\n    context: { tag: t }\n",
    );
    let mut s = settings(Some(dir.path()), &dir.graph_url());
    s.server.header_read_timeout = secs(60);
    s.server.shutdown_grace = secs(1);
    let mut server = TestHost::start(builder(), s).await;
    let id = graphagent::plugin::action_id("x", "a");
    let token = server.token().await;
    // A request whose handler takes a minute, and a client that never finishes its head.
    let stuck = tokio::spawn(
        server
            .http
            .get(server.url(&format!("/api/actions/{id}/recorder/tag?delay_ms=60000")))
            .bearer_auth(&token)
            .send(),
    );
    let mut half = Raw::connect(&server.base).await;
    half.send("GET /healthz HTTP/1.1\r\nHo").await;
    tokio::time::sleep(ms(300)).await;

    let started = Instant::now();
    server.trigger_stop();
    let stopped = tokio::time::timeout(secs(15), server.join())
        .await
        .expect("serve returns soon after the grace period");
    stopped.expect("clean stop");
    let took = started.elapsed();
    assert!(took >= ms(950), "gave up before the grace period: {took:?}");
    let cut = stuck.await.expect("join");
    assert!(cut.is_err(), "the stuck request was answered: {cut:?}");
    half.closed(secs(5))
        .await
        .expect("the half-sent head was closed");
    // The graph was closed: the same data dir opens again.
    let again = TestHost::start(builder(), settings(Some(dir.path()), &dir.graph_url())).await;
    assert_eq!(again.admin_get("/api/agents").await.0, 200);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let server = TestHost::start(builder(), quiet()).await;
    let tcp = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = http::Request::get(server.url("/healthz"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let res = sender.send_request(req).await.expect("HTTP/2 response");
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), http::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .expect("body")
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body, json!({"status": "ok"}));
    }
}

#[tokio::test]
async fn unusable_server_settings_stop_start_up() {
    let mut s = settings(None, "mem://");
    s.server.header_read_timeout = Duration::ZERO;
    s.server.max_connections = 0;
    let err = match crate::util::builder().settings(s).build().await {
        Ok(_) => panic!("built with a zero header timeout and no connections"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("GRAPHAGENT_HEADER_READ_TIMEOUT_SECS: expected 1 to 86400 seconds, got 0"),
        "{err}"
    );
    assert!(
        err.contains("GRAPHAGENT_MAX_CONNECTIONS: expected at least 1, got 0"),
        "{err}"
    );
}
