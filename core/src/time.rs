//! The two clocks the core sees, as two types that cannot be mixed by accident.
//!
//! [`Instant`] is the process's local monotonic clock: the driver picks an origin (usually the
//! moment it started) and hands the core nanoseconds since then. [`DbTime`] is the database
//! server's wall clock as `now()` returned it, in microseconds since the Unix epoch. Leases are
//! judged by the database's clock (as the Go flag does); the leader's belief in its lease is
//! judged by its own monotonic clock. Converting between them is never meaningful, so there is
//! no conversion.

use core::fmt;
use core::ops::{Add, Sub};
use core::time::Duration;

/// A reading of the local monotonic clock, in nanoseconds since an origin the driver chooses.
///
/// Arithmetic saturates: an `Instant` never wraps.
///
/// ```
/// use core::time::Duration;
/// use leadership_core::Instant;
/// let t = Instant::from_nanos(1_000);
/// assert_eq!(t + Duration::from_nanos(500), Instant::from_nanos(1_500));
/// assert_eq!(Instant::from_nanos(3_000) - t, Duration::from_nanos(2_000));
/// assert_eq!(t - Instant::from_nanos(3_000), Duration::ZERO); // saturates
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the local clock.
    pub const ZERO: Instant = Instant(0);
    /// The furthest instant; used for "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the driver's origin.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// Nanoseconds since the driver's origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_nanos(d)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(duration_nanos(d)))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 / 1_000_000;
        write!(f, "{}.{:03}s", ms / 1000, ms % 1000)
    }
}

/// A reading of the database server's clock (`now()`, or a `timestamp with time zone` column),
/// in microseconds since 1970-01-01 00:00:00 UTC.
///
/// PostgreSQL's `infinity` and `-infinity` map to [`DbTime::INFINITY`] and
/// [`DbTime::NEG_INFINITY`]; arithmetic saturates, so they stay infinite.
///
/// ```
/// use leadership_core::DbTime;
/// // PostgreSQL's wire format counts from 2000-01-01.
/// assert_eq!(DbTime::from_pg_micros(0), DbTime::from_unix_micros(946_684_800_000_000));
/// assert_eq!(DbTime::from_pg_micros(i64::MAX), DbTime::INFINITY);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DbTime(i64);

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl DbTime {
    /// PostgreSQL's `infinity`.
    pub const INFINITY: DbTime = DbTime(i64::MAX);
    /// PostgreSQL's `-infinity`.
    pub const NEG_INFINITY: DbTime = DbTime(i64::MIN);
    /// The Unix epoch: the timestamp a release writes, so that every reader (the Go flag
    /// included) sees the lease as long expired.
    pub const UNIX_EPOCH: DbTime = DbTime(0);

    /// A database time `micros` microseconds after the Unix epoch.
    pub const fn from_unix_micros(micros: i64) -> DbTime {
        DbTime(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_unix_micros(self) -> i64 {
        self.0
    }

    /// From PostgreSQL's binary `timestamptz` (microseconds since 2000-01-01), keeping the
    /// infinities infinite.
    pub const fn from_pg_micros(pg: i64) -> DbTime {
        match pg {
            i64::MAX => DbTime::INFINITY,
            i64::MIN => DbTime::NEG_INFINITY,
            _ => DbTime(pg.saturating_add(PG_EPOCH_UNIX_MICROS)),
        }
    }

    /// To PostgreSQL's binary `timestamptz` (microseconds since 2000-01-01), keeping the
    /// infinities infinite: the inverse of [`DbTime::from_pg_micros`].
    pub const fn as_pg_micros(self) -> i64 {
        match self.0 {
            i64::MAX => i64::MAX,
            i64::MIN => i64::MIN,
            unix => unix.saturating_sub(PG_EPOCH_UNIX_MICROS),
        }
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> DbTime {
        DbTime(self.0.saturating_add(duration_micros(d)))
    }

    /// Signed microseconds from `earlier` to `self`, saturating.
    pub fn micros_since(self, earlier: DbTime) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Whether this is one of PostgreSQL's infinities.
    pub const fn is_infinite(self) -> bool {
        self.0 == i64::MAX || self.0 == i64::MIN
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A duration in whole microseconds, saturating at `i64::MAX`.
pub(crate) fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `parts` millionths of `base`.
pub(crate) fn ppm_of(base: Duration, parts: u64) -> Duration {
    let nanos = base.as_nanos() * u128::from(parts) / 1_000_000;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_saturate_instead_of_wrapping() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
    }

    #[test]
    fn db_infinities_stay_infinite() {
        assert_eq!(
            DbTime::INFINITY.saturating_add(Duration::from_secs(1)),
            DbTime::INFINITY
        );
        assert_eq!(DbTime::from_pg_micros(i64::MIN), DbTime::NEG_INFINITY);
        assert_eq!(
            DbTime::INFINITY.micros_since(DbTime::NEG_INFINITY),
            i64::MAX
        );
        assert!(DbTime::NEG_INFINITY.is_infinite());
        assert!(!DbTime::UNIX_EPOCH.is_infinite());
    }

    #[test]
    fn pg_epoch_is_2000() {
        // 2000-01-01T00:00:00Z is 946684800 seconds after the Unix epoch.
        assert_eq!(
            DbTime::from_pg_micros(0).as_unix_micros() / 1_000_000,
            946_684_800
        );
        assert_eq!(
            DbTime::from_pg_micros(i64::MAX - 1).as_unix_micros(),
            i64::MAX,
            "finite values near the end saturate rather than wrap"
        );
    }
}
