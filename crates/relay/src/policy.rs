//! What to do after a delivery attempt: pure functions, unit-tested.
//!
//! - 2xx within the timeout: delivered.
//! - connection errors, timeouts, 408, 425, 429, 5xx (and any status in
//!   `retry_on_status`): retried on the schedule, honouring `Retry-After`
//!   (capped) and with ±10% jitter; after the last attempt, dead-lettered.
//! - 429 with `Retry-After`: the subscriber asks to slow down. Its
//!   deliveries pause for that long (capped) and the event is tried again
//!   then, however many times it was tried: a 429 never dead-letters it.
//! - 410 Gone: dead-lettered, and the subscriber is disabled.
//! - any other status: dead-lettered at once (the request itself is wrong;
//!   retrying would fail the same way).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Statuses retried by default besides every 5xx.
pub const DEFAULT_RETRY_ON: &[u16] = &[408, 425, 429];

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Status {
        status: u16,
        retry_after: Option<Duration>,
        /// The first bytes of the response body (the delivery record's excerpt).
        body: String,
    },
    /// No response: connection refused or reset, TLS failure, timeout.
    Failed { error: String },
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry {
        delay: Duration,
    },
    DeadLetter,
    /// Dead-letter and disable the subscriber (410 Gone).
    Gone,
    /// 429 with `Retry-After`: pause the subscriber for `delay` and retry
    /// the event then, without counting towards its dead letters.
    SlowDown {
        delay: Duration,
    },
}

/// How a subscriber retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the 2nd, 3rd, … attempt; its length + 1 is the number of attempts.
    pub schedule: Vec<Duration>,
    /// 4xx statuses that are retried (5xx always are).
    pub retry_on_status: Vec<u16>,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The verdict on attempt number `attempt` (1-based); `jitter` in [0, 1).
    pub fn verdict(&self, attempt: u32, outcome: &Attempt, jitter: f64) -> Verdict {
        let retry_after = match outcome {
            Attempt::Status { status: 200..=299, .. } => return Verdict::Delivered,
            Attempt::Status { status: 410, .. } => return Verdict::Gone,
            Attempt::Status { status: 429, retry_after: Some(after), .. } if self.retry_on_status.contains(&429) => {
                return Verdict::SlowDown { delay: (*after).min(self.max_retry_after).max(Duration::from_millis(100)) };
            }
            Attempt::Status { status, retry_after, .. } if *status >= 500 || self.retry_on_status.contains(status) => {
                *retry_after
            }
            Attempt::Status { .. } => return Verdict::DeadLetter,
            Attempt::Failed { .. } => None,
        };
        let Some(base) = self.schedule.get(attempt.saturating_sub(1) as usize) else { return Verdict::DeadLetter };
        // ±10% so that subscribers recovering together are not hit in step.
        let jittered = base.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0));
        let delay = retry_after.map_or(jittered, |after| jittered.max(after.min(self.max_retry_after)));
        Verdict::Retry { delay }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A uniformly random number in [0, 1) for jitter.
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![Duration::from_secs(5), Duration::from_secs(30), Duration::from_secs(120)],
            retry_on_status: DEFAULT_RETRY_ON.to_vec(),
            max_retry_after: Duration::from_secs(3600),
        }
    }

    fn status(status: u16) -> Attempt {
        Attempt::Status { status, retry_after: None, body: String::new() }
    }

    #[test]
    fn success_gone_and_client_errors() {
        assert_eq!(policy().verdict(1, &status(204), 0.5), Verdict::Delivered);
        assert_eq!(policy().verdict(1, &status(410), 0.5), Verdict::Gone);
        for s in [400, 401, 403, 404, 413, 422] {
            assert_eq!(policy().verdict(1, &status(s), 0.5), Verdict::DeadLetter, "{s}");
        }
    }

    #[test]
    fn retryable_outcomes_follow_the_schedule_then_dead_letter() {
        let failed = Attempt::Failed { error: "connection refused".into() };
        for outcome in [status(500), status(503), status(408), status(425), status(429), failed] {
            assert_eq!(policy().verdict(1, &outcome, 0.5), Verdict::Retry { delay: Duration::from_secs(5) });
            assert_eq!(policy().verdict(3, &outcome, 0.5), Verdict::Retry { delay: Duration::from_secs(120) });
            assert_eq!(policy().verdict(4, &outcome, 0.5), Verdict::DeadLetter, "{outcome:?}");
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let low = policy().verdict(2, &status(500), 0.0);
        let high = policy().verdict(2, &status(500), 0.999_999);
        assert_eq!(low, Verdict::Retry { delay: Duration::from_secs(27) });
        let Verdict::Retry { delay } = high else { panic!() };
        assert!(delay > Duration::from_secs(32) && delay < Duration::from_secs(33), "{delay:?}");
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn a_429_with_retry_after_slows_down_and_never_dead_letters() {
        let after = |s| Attempt::Status { status: 429, retry_after: Some(Duration::from_secs(s)), body: String::new() };
        assert_eq!(policy().verdict(1, &after(2), 0.5), Verdict::SlowDown { delay: Duration::from_secs(2) });
        assert_eq!(policy().verdict(99, &after(2), 0.5), Verdict::SlowDown { delay: Duration::from_secs(2) });
        assert_eq!(policy().verdict(1, &after(86_400), 0.5), Verdict::SlowDown { delay: Duration::from_secs(3600) });
        let mut strict = policy();
        strict.retry_on_status = vec![];
        assert_eq!(strict.verdict(1, &after(2), 0.5), Verdict::DeadLetter, "429 not retried: dead-lettered");
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let after = |s| Attempt::Status { status: 503, retry_after: Some(Duration::from_secs(s)), body: String::new() };
        assert_eq!(policy().verdict(1, &after(60), 0.5), Verdict::Retry { delay: Duration::from_secs(60) });
        assert_eq!(
            policy().verdict(1, &after(1), 0.5),
            Verdict::Retry { delay: Duration::from_secs(5) },
            "never sooner than the schedule"
        );
        assert_eq!(policy().verdict(1, &after(86_400), 0.5), Verdict::Retry { delay: Duration::from_secs(3600) });
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now: DateTime<Utc> = "2015-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:26:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
