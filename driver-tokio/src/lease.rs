//! The lease as a handle reports it, and the cell through which a driver publishes it to the
//! handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

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

/// Nanoseconds on the clock the lease is judged by. On Linux that is `CLOCK_BOOTTIME`, which,
/// unlike `CLOCK_MONOTONIC` (`std::time::Instant`), keeps counting while the machine is
/// suspended: a leader that wakes from a suspend longer than its lease must find its deadline
/// passed, since the database's clock kept running. Elsewhere, the monotonic clock.
fn clock_nanos(origin: std::time::Instant) -> u64 {
    #[cfg(target_os = "linux")]
    {
        let _ = origin;
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What a driver publishes for its handle: the lease deadline on the driver's clock
/// ([`LeaseCell::now`]; 0 = lowered), and the lease itself. The driver feeds the core from the
/// same clock, so [`LeaseCell::is_raised`] is the core's `is_leader` at the moment of the call,
/// even while the driver is stuck.
#[derive(Debug)]
pub(crate) struct LeaseCell {
    origin: std::time::Instant,
    /// [`clock_nanos`] at `origin`.
    base: u64,
    deadline: AtomicU64,
    /// The core's lease and the same as the handle reports it.
    lease: Mutex<Option<(leadership_core::Lease, Lease)>>,
}

impl LeaseCell {
    /// A lowered cell whose clock starts now.
    pub(crate) fn new() -> LeaseCell {
        let origin = std::time::Instant::now();
        LeaseCell {
            origin,
            base: clock_nanos(origin),
            deadline: AtomicU64::new(0),
            lease: Mutex::new(None),
        }
    }

    /// The core's clock: nanoseconds since the cell was made, counting suspends on Linux.
    pub(crate) fn now(&self) -> Instant {
        Instant::from_nanos(clock_nanos(self.origin).saturating_sub(self.base))
    }

    /// The `std` instant at which a core instant falls, counted from the present (the two
    /// clocks drift apart by any suspend since the cell was made); `None` if too far away.
    pub(crate) fn at(&self, at: Instant) -> Option<std::time::Instant> {
        std::time::Instant::now().checked_add(at - self.now())
    }

    /// Publishes a lease (on `Raise` and `Renewed`) and returns it as the handle reports it.
    pub(crate) fn publish(&self, lease: leadership_core::Lease) -> Lease {
        let (now, std_now) = (self.now(), std::time::Instant::now());
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
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = None;
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
