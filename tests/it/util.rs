//! Test harness: a real host on a loopback port with a real SurrealDB engine, plus a
//! `recorder` action that logs its hooks so lifecycle order can be asserted.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use graphagent::plugin::{ActionRef, ActionState, Json, Query};
use graphagent::{Action, ActionContext, ActionError, Graph, GraphOptions, HostBuilder, Settings};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Hook calls, `"{hook} {action_name} {tag}"`, in call order. Each nextest test runs in
/// its own process, so one global log per test.
pub static HOOKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn hooks() -> Vec<String> {
    HOOKS.lock().map(|h| h.clone()).unwrap_or_default()
}

pub fn clear_hooks() {
    if let Ok(mut h) = HOOKS.lock() {
        h.clear();
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderConfig {
    pub tag: String,
    /// Name of a hook that should fail (`on_register`, `on_reload`, `on_deregister`).
    #[serde(default)]
    pub fail: Option<String>,
}

pub struct Recorder {
    ctx: ActionContext,
    config: RecorderConfig,
}

impl Recorder {
    fn record(&self, hook: &str) -> Result<(), ActionError> {
        if let Ok(mut h) = HOOKS.lock() {
            h.push(format!(
                "{hook} {} {}",
                self.ctx.action_name, self.config.tag
            ));
        }
        if self.config.fail.as_deref() == Some(hook) {
            return Err(ActionError::new(format!("{hook} failed on purpose")));
        }
        Ok(())
    }
}

#[async_trait]
impl Action for Recorder {
    const TYPE_NAME: &'static str = "recorder";
    const ALIASES: &'static [&'static str] = &["tests/recorder_action"];
    type Config = RecorderConfig;

    fn create(ctx: ActionContext, config: RecorderConfig) -> Result<Self, ActionError> {
        Ok(Self { ctx, config })
    }
    async fn on_register(&self) -> Result<(), ActionError> {
        self.record("on_register")
    }
    async fn on_reload(&self, _previous: &RecorderConfig) -> Result<(), ActionError> {
        self.record("on_reload")
    }
    async fn on_deregister(&self) -> Result<(), ActionError> {
        self.record("on_deregister")
    }
    fn routes() -> OpenApiRouter<ActionState> {
        OpenApiRouter::new().routes(routes!(tag_route))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct TagQuery {
    /// Sleep this long before answering (in-flight tests).
    #[serde(default)]
    delay_ms: u64,
}

/// The instance's tag, after an optional delay.
#[utoipa::path(get, path = "/recorder/tag", tag = "Recorder", params(TagQuery),
    responses((status = 200, body = String)))]
async fn tag_route(ActionRef(me): ActionRef<Recorder>, Query(q): Query<TagQuery>) -> Json<String> {
    tokio::time::sleep(Duration::from_millis(q.delay_ms)).await;
    Json(me.config.tag.clone())
}

pub fn builder() -> HostBuilder {
    HostBuilder::new()
        .action::<graphagent_echo::Echo>()
        .action::<Recorder>()
}

pub fn settings(config: Option<PathBuf>, graph_url: &str) -> Settings {
    let mut s = Settings {
        config_path: config,
        graph_url: graph_url.to_owned(),
        ..Settings::default()
    };
    s.auth.jwt_secret = Some(JWT_SECRET.to_owned());
    s.auth.admin_email = Some(ADMIN_EMAIL.to_owned());
    s.auth.admin_password = Some(ADMIN_PASSWORD.to_owned());
    s
}

/// [`settings`] with connection options for the graph (a remote server's credentials,
/// namespace and database).
pub fn settings_with_graph(
    config: Option<PathBuf>,
    graph_url: &str,
    graph: &GraphOptions,
) -> Settings {
    let mut s = settings(config, graph_url);
    s.graph = graph.clone();
    s
}

/// A temp dir with `agent.yaml` in it.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new(agent_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = Self { dir };
        me.write(agent_yaml);
        me
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("agent.yaml")
    }
    pub fn write(&self, agent_yaml: &str) {
        std::fs::write(self.path(), agent_yaml).expect("write agent.yaml");
    }
    pub fn graph_url(&self) -> String {
        format!("surrealkv://{}", self.dir.path().join("graph").display())
    }
}

/// A running host.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub graph: Graph,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), graphagent::HostError>>>,
}

impl TestServer {
    pub async fn start(settings: Settings) -> Self {
        Self::start_with(builder(), settings).await
    }

    pub async fn start_with(builder: HostBuilder, settings: Settings) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,surrealdb=warn")
            .with_test_writer()
            .try_init();
        let host = builder
            .settings(settings)
            .build()
            .await
            .expect("host builds");
        let graph = host.graph().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(host.serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            graph,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Ask for a graceful stop and wait for the server to finish.
    pub async fn stop(mut self) -> Result<(), graphagent::HostError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task"),
            None => Ok(()),
        }
    }

    pub fn trigger_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(mut self) -> Result<(), graphagent::HostError> {
        match self.task.take() {
            Some(task) => task.await.expect("server task"),
            None => Ok(()),
        }
    }

    pub async fn token(&self) -> String {
        let res = self
            .http
            .post(self.url("/api/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// GET with admin credentials; returns status and JSON body.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let token = self.token().await;
        self.get_with_token(path, &token).await
    }

    /// GET with `token` as the bearer token; returns status and JSON body.
    pub async fn get_with_token(&self, path: &str, token: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let token = self.token().await;
        let res = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
