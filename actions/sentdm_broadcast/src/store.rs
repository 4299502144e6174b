//! The action's graph: records of sent messages, broadcasts, inbound replies and webhook
//! state, and the batching writer that folds events.
//!
//! **Performance Invariant.** One transaction per event tops out near 7,000/s on this
//! hardware, so the webhook path never writes alone: a writer task per shard takes every
//! event queued while its previous batch committed and folds them all in one
//! transaction ([`apply_batch`]), then answers each caller.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use graphagent::graph::{Graph, GraphError};
use graphagent::plugin::{EventPublisher, INSERT_OUTBOX};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use utoipa::ToSchema;

use crate::inbound;
use crate::record::{LogEntry, MessageRecord, RECORD_PROJECTION, RecordError, ReplyRecord};
use sentdm_client::model::MessageStatus;

/// Schema of the action's tables and the status fold.
pub const SCHEMA: &str = include_str!("schema.surql");

/// Largest number of events folded in one transaction.
const MAX_BATCH: usize = 512;
/// A fold batch holding this many events or more commits without lingering
/// (`fold_linger_ms`): it is already worth its transaction.
pub const LINGER_BELOW: usize = 8;

/// Result of applying one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmFoldOutcome)]
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

/// One status event ready to fold: built by the action from a verified delivery (or a
/// refresh), applied by [`FoldWriter`].
#[derive(Debug, Clone)]
pub struct FoldEvent {
    /// De-duplication key (derived from the event itself, CONTRACT §5.7).
    pub key: String,
    /// Key of the `sentdm_message` record it folds into.
    pub rid: String,
    /// SentDM message id.
    pub message_id: String,
    /// Create a minimal record when there is none (webhooks; not refreshes).
    pub create_if_missing: bool,
    /// A status the fold ranks, or `None` (logged, no status change).
    pub status: Option<MessageStatus>,
    /// When it happened, unix ms (for the rule's "later").
    pub t_ms: Option<i64>,
    /// When it happened, as SentDM wrote it.
    pub occurred_at: Option<String>,
    /// Kept when a failure becomes the status.
    pub error: Option<RecordError>,
    /// The audit log entry.
    pub entry: LogEntry,
    /// Kept as `last_event_payload`.
    pub payload: Value,
    pub to: Option<String>,
    pub channel: Option<String>,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    /// Outbound event row, written only if this event changes the status.
    pub outbox: Option<Value>,
}

/// What every event of one writer shares: the owning action and its log bound.
#[derive(Debug, Clone)]
pub struct FoldScope {
    pub action_id: String,
    pub agent_id: String,
    /// `record_event_history_limit`.
    pub limit: usize,
}

/// Fewest de-duplication keys a record keeps (the newest); see [`FoldScope::keys_kept`].
pub const MIN_KEYS_KEPT: usize = 256;

impl FoldScope {
    /// How many de-duplication keys a record keeps: the newest, at least
    /// [`MIN_KEYS_KEPT`] and never fewer than the log holds. A message sees a handful of
    /// distinct events, so an older key would only matter for a replay of an event
    /// hundreds of events back, which is then folded as if new (the rule's guarantees
    /// still hold; the log gains an entry). Unbounded, the list would grow with every
    /// distinct signed event (docs/decisions.md, "Provider payload bounds").
    pub fn keys_kept(&self) -> usize {
        self.limit.max(MIN_KEYS_KEPT)
    }
}

/// Queue in front of the fold: callers wait for the commit of the batch their event
/// went into. Cheap to clone; the task ends when the last clone is dropped.
#[derive(Clone)]
pub struct FoldWriter {
    /// One queue per shard; a record always maps to the same shard, so its events stay
    /// in one writer's order while other records' batches commit in parallel.
    /// Each event travels with the span it was applied in, which its batch's span links.
    shards: Vec<mpsc::Sender<(FoldEvent, Reply, tracing::Span)>>,
}

