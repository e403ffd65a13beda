//! The leadership protocol for one flag in one process.
//!
//! Read it top-down: here the state, the contract and the entry points (`handle_input`,
//! `handle_timeout`, the polls); then one file per concern:
//!
//! - [`check`]: sending the check, its reply, won or not won, the lease and its deadline;
//! - [`handover`]: close, resign, unwanted and a refused precheck, and the release that waits
//!   for the leader-only work to stop;
//! - [`history`]: the versions seen and written, the server's identity, lost writes and the
//!   fence that follows them;
//! - [`schedule`]: when to check next, jitter and the holder's expiry.

mod check;
mod handover;
mod history;
mod schedule;

use crate::command::{Command, Lease, LowerReason};
use crate::config::Config;
use crate::error::ContractError;
use crate::input::{Input, InputKind};
use crate::queue::Queue;
use crate::time::{DbTime, Instant};

use handover::{Handover, Why};
use history::History;
use schedule::Schedule;

/// One process's view of one flag: a sans-IO state machine.
///
/// Feed it inputs with [`handle_input`](Flag::handle_input) and
/// [`handle_timeout`](Flag::handle_timeout); after each call, drain
/// [`poll_command`](Flag::poll_command) until it returns `None`, then sleep until
/// [`poll_timeout`](Flag::poll_timeout). See the crate docs for the whole loop.
///
/// `Eq` and `Hash` cover the whole state (configuration, jitter generator, queued commands):
/// a model checker stores states by their hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flag {
    config: Config,
    role: Role,
    pending: Pending,
    phase: Phase,
    /// Whether [`Command::AtRisk`] was emitted for the current lease.
    told_at_risk: bool,
    /// Resigning, and the leader-only work a release waits for.
    handover: Handover,
    /// What this process knows of the row's past: the versions it saw and wrote, the server,
    /// the fence after lost writes.
    history: History,
    /// When to check next, and the jitter that spreads it.
    schedule: Schedule,
    /// What the last check returned.
    seen: Option<Seen>,
    /// Whether this process wants to lead the flag ([`Input::Wanted`]; always, unless a
    /// balanced set says otherwise). A follower that does not want it is *dormant*: it runs
    /// no check, and one in flight takes and inserts nothing; a leader that does not want it
    /// hands it over.
    wanted: bool,
    /// The latest `now` handed in; time never runs backwards inside the core.
    now: Instant,
    commands: Queue,
}

/// Whether this process leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    /// Not leading. `ours` is a version of the row this incarnation wrote (a lapsed lease, or
    /// its renew in doubt): the next check tries to renew it.
    Follower { ours: Option<i64> },
    /// Leading until `lease.deadline`.
    Leader(Lease),
}

/// What the driver is doing for us. At most one thing at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pending {
    Nothing,
    Precheck,
    /// `sent_at`: when the command was emitted. The driver sends it later, never earlier, so a
    /// deadline counted from here is conservative.
    /// `continues`: the term the check asked the row to continue (its term column).
    Check {
        sent_at: Instant,
        renew: Option<i64>,
        continues: Option<i64>,
    },
    Release {
        version: i64,
    },
    /// A release waits for the leader-only work to stop.
    AwaitStop {
        version: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// Checking: leading or following.
    Running,
    /// Lowered, and handing the flag over for a reason (close, resign, unwanted, a refused
    /// precheck): waiting for the statement in flight, the work to stop, or the release's
    /// reply. Then running again, or closed.
    HandingOver(Why),
    Closed,
}

/// What the last check returned about the row, for observers (`current_holder`): no extra
/// statement is needed to know who leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seen {
    /// Whether a row exists.
    pub found: bool,
    /// Whether the row names this process.
    pub holder_is_self: bool,
    /// The row's version (the holder's fencing token is at most this).
    pub version: Option<i64>,
    /// The row's timestamp.
    pub timestamp: Option<DbTime>,
    /// The database's time when the statement ran.
    pub db_now: DbTime,
    /// Whether the lease had expired by the database's clock (the Go flag's rule).
    pub expired: bool,
    /// The local instant the reply was handled.
    pub at: Instant,
}

impl Seen {
    /// The lease's age by the database's clock when it was read, in microseconds.
    pub fn lease_age_micros(&self) -> Option<i64> {
        self.timestamp.map(|t| self.db_now.micros_since(t))
    }
}

