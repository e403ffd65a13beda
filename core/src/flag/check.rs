//! The check: sending it (renew, take over, insert, each only when allowed), and its reply: won
//! (a lease whose deadline counts from when the check was sent), not won (whose row, and when it
//! expires), failed (a renew in doubt).

use crate::command::{Anomaly, Command, Lease, LowerReason, WonBy};
use crate::input::{Checked, Failure, Precheck, Row};
use crate::time::{DbTime, Instant};

use super::handover::Why;
use super::history::Doubt;
use super::{Flag, Pending, Phase, Role, Seen};

impl Flag {
    pub(super) fn start_check(&mut self, now: Instant) {
        self.schedule.next_check = None;
        self.schedule.recheck = false;
        if self.config.has_precheck() {
            self.pending = Pending::Precheck;
            self.commands.push(Command::RunPrecheck);
        } else {
            self.send_check(now);
        }
    }

    pub(super) fn send_check(&mut self, now: Instant) {
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
        let floor = self.history.seen_max.map_or(0, |v| v.saturating_add(1));
        let may_take = !fenced && self.wanted;
        // Once the row has been seen, a missing row is news to learn of before acting on it:
        // the check that finds it gone inserts nothing, and the fence that follows lets any
        // lease on the vanished row end first.
        let may_insert = !fenced
            && self.wanted
            && (self.history.seen_max.is_none() || self.history.missing_noticed);
        self.commands.push(Command::Check {
            renew,
            floor,
            may_take,
            may_insert,
            continues,
            expect: self.history.server.map(|s| s.identity()),
        });
    }

    pub(super) fn on_precheck(&mut self, now: Instant, answer: Precheck) {
        self.pending = Pending::Nothing;
        if self.is_handing_over() {
            return self.continue_handover(now);
        }
        if answer == Precheck::Pass {
            return self.send_check(now);
        }
        // Refused or failed: step down, and hand the row over once the work has stopped.
        let held = self.hand_over(Why::Refused);
        self.release_or_run(now, held);
    }

    pub(super) fn on_checked(&mut self, now: Instant, reply: Checked<'_>) {
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
        if self.history.server.is_none() {
            self.history.server = reply.server;
        }
        self.record(now, &reply);
        self.judge_history(now, reply.row.and_then(|r| r.version));
        if reply.won {
            self.history.doubt = None;
            self.note_written(reply.row.and_then(|r| r.version));
        }
        let row = reply.row.unwrap_or(Row {
            holder: None,
            version: None,
            timestamp: None,
        });

        if self.is_handing_over() {
            // Handing over: the check only says what is ours to release.
            let held = match (reply.won, row.version) {
                (true, version) => version,
                (false, Some(v)) if self.names_us(&row) && self.owns_in_doubt(v, now) => Some(v),
                _ => None,
            };
            self.role = Role::Follower { ours: held };
            return self.continue_handover(now);
        }
        match (reply.won, reply.row) {
            (true, _) => self.on_won(now, sent_at, renew, continues, row, reply.won_by),
            (false, None) => {
                // No row. After we saw one, it vanished (a lost history, or a DELETE): take
                // nothing for a lease. Before, a row inserted concurrently, not yet in our
                // snapshot: look again soon.
                self.history.history_max = None;
                if self.history.seen_max.is_some() && !self.history.missing_noticed {
                    self.history.missing_noticed = true;
                    self.lost_writes(now);
                }
                self.step_down(LowerReason::Lost);
                self.schedule_retry(now);
            }
            (false, Some(row)) => self.on_not_won(now, row, reply.now),
        }
    }

    pub(super) fn on_won(
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
        self.schedule.recheck = false;
        let renew_at = sent_at + self.renew_delay();
        self.schedule_check_from(now, renew_at - self.config.renew_early(), renew_at);
    }

    pub(super) fn on_not_won(&mut self, now: Instant, row: Row<'_>, db_now: DbTime) {
        let (Some(_), Some(version), Some(timestamp)) = (row.holder, row.version, row.timestamp)
        else {
            self.commands.push(Command::Anomaly(Anomaly::NullInRow));
            self.step_down(LowerReason::Lost);
            return self.schedule_check(now, now + self.config.renew_interval());
        };
        if version == i64::MAX {
            self.commands
                .push(Command::Anomaly(Anomaly::VersionExhausted));
            self.step_down(LowerReason::Lost);
            return self.schedule_check(now, now + self.config.interval());
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
                return match (
                    self.role,
                    self.history.fenced_until.filter(|until| now < *until),
                ) {
                    (Role::Follower { .. }, Some(until)) => self.schedule_check(now, until),
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

    pub(super) fn on_failed(&mut self, now: Instant, failure: Failure) {
        let was = self.pending;
        self.pending = Pending::Nothing;
        // The statement may have run: its effect on the row is unknown. Only a leader's renew
        // is remembered: a takeover or an insert in doubt writes what a twin's takeover or
        // renew could write as well, so its row, if it committed, is left to expire. A check a
        // batch did not attempt wrote nothing: no doubt (adopting `r + 1` then would adopt a
        // twin's renew).
        let attempted = failure != Failure::NotAttempted;
        if let (Pending::Check { renew: Some(r), .. }, Role::Leader(lease), true) =
            (was, self.role, attempted)
        {
            if lease.version == r {
                // The leader's renew continues its term, so it writes exactly `r + 1` (a new
                // term's token would follow the server's clock, and is never adopted: the
                // floor only matters if it passed `r + 1`, when the renew was a new term).
                let floor = self.history.seen_max.map_or(0, |v| v.saturating_add(1));
                self.history.doubt = Some(Doubt {
                    version: r.saturating_add(1).max(floor),
                    until: lease.deadline,
                });
            }
        }
        if self.is_handing_over() {
            return match was {
                Pending::Release { .. } => self.handed_over(now),
                _ if self.is_closing() => self.finish_close(),
                _ => {
                    // A resign waited for this statement. The renew may have committed
                    // unseen: release the version we know (a no-op if it moved on) and never
                    // adopt ours again before such a lease would have lapsed.
                    self.fence(now + self.config.interval() + self.config.margin());
                    self.resign_now(now)
                }
            };
        }
        // A leader keeps its lease through a failed renew until its deadline: no flapping on
        // a blip.
        self.schedule_retry(now);
    }

    /// A batch is being sent: a leader's renew whose early window has opened joins it.
    pub(super) fn on_batching(&mut self, now: Instant) {
        if self
            .poll_early_check()
            .is_some_and(|earliest| now >= earliest)
        {
            self.start_check(now);
        }
    }

    pub(super) fn on_notified(&mut self, now: Instant) {
        if self.is_closing() || matches!(self.role, Role::Leader(_)) || self.dormant() {
            return;
        }
        if self.phase == Phase::Running && self.pending == Pending::Nothing {
            self.start_check(now);
        } else {
            self.schedule.recheck = true;
        }
    }

    /// Lowers if leading; returns the version that may still be ours.
    pub(super) fn step_down(&mut self, reason: LowerReason) -> Option<i64> {
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

    pub(super) fn names_us(&self, row: &Row<'_>) -> bool {
        row.holder == Some(self.config.process())
    }

    pub(super) fn record(&mut self, now: Instant, reply: &Checked<'_>) {
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

    pub(super) fn expiry(&self, timestamp: DbTime) -> DbTime {
        timestamp.saturating_add(self.config.interval())
    }
}
