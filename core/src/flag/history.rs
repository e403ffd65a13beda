//! What this process knows of the row's past: the versions it saw and wrote, its renew in
//! doubt, the server it talks to, and the fence after evidence of lost writes (a version going
//! back, a vanished row, another server or timeline, a recent promotion).

use crate::command::{Anomaly, Command};
use crate::input::Checked;
use crate::server::Server;
use crate::time::Instant;

use super::{Flag, Pending};

/// The row's past as this process knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct History {
    /// A renew of ours failed or timed out while this process led, so it may have committed
    /// unseen. A row naming us at a version this incarnation did not see itself write is ours
    /// only if it is this one, seen before the lease it renewed would have lapsed
    /// ([`Flag::owns_in_doubt`]); any other row under our name is held by another process (a
    /// twin, or an earlier incarnation that may still run).
    pub(super) doubt: Option<Doubt>,
    /// The highest row version this process knows it wrote. A check that does not win returns
    /// the row as of its start, so it may show one of our own writes: only a later version
    /// under our name is news.
    pub(super) written: Option<i64>,
    /// The highest row version this process has seen, in any row: no check of ours writes a
    /// version at or below it, so its fencing tokens never go backwards.
    pub(super) seen_max: Option<i64>,
    /// The highest row version seen since the last evidence of lost writes: a row below it
    /// means the database went back in time (again).
    pub(super) history_max: Option<i64>,
    /// A check found no row after this process had seen one, and no row has been seen since:
    /// the row is known to be missing, so (once the fence that followed has ended) a check may
    /// insert it.
    pub(super) missing_noticed: bool,
    /// After evidence of lost writes: take nothing (no insert, no takeover) before this
    /// instant, when every lease granted on the lost history has ended.
    pub(super) fenced_until: Option<Instant>,
    /// What the server of the latest connection said about itself.
    pub(super) server: Option<Server>,
}

/// A renew in doubt: the version it would have written, and the deadline of the lease it
/// renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Doubt {
    pub(super) version: i64,
    pub(super) until: Instant,
}

impl Flag {
    /// A new connection: another server, another timeline, a restart that may have lost
    /// commits, or a recent promotion is evidence; a promotion within the last lease fences even
    /// a process that never saw the old history. A statement answered this way was not run:
    /// send it again, decided with what is known now.
    pub(super) fn on_connected(&mut self, now: Instant, server: Server) {
        self.judge_server(now, server);
        match self.pending {
            Pending::Check { .. } if self.is_handing_over() => {
                self.pending = Pending::Nothing;
                self.continue_handover(now);
            }
            Pending::Check { .. } => self.send_check(now),
            Pending::Release { version } => self.release(version),
            _ => {}
        }
    }

    pub(super) fn judge_server(&mut self, now: Instant, server: Server) {
        if let Some(before) = self.history.server {
            let restarted = before.started != server.started && !server.durable;
            if before.system != server.system || before.timeline != server.timeline || restarted {
                self.lost_writes(now);
            }
        }
        self.history.server = Some(server);
        if let Some(ago) = server.promoted_ago {
            if let Some(left) = self.config.interval().checked_sub(ago) {
                // Leases granted by the old primary run until a lease after the promotion.
                self.fence(now + left + self.config.margin());
            }
        }
    }

    /// Whether the server that answered `reply` is another than the one this process knows
    /// (and so the one the check expected): then the statement changed nothing.
    pub(super) fn answered_by_another(&self, reply: &Checked<'_>) -> bool {
        match (self.history.server, reply.server) {
            (Some(known), Some(answered)) => known.identity() != answered.identity(),
            _ => false,
        }
    }

    /// A row version came back. Below the highest one seen, the database went back in time:
    /// committed writes were lost (a failover to a lagging standby, a restored backup).
    pub(super) fn judge_history(&mut self, now: Instant, version: Option<i64>) {
        if let (Some(v), Some(max)) = (version, self.history.history_max) {
            if v < max {
                self.lost_writes(now);
                // The new history starts here: only a step back from it is news.
                self.history.history_max = Some(v);
            }
        }
        self.note_seen(version);
    }

