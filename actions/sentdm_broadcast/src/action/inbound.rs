//! Turning a verified SentDM webhook body into what the action stores: every envelope
//! variant of CONTRACT §5.4–5.5 (`sub_type` or `event`, `message`/`messages`, nested
//! `message.*` / `data.*`, uppercase statuses, `"unknown"` placeholders). Pure functions.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Statuses the fold knows (lowercase, as stored).
pub const KNOWN_STATUSES: &[&str] = &[
    "accepted",
    "queued",
    "scheduled",
    "processed",
    "routed",
    "sent",
    "delivered",
    "read",
    "failed",
    "blocked",
    "filtered",
    "cancelled",
];

/// Rank of a status in the fold (CONTRACT §3.3): the positive ladder 1–6, -1 for the
/// negative terminals, 0 for absent or unknown (no status change).
pub fn status_rank(status: Option<&str>) -> i64 {
    match status {
        Some("accepted" | "queued" | "scheduled") => 1,
        Some("processed") => 2,
        Some("routed") => 3,
        Some("sent") => 4,
        Some("delivered") => 5,
        Some("read") => 6,
        Some("failed" | "blocked" | "filtered" | "cancelled") => -1,
        _ => 0,
    }
}

/// The fold rule (CONTRACT §3.3): does event status `new`, which happened at `t_new`
/// (unix ms), replace the current status `cur`, which happened at `cur_at`? Both
/// statuses lowercase; `None` or an unknown word ranks 0. A later time is only "later"
/// when both times are known.
pub fn advances(
    cur: Option<&str>,
    cur_at: Option<i64>,
    new: Option<&str>,
    t_new: Option<i64>,
) -> bool {
    let (rn, rc) = (status_rank(new), status_rank(cur));
    let later = matches!((t_new, cur_at), (Some(t), Some(c)) if t > c);
    if rn == 0 {
        // 2. unknown or absent: no status change.
        false
    } else if rc == 0 {
        // Nothing known yet (a record created from a webhook): take it.
        true
    } else if matches!(cur, Some("read" | "filtered" | "cancelled")) {
        // 3. final.
        false
    } else if cur == Some("accepted") && matches!(new, Some("queued" | "scheduled")) {
        // Same rank, but SentDM's own word for the step after our `accepted`.
        true
    } else if rn > 0 {
        // 4. positive: higher on the ladder, or a resend after a failure.
        if rc > 0 {
            rn > rc
        } else {
            matches!(cur, Some("blocked" | "failed")) && later
        }
    } else if new == cur {
        // 6. equal.
        false
    } else if rc <= 4 {
        // 5. negative over a positive status not yet delivered.
        rc > 0
    } else {
        // 5. a failure after delivery, when it happened later.
        cur == Some("delivered") && new == Some("failed") && later
    }
}

/// What a verified body turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A status change of an outbound message.
    Status(StatusEvent),
    /// An inbound reply from a contact (`message.received`): never a broadcast status.
    Reply(ReplyEvent),
    /// A body we verified but cannot use (reason for the counter and the log).
    Unusable(&'static str),
    /// A family we do not fold (e.g. `templates`).
    Other(String),
}

/// A status event of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusEvent {
    /// SentDM message id.
    pub message_id: String,
    /// Lowercase known status, or `None` when absent/unknown (logged, no status change).
    pub status: Option<String>,
    /// The status word as sent, for the audit log.
    pub raw_status: Option<String>,
    /// `sub_type` / `event`, e.g. `message.delivered`.
    pub sub_type: Option<String>,
    /// When the status changed: `payload.updated_at`, else the envelope timestamp.
    pub occurred_at: Option<String>,
    /// The same as unix milliseconds, for ordering.
    pub occurred_ms: Option<i64>,
    /// Recipient (never the `"unknown"` placeholder).
    pub to: Option<String>,
    /// Channel actually used (never `"unknown"`).
    pub channel: Option<String>,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    /// `reason_code` for failed / blocked / filtered.
    pub reason_code: Option<String>,
    /// `reason`.
    pub reason: Option<String>,
    /// The payload, kept on the record as `last_event_payload`.
    pub payload: Value,
}

