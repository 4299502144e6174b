//! Shared helpers: an in-process simulator (the host side comes from
//! `graphagent::testing`).

use sentdm_sim::{SimBuilder, SimHandle, Simulator};

pub const KEY: &str = "test-key";

/// Deterministic simulator: seeded, manual clock, zero step delay, immediate retries.
pub fn sim_builder() -> SimBuilder {
    Simulator::builder().api_key(KEY).deterministic()
}

pub async fn start_sim() -> SimHandle {
    sim_builder().start().await.expect("start simulator")
}
