//! The real `graphagent` binary: `check` exit codes, `--help`, and `serve` with the
//! example agent on the embedded graph, stopped by SIGTERM.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_graphagent");
const SECRET: &str = "cli-test-secret-cli-test-secret-0123";
const PASSWORD: &str = "cli test password 42";

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent.yaml.example")
}

#[test]
fn check_accepts_the_example_and_rejects_errors_with_positions() {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(example())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 agent(s), 1 action(s))"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("agent.yaml");
    std::fs::write(
        &bad,
        "agent: x\nactions:\n  - action: sentdm_broadcast\n    context: { timout: 5 }\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent.yaml:4:16: actions[0].context.timout: unknown field `timout`"),
        "{stderr}"
    );
}

#[test]
fn help_documents_every_command() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let expected: &[&str] = match args[0] {
            "serve" => &[
                "--settings",
                "GRAPHAGENT_SETTINGS",
                "--config",
                "--bind",
                "--graph",
                "--public-base-url",
                "GRAPHAGENT_BIND",
            ],
            "check" => &["--config", "--settings"],
            _ => &["serve", "check"],
        };
        for word in expected {
            assert!(text.contains(word), "{args:?} lacks {word}: {text}");
        }
    }
}

/// Waits for `child` to exit on its own (it must not start serving) and returns its
/// exit code and stderr.
fn exits(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started despite unusable settings");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unparsable_server_settings_stop_serve_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = serve_command(dir.path(), free_port())
        .env("GRAPHAGENT_HEADER_READ_TIMEOUT_SECS", "soon")
        .env("GRAPHAGENT_IDLE_TIMEOUT_SECS", "0")
        .spawn()
        .expect("spawn");
    let (code, stderr) = exits(child);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "\nGRAPHAGENT_HEADER_READ_TIMEOUT_SECS: expected a whole number of seconds, got `soon`\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("\nGRAPHAGENT_IDLE_TIMEOUT_SECS: expected 1 to 86400 seconds, got 0"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("graph").exists(),
        "the graph was not opened"
    );
}

#[test]
fn a_bad_bind_stops_serve_before_the_graph_is_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = bare_serve_command(dir.path())
        .env("GRAPHAGENT_BIND", "localhost:8000")
        .env("GRAPHAGENT_MAX_BODY_BYTES", "1MB")
        .env("GRAPHAGENT_JWT_SECRET", "too-short-never-shown")
        .spawn()
        .expect("spawn");
    let (code, stderr) = exits(child);
    assert_eq!(code, Some(1), "{stderr}");
    // Every problem, one per line, each naming its variable.
    for line in [
        "GRAPHAGENT_BIND: expected an IP address and port such as 127.0.0.1:8000 or [::]:8000, \
         got `localhost:8000`",
        "GRAPHAGENT_MAX_BODY_BYTES: expected a whole number of bytes, got `1MB`",
        "GRAPHAGENT_JWT_SECRET: expected at least 32 characters",
    ] {
        assert!(stderr.lines().any(|l| l == line), "{line} not in: {stderr}");
    }
    assert!(!stderr.contains("too-short-never-shown"), "{stderr}");
    assert!(
        !dir.path().join("graph").exists(),
        "the graph was not opened"
    );
}

#[test]
fn a_settings_file_is_read_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("graphagent.yaml");
    std::fs::write(
        &file,
        "bind: 127.0.0.1:1\nwebhook_timeout: 10\nidle_timeout_secs: forever\n",
    )
    .expect("write");
    // `check` reports the settings file's problems with their lines, and still checks
    // the agent file (fine here).
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(example())
        .arg("--settings")
        .arg(&file)
        .env_remove("GRAPHAGENT_SETTINGS")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = |line: usize, key: &str| format!("{}:{line}:1: {key}: ", file.display());
    assert!(
        stderr.contains(&format!("{}unknown key", at(2, "webhook_timeout"))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}expected a whole number of seconds, got `forever`",
            at(3, "idle_timeout_secs")
        )),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (1 agent(s), 1 action(s))"),
        "the agent file was checked too"
    );

    // `serve` reads the file named by GRAPHAGENT_SETTINGS: the environment wins over it
    // and the flag over both, so only the file's bad bind is left out.
    std::fs::write(&file, "bind: 127.0.0.1:nope\nmax_connections: 0\n").expect("write");
    let child = bare_serve_command(dir.path())
        .env("GRAPHAGENT_SETTINGS", &file)
        .env("GRAPHAGENT_BIND", "also bad")
        .args(["--bind", &format!("127.0.0.1:{}", free_port())])
        .spawn()
        .expect("spawn");
    let (code, stderr) = exits(child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}expected at least 1, got 0",
            at(2, "max_connections")
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("bind"), "{stderr}");
    assert!(!dir.path().join("graph").exists());
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `graphagent serve` with the example agent and a graph under `data`, logs piped.
fn serve_command(data: &std::path::Path, port: u16) -> Command {
    let mut command = bare_serve_command(data);
    command.args(["--bind", &format!("127.0.0.1:{port}")]);
    command
}

