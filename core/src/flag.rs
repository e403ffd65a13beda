//! The leadership protocol for one flag in one process.
//!
//! Read it top-down: the state, then how each input moves it, then the schedule.

use core::time::Duration;

use crate::command::{Anomaly, Command, Lease, LowerReason, WonBy};
use crate::config::Config;
use crate::error::ContractError;
use crate::input::{Checked, Failure, Input, InputKind, Precheck, Row, Server};
use crate::queue::Queue;
use crate::rng::Rng;
use crate::time::{DbTime, Instant};

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
    rng: Rng,
    role: Role,
    pending: Pending,
    phase: Phase,
    /// When the next check is due, if none is pending.
    next_check: Option<Instant>,
    /// A notification arrived while a statement was pending: check again once it returns.
    recheck: bool,
    /// A renew of ours failed or timed out while this process led, so it may have committed
    /// unseen. A row naming us at a version this incarnation did not see itself write is ours
    /// only if it is this one, seen before the lease it renewed would have lapsed
    /// ([`Flag::owns_in_doubt`]); any other row under our name is held by another process (a
    /// twin, or an earlier incarnation that may still run).
    doubt: Option<Doubt>,
    /// The highest row version this process knows it wrote. A check that does not win returns
    /// the row as of its start, so it may show one of our own writes: only a later version
    /// under our name is news.
    written: Option<i64>,
    /// The highest row version this process has seen, in any row: no check of ours writes a
    /// version at or below it, so its fencing tokens never go backwards.
    seen_max: Option<i64>,
    /// The highest row version seen since the last evidence of lost writes: a row below it
    /// means the database went back in time (again).
    history_max: Option<i64>,
    /// A check found no row after this process had seen one, and no row has been seen since:
    /// the row is known to be missing, so (once the fence that followed has ended) a check may
    /// insert it.
    missing_noticed: bool,
    /// After evidence of lost writes: take nothing (no insert, no takeover) before this
    /// instant, when every lease granted on the lost history has ended.
    fenced_until: Option<Instant>,
    /// What the server of the latest connection said about itself.
    server: Option<Server>,
    /// Whether [`Command::AtRisk`] was emitted for the current lease.
    told_at_risk: bool,
    /// The user resigned while a statement was in flight: once it returns, release what it
    /// leaves ours.
    resigning: bool,
    /// Closing looked at the row once more because a statement was in doubt.
    close_rechecked: bool,
    /// Leader-only work was told to stop ([`Command::StopWork`]) and has not said it has. The
    /// row is released only once it has: never while the work is known to run. At this
    /// instant (a margin after the lease's deadline, when the lease has expired by itself) the
    /// release is given up.
    stopping: Option<Instant>,
    /// A lease lapsed at its deadline (no renew won in time): its deadline plus the margin.
    /// Until then its leader-only work, killed at the deadline, may still be ending, so the
    /// row is not released (a release hands the flag over at once, where expiry waits the
    /// margin): the release is given up and the lease left to expire by itself.
    lapsed_until: Option<Instant>,
    /// What the last check returned.
    seen: Option<Seen>,
    /// Whether this process wants to lead the flag ([`Flag::set_wanted`]; always, unless a
    /// balanced set says otherwise). A follower that does not want it is *dormant*: it runs
    /// no check, and one in flight takes and inserts nothing; a leader that does not want it
    /// hands it over.
    wanted: bool,
    /// The latest `now` handed in; time never runs backwards inside the core.
    now: Instant,
    commands: Queue,
}

