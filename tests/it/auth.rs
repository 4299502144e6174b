//! Login, JWT, API keys, scoped keys: the 401 / 403 / 429 paths users rely on.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{
    ADMIN_EMAIL, ADMIN_PASSWORD, ConfigDir, JWT_SECRET, TestHost, builder, settings,
};

async fn server() -> TestHost {
    TestHost::start(builder(), settings(None, "mem://")).await
}

#[tokio::test]
async fn login_issues_a_token_that_opens_admin_endpoints() {
    let s = server().await;
    let res = s
        .http
        .post(s.url("/api/auth/login"))
        .json(&json!({"email": "  ADMIN@example.com ", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().expect("token");
    let res = s
        .http
        .get(s.url("/api/agents"))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    // The password is stored as an argon2 hash, never in clear.
    let rows = s
        .graph
        .query("SELECT VALUE password_hash FROM user;", Value::Null)
        .await
        .expect("query");
    let hash = rows[0][0].as_str().unwrap_or_default();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(ADMIN_PASSWORD));
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_json_error() {
    let s = server().await;
    for body in [
        json!({"email": ADMIN_EMAIL, "password": "wrong"}),
        json!({"email": "nobody@example.com", "password": ADMIN_PASSWORD}),
    ] {
        let res = s
            .http
            .post(s.url("/api/auth/login"))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 401);
        let err: Value = res.json().await.expect("json");
        assert_eq!(err["error"]["code"], "unauthorized");
        assert_eq!(err["error"]["message"], "invalid email or password");
    }
    let res = s
        .http
        .post(s.url("/api/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 422);
    let err: Value = res.json().await.expect("json");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("password"),
        "{err}"
    );

    // Missing, malformed, forged and expired credentials.
    let missing = s.http.get(s.url("/api/agents")).send().await.expect("get");
    assert_eq!(missing.status(), 401);
    let garbage = s
        .http
        .get(s.url("/api/agents"))
        .bearer_auth("x.y.z")
        .send()
        .await
        .expect("get");
    assert_eq!(garbage.status(), 401);
    let claims = json!({"sub": "u", "email": ADMIN_EMAIL, "role": "admin", "iss": "graphagent",
                        "iat": 1_000, "exp": 2_000});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("encode");
    let res = s
        .http
        .get(s.url("/api/agents"))
        .bearer_auth(&expired)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 401);
    let err: Value = res.json().await.expect("json");
    assert_eq!(err["error"]["message"], "access token expired");
    let now = graphagent::time::now_secs();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u", "email": ADMIN_EMAIL, "role": "admin", "iss": "graphagent", "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .expect("encode");
    let res = s
        .http
        .get(s.url("/api/agents"))
        .bearer_auth(&forged)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn api_keys_are_shown_once_scoped_and_revocable() {
    let s = server().await;
    let (status, created) = s
        .admin_post(
            "/api/auth/api-keys",
            json!({"name": "ci", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(key.starts_with(&format!("gak_{id}_")));

    let with_key = |k: &str| {
        s.http
            .get(s.url("/api/agents"))
            .header("x-api-key", k)
            .send()
    };
    assert_eq!(with_key(&key).await.expect("get").status(), 200);

    // Listed without the key or its hash; stored hashed.
    let (_, list) = s.admin_get("/api/auth/api-keys").await;
    let listed = list.to_string();
    assert!(
        listed.contains(&id) && !listed.contains(&key) && !listed.contains("hash"),
        "{listed}"
    );
    let stored = s
        .graph
        .query("SELECT * FROM api_key;", Value::Null)
        .await
        .expect("q");
    assert!(!stored[0].to_string().contains(&key));

    // A machine key works only for its scope: 403 on admin endpoints.
    let (_, machine) = s
        .admin_post(
            "/api/auth/api-keys",
            json!({"name": "hook", "scopes": ["webhook:sentdm:act_1"]}),
        )
        .await;
    let machine_key = machine["key"].as_str().expect("key");
    let res = with_key(machine_key).await.expect("get");
    assert_eq!(res.status(), 403);
    let err: Value = res.json().await.expect("json");
    assert_eq!(err["error"]["code"], "forbidden");

    // Revoked: 401. A tampered key: 401.
    let token = s.token().await;
    let res = s
        .http
        .delete(s.url(&format!("/api/auth/api-keys/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 200);
    let revoked: Value = res.json().await.expect("json");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(with_key(&key).await.expect("get").status(), 401);
    let tampered = format!("{}x", &machine_key[..machine_key.len() - 1]);
    assert_eq!(with_key(&tampered).await.expect("get").status(), 401);
    assert_eq!(with_key("nonsense").await.expect("get").status(), 401);
    let res = s
        .http
        .delete(s.url("/api/auth/api-keys/key_ffffffffffffffff"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn bad_key_requests_name_the_field_and_change_nothing() {
    let s = server().await;
    for (body, field) in [
        (json!({"name": "", "scopes": ["admin"]}), "name"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (
            json!({"name": "x", "scopes": ["admin", "Not A Scope"]}),
            "scopes[1]",
        ),
    ] {
        let (status, err) = s.admin_post("/api/auth/api-keys", body).await;
        assert_eq!(status, 422);
        assert_eq!(err["error"]["field"], field);
    }
    let (_, list) = s.admin_get("/api/auth/api-keys").await;
    assert_eq!(list, json!([]));
    // Only admins create keys.
    let res = s
        .http
        .post(s.url("/api/auth/api-keys"))
        .json(&json!({"name": "x", "scopes": ["admin"]}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn login_is_rate_limited_per_address() {
    let mut cfg = settings(None, "mem://");
    cfg.auth.login_per_minute = 3;
    let s = TestHost::start(builder(), cfg).await;
    let attempt = || {
        s.http
            .post(s.url("/api/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": "wrong"}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(attempt().await.expect("post").status(), 401);
    }
    let res = attempt().await.expect("post");
    assert_eq!(res.status(), 429);
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after));
    let err: Value = res.json().await.expect("json");
    assert_eq!(err["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn derived_scoped_keys_survive_restarts_and_are_checked() {
    // What the SentDM action puts in its webhook URL: derived, so restarts keep the URL.
    let s = server().await;
    let graph = graphagent::Graph::memory().await.expect("graph");
    let auth = graphagent::auth::Auth::new(graph, &settings(None, "mem://").auth)
        .await
        .expect("auth");
    use graphagent::plugin::ScopedKeys;
    let key = auth.derive("webhook:sentdm:act_1").expect("derived");
    drop(s);
    auth.authorize_scope(Some(&key), "webhook:sentdm:act_1")
        .await
        .expect("ok");
    let err = auth
        .authorize_scope(Some(&key), "webhook:sentdm:act_2")
        .await
        .expect_err("wrong scope");
    assert_eq!(err.status.as_u16(), 403);
    let err = auth
        .authorize_scope(None, "webhook:sentdm:act_1")
        .await
        .expect_err("missing");
    assert_eq!(err.status.as_u16(), 401);
}

/// `GET /api/agents` with `token`: status and body.
async fn agents_with(s: &TestHost, token: &str) -> (u16, Value) {
    s.get_with_token("/api/agents", token).await
}

#[tokio::test]
async fn a_deleted_users_token_is_refused() {
    let s = server().await;
    let token = s.token().await;
    assert_eq!(agents_with(&s, &token).await.0, 200);
    s.graph
        .query("DELETE user;", Value::Null)
        .await
        .expect("delete");
    let (status, err) = agents_with(&s, &token).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "unauthorized");
    assert_eq!(
        err["error"]["message"],
        "the access token's user no longer exists"
    );
}

#[tokio::test]
async fn a_changed_role_refuses_earlier_tokens() {
    let s = server().await;
    let token = s.token().await;
    s.graph
        .query("UPDATE user SET role = 'viewer';", Value::Null)
        .await
        .expect("update");
    let (status, err) = agents_with(&s, &token).await;
    assert_eq!(status, 401);
    assert_eq!(
        err["error"]["message"],
        "the access token's role is out of date; log in again"
    );
    // A token issued for the new role is current, and not an admin's.
    assert_eq!(agents_with(&s, &s.token().await).await.0, 403);
}

#[tokio::test]
async fn a_changed_admin_password_revokes_earlier_tokens() {
    let dir = ConfigDir::new("agent: x\nactions: []\n");
    let url = dir.graph_url();
    let first = TestHost::start(builder(), settings(None, &url)).await;
    let old = first.token().await;
    first.stop().await.expect("stop");

    // The same password at the next start keeps tokens valid.
    let second = TestHost::start(builder(), settings(None, &url)).await;
    assert_eq!(agents_with(&second, &old).await.0, 200);
    second.stop().await.expect("stop");

    let new_password = "a different, longer passphrase";
    let mut cfg = settings(None, &url);
    cfg.auth.admin_password = Some(new_password.into());
    let third = TestHost::start(builder(), cfg).await;
    let (status, err) = agents_with(&third, &old).await;
    assert_eq!(status, 401);
    assert_eq!(
        err["error"]["message"],
        "the access token was issued before the password changed; log in again"
    );
    let login = |password: &'static str| {
        third
            .http
            .post(third.url("/api/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": password}))
            .send()
    };
    assert_eq!(login(ADMIN_PASSWORD).await.expect("post").status(), 401);
    let res = login(new_password).await.expect("post");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(agents_with(&third, token).await.0, 200);
}

#[tokio::test]
async fn a_signed_token_is_taken_on_its_claims_while_the_graph_is_unavailable() {
    // So a send still reaches the provider when only its bookkeeping would fail.
    let s = server().await;
    let token = s.token().await;
    s.graph.set_outage(true);
    let during = agents_with(&s, &token).await;
    s.graph.set_outage(false);
    assert_eq!(during.0, 200, "{}", during.1);
    // Back up, the user is checked again.
    s.graph
        .query("DELETE user;", Value::Null)
        .await
        .expect("delete");
    assert_eq!(agents_with(&s, &token).await.0, 401);
}

/// Settings whose per-account back-off is short: two free failures, then 1 s, 2 s.
fn backoff_settings() -> graphagent::Settings {
    let mut cfg = settings(None, "mem://");
    // Each attempt below comes from an address of its own, so this never binds.
    cfg.auth.login_per_minute = 2;
    cfg.auth.login_backoff_after_failures = 2;
    cfg.auth.login_backoff_base = Duration::from_secs(1);
    cfg.auth.login_backoff_max = Duration::from_secs(2);
    cfg
}

/// A login attempt from 127.0.0.`host` (loopback answers on all of 127/8): status,
/// `Retry-After` and body.
async fn login_from(
    s: &TestHost,
    host: u8,
    email: &str,
    password: &str,
) -> (u16, Option<u64>, Value) {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, host]))
        .build()
        .expect("client");
    let res = client
        .post(s.url("/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("post");
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry_after, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn failed_logins_back_off_per_account_across_client_addresses() {
    let s = TestHost::start(builder(), backoff_settings()).await;
    let wrong = "not the password";
    // One email, however it is written, from a new address each time.
    for (host, email) in [
        (2, ADMIN_EMAIL),
        (3, " ADMIN@example.com"),
        (4, "Admin@Example.com "),
    ] {
        let (status, _, body) = login_from(&s, host, email, wrong).await;
        assert_eq!(status, 401, "{body}");
    }
    // Held: even the right password is not checked.
    let (status, retry_after, body) = login_from(&s, 5, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after, Some(1));
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        body["error"]["message"],
        "too many failed logins for this email; retry after 1 s"
    );

    // After the wait, the next failure doubles it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(login_from(&s, 6, ADMIN_EMAIL, wrong).await.0, 401);
    let (status, retry_after, _) = login_from(&s, 7, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!((status, retry_after), (429, Some(2)));

    // The right password after the wait logs in, and starts the count afresh.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _, body) = login_from(&s, 8, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    for host in [9, 10] {
        assert_eq!(login_from(&s, host, ADMIN_EMAIL, wrong).await.0, 401);
    }
    assert_eq!(login_from(&s, 11, ADMIN_EMAIL, ADMIN_PASSWORD).await.0, 200);
}

#[tokio::test]
async fn unknown_emails_back_off_like_known_ones() {
    let s = TestHost::start(builder(), backoff_settings()).await;
    let mut host = 1;
    let mut answers = Vec::new();
    for email in ["nobody@example.com", ADMIN_EMAIL] {
        let mut seen = Vec::new();
        for password in ["x", "y", "z", ADMIN_PASSWORD] {
            host += 1;
            seen.push(login_from(&s, host, email, password).await);
        }
        answers.push(seen);
    }
    let statuses: Vec<u16> = answers[0].iter().map(|a| a.0).collect();
    assert_eq!(statuses, [401, 401, 401, 429], "{:?}", answers[0]);
    assert_eq!(answers[0], answers[1], "same answers for both emails");
}

#[tokio::test]
async fn unusable_login_backoff_settings_stop_start_up() {
    let mut cfg = settings(None, "mem://");
    cfg.auth.login_backoff_base = Duration::from_secs(5);
    cfg.auth.login_backoff_max = Duration::from_secs(2);
    let err = match builder().settings(cfg).build().await {
        Ok(_) => panic!("built with a base over the cap"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("GRAPHAGENT_LOGIN_BACKOFF_BASE_MS"), "{err}");
}

#[tokio::test]
async fn login_documents_both_429s_and_retry_after() {
    let s = server().await;
    let doc: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let limited = &doc["paths"]["/api/auth/login"]["post"]["responses"]["429"];
    let description = limited["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("client address")
            && description.contains("failed logins for this email"),
        "{limited}"
    );
    assert_eq!(
        limited["headers"]["Retry-After"]["schema"]["type"], "integer",
        "{limited}"
    );
}