/// Commands left undrained beyond this make the next input a contract error; one input emits
/// at most five, so the queue never overflows.
const DRAIN_LIMIT: usize = 8;

impl Flag {
    /// Starts competing at `now`: the first check is queued at once (nobody waits a lease at
    /// start-up). `seed` drives the jitter; give each process a different one.
    pub fn new(config: Config, seed: u64, now: Instant) -> Flag {
        let mut flag = Flag {
            config,
            role: Role::Follower { ours: None },
            pending: Pending::Nothing,
            phase: Phase::Running,
            told_at_risk: false,
            handover: Handover::default(),
            history: History::default(),
            schedule: Schedule::new(seed),
            seen: None,
            wanted: true,
            now,
            commands: Queue::new(),
        };
        flag.start_check(now);
        flag
    }

    /// Starts at `now` without wanting the flag (see [`Input::Wanted`]): no
    /// check until it is wanted. A balanced set starts its shards so, to take only those the
    /// balance designates to it.
    pub fn new_unwanted(config: Config, seed: u64, now: Instant) -> Flag {
        let mut flag = Flag::new(config, seed, now);
        flag.commands = Queue::new();
        flag.pending = Pending::Nothing;
        flag.wanted = false;
        flag
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether this process leads at `now`: it holds a lease whose deadline is later than
    /// `now`. This is answered from the deadline alone, so a process that was paused, or whose
    /// database hangs, answers `false` the instant the deadline passes, before any input is
    /// handled.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.lease_at(now).is_some()
    }

    /// The current lease, if this process leads at `now`.
    pub fn lease_at(&self, now: Instant) -> Option<Lease> {
        match self.role {
            Role::Leader(lease) if lease.is_valid(now) && self.phase == Phase::Running => {
                Some(lease)
            }
            _ => None,
        }
    }

    /// Whether this process wants the flag (see [`Input::Wanted`]).
    pub fn is_wanted(&self) -> bool {
        self.wanted
    }

    /// What the last check returned.
    pub fn seen(&self) -> Option<Seen> {
        self.seen
    }

