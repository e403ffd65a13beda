//! Local monotonic clocks with a rate error, and the database's clock.
//!
//! Simulated ("true") time is nanoseconds since the start of the run. The database's clock is
//! the reference: `DbTime = origin + true time`, truncated to microseconds as `now()` is.
//! Each process has a [`LocalClock`] that runs at `1 + ppm/10⁶` times the database's rate and
//! may step forward; the core of that process only ever sees its readings.
//!
//! Monotonic clocks never step backwards, so only forward steps are modelled. A forward step
//! only brings a leader's deadline closer (it stops believing sooner) and a follower's check
//! earlier (the database still judges expiry), so steps of any size keep safety; the
//! simulator keeps them within the margin so they do not look like outages either. What
//! safety needs is a bound on the *rate*: a clock slower than the database's by `ρ` lets a
//! leader believe `ρ × interval` too long, which must stay below the margin.

use leadership_core::{DbTime, Instant};

const MILLION: u128 = 1_000_000;

/// The database's clock at true time `t`: a fixed origin (2023-11-14) plus `t`.
pub fn db_time(t: u64) -> DbTime {
    DbTime::from_unix_micros(1_700_000_000_000_000 + (t / 1_000) as i64)
}

/// A process's monotonic clock: piecewise linear in true time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalClock {
    base_true: u64,
    base_local: u64,
    /// The rate error in parts per million (negative: slower than the database's clock).
    ppm: i64,
}

impl LocalClock {
    /// A clock reading `local` at true time `t`, with rate error `ppm` (above -10⁶).
    pub fn new(t: u64, local: u64, ppm: i64) -> LocalClock {
        LocalClock {
            base_true: t,
            base_local: local,
            ppm: ppm.max(-999_999),
        }
    }

    /// The rate error in ppm.
    pub fn ppm(&self) -> i64 {
        self.ppm
    }

    fn rate(&self) -> u128 {
        (1_000_000 + self.ppm) as u128
    }

    /// The reading at true time `t` (not before the last rebase).
    pub fn local(&self, t: u64) -> Instant {
        let dt = t.saturating_sub(self.base_true);
        // Asked for every process after every event: stay in u64 (a division by a constant
        // becomes a multiplication) while the product fits, hours of simulated time.
        let d = match dt.checked_mul(self.rate() as u64) {
            Some(x) => x / 1_000_000,
            None => (u128::from(dt) * self.rate() / MILLION).min(u128::from(u64::MAX)) as u64,
        };
        Instant::from_nanos(self.base_local.saturating_add(d))
    }

    /// The earliest true time at which the clock reads at least `local`, or `after` if it
    /// already does then.
    pub fn true_at(&self, local: Instant, after: u64) -> u64 {
        if self.local(after) >= local {
            return after;
        }
        let d = u128::from(local.as_nanos().saturating_sub(self.base_local));
        // Smallest dt with floor(dt × rate / 10⁶) ≥ d is ceil(d × 10⁶ / rate).
        let dt = (d * MILLION)
            .div_ceil(self.rate())
            .min(u128::from(u64::MAX));
        self.base_true.saturating_add(dt as u64).max(after)
    }

    /// From true time `t` on, runs with rate error `ppm`.
    pub fn set_rate(&mut self, t: u64, ppm: i64) {
        *self = LocalClock::new(t, self.local(t).as_nanos(), ppm);
    }

    /// Jumps forward by `nanos` at true time `t`.
    pub fn step(&mut self, t: u64, nanos: u64) {
        *self = LocalClock::new(t, self.local(t).as_nanos() + nanos, self.ppm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_at_is_the_exact_inverse() {
        for ppm in [-40_000, -1, 0, 7, 200_000] {
            let c = LocalClock::new(1_000, 5_000_000, ppm);
            for l in [5_000_000u64, 5_000_001, 6_123_457, 9_999_999_999] {
                let t = c.true_at(Instant::from_nanos(l), 1_000);
                assert!(c.local(t).as_nanos() >= l, "{ppm} {l}");
                if t > 1_000 {
                    assert!(c.local(t - 1).as_nanos() < l, "{ppm} {l}");
                }
            }
        }
    }

    #[test]
    fn rate_changes_and_steps_are_continuous_and_forward() {
        let mut c = LocalClock::new(0, 0, 0);
        c.set_rate(1_000_000, -500_000);
        assert_eq!(c.local(1_000_000).as_nanos(), 1_000_000);
        assert_eq!(c.local(3_000_000).as_nanos(), 2_000_000);
        c.step(3_000_000, 7);
        assert_eq!(c.local(3_000_000).as_nanos(), 2_000_007);
    }
}
