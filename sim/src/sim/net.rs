//! The network and the database: latency and loss of every message, statements executed on the
//! reference table in arrival order, replies, and `NOTIFY`.

use super::clock::db_time;
use super::go_model;
use super::process::{Reply, Stmt};
use super::sets::FLAG;
use super::trace::{Op, Outcome, Pid, What, DB};
use super::world::{Ev, World};
use crate::check;
use crate::violation::{NewerTerm, Violation};
use leadership_core::DbTime;

impl World {
    /// A one-way delay, or `None` if the message is lost.
    pub(super) fn latency(&mut self) -> Option<u64> {
        let t = self.t;
        let f = &self.faults;
        if t < self.loss_until && self.rng.chance_ppm(f.loss_ppm) {
            self.stats.lost += 1;
            return None;
        }
        let l = f.latency;
        let min = l.min.as_nanos() as u64;
        let mut d = min + self.rng.below(l.spread.as_nanos() as u64);
        if self.rng.chance_ppm(l.tail_ppm) {
            d = min + self.rng.below(l.tail.as_nanos() as u64);
        }
        if t < self.slow_until && self.rng.chance_ppm(300_000) {
            d = min + self.rng.below(f.slow_max.as_nanos() as u64);
        }
        Some(d)
    }

    pub(super) fn send(&mut self, p: Pid, op: Op, ts: leadership_core::DbTime) {
        let t = self.t;
        if !self.is_rust(p) {
            self.stats.go_statements += 1;
        }
        let timeout = self.config.timeout;
        let h = self.host(p);
        h.next_id += 1;
        let id = h.next_id;
        h.inflight = Some((id, op));
        h.reply = None;
        let inc = h.inc;
        let conn_down = t < h.conn_down_until;
        let deadline = h.clock.true_at(h.clock.local(t) + timeout, t);
        let new_server = self.is_rust(p) && self.host(p).known_timeline != self.timeline;
        self.trace.push(t, p, What::Send(op));
        self.push(deadline, Ev::Timeout { p, inc, id });
        let stmt = Stmt {
            who: p,
            inc,
            id,
            op,
            ts,
            timeline: self.timeline,
        };
        if new_server && !conn_down {
            // The first statement on a new connection is not run: the driver tells the core
            // what the server is (one round trip to connect), and the core sends it again.
            let server = self.server_identity();
            if let (Some(a), Some(b)) = (self.latency(), self.latency()) {
                let h = self.host(p);
                h.reply = Some(Reply::Connected(server));
                self.push(t + a + b, Ev::Reply { p, inc, id });
            }
            return;
        }
        if conn_down {
            // The broken connection answers with an error; nothing reaches the database.
            self.stats.errors += 1;
            let h = self.host(p);
            h.reply = Some(Reply::Error);
            if let Some(d) = self.latency() {
                self.push(t + d, Ev::Reply { p, inc, id });
            }
            return;
        }
        match self.latency() {
            Some(d) => {
                let slot = match self.free_slots.pop() {
                    Some(slot) => {
                        self.in_net[slot as usize] = stmt;
                        slot
                    }
                    None => {
                        self.in_net.push(stmt);
                        (self.in_net.len() - 1) as u32
                    }
                };
                self.push(t + d, Ev::Arrive(slot));
            }
            None => self.trace.push(t, p, What::Lost),
        }
    }

    /// What the database says about itself to a new connection: a new timeline after each
    /// failover, and how long ago it was promoted (as a role that may list the WAL directory
    /// learns it).
    pub(super) fn server_identity(&self) -> leadership_core::Server {
        let promoted_ago = (self.timeline > 1)
            .then(|| std::time::Duration::from_nanos(self.t.saturating_sub(self.db_started)));
        leadership_core::Server {
            system: Some(1),
            timeline: Some(self.timeline),
            // Fixed for the server's life (a clock step of the database moves no start).
            started: Some(db_time(self.db_started)),
            durable: true,
            promoted_ago,
        }
    }

    pub(super) fn fail_stmt(&mut self, stmt: Stmt) {
        let t = self.t;
        self.stats.errors += 1;
        self.trace.push(t, DB, What::Exec(stmt.op, Outcome::Error));
        self.reply(stmt, Reply::Error);
    }

