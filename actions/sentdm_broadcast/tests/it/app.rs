//! The action in a real host: server on a loopback port, embedded SurrealDB, the
//! simulator over real HTTP delivering real signed webhooks to it.

use std::path::Path;
use std::time::Duration;

use graphagent::testing::{JWT_SECRET, TestHost, test_settings};
use graphagent::{Graph, HostBuilder};
use graphagent_sentdm::SentDmBroadcast;
use sentdm_client::signing::SigningSecret;
use sentdm_sim::SimHandle;
use serde_json::{Value, json};

/// A running host with SentDM actions configured against `sim`.
pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub graph: Graph,
    pub token: String,
    pub host_agent: graphagent::AgentHandle,
    /// Derives machine keys with the host's JWT secret (built once, not per delivery).
    keys: graphagent::auth::Auth,
    /// Webhook id and secret by action name, read once (deliveries during an injected
    /// graph outage still need them).
    states: std::sync::Mutex<std::collections::HashMap<String, (String, SigningSecret)>>,
    host: TestHost,
    /// Holds agent.yaml.
    dir: Option<tempfile::TempDir>,
}

pub struct AppOptions<'a> {
    /// Extra `context:` lines for every action (YAML, 6-space indented).
    pub extra: &'a str,
    /// Action names (one `sentdm_broadcast` each).
    pub names: &'a [&'a str],
    /// Graph URL (`mem://` by default).
    pub graph_url: Option<String>,
    /// Reuse this port (restart tests).
    pub port: Option<u16>,
    /// Tell the host its public URL (without it no webhook is registered).
    pub public_url: bool,
    /// `GRAPHAGENT_OTLP_ENDPOINT` (none: no trace export).
    pub otlp_endpoint: Option<String>,
}

impl Default for AppOptions<'_> {
    fn default() -> Self {
        Self {
            extra: "",
            names: &["sentdm"],
            graph_url: None,
            port: None,
            public_url: true,
            otlp_endpoint: None,
        }
    }
}

pub fn agent_yaml(sim: &SimHandle, o: &AppOptions<'_>) -> String {
    let mut y = String::from("agent: acme/notifier\nactions:\n");
    for name in o.names {
        y.push_str(&format!(
            "  - action: sentdm_broadcast\n    name: {name}\n    context:\n      api_base: {}\n      api_key: {}\n      sweep_interval_seconds: 0\n      default_template_name: order_confirmation\n{}{}",
            sim.base_url(),
            sim.api_key(),
            if o.extra.contains("record_event_history_limit") { "" } else { "      record_event_history_limit: 100\n" },
            o.extra
        ));
    }
    y
}

impl App {
    pub async fn start(sim: &SimHandle, o: AppOptions<'_>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.yaml");
        std::fs::write(&config, agent_yaml(sim, &o)).expect("write config");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", o.port.unwrap_or(0)))
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let graph_url = o.graph_url.clone().unwrap_or_else(|| "mem://".into());
        let mut settings = test_settings(Some(config), &graph_url);
        settings.public_base_url = o.public_url.then(|| base.clone());
        settings.telemetry.otlp_endpoint = o.otlp_endpoint.clone();
        // Outbound webhooks to receivers on loopback, retried within milliseconds.
        settings.webhooks.allow_http_loopback = true;
        settings.webhooks.retry_schedule = vec![Duration::from_millis(50); 3];
        settings.webhooks.poll_interval = Duration::from_millis(50);
        let builder = HostBuilder::new().action::<SentDmBroadcast>();
        let host = TestHost::start_on(builder, settings, listener).await;
        let token = host.token().await;
        Self {
            base: host.base.clone(),
            http: host.http.clone(),
            graph: host.graph.clone(),
            token,
            host_agent: host.agent("acme/notifier").expect("agent"),
            keys: graphagent::auth::Auth::new(
                Graph::memory().await.expect("graph"),
                &graphagent::AuthSettings {
                    jwt_secret: Some(JWT_SECRET.into()),
                    ..graphagent::AuthSettings::default()
                },
            )
            .await
            .expect("auth"),
            states: Default::default(),
            host,
            dir: Some(dir),
        }
    }

    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    pub fn action_id(name: &str) -> String {
        graphagent::plugin::action_id("acme/notifier", name)
    }

    pub fn action(&self, name: &str) -> std::sync::Arc<SentDmBroadcast> {
        self.host_agent
            .action_named::<SentDmBroadcast>(name)
            .expect("action")
    }

    pub async fn stop(self) {
        self.host.stop().await.expect("clean stop");
    }

