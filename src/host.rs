//! Composing and running a host: [`HostBuilder`] opens the graph, starts the services
//! and loads the agents; [`Host`] serves them until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::api;
use crate::auth::{self, Auth};
use crate::config::{self, AgentFile, ConfigErrors};
use crate::graph::{Graph, GraphError};
use crate::outbox::{self, EventPublisher};
use crate::plugin::{Action, ActionDirectory, ActionTypes, AgentHandle, HostInfo, ScopedKeys};
use crate::runtime::{self, LoadError, ReloadReport, Runtime};
use crate::server::{self, ServerSettings};
use crate::settings::{Settings, SettingsErrors, Source};
use crate::state::HostState;
use crate::webhooks::Webhooks;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// agent.yaml is invalid (every problem, with file, line and key).
    #[error("invalid configuration:\n{0}")]
    Config(ConfigErrors),
    /// The graph could not be opened or written.
    #[error("graph: {0}")]
    Graph(#[from] GraphError),
    /// Host settings are unusable (every problem, one per line).
    #[error("invalid settings:\n{0}")]
    Settings(#[from] SettingsErrors),
    /// Auth could not start (the admin password could not be hashed).
    #[error("auth: {0}")]
    Auth(String),
    /// Binding or serving failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Two registered parts (the host, action types) give one OpenAPI schema name to
    /// different types.
    #[error("{0}")]
    OpenApi(#[from] api::SchemaConflict),
}

impl From<LoadError> for HostError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Config(errors) => Self::Config(errors),
            LoadError::Graph(e) => Self::Graph(e),
        }
    }
}

impl From<auth::AuthInitError> for HostError {
    fn from(e: auth::AuthInitError) -> Self {
        match e {
            auth::AuthInitError::Graph(e) => Self::Graph(e),
            auth::AuthInitError::Settings(e) => Self::Settings(e),
            auth::AuthInitError::Config(m) => Self::Auth(m),
        }
    }
}

/// Composes a host from action types and settings.
#[derive(Default)]
pub struct HostBuilder {
    types: ActionTypes,
    settings: Settings,
}

impl HostBuilder {
    /// A builder with no action types and default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register action type `A` (under its type name and aliases).
    ///
    /// # Panics
    /// When a type name or alias is already registered: two types claiming one name is
    /// a bug in the program that composes the host, not a runtime condition.
    #[must_use]
    pub fn action<A: Action>(mut self) -> Self {
        if let Err(e) = self.types.register::<A>() {
            panic!("{e}");
        }
        self
    }

    /// Replace the settings.
    #[must_use]
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The settings, to adjust before [`build`](Self::build).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Validate agent files at `path` against the registered types without starting
    /// anything (`graphagent check`).
    pub fn check(&self, path: &Path) -> Result<Vec<AgentFile>, ConfigErrors> {
        let files = config::load_path(path)?;
        runtime::check_files(&self.types, &files)?;
        Ok(files)
    }

    /// Check the settings and agent files, then open the graph, seed auth, load the
    /// configured agents (running their hooks) and assemble the router.
    pub async fn build(self) -> Result<Host, HostError> {
        let settings = self.settings;
        // Validate before touching the graph, so bad settings or a bad file fail fast and
        // create nothing.
        settings.validate()?;
        // The metrics recorder is installed before anything is counted: a metric recorded
        // before it exists (a SentDM call while actions start, the first gauge refresh, a
        // delivery before the first scrape) would be lost.
        crate::telemetry::prometheus();
        let files = match &settings.config_path {
            Some(path) => {
                let files = config::load_path(path).map_err(HostError::Config)?;
                runtime::check_files(&self.types, &files).map_err(HostError::Config)?;
                files
            }
            None => Vec::new(),
        };
        let public_base_url = match &settings.public_base_url {
            Some(url) => Some(
                crate::settings::public_base_url(url)
                    .map_err(|m| SettingsErrors(vec![Source::new().error("public_base_url", m)]))?,
            ),
            None => None,
        };
        // First, so the spans of loading the agents are exported too.
        let traces = match &settings.telemetry.otlp_endpoint {
            Some(endpoint) => {
                crate::telemetry::otlp::start(endpoint, &settings.telemetry.otlp_service_name)
                    .map_err(|m| SettingsErrors(vec![Source::new().error("otlp_endpoint", m)]))?
            }
            None => None,
        };
        let graph = Graph::connect(&settings.graph_url, &settings.graph).await?;
        let auth = Arc::new(Auth::new(graph.clone(), &settings.auth).await?);
        let keys: Arc<dyn ScopedKeys> = auth.clone();
        let publisher = EventPublisher::default();
        let webhooks = Arc::new(
            Webhooks::new(
                graph.clone(),
                settings.webhooks.clone(),
                publisher.clone(),
                outbox::catalogue(self.types.event_types()),
            )
            .await?,
        );
        let runtime = Arc::new(
            Runtime::new(
                self.types,
                graph,
                HostInfo { public_base_url },
                keys,
                publisher,
                settings.config_path.clone(),
            )
            .await?,
        );
        let report = runtime.apply(files).await?;
        tracing::info!(
            added = report.added.len(),
            hook_errors = report.hook_errors.len(),
            graph = %runtime.graph().url(),
            "agents loaded"
        );
        let state = HostState::new(runtime.clone(), auth, webhooks.clone());
        let (router, openapi) =
            api::build_router(state.clone(), settings.max_body_bytes, &settings.telemetry)?;
        Ok(Host {
            runtime,
            router,
            openapi,
            bind: settings.bind,
            server: settings.server,
            webhooks,
            metrics_refresh: settings.telemetry.metrics_refresh,
            traces,
        })
    }
}

