//! Who may call what: admin login (argon2 password in the graph, HS256 JWT), stored API
//! keys (hashed, scoped, revocable), derived scoped keys for machine callers (provider
//! webhooks), the `Admin` extractor (for any state that holds the service), and the login limits (per client address, and an
//! exponential back-off per account).
//!
//! **Security Invariant.** No secret (password, JWT secret, key) is ever logged, stored in
//! clear or returned after creation; comparisons of secrets are constant-time.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lru::LruCache;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::graph::Graph;
use crate::plugin::ScopedKeys;
use crate::settings_source::{Fields, Key, SettingError, SettingsErrors, Source};
use crate::time::now_secs;

/// The scope that grants every admin endpoint.
pub const ADMIN_SCOPE: &str = "admin";
/// Prefix of stored API keys: `gak_{id}_{secret}`.
const STORED_PREFIX: &str = "gak_";
/// Prefix of derived scoped keys: `gsk_{base64url(scope)}.{mac}`.
const DERIVED_PREFIX: &str = "gsk_";
/// Domain separation for derived keys, so a derived MAC is never a valid JWT signature.
const DERIVE_DOMAIN: &[u8] = b"graphagent/scoped-key/v1\0";
/// Domain separation for credential stamps (see `Auth::credential_stamp`).
const STAMP_DOMAIN: &[u8] = b"graphagent/credential-stamp/v1\0";
/// Emails whose failed logins are remembered (about 100 bytes each).
const BACKOFF_ACCOUNTS: usize = 100_000;
/// A failure count is forgotten after this long without an attempt once its wait ended.
const BACKOFF_RESET: Duration = Duration::from_secs(15 * 60);
/// Longest configurable back-off wait.
const BACKOFF_MAX_LIMIT: Duration = Duration::from_secs(24 * 3600);

type HmacSha256 = Hmac<Sha256>;

/// Shortest configured JWT secret: 32 bytes, HS256's key size.
const MIN_SECRET_CHARS: usize = 32;
/// Token lifetimes outside this range are refused: a token must outlive a login round
/// trip, and anything longer than a month is a job for an API key.
const TOKEN_TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=30 * 86_400;

/// Auth settings (login, tokens, keys); see the README's configuration table. Secrets
/// are `SecretString`s: `Debug` shows them redacted and their memory is zeroed on drop.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// HS256 secret (`GRAPHAGENT_JWT_SECRET`, at least 32 characters). Without one an
    /// ephemeral secret is used: tokens die with the process and no scoped key can be
    /// derived.
    pub jwt_secret: Option<SecretString>,
    /// Access token lifetime (`GRAPHAGENT_JWT_TTL_SECS`, seconds, 60 to 2592000; default
    /// 3600).
    pub token_ttl: Duration,
    /// Admin user seeded at start (`GRAPHAGENT_ADMIN_EMAIL`).
    pub admin_email: Option<String>,
    /// Its password (`GRAPHAGENT_ADMIN_PASSWORD`).
    pub admin_password: Option<SecretString>,
    /// Login attempts allowed per client address per minute
    /// (`GRAPHAGENT_LOGIN_PER_MINUTE`, at least 1; default 10).
    pub login_per_minute: u32,
    /// Consecutive failed logins for one email that are answered without delay
    /// (`GRAPHAGENT_LOGIN_BACKOFF_AFTER_FAILURES`; default 5).
    pub login_backoff_after_failures: u32,
    /// Wait after the first failure past those; each further failure doubles it
    /// (`GRAPHAGENT_LOGIN_BACKOFF_BASE_MS`, milliseconds; default 1000; 0 turns the
    /// back-off off).
    pub login_backoff_base: Duration,
    /// Longest wait (`GRAPHAGENT_LOGIN_BACKOFF_MAX_SECS`, seconds; default 60, at most
    /// one day).
    pub login_backoff_max: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            token_ttl: Duration::from_secs(3600),
            admin_email: None,
            admin_password: None,
            login_per_minute: 10,
            login_backoff_after_failures: 5,
            login_backoff_base: Duration::from_secs(1),
            login_backoff_max: Duration::from_secs(60),
        }
    }
}

