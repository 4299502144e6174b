//! The action's Prometheus metrics (names in `docs/metrics.md`): what the receiver answered,
//! fold batches, and the records-by-status gauge recounted from the graph on an interval.
//! Recorded through the `metrics` facade, so they cost nothing until a host installs a
//! recorder; the hot files call in here with one line each.

use std::time::{Duration, Instant};

use sentdm_client::model::MessageStatus;
use serde_json::{Value, json};

use crate::SentDmBroadcast;
use crate::webhook::{WebhookAck, WebhookRejection};

/// Counts one answered delivery by outcome (`received`, `duplicate`, `ignored`,
/// `unauthorized`, `no_secret`, `storage_error`); a label from a fixed set, never from
/// the body.
pub(crate) fn inbound(result: &Result<WebhookAck, WebhookRejection>) {
    let outcome = match result {
        Ok(ack) => match ack.status.as_str() {
            "received" => "received",
            "duplicate" => "duplicate",
            _ => "ignored",
        },
        Err(WebhookRejection::Unauthorized(_)) => "unauthorized",
        Err(WebhookRejection::NoSecret) => "no_secret",
        Err(WebhookRejection::Storage(_)) => "storage_error",
    };
    metrics::counter!("graphagent_sentdm_inbound_deliveries_total", "outcome" => outcome)
        .increment(1);
}

/// Times one fold batch (read, rule, write, commit, conflict re-runs) and records its
/// size and duration when dropped, whatever the result.
pub(crate) struct FoldTimer {
    events: usize,
    started: Instant,
}

impl FoldTimer {
    pub(crate) fn start(events: usize) -> Self {
        Self {
            events,
            started: Instant::now(),
        }
    }
}

impl Drop for FoldTimer {
    fn drop(&mut self) {
        // usize → f64 is exact for any batch size the writer can hold.
        metrics::histogram!("graphagent_sentdm_fold_batch_size").record(self.events as f64);
        metrics::histogram!("graphagent_sentdm_fold_duration_seconds")
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// The label for a stored status: a word `MessageStatus` knows, else `other` (a stored
/// word is provider input; the label set stays fixed).
fn status_label(word: &str) -> &'static str {
    MessageStatus::ALL
        .iter()
        .find(|s| s.lowercase() == word)
        .map_or("other", |s| match s {
            MessageStatus::Accepted => "accepted",
            MessageStatus::Queued => "queued",
            MessageStatus::Scheduled => "scheduled",
            MessageStatus::Processed => "processed",
            MessageStatus::Routed => "routed",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
            MessageStatus::Blocked => "blocked",
            MessageStatus::Filtered => "filtered",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Received => "received",
            MessageStatus::Other(_) => "other",
        })
}

/// Every label value [`status_label`] can give, so a refresh can zero the ones that
/// emptied.
fn all_labels() -> impl Iterator<Item = &'static str> {
    MessageStatus::ALL
        .iter()
        .map(|s| status_label(s.lowercase()))
        .chain(["other"])
}

/// Sets `graphagent_sentdm_records{action_id, status}` from one grouped count per status.
pub(crate) fn set_records(action_id: &str, rows: &[Value]) {
    let mut counts: Vec<(&'static str, f64)> = all_labels().map(|l| (l, 0.0)).collect();
    for row in rows {
        let label = status_label(row["status"].as_str().unwrap_or(""));
        let n = row["n"].as_f64().unwrap_or(0.0);
        if let Some(slot) = counts.iter_mut().find(|(l, _)| *l == label) {
            slot.1 += n;
        }
    }
    for (status, n) in counts {
        metrics::gauge!("graphagent_sentdm_records", "action_id" => action_id.to_owned(), "status" => status)
            .set(n);
    }
}

/// Recounts the action's records every `metrics_refresh_seconds` until it stops: one
/// indexed, grouped count, so a scrape never waits on the graph.
pub(crate) fn spawn_records_gauge(action: &SentDmBroadcast) {
    let every = action.config.metrics_refresh_seconds;
    if every == 0 {
        return;
    }
    let stop = action.stop.clone();
    let graph = action.ctx.graph.clone();
    let id = action.ctx.action_id.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let counted = graph
                .query(
                    "SELECT status, count() AS n FROM sentdm_message WHERE action_id = $action GROUP BY status;",
                    json!({"action": id}),
                )
                .await;
            match counted {
                Ok(out) => {
                    let rows = out
                        .first()
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    set_records(&id, &rows);
                }
                Err(e) => {
                    tracing::warn!(action.id = %id, error = %e, "could not count records for metrics")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_a_fixed_set() {
        assert_eq!(status_label("delivered"), "delivered");
        assert_eq!(status_label("DELIVERED"), "other");
        assert_eq!(status_label("+14155551234"), "other");
        let labels: Vec<_> = all_labels().collect();
        assert_eq!(labels.len(), MessageStatus::ALL.len() + 1);
        for s in MessageStatus::ALL {
            assert_eq!(status_label(s.lowercase()), s.lowercase());
        }
    }
}
