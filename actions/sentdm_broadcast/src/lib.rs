//! SentDM v3 client, webhook signing and a local SentDM simulator.
//!
//! - [`signing`]: SentDM's webhook signature scheme, shared by the simulator (signs) and
//!   the broadcast action's receiver (verifies).
//! - [`client`]: typed async client with retries, idempotency and rate limiting.
//! - [`model`]: request and response types, lenient the way SentDM's responses require.
//! - [`action`]: the `sentdm_broadcast` action: sends, webhook lifecycle, graph records.
//! - [`sim`]: an in-memory SentDM v3 that delivers real signed webhooks, for tests and demos.

pub mod action;
pub mod client;
pub mod model;
pub mod signing;
pub mod sim;

pub use action::{BroadcastRequest, BroadcastResult, SentDmBroadcast, SentDmConfig};
pub use client::{ApiError, ApiErrorKind, ApiKey, Client, ClientConfig, Error, IdempotencyKey};
pub use signing::SigningSecret;
