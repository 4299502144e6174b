//! The client against the simulator over real HTTP on 127.0.0.1: every endpoint, the
//! retry and rate-limit rules, request bodies checked against SentDM's OpenAPI document,
//! and webhooks registered through the client, delivered signed and verified.

mod client;
mod conformance;
mod util;
mod webhooks;
