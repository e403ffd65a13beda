//! The modelled drivers: a Rust process's loop (feed the core, carry out its commands, arm its
//! timer) and the Go model's timer.

use leadership_core::{Command, Failure as CoreFailure, Input, WonBy};

use super::clock::db_time;
use super::go_model::GoNext;
use super::invariants::Violation;
use super::process::{Core, Reply, Work};
use super::trace::{Op, Pid, What};
use super::world::{Ev, World};

/// How often the leader-only work takes long to stop (up to 1.5 leases), in ppm.
const WORK_LONG_PPM: u64 = 200_000;
/// The longest a quick stop takes (ns).
const WORK_SHORT_MAX: u64 = 50_000_000;

impl World {
    pub(super) fn start(&mut self, p: Pid) {
        let t = self.t;
        self.host(p).up = true;
        self.trace.push(t, p, What::Start);
        if self.is_rust(p) {
            let i = usize::from(p);
            let seed = self.rng.next_u64();
            let local = self.rust[i].host.clock.local(t);
            let proc_ = &mut self.rust[i];
            proc_.flag = Some(Core::new(
                self.core_configs[i].clone(),
                seed,
                local,
                self.config.audit,
            ));
            proc_.believed = false;
            self.drain(p);
        } else {
            let g = self.go_mut(p);
            g.start();
            let next = g.on_timer();
            self.go_act(p, next);
        }
    }

    /// Hands an input to a Rust core and carries out what it says.
    pub(super) fn feed(&mut self, p: Pid, input: Input<'_>) {
        let i = usize::from(p);
        let local = self.rust[i].host.clock.local(self.t);
        let Some(flag) = &mut self.rust[i].flag else {
            return;
        };
        if let Err(e) = flag.handle_input(local, input) {
            self.violation = Some(Violation::Contract {
                who: self.rust[i].host.name.clone(),
                error: e.to_string(),
            });
            return;
        }
        self.drain(p);
    }

    pub(super) fn deliver(&mut self, p: Pid, reply: Reply) {
        if !self.is_rust(p) {
            let (interval, jitter) = (self.config.interval, self.config.jitter);
            let next = self.go_mut(p).on_reply(reply, interval, jitter);
            return self.go_act(p, next);
        }
        match reply {
            Reply::Check(result) => self.feed(p, Input::Checked(result.as_input())),
            Reply::Released(released) => self.feed(p, Input::Released { released }),
            Reply::Error => self.feed(p, Input::Failed(CoreFailure::Error)),
            other => unreachable!("a Rust process got {other:?}"),
        }
    }

    /// Drains a Rust core's commands, carries them out, and re-arms its timer.
    pub(super) fn drain(&mut self, p: Pid) {
        let t = self.t;
        let i = usize::from(p);
        let mut commands = std::mem::take(&mut self.commands);
        loop {
            commands.clear();
            let Some(flag) = &mut self.rust[i].flag else {
                break;
            };
            while let Some(c) = flag.poll_command() {
                commands.push(c);
            }
            if commands.is_empty() {
                break;
            }
            let mut precheck = false;
            let mut stop_work = false;
            for c in &commands {
                match *c {
                    Command::Check { renew } => {
                        self.stats.checks += 1;
                        self.send(p, Op::Check { renew }, db_time(0));
                    }
                    Command::Release { version } => {
                        self.stats.releases += 1;
                        self.send(p, Op::Release { version }, db_time(0));
                    }
                    Command::RunPrecheck => precheck = true,
                    Command::StopWork => stop_work = true,
                    Command::Raise(lease) => {
                        self.stats.raises += 1;
                        if lease.won_by == WonBy::TookOver {
                            self.stats.takeovers += 1;
                        }
                        self.trace
                            .push(t, p, What::Raise(lease.token, lease.won_by));
                        if let Some(before) = self.last_token {
                            if lease.token <= before && self.violation.is_none() {
                                self.violation = Some(Violation::TokenNotIncreasing {
                                    who: self.rust[i].host.name.clone(),
                                    token: lease.token,
                                    before,
                                });
                            }
                        }
                        self.last_token = Some(lease.token);
                        self.rust[i].lease_deadline = lease.deadline;
                        self.believe(p);
                    }
                    Command::Renewed(lease) => {
                        self.stats.renewals += 1;
                        self.trace.push(t, p, What::Renewed(lease.version));
                        self.rust[i].lease_deadline = lease.deadline;
                        self.believe(p);
                    }
                    Command::Lower(reason) => {
                        self.trace.push(t, p, What::Lower(reason));
                        let r = &mut self.rust[i];
                        // The reply-counted deadline outlives the core's own: with that
                        // safeguard off, its deadline lowering does not end the belief.
                        if self.config.safeguards.deadline_from_send
                            || reason != leadership_core::LowerReason::DeadlinePassed
                        {
                            r.believed = false;
                        }
                    }
                    Command::Anomaly(a) => {
                        self.stats.anomalies += 1;
                        self.trace.push(t, p, What::Anomaly(a));
                    }
                    Command::Closed => {
                        let down = self.rng.between(
                            self.config
                                .faults
                                .close
                                .map_or(0, |s| s.min.as_nanos() as u64),
                            self.config
                                .faults
                                .close
                                .map_or(0, |s| s.max.as_nanos() as u64),
                        );
                        self.trace.push(t, p, What::Closed(t + down));
                        self.quiet_until(t + down);
                        let r = &mut self.rust[i];
                        r.host.die();
                        r.flag = None;
                        r.believed = false;
                        self.push(t + down, Ev::Start(p));
                    }
                }
            }
            if stop_work {
                self.stop_work(p);
            }
            if precheck {
                // The user's function runs on the process for up to a millisecond.
                let inc = self.rust[i].host.inc;
                let d = self.rng.below(1_000_000);
                self.push(t + d, Ev::Precheck { p, inc });
            }
        }
        self.commands = commands;
        self.rearm(p);
        let broken = self.rust[i].flag.as_ref().and_then(Core::broken);
        if let (Some(b), None) = (broken, &self.violation) {
            self.violation = Some(Violation::CorePromise {
                who: self.rust[i].host.name.clone(),
                what: b.to_string(),
            });
        }
    }

