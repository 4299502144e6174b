//! `graphagent sentdm`: the SentDM action of a running server, over its HTTP API only
//! (subcommands, or a numbered menu when run in a terminal without one).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use graphagent_sentdm::config::CHANNELS;
use graphagent_sentdm::record::{MessageRecord, Reply};
use graphagent_sentdm::routes::{RecordPage, ReplyPage, WebhookInfo};
use graphagent_sentdm::{BroadcastRequest, BroadcastResult};
use graphagent_sentdm::{ReconcileReport, SentDmHealth, TemplateInput};
use reqwest::{Method, Url};
use sentdm_client::model::{Message, MessageActivities, MessageStatus, Pagination, Template};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::session::{self, TokenCache, server_key};

/// Type name of the action this command talks to.
const TYPE_NAME: &str = "sentdm_broadcast";

const CREDENTIALS_HELP: &str = "\
Credentials, first found wins:
  GRAPHAGENT_API_KEY          an admin API key (sent as x-api-key);
  `graphagent login`          a token cached per server URL until it expires;
  GRAPHAGENT_ADMIN_EMAIL and  an admin login, cached like `graphagent login`'s
  GRAPHAGENT_ADMIN_PASSWORD   (logins are rate-limited: scripts should use a key)

Run without a subcommand in a terminal for an interactive menu.";

/// `graphagent sentdm`.
#[derive(Debug, Args)]
#[command(after_help = CREDENTIALS_HELP)]
pub struct SentdmArgs {
    /// Base URL of the graphagent server.
    #[arg(
        long,
        env = "GRAPHAGENT_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub url: String,
    /// SentDM action id (`act_…`); by default the server's only `sentdm_broadcast` action.
    #[arg(long, global = true)]
    pub action: Option<String>,
    /// Print the server's JSON instead of a summary (errors too: a JSON object on
    /// stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do (an interactive menu when absent and stdin is a terminal).
    #[command(subcommand)]
    pub command: Option<SentdmCommand>,
}

/// The subcommands of `graphagent sentdm`.
#[derive(Debug, Clone, Subcommand)]
pub enum SentdmCommand {
    /// Health: configured, SentDM reachable, account channels, webhook registered.
    Status,
    /// Send a template broadcast (one message per recipient and channel).
    Send(SendArgs),
    /// A broadcast and its delivery funnel (records counted by current status).
    Broadcast {
        /// Broadcast id (`bc_…`, printed by `send`).
        broadcast_id: String,
    },
    /// Templates at SentDM.
    Templates(TemplateArgs),
    /// A message's status at SentDM.
    Message {
        /// SentDM message id.
        message_id: String,
    },
    /// A message's activities at SentDM (newest first).
    Activities {
        /// SentDM message id.
        message_id: String,
    },
    /// The action's SentDM webhook.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Records of sent messages, with their delivery status and event log.
    #[command(subcommand)]
    Records(RecordsCommand),
    /// Inbound replies, each with the record it answers when known.
    #[command(subcommand)]
    Replies(RepliesCommand),
}

/// `graphagent sentdm replies …`.
#[derive(Debug, Clone, Subcommand)]
pub enum RepliesCommand {
    /// List replies, newest first.
    List(ReplyListArgs),
    /// One reply.
    Show {
        /// Reply id (from `replies list`).
        reply_id: String,
    },
}

/// `graphagent sentdm replies list`.
#[derive(Debug, Clone, Default, Args)]
pub struct ReplyListArgs {
    /// The contact who wrote, E.164.
    #[arg(long)]
    pub from: Option<String>,
    /// Replies linked to this record id.
    #[arg(long)]
    pub record_id: Option<String>,
    /// Page, from 1.
    #[arg(long)]
    pub page: Option<u32>,
    /// Items per page (1–100).
    #[arg(long)]
    pub page_size: Option<u32>,
}

/// `graphagent sentdm webhook …`.
#[derive(Debug, Clone, Subcommand)]
pub enum WebhookCommand {
    /// The webhook as the action sees it (URL, id, secret on record, last reconcile).
    Show,
    /// Reconcile the webhook at SentDM now (register, repair or keep).
    Register,
}

/// `graphagent sentdm records …`.
#[derive(Debug, Clone, Subcommand)]
pub enum RecordsCommand {
    /// List records, newest first.
    List(RecordListArgs),
    /// One record with its event log.
    Show {
        /// Record id (from `records list` or `send`).
        record_id: String,
    },
    /// Re-read the message from SentDM and fold its status in.
    Refresh {
        /// Record id.
        record_id: String,
    },
}

/// `graphagent sentdm send`.
#[derive(Debug, Clone, Default, Args)]
pub struct SendArgs {
    /// Recipient, E.164 (`+14155551234`); repeat for more.
    #[arg(long = "to", value_name = "NUMBER", required = true)]
    pub to: Vec<String>,
    /// SentDM template id (the action's default template when neither id nor name).
    #[arg(long)]
    pub template_id: Option<String>,
    /// Template name, when no id is given.
    #[arg(long)]
    pub template_name: Option<String>,
    /// Template variable, `key=value`; repeat for more.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Channel: sms, whatsapp, rcs, mms or sent (SentDM picks); repeat for more.
    #[arg(long = "channel", value_name = "CHANNEL")]
    pub channels: Vec<String>,
    /// Validate at SentDM without sending.
    #[arg(long)]
    pub sandbox: bool,
    /// Makes the send safe to repeat (`[A-Za-z0-9_-]`, up to 200).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// After the send, print each message's statuses as they arrive, until all are
    /// final or `--follow-timeout` is up (not with `--json`).
    #[arg(long)]
    pub follow: bool,
    /// Seconds `--follow` waits at most.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_FOLLOW_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub follow_timeout: u64,
}

/// How long `--follow` waits for final statuses by default.
pub const DEFAULT_FOLLOW_SECS: u64 = 60;

/// `graphagent sentdm templates`.
#[derive(Debug, Clone, Default, Args)]
pub struct TemplateArgs {
    /// Name contains.
    #[arg(long)]
    pub search: Option<String>,
    /// Page, from 1.
    #[arg(long)]
    pub page: Option<u32>,
    /// Items per page (1–100).
    #[arg(long)]
    pub page_size: Option<u32>,
}

