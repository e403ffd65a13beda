//! The model check's modelled driver: what each process's driver does with its core's
//! commands (send a check or a release, tell the work to stop, track the belief and the
//! work), and what the database does with a statement when the search picks it (run it on
//! the reference table, reply) and with a work's transaction (fence, commit).
//!
//! It is the simulator's driver (`sim/driver.rs`) without its dice: the same safeguard
//! switches, the same check ([`Check`](crate::check::Check), built and run by
//! [`crate::check`]), the same judge of who leads, the same violations. Where the simulator
//! draws a delay (a reply's latency, how long work takes to stop, a kill's latency), the
//! model check leaves the moment open: it is an event of its own ([`Event`](super::Event))
//! that the search tries at every point, so the two drivers differ in that alone and are
//! kept apart on purpose (one schedules on a clock, the other enumerates).

use leadership_core::{Command, DbTime, Failure, Input};

use super::events::log;
use super::world::{Reply, Req, Sent, Work, World, MAX_REQS, ROWS};
use super::Params;
use crate::check::{self, Check};
use crate::sim::trace::Op;
use crate::violation::{NewerTerm, Violation};

impl World {
    /// The database runs process `s`'s statement `k` now. With `locked`, another transaction
    /// holds that flag's row lock: a batch skips the row if it would write it (the event
    /// that spends a row lock is only offered then).
    pub(super) fn execute(&mut self, params: &Params, s: usize, k: usize, locked: Option<usize>) {
        let head = self.set(s).start;
        let req = self.procs[head].reqs.remove(k);
        let now = self.db_now(params);
        let reply = match req.op.is_batch() {
            true => self.run_batch(params, head, &req.op, now, locked),
            false => {
                let (f, op) = req.op.parts().next().expect("a statement has a part");
                self.run_one(params, head + f, op, now)
            }
        };
        if req.live && self.set_up(s) {
            self.procs[head].reply = Some(reply);
            self.procs[head].reply_late = false;
        }
    }

    /// Runs core `p`'s single statement `op` at `now`.
    fn run_one(&mut self, params: &Params, p: usize, op: Op, now: DbTime) -> Reply {
        let f = self.flag(p);
        let name = self.procs[p].name.clone();
        let who = self.label(p);
        match op {
            Op::Check(check) => {
                let before = self.rows.clone();
                let mut table = self.table(params);
                let args = check.args(ROWS[f], &name, params.lease_micros);
                let server = self.server_input(params, self.server(params));
                let r = check::run(&mut table, now, server, &args, &params.sim.safeguards);
                self.checked(params, p, &table, &before, &r, now);
                if r.won {
                    self.remember(params, before);
                }
                Reply::Check(r)
            }
            Op::Release { version } => {
                let mut table = self.table(params);
                let released = table.release(ROWS[f], &name, version);
                if released {
                    let before = self.rows.clone();
                    self.rows[f] = table.get(ROWS[f]).cloned();
                    self.remember(params, before);
                }
                log(|| format!("db: {who}'s release of v{version}: released = {released}"));
                if released {
                    let flags = usize::from(self.flags);
                    for (q, other) in self.procs.iter_mut().enumerate() {
                        if q != p && q % flags == f && other.core.is_some() {
                            other.notify = true;
                            other.notify_late = false;
                        }
                    }
                }
                Reply::Released(released)
            }
            other => unreachable!("the model sends no {other:?}"),
        }
    }

    /// Runs a batch of the process whose head is `head` at `now`, as one statement: each
    /// flag's check as alone at that `now`, but a row `locked` names, which the check would
    /// write, skipped ([`RefTable::check_batch_on`](crate::table::RefTable::check_batch_on)).
    fn run_batch(
        &mut self,
        params: &Params,
        head: usize,
        sent: &Sent,
        now: DbTime,
        locked: Option<usize>,
    ) -> Reply {
        let before = self.rows.clone();
        let mut table = self.table(params);
        let name = self.procs[head].name.clone();
        let parts: Vec<(usize, Check)> = sent
            .parts()
            .map(|(f, op)| match op {
                Op::Check(c) => (f, c),
                other => unreachable!("a batch carries checks only, not {other:?}"),
            })
            .collect();
        let args: Vec<_> = parts
            .iter()
            .map(|(f, c)| c.args(ROWS[*f], &name, params.lease_micros))
            .collect();
        let server = self.server_input(params, self.server(params));
        let rows = check::run_batch(
            &mut table,
            now,
            server,
            &args,
            |row| locked.is_some_and(|f| ROWS[f] == row),
            &params.sim.safeguards,
        );
        let mut replies = Vec::with_capacity(rows.len());
        let mut won = false;
        for ((f, _), row) in parts.iter().zip(rows) {
            let p = head + f;
            if !row.attempted {
                let who = self.label(p);
                log(|| format!("db: {who}'s check SKIPPED: another transaction holds its row"));
                replies.push((*f as u8, Reply::NotAttempted));
                continue;
            }
            won |= row.result.won;
            self.checked(params, p, &table, &before, &row.result, now);
            replies.push((*f as u8, Reply::Check(row.result)));
        }
        if won {
            // One transaction: a failover loses all its writes or none.
            self.remember(params, before);
        }
        Reply::Batch(replies)
    }

