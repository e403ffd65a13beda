//! The events: timers, statements at the database, replies, timeouts, notifications, scans.

use leadership_core::balance::{self, Entry, View};
use leadership_core::{Failure, Input};

use super::super::clock::db_time;
use super::world::*;
use super::*;
use crate::table::DEFAULT_SERVER;

impl World {
    pub(super) fn alive(&self, p: usize, inc: u64) -> bool {
        let proc = &self.procs[p];
        proc.incarnation == inc && proc.life != Life::Down
    }

    pub(super) fn handle(&mut self, ev: Ev) {
        let t = self.t;
        // A paused process handles nothing until it resumes.
        let owner = match &ev {
            Ev::Wake { p, .. }
            | Ev::Reply { p, .. }
            | Ev::Timeout { p, .. }
            | Ev::Notify { p, .. }
            | Ev::WorkStopped { p, .. }
            | Ev::ScanDue { p, .. } => Some(*p),
            _ => None,
        };
        if let Some(p) = owner {
            if self.procs[p].paused_until > t {
                let until = self.procs[p].paused_until;
                return self.push(until, ev);
            }
        }
        match ev {
            Ev::Wake { p, inc, slot } => {
                if !self.alive(p, inc) {
                    return;
                }
                let now = self.procs[p].local(t);
                let core = &mut self.procs[p].cores[slot];
                match core.poll_timeout() {
                    Some(at) if at <= now => {
                        core.handle_timeout(now);
                        self.drain(p, slot);
                    }
                    // Early (the clock's rate changed) or stale: re-arm.
                    Some(_) => self.arm(p, slot),
                    None => {}
                }
            }
            Ev::Arrive {
                p,
                inc,
                slot,
                id,
                stmt,
            } => self.arrive(p, inc, slot, id, stmt),
            Ev::Reply {
                p,
                inc,
                slot,
                id,
                reply,
            } => {
                if !self.alive(p, inc) {
                    return;
                }
                if let Reply::Scan(rows) = reply {
                    return self.apply_scan(p, &rows);
                }
                if self.procs[p].pending[slot] != Some(id) {
                    return; // answered by its timeout already
                }
                self.procs[p].pending[slot] = None;
                let now = self.procs[p].local(t);
                let core = &mut self.procs[p].cores[slot];
                let result = match &reply {
                    Reply::Checked(r) => core.handle_input(now, Input::Checked(r.as_input())),
                    Reply::Released(released) => core.handle_input(
                        now,
                        Input::Released {
                            released: *released,
                        },
                    ),
                    Reply::Scan(_) => unreachable!(),
                };
                result.expect("the simulated driver keeps the core's contract");
                self.drain(p, slot);
            }
            Ev::Timeout { p, inc, slot, id } => {
                if !self.alive(p, inc) || self.procs[p].pending[slot] != Some(id) {
                    return;
                }
                self.procs[p].pending[slot] = None;
                let now = self.procs[p].local(t);
                self.procs[p].cores[slot]
                    .handle_input(now, Input::Failed(Failure::Timeout))
                    .expect("contract");
                self.drain(p, slot);
            }
            Ev::Notify { p, inc, slot } => {
                if !self.alive(p, inc) {
                    return;
                }
                let now = self.procs[p].local(t);
                self.procs[p].cores[slot]
                    .handle_input(now, Input::Notified)
                    .expect("contract");
                self.drain(p, slot);
            }
            Ev::WorkStopped { p, inc, slot } => {
                if !self.alive(p, inc) {
                    return;
                }
                let now = self.procs[p].local(t);
                self.procs[p].cores[slot]
                    .handle_input(now, Input::WorkStopped)
                    .expect("contract");
                self.drain(p, slot);
            }
            Ev::ScanDue { p, inc } => {
                if !self.alive(p, inc) || self.procs[p].life != Life::Up {
                    return;
                }
                let period = self.lease_ns / 2;
                let next = period - period / 10 + self.rng.between(0, period / 5);
                self.push(t + next, Ev::ScanDue { p, inc });
                // Until its own heartbeat leads, a process decides nothing.
                let now = self.procs[p].local(t);
                if self.procs[p].cores[0].is_leader(now) {
                    self.send(p, usize::MAX, Stmt::Scan);
                }
            }
            Ev::Episode => self.episode(),
            Ev::Sample => {
                self.sample();
                self.push(t + 50 * MS, Ev::Sample);
            }
        }
    }

