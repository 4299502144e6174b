//! Records of a broadcast written while it is being sent: each SentDM answer's records
//! go, through a bounded queue, to a task that stores them in one transaction while the
//! next requests are in flight, so a broadcast takes SentDM's time, not SentDM's plus
//! the graph's (docs/decisions.md, "Sends persist while SentDM works").

use std::collections::HashSet;
use std::time::Duration;

use graphagent::graph::GraphError;
use graphagent::time::now_rfc3339;
use sentdm_client::model::{MessageStatus, SendRecipient};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::plan::BroadcastPlan;
use crate::record::{LogEntry, MessageRecord};
use crate::store::{self, Store};

/// Waits before each further try of what the graph refused while unavailable, once the
/// sends are done: about 3.5 s in all, the longest a graph outage can add to a send's
/// answer. What is still refused then is reported, and a retry of the send with the
/// same idempotency key stores it.
pub const DEFERRED_RETRY: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// The send-time fields every record of one broadcast shares.
pub struct RecordShape<'a> {
    pub action_id: &'a str,
    pub agent_id: &'a str,
    pub plan: &'a BroadcastPlan,
}

impl RecordShape<'_> {
    /// The records of one SentDM answer, its send entry first in each log.
    pub fn records(&self, recipients: &[SendRecipient]) -> Vec<MessageRecord> {
        let now = now_rfc3339();
        let plan = self.plan;
        let send = LogEntry {
            source: "send".into(),
            status: Some(MessageStatus::Accepted.lowercase().to_owned()),
            occurred_at: Some(now.clone()),
            broadcast_id: Some(plan.broadcast_id.clone()),
            ..LogEntry::default()
        };
        recipients
            .iter()
            .map(|r| MessageRecord {
                id: store::record_key(self.action_id, &r.message_id),
                sentdm_message_id: r.message_id.clone(),
                action_id: self.action_id.to_owned(),
                agent_id: Some(self.agent_id.to_owned()),
                broadcast_id: Some(plan.broadcast_id.clone()),
                to: Some(r.to.clone()),
                channel: r.channel.clone(),
                template_id: plan.template.id.clone(),
                template_name: plan.template.name.clone(),
                parameters: Some(plan.template.parameters.clone()),
                idempotency_key: plan.idempotency_key.clone(),
                profile_id: plan.sent_as_profile.clone(),
                sandbox: Some(plan.sandbox),
                status: Some(MessageStatus::Accepted),
                events: vec![send.clone()],
                event_count: Some(1),
                created_at: Some(now.clone()),
                updated_at: Some(now.clone()),
                ..MessageRecord::default()
            })
            .collect()
    }
}

/// What the persisting side did with a broadcast's records.
#[derive(Debug, Default)]
pub struct PersistReport {
    /// Keys of the records stored.
    pub stored: HashSet<String>,
    /// Records handed over but not stored.
    pub failed: usize,
    /// The last failure, for the answer (never the error's text: it may carry query
    /// details).
    pub error: Option<GraphError>,
}

/// The persisting side of one broadcast: a task that stores each answer's records as
/// they arrive. Dropping every [`Persister::sender`] clone ends the queue; [`finish`]
/// then waits for what is left.
///
/// [`finish`]: Persister::finish
pub struct Persister {
    tx: mpsc::Sender<Vec<MessageRecord>>,
    task: JoinHandle<PersistReport>,
}

impl Persister {
    /// Start the task for `broadcast_id`; at most `capacity` answers wait in the queue
    /// (a full queue holds the next SentDM request back: backpressure, not memory).
    /// The task owns what it was handed: a caller that goes away mid-send (a client
    /// disconnect) still gets every answer it received stored.
    pub fn spawn(store: Store, broadcast_id: String, limit: u32, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(run(store, broadcast_id, limit, rx));
        Self { tx, task }
    }

    /// The queue's sending side.
    pub fn sender(&self) -> &mpsc::Sender<Vec<MessageRecord>> {
        &self.tx
    }

    /// Close the queue and wait until every record handed over is stored or given up.
    pub async fn finish(self, handed_over: usize) -> PersistReport {
        drop(self.tx);
        match self.task.await {
            Ok(report) => report,
            // The task panicked or was cancelled with the runtime: nothing is known to
            // be stored.
            Err(e) => PersistReport {
                stored: HashSet::new(),
                failed: handed_over,
                error: Some(GraphError {
                    kind: graphagent::graph::GraphErrorKind::Unavailable,
                    message: format!("record writer stopped: {e}"),
                }),
            },
        }
    }
}

async fn run(
    store: Store,
    broadcast_id: String,
    limit: u32,
    mut rx: mpsc::Receiver<Vec<MessageRecord>>,
) -> PersistReport {
    let mut report = PersistReport::default();
    // Answers the graph refused while unavailable; at most one broadcast's records
    // (MAX_RECIPIENTS × channels), which its answer holds anyway.
    let mut deferred: Vec<Vec<MessageRecord>> = Vec::new();
    while let Some(records) = rx.recv().await {
        if !deferred.is_empty() {
            // The graph is refusing writes: keep the order of answers and try them
            // together once the sends are done, instead of holding the sends back.
            deferred.push(records);
            continue;
        }
        if let Err(records) = store_one(&store, &broadcast_id, limit, records, &mut report).await {
            deferred.extend(records);
        }
    }
    for wait in DEFERRED_RETRY {
        if deferred.is_empty() {
            break;
        }
        tokio::time::sleep(wait).await;
        let mut still = Vec::new();
        for records in deferred.drain(..) {
            if !still.is_empty() {
                still.push(records);
                continue;
            }
            if let Err(records) =
                store_one(&store, &broadcast_id, limit, records, &mut report).await
            {
                still.extend(records);
            }
        }
        deferred = still;
    }
    report.failed += deferred.iter().map(Vec::len).sum::<usize>();
    if report.failed > 0 {
        tracing::error!(broadcast.id = %broadcast_id, records = report.failed, "sent, but records could not be stored");
    }
    report
}

/// Store one answer's records. A failure the graph may recover from hands the records
/// back (`Err(Some)`) to be tried again; any other is final and counted.
async fn store_one(
    store: &Store,
    broadcast_id: &str,
    limit: u32,
    records: Vec<MessageRecord>,
    report: &mut PersistReport,
) -> Result<(), Option<Vec<MessageRecord>>> {
    match store.persist_records(broadcast_id, &records, limit).await {
        Ok(()) => {
            report.stored.extend(records.into_iter().map(|r| r.id));
            Ok(())
        }
        Err(e) => {
            tracing::warn!(broadcast.id = %broadcast_id, records = records.len(), error = %e, "records not stored yet");
            let again = e.is_unavailable();
            report.error = Some(e);
            if again {
                Err(Some(records))
            } else {
                report.failed += records.len();
                Err(None)
            }
        }
    }
}
