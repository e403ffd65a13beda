//! The nondeterministic events: which are possible in a state, and what each does. The
//! modelled driver that carries out the core's commands is `model/driver.rs`.
//!
//! Time moves only by [`Event::Tick`], and only once every process that runs has done what
//! was due (a timer, a driver's timeout, the end of a killed work): those are urgent, the rest
//! (a statement runs, a reply or a notification arrives or is lost, a work ends, a fault) may
//! happen at any moment, in any order, within the budgets.

use std::cell::RefCell;
use std::fmt;

use leadership_core::{Failure, Input};

use super::world::{Budget, Effect, Work, World, FLAG, LAG_WRITES};
use super::Params;
use crate::table::{RefRow, RefTable};
use crate::violation::Violation;

/// One step. Processes are numbered from 0; `k` indexes a process's statements in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Time moves on by one tick; messages still held become late.
    Tick,
    /// The process's timer fires (`handle_timeout`).
    Timer(u8),
    /// The driver gives up on its statement after the timeout (`Failed(Timeout)`).
    Timeout(u8),
    /// The database runs statement `k` of the process now.
    Execute(u8, u8),
    /// Statement `k` is lost on its way.
    LoseRequest(u8, u8),
    /// The reply reaches the driver.
    Deliver(u8),
    /// The reply is lost.
    LoseReply(u8),
    /// A notification reaches the process.
    Notify(u8),
    /// A notification is lost.
    LoseNotify(u8),
    /// The leader-only work, told to stop or killed, ends.
    WorkEnds(u8),
    /// SIGSTOP.
    Pause(u8),
    /// SIGCONT.
    Resume(u8),
    /// The process dies; its statements in the network still run.
    Crash(u8),
    /// A crashed or closed process starts again under the same name (a fresh core).
    Restart(u8),
    /// A graceful `close()`.
    Close(u8),
    /// The database fails over to a standby that lacks the latest `k` writes (0: none
    /// lost, but a new server all the same).
    Failover(u8),
    /// The same failover behind a transaction pooler: the pooler keeps every client
    /// connection open and swaps the server under it, so no driver reconnects and no core
    /// hears `Connected` (issue 25).
    PoolerFailover(u8),
    /// An operator deletes the row.
    Delete,
    /// The process's leader-only work sends a transaction (fenced unless the safeguard is
    /// off) on its way to the database.
    Write(u8),
    /// The work's transaction `k` arrives and runs now: fence, write, commit.
    Land(u8),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Tick => write!(f, "time moves on one tick"),
            Event::Timer(p) => write!(f, "r{p}: timer fires"),
            Event::Timeout(p) => write!(f, "r{p}: driver gives up on its statement (timeout)"),
            Event::Execute(p, k) => write!(f, "db: runs r{p}'s statement #{k}"),
            Event::LoseRequest(p, k) => write!(f, "net: r{p}'s statement #{k} is LOST"),
            Event::Deliver(p) => write!(f, "r{p}: reply arrives"),
            Event::LoseReply(p) => write!(f, "net: r{p}'s reply is LOST"),
            Event::Notify(p) => write!(f, "r{p}: notification arrives"),
            Event::LoseNotify(p) => write!(f, "net: r{p}'s notification is LOST"),
            Event::WorkEnds(p) => write!(f, "r{p}: leader-only work ends"),
            Event::Pause(p) => write!(f, "r{p}: PAUSED (SIGSTOP)"),
            Event::Resume(p) => write!(f, "r{p}: resumed (SIGCONT)"),
            Event::Crash(p) => write!(f, "r{p}: CRASHES"),
            Event::Restart(p) => write!(f, "r{p}: restarts (fresh core, same name)"),
            Event::Close(p) => write!(f, "r{p}: close() called"),
            Event::Failover(k) => write!(
                f,
                "db: FAILOVER to a standby that lacks the last {k} write(s)"
            ),
            Event::PoolerFailover(k) => write!(
                f,
                "db: FAILOVER behind a pooler (no reconnect, no Connected) to a standby that lacks the last {k} write(s)"
            ),
            Event::Delete => write!(f, "db: an operator DELETEs the row"),
            Event::Write(p) => write!(f, "r{p}: its work sends a transaction of its term"),
            Event::Land(k) => write!(f, "db: the work's transaction #{k} arrives"),
        }
    }
}

