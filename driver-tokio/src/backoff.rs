//! When to try connecting again after failures. Shared with the blocking driver: it holds no
//! clock of its own, the caller passes `now`.

use std::time::{Duration, Instant};

/// Exponential backoff for reconnecting: the first attempt after a failure is immediate (a
/// killed connection is replaced at once), then each consecutive failure doubles the wait from
/// `base` up to `max`. While backing off, a statement fails at once without touching the
/// network, and the core retries on its own schedule.
///
/// ```
/// use std::time::{Duration, Instant};
/// use leadership_tokio::backoff::Backoff;
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// let t = Instant::now();
/// assert!(b.ready(t));
/// b.failed(t);
/// assert!(b.ready(t), "the first retry is immediate");
/// b.failed(t);
/// assert!(!b.ready(t) && b.ready(t + Duration::from_millis(100)));
/// b.failed(t);
/// assert!(!b.ready(t + Duration::from_millis(199)));
/// b.succeeded();
/// assert!(b.ready(t));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    /// Backoff from `base` doubling up to `max`. The drivers use the retry interval and half the
    /// lease.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = leadership_tokio::backoff::Backoff::new(Duration::from_secs(3), Duration::from_secs(15));
    /// ```
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
            not_before: None,
        }
    }

    /// Whether an attempt may be made at `now`.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// let b = leadership_tokio::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    /// assert!(b.ready(Instant::now()));
    /// ```
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.map_or(true, |t| now >= t)
    }

    /// An attempt (or the connection) failed at `now`.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// let mut b = leadership_tokio::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    /// b.failed(Instant::now());
    /// assert_eq!(b.failures(), 1);
    /// ```
    pub fn failed(&mut self, now: Instant) {
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
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// let mut b = leadership_tokio::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    /// b.failed(Instant::now());
    /// b.succeeded();
    /// assert_eq!(b.failures(), 0);
    /// ```
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }

    /// Consecutive failures so far.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(leadership_tokio::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(8)).failures(), 0);
    /// ```
    pub fn failures(&self) -> u32 {
        self.failures
    }
}