impl FoldWriter {
    /// Start `writers` writer tasks (at least one) on `graph`; `publisher` is woken
    /// after a batch that wrote outbound events. A writer whose batch is small waits up
    /// to `linger` for more events before it folds them (`fold_linger_ms`).
    pub fn spawn(
        graph: Graph,
        publisher: EventPublisher,
        scope: FoldScope,
        writers: usize,
        linger: Duration,
    ) -> Self {
        let shards = (0..writers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel::<(FoldEvent, Reply, tracing::Span)>(MAX_BATCH * 8);
                tokio::spawn(run_writer(
                    graph.clone(),
                    publisher.clone(),
                    scope.clone(),
                    rx,
                    linger,
                ));
                tx
            })
            .collect();
        Self { shards }
    }

    /// How many writer tasks run.
    pub fn writers(&self) -> usize {
        self.shards.len()
    }

    /// Apply one event; resolves after the commit of the batch it went into.
    pub async fn apply(&self, event: FoldEvent) -> Result<FoldOutcome, GraphError> {
        let (reply, wait) = oneshot::channel();
        let shard = (fxhash(event.rid.as_bytes()) % self.shards.len() as u64) as usize;
        self.shards[shard]
            .send((event, reply, tracing::Span::current()))
            .await
            .map_err(|_| writer_gone())?;
        wait.await.map_err(|_| writer_gone())?
    }
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
    scope: FoldScope,
    mut rx: mpsc::Receiver<(FoldEvent, Reply, tracing::Span)>,
    linger: Duration,
) {
    let mut batch: Vec<(FoldEvent, Reply, tracing::Span)> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<FoldEvent> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !linger.is_zero() {
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < LINGER_BELOW {
                let room = MAX_BATCH - batch.len();
                let more = rx.recv_many(&mut batch, room);
                match tokio::time::timeout_at(deadline, more).await {
                    Ok(n) if n > 0 => {}
                    // Time is up, or every sender is gone: fold what is here.
                    _ => break,
                }
            }
        }
        // A root span (the writer outlives every request); linked to the spans of the
        // requests whose events it folds, which are still open: they await this reply.
        let span = tracing::info_span!(parent: None, "sentdm.fold.batch", events = batch.len());
        let replies: Vec<Reply> = batch
            .drain(..)
            .map(|(event, reply, from)| {
                span.follows_from(&from);
                events.push(event);
                reply
            })
            .collect();
        match apply_batch(&graph, &scope, &events)
            .instrument(span.clone())
            .await
        {
            Ok(outcomes) => {
                if outcomes.iter().any(|o| o.changed) {
                    publisher.notify();
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if events.len() > 1 && !e.is_unavailable() => {
                // One bad event must not fail its neighbours: apply them one by one.
                for (event, reply) in events.iter().zip(replies) {
                    let result = apply_batch(&graph, &scope, std::slice::from_ref(event))
                        .instrument(span.clone())
                        .await
                        .and_then(|mut o| o.pop().ok_or_else(decode_error));
                    if result.as_ref().is_ok_and(|o| o.changed) {
                        publisher.notify();
                    }
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        events.clear();
    }
}

fn decode_error() -> GraphError {
    GraphError {
        kind: graphagent::graph::GraphErrorKind::Decode,
        message: "fold returned an unexpected shape".into(),
    }
}

/// Reads what the rule needs about the batch's records, in the fold's transaction.
const FOLD_READ: &str =
    "SELECT record::id(id) AS rid, status, status_at_ms, event_keys, to, channel,
        array::len(events ?? []) AS logged, array::len(event_keys ?? []) AS keyed
    FROM $rids.map(|$r| type::record('sentdm_message', $r));";

/// Which of the batch's unknown messages a sibling action already tracks.
const FOLD_SIBLINGS: &str = "SELECT VALUE sentdm_message_id FROM sentdm_message
    WHERE sentdm_message_id IN $mids AND action_id != $action;";

/// Records created by this batch (events for messages we have no record of yet).
const FOLD_CREATE: &str = "
    INSERT INTO sentdm_message $created.map(|$r| object::extend($r, { created_at: time::now(), updated_at: time::now() })) RETURN NONE;
    INSERT RELATION INTO sentdm_tracks $created.map(|$r| { in: type::record('action', $action), out: type::record('sentdm_message', $r.id) }) RETURN NONE;";

/// Existing records whose status changes. The log, keys and count are appended by the
/// database, the status is the rule's. Plain `SET`s of precomputed values: every
/// expression here costs per event (BENCHMARKS.md), so the log is trimmed to its bound
/// by [`FOLD_TRIM`], only for the records that go over it.
const FOLD_ADVANCE: &str = "
    FOR $r IN $advanced {
        UPDATE type::record('sentdm_message', $r.id) SET
            events += $r.entries, event_keys += $r.keys, event_count += $r.n,
            status = $r.status, status_at_ms = $r.status_at_ms, last_status_at = $r.last_status_at,
            error = $r.error, last_event_field = 'message', last_event_payload = $r.payload,
            updated_at = $now
        RETURN NONE;
    };";

/// Existing records whose status stays: only the log, keys and count move.
const FOLD_APPEND: &str = "
    FOR $r IN $appended {
        UPDATE type::record('sentdm_message', $r.id) SET
            events += $r.entries, event_keys += $r.keys, event_count += $r.n,
            last_event_field = 'message', last_event_payload = $r.payload, updated_at = $now
        RETURN NONE;
    };";

/// Records whose log went over `record_event_history_limit`, or whose key list over
/// [`FoldScope::keys_kept`]: drop the oldest entries.
const FOLD_TRIM: &str = "
    FOR $id IN $trimmed {
        UPDATE type::record('sentdm_message', $id) SET events = array::slice(events, -$limit),
            event_keys = array::slice(event_keys, -$keys_kept) RETURN NONE;
    };";

/// Records whose recipient or channel was unknown and the batch knows it (rare).
const FOLD_FILL: &str = "
    FOR $r IN $filled {
        UPDATE type::record('sentdm_message', $r.id) SET to = $r.to ?? to, channel = $r.channel ?? channel RETURN NONE;
    };";

/// Every write of a batch, one fixed statement over [`FoldWrites`]: a `FOR` over an
/// empty list does nothing, and the two that would still cost (the insert, and the
/// outbox's subscription read) run only when they have rows.
static FOLD_WRITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "LET $now = time::now();
        IF array::len($created) > 0 {{ {FOLD_CREATE} }};
        {FOLD_ADVANCE}{FOLD_APPEND}{FOLD_FILL}{FOLD_TRIM}
        IF array::len($outbox) > 0 {{ {INSERT_OUTBOX} }};"
    )
});

/// What [`FOLD_WRITE`] binds.
#[derive(Serialize)]
struct FoldWrites<'a> {
    /// [`CreatedRow`]s, nulls dropped.
    created: Vec<Value>,
    advanced: Vec<AdvanceRow<'a>>,
    appended: Vec<AppendRow<'a>>,
    filled: Vec<FillRow<'a>>,
    trimmed: Vec<&'a str>,
    outbox: Vec<&'a Value>,
    limit: usize,
    keys_kept: usize,
    action: &'a str,
}

impl FoldWrites<'_> {
    fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.advanced.is_empty()
            && self.appended.is_empty()
            && self.filled.is_empty()
            && self.trimmed.is_empty()
            && self.outbox.is_empty()
    }
}

/// What a batch appends to an existing record.
#[derive(Serialize)]
struct AppendRow<'a> {
    id: &'a str,
    entries: &'a [&'a LogEntry],
    keys: &'a [&'a str],
    n: usize,
    payload: &'a Value,
}

/// An append whose status moved. An absent field is written as NONE (the error of a
/// record that recovers from a failure goes away).
#[derive(Serialize)]
struct AdvanceRow<'a> {
    #[serde(flatten)]
    append: AppendRow<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_status_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RecordError>,
}

/// A recipient or channel learnt for a record that lacked it.
#[derive(Serialize)]
struct FillRow<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
}

#[derive(Deserialize)]
struct Current {
    rid: String,
    /// Stored lowercase; read in any case, an unknown word ranks as nothing known.
    status: Option<MessageStatus>,
    status_at_ms: Option<i64>,
    /// Absent on records written before this field (and on send records).
    event_keys: Option<Vec<String>>,
    to: Option<String>,
    channel: Option<String>,
    /// Entries in the log now.
    #[serde(default)]
    logged: usize,
    /// De-duplication keys on the record now.
    #[serde(default)]
    keyed: usize,
}

/// A record the fold creates: the record, and what only the fold reads back.
#[derive(Serialize)]
struct CreatedRow<'a> {
    #[serde(flatten)]
    record: MessageRecord,
    status_at_ms: Option<i64>,
    event_keys: Vec<&'a str>,
}

/// A record as the batch leaves it.
struct Folded<'a> {
    /// Not in the graph before this batch.
    created: bool,
    status: Option<MessageStatus>,
    status_at_ms: Option<i64>,
    /// The status moved (so the status fields are written).
    advanced: bool,
    last_status_at: Option<&'a str>,
    error: Option<&'a RecordError>,
    /// Recipient and channel: known on the record, or learnt from this batch's events.
    to: Option<&'a str>,
    channel: Option<&'a str>,
    /// `to` / `channel` were unknown on the record and this batch knows them.
    fill: bool,
    /// Entries in the log before this batch.
    logged: usize,
    /// De-duplication keys on the record before this batch.
    keyed: usize,
    known_keys: HashSet<&'a str>,
    keys: Vec<&'a str>,
    entries: Vec<&'a LogEntry>,
    first: &'a FoldEvent,
    last: &'a FoldEvent,
}