thread_local! {
    /// While replaying a trace: what each step did, line by line.
    static LOG: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `f` with the step log on; returns its result and the lines logged.
pub fn logged<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    LOG.with(|l| *l.borrow_mut() = Some(Vec::new()));
    let r = f();
    let lines = LOG.with(|l| l.borrow_mut().take()).unwrap_or_default();
    (r, lines)
}

pub(super) fn log(line: impl FnOnce() -> String) {
    LOG.with(|l| {
        if let Some(v) = l.borrow_mut().as_mut() {
            v.push(line());
        }
    });
}

impl World {
    pub(super) fn fault(&mut self) {
        self.quiet_since = self.tick;
    }

    /// A fault from the budget.
    pub(super) fn spend(&mut self) {
        self.fault();
        self.budget.total -= 1;
    }

    /// The reference table holding the row.
    pub(super) fn table(&self, params: &Params) -> RefTable {
        let mut t = RefTable::new();
        t.clock_floor = params.sim.safeguards.clock_floor;
        if let Some(row) = &self.row {
            t.put(FLAG, row.clone());
        }
        t
    }

    /// The table is about to change: remember it for a failover that loses this write.
    pub(super) fn wrote(&mut self, params: &Params) {
        let before = self.row.clone();
        self.remember(params, before);
    }

    /// Remembers the table as it was before a write.
    pub(super) fn remember(&mut self, params: &Params, before: Option<RefRow>) {
        let failovers = |b: &Budget| b.failovers > 0 || b.poolers > 0;
        if failovers(&self.budget) && failovers(&params.budget) {
            self.history.push(before);
            if self.history.len() > LAG_WRITES {
                self.history.remove(0);
            }
        }
    }

