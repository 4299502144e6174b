//! The action's graph: records of sent messages, broadcasts, receipts, inbound replies
//! and webhook state, and the batching writer that folds events.
//!
//! **Performance Invariant.** One transaction per event tops out near 7,000/s on this
//! hardware, so the webhook path never writes alone: a single writer task takes every
//! event queued while the previous batch committed and applies them all in one
//! statement ([`FOLD`], atomic), then answers each caller.

use std::time::Duration;

use graphagent::events::EventPublisher;
use graphagent::graph::{Graph, GraphError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use utoipa::ToSchema;

/// Schema of the action's tables and the status fold.
pub const SCHEMA: &str = include_str!("schema.surql");

/// Largest number of events folded in one transaction.
const MAX_BATCH: usize = 512;
/// Records per transaction when persisting a send.
const PERSIST_BATCH: usize = 500;

/// Result of applying one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FoldOutcome {
    /// `received`, `duplicate` or `ignored`.
    #[schema(example = "received")]
    pub outcome: String,
    /// Record id (key of the `sentdm_message` node), when there is one.
    pub record: Option<String>,
    /// The record's status after the event.
    pub status: Option<String>,
    /// Whether the event changed the status.
    #[serde(default)]
    pub changed: bool,
    /// Why it was ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

type Reply = oneshot::Sender<Result<FoldOutcome, GraphError>>;

/// Queue in front of the fold: callers wait for the commit of the batch their event
/// went into. Cheap to clone; the task ends when the last clone is dropped.
#[derive(Clone)]
pub struct FoldWriter {
    /// One queue per shard; a record always maps to the same shard, so its events stay
    /// in one writer's order while other records' batches commit in parallel.
    shards: Vec<mpsc::Sender<(Value, Reply)>>,
}

impl FoldWriter {
    /// Start the writer task on `graph`; `publisher` is woken after a batch that wrote
    /// outbound events.
    pub fn spawn(graph: Graph, publisher: EventPublisher) -> Self {
        let shards = (0..writer_shards())
            .map(|_| {
                let (tx, rx) = mpsc::channel::<(Value, Reply)>(MAX_BATCH * 8);
                tokio::spawn(run_writer(graph.clone(), publisher.clone(), rx));
                tx
            })
            .collect();
        Self { shards }
    }

    /// Apply one event (an element of [`FOLD`]'s `$events`); resolves after commit.
    pub async fn apply(&self, event: Value) -> Result<FoldOutcome, GraphError> {
        let (reply, wait) = oneshot::channel();
        let rid = event["rid"].as_str().unwrap_or_default();
        let shard = (fxhash(rid.as_bytes()) % self.shards.len() as u64) as usize;
        self.shards[shard]
            .send((event, reply))
            .await
            .map_err(|_| writer_gone())?;
        wait.await.map_err(|_| writer_gone())?
    }
}

/// Writers per action: one per core (at least 1), so batches of different records
/// commit in parallel; `GRAPHAGENT_SENTDM_FOLD_WRITERS` overrides.
fn writer_shards() -> usize {
    std::env::var("GRAPHAGENT_SENTDM_FOLD_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64)
}

/// FNV-1a: cheap and stable, for picking a shard.
fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn writer_gone() -> GraphError {
    GraphError {
        kind: graphagent::graph::GraphErrorKind::Unavailable,
        message: "the fold writer stopped".into(),
    }
}

async fn run_writer(
    graph: Graph,
    publisher: EventPublisher,
    mut rx: mpsc::Receiver<(Value, Reply)>,
) {
    let mut batch: Vec<(Value, Reply)> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let events: Vec<Value> = batch.iter().map(|(e, _)| e.clone()).collect();
        match apply_batch(&graph, &events).await {
            Ok(outcomes) if outcomes.len() == batch.len() => {
                if outcomes.iter().any(|o| o.changed) {
                    publisher.notify();
                }
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Ok(_) | Err(_) if batch.len() > 1 => {
                // One bad event must not fail its neighbours: apply them one by one.
                for (event, reply) in batch.drain(..) {
                    let result = apply_batch(&graph, std::slice::from_ref(&event))
                        .await
                        .and_then(|mut o| o.pop().ok_or_else(decode_error));
                    if result.as_ref().is_ok_and(|o| o.changed) {
                        publisher.notify();
                    }
                    let _ = reply.send(result);
                }
            }
            Ok(_) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(decode_error()));
                }
            }
            Err(e) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn decode_error() -> GraphError {
    GraphError {
        kind: graphagent::graph::GraphErrorKind::Decode,
        message: "fold returned an unexpected shape".into(),
    }
}

/// The fold (CONTRACT §3.3) over a batch, as one statement: one transaction, events in
/// order, each de-duplicated on its receipt. Inline rather than a `DEFINE FUNCTION`:
/// function calls cost more than the fold itself (measured: fold_bench, BENCHMARKS.md).
/// Then the batch's receipts, from which each caller's outcome is read.
///
/// Ranks (`$e.rank`, `status_rank`): 1 accepted/queued/scheduled, 2 processed,
/// 3 routed, 4 sent, 5 delivered, 6 read, -1 failed/blocked/filtered/cancelled,
/// 0 unknown.
const FOLD: &str = "
FOR $e IN $events {
    LET $receipt = type::record('sentdm_receipt', $e.key);
    IF !record::exists($receipt) {
        LET $rec = type::record('sentdm_message', $e.rid);
        LET $cur = (SELECT status, status_rank, status_at_ms FROM $rec)[0];
        LET $sibling = IF $cur = NONE AND $e.create_if_missing {
            (SELECT VALUE action_id FROM sentdm_message WHERE sentdm_message_id = $e.message_id AND action_id != $e.action_id LIMIT 1)[0]
        } ELSE { NONE };
        IF $cur = NONE AND (!$e.create_if_missing OR $sibling != NONE) {
            CREATE $receipt CONTENT { action_id: $e.action_id, message_id: $e.message_id, batch: $batch,
                outcome: 'ignored', reason: IF $sibling != NONE { 'sibling_action' } ELSE { 'unknown_message' }, at: time::now() };
        } ELSE {
            IF $cur = NONE {
                CREATE $rec CONTENT {
                    action_id: $e.action_id, agent_id: $e.agent_id, sentdm_message_id: $e.message_id,
                    to: $e.to, channel: $e.channel, template_id: $e.template_id, template_name: $e.template_name,
                    events: [], minimal: true, created_at: time::now(), updated_at: time::now()
                };
                RELATE (type::record('action', $e.action_id))->tracks->$rec;
            };
            LET $cs = $cur.status;
            LET $rc = $cur.status_rank ?? 0;
            LET $later = $e.t_ms != NONE AND $cur.status_at_ms != NONE AND $e.t_ms > $cur.status_at_ms;
            LET $adv = IF $e.rank = 0 { false }
                ELSE IF $rc = 0 { true }
                ELSE IF $cs IN ['read', 'filtered', 'cancelled'] { false }
                ELSE IF $cs = 'accepted' AND $e.status IN ['queued', 'scheduled'] { true }
                ELSE IF $e.rank > 0 AND $rc > 0 { $e.rank > $rc }
                ELSE IF $e.rank > 0 { $cs IN ['blocked', 'failed'] AND $later }
                ELSE IF $e.status = $cs { false }
                ELSE IF $rc > 0 AND $rc <= 4 { true }
                ELSE { $cs = 'delivered' AND $e.status = 'failed' AND $later };
            UPDATE $rec SET
                events = array::slice(array::append(events ?? [], $e.entry), -$e.limit),
                event_count = (event_count ?? 0) + 1,
                status = IF $adv { $e.status } ELSE { status },
                status_rank = IF $adv { $e.rank } ELSE { status_rank },
                status_at_ms = IF $adv { $e.t_ms } ELSE { status_at_ms },
                last_status_at = IF $adv { $e.occurred_at } ELSE { last_status_at },
                error = IF $adv AND $e.rank < 0 { $e.error } ELSE IF $adv { NONE } ELSE { error },
                to = IF to = NONE OR to = 'unknown' { $e.to } ELSE { to },
                channel = IF channel = NONE OR channel = 'unknown' { $e.channel } ELSE { channel },
                last_event_field = $e.field,
                last_event_payload = $e.payload,
                updated_at = time::now()
                RETURN NONE;
            -- The outbound event commits with the change it reports, or not at all.
            IF $adv AND $e.outbox != NONE {
                INSERT INTO outbox_event $e.outbox;
            };
            CREATE $receipt CONTENT { action_id: $e.action_id, message_id: $e.message_id, record: $e.rid,
                source: $e.source, event_id: $e.event_id, batch: $batch, outcome: 'received',
                status: IF $adv { $e.status } ELSE { $cs }, changed: $adv, at: time::now() };
        };
    };
};
SELECT record::id(id) AS key, batch, outcome, record, status, changed, reason
    FROM $events.map(|$e| type::record('sentdm_receipt', $e.key));
";

#[derive(Deserialize)]
struct ReceiptRow {
    key: String,
    batch: Option<String>,
    outcome: String,
    record: Option<String>,
    status: Option<String>,
    changed: Option<bool>,
    reason: Option<String>,
}

/// Apply events in order, atomically, retrying on transaction conflicts. Each event is
/// the object built by the action (`key`, `rid`, `status`, `rank`, `entry`, …).
pub async fn apply_batch(graph: &Graph, events: &[Value]) -> Result<Vec<FoldOutcome>, GraphError> {
    let batch = uuid::Uuid::now_v7().simple().to_string();
    let out = graph
        .transaction(FOLD, json!({ "events": events, "batch": batch }))
        .await?;
    let rows: Vec<ReceiptRow> =
        graphagent::graph::rows_from(out.into_iter().nth(1).unwrap_or(Value::Null))?;
    let by_key: std::collections::HashMap<&str, &ReceiptRow> =
        rows.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .map(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let row = by_key.get(key).ok_or_else(decode_error)?;
            // This batch wrote the receipt for the first event with this key; any other
            // event with the key (earlier batch, or later in this one) is a duplicate.
            let first_here = row.batch.as_deref() == Some(batch.as_str()) && seen.insert(key);
            Ok(if first_here {
                FoldOutcome {
                    outcome: row.outcome.clone(),
                    record: row.record.clone(),
                    status: row.status.clone(),
                    changed: row.changed.unwrap_or(false),
                    reason: row.reason.clone(),
                }
            } else {
                FoldOutcome {
                    outcome: "duplicate".into(),
                    record: row.record.clone(),
                    status: row.status.clone(),
                    changed: false,
                    reason: None,
                }
            })
        })
        .collect()
}

/// Drop `null` members so SurrealQL sees them as absent (NONE), not NULL.
pub fn without_nulls(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    v
}

/// Hex SHA-256 of the parts, length-prefixed so boundaries cannot shift.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Key of the record for (action, SentDM message id).
pub fn record_key(action_id: &str, message_id: &str) -> String {
    format!("{action_id}_{message_id}")
}

/// One record as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Record {
    /// Record id.
    #[schema(example = "act_0c9d2e7f1b3a4c5d6e7f_8ba7b830-9dad-11d1-80b4-00c04fd430c8")]
    pub id: String,
    /// SentDM message id.
    pub sentdm_message_id: String,
    /// Owning action.
    pub action_id: String,
    /// Owning agent.
    pub agent_id: Option<String>,
    /// Broadcast it belongs to (absent for records created from an unknown webhook).
    #[serde(default)]
    pub broadcast_id: Option<String>,
    /// Recipient (E.164).
    pub to: Option<String>,
    /// Channel.
    pub channel: Option<String>,
    /// Template id.
    #[serde(default)]
    pub template_id: Option<String>,
    /// Template name.
    #[serde(default)]
    pub template_name: Option<String>,
    /// Template parameters.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Idempotency key of the send request it came from.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// SentDM profile it was sent as.
    #[serde(default)]
    pub profile_id: Option<String>,
    /// Sent in sandbox mode.
    #[serde(default)]
    pub sandbox: Option<bool>,
    /// Current status: accepted, queued, routed, sent, delivered, read, failed, blocked,
    /// filtered, cancelled (never goes backwards).
    pub status: Option<String>,
    /// When the current status happened (SentDM's time).
    #[serde(default)]
    pub last_status_at: Option<String>,
    /// `{code, reason}` of a failure.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Bounded audit log, oldest first.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Events ever applied (the log may have dropped old ones).
    #[serde(default)]
    pub event_count: Option<u64>,
    /// `field` of the last event.
    #[serde(default)]
    pub last_event_field: Option<String>,
    /// Payload of the last event.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub last_event_payload: Option<Value>,
    /// Created from a webhook before (or without) our own send record.
    #[serde(default)]
    pub minimal: Option<bool>,
    /// When the record was created.
    pub created_at: Option<String>,
    /// Last change.
    pub updated_at: Option<String>,
}

