//! The `graphagent` command line: `serve` and `check`, shared by every binary that
//! composes the host (the bundled app, or a user's own); flags sit on top of the
//! settings file and the environment. Also sets up logging.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::settings::SettingsErrors;
use crate::{HostBuilder, Settings};

/// The host's own command line.
#[derive(Debug, Parser)]
#[command(
    name = "graphagent",
    version,
    about = "Host for agent actions whose state lives in a graph"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: HostCommand,
}

/// The host's subcommands; flatten into a binary's own enum to add more.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Start the server with the agents in the config.
    Serve(ServeArgs),
    /// Validate agent files without starting anything (exit 0 when valid).
    Check(CheckArgs),
}

/// The settings file, shared by `serve` and `check`.
#[derive(Debug, Args)]
pub struct SettingsArg {
    /// Settings file (YAML). Its keys are the GRAPHAGENT_* variable names in lower case
    /// without the prefix (`bind: 127.0.0.1:8000`); the environment and flags override
    /// it. [env: GRAPHAGENT_SETTINGS]
    #[arg(long = "settings", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `graphagent serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: SettingsArg,
    /// Agent file, or a directory of `*.yaml` agent files. [env: GRAPHAGENT_CONFIG]
    /// [default: agent.yaml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<String>,
    /// Address to listen on, IP:PORT. [env: GRAPHAGENT_BIND] [default: 127.0.0.1:8000]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Graph URL: surrealkv://PATH (embedded, on disk), mem:// (in memory),
    /// ws://HOST:PORT or wss://HOST:PORT (a SurrealDB server; credentials from
    /// GRAPHAGENT_GRAPH_USER / _PASSWORD / _NS / _DB). [env: GRAPHAGENT_GRAPH_URL]
    /// [default: surrealkv://./data/graph]
    #[arg(long, value_name = "URL")]
    pub graph: Option<String>,
    /// Public base URL of this server, used for provider callbacks (webhooks).
    /// [env: GRAPHAGENT_PUBLIC_BASE_URL]
    #[arg(long, value_name = "URL")]
    pub public_base_url: Option<String>,
}

/// `graphagent check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub settings: SettingsArg,
    /// Agent file, or a directory of `*.yaml` agent files. [env: GRAPHAGENT_CONFIG]
    /// [default: agent.yaml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<String>,
}

/// The agent file the command line reads when no layer names one.
const DEFAULT_CONFIG: &str = "agent.yaml";

/// Settings from the file, the environment and `flags` (key, flag, value), in that
/// order of precedence, lowest first, with the config path (default `agent.yaml`) also
/// returned on its own: `check` reads the agent files even when a setting is invalid.
fn load_settings(
    file: &SettingsArg,
    flags: &[(&str, &'static str, Option<&String>)],
) -> (Result<Settings, SettingsErrors>, PathBuf) {
    let mut source = Settings::source(file.file.as_deref());
    for (key, flag, value) in flags {
        if let Some(value) = value {
            source.set_flag(key, flag, value);
        }
    }
    let config = source.get("config").map_or_else(
        || PathBuf::from(DEFAULT_CONFIG),
        |e| PathBuf::from(e.value.trim()),
    );
    let settings = Settings::from_source(&source).map(|mut s| {
        s.config_path = Some(config.clone());
        s
    });
    (settings, config)
}

impl HostCommand {
    /// Run the command with the action types registered on `builder`.
    pub async fn run(self, builder: HostBuilder) -> ExitCode {
        match self {
            Self::Check(args) => {
                let flags = [("config", "--config", args.config.as_ref())];
                let (settings, config) = load_settings(&args.settings, &flags);
                let mut ok = true;
                if let Err(errors) = settings {
                    eprintln!("graphagent: invalid settings:\n{errors}");
                    ok = false;
                }
                match builder.check(&config) {
                    Ok(files) => {
                        let actions: usize = files.iter().map(|f| f.actions.len()).sum();
                        println!(
                            "{}: ok ({} agent(s), {actions} action(s))",
                            config.display(),
                            files.len()
                        );
                    }
                    Err(errors) => {
                        eprintln!("{errors}");
                        ok = false;
                    }
                }
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Self::Serve(args) => serve(args, builder, |_| Ok(())).await,
        }
    }
}

/// `graphagent serve`, with `adjust` applied to the loaded settings before anything is
/// opened (the bundled app's `serve --sim` points the agents at a simulator there; an
/// `Err` stops start-up with its message). The address is bound before the graph is
/// opened and the actions start, so a port in use fails at once and no action
/// reconciles provider webhooks for a server that cannot run.
pub async fn serve(
    args: ServeArgs,
    builder: HostBuilder,
    adjust: impl FnOnce(&mut Settings) -> Result<(), String>,
) -> ExitCode {
    let flags = args.flags();
    let mut settings = match load_settings(&args.settings, &flags).0 {
        Ok(settings) => settings,
        Err(errors) => {
            eprintln!("graphagent: invalid settings:\n{errors}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = adjust(&mut settings) {
        eprintln!("graphagent: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match tokio::net::TcpListener::bind(settings.bind).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("graphagent: cannot listen on {}: {e}", settings.bind);
            return ExitCode::FAILURE;
        }
    };
    let host = match builder.settings(settings).build().await {
        Ok(host) => host,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("graphagent: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        crate::host::log_listening(addr);
    }
    match host.serve(listener, crate::host::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graphagent: {e}");
            ExitCode::FAILURE
        }
    }
}

impl ServeArgs {
    fn flags(&self) -> [(&'static str, &'static str, Option<&String>); 4] {
        [
            ("config", "--config", self.config.as_ref()),
            ("bind", "--bind", self.bind.as_ref()),
            ("graph_url", "--graph", self.graph.as_ref()),
            (
                "public_base_url",
                "--public-base-url",
                self.public_base_url.as_ref(),
            ),
        ]
    }
}

/// Parse the process arguments as [`Cli`], set up logging, and run.
pub async fn run(builder: HostBuilder) -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    cli.command.run(builder).await
}

/// The log filter when `RUST_LOG` is unset: `info`, with the embedded graph engine's
/// crates at `warn` (at `info` they wrote most of the start-up lines, about their own
/// internals).
pub const DEFAULT_LOG_FILTER: &str =
    "info,surrealdb=warn,surrealdb_core=warn,surrealdb_types=warn,surrealkv=warn,surrealmx=warn";

/// Logs to stderr: human-readable by default, JSON lines with
/// `GRAPHAGENT_LOG_FORMAT=json`; level from `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]).
/// Colour only when stderr is a terminal and `NO_COLOR` is unset. The subscriber carries
/// the slot a host fills when `GRAPHAGENT_OTLP_ENDPOINT` is set (the level filter applies
/// to exported spans too).
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = std::env::var("GRAPHAGENT_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (slot, handle) = crate::telemetry::otlp::slot();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(slot).with(filter);
    // A second init (tests, embedding) keeps the first subscriber.
    let installed = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    if installed.is_ok() {
        handle.activate();
    }
}