impl AuthSettings {
    /// The settings these are read from.
    pub const KEYS: &'static [Key] = &[
        Key::secret("jwt_secret"),
        Key::plain("jwt_ttl_secs"),
        Key::plain("admin_email"),
        Key::secret("admin_password"),
        Key::plain("login_per_minute"),
        Key::plain("login_backoff_after_failures"),
        Key::plain("login_backoff_base_ms"),
        Key::plain("login_backoff_max_secs"),
    ];

    /// Settings from `source` over the defaults, checked; every problem, not just the
    /// first.
    pub fn from_source(source: &Source) -> Result<Self, SettingsErrors> {
        let mut f = Fields::new(source, Self::KEYS);
        let d = Self::default();
        // Secrets are taken as written: spaces may be part of them.
        let secret = |key: &str| source.get(key).map(|e| SecretString::from(e.value.clone()));
        let s = Self {
            jwt_secret: secret("jwt_secret"),
            token_ttl: f
                .whole("jwt_ttl_secs", "seconds")
                .map_or(d.token_ttl, Duration::from_secs),
            admin_email: f.text("admin_email"),
            admin_password: secret("admin_password"),
            login_per_minute: f
                .whole("login_per_minute", "attempts")
                .unwrap_or(d.login_per_minute),
            login_backoff_after_failures: f
                .whole("login_backoff_after_failures", "failures")
                .unwrap_or(d.login_backoff_after_failures),
            login_backoff_base: f
                .whole("login_backoff_base_ms", "milliseconds")
                .map_or(d.login_backoff_base, Duration::from_millis),
            login_backoff_max: f
                .whole("login_backoff_max_secs", "seconds")
                .map_or(d.login_backoff_max, Duration::from_secs),
        };
        f.checked(s, |s| s.validate(source))
    }

    /// What makes these settings unusable, one problem per setting, named as `source`
    /// has it (a variable for settings built in code). Needs no I/O, so it runs before
    /// the graph is opened.
    pub fn validate(&self, source: &Source) -> Vec<SettingError> {
        let mut problems = Vec::new();
        if let Some(secret) = &self.jwt_secret
            && secret.expose_secret().chars().count() < MIN_SECRET_CHARS
        {
            problems.push(source.error(
                "jwt_secret",
                format!("expected at least {MIN_SECRET_CHARS} characters"),
            ));
        }
        let ttl = self.token_ttl.as_secs();
        if !TOKEN_TTL_RANGE.contains(&ttl) {
            problems.push(source.error(
                "jwt_ttl_secs",
                format!(
                    "expected {} to {} seconds, got {ttl}",
                    TOKEN_TTL_RANGE.start(),
                    TOKEN_TTL_RANGE.end()
                ),
            ));
        }
        match (&self.admin_email, &self.admin_password) {
            (Some(_), None) => problems.push(source.error(
                "admin_password",
                "expected with GRAPHAGENT_ADMIN_EMAIL (set both or neither), got none",
            )),
            (None, Some(_)) => problems.push(source.error(
                "admin_email",
                "expected with GRAPHAGENT_ADMIN_PASSWORD (set both or neither), got none",
            )),
            _ => {}
        }
        if let Some(email) = &self.admin_email
            && !normalize_email(email).contains('@')
        {
            problems.push(source.invalid(
                &Key::plain("admin_email"),
                "an email address such as admin@example.com",
                email,
            ));
        }
        if self.login_per_minute == 0 {
            problems.push(source.error("login_per_minute", "expected at least 1, got 0"));
        }
        if self.login_backoff_max > BACKOFF_MAX_LIMIT {
            problems.push(source.error(
                "login_backoff_max_secs",
                format!(
                    "expected at most {} seconds (one day), got {}",
                    BACKOFF_MAX_LIMIT.as_secs(),
                    self.login_backoff_max.as_secs()
                ),
            ));
        }
        if self.login_backoff_base > self.login_backoff_max {
            problems.push(source.error(
                "login_backoff_base_ms",
                format!(
                    "expected at most the longest wait ({} ms), got {} ms",
                    self.login_backoff_max.as_millis(),
                    self.login_backoff_base.as_millis()
                ),
            ));
        }
        problems
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// User email.
    pub email: String,
    /// Role; `admin` is the only one today.
    pub role: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expires at (unix seconds).
    pub exp: u64,
    /// Issuer, always `graphagent`.
    pub iss: String,
    /// Fingerprint of the user's password hash when the token was issued: a changed
    /// password (a new hash) no longer matches, so earlier tokens stop working. Optional
    /// when decoding so that an expired token is reported as expired whatever it holds.
    #[serde(default)]
    pub stamp: String,
}

/// The authenticated caller of an admin endpoint.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A logged-in user (JWT).
    User {
        /// Email of the user.
        email: String,
    },
    /// A stored API key with the `admin` scope.
    ApiKey {
        /// The key's id (never the key).
        id: String,
    },
}

