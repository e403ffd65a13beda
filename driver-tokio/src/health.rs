//! [`Health`]: what a readiness or liveness probe asks of a flag, from counters the driver keeps
//! as it goes (no statement of its own).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A snapshot of the driver's health, from [`Flag::health`](crate::Flag::health).
///
/// A probe usually wants [`is_healthy`](Health::is_healthy): the driver runs and the server
/// answered recently. A leader that cannot reach the server stays raised until its deadline,
/// so `raised` alone says nothing about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The driver task runs: not closed, not gone.
    pub running: bool,
    /// This process leads now ([`Flag::is_raised`](crate::Flag::is_raised)).
    pub raised: bool,
    /// When the server last answered a statement (a check or a release), by the monotonic
    /// clock; `None` before the first answer.
    pub last_success: Option<Instant>,
    /// Statements that failed or timed out since the last answer.
    pub consecutive_failures: u32,
}

impl Health {
    /// The driver runs and the server answered within `within` (e.g. three intervals: a
    /// follower checks at least once an interval, a leader about twice).
    ///
    /// ```
    /// # fn demo(flag: &leadership_tokio::Flag) {
    /// let ok = flag.health().is_healthy(std::time::Duration::from_secs(90));
    /// # }
    /// ```
    pub fn is_healthy(&self, within: Duration) -> bool {
        self.running && self.last_success.is_some_and(|at| at.elapsed() <= within)
    }
}

/// The driver's side: updated on every statement's outcome.
#[derive(Debug, Default)]
pub(crate) struct HealthCounters {
    inner: Mutex<(Option<Instant>, u32)>,
}

impl HealthCounters {
    pub(crate) fn succeeded(&self) {
        *self.lock() = (Some(Instant::now()), 0);
    }

    pub(crate) fn failed(&self) {
        let mut counters = self.lock();
        counters.1 = counters.1.saturating_add(1);
    }

    /// The last success and the failures since.
    pub(crate) fn read(&self) -> (Option<Instant>, u32) {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Instant>, u32)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
