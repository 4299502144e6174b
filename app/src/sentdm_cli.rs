//! `graphagent sentdm`: the SentDM action of a running server, over its HTTP API only
//! (subcommands, or a numbered menu when run in a terminal without one).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

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

/// Type name of the action this command talks to.
const TYPE_NAME: &str = "sentdm_broadcast";

const CREDENTIALS_HELP: &str = "\
Credentials come from the environment:
  GRAPHAGENT_API_KEY          an admin API key (sent as x-api-key), or
  GRAPHAGENT_ADMIN_EMAIL and  an admin login (POST /api/auth/login, once per run;
  GRAPHAGENT_ADMIN_PASSWORD   logins are rate-limited: scripts should use a key)

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
    /// Print the server's JSON instead of a summary.
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
}

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

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

/// `data` of a template list, as the action relays it.
#[derive(Deserialize)]
struct TemplatePage {
    #[serde(default)]
    items: Vec<Template>,
    #[serde(default)]
    pagination: Pagination,
}

enum Credential {
    ApiKey(String),
    Bearer(String),
}

/// An authenticated HTTP client for one server.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    /// `None` only while logging in.
    credential: Option<Credential>,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Api {
    /// Credentials from the environment; logs in when they are an email and password.
    pub async fn connect(url: &str) -> Result<Self, CliError> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| CliError::Usage(format!("--url `{url}` is not an http(s) URL")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Failed(format!("HTTP client: {e}")))?;
        let mut api = Self {
            http,
            base,
            credential: None,
        };
        if let Some(key) = env_var("GRAPHAGENT_API_KEY") {
            api.credential = Some(Credential::ApiKey(key));
            return Ok(api);
        }
        let (Some(email), Some(password)) = (
            env_var("GRAPHAGENT_ADMIN_EMAIL"),
            env_var("GRAPHAGENT_ADMIN_PASSWORD"),
        ) else {
            return Err(CliError::Credentials(
                "no credentials: set GRAPHAGENT_API_KEY, or GRAPHAGENT_ADMIN_EMAIL and GRAPHAGENT_ADMIN_PASSWORD"
                    .into(),
            ));
        };
        let body = serde_json::json!({"email": email, "password": password});
        let token: Token = api
            .call(Method::POST, &["api", "auth", "login"], &[], Some(&body))
            .await
            .and_then(decode)
            .map_err(|e| match e {
                CliError::Api { status: 401, .. } => CliError::Credentials(
                    "login failed: wrong GRAPHAGENT_ADMIN_EMAIL or GRAPHAGENT_ADMIN_PASSWORD"
                        .into(),
                ),
                CliError::Api {
                    status: 429,
                    message,
                    ..
                } => CliError::Credentials(format!(
                    "login refused: {message} (logins are rate-limited per address; \
                     scripts should set GRAPHAGENT_API_KEY)"
                )),
                other => other,
            })?;
        api.credential = Some(Credential::Bearer(token.access_token));
        Ok(api)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, CliError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| CliError::Usage(format!("--url `{}` cannot have paths", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// A call with the credential (when there is one); `segments` are percent-encoded
    /// one by one. Error answers become [`CliError::Api`].
    pub async fn call(
        &self,
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
        req = match &self.credential {
            Some(Credential::ApiKey(k)) => req.header("x-api-key", k),
            Some(Credential::Bearer(t)) => req.bearer_auth(t),
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

    /// The `sentdm_broadcast` action to use: `explicit`, or the only one loaded.
    pub async fn discover_action(&self, explicit: Option<&str>) -> Result<String, CliError> {
        if let Some(id) = explicit {
            return Ok(id.to_owned());
        }
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
        match found.len() {
            1 => Ok(found.remove(0).id),
            0 => Err(CliError::Failed(format!(
                "no `{TYPE_NAME}` action is loaded at {} ({} agent(s))",
                self.base,
                agents.len()
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

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, CliError> {
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
            Some(cmd) => execute(&api, &action, cmd, args.json).await,
            None => menu(&api, &action, args.json).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graphagent sentdm: {e}");
            e.exit_code()
        }
    }
}

fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{v}"),
    }
}

/// Run one subcommand against `action`.
pub async fn execute(
    api: &Api,
    action: &str,
    cmd: SentdmCommand,
    json: bool,
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
            if json {
                print_json(&v);
            } else {
                show_health(&decode(v)?);
            }
        }
        SentdmCommand::Send(s) => {
            let req = broadcast_request(s)?;
            let body =
                serde_json::to_value(&req).map_err(|e| CliError::Usage(format!("request: {e}")))?;
            let v = post(path(&["broadcast"]), Some(body)).await?;
            if json {
                print_json(&v);
            } else {
                show_broadcast(&decode(v)?);
            }
        }
        SentdmCommand::Broadcast { broadcast_id } => {
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
            if json {
                print_json(&v);
            } else {
                show_records(&decode(v)?);
            }
        }
        SentdmCommand::Records(RecordsCommand::Show { record_id }) => {
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
fn table(header: &[&str], rows: &[Vec<String>]) {
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

/// Prompt and read one trimmed line; `None` at end of input.
fn prompt(text: &str) -> Option<String> {
    print!("{text}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_owned()),
    }
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
];

/// Read the arguments of menu entry `choice`; `None` at end of input.
fn menu_command(choice: usize) -> Option<Result<SentdmCommand, CliError>> {
    Some(Ok(match choice {
        1 => SentdmCommand::Status,
        2 => {
            let to = split_list(&prompt("recipients (E.164, comma separated): ")?);
            let template = prompt("template name or id (empty: the action's default): ")?;
            let params = prompt("parameters (key=value, comma separated): ")?;
            let channels = split_list(&prompt("channels (e.g. sms,whatsapp; empty: default): ")?);
            let sandbox = prompt("sandbox? [y/N]: ")?;
            let mut parsed = Vec::new();
            for p in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match parse_param(p) {
                    Ok(kv) => parsed.push(kv),
                    Err(e) => return Some(Err(CliError::Usage(e))),
                }
            }
            // Template ids are UUIDs; anything else is a name.
            let is_id = template.len() == 36 && template.chars().filter(|c| *c == '-').count() == 4;
            SentdmCommand::Send(SendArgs {
                to,
                template_id: is_id.then(|| template.clone()),
                template_name: (!is_id).then_some(template).and_then(optional),
                params: parsed,
                channels,
                sandbox: sandbox.eq_ignore_ascii_case("y") || sandbox.eq_ignore_ascii_case("yes"),
                idempotency_key: None,
            })
        }
        3 => SentdmCommand::Broadcast {
            broadcast_id: prompt("broadcast id (bc_…): ")?,
        },
        4 => SentdmCommand::Templates(TemplateArgs {
            search: optional(prompt("name contains (empty: all): ")?),
            ..TemplateArgs::default()
        }),
        5 => SentdmCommand::Message {
            message_id: prompt("SentDM message id: ")?,
        },
        6 => SentdmCommand::Activities {
            message_id: prompt("SentDM message id: ")?,
        },
        7 => SentdmCommand::Webhook(WebhookCommand::Show),
        8 => SentdmCommand::Webhook(WebhookCommand::Register),
        9 => SentdmCommand::Records(RecordsCommand::List(RecordListArgs {
            status: optional(prompt("status (empty: any): ")?),
            to: optional(prompt("recipient (empty: any): ")?),
            ..RecordListArgs::default()
        })),
        10 => SentdmCommand::Records(RecordsCommand::Show {
            record_id: prompt("record id: ")?,
        }),
        11 => SentdmCommand::Records(RecordsCommand::Refresh {
            record_id: prompt("record id: ")?,
        }),
        _ => return Some(Err(CliError::Usage(format!("no menu entry {choice}")))),
    }))
}

/// The interactive menu: numbered entries, one line of input each, until `q` or EOF.
async fn menu(api: &Api, action: &str, json: bool) -> Result<(), CliError> {
    let show = || {
        println!("SentDM action {action}");
        for (i, entry) in MENU.iter().enumerate() {
            println!("  {:>2}) {entry}", i + 1);
        }
        println!("   ?) this list   q) quit");
    };
    show();
    loop {
        let Some(answer) = prompt("\nsentdm> ") else {
            println!();
            return Ok(());
        };
        match answer.as_str() {
            "q" | "quit" | "exit" => return Ok(()),
            "" => continue,
            "?" | "h" | "help" => {
                show();
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
        let cmd = match menu_command(choice) {
            None => return Ok(()),
            Some(Err(e)) => {
                eprintln!("{e}");
                continue;
            }
            Some(Ok(cmd)) => cmd,
        };
        if let Err(e) = execute(api, action, cmd, json).await {
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
