//! The `graphagent` server: the host composed with its bundled actions. This is all a
//! user's own binary needs too: register the action types, hand over to the CLI.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let host = graphagent::HostBuilder::new()
        .action::<graphagent_sentdm::SentDmBroadcast>()
        .action::<graphagent_echo::Echo>();
    graphagent::cli::run(host).await
}
