//! Outbound events the action emits (the host's webhook outbox re-publishes them to
//! subscribers), each written in the same transaction as the change it reports.

use graphagent::plugin::EventType;
use sentdm_client::model::MessageStatus;
use serde_json::json;

/// The outbound event for a message that reached `status`, if that status has one:
/// the milestones a subscriber acts on. Every failure (`blocked`, `filtered`,
/// `cancelled` too) is reported as `failed`, with the real status in `data.status`.
pub fn message_event_type(status: &MessageStatus) -> Option<&'static str> {
    if status.is_failure() {
        return Some("sentdm.message.failed");
    }
    Some(match status {
        MessageStatus::Queued => "sentdm.message.queued",
        MessageStatus::Sent => "sentdm.message.sent",
        MessageStatus::Delivered => "sentdm.message.delivered",
        MessageStatus::Read => "sentdm.message.read",
        _ => return None,
    })
}

/// The catalogue entries of this action type.
pub fn event_types() -> Vec<EventType> {
    let message = |status: MessageStatus| {
        json!({
            "action_id": "act_0c9d2e7f1b3a4c5d6e7f", "agent_id": "agt_6f1c0e5ab2d94c7e1a33",
            "record_id": "act_0c9d2e7f1b3a4c5d6e7f_8ba7b830-9dad-11d1-80b4-00c04fd430c8",
            "sentdm_message_id": "8ba7b830-9dad-11d1-80b4-00c04fd430c8",
            "to": "+14155551234", "channel": "sms", "status": status.lowercase(),
            "occurred_at": "2026-05-14T18:49:20Z", "source": "webhook"
        })
    };
    let mut failed = message(MessageStatus::Failed);
    failed["error"] = json!({"code": "DELIVERY_007", "reason": "The recipient is not registered on this channel"});
    vec![
        EventType::new(
            "sentdm.broadcast.accepted",
            "SentDM accepted a broadcast (one send_broadcast call); its messages' events follow.",
            json!({"action_id": "act_0c9d2e7f1b3a4c5d6e7f", "broadcast_id": "bc_0192f1c3a7d87b2e9c1f4a5b6c7d8e9f",
                   "messages": 2, "recipients": ["+14155551234"], "channels": ["sms", "whatsapp"],
                   "template_id": "7ba7b820-9dad-11d1-80b4-00c04fd430c8", "template_name": null}),
        ),
        EventType::new(
            "sentdm.message.queued",
            "SentDM queued a message.",
            message(MessageStatus::Queued),
        ),
        EventType::new(
            "sentdm.message.sent",
            "A message was handed to the carrier or channel.",
            message(MessageStatus::Sent),
        ),
        EventType::new(
            "sentdm.message.delivered",
            "A message reached the recipient.",
            message(MessageStatus::Delivered),
        ),
        EventType::new(
            "sentdm.message.read",
            "The recipient read the message (WhatsApp, RCS).",
            message(MessageStatus::Read),
        ),
        EventType::new(
            "sentdm.message.failed",
            "A message failed, or was blocked, filtered or cancelled (`status` says which, `error` why).",
            failed,
        ),
        EventType::new(
            "sentdm.message.received",
            "An inbound message (a reply) arrived from a contact.",
            json!({"action_id": "act_0c9d2e7f1b3a4c5d6e7f", "sentdm_message_id": "0c1d2e3f-0000-4000-8000-000000000000",
                   "from": "+14155551234", "to": "+14155550100", "channel": "sms", "text": "STOP",
                   "received_at": "2025-10-31T10:10:40Z",
                   "answers_record": "act_0c9d2e7f1b3a4c5d6e7f_8ba7b830-9dad-11d1-80b4-00c04fd430c8"}),
        ),
        EventType::new(
            "sentdm.webhook.reconciled",
            "The action checked its webhook at SentDM (and fixed it when needed).",
            json!({"action_id": "act_0c9d2e7f1b3a4c5d6e7f", "outcome": "kept", "webhook_id": "d4f5a6b7-c8d9-4e0f-a1b2-c3d4e5f6a7b8",
                   "changes": 0, "deleted": []}),
        ),
        EventType::new(
            "sentdm.webhook.reconcile_failed",
            "Reconciling the action's webhook at SentDM failed; deliveries may not arrive.",
            json!({"action_id": "act_0c9d2e7f1b3a4c5d6e7f", "reason": "listing webhooks: SentDM: SERVICE_001: unavailable"}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_emitted_type_is_catalogued() {
        let names: Vec<String> = event_types().into_iter().map(|t| t.name).collect();
        let mut emitting = Vec::new();
        for s in MessageStatus::ALL {
            if let Some(t) = message_event_type(s) {
                assert!(names.iter().any(|n| n == t), "{t}");
                emitting.push(s.lowercase());
            }
        }
        assert_eq!(
            emitting,
            [
                "queued",
                "sent",
                "delivered",
                "read",
                "failed",
                "blocked",
                "filtered",
                "cancelled"
            ]
        );
        assert_eq!(
            message_event_type(&MessageStatus::Other("exploded".into())),
            None
        );
    }
}