/// The auth service: one per host.
pub struct Auth {
    graph: Graph,
    secret: Vec<u8>,
    /// Whether `secret` survives restarts (configured, not generated).
    stable_secret: bool,
    token_ttl: Duration,
    login_per_minute: u32,
    limiter: Mutex<LruCache<IpAddr, (Instant, u32)>>,
    backoff: AccountBackoff,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("stable_secret", &self.stable_secret)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = r#"
DEFINE TABLE IF NOT EXISTS user SCHEMALESS;
DEFINE INDEX IF NOT EXISTS user_email ON user FIELDS email UNIQUE;
DEFINE TABLE IF NOT EXISTS api_key SCHEMALESS;
"#;

/// Why the host's auth could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthInitError {
    /// The graph failed.
    #[error("graph: {0}")]
    Graph(#[from] crate::graph::GraphError),
    /// A setting is unusable (every problem).
    #[error("{0}")]
    Settings(#[from] SettingsErrors),
    /// The admin password could not be hashed.
    #[error("{0}")]
    Config(String),
}

impl Auth {
    /// Apply the schema and seed the admin user.
    pub async fn new(graph: Graph, settings: &AuthSettings) -> Result<Self, AuthInitError> {
        SettingsErrors::check(settings.validate(&Source::new()))?;
        graph.apply_schema("auth", SCHEMA).await?;
        let (secret, stable_secret) = match &settings.jwt_secret {
            Some(s) => (s.expose_secret().as_bytes().to_vec(), true),
            None => {
                tracing::warn!(
                    "GRAPHAGENT_JWT_SECRET is not set: using a random secret for this process; \
                     tokens end with it and scoped webhook keys cannot be issued"
                );
                (rand::random::<[u8; 32]>().to_vec(), false)
            }
        };
        let auth = Self {
            graph,
            secret,
            stable_secret,
            token_ttl: settings.token_ttl,
            login_per_minute: settings.login_per_minute,
            limiter: Mutex::new(LruCache::new(
                NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            )),
            backoff: AccountBackoff::new(BackoffPolicy::from(settings), BACKOFF_ACCOUNTS),
        };
        if let (Some(email), Some(password)) = (&settings.admin_email, &settings.admin_password) {
            auth.seed_admin(email, password.expose_secret()).await?;
        } else {
            // Without this line a fresh server answers every login 401 and nothing says
            // why. An admin seeded by an earlier start still logs in, so it is only said
            // when the graph has no user at all.
            let any: Option<serde_json::Value> = auth
                .graph
                .query_opt("SELECT email FROM user LIMIT 1;", json!({}), 0)
                .await?;
            if any.is_none() {
                tracing::warn!(
                    "no admin is configured and none is stored, so nobody can log in: set \
                     GRAPHAGENT_ADMIN_EMAIL and GRAPHAGENT_ADMIN_PASSWORD (or admin_email and \
                     admin_password in the settings file) and restart"
                );
            }
        }
        Ok(auth)
    }

    /// Create the admin user, or update its password when the configured one changed.
    async fn seed_admin(&self, email: &str, password: &str) -> Result<(), AuthInitError> {
        let email = normalize_email(email);
        let existing: Option<UserRow> = self
            .graph
            .query_opt(
                "SELECT email, password_hash, role FROM user WHERE email = $email LIMIT 1;",
                json!({"email": email}),
                0,
            )
            .await?;
        if let Some(user) = &existing
            && verify_password(password.to_owned(), user.password_hash.clone()).await
        {
            return Ok(());
        }
        let hash = hash_password(password.to_owned())
            .await
            .map_err(AuthInitError::Config)?;
        // Replicas starting together on a fresh graph seed at once: retried on conflict,
        // the last one's hash (of the same password) stays.
        self.graph
            .transaction(
                "UPSERT type::record('user', $key) MERGE { email: $email, password_hash: $hash, role: 'admin', updated_at: time::now() };",
                json!({"key": user_key(&email), "email": email, "hash": hash}),
            )
            .await?;
        tracing::info!(user.email = %email, "admin user seeded");
        Ok(())
    }

    /// Exchange email and password for an access token. An email with too many
    /// consecutive failures is answered 429 without checking the password, whether or
    /// not a user has it.
    pub async fn login(&self, email: &str, password: &str) -> ApiResult<TokenResponse> {
        let email = normalize_email(email);
        let account = account_key(&email);
        self.backoff
            .admit(account, Instant::now())
            .map_err(|wait| {
                let secs = retry_after_secs(wait);
                let mut err = ApiError::too_many_requests(secs);
                err.message =
                    format!("too many failed logins for this email; retry after {secs} s");
                err
            })?;
        // From here until the password is checked the attempt counts as a failure (see
        // `AccountBackoff::admit`); a graph error leaves it counted.
        let user: Option<UserRow> = self
            .graph
            .query_opt(
                "SELECT email, password_hash, role FROM user WHERE email = $email LIMIT 1;",
                json!({"email": email}),
                0,
            )
            .await?;
        // Verify against a fixed hash when the user is unknown so timing does not tell
        // which emails exist.
        let (hash, user) = match user {
            Some(u) => (u.password_hash.clone(), Some(u)),
            None => (DUMMY_HASH.to_owned(), None),
        };
        let ok = verify_password(password.to_owned(), hash).await;
        let Some(user) = user.filter(|_| ok) else {
            self.backoff.failed(&account, Instant::now());
            return Err(ApiError::unauthorized("invalid email or password"));
        };
        self.backoff.succeeded(&account);
        let token = self.issue_token(&user, now_secs())?;
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: self.token_ttl.as_secs(),
        })
    }