    /// Core `p`'s check ran, giving `r` and leaving `table` (the rows were `before`): the Go
    /// rule is judged, and a win recorded.
    fn checked(
        &mut self,
        params: &Params,
        p: usize,
        table: &crate::table::RefTable,
        before: &[Option<crate::table::RefRow>],
        r: &crate::table::CheckResult,
        now: DbTime,
    ) {
        let f = self.flag(p);
        let name = self.procs[p].name.clone();
        let who = self.label(p);
        log(|| {
            format!(
                "db: {who}'s check {} → row {}",
                if r.won { "WINS" } else { "does not win" },
                row_text(r.row.as_ref())
            )
        });
        if let (true, Some(b)) = (r.won, &before[f]) {
            if b.holder.as_deref() != Some(name.as_str()) {
                let age = b.timestamp.map_or(i64::MAX, |ts| now.micros_since(ts));
                if age <= params.sim.interval.as_micros() as i64 {
                    self.violate(Violation::TookLiveLease {
                        who: name.clone(),
                        holder: b.holder.clone().unwrap_or_else(|| "NULL".to_string()),
                        age_micros: age,
                    });
                }
            }
        }
        if r.won {
            self.rows[f] = table.get(ROWS[f]).cloned();
            let term = self.rows[f].as_ref().and_then(|row| row.term);
            self.newest_term[f] = self.newest_term[f].max(term);
        }
    }

    /// The work's transaction `k` arrives: on the current timeline it runs the fence (unless
    /// unfenced), writes and commits at once. The fence's row lock makes that one instant in
    /// the model: no check commits between the fence and the commit.
    pub(super) fn land(&mut self, params: &Params, k: usize) {
        let e = self.effects.remove(k);
        let who = self.procs[usize::from(e.p)].name.clone();
        let f = self.flag(usize::from(e.p));
        if e.timeline != self.timeline {
            return log(|| format!("db: {who}'s transaction was sent to a lost primary: gone"));
        }
        if e.fenced {
            let held = self.table(params).fence(
                self.db_now(params),
                ROWS[f],
                &who,
                e.token,
                params.lease_micros,
            );
            if !held {
                return log(|| {
                    format!(
                        "db: the fence of {who}'s term {} fails: the transaction aborts",
                        e.token
                    )
                });
            }
        }
        log(|| format!("db: {who}'s transaction of term {} COMMITS", e.token));
        if let Some(newer) = self.newest_term[f].filter(|&n| n > e.token) {
            if !self.history_lost {
                self.violate(Violation::LateEffect {
                    who,
                    token: e.token,
                    after: NewerTerm::Token(newer),
                });
            }
        }
    }

    /// Process `s`'s reply reaches its driver: each part to its core.
    pub(super) fn deliver(&mut self, params: &Params, s: usize) {
        let head = self.set(s).start;
        let reply = self.procs[head].reply.take().expect("enabled with a reply");
        let (sent, _) = self.procs[head]
            .inflight
            .take()
            .expect("a reply is delivered only while its statement is waited for");
        match reply {
            Reply::Batch(parts) => {
                for (f, r) in parts {
                    let f = usize::from(f);
                    match (sent.joined(f), sent.check(f)) {
                        (true, Some(check)) => self.join_late(params, head + f, check, r),
                        _ => self.deliver_to(params, head + f, r),
                    }
                }
            }
            Reply::Connected(key) => {
                // Every core whose part it carried hears of the server (and sends again); one
                // that did not know of its part is not told.
                for (f, _) in sent.parts() {
                    if !sent.joined(f) {
                        self.deliver_to(params, head + f, Reply::Connected(key));
                    }
                }
            }
            r => {
                let (f, _) = sent.parts().next().expect("a statement has a part");
                self.deliver_to(params, head + f, r);
            }
        }
    }

