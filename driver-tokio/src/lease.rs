//! The lease as a handle reports it, and the cell through which a driver publishes it to the
//! handle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use leadership_core::{Instant, WonBy};

/// A term of leadership as the handle reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The fencing token: the row version at which this term was won. A later leader's token
    /// is always larger, so a system that remembers the largest token it has seen can refuse a
    /// deposed leader's writes.
    pub token: i64,
    /// The row version written by the latest renew of this term.
    pub version: i64,
    /// When this process stops believing it leads, unless it renews first. Computed once per
    /// lease (each raise and renew), so it is stable between renewals.
    pub deadline: std::time::Instant,
    /// From when the lease is at risk unless a renew has won by then: leader-only work should
    /// begin stopping so that it is over by the deadline (the deadline minus the stop-ahead).
    pub at_risk: std::time::Instant,
    /// How the term was won.
    pub won_by: WonBy,
}

/// Nanoseconds on the clock leases are judged by, now. On Linux that is `CLOCK_BOOTTIME`, which,
/// unlike `CLOCK_MONOTONIC` (`std::time::Instant`), keeps counting while the machine is
/// suspended: a leader that wakes from a suspend longer than its lease must find its deadline
/// passed, since the database's clock kept running. It is one clock for every process of the
/// machine, so the instants of [`TermRecord`]s of different processes compare exactly.
/// Elsewhere it is the monotonic clock since this process first read it (comparable within the
/// process only).
///
/// ```
/// let (a, b) = (leadership_tokio::lease_clock_ns(), leadership_tokio::lease_clock_ns());
/// assert!(a <= b);
/// ```
pub fn lease_clock_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(std::time::Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How many terms a [`TermLog`] keeps: the latest, older ones are dropped.
pub const TERM_LOG_LEN: usize = 256;

/// One term as this process believed it led, at the instants the driver published and cleared
/// it, on the lease clock ([`lease_clock_ns`]): the facts from which an overlap of two leaders
/// is judged, whatever the order and the moment in which anyone looked.
///
/// The interval `[began_ns, ended_ns())` contains every instant at which
/// [`Flag::is_raised`](crate::Flag::is_raised) answered true for this term: `began_ns` is read
/// just before the lease is published, the cleared instant just after it is withdrawn, and a
/// lease that is not withdrawn ends at its deadline, which `is_raised` compares on this clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermRecord {
    /// The fencing token of the term.
    pub token: i64,
    /// How the term was won.
    pub won_by: WonBy,
    /// When the belief began: read just before the lease was published.
    pub began_ns: u64,
    /// The latest deadline published for the term: the belief ends there at the latest.
    pub deadline_ns: u64,
    /// When the lease was withdrawn (the lowering): read just after; `None` while it is not.
    pub cleared_ns: Option<u64>,
    /// The highest row version this process had seen before the term began (its own earlier
    /// leases and the rows its checks read): the token must be above it.
    pub seen_before: Option<i64>,
}

impl TermRecord {
    /// When the belief ended (or ends, unless renewed): the earlier of the withdrawal and the
    /// latest deadline.
    ///
    /// ```
    /// use leadership_tokio::{TermRecord, WonBy};
    /// let t = TermRecord { token: 3, won_by: WonBy::TookOver, began_ns: 10, deadline_ns: 50,
    ///                      cleared_ns: Some(20), seen_before: Some(2) };
    /// assert_eq!(t.ended_ns(), 20);
    /// assert_eq!(TermRecord { cleared_ns: None, ..t }.ended_ns(), 50);
    /// ```
    pub fn ended_ns(&self) -> u64 {
        self.cleared_ns
            .map_or(self.deadline_ns, |c| c.min(self.deadline_ns))
    }
}

/// The terms a flag's driver published, oldest first (the latest [`TERM_LOG_LEN`]). A handle
/// that does not keep the flag alive: it can be read after the flag is closed or dropped, as
/// a test reads a crashed process's terms.
///
/// ```no_run
/// # fn demo(flag: &leadership_tokio::Flag) {
/// let log = flag.term_log();
/// for t in log.terms() {
///     println!("token {} from {} to {} ns", t.token, t.began_ns, t.ended_ns());
/// }
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TermLog {
    inner: Arc<Mutex<Terms>>,
}

#[derive(Debug, Default)]
struct Terms {
    terms: VecDeque<TermRecord>,
    /// The highest row version seen so far.
    seen: Option<i64>,
}