    /// Stores the reply for the sender and sends it back, if the sender still waits for it.
    pub(super) fn reply(&mut self, stmt: Stmt, reply: Reply) {
        let t = self.t;
        let p = stmt.who;
        let h = self.host(p);
        if !h.up || h.inc != stmt.inc || h.inflight.map(|(i, _)| i) != Some(stmt.id) {
            return;
        }
        h.reply = Some(reply);
        match self.latency() {
            Some(d) => self.push(
                t + d,
                Ev::Reply {
                    p,
                    inc: stmt.inc,
                    id: stmt.id,
                },
            ),
            None => self.trace.push(t, DB, What::Lost),
        }
    }

    /// Runs a statement at the database, now: or, if it would write a row another
    /// transaction holds locked, once that lock ends, with the `now()` of its start now.
    pub(super) fn execute(&mut self, stmt: Stmt) {
        let now = db_time(self.t + self.db_offset);
        if let Some(f) = self.waits_for_lock(&stmt, now) {
            self.stats.lock_waits += 1;
            self.trace
                .push(self.t, DB, What::Exec(stmt.op, Outcome::Waits));
            return self.rows[f].waiting.push((stmt, now));
        }
        self.execute_at(stmt, now);
    }

    /// Runs a statement whose `now()` is `now`, and replies.
    pub(super) fn execute_at(&mut self, stmt: Stmt, now: DbTime) {
        let f = self.flag_of(stmt.who);
        let before = self.term_of_row(f);
        let reply = self.execute_statement(stmt, now);
        self.new_term(f, before);
        self.reply(stmt, reply);
    }

    /// The row of flag `f` changed hands or terms: a new term for the user's data, the change
    /// that began it committed.
    pub(super) fn new_term(&mut self, f: usize, before: Option<(Option<String>, Option<i64>)>) {
        let after = self.term_of_row(f);
        if after.is_some() && after != before {
            let row = &mut self.rows[f];
            row.epoch += 1;
            if let Some((_, Some(token))) = &after {
                row.epoch_of_token.insert(*token, row.epoch);
            }
        }
    }

    /// Flag `f`'s row's holder and term column.
    pub(super) fn term_of_row(&self, f: usize) -> Option<(Option<String>, Option<i64>)> {
        self.table
            .get(&self.rows[f].name)
            .map(|r| (r.holder.clone(), r.term))
    }

    /// A transaction of a term's work arrives: fenced, it commits only if the term holds the
    /// flag with a live lease (the fence's row lock makes fence and commit one instant here);
    /// unfenced, it commits. A commit after a newer term began breaks the invariant.
    pub(super) fn effect_lands(&mut self, p: Pid, token: i64, fenced: bool, timeline: u32) {
        let t = self.t;
        if timeline != self.timeline {
            return; // sent to the primary that failed over
        }
        let f = self.flag_of(p);
        if t < self.stall_until || t < self.rows[f].locked_until {
            // Held by the stall, or the fence waits for the row's lock (`FOR SHARE`).
            let until = self.stall_until.max(self.rows[f].locked_until);
            return self.push(
                until,
                Ev::EffectLands {
                    p,
                    token,
                    fenced,
                    timeline,
                },
            );
        }
        let now = db_time(t + self.db_offset);
        let name = self.rust[usize::from(p)].host.name.clone();
        let row = &self.rows[f];
        if fenced
            && !self
                .table
                .fence(now, &row.name, &name, token, self.lease_micros)
        {
            self.stats.effects_refused += 1;
            return;
        }
        self.stats.effects_committed += 1;
        let began = row.epoch_of_token.get(&token).copied().unwrap_or(0);
        if row.epoch > began && !self.history_lost && self.violation.is_none() {
            self.violation = Some(Violation::LateEffect {
                who: name,
                token,
                after: NewerTerm::Count(row.epoch - began),
            });
        }
    }

