//! When to try connecting again after failures. It holds no clock of its own: the caller passes
//! `now`.

use std::time::{Duration, Instant};

/// Exponential backoff for reconnecting: the first attempt after a failure is immediate (a
/// killed connection is replaced at once), then each consecutive failure doubles the wait from
/// `base` up to `max`. While backing off, a statement fails at once without touching the
/// network, and the core retries on its own schedule.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    /// Backoff from `base` doubling up to `max`. The drivers use the retry interval and half the
    /// lease.
    pub(crate) fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
            not_before: None,
        }
    }

    /// Whether an attempt may be made at `now`.
    pub(crate) fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// An attempt (or the connection) failed at `now`.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let delay = match self.failures {
            0 | 1 => Duration::ZERO,
            n => self
                .base
                .saturating_mul(1u32.checked_shl(n - 2).unwrap_or(u32::MAX))
                .min(self.max),
        };
        self.not_before = Some(now + delay);
    }

    /// A connection was made and a statement returned: start over.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }

    /// The first wait after a failure that is not immediate.
    pub(crate) fn base(&self) -> Duration {
        self.base
    }

    /// When the next attempt may be made, if not at once.
    pub(crate) fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    /// Consecutive failures so far.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_is_immediate_then_the_wait_doubles_up_to_the_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let t = Instant::now();
        assert!(b.ready(t));
        b.failed(t);
        assert!(b.ready(t), "the first retry is immediate");
        b.failed(t);
        assert!(!b.ready(t) && b.ready(t + Duration::from_millis(100)));
        b.failed(t);
        assert!(!b.ready(t + Duration::from_millis(199)));
        for _ in 0..10 {
            b.failed(t);
        }
        assert!(b.ready(t + Duration::from_secs(1)), "capped at the max");
        assert_eq!(b.failures(), 13);
        b.succeeded();
        assert!(b.ready(t));
        assert_eq!(b.failures(), 0);
    }
}
