//! The episodes (joins, leaves, faults), the balance judged after each quiet stretch, and the
//! figures.

use std::time::Duration;

use leadership_core::Input;

use super::super::clock::LocalClock;
use super::world::*;
use super::*;

impl World {
    pub(super) fn leaders(&self) -> Vec<Option<usize>> {
        let t = self.t;
        (0..self.cfg.shards)
            .map(|s| {
                (0..self.procs.len()).find(|&q| {
                    let proc = &self.procs[q];
                    proc.life == Life::Up && proc.cores[s + 1].is_leader(proc.local(t))
                })
            })
            .collect()
    }

    pub(super) fn is_balanced(&self) -> bool {
        let up = self.up();
        if up.is_empty() {
            return false;
        }
        let n = self.cfg.shards;
        let (floor, ceil) = (n / up.len(), n.div_ceil(up.len()));
        let leaders = self.leaders();
        if leaders.iter().any(Option::is_none) {
            return false;
        }
        up.iter().all(|&q| {
            let c = leaders.iter().filter(|l| **l == Some(q)).count();
            (floor..=ceil).contains(&c)
        })
    }

    /// Notes when the fleet last became balanced: the episode's time to balance is the last
    /// such instant (a fault may first unbalance a balanced fleet).
    pub(super) fn sample(&mut self) {
        if self.current.is_none() {
            return;
        }
        if !self.is_balanced() {
            self.balanced_at = None;
        } else if self.balanced_at.is_none() {
            self.balanced_at = Some(self.t);
        }
    }

    pub(super) fn finish_episode(&mut self) {
        let Some((kind, start, before)) = self.current.take() else {
            return;
        };
        let processes = self.up().len();
        let to_balance = self
            .balanced_at
            .map(|at| Duration::from_nanos(at.saturating_sub(start)));
        if kind == Kind::Blip && self.terms > 0 && self.report.failure.is_none() {
            self.fail(Violation::BlipMovedShards {
                at: start,
                moved: self.terms,
            });
        }
        self.report.timeline.push(format!(
            "{:>9.3} s  {:<8} M={:>2}->{:<2} balanced {:<10} handovers {:>3} (N/M {:.1})",
            start as f64 / 1e9,
            kind.name(),
            before,
            processes,
            to_balance.map_or("never".to_string(), |d| format!(
                "+{:.2} s",
                d.as_secs_f64()
            )),
            self.terms,
            self.cfg.shards as f64 / processes.max(before).max(1) as f64
        ));
        self.report.episodes.push(Episode {
            kind,
            before,
            processes,
            to_balance,
            handovers: self.terms,
        });
    }

    pub(super) fn episode(&mut self) {
        let t = self.t;
        // The quiet stretch of the previous episode has ended: the fleet must be balanced.
        if self.current.is_some() {
            if !self.is_balanced() && self.report.failure.is_none() {
                let counts: Vec<(String, usize)> = self
                    .up()
                    .iter()
                    .map(|&q| {
                        let c = self.leaders().iter().filter(|l| **l == Some(q)).count();
                        (self.procs[q].name.clone(), c)
                    })
                    .collect();
                self.fail(Violation::Unbalanced {
                    quiet_leases: self.cfg.quiet_leases,
                    after: self.current.as_ref().map_or("?", |c| c.0.name()),
                    at: t,
                    counts,
                });
            }
            self.finish_episode();
        }
        let kind = self.draw();
        self.current = Some((kind, t, self.up().len()));
        self.balanced_at = None;
        self.terms = 0;
        let lease = self.lease_ns;
        let up = self.up();
        let pick = |w: &mut World, from: &[usize]| from[w.rng.below(from.len() as u64) as usize];
        match kind {
            Kind::Join if self.procs.len() >= self.cfg.max_processes => {
                // Every name is used: one that left comes back.
                let left: Vec<usize> = (0..self.procs.len())
                    .filter(|&q| self.procs[q].life == Life::Down)
                    .collect();
                let p = pick(self, &left);
                self.start(p);
            }
            Kind::Join => {
                let p = self.procs.len();
                self.procs.push(Proc {
                    name: format!("p{p:02}"),
                    life: Life::Down,
                    paused_until: 0,
                    failing_until: 0,
                    clock: LocalClock::new(0, 0, 0),
                    incarnation: 0,
                    cores: Vec::new(),
                    pending: Vec::new(),
                });
                self.start(p);
            }
            Kind::Restart => {
                let down: Vec<usize> = (0..self.procs.len())
                    .filter(|&q| self.procs[q].life == Life::Down)
                    .collect();
                let p = pick(self, &down);
                self.start(p);
            }
            Kind::Leave => {
                let p = pick(self, &up);
                self.procs[p].life = Life::Leaving;
                let now = self.procs[p].local(t);
                for slot in 0..self.procs[p].cores.len() {
                    self.procs[p].cores[slot]
                        .handle_input(now, Input::Close)
                        .expect("contract");
                    self.drain(p, slot);
                }
            }
            Kind::Crash => {
                let p = pick(self, &up);
                self.procs[p].life = Life::Down;
            }
            Kind::Pause => {
                let p = pick(self, &up);
                self.procs[p].paused_until = t + self.rng.between(lease / 5, lease * 3 / 2);
            }
            Kind::Blip => {
                let p = pick(self, &up);
                self.procs[p].failing_until = t + self.rng.between(lease / 20, lease / 4);
            }
            Kind::Loss => self.loss_until = t + self.rng.between(lease / 10, lease),
            Kind::Stall => self.stall_until = t + self.rng.between(lease / 10, lease * 3 / 2),
            Kind::Drift => {
                let p = pick(self, &up);
                let ppm = self.rng.signed(40_000);
                self.procs[p].clock.set_rate(t, ppm);
                for slot in 0..self.procs[p].cores.len() {
                    self.arm(p, slot);
                }
            }
        }
        // The episode's own length (a pause or a stall ends within 1.5 leases), then quiet.
        let next = t + lease * 3 / 2 + lease * u64::from(self.cfg.quiet_leases);
        self.push(next, Ev::Episode);
    }

    /// The next episode: the first processes join one by one; then a kind drawn from the
    /// enabled ones that makes sense now.
    pub(super) fn draw(&mut self) -> Kind {
        let up = self.up().len();
        let down = self.procs.iter().filter(|p| p.life == Life::Down).count();
        if self.procs.len() < self.cfg.processes {
            return Kind::Join;
        }
        let mut kinds: Vec<Kind> = if self.cfg.faults.kinds.is_empty() {
            vec![Kind::Join, Kind::Leave]
        } else {
            self.cfg.faults.kinds.clone()
        };
        // The fleet stays between half the starting size and the maximum.
        let floor = (self.cfg.processes / 2).max(1);
        kinds.retain(|k| match k {
            Kind::Join => {
                up < self.cfg.max_processes
                    && (self.procs.len() < self.cfg.max_processes || down > 0)
            }
            Kind::Restart => down > 0,
            Kind::Leave | Kind::Crash => up > floor,
            _ => up > 0,
        });
        if up == 0 || kinds.is_empty() {
            // Nobody is left (or nothing fits): bring one back.
            return if down > 0 { Kind::Restart } else { Kind::Join };
        }
        kinds[self.rng.below(kinds.len() as u64) as usize]
    }
}
