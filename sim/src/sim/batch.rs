//! A process's checks as one statement (issue 28, `SimConfig::batch`), and the row locks of
//! other transactions (the `rowlock` fault).
//!
//! The modelled set driver: its cores' statements go into the set's outbox as they ask for
//! them; at the end of each instant, if nothing of the set is on its way, the driver hands
//! `Input::Batching` to every other core of the set whose `poll_early_check()` has passed
//! (and serves a timer that is due), then sends every check queued as one statement
//! (`sql::CHECK_BATCH`; the single check if there is one), or a queued release alone. The
//! batch travels as one message: one latency, lost, slow or held by a stall as a whole; on
//! a broken connection all its members fail together, and after a failover all of them hear
//! of the new server. The database runs it at arrival on the reference table
//! ([`RefTable::check_batch_on`](crate::table::RefTable::check_batch_on)): each member as the
//! single check at the same `now()`, but a row another transaction holds locked, which the
//! check would write, is skipped and that member alone is told `Failed(NotAttempted)`. One
//! reply returns to all members at once. Each member keeps its own statement id and timeout:
//! they were sent together, so they give up together.
//!
//! A row lock (`rowlock`): another transaction holds one flag's row for a while. A single
//! statement that would write the row (a check the row passes, a release naming it) waits
//! for the lock and then runs, with the `now()` of its start, as PostgreSQL's `UPDATE` does
//! under READ COMMITTED; a fenced transaction waits as well; one that would not write runs
//! at once. A failover ends the lock and loses what waited for it.

use leadership_core::{DbTime, Input};

use super::clock::db_time;
use super::process::{Reply, Stmt};
use super::sets::Batch;
use super::trace::{Op, Outcome, Pid, What, DB};
use super::world::{Ev, FaultKind, World};
use crate::check::{self, Check};
use crate::table::CheckArgs;

impl World {
    /// Every set's driver sends what it gathered (the end of an instant, batch mode).
    pub(super) fn flush_all(&mut self) {
        for set in 0..self.sets.len() {
            if !self.sets[set].outbox.is_empty() {
                self.flush(set);
            }
        }
    }

    /// Whether a statement of set `set` is on its way (its driver sends one at a time).
    fn busy(&self, set: usize) -> bool {
        self.cores_of(set)
            .any(|c| self.rust[c].host.inflight.is_some())
    }

    /// Set `set`'s driver sends its next statement, if it is free and running.
    fn flush(&mut self, set: usize) {
        let t = self.t;
        let cores = self.cores_of(set);
        let head = cores.start;
        if self.busy(set) || self.rust[head].host.paused(t) {
            return;
        }
        // Statements of cores that have exited since are gone with them.
        let rust = &self.rust;
        self.sets[set]
            .outbox
            .retain(|(p, _)| rust[usize::from(*p)].flag.is_some());
        if let Some(k) = self.sets[set]
            .outbox
            .iter()
            .position(|(_, op)| matches!(op, Op::Release { .. }))
        {
            let (p, op) = self.sets[set].outbox.remove(k);
            return self.send(p, op, db_time(0));
        }
        if self.sets[set].outbox.is_empty() {
            return;
        }
        // Before sending: the other cores whose timer is due check too, and the renews whose
        // early window has opened join.
        let mut joined = Vec::new();
        for c in cores {
            let p = c as Pid;
            if self.sets[set].outbox.iter().any(|(q, _)| *q == p) {
                continue;
            }
            let local = self.rust[c].host.clock.local(t);
            let Some(core) = &mut self.rust[c].flag else {
                continue;
            };
            if core.poll_timeout().is_some_and(|at| at <= local) {
                core.handle_timeout(local);
                self.drain(p);
                continue;
            }
            if core
                .flag()
                .poll_early_check()
                .is_none_or(|earliest| earliest > local)
            {
                continue;
            }
            self.stats.joined_early += 1;
            self.trace.push(t, p, What::Joins);
            if self.config.safeguards.join_before_send {
                self.feed(p, Input::Batching);
                continue;
            }
            // Safeguard off: the renew the core would send goes in, the core unaware.
            let Some(mut probe) = self.rust[c].flag.clone() else {
                continue;
            };
            if probe.handle_input(local, Input::Batching).is_err() {
                continue;
            }
            let mut check = None;
            while let Some(c) = probe.poll_command() {
                check = check.or(Check::from_command(&c));
            }
            if let Some(check) = check.map(|c| c.as_sent(&self.config.safeguards)) {
                self.sets[set].outbox.push((p, Op::Check(check)));
                joined.push((p, check));
            }
        }
        let outbox = std::mem::take(&mut self.sets[set].outbox);
        let (checks, rest): (Vec<_>, Vec<_>) = outbox
            .into_iter()
            .partition(|(_, op)| matches!(op, Op::Check(_)));
        self.sets[set].outbox = rest;
        match checks.len() {
            0 => {}
            1 => {
                let (p, op) = checks[0];
                self.send(p, op, db_time(0));
                self.note_joined(p, &joined);
            }
            _ => self.send_batch(&checks, &joined),
        }
    }