impl<'a> Folded<'a> {
    fn new(first: &'a FoldEvent, current: Option<&'a Current>) -> Self {
        let known = |v: Option<&'a String>| v.map(String::as_str).filter(|v| *v != "unknown");
        Self {
            created: current.is_none(),
            status: current.and_then(|c| c.status.clone()),
            status_at_ms: current.and_then(|c| c.status_at_ms),
            advanced: false,
            last_status_at: None,
            error: None,
            to: known(current.and_then(|c| c.to.as_ref())),
            channel: known(current.and_then(|c| c.channel.as_ref())),
            fill: false,
            logged: current.map_or(0, |c| c.logged),
            keyed: current.map_or(0, |c| c.keyed),
            known_keys: current
                .and_then(|c| c.event_keys.as_ref())
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
            keys: Vec::new(),
            entries: Vec::new(),
            first,
            last: first,
        }
    }

    /// Fold one event that is not a duplicate; true when the status changed.
    fn apply(&mut self, e: &'a FoldEvent) -> bool {
        self.known_keys.insert(&e.key);
        self.keys.push(&e.key);
        self.entries.push(&e.entry);
        self.last = e;
        if self.to.is_none() && e.to.is_some() {
            self.to = e.to.as_deref();
            self.fill = true;
        }
        if self.channel.is_none() && e.channel.is_some() {
            self.channel = e.channel.as_deref();
            self.fill = true;
        }
        let changed = inbound::advances(
            self.status.as_ref(),
            self.status_at_ms,
            e.status.as_ref(),
            e.t_ms,
        );
        if changed {
            self.status = e.status.clone();
            self.status_at_ms = e.t_ms;
            self.last_status_at = e.occurred_at.as_deref();
            self.error = if e.status.as_ref().is_some_and(MessageStatus::is_failure) {
                e.error.as_ref()
            } else {
                None
            };
            self.advanced = true;
        }
        changed
    }

    /// A whole new record, with the fold's bookkeeping beside it.
    fn created_row(&self, scope: &FoldScope) -> Value {
        let e = self.last;
        let skip = self.entries.len().saturating_sub(scope.limit);
        let skip_keys = self.keys.len().saturating_sub(scope.keys_kept());
        let row = CreatedRow {
            record: MessageRecord {
                id: e.rid.clone(),
                sentdm_message_id: e.message_id.clone(),
                action_id: scope.action_id.clone(),
                agent_id: Some(scope.agent_id.clone()),
                to: self.to.map(str::to_owned),
                channel: self.channel.map(str::to_owned),
                template_id: self.first.template_id.clone(),
                template_name: self.first.template_name.clone(),
                status: self.status.clone(),
                last_status_at: self.last_status_at.map(str::to_owned),
                error: self.error.cloned(),
                events: self.entries.iter().skip(skip).map(|&e| e.clone()).collect(),
                event_count: Some(self.entries.len() as u64),
                last_event_field: Some("message".into()),
                last_event_payload: Some(e.payload.clone()),
                minimal: Some(true),
                ..MessageRecord::default()
            },
            status_at_ms: self.status_at_ms,
            event_keys: self.keys.iter().skip(skip_keys).copied().collect(),
        };
        without_nulls(serde_json::to_value(row).unwrap_or(Value::Null))
    }

    /// The status as the graph keeps it: lowercase.
    fn stored_status(&self) -> Option<&str> {
        self.status.as_ref().map(MessageStatus::lowercase)
    }

    /// What to append to an existing record.
    fn append_row(&self) -> AppendRow<'_> {
        AppendRow {
            id: &self.last.rid,
            entries: &self.entries,
            keys: &self.keys,
            n: self.entries.len(),
            payload: &self.last.payload,
        }
    }

    /// The append with the record's new status.
    fn advance_row(&self) -> AdvanceRow<'_> {
        AdvanceRow {
            append: self.append_row(),
            status: self.stored_status(),
            status_at_ms: self.status_at_ms,
            last_status_at: self.last_status_at,
            error: self.error,
        }
    }
}

/// Apply events in order, atomically: one interactive transaction reads the batch's
/// records, the rule (CONTRACT §3.3, [`inbound::advances`]) runs here, and the writes go
/// back in a few bulk statements. Every event folded writes its record, so two
/// transactions folding into one record always collide at commit; the loser is run
/// again from its read (invariant 3: no lost updates). Duplicates are found by their
/// key on the record itself (`event_keys`), checked and written in the same
/// transaction (invariant 2).
#[tracing::instrument(name = "sentdm.fold.apply", skip_all, fields(events = events.len()))]
pub async fn apply_batch(
    graph: &Graph,
    scope: &FoldScope,
    events: &[FoldEvent],
) -> Result<Vec<FoldOutcome>, GraphError> {
    let _timer = crate::metrics::FoldTimer::start(events.len());
    let mut attempt = 0;
    loop {
        let txn = graph.begin().await?;
        let result = match fold_in(&txn, scope, events).await {
            Ok(outcomes) => txn.commit().await.map(|()| outcomes),
            Err(e) => Err(e),
        };
        match result {
            Err(e)
                if e.is_conflict()
                    && graphagent::graph::retry_after_conflict(&mut attempt).await => {}
            other => return other,
        }
    }
}

