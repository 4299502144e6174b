//! The one [`Graph`] handle the host and every action share: a SurrealDB connection
//! (embedded SurrealKV, in-memory, or a remote server) with JSON in and JSON out.
//!
//! Queries always bind their parameters; results come back as `serde_json::Value` per
//! statement so callers deserialize into their own serde types. Transaction conflicts
//! are classified so writers can retry them (DESIGN invariant 3).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db;
use surrealdb::types::QueryError;

use crate::settings_source::{Fields, Key, SettingError, SettingsErrors, Source};

/// Why a graph operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct GraphError {
    /// The class of failure; decides whether a retry can help.
    pub kind: GraphErrorKind,
    /// The database's message (may name tables and fields; never user secrets).
    pub message: String,
}

/// Classes of graph failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphErrorKind {
    /// The store cannot be reached (connection lost, shut down, injected outage).
    Unavailable,
    /// Two transactions touched the same data; retrying the whole transaction is safe.
    Conflict,
    /// A statement failed (bad query, constraint, unique index).
    Query,
    /// The result did not have the expected shape.
    Decode,
    /// Bad connection URL or credentials.
    Config,
}

impl GraphError {
    fn new(kind: GraphErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// True when the store is unreachable: callers answer 503/5xx so clients retry.
    pub fn is_unavailable(&self) -> bool {
        self.kind == GraphErrorKind::Unavailable
    }

    /// True for a transaction conflict (retry the transaction).
    pub fn is_conflict(&self) -> bool {
        self.kind == GraphErrorKind::Conflict
    }

    /// True when a unique index rejected the write.
    pub fn is_duplicate(&self) -> bool {
        self.kind == GraphErrorKind::Query
            && (self.message.contains("already contains")
                || self.message.contains("already exists"))
    }

    fn from_db(err: surrealdb::Error) -> Self {
        let kind = if err.query_details() == Some(&QueryError::TransactionConflict)
            || err.message().contains("conflict")
        {
            GraphErrorKind::Conflict
        } else if err.is_connection() {
            GraphErrorKind::Unavailable
        } else {
            GraphErrorKind::Query
        };
        Self::new(kind, err.message().to_owned())
    }
}

/// `value` as a row to insert whose record id is `key` (its `id` field), so that
/// inserting it twice cannot create a second copy.
pub fn keyed_row<T: serde::Serialize>(key: &str, value: &T) -> Value {
    #[derive(serde::Serialize)]
    struct Row<'a, T> {
        id: &'a str,
        #[serde(flatten)]
        value: &'a T,
    }
    serde_json::to_value(Row { id: key, value }).unwrap_or(Value::Null)
}

/// Result alias for graph operations.
pub type GraphResult<T> = Result<T, GraphError>;

/// Connection options beyond the URL: credentials and names for `ws://` / `wss://`
/// servers, memory sizes for the embedded `surrealkv://` store. The password's `Debug`
/// is redacted.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// Root user name (`GRAPHAGENT_GRAPH_USER`).
    pub username: Option<String>,
    /// Root password (`GRAPHAGENT_GRAPH_PASSWORD`).
    pub password: Option<SecretString>,
    /// Namespace (`GRAPHAGENT_GRAPH_NS`, default `graphagent`).
    pub namespace: Option<String>,
    /// Database (`GRAPHAGENT_GRAPH_DB`, default `main`).
    pub database: Option<String>,
    /// Embedded SurrealKV only: MiB of decoded blocks kept in memory
    /// (`GRAPHAGENT_GRAPH_BLOCK_CACHE_MB`, default 64). SurrealKV's own default is half
    /// the machine's memory.
    pub block_cache_mb: u64,
    /// Embedded SurrealKV only: MiB of writes held in memory before they are flushed to
    /// a table file (`GRAPHAGENT_GRAPH_MEMTABLE_MB`, default 32). One transaction must
    /// fit in it. SurrealKV's own default is 1 GiB on a 16–64 GiB machine.
    pub memtable_mb: u64,
    /// Embedded SurrealKV only: KiB per table block, the unit a read decodes and caches
    /// (`GRAPHAGENT_GRAPH_BLOCK_KB`, default 8; SurrealKV's own is 64). A point read
    /// copies its whole block, so small blocks suit the host's reads of one ~2 KiB
    /// record: +20 % ingest at 8 against 64 (docs/BENCHMARKS.md). Applies to tables
    /// written from then on; older ones keep theirs.
    pub block_kb: u64,
}