/// `graphagent sentdm records list`.
#[derive(Debug, Clone, Default, Args)]
pub struct RecordListArgs {
    /// Current status, e.g. `delivered`.
    #[arg(long)]
    pub status: Option<String>,
    /// Recipient, E.164.
    #[arg(long)]
    pub to: Option<String>,
    /// SentDM message id.
    #[arg(long)]
    pub message_id: Option<String>,
    /// Broadcast id (`bc_…`).
    #[arg(long)]
    pub broadcast_id: Option<String>,
    /// Page, from 1.
    #[arg(long)]
    pub page: Option<u32>,
    /// Items per page (1–100).
    #[arg(long)]
    pub page_size: Option<u32>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Wrong use of the command (exit 2).
    Usage(String),
    /// No usable credentials.
    Credentials(String),
    /// The server answered with an error.
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// Anything else: the server is unreachable, its answer unreadable, or it has no
    /// SentDM action.
    Failed(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) | Self::Credentials(m) | Self::Failed(m) => f.write_str(m),
            Self::Api {
                status,
                code,
                message,
                field,
            } => {
                write!(f, "server answered {status} {code}: {message}")?;
                match field {
                    Some(field) if !message.contains(field.as_str()) => {
                        write!(f, " (field `{field}`)")
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }

    /// The error as `--json` prints it: the server's error body shape, with the HTTP
    /// status when the server answered, or the client's own code (`usage`,
    /// `credentials`, `failed`).
    pub fn to_json(&self) -> Value {
        let (code, message, field, status) = match self {
            Self::Usage(m) => ("usage", m.as_str(), None, None),
            Self::Credentials(m) => ("credentials", m.as_str(), None, None),
            Self::Failed(m) => ("failed", m.as_str(), None, None),
            Self::Api {
                status,
                code,
                message,
                field,
            } => (
                code.as_str(),
                message.as_str(),
                field.as_deref(),
                Some(*status),
            ),
        };
        let mut error = serde_json::json!({"code": code, "message": message});
        if let Some(f) = field {
            error["field"] = f.into();
        }
        if let Some(s) = status {
            error["status"] = s.into();
        }
        serde_json::json!({ "error": error })
    }
}

/// Print `e` on stderr (as JSON with `--json`) and give the exit code it calls for.
pub fn report(program: &str, e: &CliError, json: bool) -> ExitCode {
    if json {
        eprintln!("{}", e.to_json());
    } else {
        eprintln!("{program}: {e}");
    }
    e.exit_code()
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    field: Option<String>,
}

#[derive(Deserialize)]
struct AgentSummary {
    id: String,
}

#[derive(Deserialize)]
struct ActionSummary {
    id: String,
    name: String,
    type_name: String,
    agent_name: String,
}

/// `data` of a template list, as the action relays it.
#[derive(Deserialize)]
struct TemplatePage {
    #[serde(default)]
    items: Vec<Template>,
    #[serde(default)]
    pagination: Pagination,
}

#[derive(Clone)]
enum Credential {
    ApiKey(String),
    /// A token from a login; `cached` when it came from the token cache rather than
    /// from a login in this run.
    Bearer {
        token: String,
        cached: bool,
    },
}

/// An authenticated HTTP client for one server.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    /// `None` for [`Api::anonymous`]; replaced when a refused cached token is renewed.
    credential: std::sync::Mutex<Option<Credential>>,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Api {
    /// A client for `url` with no credential yet (logging in).
    pub fn anonymous(url: &str) -> Result<Self, CliError> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| CliError::Usage(format!("--url `{url}` is not an http(s) URL")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Failed(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            credential: std::sync::Mutex::new(None),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// A client with credentials, first found wins: `GRAPHAGENT_API_KEY`; the token
    /// cached for this server by a login (until it expires); a login with
    /// `GRAPHAGENT_ADMIN_EMAIL` and `_PASSWORD`, whose token is then cached.
    pub async fn connect(url: &str) -> Result<Self, CliError> {
        let api = Self::anonymous(url)?;
        let credential = if let Some(key) = env_var("GRAPHAGENT_API_KEY") {
            Credential::ApiKey(key)
        } else {
            let cached = TokenCache::locate().and_then(|c| c.get(&server_key(&api.base)));
            let env_email = env_var("GRAPHAGENT_ADMIN_EMAIL");
            match cached {
                // Credentials for someone else mean "log in as them", not "use the cache".
                Some(t)
                    if t.is_fresh()
                        && env_email
                            .as_deref()
                            .is_none_or(|e| e.trim().eq_ignore_ascii_case(&t.email)) =>
                {
                    Credential::Bearer {
                        token: t.access_token,
                        cached: true,
                    }
                }
                cached => {
                    let token = api.login_from_env().await?.ok_or_else(|| {
                        CliError::Credentials(match cached {
                            Some(t) => format!(
                                "the login to {} as {} has expired: run `graphagent login` again, \
                                 or set GRAPHAGENT_API_KEY",
                                server_key(&api.base),
                                t.email
                            ),
                            None => format!(
                                "no credentials for {}: run `graphagent login`, or set \
                                 GRAPHAGENT_API_KEY, or GRAPHAGENT_ADMIN_EMAIL and \
                                 GRAPHAGENT_ADMIN_PASSWORD",
                                server_key(&api.base)
                            ),
                        })
                    })?;
                    Credential::Bearer {
                        token,
                        cached: false,
                    }
                }
            }
        };
        api.set_credential(Some(credential));
        Ok(api)
    }

    /// Log in with the environment's email and password (`None` when they are not
    /// both set); the token is cached.
    async fn login_from_env(&self) -> Result<Option<String>, CliError> {
        let (Some(email), Some(password)) = (
            env_var("GRAPHAGENT_ADMIN_EMAIL"),
            env_var("GRAPHAGENT_ADMIN_PASSWORD"),
        ) else {
            return Ok(None);
        };
        session::login(self, email.trim(), &password)
            .await
            .map(|t| Some(t.access_token))
            .map_err(|e| match e {
                CliError::Credentials(m) if m.starts_with("login failed") => CliError::Credentials(
                    "login failed: wrong GRAPHAGENT_ADMIN_EMAIL or GRAPHAGENT_ADMIN_PASSWORD"
                        .into(),
                ),
                other => other,
            })
    }

    fn credential(&self) -> Option<Credential> {
        self.credential.lock().ok().and_then(|c| c.clone())
    }

    fn set_credential(&self, credential: Option<Credential>) {
        if let Ok(mut c) = self.credential.lock() {
            *c = credential;
        }
    }

    fn url(&self, segments: &[&str]) -> Result<Url, CliError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| CliError::Usage(format!("--url `{}` cannot have paths", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// A call without credentials (logging in).
    pub async fn call_anonymous(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        self.call_with(None, method, segments, &[], body).await
    }

    /// A call with the credential; `segments` are percent-encoded one by one. Error
    /// answers become [`CliError::Api`]. A cached token the server refuses (it was
    /// restarted with another secret, the user changed) is dropped from the cache and,
    /// when the environment has an email and password, renewed once by a login.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let credential = self.credential();
        let result = self
            .call_with(credential.as_ref(), method.clone(), segments, query, body)
            .await;
        let Err(CliError::Api { status: 401, .. }) = &result else {
            return result;
        };
        let Some(Credential::Bearer { cached: true, .. }) = credential else {
            return result;
        };
        let server = server_key(&self.base);
        if let Some(cache) = TokenCache::locate() {
            let _ = cache.remove(&server);
        }
        let Some(token) = self.login_from_env().await? else {
            return Err(CliError::Credentials(format!(
                "{server} refused the cached login: run `graphagent login` again"
            )));
        };
        let renewed = Credential::Bearer {
            token,
            cached: false,
        };
        self.set_credential(Some(renewed.clone()));
        self.call_with(Some(&renewed), method, segments, query, body)
            .await
    }

    async fn call_with(
        &self,
        credential: Option<&Credential>,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = self.url(segments)?;
        let mut req = self.http.request(method, url.clone());
        if !query.is_empty() {
            req = req.query(query);
        }
        req = match credential {
            Some(Credential::ApiKey(k)) => req.header("x-api-key", k),
            Some(Credential::Bearer { token, .. }) => req.bearer_auth(token),
            None => req,
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| {
            CliError::Failed(format!("cannot reach graphagent at {}: {e}", self.base))
        })?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| CliError::Failed(format!("reading the answer of {url}: {e}")))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                CliError::Failed(format!("{url} answered {status} with non-JSON: {e}"))
            });
        }
        Err(match serde_json::from_str::<ErrorEnvelope>(&text) {
            Ok(env) => CliError::Api {
                status: status.as_u16(),
                code: env.error.code,
                message: env.error.message,
                field: env.error.field,
            },
            Err(_) => CliError::Api {
                status: status.as_u16(),
                code: status.canonical_reason().unwrap_or("error").to_owned(),
                message: text.chars().take(300).collect(),
                field: None,
            },
        })
    }

    /// Every loaded `sentdm_broadcast` action, by agent.
    async fn sentdm_actions(&self) -> Result<Vec<ActionSummary>, CliError> {
        Ok(self.sentdm_actions_and_agents().await?.0)
    }

    async fn sentdm_actions_and_agents(&self) -> Result<(Vec<ActionSummary>, usize), CliError> {
        let agents: Vec<AgentSummary> = decode(
            self.call(Method::GET, &["api", "agents"], &[], None)
                .await?,
        )?;
        let mut found = Vec::new();
        for agent in &agents {
            let actions: Vec<ActionSummary> = decode(
                self.call(
                    Method::GET,
                    &["api", "agents", &agent.id, "actions"],
                    &[],
                    None,
                )
                .await?,
            )?;
            found.extend(actions.into_iter().filter(|a| a.type_name == TYPE_NAME));
        }
        Ok((found, agents.len()))
    }

    /// The `sentdm_broadcast` action to use: `explicit`, or the only one loaded.
    pub async fn discover_action(&self, explicit: Option<&str>) -> Result<String, CliError> {
        if let Some(id) = explicit {
            return Ok(id.to_owned());
        }
        let (mut found, agents) = self.sentdm_actions_and_agents().await?;
        match found.len() {
            1 => Ok(found.remove(0).id),
            0 => Err(CliError::Failed(format!(
                "no `{TYPE_NAME}` action is loaded at {} ({agents} agent(s))",
                self.base,
            ))),
            _ => {
                let list: Vec<String> = found
                    .iter()
                    .map(|a| format!("  {}  {} / {}", a.id, a.agent_name, a.name))
                    .collect();
                Err(CliError::Usage(format!(
                    "several `{TYPE_NAME}` actions are loaded; pick one with --action:\n{}",
                    list.join("\n")
                )))
            }
        }
    }
}

pub fn decode<T: DeserializeOwned>(v: Value) -> Result<T, CliError> {
    serde_json::from_value(v)
        .map_err(|e| CliError::Failed(format!("unexpected answer from the server: {e}")))
}

/// Run `graphagent sentdm`.
pub async fn run(args: SentdmArgs) -> ExitCode {
    let interactive = args.command.is_none();
    if interactive && !std::io::stdin().is_terminal() {
        let mut cmd = <SentdmArgs as Args>::augment_args(
            clap::Command::new("sentdm")
                .bin_name("graphagent sentdm")
                .about("Talk to the SentDM action of a running graphagent server"),
        );
        let _ = cmd.print_help();
        eprintln!("\ngraphagent sentdm: give a subcommand (stdin is not a terminal)");
        return ExitCode::from(2);
    }
    let result = async {
        let api = Api::connect(&args.url).await?;
        let action = api.discover_action(args.action.as_deref()).await?;
        match args.command {
            Some(cmd) => execute(&api, &action, cmd, args.json, &mut Memory::default()).await,
            None => menu(&api, &action, args.json).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("graphagent sentdm", &e, args.json),
    }
}

pub fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{v}"),
    }
}

