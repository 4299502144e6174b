#![doc = include_str!("../README.md")]

pub mod client;
pub mod model;
pub mod signing;

pub use client::{ApiError, ApiErrorKind, ApiKey, Client, ClientConfig, Error, IdempotencyKey};
pub use signing::SigningSecret;
