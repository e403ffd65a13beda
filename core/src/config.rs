//! Configuration of one flag, validated once by [`ConfigBuilder::build`].
//!
//! The defaults are the Go flag's: interval 30 s, timeout 1 s, jitter 0.2. The Go flag's
//! `interval` is the lease: others may take the flag over once the holder has not renewed it
//! for longer than `interval` by the database's clock. Everything else is derived from it unless
//! set, so a setting the user did not give never clashes with one they did: the timeout (1 s, or
//! interval/10 for leases under 10 s), the retry interval (interval/10, as in Go), the deadline
//! margin (interval/20), the stop-ahead (see [`Config::stop_ahead`]) and the renew interval
//! (interval/2 as in Go, or less where a renew would otherwise not finish before the lease is
//! at risk).
//!
//! # The lease's timeline
//!
//! A term's lease runs from the moment the winning statement was sent (`s`):
//!
//! ```text
//! s ──── renew ──── at risk ──── deadline ── expiry
//!        s + renew  deadline     s + interval s + interval, by the database's clock:
//!                   - stop_ahead - margin     the earliest another process takes over
//! ```
//!
//! - the leader renews at `s + renew`; each renew that wins starts the timeline again;
//! - if no renew has won by the *at-risk* instant, the leader-only work is told to begin
//!   stopping, so that it is over by the deadline ([`Command::AtRisk`](crate::Command::AtRisk));
//! - at the *deadline* the leader stops believing it leads;
//! - a margin later the lease expires by the database's clock, and another process may take over.
//!
//! A renew attempt takes at most one timeout (two with a precheck, which is bounded by the
//! timeout too); the renew interval leaves room for one attempt before the at-risk instant.

use alloc::string::String;
use core::time::Duration;

use crate::time::duration_micros;

/// Default lease (the Go flag's `interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default bound on one statement (the Go flag's); leases shorter than ten times this get a
/// tenth of the lease instead (as much as the retry interval), so that a failed renew and its
/// retry still leave the leader-only work time to stop before the deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default jitter factor.
pub const DEFAULT_JITTER: f64 = 0.2;

/// Longest flag or process name, in bytes.
///
/// PostgreSQL `text` takes up to 1 GB, but `name` is the primary key and a B-tree entry must fit
/// in a third of a page (about 2,700 bytes), and a release sends the name as a `NOTIFY` payload
/// (under 8,000 bytes). 1,024 bytes is far below both and above any Kubernetes
/// `cluster/namespace/pod` name.
pub const MAX_NAME_BYTES: usize = 1024;

/// Shortest lease: PostgreSQL timestamps count microseconds, and a lease shorter than a
/// millisecond cannot outlive one round trip. The timeout's floor, [`MIN_TIMEOUT`], is the
/// stricter bound in practice: a lease longer than it, and [`MIN_DEFAULT_INTERVAL`] unless a
/// timeout is given.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Shortest statement timeout. One statement is a network round trip and, for a write, a
/// commit's WAL flush; the first ones a process runs also create the table and prepare the
/// check. A check was measured at 0.13 ms alone but 8.7 ms at the 99th percentile on a server
/// saturated by checks, so a bound below 10 ms cancels healthy statements (`canceling statement
/// due to statement timeout`) instead of hung ones. With the default timeout (interval/10 for
/// leases under 10 s), leases shorter than [`MIN_DEFAULT_INTERVAL`] are refused unless a timeout
/// of at least this is given.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// Shortest lease whose default timeout (interval/10) reaches [`MIN_TIMEOUT`]: 100 ms.
pub const MIN_DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// The margin is at least interval / 1000 (so never 0: the interval is at least 1 ms). The
/// margin is what absorbs the difference in rate between this host's monotonic clock and the
/// database's clock over one lease: NTP daemons slew a clock by at most 500 ppm and quartz errs
/// by well under 100 ppm, so two clocks drift apart by at most 1000 ppm, interval/1000 of a
/// lease. The default, interval/20, is fifty times this floor.
pub const MARGIN_FLOOR_DIVISOR: u32 = 1000;

