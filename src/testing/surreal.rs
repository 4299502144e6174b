//! A real SurrealDB server (`surreal start`) on a loopback port for tests that need the
//! graph shared over `ws://`: remote-graph tests of the host, and replicas of the app.
//!
//! The binary is SurrealDB's own server built from `tools/surreal-server`, found through
//! `GRAPHAGENT_TEST_SURREAL_BIN`. Without it a test is skipped (saying so) outside CI and
//! fails in CI.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::GraphOptions;

/// Names the `surreal` binary to run.
pub const SURREAL_BIN_VAR: &str = "GRAPHAGENT_TEST_SURREAL_BIN";
/// The server's root user.
pub const SURREAL_USER: &str = "root";
/// The server's root password.
pub const SURREAL_PASSWORD: &str = "remote-test-root-password-5b1e";
/// How long a server may take to answer `/ready` (a debug build on a loaded machine).
const READY_WITHIN: Duration = Duration::from_secs(90);

/// Where the server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// `memory`: gone when the process ends.
    Memory,
    /// `surrealkv://DIR`: survives a restart of the server.
    Disk,
}

/// A running `surreal start` on a loopback port, killed on drop.
pub struct SurrealServer {
    child: Child,
    bin: std::ffi::OsString,
    port: u16,
    storage: Storage,
    /// `ws://127.0.0.1:PORT`.
    url: String,
    /// Holds the log and, on disk, the data.
    dir: tempfile::TempDir,
    /// Where the current process's output starts in the log (a restart appends).
    log_start: usize,
}

impl SurrealServer {
    /// An in-memory server, ready. `None` when [`SURREAL_BIN_VAR`] is not set outside CI
    /// (the caller returns: the test is skipped, and says so); in CI that panics.
    pub async fn start() -> Option<Self> {
        Self::start_with(Storage::Memory).await
    }

    /// A server keeping its data on disk (SurrealKV) in a directory of its own, so
    /// [`restart`](Self::restart) keeps it. Same skipping rule as [`start`](Self::start).
    pub async fn start_on_disk() -> Option<Self> {
        Self::start_with(Storage::Disk).await
    }

    async fn start_with(storage: Storage) -> Option<Self> {
        let bin = surreal_bin()?;
        let mut dir = tempfile::tempdir().expect("tempdir");
        // The free port is found by binding and releasing it, so another process can take
        // it in between; the server then exits at once and another port is tried.
        for attempt in 1..=3 {
            let port = free_port();
            let child = spawn(&bin, port, storage, dir.path());
            let mut server = Self {
                child,
                bin: bin.clone(),
                port,
                storage,
                url: format!("ws://127.0.0.1:{port}"),
                dir,
                log_start: 0,
            };
            if server.wait_ready().await {
                return Some(server);
            }
            let log = server.log();
            assert!(
                log.contains("in use") && attempt < 3,
                "the SurrealDB server exited before it was ready:\n{log}"
            );
            dir = server.into_dir();
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Root credentials and the database `database` of namespace `graphagent_it`.
    pub fn options(&self, database: &str) -> GraphOptions {
        GraphOptions {
            username: Some(SURREAL_USER.to_owned()),
            password: Some(SURREAL_PASSWORD.into()),
            namespace: Some("graphagent_it".to_owned()),
            database: Some(database.to_owned()),
            ..GraphOptions::default()
        }
    }

    /// Kill the server (SIGKILL: no clean shutdown) and start it again on the same port
    /// and data; ready when this returns. An in-memory server comes back empty.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A kill leaves the port in no state that stops a new bind (the listener is gone
        // with the process), but the last connections may still be closing.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.log_start = self.log().len();
            self.child = spawn(&self.bin, self.port, self.storage, self.dir.path());
            if self.wait_ready().await {
                return;
            }
            let log = self.current_log();
            assert!(
                log.contains("in use") && Instant::now() < deadline,
                "the SurrealDB server did not come back:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The server's output so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(self.dir.path())).unwrap_or_default()
    }

    /// The current process's part of the log.
    fn current_log(&self) -> String {
        self.log()
            .get(self.log_start..)
            .unwrap_or_default()
            .to_owned()
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        drop(self);
        dir
    }

    /// True once this server logged that it listens on its port and `/ready` answers 200
    /// (the log line makes sure the answer is not from another process that took the
    /// port); false when the process exited first. Panics with the server's log when it
    /// does neither in time.
    async fn wait_ready(&mut self) -> bool {
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{}/ready", self.port);
        let listening = format!("Started web server on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("server status").is_some() {
                return false;
            }
            if self.current_log().contains(&listening) {
                let answer = http
                    .get(&ready)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if answer.is_ok_and(|r| r.status() == 200) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the SurrealDB server was not ready within {READY_WITHIN:?}:\n{}",
            self.current_log()
        );
    }
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configured binary, or `None` (with the skip line printed) outside CI.
fn surreal_bin() -> Option<std::ffi::OsString> {
    let Some(bin) = std::env::var_os(SURREAL_BIN_VAR).filter(|v| !v.is_empty()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{SURREAL_BIN_VAR} is not set, so the tests against a SurrealDB server cannot \
             run; CI must build the server and set it (see .ci/run)"
        );
        eprintln!(
            "SKIPPED: {SURREAL_BIN_VAR} is not set, so this test did not run against a \
             SurrealDB server. `bash .ci/run` builds one and runs everything; or build it \
             with `cargo build --manifest-path tools/surreal-server/Cargo.toml --target-dir \
             target/surreal-server` and run the tests with \
             {SURREAL_BIN_VAR}=$PWD/target/surreal-server/debug/surreal (README, Testing)"
        );
        return None;
    };
    Some(bin)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("surreal.log")
}

fn spawn(bin: &std::ffi::OsStr, port: u16, storage: Storage, dir: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .expect("log file");
    let err = out.try_clone().expect("log file");
    let path = match storage {
        Storage::Memory => "memory".to_owned(),
        Storage::Disk => format!("surrealkv://{}", dir.join("data").display()),
    };
    Command::new(bin)
        // `--log info`: `wait_ready` looks for the line saying where it listens.
        .args(["start", "--no-banner", "--log", "info", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(path)
        // Through the environment, so the password is not on a command line.
        .env("SURREAL_USER", SURREAL_USER)
        .env("SURREAL_PASS", SURREAL_PASSWORD)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {SURREAL_BIN_VAR}={}: {e}", bin.display()))
}
