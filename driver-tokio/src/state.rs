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

/// Who holds a flag, as the last read of its row said: from a competing flag's last check
/// ([`Flag::current_holder`](crate::Flag::current_holder), no extra statement) or from an
/// [`Observer`](crate::Observer). It is as old as `checked_at`.
///
/// ```
/// # fn demo(flag: &leadership_tokio::Flag) {
/// if let Some(h) = flag.current_holder() {
///     println!("{:?} holds it at version {:?}, written {:?} ago", h.name, h.version, h.lease_age);
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The process named in the row (the last writer), or `None` if there was no row. A row
    /// revoked by an operator names nobody (the empty name).
    pub name: Option<String>,
    /// The row's version: the holder's fencing token, or a later version if it renewed since
    /// its term began (or released: a released row keeps its holder at a new version).
    pub version: Option<i64>,
    /// How old the row's write was by the database's clock when it was read.
    pub lease_age: Option<Duration>,
    /// Whether the lease had expired by the database's clock when it was read (a released
    /// row is expired).
    pub expired: bool,
    /// When the row was read, on this process's clock.
    pub checked_at: Instant,
}

impl Holder {
    /// The holder from the core's [`Seen`] and the holder column of the same check,
    /// `checked_at` being `seen.at` on the caller's clock.
    pub(crate) fn from_seen(seen: &Seen, holder: Option<&str>, checked_at: Instant) -> Holder {
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
            version: seen.version,
            lease_age,
            expired: seen.expired,
            checked_at,
        }
    }

    /// The holder from a row read by an observer (`None`: no row), judged with `lease`.
    pub(crate) fn from_row(
        row: Option<leadership_core::Row<'_>>,
        db_now: leadership_core::DbTime,
        lease: Duration,
        checked_at: Instant,
    ) -> Holder {
        let timestamp = row.and_then(|r| r.timestamp);
        let age = timestamp.map(|t| db_now.micros_since(t));
        Holder {
            name: row.and_then(|r| r.holder).map(str::to_string),
            version: row.and_then(|r| r.version),
            lease_age: age
                .and_then(|us| u64::try_from(us).ok())
                .map(Duration::from_micros),
            expired: timestamp.is_some_and(|t| t.saturating_add(lease) < db_now),
            checked_at,
        }
    }
}