    /// With `join-before-send` off: core `p`'s statement carries a renew its core does not
    /// know of yet.
    fn note_joined(&mut self, p: Pid, joined: &[(Pid, Check)]) {
        if let Some((_, check)) = joined.iter().find(|(q, _)| *q == p) {
            let id = self.rust[usize::from(p)].host.next_id;
            self.rust[usize::from(p)].joined = Some((id, *check));
        }
    }

    /// Sends `members`' checks as one statement.
    fn send_batch(&mut self, members: &[(Pid, Op)], joined: &[(Pid, Check)]) {
        let t = self.t;
        let timeout = self.config.timeout;
        let timeline = self.timeline;
        self.stats.batches += 1;
        self.stats.batched_checks += members.len() as u64;
        let head = members[0].0;
        self.trace.push(t, head, What::Batch(members.len() as u16));
        let mut stmts = Vec::with_capacity(members.len());
        let mut new_server = false;
        for &(p, op) in members {
            let h = self.host(p);
            h.next_id += 1;
            let id = h.next_id;
            h.inflight = Some((id, op));
            h.reply = None;
            let inc = h.inc;
            let deadline = h.clock.true_at(h.clock.local(t) + timeout, t);
            new_server |= h.known_timeline != timeline;
            self.trace.push(t, p, What::Send(op));
            self.push(deadline, Ev::Timeout { p, inc, id });
            self.note_joined(p, joined);
            stmts.push(Stmt {
                who: p,
                inc,
                id,
                op,
                ts: db_time(0),
                timeline,
            });
        }
        let conn_down = t < self.host(head).conn_down_until;
        let slot = self.hold_batch(stmts);
        if new_server && !conn_down {
            // The first statement on a new connection is not run: every member's core is
            // told what the server is, and sends again.
            let server = self.server_identity();
            return self.answer_batch(slot, |_| Some(Reply::Connected(server)), 2);
        }
        if conn_down {
            self.stats.errors += 1;
            return self.answer_batch(slot, |_| Some(Reply::Error), 1);
        }
        match self.latency() {
            Some(d) => self.push(t + d, Ev::BatchArrives(slot)),
            None => {
                self.trace.push(t, head, What::Lost);
                self.free_batch(slot);
            }
        }
    }

    fn hold_batch(&mut self, members: Vec<Stmt>) -> u32 {
        match self.free_batches.pop() {
            Some(slot) => {
                self.batches[slot as usize].members = members;
                slot
            }
            None => {
                self.batches.push(Batch { members });
                (self.batches.len() - 1) as u32
            }
        }
    }

    fn free_batch(&mut self, slot: u32) {
        self.batches[slot as usize].members.clear();
        self.free_batches.push(slot);
    }

    /// Whether member `m` of a batch is still waited for.
    fn waited_for(&self, m: &Stmt) -> bool {
        let h = &self.rust[usize::from(m.who)].host;
        h.up && h.inc == m.inc && h.inflight.map(|(i, _)| i) == Some(m.id)
    }

