//! The host against a real SurrealDB server over `ws://`: start, reload, restart keeping
//! ids, interactive transactions conflicting, wrong credentials. The server is SurrealDB's `surreal` built from
//! `tools/surreal-server`, run by `graphagent::testing::SurrealServer` (in-memory storage);
//! `.ci/run` builds it. Each test starts its own server on a free loopback port and kills
//! it when done.

use graphagent::testing::{SURREAL_PASSWORD, SURREAL_USER, SurrealServer};

use crate::lifecycle;
use crate::util::{ConfigDir, builder, settings_with_graph};

#[tokio::test]
async fn start_and_reload_on_a_remote_server() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    lifecycle::start_and_reload(|_| server.url().to_owned(), &server.options("reload")).await;
}

#[tokio::test]
async fn restart_on_a_remote_server_keeps_ids() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    lifecycle::restart_keeps_ids(|_| server.url().to_owned(), &server.options("restart")).await;
}

#[tokio::test]
async fn interactive_transactions_conflict_on_a_remote_server() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    let g = graphagent::Graph::connect(server.url(), &server.options("txn"))
        .await
        .expect("graph");
    crate::txn::second_writer_of_a_record_conflicts(&g).await;
}

#[tokio::test]
async fn wrong_credentials_stop_start_up_without_showing_the_password() {
    let Some(server) = SurrealServer::start().await else {
        return;
    };
    let wrong = "not-the-root-password-9c2d";
    let mut options = server.options("main");
    options.password = Some(wrong.into());
    let dir = ConfigDir::new("agent: x\nactions:\n  - action: echo\n");
    let err = builder()
        .settings(settings_with_graph(
            Some(dir.path()),
            server.url(),
            &options,
        ))
        .build()
        .await
        .err()
        .expect("wrong password is refused");
    // What `graphagent serve` prints: `graphagent: {err}`. It names the server, the user
    // and the server's reason, and points at the settings; never a password.
    let text = err.to_string();
    let expected = format!(
        "cannot sign in to the graph server {} as root user `{SURREAL_USER}`: ",
        server.url()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("authentication"), "{text}");
    assert!(text.contains("GRAPHAGENT_GRAPH_PASSWORD"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(SURREAL_PASSWORD), "{text}");
}
