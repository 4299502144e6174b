//! The outbox: the catalogue of event types, the one typed [`OutboxEvent`] every emitter
//! writes and the webhook worker reads, and the publisher actions use to put an event in
//! the outbox **inside the same graph transaction** as the change that caused it (the
//! outbox pattern). The webhook worker delivers from the outbox.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
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

/// One outbound event, as the outbox stores it: written by every emitter (actions, the
/// host's operational events), read by the fan-out and the delivery worker.
///
/// Write it inside the caller's transaction with [`INSERT_OUTBOX`], where `$outbox` is
/// one [`OutboxEvent::row`] or an array of them. Commit, then call
/// [`EventPublisher::notify`].
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
///         graphagent::plugin::INSERT_OUTBOX
///     ),
///     json!({"id": "rec_1", "outbox": [event.row()]}),
/// ).await?;
/// ctx.events.notify();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// The event id (`evt_…`), also the record key and the `webhook-id` header of every
    /// delivery of it.
    pub key: String,
    /// The catalogue name, e.g. `sentdm.message.delivered`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The agent whose action emitted it; `None` for the host's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The emitting action; `None` for the host's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// The payload subscribers receive as `data`; removed when the retention period
    /// passes ([`payload_expired`](Self::payload_expired)).
    #[serde(default)]
    pub data: Option<Value>,
    /// Set once its deliveries exist.
    #[serde(default)]
    pub fanned_out: bool,
    /// Set when the cleaner removed `data`.
    #[serde(default)]
    pub payload_expired: bool,
    /// When it was created, epoch milliseconds (the envelope's `timestamp`).
    pub created_ms: i64,
    /// The same instant as RFC 3339, for people browsing the graph.
    #[serde(default)]
    pub created_at: String,
}

impl OutboxEvent {
    /// A new event with a fresh id, created now; not yet attributed to an action.
    pub fn new(event_type: &str, data: Value) -> Self {
        let created_ms = crate::time::now_ms();
        Self {
            key: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            event_type: event_type.to_owned(),
            agent_id: None,
            action_id: None,
            data: Some(data),
            fanned_out: false,
            payload_expired: false,
            created_ms,
            created_at: crate::time::ms_to_rfc3339(created_ms),
        }
    }

    /// Attribute the event to the action that emits it.
    #[must_use]
    pub fn from_action(mut self, agent_id: &str, action_id: &str) -> Self {
        self.agent_id = Some(agent_id.to_owned());
        self.action_id = Some(action_id.to_owned());
        self
    }

    /// The event id (`evt_…`).
    pub fn id(&self) -> &str {
        &self.key
    }

    /// The row to insert: the event with `id` set to its key, so that it is the record's
    /// id and repeating an insert cannot create a second copy.
    pub fn row(&self) -> Value {
        crate::graph::keyed_row(&self.key, self)
    }

    /// Consume into the row.
    pub fn into_row(self) -> Value {
        self.row()
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
    /// A new outbox event of `event_type` with `data`, from the given action.
    pub fn event(
        &self,
        event_type: &str,
        agent_id: &str,
        action_id: &str,
        data: Value,
    ) -> OutboxEvent {
        OutboxEvent::new(event_type, data).from_action(agent_id, action_id)
    }

    /// Tell the worker new events were committed (call after the commit).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Wait until [`notify`](Self::notify) is called (used by the worker).
    pub async fn notified(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_carries_its_key_as_id_and_reads_back_as_the_same_event() {
        let event = OutboxEvent::new("webhook.test", json!({"n": 1})).from_action("agt_1", "act_1");
        let row = event.row();
        assert_eq!(row["id"], json!(event.key));
        assert_eq!(row["type"], json!("webhook.test"));
        let back: OutboxEvent = serde_json::from_value(row).expect("row reads back");
        assert_eq!(back, event);
    }

    #[test]
    fn host_events_have_no_action() {
        let row = OutboxEvent::new("webhook.test", json!({})).row();
        assert!(
            row.get("agent_id").is_none() && row.get("action_id").is_none(),
            "{row}"
        );
    }
}
