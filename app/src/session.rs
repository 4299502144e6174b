//! The command line's login: `graphagent login` / `logout`, the token cache they keep
//! (one bearer token per server URL with its expiry, in a file only its owner can read),
//! and `graphagent api-keys`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use graphagent::auth::{ApiKeyCreated, ApiKeyInfo};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sentdm_cli::{Api, CliError, decode, print_json, report, table};

/// A token this close to its expiry is not used: it could expire mid-command.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// The server and output options every client command shares.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the graphagent server.
    #[arg(
        long,
        env = "GRAPHAGENT_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub url: String,
    /// Print JSON instead of a summary (errors too: a JSON object on stderr).
    #[arg(long, global = true)]
    pub json: bool,
}

/// `graphagent login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Admin email; asked for in a terminal when absent.
    #[arg(long, env = "GRAPHAGENT_ADMIN_EMAIL")]
    pub email: Option<String>,
    /// Read the password from the first line of stdin (for scripts); otherwise
    /// GRAPHAGENT_ADMIN_PASSWORD, or asked for without echo in a terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `graphagent logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `graphagent api-keys`.
#[derive(Debug, Args)]
pub struct ApiKeysArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: ApiKeysCommand,
}

/// The subcommands of `graphagent api-keys`.
#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key; it is printed once and cannot be shown again.
    Create {
        /// What the key is for (1 to 100 characters).
        #[arg(long)]
        name: String,
        /// What it grants: `admin` (the default), or a machine scope such as
        /// `webhook:sentdm:ACTION_ID`; repeat for more.
        #[arg(long = "scope", value_name = "SCOPE", default_value = "admin")]
        scopes: Vec<String>,
    },
    /// Every key, newest first (never the keys themselves).
    List,
    /// Revoke a key by its id (`key_…`).
    Revoke {
        /// Key id, from `api-keys list`.
        key_id: String,
    },
}

/// One cached login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedToken {
    /// The bearer token.
    pub access_token: String,
    /// Unix seconds when it expires.
    pub expires_at: u64,
    /// Who logged in.
    pub email: String,
}

impl CachedToken {
    /// Usable now (not within [`EXPIRY_MARGIN`] of its expiry).
    pub fn is_fresh(&self) -> bool {
        now_secs() + EXPIRY_MARGIN.as_secs() < self.expires_at
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    #[serde(default)]
    servers: BTreeMap<String, CachedToken>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `expires_at` as RFC 3339, for people.
fn when(expires_at: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(expires_at)).to_string()
}

/// The token cache file: `$XDG_CACHE_HOME/graphagent/tokens.json`, else
/// `$HOME/.cache/graphagent/tokens.json`.
pub struct TokenCache {
    path: PathBuf,
}

/// The cache's key for a server: its URL without a trailing slash.
pub fn server_key(base: &Url) -> String {
    base.as_str().trim_end_matches('/').to_owned()
}

impl TokenCache {
    /// The cache of this user; `None` when neither variable names a directory.
    pub fn locate() -> Option<Self> {
        let var = |n: &str| {
            std::env::var_os(n)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
        Some(Self {
            path: dir.join("graphagent").join("tokens.json"),
        })
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's contents; an absent file is empty, an unreadable one is reported and
    /// treated as empty (the next login replaces it).
    fn read(&self) -> CacheFile {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                eprintln!(
                    "graphagent: ignoring the unreadable token cache {}: {e}",
                    self.path.display()
                );
                CacheFile::default()
            }),
            Err(_) => CacheFile::default(),
        }
    }

    /// The token cached for `server`, fresh or not.
    pub fn get(&self, server: &str) -> Option<CachedToken> {
        self.read().servers.remove(server)
    }

    /// Cache `token` for `server`.
    pub fn put(&self, server: &str, token: CachedToken) -> std::io::Result<()> {
        let mut file = self.read();
        file.servers.insert(server.to_owned(), token);
        self.write(&file)
    }

    /// Forget `server`'s token; whether there was one.
    pub fn remove(&self, server: &str) -> std::io::Result<bool> {
        let mut file = self.read();
        let had = file.servers.remove(server).is_some();
        if had {
            self.write(&file)?;
        }
        Ok(had)
    }

    /// Write the whole file through a new file created with mode 0600 and renamed over
    /// the old one, so the tokens are never readable by others, not even briefly, and a
    /// crash leaves the old file or the new one.
    fn write(&self, file: &CacheFile) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let tmp = dir.join(format!(".tokens.{}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let result = (|| {
            let mut out = options.open(&tmp)?;
            out.write_all(&serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?)?;
            out.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
    expires_in: u64,
}

/// Log in at `api` and cache the token (a failure to cache is reported, not fatal).
pub async fn login(api: &Api, email: &str, password: &str) -> Result<CachedToken, CliError> {
    let body = json!({"email": email, "password": password});
    let token: Token = api
        .call_anonymous(Method::POST, &["api", "auth", "login"], Some(&body))
        .await
        .and_then(decode)
        .map_err(|e| match e {
            CliError::Api { status: 401, .. } => {
                CliError::Credentials("login failed: wrong email or password".into())
            }
            CliError::Api {
                status: 429,
                message,
                ..
            } => CliError::Credentials(format!(
                "login refused: {message} (logins are rate-limited per address; \
                 `graphagent login` once, or use an API key)"
            )),
            other => other,
        })?;
    let cached = CachedToken {
        access_token: token.access_token,
        expires_at: now_secs() + token.expires_in,
        email: email.to_owned(),
    };
    if let Some(cache) = TokenCache::locate()
        && let Err(e) = cache.put(&server_key(api.base()), cached.clone())
    {
        eprintln!(
            "graphagent: could not cache the login in {}: {e}",
            cache.path().display()
        );
    }
    Ok(cached)
}

/// Read one line from a terminal prompt or stdin; `field` names it in errors.
fn read_line(prompt: &str, field: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("{field}: cannot read stdin: {e}")))?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.trim().is_empty() {
        return Err(CliError::Usage(format!("{field}: empty")));
    }
    Ok(line)
}

