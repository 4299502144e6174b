//! End-to-end tests of the host: a real server on a loopback port, a real embedded
//! SurrealDB (and a real SurrealDB server in `remote`), real HTTP clients.

mod api;
mod auth;
mod layers;
mod lifecycle;
mod observability;
mod openapi;
mod remote;
mod server;
mod txn;
mod util;
mod webhooks;
