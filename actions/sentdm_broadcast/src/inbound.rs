//! Turning a verified SentDM webhook body into what the action stores: every envelope
//! variant of CONTRACT §5.4–5.5 (`sub_type` or `event`, `message`/`messages`, nested
//! `message.*` / `data.*`, uppercase statuses, `"unknown"` placeholders). Pure functions.
//!
//! **Security Invariant.** A verified body is still untrusted in shape: everything taken
//! from it is bounded here ([`Bounds`]) before it can reach the graph, so no delivery can
//! make a record grow without bound or nest deeper than the store can take.

use sentdm_client::model::MessageStatus;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The fold rule (CONTRACT §3.3): does event status `new`, which happened at `t_new`
/// (unix ms), replace the current status `cur`, which happened at `cur_at`? `None` or
/// an unranked status ([`MessageStatus::rank`] 0) is "nothing known". A later time is
/// only "later" when both times are known.
pub fn advances(
    cur: Option<&MessageStatus>,
    cur_at: Option<i64>,
    new: Option<&MessageStatus>,
    t_new: Option<i64>,
) -> bool {
    let rank = |s: Option<&MessageStatus>| s.map_or(0, MessageStatus::rank);
    let (rn, rc) = (rank(new), rank(cur));
    let later = matches!((t_new, cur_at), (Some(t), Some(c)) if t > c);
    let (Some(cur), Some(new)) = (cur.filter(|_| rc != 0), new.filter(|_| rn != 0)) else {
        // 2. unknown or absent: no status change; nothing known yet (a record created
        // from a webhook): take any known status.
        return rn != 0;
    };
    if cur.is_final() {
        // 3. final.
        false
    } else if *cur == MessageStatus::Accepted
        && matches!(new, MessageStatus::Queued | MessageStatus::Scheduled)
    {
        // Same rank, but SentDM's own word for the step after our `accepted`.
        true
    } else if rn > 0 {
        // 4. positive: higher on the ladder, or a resend after a failure.
        if rc > 0 {
            rn > rc
        } else {
            cur.is_resendable() && later
        }
    } else if new == cur {
        // 6. equal.
        false
    } else if rc <= MessageStatus::Sent.rank() {
        // 5. negative over a positive status not yet delivered.
        rc > 0
    } else {
        // 5. a failure after delivery, when it happened later.
        *cur == MessageStatus::Delivered && *new == MessageStatus::Failed && later
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
    /// A status the fold ranks, or `None` when absent/unknown (logged, no status change).
    pub status: Option<MessageStatus>,
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
    /// The payload, bounded by [`bounded_payload`]: kept on the record as
    /// `last_event_payload`.
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

/// What a delivery may put in the graph (docs/decisions.md, "Provider payload bounds").
pub struct Bounds;

impl Bounds {
    /// Longest SentDM message id accepted (SentDM's are 36-character UUIDs); it becomes
    /// part of a record key.
    pub const MESSAGE_ID_CHARS: usize = 128;
    /// Longest text field kept (reply text, failure reason); SentDM caps bodies at 3,072.
    pub const TEXT_CHARS: usize = 4096;
    /// Longest short field kept (status, channel, numbers, template ids, times).
    pub const SHORT_CHARS: usize = 256;
    /// `last_event_payload` is stored as JSON only within these; otherwise a bounded
    /// summary is stored instead (a real payload is about 1 KB, two levels deep).
    pub const PAYLOAD_BYTES: usize = 16 * 1024;
    /// See [`Bounds::PAYLOAD_BYTES`].
    pub const PAYLOAD_DEPTH: usize = 8;
    /// See [`Bounds::PAYLOAD_BYTES`]: object members and array items, all levels.
    pub const PAYLOAD_NODES: usize = 512;
    /// Characters of a payload kept as a preview when it is too large to store whole.
    pub const PREVIEW_CHARS: usize = 2048;
}

/// `s` cut to at most `max` characters (never inside a character).
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty() && !t.eq_ignore_ascii_case("unknown") && !t.eq_ignore_ascii_case("null"))
                .then(|| truncate_chars(t, Bounds::TEXT_CHARS).to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// [`pick`] for short fields: cut to [`Bounds::SHORT_CHARS`].
fn pick_short(roots: &[&Value], paths: &[&str]) -> Option<String> {
    pick(roots, paths).map(|s| truncate_chars(&s, Bounds::SHORT_CHARS).to_owned())
}

/// A message id we can key a record by: printable ASCII without spaces, bounded.
pub fn valid_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= Bounds::MESSAGE_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The payload as it may be stored: itself when small and shallow, otherwise a flat
/// summary `{truncated, reason, bytes, preview}` (a string preview cannot nest).
pub fn bounded_payload(payload: &Value) -> Value {
    let (depth, nodes) = shape(payload);
    let reason = if depth > Bounds::PAYLOAD_DEPTH {
        format!(
            "nested {depth} levels deep (at most {})",
            Bounds::PAYLOAD_DEPTH
        )
    } else if nodes > Bounds::PAYLOAD_NODES {
        format!("{nodes} members (at most {})", Bounds::PAYLOAD_NODES)
    } else {
        match serde_json::to_string(payload) {
            Ok(text) if text.len() <= Bounds::PAYLOAD_BYTES => return payload.clone(),
            Ok(text) => format!("{} bytes (at most {})", text.len(), Bounds::PAYLOAD_BYTES),
            Err(_) => "not serialisable".to_owned(),
        }
    };
    let text = serde_json::to_string(payload).unwrap_or_default();
    serde_json::json!({
        "truncated": true,
        "reason": reason,
        "bytes": text.len(),
        "preview": truncate_chars(&text, Bounds::PREVIEW_CHARS),
    })
}

/// Depth and member count of a JSON value, without recursion (the value came from a
/// peer; depth is exactly what is being measured).
fn shape(v: &Value) -> (usize, usize) {
    let (mut max_depth, mut nodes) = (0, 0);
    let mut stack = vec![(v, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        max_depth = max_depth.max(depth);
        match v {
            Value::Object(map) => {
                nodes += map.len();
                stack.extend(map.values().map(|c| (c, depth + 1)));
            }
            Value::Array(items) => {
                nodes += items.len();
                stack.extend(items.iter().map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    (max_depth, nodes)
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

/// The status the fold ranks from a word such as `DELIVERED` or `message.delivered`.
pub fn normalize_status(word: &str) -> Option<MessageStatus> {
    MessageStatus::known(word.trim().rsplit('.').next()?).filter(MessageStatus::is_ranked)
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
        // By characters: a peer's "fraction" may hold anything, multibyte included.
        Some((head, frac)) => format!("{head}.{}", truncate_chars(frac, 9)),
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
    let sub_type = pick_short(&[env], &["sub_type", "event", "type"]);
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
            Parsed::Other(truncate_chars(&family, 64).to_owned())
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
    if !valid_message_id(&message_id) {
        return Parsed::Unusable(
            "the message id is not a SentDM id (printable, at most 128 characters)",
        );
    }
    let raw_status = pick_short(&roots, &["message_status", "status"]);
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
            from: pick_short(&roots, &["inbound_number", "from"]),
            to: pick_short(&roots, &["outbound_number", "to"]),
            channel: pick_short(&roots, &["channel"]),
            text: pick(&roots, &["text", "body", "content"]),
            received_at: pick_short(&roots, &["received_at", "updated_at"])
                .or_else(|| pick_short(&[env], &["timestamp"])),
            in_reply_to: pick(
                &roots,
                &["in_reply_to", "reply_to_message_id", "context.message_id"],
            )
            .filter(|id| valid_message_id(id)),
        });
    }
    let occurred_at =
        pick_short(&roots, &["updated_at"]).or_else(|| pick_short(&[env], &["timestamp"]));
    Parsed::Status(StatusEvent {
        occurred_ms: occurred_at.as_deref().and_then(parse_time_ms),
        occurred_at,
        message_id,
        status,
        raw_status,
        sub_type,
        to: pick_short(&roots, &["outbound_number", "to", "phone"]),
        channel: pick_short(&roots, &["channel"]),
        template_id: pick_short(&roots, &["template_id"]),
        template_name: pick_short(&roots, &["template_name"]),
        reason_code: pick_short(&roots, &["reason_code", "error.code", "error_code"]),
        reason: pick(&roots, &["reason", "error.message", "error_message"]),
        payload: bounded_payload(payload),
    })
}

fn normalize_status_of_subtype(sub_type: &str) -> Option<MessageStatus> {
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

    /// The rule on status words, as SentDM and the tests spell them.
    fn advances_w(
        cur: Option<&str>,
        cur_at: Option<i64>,
        new: Option<&str>,
        t: Option<i64>,
    ) -> bool {
        let parse = |w: Option<&str>| w.map(MessageStatus::parse);
        advances(parse(cur).as_ref(), cur_at, parse(new).as_ref(), t)
    }

    fn rank(word: Option<&str>) -> i8 {
        word.map_or(0, |w| MessageStatus::parse(w).rank())
    }

    fn status(body: Value) -> StatusEvent {
        match parse(body.to_string().as_bytes()) {
            Parsed::Status(s) => s,
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn fold_rule_follows_contract_3_3() {
        let a = |cur, new| advances_w(cur, Some(100), new, Some(200));
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
        assert!(!advances_w(
            Some("delivered"),
            Some(300),
            Some("failed"),
            Some(200)
        ));
        assert!(!advances_w(
            Some("delivered"),
            None,
            Some("failed"),
            Some(200)
        ));
        assert!(!a(Some("delivered"), Some("blocked")));
        // A resend after a failure: any positive status, if later.
        assert!(a(Some("failed"), Some("queued")));
        assert!(a(Some("blocked"), Some("delivered")));
        assert!(!advances_w(
            Some("failed"),
            Some(300),
            Some("sent"),
            Some(200)
        ));
        assert!(!advances_w(Some("failed"), Some(100), Some("sent"), None));
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
        assert_eq!(
            s.status.as_ref().map(MessageStatus::lowercase),
            Some("queued")
        );
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
        assert_eq!(
            s.status.as_ref().map(MessageStatus::lowercase),
            Some("failed")
        );
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
        assert_eq!(
            s.status.as_ref().map(MessageStatus::lowercase),
            Some("delivered")
        );
        let s = status(
            json!({"field":"message","payload":{"message_id":"m1","message_status":"unknown"}}),
        );
        assert_eq!(s.status, None);
        let s = status(
            json!({"data":{"field":"message","sub_type":"message.read","payload":{"message_id":"m2","message_status":"READ"}}}),
        );
        assert_eq!(
            s.status.as_ref().map(MessageStatus::lowercase),
            Some("read")
        );
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
    fn only_ranked_statuses_are_folded() {
        assert_eq!(
            normalize_status("message.delivered"),
            Some(MessageStatus::Delivered)
        );
        assert_eq!(
            normalize_status(" CANCELED"),
            Some(MessageStatus::Cancelled)
        );
        assert_eq!(
            normalize_status("message.received"),
            None,
            "a reply, not a step"
        );
        assert_eq!(normalize_status("exploded"), None);
        for s in MessageStatus::ALL.iter().filter(|s| s.is_ranked()) {
            assert_eq!(normalize_status(s.as_str()).as_ref(), Some(s));
        }
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

    #[test]
    fn a_multibyte_fraction_is_no_panic() {
        // Sliced by bytes, the 9-byte cut would land inside `é`.
        assert_eq!(parse_time_ms("2026-01-01T00:00:00.12345678é9Z"), None);
        assert_eq!(parse_time_ms("2026-01-01T00:00:00.ééééééééééZ"), None);
        assert_eq!(parse_time_ms("2026-01-01T00:00:00.€"), None);
    }

    #[test]
    fn truncation_is_by_characters() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("héllo", 10), "héllo");
        assert_eq!(truncate_chars("", 3), "");
        assert_eq!(truncate_chars("€€€", 0), "");
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!("leaf"), |inner, _| json!({ "n": inner }))
    }

    #[test]
    fn payloads_are_stored_whole_only_within_bounds() {
        let small = json!({"message_id": "m1", "message_status": "SENT", "body": "hi"});
        assert_eq!(bounded_payload(&small), small);
        let at_limit = nested(Bounds::PAYLOAD_DEPTH - 1);
        assert_eq!(bounded_payload(&at_limit), at_limit);
        for (what, payload) in [
            ("deep", nested(60)),
            (
                "deep arrays",
                (0..100).fold(json!(1), |inner, _| json!([inner])),
            ),
            ("large", json!({"body": "x".repeat(900_000)})),
            ("wide", json!((0..2000).collect::<Vec<_>>())),
        ] {
            let stored = bounded_payload(&payload);
            assert_eq!(stored["truncated"], true, "{what}");
            assert!(shape(&stored).0 <= 2, "{what}: the summary is flat");
            let text = serde_json::to_string(&stored).expect("json");
            assert!(
                text.len() < 4 * Bounds::PREVIEW_CHARS + 200,
                "{what}: {}",
                text.len()
            );
        }
    }

    #[test]
    fn hostile_but_signed_bodies_are_unusable_or_bounded() {
        let long_id = "m".repeat(20_000);
        let body = json!({"field": "message", "payload": {"message_id": long_id, "message_status": "SENT"}});
        assert!(matches!(
            parse(body.to_string().as_bytes()),
            Parsed::Unusable(_)
        ));
        let body = json!({"field": "message", "payload": {"message_id": "has space", "message_status": "SENT"}});
        assert!(matches!(
            parse(body.to_string().as_bytes()),
            Parsed::Unusable(_)
        ));
        let body = json!({"field": "message", "sub_type": "message.failed", "payload": {
            "message_id": "m1", "message_status": "FAILED", "reason": "r".repeat(100_000),
            "channel": "c".repeat(10_000), "deep": nested(60)}});
        let s = status(body);
        assert_eq!(
            s.reason.map(|r| r.chars().count()),
            Some(Bounds::TEXT_CHARS)
        );
        assert_eq!(
            s.channel.map(|c| c.chars().count()),
            Some(Bounds::SHORT_CHARS)
        );
        assert_eq!(s.payload["truncated"], true);
        let family = "f".repeat(10_000);
        match parse(
            json!({ "field": family, "payload": {} })
                .to_string()
                .as_bytes(),
        ) {
            Parsed::Other(f) => assert_eq!(f.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    mod properties {
        //! Whatever a peer sends, parsing neither panics nor lets anything unbounded
        //! through; the fold rule keeps its promises for every pair of statuses.
        use super::super::*;
        use super::{advances_w, rank};
        use proptest::prelude::*;
        use serde_json::json;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                ".{0,40}".prop_map(Value::String),
                prop::sample::select(vec![
                    "SENT",
                    "delivered",
                    "message.read",
                    "unknown",
                    "message",
                    "templates",
                    "2026-01-01T00:00:00.123+02:00",
                    "+14155551234",
                ])
                .prop_map(|s| json!(s)),
            ];
            leaf.prop_recursive(12, 256, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop::sample::select(vec![
                            "field",
                            "sub_type",
                            "event",
                            "type",
                            "payload",
                            "message",
                            "data",
                            "eventData",
                            "message_id",
                            "id",
                            "message_status",
                            "status",
                            "updated_at",
                            "timestamp",
                            "channel",
                            "to",
                            "reason",
                            "text",
                            "error",
                            "code",
                            "context",
                        ])
                        .prop_map(str::to_owned),
                        inner,
                        0..8,
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Every documented word, and one SentDM might add.
        fn statuses() -> impl Strategy<Value = Option<&'static str>> {
            let words: Vec<&'static str> = MessageStatus::ALL
                .iter()
                .map(MessageStatus::lowercase)
                .chain(["exploded"])
                .collect();
            prop::option::of(prop::sample::select(words))
        }

        fn check_bounded(parsed: &Parsed) {
            if let Parsed::Status(s) = parsed {
                assert!(valid_message_id(&s.message_id));
                for short in [
                    &s.raw_status,
                    &s.sub_type,
                    &s.to,
                    &s.channel,
                    &s.occurred_at,
                ] {
                    assert!(
                        short
                            .as_ref()
                            .is_none_or(|v| v.chars().count() <= Bounds::SHORT_CHARS)
                    );
                }
                assert!(
                    s.reason
                        .as_ref()
                        .is_none_or(|v| v.chars().count() <= Bounds::TEXT_CHARS)
                );
                let text = serde_json::to_string(&s.payload).unwrap_or_default();
                assert!(text.len() <= Bounds::PAYLOAD_BYTES.max(4 * Bounds::PREVIEW_CHARS + 200));
            }
        }

        proptest! {
            #[test]
            fn parse_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
                check_bounded(&parse(&body));
            }

            #[test]
            fn parse_never_panics_on_json(v in json_value()) {
                check_bounded(&parse(v.to_string().as_bytes()));
                // The same value as a full envelope, so the message paths are reached.
                let env = json!({"field": "message", "payload": v});
                check_bounded(&parse(env.to_string().as_bytes()));
            }

            #[test]
            fn time_parsing_never_panics(s in ".{0,64}") {
                let _ = parse_time_ms(&s);
            }

            #[test]
            fn time_parsing_never_panics_near_the_format(
                frac in "[0-9é€a-z]{0,16}",
                off in prop::sample::select(vec!["", "Z", "z", "+00:00", "-05:30", "+1", "€"]),
            ) {
                let _ = parse_time_ms(&format!("2026-01-01T00:00:00.{frac}{off}"));
            }

            #[test]
            fn times_round_trip(secs in 0i64..4_102_444_800, millis in 0u32..1000, extra in "[0-9]{0,7}") {
                let t = time::OffsetDateTime::from_unix_timestamp(secs).expect("in range");
                let text = format!("{}.{millis:03}{extra}Z", t.format(&time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second]")).expect("format"));
                prop_assert_eq!(parse_time_ms(&text), Some(secs * 1000 + i64::from(millis)));
            }

            #[test]
            fn the_rule_never_moves_backwards_on_the_ladder(
                cur in statuses(), new in statuses(),
                t_cur in prop::option::of(0i64..100), t_new in prop::option::of(0i64..100),
            ) {
                let (rc, rn) = (rank(cur), rank(new));
                if advances_w(cur, t_cur, new, t_new) {
                    prop_assert!(rn != 0, "an unknown status never replaces one");
                    prop_assert!(!matches!(cur, Some("read" | "filtered" | "cancelled")), "final");
                    if rc > 0 && rn > 0 {
                        prop_assert!(rn > rc || (cur == Some("accepted") && rn == rc));
                    }
                    prop_assert!(cur != new, "an equal status changes nothing");
                }
                // Known beats nothing.
                if cur.is_none() && rn != 0 {
                    prop_assert!(advances_w(cur, t_cur, new, t_new));
                }
            }

            #[test]
            fn a_folded_sequence_only_climbs_the_ladder(
                events in prop::collection::vec((statuses(), prop::option::of(0i64..50)), 0..24),
            ) {
                let (mut cur, mut at) = (None, None);
                for (new, t) in events {
                    if advances_w(cur, at, new, t) {
                        let (rc, rn) = (rank(cur), rank(new));
                        prop_assert!(!(rc > 0 && rn > 0 && rn < rc), "{cur:?} -> {new:?}");
                        prop_assert!(!matches!(cur, Some("read" | "filtered" | "cancelled")));
                        (cur, at) = (new, t);
                    }
                }
            }
        }
    }
}
