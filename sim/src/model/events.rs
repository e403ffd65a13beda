//! The nondeterministic events: which are possible in a state, and what each does. The
//! modelled driver that carries out the core's commands is `model/driver.rs`.
//!
//! Time moves only by [`Event::Tick`], and only once every process that runs has done what
//! was due (a timer, a driver's timeout, the end of a killed work): those are urgent, the rest
//! (a statement runs, a reply or a notification arrives or is lost, a work ends, a fault) may
//! happen at any moment, in any order, within the budgets.
//!
//! With two flags per process, an event names a process (`s`: its driver, its statements, a
//! pause, a crash) or one of its cores (`p`: a timer, a notification, a work); with one flag
//! the two are the same number.

use std::cell::RefCell;
use std::fmt;

use leadership_core::Input;

use super::world::{Budget, Effect, Work, World, LAG_WRITES, ROWS};
use super::Params;
use crate::table::{RefRow, RefTable};
use crate::violation::Violation;

/// One step. Processes (`s`) and cores (`p`) are numbered from 0; `k` indexes a process's
/// statements in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Time moves on by one tick; messages still held become late.
    Tick,
    /// Core `p`'s timer fires (`handle_timeout`).
    Timer(u8),
    /// Process `s`'s driver gives up on its statement after the timeout (`Failed(Timeout)`).
    Timeout(u8),
    /// The database runs statement `k` of process `s` now.
    Execute(u8, u8),
    /// The database runs batch `k` of process `s` now while another transaction holds the
    /// lock of flag `f`'s row, which the batch would write: it skips that row (issue 28).
    SkipRow(u8, u8, u8),
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

