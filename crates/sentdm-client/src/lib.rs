#![doc = include_str!("../README.md")]

pub mod client;
pub mod model;
pub mod signing;

pub use client::{ApiKey, Client, ClientConfig, Error, ErrorKind, ErrorResponse, IdempotencyKey};
pub use signing::SigningSecret;
