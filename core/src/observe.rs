//! Watching a flag without competing for it: when to read the row again.
//!
//! An observer (a dashboard, a sidecar, a follower that forwards work to the leader) wants to
//! know who leads and to hear of every change at once, without polling. The holder of a row
//! changes in only two ways: a release (which notifies the table's channel) and a
//! takeover, which can only happen once the lease has expired by the database's clock. So the
//! observer reads the row at once, then again on every notification, and otherwise just after
//! the lease it saw expires; while the row stays expired (nobody has taken it yet), it reads
//! again every retry interval, or after a notified release sooner (2 ms, doubling), since a
//! notified follower takes it over within milliseconds.
//!
//! ```
//! use core::time::Duration;
//! use leadership_core::observe::Observation;
//! use leadership_core::{Config, DbTime, Instant, Row};
//!
//! let config = Config::builder("report", "dashboard").interval(Duration::from_secs(2)).build()?;
//! let mut watch = Observation::new(&config, Instant::ZERO);
//! assert_eq!(watch.poll_read(Instant::ZERO), true, "read at once");
//! let now = DbTime::from_unix_micros(10_000_000);
//! let row = Row { holder: Some("pod-a"), version: Some(3), timestamp: Some(now) };
//! watch.read(Instant::ZERO, Some(row), now);
//! // Next read: just after the lease expires (2 s), not before.
//! assert!(watch.poll_timeout() > Some(Instant::ZERO + Duration::from_secs(2)));
//! # Ok::<(), leadership_core::ConfigError>(())
//! ```

use core::time::Duration;

use crate::config::Config;
use crate::input::Row;
use crate::time::{DbTime, Instant};

/// The first re-read of a released row: a notified follower's takeover takes a round trip or
/// two.
const AFTER_RELEASE: Duration = Duration::from_millis(2);

/// When an observer reads the row; see the module docs. Sans-IO: the driver reads when
/// [`poll_read`](Observation::poll_read) says so, hands in what it read, and sleeps until
/// [`poll_timeout`](Observation::poll_timeout) or a notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    interval: Duration,
    retry: Duration,
    /// The next read, if none is in flight.
    next: Option<Instant>,
    /// A read is in flight.
    reading: bool,
    /// A notification came while a read was in flight: read again once it returns.
    again: bool,
    /// How soon to read again while the row stays expired: short right after a release was
    /// notified (a notified follower takes the row over within milliseconds), doubling up to
    /// the retry interval.
    expired_wait: Duration,
}

impl Observation {
    /// Starts watching at `now`: the first read is due at once.
    pub fn new(config: &Config, now: Instant) -> Observation {
        Observation {
            interval: config.interval(),
            retry: config.retry_interval(),
            next: Some(now),
            reading: false,
            again: false,
            expired_wait: config.retry_interval(),
        }
    }

    /// Whether to read now; if so, the read counts as in flight until [`read`](Self::read) or
    /// [`failed`](Self::failed).
    #[must_use]
    pub fn poll_read(&mut self, now: Instant) -> bool {
        match self.next {
            Some(at) if !self.reading && now >= at => {
                self.next = None;
                self.reading = true;
                true
            }
            _ => false,
        }
    }