    /// Core `p`'s part of a reply.
    pub(super) fn deliver_to(&mut self, params: &Params, p: usize, reply: Reply) {
        match reply {
            Reply::Check(result) => {
                let version = result.row.as_ref().and_then(|row| row.version);
                let pr = &mut self.procs[p];
                pr.saw_row = result.row.is_some();
                if !result.won {
                    pr.observed = pr.observed.max(version);
                }
                self.feed(params, p, Input::Checked(result.as_input()));
                let pr = &mut self.procs[p];
                pr.observed = pr.observed.max(version);
            }
            Reply::Released(released) => self.feed(params, p, Input::Released { released }),
            Reply::Connected(key) => {
                let who = self.label(p);
                log(|| {
                    format!(
                        "{who}: connected: the server is on timeline {}",
                        key.timeline
                    )
                });
                self.procs[p].known_timeline = key.timeline;
                let server = self.server_input(params, key);
                self.feed(params, p, Input::Connected(server));
            }
            Reply::NotAttempted => self.feed(params, p, Input::Failed(Failure::NotAttempted)),
            Reply::Batch(_) => unreachable!("a batch's reply is delivered part by part"),
        }
    }

    /// The driver gives up on process `s`'s statement: every core whose part it carried is
    /// told `Failed(Timeout)` (one that did not know of its part is not).
    pub(super) fn give_up(&mut self, params: &Params, s: usize) {
        let head = self.set(s).start;
        let pr = &mut self.procs[head];
        let (sent, _) = pr.inflight.take().expect("enabled with a statement");
        pr.reply = None;
        pr.reqs.iter_mut().for_each(|r| r.live = false);
        for (f, _) in sent.parts() {
            if !sent.joined(f) {
                self.feed(params, head + f, Input::Failed(Failure::Timeout));
            }
        }
    }

    /// Hands an input to the core and carries out what it says.
    pub(super) fn feed(&mut self, params: &Params, p: usize, input: Input<'_>) {
        if self.hand(params, p, input) {
            self.drain(params, p);
        }
    }

    /// Hands an input to the core; whether it took it (a process that is down has no core;
    /// a broken promise or a refused input is the world's violation).
    pub(super) fn hand(&mut self, params: &Params, p: usize, input: Input<'_>) -> bool {
        let local = self.local(params, p);
        let Some(core) = &mut self.procs[p].core else {
            return false;
        };
        let violation = match core.handle_input(local, input) {
            Ok(Ok(())) => return true,
            Err(b) => Violation::CorePromise {
                who: self.procs[p].name.clone(),
                what: b.to_string(),
            },
            Ok(Err(e)) => Violation::Contract {
                who: self.procs[p].name.clone(),
                error: e.to_string(),
            },
        };
        self.violate(violation);
        false
    }

    /// Core `p` asks for a statement: sent at once with one flag; with two, queued for its
    /// process's driver, which sends one statement at a time (`flush`, `model/batch.rs`).
    pub(super) fn send(&mut self, params: &Params, p: usize, op: Op) {
        if self.flags == 1 {
            return self.send_sent(params, p, Sent::one(0, op));
        }
        let (head, f) = (self.head(p), self.flag(p));
        if let (Some(c), Op::Check(check)) = (self.swallow, op) {
            if c == (p, check) {
                self.swallow = None;
                self.swallowed = true;
                return;
            }
        }
        self.procs[head].outbox.push((f as u8, op));
    }

    /// The driver of the process whose head is `head` sends `sent`.
    pub(super) fn send_sent(&mut self, params: &Params, head: usize, sent: Sent) {
        let local = self.local(params, head);
        let timeline = self.timeline;
        let server = self.server(params);
        let stale = sent
            .parts()
            .any(|(f, _)| self.procs[head + f].known_timeline != timeline);
        let pr = &mut self.procs[head];
        pr.inflight = Some((sent, local + params.sim.timeout));
        pr.reply = None;
        pr.reqs.iter_mut().for_each(|r| r.live = false);
        if stale {
            // The first statement on a new connection is not run: the driver tells the cores
            // what the server is, and they send again.
            pr.reply = Some(Reply::Connected(server));
            pr.reply_late = false;
            return;
        }
        pr.reqs.push(Req {
            op: sent,
            live: true,
            timeline,
            late: false,
        });
        if pr.reqs.len() > MAX_REQS {
            // A bound of the model: the oldest abandoned statement is dropped (never run).
            pr.reqs.remove(0);
            self.quiet_since = self.tick;
        }
    }

