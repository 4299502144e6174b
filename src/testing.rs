//! Test support for the host, for actions and for apps (feature `testing`): a host served
//! on a free loopback port with a known admin, logging in, and a webhook receiver that
//! records every request it gets and answers as a test scripts it; a real SurrealDB
//! server ([`SurrealServer`]) for tests of a graph shared over `ws://`.
//!
//! ```no_run
//! # async fn demo() {
//! use graphagent::testing::{TestHost, test_settings};
//! let host = TestHost::start(graphagent::HostBuilder::new(), test_settings(None, "mem://")).await;
//! let (status, agents) = host.admin_get("/api/agents").await;
//! assert_eq!(status, 200);
//! # let _ = agents;
//! # }
//! ```

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{ActionDirectory, AgentHandle, Graph, HostBuilder, HostError, Settings};

mod surreal;
pub use surreal::{SURREAL_BIN_VAR, SURREAL_PASSWORD, SURREAL_USER, SurrealServer};

/// The test admin's email.
pub const ADMIN_EMAIL: &str = "admin@example.com";
/// The test admin's password: the README's, so the documented login example works on
/// a test host as it does on a server started as the README says.
pub const ADMIN_PASSWORD: &str = "change-me";
/// The JWT secret of test hosts.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// Default settings with agents from `config` (if any), the graph at `graph_url`, and
/// the test admin ([`ADMIN_EMAIL`], [`ADMIN_PASSWORD`]) seeded.
pub fn test_settings(config: Option<PathBuf>, graph_url: &str) -> Settings {
    let mut s = Settings {
        config_path: config,
        graph_url: graph_url.to_owned(),
        ..Settings::default()
    };
    s.auth.jwt_secret = Some(JWT_SECRET.into());
    s.auth.admin_email = Some(ADMIN_EMAIL.to_owned());
    s.auth.admin_password = Some(ADMIN_PASSWORD.into());
    // Gauges counted from the graph show up within a test's patience.
    s.telemetry.metrics_refresh = std::time::Duration::from_secs(1);
    s
}

/// Log to the test's output (once per process; later calls do nothing), with the slot a
/// host with `otlp_endpoint` set exports its spans through.
pub fn init_test_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (slot, handle) = crate::telemetry::otlp::slot();
    let installed = tracing_subscriber::registry()
        .with(slot)
        .with(tracing_subscriber::EnvFilter::new(
            "info,surrealdb=warn,surrealdb_core=warn",
        ))
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .try_init();
    if installed.is_ok() {
        handle.activate();
    }
}

/// Log in to the host at `base` (e.g. a `graphagent serve` a test started as a process):
/// the access token, or the status and body of the refusal (status 0: no answer).
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> Result<String, (u16, Value)> {
    let res = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .map_err(|e| (0, json!(e.to_string())))?;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    match body["access_token"].as_str() {
        Some(token) if status == 200 => Ok(token.to_owned()),
        _ => Err((status, body)),
    }
}

/// A host serving on loopback until stopped or dropped.
pub struct TestHost {
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    /// A client for requests to it.
    pub http: reqwest::Client,
    /// The host's graph.
    pub graph: Graph,
    directory: ActionDirectory,
    admin: (String, String),
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), HostError>>>,
}

impl TestHost {
    /// Build the host from `builder` with `settings` and serve it on a free port.
    ///
    /// # Panics
    /// When the host does not build or no port can be bound: a test cannot go on.
    pub async fn start(builder: HostBuilder, settings: Settings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        Self::start_on(builder, settings, listener).await
    }