/// Run one subcommand against `action`; the ids it sends or reads go to `memory`.
pub async fn execute(
    api: &Api,
    action: &str,
    cmd: SentdmCommand,
    json: bool,
    memory: &mut Memory,
) -> Result<(), CliError> {
    let path = |rest: &[&'static str]| {
        let mut p: Vec<String> = vec!["api".into(), "actions".into(), action.to_owned()];
        p.push("sentdm".into());
        p.extend(rest.iter().map(|s| (*s).to_owned()));
        p
    };
    let get = |segs: Vec<String>, query: Vec<(&'static str, String)>| async move {
        let refs: Vec<&str> = segs.iter().map(String::as_str).collect();
        api.call(Method::GET, &refs, &query, None).await
    };
    let post = |segs: Vec<String>, body: Option<Value>| async move {
        let refs: Vec<&str> = segs.iter().map(String::as_str).collect();
        api.call(Method::POST, &refs, &[], body.as_ref()).await
    };
    match cmd {
        SentdmCommand::Status => {
            let v = get(path(&["status"]), vec![]).await?;
            let health: SentDmHealth = decode(v.clone())?;
            if json {
                print_json(&v);
            } else {
                show_health(&health);
            }
            // Scripts and probes read the exit code: an action that cannot reach SentDM
            // cannot send.
            if !health.reachable {
                return Err(CliError::Failed(format!(
                    "SentDM is not reachable: {}",
                    health
                        .reachable_error
                        .as_deref()
                        .unwrap_or(if health.configured {
                            "no answer"
                        } else {
                            "no API key is configured"
                        })
                )));
            }
        }
        SentdmCommand::Send(s) => {
            if s.follow && json {
                return Err(CliError::Usage(
                    "--follow prints statuses for people; with --json, poll `records list \
                     --broadcast-id` instead"
                        .into(),
                ));
            }
            let (follow, timeout) = (s.follow, Duration::from_secs(s.follow_timeout));
            let req = broadcast_request(s)?;
            let body =
                serde_json::to_value(&req).map_err(|e| CliError::Usage(format!("request: {e}")))?;
            let v = post(path(&["broadcast"]), Some(body)).await?;
            let result: BroadcastResult = decode(v.clone())?;
            memory.broadcast_id = Some(result.broadcast_id.clone());
            if let Some(r) = result.messages.iter().find_map(|m| m.record_id.clone()) {
                memory.record_id = Some(r);
            }
            if json {
                print_json(&v);
            } else {
                show_broadcast(&result);
            }
            if follow && !result.messages.is_empty() {
                follow_broadcast(api, action, &result, timeout).await?;
            }
        }
        SentdmCommand::Broadcast { broadcast_id } => {
            memory.broadcast_id = Some(broadcast_id.clone());
            let mut p = path(&["broadcast"]);
            p.push(broadcast_id);
            let v = get(p, vec![]).await?;
            if json {
                print_json(&v);
            } else {
                show_broadcast_summary(&v);
            }
        }
        SentdmCommand::Templates(t) => {
            let mut q = Vec::new();
            push_opt(&mut q, "search", t.search);
            push_opt(&mut q, "page", t.page);
            push_opt(&mut q, "page_size", t.page_size);
            let v = get(path(&["templates"]), q).await?;
            if json {
                print_json(&v);
            } else {
                show_templates(&decode(v)?);
            }
        }
        SentdmCommand::Message { message_id } => {
            let mut p = path(&["messages"]);
            p.push(message_id);
            let v = get(p, vec![]).await?;
            if json {
                print_json(&v);
            } else {
                show_message(&decode(v)?);
            }
        }
        SentdmCommand::Activities { message_id } => {
            let mut p = path(&["messages"]);
            p.push(message_id);
            p.push("activities".into());
            let v = get(p, vec![]).await?;
            if json {
                print_json(&v);
            } else {
                show_activities(&decode(v)?);
            }
        }
        SentdmCommand::Webhook(WebhookCommand::Show) => {
            let v = get(path(&["webhook"]), vec![]).await?;
            if json {
                print_json(&v);
            } else {
                show_webhook(&decode(v)?);
            }
        }
        SentdmCommand::Webhook(WebhookCommand::Register) => {
            let v = post(path(&["webhook", "register"]), None).await?;
            let report: ReconcileReport = decode(v.clone())?;
            if json {
                print_json(&v);
            } else {
                show_reconcile(&report);
            }
            if report.outcome == "failed" {
                return Err(CliError::Failed(format!(
                    "webhook reconcile failed: {}",
                    report.reason.unwrap_or_default()
                )));
            }
        }
        SentdmCommand::Records(RecordsCommand::List(r)) => {
            let mut q = Vec::new();
            push_opt(&mut q, "status", r.status);
            push_opt(&mut q, "to", r.to);
            push_opt(&mut q, "sentdm_message_id", r.message_id);
            push_opt(&mut q, "broadcast_id", r.broadcast_id);
            push_opt(&mut q, "page", r.page);
            push_opt(&mut q, "page_size", r.page_size);
            let v = get(path(&["broadcasts"]), q).await?;
            let page: RecordPage = decode(v.clone())?;
            if let Some(first) = page.items.first() {
                memory.record_id = Some(first.id.clone());
            }
            if json {
                print_json(&v);
            } else {
                show_records(&page);
            }
        }
        SentdmCommand::Records(RecordsCommand::Show { record_id }) => {
            memory.record_id = Some(record_id.clone());
            let mut p = path(&["broadcasts"]);
            p.push(record_id);
            let v = get(p, vec![]).await?;
            if json {
                print_json(&v);
            } else {
                show_record(&decode(v)?);
            }
        }
        SentdmCommand::Records(RecordsCommand::Refresh { record_id }) => {
            let mut p = path(&["broadcasts"]);
            p.push(record_id);
            p.push("refresh".into());
            let v = post(p, None).await?;
            if json {
                print_json(&v);
            } else {
                show_record(&decode(v)?);
            }
        }
        SentdmCommand::Replies(RepliesCommand::List(r)) => {
            let mut q = Vec::new();
            push_opt(&mut q, "from", r.from);
            push_opt(&mut q, "record_id", r.record_id);
            push_opt(&mut q, "page", r.page);
            push_opt(&mut q, "page_size", r.page_size);
            let v = get(path(&["replies"]), q).await?;
            if json {
                print_json(&v);
            } else {
                show_replies(&decode(v)?);
            }
        }
        SentdmCommand::Replies(RepliesCommand::Show { reply_id }) => {
            let mut p = path(&["replies"]);
            p.push(reply_id);
            let v = get(p, vec![]).await?;
            if json {
                print_json(&v);
            } else {
                show_reply(&decode(v)?);
            }
        }
    }
    Ok(())
}