    /// Stores each waited-for member's reply (`reply(k)` for the `k`th member) and sends them
    /// back as one message after `trips` one-way latencies (or loses it).
    fn answer_batch(&mut self, slot: u32, reply: impl Fn(usize) -> Option<Reply>, trips: u32) {
        let t = self.t;
        let members = std::mem::take(&mut self.batches[slot as usize].members);
        let mut any = false;
        for (k, m) in members.iter().enumerate() {
            if let (true, Some(r)) = (self.waited_for(m), reply(k)) {
                self.rust[usize::from(m.who)].host.reply = Some(r);
                any = true;
            }
        }
        self.batches[slot as usize].members = members;
        if !any {
            return self.free_batch(slot);
        }
        let mut delay = 0;
        for _ in 0..trips {
            match self.latency() {
                Some(d) => delay += d,
                None => {
                    self.trace.push(t, DB, What::Lost);
                    return self.free_batch(slot);
                }
            }
        }
        self.push(t + delay, Ev::BatchReply(slot));
    }

    /// A batch reaches the database.
    pub(super) fn batch_arrives(&mut self, slot: u32) {
        let t = self.t;
        let timeline = self.batches[slot as usize].members[0].timeline;
        let silent = self
            .config
            .undeclared_outage
            .is_some_and(|o| t >= o.as_nanos() as u64);
        if timeline != self.timeline || silent {
            self.trace.push(t, DB, What::Lost);
            self.free_batch(slot);
        } else if t < self.stall_until {
            self.stalled.push(super::sets::Held::Batch(slot));
        } else {
            self.execute_batch(slot);
        }
    }

    /// A stall that ends in errors fails the batch: one reply, an error for every member.
    pub(super) fn fail_batch(&mut self, slot: u32) {
        self.stats.errors += 1;
        for m in self.batches[slot as usize].members.clone() {
            self.trace
                .push(self.t, DB, What::Exec(m.op, Outcome::Error));
        }
        self.answer_batch(slot, |_| Some(Reply::Error), 1);
    }