/// A renew in doubt: the version it would have written, and the deadline of the lease it
/// renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Doubt {
    version: i64,
    until: Instant,
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
    Running,
    /// Close was asked for: lowered, releasing.
    Closing,
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
            rng: Rng::new(seed),
            role: Role::Follower { ours: None },
            pending: Pending::Nothing,
            phase: Phase::Running,
            next_check: None,
            recheck: false,
            doubt: None,
            written: None,
            seen_max: None,
            history_max: None,
            missing_noticed: false,
            fenced_until: None,
            server: None,
            told_at_risk: false,
            resigning: false,
            close_rechecked: false,
            stopping: None,
            lapsed_until: None,
            seen: None,
            wanted: true,
            now,
            commands: Queue::new(),
        };
        flag.start_check(now);
        flag
    }

    /// Starts at `now` without wanting the flag (see [`set_wanted`](Flag::set_wanted)): no
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

    /// Whether this process wants the flag (see [`set_wanted`](Flag::set_wanted)).
    pub fn is_wanted(&self) -> bool {
        self.wanted
    }

    /// Says whether this process wants to lead the flag; a new flag does. A balanced set
    /// ([`balance`](crate::balance)) calls it as the assignment changes:
    ///
    /// - unwanted, a follower is *dormant*: it schedules no check and ignores notifications
    ///   (the set watches the row with its own scan), and a check already in flight neither
    ///   takes over nor inserts (`may_take` and `may_insert` false);
    /// - unwanted, a leader hands the flag over as a close would, but keeps running: it
    ///   lowers ([`LowerReason::Unwanted`]), asks for the work to stop
    ///   ([`Command::StopWork`]), and releases the row once it has (after the pending
    ///   statement, if any, returns);
    /// - wanted again, a follower checks at once (the takeover attempt) and from then on as
    ///   usual.
    ///
    /// The protocol is unchanged: this only withholds takeovers and renewals.
    pub fn set_wanted(&mut self, now: Instant, wanted: bool) {
        if self.phase == Phase::Closed {
            return;
        }
        let now = self.advance(now);
        let woke = wanted && !self.wanted;
        self.wanted = wanted;
        if woke && self.phase == Phase::Running && matches!(self.role, Role::Follower { .. }) {
            if self.pending == Pending::Nothing {
                self.start_check(now);
            } else {
                // The check in flight could take nothing: look again once it returns.
                self.recheck = true;
            }
        }
        self.fire_due(now);
    }

    /// A follower that does not want the flag, while running: no checks of its own.
    fn dormant(&self) -> bool {
        !self.wanted && self.phase == Phase::Running && matches!(self.role, Role::Follower { .. })
    }

    /// A leader that is no longer wanted hands the flag over once nothing is pending: lower,
    /// stop the work, release.
    fn hand_over_if_unwanted(&mut self, now: Instant) {
        if self.wanted || self.phase != Phase::Running || self.pending != Pending::Nothing {
            return;
        }
        if let Role::Leader(_) = self.role {
            match self.step_down_and_stop(LowerReason::Unwanted) {
                Some(version) => self.release_when_stopped(version),
                None => self.schedule_retry(now),
            }
        }
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
            (Pending::Nothing, Phase::Running) if !self.dormant() => self.next_check,
            (Pending::AwaitStop { .. }, _) => self.stopping,
            _ => None,
        };
        match (deadline, check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
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
                self.lapsed_until = Some(lease.deadline + self.config.margin());
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
        if self.stopping.is_some_and(|by| now >= by)
            && matches!(self.pending, Pending::AwaitStop { .. })
        {
            self.give_up_release(now);
        }
        if let (Pending::Nothing, Phase::Running, Some(due)) =
            (self.pending, self.phase, self.next_check)
        {
            if now >= due && !self.dormant() {
                self.start_check(now);
            }
        }
    }

    // ---- Starting a check ------------------------------------------------------------------

    fn start_check(&mut self, now: Instant) {
        self.next_check = None;
        self.recheck = false;
        if self.config.has_precheck() {
            self.pending = Pending::Precheck;
            self.commands.push(Command::RunPrecheck);
        } else {
            self.send_check(now);
        }
    }

    fn send_check(&mut self, now: Instant) {
        let fenced = self.is_fenced(now);
        let renew = match self.role {
            Role::Leader(lease) => Some(lease.version),
            // Renewing a row that is ours but not a live lease (a lapsed one, or one from an
            // earlier life) is taking the flag: not while fenced, for the row may come from a
            // history in which someone else holds a lease since.
            Role::Follower { ours } if !fenced => ours,
            Role::Follower { .. } => None,
        };
        // The check continues the term exactly when the core will call its win a renewal of
        // this lease (`on_won`): the row at the lease's version, renewed to the next one.
        let continues = match self.role {
            Role::Leader(lease) => Some(lease.token),
            Role::Follower { .. } => None,
        };
        self.pending = Pending::Check {
            sent_at: now,
            renew,
            continues,
        };
        let floor = self.seen_max.map_or(0, |v| v.saturating_add(1));
        let may_take = !fenced && self.wanted;
        // Once the row has been seen, a missing row is news to learn of before acting on it:
        // the check that finds it gone inserts nothing, and the fence that follows lets any
        // lease on the vanished row end first.
        let may_insert =
            !fenced && self.wanted && (self.seen_max.is_none() || self.missing_noticed);
        self.commands.push(Command::Check {
            renew,
            floor,
            may_take,
            may_insert,
            continues,
            expect: self.server.map(|s| s.identity()),
        });
    }

    fn on_precheck(&mut self, now: Instant, answer: Precheck) {
        self.pending = Pending::Nothing;
        if self.phase == Phase::Closing {
            return self.finish_close();
        }
        if self.resigning {
            return self.resign_now(now);
        }
        if answer == Precheck::Pass {
            return self.send_check(now);
        }
        // Refused or failed: step down, and hand the row over once the work has stopped.
        let held = self.step_down_and_stop(LowerReason::PrecheckRefused);
        match held {
            Some(version) => self.release_when_stopped(version),
            None => self.schedule_retry(now),
        }
    }

    // ---- The check's reply -----------------------------------------------------------------

    fn on_checked(&mut self, now: Instant, reply: Checked<'_>) {
        let Pending::Check {
            sent_at,
            renew,
            continues,
        } = self.pending
        else {
            unreachable!("check_contract admits a check reply only while a check is pending")
        };
        if let Some(server) = reply.server.filter(|_| self.answered_by_another(&reply)) {
            // Another server ran the check (a pooler swapped it under the connection) and the
            // statement changed nothing: as if a new connection had opened to it, the check
            // still pending. The row it read is that server's row all the same: seen.
            self.record(now, &reply);
            self.judge_history(now, reply.row.and_then(|r| r.version));
            return self.on_connected(now, server);
        }
        self.pending = Pending::Nothing;
        if self.server.is_none() {
            self.server = reply.server;
        }
        self.record(now, &reply);
        self.judge_history(now, reply.row.and_then(|r| r.version));
        if reply.won {
            self.doubt = None;
            self.note_written(reply.row.and_then(|r| r.version));
        }
        let row = reply.row.unwrap_or(Row {
            holder: None,
            version: None,
            timestamp: None,
        });

        if self.phase == Phase::Closing {
            let held = match (reply.won, row.version) {
                (true, version) => version,
                (false, Some(v)) if self.names_us(&row) && self.owns_in_doubt(v, now) => Some(v),
                _ => None,
            };
            self.role = Role::Follower { ours: held };
            return self.finish_close();
        }
        if self.resigning {
            let held = match (reply.won, row.version) {
                (true, version) => version,
                (false, Some(v)) if self.names_us(&row) && self.owns_in_doubt(v, now) => Some(v),
                _ => None,
            };
            self.role = Role::Follower { ours: held };
            return self.resign_now(now);
        }
        match (reply.won, reply.row) {
            (true, _) => self.on_won(now, sent_at, renew, continues, row, reply.won_by),
            (false, None) => {
                // No row. After we saw one, it vanished (a lost history, or a DELETE): take
                // nothing for a lease. Before, a row inserted concurrently, not yet in our
                // snapshot: look again soon.
                self.history_max = None;
                if self.seen_max.is_some() && !self.missing_noticed {
                    self.missing_noticed = true;
                    self.lost_writes(now);
                }
                self.step_down(LowerReason::Lost);
                self.schedule_retry(now);
            }
            (false, Some(row)) => self.on_not_won(now, row, reply.now),
        }
    }

    fn on_won(
        &mut self,
        now: Instant,
        sent_at: Instant,
        renew: Option<i64>,
        continues: Option<i64>,
        row: Row<'_>,
        won_by: Option<WonBy>,
    ) {
        let version = row.version.unwrap_or_default(); // check_contract guarantees Some
        let deadline = sent_at + self.config.interval() - self.config.margin();
        let at_risk = deadline - self.config.stop_ahead();
        if now >= deadline {
            // The win came too late to lead on; renew at once with a fresh send time.
            self.step_down(LowerReason::DeadlinePassed);
            self.role = Role::Follower {
                ours: Some(version),
            };
            return self.start_check(now);
        }
        let lapsed = continues
            .is_some_and(|term| !matches!(self.role, Role::Leader(lease) if lease.token == term));
        if lapsed && renew.and_then(|r| r.checked_add(1)) == Some(version) {
            // This renew asked the row to continue a term that ended here while it was in
            // flight (its deadline passed): the row names that term, and a new one must write
            // its own token there first, or its fence would fail and the old term's pass.
            // Renew at once, continuing nothing.
            self.role = Role::Follower {
                ours: Some(version),
            };
            return self.start_check(now);
        }
        match self.role {
            Role::Leader(lease) if lease.version.checked_add(1) == Some(version) => {
                let lease = Lease {
                    version,
                    deadline,
                    at_risk,
                    ..lease
                };
                self.role = Role::Leader(lease);
                self.told_at_risk = false;
                self.commands.push(Command::Renewed(lease));
            }
            _ => {
                // A new term. If we still led, the row passed through other hands since our
                // last write: that term ended, whatever our clock said.
                self.step_down(LowerReason::Lost);
                // Only the statement knows which of its branches won: a new term's token
                // follows the server's clock, whatever the branch.
                let won_by = won_by.unwrap_or(WonBy::TookOver);
                let lease = Lease {
                    token: version,
                    version,
                    deadline,
                    at_risk,
                    won_by,
                };
                self.role = Role::Leader(lease);
                self.told_at_risk = false;
                self.commands.push(Command::Raise(lease));
            }
        }
        // A notification that came while this check was in flight is answered by the win.
        self.recheck = false;
        let renew_at = sent_at + self.renew_delay();
        self.schedule(now, renew_at);
    }

    fn on_not_won(&mut self, now: Instant, row: Row<'_>, db_now: DbTime) {
        let (Some(_), Some(version), Some(timestamp)) = (row.holder, row.version, row.timestamp)
        else {
            self.commands.push(Command::Anomaly(Anomaly::NullInRow));
            self.step_down(LowerReason::Lost);
            return self.schedule(now, now + self.config.renew_interval());
        };
        if version == i64::MAX {
            self.commands
                .push(Command::Anomaly(Anomaly::VersionExhausted));
            self.step_down(LowerReason::Lost);
            return self.schedule(now, now + self.config.interval());
        }
        if self.names_us(&row) && !self.knows(version) {
            if self.owns_in_doubt(version, now) {
                // Our renew in doubt committed unseen (its reply was lost): adopt that version
                // and renew it at once. Leadership, if held, continues: the deadline moves only
                // on a confirmed win.
                self.note_written(Some(version));
                match &mut self.role {
                    Role::Leader(lease) => lease.version = version,
                    Role::Follower { ours } => *ours = Some(version),
                }
                // A follower takes nothing while fenced, adoptions included: once it ends.
                return match (self.role, self.fenced_until.filter(|until| now < *until)) {
                    (Role::Follower { .. }, Some(until)) => self.schedule(now, until),
                    _ => self.start_check(now),
                };
            }
            // A row under our name that this incarnation neither wrote nor has in doubt: another
            // process holds it (a twin with our name, or an earlier incarnation that may still
            // run). Step aside rather than fight over one identity: wait for it to expire or be
            // released. (The Go flag adopts any row under its name.)
            self.commands
                .push(Command::Anomaly(Anomaly::DuplicateProcess));
        }
        // Someone else holds the row, or changed it while our statement waited for the lock.
        self.step_down(LowerReason::Lost);
        self.schedule_expiry(now, timestamp, db_now);
    }

    fn on_failed(&mut self, now: Instant, _failure: Failure) {
        let was = self.pending;
        self.pending = Pending::Nothing;
        // The statement may have run: its effect on the row is unknown. Only a leader's renew
        // is remembered: a takeover or an insert in doubt writes what a twin's takeover or
        // renew could write as well, so its row, if it committed, is left to expire.
        if let (Pending::Check { renew: Some(r), .. }, Role::Leader(lease)) = (was, self.role) {
            if lease.version == r {
                // The leader's renew continues its term, so it writes exactly `r + 1` (a new
                // term's token would follow the server's clock, and is never adopted: the
                // floor only matters if it passed `r + 1`, when the renew was a new term).
                let floor = self.seen_max.map_or(0, |v| v.saturating_add(1));
                self.doubt = Some(Doubt {
                    version: r.saturating_add(1).max(floor),
                    until: lease.deadline,
                });
            }
        }
        if self.phase == Phase::Closing {
            return match was {
                Pending::Release { .. } => self.closed(),
                _ => self.finish_close(),
            };
        }
        if self.resigning {
            // The renew may have committed unseen: release the version we know (a no-op if it
            // moved on) and never adopt ours again before such a lease would have lapsed.
            self.fence(now + self.config.interval() + self.config.margin());
            return self.resign_now(now);
        }
        // A leader keeps its lease through a failed renew until its deadline: no flapping on
        // a blip.
        self.schedule_retry(now);
    }

    // ---- Release and close -----------------------------------------------------------------

    fn release(&mut self, version: i64) {
        self.pending = Pending::Release { version };
        self.commands.push(Command::Release { version });
    }

    fn on_released(&mut self, now: Instant, released: bool) {
        if let (Pending::Release { version }, true) = (self.pending, released) {
            self.note_written(version.checked_add(1));
            self.note_seen(version.checked_add(1));
        }
        self.pending = Pending::Nothing;
        self.role = Role::Follower { ours: None };
        if self.phase == Phase::Closing {
            return self.closed();
        }
        self.schedule_retry(now);
    }

    fn on_close(&mut self, _now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        let held = self.step_down_and_stop(LowerReason::Closed);
        self.role = Role::Follower { ours: held };
        self.phase = Phase::Closing;
        self.next_check = None;
        if self.pending == Pending::Nothing {
            self.finish_close();
        }
    }

    /// Resigning: lower at once (the work is told to stop); the row is released once the work
    /// has stopped and nothing is in flight, and the fence keeps this process from taking
    /// anything during `hold_off`.
    fn on_resign(&mut self, now: Instant, hold_off: Option<Duration>) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(hold_off) = hold_off {
            self.fence(now + hold_off);
        }
        match self.pending {
            Pending::Nothing => self.resign_now(now),
            Pending::Check { .. } | Pending::Precheck => {
                let held = self.step_down_and_stop(LowerReason::Resigned);
                self.role = Role::Follower { ours: held };
                self.resigning = true;
            }
            // Already handing the row over (a refused precheck).
            Pending::Release { .. } | Pending::AwaitStop { .. } => {}
        }
    }

    /// Steps down and releases what may be ours once the work has stopped.
    fn resign_now(&mut self, now: Instant) {
        self.resigning = false;
        self.next_check = None;
        match self.step_down_and_stop(LowerReason::Resigned) {
            Some(version) => self.release_when_stopped(version),
            None => self.schedule_retry(now),
        }
    }

    /// Whether a resign is still handing the row over: a statement it waits for is in flight,
    /// or the release waits for the work to stop or for its reply. Drivers resolve a
    /// `resign()` call once this is false.
    pub fn is_resigning(&self) -> bool {
        self.resigning
            || (self.phase == Phase::Running
                && matches!(
                    self.pending,
                    Pending::Release { .. } | Pending::AwaitStop { .. }
                ))
    }

    /// Releases the row if it may be ours, else closes. With a statement in doubt (a renew
    /// abandoned at its timeout may still commit a later version under our name), it looks at
    /// the row once more first, so the release names the version that is really there: a
    /// release of an older one would match nothing and leave the closed process a fresh lease.
    fn finish_close(&mut self) {
        match self.role {
            Role::Follower { ours: Some(_) } if self.doubt.is_some() && !self.close_rechecked => {
                self.close_rechecked = true;
                self.send_check(self.now);
            }
            Role::Follower {
                ours: Some(version),
            } => self.release_when_stopped(version),
            _ => self.closed(),
        }
    }

    /// Releases now, or once the work has stopped if it was told to (and gives up if the
    /// lease has expired by itself meanwhile).
    fn release_when_stopped(&mut self, version: i64) {
        match self.stopping {
            None if self.lapsed_until.is_some_and(|by| self.now < by) => {
                // The lease lapsed a moment ago and its work, killed at the deadline, may
                // still be ending: no release (found by the model checker, issue 18).
                self.pending = Pending::AwaitStop { version };
                self.give_up_release(self.now);
            }
            None => self.release(version),
            Some(by) if self.now >= by => {
                self.pending = Pending::AwaitStop { version };
                self.give_up_release(self.now);
            }
            Some(_) => self.pending = Pending::AwaitStop { version },
        }
    }

    /// The leader-only work has stopped: release if that was all we waited for.
    fn work_stopped(&mut self) {
        self.stopping = None;
        if let Pending::AwaitStop { version } = self.pending {
            self.release(version);
        }
    }

    /// The work still runs a margin after the lease's deadline: the lease has expired by
    /// itself, so the release would hand over nothing, and it must never go out while the
    /// work is known to run. Forget the row. (`stopping` stays: only `WorkStopped` says the
    /// work has ended.)
    fn give_up_release(&mut self, now: Instant) {
        if let Pending::AwaitStop { .. } = self.pending {
            self.pending = Pending::Nothing;
            self.role = Role::Follower { ours: None };
            if self.phase == Phase::Closing {
                self.closed();
            } else {
                self.schedule_retry(now);
            }
        }
    }

    fn closed(&mut self) {
        self.phase = Phase::Closed;
        self.role = Role::Follower { ours: None };
        self.commands.push(Command::Closed);
    }

    fn on_notified(&mut self, now: Instant) {
        if self.phase != Phase::Running || matches!(self.role, Role::Leader(_)) || self.dormant() {
            return;
        }
        if self.pending == Pending::Nothing {
            self.start_check(now);
        } else {
            self.recheck = true;
        }
    }

    // ---- Lost writes -----------------------------------------------------------------------

    /// A row version came back. Below the highest one seen, the database went back in time:
    /// committed writes were lost (a failover to a lagging standby, a restored backup).
    fn judge_history(&mut self, now: Instant, version: Option<i64>) {
        if let (Some(v), Some(max)) = (version, self.history_max) {
            if v < max {
                self.lost_writes(now);
                // The new history starts here: only a step back from it is news.
                self.history_max = Some(v);
            }
        }
        self.note_seen(version);
    }

    /// Whether the server that answered `reply` is another than the one this process knows
    /// (and so the one the check expected): then the statement changed nothing.
    fn answered_by_another(&self, reply: &Checked<'_>) -> bool {
        match (self.server, reply.server) {
            (Some(known), Some(answered)) => known.identity() != answered.identity(),
            _ => false,
        }
    }

    /// A new connection: another server, another timeline, a restart that may have lost
    /// commits, or a recent promotion is evidence; a promotion within the last lease fences even
    /// a process that never saw the old history. A statement answered this way was not run:
    /// send it again, decided with what is known now.
    fn on_connected(&mut self, now: Instant, server: Server) {
        self.judge_server(now, server);
        match self.pending {
            Pending::Check { .. } if self.phase == Phase::Closing => {
                self.pending = Pending::Nothing;
                self.finish_close();
            }
            Pending::Check { .. } if self.resigning => {
                self.pending = Pending::Nothing;
                self.resign_now(now);
            }
            Pending::Check { .. } => self.send_check(now),
            Pending::Release { version } => self.release(version),
            _ => {}
        }
    }

    fn judge_server(&mut self, now: Instant, server: Server) {
        if let Some(before) = self.server {
            let restarted = before.started != server.started && !server.durable;
            if before.system != server.system || before.timeline != server.timeline || restarted {
                self.lost_writes(now);
            }
        }
        self.server = Some(server);
        if let Some(ago) = server.promoted_ago {
            if let Some(left) = self.config.interval().checked_sub(ago) {
                // Leases granted by the old primary run until a lease after the promotion.
                self.fence(now + left + self.config.margin());
            }
        }
    }

    /// Evidence that committed writes may be lost: say so, and take nothing for one lease
    /// from now (the versions written meanwhile stay above every version seen: the floor).
    fn lost_writes(&mut self, now: Instant) {
        self.commands.push(Command::Anomaly(Anomaly::LostWrites));
        self.fence(now + self.config.interval() + self.config.margin());
    }

    fn fence(&mut self, until: Instant) {
        self.fenced_until = self.fenced_until.max(Some(until));
    }

    fn is_fenced(&self, now: Instant) -> bool {
        self.fenced_until.is_some_and(|until| now < until)
    }

    fn note_seen(&mut self, version: Option<i64>) {
        self.seen_max = self.seen_max.max(version);
        self.history_max = self.history_max.max(version);
        if version.is_some() {
            self.missing_noticed = false;
        }
    }

    // ---- Helpers ---------------------------------------------------------------------------

    /// Lowers if leading and, since a release follows, asks for the leader-only work to stop
    /// first; returns the version that may still be ours.
    fn step_down_and_stop(&mut self, reason: LowerReason) -> Option<i64> {
        if let Role::Leader(lease) = self.role {
            self.commands.push(Command::Lower(reason));
            self.commands.push(Command::StopWork);
            self.stopping = Some(lease.deadline + self.config.margin());
            self.role = Role::Follower {
                ours: Some(lease.version),
            };
        }
        self.step_down(reason)
    }

    /// Lowers if leading; returns the version that may still be ours.
    fn step_down(&mut self, reason: LowerReason) -> Option<i64> {
        let held = match self.role {
            Role::Leader(lease) => {
                self.commands.push(Command::Lower(reason));
                Some(lease.version)
            }
            Role::Follower { ours } => ours,
        };
        self.role = Role::Follower { ours: None };
        held
    }

    fn note_written(&mut self, version: Option<i64>) {
        self.written = self.written.max(version);
    }

    fn knows(&self, version: i64) -> bool {
        self.written.is_some_and(|w| version <= w)
    }

    /// Whether a row naming us at `version`, returned by a check answered at `now`, is this
    /// incarnation's renew in doubt: the version it would have written, seen before the deadline
    /// of the lease it renewed. Before that deadline no other process can have taken that lease
    /// over (the safety argument), nor renewed a version only we wrote, so the row is ours;
    /// after it, a twin's takeover writes the same version under the same name, and the row is
    /// left to expire.
    fn owns_in_doubt(&self, version: i64, now: Instant) -> bool {
        !self.knows(version)
            && self
                .doubt
                .is_some_and(|d| d.version == version && now < d.until)
    }

    fn names_us(&self, row: &Row<'_>) -> bool {
        row.holder == Some(self.config.process())
    }

    fn record(&mut self, now: Instant, reply: &Checked<'_>) {
        let row = reply.row;
        let timestamp = row.and_then(|r| r.timestamp);
        self.seen = Some(Seen {
            found: row.is_some(),
            holder_is_self: row.is_some_and(|r| self.names_us(&r)),
            version: row.and_then(|r| r.version),
            timestamp,
            db_now: reply.now,
            expired: timestamp.is_some_and(|t| self.expiry(t) < reply.now),
            at: now,
        });
    }

    fn expiry(&self, timestamp: DbTime) -> DbTime {
        timestamp.saturating_add(self.config.interval())
    }

    // ---- The schedule ----------------------------------------------------------------------

    /// Checks at `at`, or at once if that is not in the future or a notification is waiting.
    fn schedule(&mut self, now: Instant, at: Instant) {
        if self.dormant() {
            // Kept for when the flag is wanted again (which checks at once anyway).
            self.next_check = Some(at);
            self.recheck = false;
        } else if at <= now || self.recheck {
            self.start_check(now);
        } else {
            self.next_check = Some(at);
        }
    }

    /// After a failure: the retry interval, jittered both ways as in the Go flag.
    fn schedule_retry(&mut self, now: Instant) {
        let retry = self.config.retry_interval();
        let jitter = self.jitter_of(retry);
        let delay = if self.rng.next_u64() & 1 == 0 {
            retry + jitter
        } else {
            retry - jitter
        };
        self.schedule(now, now + delay.max(Duration::from_millis(1)));
    }

    /// A follower wakes when the holder's lease expires by the database's clock, plus a
    /// little (at least a millisecond, since the rule is strict, and jitter of up to
    /// `jitter × retry interval`) so that followers do not all arrive at once; never later
    /// than one interval from now.
    fn schedule_expiry(&mut self, now: Instant, timestamp: DbTime, db_now: DbTime) {
        if timestamp == DbTime::INFINITY {
            self.commands.push(Command::Anomaly(Anomaly::NeverExpires));
        }
        let remaining = self.expiry(timestamp).micros_since(db_now);
        let Ok(remaining) = u64::try_from(remaining) else {
            // Expired, yet we did not win: another process got there first, or we may not
            // take it yet (fenced). Look again soon, or when the fence ends.
            return match self.fenced_until.filter(|until| now < *until) {
                Some(until) => self.schedule(now, until),
                None => self.schedule_retry(now),
            };
        };
        let wait = Duration::from_micros(remaining)
            + Duration::from_millis(1)
            + self.jitter_of(self.config.retry_interval());
        let at = (now + wait.min(self.config.interval())).max(self.fenced_until.unwrap_or(now));
        self.schedule(now, at);
    }

    /// The leader renews every renew interval, jittered. Where the schedule has slack (a renew
    /// that starts later still leaves a failed one its retry before the lease is at risk, as
    /// with the defaults), the jitter is centred on the renew interval, up to a quarter of
    /// `jitter` each way: on average a leader renews every interval/2 like the Go flag, so a
    /// fleet writes no more than a Go fleet. Without that slack a renew is only ever made
    /// earlier, by up to `jitter / 2`: the renew interval is then the latest it can start.
    fn renew_delay(&mut self) -> Duration {
        let renew = self.config.renew_interval();
        let spread = ppm_of(renew, self.config.jitter_ppm() / 4);
        let each_way = spread.min(self.config.renew_slack());
        if each_way >= spread / 2 && !each_way.is_zero() {
            let part = ppm_of(each_way * 2, self.rng.ppm());
            renew - each_way + part
        } else {
            renew - self.jitter_of(renew) / 2
        }
    }

    /// A uniform random part of `base × jitter`.
    fn jitter_of(&mut self, base: Duration) -> Duration {
        let parts = self.config.jitter_ppm() * self.rng.ppm() / 1_000_000; // in ppm of `base`
        ppm_of(base, parts)
    }
}

/// `parts` millionths of `base`.
fn ppm_of(base: Duration, parts: u64) -> Duration {
    let nanos = base.as_nanos() * u128::from(parts) / 1_000_000;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