const RECORD_FIELDS: &str = "record::id(id) AS id, sentdm_message_id, action_id, agent_id, broadcast_id, to, channel, template_id, template_name, parameters, idempotency_key, profile_id, sandbox, status, last_status_at, error, events, event_count, last_event_field, last_event_payload, minimal, created_at, updated_at";

/// Filters for listing records.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub status: Option<String>,
    pub to: Option<String>,
    pub sentdm_message_id: Option<String>,
    pub broadcast_id: Option<String>,
    pub page: u32,
    pub page_size: u32,
}

/// The action's store.
#[derive(Clone)]
pub struct Store {
    graph: Graph,
    action_id: String,
}

impl Store {
    pub fn new(graph: Graph, action_id: String) -> Self {
        Self { graph, action_id }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Persist a broadcast and its records, in batches. A record the webhook already
    /// created (the event raced our commit) keeps its status and log; the send event is
    /// put first in its log.
    pub async fn persist_send(
        &self,
        broadcast: &Value,
        records: &[Value],
        outbox: Option<&Value>,
    ) -> Result<(), GraphError> {
        self.graph
            .transaction(
                "BEGIN;
                 IF $outbox != NONE AND !record::exists(type::record('broadcast', $b.id)) {
                    INSERT INTO outbox_event $outbox;
                 };
                 UPSERT type::record('broadcast', $b.id) MERGE $b.fields;
                 INSERT RELATION INTO sent { id: [$b.action_id, $b.id], in: type::record('action', $b.action_id), out: type::record('broadcast', $b.id) } ON DUPLICATE KEY UPDATE at = time::now();
                 COMMIT;",
                without_nulls(json!({ "b": broadcast, "outbox": outbox })),
            )
            .await?;
        for chunk in records.chunks(PERSIST_BATCH) {
            self.graph
                .transaction(
                    "FOR $r IN $records {
                        LET $rec = type::record('sentdm_message', $r.key);
                        IF record::exists($rec) {
                            UPDATE $rec SET broadcast_id = $r.fields.broadcast_id, template_id = $r.fields.template_id,
                                template_name = $r.fields.template_name, parameters = $r.fields.parameters,
                                idempotency_key = $r.fields.idempotency_key, profile_id = $r.fields.profile_id,
                                sandbox = $r.fields.sandbox, to = $r.fields.to ?? to, channel = $r.fields.channel ?? channel,
                                events = array::slice(array::prepend(events ?? [], $r.send_event), -$r.limit),
                                event_count = (event_count ?? 0) + 1, minimal = false,
                                status = status ?? 'accepted', status_rank = status_rank ?? 1, updated_at = time::now();
                        } ELSE {
                            CREATE $rec CONTENT $r.fields;
                            RELATE (type::record('action', $r.fields.action_id))->tracks->$rec;
                        };
                        RELATE (type::record('broadcast', $r.fields.broadcast_id))->includes->$rec;
                    };",
                    json!({ "records": chunk }),
                )
                .await?;
        }
        Ok(())
    }