async fn fold_in(
    txn: &graphagent::graph::GraphTxn,
    scope: &FoldScope,
    events: &[FoldEvent],
) -> Result<Vec<FoldOutcome>, GraphError> {
    use std::collections::HashMap;
    use std::collections::hash_map::Entry;

    let mut rids: Vec<&str> = Vec::new();
    let mut seen_rids = HashSet::new();
    for e in events {
        if seen_rids.insert(e.rid.as_str()) {
            rids.push(&e.rid);
        }
    }
    let current: Vec<Current> = first_rows(txn.query(FOLD_READ, json!({ "rids": rids })).await?)?;
    let by_rid: HashMap<&str, &Current> = current.iter().map(|c| (c.rid.as_str(), c)).collect();

    // Messages with no record here: a sibling action's, or new.
    let missing: HashSet<&str> = events
        .iter()
        .filter(|e| e.create_if_missing && !by_rid.contains_key(e.rid.as_str()))
        .map(|e| e.message_id.as_str())
        .collect();
    let siblings: HashSet<String> = if missing.is_empty() {
        HashSet::new()
    } else {
        let vars = json!({ "mids": missing, "action": scope.action_id });
        first_rows::<String>(txn.query(FOLD_SIBLINGS, vars).await?)?
            .into_iter()
            .collect()
    };

    let mut records: HashMap<&str, Folded<'_>> = HashMap::with_capacity(rids.len());
    let mut outcomes = Vec::with_capacity(events.len());
    let mut outbox: Vec<&Value> = Vec::new();
    for e in events {
        let record = match records.entry(e.rid.as_str()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => match by_rid.get(e.rid.as_str()) {
                Some(cur) => v.insert(Folded::new(e, Some(cur))),
                None if e.create_if_missing && !siblings.contains(&e.message_id) => {
                    v.insert(Folded::new(e, None))
                }
                None => {
                    let reason = if e.create_if_missing {
                        "sibling_action"
                    } else {
                        "unknown_message"
                    };
                    outcomes.push(FoldOutcome {
                        outcome: "ignored".into(),
                        record: None,
                        status: None,
                        changed: false,
                        reason: Some(reason.into()),
                    });
                    continue;
                }
            },
        };
        let duplicate = record.known_keys.contains(e.key.as_str());
        let changed = !duplicate && record.apply(e);
        if changed {
            outbox.extend(e.outbox.as_ref());
        }
        outcomes.push(FoldOutcome {
            outcome: if duplicate { "duplicate" } else { "received" }.into(),
            record: Some(e.rid.clone()),
            status: record.stored_status().map(str::to_owned),
            changed,
            reason: None,
        });
    }

    let mut writes = FoldWrites {
        created: Vec::new(),
        advanced: Vec::new(),
        appended: Vec::new(),
        filled: Vec::new(),
        trimmed: Vec::new(),
        outbox,
        limit: scope.limit,
        keys_kept: scope.keys_kept(),
        action: &scope.action_id,
    };
    for record in rids.iter().filter_map(|rid| records.get(rid)) {
        if record.entries.is_empty() {
            continue; // only duplicates: nothing to write
        }
        if record.created {
            writes.created.push(record.created_row(scope));
            continue;
        }
        if record.logged + record.entries.len() > scope.limit
            || record.keyed + record.keys.len() > scope.keys_kept()
        {
            writes.trimmed.push(record.last.rid.as_str());
        }
        if record.fill {
            writes.filled.push(FillRow {
                id: &record.last.rid,
                to: record.to,
                channel: record.channel,
            });
        }
        if record.advanced {
            writes.advanced.push(record.advance_row());
        } else {
            writes.appended.push(record.append_row());
        }
    }
    if !writes.is_empty() {
        let vars = serde_json::to_value(&writes).map_err(|e| GraphError {
            kind: graphagent::graph::GraphErrorKind::Decode,
            message: format!("fold rows: {e}"),
        })?;
        // The records and the outbox rows go in one statement: this span is the fold's
        // outbox insert.
        let span = tracing::info_span!("sentdm.fold.write", outbox.rows = writes.outbox.len());
        txn.query(&FOLD_WRITE, vars).instrument(span).await?;
    }
    Ok(outcomes)
}

/// The rows of a query's first statement.
fn first_rows<T: serde::de::DeserializeOwned>(out: Vec<Value>) -> Result<Vec<T>, GraphError> {
    graphagent::graph::rows_from(out.into_iter().next().unwrap_or(Value::Null))
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

/// A broadcast node's fields as stored (one `send_broadcast` call); written by the send,
/// read back inside [`BroadcastSummary`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmBroadcastNode)]
pub struct BroadcastNode {
    /// Owning action.
    pub action_id: String,
    /// Owning agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Recipients SentDM accepted, each once.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Channels asked for.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Template id sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Template name sent (when no id was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// The caller's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Sent in sandbox mode.
    #[serde(default)]
    pub sandbox: bool,
    /// Messages SentDM accepted.
    #[serde(default)]
    pub message_count: u64,
    /// `accepted` or `partial` (some requests were rejected).
    #[schema(example = "accepted")]
    pub status: String,
    /// SentDM request ids of the accepted requests.
    #[serde(default)]
    pub request_ids: Vec<String>,
}

/// A broadcast as the API shows it: the node, its id and time, and the delivery funnel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmBroadcastSummary)]
pub struct BroadcastSummary {
    /// Broadcast id (`bc_…`).
    #[schema(example = "bc_0192f1c3a7d87b2e9c1f4a5b6c7d8e9f")]
    pub id: String,
    /// The stored fields.
    #[serde(flatten)]
    pub node: BroadcastNode,
    /// When it was sent (RFC 3339); a retry with the same idempotency key keeps the first.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Records counted by current status, e.g. `{"delivered": 3, "failed": 1}`.
    #[schema(example = json!({"delivered": 3, "failed": 1}))]
    pub funnel: std::collections::BTreeMap<String, u64>,
}

/// The broadcast node of a send, its edge, and (the first time) its outbound event.
static PERSIST_BROADCAST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "BEGIN;
         IF $outbox != NONE AND !record::exists(type::record('sentdm_broadcast', $b.id)) {{
            {INSERT_OUTBOX}
         }};
         UPSERT type::record('sentdm_broadcast', $b.id) MERGE $b.fields;
         UPDATE type::record('sentdm_broadcast', $b.id) SET created_at = $b.created_at WHERE created_at = NONE;
         INSERT RELATION INTO sentdm_sent {{ id: [$b.action_id, $b.id], in: type::record('action', $b.action_id), out: type::record('sentdm_broadcast', $b.id) }} ON DUPLICATE KEY UPDATE at = time::now();
         COMMIT;"
    )
});

/// An inbound reply, once: linked to the action and the record it answers, with its
/// outbound event; returns whether it was new.
static STORE_REPLY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "BEGIN;
         LET $node = type::record('sentdm_inbound', $key);
         LET $fresh = !record::exists($node);
         IF $fresh {{
            CREATE $node CONTENT $reply;
            RELATE (type::record('action', $action))->sentdm_received->$node;
            IF $answers != NONE AND record::exists(type::record('sentdm_message', $answers)) {{
                RELATE $node->sentdm_replies_to->(type::record('sentdm_message', $answers));
            }};
            {INSERT_OUTBOX}
         }};
         RETURN $fresh;
         COMMIT;"
    )
});

/// One record of this action.
static GET_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM type::record('sentdm_message', $key) WHERE action_id = $action;",
        *RECORD_PROJECTION
    )
});

/// Records stuck in a pending status, oldest change first.
static STALE_RECORDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM sentdm_message WHERE action_id = $action
           AND (status = NONE OR status IN $pending)
           AND (sandbox = NONE OR sandbox = false)
           AND updated_at < time::now() - type::duration($age)
         ORDER BY updated_at ASC LIMIT $limit;",
        *RECORD_PROJECTION
    )
});

