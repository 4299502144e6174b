//! The host's settings: defaults, overridden by `GRAPHAGENT_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::auth::AuthSettings;
use crate::graph::GraphOptions;
use crate::server::ServerSettings;
use crate::webhooks::WebhookSettings;

/// Body size limit for every route, unless configured otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// Default graph: embedded SurrealKV under `./data/graph`.
pub const DEFAULT_GRAPH_URL: &str = "surrealkv://./data/graph";

/// Everything the host needs to start, besides the action types.
#[derive(Debug, Clone)]
pub struct Settings {
    /// An agent file, or a directory of them (`GRAPHAGENT_CONFIG`). `None`: no agents.
    pub config_path: Option<PathBuf>,
    /// Listen address for [`crate::Host::run`] (`GRAPHAGENT_BIND`).
    pub bind: SocketAddr,
    /// Graph URL (`GRAPHAGENT_GRAPH_URL`).
    pub graph_url: String,
    /// Credentials and names for remote graphs (`GRAPHAGENT_GRAPH_*`).
    pub graph: GraphOptions,
    /// Public base URL of this server, for provider callbacks (`GRAPHAGENT_PUBLIC_BASE_URL`).
    pub public_base_url: Option<String>,
    /// Login, tokens, keys.
    pub auth: AuthSettings,
    /// Largest request body accepted (`GRAPHAGENT_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Client timeouts, the connection cap and the shutdown grace period.
    pub server: ServerSettings,
    /// Outbound webhooks (`GRAPHAGENT_WEBHOOK_*`).
    pub webhooks: WebhookSettings,
    /// Environment values that could not be parsed, reported by [`crate::HostBuilder::build`].
    pub invalid_env: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            config_path: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            graph_url: DEFAULT_GRAPH_URL.to_owned(),
            graph: GraphOptions::default(),
            public_base_url: None,
            auth: AuthSettings::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            server: ServerSettings::default(),
            webhooks: WebhookSettings::default(),
            invalid_env: Vec::new(),
        }
    }
}

impl Settings {
    /// Settings from the `GRAPHAGENT_*` environment variables, defaults elsewhere.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let defaults = Self::default();
        let (webhooks, mut invalid_env) = WebhookSettings::from_env();
        let (server, invalid_server) = ServerSettings::from_env();
        invalid_env.extend(invalid_server);
        Self {
            webhooks,
            server,
            invalid_env,
            config_path: var("GRAPHAGENT_CONFIG").map(PathBuf::from),
            bind: var("GRAPHAGENT_BIND")
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.bind),
            graph_url: var("GRAPHAGENT_GRAPH_URL").unwrap_or(defaults.graph_url),
            graph: GraphOptions::from_env(),
            public_base_url: var("GRAPHAGENT_PUBLIC_BASE_URL"),
            auth: AuthSettings::from_env(),
            max_body_bytes: var("GRAPHAGENT_MAX_BODY_BYTES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.max_body_bytes),
        }
    }
}