    pub(super) fn violate(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    /// The events possible in this state.
    pub fn enabled(&self, params: &Params, out: &mut Vec<Event>) {
        out.clear();
        if self.violation.is_some() {
            return;
        }
        let n = self.procs.len();
        let mut urgent = false;
        let mut new_late = 0u32;
        for p in 0..n {
            let pr = &self.procs[p];
            let q = p as u8;
            let local = self.local(params, p);
            for (k, req) in pr.reqs.iter().enumerate() {
                out.push(Event::Execute(q, k as u8));
                if self.budget.losses > 0 && self.budget.total > 0 {
                    out.push(Event::LoseRequest(q, k as u8));
                }
                if !req.late {
                    new_late += 1;
                }
            }
            if pr.reply.is_some() {
                if self.budget.losses > 0 && self.budget.total > 0 {
                    out.push(Event::LoseReply(q));
                }
                if !pr.paused {
                    out.push(Event::Deliver(q));
                    if !pr.reply_late {
                        new_late += 1;
                    }
                }
            }
            if pr.work_token.is_some()
                && matches!(pr.work, Some(Work::Running | Work::Told { .. }))
                && self.budget.writes > 0
            {
                out.push(Event::Write(q));
            }
            if pr.notify {
                if self.budget.losses > 0 && self.budget.total > 0 {
                    out.push(Event::LoseNotify(q));
                }
                if !pr.paused {
                    out.push(Event::Notify(q));
                    if !pr.notify_late {
                        new_late += 1;
                    }
                }
            }
            match pr.work {
                Some(Work::Dying) => {
                    out.push(Event::WorkEnds(q));
                    urgent = true;
                }
                Some(Work::Told { .. }) => out.push(Event::WorkEnds(q)),
                _ => {}
            }
            let Some(core) = &pr.core else {
                if self.tick >= self.no_start_before {
                    out.push(Event::Restart(q));
                }
                continue;
            };
            if pr.paused {
                out.push(Event::Resume(q));
            } else {
                if core.flag().poll_timeout().is_some_and(|at| at <= local) {
                    out.push(Event::Timer(q));
                    urgent = true;
                }
                if pr.inflight.is_some_and(|(_, give_up)| give_up <= local) {
                    out.push(Event::Timeout(q));
                    urgent = true;
                }
                if self.budget.pauses > 0 && self.budget.total > 0 {
                    out.push(Event::Pause(q));
                }
                if self.budget.closes > 0 && self.budget.total > 0 && !core.flag().is_closed() {
                    out.push(Event::Close(q));
                }
            }
            if self.budget.crashes > 0 && self.budget.total > 0 {
                out.push(Event::Crash(q));
            }
        }
        if self.budget.failovers > 0 && self.budget.total > 0 {
            for k in 0..=self.history.len() {
                out.push(Event::Failover(k as u8));
            }
        }
        if self.budget.poolers > 0 && self.budget.total > 0 {
            for k in 0..=self.history.len() {
                out.push(Event::PoolerFailover(k as u8));
            }
        }
        for k in 0..self.effects.len() {
            out.push(Event::Land(k as u8));
        }
        if self.budget.deletes > 0
            && self.budget.total > 0
            && self.row.is_some()
            && self.procs.iter().all(|pr| pr.core.is_none() || pr.saw_row)
        {
            out.push(Event::Delete);
        }
        if !urgent
            && self.tick < params.depth
            && new_late <= u32::from(self.budget.lates.min(self.budget.total))
        {
            out.push(Event::Tick);
        }
    }

    /// This state after `event`.
    pub fn step(&self, params: &Params, event: Event) -> World {
        let mut w = self.clone();
        w.apply(params, event);
        w
    }

    pub(super) fn apply(&mut self, params: &Params, event: Event) {
        match event {
            Event::Tick => self.tick(params),
            Event::Timer(p) => {
                let p = usize::from(p);
                let local = self.local(params, p);
                if let Some(core) = &mut self.procs[p].core {
                    if let Err(b) = core.handle_timeout(local) {
                        let who = self.procs[p].name.clone();
                        return self.violate(Violation::CorePromise {
                            who,
                            what: b.to_string(),
                        });
                    }
                }
                self.drain(params, p);
                // A timer served must not be due again at once: a driver would spin (and the
                // model would never let time move on).
                let again = self.procs[p]
                    .core
                    .as_ref()
                    .and_then(|c| c.flag().poll_timeout());
                if again.is_some_and(|at| at <= local) && self.procs[p].core.is_some() {
                    let who = self.procs[p].name.clone();
                    self.violate(Violation::CorePromise {
                        who,
                        what: format!("poll_timeout {again:?} still due at {local:?} right after handle_timeout"),
                    });
                }
            }
            Event::Timeout(p) => {
                let p = usize::from(p);
                let pr = &mut self.procs[p];
                pr.inflight = None;
                pr.reply = None;
                pr.reqs.iter_mut().for_each(|r| r.live = false);
                self.feed(params, p, Input::Failed(Failure::Timeout));
            }
            Event::Execute(p, k) => self.execute(params, usize::from(p), usize::from(k)),
            Event::LoseRequest(p, k) => {
                self.procs[usize::from(p)].reqs.remove(usize::from(k));
                self.budget.losses -= 1;
                self.spend();
            }
            Event::Deliver(p) => self.deliver(params, usize::from(p)),
            Event::LoseReply(p) => {
                self.procs[usize::from(p)].reply = None;
                self.budget.losses -= 1;
                self.spend();
            }
            Event::Notify(p) => {
                let p = usize::from(p);
                self.procs[p].notify = false;
                self.feed(params, p, Input::Notified);
            }
            Event::LoseNotify(p) => {
                self.procs[usize::from(p)].notify = false;
                self.budget.losses -= 1;
                self.spend();
            }
            Event::WorkEnds(p) => self.work_ends(params, usize::from(p)),
            Event::Write(p) => {
                let token = self.procs[usize::from(p)]
                    .work_token
                    .expect("enabled with a token");
                self.effects.push(Effect {
                    p,
                    token,
                    fenced: params.sim.safeguards.fence,
                    timeline: self.timeline,
                });
                self.budget.writes -= 1;
            }
            Event::Land(k) => self.land(params, usize::from(k)),
            Event::Pause(p) => {
                self.procs[usize::from(p)].paused = true;
                self.budget.pauses -= 1;
                self.spend();
            }
            Event::Resume(p) => {
                let p = usize::from(p);
                self.procs[p].paused = false;
                self.fault();
                // A kill the frozen supervisor owed (no watchdog) happens now.
                self.deadline_kill(params, p);
                if std::mem::take(&mut self.procs[p].reap_pending) {
                    self.reaped(params, p);
                }
            }
            Event::Crash(p) => {
                let p = usize::from(p);
                self.budget.crashes -= 1;
                self.spend();
                self.exit(p);
                // The parent-death signal kills the work with it.
                self.procs[p].work = None;
            }
            Event::Restart(p) => {
                self.fault();
                self.start(params, usize::from(p));
            }
            Event::Close(p) => {
                self.budget.closes -= 1;
                self.spend();
                self.feed(params, usize::from(p), Input::Close);
            }
            Event::Failover(k) | Event::PoolerFailover(k) => {
                let pooler = matches!(event, Event::PoolerFailover(_));
                match pooler {
                    true => self.budget.poolers -= 1,
                    false => self.budget.failovers -= 1,
                }
                self.spend();
                let k = usize::from(k);
                if k > 0 {
                    let standby = self.history[self.history.len() - k].clone();
                    self.history_lost |= standby != self.row;
                    self.row = standby;
                }
                self.history.clear();
                self.timeline += 1;
                self.db_started_ns = self.t_ns(params);
                // Statements on their way to the old primary never run anywhere.
                for pr in &mut self.procs {
                    pr.reqs.clear();
                    if pooler && pr.core.is_some() && pr.known_timeline != 0 {
                        // The connection stays open: the driver believes it knows the server.
                        pr.known_timeline = self.timeline;
                    }
                }
            }
            Event::Delete => {
                self.budget.deletes -= 1;
                self.spend();
                self.wrote(params);
                self.row = None;
                self.history_lost = true;
                // As in the simulator: nobody starts before the deleted lease has ended (a
                // fresh process cannot tell a deleted row from a new table).
                let lease = params.interval_ticks();
                self.no_start_before = self.tick + lease + lease.div_ceil(10);
            }
        }
    }

    pub(super) fn tick(&mut self, params: &Params) {
        let mut late = false;
        // A message held over a tick is late: it costs the budget once, when it first is.
        let mut held = |was_late: &mut bool, budget: &mut Budget| {
            late = true;
            if !*was_late {
                *was_late = true;
                budget.lates -= 1;
                budget.total -= 1;
            }
        };
        for pr in &mut self.procs {
            for r in &mut pr.reqs {
                held(&mut r.late, &mut self.budget);
            }
            if pr.reply.is_some() && !pr.paused {
                held(&mut pr.reply_late, &mut self.budget);
            }
            if pr.notify && !pr.paused {
                held(&mut pr.notify_late, &mut self.budget);
            }
        }
        // A process down or frozen, a message held, a work slow to stop: not a quiet time.
        let troubled = self
            .procs
            .iter()
            .any(|pr| pr.core.is_none() || pr.paused || matches!(pr.work, Some(Work::Told { .. })));
        self.tick += 1;
        if late || troubled {
            self.fault();
        }
        for p in 0..self.procs.len() {
            self.deadline_kill(params, p);
            let t = self.t_ns(params);
            if let Some(Work::Told { kill_at: Some(at) }) = self.procs[p].work {
                if t >= at {
                    log(|| format!("r{p}: the old run kills the work a grace after telling it"));
                    self.procs[p].work = Some(Work::Dying);
                }
            }
        }
    }

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
        log(|| format!("r{p}: work KILLED at its lease's deadline"));
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

    /// The process exits (a crash, or the end of a close): its driver forgets everything.
    pub(super) fn exit(&mut self, p: usize) {
        let pr = &mut self.procs[p];
        pr.core = None;
        pr.paused = false;
        pr.inflight = None;
        pr.reqs.iter_mut().for_each(|r| r.live = false);
        pr.reply = None;
        pr.notify = false;
        pr.known_timeline = 0;
        pr.belief.end();
        pr.reap_pending = false;
    }
}