/// Longest lease or timeout: one year keeps every computation far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A configuration that cannot work, saying which values clash.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The flag name or the process name is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// `"name"` or `"process"`.
        field: &'static str,
    },
    /// The name contains a NUL byte, which PostgreSQL `text` cannot store.
    #[error("{field} contains a NUL byte at byte {at}; PostgreSQL text cannot store it")]
    Nul {
        /// `"name"` or `"process"`.
        field: &'static str,
        /// Byte offset of the first NUL.
        at: usize,
    },
    /// The name is longer than [`MAX_NAME_BYTES`].
    #[error("{field} is {len} bytes long; the maximum is {max} bytes")]
    TooLong {
        /// `"name"` or `"process"`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// [`MAX_NAME_BYTES`].
        max: usize,
    },
    /// A duration is outside the range it must be in.
    #[error("{field} is {value:?}; it must be between {min:?} and {max:?}")]
    OutOfRange {
        /// `"interval"`, `"timeout"`, `"retry interval"` or `"margin"`.
        field: &'static str,
        /// The value given.
        value: Duration,
        /// Smallest allowed.
        min: Duration,
        /// Largest allowed.
        max: Duration,
    },
    /// The jitter factor is not within `[0, 1]` (or is NaN).
    #[error("jitter is {0}; it must be between 0 and 1")]
    Jitter(f64),
    /// The timeout is not shorter than the interval.
    #[error("timeout {timeout:?} must be shorter than the interval {interval:?}")]
    TimeoutNotBelowInterval {
        /// The statement timeout.
        timeout: Duration,
        /// The lease.
        interval: Duration,
    },
    /// The margin is below [`MARGIN_FLOOR_DIVISOR`]'s share of the lease: it could not absorb
    /// the clocks' rate difference over one lease, and the safety argument would not hold.
    #[error(
        "margin {margin:?} is below its floor {floor:?} (interval {interval:?}/1000): the margin \
         must absorb the clocks' rate difference over one lease (up to 1000 ppm)"
    )]
    MarginBelowFloor {
        /// The margin given.
        margin: Duration,
        /// The smallest allowed: interval / [`MARGIN_FLOOR_DIVISOR`].
        floor: Duration,
        /// The lease.
        interval: Duration,
    },
    /// The margin is not smaller than the lease.
    #[error("deadline margin {margin:?} must be smaller than the interval {interval:?}")]
    MarginNotBelowInterval {
        /// The margin.
        margin: Duration,
        /// The lease.
        interval: Duration,
    },
    /// The lease is too short for its default timeout (interval/10) to reach [`MIN_TIMEOUT`],
    /// and no timeout was given: no statement could finish in time.
    #[error(
        "interval {interval:?} is too short to run a statement: its timeout, interval/10 = \
         {timeout:?}, is below the floor {floor:?} of one statement (a round trip and a commit); \
         give an interval of at least {min_interval:?}, or a timeout of at least {floor:?}"
    )]
    IntervalTooShort {
        /// The lease.
        interval: Duration,
        /// The timeout it implies.
        timeout: Duration,
        /// [`MIN_TIMEOUT`].
        floor: Duration,
        /// [`MIN_DEFAULT_INTERVAL`].
        min_interval: Duration,
    },
    /// The timeout given is below [`MIN_TIMEOUT`]: healthy statements would be cancelled.
    #[error(
        "timeout {timeout:?} is below the floor {floor:?} of one statement (a round trip and a \
         commit): healthy statements would be cancelled"
    )]
    TimeoutBelowFloor {
        /// The statement timeout given.
        timeout: Duration,
        /// [`MIN_TIMEOUT`].
        floor: Duration,
    },
    /// A renew sent at once after the previous one could still not finish before the leader's
    /// deadline: `interval - margin - timeout` leaves no time.
    #[error(
        "a renew cannot finish before the deadline: interval {interval:?} - margin {margin:?} \
         - timeout {timeout:?} leaves no time; lengthen the interval or shorten the timeout"
    )]
    RenewCannotFinish {
        /// The lease.
        interval: Duration,
        /// The margin.
        margin: Duration,
        /// The statement timeout.
        timeout: Duration,
    },
    /// With a precheck, a renew attempt is a precheck and a check, each bounded by the
    /// timeout: `interval - margin - 2 × timeout` leaves no time for it.
    #[error(
        "a precheck and a check, each bounded by the timeout {timeout:?}, cannot finish before \
         the deadline: interval {interval:?} - margin {margin:?} leaves less than twice the \
         timeout; lengthen the interval or shorten the timeout"
    )]
    PrecheckCannotFinish {
        /// The lease.
        interval: Duration,
        /// The margin.
        margin: Duration,
        /// The statement timeout.
        timeout: Duration,
    },
    /// The stop-ahead leaves no time for a renew before the lease is at risk: a healthy leader
    /// would be at risk on every renew.
    #[error(
        "stop-ahead {stop_ahead:?} leaves no time to renew before the lease is at risk: \
         interval {interval:?} - margin {margin:?} - stop-ahead must exceed one renew attempt \
         ({attempt:?}: the timeout, twice with a precheck); shorten the stop-ahead or lengthen \
         the interval"
    )]
    StopAheadTooLong {
        /// The stop-ahead.
        stop_ahead: Duration,
        /// The lease.
        interval: Duration,
        /// The margin.
        margin: Duration,
        /// One renew attempt: the timeout, or twice it with a precheck.
        attempt: Duration,
    },
    /// The retry interval is not shorter than the lease, so a leader could not retry a failed
    /// renew before losing its lease.
    #[error("retry interval {retry:?} must be shorter than the interval {interval:?}")]
    RetryNotBelowInterval {
        /// The retry interval.
        retry: Duration,
        /// The lease.
        interval: Duration,
    },
}

