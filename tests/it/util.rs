//! Test harness: the host's own test support (`graphagent::testing`: a real host on a
//! loopback port with a real SurrealDB engine), the echo and `recorder` action types, and
//! the `recorder` action itself, which logs its hooks so lifecycle order can be asserted.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use graphagent::plugin::{ActionRef, ActionState, Json, Query};
use graphagent::{Action, ActionContext, ActionError, GraphOptions, HostBuilder, Settings};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use graphagent::testing::{ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, TestHost};

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

/// Test settings: the test admin seeded, agents from `config`, the graph at `graph_url`.
pub fn settings(config: Option<PathBuf>, graph_url: &str) -> Settings {
    graphagent::testing::test_settings(config, graph_url)
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