    /// [`start`](Self::start) on a listener the test bound (to know the address
    /// beforehand, or to reuse a port across a restart).
    ///
    /// # Panics
    /// When the host does not build.
    pub async fn start_on(
        builder: HostBuilder,
        settings: Settings,
        listener: tokio::net::TcpListener,
    ) -> Self {
        init_test_logging();
        let admin = (
            settings.auth.admin_email.clone().unwrap_or_default(),
            settings
                .auth
                .admin_password
                .as_ref()
                .map(|p| secrecy::ExposeSecret::expose_secret(p).to_owned())
                .unwrap_or_default(),
        );
        let host = builder
            .settings(settings)
            .build()
            .await
            .expect("host builds");
        let graph = host.graph().clone();
        let directory = host.directory().clone();
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(host.serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            graph,
            directory,
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The agent named or identified by `name_or_id`, for typed access to its actions.
    pub fn agent(&self, name_or_id: &str) -> Option<AgentHandle> {
        self.directory.agent(name_or_id)
    }

    /// Log in as the configured admin; the access token.
    ///
    /// # Panics
    /// When the login is refused.
    pub async fn token(&self) -> String {
        self.login(&self.admin.0, &self.admin.1)
            .await
            .expect("the test admin logs in")
    }

    /// Log in with `email` and `password`: the access token, or the status and body of
    /// the refusal.
    pub async fn login(&self, email: &str, password: &str) -> Result<String, (u16, Value)> {
        login(&self.http, &self.base, email, password).await
    }

    /// GET with admin credentials: the status and JSON body (`null` if not JSON).
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let token = self.token().await;
        self.get_with_token(path, &token).await
    }

    /// GET with `token` as the bearer token: the status and JSON body.
    pub async fn get_with_token(&self, path: &str, token: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET reaches the test host");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// POST `body` as JSON with admin credentials: the status and JSON body.
    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let token = self.token().await;
        let res = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("POST reaches the test host");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Ask for a graceful stop and wait for the host to finish.
    pub async fn stop(mut self) -> Result<(), HostError> {
        self.trigger_stop();
        self.finish().await
    }

    /// Ask for a graceful stop without waiting (see [`join`](Self::join)).
    pub fn trigger_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Wait for the host to finish (after [`trigger_stop`](Self::trigger_stop)).
    pub async fn join(mut self) -> Result<(), HostError> {
        self.finish().await
    }

    async fn finish(&mut self) -> Result<(), HostError> {
        match self.task.take() {
            Some(task) => task.await.expect("the host task ends without panicking"),
            None => Ok(()),
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.trigger_stop();
    }
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The request path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub answered: u16,
}

/// A webhook endpoint on loopback that records every request, on any path, and answers
/// with the next scripted status, else the default one. A 429 carries `Retry-After: 0`
/// and a 307 a `Location`, as real endpoints do. Clones share the record; the servers
/// stop when the last clone is dropped.
#[derive(Clone)]
pub struct WebhookReceiver {
    record: Record,
    servers: Arc<Servers>,
}

/// The receiver's server tasks, aborted with the last clone.
#[derive(Default)]
struct Servers(Mutex<Vec<tokio::task::JoinHandle<()>>>);

impl Drop for Servers {
    fn drop(&mut self) {
        for task in lock(&self.0).drain(..) {
            task.abort();
        }
    }
}

impl WebhookReceiver {
    /// A receiver answering `default_status` (200 normally); not serving yet (script it
    /// first if the first answers matter, then [`start`](Self::start)).
    pub fn new(default_status: u16) -> Self {
        Self {
            record: Record {
                hits: Arc::default(),
                script: Arc::default(),
                default_status: Arc::new(AtomicU16::new(default_status)),
            },
            servers: Arc::default(),
        }
    }

    /// Serve on a free loopback port: `http://127.0.0.1:{port}` (any path under it is
    /// recorded).
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        self.serve(listener);
        base
    }

    /// Serve on a listener the test bound (e.g. an endpoint that comes back on the
    /// address it had), recording into the same log.
    pub fn serve(&self, listener: tokio::net::TcpListener) {
        // The server's copy holds the record, not the server handles: those must die
        // with the last clone the test holds.
        let me = self.record.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let me = me.clone();
                async move { me.answer(uri.path(), headers, body.to_vec()) }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        lock(&self.servers.0).push(task);
    }

    /// Answer the next requests with these statuses, in order, then the default again.
    pub fn script(&self, statuses: &[u16]) {
        lock(&self.record.script).extend(statuses.iter().copied());
    }

    /// Change the status given when nothing is scripted.
    pub fn set_default(&self, status: u16) {
        self.record.default_status.store(status, Ordering::SeqCst);
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.record.hits).clone()
    }

    /// The requests to `path`.
    pub fn hits_on(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }
}

/// What a receiver's server shares with it.
#[derive(Clone)]
struct Record {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    default_status: Arc<AtomicU16>,
}

impl Record {
    fn answer(&self, path: &str, headers: HeaderMap, body: Vec<u8>) -> axum::response::Response {
        let status = lock(&self.script)
            .pop_front()
            .unwrap_or_else(|| self.default_status.load(Ordering::SeqCst));
        lock(&self.hits).push(Hit {
            path: path.to_owned(),
            headers,
            body,
            answered: status,
        });
        let code = axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (code, "ok").into_response();
        if status == 307 {
            res.headers_mut()
                .insert("location", axum::http::HeaderValue::from_static("/other"));
        }
        if status == 429 {
            res.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("0"));
        }
        res
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
