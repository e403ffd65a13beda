//! What the core asks of the driver, drained with [`Flag::poll_command`](crate::Flag::poll_command).

use crate::server::Identity;
use crate::time::Instant;

/// One command. Statements are named, not written: the driver binds the parameters to the text
/// in [`sql`](crate::sql), the one place where SQL lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Run [`sql::CHECK`](crate::sql::CHECK) with `($1 name, $2 process, $3 renew, $4 interval
    /// in µs, $5 floor, $6 may_take, $7 may_insert, $8 continues, $9..$11 expect)` and reply with
    /// [`Input::Checked`](crate::Input::Checked) or [`Input::Failed`](crate::Input::Failed). It
    /// renews the row if it is ours at version `renew`; with `may_take`, it takes the row over
    /// if its lease has expired by the database's clock; with `may_insert`, it inserts the row
    /// if there is none; it always returns the row and `now()`.
    Check {
        /// The version this process last wrote (or found under its name): the renew's
        /// compare-and-set. `None` renews nothing.
        renew: Option<i64>,
        /// The lowest version a win may write: one above the highest this process has seen,
        /// so its fencing tokens never go backwards, even after the database lost writes.
        floor: i64,
        /// Whether this check may take over an expired lease. `false` for one lease after
        /// evidence that committed writes were lost, so that any lease granted on the lost
        /// history has ended first.
        may_take: bool,
        /// Whether this check may insert a missing row: only while this process has never
        /// seen the row, or a lease after it saw the row vanish (and not while fenced). A row
        /// that vanished (a `DELETE`, a lost history) may have had a live lease a moment ago;
        /// its holder's renew fails, but until then it still leads.
        may_insert: bool,
        /// The fencing token of the term a renew of `renew` continues: set while this process
        /// leads, `None` when a win would start a new term (a renew of a lapsed lease of ours
        /// included). The check writes it into the term column, which
        /// [`sql::FENCE`](crate::sql::FENCE) compares with the token, so a later term of this
        /// same process never passes an earlier term's fence.
        continues: Option<i64>,
        /// The server this process knows it talks to (the latest [`Input::Connected`], or the
        /// latest check's reply): the check changes nothing on any other, and says which
        /// server answered instead. `None` before any is known: nothing is compared.
        ///
        /// [`Input::Connected`]: crate::Input::Connected
        expect: Option<Identity>,
    },
    /// Run [`sql::RELEASE`](crate::sql::RELEASE) with `($1 name, $2 process, $3 version, $4
    /// channel)` and reply with [`Input::Released`](crate::Input::Released) or
    /// [`Input::Failed`](crate::Input::Failed).
    Release {
        /// The version this process holds.
        version: i64,
    },
    /// Run the user's precheck and reply with [`Input::Precheck`](crate::Input::Precheck).
    RunPrecheck,
    /// This process now leads, until `lease.deadline` unless renewed.
    Raise(Lease),
    /// The lease was renewed: same term (`token`), later deadline. If the lease was at risk,
    /// the risk is over: the new `at_risk` lies ahead.
    Renewed(Lease),
    /// No renew has won by `lease.at_risk`: tell the leader-only work to begin stopping now,
    /// so that it is over by `lease.deadline`, when this process stops believing it leads
    /// (the deadline is the hard bound). The lease still holds until then; a renew that wins
    /// meanwhile ends the risk ([`Command::Renewed`]), and a `Lower` follows otherwise.
    /// Emitted once per lease, at most.
    AtRisk(Lease),
    /// This process no longer leads.
    Lower(LowerReason),
    /// A release follows this `Lower` (close, resign, or a refused precheck): end the leader-only work
    /// and reply [`Input::WorkStopped`](crate::Input::WorkStopped) once it has ended. The core
    /// releases the row only after that, so the next leader does not start while this one's
    /// work still runs: if the work has not stopped a margin after the lease's deadline, the
    /// release is given up and the lease left to expire by itself (nobody can take over before
    /// then anyway). A driver with no work to wait for replies at once.
    StopWork,
    /// Something in the table is odd; log it. The core keeps going.
    Anomaly(Anomaly),
    /// [`Input::Close`](crate::Input::Close) is complete: nothing is pending, the driver may
    /// stop. No command follows.
    Closed,
}

/// A term of leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The fencing token: the row version at which this term was won. A later leader's token
    /// is always larger, so a system that remembers the largest token it has seen can refuse
    /// the writes of a deposed leader.
    pub token: i64,
    /// The row version written by the latest renew of this term.
    pub version: i64,
    /// The local instant at which this process stops believing it leads, unless it renews:
    /// when it sent the winning statement, plus the lease, minus the margin.
    pub deadline: Instant,
    /// The local instant from which the lease is at risk unless a renew has won by then: the
    /// deadline minus the stop-ahead ([`Config::stop_ahead`](crate::Config::stop_ahead)). Work
    /// told to stop then has until the deadline.
    pub at_risk: Instant,
    /// How the term was won.
    pub won_by: WonBy,
}

impl Lease {
    /// Whether the lease still holds at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.deadline
    }

    /// Whether the lease is at risk at `now`: past `at_risk` (and so, unless renewed since,
    /// told by [`Command::AtRisk`]).
    pub fn is_at_risk(&self, now: Instant) -> bool {
        now >= self.at_risk
    }
}

/// How a term of leadership began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WonBy {
    /// This process inserted the row.
    Created,
    /// This process took over a lease that had expired.
    TookOver,
    /// The row already named this process (a restart, or a renew whose reply was lost) and
    /// this process renewed it.
    Renewed,
}

/// Why leadership ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LowerReason {
    /// The deadline passed without a successful renew (database hung or unreachable, process
    /// paused, replies too slow).
    DeadlinePassed,
    /// The row was written by another process: its compare-and-set beat ours.
    Lost,
    /// The precheck refused or failed.
    PrecheckRefused,
    /// The user closed the flag.
    Closed,
    /// The user resigned ([`Input::Resign`](crate::Input::Resign)).
    Resigned,
    /// A balanced set no longer wants this process to lead the flag
    /// ([`Input::Wanted`](crate::Input::Wanted)): it hands it over to the process the
    /// balance designates (a [`Command::StopWork`] and a release follow).
    Unwanted,
}

/// An oddity in the table that the core works around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Anomaly {
    /// The row has a NULL holder, version or timestamp (a table created by hand that allows
    /// NULLs). Nobody can renew it; with a version and a timestamp it is taken over once
    /// expired, but a NULL version or timestamp blocks it until an operator fixes or deletes it.
    NullInRow,
    /// The row's version is `i64::MAX`: it cannot be incremented, so the flag is stuck until an
    /// operator resets it.
    VersionExhausted,
    /// The row's timestamp is `infinity`: it never expires.
    NeverExpires,
    /// A live row names this process at a version this incarnation did not write and has no
    /// renew in doubt for: another process holds it under the same name (a twin given the same
    /// name, or an earlier incarnation of this one, after a crash, that may still run). Process
    /// names must be unique per flag; this one steps aside and takes the flag only once that
    /// lease has expired or been released, as any follower would. (The Go flag adopts any row
    /// under its name.)
    DuplicateProcess,
    /// Committed writes may have been lost: the row went back to a version below one this
    /// process has seen, or the connection landed on another server, a promoted standby, or a
    /// restarted server that does not make every commit durable. This process takes nothing
    /// for one lease (any lease granted on the lost history has ended by then) and never writes
    /// a version below one it has seen.
    LostWrites,
}
