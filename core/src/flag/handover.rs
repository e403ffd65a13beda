//! Handing the flag over: close, resign, no longer wanted, a refused precheck. Each lowers at
//! once and asks the leader-only work to stop; the row is released only once the work has
//! stopped and no statement is in flight (or given up when the lease has expired by itself).

use core::time::Duration;

use crate::command::{Command, LowerReason};
use crate::time::Instant;

use super::{Flag, Pending, Phase, Role};

/// What a hand-over is waiting for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Handover {
    /// The user resigned while a statement was in flight: once it returns, release what it
    /// leaves ours.
    pub(super) resigning: bool,
    /// Leader-only work was told to stop ([`Command::StopWork`]) and has not said it has. The
    /// row is released only once it has: never while the work is known to run. At this
    /// instant (a margin after the lease's deadline, when the lease has expired by itself) the
    /// release is given up.
    pub(super) stopping: Option<Instant>,
    /// A lease lapsed at its deadline (no renew won in time): its deadline plus the margin.
    /// Until then its leader-only work, killed at the deadline, may still be ending, so the
    /// row is not released (a release hands the flag over at once, where expiry waits the
    /// margin): the release is given up and the lease left to expire by itself.
    pub(super) lapsed_until: Option<Instant>,
}

impl Flag {
    pub(super) fn on_close(&mut self, _now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        let held = self.step_down_and_stop(LowerReason::Closed);
        self.role = Role::Follower { ours: held };
        self.phase = Phase::Closing { rechecked: false };
        self.schedule.next_check = None;
        if self.pending == Pending::Nothing {
            self.finish_close();
        }
    }

    /// Resigning: lower at once (the work is told to stop); the row is released once the work
    /// has stopped and nothing is in flight, and the fence keeps this process from taking
    /// anything during `hold_off`.
    pub(super) fn on_resign(&mut self, now: Instant, hold_off: Option<Duration>) {
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
                self.handover.resigning = true;
            }
            // Already handing the row over (a refused precheck).
            Pending::Release { .. } | Pending::AwaitStop { .. } => {}
        }
    }

    /// Steps down and releases what may be ours once the work has stopped.
    pub(super) fn resign_now(&mut self, now: Instant) {
        self.handover.resigning = false;
        self.schedule.next_check = None;
        match self.step_down_and_stop(LowerReason::Resigned) {
            Some(version) => self.release_when_stopped(version),
            None => self.schedule_retry(now),
        }
    }

    /// Whether a resign is still handing the row over: a statement it waits for is in flight,
    /// or the release waits for the work to stop or for its reply. Drivers resolve a
    /// `resign()` call once this is false.
    pub fn is_resigning(&self) -> bool {
        self.handover.resigning
            || (self.phase == Phase::Running
                && matches!(
                    self.pending,
                    Pending::Release { .. } | Pending::AwaitStop { .. }
                ))
    }

    /// [`Input::Wanted`](crate::Input::Wanted): unwanted, a follower goes dormant and a leader
    /// hands the flag over (once nothing is pending: [`Flag::hand_over_if_unwanted`]); wanted
    /// again, a follower checks at once.
    pub(super) fn on_wanted(&mut self, now: Instant, wanted: bool) {
        let woke = wanted && !self.wanted;
        self.wanted = wanted;
        if woke && self.phase == Phase::Running && matches!(self.role, Role::Follower { .. }) {
            if self.pending == Pending::Nothing {
                self.start_check(now);
            } else {
                // The check in flight could take nothing: look again once it returns.
                self.schedule.recheck = true;
            }
        }
    }

    /// A follower that does not want the flag, while running: no checks of its own.
    pub(super) fn dormant(&self) -> bool {
        !self.wanted && self.phase == Phase::Running && matches!(self.role, Role::Follower { .. })
    }

    /// A leader that is no longer wanted hands the flag over once nothing is pending: lower,
    /// stop the work, release.
    pub(super) fn hand_over_if_unwanted(&mut self, now: Instant) {
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

    /// Whether a close or a resign waits for the statement in flight: its reply (or its
    /// failure, or a new connection) only says what is ours to release.
    pub(super) fn is_handing_over(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. }) || self.handover.resigning
    }

    /// The statement a close or a resign waited for has returned, or was never run: go on
    /// handing over. A close comes first: it may have been asked for during a resign.
    pub(super) fn continue_handover(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Closing { .. }) {
            self.finish_close();
        } else {
            self.resign_now(now);
        }
    }

    /// Releases the row if it may be ours, else closes. With a statement in doubt (a renew
    /// abandoned at its timeout may still commit a later version under our name), it looks at
    /// the row once more first, so the release names the version that is really there: a
    /// release of an older one would match nothing and leave the closed process a fresh lease.
    pub(super) fn finish_close(&mut self) {
        match self.role {
            Role::Follower { ours: Some(_) }
                if self.history.doubt.is_some()
                    && self.phase == (Phase::Closing { rechecked: false }) =>
            {
                self.phase = Phase::Closing { rechecked: true };
                self.send_check(self.now);
            }
            Role::Follower {
                ours: Some(version),
            } => self.release_when_stopped(version),
            _ => self.closed(),
        }
    }

    /// Lowers if leading and, since a release follows, asks for the leader-only work to stop
    /// first; returns the version that may still be ours.
    pub(super) fn step_down_and_stop(&mut self, reason: LowerReason) -> Option<i64> {
        if let Role::Leader(lease) = self.role {
            self.commands.push(Command::Lower(reason));
            self.commands.push(Command::StopWork);
            self.handover.stopping = Some(lease.deadline + self.config.margin());
            self.role = Role::Follower {
                ours: Some(lease.version),
            };
        }
        self.step_down(reason)
    }

    /// Releases now, or once the work has stopped if it was told to (and gives up if the
    /// lease has expired by itself meanwhile).
    pub(super) fn release_when_stopped(&mut self, version: i64) {
        match self.handover.stopping {
            None if self.handover.lapsed_until.is_some_and(|by| self.now < by) => {
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
    pub(super) fn work_stopped(&mut self) {
        self.handover.stopping = None;
        if let Pending::AwaitStop { version } = self.pending {
            self.release(version);
        }
    }

    /// The work still runs a margin after the lease's deadline: the lease has expired by
    /// itself, so the release would hand over nothing, and it must never go out while the
    /// work is known to run. Forget the row. (`stopping` stays: only `WorkStopped` says the
    /// work has ended.)
    pub(super) fn give_up_release(&mut self, now: Instant) {
        if let Pending::AwaitStop { .. } = self.pending {
            self.pending = Pending::Nothing;
            self.role = Role::Follower { ours: None };
            if matches!(self.phase, Phase::Closing { .. }) {
                self.closed();
            } else {
                self.schedule_retry(now);
            }
        }
    }

    pub(super) fn release(&mut self, version: i64) {
        self.pending = Pending::Release { version };
        self.commands.push(Command::Release { version });
    }

    pub(super) fn on_released(&mut self, now: Instant, released: bool) {
        if let (Pending::Release { version }, true) = (self.pending, released) {
            self.note_written(version.checked_add(1));
            self.note_seen(version.checked_add(1));
        }
        self.pending = Pending::Nothing;
        self.role = Role::Follower { ours: None };
        if matches!(self.phase, Phase::Closing { .. }) {
            return self.closed();
        }
        self.schedule_retry(now);
    }

    pub(super) fn closed(&mut self) {
        self.phase = Phase::Closed;
        self.role = Role::Follower { ours: None };
        self.commands.push(Command::Closed);
    }
}