    pub(super) fn arrive(&mut self, p: usize, inc: u64, slot: usize, id: u64, stmt: Stmt) {
        let t = self.t;
        let now = db_time(t);
        let lease_us = (self.lease_ns / 1_000) as i64;
        let name = self.procs[p].name.clone();
        let reply = match stmt {
            Stmt::Check(check) => {
                self.report.checks += 1;
                let flag = self.slot_name(&name, slot);
                let args = check.args(&flag, &name, lease_us);
                Reply::Checked(self.table.check_on(now, &DEFAULT_SERVER, &args))
            }
            Stmt::Release { version } => {
                let flag = self.slot_name(&name, slot);
                let released = self.table.release(&flag, &name, version);
                if released {
                    self.report.releases += 1;
                    // NOTIFY: every other running process's flag of that name.
                    for q in 0..self.procs.len() {
                        if q != p && self.procs[q].life != Life::Down {
                            let d = self.latency();
                            let inc = self.procs[q].incarnation;
                            self.push(t + d, Ev::Notify { p: q, inc, slot });
                        }
                    }
                }
                Reply::Released(released)
            }
            Stmt::Scan => {
                self.report.scans += 1;
                let prefix = balance::group_prefix(GROUP);
                let cutoff = now.as_unix_micros().saturating_sub(lease_us);
                Reply::Scan(
                    self.table
                        .rows()
                        .filter(|(n, _)| n.starts_with(&prefix))
                        .map(|(n, r)| {
                            let live = r.timestamp.is_some_and(|ts| ts.as_unix_micros() >= cutoff);
                            (n.to_string(), r.holder.clone().unwrap_or_default(), live)
                        })
                        .collect(),
                )
            }
        };
        if t < self.loss_until && self.rng.chance_ppm(300_000) {
            return; // the reply is lost
        }
        let back = t + self.latency();
        self.push(
            back,
            Ev::Reply {
                p,
                inc,
                slot,
                id,
                reply,
            },
        );
    }

    pub(super) fn slot_name(&self, process: &str, slot: usize) -> String {
        if slot == 0 {
            balance::member_name(GROUP, process)
        } else {
            balance::shard_name(GROUP, slot - 1)
        }
    }

    /// The balancer: what `Balanced` does with a scan.
    pub(super) fn apply_scan(&mut self, p: usize, rows: &[(String, String, bool)]) {
        let t = self.t;
        if self.procs[p].life != Life::Up {
            return;
        }
        let me = self.procs[p].name.clone();
        let mut members = vec![me.as_str()];
        let mut held = Vec::new();
        for (name, holder, live) in rows {
            if !live {
                continue;
            }
            match balance::parse(GROUP, name) {
                Some(Entry::Member(process)) if process == holder => members.push(process),
                Some(Entry::Shard(s)) if s < self.cfg.shards => held.push((s, holder.as_str())),
                _ => {}
            }
        }
        let view = View::new(self.cfg.shards, members, held);
        let wanted = balance::wanted(&view, &me);
        let now = self.procs[p].local(t);
        for (s, want) in wanted.into_iter().enumerate() {
            let core = &mut self.procs[p].cores[s + 1];
            if core.is_wanted() != want {
                core.handle_input(now, Input::Wanted(want))
                    .expect("contract");
                self.drain(p, s + 1);
            }
        }
    }
}
