//! Request ids, the access log and the `/metrics` switch, on a real server.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::util::{TestHost, builder, settings};

/// Captures every log line of this process (each test runs in its own: nextest).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("lock").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[tokio::test]
async fn request_ids_are_kept_or_generated_answered_and_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .init();
    let s = TestHost::start(builder(), settings(None, "mem://")).await;
    let http = reqwest::Client::new();

    let resp = http
        .get(s.url("/healthz?api_key=do-not-log-me"))
        .header("x-request-id", "req-abc_123")
        .header("authorization", "Bearer do-not-log-either")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc_123");

    // An id that is not sane (a space, too long) is replaced, and one is made when absent.
    for given in [Some("has space"), Some(&*"x".repeat(200)), None] {
        let mut req = http.get(s.url("/api/agents"));
        if let Some(g) = given {
            req = req.header("x-request-id", g);
        }
        let resp = req.send().await.expect("get");
        assert_eq!(resp.status(), 401, "no token");
        let id = resp.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }

    let lines = logs.lines();
    let access = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "request served" && l["span"]["request_id"] == "req-abc_123"
        })
        .unwrap_or_else(|| panic!("no access line for the id in {lines:#?}"));
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["span"]["method"], "GET");
    assert_eq!(access["span"]["route"], "/healthz");
    assert!(access["fields"]["latency_ms"].as_f64().is_some());
    let all = String::from_utf8_lossy(&logs.0.lock().expect("lock")).into_owned();
    assert!(!all.contains("do-not-log-me") && !all.contains("do-not-log-either"));
    // The 401s were logged under their generated ids too.
    let unauthorized = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request served" && l["fields"]["status"] == 401)
        .count();
    assert_eq!(unauthorized, 3);
}

#[tokio::test]
async fn metrics_are_served_unless_turned_off() {
    let on = TestHost::start(builder(), settings(None, "mem://")).await;
    // The gauge appears after the first count, which the server starts with.
    let mut text = String::new();
    for _ in 0..100 {
        let resp = reqwest::get(on.url("/metrics")).await.expect("get");
        assert_eq!(resp.status(), 200);
        text = resp.text().await.expect("body");
        if text.contains("# TYPE graphagent_webhook_outbox_depth gauge") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("# TYPE graphagent_webhook_outbox_depth gauge"),
        "{text}"
    );

    let mut off = settings(None, "mem://");
    off.telemetry.metrics_enabled = false;
    let off = TestHost::start(builder(), off).await;
    let resp = reqwest::get(off.url("/metrics")).await.expect("get");
    assert_eq!(resp.status(), 404);
}