    pub async fn get_record(&self, key: &str) -> Result<Option<Record>, GraphError> {
        self.graph
            .query_opt(
                &format!("SELECT {RECORD_FIELDS} FROM type::record('sentdm_message', $key) WHERE action_id = $action;"),
                json!({"key": key, "action": self.action_id}),
                0,
            )
            .await
    }

    /// Records of this action, newest first, with the total matching.
    pub async fn list_records(&self, f: &RecordFilter) -> Result<(Vec<Record>, u64), GraphError> {
        let mut cond = String::from("action_id = $action");
        for (field, present) in [
            ("status", f.status.is_some()),
            ("to", f.to.is_some()),
            ("sentdm_message_id", f.sentdm_message_id.is_some()),
            ("broadcast_id", f.broadcast_id.is_some()),
        ] {
            if present {
                cond.push_str(&format!(" AND {field} = ${field}"));
            }
        }
        let sql = format!(
            "SELECT {RECORD_FIELDS} FROM sentdm_message WHERE {cond} ORDER BY created_at DESC LIMIT $limit START $start;
             RETURN count(SELECT id FROM sentdm_message WHERE {cond});"
        );
        let vars = json!({
            "action": self.action_id, "status": f.status, "to": f.to,
            "sentdm_message_id": f.sentdm_message_id, "broadcast_id": f.broadcast_id,
            "limit": f.page_size, "start": (f.page.saturating_sub(1)) * f.page_size,
        });
        let mut out = self.graph.query(&sql, vars).await?;
        let total = out.get(1).and_then(Value::as_u64).unwrap_or(0);
        let rows = graphagent::graph::rows_from(out.swap_remove(0))?;
        Ok((rows, total))
    }