    /// What a statement does to the table at `now`, and its reply.
    fn execute_statement(&mut self, stmt: Stmt, now: DbTime) -> Reply {
        let t = self.t;
        let p = stmt.who;
        let (i, n) = (usize::from(p), self.rust.len());
        // Borrowed field by field (no clone per statement): the hot path allocates only the
        // reference table's row copies.
        let name: &str = if i < n {
            &self.rust[i].host.name
        } else {
            &self.go[i - n].host.name
        };
        // The row of Rust core `p`'s flag (the Go flag's is the first).
        let flag: &str = &self.rows[if i < n { i % self.flags } else { 0 }].name;
        let mut takeover = None;
        let (outcome, reply) = match stmt.op {
            Op::Check(check) => {
                // The row as the statement found it: who held it, and since when.
                let before = self.holder_before(flag, p);
                let args = check.args(flag, name, self.lease_micros);
                let server = self.server_identity();
                let r = check::run(&mut self.table, now, server, &args, &self.config.safeguards);
                if let (true, Some((false, holder, ts))) = (r.won, before) {
                    let age = ts.map_or(i64::MAX, |ts| now.micros_since(ts));
                    takeover = Some((holder, age));
                }
                let version = r.row.as_ref().and_then(|row| row.version);
                let outcome = if r.won {
                    Outcome::Wrote(version.unwrap_or_default())
                } else {
                    Outcome::Unchanged(version)
                };
                (outcome, Reply::Check(r))
            }
            Op::Release { version } => {
                let released = self.table.release(flag, name, version);
                if released {
                    self.notify_all(p);
                    let f = i % self.flags;
                    let (mut other_leads, mut other_up) = (false, false);
                    let others = self.rust.iter().enumerate();
                    for (_, r) in others.filter(|(j, _)| *j != i && j % self.flags == f) {
                        other_leads |= r.leads;
                        other_up |= r.host.up && !r.host.paused(t);
                    }
                    // A handover needs someone to hand over to: timed only when another
                    // process is running.
                    if !other_leads && other_up && self.rows[f].handover_since.is_none() {
                        self.rows[f].handover_since = Some((t, p));
                    }
                }
                let outcome = if released {
                    Outcome::Wrote(version + 1)
                } else {
                    Outcome::Unchanged(None)
                };
                (outcome, Reply::Released(released))
            }
            Op::GoNow => (Outcome::Read, Reply::GoNow(now)),
            Op::GoLoad => (
                Outcome::Read,
                Reply::GoLoad(go_model::load(&self.table, FLAG)),
            ),
            Op::GoInsert => {
                let ok = go_model::insert(&mut self.table, FLAG, name, stmt.ts);
                (go_outcome(ok, 0), Reply::GoWrote(ok))
            }
            Op::GoUpdateTimestamp { version } => {
                let ok = go_model::update_timestamp(&mut self.table, FLAG, name, version, stmt.ts);
                (go_outcome(ok, version + 1), Reply::GoWrote(ok))
            }
            Op::GoUpdateHolder { version } => {
                let ok = go_model::update_holder(&mut self.table, FLAG, name, version, stmt.ts);
                (go_outcome(ok, version + 1), Reply::GoWrote(ok))
            }
        };
        if let Some((holder, age)) = takeover {
            self.judge_takeover(p, holder, age);
        }
        self.trace.push(t, DB, What::Exec(stmt.op, outcome));
        reply
    }

    /// `NOTIFY`: every other Rust process listens (Go processes do not), each core to its
    /// flag's channel.
    pub(super) fn notify_all(&mut self, from: Pid) {
        let t = self.t;
        let f = self.flag_of(from);
        for q in (f..self.rust.len()).step_by(self.flags) {
            let q = q as Pid;
            if q == from || !self.rust[usize::from(q)].host.up {
                continue;
            }
            if t < self.rust[usize::from(q)].host.conn_down_until {
                continue; // its listening connection is down too
            }
            if let Some(ppm) = self.faults.notify_loss {
                if self.rng.chance_ppm(ppm) {
                    self.stats.lost += 1;
                    self.trace.push(t, q, What::Lost);
                    continue;
                }
            }
            let inc = self.rust[usize::from(q)].host.inc;
            if let Some(d) = self.latency() {
                self.push(t + d, Ev::Notify { p: q, inc });
            }
        }
    }
}

fn go_outcome(ok: bool, version: i64) -> Outcome {
    if ok {
        Outcome::Wrote(version)
    } else {
        Outcome::Unchanged(None)
    }
}