/// Default [`GraphOptions::block_cache_mb`].
pub const DEFAULT_BLOCK_CACHE_MB: u64 = 64;
/// Default [`GraphOptions::memtable_mb`].
pub const DEFAULT_MEMTABLE_MB: u64 = 32;
/// Default [`GraphOptions::block_kb`].
pub const DEFAULT_BLOCK_KB: u64 = 8;
/// Accepted table block sizes, KiB.
const BLOCK_KB: std::ops::RangeInclusive<u64> = 1..=1024;
/// Accepted block cache sizes, MiB.
const BLOCK_CACHE_MB: std::ops::RangeInclusive<u64> = 1..=1_048_576;
/// Accepted memtable sizes, MiB: the largest transaction the host writes (a send's
/// records, a fold batch) is a few MiB.
const MEMTABLE_MB: std::ops::RangeInclusive<u64> = 8..=16_384;

impl Default for GraphOptions {
    fn default() -> Self {
        Self {
            username: None,
            password: None,
            namespace: None,
            database: None,
            block_cache_mb: DEFAULT_BLOCK_CACHE_MB,
            memtable_mb: DEFAULT_MEMTABLE_MB,
            block_kb: DEFAULT_BLOCK_KB,
        }
    }
}

impl GraphOptions {
    /// The settings these options are read from (the URL is the host's `graph_url`).
    pub const KEYS: &'static [Key] = &[
        Key::plain("graph_user"),
        Key::secret("graph_password"),
        Key::plain("graph_ns"),
        Key::plain("graph_db"),
        Key::plain("graph_block_cache_mb"),
        Key::plain("graph_memtable_mb"),
        Key::plain("graph_block_kb"),
    ];

    /// Options from `source` (`GRAPHAGENT_GRAPH_*`); a size that is not a whole number
    /// of MiB in its range is refused, naming the setting.
    pub fn from_source(source: &Source) -> Result<Self, SettingsErrors> {
        let mut f = Fields::new(source, Self::KEYS);
        let defaults = Self::default();
        let block_cache_mb = f
            .whole("graph_block_cache_mb", "MiB")
            .unwrap_or(defaults.block_cache_mb);
        let memtable_mb = f
            .whole("graph_memtable_mb", "MiB")
            .unwrap_or(defaults.memtable_mb);
        let block_kb = f
            .whole("graph_block_kb", "KiB")
            .unwrap_or(defaults.block_kb);
        let options = Self {
            username: f.text("graph_user"),
            password: f.text("graph_password").map(SecretString::from),
            namespace: f.text("graph_ns"),
            database: f.text("graph_db"),
            block_cache_mb,
            memtable_mb,
            block_kb,
        };
        f.checked(options, |o| o.size_problems(source))
    }

    /// Sizes outside their ranges.
    fn size_problems(&self, source: &Source) -> Vec<SettingError> {
        let mut errors = Vec::new();
        for (key, value, range, unit) in [
            (
                "graph_block_cache_mb",
                self.block_cache_mb,
                BLOCK_CACHE_MB,
                "MiB",
            ),
            ("graph_memtable_mb", self.memtable_mb, MEMTABLE_MB, "MiB"),
            ("graph_block_kb", self.block_kb, BLOCK_KB, "KiB"),
        ] {
            if !range.contains(&value) {
                errors.push(source.error(
                    key,
                    format!(
                        "expected {} to {} {unit}, got {value}",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
        errors
    }

    /// The embedded store's settings, under the names SurrealKV reads.
    fn store_config(&self) -> surrealdb_cnf::ConfigMap {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        surrealdb_cnf::ConfigMap::empty()
            .with_key_value(
                "surrealkv_block_cache_capacity",
                (self.block_cache_mb * MIB).to_string(),
            )
            .with_key_value(
                "surrealkv_max_memtable_size",
                (self.memtable_mb * MIB).to_string(),
            )
            .with_key_value("surrealkv_block_size", (self.block_kb * KIB).to_string())
    }

    /// What makes `url` with these options unusable, before anything is opened: an
    /// unknown engine, or a server with only one of user and password.
    pub fn validate(&self, url: &str, source: &Source) -> Vec<SettingError> {
        let mut errors = self.size_problems(source);
        match engine(url) {
            Err(message) => errors.push(source.error("graph_url", message)),
            Ok(Engine::Remote) => match (&self.username, &self.password) {
                (Some(_), None) => errors.push(source.error(
                    "graph_password",
                    "expected a password for the graph server with GRAPHAGENT_GRAPH_USER \
                     (set both or neither), got none",
                )),
                (None, Some(_)) => errors.push(source.error(
                    "graph_user",
                    "expected a user for the graph server with GRAPHAGENT_GRAPH_PASSWORD \
                     (set both or neither), got none",
                )),
                _ => {}
            },
            Ok(Engine::Local) => {}
        }
        errors
    }
}

/// Where a graph URL's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// In this process: `surrealkv://`, `mem://`.
    Local,
    /// A SurrealDB server: `ws://`, `wss://`.
    Remote,
}

/// The engine a graph URL names; the message says what is expected (credentials in the
/// URL are never shown).
fn engine(url: &str) -> Result<Engine, String> {
    if url.starts_with("ws://") || url.starts_with("wss://") {
        Ok(Engine::Remote)
    } else if url.starts_with("mem://") || url == "memory" || url.starts_with("surrealkv://") {
        Ok(Engine::Local)
    } else {
        Err(format!(
            "expected surrealkv://PATH, mem://, ws://HOST:PORT or wss://HOST:PORT, got `{}`",
            redact_url(url)
        ))
    }
}

/// The shared graph handle. Cheap to clone.
#[derive(Clone)]
pub struct Graph {
    inner: Arc<GraphInner>,
}

struct GraphInner {
    db: Conn,
    url: String,
    /// Fault injection for outage tests and drills: when set, every call fails as
    /// `Unavailable` without reaching the database.
    outage: AtomicBool,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("url", &self.inner.url)
            .finish()
    }
}

/// How many times [`Graph::transaction`] retries a conflicting transaction.
const CONFLICT_RETRIES: u32 = 64;

impl Graph {
    /// Connect by URL: `surrealkv://PATH`, `mem://`, `ws://HOST:PORT`, `wss://HOST:PORT`.
    pub async fn connect(url: &str, options: &GraphOptions) -> GraphResult<Self> {
        let problems = options.validate(url, &Source::new());
        if !problems.is_empty() {
            let message = SettingsErrors(problems).to_string();
            return Err(GraphError::new(GraphErrorKind::Config, message));
        }
        if let Some(path) = url.strip_prefix("surrealkv://")
            && let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                GraphError::new(
                    GraphErrorKind::Config,
                    format!("cannot create {}: {e}", parent.display()),
                )
            })?;
        }
        let root = options.username.as_ref().zip(options.password.as_ref());
        let db = connect_engine(url, options).await?;
        if let Conn::Remote(db) = &db
            && let Some((username, password)) = root
        {
            db.signin(surrealdb::opt::auth::Root {
                username: username.clone(),
                password: password.expose_secret().to_owned(),
            })
            .await
            .map_err(|e| {
                // Names the server and user, never the password.
                GraphError::new(
                    GraphErrorKind::Config,
                    format!(
                        "cannot sign in to the graph server {} as root user `{username}`: {} \
                         (check GRAPHAGENT_GRAPH_USER and GRAPHAGENT_GRAPH_PASSWORD)",
                        redact_url(url),
                        e.message()
                    ),
                )
            })?;
        }
        let ns = options
            .namespace
            .clone()
            .unwrap_or_else(|| "graphagent".into());
        let database = options.database.clone().unwrap_or_else(|| "main".into());
        // Selecting a namespace and database that do not exist yet defines them; replicas
        // starting together on a fresh server do that at the same moment and all but one
        // conflict. Selecting again is harmless.
        let mut attempt = 0;
        loop {
            match db.use_ns_db(&ns, &database).await {
                Ok(_) => break,
                Err(e) => {
                    let e = GraphError::from_db(e);
                    if !(e.is_conflict() && retry_after_conflict(&mut attempt).await) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(Self {
            inner: Arc::new(GraphInner {
                db,
                url: redact_url(url),
                outage: AtomicBool::new(false),
            }),
        })
    }

    /// A fresh in-memory graph (tests, demos).
    pub async fn memory() -> GraphResult<Self> {
        Self::connect("mem://", &GraphOptions::default()).await
    }

    /// The URL this handle was opened with (credentials removed).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Simulate an outage (or end one). While on, every call fails as `Unavailable`.
    /// Used by fault-injection tests and operational drills.
    pub fn set_outage(&self, on: bool) {
        self.inner.outage.store(on, Ordering::SeqCst);
    }

    /// Run SurrealQL with bound variables (a JSON object) and return each statement's
    /// result as JSON. The first failing statement's error is returned.
    pub async fn query(&self, sql: &str, vars: Value) -> GraphResult<Vec<Value>> {
        self.check_outage()?;
        match &self.inner.db {
            Conn::Local(db) => run(db.query(sql), vars).await,
            Conn::Remote(db) => run(db.query(sql), vars).await,
        }
    }

    /// Start an interactive transaction: statements run one call at a time, so the
    /// caller can decide in Rust between a read and the writes it implies. The database
    /// keeps it atomic and isolated; a concurrent write to the same data makes
    /// [`GraphTxn::commit`] fail with a [`GraphErrorKind::Conflict`], and the caller
    /// retries the whole transaction.
    pub async fn begin(&self) -> GraphResult<GraphTxn> {
        self.check_outage()?;
        let txn = match &self.inner.db {
            Conn::Local(db) => Txn::Local(db.clone().begin().await.map_err(GraphError::from_db)?),
            Conn::Remote(db) => Txn::Remote(db.clone().begin().await.map_err(GraphError::from_db)?),
        };
        Ok(GraphTxn {
            txn: Some(txn),
            graph: self.clone(),
        })
    }

    fn check_outage(&self) -> GraphResult<()> {
        if self.inner.outage.load(Ordering::Relaxed) {
            return Err(GraphError::new(
                GraphErrorKind::Unavailable,
                "graph store unavailable (injected outage)",
            ));
        }
        Ok(())
    }

    /// Run a query and deserialize statement `index`'s rows.
    pub async fn query_rows<T: DeserializeOwned>(
        &self,
        sql: &str,
        vars: Value,
        index: usize,
    ) -> GraphResult<Vec<T>> {
        let mut results = self.query(sql, vars).await?;
        let value = if index < results.len() {
            results.swap_remove(index)
        } else {
            Value::Null
        };
        rows_from(value)
    }

    /// Run a query and deserialize the first row of statement `index`, if any.
    pub async fn query_opt<T: DeserializeOwned>(
        &self,
        sql: &str,
        vars: Value,
        index: usize,
    ) -> GraphResult<Option<T>> {
        Ok(self.query_rows(sql, vars, index).await?.into_iter().next())
    }

    /// Run `sql` (which should be wrapped in `BEGIN; … COMMIT;`) and retry it on
    /// transaction conflicts with a short jittered backoff. `BEGIN` and `COMMIT` count
    /// as statements in the result, so the first real statement is index 1.
    pub async fn transaction(&self, sql: &str, vars: Value) -> GraphResult<Vec<Value>> {
        let mut attempt = 0;
        loop {
            match self.query(sql, vars.clone()).await {
                Err(e) if e.is_conflict() && retry_after_conflict(&mut attempt).await => {}
                other => return other,
            }
        }
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> GraphResult<()> {
        self.query("RETURN 1;", Value::Null).await.map(|_| ())
    }

    /// Apply a schema script; scripts must be idempotent (`DEFINE … IF NOT EXISTS` or
    /// `OVERWRITE`), as they run at every start. Replicas starting together on one
    /// server define the same schema at the same moment and all but one of them get a
    /// transaction conflict; being idempotent, the script is simply run again.
    pub async fn apply_schema(&self, name: &str, surql: &str) -> GraphResult<()> {
        let mut attempt = 0;
        loop {
            match self.query(surql, Value::Null).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() && retry_after_conflict(&mut attempt).await => {}
                Err(e) => {
                    return Err(GraphError::new(
                        e.kind,
                        format!("schema `{name}`: {}", e.message),
                    ));
                }
            }
        }
    }
}

/// After a transaction conflict: wait a short jittered time and return true, or return
/// false once the retries are spent. `attempt` starts at 0 and is counted here. For
/// callers running their own [`Graph::begin`] loop; [`Graph::transaction`] uses it too.
pub async fn retry_after_conflict(attempt: &mut u32) -> bool {
    if *attempt >= CONFLICT_RETRIES {
        return false;
    }
    *attempt += 1;
    let base = 1u64 << (*attempt).min(6);
    let jitter = rand::random::<u64>() % base.max(1);
    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
    true
}

/// Each statement's result as JSON, or the error that best explains the failure.
fn collect(mut response: surrealdb::IndexedResults) -> GraphResult<Vec<Value>> {
    let errors = response.take_errors();
    if !errors.is_empty() {
        // A conflict anywhere makes the whole transaction retryable; report that
        // over the "not executed due to a failed transaction" echoes of it.
        let mut errors: Vec<_> = errors.into_iter().collect();
        errors.sort_by_key(|(idx, _)| *idx);
        let classified: Vec<GraphError> = errors
            .into_iter()
            .map(|(_, e)| GraphError::from_db(e))
            .collect();
        let pick = classified
            .iter()
            .find(|e| e.is_conflict())
            .or_else(|| {
                classified.iter().find(|e| {
                    !e.message
                        .contains("not executed due to a failed transaction")
                })
            })
            .or(classified.first())
            .cloned();
        return Err(pick.unwrap_or_else(|| GraphError::new(GraphErrorKind::Query, "query failed")));
    }
    let n = response.num_statements();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let value: surrealdb::types::Value = response.take(i).map_err(GraphError::from_db)?;
        out.push(value.into_json_value());
    }
    Ok(out)
}

/// An open interactive transaction (see [`Graph::begin`]). Dropping it without
/// [`commit`](Self::commit) cancels it.
pub struct GraphTxn {
    txn: Option<Txn>,
    graph: Graph,
}

/// The open connection: the embedded store is opened by this module (to set its
/// sizes), a server through the SDK's URL dispatch.
enum Conn {
    Local(Surreal<Db>),
    Remote(Surreal<Any>),
}

impl Conn {
    async fn use_ns_db(&self, ns: &str, db: &str) -> Result<(), surrealdb::Error> {
        match self {
            Conn::Local(c) => c.use_ns(ns).use_db(db).await.map(drop),
            Conn::Remote(c) => c.use_ns(ns).use_db(db).await.map(drop),
        }
    }
}

enum Txn {
    Local(surrealdb::method::Transaction<Db>),
    Remote(surrealdb::method::Transaction<Any>),
}

/// Bind `vars` (unless null) and run.
async fn run<C: surrealdb::Connection>(
    query: surrealdb::method::Query<'_, C>,
    vars: Value,
) -> GraphResult<Vec<Value>> {
    let query = if vars.is_null() {
        query
    } else {
        query.bind(vars)
    };
    collect(query.await.map_err(GraphError::from_db)?)
}

impl GraphTxn {
    /// Run statements inside the transaction; same shape as [`Graph::query`].
    pub async fn query(&self, sql: &str, vars: Value) -> GraphResult<Vec<Value>> {
        self.graph.check_outage()?;
        let Some(txn) = &self.txn else {
            return Err(GraphError::new(
                GraphErrorKind::Query,
                "transaction already ended",
            ));
        };
        match txn {
            Txn::Local(t) => run(t.query(sql), vars).await,
            Txn::Remote(t) => run(t.query(sql), vars).await,
        }
    }

    /// Commit; a [`GraphErrorKind::Conflict`] means another writer got there first and
    /// the whole transaction (reads included) should be run again.
    #[tracing::instrument(name = "graph.commit", skip_all)]
    pub async fn commit(mut self) -> GraphResult<()> {
        self.graph.check_outage()?;
        match self.txn.take() {
            Some(Txn::Local(t)) => t.commit().await.map(drop).map_err(GraphError::from_db),
            Some(Txn::Remote(t)) => t.commit().await.map(drop).map_err(GraphError::from_db),
            None => Err(GraphError::new(
                GraphErrorKind::Query,
                "transaction already ended",
            )),
        }
    }
}

impl Drop for GraphTxn {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = match txn {
                    Txn::Local(t) => t.cancel().await.map(drop),
                    Txn::Remote(t) => t.cancel().await.map(drop),
                };
            });
        }
    }
}

