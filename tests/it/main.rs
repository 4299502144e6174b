//! End-to-end tests of the host: a real server on a loopback port, a real embedded
//! SurrealDB, real HTTP clients.

mod api;
mod auth;
mod lifecycle;
mod openapi;
mod util;
mod webhooks;
