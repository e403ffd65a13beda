//! When to check next: the leader's renew (jittered around the renew interval), a follower's
//! wake-up when the holder's lease expires, a retry after a failure; never while fenced or
//! dormant. The jitter comes from a seeded generator: randomness is an input too.

use core::time::Duration;

use crate::command::{Anomaly, Command};
use crate::rng::Rng;
use crate::time::{ppm_of, DbTime, Instant};

use super::Flag;

/// The next check and what spreads it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Schedule {
    pub(super) rng: Rng,
    /// When the next check is due, if none is pending.
    pub(super) next_check: Option<Instant>,
    /// A notification arrived while a statement was pending: check again once it returns.
    pub(super) recheck: bool,
    /// From when the next check may be sent early to join a batch ([`Flag::poll_early_check`]):
    /// a leader's renew up to [`Config::renew_early`](crate::Config::renew_early) before it is
    /// due, a follower's from the instant the holder's lease can expire (its jitter is what is
    /// skipped). `None`: not before it is due (a retry, a fence's end, a wait for a row).
    pub(super) earliest: Option<Instant>,
}

impl Schedule {
    pub(super) fn new(seed: u64) -> Schedule {
        Schedule {
            rng: Rng::new(seed),
            next_check: None,
            recheck: false,
            earliest: None,
        }
    }
}

impl Flag {
    /// Checks at `at`, or at once if that is not in the future or a notification is waiting.
    pub(super) fn schedule_check(&mut self, now: Instant, at: Instant) {
        self.schedule.earliest = None;
        if self.dormant() {
            // Kept for when the flag is wanted again (which checks at once anyway).
            self.schedule.next_check = Some(at);
            self.schedule.recheck = false;
        } else if at <= now || self.schedule.recheck {
            self.start_check(now);
        } else {
            self.schedule.next_check = Some(at);
        }
    }

    /// After a failure: the retry interval, jittered both ways as in the Go flag.
    pub(super) fn schedule_retry(&mut self, now: Instant) {
        let retry = self.config.retry_interval();
        let jitter = self.jitter_of(retry);
        let delay = if self.schedule.rng.next_u64() & 1 == 0 {
            retry + jitter
        } else {
            retry - jitter
        };
        self.schedule_check(now, now + delay.max(Duration::from_millis(1)));
    }

    /// Checks at `at`, or at once; a batch may take the check along from `earliest` on.
    pub(super) fn schedule_check_from(&mut self, now: Instant, earliest: Instant, at: Instant) {
        self.schedule_check(now, at);
        if self.schedule.next_check.is_some() {
            self.schedule.earliest = Some(earliest.clamp(now, at));
        }
    }

    /// A follower wakes when the holder's lease expires by the database's clock, plus a
    /// little (at least a millisecond, since the rule is strict, and jitter of up to
    /// `jitter × retry interval`) so that followers do not all arrive at once; never later
    /// than one interval from now.
    pub(super) fn schedule_expiry(&mut self, now: Instant, timestamp: DbTime, db_now: DbTime) {
        if timestamp == DbTime::INFINITY {
            self.commands.push(Command::Anomaly(Anomaly::NeverExpires));
        }
        let remaining = self.expiry(timestamp).micros_since(db_now);
        let Ok(remaining) = u64::try_from(remaining) else {
            // Expired, yet we did not win: another process got there first, or we may not
            // take it yet (fenced). Look again soon, or when the fence ends.
            return match self.history.fenced_until.filter(|until| now < *until) {
                Some(until) => self.schedule_check(now, until),
                None => self.schedule_retry(now),
            };
        };
        let expires = Duration::from_micros(remaining) + Duration::from_millis(1);
        let wait = expires + self.jitter_of(self.config.retry_interval());
        let fenced_until = self.history.fenced_until.unwrap_or(now);
        let at = (now + wait.min(self.config.interval())).max(fenced_until);
        // In a batch, the check may go as soon as the lease can have expired: the jitter
        // spreads processes, and the flags of one process are one statement anyway.
        let earliest = (now + expires.min(self.config.interval())).max(fenced_until);
        self.schedule_check_from(now, earliest, at);
    }

    /// The leader renews every renew interval, jittered. Where the schedule has slack (a renew
    /// that starts later still leaves a failed one its retry before the lease is at risk, as
    /// with the defaults), the jitter is centred on the renew interval, up to a quarter of
    /// `jitter` each way: on average a leader renews every interval/2 like the Go flag, so a
    /// fleet writes no more than a Go fleet. Without that slack a renew is only ever made
    /// earlier, by up to `jitter / 2`: the renew interval is then the latest it can start.
    pub(super) fn renew_delay(&mut self) -> Duration {
        let renew = self.config.renew_interval();
        let spread = ppm_of(renew, self.config.jitter_ppm() / 4);
        let each_way = spread.min(self.config.renew_slack());
        if each_way >= spread / 2 && !each_way.is_zero() {
            let part = ppm_of(each_way * 2, self.schedule.rng.ppm());
            renew - each_way + part
        } else {
            renew - self.jitter_of(renew) / 2
        }
    }

    /// A uniform random part of `base × jitter`.
    pub(super) fn jitter_of(&mut self, base: Duration) -> Duration {
        let parts = self.config.jitter_ppm() * self.schedule.rng.ppm() / 1_000_000; // in ppm of `base`
        ppm_of(base, parts)
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use crate::time::ppm_of;
    use crate::{Config, Flag, Instant};

    fn flag(interval: Duration) -> Flag {
        let config = Config::builder("flag", "me")
            .interval(interval)
            .build()
            .unwrap();
        Flag::new(config, 7, Instant::ZERO)
    }

    #[test]
    fn ppm_of_takes_that_many_millionths() {
        assert_eq!(
            ppm_of(Duration::from_secs(1), 250_000),
            Duration::from_millis(250)
        );
        assert_eq!(ppm_of(Duration::from_secs(3), 0), Duration::ZERO);
        assert_eq!(
            ppm_of(Duration::from_secs(3), 1_000_000),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn a_leader_renews_around_the_renew_interval_with_the_defaults() {
        let mut f = flag(Duration::from_secs(30));
        let renew = f.config.renew_interval();
        let each_way = ppm_of(renew, f.config.jitter_ppm() / 4);
        let (mut earlier, mut later) = (false, false);
        for _ in 0..1000 {
            let delay = f.renew_delay();
            assert!(
                renew - each_way <= delay && delay <= renew + each_way,
                "{delay:?}"
            );
            earlier |= delay < renew;
            later |= delay > renew;
        }
        assert!(earlier && later, "centred on the renew interval");
    }

    #[test]
    fn a_jitter_is_at_most_its_share_of_the_base() {
        let mut f = flag(Duration::from_secs(2));
        let base = Duration::from_millis(200);
        let most = ppm_of(base, f.config.jitter_ppm());
        for _ in 0..1000 {
            assert!(f.jitter_of(base) <= most);
        }
    }
}
