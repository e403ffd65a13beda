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

use leadership_core::{Command, Input};

use super::events::log;
use super::world::{Reply, Req, Work, World, FLAG, MAX_REQS};
use super::Params;
use crate::check::{self, Check};
use crate::sim::trace::Op;
use crate::violation::{NewerTerm, Violation};

impl World {
    pub(super) fn execute(&mut self, params: &Params, p: usize, k: usize) {
        let req = self.procs[p].reqs.remove(k);
        let now = self.db_now(params);
        let name = self.procs[p].name.clone();
        let reply = match req.op {
            Op::Check(check) => {
                let before = self.row.clone();
                let mut table = self.table(params);
                let args = check.args(FLAG, &name, params.lease_micros);
                let server = self.server_input(params, self.server(params));
                let r = check::run(&mut table, now, server, &args, &params.sim.safeguards);
                log(|| {
                    format!(
                        "db: r{p}'s check {} → row {}",
                        if r.won { "WINS" } else { "does not win" },
                        row_text(r.row.as_ref())
                    )
                });
                if let (true, Some(b)) = (r.won, &before) {
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
                    self.remember(params, before.clone());
                    self.row = table.get(FLAG).cloned();
                    let term = self.row.as_ref().and_then(|row| row.term);
                    self.newest_term = self.newest_term.max(term);
                }
                Reply::Check(r)
            }
            Op::Release { version } => {
                let mut table = self.table(params);
                let released = table.release(FLAG, &name, version);
                if released {
                    let before = std::mem::replace(&mut self.row, table.get(FLAG).cloned());
                    self.remember(params, before);
                }
                log(|| format!("db: r{p}'s release of v{version}: released = {released}"));
                if released {
                    for (q, other) in self.procs.iter_mut().enumerate() {
                        if q != p && other.core.is_some() {
                            other.notify = true;
                            other.notify_late = false;
                        }
                    }
                }
                Reply::Released(released)
            }
            other => unreachable!("the model sends no {other:?}"),
        };
        if req.live && self.procs[p].core.is_some() {
            self.procs[p].reply = Some(reply);
            self.procs[p].reply_late = false;
        }
    }

    /// The work's transaction `k` arrives: on the current timeline it runs the fence (unless
    /// unfenced), writes and commits at once. The fence's row lock makes that one instant in
    /// the model: no check commits between the fence and the commit.
    pub(super) fn land(&mut self, params: &Params, k: usize) {
        let e = self.effects.remove(k);
        let who = self.procs[usize::from(e.p)].name.clone();
        if e.timeline != self.timeline {
            return log(|| format!("db: {who}'s transaction was sent to a lost primary: gone"));
        }
        if e.fenced {
            let held = self.table(params).fence(
                self.db_now(params),
                FLAG,
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
        if let Some(newer) = self.newest_term.filter(|&n| n > e.token) {
            if !self.history_lost {
                self.violate(Violation::LateEffect {
                    who,
                    token: e.token,
                    after: NewerTerm::Token(newer),
                });
            }
        }
    }

    pub(super) fn deliver(&mut self, params: &Params, p: usize) {
        let reply = self.procs[p].reply.take().expect("enabled with a reply");
        self.procs[p].inflight = None;
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
                log(|| {
                    format!(
                        "r{p}: connected: the server is on timeline {}",
                        key.timeline
                    )
                });
                self.procs[p].known_timeline = key.timeline;
                let server = self.server_input(params, key);
                self.feed(params, p, Input::Connected(server));
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

    pub(super) fn send(&mut self, params: &Params, p: usize, op: Op) {
        let local = self.local(params, p);
        let timeline = self.timeline;
        let server = self.server(params);
        let pr = &mut self.procs[p];
        pr.inflight = Some((op, local + params.sim.timeout));
        pr.reply = None;
        pr.reqs.iter_mut().for_each(|r| r.live = false);
        if pr.known_timeline != timeline {
            // The first statement on a new connection is not run: the driver tells the core
            // what the server is, and the core sends it again.
            pr.reply = Some(Reply::Connected(server));
            pr.reply_late = false;
            return;
        }
        pr.reqs.push(Req {
            op,
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
                log(|| format!("r{p} core → {}", command_text(&c)));
                match c {
                    Command::Check { .. } => {
                        let asked = Check::from_command(&c).expect("a check");
                        let sent = asked.as_sent(&s);
                        let op = Op::Check(sent);
                        if sent != asked {
                            log(|| format!("r{p} driver sends {op:?} (safeguard off)"));
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
                        if let Err(v) = self.tokens.raise(&self.procs[p].name, lease.token) {
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