    /// Drains the core's commands and carries them out (the simulator's driver).
    pub(super) fn drain(&mut self, params: &Params, p: usize) {
        let s = params.sim.safeguards;
        loop {
            let mut commands = Vec::new();
            let Some(core) = &mut self.procs[p].core else {
                return;
            };
            loop {
                match core.poll_command() {
                    Ok(Some(c)) => commands.push(c),
                    Ok(None) => break,
                    Err(b) => {
                        let who = self.procs[p].name.clone();
                        return self.violate(Violation::CorePromise {
                            who,
                            what: b.to_string(),
                        });
                    }
                }
            }
            if commands.is_empty() {
                break;
            }
            let (mut stop_work, mut raised) = (false, None);
            for c in commands {
                let who = self.label(p);
                log(|| format!("{who} core → {}", command_text(&c)));
                match c {
                    Command::Check { .. } => {
                        let asked = Check::from_command(&c).expect("a check");
                        let sent = asked.as_sent(&s);
                        let op = Op::Check(sent);
                        if sent != asked {
                            log(|| format!("{who} driver sends {op:?} (safeguard off)"));
                        }
                        self.send(params, p, op);
                    }
                    Command::Release { version } => {
                        self.send(params, p, Op::Release { version });
                    }
                    Command::RunPrecheck => unreachable!("the model runs no precheck"),
                    Command::StopWork => stop_work = true,
                    Command::AtRisk(_) => {
                        if s.at_risk_stop {
                            self.term_work(params, p);
                        }
                    }
                    Command::Raise(lease) => {
                        let f = self.flag(p);
                        if let Err(v) = self.tokens[f].raise(&self.procs[p].name, lease.token) {
                            self.violate(v);
                        }
                        self.procs[p].lease_deadline = lease.deadline;
                        self.believe(params, p);
                        raised = Some(lease.token);
                    }
                    Command::Renewed(lease) => {
                        self.procs[p].lease_deadline = lease.deadline;
                        self.believe(params, p);
                    }
                    Command::Lower(reason) => {
                        self.procs[p].belief.lowered(reason, s.deadline_from_send);
                        self.term_work(params, p);
                    }
                    Command::Anomaly(_) => {}
                    Command::Closed => {
                        // The tool exits: a command still running is killed with it.
                        if self.procs[p].work.is_some() {
                            self.procs[p].work = Some(Work::Dying);
                        }
                        self.exit(p);
                        return;
                    }
                }
            }
            if raised.is_some() && self.procs[p].work.is_none() {
                self.procs[p].work = Some(Work::Running);
                self.procs[p].work_token = raised;
            }
            if stop_work {
                self.term_work(params, p);
                if self.procs[p].work.is_none() || !s.release_after_work {
                    self.tell_work_stopped(params, p, false);
                }
            }
        }
    }

    pub(super) fn believe(&mut self, params: &Params, p: usize) {
        let local = self.local(params, p);
        self.procs[p].belief.raised(local, &params.core_config);
    }
}

/// A row, briefly.
pub fn row_text(row: Option<&crate::table::RefRow>) -> String {
    match row {
        None => "none".to_string(),
        Some(r) => format!(
            "{} v{} ts {}",
            r.holder.as_deref().unwrap_or("NULL"),
            r.version.map_or("NULL".to_string(), |v| v.to_string()),
            r.timestamp.map_or("NULL".to_string(), |t| {
                let us = t.as_unix_micros();
                if us == 0 {
                    "1970 (released)".to_string()
                } else {
                    format!("{:.3}s", (us - 1_700_000_000_000_000) as f64 / 1e6)
                }
            })
        ),
    }
}

fn command_text(c: &Command) -> String {
    match c {
        Command::Raise(l) => format!(
            "RAISE token {} ({:?}), deadline {}",
            l.token, l.won_by, l.deadline
        ),
        Command::Renewed(l) => format!("Renewed v{}, deadline {}", l.version, l.deadline),
        Command::AtRisk(l) => format!("AtRisk (deadline {})", l.deadline),
        other => format!("{other:?}"),
    }
}