/// Print each record's statuses of broadcast `sent` as they arrive, until every record
/// is final or `timeout` is up (the demo's view, over HTTP).
async fn follow_broadcast(
    api: &Api,
    action: &str,
    sent: &BroadcastResult,
    timeout: Duration,
) -> Result<(), CliError> {
    let started = Instant::now();
    let expected = sent.messages.len();
    let mut shown: HashMap<String, usize> = HashMap::new();
    println!("\nstatuses as they arrive (up to {}s):", timeout.as_secs());
    loop {
        let mut records: Vec<MessageRecord> = Vec::new();
        for page in 1u32.. {
            let query = [
                ("broadcast_id", sent.broadcast_id.clone()),
                ("page", page.to_string()),
                ("page_size", "100".to_owned()),
            ];
            let segments = ["api", "actions", action, "sentdm", "broadcasts"];
            let p: RecordPage = decode(api.call(Method::GET, &segments, &query, None).await?)?;
            let last = p.items.is_empty() || records.len() + p.items.len() >= p.total as usize;
            records.extend(p.items);
            if last {
                break;
            }
        }
        records.sort_by(|a, b| (&a.to, &a.channel).cmp(&(&b.to, &b.channel)));
        for r in &records {
            let steps = timeline(r);
            let seen = shown.entry(r.id.clone()).or_default();
            // `accepted` is the send itself, shown above.
            for status in steps.iter().skip(*seen).filter(|s| *s != "accepted") {
                println!(
                    "  {:>5.1}s  {:<13} {:<9} {status}",
                    started.elapsed().as_secs_f64(),
                    r.to.as_deref().unwrap_or("-"),
                    r.channel.as_deref().unwrap_or("-"),
                );
            }
            *seen = (*seen).max(steps.len());
        }
        let done = records.iter().filter(|r| is_final(r)).count();
        if records.len() >= expected && done == records.len() {
            println!(
                "all {done} message(s) final after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() >= timeout {
            println!(
                "{done} of {expected} message(s) final after {}s; `graphagent sentdm broadcast {}` \
                 shows the rest later",
                timeout.as_secs(),
                sent.broadcast_id
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// No further change is expected: the terminal statuses, and `delivered` on channels
/// without read receipts.
pub fn is_final(r: &MessageRecord) -> bool {
    match &r.status {
        Some(MessageStatus::Delivered) => !matches!(r.channel.as_deref(), Some("whatsapp" | "rcs")),
        Some(s) => s.is_terminal(),
        None => false,
    }
}

fn push_opt(q: &mut Vec<(&'static str, String)>, key: &'static str, v: Option<impl ToString>) {
    if let Some(v) = v {
        q.push((key, v.to_string()));
    }
}

fn broadcast_request(s: SendArgs) -> Result<BroadcastRequest, CliError> {
    let nonempty = |o: Option<String>| o.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let id = nonempty(s.template_id);
    let name = nonempty(s.template_name);
    let template = if id.is_none() && name.is_none() {
        if !s.params.is_empty() {
            return Err(CliError::Usage(
                "--param needs --template-id or --template-name".into(),
            ));
        }
        None
    } else {
        Some(TemplateInput {
            id,
            name,
            parameters: s.params.into_iter().collect::<BTreeMap<_, _>>(),
        })
    };
    for c in &s.channels {
        if !CHANNELS.contains(&c.as_str()) {
            return Err(CliError::Usage(format!(
                "--channel `{c}`: one of {}",
                CHANNELS.join(", ")
            )));
        }
    }
    Ok(BroadcastRequest {
        to: s.to,
        template,
        channels: (!s.channels.is_empty()).then_some(s.channels),
        sandbox: s.sandbox.then_some(true),
        idempotency_key: nonempty(s.idempotency_key),
        profile_id: None,
    })
}

/// Left-aligned columns without borders, wrapped to the terminal's width when output
/// goes to a terminal (ids and descriptions wrap instead of pushing columns off screen).
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    for row in rows {
        t.add_row(row.iter().map(String::as_str));
    }
    for line in t.lines() {
        println!("{}", line.trim_end());
    }
}

fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn show_health(h: &SentDmHealth) {
    println!("configured      {}", yes_no(h.configured));
    match &h.reachable_error {
        Some(e) if !h.reachable => println!("reachable       no ({e})"),
        _ => println!("reachable       {}", yes_no(h.reachable)),
    }
    if let Some(ch) = &h.channels {
        let list: Vec<String> = ch
            .iter()
            .map(|(k, on)| {
                if *on {
                    k.clone()
                } else {
                    format!("{k} (not configured)")
                }
            })
            .collect();
        println!("channels        {}", list.join(", "));
    }
    println!(
        "webhook         {}{}",
        if h.webhook_registered {
            "registered"
        } else {
            "not registered"
        },
        if h.signing_secret_on_record {
            ", signing secret on record"
        } else {
            ""
        }
    );
    if let Some(problem) = &h.webhook_problem {
        println!("webhook problem {problem}");
    }
    println!("webhook url     {}", or_dash(h.webhook_url.as_deref()));
    if let Some(r) = &h.last_reconcile {
        println!("last reconcile  {}", reconcile_line(r));
    }
    let c = &h.counters;
    println!(
        "deliveries      received {}, duplicate {}, ignored {}, replies {}, rejected {}, failed {}",
        c.received, c.duplicate, c.ignored, c.replies, c.rejected, c.failed
    );
}

fn reconcile_line(r: &ReconcileReport) -> String {
    let mut s = format!("{} at {}", r.outcome, r.at);
    if let Some(id) = &r.webhook_id {
        s.push_str(&format!(", webhook {id}"));
    }
    if let Some(reason) = &r.reason {
        s.push_str(&format!(" ({reason})"));
    }
    s
}

fn show_broadcast(b: &BroadcastResult) {
    println!(
        "broadcast {}: {}{}, {} message(s)",
        b.broadcast_id,
        b.status,
        if b.sandbox { " (sandbox)" } else { "" },
        b.messages.len()
    );
    if !b.messages.is_empty() {
        let rows: Vec<Vec<String>> = b
            .messages
            .iter()
            .map(|m| {
                vec![
                    m.to.clone(),
                    or_dash(m.channel.as_deref()),
                    m.message_id.clone(),
                    or_dash(m.record_id.as_deref()),
                ]
            })
            .collect();
        table(&["TO", "CHANNEL", "MESSAGE ID", "RECORD ID"], &rows);
    }
    for r in &b.requests {
        if let Some(e) = &r.error {
            println!(
                "request {} ({} recipient(s)) not accepted: {} {}: {}",
                r.index,
                r.recipients,
                e.status,
                e.code.as_deref().unwrap_or("-"),
                e.message
            );
        } else if r.replayed {
            println!(
                "request {}: replayed by SentDM (same idempotency key)",
                r.index
            );
        }
    }
    for w in &b.warnings {
        println!("warning ({}): {}", w.code, w.message);
    }
    let p = &b.persisted;
    if let Some(e) = &p.error {
        println!("records: NOT stored: {e}");
    } else if let Some(s) = &p.skipped {
        println!("records: not stored ({s})");
    } else {
        println!("records: {} stored", p.records);
    }
}

fn show_broadcast_summary(b: &Value) {
    let s = |k: &str| or_dash(b.get(k).and_then(Value::as_str));
    let list = |k: &str| {
        b.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".to_owned())
    };
    println!("broadcast   {}", s("id"));
    println!("status      {}", s("status"));
    let template = b
        .get("template_name")
        .or_else(|| b.get("template_id"))
        .and_then(Value::as_str);
    println!("template    {}", or_dash(template));
    println!("channels    {}", list("channels"));
    println!("recipients  {}", list("recipients"));
    if let Some(n) = b.get("message_count").and_then(Value::as_u64) {
        println!("messages    {n}");
    }
    println!("created     {}", s("created_at"));
    let funnel: Vec<String> = b
        .get("funnel")
        .and_then(Value::as_object)
        .map(|f| f.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    println!(
        "funnel      {}",
        if funnel.is_empty() {
            "-".to_owned()
        } else {
            funnel.join(", ")
        }
    );
}

fn show_templates(p: &TemplatePage) {
    let rows: Vec<Vec<String>> = p
        .items
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                or_dash(t.status.as_deref()),
                t.channels.join(","),
                t.variables.join(","),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATUS", "CHANNELS", "VARIABLES"], &rows);
    let pg = &p.pagination;
    println!(
        "page {} of {}, {} template(s)",
        pg.page, pg.total_pages, pg.total_count
    );
}

fn status_word(s: &Option<sentdm_client::model::MessageStatus>) -> String {
    s.as_ref()
        .map_or_else(|| "-".to_owned(), |s| s.as_str().to_ascii_lowercase())
}

fn show_message(m: &Message) {
    println!("message   {}", m.id);
    println!("to        {}", or_dash(m.phone.as_deref()));
    println!("channel   {}", or_dash(m.channel.as_deref()));
    println!(
        "template  {}",
        or_dash(m.template_name.as_deref().or(m.template_id.as_deref()))
    );
    println!("status    {}", status_word(&m.status));
    if m.reason_code.is_some() || m.reason.is_some() {
        println!(
            "reason    {}: {}",
            or_dash(m.reason_code.as_deref()),
            or_dash(m.reason.as_deref())
        );
    }
    println!("created   {}", or_dash(m.created_at.as_deref()));
    if !m.events.is_empty() {
        let rows: Vec<Vec<String>> = m
            .events
            .iter()
            .map(|e| {
                vec![
                    or_dash(e.timestamp.as_deref()),
                    status_word(&e.status),
                    or_dash(e.description.as_deref().or(e.reason.as_deref())),
                ]
            })
            .collect();
        table(&["TIME", "STATUS", "DESCRIPTION"], &rows);
    }
}

fn show_activities(a: &MessageActivities) {
    println!(
        "message {}: {} activity(ies)",
        a.message_id,
        a.activities.len()
    );
    let rows: Vec<Vec<String>> = a
        .activities
        .iter()
        .map(|x| {
            vec![
                or_dash(x.timestamp.as_deref()),
                status_word(&x.status),
                or_dash(x.price.as_deref()),
                or_dash(x.description.as_deref().or(x.reason.as_deref())),
            ]
        })
        .collect();
    table(&["TIME", "STATUS", "PRICE", "DESCRIPTION"], &rows);
}

fn show_webhook(w: &WebhookInfo) {
    match (&w.url, &w.url_error) {
        (Some(u), _) => println!("url                 {u}"),
        (None, Some(e)) => println!("url                 - ({e})"),
        (None, None) => println!("url                 -"),
    }
    println!("webhook id          {}", or_dash(w.webhook_id.as_deref()));
    println!(
        "signing secret      {}",
        if w.signing_secret_on_record {
            "on record"
        } else {
            "not on record"
        }
    );
    if let Some(r) = &w.last_reconcile {
        println!("last reconcile      {}", reconcile_line(r));
    }
}

fn show_reconcile(r: &ReconcileReport) {
    println!("{}", reconcile_line(r));
    println!("changes at SentDM: {}", r.changes);
    if !r.deleted.is_empty() {
        println!("deleted stale webhooks: {}", r.deleted.join(", "));
    }
}

fn show_records(p: &RecordPage) {
    let rows: Vec<Vec<String>> = p
        .items
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                or_dash(r.to.as_deref()),
                or_dash(r.channel.as_deref()),
                or_dash(r.status.as_ref().map(MessageStatus::lowercase)),
                or_dash(r.updated_at.as_deref()),
            ]
        })
        .collect();
    table(&["RECORD ID", "TO", "CHANNEL", "STATUS", "UPDATED"], &rows);
    println!(
        "page {} ({} per page), {} record(s) in all",
        p.page, p.page_size, p.total
    );
}

fn show_replies(p: &ReplyPage) {
    let rows: Vec<Vec<String>> = p
        .items
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                or_dash(r.from.as_deref()),
                or_dash(r.received_at.as_deref().or(Some(r.created_at.as_str()))),
                or_dash(r.answers_record.as_deref()),
                or_dash(r.text.as_deref()).chars().take(60).collect(),
            ]
        })
        .collect();
    table(
        &["REPLY ID", "FROM", "RECEIVED", "ANSWERS RECORD", "TEXT"],
        &rows,
    );
    println!(
        "page {} ({} per page), {} repl{} in all",
        p.page,
        p.page_size,
        p.total,
        if p.total == 1 { "y" } else { "ies" }
    );
}