    /// Sign a token for `user` issued at `iat` (unix seconds).
    fn issue_token(&self, user: &UserRow, iat: u64) -> ApiResult<String> {
        let claims = Claims {
            sub: user_key(&user.email),
            email: user.email.clone(),
            role: user.role.clone(),
            iat,
            exp: iat + self.token_ttl.as_secs(),
            iss: "graphagent".into(),
            stamp: self.credential_stamp(&user.password_hash),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign token");
            ApiError::internal()
        })
    }

    /// A MAC of the password hash: it changes whenever a password is set (a fresh salt
    /// each time), and without the JWT secret it says nothing about the hash.
    fn credential_stamp(&self, password_hash: &str) -> String {
        self.keyed_mac(STAMP_DOMAIN, password_hash.as_bytes(), 16)
    }

    /// The email and role of the user a verified token names, as they are now: 401 when
    /// the user was deleted, its role changed or its password changed since the token
    /// was issued. One read by record id. While the graph is unavailable the token's own
    /// claims are taken, so a send still reaches the provider when only bookkeeping
    /// would fail (DESIGN invariant 6); a revoked token then works until the graph is
    /// back or the token expires.
    async fn current_subject(&self, claims: Claims) -> ApiResult<(String, String)> {
        let user: Option<UserRow> = match self
            .graph
            .query_opt(
                "SELECT email, password_hash, role FROM type::record('user', $sub);",
                json!({"sub": claims.sub}),
                0,
            )
            .await
        {
            Ok(user) => user,
            Err(e) if e.is_unavailable() => {
                tracing::warn!(
                    user.id = %claims.sub,
                    "graph unavailable: accepting a signed token without checking its user"
                );
                return Ok((claims.email, claims.role));
            }
            Err(e) => return Err(e.into()),
        };
        let user =
            user.ok_or_else(|| ApiError::unauthorized("the access token's user no longer exists"))?;
        if user.role != claims.role {
            return Err(ApiError::unauthorized(
                "the access token's role is out of date; log in again",
            ));
        }
        let stamp = self.credential_stamp(&user.password_hash);
        if !bool::from(stamp.as_bytes().ct_eq(claims.stamp.as_bytes())) {
            return Err(ApiError::unauthorized(
                "the access token was issued before the password changed; log in again",
            ));
        }
        Ok((user.email, user.role))
    }

    fn verify_token(&self, token: &str) -> ApiResult<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["graphagent"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("access token expired")
                }
                _ => ApiError::unauthorized("invalid access token"),
            })
    }

    /// Check the credentials in `headers` grant admin access.
    pub async fn authorize_admin(&self, headers: &HeaderMap) -> ApiResult<Principal> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
            let claims = self.verify_token(token.trim())?;
            let (email, role) = self.current_subject(claims).await?;
            if role != "admin" {
                return Err(ApiError::forbidden("this endpoint needs the admin role"));
            }
            return Ok(Principal::User { email });
        }
        let key = api_key_header(headers).ok_or_else(|| {
            ApiError::unauthorized("missing credentials: send a bearer token or x-api-key")
        })?;
        match self.check_key(key, ADMIN_SCOPE).await? {
            KeyCheck::Granted { id } => Ok(Principal::ApiKey { id }),
            KeyCheck::WrongScope => {
                Err(ApiError::forbidden("this API key lacks the `admin` scope"))
            }
        }
    }

    /// Check `key` (stored or derived) grants `scope`: 401 when it is not a valid key,
    /// 403 when it is valid for other scopes only.
    pub async fn authorize_scope(&self, key: Option<&str>, scope: &str) -> ApiResult<()> {
        let key = key.ok_or_else(|| ApiError::unauthorized("missing api key"))?;
        match self.check_key(key, scope).await? {
            KeyCheck::Granted { .. } => Ok(()),
            KeyCheck::WrongScope => Err(ApiError::forbidden(format!(
                "this API key is not valid for scope `{scope}`"
            ))),
        }
    }

    async fn check_key(&self, key: &str, scope: &str) -> ApiResult<KeyCheck> {
        if let Some(rest) = key.strip_prefix(DERIVED_PREFIX) {
            let (scope_b64, mac) = rest
                .split_once('.')
                .ok_or_else(|| ApiError::unauthorized("invalid api key"))?;
            let key_scope = URL_SAFE_NO_PAD
                .decode(scope_b64)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::unauthorized("invalid api key"))?;
            let expected = self.derived_mac(&key_scope);
            if !self.stable_secret || !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
                return Err(ApiError::unauthorized("invalid api key"));
            }
            return Ok(if key_scope == scope {
                KeyCheck::Granted {
                    id: format!("derived:{key_scope}"),
                }
            } else {
                KeyCheck::WrongScope
            });
        }
        let (id, _) =
            parse_stored_key(key).ok_or_else(|| ApiError::unauthorized("invalid api key"))?;
        let row: Option<ApiKeyRow> = self
            .graph
            .query_opt(
                "SELECT record::id(id) AS id, name, scopes, hash, created_at, revoked_at FROM type::record('api_key', $id);",
                json!({"id": id}),
                0,
            )
            .await?;
        let Some(row) = row.filter(|r| r.revoked_at.is_none()) else {
            return Err(ApiError::unauthorized("invalid or revoked api key"));
        };
        let presented = hex_sha256(key.as_bytes());
        if !bool::from(presented.as_bytes().ct_eq(row.hash.as_bytes())) {
            return Err(ApiError::unauthorized("invalid or revoked api key"));
        }
        Ok(if row.scopes.iter().any(|s| s == scope) {
            KeyCheck::Granted { id: row.id }
        } else {
            KeyCheck::WrongScope
        })
    }

    fn derived_mac(&self, scope: &str) -> String {
        self.keyed_mac(DERIVE_DOMAIN, scope.as_bytes(), 24)
    }

    /// HMAC-SHA256 of `data` under the JWT secret and a domain prefix, its first `len`
    /// bytes (at most 32) in base64url.
    fn keyed_mac(&self, domain: &[u8], data: &[u8], len: usize) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(domain);
        mac.update(data);
        let digest = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(digest.get(..len).unwrap_or(&digest))
    }

    /// Create a stored API key; the returned `key` is shown this once.
    pub async fn create_key(&self, request: CreateApiKey) -> ApiResult<ApiKeyCreated> {
        let name = request.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ApiError::invalid_field(
                "name",
                "must be 1 to 100 characters",
            ));
        }
        if request.scopes.is_empty() || request.scopes.len() > 16 {
            return Err(ApiError::invalid_field("scopes", "give 1 to 16 scopes"));
        }
        for (i, scope) in request.scopes.iter().enumerate() {
            if !valid_scope(scope) {
                return Err(ApiError::invalid_field(
                    format!("scopes[{i}]"),
                    "a scope is `admin` or `kind:part[:part…]` of letters, digits, `_`, `-`, `.`",
                ));
            }
        }
        let id = format!("key_{}", hex(&rand::random::<[u8; 8]>()));
        let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let key = format!("{STORED_PREFIX}{id}_{secret}");
        let rows: Vec<ApiKeyRow> = self
            .graph
            .query_rows(
                "CREATE type::record('api_key', $id) CONTENT { name: $name, scopes: $scopes, hash: $hash, created_at: time::now(), revoked_at: NONE } RETURN record::id(id) AS id, name, scopes, hash, created_at, revoked_at;",
                json!({"id": id, "name": name, "scopes": request.scopes, "hash": hex_sha256(key.as_bytes())}),
                0,
            )
            .await?;
        let row = rows.into_iter().next().ok_or_else(ApiError::internal)?;
        tracing::info!(api_key.id = %row.id, "api key created");
        Ok(ApiKeyCreated {
            info: row.info(),
            key,
        })
    }

    /// Every stored key, newest first (never the key or its hash).
    pub async fn list_keys(&self) -> ApiResult<Vec<ApiKeyInfo>> {
        let rows: Vec<ApiKeyRow> = self
            .graph
            .query_rows(
                "SELECT record::id(id) AS id, name, scopes, hash, created_at, revoked_at FROM api_key ORDER BY created_at DESC;",
                serde_json::Value::Null,
                0,
            )
            .await?;
        Ok(rows.iter().map(ApiKeyRow::info).collect())
    }

    /// Revoke a key; revoking twice is not an error.
    pub async fn revoke_key(&self, id: &str) -> ApiResult<ApiKeyInfo> {
        let rows: Vec<ApiKeyRow> = self
            .graph
            .query_rows(
                "UPDATE type::record('api_key', $id) SET revoked_at = revoked_at ?? time::now() WHERE id != NONE RETURN record::id(id) AS id, name, scopes, hash, created_at, revoked_at;",
                json!({"id": id}),
                0,
            )
            .await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(format!("no api key `{id}`")))?;
        tracing::info!(api_key.id = %row.id, "api key revoked");
        Ok(row.info())
    }

    /// Count a login attempt from `addr`; `Err` with the seconds to wait when over limit.
    pub(crate) fn admit_login(&self, addr: IpAddr) -> Result<(), u64> {
        let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let entry = limiter.get_or_insert_mut(addr, || (now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= self.login_per_minute {
            let wait = window.saturating_sub(now.duration_since(entry.0));
            return Err(retry_after_secs(wait));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ScopedKeys for Auth {
    async fn authorize(&self, key: Option<&str>, scope: &str) -> ApiResult<()> {
        self.authorize_scope(key, scope).await
    }

    fn derive(&self, scope: &str) -> Option<String> {
        // Admin power is never derivable, and a random per-process secret would change
        // the key (and so a provider's webhook URL) at every restart.
        if !self.stable_secret || scope == ADMIN_SCOPE || !valid_scope(scope) {
            return None;
        }
        Some(format!(
            "{DERIVED_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(scope.as_bytes()),
            self.derived_mac(scope)
        ))
    }
}

enum KeyCheck {
    Granted { id: String },
    WrongScope,
}

/// How long one email waits after consecutive failed logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BackoffPolicy {
    /// Failures answered without a wait.
    after_failures: u32,
    /// Wait after the first failure past those.
    base: Duration,
    /// Longest wait.
    max: Duration,
}

impl From<&AuthSettings> for BackoffPolicy {
    /// Bounds are [`AuthSettings::validate`]'s job; `max` is clamped to the limit anyway
    /// so a wait can never overflow an `Instant`.
    fn from(settings: &AuthSettings) -> Self {
        Self {
            after_failures: settings.login_backoff_after_failures,
            base: settings.login_backoff_base,
            max: settings.login_backoff_max.min(BACKOFF_MAX_LIMIT),
        }
    }
}

impl BackoffPolicy {
    /// The wait after the `failures`-th consecutive failure: none up to
    /// `after_failures`, then `base`, doubling each time, at most `max`.
    fn delay(&self, failures: u32) -> Duration {
        match failures.checked_sub(self.after_failures) {
            None | Some(0) => Duration::ZERO,
            Some(past) => self
                .base
                .saturating_mul(1u32 << (past - 1).min(31))
                .min(self.max),
        }
    }
}

/// One email's consecutive failures and when it may be tried again.
#[derive(Debug, Clone, Copy)]
struct AccountFailures {
    failures: u32,
    /// No attempt is checked before this. Set only by a non-zero wait: two attempts that
    /// read the clock in one order and take the lock in the other must not hold each
    /// other up over a free failure.
    until: Option<Instant>,
    /// The latest counted attempt.
    last: Instant,
}

impl AccountFailures {
    /// Arm the wait the current count earns, from `now`.
    fn arm(&mut self, policy: &BackoffPolicy, now: Instant) {
        self.last = self.last.max(now);
        let delay = policy.delay(self.failures);
        if !delay.is_zero() {
            self.until = self.until.max(Some(now + delay));
        }
    }
}

/// The per-account login back-off: an LRU of emails (by hash) with recent failures.
struct AccountBackoff {
    policy: BackoffPolicy,
    accounts: Mutex<LruCache<[u8; 32], AccountFailures>>,
}

impl AccountBackoff {
    fn new(policy: BackoffPolicy, capacity: usize) -> Self {
        // `LruCache::new` would allocate the whole table up front; this grows with use.
        let mut accounts = LruCache::unbounded();
        accounts.resize(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN));
        Self {
            policy,
            accounts: Mutex::new(accounts),
        }
    }

    /// Admit an attempt on `account` at `now`, or `Err` with the time left to wait. An
    /// admitted attempt counts as a failure at once (and arms the wait that failure
    /// earns), so concurrent attempts cannot all slip through one open moment; a
    /// success takes it back by clearing the account.
    fn admit(&self, account: [u8; 32], now: Instant) -> Result<(), Duration> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = accounts.get_or_insert_mut(account, || AccountFailures {
            failures: 0,
            until: None,
            last: now,
        });
        if let Some(until) = entry.until.filter(|until| now < *until) {
            return Err(until - now);
        }
        let quiet_since = entry
            .until
            .map_or(entry.last, |until| until.max(entry.last));
        if now.saturating_duration_since(quiet_since) >= BACKOFF_RESET {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.arm(&self.policy, now);
        Ok(())
    }

    /// The attempt failed: its wait counts from now, when the caller got the answer.
    fn failed(&self, account: &[u8; 32], now: Instant) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = accounts.get_mut(account) {
            entry.arm(&self.policy, now);
        }
    }

    /// The attempt succeeded: the account starts afresh.
    fn succeeded(&self, account: &[u8; 32]) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.pop(account);
    }
}