impl Event {
    /// The event in words, for a fleet of `flags` flags per process (cores named `r0/f1`).
    pub fn describe(&self, flags: u8) -> String {
        let core = |p: u8| match flags {
            1 => format!("r{p}"),
            f => format!("r{}/f{}", p / f, p % f),
        };
        match *self {
            Event::Tick => "time moves on one tick".to_string(),
            Event::Timer(p) => format!("{}: timer fires", core(p)),
            Event::Timeout(s) => format!("r{s}: driver gives up on its statement (timeout)"),
            Event::Execute(s, k) => format!("db: runs r{s}'s statement #{k}"),
            Event::SkipRow(s, k, f) => format!(
                "db: runs r{s}'s batch #{k} while ANOTHER TRANSACTION holds the lock of row {}",
                ROWS[usize::from(f)]
            ),
            Event::LoseRequest(s, k) => format!("net: r{s}'s statement #{k} is LOST"),
            Event::Deliver(s) => format!("r{s}: reply arrives"),
            Event::LoseReply(s) => format!("net: r{s}'s reply is LOST"),
            Event::Notify(p) => format!("{}: notification arrives", core(p)),
            Event::LoseNotify(p) => format!("net: {}'s notification is LOST", core(p)),
            Event::WorkEnds(p) => format!("{}: leader-only work ends", core(p)),
            Event::Pause(s) => format!("r{s}: PAUSED (SIGSTOP)"),
            Event::Resume(s) => format!("r{s}: resumed (SIGCONT)"),
            Event::Crash(s) => format!("r{s}: CRASHES"),
            Event::Restart(s) => format!("r{s}: restarts (fresh cores, same name)"),
            Event::Close(s) => format!("r{s}: close() called"),
            Event::Failover(k) => format!(
                "db: FAILOVER to a standby that lacks the last {k} write(s)"
            ),
            Event::PoolerFailover(k) => format!(
                "db: FAILOVER behind a pooler (no reconnect, no Connected) to a standby that lacks the last {k} write(s)"
            ),
            Event::Delete => "db: an operator DELETEs the row".to_string(),
            Event::Write(p) => format!("{}: its work sends a transaction of its term", core(p)),
            Event::Land(k) => format!("db: the work's transaction #{k} arrives"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(1))
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

    /// The reference table holding the rows.
    pub(super) fn table(&self, params: &Params) -> RefTable {
        let mut t = RefTable::new();
        t.clock_floor = params.sim.safeguards.clock_floor;
        for (f, row) in self.rows.iter().enumerate() {
            if let Some(row) = row {
                t.put(ROWS[f], row.clone());
            }
        }
        t
    }

    /// The table is about to change: remember it for a failover that loses this write.
    pub(super) fn wrote(&mut self, params: &Params) {
        let before = self.rows.clone();
        self.remember(params, before);
    }

    /// Remembers the table (the rows) as it was before a write.
    pub(super) fn remember(&mut self, params: &Params, before: Vec<Option<RefRow>>) {
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
        let flags = usize::from(self.flags);
        let mut urgent = false;
        let mut new_late = 0u32;
        let faults = |n: u8| n > 0 && self.budget.total > 0;
        for set in 0..self.procs.len() / flags {
            let s = set as u8;
            let head = &self.procs[set * flags];
            for (k, req) in head.reqs.iter().enumerate() {
                out.push(Event::Execute(s, k as u8));
                if faults(self.budget.rowlocks) && req.op.is_batch() {
                    for f in self.skippable(params, set, &req.op) {
                        out.push(Event::SkipRow(s, k as u8, f as u8));
                    }
                }
                if faults(self.budget.losses) {
                    out.push(Event::LoseRequest(s, k as u8));
                }
                if !req.late {
                    new_late += 1;
                }
            }
            if head.reply.is_some() {
                if faults(self.budget.losses) {
                    out.push(Event::LoseReply(s));
                }
                if !head.paused {
                    out.push(Event::Deliver(s));
                    if !head.reply_late {
                        new_late += 1;
                    }
                }
            }
            for p in self.set(set) {
                let pr = &self.procs[p];
                let q = p as u8;
                if pr.work_token.is_some()
                    && matches!(pr.work, Some(Work::Running | Work::Told { .. }))
                    && self.budget.writes > 0
                {
                    out.push(Event::Write(q));
                }
                if pr.notify {
                    if faults(self.budget.losses) {
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
            }
            if !self.set_up(set) {
                if self.tick >= self.no_start_before {
                    out.push(Event::Restart(s));
                }
                continue;
            }
            if head.paused {
                out.push(Event::Resume(s));
            } else {
                // A core whose renew the driver put in the statement on its way, unknown to
                // it (`join-before-send` off), is not woken before that statement is back.
                let joined = head.inflight.map_or(0, |(sent, _)| sent.joined);
                for p in self.set(set) {
                    let local = self.local(params, p);
                    let due = self.procs[p]
                        .core
                        .as_ref()
                        .and_then(|c| c.flag().poll_timeout())
                        .is_some_and(|at| at <= local);
                    if due && joined & (1 << self.flag(p)) == 0 {
                        out.push(Event::Timer(p as u8));
                        urgent = true;
                    }
                }
                let local = self.local(params, set * flags);
                if head.inflight.is_some_and(|(_, give_up)| give_up <= local) {
                    out.push(Event::Timeout(s));
                    urgent = true;
                }
                if faults(self.budget.pauses) {
                    out.push(Event::Pause(s));
                }
                let open = self.set(set).any(|p| {
                    self.procs[p]
                        .core
                        .as_ref()
                        .is_some_and(|c| !c.flag().is_closed())
                });
                if faults(self.budget.closes) && open {
                    out.push(Event::Close(s));
                }
            }
            if faults(self.budget.crashes) {
                out.push(Event::Crash(s));
            }
        }
        if faults(self.budget.failovers) {
            for k in 0..=self.history.len() {
                out.push(Event::Failover(k as u8));
            }
        }
        if faults(self.budget.poolers) {
            for k in 0..=self.history.len() {
                out.push(Event::PoolerFailover(k as u8));
            }
        }
        for k in 0..self.effects.len() {
            out.push(Event::Land(k as u8));
        }
        if faults(self.budget.deletes)
            && self.rows.iter().any(Option::is_some)
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

    /// The flags of batch `sent` of process `s` whose row the batch would write now: the rows
    /// it skips if another transaction holds their lock.
    fn skippable(&self, params: &Params, s: usize, sent: &super::world::Sent) -> Vec<usize> {
        let table = self.table(params);
        let server = self.server_input(params, self.server(params));
        let server = leadership_core::Server {
            promoted_ago: None,
            ..server
        };
        let name = &self.procs[self.set(s).start].name;
        sent.parts()
            .filter(|&(f, _)| {
                sent.check(f).is_some_and(|c| {
                    let args = c.args(ROWS[f], name, params.lease_micros);
                    table.would_update(self.db_now(params), &server, &args)
                })
            })
            .map(|(f, _)| f)
            .collect()
    }

    /// This state after `event`.
    pub fn step(&self, params: &Params, event: Event) -> World {
        let mut w = self.clone();
        w.apply(params, event);
        w
    }

    pub(super) fn apply(&mut self, params: &Params, event: Event) {
        self.apply_event(params, event);
        // What the processes' drivers gathered goes now, where they are free (two flags).
        if self.violation.is_none() {
            self.flush_all(params);
        }
    }

    fn apply_event(&mut self, params: &Params, event: Event) {
        match event {
            Event::Tick => self.tick(params),
            Event::Timer(p) => self.fire_timer(params, usize::from(p)),
            Event::Timeout(s) => self.give_up(params, usize::from(s)),
            Event::Execute(s, k) => self.execute(params, usize::from(s), usize::from(k), None),
            Event::SkipRow(s, k, f) => {
                self.budget.rowlocks -= 1;
                self.spend();
                let f = Some(usize::from(f));
                self.execute(params, usize::from(s), usize::from(k), f);
            }
            Event::LoseRequest(s, k) => {
                let head = self.set(usize::from(s)).start;
                self.procs[head].reqs.remove(usize::from(k));
                self.budget.losses -= 1;
                self.spend();
            }
            Event::Deliver(s) => self.deliver(params, usize::from(s)),
            Event::LoseReply(s) => {
                let head = self.set(usize::from(s)).start;
                self.procs[head].reply = None;
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
            Event::Pause(s) => {
                for p in self.set(usize::from(s)) {
                    self.procs[p].paused = true;
                }
                self.budget.pauses -= 1;
                self.spend();
            }
            Event::Resume(s) => {
                self.fault();
                for p in self.set(usize::from(s)) {
                    self.procs[p].paused = false;
                }
                for p in self.set(usize::from(s)) {
                    // A kill the frozen supervisor owed (no watchdog) happens now.
                    self.deadline_kill(params, p);
                    if std::mem::take(&mut self.procs[p].reap_pending) {
                        self.reaped(params, p);
                    }
                }
            }
            Event::Crash(s) => {
                self.budget.crashes -= 1;
                self.spend();
                for p in self.set(usize::from(s)) {
                    self.exit(p);
                    // The parent-death signal kills the work with it.
                    self.procs[p].work = None;
                }
            }
            Event::Restart(s) => {
                self.fault();
                self.start_set(params, usize::from(s));
            }
            Event::Close(s) => {
                self.budget.closes -= 1;
                self.spend();
                for p in self.set(usize::from(s)) {
                    self.feed(params, p, Input::Close);
                }
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
                    self.history_lost |= standby != self.rows;
                    self.rows = standby;
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
                self.rows.iter_mut().for_each(|row| *row = None);
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
        self.open_second_flags(params);
        for p in 0..self.procs.len() {
            self.deadline_kill(params, p);
            let t = self.t_ns(params);
            if let Some(Work::Told { kill_at: Some(at) }) = self.procs[p].work {
                if t >= at {
                    let who = self.label(p);
                    log(|| format!("{who}: the old run kills the work a grace after telling it"));
                    self.procs[p].work = Some(Work::Dying);
                }
            }
        }
    }

    /// Core `p` exits (a crash, or the end of a close); once its process's last core has, the
    /// process is gone and its driver forgets everything.
    pub(super) fn exit(&mut self, p: usize) {
        let pr = &mut self.procs[p];
        pr.core = None;
        pr.notify = false;
        pr.known_timeline = 0;
        pr.belief.end();
        pr.reap_pending = false;
        let (head, f) = (self.head(p), self.flag(p));
        self.procs[head]
            .outbox
            .retain(|(q, _)| usize::from(*q) != f);
        if (head..head + usize::from(self.flags)).any(|q| self.up(q)) {
            return;
        }
        for q in head..head + usize::from(self.flags) {
            self.procs[q].paused = false;
        }
        let pr = &mut self.procs[head];
        pr.inflight = None;
        pr.reqs.iter_mut().for_each(|r| r.live = false);
        pr.reply = None;
        pr.outbox.clear();
    }
}