    /// Runs a batch at the database, now, as one statement.
    pub(super) fn execute_batch(&mut self, slot: u32) {
        let t = self.t;
        let now = db_time(t + self.db_offset);
        let members = self.batches[slot as usize].members.clone();
        let flags: Vec<usize> = members.iter().map(|m| self.flag_of(m.who)).collect();
        let terms: Vec<_> = flags.iter().map(|&f| self.term_of_row(f)).collect();
        let before: Vec<_> = members
            .iter()
            .zip(&flags)
            .map(|(m, &f)| self.holder_before(&self.rows[f].name, m.who))
            .collect();
        let locked: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| t < r.locked_until)
            .map(|r| r.name.as_str())
            .collect();
        let args: Vec<CheckArgs<'_>> = members
            .iter()
            .zip(&flags)
            .map(|(m, &f)| {
                let Op::Check(check) = m.op else {
                    unreachable!("a batch carries checks only")
                };
                let name = &self.rust[usize::from(m.who)].host.name;
                check.args(&self.rows[f].name, name, self.lease_micros)
            })
            .collect();
        let server = self.server_identity();
        let rows = check::run_batch(
            &mut self.table,
            now,
            server,
            &args,
            |name| locked.contains(&name),
            &self.config.safeguards,
        );
        drop(args);
        let mut replies = Vec::with_capacity(rows.len());
        for (k, row) in rows.into_iter().enumerate() {
            let (m, f) = (members[k], flags[k]);
            let outcome = if !row.attempted {
                self.stats.not_attempted += 1;
                replies.push(Reply::NotAttempted);
                Outcome::NotAttempted
            } else {
                let r = row.result;
                let version = r.row.as_ref().and_then(|row| row.version);
                if let (true, Some((false, holder, ts))) = (r.won, before[k]) {
                    let age = ts.map_or(i64::MAX, |ts| now.micros_since(ts));
                    self.judge_takeover(m.who, holder, age);
                }
                let outcome = match r.won {
                    true => Outcome::Wrote(version.unwrap_or_default()),
                    false => Outcome::Unchanged(version),
                };
                replies.push(Reply::Check(r));
                outcome
            };
            self.new_term(f, terms[k].clone());
            self.trace.push(t, DB, What::Exec(m.op, outcome));
        }
        self.answer_batch(slot, |k| replies.get(k).cloned(), 1);
    }

    /// The row `row` as a statement of core `p` finds it: whether it names `p`'s process,
    /// the process that holds it (by index, if one of ours), and its timestamp.
    pub(super) fn holder_before(
        &self,
        row: &str,
        p: Pid,
    ) -> Option<(bool, Option<usize>, Option<DbTime>)> {
        let name = &self.host_ref(usize::from(p)).name;
        self.table.get(row).map(|row| {
            let holder = row.holder.as_deref().unwrap_or("");
            let holder_pid =
                (0..self.rust.len() + self.go.len()).find(|&j| self.host_ref(j).name == holder);
            (holder == name, holder_pid, row.timestamp)
        })
    }

    /// A batch's reply reaches its process: each member still waiting gets its part.
    pub(super) fn batch_reply(&mut self, slot: u32) {
        let t = self.t;
        let members = std::mem::take(&mut self.batches[slot as usize].members);
        let head = members[0].who;
        if self.host(head).paused(t) {
            let until = self.host(head).paused_until;
            self.batches[slot as usize].members = members;
            return self.push(until, Ev::BatchReply(slot));
        }
        for m in &members {
            if !self.waited_for(m) {
                continue; // the driver gave up on it, or an earlier life sent it
            }
            let h = self.host(m.who);
            let (_, op) = h.inflight.take().expect("waited for");
            let reply = h.reply.take().unwrap_or(Reply::Error);
            self.trace.push(t, m.who, What::Reply(op));
            let joined = self.rust[usize::from(m.who)].joined.take();
            match joined {
                Some((id, check)) if id == m.id => self.join_late(m.who, check, reply),
                _ => self.deliver(m.who, reply),
            }
        }
        self.batches[slot as usize].members = members;
        self.free_batch(slot);
    }

    /// With `join-before-send` off: the batch that carried a renew core `p` did not know of
    /// has returned; the driver hands it `Input::Batching` now (so that renew's lease counts
    /// from now: the driver did not wake the core for it meanwhile), then the reply. A core
    /// that asks for another check (something else happened to it) has it sent, and the
    /// reply is dropped.
    fn join_late(&mut self, p: Pid, check: Check, reply: Reply) {
        self.swallow = Some((p, check));
        self.swallowed = false;
        self.feed(p, Input::Batching);
        self.swallow = None;
        if std::mem::take(&mut self.swallowed) {
            self.deliver(p, reply);
        }
    }

    /// Whether statement `stmt` waits for a row lock at `now`: the row it would write, if
    /// another transaction holds it.
    pub(super) fn waits_for_lock(&self, stmt: &Stmt, now: DbTime) -> Option<usize> {
        if !self.is_rust(stmt.who) {
            return None;
        }
        let f = self.flag_of(stmt.who);
        let row = &self.rows[f];
        if self.t >= row.locked_until {
            return None;
        }
        let name = &self.rust[usize::from(stmt.who)].host.name;
        let writes = match stmt.op {
            Op::Check(check) => {
                let args = check.args(&row.name, name, self.lease_micros);
                let server = self.server_identity();
                self.table.would_update(now, &server, &args)
            }
            Op::Release { version } => self.table.would_release(&row.name, name, version),
            _ => false,
        };
        writes.then_some(f)
    }

    /// The `rowlock` fault: another transaction locks one flag's row of a victim (its
    /// leader's own row half the time) for `d`.
    pub(super) fn lock_row(&mut self, d: u64) {
        let t = self.t;
        let Some(p) = self.victim(true) else { return };
        let f = match self.rng.below(2) {
            0 => self.flag_of(p),
            _ => self.rng.below(self.flags as u64) as usize,
        };
        if t < self.rows[f].locked_until {
            return;
        }
        self.stats.faults[FaultKind::RowLock as usize] += 1;
        self.rows[f].locked_until = t + d;
        let core = (self.siblings(p).start + f) as Pid;
        self.trace.push(t, core, What::RowLock(t + d));
        self.push(t + d, Ev::RowUnlock(f as u16));
        self.quiet_until(t + d);
    }

    /// The lock on flag `f`'s row ends (if its time has come): what waited for it runs now,
    /// in arrival order, each with the `now()` of its start.
    pub(super) fn unlock_row(&mut self, f: usize) {
        if self.t < self.rows[f].locked_until {
            return;
        }
        self.rows[f].locked_until = 0;
        for (stmt, now) in std::mem::take(&mut self.rows[f].waiting) {
            self.execute_at(stmt, now);
        }
    }
}