async fn run_login(args: LoginArgs) -> Result<(), CliError> {
    let api = Api::anonymous(&args.server.url)?;
    let interactive = std::io::stdin().is_terminal();
    let email = match args.email.filter(|e| !e.trim().is_empty()) {
        Some(e) => e,
        None if interactive && !args.password_stdin => read_line("email: ", "--email")?,
        None => {
            return Err(CliError::Usage(
                "--email (or GRAPHAGENT_ADMIN_EMAIL) is required".into(),
            ));
        }
    };
    let password = if args.password_stdin {
        read_line("", "--password-stdin")?
    } else if let Some(p) = std::env::var("GRAPHAGENT_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
    {
        p
    } else if interactive {
        rpassword::prompt_password("password: ")
            .map_err(|e| CliError::Usage(format!("password: cannot read it: {e}")))?
    } else {
        return Err(CliError::Usage(
            "no password: give --password-stdin, set GRAPHAGENT_ADMIN_PASSWORD, or run in a terminal"
                .into(),
        ));
    };
    let token = login(&api, &email, &password).await?;
    let server = server_key(api.base());
    if args.server.json {
        print_json(&json!({
            "url": server,
            "email": token.email,
            "expires_at": when(token.expires_at),
        }));
    } else {
        println!(
            "logged in to {server} as {} until {}",
            token.email,
            when(token.expires_at)
        );
    }
    Ok(())
}

fn run_logout(args: &LogoutArgs) -> Result<(), CliError> {
    let api = Api::anonymous(&args.server.url)?;
    let server = server_key(api.base());
    let removed = match TokenCache::locate() {
        Some(cache) => cache.remove(&server).map_err(|e| {
            CliError::Failed(format!(
                "could not update the token cache {}: {e}",
                cache.path().display()
            ))
        })?,
        None => false,
    };
    if args.server.json {
        print_json(&json!({"url": server, "logged_out": removed}));
    } else if removed {
        println!("logged out of {server}");
    } else {
        println!("not logged in to {server}");
    }
    Ok(())
}

async fn run_api_keys(args: ApiKeysArgs) -> Result<(), CliError> {
    let api = Api::connect(&args.server.url).await?;
    let json = args.server.json;
    match args.command {
        ApiKeysCommand::Create { name, scopes } => {
            let body = json!({"name": name, "scopes": scopes});
            let v = api
                .call(Method::POST, &["api", "auth", "api-keys"], &[], Some(&body))
                .await?;
            if json {
                print_json(&v);
            } else {
                let k: ApiKeyCreated = decode(v)?;
                println!("id      {}", k.info.id);
                println!("name    {}", k.info.name);
                println!("scopes  {}", k.info.scopes.join(", "));
                println!("key     {}", k.key);
                println!(
                    "\nStore the key now: it cannot be shown again. Use it as GRAPHAGENT_API_KEY."
                );
            }
        }
        ApiKeysCommand::List => {
            let v = api
                .call(Method::GET, &["api", "auth", "api-keys"], &[], None)
                .await?;
            if json {
                print_json(&v);
            } else {
                let keys: Vec<ApiKeyInfo> = decode(v)?;
                let rows: Vec<Vec<String>> = keys
                    .into_iter()
                    .map(|k| {
                        vec![
                            k.id,
                            k.name,
                            k.scopes.join(","),
                            k.created_at,
                            k.revoked_at.unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(&["ID", "NAME", "SCOPES", "CREATED", "REVOKED"], &rows);
            }
        }
        ApiKeysCommand::Revoke { key_id } => {
            let v = api
                .call(
                    Method::DELETE,
                    &["api", "auth", "api-keys", &key_id],
                    &[],
                    None,
                )
                .await?;
            if json {
                print_json(&v);
            } else {
                let k: ApiKeyInfo = decode(v)?;
                println!(
                    "revoked {} ({}) at {}",
                    k.id,
                    k.name,
                    k.revoked_at.unwrap_or_else(|| "-".into())
                );
            }
        }
    }
    Ok(())
}

/// Run `graphagent login`.
pub async fn login_command(args: LoginArgs) -> ExitCode {
    let json = args.server.json;
    match run_login(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("graphagent login", &e, json),
    }
}

/// Run `graphagent logout`.
pub fn logout_command(args: &LogoutArgs) -> ExitCode {
    match run_logout(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("graphagent logout", &e, args.server.json),
    }
}

/// Run `graphagent api-keys …`.
pub async fn api_keys_command(args: ApiKeysArgs) -> ExitCode {
    let json = args.server.json;
    match run_api_keys(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("graphagent api-keys", &e, json),
    }
}