/// The back-off key of a normalised email: fixed size whatever the client sent, and no
/// email kept in memory.
fn account_key(email: &str) -> [u8; 32] {
    Sha256::digest(email.as_bytes()).into()
}

/// Whole seconds for `Retry-After`, rounded up so a client that waits them is admitted.
fn retry_after_secs(wait: Duration) -> u64 {
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    millis.div_ceil(1000).max(1)
}

/// Argon2id hash of a fixed string, used when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2cyjmnmVw4MLKtwRzzjgcpMq+CzbL0GGlC3Z1xRsrQI";

async fn hash_password(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| format!("cannot hash password: {e}"))
    })
    .await
    .map_err(|e| format!("cannot hash password: {e}"))?
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn user_key(email: &str) -> String {
    format!("usr_{}", &hex_sha256(email.as_bytes())[..20])
}

fn valid_scope(scope: &str) -> bool {
    if scope == ADMIN_SCOPE {
        return true;
    }
    let mut parts = scope.split(':');
    let head_ok = parts.next().is_some_and(|h| {
        h.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && h.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    });
    let mut rest = parts.peekable();
    head_ok
        && rest.peek().is_some()
        && rest.all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
        && scope.len() <= 200
}

fn parse_stored_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(STORED_PREFIX)?;
    // id is `key_` + 16 hex digits.
    let id = rest.get(..20)?;
    let secret = rest.get(20..)?.strip_prefix('_')?;
    (id.starts_with("key_") && !secret.is_empty()).then_some((id, secret))
}