    /// Whether [`Command::Closed`] has been emitted.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The next command for the driver. Call until `None` after every input and timeout.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop()
    }

    /// When to call [`handle_timeout`](Flag::handle_timeout) next, if nothing else happens
    /// first: the next check, the leader's at-risk instant or deadline, or when a release that
    /// waits for the work is given up. `None` when closed, or while a statement is pending and
    /// this process does not lead (its reply comes first).
    ///
    /// It depends on the state alone: polling again without an input returns the same instant,
    /// and it is never earlier than the latest `now` handed in.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = match self.role {
            Role::Leader(lease) if self.phase == Phase::Running && !self.told_at_risk => {
                Some(lease.at_risk.min(lease.deadline))
            }
            Role::Leader(lease) if self.phase == Phase::Running => Some(lease.deadline),
            _ => None,
        };
        let check = match (self.pending, self.phase) {
            (Pending::Nothing, Phase::Running) if !self.dormant() => self.schedule.next_check,
            (Pending::AwaitStop { .. }, _) => self.handover.stopping,
            _ => None,
        };
        match (deadline, check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest instant the scheduled check may be sent ahead of
    /// [`poll_timeout`](Flag::poll_timeout) to join a batch ([`Input::Batching`]): a leader's
    /// renew, [`Config::renew_early`] before it falls due; a follower's check, from the instant
    /// the holder's lease can have expired (skipping only the jitter that spreads processes:
    /// it still sleeps until then). `None` when no check is scheduled, or the one scheduled
    /// may not go early (a retry after a failure, the end of a fence).
    ///
    /// [`Config::renew_early`]: crate::Config::renew_early
    #[must_use]
    pub fn poll_early_check(&self) -> Option<Instant> {
        match (self.pending, self.phase, self.schedule.next_check) {
            (Pending::Nothing, Phase::Running, Some(_)) if !self.dormant() => {
                self.schedule.earliest
            }
            _ => None,
        }
    }

    /// A timer fired at `now`: lower if the deadline passed, say the lease is at risk, start a
    /// check if one is due. Calling it early, or more often than needed, is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        let now = self.advance(now);
        self.fire_due(now);
    }

    /// Handles one input at `now`.
    ///
    /// Returns an error, and changes nothing, only if the driver broke the contract: a reply
    /// with nothing pending, a reply of the wrong kind, a won check without a version, or
    /// commands left undrained.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), ContractError> {
        self.check_contract(&input)?;
        if self.phase == Phase::Closed {
            return Ok(());
        }
        let now = self.advance(now);
        match input {
            Input::Checked(reply) => self.on_checked(now, reply),
            Input::Released { released } => self.on_released(now, released),
            Input::Failed(failure) => self.on_failed(now, failure),
            Input::Precheck(answer) => self.on_precheck(now, answer),
            Input::Notified => self.on_notified(now),
            Input::WorkStopped => self.work_stopped(),
            Input::Connected(server) => self.on_connected(now, server),
            Input::Close => self.on_close(now),
            Input::Resign { hold_off } => self.on_resign(now, hold_off),
            Input::Wanted(wanted) => self.on_wanted(now, wanted),
            Input::Batching => self.on_batching(now),
        }
        // An input may arrive after a check fell due: serve it now, so that poll_timeout
        // never points into the past.
        self.fire_due(now);
        Ok(())
    }

    fn check_contract(&self, input: &Input<'_>) -> Result<(), ContractError> {
        if self.commands.len() > DRAIN_LIMIT {
            return Err(ContractError::NotDrained);
        }
        let Some(got) = input.reply_kind() else {
            return Ok(());
        };
        let expected = match (self.pending, got) {
            (Pending::Nothing | Pending::AwaitStop { .. }, _) => {
                return Err(ContractError::NothingPending { got })
            }
            (Pending::Precheck, InputKind::Precheck) => None,
            (Pending::Precheck, _) => Some("a precheck answer"),
            (Pending::Check { .. }, InputKind::Checked | InputKind::Failed) => None,
            (Pending::Check { .. }, _) => Some("the check's reply"),
            (Pending::Release { .. }, InputKind::Released | InputKind::Failed) => None,
            (Pending::Release { .. }, _) => Some("the release's reply"),
        };
        if let Some(expected) = expected {
            return Err(ContractError::WrongReply { expected, got });
        }
        if let Input::Checked(reply) = input {
            if reply.won && reply.row.and_then(|r| r.version).is_none() {
                return Err(ContractError::WonWithoutVersion);
            }
            if reply.won && self.answered_by_another(reply) {
                return Err(ContractError::WonOnAnotherServer);
            }
        }
        Ok(())
    }

    /// Moves the clock forward, says when the lease is at risk, and lowers at the deadline.
    /// Every input starts here, so a reply that arrives late is judged after the lease it would
    /// extend has already lapsed.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = now.max(self.now);
        self.now = now;
        if let Role::Leader(lease) = self.role {
            if !lease.is_valid(now) {
                self.role = Role::Follower {
                    ours: Some(lease.version),
                };
                self.handover.lapsed_until = Some(lease.deadline + self.config.margin());
                self.commands
                    .push(Command::Lower(LowerReason::DeadlinePassed));
            } else {
                self.tell_if_at_risk(now);
            }
        }
        now
    }

    /// Emits [`Command::AtRisk`] once the current lease reaches its at-risk instant without a
    /// renew having won.
    fn tell_if_at_risk(&mut self, now: Instant) {
        if let (Role::Leader(lease), Phase::Running, false) =
            (self.role, self.phase, self.told_at_risk)
        {
            if lease.is_valid(now) && lease.is_at_risk(now) {
                self.told_at_risk = true;
                self.commands.push(Command::AtRisk(lease));
            }
        }
    }

    /// Emits a command the protocol would not: lets tests prove the auditor catches it.
    #[cfg(test)]
    pub(crate) fn inject(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Does what is due at `now`: the at-risk signal, giving up a release the work still
    /// holds, the next check.
    fn fire_due(&mut self, now: Instant) {
        self.tell_if_at_risk(now);
        self.hand_over_if_unwanted(now);
        if self.handover.stopping.is_some_and(|by| now >= by)
            && matches!(self.pending, Pending::AwaitStop { .. })
        {
            self.give_up_release(now);
        }
        if let (Pending::Nothing, Phase::Running, Some(due)) =
            (self.pending, self.phase, self.schedule.next_check)
        {
            if now >= due && !self.dormant() {
                self.start_check(now);
            }
        }
    }
}
