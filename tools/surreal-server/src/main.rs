//! `surreal`, SurrealDB's own command-line server (`surreal start …`, `surreal isready …`),
//! built from the `surrealdb-server` crate with in-memory and SurrealKV storage.
//!
//! graphagent's tests run it as `surreal start --bind 127.0.0.1:PORT memory` (or
//! `surrealkv://DIR`); production as in docs/operations.md.

// As in `surrealdb-server` itself: without it a release build of this crate stops with
// "queries overflow the depth limit" (computing the layout of SurrealDB's async fns).
#![recursion_limit = "256"]

use std::process::ExitCode;

fn main() -> ExitCode {
    // The server looks for a newer release online at start unless told not to; this tool
    // runs where only package registries are reachable, so the check is off by default.
    if std::env::var_os("SURREAL_ONLINE_VERSION_CHECK").is_none() {
        // SAFETY: nothing else runs yet (the runtime is created inside `init`), so no
        // other thread can read the environment while it changes.
        unsafe { std::env::set_var("SURREAL_ONLINE_VERSION_CHECK", "false") };
    }
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
