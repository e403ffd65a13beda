//! Fault injection: each fault kind arrives on its schedule, picks a victim (the leader half the
//! time), and declares how long it stays active (the liveness check waits for quiet).

use std::time::Duration;

use leadership_core::Input;

use super::sets::Held;
use super::trace::{Pid, What, DB};
use super::world::{Ev, FaultKind, World};
use super::Schedule;

impl World {
    pub(super) fn quiet_until(&mut self, t: u64) {
        self.quiet_since = self.quiet_since.max(t);
    }

    pub(super) fn duration(&mut self, s: Schedule) -> u64 {
        self.rng
            .between(s.min.as_nanos() as u64, s.max.as_nanos() as u64)
    }

    /// A victim among the processes that are up: the current leader half the time (the
    /// interesting case), else any.
    pub(super) fn victim(&mut self, rust_only: bool) -> Option<Pid> {
        let t = self.t;
        if self.rng.below(2) == 0 {
            let leader = self
                .rust
                .iter()
                .position(|r| r.leads && r.host.up)
                .or_else(|| {
                    if rust_only {
                        None
                    } else {
                        self.go
                            .iter()
                            .position(|g| g.raised && g.host.up)
                            .map(|i| i + self.rust.len())
                    }
                });
            if let Some(l) = leader {
                return Some(l as Pid);
            }
        }
        let n = if rust_only {
            self.rust.len()
        } else {
            self.rust.len() + self.go.len()
        };
        let start = self.rng.below(n as u64) as usize;
        (0..n).map(|k| ((start + k) % n) as Pid).find(|&p| {
            let h = self.host(p);
            h.up && !h.paused(t)
        })
    }

