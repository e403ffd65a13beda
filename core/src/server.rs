//! What a server says about itself ([`Server`]) and the part the check compares inside the
//! statement ([`Identity`]): how the core tells that a history may have been lost.

use core::time::Duration;

use crate::time::DbTime;

/// What a server says about itself when a connection opens: enough to tell whether it is the
/// same server, with the same history, as the last connection's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Server {
    /// The cluster's identity (`pg_control_system().system_identifier`); a standby has its
    /// primary's.
    pub system: Option<u64>,
    /// The WAL timeline: a promotion starts a new one.
    pub timeline: Option<u32>,
    /// When the server's postmaster started, by its clock: a restart changes it.
    pub started: Option<DbTime>,
    /// Whether every commit is durable (`fsync` and `synchronous_commit` on): then a restart of
    /// the same server loses nothing committed.
    pub durable: bool,
    /// How long ago, by the server's clock, it was promoted from a standby, if it was and can
    /// tell (a promotion within the last lease means leases granted by the old primary may
    /// still be believed).
    pub promoted_ago: Option<Duration>,
}

impl Server {
    /// What [`sql::CHECK`](crate::sql::CHECK) compares: which server, on which history, since
    /// which start.
    pub fn identity(&self) -> Identity {
        Identity {
            system: self.system,
            timeline: self.timeline,
            started: self.started,
        }
    }
}

/// Which server answers: the part of [`Server`] that [`sql::CHECK`](crate::sql::CHECK)
/// compares inside the statement (its parameters `$9`, `$10`, `$11`), so that a server
/// swapped under an open connection (a transaction pooler) is caught where the write would
/// land. Two servers with the same identity are the same cluster, on the same timeline, in the
/// same run of its postmaster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    /// [`Server::system`].
    pub system: Option<u64>,
    /// [`Server::timeline`].
    pub timeline: Option<u32>,
    /// [`Server::started`].
    pub started: Option<DbTime>,
}