/// A built host: loaded agents, router, OpenAPI document.
pub struct Host {
    runtime: Arc<Runtime>,
    router: axum::Router,
    openapi: utoipa::openapi::OpenApi,
    bind: SocketAddr,
    server: ServerSettings,
    webhooks: Arc<Webhooks>,
    metrics_refresh: std::time::Duration,
    /// The OTLP exporter, when `GRAPHAGENT_OTLP_ENDPOINT` is set; flushed on stop.
    traces: Option<crate::telemetry::otlp::OtlpTraces>,
}

impl Host {
    /// The agent named or identified by `name_or_id`, for typed access to its actions.
    pub fn agent(&self, name_or_id: &str) -> Option<AgentHandle> {
        self.runtime.directory().agent(name_or_id)
    }

    /// Typed lookup of every loaded action.
    pub fn directory(&self) -> &ActionDirectory {
        self.runtime.directory()
    }

    /// The shared graph.
    pub fn graph(&self) -> &Graph {
        self.runtime.graph()
    }

    /// The aggregated OpenAPI document.
    pub fn openapi(&self) -> &utoipa::openapi::OpenApi {
        &self.openapi
    }

    /// Re-read the configuration and apply it (what SIGHUP and the reload endpoint do).
    pub async fn reload(&self) -> Result<ReloadReport, HostError> {
        Ok(self.runtime.reload_from_disk().await?)
    }

    /// Serve on `listener` until `shutdown` resolves. Then stop accepting and stop the
    /// webhook worker from claiming more work, and give in-flight requests and webhook
    /// attempts the grace period (`ServerSettings::shutdown_grace`) to finish: connections
    /// still open after it are closed, attempts still running are abandoned (their lease
    /// expires and they run again later). Then close the graph.
    pub async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HostError> {
        let reload = self.spawn_sighup_reload();
        let stopping = tokio_util::sync::CancellationToken::new();
        let signal = tokio::spawn({
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.cancel();
                tokio::time::Instant::now()
            }
        });
        let worker = self
            .webhooks
            .settings()
            .worker
            .then(|| tokio::spawn(self.webhooks.clone().run(stopping.clone())));
        let metrics_graph = self.runtime.graph().clone();
        tokio::spawn(crate::telemetry::refresh_gauges(
            metrics_graph,
            self.metrics_refresh,
            stopping.clone(),
        ));
        server::serve(listener, self.router.clone(), &self.server, stopping).await;
        if let Some(task) = reload {
            task.abort();
        }
        // `server::serve` returns only after the signal, so this is at hand.
        let stopped_at = signal.await.unwrap_or_else(|_| tokio::time::Instant::now());
        if let Some(mut worker) = worker {
            let deadline = stopped_at + self.server.shutdown_grace;
            match tokio::time::timeout_at(deadline, &mut worker).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the webhook worker ended abnormally"),
                Err(_) => {
                    tracing::warn!(
                        "webhook attempts still running at the end of the shutdown grace period \
                         were abandoned; they run again when their lease expires"
                    );
                    worker.abort();
                    // Dropped before the graph closes, with the handles it holds.
                    let _ = worker.await;
                }
            }
        }
        tracing::info!("server stopped; closing the graph");
        let traces = self.traces.take();
        drop(self);
        // Last, so the spans of the shutdown itself are in the final export.
        if let Some(traces) = traces {
            traces.shutdown().await;
        }
        Ok(())
    }

    /// Bind the configured address and serve until SIGTERM or Ctrl-C.
    pub async fn run(self) -> Result<(), HostError> {
        let listener = tokio::net::TcpListener::bind(self.bind).await?;
        log_listening(listener.local_addr()?);
        self.serve(listener, shutdown_signal()).await
    }

    #[cfg(unix)]
    fn spawn_sighup_reload(&self) -> Option<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = self.runtime.clone();
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by HTTP only");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match runtime.reload_from_disk().await {
                    Ok(report) => tracing::info!(?report, "reloaded on SIGHUP"),
                    Err(e) => {
                        tracing::error!(error = %e, "reload on SIGHUP failed; nothing changed")
                    }
                }
            }
        }))
    }

    #[cfg(not(unix))]
    fn spawn_sighup_reload(&self) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
}

/// The start-up line that says where the server and its API documentation are.
pub(crate) fn log_listening(addr: SocketAddr) {
    // A wildcard address is not one a browser can open; loopback reaches it.
    let mut local = addr;
    if local.ip().is_unspecified() {
        local.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    tracing::info!(address = %addr, docs = %format!("http://{local}/docs"), "listening");
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