    /// Admin call under the action's prefix; returns status and JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!(
            "{}/api/actions/{}{path}",
            self.base,
            Self::action_id("sentdm")
        );
        self.raw(method, &url, body).await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Rewrite agent.yaml with `extra` context lines and reload it over HTTP.
    pub async fn reload(&self, sim: &SimHandle, extra: &str) -> (u16, Value) {
        let dir = self.dir.as_ref().expect("config dir");
        let options = AppOptions {
            extra,
            ..AppOptions::default()
        };
        std::fs::write(dir.path().join("agent.yaml"), agent_yaml(sim, &options))
            .expect("write config");
        let url = format!(
            "{}/api/agents/{}/reload",
            self.base,
            graphagent::plugin::agent_id("acme/notifier")
        );
        self.raw(reqwest::Method::POST, &url, None).await
    }

    pub async fn broadcast(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, "/sentdm/broadcast", Some(body))
            .await
    }

    /// The webhook id and secret the action stored.
    pub async fn webhook_state(&self, name: &str) -> Option<(String, SigningSecret)> {
        let rows = self
            .graph
            .query(
                "SELECT webhook_id, signing_secret FROM type::record('sentdm_webhook_state', $id);",
                json!({"id": Self::action_id(name)}),
            )
            .await
            .expect("query");
        let row = rows.into_iter().next()?.as_array()?.first()?.clone();
        Some((
            row["webhook_id"].as_str()?.to_owned(),
            SigningSecret::parse(row["signing_secret"].as_str()?).ok()?,
        ))
    }

    /// POST a delivery to this action's receiver, signed as SentDM would.
    pub async fn deliver(
        &self,
        name: &str,
        body: &str,
        tweak: impl FnOnce(&mut Delivery),
    ) -> (u16, Value) {
        let cached = self.states.lock().expect("lock").get(name).cloned();
        let (webhook_id, secret) = match cached {
            Some(s) => s,
            None => {
                let s = self.webhook_state(name).await.expect("webhook state");
                self.states
                    .lock()
                    .expect("lock")
                    .insert(name.to_owned(), s.clone());
                s
            }
        };
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut d = Delivery {
            key: Some(self.scoped_key(name)),
            webhook_id: webhook_id.clone(),
            timestamp: ts,
            signature: secret.sign(&webhook_id, ts, body.as_bytes()),
            body: body.to_owned(),
        };
        tweak(&mut d);
        let mut url = format!("{}/api/sentdm/webhook/{}", self.base, Self::action_id(name));
        if let Some(k) = &d.key {
            url.push_str(&format!("?api_key={k}"));
        }
        let res = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-webhook-id", &d.webhook_id)
            .header("x-webhook-timestamp", d.timestamp.to_string())
            .header("x-webhook-signature", &d.signature)
            .body(d.body.clone())
            .send()
            .await
            .expect("deliver");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The machine key in the webhook URL, derived the way the host derives it.
    pub fn scoped_key(&self, name: &str) -> String {
        self.key_for_action_id(&Self::action_id(name))
    }

    /// The machine key the host would put in the webhook URL of action `action_id`,
    /// loaded or not.
    pub fn key_for_action_id(&self, action_id: &str) -> String {
        self.derive_key(&format!("webhook:sentdm:{action_id}"))
    }

    /// A machine key for any scope, derived the way the host derives it.
    pub fn derive_key(&self, scope: &str) -> String {
        use graphagent::plugin::ScopedKeys;
        self.keys.derive(scope).expect("key")
    }

    /// Write `request` on a new connection and read one answer (status and JSON body),
    /// without sending anything more, whatever its head promised.
    pub async fn exchange(&self, request: &[u8], within: Duration) -> Result<(u16, Value), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(request).await.map_err(|e| e.to_string())?;
        let answer = async {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed without an answer".to_owned());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let len: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
                    let status = status.ok_or_else(|| format!("not HTTP: {head}"))?;
                    return Ok((
                        status,
                        serde_json::from_str(&body[..len]).unwrap_or(Value::Null),
                    ));
                }
            }
        };
        tokio::time::timeout(within, answer)
            .await
            .map_err(|_| format!("no answer within {within:?}"))?
    }

    pub async fn record_count(&self) -> u64 {
        let out = self
            .graph
            .query("RETURN count(SELECT id FROM sentdm_message);", Value::Null)
            .await
            .expect("count");
        out[0].as_u64().unwrap_or(0)
    }
}

/// A delivery before it is sent, for tests that tamper with it.
pub struct Delivery {
    pub key: Option<String>,
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
}

pub fn tmp_graph(dir: &Path) -> String {
    format!("surrealkv://{}", dir.join("graph").display())
}

pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}