    /// `StopWork`: the leader-only work winds down, for a while drawn by the seed: mostly
    /// quickly, sometimes longer than the lease (then the core releases at the deadline).
    /// With the `release-after-work` safeguard off, the driver tells the core at once that
    /// it has stopped, as a driver without guards would.
    fn stop_work(&mut self, p: Pid) {
        let t = self.t;
        let i = usize::from(p);
        let long = self.rng.chance_ppm(WORK_LONG_PPM);
        let most = if long {
            self.interval_ns * 3 / 2
        } else {
            WORK_SHORT_MAX
        };
        let delay = self.rng.below(most).max(1);
        self.stats.work_stops += 1;
        let r = &mut self.rust[i];
        r.works += 1;
        let id = r.works;
        r.work = Some(Work {
            id,
            until: r.lease_deadline,
        });
        self.trace.push(t, p, What::StopWork(t + delay));
        self.push(t + delay, Ev::WorkStopped { p, work: id });
        // Handing the flag over waits for the work, on purpose: no leader meanwhile.
        let bound = delay.min(self.interval_ns);
        self.quiet_until(t + bound);
        if !self.config.safeguards.release_after_work {
            // Inside `drain`: its loop carries out what the core says next.
            self.tell_work_stopped(p, false);
        }
    }

    /// The modelled work numbered `work` has stopped: it no longer runs, and the driver tells
    /// the core (if it still listens: the process may have closed or crashed meanwhile).
    pub(super) fn work_stopped(&mut self, p: Pid, work: u64) {
        let t = self.t;
        let i = usize::from(p);
        if self.rust[i].work.map(|w| w.id) != Some(work) {
            return; // ended by a crash, or superseded
        }
        if self.rust[i].host.up && self.rust[i].host.paused(t) {
            // Frozen with its process.
            let until = self.rust[i].host.paused_until;
            return self.push(until, Ev::WorkStopped { p, work });
        }
        let w = self.rust[i].work.take().expect("checked above");
        if self.rust[i].host.clock.local(t) >= w.until {
            self.stats.work_past_deadline += 1;
        }
        self.trace.push(t, p, What::WorkStopped);
        if self.config.safeguards.release_after_work {
            self.tell_work_stopped(p, true);
        }
    }

    fn tell_work_stopped(&mut self, p: Pid, drain: bool) {
        let i = usize::from(p);
        if !self.rust[i].host.up {
            return;
        }
        let local = self.rust[i].host.clock.local(self.t);
        if let Some(flag) = &mut self.rust[i].flag {
            if let Err(e) = flag.handle_input(local, Input::WorkStopped) {
                self.violation = Some(Violation::Contract {
                    who: self.rust[i].host.name.clone(),
                    error: e.to_string(),
                });
                return;
            }
        }
        if drain {
            self.drain(p);
        }
    }

    pub(super) fn believe(&mut self, p: Pid) {
        let t = self.t;
        let r = &mut self.rust[usize::from(p)];
        r.believed = true;
        let core = &self.core_configs[usize::from(p)];
        r.believed_until = r.host.clock.local(t) + (core.interval() - core.margin());
    }

    /// Points the process's timer at its next wake-up.
    pub(super) fn rearm(&mut self, p: Pid) {
        let t = self.t;
        let i = usize::from(p);
        if !self.is_rust(p) {
            // The Go timer is armed by `go_act`; a clock change re-targets it.
            let h = self.host(p);
            if let Some(at) = h.armed {
                h.gen += 1;
                let gen = h.gen;
                let when = h.clock.true_at(at, t);
                self.push(when, Ev::Wake { p, gen });
            }
            return;
        }
        let r = &mut self.rust[i];
        let want = r.flag.as_ref().and_then(Core::poll_timeout);
        if want == r.host.armed {
            return;
        }
        r.host.gen += 1;
        r.host.armed = want;
        if let Some(at) = want {
            let gen = r.host.gen;
            let when = r.host.clock.true_at(at, t);
            self.push(when, Ev::Wake { p, gen });
        }
    }

    pub(super) fn rearm_after_clock_change(&mut self, p: Pid) {
        // Force a new wake-up: the same local instant now falls at another true time.
        if self.is_rust(p) {
            self.host(p).armed = None;
        }
        self.rearm(p);
    }

    pub(super) fn go_act(&mut self, p: Pid, next: GoNext) {
        let t = self.t;
        match next {
            GoNext::Send(op, ts) => self.send(p, op, ts),
            GoNext::Sleep(d) => {
                let h = self.host(p);
                h.armed = Some(h.clock.local(t) + d);
                h.gen += 1;
                let gen = h.gen;
                let when = h.clock.true_at(h.armed.expect("just set"), t);
                self.push(when, Ev::Wake { p, gen });
            }
        }
        let g = self.go_mut(p);
        let raised = g.raised;
        self.trace_go(p, raised);
    }

    /// Traces a Go flag's `Raised()` when it changes.
    pub(super) fn trace_go(&mut self, p: Pid, raised: bool) {
        let i = usize::from(p) - self.rust.len();
        if self.go_traced[i] != raised {
            self.go_traced[i] = raised;
            self.trace.push(self.t, p, What::GoRaised(raised));
        }
    }
}