/// The filter of [`LIST_RECORDS`]: each optional filter matches anything when unbound.
const RECORD_FILTER: &str = "action_id = $action
    AND ($status = NONE OR status = $status)
    AND ($to = NONE OR to = $to)
    AND ($sentdm_message_id = NONE OR sentdm_message_id = $sentdm_message_id)
    AND ($broadcast_id = NONE OR broadcast_id = $broadcast_id)";

/// A page of this action's records, newest first, and how many match.
static LIST_RECORDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM sentdm_message WHERE {RECORD_FILTER} ORDER BY created_at DESC LIMIT $limit START $start;
         RETURN count(SELECT id FROM sentdm_message WHERE {RECORD_FILTER});",
        *RECORD_PROJECTION
    )
});

/// A broadcast's records counted by status.
const BROADCAST_FUNNEL: &str = "SELECT status, count() AS n FROM sentdm_message
    WHERE action_id = $action AND broadcast_id = $b GROUP BY status;";

/// A broadcast node of this action, then [`BROADCAST_FUNNEL`].
static BROADCAST_SUMMARY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT *, record::id(id) AS id FROM type::record('sentdm_broadcast', $b) WHERE action_id = $action;
         {BROADCAST_FUNNEL}"
    )
});

/// The filter of [`LIST_REPLIES`]; `from` is a keyword, hence the backticks.
const REPLY_FILTER: &str = "action_id = $action
    AND ($from = NONE OR `from` = $from)
    AND ($answers = NONE OR answers_record = $answers)";

/// A reply as [`Reply`] reads it: `answers_record` only through the edge, which exists
/// only when the record it names does.
const REPLY_PROJECTION: &str = "*, record::id(id) AS id,
    (SELECT VALUE record::id(out) FROM sentdm_replies_to WHERE in = $parent.id LIMIT 1)[0] AS answers_record";

/// A page of this action's replies, newest first, and how many match.
static LIST_REPLIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {REPLY_PROJECTION} FROM sentdm_inbound WHERE {REPLY_FILTER} ORDER BY created_at DESC LIMIT $limit START $start;
         RETURN count(SELECT id FROM sentdm_inbound WHERE {REPLY_FILTER});"
    )
});

/// Filters for listing replies.
#[derive(Debug, Clone)]
pub struct ReplyFilter {
    /// The contact who wrote.
    pub from: Option<String>,
    /// Replies linked to this record.
    pub answers_record: Option<String>,
    pub paging: graphagent::plugin::Paging,
}

/// Which of a send's records exist already, and for which broadcast.
const SEND_READ: &str = "SELECT record::id(id) AS rid, broadcast_id
    FROM $ids.map(|$r| type::record('sentdm_message', $r));";

/// A send's records: new ones in bulk with their two edges; the rare record the webhook
/// created first (or one of an earlier broadcast) takes the send's fields, with the
/// send entry put first in its log.
const SEND_WRITE: &str = "
    IF array::len($fresh) > 0 {
        INSERT INTO sentdm_message $fresh RETURN NONE;
        INSERT RELATION INTO sentdm_tracks $fresh.map(|$r| { in: type::record('action', $r.action_id), out: type::record('sentdm_message', $r.id) }) RETURN NONE;
        INSERT RELATION INTO sentdm_includes $fresh.map(|$r| { in: type::record('sentdm_broadcast', $broadcast), out: type::record('sentdm_message', $r.id) }) RETURN NONE;
    };
    FOR $r IN $merged {
        LET $rec = type::record('sentdm_message', $r.id);
        UPDATE $rec SET broadcast_id = $r.broadcast_id, template_id = $r.template_id,
            template_name = $r.template_name, parameters = $r.parameters,
            idempotency_key = $r.idempotency_key, profile_id = $r.profile_id,
            sandbox = $r.sandbox, to = $r.to ?? to, channel = $r.channel ?? channel,
            events = array::slice(array::prepend(events ?? [], $r.events[0]), -$limit),
            event_count = (event_count ?? 0) + 1, minimal = false,
            status = status ?? $r.status, updated_at = time::now() RETURN NONE;
        RELATE (type::record('sentdm_broadcast', $broadcast))->sentdm_includes->$rec RETURN NONE;
    };";

/// What [`SEND_READ`] returns per existing record.
#[derive(Deserialize)]
struct Existing {
    rid: String,
    broadcast_id: Option<String>,
}

async fn persist_records_in(
    txn: &graphagent::graph::GraphTxn,
    broadcast_id: &str,
    records: &[MessageRecord],
    ids: &[&str],
    limit: u32,
) -> Result<(), GraphError> {
    let existing: Vec<Existing> = first_rows(txn.query(SEND_READ, json!({ "ids": ids })).await?)?;
    let existing: std::collections::HashMap<&str, Option<&str>> = existing
        .iter()
        .map(|e| (e.rid.as_str(), e.broadcast_id.as_deref()))
        .collect();
    let mut fresh = Vec::new();
    let mut merged = Vec::new();
    for r in records {
        let row = || {
            serde_json::to_value(r)
                .map(without_nulls)
                .map_err(|e| GraphError {
                    kind: graphagent::graph::GraphErrorKind::Decode,
                    message: format!("record: {e}"),
                })
        };
        match existing.get(r.id.as_str()) {
            None => fresh.push(row()?),
            Some(b) if *b == Some(broadcast_id) => {} // this broadcast's, already stored
            Some(_) => merged.push(row()?),
        }
    }
    if fresh.is_empty() && merged.is_empty() {
        return Ok(());
    }
    let vars =
        json!({ "fresh": fresh, "merged": merged, "broadcast": broadcast_id, "limit": limit });
    txn.query(SEND_WRITE, vars).await.map(|_| ())
}

/// Filters for listing records.
#[derive(Debug, Clone)]
pub struct RecordFilter {
    pub status: Option<MessageStatus>,
    pub to: Option<String>,
    pub sentdm_message_id: Option<String>,
    pub broadcast_id: Option<String>,
    pub paging: graphagent::plugin::Paging,
}

impl Default for RecordFilter {
    /// No filter; the first page of 20.
    fn default() -> Self {
        Self {
            status: None,
            to: None,
            sentdm_message_id: None,
            broadcast_id: None,
            paging: graphagent::plugin::Paging {
                page: 1,
                page_size: 20,
            },
        }
    }
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

    /// Write a broadcast's node, its edge from the action and (the first time) its
    /// `sentdm.broadcast.accepted` outbox row. Idempotent: a retry with the same
    /// idempotency key keeps the first `created_at` and emits nothing again.
    pub async fn persist_broadcast(
        &self,
        broadcast: &Value,
        outbox: Option<&Value>,
    ) -> Result<(), GraphError> {
        self.graph
            .transaction(
                &PERSIST_BROADCAST,
                without_nulls(json!({ "b": broadcast, "outbox": outbox })),
            )
            .await
            .map(|_| ())
    }