/// How long to wait for an embedded store that a previous handle is still closing.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The embedded stores this process has opened: only these can be locked by a handle
/// of ours that is still closing.
static OPENED_HERE: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

async fn connect_engine(url: &str, options: &GraphOptions) -> GraphResult<Conn> {
    // The embedded engine shuts its store down in a background task after the last
    // handle is dropped, so a reopen in the same process can briefly find the store
    // locked. Wait for that rather than fail. A store this process never opened is
    // locked by another process (its lock ends with that process): say so at once.
    let ours = OPENED_HERE.lock().is_ok_and(|o| o.contains(url));
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        match open(url, options).await {
            Ok(db) => {
                if let Ok(mut opened) = OPENED_HERE.lock() {
                    opened.insert(url.to_owned());
                }
                return Ok(db);
            }
            Err(e) if e.contains("already locked") && !ours => {
                return Err(GraphError::new(
                    GraphErrorKind::Unavailable,
                    format!(
                        "{} is locked by another process (is another graphagent serving \
                         it?); stop that one or give this one another --graph",
                        redact_url(url)
                    ),
                ));
            }
            Err(e) if e.contains("already locked") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(GraphError::new(GraphErrorKind::Unavailable, e)),
        }
    }
}

/// Open `url`: the embedded engines here, with the sizes in `options`; a server through
/// the SDK. The error is the engine's message.
async fn open(url: &str, options: &GraphOptions) -> Result<Conn, String> {
    let path = if let Some(path) = url.strip_prefix("surrealkv://") {
        format!("surrealkv://{path}")
    } else if url.starts_with("mem://") || url == "memory" {
        "memory".to_owned()
    } else {
        return surrealdb::engine::any::connect(url)
            .await
            .map(Conn::Remote)
            .map_err(|e| e.message().to_owned());
    };
    // What `surrealdb::engine::local` does on connect, plus the settings map: build
    // without the maintenance tasks, settle the storage version, then start them
    // (a task's write before the version key would make a new store look old).
    let datastore = surrealdb_engine_local::Datastore::builder()
        .with_config(options.store_config())
        .without_maintenance_tasks()
        .build_with_path(&path)
        .await
        .map_err(|e| format!("{e:#}"))?;
    datastore
        .check_version()
        .await
        .map_err(|e| format!("{e:#}"))?;
    datastore.bootstrap().await.map_err(|e| format!("{e:#}"))?;
    datastore.start_maintenance_tasks();
    Surreal::<Db>::unstable_from_datastore(datastore, None)
        .await
        .map(Conn::Local)
        .map_err(|e| e.message().to_owned())
}

