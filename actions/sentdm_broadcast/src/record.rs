//! The shapes the action keeps in the graph, each defined once: the `sentdm_message`
//! record (written by the send and the fold, read by the routes), its log entries and
//! error, the inbound reply, and the SurrealQL projection derived from the record.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use sentdm_client::model::MessageStatus;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// One message sent to one recipient on one channel, as stored (`sentdm_message`, key
/// `{action_id}_{sentdm_message_id}`) and as the API shows it. The fold's own
/// bookkeeping (`event_keys`, `status_at_ms`) is stored beside it, not part of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmRecord)]
pub struct MessageRecord {
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
    pub parameters: Option<BTreeMap<String, String>>,
    /// Idempotency key of the send request it came from.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// SentDM profile it was sent as.
    #[serde(default)]
    pub profile_id: Option<String>,
    /// Sent in sandbox mode.
    #[serde(default)]
    pub sandbox: Option<bool>,
    /// Current status, lowercase (never goes backwards).
    #[serde(default, with = "stored_status")]
    #[schema(value_type = Option<String>, example = "delivered")]
    pub status: Option<MessageStatus>,
    /// When the current status happened (SentDM's time).
    #[serde(default)]
    pub last_status_at: Option<String>,
    /// Why a failure became the status.
    #[serde(default)]
    pub error: Option<RecordError>,
    /// Bounded audit log, oldest first.
    #[serde(default)]
    pub events: Vec<LogEntry>,
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

/// SentDM's reason for a failure (`reason_code`, `reason`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmRecordError)]
pub struct RecordError {
    /// Stable code, e.g. `DELIVERY_007`.
    pub code: Option<String>,
    /// Human text.
    pub reason: Option<String>,
}

/// One entry of a record's audit log: the send, a webhook delivery or a refresh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmLogEntry)]
pub struct LogEntry {
    /// `send`, `webhook` or `refresh`.
    #[schema(example = "webhook")]
    pub source: String,
    /// The status word as SentDM sent it (`accepted` for the send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `message.delivered`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
    /// When it happened (SentDM's time; the send's own for the send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// When this action received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    /// SentDM's `x-webhook-event-id`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Failure code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The broadcast of a `send` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_id: Option<String>,
}

/// An inbound message (`message.received`) as stored (`sentdm_inbound`) and as the
/// `sentdm.message.received` event carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyRecord {
    pub action_id: String,
    pub agent_id: String,
    /// SentDM id of the inbound message.
    pub sentdm_message_id: String,
    /// The contact who wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Our number it was sent to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    /// SentDM id of the message it answers, when SentDM says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Key of the record it answers, when one is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers_record: Option<String>,
    pub created_at: String,
}

/// An inbound reply as the API shows it (`sentdm_inbound`), with the message it answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = SentDmReply)]
pub struct Reply {
    /// Reply id (a digest of the delivery).
    #[schema(example = "3f2a9c0d5b8e7f6a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b")]
    pub id: String,
    /// SentDM id of the inbound message.
    pub sentdm_message_id: String,
    /// The contact who wrote (E.164).
    #[serde(default)]
    pub from: Option<String>,
    /// Our number it was sent to.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    /// Text of the reply.
    #[serde(default)]
    pub text: Option<String>,
    /// When SentDM received it.
    #[serde(default)]
    pub received_at: Option<String>,
    /// SentDM id of the message it answers, when SentDM says.
    #[serde(default)]
    pub in_reply_to: Option<String>,
    /// Id of the record (`…/sentdm/broadcasts/{record_id}`) it answers, when one of this
    /// action's records is linked.
    #[serde(default)]
    pub answers_record: Option<String>,
    /// How `answers_record` was found: `in_reply_to` (SentDM named the message) or
    /// `latest_to_sender` (SentDM did not; our latest message to that number).
    #[serde(default)]
    #[schema(schema_with = link_schema)]
    pub link: Option<String>,
    /// When it was stored.
    pub created_at: String,
}

fn link_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::String,
            utoipa::openapi::schema::Type::Null,
        ]))
        .enum_values(Some(["in_reply_to", "latest_to_sender"]))
        .description(Some("How `answers_record` was found."))
        .build()
}

impl Reply {
    /// `link` from what the stored node holds (the edge is only made to a record that
    /// exists, so `answers_record` is read through it).
    pub(crate) fn with_link(mut self) -> Self {
        self.link = match (&self.answers_record, &self.in_reply_to) {
            (None, _) => None,
            (Some(_), Some(_)) => Some("in_reply_to".into()),
            (Some(_), None) => Some("latest_to_sender".into()),
        };
        self
    }
}

/// Statuses are kept as lowercase words in the graph (the client's wire form is
/// uppercase); any case reads back.
mod stored_status {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        status: &Option<MessageStatus>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        status.as_ref().map(MessageStatus::lowercase).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MessageStatus>, D::Error> {
        Option::<MessageStatus>::deserialize(d)
    }
}

/// The SurrealQL projection of a [`MessageRecord`]: its fields by name, the id as its
/// key. Derived from the struct, so a new field is read wherever records are.
pub static RECORD_PROJECTION: LazyLock<String> = LazyLock::new(|| {
    field_names::<MessageRecord>()
        .iter()
        .map(|f| match *f {
            "id" => "record::id(id) AS id".to_owned(),
            f => f.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
});

/// The field names a struct deserializes (serde's own list, renames applied): asked of
/// its `Deserialize` impl by a deserializer that only records what it is asked for.
pub fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_names_every_field_once_and_the_id_as_its_key() {
        let fields = field_names::<MessageRecord>();
        let value = serde_json::to_value(MessageRecord::default()).expect("json");
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = fields.to_vec();
        sorted.sort_unstable();
        keys.sort_unstable();
        assert_eq!(sorted, keys, "every serialized field is read back");
        assert!(RECORD_PROJECTION.starts_with("record::id(id) AS id, sentdm_message_id,"));
        assert!(!RECORD_PROJECTION.contains("event_keys"));
        assert!(field_names::<String>().is_empty());
    }

    #[test]
    fn statuses_are_stored_lowercase_and_read_in_any_case() {
        let r = MessageRecord {
            status: Some(MessageStatus::Delivered),
            ..MessageRecord::default()
        };
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["status"], "delivered");
        let back: MessageRecord = serde_json::from_value(
            serde_json::json!({"id": "a_m", "sentdm_message_id": "m", "action_id": "a", "status": "READ"}),
        )
        .expect("reads");
        assert_eq!(back.status, Some(MessageStatus::Read));
    }
}
