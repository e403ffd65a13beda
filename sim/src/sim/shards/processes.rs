//! A process of the fleet: its cores start, their commands go out as statements, and a raise
//! is checked against every other process's belief.

use leadership_core::balance::{self};
use leadership_core::{Command, Flag};

use super::super::clock::LocalClock;
use super::world::*;
use super::*;
use crate::check::Check;

impl World {
    pub(super) fn start(&mut self, p: usize) {
        let t = self.t;
        let name = self.procs[p].name.clone();
        let inc = self.procs[p].incarnation + 1;
        let clock = LocalClock::new(t, self.rng.between(1, 1 << 40), self.rng.signed(100));
        let now = clock.local(t);
        let mut cores = vec![Flag::new(
            self.config(&balance::member_name(GROUP, &name), &name),
            self.rng.next_u64(),
            now,
        )];
        for s in 0..self.cfg.shards {
            cores.push(Flag::new_unwanted(
                self.config(&balance::shard_name(GROUP, s), &name),
                self.rng.next_u64(),
                now,
            ));
        }
        let proc = &mut self.procs[p];
        proc.life = Life::Up;
        proc.incarnation = inc;
        proc.clock = clock;
        proc.paused_until = 0;
        proc.failing_until = 0;
        proc.pending = vec![None; cores.len()];
        proc.cores = cores;
        self.drain(p, 0);
        let first = self.rng.between(0, self.lease_ns / 10);
        self.push(t + first, Ev::ScanDue { p, inc });
    }

    /// Carries out the commands of one slot, then re-arms its timer.
    pub(super) fn drain(&mut self, p: usize, slot: usize) {
        let t = self.t;
        let inc = self.procs[p].incarnation;
        while let Some(command) = self.procs[p].cores[slot].poll_command() {
            match command {
                Command::Check { .. } => {
                    // One server, never failed over: the check expects none.
                    let check = Check::from_command(&command).expect("a check");
                    self.send(
                        p,
                        slot,
                        Stmt::Check(Check {
                            expect: None,
                            ..check
                        }),
                    )
                }
                Command::Release { version } => self.send(p, slot, Stmt::Release { version }),
                Command::Raise(_) | Command::Renewed(_) => {
                    if matches!(command, Command::Raise(_)) && slot > 0 {
                        // A handover: another process led the shard last.
                        let last = self.last_raiser[slot - 1].replace(p);
                        if last.is_some_and(|q| q != p) {
                            self.terms += 1;
                        }
                    }
                    self.check_overlap(p, slot);
                }
                Command::StopWork => {
                    let d = self.rng.between(0, 20 * MS);
                    self.push(t + d, Ev::WorkStopped { p, inc, slot });
                }
                Command::RunPrecheck => {
                    unreachable!("no precheck in the sharded simulation")
                }
                Command::Closed => {}
                Command::AtRisk(_) | Command::Lower(_) | Command::Anomaly(_) => {}
            }
        }
        self.arm(p, slot);
        if self.procs[p].life == Life::Leaving && self.procs[p].cores.iter().all(Flag::is_closed) {
            self.procs[p].life = Life::Down;
        }
    }

    pub(super) fn arm(&mut self, p: usize, slot: usize) {
        let proc = &self.procs[p];
        if let Some(at) = proc.cores[slot].poll_timeout() {
            let t = proc.clock.true_at(at, self.t);
            let inc = proc.incarnation;
            self.push(t, Ev::Wake { p, inc, slot });
        }
    }

    pub(super) fn send(&mut self, p: usize, slot: usize, stmt: Stmt) {
        let t = self.t;
        self.next_id += 1;
        let id = self.next_id;
        let inc = self.procs[p].incarnation;
        if slot != usize::MAX {
            self.procs[p].pending[slot] = Some(id);
        }
        let timeout = self.cfg.timeout.as_nanos() as u64;
        if slot != usize::MAX {
            self.push(t + timeout, Ev::Timeout { p, inc, slot, id });
        }
        if t < self.procs[p].failing_until || (t < self.loss_until && self.rng.chance_ppm(300_000))
        {
            return; // lost, or failing: the timeout answers
        }
        let arrive = (t + self.latency()).max(self.stall_until);
        self.push(
            arrive,
            Ev::Arrive {
                p,
                inc,
                slot,
                id,
                stmt,
            },
        );
    }

    pub(super) fn check_overlap(&mut self, p: usize, slot: usize) {
        if slot == 0 {
            return; // each process's member flag is a row of its own
        }
        let t = self.t;
        let leaders: Vec<usize> = (0..self.procs.len())
            .filter(|&q| {
                let proc = &self.procs[q];
                proc.life != Life::Down
                    && proc
                        .cores
                        .get(slot)
                        .is_some_and(|c| c.is_leader(proc.local(t)))
            })
            .collect();
        self.report.compared += self.procs.len() as u64;
        if leaders.len() > 1 {
            self.fail(Violation::TwoShardLeaders {
                shard: slot - 1,
                at: t,
                leaders: leaders
                    .iter()
                    .map(|&q| self.procs[q].name.clone())
                    .collect(),
                raised_by: self.procs[p].name.clone(),
            });
        }
    }
}