/// [`serve_command`] without `--bind`, and with no `GRAPHAGENT_*` setting inherited
/// from the test's own environment besides the credentials.
fn bare_serve_command(data: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GRAPHAGENT_") {
            command.env_remove(name);
        }
    }
    command
        .args(["serve", "--config"])
        .arg(example())
        .arg("--graph")
        .arg(format!("surrealkv://{}", data.join("graph").display()))
        .env("GRAPHAGENT_JWT_SECRET", SECRET)
        .env("GRAPHAGENT_ADMIN_EMAIL", "ops@example.com")
        .env("GRAPHAGENT_ADMIN_PASSWORD", PASSWORD)
        .env("GRAPHAGENT_LOG_FORMAT", "json")
        .env("SENTDM_API_BASE", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn serve(data: &std::path::Path) -> Server {
    serve_with(data, &[])
}

fn serve_with(data: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let child = serve_command(data, port)
        .envs(env.iter().copied())
        .spawn()
        .expect("spawn");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(res) = http.get(format!("{base}/readyz")).send().await
            && res.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not become ready");
}

#[tokio::test]
async fn serve_runs_the_example_and_stops_gracefully_on_sigterm() {
    let data = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut server = serve(data.path());
        wait_ready(&http, &server.base).await;
        let token = graphagent::testing::login(&http, &server.base, "ops@example.com", PASSWORD)
            .await
            .expect("login");
        let actions: Value = http
            .get(format!(
                "{}/api/agents/acme%2Fnotifier/actions",
                server.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("actions")
            .json()
            .await
            .expect("json");
        let sentdm = actions
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type_name"] == "sentdm_broadcast"))
            .expect("sentdm action")
            .clone();
        let id = sentdm["id"].as_str().expect("id").to_owned();
        // ${SENTDM_API_BASE:-https://api.sent.dm} was expanded from the environment.
        assert_eq!(sentdm["config"]["api_base"], "http://127.0.0.1:9");
        let records: Value = http
            .get(format!(
                "{}/api/actions/{id}/sentdm/broadcasts",
                server.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("records")
            .json()
            .await
            .expect("json");
        assert_eq!(records["total"], 0, "{records}");
        ids.push(id);

        let pid = server.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = server.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "exit status {status}");
        let mut logs = String::new();
        if let Some(mut err) = server.child.stderr.take() {
            use std::io::Read;
            let _ = err.read_to_string(&mut logs);
        }
        // JSON logs, no secrets in them.
        let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty());
        for line in &lines {
            let parsed: Result<Value, _> = serde_json::from_str(line);
            assert!(parsed.is_ok(), "not a JSON log line: {line}");
        }
        assert!(logs.contains("shutdown requested"), "{logs}");
        assert!(!logs.contains(PASSWORD) && !logs.contains(SECRET) && !logs.contains(&token));
    }
    // Same data dir, same ids.
    assert_eq!(ids[0], ids[1]);
}

/// Accepts HTTP/1.1 connections on loopback, answers each request `status`, and counts
/// the connections it accepted.
async fn counting_listener(status: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, count)
}

/// The SSRF guard judges every DNS answer; through a proxy it would see none, so the
/// delivery client must not pick up the usual proxy variables from the environment.
#[tokio::test]
async fn webhook_deliveries_ignore_proxy_environment_variables() {
    let (proxy_port, proxied) = counting_listener(502).await;
    let (receiver_port, received) = counting_listener(200).await;
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let data = tempfile::tempdir().expect("tempdir");
    let server = serve_with(
        data.path(),
        &[
            ("HTTP_PROXY", &proxy),
            ("HTTPS_PROXY", &proxy),
            ("ALL_PROXY", &proxy),
            ("http_proxy", &proxy),
            ("NO_PROXY", ""),
            ("GRAPHAGENT_WEBHOOK_ALLOW_HTTP_LOOPBACK", "true"),
        ],
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    wait_ready(&http, &server.base).await;
    let token = graphagent::testing::login(&http, &server.base, "ops@example.com", PASSWORD)
        .await
        .expect("login");
    let sub: Value = http
        .post(format!("{}/api/webhooks/subscriptions", server.base))
        .bearer_auth(&token)
        .json(&json!({"url": format!("http://127.0.0.1:{receiver_port}/hook")}))
        .send()
        .await
        .expect("subscribe")
        .json()
        .await
        .expect("json");
    let id = sub["id"].as_str().expect("subscription id");
    let attempt: Value = http
        .post(format!(
            "{}/api/webhooks/subscriptions/{id}/test",
            server.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("test delivery")
        .json()
        .await
        .expect("json");
    assert_eq!(attempt["success"], true, "{attempt}");
    assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(proxied.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// `graphagent serve` as a newcomer starts it: human logs, no `RUST_LOG`, no admin.
fn plain_serve_command(data: &std::path::Path, port: u16) -> Command {
    let mut command = bare_serve_command(data);
    command
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env_remove("GRAPHAGENT_LOG_FORMAT")
        .env_remove("GRAPHAGENT_ADMIN_EMAIL")
        .env_remove("GRAPHAGENT_ADMIN_PASSWORD")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    command
}

/// SIGTERM `server` and return what it logged.
fn stop(mut server: Server) -> String {
    let pid = server.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = server.child.wait();
    let mut logs = String::new();
    if let Some(mut err) = server.child.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut logs);
    }
    logs
}

#[tokio::test]
async fn start_up_says_where_the_docs_are_and_that_no_admin_is_configured() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server {
        child: plain_serve_command(data.path(), port)
            .spawn()
            .expect("spawn"),
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&reqwest::Client::new(), &server.base).await;
    let logs = stop(server);
    assert!(
        logs.contains(&format!("docs=http://127.0.0.1:{port}/docs")),
        "{logs}"
    );
    let warning = logs
        .lines()
        .find(|l| l.contains("no admin is configured"))
        .unwrap_or_else(|| panic!("no admin warning: {logs}"));
    assert!(
        warning.contains("WARN")
            && warning.contains("GRAPHAGENT_ADMIN_EMAIL")
            && warning.contains("GRAPHAGENT_ADMIN_PASSWORD"),
        "{warning}"
    );
    // stderr is a pipe: no colour codes; no Debug-printed options; the graph engine's
    // internals only from warn up.
    assert!(!logs.contains('\u{1b}'), "{logs}");
    assert!(!logs.contains("Some("), "{logs}");
    for line in logs.lines().filter(|l| l.contains(" INFO ")) {
        assert!(
            !line.contains(" surreal"),
            "engine internals at info: {line}"
        );
    }
}

#[test]
fn a_port_in_use_stops_serve_before_the_graph_is_opened() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let child = serve_command(dir.path(), port).spawn().expect("spawn");
    let (code, stderr) = exits(child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        !dir.path().join("graph").exists(),
        "the graph was not opened"
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_fails_at_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = serve(data.path());
    wait_ready(&reqwest::Client::new(), &first.base).await;
    let started = Instant::now();
    let second = serve_command(data.path(), free_port())
        .spawn()
        .expect("spawn");
    let (code, stderr) = exits(second);
    assert_eq!(code, Some(1), "{stderr}");
    // Faster than the wait for a store this process is still closing.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let what = format!(
        "surrealkv://{} is locked by another process",
        data.path().join("graph").display()
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("graphagent: graph: ") && l.contains(&what)),
        "{stderr}"
    );
    drop(first);
}

#[test]
fn a_dot_env_file_is_read_and_the_environment_wins_over_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "GRAPHAGENT_CONFIG={}\nGRAPHAGENT_MAX_BODY_BYTES=1MB\n",
            example().display()
        ),
    )
    .expect("write");
    let check = |env: &[(&str, &str)]| {
        let mut command = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GRAPHAGENT_") {
                command.env_remove(name);
            }
        }
        command
            .arg("check")
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .output()
            .expect("run")
    };
    // Both values come from .env: the example is checked, the bad size reported.
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GRAPHAGENT_MAX_BODY_BYTES: expected a whole number of bytes, got `1MB`"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 agent(s), 1 action(s))"));
    // A variable already set wins over the file.
    let out = check(&[("GRAPHAGENT_MAX_BODY_BYTES", "2048")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A broken file is an error naming it.
    std::fs::write(dir.path().join(".env"), "NOT A LINE\n").expect("write");
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".env"));
}