fn show_reply(r: &Reply) {
    println!("reply       {}", r.id);
    println!("message     {}", r.sentdm_message_id);
    println!("from        {}", or_dash(r.from.as_deref()));
    println!("to          {}", or_dash(r.to.as_deref()));
    println!("channel     {}", or_dash(r.channel.as_deref()));
    println!("received    {}", or_dash(r.received_at.as_deref()));
    println!("in reply to {}", or_dash(r.in_reply_to.as_deref()));
    println!(
        "answers     {}{}",
        or_dash(r.answers_record.as_deref()),
        r.link
            .as_deref()
            .map(|l| format!(" (by {l})"))
            .unwrap_or_default()
    );
    println!("text        {}", or_dash(r.text.as_deref()));
}

/// Statuses in the order the record's log saw them, without repeats.
pub fn timeline(r: &MessageRecord) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in &r.events {
        let Some(s) = e.status.as_deref() else {
            continue;
        };
        let word = s
            .rsplit('.')
            .next()
            .unwrap_or(s)
            .trim()
            .to_ascii_lowercase();
        if !word.is_empty() && out.last() != Some(&word) {
            out.push(word);
        }
    }
    out
}

fn show_record(r: &MessageRecord) {
    println!("record     {}", r.id);
    println!("message    {}", r.sentdm_message_id);
    println!("broadcast  {}", or_dash(r.broadcast_id.as_deref()));
    println!(
        "to         {}  {}",
        or_dash(r.to.as_deref()),
        or_dash(r.channel.as_deref())
    );
    println!(
        "template   {}",
        or_dash(r.template_name.as_deref().or(r.template_id.as_deref()))
    );
    println!(
        "status     {}{}",
        or_dash(r.status.as_ref().map(MessageStatus::lowercase)),
        r.last_status_at
            .as_deref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default()
    );
    if let Some(e) = &r.error {
        println!(
            "error      {} {}",
            or_dash(e.code.as_deref()),
            or_dash(e.reason.as_deref())
        );
    }
    println!("timeline   {}", timeline(r).join(" → "));
    let rows: Vec<Vec<String>> = r
        .events
        .iter()
        .map(|e| {
            vec![
                or_dash(e.occurred_at.as_deref()),
                or_dash(Some(e.source.as_str())),
                or_dash(e.status.as_deref()),
                or_dash(e.reason_code.as_deref()),
            ]
        })
        .collect();
    table(&["OCCURRED", "SOURCE", "STATUS", "REASON"], &rows);
}

