//! The real binary's SentDM tools: `graphagent demo`, and `graphagent sentdm` against a
//! `graphagent serve` child process whose SentDM action talks to an in-test simulator.

use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sentdm_sim::{SimHandle, Simulator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_graphagent");
const SECRET: &str = "sentdm-cli-secret-sentdm-cli-secret-01";
pub(crate) const EMAIL: &str = "ops@example.com";
pub(crate) const PASSWORD: &str = "sentdm cli test password";
pub(crate) const CRED_VARS: &[&str] = &[
    "GRAPHAGENT_API_KEY",
    "GRAPHAGENT_ADMIN_EMAIL",
    "GRAPHAGENT_ADMIN_PASSWORD",
    "GRAPHAGENT_URL",
];

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sentdm_help_lists_every_subcommand() {
    let out = std::process::Command::new(BIN)
        .args(["sentdm", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in [
        "status",
        "send",
        "templates",
        "broadcast",
        "message",
        "activities",
        "webhook",
        "records",
        "--url",
        "--action",
        "--json",
        "GRAPHAGENT_URL",
        "GRAPHAGENT_API_KEY",
        "GRAPHAGENT_ADMIN_EMAIL",
    ] {
        assert!(help.contains(word), "sentdm --help lacks {word}: {help}");
    }
    for (args, words) in [
        (
            vec!["sentdm", "webhook", "--help"],
            vec!["show", "register"],
        ),
        (
            vec!["sentdm", "records", "--help"],
            vec!["list", "show", "refresh"],
        ),
        (
            vec!["sentdm", "send", "--help"],
            vec![
                "--to",
                "--template-id",
                "--template-name",
                "--param",
                "--channel",
                "--sandbox",
                "--idempotency-key",
            ],
        ),
        (vec!["--help"], vec!["serve", "check", "sentdm", "demo"]),
        (vec!["demo", "--help"], vec!["--timeout", "--step-delay-ms"]),
    ] {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .expect("run");
        assert!(out.status.success());
        let help = text(&out.stdout);
        for w in words {
            assert!(help.contains(w), "{args:?} lacks {w}: {help}");
        }
    }
    // Nothing listening: says so, exit 1.
    let out = std::process::Command::new(BIN)
        .args(["sentdm", "status", "--url"])
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .env("GRAPHAGENT_API_KEY", "gak_any")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach graphagent at http://127.0.0.1:"),
        "{}",
        text(&out.stderr)
    );
    // No subcommand and stdin not a terminal: help, exit 2 (no menu, no network).
    let out = std::process::Command::new(BIN)
        .arg("sentdm")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("records"));
}

#[tokio::test]
async fn demo_runs_with_no_account_and_prints_final_timelines() {
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--timeout", "20"]);
    for v in CRED_VARS.iter().chain(&["SENTDM_API_KEY", "RUST_LOG"]) {
        cmd.env_remove(v);
    }
    let out = cmd.output().await.expect("run demo");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        text(&out.stderr)
    );
    let timelines = stdout
        .split("Status timelines:")
        .nth(1)
        .expect("timelines section");
    let line = |to: &str, channel: &str| {
        timelines
            .lines()
            .find(|l| l.contains(to) && l.contains(channel))
            .unwrap_or_else(|| panic!("no timeline for {to} {channel}: {stdout}"))
            .to_owned()
    };
    let read = line("+14155550100", "whatsapp");
    assert!(
        read.contains("accepted → queued") && read.ends_with("delivered → read"),
        "{read}"
    );
    assert!(line("+14155550100", "sms").ends_with("→ delivered"));
    let failed = line("+14155550001", "sms");
    assert!(
        failed.contains("→ failed") && failed.contains("DELIVERY_007"),
        "{failed}"
    );
    assert!(stdout.contains("All 6 record(s) final"), "{stdout}");
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub(crate) fn agent_yaml(sim: &SimHandle) -> String {
    format!(
        "agent: acme/notifier
actions:
  - action: sentdm_broadcast
    name: sentdm
    context:
      api_base: {}
      api_key: {}
      default_channels: [sms]
      webhook_event_filters: {{}}
      sweep_interval_seconds: 0
",
        sim.base_url(),
        sim.api_key()
    )
}

async fn serve(yaml: &str) -> Server {
    serve_env(yaml, &[]).await
}

/// [`serve`] with `env` set on the server process too.
pub(crate) async fn serve_env(yaml: &str, env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--bind", &format!("127.0.0.1:{port}"), "--graph", "mem://"])
        .env("GRAPHAGENT_PUBLIC_BASE_URL", &base)
        .env("GRAPHAGENT_JWT_SECRET", SECRET)
        .env("GRAPHAGENT_ADMIN_EMAIL", EMAIL)
        .env("GRAPHAGENT_ADMIN_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .env_remove("SENTDM_API_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let server = Server {
        child,
        base,
        _dir: dir,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(res) = http.get(format!("{}/readyz", server.base)).send().await
            && res.status() == 200
        {
            return server;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The token cache of this test process's client commands, away from the user's.
pub(crate) fn test_cache() -> &'static std::path::Path {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(|| tempfile::tempdir().expect("cache dir"))
        .path()
}

/// `graphagent sentdm ARGS` with `creds` as its only credentials.
async fn sentdm(base: &str, creds: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("sentdm").args(args).stdin(Stdio::null());
    cmd.env("XDG_CACHE_HOME", test_cache());
    for v in CRED_VARS {
        cmd.env_remove(v);
    }
    cmd.env("GRAPHAGENT_URL", base);
    for (k, v) in creds {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run sentdm")
}

const ADMIN: &[(&str, &str)] = &[
    ("GRAPHAGENT_ADMIN_EMAIL", EMAIL),
    ("GRAPHAGENT_ADMIN_PASSWORD", PASSWORD),
];

/// Run with `creds` and `--json`; the parsed output.
async fn json_of(base: &str, creds: &[(&str, &str)], args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = sentdm(base, creds, &all).await;
    assert!(
        out.status.success(),
        "sentdm {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sentdm {args:?}: not JSON ({e}): {}", text(&out.stdout)))
}

pub(crate) async fn start_sim() -> SimHandle {
    Simulator::builder()
        .api_key("cli-test-key")
        .seed(11)
        .step_delay(Duration::from_millis(100))
        .retry_scale(0.1)
        .start()
        .await
        .expect("simulator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentdm_commands_against_a_running_server() {
    let sim = start_sim().await;
    let server = serve(&agent_yaml(&sim)).await;
    let base = server.base.as_str();

    let key_value = admin_key(base).await;
    let key: &[(&str, &str)] = &[("GRAPHAGENT_API_KEY", key_value.as_str())];

    // No credentials: a clear error, non-zero exit, nothing on stdout.
    let out = sentdm(base, &[], &["status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("GRAPHAGENT_API_KEY"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    // Wrong password: says so.
    let out = sentdm(
        base,
        &[
            ("GRAPHAGENT_ADMIN_EMAIL", EMAIL),
            ("GRAPHAGENT_ADMIN_PASSWORD", "wrong"),
        ],
        &["status"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("login failed"));

    // Logins are rate-limited per address: one with the password, then an API key.
    let status = json_of(base, ADMIN, &["status"]).await;
    assert_eq!(status["configured"], true, "{status}");
    assert_eq!(status["reachable"], true, "{status}");
    assert_eq!(status["webhook_registered"], true, "{status}");
    assert_eq!(status["channels"]["whatsapp"], true);

    let templates = json_of(base, key, &["templates", "--search", "order"]).await;
    assert!(
        templates["items"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "order_confirmation")),
        "{templates}"
    );

    let hook = json_of(base, key, &["webhook", "show"]).await;
    assert!(hook["webhook_id"].is_string(), "{hook}");
    assert_eq!(hook["signing_secret_on_record"], true);
    let reconcile = json_of(base, key, &["webhook", "register"]).await;
    assert_eq!(reconcile["outcome"], "kept", "{reconcile}");
    assert_eq!(reconcile["webhook_id"], hook["webhook_id"]);

    let sent = json_of(
        base,
        key,
        &[
            "send",
            "--to",
            "+14155550100",
            "--to",
            "+14155550001",
            "--template-name",
            "order_confirmation",
            "--param",
            "name=Jane",
            "--param",
            "order_id=7",
            "--channel",
            "sms",
            "--channel",
            "whatsapp",
            "--idempotency-key",
            "cli-test-1",
        ],
    )
    .await;
    assert_eq!(sent["status"], "accepted", "{sent}");
    assert_eq!(sent["persisted"]["records"], 4, "{sent}");
    let broadcast = sent["broadcast_id"].as_str().expect("broadcast id");
    let messages = sent["messages"].as_array().expect("messages");
    let read_one = messages
        .iter()
        .find(|m| m["to"] == "+14155550100" && m["channel"] == "whatsapp")
        .expect("whatsapp message");
    let record_id = read_one["record_id"].as_str().expect("record id");
    let message_id = read_one["message_id"].as_str().expect("message id");

    // The webhooks arrive: poll the record until it is read.
    let deadline = Instant::now() + Duration::from_secs(20);
    let record = loop {
        let r = json_of(base, key, &["records", "show", record_id]).await;
        if r["status"] == "read" {
            break r;
        }
        assert!(Instant::now() < deadline, "never read: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(record["id"], record_id);
    assert_eq!(record["broadcast_id"], broadcast);
    let statuses: Vec<&str> = record["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(statuses.first(), Some(&"accepted"), "{record}");
    assert!(statuses.len() >= 3, "{record}");

    let listed = json_of(base, key, &["records", "list", "--broadcast-id", broadcast]).await;
    assert_eq!(listed["total"], 4, "{listed}");
    let failed = json_of(
        base,
        key,
        &[
            "records",
            "list",
            "--to",
            "+14155550001",
            "--page-size",
            "10",
        ],
    )
    .await;
    assert_eq!(failed["total"], 2, "{failed}");

    let summary = json_of(base, key, &["broadcast", broadcast]).await;
    assert_eq!(summary["id"], broadcast, "{summary}");
    let counted: u64 = summary["funnel"]
        .as_object()
        .expect("funnel")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(counted, 4, "{summary}");

    let refreshed = json_of(base, key, &["records", "refresh", record_id]).await;
    assert_eq!(refreshed["id"], record_id);
    assert_eq!(refreshed["status"], "read");

    let message = json_of(base, key, &["message", message_id]).await;
    assert_eq!(message["id"], message_id, "{message}");
    assert_eq!(message["status"], "READ", "{message}");
    let activities = json_of(base, key, &["activities", message_id]).await;
    assert_eq!(activities["message_id"], message_id, "{activities}");
    assert!(
        activities["activities"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );

    // Human output: tables with the values.
    let out = sentdm(base, ADMIN, &["records", "show", record_id]).await;
    assert!(out.status.success());
    let human = text(&out.stdout);
    assert!(
        human.contains("delivered → read") && human.contains("+14155550100"),
        "{human}"
    );
    let out = sentdm(base, key, &["status"]).await;
    assert!(text(&out.stdout).contains("webhook         registered"));

    // Server errors: code and message on stderr, exit 1.
    let out = sentdm(
        base,
        key,
        &["send", "--to", "4155550100", "--template-name", "x"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("422") && err.contains("to[0]"), "{err}");
    let out = sentdm(base, key, &["records", "show", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"));
    let out = sentdm(base, key, &["--action", "act_nope", "status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    // Client-side usage errors: exit 2.
    let out = sentdm(
        base,
        ADMIN,
        &["send", "--to", "+14155550100", "--param", "x"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));

    // A key that is not one: the server's 401, exit 1.
    let out = sentdm(
        base,
        &[("GRAPHAGENT_API_KEY", "gak_not_a_key")],
        &["status"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));

    interactive_menu(base, &key_value).await;
    interactive_menu_defaults_and_switch(base, &key_value).await;

    drop(server);
    sim.shutdown().await;
}

/// The menu needs a terminal: run the binary under `script` (util-linux), which gives it
/// a pseudo-terminal, and type `1` (status) then `q`. Skipped where `script` is missing.
async fn interactive_menu(base: &str, key: &str) {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("'{BIN}' sentdm"), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GRAPHAGENT_URL", base)
        .env("GRAPHAGENT_API_KEY", key)
        .env("XDG_CACHE_HOME", test_cache())
        .kill_on_drop(true);
    for v in &CRED_VARS[1..3] {
        cmd.env_remove(v);
    }
    let Ok(mut child) = cmd.spawn() else {
        eprintln!("`script` is not installed: interactive menu not tested");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(b"1\nq\n").await.expect("type");
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("menu ends")
        .expect("menu output");
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}{}", text(&out.stderr));
    assert!(
        screen.contains("1) status") && screen.contains("11) record refresh"),
        "{screen}"
    );
    assert!(screen.contains("configured      yes"), "{screen}");
}

pub(crate) async fn admin_key(base: &str) -> String {
    let http = reqwest::Client::new();
    let token = graphagent::testing::login(&http, base, EMAIL, PASSWORD)
        .await
        .expect("login");
    let created: Value = http
        .post(format!("{base}/api/auth/api-keys"))
        .bearer_auth(token)
        .json(&json!({"name": "cli test", "scopes": ["admin"]}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("json");
    created["key"].as_str().expect("key").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentdm_asks_which_action_when_several_are_loaded() {
    let sim = start_sim().await;
    let yaml = format!(
        "{}  - action: sentdm_broadcast\n    name: marketing\n    context:\n      api_base: {}\n      api_key: {}\n      sweep_interval_seconds: 0\n",
        agent_yaml(&sim),
        sim.base_url(),
        sim.api_key()
    );
    let server = serve(&yaml).await;
    let out = sentdm(&server.base, ADMIN, &["status"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("several `sentdm_broadcast` actions")
            && err.contains("acme/notifier / sentdm")
            && err.contains("acme/notifier / marketing")
            && err.contains("--action"),
        "{err}"
    );
    // The ids it lists work with --action.
    let id = err
        .lines()
        .find(|l| l.contains("/ marketing"))
        .and_then(|l| l.split_whitespace().next())
        .expect("listed id")
        .to_owned();
    let v = json_of(&server.base, ADMIN, &["--action", &id, "webhook", "show"]).await;
    assert!(v["url"].as_str().is_some_and(|u| u.contains(&id)), "{v}");
    drop(server);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentdm_replies_and_a_webhook_gone_at_sentdm() {
    let sim = start_sim().await;
    let server = serve(&agent_yaml(&sim)).await;
    let base = server.base.as_str();

    let page = json_of(base, ADMIN, &["replies", "list", "--page-size", "5"]).await;
    assert_eq!(
        (page["total"].clone(), page["page_size"].clone()),
        (json!(0), json!(5)),
        "{page}"
    );
    let out = sentdm(base, ADMIN, &["replies", "list"]).await;
    assert!(
        text(&out.stdout).contains("0 replies in all"),
        "{}",
        text(&out.stdout)
    );
    let out = sentdm(base, ADMIN, &["replies", "show", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    let out = sentdm(base, ADMIN, &["replies", "list", "--from", "555"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("from"), "{}", text(&out.stderr));

    // The webhook is deleted at SentDM behind the action's back: `status` says so.
    let client = sentdm_client::client::Client::new(sentdm_client::client::ClientConfig::new(
        sim.base_url(),
        sentdm_client::client::ApiKey::new(sim.api_key()),
    ))
    .expect("client");
    for w in client.list_all_webhooks().await.expect("list") {
        client.delete_webhook(&w.id).await.expect("delete");
    }
    let out = sentdm(base, ADMIN, &["status"]).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(shown.contains("webhook         not registered"), "{shown}");
    assert!(shown.contains("no longer exists at SentDM"), "{shown}");

    drop(server);
    sim.shutdown().await;
}

/// `serve --sim` with the example agent file as shipped (its SentDM base is the real
/// one, no key): one command gives a server whose SentDM action talks to a simulator
/// in the process; `send --follow` then shows the statuses as they arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sim_runs_against_an_embedded_simulator_and_send_follows() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let example =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent.yaml.example");
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("GRAPHAGENT_") || name.starts_with("SENTDM_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .args(["serve", "--sim", "--graph", "mem://", "--config"])
        .arg(&example)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("GRAPHAGENT_ADMIN_EMAIL", EMAIL)
        .env("GRAPHAGENT_ADMIN_PASSWORD", PASSWORD)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(
            Instant::now() < deadline,
            "serve --sim did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = json_of(&base, ADMIN, &["status"]).await;
    assert_eq!(status["reachable"], true, "{status}");
    assert_eq!(status["webhook_registered"], true, "{status}");

    let out = sentdm(
        &base,
        ADMIN,
        &[
            "send",
            "--to",
            "+14155550100",
            "--template-name",
            "order_confirmation",
            "--param",
            "name=Jane",
            "--param",
            "order_id=1",
            "--channel",
            "sms",
            "--follow",
            "--follow-timeout",
            "30",
        ],
    )
    .await;
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}{}", text(&out.stderr));
    let delivered = screen
        .lines()
        .find(|l| l.contains("+14155550100") && l.trim_end().ends_with("delivered"))
        .unwrap_or_else(|| panic!("no delivered line: {screen}"));
    assert!(delivered.contains("sms"), "{delivered}");
    assert!(screen.contains("all 1 message(s) final after"), "{screen}");

    let _ = child.start_kill();
    let _ = child.wait().await;
    let mut logs = String::new();
    if let Some(mut err) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = err.read_to_string(&mut logs).await;
    }
    let line = logs
        .lines()
        .find(|l| l.contains("SentDM simulator started"))
        .unwrap_or_else(|| panic!("no simulator line: {logs}"));
    assert!(line.contains("simulator=http://127.0.0.1:"), "{line}");
    assert!(line.contains("actions=1"), "{line}");
}

/// The menu through a pseudo-terminal: a send is a sandbox send unless told otherwise,
/// its broadcast id is offered (pre-filled) by the next entry, and the action can be
/// switched.
async fn interactive_menu_defaults_and_switch(base: &str, key: &str) {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("'{BIN}' sentdm"), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GRAPHAGENT_URL", base)
        .env("GRAPHAGENT_API_KEY", key)
        .env("XDG_CACHE_HOME", test_cache())
        .env("TERM", "xterm")
        .kill_on_drop(true);
    let Ok(mut child) = cmd.spawn() else {
        eprintln!("`script` is not installed: interactive menu not tested");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        // send: recipient, template, parameters, channel, sandbox (default), then the
        // funnel with the offered id, then switch to action 1, then quit.
        for line in [
            "2",
            "+14155550100",
            "order_confirmation",
            "name=Jane,order_id=3",
            "sms",
            "",
            "3",
            "",
            "12",
            "1",
            "q",
        ] {
            stdin
                .write_all(format!("{line}\r").as_bytes())
                .await
                .expect("type");
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("menu ends")
        .expect("menu output");
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}{}", text(&out.stderr));
    let sent = screen
        .lines()
        .find(|l| l.contains("(sandbox)"))
        .unwrap_or_else(|| panic!("not a sandbox send: {screen}"));
    let id = sent
        .split_whitespace()
        .find(|w| w.starts_with("bc_"))
        .unwrap_or_else(|| panic!("no broadcast id: {sent}"))
        .trim_end_matches(':');
    assert!(
        screen.contains(&format!("broadcast id (bc_…): {id}")),
        "the id was not offered: {screen}"
    );
    assert!(screen.contains("12) switch agent/action"), "{screen}");
    assert!(screen.contains("acme/notifier / sentdm"), "{screen}");
}
