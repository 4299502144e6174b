//! Wall-clock helpers: every time the host stores is epoch milliseconds (for ordering
//! and arithmetic) beside an RFC 3339 string (for people). One place, so the two agree.

use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
    )
    .unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Epoch milliseconds as RFC 3339 in UTC (empty for a time RFC 3339 cannot express).
pub fn ms_to_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// An RFC 3339 time as epoch milliseconds; `None` if it does not parse or does not fit.
pub fn rfc3339_to_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_rfc3339_round_trip() {
        let ms = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z
        let text = ms_to_rfc3339(ms);
        assert_eq!(text, "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339_to_ms(&text), Some(ms));
        assert_eq!(
            rfc3339_to_ms("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600_000)
        );
    }

    #[test]
    fn unparseable_or_unrepresentable_times_give_nothing() {
        assert_eq!(rfc3339_to_ms("yesterday"), None);
        assert_eq!(rfc3339_to_ms("2026-01-01"), None);
        assert_eq!(ms_to_rfc3339(i64::MAX), "");
    }
}