impl TermLog {
    /// The terms so far, oldest first; the last may be in progress.
    pub fn terms(&self) -> Vec<TermRecord> {
        self.lock().terms.iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Terms> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A lease was published at `at`: a new term, or a renew of the open one.
    fn published(&self, lease: &leadership_core::Lease, at: u64, deadline: u64) {
        let mut log = self.lock();
        let seen = log.seen;
        match log.terms.back_mut() {
            Some(t) if t.cleared_ns.is_none() && t.token == lease.token => {
                t.deadline_ns = t.deadline_ns.max(deadline);
            }
            open => {
                // A new term replaces one never withdrawn: that belief ended here.
                if let Some(t) = open.filter(|t| t.cleared_ns.is_none()) {
                    t.cleared_ns = Some(at);
                }
                if log.terms.len() == TERM_LOG_LEN {
                    log.terms.pop_front();
                }
                log.terms.push_back(TermRecord {
                    token: lease.token,
                    won_by: lease.won_by,
                    began_ns: at,
                    deadline_ns: deadline,
                    cleared_ns: None,
                    seen_before: seen,
                });
            }
        }
        log.seen = log.seen.max(Some(lease.version));
    }

    /// The lease was withdrawn at `at`.
    fn cleared(&self, at: u64) {
        if let Some(t) = self.lock().terms.back_mut() {
            t.cleared_ns.get_or_insert(at);
        }
    }

    /// A check read the row at `version`.
    fn saw(&self, version: Option<i64>) {
        let mut log = self.lock();
        log.seen = log.seen.max(version);
    }
}

/// What a driver publishes for its handle: the lease deadline on the driver's clock
/// ([`LeaseCell::now`]; 0 = lowered), and the lease itself. The driver feeds the core from the
/// same clock, so [`LeaseCell::is_raised`] is the core's `is_leader` at the moment of the call,
/// even while the driver is stuck.
#[derive(Debug)]
pub(crate) struct LeaseCell {
    /// [`lease_clock_ns`] when the cell was made: the core's instant 0.
    base: u64,
    deadline: AtomicU64,
    /// The core's lease and the same as the handle reports it.
    lease: Mutex<Option<(leadership_core::Lease, Lease)>>,
    /// Every term's instants, for whoever judges overlaps.
    log: TermLog,
}

impl LeaseCell {
    /// A lowered cell whose clock starts now.
    pub(crate) fn new() -> LeaseCell {
        LeaseCell {
            base: lease_clock_ns(),
            deadline: AtomicU64::new(0),
            lease: Mutex::new(None),
            log: TermLog::default(),
        }
    }

    /// The core's clock: nanoseconds since the cell was made, counting suspends on Linux.
    pub(crate) fn now(&self) -> Instant {
        Instant::from_nanos(lease_clock_ns().saturating_sub(self.base))
    }

    /// The `std` instant at which a core instant falls, counted from the present (the two
    /// clocks drift apart by any suspend since the cell was made); `None` if too far away.
    pub(crate) fn at(&self, at: Instant) -> Option<std::time::Instant> {
        std::time::Instant::now().checked_add(at - self.now())
    }

    /// The lease clock's reading of a core instant.
    fn absolute(&self, at: Instant) -> u64 {
        self.base.saturating_add(at.as_nanos())
    }

    /// Publishes a lease (on `Raise` and `Renewed`) and returns it as the handle reports it.
    pub(crate) fn publish(&self, lease: leadership_core::Lease) -> Lease {
        // `now` is read before the deadline is stored: the term's recorded start is no later
        // than the first instant `is_raised` can answer true.
        let (now, std_now) = (self.now(), std::time::Instant::now());
        self.log
            .published(&lease, self.absolute(now), self.absolute(lease.deadline));
        let reported = Lease {
            token: lease.token,
            version: lease.version,
            deadline: std_now + (lease.deadline - now),
            at_risk: std_now + (lease.at_risk - now),
            won_by: lease.won_by,
        };
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some((lease, reported));
        self.deadline
            .store(lease.deadline.as_nanos().max(1), Ordering::Release);
        reported
    }

