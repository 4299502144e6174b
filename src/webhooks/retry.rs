//! The retry policy as small pure functions: how an answer is classed, when the next
//! scheduled attempt is due, and what an attempt's outcome makes of its delivery.

use std::time::Duration;

use super::rows::{AttemptTrigger, DeliveryRow, DeliveryStatus};

/// How an attempt ended, for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 2xx.
    Success,
    /// Worth trying again on schedule: no answer, 5xx, 408, 429.
    Retryable,
    /// Trying again cannot help: any other answer, a refused destination, an expired
    /// payload.
    Permanent,
}

impl Class {
    /// The class as a metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
        }
    }
}

/// Class an HTTP answer by its status code.
pub(crate) fn classify(code: u16) -> Class {
    match code {
        200..=299 => Class::Success,
        500..=599 | 408 | 429 => Class::Retryable,
        _ => Class::Permanent,
    }
}

/// The delay before the scheduled attempt that follows failed scheduled attempt number
/// `failed` (1-based), or `None` when the schedule is exhausted. `jitter` (0.8–1.2 in
/// use) spreads retries of many deliveries apart. A `Retry-After` hint is honoured,
/// bounded: never sooner than scheduled, never more than twice the scheduled delay.
pub(crate) fn retry_delay(
    schedule: &[Duration],
    failed: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let index = usize::try_from(failed.checked_sub(1)?).ok()?;
    let base = *schedule.get(index)?;
    let delay = base.mul_f64(jitter);
    Some(match retry_after {
        Some(hint) => hint.clamp(delay, base.saturating_mul(2).max(delay)),
        None => delay,
    })
}

/// A delivery's state after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settled {
    pub status: DeliveryStatus,
    /// Scheduled attempts made, this one included when it was scheduled.
    pub scheduled_attempts: u32,
    /// When the next scheduled attempt is due (unchanged unless one was scheduled).
    pub next_attempt_at: i64,
    /// Set when the delivery reached a final status.
    pub completed_ms: Option<i64>,
}

/// What an attempt of `class`, made at `now`, makes of `delivery`. A manual attempt
/// (redeliver, test) never schedules a retry and never ends a delivery that is still
/// pending on its schedule unless it succeeds. `delay` is [`retry_delay`] with the
/// schedule, hint and jitter already bound.
pub(crate) fn settle(
    delivery: &DeliveryRow,
    class: Class,
    trigger: AttemptTrigger,
    now: i64,
    delay: impl FnOnce(u32) -> Option<Duration>,
) -> Settled {
    let manual = trigger == AttemptTrigger::Manual;
    let scheduled_attempts = if manual {
        delivery.scheduled_attempts
    } else {
        delivery.scheduled_attempts.saturating_add(1)
    };
    let mut next_attempt_at = delivery.next_attempt_at;
    let status = match class {
        Class::Success => DeliveryStatus::Succeeded,
        _ if manual => {
            if delivery.status == DeliveryStatus::Pending {
                DeliveryStatus::Pending
            } else {
                DeliveryStatus::Failed
            }
        }
        Class::Retryable => match delay(scheduled_attempts) {
            Some(d) => {
                next_attempt_at = now.saturating_add(duration_ms(d));
                DeliveryStatus::Pending
            }
            None => DeliveryStatus::Failed,
        },
        Class::Permanent => DeliveryStatus::Failed,
    };
    Settled {
        status,
        scheduled_attempts,
        next_attempt_at,
        completed_ms: status.is_final().then_some(now),
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxEvent;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn delivery(status: DeliveryStatus, scheduled: u32) -> DeliveryRow {
        let event = OutboxEvent::new("webhook.test", serde_json::json!({}));
        let mut d = DeliveryRow::new(&event, "sub_1", 1_000);
        d.status = status;
        d.scheduled_attempts = scheduled;
        d
    }

    #[test]
    fn answers_are_classed_by_status_code() {
        assert_eq!(classify(200), Class::Success);
        assert_eq!(classify(204), Class::Success);
        for code in [500, 503, 408, 429] {
            assert_eq!(classify(code), Class::Retryable, "{code}");
        }
        for code in [301, 400, 401, 404, 410, 413] {
            assert_eq!(classify(code), Class::Permanent, "{code}");
        }
    }

    #[test]
    fn the_schedule_is_followed_then_exhausted() {
        let schedule = [S(5), S(300)];
        assert_eq!(retry_delay(&schedule, 1, None, 1.0), Some(S(5)));
        assert_eq!(retry_delay(&schedule, 2, None, 1.0), Some(S(300)));
        assert_eq!(retry_delay(&schedule, 3, None, 1.0), None);
        assert_eq!(retry_delay(&schedule, 0, None, 1.0), None);
        assert_eq!(retry_delay(&schedule, 1, None, 1.2), Some(S(6)));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let schedule = [S(300)];
        // Sooner than scheduled: the schedule wins.
        assert_eq!(retry_delay(&schedule, 1, Some(S(1)), 1.0), Some(S(300)));
        // Later, within twice the schedule: the hint wins.
        assert_eq!(retry_delay(&schedule, 1, Some(S(500)), 1.0), Some(S(500)));
        // Far later: capped at twice the schedule.
        assert_eq!(
            retry_delay(&schedule, 1, Some(S(86_400)), 1.0),
            Some(S(600))
        );
    }

    #[test]
    fn a_retryable_failure_schedules_the_next_attempt() {
        let d = delivery(DeliveryStatus::Pending, 0);
        let s = settle(
            &d,
            Class::Retryable,
            AttemptTrigger::Scheduled,
            10_000,
            |n| {
                assert_eq!(n, 1);
                Some(S(5))
            },
        );
        assert_eq!(s.status, DeliveryStatus::Pending);
        assert_eq!(s.scheduled_attempts, 1);
        assert_eq!(s.next_attempt_at, 15_000);
        assert_eq!(s.completed_ms, None);
    }

    #[test]
    fn an_exhausted_schedule_or_a_permanent_answer_fails_the_delivery() {
        let d = delivery(DeliveryStatus::Pending, 7);
        let s = settle(
            &d,
            Class::Retryable,
            AttemptTrigger::Scheduled,
            10_000,
            |_| None,
        );
        assert_eq!(
            (s.status, s.completed_ms),
            (DeliveryStatus::Failed, Some(10_000))
        );
        let s = settle(
            &d,
            Class::Permanent,
            AttemptTrigger::Scheduled,
            10_000,
            |_| panic!("a permanent failure is never rescheduled"),
        );
        assert_eq!(s.status, DeliveryStatus::Failed);
    }

    #[test]
    fn a_manual_attempt_schedules_nothing_and_counts_nothing() {
        let pending = delivery(DeliveryStatus::Pending, 2);
        let never = |_: u32| -> Option<Duration> { panic!("manual attempts schedule nothing") };
        let s = settle(
            &pending,
            Class::Retryable,
            AttemptTrigger::Manual,
            10_000,
            never,
        );
        assert_eq!(s.status, DeliveryStatus::Pending, "its schedule goes on");
        assert_eq!((s.scheduled_attempts, s.next_attempt_at), (2, 1_000));
        let failed = delivery(DeliveryStatus::Failed, 8);
        let s = settle(
            &failed,
            Class::Permanent,
            AttemptTrigger::Manual,
            10_000,
            never,
        );
        assert_eq!(s.status, DeliveryStatus::Failed);
        let s = settle(
            &failed,
            Class::Success,
            AttemptTrigger::Manual,
            10_000,
            never,
        );
        assert_eq!(
            (s.status, s.completed_ms),
            (DeliveryStatus::Succeeded, Some(10_000))
        );
    }
}
