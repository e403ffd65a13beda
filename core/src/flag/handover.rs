//! Handing the flag over: close, resign, no longer wanted, a refused precheck. They are one
//! phase, [`Phase::HandingOver`], with its reason ([`Why`]): each lowers at once and asks the
//! leader-only work to stop; the row is released only once the work has stopped and no
//! statement is in flight (or given up when the lease has expired by itself). Then the flag
//! runs again, or is closed if the reason was a close.

use core::time::Duration;

use crate::command::{Command, LowerReason};
use crate::time::Instant;

use super::{Flag, Pending, Phase, Role};

/// Why the flag is being handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Why {
    /// [`Input::Close`](crate::Input::Close): the flag closes once handed over.
    /// `rechecked`: closing looked at the row once more because a statement was in doubt.
    Close { rechecked: bool },
    /// [`Input::Resign`](crate::Input::Resign).
    Resign,
    /// [`Input::Wanted`](crate::Input::Wanted)`(false)` while leading.
    Unwanted,
    /// The precheck refused or failed.
    Refused,
}

impl Why {
    fn lower_reason(self) -> LowerReason {
        match self {
            Why::Close { .. } => LowerReason::Closed,
            Why::Resign => LowerReason::Resigned,
            Why::Unwanted => LowerReason::Unwanted,
            Why::Refused => LowerReason::PrecheckRefused,
        }
    }
}

/// What a hand-over is waiting for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Handover {
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
        if self.is_closing() {
            return;
        }
        // A close during another hand-over takes it over: the flag closes once it is done.
        let held = self.hand_over(Why::Close { rechecked: false });
        self.role = Role::Follower { ours: held };
        if self.pending == Pending::Nothing {
            self.finish_close();
        }
    }

    /// Resigning: lower at once (the work is told to stop); the row is released once the work
    /// has stopped and nothing is in flight, and the fence keeps this process from taking
    /// anything during `hold_off`.
    pub(super) fn on_resign(&mut self, now: Instant, hold_off: Option<Duration>) {
        if self.is_closing() {
            return;
        }
        if let Some(hold_off) = hold_off {
            self.fence(now + hold_off);
        }
        match (self.phase, self.pending) {
            // Already handing the row over (unwanted, or a refused precheck).
            (Phase::HandingOver(_), _) => {}
            (_, Pending::Nothing) => self.resign_now(now),
            // A statement is in flight: once it returns, release what it leaves ours.
            (_, _) => {
                let held = self.hand_over(Why::Resign);
                self.role = Role::Follower { ours: held };
            }
        }
    }

    /// Steps down and releases what may be ours once the work has stopped.
    pub(super) fn resign_now(&mut self, now: Instant) {
        let held = self.hand_over(Why::Resign);
        self.release_or_run(now, held);
    }

    /// Whether a resign is still handing the row over: a statement it waits for is in flight,
    /// or the release waits for the work to stop or for its reply. Drivers resolve a
    /// `resign()` call once this is false.
    pub fn is_resigning(&self) -> bool {
        matches!(self.phase, Phase::HandingOver(why) if !matches!(why, Why::Close { .. }))
    }

    /// Whether a close was asked for (closing or closed): nothing else starts.
    pub(super) fn is_closing(&self) -> bool {
        matches!(
            self.phase,
            Phase::Closed | Phase::HandingOver(Why::Close { .. })
        )
    }

    /// [`Input::Wanted`](crate::Input::Wanted): unwanted, a follower goes dormant and a leader
    /// hands the flag over (once nothing is pending: [`Flag::hand_over_if_unwanted`]); wanted
    /// again, a follower checks at once.
    pub(super) fn on_wanted(&mut self, now: Instant, wanted: bool) {
        let woke = wanted && !self.wanted;
        self.wanted = wanted;
        if woke && !self.is_closing() && matches!(self.role, Role::Follower { .. }) {
            if self.phase == Phase::Running && self.pending == Pending::Nothing {
                self.start_check(now);
            } else {
                // The check in flight could take nothing, or a hand-over is ending: look again
                // once it is done.
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
            let held = self.hand_over(Why::Unwanted);
            self.release_or_run(now, held);
        }
    }

    /// Whether the flag is being handed over: a statement still in flight only says what is
    /// ours to release (its reply, its failure, or a new connection).
    pub(super) fn is_handing_over(&self) -> bool {
        matches!(self.phase, Phase::HandingOver(_))
    }

    /// The statement a hand-over waited for has returned, or was never run: go on handing
    /// over. A close comes first: it may have been asked for during a resign.
    pub(super) fn continue_handover(&mut self, now: Instant) {
        if self.is_closing() {
            self.finish_close();
        } else {
            self.resign_now(now);
        }
    }

    /// Releases `held` once the work has stopped, or, with nothing to release, ends the
    /// hand-over at once.
    pub(super) fn release_or_run(&mut self, now: Instant, held: Option<i64>) {
        match held {
            Some(version) => self.release_when_stopped(version),
            None => self.handed_over(now),
        }
    }

    /// The hand-over is done (released, given up, or nothing to release): closed if it was a
    /// close, else running again (a follower, after the retry interval).
    pub(super) fn handed_over(&mut self, now: Instant) {
        self.pending = Pending::Nothing;
        self.role = Role::Follower { ours: None };
        if self.is_closing() {
            return self.closed();
        }
        self.phase = Phase::Running;
        self.schedule_retry(now);
    }

    /// Releases the row if it may be ours, else closes. With a statement in doubt (a renew
    /// abandoned at its timeout may still commit a later version under our name), it looks at
    /// the row once more first, so the release names the version that is really there: a
    /// release of an older one would match nothing and leave the closed process a fresh lease.
    pub(super) fn finish_close(&mut self) {
        match self.role {
            Role::Follower { ours: Some(_) }
                if self.history.doubt.is_some()
                    && self.phase == Phase::HandingOver(Why::Close { rechecked: false }) =>
            {
                self.phase = Phase::HandingOver(Why::Close { rechecked: true });
                self.send_check(self.now);
            }
            Role::Follower {
                ours: Some(version),
            } => self.release_when_stopped(version),
            _ => self.closed(),
        }
    }

    /// Enters the hand-over for `why`: no more checks; lowers if leading and, since a release
    /// follows, asks for the leader-only work to stop first; returns the version that may
    /// still be ours.
    pub(super) fn hand_over(&mut self, why: Why) -> Option<i64> {
        self.phase = Phase::HandingOver(why);
        self.schedule.next_check = None;
        let reason = why.lower_reason();
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
            self.handed_over(now);
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
        self.handed_over(now);
    }

    pub(super) fn closed(&mut self) {
        self.phase = Phase::Closed;
        self.role = Role::Follower { ours: None };
        self.commands.push(Command::Closed);
    }
}
