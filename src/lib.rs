//! graphagent: a host for agent *actions* (plugins) whose state lives in a SurrealDB graph.
//!
//! The host loads agents and their actions from `agent.yaml`, runs their lifecycle hooks,
//! serves their HTTP routes with auth and an OpenAPI document, and gives them one [`Graph`]
//! handle. Action crates depend on this library; the server binary that bundles them lives
//! in `app/` (see `docs/ARCHITECTURE.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), graphagent::HostError> {
//! let host = graphagent::HostBuilder::new()
//!     // .action::<MyAction>()
//!     // Defaults, then the file GRAPHAGENT_SETTINGS names (if any), then GRAPHAGENT_*.
//!     .settings(graphagent::Settings::load(None)?)
//!     .build()
//!     .await?;
//! host.run().await
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod graph;
mod host;
pub mod outbox;
pub mod plugin;
pub mod runtime;
pub mod server;
pub mod settings;
mod settings_source;
pub mod state;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod webhooks;

pub use auth::{Admin, AuthSettings};
pub use error::{ApiError, ApiResult};
pub use graph::{Graph, GraphError, GraphOptions};
pub use host::{Host, HostBuilder, HostError, shutdown_signal};
pub use plugin::{
    Action, ActionContext, ActionDirectory, ActionError, ActionRef, ActionState, AgentHandle,
    FieldError,
};
pub use runtime::ReloadReport;
pub use server::ServerSettings;
pub use settings::{DEFAULT_BIND, DEFAULT_GRAPH_URL, Settings, SettingsErrors};
pub use state::HostState;
pub use telemetry::TelemetrySettings;
pub use webhooks::WebhookSettings;