    /// Write the records of one SentDM answer, linked to the action and to
    /// `broadcast_id`, in one transaction of bulk statements. A record the webhook
    /// already created (its event raced this write) keeps its status and log, and gets
    /// the send's fields and the send entry first in its log. Idempotent: a record
    /// already holding this broadcast (a client's retry with the same idempotency key)
    /// is left exactly as it is.
    pub async fn persist_records(
        &self,
        broadcast_id: &str,
        records: &[MessageRecord],
        limit: u32,
    ) -> Result<(), GraphError> {
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut attempt = 0;
        loop {
            let txn = self.graph.begin().await?;
            let result = match persist_records_in(&txn, broadcast_id, records, &ids, limit).await {
                Ok(()) => txn.commit().await,
                Err(e) => Err(e),
            };
            match result {
                // The webhook created one of these records after our read.
                Err(e)
                    if e.is_conflict()
                        && graphagent::graph::retry_after_conflict(&mut attempt).await => {}
                other => return other,
            }
        }
    }

    pub async fn get_record(&self, key: &str) -> Result<Option<MessageRecord>, GraphError> {
        self.graph
            .query_opt(
                &GET_RECORD,
                json!({"key": key, "action": self.action_id}),
                0,
            )
            .await
    }

    /// Records of this action, newest first, with the total matching.
    pub async fn list_records(
        &self,
        f: &RecordFilter,
    ) -> Result<(Vec<MessageRecord>, u64), GraphError> {
        // Unset filters stay unbound (NONE), which the statement reads as "any".
        let vars = without_nulls(json!({
            "action": self.action_id, "status": f.status.as_ref().map(MessageStatus::lowercase),
            "to": f.to, "sentdm_message_id": f.sentdm_message_id, "broadcast_id": f.broadcast_id,
            "limit": f.paging.page_size, "start": f.paging.offset(),
        }));
        let mut out = self.graph.query(&LIST_RECORDS, vars).await?.into_iter();
        let rows = graphagent::graph::rows_from(out.next().unwrap_or(Value::Null))?;
        let total = out.next().and_then(|v| v.as_u64()).unwrap_or(0);
        Ok((rows, total))
    }

