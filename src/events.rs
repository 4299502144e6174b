//! Outbound events: the catalogue of event types, and the publisher actions use to put
//! an event in the outbox **inside the same graph transaction** as the change that
//! caused it (the outbox pattern). The webhook dispatcher delivers from the outbox.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use utoipa::ToSchema;

/// One event type users can subscribe to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventType {
    /// Dotted name, e.g. `sentdm.message.delivered`.
    #[schema(example = "sentdm.message.delivered")]
    pub name: String,
    /// What it means.
    pub description: String,
    /// An example `data` payload.
    #[schema(value_type = Object)]
    pub example: Value,
}

impl EventType {
    /// A catalogue entry.
    pub fn new(name: &str, description: &str, example: Value) -> Self {
        Self {
            name: name.to_owned(),
            description: description.to_owned(),
            example,
        }
    }
}

/// The event types the host itself emits.
pub fn host_event_types() -> Vec<EventType> {
    vec![
        EventType::new(
            "webhook.test",
            "A test event sent on request to check a subscription's endpoint.",
            json!({"message": "This is a test event from graphagent."}),
        ),
        EventType::new(
            "webhook.subscription.disabled",
            "A subscription was disabled after too many consecutive failed deliveries.",
            json!({"subscription_id": "sub_01J9Z6", "url": "https://example.com/hooks", "consecutive_failures": 20,
                   "reason": "disabled after 20 consecutive failed events or 120 h of failures"}),
        ),
    ]
}

/// Host, SentDM and action-declared types, sorted by name, one entry per name (an
/// action's own declaration wins over the host's).
pub fn catalogue(action_declared: Vec<EventType>) -> Vec<EventType> {
    let mut by_name = std::collections::BTreeMap::new();
    for t in host_event_types().into_iter().chain(action_declared) {
        by_name.insert(t.name.clone(), t);
    }
    by_name.into_values().collect()
}

/// Puts events in the outbox. Cheap to clone.
#[derive(Clone, Default)]
pub struct EventPublisher {
    wake: Arc<Notify>,
}

/// An outbox row ready to be written inside the caller's transaction with
/// [`INSERT_OUTBOX`], where `$outbox` is one [`OutboxEvent::row`] or an array of them.
/// Commit, then call [`EventPublisher::notify`].
///
/// ```no_run
/// # async fn demo(ctx: graphagent::ActionContext) -> Result<(), graphagent::GraphError> {
/// use serde_json::json;
/// let event = ctx.events.event(
///     "sentdm.message.delivered", &ctx.agent_id, &ctx.action_id,
///     json!({"sentdm_message_id": "msg_8f2a", "status": "delivered"}),
/// );
/// ctx.graph.transaction(
///     &format!(
///         "BEGIN;
///          UPDATE type::record('sentdm_message', $id) SET status = 'delivered';
///          {}
///          COMMIT;",
///         graphagent::events::INSERT_OUTBOX
///     ),
///     json!({"id": "rec_1", "outbox": [event.row()]}),
/// ).await?;
/// ctx.events.notify();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// The event id (`evt_…`); also the `webhook-id` header of every delivery of it.
    pub id: String,
    row: Value,
}

impl OutboxEvent {
    /// The row to insert (its `id` is the record key).
    pub fn row(&self) -> &Value {
        &self.row
    }

    /// Consume into the row.
    pub fn into_row(self) -> Value {
        self.row
    }
}

/// The SurrealQL statement that inserts `$outbox` rows; put it in your transaction.
///
/// It writes them only while at least one subscription is enabled: an outbox nobody
/// can receive from is pure cost on the hottest paths (measured: 10–20 % of the SentDM
/// webhook receiver's throughput, and its p99, for rows the fan-out then only marks
/// done). The check reads the graph inside the same transaction, so it holds across
/// replicas; an event that commits concurrently with the first subscription's creation
/// may or may not reach it, as with any event at that instant.
pub const INSERT_OUTBOX: &str = "IF array::len(SELECT VALUE id FROM webhook_subscription WHERE enabled = true LIMIT 1) > 0 { INSERT INTO outbox_event $outbox; };";

impl EventPublisher {
    /// Build an outbox row for `event_type` with `data`, from the given action.
    pub fn event(
        &self,
        event_type: &str,
        agent_id: &str,
        action_id: &str,
        data: Value,
    ) -> OutboxEvent {
        let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let created_ms = crate::webhooks::now_ms();
        let row = json!({
            "id": id,
            "key": id,
            "type": event_type,
            "agent_id": agent_id,
            "action_id": action_id,
            "data": data,
            "fanned_out": false,
            "payload_expired": false,
            "created_ms": created_ms,
            "created_at": crate::webhooks::ms_to_rfc3339(created_ms),
        });
        OutboxEvent { id, row }
    }

    /// Tell the dispatcher new events were committed (call after the commit).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Wait until [`notify`](Self::notify) is called (used by the dispatcher).
    pub async fn notified(&self) {
        self.wake.notified().await;
    }
}
