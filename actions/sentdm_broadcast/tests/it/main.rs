//! Integration tests: the client against the simulator over real HTTP on 127.0.0.1.

mod action;
mod app;
mod binary;
mod client;
mod conformance;
mod openapi;
mod util;
mod webhooks;