/// A validated configuration. Build one with [`Config::builder`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    name: String,
    process: String,
    interval: Duration,
    timeout: Duration,
    jitter_ppm: u64,
    margin: Duration,
    retry: Duration,
    stop_ahead: Duration,
    renew: Duration,
    renew_late: Duration,
    precheck: bool,
}

impl Config {
    /// Starts a configuration for flag `name` competed for by process `process` (unique among
    /// the processes sharing the flag, e.g. a pod name).
    ///
    /// ```
    /// use core::time::Duration;
    /// use leadership_core::Config;
    /// let config = Config::builder("scheduler", "pod-a")
    ///     .interval(Duration::from_secs(10))
    ///     .build()?;
    /// assert_eq!(config.timeout(), Duration::from_secs(1));
    /// assert_eq!(config.retry_interval(), Duration::from_secs(1));
    /// # Ok::<(), leadership_core::ConfigError>(())
    /// ```
    pub fn builder(name: impl Into<String>, process: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder {
            name: name.into(),
            process: process.into(),
            interval: DEFAULT_INTERVAL,
            timeout: None,
            jitter: DEFAULT_JITTER,
            margin: None,
            retry: None,
            stop_ahead: None,
            precheck: false,
        }
    }

    /// The flag's name: the row's primary key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This process's name: what it writes as `holder`.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// The lease (the Go flag's `interval`): a holder that has not renewed for longer than this,
    /// by the database's clock, may be replaced.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The bound the driver puts on each statement.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The jitter factor, in `[0, 1]`.
    pub fn jitter(&self) -> f64 {
        self.jitter_ppm as f64 / 1e6
    }

    /// How much earlier than the lease's end, by its own clock, a leader stops believing it
    /// leads. It must exceed how far the local clock's rate can drift from the database's over
    /// one lease.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// How long to wait after a failed statement or a negative precheck.
    pub fn retry_interval(&self) -> Duration {
        self.retry
    }

    /// How long before the deadline the leader-only work is told to begin stopping when no
    /// renew has won ([`Command::AtRisk`](crate::Command::AtRisk)): the time the work gets to
    /// stop before the leader stops believing it leads.
    ///
    /// By default, the longest that keeps one failed renew (a whole attempt, the longest
    /// jittered retry interval, another attempt) clear of the at-risk instant at the Go flag's
    /// renew interval (interval/2), capped at interval/4, and zero when the lease leaves no such
    /// room (the work is then told at the deadline): with the default 30 s lease, 7.5 s, and a
    /// blip never puts the lease at risk.
    pub fn stop_ahead(&self) -> Duration {
        self.stop_ahead
    }

    /// The longest a renew attempt takes: the timeout, or twice it with a precheck (which is
    /// bounded by the timeout too).
    pub fn attempt(&self) -> Duration {
        attempt(self.timeout, self.precheck)
    }

