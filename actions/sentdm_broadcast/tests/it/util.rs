//! Shared helpers: an in-process simulator and a webhook receiver.

use axum::http::StatusCode;
use axum::routing::post;
use sentdm_sim::{SimBuilder, SimHandle, Simulator};

pub const KEY: &str = "test-key";

/// Deterministic simulator: seeded, manual clock, zero step delay, immediate retries.
pub fn sim_builder() -> SimBuilder {
    Simulator::builder().api_key(KEY).deterministic()
}

pub async fn start_sim() -> SimHandle {
    sim_builder().start().await.expect("start simulator")
}

/// A webhook endpoint on loopback that answers 200 to every POST to `/hook`.
pub struct Receiver {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let app = axum::Router::new().route("/hook", post(|| async { StatusCode::OK }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            task,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
