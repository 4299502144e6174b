//! The `graphagent` server: the host composed with its bundled actions, plus the
//! client commands (`login`, `logout`, `api-keys`, `sentdm`) and `demo` (SentDM against
//! a local simulator).

mod demo;
mod sentdm_cli;
mod session;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The bundled app's command line: the host's commands and the client tools.
#[derive(Debug, Parser)]
#[command(
    name = "graphagent",
    version,
    about = "Host for agent actions whose state lives in a graph",
    after_help = "A .env file in the current directory is read first; variables already \
                  in the environment win over it."
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server with the agents in the config.
    Serve(sim::AppServeArgs),
    /// Validate agent files without starting anything (exit 0 when valid).
    Check(graphagent::cli::CheckArgs),
    /// Log in to a server and cache the token (per server URL, until it expires).
    Login(session::LoginArgs),
    /// Forget the cached token of a server.
    Logout(session::LogoutArgs),
    /// Create, list and revoke API keys.
    ApiKeys(session::ApiKeysArgs),
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// mimalloc instead of glibc's malloc: under ingest load the graph engine's allocations
/// and copies were most of the server's CPU (docs/BENCHMARKS.md, 2026-12-01).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before any thread exists: loading sets process variables. Those already set win.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("graphagent: .env: {e}");
        return ExitCode::FAILURE;
    }
    // With `RUST_BACKTRACE=1` (common in containers) every error the graph engine makes
    // internally would also capture a backtrace: about 14 % of the server's CPU under
    // load in a profile. Panics still print theirs (they follow RUST_BACKTRACE); library
    // captures follow RUST_LIB_BACKTRACE, defaulted to off here as a .env line would
    // (an explicit setting wins).
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none()
        && let Err(e) = dotenvy::from_read(&b"RUST_LIB_BACKTRACE=0\n"[..])
    {
        eprintln!("graphagent: cannot default RUST_LIB_BACKTRACE: {e}");
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Login(_) | Command::Logout(_) | Command::ApiKeys(_) | Command::Sentdm(_)
    ) {
        // Client commands die quietly on a closed pipe (`… | head`), as Unix tools do,
        // instead of panicking in `println!`. Not the server: it must outlive its peers.
        sigpipe::reset();
    }
    // The embedded SurrealDB engine runs each query on the calling task's stack; a debug
    // build needs more than tokio's default 2 MiB for some of them.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("graphagent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve(args) => {
            graphagent::cli::init_tracing();
            sim::serve(args, host()).await
        }
        Command::Check(args) => {
            graphagent::cli::init_tracing();
            graphagent::cli::HostCommand::Check(args).run(host()).await
        }
        Command::Login(args) => session::login_command(args).await,
        Command::Logout(args) => session::logout_command(&args),
        Command::ApiKeys(args) => session::api_keys_command(args).await,
        Command::Sentdm(args) => sentdm_cli::run(args).await,
        Command::Demo(args) => {
            // The embedded engine reports its background tasks as cancelled when the
            // process exits; with an in-memory graph there is nothing to lose.
            quiet_tracing("warn,surrealdb_core::kvs::tasks=off");
            demo::run(args).await
        }
    }
}
