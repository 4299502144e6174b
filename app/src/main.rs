//! The `graphagent` server: the host composed with its bundled actions, plus `sentdm`
//! (the SentDM action over HTTP) and `demo` (SentDM against a local simulator).

mod demo;
mod sentdm_cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The bundled app's command line: the host's commands and the SentDM tools.
#[derive(Debug, Parser)]
#[command(
    name = "graphagent",
    version,
    about = "Host for agent actions whose state lives in a graph"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Host(graphagent::cli::HostCommand),
    /// Talk to the SentDM action of a running server (HTTP only).
    Sentdm(sentdm_cli::SentdmArgs),
    /// Try SentDM with no account: simulator + server in this process, one broadcast,
    /// status timelines as the webhooks arrive.
    Demo(demo::DemoArgs),
}

/// The host with every bundled action type. A user's own binary needs only this and
/// `graphagent::cli::run(builder)`. (The echo action is an example to copy, not a
/// product: it is not bundled.)
fn host() -> graphagent::HostBuilder {
    graphagent::HostBuilder::new().action::<graphagent_sentdm::SentDmBroadcast>()
}

/// Logs to stderr; `default` when `RUST_LOG` is unset (the host's own setup otherwise).
fn quiet_tracing(default: &str) {
    if std::env::var_os("RUST_LOG").is_some() {
        graphagent::cli::init_tracing();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(default))
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Host(cmd) => {
            graphagent::cli::init_tracing();
            cmd.run(host()).await
        }
        Command::Sentdm(args) => sentdm_cli::run(args).await,
        Command::Demo(args) => {
            // The embedded engine reports its background tasks as cancelled when the
            // process exits; with an in-memory graph there is nothing to lose.
            quiet_tracing("warn,surrealdb_core::kvs::tasks=off");
            demo::run(args).await
        }
    }
}