    /// A broadcast node and the delivery funnel of its records (count by status).
    pub async fn broadcast_summary(
        &self,
        broadcast_id: &str,
    ) -> Result<Option<BroadcastSummary>, GraphError> {
        let out = self
            .graph
            .query(
                &BROADCAST_SUMMARY,
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
        serde_json::from_value(node)
            .map(Some)
            .map_err(|e| GraphError {
                kind: graphagent::graph::GraphErrorKind::Decode,
                message: format!("broadcast node: {e}"),
            })
    }

    /// Records stuck in a non-final status since before `older_than_ms` ago.
    pub async fn stale_records(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, GraphError> {
        self.graph
            .query_rows(
                &STALE_RECORDS,
                json!({"action": self.action_id, "age": format!("{}ms", older_than.as_millis()), "limit": limit, "pending": pending_words()}),
                0,
            )
            .await
    }

    /// Store an inbound reply, linked to the action and to the record it answers.
    pub async fn store_reply(
        &self,
        key: &str,
        reply: &ReplyRecord,
        outbox: &Value,
    ) -> Result<bool, GraphError> {
        let out = self
            .graph
            .transaction(
                &STORE_REPLY,
                without_nulls(json!({"key": key, "reply": reply, "action": self.action_id, "answers": reply.answers_record, "outbox": outbox})),
            )
            .await?;
        Ok(out.iter().rev().find_map(Value::as_bool).unwrap_or(false))
    }

    /// A page of this action's inbound replies, newest first, with the total.
    pub async fn list_replies(
        &self,
        f: &ReplyFilter,
    ) -> Result<(Vec<crate::record::Reply>, u64), GraphError> {
        let vars = without_nulls(json!({
            "action": self.action_id, "from": f.from, "answers": f.answers_record,
            "limit": f.paging.page_size, "start": f.paging.offset(),
        }));
        let mut out = self.graph.query(&LIST_REPLIES, vars).await?.into_iter();
        let rows: Vec<crate::record::Reply> =
            graphagent::graph::rows_from(out.next().unwrap_or(Value::Null))?;
        let total = out.next().and_then(|v| v.as_u64()).unwrap_or(0);
        Ok((
            rows.into_iter()
                .map(crate::record::Reply::with_link)
                .collect(),
            total,
        ))
    }

    /// One inbound reply of this action.
    pub async fn get_reply(&self, id: &str) -> Result<Option<crate::record::Reply>, GraphError> {
        let reply: Option<crate::record::Reply> = self
            .graph
            .query_opt(
                &format!("SELECT {REPLY_PROJECTION} FROM type::record('sentdm_inbound', $key) WHERE action_id = $action;"),
                json!({"key": id, "action": self.action_id}),
                0,
            )
            .await?;
        Ok(reply.map(crate::record::Reply::with_link))
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
    #[tracing::instrument(name = "outbox.insert", skip_all)]
    pub async fn emit(&self, outbox: &Value) -> Result<(), GraphError> {
        self.graph
            .query(INSERT_OUTBOX, json!({"outbox": [outbox]}))
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

    /// Take the lease that lets one replica at a time reconcile this action's webhook
    /// at SentDM, until `until_ms` (epoch ms). True when `holder` now has it: it was
    /// free, expired, or already `holder`'s. Two replicas asking at once conflict on
    /// the lease row, and the loser, run again, finds it taken.
    pub async fn take_reconcile_lease(
        &self,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, GraphError> {
        let out = self
            .graph
            .transaction(
                "BEGIN;
                 LET $cur = (SELECT holder, until_ms FROM type::record('sentdm_webhook_lease', $action))[0];
                 IF $cur = NONE OR $cur.until_ms < $now OR $cur.holder = $holder {
                     UPSERT type::record('sentdm_webhook_lease', $action) CONTENT { holder: $holder, until_ms: $until };
                     true
                 } ELSE { false };
                 COMMIT;",
                json!({"action": self.action_id, "holder": holder, "now": now_ms, "until": until_ms}),
            )
            .await?;
        Ok(out.iter().rev().find_map(Value::as_bool).unwrap_or(false))
    }

    /// Give the reconcile lease back, if `holder` still has it.
    pub async fn release_reconcile_lease(&self, holder: &str) -> Result<(), GraphError> {
        self.graph
            .query(
                "DELETE type::record('sentdm_webhook_lease', $action) WHERE holder = $holder;",
                json!({"action": self.action_id, "holder": holder}),
            )
            .await
            .map(|_| ())
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

/// The stored words of the statuses a record waits in for a webhook.
fn pending_words() -> Vec<&'static str> {
    MessageStatus::ALL
        .iter()
        .filter(|s| s.is_pending())
        .map(MessageStatus::lowercase)
        .collect()
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

#[cfg(test)]
mod tests {
    //! The fold against the real embedded engine: order, de-duplication, creation,
    //! siblings, the bounded log, and concurrent transactions on one record.
    use super::*;

    async fn graph() -> Graph {
        let g = Graph::memory().await.expect("graph");
        g.apply_schema("sentdm", SCHEMA).await.expect("schema");
        g.query(
            "DEFINE TABLE IF NOT EXISTS outbox_event SCHEMALESS; DEFINE TABLE IF NOT EXISTS webhook_subscription SCHEMALESS;
             CREATE webhook_subscription:s SET enabled = true; CREATE action:a; CREATE action:b;",
            Value::Null,
        )
        .await
        .expect("setup");
        g
    }

    fn scope(limit: usize) -> FoldScope {
        FoldScope {
            action_id: "a".into(),
            agent_id: "g".into(),
            limit,
        }
    }

    /// Event `key` for message `m` with `status` at time `t`.
    fn ev(key: &str, m: &str, status: Option<&str>, t: i64) -> FoldEvent {
        FoldEvent {
            key: key.into(),
            rid: record_key("a", m),
            message_id: m.into(),
            create_if_missing: true,
            status: status.map(MessageStatus::parse),
            t_ms: Some(t),
            occurred_at: Some(format!("t{t}")),
            error: status.filter(|s| *s == "failed").map(|_| RecordError {
                code: Some("DELIVERY_007".into()),
                reason: Some("unreachable".into()),
            }),
            entry: LogEntry {
                source: "webhook".into(),
                status: status.map(str::to_owned),
                event_id: Some(key.into()),
                ..LogEntry::default()
            },
            payload: json!({ "status": status }),
            to: Some("+14155550100".into()),
            channel: Some("sms".into()),
            template_id: None,
            template_name: None,
            outbox: Some(json!({ "id": format!("ob_{key}"), "event_type": "x" })),
        }
    }

    async fn record(g: &Graph, m: &str) -> Value {
        let rows = g
            .query(
                "SELECT * FROM type::record('sentdm_message', $rid);",
                json!({ "rid": record_key("a", m) }),
            )
            .await
            .expect("record");
        rows[0][0].clone()
    }

    fn outcome(o: &FoldOutcome) -> (&str, Option<&str>, bool) {
        (o.outcome.as_str(), o.status.as_deref(), o.changed)
    }

    /// The time the batch that last wrote message `m`'s record committed it.
    async fn updated_at(g: &Graph, m: &str) -> String {
        record(g, m).await["updated_at"]
            .as_str()
            .expect("updated_at")
            .to_owned()
    }

    #[tokio::test]
    async fn a_small_batch_lingers_for_more_events_only_when_asked() {
        // Two events for two records, the second sent 20 ms after the first, on one
        // writer. A batch stamps every record it updates with one `updated_at`.
        async fn fold_two(linger: Duration) -> (String, String) {
            let g = graph().await;
            // Existing records: an update stamps its batch's one `$now`.
            let queued = [
                ev("q1", "m1", Some("queued"), 0),
                ev("q2", "m2", Some("queued"), 0),
            ];
            apply_batch(&g, &scope(25), &queued).await.expect("records");
            let writer =
                FoldWriter::spawn(g.clone(), EventPublisher::default(), scope(25), 1, linger);
            let first = tokio::spawn({
                let w = writer.clone();
                async move { w.apply(ev("k1", "m1", Some("sent"), 1)).await }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            let second = writer
                .apply(ev("k2", "m2", Some("sent"), 2))
                .await
                .expect("second");
            let first = first.await.expect("task").expect("first");
            assert_eq!(
                (first.outcome.as_str(), second.outcome.as_str()),
                ("received", "received")
            );
            (updated_at(&g, "m1").await, updated_at(&g, "m2").await)
        }
        // Lingering 500 ms (far beyond the 20 ms gap): one batch, one commit.
        let (a, b) = fold_two(Duration::from_millis(500)).await;
        assert_eq!(a, b, "one batch");
        // Without: the first event commits on its own.
        let (a, b) = fold_two(Duration::ZERO).await;
        assert_ne!(a, b, "two batches");
    }

    #[tokio::test]
    async fn records_are_read_by_index_and_earlier_indexes_are_dropped() {
        // A graph an earlier version made: two more indexes on the message table.
        let g = Graph::memory().await.expect("graph");
        g.query(
            "DEFINE TABLE sentdm_message SCHEMALESS;
             DEFINE INDEX sentdm_message_action ON sentdm_message FIELDS action_id;
             DEFINE INDEX sentdm_message_agent ON sentdm_message FIELDS agent_id;",
            Value::Null,
        )
        .await
        .expect("old schema");
        for _ in 0..2 {
            g.apply_schema("sentdm", SCHEMA)
                .await
                .expect("schema applies, twice");
        }
        let info = g
            .query("INFO FOR TABLE sentdm_message;", Value::Null)
            .await
            .expect("info");
        let mut indexes: Vec<&String> = info[0]["indexes"]
            .as_object()
            .expect("indexes")
            .keys()
            .collect();
        indexes.sort();
        assert_eq!(indexes, ["sentdm_message_mid", "sentdm_message_status"]);

        // Every read of an action's records starts from the (action_id, status) index.
        let explain = |stmt: &str| format!("{} EXPLAIN;", stmt.trim().trim_end_matches(';'));
        let list = LIST_RECORDS.split_once(';').expect("two statements").0;
        let reads = [
            explain(list),
            explain(&STALE_RECORDS),
            explain(BROADCAST_FUNNEL),
        ];
        for read in &reads {
            let plan = g
                .query(read, json!({ "action": "a" }))
                .await
                .expect("explain");
            let plan = plan[0].to_string();
            assert!(
                plan.contains(r#""index":"sentdm_message_status""#) && !plan.contains("TableScan"),
                "{read}\n=> {plan}"
            );
        }
    }

    #[tokio::test]
    async fn a_batch_folds_in_order_with_duplicates_and_unknown_messages() {
        let g = graph().await;
        let mut unknown = ev("k4", "m2", Some("sent"), 4);
        unknown.create_if_missing = false;
        let events = [
            ev("k1", "m1", Some("queued"), 1),
            ev("k2", "m1", Some("delivered"), 2),
            ev("k1", "m1", Some("queued"), 1),
            ev("k3", "m1", Some("sent"), 3),
            unknown,
        ];
        let out = apply_batch(&g, &scope(25), &events).await.expect("fold");
        let got: Vec<_> = out.iter().map(outcome).collect();
        assert_eq!(
            got,
            [
                ("received", Some("queued"), true),
                ("received", Some("delivered"), true),
                ("duplicate", Some("delivered"), false),
                ("received", Some("delivered"), false),
                ("ignored", None, false),
            ]
        );
        assert_eq!(out[4].reason.as_deref(), Some("unknown_message"));
        let r = record(&g, "m1").await;
        assert_eq!(r["status"], "delivered");
        assert_eq!(r["event_count"], 3);
        assert_eq!(r["event_keys"], json!(["k1", "k2", "k3"]));
        assert_eq!(r["events"].as_array().map(Vec::len), Some(3));
        assert_eq!(r["minimal"], true);
        assert_eq!(r["to"], "+14155550100");
        // Linked to its action; one outbound event per status change, none for the rest.
        let more = g
            .query(
                "RETURN count(SELECT id FROM sentdm_tracks WHERE in = action:a); RETURN count(SELECT id FROM outbox_event); RETURN count(SELECT id FROM sentdm_message);",
                Value::Null,
            )
            .await
            .expect("counts");
        assert_eq!(more, vec![json!(1), json!(2), json!(1)]);
        // A later batch with the same events is all duplicates and writes nothing.
        let again = apply_batch(&g, &scope(25), &events[..4])
            .await
            .expect("again");
        assert!(again.iter().all(|o| o.outcome == "duplicate"), "{again:?}");
        assert_eq!(record(&g, "m1").await["event_count"], 3);
    }

    #[tokio::test]
    async fn status_never_regresses_and_a_failure_keeps_its_error() {
        let g = graph().await;
        let s = scope(25);
        for (key, status, t) in [
            ("k1", "delivered", 10),
            ("k2", "sent", 5),
            ("k3", "queued", 20),
        ] {
            apply_batch(&g, &s, &[ev(key, "m1", Some(status), t)])
                .await
                .expect("fold");
        }
        assert_eq!(record(&g, "m1").await["status"], "delivered");
        // A failure after delivery only counts when it happened later.
        let out = apply_batch(&g, &s, &[ev("k4", "m1", Some("failed"), 9)])
            .await
            .expect("fold");
        assert!(!out[0].changed);
        let out = apply_batch(&g, &s, &[ev("k5", "m1", Some("failed"), 30)])
            .await
            .expect("fold");
        assert!(out[0].changed);
        let r = record(&g, "m1").await;
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error"]["code"], "DELIVERY_007");
        assert_eq!(r["status_at_ms"], 30);
        assert_eq!(r["event_count"], 5, "every distinct event is logged");
        // A resend that later reaches the handset clears the error.
        apply_batch(&g, &s, &[ev("k6", "m1", Some("delivered"), 40)])
            .await
            .expect("fold");
        let r = record(&g, "m1").await;
        assert_eq!(r["status"], "delivered");
        assert!(r.get("error").is_none(), "{r}");
    }

    #[tokio::test]
    async fn the_log_keeps_the_newest_entries_within_the_limit() {
        let g = graph().await;
        let s = scope(3);
        let first: Vec<_> = (0..4)
            .map(|i| ev(&format!("k{i}"), "m1", None, i))
            .collect();
        apply_batch(&g, &s, &first)
            .await
            .expect("created over the limit");
        for i in 4..6 {
            apply_batch(&g, &s, &[ev(&format!("k{i}"), "m1", None, i)])
                .await
                .expect("fold");
        }
        let r = record(&g, "m1").await;
        let keys: Vec<_> = r["events"]
            .as_array()
            .expect("log")
            .iter()
            .map(|e| e["event_id"].clone())
            .collect();
        assert_eq!(keys, vec![json!("k3"), json!("k4"), json!("k5")]);
        assert_eq!(r["event_count"], 6);
        assert!(
            r.get("status").is_none(),
            "events without a status set none: {r}"
        );
    }

    #[tokio::test]
    async fn a_sibling_actions_message_is_not_taken_over() {
        let g = graph().await;
        g.query(
            "CREATE sentdm_message:b_m1 SET action_id = 'b', sentdm_message_id = 'm1', status = 'sent';",
            Value::Null,
        )
        .await
        .expect("sibling record");
        let out = apply_batch(&g, &scope(25), &[ev("k1", "m1", Some("delivered"), 1)])
            .await
            .expect("fold");
        assert_eq!(
            (out[0].outcome.as_str(), out[0].reason.as_deref()),
            ("ignored", Some("sibling_action"))
        );
        assert!(record(&g, "m1").await.is_null());
    }

    #[tokio::test]
    async fn an_unknown_recipient_is_filled_in_and_a_known_one_kept() {
        let g = graph().await;
        let s = scope(25);
        let mut first = ev("k1", "m1", Some("queued"), 1);
        (first.to, first.channel) = (None, None);
        apply_batch(&g, &s, &[first]).await.expect("fold");
        assert!(record(&g, "m1").await.get("to").is_none());
        apply_batch(&g, &s, &[ev("k2", "m1", None, 2)])
            .await
            .expect("fold");
        let mut other = ev("k3", "m1", Some("sent"), 3);
        other.to = Some("+15550000000".into());
        apply_batch(&g, &s, &[other]).await.expect("fold");
        let r = record(&g, "m1").await;
        assert_eq!(
            (r["to"].clone(), r["channel"].clone()),
            (json!("+14155550100"), json!("sms"))
        );
    }

    /// Invariant 3 without the writer's sharding: concurrent transactions folding into
    /// one record conflict at commit and are run again, so every event lands once.
    #[tokio::test]
    async fn concurrent_batches_on_one_record_lose_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let g = Graph::connect(
            &format!("surrealkv://{}", dir.path().join("g").display()),
            &graphagent::GraphOptions::default(),
        )
        .await
        .expect("graph");
        g.apply_schema("sentdm", SCHEMA).await.expect("schema");
        g.query(
            "DEFINE TABLE IF NOT EXISTS outbox_event SCHEMALESS; DEFINE TABLE IF NOT EXISTS webhook_subscription SCHEMALESS; CREATE action:a;",
            Value::Null,
        )
        .await
        .expect("setup");
        apply_batch(&g, &scope(1000), &[ev("k0", "m1", Some("queued"), 0)])
            .await
            .expect("seed");
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let g = g.clone();
                tokio::spawn(async move {
                    for b in 0..5 {
                        let events: Vec<_> = (0..4)
                            .map(|i| ev(&format!("w{w}b{b}i{i}"), "m1", None, 1))
                            .collect();
                        apply_batch(&g, &scope(1000), &events).await.expect("fold");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let r = record(&g, "m1").await;
        assert_eq!(r["event_count"], 161);
        assert_eq!(r["events"].as_array().map(Vec::len), Some(161));
        assert_eq!(r["event_keys"].as_array().map(Vec::len), Some(161));
    }
}
