//! What a flag reports to its observers: whether this process leads ([`State`]) and who holds
//! the row ([`Holder`]).

use std::time::{Duration, Instant};

use leadership_core::Seen;

/// Whether this process leads, as [`Flag::subscribe`](crate::Flag::subscribe) publishes it:
/// transitions only (a raise, a new term, the lease at risk and back, a lower), not each
/// renewal. The deadline is on [`Flag::lease`](crate::Flag::lease) and the [`Guard`](crate::Guard).
///
/// ```
/// use leadership_tokio::State;
/// let s = State::Raised { token: 7, at_risk: false };
/// assert_eq!(s.token(), Some(7));
/// assert!(!State::Lowered.is_raised());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// This process does not lead.
    Lowered,
    /// This process leads.
    Raised {
        /// The fencing token: the row version at which the term was won.
        token: i64,
        /// No renew has won by the lease's at-risk instant: leader-only work should be
        /// stopping. A renew that wins turns it back to `false`.
        at_risk: bool,
    },
}

impl State {
    /// Whether the state is `Raised` (regardless of the deadline).
    ///
    /// ```
    /// assert!(!leadership_tokio::State::Lowered.is_raised());
    /// ```
    pub fn is_raised(&self) -> bool {
        matches!(self, State::Raised { .. })
    }

    /// The fencing token, if raised.
    ///
    /// ```
    /// assert_eq!(leadership_tokio::State::Lowered.token(), None);
    /// ```
    pub fn token(&self) -> Option<i64> {
        match self {
            State::Raised { token, .. } => Some(*token),
            State::Lowered => None,
        }
    }
}

/// Who held the flag's row at the last check, from what that check returned (no extra
/// statement). For followers and dashboards; it is as old as `checked_at`.
///
/// ```
/// use leadership_core::{DbTime, Instant as CoreInstant, Seen};
/// use leadership_tokio::Holder;
/// let seen = Seen {
///     found: true,
///     holder_is_self: false,
///     version: Some(4),
///     timestamp: Some(DbTime::from_unix_micros(1_000_000)),
///     db_now: DbTime::from_unix_micros(1_500_000),
///     expired: false,
///     at: CoreInstant::ZERO,
/// };
/// let h = Holder::from_seen(&seen, Some("pod-b"), std::time::Instant::now());
/// assert_eq!(h.name.as_deref(), Some("pod-b"));
/// assert_eq!(h.token, Some(4));
/// assert_eq!(h.lease_age, Some(std::time::Duration::from_millis(500)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The process named in the row (the last writer), or `None` if there was no row.
    pub name: Option<String>,
    /// The row's version: the holder's fencing token, or a later version if it renewed since
    /// its term began (or released: a released row keeps its holder at a new version).
    pub token: Option<i64>,
    /// How old the row's write was by the database's clock at the last check.
    pub lease_age: Option<Duration>,
    /// Whether the lease had expired by the database's clock at the last check (a released
    /// row is expired).
    pub expired: bool,
    /// When the reply of that check was handled, on this process's clock.
    pub checked_at: Instant,
}

impl Holder {
    /// Builds the holder from the core's [`Seen`] and the holder column of the same check,
    /// `checked_at` being `seen.at` on the caller's clock.
    ///
    /// ```
    /// # use leadership_core::{DbTime, Instant as CoreInstant, Seen};
    /// let seen = Seen { found: false, holder_is_self: false, version: None, timestamp: None,
    ///     db_now: DbTime::UNIX_EPOCH, expired: false, at: CoreInstant::ZERO };
    /// let h = leadership_tokio::Holder::from_seen(&seen, None, std::time::Instant::now());
    /// assert!(h.name.is_none() && h.lease_age.is_none());
    /// ```
    pub fn from_seen(seen: &Seen, holder: Option<&str>, checked_at: Instant) -> Holder {
        let lease_age = seen
            .lease_age_micros()
            .and_then(|us| u64::try_from(us).ok())
            .map(Duration::from_micros);
        Holder {
            name: if seen.found {
                holder.map(str::to_string)
            } else {
                None
            },
            token: seen.version,
            lease_age,
            expired: seen.expired,
            checked_at,
        }
    }
}
