//! The host against a real SurrealDB server over `ws://`: start, reload, restart keeping
//! ids, interactive transactions conflicting, wrong credentials. The server is SurrealDB's `surreal` built from
//! `tools/surreal-server` (in-memory storage), found through `GRAPHAGENT_TEST_SURREAL_BIN`;
//! `.ci/run` builds it and sets the variable. Each test starts its own server on a free
//! loopback port and kills it when done.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use graphagent::GraphOptions;

use crate::lifecycle;
use crate::util::{ConfigDir, builder, settings_with_graph};

/// Path of the `surreal` binary to run.
const BIN_VAR: &str = "GRAPHAGENT_TEST_SURREAL_BIN";
const USER: &str = "root";
const PASSWORD: &str = "remote-test-root-password-5b1e";
/// How long a server may take to answer `/ready` (a debug build on a loaded machine).
const READY_WITHIN: Duration = Duration::from_secs(90);

/// A running `surreal start … memory` on a loopback port, killed on drop.
struct SurrealServer {
    child: Child,
    /// `ws://127.0.0.1:PORT`.
    url: String,
    /// The server's stdout and stderr, shown when it fails to start.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SurrealServer {
    /// Start a server and wait until it is ready. `None` when the binary is not
    /// configured outside CI (the test is then skipped, saying so); in CI that fails.
    async fn start() -> Option<Self> {
        let Some(bin) = std::env::var_os(BIN_VAR).filter(|v| !v.is_empty()) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{BIN_VAR} is not set, so the remote-graph tests cannot run; CI must build \
                 the server and set it (see .ci/run)"
            );
            eprintln!(
                "SKIPPED: {BIN_VAR} is not set, so this test did not run against a SurrealDB \
                 server. `bash .ci/run` builds one and runs everything; or build it with \
                 `cargo build --manifest-path tools/surreal-server/Cargo.toml --target-dir \
                 target/surreal-server` and run the tests with \
                 {BIN_VAR}=$PWD/target/surreal-server/debug/surreal (README, Testing)"
            );
            return None;
        };
        // The free port is found by binding and releasing it, so another process can take
        // it in between; the server then exits at once and another port is tried.
        for attempt in 1..=3 {
            match Self::spawn(&bin).await {
                Ok(server) => return Some(server),
                Err(log) if log.contains("in use") && attempt < 3 => continue,
                Err(log) => panic!("the SurrealDB server exited before it was ready:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Run the server on a free port and wait until it is ready; its log when it exits
    /// before that.
    async fn spawn(bin: &std::ffi::OsStr) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("surreal.log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin)
            // `--log info`: `wait_ready` looks for the line saying where it listens.
            .args(["start", "--no-banner", "--log", "info", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("memory")
            // Through the environment, so the password is not on a command line.
            .env("SURREAL_USER", USER)
            .env("SURREAL_PASS", PASSWORD)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN_VAR}={}: {e}", bin.display()));
        let mut server = Self {
            child,
            url: format!("ws://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        if server.wait_ready(port).await {
            Ok(server)
        } else {
            Err(std::fs::read_to_string(&server.log).unwrap_or_default())
        }
    }

    /// True once this server logged that it listens on `port` and `/ready` answers 200
    /// (the log line makes sure the answer is not from another process that took the
    /// port); false when the process exited first. Panics with the server's log when it
    /// does neither in time.
    async fn wait_ready(&mut self, port: u16) -> bool {
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{port}/ready");
        let listening = format!("Started web server on 127.0.0.1:{port}");
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("server status").is_some() {
                return false;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(&listening) {
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
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Root credentials and a namespace and database of the test's own.
    fn options(&self, database: &str) -> GraphOptions {
        GraphOptions {
            username: Some(USER.to_owned()),
            password: Some(PASSWORD.into()),
            namespace: Some("graphagent_it".to_owned()),
            database: Some(database.to_owned()),
        }
    }
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn start_and_reload_on_a_remote_server() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    lifecycle::start_and_reload(|_| server.url.clone(), &server.options("reload")).await;
}

#[tokio::test]
async fn restart_on_a_remote_server_keeps_ids() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    lifecycle::restart_keeps_ids(|_| server.url.clone(), &server.options("restart")).await;
}

#[tokio::test]
async fn interactive_transactions_conflict_on_a_remote_server() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    let g = graphagent::Graph::connect(&server.url, &server.options("txn"))
        .await
        .expect("graph");
    crate::txn::second_writer_of_a_record_conflicts(&g).await;
}

#[tokio::test]
async fn wrong_credentials_stop_start_up_without_showing_the_password() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    let wrong = "not-the-root-password-9c2d";
    let mut options = server.options("main");
    options.password = Some(wrong.into());
    let dir = ConfigDir::new("agent: x\nactions:\n  - action: echo\n");
    let err = builder()
        .settings(settings_with_graph(Some(dir.path()), &server.url, &options))
        .build()
        .await
        .err()
        .expect("wrong password is refused");
    // What `graphagent serve` prints: `graphagent: {err}`. It names the server, the user
    // and the server's reason, and points at the settings; never a password.
    let text = err.to_string();
    let expected = format!(
        "cannot sign in to the graph server {} as root user `{USER}`: ",
        server.url
    );
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("authentication"), "{text}");
    assert!(text.contains("GRAPHAGENT_GRAPH_PASSWORD"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}