/// An inbound reply.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = SentDmReplyEvent)]
pub struct ReplyEvent {
    /// SentDM id of the inbound message.
    pub message_id: String,
    /// The contact who wrote (E.164).
    pub from: Option<String>,
    /// Our number it was sent to.
    pub to: Option<String>,
    /// Channel.
    pub channel: Option<String>,
    /// Text of the reply.
    pub text: Option<String>,
    /// When it was received.
    pub received_at: Option<String>,
    /// SentDM id of the message it answers, when SentDM says.
    pub in_reply_to: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty() && !t.eq_ignore_ascii_case("unknown") && !t.eq_ignore_ascii_case("null"))
                .then(|| t.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// First present, non-placeholder string among `paths` (dotted) in `roots`.
fn pick(roots: &[&Value], paths: &[&str]) -> Option<String> {
    for path in paths {
        for root in roots {
            let mut v = *root;
            let mut found = true;
            for seg in path.split('.') {
                match v.get(seg) {
                    Some(next) => v = next,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            if found && let Some(s) = text(v) {
                return Some(s);
            }
        }
    }
    None
}

/// Lowercase known status from a word such as `DELIVERED` or `message.delivered`.
pub fn normalize_status(word: &str) -> Option<String> {
    let w = word.trim().rsplit('.').next()?.to_ascii_lowercase();
    let w = if w == "canceled" {
        "cancelled".to_owned()
    } else {
        w
    };
    KNOWN_STATUSES.contains(&w.as_str()).then_some(w)
}

/// Unix milliseconds of an ISO-8601 time as SentDM writes them (`Z` or `+00:00`, any
/// number of fractional digits, or none).
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    // RFC 3339 caps fractions at 9 digits in `time`; trim longer .NET fractions, and
    // accept a missing offset as UTC.
    let (main, offset) = split_offset(s);
    let main = match main.split_once('.') {
        Some((head, frac)) => format!("{head}.{}", &frac[..frac.len().min(9)]),
        None => main.to_owned(),
    };
    let offset = if offset.is_empty() { "Z" } else { offset };
    OffsetDateTime::parse(&format!("{main}{offset}"), &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn split_offset(s: &str) -> (&str, &str) {
    if let Some(stripped) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return (stripped, "Z");
    }
    // An offset is the last '+' or '-' after the 'T'.
    if let Some(t) = s.find('T')
        && let Some(pos) = s[t..].rfind(['+', '-'])
    {
        return (&s[..t + pos], &s[t + pos..]);
    }
    (s, "")
}

/// The envelope inside `body`, unwrapping `data` and the dashboard's `eventData` shapes.
fn envelope(body: &Value) -> &Value {
    if body.get("payload").is_some() || body.get("field").is_some() {
        return body;
    }
    for key in ["eventData", "data"] {
        if let Some(inner) = body.get(key)
            && (inner.get("payload").is_some() || inner.get("field").is_some())
        {
            return inner;
        }
    }
    body
}

/// Parse a verified body.
pub fn parse(body: &[u8]) -> Parsed {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Parsed::Unusable("body is not JSON");
    };
    let env = envelope(&json);
    if !env.is_object() {
        return Parsed::Unusable("body is not an envelope object");
    }
    let field = env
        .get("field")
        .and_then(Value::as_str)
        .map(|f| f.to_ascii_lowercase());
    // `sub_type` wins over the SDK's `event` (CONTRACT §5.4).
    let sub_type = pick(&[env], &["sub_type", "event", "type"]);
    let family = match (&field, &sub_type) {
        (Some(f), _) => f.clone(),
        (None, Some(st)) => st
            .split('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        (None, None) => String::new(),
    };
    if !(family == "message" || family == "messages") {
        return if family.is_empty() {
            Parsed::Unusable("envelope names no event family")
        } else {
            Parsed::Other(family)
        };
    }
    let payload = env.get("payload").unwrap_or(env);
    let roots = [
        payload,
        payload.get("message").unwrap_or(&Value::Null),
        payload.get("data").unwrap_or(&Value::Null),
    ];
    let Some(message_id) = pick(&roots, &["message_id", "id", "messageId"]) else {
        return Parsed::Unusable("no message id in the payload");
    };
    let raw_status = pick(&roots, &["message_status", "status"]);
    let status = raw_status
        .as_deref()
        .and_then(normalize_status)
        .or_else(|| sub_type.as_deref().and_then(normalize_status_of_subtype));
    let is_reply = status.is_none()
        && (raw_status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("received"))
            || sub_type
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("message.received")));
    if is_reply {
        return Parsed::Reply(ReplyEvent {
            message_id,
            // SDK: inbound_number = the contact; DOCS: from/to.
            from: pick(&roots, &["inbound_number", "from"]),
            to: pick(&roots, &["outbound_number", "to"]),
            channel: pick(&roots, &["channel"]),
            text: pick(&roots, &["text", "body", "content"]),
            received_at: pick(&roots, &["received_at", "updated_at"])
                .or_else(|| pick(&[env], &["timestamp"])),
            in_reply_to: pick(
                &roots,
                &["in_reply_to", "reply_to_message_id", "context.message_id"],
            ),
        });
    }
    let occurred_at = pick(&roots, &["updated_at"]).or_else(|| pick(&[env], &["timestamp"]));
    Parsed::Status(StatusEvent {
        occurred_ms: occurred_at.as_deref().and_then(parse_time_ms),
        occurred_at,
        message_id,
        status,
        raw_status,
        sub_type,
        to: pick(&roots, &["outbound_number", "to", "phone"]),
        channel: pick(&roots, &["channel"]),
        template_id: pick(&roots, &["template_id"]),
        template_name: pick(&roots, &["template_name"]),
        reason_code: pick(&roots, &["reason_code", "error.code", "error_code"]),
        reason: pick(&roots, &["reason", "error.message", "error_message"]),
        payload: payload.clone(),
    })
}

fn normalize_status_of_subtype(sub_type: &str) -> Option<String> {
    // Only `message.<status>` names a status; `message.received` is not one.
    sub_type
        .contains('.')
        .then(|| normalize_status(sub_type))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(body: Value) -> StatusEvent {
        match parse(body.to_string().as_bytes()) {
            Parsed::Status(s) => s,
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn fold_rule_follows_contract_3_3() {
        let a = |cur, new| advances(cur, Some(100), new, Some(200));
        // Up the ladder only.
        assert!(a(Some("accepted"), Some("queued")));
        assert!(a(Some("queued"), Some("sent")));
        assert!(a(Some("sent"), Some("delivered")));
        assert!(a(Some("delivered"), Some("read")));
        assert!(!a(Some("delivered"), Some("sent")), "never backwards");
        assert!(!a(Some("sent"), Some("queued")));
        assert!(
            !a(Some("sent"), Some("sent")),
            "equal status changes nothing"
        );
        // Unknown or absent never changes the status; anything replaces nothing.
        assert!(!a(Some("sent"), None));
        assert!(!a(Some("sent"), Some("exploded")));
        assert!(a(None, Some("delivered")));
        assert!(a(None, Some("failed")));
        // Final statuses.
        for fin in ["read", "filtered", "cancelled"] {
            assert!(!a(Some(fin), Some("failed")), "{fin} is final");
            assert!(!a(Some(fin), Some("read")), "{fin} is final");
        }
        // Negative over positive: up to and including sent.
        assert!(a(Some("queued"), Some("failed")));
        assert!(a(Some("sent"), Some("blocked")));
        assert!(a(Some("routed"), Some("filtered")));
        // After delivery only a later `failed`.
        assert!(a(Some("delivered"), Some("failed")));
        assert!(!advances(
            Some("delivered"),
            Some(300),
            Some("failed"),
            Some(200)
        ));
        assert!(!advances(
            Some("delivered"),
            None,
            Some("failed"),
            Some(200)
        ));
        assert!(!a(Some("delivered"), Some("blocked")));
        // A resend after a failure: any positive status, if later.
        assert!(a(Some("failed"), Some("queued")));
        assert!(a(Some("blocked"), Some("delivered")));
        assert!(!advances(
            Some("failed"),
            Some(300),
            Some("sent"),
            Some(200)
        ));
        assert!(!advances(Some("failed"), Some(100), Some("sent"), None));
        // Negative over negative: only a different one... which rule 5 does not allow.
        assert!(!a(Some("failed"), Some("failed")));
        assert!(!a(Some("failed"), Some("blocked")));
    }

    #[test]
    fn real_capture_with_unknown_placeholders() {
        let s = status(
            json!({"field":"message","sub_type":"message.queued","timestamp":"2026-05-14T18:49:14Z",
            "payload":{"account_id":"a","message_id":"f06","message_status":"QUEUED","channel":"unknown",
            "inbound_number":"unknown","outbound_number":"unknown","template_id":"t1"}}),
        );
        assert_eq!(s.message_id, "f06");
        assert_eq!(s.status.as_deref(), Some("queued"));
        assert_eq!(s.channel, None);
        assert_eq!(s.to, None);
        assert_eq!(s.template_id.as_deref(), Some("t1"));
        assert_eq!(s.occurred_at.as_deref(), Some("2026-05-14T18:49:14Z"));
        assert_eq!(s.occurred_ms, Some(1_778_784_554_000));
    }

    #[test]
    fn sdk_event_key_nested_message_and_lowercase() {
        let s = status(
            json!({"field":"messages","event":"message.failed","timestamp":"2026-05-14T18:49:21Z",
            "payload":{"message":{"id":"m9","status":"failed","channel":"whatsapp","to":"+14155551234"},
            "reason_code":"DELIVERY_007","reason":"not registered","updated_at":"2026-05-14T18:49:21.1234567+00:00"}}),
        );
        assert_eq!(s.message_id, "m9");
        assert_eq!(s.status.as_deref(), Some("failed"));
        assert_eq!(s.sub_type.as_deref(), Some("message.failed"));
        assert_eq!(s.reason_code.as_deref(), Some("DELIVERY_007"));
        assert_eq!(s.to.as_deref(), Some("+14155551234"));
        assert_eq!(s.occurred_ms, Some(1_778_784_561_123));
    }

    #[test]
    fn sub_type_wins_and_supplies_a_missing_status() {
        let s = status(
            json!({"field":"message","sub_type":"message.delivered","event":"message.sent",
            "payload":{"message_id":"m1"}}),
        );
        assert_eq!(s.sub_type.as_deref(), Some("message.delivered"));
        assert_eq!(s.status.as_deref(), Some("delivered"));
        let s = status(
            json!({"field":"message","payload":{"message_id":"m1","message_status":"unknown"}}),
        );
        assert_eq!(s.status, None);
        let s = status(
            json!({"data":{"field":"message","sub_type":"message.read","payload":{"message_id":"m2","message_status":"READ"}}}),
        );
        assert_eq!(s.status.as_deref(), Some("read"));
    }

    #[test]
    fn replies_are_not_statuses() {
        for body in [
            json!({"field":"message","sub_type":"message.received","timestamp":"2025-10-31T10:10:42Z",
                "payload":{"message_id":"in1","inbound_number":"+14155551234","outbound_number":"+14155550100","channel":"sms","text":"STOP"}}),
            json!({"field":"message","event":"message.received","payload":{"message_id":"in1","message_status":"RECEIVED","from":"+14155551234","to":"+14155550100","channel":"sms","text":"STOP"}}),
        ] {
            match parse(body.to_string().as_bytes()) {
                Parsed::Reply(r) => {
                    assert_eq!(r.message_id, "in1");
                    assert_eq!(r.from.as_deref(), Some("+14155551234"));
                    assert_eq!(r.to.as_deref(), Some("+14155550100"));
                    assert_eq!(r.text.as_deref(), Some("STOP"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unusable_and_other_families() {
        assert_eq!(parse(b"not json"), Parsed::Unusable("body is not JSON"));
        assert_eq!(
            parse(b"[1]"),
            Parsed::Unusable("body is not an envelope object")
        );
        assert_eq!(
            parse(br#"{"field":"message","payload":{"message_status":"SENT"}}"#),
            Parsed::Unusable("no message id in the payload")
        );
        assert_eq!(
            parse(br#"{"field":"templates","payload":{"template_id":"t","status":"APPROVED"}}"#),
            Parsed::Other("templates".into())
        );
    }

    #[test]
    fn ranks_follow_the_contract() {
        let ladder = ["queued", "processed", "routed", "sent", "delivered", "read"];
        for pair in ladder.windows(2) {
            assert!(
                status_rank(Some(pair[0])) < status_rank(Some(pair[1])),
                "{pair:?}"
            );
        }
        assert_eq!(status_rank(Some("accepted")), status_rank(Some("queued")));
        for s in ["failed", "blocked", "filtered", "cancelled"] {
            assert_eq!(status_rank(Some(s)), -1);
        }
        assert_eq!(status_rank(None), 0);
        assert_eq!(status_rank(Some("received")), 0);
        // Every known status has a rank.
        assert!(KNOWN_STATUSES.iter().all(|s| status_rank(Some(s)) != 0));
    }

    #[test]
    fn times_parse_leniently() {
        assert_eq!(
            parse_time_ms("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_time_ms("2026-01-01T00:00:00+00:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_time_ms("2026-01-01T00:00:00.58+00:00"),
            Some(1_767_225_600_580)
        );
        assert_eq!(
            parse_time_ms("2026-01-01T00:00:00.1234567890Z"),
            Some(1_767_225_600_123)
        );
        assert_eq!(
            parse_time_ms("2026-01-01T00:00:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