/// The menu's prompts: line editing and this session's history (rustyline), with a
/// default offered pre-filled for editing.
struct Prompt {
    editor: rustyline::DefaultEditor,
}

impl Prompt {
    fn new() -> Result<Self, CliError> {
        rustyline::DefaultEditor::new()
            .map(|editor| Self { editor })
            .map_err(|e| CliError::Failed(format!("terminal: {e}")))
    }

    /// One trimmed line, `initial` pre-filled; `None` at end of input or Ctrl-C.
    fn line(&mut self, text: &str, initial: &str) -> Option<String> {
        let line = self
            .editor
            .readline_with_initial(text, (initial, ""))
            .ok()?
            .trim()
            .to_owned();
        if !line.is_empty() {
            let _ = self.editor.add_history_entry(line.as_str());
        }
        Some(line)
    }
}

/// What the menu remembers between entries, offered as defaults.
#[derive(Debug, Default)]
pub struct Memory {
    /// The last broadcast sent or looked at.
    pub broadcast_id: Option<String>,
    /// The last record sent, listed or looked at.
    pub record_id: Option<String>,
}

fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn optional(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

const MENU: &[&str] = &[
    "status",
    "send a broadcast",
    "broadcast funnel",
    "templates",
    "message status",
    "message activities",
    "webhook show",
    "webhook register",
    "records list",
    "record show",
    "record refresh",
    "switch agent/action",
];

/// The menu entry that picks another SentDM action.
const SWITCH: usize = 12;

/// Read the arguments of menu entry `choice`; `None` at end of input.
fn menu_command(
    p: &mut Prompt,
    choice: usize,
    memory: &Memory,
) -> Option<Result<SentdmCommand, CliError>> {
    let remembered = |v: &Option<String>| v.clone().unwrap_or_default();
    Some(Ok(match choice {
        1 => SentdmCommand::Status,
        2 => {
            let to = split_list(&p.line("recipients (E.164, comma separated): ", "")?);
            let template = p.line("template name or id (empty: the action's default): ", "")?;
            let params = p.line("parameters (key=value, comma separated): ", "")?;
            let channels =
                split_list(&p.line("channels (e.g. sms,whatsapp; empty: default): ", "")?);
            // As in jvagent's tester: validating at SentDM is the safe default; a real
            // send is asked for explicitly.
            let sandbox = p.line("sandbox (validate only, send nothing)? [Y/n]: ", "")?;
            let mut parsed = Vec::new();
            for param in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match parse_param(param) {
                    Ok(kv) => parsed.push(kv),
                    Err(e) => return Some(Err(CliError::Usage(e))),
                }
            }
            let sandbox =
                !(sandbox.eq_ignore_ascii_case("n") || sandbox.eq_ignore_ascii_case("no"));
            // Template ids are UUIDs; anything else is a name.
            let is_id = template.len() == 36 && template.chars().filter(|c| *c == '-').count() == 4;
            SentdmCommand::Send(SendArgs {
                to,
                template_id: is_id.then(|| template.clone()),
                template_name: (!is_id).then_some(template).and_then(optional),
                params: parsed,
                channels,
                sandbox,
                idempotency_key: None,
                // A real send's statuses arrive by webhook: show them as they come.
                follow: !sandbox,
                follow_timeout: DEFAULT_FOLLOW_SECS,
            })
        }
        3 => SentdmCommand::Broadcast {
            broadcast_id: p.line("broadcast id (bc_…): ", &remembered(&memory.broadcast_id))?,
        },
        4 => SentdmCommand::Templates(TemplateArgs {
            search: optional(p.line("name contains (empty: all): ", "")?),
            ..TemplateArgs::default()
        }),
        5 => SentdmCommand::Message {
            message_id: p.line("SentDM message id: ", "")?,
        },
        6 => SentdmCommand::Activities {
            message_id: p.line("SentDM message id: ", "")?,
        },
        7 => SentdmCommand::Webhook(WebhookCommand::Show),
        8 => SentdmCommand::Webhook(WebhookCommand::Register),
        9 => SentdmCommand::Records(RecordsCommand::List(RecordListArgs {
            status: optional(p.line("status (empty: any): ", "")?),
            to: optional(p.line("recipient (empty: any): ", "")?),
            broadcast_id: optional(p.line(
                "broadcast id (empty: any): ",
                &remembered(&memory.broadcast_id),
            )?),
            ..RecordListArgs::default()
        })),
        10 => SentdmCommand::Records(RecordsCommand::Show {
            record_id: p.line("record id: ", &remembered(&memory.record_id))?,
        }),
        11 => SentdmCommand::Records(RecordsCommand::Refresh {
            record_id: p.line("record id: ", &remembered(&memory.record_id))?,
        }),
        _ => return Some(Err(CliError::Usage(format!("no menu entry {choice}")))),
    }))
}

