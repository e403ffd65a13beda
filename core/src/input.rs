//! What the driver tells the core: replies to the statements it ran, and outside events.
//!
//! Timers are not an input variant: the driver calls [`Flag::handle_timeout`](crate::Flag::handle_timeout)
//! when [`Flag::poll_timeout`](crate::Flag::poll_timeout) passes.

use core::time::Duration;

use crate::command::WonBy;
use crate::server::Server;
use crate::time::DbTime;

/// One input to [`Flag::handle_input`](crate::Flag::handle_input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// The reply to [`Command::Check`](crate::Command::Check): the row after the statement and
    /// the database's time. One statement carries what the Go flag needs three for.
    Checked(Checked<'a>),
    /// The reply to [`Command::Release`](crate::Command::Release): whether the row was released
    /// (one row changed) or the compare-and-set found it changed (zero rows).
    Released {
        /// `true` if the statement changed the row.
        released: bool,
    },
    /// The pending statement (check or release) failed or timed out. Its outcome is unknown:
    /// it may have changed the row.
    Failed(Failure),
    /// The answer to [`Command::RunPrecheck`](crate::Command::RunPrecheck).
    Precheck(Precheck),
    /// A `NOTIFY` said the flag was released by its holder: worth checking at once. Losing
    /// one only costs time; the core never relies on it.
    Notified,
    /// The user asked to close: lower, release the row if held, then
    /// [`Command::Closed`](crate::Command::Closed).
    Close,
    /// The user resigns: lower (ending the leader-only work), release the row once the work
    /// has stopped, and stay a follower, taking nothing for `hold_off` if given (a follower
    /// notified of the release takes over first either way). Unlike [`Input::Close`] the core
    /// keeps running. A statement in flight is awaited first, so a renew that wins meanwhile
    /// is released too.
    Resign {
        /// How long to take nothing (no takeover, no insert) after resigning.
        hold_off: Option<Duration>,
    },
    /// The leader-only work asked to stop by [`Command::StopWork`](crate::Command::StopWork)
    /// has stopped. Never a contract error: a late one is ignored.
    WorkStopped,
    /// The driver opened a connection (the first, or a reconnect), and this is what the server
    /// said about itself. A statement (check or release) is never run on a connection the core
    /// has not heard of: the driver answers it with this instead, and the core sends it again,
    /// knowing the server. Handed in with no statement pending, it is news all the same. A
    /// change from the previous connection's server, or a recent promotion, is evidence that
    /// committed writes may be lost ([`Anomaly::LostWrites`](crate::Anomaly::LostWrites)).
    Connected(Server),
    /// Whether this process wants to lead the flag; a new flag does (unless started with
    /// [`Flag::new_unwanted`](crate::Flag::new_unwanted)). A balanced set
    /// ([`balance`](crate::balance)) hands it in as the assignment changes:
    ///
    /// - unwanted, a follower is *dormant*: it schedules no check and ignores notifications
    ///   (the set watches the row with its own scan), and a check already in flight neither
    ///   takes over nor inserts (`may_take` and `may_insert` false);
    /// - unwanted, a leader hands the flag over as a close would, but keeps running: it
    ///   lowers ([`LowerReason::Unwanted`](crate::LowerReason::Unwanted)), asks for the work to
    ///   stop ([`Command::StopWork`](crate::Command::StopWork)), and releases the row once it
    ///   has (after the pending statement, if any, returns);
    /// - wanted again, a follower checks at once (the takeover attempt) and from then on as
    ///   usual.
    ///
    /// The protocol is unchanged: this only withholds takeovers and renewals. (This was
    /// `Flag::set_wanted`, a side door beside this enum, until issue 27.)
    Wanted(bool),
    /// The driver is about to send a batch of checks ([`sql::CHECK_BATCH`](crate::sql::CHECK_BATCH))
    /// for the flags of its set: a flag whose [`Flag::poll_early_check`](crate::Flag::poll_early_check)
    /// has passed starts its check now, to go in the same statement
    /// ([`Command::Check`](crate::Command::Check); a win's lease counts from now, as every
    /// check's does): a leader's renew due within
    /// [`Config::renew_early`](crate::Config::renew_early), a follower's check once the holder's
    /// lease can have expired. Anything else ignores it. Never a contract error.
    Batching,
}

/// What the check statement returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The statement changed the row in this process's favour (insert, renew or takeover).
    /// Only this proves leadership: an unchanged row is read as of the statement's start.
    pub won: bool,
    /// How it won (`won_by`): inserted, renewed a version of ours, or took an expired lease
    /// over; `None` if it did not win (or the driver cannot tell: a new term is then called a
    /// takeover).
    pub won_by: Option<WonBy>,
    /// The server that ran the statement, as the statement itself computed it
    /// (`promoted_ago` is never known there). `None` if the driver cannot tell; then only
    /// [`Input::Connected`] tells the core about servers. When it is not the server the
    /// check expected ([`Command::Check`](crate::Command::Check)'s `expect`), the statement
    /// changed nothing, and the core treats it as a new connection to that server.
    pub server: Option<Server>,
    /// The row (after the change if `won`), or `None` if none was visible: a concurrent
    /// insert not yet in the statement's snapshot.
    pub row: Option<Row<'a>>,
    /// The database's `now()` when the statement ran.
    pub now: DbTime,
}

/// A row of the flags table as decoded. Each field is optional because a table created by
/// hand may allow NULLs; the core treats such a row as an anomaly, never as its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row<'a> {
    /// `holder`: the process that wrote it last.
    pub holder: Option<&'a str>,
    /// `version`: raised by every write (by one for a renewal; a new term of ours jumps to the
    /// server's clock in µs).
    pub version: Option<i64>,
    /// `timestamp`: the database's time of the last write.
    pub timestamp: Option<DbTime>,
}

/// Why a statement did not return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The database or the connection returned an error.
    Error,
    /// The driver gave up after the configured timeout.
    Timeout,
    /// The check was one of a batch, and its row was skipped because another transaction
    /// held its lock ([`sql::CHECK_BATCH`](crate::sql::CHECK_BATCH), `attempted = false`): it
    /// changed nothing. It counts as a failed check for this flag alone, except that nothing
    /// is in doubt.
    NotAttempted,
}

/// The answer of the user's precheck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precheck {
    /// Go ahead and check.
    Pass,
    /// Do not lead now.
    Refuse,
    /// The precheck itself failed; treated as a refusal.
    Error,
}

/// The kind of an input, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// [`Input::Checked`].
    Checked,
    /// [`Input::Released`].
    Released,
    /// [`Input::Failed`].
    Failed,
    /// [`Input::Precheck`].
    Precheck,
}

impl Input<'_> {
    pub(crate) fn reply_kind(&self) -> Option<InputKind> {
        match self {
            Input::Checked(_) => Some(InputKind::Checked),
            Input::Released { .. } => Some(InputKind::Released),
            Input::Failed(_) => Some(InputKind::Failed),
            Input::Precheck(_) => Some(InputKind::Precheck),
            Input::Notified
            | Input::Close
            | Input::Resign { .. }
            | Input::WorkStopped
            | Input::Connected(_)
            | Input::Wanted(_)
            | Input::Batching => None,
        }
    }
}