    /// When to call [`poll_read`](Self::poll_read) next, if no notification comes first.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.reading {
            None
        } else {
            self.next
        }
    }

    /// A release was notified: read at once (or as soon as the read in flight returns).
    pub fn notified(&mut self, now: Instant) {
        self.expired_wait = AFTER_RELEASE;
        if self.reading {
            self.again = true;
        } else {
            self.next = Some(now);
        }
    }

    /// The read returned the row (`None`: no row) and the database's `now()`.
    pub fn read(&mut self, now: Instant, row: Option<Row<'_>>, db_now: DbTime) {
        self.reading = false;
        if core::mem::take(&mut self.again) {
            self.next = Some(now);
            return;
        }
        let expires_in = row
            .and_then(|r| r.timestamp)
            .map(|t| t.saturating_add(self.interval).micros_since(db_now));
        self.next = Some(match expires_in.and_then(|us| u64::try_from(us).ok()) {
            // Just after it expires: a takeover can only come then. Never sleep much longer
            // than a lease: a row written meanwhile is found the next time at the latest.
            Some(us) => {
                self.expired_wait = self.retry;
                let after = Duration::from_millis(1);
                now + (Duration::from_micros(us) + after).min(self.interval + after)
            }
            // Expired (or no row, or odd): someone may take it at any moment; soon after a
            // notified release, when a follower is taking it over.
            None => {
                let wait = self.expired_wait;
                self.expired_wait = (wait * 2).min(self.retry);
                now + wait
            }
        });
    }

    /// The read failed: try again after the retry interval.
    pub fn failed(&mut self, now: Instant) {
        self.reading = false;
        self.again = false;
        self.next = Some(now + self.retry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::builder("f", "o")
            .interval(Duration::from_secs(2))
            .build()
            .unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn db(ms: i64) -> DbTime {
        DbTime::from_unix_micros(1_000_000_000 + ms * 1000)
    }

    fn row(ts: DbTime) -> Row<'static> {
        Row {
            holder: Some("a"),
            version: Some(1),
            timestamp: Some(ts),
        }
    }

    #[test]
    fn reads_at_once_then_just_after_the_lease_expires() {
        let mut o = Observation::new(&config(), at(0));
        assert!(o.poll_read(at(0)));
        assert!(!o.poll_read(at(0)), "one read at a time");
        assert_eq!(o.poll_timeout(), None);
        // Written 500 ms before the read: expires 1.5 s later.
        o.read(at(10), Some(row(db(-500))), db(0));
        assert_eq!(o.poll_timeout(), Some(at(10 + 1_501)));
        assert!(!o.poll_read(at(1_000)));
        assert!(o.poll_read(at(1_511)));
    }

    #[test]
    fn an_expired_or_missing_row_is_read_again_every_retry_interval() {
        let mut o = Observation::new(&config(), at(0));
        assert!(o.poll_read(at(0)));
        o.read(at(0), Some(row(db(-5_000))), db(0));
        assert_eq!(o.poll_timeout(), Some(at(200)));
        assert!(o.poll_read(at(200)));
        o.read(at(200), None, db(200));
        assert_eq!(o.poll_timeout(), Some(at(400)));
    }

    #[test]
    fn after_a_notified_release_an_expired_row_is_read_again_within_milliseconds() {
        let mut o = Observation::new(&config(), at(0));
        assert!(o.poll_read(at(0)));
        o.read(at(0), Some(row(db(0))), db(0));
        o.notified(at(100));
        assert!(o.poll_read(at(100)));
        // Released (expired), not yet taken over: 2 ms, then 4, 8, … up to the retry interval.
        o.read(at(101), Some(row(db(-5_000))), db(101));
        assert_eq!(o.poll_timeout(), Some(at(103)));
        assert!(o.poll_read(at(103)));
        o.read(at(103), Some(row(db(-5_000))), db(103));
        assert_eq!(o.poll_timeout(), Some(at(107)));
        // Taken over: back to the lease's schedule, and the next expired row waits the retry.
        assert!(o.poll_read(at(107)));
        o.read(at(107), Some(row(db(107))), db(107));
        assert_eq!(o.poll_timeout(), Some(at(107 + 2_001)));
        assert!(o.poll_read(at(2_108)));
        o.read(at(2_108), Some(row(db(0))), db(2_108));
        assert_eq!(o.poll_timeout(), Some(at(2_308)));
    }

    #[test]
    fn a_notification_reads_at_once_even_during_a_read() {
        let mut o = Observation::new(&config(), at(0));
        assert!(o.poll_read(at(0)));
        o.notified(at(1));
        o.read(at(2), Some(row(db(0))), db(0));
        assert_eq!(
            o.poll_timeout(),
            Some(at(2)),
            "the read in flight may predate it"
        );
        assert!(o.poll_read(at(2)));
        o.read(at(3), Some(row(db(0))), db(1));
        o.notified(at(50));
        assert_eq!(o.poll_timeout(), Some(at(50)));
        assert!(o.poll_read(at(50)));
        o.failed(at(60));
        assert_eq!(o.poll_timeout(), Some(at(260)));
    }
}