/// Let the user pick one of the server's SentDM actions; `None` at end of input.
async fn switch_action(
    api: &Api,
    p: &mut Prompt,
    current: &str,
) -> Option<Result<String, CliError>> {
    let actions = match api.sentdm_actions().await {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    for (i, a) in actions.iter().enumerate() {
        let mark = if a.id == current { "*" } else { " " };
        println!(
            " {mark}{:>2}) {} / {}  {}",
            i + 1,
            a.agent_name,
            a.name,
            a.id
        );
    }
    let answer = p.line("action number: ", "")?;
    Some(
        answer
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| actions.get(i))
            .map(|a| a.id.clone())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "action number: type 1 to {}, got `{answer}`",
                    actions.len()
                ))
            }),
    )
}

/// The interactive menu: numbered entries, one line of input each, until `q` or EOF.
async fn menu(api: &Api, action: &str, json: bool) -> Result<(), CliError> {
    let mut p = Prompt::new()?;
    let mut action = action.to_owned();
    let mut memory = Memory::default();
    let show = |action: &str| {
        println!("SentDM action {action}");
        for (i, entry) in MENU.iter().enumerate() {
            println!("  {:>2}) {entry}", i + 1);
        }
        println!("   ?) this list   q) quit");
    };
    show(&action);
    loop {
        println!();
        let Some(answer) = p.line("sentdm> ", "") else {
            println!();
            return Ok(());
        };
        match answer.as_str() {
            "q" | "quit" | "exit" => return Ok(()),
            "" => continue,
            "?" | "h" | "help" => {
                show(&action);
                continue;
            }
            _ => {}
        }
        let Ok(choice) = answer.parse::<usize>() else {
            eprintln!(
                "type a number from 1 to {}, ? for the list, or q",
                MENU.len()
            );
            continue;
        };
        if choice == SWITCH {
            match switch_action(api, &mut p, &action).await {
                None => return Ok(()),
                Some(Err(e)) => eprintln!("{e}"),
                Some(Ok(id)) => {
                    if id != action {
                        memory = Memory::default();
                    }
                    action = id;
                    println!("SentDM action {action}");
                }
            }
            continue;
        }
        let cmd = match menu_command(&mut p, choice, &memory) {
            None => return Ok(()),
            Some(Err(e)) => {
                eprintln!("{e}");
                continue;
            }
            Some(Ok(cmd)) => cmd,
        };
        if let Err(e) = execute(api, &action, cmd, json, &mut memory).await {
            eprintln!("error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_as_key_value() {
        assert_eq!(
            parse_param("name=Jane Doe"),
            Ok(("name".into(), "Jane Doe".into()))
        );
        assert_eq!(parse_param("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
    }

    #[test]
    fn send_args_become_a_request() {
        let req = broadcast_request(SendArgs {
            to: vec!["+14155550100".into()],
            template_name: Some("order_confirmation".into()),
            params: vec![("name".into(), "Jane".into())],
            channels: vec!["sms".into()],
            ..SendArgs::default()
        })
        .expect("valid");
        let v = serde_json::to_value(&req).expect("json");
        assert_eq!(v["template"]["name"], "order_confirmation");
        assert_eq!(v["template"]["parameters"]["name"], "Jane");
        assert_eq!(v["channels"], serde_json::json!(["sms"]));
        assert!(v["sandbox"].is_null());

        let err = broadcast_request(SendArgs {
            to: vec!["+14155550100".into()],
            params: vec![("name".into(), "Jane".into())],
            ..SendArgs::default()
        });
        assert!(matches!(err, Err(CliError::Usage(_))));
        let err = broadcast_request(SendArgs {
            to: vec!["+14155550100".into()],
            channels: vec!["fax".into()],
            ..SendArgs::default()
        });
        assert!(matches!(err, Err(CliError::Usage(_))));
    }
}
