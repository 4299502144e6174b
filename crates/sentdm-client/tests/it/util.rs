//! Shared helpers: an in-process simulator, a client pointed at it, and a webhook receiver.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use sentdm_client::client::{ApiKey, Client, ClientConfig, RetryEvent};
use sentdm_client::model::{SendMessageRequest, TemplateRef, WebhookRequest};
use sentdm_sim::{ORDER_CONFIRMATION_ID, SimBuilder, SimHandle, Simulator};

pub const KEY: &str = "test-key";

/// Deterministic simulator: seeded, manual clock, zero step delay, immediate retries.
pub fn sim_builder() -> SimBuilder {
    Simulator::builder().api_key(KEY).deterministic()
}

pub async fn start_sim() -> SimHandle {
    sim_builder().start().await.expect("start simulator")
}

/// Client with no sleeping between retries; retry decisions are recorded instead.
pub fn client_for(sim: &SimHandle) -> (Client, Arc<Mutex<Vec<RetryEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut cfg = ClientConfig::new(sim.base_url(), ApiKey::new(sim.api_key()));
    cfg.backoff_scale = 0.0;
    cfg.timeout = Duration::from_secs(10);
    cfg.on_retry = Some(Arc::new(move |e: &RetryEvent| {
        sink.lock().unwrap().push(e.clone());
    }));
    (Client::new(cfg).expect("client"), events)
}

pub fn order_send(to: &[&str], channels: Option<&[&str]>) -> SendMessageRequest {
    SendMessageRequest {
        to: to.iter().map(|s| (*s).to_owned()).collect(),
        channel: channels.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
        template: Some(TemplateRef {
            id: Some(ORDER_CONFIRMATION_ID.to_owned()),
            name: None,
            parameters: [("name", "Jane"), ("order_id", "12345")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }),
        text: None,
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A webhook endpoint that records every request and answers `status`.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let app = axum::Router::new()
            .route("/hook", post(record))
            .with_state((received.clone(), status.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/hook?api_key=abc"),
            received,
            status,
            task,
        }
    }

    pub fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::SeqCst);
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn webhook(&self, filters: Option<&[&str]>, retry_count: u32) -> WebhookRequest {
        WebhookRequest {
            display_name: "graphagent test".into(),
            endpoint_url: self.url.clone(),
            event_types: vec!["message".into()],
            event_filters: filters.map(|f| {
                [(
                    "message".to_owned(),
                    f.iter().map(|s| (*s).to_owned()).collect(),
                )]
                .into_iter()
                .collect()
            }),
            retry_count: Some(retry_count),
            timeout_seconds: Some(5),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RecvState = (Arc<Mutex<Vec<Received>>>, Arc<AtomicU16>);

async fn record(
    State((received, status)): State<RecvState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    received.lock().unwrap().push(Received { headers, body });
    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
}