fn api_key_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-api-key").and_then(|v| v.to_str().ok())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

#[derive(Deserialize)]
struct UserRow {
    email: String,
    password_hash: String,
    role: String,
}

#[derive(Deserialize)]
struct ApiKeyRow {
    id: String,
    name: String,
    scopes: Vec<String>,
    hash: String,
    created_at: String,
    #[serde(default)]
    revoked_at: Option<String>,
}

impl ApiKeyRow {
    fn info(&self) -> ApiKeyInfo {
        ApiKeyInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            created_at: self.created_at.clone(),
            revoked_at: self.revoked_at.clone(),
        }
    }
}

/// Admin credentials: a bearer JWT with the admin role, or an API key with the `admin`
/// scope in `x-api-key`. 401 when missing or invalid, 403 when valid but not admin.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

/// Any state that can hand out the auth service can check admins, so this module
/// knows nothing of the HTTP layer's state.
impl<S> FromRequestParts<S> for Admin
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Arc::<Auth>::from_ref(state)
            .authorize_admin(&parts.headers)
            .await
            .map(Admin)
    }
}

/// `POST /api/auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's email.
    #[schema(example = "admin@example.com")]
    pub email: String,
    /// The user's password.
    #[schema(example = "change-me", format = Password)]
    pub password: String,
}

/// An access token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until it expires.
    #[schema(example = 3600)]
    pub expires_in: u64,
}

/// `POST /api/auth/api-keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for: 1 to 100 characters, not only spaces (trimmed).
    #[schema(
        example = "ci deploys",
        min_length = 1,
        max_length = 100,
        pattern = r"\S"
    )]
    pub name: String,
    /// What it grants (1 to 16 scopes): `admin`, or a machine scope such as
    /// `webhook:sentdm:{action_id}`.
    #[schema(schema_with = scopes_schema)]
    pub scopes: Vec<String>,
}

/// The syntax [`valid_scope`] checks, for the document.
const SCOPE_PATTERN: &str = r"^(admin|[a-z][a-z0-9_]*(:[A-Za-z0-9_.-]+)+)$";

fn scopes_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(SCOPE_PATTERN))
                .max_length(Some(200)),
        )
        .min_items(Some(1))
        .max_items(Some(16))
        .description(Some(
            "What it grants (1 to 16 scopes): `admin`, or a machine scope such as \
             `webhook:sentdm:{action_id}`.",
        ))
        .examples([json!(["admin"])])
        .build()
}

