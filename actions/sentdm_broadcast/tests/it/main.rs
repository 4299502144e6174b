//! The action in a real host: server on a loopback port, embedded SurrealDB, the SentDM
//! simulator over real HTTP delivering real signed webhooks.

mod action;
mod app;
mod checks;
mod metrics;
mod openapi;
mod tracing;
mod util;