    /// How often the leader renews (before jitter): half the interval as in the Go flag, or
    /// `interval - margin - stop_ahead - attempt` when that is shorter, so a renew attempt
    /// that takes its whole time still wins before the lease is at risk.
    pub fn renew_interval(&self) -> Duration {
        self.renew
    }

    /// How much later than the [renew interval](Config::renew_interval) a renew may start and,
    /// should it fail, its retry still win before the lease is at risk: the room the schedule
    /// has to jitter a renew both ways (0.4 s with the defaults).
    pub fn renew_slack(&self) -> Duration {
        self.renew_late
    }

    /// Whether the driver runs a precheck before each check.
    pub fn has_precheck(&self) -> bool {
        self.precheck
    }

    /// The lease in microseconds: the check statement's fourth parameter.
    pub fn interval_micros(&self) -> i64 {
        duration_micros(self.interval)
    }

    pub(crate) fn jitter_ppm(&self) -> u64 {
        self.jitter_ppm
    }
}

/// Builds a [`Config`]; every setter has the Go flag's default.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigBuilder {
    name: String,
    process: String,
    interval: Duration,
    timeout: Option<Duration>,
    jitter: f64,
    margin: Option<Duration>,
    retry: Option<Duration>,
    stop_ahead: Option<Duration>,
    precheck: bool,
}

impl ConfigBuilder {
    /// The same settings for another flag, `name` (a flag set's settings, one flag at a time).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The flag's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process, as given.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// The lease (default 30 s). Every process on one flag must use the same interval (or the
    /// leader a shorter one): the safety argument in the crate docs needs it.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The bound on each statement (default 1 s, or interval/10 if that is shorter); must be
    /// shorter than the interval, and at least [`MIN_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Randomisation of the schedule, in `[0, 1]` (default 0.2).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The deadline margin (default interval/20).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The retry interval after a failure (default interval/10, as in the Go flag).
    pub fn retry_interval(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// How long before the deadline leader-only work is told to stop when no renew has won
    /// (default: see [`Config::stop_ahead`]). Give it the time the work needs to stop.
    pub fn stop_ahead(mut self, stop_ahead: Duration) -> Self {
        self.stop_ahead = Some(stop_ahead);
        self
    }

    /// Whether the driver runs a precheck before each check (default no).
    pub fn precheck(mut self, precheck: bool) -> Self {
        self.precheck = precheck;
        self
    }

    /// Validates everything and derives what was not set (timeout, margin, retry interval,
    /// stop-ahead, renew interval).
    pub fn build(self) -> Result<Config, ConfigError> {
        check_name("name", &self.name)?;
        check_name("process", &self.process)?;
        in_range("interval", self.interval, MIN_INTERVAL)?;
        let timeout = self
            .timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.interval / 10));
        in_range("timeout", timeout, Duration::from_micros(1))?;
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::Jitter(self.jitter));
        }
        if timeout >= self.interval {
            return Err(ConfigError::TimeoutNotBelowInterval {
                timeout,
                interval: self.interval,
            });
        }
        let margin = self.margin.unwrap_or(self.interval / 20);
        in_range("margin", margin, Duration::ZERO)?;
        let floor = self.interval / MARGIN_FLOOR_DIVISOR;
        if margin < floor {
            return Err(ConfigError::MarginBelowFloor {
                margin,
                floor,
                interval: self.interval,
            });
        }
        if margin >= self.interval {
            return Err(ConfigError::MarginNotBelowInterval {
                margin,
                interval: self.interval,
            });
        }
        if timeout < MIN_TIMEOUT {
            return Err(match self.timeout {
                Some(timeout) => ConfigError::TimeoutBelowFloor {
                    timeout,
                    floor: MIN_TIMEOUT,
                },
                None => ConfigError::IntervalTooShort {
                    interval: self.interval,
                    timeout,
                    floor: MIN_TIMEOUT,
                    min_interval: MIN_DEFAULT_INTERVAL,
                },
            });
        }
        let room = self.interval - margin;
        if timeout >= room {
            return Err(ConfigError::RenewCannotFinish {
                interval: self.interval,
                margin,
                timeout,
            });
        }
        let attempt = attempt(timeout, self.precheck);
        if attempt >= room {
            return Err(ConfigError::PrecheckCannotFinish {
                interval: self.interval,
                margin,
                timeout,
            });
        }
        let retry = self.retry.unwrap_or(self.interval / 10);
        in_range("retry interval", retry, Duration::from_micros(1))?;
        if retry >= self.interval {
            return Err(ConfigError::RetryNotBelowInterval {
                retry,
                interval: self.interval,
            });
        }
        // Jitter is at most 100%, so this is exact enough for a bound.
        let longest_retry = retry + retry.mul_f64(self.jitter);
        let stop_ahead = match self.stop_ahead {
            Some(stop_ahead) => {
                in_range("stop-ahead", stop_ahead, Duration::ZERO)?;
                if stop_ahead.saturating_add(attempt) >= room {
                    return Err(ConfigError::StopAheadTooLong {
                        stop_ahead,
                        interval: self.interval,
                        margin,
                        attempt,
                    });
                }
                stop_ahead
            }
            None => (room.saturating_sub(self.interval / 2 + attempt * 2 + longest_retry))
                .min(self.interval / 4),
        };
        let renew = (self.interval / 2).min(room - stop_ahead - attempt);
        // How much later than `renew` a renew may start and, if it fails, its retry still win
        // before the lease is at risk.
        let renew_late = (room - stop_ahead).saturating_sub(renew + attempt * 2 + longest_retry);
        Ok(Config {
            name: self.name,
            process: self.process,
            interval: self.interval,
            timeout,
            // Exact for every factor with six decimals; `as` saturates and the range is checked.
            jitter_ppm: (self.jitter * 1e6) as u64,
            margin,
            retry,
            stop_ahead,
            renew,
            renew_late,
            precheck: self.precheck,
        })
    }
}

