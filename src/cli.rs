//! The `graphagent` command line: `serve` and `check`, shared by every binary that
//! composes the host (the bundled app, or a user's own). Also sets up logging.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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

/// `graphagent serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Agent file, or a directory of `*.yaml` agent files.
    #[arg(long, env = "GRAPHAGENT_CONFIG", default_value = "agent.yaml")]
    pub config: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "GRAPHAGENT_BIND", default_value = crate::DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// Graph URL: surrealkv://PATH (embedded, on disk), mem:// (in memory),
    /// ws://HOST:PORT or wss://HOST:PORT (a SurrealDB server; credentials from
    /// GRAPHAGENT_GRAPH_USER / _PASSWORD / _NS / _DB).
    #[arg(long, env = "GRAPHAGENT_GRAPH_URL", default_value = crate::DEFAULT_GRAPH_URL)]
    pub graph: String,
    /// Public base URL of this server, used for provider callbacks (webhooks).
    #[arg(long, env = "GRAPHAGENT_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
}

/// `graphagent check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Agent file, or a directory of `*.yaml` agent files.
    #[arg(long, env = "GRAPHAGENT_CONFIG", default_value = "agent.yaml")]
    pub config: PathBuf,
}

impl HostCommand {
    /// Run the command with the action types registered on `builder`.
    pub async fn run(self, builder: HostBuilder) -> ExitCode {
        match self {
            Self::Check(args) => match builder.check(&args.config) {
                Ok(files) => {
                    let actions: usize = files.iter().map(|f| f.actions.len()).sum();
                    println!(
                        "{}: ok ({} agent(s), {actions} action(s))",
                        args.config.display(),
                        files.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            },
            Self::Serve(args) => {
                let mut settings = Settings::from_env();
                settings.config_path = Some(args.config);
                settings.bind = args.bind;
                settings.graph_url = args.graph;
                settings.public_base_url = args.public_base_url;
                let host = match builder.settings(settings).build().await {
                    Ok(host) => host,
                    Err(e) => {
                        tracing::error!("{e}");
                        eprintln!("graphagent: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match host.run().await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("graphagent: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

/// Parse the process arguments as [`Cli`], set up logging, and run.
pub async fn run(builder: HostBuilder) -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    cli.command.run(builder).await
}

/// Logs to stderr: human-readable by default, JSON lines with
/// `GRAPHAGENT_LOG_FORMAT=json`; level from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("GRAPHAGENT_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