/// A stored API key's public description.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Key id (also embedded in the key).
    #[schema(example = "key_3f9a61c2d4e5b6a7")]
    pub id: String,
    /// What the key is for.
    pub name: String,
    /// What it grants.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// A new key: `key` is shown only in this response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreated {
    /// The key's description.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key itself; store it now, it cannot be shown again.
    #[schema(example = "gak_key_3f9a61c2d4e5b6a7_Zm9vYmFy…")]
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    async fn auth(secret: Option<&str>) -> Auth {
        let graph = Graph::memory().await.expect("graph");
        Auth::new(
            graph,
            &AuthSettings {
                jwt_secret: secret.map(SecretString::from),
                ..AuthSettings::default()
            },
        )
        .await
        .expect("auth")
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn derived_keys_are_stable_scoped_and_unforgeable() {
        let a = auth(Some(SECRET)).await;
        let scope = "webhook:sentdm:act_1";
        let key = a.derive(scope).expect("derived");
        assert_eq!(Some(key.clone()), auth(Some(SECRET)).await.derive(scope));
        assert_ne!(
            Some(key.clone()),
            auth(Some(&SECRET.repeat(2))).await.derive(scope)
        );
        a.authorize_scope(Some(&key), scope).await.expect("granted");
        let wrong = a
            .authorize_scope(Some(&key), "webhook:sentdm:act_2")
            .await
            .expect_err("other scope");
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        // Swapping the embedded scope invalidates the MAC.
        let mac = key.split_once('.').map(|(_, m)| m).unwrap_or_default();
        let forged = format!(
            "gsk_{}.{mac}",
            URL_SAFE_NO_PAD.encode("webhook:sentdm:act_2")
        );
        let err = a
            .authorize_scope(Some(&forged), "webhook:sentdm:act_2")
            .await
            .expect_err("forged");
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert!(a.derive(ADMIN_SCOPE).is_none());
    }

    #[tokio::test]
    async fn no_stable_secret_no_derived_keys() {
        let a = auth(None).await;
        assert!(a.derive("webhook:sentdm:x").is_none());
    }

    #[test]
    fn dummy_hash_parses_so_unknown_users_cost_a_full_verify() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn scope_syntax() {
        assert!(valid_scope("admin"));
        assert!(valid_scope("webhook:sentdm:act_0c9d"));
        assert!(!valid_scope("webhook"));
        assert!(!valid_scope("Webhook:x"));
        assert!(!valid_scope("webhook::x"));
        assert!(!valid_scope("webhook:a b"));
    }

    #[test]
    fn the_documented_scope_syntax_is_the_one_checked() {
        let schema = json!({"type": "string", "pattern": SCOPE_PATTERN, "maxLength": 200});
        let documented = jsonschema::validator_for(&schema).expect("the pattern compiles");
        let long = |n: usize| format!("a:{}", "b".repeat(n));
        for scope in [
            "admin",
            "admin:x",
            "webhook:sentdm:act_0c9d",
            "a:b.c-d_E",
            "webhook",
            "Webhook:x",
            "webhook::x",
            "webhook:a b",
            "9a:b",
            "a:é",
            "",
            ":x",
            &long(198),
            &long(199),
        ] {
            assert_eq!(
                documented.is_valid(&json!(scope)),
                valid_scope(scope),
                "`{scope}`"
            );
        }
    }

    #[test]
    fn stored_key_parsing() {
        assert_eq!(
            parse_stored_key("gak_key_0123456789abcdef_secret"),
            Some(("key_0123456789abcdef", "secret"))
        );
        assert_eq!(parse_stored_key("gak_key_01_x"), None);
        assert_eq!(parse_stored_key("nope"), None);
    }

    #[tokio::test]
    async fn login_limiter_counts_per_address() {
        let a = auth(Some(SECRET)).await;
        let one: IpAddr = [127, 0, 0, 1].into();
        let two: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..10 {
            a.admit_login(one).expect("under limit");
        }
        let wait = a.admit_login(one).expect_err("over limit");
        assert!((1..=60).contains(&wait));
        a.admit_login(two).expect("other address");
    }
    const SEC: Duration = Duration::from_secs(1);

    /// Two free failures, then 1 s doubling up to a minute.
    fn two_free_then_one_second() -> AccountBackoff {
        let policy = BackoffPolicy {
            after_failures: 2,
            base: SEC,
            max: 60 * SEC,
        };
        AccountBackoff::new(policy, 100)
    }

    #[test]
    fn backoff_is_free_then_doubles_up_to_the_cap() {
        let policy = BackoffPolicy {
            after_failures: 2,
            base: SEC,
            max: 5 * SEC,
        };
        let delays: Vec<u64> = (0..=7).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 0, 0, 1, 2, 4, 5, 5]);
        assert_eq!(policy.delay(u32::MAX), 5 * SEC);
        let off = BackoffPolicy {
            base: Duration::ZERO,
            ..policy
        };
        assert_eq!(off.delay(1_000), Duration::ZERO);
    }

    #[test]
    fn account_backoff_waits_counts_attempts_in_flight_and_resets() {
        let backoff = two_free_then_one_second();
        let a = account_key("a@example.com");
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ms = Duration::from_millis;
        // Two free failures; the third arms a 1 s wait, counted from its answer.
        for i in 0..3 {
            backoff.admit(a, at(i * 100)).expect("admitted");
            backoff.failed(&a, at(i * 100 + 50));
        }
        assert_eq!(backoff.admit(a, at(750)), Err(ms(500)));
        backoff
            .admit(account_key("b@example.com"), at(750))
            .expect("other accounts are not held");
        // Over: the next failure waits twice as long.
        backoff.admit(a, at(1250)).expect("wait over");
        backoff.failed(&a, at(1300));
        assert_eq!(backoff.admit(a, at(2300)), Err(ms(1000)));
        // An admitted attempt counts before its answer: a concurrent one waits.
        backoff.admit(a, at(3300)).expect("wait over");
        assert_eq!(backoff.admit(a, at(3300)), Err(4 * SEC));
        // A success starts afresh: two free failures again.
        backoff.succeeded(&a);
        for i in 0..3 {
            backoff
                .admit(a, at(3400 + i))
                .expect("reset by the success");
            backoff.failed(&a, at(3400 + i));
        }
        assert_eq!(backoff.admit(a, at(3402)), Err(SEC));
        // Fifteen quiet minutes after the wait ended forget the count.
        let later = at(4402) + BACKOFF_RESET;
        for _ in 0..3 {
            backoff.admit(a, later).expect("forgotten");
            backoff.failed(&a, later);
        }
        assert_eq!(backoff.admit(a, later), Err(SEC));
    }

    #[test]
    fn free_failures_add_up_while_attempts_keep_coming_and_hold_nobody_up() {
        let backoff = two_free_then_one_second();
        let a = account_key("a@example.com");
        let t0 = Instant::now();
        // An attempt that read the clock before another took the lock is not held up
        // by that other's free failure.
        backoff.admit(a, t0 + SEC).expect("admitted");
        backoff.failed(&a, t0 + SEC);
        backoff
            .admit(a, t0)
            .expect("a free failure arms no wait, whatever the clock order");
        // Ten minutes apart, failures still count as consecutive.
        let ten_minutes = 600 * SEC;
        backoff.admit(a, t0 + ten_minutes).expect("third, arms 1 s");
        assert_eq!(backoff.admit(a, t0 + ten_minutes), Err(SEC));
    }

    #[test]
    fn account_backoff_memory_is_bounded() {
        let policy = BackoffPolicy {
            after_failures: 0,
            base: SEC,
            max: SEC,
        };
        let backoff = AccountBackoff::new(policy, 3);
        let now = Instant::now();
        for i in 0..50 {
            let _ = backoff.admit(account_key(&format!("{i}@example.com")), now);
        }
        let held = backoff.accounts.lock().map(|a| a.len()).unwrap_or_default();
        assert_eq!(held, 3);
        // The most recent ones are the ones kept.
        assert!(backoff.admit(account_key("49@example.com"), now).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }

    fn source(pairs: &[(&str, &str)]) -> Source {
        let mut source = Source::new();
        for (key, value) in pairs {
            source.set_env(key, value);
        }
        source
    }

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        match AuthSettings::from_source(&source(pairs)) {
            Ok(s) => panic!("accepted {s:?}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn login_settings_are_parsed_or_reported() {
        let s = AuthSettings::from_source(&source(&[
            ("login_backoff_after_failures", "3"),
            ("login_backoff_base_ms", "250"),
            ("login_backoff_max_secs", "30"),
            ("login_per_minute", "7"),
        ]))
        .expect("valid");
        assert_eq!(s.login_backoff_after_failures, 3);
        assert_eq!(s.login_backoff_base, Duration::from_millis(250));
        assert_eq!(s.login_backoff_max, 30 * SEC);
        assert_eq!(s.login_per_minute, 7);
        assert!(AuthSettings::default().validate(&Source::new()).is_empty());

        assert_eq!(
            problems(&[("login_backoff_base_ms", "soon"), ("jwt_ttl_secs", "1h")]),
            [
                "GRAPHAGENT_JWT_TTL_SECS: expected a whole number of seconds, got `1h`",
                "GRAPHAGENT_LOGIN_BACKOFF_BASE_MS: expected a whole number of milliseconds, \
                 got `soon`",
            ]
        );
        assert_eq!(
            problems(&[
                ("login_backoff_base_ms", "5000"),
                ("login_backoff_max_secs", "2")
            ]),
            [
                "GRAPHAGENT_LOGIN_BACKOFF_BASE_MS: expected at most the longest wait (2000 ms), \
              got 5000 ms"
            ]
        );
        let p = problems(&[("login_backoff_max_secs", "86401")]);
        assert!(p[0].starts_with("GRAPHAGENT_LOGIN_BACKOFF_MAX_SECS: expected at most 86400"));
        assert_eq!(
            problems(&[("login_per_minute", "0"), ("jwt_ttl_secs", "59")]),
            [
                "GRAPHAGENT_JWT_TTL_SECS: expected 60 to 2592000 seconds, got 59",
                "GRAPHAGENT_LOGIN_PER_MINUTE: expected at least 1, got 0",
            ]
        );
    }

    #[test]
    fn secret_and_admin_rules_are_checked_without_the_graph() {
        assert_eq!(
            problems(&[("jwt_secret", "too-short-to-sign")]),
            ["GRAPHAGENT_JWT_SECRET: expected at least 32 characters"]
        );
        assert_eq!(
            problems(&[("admin_email", "ops@example.com")]),
            [
                "GRAPHAGENT_ADMIN_PASSWORD: expected with GRAPHAGENT_ADMIN_EMAIL (set both or \
              neither), got none"
            ]
        );
        let p = problems(&[("admin_password", "never-shown-pa55")]);
        assert!(
            p[0].starts_with("GRAPHAGENT_ADMIN_EMAIL: expected"),
            "{p:?}"
        );
        let p = problems(&[
            ("admin_email", "ops"),
            ("admin_password", "never-shown-pa55"),
        ]);
        assert_eq!(
            p,
            [
                "GRAPHAGENT_ADMIN_EMAIL: expected an email address such as admin@example.com, \
              got `ops`"
            ]
        );
        // Secrets are taken as written, spaces included.
        let s = AuthSettings::from_source(&source(&[("jwt_secret", &format!(" {SECRET} "))]))
            .expect("valid");
        assert_eq!(
            s.jwt_secret.as_ref().map(ExposeSecret::expose_secret),
            Some(format!(" {SECRET} ").as_str())
        );
    }

    #[tokio::test]
    async fn auth_refuses_unusable_settings_built_in_code() {
        let graph = Graph::memory().await.expect("graph");
        let settings = AuthSettings {
            jwt_secret: Some("short".into()),
            ..AuthSettings::default()
        };
        let err = Auth::new(graph, &settings).await.expect_err("refused");
        assert_eq!(
            err.to_string(),
            "GRAPHAGENT_JWT_SECRET: expected at least 32 characters"
        );
    }
}