    /// Clears the lease (on `Lower`).
    pub(crate) fn clear(&self) {
        self.deadline.store(0, Ordering::Release);
        // Read after the store: the recorded end is no earlier than the last instant
        // `is_raised` could answer true.
        self.log.cleared(lease_clock_ns());
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// A check read the row at `version` (for [`TermRecord::seen_before`]).
    pub(crate) fn saw(&self, version: Option<i64>) {
        self.log.saw(version);
    }

    /// The log of this cell's terms.
    pub(crate) fn log(&self) -> TermLog {
        self.log.clone()
    }

    /// Whether the published lease holds at this instant: one atomic load and a clock read.
    pub(crate) fn is_raised(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        // The clock is read after the load, so a deadline published earlier is never compared
        // with a stale time.
        deadline != 0 && self.now() < Instant::from_nanos(deadline)
    }

    /// The published lease, if it holds at this instant.
    pub(crate) fn lease(&self) -> Option<Lease> {
        let (lease, reported) = (*self.lease.lock().unwrap_or_else(PoisonError::into_inner))?;
        lease.is_valid(self.now()).then_some(reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn is_raised_follows_the_published_deadline_and_the_clock() {
        let cell = LeaseCell::new();
        assert!(!cell.is_raised());
        let lease = |deadline| leadership_core::Lease {
            token: 1,
            version: 1,
            deadline,
            at_risk: deadline,
            won_by: WonBy::Created,
        };
        cell.publish(lease(cell.now() + Duration::from_secs(60)));
        assert!(cell.is_raised());
        let reported = cell.lease().unwrap();
        assert!(reported.deadline > std::time::Instant::now() + Duration::from_secs(59));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            cell.lease().unwrap(),
            reported,
            "the same lease reads the same, whenever it is asked"
        );
        // A deadline already behind the clock is not leadership, whatever was published.
        cell.publish(lease(Instant::from_nanos(1)));
        assert!(!cell.is_raised() && cell.lease().is_none());
        cell.publish(lease(cell.now() + Duration::from_secs(60)));
        cell.clear();
        assert!(!cell.is_raised() && cell.lease().is_none());
    }

    #[test]
    fn the_term_log_brackets_every_instant_the_cell_answered_raised() {
        let cell = LeaseCell::new();
        let log = cell.log();
        let lease = |token, version, deadline| leadership_core::Lease {
            token,
            version,
            deadline,
            at_risk: deadline,
            won_by: WonBy::TookOver,
        };
        cell.saw(Some(4));
        let before = lease_clock_ns();
        cell.publish(lease(5, 5, cell.now() + Duration::from_secs(60)));
        let first_raised = lease_clock_ns();
        assert!(cell.is_raised());
        // A renew moves the deadline of the same term.
        let renewed = cell.now() + Duration::from_secs(61);
        cell.publish(lease(5, 6, renewed));
        let last_raised = lease_clock_ns();
        assert!(cell.is_raised());
        cell.clear();
        let after = lease_clock_ns();
        assert!(!cell.is_raised());
        let [t] = log.terms()[..] else {
            panic!("{:?}", log.terms())
        };
        assert!(before <= t.began_ns && t.began_ns <= first_raised, "{t:?}");
        let cleared = t.cleared_ns.unwrap();
        assert!(last_raised <= cleared && cleared <= after, "{t:?}");
        assert_eq!(t.deadline_ns, cell.absolute(renewed));
        assert_eq!(t.ended_ns(), cleared);
        assert_eq!((t.token, t.seen_before), (5, Some(4)));
        // The next term saw the first one's versions; one that ends at its deadline (never
        // withdrawn) ends there.
        let deadline = cell.now() + Duration::from_millis(1);
        cell.publish(lease(9, 9, deadline));
        std::thread::sleep(Duration::from_millis(2));
        assert!(!cell.is_raised());
        let t = log.terms()[1];
        assert_eq!((t.token, t.seen_before, t.cleared_ns), (9, Some(6), None));
        assert_eq!(t.ended_ns(), cell.absolute(deadline));
        // The log outlives the cell, and keeps the latest terms only.
        for token in 10..10 + TERM_LOG_LEN as i64 {
            cell.publish(lease(token, token, cell.now() + Duration::from_secs(1)));
        }
        drop(cell);
        let terms = log.terms();
        assert_eq!(terms.len(), TERM_LOG_LEN);
        assert_eq!(terms[0].token, 10);
        assert!(terms.windows(2).all(|w| w[0].ended_ns() <= w[1].began_ns));
    }

    #[test]
    fn the_clock_runs_at_the_rate_of_the_monotonic_clock() {
        // Boot time and monotonic time differ only by suspends, and none happens here.
        let cell = LeaseCell::new();
        let (start, t0) = (std::time::Instant::now(), cell.now());
        std::thread::sleep(Duration::from_millis(50));
        let (real, ours) = (start.elapsed(), cell.now() - t0);
        let diff = real.abs_diff(ours);
        assert!(diff < Duration::from_millis(5), "{real:?} vs {ours:?}");
        let at = cell.at(cell.now() + Duration::from_secs(1)).unwrap();
        let ahead = at - std::time::Instant::now();
        assert!(
            ahead > Duration::from_millis(990) && ahead <= Duration::from_secs(1),
            "{ahead:?}"
        );
    }
}