    /// Evidence that committed writes may be lost: say so, and take nothing for one lease
    /// from now (the versions written meanwhile stay above every version seen: the floor).
    pub(super) fn lost_writes(&mut self, now: Instant) {
        self.commands.push(Command::Anomaly(Anomaly::LostWrites));
        self.fence(now + self.config.interval() + self.config.margin());
    }

    pub(super) fn fence(&mut self, until: Instant) {
        self.history.fenced_until = self.history.fenced_until.max(Some(until));
    }

    pub(super) fn is_fenced(&self, now: Instant) -> bool {
        self.history.fenced_until.is_some_and(|until| now < until)
    }

    pub(super) fn note_seen(&mut self, version: Option<i64>) {
        self.history.seen_max = self.history.seen_max.max(version);
        self.history.history_max = self.history.history_max.max(version);
        if version.is_some() {
            self.history.missing_noticed = false;
        }
    }

    pub(super) fn note_written(&mut self, version: Option<i64>) {
        self.history.written = self.history.written.max(version);
    }

    pub(super) fn knows(&self, version: i64) -> bool {
        self.history.written.is_some_and(|w| version <= w)
    }

    /// Whether a row naming us at `version`, returned by a check answered at `now`, is this
    /// incarnation's renew in doubt: the version it would have written, seen before the deadline
    /// of the lease it renewed. Before that deadline no other process can have taken that lease
    /// over (the safety argument), nor renewed a version only we wrote, so the row is ours;
    /// after it, a twin's takeover writes the same version under the same name, and the row is
    /// left to expire.
    pub(super) fn owns_in_doubt(&self, version: i64, now: Instant) -> bool {
        !self.knows(version)
            && self
                .history
                .doubt
                .is_some_and(|d| d.version == version && now < d.until)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::time::Duration;

    use crate::{Anomaly, Command, Config, Flag, Instant};

    fn flag() -> Flag {
        let config = Config::builder("flag", "me")
            .interval(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut flag = Flag::new(config, 7, Instant::ZERO);
        while flag.poll_command().is_some() {}
        flag
    }

    fn commands(flag: &mut Flag) -> Vec<Command> {
        core::iter::from_fn(|| flag.poll_command()).collect()
    }

    #[test]
    fn a_fence_only_ever_extends() {
        let mut f = flag();
        let t = Instant::ZERO;
        f.fence(t + Duration::from_secs(10));
        f.fence(t + Duration::from_secs(5));
        assert!(f.is_fenced(t + Duration::from_secs(7)));
        assert!(!f.is_fenced(t + Duration::from_secs(10)));
    }

    #[test]
    fn a_version_below_the_highest_seen_is_lost_writes_and_starts_a_new_history() {
        let mut f = flag();
        let now = Instant::ZERO + Duration::from_secs(1);
        f.judge_history(now, Some(5));
        assert_eq!(commands(&mut f), []);
        f.judge_history(now, Some(3));
        assert_eq!(commands(&mut f), [Command::Anomaly(Anomaly::LostWrites)]);
        // Fenced for a lease and a margin; the floor stays above everything seen.
        let lease = f.config.interval() + f.config.margin();
        assert!(f.is_fenced(now + lease - Duration::from_millis(1)));
        assert!(!f.is_fenced(now + lease));
        assert_eq!(
            (f.history.seen_max, f.history.history_max),
            (Some(5), Some(3))
        );
        // Only a step back from the new history is news.
        f.judge_history(now, Some(4));
        assert_eq!(commands(&mut f), []);
    }

    #[test]
    fn only_a_later_version_than_ours_is_news() {
        let mut f = flag();
        f.note_written(Some(4));
        assert!(f.knows(3) && f.knows(4) && !f.knows(5));
    }
}
