//! The leader-only work of each core's term, as the model's driver supervises it: told to
//! stop (SIGTERM), killed at its lease's deadline (by the watchdog while the supervisor is
//! frozen), reaped, and the core told once it has ended.

use leadership_core::Input;

use super::events::log;
use super::world::{Work, World};
use super::Params;

impl World {
    /// The lease's deadline has come: the work is killed (SIGKILL), by the supervisor or,
    /// while that is frozen, by the watchdog (with the at-risk stop: the deadline is the hard
    /// bound).
    pub(super) fn deadline_kill(&mut self, params: &Params, p: usize) {
        let s = params.sim.safeguards;
        let local = self.local(params, p);
        let pr = &self.procs[p];
        if !s.at_risk_stop || pr.core.is_none() || local < pr.lease_deadline {
            return;
        }
        if !matches!(pr.work, Some(Work::Running | Work::Told { .. })) {
            return;
        }
        if pr.paused && !s.watchdog {
            return; // no watchdog: the supervisor's timer fires when it runs again
        }
        let who = self.label(p);
        log(|| format!("{who}: work KILLED at its lease's deadline"));
        let paused = pr.paused;
        self.procs[p].work = Some(Work::Dying);
        if !s.no_release_while_working && !paused {
            // The old core's bound: the release goes out now, the kill still in progress.
            self.tell_work_stopped(params, p, true);
        }
    }

    pub(super) fn work_ends(&mut self, params: &Params, p: usize) {
        self.procs[p].work = None;
        if self.procs[p].core.is_none() {
            return;
        }
        if self.procs[p].paused {
            self.procs[p].reap_pending = true;
            return;
        }
        self.reaped(params, p);
    }

    /// The supervisor learns that the work ended: it tells the core, and starts the work of
    /// the current term if the process still leads and the lease is not at risk.
    pub(super) fn reaped(&mut self, params: &Params, p: usize) {
        let local = self.local(params, p);
        let leads = self.procs[p]
            .core
            .as_ref()
            .and_then(|c| c.flag().lease_at(local));
        if leads.is_some_and(|l| !l.is_at_risk(local)) && self.procs[p].work.is_none() {
            self.procs[p].work = Some(Work::Running);
        }
        if params.sim.safeguards.release_after_work {
            self.tell_work_stopped(params, p, true);
        }
    }

    pub(super) fn tell_work_stopped(&mut self, params: &Params, p: usize, drain: bool) {
        if self.hand(params, p, Input::WorkStopped) && drain {
            self.drain(params, p);
        }
    }

    /// SIGTERM: the work winds down and ends at any later moment. Without the at-risk stop,
    /// the old `run`: killed a grace (the stop-ahead) after being told.
    pub(super) fn term_work(&mut self, params: &Params, p: usize) {
        if self.procs[p].work != Some(Work::Running) {
            return;
        }
        let kill_at = (!params.sim.safeguards.at_risk_stop)
            .then(|| self.t_ns(params) + params.sim.stop_ahead().as_nanos() as u64);
        self.procs[p].work = Some(Work::Told { kill_at });
    }
}