    pub(super) fn fault(&mut self, kind: FaultKind) {
        let t = self.t;
        let f = self.faults;
        let schedule = match kind {
            FaultKind::Pause => f.pause,
            FaultKind::Crash => f.crash,
            FaultKind::Stall => f.stall,
            FaultKind::Conn => f.conn,
            FaultKind::Loss => f.loss,
            FaultKind::Slow => f.slow,
            FaultKind::Close => f.close,
            FaultKind::Step => Some(Schedule {
                every: f.drift.step_every,
                min: Duration::ZERO,
                max: f.drift.step_max,
            }),
            FaultKind::Precheck => None,
            FaultKind::DbStep => f.db_step,
            FaultKind::Failover => f.failover,
            FaultKind::Delete => f.delete,
            FaultKind::RowLock => f.rowlock,
        };
        let Some(s) = schedule else { return };
        let d = self.duration(s);
        let counter = kind as usize;
        match kind {
            FaultKind::Pause => {
                if let Some(v) = self.victim(false) {
                    self.stats.faults[counter] += 1;
                    // The whole process: every flag's core with it.
                    for p in self.siblings(v) {
                        let p = p as Pid;
                        let h = self.host(p);
                        h.paused_until = h.paused_until.max(t + d);
                        self.trace.push(t, p, What::Pause(t + d));
                    }
                    self.quiet_until(t + d);
                }
            }
            FaultKind::Crash => {
                if let Some(v) = self.victim(false) {
                    self.stats.faults[counter] += 1;
                    for p in self.siblings(v) {
                        let p = p as Pid;
                        self.host(p).die();
                        if self.is_rust(p) {
                            let r = &mut self.rust[usize::from(p)];
                            r.flag = None;
                            r.belief.end();
                            r.work = None; // the parent-death signal kills the work with it
                            r.joined = None;
                        } else {
                            self.go_mut(p).raised = false;
                            self.trace_go(p, false);
                        }
                        self.trace.push(t, p, What::Crash(t + d));
                        self.push(t + d, Ev::Start(p));
                    }
                    if let Some(set) = self.sets.get_mut(usize::from(v) / self.flags) {
                        set.outbox.clear();
                    }
                    self.quiet_until(t + d);
                }
            }
            FaultKind::Stall => {
                if t >= self.stall_until {
                    self.stats.faults[counter] += 1;
                    self.stall_until = t + d;
                    self.stall_fails = self.rng.below(2) == 0;
                    self.trace.push(t, DB, What::Stall(t + d, self.stall_fails));
                    self.push(t + d, Ev::StallEnd);
                    self.quiet_until(t + d);
                }
            }
            FaultKind::Conn => {
                if let Some(v) = self.victim(false) {
                    self.stats.faults[counter] += 1;
                    for p in self.siblings(v) {
                        let p = p as Pid;
                        let h = self.host(p);
                        h.conn_down_until = h.conn_down_until.max(t + d);
                        self.trace.push(t, p, What::ConnDown(t + d));
                    }
                    self.quiet_until(t + d);
                }
            }
            FaultKind::Loss => {
                self.stats.faults[counter] += 1;
                self.loss_until = self.loss_until.max(t + d);
                self.trace
                    .push(t, DB, What::Loss(t + d, self.faults.loss_ppm));
                self.quiet_until(t + d);
            }
            FaultKind::Slow => {
                self.stats.faults[counter] += 1;
                self.slow_until = self.slow_until.max(t + d);
                let max = self.faults.slow_max.as_nanos() as u64;
                self.trace.push(t, DB, What::Slow(t + d, max));
                // Replies sent just before the end may still be slow.
                self.quiet_until(t + d + max);
            }
            FaultKind::Close => {
                if let Some(v) = self.victim(true) {
                    self.stats.faults[counter] += 1;
                    self.quiet_until(t + self.config.timeout.as_nanos() as u64);
                    // Every flag closes; the process exits when the last has.
                    for p in self.siblings(v) {
                        let p = p as Pid;
                        if self.rust[usize::from(p)].host.up {
                            self.trace.push(t, p, What::Close);
                            self.feed(p, Input::Close);
                        }
                    }
                }
            }
            FaultKind::Precheck => {}
            FaultKind::DbStep => {
                let mut d = d;
                if let Some(budget) = self.db_step_budget {
                    let window = self.interval_ns;
                    self.db_steps.retain(|(at, _)| at + window > t);
                    let used: u64 = self.db_steps.iter().map(|(_, d)| d).sum();
                    d = d.min(budget.saturating_sub(used));
                }
                if d > 0 {
                    self.stats.faults[counter] += 1;
                    self.db_offset += d;
                    self.db_steps.push((t, d));
                    self.trace.push(t, DB, What::DbStep(d));
                }
            }
            FaultKind::Failover => {
                self.stats.faults[counter] += 1;
                self.stats.failovers += 1;
                // The standby is `d` behind: it has the table as it was then (or as first
                // snapshotted), and nothing after.
                let since = t.saturating_sub(d);
                let standby = self
                    .snapshots
                    .iter()
                    .rev()
                    .find(|(at, _)| *at <= since)
                    .or(self.snapshots.front())
                    .map(|(_, table)| table.clone());
                if let Some(standby) = standby {
                    self.history_lost |= standby != self.table;
                    self.table = standby;
                }
                self.snapshots.clear();
                self.timeline += 1;
                self.db_started = t;
                // Another machine's clock, up to a millisecond ahead.
                self.db_offset += self.rng.below(1_000_000);
                // The old primary is gone with what it held (the locks of other transactions
                // and what waited for them too); every connection breaks.
                for h in std::mem::take(&mut self.stalled) {
                    if let Held::Batch(slot) = h {
                        self.batches[slot as usize].members.clear();
                        self.free_batches.push(slot);
                    }
                }
                self.stall_until = 0;
                for row in &mut self.rows {
                    row.locked_until = 0;
                    row.waiting.clear();
                }
                self.trace.push(t, DB, What::Failover(d));
                if self.config.pooler {
                    // The pooler keeps every open client connection and swaps the server
                    // under it: nobody reconnects, so nobody is told. (A process without an open
                    // connection, down, never connected or with its link broken, reads the
                    // server as its driver connects.)
                    for r in &mut self.rust {
                        let open =
                            r.host.up && r.host.known_timeline != 0 && t >= r.host.conn_down_until;
                        if open {
                            r.host.known_timeline = self.timeline;
                        }
                    }
                }
                // A lease (any lease of the old primary ends) and the fence that follows.
                self.quiet_until(t + 2 * self.interval_ns);
            }
            FaultKind::Delete => {
                // Go peers insert a missing row at once, live lease or not: not modelled.
                // A process whose latest check showed no row (it just started, or found the
                // row missing before) cannot tell a deleted row from a new table: the fault
                // waits until every running process's latest check showed the row.
                // Every flag's row goes; a row another transaction holds locked would make the
                // DELETE wait: not then.
                let all_saw = self
                    .rust
                    .iter()
                    .all(|r| !r.host.up || r.flag.is_none() || r.saw_row);
                let any_row = self.rows.iter().any(|r| self.table.get(&r.name).is_some());
                let locked = self.rows.iter().any(|r| t < r.locked_until);
                if self.go.is_empty() && any_row && all_saw && !locked {
                    self.stats.faults[counter] += 1;
                    for f in 0..self.rows.len() {
                        let name = self.rows[f].name.clone();
                        self.table.delete(&name);
                    }
                    // Versions start again at the floor of those who saw the row, and at 0 for
                    // those who did not: tokens below older ones are residue, as after a failover.
                    self.history_lost = true;
                    self.trace.push(t, DB, What::Delete);
                    // A process that starts before the deleted lease has ended cannot tell the
                    // missing row from a new table: none does (restarts wait), see the docs.
                    let lease_over = t + self.interval_ns + self.interval_ns / 10;
                    self.no_start_before = self.no_start_before.max(lease_over);
                    self.quiet_until(lease_over + self.interval_ns);
                }
            }
            FaultKind::Step => {
                if let Some(v) = self.victim(false) {
                    self.stats.faults[counter] += 1;
                    for p in self.siblings(v) {
                        let p = p as Pid;
                        self.host(p).clock.step(t, d);
                        self.trace.push(t, p, What::Step(d));
                        self.rearm_after_clock_change(p);
                    }
                }
            }
            FaultKind::RowLock => self.lock_row(d),
        }
        self.schedule_fault(kind, s.every);
    }
}