/// One renew attempt: a check, after a precheck if there is one, each bounded by the timeout.
fn attempt(timeout: Duration, precheck: bool) -> Duration {
    if precheck {
        timeout * 2
    } else {
        timeout
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Empty { field });
    }
    if let Some(at) = value.bytes().position(|b| b == 0) {
        return Err(ConfigError::Nul { field, at });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(ConfigError::TooLong {
            field,
            len: value.len(),
            max: MAX_NAME_BYTES,
        });
    }
    Ok(())
}

fn in_range(field: &'static str, value: Duration, min: Duration) -> Result<(), ConfigError> {
    if value < min || value > MAX_DURATION {
        return Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max: MAX_DURATION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_match_the_go_flag() {
        let c = Config::builder("n", "p").build().unwrap();
        assert_eq!(c.interval(), secs(30));
        assert_eq!(c.timeout(), secs(1));
        assert_eq!(c.jitter(), 0.2);
        assert_eq!(c.retry_interval(), secs(3));
        assert_eq!(c.renew_interval(), secs(15));
        assert_eq!(c.margin(), Duration::from_millis(1500));
        assert_eq!(c.interval_micros(), 30_000_000);
        assert_eq!(c.stop_ahead(), Duration::from_millis(7500));
    }

    #[test]
    fn a_margin_below_the_clock_drift_floor_is_refused_naming_the_margin() {
        let b = || Config::builder("n", "p").interval(secs(30));
        let e = b().margin(Duration::ZERO).build().unwrap_err();
        assert_eq!(
            e,
            ConfigError::MarginBelowFloor {
                margin: Duration::ZERO,
                floor: Duration::from_millis(30),
                interval: secs(30),
            }
        );
        assert!(e.to_string().starts_with("margin 0ns is below"), "{e}");
        let e = b()
            .margin(Duration::from_micros(29_999))
            .build()
            .unwrap_err();
        assert!(matches!(e, ConfigError::MarginBelowFloor { .. }), "{e}");
        assert!(b().margin(Duration::from_millis(30)).build().is_ok());
        // The shortest lease still refuses 0.
        let e = Config::builder("n", "p")
            .interval(MIN_INTERVAL)
            .margin(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(e, ConfigError::MarginBelowFloor { .. }), "{e}");
    }

    #[test]
    fn defaults_adapt_to_a_short_lease_instead_of_clashing_with_it() {
        let c = Config::builder("n", "p")
            .interval(Duration::from_millis(200))
            .build()
            .unwrap();
        assert_eq!(c.timeout(), Duration::from_millis(20));
        assert_eq!(c.margin(), Duration::from_millis(10));
        assert_eq!(c.retry_interval(), Duration::from_millis(20));
        // A timeout the user gave still clashes, and the error names both values.
        let e = Config::builder("n", "p")
            .interval(Duration::from_millis(200))
            .timeout(secs(1))
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            ConfigError::TimeoutNotBelowInterval {
                timeout: secs(1),
                interval: Duration::from_millis(200)
            }
        );
    }

    #[test]
    fn with_the_default_stop_ahead_one_failed_renew_never_puts_the_lease_at_risk() {
        // For every lease, a renew attempt that fails after its whole time, the longest retry
        // interval and a second whole attempt end before the at-risk instant; without a
        // precheck, the work gets time to stop at every lease length.
        for ms in [400, 1_000, 2_000, 5_000, 10_000, 30_000, 120_000] {
            for precheck in [false, true] {
                let c = Config::builder("n", "p")
                    .interval(Duration::from_millis(ms))
                    .precheck(precheck)
                    .build()
                    .unwrap();
                let at_risk = c.interval() - c.margin() - c.stop_ahead();
                let blip = c.renew_interval()
                    + c.attempt() * 2
                    + c.retry_interval().mul_f64(1.0 + c.jitter());
                if c.stop_ahead() > Duration::ZERO {
                    assert!(blip <= at_risk, "{ms} ms: {blip:?} > {at_risk:?}");
                }
                if !precheck {
                    assert!(c.stop_ahead() > Duration::ZERO, "{ms} ms: no stop-ahead");
                }
                if !precheck {
                    // The Go flag's schedule whenever the default timeout allows it.
                    assert_eq!(c.renew_interval(), Duration::from_millis(ms / 2), "{ms} ms");
                }
                assert!(c.renew_interval() + c.attempt() <= at_risk);
            }
        }
    }

    #[test]
    fn an_interval_too_short_to_run_a_statement_is_refused_naming_the_interval() {
        // 10 ms implies a 1 ms timeout: the table could not even be created.
        let e = Config::builder("n", "p")
            .interval(Duration::from_millis(10))
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            ConfigError::IntervalTooShort {
                interval: Duration::from_millis(10),
                timeout: Duration::from_millis(1),
                floor: MIN_TIMEOUT,
                min_interval: MIN_DEFAULT_INTERVAL,
            }
        );
        let text = e.to_string();
        assert!(
            text.starts_with("interval 10ms is too short") && text.contains("100ms"),
            "{text}"
        );
        // The floor exactly: 100 ms with its default timeout, or a shorter lease with a timeout
        // given at the floor.
        assert_eq!(MIN_DEFAULT_INTERVAL, MIN_TIMEOUT * 10);
        let c = Config::builder("n", "p")
            .interval(MIN_DEFAULT_INTERVAL)
            .build()
            .unwrap();
        assert_eq!(c.timeout(), MIN_TIMEOUT);
        assert!(Config::builder("n", "p")
            .interval(Duration::from_millis(99))
            .build()
            .is_err());
        assert!(Config::builder("n", "p")
            .interval(Duration::from_millis(50))
            .timeout(MIN_TIMEOUT)
            .build()
            .is_ok());
        // A timeout given below the floor is named as the timeout.
        assert_eq!(
            Config::builder("n", "p")
                .interval(secs(2))
                .timeout(Duration::from_millis(5))
                .build(),
            Err(ConfigError::TimeoutBelowFloor {
                timeout: Duration::from_millis(5),
                floor: MIN_TIMEOUT
            })
        );
    }

    #[test]
    fn a_long_stop_ahead_renews_earlier_and_one_that_leaves_no_time_is_refused() {
        let c = Config::builder("n", "p")
            .interval(secs(10))
            .stop_ahead(secs(6))
            .build()
            .unwrap();
        // 10 s - 0.5 s margin - 6 s - 1 s timeout
        assert_eq!(c.renew_interval(), Duration::from_millis(2500));
        let e = Config::builder("n", "p")
            .interval(secs(10))
            .stop_ahead(secs(9))
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            ConfigError::StopAheadTooLong {
                stop_ahead: secs(9),
                interval: secs(10),
                margin: Duration::from_millis(500),
                attempt: secs(1)
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("stop-ahead 9s") && text.contains("interval 10s"),
            "{text}"
        );
    }

    #[test]
    fn a_precheck_is_budgeted_in_the_schedule() {
        // The issue's case: 2 s lease, 500 ms timeout, a precheck.
        let c = Config::builder("n", "p")
            .interval(secs(2))
            .timeout(Duration::from_millis(500))
            .precheck(true)
            .build()
            .unwrap();
        assert_eq!(c.attempt(), secs(1));
        assert!(c.renew_interval() + c.attempt() <= c.interval() - c.margin() - c.stop_ahead());
        let e = Config::builder("n", "p")
            .interval(secs(2))
            .timeout(Duration::from_millis(950))
            .precheck(true)
            .build()
            .unwrap_err();
        assert!(matches!(e, ConfigError::PrecheckCannotFinish { .. }), "{e}");
    }

    #[test]
    fn renew_interval_shrinks_so_a_slow_renew_lands_before_the_deadline() {
        // The Go peer's benchmark settings: 2 s lease, 1 s timeout.
        let c = Config::builder("n", "p")
            .interval(secs(2))
            .timeout(secs(1))
            .build()
            .unwrap();
        assert_eq!(c.margin(), Duration::from_millis(100));
        assert_eq!(c.renew_interval(), Duration::from_millis(900));
        assert!(c.renew_interval() + c.timeout() <= c.interval() - c.margin());
    }

    #[test]
    fn names_are_checked() {
        let err = |n: &str, p: &str| Config::builder(n, p).build().unwrap_err();
        assert_eq!(err("", "p"), ConfigError::Empty { field: "name" });
        assert_eq!(err("n", ""), ConfigError::Empty { field: "process" });
        assert_eq!(
            err("a\0b", "p"),
            ConfigError::Nul {
                field: "name",
                at: 1
            }
        );
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            err("n", &long),
            ConfigError::TooLong {
                field: "process",
                len: MAX_NAME_BYTES + 1,
                max: MAX_NAME_BYTES
            }
        );
        assert!(Config::builder("x".repeat(MAX_NAME_BYTES), "p")
            .build()
            .is_ok());
    }

    #[test]
    fn durations_and_jitter_are_checked() {
        let b = || Config::builder("n", "p");
        assert!(matches!(
            b().interval(Duration::ZERO).build(),
            Err(ConfigError::OutOfRange {
                field: "interval",
                ..
            })
        ));
        assert!(matches!(
            b().timeout(Duration::ZERO).build(),
            Err(ConfigError::OutOfRange {
                field: "timeout",
                ..
            })
        ));
        assert!(matches!(
            b().interval(Duration::MAX).build(),
            Err(ConfigError::OutOfRange {
                field: "interval",
                ..
            })
        ));
        for j in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(b().jitter(j).build(), Err(ConfigError::Jitter(_))),
                "{j}"
            );
        }
        assert!(b().jitter(0.0).build().is_ok());
        assert!(b().jitter(1.0).build().is_ok());
    }

    #[test]
    fn clashing_values_are_named() {
        let b = || Config::builder("n", "p").interval(secs(10));
        assert_eq!(
            b().timeout(secs(10)).build(),
            Err(ConfigError::TimeoutNotBelowInterval {
                timeout: secs(10),
                interval: secs(10)
            })
        );
        assert_eq!(
            b().margin(secs(10)).build(),
            Err(ConfigError::MarginNotBelowInterval {
                margin: secs(10),
                interval: secs(10)
            })
        );
        let e = b().timeout(secs(6)).margin(secs(4)).build().unwrap_err();
        assert_eq!(
            e,
            ConfigError::RenewCannotFinish {
                interval: secs(10),
                margin: secs(4),
                timeout: secs(6)
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("interval 10s") && text.contains("timeout 6s"),
            "{text}"
        );
        assert_eq!(
            b().retry_interval(secs(10)).build(),
            Err(ConfigError::RetryNotBelowInterval {
                retry: secs(10),
                interval: secs(10)
            })
        );
    }
}
