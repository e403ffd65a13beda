//! What can be wrong with a configuration.

use core::time::Duration;

#[cfg(doc)]
use super::{MARGIN_FLOOR_DIVISOR, MAX_NAME_BYTES, MIN_DEFAULT_INTERVAL, MIN_TIMEOUT};

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
