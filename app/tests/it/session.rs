//! The client commands' login, token cache, API keys, JSON errors and exit codes, run
//! as processes against a `graphagent serve` child process and the simulator.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::sentdm::{BIN, CRED_VARS, EMAIL, PASSWORD, agent_yaml, serve_env, start_sim, text};

/// `graphagent ARGS` against `base` with `cache` as its token cache, `env` its only
/// credentials, and `stdin` typed in.
async fn run(base: &str, cache: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("GRAPHAGENT_URL", base)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in CRED_VARS.iter().take(3) {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await.expect("stdin");
    }
    child.wait_with_output().await.expect("run")
}

fn cache_file(cache: &Path) -> std::path::PathBuf {
    cache.join("graphagent").join("tokens.json")
}

fn cached(cache: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(cache_file(cache)).expect("cache file")).expect("json")
}

const ADMIN: &[(&str, &str)] = &[
    ("GRAPHAGENT_ADMIN_EMAIL", EMAIL),
    ("GRAPHAGENT_ADMIN_PASSWORD", PASSWORD),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_caches_one_token_per_server_and_commands_use_it() {
    let sim = start_sim().await;
    // Three logins a minute per address: commands that each logged in would be refused.
    let server = serve_env(&agent_yaml(&sim), &[("GRAPHAGENT_LOGIN_PER_MINUTE", "3")]).await;
    let base = server.base.as_str();
    let cache = tempfile::tempdir().expect("cache");
    let cache = cache.path();

    // Bad input changes nothing: no email, a wrong password.
    let out = run(base, cache, &[], &["login", "--password-stdin"], "x\n").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--email"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        base,
        cache,
        &[],
        &["login", "--email", EMAIL, "--password-stdin"],
        "wrong\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("login failed"),
        "{}",
        text(&out.stderr)
    );
    assert!(!cache_file(cache).exists());

    let out = run(
        base,
        cache,
        &[],
        &["login", "--email", EMAIL, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("logged in to {base} as {EMAIL} until ")));
    let mode = std::fs::metadata(cache_file(cache))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let file = std::fs::read_to_string(cache_file(cache)).expect("read");
    assert!(!file.contains(PASSWORD));
    let entry = &cached(cache)["servers"][base];
    assert_eq!(entry["email"], EMAIL);
    assert!(entry["access_token"].is_string());

    // Many commands, no credentials given: the cached token, no login.
    for _ in 0..4 {
        let out = run(
            base,
            cache,
            &[],
            &["sentdm", "webhook", "show", "--json"],
            "",
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    // Expired: said so without credentials; renewed by a login with them (and cached).
    let mut file = cached(cache);
    file["servers"][base]["expires_at"] = 1.into();
    std::fs::write(cache_file(cache), file.to_string()).expect("write");
    let out = run(base, cache, &[], &["sentdm", "status"], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has expired"),
        "{}",
        text(&out.stderr)
    );
    let out = run(base, cache, ADMIN, &["sentdm", "status"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let renewed = cached(cache)["servers"][base]["expires_at"]
        .as_u64()
        .expect("expiry");
    assert!(renewed > 1_000_000_000, "{renewed}");
    // …and later commands with the same credentials use the new token: that was the
    // third login this minute, a fourth would be refused.
    for _ in 0..3 {
        let out = run(base, cache, ADMIN, &["sentdm", "webhook", "show"], "").await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    // Another server's cache entry is its own.
    let other = "http://127.0.0.1:9";
    let out = run(other, cache, &[], &["sentdm", "status"], "").await;
    assert!(
        text(&out.stderr).contains("no credentials for http://127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );

    let out = run(base, cache, &[], &["logout"], "").await;
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), format!("logged out of {base}"));
    assert!(cached(cache)["servers"].get(base).is_none());
    let out = run(base, cache, &[], &["sentdm", "status"], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("graphagent login"),
        "{}",
        text(&out.stderr)
    );
    let out = run(base, cache, &[], &["logout"], "").await;
    assert_eq!(text(&out.stdout).trim(), format!("not logged in to {base}"));
    drop(server);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_created_once_listed_and_revoked() {
    let sim = start_sim().await;
    let server = serve_env(&agent_yaml(&sim), &[]).await;
    let base = server.base.as_str();
    let cache = tempfile::tempdir().expect("cache");
    let cache = cache.path();

    let out = run(
        base,
        cache,
        ADMIN,
        &["api-keys", "create", "--name", "ci deploys"],
        "",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let key = shown
        .lines()
        .find_map(|l| l.strip_prefix("key     "))
        .expect("key line")
        .to_owned();
    let id = shown
        .lines()
        .find_map(|l| l.strip_prefix("id      "))
        .expect("id line")
        .to_owned();
    assert!(shown.contains("cannot be shown again"), "{shown}");
    assert!(
        !std::fs::read_to_string(cache_file(cache))
            .expect("cache")
            .contains(&key)
    );

    let out = run(base, cache, &[], &["api-keys", "list"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.contains(&id) && listed.contains("ci deploys") && listed.contains("admin"));
    assert!(!listed.contains(&key), "the key is shown once only");

    let with_key: &[(&str, &str)] = &[("GRAPHAGENT_API_KEY", key.as_str())];
    let out = run(base, cache, with_key, &["sentdm", "webhook", "show"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Bad input: the server's 422 naming the field, as JSON on stderr with --json.
    let out = run(
        base,
        cache,
        &[],
        &["api-keys", "create", "--name", " ", "--json"],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(err["error"]["field"], "name", "{err}");
    assert_eq!(err["error"]["status"], 422, "{err}");
    let out = run(
        base,
        cache,
        &[],
        &["api-keys", "create", "--name", "x", "--scope", "root"],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("scopes[0]"),
        "{}",
        text(&out.stderr)
    );

    let out = run(base, cache, &[], &["api-keys", "revoke", &id], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("revoked {id} (ci deploys) at ")));
    let out = run(base, cache, with_key, &["sentdm", "webhook", "show"], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = run(
        base,
        cache,
        &[],
        &["api-keys", "revoke", "key_nope", "--json"],
        "",
    )
    .await;
    let err: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(err["error"]["status"], 404, "{err}");

    // Piped into a reader that is gone (`| head`): no panic, the usual SIGPIPE death.
    let mut child = Command::new(BIN)
        .args(["api-keys", "list"])
        .env("GRAPHAGENT_URL", base)
        .env("XDG_CACHE_HOME", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().await.expect("wait");
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.signal(), Some(13), "{:?}", out.status);
    drop(server);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_errors_and_status_exit_non_zero_when_sentdm_is_unreachable() {
    // A SentDM that does not answer: nothing listens on the port.
    let dead = crate::sentdm::free_port();
    let yaml = format!(
        "agent: acme/notifier\nactions:\n  - action: sentdm_broadcast\n    name: sentdm\n    context:\n      api_base: http://127.0.0.1:{dead}\n      api_key: k\n      sweep_interval_seconds: 0\n"
    );
    let server = serve_env(&yaml, &[]).await;
    let base = server.base.as_str();
    let cache = tempfile::tempdir().expect("cache");
    let cache = cache.path();

    let out = run(base, cache, ADMIN, &["sentdm", "status"], "").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("reachable       no"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("SentDM is not reachable"),
        "{}",
        text(&out.stderr)
    );

    let out = run(base, cache, &[], &["sentdm", "status", "--json"], "").await;
    assert_eq!(out.status.code(), Some(1));
    let health: Value = serde_json::from_slice(&out.stdout).expect("health JSON");
    assert_eq!(health["reachable"], false);
    let err: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(err["error"]["code"], "failed", "{err}");

    let out = run(
        base,
        cache,
        &[],
        &["sentdm", "--json", "records", "show", "nope"],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(err["error"]["status"], 404, "{err}");
    assert!(err["error"]["code"].is_string() && err["error"]["message"].is_string());

    // A usage error: exit 2, JSON too.
    let out = run(
        base,
        cache,
        &[],
        &[
            "sentdm",
            "--json",
            "send",
            "--to",
            "+14155550100",
            "--follow",
        ],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(err["error"]["code"], "usage");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--follow"))
    );
    drop(server);
}