/// Deserialize a statement result (an array of rows, or one value) into rows.
pub fn rows_from<T: DeserializeOwned>(value: Value) -> GraphResult<Vec<T>> {
    let rows = match value {
        Value::Array(rows) => rows,
        Value::Null => Vec::new(),
        other => vec![other],
    };
    rows.into_iter()
        .map(|row| {
            serde_json::from_value(row)
                .map_err(|e| GraphError::new(GraphErrorKind::Decode, e.to_string()))
        })
        .collect()
}

fn redact_url(url: &str) -> String {
    // `ws://user:pass@host` must not reach logs or /readyz.
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The record key part of a `table:key` id string as SurrealDB renders it.
pub fn record_key(id: &str) -> &str {
    let key = id.split_once(':').map_or(id, |(_, k)| k);
    key.trim_matches(|c| c == '`' || c == '⟨' || c == '⟩')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn binds_and_returns_json_per_statement() {
        let g = Graph::memory().await.expect("mem graph");
        let out = g
            .query(
                "CREATE t:one SET n = $n; SELECT n, record::id(id) AS id FROM t;",
                json!({"n": 5}),
            )
            .await
            .expect("query");
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], json!([{"n": 5, "id": "one"}]));
    }

    #[tokio::test]
    async fn transaction_results_are_indexed_by_statement() {
        let g = Graph::memory().await.expect("mem graph");
        let out = g
            .transaction(
                "BEGIN; CREATE t:a SET n = 1; RETURN count(SELECT id FROM t); COMMIT;",
                Value::Null,
            )
            .await
            .expect("tx");
        // BEGIN and COMMIT count as statements: results are indexed from BEGIN = 0.
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[2], json!(1));
    }

    #[tokio::test]
    async fn a_dropped_transaction_writes_nothing_and_a_committed_one_does() {
        let g = Graph::memory().await.expect("mem graph");
        g.query("DEFINE TABLE t SCHEMALESS;", Value::Null)
            .await
            .expect("schema");
        {
            let txn = g.begin().await.expect("begin");
            txn.query("CREATE t:x SET n = 1;", Value::Null)
                .await
                .expect("write");
        }
        // Let the cancel spawned by the drop run: the write must still be gone after it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let read = async || {
            g.query("SELECT VALUE n FROM t:x;", Value::Null)
                .await
                .expect("n")
                .swap_remove(0)
        };
        assert_eq!(read().await, json!([]));
        // The dropped transaction holds nothing: the same record can be created and
        // committed, and then it is there.
        let txn = g.begin().await.expect("begin again");
        txn.query("CREATE t:x SET n = 2;", Value::Null)
            .await
            .expect("write again");
        txn.commit().await.expect("commit");
        assert_eq!(read().await, json!([2]));
    }

    #[tokio::test]
    async fn outage_fails_as_unavailable() {
        let g = Graph::memory().await.expect("mem graph");
        g.set_outage(true);
        let err = g.ping().await.expect_err("outage");
        assert!(err.is_unavailable());
        g.set_outage(false);
        g.ping().await.expect("back");
    }

    #[tokio::test]
    async fn unique_index_violation_is_duplicate() {
        let g = Graph::memory().await.expect("mem graph");
        g.query(
            "DEFINE TABLE u SCHEMALESS; DEFINE INDEX u_k ON u FIELDS k UNIQUE;",
            Value::Null,
        )
        .await
        .expect("schema");
        g.query("CREATE u SET k = 1;", Value::Null)
            .await
            .expect("first");
        let err = g
            .query("CREATE u SET k = 1;", Value::Null)
            .await
            .expect_err("dup");
        assert!(err.is_duplicate(), "{err}");
    }

    #[tokio::test]
    async fn a_server_user_without_a_password_is_refused_before_connecting() {
        // Port 1 on loopback: nothing listens, so only the check can answer.
        let options = GraphOptions {
            username: Some("root".into()),
            ..GraphOptions::default()
        };
        let err = Graph::connect("ws://127.0.0.1:1", &options)
            .await
            .expect_err("half the credentials");
        assert_eq!(err.kind, GraphErrorKind::Config, "{err}");
        assert_eq!(
            err.message,
            "GRAPHAGENT_GRAPH_PASSWORD: expected a password for the graph server with \
             GRAPHAGENT_GRAPH_USER (set both or neither), got none"
        );
    }

    #[test]
    fn graph_urls_and_credentials_are_checked_without_connecting() {
        let none = GraphOptions::default();
        let source = Source::new();
        for url in [
            "mem://",
            "memory",
            "surrealkv://./data/g",
            "ws://h:1",
            "wss://h",
        ] {
            assert!(none.validate(url, &source).is_empty(), "{url}");
        }
        let e = none.validate("postgres://root:hunter2@db", &source);
        assert_eq!(
            e.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "GRAPHAGENT_GRAPH_URL: expected surrealkv://PATH, mem://, ws://HOST:PORT or \
              wss://HOST:PORT, got `postgres://db`"
            ]
        );
        let half = GraphOptions {
            password: Some("hunter2".into()),
            ..GraphOptions::default()
        };
        // Only a server needs credentials; an embedded engine ignores them.
        assert!(half.validate("mem://", &source).is_empty());
        let e = half.validate("wss://db", &source);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].to_string()
                .starts_with("GRAPHAGENT_GRAPH_USER: expected")
        );
        assert!(!e[0].to_string().contains("hunter2"));
    }

    #[test]
    fn store_sizes_are_settings_in_mib_with_checked_ranges() {
        let defaults = GraphOptions::from_source(&Source::new()).expect("defaults");
        assert_eq!(
            (defaults.block_cache_mb, defaults.memtable_mb),
            (DEFAULT_BLOCK_CACHE_MB, DEFAULT_MEMTABLE_MB)
        );
        let mut source = Source::new();
        source.set_env("graph_block_cache_mb", "256");
        source.set_env("graph_memtable_mb", "16");
        source.set_env("graph_block_kb", "8");
        let set = GraphOptions::from_source(&source).expect("sizes");
        assert_eq!(
            (set.block_cache_mb, set.memtable_mb, set.block_kb),
            (256, 16, 8)
        );
        let config = set.store_config();
        let (mut cache, mut memtable, mut block) = (0u64, 0u64, 0u64);
        config
            .parse_key("surrealkv_block_cache_capacity", &mut cache)
            .parse_key("surrealkv_max_memtable_size", &mut memtable)
            .parse_key("surrealkv_block_size", &mut block);
        assert_eq!((cache, memtable, block), (256 << 20, 16 << 20, 8 << 10));

        let mut source = Source::new();
        source.set_env("graph_block_cache_mb", "lots");
        source.set_env("graph_memtable_mb", "4");
        source.set_env("graph_block_kb", "2048");
        let errors = GraphOptions::from_source(&source)
            .expect_err("refused")
            .to_string();
        assert!(
            errors.contains("GRAPHAGENT_GRAPH_BLOCK_CACHE_MB: expected a whole number of MiB"),
            "{errors}"
        );
        assert!(
            errors.contains("GRAPHAGENT_GRAPH_MEMTABLE_MB: expected 8 to 16384 MiB, got 4"),
            "{errors}"
        );
        assert!(
            errors.contains("GRAPHAGENT_GRAPH_BLOCK_KB: expected 1 to 1024 KiB, got 2048"),
            "{errors}"
        );
    }

    /// A transaction larger than the memtable is refused by SurrealKV, so a write that
    /// fits the default but not a small setting shows the setting reached the engine.
    #[tokio::test]
    async fn the_memtable_setting_reaches_the_embedded_store() {
        let dir = tempfile::tempdir().expect("dir");
        let write = "FOR $i IN 0..12 { CREATE blob SET data = string::repeat('x', 1048576) }";
        let small = GraphOptions {
            memtable_mb: 8,
            ..GraphOptions::default()
        };
        let url = format!("surrealkv://{}", dir.path().join("small").display());
        let g = Graph::connect(&url, &small).await.expect("open small");
        let err = g
            .transaction(write, Value::Null)
            .await
            .expect_err("12 MiB in one transaction does not fit an 8 MiB memtable");
        assert!(err.message.contains("Memtable arena is full"), "{err}");

        let url = format!("surrealkv://{}", dir.path().join("default").display());
        let g = Graph::connect(&url, &GraphOptions::default())
            .await
            .expect("open default");
        g.transaction(write, Value::Null)
            .await
            .expect("12 MiB fits the default 32 MiB memtable");
        let n = g
            .query("SELECT count() FROM blob GROUP ALL", Value::Null)
            .await
            .expect("count");
        assert_eq!(n[0], json!([{"count": 12}]));
    }

    #[test]
    fn redacts_credentials_in_url() {
        assert_eq!(redact_url("ws://root:secret@db:8000"), "ws://db:8000");
        assert_eq!(redact_url("mem://"), "mem://");
        assert_eq!(record_key("action:⟨act-1⟩"), "act-1");
        assert_eq!(record_key("action:abc"), "abc");
    }
}