    /// A broadcast node and the delivery funnel of its records (count by status).
    pub async fn broadcast_summary(&self, broadcast_id: &str) -> Result<Option<Value>, GraphError> {
        let out = self
            .graph
            .query(
                "SELECT *, record::id(id) AS id FROM type::record('broadcast', $b) WHERE action_id = $action;
                 SELECT status, count() AS n FROM sentdm_message WHERE action_id = $action AND broadcast_id = $b GROUP BY status;",
                json!({"b": broadcast_id, "action": self.action_id}),
            )
            .await?;
        let Some(mut node) = out
            .first()
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .cloned()
        else {
            return Ok(None);
        };
        let mut funnel = serde_json::Map::new();
        for row in out.get(1).and_then(Value::as_array).into_iter().flatten() {
            let status = row["status"].as_str().unwrap_or("unknown").to_owned();
            funnel.insert(status, row["n"].clone());
        }
        node["funnel"] = Value::Object(funnel);
        Ok(Some(node))
    }

    /// Records stuck in a non-final status since before `older_than_ms` ago.
    pub async fn stale_records(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<Record>, GraphError> {
        self.graph
            .query_rows(
                &format!(
                    "SELECT {RECORD_FIELDS} FROM sentdm_message WHERE action_id = $action
                       AND (status = NONE OR status IN ['accepted', 'queued', 'scheduled', 'processed', 'routed', 'sent'])
                       AND (sandbox = NONE OR sandbox = false)
                       AND updated_at < time::now() - type::duration($age)
                     ORDER BY updated_at ASC LIMIT $limit;"
                ),
                json!({"action": self.action_id, "age": format!("{}ms", older_than.as_millis()), "limit": limit}),
                0,
            )
            .await
    }

    /// Store an inbound reply, linked to the action and to the record it answers.
    pub async fn store_reply(
        &self,
        key: &str,
        reply: &Value,
        answers: Option<&str>,
        outbox: &Value,
    ) -> Result<bool, GraphError> {
        let out = self
            .graph
            .transaction(
                "BEGIN;
                 LET $node = type::record('sentdm_inbound', $key);
                 LET $fresh = !record::exists($node);
                 IF $fresh {
                    CREATE $node CONTENT $reply;
                    RELATE (type::record('action', $action))->received->$node;
                    IF $answers != NONE AND record::exists(type::record('sentdm_message', $answers)) {
                        RELATE $node->replies_to->(type::record('sentdm_message', $answers));
                    };
                    INSERT INTO outbox_event $outbox;
                 };
                 RETURN $fresh;
                 COMMIT;",
                without_nulls(json!({"key": key, "reply": reply, "action": self.action_id, "answers": answers, "outbox": outbox})),
            )
            .await?;
        Ok(out.iter().rev().find_map(Value::as_bool).unwrap_or(false))
    }

    /// Latest record of this action sent to `to` (the message a reply most likely answers).
    pub async fn latest_record_to(
        &self,
        to: &str,
        channel: Option<&str>,
    ) -> Result<Option<String>, GraphError> {
        self.graph
            .query_opt::<String>(
                "SELECT VALUE record::id(id) FROM sentdm_message WHERE action_id = $action AND to = $to
                   AND ($channel = NONE OR channel = $channel) ORDER BY created_at DESC LIMIT 1;",
                json!({"action": self.action_id, "to": to, "channel": channel}),
                0,
            )
            .await
    }

    /// Put one outbound event in the outbox on its own (for facts with no other write).
    pub async fn emit(&self, outbox: &Value) -> Result<(), GraphError> {
        self.graph
            .query(
                graphagent::events::INSERT_OUTBOX,
                json!({"outbox": [outbox]}),
            )
            .await
            .map(|_| ())
    }

    pub async fn webhook_state(&self) -> Result<Option<WebhookState>, GraphError> {
        self.graph
            .query_opt(
                "SELECT webhook_id, signing_secret, endpoint_path, updated_at FROM type::record('sentdm_webhook_state', $action);",
                json!({"action": self.action_id}),
                0,
            )
            .await
    }

    pub async fn save_webhook_state(
        &self,
        webhook_id: &str,
        secret: &str,
        endpoint_path: &str,
    ) -> Result<(), GraphError> {
        self.graph
            .query(
                "UPSERT type::record('sentdm_webhook_state', $action) CONTENT { webhook_id: $id, signing_secret: $secret, endpoint_path: $path, updated_at: time::now() };",
                json!({"action": self.action_id, "id": webhook_id, "secret": secret, "path": endpoint_path}),
            )
            .await
            .map(|_| ())
    }
}

/// What the action keeps about its SentDM webhook. The secret is stored because every
/// delivery must be verified with it; it never leaves the process otherwise.
#[derive(Clone, Deserialize)]
pub struct WebhookState {
    pub webhook_id: String,
    pub signing_secret: String,
    #[serde(default)]
    pub endpoint_path: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState")
            .field("webhook_id", &self.webhook_id)
            .field("signing_secret", &"whsec_***")
            .finish_non_exhaustive()
    }
}
